//! The admin API client (API.md): what `iris config`, `iris whoami`, `iris usage`, `iris logs`
//! and `iris keys` call, over TCP or over the break-glass unix socket.
//!
//! Every failure is a [`ClientError`] whose `Display` is the sentence to show a person, with what
//! to do next. The key (if any) is sent as `Authorization: Bearer` on TCP only; on the unix socket
//! every request already acts as `(local-admin)`, so the key stays home.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::http::{BaseUrl, Body, HttpsClient, cause, empty, error_message, full, https_client};

/// Largest answer read from the admin API (logs pages can be big; nothing legitimate is this big).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Default limit for one admin call, connect included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the gateway's admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://host:port` or `https://host` (a path prefix is kept).
    Url(String),
    /// The break-glass admin socket, `<data_dir>/iris-admin.sock`.
    Unix(PathBuf),
}

impl Endpoint {
    /// Reads what a user typed after `--gateway`: `http://...`, `https://...`, `unix:/path`, or an
    /// absolute path to a socket.
    pub fn parse(s: &str) -> Result<Endpoint, ClientError> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(ClientError::InvalidEndpoint {
                    endpoint: s.to_owned(),
                    reason: "the socket path is empty".to_owned(),
                });
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if s.starts_with('/') {
            return Ok(Endpoint::Unix(PathBuf::from(s)));
        }
        BaseUrl::parse(s).map_err(|reason| ClientError::InvalidEndpoint {
            endpoint: s.to_owned(),
            reason,
        })?;
        Ok(Endpoint::Url(s.to_owned()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Url(u) => f.write_str(u.trim().trim_end_matches('/')),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// One config problem as the gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `"error"` or `"warning"`.
    #[serde(default = "error_severity")]
    pub severity: String,
    /// Where in the config (`providers.x.baseurl`); empty for the whole document.
    #[serde(default)]
    pub path: String,
    pub message: String,
}

fn error_severity() -> String {
    "error".to_owned()
}

impl fmt::Display for Problem {
    /// `error: providers.x.baseurl: message` (the path is left out when empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.severity, self.message)
        } else {
            write!(f, "{}: {}: {}", self.severity, self.path, self.message)
        }
    }
}

/// Why a call failed, worded for the person at the terminal.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "`{endpoint}` is not a gateway address: {reason} (expected http://host:port, https://host, or unix:/path/to/iris-admin.sock)"
    )]
    InvalidEndpoint { endpoint: String, reason: String },
    #[error("no gateway at {url} (is `iris serve` running?): {detail}")]
    NoGateway { url: String, detail: String },
    #[error("cannot reach the gateway at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    #[error(
        "no gateway listening on the break-glass socket {path} (is `iris serve` running with this data directory?): {detail}"
    )]
    NoSocket { path: PathBuf, detail: String },
    #[error(
        "cannot open the break-glass socket {path}: permission denied (it is owner-only: run this as the user that runs `iris serve`)"
    )]
    SocketDenied { path: PathBuf },
    #[error("the gateway at {endpoint} did not answer within {secs} s")]
    Timeout { endpoint: String, secs: u64 },
    #[error("lost the connection to the gateway at {endpoint}: {detail}")]
    Transport { endpoint: String, detail: String },
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// 401 or 403 (other than an admin lockout).
    #[error("{}", denied_text(*.status, message, *.via_socket))]
    Denied {
        status: u16,
        message: String,
        via_socket: bool,
    },
    /// 403 `admin_lockout`: the save would take the saver's own admin role away.
    #[error(
        "{message}\nthe gateway refused to save a config that would take away your own admin role; keep a grant that gives you role \"admin\" (or save from the break-glass socket on the gateway host)"
    )]
    AdminLockout { message: String },
    /// 409: the hash sent is not the current one.
    #[error(
        "the config changed since you read it (someone saved in between): run `iris config get` again"
    )]
    Conflict { message: String },
    /// 400 `invalid_config`: every problem, one per line.
    #[error("{}", invalid_config_text(message, problems))]
    InvalidConfig {
        message: String,
        problems: Vec<Problem>,
    },
    #[error("not found: {message}")]
    NotFound { message: String },
    #[error("the gateway answered HTTP {status}: {message}")]
    Api {
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error(
        "the gateway answered HTTP {status} with something iris cannot read ({detail}): is {endpoint} an iris gateway?"
    )]
    BadResponse {
        endpoint: String,
        status: u16,
        detail: String,
    },
}

