//! What happened, worked out off the request path: each finished request's usage record and the
//! raw parts of its exchange go through a bounded queue to one worker, which works out the
//! session, the cost and the tool calls, builds the (redacted, decompressed, reassembled)
//! capture, hands the record to the usage writer and keeps the capture in the store.
//!
//! Back-pressure: when the queue is full, the record skips enrichment and goes straight to the
//! usage writer (counted as `unenriched`): a usage record is never lost to a slow capture.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use iris_capture::{
    Accounting, CaptureLimits, CostBasis, HeaderList, ModelCostRule, RawExchange, Redactor,
    SessionKind, TokenUsage,
};
use iris_providers::usage::UsageExtractor;
use iris_store::{CaptureRow, Store, UsageRecord, UsageSink};
use tokio::sync::mpsc;

/// Cost settings of one provider, resolved when the config is loaded.
#[derive(Debug, Clone)]
pub struct ProviderCost {
    pub basis: CostBasis,
    pub rules: Vec<ModelCostRule>,
}

/// The bytes of response bodies all requests in flight hold for their captures together
/// (`iris.captures.max_in_flight_bytes`). A stream whose capture would go beyond the limit is
/// captured truncated, so memory stays bounded however many streams are open (5,000 slow streams
/// must not each hold megabytes). The limit is the one of each request's config, so a reload
/// applies to the next chunk.
#[derive(Debug, Default)]
pub struct CaptureBudget {
    used: AtomicU64,
}

impl CaptureBudget {
    fn take(&self, n: usize, limit: usize) -> bool {
        let (n, limit) = (n as u64, limit as u64);
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n as u64, Ordering::AcqRel);
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}

/// The raw parts of one exchange, kept by the request path for the worker.
pub struct Exchange {
    /// Where the kept response bytes are accounted; given back when the exchange is dropped.
    pub budget: Option<Arc<CaptureBudget>>,
    /// The budget's limit for this request.
    pub budget_limit: usize,
    pub request_headers: HeaderList,
    pub request_body: Bytes,
    /// Where the request peek found the session fields in `request_body` (`None` when the peek
    /// did not read it: the body is then read for them).
    pub session_parts: Option<iris_providers::SessionParts>,
    pub response_headers: HeaderList,
    /// The response bytes kept, copied: holding the frames themselves would pin the whole read
    /// buffers they are slices of (kilobytes per 100-byte SSE chunk, for as long as the stream).
    pub response: Vec<u8>,
    /// Bytes of the budget this exchange holds (the capacity of `response`).
    pub budget_held: usize,
    pub response_complete: bool,
    pub response_is_sse: bool,
    pub cost: Option<Arc<ProviderCost>>,
    /// `Some` when captures are on: the limits and the redactor of the request's config.
    pub capture: Option<(CaptureLimits, Arc<Redactor>)>,
    /// The usage extractor of a whole (non-streaming) answer that `response` holds all of, left
    /// to be finished by the worker before anything reads the record's usage (`with_usage`):
    /// off the request path, unless the record skips the worker (see `Pending::finish`).
    pub usage: Option<Box<UsageExtractor>>,
    /// While the answer passes: the extractor is fed none of it, as `response` holds all of it
    /// so far (see `MeteredBody::new`). Only then is `usage` left here.
    pub usage_in_response: bool,
}

impl Exchange {
    /// Keep a response chunk, up to `cap` bytes in all and within the shared budget.
    pub fn keep(&mut self, chunk: &Bytes, cap: usize) {
        // Once a chunk was left out, later ones are too: a capture is a prefix, never has gaps.
        if !self.response_complete {
            return;
        }
        if self.response.len() >= cap {
            self.response_complete = false;
            return;
        }
        let take = chunk.len().min(cap - self.response.len());
        let needed = self.response.len() + take;
        if needed > self.response.capacity() {
            // Grow by doubling (bounded by the cap), accounting for the whole allocation.
            let new_cap = needed.max(self.response.capacity() * 2).min(cap);
            let extra = new_cap - self.response.capacity();
            if let Some(b) = &self.budget
                && !b.take(extra, self.budget_limit)
            {
                self.response_complete = false;
                return;
            }
            self.response.reserve_exact(new_cap - self.response.len());
            self.budget_held += extra;
        }
        self.response.extend_from_slice(&chunk[..take]);
        if take < chunk.len() {
            self.response_complete = false;
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.give(self.budget_held);
        }
    }
}

/// Copies of the headers (all of them, or those `keep` says), for the worker: two allocations
/// whatever their number (see `iris_capture::HeaderList`).
pub fn header_pairs(h: &http::HeaderMap, keep: impl Fn(&str) -> bool) -> HeaderList {
    // Sized from the kept headers only (a pass of name checks): with captures off only the few
    // session headers are kept, and the list lives as long as the request, streams included.
    let (pairs, bytes) = h
        .iter()
        .filter(|(n, _)| keep(n.as_str()))
        .fold((0, 0), |(p, b), (n, v)| {
            (p + 1, b + n.as_str().len() + v.len())
        });
    let mut list = HeaderList::with_capacity(pairs, bytes);
    for (n, v) in h.iter().filter(|(n, _)| keep(n.as_str())) {
        let bytes = v.as_bytes();
        // Nearly every value is ASCII: checked a word at a time, where `from_utf8_lossy`
        // walks it character by character.
        match std::str::from_utf8(bytes) {
            Ok(text) => list.push(n.as_str(), text),
            Err(_) => list.push(n.as_str(), &String::from_utf8_lossy(bytes)),
        }
    }
    list
}

struct Item {
    record: Box<UsageRecord>,
    exchange: Option<Box<Exchange>>,
}

/// Hands finished requests to the worker. Cheap to clone.
#[derive(Clone)]
pub struct Observer {
    tx: mpsc::Sender<Item>,
    sink: UsageSink,
    closed: Arc<AtomicBool>,
    unenriched: Arc<AtomicU64>,
    captures_dropped: Arc<AtomicU64>,
}

