//! The peek's fast path: the same reading as the serde peek in `peek.rs`, in one pass over the
//! bytes, on the crate's JSON cursor (`json_scan`, which passes over strings 64 bytes at a time
//! with `json_text::string_end`).
//!
//! A coding agent's request is mostly one or two long strings of source code, with an escape
//! every dozen bytes; serde_json leaves its fast loop at each escape, which made the peek 82%
//! of iris's instructions for a 64 KiB prompt (docs/performance.md, session 18), on the request
//! path before forwarding. This reads such a body about four times faster (a Claude Code body,
//! with more structure and less code, about twice).
//!
//! It only ever answers what the serde peek would answer on success. Wherever the serde peek
//! could fail, or where matching it exactly would take more code than the case is worth, it
//! gives up (`None`) and the serde peek reads the body instead, so every error message and
//! every rare shape stays serde's. It gives up on:
//! - anything that is not well formed, as serde_json judges it;
//! - a key with an escape, where serde decodes keys it compares or hands to a visitor;
//! - `model` that is not a string without escapes, `stream` that is not a boolean or `null`,
//!   `stream_options` that is not an object or `null`, `include_usage` that is not a boolean or
//!   `null`, and a duplicate of any of them;
//! - a number or an escaped string where the serde peek reads any value with `deserialize_any`
//!   (a message, a `role`, `messages` itself): serde converts such a number to f64 (which can
//!   overflow) and decodes such a string (a lone surrogate is an error).
//!
//! Values the serde peek skips (`IgnoredAny`, `RawValue`) are checked here as serde_json's
//! `ignore_value` checks them (the cursor's `skip`): JSON's grammar, strings closed with valid
//! escapes and no raw control byte, a `\u` escape's surrogate pairing not checked, any depth.
//! UTF-8 is checked by the caller over the whole body. The tests below compare the two paths
//! on generated and mutated bodies, and the fuzz target `peek_model` on every body it tries.
//!
//! On the way it notes where `PeekedBody::rewrite` would splice ([`RewriteSpots`]): the text of
//! `model` and of `stream_options` (and of `include_usage` in it), and where the objects end.
//! The cursor is at each of those places anyway, so this costs a few stores, and saves the
//! rewrites their own pass over the body.

use std::borrow::Cow;
use std::ops::Range;

use super::{ChatOpening, OptionsSpot, RewriteSpots, SessionParts};
use crate::json_scan::Cursor;

/// What the fast path read: as `RequestPeek`, with the model borrowed.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Fast<'a> {
    pub(super) model: Option<&'a str>,
    pub(super) stream: bool,
    pub(super) include_usage: Option<bool>,
    pub(super) session: SessionParts,
    pub(super) spots: RewriteSpots,
}

/// Read `text` (a whole request body, valid UTF-8), or give up: see the module's documentation.
pub(super) fn peek(text: &str) -> Option<Fast<'_>> {
    let mut s = Cursor::new(text.as_bytes());
    let mut fast = Fast {
        model: None,
        stream: false,
        include_usage: None,
        session: SessionParts::default(),
        spots: RewriteSpots {
            end: 0,
            members: false,
            model: None,
            stream_options: None,
        },
    };
    let (mut model, mut stream, mut options) = (false, false, false);
    let mut members = false;
    let end = s.object(|s, key| {
        members = true;
        match key {
            b"model" => {
                if std::mem::replace(&mut model, true) {
                    return None;
                }
                let start = s.value_start()?;
                let range = s.plain_string()?;
                fast.model = Some(text.get(range)?);
                fast.spots.model = Some(start..s.i);
            }
            b"stream" => {
                if std::mem::replace(&mut stream, true) {
                    return None;
                }
                fast.stream = s.flag()?.unwrap_or(false);
            }
            b"stream_options" => {
                if std::mem::replace(&mut options, true) {
                    return None;
                }
                let (include_usage, spot) = s.stream_options()?;
                fast.include_usage = include_usage;
                fast.spots.stream_options = Some(spot);
            }
            b"metadata" => fast.session.metadata = Some(s.raw()?),
            b"prompt_cache_key" => fast.session.prompt_cache_key = Some(s.raw()?),
            b"messages" => fast.session.opening = s.messages()?,
            _ => s.skip()?,
        }
        Some(())
    })?;
    if s.peek().is_some() {
        return None;
    }
    fast.spots.end = end;
    fast.spots.members = members;
    Some(fast)
}

