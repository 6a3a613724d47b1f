//! The mock provider over real HTTP: wire shapes, usage rules, knobs and recording.

mod common;

use std::time::Duration;

use base64::Engine as _;
use common::{post_json, send};
use iris_testkit::mock::{CACHE_READ_TOKENS, CACHE_WRITE_TOKENS, embedding_for, reply_text};
use iris_testkit::{MockProvider, MockUsage};
use serde_json::{Value, json};

fn tokens_for(body: &Value) -> u64 {
    (body.to_string().len() as u64).div_ceil(4)
}

#[tokio::test]
async fn chat_non_stream_answers_text_and_usage_and_records_the_request() {
    let mock = MockProvider::start().await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let r = post_json(
        &format!("{}/v1/chat/completions?trace=1", mock.url()),
        &[("authorization", "Bearer sk-test"), ("x-mock-chunks", "4")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["object"], "chat.completion");
    assert_eq!(
        j["choices"][0]["message"]["content"],
        reply_text("gpt-4o-mini", 4)
    );
    assert_eq!(j["choices"][0]["finish_reason"], "stop");
    let input = tokens_for(&body);
    assert_eq!(j["usage"]["prompt_tokens"], input);
    assert_eq!(j["usage"]["completion_tokens"], 4);
    assert_eq!(j["usage"]["total_tokens"], input + 4);
    assert!(r.header("x-request-id").is_some());

    let recs = mock.requests();
    assert_eq!(recs.len(), 1);
    let rec = &recs[0];
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, "/v1/chat/completions");
    assert_eq!(rec.query.as_deref(), Some("trace=1"));
    assert_eq!(rec.header("Authorization"), Some("Bearer sk-test"));
    assert_eq!(rec.json(), Some(body));
    assert_eq!(rec.status, 200);
    assert!(!rec.streaming);
    assert_eq!(
        rec.usage,
        Some(MockUsage {
            input_tokens: input,
            output_tokens: 4,
            ..MockUsage::default()
        })
    );
}

