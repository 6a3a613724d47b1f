//! Usage summaries, the extra filters, and saved config versions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::sample_record;
use iris_store::{ConfigVersion, GroupBy, SqliteStore, Store, UsageQuery};
use std::sync::Arc;

#[tokio::test]
async fn summaries_group_and_filter() {
    let store = SqliteStore::open_temporary().await.unwrap();
    let mut recs: Vec<_> = (0..9).map(sample_record).collect();
    // users: user0/1/2 x3 each; make one tagged record and one loopback record and one error.
    recs[0].login = None;
    recs[0].tags = vec!["tag:ci".into(), "tag:prod".into()];
    recs[1].login = None;
    recs[1].identity_source = "loopback".into();
    recs[2].status = 429;
    recs[2].error_class = Some("upstream_status".into());
    recs[3].requested_model = Some("gpt-5".into());
    recs[3].provider = Some("openai".into());
    recs[4].ts_ms += 86_400_000; // the next day
    store.insert_usage(Arc::new(recs.clone())).await.unwrap();

    let all = UsageQuery::default();
    let by_user = store.usage_summary(&all, GroupBy::User).await.unwrap();
    let keys: Vec<_> = by_user
        .iter()
        .map(|g| (g.key.as_str(), g.requests))
        .collect();
    assert_eq!(
        keys,
        [
            ("user2@example.com", 3),
            ("user0@example.com", 2),
            ("user1@example.com", 2),
            ("(loopback)", 1),
            ("tag:ci,tag:prod", 1)
        ]
    );
    let total_in: u64 = recs.iter().map(|r| r.input_tokens).sum();
    assert_eq!(
        by_user.iter().map(|g| g.input_tokens).sum::<u64>(),
        total_in
    );
    assert_eq!(by_user.iter().map(|g| g.errors).sum::<u64>(), 1);

    let by_provider = store.usage_summary(&all, GroupBy::Provider).await.unwrap();
    assert_eq!(by_provider[0].key, "anthropic");
    assert_eq!(by_provider[1].key, "openai");
    let by_day = store.usage_summary(&all, GroupBy::Day).await.unwrap();
    assert_eq!(by_day.len(), 2);
    assert!(by_day[0].key < by_day[1].key && by_day[0].key.starts_with("2023-11-14"));

    // Filters: tags (exact set), status, provider, identity source.
    let q = UsageQuery {
        tags: Some(vec!["tag:ci".into(), "tag:prod".into()]),
        ..UsageQuery::default()
    };
    assert_eq!(store.recent_usage(&q).await.unwrap().len(), 1);
    let q = UsageQuery {
        tags: Some(vec!["tag:ci".into()]),
        ..UsageQuery::default()
    };
    assert_eq!(store.recent_usage(&q).await.unwrap().len(), 0);
    let q = UsageQuery {
        status: Some(429),
        ..UsageQuery::default()
    };
    assert_eq!(store.recent_usage(&q).await.unwrap()[0].id, recs[2].id);
    let q = UsageQuery {
        provider: Some("openai".into()),
        ..UsageQuery::default()
    };
    assert_eq!(
        store.usage_summary(&q, GroupBy::Model).await.unwrap()[0].key,
        "gpt-5"
    );
    let q = UsageQuery {
        identity_source: Some("loopback".into()),
        ..UsageQuery::default()
    };
    assert_eq!(store.recent_usage(&q).await.unwrap().len(), 1);
}

