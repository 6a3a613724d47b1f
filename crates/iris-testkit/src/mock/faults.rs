//! Fault modes: a provider misbehaving on purpose, chosen per request with `x-mock-fault: MODE`.
//!
//! Parameters (all optional):
//! - `x-mock-fault-after: N`: content chunks sent before the fault strikes (default 2). A JSON
//!   answer has no chunks: mid-body faults strike after the first half of its bytes.
//! - `x-mock-fault-ms: D`: how long a stall lasts (default: forever); for `slow-loris`, the pause
//!   between two bytes (default 10).
//! - `x-mock-fault-bytes: B`: for `oversized`, the least size of the answer (default 8 MiB).
//!
//! Modes (see [`FaultMode`] for each one's exact bytes): `close-before-headers`,
//! `reset-mid-stream`, `stall-before-first-byte`, `stall-after-headers`, `stall-mid-stream`,
//! `malformed-json`, `malformed-sse`, `oversized`, `slow-loris`. They apply to whatever answer
//! the request would get (an `x-mock-status` error body included). An unknown mode is answered
//! with a 400 in the endpoint's dialect, so a typo never passes for a healthy provider.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::conn::ConnFaults;
use crate::server::Body;

/// Default for `x-mock-fault-after`.
pub const DEFAULT_FAULT_AFTER: usize = 2;
/// Default for `x-mock-fault-bytes`.
pub const DEFAULT_OVERSIZED_BYTES: usize = 8 << 20;
/// Default pause between two bytes for `slow-loris`.
pub const DEFAULT_SLOW_LORIS_MS: u64 = 10;
/// Largest `x-mock-fault-bytes` honoured.
const MAX_OVERSIZED_BYTES: usize = 1 << 30;
/// Frames of an oversized SSE comment.
const PAD_FRAME: usize = 64 * 1024;
/// Time given to the bytes before a reset to reach the peer.
const BEFORE_RESET: Duration = Duration::from_millis(20);

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultMode {
    /// Read the request, then close the connection (FIN) without a byte of answer.
    CloseBeforeHeaders,
    /// Send the head and the first `after` content chunks (a JSON answer: its first half, under
    /// a `content-length` of the whole), then reset the connection (RST).
    ResetMidStream,
    /// Send nothing for `ms` (forever by default), then the answer.
    StallBeforeFirstByte,
    /// Send the head, then nothing for `ms` (forever by default), then the body.
    StallAfterHeaders,
    /// Send the head and `after` content chunks (a JSON answer: its first half), then nothing for
    /// `ms` (forever by default), then the rest.
    StallMidStream,
    /// Streams: after `after` content chunks, an extra event whose JSON is cut in half (the first
    /// half of the next event), then the rest of the stream. JSON answers: only the first half of
    /// the body, as a complete message (`content-length` of that half).
    MalformedJson,
    /// Streams: after `after` content chunks, SSE junk (a line without a colon, bytes that are
    /// not UTF-8, an unknown field, a stray CR, a `data:` line that is not UTF-8), then the rest
    /// of the stream. JSON answers: as `MalformedJson`.
    MalformedSse,
    /// The answer grows to at least `bytes`: JSON answers get a `"_mock_padding"` string as their
    /// first member (so `usage` stays at the end); streams start with one SSE comment line
    /// (`: xxx…`) of that size, sent in 64 KiB frames. Both stay valid.
    Oversized,
    /// Write the whole answer, head included, one byte every `ms` (default 10), with
    /// `connection: close`.
    SlowLoris,
}

impl FaultMode {
    pub const ALL: [FaultMode; 9] = [
        FaultMode::CloseBeforeHeaders,
        FaultMode::ResetMidStream,
        FaultMode::StallBeforeFirstByte,
        FaultMode::StallAfterHeaders,
        FaultMode::StallMidStream,
        FaultMode::MalformedJson,
        FaultMode::MalformedSse,
        FaultMode::Oversized,
        FaultMode::SlowLoris,
    ];

    /// The `x-mock-fault` value.
    pub fn name(self) -> &'static str {
        match self {
            FaultMode::CloseBeforeHeaders => "close-before-headers",
            FaultMode::ResetMidStream => "reset-mid-stream",
            FaultMode::StallBeforeFirstByte => "stall-before-first-byte",
            FaultMode::StallAfterHeaders => "stall-after-headers",
            FaultMode::StallMidStream => "stall-mid-stream",
            FaultMode::MalformedJson => "malformed-json",
            FaultMode::MalformedSse => "malformed-sse",
            FaultMode::Oversized => "oversized",
            FaultMode::SlowLoris => "slow-loris",
        }
    }

    pub fn parse(s: &str) -> Option<FaultMode> {
        let s = s.trim();
        FaultMode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }
}

