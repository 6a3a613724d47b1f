//! `iris unplug`: the ts-unplug use case (a device outside the tailnet reaching the gateway)
//! without Go, without a tailnet node and without an admin approving a machine.
//!
//! It listens on `127.0.0.1` only and forwards every request, whatever its method, path or query,
//! to the gateway with `Authorization: Bearer <iris key>`, after removing whatever credential the
//! local client sent (`authorization`, `x-api-key`, `x-goog-api-key`, `proxy-authorization`) and
//! any `tailscale-*` header a local process could use to claim an identity. Bodies stream both
//! ways frame by frame; nothing is buffered. The gateway attributes the traffic to the key's
//! owner, so each person runs their own `iris unplug` with their own key.
//!
//! Anyone who can connect to the local port uses the key: that is why the listener is loopback
//! only, and why a shared multi-user host should not run it.
//!
//! What it does not do: WebSocket or other `Upgrade` requests (the `upgrade` header is hop-by-hop
//! and is dropped, so Codex's WebSocket probe gets a plain answer and it falls back to HTTP), and
//! TLS to a gateway whose certificate is not under a public (webpki) root.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::gateway::Whoami;
use crate::http::{
    BaseUrl, Body, BoxError, HttpsClient, cause, empty, error_message, full, https_client,
};

/// Prefix of every iris key.
pub const KEY_PREFIX: &str = "iris_sk_";
/// Most local connections served at once (more wait in the kernel's accept queue).
const MAX_CONNECTIONS: usize = 512;
/// How long the startup check may take.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long open requests may take to finish after shutdown is asked for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/api/whoami` answer read.
const MAX_WHOAMI_BYTES: usize = 1024 * 1024;

/// What to run: which gateway, with which key, on which local port.
#[derive(Clone)]
pub struct UnplugConfig {
    /// `http://host:port` or `https://host` (a path prefix is kept).
    pub gateway: String,
    /// The iris key (`iris_sk_...`). Never printed, never logged.
    pub key: String,
    /// Local port on `127.0.0.1`; 0 picks a free one.
    pub port: u16,
}

impl std::fmt::Debug for UnplugConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnplugConfig")
            .field("gateway", &self.gateway)
            .field("key", &"<redacted>")
            .field("port", &self.port)
            .finish()
    }
}

/// Handed to the `ready` callback once the gateway accepted the key and the port is bound.
#[derive(Debug, Clone, PartialEq)]
pub struct UnplugReady {
    /// The local address clients use (`127.0.0.1:PORT`).
    pub addr: SocketAddr,
    /// The gateway URL, normalised (no trailing slash).
    pub gateway: String,
    /// Who the gateway says the key is; `None` when the gateway has no `/api/whoami`.
    pub whoami: Option<Whoami>,
    /// Things worth telling the person (no role, identity not from the key, ...).
    pub warnings: Vec<String>,
}

impl UnplugReady {
    /// One line for the terminal: where it listens, where it forwards, as whom.
    pub fn summary(&self) -> String {
        let who = match &self.whoami {
            Some(w) => w.describe(),
            None => "an identity the gateway did not report".to_owned(),
        };
        format!(
            "iris unplug: http://{} -> {} as {}",
            self.addr, self.gateway, who
        )
    }
}

/// What happened while it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnplugReport {
    pub addr: SocketAddr,
    /// Requests received from local clients.
    pub requests: u64,
    /// Of those, how many got a 502 because the gateway could not be reached.
    pub gateway_errors: u64,
}

