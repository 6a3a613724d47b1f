//! The mock provider: one server speaking both the OpenAI and the Anthropic wire formats.
//!
//! Every answer is deterministic. The text of a reply with `N` chunks for model `M` is
//! `"mock reply to M: w1 w2 ... wN"` (see [`reply_text`]); streams send it as `N` content deltas.
//! Usage numbers follow fixed rules (see [`MockUsage`]) and are recorded with the request, so a
//! test can compare what the gateway accounted with what the provider said.
//!
//! Knobs, per request (headers) with defaults from [`MockOptions`]:
//! - `x-mock-chunks: N`: content chunks (and output tokens), default 5;
//! - `x-mock-chunk-size: B`: pad each chunk's text to `B` bytes;
//! - `x-mock-chunk-delay-ms: D`: sleep `D` ms before each content chunk of a stream;
//! - `x-mock-latency-ms: L`: sleep `L` ms before sending the response head;
//! - `x-mock-status: S`: answer status `S` with the provider's own error body shape;
//! - `x-mock-hang: 1`: accept the request and never answer;
//! - `x-mock-fault: MODE` (with `x-mock-fault-after`, `x-mock-fault-ms`, `x-mock-fault-bytes`):
//!   misbehave on purpose: close or reset the connection, stall, send malformed JSON or SSE, an
//!   oversized answer, or everything a byte at a time. See [`FaultMode`] for each mode's bytes.
//!
//! [`MockProvider::open_connections`] counts the connections open to the mock, so a test can
//! see that a client (the gateway) really closed its upstream connection.
//!
//! Control endpoints: `GET /__mock/requests` (the recorded requests as a JSON array, oldest first)
//! and `POST /__mock/reset`.

mod anthropic;
mod conn;
mod faults;
mod openai;
mod sse;

pub use faults::{
    DEFAULT_FAULT_AFTER, DEFAULT_OVERSIZED_BYTES, DEFAULT_SLOW_LORIS_MS, Fault, FaultMode, SSE_JUNK,
};

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::net::TcpListener;

use crate::server::{self, Body};
use conn::ConnFaults;

/// How many recorded requests are kept (the oldest are dropped first).
pub const RECORD_LIMIT: usize = 10_000;
/// Largest request body the mock accepts (larger ones get a 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Models the mock lists on `GET /v1/models`.
pub const MODELS: &[&str] = &[
    "gpt-4o-mini",
    "gpt-4o",
    "text-embedding-3-small",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
];
/// Dimensions of an embedding when the request does not ask for `dimensions`.
pub const DEFAULT_EMBEDDING_DIMENSIONS: usize = 16;
/// `cache_read_input_tokens` answered when an Anthropic body contains `cache_control`.
pub const CACHE_READ_TOKENS: u64 = 100;
/// `cache_creation_input_tokens` answered when an Anthropic body contains `cache_control`.
pub const CACHE_WRITE_TOKENS: u64 = 20;
/// Reasoning tokens per content chunk when an OpenAI body asks for reasoning.
pub const REASONING_TOKENS_PER_CHUNK: u64 = 3;

/// Defaults for the per-request knobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockOptions {
    /// Content chunks per reply (= output tokens). At least 1.
    pub chunks: usize,
    /// Pad each chunk's text to this many bytes (0 = no padding).
    pub chunk_size: usize,
    /// Sleep before the response head.
    pub latency_ms: u64,
    /// Sleep before each content chunk of a stream.
    pub chunk_delay_ms: u64,
    /// Record requests (turn off for load tests that do not read them).
    pub record: bool,
}

impl Default for MockOptions {
    fn default() -> Self {
        Self {
            chunks: 5,
            chunk_size: 0,
            latency_ms: 0,
            chunk_delay_ms: 0,
            record: true,
        }
    }
}

