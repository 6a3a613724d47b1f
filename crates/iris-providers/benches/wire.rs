//! Micro-benchmarks of the wire-format code on iris's request path: the request peek on a
//! Claude Code-sized body, the body rewrites, routing, and incremental usage extraction over the
//! streams the providers send. Inputs are generated here, deterministically, in the providers'
//! real shapes (see shared/reference/client-requests/claude-code-messages.json).
//!
//! Run: `cargo bench -p iris-providers` (scripts/bench runs it with short measurement times).

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use iris_providers::api::ApiFamily;
use iris_providers::json_text::{next_special, string_end};
use iris_providers::peek::{peek_body, peek_request, with_include_usage, with_model};
use iris_providers::routing::RouteTable;
use iris_providers::usage::UsageExtractor;
use serde_json::{Value, json};

/// Deterministic prose of about `len` bytes, with the escapes real prompts carry.
fn prose(seed: usize, len: usize) -> String {
    const WORDS: &[&str] = &[
        "the",
        "tool",
        "returns",
        "a",
        "file",
        "path",
        "when",
        "\"quoted\"",
        "and",
        "line\nbreak",
        "unicode é",
        "tab\there",
        "backslash \\ here",
        "`code`",
        "JSON",
        "schema",
        "must",
        "never",
    ];
    let mut s = String::with_capacity(len + 16);
    let mut i = seed;
    while s.len() < len {
        s.push_str(WORDS[i % WORDS.len()]);
        s.push(' ');
        i = i.wrapping_mul(31).wrapping_add(7);
    }
    s
}

fn tool(name: &str, size: usize) -> Value {
    let props: serde_json::Map<String, Value> = (0..6)
        .map(|i| {
            (
                format!("param_{i}"),
                json!({"type": if i % 2 == 0 { "string" } else { "integer" },
                       "description": prose(i + size, 80)}),
            )
        })
        .collect();
    json!({
        "name": name,
        "description": prose(size, size.saturating_sub(700)),
        "input_schema": {
            "type": "object",
            "properties": props,
            "required": ["param_0", "param_2"],
            "additionalProperties": false,
            "$schema": "http://json-schema.org/draft-07/schema#"
        }
    })
}

/// A Claude Code `POST /v1/messages?beta=true` body of about 80 KB: system blocks with
/// `cache_control`, 24 tools, thinking, context management, metadata, `stream: true`.
pub fn claude_code_body() -> Vec<u8> {
    let tools: Vec<Value> = [
        ("Agent", 2571),
        ("Bash", 2757),
        ("CronCreate", 4123),
        ("CronDelete", 445),
        ("CronList", 289),
        ("Edit", 1006),
        ("EnterWorktree", 3797),
        ("ExitWorktree", 2546),
        ("NotebookEdit", 1679),
        ("Read", 1687),
        ("ReportFindings", 1923),
        ("ScheduleWakeup", 3797),
        ("SendMessage", 1206),
        ("Skill", 2135),
        ("TaskCreate", 2855),
        ("TaskGet", 1036),
        ("TaskList", 1201),
        ("TaskOutput", 1599),
        ("TaskStop", 558),
        ("TaskUpdate", 3598),
        ("WebFetch", 776),
        ("WebSearch", 879),
        ("Workflow", 21341),
        ("Write", 663),
    ]
    .iter()
    .map(|(n, s)| tool(n, *s))
    .collect();
    let body = json!({
        "model": "claude-opus-4-8",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": prose(1, 306)},
                {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "system", "content": prose(2, 6062)}
        ],
        "system": [
            {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.197.fa0; cc_entrypoint=sdk-cli;"},
            {"type": "text", "text": "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
             "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": prose(3, 5697), "cache_control": {"type": "ephemeral"}}
        ],
        "tools": tools,
        "metadata": {"user_id": "{\"device_id\":\"0000000000000000000000000000000000000000000000000000000000000000\",\"account_uuid\":\"\",\"session_id\":\"d21b5422-124d-4bc9-9e63-ee2ff6f933ea\"}"},
        "max_tokens": 64000,
        "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "output_config": {"effort": "high"},
        "stream": true
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A chat whose user message is `len` bytes of code: quotes and newlines to escape, as in the
/// benchmark harness's large-prompt chat.
fn code_chat_body(len: usize) -> Vec<u8> {
    const CODE: &str = "fn greet(name: &str) -> String {\n    // Say \"hello\" politely.\n    \
                        format!(\"hello, {name}\\n\")\n}\n\n";
    let mut prompt = String::from("Review this code:\n");
    while prompt.len() < len {
        prompt.push_str(CODE);
    }
    serde_json::to_vec(&json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a careful code reviewer."},
            {"role": "user", "content": prompt},
        ],
        "max_tokens": 64,
    }))
    .unwrap_or_default()
}

