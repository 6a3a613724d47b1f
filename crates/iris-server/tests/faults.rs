//! Tier 2: faults. The mock provider misbehaves on purpose (`x-mock-fault`, `x-mock-status`, a
//! closed port, a full listen backlog) and clients misbehave (slow bodies, abandoned streams,
//! thousands of idle connections, pipelining, HTTP/2 resets). For each: what the client sees in
//! its own dialect and when, the usage record, that iris keeps serving, and that nothing leaks.
//!
//! Timeouts are short here (see [`TIMEOUTS`]), so every fault resolves in well under a second.
//! Tests that count process-wide resources (file descriptors) hold [`EXCLUSIVE`] for writing;
//! every other test holds it for reading, so they never overlap with those.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::future::join_all;
use http_body_util::{BodyExt, Full};
use iris_store::{Store as _, UsageRecord};
use iris_testkit::mock::{MockOptions, MockProvider, SSE_JUNK};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

const CONNECT: Duration = Duration::from_millis(300);
const FIRST_BYTE: Duration = Duration::from_millis(600);
const IDLE: Duration = Duration::from_millis(400);
const CLIENT_HEADER: Duration = Duration::from_millis(400);
const REQUEST_BODY: Duration = Duration::from_millis(400);
/// What a busy 2-core machine may add to a timeout before the client sees its effect.
const SLACK: Duration = Duration::from_millis(1500);

const TIMEOUTS: &str = r#", "timeouts": {"connect": "300ms", "first_byte": "600ms", "idle": "400ms",
    "client_header": "400ms", "request_body": "400ms"}"#;

fn options() -> Options {
    Options {
        iris: TIMEOUTS.into(),
        ..Options::default()
    }
}

// ---- the three dialects -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Chat,
    Responses,
    Messages,
}

const APIS: [Api; 3] = [Api::Chat, Api::Responses, Api::Messages];

impl Api {
    fn path(self) -> &'static str {
        match self {
            Api::Chat => "/v1/chat/completions",
            Api::Responses => "/v1/responses",
            Api::Messages => "/v1/messages",
        }
    }

    fn body(self, stream: bool) -> String {
        match self {
            Api::Chat => chat("gpt-4o-mini", stream),
            Api::Responses => {
                json!({"model": "gpt-4o-mini", "input": "hello", "stream": stream}).to_string()
            }
            Api::Messages => messages("claude-haiku-4-5", stream),
        }
    }

    fn anthropic(self) -> bool {
        self == Api::Messages
    }

    fn family(self) -> &'static str {
        match self {
            Api::Chat => "openai_chat",
            Api::Responses => "openai_responses",
            Api::Messages => "anthropic_messages",
        }
    }

    /// Content chunks (text deltas) in a streamed answer.
    fn content_chunks(self, body: &[u8]) -> usize {
        events(body)
            .iter()
            .filter(|(name, data)| {
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                match self {
                    Api::Chat => v["choices"][0]["delta"]["content"]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    Api::Responses => name.as_deref() == Some("response.output_text.delta"),
                    Api::Messages => v["delta"]["type"] == "text_delta",
                }
            })
            .count()
    }

    /// Whether a streamed answer reached its normal end.
    fn stream_finished(self, body: &[u8]) -> bool {
        let evs = events(body);
        match self {
            Api::Chat => evs.last().is_some_and(|(_, d)| d == "[DONE]"),
            Api::Responses => evs
                .iter()
                .any(|(n, _)| n.as_deref() == Some("response.completed")),
            Api::Messages => evs
                .last()
                .is_some_and(|(n, _)| n.as_deref() == Some("message_stop")),
        }
    }
}

fn each_api_and_mode() -> Vec<(Api, bool)> {
    APIS.iter()
        .flat_map(|a| [(*a, false), (*a, true)])
        .collect()
}

/// SSE events as (name, data), lossily decoded; blocks without a data line are left out.
fn events(body: &[u8]) -> Vec<(Option<String>, String)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data: Option<String> = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.get_or_insert_with(String::new).push_str(d);
                }
            }
            data.map(|d| (name, d))
        })
        .collect()
}

// ---- calling the gateway ----------------------------------------------------------------------

/// What the client got, including a body that broke off.
#[derive(Debug)]
struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
    /// The body ended with an error (the connection was aborted mid-body).
    error: Option<String>,
    elapsed: Duration,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn id(&self) -> &str {
        self.headers
            .get("x-iris-request-id")
            .and_then(|v| v.to_str().ok())
            .expect("x-iris-request-id")
    }

    fn record<'a>(&self, recs: &'a [UsageRecord]) -> &'a UsageRecord {
        let id = self.id();
        recs.iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no usage record for {id}"))
    }

    /// The error body of a gateway or provider error: `(error.type, error.code)`, after checking
    /// the dialect's shape.
    fn error_shape(&self, api: Api) -> (String, Value) {
        let v = self.json();
        let message = &v["error"]["message"];
        assert!(message.is_string(), "no error.message: {v}");
        if api.anthropic() {
            assert_eq!(v["type"], "error", "{v}");
        } else {
            assert!(
                v.get("type").is_none(),
                "OpenAI errors have no top-level type: {v}"
            );
        }
        (
            v["error"]["type"].as_str().unwrap_or_default().to_owned(),
            v["error"]["code"].clone(),
        )
    }

    /// A started stream ended with an in-band error event of the dialect and a clean end.
    fn assert_stream_error(&self, api: Api, anthropic_type: &str, openai_code: Value) {
        assert_eq!(self.status, 200);
        assert!(
            self.error.is_none(),
            "the stream was aborted: {:?}",
            self.error
        );
        assert!(self.body.ends_with(b"\n\n"), "{}", self.text());
        let evs = events(&self.body);
        let (name, data) = evs.last().expect("events");
        let v: Value = serde_json::from_str(data).unwrap();
        if api.anthropic() {
            assert_eq!(name.as_deref(), Some("error"), "{}", self.text());
            assert_eq!(v["type"], "error");
            assert_eq!(v["error"]["type"], anthropic_type, "{v}");
        } else {
            assert_eq!(name, &None, "{}", self.text());
            assert_eq!(v["error"]["type"], "server_error", "{v}");
            assert_eq!(v["error"]["code"], openai_code, "{v}");
        }
        assert!(v["error"]["message"].is_string());
        assert!(!api.stream_finished(&self.body));
    }
}

