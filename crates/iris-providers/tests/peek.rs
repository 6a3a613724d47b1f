//! Request peeking and top-level rewrites.

use iris_providers::peek::rewrite_by_rebuilding;
use iris_providers::{
    PeekError, RequestPeek, peek_body, peek_request, with_include_usage, with_model,
};
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
        assert_eq!(routing(peek(body)), Ok(want), "{body}");
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

// --- `rewrite`: the upstream body in one splice -----------------------------------------------

/// The upstream body the way the server made it before `rewrite`: `with_model`, then
/// `with_include_usage` unless the client asked for usage.
fn two_calls(body: &[u8], model: Option<&str>, usage: bool) -> Result<Option<Vec<u8>>, PeekError> {
    rewrite_by_rebuilding(body, &peek_request(body)?, model, usage)
}

/// `rewrite` of `body`, and a check that it means what the two calls mean.
fn spliced(body: &str, model: Option<&str>, usage: bool) -> Option<String> {
    let p = peek_body(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
    let got = p
        .rewrite(model, usage)
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    let want = two_calls(body.as_bytes(), model, usage).unwrap_or_else(|e| panic!("{body}: {e}"));
    let value = |b: &Vec<u8>| {
        serde_json::from_slice::<Value>(b)
            .unwrap_or_else(|e| panic!("{body}: {e}: {}", String::from_utf8_lossy(b)))
    };
    assert_eq!(got.as_ref().map(value), want.as_ref().map(value), "{body}");
    got.map(|b| String::from_utf8(b).unwrap_or_else(|e| panic!("{body}: {e}")))
}

#[test]
fn rewrite_splices_include_usage_into_every_shape_of_stream_options() {
    let cases: &[(&str, &str)] = &[
        // Absent: added at the end, after a comma only when there are members.
        (
            r#"{"model":"m","stream":true}"#,
            r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        ),
        ("{}", r#"{"stream_options":{"include_usage":true}}"#),
        (
            " { \n} \n",
            " { \n\"stream_options\":{\"include_usage\":true}} \n",
        ),
        // `null` becomes the object, where it was.
        (
            r#"{"stream_options":null,"model":"m"}"#,
            r#"{"stream_options":{"include_usage":true},"model":"m"}"#,
        ),
        (
            r#"{"stream_options" : null , "model":"m"}"#,
            r#"{"stream_options" : {"include_usage":true} , "model":"m"}"#,
        ),
        // An empty object gets the member, without a comma.
        (
            r#"{"stream_options":{},"model":"m"}"#,
            r#"{"stream_options":{"include_usage":true},"model":"m"}"#,
        ),
        (
            r#"{"stream_options":{ },"model":"m"}"#,
            r#"{"stream_options":{ "include_usage":true},"model":"m"}"#,
        ),
        // Other members are kept as they were, the new one goes last.
        (
            r#"{"model":"m","stream_options":{"include_obfuscation":false, "x": [1, 2.50]}}"#,
            r#"{"model":"m","stream_options":{"include_obfuscation":false, "x": [1, 2.50],"include_usage":true}}"#,
        ),
        // An `include_usage` deeper down is not the one.
        (
            r#"{"stream_options":{"x":{"include_usage":false}}}"#,
            r#"{"stream_options":{"x":{"include_usage":false},"include_usage":true}}"#,
        ),
        // `false` and `null` are replaced where they are.
        (
            r#"{"stream_options":{"include_usage":false,"include_obfuscation":false}}"#,
            r#"{"stream_options":{"include_usage":true,"include_obfuscation":false}}"#,
        ),
        (
            r#"{"stream_options":{"a":1,"include_usage" :null }}"#,
            r#"{"stream_options":{"a":1,"include_usage" :true }}"#,
        ),
        // Decoys in other members are left alone.
        (
            r#"{"tools":[{"model":"x","stream_options":null}],"metadata":{"stream_options":1}}"#,
            r#"{"tools":[{"model":"x","stream_options":null}],"metadata":{"stream_options":1},"stream_options":{"include_usage":true}}"#,
        ),
    ];
    for (body, want) in cases {
        assert_eq!(spliced(body, None, true).as_deref(), Some(*want), "{body}");
        // Taken apart by the fast path, not rebuilt.
        assert!(peek_body(body.as_bytes()).unwrap().splices(), "{body}");
    }
    // Already asked for: nothing to do.
    for body in [
        r#"{"stream_options":{"include_usage":true}}"#,
        r#"{"stream_options":{"include_usage":true},"model":"m"}"#,
    ] {
        assert_eq!(spliced(body, None, true), None, "{body}");
    }
    // Nothing asked: nothing to do.
    assert_eq!(spliced(r#"{"model":"m"}"#, None, false), None);
}

#[test]
fn rewrite_splices_the_model() {
    let cases: &[(&str, &str, bool, &str)] = &[
        (
            r#"{"messages":[],"model":"openai/gpt-4o"}"#,
            "gpt-4o",
            false,
            r#"{"messages":[],"model":"gpt-4o"}"#,
        ),
        (r#"{}"#, "m", false, r#"{"model":"m"}"#),
        (r#"{"a":1}"#, "m", false, r#"{"a":1,"model":"m"}"#),
        // Escaped as JSON.
        (
            r#"{"model":"x"}"#,
            "a\"b\\c\u{1F600}\u{1}",
            false,
            "{\"model\":\"a\\\"b\\\\c\u{1F600}\\u0001\"}",
        ),
        // Both: the model where it was, usage after it, or both added in the two calls' order.
        (
            r#"{"model":"openai/gpt-4o","stream":true}"#,
            "gpt-4o",
            true,
            r#"{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}"#,
        ),
        (
            r#"{"stream_options":{"include_usage":false},"model":"openai/gpt-4o"}"#,
            "gpt-4o",
            true,
            r#"{"stream_options":{"include_usage":true},"model":"gpt-4o"}"#,
        ),
        (
            r#"{"stream_options":null,"model":"p/m"}"#,
            "m",
            true,
            r#"{"stream_options":{"include_usage":true},"model":"m"}"#,
        ),
        (
            "{}",
            "m",
            true,
            r#"{"model":"m","stream_options":{"include_usage":true}}"#,
        ),
        (
            r#"{"stream":true}"#,
            "m",
            true,
            r#"{"stream":true,"model":"m","stream_options":{"include_usage":true}}"#,
        ),
        (
            r#"{"stream_options":{"include_usage":true},"model":"p/m"}"#,
            "m",
            true,
            r#"{"stream_options":{"include_usage":true},"model":"m"}"#,
        ),
    ];
    for (body, model, usage, want) in cases {
        assert_eq!(
            spliced(body, Some(model), *usage).as_deref(),
            Some(*want),
            "{body}"
        );
    }
}

#[test]
fn rewrite_keeps_whitespace_and_everything_else() {
    let body = "{\n  \"model\" :\t\"openai/gpt-4o\" ,\n  \"seed\": 123456789012345678901234567890,\n  \"stream\": true,\r\n  \"stream_options\" : {\n    \"include_usage\" :  false ,\n    \"x\": 1.00000000000000000001\n  },\n  \"messages\": [ {\"role\": \"user\", \"content\": \"caf\\u00e9 \\\"q\\\"\\n\"} ]\n}\n";
    let want = body
        .replace("\"openai/gpt-4o\"", "\"gpt-4o\"")
        .replace(":  false", ":  true");
    assert_eq!(spliced(body, Some("gpt-4o"), true), Some(want));

    // An 90 KB pretty-printed body: every other member's text, in its place.
    let big = big_body();
    let out = spliced(&big, Some("claude-opus-4-8-20261015"), true).unwrap();
    let model_at = big.rfind("\"claude-opus-4-8\"").unwrap();
    let end = big.trim_end().len() - 1;
    let want = format!(
        "{}\"claude-opus-4-8-20261015\"{},\"stream_options\":{{\"include_usage\":true}}{}",
        &big[..model_at],
        &big[model_at + "\"claude-opus-4-8\"".len()..end],
        &big[end..]
    );
    assert_eq!(out, want);
    assert_eq!(
        top_level_keys(out.as_bytes()).len(),
        top_level_keys(big.as_bytes()).len() + 1
    );
}

#[test]
fn rewrite_rebuilds_what_the_peek_read_through_serde() {
    // Bodies the fast path gives up on (escaped keys, an escaped model, a number where serde
    // reads any value): the two calls, byte for byte.
    for body in [
        r#"{"mo\u0064el":"a","stream":true}"#,
        r#"{"model":"p/m","stream_options":{"include\u005fusage":false,"a":1}}"#,
        r#"{"model":"p/m","stream_opti\u006fns":null}"#,
        r#"{"x\"y":1,"model":"p/m"}"#,
        r#"{"model":"caf\u00e9","stream":true}"#,
        r#"{"model":"p/m","messages":[{"role":5,"content":"x"}],"stream_options":{}}"#,
    ] {
        let p = peek_body(body.as_bytes()).unwrap();
        assert!(!p.splices(), "{body}");
        for (model, usage) in [(Some("m"), true), (None, true), (Some("m"), false)] {
            let got = p.rewrite(model, usage).unwrap();
            assert_eq!(
                got,
                two_calls(body.as_bytes(), model, usage).unwrap(),
                "{body}"
            );
        }
    }
    assert_eq!(
        peek_body(br#"{"model":"p/m","messages":[{"role":5}]}"#)
            .unwrap()
            .rewrite(Some("m"), true)
            .unwrap()
            .as_deref(),
        Some(
            &br#"{"model":"m","messages":[{"role":5}],"stream_options":{"include_usage":true}}"#[..]
        )
    );
}

/// Every combination of the shapes the splice handles, in every order and spacing, against the
/// two calls: the same JSON value, every member not rewritten kept as its exact text.
#[test]
fn rewrite_means_the_two_calls_over_every_combination() {
    const OPTIONS: &[Option<&str>] = &[
        None,
        Some("null"),
        Some("{}"),
        Some("{ }"),
        Some(r#"{"include_usage":true}"#),
        Some(r#"{"include_usage":false}"#),
        Some(r#"{"include_usage":null}"#),
        Some(r#"{"a":1,"include_usage":false,"b":[1, 2.50]}"#),
        Some(r#"{"include_obfuscation":false}"#),
        Some(r#"{"x":{"include_usage":1},"y":"include_usage"}"#),
    ];
    const OTHERS: &[&str] = &[
        r#""messages":[{"role":"user","content":"hi \"there\"\n"}]"#,
        r#""seed":123456789012345678901234567890"#,
        r#""tools":{"model":"fake","stream_options":null}"#,
        r#""stream":true"#,
    ];
    const SPACES: &[&str] = &["", " ", "\n  ", "\t\r\n"];
    const MODELS: &[Option<&str>] = &[None, Some("gpt-4o"), Some("a\"b\\c\u{1F600}")];
    let mut checked = 0;
    for has_model in [false, true] {
        for options in OPTIONS {
            for others in 0..=OTHERS.len() {
                for rotate in 0..4 {
                    for space in SPACES {
                        let mut members: Vec<String> =
                            OTHERS[..others].iter().map(|m| m.to_string()).collect();
                        if has_model {
                            members.push(format!("\"model\"{space}:{space}\"openai/gpt-4o\""));
                        }
                        if let Some(o) = options {
                            members.push(format!("\"stream_options\":{space}{o}"));
                        }
                        if members.is_empty() && rotate > 0 {
                            continue;
                        }
                        let len = members.len().max(1);
                        members.rotate_left(rotate % len);
                        let body = format!(
                            "{space}{{{space}{}{space}}}{space}",
                            members.join(&format!("{space},{space}"))
                        );
                        for model in MODELS {
                            for usage in [false, true] {
                                check_against_two_calls(&body, *model, usage);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(checked > 3_000, "{checked}");
}

fn check_against_two_calls(body: &str, model: Option<&str>, usage: bool) {
    let p = peek(body).unwrap_or_else(|e| panic!("{body}: {e}"));
    assert!(
        peek_body(body.as_bytes()).is_ok_and(|p| p.splices()),
        "the fast path reads {body}"
    );
    let Some(out) = spliced(body, model, usage) else {
        assert!(model.is_none() && (!usage || p.include_usage == Some(true)));
        return;
    };
    let again = peek(&out).unwrap_or_else(|e| panic!("{out}: {e}"));
    assert_eq!(
        again.model.as_deref(),
        model.or(p.model.as_deref()),
        "{out}"
    );
    assert_eq!(again.stream, p.stream);
    if usage {
        assert_eq!(again.include_usage, Some(true), "{out}");
    } else {
        assert_eq!(again.include_usage, p.include_usage, "{out}");
    }
    let routed = ["model", "stream_options"];
    assert_eq!(
        raw_members(&out, &routed),
        raw_members(body, &routed),
        "{body} → {out}"
    );
    let options = |t: &str| {
        raw_members(t, &[])
            .into_iter()
            .find(|(k, v)| k == "stream_options" && v.starts_with('{'))
            .map(|(_, v)| raw_members(&v, &["include_usage"]))
    };
    if let Some(before) = options(body) {
        assert_eq!(options(&out), Some(before), "{body} → {out}");
    }
    // Where nothing was spliced, nothing moved: the text around the edits is the body's.
    let lead = body.len() - body.trim_start().len();
    assert_eq!(&out[..lead], &body[..lead]);
    let trail = body.len() - body.trim_end().len();
    assert_eq!(&out[out.len() - trail..], &body[body.len() - trail..]);
}

/// The members of the object `text` but those named `except`, in order, each with its exact
/// text (read without `serde_json::Map`, which sorts and takes the last of a repeated key).
fn raw_members(text: &str, except: &[&str]) -> Vec<(String, String)> {
    struct Members<'x>(&'x [&'x str]);
    impl<'de> serde::de::Visitor<'de> for Members<'_> {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut all = Vec::new();
            while let Some(k) = m.next_key::<String>()? {
                let v: &serde_json::value::RawValue = m.next_value()?;
                if !self.0.contains(&k.as_str()) {
                    all.push((k, v.get().to_owned()));
                }
            }
            Ok(all)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserializer::deserialize_map(&mut de, Members(except))
        .unwrap_or_else(|e| panic!("not an object: {e}: {text}"))
}
