//! The capture document: the JSON the API serves for a capture, and the compact text the store
//! keeps instead.
//!
//! A small chat's capture is mostly header text, and escaping it into JSON cost more than the
//! rest of storing the capture but compressing it. Most captures are never opened, so the store
//! keeps each field as it is, length-prefixed ([`Capture::to_stored_text`]), and
//! [`crate::stored_document`] writes the JSON when one is read. Documents stored as JSON by
//! earlier versions stay readable: a compact one begins with [`COMPACT`], which no JSON text
//! does.
//!
//! The compact form: [`COMPACT`], then each field as `<length in bytes>:<text>` (decimal length),
//! an absent optional field as `-`. In order: request id, status, method, path, the number of
//! request headers and each name and value, the same for the response headers, request body,
//! response body (both optional), the three flags as one field of `0`/`1` (request truncated,
//! response truncated, raw events truncated), the reassembled message as JSON (optional), the
//! deferred reassembly's API family (optional) and, when that is present, its SSE flag (`0`/`1`).

use std::fmt::Write as _;

use iris_providers::json_text::push_json_string;

use crate::capture::Capture;
use crate::headers::HeaderList;

/// The first bytes of a compact document.
pub const COMPACT: &str = "\u{1}iris-capture-1\n";

/// A capture document's fields, borrowed from a [`Capture`] or from a compact document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Doc<'a> {
    pub request_id: &'a str,
    pub status: u16,
    pub method: &'a str,
    pub path: &'a str,
    pub request_headers: Vec<(&'a str, &'a str)>,
    pub response_headers: Vec<(&'a str, &'a str)>,
    pub request_body: Option<&'a str>,
    pub response_body: Option<&'a str>,
    pub request_truncated: bool,
    pub response_truncated: bool,
    /// The reassembled message as JSON; `None` is `null`.
    pub reassembled: Option<&'a str>,
    pub raw_events_truncated: bool,
    /// The deferred reassembly's API family and whether the answer was SSE.
    pub deferred: Option<(&'a str, bool)>,
}

