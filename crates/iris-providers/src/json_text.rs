//! JSON string text: finding the bytes of a string's contents that need attention, eight at a
//! time; decoding an escape; writing a string escaped exactly as serde_json escapes it.
//!
//! serde_json looks at a string one byte at a time on both ways, through a 256-entry table;
//! iris reads every non-streaming answer (`body_scan`) and writes every capture's document with
//! these instead, and the session fingerprint (in iris-capture) decodes escapes with
//! [`decode_escape`]. Safe code: the eight bytes are one `u64` word.

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

/// The first byte of `bytes[from..]` that [`special`] is about, as an index into `bytes`;
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
