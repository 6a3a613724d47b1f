//! Every query of the usage log against a model of it: generated records with every filtered
//! field varied, written to a store, and each listing, summary, session list and session page
//! compared with what the obvious in-memory computation over the same records gives. The
//! queries' meaning is pinned here apart from how the store keeps the log, so a store written
//! another way (the usage log in blocks that docs/performance.md plans) is held to the same
//! answers.

// Test code: a panic is the failure report (clippy.toml only covers #[test] fns).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use common::sample_record;
use iris_store::{
    GroupBy, SessionSummary, SqliteStore, Store, ToolCount, UsageGroup, UsageQuery, UsageRecord,
};

/// A small deterministic generator (xorshift64*), so a failure reproduces.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<T: Clone>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize].clone()
    }
}

const DAY_MS: i64 = 86_400_000;
const START_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a Thursday

fn records(n: usize) -> Vec<UsageRecord> {
    let mut g = Gen(0x9e37_79b9_7f4a_7c15);
    let s = |v: &str| Some(v.to_owned());
    let mut all: Vec<UsageRecord> = (0..n)
        .map(|i| {
            let mut r = sample_record(i as u64);
            // Two records to a millisecond (ties ordered by id), and a third of a day later every
            // 40 records: the log spans five days across two weeks.
            let pair = i64::try_from(i / 2).unwrap();
            r.ts_ms = START_MS + pair * 7 + (pair / 20) * DAY_MS / 3;
            // Each record ends at a distinct time, so no two sessions tie on their last.
            r.duration_ms = (i % 2) as u64;
            r.login = g.pick(&[s("alice@example.com"), s("bob@example.com"), None, None]);
            r.tags = if r.login.is_some() {
                Vec::new()
            } else {
                g.pick(&[
                    vec![],
                    vec!["tag:ci".to_owned()],
                    vec!["tag:ci".to_owned(), "tag:prod".to_owned()],
                ])
            };
            r.identity_source = if r.login.is_some() {
                "whois".into()
            } else {
                g.pick(&["loopback".to_owned(), "key".to_owned()])
            };
            r.requested_model = g.pick(&[s("gpt-5"), s("claude-sonnet-4"), None]);
            r.upstream_model = r
                .requested_model
                .as_ref()
                .map(|m| format!("{m}-2025"))
                .filter(|_| g.below(4) != 0);
            r.provider = match r.requested_model.as_deref() {
                Some("gpt-5") => s("openai"),
                Some(_) => s("anthropic"),
                None => None,
            };
            r.status = g.pick(&[200, 200, 200, 429, 500]);
            r.error_class = if g.below(6) == 0 {
                s("upstream_malformed_body")
            } else {
                None
            };
            r.usage_known = g.below(5) != 0;
            r.input_tokens = g.below(10_000);
            r.output_tokens = g.below(2_000);
            r.cache_read_tokens = g.below(3) * g.below(5_000);
            r.cache_write_tokens = g.below(2) * g.below(1_000);
            r.reasoning_tokens = g.below(2) * g.below(500);
            r.cost_usd = (r.usage_known && g.below(3) != 0).then(|| g.below(10_000) as f64 / 7e4);
            // A request without a client's marker is a session of its own, named by its id.
            let single = Some(format!("rq_{}", r.id));
            r.session_id = g.pick(&[
                s("cc_a"),
                s("cc_b"),
                s("cx_c"),
                s("cx_d"),
                None,
                None,
                single.clone(),
                single,
            ]);
            // Sessions of callers without a login, named by their tags or as loopback.
            if r.login.is_none() && g.below(2) == 0 {
                r.session_id = Some(format!("np_{}", joined(&r.tags)));
            }
            r.session_kind = match r.session_id.as_deref() {
                Some(id) if id.starts_with("cc_") => s("claude_code"),
                // A session whose records disagree on its kind: the summary shows the largest.
                Some(_) => g.pick(&[s("codex"), s("codex"), s("agents_sdk"), None]),
                _ => None,
            };
            r.tool_names = match g.below(4) {
                0 => vec!["Bash".into()],
                1 => vec!["Read".into(), "Bash".into()],
                _ => Vec::new(),
            };
            r
        })
        .collect();
    // Records that claim another request's own session (iris never writes such): summed with it.
    for i in (90..n).step_by(170) {
        let claimed = all[i - 80].session_id.clone();
        if claimed.as_deref().is_some_and(|c| c.starts_with("rq_")) {
            all[i].session_id = claimed;
        }
    }
    all
}

