//! An incremental Server-Sent Events parser with bounded memory (WHATWG SSE, the parts LLM APIs
//! use): lines end in `\n`, `\r\n` or `\r`, and a chunk may split anywhere, including between the
//! `\r` and `\n` of one line ending or inside a UTF-8 character (the parser works on bytes and
//! only hands out complete events). `event:` names the event; `data:` lines are joined with `\n`;
//! lines starting with `:` are comments; `id:` and `retry:` are ignored; a blank line dispatches.
//!
//! Memory: one event (its pending line plus its data) is held at most up to `max_event` bytes.
//! A larger event is dropped and its remaining lines skipped until its blank line; the parser
//! then carries on with the next event.

use memchr::memchr2;

/// Receives parsed events.
pub trait SseSink {
    /// Whether the data of an event named `name` (empty when no `event:` line came before the
    /// data) is worth keeping. Returning false saves the copy.
    fn wants_data(&self, name: &[u8]) -> bool;
    /// A complete event with at least one `data:` line.
    fn on_event(&mut self, name: &[u8], data: &[u8]);
}

/// Event names longer than this cannot be one iris looks for; they are replaced by a marker.
const MAX_EVENT_NAME: usize = 128;
/// After an unusually large event, give back memory above this capacity.
const KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct SseParser {
    max_event: usize,
    /// The current line when it spans chunks.
    line: Vec<u8>,
    /// The current line was too long and is being skipped up to its end.
    line_overflow: bool,
    /// The last byte seen was `\r`: a `\n` first in the next chunk belongs to that line ending.
    after_cr: bool,
    /// No line processed yet (a leading UTF-8 BOM is dropped from the first line).
    first_line: bool,
    name: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The current event is being ignored (too large, or not wanted).
    skip_event: bool,
    /// Events dropped for being larger than `max_event`.
    dropped: usize,
}

impl SseParser {
    pub fn new(max_event: usize) -> Self {
        SseParser {
            max_event,
            line: Vec::new(),
            line_overflow: false,
            after_cr: false,
            first_line: true,
            name: Vec::new(),
            data: Vec::new(),
            has_data: false,
            skip_event: false,
            dropped: 0,
        }
    }

    /// Events dropped so far for being larger than `max_event`.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The current event is too large: drop it and count it.
    fn overflow(&mut self) {
        self.dropped += 1;
        self.drop_event();
    }

    pub fn feed(&mut self, chunk: &[u8], sink: &mut impl SseSink) {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        while let Some(i) = memchr2(b'\n', b'\r', rest) {
            let eol = rest[i];
            let (content, after) = (&rest[..i], &rest[i + 1..]);
            if self.line.is_empty() && !self.line_overflow {
                self.process_line(content, sink);
            } else {
                self.append_partial(content);
                let line = std::mem::take(&mut self.line);
                if self.line_overflow {
                    self.line_overflow = false;
                    // The oversized line was part of this event: the event is incomplete.
                    self.overflow();
                } else {
                    self.process_line(&line, sink);
                }
                self.line = line;
                self.line.clear();
                if self.line.capacity() > KEEP_CAPACITY {
                    self.line = Vec::new();
                }
            }
            rest = after;
            if eol == b'\r' {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.append_partial(rest);
    }

    /// End of input: a last line without its line ending, and a last event without its blank
    /// line, still count (better to record usage than lose it; a truncated JSON body will simply
    /// not parse).
    pub fn finish(&mut self, sink: &mut impl SseSink) {
        if self.line_overflow {
            self.line_overflow = false;
            self.overflow();
        } else if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, sink);
        }
        self.process_line(b"", sink);
    }