/// A fault with its parameters, from the request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub mode: FaultMode,
    pub after: usize,
    pub ms: Option<u64>,
    pub bytes: usize,
}

impl Fault {
    /// `Ok(None)` without `x-mock-fault`; `Err(value)` for an unknown mode.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<Fault>, String> {
        fn num(headers: &HeaderMap, name: &str) -> Option<u64> {
            headers.get(name)?.to_str().ok()?.trim().parse().ok()
        }
        let Some(value) = headers.get("x-mock-fault") else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let mode = FaultMode::parse(&text).ok_or(text)?;
        Ok(Some(Fault {
            mode,
            after: num(headers, "x-mock-fault-after")
                .map_or(DEFAULT_FAULT_AFTER, |n| n.min(1_000_000) as usize),
            ms: num(headers, "x-mock-fault-ms"),
            bytes: num(headers, "x-mock-fault-bytes").map_or(DEFAULT_OVERSIZED_BYTES, |n| {
                usize::try_from(n).map_or(MAX_OVERSIZED_BYTES, |n| n.min(MAX_OVERSIZED_BYTES))
            }),
        }))
    }

    /// The stall, or `None` for forever.
    fn stall(&self) -> Step {
        match self.ms {
            Some(ms) => Step::Sleep(Duration::from_millis(ms)),
            None => Step::Stall,
        }
    }
}

/// One step of a scripted body.
#[derive(Debug)]
pub(crate) enum Step {
    Data(Bytes),
    Sleep(Duration),
    /// Never send another byte.
    Stall,
    /// Reset the connection (after the bytes before have had time to leave).
    Reset,
}

/// A body that plays `steps` in order.
pub(crate) fn script(steps: Vec<Step>, faults: Option<Arc<ConnFaults>>) -> Body {
    let stream =
        futures_util::stream::unfold((steps.into_iter(), faults), |(mut it, faults)| async move {
            loop {
                match it.next()? {
                    Step::Data(b) => {
                        return Some((Ok::<_, Infallible>(Frame::data(b)), (it, faults)));
                    }
                    Step::Sleep(d) => tokio::time::sleep(d).await,
                    Step::Stall => std::future::pending::<()>().await,
                    Step::Reset => {
                        tokio::time::sleep(BEFORE_RESET).await;
                        if let Some(f) = &faults {
                            f.close(true);
                        }
                        std::future::pending::<()>().await;
                    }
                }
            }
        });
    StreamBody::new(stream).boxed_unsync()
}

/// What a mid-body fault does to a JSON answer of `body`: the body to send, and whether the
/// response must declare the whole body's length (the body is a script that is cut short).
pub(crate) fn json_body(
    fault: &Fault,
    body: Bytes,
    conn: &Arc<ConnFaults>,
) -> (Body, Option<usize>) {
    let half = (body.len() / 2).max(1).min(body.len());
    match fault.mode {
        FaultMode::ResetMidStream => (
            script(
                vec![Step::Data(body.slice(..half)), Step::Reset],
                Some(conn.clone()),
            ),
            Some(body.len()),
        ),
        FaultMode::StallAfterHeaders => {
            let len = body.len();
            (
                script(vec![fault.stall(), Step::Data(body)], None),
                Some(len),
            )
        }
        FaultMode::StallMidStream => {
            let len = body.len();
            let steps = vec![
                Step::Data(body.slice(..half)),
                fault.stall(),
                Step::Data(body.slice(half..)),
            ];
            (script(steps, None), Some(len))
        }
        FaultMode::MalformedJson | FaultMode::MalformedSse => {
            (crate::server::full(body.slice(..half)), None)
        }
        FaultMode::Oversized => (crate::server::full(pad_json(&body, fault.bytes)), None),
        FaultMode::CloseBeforeHeaders | FaultMode::StallBeforeFirstByte | FaultMode::SlowLoris => {
            (crate::server::full(body), None)
        }
    }
}

/// `body` with a `"_mock_padding"` first member that makes it at least `size` bytes long.
fn pad_json(body: &Bytes, size: usize) -> Bytes {
    const KEY: &[u8] = b"\"_mock_padding\":\"";
    if body.first() != Some(&b'{') || body.len() >= size {
        return body.clone();
    }
    let comma = body.get(1) != Some(&b'}');
    let pad = size.saturating_sub(body.len() + KEY.len() + 1 + usize::from(comma));
    let mut out = BytesMut::with_capacity(size);
    out.extend_from_slice(b"{");
    out.extend_from_slice(KEY);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"");
    if comma {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(&body[1..]);
    out.freeze()
}

