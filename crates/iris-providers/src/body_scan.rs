//! The `model` and `usage` of a whole non-streaming answer, read in one validating pass.
//!
//! Every non-streaming answer iris relays is read here once, after its last byte went to the
//! client. Deserializing it with serde into the provider shapes of `usage.rs` (unknown fields
//! skipped) cost about 11,000 instructions for a small chat answer, the largest item of the
//! usage path: serde_json checks every key it compares for UTF-8, matches it through the
//! derived field visitor, and walks each skipped value through its generic machinery. This
//! scanner does the same job in one pass over the bytes, passing over string contents 64 bytes
//! at a time (`json_text::string_end`), for about 5,900 (release build, the benchmark mock's
//! 589-byte answer; ~8,100 pretty-printed). (ARCHITECTURE.md, "Why some things are our own
//! code".)
//!
//! What it accepts is what `serde_json::from_slice` into those shapes accepts, and it reads the
//! same values from it; `usage.rs`'s tests compare the two on tens of thousands of generated and
//! mutated documents. In particular:
//! - the whole body must be one JSON object followed only by whitespace; strings must be closed,
//!   with valid escapes and no raw control characters; numbers must follow JSON's grammar;
//! - a known key given twice (`usage`, `prompt_tokens`, …) makes the body malformed, like
//!   serde's derived structs do; unknown keys may repeat;
//! - a field of an unexpected type reads as absent (a token count that is a string, a `usage`
//!   that is `null`), and a token count that is a non-negative float is truncated;
//! - where a known field holds a scalar, it is read whatever its type, as serde_json does
//!   before its visitor refuses it: a number past f64's range there is malformed, and so is a
//!   string whose escapes do not decode to text. Skipped values are only checked.
//!
//! Where it differs, on purpose:
//! - a top-level array is malformed (serde would fill the struct positionally from it);
//! - keys and skipped strings are not checked for UTF-8, only text that is read (`model`, a
//!   string in a known field): a reply whose keys or content carry a broken byte sequence still
//!   has its usage counted, where serde_json would call it malformed.

use crate::json_scan::Cursor;
use crate::json_text::decode_escape;
use crate::usage::TokenUsage;

/// The body is not one well-formed answer object.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

type R<T> = Result<T, Malformed>;

/// The dialect of the body: which keys hold the model and the usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// OpenAI chat, completions and embeddings: `usage.prompt_tokens`, `completion_tokens`,
    /// `prompt_tokens_details.cached_tokens`, `completion_tokens_details.reasoning_tokens`.
    OpenAi,
    /// OpenAI Responses: `usage.input_tokens`, `output_tokens`,
    /// `input_tokens_details.cached_tokens`, `output_tokens_details.reasoning_tokens`.
    Responses,
    /// Anthropic messages: `usage.input_tokens`, `output_tokens`,
    /// `cache_creation_input_tokens`, `cache_read_input_tokens`.
    Anthropic,
}

/// What a well-formed body says: the model that answered and the usage, each when present.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BodyFields {
    pub(crate) model: Option<String>,
    pub(crate) usage: Option<TokenUsage>,
}

pub(crate) fn read_body(shape: Shape, body: &[u8]) -> R<BodyFields> {
    let mut c = Cursor::new(body);
    let mut out = BodyFields::default();
    // `fields` refuses anything but an object: a top-level array too.
    match shape {
        Shape::OpenAi | Shape::Responses => {
            c.fields([b"model", b"usage", b"error"], |c, k| {
                match k {
                    0 => out.model = c.text()?,
                    1 => out.usage = c.openai_usage(shape)?,
                    _ => c.error_info()?,
                }
                Ok(())
            })?;
        }
        Shape::Anthropic => {
            c.fields([b"model", b"usage"], |c, k| {
                match k {
                    0 => out.model = c.text()?,
                    _ => out.usage = c.anthropic_usage()?,
                }
                Ok(())
            })?;
        }
    }
    if c.peek().is_some() {
        return Err(Malformed);
    }
    Ok(out)
}