#[derive(Debug, Error)]
pub enum UnplugError {
    #[error("`{url}` is not a gateway URL: {reason} (expected http://host:port or https://host)")]
    InvalidGateway { url: String, reason: String },
    #[error("{0}")]
    InvalidKey(String),
    #[error(
        "iris unplug listens on 127.0.0.1 only (anyone who can reach the port spends your key): `{listen}` is refused; give a port, or 127.0.0.1:PORT"
    )]
    NotLoopback { listen: String },
    #[error("cannot reach the gateway at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("the gateway refused the key: {message}")]
    Refused { url: String, message: String },
    #[error("the gateway at {url} answered HTTP {status} to GET /api/whoami: {message}")]
    Preflight {
        url: String,
        status: u16,
        message: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// Reads a `--listen`/`--port` value: `8080`, `:8080`, `127.0.0.1:8080` or `localhost:8080`.
/// Any other address is refused: the forwarder must never be reachable from another machine.
pub fn parse_listen(s: &str) -> Result<u16, UnplugError> {
    let s = s.trim();
    let refuse = || UnplugError::NotLoopback {
        listen: s.to_owned(),
    };
    let port = match s.rsplit_once(':') {
        None => s,
        Some((host, port)) => match host {
            "" | "127.0.0.1" | "localhost" => port,
            _ => return Err(refuse()),
        },
    };
    port.parse::<u16>().map_err(|_| refuse())
}

/// The lines to paste into the shell where the tools run.
pub fn client_lines(local: SocketAddr) -> String {
    format!(
        "export ANTHROPIC_BASE_URL=http://{local}\n\
         export ANTHROPIC_API_KEY=not-needed\n\
         export OPENAI_BASE_URL=http://{local}/v1\n\
         export OPENAI_API_KEY=not-needed\n\
         # check who the gateway sees:\n\
         curl -s http://{local}/api/whoami\n"
    )
}

/// Checks the gateway and the key, binds `127.0.0.1:port`, calls `ready`, then forwards until
/// `shutdown` completes (open requests then get 5 s to finish).
pub async fn run_unplug(
    cfg: UnplugConfig,
    ready: impl FnOnce(&UnplugReady),
    shutdown: impl Future<Output = ()>,
) -> Result<UnplugReport, UnplugError> {
    let unplug = Unplug::start(cfg).await?;
    ready(unplug.ready());
    unplug.serve(shutdown).await
}

/// A started forwarder: the gateway answered, the port is bound, nothing served yet.
#[derive(Debug)]
pub struct Unplug {
    listener: TcpListener,
    ready: UnplugReady,
    shared: Arc<Shared>,
}

struct Shared {
    base: BaseUrl,
    /// `Bearer <key>`, marked sensitive.
    auth: HeaderValue,
    client: HttpsClient,
    requests: AtomicU64,
    gateway_errors: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Unplug {
    /// Validates `cfg`, asks the gateway who the key is (`GET /api/whoami`), and binds the port.
    pub async fn start(cfg: UnplugConfig) -> Result<Unplug, UnplugError> {
        let base = BaseUrl::parse(&cfg.gateway).map_err(|reason| UnplugError::InvalidGateway {
            url: cfg.gateway.clone(),
            reason,
        })?;
        let auth = auth_header(&cfg.key)?;
        let client = https_client().map_err(|e| UnplugError::Tls(e.to_string()))?;
        let shared = Arc::new(Shared {
            base,
            auth,
            client,
            requests: AtomicU64::new(0),
            gateway_errors: AtomicU64::new(0),
        });
        let (whoami, warnings) = preflight(&shared).await?;

        let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, cfg.port));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| UnplugError::Bind { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| UnplugError::Bind { addr, source })?;
        let ready = UnplugReady {
            addr,
            gateway: shared.base.to_string(),
            whoami,
            warnings,
        };
        Ok(Unplug {
            listener,
            ready,
            shared,
        })
    }

    pub fn ready(&self) -> &UnplugReady {
        &self.ready
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.ready.addr
    }

    /// Forwards until `shutdown` completes.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<UnplugReport, UnplugError> {
        let Unplug {
            listener,
            ready,
            shared,
        } = self;
        let graceful = GracefulShutdown::new();
        let mut connections = JoinSet::new();
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => p,
                () = &mut shutdown => break,
            };
            // The semaphore is never closed; a closed one would mean no more connections.
            let Ok(permit) = permit else { break };
            let accepted = tokio::select! {
                r = listener.accept() => r,
                () = &mut shutdown => break,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "iris unplug: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "set_nodelay failed");
            }
            while connections.try_join_next().is_some() {}
            let watcher = graceful.watcher();
            let shared = shared.clone();
            connections.spawn(async move {
                let _permit = permit;
                let svc = service_fn(move |req| {
                    let shared = shared.clone();
                    async move { Ok::<_, Infallible>(forward(&shared, req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection(TokioIo::new(stream), svc);
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(error = %e, "local connection ended with an error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::info!("iris unplug: requests still open after the drain time were cut");
        }
        connections.shutdown().await;
        Ok(UnplugReport {
            addr: ready.addr,
            requests: shared.requests.load(Ordering::Relaxed),
            gateway_errors: shared.gateway_errors.load(Ordering::Relaxed),
        })
    }
}

fn auth_header(key: &str) -> Result<HeaderValue, UnplugError> {
    let key = key.trim();
    if key.is_empty() {
        return Err(UnplugError::InvalidKey(
            "no iris key given: create one with `iris keys create` and pass it in".to_owned(),
        ));
    }
    if !key.starts_with(KEY_PREFIX) {
        return Err(UnplugError::InvalidKey(format!(
            "that is not an iris key (iris keys start with `{KEY_PREFIX}`): create one with `iris keys create`"
        )));
    }
    let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
        UnplugError::InvalidKey(
            "the iris key contains characters that cannot go in a header".to_owned(),
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// `GET /api/whoami` with the key: is the gateway there, does it take the key, who is it.
async fn preflight(shared: &Shared) -> Result<(Option<Whoami>, Vec<String>), UnplugError> {
    let url = shared.base.to_string();
    let uri = shared
        .base
        .join("/api/whoami")
        .map_err(|e| UnplugError::InvalidGateway {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    let mut req = Request::get(uri)
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("iris-unplug/", env!("CARGO_PKG_VERSION")),
        )
        .body(empty())
        .map_err(|e| UnplugError::InvalidGateway {
            url: url.clone(),
            reason: e.to_string(),
        })?;
    req.headers_mut()
        .insert(header::AUTHORIZATION, shared.auth.clone());

    let unreachable = |detail: String| UnplugError::Unreachable {
        url: url.clone(),
        detail,
    };
    let ask = async {
        let resp = shared
            .client
            .request(req)
            .await
            .map_err(|e| unreachable(cause(&e).message))?;
        let status = resp.status();
        let body = Limited::new(resp.into_body(), MAX_WHOAMI_BYTES)
            .collect()
            .await
            .map_err(|e| unreachable(cause(e.as_ref()).message))?
            .to_bytes();
        Ok::<_, UnplugError>((status, body))
    };
    let (status, body) = match tokio::time::timeout(PREFLIGHT_TIMEOUT, ask).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {} s",
                PREFLIGHT_TIMEOUT.as_secs()
            )));
        }
    };
    let message = || {
        error_message(&body)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned())
    };
    match status.as_u16() {
        200..=299 => {
            let whoami: Whoami =
                serde_json::from_slice(&body).map_err(|_| UnplugError::Preflight {
                    url: url.clone(),
                    status: status.as_u16(),
                    message: "the answer is not iris's whoami JSON: is this an iris gateway?"
                        .to_owned(),
                })?;
            let mut warnings = Vec::new();
            if whoami.identity.source.as_deref() != Some("key") {
                warnings.push(format!(
                    "the gateway did not identify you by the key (it sees {}): is something between you and the gateway removing the Authorization header?",
                    whoami.describe()
                ));
            }
            if whoami.role.is_none() {
                warnings.push(
                    "no grant gives this key's identity a role: model requests will be refused (403) until an admin adds one"
                        .to_owned(),
                );
            }
            Ok((Some(whoami), warnings))
        }
        401 | 403 => Err(UnplugError::Refused {
            url,
            message: message(),
        }),
        404 => Ok((
            None,
            vec![format!(
                "{url} has no /api/whoami (an older iris, or a proxy that passes only /v1/...): the key could not be checked"
            )],
        )),
        s => Err(UnplugError::Preflight {
            url,
            status: s,
            message: message(),
        }),
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus any the
/// `Connection` header names.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// What the local client sent that must not reach the gateway: its own credentials, identity
/// claims, the local `Host`, and `Expect` (the local side already answered `100 Continue`).
fn strip_request_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    for name in [
        header::HOST,
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::EXPECT,
        HeaderName::from_static("x-api-key"),
        HeaderName::from_static("x-goog-api-key"),
    ] {
        headers.remove(name);
    }
    let claims: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().starts_with("tailscale-"))
        .cloned()
        .collect();
    for name in claims {
        headers.remove(name);
    }
}

async fn forward(shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    shared.requests.fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = req.into_parts();
    // Origin form (`/v1/messages?beta=true`) or, from a client using us as an HTTP proxy, the
    // absolute form: either way only the path and query go on.
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = match shared.base.join(path_and_query) {
        Ok(uri) => uri,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("iris unplug: cannot forward this path: {e}"),
                "invalid_request_error",
            );
        }
    };
    tracing::debug!(method = %parts.method, path = %parts.uri.path(), "forwarding");
    strip_request_headers(&mut parts.headers);
    // Host comes from the gateway URL (set by the client pool from `uri`).
    parts
        .headers
        .insert(header::AUTHORIZATION, shared.auth.clone());
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
    match shared
        .client
        .request(Request::from_parts(parts, body))
        .await
    {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.version = Version::HTTP_11;
            let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
            Response::from_parts(parts, body)
        }
        Err(e) => {
            shared.gateway_errors.fetch_add(1, Ordering::Relaxed);
            let c = cause(&e);
            let what = if e.is_connect() {
                "unreachable"
            } else {
                "failed"
            };
            tracing::warn!(gateway = %shared.base, error = %c.message, "gateway {what}");
            error_response(
                StatusCode::BAD_GATEWAY,
                &format!("iris unplug: gateway {} {what}: {}", shared.base, c.message),
                "api_error",
            )
        }
    }
}

