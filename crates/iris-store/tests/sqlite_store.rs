//! The SQLite store through the public `Store` trait: schema setup, the usage log and
//! the key table.

// Test code: a panic is the failure report (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use common::sample_record;
use iris_store::{KeyRecord, SqliteStore, Store, StoreError, UsageQuery, UsageRecord};

async fn all_usage(store: &dyn Store) -> Vec<UsageRecord> {
    store
        .recent_usage(&UsageQuery {
            limit: UsageQuery::MAX_LIMIT,
            ..UsageQuery::default()
        })
        .await
        .unwrap()
}

/// A record with every optional field set and counters at the largest storable value.
fn full_record() -> UsageRecord {
    let big = i64::MAX as u64;
    UsageRecord {
        id: iris_store::new_record_id(),
        ts_ms: 1_700_000_123_456,
        request_id: "req-1".into(),
        login: Some("alice@example.com".into()),
        display_name: Some("Alice Ünïcode 😀".into()),
        tags: vec!["tag:ci".into(), "tag:prod-runner".into()],
        node: Some("alice-laptop".into()),
        node_id: Some("n123456CNTRL".into()),
        identity_source: "key".into(),
        key_id: Some("key_0123456789ab".into()),
        api_family: "openai_chat".into(),
        method: "POST".into(),
        path: "/v1/chat/completions?x='1'".into(),
        requested_model: Some("gpt-5".into()),
        provider: Some("openai".into()),
        upstream_model: Some("gpt-5-2025-08-07".into()),
        streaming: true,
        status: u16::MAX,
        error_class: Some("upstream_error".into()),
        input_tokens: big,
        output_tokens: big - 1,
        cache_read_tokens: 3,
        cache_write_tokens: 4,
        reasoning_tokens: 5,
        usage_known: true,
        ttfb_ms: Some(big),
        duration_ms: big,
        bytes_in: big,
        bytes_out: 1 << 40,
        user_agent: Some("OpenAI/Python 1.99.0".into()),
        session_id: Some("cc_d21b5422-124d-4bc9".into()),
        session_kind: Some("claude_code".into()),
        cost_usd: Some(0.012345),
        priced_as: Some("openai/gpt-4o".into()),
        tool_names: vec!["Bash".into(), "Read".into()],
        capture_batch: Some(i64::MAX),
    }
}

/// A record with every optional field empty and every counter zero.
fn bare_record() -> UsageRecord {
    UsageRecord {
        id: iris_store::new_record_id(),
        ts_ms: -5,
        request_id: String::new(),
        login: None,
        display_name: None,
        tags: Vec::new(),
        node: None,
        node_id: None,
        identity_source: "none".into(),
        key_id: None,
        api_family: "unknown".into(),
        method: "GET".into(),
        path: "/".into(),
        requested_model: None,
        provider: None,
        upstream_model: None,
        streaming: false,
        status: 0,
        error_class: None,
        input_tokens: 0,
        output_tokens: 0,
        cache_read_tokens: 0,
        cache_write_tokens: 0,
        reasoning_tokens: 0,
        usage_known: false,
        ttfb_ms: None,
        duration_ms: 0,
        bytes_in: 0,
        bytes_out: 0,
        user_agent: None,
        session_id: None,
        session_kind: None,
        cost_usd: None,
        priced_as: None,
        tool_names: Vec::new(),
        capture_batch: None,
    }
}

