//! The request-body peek (`iris_providers::peek_request`) and the two rewrites the server makes
//! before forwarding (`with_model`, `with_include_usage`). Input: the request body; when it
//! contains a 0xFF byte (never valid in JSON) the part after the first one is the model name for
//! `with_model`.
//!
//! Properties (a gateway that checks one `model` while the provider reads another is a policy
//! bypass, so the rewrites are checked against the peek):
//! - after `with_model(body, m)`, the peek reads exactly `m` as the model, and `stream` and
//!   `include_usage` as before; the rewritten body is valid JSON equal to the original with
//!   `model` set to `m`;
//! - after `with_include_usage(body)`, the peek reads `include_usage: true` and the same `model`
//!   and `stream`; the JSON is otherwise unchanged;
//! - a rewrite never succeeds on a body the peek refuses;
//! - the peek's fast path agrees with serde: `peek_request` answers exactly what
//!   `peek::peek_request_by_serde` answers, result or error.
#![no_main]

use iris_providers::peek::peek_request_by_serde;
use iris_providers::{peek_request, with_include_usage, with_model};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let (body, model) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (
            &data[..i],
            String::from_utf8_lossy(&data[i + 1..]).into_owned(),
        ),
        None => (data, "provider-model".to_owned()),
    };
    let peeked = peek_request(body);
    assert_eq!(peeked, peek_request_by_serde(body), "the fast path and serde differ");
    let rewritten_model = with_model(body, &model);
    let rewritten_usage = with_include_usage(body);
    let Ok(peeked) = peeked else {
        // The server never rewrites a body the peek refused; a rewrite may still succeed on one
        // (it reads only its own key), but its result must not be something the peek accepts
        // with a different model than the rewrite wrote.
        if let Ok(out) = rewritten_model
            && let Ok(p) = peek_request(&out)
        {
            assert_eq!(p.model.as_deref(), Some(model.as_str()));
        }
        return;
    };
    let original: Option<Value> = serde_json::from_slice(body).ok();

    match rewritten_model {
        Ok(out) => {
            let p = peek_request(&out)
                .unwrap_or_else(|e| panic!("with_model produced a body the peek refuses: {e}"));
            assert_eq!(
                p.model.as_deref(),
                Some(model.as_str()),
                "model after rewrite"
            );
            assert_eq!(p.stream, peeked.stream);
            assert_eq!(p.include_usage, peeked.include_usage);
            if let Some(Value::Object(mut want)) = original.clone() {
                want.insert("model".to_owned(), Value::String(model.clone()));
                let got: Value = serde_json::from_slice(&out)
                    .unwrap_or_else(|e| panic!("with_model produced invalid JSON: {e}"));
                assert_eq!(got, Value::Object(want), "with_model changed other members");
            }
        }
        Err(e) => panic!("with_model failed on a body the peek accepted: {e}"),
    }

    // The peek reads `stream_options` without judging its other members; the rewrite parses
    // them, so it may refuse (e.g. a duplicated member inside `stream_options`). The server then
    // answers 400, which is correct; only a rewrite that succeeds is checked.
    if let Ok(out) = rewritten_usage {
        let p = peek_request(&out)
            .unwrap_or_else(|e| panic!("with_include_usage produced a body the peek refuses: {e}"));
        assert_eq!(p.include_usage, Some(true));
        assert_eq!(p.model, peeked.model);
        assert_eq!(p.stream, peeked.stream);
        if let Some(Value::Object(mut want)) = original {
            let options = want
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Default::default()));
            if options.is_null() {
                *options = Value::Object(Default::default());
            }
            if let Value::Object(o) = options {
                o.insert("include_usage".to_owned(), Value::Bool(true));
            }
            let got: Value = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("with_include_usage produced invalid JSON: {e}"));
            assert_eq!(
                got,
                Value::Object(want),
                "with_include_usage changed other members"
            );
        }
    }
});
