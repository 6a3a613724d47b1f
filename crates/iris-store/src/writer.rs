//! The batched usage writer: request handlers hand records to a [`UsageSink`] without
//! waiting; one background task batches them into [`Store::insert_usage`] calls.
//! The back-pressure and failure policy is described in the crate docs.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::sync::mpsc::{self, error::TryRecvError, error::TrySendError};
use tokio::task::JoinHandle;

use crate::DropLog;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{Store, UsageRecord};

/// First retry delay after a failed write; doubles on each further failure.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Longest delay between retries while running: once a fault clears, the buffered
/// records are written at most this long afterwards.
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Longest delay between retries during shutdown, where we must finish.
const SHUTDOWN_RETRY_MAX: Duration = Duration::from_secs(1);
/// Failed writes tolerated during shutdown before the rest is given up (and counted).
const SHUTDOWN_RETRIES: u32 = 5;
/// At most one "records dropped" log line per this interval (per reason); drops held
/// back by the limit are reported by the writer when the interval is over.
const DROP_WARN_INTERVAL: Duration = Duration::from_secs(10);
/// Upper bound on `flush_interval` (keeps deadline arithmetic far from overflow).
const MAX_FLUSH_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Upper bound on `queue_capacity` (the channel's own limit is far above any sane value).
const MAX_QUEUE_CAPACITY: usize = 1 << 24;

/// Sizing of the usage writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageWriterConfig {
    /// Records held in memory at most: queued, in the batch being written, and waiting
    /// for a failing store to recover, together. Beyond it [`UsageSink::record`] drops
    /// (and counts). At least 1.
    pub queue_capacity: usize,
    /// Records per `insert_usage` call. Between 1 and `queue_capacity`.
    pub batch_size: usize,
    /// A partial batch is written this long after its first record reached the writer
    /// (at most a day). It bounds what a crash (`kill -9`) can lose.
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
    /// Records lost: buffer full, sent after shutdown began, rejected by the store as
    /// invalid, or still unwritten when shutdown gave up on a failing store.
    pub dropped: u64,
    /// `insert_usage` calls that returned an error.
    pub failed_batches: u64,
}

/// State shared by the sinks, the writer task and the handle.
struct Shared {
    closed: AtomicBool,
    /// `queue_capacity`: the most records `buffered` may reach.
    capacity: usize,
    /// `batch_size`: when `buffered` reaches it, a full batch is waiting.
    batch_size: usize,
    /// Wakes the writer when a full batch is waiting. While it collects a batch the writer
    /// does not wait on the queue itself: a waiting receiver is woken by every record sent,
    /// and at tens of thousands of records a second that was thousands of thread wake-ups
    /// (an `eventfd` write by the sender, a context switch for the writer) for nothing.
    batch_ready: Notify,
    /// Records a sink accepted that are neither written nor dropped yet: those in the
    /// channel plus the writer's batch and retry buffer. A sink reserves a slot here
    /// before sending, so this is the one bound on memory.
    buffered: AtomicUsize,
    written: AtomicU64,
    dropped: AtomicU64,
    failed_batches: AtomicU64,
    /// From a failed write until the next successful one.
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Turns of the writer's loop (a test counts its wake-ups).
    #[cfg(test)]
    turns: AtomicU64,
    buffer_full: DropLog,
    after_close: DropLog,
    epoch: Instant,
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

    /// Take one slot of the buffer: the number of records buffered before, or `None` when
    /// it is full.
    fn reserve(&self) -> Option<usize> {
        self.buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .ok()
    }

    /// `n` buffered records left memory: `written` of them were stored, the rest dropped.
    fn settle(&self, n: usize, written: usize) {
        let dropped = n.saturating_sub(written);
        self.written.fetch_add(as_u64(written), Ordering::AcqRel);
        self.dropped.fetch_add(as_u64(dropped), Ordering::AcqRel);
        self.buffered.fetch_sub(n, Ordering::AcqRel);
    }

