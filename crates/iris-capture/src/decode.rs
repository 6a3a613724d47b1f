//! Decoding bodies by their `Content-Encoding`, with a hard cap on the output.
//!
//! Supported codings: `gzip` (and `x-gzip`; concatenated members are read), `deflate` (both the
//! RFC-correct zlib-wrapped form and the raw DEFLATE stream some servers send; told apart by the
//! zlib header), `br`, `zstd`, and `identity`. A list such as `gzip, br` means gzip was applied
//! first, so it is undone last. At most [`MAX_CODINGS`] codings are accepted.
//!
//! Memory is bounded: decoding stops at `max_output` bytes and marks the result truncated (a
//! decompression bomb costs at most the cap). So is work: with stacked codings, each inner layer
//! may produce at most [`intermediate_bound`] bytes for the next one, the output cap plus an
//! eighth plus 4 KiB (a legitimate inner layer is a compressed form of the output, so hardly
//! larger than the part of it that fits under the cap); past that the result is cut there and
//! marked truncated. Without that bound a layer that expands without end, read by an outer one
//! that turns it into no output (empty gzip members, brotli metadata blocks), cost CPU time
//! without limit while the output stayed empty (found by the `capture_decode` fuzzer). zstd
//! frames may not ask for a window above 8 MiB (the limit RFC 9659 sets for HTTP), and brotli's
//! window is at most 16 MiB by its format.
//! Errors are values: unknown codings and corrupt data are reported, never panicked on. When the
//! caller says the input itself was cut short, what could be decoded before the cut is returned
//! as a truncated result instead of an error.

use std::borrow::Cow;
use std::io::{self, BufRead, BufReader, Read};

use thiserror::Error;

/// The longest `Content-Encoding` list accepted.
pub const MAX_CODINGS: usize = 4;
/// zstd window limit (log2), 8 MiB.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;
const CHUNK: usize = 32 * 1024;

/// What an inner layer of stacked codings may produce for the next one, given the output cap.
pub fn intermediate_bound(max_output: usize) -> usize {
    max_output
        .saturating_add(max_output / 8)
        .saturating_add(4 << 10)
}

/// One content coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// The decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The body itself when it had no coding to undo (a 64 KiB prompt is not copied).
    pub bytes: Cow<'a, [u8]>,
    /// Output stopped at the cap, or the input was cut short.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    #[error("too many content-encodings ({0}, at most {MAX_CODINGS})")]
    TooManyCodings(usize),
    #[error("corrupt {coding} data: {message}")]
    Corrupt {
        coding: &'static str,
        message: String,
    },
}

/// Parse a `Content-Encoding` header value into the codings to undo, in application order
/// (`identity` and empty items dropped).
pub fn parse_content_encoding(value: &str) -> Result<Vec<Coding>, DecodeError> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() || item.eq_ignore_ascii_case("identity") {
            continue;
        }
        let c = match item.to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            _ => {
                let mut shown: String = item.chars().take(40).collect();
                if shown.len() < item.len() {
                    shown.push('…');
                }
                return Err(DecodeError::Unsupported(shown));
            }
        };
        out.push(c);
        if out.len() > MAX_CODINGS {
            return Err(DecodeError::TooManyCodings(out.len()));
        }
    }
    Ok(out)
}

/// Decode `body` as described by `content_encoding` (the header value, `None` for none), keeping
/// at most `max_output` bytes. `input_complete` is false when `body` is only the start of the
/// real body.
pub fn decode_body<'a>(
    content_encoding: Option<&str>,
    body: &'a [u8],
    input_complete: bool,
    max_output: usize,
) -> Result<Decoded<'a>, DecodeError> {
    let codings = match content_encoding {
        Some(v) => parse_content_encoding(v)?,
        None => Vec::new(),
    };
    if codings.is_empty() || body.is_empty() {
        // An empty body stays empty whatever its header says (HEAD, 204, a cut before any
        // byte arrived).
        let keep = body.len().min(max_output);
        return Ok(Decoded {
            bytes: Cow::Borrowed(&body[..keep]),
            truncated: !input_complete || body.len() > max_output,
        });
    }
    // Undo the last-applied coding first: it is the outermost layer. Every layer but the last
    // reads through a bound on what the layer before it produced.
    let cut = std::rc::Rc::new(std::cell::Cell::new(false));
    let mut reader: Box<dyn Read + '_> = Box::new(body);
    for (i, c) in codings.iter().rev().enumerate() {
        if i > 0 {
            reader = Box::new(Bounded {
                inner: reader,
                left: intermediate_bound(max_output),
                cut: cut.clone(),
            });
        }
        reader = match wrap(*c, reader) {
            Ok(r) => r,
            Err(_) if cut.get() => return Ok(cut_short(Vec::new(), max_output)),
            Err(e) => return Err(corrupt(*c, &e)),
        };
    }
    let outermost = codings.first().copied().unwrap_or(Coding::Gzip);
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let room = (max_output + 1).saturating_sub(out.len()).min(CHUNK);
        if room == 0 {
            break;
        }
        match reader.read(&mut buf[..room]) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                if input_complete && !cut.get() {
                    return Err(corrupt(outermost, &e));
                }
                return Ok(cut_short(out, max_output));
            }
        }
    }
    if cut.get() {
        return Ok(cut_short(out, max_output));
    }
    let over = out.len() > max_output;
    out.truncate(max_output);
    Ok(Decoded {
        bytes: Cow::Owned(out),
        truncated: over || !input_complete,
    })
}