/// The number of strings in `body`, each found from its opening quote and passed over by
/// stopping at every escape.
fn strings_by_next_special(body: &[u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while let Some(open) = memchr::memchr(b'"', &body[i..]) {
        let mut at = i + open + 1;
        loop {
            at = next_special(body, at);
            match body.get(at) {
                Some(b'"') => break,
                Some(b'\\') => at += 2,
                _ => return n,
            }
        }
        i = at + 1;
        n += 1;
    }
    n
}

/// As [`strings_by_next_special`], with the bit-mask scan.
fn strings_by_string_end(body: &[u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while let Some(open) = memchr::memchr(b'"', &body[i..]) {
        let Some((end, _)) = string_end(body, i + open + 1) else {
            return n;
        };
        i = end + 1;
        n += 1;
    }
    n
}

fn small_chat_body() -> Vec<u8> {
    br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":64,"stream":true}"#.to_vec()
}

fn event(name: Option<&str>, data: &Value) -> Vec<u8> {
    let mut s = String::new();
    if let Some(n) = name {
        s.push_str("event: ");
        s.push_str(n);
        s.push('\n');
    }
    s.push_str("data: ");
    s.push_str(&data.to_string());
    s.push_str("\n\n");
    s.into_bytes()
}

/// An Anthropic Messages stream with `n` text deltas, one event per element (as they arrive).
fn anthropic_stream(n: usize) -> Vec<Vec<u8>> {
    let mut ev = vec![
        event(
            Some("message_start"),
            &json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
                "role": "assistant", "model": "claude-sonnet-4-5-20250929", "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 19000, "cache_creation_input_tokens": 120,
                          "cache_read_input_tokens": 18000, "output_tokens": 1,
                          "service_tier": "standard"}}}),
        ),
        event(
            Some("content_block_start"),
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        event(Some("ping"), &json!({"type": "ping"})),
    ];
    for i in 0..n {
        ev.push(event(
            Some("content_block_delta"),
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": format!(" word{i} of the answer")}}),
        ));
    }
    ev.push(event(
        Some("content_block_stop"),
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    ev.push(event(
        Some("message_delta"),
        &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": n}}),
    ));
    ev.push(event(
        Some("message_stop"),
        &json!({"type": "message_stop"}),
    ));
    ev
}

/// An OpenAI chat stream with `stream_options.include_usage`: every chunk carries
/// `"usage": null`, the last one the usage.
fn openai_chat_stream(n: usize) -> Vec<Vec<u8>> {
    let mut ev = Vec::new();
    for i in 0..n {
        ev.push(event(
            None,
            &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                    "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_1",
                    "choices": [{"index": 0, "delta": {"content": format!(" word{i}")},
                                 "logprobs": null, "finish_reason": null}],
                    "usage": null}),
        ));
    }
    ev.push(event(
        None,
        &json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "gpt-4o-mini-2024-07-18", "choices": [],
                "usage": {"prompt_tokens": 900, "completion_tokens": n, "total_tokens": 900 + n,
                          "prompt_tokens_details": {"cached_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 0}}}),
    ));
    ev.push(b"data: [DONE]\n\n".to_vec());
    ev
}

/// A Responses stream: text deltas and a final `response.completed` with usage.
fn responses_stream(n: usize) -> Vec<Vec<u8>> {
    let mut ev = vec![event(
        Some("response.created"),
        &json!({"type": "response.created", "sequence_number": 0,
                "response": {"id": "resp_1", "object": "response", "status": "in_progress",
                             "model": "gpt-4o-2024-08-06", "output": [], "usage": null}}),
    )];
    for i in 0..n {
        ev.push(event(
            Some("response.output_text.delta"),
            &json!({"type": "response.output_text.delta", "sequence_number": i + 1,
                    "item_id": "msg_1", "output_index": 0, "content_index": 0,
                    "delta": format!(" word{i}")}),
        ));
    }
    ev.push(event(
        Some("response.completed"),
        &json!({"type": "response.completed", "sequence_number": n + 1,
                "response": {"id": "resp_1", "object": "response", "status": "completed",
                             "model": "gpt-4o-2024-08-06", "output": [],
                             "usage": {"input_tokens": 900, "input_tokens_details": {"cached_tokens": 0},
                                       "output_tokens": n,
                                       "output_tokens_details": {"reasoning_tokens": 0},
                                       "total_tokens": 900 + n}}}),
    ));
    ev
}

fn feed_all(family: ApiFamily, streaming: bool, pieces: &[&[u8]]) -> bool {
    let mut ex = UsageExtractor::new(family, streaming);
    for p in pieces {
        ex.feed(p);
    }
    ex.finish().usage.is_some()
}

fn usage(c: &mut Criterion) {
    let mut g = c.benchmark_group("usage");
    let streams: [(&str, ApiFamily, Vec<Vec<u8>>); 3] = [
        (
            "anthropic_sse_200",
            ApiFamily::AnthropicMessages,
            anthropic_stream(200),
        ),
        (
            "openai_chat_sse_200",
            ApiFamily::OpenAiChat,
            openai_chat_stream(200),
        ),
        (
            "responses_sse_200",
            ApiFamily::OpenAiResponses,
            responses_stream(200),
        ),
    ];
    for (name, family, events) in &streams {
        let total: usize = events.iter().map(Vec::len).sum();
        g.throughput(Throughput::Bytes(total as u64));
        // One event per feed: how the chunks arrive when the provider streams slowly.
        let per_event: Vec<&[u8]> = events.iter().map(Vec::as_slice).collect();
        assert!(
            feed_all(*family, true, &per_event),
            "{name}: usage not found"
        );
        g.bench_function(BenchmarkId::new(*name, "per_event"), |b| {
            b.iter(|| feed_all(*family, true, black_box(&per_event)))
        });
        // Arbitrary 1,460-byte splits (TCP segments), cutting events anywhere.
        let all: Vec<u8> = events.concat();
        let split: Vec<&[u8]> = all.chunks(1460).collect();
        g.bench_function(BenchmarkId::new(*name, "split_1460"), |b| {
            b.iter(|| feed_all(*family, true, black_box(&split)))
        });
    }
    let body = serde_json::to_vec(&json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
        "content": [{"type": "text", "text": prose(9, 4000)}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 19000, "cache_creation_input_tokens": 120,
                  "cache_read_input_tokens": 18000, "output_tokens": 900}
    }))
    .unwrap_or_default();
    g.throughput(Throughput::Bytes(body.len() as u64));
    assert!(feed_all(ApiFamily::AnthropicMessages, false, &[&body]));
    g.bench_function("anthropic_json_4k", |b| {
        b.iter(|| feed_all(ApiFamily::AnthropicMessages, false, &[black_box(&body)]))
    });
    g.finish();
}