impl Observer {
    /// Never blocks.
    pub fn record(&self, mut record: Box<UsageRecord>, mut exchange: Option<Box<Exchange>>) {
        if self.closed.load(Ordering::Acquire) {
            with_usage(&mut record, exchange.as_deref_mut());
            self.sink.record(*record);
            return;
        }
        if let Err(e) = self.tx.try_send(Item { record, exchange }) {
            let Item {
                mut record,
                mut exchange,
            } = match e {
                mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i) => i,
            };
            self.unenriched.fetch_add(1, Ordering::Relaxed);
            with_usage(&mut record, exchange.as_deref_mut());
            self.sink.record(*record);
        }
    }

    pub fn sink(&self) -> &UsageSink {
        &self.sink
    }

    pub fn unenriched(&self) -> u64 {
        self.unenriched.load(Ordering::Relaxed)
    }

    /// Captures not stored because the store could not keep up (see [`MAX_HELD_CAPTURE_BYTES`]).
    pub fn captures_dropped(&self) -> u64 {
        self.captures_dropped.load(Ordering::Relaxed)
    }
}

/// The record with the usage of its answer, when that was left to be read here (a whole answer
/// the capture kept: see [`Exchange::usage`]). In the worker, or on the request path when the
/// record skips the worker (closed, or its queue full).
fn with_usage(record: &mut UsageRecord, exchange: Option<&mut Exchange>) {
    if let Some(x) = exchange
        && let Some(ex) = x.usage.take()
    {
        crate::body::apply_extracted(record, ex.finish_reading(&x.response));
    }
}

/// Capture text the worker holds while the store is slow or failing; beyond it the oldest held
/// captures are dropped (counted, logged). Usage records never wait for captures.
pub const MAX_HELD_CAPTURE_BYTES: usize = 64 << 20;

pub struct ObserverHandle {
    done: tokio::sync::oneshot::Receiver<()>,
    stop: tokio_util::sync::CancellationToken,
    closed: Arc<AtomicBool>,
}

impl ObserverHandle {
    /// Stop taking new work, finish what is queued, write the last captures.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if self.done.await.is_err() {
            tracing::error!("the capture worker ended abnormally");
        }
        self.closed.store(true, Ordering::Release);
    }
}

/// Start the worker. It runs on a thread of its own (with a small runtime of its own), so the
/// CPU work of enrichment — parsing bodies, reassembling streams, redacting captures — never
/// holds one of the request path's runtime workers: a request or a stream's next chunk does not
/// wait behind it. Capture writes are spawned on `store_rt`: a runtime that lives as long as the
/// store (the observer's own runtime ends first, and would cancel a write in flight with it). The
/// server gives it a runtime of its own, whose blocking threads run the SQLite work of a batch
/// (a millisecond for a few hundred captures) away from the request path's workers.
pub fn spawn_observer(
    store: Arc<dyn Store>,
    sink: UsageSink,
    capacity: usize,
    store_rt: tokio::runtime::Handle,
) -> (Observer, ObserverHandle) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let closed = Arc::new(AtomicBool::new(false));
    let stop = tokio_util::sync::CancellationToken::new();
    let (done_tx, done) = tokio::sync::oneshot::channel();
    let worker_sink = sink.clone();
    let worker_stop = stop.clone();
    let captures_dropped = Arc::new(AtomicU64::new(0));
    let writes = CaptureWrites {
        store,
        store_rt,
        held: std::collections::VecDeque::new(),
        held_bytes: 0,
        held_key: None,
        last_key: 0,
        in_flight: None,
        in_flight_len: 0,
        dropped: captures_dropped.clone(),
        drops: iris_store::DropLog::new(DROP_REPORT_EVERY),
        drops_epoch: std::time::Instant::now(),
        failures: WriteFailures::default(),
    };
    let spawned = std::thread::Builder::new()
        .name("iris-observer".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt.block_on(worker(rx, writes, worker_sink, worker_stop)),
                Err(e) => {
                    tracing::error!(error = %e, "could not start the capture worker's runtime");
                }
            }
            let _ = done_tx.send(());
        });
    if let Err(e) = spawned {
        // Without the worker every record goes straight to the usage writer (see `record`).
        tracing::error!(error = %e, "could not start the capture worker: records are not enriched");
        closed.store(true, Ordering::Release);
    }
    (
        Observer {
            tx,
            sink,
            closed: closed.clone(),
            unenriched: Arc::new(AtomicU64::new(0)),
            captures_dropped,
        },
        ObserverHandle { done, stop, closed },
    )
}

/// Items the worker takes from the queue at a time.
const GATHER_MAX: usize = 1024;

/// After a partial gather the worker waits this long before taking the next one, so that under
/// load finished requests are handed over in bursts: while the worker waits it is not registered
/// on the queue, and a request path that hands an item over wakes no thread (a futex wake and a
/// context switch per request otherwise, several percent of a small request's cost). Records
/// reach the usage writer at most this much later, which batches them for up to a second anyway.
const GATHER_PAUSE: Duration = Duration::from_millis(5);

/// Captures held before a write starts without waiting for the next tick. Every write is one
/// transaction (one fsync of the WAL), so at thousands of requests a second small batches would
/// cost a commit every few milliseconds.
const CAPTURE_BATCH: usize = 1024;

/// Capture text held before a write starts without waiting for the next tick.
const CAPTURE_BATCH_BYTES: usize = 8 << 20;

/// Chat openings whose session fingerprint the worker remembers (per generation; see
/// `iris_capture::FingerprintCache`): a few thousand conversations in flight at once, at most
/// a few megabytes.
const FINGERPRINT_CACHE: usize = 4096;

/// Held captures are written at least this often.
const CAPTURE_WRITE_EVERY: Duration = Duration::from_millis(250);