fn joined(tags: &[String]) -> String {
    tags.join(",")
}

/// The filters of `q`, the cursor aside.
fn matches(q: &UsageQuery, r: &UsageRecord) -> bool {
    q.login.as_ref().is_none_or(|l| r.login.as_ref() == Some(l))
        && q.tags.as_ref().is_none_or(|t| joined(t) == joined(&r.tags))
        && q.identity_source
            .as_ref()
            .is_none_or(|s| *s == r.identity_source)
        && q.model.as_ref().is_none_or(|m| {
            r.requested_model.as_ref() == Some(m) || r.upstream_model.as_ref() == Some(m)
        })
        && q.provider
            .as_ref()
            .is_none_or(|p| r.provider.as_ref() == Some(p))
        && q.request_id.as_ref().is_none_or(|id| *id == r.id)
        && (!q.with_tools || !r.tool_names.is_empty())
        && q.status.is_none_or(|s| s == r.status)
        && q.since_ms.is_none_or(|s| r.ts_ms >= s)
        && q.until_ms.is_none_or(|u| r.ts_ms < u)
}

fn is_error(r: &UsageRecord) -> bool {
    r.status >= 400 || r.error_class.is_some()
}

fn limit(q: &UsageQuery) -> usize {
    q.limit.min(UsageQuery::MAX_LIMIT) as usize
}

fn model_recent(all: &[UsageRecord], q: &UsageQuery) -> Vec<String> {
    // An unknown cursor selects nothing.
    let cursor = q
        .before_id
        .as_ref()
        .map(|id| all.iter().find(|r| r.id == *id));
    let mut v: Vec<&UsageRecord> = all
        .iter()
        .filter(|r| matches(q, r))
        .filter(|r| match cursor {
            None => true,
            Some(None) => false,
            Some(Some(c)) => (r.ts_ms, &r.id) < (c.ts_ms, &c.id),
        })
        .collect();
    v.sort_by(|a, b| (b.ts_ms, &b.id).cmp(&(a.ts_ms, &a.id)));
    v.into_iter().take(limit(q)).map(|r| r.id.clone()).collect()
}

/// How the dashboard names a caller: the login, else the tags, else `(loopback)` or the
/// identity source.
fn who(login: Option<&String>, tags: &str, source: &str) -> String {
    match (login, tags, source) {
        (Some(l), _, _) => l.clone(),
        (None, "", "loopback") => "(loopback)".into(),
        (None, "", s) => s.to_owned(),
        (None, t, _) => t.to_owned(),
    }
}

fn group_key(r: &UsageRecord, by: GroupBy) -> String {
    let day = chrono::DateTime::from_timestamp_millis(r.ts_ms)
        .unwrap()
        .date_naive();
    match by {
        GroupBy::User => who(r.login.as_ref(), &joined(&r.tags), &r.identity_source),
        GroupBy::Model => r.requested_model.clone().unwrap_or_else(|| "-".into()),
        GroupBy::Provider => r.provider.clone().unwrap_or_else(|| "-".into()),
        GroupBy::Day => day.format("%Y-%m-%d").to_string(),
        GroupBy::Week => {
            let monday = day
                - chrono::Days::new(u64::from(
                    chrono::Datelike::weekday(&day).num_days_from_monday(),
                ));
            monday.format("%Y-%m-%d").to_string()
        }
    }
}

/// The counts and sums of `rs`, as a summary group keyed `key`.
fn totals(key: String, rs: &[&UsageRecord]) -> UsageGroup {
    let sum = |f: fn(&UsageRecord) -> u64| rs.iter().map(|r| f(r)).sum();
    let priced: Vec<f64> = rs.iter().filter_map(|r| r.cost_usd).collect();
    UsageGroup {
        key,
        requests: rs.len() as u64,
        errors: sum(|r| u64::from(is_error(r))),
        // Distinct callers by the name a summary by user gives them (one name a caller).
        users: rs
            .iter()
            .map(|r| group_key(r, GroupBy::User))
            .collect::<BTreeSet<_>>()
            .len() as u64,
        cost_usd: (!priced.is_empty()).then(|| priced.iter().sum()),
        unpriced_requests: sum(|r| u64::from(r.cost_usd.is_none() && r.usage_known)),
        input_tokens: sum(|r| r.input_tokens),
        output_tokens: sum(|r| r.output_tokens),
        cache_read_tokens: sum(|r| r.cache_read_tokens),
        cache_write_tokens: sum(|r| r.cache_write_tokens),
        reasoning_tokens: sum(|r| r.reasoning_tokens),
    }
}

