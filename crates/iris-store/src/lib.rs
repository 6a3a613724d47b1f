//! iris-store owns iris's persistent state: the usage log (one [`UsageRecord`] per
//! proxied request) and the table of iris-issued API keys ([`KeyRecord`]). It is the
//! **only** crate that speaks SQL; everything else goes through the [`Store`] trait, so a
//! PostgreSQL backend can slot in next to [`SqliteStore`] without touching callers.
//! It must never know about HTTP, providers' wire formats, policy, or how identities are
//! resolved, and it never sees a key's secret — only the hash the identity crate computed.
//!
//! # Layout
//! - `lib.rs` — the data types ([`UsageRecord`], [`KeyRecord`], [`UsageQuery`]), the
//!   [`Store`] trait and [`StoreError`].
//! - `sqlite.rs` — [`SqliteStore`]: file setup (permissions), pragmas, embedded
//!   migrations (`migrations/NNNN_*.sql`), and the queries (sqlx; rusqlite for the usage log).
//! - `usage_log.rs` — the usage log's blocks (a writer batch's records, compressed, one row)
//!   and every usage query's meaning: the filter, the newest-first page, the summaries, the
//!   sessions.
//! - `blocks.rs` — capture blocks, likewise.
//! - `wire.rs` — the length-prefixed fields both block formats are made of, and their checked
//!   reader.
//! - `bulk.rs` — the connections usage records and captures are written on, one each, and the
//!   usage log's read connections (rusqlite, on the blocking pool: sqlx's per-argument overhead
//!   was half the store's CPU).
//! - `writer.rs` — the batched usage writer that keeps store writes off the request path:
//!   [`spawn_usage_writer`] returns a cheap, cloneable [`UsageSink`] and a
//!   [`UsageWriterHandle`] for shutdown.
//!
//! # Back-pressure of the usage writer
//! Recording usage must never slow down or block a request, and must never grow memory
//! without bound when the store is slow or down. So [`UsageSink::record`] never awaits:
//! it reserves one of `queue_capacity` slots and `try_send`s into the queue. A slot is
//! held until the record is written (or dropped), so `queue_capacity` bounds everything
//! in memory together: the queue, the batch being written, and the records held while
//! the store fails. When no slot is free the record is **dropped** and counted
//! ([`UsageSink::dropped`]), with a rate-limited `warn!` line naming the count
//! ("usage queue full: N records dropped", or "usage store failing and buffer full: …");
//! drops the rate limit holds back are logged by the writer within the interval, and all
//! of them at once when the store recovers, so the log always adds up to the counter. We
//! chose losing accounting rows under overload over adding latency to user traffic; the
//! counter and the log make the loss visible, never silent.
//!
//! When the store fails (disk full, database locked, read-only file system), the writer
//! keeps the failed batch, keeps taking records off the queue into its buffer, and
//! retries with exponential backoff (100 ms doubling to 5 s); [`UsageSink::store_failing`]
//! and [`UsageSink::last_store_error`] say so meanwhile. The first successful write after
//! the fault clears writes the buffer out, oldest first (a retried batch never
//! duplicates records: the store recognises a batch written twice, and a retry writes exactly
//! the failed batch again). A batch that fails for a
//! *permanent* reason (see [`StoreError::is_permanent`]) is not retried as a whole: its
//! records are tried one by one and only the ones the store rejects are dropped.
//!
//! A partial batch is written `flush_interval` after its first record reached the writer,
//! so a crash (`kill -9`) loses at most the records finished in about the last
//! `flush_interval` (plus the time of one write); committed batches survive it (SQLite
//! WAL, `synchronous = FULL`: every commit is on disk before it counts as written).
//!
//! [`UsageWriterHandle::shutdown`] closes the intake (records sent afterwards are counted
//! as dropped), drains everything already queued, writes it, and returns [`WriterStats`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod blocks;
mod bulk;
mod drop_log;
pub mod pace;
mod sqlite;
mod usage_log;
mod wire;
mod writer;

pub use drop_log::DropLog;
pub use sqlite::SqliteStore;
pub use usage_log::session_summary;
pub use writer::{
    UsageSink, UsageWriterConfig, UsageWriterHandle, WriterStats, spawn_usage_writer,
};

