//! Capture blocks: a batch of captures stored as one compressed value.
//!
//! Written one row each, captures cost the store more than everything else it does: three
//! B-trees per capture (the row, its `request_id` key, its time index) and every byte copied
//! twice into the page cache (the WAL, then the database file at checkpoint), which on the
//! benchmark host was the largest single kernel cost of a small chat. The capture writer
//! hands the store a batch at a time anyway, and captures of one batch are alike (the same
//! clients, headers, models and system prompts), so the batch is stored as one zstd frame in
//! `capture_blocks` and only a small `request_id → block` row per capture in `capture_ids`.
//! A batch of a thousand small chats shrinks from 1.5 MB to ~20 KB at about 0.3 µs a capture.
//! Reading one capture decompresses its block (at most [`MAX_BLOCK_BYTES`]), which takes a
//! millisecond or two: captures are written far more often than they are opened.
//!
//! The format is private to the store (the API serves the capture document, never the
//! block): a version tag, then each capture as length-prefixed fields. Decoding checks every
//! length against what is there; a damaged block is an error, never a panic.

use crate::wire::{self, Reader};
use crate::{CaptureRow, StoreError};

/// The first bytes of every (uncompressed) block: the format's name and version.
const MAGIC: &[u8; 4] = b"ICB1";

/// Uncompressed bytes of captures one block holds at most; a single larger capture gets a
/// block of its own. Bounds what opening one capture decompresses.
pub(crate) const MAX_BLOCK_BYTES: usize = 4 << 20;

/// zstd level 1: on batches of captures as fast as the negative levels and smaller (measured
/// on a thousand small chats: 76× at 0.28 µs a capture, level -1 55× at 0.27 µs, level 3 67×
/// at 0.40 µs).
const LEVEL: i32 = 1;

/// Level 1's parameters, two of them changed for blocks of captures (measured on a block of a
/// thousand small chats and on one of forty turns of a coding agent's growing prompt; see
/// docs/performance.md, session 13):
/// - the window spans a whole block ([`MAX_BLOCK_BYTES`]), where level 1 keeps 512 KiB: an
///   agent's next request repeats the last one's prompt, often more than 512 KiB back in the
///   block, and is then stored as a reference to it (the agent block: 30.6× instead of 8.2×,
///   and faster, as long matches mean fewer sequences to encode);
/// - a match-finder table of 2^12 entries, where level 1 takes 2^13 or more: 16 KiB stays in
///   the first-level cache, so a block of small chats compresses in about three quarters of
///   the time at the same ratio. It also evicts less of the request path's working set on the
///   core it shares.
const WINDOW_LOG: u32 = 22;
const HASH_LOG: u32 = 12;
const _: () = assert!(1 << WINDOW_LOG >= MAX_BLOCK_BYTES);

/// The table the blocks are stored in (named in errors).
const TABLE: &str = "capture_blocks";

/// What an oversized text is called in errors.
const TEXT: &str = "capture text";

/// Where a block's captures lie in a batch, and their time span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub start: usize,
    pub end: usize,
    pub ts_min: i64,
    pub ts_max: i64,
}

/// Cut `rows` into blocks of at most [`MAX_BLOCK_BYTES`] (at least one capture each).
pub(crate) fn spans(rows: &[CaptureRow]) -> Vec<Span> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, r) in rows.iter().enumerate() {
        let len = encoded_len(r);
        if i > start && bytes + len > MAX_BLOCK_BYTES {
            out.push(span(rows, start, i));
            start = i;
            bytes = 0;
        }
        bytes += len;
    }
    if start < rows.len() {
        out.push(span(rows, start, rows.len()));
    }
    out
}

fn span(rows: &[CaptureRow], start: usize, end: usize) -> Span {
    let ts = rows[start..end].iter().map(|r| r.ts_ms);
    Span {
        start,
        end,
        ts_min: ts.clone().min().unwrap_or(0),
        ts_max: ts.max().unwrap_or(0),
    }
}

/// Bytes of one capture in an uncompressed block: four length prefixes, the time, the texts.
fn encoded_len(r: &CaptureRow) -> usize {
    4 * 4 + 8 + r.request_id.len() + r.text_len()
}