impl<'a> Doc<'a> {
    /// The fields of `capture`; `reassembled` is its message as JSON.
    pub fn of(
        capture: &'a Capture,
        request_id: &'a str,
        status: u16,
        reassembled: Option<&'a str>,
    ) -> Doc<'a> {
        Doc {
            request_id,
            status,
            method: &capture.method,
            path: &capture.path,
            request_headers: capture.request_headers.iter().collect(),
            response_headers: capture.response_headers.iter().collect(),
            request_body: capture.request_body.as_deref(),
            response_body: capture.response_body.as_deref(),
            request_truncated: capture.request_truncated,
            response_truncated: capture.response_truncated,
            reassembled,
            raw_events_truncated: capture.raw_events_truncated,
            deferred: (capture.deferred.as_ref()).map(|d| (d.api_family.as_str(), d.sse)),
        }
    }

    /// The JSON document: `request_id` and `status` first, then the capture's own fields in
    /// their declared order, byte for byte what serde_json writes for them.
    pub fn to_json(&self) -> String {
        fn headers(out: &mut String, list: &[(&str, &str)]) {
            out.push('[');
            for (i, (name, value)) in list.iter().enumerate() {
                out.push_str(if i == 0 { "[" } else { ",[" });
                push_json_string(out, name);
                out.push(',');
                push_json_string(out, value);
                out.push(']');
            }
            out.push(']');
        }
        fn text(out: &mut String, value: Option<&str>) {
            match value {
                Some(v) => push_json_string(out, v),
                None => out.push_str("null"),
            }
        }
        let mut out = String::with_capacity(self.json_capacity());
        out.push_str("{\"request_id\":");
        push_json_string(&mut out, self.request_id);
        // Writing to a String cannot fail.
        let _ = write!(out, ",\"status\":{},\"method\":", self.status);
        push_json_string(&mut out, self.method);
        out.push_str(",\"path\":");
        push_json_string(&mut out, self.path);
        out.push_str(",\"request_headers\":");
        headers(&mut out, &self.request_headers);
        out.push_str(",\"response_headers\":");
        headers(&mut out, &self.response_headers);
        out.push_str(",\"request_body\":");
        text(&mut out, self.request_body);
        out.push_str(",\"response_body\":");
        text(&mut out, self.response_body);
        out.push_str(",\"request_truncated\":");
        out.push_str(flag(self.request_truncated));
        out.push_str(",\"response_truncated\":");
        out.push_str(flag(self.response_truncated));
        out.push_str(",\"reassembled\":");
        out.push_str(self.reassembled.unwrap_or("null"));
        out.push_str(",\"raw_events_truncated\":");
        out.push_str(flag(self.raw_events_truncated));
        if let Some((family, sse)) = self.deferred {
            out.push_str(",\"deferred\":{\"api_family\":");
            push_json_string(&mut out, family);
            out.push_str(",\"sse\":");
            out.push_str(flag(sse));
            out.push('}');
        }
        out.push('}');
        out
    }

    /// What [`to_json`](Self::to_json) reserves: enough unless escapes lengthen the texts.
    pub fn json_capacity(&self) -> usize {
        /// The keys, punctuation, `null`s and flags (239 bytes at most), and a little room.
        const FIXED: usize = 248;
        /// `,"deferred":{"api_family":"","sse":false}`.
        const DEFERRED: usize = 41;
        // Per pair: `["",""]` and the comma before the next.
        let pairs = |list: &[(&str, &str)]| -> usize {
            list.iter().map(|(n, v)| n.len() + v.len() + 8).sum()
        };
        FIXED
            + self.request_id.len()
            + self.method.len()
            + self.path.len()
            + pairs(&self.request_headers)
            + pairs(&self.response_headers)
            + self.request_body.map_or(0, str::len)
            + self.response_body.map_or(0, str::len)
            + self.reassembled.map_or(0, str::len)
            + self.deferred.map_or(0, |(f, _)| DEFERRED + f.len())
    }

    /// The fields of a compact document (`text` without [`COMPACT`]); `None` if it is damaged.
    pub fn parse_compact(text: &'a str) -> Option<Doc<'a>> {
        let mut r = Reader { rest: text };
        let request_id = r.text()?;
        let status = u16::try_from(r.number()?).ok()?;
        let method = r.text()?;
        let path = r.text()?;
        let request_headers = r.pairs()?;
        let response_headers = r.pairs()?;
        let request_body = r.optional()?;
        let response_body = r.optional()?;
        let [request_truncated, response_truncated, raw_events_truncated] = match r.text()? {
            flags if flags.len() == 3 => {
                let b = flags.as_bytes();
                [bit(b[0])?, bit(b[1])?, bit(b[2])?]
            }
            _ => return None,
        };
        let reassembled = r.optional()?;
        // Written into the JSON as it is: it must be one JSON value. Checked without building it
        // and without a nesting limit (a tool's arguments may nest as deep as serde_json reads
        // them, and sit three levels down in the message).
        if let Some(json) = reassembled
            && serde_json::from_str::<&serde_json::value::RawValue>(json).is_err()
        {
            return None;
        }
        let deferred = match r.optional()? {
            Some(family) => match r.text()?.as_bytes() {
                &[b] => Some((family, bit(b)?)),
                _ => return None,
            },
            None => None,
        };
        r.rest.is_empty().then_some(Doc {
            request_id,
            status,
            method,
            path,
            request_headers,
            response_headers,
            request_body,
            response_body,
            request_truncated,
            response_truncated,
            reassembled,
            raw_events_truncated,
            deferred,
        })
    }
}

