//! `iris unplug` end to end, in process: local client -> unplug on 127.0.0.1:0 -> a gateway
//! stand-in (the testkit's mock provider for forwarding; tiny in-test servers for the whoami
//! check).
// Test helpers panic on setup failures: that is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use iris_client::unplug::{
    UnplugConfig, UnplugError, UnplugReady, UnplugReport, client_lines, run_unplug,
};
use iris_testkit::MockProvider;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const KEY: &str = "iris_sk_0123456789abcdefghijklmnopqrstuv";

struct Running {
    addr: SocketAddr,
    ready: UnplugReady,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<UnplugReport, UnplugError>>,
}

impl Running {
    async fn stop(mut self) -> UnplugReport {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.unwrap().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(gateway: &str, port: u16) -> Result<Running, UnplugError> {
    let (ready_tx, ready_rx) = oneshot::channel::<UnplugReady>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let cfg = UnplugConfig {
        gateway: gateway.to_owned(),
        key: KEY.to_owned(),
        port,
    };
    let task = tokio::spawn(run_unplug(
        cfg,
        move |ready| {
            let _ = ready_tx.send(ready.clone());
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    match ready_rx.await {
        Ok(ready) => Ok(Running {
            addr: ready.addr,
            ready,
            stop: Some(stop_tx),
            task,
        }),
        Err(_) => Err(task.await.unwrap().unwrap_err()),
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(
    method: &str,
    url: String,
    headers: &[(&str, &str)],
    body: &str,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

async fn send_json(req: http::Request<Full<Bytes>>) -> (StatusCode, Value) {
    let resp = client().request(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
    (status, v)
}

/// A gateway stand-in that only answers `GET /api/whoami` with `status` and `body`, and tells
/// the test which Authorization it saw.
async fn whoami_server(
    status: StatusCode,
    body: Value,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<String>,
    JoinHandle<()>,
) {
    let (seen_tx, seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Router::new().route(
        "/api/whoami",
        get(move |h: HeaderMap| {
            let body = body.clone();
            let seen_tx = seen_tx.clone();
            async move {
                let auth = h
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let _ = seen_tx.send(auth);
                (status, axum::Json(body)).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, seen_rx, task)
}

#[tokio::test]
async fn forwards_with_the_key_instead_of_the_clients_credentials() {
    let mock = MockProvider::start().await;
    let run = start(&mock.url(), 0).await.unwrap();
    assert!(run.addr.ip().is_loopback());
    // The mock has no /api/whoami: unplug starts, and says the key could not be checked.
    assert_eq!(run.ready.whoami, None);
    assert!(
        run.ready.warnings[0].contains("/api/whoami"),
        "{:?}",
        run.ready.warnings
    );
    mock.reset();

    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 25,
                      "messages": [{"role": "user", "content": "respond with: hello"}]});
    let (status, answer) = send_json(request(
        "POST",
        format!("http://{}/v1/messages?beta=true", run.addr),
        &[
            ("content-type", "application/json"),
            ("x-api-key", "sk-ant-local-secret"),
            ("authorization", "Bearer sk-local-secret"),
            ("anthropic-version", "2023-06-01"),
            ("tailscale-user-login", "boss@example.com"),
        ],
        &body.to_string(),
    ))
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["type"], "message");

    let seen = mock.requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.query.as_deref(), Some("beta=true"));
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(
        r.header("x-api-key"),
        None,
        "the client's own key never leaves the machine"
    );
    assert_eq!(r.header("tailscale-user-login"), None);
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("host"), Some(mock.addr().to_string().as_str()));
    assert_eq!(r.json().unwrap(), body, "the body arrives unchanged");
    let auths: Vec<_> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "authorization")
        .collect();
    assert_eq!(auths.len(), 1);

    // Any method, path and query; the gateway's status comes back as it is.
    let resp = client()
        .request(request(
            "GET",
            format!("http://{}/v1/models?limit=2", run.addr),
            &[],
            "",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .request(request(
            "DELETE",
            format!("http://{}/v1/nothing/here", run.addr),
            &[],
            "",
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let seen = mock.requests();
    assert_eq!(seen[1].query.as_deref(), Some("limit=2"));
    assert_eq!(
        (seen[2].method.as_str(), seen[2].path.as_str()),
        ("DELETE", "/v1/nothing/here")
    );

    let report = run.stop().await;
    assert_eq!(report.requests, 3);
    assert_eq!(report.gateway_errors, 0);
}

#[tokio::test]
async fn streams_arrive_chunk_by_chunk() {
    let mock = MockProvider::start().await;
    let run = start(&mock.url(), 0).await.unwrap();
    let body = json!({"model": "gpt-4o-mini", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let started = Instant::now();
    let resp = client()
        .request(request(
            "POST",
            format!("http://{}/v1/chat/completions", run.addr),
            &[
                ("content-type", "application/json"),
                ("x-mock-chunks", "5"),
                ("x-mock-chunk-delay-ms", "150"),
            ],
            &body.to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut first_word_at = None;
    let mut last_word_at = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
            if first_word_at.is_none() && text.contains(": w1") {
                first_word_at = Some(started.elapsed());
            }
            if last_word_at.is_none() && text.contains(" w5") {
                last_word_at = Some(started.elapsed());
            }
        }
    }
    let (first, last) = (first_word_at.unwrap(), last_word_at.unwrap());
    assert!(text.contains("data: [DONE]"), "{text}");
    // Four 150 ms gaps separate w1 from w5 at the provider; buffering would collapse them.
    assert!(
        last - first >= Duration::from_millis(450),
        "chunks were not passed through as they came: w1 at {first:?}, w5 at {last:?}"
    );
    assert!(
        first < Duration::from_millis(600),
        "the first chunk was held back: {first:?}"
    );
    run.stop().await;
}

#[tokio::test]
async fn whoami_check_reports_who_the_key_is() {
    let (url, mut seen, server) = whoami_server(
        StatusCode::OK,
        json!({
            "identity": {"source": "key", "login": "alice@example.com", "key_id": "k_7", "tags": []},
            "peer": "127.0.0.1:1", "role": "user",
            "grants": [], "models": ["anthropic/claude-haiku-4-5"], "explain": "role user"
        }),
    )
    .await;
    let run = start(&url, 0).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), format!("Bearer {KEY}"));
    let who = run.ready.whoami.as_ref().unwrap();
    assert_eq!(who.identity.login.as_deref(), Some("alice@example.com"));
    assert!(run.ready.warnings.is_empty(), "{:?}", run.ready.warnings);
    let summary = run.ready.summary();
    assert_eq!(
        summary,
        format!(
            "iris unplug: http://{} -> {url} as alice@example.com (iris key k_7; role user; 1 model)",
            run.addr
        )
    );
    assert!(!summary.contains(KEY) && !format!("{:?}", run.ready).contains(KEY));
    run.stop().await;
    server.abort();
}

#[tokio::test]
async fn whoami_check_warns_about_a_key_without_a_role() {
    let (url, _seen, server) = whoami_server(
        StatusCode::OK,
        json!({"identity": {"source": "key", "tags": ["tag:ci"], "key_id": "k_8"}, "role": null, "models": []}),
    )
    .await;
    let run = start(&url, 0).await.unwrap();
    assert!(
        run.ready
            .warnings
            .iter()
            .any(|w| w.contains("no grant gives this key's identity a role")),
        "{:?}",
        run.ready.warnings
    );
    run.stop().await;
    server.abort();
}

#[tokio::test]
async fn a_refused_key_stops_it_before_listening() {
    let (url, _seen, server) = whoami_server(
        StatusCode::UNAUTHORIZED,
        json!({"error": {"message": "invalid iris key: revoked", "type": "authentication_error"}}),
    )
    .await;
    let e = start(&url, 0).await.err().unwrap();
    assert!(matches!(e, UnplugError::Refused { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "the gateway refused the key: invalid iris key: revoked"
    );
    assert!(!format!("{e:?}").contains(KEY));
    server.abort();
}

#[tokio::test]
async fn a_gateway_error_at_start_is_reported_with_its_status() {
    let (url, _seen, server) = whoami_server(
        StatusCode::SERVICE_UNAVAILABLE,
        json!({"error": {"message": "store unavailable"}}),
    )
    .await;
    let e = start(&url, 0).await.err().unwrap();
    assert_eq!(
        e.to_string(),
        format!("the gateway at {url} answered HTTP 503 to GET /api/whoami: store unavailable")
    );
    server.abort();
}

#[tokio::test]
async fn an_unreachable_gateway_at_start_is_named() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let e = start(&url, 0).await.err().unwrap();
    assert!(matches!(e, UnplugError::Unreachable { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!("cannot reach the gateway at {url}: ")),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("refused"),
        "the OS error is kept: {text}"
    );
}

#[tokio::test]
async fn a_gateway_that_dies_after_start_gives_502_json() {
    let mock = MockProvider::start().await;
    let gateway = mock.url();
    let run = start(&gateway, 0).await.unwrap();
    drop(mock);
    let (status, answer) = send_json(request(
        "POST",
        format!("http://{}/v1/chat/completions", run.addr),
        &[("content-type", "application/json")],
        r#"{"model":"gpt-4o-mini","messages":[]}"#,
    ))
    .await;
    assert_eq!(status, 502);
    assert_eq!(answer["error"]["type"], "api_error");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("iris unplug: gateway {gateway} unreachable: ")),
        "{message}"
    );
    let report = run.stop().await;
    assert_eq!((report.requests, report.gateway_errors), (1, 1));
}

#[tokio::test]
async fn a_busy_port_is_reported() {
    let mock = MockProvider::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let e = start(&mock.url(), port).await.err().unwrap();
    assert!(matches!(e, UnplugError::Bind { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot listen on 127.0.0.1:{port}: ")),
        "{e}"
    );
}

#[tokio::test]
async fn bad_config_is_refused_before_any_network() {
    let cfg = |gateway: &str, key: &str| UnplugConfig {
        gateway: gateway.to_owned(),
        key: key.to_owned(),
        port: 0,
    };
    let e = run_unplug(cfg("127.0.0.1:4747", KEY), |_| {}, async {})
        .await
        .unwrap_err();
    assert!(matches!(e, UnplugError::InvalidGateway { .. }), "{e}");
    let e = run_unplug(cfg("http://127.0.0.1:1", "sk-ant-xyz"), |_| {}, async {})
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not an iris key"), "{e}");
}

#[tokio::test]
async fn the_client_lines_work_against_the_running_forwarder() {
    let (url, _seen, server) = whoami_server(
        StatusCode::OK,
        json!({"identity": {"source": "key", "login": "a@example.com", "key_id": "k"}, "role": "user", "models": []}),
    )
    .await;
    let run = start(&url, 0).await.unwrap();
    let lines = client_lines(run.addr);
    let base = lines
        .lines()
        .find_map(|l| l.strip_prefix("export ANTHROPIC_BASE_URL="))
        .unwrap();
    // The curl line's URL answers through the forwarder.
    let curl_url = lines
        .lines()
        .find_map(|l| l.strip_prefix("curl -s "))
        .unwrap();
    assert!(curl_url.starts_with(base));
    let (status, me) = send_json(request("GET", curl_url.to_owned(), &[], "")).await;
    assert_eq!(status, 200);
    assert_eq!(me["identity"]["login"], "a@example.com");
    run.stop().await;
    server.abort();
}
