//! Reassembly of captured answers (`iris_capture::reassemble`): the final message and tool calls
//! rebuilt from an SSE stream (`StreamReassembler`, fed in fuzzer-chosen chunks and whole) or
//! from a JSON body (`reassemble_json`). `flags` bit 0: stream or JSON; bits 1-2: the dialect.
//!
//! Properties: the stream outcome does not depend on the cuts; the text kept never exceeds the
//! output budget; tool calls never exceed `MAX_TOOL_CALLS`.
#![no_main]

use iris_capture::reassemble::MAX_TOOL_CALLS;
use iris_capture::{StreamReassembler, reassemble_json};
use iris_fuzz::Split;
use libfuzzer_sys::fuzz_target;

const FAMILIES: [&str; 4] = [
    "anthropic_messages",
    "openai_chat",
    "openai_completions",
    "openai_responses",
];

fuzz_target!(|data: &[u8]| {
    let Some(split) = Split::parse(data) else {
        return;
    };
    let family = FAMILIES[usize::from(split.flags >> 1) % FAMILIES.len()];
    let budget = split.body.len();
    if split.flags & 1 == 0 {
        if let Some(r) = reassemble_json(family, split.body) {
            assert!(r.tool_calls.len() <= MAX_TOOL_CALLS);
        }
        return;
    }
    let Some(mut whole) = StreamReassembler::new(family, budget) else {
        return;
    };
    whole.feed(split.body);
    let whole = whole.finish();
    let Some(mut parts) = StreamReassembler::new(family, budget) else {
        return;
    };
    for c in split.chunks() {
        parts.feed(c);
    }
    let parts = parts.finish();
    assert_eq!(
        whole, parts,
        "reassembly depends on the cuts {:?}",
        split.cuts
    );
    let m = &whole.message;
    assert!(m.tool_calls.len() <= MAX_TOOL_CALLS);
    assert!(
        m.text.len() + m.thinking.len() <= budget.max(1) * 4,
        "kept {} bytes from a {budget}-byte stream",
        m.text.len() + m.thinking.len()
    );
});