/// SSE junk for `malformed-sse`: nothing in it is a well-formed event.
pub const SSE_JUNK: &[u8] =
    b"a line without a colon\n\xff\xfe\xfd\nunknown-field: value\r\n: comment\n\ndata: \xc3\x28 not utf-8\n\n";

/// The steps of a stream of `events` (each marked `delayed` waits `delay` first) under `fault`.
pub(crate) fn sse_steps(fault: &Fault, events: Vec<(bool, Bytes)>, delay: Duration) -> Vec<Step> {
    // Where a mid-stream fault strikes: after the `after`-th delayed (content) event.
    let delayed: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, (d, _))| *d)
        .map(|(i, _)| i)
        .collect();
    let cut = if fault.after == 0 {
        delayed.first().copied().unwrap_or(0)
    } else {
        delayed
            .get(fault.after - 1)
            .or(delayed.last())
            .map_or(events.len(), |i| i + 1)
    };
    let next_event = events.get(cut).or(events.last()).map(|(_, e)| e.clone());
    let mut steps = Vec::with_capacity(events.len() + 4);
    let push = |steps: &mut Vec<Step>, evs: &[(bool, Bytes)]| {
        for (d, e) in evs {
            if *d && !delay.is_zero() {
                steps.push(Step::Sleep(delay));
            }
            steps.push(Step::Data(e.clone()));
        }
    };
    let (before, rest) = events.split_at(cut.min(events.len()));
    match fault.mode {
        FaultMode::ResetMidStream => {
            push(&mut steps, before);
            steps.push(Step::Reset);
        }
        FaultMode::StallAfterHeaders => {
            steps.push(fault.stall());
            push(&mut steps, &events);
        }
        FaultMode::StallMidStream => {
            push(&mut steps, before);
            steps.push(fault.stall());
            push(&mut steps, rest);
        }
        FaultMode::MalformedJson => {
            push(&mut steps, before);
            if let Some(e) = next_event {
                let whole = e.strip_suffix(b"\n\n").unwrap_or(&e);
                let mut cut_event = BytesMut::from(&whole[..(whole.len() / 2).max(1)]);
                cut_event.extend_from_slice(b"\n\n");
                steps.push(Step::Data(cut_event.freeze()));
            }
            push(&mut steps, rest);
        }
        FaultMode::MalformedSse => {
            push(&mut steps, before);
            steps.push(Step::Data(Bytes::from_static(SSE_JUNK)));
            push(&mut steps, rest);
        }
        FaultMode::Oversized => {
            let mut left = fault.bytes.saturating_sub(4).max(1);
            let mut first = true;
            while left > 0 {
                let n = left.min(PAD_FRAME);
                let mut frame = BytesMut::with_capacity(n + 4);
                if first {
                    frame.extend_from_slice(b": ");
                    first = false;
                }
                frame.resize(frame.len() + n, b'x');
                left -= n;
                if left == 0 {
                    frame.extend_from_slice(b"\n\n");
                }
                steps.push(Step::Data(frame.freeze()));
            }
            push(&mut steps, &events);
        }
        FaultMode::CloseBeforeHeaders | FaultMode::StallBeforeFirstByte | FaultMode::SlowLoris => {
            push(&mut steps, &events);
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(mode: FaultMode) -> Fault {
        Fault {
            mode,
            after: 2,
            ms: None,
            bytes: 1000,
        }
    }

    fn events() -> Vec<(bool, Bytes)> {
        vec![
            (false, Bytes::from_static(b"data: start\n\n")),
            (true, Bytes::from_static(b"data: {\"content\":1}\n\n")),
            (true, Bytes::from_static(b"data: {\"content\":2}\n\n")),
            (true, Bytes::from_static(b"data: {\"content\":3}\n\n")),
            (false, Bytes::from_static(b"data: [DONE]\n\n")),
        ]
    }

    fn data(steps: &[Step]) -> Vec<u8> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Data(b) => Some(b.to_vec()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    #[test]
    fn modes_parse_by_name() {
        for m in FaultMode::ALL {
            assert_eq!(FaultMode::parse(m.name()), Some(m));
            assert_eq!(FaultMode::parse(&m.name().to_uppercase()), Some(m));
        }
        assert_eq!(FaultMode::parse("reset"), None);
        let mut h = HeaderMap::new();
        assert_eq!(Fault::from_headers(&h), Ok(None));
        h.insert("x-mock-fault", "stall-mid-stream".parse().unwrap());
        h.insert("x-mock-fault-after", "3".parse().unwrap());
        h.insert("x-mock-fault-ms", "250".parse().unwrap());
        let f = Fault::from_headers(&h).unwrap().unwrap();
        assert_eq!(
            (f.mode, f.after, f.ms),
            (FaultMode::StallMidStream, 3, Some(250))
        );
        assert_eq!(f.bytes, DEFAULT_OVERSIZED_BYTES);
        h.insert("x-mock-fault", "nope".parse().unwrap());
        assert_eq!(Fault::from_headers(&h), Err("nope".to_owned()));
    }

    #[test]
    fn mid_stream_faults_strike_after_the_asked_chunks() {
        let steps = sse_steps(&fault(FaultMode::ResetMidStream), events(), Duration::ZERO);
        assert_eq!(
            data(&steps),
            b"data: start\n\ndata: {\"content\":1}\n\ndata: {\"content\":2}\n\n"
        );
        assert!(matches!(steps.last(), Some(Step::Reset)));

        let steps = sse_steps(&fault(FaultMode::StallMidStream), events(), Duration::ZERO);
        assert!(matches!(steps[3], Step::Stall));
        assert_eq!(
            data(&steps).len(),
            events().iter().map(|e| e.1.len()).sum::<usize>()
        );

        let mut f = fault(FaultMode::StallMidStream);
        f.after = 0;
        let steps = sse_steps(&f, events(), Duration::ZERO);
        assert!(matches!(steps[1], Step::Stall), "{steps:?}");
        f.after = 99;
        let steps = sse_steps(&f, events(), Duration::ZERO);
        assert!(
            matches!(steps[4], Step::Stall),
            "after the last chunk: {steps:?}"
        );

        let steps = sse_steps(&fault(FaultMode::MalformedJson), events(), Duration::ZERO);
        let text = String::from_utf8(data(&steps)).unwrap();
        assert!(
            text.contains("data: {\"content\":2}\n\ndata: {\"c\n\ndata: {\"content\":3}"),
            "{text}"
        );

        let steps = sse_steps(&fault(FaultMode::MalformedSse), events(), Duration::ZERO);
        let bytes = data(&steps);
        assert!(bytes.windows(SSE_JUNK.len()).any(|w| w == SSE_JUNK));
        assert!(bytes.ends_with(b"data: [DONE]\n\n"));

        let steps = sse_steps(
            &fault(FaultMode::StallAfterHeaders),
            events(),
            Duration::ZERO,
        );
        assert!(matches!(steps[0], Step::Stall));
    }

    #[test]
    fn delays_stay_before_content_chunks() {
        let steps = sse_steps(
            &fault(FaultMode::MalformedSse),
            events(),
            Duration::from_millis(5),
        );
        let sleeps = steps.iter().filter(|s| matches!(s, Step::Sleep(_))).count();
        assert_eq!(sleeps, 3);
    }

    #[test]
    fn oversized_answers_stay_valid() {
        let body = Bytes::from_static(br#"{"id":"x","usage":{"prompt_tokens":3}}"#);
        let padded = pad_json(&body, 5000);
        assert!(padded.len() >= 5000, "{}", padded.len());
        let v: serde_json::Value = serde_json::from_slice(&padded).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        assert!(padded.ends_with(br#""usage":{"prompt_tokens":3}}"#));
        assert_eq!(pad_json(&body, 5000).len(), 5000);
        assert_eq!(pad_json(&Bytes::from_static(b"{}"), 100).len(), 100);
        assert!(
            serde_json::from_slice::<serde_json::Value>(&pad_json(&Bytes::from_static(b"{}"), 100))
                .is_ok()
        );

        let mut f = fault(FaultMode::Oversized);
        f.bytes = 200_000;
        let steps = sse_steps(&f, events(), Duration::ZERO);
        let bytes = data(&steps);
        let comment_len = bytes.len() - events().iter().map(|e| e.1.len()).sum::<usize>();
        assert!(comment_len >= 200_000 - 4, "{comment_len}");
        assert!(bytes.starts_with(b": xxx"));
        assert!(bytes.ends_with(b"data: [DONE]\n\n"));
        let comment_end = bytes.windows(2).position(|w| w == b"\n\n").unwrap();
        assert_eq!(
            comment_end,
            comment_len - 2,
            "one comment line, then the events"
        );
    }
}
