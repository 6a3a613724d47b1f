//! Tier 2: captures, sessions, tool use, cost, retention and the dashboard assets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use iris_store::Store;
use serde_json::{Value, json};

const JSON: (&str, &str) = ("content-type", "application/json");

fn claude_code_body(session: &str, stream: bool) -> String {
    json!({
        "model": "claude-sonnet-4-5", "max_tokens": 64, "stream": stream,
        "metadata": {"user_id": json!({"device_id": "ab12", "account_uuid": "", "session_id": session}).to_string()},
        "system": [{"type": "text", "text": "You are Claude Code", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hello"}]
    })
    .to_string()
}

#[tokio::test]
async fn captures_are_redacted_and_sessions_costs_group() {
    let mut h = Harness::start().await;
    let c = h.client();
    let sid = "d21b5422-124d-4bc9-9e63-ee2ff6f933ea";
    let hdrs = [
        ("x-claude-code-session-id", sid),
        ("x-api-key", "sk-ant-client-PLANTED-secret"),
        ("cookie", "s=1"),
    ];
    for stream in [true, false, true] {
        let r = c
            .post(
                "/v1/messages?beta=true",
                &hdrs,
                &claude_code_body(sid, stream),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // An OpenAI chat conversation without markers: two turns, one fingerprint.
    let turn1 = json!({"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "plan a trip"}]});
    let turn2 = json!({"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "plan a trip"},
        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "to Rome"}]});
    let other = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "something else"}]});
    for b in [&turn1, &turn2, &other] {
        assert_eq!(
            c.post("/v1/chat/completions", &[], &b.to_string())
                .await
                .status,
            200
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Sessions.
    let s = c.send("GET", "/api/sessions", &[], "").await.json();
    let sessions = s["sessions"].as_array().unwrap();
    let cc: Vec<&Value> = sessions
        .iter()
        .filter(|x| x["kind"] == "claude_code")
        .collect();
    assert_eq!(cc.len(), 1, "{s}");
    assert_eq!(cc[0]["requests"], 3);
    assert!(cc[0]["id"].as_str().unwrap().contains("d21b5422"));
    let fps: Vec<&Value> = sessions
        .iter()
        .filter(|x| x["kind"] == "fingerprint")
        .collect();
    let mut counts: Vec<u64> = fps
        .iter()
        .map(|x| x["requests"].as_u64().unwrap())
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [1, 2],
        "the two turns group, the other chat does not: {s}"
    );
    // Cost: the mock's models are priced (claude-sonnet-4-5, gpt-4o-mini), with cache tokens.
    assert!(cc[0]["cost_usd"].as_f64().unwrap() > 0.0, "{}", cc[0]);
    assert_eq!(cc[0]["unpriced_requests"], 0);
    let one = c
        .send(
            "GET",
            &format!("/api/sessions/{}", cc[0]["id"].as_str().unwrap()),
            &[],
            "",
        )
        .await
        .json();
    let reqs = one["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 3);
    // The page's summary is the list's (costs to rounding: summed in another order).
    let (mut page, mut listed) = (one["session"].clone(), cc[0].clone());
    let (pc, lc) = (page["cost_usd"].take(), listed["cost_usd"].take());
    assert_eq!(page, listed);
    assert!(
        (pc.as_f64().unwrap() - lc.as_f64().unwrap()).abs() < 1e-12,
        "{pc} {lc}"
    );
    assert!(reqs.iter().all(|r| {
        r["priced_as"]
            .as_str()
            .is_some_and(|p| p.contains("claude-sonnet-4-5"))
    }));

    // Captures: the answer reassembled, no secret anywhere.
    let rid = reqs[0]["id"].as_str().unwrap();
    let cap = c
        .send("GET", &format!("/api/captures/{rid}"), &[], "")
        .await;
    assert_eq!(cap.status, 200, "{}", cap.body);
    let capj = cap.json();
    assert_eq!(
        capj["reassembled"]["text"], "mock reply to claude-sonnet-4-5: w1 w2 w3 w4 w5",
        "{capj}"
    );
    for secret in [ANTHROPIC_KEY, OPENAI_KEY, "sk-ant-client-PLANTED-secret"] {
        assert!(!cap.body.contains(secret), "{secret} leaked into a capture");
    }
    // What the store holds: the document and the body texts beside it.
    let row = h.store.capture(rid).await.unwrap().unwrap();
    assert!(
        row.request_body.is_some(),
        "the request body is stored beside the document"
    );
    for dump in [
        Some(&row.body),
        row.request_body.as_ref(),
        row.response_body.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(!dump.contains(ANTHROPIC_KEY) && !dump.contains("PLANTED"));
    }

    // Users see only their own captures.
    let alice = h.client_from([127, 0, 0, 2]);
    assert_eq!(
        alice
            .send("GET", &format!("/api/captures/{rid}"), &[], "")
            .await
            .status,
        404
    );
    assert!(
        alice.send("GET", "/api/sessions", &[], "").await.json()["sessions"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Usage totals carry cost; prices list the configured models with their source.
    let u = c
        .send("GET", "/api/usage?group_by=model", &[], "")
        .await
        .json();
    assert!(
        u["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["cost_usd"].as_f64().unwrap_or(0.0) > 0.0),
        "{u}"
    );
    let p = c.send("GET", "/api/prices", &[], "").await.json();
    let sonnet = p["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "claude-sonnet-4-5")
        .unwrap()
        .clone();
    assert!(sonnet["input_per_mtok"].as_f64().unwrap() > 0.0 && sonnet["source"].is_string());

    // Retention: a zero-duration policy purges captures but keeps usage.
    let before = h.store.count_usage().await.unwrap();
    let mut cfg = h.gateway.runtime().config.clone();
    cfg.database.retention_duration = "0".into();
    h.gateway.replace_config(cfg);
    assert!(iris_server::purge_once(&h.gateway).await >= 6);
    assert!(h.store.capture(rid).await.unwrap().is_none());
    assert_eq!(
        c.send("GET", &format!("/api/captures/{rid}"), &[], "")
            .await
            .status,
        404
    );
    assert_eq!(h.store.count_usage().await.unwrap(), before);
    let _ = h.records().await;
}

#[tokio::test]
async fn tool_calls_are_counted_per_request_session_and_time() {
    let h = Harness::start().await;
    let c = h.client();
    // The mock calls the first tool a request offers.
    let body = json!({"model": "claude-haiku-4-5", "max_tokens": 64, "stream": true,
        "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "weather?"}]})
    .to_string();
    let r = c.post("/v1/messages", &[], &body).await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(r.body.contains("input_json_delta"), "{}", r.body);
    let t = c.send("GET", "/api/tools", &[], "").await.json();
    assert_eq!(t["totals"][0]["name"], "get_weather", "{t}");
    assert_eq!(t["totals"][0]["count"], 1);
    assert_eq!(t["by_session"][0]["tools"][0]["name"], "get_weather");
    assert_eq!(t["buckets"].as_array().unwrap().len(), 1);
    // The capture has the call with its arguments joined from the stream.
    let logs = c.send("GET", "/api/logs", &[], "").await.json();
    let rid = logs["records"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(logs["records"][0]["tool_names"], json!(["get_weather"]));
    let cap = c
        .send("GET", &format!("/api/captures/{rid}"), &[], "")
        .await
        .json();
    assert_eq!(cap["reassembled"]["tool_calls"][0]["name"], "get_weather");
    assert_eq!(
        cap["reassembled"]["tool_calls"][0]["arguments"],
        json!({"q": "mock"})
    );
}

#[tokio::test]
async fn adoption_csv_and_model_test() {
    let mut h = Harness::start().await;
    let c = h.client();
    assert_eq!(
        c.post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
            .await
            .status,
        200
    );
    assert_eq!(
        h.client_from([127, 0, 0, 2])
            .post("/v1/chat/completions", &[], &chat("gpt-4o-mini", false))
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a = c
        .send("GET", "/api/adoption?period=week", &[], "")
        .await
        .json();
    assert_eq!(a["active"][0]["users"], 2, "{a}");
    let csv = c.send("GET", "/api/adoption.csv", &[], "").await;
    assert!(
        csv.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        csv.body
            .starts_with("who,requests,input_tokens,output_tokens,cost_usd\n")
    );
    assert!(
        csv.body.contains("\"alice@example.com\",1,"),
        "{}",
        csv.body
    );
    assert_eq!(
        h.client_from([127, 0, 0, 2])
            .send("GET", "/api/adoption", &[], "")
            .await
            .status,
        403
    );
    // The model test button: through the caller's grants.
    let ok = c
        .send(
            "POST",
            "/api/models/test",
            &[JSON],
            &json!({"model": "anthropic/claude-haiku-4-5"}).to_string(),
        )
        .await
        .json();
    assert_eq!(ok["ok"], true, "{ok}");
    assert!(ok["text"].as_str().unwrap().starts_with("mock reply"));
    let denied = h
        .client_from([127, 0, 0, 2])
        .send(
            "POST",
            "/api/models/test",
            &[JSON],
            &json!({"model": "claude-sonnet-4-5"}).to_string(),
        )
        .await;
    assert_eq!(denied.status, 404);
    // The test's record, like a proxied request's, is dated by its start: the time in its id.
    let records = h.records().await;
    let test = records
        .iter()
        .find(|r| r.path == "/api/models/test")
        .expect("the model test's record");
    let id_ms = i64::from_str_radix(&test.id.replace('-', "")[..12], 16).unwrap();
    assert_eq!(test.ts_ms, id_ms, "{test:?}");
    assert!(test.duration_ms < 60_000);
}

#[tokio::test]
async fn the_dashboard_is_served_with_strict_headers() {
    let h = Harness::start().await;
    let c = h.client();
    let r = c.send("GET", "/ui", &[], "").await;
    assert_eq!(r.status, 308);
    let r = c.send("GET", "/ui/", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        r.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let etag = r.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(
        c.send("GET", "/ui/", &[("if-none-match", &etag)], "")
            .await
            .status,
        304
    );
    assert_eq!(
        c.send("GET", "/ui/logs/sessions/x", &[], "").await.status,
        200,
        "client-side routes fall back to index.html"
    );
    assert_eq!(c.send("GET", "/ui/nope.js", &[], "").await.status, 404);
}
