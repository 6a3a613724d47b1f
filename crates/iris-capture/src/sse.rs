//! A small incremental Server-Sent Events parser for reassembly (the subset LLM APIs use): lines
//! end in `\n`, `\r\n` or `\r`, chunks may split anywhere, `event:` names the event, `data:`
//! lines are joined with `\n`, `:` lines are comments, a blank line dispatches. One event is
//! held up to `max_event` bytes; a larger one is dropped (and counted) and parsing carries on.
//!
//! (iris-providers has its own parser for the request path; this one is off the path, so it
//! only needs to be bounded, not allocation-free.)

/// A complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Event {
    pub name: String,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub(crate) struct SseParser {
    max_event: usize,
    line: Vec<u8>,
    line_too_long: bool,
    after_cr: bool,
    first_line: bool,
    name: String,
    data: Vec<u8>,
    has_data: bool,
    skip: bool,
    /// Events dropped for being larger than `max_event`.
    pub dropped: usize,
}

impl SseParser {
    pub(crate) fn new(max_event: usize) -> Self {
        SseParser {
            max_event,
            line: Vec::new(),
            line_too_long: false,
            after_cr: false,
            first_line: true,
            name: String::new(),
            data: Vec::new(),
            has_data: false,
            skip: false,
            dropped: 0,
        }
    }

    pub(crate) fn feed(&mut self, mut chunk: &[u8], out: &mut impl FnMut(Event)) {
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', chunk) {
            let eol = chunk[i];
            self.push_partial(&chunk[..i]);
            self.end_line(out);
            chunk = &chunk[i + 1..];
            if eol == b'\r' {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.push_partial(chunk);
    }

    /// End of input: an unterminated last line and event still count.
    pub(crate) fn finish(&mut self, out: &mut impl FnMut(Event)) {
        if !self.line.is_empty() || self.line_too_long {
            self.end_line(out);
        }
        self.process(b"", out);
    }

    fn push_partial(&mut self, part: &[u8]) {
        if self.line_too_long || part.is_empty() {
            return;
        }
        if self.line.len() + part.len() + self.data.len() > self.max_event {
            self.line_too_long = true;
            self.line = Vec::new();
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn end_line(&mut self, out: &mut impl FnMut(Event)) {
        if self.line_too_long {
            self.line_too_long = false;
            self.drop_event();
            return;
        }
        let line = std::mem::take(&mut self.line);
        self.process(&line, out);
        self.line = line;
        self.line.clear();
    }

    fn drop_event(&mut self) {
        if !self.skip {
            self.dropped += 1;
        }
        self.skip = true;
        self.data = Vec::new();
        self.has_data = false;
    }

    fn process(&mut self, mut line: &[u8], out: &mut impl FnMut(Event)) {
        if self.first_line {
            self.first_line = false;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            if self.has_data && !self.skip {
                out(Event {
                    name: std::mem::take(&mut self.name),
                    data: std::mem::take(&mut self.data),
                });
            }
            self.name.clear();
            self.data.clear();
            self.has_data = false;
            self.skip = false;
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
                self.name = String::from_utf8_lossy(&value[..value.len().min(128)]).into_owned();
            }
            b"data" if !self.skip => {
                if self.data.len() + value.len() + 1 > self.max_event {
                    self.drop_event();
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

    fn parse(input: &[u8], step: usize, max: usize) -> (Vec<(String, String)>, usize) {
        let mut p = SseParser::new(max);
        let mut got = Vec::new();
        let mut sink = |e: Event| got.push((e.name, String::from_utf8_lossy(&e.data).into_owned()));
        for c in input.chunks(step.max(1)) {
            p.feed(c, &mut sink);
        }
        p.finish(&mut sink);
        (got, p.dropped)
    }

    #[test]
    fn splits_and_line_endings_do_not_matter() {
        let input = "\u{feff}event: a\r\ndata: 1\r\ndata:2\r\n\r\n: comment\n\ndata: x\rdata: y\r\revent: b\ndata: é€\n\ndata: tail";
        let want = vec![
            ("a".to_owned(), "1\n2".to_owned()),
            (String::new(), "x\ny".to_owned()),
            ("b".to_owned(), "é€".to_owned()),
            (String::new(), "tail".to_owned()),
        ];
        for step in [1, 2, 3, 5, 7, 1000] {
            assert_eq!(
                parse(input.as_bytes(), step, 1 << 20),
                (want.clone(), 0),
                "{step}"
            );
        }
    }

    #[test]
    fn oversized_events_are_dropped_and_counted() {
        let big = "x".repeat(300);
        let input = format!("data: ok1\n\ndata: {big}\ndata: more\n\ndata: ok2\n\n");
        for step in [1, 7, 1000] {
            let (events, dropped) = parse(input.as_bytes(), step, 100);
            assert_eq!(
                events,
                vec![(String::new(), "ok1".into()), (String::new(), "ok2".into())]
            );
            assert_eq!(dropped, 1, "{step}");
        }
    }
}
