//! Capture building end to end: a golden capture with credentials of every kind planted in
//! headers, path, request body, compressed SSE response and tool arguments; none may survive.
//! Plus decoding of every content coding and the size caps.

// Test helpers outside #[test] fns panic on bad fixtures by design.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;

use common::{fixture, pretty, sorted};
use iris_capture::{CaptureLimits, HeaderList, RawExchange, Redactor, build_capture};
use serde_json::Value;

fn json_fixture(name: &str) -> Value {
    serde_json::from_slice(&fixture(name)).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn headers(v: &Value) -> HeaderList {
    v.as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_str().unwrap(), p[1].as_str().unwrap()))
        .collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Every secret, and every 12-byte piece of every secret, must be absent.
fn assert_no_secret(haystack: &str, secrets: &[String]) {
    for s in secrets {
        assert!(!haystack.contains(s.as_str()), "secret {s:?} survived");
        let b = s.as_bytes();
        if b.len() > 12 {
            for w in b.windows(12) {
                let piece = std::str::from_utf8(w).unwrap();
                // Well-known key prefixes are not secret on their own.
                if ["sk-ant-api03-"].iter().any(|p| p.contains(piece)) {
                    continue;
                }
                assert!(
                    !haystack.contains(piece),
                    "piece {piece:?} of {s:?} survived"
                );
            }
        }
    }
}

#[test]
fn golden_capture_with_planted_secrets() {
    let secrets = json_fixture("redaction/secrets.json");
    let provider = strings(&secrets["provider_secrets"]);
    let mut all = provider.clone();
    all.extend(strings(&secrets["iris_keys"]));
    all.extend(strings(&secrets["header_only"]));

    let ex = json_fixture("redaction/exchange.json");
    let req_h = headers(&ex["request_headers"]);
    let resp_h = headers(&ex["response_headers"]);
    let req_body = serde_json::to_vec(&sorted(ex["request_body"].clone())).unwrap();
    let sse = strings(&ex["response_sse"]).join("\n");
    let resp_body = gzip(sse.as_bytes());
    // The fixture really plants every secret.
    let raw_all = format!(
        "{} {:?} {} {:?} {}",
        ex["path"],
        req_h,
        String::from_utf8_lossy(&req_body),
        resp_h,
        sse
    );
    for s in &all {
        assert!(raw_all.contains(s.as_str()), "fixture lacks {s}");
    }

    let redactor = Redactor::new(&provider).with_extra_headers(["x-hook-secret"]);
    let raw = RawExchange {
        method: ex["method"].as_str().unwrap(),
        path: ex["path"].as_str().unwrap(),
        api_family: ex["api_family"].as_str().unwrap(),
        request_headers: &req_h,
        request_body: &req_body,
        request_body_complete: true,
        response_headers: &resp_h,
        response_body: &resp_body,
        response_body_complete: true,
        response_is_sse: true,
    };
    let capture = build_capture(&raw, &CaptureLimits::default(), &redactor);
    let out = pretty(&capture);
    assert_no_secret(&out, &all);
    // Still useful: the reassembled message and the tool call are there.
    let m = capture.reassembled.as_ref().unwrap();
    assert_eq!(m.stop_reason.as_deref(), Some("tool_use"));
    assert_eq!(capture.tool_calls()[0].name, "rotate_key");
    assert!(
        !capture.request_truncated && !capture.response_truncated && !capture.raw_events_truncated
    );
    insta::assert_snapshot!(out);
}