#[tokio::test]
async fn config_versions_keep_text_and_order() {
    let store = SqliteStore::open_temporary().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let v = ConfigVersion {
            id: 0,
            hash: format!("h{i}"),
            saved_by: "alice@example.com".into(),
            saved_at_ms: 1000 + i,
            source: "api".into(),
            bytes: 0,
            text: format!("{{ // version {i}\n}}"),
        };
        ids.push(store.insert_config_version(&v).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let list = store.config_versions(10).await.unwrap();
    assert_eq!(
        list.iter().map(|v| v.hash.as_str()).collect::<Vec<_>>(),
        ["h2", "h1", "h0"]
    );
    assert!(list.iter().all(|v| v.text.is_empty() && v.bytes > 0));
    let one = store.config_version(ids[1]).await.unwrap().unwrap();
    assert_eq!(one.text, "{ // version 1\n}");
    assert_eq!(one.bytes, one.text.len() as u64);
    assert!(store.config_version(999).await.unwrap().is_none());
}

#[tokio::test]
async fn sessions_captures_and_purge() {
    use iris_store::CaptureRow;
    let store = SqliteStore::open_temporary().await.unwrap();
    let mut recs: Vec<_> = (0..6).map(sample_record).collect();
    for (i, r) in recs.iter_mut().enumerate() {
        r.session_id = Some(if i < 4 { "cc_a".into() } else { "fp_b".into() });
        r.session_kind = Some(if i < 4 {
            "claude_code".into()
        } else {
            "fingerprint".into()
        });
        r.login = Some("alice@example.com".into());
        r.cost_usd = if i == 1 { None } else { Some(0.5) };
        // The observer names the batch each capture is written with in its record.
        r.capture_batch = Some(7);
        r.tool_names = if i % 2 == 0 {
            vec!["Bash".into(), "Read".into()]
        } else {
            vec!["Bash".into()]
        };
    }
    recs[5].ts_ms += 10_000; // session fp_b is the most recent
    store.insert_usage(Arc::new(recs.clone())).await.unwrap();
    let sessions = store.sessions(&UsageQuery::default(), None).await.unwrap();
    assert_eq!(
        sessions.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["fp_b", "cc_a"]
    );
    let a = &sessions[1];
    assert_eq!(
        (a.requests, a.who.as_str(), a.kind.as_deref()),
        (4, "alice@example.com", Some("claude_code"))
    );
    assert_eq!(a.cost_usd, Some(1.5));
    assert_eq!(a.unpriced_requests, 1);
    assert_eq!(a.tools[0].name, "Bash");
    assert_eq!(a.tools[0].count, 4);
    assert_eq!(a.tools[1].count, 2);
    assert_eq!(a.models, ["claude-sonnet-4"]);
    // Paging by last activity.
    let page2 = store
        .sessions(&UsageQuery::default(), Some(sessions[0].last_ms))
        .await
        .unwrap();
    assert_eq!(page2.len(), 1);
    assert_eq!(page2[0].id, "cc_a");
    // Scoping: another login sees nothing.
    let q = UsageQuery {
        login: Some("bob@example.com".into()),
        ..UsageQuery::default()
    };
    assert!(store.sessions(&q, None).await.unwrap().is_empty());
    assert!(store.session_records("cc_a", &q).await.unwrap().is_empty());
    let rs = store
        .session_records("cc_a", &UsageQuery::default())
        .await
        .unwrap();
    assert_eq!(rs.len(), 4);
    assert!(rs.windows(2).all(|w| w[0].ts_ms <= w[1].ts_ms));

    // Captures: kept, read back, purged by age; usage records stay.
    let caps: Vec<_> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| CaptureRow {
            request_id: r.id.clone(),
            ts_ms: r.ts_ms,
            body: format!("{{\"id\":\"{}\"}}", r.id),
            request_body: (i % 2 == 0).then(|| format!("{{\"n\": {i}}}\n")),
            response_body: (i % 3 == 0).then(|| format!("data: {i}\n\n")),
        })
        .collect();
    store.insert_captures(7, caps.clone()).await.unwrap();
    let mut again = caps[0].clone();
    again.body = "{}".into();
    // A capture of the same request id in another batch is not the one its record names.
    store.insert_captures(8, vec![again]).await.unwrap();
    for c in &caps {
        assert_eq!(
            store.capture(&c.request_id).await.unwrap().as_ref(),
            Some(c)
        );
    }
    let purged = store.purge(recs[3].ts_ms, true).await.unwrap();
    // Three captures and the stray copy of the first: every stored capture text counts.
    assert_eq!(purged, 4);
    assert!(store.capture(&recs[0].id).await.unwrap().is_none());
    assert!(store.capture(&recs[5].id).await.unwrap().is_some());
    assert_eq!(store.count_usage().await.unwrap(), 6);
    let after = store
        .session_records("cc_a", &UsageQuery::default())
        .await
        .unwrap();
    assert!(after[0].tool_names.is_empty() && !after[3].tool_names.is_empty());
}

/// More to purge than one chunk: everything old goes, nothing new, every tool list is cleared.
#[tokio::test]
async fn purge_works_through_more_than_one_chunk() {
    use iris_store::{CaptureRow, UsageRecord};
    let store = SqliteStore::open_temporary().await.unwrap();
    let n = 4_500;
    let recs: Vec<UsageRecord> = (0..n + 10)
        .map(|i| {
            let mut r = sample_record(i);
            // Several records per millisecond, as under load.
            r.ts_ms = 1_000 + i64::try_from(i / 4).unwrap();
            r.tool_names = vec!["Bash".into()];
            r.capture_batch = Some(1);
            r
        })
        .collect();
    store.insert_usage(Arc::new(recs.clone())).await.unwrap();
    let caps: Vec<CaptureRow> = recs
        .iter()
        .map(|r| CaptureRow {
            request_id: r.id.clone(),
            ts_ms: r.ts_ms,
            body: "{}".into(),
            request_body: None,
            response_body: None,
        })
        .collect();
    store.insert_captures(1, caps).await.unwrap();

    let cut = recs[n as usize].ts_ms; // the first record kept
    let old = recs.iter().filter(|r| r.ts_ms < cut).count() as u64;
    assert!(old > 2 * 2_000, "{old}");
    assert_eq!(store.purge(cut, true).await.unwrap(), old);
    for r in &recs {
        let kept = r.ts_ms >= cut;
        assert_eq!(
            store.capture(&r.id).await.unwrap().is_some(),
            kept,
            "{}",
            r.ts_ms
        );
    }
    let back = store
        .recent_usage(&UsageQuery {
            limit: UsageQuery::MAX_LIMIT,
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(back.len(), recs.len());
    let with_tools = back.iter().filter(|r| !r.tool_names.is_empty()).count();
    let kept = recs.iter().filter(|r| r.ts_ms >= cut).count();
    assert_eq!(with_tools, kept);
    assert_eq!(store.purge(cut, true).await.unwrap(), 0);
}