/// What was decoded before the input (or an inner layer's bound) ended it.
fn cut_short(mut out: Vec<u8>, max_output: usize) -> Decoded<'static> {
    out.truncate(max_output);
    Decoded {
        bytes: Cow::Owned(out),
        truncated: true,
    }
}

/// An inner layer's output, ended (as if at its end) after `left` more bytes; `cut` records that
/// it was.
struct Bounded<'a> {
    inner: Box<dyn Read + 'a>,
    left: usize,
    cut: std::rc::Rc<std::cell::Cell<bool>>,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cut.get() {
            return Ok(0);
        }
        if self.left == 0 {
            // Only a layer with more to give is cut; one that ends exactly at the bound is not.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? > 0 {
                self.cut.set(true);
            }
            return Ok(0);
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n;
        Ok(n)
    }
}

fn corrupt(c: Coding, e: &io::Error) -> DecodeError {
    DecodeError::Corrupt {
        coding: c.as_str(),
        message: e.to_string(),
    }
}

fn wrap<'a>(c: Coding, inner: Box<dyn Read + 'a>) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match c {
        Coding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(inner)),
        Coding::Deflate => {
            let mut buffered = BufReader::new(inner);
            let head = buffered.fill_buf()?;
            if looks_like_zlib(head) {
                Box::new(flate2::read::ZlibDecoder::new(buffered))
            } else {
                Box::new(flate2::read::DeflateDecoder::new(buffered))
            }
        }
        Coding::Brotli => Box::new(brotli_decompressor::Decompressor::new(inner, CHUNK)),
        Coding::Zstd => {
            let mut d = zstd::stream::read::Decoder::new(inner)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(d)
        }
    })
}

