//! The batched usage writer: request handlers hand records to a [`UsageSink`] without
//! waiting; one background task batches them into [`Store::insert_usage`] calls.
//! The back-pressure policy is described in the crate docs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Store, UsageRecord};

/// First retry delay after a failed write; doubles on each further failure.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest delay between retries while running.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// Longest delay between retries during shutdown, where we must finish.
const SHUTDOWN_RETRY_MAX: Duration = Duration::from_secs(1);
/// Failed writes tolerated during shutdown before the rest is given up (and counted).
const SHUTDOWN_RETRIES: u32 = 5;
/// At most one "records dropped" log line per this interval (per reason).
const DROP_WARN_INTERVAL_MS: u64 = 10_000;
/// Upper bound on `flush_interval` (keeps deadline arithmetic far from overflow).
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Upper bound on `queue_capacity` (the channel's own limit is far above any sane value).
const MAX_QUEUE_CAPACITY: usize = 1 << 24;

/// Sizing of the usage writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageWriterConfig {
    /// Records the queue holds before [`UsageSink::record`] starts dropping. Also the
    /// size of the retry buffer while the store is failing. At least 1.
    pub queue_capacity: usize,
    /// Records per `insert_usage` call. Between 1 and `queue_capacity`.
    pub batch_size: usize,
    /// A partial batch is written this long after its first record arrived (at most a day).
    pub flush_interval: Duration,
}

impl Default for UsageWriterConfig {
    fn default() -> Self {
        UsageWriterConfig {
            queue_capacity: 8192,
            batch_size: 256,
            flush_interval: Duration::from_secs(1),
        }
    }
}

impl UsageWriterConfig {
    fn normalized(&self) -> UsageWriterConfig {
        let queue_capacity = self.queue_capacity.clamp(1, MAX_QUEUE_CAPACITY);
        UsageWriterConfig {
            queue_capacity,
            batch_size: self.batch_size.clamp(1, queue_capacity),
            flush_interval: self.flush_interval.min(MAX_FLUSH_INTERVAL),
        }
    }
}

/// What the writer did over its lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriterStats {
    /// Records the store accepted.
    pub written: u64,
    /// Records lost: queue full, sent after shutdown began, rejected by the store as
    /// invalid, or still unwritten when shutdown gave up on a failing store.
    pub dropped: u64,
    /// `insert_usage` calls that returned an error.
    pub failed_batches: u64,
}

/// State shared by the sinks, the writer task and the handle.
struct Shared {
    closed: AtomicBool,
    written: AtomicU64,
    dropped: AtomicU64,
    failed_batches: AtomicU64,
    queue_full: DropLog,
    after_close: DropLog,
    epoch: std::time::Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn stats(&self) -> WriterStats {
        WriterStats {
            written: self.written.load(Ordering::Acquire),
            dropped: self.dropped.load(Ordering::Acquire),
            failed_batches: self.failed_batches.load(Ordering::Acquire),
        }
    }

    fn drop_queue_full(&self) {
        self.dropped.fetch_add(1, Ordering::AcqRel);
        if let Some(n) = self.queue_full.hit(self.now_ms()) {
            tracing::warn!(dropped = n, "usage queue full: {n} records dropped");
        }
    }

    fn drop_after_close(&self) {
        self.dropped.fetch_add(1, Ordering::AcqRel);
        if let Some(n) = self.after_close.hit(self.now_ms()) {
            tracing::warn!(dropped = n, "usage writer shut down: {n} records dropped");
        }
    }

    /// Report drops that the rate limit held back, so every drop is logged eventually.
    fn log_held_back_drops(&self) {
        let n = self.queue_full.take_pending();
        if n > 0 {
            tracing::warn!(dropped = n, "usage queue full: {n} records dropped");
        }
        let n = self.after_close.take_pending();
        if n > 0 {
            tracing::warn!(dropped = n, "usage writer shut down: {n} records dropped");
        }
    }
}