fn denied_text(status: u16, message: &str, via_socket: bool) -> String {
    let hint = match (status, via_socket) {
        (_, true) => "the break-glass socket should act as admin: is this socket really iris's?",
        (401, false) => {
            "hint: the gateway did not accept the credential: check the iris key (`iris keys list` on the gateway host), or use an admin identity, or on the gateway host the break-glass admin socket (<data_dir>/iris-admin.sock)"
        }
        _ => {
            "hint: this needs an admin identity (a tailnet user or tag granted role \"admin\", or an admin's iris key), or on the gateway host the break-glass admin socket (<data_dir>/iris-admin.sock)"
        }
    };
    format!("{message} (HTTP {status})\n{hint}")
}

fn invalid_config_text(message: &str, problems: &[Problem]) -> String {
    let mut out = format!("the gateway refused the config: {message}");
    for p in problems {
        out.push('\n');
        out.push_str(&p.to_string());
    }
    out
}

/// What `GET /api/whoami` says about the caller.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Whoami {
    #[serde(default)]
    pub identity: WhoamiIdentity,
    #[serde(default)]
    pub peer: Option<String>,
    /// `"admin"`, `"user"`, or `None` (no grant gives this identity a role).
    #[serde(default)]
    pub role: Option<String>,
    /// `provider/model` names this identity may use.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub explain: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct WhoamiIdentity {
    /// `whois`, `serve_headers`, `key` or `loopback`.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub login: Option<String>,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub key_id: Option<String>,
}

impl Whoami {
    /// Who this is, in one line: `alice@example.com (iris key k_1; role user; 3 models)`.
    pub fn describe(&self) -> String {
        let id = &self.identity;
        let who = match (&id.login, id.tags.is_empty()) {
            (Some(login), _) => login.clone(),
            (None, false) => id.tags.join(","),
            (None, true) => match id.source.as_deref() {
                Some("loopback") => "(loopback)".to_owned(),
                _ => "(unknown identity)".to_owned(),
            },
        };
        let mut facts = Vec::new();
        match (&id.key_id, id.source.as_deref()) {
            (Some(k), _) => facts.push(format!("iris key {k}")),
            (None, Some(src)) => facts.push(format!("via {src}")),
            (None, None) => {}
        }
        match &self.role {
            Some(r) => facts.push(format!("role {r}")),
            None => facts.push("no role".to_owned()),
        }
        facts.push(match self.models.len() {
            1 => "1 model".to_owned(),
            n => format!("{n} models"),
        });
        format!("{who} ({})", facts.join("; "))
    }
}

/// `GET /api/config`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ConfigDoc {
    /// The HuJSON text, byte for byte as stored.
    pub config: String,
    /// False when the gateway runs on its built-in default (no file, nothing saved).
    #[serde(default)]
    pub exists: bool,
    /// Hex SHA-256 of `config`: send it back with a save.
    pub hash: String,
}

/// A successful `PUT /api/config` or rollback.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ConfigSaved {
    /// The hash of the config now in force.
    pub hash: String,
}

/// `POST /api/config/validate`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Validation {
    pub valid: bool,
    #[serde(default)]
    pub problems: Vec<Problem>,
}

/// One saved config version (`GET /api/config/history`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ConfigVersion {
    pub id: i64,
    pub hash: String,
    #[serde(default)]
    pub saved_by: Option<String>,
    #[serde(default)]
    pub saved_at_ms: Option<i64>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub source: Option<String>,
}

/// One iris key as listed (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct KeyInfo {
    pub id: String,
    #[serde(default)]
    pub login: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub created_ms: Option<i64>,
    #[serde(default)]
    pub expires_ms: Option<i64>,
    #[serde(default)]
    pub revoked_ms: Option<i64>,
    #[serde(default)]
    pub last_used_ms: Option<i64>,
    #[serde(default)]
    pub created_by: Option<String>,
}

/// A key just created: the only time the token is ever shown. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct CreatedKey {
    pub id: String,
    pub token: String,
    #[serde(rename = "for")]
    pub for_subject: String,
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

impl fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKey")
            .field("id", &self.id)
            .field("token", &"<redacted>")
            .field("for_subject", &self.for_subject)
            .field("expires_ms", &self.expires_ms)
            .finish()
    }
}

/// Filters of `GET /api/usage`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageQuery {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub login: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    /// `user`, `model`, `provider` or `day`.
    pub group_by: Option<String>,
}

impl UsageQuery {
    fn to_query(&self) -> String {
        let mut q = Query::default();
        q.num("since_ms", self.since_ms);
        q.num("until_ms", self.until_ms);
        q.text("login", self.login.as_deref());
        q.text("model", self.model.as_deref());
        q.text("provider", self.provider.as_deref());
        q.text("group_by", self.group_by.as_deref());
        q.0
    }
}

