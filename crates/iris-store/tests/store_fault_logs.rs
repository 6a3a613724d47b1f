//! The usage writer's log lines while the store fails: the first drop is logged at once,
//! later ones at most every 10 s with the count since the last line, all held-back drops
//! at recovery, so the lines add up to the drop counter. Alone in this test binary: a log
//! capture is per thread, and tracing's callsite cache is shared by every test in the
//! process.

// Test code: a panic is the failure report (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::faulty::{
    Fault, FaultyStore, Logs, cfg, eventually, resume_just_before_next_retry, send,
};
use iris_store::spawn_usage_writer;

#[tokio::test]
async fn beyond_the_bound_records_are_dropped_counted_and_logged() {
    let (logs, _guard) = Logs::capture();
    let store = FaultyStore::new().await;
    tokio::time::pause();
    store.set(Some(Fault::DiskFull));
    let (sink, handle) = spawn_usage_writer(store.clone(), cfg(20, 5, 50));

    let sent = send(&sink, 0..50);
    assert_eq!(sink.queued(), 20, "the bound");
    assert_eq!(sink.dropped(), 30, "everything beyond it, counted");
    // The first drop is logged at once.
    assert_eq!(logs.dropped_total(), 1, "{}", logs.text());
    // Drops go on while it is down; past the 10 s rate limit the held-back ones are
    // logged by the writer, without waiting for recovery.
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(&sink, 50..60);
    assert_eq!(sink.dropped(), 40);
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(logs.dropped_total(), 40, "{}", logs.text());
    assert!(
        logs.text()
            .contains("usage store failing and buffer full: 39 records dropped")
    );
    assert!(logs.text().contains("usage store write failed"));

    // More drops, then recovery: the log is brought up to date at once.
    send(&sink, 60..63);
    store.set(None);
    resume_just_before_next_retry(&store, Duration::from_secs(5)).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            store.count().await == 20
        })
        .await
    );
    assert_eq!(
        store.stored_ids().await,
        sent[..20].to_vec(),
        "the oldest are kept"
    );
    assert_eq!(sink.dropped(), 43);
    assert_eq!(logs.dropped_total(), 43, "{}", logs.text());
    assert!(logs.text().contains("usage store writes recovered"));

    // After recovery the bound is free again.
    let more = send(&sink, 100..110);
    assert!(
        eventually(Duration::from_secs(5), || async {
            store.count().await == 30
        })
        .await
    );
    assert_eq!(store.stored_ids().await[20..], more[..]);
    let stats = handle.shutdown().await;
    assert_eq!((stats.written, stats.dropped), (30, 43));
}