/// Usage the mock answered with, in provider-neutral names. The numbers are the provider's raw
/// fields: OpenAI `prompt_tokens`/`input_tokens` (which *include* cached tokens), Anthropic
/// `input_tokens` (which *exclude* cache reads and writes).
///
/// Rules: `input_tokens = max(1, ceil(body bytes / 4))`; `output_tokens` = chunks (plus
/// `reasoning_tokens` for OpenAI, whose output count includes reasoning); Anthropic bodies
/// containing `cache_control` get [`CACHE_READ_TOKENS`] and [`CACHE_WRITE_TOKENS`]; OpenAI bodies
/// with `prompt_cache_key` get `cached_tokens = input_tokens / 2`; OpenAI bodies with `reasoning`
/// (Responses) or `reasoning_effort` (Chat) get [`REASONING_TOKENS_PER_CHUNK`] per chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
}

/// One request as the mock saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Arrival order, starting at 1 (not reset by [`MockProvider::reset`]).
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// Every header in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
    /// Status the mock answered (or will answer, for a hanging request); 0 when a fault closes
    /// the connection before any answer.
    pub status: u16,
    /// Whether the answer is an SSE stream.
    pub streaming: bool,
    /// The usage sent to the client; `None` when the answer carried none (errors, a chat stream
    /// without `stream_options.include_usage`, models lists).
    pub usage: Option<MockUsage>,
}

impl RecordedRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// The pieces of text a reply is made of: chunk 1 is `"mock reply to {model}: w1"`, chunk `i` is
/// `" w{i}"`, each padded with `x` up to `chunk_size` bytes.
pub fn reply_pieces(model: &str, chunks: usize, chunk_size: usize) -> Vec<String> {
    (1..=chunks.max(1))
        .map(|i| {
            let mut piece = if i == 1 {
                format!("mock reply to {model}: w1")
            } else {
                format!(" w{i}")
            };
            if piece.len() < chunk_size {
                let pad = chunk_size - piece.len();
                piece.extend(std::iter::repeat_n('x', pad));
            }
            piece
        })
        .collect()
}

/// The full reply text for `model` with `chunks` chunks and no padding.
pub fn reply_text(model: &str, chunks: usize) -> String {
    reply_pieces(model, chunks, 0).concat()
}

/// The embedding the mock answers for one input (its string, or the JSON text of a token array).
/// Values are multiples of 1/256 in [-0.5, 0.5), exact in f32 and in decimal.
pub fn embedding_for(input: &str, dimensions: usize) -> Vec<f32> {
    // FNV-1a, then splitmix64 per dimension: cheap, stable across platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in input.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..dimensions)
        .map(|j| {
            let mut z = h.wrapping_add((j as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let byte = (z >> 56) as u8;
            (f32::from(byte) - 128.0) / 256.0
        })
        .collect()
}

/// A running mock provider. Dropping it stops the server and drops open connections.
#[derive(Debug)]
pub struct MockProvider {
    addr: SocketAddr,
    state: Arc<State>,
    _guard: conn::Stop,
}

impl MockProvider {
    /// Starts a mock with default options on `127.0.0.1:0`.
    ///
    /// # Panics
    /// If no loopback port can be bound (a broken test machine); use [`MockProvider::try_start`]
    /// to handle that.
    pub async fn start() -> Self {
        match Self::try_start(MockOptions::default(), ([127, 0, 0, 1], 0).into()).await {
            Ok(mock) => mock,
            Err(e) => panic!("cannot start the mock provider on 127.0.0.1:0: {e:#}"),
        }
    }

    /// Starts a mock with `options` on `addr` (which must be a loopback address).
    pub async fn try_start(options: MockOptions, addr: SocketAddr) -> anyhow::Result<Self> {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the mock provider only listens on loopback, not {addr}"
        );
        // The backlog iris itself listens with (iris_server::net::LISTEN_BACKLOG): thousands
        // of streams open their upstream connections at once, and a load test must not lose
        // them in the mock's queue.
        let socket = match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener: TcpListener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(options));
        let handler_state = state.clone();
        let guard = conn::spawn(listener, state.open.clone(), move |req| {
            handle(handler_state.clone(), req)
        });
        Ok(Self {
            addr,
            state,
            _guard: guard,
        })
    }

    /// `http://127.0.0.1:PORT` (no trailing slash, no `/v1`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The recorded requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.snapshot()
    }

    /// Forgets the recorded requests.
    pub fn reset(&self) {
        self.state.clear();
    }

    /// Connections open to the mock right now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
