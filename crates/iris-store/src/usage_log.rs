//! The usage log in blocks: how records are stored, and every query's meaning, in Rust.
//!
//! Written one SQLite row each, a usage record cost the store about 20,000 instructions: the
//! row of 36 columns and five B-trees (the table, the `id` key, three secondary indexes), on a
//! background thread that shares the machine's cores with the request path. The writer hands the
//! store a batch at a time, so a batch is stored the way captures are (`blocks.rs`): its records
//! encoded field by field, compressed with zstd, one row of `usage_blocks` per block, and one row
//! of `usage_block_keys` per distinct login and session in it (docs/performance.md, session 16).
//!
//! A block holds the records of one batch whose `ts_ms` fall in one bucket of [`SPAN_MS`], so a
//! block's `ts_max - ts_min < SPAN_MS`: the blocks that may hold a time are found through one
//! index on `ts_max`, and so is a record by its id, since an id is a UUIDv7 carrying the
//! record's `ts_ms` ([`crate::new_record_id_and_time`]). A record whose id does not carry its
//! time (records of other stores, tests) gets an `i:` key instead.
//!
//! Reading is one loop for every query: the blocks a query's time range and login (or session)
//! select, decoded, filtered by [`Filter`], then listed ([`Page`]), summed by group
//! ([`Summary`]) or by session ([`list_sessions`]). The functions here are the queries' meaning; the
//! model-based test `tests/usage_queries.rs` holds them to an independent model.
//!
//! The format is private to the store: a version tag, then each record as a length, then its
//! fields (texts length-prefixed). Decoding checks every length; a damaged block is an error,
//! never a panic.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher as _;

use crate::wire::{self, Reader};
use crate::{GroupBy, SessionSummary, StoreError, ToolCount, UsageGroup, UsageQuery, UsageRecord};

/// The time span of one block's bucket: ten minutes. A stream's record reaches the writer when
/// it ends, minutes after its `ts_ms` (its start), so a batch spans a few buckets at most; a
/// point lookup reads the blocks of one bucket.
pub(crate) const SPAN_MS: i64 = 10 * 60 * 1000;

/// The first bytes of every (uncompressed) block: the format's name and version.
const MAGIC: &[u8; 4] = b"IUB1";

/// zstd level 1, as for captures: records of one batch are alike, and level 1 is the fastest
/// level that finds that.
const LEVEL: i32 = 1;

/// The table the blocks are stored in (named in errors).
const TABLE: &str = "usage_blocks";

/// What an oversized field is called in errors.
const FIELD: &str = "a usage record field";

/// Key prefixes in `usage_block_keys`.
pub(crate) const LOGIN_KEY: &str = "l:";
pub(crate) const SESSION_KEY: &str = "s:";
pub(crate) const ID_KEY: &str = "i:";

/// The prefix of a single request's session id, followed by the request's id.
const SINGLE_SESSION: &str = "rq_";

/// Flags of a record.
const STREAMING: u8 = 1;
const USAGE_KNOWN: u8 = 2;
const HAS_TTFB: u8 = 4;
const HAS_COST: u8 = 8;
const HAS_CAPTURE_BATCH: u8 = 16;

/// One encoded block, ready for its row.
#[derive(Debug)]
pub(crate) struct Block {
    /// A hash of the block's records (their ids and times): a batch written again (a retry
    /// after a commit whose answer was lost) makes the same blocks, which are then skipped.
    pub batch: i64,
    pub ts_min: i64,
    pub ts_max: i64,
    pub records: i64,
    /// Records that name a tool (what retention's `tools` purge looks for).
    pub tools: i64,
    pub data: Vec<u8>,
    /// Its rows in `usage_block_keys`.
    pub keys: Vec<String>,
}

/// The bucket of a time.
fn bucket(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(SPAN_MS)
}

/// Cut a batch into its blocks: one per bucket, records in batch order.
pub(crate) fn encode_batch(batch: &[UsageRecord]) -> Result<Vec<Block>, StoreError> {
    let mut buckets: Vec<(i64, Vec<&UsageRecord>)> = Vec::new();
    for r in batch {
        let b = bucket(r.ts_ms);
        match buckets.iter_mut().find(|(k, _)| *k == b) {
            Some((_, rs)) => rs.push(r),
            None => buckets.push((b, vec![r])),
        }
    }
    buckets.iter().map(|(_, rs)| encode_block(rs)).collect()
}

/// One block of records (all of one bucket).
pub(crate) fn encode_block(rs: &[&UsageRecord]) -> Result<Block, StoreError> {
    let mut hash = Fnv::new();
    let (mut ts_min, mut ts_max) = (i64::MAX, i64::MIN);
    let mut tools = 0;
    let mut keyed = Keyed::default();
    let mut id_keys = Vec::new();
    let data = wire::encode_block(wire::Kind::Usage, "a usage block", |raw| {
        raw.reserve(MAGIC.len() + rs.len() * 384);
        raw.extend_from_slice(MAGIC);
        for &r in rs {
            crate::pace::tick();
            put_record(raw, r)?;
            hash.write(r.id.as_bytes());
            hash.write(&r.ts_ms.to_le_bytes());
            ts_min = ts_min.min(r.ts_ms);
            ts_max = ts_max.max(r.ts_ms);
            tools += i64::from(!r.tool_names.is_empty());
            if let Some(login) = &r.login {
                keyed.add(LOGIN_KEY, login);
            }
            if crate::record_id_time(&r.id) != Some(r.ts_ms) {
                id_keys.push(r.id.as_str());
            }
            if let Some(session) = &r.session_id {
                // A single request's session is found through its id.
                if session.strip_prefix(SINGLE_SESSION) != Some(r.id.as_str()) {
                    keyed.add(SESSION_KEY, session);
                }
            }
        }
        Ok(())
    })?;
    let mut keys: Vec<String> = keyed.list.iter().map(|(p, v)| format!("{p}{v}")).collect();
    keys.extend(id_keys.into_iter().map(|id| format!("{ID_KEY}{id}")));
    Ok(Block {
        batch: hash.finish(),
        ts_min,
        ts_max,
        records: i64::try_from(rs.len()).unwrap_or(i64::MAX),
        tools,
        data,
        keys,
    })
}

/// The distinct keys of a block, in the order first met. Usually a handful (one login, a few
/// sessions), where a linear search beats hashing; a batch of many conversations has one
/// session per record, and a linear search would then make the batch quadratic.
#[derive(Default)]
struct Keyed<'r> {
    list: Vec<(&'static str, &'r str)>,
    /// Set once `list` outgrows a linear search.
    set: Option<std::collections::HashSet<(&'static str, &'r str)>>,
}

