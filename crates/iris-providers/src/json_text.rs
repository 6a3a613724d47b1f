//! JSON string text: finding the bytes of a string's contents that need attention, eight at a
//! time; finding a string's end 16 bytes at a time while it is short, then 64 at a time;
//! decoding an escape; writing a string escaped exactly as serde_json escapes it.
//!
//! serde_json looks at a string one byte at a time on both ways, through a 256-entry table;
//! iris writes every capture's document with [`push_json_string`] instead, the request peek's
//! fast path and the whole-answer usage scanner (`body_scan`) pass over strings with
//! [`string_end`], and the session fingerprint (in iris-capture) decodes escapes with
//! [`decode_escape`]. Safe code: the eight bytes are one `u64` word, the 16 one vector and the
//! 64 four vectors of the `wide` crate (SSE2 on x86-64, NEON on aarch64, plain arrays
//! elsewhere), whose comparisons and bit masks are safe calls.

use wide::u8x16;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Where in `word` (eight bytes of text, the first one lowest) there is a byte that ends,
/// escapes or may not stand in a JSON string: `"`, `\` or a control byte (below 0x20). The
/// lowest set bit is in the first such byte; 0 when there is none. (`(x - ONES) & !x & HIGHS`
/// sets the high bit of the lowest zero byte of `x` and of none when there is none; with
/// `n * ONES` subtracted instead, of the lowest byte below `n`. Bits above the lowest may be
/// set spuriously by the borrow, so only the lowest counts.)
#[inline]
fn special(word: u64) -> u64 {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let quote = zero(word ^ (ONES * u64::from(b'"')));
    let backslash = zero(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    quote | backslash | control
}

/// The first byte of `bytes[from..]` that `special` is about, as an index into `bytes`;
/// `bytes.len()` when there is none.
#[inline]
pub fn next_special(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let found = special(u64::from_le_bytes(word));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = bytes.get(i) {
        if c < 0x20 || c == b'"' || c == b'\\' {
            return i;
        }
        i += 1;
    }
    bytes.len()
}

/// The end of a JSON string whose contents start at `bytes[from]` (just past its opening
/// quote): the index of its closing quote, and whether the contents hold escapes. `None` when
/// the string is not well formed the way serde_json checks a string it skips: closed, no raw
/// control byte (below 0x20), every escape one of `\" \\ \/ \b \f \n \r \t` or `\u` and four
/// hex digits (a surrogate's pairing is not checked, as serde_json does not for a skipped
/// string). UTF-8 is not checked.
///
/// Unlike [`next_special`], which stops at each escape, this looks at 64 bytes at a time as
/// three bit masks (quotes, backslashes, control bytes) and finds the escaped bytes with bit
/// arithmetic, so that source code, with an escape every dozen bytes, is read at the pace of
/// text without one. Each mask bit stands for one byte, the first byte lowest.
#[inline]
pub fn string_end(bytes: &[u8], from: usize) -> Option<(usize, bool)> {
    // Most strings of a request or an answer are short (keys, types, names, ids) and end before
    // a first escape: up to four vectors of 16 bytes find their end without building a block's
    // masks (one vector for most keys, where the string is read).
    let mut i = from;
    for _ in 0..4 {
        let Some(chunk) = bytes
            .get(i..i + 16)
            .and_then(|c| <[u8; 16]>::try_from(c).ok())
        else {
            break;
        };
        let v = u8x16::new(chunk);
        let special = (v.simd_eq(u8x16::splat(b'"'))
            | v.simd_eq(u8x16::splat(b'\\'))
            | (v & u8x16::splat(0xE0)).simd_eq(u8x16::splat(0)))
        .to_bitmask();
        if special != 0 {
            let at = i + special.trailing_zeros() as usize;
            if bytes[at] == b'"' {
                return Some((at, false));
            }
            break;
        }
        i += 16;
    }
    string_end_blocks(bytes, i)
}

/// [`string_end`] 64 bytes at a time from `from`, where no escape is open (no backslash of the
/// string comes before it).
#[inline(never)]
fn string_end_blocks(bytes: &[u8], from: usize) -> Option<(usize, bool)> {
    let mut i = from;
    // Whether the block's first byte is escaped by an odd run of backslashes ending the last.
    let mut carry = 0u64;
    let mut escapes = false;
    loop {
        let block = Block::at(bytes, i);
        let backslash = block.backslash & !carry;
        let escaped = escaped_bytes(backslash, carry);
        let quote = block.quote & !escaped;
        // The bytes of the string's contents in this block.
        let inside = if quote == 0 {
            u64::MAX
        } else {
            (1u64 << quote.trailing_zeros()) - 1
        };
        if block.control & inside != 0 {
            return None;
        }
        let letters = escaped & inside;
        if letters != 0 {
            escapes = true;
            let (valid, unicode) = block.escape_letters();
            if letters & !valid != 0 {
                return None;
            }
            let mut unicode = letters & unicode;
            while unicode != 0 {
                let at = i + unicode.trailing_zeros() as usize;
                if !bytes.get(at + 1..at + 5)?.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                unicode &= unicode - 1;
            }
        }
        if quote != 0 {
            return Some((i + quote.trailing_zeros() as usize, escapes));
        }
        carry = escaped_carry(backslash, carry);
        i += 64;
    }
}

/// Bit `k` set where byte `k` of a block is escaped: preceded by an odd run of backslashes.
/// `backslash` holds the block's backslashes that are not themselves escaped by `carry` (bit 0:
/// the block's first byte is escaped). A run that starts on an odd bit escapes the even bits
/// after its start up to one past its end, a run on an even bit the odd ones; adding the
/// odd-started runs' starts to the backslashes turns each odd-started run into one bit past its
/// end and leaves the even-started ones as they are, which tells the two apart.
#[inline]
fn escaped_bytes(backslash: u64, carry: u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let follows = (backslash << 1) | carry;
    let odd_starts = backslash & !EVEN & !follows;
    let runs = odd_starts.wrapping_add(backslash);
    (EVEN ^ (runs << 1)) & follows
}

/// Whether the next block's first byte is escaped: a run started on an odd bit reaches the
/// block's end (the addition in [`escaped_bytes`] carries out of it), or, for runs started on
/// an even bit, never (their length to the end is even).
#[inline]
fn escaped_carry(backslash: u64, carry: u64) -> u64 {
    const EVEN: u64 = 0x5555_5555_5555_5555;
    let follows = (backslash << 1) | carry;
    let odd_starts = backslash & !EVEN & !follows;
    u64::from(odd_starts.overflowing_add(backslash).1)
}

/// 64 bytes from `at` as vectors, with their masks of quotes, backslashes and control bytes
/// (past the end of the text: zero bytes, which count as control bytes, so that a string not
/// closed before the end is refused).
struct Block {
    v: [u8x16; 4],
    quote: u64,
    backslash: u64,
    control: u64,
}

impl Block {
    #[inline]
    fn at(bytes: &[u8], at: usize) -> Block {
        match bytes
            .get(at..at + 64)
            .and_then(|c| <&[u8; 64]>::try_from(c).ok())
        {
            Some(chunk) => Block::of(chunk),
            None => Block::tail(bytes.get(at..).unwrap_or_default()),
        }
    }

    #[cold]
    fn tail(rest: &[u8]) -> Block {
        let mut tail = [0u8; 64];
        tail[..rest.len()].copy_from_slice(rest);
        Block::of(&tail)
    }

    #[inline]
    fn of(chunk: &[u8; 64]) -> Block {
        let v = std::array::from_fn(|k| {
            let mut part = [0u8; 16];
            part.copy_from_slice(&chunk[16 * k..16 * k + 16]);
            u8x16::new(part)
        });
        Block {
            quote: mask(&v, |v| v.simd_eq(u8x16::splat(b'"'))),
            backslash: mask(&v, |v| v.simd_eq(u8x16::splat(b'\\'))),
            control: mask(&v, |v| (v & u8x16::splat(0xE0)).simd_eq(u8x16::splat(0))),
            v,
        }
    }

    /// The bytes that may follow a backslash, and of those the `u`s (which four hex digits
    /// must follow).
    #[inline]
    fn escape_letters(&self) -> (u64, u64) {
        let valid = mask(&self.v, |v| {
            b"/bfnrtu"
                .iter()
                .fold(v.simd_eq(u8x16::splat(b'"')), |m, &c| {
                    m | v.simd_eq(u8x16::splat(c))
                })
        });
        let unicode = mask(&self.v, |v| v.simd_eq(u8x16::splat(b'u')));
        (valid | self.backslash, unicode)
    }
}

/// One bit for each byte of the block where `f` sets the byte's lane, the first byte lowest.
#[inline]
fn mask(v: &[u8x16; 4], f: impl Fn(u8x16) -> u8x16) -> u64 {
    v.iter().enumerate().fold(0, |m, (k, &v)| {
        m | (u64::from(f(v).to_bitmask()) << (16 * k))
    })
}

/// The character of the escape at `bytes[at]` (a `\`) and the escape's length in bytes: a
/// `\uXXXX` escape of a UTF-16 surrogate must be one half of a pair (12 bytes), as serde_json
/// requires when it reads text. `None` for what JSON does not allow.
pub fn decode_escape(bytes: &[u8], at: usize) -> Option<(char, usize)> {
    let c = match *bytes.get(at + 1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hi = hex4(bytes, at + 2)?;
            return match hi {
                0xD800..=0xDBFF => {
                    if bytes.get(at + 6..at + 8) != Some(b"\\u") {
                        return None;
                    }
                    let lo = hex4(bytes, at + 8)?;
                    if !(0xDC00..=0xDFFF).contains(&lo) {
                        return None;
                    }
                    let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    Some((char::from_u32(code)?, 12))
                }
                0xDC00..=0xDFFF => None,
                _ => Some((char::from_u32(hi)?, 6)),
            };
        }
        _ => return None,
    };
    Some((c, 2))
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    let mut v = 0;
    for &d in digits {
        v = v * 16 + char::from(d).to_digit(16)?;
    }
    Some(v)
}