/// One proxied request, as recorded in the usage log.
///
/// Counters are `u64` in Rust; the SQL backends store signed 64-bit integers, so values
/// above `i64::MAX` are saturated to `i64::MAX` on write (no real token or byte count
/// gets near that).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageRecord {
    /// UUIDv7 string (time-ordered), from [`new_record_id`].
    pub id: String,
    /// Request start, unix milliseconds.
    pub ts_ms: i64,
    /// Same as `id` normally.
    pub request_id: String,
    /// User login; `None` for tagged nodes, loopback and anonymous callers.
    pub login: Option<String>,
    pub display_name: Option<String>,
    /// Sorted tags of a tagged node. Stored comma-joined, so a tag must not contain `,`
    /// (Tailscale tags cannot).
    pub tags: Vec<String>,
    /// Node name.
    pub node: Option<String>,
    pub node_id: Option<String>,
    /// "whois" | "serve_headers" | "key" | "loopback" | "none".
    pub identity_source: String,
    pub key_id: Option<String>,
    /// e.g. "anthropic_messages".
    pub api_family: String,
    pub method: String,
    pub path: String,
    pub requested_model: Option<String>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub streaming: bool,
    pub status: u16,
    /// e.g. "denied", "unknown_model", "upstream_timeout", "client_closed", "upstream_error".
    pub error_class: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// False when the answer carried no usage we could read.
    pub usage_known: bool,
    pub ttfb_ms: Option<u64>,
    pub duration_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub user_agent: Option<String>,
    /// The session this request belongs to (`cc_…` Claude Code, `cx_…` Codex, `fp_…`
    /// fingerprint, `rq_…` single request).
    #[serde(default)]
    pub session_id: Option<String>,
    #[serde(default)]
    pub session_kind: Option<String>,
    /// Estimated cost in USD; `None` when the model's price is unknown.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// The price-table entry used (`provider/model`).
    #[serde(default)]
    pub priced_as: Option<String>,
    /// Names of the tools the response called.
    #[serde(default)]
    pub tool_names: Vec<String>,
    /// The batch of captures this request's capture was handed to the store with (see
    /// [`Store::insert_captures`]): how [`Store::capture`] finds it. `None` without a capture,
    /// and for records written before schema version 7. Internal: not part of the API's
    /// records.
    #[serde(skip)]
    pub capture_batch: Option<i64>,
}

/// A fresh record id: a UUIDv7 string. Ids made in one process sort in creation order.
pub fn new_record_id() -> String {
    new_record_id_and_time().0
}

/// A new record id (as [`new_record_id`]) and the unix milliseconds it was made at, the time
/// the id itself carries: one clock read for both (a request's id and its `ts_ms` always agree).
pub fn new_record_id_and_time() -> (String, i64) {
    let id = uuid::Uuid::now_v7();
    let ms = uuid_ms(&id).unwrap_or_else(now_ms);
    // Encoded into a stack buffer: `to_string` goes through the formatting machinery.
    let mut buf = uuid::Uuid::encode_buffer();
    (id.hyphenated().encode_lower(&mut buf).to_owned(), ms)
}

/// The unix milliseconds a time-based UUID carries.
fn uuid_ms(id: &uuid::Uuid) -> Option<i64> {
    let (secs, nanos) = id.get_timestamp()?.to_unix();
    i64::try_from(secs)
        .ok()?
        .checked_mul(1000)?
        .checked_add(i64::from(nanos / 1_000_000))
}

/// The unix milliseconds a record id made by [`new_record_id_and_time`] carries (a UUIDv7's);
/// `None` for any other id.
pub(crate) fn record_id_time(id: &str) -> Option<i64> {
    let id = uuid::Uuid::try_parse(id).ok()?;
    (id.get_version_num() == 7).then(|| uuid_ms(&id)).flatten()
}

/// The current wall-clock time in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An iris-issued API key. The secret itself is never stored, only its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Short public id, e.g. `"key_"` + 12 hex digits.
    pub id: String,
    /// Hex SHA-256 of the secret, computed by the identity crate. Unique.
    pub token_hash: String,
    pub login: Option<String>,
    /// Stored comma-joined; a tag must not contain `,`.
    pub tags: Vec<String>,
    pub note: Option<String>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
    pub created_by: Option<String>,
}

