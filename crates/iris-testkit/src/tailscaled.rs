//! A fake tailscaled: the LocalAPI WhoIs endpoint on a unix socket, answered from fixtures.
//!
//! It behaves like tailscaled 1.10x where iris can tell the difference:
//! - `GET /localapi/v0/whois?addr=<IP | IP:PORT | nodekey:...>` answers the fixture as
//!   tab-indented JSON `{"Node":{...},"UserProfile":{...},"CapMap":{...}|null}`;
//!   lookup is the exact `IP:PORT` key first, then the bare IP;
//! - an unknown peer gets 404 `no match for IP:port`, a missing `addr` 400
//!   `missing 'addr' parameter`, an unparsable one 400 `invalid 'addr' parameter`;
//! - a Host header other than `local-tailscaled.sock` (or empty), or any `Origin`/`Referer`
//!   header, gets 403 `invalid localapi request`; an HTTP/1.1 request without Host gets 400 (Go's
//!   net/http rejects those before the handler runs).
//!
//! Extra, for tests: `GET /__fake/stats` returns `{"whois_requests": N, "whois_addrs": [...]}`.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::{Context as _, bail};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::net::UnixListener;

use crate::server::{self, Body, ShutdownGuard};

/// The Host header tailscaled's own clients send (`apitype.LocalAPIHost`).
pub const LOCALAPI_HOST: &str = "local-tailscaled.sock";
/// The standard fixture set shipped with the crate (`fixtures/whois.json`).
pub const STANDARD_FIXTURES: &str = include_str!("../fixtures/whois.json");
/// How many looked-up addresses are remembered.
const ADDR_LOG_LIMIT: usize = 10_000;

/// WhoIs answers keyed by `IP:PORT` or bare `IP`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fixtures {
    by_addr: BTreeMap<String, Value>,
}

/// The outcome of a lookup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Lookup<'a> {
    Found(&'a Value),
    NotFound,
    InvalidAddr,
}

impl Fixtures {
    /// The standard set: alice (127.0.0.2), bob (127.0.0.5), a CI node tagged
    /// `tag:prod`+`tag:ci` (127.0.0.3) and a `tag:ci` node known only as 100.64.0.9.
    /// 127.0.0.1 is absent, so the host's own processes get 404 like on a real node.
    pub fn standard() -> Self {
        match Self::from_json(STANDARD_FIXTURES) {
            Ok(f) => f,
            // The file is compiled in and covered by a unit test.
            Err(e) => panic!("bundled fixtures/whois.json is invalid: {e:#}"),
        }
    }

    /// Parses `{ "<IP or IP:PORT>": <WhoIsResponse>, ... }`.
    pub fn from_json(text: &str) -> anyhow::Result<Self> {
        let map: BTreeMap<String, Value> =
            serde_json::from_str(text).context("fixtures must be a JSON object")?;
        let mut fixtures = Self::default();
        for (key, whois) in map {
            fixtures.insert(&key, whois)?;
        }
        Ok(fixtures)
    }

    /// Reads [`Fixtures::from_json`] from a file.
    pub fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading fixtures {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Adds or replaces the answer for `addr` (`IP` or `IP:PORT`). The value must have `Node`
    /// and `UserProfile` objects; a missing `CapMap` is served as `null`, like tailscaled.
    pub fn insert(&mut self, addr: &str, mut whois: Value) -> anyhow::Result<()> {
        let Some(key) = canonical_key(addr) else {
            bail!("fixture key {addr:?} is not an IP or IP:PORT");
        };
        let Some(obj) = whois.as_object_mut() else {
            bail!("fixture {addr:?} is not a JSON object");
        };
        for field in ["Node", "UserProfile"] {
            if !obj.get(field).is_some_and(Value::is_object) {
                bail!("fixture {addr:?} has no {field} object");
            }
        }
        obj.entry("CapMap").or_insert(Value::Null);
        self.by_addr.insert(key, whois);
        Ok(())
    }

    /// Number of fixtures.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Whether there are no fixtures.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }

    /// Looks `addr` up the way the fake answers `whois?addr=`.
    pub fn lookup(&self, addr: &str) -> Lookup<'_> {
        if addr.starts_with("nodekey:") {
            return self
                .by_addr
                .values()
                .find(|w| w.pointer("/Node/Key").and_then(Value::as_str) == Some(addr))
                .map_or(Lookup::NotFound, Lookup::Found);
        }
        if let Ok(ip) = addr.parse::<IpAddr>() {
            return self
                .by_addr
                .get(&ip.to_string())
                .map_or(Lookup::NotFound, Lookup::Found);
        }
        if let Ok(sa) = addr.parse::<SocketAddr>() {
            return self
                .by_addr
                .get(&sa.to_string())
                .or_else(|| self.by_addr.get(&sa.ip().to_string()))
                .map_or(Lookup::NotFound, Lookup::Found);
        }
        Lookup::InvalidAddr
    }
}

fn canonical_key(addr: &str) -> Option<String> {
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    addr.parse::<SocketAddr>().ok().map(|sa| sa.to_string())
}