#[test]
fn every_coding_gives_the_same_capture() {
    let body = fixture("openai_chat_tools.json");
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    zlib.write_all(&body).unwrap();
    let mut raw_deflate =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    raw_deflate.write_all(&body).unwrap();
    let mut br = Vec::new();
    {
        let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
        w.write_all(&body).unwrap();
    }
    let encoded: Vec<(&str, Vec<u8>)> = vec![
        ("identity", body.clone()),
        ("gzip", gzip(&body)),
        ("deflate", zlib.finish().unwrap()),
        ("deflate", raw_deflate.finish().unwrap()),
        ("br", br.clone()),
        ("zstd", zstd::stream::encode_all(&body[..], 3).unwrap()),
        ("gzip, br", {
            let mut w = Vec::new();
            {
                let mut c = brotli::CompressorWriter::new(&mut w, 4096, 5, 22);
                c.write_all(&gzip(&body)).unwrap();
            }
            w
        }),
    ];
    let redactor = Redactor::default();
    let mut first = None;
    for (enc, bytes) in &encoded {
        let resp_h = HeaderList::from_iter([("Content-Encoding", (*enc))]);
        let raw = RawExchange {
            method: "POST",
            path: "/v1/chat/completions",
            api_family: "openai_chat",
            request_headers: &HeaderList::new(),
            request_body: b"{}",
            request_body_complete: true,
            response_headers: &resp_h,
            response_body: bytes,
            response_body_complete: true,
            response_is_sse: false,
        };
        let c = build_capture(&raw, &CaptureLimits::default(), &redactor);
        assert_eq!(
            c.response_body.as_deref(),
            std::str::from_utf8(&body).ok(),
            "{enc}"
        );
        assert_eq!(c.tool_calls().len(), 2, "{enc}");
        let key = (c.response_body.clone(), c.reassembled.clone());
        match &first {
            None => first = Some(key),
            Some(f) => assert_eq!(f, &key, "{enc}"),
        }
    }
}

#[test]
fn caps_bound_bodies_and_events_and_never_cut_a_secret_in_half() {
    let key = "sk-live-FAKE-0123456789abcdefghijklmnop";
    let redactor = Redactor::new([key]);
    // A body of 1000 bytes with the key placed across the 500-byte cap.
    let mut body = "x".repeat(490);
    body.push_str(key);
    body.push_str(&"y".repeat(1000 - body.len()));
    let raw = RawExchange {
        method: "POST",
        path: "/v1/chat/completions",
        api_family: "openai_chat",
        request_headers: &HeaderList::new(),
        request_body: body.as_bytes(),
        request_body_complete: true,
        response_headers: &HeaderList::new(),
        response_body: b"",
        response_body_complete: true,
        response_is_sse: false,
    };
    let limits = CaptureLimits {
        max_body_bytes: 500,
        max_raw_events_bytes: 100,
    };
    let c = build_capture(&raw, &limits, &redactor);
    let stored = c.request_body.unwrap();
    assert!(c.request_truncated);
    assert_eq!(stored, format!("{}[redacted]", "x".repeat(490)));
    assert!(!stored.contains("sk-live"));

    // An SSE stream longer than the raw-events cap: reassembly sees only the start and says so.
    let stream = fixture("openai_chat_stream_tools.sse");
    let resp_h = HeaderList::from_iter([("content-type", "text/event-stream")]);
    let raw = RawExchange {
        method: "POST",
        path: "/v1/chat/completions",
        api_family: "openai_chat",
        request_headers: &HeaderList::new(),
        request_body: b"",
        request_body_complete: true,
        response_headers: &resp_h,
        response_body: &stream,
        response_body_complete: true,
        response_is_sse: true,
    };
    let limits = CaptureLimits {
        max_body_bytes: 200,
        max_raw_events_bytes: 900,
    };
    let c = build_capture(&raw, &limits, &redactor);
    assert!(c.raw_events_truncated);
    assert!(c.response_truncated);
    assert!(c.response_body.as_ref().unwrap().len() <= 200);
    let m = c.reassembled.unwrap();
    assert_eq!(m.text, "Checking both cities.");
    assert!(m.tool_calls.is_empty());
    assert_eq!(m.stop_reason, None);

    // The server kept only part of the stream: flagged even though it fits the caps.
    let raw = RawExchange {
        response_body: &stream[..stream.len() / 2],
        response_body_complete: false,
        ..raw
    };
    let c = build_capture(&raw, &CaptureLimits::default(), &redactor);
    assert!(c.raw_events_truncated && c.response_truncated);
    assert!(c.reassembled.is_some());
}