impl<'r> Keyed<'r> {
    /// Beyond this many keys, they are looked up in a hash set.
    const LINEAR: usize = 16;

    fn add(&mut self, prefix: &'static str, value: &'r str) {
        let key = (prefix, value);
        let new = match &mut self.set {
            Some(set) => set.insert(key),
            None => {
                let new = !self.list.contains(&key);
                if new && self.list.len() == Self::LINEAR {
                    self.set = Some(self.list.iter().copied().chain([key]).collect());
                }
                new
            }
        };
        if new {
            self.list.push(key);
        }
    }
}

/// FNV-1a, 64 bits: a stable hash (std's may change between releases) of a block's records.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> i64 {
        i64::from_le_bytes(self.0.to_le_bytes())
    }
}

/// The compression context of usage blocks (kept between blocks; see `wire::Scratch`).
pub(crate) fn context() -> std::io::Result<zstd::bulk::Compressor<'static>> {
    zstd::bulk::Compressor::new(LEVEL)
}

/// Tags are kept comma-joined (as the SQL rows kept them); refuse tags that would not read
/// back the same.
pub(crate) fn join_tags(tags: &[String]) -> Result<String, StoreError> {
    if let Some(bad) = tags.iter().find(|t| t.is_empty() || t.contains(',')) {
        return Err(StoreError::InvalidRecord(format!(
            "tag {bad:?} cannot be stored: tags must be non-empty and contain no ','"
        )));
    }
    Ok(tags.join(","))
}

pub(crate) fn split_tags(joined: &str) -> Vec<String> {
    if joined.is_empty() {
        Vec::new()
    } else {
        joined.split(',').map(str::to_owned).collect()
    }
}

/// Counters are kept as signed 64-bit values, as in the SQL rows before: saturated, not
/// wrapped.
fn saturate(v: u64) -> u64 {
    v.min(i64::MAX as u64)
}

fn put_record(out: &mut Vec<u8>, r: &UsageRecord) -> Result<(), StoreError> {
    let at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    wire::put_text(out, Some(&r.id), FIELD)?;
    wire::put_text(out, Some(&r.request_id), FIELD)?;
    out.extend_from_slice(&r.ts_ms.to_le_bytes());
    for t in [
        &r.login,
        &r.display_name,
        &r.node,
        &r.node_id,
        &r.key_id,
        &r.requested_model,
        &r.provider,
        &r.upstream_model,
        &r.error_class,
        &r.user_agent,
        &r.session_id,
        &r.session_kind,
        &r.priced_as,
    ] {
        wire::put_text(out, t.as_deref(), FIELD)?;
    }
    if r.tags.is_empty() {
        wire::put_text(out, Some(""), FIELD)?;
    } else {
        wire::put_text(out, Some(&join_tags(&r.tags)?), FIELD)?;
    }
    for t in [&r.identity_source, &r.api_family, &r.method, &r.path] {
        wire::put_text(out, Some(t), FIELD)?;
    }
    wire::put_len(out, r.tool_names.len(), FIELD)?;
    for t in &r.tool_names {
        wire::put_text(out, Some(t), FIELD)?;
    }
    out.extend_from_slice(&r.status.to_le_bytes());
    let cost = r.cost_usd.filter(|c| c.is_finite());
    let flags = (if r.streaming { STREAMING } else { 0 })
        | (if r.usage_known { USAGE_KNOWN } else { 0 })
        | (if r.ttfb_ms.is_some() { HAS_TTFB } else { 0 })
        | (if cost.is_some() { HAS_COST } else { 0 })
        | (if r.capture_batch.is_some() {
            HAS_CAPTURE_BATCH
        } else {
            0
        });
    out.push(flags);
    for n in [
        r.input_tokens,
        r.output_tokens,
        r.cache_read_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
        r.duration_ms,
        r.bytes_in,
        r.bytes_out,
    ] {
        out.extend_from_slice(&saturate(n).to_le_bytes());
    }
    if let Some(t) = r.ttfb_ms {
        out.extend_from_slice(&saturate(t).to_le_bytes());
    }
    if let Some(c) = cost {
        out.extend_from_slice(&c.to_le_bytes());
    }
    if let Some(b) = r.capture_batch {
        out.extend_from_slice(&b.to_le_bytes());
    }
    let len = wire::len32(out.len() - at - 4, "a usage record")?;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Every record of a stored block, in the order they were written.
pub(crate) fn decode(block: &[u8]) -> Result<Vec<UsageRecord>, StoreError> {
    let raw = wire::decompress(block, TABLE)?;
    let mut out = Vec::new();
    for body in bodies(&raw)? {
        out.push(record(body?)?);
    }
    Ok(out)
}

/// The first record of a stored block with this id; only that record is decoded.
pub(crate) fn find(block: &[u8], id: &str) -> Result<Option<UsageRecord>, StoreError> {
    let raw = wire::decompress(block, TABLE)?;
    for body in bodies(&raw)? {
        let body = body?;
        if Reader::of(body, TABLE).bytes()? == Some(id.as_bytes()) {
            return record(body).map(Some);
        }
    }
    Ok(None)
}

/// Whether two stored blocks hold the same records, by id and time, in the same order (a
/// damaged block holds none).
pub(crate) fn same_records(a: &[u8], b: &[u8]) -> bool {
    let keys = |block: &[u8]| -> Result<Vec<(Vec<u8>, i64)>, StoreError> {
        let raw = wire::decompress(block, TABLE)?;
        bodies(&raw)?
            .map(|body| View::of(body?).map(|v| (v.id.to_vec(), v.ts_ms)))
            .collect()
    };
    matches!((keys(a), keys(b)), (Ok(a), Ok(b)) if a == b)
}

/// The encoded records of an uncompressed block.
fn bodies(raw: &[u8]) -> Result<impl Iterator<Item = Result<&[u8], StoreError>>, StoreError> {
    let mut outer = Reader::after(raw, MAGIC, TABLE)?;
    Ok(std::iter::from_fn(move || {
        if outer.at_end() {
            return None;
        }
        let body = outer.u32().and_then(|len| outer.take(len as usize));
        if body.is_err() {
            outer.stop();
        }
        Some(body)
    }))
}

/// One encoded record.
fn record(body: &[u8]) -> Result<UsageRecord, StoreError> {
    let mut r = Reader::of(body, TABLE);
    let id = r.required("an id")?;
    let request_id = r.required("a request id")?;
    let ts_ms = r.i64()?;
    let mut texts: [Option<String>; 13] = Default::default();
    for t in &mut texts {
        *t = r.text()?;
    }
    let [
        login,
        display_name,
        node,
        node_id,
        key_id,
        requested_model,
        provider,
        upstream_model,
        error_class,
        user_agent,
        session_id,
        session_kind,
        priced_as,
    ] = texts;
    let tags = split_tags(&r.required("tags")?);
    let identity_source = r.required("an identity source")?;
    let api_family = r.required("an API family")?;
    let method = r.required("a method")?;
    let path = r.required("a path")?;
    let n_tools = r.u32()?;
    let mut tool_names = Vec::new();
    for _ in 0..n_tools {
        tool_names.push(r.required("a tool name")?);
    }
    let status = u16::from_le_bytes(r.array()?);
    let [flags] = r.array::<1>()?;
    let mut n = [0u64; 8];
    for v in &mut n {
        *v = r.u64()?;
    }
    let ttfb_ms = if flags & HAS_TTFB != 0 {
        Some(r.u64()?)
    } else {
        None
    };
    let cost_usd = if flags & HAS_COST != 0 {
        Some(f64::from_le_bytes(r.array()?))
    } else {
        None
    };
    let capture_batch = if flags & HAS_CAPTURE_BATCH != 0 {
        Some(r.i64()?)
    } else {
        None
    };
    if !r.at_end() {
        return Err(r.corrupt("a usage record longer than its fields"));
    }
    let [
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        reasoning_tokens,
        duration_ms,
        bytes_in,
        bytes_out,
    ] = n;
    Ok(UsageRecord {
        id,
        ts_ms,
        request_id,
        login,
        display_name,
        tags,
        node,
        node_id,
        identity_source,
        key_id,
        api_family,
        method,
        path,
        requested_model,
        provider,
        upstream_model,
        streaming: flags & STREAMING != 0,
        status,
        error_class,
        input_tokens,
        output_tokens,
        cache_read_tokens,
        cache_write_tokens,
        reasoning_tokens,
        usage_known: flags & USAGE_KNOWN != 0,
        ttfb_ms,
        duration_ms,
        bytes_in,
        bytes_out,
        user_agent,
        session_id,
        session_kind,
        cost_usd,
        priced_as,
        tool_names,
        capture_batch,
    })
}

// ---- The queries' meaning ----

/// The records a [`UsageQuery`] selects (all its filters but the cursor and the limit), and
/// optionally only those of one session. It is tested on a record's fields where they lie in
/// the block ([`View`]): a record is decoded only when it matches.
pub(crate) struct Filter<'a> {
    q: &'a UsageQuery,
    tags: Option<String>,
    session_id: Option<&'a str>,
}

