//! Request peeking and top-level rewrites.

use iris_providers::{PeekError, RequestPeek, peek_request, with_include_usage, with_model};
use serde_json::Value;

fn peek(body: &str) -> Result<RequestPeek, PeekError> {
    peek_request(body.as_bytes())
}

/// What routes the request, without where the session fields are.
fn routing(p: Result<RequestPeek, PeekError>) -> Result<RequestPeek, PeekError> {
    p.map(|p| RequestPeek {
        session: Default::default(),
        ..p
    })
}

fn ok(model: Option<&str>, stream: bool, include_usage: Option<bool>) -> RequestPeek {
    RequestPeek {
        model: model.map(str::to_owned),
        stream,
        include_usage,
        session: Default::default(),
    }
}

#[test]
fn reads_model_stream_and_include_usage() {
    let cases = [
        (r#"{"model":"gpt-4o"}"#, ok(Some("gpt-4o"), false, None)),
        (
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}"#,
            ok(Some("gpt-4o"), true, Some(true)),
        ),
        (
            r#"{"stream":false,"stream_options":{"include_usage":false}}"#,
            ok(None, false, Some(false)),
        ),
        (
            r#"{"stream":null,"stream_options":null,"model":"m"}"#,
            ok(Some("m"), false, None),
        ),
        (
            r#"{"stream_options":{"include_obfuscation":false},"stream":true}"#,
            ok(None, true, None),
        ),
        (
            r#"{"stream_options":{"include_usage":null}}"#,
            ok(None, false, None),
        ),
        (
            " \n\t{ \"model\" : \"a b\" } \n",
            ok(Some("a b"), false, None),
        ),
        // Escapes are decoded, exactly as the provider will decode them.
        (
            r#"{"model":"caf\u00e9\"/\\"}"#,
            ok(Some("café\"/\\"), false, None),
        ),
        // A key spelled with an escape is the same key for every JSON parser.
        (r#"{"mo\u0064el":"x"}"#, ok(Some("x"), false, None)),
        // Model names are not normalised in any way.
        (
            r#"{"model":"  anthropic/../openai/x  "}"#,
            ok(Some("  anthropic/../openai/x  "), false, None),
        ),
        (r#"{}"#, ok(None, false, None)),
    ];
    for (body, want) in cases {
        assert_eq!(peek(body), Ok(want), "{body}");
    }
}

#[test]
fn bad_json_is_reported_with_position() {
    for body in [
        "",
        "   ",
        "{",
        r#"{"model":"x","#,
        r#"{"model":"x"} trailing"#,
        "[1,",
        "nul",
        "{'model':'x'}",
    ] {
        match peek(body) {
            Err(PeekError::NotJson(msg)) => {
                assert!(msg.contains("line 1 column"), "{body:?}: {msg}");
            }
            other => panic!("{body:?}: expected NotJson, got {other:?}"),
        }
    }
    let err = peek("{\n  \"model\": \"x\",\n  \"stream\": xyz\n}").unwrap_err();
    assert!(
        err.to_string().contains("line 3 column"),
        "error should point at line 3: {err}"
    );
}

#[test]
fn non_objects_are_rejected() {
    for (body, found) in [
        ("[]", "an array"),
        (r#"[{"model":"x"}]"#, "an array"),
        (r#""model""#, "a string"),
        ("42", "a number"),
        ("-1.5e3", "a number"),
        ("true", "a boolean"),
        ("null", "null"),
    ] {
        assert_eq!(peek(body), Err(PeekError::NotObject(found)), "{body}");
    }
    assert_eq!(
        PeekError::NotObject("an array").to_string(),
        "request body must be a JSON object, found an array"
    );
}

#[test]
fn model_must_be_a_string() {
    for (body, found) in [
        (r#"{"model":5}"#, "a number"),
        (r#"{"model":null}"#, "null"),
        (r#"{"model":true}"#, "a boolean"),
        (r#"{"model":["gpt-4o"]}"#, "an array"),
        (r#"{"model":{"id":"gpt-4o"}}"#, "an object"),
    ] {
        assert_eq!(peek(body), Err(PeekError::ModelNotString(found)), "{body}");
    }
}

#[test]
fn wrong_types_and_duplicates_are_invalid() {
    for (body, needle) in [
        (
            r#"{"stream":"true"}"#,
            "`stream` must be a boolean, found a string",
        ),
        (
            r#"{"stream":1}"#,
            "`stream` must be a boolean, found a number",
        ),
        (
            r#"{"stream_options":"x"}"#,
            "`stream_options` must be an object",
        ),
        (
            r#"{"stream_options":[]}"#,
            "`stream_options` must be an object",
        ),
        (
            r#"{"stream_options":{"include_usage":"yes"}}"#,
            "`stream_options.include_usage` must be a boolean",
        ),
        (r#"{"model":"a","model":"b"}"#, "duplicate field `model`"),
        (
            r#"{"model":"a","mo\u0064el":"b"}"#,
            "duplicate field `model`",
        ),
        (
            r#"{"stream":true,"stream":false}"#,
            "duplicate field `stream`",
        ),
        (
            r#"{"stream_options":{"include_usage":true,"include_usage":false}}"#,
            "duplicate field `stream_options.include_usage`",
        ),
    ] {
        match peek(body) {
            Err(e @ PeekError::InvalidField(_)) => {
                assert!(e.to_string().contains(needle), "{body}: {e}");
            }
            other => panic!("{body}: expected InvalidField, got {other:?}"),
        }
    }
}

/// A Claude-Code-sized request (~90 KB: system blocks, 25 tools, a long conversation) with the
/// fields iris reads placed last, and numbers that do not survive an f64 round trip.
fn big_body() -> String {
    let tools: Vec<Value> = (0..25)
        .map(|i| {
            serde_json::json!({
                "name": format!("Tool{i}"),
                "description": "Executes a given bash command in a persistent shell session with optional timeout, ensuring proper handling and security measures. Überprüfen Sie «Anführungszeichen» — 引用符 — \"quotes\" and \\backslashes\\.".repeat(6),
                "input_schema": {"type": "object", "properties": {"command": {"type": "string"}, "timeout": {"type": "number"}, "model": {"type": "string"}}, "required": ["command"], "additionalProperties": false, "$schema": "http://json-schema.org/draft-07/schema#"}
            })
        })
        .collect();
    let messages: Vec<Value> = (0..40)
        .map(|i| {
            serde_json::json!({
                "role": if i % 2 == 0 { "user" } else { "assistant" },
                "content": [{"type": "text", "text": format!("message {i}: {}", "Lorem ipsum dolor sit amet, 😀 consectetur {\"model\": \"fake\"} adipiscing elit. ".repeat(12)), "cache_control": {"type": "ephemeral"}}]
            })
        })
        .collect();
    let head = serde_json::json!({
        "messages": messages,
        "system": [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."}],
        "tools": tools,
        "metadata": {"user_id": "{\"device_id\":\"ab12\",\"account_uuid\":\"\",\"session_id\":\"d21b5422-124d-4bc9-9e63-ee2ff6f933ea\"}"},
        "max_tokens": 64000,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
    });
    let head = serde_json::to_string_pretty(&head).unwrap_or_default();
    let Some(head) = head.trim_end().strip_suffix('}') else {
        panic!("pretty JSON object ends with }}");
    };
    format!(
        "{head},\n  \"seed\": 123456789012345678901234567890,\n  \"temperature\": 1.00000000000000000001,\n  \"stream\": true,\n  \"model\": \"claude-opus-4-8\"\n}}\n"
    )
}

#[test]
fn large_body_is_peeked() {
    let body = big_body();
    assert!(body.len() > 85_000, "body is {} bytes", body.len());
    assert_eq!(
        routing(peek(&body)),
        Ok(ok(Some("claude-opus-4-8"), true, None))
    );
}

fn top_level_keys(body: &[u8]) -> Vec<String> {
    // Key order, read without serde_json::Map (which sorts).
    let mut keys = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    struct Keys<'a>(&'a mut Vec<String>);
    impl<'de> serde::de::Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<serde::de::IgnoredAny>()?;
                self.0.push(k);
            }
            Ok(())
        }
    }
    if let Err(e) = serde::Deserializer::deserialize_map(&mut de, Keys(&mut keys)) {
        panic!("not an object: {e}");
    }
    keys
}

#[test]
fn with_model_keeps_everything_else_exactly() {
    let body = big_body();
    let out = with_model(body.as_bytes(), "claude-opus-4-8-20261015").unwrap();
    let text = std::str::from_utf8(&out).unwrap();
    assert_eq!(
        routing(peek(text)),
        Ok(ok(Some("claude-opus-4-8-20261015"), true, None))
    );
    // Same members, same order, same values.
    assert_eq!(top_level_keys(&out), top_level_keys(body.as_bytes()));
    let mut a: Value = serde_json::from_str(&body).unwrap();
    let b: Value = serde_json::from_slice(&out).unwrap();
    a["model"] = Value::from("claude-opus-4-8-20261015");
    assert_eq!(a, b);
    // Numbers keep their exact text.
    assert!(text.contains("\"seed\":123456789012345678901234567890"));
    assert!(text.contains("\"temperature\":1.00000000000000000001"));
    // Every other member keeps its exact text, nested formatting included.
    let members: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(&body).unwrap();
    for (k, v) in members.iter().filter(|(k, _)| k.as_str() != "model") {
        assert!(
            text.contains(&format!("\"{k}\":{}", v.get())),
            "member {k} changed"
        );
    }
    assert!(
        members["tools"].get().contains('\n'),
        "fixture is pretty-printed"
    );
}

#[test]
fn with_model_escapes_and_adds() {
    let out = with_model(br#"{"messages":[],"model":"openai/gpt-4o"}"#, "gpt-4o").unwrap();
    assert_eq!(out, br#"{"messages":[],"model":"gpt-4o"}"#);
    let out = with_model(br#"{"messages":[]}"#, "a\"b\\c\u{1F600}").unwrap();
    assert_eq!(
        peek_request(&out).unwrap().model.as_deref(),
        Some("a\"b\\c\u{1F600}")
    );
    assert_eq!(with_model(b"{}", "m").unwrap(), br#"{"model":"m"}"#);
    // The escaped spelling of the key is the key: it is replaced, not duplicated.
    assert_eq!(
        with_model(br#"{"mo\u0064el":"a"}"#, "b").unwrap(),
        br#"{"model":"b"}"#
    );
    assert!(matches!(
        with_model(br#"{"model":"a","mo\u0064el":"b"}"#, "c"),
        Err(PeekError::InvalidField(_))
    ));
    assert!(matches!(
        with_model(b"[]", "m"),
        Err(PeekError::NotObject(_))
    ));
    assert!(matches!(with_model(b"{", "m"), Err(PeekError::NotJson(_))));
}

#[test]
fn with_include_usage_sets_only_that() {
    let cases: [(&str, &str); 6] = [
        (
            r#"{"model":"m","stream":true}"#,
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        ),
        (
            r#"{"stream_options":null,"model":"m"}"#,
            r#"{"stream_options":{"include_usage":true},"model":"m"}"#,
        ),
        (
            r#"{"stream_options":{},"model":"m"}"#,
            r#"{"stream_options":{"include_usage":true},"model":"m"}"#,
        ),
        (
            r#"{"model":"m","stream_options":{"include_obfuscation":false, "x": [1, 2.50]}}"#,
            r#"{"model":"m","stream_options":{"include_obfuscation":false,"x":[1, 2.50],"include_usage":true}}"#,
        ),
        (
            r#"{"stream_options":{"include_usage":false,"include_obfuscation":false}}"#,
            r#"{"stream_options":{"include_obfuscation":false,"include_usage":true}}"#,
        ),
        ("{}", r#"{"stream_options":{"include_usage":true}}"#),
    ];
    for (body, want) in cases {
        let out = with_include_usage(body.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(out.clone()).unwrap(), want, "{body}");
        assert_eq!(peek_request(&out).unwrap().include_usage, Some(true));
    }
    let big = big_body();
    let out = with_include_usage(big.as_bytes()).unwrap();
    let mut a: Value = serde_json::from_str(&big).unwrap();
    a["stream_options"] = serde_json::json!({"include_usage": true});
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), a);
    assert!(
        std::str::from_utf8(&out)
            .unwrap()
            .contains("\"seed\":123456789012345678901234567890")
    );
}

#[test]
fn with_include_usage_rejects_what_it_cannot_edit() {
    for body in [
        r#"{"stream_options":true}"#,
        r#"{"stream_options":"x"}"#,
        r#"{"stream_options":[]}"#,
        r#"{"stream_options":{},"stream_options":{}}"#,
    ] {
        assert!(
            matches!(
                with_include_usage(body.as_bytes()),
                Err(PeekError::InvalidField(_))
            ),
            "{body}"
        );
    }
    assert!(matches!(
        with_include_usage(b"42"),
        Err(PeekError::NotObject("a number"))
    ));
    assert!(matches!(
        with_include_usage(b"{\"a\":"),
        Err(PeekError::NotJson(_))
    ));
}

/// The peek notes where the session fields are, read as a `Value` reads them (the last of a
/// repeated key, nothing for an unexpected shape), and never fails because of them.
#[test]
fn session_parts_are_found_in_the_same_pass() {
    let body = r#"{"model":"m","metadata":1,"messages":[{"role":"developer","content" :  "d" },{"role":7,"content":"x"},"no",{"role":"system"},{"role":"user","role":"user","content":[1]},{"role":"user","content":"later"}],"metadata":{"user_id":"u"},"prompt_cache_key":"k"}"#;
    let p = peek(body).unwrap();
    let text = |r: &std::ops::Range<usize>| &body[r.clone()];
    assert_eq!(
        p.session.metadata.as_ref().map(text),
        Some(r#"{"user_id":"u"}"#)
    );
    assert_eq!(
        p.session.prompt_cache_key.as_ref().map(text),
        Some(r#""k""#)
    );
    let o = p.session.opening.as_ref().unwrap();
    let system: Vec<Option<&str>> = o.system.iter().map(|c| c.as_ref().map(text)).collect();
    assert_eq!(system, [Some(r#""d""#), None]);
    assert_eq!(
        o.first_user.as_ref().map(|c| c.as_ref().map(text)),
        Some(Some("[1]"))
    );
    assert_eq!(
        Some(p.session.clone()),
        iris_providers::session_parts(body.as_bytes())
    );

    // Shapes that are not what the fields should be: no opening messages, no failure.
    for body in [
        r#"{"model":"m","messages":{"role":"user"}}"#,
        r#"{"model":"m","messages":"hi","metadata":null}"#,
        r#"{"model":"m","messages":[[1],true,null,3.5,{"role":{"a":[]}}]}"#,
    ] {
        let p = peek(body).unwrap();
        assert!(
            p.session
                .opening
                .as_ref()
                .is_none_or(|o| o.first_user.is_none()),
            "{body}"
        );
    }
    let p = peek(r#"{"model":"m","messages":null}"#).unwrap();
    assert_eq!(p.session.opening, None);
    // The routing fields still refuse a duplicate; the session fields never do.
    assert!(peek(r#"{"model":"a","model":"b"}"#).is_err());
    assert!(peek(r#"{"model":"a","messages":[],"messages":[]}"#).is_ok());
}