struct State {
    options: MockOptions,
    seq: AtomicU64,
    log: Mutex<VecDeque<RecordedRequest>>,
    open: Arc<AtomicUsize>,
}

impl State {
    fn new(options: MockOptions) -> Self {
        Self {
            options,
            seq: AtomicU64::new(0),
            log: Mutex::new(VecDeque::new()),
            open: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn record(&self, rec: RecordedRequest) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() >= RECORD_LIMIT {
            log.pop_front();
        }
        log.push_back(rec);
    }

    fn snapshot(&self) -> Vec<RecordedRequest> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().cloned().collect()
    }

    fn clear(&self) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// Which wire format an error is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    OpenAi,
    Anthropic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ChatCompletions,
    Completions,
    Responses,
    Embeddings,
    Messages,
    CountTokens,
    Models,
    NotFound(Dialect),
}

impl Endpoint {
    fn of(method: &Method, path: &str) -> Self {
        // Accept both `/v1/x` and `/x`, as self-hosted OpenAI-compatible servers do.
        let p = path.strip_prefix("/v1").unwrap_or(path);
        let dialect = if p.starts_with("/messages") {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        };
        match (method, p) {
            (&Method::POST, "/chat/completions") => Self::ChatCompletions,
            (&Method::POST, "/completions") => Self::Completions,
            (&Method::POST, "/responses") => Self::Responses,
            (&Method::POST, "/embeddings") => Self::Embeddings,
            (&Method::POST, "/messages") => Self::Messages,
            (&Method::POST, "/messages/count_tokens") => Self::CountTokens,
            (&Method::GET, "/models") => Self::Models,
            _ => Self::NotFound(dialect),
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            Self::Messages | Self::CountTokens => Dialect::Anthropic,
            Self::NotFound(d) => d,
            Self::ChatCompletions
            | Self::Completions
            | Self::Responses
            | Self::Embeddings
            | Self::Models => Dialect::OpenAi,
        }
    }
}

/// Per-request settings: the defaults overridden by `x-mock-*` headers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Knobs {
    pub chunks: usize,
    pub chunk_size: usize,
    pub chunk_delay_ms: u64,
    pub latency_ms: u64,
    pub status: Option<u16>,
    pub hang: bool,
}

impl Knobs {
    fn from_headers(headers: &HeaderMap, defaults: &MockOptions) -> Self {
        fn num(headers: &HeaderMap, name: &str) -> Option<u64> {
            headers.get(name)?.to_str().ok()?.trim().parse().ok()
        }
        let chunks = num(headers, "x-mock-chunks")
            .map_or(defaults.chunks, |n| n.min(1_000_000) as usize)
            .max(1);
        let chunk_size = num(headers, "x-mock-chunk-size")
            .map_or(defaults.chunk_size, |n| n.min(1 << 20) as usize);
        let status = num(headers, "x-mock-status")
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| (200..=599).contains(s));
        let hang = headers
            .get("x-mock-hang")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        Self {
            chunks,
            chunk_size,
            chunk_delay_ms: num(headers, "x-mock-chunk-delay-ms")
                .unwrap_or(defaults.chunk_delay_ms),
            latency_ms: num(headers, "x-mock-latency-ms").unwrap_or(defaults.latency_ms),
            status,
            hang,
        }
    }
}