fn flag(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

fn bit(b: u8) -> Option<bool> {
    match b {
        b'0' => Some(false),
        b'1' => Some(true),
        _ => None,
    }
}

/// Appends compact fields.
struct Writer {
    out: String,
    digits: itoa::Buffer,
}

impl Writer {
    fn text(&mut self, t: &str) {
        // Most texts are header names and values, shorter than 100 bytes: their length is
        // written digit by digit, not through the formatter (with a copy of its output).
        let n = t.len();
        let digit = |d: usize| char::from(b'0' + (d % 10) as u8);
        if n < 10 {
            self.out.push(digit(n));
        } else if n < 100 {
            self.out.push(digit(n / 10));
            self.out.push(digit(n));
        } else {
            self.out.push_str(self.digits.format(n));
        }
        self.out.push(':');
        self.out.push_str(t);
    }

    fn optional(&mut self, t: Option<&str>) {
        match t {
            Some(t) => self.text(t),
            None => self.out.push('-'),
        }
    }

    /// A number, as the text of its digits.
    fn number(&mut self, n: usize) {
        self.text(itoa::Buffer::new().format(n));
    }

    fn pairs(&mut self, list: &HeaderList) {
        self.number(list.len());
        for (n, v) in list {
            self.text(n);
            self.text(v);
        }
    }
}

/// `digits` as a number: decimal digits only (`str::parse` would also take a sign).
fn decimal(digits: &str) -> Option<usize> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads compact fields; every `None` means a damaged document.
struct Reader<'a> {
    rest: &'a str,
}

impl<'a> Reader<'a> {
    fn text(&mut self) -> Option<&'a str> {
        // A length has at most 20 digits.
        let head = &self.rest.as_bytes()[..self.rest.len().min(21)];
        let colon = head.iter().position(|&b| b == b':')?;
        let len = decimal(self.rest.get(..colon)?)?;
        let start = colon + 1;
        let end = start.checked_add(len)?;
        let text = self.rest.get(start..end)?;
        self.rest = self.rest.get(end..)?;
        Some(text)
    }

    fn optional(&mut self) -> Option<Option<&'a str>> {
        match self.rest.strip_prefix('-') {
            Some(rest) => {
                self.rest = rest;
                Some(None)
            }
            None => self.text().map(Some),
        }
    }

    /// A field of decimal digits only.
    fn number(&mut self) -> Option<usize> {
        decimal(self.text()?)
    }

    fn pairs(&mut self) -> Option<Vec<(&'a str, &'a str)>> {
        let n = self.number()?;
        // Each pair takes at least four bytes ("0:0:"): a damaged count cannot make this
        // reserve more than the document could hold.
        let mut out = Vec::with_capacity(n.min(self.rest.len() / 4));
        for _ in 0..n {
            out.push((self.text()?, self.text()?));
        }
        Some(out)
    }
}

impl Capture {
    /// The capture as the store keeps it (see the module docs): [`crate::stored_document`] makes
    /// the JSON document of it, the same as [`to_stored_json`](Self::to_stored_json)'s.
    pub fn to_stored_text(&self, request_id: &str, status: u16) -> String {
        let reassembled = self
            .reassembled
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok());
        let texts = request_id.len()
            + self.method.len()
            + self.path.len()
            + self.request_headers.text_len()
            + self.response_headers.text_len()
            + self.request_body.as_ref().map_or(0, String::len)
            + self.response_body.as_ref().map_or(0, String::len)
            + reassembled.as_ref().map_or(0, String::len)
            + self.deferred.as_ref().map_or(0, |d| d.api_family.len());
        // Prefixes: up to 20 fixed fields and two per header, each taken as `nnnnn:` (a longer
        // one, for a text of 100 kB or more, fits in what the short fixed fields leave over).
        let fields = 20 + 2 * (self.request_headers.len() + self.response_headers.len());
        let mut w = Writer {
            out: String::with_capacity(COMPACT.len() + texts + 6 * fields + 8),
            digits: itoa::Buffer::new(),
        };
        w.out.push_str(COMPACT);
        w.text(request_id);
        w.number(usize::from(status));
        w.text(&self.method);
        w.text(&self.path);
        w.pairs(&self.request_headers);
        w.pairs(&self.response_headers);
        w.optional(self.request_body.as_deref());
        w.optional(self.response_body.as_deref());
        let b = |v: bool| if v { '1' } else { '0' };
        w.out.push_str("3:");
        w.out.push(b(self.request_truncated));
        w.out.push(b(self.response_truncated));
        w.out.push(b(self.raw_events_truncated));
        w.optional(reassembled.as_deref());
        match &self.deferred {
            Some(d) => {
                w.text(&d.api_family);
                w.out.push_str("1:");
                w.out.push(b(d.sse));
            }
            None => w.out.push('-'),
        }
        w.out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::capture::DeferredReassembly;
    use crate::reassemble::{Reassembled, ToolCall};