/// The compressed block of `rows`.
pub(crate) fn encode(rows: &[CaptureRow]) -> Result<Vec<u8>, StoreError> {
    wire::encode_block(wire::Kind::Captures, "a capture block", |raw| {
        raw.reserve(MAGIC.len() + rows.iter().map(encoded_len).sum::<usize>());
        raw.extend_from_slice(MAGIC);
        for r in rows {
            crate::pace::tick();
            wire::put_text(raw, Some(&r.request_id), TEXT)?;
            raw.extend_from_slice(&r.ts_ms.to_le_bytes());
            wire::put_text(raw, Some(&r.body), TEXT)?;
            wire::put_text(raw, r.request_body.as_deref(), TEXT)?;
            wire::put_text(raw, r.response_body.as_deref(), TEXT)?;
        }
        Ok(())
    })
}

/// The compression context of capture blocks (kept between blocks; see `wire::Scratch`).
pub(crate) fn context() -> std::io::Result<zstd::bulk::Compressor<'static>> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(LEVEL)?;
    c.set_parameter(CParameter::WindowLog(WINDOW_LOG))?;
    c.set_parameter(CParameter::HashLog(HASH_LOG))?;
    Ok(c)
}

/// All captures of a stored block, in the order they were written.
pub(crate) fn decode(block: &[u8]) -> Result<Vec<CaptureRow>, StoreError> {
    let raw = wire::decompress(block, TABLE)?;
    let mut rows = Vec::new();
    let mut r = Reader::after(&raw, MAGIC, TABLE)?;
    while !r.at_end() {
        rows.push(CaptureRow {
            request_id: r.required("an id")?,
            ts_ms: r.i64()?,
            body: r.required("a document")?,
            request_body: r.text()?,
            response_body: r.text()?,
        });
    }
    Ok(rows)
}

