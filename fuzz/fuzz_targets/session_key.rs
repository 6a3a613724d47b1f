//! Session detection from the raw request body (`iris_capture::session_key_from_body`, one pass:
//! the client id fields and, for OpenAI chat, the conversation's opening) against reading the
//! whole body as a `serde_json::Value` first (`iris_capture::session_key`, the plain definition).
//! Input: the request body; a first byte 0xFF (never valid JSON) is a flags byte that picks the
//! API family (bit 0: Anthropic Messages instead of OpenAI chat) and the Codex markers (bit 1).
//!
//! Properties: for every body that is JSON, both readings give the same session (kind and id);
//! from the request peek's parts with a fingerprint cache kept across inputs
//! (`session_key_from_parts`, as the observer reads it), the session is the same as without.
//! (A body serde_json cannot read as a `Value` may still be read by the one pass: it skips
//! strings without decoding their escapes, as the request peek does, so a lone surrogate escape
//! such as `"\ud800"` in a field neither of them reads is accepted by both. Such a request is
//! forwarded, and its session comes from the fields the pass did read; there is no `Value`
//! reading to compare it with.)
#![no_main]

use std::cell::RefCell;

use iris_capture::{
    FingerprintCache, HeaderList, session_key, session_key_from_body, session_key_from_parts,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

thread_local! {
    static CACHE: RefCell<FingerprintCache> = RefCell::new(FingerprintCache::new(256));
}

fuzz_target!(|data: &[u8]| {
    let (flags, body) = match data.split_first() {
        Some((&0xFF, rest)) => (
            rest.first().copied().unwrap_or(0),
            rest.get(1..).unwrap_or(&[]),
        ),
        _ => (0, data),
    };
    let family = if flags & 1 == 1 {
        "anthropic_messages"
    } else {
        "openai_chat"
    };
    let headers: HeaderList = if flags & 2 == 2 {
        [("originator", "codex_cli_rs")].into_iter().collect()
    } else {
        HeaderList::new()
    };
    let fast = session_key_from_body(family, &headers, body, "alice@example.com", "r1");
    // As the server reads it: the peek's parts when the peek accepts the body.
    let parts = iris_providers::peek_request(body)
        .ok()
        .map(|p| p.session)
        .or_else(|| iris_providers::session_parts(body));
    let cached = CACHE.with(|c| {
        session_key_from_parts(
            family,
            &headers,
            body,
            parts.as_ref(),
            "alice@example.com",
            "r1",
            Some(&mut c.borrow_mut()),
        )
    });
    assert_eq!(cached, fast, "the fingerprint cache changed the session");
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let slow = session_key(family, &headers, &v, "alice@example.com", "r1");
        assert_eq!(
            fast, slow,
            "one-pass and whole-Value session detection differ"
        );
    }
    assert!(fast.id.bytes().all(|b| b.is_ascii_graphic()), "{}", fast.id);
});