/// What one API handler decided to answer.
pub(crate) struct Answer {
    pub status: u16,
    pub reply: Reply,
    pub usage: Option<MockUsage>,
}

pub(crate) enum Reply {
    Json {
        body: Value,
        headers: Vec<(&'static str, String)>,
    },
    Sse(sse::Sse),
}

impl Answer {
    pub(crate) fn json(body: Value, usage: Option<MockUsage>) -> Self {
        Self {
            status: 200,
            reply: Reply::Json {
                body,
                headers: Vec::new(),
            },
            usage,
        }
    }

    pub(crate) fn stream(events: sse::Sse, usage: Option<MockUsage>) -> Self {
        Self {
            status: 200,
            reply: Reply::Sse(events),
            usage,
        }
    }

    /// An error in `dialect`'s shape. The messages imitate the real providers'.
    pub(crate) fn error(dialect: Dialect, status: u16, message: &str) -> Self {
        let (body, headers) = match dialect {
            Dialect::OpenAi => openai::error_body(status, message),
            Dialect::Anthropic => anthropic::error_body(status, message),
        };
        Self {
            status,
            reply: Reply::Json { body, headers },
            usage: None,
        }
    }

    fn streaming(&self) -> bool {
        matches!(self.reply, Reply::Sse(_))
    }

    fn into_response(
        self,
        seq: u64,
        dialect: Dialect,
        chunk_delay: Duration,
        fault: Option<(&Fault, &Arc<ConnFaults>)>,
    ) -> Response<Body> {
        let mut resp = match (self.reply, fault) {
            (Reply::Json { body, headers }, fault) => {
                let mut resp = server::json_response(self.status, &body);
                if let Some((fault, conn)) = fault {
                    let whole = serde_json::to_vec(&body).unwrap_or_default();
                    let (faulty, declared) = faults::json_body(fault, Bytes::from(whole), conn);
                    *resp.body_mut() = faulty;
                    if let Some(len) = declared {
                        resp.headers_mut()
                            .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
                    }
                }
                for (name, value) in headers {
                    if let Ok(v) = http::HeaderValue::from_str(&value) {
                        resp.headers_mut().insert(name, v);
                    }
                }
                resp
            }
            (Reply::Sse(events), None) => events.into_response(chunk_delay),
            (Reply::Sse(events), Some((fault, conn))) => {
                let steps = faults::sse_steps(fault, events.into_events(), chunk_delay);
                sse::with_sse_headers(Response::new(faults::script(steps, Some(conn.clone()))))
            }
        };
        let id_header = match dialect {
            Dialect::OpenAi => "x-request-id",
            Dialect::Anthropic => "request-id",
        };
        if let Ok(v) = http::HeaderValue::from_str(&format!("req_mock{seq}")) {
            resp.headers_mut().insert(id_header, v);
        }
        resp
    }
}

/// Facts about the request every API handler needs.
pub(crate) struct Ctx<'a> {
    pub seq: u64,
    pub created: u64,
    pub body: &'a Value,
    pub raw: &'a [u8],
    pub knobs: Knobs,
}