    fn drop_buffer_full(&self) {
        self.dropped.fetch_add(1, Ordering::AcqRel);
        if let Some(n) = self.buffer_full.hit(self.now_ms()) {
            self.log_buffer_full(n);
        }
    }

    fn drop_after_close(&self) {
        self.dropped.fetch_add(1, Ordering::AcqRel);
        if let Some(n) = self.after_close.hit(self.now_ms()) {
            log_after_close(n);
        }
    }

    fn log_buffer_full(&self, n: u64) {
        let total = self.dropped.load(Ordering::Acquire);
        if self.failing.load(Ordering::Acquire) {
            tracing::warn!(
                dropped = n,
                total,
                capacity = self.capacity,
                "usage store failing and buffer full: {n} records dropped"
            );
        } else {
            tracing::warn!(
                dropped = n,
                total,
                capacity = self.capacity,
                "usage queue full: {n} records dropped"
            );
        }
    }

    /// Log the drops the rate limit held back, if their line is due (or `now`).
    fn report_held_back_drops(&self, now: bool) {
        let now_ms = self.now_ms();
        let n = self.buffer_full.held_back(now_ms, now);
        if n > 0 {
            self.log_buffer_full(n);
        }
        let n = self.after_close.held_back(now_ms, now);
        if n > 0 {
            log_after_close(n);
        }
    }

    /// When the next held-back drop line is due, if any drop is held back.
    fn next_drop_report(&self) -> Option<Instant> {
        [&self.buffer_full, &self.after_close]
            .into_iter()
            .filter_map(|log| log.next_due_ms())
            .min()
            .map(|ms| self.epoch + Duration::from_millis(ms))
    }

    fn set_failing(&self, e: &crate::StoreError) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
        self.failing.store(true, Ordering::Release);
    }

    fn set_recovered(&self) {
        self.failing.store(false, Ordering::Release);
        if let Ok(mut last) = self.last_error.lock() {
            *last = None;
        }
    }
}

fn log_after_close(n: u64) {
    tracing::warn!(dropped = n, "usage writer shut down: {n} records dropped");
}

fn as_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The producer side: cheap to clone, never blocks. See the crate docs for what happens
/// when the buffer is full.
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
            .field("store_failing", &self.store_failing())
            .finish()
    }
}

impl UsageSink {
    /// Queue a record for writing. Never waits (safe from `Drop` impls and sync code):
    /// when `queue_capacity` records are already held, or shutdown has begun, the record
    /// is dropped and counted.
    pub fn record(&self, rec: UsageRecord) {
        if self.shared.closed.load(Ordering::Acquire) {
            self.shared.drop_after_close();
            return;
        }
        let Some(before) = self.shared.reserve() else {
            self.shared.drop_buffer_full();
            return;
        };
        match self.tx.try_send(rec) {
            // This record completes a batch: the writer, if it is collecting one, takes it now
            // (if it is not waiting, the permit makes its next wait return at once).
            Ok(()) if before + 1 == self.shared.batch_size => self.shared.batch_ready.notify_one(),
            Ok(()) => {}
            // Cannot happen (the reservation bounds the channel too); counted if it does.
            Err(TrySendError::Full(_)) => {
                self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
                self.shared.drop_buffer_full();
            }
            Err(TrySendError::Closed(_)) => {
                self.shared.buffered.fetch_sub(1, Ordering::AcqRel);
                self.shared.drop_after_close();
            }
        }
    }