/// Rate limit for a "N records dropped" log line: the first drop is reported at once,
/// later ones at most once per interval, each line carrying the count since the last.
struct DropLog {
    interval_ms: u64,
    /// Time of the last line in ms since the writer started; `u64::MAX` = none yet.
    last_ms: AtomicU64,
    pending: AtomicU64,
}

impl DropLog {
    const NEVER: u64 = u64::MAX;

    fn new(interval_ms: u64) -> Self {
        DropLog {
            interval_ms,
            last_ms: AtomicU64::new(Self::NEVER),
            pending: AtomicU64::new(0),
        }
    }

    /// Count one drop at `now_ms`; returns the count to log if a line is due now.
    fn hit(&self, now_ms: u64) -> Option<u64> {
        self.pending.fetch_add(1, Ordering::AcqRel);
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

    fn take_pending(&self) -> u64 {
        self.pending.swap(0, Ordering::AcqRel)
    }
}

/// The producer side: cheap to clone, never blocks. See the crate docs for what happens
/// when the queue is full.
#[derive(Clone)]
pub struct UsageSink {
    tx: mpsc::Sender<UsageRecord>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UsageSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageSink")
            .field("queued", &self.queued())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl UsageSink {
    /// Queue a record for writing. Never waits (safe from `Drop` impls and sync code):
    /// when the queue is full, or shutdown has begun, the record is dropped and counted.
    pub fn record(&self, rec: UsageRecord) {
        if self.shared.closed.load(Ordering::Acquire) {
            self.shared.drop_after_close();
            return;
        }
        match self.tx.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.shared.drop_queue_full(),
            Err(TrySendError::Closed(_)) => self.shared.drop_after_close(),
        }
    }

    /// Records lost so far (all reasons, see [`WriterStats::dropped`]).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Acquire)
    }

    /// Records waiting in the queue (not counting a batch the writer is working on).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// Owner of the writer task. [`shutdown`](UsageWriterHandle::shutdown) it for a clean
/// drain; merely dropping it also closes the intake and lets the task drain in the
/// background, without waiting.
pub struct UsageWriterHandle {
    cancel: CancellationToken,
    join: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UsageWriterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageWriterHandle")
            .field("stats", &self.shared.stats())
            .finish()
    }
}

impl UsageWriterHandle {
    /// Close the intake (later records count as dropped), write everything already
    /// queued, and return the lifetime totals. If the store keeps failing, gives up
    /// after a few retries and counts the unwritten records as dropped.
    pub async fn shutdown(mut self) -> WriterStats {
        self.close_intake();
        if let Some(join) = self.join.take()
            && let Err(e) = join.await
        {
            tracing::error!(error = %e, "usage writer task failed; queued records are lost");
        }
        self.shared.log_held_back_drops();
        let stats = self.shared.stats();
        tracing::debug!(?stats, "usage writer stopped");
        stats
    }

    fn close_intake(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.cancel.cancel();
    }
}

impl Drop for UsageWriterHandle {
    fn drop(&mut self) {
        self.close_intake();
    }
}

/// Start the writer task on the current Tokio runtime (call this inside one).
pub fn spawn_usage_writer(
    store: Arc<dyn Store>,
    cfg: UsageWriterConfig,
) -> (UsageSink, UsageWriterHandle) {
    let cfg = cfg.normalized();
    let (tx, rx) = mpsc::channel(cfg.queue_capacity);
    let shared = Arc::new(Shared {
        closed: AtomicBool::new(false),
        written: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        failed_batches: AtomicU64::new(0),
        queue_full: DropLog::new(DROP_WARN_INTERVAL_MS),
        after_close: DropLog::new(DROP_WARN_INTERVAL_MS),
        epoch: std::time::Instant::now(),
    });
    let cancel = CancellationToken::new();
    let writer = Writer {
        store,
        rx,
        pending: Vec::with_capacity(cfg.batch_size),
        cfg,
        shared: Arc::clone(&shared),
        cancel: cancel.clone(),
        deadline: None,
        retry: None,
        intake_paused: false,
    };
    let join = tokio::spawn(writer.run());
    let sink = UsageSink {
        tx,
        shared: Arc::clone(&shared),
    };
    let handle = UsageWriterHandle {
        cancel,
        join: Some(join),
        shared,
    };
    (sink, handle)
}

