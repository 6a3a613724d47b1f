//! The batched usage writer: nothing lost in normal operation or after store failures,
//! bounded memory with counted drops under overload, timely partial flushes, and a
//! complete drain on shutdown.

// Test code: a panic is the failure report (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sample_record;
use iris_store::{
    KeyRecord, SqliteStore, Store, StoreError, UsageQuery, UsageRecord, UsageWriterConfig,
    WriterStats, spawn_usage_writer,
};
use tokio::sync::{Notify, Semaphore};

/// An in-memory `Store` whose usage writes can be made to fail or to block.
#[derive(Default)]
struct TestStore {
    rows: Mutex<Vec<UsageRecord>>,
    /// The next this-many `insert_usage` calls fail with a transient error.
    fail_next: AtomicU32,
    /// When set, each `insert_usage` call first takes (and consumes) one permit.
    gate: Option<Semaphore>,
    /// Signalled whenever `insert_usage` is entered.
    entered: Notify,
    calls: AtomicU32,
    /// The address of each batch's buffer, in the order written.
    buffers: Mutex<Vec<usize>>,
}

impl TestStore {
    fn gated() -> Self {
        TestStore {
            gate: Some(Semaphore::new(0)),
            ..TestStore::default()
        }
    }

    fn failing(times: u32) -> Self {
        let s = TestStore::default();
        s.fail_next.store(times, Ordering::SeqCst);
        s
    }

    fn ids(&self) -> Vec<String> {
        self.rows
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.id.clone())
            .collect()
    }

    fn len(&self) -> usize {
        self.rows.lock().unwrap().len()
    }
}

