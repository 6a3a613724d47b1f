//! tailscaled's LocalAPI WhoIs: the client (unix socket) and the decoder of its answer.
//!
//! `GET /localapi/v0/whois?addr=IP:PORT` with `Host: local-tailscaled.sock` and no `Origin` /
//! `Referer`. 200 carries `{Node, UserProfile, CapMap}`; 404 means "not a tailnet peer". Every
//! field is optional in the decoder: tailscaled omits zero values.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
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
}

impl WhoisClient {
    pub fn new(socket: impl Into<PathBuf>) -> WhoisClient {
        WhoisClient {
            socket: socket.into(),
            timeout: Duration::from_secs(3),
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
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| WhoisError::Unavailable {
                path: self.socket.display().to_string(),
                source,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| WhoisError::Protocol(e.to_string()))?;
        let conn_task = tokio::spawn(async move {
            // The connection ends when the response is read and the sender dropped.
            let _ = conn.await;
        });
        let uri = format!("/localapi/v0/whois?addr={}", encode_query(addr));
        let req = http::Request::get(uri)
            .header(http::header::HOST, LOCALAPI_HOST)
            .body(Empty::<Bytes>::new())
            .map_err(|e| WhoisError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| WhoisError::Protocol(e.to_string()))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_WHOIS_BODY)
            .collect()
            .await
            .map_err(|e| WhoisError::Protocol(e.to_string()))?
            .to_bytes();
        drop(sender);
        conn_task.abort();
        match status.as_u16() {
            200 => decode(&body).map(Some),
            404 => Ok(None),
            s => Err(WhoisError::Status {
                status: s,
                body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            }),
        }
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

    #[tokio::test]
    async fn missing_socket_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let c = WhoisClient::new(dir.path().join("none.sock"));
        let err = c.whois_addr("127.0.0.1:1").await.unwrap_err();
        assert!(matches!(err, WhoisError::Unavailable { .. }), "{err}");
    }
}