async fn call(c: &TestClient, api: Api, stream: bool, headers: &[(&str, &str)]) -> Got {
    call_body(c, api.path(), &api.body(stream), headers).await
}

async fn call_body(c: &TestClient, path: &str, body: &str, headers: &[(&str, &str)]) -> Got {
    let req = c.request("POST", path, headers, body);
    let t = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(20), c.client.request(req))
        .await
        .expect("the gateway answered in time")
        .expect("the gateway answered");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    let mut error = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(20), body.frame())
            .await
            .expect("the body ended in time")
        {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(d) = frame.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            Some(Err(e)) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Got {
        status,
        headers,
        body: out,
        error,
        elapsed: t.elapsed(),
    }
}

/// A normal request in each dialect, streamed and not, succeeds.
async fn assert_healthy(h: &Harness) {
    let c = h.client();
    for (api, stream) in each_api_and_mode() {
        let got = call(&c, api, stream, &[]).await;
        assert_eq!(got.status, 200, "{api:?} {}", got.text());
        assert!(got.error.is_none());
        if stream {
            assert!(api.stream_finished(&got.body), "{}", got.text());
        } else {
            assert!(got.json().get("usage").is_some());
        }
    }
}

fn assert_within(what: &str, elapsed: Duration, at_least: Duration, at_most: Duration) {
    assert!(
        elapsed + Duration::from_millis(50) >= at_least && elapsed <= at_most,
        "{what}: took {elapsed:?}, expected between {at_least:?} and {at_most:?}"
    );
}

/// The usage the mock sent for the request tagged `x-test-case: case`.
fn mock_usage(h: &Harness, case: &str) -> iris_testkit::MockUsage {
    let reqs = h.mock.requests();
    let r = reqs
        .iter()
        .find(|r| r.header("x-test-case") == Some(case))
        .unwrap_or_else(|| panic!("the mock saw no request {case}"));
    r.usage.expect("the mock answered with usage")
}

/// Mid-stream failures keep the tokens seen before the failure: Anthropic reports the input
/// tokens (and a provisional output count of 1) in `message_start`; the OpenAI streams carry
/// usage only at their end.
fn assert_tokens_seen_so_far(h: &Harness, api: Api, stream: bool, rec: &UsageRecord, case: &str) {
    if api.anthropic() && stream {
        let u = mock_usage(h, case);
        assert!(rec.usage_known, "{rec:?}");
        assert_eq!((rec.input_tokens, rec.output_tokens), (u.input_tokens, 1));
    } else {
        assert!(!rec.usage_known, "{rec:?}");
        assert_eq!((rec.input_tokens, rec.output_tokens), (0, 0));
    }
}

/// Restart the mock on `addr` (its old port), retrying while the port is still held.
async fn restart_mock(addr: std::net::SocketAddr) -> MockProvider {
    let start = Instant::now();
    loop {
        match MockProvider::try_start(MockOptions::default(), addr).await {
            Ok(m) => return m,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot restart the mock on {addr}: {e:#}"),
        }
    }
}

// ---- upstream faults --------------------------------------------------------------------------

#[tokio::test]
async fn upstream_refuses_or_never_accepts_connections() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let addr = h.mock.addr();
    // Close the provider's port.
    drop(std::mem::replace(&mut h.mock, MockProvider::start().await));
    let start = Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the port stayed open"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = h.client();
    let refused = join_all(each_api_and_mode().into_iter().map(|(api, stream)| {
        let c = &c;
        async move { (api, call(c, api, stream, &[]).await) }
    }))
    .await;
    for (api, got) in &refused {
        assert_eq!(got.status, 502, "{}", got.text());
        let (kind, _) = got.error_shape(*api);
        assert_eq!(
            kind,
            if api.anthropic() {
                "api_error"
            } else {
                "server_error"
            }
        );
        assert!(got.elapsed < CONNECT + SLACK, "{:?}", got.elapsed);
        assert!(
            !got.text().contains(&addr.port().to_string()),
            "{}",
            got.text()
        );
        assert!(!got.text().contains(OPENAI_KEY) && !got.text().contains(ANTHROPIC_KEY));
    }

    // A provider that accepts nothing: its listen backlog is full, so the SYN goes unanswered
    // and only the connect timeout ends the wait.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(addr).unwrap();
    let listener = socket.listen(1).unwrap();
    let mut fillers = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => fillers.push(s),
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => break,
        }
        assert!(fillers.len() < 64, "the backlog never filled");
    }
    let timed_out = join_all(APIS.iter().map(|api| {
        let c = &c;
        async move { (*api, call(c, *api, true, &[]).await) }
    }))
    .await;
    for (api, got) in &timed_out {
        assert_eq!(got.status, 504, "{}", got.text());
        let (kind, code) = got.error_shape(*api);
        if api.anthropic() {
            assert_eq!(kind, "timeout_error");
        } else {
            assert_eq!((kind.as_str(), code), ("server_error", json!("timeout")));
        }
        assert_within("connect timeout", got.elapsed, CONNECT, CONNECT + SLACK);
    }
    drop(fillers);
    drop(listener);

    // The provider comes back: iris serves again without a restart.
    h.mock = restart_mock(addr).await;
    assert_healthy(&h).await;

    let recs = h.records().await;
    for (api, got) in &refused {
        let r = got.record(&recs);
        assert_eq!(r.api_family, api.family());
        assert_eq!(
            (r.status, r.error_class.as_deref()),
            (502, Some("upstream_unreachable"))
        );
        assert!(!r.usage_known && r.ttfb_ms.is_none());
    }
    for (_, got) in &timed_out {
        let r = got.record(&recs);
        assert_eq!(
            (r.status, r.error_class.as_deref()),
            (504, Some("upstream_timeout"))
        );
    }
}