fn model_summary(all: &[UsageRecord], q: &UsageQuery, by: GroupBy) -> Vec<UsageGroup> {
    let mut groups: BTreeMap<String, Vec<&UsageRecord>> = BTreeMap::new();
    for r in all.iter().filter(|r| matches(q, r)) {
        groups.entry(group_key(r, by)).or_default().push(r);
    }
    let mut v: Vec<UsageGroup> = groups
        .into_iter()
        .map(|(key, rs)| totals(key, &rs))
        .collect();
    if !matches!(by, GroupBy::Day | GroupBy::Week) {
        v.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.key.cmp(&b.key)));
    }
    v
}

fn model_sessions(
    all: &[UsageRecord],
    q: &UsageQuery,
    before_last_ms: Option<i64>,
) -> Vec<SessionSummary> {
    let mut by_id: BTreeMap<&str, Vec<&UsageRecord>> = BTreeMap::new();
    for r in all.iter().filter(|r| matches(q, r)) {
        if let Some(id) = &r.session_id {
            by_id.entry(id).or_default().push(r);
        }
    }
    let mut v: Vec<SessionSummary> = by_id
        .into_iter()
        .map(|(id, rs)| {
            // The largest of the values present, as SQL's MAX over a text column.
            let max = |f: fn(&UsageRecord) -> Option<String>| rs.iter().filter_map(|r| f(r)).max();
            let login = max(|r| r.login.clone());
            let tags = max(|r| Some(joined(&r.tags))).unwrap_or_default();
            let source = max(|r| Some(r.identity_source.clone())).unwrap_or_default();
            let who = who(login.as_ref(), &tags, &source);
            let tags: Vec<String> = tags
                .split(',')
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            let first_ms = rs.iter().map(|r| r.ts_ms).min().unwrap();
            let last_ms = rs
                .iter()
                .map(|r| r.ts_ms + i64::try_from(r.duration_ms).unwrap())
                .max()
                .unwrap();
            let mut tools: BTreeMap<String, u64> = BTreeMap::new();
            for name in rs.iter().flat_map(|r| &r.tool_names) {
                *tools.entry(name.clone()).or_default() += 1;
            }
            let mut tools: Vec<ToolCount> = tools
                .into_iter()
                .map(|(name, count)| ToolCount { name, count })
                .collect();
            tools.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
            let t = totals(String::new(), &rs);
            SessionSummary {
                id: id.to_owned(),
                kind: max(|r| r.session_kind.clone()),
                who,
                login,
                tags,
                first_ms,
                last_ms,
                duration_ms: last_ms - first_ms,
                requests: t.requests,
                errors: t.errors,
                models: rs
                    .iter()
                    .filter_map(|r| r.requested_model.clone())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect(),
                input_tokens: t.input_tokens,
                output_tokens: t.output_tokens,
                cache_read_tokens: t.cache_read_tokens,
                cache_write_tokens: t.cache_write_tokens,
                reasoning_tokens: t.reasoning_tokens,
                cost_usd: t.cost_usd,
                unpriced_requests: t.unpriced_requests,
                tools,
            }
        })
        .filter(|s| before_last_ms.is_none_or(|b| s.last_ms < b))
        .collect();
    v.sort_by_key(|s| std::cmp::Reverse(s.last_ms));
    v.truncate(limit(q));
    v
}

fn model_session_records(all: &[UsageRecord], id: &str, q: &UsageQuery) -> Vec<String> {
    let mut v: Vec<&UsageRecord> = all
        .iter()
        .filter(|r| r.session_id.as_deref() == Some(id) && matches(q, r))
        .collect();
    v.sort_by(|a, b| (a.ts_ms, &a.id).cmp(&(b.ts_ms, &b.id)));
    v.into_iter().take(limit(q)).map(|r| r.id.clone()).collect()
}