fn key(id: &str, hash: &str, created_ms: i64) -> KeyRecord {
    KeyRecord {
        id: id.into(),
        token_hash: hash.into(),
        login: Some("alice@example.com".into()),
        tags: Vec::new(),
        note: Some("laptop".into()),
        created_ms,
        expires_ms: None,
        revoked_ms: None,
        last_used_ms: None,
        created_by: Some("admin@example.com".into()),
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn fresh_file_gets_private_dirs_schema_and_wal_and_reopens_with_its_data() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state").join("iris");
    let path = dir.join("iris.db");

    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.count_usage().await.unwrap(), 0);
    let rec = sample_record(1);
    store
        .insert_usage(Arc::new(vec![rec.clone()]))
        .await
        .unwrap();
    store.insert_key(&key("key_a", "h1", 1)).await.unwrap();
    assert!(
        dir.join("iris.db-wal").exists(),
        "WAL mode keeps a -wal file while open"
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&path), 0o600, "database file");
        assert_eq!(mode(&dir), 0o700, "database directory");
        assert_eq!(mode(dir.parent().unwrap()), 0o700, "created parent");
    }
    store.close().await;
    drop(store);
    // A new database gets 16 KiB pages (the header's big-endian page size at offset 16).
    let header = std::fs::read(&path).unwrap();
    assert_eq!(&header[..16], b"SQLite format 3\0");
    assert_eq!(u16::from_be_bytes([header[16], header[17]]), 16384);

    // Re-open: migrations already applied, data intact.
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(all_usage(&store).await, vec![rec]);
    assert_eq!(store.list_keys().await.unwrap().len(), 1);
    store.close().await;
}

#[cfg(unix)]
#[tokio::test]
async fn existing_file_keeps_its_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("iris.db");
    std::fs::write(&path, b"").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.count_usage().await.unwrap(), 0);
    assert_eq!(mode(&path), 0o640);
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("iris.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    let err = SqliteStore::open(&path).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Database(_) | StoreError::Migration(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_unusable_location_is_an_io_error_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let blocker = tmp.path().join("file");
    std::fs::write(&blocker, b"").unwrap();
    let err = SqliteStore::open(&blocker.join("iris.db"))
        .await
        .unwrap_err();
    match err {
        StoreError::Io { path, .. } => assert_eq!(path, blocker),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[tokio::test]
async fn every_field_round_trips() {
    let store = SqliteStore::open_temporary().await.unwrap();
    let full = full_record();
    let mut bare = bare_record();
    bare.ts_ms = full.ts_ms - 1;
    store
        .insert_usage(Arc::new(vec![full.clone(), bare.clone()]))
        .await
        .unwrap();
    assert_eq!(all_usage(&store).await, vec![full, bare]);
}

/// A batch spans several multi-row statements, one prepared statement executed again for each
/// chunk of the same size: a row whose fields are absent must not keep what the row in its
/// place in the previous chunk had.
#[tokio::test]
async fn a_batch_of_many_chunks_round_trips_row_by_row() {
    let store = SqliteStore::open_temporary().await.unwrap();
    let batch: Vec<UsageRecord> = (0..131)
        .map(|i| {
            let mut r = if i % 3 == 0 {
                full_record()
            } else {
                bare_record()
            };
            r.id = iris_store::new_record_id();
            r.request_id = r.id.clone();
            r.ts_ms = 1_700_000_000_000 - i;
            r.input_tokens = i as u64;
            r
        })
        .collect();
    store.insert_usage(Arc::new(batch.clone())).await.unwrap();
    assert_eq!(all_usage(&store).await, batch);
}

#[tokio::test]
async fn counters_beyond_i64_saturate() {
    let store = SqliteStore::open_temporary().await.unwrap();
    let mut rec = sample_record(0);
    rec.input_tokens = u64::MAX;
    rec.ttfb_ms = Some(u64::MAX);
    store
        .insert_usage(Arc::new(vec![rec.clone()]))
        .await
        .unwrap();
    let back = &all_usage(&store).await[0];
    assert_eq!(back.input_tokens, i64::MAX as u64);
    assert_eq!(back.ttfb_ms, Some(i64::MAX as u64));
}

#[tokio::test]
async fn rewriting_a_batch_is_a_no_op_and_batches_are_all_or_nothing() {
    let store = SqliteStore::open_temporary().await.unwrap();
    let batch: Vec<UsageRecord> = (0..1000).map(sample_record).collect();
    store.insert_usage(Arc::new(Vec::new())).await.unwrap();
    store.insert_usage(Arc::new(batch.clone())).await.unwrap();
    // A retried batch (e.g. after a commit whose answer was lost) adds nothing.
    store.insert_usage(Arc::new(batch.clone())).await.unwrap();
    assert_eq!(store.count_usage().await.unwrap(), 1000);

    let mut bad = batch.clone();
    for r in &mut bad {
        r.id = iris_store::new_record_id();
    }
    bad[999].tags = vec!["tag:a,tag:b".into()];
    let err = store.insert_usage(Arc::new(bad.clone())).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidRecord(_)), "{err:?}");
    assert!(err.is_permanent());
    assert_eq!(store.count_usage().await.unwrap(), 1000);
    // The failed write left nothing open behind: the next one goes through.
    store
        .insert_usage(Arc::new(bad[..10].to_vec()))
        .await
        .unwrap();
    assert_eq!(store.count_usage().await.unwrap(), 1010);
}