/// Append `text` to `out` as a JSON string, quotes included, byte for byte as serde_json writes
/// it: `"` and `\` behind a backslash, backspace, form feed, newline, carriage return and tab
/// by their letters, other control bytes as `\u00xx`, everything else (`/`, non-ASCII) as is.
pub fn push_json_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = text.as_bytes();
    let mut run = 0;
    loop {
        let at = next_special(bytes, run);
        // `at` is a char boundary: the byte there is ASCII, or the end.
        out.push_str(&text[run..at]);
        let Some(&c) = bytes.get(at) else {
            break;
        };
        match c {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(c >> 4)]));
                out.push(char::from(HEX[usize::from(c & 0xf)]));
            }
        }
        run = at + 1;
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_every_string_as_serde_json_does() {
        // Every byte value below 0x80 in every position of words and their tails, and
        // non-ASCII text around them.
        let mut texts: Vec<String> = vec![String::new(), "plain".into(), "é/ü€😀".into()];
        for c in 0u8..0x80 {
            let ch = char::from(c);
            for pad in 0..17 {
                texts.push(format!("{}{ch}{}", "a".repeat(pad), "é".repeat(pad % 5)));
                texts.push(format!("{ch}{}{ch}", "x".repeat(pad)));
            }
        }
        for t in &texts {
            let mut ours = String::new();
            push_json_string(&mut ours, t);
            assert_eq!(ours, serde_json::to_string(t).unwrap(), "{t:?}");
        }
    }

    /// The end of a string read one byte at a time: what [`string_end`] must agree with.
    fn string_end_bytewise(b: &[u8], from: usize) -> Option<(usize, bool)> {
        let (mut i, mut escapes) = (from, false);
        loop {
            match *b.get(i)? {
                b'"' => return Some((i, escapes)),
                b'\\' => {
                    escapes = true;
                    match *b.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i += 6,
                        _ => return None,
                    }
                }
                c if c < 0x20 => return None,
                _ => i += 1,
            }
        }
    }

    #[test]
    fn string_end_agrees_with_reading_byte_by_byte() {
        // Runs of backslashes of every length across every block boundary, and random text
        // drawn mostly from the bytes that matter.
        for run in 0..70 {
            for at in 0..140 {
                for last in [b'"', b'n', b'u', b'x', 0x01] {
                    let mut b = vec![b'a'; at];
                    b.extend(std::iter::repeat_n(b'\\', run));
                    b.push(last);
                    b.extend_from_slice(b"00a0 tail\" end\"");
                    for from in [0, 1, at.saturating_sub(1)] {
                        assert_eq!(
                            string_end(&b, from),
                            string_end_bytewise(&b, from),
                            "run {run} at {at} last {last} from {from}"
                        );
                    }
                }
            }
        }
        const ALPHABET: &[u8] = b"\\\\\\\"\"unrtbf/x0aF9 \x01\x1f\x7f\xc3\xa9";
        let mut rng = crate::test_rng::Rng(0x5eed);
        for round in 0..200_000 {
            let len = rng.below(200);
            let b: Vec<u8> = (0..len)
                .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                .collect();
            let from = rng.below(3).min(len);
            assert_eq!(
                string_end(&b, from),
                string_end_bytewise(&b, from),
                "round {round}: {:?}",
                String::from_utf8_lossy(&b)
            );
        }
    }

    #[test]
    fn next_special_finds_the_first_in_and_past_every_word() {
        for len in 0..40 {
            for at in 0..=len {
                for c in [b'"', b'\\', 0x00, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    // Bytes past the first special one must not matter, nor high bytes before.
                    if at > 0 {
                        bytes[at - 1] = 0xff;
                    }
                    if at < len {
                        bytes[at] = c;
                        if at + 1 < len {
                            bytes[at + 1] = b'"';
                        }
                    }
                    assert_eq!(next_special(&bytes, 0), at, "{len} {at} {c}");
                }
            }
        }
        assert_eq!(next_special(b"ab\"cd", 3), 5);
    }
}