// A malformed chunk should fail the calling test loudly.
#[allow(clippy::unwrap_used)]
fn chat_stream_text(events: &[(Option<String>, String)]) -> String {
    events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .filter_map(|(_, d)| {
            let j: Value = serde_json::from_str(d).unwrap();
            j["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn chat_stream_without_include_usage_has_no_usage_at_all() {
    let mock = MockProvider::start().await;
    let body = json!({"model": "gpt-4o-mini", "stream": true, "messages": []});
    let r = post_json(&format!("{}/v1/chat/completions", mock.url()), &[], &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let events = r.sse();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    assert!(
        events.iter().all(|(e, _)| e.is_none()),
        "chat streams have no event: lines"
    );
    assert!(!r.text().contains("usage"), "{}", r.text());
    assert_eq!(chat_stream_text(&events), reply_text("gpt-4o-mini", 5));
    // role chunk + 5 content chunks + finish chunk + [DONE]
    assert_eq!(events.len(), 8);
    let finish: Value = serde_json::from_str(&events[6].1).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let rec = &mock.requests()[0];
    assert!(rec.streaming);
    assert_eq!(rec.usage, None, "no usage was sent to the client");
}

#[tokio::test]
async fn chat_stream_with_include_usage_ends_with_a_usage_chunk() {
    let mock = MockProvider::start().await;
    let body = json!({
        "model": "gpt-4o-mini", "stream": true, "messages": [],
        "stream_options": {"include_usage": true}, "reasoning_effort": "low", "prompt_cache_key": "s1"
    });
    let r = post_json(
        &format!("{}/v1/chat/completions", mock.url()),
        &[("x-mock-chunks", "3")],
        &body,
    )
    .await;
    let events = r.sse();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    let (last, rest) = chunks.split_last().unwrap();
    for c in rest {
        assert!(
            c["usage"].is_null(),
            "every other chunk has usage: null: {c}"
        );
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
    assert_eq!(last["choices"], json!([]));
    let input = tokens_for(&body);
    let usage = &last["usage"];
    assert_eq!(usage["prompt_tokens"], input);
    assert_eq!(
        usage["completion_tokens"],
        3 + 9,
        "output includes reasoning"
    );
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 9);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], input / 2);
    assert_eq!(chat_stream_text(&events), reply_text("gpt-4o-mini", 3));
    assert_eq!(
        mock.requests()[0].usage,
        Some(MockUsage {
            input_tokens: input,
            output_tokens: 12,
            cache_read_tokens: input / 2,
            cache_write_tokens: 0,
            reasoning_tokens: 9,
        })
    );
}

#[tokio::test]
async fn responses_non_stream_and_stream() {
    let mock = MockProvider::start().await;
    let body = json!({"model": "gpt-4o-mini", "input": "hello", "reasoning": {"effort": "low"}});
    let r = post_json(&format!("{}/v1/responses", mock.url()), &[], &body).await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["object"], "response");
    assert_eq!(j["status"], "completed");
    assert_eq!(j["output"][0]["type"], "reasoning");
    assert_eq!(
        j["output"][1]["content"][0]["text"],
        reply_text("gpt-4o-mini", 5)
    );
    assert_eq!(j["usage"]["output_tokens_details"]["reasoning_tokens"], 15);
    assert_eq!(j["usage"]["output_tokens"], 20);
    assert_eq!(j["usage"]["input_tokens_details"]["cached_tokens"], 0);

    let body = json!({"model": "gpt-4o-mini", "input": "hello", "stream": true});
    let r = post_json(&format!("{}/v1/responses", mock.url()), &[], &body).await;
    let events = r.sse();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    let mut want = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    want.extend(std::iter::repeat_n("response.output_text.delta", 5));
    want.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, want);
    let mut text = String::new();
    for (i, (name, data)) in events.iter().enumerate() {
        let j: Value = serde_json::from_str(data).unwrap();
        assert_eq!(j["type"], name.as_deref().unwrap());
        assert_eq!(j["sequence_number"], i);
        if j["type"] == "response.output_text.delta" {
            text.push_str(j["delta"].as_str().unwrap());
        }
    }
    assert_eq!(text, reply_text("gpt-4o-mini", 5));
    let done: Value = serde_json::from_str(&events.last().unwrap().1).unwrap();
    assert_eq!(done["response"]["usage"]["input_tokens"], tokens_for(&body));
    assert_eq!(done["response"]["usage"]["output_tokens"], 5);
    assert_eq!(
        done["response"]["usage"]["output_tokens_details"]["reasoning_tokens"],
        0
    );
    let created: Value = serde_json::from_str(&events[0].1).unwrap();
    assert!(created["response"]["usage"].is_null());
}

#[tokio::test]
async fn legacy_completions() {
    let mock = MockProvider::start().await;
    let body = json!({"model": "gpt-4o-mini", "prompt": "x", "stream": true, "stream_options": {"include_usage": true}});
    let r = post_json(&format!("{}/v1/completions", mock.url()), &[], &body).await;
    let events = r.sse();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 5);
    let body = json!({"model": "gpt-4o-mini", "prompt": "x"});
    let j = post_json(&format!("{}/v1/completions", mock.url()), &[], &body)
        .await
        .json();
    assert_eq!(j["choices"][0]["text"], reply_text("gpt-4o-mini", 5));
}