    /// Records lost so far (all reasons, see [`WriterStats::dropped`]).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Acquire)
    }

    /// Records accepted and not yet written: queued, in the batch being written, or held
    /// while the store fails. Never more than `queue_capacity`.
    pub fn queued(&self) -> usize {
        self.shared.buffered.load(Ordering::Acquire)
    }

    /// True from a failed usage write until the next successful one.
    pub fn store_failing(&self) -> bool {
        self.shared.failing.load(Ordering::Acquire)
    }

    /// The error of the last failed write while [`store_failing`](Self::store_failing).
    pub fn last_store_error(&self) -> Option<String> {
        self.shared.last_error.lock().ok().and_then(|e| e.clone())
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
        self.shared.report_held_back_drops(true);
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
        capacity: cfg.queue_capacity,
        batch_size: cfg.batch_size,
        batch_ready: Notify::new(),
        buffered: AtomicUsize::new(0),
        written: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        failed_batches: AtomicU64::new(0),
        failing: AtomicBool::new(false),
        last_error: Mutex::new(None),
        #[cfg(test)]
        turns: AtomicU64::new(0),
        buffer_full: DropLog::new(DROP_WARN_INTERVAL),
        after_close: DropLog::new(DROP_WARN_INTERVAL),
        epoch: Instant::now(),
    });
    let cancel = CancellationToken::new();
    let writer = Writer {
        store,
        rx,
        pending: Vec::with_capacity(cfg.batch_size),
        spare: Vec::with_capacity(cfg.batch_size),
        cfg,
        shared: Arc::clone(&shared),
        cancel: cancel.clone(),
        deadline: None,
        retry: None,
        failed_len: None,
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

/// The records of a batch whose write has returned: the store has let go of its share by
/// then, so they come back without a copy (a copy only if a store kept one).
fn take_back(batch: Arc<Vec<UsageRecord>>) -> Vec<UsageRecord> {
    Arc::try_unwrap(batch).unwrap_or_else(|kept| kept.as_ref().clone())
}

/// A scheduled retry after a failed write.
#[derive(Clone, Copy)]
struct Retry {
    at: Instant,
    delay: Duration,
    /// When the first write of this outage failed.
    since: Instant,
    /// Failed writes in this outage.
    failures: u32,
}

/// Whether more records can arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intake {
    Open,
    /// Every sink is gone and the queue is empty.
    Closed,
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
    /// Received, not yet written, oldest first. At most `queue_capacity` (the sinks'
    /// reservation counts these too).
    pending: Vec<UsageRecord>,
    /// The buffer of the last batch written, emptied, for the next one: a batch of records is
    /// a large allocation (~150 KB at the default size), whose pages the allocator gives back
    /// to the kernel between batches, so a new one each time cost a page fault every 4 KB.
    spare: Vec<UsageRecord>,
    /// When the oldest pending record must be written even if the batch is not full.
    deadline: Option<Instant>,
    retry: Option<Retry>,
    /// The size of the batch whose write failed transiently (it is at the front of `pending`):
    /// its retry writes exactly those records again, never more, so a write that landed
    /// although it reported an error is recognised by the store as the same batch (see
    /// [`Store::insert_usage`]).
    failed_len: Option<usize>,
}

impl Writer {
    async fn run(mut self) {
        loop {
            #[cfg(test)]
            self.shared.turns.fetch_add(1, Ordering::Relaxed);
            self.shared.report_held_back_drops(false);
            // Idle (nothing pending, no retry): wait on the queue, so the first record starts
            // a batch and its flush interval. Collecting a batch, or holding a failed one for
            // its retry: take what is queued now and wait for the batch to fill (the sinks
            // wake the writer when `buffered` reaches `batch_size`), the flush deadline or the
            // retry; records sent meanwhile wake nobody.
            let collecting = !self.pending.is_empty() || self.retry.is_some();
            if collecting && self.take_queued() == Intake::Closed {
                break;
            }
            if self.flush_due(Instant::now()) {
                // A quarter of the queue waiting: the deferred work stops giving way.
                crate::pace::behind(
                    crate::pace::Backlog::Usage,
                    self.rx.len() > self.cfg.queue_capacity / 4,
                );
                self.flush_one().await;
                continue;
            }
            let room = self.intake_room();
            let flush_at = self.retry.map(|r| r.at).or(self.deadline);
            let wake_at = match (flush_at, self.shared.next_drop_report()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep_until = wake_at.unwrap_or_else(Instant::now);
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                n = self.rx.recv_many(&mut self.pending, room), if !collecting && room > 0 => {
                    if n == 0 {
                        // Every sink is gone: nothing more can arrive.
                        break;
                    }
                    self.started_collecting();
                }
                () = self.shared.batch_ready.notified(), if collecting => {}
                () = tokio::time::sleep_until(sleep_until), if wake_at.is_some() => {}
            }
        }
        self.finish().await;
        // Nothing of this writer's is behind any more (the flag is the process's).
        crate::pace::behind(crate::pace::Backlog::Usage, false);
    }

