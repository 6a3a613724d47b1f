//! The usage-store scenario: iris's own SQLite store and batched writer, driven directly with
//! the request path idle. Two measurements:
//! - **max**: records offered as fast as the queue takes them (never letting it fill, so
//!   nothing is dropped); the rate is records written over the time until the writer has
//!   drained and shut down;
//! - **fixed**: records offered at a fixed rate (the target's 20,000/s); nothing may be dropped
//!   and the queue must not keep growing.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use iris_store::{SqliteStore, Store, UsageRecord, UsageWriterConfig};
use serde::{Deserialize, Serialize};

use crate::procfs::{ProcSet, cpu_between};

/// One measurement of the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoreRecord {
    pub mode: String,
    /// Held to the target (the team's sessions); the worst case is only reported.
    pub judged: bool,
    pub offered: u64,
    pub written: u64,
    pub dropped: u64,
    pub failed_batches: u64,
    /// From the first record offered to the writer's shutdown (everything written).
    pub elapsed_s: f64,
    /// Time spent offering.
    pub offer_s: f64,
    pub records_per_s: f64,
    /// Most records waiting in the queue at one time.
    pub max_queued: usize,
    /// CPU seconds of this process (producer + writer) per 1,000 records written.
    pub cpu_per_1k: f64,
}

/// iris's defaults (`iris.usage`): queue 65,536, batches of 1,000, flush every second.
pub fn iris_default_writer() -> UsageWriterConfig {
    UsageWriterConfig {
        queue_capacity: 65_536,
        batch_size: 1000,
        flush_interval: Duration::from_secs(1),
    }
}

/// Whose sessions the records belong to. A block has a key row per distinct session in it, and
/// each distinct session of a batch costs the commit a page of the key index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sessions {
    /// 256 conversations going at once (a team's gateway), each with many requests: the judged
    /// case.
    Team,
    /// A new session per record, its id random (an OpenAI chat batch job: every request opens
    /// a conversation of its own and gets a fingerprint session): the worst case, reported.
    EachNew,
}

impl Sessions {
    fn id(self, i: u64) -> String {
        match self {
            Sessions::Team => format!("cc_6f1c{:04x}-9d2e-4c1b-8a7f-3e5d2c1b0a99", i % 256),
            Sessions::EachNew => format!("fp_{:032x}", u128::from(i).wrapping_mul(PHI)),
        }
    }
}

/// 2^128 divided by the golden ratio, odd: multiplying by it scatters consecutive numbers over
/// the id space as a hash would.
const PHI: u128 = 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835;

/// A record shaped like the ones iris writes for a Claude Code request (its session as
/// `sessions` says).
pub fn sample_record(i: u64, sessions: Sessions) -> UsageRecord {
    let (id, ts_ms) = iris_store::new_record_id_and_time();
    UsageRecord {
        id,
        ts_ms,
        request_id: format!("req-{i}"),
        login: Some("alice@example.com".into()),
        display_name: Some("Alice Example".into()),
        tags: Vec::new(),
        node: Some("alice-laptop.tail4e2b1.ts.net".into()),
        node_id: Some("nAl1ceCNTRL".into()),
        identity_source: "whois".into(),
        key_id: None,
        api_family: "anthropic_messages".into(),
        method: "POST".into(),
        path: "/v1/messages".into(),
        requested_model: Some("claude-sonnet-4-5".into()),
        provider: Some("anthropic".into()),
        upstream_model: Some("claude-sonnet-4-5-20250929".into()),
        streaming: true,
        status: 200,
        error_class: None,
        input_tokens: 19_000 + i % 1000,
        output_tokens: 200 + i % 50,
        cache_read_tokens: 18_000,
        cache_write_tokens: 120,
        reasoning_tokens: 0,
        usage_known: true,
        ttfb_ms: Some(350),
        duration_ms: 4200,
        bytes_in: 80_000,
        bytes_out: 41_000,
        user_agent: Some("claude-cli/2.1.197 (external, sdk-cli)".into()),
        session_id: Some(sessions.id(i)),
        session_kind: Some(
            match sessions {
                Sessions::Team => "claude_code",
                Sessions::EachNew => "fingerprint",
            }
            .into(),
        ),
        cost_usd: Some(0.0712),
        priced_as: None,
        tool_names: Vec::new(),
        capture_batch: None,
    }
}

/// How records are offered.
#[derive(Debug, Clone, Copy)]
pub enum Offer {
    /// As fast as the queue takes them, keeping it under three quarters full.
    Max,
    /// This many per second.
    Rate(u64),
}