#[async_trait::async_trait]
impl Store for TestStore {
    async fn insert_usage(&self, batch: Arc<Vec<UsageRecord>>) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.entered.notify_one();
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let failing = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StoreError::Unavailable("test store is down".into()));
        }
        self.rows.lock().unwrap().extend_from_slice(&batch);
        self.buffers.lock().unwrap().push(batch.as_ptr() as usize);
        Ok(())
    }
    async fn recent_usage(&self, _q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn count_usage(&self) -> Result<u64, StoreError> {
        Ok(self.len() as u64)
    }
    async fn insert_key(&self, _key: &KeyRecord) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn key_by_hash(&self, _hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn revoke_key(&self, _id: &str, _at_ms: i64) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn touch_key(&self, _id: &str, _at_ms: i64) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn usage_summary(
        &self,
        _q: &UsageQuery,
        _by: iris_store::GroupBy,
    ) -> Result<Vec<iris_store::UsageGroup>, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn insert_config_version(
        &self,
        _v: &iris_store::ConfigVersion,
    ) -> Result<i64, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn config_versions(
        &self,
        _limit: u32,
    ) -> Result<Vec<iris_store::ConfigVersion>, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn config_version(
        &self,
        _id: i64,
    ) -> Result<Option<iris_store::ConfigVersion>, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn insert_captures(
        &self,
        _key: i64,
        _b: Vec<iris_store::CaptureRow>,
    ) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn capture(&self, _id: &str) -> Result<Option<iris_store::CaptureRow>, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn purge(&self, _before_ms: i64, _tools: bool) -> Result<u64, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn sessions(
        &self,
        _q: &UsageQuery,
        _b: Option<i64>,
    ) -> Result<Vec<iris_store::SessionSummary>, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
    async fn session_records(
        &self,
        _s: &str,
        _q: &UsageQuery,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        Err(StoreError::Unavailable("not used".into()))
    }
}

fn cfg(queue_capacity: usize, batch_size: usize, flush_ms: u64) -> UsageWriterConfig {
    UsageWriterConfig {
        queue_capacity,
        batch_size,
        flush_interval: Duration::from_millis(flush_ms),
    }
}

/// Wait (real or paused time) until `cond` holds, up to `limit`.
async fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    while !cond() {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_all_reach_sqlite() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&tmp.path().join("iris.db"))
            .await
            .unwrap(),
    );
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(10_000, 256, 50));

    let producers: Vec<_> = (0..4u64)
        .map(|p| {
            let sink = sink.clone();
            tokio::spawn(async move {
                for i in 0..2_500u64 {
                    sink.record(sample_record(p * 2_500 + i));
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let stats = handle.shutdown().await;

    assert_eq!(
        stats,
        WriterStats {
            written: 10_000,
            dropped: 0,
            failed_batches: 0
        }
    );
    assert_eq!(sink.dropped(), 0);
    assert_eq!(store.count_usage().await.unwrap(), 10_000);
    let rows = store
        .recent_usage(&UsageQuery {
            limit: 10_000,
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        rows.iter().map(|r| &r.id).collect::<HashSet<_>>().len(),
        10_000
    );
}

/// Full batches are written from two buffers in turn (the one written is emptied and kept for
/// the next batch), not from a new allocation each: a batch is ~150 KB at the default size, and
/// a fresh one cost a page fault every 4 KB. (A new buffer each time shows here as one address
/// for every batch, the allocator handing back the block just freed.)
#[tokio::test]
async fn full_batches_reuse_two_buffers() {
    let store = Arc::new(TestStore::default());
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(64, 4, 60_000));
    for b in 0..6u64 {
        for i in 0..4 {
            sink.record(sample_record(b * 4 + i));
        }
        let want = usize::try_from(4 * (b + 1)).unwrap();
        assert!(wait_until(Duration::from_secs(10), || store.len() == want).await);
    }
    handle.shutdown().await;
    let buffers = store.buffers.lock().unwrap().clone();
    assert_eq!(buffers.len(), 6);
    assert_ne!(buffers[0], buffers[1], "{buffers:x?}");
    for i in 2..6 {
        assert_eq!(buffers[i], buffers[i - 2], "{buffers:x?}");
    }
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_growing() {
    let store = Arc::new(TestStore::gated());
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(4, 1, 10));

    // The writer takes the first record and blocks inside the store.
    sink.record(sample_record(0));
    store.entered.notified().await;
    // The record being written still counts against the bound: 3 more fit, the
    // remaining 16 are dropped, without waiting.
    for i in 1..20 {
        sink.record(sample_record(i));
    }
    assert_eq!(sink.queued(), 4);
    assert_eq!(sink.dropped(), 16);

    // Unblock the store: what was held is written, nothing else.
    store.gate.as_ref().unwrap().add_permits(100);
    let stats = handle.shutdown().await;
    assert_eq!(stats.written, 4);
    assert_eq!(stats.dropped, 16);
    assert_eq!(store.len(), 4);
    assert_eq!(sink.queued(), 0);
}

#[tokio::test]
async fn records_after_shutdown_are_counted_as_dropped() {
    let store = Arc::new(TestStore::default());
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 10, 10));
    sink.record(sample_record(0));
    let stats = handle.shutdown().await;
    assert_eq!((stats.written, stats.dropped), (1, 0));

    sink.record(sample_record(1));
    sink.record(sample_record(2));
    assert_eq!(sink.dropped(), 2);
    assert_eq!(store.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_store_loses_nothing_once_it_recovers() {
    let store = Arc::new(TestStore::failing(3));
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(1000, 10, 20));

    let sent: Vec<UsageRecord> = (0..100).map(sample_record).collect();
    for r in &sent {
        sink.record(r.clone());
    }
    // No shutdown: the writer must get everything in by itself after the outage.
    assert!(wait_until(Duration::from_secs(30), || store.len() == 100).await);
    let sent_ids: Vec<String> = sent.into_iter().map(|r| r.id).collect();
    assert_eq!(store.ids(), sent_ids, "every record once, in order");

    let stats = handle.shutdown().await;
    assert_eq!(
        stats,
        WriterStats {
            written: 100,
            dropped: 0,
            failed_batches: 3
        }
    );
}

#[tokio::test(start_paused = true)]
async fn while_the_store_is_down_memory_stays_bounded() {
    let store = Arc::new(TestStore::failing(u32::MAX));
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(8, 2, 10));

    for i in 0..6 {
        sink.record(sample_record(i));
    }
    // Let the writer fail once and pull everything into its retry buffer.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(sink.store_failing());
    assert_eq!(sink.queued(), 6, "records in the retry buffer still count");
    for i in 6..21 {
        sink.record(sample_record(i));
    }
    assert_eq!(
        sink.queued(),
        8,
        "queue and retry buffer together hold queue_capacity"
    );
    assert_eq!(sink.dropped(), 13, "and beyond that records are dropped");

    // Recovery: everything that was held is written.
    store.fail_next.store(0, Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(60), || store.len() == 8).await);
    assert!(!sink.store_failing());
    assert_eq!(sink.queued(), 0);
    let stats = handle.shutdown().await;
    assert_eq!((stats.written, stats.dropped), (8, 13));
    assert!(stats.failed_batches >= 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_retries_a_briefly_failing_store() {
    let store = Arc::new(TestStore::failing(2));
    // Long interval, big batch: nothing is written before shutdown.
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 50, 3_600_000));
    for i in 0..10 {
        sink.record(sample_record(i));
    }
    let stats = handle.shutdown().await;
    assert_eq!(
        stats,
        WriterStats {
            written: 10,
            dropped: 0,
            failed_batches: 2
        }
    );
    assert_eq!(store.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_on_a_dead_store_and_counts_the_loss() {
    let store = Arc::new(TestStore::failing(u32::MAX));
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 50, 3_600_000));
    for i in 0..10 {
        sink.record(sample_record(i));
    }
    let started = tokio::time::Instant::now();
    let stats = handle.shutdown().await;
    assert_eq!((stats.written, stats.dropped), (0, 10));
    assert!(stats.failed_batches > 1, "retried before giving up");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown is bounded"
    );
    assert_eq!(sink.dropped(), 10);
}