impl Ctx<'_> {
    /// `max(1, ceil(body bytes / 4))`.
    pub fn input_tokens(&self) -> u64 {
        (self.raw.len() as u64).div_ceil(4).max(1)
    }

    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    pub fn pieces(&self, model: &str) -> Vec<String> {
        reply_pieces(model, self.knobs.chunks, self.knobs.chunk_size)
    }

    pub fn wants_stream(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();

    match (&parts.method, path) {
        (&Method::GET, "/__mock/requests") => {
            let list = state.snapshot();
            let json = serde_json::to_value(&list).unwrap_or(Value::Null);
            return server::json_response(200, &json);
        }
        (&Method::POST, "/__mock/reset") => {
            state.clear();
            return server::json_response(200, &serde_json::json!({"ok": true}));
        }
        _ => {}
    }

    let endpoint = Endpoint::of(&parts.method, path);
    let dialect = endpoint.dialect();
    let seq = state.seq.fetch_add(1, Ordering::Relaxed) + 1;
    let knobs = Knobs::from_headers(&parts.headers, &state.options);

    let raw: Bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let answer = if e.is::<http_body_util::LengthLimitError>() {
                Answer::error(dialect, 413, "request body too large")
            } else {
                // The client went away mid-body; nobody reads this answer.
                Answer::error(dialect, 400, "could not read the request body")
            };
            return answer.into_response(seq, dialect, Duration::ZERO, None);
        }
    };

    let fault = match Fault::from_headers(&parts.headers) {
        Ok(f) => f,
        Err(value) => {
            let known: Vec<&str> = FaultMode::ALL.iter().map(|m| m.name()).collect();
            let message = format!(
                "unknown x-mock-fault {value:?}; known: {}",
                known.join(", ")
            );
            return Answer::error(dialect, 400, &message).into_response(
                seq,
                dialect,
                Duration::ZERO,
                None,
            );
        }
    };
    // Every connection the mock accepts carries its controls; a default one keeps the types
    // simple should a request ever arrive without.
    let conn = parts
        .extensions
        .get::<Arc<ConnFaults>>()
        .cloned()
        .unwrap_or_default();

    let answer = if let Some(status) = knobs.status {
        Answer::error(dialect, status, "")
    } else {
        answer_for(endpoint, seq, &parts.headers, &raw, knobs)
    };
    let closes_first = fault.is_some_and(|f| f.mode == FaultMode::CloseBeforeHeaders);

    if state.options.record {
        state.record(RecordedRequest {
            seq,
            method: parts.method.to_string(),
            path: path.to_owned(),
            query: parts.uri.query().map(str::to_owned),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&raw).into_owned(),
            status: if closes_first { 0 } else { answer.status },
            streaming: answer.streaming(),
            usage: answer.usage,
        });
    }

    if knobs.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(knobs.latency_ms)).await;
    }
    if knobs.hang {
        std::future::pending::<()>().await;
    }
    match fault.map(|f| f.mode) {
        Some(FaultMode::CloseBeforeHeaders) => {
            conn.close(false);
            // The connection task drops this future with the connection.
            std::future::pending::<()>().await;
        }
        Some(FaultMode::StallBeforeFirstByte) => match fault.and_then(|f| f.ms) {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending::<()>().await,
        },
        Some(FaultMode::SlowLoris) => {
            conn.trickle(fault.and_then(|f| f.ms).unwrap_or(DEFAULT_SLOW_LORIS_MS));
        }
        _ => {}
    }
    let mut resp = answer.into_response(
        seq,
        dialect,
        Duration::from_millis(knobs.chunk_delay_ms),
        fault.as_ref().map(|f| (f, &conn)),
    );
    if fault.is_some_and(|f| f.mode == FaultMode::SlowLoris) {
        // Never reuse a connection that trickles.
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}

