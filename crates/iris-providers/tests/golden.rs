//! Golden tests over hand-written fixtures in the providers' documented wire shapes
//! (`tests/fixtures/`): usage extraction must give the same answer however the bytes are split,
//! and the include-usage filter must remove exactly the usage chunk.

use std::path::PathBuf;

use iris_providers::{ApiFamily, Extracted, IncludeUsageFilter, UsageExtractor};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn extract_split(family: ApiFamily, streaming: bool, bytes: &[u8], step: usize) -> Extracted {
    let mut x = UsageExtractor::new(family, streaming);
    for chunk in bytes.chunks(step) {
        x.feed(chunk);
    }
    x.finish()
}

/// Whole, one byte at a time, every 7 bytes (and a few other strides): all must agree. Streams
/// must also give the same answer with any of the three SSE line endings.
fn check(name: &str, family: ApiFamily, streaming: bool) -> Extracted {
    let bytes = fixture(name);
    let whole = extract_split(family, streaming, &bytes, bytes.len().max(1));
    let mut variants = vec![("as is", bytes.clone())];
    if streaming {
        // JSON data lines hold no raw CR or LF, so rewriting line endings is safe.
        let text = String::from_utf8(bytes.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let lf = text.replace("\r\n", "\n");
        variants.push(("LF", lf.clone().into_bytes()));
        variants.push(("CRLF", lf.replace('\n', "\r\n").into_bytes()));
        variants.push(("CR", lf.replace('\n', "\r").into_bytes()));
    }
    for (ending, input) in &variants {
        for step in [1, 2, 3, 7, 64, 1000, input.len().max(1)] {
            assert_eq!(
                extract_split(family, streaming, input, step),
                whole,
                "{name} ({ending}): splitting every {step} bytes changed the result"
            );
        }
    }
    whole
}

macro_rules! golden {
    ($test:ident, $file:literal, $family:expr, $streaming:expr) => {
        #[test]
        fn $test() {
            let got = check($file, $family, $streaming);
            insta::assert_debug_snapshot!(got);
        }
    };
}

golden!(
    anthropic_stream_thinking_tool,
    "anthropic_stream_thinking_tool.sse",
    ApiFamily::AnthropicMessages,
    true
);
golden!(
    anthropic_stream_delta_usage,
    "anthropic_stream_delta_usage.sse",
    ApiFamily::AnthropicMessages,
    true
);
golden!(
    anthropic_stream_error,
    "anthropic_stream_error.sse",
    ApiFamily::AnthropicMessages,
    true
);
golden!(
    anthropic_message,
    "anthropic_message.json",
    ApiFamily::AnthropicMessages,
    false
);
golden!(
    anthropic_count_tokens,
    "anthropic_count_tokens.json",
    ApiFamily::AnthropicCountTokens,
    false
);
golden!(
    openai_chat_stream_usage,
    "openai_chat_stream_usage.sse",
    ApiFamily::OpenAiChat,
    true
);
golden!(
    openai_chat_stream_no_usage,
    "openai_chat_stream_no_usage.sse",
    ApiFamily::OpenAiChat,
    true
);
golden!(
    openai_chat_stream_crlf_selfhosted,
    "openai_chat_stream_crlf_selfhosted.sse",
    ApiFamily::OpenAiChat,
    true
);
golden!(
    openai_chat_stream_error,
    "openai_chat_stream_error.sse",
    ApiFamily::OpenAiChat,
    true
);
golden!(
    openai_chat,
    "openai_chat.json",
    ApiFamily::OpenAiChat,
    false
);
golden!(
    responses_stream_function_call,
    "responses_stream_function_call.sse",
    ApiFamily::OpenAiResponses,
    true
);
golden!(
    responses_stream_failed,
    "responses_stream_failed.sse",
    ApiFamily::OpenAiResponses,
    true
);
golden!(
    responses,
    "responses.json",
    ApiFamily::OpenAiResponses,
    false
);
golden!(
    openai_embeddings_base64,
    "openai_embeddings_base64.json",
    ApiFamily::OpenAiEmbeddings,
    false
);

// --- IncludeUsageFilter ------------------------------------------------------------------------

fn filter_split(bytes: &[u8], step: usize) -> Vec<u8> {
    let mut f = IncludeUsageFilter::new();
    let mut out = Vec::new();
    for chunk in bytes.chunks(step) {
        out.extend(f.push(chunk));
    }
    out.extend(f.finish());
    out
}

/// The fixture with the one event whose data has `"choices":[]` removed, found independently of
/// the filter: by splitting on the blank line `eol eol`.
fn without_usage_event(text: &str, eol: &str) -> String {
    let sep = format!("{eol}{eol}");
    let events: Vec<&str> = text.split_inclusive(sep.as_str()).collect();
    let usage: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.contains(r#""choices":[]"#))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(usage.len(), 1, "fixture must hold exactly one usage chunk");
    events
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != usage[0])
        .map(|(_, e)| *e)
        .collect()
}

fn check_filter(name: &str, eol: &str) {
    let bytes = fixture(name);
    let text = String::from_utf8(bytes.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let expect = without_usage_event(&text, eol);
    assert!(expect.len() < text.len());
    for step in 1..=bytes.len() {
        let got = filter_split(&bytes, step);
        assert_eq!(
            String::from_utf8_lossy(&got),
            expect,
            "{name}: split every {step} bytes"
        );
    }
}

#[test]
fn filter_removes_exactly_the_usage_chunk() {
    check_filter("openai_chat_stream_usage.sse", "\n");
}

#[test]
fn filter_removes_exactly_the_usage_chunk_crlf() {
    check_filter("openai_chat_stream_crlf_selfhosted.sse", "\r\n");
}

#[test]
fn filter_output_reads_like_the_stream_without_include_usage() {
    // What a client gets from the filtered stream carries the same events as what upstream sends
    // without include_usage; only the `"usage":null` members differ (see the module docs).
    let filtered = filter_split(&fixture("openai_chat_stream_usage.sse"), 5);
    let plain = fixture("openai_chat_stream_no_usage.sse");
    let strip = |b: &[u8]| String::from_utf8_lossy(b).replace(r#","usage":null"#, "");
    assert_eq!(strip(&filtered), strip(&plain));
}

#[test]
fn filter_passes_streams_without_usage_untouched() {
    for name in [
        "openai_chat_stream_no_usage.sse",
        "openai_chat_stream_error.sse",
        "anthropic_stream_thinking_tool.sse",
        "responses_stream_function_call.sse",
    ] {
        let bytes = fixture(name);
        for step in [1, 7, bytes.len()] {
            assert_eq!(
                String::from_utf8_lossy(&filter_split(&bytes, step)),
                String::from_utf8_lossy(&bytes),
                "{name} step {step}"
            );
        }
    }
}

#[test]
fn extraction_of_filtered_stream_still_sees_usage_of_the_original() {
    // The server feeds the extractor the upstream bytes and the client the filtered ones; the two
    // views must not disagree on anything but usage.
    let bytes = fixture("openai_chat_stream_usage.sse");
    let filtered = filter_split(&bytes, 7);
    let upstream = extract_split(ApiFamily::OpenAiChat, true, &bytes, 7);
    let client = extract_split(ApiFamily::OpenAiChat, true, &filtered, 7);
    assert!(upstream.usage.is_some());
    assert_eq!(client.usage, None);
    assert_eq!(client.response_model, upstream.response_model);
}
