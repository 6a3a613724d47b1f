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
//!   `peek::peek_request_by_serde` answers, result or error;
//! - `PeekedBody::rewrite` (one splice where the peek found the fields) means what `with_model` then
//!   `with_include_usage` mean: the same JSON value, or the same error; every top-level member
//!   it does not rewrite keeps its exact text; without spots, it is the two calls byte for byte.
#![no_main]

use std::collections::BTreeMap;

use iris_providers::peek::{peek_request_by_serde, rewrite_by_rebuilding};
use iris_providers::{peek_body, peek_request, with_include_usage, with_model};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use serde_json::value::RawValue;

/// The top-level members of `text` other than `model` and `stream_options`, each with its exact
/// text (of a repeated key the last); `None` when `text` is not an object serde reads.
fn kept(text: &[u8]) -> Option<BTreeMap<String, String>> {
    let mut all: BTreeMap<String, &RawValue> = serde_json::from_slice(text).ok()?;
    all.remove("model");
    all.remove("stream_options");
    Some(
        all.into_iter()
            .map(|(k, v)| (k, v.get().to_owned()))
            .collect(),
    )
}

fuzz_target!(|data: &[u8]| {
    let (body, model) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (
            &data[..i],
            String::from_utf8_lossy(&data[i + 1..]).into_owned(),
        ),
        None => (data, "provider-model".to_owned()),
    };
    let peeked = peek_body(body);
    assert_eq!(
        peeked
            .as_ref()
            .map(|p| p.peek.clone())
            .map_err(Clone::clone),
        peek_request_by_serde(body),
        "the fast path and serde differ"
    );
    let rewritten_model = with_model(body, &model);
    let rewritten_usage = with_include_usage(body);
    let Ok(spliceable) = peeked else {
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
    let peeked = &spliceable.peek;
    let original: Option<Value> = serde_json::from_slice(body).ok();

    for new_model in [Some(model.as_str()), None] {
        let got = spliceable.rewrite(new_model, true);
        let want = rewrite_by_rebuilding(body, peeked, new_model, true);
        match (got, want) {
            (Ok(Some(got)), Ok(Some(want))) => {
                if !spliceable.splices() {
                    assert_eq!(got, want, "without spots, rewrite is not the two calls");
                }
                let p = peek_request(&got)
                    .unwrap_or_else(|e| panic!("rewrite produced a body the peek refuses: {e}"));
                assert_eq!(p.model.as_deref(), new_model.or(peeked.model.as_deref()));
                assert_eq!(p.include_usage, Some(true));
                assert_eq!(p.stream, peeked.stream);
                let value = |b: &[u8]| serde_json::from_slice::<Value>(b).ok();
                assert_eq!(
                    value(&got),
                    value(&want),
                    "rewrite and the two calls differ"
                );
                assert_eq!(kept(&got), kept(body), "rewrite changed another member");
            }
            (Ok(None), Ok(None)) => {}
            (Err(got), Err(want)) => assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&want),
                "rewrite fails otherwise than the two calls: {got} / {want}"
            ),
            (got, want) => panic!("rewrite: {got:?}, the two calls: {want:?}"),
        }
    }

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