/// Filters of `GET /api/logs`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogsQuery {
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    pub login: Option<String>,
    pub model: Option<String>,
    pub status: Option<u16>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl LogsQuery {
    fn to_query(&self) -> String {
        let mut q = Query::default();
        q.num("limit", self.limit.map(i64::from));
        q.text("cursor", self.cursor.as_deref());
        q.text("login", self.login.as_deref());
        q.text("model", self.model.as_deref());
        q.num("status", self.status.map(i64::from));
        q.num("since_ms", self.since_ms);
        q.num("until_ms", self.until_ms);
        q.0
    }
}

/// A query string under construction: `""` or `?a=1&b=x%20y`.
#[derive(Default)]
struct Query(String);

impl Query {
    fn text(&mut self, name: &str, value: Option<&str>) {
        if let Some(v) = value {
            self.0.push(if self.0.is_empty() { '?' } else { '&' });
            self.0.push_str(name);
            self.0.push('=');
            self.0.push_str(&percent_encode(v));
        }
    }

    fn num(&mut self, name: &str, value: Option<i64>) {
        self.text(name, value.map(|n| n.to_string()).as_deref());
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Clone)]
enum Transport {
    Tcp {
        base: BaseUrl,
        client: Box<HttpsClient>,
    },
    Unix(PathBuf),
}

/// A client of one gateway's admin API.
#[derive(Clone)]
pub struct GatewayClient {
    endpoint: Endpoint,
    transport: Transport,
    /// `Bearer <key>`, marked sensitive (never printed by `Debug`, never logged).
    auth: Option<HeaderValue>,
    timeout: Duration,
}

