//! The usage writer against a failing store: the real SQLite store wrapped in a
//! [`FaultyStore`](common::faulty::FaultyStore) that fails usage writes on command (disk
//! full, locked, read-only, a write that lands but reports an error, a write that hangs).
//! What must hold: records stay buffered up to `queue_capacity`, beyond it they are
//! dropped and counted; the writer retries with backoff; once the fault clears everything
//! buffered reaches SQLite, once each; `record` never waits. Plus: the errors real SQLite
//! gives for these faults are classified as transient. (The log lines are checked in
//! `store_fault_logs.rs`, alone in its process: a log capture is per thread and
//! tracing's callsite cache is shared with tests running in parallel.)

// Test code: a panic is the failure report (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::faulty::{Fault, FaultyStore, cfg, eventually, resume_just_before_next_retry, send};
use common::sample_record;
use iris_store::{SqliteStore, Store, StoreError, spawn_usage_writer};
use sqlx::Connection;

#[tokio::test]
async fn retries_back_off_from_100ms_doubling_up_to_5s() {
    let store = FaultyStore::new().await;
    tokio::time::pause();
    store.set(Some(Fault::Locked));
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 10, 50));
    send(&sink, 0..3);
    // The runtime jumps from timer to timer.
    tokio::time::sleep(Duration::from_secs(30)).await;

    let attempts = store.attempts();
    let gaps: Vec<u128> = attempts
        .windows(2)
        .map(|w| (w[1].0 - w[0].0).as_millis())
        .collect();
    // Timers fire on the next whole millisecond, so a gap may be 1 ms longer.
    let want = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000];
    assert_eq!(gaps.len(), want.len(), "backoff schedule: {gaps:?}");
    for (got, want) in gaps.iter().zip(want) {
        assert!(
            (want..=want + 1).contains(got),
            "backoff schedule: {gaps:?}"
        );
    }
    assert!(attempts.iter().all(|&(_, failed)| failed));
    assert!(sink.store_failing());
    assert_eq!(sink.queued(), 3);

    // Cleared: the next retry, 5 s after the last, writes everything.
    store.set(None);
    resume_just_before_next_retry(&store, Duration::from_secs(5)).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            store.count().await == 3
        })
        .await
    );
    let after = store.attempts();
    assert_eq!(after.len(), attempts.len() + 1, "one retry wrote it all");
    assert!(!after[attempts.len()].1);
    assert!(!sink.store_failing());
    let stats = handle.shutdown().await;
    assert_eq!((stats.written, stats.dropped), (3, 0));
    assert_eq!(stats.failed_batches, u64::try_from(attempts.len()).unwrap());
}

#[tokio::test]
async fn a_failing_store_holds_records_up_to_the_bound_and_writes_them_all_when_it_recovers() {
    for fault in [Fault::DiskFull, Fault::Locked, Fault::ReadOnly] {
        let store = FaultyStore::new().await;
        let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 10, 50));
        let mut sent = send(&sink, 0..15);
        assert!(
            eventually(Duration::from_secs(5), || async {
                store.count().await == 15
            })
            .await
        );

        // Pause only once the writer is idle: no SQLite call in flight on a real thread
        // while the paused clock jumps.
        assert!(eventually(Duration::from_secs(5), || async { sink.queued() == 0 }).await);
        tokio::time::pause();
        store.set(Some(fault));
        sent.extend(send(&sink, 15..75));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            store.attempts().len() >= 15 / 10 + 3,
            "{fault:?}: it retried"
        );
        assert!(sink.store_failing(), "{fault:?}");
        let err = sink.last_store_error().unwrap();
        assert_eq!(err, fault.error().to_string(), "{fault:?}");
        assert_eq!(sink.queued(), 60, "{fault:?}: every record is held");
        assert_eq!(sink.dropped(), 0, "{fault:?}");

        // More arrive while it is down; still within the bound.
        sent.extend(send(&sink, 75..115));
        assert_eq!(sink.queued(), 100, "{fault:?}");
        assert_eq!(sink.dropped(), 0, "{fault:?}");

        store.set(None);
        // Attempts at 50, 150, 350, 750 ms; the next is 800 ms after the last.
        resume_just_before_next_retry(&store, Duration::from_millis(800)).await;
        assert!(
            eventually(Duration::from_secs(5), || async {
                store.count().await == 115
            })
            .await,
            "{fault:?}: the buffer reached the store"
        );
        assert_eq!(
            store.stored_ids().await,
            sent,
            "{fault:?}: every record, once, in order"
        );
        assert_eq!(sink.queued(), 0);
        assert!(!sink.store_failing());
        assert_eq!(sink.last_store_error(), None);
        let stats = handle.shutdown().await;
        assert_eq!((stats.written, stats.dropped), (115, 0), "{fault:?}");
    }
}