/// 60 records: 3 logins, 2 models, timestamps with ties (several records per ms).
fn fixture() -> Vec<UsageRecord> {
    (0..60u64)
        .map(|i| {
            let mut r = sample_record(i);
            r.ts_ms = 1_000 + i64::try_from(i / 3).unwrap() * 10;
            r.login = [Some("alice"), Some("bob"), None][(i % 3) as usize].map(String::from);
            if i % 4 == 0 {
                r.requested_model = Some("gpt-5".into());
                r.upstream_model = Some("gpt-5-2025".into());
            }
            r
        })
        .collect()
}

/// What `recent_usage` must return, computed the slow, obvious way.
fn expected(all: &[UsageRecord], q: &UsageQuery) -> Vec<String> {
    let mut v: Vec<&UsageRecord> = all
        .iter()
        .filter(|r| q.login.as_ref().is_none_or(|l| r.login.as_ref() == Some(l)))
        .filter(|r| {
            q.model.as_ref().is_none_or(|m| {
                r.requested_model.as_ref() == Some(m) || r.upstream_model.as_ref() == Some(m)
            })
        })
        .filter(|r| q.since_ms.is_none_or(|s| r.ts_ms >= s))
        .filter(|r| q.until_ms.is_none_or(|u| r.ts_ms < u))
        .collect();
    v.sort_by(|a, b| (b.ts_ms, &b.id).cmp(&(a.ts_ms, &a.id)));
    if let Some(before) = &q.before_id {
        let cursor = all.iter().find(|r| &r.id == before).unwrap();
        v.retain(|r| (r.ts_ms, &r.id) < (cursor.ts_ms, &cursor.id));
    }
    v.into_iter()
        .take(q.limit as usize)
        .map(|r| r.id.clone())
        .collect()
}

#[tokio::test]
async fn recent_usage_is_newest_first_and_filters() {
    let store = SqliteStore::open_temporary().await.unwrap();
    let all = fixture();
    // Insert in scrambled order: ordering must come from the query, not insertion.
    let mut scrambled = all.clone();
    scrambled.reverse();
    scrambled.rotate_left(17);
    store
        .insert_usage(Arc::new(scrambled.clone()))
        .await
        .unwrap();

    let q = |f: fn(&mut UsageQuery)| {
        let mut q = UsageQuery {
            limit: 1000,
            ..UsageQuery::default()
        };
        f(&mut q);
        q
    };
    let cases = [
        ("everything", q(|_| {})),
        ("default limit", UsageQuery::default()),
        ("limit 5", q(|q| q.limit = 5)),
        ("login", q(|q| q.login = Some("bob".into()))),
        ("unknown login", q(|q| q.login = Some("mallory".into()))),
        ("requested model", q(|q| q.model = Some("gpt-5".into()))),
        ("upstream model", q(|q| q.model = Some("gpt-5-2025".into()))),
        ("since", q(|q| q.since_ms = Some(1_100))),
        ("until", q(|q| q.until_ms = Some(1_100))),
        (
            "window",
            q(|q| {
                q.since_ms = Some(1_050);
                q.until_ms = Some(1_150);
            }),
        ),
        (
            "everything at once",
            q(|q| {
                q.login = Some("alice".into());
                q.model = Some("claude-sonnet-4".into());
                q.since_ms = Some(1_020);
                q.until_ms = Some(1_170);
                q.limit = 4;
            }),
        ),
    ];
    for (name, query) in cases {
        let got: Vec<String> = store
            .recent_usage(&query)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(got, expected(&all, &query), "case {name}");
    }
    assert_eq!(
        store
            .recent_usage(&UsageQuery::default())
            .await
            .unwrap()
            .len(),
        50
    );
    let none = store.recent_usage(&q(|q| q.limit = 0)).await.unwrap();
    assert!(none.is_empty());
}

