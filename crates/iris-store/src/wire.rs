//! The fields both block formats are made of (captures, `blocks.rs`; usage records,
//! `usage_log.rs`): a text is a little-endian `u32` length ([`NONE`] for an absent one) and its
//! bytes, a number its little-endian bytes. Reading checks every length against what is there:
//! a damaged block is a [`StoreError::Corrupt`] of its table, never a panic.

use crate::StoreError;
use crate::pace;

/// Length of an absent optional text.
pub(crate) const NONE: u32 = u32::MAX;

/// A length as written: it fits a `u32` and is not [`NONE`]. `what` names the field in the
/// error.
#[inline]
pub(crate) fn len32(n: usize, what: &str) -> Result<u32, StoreError> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n != NONE)
        .ok_or_else(|| StoreError::InvalidRecord(format!("{what} of {n} bytes")))
}

/// A length, as [`len32`] checks it.
#[inline]
pub(crate) fn put_len(out: &mut Vec<u8>, n: usize, what: &str) -> Result<(), StoreError> {
    out.extend_from_slice(&len32(n, what)?.to_le_bytes());
    Ok(())
}

/// An optional text, length-prefixed.
#[inline]
pub(crate) fn put_text(
    out: &mut Vec<u8>,
    text: Option<&str>,
    what: &str,
) -> Result<(), StoreError> {
    match text {
        None => out.extend_from_slice(&NONE.to_le_bytes()),
        Some(t) => {
            put_len(out, t.len(), what)?;
            out.extend_from_slice(t.as_bytes());
        }
    }
    Ok(())
}

/// The kinds of block, each with its own zstd parameters (see [`encode_block`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Usage = 0,
    Captures = 1,
}

impl Kind {
    /// A compression context with this kind's parameters.
    fn context(self) -> std::io::Result<zstd::bulk::Compressor<'static>> {
        match self {
            Kind::Usage => crate::usage_log::context(),
            Kind::Captures => crate::blocks::context(),
        }
    }
}

/// What [`encode_block`] keeps of a buffer between blocks, at most: a block of usage records is
/// ~100 KB, a block of small chats' captures a few hundred; a larger one (a coding agent's
/// prompts, up to 4 MiB) grows the buffer for its own use, and it is cut back to this after.
/// The compression context of a block larger than this is not kept either: fed in turns (see
/// [`compress_in_turns`]) it buffers a window as large as the block, which zstd would keep for
/// the next hundred-odd blocks.
const KEEP_BYTES: usize = 1 << 20;

/// Scratches kept at most: one for each kind of block being written at once (the usage and
/// capture writers each write one block at a time).
const KEEP_SCRATCHES: usize = 2;

