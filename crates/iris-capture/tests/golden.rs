//! Golden tests of reassembly over hand-written fixtures in each provider's documented wire
//! shape (`tests/fixtures/`), snapshotted with insta. A stream must reassemble the same however
//! its bytes are split and whichever SSE line ending it uses.

// Test helpers outside #[test] fns panic on bad fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{fixture, pretty};
use iris_capture::{
    Reassembled, StreamReassembler, reassemble_json, reassemble_stream, response_tool_calls,
};

fn stream_split(family: &str, bytes: &[u8], step: usize) -> Reassembled {
    let mut r = StreamReassembler::new(family, 1 << 20).expect("supported family");
    for chunk in bytes.chunks(step.max(1)) {
        r.feed(chunk);
    }
    let out = r.finish();
    assert!(!out.truncated);
    out.message
}

/// Reassemble a stream whole, then check every split and line ending gives the same.
fn check_stream(name: &str, family: &str) -> Reassembled {
    let bytes = fixture(name);
    let whole = reassemble_stream(family, &bytes).expect("supported family");
    let text = String::from_utf8(bytes).expect("fixtures are UTF-8");
    let lf = text.replace("\r\n", "\n");
    for (ending, input) in [
        ("LF", lf.clone()),
        ("CRLF", lf.replace('\n', "\r\n")),
        ("CR", lf.replace('\n', "\r")),
    ] {
        for step in [1, 2, 3, 7, 64, 1000, input.len()] {
            assert_eq!(
                stream_split(family, input.as_bytes(), step),
                whole,
                "{name} ({ending}) split every {step} bytes"
            );
        }
    }
    whole
}

macro_rules! golden_stream {
    ($test:ident, $file:literal, $family:literal) => {
        #[test]
        fn $test() {
            let got = check_stream($file, $family);
            insta::assert_snapshot!(pretty(&got));
        }
    };
}

macro_rules! golden_json {
    ($test:ident, $file:literal, $family:literal) => {
        #[test]
        fn $test() {
            let got = reassemble_json($family, &fixture($file)).expect("a message");
            insta::assert_snapshot!(pretty(&got));
        }
    };
}

golden_stream!(
    anthropic_stream_tools,
    "anthropic_stream_tools.sse",
    "anthropic_messages"
);
golden_stream!(
    anthropic_stream_error,
    "anthropic_stream_error.sse",
    "anthropic_messages"
);
golden_json!(
    anthropic_message_tools,
    "anthropic_message_tools.json",
    "anthropic_messages"
);
golden_stream!(
    openai_chat_stream_tools,
    "openai_chat_stream_tools.sse",
    "openai_chat"
);
golden_stream!(
    openai_chat_stream_reasoning_selfhosted,
    "openai_chat_stream_reasoning_selfhosted.sse",
    "openai_chat"
);
golden_json!(openai_chat_tools, "openai_chat_tools.json", "openai_chat");
golden_json!(openai_chat_text, "openai_chat_text.json", "openai_chat");
golden_stream!(
    openai_responses_stream_tools,
    "openai_responses_stream_tools.sse",
    "openai_responses"
);
golden_json!(
    openai_responses_tools,
    "openai_responses_tools.json",
    "openai_responses"
);