/// The reading of an answer's fields, on the crate's JSON cursor (which checks the grammar and
/// passes over strings and skipped values).
impl<'a> Cursor<'a> {
    /// An object's members, the cursor on its `{`: `f(cursor, n)` reads the value of `names[n]`;
    /// the values of other keys are skipped. A name met twice is malformed.
    fn fields<const N: usize>(
        &mut self,
        names: [&[u8]; N],
        mut f: impl FnMut(&mut Self, usize) -> R<()>,
    ) -> R<()> {
        self.eat(b'{').ok_or(Malformed)?;
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        let mut seen = 0u32;
        loop {
            let found = self.key_in(&names)?;
            self.eat(b':').ok_or(Malformed)?;
            match found {
                Some(k) => {
                    if seen & (1 << k) != 0 {
                        return Err(Malformed);
                    }
                    seen |= 1 << k;
                    f(self, k)?;
                }
                None => self.skip().ok_or(Malformed)?,
            }
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(Malformed),
            }
        }
    }

    /// An object read by `f`, or any other value passed over: whether it was an object.
    fn lenient(&mut self, f: impl FnOnce(&mut Self) -> R<()>) -> R<bool> {
        if self.peek() == Some(b'{') {
            f(self)?;
            Ok(true)
        } else {
            self.other()?;
            Ok(false)
        }
    }

    /// A value of another type than the field's, passed over. serde_json reads a scalar here
    /// before its visitor refuses it, so it is read here too: a number must be in f64's range,
    /// a string's escapes must decode to text, and so must an object's keys. Anything inside
    /// an array, and an object's values, are only checked.
    fn other(&mut self) -> R<()> {
        match self.peek() {
            Some(b'{') => self.fields([], |_, _| Ok(()))?,
            Some(b'0'..=b'9' | b'-') => {
                self.tokens()?;
            }
            Some(b'"') => {
                self.text()?;
            }
            _ => self.skip().ok_or(Malformed)?,
        }
        Ok(())
    }

    fn openai_usage(&mut self, shape: Shape) -> R<Option<TokenUsage>> {
        let names: [&[u8]; 4] = match shape {
            Shape::Responses => [
                b"input_tokens",
                b"output_tokens",
                b"input_tokens_details",
                b"output_tokens_details",
            ],
            _ => [
                b"prompt_tokens",
                b"completion_tokens",
                b"prompt_tokens_details",
                b"completion_tokens_details",
            ],
        };
        let mut u = TokenUsage::default();
        let present = self.lenient(|c| {
            c.fields(names, |c, k| {
                match k {
                    0 => u.input_tokens = c.tokens()?.unwrap_or(0),
                    1 => u.output_tokens = c.tokens()?.unwrap_or(0),
                    2 => u.cache_read_tokens = c.detail(b"cached_tokens")?,
                    _ => u.reasoning_tokens = c.detail(b"reasoning_tokens")?,
                }
                Ok(())
            })
        })?;
        Ok(present.then_some(u))
    }

    /// `{"<name>": count}`; 0 when absent or not an object.
    fn detail(&mut self, name: &[u8]) -> R<u64> {
        let mut n = 0;
        self.lenient(|c| {
            c.fields([name], |c, _| {
                n = c.tokens()?.unwrap_or(0);
                Ok(())
            })
        })?;
        Ok(n)
    }

    fn anthropic_usage(&mut self) -> R<Option<TokenUsage>> {
        let mut u = TokenUsage::default();
        let present = self.lenient(|c| {
            c.fields(
                [
                    b"input_tokens",
                    b"output_tokens",
                    b"cache_creation_input_tokens",
                    b"cache_read_input_tokens",
                ],
                |c, k| {
                    let n = c.tokens()?.unwrap_or(0);
                    match k {
                        0 => u.input_tokens = n,
                        1 => u.output_tokens = n,
                        2 => u.cache_write_tokens = n,
                        _ => u.cache_read_tokens = n,
                    }
                    Ok(())
                },
            )
        })?;
        Ok(present.then_some(u))
    }

    /// `error`: nothing of it is kept from a whole body, but it is held to the same shape
    /// (`type` and `code` at most once each).
    fn error_info(&mut self) -> R<()> {
        self.lenient(|c| {
            c.fields([b"type", b"code"], |c, _| {
                c.text()?;
                Ok(())
            })
        })?;
        Ok(())
    }

    /// A string's text; any other value reads as absent.
    fn text(&mut self) -> R<Option<String>> {
        if self.peek() != Some(b'"') {
            self.other()?;
            return Ok(None);
        }
        let (raw, escaped) = self.string().ok_or(Malformed)?;
        let raw = &self.b[raw];
        let bytes = if escaped {
            unescape(raw)?
        } else {
            raw.to_vec()
        };
        String::from_utf8(bytes).map(Some).map_err(|_| Malformed)
    }

    /// A key: which of `names` it is (unescaped first when it has escapes), if any.
    #[inline]
    fn key_in<const N: usize>(&mut self, names: &[&[u8]; N]) -> R<Option<usize>> {
        let (raw, escaped) = self.string().ok_or(Malformed)?;
        let raw = &self.b[raw];
        if escaped {
            let key = unescape(raw)?;
            return Ok(names.iter().position(|n| *n == key.as_slice()));
        }
        Ok(names.iter().position(|n| *n == raw))
    }

    /// A token count: a non-negative number (a fraction truncated, past u64 saturated); `-0`
    /// is 0; any other value reads as absent.
    fn tokens(&mut self) -> R<Option<u64>> {
        match self.peek() {
            Some(b'0'..=b'9' | b'-') => {
                let start = self.i;
                let integer = self.number().ok_or(Malformed)?;
                count(&self.b[start..self.i], integer)
            }
            _ => {
                self.other()?;
                Ok(None)
            }
        }
    }
}

/// The value of a token count from its JSON number text (already checked by `number`).
fn count(text: &[u8], integer: bool) -> R<Option<u64>> {
    let negative = text[0] == b'-';
    if integer && !negative {
        let mut n: u64 = 0;
        let exact = text.iter().try_for_each(|&d| {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            Some(())
        });
        if exact.is_some() {
            return Ok(Some(n));
        }
    }
    // A fraction, an exponent, a negative number or an integer past u64: as f64, which must be
    // finite. The text is ASCII digits, signs, `.` and `e`.
    let v: f64 = std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Malformed)?;
    if !v.is_finite() {
        return Err(Malformed);
    }
    // `as` saturates; -0 counts as 0, any other negative number is not a count.
    Ok((v >= 0.0).then_some(v as u64))
}

/// A string's raw bytes with their escapes decoded (`string` checked their shape; a `\u`
/// escape of a UTF-16 surrogate must also be one half of a pair).
fn unescape(raw: &[u8]) -> R<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'\\', &raw[i..]) {
        out.extend_from_slice(&raw[i..i + at]);
        let (ch, len) = decode_escape(raw, i + at).ok_or(Malformed)?;
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        i += at + len;
    }
    out.extend_from_slice(&raw[i..]);
    Ok(out)
}