fn peek(c: &mut Criterion) {
    let mut g = c.benchmark_group("peek");
    let cc = claude_code_body();
    assert!(
        (70_000..95_000).contains(&cc.len()),
        "the Claude Code body should be about 80 KB, is {}",
        cc.len()
    );
    let peeked = peek_request(&cc);
    assert!(matches!(&peeked, Ok(p) if p.model.as_deref() == Some("claude-opus-4-8") && p.stream));
    g.throughput(Throughput::Bytes(cc.len() as u64));
    g.bench_function("claude_code_80k", |b| {
        b.iter(|| peek_request(black_box(&cc)))
    });
    g.bench_function("with_model_claude_code_80k", |b| {
        b.iter(|| with_model(black_box(&cc), "claude-opus-4-8-20260101"))
    });
    // The same, spliced where the peek (made once, as the server has it) found `model`.
    let Ok(cc_peek) = peek_body(&cc) else {
        panic!("the bench body `cc` does not peek")
    };
    assert!(cc_peek.splices());
    g.bench_function("rewrite_model_claude_code_80k", |b| {
        b.iter(|| black_box(&cc_peek).rewrite(Some("claude-opus-4-8-20260101"), false))
    });
    // An OpenAI chat whose first user message is 64 KiB of code (a coding agent's opening):
    // the peek also delimits that message for session detection.
    let code = code_chat_body(64 << 10);
    assert!(peek_request(&code).is_ok_and(|p| p.session.opening.is_some()));
    g.throughput(Throughput::Bytes(code.len() as u64));
    g.bench_function("chat_code_64k", |b| {
        b.iter(|| peek_request(black_box(&code)))
    });
    // The strings of that body, each passed over: stopping at every escape (`next_special`, as
    // the peek and the usage scanner did) or 64 bytes at a time as bit masks (`string_end`).
    g.bench_function("strings_code_64k_next_special", |b| {
        b.iter(|| strings_by_next_special(black_box(&code)))
    });
    g.bench_function("strings_code_64k_string_end", |b| {
        b.iter(|| strings_by_string_end(black_box(&code)))
    });
    let small = small_chat_body();
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function("chat_small", |b| b.iter(|| peek_request(black_box(&small))));
    g.bench_function("with_include_usage_chat_small", |b| {
        b.iter(|| with_include_usage(black_box(&small)))
    });
    // The upstream body of an OpenAI chat stream that did not ask for usage: the two calls the
    // server made (each reading the body again), against one splice where the peek found the
    // fields; usage only, and with `openai/…` made the bare model id too.
    let Ok(small_peek) = peek_body(&small) else {
        panic!("the bench body `small` does not peek")
    };
    assert!(small_peek.splices());
    g.bench_function("rewrite_include_usage_chat_small", |b| {
        b.iter(|| black_box(&small_peek).rewrite(None, true))
    });
    let both = |body: &[u8]| with_include_usage(&with_model(body, "gpt-4o-mini")?);
    g.bench_function("with_model_and_include_usage_chat_small", |b| {
        b.iter(|| both(black_box(&small)))
    });
    g.bench_function("rewrite_model_and_include_usage_chat_small", |b| {
        b.iter(|| black_box(&small_peek).rewrite(Some("gpt-4o-mini"), true))
    });
    let Ok(code_peek) = peek_body(&code) else {
        panic!("the bench body `code` does not peek")
    };
    assert!(code_peek.splices());
    g.throughput(Throughput::Bytes(code.len() as u64));
    g.bench_function("with_include_usage_chat_code_64k", |b| {
        b.iter(|| with_include_usage(black_box(&code)))
    });
    g.bench_function("rewrite_include_usage_chat_code_64k", |b| {
        b.iter(|| black_box(&code_peek).rewrite(None, true))
    });
    g.bench_function("with_model_and_include_usage_chat_code_64k", |b| {
        b.iter(|| both(black_box(&code)))
    });
    g.bench_function("rewrite_model_and_include_usage_chat_code_64k", |b| {
        b.iter(|| black_box(&code_peek).rewrite(Some("gpt-4o-mini"), true))
    });
    g.finish();
}