#[tokio::test]
async fn embeddings_float_and_base64_agree() {
    let mock = MockProvider::start().await;
    let url = format!("{}/v1/embeddings", mock.url());
    let floats = post_json(
        &url,
        &[],
        &json!({"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "float"}),
    )
    .await
    .json();
    let b64 = post_json(
        &url,
        &[],
        &json!({"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64"}),
    )
    .await
    .json();
    for i in 0..2 {
        let want = embedding_for(["a", "b"][i], 16);
        let got_floats: Vec<f32> = floats["data"][i]["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got_floats, want);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64["data"][i]["embedding"].as_str().unwrap())
            .unwrap();
        let got_b64: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(got_b64, want);
        assert_eq!(b64["data"][i]["index"], i);
    }
    let dims = post_json(
        &url,
        &[],
        &json!({"model": "m", "input": "a", "dimensions": 3}),
    )
    .await
    .json();
    assert_eq!(dims["data"][0]["embedding"].as_array().unwrap().len(), 3);
    assert_eq!(dims["usage"]["completion_tokens"], Value::Null);
    let bad = post_json(
        &url,
        &[],
        &json!({"model": "m", "input": "a", "encoding_format": "hex"}),
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn anthropic_messages_non_stream_with_cache_control() {
    let mock = MockProvider::start().await;
    let body = json!({
        "model": "claude-haiku-4-5", "max_tokens": 100,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}]
    });
    let r = post_json(
        &format!("{}/v1/messages?beta=true", mock.url()),
        &[("anthropic-version", "2023-06-01"), ("x-mock-chunks", "2")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("request-id").is_some());
    let j = r.json();
    assert_eq!(j["type"], "message");
    assert_eq!(j["content"][0]["text"], reply_text("claude-haiku-4-5", 2));
    assert_eq!(j["stop_reason"], "end_turn");
    assert_eq!(j["usage"]["input_tokens"], tokens_for(&body));
    assert_eq!(j["usage"]["output_tokens"], 2);
    assert_eq!(j["usage"]["cache_read_input_tokens"], CACHE_READ_TOKENS);
    assert_eq!(
        j["usage"]["cache_creation_input_tokens"],
        CACHE_WRITE_TOKENS
    );
    let rec = &mock.requests()[0];
    assert_eq!(rec.query.as_deref(), Some("beta=true"));
    assert_eq!(rec.usage.unwrap().cache_read_tokens, CACHE_READ_TOKENS);
}

#[tokio::test]
async fn anthropic_messages_stream_event_order_and_usage() {
    let mock = MockProvider::start().await;
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = post_json(&format!("{}/v1/messages", mock.url()), &[], &body).await;
    let events = r.sse();
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    let mut want = vec!["message_start", "content_block_start", "ping"];
    want.extend(std::iter::repeat_n("content_block_delta", 5));
    want.extend(["content_block_stop", "message_delta", "message_stop"]);
    assert_eq!(names, want);
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    let usage = &start["message"]["usage"];
    assert_eq!(usage["input_tokens"], tokens_for(&body));
    assert_eq!(usage["cache_read_input_tokens"], 0);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(
        usage["output_tokens"], 1,
        "provisional count, replaced by message_delta"
    );
    let delta: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(delta["usage"]["output_tokens"], 5);
    let text: String = events
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("content_block_delta"))
        .map(|(_, d)| {
            let j: Value = serde_json::from_str(d).unwrap();
            j["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, reply_text("claude-sonnet-4-5", 5));
}

#[tokio::test]
async fn anthropic_validation_and_count_tokens() {
    let mock = MockProvider::start().await;
    let r = post_json(
        &format!("{}/v1/messages", mock.url()),
        &[],
        &json!({"model": "claude-haiku-4-5", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );

    let body =
        json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "count me"}]});
    let r = post_json(
        &format!("{}/v1/messages/count_tokens", mock.url()),
        &[],
        &body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"input_tokens": tokens_for(&body)}));
}

#[tokio::test]
async fn models_in_both_shapes() {
    let mock = MockProvider::start().await;
    let openai = send("GET", &format!("{}/v1/models", mock.url()), &[], "")
        .await
        .json();
    assert_eq!(openai["object"], "list");
    let ids: Vec<&str> = openai["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"gpt-4o-mini") && ids.contains(&"claude-haiku-4-5"));
    let anthropic = send(
        "GET",
        &format!("{}/v1/models", mock.url()),
        &[("anthropic-version", "2023-06-01")],
        "",
    )
    .await
    .json();
    assert_eq!(anthropic["has_more"], false);
    assert_eq!(anthropic["first_id"], anthropic["data"][0]["id"]);
    assert_eq!(anthropic["data"][0]["type"], "model");
    assert!(anthropic["last_id"].is_string());
    assert_eq!(mock.requests()[0].usage, None);
}

#[tokio::test]
async fn forced_status_uses_each_providers_error_shape() {
    let mock = MockProvider::start().await;
    let r = post_json(
        &format!("{}/v1/chat/completions", mock.url()),
        &[("x-mock-status", "429")],
        &json!({"model": "gpt-4o-mini", "messages": []}),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    let j = r.json();
    assert_eq!(j["error"]["code"], "rate_limit_exceeded");
    assert!(j["error"]["message"].is_string());

    let r = post_json(
        &format!("{}/v1/messages", mock.url()),
        &[("x-mock-status", "529")],
        &json!({"model": "claude-haiku-4-5", "max_tokens": 1, "messages": []}),
    )
    .await;
    assert_eq!(r.status, 529);
    assert_eq!(r.json()["type"], "error");
    assert_eq!(r.json()["error"]["type"], "overloaded_error");

    let r = post_json(
        &format!("{}/v1/chat/completions", mock.url()),
        &[("x-mock-status", "500")],
        &json!({}),
    )
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["type"], "server_error");
    let recs = mock.requests();
    assert_eq!(
        recs.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![429, 529, 500]
    );
    assert!(recs.iter().all(|r| r.usage.is_none()));
}

#[tokio::test]
async fn bad_json_and_unknown_paths() {
    let mock = MockProvider::start().await;
    let r = send(
        "POST",
        &format!("{}/v1/chat/completions", mock.url()),
        &[],
        "{nope",
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = send("POST", &format!("{}/v1/messages", mock.url()), &[], "{nope").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.json()["type"], "error");
    let r = send("POST", &format!("{}/v1/nothing", mock.url()), &[], "{}").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]["message"].is_string());
}

#[tokio::test]
async fn hang_never_answers_but_is_recorded() {
    let mock = MockProvider::start().await;
    let url = format!("{}/v1/chat/completions", mock.url());
    let body = json!({"model": "gpt-4o-mini", "messages": []});
    let fut = post_json(&url, &[("x-mock-hang", "1")], &body);
    let res = tokio::time::timeout(Duration::from_millis(400), fut).await;
    assert!(res.is_err(), "a hanging request must not be answered");
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test]
async fn latency_and_chunk_delay() {
    let mock = MockProvider::start().await;
    let r = post_json(
        &format!("{}/v1/chat/completions", mock.url()),
        &[("x-mock-latency-ms", "150")],
        &json!({"model": "gpt-4o-mini", "messages": []}),
    )
    .await;
    assert!(r.ttfb >= Duration::from_millis(150), "{:?}", r.ttfb);

    let r = post_json(
        &format!("{}/v1/messages", mock.url()),
        &[("x-mock-chunk-delay-ms", "60"), ("x-mock-chunks", "4")],
        &json!({"model": "claude-haiku-4-5", "max_tokens": 5, "stream": true, "messages": []}),
    )
    .await;
    assert!(r.total >= Duration::from_millis(240), "{:?}", r.total);
    assert!(
        r.ttfb < Duration::from_millis(200),
        "head comes before the chunks: {:?}",
        r.ttfb
    );
    assert_eq!(r.sse().len(), 10);
}

#[tokio::test]
async fn control_endpoints() {
    let mock = MockProvider::start().await;
    post_json(
        &format!("{}/v1/chat/completions", mock.url()),
        &[("x-custom", "a")],
        &json!({"model": "gpt-4o-mini", "messages": []}),
    )
    .await;
    let list = send("GET", &format!("{}/__mock/requests", mock.url()), &[], "")
        .await
        .json();
    let first = &list[0];
    assert_eq!(first["path"], "/v1/chat/completions");
    assert!(
        first["headers"]
            .as_array()
            .unwrap()
            .contains(&json!(["x-custom", "a"])),
        "headers are [name, value] pairs: {first}"
    );
    assert!(first["usage"]["input_tokens"].as_u64().unwrap() > 0);
    let r = send("POST", &format!("{}/__mock/reset", mock.url()), &[], "").await;
    assert_eq!(r.status, 200);
    assert!(mock.requests().is_empty());
    let list = send("GET", &format!("{}/__mock/requests", mock.url()), &[], "")
        .await
        .json();
    assert_eq!(list, json!([]));
}

#[test]
fn binary_prints_listening_line_and_exits_cleanly_on_sigterm() {
    let (mut child, line) = common::spawn_with_first_line(
        std::process::Command::new(env!("CARGO_BIN_EXE_iris-mock-provider")).args([
            "--listen",
            "127.0.0.1:0",
            "--chunks",
            "2",
        ]),
    );
    let url = line
        .strip_prefix("listening: ")
        .unwrap_or_else(|| panic!("bad line {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let j = rt
        .block_on(post_json(
            &format!("{url}/v1/chat/completions"),
            &[],
            &json!({"model": "m", "messages": []}),
        ))
        .json();
    assert_eq!(j["choices"][0]["message"]["content"], reply_text("m", 2));
    let status = common::terminate(&mut child);
    assert!(status.success(), "{status:?}");
}