#[tokio::test]
async fn upstream_error_statuses_pass_through_in_the_providers_own_shape() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let c = h.client();
    let mut cases = Vec::new();
    for status in ["429", "500", "529"] {
        for (api, stream) in each_api_and_mode() {
            cases.push((status, api, stream));
        }
    }
    let got = join_all(cases.iter().map(|(status, api, stream)| {
        let c = &c;
        async move { call(c, *api, *stream, &[("x-mock-status", status)]).await }
    }))
    .await;
    for ((status, api, _), got) in cases.iter().zip(&got) {
        assert_eq!(got.status.to_string(), *status, "{}", got.text());
        let (kind, _) = got.error_shape(*api);
        let want = match (api.anthropic(), *status) {
            (true, "429") => "rate_limit_error",
            (true, "500") => "api_error",
            (true, _) => "overloaded_error",
            (false, "429") => "requests",
            (false, _) => "server_error",
        };
        assert_eq!(kind, want, "{}", got.text());
        if *status == "429" {
            assert_eq!(got.headers.get("retry-after").unwrap(), "1");
        }
        assert!(got.elapsed < SLACK);
    }
    assert_healthy(&h).await;
    let recs = h.records().await;
    for ((status, _, stream), got) in cases.iter().zip(&got) {
        let r = got.record(&recs);
        assert_eq!(r.status.to_string(), *status);
        assert_eq!(r.error_class.as_deref(), Some("upstream_status"));
        assert_eq!(r.streaming, *stream);
        assert!(!r.usage_known);
        assert_eq!(r.bytes_out, got.body.len() as u64);
    }
}

#[tokio::test]
async fn upstream_closes_before_headers() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let c = h.client();
    let got = join_all(each_api_and_mode().into_iter().map(|(api, stream)| {
        let c = &c;
        async move {
            let g = call(c, api, stream, &[("x-mock-fault", "close-before-headers")]).await;
            (api, g)
        }
    }))
    .await;
    for (api, got) in &got {
        assert_eq!(got.status, 502, "{}", got.text());
        let (kind, _) = got.error_shape(*api);
        assert_eq!(
            kind,
            if api.anthropic() {
                "api_error"
            } else {
                "server_error"
            }
        );
        assert!(got.elapsed < SLACK, "{:?}", got.elapsed);
    }
    // Not retried: each request reached the provider once.
    assert_eq!(h.mock.requests().len(), 6);
    assert_healthy(&h).await;
    let recs = h.records().await;
    for (_, got) in &got {
        let r = got.record(&recs);
        assert_eq!(
            (r.status, r.error_class.as_deref()),
            (502, Some("upstream_unreachable"))
        );
    }
}

#[tokio::test]
async fn upstream_resets_mid_stream() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let c = h.client();
    let cases = each_api_and_mode();
    let got = join_all(cases.iter().enumerate().map(|(i, (api, stream))| {
        let c = &c;
        let case = format!("reset-{i}");
        async move {
            let headers = [
                ("x-mock-fault", "reset-mid-stream"),
                ("x-mock-fault-after", "2"),
                ("x-mock-chunks", "6"),
                ("x-test-case", case.as_str()),
            ];
            call(c, *api, *stream, &headers).await
        }
    }))
    .await;
    for ((api, stream), got) in cases.iter().zip(&got) {
        assert!(got.elapsed < SLACK, "{:?}", got.elapsed);
        if *stream {
            // The stream had started: the two chunks, then an error event, then a clean end.
            got.assert_stream_error(*api, "api_error", Value::Null);
            assert_eq!(api.content_chunks(&got.body), 2, "{}", got.text());
        } else {
            // Status and length were sent: the connection is aborted so that the client can
            // never take half a JSON body for a whole one.
            assert_eq!(got.status, 200);
            assert!(
                got.error.is_some(),
                "a truncated body ended cleanly: {}",
                got.text()
            );
            assert!(serde_json::from_slice::<Value>(&got.body).is_err());
        }
    }
    assert_healthy(&h).await;
    let recs = h.records().await;
    for (i, ((api, stream), got)) in cases.iter().zip(&got).enumerate() {
        let r = got.record(&recs);
        assert_eq!(
            (r.status, r.error_class.as_deref()),
            (200, Some("upstream_stream_failed")),
            "{api:?} {stream}"
        );
        assert_eq!(r.bytes_out, got.body.len() as u64);
        assert_tokens_seen_so_far(&h, *api, *stream, r, &format!("reset-{i}"));
    }
}

#[tokio::test]
async fn upstream_stalls_before_the_first_byte() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let c = h.client();
    let stalled = async {
        join_all(each_api_and_mode().into_iter().map(|(api, stream)| {
            let c = &c;
            async move {
                let g = call(
                    c,
                    api,
                    stream,
                    &[("x-mock-fault", "stall-before-first-byte")],
                )
                .await;
                (api, g)
            }
        }))
        .await
    };
    // Other requests are served meanwhile, without waiting for the stalled ones.
    let others = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = call(&c, Api::Messages, false, &[]).await;
        assert_eq!(got.status, 200);
        got.elapsed
    };
    let (got, other) = tokio::join!(stalled, others);
    assert!(other < FIRST_BYTE, "a healthy request waited {other:?}");
    for (api, got) in &got {
        assert_eq!(got.status, 504, "{}", got.text());
        let (kind, code) = got.error_shape(*api);
        if api.anthropic() {
            assert_eq!(kind, "timeout_error");
        } else {
            assert_eq!((kind.as_str(), code), ("server_error", json!("timeout")));
        }
        assert_within(
            "first-byte timeout",
            got.elapsed,
            FIRST_BYTE,
            FIRST_BYTE + SLACK,
        );
    }
    assert_healthy(&h).await;
    let recs = h.records().await;
    for (_, got) in &got {
        let r = got.record(&recs);
        assert_eq!(
            (r.status, r.error_class.as_deref()),
            (504, Some("upstream_timeout"))
        );
        assert!(r.duration_ms >= FIRST_BYTE.as_millis() as u64 - 50);
    }
}

