//! Shared pieces of iris's fuzz targets (`fuzz_targets/*.rs`, one binary per target):
//!
//! - [`LimitAlloc`], the global allocator of every target: it refuses any single allocation
//!   above [`MAX_ALLOCATION`] and any growth of live heap above [`MAX_LIVE`], so an input that
//!   makes iris allocate without bound aborts at once ("memory allocation of N bytes failed")
//!   and libFuzzer records it as a crash. libFuzzer's own `-malloc_limit_mb` needs a sanitizer
//!   runtime's malloc hooks, which the stable (`--sanitizer none`) build does not have;
//!   `-rss_limit_mb` (sampled once a second) stays on as the second line.
//! - [`Split`], the input of the streaming targets: a body plus the fuzzer-chosen points where
//!   it is cut into chunks, so every parser that claims "chunks may split anywhere" is checked
//!   against the same body fed whole.
//!
//! Nothing here may hide a failure: a target that cannot use an input returns early, every
//! property is an `assert!` (a panic is a crash to libFuzzer).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use arbitrary::Unstructured;

/// No single allocation may be larger. The fuzzed inputs are at most 1 MiB (`-max_len` in
/// scripts/fuzz) and iris's own caps are 16 MiB (one SSE event) and 4 MiB (a response body), so
/// anything near this is a bug, not a large input.
pub const MAX_ALLOCATION: usize = 64 << 20;
/// Live heap allowed at any moment (all allocations not yet freed).
pub const MAX_LIVE: usize = 512 << 20;

/// The system allocator with the two limits above. Returning null is the allocator's documented
/// way to fail: Rust then calls `handle_alloc_error`, which prints the size and aborts.
pub struct LimitAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);

impl LimitAlloc {
    /// Count `n` more live bytes, unless that passes [`MAX_LIVE`].
    fn reserve(n: usize) -> bool {
        let before = LIVE.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > MAX_LIVE {
            LIVE.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn release(n: usize) {
        LIVE.fetch_sub(n, Ordering::Relaxed);
    }
}

// SAFETY (for the whole impl): every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the wrapper only counts sizes and may fail an allocation (null), which
// the contract allows.
unsafe impl GlobalAlloc for LimitAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size();
        if size > MAX_ALLOCATION || !Self::reserve(size) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            Self::release(size);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let size = layout.size();
        if size > MAX_ALLOCATION || !Self::reserve(size) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            Self::release(size);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        Self::release(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        let growth = new_size.saturating_sub(old);
        if new_size > MAX_ALLOCATION || !Self::reserve(growth) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            Self::release(growth);
        } else if new_size < old {
            Self::release(old - new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: LimitAlloc = LimitAlloc;

/// The most cuts one input can ask for.
pub const MAX_CUTS: u8 = 32;

/// A body and where to cut it. Layout of the raw input (read with `arbitrary`'s
/// `Unstructured`): one `flags` byte (its meaning is the target's), one byte for the number of
/// cuts (`0..=MAX_CUTS`), four bytes per cut (a `u32`, taken modulo `body.len() + 1`), then the
/// body (the rest). A seed file is a fixture with the two bytes `flags, 0` in front (no cuts).
///
/// Cuts are sorted but not deduplicated: two equal cuts make an empty chunk, which real streams
/// also deliver.
#[derive(Debug)]
pub struct Split<'a> {
    pub flags: u8,
    pub cuts: Vec<usize>,
    pub body: &'a [u8],
}

impl<'a> Split<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Split<'a>> {
        let mut u = Unstructured::new(data);
        let flags: u8 = u.arbitrary().ok()?;
        let n = u.int_in_range(0..=MAX_CUTS).ok()?;
        let mut raw = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            raw.push(u.arbitrary::<u32>().ok()?);
        }
        let body = u.take_rest();
        let mut cuts: Vec<usize> = raw
            .into_iter()
            .map(|c| c as usize % (body.len() + 1))
            .collect();
        cuts.sort_unstable();
        Some(Split { flags, cuts, body })
    }

    /// The chunks between the cuts, in order; together they are exactly the body.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::with_capacity(self.cuts.len() + 1);
        let mut start = 0;
        for &c in &self.cuts {
            out.push(&self.body[start..c]);
            start = c;
        }
        out.push(&self.body[start..]);
        out
    }
}

/// Feed an [`iris_providers::UsageExtractor`] the body whole and in the fuzzer's chunks; the two
/// results must be equal (the extractor claims chunks may split anywhere).
pub fn usage_split_invariant(family: iris_providers::ApiFamily, split: &Split<'_>) {
    let streaming = split.flags & 1 == 1;
    let mut whole = iris_providers::UsageExtractor::new(family, streaming);
    whole.feed(split.body);
    let whole = whole.finish();
    let mut parts = iris_providers::UsageExtractor::new(family, streaming);
    for chunk in split.chunks() {
        parts.feed(chunk);
    }
    let parts = parts.finish();
    assert_eq!(
        whole, parts,
        "usage differs when the body is split at {:?}",
        split.cuts
    );
    // A whole body (up to MAX_BODY; past it only the tail is read) is read by iris's own scanner: it must read what serde_json reads into the
    // provider shapes, outside the two differences its docs state (broken UTF-8, which serde
    // refuses in keys and the scanner does not check there; a top-level array).
    if !streaming
        && split.body.len() <= iris_providers::usage::MAX_BODY
        && std::str::from_utf8(split.body).is_ok()
        && !split.body.trim_ascii_start().starts_with(b"[")
    {
        let reference = iris_providers::usage::reference_body_reading(family, split.body);
        let scanned =
            (!whole.malformed_body).then(|| (whole.response_model.clone(), whole.usage.clone()));
        assert_eq!(
            scanned, reference,
            "the scanner and serde read the body differently"
        );
    }
}