/// A scheduled retry after a failed write.
#[derive(Clone, Copy)]
struct Retry {
    at: Instant,
    delay: Duration,
}

/// Outcome of one write attempt.
enum Flush {
    /// The records were written (or rejected as invalid and dropped).
    Done,
    /// The store failed transiently; the records are kept and a retry is scheduled.
    Failed,
}

struct Writer {
    store: Arc<dyn Store>,
    rx: mpsc::Receiver<UsageRecord>,
    cfg: UsageWriterConfig,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    /// Received, not yet written, oldest first. At most `queue_capacity` while running.
    pending: Vec<UsageRecord>,
    /// When the oldest pending record must be written even if the batch is not full.
    deadline: Option<Instant>,
    retry: Option<Retry>,
    /// Set while the retry buffer is full and we leave records in the queue.
    intake_paused: bool,
}

impl Writer {
    async fn run(mut self) {
        loop {
            if self.flush_due(Instant::now()) {
                self.flush_one().await;
                continue;
            }
            let room = self.intake_room();
            if room == 0 && !self.intake_paused {
                self.intake_paused = true;
                tracing::warn!(
                    buffered = self.pending.len(),
                    "usage store failing and retry buffer full; new usage records will be dropped until it recovers"
                );
            }
            let wake_at = self.retry.map(|r| r.at).or(self.deadline);
            let sleep_until = wake_at.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                n = self.rx.recv_many(&mut self.pending, room), if room > 0 => {
                    if n == 0 {
                        // Every sink is gone: nothing more can arrive.
                        break;
                    }
                    if self.deadline.is_none() {
                        self.deadline = Some(Instant::now() + self.cfg.flush_interval);
                    }
                }
                () = tokio::time::sleep_until(sleep_until), if wake_at.is_some() => {}
            }
        }
        self.finish().await;
    }

    /// How many records to take off the queue now.
    fn intake_room(&self) -> usize {
        let limit = if self.retry.is_some() {
            // Failing store: buffer up to queue_capacity while we wait to retry.
            self.cfg.queue_capacity
        } else {
            // Healthy: take at most one batch, so a full batch is written at once.
            self.cfg.batch_size
        };
        limit.saturating_sub(self.pending.len())
    }

    fn flush_due(&self, now: Instant) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        match self.retry {
            Some(r) => now >= r.at,
            None => {
                self.pending.len() >= self.cfg.batch_size || self.deadline.is_some_and(|d| now >= d)
            }
        }
    }

    /// Write the oldest batch of pending records.
    async fn flush_one(&mut self) -> Flush {
        let n = self.pending.len().min(self.cfg.batch_size);
        if n == 0 {
            return Flush::Done;
        }
        match self.store.insert_usage(&self.pending[..n]).await {
            Ok(()) => {
                self.pending.drain(..n);
                self.count_written(n);
                self.batch_settled();
                Flush::Done
            }
            Err(e) => {
                self.shared.failed_batches.fetch_add(1, Ordering::AcqRel);
                if e.is_permanent() {
                    tracing::warn!(error = %e, records = n, "usage batch refused by the store; writing its records one by one");
                    self.write_one_by_one(n).await
                } else {
                    self.schedule_retry(n, &e);
                    Flush::Failed
                }
            }
        }
    }

    /// After a permanent failure: write the first `n` pending records singly so only
    /// the records the store refuses are lost.
    async fn write_one_by_one(&mut self, n: usize) -> Flush {
        let batch: Vec<UsageRecord> = self.pending.drain(..n).collect();
        let mut rest = batch.into_iter();
        while let Some(rec) = rest.next() {
            match self.store.insert_usage(std::slice::from_ref(&rec)).await {
                Ok(()) => self.count_written(1),
                Err(e) if e.is_permanent() => {
                    self.shared.dropped.fetch_add(1, Ordering::AcqRel);
                    tracing::error!(error = %e, id = %rec.id, "usage record refused by the store; dropped");
                }
                Err(e) => {
                    self.shared.failed_batches.fetch_add(1, Ordering::AcqRel);
                    let unwritten: Vec<UsageRecord> = std::iter::once(rec).chain(rest).collect();
                    let count = unwritten.len();
                    self.pending.splice(0..0, unwritten);
                    self.schedule_retry(count, &e);
                    return Flush::Failed;
                }
            }
        }
        self.batch_settled();
        Flush::Done
    }

    fn count_written(&self, n: usize) {
        self.shared
            .written
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::AcqRel);
    }

    /// A batch left `pending` (written or refused): leave retry mode and re-arm the timer.
    fn batch_settled(&mut self) {
        if self.retry.take().is_some() {
            tracing::info!("usage store writes recovered");
        }
        self.intake_paused = false;
        if self.pending.is_empty() {
            self.deadline = None;
        } else if self.deadline.is_none() {
            // Leftovers were received long ago; write them without further delay.
            self.deadline = Some(Instant::now());
        }
    }

    fn schedule_retry(&mut self, records: usize, e: &crate::StoreError) {
        let delay = match self.retry {
            Some(r) => (r.delay * 2).min(RETRY_MAX),
            None => RETRY_INITIAL,
        };
        tracing::warn!(
            error = %e,
            records,
            buffered = self.pending.len(),
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "usage store write failed; will retry"
        );
        self.retry = Some(Retry {
            at: Instant::now() + delay,
            delay,
        });
    }

    /// Shutdown: close the queue, take everything in it, write it all.
    async fn finish(mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.rx.close();
        let cap = self.cfg.queue_capacity;
        while self.rx.recv_many(&mut self.pending, cap).await > 0 {}

        let mut failures_left = SHUTDOWN_RETRIES;
        while !self.pending.is_empty() {
            match self.flush_one().await {
                Flush::Done => {}
                Flush::Failed if failures_left == 0 => {
                    let lost = self.pending.len();
                    self.shared
                        .dropped
                        .fetch_add(u64::try_from(lost).unwrap_or(u64::MAX), Ordering::AcqRel);
                    self.pending.clear();
                    tracing::error!(
                        dropped = lost,
                        "usage store still failing at shutdown: {lost} records dropped"
                    );
                }
                Flush::Failed => {
                    failures_left -= 1;
                    let delay = self
                        .retry
                        .map_or(RETRY_INITIAL, |r| r.delay)
                        .min(SHUTDOWN_RETRY_MAX);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_log_reports_first_drop_then_at_most_once_per_interval() {
        let log = DropLog::new(1000);
        assert_eq!(log.hit(5), Some(1));
        assert_eq!(log.hit(6), None);
        assert_eq!(log.hit(900), None);
        assert_eq!(log.hit(1004), None);
        // 1005 is a full interval after the line at 5; it carries the 3 held back + itself.
        assert_eq!(log.hit(1005), Some(4));
        assert_eq!(log.hit(1500), None);
        assert_eq!(log.take_pending(), 1);
        assert_eq!(log.take_pending(), 0);
    }

    #[test]
    fn config_is_normalized_to_workable_sizes() {
        let cfg = UsageWriterConfig {
            queue_capacity: 0,
            batch_size: 0,
            flush_interval: Duration::ZERO,
        }
        .normalized();
        assert_eq!((cfg.queue_capacity, cfg.batch_size), (1, 1));
        let cfg = UsageWriterConfig {
            queue_capacity: 10,
            batch_size: 500,
            flush_interval: Duration::ZERO,
        }
        .normalized();
        assert_eq!((cfg.queue_capacity, cfg.batch_size), (10, 10));
        let cfg = UsageWriterConfig {
            queue_capacity: usize::MAX,
            batch_size: 1,
            flush_interval: Duration::ZERO,
        }
        .normalized();
        assert_eq!(cfg.queue_capacity, MAX_QUEUE_CAPACITY);
        let cfg = UsageWriterConfig {
            queue_capacity: 1,
            batch_size: 1,
            flush_interval: Duration::MAX,
        }
        .normalized();
        assert_eq!(cfg.flush_interval, MAX_FLUSH_INTERVAL);
    }
}
