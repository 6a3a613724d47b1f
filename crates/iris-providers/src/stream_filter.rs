//! Hide the usage chunk of an OpenAI chat stream from a client that did not ask for it.
//!
//! iris sets `stream_options.include_usage` upstream so it can account for every stream. A
//! client that did not ask for it must not see the extra chunk: some parsers choke on a chunk
//! with `choices: []`. [`IncludeUsageFilter`] passes every SSE event through byte for byte as
//! soon as its terminating blank line arrives, and drops the usage-only chunk: an event whose
//! data is a JSON object with a non-null `usage` and a `choices` that is an empty array (or
//! `null`, as some OpenAI-compatible servers send it). A chunk without a `choices` key is not a
//! chat chunk and always passes.
//!
//! What it does not undo: with `include_usage`, OpenAI also adds `"usage": null` to every other
//! chunk. Those chunks pass verbatim (a rewrite would cost a parse and a re-serialisation per
//! chunk); a `null` optional field reads exactly like an absent one in every SDK.
//!
//! Bytes are held only until their event is complete; an event past [`MAX_HELD`] bytes cannot be
//! a usage chunk and streams through without being held further.

use memchr::{memchr, memchr2, memmem};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The most bytes of one incomplete event held back before it is let through unfiltered.
pub const MAX_HELD: usize = 256 * 1024;

/// See the module docs. One per response stream.
#[derive(Debug, Clone)]
pub struct IncludeUsageFilter {
    /// Bytes of the current, incomplete event.
    held: Vec<u8>,
    /// The current line has no bytes yet.
    at_line_start: bool,
    /// The last byte consumed was `\r`.
    after_cr: bool,
    /// That `\r` ended an event, which was dropped (`Some(true)`) or passed (`Some(false)`): a
    /// `\n` opening the next chunk completes its line ending and goes the same way.
    cr_ended_event: Option<bool>,
    /// The current event grew past [`MAX_HELD`] and is streaming through.
    passthrough: bool,
    /// Number of events dropped so far.
    dropped: u64,
}

impl IncludeUsageFilter {
    pub fn new() -> Self {
        IncludeUsageFilter {
            held: Vec::new(),
            at_line_start: true,
            after_cr: false,
            cr_ended_event: None,
            passthrough: false,
            dropped: 0,
        }
    }

    /// How many usage chunks were dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Take the next upstream bytes; returns the bytes to send to the client now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len() + self.held.len());
        if chunk.is_empty() {
            return out;
        }
        let mut i = 0;
        let mut seg = 0;
        if self.after_cr {
            self.after_cr = false;
            let ended = self.cr_ended_event.take();
            if chunk[0] == b'\n' {
                i = 1;
                if let Some(dropped) = ended {
                    if !dropped {
                        out.push(b'\n');
                    }
                    seg = 1;
                }
            }
        }
        while let Some(off) = memchr2(b'\n', b'\r', &chunk[i..]) {
            let j = i + off;
            if j > i {
                self.at_line_start = false;
            }
            let mut end = j + 1;
            let cr_at_chunk_end = chunk[j] == b'\r' && end == chunk.len();
            if chunk[j] == b'\r' && chunk.get(end) == Some(&b'\n') {
                end += 1;
            }
            if self.at_line_start {
                // A blank line: the event is complete.
                let dropped = self.complete_event(&chunk[seg..end], &mut out);
                seg = end;
                if cr_at_chunk_end {
                    self.cr_ended_event = Some(dropped);
                }
            }
            self.at_line_start = true;
            self.after_cr = cr_at_chunk_end;
            i = end;
        }
        if i < chunk.len() {
            self.at_line_start = false;
        }
        let rest = &chunk[seg..];
        if self.passthrough {
            out.extend_from_slice(rest);
        } else {
            self.held.extend_from_slice(rest);
            if self.held.len() > MAX_HELD {
                out.append(&mut self.held);
                self.passthrough = true;
            }
        }
        out
    }

    /// End of the upstream stream: whatever is still held (an event without its blank line) is
    /// released, unless it is a complete usage chunk.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        self.passthrough = false;
        self.at_line_start = true;
        self.after_cr = false;
        self.cr_ended_event = None;
        if is_usage_only(&held) {
            self.dropped += 1;
            Vec::new()
        } else {
            held
        }
    }

    /// The current event ends with `tail`. Returns whether it was dropped.
    fn complete_event(&mut self, tail: &[u8], out: &mut Vec<u8>) -> bool {
        if self.passthrough {
            self.passthrough = false;
            out.extend_from_slice(tail);
            return false;
        }
        let dropped = if self.held.is_empty() {
            let d = is_usage_only(tail);
            if !d {
                out.extend_from_slice(tail);
            }
            d
        } else {
            self.held.extend_from_slice(tail);
            let d = is_usage_only(&self.held);
            if !d {
                out.extend_from_slice(&self.held);
            }
            self.held.clear();
            d
        };
        if dropped {
            self.dropped += 1;
        }
        dropped
    }
}

impl Default for IncludeUsageFilter {
    fn default() -> Self {
        IncludeUsageFilter::new()
    }
}

#[derive(Deserialize)]
struct UsageProbe {
    /// Absent: `None`; `null`: `Some(None)`; an array: `Some(Some(items))`.
    #[serde(default, deserialize_with = "present")]
    choices: Option<Option<Vec<IgnoredAny>>>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
}