impl<'a> Filter<'a> {
    /// Fails only for a tag filter no stored record can have (tags with `,`).
    pub(crate) fn new(q: &'a UsageQuery) -> Result<Self, StoreError> {
        let tags = q.tags.as_deref().map(join_tags).transpose()?;
        Ok(Filter {
            q,
            tags,
            session_id: None,
        })
    }

    /// Only the records of this session.
    pub(crate) fn in_session(self, session_id: &'a str) -> Self {
        Filter {
            session_id: Some(session_id),
            ..self
        }
    }

    fn matches(&self, v: &View<'_>) -> bool {
        let q = self.q;
        let eq = |want: &Option<String>, got: Option<&[u8]>| {
            want.as_ref().is_none_or(|w| got == Some(w.as_bytes()))
        };
        eq(&q.login, v.login)
            && self.tags.as_ref().is_none_or(|t| v.tags == t.as_bytes())
            && eq(&q.identity_source, Some(v.identity_source))
            && q.model.as_ref().is_none_or(|m| {
                v.requested_model == Some(m.as_bytes()) || v.upstream_model == Some(m.as_bytes())
            })
            && eq(&q.provider, v.provider)
            && eq(&q.request_id, Some(v.id))
            && (!q.with_tools || v.tools > 0)
            && q.status.is_none_or(|s| v.status == s)
            && q.since_ms.is_none_or(|s| v.ts_ms >= s)
            && q.until_ms.is_none_or(|u| v.ts_ms < u)
            && self
                .session_id
                .is_none_or(|id| v.session_id == Some(id.as_bytes()))
    }
}

/// The records of a stored block that `filter` selects, decoded, in the order they were
/// written.
pub(crate) fn each_match(
    block: &[u8],
    filter: &Filter<'_>,
    mut f: impl FnMut(UsageRecord),
) -> Result<(), StoreError> {
    let raw = wire::decompress(block, TABLE)?;
    for body in bodies(&raw)? {
        let body = body?;
        if filter.matches(&View::of(body)?) {
            f(record(body)?);
        }
    }
    Ok(())
}

/// The fields a [`Filter`] looks at, borrowed from an encoded record.
struct View<'a> {
    id: &'a [u8],
    ts_ms: i64,
    login: Option<&'a [u8]>,
    requested_model: Option<&'a [u8]>,
    provider: Option<&'a [u8]>,
    upstream_model: Option<&'a [u8]>,
    session_id: Option<&'a [u8]>,
    tags: &'a [u8],
    identity_source: &'a [u8],
    tools: u32,
    status: u16,
}