async fn worker(
    mut rx: mpsc::Receiver<Item>,
    mut writes: CaptureWrites,
    sink: UsageSink,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(CAPTURE_WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut items = Vec::with_capacity(GATHER_MAX);
    let mut fingerprints = iris_capture::FingerprintCache::new(FINGERPRINT_CACHE);
    loop {
        tokio::select! {
            biased;
            // The tick first: under steady load the queue is never empty when the worker looks,
            // and held captures must still reach the store every `CAPTURE_WRITE_EVERY`.
            _ = tick.tick() => {
                writes.start_write().await;
                note_backlog(&rx, &writes);
                writes.report_drops(false);
                writes.report_failures(false);
            }
            n = rx.recv_many(&mut items, GATHER_MAX) => {
                if n == 0 {
                    break;
                }
                take_gather(&mut items, &mut writes, &sink, &mut fingerprints, &rx).await;
                if n < GATHER_MAX {
                    tokio::select! {
                        _ = tokio::time::sleep(GATHER_PAUSE) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            },
            _ = stop.cancelled() => {
                rx.close();
                while let Some(item) = rx.recv().await {
                    writes.take(enrich(item, &mut fingerprints), &sink);
                    // Shutting down, the worker may wait for the store: each whole batch is
                    // written before more is held (up to the queue's bound could be waiting).
                    if writes.batch_ready() {
                        writes.settle().await;
                        writes.start_write().await;
                    }
                }
                break;
            }
        }
    }
    writes.finish().await;
    // Nothing of this worker's is behind any more (the flag is the process's).
    iris_store::pace::behind(iris_store::pace::Backlog::Captures, false);
}

/// One gather of finished requests: each enriched, its record to the usage writer, its capture
/// held; a batch is handed to the store as soon as it is whole (if the write before it is
/// done), not after the gather: a gather of large requests can hold more than may be held.
async fn take_gather(
    items: &mut Vec<Item>,
    writes: &mut CaptureWrites,
    sink: &UsageSink,
    fingerprints: &mut iris_capture::FingerprintCache,
    rx: &mpsc::Receiver<Item>,
) {
    // A burst of a thousand coding agents' requests is tens of milliseconds of work: a turn at
    // a time, so it does not hold a core a request waits for.
    iris_store::pace::start();
    for item in items.drain(..) {
        writes.take(enrich(item, fingerprints), sink);
        if writes.batch_ready() {
            writes.start_write().await;
            note_backlog(rx, writes);
        }
        iris_store::pace::tick();
    }
    note_backlog(rx, writes);
}

/// Say whether the observer's side of the deferred work has fallen behind, so that it stops
/// giving way until it has caught up (`iris_store::pace::behind`): a quarter of its queue
/// waiting, or the store behind (see [`CaptureWrites::store_behind`]).
fn note_backlog(rx: &mpsc::Receiver<Item>, writes: &CaptureWrites) {
    iris_store::pace::behind(
        iris_store::pace::Backlog::Captures,
        rx.len() > rx.max_capacity() / 4 || writes.store_behind(),
    );
}

/// The captures waiting for the store, and the one write in flight. The worker never waits for
/// the store while it still has requests to process: a locked or failing database (SQLite waits
/// out a lock for seconds) must not hold up the records behind it.
struct CaptureWrites {
    store: Arc<dyn Store>,
    store_rt: tokio::runtime::Handle,
    held: std::collections::VecDeque<CaptureRow>,
    held_bytes: usize,
    /// The key the held captures will be written under (`None` while none is held).
    held_key: Option<i64>,
    /// The last key given out.
    last_key: i64,
    in_flight: Option<tokio::task::JoinHandle<(usize, Result<(), iris_store::StoreError>)>>,
    /// Captures in the write in flight: lost, and counted, if its task panics or is cancelled.
    in_flight_len: usize,
    dropped: Arc<AtomicU64>,
    /// The "captures dropped" lines, rate-limited; times in milliseconds since `drops_epoch`.
    drops: iris_store::DropLog,
    drops_epoch: std::time::Instant,
    failures: WriteFailures,
}

/// Capture writes the store refused (a failing database refuses one every tick, four a second),
/// logged like the drops: the first at once, the rest together at most every
/// [`DROP_REPORT_EVERY`] with the last error, and one line when a write succeeds again.
struct WriteFailures {
    /// Failed writes not yet logged, rate-limited (times as for `CaptureWrites::drops`).
    log: iris_store::DropLog,
    /// Captures of the failed writes not yet logged.
    captures: u64,
    last_error: String,
    /// Failed writes and their captures since the last write that succeeded.
    outage_writes: u64,
    outage_captures: u64,
}

impl Default for WriteFailures {
    fn default() -> Self {
        WriteFailures {
            log: iris_store::DropLog::new(DROP_REPORT_EVERY),
            captures: 0,
            last_error: String::new(),
            outage_writes: 0,
            outage_captures: 0,
        }
    }
}

fn log_capture_writes_failed(writes: u64, captures: u64, error: &str) {
    tracing::warn!(
        error = %error,
        failed_writes = writes,
        dropped = captures,
        "could not store captures: {captures} dropped in {writes} failed writes (usage records are kept)"
    );
}

/// Dropped captures are logged at most this often (they are counted in `/api/health` at once).
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

fn log_captures_dropped(n: u64) {
    tracing::warn!(
        dropped = n,
        "the store is not keeping up: {n} captures dropped (usage records are kept)"
    );
}

impl CaptureWrites {
    /// An enriched request: the record goes to the usage writer first (usage never waits for a
    /// capture), naming the batch its capture is held for.
    fn take(
        &mut self,
        (mut record, capture): (Box<UsageRecord>, Option<CaptureRow>),
        sink: &UsageSink,
    ) {
        if capture.is_some() {
            record.capture_batch = Some(self.batch_key());
        }
        sink.record(*record);
        if let Some(c) = capture {
            self.hold(c);
        }
    }

    /// The key of the batch being held: the time in milliseconds times 2^16, or one more than
    /// the last key if that is larger. A restart a millisecond or more later makes keys of its
    /// own; a repeated key (a clock set back) only makes a lookup search more blocks.
    fn batch_key(&mut self) -> i64 {
        *self.held_key.get_or_insert_with(|| {
            self.last_key = (iris_store::now_ms().max(0) << 16).max(self.last_key + 1);
            self.last_key
        })
    }

    fn hold(&mut self, c: CaptureRow) {
        self.held_bytes += c.text_len();
        self.held.push_back(c);
        while self.held_bytes > MAX_HELD_CAPTURE_BYTES {
            let Some(old) = self.held.pop_front() else {
                break;
            };
            self.held_bytes -= old.text_len();
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(n) = self.drops.hit(self.drops_ms()) {
                log_captures_dropped(n);
            }
        }
    }

    /// Log the dropped captures the rate limit held back, if their line is due, or all of them
    /// (`last`); how many were logged.
    fn report_drops(&self, last: bool) -> u64 {
        let n = self.drops.held_back(self.drops_ms(), last);
        if n > 0 {
            log_captures_dropped(n);
        }
        n
    }

    fn drops_ms(&self) -> u64 {
        u64::try_from(self.drops_epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether enough is held to start a write without waiting for the next tick.
    fn batch_ready(&self) -> bool {
        self.held.len() >= CAPTURE_BATCH || self.held_bytes >= CAPTURE_BATCH_BYTES
    }

    /// Whether the store has fallen behind: a whole batch waits for the write still running
    /// (which then must not give way: under a load the store only just keeps up with, giving
    /// way let batches pile up until captures were dropped), or a quarter of what may be held
    /// is held. Only what waits counts: the held bytes alone leave out the write in flight,
    /// and start again from nothing each time one starts. A write that waits on the disk or
    /// on SQLite's lock rather than for the CPU counts the same (the deferred work then stops
    /// giving way without gaining from it); told apart only by its length, and a batch's
    /// write on saturated cores is long too.
    fn store_behind(&self) -> bool {
        let writing = self.in_flight.as_ref().is_some_and(|h| !h.is_finished());
        (writing && self.batch_ready()) || self.held_bytes > MAX_HELD_CAPTURE_BYTES / 4
    }

    /// Start writing what is held, unless a write is still running (then later).
    async fn start_write(&mut self) {
        if let Some(h) = &self.in_flight {
            if !h.is_finished() {
                return;
            }
            self.settle().await;
        }
        if self.held.is_empty() {
            return;
        }
        let batch = Vec::from(std::mem::take(&mut self.held));
        self.held_bytes = 0;
        let key = self.batch_key();
        self.held_key = None;
        let store = self.store.clone();
        self.in_flight_len = batch.len();
        self.in_flight = Some(self.store_rt.spawn(async move {
            let n = batch.len();
            (n, store.insert_captures(key, batch).await)
        }));
    }

    /// Wait for the write in flight and report how it went.
    async fn settle(&mut self) {
        let Some(h) = self.in_flight.take() else {
            return;
        };
        let failed = match h.await {
            Ok((_, Ok(()))) => None,
            Ok((n, Err(e))) => Some((n, e.to_string())),
            Err(e) => Some((self.in_flight_len, e.to_string())),
        };
        match failed {
            Some((n, e)) => self.note_failed(n as u64, e),
            None => self.note_written(),
        }
    }

    /// A write the store refused: its captures are dropped.
    fn note_failed(&mut self, captures: u64, error: String) {
        self.dropped.fetch_add(captures, Ordering::Relaxed);
        let now = self.drops_ms();
        let f = &mut self.failures;
        f.captures += captures;
        f.outage_writes += 1;
        f.outage_captures += captures;
        f.last_error = error;
        if let Some(writes) = f.log.hit(now) {
            log_capture_writes_failed(writes, f.captures, &f.last_error);
            f.captures = 0;
        }
    }

    /// A write that succeeded: the end of an outage, if there was one, is logged.
    fn note_written(&mut self) {
        if self.failures.outage_writes == 0 {
            return;
        }
        self.report_failures(true);
        let f = &mut self.failures;
        // Not `dropped`: the failure lines above named these captures already.
        tracing::info!(
            failed_writes = f.outage_writes,
            outage_dropped = f.outage_captures,
            "capture writes recovered after {} failed writes ({} captures dropped)",
            f.outage_writes,
            f.outage_captures
        );
        // A fresh limit: the next outage's first failure is logged at once, however soon.
        *f = WriteFailures::default();
    }

    /// Log the failed writes the rate limit held back, if their line is due, or all of them
    /// (`last`); how many writes were logged.
    fn report_failures(&mut self, last: bool) -> u64 {
        let n = self.failures.log.held_back(self.drops_ms(), last);
        let f = &mut self.failures;
        if n > 0 {
            log_capture_writes_failed(n, f.captures, &f.last_error);
            f.captures = 0;
        }
        n
    }

    /// At shutdown: the write in flight, then everything still held.
    async fn finish(&mut self) {
        self.settle().await;
        self.start_write().await;
        self.settle().await;
        self.report_drops(true);
        self.report_failures(true);
    }
}

fn identity_of(r: &UsageRecord) -> std::borrow::Cow<'_, str> {
    match (&r.login, r.tags.is_empty()) {
        (Some(login), _) => login.as_str().into(),
        (None, true) => r.identity_source.as_str().into(),
        (None, false) => r.tags.join(",").into(),
    }
}

/// Session, cost, tool calls and the capture of one finished request. Pure but for the clock-free
/// work it does on its inputs.
fn enrich(
    item: Item,
    fingerprints: &mut iris_capture::FingerprintCache,
) -> (Box<UsageRecord>, Option<CaptureRow>) {
    let Item {
        mut record,
        mut exchange,
    } = item;
    // The usage first: the cost below is priced from it.
    with_usage(&mut record, exchange.as_deref_mut());
    let Some(mut ex) = exchange else {
        record.session_kind = Some("single".into());
        record.session_id = Some([SessionKind::Single.prefix(), &record.id].concat());
        return (record, None);
    };
    let parts = match ex.session_parts.take() {
        Some(p) => Some(p),
        None => iris_providers::session_parts(&ex.request_body),
    };
    let key = iris_capture::session_key_from_parts(
        &record.api_family,
        &ex.request_headers,
        &ex.request_body,
        parts.as_ref(),
        &identity_of(&record),
        &record.id,
        Some(fingerprints),
    );
    record.session_id = Some(key.id);
    record.session_kind = Some(key.kind.as_str().to_owned());
    if let (Some(cost), true) = (&ex.cost, record.usage_known) {
        let model = record
            .upstream_model
            .as_deref()
            .or(record.requested_model.as_deref())
            .unwrap_or_default();
        let usage = TokenUsage {
            input_tokens: record.input_tokens,
            output_tokens: record.output_tokens,
            cache_read_tokens: record.cache_read_tokens,
            cache_write_tokens: record.cache_write_tokens,
            reasoning_tokens: record.reasoning_tokens,
        };
        let est = iris_capture::cost::estimate(
            cost.basis,
            model,
            &usage,
            Accounting::for_family(&record.api_family),
            &cost.rules,
        );
        record.cost_usd = est.usd;
        record.priced_as = est.priced_as;
    }
    let mut capture_row = None;
    if let Some((limits, redactor)) = ex.capture.take() {
        let request_headers = std::mem::take(&mut ex.request_headers);
        let response_headers = std::mem::take(&mut ex.response_headers);
        let raw = RawExchange {
            method: &record.method,
            path: &record.path,
            api_family: &record.api_family,
            // Passed apart below, owned.
            request_headers: &HeaderList::new(),
            request_body: &ex.request_body,
            request_body_complete: true,
            response_headers: &HeaderList::new(),
            response_body: &ex.response,
            response_body_complete: ex.response_complete,
            response_is_sse: ex.response_is_sse,
        };
        // Reassembly of a tool-free answer waits until someone opens the capture. The header
        // lists are ours: redacted where they are and moved into the capture.
        let capture = iris_capture::build_capture_deferred_owning(
            &raw,
            request_headers,
            response_headers,
            &limits,
            &redactor,
        );
        record.tool_names = capture
            .tool_calls()
            .iter()
            .map(|t| t.name.clone())
            .collect();
        let (body, request_body, response_body) =
            stored_capture(capture, &record.id, record.status);
        capture_row = Some(CaptureRow {
            request_id: record.id.clone(),
            ts_ms: record.ts_ms,
            body,
            request_body,
            response_body,
        });
    }
    (record, capture_row)
}

/// The capture as the store keeps it: its compact document (its own fields plus `request_id` and
/// `status`, length-prefixed, `iris_capture::stored`) with the two bodies taken out, and the
/// bodies' texts. `iris_capture::stored_document` writes the JSON the API serves, bodies
/// included, when a capture is read: most never are, and escaping the texts into JSON cost more
/// than the rest of storing them.
fn stored_capture(
    mut capture: iris_capture::Capture,
    request_id: &str,
    status: u16,
) -> (String, Option<String>, Option<String>) {
    let request_body = capture.request_body.take();
    let response_body = capture.response_body.take();
    let doc = capture.to_stored_text(request_id, status);
    (doc, request_body, response_body)
}

/// The cost settings of a provider: its `cost_basis`, else (with `auto_cost_basis`) inferred from
/// its compatibility flags, else OpenAI's; and its `model_cost_map`.
pub fn provider_cost(p: &iris_config::Provider, auto: bool) -> ProviderCost {
    let c = &p.compatibility;
    let flags: Vec<&str> = [
        ("openai_chat", c.openai_chat),
        ("openai_responses", c.openai_responses),
        ("anthropic_messages", c.anthropic_messages),
        ("gemini_generate_content", c.gemini_generate_content),
        ("google_generate_content", c.google_generate_content),
        ("google_raw_predict", c.google_raw_predict),
        ("bedrock_model_invoke", c.bedrock_model_invoke),
        ("bedrock_converse", c.bedrock_converse),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| n)
    .collect();
    let basis = p
        .cost_basis
        .as_deref()
        .and_then(|b| b.parse::<CostBasis>().ok())
        .unwrap_or_else(|| {
            if auto {
                CostBasis::infer(flags)
            } else {
                CostBasis::OpenAi
            }
        });
    let rules = p
        .model_cost_map
        .iter()
        .map(|r| ModelCostRule {
            pattern: r.pattern.clone(),
            as_model: r.as_model.clone(),
            adjustment: r.adjustment,
        })
        .collect();
    ProviderCost { basis, rules }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(budget: &Arc<CaptureBudget>) -> Exchange {
        Exchange {
            budget: Some(budget.clone()),
            budget_limit: LIMIT,
            request_headers: HeaderList::new(),
            request_body: Bytes::new(),
            session_parts: None,
            response_headers: HeaderList::new(),
            response: Vec::new(),
            budget_held: 0,
            response_complete: true,
            response_is_sse: true,
            cost: None,
            capture: None,
            usage: None,
            usage_in_response: false,
        }
    }

    const LIMIT: usize = 64 << 20;

    #[test]
    fn in_flight_capture_bytes_are_bounded_and_given_back() {
        let budget = Arc::new(CaptureBudget::default());
        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
        let mut held = Vec::new();
        // Many streams each wanting 4 MiB: together they never exceed the budget.
        for _ in 0..200 {
            let mut ex = exchange(&budget);
            for _ in 0..4 {
                ex.keep(&chunk, 4 << 20);
            }
            held.push(ex);
        }
        let kept: usize = held.iter().map(|e| e.budget_held).sum();
        assert!(held.iter().all(|e| e.response.capacity() <= e.budget_held));
        assert!(kept <= LIMIT, "{kept}");
        assert_eq!(budget.used(), kept as u64);
        assert!(
            held.iter().any(|e| !e.response_complete),
            "later streams are captured truncated"
        );
        drop(held);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn stored_captures_carry_the_request_id_and_status() {
        let capture = iris_capture::build_capture(
            &RawExchange {
                method: "POST",
                path: "/v1/messages",
                api_family: "anthropic_messages",
                request_headers: &HeaderList::new(),
                request_body: b"{\"model\":\"m\"}",
                request_body_complete: true,
                response_headers: &HeaderList::new(),
                response_body: b"",
                response_body_complete: true,
                response_is_sse: false,
            },
            &CaptureLimits::default(),
            &Redactor::default(),
        );
        let (text, request_body, response_body) = stored_capture(capture.clone(), "r\"1", 201);
        assert!(text.starts_with(iris_capture::stored::COMPACT));
        let no_bodies =
            iris_capture::stored_document(text.clone(), None, None, &Redactor::default()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&no_bodies).unwrap();
        assert_eq!(v["request_id"], "r\"1");
        assert_eq!(v["status"], 201);
        assert_eq!(v["method"], "POST");
        // The bodies are kept beside the document and put back when it is read.
        assert_eq!(v["request_body"], serde_json::Value::Null);
        assert_eq!(request_body.as_deref(), Some("{\"model\":\"m\"}"));
        assert_eq!(response_body, None);
        let read =
            iris_capture::stored_document(text, request_body, response_body, &Redactor::default())
                .unwrap();
        let mut want = serde_json::to_value(&capture).unwrap();
        want["request_id"] = "r\"1".into();
        want["status"] = 201.into();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&read).unwrap(),
            want
        );
    }

    /// An exchange whose capture kept the whole chat answer `body`, its extractor (fed nothing)
    /// left to the observer, as `Pending::finish` leaves it.
    fn left_answer(body: &[u8]) -> Exchange {
        let mut ex = exchange(&Arc::new(CaptureBudget::default()));
        ex.response_is_sse = false;
        ex.response = body.to_vec();
        let usage = UsageExtractor::new(iris_providers::ApiFamily::OpenAiChat, false);
        assert!(usage.reads_body_at_finish());
        ex.usage = Some(Box::new(usage));
        ex.usage_in_response = true;
        ex
    }

    const ANSWER: &[u8] = br#"{"id":"c1","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":8}}}"#;

    fn chat_record(status: u16) -> UsageRecord {
        UsageRecord {
            id: iris_store::new_record_id(),
            api_family: "openai_chat".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            requested_model: Some("gpt-4o-mini".into()),
            status,
            ..Default::default()
        }
    }

    #[test]
    fn the_worker_reads_a_left_answer_before_pricing_it() {
        let mut ex = left_answer(ANSWER);
        ex.cost = Some(Arc::new(ProviderCost {
            basis: CostBasis::OpenAi,
            rules: Vec::new(),
        }));
        let mut fingerprints = iris_capture::FingerprintCache::new(4);
        let (rec, _) = enrich(
            Item {
                record: Box::new(chat_record(200)),
                exchange: Some(Box::new(ex)),
            },
            &mut fingerprints,
        );
        assert!(rec.usage_known);
        assert_eq!((rec.input_tokens, rec.output_tokens), (40, 5));
        assert_eq!(rec.cache_read_tokens, 8);
        assert_eq!(
            rec.upstream_model.as_deref(),
            Some("gpt-4o-mini-2024-07-18")
        );
        // Priced from the usage just read: read after the pricing, it would be unpriced.
        assert!(rec.cost_usd.is_some_and(|c| c > 0.0), "{:?}", rec.cost_usd);
        assert_eq!(rec.error_class, None);

        // A success whose body is not an answer is an upstream fault; an error already
        // recorded (the client went away) stays.
        for (error, want) in [
            (None, "upstream_malformed_body"),
            (Some("client_closed"), "client_closed"),
        ] {
            let ex = left_answer(b"{\"id\":\"c1\",\"usage\":{\"prompt_t");
            let mut record = chat_record(200);
            record.error_class = error.map(str::to_owned);
            let (rec, _) = enrich(
                Item {
                    record: Box::new(record),
                    exchange: Some(Box::new(ex)),
                },
                &mut fingerprints,
            );
            assert!(!rec.usage_known);
            assert_eq!(rec.error_class.as_deref(), Some(want));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_left_answer_is_read_when_the_record_skips_the_worker() {
        let store: Arc<dyn Store> =
            Arc::new(iris_store::SqliteStore::open_temporary().await.unwrap());
        let (sink, writer) = iris_store::spawn_usage_writer(store.clone(), Default::default());
        // A full queue: one place, taken by a first record, and nobody taking it off.
        let (tx, _rx) = mpsc::channel(1);
        let full = Observer {
            tx,
            sink: sink.clone(),
            closed: Arc::new(AtomicBool::new(false)),
            unenriched: Arc::new(AtomicU64::new(0)),
            captures_dropped: Arc::new(AtomicU64::new(0)),
        };
        full.record(Box::new(chat_record(200)), None);
        // And a stopped worker: records go to the usage writer as they are.
        let (closed, handle) =
            spawn_observer(store.clone(), sink, 16, tokio::runtime::Handle::current());
        handle.shutdown().await;
        let mut ids = Vec::new();
        for observer in [&full, &closed] {
            let record = chat_record(200);
            ids.push(record.id.clone());
            observer.record(Box::new(record), Some(Box::new(left_answer(ANSWER))));
        }
        assert_eq!(full.unenriched(), 1);
        drop((full, closed));
        writer.shutdown().await;
        let stored = store.recent_usage(&Default::default()).await.unwrap();
        for id in ids {
            let rec = stored
                .iter()
                .find(|r| r.id == id)
                .expect("the record was written");
            assert!(rec.usage_known, "{rec:?}");
            assert_eq!((rec.input_tokens, rec.output_tokens), (40, 5));
            assert_eq!(
                rec.upstream_model.as_deref(),
                Some("gpt-4o-mini-2024-07-18")
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn under_steady_load_captures_reach_the_store_without_waiting_for_a_full_batch() {
        let store: Arc<dyn Store> =
            Arc::new(iris_store::SqliteStore::open_temporary().await.unwrap());
        let (sink, _writer) = iris_store::spawn_usage_writer(store.clone(), Default::default());
        let (observer, handle) =
            spawn_observer(store.clone(), sink, 4096, tokio::runtime::Handle::current());
        // A finished request at most every millisecond, without pause: the queue is rarely empty
        // when the worker looks, and fewer than a full batch (1,024) arrive in the 900 ms below.
        let feeding = Arc::new(AtomicBool::new(true));
        let (first_ids, feeder) = {
            let (ids_tx, ids_rx) = tokio::sync::oneshot::channel();
            let feeding = feeding.clone();
            let feeder = tokio::spawn(async move {
                let mut ids = Vec::new();
                let mut ids_tx = Some(ids_tx);
                while feeding.load(Ordering::Relaxed) {
                    let id = iris_store::new_record_id();
                    let record = UsageRecord {
                        id: id.clone(),
                        api_family: "openai_chat".into(),
                        method: "POST".into(),
                        path: "/v1/chat/completions".into(),
                        status: 200,
                        ..Default::default()
                    };
                    let mut ex = exchange(&Arc::new(CaptureBudget::default()));
                    ex.request_body = Bytes::from_static(b"{\"model\":\"m\"}");
                    ex.response_is_sse = false;
                    ex.capture = Some((CaptureLimits::default(), Arc::new(Redactor::default())));
                    observer.record(Box::new(record), Some(Box::new(ex)));
                    ids.push(id);
                    if ids.len() == 50
                        && let Some(tx) = ids_tx.take()
                    {
                        let _ = tx.send(ids.clone());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
            (ids_rx.await.unwrap(), feeder)
        };
        let start = std::time::Instant::now();
        let mut stored = 0;
        while start.elapsed() < Duration::from_millis(900) {
            stored = 0;
            for id in &first_ids {
                stored += usize::from(store.capture(id).await.unwrap().is_some());
            }
            if stored == first_ids.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        feeding.store(false, Ordering::Relaxed);
        feeder.await.unwrap();
        assert_eq!(stored, first_ids.len(), "captures still held under load");
        handle.shutdown().await;
    }

    async fn capture_writes() -> CaptureWrites {
        let store: Arc<dyn Store> =
            Arc::new(iris_store::SqliteStore::open_temporary().await.unwrap());
        CaptureWrites {
            store,
            store_rt: tokio::runtime::Handle::current(),
            held: std::collections::VecDeque::new(),
            held_bytes: 0,
            held_key: None,
            last_key: 0,
            in_flight: None,
            in_flight_len: 0,
            dropped: Arc::new(AtomicU64::new(0)),
            drops: iris_store::DropLog::new(DROP_REPORT_EVERY),
            drops_epoch: std::time::Instant::now(),
            failures: WriteFailures::default(),
        }
    }

    /// Move the drop reports' clock on by their interval, so that what was held back is due.
    fn report_interval_passes(writes: &mut CaptureWrites) {
        writes.drops_epoch = writes
            .drops_epoch
            .checked_sub(DROP_REPORT_EVERY)
            .expect("an uptime of ten seconds");
    }

    fn capture_row(id: &str, request_bytes: usize) -> CaptureRow {
        CaptureRow {
            request_id: id.into(),
            ts_ms: 1,
            body: "{}".into(),
            request_body: Some("x".repeat(request_bytes)),
            response_body: None,
        }
    }

    /// Captures beyond what may be held are dropped and counted at once, and logged at most
    /// every ten seconds: the first at once, the rest together later or at the end.
    #[tokio::test]
    async fn dropped_captures_are_counted_each_and_logged_together() {
        let mut writes = capture_writes().await;
        // Four fill what may be held exactly (each row's document is two bytes).
        let quarter = MAX_HELD_CAPTURE_BYTES / 4 - 2;
        for i in 0..4 {
            writes.hold(capture_row(&i.to_string(), quarter));
        }
        assert_eq!(writes.dropped.load(Ordering::Relaxed), 0);
        writes.hold(capture_row("4", quarter));
        assert_eq!(writes.dropped.load(Ordering::Relaxed), 1);
        assert_eq!(
            writes.drops.next_due_ms(),
            None,
            "the first drop is logged at once"
        );
        for i in 5..8 {
            writes.hold(capture_row(&i.to_string(), quarter));
        }
        assert_eq!(writes.dropped.load(Ordering::Relaxed), 4);
        assert!(
            writes.drops.next_due_ms().is_some(),
            "the next ones wait for the interval"
        );
        assert_eq!(writes.report_drops(false), 0);
        // The interval over: the three logged together.
        report_interval_passes(&mut writes);
        assert_eq!(writes.report_drops(false), 3);
        assert_eq!(writes.drops.next_due_ms(), None);
        writes.hold(capture_row("8", quarter));
        assert_eq!(
            writes.report_drops(true),
            1,
            "what is left is logged at the end"
        );
        assert_eq!(writes.held.len(), 4);
    }

    /// A failing database refuses a write every tick: each one's captures are counted as dropped
    /// at once; the first failure is logged at once, the next ones together with the last error,
    /// and the first write that succeeds again logs what was held back and ends the outage.
    /// A write whose task panicked counts its whole batch.
    #[tokio::test]
    async fn failed_capture_writes_are_counted_each_and_logged_together() {
        let mut writes = capture_writes().await;
        let fail = |n: usize| {
            tokio::spawn(async move {
                let e = iris_store::StoreError::InvalidRecord(format!("disk full ({n})"));
                (n, Err(e))
            })
        };
        writes.in_flight = Some(fail(3));
        writes.settle().await;
        assert_eq!(writes.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(
            writes.failures.log.next_due_ms(),
            None,
            "the first failure is logged at once"
        );
        assert_eq!(writes.failures.captures, 0);
        for n in [2, 2, 2, 4] {
            writes.in_flight = Some(fail(n));
            writes.settle().await;
        }
        assert_eq!(writes.dropped.load(Ordering::Relaxed), 13);
        assert_eq!(writes.failures.captures, 10, "held back for the next line");
        assert!(writes.failures.last_error.contains("disk full (4)"));
        assert_eq!(writes.report_failures(false), 0);
        // The interval over: the four logged together.
        report_interval_passes(&mut writes);
        assert_eq!(writes.report_failures(false), 4);
        assert_eq!(writes.failures.captures, 0);
        // One more, held back; then a write succeeds: it is logged and the outage is over.
        writes.in_flight = Some(fail(1));
        writes.settle().await;
        assert!(writes.failures.log.next_due_ms().is_some());
        assert_eq!(
            (
                writes.failures.outage_writes,
                writes.failures.outage_captures
            ),
            (6, 14)
        );
        writes.in_flight = Some(tokio::spawn(async { (5, Ok(())) }));
        writes.settle().await;
        assert_eq!(writes.failures.log.next_due_ms(), None);
        assert_eq!(
            (
                writes.failures.outage_writes,
                writes.failures.outage_captures,
                writes.failures.captures
            ),
            (0, 0, 0)
        );
        assert_eq!(writes.dropped.load(Ordering::Relaxed), 14);
        // A new outage soon after: its first failure is logged at once too.
        writes.in_flight = Some(fail(2));
        writes.settle().await;
        assert_eq!(writes.failures.log.next_due_ms(), None);
        assert_eq!(writes.failures.captures, 0);
        // A write whose task panicked lost its whole batch, and counts it.
        writes.in_flight_len = 7;
        writes.in_flight = Some(tokio::spawn(async { panic!("the write's task") }));
        writes.settle().await;
        assert_eq!(writes.dropped.load(Ordering::Relaxed), 14 + 2 + 7);
    }

    /// The store is behind when a whole batch waits for the write in flight: not while the batch
    /// fills, nor once the write is done and the batch handed over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_is_behind_while_a_whole_batch_waits_for_the_write_in_flight() {
        let mut writes = capture_writes().await;
        let half = |id: &str| capture_row(id, CAPTURE_BATCH_BYTES / 2);
        // A write still running (the one before), and half a batch: the store is not behind.
        let (release, hold_open) = tokio::sync::oneshot::channel::<()>();
        writes.in_flight = Some(tokio::spawn(async move {
            let _ = hold_open.await;
            (0, Ok(()))
        }));
        writes.hold(half("a"));
        assert!(!writes.batch_ready() && !writes.store_behind());
        // A whole batch: it has to wait, and the store is behind.
        writes.hold(half("b"));
        assert!(writes.batch_ready() && writes.store_behind());
        writes.start_write().await;
        assert_eq!(writes.held.len(), 2, "the batch waits for the write");
        assert!(writes.store_behind());
        // The write done, the batch goes to the store: nothing waits for it any more.
        release.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !writes.held.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
                writes.start_write().await;
            }
        })
        .await
        .expect("the batch went to the store once the write was done");
        assert!(!writes.store_behind());
        writes.finish().await;
        // Without a write: a whole batch held is ready, not behind.
        writes.hold(half("c"));
        writes.hold(half("d"));
        assert!(writes.batch_ready() && !writes.store_behind());
    }

    /// A gather of three batches' worth of requests hands the first whole batch to the store
    /// as soon as it is whole, and holds the rest while that write runs (on this test's one
    /// thread it cannot finish before the gather ends): never the whole gather held at once.
    /// Every capture reaches the store in the end, none dropped.
    #[tokio::test]
    async fn a_whole_batch_goes_to_the_store_in_the_middle_of_a_gather() {
        let mut writes = capture_writes().await;
        let store = writes.store.clone();
        let (sink, writer) = iris_store::spawn_usage_writer(store.clone(), Default::default());
        let (_tx, rx) = mpsc::channel::<Item>(1);
        let mut fingerprints = iris_capture::FingerprintCache::new(FINGERPRINT_CACHE);
        let mut ids = Vec::new();
        let mut items: Vec<Item> = (0..3 * CAPTURE_BATCH)
            .map(|_| {
                let id = iris_store::new_record_id();
                ids.push(id.clone());
                let mut ex = exchange(&Arc::new(CaptureBudget::default()));
                ex.request_body = Bytes::from_static(b"{\"model\":\"m\"}");
                ex.response_is_sse = false;
                ex.capture = Some((CaptureLimits::default(), Arc::new(Redactor::default())));
                Item {
                    record: Box::new(UsageRecord {
                        id,
                        api_family: "openai_chat".into(),
                        method: "POST".into(),
                        path: "/v1/chat/completions".into(),
                        status: 200,
                        ..Default::default()
                    }),
                    exchange: Some(Box::new(ex)),
                }
            })
            .collect();
        take_gather(&mut items, &mut writes, &sink, &mut fingerprints, &rx).await;
        assert!(items.is_empty());
        assert!(
            writes.in_flight.is_some(),
            "a write started during the gather"
        );
        assert_eq!(writes.in_flight_len, CAPTURE_BATCH);
        assert_eq!(
            writes.held.len(),
            2 * CAPTURE_BATCH,
            "what came after the first batch waits for its write"
        );
        assert!(writes.store_behind());
        writes.finish().await;
        assert!(writes.held.is_empty());
        assert_eq!(writes.dropped.load(Ordering::Relaxed), 0);
        // A capture is found through its usage record, which names its batch.
        drop(sink);
        writer.shutdown().await;
        for id in [&ids[0], &ids[CAPTURE_BATCH], &ids[3 * CAPTURE_BATCH - 1]] {
            assert!(store.capture(id).await.unwrap().is_some(), "capture {id}");
        }
    }

    #[test]
    fn header_pairs_copies_the_kept_headers_in_order_and_non_utf8_lossily() {
        let mut h = http::HeaderMap::new();
        h.append("content-type", "application/json".parse().unwrap());
        h.append("x-a", "1".parse().unwrap());
        h.append("x-a", "2".parse().unwrap());
        h.append("x-bin", http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        h.append("user-agent", "claude-cli/2.1".parse().unwrap());
        let all = header_pairs(&h, |_| true);
        let got: Vec<(&str, &str)> = all.iter().collect();
        assert_eq!(
            got,
            [
                ("content-type", "application/json"),
                ("x-a", "1"),
                ("x-a", "2"),
                ("x-bin", "caf\u{fffd}"),
                ("user-agent", "claude-cli/2.1"),
            ]
        );
        let some = header_pairs(&h, |n| n.starts_with("x-"));
        let got: Vec<(&str, &str)> = some.iter().collect();
        assert_eq!(got, [("x-a", "1"), ("x-a", "2"), ("x-bin", "caf\u{fffd}")]);
        assert!(header_pairs(&h, |_| false).is_empty());
    }

    #[test]
    fn a_single_capture_stops_at_its_cap() {
        let budget = Arc::new(CaptureBudget::default());
        let mut ex = exchange(&budget);
        ex.keep(&Bytes::from_static(b"0123456789"), 4);
        assert_eq!(ex.response, b"0123");
        assert!(ex.budget_held >= 4);
        assert!(!ex.response_complete);
        drop(ex);
        assert_eq!(budget.used(), 0);
    }
}