    /// Take the records queued now, without waiting, as far as `intake_room` allows.
    fn take_queued(&mut self) -> Intake {
        let room = self.intake_room();
        let mut took = 0;
        let mut intake = Intake::Open;
        while took < room {
            match self.rx.try_recv() {
                Ok(rec) => {
                    self.pending.push(rec);
                    took += 1;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    intake = Intake::Closed;
                    break;
                }
            }
        }
        if took > 0 {
            self.started_collecting();
        }
        intake
    }

    /// Records were received: the flush interval runs from the first of a batch.
    fn started_collecting(&mut self) {
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.cfg.flush_interval);
        }
    }

    /// How many records to take off the queue now.
    fn intake_room(&self) -> usize {
        let limit = if self.retry.is_some() {
            // Failing store: hold everything while we wait to retry. The sinks'
            // reservation keeps queue + buffer within queue_capacity.
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
        let n = self
            .failed_len
            .take()
            .unwrap_or(self.cfg.batch_size)
            .min(self.pending.len());
        if n == 0 {
            return Flush::Done;
        }
        let started = Instant::now();
        let mut batch = std::mem::take(&mut self.spare);
        if n == self.pending.len() {
            // All of `pending`: hand its buffer over, and collect into the spare one.
            std::mem::swap(&mut batch, &mut self.pending);
        } else {
            batch.extend(self.pending.drain(..n));
        }
        let batch = Arc::new(batch);
        match self.store.insert_usage(Arc::clone(&batch)).await {
            Ok(()) => {
                if let Ok(buffer) = Arc::try_unwrap(batch) {
                    self.keep_spare(buffer);
                }
                self.shared.settle(n, n);
                self.batch_settled(started);
                Flush::Done
            }
            Err(e) => {
                self.shared.failed_batches.fetch_add(1, Ordering::AcqRel);
                let mut batch = take_back(batch);
                if e.is_permanent() {
                    tracing::warn!(error = %e, records = n, "usage batch refused by the store; writing its records one by one");
                    self.write_one_by_one(batch, started).await
                } else {
                    // Back in front of the records received since, in the batch's buffer; the
                    // emptied one is kept as the spare.
                    batch.append(&mut self.pending);
                    let emptied = std::mem::replace(&mut self.pending, batch);
                    self.keep_spare(emptied);
                    self.failed_len = Some(n);
                    self.schedule_retry(n, &e);
                    Flush::Failed
                }
            }
        }
    }

    /// Keep an emptied batch buffer for the next batch, unless it grew far beyond a batch (after
    /// an outage `pending` holds up to `queue_capacity`).
    fn keep_spare(&mut self, mut buffer: Vec<UsageRecord>) {
        if buffer.capacity() <= 2 * self.cfg.batch_size {
            buffer.clear();
            self.spare = buffer;
        }
    }

    /// After a permanent failure: write the records of `batch` (taken from the front of
    /// `pending`) singly so only the records the store refuses are lost.
    async fn write_one_by_one(&mut self, batch: Vec<UsageRecord>, started: Instant) -> Flush {
        let mut rest = batch.into_iter();
        while let Some(rec) = rest.next() {
            let one = Arc::new(vec![rec]);
            match self.store.insert_usage(Arc::clone(&one)).await {
                Ok(()) => self.shared.settle(1, 1),
                Err(e) if e.is_permanent() => {
                    self.shared.settle(1, 0);
                    let id = one.first().map_or("", |r| r.id.as_str());
                    tracing::error!(error = %e, id = %id, "usage record refused by the store; dropped");
                }
                Err(e) => {
                    self.shared.failed_batches.fetch_add(1, Ordering::AcqRel);
                    let unwritten: Vec<UsageRecord> =
                        take_back(one).into_iter().chain(rest).collect();
                    let count = unwritten.len();
                    self.pending.splice(0..0, unwritten);
                    self.failed_len = Some(1);
                    self.schedule_retry(count, &e);
                    return Flush::Failed;
                }
            }
        }
        self.batch_settled(started);
        Flush::Done
    }

    /// A batch left `pending` (written or refused; its write began at `started`): leave
    /// retry mode and re-arm the timer.
    fn batch_settled(&mut self, started: Instant) {
        if let Some(r) = self.retry.take() {
            // Report every drop of the outage now, so the log adds up to the counter.
            self.shared.report_held_back_drops(true);
            self.shared.set_recovered();
            tracing::info!(
                failed_writes = r.failures,
                outage_ms = u64::try_from(r.since.elapsed().as_millis()).unwrap_or(u64::MAX),
                buffered = self.shared.buffered.load(Ordering::Acquire),
                dropped_total = self.shared.dropped.load(Ordering::Acquire),
                "usage store writes recovered; writing the buffered records"
            );
        }
        if self.pending.is_empty() {
            // Records that came in while the batch was being written have waited since it
            // began (at the latest): their interval counts from then, so a slow write does not
            // stretch what a crash can lose.
            self.deadline = (!self.rx.is_empty()).then(|| started + self.cfg.flush_interval);
        } else if self.deadline.is_none() {
            // Leftovers were received long ago; write them without further delay.
            self.deadline = Some(Instant::now());
        }
    }

    fn schedule_retry(&mut self, records: usize, e: &crate::StoreError) {
        let now = Instant::now();
        let (delay, since, failures) = match self.retry {
            Some(r) => ((r.delay * 2).min(RETRY_MAX), r.since, r.failures + 1),
            None => (RETRY_INITIAL, now, 1),
        };
        self.shared.set_failing(e);
        tracing::warn!(
            error = %e,
            records,
            buffered = self.shared.buffered.load(Ordering::Acquire),
            capacity = self.cfg.queue_capacity,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "usage store write failed; records stay buffered and the write is retried"
        );
        self.retry = Some(Retry {
            at: now + delay,
            delay,
            since,
            failures,
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
                    self.pending.clear();
                    self.shared.settle(lost, 0);
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

    fn record(i: u64) -> UsageRecord {
        UsageRecord {
            id: format!("r{i}"),
            request_id: format!("r{i}"),
            api_family: "openai_chat".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            identity_source: "loopback".into(),
            ..UsageRecord::default()
        }
    }

    /// Records sent while the writer collects a batch do not wake it one by one (each wake-up
    /// of a waiting receiver costs the sender an `eventfd` write and the writer a context
    /// switch); the record that completes the batch does, so a full batch is written at once,
    /// long before the flush interval.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_collecting_writer_wakes_for_a_full_batch_not_for_every_record() {
        let store: Arc<dyn Store> = Arc::new(crate::SqliteStore::open_temporary().await.unwrap());
        let cfg = UsageWriterConfig {
            queue_capacity: 10_000,
            batch_size: 500,
            flush_interval: Duration::from_secs(60),
        };
        let (sink, handle) = spawn_usage_writer(store, cfg);
        let shared = Arc::clone(&handle.shared);
        for i in 0..499 {
            sink.record(record(i));
            // Time for the writer (on the other worker) to take each record, as it had when
            // records arrived one at a time.
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        let turns = shared.turns.load(Ordering::Relaxed);
        assert!(
            turns <= 5,
            "the writer turned {turns} times for 499 records"
        );
        assert_eq!(shared.stats().written, 0);
        sink.record(record(499));
        let started = std::time::Instant::now();
        while shared.stats().written < 500 {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the full batch was not written"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let stats = handle.shutdown().await;
        assert_eq!((stats.written, stats.dropped), (500, 0));
    }

    #[test]
    fn the_default_flush_interval_bounds_crash_loss_to_a_second() {
        assert!(UsageWriterConfig::default().flush_interval <= Duration::from_secs(1));
    }
}
