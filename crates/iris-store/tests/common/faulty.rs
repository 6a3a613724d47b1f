//! A fault-injecting [`Store`]: the real SQLite store, with usage writes that fail on
//! command, and what the store-fault tests share (sizes, sending, waiting, log capture).

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iris_store::{
    CaptureRow, ConfigVersion, GroupBy, KeyRecord, SessionSummary, SqliteStore, Store, StoreError,
    UsageGroup, UsageQuery, UsageRecord, UsageSink, UsageWriterConfig,
};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::sample_record;

/// A fault the wrapper can be told to inject into `insert_usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// ENOSPC: the disk is full.
    DiskFull,
    /// Another process holds the database's write lock.
    Locked,
    /// The file system went read-only.
    ReadOnly,
    /// The rows are committed, then an error is reported anyway (a reply lost after the
    /// commit): the retry must not duplicate them.
    FailAfterWrite,
    /// The call never returns until the fault is cleared.
    Hang,
}

impl Fault {
    pub fn error(self) -> StoreError {
        match self {
            Fault::DiskFull => StoreError::Database(sqlx::Error::Io(io::Error::new(
                io::ErrorKind::StorageFull,
                "database or disk is full",
            ))),
            Fault::Locked => StoreError::Unavailable("database is locked".into()),
            Fault::ReadOnly => StoreError::Io {
                path: "iris.db-wal".into(),
                source: io::Error::new(io::ErrorKind::ReadOnlyFilesystem, "read-only file system"),
            },
            Fault::FailAfterWrite => {
                StoreError::Database(sqlx::Error::Io(io::ErrorKind::BrokenPipe.into()))
            }
            Fault::Hang => StoreError::Unavailable("hung".into()),
        }
    }
}

/// The real SQLite store, with usage writes that fail while a fault is set.
pub struct FaultyStore {
    inner: SqliteStore,
    fault: Mutex<Option<Fault>>,
    /// When each `insert_usage` call began, and whether it failed.
    attempts: Mutex<Vec<(Instant, bool)>>,
    cleared: Notify,
    _dir: tempfile::TempDir,
}

impl FaultyStore {
    pub async fn new() -> Arc<FaultyStore> {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("iris.db"))
            .await
            .unwrap();
        Arc::new(FaultyStore {
            inner,
            fault: Mutex::new(None),
            attempts: Mutex::new(Vec::new()),
            cleared: Notify::new(),
            _dir: dir,
        })
    }

    pub fn set(&self, fault: Option<Fault>) {
        *self.fault.lock().unwrap() = fault;
        if fault.is_none() {
            self.cleared.notify_waiters();
        }
    }

    pub fn attempts(&self) -> Vec<(Instant, bool)> {
        self.attempts.lock().unwrap().clone()
    }

    pub async fn stored_ids(&self) -> Vec<String> {
        let mut rows = self
            .inner
            .recent_usage(&UsageQuery {
                limit: UsageQuery::MAX_LIMIT,
                ..UsageQuery::default()
            })
            .await
            .unwrap();
        rows.reverse(); // oldest first
        rows.into_iter().map(|r| r.id).collect()
    }

    pub async fn count(&self) -> u64 {
        self.inner.count_usage().await.unwrap()
    }
}

#[async_trait::async_trait]
impl Store for FaultyStore {
    async fn insert_usage(&self, batch: Arc<Vec<UsageRecord>>) -> Result<(), StoreError> {
        let fault = *self.fault.lock().unwrap();
        self.attempts
            .lock()
            .unwrap()
            .push((Instant::now(), fault.is_some()));
        match fault {
            None => self.inner.insert_usage(batch).await,
            Some(Fault::Hang) => {
                loop {
                    let cleared = self.cleared.notified();
                    if self.fault.lock().unwrap().is_none() {
                        break;
                    }
                    cleared.await;
                }
                self.inner.insert_usage(batch).await
            }
            Some(Fault::FailAfterWrite) => {
                self.inner.insert_usage(batch).await?;
                Err(Fault::FailAfterWrite.error())
            }
            Some(f) => Err(f.error()),
        }
    }
    async fn recent_usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError> {
        self.inner.recent_usage(q).await
    }
    async fn count_usage(&self) -> Result<u64, StoreError> {
        self.inner.count_usage().await
    }
    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        self.inner.insert_key(key).await
    }
    async fn key_by_hash(&self, hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.inner.key_by_hash(hash).await
    }
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.list_keys().await
    }
    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        self.inner.revoke_key(id, at_ms).await
    }
    async fn touch_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        self.inner.touch_key(id, at_ms).await
    }
    async fn usage_summary(
        &self,
        q: &UsageQuery,
        by: GroupBy,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        self.inner.usage_summary(q, by).await
    }
    async fn insert_config_version(&self, v: &ConfigVersion) -> Result<i64, StoreError> {
        self.inner.insert_config_version(v).await
    }
    async fn config_versions(&self, limit: u32) -> Result<Vec<ConfigVersion>, StoreError> {
        self.inner.config_versions(limit).await
    }
    async fn config_version(&self, id: i64) -> Result<Option<ConfigVersion>, StoreError> {
        self.inner.config_version(id).await
    }
    async fn insert_captures(&self, key: i64, b: Vec<CaptureRow>) -> Result<(), StoreError> {
        self.inner.insert_captures(key, b).await
    }
    async fn capture(&self, id: &str) -> Result<Option<CaptureRow>, StoreError> {
        self.inner.capture(id).await
    }
    async fn purge(&self, before_ms: i64, tools: bool) -> Result<u64, StoreError> {
        self.inner.purge(before_ms, tools).await
    }
    async fn sessions(
        &self,
        q: &UsageQuery,
        before: Option<i64>,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        self.inner.sessions(q, before).await
    }
    async fn session_records(
        &self,
        session_id: &str,
        q: &UsageQuery,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        self.inner.session_records(session_id, q).await
    }
}

pub fn cfg(queue_capacity: usize, batch_size: usize, flush_ms: u64) -> UsageWriterConfig {
    UsageWriterConfig {
        queue_capacity,
        batch_size,
        flush_interval: Duration::from_millis(flush_ms),
    }
}

pub fn send(sink: &UsageSink, range: std::ops::Range<u64>) -> Vec<String> {
    range
        .map(|i| {
            let r = sample_record(i);
            let id = r.id.clone();
            sink.record(r);
            id
        })
        .collect()
}

/// Poll (the store runs on real threads, so real time must pass too) until `cond`.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !cond().await {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Log lines the code under test wrote while the guard lives (this thread only; the
/// writer runs on it under the current-thread test runtime).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let w = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || w.clone())
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The sum of N over the "N records dropped" lines.
    pub fn dropped_total(&self) -> u64 {
        self.text()
            .lines()
            .filter_map(|l| {
                let (before, _) = l.split_once(" records dropped")?;
                before.rsplit(' ').next()?.parse::<u64>().ok()
            })
            .sum()
    }
}

/// Paused clock for a phase in which the store is not touched (a failing write never
/// reaches SQLite): sqlx's own timers must run on real time, so the clock is resumed
/// before the fault clears. To keep the test fast, the paused clock is first moved to
/// just before the writer's next retry, which is `next_delay` after the last attempt.
pub async fn resume_just_before_next_retry(store: &FaultyStore, next_delay: Duration) {
    let (last, _) = *store.attempts().last().unwrap();
    tokio::time::sleep_until(last + next_delay - Duration::from_millis(20)).await;
    let before = store.attempts().len();
    tokio::time::resume();
    assert_eq!(
        store.attempts().len(),
        before,
        "no retry while moving the clock"
    );
}
