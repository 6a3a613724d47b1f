//! Micro-benchmark of the redaction screen, run on every capture: whether any of a capture's
//! texts (header values, the path, both bodies) holds a configured secret or an iris key. The
//! common capture holds none, and is then stored without a search text by text, so this one
//! question is the whole of redaction's cost for most requests. A deployment's secrets are its
//! provider keys (and hook keys): two here, as in the load benchmark's configuration, and more.
//!
//! Run: `cargo bench -p iris-capture` (scripts/bench runs it with short measurement times).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iris_capture::Redactor;

/// A small chat's texts as a capture holds them: the request's and the answer's header values,
/// the path, the request body and the answer.
fn small_chat() -> Vec<Vec<u8>> {
    let mut texts: Vec<Vec<u8>> = [
        "application/json",
        "Bearer [redacted]",
        "python-requests/2.32",
        "127.0.0.1:4747",
        "gzip, deflate",
        "*/*",
        "keep-alive",
        "186",
        "application/json",
        "589",
        "Mon, 07 Dec 2026 21:00:00 GMT",
        "/v1/chat/completions",
    ]
    .iter()
    .map(|t| t.as_bytes().to_vec())
    .collect();
    texts.push(
        br#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello in five words, please."}],"max_tokens":32}"#
            .to_vec(),
    );
    texts.push(
        br#"{"id":"chatcmpl-bench","object":"chat.completion","created":1765000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there, how are you? I am a mock provider answering every request with the same few words, so that the benchmark measures the gateway and not the model.","refusal":null},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":40,"completion_tokens":5,"total_tokens":45,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_bench"}"#
            .to_vec(),
    );
    texts
}

/// `n` keys of the shapes a deployment holds (OpenAI, Anthropic, Gemini, Groq, webhook
/// signing keys), so that the screen's patterns share prefixes as real ones do.
fn secrets(n: usize) -> Vec<String> {
    const SHAPES: [&str; 5] = ["sk-proj-", "sk-ant-api03-", "AIzaSy", "gsk_", "whsec_"];
    (0..n)
        .map(|i| {
            format!(
                "{}{i:02}Zm9vYmFyYmF6cXV4cXV1eGZvb2Jhcg",
                SHAPES[i % SHAPES.len()]
            )
        })
        .collect()
}

fn screen(c: &mut Criterion) {
    let texts = small_chat();
    let bytes: usize = texts.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("redaction screen");
    g.throughput(Throughput::Bytes(bytes as u64));
    for n in [2, 8, 32] {
        let r = Redactor::new(secrets(n));
        g.bench_function(format!("small chat capture, {n} secrets"), |b| {
            b.iter(|| black_box(&r).holds_secret(black_box(&texts).iter().map(Vec::as_slice)))
        });
    }
    g.finish();
}

criterion_group!(benches, screen);
criterion_main!(benches);
