//! The mock provider's fault modes (`x-mock-fault`), seen on the wire with raw TCP: what bytes
//! arrive, when, and how the connection ends.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use iris_testkit::mock::{FaultMode, MockProvider, SSE_JUNK};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn messages(stream: bool) -> String {
    json!({"model": "claude-haiku-4-5", "max_tokens": 16, "stream": stream,
           "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

fn chat(stream: bool) -> String {
    json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

/// Writes one HTTP/1.1 request on a fresh connection.
async fn open(mock: &MockProvider, path: &str, headers: &[(&str, &str)], body: &str) -> TcpStream {
    let mut s = TcpStream::connect(mock.addr()).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

/// How a connection ended.
#[derive(Debug, PartialEq)]
enum End {
    /// The peer closed (FIN).
    Closed,
    /// The peer reset the connection.
    Reset,
    /// Still open at the deadline.
    Open,
    /// A complete HTTP message arrived (chunked terminator or content-length reached).
    Complete,
}

/// Reads until the connection ends, a full message arrived, or `within` passed.
async fn read_all(s: &mut TcpStream, within: Duration) -> (Vec<u8>, End) {
    read_more(s, within, Vec::new()).await
}

/// [`read_all`] on top of bytes already read.
async fn read_more(s: &mut TcpStream, within: Duration, mut out: Vec<u8>) -> (Vec<u8>, End) {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if complete(&out) {
            return (out, End::Complete);
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (out, End::Open),
            Ok(Ok(0)) => return (out, End::Closed),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (out, End::Reset);
            }
            Ok(Err(e)) => panic!("read failed: {e}"),
        }
    }
}

fn split_head(bytes: &[u8]) -> Option<(String, &[u8])> {
    let at = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((
        String::from_utf8_lossy(&bytes[..at]).to_ascii_lowercase(),
        &bytes[at + 4..],
    ))
}

fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
}

fn complete(bytes: &[u8]) -> bool {
    let Some((head, body)) = split_head(bytes) else {
        return false;
    };
    match content_length(&head) {
        Some(n) => body.len() >= n,
        None => body.ends_with(b"0\r\n\r\n"),
    }
}

/// The body of a chunked message, de-chunked (as far as it arrived).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(at) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..at]).unwrap().trim(), 16).unwrap();
        body = &body[at + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(body.len());
        out.extend_from_slice(&body[..take]);
        if take < size || body.len() < size + 2 {
            break;
        }
        body = &body[size + 2..];
    }
    out
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

async fn wait_closed(mock: &MockProvider) {
    let start = Instant::now();
    while mock.open_connections() > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{} connections stayed open",
            mock.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn close_before_headers_sends_nothing_and_closes() {
    let mock = MockProvider::start().await;
    let mut s = open(
        &mock,
        "/v1/messages",
        &[("x-mock-fault", "close-before-headers")],
        &messages(false),
    )
    .await;
    let (bytes, end) = read_all(&mut s, Duration::from_secs(3)).await;
    assert_eq!((bytes.len(), end), (0, End::Closed));
    assert_eq!(mock.requests()[0].status, 0);
    drop(s);
    wait_closed(&mock).await;
}

#[tokio::test]
async fn reset_mid_stream_after_the_asked_chunks() {
    let mock = MockProvider::start().await;
    let mut s = open(
        &mock,
        "/v1/messages",
        &[
            ("x-mock-fault", "reset-mid-stream"),
            ("x-mock-fault-after", "3"),
        ],
        &messages(true),
    )
    .await;
    let (bytes, end) = read_all(&mut s, Duration::from_secs(3)).await;
    assert_eq!(end, End::Reset);
    let (head, body) = split_head(&bytes).unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let events = dechunk(body);
    assert_eq!(count(&events, b"event: content_block_delta"), 3);
    assert_eq!(count(&events, b"message_stop"), 0);

    // A JSON answer: a content-length for the whole, half of it, then the reset.
    let mut s = open(
        &mock,
        "/v1/chat/completions",
        &[("x-mock-fault", "reset-mid-stream")],
        &chat(false),
    )
    .await;
    let (bytes, end) = read_all(&mut s, Duration::from_secs(3)).await;
    assert_eq!(end, End::Reset);
    let (head, body) = split_head(&bytes).unwrap();
    let declared = content_length(&head).unwrap();
    assert_eq!(body.len(), declared / 2, "{head}");
    wait_closed(&mock).await;
}

#[tokio::test]
async fn stalls_hold_the_answer_back() {
    let mock = MockProvider::start().await;
    // Before the first byte, forever: nothing arrives.
    let mut s = open(
        &mock,
        "/v1/messages",
        &[("x-mock-fault", "stall-before-first-byte")],
        &messages(true),
    )
    .await;
    let (bytes, end) = read_all(&mut s, Duration::from_millis(300)).await;
    assert_eq!((bytes.len(), end), (0, End::Open));
    drop(s);
    wait_closed(&mock).await;

    // Before the first byte, for a while: then the whole answer.
    let t = Instant::now();
    let mut s = open(
        &mock,
        "/v1/messages",
        &[
            ("x-mock-fault", "stall-before-first-byte"),
            ("x-mock-fault-ms", "250"),
        ],
        &messages(false),
    )
    .await;
    let (bytes, end) = read_all(&mut s, Duration::from_secs(3)).await;
    assert_eq!(end, End::Complete);
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(split_head(&bytes).unwrap().0.starts_with("http/1.1 200"));
    drop(s);

    // After the head: the head only.
    let mut s = open(
        &mock,
        "/v1/chat/completions",
        &[("x-mock-fault", "stall-after-headers")],
        &chat(true),
    )
    .await;
    let (bytes, end) = read_all(&mut s, Duration::from_millis(300)).await;
    assert_eq!(end, End::Open);
    let (head, body) = split_head(&bytes).expect("the head arrived");
    assert!(head.contains("text/event-stream"), "{head}");
    assert!(dechunk(body).is_empty());
    drop(s);
    wait_closed(&mock).await;

    // Mid-stream, for a while: two chunks, a pause, the rest.
    let mut s = open(
        &mock,
        "/v1/chat/completions",
        &[
            ("x-mock-fault", "stall-mid-stream"),
            ("x-mock-fault-ms", "400"),
        ],
        &chat(true),
    )
    .await;
    let (bytes, end) = read_all(&mut s, Duration::from_millis(250)).await;
    assert_eq!(end, End::Open);
    let events = dechunk(split_head(&bytes).unwrap().1);
    assert_eq!(
        count(&events, b"\"content\":\" w"),
        1,
        "w2 is the 2nd chunk"
    );
    assert_eq!(count(&events, b"[DONE]"), 0);
    let t = Instant::now();
    let (all, end) = read_more(&mut s, Duration::from_secs(3), bytes).await;
    assert_eq!(end, End::Complete);
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "the rest waited for the stall"
    );
    let all = dechunk(split_head(&all).unwrap().1);
    assert_eq!(count(&all, b"[DONE]"), 1);
    drop(s);

    // Mid-body of a JSON answer, forever: half the declared length.
    let mut s = open(
        &mock,
        "/v1/messages",
        &[("x-mock-fault", "stall-mid-stream")],
        &messages(false),
    )
    .await;
    let (bytes, end) = read_all(&mut s, Duration::from_millis(300)).await;
    assert_eq!(end, End::Open);
    let (head, body) = split_head(&bytes).unwrap();
    assert_eq!(body.len(), content_length(&head).unwrap() / 2);
    drop(s);
    wait_closed(&mock).await;
}

#[tokio::test]
async fn malformed_answers() {
    let mock = MockProvider::start().await;
    let r = common::send(
        "POST",
        &format!("{}/v1/chat/completions", mock.url()),
        &[("x-mock-fault", "malformed-json")],
        &chat(false),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_err());
    assert!(r.text().starts_with("{\""), "{}", r.text());

    let r = common::send(
        "POST",
        &format!("{}/v1/messages", mock.url()),
        &[
            ("x-mock-fault", "malformed-json"),
            ("x-mock-fault-after", "1"),
        ],
        &messages(true),
    )
    .await;
    let text = r.text();
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    let broken: Vec<&&str> = events
        .iter()
        .filter(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .is_some_and(|d| serde_json::from_str::<serde_json::Value>(d).is_err())
        })
        .collect();
    assert_eq!(broken.len(), 1, "{text}");
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));

    let r = common::send(
        "POST",
        &format!("{}/v1/responses", mock.url()),
        &[("x-mock-fault", "malformed-sse")],
        &json!({"model": "gpt-4o-mini", "input": "hi", "stream": true}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(count(&r.body, SSE_JUNK), 1);
    assert_eq!(count(&r.body, b"event: response.completed"), 1);
}

#[tokio::test]
async fn oversized_answers_stay_valid() {
    let mock = MockProvider::start().await;
    let r = common::send(
        "POST",
        &format!("{}/v1/chat/completions", mock.url()),
        &[
            ("x-mock-fault", "oversized"),
            ("x-mock-fault-bytes", "3000000"),
        ],
        &chat(false),
    )
    .await;
    assert_eq!(r.body.len(), 3_000_000);
    assert_eq!(r.json()["usage"]["completion_tokens"], 5);
    let r = common::send(
        "POST",
        &format!("{}/v1/messages", mock.url()),
        &[
            ("x-mock-fault", "oversized"),
            ("x-mock-fault-bytes", "1000000"),
        ],
        &messages(true),
    )
    .await;
    assert!(r.body.starts_with(b": xxxx"));
    assert!(r.body.len() > 1_000_000);
    assert_eq!(count(&r.body, b"event: message_stop"), 1);
}

#[tokio::test]
async fn slow_loris_trickles_every_byte() {
    let mock = MockProvider::start().await;
    let mut s = open(
        &mock,
        "/v1/messages",
        &[("x-mock-fault", "slow-loris"), ("x-mock-fault-ms", "20")],
        &messages(false),
    )
    .await;
    let t = Instant::now();
    let mut buf = [0u8; 64];
    let mut got = 0;
    let mut reads = 0;
    while got < 12 {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);
        got += n;
        reads += 1;
    }
    assert_eq!(reads, got, "one byte per read");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    drop(s);
    wait_closed(&mock).await;
}

#[tokio::test]
async fn unknown_fault_is_a_400_and_connections_are_counted() {
    let mock = MockProvider::start().await;
    assert_eq!(mock.open_connections(), 0);
    let r = common::send(
        "POST",
        &format!("{}/v1/messages", mock.url()),
        &[("x-mock-fault", "explode")],
        &messages(false),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains(FaultMode::SlowLoris.name())
    );
    let s = TcpStream::connect(mock.addr()).await.unwrap();
    let start = Instant::now();
    while mock.open_connections() == 0 {
        assert!(start.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(s);
    wait_closed(&mock).await;
}