/// The store's rows equal the model's, their sums of costs to rounding (the order of a float
/// sum is the store's own).
fn agree<T: Clone + PartialEq + std::fmt::Debug>(
    got: &[T],
    want: &[T],
    cost: fn(&mut T) -> &mut Option<f64>,
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?}");
    for (g, w) in got.iter().zip(want) {
        let (mut g, mut w) = (g.clone(), w.clone());
        let (gc, wc) = (cost(&mut g).take(), cost(&mut w).take());
        let close = match (gc, wc) {
            (None, None) => true,
            (Some(g), Some(w)) => (g - w).abs() <= 1e-9 * w.abs().max(1.0),
            _ => false,
        };
        assert!(close, "{what}: cost {gc:?}, want {wc:?}");
        assert_eq!(g, w, "{what}");
    }
}

fn queries(all: &[UsageRecord]) -> Vec<(String, UsageQuery)> {
    let base = UsageQuery {
        limit: UsageQuery::MAX_LIMIT,
        ..UsageQuery::default()
    };
    let mid = all[all.len() / 2].ts_ms;
    let some_id = all[all.len() / 3].id.clone();
    let mut v: Vec<(String, UsageQuery)> = vec![("everything".into(), base.clone())];
    let mut with = |name: &str, f: &dyn Fn(&mut UsageQuery)| {
        let mut q = base.clone();
        f(&mut q);
        v.push((name.to_owned(), q));
    };
    with("login", &|q| q.login = Some("bob@example.com".into()));
    with("unknown login", &|q| {
        q.login = Some("eve@example.com".into())
    });
    with("tags", &|q| {
        q.tags = Some(vec!["tag:ci".into(), "tag:prod".into()]);
    });
    with("identity source", &|q| {
        q.identity_source = Some("loopback".into());
    });
    with("requested model", &|q| q.model = Some("gpt-5".into()));
    with("upstream model", &|q| {
        q.model = Some("claude-sonnet-4-2025".into());
    });
    with("provider", &|q| q.provider = Some("anthropic".into()));
    with("status", &|q| q.status = Some(429));
    with("request id", &|q| q.request_id = Some(some_id.clone()));
    with("with tools", &|q| q.with_tools = true);
    with("since", &|q| q.since_ms = Some(mid));
    with("until", &|q| q.until_ms = Some(mid));
    with("a window on a tie", &|q| {
        q.since_ms = Some(START_MS + 7 * 30);
        q.until_ms = Some(START_MS + 7 * 30 + DAY_MS);
    });
    with("small page", &|q| q.limit = 7);
    with("empty page", &|q| q.limit = 0);
    with("many filters", &|q| {
        q.login = Some("alice@example.com".into());
        q.provider = Some("openai".into());
        q.with_tools = true;
        q.since_ms = Some(START_MS + DAY_MS / 3);
        q.limit = 5;
    });
    v
}

#[tokio::test]
async fn every_usage_query_agrees_with_a_model_of_the_log() {
    let all = records(600);
    let store = SqliteStore::open_temporary().await.unwrap();
    // Out of order, in batches of uneven size: order and grouping come from the queries.
    let mut shuffled = all.clone();
    let mut g = Gen(7);
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, g.below(i as u64 + 1) as usize);
    }
    for chunk in shuffled.chunks(97) {
        store.insert_usage(Arc::new(chunk.to_vec())).await.unwrap();
    }
    let sessions_before = START_MS + 7 * 150;
    let mut nonempty = 0;

    for (name, q) in queries(&all) {
        let got: Vec<String> = store
            .recent_usage(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        let want = model_recent(&all, &q);
        nonempty += usize::from(!want.is_empty());
        assert_eq!(got, want, "recent, {name}");

        for by in [
            GroupBy::User,
            GroupBy::Model,
            GroupBy::Provider,
            GroupBy::Day,
            GroupBy::Week,
        ] {
            let got = store.usage_summary(&q, by).await.unwrap();
            agree(
                &got,
                &model_summary(&all, &q, by),
                |g| &mut g.cost_usd,
                &format!("summary by {by:?}, {name}"),
            );
        }

        for before in [None, Some(sessions_before)] {
            let got = store.sessions(&q, before).await.unwrap();
            agree(
                &got,
                &model_sessions(&all, &q, before),
                |s| &mut s.cost_usd,
                &format!("sessions before {before:?}, {name}"),
            );
        }

        for id in ["cc_a", "cx_d", "none"] {
            let got: Vec<String> = store
                .session_records(id, &q)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(
                got,
                model_session_records(&all, id, &q),
                "records of {id}, {name}"
            );
        }
    }
    // The generated log is varied enough that most filters select something.
    assert!(nonempty >= 14, "{nonempty}");

    // One session summed from its records (the session page) is the same as in the list.
    let every = UsageQuery {
        limit: UsageQuery::MAX_LIMIT,
        ..UsageQuery::default()
    };
    let listed = model_sessions(&all, &every, None);
    assert!(listed.len() > 3);
    for want in &listed {
        let got = iris_store::session_summary(&want.id, &shuffled);
        agree(
            std::slice::from_ref(&got.unwrap()),
            std::slice::from_ref(want),
            |s| &mut s.cost_usd,
            &format!("session {}", want.id),
        );
    }
    assert_eq!(iris_store::session_summary("none", &shuffled), None);
}

