//! `iris_providers::UsageExtractor` on OpenAI chat-dialect answers: chat, legacy completions and
//! embeddings share the parser (`flags` bits 1-2 pick one; bit 0: SSE stream or JSON body). The
//! body is fed whole and in fuzzer-chosen chunks; both must give the same `Extracted`.
#![no_main]

use iris_fuzz::{Split, usage_split_invariant};
use iris_providers::ApiFamily;
use libfuzzer_sys::fuzz_target;

const FAMILIES: [ApiFamily; 3] = [
    ApiFamily::OpenAiChat,
    ApiFamily::OpenAiCompletions,
    ApiFamily::OpenAiEmbeddings,
];

fuzz_target!(|data: &[u8]| {
    let Some(split) = Split::parse(data) else {
        return;
    };
    let family = FAMILIES[usize::from(split.flags >> 1) % FAMILIES.len()];
    usage_split_invariant(family, &split);
});