/// Serializes like Go's `json.MarshalIndent(v, "", "\t")`.
pub fn to_tab_indented(value: &Value) -> Vec<u8> {
    use serde::Serialize as _;
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    if value.serialize(&mut ser).is_err() {
        // Serializing a Value into a Vec cannot fail; keep the answer well-formed regardless.
        return b"null".to_vec();
    }
    out
}

#[derive(Debug)]
struct State {
    fixtures: RwLock<Fixtures>,
    whois_requests: AtomicU64,
    addrs: Mutex<VecDeque<String>>,
}

/// A running fake tailscaled. Dropping it stops the server and removes the socket.
#[derive(Debug)]
pub struct FakeTailscaled {
    socket: PathBuf,
    state: Arc<State>,
    _guard: ShutdownGuard,
    tempdir: Option<tempfile::TempDir>,
}

impl FakeTailscaled {
    /// Starts with the standard fixtures on a socket in a fresh temporary directory.
    ///
    /// # Panics
    /// If no temporary directory or socket can be created; see [`FakeTailscaled::try_start`].
    pub async fn start() -> Self {
        match Self::try_start(Fixtures::standard()).await {
            Ok(fake) => fake,
            Err(e) => panic!("cannot start the fake tailscaled: {e:#}"),
        }
    }

    /// Starts with `fixtures` on a socket in a fresh temporary directory.
    pub async fn try_start(fixtures: Fixtures) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("iris-fake-tailscaled")
            .tempdir()?;
        let socket = dir.path().join("tailscaled.sock");
        let mut fake = Self::start_at(&socket, fixtures).await?;
        fake.tempdir = Some(dir);
        Ok(fake)
    }

    /// Starts with `fixtures` on `socket` (a stale socket file there is replaced).
    pub async fn start_at(socket: &Path, fixtures: Fixtures) -> anyhow::Result<Self> {
        remove_stale_socket(socket)?;
        let listener =
            UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
        let state = Arc::new(State {
            fixtures: RwLock::new(fixtures),
            whois_requests: AtomicU64::new(0),
            addrs: Mutex::new(VecDeque::new()),
        });
        let handler_state = state.clone();
        let guard = server::spawn_unix(listener, move |req| {
            let state = handler_state.clone();
            async move { handle(&state, &req) }
        });
        Ok(Self {
            socket: socket.to_path_buf(),
            state,
            _guard: guard,
            tempdir: None,
        })
    }

    /// The socket path to give iris (`--tailscale-socket`).
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// How many `/localapi/v0/whois` requests arrived.
    pub fn whois_count(&self) -> u64 {
        self.state.whois_requests.load(Ordering::Relaxed)
    }

    /// The `addr` of each WhoIs request, oldest first (the last 10,000).
    pub fn whois_addrs(&self) -> Vec<String> {
        let addrs = self
            .state
            .addrs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        addrs.iter().cloned().collect()
    }

    /// Replaces the fixtures (for tests where a peer's identity changes).
    pub fn set_fixtures(&self, fixtures: Fixtures) {
        *self
            .state
            .fixtures
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fixtures;
    }
}

impl Drop for FakeTailscaled {
    fn drop(&mut self) {
        if self.tempdir.is_none() {
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display())),
        Ok(_) => bail!("{} exists and is not a socket", path.display()),
        Err(_) => Ok(()),
    }
}