#[tokio::test]
async fn before_id_pages_through_everything_exactly_once() {
    let store = SqliteStore::open_temporary().await.unwrap();
    let all = fixture();
    store.insert_usage(Arc::new(all.clone())).await.unwrap();

    for login in [None, Some("alice")] {
        let mut seen = Vec::new();
        let mut query = UsageQuery {
            limit: 7,
            login: login.map(String::from),
            ..UsageQuery::default()
        };
        loop {
            let page = store.recent_usage(&query).await.unwrap();
            let ids: Vec<String> = page.iter().map(|r| r.id.clone()).collect();
            assert_eq!(ids, expected(&all, &query));
            let Some(last) = page.last() else { break };
            query.before_id = Some(last.id.clone());
            seen.extend(page.into_iter().map(|r| r.id));
        }
        let full = expected(
            &all,
            &UsageQuery {
                limit: 1000,
                login: login.map(String::from),
                ..UsageQuery::default()
            },
        );
        assert_eq!(seen, full, "login {login:?}");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), seen.len());
    }

    let unknown = UsageQuery {
        before_id: Some("no-such-id".into()),
        ..UsageQuery::default()
    };
    assert!(store.recent_usage(&unknown).await.unwrap().is_empty());
}

#[tokio::test]
async fn keys_insert_lookup_and_list() {
    let store = SqliteStore::open_temporary().await.unwrap();
    let mut tagged = key("key_bbbbbbbbbbbb", "hash-b", 20);
    tagged.login = None;
    tagged.tags = vec!["tag:ci".into(), "tag:runner".into()];
    tagged.note = None;
    tagged.created_by = None;
    tagged.expires_ms = Some(99);
    let plain = key("key_aaaaaaaaaaaa", "hash-a", 10);
    store.insert_key(&tagged).await.unwrap();
    store.insert_key(&plain).await.unwrap();

    assert_eq!(
        store.key_by_hash("hash-b").await.unwrap(),
        Some(tagged.clone())
    );
    assert_eq!(
        store.key_by_hash("hash-a").await.unwrap(),
        Some(plain.clone())
    );
    assert_eq!(store.key_by_hash("hash-zzz").await.unwrap(), None);
    assert_eq!(store.list_keys().await.unwrap(), vec![plain, tagged]);
}

#[tokio::test]
async fn key_hash_and_id_are_unique() {
    let store = SqliteStore::open_temporary().await.unwrap();
    store
        .insert_key(&key("key_1", "same-hash", 1))
        .await
        .unwrap();

    for dup in [key("key_2", "same-hash", 2), key("key_1", "other-hash", 2)] {
        let err = store.insert_key(&dup).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert!(!err.to_string().contains("hash\""), "no hash echoed: {err}");
    }
    assert_eq!(store.list_keys().await.unwrap().len(), 1);
    assert_eq!(
        store.key_by_hash("same-hash").await.unwrap().unwrap().id,
        "key_1"
    );
}

#[tokio::test]
async fn revoke_marks_once_and_reports_unknown_keys() {
    let store = SqliteStore::open_temporary().await.unwrap();
    store.insert_key(&key("key_1", "h1", 1)).await.unwrap();

    assert!(!store.revoke_key("key_nope", 5).await.unwrap());
    assert!(store.revoke_key("key_1", 100).await.unwrap());
    // Revoking again succeeds but keeps the original time.
    assert!(store.revoke_key("key_1", 200).await.unwrap());
    let k = store.key_by_hash("h1").await.unwrap().unwrap();
    assert_eq!(k.revoked_ms, Some(100));
}

