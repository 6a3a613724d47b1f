//! A cursor over JSON text for the crate's two one-pass readers: the request peek's fast path
//! (`peek/scan.rs`) and the whole-answer usage scanner (`body_scan.rs`). Each adds the reading
//! of its own fields (methods in its own module); what they share is here: whitespace,
//! strings (passed over with [`string_end`]), numbers, literals, and passing over any value.
//!
//! What it accepts is what serde_json's `ignore_value` accepts: JSON's grammar, strings closed
//! with valid escapes and no raw control byte (a `\u` escape's surrogate pairing not checked),
//! numbers by JSON's grammar (not converted), nesting to any depth. UTF-8 is not checked. A
//! method that returns `None` has refused the text; the cursor is then anywhere.

use std::ops::Range;

use crate::json_text::string_end;

pub(crate) struct Cursor<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) i: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(b: &'a [u8]) -> Self {
        Cursor { b, i: 0 }
    }

    /// The next byte that is not JSON whitespace, not consumed.
    #[inline]
    pub(crate) fn peek(&mut self) -> Option<u8> {
        // Compact JSON has no whitespace: one comparison for most tokens (every whitespace
        // byte is at most a space).
        let &c = self.b.get(self.i)?;
        if c > b' ' {
            return Some(c);
        }
        self.past_whitespace()
    }

    /// [`peek`](Self::peek) on whitespace or a control byte.
    fn past_whitespace(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if !matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(c);
            }
            self.i += 1;
        }
        None
    }

    /// `want`, after whitespace, consumed.
    #[inline]
    pub(crate) fn eat(&mut self, want: u8) -> Option<()> {
        (self.peek()? == want).then(|| self.i += 1)
    }

    /// A string, after whitespace: the range of its contents (between the quotes) and whether
    /// they hold escapes. The cursor ends past the closing quote.
    #[inline]
    pub(crate) fn string(&mut self) -> Option<(Range<usize>, bool)> {
        self.eat(b'"')?;
        let (end, escaped) = string_end(self.b, self.i)?;
        let contents = self.i..end;
        self.i = end + 1;
        Some((contents, escaped))
    }

    /// A number by JSON's grammar, the cursor on its first byte: whether it is an integer (no
    /// fraction, no exponent).
    pub(crate) fn number(&mut self) -> Option<bool> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut integer = true;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.b.get(self.i)?.is_ascii_digit().then_some(())?;
            self.digits();
            integer = false;
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.b.get(self.i)?.is_ascii_digit().then_some(())?;
            self.digits();
            integer = false;
        }
        Some(integer)
    }

    #[inline]
    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    /// `word` (`true`, `false` or `null`), the cursor on its first byte.
    pub(crate) fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.b.get(self.i..)?.starts_with(word).then(|| {
            self.i += word.len();
        })
    }

    /// Any one value, after whitespace, checked and passed over. Nesting is kept as bits, so no
    /// depth of input can exhaust the thread's stack, and none below 128 allocates.
    pub(crate) fn skip(&mut self) -> Option<()> {
        let mut open = Nesting::default();
        loop {
            // A value.
            match self.peek()? {
                start @ (b'{' | b'[') => {
                    let object = start == b'{';
                    self.i += 1;
                    if self.peek()? == if object { b'}' } else { b']' } {
                        self.i += 1;
                    } else {
                        open.push(object);
                        if object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b'0'..=b'9' | b'-' => {
                    self.number()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return None,
            }
            // What follows a value: the next element or member, or the end of containers.
            loop {
                let Some(object) = open.innermost() else {
                    return Some(());
                };
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if object {
                            self.member_key()?;
                        }
                        break;
                    }
                    b'}' if object => {}
                    b']' if !object => {}
                    _ => return None,
                }
                self.i += 1;
                if open.pop() {
                    return Some(());
                }
            }
        }
    }

    /// `"key":` of a member being passed over (its key only checked).
    fn member_key(&mut self) -> Option<()> {
        self.string()?;
        self.eat(b':')
    }
}

/// The containers a value being passed over is in, innermost last: one bit each (1 for an
/// object), 128 to a word.
#[derive(Default)]
struct Nesting {
    /// The innermost up to 128, the innermost in the lowest bit.
    top: u128,
    len: usize,
    /// Full words of the outer ones.
    below: Vec<u128>,
}

impl Nesting {
    fn push(&mut self, object: bool) {
        if self.len > 0 && self.len.is_multiple_of(128) {
            self.below.push(self.top);
            self.top = 0;
        }
        self.top = (self.top << 1) | u128::from(object);
        self.len += 1;
    }

    /// Whether the innermost container is an object; `None` outside every container (the value
    /// was the whole of what is passed over).
    fn innermost(&self) -> Option<bool> {
        (self.len > 0).then_some(self.top & 1 == 1)
    }

    /// Close the innermost container: whether that was the outermost.
    fn pop(&mut self) -> bool {
        self.top >>= 1;
        self.len -= 1;
        if self.len > 0 && self.len.is_multiple_of(128) {
            self.top = self.below.pop().unwrap_or_default();
        }
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(text: &str) -> Option<usize> {
        let mut c = Cursor::new(text.as_bytes());
        c.skip()?;
        Some(c.i)
    }

    #[test]
    fn passes_over_any_depth_of_mixed_containers() {
        for depth in [1, 2, 127, 128, 129, 255, 256, 257, 1000] {
            // Objects and arrays alternating, so a lost or wrong bit closes the wrong kind.
            let (mut open, mut close) = (String::new(), String::new());
            for d in 0..depth {
                if d % 3 == 0 {
                    open.push_str(r#"{"k":"#);
                    close.insert(0, '}');
                } else {
                    open.push('[');
                    close.insert_str(0, ",1]");
                }
            }
            let text = format!("{open}0{close} tail");
            assert_eq!(skipped(&text), Some(text.len() - 5), "depth {depth}");
            // One closing bracket of the wrong kind, anywhere, is refused.
            for at in (0..close.len()).filter(|&at| matches!(&close[at..=at], "}" | "]")) {
                let mut wrong = close.clone().into_bytes();
                wrong[at] = if wrong[at] == b'}' { b']' } else { b'}' };
                let text = format!("{open}0{}", String::from_utf8(wrong).unwrap());
                assert_eq!(skipped(&text), None, "depth {depth}, at {at}");
            }
        }
    }

    #[test]
    fn refuses_what_serde_refuses() {
        for text in [
            "",
            "[",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{1:2}",
            "[1 2]",
            "[01]",
            "1.",
            "-",
            "1e",
            "tru",
            "nul",
            "\"\\x\"",
            "\"a",
            "+1",
            ".5",
            "[}",
            "{]",
        ] {
            assert_eq!(skipped(text), None, "{text:?}");
            assert!(
                serde_json::from_str::<serde::de::IgnoredAny>(text).is_err(),
                "{text:?}"
            );
        }
        for text in [
            "0",
            "-0.5e+7",
            "[]",
            "{}",
            "[{},[],\"\",null,true,false]",
            "\"\\ud800\"",
        ] {
            assert_eq!(skipped(text), Some(text.len()), "{text:?}");
        }
    }
}
