//! Decoding of captured bodies by `Content-Encoding` (`iris_capture::decode_body`): gzip,
//! deflate (zlib or raw), br, zstd, stacked. The point is bounded memory: a decompression bomb
//! must cost at most the cap.
//!
//! Input layout: byte 0 = flags (bit 0: the body is complete; bits 1-3: how many codings, 0-7),
//! then one byte per coding (an index into `CODINGS`), then the output cap as a little-endian
//! `u16` shifted right by 4 (0 to 4 KiB), then the body. (The cap's size does not change the code
//! paths; a cap of up to 1 MiB made each decompression bomb cost milliseconds, and the fuzzer
//! slower by more than ten times.)
//!
//! Properties: the output never exceeds the cap; without codings (or with an empty body) the
//! output is the body cut at the cap; a result from a body known to be cut short is marked
//! truncated. (Corrupt data may be reported for a cut body too: a bad header is bad however
//! much follows it.)
#![no_main]

use iris_capture::decode::{DecodeError, decode_body};
use libfuzzer_sys::fuzz_target;

const CODINGS: [&str; 8] = [
    "gzip", "x-gzip", "deflate", "br", "zstd", "identity", "", "compress",
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let complete = flags & 1 == 1;
    let n = usize::from((flags >> 1) & 7);
    if rest.len() < n + 2 {
        return;
    }
    let (selectors, rest) = rest.split_at(n);
    let header: Vec<&str> = selectors
        .iter()
        .map(|&s| CODINGS[usize::from(s) % CODINGS.len()])
        .collect();
    let header = header.join(", ");
    let max_output = usize::from(u16::from_le_bytes([rest[0], rest[1]]) >> 4);
    let body = &rest[2..];
    let encoding = (n > 0).then_some(header.as_str());
    match decode_body(encoding, body, complete, max_output) {
        Ok(d) => {
            assert!(
                d.bytes.len() <= max_output,
                "{} > cap {max_output}",
                d.bytes.len()
            );
            assert!(complete || d.truncated, "a cut body decoded as complete");
            if header
                .split(',')
                .all(|c| matches!(c.trim(), "" | "identity"))
                || body.is_empty()
            {
                assert_eq!(*d.bytes, body[..body.len().min(max_output)]);
            }
        }
        Err(DecodeError::Corrupt { .. }) => assert!(n > 0 && !body.is_empty()),
        Err(DecodeError::Unsupported(_) | DecodeError::TooManyCodings(_)) => assert!(n > 0),
    }
});