#[test]
fn error_bodies_are_not_messages() {
    let body = fixture("anthropic_error_body.json");
    assert_eq!(reassemble_json("anthropic_messages", &body), None);
    assert_eq!(
        reassemble_json(
            "openai_chat",
            br#"{"error":{"message":"x","type":"invalid_request_error"}}"#
        ),
        None
    );
    assert_eq!(
        reassemble_json("openai_responses", br#"{"error":{"message":"x"}}"#),
        None
    );
    assert_eq!(reassemble_json("openai_chat", b"not json"), None);
}

#[test]
fn cut_responses_stream_falls_back_to_the_deltas() {
    let bytes = fixture("openai_responses_stream_tools.sse");
    let text = String::from_utf8(bytes).unwrap();
    let full = reassemble_stream("openai_responses", text.as_bytes()).unwrap();
    // Cut before the final `response.completed`: the deltas and `.done` events give the same
    // message, without a stop reason.
    let cut = &text[..text.find("event: response.completed").unwrap()];
    let got = reassemble_stream("openai_responses", cut.as_bytes()).unwrap();
    assert_eq!(
        got,
        Reassembled {
            stop_reason: None,
            ..full.clone()
        }
    );
    // Cut in the middle of the arguments: what arrived is kept, as a raw string.
    let mid = &text[..text
        .find("event: response.function_call_arguments.done")
        .unwrap()];
    let got = reassemble_stream("openai_responses", mid.as_bytes()).unwrap();
    assert_eq!(got.tool_calls.len(), 1);
    assert_eq!(got.tool_calls[0].name, "exec_command");
    assert_eq!(got.tool_calls[0].id, "call_Kq1vXw2");
    assert_eq!(
        got.tool_calls[0].arguments,
        serde_json::json!({"cmd": "ls -la", "workdir": "/repo"})
    );
    let mid = &text[..text.find("\"delta\":\" -la").unwrap()];
    let mid = &mid[..mid.rfind("event:").unwrap()];
    let got = reassemble_stream("openai_responses", mid.as_bytes()).unwrap();
    assert_eq!(
        got.tool_calls[0].arguments,
        serde_json::json!("{\"cmd\":\"ls")
    );
}

#[test]
fn responses_with_an_empty_final_output_use_the_deltas() {
    let text = String::from_utf8(fixture("openai_responses_stream_tools.sse")).unwrap();
    let start = text.find("event: response.completed").unwrap();
    let emptied = format!(
        "{}event: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp_1\",\"object\":\"response\",\"status\":\"completed\",\"output\":[]}}}}\n\n",
        &text[..start]
    );
    let full = reassemble_stream("openai_responses", text.as_bytes()).unwrap();
    let got = reassemble_stream("openai_responses", emptied.as_bytes()).unwrap();
    assert_eq!(got, full);
}

#[test]
fn cut_anthropic_stream_keeps_partial_tool_input() {
    let text = String::from_utf8(fixture("anthropic_stream_tools.sse")).unwrap();
    let cut = &text[..text.find("sius").unwrap()];
    let cut = &cut[..cut.rfind("event:").unwrap()];
    let got = reassemble_stream("anthropic_messages", cut.as_bytes()).unwrap();
    assert_eq!(got.stop_reason, None);
    assert_eq!(got.tool_calls.len(), 1);
    assert_eq!(
        got.tool_calls[0].arguments,
        serde_json::json!("{\"location\": \"Paris, France\", \"unit\": \"cel")
    );
}

#[test]
fn tool_calls_of_a_response() {
    let calls = response_tool_calls(
        "openai_chat",
        &fixture("openai_chat_stream_tools.sse"),
        true,
    );
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["get_weather", "get_weather"]);
    let calls = response_tool_calls(
        "anthropic_messages",
        &fixture("anthropic_message_tools.json"),
        false,
    );
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["Read", "Bash"]);
    assert!(
        response_tool_calls("openai_chat", &fixture("openai_chat_text.json"), false).is_empty()
    );
    assert!(response_tool_calls("openai_embeddings", b"{}", false).is_empty());
}

#[test]
fn output_cap_truncates_and_says_so() {
    let bytes = fixture("anthropic_stream_tools.sse");
    let mut r = StreamReassembler::new("anthropic_messages", 40).unwrap();
    r.feed(&bytes);
    let out = r.finish();
    assert!(out.truncated);
    let kept = out.message.text.len()
        + out.message.thinking.len()
        + out
            .message
            .tool_calls
            .iter()
            .map(|c| c.id.len() + c.name.len())
            .sum::<usize>();
    assert!(kept <= 40, "{kept}");
    assert!(out.events > 10);
}

#[test]
fn many_tool_calls_are_capped() {
    let mut s = String::new();
    for i in 0..2000 {
        s.push_str(&format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":{i},\"id\":\"c{i}\",\"function\":{{\"name\":\"f\",\"arguments\":\"{{}}\"}}}}]}}}}]}}\n\n"
        ));
    }
    let mut r = StreamReassembler::new("openai_chat", 1 << 20).unwrap();
    r.feed(s.as_bytes());
    let out = r.finish();
    assert_eq!(
        out.message.tool_calls.len(),
        iris_capture::reassemble::MAX_TOOL_CALLS
    );
    assert!(out.truncated);
}

#[test]
fn legacy_completions() {
    let body = br#"{"id":"cmpl-1","object":"text_completion","choices":[{"text":"Hello there","index":0,"finish_reason":"length"}]}"#;
    let got = reassemble_json("openai_completions", body).unwrap();
    assert_eq!(
        (got.text.as_str(), got.stop_reason.as_deref()),
        ("Hello there", Some("length"))
    );
    let stream = b"data: {\"choices\":[{\"text\":\"Hel\",\"index\":0,\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"text\":\"lo\",\"index\":0,\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let got = reassemble_stream("openai_completions", stream).unwrap();
    assert_eq!(
        (got.text.as_str(), got.stop_reason.as_deref()),
        ("Hello", Some("stop"))
    );
}

#[test]
fn openai_stream_error_chunk() {
    let stream = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\"}}\n\n";
    let got = reassemble_stream("openai_chat", stream).unwrap();
    assert_eq!(got.text, "Hi");
    assert_eq!(got.stop_reason.as_deref(), Some("error:server_error"));
}