fn handle(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if path == "/__fake/stats" && req.method() == Method::GET {
        let addrs: Vec<String> = {
            let addrs = state.addrs.lock().unwrap_or_else(PoisonError::into_inner);
            addrs.iter().cloned().collect()
        };
        return server::json_response(
            200,
            &serde_json::json!({
                "whois_requests": state.whois_requests.load(Ordering::Relaxed),
                "whois_addrs": addrs,
            }),
        );
    }
    if !path.starts_with("/localapi/") {
        return server::text_response(404, "404 page not found");
    }

    let is_whois = path == "/localapi/v0/whois";
    let addr = server::query_param(req.uri().query(), "addr");
    if is_whois {
        state.whois_requests.fetch_add(1, Ordering::Relaxed);
        let mut addrs = state.addrs.lock().unwrap_or_else(PoisonError::into_inner);
        if addrs.len() >= ADDR_LOG_LIMIT {
            addrs.pop_front();
        }
        addrs.push_back(addr.clone().unwrap_or_default());
    }

    let host = req.headers().get(http::header::HOST);
    if host.is_none() && req.version() == Version::HTTP_11 {
        return server::text_response(400, "400 Bad Request: missing required Host header");
    }
    let host_ok = host.is_none_or(|h| h.is_empty() || h.as_bytes() == LOCALAPI_HOST.as_bytes());
    let browserish = req.headers().contains_key(http::header::ORIGIN)
        || req.headers().contains_key(http::header::REFERER);
    if !host_ok || browserish {
        return server::text_response(403, "invalid localapi request");
    }
    if !is_whois {
        return server::text_response(404, "404 not found");
    }

    let Some(addr) = addr.filter(|a| !a.is_empty()) else {
        return server::text_response(400, "missing 'addr' parameter");
    };
    let fixtures = state
        .fixtures
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    match fixtures.lookup(&addr) {
        Lookup::Found(whois) => {
            let mut resp = Response::new(server::full(to_tab_indented(whois)));
            let headers = resp.headers_mut();
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            headers.insert(
                "tailscale-version",
                http::HeaderValue::from_static("1.103.0-fake"),
            );
            headers.insert("tailscale-cap", http::HeaderValue::from_static("130"));
            resp
        }
        Lookup::NotFound => server::text_response(404, "no match for IP:port"),
        Lookup::InvalidAddr => server::text_response(400, "invalid 'addr' parameter"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_fixtures_have_the_documented_people() {
        let f = Fixtures::standard();
        assert_eq!(f.len(), 4);
        let login = |addr: &str| match f.lookup(addr) {
            Lookup::Found(w) => w["UserProfile"]["LoginName"].as_str().map(str::to_owned),
            Lookup::NotFound | Lookup::InvalidAddr => None,
        };
        assert_eq!(
            login("127.0.0.2:1234").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(login("127.0.0.5").as_deref(), Some("bob@example.com"));
        assert_eq!(login("127.0.0.3:9").as_deref(), Some("tagged-devices"));
        assert_eq!(login("100.64.0.9:443").as_deref(), Some("tagged-devices"));
        assert_eq!(f.lookup("127.0.0.1:5555"), Lookup::NotFound);
        assert_eq!(f.lookup("not-an-ip"), Lookup::InvalidAddr);

        let Lookup::Found(alice) = f.lookup("127.0.0.2") else {
            panic!("alice missing");
        };
        assert_eq!(
            alice["UserProfile"]["Groups"],
            serde_json::json!(["group:ai-users"])
        );
        assert_eq!(
            alice["CapMap"]["tailscale.com/cap/aperture"],
            serde_json::json!([{"role": "user"}, {"models": "openai/**"}])
        );
        let Lookup::Found(ci) = f.lookup("127.0.0.3") else {
            panic!("ci node missing");
        };
        assert_eq!(
            ci["Node"]["Tags"],
            serde_json::json!(["tag:prod", "tag:ci"])
        );
        assert!(ci["CapMap"].is_null());
    }

    #[test]
    fn exact_ip_port_wins_over_bare_ip() {
        let mut f = Fixtures::default();
        let who = |login: &str| serde_json::json!({"Node": {"ID": 1}, "UserProfile": {"LoginName": login}});
        f.insert("127.0.0.9", who("ip@example.com")).unwrap();
        f.insert("127.0.0.9:4000", who("port@example.com")).unwrap();
        f.insert("[::1]:80", who("v6@example.com")).unwrap();
        let login = |addr: &str| match f.lookup(addr) {
            Lookup::Found(w) => w["UserProfile"]["LoginName"].as_str().unwrap().to_owned(),
            other => format!("{other:?}"),
        };
        assert_eq!(login("127.0.0.9:4000"), "port@example.com");
        assert_eq!(login("127.0.0.9:4001"), "ip@example.com");
        assert_eq!(login("127.0.0.9"), "ip@example.com");
        assert_eq!(login("[::1]:80"), "v6@example.com");
        assert_eq!(login("[::1]:81"), "NotFound");
        // A missing CapMap is served as null, like tailscaled's untagged field.
        let Lookup::Found(w) = f.lookup("127.0.0.9") else {
            panic!()
        };
        assert!(w.as_object().unwrap().contains_key("CapMap"));
    }

    #[test]
    fn bad_fixtures_are_rejected() {
        assert!(Fixtures::from_json("[]").is_err());
        assert!(
            Fixtures::from_json(r#"{"host.example": {"Node": {}, "UserProfile": {}}}"#).is_err()
        );
        assert!(Fixtures::from_json(r#"{"127.0.0.2": {"Node": {}}}"#).is_err());
        assert!(Fixtures::from_json(r#"{"127.0.0.2": 5}"#).is_err());
        assert!(Fixtures::from_json(r#"{"127.0.0.2": {"Node": {}, "UserProfile": {}}}"#).is_ok());
    }

    #[test]
    fn nodekey_lookup() {
        let f = Fixtures::standard();
        let key = "nodekey:4c1f0a6e2d8b97c3e5f1a2b4c6d8e0f1a3b5c7d9e1f3a5b7c9d1e3f5a7b9c1a9";
        let Lookup::Found(w) = f.lookup(key) else {
            panic!("nodekey lookup failed")
        };
        assert_eq!(w["UserProfile"]["LoginName"], "alice@example.com");
        assert_eq!(f.lookup("nodekey:00"), Lookup::NotFound);
    }

    #[test]
    fn tab_indentation() {
        let text = String::from_utf8(to_tab_indented(&serde_json::json!({"a": {"b": 1}}))).unwrap();
        assert_eq!(text, "{\n\t\"a\": {\n\t\t\"b\": 1\n\t}\n}");
    }
}