/// The buffers and compression contexts of block encoding, kept between blocks. A block's
/// buffers are large allocations, whose pages the allocator returns to the kernel between
/// batches: allocated afresh they cost a page fault every 4 KB (three quarters of iris's page
/// faults at a fixed 2,000 requests/s, session 21), and a new zstd context also allocates and
/// clears its tables for every block. Kept in a small shared pool rather than per thread: the
/// encoding runs on tokio's blocking threads, of which there may be many.
#[derive(Default)]
struct Scratch {
    raw: Vec<u8>,
    out: Vec<u8>,
    contexts: [Option<zstd::bulk::Compressor<'static>>; 2],
}

/// Scratches kept for reuse (at most [`KEEP_SCRATCHES`]).
struct Pool(std::sync::Mutex<Vec<Scratch>>);

static SCRATCHES: Pool = Pool(std::sync::Mutex::new(Vec::new()));

/// A compressed block: `fill` writes its uncompressed bytes, which are compressed with a kept
/// context for `kind` and copied out at their compressed size. `what` names the block in errors.
pub(crate) fn encode_block(
    kind: Kind,
    what: &str,
    fill: impl FnOnce(&mut Vec<u8>) -> Result<(), StoreError>,
) -> Result<Vec<u8>, StoreError> {
    SCRATCHES.encode(kind, what, fill)
}

impl Pool {
    fn encode(
        &self,
        kind: Kind,
        what: &str,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), StoreError>,
    ) -> Result<Vec<u8>, StoreError> {
        let failed =
            |e: std::io::Error| StoreError::InvalidRecord(format!("cannot compress {what}: {e}"));
        // A poisoned pool (a panic while it was locked, which nothing in it can do) only costs the
        // reuse.
        let taken = self.0.lock().ok().and_then(|mut pool| pool.pop());
        let mut scratch = taken.unwrap_or_default();
        scratch.raw.clear();
        let result = fill(&mut scratch.raw).and_then(|()| {
            let context = match &mut scratch.contexts[kind as usize] {
                Some(c) => c,
                empty => empty.insert(kind.context().map_err(failed)?),
            };
            scratch.out.clear();
            scratch
                .out
                .reserve(zstd::zstd_safe::compress_bound(scratch.raw.len()));
            if pace::is_behind() {
                // Catching up: in one call, without the stream's copy into a window.
                let n = context
                    .compress_to_buffer(&scratch.raw[..], &mut scratch.out)
                    .map_err(failed)?;
                scratch.out.truncate(n);
                Ok((scratch.out.clone(), false))
            } else {
                compress_in_turns(context.context_mut(), &scratch.raw, &mut scratch.out)
                    .map_err(failed)?;
                Ok((scratch.out.clone(), true))
            }
        });
        // Only a context fed in turns buffered a window.
        if scratch.raw.len() > KEEP_BYTES && matches!(result, Ok((_, true))) {
            scratch.contexts[kind as usize] = None;
        }
        let result = result.map(|(block, _)| block);
        for buffer in [&mut scratch.raw, &mut scratch.out] {
            buffer.clear();
            buffer.shrink_to(KEEP_BYTES);
        }
        if let Ok(mut pool) = self.0.lock()
            && pool.len() < KEEP_SCRATCHES
        {
            pool.push(scratch);
        }
        result
    }
}

/// Compress `raw` into `out` (empty, with room for `compress_bound(raw.len())`) as one zstd frame
/// with its content size, fed to the context [`pace::CHUNK_BYTES`] (one zstd block) at a time
/// with a [`pace::tick`] after each, so a 4 MiB block does not hold a core for milliseconds (see
/// `crate::pace`). Unlike one-shot compression, the context copies its input into a window of
/// its own (as large as the block: the pledged size bounds it). Same parameters as one-shot
/// compression, and the same size to within a fraction of a percent; where zstd cuts its blocks
/// may differ.
fn compress_in_turns(
    cctx: &mut zstd::zstd_safe::CCtx<'static>,
    raw: &[u8],
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    use zstd::zstd_safe::{InBuffer, OutBuffer, ResetDirective, zstd_sys::ZSTD_EndDirective};
    let zstd = |code| std::io::Error::other(zstd::zstd_safe::get_error_name(code));
    cctx.reset(ResetDirective::SessionOnly).map_err(zstd)?;
    cctx.set_pledged_src_size(Some(raw.len() as u64))
        .map_err(zstd)?;
    let mut output = OutBuffer::around(out);
    let mut chunks = raw.chunks(pace::CHUNK_BYTES);
    let mut input = InBuffer::around(chunks.next().unwrap_or_default());
    loop {
        let directive = if input.pos() < input.src.len() {
            ZSTD_EndDirective::ZSTD_e_continue
        } else if let Some(next) = chunks.next() {
            pace::tick();
            input = InBuffer::around(next);
            continue;
        } else {
            ZSTD_EndDirective::ZSTD_e_end
        };
        let before = (input.pos(), output.pos());
        let left = cctx
            .compress_stream2(&mut output, &mut input, directive)
            .map_err(zstd)?;
        if directive == ZSTD_EndDirective::ZSTD_e_end && left == 0 {
            return Ok(());
        }
        if (input.pos(), output.pos()) == before {
            // The output is sized for the whole frame; a step that moves nothing would repeat.
            return Err(std::io::Error::other(
                "the compressed block outgrew its buffer",
            ));
        }
    }
}