/// The top-level members of `text` (a whole body, valid UTF-8), in order: each key and its
/// value's text. `None` where the serde reading could differ (an escaped key, which serde
/// decodes) or refuse; what the rewrites then read through serde.
pub(super) fn members(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    let mut s = Cursor::new(text.as_bytes());
    let mut members = Vec::new();
    s.object(|s, key| {
        let value = s.raw()?;
        members.push((
            Cow::Borrowed(std::str::from_utf8(key).ok()?),
            text.get(value)?,
        ));
        Some(())
    })?;
    if s.peek().is_some() {
        return None;
    }
    Some(members)
}

/// The peek's reading of a request's fields, on the crate's JSON cursor.
impl<'a> Cursor<'a> {
    /// An object's members, the cursor before its `{`: `f(scan, key)` reads each value. Keys
    /// with an escape make it give up. The answer is where its closing `}` is.
    fn object(&mut self, mut f: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<usize> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(self.i - 1);
        }
        loop {
            let key = self.plain_string()?;
            self.eat(b':')?;
            let b = self.b;
            f(self, b.get(key)?)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(self.i - 1);
                }
                _ => return None,
            }
        }
    }

    /// An array's elements, the cursor before its `[`: `f(scan)` reads each one.
    fn array(&mut self, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            f(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string without escapes: the range of its contents (which are then its text).
    #[inline]
    fn plain_string(&mut self) -> Option<Range<usize>> {
        match self.string()? {
            (range, false) => Some(range),
            (_, true) => None,
        }
    }

    /// `true`, `false` or `null` (`None`); anything else gives up.
    fn flag(&mut self) -> Option<Option<bool>> {
        Some(match self.peek()? {
            b't' => self.literal(b"true").map(|()| Some(true))?,
            b'f' => self.literal(b"false").map(|()| Some(false))?,
            b'n' => self.literal(b"null").map(|()| None)?,
            _ => return None,
        })
    }

    /// `stream_options`: `null`, or an object whose `include_usage` is read; and where it is.
    fn stream_options(&mut self) -> Option<(Option<bool>, OptionsSpot)> {
        let start = self.value_start()?;
        if self.b.get(start) == Some(&b'n') {
            self.literal(b"null")?;
            return Some((None, OptionsSpot::Null(start..self.i)));
        }
        let (mut include_usage, mut at, mut members) = (None, None, false);
        let end = self.object(|s, key| {
            members = true;
            if key == b"include_usage" {
                if at.is_some() {
                    return None;
                }
                let start = s.value_start()?;
                include_usage = s.flag()?;
                at = Some(start..s.i);
                Some(())
            } else {
                s.skip()
            }
        })?;
        let spot = OptionsSpot::Object {
            end,
            members,
            include_usage: at,
        };
        Some((include_usage, spot))
    }

    /// Where the next value starts (past whitespace, not consumed).
    #[inline]
    fn value_start(&mut self) -> Option<usize> {
        self.peek()?;
        Some(self.i)
    }

    /// Any value, passed over: its range.
    fn raw(&mut self) -> Option<Range<usize>> {
        self.peek()?;
        let start = self.i;
        self.skip()?;
        Some(start..self.i)
    }

    /// `messages`: `None` for `null`; the opening of an array; an empty opening for any other
    /// value the serde peek accepts there.
    fn messages(&mut self) -> Option<Option<ChatOpening>> {
        let mut opening = ChatOpening::default();
        match self.peek()? {
            b'n' => {
                self.literal(b"null")?;
                return Some(None);
            }
            b'[' => self.array(|s| {
                if opening.first_user.is_some() {
                    return s.skip();
                }
                match s.message()? {
                    (Some(Role::System), content) => opening.system.push(content),
                    (Some(Role::User), content) => opening.first_user = Some(content),
                    (None, _) => {}
                }
                Some(())
            })?,
            _ => self.visited()?,
        }
        Some(Some(opening))
    }

    /// One message before the first user message: its role (`None` unless the last `role` is a
    /// string; other roles are `None` too, as they count for nothing) and its last `content`.
    fn message(&mut self) -> Option<(Option<Role>, Option<Range<usize>>)> {
        if self.peek()? != b'{' {
            self.visited()?;
            return Some((None, None));
        }
        let (mut role, mut content) = (None, None);
        self.object(|s, key| {
            match key {
                b"role" => {
                    role = if s.peek()? == b'"' {
                        let range = s.plain_string()?;
                        match s.b.get(range)? {
                            b"system" | b"developer" => Some(Role::System),
                            b"user" => Some(Role::User),
                            _ => None,
                        }
                    } else {
                        s.visited()?;
                        None
                    };
                }
                b"content" => content = Some(s.raw()?),
                _ => s.skip()?,
            }
            Some(())
        })?;
        Some((role, content))
    }

    /// A value the serde peek reads with `deserialize_any` and then discards: an object's keys
    /// are decoded there (so must have no escape here), its values and an array's elements are
    /// only checked, a string is decoded (so must have no escape), a number is converted (so
    /// gives up).
    fn visited(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(|s, _| s.skip()).map(drop),
            b'[' => self.array(Self::skip),
            b'"' => self.plain_string().map(drop),
            b't' | b'f' | b'n' => self.flag().map(drop),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `system` or `developer`.
    System,
    User,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peek::{
        OptionsSpot, PeekedBody, RewriteSpots, peek_body, peek_request, peek_request_by_serde,
        rewrite_by_rebuilding, rewrite_member_by,
    };
    use crate::test_rng::Rng;
    use std::ops::Range;

    const STRINGS: &[&str] = &[
        r#""gpt-4o""#,
        r#""system""#,
        r#""developer""#,
        r#""user""#,
        r#""assistant""#,
        r#""""#,
        r#""us\u0065r""#,
        r#""a\"b\\c\/d\n\t\r\b\f""#,
        r#""\ud83d\ude00 pair""#,
        r#""\ud83d lone""#,
        r#""\udc00""#,
        r#""\u12g4""#,
        r#""\x""#,
        "\"raw \u{1} control\"",
        "\"caf\u{e9} \u{1F600}\"",
        r#""fn main() {\n    println!(\"hi\\n\");\n}\n""#,
    ];

    const NUMBERS: &[&str] = &[
        "0",
        "7",
        "-0",
        "12.5",
        "1e3",
        "1E-2",
        "2.5e+1",
        "1e400",
        "-1e400",
        "01",
        "1.",
        "-",
        "18446744073709551616",
    ];

    const KEYS: &[&str] = &[
        "model",
        "stream",
        "stream_options",
        "include_usage",
        "metadata",
        "prompt_cache_key",
        "messages",
        "role",
        "content",
        "max_tokens",
        "tools",
        "mod\\u0065l",
        "r\\u006fle",
        "x",
    ];

    fn ws(r: &mut Rng, out: &mut String) {
        if r.chance(15) {
            out.push_str(r.pick(&[" ", "\n", "\t", "\r\n  "]));
        }
    }

    /// Any value, nesting up to `depth`.
    fn value(r: &mut Rng, depth: usize, out: &mut String) {
        ws(r, out);
        match r.below(if depth == 0 { 3 } else { 6 }) {
            0 => out.push_str(r.pick(NUMBERS)),
            1 if r.chance(20) => long_string(r, out),
            1 => out.push_str(r.pick(STRINGS)),
            2 => out.push_str(r.pick(&["null", "true", "false"])),
            3 | 4 => object(r, depth - 1, out, value),
            _ => array(r, depth - 1, out, value),
        }
        ws(r, out);
    }

    fn object(
        r: &mut Rng,
        depth: usize,
        out: &mut String,
        mut member: impl FnMut(&mut Rng, usize, &mut String),
    ) {
        out.push('{');
        for i in 0..r.below(5) {
            if i > 0 {
                out.push(',');
            }
            ws(r, out);
            out.push('"');
            out.push_str(r.pick(KEYS));
            out.push_str("\":");
            member(r, depth, out);
        }
        ws(r, out);
        out.push('}');
    }

    fn array(
        r: &mut Rng,
        depth: usize,
        out: &mut String,
        mut element: impl FnMut(&mut Rng, usize, &mut String),
    ) {
        out.push('[');
        for i in 0..r.below(4) {
            if i > 0 {
                out.push(',');
            }
            element(r, depth, out);
        }
        ws(r, out);
        out.push(']');
    }

    /// A string of 50–300 bytes, so that it spans the scan's 64-byte blocks: text with escapes
    /// (runs of backslashes among them), now and then a broken one or a raw control byte.
    fn long_string(r: &mut Rng, out: &mut String) {
        const PIECES: &[&str] = &[
            "fn main() {",
            "\\n",
            "\\\"",
            "\\\\",
            "\\\\\\\"",
            "\\t",
            "\\u00e9",
            "\\ud83d\\ude00",
            "    ",
            "caf\u{e9}",
            "x",
            "abcdefghijklmnop",
        ];
        const BROKEN: &[&str] = &["\\x", "\\u12g4", "\u{1}", "\\"];
        out.push('"');
        let len = 50 + r.below(250);
        let start = out.len();
        while out.len() - start < len {
            out.push_str(r.pick(PIECES));
        }
        if r.chance(10) {
            let at = start + r.below(out.len() - start);
            if out.is_char_boundary(at) {
                out.insert_str(at, r.pick(BROKEN));
            }
        }
        out.push('"');
    }

    /// A chat message: mostly an object with a role and a content.
    fn message(r: &mut Rng, out: &mut String) {
        if r.chance(10) {
            return value(r, 2, out);
        }
        out.push('{');
        let mut first = true;
        for key in ["role", "content", "role", "name", "content"] {
            if r.chance(if first { 90 } else { 20 }) {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(&format!("\"{key}\":"));
                ws(r, out);
                match key {
                    "role" if r.chance(85) => out.push_str(r.pick(&STRINGS[..7])),
                    "content" if r.chance(30) => long_string(r, out),
                    "content" if r.chance(60) => out.push_str(r.pick(STRINGS)),
                    _ => value(r, 2, out),
                }
            }
        }
        out.push('}');
    }

    /// A request body: mostly the members the peek reads, in their usual shapes.
    fn body(r: &mut Rng) -> String {
        let mut out = String::new();
        ws(r, &mut out);
        out.push('{');
        for i in 0..r.below(7) {
            if i > 0 {
                out.push(',');
            }
            let key = r.pick(KEYS);
            out.push_str(&format!("\"{key}\":"));
            ws(r, &mut out);
            match key {
                "model" if r.chance(80) => out.push_str(r.pick(&STRINGS[..6])),
                "stream" | "include_usage" if r.chance(80) => {
                    out.push_str(r.pick(&["true", "false", "null"]))
                }
                "stream_options" if r.chance(80) => {
                    object(r, 1, &mut out, |r, _, out| {
                        if r.chance(70) {
                            out.push_str(r.pick(&["true", "false", "null"]))
                        } else {
                            value(r, 1, out)
                        }
                    });
                }
                "messages" if r.chance(85) => {
                    array(r, 0, &mut out, |r, _, out| message(r, out));
                }
                _ => value(r, 3, &mut out),
            }
            ws(r, &mut out);
        }
        out.push('}');
        ws(r, &mut out);
        out
    }

    #[test]
    fn the_fast_path_reads_what_serde_reads() {
        let mut r = Rng(0x51ED_270B_2F0C_99A1);
        let (mut accepted, mut fast, mut refused) = (0, 0, 0);
        let (mut rewritten, mut rewritten_fast) = (0, 0);
        for case in 0..60_000 {
            let mut doc = body(&mut r).into_bytes();
            // Some cases get up to three single-byte edits.
            if r.chance(40) {
                r.edit(&mut doc);
            }
            let want = peek_request_by_serde(&doc);
            let got = peek_request(&doc);
            assert_eq!(got, want, "case {case}: {}", String::from_utf8_lossy(&doc));
            // The rewrites read the top-level members by the fast path too.
            for key in ["model", "stream_options"] {
                let rewrite = |fast| {
                    rewrite_member_by(
                        &doc,
                        key,
                        |old| Ok(format!("[{}]", old.unwrap_or("0"))),
                        fast,
                    )
                };
                assert_eq!(
                    rewrite(true),
                    rewrite(false),
                    "case {case}, {key}: {}",
                    String::from_utf8_lossy(&doc)
                );
            }
            if let Ok(text) = std::str::from_utf8(&doc) {
                let by_serde = serde_json::from_str::<crate::peek::OrderedObject<'_>>(text);
                rewritten += usize::from(by_serde.is_ok());
                rewritten_fast += usize::from(members(text).is_some());
            }
            if want.is_ok() {
                accepted += 1;
                let text = std::str::from_utf8(&doc).unwrap_or_default();
                fast += usize::from(peek(text).is_some());
            } else {
                refused += 1;
            }
        }
        // Every outcome in earnest: most accepted bodies take the fast path, and many are
        // refused (by both).
        assert!(
            accepted > 15_000 && refused > 15_000,
            "{accepted} {refused}"
        );
        assert!(fast * 10 > accepted * 7, "{fast} of {accepted}");
        assert!(
            rewritten_fast * 10 > rewritten * 7,
            "{rewritten_fast} of {rewritten}"
        );
    }

    /// The members of the object `text` but those named `except`, each as its key and text.
    fn kept<'t>(text: &'t str, except: &[&str]) -> Vec<(Cow<'t, str>, &'t str)> {
        let mut all = members(text).unwrap_or_else(|| panic!("not read: {text}"));
        all.retain(|(k, _)| !except.contains(&k.as_ref()));
        all
    }

    #[test]
    fn the_splice_means_what_the_two_rewrites_mean() {
        const MODELS: &[Option<&str>] = &[None, Some("gpt-4o"), Some("a\"b\\c\u{1F600}\u{1}")];
        let mut r = Rng(0x9E37_79B9_7F4A_7C15);
        let (mut spliced, mut rebuilt) = (0, 0);
        for case in 0..60_000 {
            let mut doc = body(&mut r).into_bytes();
            if r.chance(20) {
                r.edit(&mut doc);
            }
            let Ok(peeked) = peek_body(&doc) else {
                continue;
            };
            let p = &peeked.peek;
            let text = std::str::from_utf8(&doc).unwrap_or_default();
            // The spots hold what the peek read.
            if let Some(spots) = &peeked.spots {
                assert_eq!(doc.get(spots.end), Some(&b'}'), "case {case}: {text}");
                let model = spots.model.clone().map(|at| &text[at]);
                let model = model.map(|m| serde_json::from_str::<String>(m).unwrap());
                assert_eq!(model, p.model, "case {case}: {text}");
                match &spots.stream_options {
                    Some(OptionsSpot::Null(at)) => assert_eq!(&text[at.clone()], "null"),
                    Some(OptionsSpot::Object {
                        end,
                        members,
                        include_usage,
                    }) => {
                        assert_eq!(doc.get(*end), Some(&b'}'), "case {case}: {text}");
                        let usage = include_usage.clone().map(|at| &text[at]);
                        assert_eq!(
                            usage.and_then(|u| serde_json::from_str::<Option<bool>>(u).unwrap()),
                            p.include_usage,
                            "case {case}: {text}"
                        );
                        let inside = text[..*end].trim_end();
                        assert_eq!(!inside.ends_with('{'), *members, "case {case}: {text}");
                    }
                    None => assert_eq!(p.include_usage, None, "case {case}: {text}"),
                }
            }
            let model = MODELS[r.below(MODELS.len())];
            let include_usage = r.chance(70);
            let want = rewrite_by_rebuilding(&doc, p, model, include_usage);
            let got = peeked.rewrite(model, include_usage);
            let (want, got) = match (want, got) {
                (Ok(Some(want)), Ok(Some(got))) => (want, got),
                (Ok(None), Ok(None)) => continue,
                (Err(want), Err(got)) => {
                    assert_eq!(
                        std::mem::discriminant(&want),
                        std::mem::discriminant(&got),
                        "case {case}: {text}"
                    );
                    continue;
                }
                (want, got) => panic!("case {case}: {want:?} but {got:?}: {text}"),
            };
            // The same JSON value; where a number is beyond f64 (`1e400`, valid JSON that a
            // `Value` refuses), neither reads as one and the members are compared below.
            let value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
            let out = std::str::from_utf8(&got).unwrap();
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(out).is_ok(),
                "case {case}: {out}"
            );
            assert_eq!(
                value(&got),
                value(&want),
                "case {case}: {text} became {out}"
            );
            let again = peek_request(&got).unwrap();
            assert_eq!(again.model.as_deref(), model.or(p.model.as_deref()));
            if include_usage {
                assert_eq!(again.include_usage, Some(true), "case {case}: {out}");
            }
            let Some(spots) = &peeked.spots else {
                // Without spots it is the two calls.
                assert_eq!(got, want, "case {case}: {text}");
                rebuilt += 1;
                continue;
            };
            spliced += 1;
            // Every member not rewritten keeps its text and place, in `stream_options` too.
            let routed = ["model", "stream_options"];
            assert_eq!(
                kept(out, &routed),
                kept(text, &routed),
                "case {case}: {out}"
            );
            if let Some(OptionsSpot::Object { .. }) = spots.stream_options {
                let inner = |t| {
                    kept(t, &[])
                        .into_iter()
                        .find(|(k, _)| k == "stream_options")
                        .map(|(_, v)| v)
                        .unwrap()
                };
                assert_eq!(
                    kept(inner(out), &["include_usage"]),
                    kept(inner(text), &["include_usage"]),
                    "case {case}: {out}"
                );
            }
        }
        // Both ways in earnest: the splice mostly, the two calls where the peek read by serde.
        assert!(spliced > 10_000 && rebuilt > 1_000, "{spliced} {rebuilt}");
    }

    /// The splice checks what stands at each spot and rebuilds the body when it is not what the
    /// peek saw: a bug in the fast path's offsets costs a second read, never a wrong body.
    #[test]
    fn spots_that_do_not_hold_what_the_peek_saw_are_not_spliced() {
        let body = br#"{"stream_options":{"include_usage":false,"a":1},"model":"p/m"}"#;
        let peeked = peek_body(body).unwrap();
        let rebuilt = rewrite_by_rebuilding(body, &peeked.peek, Some("m"), true).unwrap();
        // As the peek found them the spots splice: `include_usage` stays where it was, where the
        // two calls move it to the end of `stream_options`.
        let spliced = peeked.rewrite(Some("m"), true).unwrap();
        assert_eq!(
            spliced.as_deref(),
            Some(&br#"{"stream_options":{"include_usage":true,"a":1},"model":"m"}"#[..])
        );
        assert_ne!(spliced, rebuilt);
        let spots = peeked.spots.clone().unwrap();
        let Some(OptionsSpot::Object {
            end: options_end,
            members,
            include_usage: Some(usage_at),
        }) = spots.stream_options.clone()
        else {
            panic!("{spots:?}")
        };
        let model_at = spots.model.clone().unwrap();
        let options = |end: usize, include_usage: Option<Range<usize>>| {
            Some(OptionsSpot::Object {
                end,
                members,
                include_usage,
            })
        };
        let wrong: Vec<RewriteSpots> = vec![
            // `model`'s value one byte off (no longer a quoted string).
            RewriteSpots {
                model: Some(model_at.start + 1..model_at.end),
                ..spots.clone()
            },
            RewriteSpots {
                model: Some(model_at.start..body.len() + 3),
                ..spots.clone()
            },
            // The object's end not at a `}`, or past the body.
            RewriteSpots {
                end: spots.end - 1,
                ..spots.clone()
            },
            RewriteSpots {
                end: body.len(),
                ..spots.clone()
            },
            // `include_usage`'s value not a literal.
            RewriteSpots {
                stream_options: options(options_end, Some(usage_at.start - 1..usage_at.end)),
                ..spots.clone()
            },
            // `stream_options`'s end not at a `}`.
            RewriteSpots {
                stream_options: options(options_end - 1, None),
                ..spots.clone()
            },
            // `null` where there is none.
            RewriteSpots {
                stream_options: Some(OptionsSpot::Null(usage_at.clone())),
                ..spots.clone()
            },
            // Edits that run backwards: the object's end (here a `}`, of `stream_options`)
            // before `model`'s value.
            RewriteSpots {
                end: options_end,
                stream_options: None,
                ..spots.clone()
            },
        ];
        // Its `Debug` never shows the body.
        let shown = format!("{peeked:?}");
        assert!(
            shown.contains(&format!("body_bytes: {}", body.len())),
            "{shown}"
        );
        assert!(!shown.contains("include_usage\\\":false"), "{shown}");
        assert!(!shown.contains("34, 115"), "{shown}"); // `"s` as bytes
        for spots in wrong {
            let odd = PeekedBody {
                spots: Some(spots.clone()),
                ..peeked.clone()
            };
            assert_eq!(odd.rewrite(Some("m"), true).unwrap(), rebuilt, "{spots:?}");
        }
    }

    #[test]
    fn every_escape_at_every_offset_of_a_long_string_reads_as_serde_reads() {
        // In the content of the opening user message (a range the peek must get exactly) and in
        // a value only passed over, strings of up to 140 bytes cross the scan's first words and
        // its 64-byte blocks at every offset.
        let inserts = [
            "\\\"", "\\\\", "\\n", "\\u00e9", "\\x", "\\u12g", "\u{1}", "\"", "\\",
        ];
        let mut fast = 0;
        for len in 0..140 {
            for at in 0..=len {
                for insert in inserts {
                    let text = format!("{}{insert}{}", "a".repeat(at), "b".repeat(len - at));
                    for body in [
                        format!(
                            r#"{{"model":"m","messages":[{{"role":"user","content":"{text}"}}]}}"#
                        ),
                        format!(r#"{{"tools":["{text}"],"model":"m"}}"#),
                    ] {
                        let got = peek_request(body.as_bytes());
                        assert_eq!(got, peek_request_by_serde(body.as_bytes()), "{body}");
                        fast += usize::from(peek(&body).is_some());
                    }
                }
            }
        }
        // The valid escapes (four of the nine) take the fast path.
        assert!(fast > 2 * 4 * 140 * 70, "{fast}");
    }

    #[test]
    fn the_fast_path_gives_up_where_serde_could_refuse() {
        for body in [
            // Numbers serde reads as f64 where it reads any value.
            r#"{"messages":[{"role":1e400}]}"#,
            r#"{"messages":[1e400]}"#,
            r#"{"messages":1e400}"#,
            // Strings serde decodes there.
            r#"{"messages":[{"role":"\ud800"}]}"#,
            r#"{"messages":["\ud800"]}"#,
            r#"{"model":"\ud800"}"#,
            // Keys serde decodes.
            r#"{"\ud800":1}"#,
            r#"{"messages":[{"role":{"\ud800":1}}]}"#,
            // Duplicates of what routes the request.
            r#"{"model":"a","model":"b"}"#,
            r#"{"stream":true,"stream":false}"#,
            r#"{"stream_options":{"include_usage":true,"include_usage":false}}"#,
        ] {
            assert_eq!(peek(body), None, "{body}");
        }
        // Brackets that pair up in number but not in kind.
        for body in [r#"{"x":[{"a":1]}}"#, r#"{"x":[1}}"#, r#"{"x":{"a":[}]}"#] {
            assert_eq!(peek(body), None, "{body}");
            assert!(peek_request(body.as_bytes()).is_err(), "{body}");
        }
        // Nesting to any depth, as serde_json's `ignore_value` passes over it.
        let nested = |n: usize| format!(r#"{{"x":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        for depth in [128, 129, 1_000] {
            let body = nested(depth);
            assert!(peek(&body).is_some(), "{depth}");
            assert!(peek_request_by_serde(body.as_bytes()).is_ok(), "{depth}");
        }
    }

    #[test]
    fn the_fast_path_reads_a_coding_agents_request() {
        let code = "fn main() {\n    println!(\"hi \\\\ there\");\n}\n".repeat(2_000);
        let body = serde_json::json!({
            "model": "claude-opus-4-8",
            "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "metadata": {"user_id": "user_1_account_2_session_3"},
            "messages": [
                {"role": "system", "content": "Be careful."},
                {"role": "user", "content": [{"type": "text", "text": code}]},
                {"role": "assistant", "content": "ok"},
            ],
        })
        .to_string();
        let fast = peek(&body).expect("the fast path reads it");
        assert_eq!(fast.model, Some("claude-opus-4-8"));
        assert!(fast.stream);
        let want = peek_request_by_serde(body.as_bytes()).unwrap();
        assert_eq!(fast.session, want.session);
        let opening = fast.session.opening.unwrap();
        assert_eq!(&body[opening.system[0].clone().unwrap()], "\"Be careful.\"");
        assert!(body[opening.first_user.clone().unwrap().unwrap()].len() > code.len());
    }
}