/// The first capture of the block with this request id.
pub(crate) fn find(block: &[u8], request_id: &str) -> Result<Option<CaptureRow>, StoreError> {
    let raw = wire::decompress(block, TABLE)?;
    let mut r = Reader::after(&raw, MAGIC, TABLE)?;
    while !r.at_end() {
        // The id and time first; the texts are only made into strings for the match.
        let id = r
            .bytes()?
            .ok_or_else(|| r.corrupt("a capture without an id"))?;
        let ts = r.i64()?;
        if id == request_id.as_bytes() {
            return Ok(Some(CaptureRow {
                request_id: request_id.to_owned(),
                ts_ms: ts,
                body: r.required("a document")?,
                request_body: r.text()?,
                response_body: r.text()?,
            }));
        }
        for _ in 0..3 {
            r.bytes()?;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, ts: i64, body: &str, req: Option<&str>, resp: Option<&str>) -> CaptureRow {
        CaptureRow {
            request_id: id.into(),
            ts_ms: ts,
            body: body.into(),
            request_body: req.map(Into::into),
            response_body: resp.map(Into::into),
        }
    }

    fn sample() -> Vec<CaptureRow> {
        vec![
            row("a", 5, "{\"x\":1}", Some("req ü"), Some("resp")),
            row("b", -3, "{}", None, Some("")),
            row("c", i64::MAX, "", Some(""), None),
            row("a", 7, "{\"second\":true}", None, None),
        ]
    }

    #[test]
    fn a_block_gives_back_every_capture_as_written() {
        let rows = sample();
        let block = encode(&rows).unwrap();
        assert_eq!(decode(&block).unwrap(), rows);
    }

    #[test]
    fn find_returns_the_first_capture_of_an_id_and_none_for_others() {
        let block = encode(&sample()).unwrap();
        assert_eq!(find(&block, "a").unwrap(), Some(sample()[0].clone()));
        assert_eq!(find(&block, "c").unwrap(), Some(sample()[2].clone()));
        assert_eq!(find(&block, "b").unwrap(), Some(sample()[1].clone()));
        assert_eq!(find(&block, "d").unwrap(), None);
        assert_eq!(find(&block, "").unwrap(), None);
    }

    #[test]
    fn alike_captures_compress_well() {
        let rows: Vec<_> = (0..1000)
            .map(|i| {
                row(
                    &format!("01a2-{i:06}"),
                    i,
                    r#"{"method":"POST","path":"/v1/chat/completions","request_headers":[["content-type","application/json"]]}"#,
                    Some(r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello"}]}"#),
                    Some(r#"{"choices":[{"message":{"role":"assistant","content":"hello"}}]}"#),
                )
            })
            .collect();
        let raw: usize = rows.iter().map(encoded_len).sum();
        let block = encode(&rows).unwrap();
        assert!(block.len() * 10 < raw, "{} of {raw} bytes", block.len());
    }

    #[test]
    fn a_capture_repeated_across_the_block_is_stored_once() {
        // A coding agent's requests each repeat the conversation so far: here a 700 kB prompt
        // twice, farther apart than level 1's window of 512 KiB reaches.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let prompt: String = (0..700_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        let rows = vec![
            row("1", 1, "{}", Some(&prompt), None),
            row(
                "2",
                2,
                "{}",
                Some(&format!("{prompt} and one more turn")),
                None,
            ),
        ];
        assert_eq!(spans(&rows).len(), 1);
        let block = encode(&rows).unwrap();
        // Random letters compress to about 4.7 bits each: 411 kB for one copy. The second copy
        // is a reference to the first.
        assert!(block.len() < 450_000, "{} bytes", block.len());
        assert_eq!(decode(&block).unwrap(), rows);
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let block = encode(&sample()).unwrap();
        // Not zstd at all, and every cut of a real block.
        assert!(decode(b"not a block").is_err());
        for cut in 0..block.len() {
            let _ = decode(&block[..cut]);
            let _ = find(&block[..cut], "c");
        }
        // A valid frame of something else, and a capture cut in the middle.
        let other = zstd::bulk::compress(b"XXXXsomething", 1).unwrap();
        assert!(matches!(decode(&other), Err(StoreError::Corrupt { .. })));
        let mut raw = MAGIC.to_vec();
        raw.extend_from_slice(&100u32.to_le_bytes());
        raw.extend_from_slice(b"short");
        let cut = zstd::bulk::compress(&raw, 1).unwrap();
        assert!(matches!(decode(&cut), Err(StoreError::Corrupt { .. })));
        assert!(matches!(find(&cut, "x"), Err(StoreError::Corrupt { .. })));
        // Text that is not UTF-8.
        let mut raw = MAGIC.to_vec();
        raw.extend_from_slice(&1u32.to_le_bytes());
        raw.push(0xff);
        let bad = zstd::bulk::compress(&raw, 1).unwrap();
        assert!(matches!(decode(&bad), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn batches_are_cut_at_the_block_size_and_large_captures_stand_alone() {
        let big = "x".repeat(MAX_BLOCK_BYTES);
        let third = "y".repeat(MAX_BLOCK_BYTES / 3);
        let rows = vec![
            row("1", 10, &third, None, None),
            row("2", 30, &third, None, None),
            row("3", 20, &big, None, None),
            row("4", 5, "{}", None, None),
            row("5", 40, &third, Some(&third), None),
        ];
        let s = spans(&rows);
        let bounds: Vec<_> = s.iter().map(|s| (s.start, s.end)).collect();
        assert_eq!(bounds, [(0, 2), (2, 3), (3, 5)]);
        assert_eq!((s[0].ts_min, s[0].ts_max), (10, 30));
        assert_eq!((s[2].ts_min, s[2].ts_max), (5, 40));
        assert!(spans(&[]).is_empty());
        for s in &s {
            let len: usize = rows[s.start..s.end].iter().map(encoded_len).sum();
            assert!(len <= MAX_BLOCK_BYTES || s.end - s.start == 1);
        }
    }

    /// Bytes changed at random inside a real block, compressed again (so zstd's checksum does
    /// not catch it): reads return captures or errors, never panic.
    #[test]
    fn randomly_damaged_blocks_are_errors_not_panics() {
        let rows = sample();
        for bad in
            crate::wire::damaged_copies(&encode(&rows).unwrap(), 3_000, 0x2545_f491_4f6c_dd1d)
        {
            let _ = decode(&bad);
            let _ = find(&bad, &rows[1].request_id);
        }
    }
}