/// Offer records for `duration` into a fresh database in `dir`, then shut the writer down
/// (which writes everything queued) and report.
pub async fn run(
    dir: &Path,
    offer: Offer,
    sessions: Sessions,
    duration: Duration,
    cfg: UsageWriterConfig,
) -> anyhow::Result<StoreRecord> {
    let path = dir.join(format!(
        "usage-{}-{sessions:?}.db",
        match offer {
            Offer::Max => "max".to_owned(),
            Offer::Rate(r) => format!("rate-{r}"),
        }
    ));
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await?);
    let me = ProcSet::single(std::process::id());
    let cpu0 = me.sample();
    let (sink, writer) = iris_store::spawn_usage_writer(store.clone(), cfg.clone());
    let start = Instant::now();
    let deadline = start + duration;
    let high_water = cfg.queue_capacity * 3 / 4;
    let mut offered = 0u64;
    let mut max_queued = 0usize;
    // Bounded: the loop ends at the deadline whatever the store does.
    while Instant::now() < deadline {
        let due = match offer {
            Offer::Max => offered + 512,
            Offer::Rate(r) => (start.elapsed().as_secs_f64() * r as f64) as u64,
        };
        while offered < due {
            if matches!(offer, Offer::Max) && sink.queued() >= high_water {
                break;
            }
            sink.record(sample_record(offered, sessions));
            offered += 1;
        }
        max_queued = max_queued.max(sink.queued());
        match offer {
            Offer::Max if sink.queued() >= high_water => {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Offer::Max => tokio::task::yield_now().await,
            Offer::Rate(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
    let offer_s = start.elapsed().as_secs_f64();
    let stats = writer.shutdown().await;
    let elapsed = start.elapsed();
    let cpu = cpu_between(&cpu0, &me.sample()).as_secs_f64();
    drop(sink);
    let n = store.count_usage().await.unwrap_or(0);
    anyhow::ensure!(
        n == stats.written,
        "the store holds {n} records but the writer reported {} written",
        stats.written
    );
    Ok(StoreRecord {
        mode: match (offer, sessions) {
            (Offer::Max, Sessions::Team) => "max (queue kept under 3/4)".to_owned(),
            (Offer::Rate(r), Sessions::Team) => format!("fixed {r}/s"),
            (Offer::Max, Sessions::EachNew) => {
                "worst case: a new session per record, max (not judged)".to_owned()
            }
            (Offer::Rate(r), Sessions::EachNew) => {
                format!("worst case: a new session per record, {r}/s (not judged)")
            }
        },
        judged: sessions == Sessions::Team,
        offered,
        written: stats.written,
        dropped: stats.dropped,
        failed_batches: stats.failed_batches,
        elapsed_s: elapsed.as_secs_f64(),
        offer_s,
        records_per_s: stats.written as f64 / elapsed.as_secs_f64().max(1e-9),
        max_queued,
        cpu_per_1k: crate::scenarios::per_1k(cpu, stats.written),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_everything_it_offers_at_a_low_rate() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = UsageWriterConfig {
            queue_capacity: 1024,
            batch_size: 100,
            flush_interval: Duration::from_millis(50),
        };
        let r = run(
            dir.path(),
            Offer::Rate(2000),
            Sessions::Team,
            Duration::from_millis(300),
            cfg,
        )
        .await
        .unwrap();
        assert!(r.offered >= 400, "{r:?}");
        assert_eq!(r.written, r.offered, "{r:?}");
        assert_eq!(r.dropped, 0);
        assert!(r.records_per_s > 0.0);
    }

    #[tokio::test]
    async fn max_mode_never_drops() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = UsageWriterConfig {
            queue_capacity: 2048,
            batch_size: 256,
            flush_interval: Duration::from_millis(50),
        };
        let r = run(
            dir.path(),
            Offer::Max,
            Sessions::EachNew,
            Duration::from_millis(300),
            cfg,
        )
        .await
        .unwrap();
        assert_eq!(r.dropped, 0, "{r:?}");
        assert_eq!(r.written, r.offered);
        assert!(r.max_queued <= 2048);
    }

    #[test]
    fn team_sessions_recur_and_new_sessions_do_not() {
        let ids = |s: Sessions| {
            (0..1000)
                .map(|i| sample_record(i, s).session_id.unwrap())
                .collect::<std::collections::HashSet<_>>()
                .len()
        };
        assert_eq!(ids(Sessions::Team), 256);
        assert_eq!(ids(Sessions::EachNew), 1000);
        // Scattered, not in the order written.
        let a = Sessions::EachNew.id(1);
        let b = Sessions::EachNew.id(2);
        assert_ne!(a[3..5], b[3..5]);
    }
}