/// A page of the usage log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    /// Page size; 0 returns nothing, values above [`UsageQuery::MAX_LIMIT`] are clamped.
    pub limit: u32,
    /// Cursor: only records older than this one (the last id of the previous page).
    /// An id that is not in the store yields an empty page.
    pub before_id: Option<String>,
    /// Only this login.
    pub login: Option<String>,
    /// Only records whose requested model *or* upstream model equals this.
    pub model: Option<String>,
    /// Only records with `ts_ms >= since_ms`.
    pub since_ms: Option<i64>,
    /// Only records with `ts_ms < until_ms`.
    pub until_ms: Option<i64>,
    /// Only records of exactly this (sorted) tag set.
    pub tags: Option<Vec<String>>,
    /// Only records with this identity source (`"loopback"`, `"key"`, ...).
    pub identity_source: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this HTTP status.
    pub status: Option<u16>,
    /// Only this request.
    pub request_id: Option<String>,
    /// Only records whose response called a tool.
    pub with_tools: bool,
}

impl UsageQuery {
    /// The default page size.
    pub const DEFAULT_LIMIT: u32 = 50;
    /// The largest page a single query returns.
    pub const MAX_LIMIT: u32 = 10_000;
}

impl Default for UsageQuery {
    fn default() -> Self {
        UsageQuery {
            limit: Self::DEFAULT_LIMIT,
            before_id: None,
            login: None,
            model: None,
            since_ms: None,
            until_ms: None,
            tags: None,
            identity_source: None,
            provider: None,
            status: None,
            request_id: None,
            with_tools: false,
        }
    }
}

/// How [`Store::usage_summary`] groups records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    /// The login, else the joined tags, else `(loopback)` / the identity source.
    User,
    /// The requested model.
    Model,
    Provider,
    /// The UTC day, `YYYY-MM-DD`.
    Day,
    /// The UTC week, as the date of its Monday.
    Week,
}

/// Totals for one group of usage records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UsageGroup {
    pub key: String,
    pub requests: u64,
    pub errors: u64,
    /// Distinct callers in the group.
    #[serde(default)]
    pub users: u64,
    /// Sum over priced requests; `None` when none was priced.
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// Requests with usage but no known price.
    #[serde(default)]
    pub unpriced_requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
}

/// A saved version of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfigVersion {
    pub id: i64,
    pub hash: String,
    pub saved_by: String,
    pub saved_at_ms: i64,
    /// `"api"`, `"file"`, `"rollback"`, `"local"` (break-glass) or `"initial"`.
    pub source: String,
    pub bytes: u64,
    /// The text; empty in listings.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub text: String,
}

/// One stored capture, already redacted: the document the capture pipeline built, and the texts
/// of its two bodies beside it (`iris_capture::stored_document` puts them together into the JSON
/// the API serves). The store does not read the document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRow {
    pub request_id: String,
    pub ts_ms: i64,
    /// The capture's document: its compact text (`iris_capture::stored`; captures written since
    /// that form was introduced) or its JSON (older ones). Its bodies are absent or null when
    /// the texts are kept in the fields below (every capture written since schema version 4).
    pub body: String,
    /// The request body's text, when kept outside `body`.
    pub request_body: Option<String>,
    /// The response body's text, when kept outside `body`.
    pub response_body: Option<String>,
}

impl CaptureRow {
    /// Bytes of text the row holds.
    pub fn text_len(&self) -> usize {
        self.body.len()
            + self.request_body.as_ref().map_or(0, String::len)
            + self.response_body.as_ref().map_or(0, String::len)
    }
}

/// A session: requests grouped by their session id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionSummary {
    pub id: String,
    pub kind: Option<String>,
    /// The login, else the joined tags, else `(loopback)`.
    pub who: String,
    pub login: Option<String>,
    pub tags: Vec<String>,
    pub first_ms: i64,
    pub last_ms: i64,
    pub duration_ms: i64,
    pub requests: u64,
    pub errors: u64,
    pub models: Vec<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    /// Sum over priced requests; `None` when none was priced.
    pub cost_usd: Option<f64>,
    /// Requests with usage but no price.
    pub unpriced_requests: u64,
    pub tools: Vec<ToolCount>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolCount {
    pub name: String,
    pub count: u64,
}