#[tokio::test]
async fn upstream_stalls_after_the_headers_and_mid_stream() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let c = h.client();
    let mut cases = Vec::new();
    for fault in ["stall-after-headers", "stall-mid-stream"] {
        for (api, stream) in each_api_and_mode() {
            cases.push((fault, api, stream, format!("{fault}-{api:?}-{stream}")));
        }
    }
    let stalled = join_all(cases.iter().map(|(fault, api, stream, case)| {
        let c = &c;
        async move {
            let headers = [("x-mock-fault", *fault), ("x-test-case", case.as_str())];
            call(c, *api, *stream, &headers).await
        }
    }));
    let others = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let got = call(&c, Api::Chat, true, &[]).await;
        assert!(Api::Chat.stream_finished(&got.body));
        got.elapsed
    };
    let (got, other) = tokio::join!(stalled, others);
    assert!(other < IDLE, "a healthy stream waited {other:?}");
    for ((fault, api, stream, _), got) in cases.iter().zip(&got) {
        assert_within("idle timeout", got.elapsed, IDLE, IDLE + SLACK);
        if *stream {
            got.assert_stream_error(*api, "timeout_error", json!("timeout"));
            let want = if *fault == "stall-mid-stream" { 2 } else { 0 };
            assert_eq!(
                api.content_chunks(&got.body),
                want,
                "{fault}: {}",
                got.text()
            );
        } else {
            assert_eq!(got.status, 200);
            assert!(got.error.is_some(), "{fault}: a stalled body ended cleanly");
        }
    }

    // A stall shorter than the idle timeout is no fault at all.
    let short = join_all(APIS.iter().map(|api| {
        let c = &c;
        async move {
            let headers = [
                ("x-mock-fault", "stall-mid-stream"),
                ("x-mock-fault-ms", "150"),
                ("x-test-case", "short"),
            ];
            call(c, *api, true, &headers).await
        }
    }))
    .await;
    for (api, got) in APIS.iter().zip(&short) {
        assert!(api.stream_finished(&got.body), "{}", got.text());
        assert!(got.elapsed >= Duration::from_millis(150));
    }
    assert_healthy(&h).await;
    let recs = h.records().await;
    for ((_, api, stream, case), got) in cases.iter().zip(&got) {
        let r = got.record(&recs);
        assert_eq!(
            (r.status, r.error_class.as_deref()),
            (200, Some("upstream_idle_timeout")),
            "{case}"
        );
        if case.starts_with("stall-mid-stream") {
            assert_tokens_seen_so_far(&h, *api, *stream, r, case);
        }
    }
    for got in &short {
        let r = got.record(&recs);
        assert!(r.error_class.is_none() && r.usage_known, "{r:?}");
        assert_eq!(r.output_tokens, 5);
    }
}

#[tokio::test]
async fn slow_loris_upstream_is_cut_off_and_slow_streams_are_not() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let c = h.client();
    // One byte every 20 ms: the response head alone needs seconds.
    let got = join_all(each_api_and_mode().into_iter().map(|(api, stream)| {
        let c = &c;
        async move {
            let headers = [("x-mock-fault", "slow-loris"), ("x-mock-fault-ms", "20")];
            (api, call(c, api, stream, &headers).await)
        }
    }))
    .await;
    for (api, got) in &got {
        assert_eq!(got.status, 504, "{}", got.text());
        let (kind, _) = got.error_shape(*api);
        assert_eq!(
            kind,
            if api.anthropic() {
                "timeout_error"
            } else {
                "server_error"
            }
        );
        assert_within(
            "first-byte timeout",
            got.elapsed,
            FIRST_BYTE,
            FIRST_BYTE + SLACK,
        );
    }
    // A stream slower in total than every timeout, but never silent for the idle timeout,
    // is served whole: the idle timer restarts with each chunk.
    let slow = join_all(APIS.iter().map(|api| {
        let c = &c;
        async move {
            let headers = [("x-mock-chunk-delay-ms", "150"), ("x-mock-chunks", "6")];
            call(c, *api, true, &headers).await
        }
    }))
    .await;
    for (api, got) in APIS.iter().zip(&slow) {
        assert!(api.stream_finished(&got.body), "{}", got.text());
        assert_eq!(api.content_chunks(&got.body), 6);
        assert!(got.elapsed > FIRST_BYTE.max(IDLE));
    }
    // The trickling connections were closed, not left to finish.
    wait_for("the slow-loris connections to close", || {
        h.mock.open_connections() <= 3
    })
    .await;
    let recs = h.records().await;
    for (_, got) in &got {
        let r = got.record(&recs);
        assert_eq!(
            (r.status, r.error_class.as_deref()),
            (504, Some("upstream_timeout"))
        );
    }
    for got in &slow {
        let r = got.record(&recs);
        assert!(
            r.error_class.is_none() && r.usage_known && r.output_tokens == 6,
            "{r:?}"
        );
    }
}

#[tokio::test]
async fn malformed_upstream_json_and_sse_pass_through_without_breaking_accounting() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let c = h.client();
    let mut cases = Vec::new();
    for fault in ["malformed-json", "malformed-sse"] {
        for (api, stream) in each_api_and_mode() {
            cases.push((fault, api, stream, format!("{fault}-{api:?}-{stream}")));
        }
    }
    let got = join_all(cases.iter().map(|(fault, api, stream, case)| {
        let c = &c;
        async move {
            let headers = [("x-mock-fault", *fault), ("x-test-case", case.as_str())];
            call(c, *api, *stream, &headers).await
        }
    }))
    .await;
    for ((fault, api, stream, case), got) in cases.iter().zip(&got) {
        // iris does not repair what the provider sent: the client gets it as it was.
        assert_eq!(got.status, 200, "{case}");
        assert!(got.error.is_none(), "{case}: {:?}", got.error);
        if *stream {
            assert!(api.stream_finished(&got.body), "{case}: {}", got.text());
            if *fault == "malformed-sse" {
                assert!(
                    got.body.windows(SSE_JUNK.len()).any(|w| w == SSE_JUNK),
                    "{case}: the junk was altered"
                );
            }
        } else {
            assert!(
                serde_json::from_slice::<Value>(&got.body).is_err(),
                "{case}"
            );
        }
    }
    assert_healthy(&h).await;
    let recs = h.records().await;
    for ((_, _, stream, case), got) in cases.iter().zip(&got) {
        let r = got.record(&recs);
        assert_eq!(r.status, 200, "{case}");
        assert_eq!(r.bytes_out, got.body.len() as u64, "{case}");
        if *stream {
            // The usage events around the junk are still read.
            let u = mock_usage(&h, case);
            assert!(r.usage_known, "{case}: {r:?}");
            assert_eq!(
                (r.input_tokens, r.output_tokens),
                (u.input_tokens, u.output_tokens),
                "{case}"
            );
            assert!(r.error_class.is_none(), "{case}: {r:?}");
        } else {
            // Half a JSON body carries no usage iris could trust, and the record says why.
            assert!(!r.usage_known, "{case}: {r:?}");
            assert_eq!((r.input_tokens, r.output_tokens), (0, 0));
            assert_eq!(
                r.error_class.as_deref(),
                Some("upstream_malformed_body"),
                "{case}"
            );
        }
    }
}