    /// Captures with awkward texts, every flag, a deferred reassembly and a reassembled tool
    /// call (the capture module's tests use them too).
    pub(crate) fn cases() -> Vec<Capture> {
        let awkward = "q\"b\\s/ \u{1}\u{8}\u{c}\n\r\t\u{1f}\u{7f} é€😀 0:1-2 0123456789";
        let base = Capture {
            method: "POST".into(),
            path: "/v1/chat/completions?x=\"1\"".into(),
            request_headers: [("content-type", "application/json"), ("x-odd", awkward)]
                .into_iter()
                .collect(),
            response_headers: HeaderList::new(),
            request_body: None,
            response_body: None,
            request_truncated: false,
            response_truncated: true,
            reassembled: None,
            raw_events_truncated: false,
            deferred: None,
        };
        let mut c = base.clone();
        c.request_headers = HeaderList::new();
        c.response_headers = [("server", "mock"), ("", ""), ("12:x", awkward)]
            .into_iter()
            .collect();
        c.request_body = Some(awkward.repeat(3));
        c.response_body = Some(String::new());
        c.deferred = Some(DeferredReassembly {
            api_family: "anthropic_messages".into(),
            sse: true,
        });
        let mut d = c.clone();
        d.deferred = None;
        d.request_truncated = true;
        d.raw_events_truncated = true;
        d.method = String::new();
        d.reassembled = Some(Reassembled {
            text: awkward.into(),
            thinking: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: serde_json::json!({"city": awkward, "n": [1, 2.5, 1e300, null]}),
            }],
            stop_reason: Some("tool_calls".into()),
        });
        vec![base, c, d]
    }

    #[test]
    fn a_compact_document_reads_back_as_the_fields_it_was_written_from() {
        for (n, c) in cases().iter().enumerate() {
            for (id, status) in [
                ("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 200),
                ("", 0),
                ("-", 65535),
            ] {
                let text = c.to_stored_text(id, status);
                let reassembled =
                    (c.reassembled.as_ref()).map(|r| serde_json::to_string(r).unwrap());
                let want = Doc::of(c, id, status, reassembled.as_deref());
                let got = Doc::parse_compact(text.strip_prefix(COMPACT).unwrap());
                assert_eq!(got.as_ref(), Some(&want), "case {n}");
                // Its JSON is the capture's document, byte for byte.
                assert_eq!(want.to_json(), c.to_stored_json(id, status), "case {n}");
                assert!(text.len() <= text.capacity() && text.capacity() < text.len() + 256);
            }
        }
    }

    #[test]
    fn every_length_of_text_reads_back() {
        // Lengths up to 99 are written digit by digit, longer ones through the formatter.
        for len in (0..=130).chain([999, 1000, 100_000]) {
            let mut c = cases()[0].clone();
            let v = "é".repeat(len / 2) + &"x".repeat(len % 2);
            assert_eq!(v.len(), len);
            c.request_headers = [("x-len", v.as_str()), (v.as_str(), "")]
                .into_iter()
                .collect();
            c.request_body = Some(v.clone());
            let text = c.to_stored_text("id", 200);
            let want = Doc::of(&c, "id", 200, None);
            let got = Doc::parse_compact(text.strip_prefix(COMPACT).unwrap());
            assert_eq!(got.as_ref(), Some(&want), "length {len}");
        }
    }

    #[test]
    fn a_damaged_compact_document_is_refused_and_never_panics() {
        let c = &cases()[2];
        let text = c.to_stored_text("req-1", 200);
        let body = text.strip_prefix(COMPACT).unwrap();
        for cut in 0..body.len() {
            if let Some(part) = body.get(..cut) {
                assert_eq!(Doc::parse_compact(part), None, "cut at {cut}");
            }
        }
        let mut longer = body.to_owned();
        longer.push('-');
        assert_eq!(Doc::parse_compact(&longer), None);
        // Any byte changed: refused or read as some other document, never a panic, never
        // invalid JSON.
        let bytes = body.as_bytes();
        for i in 0..bytes.len() {
            for b in [b'0', b'9', b':', b'-', b'x', 0xff] {
                let mut m = bytes.to_vec();
                m[i] = b;
                if let Ok(m) = std::str::from_utf8(&m)
                    && let Some(doc) = Doc::parse_compact(m)
                {
                    serde_json::from_str::<&serde_json::value::RawValue>(&doc.to_json()).unwrap();
                }
            }
        }
        for bad in ["", "x", "99999999999999999999999:a", "1:a", "-"] {
            assert_eq!(Doc::parse_compact(bad), None, "{bad:?}");
        }
        // Numbers are digits only, a flag is one digit.
        let plain = Capture {
            deferred: Some(DeferredReassembly {
                api_family: "openai_chat".into(),
                sse: false,
            }),
            ..cases()[0].clone()
        };
        let text = plain.to_stored_text("r", 200);
        let body = text.strip_prefix(COMPACT).unwrap();
        assert!(Doc::parse_compact(body).is_some());
        let signed = body.replacen("3:200", "3:+20", 1);
        assert_ne!(signed, body);
        assert_eq!(Doc::parse_compact(&signed), None);
        assert!(body.ends_with("1:0"));
        let long_flag = format!("{}2:0x", &body[..body.len() - 3]);
        assert_eq!(Doc::parse_compact(&long_flag), None);
        // Served through `stored_document`: an error, not text.
        assert_eq!(
            crate::stored_document(
                format!("{COMPACT}{}", &body[..body.len() - 1]),
                None,
                None,
                &crate::Redactor::default()
            ),
            Err(crate::DamagedDocument)
        );
    }

    /// The document served for `c` stored compactly, without bodies beside it.
    fn served(c: &Capture) -> String {
        crate::stored_document(
            c.to_stored_text("r", 200),
            None,
            None,
            &crate::Redactor::default(),
        )
        .unwrap()
    }

    #[test]
    fn deeply_nested_tool_arguments_do_not_make_the_document_unreadable() {
        // As deep as serde_json reads arguments on their own (128 levels), three levels further
        // down inside the message.
        let mut args = String::from("1");
        for _ in 0..127 {
            args = format!("[{args}]");
        }
        let arguments: serde_json::Value = serde_json::from_str(&args).unwrap();
        let c = Capture {
            reassembled: Some(Reassembled {
                text: String::new(),
                thinking: String::new(),
                tool_calls: vec![ToolCall {
                    id: "c".into(),
                    name: "deep".into(),
                    arguments,
                }],
                stop_reason: None,
            }),
            ..cases()[0].clone()
        };
        let served = served(&c);
        assert!(served.contains(&args), "{served}");
        assert_eq!(served, c.to_stored_json("r", 200));
    }

    #[test]
    fn a_deferred_reassembly_without_a_stored_body_reads_as_none() {
        let c = Capture {
            response_body: None,
            deferred: Some(DeferredReassembly {
                api_family: "openai_chat".into(),
                sse: false,
            }),
            ..cases()[0].clone()
        };
        let served = served(&c);
        let v: serde_json::Value = serde_json::from_str(&served).unwrap();
        assert_eq!(v["reassembled"], serde_json::Value::Null);
        assert_eq!(v["response_body"], serde_json::Value::Null);
        assert!(v.get("deferred").is_none(), "{served}");
    }
}