impl<'a> View<'a> {
    /// Walks the record's fields in the order [`put_record`] wrote them.
    fn of(body: &'a [u8]) -> Result<View<'a>, StoreError> {
        let mut r = Reader::of(body, TABLE);
        let id = r.required_bytes("an id")?;
        r.bytes()?;
        let ts_ms = r.i64()?;
        let mut texts: [Option<&'a [u8]>; 13] = [None; 13];
        for t in &mut texts {
            *t = r.bytes()?;
        }
        let tags = r.required_bytes("tags")?;
        let identity_source = r.required_bytes("an identity source")?;
        for _ in 0..3 {
            r.bytes()?;
        }
        let tools = r.u32()?;
        for _ in 0..tools {
            r.bytes()?;
        }
        let status = u16::from_le_bytes(r.array()?);
        Ok(View {
            id,
            ts_ms,
            login: texts[0],
            requested_model: texts[5],
            provider: texts[6],
            upstream_model: texts[7],
            session_id: texts[10],
            tags,
            identity_source,
            tools,
            status,
        })
    }
}

/// A page of records in `(ts_ms, id)` order, newest first (the log, below its cursor if any) or
/// oldest first (a session), at most the query's limit. It keeps twice the page at most while
/// records are offered in any order.
pub(crate) struct Page {
    limit: usize,
    newest_first: bool,
    below: Option<(i64, String)>,
    found: Vec<UsageRecord>,
}

impl Page {
    /// Newest first, only records before `below` (the cursor's time and id).
    pub(crate) fn newest(q: &UsageQuery, below: Option<(i64, String)>) -> Page {
        Page {
            limit: q.limit.min(UsageQuery::MAX_LIMIT) as usize,
            newest_first: true,
            below,
            found: Vec::new(),
        }
    }

    /// Oldest first.
    pub(crate) fn oldest(q: &UsageQuery) -> Page {
        Page {
            newest_first: false,
            ..Page::newest(q, None)
        }
    }

    pub(crate) fn offer(&mut self, r: UsageRecord) {
        if self
            .below
            .as_ref()
            .is_none_or(|(ts, id)| (r.ts_ms, r.id.as_str()) < (*ts, id.as_str()))
        {
            self.found.push(r);
            if self.found.len() >= 2 * self.limit.max(64) {
                self.trim();
            }
        }
    }

    fn trim(&mut self) {
        let newest_first = self.newest_first;
        self.found.sort_unstable_by(|a, b| {
            let order = (a.ts_ms, &a.id).cmp(&(b.ts_ms, &b.id));
            if newest_first { order.reverse() } else { order }
        });
        self.found.truncate(self.limit);
    }

    /// Only for a newest-first page: whether it is complete before a block whose newest record is
    /// `ts_max` (blocks come newest `ts_max` first): it is full and every record left is older
    /// than its last.
    pub(crate) fn complete_before(&mut self, ts_max: i64) -> bool {
        if self.found.len() < self.limit {
            return false;
        }
        self.trim();
        self.found.last().is_some_and(|r| r.ts_ms > ts_max)
    }

    pub(crate) fn finish(mut self) -> Vec<UsageRecord> {
        self.trim();
        self.found
    }
}

fn is_error(r: &UsageRecord) -> bool {
    r.status >= 400 || r.error_class.is_some()
}

/// The sums every summary group and session has.
#[derive(Default)]
struct Totals {
    requests: u64,
    errors: u64,
    tokens: [u64; 5],
    cost: Option<f64>,
    unpriced: u64,
}

impl Totals {
    fn add(&mut self, r: &UsageRecord) {
        self.requests += 1;
        self.errors += u64::from(is_error(r));
        for (sum, n) in self.tokens.iter_mut().zip([
            r.input_tokens,
            r.output_tokens,
            r.cache_read_tokens,
            r.cache_write_tokens,
            r.reasoning_tokens,
        ]) {
            *sum = sum.saturating_add(n);
        }
        match r.cost_usd {
            Some(c) => *self.cost.get_or_insert(0.0) += c,
            None => self.unpriced += u64::from(r.usage_known),
        }
    }
}

/// A caller's name in summaries by user: the login, else the joined tags, else `(loopback)`
/// or the identity source.
fn who(login: Option<&str>, tags: &str, source: &str) -> String {
    match (login, tags, source) {
        (Some(l), _, _) => l.to_owned(),
        (None, "", "loopback") => "(loopback)".to_owned(),
        (None, "", s) => s.to_owned(),
        (None, t, _) => t.to_owned(),
    }
}

/// A summary of the log by one grouping.
pub(crate) struct Summary {
    by: GroupBy,
    groups: HashMap<String, (Totals, HashSet<String>)>,
}

impl Summary {
    pub(crate) fn new(by: GroupBy) -> Summary {
        Summary {
            by,
            groups: HashMap::new(),
        }
    }

    pub(crate) fn add(&mut self, r: &UsageRecord) {
        let tags = r.tags.join(",");
        let key = match self.by {
            GroupBy::User => who(r.login.as_deref(), &tags, &r.identity_source),
            GroupBy::Model => r.requested_model.clone().unwrap_or_else(|| "-".into()),
            GroupBy::Provider => r.provider.clone().unwrap_or_else(|| "-".into()),
            GroupBy::Day => day(r.ts_ms).map(|d| d.to_string()).unwrap_or_default(),
            GroupBy::Week => day(r.ts_ms)
                .map(|d| {
                    let back = chrono::Datelike::weekday(&d).num_days_from_monday();
                    // Out of the calendar's range: no key, as SQLite's NULL.
                    d.checked_sub_days(chrono::Days::new(u64::from(back)))
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                })
                .unwrap_or_default(),
        };
        let (totals, users) = self.groups.entry(key).or_default();
        totals.add(r);
        // Callers are told apart by login, else tags, else identity source.
        let user = match (&r.login, tags.is_empty()) {
            (Some(l), _) => l.clone(),
            (None, false) => tags,
            (None, true) => r.identity_source.clone(),
        };
        users.insert(user);
    }

    /// The groups: by day and week in time order, else the busiest first (then by key).
    pub(crate) fn finish(self) -> Vec<UsageGroup> {
        let mut v: Vec<UsageGroup> = self
            .groups
            .into_iter()
            .map(|(key, (t, users))| UsageGroup {
                key,
                requests: t.requests,
                errors: t.errors,
                users: users.len() as u64,
                cost_usd: t.cost,
                unpriced_requests: t.unpriced,
                input_tokens: t.tokens[0],
                output_tokens: t.tokens[1],
                cache_read_tokens: t.tokens[2],
                cache_write_tokens: t.tokens[3],
                reasoning_tokens: t.tokens[4],
            })
            .collect();
        match self.by {
            GroupBy::Day | GroupBy::Week => v.sort_unstable_by(|a, b| a.key.cmp(&b.key)),
            _ => v.sort_unstable_by(|a, b| b.requests.cmp(&a.requests).then(a.key.cmp(&b.key))),
        }
        v
    }
}

/// The UTC date of a time (whole seconds, as SQLite's `unixepoch` modifier took them), within
/// the years SQLite's date functions cover (0000–9999; outside them it gave NULL).
fn day(ts_ms: i64) -> Option<chrono::NaiveDate> {
    chrono::DateTime::from_timestamp(ts_ms / 1000, 0)
        .map(|t| t.date_naive())
        .filter(|d| (0..=9999).contains(&chrono::Datelike::year(d)))
}

/// One session being summed.
struct SessionAcc {
    kind: Option<String>,
    login: Option<String>,
    tags: String,
    source: Option<String>,
    first_ms: i64,
    last_ms: i64,
    totals: Totals,
    models: BTreeSet<String>,
    tools: BTreeMap<String, u64>,
}

impl SessionAcc {
    /// A session's sums from its first record offered.
    fn new(r: &UsageRecord) -> SessionAcc {
        let mut s = SessionAcc {
            kind: None,
            login: None,
            tags: String::new(),
            source: None,
            first_ms: r.ts_ms,
            last_ms: end_of(r),
            totals: Totals::default(),
            models: BTreeSet::new(),
            tools: BTreeMap::new(),
        };
        s.add(r);
        s
    }

    fn add(&mut self, r: &UsageRecord) {
        self.first_ms = self.first_ms.min(r.ts_ms);
        self.last_ms = self.last_ms.max(end_of(r));
        keep_max(&mut self.kind, r.session_kind.as_ref());
        keep_max(&mut self.login, r.login.as_ref());
        keep_max(&mut self.source, Some(&r.identity_source));
        let tags = r.tags.join(",");
        if tags > self.tags {
            self.tags = tags;
        }
        self.totals.add(r);
        if let Some(m) = &r.requested_model
            && !self.models.contains(m)
        {
            self.models.insert(m.clone());
        }
        for t in &r.tool_names {
            *self.tools.entry(t.clone()).or_default() += 1;
        }
    }

    fn summary(self, id: String) -> SessionSummary {
        let source = self.source.unwrap_or_default();
        let mut tools: Vec<ToolCount> = self
            .tools
            .into_iter()
            .map(|(name, count)| ToolCount { name, count })
            .collect();
        tools.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
        let t = self.totals;
        SessionSummary {
            id,
            kind: self.kind,
            who: who(self.login.as_deref(), &self.tags, &source),
            tags: split_tags(&self.tags),
            login: self.login,
            first_ms: self.first_ms,
            last_ms: self.last_ms,
            duration_ms: self.last_ms.saturating_sub(self.first_ms),
            requests: t.requests,
            errors: t.errors,
            models: self
                .models
                .into_iter()
                .filter(|m| !m.is_empty() && m != "-")
                .collect(),
            input_tokens: t.tokens[0],
            output_tokens: t.tokens[1],
            cache_read_tokens: t.tokens[2],
            cache_write_tokens: t.tokens[3],
            reasoning_tokens: t.tokens[4],
            cost_usd: t.cost,
            unpriced_requests: t.unpriced,
            tools,
        }
    }
}

/// Replace `slot` by `v` when `v` is larger: a text column's `MAX`.
fn keep_max(slot: &mut Option<String>, v: Option<&String>) {
    if let Some(v) = v
        && slot.as_ref().is_none_or(|s| v > s)
    {
        *slot = Some(v.clone());
    }
}

/// The end of a record: its start plus its duration.
fn end_of(r: &UsageRecord) -> i64 {
    r.ts_ms
        .saturating_add(i64::try_from(r.duration_ms).unwrap_or(i64::MAX))
}

/// The fewest sessions a ranking holds before it lets the lowest go (see [`Ranking`]).
const MIN_ROOM: usize = 64;

/// The sessions of the records `scan` offers, the most recently active first (then by id), at
/// most `limit`, of those last active before `before_last_ms` (if given), each summed over all
/// its records offered.
///
/// `scan` offers the records of the query, in any order, each time it is called: once; again
/// when a cursor made the first ranking unsound (see [`Ranking`]); and once more when a listed
/// session must be summed again. Memory follows `limit`, not the log: at most
/// `2 × max(limit, 64)` sessions are summed at once, plus, with `before_last_ms`, ~16 bytes for
/// each session active at or after it.
pub(crate) fn list_sessions(
    before_last_ms: Option<i64>,
    limit: u32,
    scan: impl FnMut(&mut dyn FnMut(&UsageRecord)) -> Result<(), StoreError>,
) -> Result<Vec<SessionSummary>, StoreError> {
    list_sessions_with_room(before_last_ms, limit, MIN_ROOM, scan)
}

fn list_sessions_with_room(
    before_last_ms: Option<i64>,
    limit: u32,
    min_room: usize,
    mut scan: impl FnMut(&mut dyn FnMut(&UsageRecord)) -> Result<(), StoreError>,
) -> Result<Vec<SessionSummary>, StoreError> {
    let limit = limit.min(UsageQuery::MAX_LIMIT) as usize;
    if limit == 0 {
        return Ok(Vec::new());
    }
    let room = limit.max(min_room);
    let mut ranking = Ranking::new(before_last_ms, limit, room, Excluded::default());
    scan(&mut |r| ranking.add(r))?;
    if ranking.unsound {
        // Every session active too late is known now: rank again, leaving them out from the
        // start.
        ranking = Ranking::new(before_last_ms, limit, room, ranking.excluded);
        scan(&mut |r| ranking.add(r))?;
    }
    let mut top = ranking.finish();
    // Sessions let in after some of their records were left out: summed again, alone.
    let again: HashMap<String, usize> = top
        .iter()
        .enumerate()
        .filter(|(_, (_, c))| !c.complete)
        .map(|(i, (id, _))| (id.clone(), i))
        .collect();
    if !again.is_empty() {
        let mut fresh: Vec<Option<SessionAcc>> = (0..top.len()).map(|_| None).collect();
        scan(&mut |r| {
            if let Some(&i) = r.session_id.as_ref().and_then(|id| again.get(id)) {
                match &mut fresh[i] {
                    Some(s) => s.add(r),
                    None => fresh[i] = Some(SessionAcc::new(r)),
                }
            }
        })?;
        for (i, s) in fresh.into_iter().enumerate() {
            if let Some(s) = s {
                top[i].1.acc = s;
            }
        }
    }
    Ok(top.into_iter().map(|(id, c)| c.acc.summary(id)).collect())
}

/// A session that may be listed.
struct Candidate {
    acc: SessionAcc,
    /// Every record of the session offered so far is in `acc`.
    complete: bool,
}

/// The most recently active sessions of the records offered, found in one pass with bounded
/// memory.
///
/// A session's rank is its last activity, the latest end of its records: a maximum, so the top
/// `limit` sessions are those holding the latest ends. Sessions are summed as their records
/// come until `2 × room` are held; then all but the top `limit` are let go and the `limit`-th's
/// last activity becomes the floor. A record below the floor of a session not held is left
/// out: `limit` sessions are already more recent than it could be. The floor only rises,
/// since held sessions only grow more recent.
///
/// A session let in once some of its records were left out (let go, then let in again by a
/// later record; or first met above the floor after records below it) has its rank right but
/// its sums short. Those left out are remembered in a Bloom filter ([`LeftOut`]), so a session
/// let in that was surely never left out is known complete; the others, if listed, are summed
/// again in a second pass.
///
/// With `before_last_ms`, a session with a record ending at or after it is not listed at all:
/// it goes into `excluded`, and it is dropped if held. If it was held once the floor was set,
/// the floor may stand on too few sessions (it rises only while no held session is dropped), so
/// the ranking is `unsound` and is done again with every excluded session known from the start.
struct Ranking {
    held: HashMap<String, Candidate>,
    floor: Option<i64>,
    left_out: LeftOut,
    excluded: Excluded,
    before_last_ms: Option<i64>,
    limit: usize,
    room: usize,
    unsound: bool,
    /// The most sessions held at once (tests).
    peak: usize,
}

impl Ranking {
    fn new(before_last_ms: Option<i64>, limit: usize, room: usize, excluded: Excluded) -> Ranking {
        Ranking {
            held: HashMap::new(),
            floor: None,
            left_out: LeftOut::default(),
            excluded,
            before_last_ms,
            limit,
            room,
            unsound: false,
            peak: 0,
        }
    }

    /// Records without a session are skipped.
    fn add(&mut self, r: &UsageRecord) {
        let Some(id) = &r.session_id else { return };
        let end = end_of(r);
        if let Some(before) = self.before_last_ms {
            if end >= before {
                self.excluded.insert(id);
                if self.held.remove(id.as_str()).is_some() && self.floor.is_some() {
                    self.unsound = true;
                }
                return;
            }
            if self.excluded.holds(id) {
                return;
            }
        }
        if let Some(c) = self.held.get_mut(id.as_str()) {
            c.acc.add(r);
            return;
        }
        if self.floor.is_some_and(|floor| end < floor) {
            self.left_out.insert(id);
            return;
        }
        let complete = !self.left_out.may_hold(id);
        self.held.insert(
            id.clone(),
            Candidate {
                acc: SessionAcc::new(r),
                complete,
            },
        );
        self.peak = self.peak.max(self.held.len());
        if self.held.len() >= 2 * self.room {
            self.trim();
        }
    }

    /// Keep the top `limit` sessions, let the others go, and raise the floor.
    fn trim(&mut self) {
        let mut ranks: Vec<(i64, &str)> = self
            .held
            .iter()
            .map(|(id, c)| (c.acc.last_ms, id.as_str()))
            .collect();
        let (_, &mut (floor, last_id), _) =
            ranks.select_nth_unstable_by(self.limit - 1, |a, b| by_rank(*a, *b));
        let last_id = last_id.to_owned();
        drop(ranks);
        let left_out = &mut self.left_out;
        self.held.retain(|id, c| {
            let keep = by_rank((c.acc.last_ms, id.as_str()), (floor, &last_id)).is_le();
            if !keep {
                left_out.insert(id);
            }
            keep
        });
        self.floor = Some(floor);
    }

    /// The top `limit` sessions, by rank.
    fn finish(self) -> Vec<(String, Candidate)> {
        let mut v: Vec<(String, Candidate)> = self.held.into_iter().collect();
        v.sort_unstable_by(|a, b| by_rank((a.1.acc.last_ms, &a.0), (b.1.acc.last_ms, &b.0)));
        v.truncate(self.limit);
        v
    }
}

/// The order sessions are listed in: the most recently active first, then by id.
fn by_rank(a: (i64, &str), b: (i64, &str)) -> std::cmp::Ordering {
    b.0.cmp(&a.0).then(a.1.cmp(b.1))
}

/// The sessions a [`Ranking`] left a record of out: a Bloom filter of 2^20 bits (128 KiB, made
/// at the first insert), two bits per session. "Maybe" costs a second pass for that session;
/// it is never wrong about "no".
#[derive(Default)]
struct LeftOut {
    bits: Vec<u64>,
}

impl LeftOut {
    const BITS: usize = 1 << 20;

    fn spots(id: &str) -> [usize; 2] {
        let h = id_hash(id);
        let mask = Self::BITS as u64 - 1;
        [(h & mask) as usize, ((h >> 32) & mask) as usize]
    }

    fn insert(&mut self, id: &str) {
        if self.bits.is_empty() {
            self.bits = vec![0; Self::BITS / 64];
        }
        for i in Self::spots(id) {
            self.bits[i / 64] |= 1 << (i % 64);
        }
    }

    fn may_hold(&self, id: &str) -> bool {
        !self.bits.is_empty()
            && Self::spots(id)
                .iter()
                .all(|&i| self.bits[i / 64] & (1 << (i % 64)) != 0)
    }
}

/// The sessions active at or after a page's cursor, as hashes under a key drawn for the query
/// (SipHash, `RandomState`): ~16 bytes a session instead of its id, and a collision, which
/// would hide a session from the page, cannot be chosen by whoever names the sessions.
#[derive(Default)]
struct Excluded {
    key: std::hash::RandomState,
    hashes: HashSet<u64>,
}

impl Excluded {
    fn insert(&mut self, id: &str) {
        self.hashes.insert(self.key.hash_one(id));
    }

    fn holds(&self, id: &str) -> bool {
        !self.hashes.is_empty() && self.hashes.contains(&self.key.hash_one(id))
    }
}

/// A session id's hash for the Bloom filter (FNV-1a, then mixed so every bit depends on every
/// byte). Colliding ids only cost a session a second pass.
fn id_hash(id: &str) -> u64 {
    let mut h = Fnv::new();
    h.write(id.as_bytes());
    let mut z = h.0;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The summary of one session, from its records (as [`crate::Store::sessions`] sums them).
/// `None` without records; records of other sessions are not counted.
pub fn session_summary(session_id: &str, records: &[UsageRecord]) -> Option<SessionSummary> {
    let mut acc: Option<SessionAcc> = None;
    for r in records
        .iter()
        .filter(|r| r.session_id.as_deref() == Some(session_id))
    {
        match &mut acc {
            Some(s) => s.add(r),
            None => acc = Some(SessionAcc::new(r)),
        }
    }
    acc.map(|s| s.summary(session_id.to_owned()))
}

/// The request id a single request's session is named after.
pub(crate) fn single_session_request(session_id: &str) -> Option<&str> {
    session_id.strip_prefix(SINGLE_SESSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: u64) -> UsageRecord {
        let (id, ts) = crate::new_record_id_and_time();
        UsageRecord {
            id: id.clone(),
            ts_ms: ts,
            request_id: id,
            login: i.is_multiple_of(2).then(|| "alice".into()),
            display_name: Some("Alice Ü".into()),
            tags: if i.is_multiple_of(2) {
                Vec::new()
            } else {
                vec!["tag:a".into(), "tag:b".into()]
            },
            node: Some("laptop".into()),
            identity_source: "whois".into(),
            api_family: "openai_chat".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            requested_model: Some("gpt-4o".into()),
            streaming: i.is_multiple_of(3),
            status: 200,
            input_tokens: i,
            output_tokens: u64::MAX,
            usage_known: true,
            ttfb_ms: i.is_multiple_of(2).then_some(7),
            duration_ms: 12,
            session_id: Some(format!("fp_{}", i % 3)),
            cost_usd: (!i.is_multiple_of(4)).then_some(0.25),
            tool_names: if i == 3 {
                vec!["bash".into(), "".into()]
            } else {
                Vec::new()
            },
            capture_batch: (i == 5).then_some(-9),
            ..UsageRecord::default()
        }
    }

    #[test]
    fn a_block_gives_back_every_record_as_written_with_counters_saturated() {
        let rs: Vec<UsageRecord> = (0..10).map(record).collect();
        let blocks = encode_batch(&rs).unwrap();
        let back: Vec<UsageRecord> = blocks
            .iter()
            .flat_map(|b| decode(&b.data).unwrap())
            .collect();
        let want: Vec<UsageRecord> = rs
            .iter()
            .map(|r| UsageRecord {
                output_tokens: i64::MAX as u64,
                ..r.clone()
            })
            .collect();
        // Records of two buckets would come back block by block; these are of one or two.
        let mut back_sorted = back.clone();
        back_sorted.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(back_sorted, want);
        assert_eq!(blocks.iter().map(|b| b.records).sum::<i64>(), 10);
        assert_eq!(blocks.iter().map(|b| b.tools).sum::<i64>(), 1);
    }

    #[test]
    fn blocks_are_cut_by_bucket_and_keyed_by_login_session_and_odd_ids() {
        let mut rs: Vec<UsageRecord> = (0..4).map(record).collect();
        rs[1].ts_ms = 5 * SPAN_MS + 1;
        rs[1].id = "not-a-uuid".into();
        rs[2].session_id = Some(format!("rq_{}", rs[2].id));
        rs[3].ts_ms = 5 * SPAN_MS + SPAN_MS - 1;
        let blocks = encode_batch(&rs).unwrap();
        assert_eq!(blocks.len(), 2);
        let (now, old) = (&blocks[0], &blocks[1]);
        assert_eq!(now.records, 2);
        assert_eq!((old.ts_min, old.ts_max), (5 * SPAN_MS + 1, 6 * SPAN_MS - 1));
        // Record 3's time is not its id's: it is keyed by id too.
        let mut keys = old.keys.clone();
        keys.sort();
        assert_eq!(
            keys,
            [
                format!("i:{}", rs[3].id),
                "i:not-a-uuid".into(),
                "s:fp_0".into(),
                "s:fp_1".into(),
            ]
        );
        // The single request's session needs no key.
        assert_eq!(now.keys, ["l:alice".to_owned(), "s:fp_0".into()]);
        // The same records make the same block; other records another.
        assert_eq!(encode_batch(&rs).unwrap()[0].batch, now.batch);
        assert_ne!(encode_batch(&rs[..1]).unwrap()[0].batch, now.batch);
    }

    #[test]
    fn a_block_of_many_sessions_keys_each_once_in_the_order_met() {
        let rs: Vec<UsageRecord> = (0..200u64)
            .map(|i| {
                let mut r = record(i);
                r.ts_ms = 7;
                r.id = format!("id-{i}");
                r.login = Some(format!("user{}", i % 5));
                r.session_id = Some(format!("fp_{}", (i * 7) % 60));
                r
            })
            .collect();
        let refs: Vec<&UsageRecord> = rs.iter().collect();
        let block = encode_block(&refs).unwrap();
        let mut want: Vec<String> = Vec::new();
        for r in &rs {
            for k in [
                format!("l:{}", r.login.as_ref().unwrap()),
                format!("s:{}", r.session_id.as_ref().unwrap()),
            ] {
                if !want.contains(&k) {
                    want.push(k);
                }
            }
        }
        want.extend(rs.iter().map(|r| format!("i:{}", r.id)));
        assert_eq!(want.len(), 5 + 60 + 200);
        assert_eq!(block.keys, want);
    }

    #[test]
    fn find_decodes_the_record_of_an_id_only() {
        let rs: Vec<UsageRecord> = (0..5).map(record).collect();
        let refs: Vec<&UsageRecord> = rs.iter().collect();
        let block = encode_block(&refs).unwrap().data;
        let back = decode(&block).unwrap();
        for r in &back {
            assert_eq!(find(&block, &r.id).unwrap().as_ref(), Some(r));
        }
        assert_eq!(find(&block, "missing").unwrap(), None);
        assert!(find(b"not a block", "x").is_err());
    }

    /// The sessions list as summed with every session held: the reference for the ranking.
    fn every_session(
        records: &[UsageRecord],
        before: Option<i64>,
        limit: usize,
    ) -> Vec<SessionSummary> {
        let mut by_id: BTreeMap<&String, Vec<UsageRecord>> = BTreeMap::new();
        for r in records {
            if let Some(id) = &r.session_id {
                by_id.entry(id).or_default().push(r.clone());
            }
        }
        let mut v: Vec<SessionSummary> = by_id
            .into_iter()
            .filter_map(|(id, rs)| session_summary(id, &rs))
            .filter(|s| before.is_none_or(|b| s.last_ms < b))
            .collect();
        v.sort_by(|a, b| by_rank((a.last_ms, &a.id), (b.last_ms, &b.id)));
        v.truncate(limit);
        v
    }

    /// Records of many sessions: most of a few records, some single requests' (and one of those
    /// claimed by a record of another request), durations from none to long, offered in any
    /// order, with a little room so the ranking lets sessions go, lets them in again, leaves
    /// records out, and pages past sessions active too late.
    #[test]
    fn the_sessions_ranking_agrees_with_summing_every_session() {
        let mut random = crate::wire::xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: u64| random() % n;
        let mut rounds = 0;
        let mut again = 0;
        for round in 0..60 {
            let sessions = 5 + next(300);
            let mut records: Vec<UsageRecord> = (0..(20 + next(900)))
                .map(|i| {
                    let mut r = record(i);
                    // Ids of the test's own, so a failure reproduces (ties go by id).
                    r.id = format!("r{round:02}-{i:04}");
                    r.ts_ms = 1_000_000 + next(100_000) as i64;
                    r.duration_ms = match next(10) {
                        0 => next(50_000),
                        1..=3 => 0,
                        _ => next(2_000),
                    };
                    // Ties on the last activity, now and then.
                    if next(5) == 0 {
                        r.ts_ms = 1_050_000 + 10_000 * next(3) as i64;
                        r.duration_ms = 0;
                    }
                    r.session_id = match next(8) {
                        0 => None,
                        1 => Some(format!("rq_{}", r.id)),
                        _ => Some(format!("fp_{}", next(sessions))),
                    };
                    r.cost_usd = r.cost_usd.map(|_| next(8) as f64 * 0.25);
                    r
                })
                .collect();
            let claimed = records
                .iter()
                .find_map(|r| r.session_id.clone().filter(|s| s.starts_with("rq_")));
            if let Some(last) = records.last_mut() {
                last.session_id = claimed;
            }
            let limit = 1 + next(12) as u32;
            let room = 1 + next(8) as usize;
            let before = (round % 2 == 1).then(|| 1_000_000 + next(150_000) as i64);
            let mut passes = 0;
            let got = list_sessions_with_room(before, limit, room, |offer| {
                passes += 1;
                for r in &records {
                    offer(r);
                }
                Ok(())
            })
            .unwrap();
            let want = every_session(&records, before, limit as usize);
            assert_eq!(
                got, want,
                "round {round}, limit {limit}, room {room}, before {before:?}"
            );
            rounds += 1;
            again += usize::from(passes > 1);
            // The same records in another order.
            for i in (1..records.len()).rev() {
                records.swap(i, next(i as u64 + 1) as usize);
            }
            let got = list_sessions_with_room(before, limit, room, |offer| {
                records.iter().for_each(&mut *offer);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, want, "shuffled: round {round}");
        }
        assert_eq!(rounds, 60);
        // The second pass was needed, so it was tested.
        assert!(again > 5, "{again}");
    }

    /// A session that holds up the floor and is then found active after the cursor: the ranking
    /// is done again without it (limit 1, room 1: B sets the floor at 20, C's 15 is left out,
    /// then B ends at 100, past the cursor 50). Without the rerun the page would be empty.
    #[test]
    fn a_floor_standing_on_a_session_past_the_cursor_is_ranked_again() {
        let at = |i: u64, id: &str, ts: i64| {
            let mut r = record(i);
            r.ts_ms = ts;
            r.duration_ms = 0;
            r.session_id = Some(id.to_owned());
            r
        };
        let records = [
            at(0, "a", 10),
            at(1, "b", 20),
            at(2, "c", 15),
            at(3, "b", 100),
        ];
        let mut passes = 0;
        let got = list_sessions_with_room(Some(50), 1, 1, |offer| {
            passes += 1;
            records.iter().for_each(&mut *offer);
            Ok(())
        })
        .unwrap();
        assert_eq!(passes, 2);
        assert_eq!(got, every_session(&records, Some(50), 1));
        assert_eq!(got[0].id, "c");
    }

    /// A log of a new session per record (an OpenAI chat batch job makes one per request):
    /// the ranking holds a bounded number of sessions, not one per record.
    #[test]
    fn the_sessions_ranking_holds_a_bounded_number_of_sessions() {
        let records: Vec<UsageRecord> = (0..20_000)
            .map(|i| {
                let mut r = record(i);
                r.ts_ms = 1_000 + i as i64;
                r.session_id = Some(format!("fp_{i}"));
                r
            })
            .collect();
        for (before, limit) in [(None, 10), (Some(15_000), 10), (None, 500)] {
            let mut ranking = Ranking::new(before, limit, limit.max(MIN_ROOM), Excluded::default());
            records.iter().for_each(|r| ranking.add(r));
            assert!(!ranking.unsound);
            assert!(ranking.peak <= 2 * limit.max(MIN_ROOM), "{}", ranking.peak);
            // Single requests' sessions: the ranks are right, and so are the sums (a session
            // the Bloom filter only maybe left out would be summed again, not wrong).
            let top: Vec<SessionSummary> = ranking
                .finish()
                .into_iter()
                .map(|(id, c)| c.acc.summary(id))
                .collect();
            assert_eq!(top, every_session(&records, before, limit));
        }
        // Newest first, as the store reads blocks: still one pass.
        let mut passes = 0;
        let got = list_sessions(None, 3, |offer| {
            passes += 1;
            records.iter().rev().for_each(&mut *offer);
            Ok(())
        })
        .unwrap();
        assert_eq!(passes, 1);
        assert_eq!(got, every_session(&records, None, 3));
    }

    /// Times whose week or day falls outside the calendar get no key, as SQLite gave NULL:
    /// never a panic.
    #[test]
    fn a_week_before_the_calendar_has_no_key() {
        for ts in [-8_334_601_228_800_000, i64::MIN, i64::MAX] {
            let mut r = record(1);
            r.ts_ms = ts;
            for by in [GroupBy::Week, GroupBy::Day] {
                let mut s = Summary::new(by);
                s.add(&r);
                assert_eq!(s.finish()[0].key, "", "{ts} {by:?}");
            }
        }
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let rs: Vec<UsageRecord> = (0..3).map(record).collect();
        let block = &encode_batch(&rs).unwrap()[0].data;
        assert!(decode(b"not a block").is_err());
        for cut in 0..block.len() {
            let _ = decode(&block[..cut]);
        }
        let raw = zstd::bulk::decompress(block, 1 << 20).unwrap();
        let all = decode(block).unwrap();
        for cut in 0..raw.len() {
            // Cut between records, a block holds fewer; anywhere else it is damaged.
            let short = zstd::bulk::compress(&raw[..cut], 1).unwrap();
            match decode(&short) {
                Ok(some) => assert!(cut >= 4 && some.len() < all.len() && all.starts_with(&some)),
                Err(e) => assert!(matches!(e, StoreError::Corrupt { .. }), "{cut}: {e}"),
            }
        }
        let other = zstd::bulk::compress(b"XXXXsomething", 1).unwrap();
        assert!(matches!(decode(&other), Err(StoreError::Corrupt { .. })));
    }

    /// Bytes changed at random inside a real block (then compressed again, so zstd's checksum
    /// does not catch it): every read path returns a record or an error, never panics, never
    /// allocates by a damaged length.
    #[test]
    fn randomly_damaged_blocks_are_errors_not_panics() {
        let rs: Vec<UsageRecord> = (0..6).map(record).collect();
        let block = &encode_batch(&rs).unwrap()[0].data;
        let filters = [
            UsageQuery::default(),
            UsageQuery {
                login: Some("alice".into()),
                model: Some("gpt-4o".into()),
                tags: Some(vec!["tag:a".into(), "tag:b".into()]),
                with_tools: true,
                ..UsageQuery::default()
            },
        ];
        for bad in crate::wire::damaged_copies(block, 3_000, 0x9e37_79b9_7f4a_7c15) {
            let _ = decode(&bad);
            let _ = find(&bad, &rs[3].id);
            let _ = same_records(&bad, block);
            for q in &filters {
                let _ = each_match(&bad, &Filter::new(q).unwrap(), |_| {});
            }
        }
    }
}
