//! `iris_providers::IncludeUsageFilter`, the filter that hides the usage-only chunk iris asked
//! for from an OpenAI chat client. Properties:
//! - the bytes sent to the client and the number of chunks dropped do not depend on where the
//!   upstream stream was cut into chunks;
//! - the filter only ever removes bytes: a stream without `"usage"` passes byte for byte, and
//!   the output is never longer than the input.
#![no_main]

use iris_fuzz::Split;
use iris_providers::IncludeUsageFilter;
use iris_providers::stream_filter::MAX_HELD;
use libfuzzer_sys::fuzz_target;

fn run(chunks: &[&[u8]]) -> (Vec<u8>, u64) {
    let mut f = IncludeUsageFilter::new();
    let mut out = Vec::new();
    for c in chunks {
        out.extend(f.push(c));
    }
    out.extend(f.finish());
    (out, f.dropped())
}

fuzz_target!(|data: &[u8]| {
    let Some(split) = Split::parse(data) else {
        return;
    };
    let whole = run(&[split.body]);
    assert!(whole.0.len() <= split.body.len(), "the filter added bytes");
    if memchr_usage(split.body) {
        assert!(whole.1 > 0 || whole.0 == split.body);
    } else {
        assert_eq!(
            whole.0, split.body,
            "a stream without \"usage\" was changed"
        );
        assert_eq!(whole.1, 0);
    }
    // Past MAX_HELD an event streams through unfiltered when it arrives in pieces (documented:
    // such an event cannot be the small usage chunk), so split-independence holds below it.
    if split.body.len() <= MAX_HELD {
        let parts = run(&split.chunks());
        assert_eq!(
            whole, parts,
            "the filter's output depends on the cuts {:?}",
            split.cuts
        );
    }
});

fn memchr_usage(body: &[u8]) -> bool {
    body.windows(7).any(|w| w == b"\"usage\"")
}