#[test]
fn gzip_bomb_is_capped() {
    let zeros = vec![b'a'; 64 * 1024 * 1024];
    let bomb = gzip(&zeros);
    let resp_h = HeaderList::from_iter([("content-encoding", "gzip")]);
    let raw = RawExchange {
        method: "POST",
        path: "/v1/responses",
        api_family: "openai_responses",
        request_headers: &HeaderList::new(),
        request_body: b"",
        request_body_complete: true,
        response_headers: &resp_h,
        response_body: &bomb,
        response_body_complete: true,
        response_is_sse: false,
    };
    let c = build_capture(&raw, &CaptureLimits::default(), &Redactor::default());
    assert!(c.response_truncated);
    assert_eq!(
        c.response_body.unwrap().len(),
        CaptureLimits::default().max_body_bytes
    );
    assert_eq!(c.reassembled, None);
}

/// A capture whose reassembly was deferred reads back exactly as one built eagerly, for every
/// dialect, streamed or not, with and without tool calls (which are never deferred), and with a
/// secret planted in the answer.
#[test]
fn deferred_reassembly_reads_back_as_the_eager_capture() {
    let secret = "sk-live-deferred-0123456789abcdefghij";
    let redactor = iris_capture::Redactor::new([secret]);
    let limits = CaptureLimits::default();
    let text_only_sse = |family: &str| -> Vec<u8> {
        match family {
            "anthropic_messages" => format!(
                "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"m1\",\"model\":\"claude\",\"usage\":{{\"input_tokens\":3}}}}}}\n\n\
                 event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n\
                 event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"key {}\"}}}}\n\n\
                 event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" done\"}}}}\n\n\
                 event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\"}},\"usage\":{{\"output_tokens\":4}}}}\n\n\
                 event: message_stop\ndata: {{\"type\":\"message_stop\"}}\n\n",
                &secret[..20]
            )
            .into_bytes(),
            _ => format!(
                "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"key {}\"}}}}]}}\n\n\
                 data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}},\"finish_reason\":\"stop\"}}]}}\n\n\
                 data: [DONE]\n\n",
                &secret[..20],
                &secret[20..]
            )
            .into_bytes(),
        }
    };
    let cases: Vec<(&str, bool, Vec<u8>)> = vec![
        ("openai_chat", false, fixture("openai_chat_text.json")),
        ("openai_chat", false, fixture("openai_chat_tools.json")),
        ("openai_chat", true, fixture("openai_chat_stream_tools.sse")),
        ("openai_chat", true, text_only_sse("openai_chat")),
        (
            "anthropic_messages",
            false,
            fixture("anthropic_message_tools.json"),
        ),
        (
            "anthropic_messages",
            true,
            fixture("anthropic_stream_tools.sse"),
        ),
        (
            "anthropic_messages",
            true,
            text_only_sse("anthropic_messages"),
        ),
        (
            "openai_responses",
            false,
            fixture("openai_responses_tools.json"),
        ),
        (
            "openai_responses",
            true,
            fixture("openai_responses_stream_tools.sse"),
        ),
    ];
    let mut deferred_seen = 0;
    for (family, sse, body) in &cases {
        let raw = RawExchange {
            method: "POST",
            path: "/v1/x",
            api_family: family,
            request_headers: &HeaderList::new(),
            request_body: b"{}",
            request_body_complete: true,
            response_headers: &HeaderList::new(),
            response_body: body,
            response_body_complete: true,
            response_is_sse: *sse,
        };
        let eager = iris_capture::build_capture(&raw, &limits, &redactor);
        let lazy = iris_capture::build_capture_deferred(&raw, &limits, &redactor);
        assert_eq!(lazy.tool_calls(), eager.tool_calls(), "{family} {sse}");
        deferred_seen += usize::from(lazy.deferred.is_some());
        // Stored as the server stores it: the bodies beside the document.
        let mut doc = lazy.clone();
        let (request_body, response_body) = (doc.request_body.take(), doc.response_body.take());
        let stored = serde_json::to_string(&doc).unwrap();
        let read =
            iris_capture::stored_document(stored, request_body, response_body, &redactor).unwrap();
        let read: Value = serde_json::from_str(&read).unwrap();
        assert_eq!(
            read,
            serde_json::to_value(&eager).unwrap(),
            "{family} sse={sse}"
        );
        assert!(!read.to_string().contains(secret), "{family} {sse}");
        // Stored compactly, as the server does now: the same document, with the request id and
        // status the server puts in.
        let compact = doc.to_stored_text("req-7", 201);
        let served = iris_capture::stored_document(
            compact,
            lazy.request_body.clone(),
            lazy.response_body.clone(),
            &redactor,
        )
        .unwrap();
        let mut want = read.clone();
        want["request_id"] = "req-7".into();
        want["status"] = 201.into();
        assert_eq!(
            serde_json::from_str::<Value>(&served).unwrap(),
            want,
            "{family} sse={sse}"
        );
        // A capture stored before the bodies had columns of their own reads the same.
        let old = serde_json::to_string(&lazy).unwrap();
        let old = iris_capture::stored_document(old, None, None, &redactor).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&old).unwrap(),
            read,
            "{family} {sse}"
        );
    }
    assert!(
        deferred_seen >= 3,
        "tool-free answers are deferred: {deferred_seen}"
    );
}