#[tokio::test]
async fn oversized_upstream_answers_stream_through_with_bounded_memory() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let c = h.client();
    assert_eq!(h.gateway.capture_bytes_held(), 0);
    // Bodies past the usage extractor's whole-body cap (4 MiB) and an SSE event past its
    // per-event cap (16 MiB): they pass whole, usage is still found, nothing is held whole.
    let cases = [
        (Api::Chat, false, 6 << 20),
        (Api::Messages, false, 6 << 20),
        (Api::Responses, false, 6 << 20),
        (Api::Messages, true, 17 << 20),
        (Api::Chat, true, 6 << 20),
    ];
    let mut got = Vec::new();
    for (i, (api, stream, size)) in cases.iter().enumerate() {
        let size = size.to_string();
        let case = format!("oversized-{i}");
        let headers = [
            ("x-mock-fault", "oversized"),
            ("x-mock-fault-bytes", size.as_str()),
            ("x-test-case", case.as_str()),
        ];
        let g = call(&c, *api, *stream, &headers).await;
        assert_eq!(g.status, 200);
        assert!(g.error.is_none());
        assert!(
            g.body.len() >= size.parse::<usize>().unwrap() - 1024,
            "{}",
            g.body.len()
        );
        if *stream {
            assert!(api.stream_finished(&g.body));
        } else {
            assert!(g.json().get("usage").is_some());
        }
        got.push((case, g));
    }
    wait_for("the capture bytes to be given back", || {
        h.gateway.capture_bytes_held() == 0
    })
    .await;
    assert_healthy(&h).await;
    let recs = h.records().await;
    for (case, g) in &got {
        let r = g.record(&recs);
        let u = mock_usage(&h, case);
        assert_eq!(r.bytes_out, g.body.len() as u64);
        assert!(r.usage_known && r.error_class.is_none(), "{case}: {r:?}");
        assert_eq!(
            (r.input_tokens, r.output_tokens),
            (u.input_tokens, u.output_tokens)
        );
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            // Generous: only a failure waits this long (CI runs test binaries side by side).
            start.elapsed() < Duration::from_secs(30),
            "waited in vain for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- leaks ------------------------------------------------------------------------------------

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// One chat request, and the wait until its usage record and capture are stored: the pooled
/// upstream connection and every descriptor the gateway keeps open (the store's write
/// connections, one each for usage records and captures, opened by their first write) exist
/// from then on, so counting descriptors afterwards sees only what a test's own work adds.
async fn warm_up(h: &Harness) {
    let g = call(&h.client(), Api::Chat, false, &[]).await;
    assert_eq!(g.status, 200);
    let id = g.headers["x-iris-request-id"].to_str().unwrap().to_owned();
    let store = h.store.clone();
    let start = Instant::now();
    loop {
        let usage = store
            .recent_usage(&iris_store::UsageQuery::default())
            .await
            .unwrap();
        if usage.iter().any(|r| r.id == id) && store.capture(&id).await.unwrap().is_some() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the warm-up's usage record and capture were not stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The number of open file descriptors once it stopped changing.
async fn settled_fds() -> usize {
    let mut last = open_fds();
    let mut same = 0;
    while same < 5 {
        tokio::time::sleep(Duration::from_millis(40)).await;
        let now = open_fds();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Gauges {
    tasks: usize,
    fds: usize,
    capture_bytes_held: u64,
    upstream_connections: usize,
}

fn gauges(h: &Harness) -> Gauges {
    // A kept LocalAPI connection is a task and a descriptor on each side (the fake tailscaled
    // runs in this process too); their number is bounded and checked apart.
    let kept = 2 * h.gateway.whois_client().map_or(0, |w| w.idle_connections());
    Gauges {
        tasks: alive_tasks().saturating_sub(kept),
        fds: open_fds().saturating_sub(kept),
        capture_bytes_held: h.gateway.capture_bytes_held(),
        upstream_connections: h.mock.open_connections(),
    }
}

/// Every fault in every dialect, a few times over, then the gateway's tasks, file descriptors,
/// capture budget and upstream connections are back where they started.
#[tokio::test]
async fn faults_leak_no_task_connection_or_memory() {
    let _exclusive = EXCLUSIVE.write().await;
    let mut h = Harness::start_with(options()).await;
    // Warm up: one pooled upstream connection, the observer and writer running, and the
    // store's write connections open.
    warm_up(&h).await;
    settled_fds().await;
    let before = gauges(&h);
    // An idle client that keeps its socket for the whole run and never sends a byte: iris must
    // close its own side (the client's socket is the one extra descriptor allowed below).
    let idle_client = TcpStream::connect(h.addr).await.unwrap();

    // Faults that end their upstream connection run concurrently; faults whose answer completes
    // (and whose connection goes back to the pool) run one after another, so the pool never
    // needs more than the one connection it had.
    let killing = [
        "close-before-headers",
        "reset-mid-stream",
        "stall-before-first-byte",
        "stall-after-headers",
        "stall-mid-stream",
        "slow-loris",
    ];
    let completing = ["malformed-json", "malformed-sse", "oversized"];
    for _round in 0..2 {
        let c = h.client();
        let cr = &c;
        join_all(killing.iter().flat_map(|fault| {
            each_api_and_mode().into_iter().map(move |(api, stream)| {
                let c = cr;
                async move {
                    let headers = [("x-mock-fault", *fault), ("x-mock-fault-bytes", "2000000")];
                    call(c, api, stream, &headers).await
                }
            })
        }))
        .await;
        for fault in completing {
            for (api, stream) in each_api_and_mode() {
                let headers = [("x-mock-fault", fault), ("x-mock-fault-bytes", "2000000")];
                let g = call(&c, api, stream, &headers).await;
                assert_eq!(g.status, 200);
            }
        }
        // Clients that misbehave too: hang up mid-stream, and before the answer.
        let abandoned = c.request(
            "POST",
            "/v1/messages",
            &[("x-mock-chunk-delay-ms", "50"), ("x-mock-chunks", "40")],
            &messages("claude-haiku-4-5", true),
        );
        let resp = c.client.request(abandoned).await.unwrap();
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
        let early = c.request(
            "POST",
            "/v1/chat/completions",
            &[("x-mock-latency-ms", "300")],
            &chat("gpt-4o-mini", false),
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), c.client.request(early)).await;
        for _ in 0..3 {
            let _ = TcpStream::connect(h.addr).await.unwrap();
        }
    }
    assert_healthy(&h).await;

    let start = Instant::now();
    let after = loop {
        let now = gauges(&h);
        let settled = now.tasks <= before.tasks
            && now.fds <= before.fds + 1
            && now.capture_bytes_held == 0
            && now.upstream_connections <= before.upstream_connections;
        if settled || start.elapsed() > Duration::from_secs(10) {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        after.tasks <= before.tasks,
        "tasks leaked: {before:?} -> {after:?}"
    );
    assert!(
        after.fds <= before.fds + 1,
        "file descriptors leaked: {before:?} -> {after:?}"
    );
    drop(idle_client);
    let kept = h.gateway.whois_client().map_or(0, |w| w.idle_connections());
    assert!(kept <= 8, "{kept} LocalAPI connections kept");
    assert_eq!(after.capture_bytes_held, 0, "capture bytes leaked");
    assert!(
        after.upstream_connections <= before.upstream_connections,
        "upstream connections leaked: {before:?} -> {after:?}"
    );
    // Every request left exactly one record: the warm-up, two rounds of every fault in six
    // dialect/mode pairs plus the two clients that hung up, and the six healthy requests.
    let recs = h.records().await;
    let want = 1 + 2 * ((killing.len() + completing.len()) * 6 + 2) + 6;
    assert_eq!(recs.len(), want);
}

// ---- clients that misbehave -------------------------------------------------------------------

/// Writes `head` and `body` on a fresh connection and reads the answer until the connection
/// closes or a whole message arrived.
async fn raw_exchange(s: &mut TcpStream, within: Duration) -> (String, Duration) {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(at) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..at]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|n| out.len() >= at + 4 + n) {
                break;
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
}

fn split_response(text: &str) -> (u16, Value) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn slow_request_bodies_get_408_in_the_callers_dialect() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let addr = h.addr;
    let cases = [
        (Api::Chat, false),
        (Api::Messages, false),
        (Api::Chat, true),
        (Api::Messages, true),
    ];
    let got = join_all(cases.iter().map(|(api, trickle)| async move {
        let body = api.body(false);
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {} HTTP/1.1\r\nhost: iris\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            api.path(),
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let (s, text, elapsed) = if *trickle {
            // A byte every 50 ms: never idle for long, but the whole body would take seconds.
            let (mut r, mut w) = s.into_split();
            let writer = tokio::spawn(async move {
                for b in body.bytes() {
                    if w.write_all(&[b]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            let t = Instant::now();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                let mut buf = [0u8; 4096];
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            out.extend_from_slice(&buf[..n]);
                            if out.windows(4).any(|w| w == b"\r\n\r\n") && out.ends_with(b"}") {
                                break;
                            }
                        }
                    }
                }
            })
            .await;
            writer.abort();
            (None, String::from_utf8_lossy(&out).into_owned(), t.elapsed())
        } else {
            s.write_all(&body.as_bytes()[..10]).await.unwrap();
            let (text, elapsed) = raw_exchange(&mut s, Duration::from_secs(5)).await;
            (Some(s), text, elapsed)
        };
        drop(s);
        (*api, text, elapsed)
    }))
    .await;
    for (api, text, elapsed) in &got {
        let (status, v) = split_response(text);
        assert_eq!(status, 408, "{text}");
        assert_within(
            "request-body timeout",
            *elapsed,
            REQUEST_BODY,
            REQUEST_BODY + SLACK,
        );
        if api.anthropic() {
            assert_eq!(v["type"], "error", "{text}");
            assert_eq!(v["error"]["type"], "invalid_request_error");
        } else {
            assert_eq!(v["error"]["code"], "request_timeout", "{text}");
        }
    }
    assert_healthy(&h).await;
    let recs = h.records().await;
    let timeouts = recs
        .iter()
        .filter(|r| r.status == 408 && r.error_class.as_deref() == Some("client_timeout"))
        .count();
    assert_eq!(timeouts, cases.len());
}

#[tokio::test]
async fn abandoned_streams_close_the_upstream_and_are_recorded() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let ids = join_all(APIS.iter().map(|api| {
        let c = h.client();
        async move {
            let case = format!("abandoned-{api:?}");
            let req = c.request(
                "POST",
                api.path(),
                &[
                    ("x-mock-chunk-delay-ms", "100"),
                    ("x-mock-chunks", "40"),
                    ("x-test-case", case.as_str()),
                ],
                &api.body(true),
            );
            let resp = c.client.request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let id = resp.headers()["x-iris-request-id"]
                .to_str()
                .unwrap()
                .to_owned();
            let mut body = resp.into_body();
            // Read until the first content chunk arrived, then hang up.
            let mut seen = Vec::new();
            while api.content_chunks(&seen) == 0 {
                let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                seen.extend_from_slice(&frame.into_data().unwrap());
            }
            drop(body);
            drop(c);
            (*api, id, case)
        }
    }))
    .await;
    // Each upstream request was cancelled: the provider sees its connections closed long
    // before the 4 s the streams would have taken.
    let t = Instant::now();
    wait_for("the upstream connections to close", || {
        h.mock.open_connections() == 0
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_healthy(&h).await;
    let recs = h.records().await;
    for (api, id, case) in &ids {
        let r = recs.iter().find(|r| &r.id == id).unwrap();
        assert_eq!(r.error_class.as_deref(), Some("client_closed"), "{api:?}");
        assert_eq!(r.status, 200);
        assert!(r.duration_ms < 2_000, "{r:?}");
        if api.anthropic() {
            assert!(r.usage_known);
            assert_eq!(r.input_tokens, mock_usage(&h, case).input_tokens);
        }
    }
}

#[tokio::test]
async fn a_client_that_leaves_before_the_answer_still_leaves_a_record() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    for api in APIS {
        let c = h.client();
        let req = c.request(
            "POST",
            api.path(),
            &[("x-mock-latency-ms", "400")],
            &api.body(api == Api::Messages),
        );
        let gave_up = tokio::time::timeout(Duration::from_millis(150), c.client.request(req)).await;
        assert!(gave_up.is_err(), "answered before the provider did");
        drop(c);
    }
    wait_for("the upstream connections to close", || {
        h.mock.open_connections() == 0
    })
    .await;
    assert_eq!(h.mock.requests().len(), 3);
    assert_healthy(&h).await;
    let recs = h.records().await;
    let closed: Vec<_> = recs
        .iter()
        .filter(|r| r.error_class.as_deref() == Some("client_closed"))
        .collect();
    assert_eq!(closed.len(), 3, "{recs:#?}");
    for r in closed {
        assert!(
            r.duration_ms < 400,
            "the upstream request was not cancelled: {r:?}"
        );
        assert!(r.provider.is_some());
    }
}

#[tokio::test]
async fn thousands_of_idle_connections_wait_their_turn_and_are_closed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let _exclusive = EXCLUSIVE.write().await;
    const MAX: usize = 256;
    const IDLE_CONNECTIONS: usize = 2_000;
    const HEADER_DEADLINE: Duration = Duration::from_secs(1);
    let mut h = Harness::start_with(Options {
        iris: format!(
            r#", "timeouts": {{"client_header": "1s"}}, "limits": {{"max_connections": {MAX}}}"#
        ),
        ..Options::default()
    })
    .await;
    let addr = h.addr;
    // Warm up (a pooled upstream connection, the store's write connections), and let the
    // previous test's runtime finish closing its sockets before counting.
    warm_up(&h).await;
    let fds_before = settled_fds().await;
    // Connections that never send a byte. Each holds its socket until iris closes it. Those
    // beyond what iris serves and the listen backlog holds are the kernel's business: it drops
    // their SYNs (the client retries) or, with SYN cookies, forgets them (the client believes
    // it is connected; iris never sees them and holds nothing for them).
    let sockets = Arc::new(AtomicUsize::new(IDLE_CONNECTIONS));
    // iris's side of the connections: what is open beyond the clients' sockets (those still
    // open: a client whose connection iris closed closes its own, so after iris's first round
    // of closes a fixed count of 2,000 would have put the limit out of reach), and `partial`.
    let served = {
        let sockets = sockets.clone();
        move || {
            let clients = sockets.load(Ordering::Relaxed);
            open_fds().saturating_sub(fds_before + clients + 1)
        }
    };
    let closed_by_iris = Arc::new(AtomicUsize::new(0));
    let idle: Vec<_> = (0..IDLE_CONNECTIONS)
        .map(|_| {
            let sockets = sockets.clone();
            let closed = closed_by_iris.clone();
            tokio::spawn(async move {
                if let Ok(Ok(mut s)) =
                    tokio::time::timeout(Duration::from_secs(20), TcpStream::connect(addr)).await
                {
                    let mut buf = [0u8; 64];
                    let read =
                        tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
                    if matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
                        closed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                sockets.fetch_sub(1, Ordering::Relaxed);
            })
        })
        .collect();
    // A client that starts its headers and never finishes them.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost:")
        .await
        .unwrap();
    // iris fills up to its limit, and never beyond: the rest wait in the listen backlog, where
    // they hold no file descriptor of iris's. That it reaches the limit is read from its own
    // count (descriptors counted against `fds_before` fell short whenever one open then closed
    // meanwhile, or the clients' closes raced the count: this wait failed now and then in the
    // full suite); that it holds no more than that, from the descriptors, below.
    let gateway = h.gateway.clone();
    wait_for("iris to serve its limit of connections", || {
        gateway.connections_open() == MAX
    })
    .await;
    for _ in 0..5 {
        let now = served();
        assert!(
            now <= MAX + 16,
            "{now} connections served at once (limit {MAX})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A real request still gets through, once the idle ones ahead of it were closed.
    let c = h.client();
    let got = tokio::time::timeout(Duration::from_secs(15), call(&c, Api::Messages, true, &[]))
        .await
        .expect("a real request got through the idle connections");
    assert!(Api::Messages.stream_finished(&got.body));
    drop(c);
    let (text, elapsed) = raw_exchange(&mut partial, Duration::from_secs(15)).await;
    assert!(text.is_empty(), "closed without an answer: {text}");
    assert!(elapsed < HEADER_DEADLINE + SLACK, "{elapsed:?}");
    drop(partial);

    // Iris closed every connection it accepted (far more than it may serve at once) and holds
    // none of them: what is left open are the clients' own sockets.
    let start = Instant::now();
    loop {
        let client_side = sockets.load(Ordering::Relaxed);
        let closed = closed_by_iris.load(Ordering::Relaxed);
        let held = open_fds().saturating_sub(fds_before + client_side);
        if closed > MAX && held <= 8 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "iris still holds {held} connections; it closed {closed}, {client_side} client sockets open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for task in idle {
        task.abort();
    }
    h.shutdown().await;
}

#[tokio::test]
async fn keep_alive_connections_idle_past_the_header_timeout_are_closed() {
    let _shared = EXCLUSIVE.read().await;
    let h = Harness::start_with(options()).await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: iris\r\n\r\n")
        .await
        .unwrap();
    let (text, _) = raw_exchange(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Kept alive, then idle: closed once the next request's head is overdue.
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("iris closed the idle connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert_within(
        "header timeout",
        t.elapsed(),
        CLIENT_HEADER,
        CLIENT_HEADER + SLACK,
    );
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let chat_body = chat("gpt-4o-mini", false);
    let msg_body = messages("claude-haiku-4-5", false);
    let mut wire = String::new();
    for (path, body) in [
        ("/v1/messages", &msg_body),
        ("/v1/chat/completions", &chat_body),
        ("/v1/messages", &msg_body),
    ] {
        wire.push_str(&format!(
            "POST {path} HTTP/1.1\r\nhost: iris\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    wire.push_str("GET /healthz HTTP/1.1\r\nhost: iris\r\nconnection: close\r\n\r\n");
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(wire.as_bytes()).await.unwrap(); // one write, four requests
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("all four answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&all).into_owned();
    // Split into messages by their content-length.
    let mut rest = text.as_str();
    let mut answers = Vec::new();
    while let Some((head, tail)) = rest.split_once("\r\n\r\n") {
        let len: usize = head
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| {
                l.strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("content-length");
        answers.push((head.to_owned(), tail[..len].to_owned()));
        rest = &tail[len..];
    }
    assert_eq!(answers.len(), 4, "{text}");
    for (head, _) in &answers {
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    let kinds: Vec<Value> = answers[..3]
        .iter()
        .map(|(_, b)| {
            let v: Value = serde_json::from_str(b).unwrap();
            v.get("type").or_else(|| v.get("object")).cloned().unwrap()
        })
        .collect();
    assert_eq!(
        kinds,
        [json!("message"), json!("chat.completion"), json!("message")]
    );
    assert_eq!(answers[3].1, "{\"status\":\"ok\"}");
    let recs = h.records().await;
    assert_eq!(recs.len(), 3);
    assert!(
        recs.iter()
            .all(|r| r.status == 200 && r.error_class.is_none())
    );
}

/// A client's socket that sends its first `first` bytes, then pauses for `pause` before the rest:
/// iris sees a connection's first bytes arrive alone.
struct PausedAfter {
    inner: TcpStream,
    first: usize,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    pause_for: Duration,
}

impl tokio::io::AsyncRead for PausedAfter {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for PausedAfter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::future::Future as _;
        use std::task::Poll;
        let this = &mut *self;
        if this.first > 0 {
            let n = buf.len().min(this.first);
            let wrote =
                std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_write(cx, &buf[..n]))?;
            this.first -= wrote;
            if this.first == 0 {
                this.pause = Some(Box::pin(tokio::time::sleep(this.pause_for)));
            }
            return Poll::Ready(Ok(wrote));
        }
        if let Some(p) = this.pause.as_mut() {
            std::task::ready!(p.as_mut().poll(cx));
            this.pause = None;
        }
        std::pin::Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// iris tells HTTP/1.1 from HTTP/2 by peeking at a connection's first bytes; when too few have
/// arrived to tell (a prefix of HTTP/2's preface: "P", "PRI * HTTP/2.0"), the connection is
/// read the slow way and served all the same, in either version.
#[tokio::test]
async fn first_bytes_that_arrive_alone_are_served_in_either_version() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let pause = Duration::from_millis(150);
    let preface = iris_server::sniff::H2_PREFACE;
    // HTTP/2 with prior knowledge: the preface in two pieces (14 bytes, then the rest), then
    // the whole preface at once.
    for first in [Some(14), None] {
        let stream = TcpStream::connect(h.addr).await.unwrap();
        let io = PausedAfter {
            inner: stream,
            first: first.unwrap_or(usize::MAX),
            pause: None,
            pause_for: pause,
        };
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(io),
        )
        .await
        .expect("iris speaks h2c");
        let conn = tokio::spawn(conn);
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{}", h.addr, Api::Messages.path()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(Api::Messages.body(true))))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
            .await
            .expect("an answer in time")
            .unwrap();
        assert_eq!(resp.status(), 200, "first piece {first:?}");
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(
            Api::Messages.stream_finished(&body),
            "first piece {first:?}"
        );
        drop(send);
        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    }
    // HTTP/1.1: "P" alone (a prefix of the preface too: read the slow way), then the rest; and
    // "PO" alone (not one: told at once, and hyper reads the rest of the head itself).
    let body = Api::Chat.body(false);
    for first in ["P", "PO"] {
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        let wire = format!(
            "POST {} HTTP/1.1\r\nhost: iris\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            Api::Chat.path(),
            body.len()
        );
        let (head, rest) = wire.split_at(first.len());
        s.write_all(head.as_bytes()).await.unwrap();
        tokio::time::sleep(pause).await;
        s.write_all(rest.as_bytes()).await.unwrap();
        let (text, _) = raw_exchange(&mut s, Duration::from_secs(10)).await;
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "first piece {first:?}: {text}"
        );
    }
    // A prefix of the preface that never goes on is closed at the header deadline, like a
    // connection that sends nothing.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&preface[..10]).await.unwrap();
    let (text, elapsed) = raw_exchange(&mut s, Duration::from_secs(10)).await;
    assert!(text.is_empty(), "closed without an answer: {text}");
    assert!(elapsed < CLIENT_HEADER + SLACK, "{elapsed:?}");
    assert_healthy(&h).await;
    // The four above and `assert_healthy`'s six, each answered and recorded once.
    let recs = h.records().await;
    assert_eq!(recs.len(), 4 + 6, "{recs:?}");
    assert!(
        recs.iter()
            .all(|r| r.status == 200 && r.error_class.is_none())
    );
}

#[tokio::test]
async fn http2_prior_knowledge_streams_and_resets() {
    let _shared = EXCLUSIVE.read().await;
    let mut h = Harness::start_with(options()).await;
    let stream = TcpStream::connect(h.addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("iris speaks h2c with prior knowledge");
    let conn = tokio::spawn(conn);
    let request = |api: Api, stream: bool, headers: &[(&str, &str)]| {
        let mut b = http::Request::builder()
            .method("POST")
            .uri(format!("http://{}{}", h.addr, api.path()))
            .header("content-type", "application/json");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(Full::new(Bytes::from(api.body(stream)))).unwrap()
    };
    // A normal request over HTTP/2.
    let resp = send
        .send_request(request(Api::Chat, false, &[]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(serde_json::from_slice::<Value>(&body).unwrap()["usage"].is_object());

    // Streams reset mid-answer (RST_STREAM when the body is dropped), several at once.
    let mut reset_ids = Vec::new();
    for api in APIS {
        let headers = [("x-mock-chunk-delay-ms", "100"), ("x-mock-chunks", "40")];
        let resp = send
            .send_request(request(api, true, &headers))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        reset_ids.push(
            resp.headers()["x-iris-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let mut body = resp.into_body();
        body.frame().await.unwrap().unwrap();
        drop(body);
    }
    // Streams reset before their answer began.
    for _ in 0..20 {
        let fut = send.send_request(request(
            Api::Messages,
            false,
            &[("x-mock-latency-ms", "300")],
        ));
        let _ = tokio::time::timeout(Duration::from_millis(20), fut).await;
    }
    wait_for("the upstream requests to be cancelled", || {
        h.mock.open_connections() <= 1
    })
    .await;
    // The same connection still serves.
    let resp = send
        .send_request(request(Api::Messages, true, &[]))
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(Api::Messages.stream_finished(&body));
    drop(send);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert_healthy(&h).await;
    let recs = h.records().await;
    for id in &reset_ids {
        let r = recs.iter().find(|r| &r.id == id).unwrap();
        assert_eq!(r.error_class.as_deref(), Some("client_closed"));
        assert!(r.duration_ms < 2_000, "{r:?}");
    }
    let early = recs
        .iter()
        .filter(|r| r.error_class.as_deref() == Some("client_closed") && !reset_ids.contains(&r.id))
        .count();
    assert_eq!(
        early, 20,
        "streams reset before their answer leave a record too"
    );
}