/// The uncompressed bytes of a stored block of `table`.
pub(crate) fn decompress(block: &[u8], table: &'static str) -> Result<Vec<u8>, StoreError> {
    // The streaming decoder grows its output as the frame says, so a damaged length cannot
    // make it allocate more than the frame really holds.
    zstd::stream::decode_all(block).map_err(|e| corrupt(table, &format!("undecodable block: {e}")))
}

pub(crate) fn corrupt(table: &'static str, detail: &str) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_owned(),
    }
}

/// Reads fields off the front of a block of `table`.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    table: &'static str,
}

impl<'a> Reader<'a> {
    /// The fields after `magic`, the block's format tag.
    pub(crate) fn after(
        raw: &'a [u8],
        magic: &[u8],
        table: &'static str,
    ) -> Result<Self, StoreError> {
        let rest = raw
            .strip_prefix(magic)
            .ok_or_else(|| corrupt(table, "not a block of this table (unknown format)"))?;
        Ok(Reader { rest, table })
    }

    /// Fields already cut out of a block of `table`.
    pub(crate) fn of(rest: &'a [u8], table: &'static str) -> Self {
        Reader { rest, table }
    }

    pub(crate) fn at_end(&self) -> bool {
        self.rest.is_empty()
    }

    /// Read no further (after a damaged length nothing further can be read).
    pub(crate) fn stop(&mut self) {
        self.rest = &[];
    }