#[tokio::test]
async fn a_write_that_landed_but_reported_an_error_is_not_duplicated() {
    let store = FaultyStore::new().await;
    store.set(Some(Fault::FailAfterWrite));
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(100, 10, 20));
    let sent = send(&sink, 0..25);
    assert!(
        eventually(Duration::from_secs(5), || async {
            store.attempts().len() >= 3
        })
        .await
    );
    assert!(sink.store_failing());
    store.set(None);
    assert!(eventually(Duration::from_secs(5), || async { sink.queued() == 0 }).await);
    let ids = store.stored_ids().await;
    assert_eq!(ids.len(), 25);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 25);
    assert_eq!(ids, sent);
    let stats = handle.shutdown().await;
    assert_eq!((stats.written, stats.dropped), (25, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_that_come_and_go_under_load_lose_and_duplicate_nothing() {
    let store = FaultyStore::new().await;
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(10_000, 50, 20));
    let faults = [
        None,
        Some(Fault::Locked),
        None,
        Some(Fault::DiskFull),
        Some(Fault::FailAfterWrite),
        None,
        Some(Fault::ReadOnly),
        None,
    ];
    let mut sent = Vec::new();
    for (round, fault) in faults.into_iter().enumerate() {
        store.set(fault);
        for step in 0..8u64 {
            let base = u64::try_from(round).unwrap() * 1000 + step * 10;
            sent.extend(send(&sink, base..base + 10));
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    store.set(None);
    let want = u64::try_from(sent.len()).unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            store.count().await == want
        })
        .await
    );
    assert_eq!(store.stored_ids().await, sent);
    let stats = handle.shutdown().await;
    assert_eq!((stats.written, stats.dropped), (want, 0));
    assert!(stats.failed_batches > 0);
}

#[tokio::test]
async fn record_never_waits_on_a_hung_store() {
    let store = FaultyStore::new().await;
    store.set(Some(Fault::Hang));
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(1000, 100, 10));
    send(&sink, 0..1);
    assert!(
        eventually(Duration::from_secs(5), || async {
            !store.attempts().is_empty()
        })
        .await
    );

    // The writer is stuck inside the store; a burst of records costs no waiting.
    let started = std::time::Instant::now();
    send(&sink, 1..50_001);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "record() waited: {took:?}");
    assert_eq!(sink.queued(), 1000);
    assert_eq!(sink.dropped(), 49_001);

    store.set(None);
    assert!(
        eventually(Duration::from_secs(10), || async {
            store.count().await == 1000
        })
        .await
    );
    let stats = handle.shutdown().await;
    assert_eq!((stats.written, stats.dropped), (1000, 49_001));
}

/// Another connection to the database at `path`, holding its write lock (`BEGIN EXCLUSIVE`)
/// until it runs `ROLLBACK`.
async fn lock_exclusively(path: &std::path::Path) -> sqlx::SqliteConnection {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut locker = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .unwrap();
    locker
}