fn answer_for(
    endpoint: Endpoint,
    seq: u64,
    headers: &HeaderMap,
    raw: &[u8],
    knobs: Knobs,
) -> Answer {
    let dialect = endpoint.dialect();
    if let Endpoint::NotFound(_) = endpoint {
        return Answer::error(dialect, 404, "");
    }
    if endpoint == Endpoint::Models {
        return openai::models(headers);
    }
    let body: Value = match serde_json::from_slice(raw) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Answer::error(dialect, 400, "the request body must be a JSON object"),
        Err(e) => {
            return Answer::error(dialect, 400, &format!("could not parse the JSON body: {e}"));
        }
    };
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let ctx = Ctx {
        seq,
        created,
        body: &body,
        raw,
        knobs,
    };
    match endpoint {
        Endpoint::ChatCompletions => openai::chat(&ctx),
        Endpoint::Completions => openai::completions(&ctx),
        Endpoint::Responses => openai::responses(&ctx),
        Endpoint::Embeddings => openai::embeddings(&ctx),
        Endpoint::Messages => anthropic::messages(&ctx),
        Endpoint::CountTokens => anthropic::count_tokens(&ctx),
        Endpoint::Models | Endpoint::NotFound(_) => Answer::error(dialect, 404, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_is_deterministic() {
        assert_eq!(reply_text("m", 3), "mock reply to m: w1 w2 w3");
        assert_eq!(reply_text("m", 0), "mock reply to m: w1");
        let padded = reply_pieces("m", 2, 8);
        assert_eq!(
            padded,
            vec!["mock reply to m: w1".to_owned(), " w2xxxxx".to_owned()]
        );
    }

    #[test]
    fn embeddings_are_stable_and_exact() {
        let a = embedding_for("hello", 16);
        assert_eq!(a, embedding_for("hello", 16));
        assert_ne!(a, embedding_for("hello!", 16));
        assert_eq!(a.len(), 16);
        for v in &a {
            assert!((-0.5..0.5).contains(v));
            assert_eq!((v * 256.0).fract(), 0.0);
        }
    }

    #[test]
    fn endpoints() {
        let cases = [
            (
                Method::POST,
                "/v1/chat/completions",
                Endpoint::ChatCompletions,
            ),
            (Method::POST, "/chat/completions", Endpoint::ChatCompletions),
            (Method::POST, "/v1/responses", Endpoint::Responses),
            (Method::POST, "/v1/completions", Endpoint::Completions),
            (Method::POST, "/v1/embeddings", Endpoint::Embeddings),
            (Method::POST, "/v1/messages", Endpoint::Messages),
            (
                Method::POST,
                "/v1/messages/count_tokens",
                Endpoint::CountTokens,
            ),
            (Method::GET, "/v1/models", Endpoint::Models),
            (
                Method::GET,
                "/v1/messages",
                Endpoint::NotFound(Dialect::Anthropic),
            ),
            (
                Method::POST,
                "/v1/nope",
                Endpoint::NotFound(Dialect::OpenAi),
            ),
        ];
        for (m, p, want) in cases {
            assert_eq!(Endpoint::of(&m, p), want, "{m} {p}");
        }
    }

    #[test]
    fn record_log_is_bounded() {
        let state = State::new(MockOptions::default());
        for seq in 1..=(RECORD_LIMIT as u64 + 5) {
            state.record(RecordedRequest {
                seq,
                method: "POST".into(),
                path: "/v1/x".into(),
                query: None,
                headers: Vec::new(),
                body: String::new(),
                status: 200,
                streaming: false,
                usage: None,
            });
        }
        let snap = state.snapshot();
        assert_eq!(snap.len(), RECORD_LIMIT);
        assert_eq!(snap[0].seq, 6, "the oldest are dropped first");
        state.clear();
        assert!(state.snapshot().is_empty());
    }

    #[test]
    fn knobs_from_headers() {
        let defaults = MockOptions::default();
        let mut h = HeaderMap::new();
        let k = Knobs::from_headers(&h, &defaults);
        assert_eq!((k.chunks, k.status, k.hang), (5, None, false));
        h.insert("x-mock-chunks", "0".parse().unwrap());
        h.insert("x-mock-status", "429".parse().unwrap());
        h.insert("x-mock-hang", "1".parse().unwrap());
        h.insert("x-mock-chunk-delay-ms", "15".parse().unwrap());
        let k = Knobs::from_headers(&h, &defaults);
        assert_eq!(k.chunks, 1, "at least one chunk");
        assert_eq!(k.status, Some(429));
        assert!(k.hang);
        assert_eq!(k.chunk_delay_ms, 15);
        h.insert("x-mock-status", "99".parse().unwrap());
        assert_eq!(Knobs::from_headers(&h, &defaults).status, None);
    }
}