#[tokio::test]
async fn paging_by_cursor_under_every_filter_visits_each_record_once() {
    let all = records(300);
    let store = SqliteStore::open_temporary().await.unwrap();
    store.insert_usage(Arc::new(all.clone())).await.unwrap();
    for (name, mut q) in queries(&all) {
        if q.limit == 0 {
            continue;
        }
        let want = model_recent(
            &all,
            &UsageQuery {
                limit: UsageQuery::MAX_LIMIT,
                ..q.clone()
            },
        );
        q.limit = 11;
        let mut seen = Vec::new();
        loop {
            let page = store.recent_usage(&q).await.unwrap();
            assert_eq!(
                page.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
                model_recent(&all, &q),
                "a page of {name}"
            );
            let Some(last) = page.last() else { break };
            q.before_id = Some(last.id.clone());
            seen.extend(page.into_iter().map(|r| r.id));
        }
        assert_eq!(seen, want, "{name}");
    }
}

/// Many sessions, as an OpenAI chat batch job makes (a fingerprint session per request), with
/// long requests among them: the sessions list holds only a few at once and lets the others go
/// (its second passes are tested in `usage_log`'s unit tests, on records in any order; a store
/// offers them newest first), and each page of it, followed by its cursor, is the model's.
#[tokio::test]
async fn paging_a_list_of_many_sessions_agrees_with_the_model() {
    let mut all = records(900);
    let mut g = Gen(11);
    for r in all.iter_mut().skip(1).step_by(2) {
        r.session_id = Some(format!("fp_{:03}", g.below(300)));
        r.session_kind = None;
        r.duration_ms = g.pick(&[0, 0, 3, 40, 4_000, 90_000, 2 * DAY_MS as u64]);
    }
    let store = SqliteStore::open_temporary().await.unwrap();
    let mut shuffled = all.clone();
    for i in (1..shuffled.len()).rev() {
        shuffled.swap(i, g.below(i as u64 + 1) as usize);
    }
    for chunk in shuffled.chunks(61) {
        store.insert_usage(Arc::new(chunk.to_vec())).await.unwrap();
    }
    let mid = all[all.len() / 2].ts_ms;
    let filters = [
        ("everything", UsageQuery::default()),
        (
            "login",
            UsageQuery {
                login: Some("bob@example.com".into()),
                ..UsageQuery::default()
            },
        ),
        (
            "since",
            UsageQuery {
                since_ms: Some(mid),
                ..UsageQuery::default()
            },
        ),
    ];
    for (name, q) in filters {
        for limit in [3, 7, 150] {
            let q = UsageQuery { limit, ..q.clone() };
            let mut before = None;
            let mut listed = 0;
            loop {
                let page = store.sessions(&q, before).await.unwrap();
                agree(
                    &page,
                    &model_sessions(&all, &q, before),
                    |s| &mut s.cost_usd,
                    &format!("{name}, limit {limit}, before {before:?}"),
                );
                listed += page.len();
                match page.last() {
                    Some(last) if page.len() == limit as usize => before = Some(last.last_ms),
                    _ => break,
                }
            }
            assert!(listed > 10, "{name}, limit {limit}: {listed}");
        }
    }
}