/// Errors from a [`Store`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file or its directory could not be created or opened.
    #[error("cannot prepare database location {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database reported an error (includes connection and pool failures).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The database reported an error on the connection that writes usage records and
    /// captures (see `SqliteStore`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Applying the embedded schema migrations failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A uniqueness rule was violated (e.g. a key with the same id or token hash exists).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller handed the store a record it cannot represent faithfully.
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A stored row holds a value the Rust type cannot represent (e.g. a negative count).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    /// The backend is not reachable or refused the operation for a transient reason.
    /// For `Store` implementations other than the SQL ones (tests, proxies).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// True when retrying the same operation cannot succeed: the data itself is the
    /// problem (invalid record, constraint violation, corrupt row). Everything else
    /// (IO, busy/locked database, pool timeouts, unknown database errors) is treated as
    /// transient.
    pub fn is_permanent(&self) -> bool {
        match self {
            StoreError::Conflict(_) | StoreError::InvalidRecord(_) | StoreError::Corrupt { .. } => {
                true
            }
            StoreError::Database(e) => e.as_database_error().is_some_and(|d| {
                matches!(
                    d.kind(),
                    sqlx::error::ErrorKind::UniqueViolation
                        | sqlx::error::ErrorKind::ForeignKeyViolation
                        | sqlx::error::ErrorKind::NotNullViolation
                        | sqlx::error::ErrorKind::CheckViolation
                )
            }),
            StoreError::Sqlite(e) => {
                e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
            }
            StoreError::Io { .. } | StoreError::Migration(_) | StoreError::Unavailable(_) => false,
        }
    }
}