/// The server's way of building a capture, owning the header lists (redacted in place, moved
/// into the capture), gives exactly the capture of the borrowing builder: credential headers,
/// secrets inside other headers, an iris key, a compressed response.
#[test]
fn owning_the_headers_gives_the_same_capture() {
    let secret = "sk-live-owning-0123456789abcdefghij";
    let redactor = Redactor::new([secret]).with_extra_headers(["x-custom-token"]);
    let limits = CaptureLimits::default();
    let pairs = |list: &[(&str, &str)]| -> HeaderList { list.iter().copied().collect() };
    let request_headers = pairs(&[
        (
            "authorization",
            "Bearer iris_sk_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFi",
        ),
        ("x-api-key", secret),
        ("x-custom-token", "tok"),
        ("x-note", &format!("uses {secret} inside")),
        ("user-agent", "OpenAI/Python 1.0"),
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&fixture("openai_chat_text.json")).unwrap();
    let response_body = gz.finish().unwrap();
    let response_headers = pairs(&[
        ("content-encoding", "gzip"),
        ("set-cookie", "session=abc"),
        ("x-echo", secret),
    ]);
    let raw = RawExchange {
        method: "POST",
        path: "/v1/chat/completions",
        api_family: "openai_chat",
        request_headers: &request_headers,
        request_body: br#"{"model":"m","messages":[]}"#,
        request_body_complete: true,
        response_headers: &response_headers,
        response_body: &response_body,
        response_body_complete: true,
        response_is_sse: false,
    };
    let borrowed = iris_capture::build_capture_deferred(&raw, &limits, &redactor);
    let owned = iris_capture::build_capture_deferred_owning(
        &RawExchange {
            request_headers: &HeaderList::new(),
            response_headers: &HeaderList::new(),
            ..raw
        },
        request_headers.clone(),
        response_headers.clone(),
        &limits,
        &redactor,
    );
    assert_eq!(owned, borrowed);
    assert!(
        owned
            .response_body
            .as_deref()
            .unwrap()
            .contains("\"choices\"")
    );
    let text = serde_json::to_string(&owned).unwrap();
    assert!(!text.contains(secret) && !text.contains("iris_sk_Zm9v") && !text.contains("abc\""));
    assert!(!text.contains("\"tok\""));
}

/// The capture is searched for secrets once, as a whole; only when that finds one is every
/// text scrubbed on its own. Either way a secret in any one place is gone, and what a clean
/// capture still needs (credential headers, query keys, the cut tail of a body, the decoded
/// reassembled text) is redacted.
#[test]
fn a_single_secret_anywhere_is_found_and_clean_captures_still_lose_credentials() {
    let secret = "sk-live-single-0123456789abcdefghij";
    let iris_key = "iris_sk_Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFi";
    let redactor = Redactor::new([secret]);
    let pairs = |list: &[(&str, &str)]| -> HeaderList { list.iter().copied().collect() };
    let clean_request = pairs(&[
        ("authorization", &format!("Bearer {iris_key}")),
        ("content-type", "application/json"),
    ]);
    let clean_response = pairs(&[("content-type", "application/json")]);
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.to_vec();
    let answer = fixture("openai_chat_text.json");
    let base = RawExchange {
        method: "POST",
        path: "/v1/chat/completions?key=AIzaQuery",
        api_family: "openai_chat",
        request_headers: &clean_request,
        request_body: &body,
        request_body_complete: true,
        response_headers: &clean_response,
        response_body: &answer,
        response_body_complete: true,
        response_is_sse: false,
    };
    let limits = CaptureLimits::default();

    // Clean: credentials and the query key still go, the rest is stored as it came.
    let c = build_capture(&base, &limits, &redactor);
    assert_eq!(c.path, "/v1/chat/completions?key=[redacted]");
    let values: Vec<&str> = c.request_headers.iter().map(|(_, v)| v).collect();
    assert_eq!(values[..2], ["Bearer [redacted]", "application/json"]);
    assert_eq!(c.request_body.as_deref().unwrap().as_bytes(), &body[..]);

    // One secret in one place at a time: a request header, a response header, the path, the
    // request body, the response body.
    let with_secret = |v: &str| v.replace("SECRET", secret);
    let req_h = pairs(&[
        ("authorization", "Bearer x"),
        ("x-note", &with_secret("a SECRET b")),
    ]);
    let resp_h = pairs(&[("x-echo", &with_secret("SECRET"))]);
    let path = with_secret("/v1/chat/completions?q=SECRET");
    let req_body = with_secret(r#"{"model":"m","messages":[{"role":"user","content":"SECRET"}]}"#);
    let resp_body = String::from_utf8(answer.clone())
        .unwrap()
        .replace("\"chat.completion\"", &with_secret("\"SECRET\""));
    assert!(resp_body.contains(secret));
    let cases = [
        RawExchange {
            request_headers: &req_h,
            ..base
        },
        RawExchange {
            response_headers: &resp_h,
            ..base
        },
        RawExchange {
            path: &path,
            ..base
        },
        RawExchange {
            request_body: req_body.as_bytes(),
            ..base
        },
        RawExchange {
            response_body: resp_body.as_bytes(),
            ..base
        },
    ];
    for (i, raw) in cases.iter().enumerate() {
        let c = build_capture(raw, &limits, &redactor);
        let text = serde_json::to_string(&c).unwrap();
        assert!(!text.contains(secret), "case {i}: {text}");
        assert!(text.contains("[redacted]"), "case {i}");
    }

    // A body the server kept only the start of, ending in the first half of the secret: no
    // whole secret anywhere, but the half is redacted.
    let mut cut = br#"{"model":"m","messages":[{"role":"user","content":""#.to_vec();
    cut.extend_from_slice(&secret.as_bytes()[..16]);
    let c = build_capture(
        &RawExchange {
            request_body: &cut,
            request_body_complete: false,
            ..base
        },
        &limits,
        &redactor,
    );
    assert!(c.request_truncated);
    assert!(c.request_body.as_deref().unwrap().ends_with("[redacted]"));
    assert!(!serde_json::to_string(&c).unwrap().contains(&secret[..16]));

    // A secret spelled with JSON escapes is not in the raw bytes (stored as they came) but is
    // in the reassembled answer, which is scrubbed on its own.
    let escaped: String = secret
        .chars()
        .map(|ch| format!("\\u{:04x}", ch as u32))
        .collect();
    let answer = String::from_utf8(answer.clone()).unwrap();
    let v: Value = serde_json::from_str(&answer).unwrap();
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    let content_json = serde_json::to_string(&content).unwrap();
    assert!(
        answer.contains(&content_json),
        "fixture spells its content plainly"
    );
    let spelled = answer.replace(&content_json, &format!("\"{escaped}\""));
    let c = build_capture(
        &RawExchange {
            response_body: spelled.as_bytes(),
            ..base
        },
        &limits,
        &redactor,
    );
    let m = c.reassembled.unwrap();
    assert_eq!(m.text, "[redacted]");
}
