//! Deferred work in short turns.
//!
//! The gateway's deferred work (enriching finished requests, building and compressing capture
//! and usage blocks) runs on threads of its own, at the request path's priority so that it keeps
//! up when the cores are saturated. But a thread that holds a core keeps it until it blocks or
//! its time slice ends: the kernel's scheduler (EEVDF since Linux 6.6) lets a running task finish
//! a protected part of its slice, about a millisecond or more, before a task it just woke takes
//! the core. A request worker woken while both cores of a small machine are busy, one of them
//! with a 4 MiB capture block being compressed, waited for it: at 2,000 requests/s with 16 KiB
//! prompts iris's p99 sat 1.0–1.6 ms above the baseline proxy's, and the same run with the
//! deferred work's threads under `SCHED_IDLE` (preempted at once by any other task) brought it
//! back to +117 and −383 µs in two runs (docs/performance.md, "Session 25").
//!
//! `SCHED_IDLE` is not the answer by itself: on saturated cores it gives the deferred work almost
//! nothing (it dropped thousands of captures in the closed-loop benchmark), and an unprivileged
//! thread cannot leave it again. So the deferred work keeps its priority and gives the core up
//! itself: it calls [`tick`] between small pieces of work, and a thread for which [`QUANTUM`]
//! has passed since it last gave way yields (`sched_yield`), letting a waiting request worker
//! run first. When nothing else waits, a yield returns at once, so the work loses nothing on an
//! idle machine. On a saturated one every yield hands the core over, which unbounded cost the
//! deferred work its share (the closed loop with 64 KiB prompts dropped 9,672 captures in the
//! full run at ad75ae1), so two bounds keep it up: while a queue of deferred work has fallen
//! behind (its owner says so through [`behind`]: a whole batch waiting for the store, say)
//! nothing yields and a block is compressed in one call; and a thread spends at most half its
//! time yielded (per 50 ms window), a backstop for work no queue measures.
//!
//! The first version of the bounds (session 25) allowed a tenth and counted only the captures
//! held, not the batch being written: at 2,000 requests/s with 64 KiB prompts the store's write
//! of a batch then ran mostly without giving way, and the fixed-rate p99 went back to 1.1–1.7 ms
//! above the baseline's (+341 µs with the bounds as they are, +365 with no budget at all; nothing
//! dropped in the closed loop with either; docs/performance.md, "Session 26").

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// How long after it last gave way a deferred-work thread gives way again to anything waiting
/// for its core: about a request's round trip through iris at the median. A request woken behind
/// deferred work waits at most this plus the longest piece between two ticks (a zstd block, or
/// the observer's enrichment of one large request).
pub const QUANTUM: Duration = Duration::from_micros(100);

/// The deferred work's queues that have fallen behind, a bit each ([`Backlog`]): while any has,
/// [`tick`] never yields, so on saturated cores the deferred work takes its whole fair share and
/// catches up instead of dropping captures (giving way every 100 µs there dropped 9,672 of them
/// in the closed loop with 64 KiB prompts, session 25).
static BEHIND: AtomicU8 = AtomicU8::new(0);

/// A queue of deferred work that can fall behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    /// The observer's queue of finished requests, or the captures waiting for the store.
    Captures = 1,
    /// The usage writer's queue.
    Usage = 2,
}

/// Say whether `queue` has fallen behind (its owner decides: a quarter of its bound, say).
pub fn behind(queue: Backlog, yes: bool) {
    let bit = queue as u8;
    if (BEHIND.load(Ordering::Relaxed) & bit != 0) != yes {
        if yes {
            BEHIND.fetch_or(bit, Ordering::Relaxed);
        } else {
            BEHIND.fetch_and(!bit, Ordering::Relaxed);
        }
    }
}

/// Whether some queue of deferred work has fallen behind (see [`behind`]).
pub fn is_behind() -> bool {
    BEHIND.load(Ordering::Relaxed) != 0
}

/// A thread spends at most half its time yielded, counted over windows of this length: on
/// saturated cores every yield hands the core over, and where no queue says it is behind this
/// still leaves the deferred work half of what it would have had. (A tenth, session 25, held the
/// store's writes back from giving way at a moderate load: see the module's documentation.)
const BUDGET_WINDOW: Duration = Duration::from_millis(50);