fn routing(c: &mut Criterion) {
    let text = r#"{
      "providers": {
        "openai": {"baseurl": "http://127.0.0.1:9", "apikey": "k", "models": ["gpt-4o-mini", "gpt-4o", "o3", "text-embedding-3-small"],
                   "compatibility": {"openai_chat": true, "openai_responses": true}},
        "anthropic": {"baseurl": "http://127.0.0.1:9", "apikey": "k", "authorization": "x-api-key",
                      "models": ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-8"], "compatibility": {"anthropic_messages": true}},
        "local": {"baseurl": "http://127.0.0.1:9", "apikey": "k", "models": ["llama-3.3-70b", "qwen-3-32b", "gpt-4o-mini"]},
      },
      "grants": [{"src": ["*"], "app": {"tailscale.com/cap/aperture": [{"role": "user"}, {"models": "**"}]}}],
    }"#;
    let env: HashMap<String, String> = HashMap::new();
    let config = match iris_config::load(text, &env) {
        Ok(l) => l.config,
        Err(d) => panic!("bench config invalid: {d:?}"),
    };
    let table = RouteTable::new(&config);
    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(1));
    g.bench_function("resolve_bare", |b| {
        b.iter(|| table.resolve(black_box("claude-sonnet-4-5"), ApiFamily::AnthropicMessages))
    });
    g.bench_function("resolve_qualified", |b| {
        b.iter(|| table.resolve(black_box("local/gpt-4o-mini"), ApiFamily::OpenAiChat))
    });
    g.bench_function("resolve_unknown", |b| {
        b.iter(|| table.resolve(black_box("nope-1"), ApiFamily::OpenAiChat))
    });
    g.finish();
}

criterion_group!(benches, usage, peek, routing);
criterion_main!(benches);