/// Tell a present `null` from an absent key.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<Vec<IgnoredAny>>>, D::Error> {
    Option::<Vec<IgnoredAny>>::deserialize(d).map(Some)
}

/// Whether the raw bytes of one SSE event are the usage-only chunk.
fn is_usage_only(event: &[u8]) -> bool {
    if memmem::find(event, b"\"usage\"").is_none() {
        return false;
    }
    let data = event_data(event);
    if data.first() != Some(&b'{') {
        return false;
    }
    match serde_json::from_slice::<UsageProbe>(&data) {
        Ok(p) => {
            p.usage.is_some()
                && match p.choices {
                    Some(Some(items)) => items.is_empty(),
                    Some(None) => true,
                    None => false,
                }
        }
        Err(_) => false,
    }
}

/// The joined `data:` lines of one complete event.
fn event_data(event: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut first = true;
    let mut rest = event;
    while !rest.is_empty() {
        let (line, next) = match memchr2(b'\n', b'\r', rest) {
            Some(p) => {
                let skip = if rest[p] == b'\r' && rest.get(p + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                (&rest[..p], &rest[p + skip..])
            }
            None => (rest, &rest[rest.len()..]),
        };
        rest = next;
        let (field, value) = match memchr(b':', line) {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if !first {
                data.push(b'\n');
            }
            first = false;
            data.extend_from_slice(value);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter_split(input: &[u8], step: usize) -> Vec<u8> {
        let mut f = IncludeUsageFilter::new();
        let mut out = Vec::new();
        for c in input.chunks(step.max(1)) {
            out.extend(f.push(c));
        }
        out.extend(f.finish());
        out
    }

    const USAGE: &str = r#"{"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
    const CHUNK: &str = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#;

    fn check(input: &str, expect: &str) {
        for step in 1..=input.len().max(1) {
            let got = filter_split(input.as_bytes(), step);
            assert_eq!(
                String::from_utf8_lossy(&got),
                expect,
                "step {step} on {input:?}"
            );
        }
    }

    #[test]
    fn drops_only_the_usage_chunk_for_every_line_ending() {
        for eol in ["\n", "\r\n", "\r"] {
            let ev = |d: &str| format!("data: {d}{eol}{eol}");
            let input = format!("{}{}{}", ev(CHUNK), ev(USAGE), ev("[DONE]"));
            let expect = format!("{}{}", ev(CHUNK), ev("[DONE]"));
            check(&input, &expect);
        }
    }

    #[test]
    fn keeps_everything_else() {
        let with_usage_in_choices =
            r#"{"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":1}}"#;
        let error = r#"{"error":{"message":"boom","type":"server_error"}}"#;
        let text_mentions_usage =
            r#"{"choices":[{"delta":{"content":"\"usage\": {} and choices: []"}}]}"#;
        let input = format!(
            ": comment\n\ndata: {with_usage_in_choices}\n\ndata: {error}\n\nevent: x\ndata: {text_mentions_usage}\n\n"
        );
        check(&input, &input);
        let mut f = IncludeUsageFilter::new();
        f.push(input.as_bytes());
        assert_eq!(f.dropped(), 0);
    }

    #[test]
    fn null_choices_count_as_usage_only_missing_choices_do_not() {
        let input = "data: {\"choices\":null,\"usage\":{\"prompt_tokens\":1}}\n\ndata: [DONE]\n\n";
        check(input, "data: [DONE]\n\n");
        // No `choices` at all: not a chat chunk (an Anthropic message_delta looks like this).
        let other = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":2}}\n\n";
        check(other, other);
    }

    #[test]
    fn multi_line_data_and_mixed_endings() {
        let input = "data: {\"choices\":[],\r\ndata: \"usage\":{\"total_tokens\":3}}\r\n\r\ndata: [DONE]\n\n";
        check(input, "data: [DONE]\n\n");
    }

    #[test]
    fn leading_blank_lines_pass_and_default_equals_new() {
        let input = format!("\n\r\ndata: {USAGE}\n\ndata: [DONE]\n\n");
        let mut f = IncludeUsageFilter::default();
        let mut out = f.push(input.as_bytes());
        out.extend(f.finish());
        assert_eq!(out, b"\n\r\ndata: [DONE]\n\n");
        check(&input, "\n\r\ndata: [DONE]\n\n");
    }

    #[test]
    fn events_are_released_as_soon_as_complete() {
        let mut f = IncludeUsageFilter::new();
        assert_eq!(f.push(b"data: {\"a\":1}"), b"");
        assert_eq!(f.push(b"\n"), b"");
        assert_eq!(f.push(b"\ndata: x"), b"data: {\"a\":1}\n\n");
        assert_eq!(f.finish(), b"data: x");
    }

    #[test]
    fn oversized_event_streams_through() {
        let big = "y".repeat(MAX_HELD + 10);
        let input = format!("data: {big}\n\ndata: {USAGE}\n\n");
        let mut f = IncludeUsageFilter::new();
        let first = f.push(&input.as_bytes()[..MAX_HELD + 8]);
        assert_eq!(first.len(), MAX_HELD + 8, "released before the event ended");
        let mut all = first;
        all.extend(f.push(&input.as_bytes()[MAX_HELD + 8..]));
        all.extend(f.finish());
        assert_eq!(all, format!("data: {big}\n\n").into_bytes());
    }
}