/// While another process holds the database's write lock, a usage write gives up after its
/// own busy timeout (5 s) and reports the store failing: it never queues behind a capture
/// write that is itself waiting out the lock. (Sharing one connection, it waited for the
/// capture write's whole timeout first, and under load for one capture batch after another.)
#[tokio::test]
async fn a_usage_write_on_a_locked_database_never_waits_behind_a_capture_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iris.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    let mut locker = lock_exclusively(&path).await;

    let captures = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            let row = iris_store::CaptureRow {
                request_id: "r1".into(),
                ts_ms: 1,
                body: "{}".into(),
                request_body: None,
                response_body: None,
            };
            let started = std::time::Instant::now();
            let result = store.insert_captures(1, vec![row]).await;
            (started.elapsed(), result)
        }
    });
    // The capture write is waiting for the lock when the usage write starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let usage = store.insert_usage(Arc::new(vec![sample_record(0)])).await;
    let usage_took = started.elapsed();
    let (capture_took, capture) = captures.await.unwrap();
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();

    let usage = usage.unwrap_err();
    assert!(usage.to_string().contains("locked"), "{usage}");
    assert!(capture.unwrap_err().to_string().contains("locked"));
    // Each waited out its own 5 s; behind the capture write, the usage write would have
    // taken 5 s more (about 9.7 s).
    assert!(capture_took >= Duration::from_secs(4), "{capture_took:?}");
    assert!(
        usage_took < Duration::from_secs(8),
        "the usage write waited {usage_took:?}"
    );
    // Unlocked, both kinds of write go through again.
    store
        .insert_usage(Arc::new(vec![sample_record(1)]))
        .await
        .unwrap();
}

/// The errors SQLite really returns for a held lock, a full database and a read-only
/// file must count as transient (retried), never as a bad record (dropped).
#[tokio::test]
async fn real_sqlite_faults_are_transient() {
    use sqlx::sqlite::SqliteConnectOptions;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iris.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store
        .insert_usage(Arc::new(vec![sample_record(0)]))
        .await
        .unwrap();

    // Locked: another connection holds the write lock; no busy wait on ours.
    let mut locker = lock_exclusively(&path).await;
    let mut impatient = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(&path)
            .busy_timeout(Duration::ZERO),
    )
    .await
    .unwrap();
    let locked: StoreError = sqlx::query(
        "INSERT INTO api_keys (id, token_hash, tags, created_ms) VALUES ('k', 'h', '', 0)",
    )
    .execute(&mut impatient)
    .await
    .unwrap_err()
    .into();
    assert!(locked.to_string().contains("locked"), "{locked}");
    assert!(!locked.is_permanent(), "{locked}");
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();

    // Full: the database may not grow past its current size.
    let mut capped = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::new()
            .filename(&path)
            .pragma("max_page_count", "1"),
    )
    .await
    .unwrap();
    let mut full: Option<StoreError> = None;
    for i in 0..1000 {
        let note = "x".repeat(4000);
        let res = sqlx::query(
            "INSERT INTO api_keys (id, token_hash, tags, note, created_ms) VALUES (?, ?, '', ?, 0)",
        )
        .bind(format!("k{i}"))
        .bind(format!("h{i}"))
        .bind(note)
        .execute(&mut capped)
        .await;
        if let Err(e) = res {
            full = Some(e.into());
            break;
        }
    }
    let full = full.expect("the capped database filled up");
    assert!(full.to_string().contains("full"), "{full}");
    assert!(!full.is_permanent(), "{full}");

    // Read-only.
    let mut ro = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::new().filename(&path).read_only(true),
    )
    .await
    .unwrap();
    let readonly: StoreError = sqlx::query(
        "INSERT INTO api_keys (id, token_hash, tags, created_ms) VALUES ('r', 'r', '', 0)",
    )
    .execute(&mut ro)
    .await
    .unwrap_err()
    .into();
    assert!(readonly.to_string().contains("readonly"), "{readonly}");
    assert!(!readonly.is_permanent(), "{readonly}");

    // And a real bad record stays permanent (so it is dropped alone, not retried forever).
    let dup: StoreError = sqlx::query("INSERT INTO api_keys (id, token_hash, tags, created_ms) VALUES ('d', 'd', '', 0), ('d', 'e', '', 0)")
        .execute(&mut impatient)
        .await
        .unwrap_err()
        .into();
    assert!(dup.is_permanent(), "{dup}");
    store.close().await;
}
