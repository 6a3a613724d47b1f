//! `iris_providers::UsageExtractor` on OpenAI Responses answers (`flags` bit 0: SSE stream or
//! JSON body). The body is fed whole and in fuzzer-chosen chunks; both must give the same
//! `Extracted`.
#![no_main]

use iris_fuzz::{Split, usage_split_invariant};
use iris_providers::ApiFamily;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(split) = Split::parse(data) else {
        return;
    };
    usage_split_invariant(ApiFamily::OpenAiResponses, &split);
});