/// RFC 1950: compression method 8, window ≤ 32K, and the header checksum.
fn looks_like_zlib(head: &[u8]) -> bool {
    match head {
        [cmf, flg, ..] => {
            cmf & 0x0f == 8
                && (cmf >> 4) <= 7
                && ((u16::from(*cmf) << 8) | u16::from(*flg)) % 31 == 0
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }
    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }
    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }
    fn br(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }
    fn zstd_enc(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    const TEXT: &[u8] =
        b"{\"hello\":\"world\",\"pad\":\"0123456789012345678901234567890123456789\"}";

    #[test]
    fn every_coding_round_trips() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("gzip", gzip(TEXT)),
            ("x-gzip", gzip(TEXT)),
            ("GZIP", gzip(TEXT)),
            ("deflate", zlib(TEXT)),
            ("deflate", raw_deflate(TEXT)),
            ("br", br(TEXT)),
            ("zstd", zstd_enc(TEXT)),
            ("identity", TEXT.to_vec()),
            ("", TEXT.to_vec()),
            ("gzip, br", br(&gzip(TEXT))),
            ("deflate,zstd", zstd_enc(&zlib(TEXT))),
            ("br, identity, gzip", gzip(&br(TEXT))),
        ];
        for (enc, body) in cases {
            let got = decode_body(Some(enc), &body, true, 1 << 20).unwrap();
            assert_eq!(got.bytes, TEXT, "{enc}");
            assert!(!got.truncated, "{enc}");
        }
        let got = decode_body(None, TEXT, true, 1 << 20).unwrap();
        assert_eq!(got.bytes, TEXT);
    }

    #[test]
    fn an_inner_layer_that_expands_into_no_output_is_cut_at_its_bound() {
        // "gzip, gzip": the inner gzip stream (what the outer layer decodes to) is 400,000 empty
        // gzip members, 8 MiB of them from a body of a few KiB. The inner decoder turns them all
        // into no output; only the bound on the intermediate bytes ends the work early. (With
        // brotli's metadata blocks or a bigger body, the same shape costs minutes.)
        let empty = gzip(b"");
        let members = empty.repeat((8 << 20) / empty.len());
        let body = gzip(&members);
        assert!(body.len() < 64 << 10, "{}", body.len());
        let got = decode_body(Some("gzip, gzip"), &body, true, 1000).unwrap();
        assert_eq!(*got.bytes, *b"");
        assert!(got.truncated, "the intermediate layer was read to its end");
        // Under a cap that leaves room for the whole inner layer, it is read to its end.
        let got = decode_body(Some("gzip, gzip"), &body, true, 16 << 20).unwrap();
        assert_eq!(*got.bytes, *b"");
        assert!(!got.truncated);
        // Incompressible data coded twice: the inner layer is a little larger than the output,
        // and the whole of it decodes under a cap of exactly its size.
        let mut x = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..256 << 10)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let body = br(&gzip(&noise));
        let got = decode_body(Some("gzip, br"), &body, true, noise.len()).unwrap();
        assert_eq!(got.bytes, noise);
        assert!(!got.truncated);
        // A legitimate stack whose inner layer is larger than the output cap is only capped.
        let text = TEXT.repeat(100);
        let stacked = br(&gzip(&text));
        let got = decode_body(Some("gzip, br"), &stacked, true, 10).unwrap();
        assert_eq!(got.bytes, &text[..10]);
        assert!(got.truncated);
    }

    #[test]
    fn concatenated_gzip_members_are_all_read() {
        let mut body = gzip(b"abc");
        body.extend(gzip(b"def"));
        assert_eq!(
            *decode_body(Some("gzip"), &body, true, 100).unwrap().bytes,
            *b"abcdef"
        );
    }

    #[test]
    fn bombs_stop_at_the_cap() {
        let zeros = vec![0u8; 50 * 1024 * 1024];
        for (enc, body) in [
            ("gzip", gzip(&zeros)),
            ("br", br(&zeros)),
            ("zstd", zstd_enc(&zeros)),
            ("deflate", zlib(&zeros)),
        ] {
            assert!(body.len() < 200 * 1024, "{enc} compresses: {}", body.len());
            let got = decode_body(Some(enc), &body, true, 4096).unwrap();
            assert_eq!(got.bytes.len(), 4096, "{enc}");
            assert!(got.truncated, "{enc}");
        }
        // Exactly at the cap is not truncated.
        let body = gzip(&[7u8; 100]);
        let got = decode_body(Some("gzip"), &body, true, 100).unwrap();
        assert_eq!((got.bytes.len(), got.truncated), (100, false));
        let got = decode_body(None, &[7u8; 101], true, 100).unwrap();
        assert_eq!((got.bytes.len(), got.truncated), (100, true));
    }

    #[test]
    fn errors_are_values() {
        assert_eq!(
            decode_body(Some("compress"), b"x", true, 10),
            Err(DecodeError::Unsupported("compress".into()))
        );
        assert_eq!(
            decode_body(Some("gzip,gzip,gzip,gzip,gzip"), b"x", true, 10),
            Err(DecodeError::TooManyCodings(5))
        );
        for enc in ["gzip", "br", "zstd", "deflate"] {
            let err = decode_body(Some(enc), b"this is not compressed data at all", true, 1000);
            assert!(
                matches!(err, Err(DecodeError::Corrupt { .. })),
                "{enc}: {err:?}"
            );
        }
        let long = "x".repeat(500);
        match decode_body(Some(&long), b"", true, 10) {
            Err(DecodeError::Unsupported(s)) => assert!(s.chars().count() <= 41),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn cut_input_gives_what_was_decoded() {
        let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for (enc, body) in [
            ("gzip", gzip(&big)),
            ("zstd", zstd_enc(&big)),
            ("br", br(&big)),
        ] {
            let half = &body[..body.len() / 2];
            let got = decode_body(Some(enc), half, false, 10 << 20).unwrap();
            assert!(got.truncated, "{enc}");
            assert!(!got.bytes.is_empty(), "{enc}");
            assert_eq!(got.bytes[..], big[..got.bytes.len()], "{enc}");
            // The same bytes claimed complete are an error.
            assert!(
                decode_body(Some(enc), half, true, 10 << 20).is_err(),
                "{enc}"
            );
        }
        let got = decode_body(Some("gzip"), b"", true, 10).unwrap();
        assert_eq!((got.bytes.len(), got.truncated), (0, false));
        let got = decode_body(None, b"abc", false, 10).unwrap();
        assert_eq!((&*got.bytes, got.truncated), (&b"abc"[..], true));
    }
}
