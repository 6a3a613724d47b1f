//! A rate limit for "N dropped" log lines: an overload drops one item a request, and a line each
//! would flood the log. Used by the usage writer (records dropped) and the capture observer
//! (captures dropped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Rate limit for a "N records dropped" log line: the first drop is reported at once,
/// later ones at most once per interval, each line carrying the count since the last.
/// Times are milliseconds since an epoch of the owner's choosing (the usage writer's start, the
/// capture observer's).
pub struct DropLog {
    interval_ms: u64,
    /// Time of the last line; `NEVER` = none yet.
    last_ms: AtomicU64,
    pending: AtomicU64,
}

impl DropLog {
    const NEVER: u64 = u64::MAX;

    /// At most one line per `interval` after the first.
    pub fn new(interval: Duration) -> Self {
        DropLog {
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            last_ms: AtomicU64::new(Self::NEVER),
            pending: AtomicU64::new(0),
        }
    }

    /// Count one drop at `now_ms`; returns the count to log if a line is due now.
    pub fn hit(&self, now_ms: u64) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        self.due(now_ms)
    }

    /// The count to log if drops are held back and a line is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> Option<u64> {
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let last = self.last_ms.load(Ordering::Acquire);
        if last != Self::NEVER && now_ms.saturating_sub(last) < self.interval_ms {
            return None;
        }
        // Only one of several racing droppers gets to log.
        self.last_ms
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(self.pending.swap(0, Ordering::AcqRel))
    }

    /// When the held-back drops are due to be logged; `None` when nothing is held back.
    pub fn next_due_ms(&self) -> Option<u64> {
        if self.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        match self.last_ms.load(Ordering::Acquire) {
            Self::NEVER => Some(0),
            last => Some(last.saturating_add(self.interval_ms)),
        }
    }

    /// Everything held back, due or not (a last line at shutdown).
    pub fn take_pending(&self) -> u64 {
        self.pending.swap(0, Ordering::AcqRel)
    }

    /// The count a held-back line should carry now: what [`due`](Self::due) gives at `now_ms`,
    /// or everything held back when `all` (at shutdown, or when an outage ends); 0 for no line.
    pub fn held_back(&self, now_ms: u64, all: bool) -> u64 {
        if all {
            self.take_pending()
        } else {
            self.due(now_ms).unwrap_or(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_log_reports_first_drop_then_at_most_once_per_interval() {
        let log = DropLog::new(Duration::from_millis(1000));
        assert_eq!(log.next_due_ms(), None);
        assert_eq!(log.hit(5), Some(1));
        assert_eq!(log.next_due_ms(), None, "nothing held back");
        assert_eq!(log.hit(6), None);
        assert_eq!(log.next_due_ms(), Some(1005));
        assert_eq!(log.hit(900), None);
        assert_eq!(log.hit(1004), None);
        assert_eq!(log.due(1004), None);
        // 1005 is a full interval after the line at 5; it carries the 3 held back + itself.
        assert_eq!(log.hit(1005), Some(4));
        assert_eq!(log.hit(1500), None);
        // The writer's timer reports held-back drops without a new drop.
        assert_eq!(log.due(2004), None);
        assert_eq!(log.due(2005), Some(1));
        assert_eq!(log.due(9000), None, "nothing left to report");
        assert_eq!(log.hit(9001), Some(1));
        assert_eq!(log.hit(9002), None);
        assert_eq!(log.take_pending(), 1);
        assert_eq!(log.take_pending(), 0);
        // Held back and not yet due: nothing now, everything when all is asked for.
        assert_eq!(log.hit(20_000), Some(1));
        assert_eq!(log.hit(20_001), None);
        assert_eq!(log.held_back(20_002, false), 0);
        assert_eq!(log.held_back(20_002, true), 1);
        assert_eq!(log.held_back(40_000, false), 0, "nothing left to report");
    }
}