/// Persistent state behind one interface; every backend implements it.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Append records in one transaction: all of them are written or none. Writing the same
    /// batch again (the same records, as the usage writer retries a write that failed) is a
    /// no-op, so a retried batch does not duplicate records even when its first write landed
    /// although it reported an error. (The SQLite store recognises the batch, not each record:
    /// records sent again in another batch are stored again.) The batch is shared, not
    /// borrowed, so a backend can write it from another thread without copying it; a backend
    /// must not keep it past the call, so the caller gets it back uncopied (`Arc::try_unwrap`)
    /// once the call has returned.
    async fn insert_usage(&self, batch: Arc<Vec<UsageRecord>>) -> Result<(), StoreError>;
    /// A page of the usage log, newest first (by `ts_ms`, then `id`).
    async fn recent_usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError>;
    /// Number of usage records stored.
    async fn count_usage(&self) -> Result<u64, StoreError>;
    /// Add a key. [`StoreError::Conflict`] if the id or token hash already exists.
    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError>;
    /// The key with this token hash, revoked and expired ones included (the caller decides).
    async fn key_by_hash(&self, token_hash: &str) -> Result<Option<KeyRecord>, StoreError>;
    /// All keys, oldest first.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Mark a key revoked. Returns false if there is no such key. Revoking twice keeps
    /// the first revocation time.
    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError>;
    /// A counter that changes whenever a key is revoked through this store object, so that a
    /// cache of key lookups in the same process can drop what it holds at once. (Revocations by
    /// other processes do not move it: such caches also expire entries.) Default: never changes.
    fn key_revocations(&self) -> u64 {
        0
    }
    /// Distinct damaged usage blocks this store object's reads have skipped since it opened
    /// (their records are missing from every answer; the store cannot repair them). Default: 0.
    fn damaged_usage_blocks(&self) -> u64 {
        0
    }
    /// Record that a key was used. Never moves `last_used_ms` backwards; unknown ids are
    /// ignored.
    async fn touch_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError>;
    /// Totals of the records matching `q` (its `limit` and `before_id` are ignored), grouped.
    /// Largest groups (by requests) first; for [`GroupBy::Day`], oldest day first.
    async fn usage_summary(
        &self,
        q: &UsageQuery,
        by: GroupBy,
    ) -> Result<Vec<UsageGroup>, StoreError>;
    /// Keep a saved config version; returns its id (increasing).
    async fn insert_config_version(&self, v: &ConfigVersion) -> Result<i64, StoreError>;
    /// Saved versions, newest first, without their text.
    async fn config_versions(&self, limit: u32) -> Result<Vec<ConfigVersion>, StoreError>;
    /// One saved version with its text.
    async fn config_version(&self, id: i64) -> Result<Option<ConfigVersion>, StoreError>;
    /// Keep captures under the number `key`, which the usage records of their requests carry
    /// as [`UsageRecord::capture_batch`]: a capture is found through its record, and a capture
    /// whose record does not name this batch is not found (a repeated request id keeps the
    /// capture its first record names). Keys need not be unique, only rarely repeated: a lookup
    /// searches every block stored under its record's key. Takes the batch by value, so a
    /// backend can write it from another thread without copying it (captures are not retried).
    async fn insert_captures(&self, key: i64, batch: Vec<CaptureRow>) -> Result<(), StoreError>;
    /// The capture of the request whose usage record has this id (captures written before
    /// schema version 7: whose capture has this request id).
    async fn capture(&self, request_id: &str) -> Result<Option<CaptureRow>, StoreError>;
    /// Delete captures older than `before_ms`; with `tools`, also forget the tool names of
    /// usage records older than that. Usage records themselves are kept. Returns captures deleted.
    async fn purge(&self, before_ms: i64, tools: bool) -> Result<u64, StoreError>;
    /// Sessions of the records matching `q` (its `limit` counts sessions), most recent activity
    /// first; `before_last_ms` pages (sessions whose last activity is older).
    async fn sessions(
        &self,
        q: &UsageQuery,
        before_last_ms: Option<i64>,
    ) -> Result<Vec<SessionSummary>, StoreError>;
    /// The records of one session, oldest first (within `q`'s filters, for scoping).
    async fn session_records(
        &self,
        session_id: &str,
        q: &UsageQuery,
    ) -> Result<Vec<UsageRecord>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_are_uuid_v7_and_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_record_id()).collect();
        for id in &ids {
            let u = uuid::Uuid::parse_str(id).unwrap();
            assert_eq!(u.get_version_num(), 7, "{id}");
        }
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn only_uuid_v7_ids_carry_a_time() {
        let (id, ts) = new_record_id_and_time();
        assert_eq!(record_id_time(&id), Some(ts));
        assert_eq!(record_id_time("0190b3a2-1c2d-4abc-8def-0123456789ab"), None);
        // A version-1 UUID carries a time too, but not a record's.
        assert_eq!(record_id_time("c232ab00-9414-11ec-b3c8-9f6bdeced846"), None);
        assert_eq!(record_id_time("0190b3a2-1c2d-7abc-8def-0123456789a"), None);
        assert_eq!(record_id_time("0190b3a2x1c2d-7abc-8def-0123456789ab"), None);
        assert_eq!(record_id_time("0190b3g2-1c2d-7abc-8def-0123456789ab"), None);
        assert_eq!(
            record_id_time("00000000-0001-7abc-8def-0123456789ab"),
            Some(1)
        );
    }

    #[test]
    fn a_record_time_is_the_time_in_its_id() {
        let before = now_ms();
        let (id, ms) = new_record_id_and_time();
        let after = now_ms();
        assert!(
            (before..=after).contains(&ms),
            "{before} <= {ms} <= {after}"
        );
        let u = uuid::Uuid::parse_str(&id).unwrap();
        let (secs, nanos) = u.get_timestamp().unwrap().to_unix();
        assert_eq!(ms, secs as i64 * 1000 + i64::from(nanos / 1_000_000));
        assert_eq!(id, u.hyphenated().to_string());
    }

    #[test]
    fn usage_query_default_limit_is_50() {
        assert_eq!(UsageQuery::default().limit, 50);
    }

    #[test]
    fn only_data_problems_are_permanent() {
        assert!(StoreError::InvalidRecord("x".into()).is_permanent());
        assert!(StoreError::Conflict("x".into()).is_permanent());
        assert!(!StoreError::Unavailable("x".into()).is_permanent());
        assert!(!StoreError::Database(sqlx::Error::PoolTimedOut).is_permanent());
    }
}