thread_local! {
    /// When this thread last gave way (or started its current piece of work).
    static SINCE: Cell<Option<Instant>> = const { Cell::new(None) };
    /// The start of this thread's budget window and the time it spent yielded in it.
    static BUDGET: Cell<Option<(Instant, Duration)>> = const { Cell::new(None) };
}

/// A point between two small pieces of deferred work: yield the core if [`QUANTUM`] has passed
/// since this thread last did. The first call on a thread only starts the clock. The clock is
/// wall time: it includes any time the thread was blocked or preempted; call [`start`] where a new
/// piece of work begins after a wait, so that the wait does not count.
pub fn tick() {
    if is_behind() {
        return;
    }
    let now = Instant::now();
    SINCE.with(|since| match since.get() {
        Some(t) if now.saturating_duration_since(t) < QUANTUM => {}
        Some(_) => {
            let (start, spent, allowed) = budget(BUDGET.get(), now);
            let mut after = now;
            if allowed {
                std::thread::yield_now();
                after = Instant::now();
            }
            BUDGET.set(Some((start, spent + after.saturating_duration_since(now))));
            since.set(Some(after));
        }
        None => since.set(Some(now)),
    });
}

/// The budget window in force at `now` (its start and the time yielded in it: a window older
/// than [`BUDGET_WINDOW`] starts afresh) and whether a yield fits in it: at most half of the
/// window's time so far yielded.
fn budget(window: Option<(Instant, Duration)>, now: Instant) -> (Instant, Duration, bool) {
    let (start, spent) = match window {
        Some((start, spent)) if now.saturating_duration_since(start) <= BUDGET_WINDOW => {
            (start, spent)
        }
        _ => (now, Duration::ZERO),
    };
    (
        start,
        spent,
        spent * 2 <= now.saturating_duration_since(start),
    )
}

/// Start this thread's clock afresh: the beginning of a piece of work after a wait.
pub fn start() {
    SINCE.with(|since| since.set(Some(Instant::now())));
}

/// Chunks a long CPU-bound pass is cut into between two [`tick`]s: zstd's block, the most it
/// compresses at once when fed in a stream (smaller chunks are only copied until a block is
/// full), a few hundred microseconds of work at level 1.
pub const CHUNK_BYTES: usize = 128 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    fn since() -> Option<Instant> {
        SINCE.with(Cell::get)
    }

    /// The first tick only starts the clock; ticks within the quantum leave it alone; one after
    /// it restarts the clock (after the yield).
    #[test]
    fn a_tick_gives_way_only_once_the_quantum_has_run() {
        std::thread::spawn(|| {
            assert_eq!(since(), None);
            tick();
            let first = since().expect("the first tick starts the clock");
            tick();
            assert_eq!(since(), Some(first), "within the quantum nothing changes");
            let spin = Instant::now();
            while spin.elapsed() < QUANTUM * 2 {
                std::hint::spin_loop();
            }
            tick();
            let after = since().expect("still running");
            assert!(
                after > first + QUANTUM,
                "the clock restarts after the yield"
            );
            start();
            assert!(since().expect("started") >= after);

            // While a queue is behind, no tick gives way (nor moves the clock); once none is,
            // they do again. One test: the flag is the process's.
            behind(Backlog::Usage, true);
            behind(Backlog::Captures, true);
            behind(Backlog::Usage, false);
            let held = since();
            let spin = Instant::now();
            while spin.elapsed() < QUANTUM * 2 {
                std::hint::spin_loop();
            }
            tick();
            assert_eq!(since(), held, "one queue still behind");
            behind(Backlog::Captures, false);
            tick();
            assert!(since() > held, "none behind: the tick gives way");
        })
        .join()
        .expect("the test thread");
    }

    /// A yield fits while at most half of the window's time so far went to yields; a window
    /// past its length starts afresh, with nothing spent.
    #[test]
    fn yields_take_at_most_half_of_the_window() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(budget(None, t0), (t0, Duration::ZERO, true));
        assert!(budget(Some((t0, ms(5))), t0 + ms(10)).2, "half exactly");
        assert!(!budget(Some((t0, ms(6))), t0 + ms(10)).2, "three fifths");
        assert_eq!(
            budget(Some((t0, ms(6))), t0 + ms(10)).0,
            t0,
            "the window goes on"
        );
        let later = t0 + BUDGET_WINDOW + ms(1);
        assert_eq!(
            budget(Some((t0, ms(40))), later),
            (later, Duration::ZERO, true)
        );
    }
}
