//! tailscaled's LocalAPI WhoIs: the client (unix socket) and the decoder of its answer.
//!
//! `GET /localapi/v0/whois?addr=IP:PORT` with `Host: local-tailscaled.sock` and no `Origin` /
//! `Referer`. 200 carries `{Node, UserProfile, CapMap}`; 404 means "not a tailnet peer". Every
//! field is optional in the decoder: tailscaled omits zero values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use crate::{APERTURE_CAP, IdentitySource, Principal, normalize_tags};

/// The login tailscaled reports for every tagged node. Never an identity.
pub const TAGGED_DEVICES_LOGIN: &str = "tagged-devices";
/// Host header the LocalAPI requires.
pub const LOCALAPI_HOST: &str = "local-tailscaled.sock";
const MAX_WHOIS_BODY: usize = 1 << 20;

/// The platform's default tailscaled socket.
pub fn default_socket() -> PathBuf {
    if cfg!(target_os = "macos") {
        PathBuf::from("/var/run/tailscaled.socket")
    } else {
        PathBuf::from("/var/run/tailscale/tailscaled.sock")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WhoisError {
    /// The socket is absent or refuses connections: tailscaled is not running.
    #[error("tailscaled is not reachable at {path}: {source}")]
    Unavailable {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tailscaled WhoIs failed: {0}")]
    Protocol(String),
    #[error("tailscaled WhoIs answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("tailscaled WhoIs timed out")]
    Timeout,
    #[error("tailscaled WhoIs answer could not be decoded: {0}")]
    Decode(String),
    #[error("tailnet peer has neither a user nor tags")]
    NoIdentity,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WhoIsResponse {
    #[serde(rename = "Node")]
    pub node: Option<Node>,
    #[serde(rename = "UserProfile")]
    pub user_profile: Option<UserProfile>,
    #[serde(rename = "CapMap")]
    pub cap_map: Option<HashMap<String, Vec<serde_json::Value>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: Option<i64>,
    #[serde(rename = "StableID")]
    pub stable_id: Option<String>,
    #[serde(rename = "Name")]
    pub name: Option<String>,
    #[serde(rename = "ComputedName")]
    pub computed_name: Option<String>,
    #[serde(rename = "Tags")]
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct UserProfile {
    #[serde(rename = "ID")]
    pub id: Option<i64>,
    #[serde(rename = "LoginName")]
    pub login_name: Option<String>,
    #[serde(rename = "DisplayName")]
    pub display_name: Option<String>,
    #[serde(rename = "Groups")]
    pub groups: Option<Vec<String>>,
}

/// Decode a WhoIs 200 body into a principal. A tagged node's identity is its tags.
pub fn decode(body: &[u8]) -> Result<Principal, WhoisError> {
    let resp: WhoIsResponse =
        serde_json::from_slice(body).map_err(|e| WhoisError::Decode(e.to_string()))?;
    principal_from_response(resp)
}

pub fn principal_from_response(resp: WhoIsResponse) -> Result<Principal, WhoisError> {
    let node = resp.node.unwrap_or_default();
    let profile = resp.user_profile.unwrap_or_default();
    let tags = normalize_tags(node.tags.unwrap_or_default());
    let login = if tags.is_empty() {
        match profile.login_name {
            Some(l) if !l.trim().is_empty() && l != TAGGED_DEVICES_LOGIN => Some(l),
            _ => return Err(WhoisError::NoIdentity),
        }
    } else {
        None
    };
    let node_name = node
        .name
        .map(|n| n.trim_end_matches('.').to_owned())
        .filter(|n| !n.is_empty())
        .or(node.computed_name);
    let node_id = node
        .stable_id
        .filter(|s| !s.is_empty())
        .or(node.id.map(|i| i.to_string()));
    let cap_grants = resp
        .cap_map
        .and_then(|mut m| m.remove(APERTURE_CAP))
        .unwrap_or_default();
    Ok(Principal {
        source: IdentitySource::Whois,
        display_name: if login.is_some() {
            profile.display_name.filter(|d| !d.is_empty())
        } else {
            None
        },
        login,
        // Groups describe the user; a tagged node has none of its own.
        groups: if tags.is_empty() {
            profile.groups.unwrap_or_default()
        } else {
            Vec::new()
        },
        tags,
        node_name,
        node_id,
        cap_grants,
        key_id: None,
    })
}

/// A WhoIs client for one tailscaled socket. Cheap to clone; every call opens its own short
/// connection (WhoIs is asked once per client connection, not per request).
#[derive(Debug, Clone)]
pub struct WhoisClient {
    socket: PathBuf,
    timeout: Duration,
    idle: Arc<IdleConnections>,
}

/// LocalAPI connections kept open between questions. A new connection costs a connect, an
/// accept in tailscaled and a task on each side: about as much as the question itself, paid by
/// the first request of every client connection.
#[derive(Default)]
struct IdleConnections(Mutex<Vec<SendRequest<Empty<Bytes>>>>);

impl std::fmt::Debug for IdleConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|v| v.len()).unwrap_or(0);
        f.debug_struct("IdleConnections").field("idle", &n).finish()
    }
}

/// Idle LocalAPI connections kept at most.
const MAX_IDLE: usize = 8;

/// Why a question on a kept connection got no answer.
enum Stale {
    /// The connection was closed while idle (tailscaled restarted, or closed it): ask on a new one.
    Retry,
    Failed(WhoisError),
}

impl Stale {
    /// The error to report when there is no other connection to ask on.
    fn into_error(self) -> WhoisError {
        match self {
            Stale::Retry => {
                WhoisError::Protocol("tailscaled closed the connection before answering".into())
            }
            Stale::Failed(e) => e,
        }
    }
}

impl WhoisClient {
    pub fn new(socket: impl Into<PathBuf>) -> WhoisClient {
        WhoisClient {
            socket: socket.into(),
            timeout: Duration::from_secs(3),
            idle: Arc::default(),
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> WhoisClient {
        self.timeout = timeout;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Ask about a peer address. `Ok(None)`: not a tailnet peer (404).
    pub async fn whois(&self, addr: &SocketAddr) -> Result<Option<Principal>, WhoisError> {
        self.whois_addr(&addr.to_string()).await
    }

    /// Ask about an address given as text (`IP` or `IP:PORT`).
    pub async fn whois_addr(&self, addr: &str) -> Result<Option<Principal>, WhoisError> {
        match tokio::time::timeout(self.timeout, self.request(addr)).await {
            Ok(r) => r,
            Err(_) => Err(WhoisError::Timeout),
        }
    }

    async fn request(&self, addr: &str) -> Result<Option<Principal>, WhoisError> {
        let uri = format!("/localapi/v0/whois?addr={}", encode_query(addr));
        if let Some(sender) = self.take_idle() {
            match self.ask(sender, &uri).await {
                Err(Stale::Retry) => {}
                answer => return answer.map_err(Stale::into_error),
            }
        }
        let sender = self.connect().await?;
        self.ask(sender, &uri).await.map_err(Stale::into_error)
    }

    /// LocalAPI connections kept open for the next question (at most 8).
    pub fn idle_connections(&self) -> usize {
        self.idle.0.lock().map(|v| v.len()).unwrap_or(0)
    }

    fn take_idle(&self) -> Option<SendRequest<Empty<Bytes>>> {
        let mut idle = self.idle.0.lock().ok()?;
        while let Some(s) = idle.pop() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self) -> Result<SendRequest<Empty<Bytes>>, WhoisError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| WhoisError::Unavailable {
                path: self.socket.display().to_string(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| WhoisError::Protocol(e.to_string()))?;
        // The connection ends when tailscaled closes it or its sender is dropped (not kept).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One question on `sender`; the connection is kept for the next one when it stays usable.
    async fn ask(
        &self,
        mut sender: SendRequest<Empty<Bytes>>,
        uri: &str,
    ) -> Result<Option<Principal>, Stale> {
        // Nothing was sent if this fails: the connection died while idle.
        if sender.ready().await.is_err() {
            return Err(Stale::Retry);
        }
        let req = http::Request::get(uri)
            .header(http::header::HOST, LOCALAPI_HOST)
            .body(Empty::<Bytes>::new())
            .map_err(|e| Stale::Failed(WhoisError::Protocol(e.to_string())))?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            // Closed before a byte of the answer: a kept connection that tailscaled had just
            // closed. WhoIs is a read, so asking again on a new connection is safe.
            Err(e) if e.is_canceled() || e.is_closed() || e.is_incomplete_message() => {
                return Err(Stale::Retry);
            }
            Err(e) => return Err(Stale::Failed(WhoisError::Protocol(e.to_string()))),
        };
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_WHOIS_BODY)
            .collect()
            .await
            .map_err(|e| Stale::Failed(WhoisError::Protocol(e.to_string())))?
            .to_bytes();
        if !sender.is_closed()
            && let Ok(mut idle) = self.idle.0.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push(sender);
        }
        match status.as_u16() {
            200 => decode(&body).map(Some),
            404 => Ok(None),
            s => Err(WhoisError::Status {
                status: s,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            }),
        }
        .map_err(Stale::Failed)
    }
}

fn encode_query(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'_') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = r#"{
	"Node": {"ID": 6158212093761843, "StableID": "nKq3vB7CNTRL", "Name": "alice-mbp.tail1234.ts.net.",
	         "Addresses": ["100.101.102.103/32"], "Hostinfo": {"OS": "macOS"}, "Online": true},
	"UserProfile": {"ID": 31415926535, "LoginName": "alice@example.com", "DisplayName": "Alice Example",
	                "ProfilePicURL": "https://x", "Groups": ["group:ai-users"]},
	"CapMap": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "anthropic/**"}],
	           "example.com/cap/other": [{"x": 1}]}
}"#;

    #[test]
    fn decodes_user() {
        let p = decode(ALICE.as_bytes()).unwrap();
        assert_eq!(p.login.as_deref(), Some("alice@example.com"));
        assert_eq!(p.display_name.as_deref(), Some("Alice Example"));
        assert_eq!(p.groups, vec!["group:ai-users"]);
        assert_eq!(p.node_name.as_deref(), Some("alice-mbp.tail1234.ts.net"));
        assert_eq!(p.node_id.as_deref(), Some("nKq3vB7CNTRL"));
        assert_eq!(p.cap_grants.len(), 2);
        assert!(p.tags.is_empty());
    }

    #[test]
    fn tagged_node_is_its_tags_never_tagged_devices() {
        let body = r#"{"Node": {"ID": 7, "Name": "ci-1.ts.net.", "Tags": ["tag:prod", "tag:ci"]},
            "UserProfile": {"ID": 1, "LoginName": "tagged-devices", "DisplayName": "Tagged Devices", "Groups": ["group:x"]},
            "CapMap": null}"#;
        let p = decode(body.as_bytes()).unwrap();
        assert_eq!(p.login, None);
        assert_eq!(p.display_name, None);
        assert_eq!(p.tags, vec!["tag:ci", "tag:prod"]);
        assert!(p.groups.is_empty());
        assert_eq!(p.node_id.as_deref(), Some("7"));
        assert!(p.cap_grants.is_empty());
    }

    #[test]
    fn no_user_no_tags_is_no_identity() {
        for body in [
            r#"{"Node": {}, "UserProfile": {"LoginName": "tagged-devices"}}"#,
            r#"{"Node": {}, "UserProfile": {"LoginName": ""}}"#,
            r#"{}"#,
        ] {
            assert!(
                matches!(decode(body.as_bytes()), Err(WhoisError::NoIdentity)),
                "{body}"
            );
        }
        assert!(matches!(decode(b"not json"), Err(WhoisError::Decode(_))));
        assert!(matches!(decode(b"[1]"), Err(WhoisError::Decode(_))));
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(encode_query("[::1]:80"), "%5B::1%5D:80");
        assert_eq!(encode_query("a&b=c"), "a%26b%3Dc");
    }

    /// A LocalAPI stand-in that answers every request 404 (unknown peer) and counts connections;
    /// with `close_after_answer` it closes each connection after its first answer, without
    /// saying so (as a restarting tailscaled would).
    async fn localapi(
        close_after_answer: bool,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tailscaled.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        let Ok(n) = conn.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let answer = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
                            if conn.write_all(answer).await.is_err() || close_after_answer {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (dir, path, accepted)
    }

    /// `127.0.0.1:port` is answered, as an unknown peer.
    async fn assert_unknown(c: &WhoisClient, port: u16) {
        assert_eq!(
            c.whois_addr(&format!("127.0.0.1:{port}")).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn questions_reuse_one_localapi_connection() {
        let (_dir, path, accepted) = localapi(false).await;
        let c = WhoisClient::new(&path);
        for port in 1..=5 {
            assert_unknown(&c, port).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_kept_connection_closed_while_idle_is_replaced() {
        let (_dir, path, accepted) = localapi(true).await;
        let c = WhoisClient::new(&path);
        for port in 1..=3 {
            // Give the close time to arrive sometimes, and sometimes not: both must work.
            if port == 2 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert_unknown(&c, port).await;
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn missing_socket_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let c = WhoisClient::new(dir.path().join("none.sock"));
        let err = c.whois_addr("127.0.0.1:1").await.unwrap_err();
        assert!(matches!(err, WhoisError::Unavailable { .. }), "{err}");
    }
}