#[tokio::test]
async fn a_record_the_store_refuses_costs_only_itself() {
    let store = Arc::new(SqliteStore::open_temporary().await.unwrap());
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 5, 3_600_000));
    let mut sent: Vec<UsageRecord> = (0..5).map(sample_record).collect();
    sent[2].tags = vec!["tag:a,tag:b".into()]; // cannot be stored faithfully
    for r in &sent {
        sink.record(r.clone());
    }
    let stats = handle.shutdown().await;
    assert_eq!(stats.written, 4);
    assert_eq!(stats.dropped, 1);
    let stored: HashSet<String> = store
        .recent_usage(&UsageQuery::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let want: HashSet<String> = sent
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, r)| r.id.clone())
        .collect();
    assert_eq!(stored, want);
}

#[tokio::test(start_paused = true)]
async fn a_partial_batch_is_written_when_the_flush_interval_elapses() {
    let store = Arc::new(TestStore::default());
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 50, 500));

    sink.record(sample_record(0));
    tokio::time::sleep(Duration::from_millis(490)).await;
    assert_eq!(store.len(), 0, "not before the interval");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.len(), 1, "right after the interval");

    // The interval counts from the first record of each batch.
    sink.record(sample_record(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    sink.record(sample_record(2));
    tokio::time::sleep(Duration::from_millis(190)).await;
    assert_eq!(store.len(), 1);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.len(), 3);
    assert_eq!(store.calls.load(Ordering::SeqCst), 2, "one write per batch");

    let stats = handle.shutdown().await;
    assert_eq!(stats.written, 3);
}

#[tokio::test(start_paused = true)]
async fn records_arriving_during_a_slow_write_wait_no_longer_than_the_interval() {
    let store = Arc::new(TestStore::gated());
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 50, 500));
    let ms = |n| Duration::from_millis(n);

    sink.record(sample_record(0));
    store.entered.notified().await; // t = 500: the write of record 0 begins, and hangs
    tokio::time::sleep(ms(100)).await;
    sink.record(sample_record(1)); // t = 600
    tokio::time::sleep(ms(300)).await;
    store.gate.as_ref().unwrap().add_permits(10); // t = 900: the write took 400 ms
    tokio::time::sleep(ms(10)).await;
    assert_eq!(store.len(), 1);
    // Record 1 came in during the write that began at 500: it is due at 1000, not at
    // 900 + 500.
    tokio::time::sleep(ms(80)).await; // t = 990
    assert_eq!(store.len(), 1, "not before the interval");
    tokio::time::sleep(ms(20)).await; // t = 1010
    assert_eq!(store.len(), 2, "within the interval of the write's start");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_full_batch_is_written_without_waiting_for_the_interval() {
    let store = Arc::new(TestStore::default());
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 10, 3_600_000));
    for i in 0..10 {
        sink.record(sample_record(i));
    }
    assert!(wait_until(Duration::from_secs(5), || store.len() == 10).await);
    assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_record_reaches_sqlite_within_the_interval_without_shutdown() {
    let store = Arc::new(SqliteStore::open_temporary().await.unwrap());
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(1000, 500, 200));
    let started = std::time::Instant::now();
    sink.record(sample_record(0));
    loop {
        if store.count_usage().await.unwrap() == 1 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "never flushed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "flushed before the interval: {:?}",
        started.elapsed()
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn dropping_every_sink_drains_the_writer() {
    let store = Arc::new(TestStore::default());
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 50, 3_600_000));
    for i in 0..7 {
        sink.record(sample_record(i));
    }
    drop(sink);
    // No shutdown call: with no producer left, the writer finishes on its own.
    assert!(wait_until(Duration::from_secs(5), || store.len() == 7).await);
    assert_eq!(handle.shutdown().await.written, 7);
}