#[tokio::test]
async fn touch_only_moves_last_used_forward() {
    let store = SqliteStore::open_temporary().await.unwrap();
    store.insert_key(&key("key_1", "h1", 1)).await.unwrap();
    store.insert_key(&key("key_2", "h2", 1)).await.unwrap();
    let last_used = |h: &'static str| {
        let store = &store;
        async move { store.key_by_hash(h).await.unwrap().unwrap().last_used_ms }
    };

    assert_eq!(last_used("h1").await, None);
    store.touch_key("key_1", 500).await.unwrap();
    assert_eq!(last_used("h1").await, Some(500));
    store.touch_key("key_1", 400).await.unwrap();
    assert_eq!(last_used("h1").await, Some(500));
    store.touch_key("key_1", 600).await.unwrap();
    assert_eq!(last_used("h1").await, Some(600));
    assert_eq!(last_used("h2").await, None, "other keys untouched");
    store.touch_key("key_nope", 600).await.unwrap();
}

#[tokio::test]
async fn key_tags_that_cannot_round_trip_are_refused() {
    let store = SqliteStore::open_temporary().await.unwrap();
    let mut k = key("key_1", "h1", 1);
    k.tags = vec!["tag:a,b".into()];
    let err = store.insert_key(&k).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidRecord(_)), "{err:?}");
    assert!(store.list_keys().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_see_committed_writes_on_a_file_store() {
    let tmp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        SqliteStore::open(&tmp.path().join("iris.db"))
            .await
            .unwrap(),
    );
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for chunk in 0..20u64 {
                let batch: Vec<UsageRecord> =
                    (0..50).map(|i| sample_record(chunk * 50 + i)).collect();
                store.insert_usage(Arc::new(batch.clone())).await.unwrap();
            }
        })
    };
    // Counts seen by the read pool only ever grow, in whole batches.
    let mut last = 0;
    while !writer.is_finished() {
        let n = store.count_usage().await.unwrap();
        assert!(n >= last && n % 50 == 0, "count {n} after {last}");
        last = n;
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    assert_eq!(store.count_usage().await.unwrap(), 1000);
}

/// A database made by an iris before schema version 4 (captures with their bodies inside the
/// JSON document) opens, migrates, and serves those captures as they were stored.
#[tokio::test]
async fn captures_stored_before_version_4_read_back_unchanged() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let tmp = tempfile::tempdir().unwrap();
    let old = tmp.path().join("migrations-v3");
    std::fs::create_dir(&old).unwrap();
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut copied = 0;
    for e in std::fs::read_dir(&all).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.as_str() < "0004" {
            std::fs::copy(e.path(), old.join(&name)).unwrap();
            copied += 1;
        }
    }
    assert_eq!(copied, 3);
    let path = tmp.path().join("iris.db");
    let pool = SqlitePoolOptions::new()
        .connect_with(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
        .unwrap();
    sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    let doc = r#"{"request_id":"r1","status":200,"request_body":"{\"model\":\"m\"}","response_body":null}"#;
    sqlx::query("INSERT INTO captures (request_id, ts_ms, body) VALUES ('r1', 5, ?)")
        .bind(doc)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = SqliteStore::open(&path).await.unwrap();
    let row = store.capture("r1").await.unwrap().unwrap();
    assert_eq!(
        row,
        iris_store::CaptureRow {
            request_id: "r1".into(),
            ts_ms: 5,
            body: doc.into(),
            request_body: None,
            response_body: None,
        }
    );
    store.close().await;
}

/// An iris from before schema version 6 (captures stored as JSON) refuses a database this one
/// wrote, rather than serve its compact capture documents as if they were JSON.
#[tokio::test]
async fn an_older_iris_refuses_a_database_with_compact_captures() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("iris.db");
    SqliteStore::open(&path).await.unwrap().close().await;

    let old = tmp.path().join("migrations-v5");
    std::fs::create_dir(&old).unwrap();
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for e in std::fs::read_dir(&all).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if name.as_str() < "0006" {
            std::fs::copy(e.path(), old.join(&name)).unwrap();
        }
    }
    let pool = SqlitePoolOptions::new()
        .connect_with(SqliteConnectOptions::new().filename(&path))
        .await
        .unwrap();
    let refused = sqlx::migrate::Migrator::new(old.as_path())
        .await
        .unwrap()
        .run(&pool)
        .await;
    assert!(
        matches!(refused, Err(sqlx::migrate::MigrateError::VersionMissing(6))),
        "{refused:?}"
    );
    pool.close().await;
}