    fn append_partial(&mut self, part: &[u8]) {
        if part.is_empty() || self.line_overflow {
            return;
        }
        if self.line.len() + part.len() + self.data.len() > self.max_event {
            self.line_overflow = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn drop_event(&mut self) {
        self.skip_event = true;
        self.data.clear();
        if self.data.capacity() > KEEP_CAPACITY {
            self.data = Vec::new();
        }
        self.has_data = false;
    }

    fn process_line(&mut self, mut line: &[u8], sink: &mut impl SseSink) {
        if self.first_line {
            self.first_line = false;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            if self.has_data && !self.skip_event {
                sink.on_event(&self.name, &self.data);
            }
            self.name.clear();
            self.data.clear();
            if self.data.capacity() > KEEP_CAPACITY {
                self.data = Vec::new();
            }
            self.has_data = false;
            self.skip_event = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(p) => {
                let v = &line[p + 1..];
                (&line[..p], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.name.clear();
                if value.len() <= MAX_EVENT_NAME {
                    self.name.extend_from_slice(value);
                } else {
                    self.name.extend_from_slice(b"\0oversized");
                }
            }
            b"data" => {
                if self.skip_event {
                    return;
                }
                if !sink.wants_data(&self.name) {
                    self.drop_event();
                    return;
                }
                if self.data.len() + value.len() + 1 > self.max_event {
                    self.overflow();
                    return;
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        events: Vec<(String, String)>,
        unwanted: Vec<&'static [u8]>,
    }

    impl SseSink for Collect {
        fn wants_data(&self, name: &[u8]) -> bool {
            !self.unwanted.contains(&name)
        }
        fn on_event(&mut self, name: &[u8], data: &[u8]) {
            self.events.push((
                String::from_utf8_lossy(name).into_owned(),
                String::from_utf8_lossy(data).into_owned(),
            ));
        }
    }

    fn parse_split(input: &[u8], step: usize, max: usize, unwanted: &[&'static [u8]]) -> Collect {
        let mut p = SseParser::new(max);
        let mut c = Collect {
            unwanted: unwanted.to_vec(),
            ..Collect::default()
        };
        for chunk in input.chunks(step.max(1)) {
            p.feed(chunk, &mut c);
        }
        p.finish(&mut c);
        c
    }

    fn check(input: &str, expect: &[(&str, &str)]) {
        for step in [input.len().max(1), 1, 2, 3, 7] {
            let got = parse_split(input.as_bytes(), step, 1 << 20, &[]).events;
            let want: Vec<(String, String)> = expect
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect();
            assert_eq!(got, want, "step {step} input {input:?}");
        }
    }

    #[test]
    fn line_endings_fields_and_comments() {
        check("data: a\n\n", &[("", "a")]);
        check("data: a\r\n\r\n", &[("", "a")]);
        check("data: a\r\rdata: b\r\r", &[("", "a"), ("", "b")]);
        // A split between \r and \n must not make an extra (blank) line.
        check("event: x\r\ndata: 1\r\ndata: 2\r\n\r\n", &[("x", "1\n2")]);
        check(
            "event: x\ndata: 1\ndata:2\ndata:  3\n\n",
            &[("x", "1\n2\n 3")],
        );
        check(": ping\n\n:\n\ndata: z\n\n", &[("", "z")]);
        check("id: 7\nretry: 10\ndata\n\n", &[("", "")]);
        check("event: only-a-name\n\n", &[]);
        check("\u{feff}data: bom\n\n", &[("", "bom")]);
        check("data: é€😀\r\n\r\n", &[("", "é€😀")]);
        // A last event without its blank line still counts.
        check("data: a\n\ndata: tail", &[("", "a"), ("", "tail")]);
        // Event names reset after each dispatch.
        check("event: a\ndata: 1\n\ndata: 2\n\n", &[("a", "1"), ("", "2")]);
    }

    #[test]
    fn oversized_event_is_skipped_and_parsing_recovers() {
        let big = "x".repeat(5000);
        let input = format!("data: small\n\ndata: {big}\ndata: more\n\ndata: after\n\n");
        for step in [input.len(), 1, 7, 100] {
            let got = parse_split(input.as_bytes(), step, 1000, &[]).events;
            assert_eq!(
                got,
                vec![
                    ("".to_owned(), "small".to_owned()),
                    ("".to_owned(), "after".to_owned())
                ],
                "step {step}"
            );
        }
        // Many data lines, each small, adding up past the limit.
        let many = "data: 0123456789\n".repeat(200);
        let input = format!("{many}\ndata: ok\n\n");
        for step in [input.len(), 1, 13] {
            let got = parse_split(input.as_bytes(), step, 1000, &[]).events;
            assert_eq!(got, vec![("".to_owned(), "ok".to_owned())], "step {step}");
        }
        // Dropped events are counted (captures mark themselves truncated by it); unwanted ones
        // are not.
        let mut p = SseParser::new(1000);
        let mut sink = Collect::default();
        p.feed(
            format!(
                "data: {big}

data: ok

"
            )
            .as_bytes(),
            &mut sink,
        );
        p.finish(&mut sink);
        assert_eq!(p.dropped(), 1);
    }

    #[test]
    fn unwanted_events_are_not_buffered() {
        let input = "event: skip\ndata: 1\n\nevent: keep\ndata: 2\n\n";
        let got = parse_split(input.as_bytes(), 3, 1 << 20, &[b"skip"]).events;
        assert_eq!(got, vec![("keep".to_owned(), "2".to_owned())]);
    }
}
