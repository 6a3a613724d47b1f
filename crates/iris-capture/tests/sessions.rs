//! Session grouping on the request shapes real clients send (`tests/fixtures/client-requests/`,
//! observed from Claude Code 2.1 and Codex 0.169), and OpenAI chat conversations grouped by
//! fingerprint.

// Test helpers outside #[test] fns panic on bad fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use iris_capture::{HeaderList, SessionKey, SessionKind, session_key};
use serde_json::{Value, json};

fn client_request(name: &str) -> (HeaderList, Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/client-requests")
        .join(name);
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let headers = v["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
        .collect();
    (headers, v["body"].clone())
}

fn key(id: &str, kind: SessionKind) -> SessionKey {
    SessionKey {
        id: id.to_owned(),
        kind,
    }
}

#[test]
fn claude_code_request_uses_the_session_in_metadata_user_id() {
    let (headers, body) = client_request("claude-code-messages.json");
    let want = key(
        "cc_d21b5422-124d-4bc9-9e63-ee2ff6f933ea",
        SessionKind::ClaudeCode,
    );
    assert_eq!(
        session_key(
            "anthropic_messages",
            &headers,
            &body,
            "alice@example.com",
            "req-1"
        ),
        want
    );
    // Body alone (the header stripped by some proxy) and header alone both give the same id.
    let no_header: HeaderList = headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("x-claude-code-session-id"))
        .collect();
    assert_eq!(
        session_key(
            "anthropic_messages",
            &no_header,
            &body,
            "alice@example.com",
            "req-2"
        ),
        want
    );
    let mut no_metadata = body.clone();
    no_metadata.as_object_mut().unwrap().remove("metadata");
    assert_eq!(
        session_key(
            "anthropic_messages",
            &headers,
            &no_metadata,
            "alice@example.com",
            "req-3"
        ),
        want
    );
    // The title request Claude Code sometimes sends has the same metadata: same session.
    let title = json!({"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "title this"}], "metadata": body["metadata"].clone()});
    assert_eq!(
        session_key(
            "anthropic_messages",
            &no_header,
            &title,
            "alice@example.com",
            "req-4"
        ),
        want
    );
}

#[test]
fn codex_request_uses_the_session_id_header() {
    let (headers, body) = client_request("codex-responses.json");
    let want = key(
        "cx_01a2031d-54e5-7191-92b3-5c780012323f",
        SessionKind::Codex,
    );
    assert_eq!(
        session_key(
            "openai_responses",
            &headers,
            &body,
            "bob@example.com",
            "req-1"
        ),
        want
    );
    // Without `session-id`: from x-codex-turn-metadata; without that too: prompt_cache_key.
    let without = |names: &[&str]| -> HeaderList {
        headers
            .iter()
            .filter(|(n, _)| !names.iter().any(|x| n.eq_ignore_ascii_case(x)))
            .collect()
    };
    assert_eq!(
        session_key(
            "openai_responses",
            &without(&["session-id"]),
            &body,
            "bob@example.com",
            "r"
        ),
        want
    );
    assert_eq!(
        session_key(
            "openai_responses",
            &without(&["session-id", "x-codex-turn-metadata"]),
            &body,
            "bob@example.com",
            "r"
        ),
        want
    );
}

fn chat(messages: Value, model: &str) -> Value {
    json!({"model": model, "messages": messages, "stream": true})
}

#[test]
fn turns_of_one_chat_share_a_fingerprint() {
    let system = json!({"role": "system", "content": "You are a terse assistant."});
    let u1 = json!({"role": "user", "content": "What is the capital of France?"});
    let a1 = json!({"role": "assistant", "content": "Paris."});
    let u2 = json!({"role": "user", "content": "And of Spain?"});
    let a2 = json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]});
    let t2 = json!({"role": "tool", "tool_call_id": "call_1", "content": "Madrid"});
    let turns = [
        chat(json!([system, u1]), "gpt-4o"),
        chat(json!([system, u1, a1, u2]), "gpt-4o"),
        // The client switched models and sent the first message as content parts with odd
        // whitespace: still the same conversation.
        chat(
            json!([system, {"role": "user", "content": [{"type": "text", "text": "What is the  capital of\nFrance? "}]}, a1, u2, a2, t2]),
            "gpt-4.1-mini",
        ),
    ];
    let keys: Vec<SessionKey> = turns
        .iter()
        .enumerate()
        .map(|(i, b)| {
            session_key(
                "openai_chat",
                &HeaderList::new(),
                b,
                "carol@example.com",
                &format!("req-{i}"),
            )
        })
        .collect();
    assert_eq!(keys[0].kind, SessionKind::Fingerprint);
    assert!(keys[0].id.starts_with("fp_"));
    assert_eq!(keys[0].id.len(), 3 + 32);
    assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
}

#[test]
fn different_conversations_and_people_do_not_share() {
    let sys = json!({"role": "system", "content": "You are a terse assistant."});
    let a = chat(
        json!([sys, {"role": "user", "content": "What is the capital of France?"}]),
        "gpt-4o",
    );
    let b = chat(
        json!([sys, {"role": "user", "content": "What is the capital of Peru?"}]),
        "gpt-4o",
    );
    let c = chat(
        json!([{"role": "system", "content": "You are verbose."}, {"role": "user", "content": "What is the capital of France?"}]),
        "gpt-4o",
    );
    let ka = session_key(
        "openai_chat",
        &HeaderList::new(),
        &a,
        "carol@example.com",
        "1",
    );
    let kb = session_key(
        "openai_chat",
        &HeaderList::new(),
        &b,
        "carol@example.com",
        "2",
    );
    let kc = session_key(
        "openai_chat",
        &HeaderList::new(),
        &c,
        "carol@example.com",
        "3",
    );
    let kd = session_key(
        "openai_chat",
        &HeaderList::new(),
        &a,
        "dave@example.com",
        "4",
    );
    assert_ne!(ka, kb);
    assert_ne!(ka, kc);
    assert_ne!(ka, kd, "two people never share a fingerprint session");
    // Moving text between the system and the user message is a different conversation.
    let e = chat(
        json!([{"role": "system", "content": "You are a terse assistant. What is"}, {"role": "user", "content": "the capital of France?"}]),
        "gpt-4o",
    );
    assert_ne!(
        ka,
        session_key(
            "openai_chat",
            &HeaderList::new(),
            &e,
            "carol@example.com",
            "5"
        )
    );
}

#[test]
fn requests_without_markers_are_single() {
    // No user message yet, another family, or no body at all.
    let cases = [
        (
            "openai_chat",
            json!({"messages": [{"role": "system", "content": "x"}]}),
        ),
        ("openai_responses", json!({"input": "hello"})),
        (
            "anthropic_messages",
            json!({"messages": [{"role": "user", "content": "hi"}]}),
        ),
        ("openai_embeddings", json!({"input": ["a", "b"]})),
        ("openai_chat", Value::Null),
    ];
    for (family, body) in cases {
        assert_eq!(
            session_key(
                family,
                &HeaderList::new(),
                &body,
                "erin@example.com",
                "01J9Z3"
            ),
            key("rq_01J9Z3", SessionKind::Single),
            "{family}: {body}"
        );
    }
}
