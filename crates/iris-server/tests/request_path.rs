//! Tier 2: the request path through the real server on 127.0.0.1:0, against the mock provider.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use http_body_util::BodyExt;

#[tokio::test]
async fn upstream_sees_the_provider_key_and_nothing_of_the_clients() {
    let mut h = Harness::start().await;
    let c = h.client();
    let hostile = [
        ("authorization", "Bearer client-secret-xyz"),
        ("x-api-key", "client-secret-xyz"),
        ("cookie", "session=client-secret-xyz"),
        ("tailscale-user-login", "mallory@example.com"),
        ("x-forwarded-for", "100.1.2.3"),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "prompt-caching-2024-07-31"),
        ("user-agent", "claude-cli/2.1.197 (external, sdk-cli)"),
        ("accept-encoding", "gzip, br"),
    ];
    let r = c
        .post(
            "/v1/messages?beta=true",
            &hostile,
            &messages("claude-sonnet-4-5", false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c
        .post(
            "/v1/chat/completions",
            &hostile,
            &chat("gpt-4o-mini", false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let reqs = h.mock.requests();
    assert_eq!(reqs.len(), 2);
    let (ant, oai) = (&reqs[0], &reqs[1]);
    // Path: the anthropic baseurl ended in /v1 and must not become /v1/v1; the query is kept.
    assert_eq!(ant.path, "/v1/messages");
    assert_eq!(ant.query.as_deref(), Some("beta=true"));
    assert_eq!(ant.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(ant.header("authorization"), None);
    assert_eq!(ant.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        ant.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    assert_eq!(
        ant.header("x-team"),
        Some("platform"),
        "add_headers applied"
    );
    assert_eq!(
        oai.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(oai.header("x-api-key"), None);
    for r in &reqs {
        for (name, value) in &r.headers {
            assert!(
                !value.contains("client-secret-xyz"),
                "client credential leaked in {name}"
            );
            assert!(
                !name.starts_with("tailscale-") && !name.starts_with("x-forwarded"),
                "{name} forwarded"
            );
            assert_ne!(name, "cookie");
        }
        assert_ne!(r.header("accept-encoding"), Some("gzip, br"));
        // The upstream's own host and port (set by iris from the provider's URL), once.
        let hosts: Vec<_> = r.headers.iter().filter(|(n, _)| n == "host").collect();
        assert_eq!(hosts.len(), 1, "{:?}", r.headers);
        assert_eq!(hosts[0].1, h.mock.addr().to_string());
    }
    let recs = h.records().await;
    assert!(recs.iter().all(|r| r.identity_source == "loopback"));
}

#[tokio::test]
async fn usage_records_match_the_providers_numbers() {
    // A whole answer's usage is read from the capture's copy of it when the capture keeps all
    // of it (the default), from the extractor's own copy when captures are off, and from a copy
    // the extractor begins when the capture stops short of the answer (28 KB answers here, read
    // in several frames, against a 16 KiB cap, or a 4 KiB budget for all captures in flight).
    for iris in [
        "",
        r#", "captures": {"enabled": false}"#,
        r#", "captures": {"max_body_bytes": 16384, "max_raw_events_bytes": 16384}"#,
        r#", "captures": {"max_in_flight_bytes": 4096}"#,
    ] {
        usage_records_match_the_providers_numbers_with(iris).await;
    }
}

async fn usage_records_match_the_providers_numbers_with(iris: &str) {
    let mut h = Harness::start_with(Options {
        iris: iris.into(),
        ..Options::default()
    })
    .await;
    let c = h.client();
    let cached = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 32, "stream": true,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hello"}]})
    .to_string();
    let calls: Vec<(&str, String)> = vec![
        ("/v1/messages", messages("claude-sonnet-4-5", false)),
        ("/v1/messages", cached),
        ("/v1/chat/completions", chat("gpt-4o-mini", false)),
        ("/v1/chat/completions", chat("gpt-4o-mini", true)),
        (
            "/v1/responses",
            serde_json::json!({"model": "gpt-4o-mini", "input": "hi", "stream": true, "reasoning": {"effort": "low"}}).to_string(),
        ),
        ("/v1/embeddings", serde_json::json!({"model": "text-embedding-3-small", "input": "hello"}).to_string()),
    ];
    for (path, body) in &calls {
        let r = c
            .post(
                path,
                &[("x-mock-chunks", "7"), ("x-mock-chunk-size", "4096")],
                body,
            )
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let sent = h.mock.requests();
    let mut recs = h.records().await;
    recs.reverse();
    assert_eq!(recs.len(), calls.len());
    for (rec, up) in recs.iter().zip(&sent) {
        let u = up.usage.expect("mock answered with usage");
        assert!(rec.usage_known, "{rec:?}");
        assert_eq!(
            (
                rec.input_tokens,
                rec.output_tokens,
                rec.cache_read_tokens,
                rec.cache_write_tokens,
                rec.reasoning_tokens
            ),
            (
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.cache_write_tokens,
                u.reasoning_tokens
            ),
            "{} {:?} ({iris})",
            rec.api_family,
            rec.requested_model
        );
        assert_eq!(rec.error_class, None, "{rec:?}");
        assert_eq!(rec.status, 200);
        assert!(rec.duration_ms < 10_000 && rec.ttfb_ms.is_some());
    }
    assert!(recs[1].cache_read_tokens > 0 && recs[4].reasoning_tokens > 0);
    assert!(recs[1].streaming && !recs[0].streaming);
}

#[tokio::test]
async fn chat_streams_get_usage_upstream_without_the_client_seeing_it() {
    let mut h = Harness::start().await;
    let c = h.client();
    let plain = c
        .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", true))
        .await;
    assert_eq!(plain.status, 200);
    assert!(plain.body.ends_with("data: [DONE]\n\n"), "{}", plain.body);
    assert!(
        !plain.body.contains("\"usage\":{"),
        "the usage chunk leaked: {}",
        plain.body
    );
    let asked = serde_json::json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "hello"}]})
    .to_string();
    let with = c.post("/v1/chat/completions", &[], &asked).await;
    assert!(with.body.contains("\"usage\":{"), "{}", with.body);
    // Upstream was asked for usage both times.
    for r in h.mock.requests() {
        assert_eq!(r.json().unwrap()["stream_options"]["include_usage"], true);
    }
    // Except for the usage chunk, what the client saw is exactly what the provider sent.
    let strip = |s: &str| {
        s.split("\n\n")
            .filter(|e| !e.contains("\"usage\":{"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (a, b) = (strip(&plain.body), strip(&with.body));
    assert_eq!(a.len(), b.len());
    let recs = h.records().await;
    assert!(recs.iter().all(|r| r.usage_known && r.output_tokens == 5));
}

#[tokio::test]
async fn provider_model_form_is_rewritten_to_the_bare_id() {
    let h = Harness::start().await;
    let r = h
        .client()
        .post(
            "/v1/messages",
            &[],
            &messages("anthropic/claude-haiku-4-5", false),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        h.mock.requests()[0].json().unwrap()["model"],
        "claude-haiku-4-5"
    );
}

#[tokio::test]
async fn errors_in_the_callers_dialect() {
    let mut h = Harness::start_with(Options {
        iris: r#", "limits": {"max_body_bytes": 4096}, "timeouts": {"first_byte": "300ms", "idle": "400ms"}"#.into(),
        ..Options::default()
    })
    .await;
    let c = h.client();
    let oai = |r: &Answer| r.json()["error"]["message"].as_str().map(str::to_owned);
    let ant = |r: &Answer| {
        assert_eq!(r.json()["type"], "error");
        r.json()["error"]["type"].as_str().map(str::to_owned)
    };
    // Bad JSON: 400 in each dialect.
    let r = c.post("/v1/chat/completions", &[], "{\"model\": ").await;
    assert_eq!(r.status, 400);
    assert!(oai(&r).unwrap().contains("JSON"));
    let r = c.post("/v1/messages", &[], "[1,2]").await;
    assert_eq!(
        (r.status, ant(&r).as_deref()),
        (400, Some("invalid_request_error"))
    );
    // A duplicated `model` (the fast peek gives up; serde's message, said once).
    let r = c
        .post("/v1/chat/completions", &[], r#"{"model":"a","model":"b"}"#)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "invalid request body: duplicate field `model` at line 1 column 20"
    );
    // Missing model, unknown model, the wrong API for a model.
    assert_eq!(c.post("/v1/chat/completions", &[], "{}").await.status, 400);
    let r = c
        .post("/v1/chat/completions", &[], &chat("gpt-9-imaginary", false))
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert_eq!(
        c.post(
            "/v1/chat/completions",
            &[],
            &chat("claude-haiku-4-5", false)
        )
        .await
        .status,
        404
    );
    for m in [
        "anthropic/../openai/gpt-4o-mini",
        "аnthropic/claude-haiku-4-5",
        "anthropic/*",
        "**",
    ] {
        assert_eq!(
            c.post("/v1/messages", &[], &messages(m, false))
                .await
                .status,
            404,
            "{m}"
        );
    }
    // Too large: 413, by declared length and by streamed length.
    let big = format!(
        "{{\"model\":\"gpt-4o-mini\",\"pad\":\"{}\"}}",
        "x".repeat(8000)
    );
    let r = c.post("/v1/chat/completions", &[], &big).await;
    assert_eq!(r.status, 413);
    // Method and path.
    assert_eq!(
        c.send("GET", "/v1/chat/completions", &[], "").await.status,
        405
    );
    assert_eq!(
        c.send("GET", "/v1/../api/whoami", &[], "").await.status,
        404
    );
    assert_eq!(c.send("POST", "/v1//messages", &[], "{}").await.status, 404);
    // An unknown endpoint is not an unknown model.
    let r = c.send("POST", "/v1/no-such-api", &[], "{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(r.json()["error"]["code"].is_null(), "{}", r.body);
    // Upstream error bodies pass through unchanged.
    let r = c
        .post(
            "/v1/messages",
            &[("x-mock-status", "429")],
            &messages("claude-haiku-4-5", false),
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "rate_limit_error");
    // Upstream hangs: 504 after the first-byte timeout.
    let t = std::time::Instant::now();
    let r = c
        .post(
            "/v1/messages",
            &[("x-mock-hang", "1")],
            &messages("claude-haiku-4-5", false),
        )
        .await;
    assert_eq!((r.status, ant(&r).as_deref()), (504, Some("timeout_error")));
    assert!(t.elapsed() < Duration::from_secs(3));
    // Upstream idles mid-stream: an in-band error event ends the stream.
    let r = c
        .post(
            "/v1/messages",
            &[("x-mock-chunk-delay-ms", "2000")],
            &messages("claude-haiku-4-5", true),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("event: error"), "{}", r.body);
    // No error body carries a provider key.
    let recs = h.records().await;
    let classes: Vec<_> = recs
        .iter()
        .rev()
        .map(|r| r.error_class.clone().unwrap_or_default())
        .collect();
    assert!(classes.contains(&"too_large".to_string()));
    assert!(classes.contains(&"upstream_timeout".to_string()));
    assert!(classes.contains(&"upstream_idle_timeout".to_string()));
    assert!(classes.contains(&"upstream_status".to_string()));
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    // A closed loopback port: bind, learn the port, close.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let h = Harness::start().await;
    let text = common::config_text(
        &format!("http://127.0.0.1:{port}"),
        "/nonexistent.sock",
        "",
        "",
    );
    let env: std::collections::HashMap<String, String> = [
        ("T_OPENAI_KEY".into(), OPENAI_KEY.into()),
        ("T_ANTHROPIC_KEY".into(), ANTHROPIC_KEY.into()),
    ]
    .into();
    let _ = &h;
    let cfg = iris_config::load(&text, &env).unwrap().config;
    let store: std::sync::Arc<dyn iris_store::Store> =
        std::sync::Arc::new(iris_store::SqliteStore::open_temporary().await.unwrap());
    let (sink, _w) =
        iris_store::spawn_usage_writer(store.clone(), iris_store::UsageWriterConfig::default());
    let gw = std::sync::Arc::new(iris_server::Gateway::new(cfg, store, sink));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(iris_server::serve(
        listener,
        gw,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let mut c = h.client();
    c.base = format!("http://{addr}");
    let r = c
        .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
        .await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(!r.body.contains(OPENAI_KEY));
    assert!(
        !r.body.contains(&port.to_string()),
        "no upstream address in the error body: {}",
        r.body
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_leaves_a_record_and_frees_the_upstream() {
    let mut h = Harness::start().await;
    let c = h.client();
    let req = c.request(
        "POST",
        "/v1/messages",
        &[("x-mock-chunks", "50"), ("x-mock-chunk-delay-ms", "100")],
        &messages("claude-haiku-4-5", true),
    );
    let resp = c.client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    // Read the first frame, then hang up.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .unwrap();
    assert!(first.is_some());
    drop(body);
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let recs = h.records().await;
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].error_class.as_deref(), Some("client_closed"));
    assert!(
        recs[0].duration_ms < 4_000,
        "the stream was cut, not read to the end"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_streams_and_loses_no_record() {
    let mut h = Harness::start().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let c = h.client_from([127, 0, 0, 1]);
        tasks.push(tokio::spawn(async move {
            let path = if i % 2 == 0 {
                "/v1/messages"
            } else {
                "/v1/chat/completions"
            };
            let body = if i % 2 == 0 {
                messages("claude-haiku-4-5", true)
            } else {
                chat("gpt-4o-mini", true)
            };
            c.post(
                path,
                &[("x-mock-chunk-delay-ms", "40"), ("x-mock-chunks", "10")],
                &body,
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let recs = h.records().await; // graceful shutdown while the streams are in flight
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(a.status, 200);
        assert!(a.body.contains("w10"), "stream finished: {}", a.body);
    }
    assert_eq!(recs.len(), 20);
    assert!(
        recs.iter()
            .all(|r| r.error_class.is_none() && r.output_tokens == 10),
        "{recs:#?}"
    );
}

#[tokio::test]
async fn models_list_shows_only_granted_models_in_both_shapes() {
    let h = Harness::start().await;
    let lo = h.client().send("GET", "/v1/models", &[], "").await.json();
    assert_eq!(lo["object"], "list");
    assert_eq!(lo["data"].as_array().unwrap().len(), 4);
    let ci = h
        .client_from([127, 0, 0, 3])
        .send(
            "GET",
            "/v1/models",
            &[("anthropic-version", "2023-06-01")],
            "",
        )
        .await
        .json();
    let ids: Vec<_> = ci["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["claude-sonnet-4-5", "claude-haiku-4-5"]);
    assert_eq!(ci["has_more"], false);
    assert_eq!(ci["first_id"], "claude-sonnet-4-5");
    assert_eq!(
        h.client_from([127, 0, 0, 5])
            .send("GET", "/v1/models", &[], "")
            .await
            .status,
        403
    );
}

#[tokio::test]
async fn slow_request_bodies_time_out_and_connections_are_limited() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut h = Harness::start_with(Options {
        iris: r#", "limits": {"max_connections": 2}, "timeouts": {"request_body": "300ms"}"#.into(),
        ..Options::default()
    })
    .await;
    // A body that never finishes: 408 after the request-body timeout.
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    drop(s);
    // Two idle connections hold both slots; a third waits until one closes.
    let a = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = h.client();
    let third = tokio::spawn(async move {
        c.post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !third.is_finished(),
        "the third connection was served beyond the limit"
    );
    drop(a);
    let r = tokio::time::timeout(Duration::from_secs(5), third)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 200);
    drop(b);
    let recs = h.records().await;
    assert!(
        recs.iter()
            .any(|r| r.error_class.as_deref() == Some("client_timeout") && r.status == 408)
    );
}

#[tokio::test]
async fn cross_site_browser_requests_cannot_spend_models() {
    let h = Harness::start().await;
    let c = h.client();
    for hdr in [
        ("origin", "https://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let r = c
            .post(
                "/v1/chat/completions",
                &[hdr, ("content-type", "text/plain")],
                &chat("gpt-4o-mini", false),
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.body);
    }
    assert!(h.mock.requests().is_empty());
    // Same-origin (the dashboard's model test goes through /api) and non-browser clients work.
    let host = h.addr.to_string();
    let origin = format!("http://{host}");
    let r = c
        .post(
            "/v1/chat/completions",
            &[("origin", &origin)],
            &chat("gpt-4o-mini", false),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
}