impl fmt::Debug for GatewayClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayClient")
            .field("endpoint", &self.endpoint)
            .field("key", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl GatewayClient {
    /// A client of `endpoint`, sending `key` (an iris key) as `Authorization: Bearer` on TCP.
    /// Fails only on an unusable URL or key, or if TLS cannot be set up.
    pub fn new(endpoint: Endpoint, key: Option<String>) -> Result<GatewayClient, ClientError> {
        let transport = match &endpoint {
            Endpoint::Url(url) => {
                let base = BaseUrl::parse(url).map_err(|reason| ClientError::InvalidEndpoint {
                    endpoint: url.clone(),
                    reason,
                })?;
                let client = https_client().map_err(|e| ClientError::Tls(e.to_string()))?;
                Transport::Tcp {
                    base,
                    client: Box::new(client),
                }
            }
            Endpoint::Unix(path) => Transport::Unix(path.clone()),
        };
        let auth = match key {
            Some(k) => {
                let k = k.trim();
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    ClientError::InvalidEndpoint {
                        endpoint: endpoint.to_string(),
                        reason: "the key contains characters that cannot go in a header".to_owned(),
                    }
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(GatewayClient {
            endpoint,
            transport,
            auth,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Replaces the per-call time limit ([`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> GatewayClient {
        self.timeout = timeout;
        self
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// `GET /api/health` (the JSON as the gateway sends it).
    pub async fn health(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, "/api/health", None).await
    }

    /// `GET /api/whoami`.
    pub async fn whoami(&self) -> Result<Whoami, ClientError> {
        self.call(Method::GET, "/api/whoami", None).await
    }

    /// `GET /api/config` (admin).
    pub async fn config_get(&self) -> Result<ConfigDoc, ClientError> {
        self.call(Method::GET, "/api/config", None).await
    }

    /// `PUT /api/config` (admin): saves `text` if the config in force still has `hash`.
    pub async fn config_put(&self, text: &str, hash: &str) -> Result<ConfigSaved, ClientError> {
        let body = serde_json::json!({ "config": text, "hash": hash });
        self.call(Method::PUT, "/api/config", Some(body)).await
    }

    /// `POST /api/config/validate` (admin): the gateway's verdict on `text`, nothing saved.
    pub async fn config_validate(&self, text: &str) -> Result<Validation, ClientError> {
        let body = serde_json::json!({ "config": text });
        self.call(Method::POST, "/api/config/validate", Some(body))
            .await
    }

    /// `GET /api/config/history` (admin), newest first.
    pub async fn config_history(&self) -> Result<Vec<ConfigVersion>, ClientError> {
        #[derive(Deserialize)]
        struct History {
            #[serde(default)]
            versions: Vec<ConfigVersion>,
        }
        let h: History = self.call(Method::GET, "/api/config/history", None).await?;
        Ok(h.versions)
    }

    /// `POST /api/config/rollback` (admin): puts version `id` back in force if the config in force
    /// still has `hash`.
    pub async fn config_rollback(&self, id: i64, hash: &str) -> Result<ConfigSaved, ClientError> {
        let body = serde_json::json!({ "id": id, "hash": hash });
        self.call(Method::POST, "/api/config/rollback", Some(body))
            .await
    }

    /// `GET /api/usage` (`{"groups": [...], "totals": {...}}`).
    pub async fn usage(&self, query: &UsageQuery) -> Result<Value, ClientError> {
        let path = format!("/api/usage{}", query.to_query());
        self.call(Method::GET, &path, None).await
    }

    /// `GET /api/logs` (`{"records": [...], "next_cursor": ...}`).
    pub async fn logs(&self, query: &LogsQuery) -> Result<Value, ClientError> {
        let path = format!("/api/logs{}", query.to_query());
        self.call(Method::GET, &path, None).await
    }

    /// `GET /api/keys`.
    pub async fn keys_list(&self) -> Result<Vec<KeyInfo>, ClientError> {
        #[derive(Deserialize)]
        struct Keys {
            #[serde(default)]
            keys: Vec<KeyInfo>,
        }
        let k: Keys = self.call(Method::GET, "/api/keys", None).await?;
        Ok(k.keys)
    }

    /// `POST /api/keys`: a new key for a login or `tag:x`, expiring after `expires` (`"30d"`).
    pub async fn keys_create(
        &self,
        for_subject: &str,
        expires: Option<&str>,
        note: Option<&str>,
    ) -> Result<CreatedKey, ClientError> {
        let body = serde_json::json!({ "for": for_subject, "expires": expires, "note": note });
        self.call(Method::POST, "/api/keys", Some(body)).await
    }

    /// `DELETE /api/keys/{id}`.
    pub async fn keys_revoke(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/api/keys/{}", percent_encode(id));
        let _: Value = self.call(Method::DELETE, &path, None).await?;
        Ok(())
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.send(method, path_and_query, body).await?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map_err(|e| ClientError::BadResponse {
                endpoint: self.endpoint.to_string(),
                status: status.as_u16(),
                detail: e.to_string(),
            })
        } else {
            Err(self.api_error(status, &bytes))
        }
    }

    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let req_body: Body = match &body {
            Some(v) => full(v.to_string()),
            None => empty(),
        };
        let mut builder = Request::builder()
            .method(method)
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("iris/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let work = async {
            match &self.transport {
                Transport::Tcp { base, client } => {
                    let uri =
                        base.join(path_and_query)
                            .map_err(|e| ClientError::InvalidEndpoint {
                                endpoint: self.endpoint.to_string(),
                                reason: e.to_string(),
                            })?;
                    let mut req = builder.uri(uri).body(req_body).map_err(|e| {
                        ClientError::InvalidEndpoint {
                            endpoint: self.endpoint.to_string(),
                            reason: e.to_string(),
                        }
                    })?;
                    if let Some(auth) = &self.auth {
                        req.headers_mut()
                            .insert(header::AUTHORIZATION, auth.clone());
                    }
                    let resp = client
                        .request(req)
                        .await
                        .map_err(|e| self.connect_error(&e))?;
                    self.read(resp).await
                }
                Transport::Unix(path) => {
                    let req = builder
                        .uri(path_and_query)
                        .header(header::HOST, "localhost")
                        .body(req_body)
                        .map_err(|e| ClientError::InvalidEndpoint {
                            endpoint: self.endpoint.to_string(),
                            reason: e.to_string(),
                        })?;
                    let resp = unix_request(path, req).await?;
                    self.read(resp).await
                }
            }
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                endpoint: self.endpoint.to_string(),
                secs: self.timeout.as_secs().max(1),
            }),
        }
    }

    async fn read(
        &self,
        resp: http::Response<hyper::body::Incoming>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| ClientError::Transport {
                endpoint: self.endpoint.to_string(),
                detail: cause(e.as_ref()).message,
            })?
            .to_bytes();
        Ok((status, bytes))
    }

    fn connect_error(&self, e: &hyper_util::client::legacy::Error) -> ClientError {
        let c = cause(e);
        let url = self.endpoint.to_string();
        if e.is_connect() {
            if c.io_kind == Some(std::io::ErrorKind::ConnectionRefused) {
                ClientError::NoGateway {
                    url,
                    detail: c.message,
                }
            } else {
                ClientError::Unreachable {
                    url,
                    detail: c.message,
                }
            }
        } else {
            ClientError::Transport {
                endpoint: url,
                detail: c.message,
            }
        }
    }

    fn api_error(&self, status: StatusCode, body: &[u8]) -> ClientError {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let err = json.as_ref().and_then(|v| v.get("error"));
        let code = err
            .and_then(|e| e.get("code"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let message = error_message(body)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("no message").to_owned());
        let via_socket = matches!(self.endpoint, Endpoint::Unix(_));
        match (status.as_u16(), code.as_deref()) {
            (409, _) => ClientError::Conflict { message },
            (400, Some("invalid_config")) => {
                let problems = err
                    .and_then(|e| e.get("problems"))
                    .or_else(|| json.as_ref().and_then(|v| v.get("problems")))
                    .and_then(|p| serde_json::from_value::<Vec<Problem>>(p.clone()).ok())
                    .unwrap_or_default();
                ClientError::InvalidConfig { message, problems }
            }
            (403, Some("admin_lockout")) => ClientError::AdminLockout { message },
            (401 | 403, _) => ClientError::Denied {
                status: status.as_u16(),
                message,
                via_socket,
            },
            (404, _) => ClientError::NotFound { message },
            (s, _) => ClientError::Api {
                status: s,
                code,
                message,
            },
        }
    }
}

/// One request over a fresh connection to the unix socket at `path`.
async fn unix_request(
    path: &Path,
    req: Request<Body>,
) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => ClientError::SocketDenied {
                path: path.to_owned(),
            },
            _ => ClientError::NoSocket {
                path: path.to_owned(),
                detail: e.to_string(),
            },
        })?;
    let transport_err = |e: hyper::Error| ClientError::Transport {
        endpoint: format!("unix:{}", path.display()),
        detail: cause(&e).message,
    };
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(transport_err)?;
    // The connection task ends when the response body is read (or dropped) and `sender` is gone.
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "admin socket connection ended with an error");
        }
    });
    sender.send_request(req).await.map_err(transport_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            Endpoint::parse("unix:/var/lib/iris/iris-admin.sock").unwrap(),
            Endpoint::Unix("/var/lib/iris/iris-admin.sock".into())
        );
        assert_eq!(
            Endpoint::parse("/run/iris.sock").unwrap(),
            Endpoint::Unix("/run/iris.sock".into())
        );
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:4747").unwrap(),
            Endpoint::Url("http://127.0.0.1:4747".into())
        );
        let err = Endpoint::parse("127.0.0.1:4747").unwrap_err().to_string();
        assert!(err.contains("not a gateway address"), "{err}");
        assert!(Endpoint::parse("unix:").is_err());
    }

    #[test]
    fn queries_are_encoded() {
        let q = UsageQuery {
            since_ms: Some(5),
            login: Some("alice@example.com".into()),
            model: Some("anthropic/claude sonnet&x".into()),
            group_by: Some("day".into()),
            ..UsageQuery::default()
        };
        assert_eq!(
            q.to_query(),
            "?since_ms=5&login=alice%40example.com&model=anthropic%2Fclaude%20sonnet%26x&group_by=day"
        );
        assert_eq!(UsageQuery::default().to_query(), "");
        let l = LogsQuery {
            limit: Some(50),
            status: Some(429),
            cursor: Some("a=b".into()),
            ..LogsQuery::default()
        };
        assert_eq!(l.to_query(), "?limit=50&cursor=a%3Db&status=429");
    }

    #[test]
    fn whoami_describe() {
        let w: Whoami = serde_json::from_value(serde_json::json!({
            "identity": {"source": "key", "login": "alice@example.com", "key_id": "k_1", "tags": []},
            "role": "user",
            "models": ["openai/gpt-4o", "anthropic/claude-sonnet-4-5"]
        }))
        .unwrap();
        assert_eq!(
            w.describe(),
            "alice@example.com (iris key k_1; role user; 2 models)"
        );
        let tagged: Whoami = serde_json::from_value(serde_json::json!({
            "identity": {"source": "whois", "tags": ["tag:ci", "tag:prod"]},
            "role": null,
            "models": []
        }))
        .unwrap();
        assert_eq!(
            tagged.describe(),
            "tag:ci,tag:prod (via whois; no role; 0 models)"
        );
    }

    #[test]
    fn created_key_debug_hides_token() {
        let k = CreatedKey {
            id: "k_1".into(),
            token: "iris_sk_secret".into(),
            for_subject: "alice@example.com".into(),
            expires_ms: None,
        };
        assert!(!format!("{k:?}").contains("secret"));
        let c = GatewayClient::new(
            Endpoint::Url("http://127.0.0.1:1".into()),
            Some("iris_sk_secret".into()),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }
}