/// An error answered by unplug itself, in the OpenAI shape (which the Anthropic SDKs also read
/// a message from).
fn error_response(status: StatusCode, message: &str, kind: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "message": message, "type": kind } });
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_values() {
        assert_eq!(parse_listen("8080").unwrap(), 8080);
        assert_eq!(parse_listen(":8080").unwrap(), 8080);
        assert_eq!(parse_listen("127.0.0.1:0").unwrap(), 0);
        assert_eq!(parse_listen("localhost:9000").unwrap(), 9000);
        for bad in [
            "0.0.0.0:8080",
            "192.168.1.2:80",
            "[::]:80",
            "example.com:80",
            "x",
        ] {
            let e = parse_listen(bad).unwrap_err().to_string();
            assert!(e.contains("127.0.0.1 only"), "{bad}: {e}");
        }
    }

    #[test]
    fn keys_are_checked_and_hidden() {
        assert!(auth_header("").is_err());
        let e = auth_header("sk-ant-123").unwrap_err().to_string();
        assert!(e.contains("not an iris key"), "{e}");
        let v = auth_header(" iris_sk_abc ").unwrap();
        assert!(v.is_sensitive());
        assert_eq!(v.to_str().unwrap(), "Bearer iris_sk_abc");
        let cfg = UnplugConfig {
            gateway: "http://127.0.0.1:1".into(),
            key: "iris_sk_abc".into(),
            port: 0,
        };
        assert!(!format!("{cfg:?}").contains("iris_sk_abc"));
    }

    #[test]
    fn request_headers_are_cleaned() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("host", "127.0.0.1:8080"),
            ("authorization", "Bearer sk-local"),
            ("x-api-key", "sk-local"),
            ("x-goog-api-key", "g"),
            ("tailscale-user-login", "boss@example.com"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("expect", "100-continue"),
            ("anthropic-version", "2023-06-01"),
            ("content-type", "application/json"),
        ] {
            h.append(n, HeaderValue::from_static(v));
        }
        strip_request_headers(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["anthropic-version", "content-type"]);
    }

    #[test]
    fn client_lines_use_the_address() {
        let lines = client_lines("127.0.0.1:8123".parse().unwrap());
        assert!(lines.contains("export ANTHROPIC_BASE_URL=http://127.0.0.1:8123\n"));
        assert!(lines.contains("export OPENAI_BASE_URL=http://127.0.0.1:8123/v1\n"));
        assert!(lines.contains("curl -s http://127.0.0.1:8123/api/whoami"));
        assert!(!lines.contains("iris_sk_"));
    }
}