    pub(crate) fn corrupt(&self, detail: &str) -> StoreError {
        corrupt(self.table, detail)
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.rest.len() < n {
            return Err(self.corrupt("the block ends in the middle of a field"));
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, StoreError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, StoreError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, StoreError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// An optional text's bytes.
    pub(crate) fn bytes(&mut self) -> Result<Option<&'a [u8]>, StoreError> {
        let len = self.u32()?;
        if len == NONE {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }

    /// An optional text.
    pub(crate) fn text(&mut self) -> Result<Option<String>, StoreError> {
        match self.bytes()? {
            None => Ok(None),
            Some(b) => String::from_utf8(b.to_vec())
                .map(Some)
                .map_err(|_| self.corrupt("a text is not UTF-8")),
        }
    }

    /// A text that must be there; `what` names it in the error.
    pub(crate) fn required(&mut self, what: &str) -> Result<String, StoreError> {
        self.text()?
            .ok_or_else(|| self.corrupt(&format!("a record without {what}")))
    }

    /// The bytes of a text that must be there; `what` names it in the error.
    pub(crate) fn required_bytes(&mut self, what: &str) -> Result<&'a [u8], StoreError> {
        self.bytes()?
            .ok_or_else(|| self.corrupt(&format!("a record without {what}")))
    }
}

/// A small deterministic generator for the store's randomized tests (xorshift64), so a failure
/// reproduces from its seed.
#[cfg(test)]
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.max(1);
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Copies of a stored block with 1–4 bytes of its uncompressed form changed at random (a random
/// byte, 0xff or 0), compressed again so that zstd's checksum does not catch the damage: what a
/// decoder meets when a block is wrong inside. Deterministic (xorshift from `seed`).
#[cfg(test)]
pub(crate) fn damaged_copies(block: &[u8], n: usize, seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let raw = zstd::bulk::decompress(block, 1 << 24).unwrap();
    let mut next = xorshift(seed);
    (0..n).map(move |_| {
        let mut bad = raw.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % bad.len() as u64) as usize;
            bad[at] = match next() % 3 {
                0 => next() as u8,
                1 => 0xff,
                _ => 0,
            };
        }
        zstd::bulk::compress(&bad, 1).unwrap()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool of the test's own (tests run in parallel, and others encode blocks).
    fn pool() -> Pool {
        Pool(std::sync::Mutex::new(Vec::new()))
    }

    /// The largest buffers the pool keeps.
    fn kept(pool: &Pool) -> (usize, usize) {
        let pool = pool.0.lock().unwrap();
        let raw = pool.iter().map(|s| s.raw.capacity()).max().unwrap_or(0);
        let out = pool.iter().map(|s| s.out.capacity()).max().unwrap_or(0);
        (raw, out)
    }

    #[test]
    fn a_kept_context_compresses_as_a_fresh_one_and_blocks_round_trip() {
        let pool = pool();
        let text: Vec<u8> = (0..50_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let fresh = zstd::bulk::compress(&text, 1).unwrap();
        for _ in 0..3 {
            let block = pool
                .encode(Kind::Usage, "a test block", |raw| {
                    raw.extend_from_slice(&text);
                    Ok(())
                })
                .unwrap();
            assert_eq!(block, fresh);
            assert_eq!(decompress(&block, "t").unwrap(), text);
        }
        // The buffers are kept for the next block.
        let (raw, out) = kept(&pool);
        assert!(raw >= text.len() && out > 0, "{raw} {out}");
        assert_eq!(pool.0.lock().unwrap().len(), 1);
    }

    /// A block many compressor chunks long, of text that compresses poorly and well in turns,
    /// is one frame that states its size, reads back whole and is no larger than one-shot
    /// compression with the same context makes it.
    #[test]
    fn a_block_compressed_in_turns_is_one_whole_frame() {
        let pool = pool();
        let mut next = xorshift(7);
        let mut text = Vec::new();
        while text.len() < 3 * MAX_CHUNKS_TESTED * pace::CHUNK_BYTES / 2 {
            let len = (next() % 5000) as usize;
            if next().is_multiple_of(2) {
                text.extend((0..len).map(|_| b'a' + (next() % 26) as u8));
            } else {
                text.extend(std::iter::repeat_n(b"fn main() {}\n".as_slice(), len / 13).flatten());
            }
        }
        let mut one_shot = crate::blocks::context().unwrap();
        let fresh = one_shot.compress(&text).unwrap();
        let block = pool
            .encode(Kind::Captures, "a test block", |raw| {
                raw.extend_from_slice(&text);
                Ok(())
            })
            .unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&block).ok(),
            Some(Some(text.len() as u64))
        );
        assert!(decompress(&block, "t").unwrap() == text);
        // Cut into zstd blocks where the chunks end, it may differ from the one-shot frame, but
        // not in size to speak of.
        assert!(
            block.len() <= fresh.len() + fresh.len() / 100,
            "{} against {} bytes one-shot",
            block.len(),
            fresh.len()
        );
    }

    /// Chunks of the test above.
    const MAX_CHUNKS_TESTED: usize = 8;

    #[test]
    fn buffers_beyond_the_limit_are_not_kept() {
        let pool = pool();
        let big = vec![7u8; 2 * KEEP_BYTES];
        let block = pool
            .encode(Kind::Captures, "a test block", |raw| {
                raw.extend_from_slice(&big);
                Ok(())
            })
            .unwrap();
        assert_eq!(decompress(&block, "t").unwrap(), big);
        let (raw, out) = kept(&pool);
        assert!(raw <= KEEP_BYTES && out <= KEEP_BYTES, "{raw} {out}");
        // Nor is the context, which holds a window as large as the block.
        let pool = pool.0.lock().unwrap();
        assert!(pool.iter().all(|s| s.contexts.iter().all(Option::is_none)));
    }

    #[test]
    fn a_failed_block_leaves_nothing_behind_for_the_next() {
        let pool = pool();
        let err = pool.encode(Kind::Usage, "a test block", |raw| {
            raw.extend_from_slice(b"half a block");
            Err(StoreError::InvalidRecord("a field too long".into()))
        });
        assert!(matches!(err, Err(StoreError::InvalidRecord(_))));
        let block = pool
            .encode(Kind::Usage, "a test block", |raw| {
                raw.extend_from_slice(b"whole");
                Ok(())
            })
            .unwrap();
        assert_eq!(decompress(&block, "t").unwrap(), b"whole");
    }
}
