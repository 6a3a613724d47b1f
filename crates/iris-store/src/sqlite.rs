//! The SQLite backend.
//!
//! One database file, in WAL mode. Usage records and captures, written once per request
//! each, go through a [`BulkWriter`] each: a rusqlite connection, batches run on tokio's
//! blocking pool (see `bulk.rs` for why not sqlx, and why usage and captures do not share one).
//! Every other write (keys, config versions, purges) goes through a sqlx pool of exactly one
//! connection; reads go through a separate small pool so dashboards and the CLI never queue
//! behind a usage batch. The three write connections take SQLite's write lock in turn (each
//! waits out the others for up to the busy timeout). The
//! temporary variant (tests, throwaway runs) is the same on a file in a private temporary
//! directory that is deleted with the store.
//!
//! The SQL here sticks to what SQLite and PostgreSQL both accept where that costs
//! nothing (row-value comparisons, `CASE` instead of the scalar `MAX`), so a PostgreSQL
//! backend can reuse most statements. The bulk INSERTs are the exception: they are
//! `INSERT OR IGNORE` (PostgreSQL: `ON CONFLICT DO NOTHING`), because a statement that
//! cannot abort half way needs no statement journal. The rows come from typed records, so no
//! NOT NULL or CHECK constraint can fail for them; only a repeated id is skipped.

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use crate::blocks;
use crate::bulk::{BulkWriter, Durability};
use crate::{
    CaptureRow, ConfigVersion, GroupBy, KeyRecord, SessionSummary, Store, StoreError, ToolCount,
    UsageGroup, UsageQuery, UsageRecord,
};

/// Schema migrations, embedded at compile time from `migrations/`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another connection's lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the read pool of a file database.
const READ_POOL_SIZE: u32 = 4;

/// Columns of `usage_records`, in the order every statement here uses.
const USAGE_COLUMNS: &str = "id, ts_ms, request_id, login, display_name, tags, node, node_id, \
     identity_source, key_id, api_family, method, path, requested_model, provider, \
     upstream_model, streaming, status, error_class, input_tokens, output_tokens, \
     cache_read_tokens, cache_write_tokens, reasoning_tokens, usage_known, ttfb_ms, \
     duration_ms, bytes_in, bytes_out, user_agent, session_id, session_kind, cost_usd, \
     priced_as, tool_names, capture_batch";
const USAGE_COLUMN_COUNT: usize = 36;

/// Bound parameters per statement: SQLite before 3.32 allowed at most 999, and staying
/// under that keeps the statement portable (PostgreSQL allows 65535).
const MAX_BIND_PARAMS: usize = 999;
const USAGE_ROWS_PER_INSERT: usize = MAX_BIND_PARAMS / USAGE_COLUMN_COUNT;
const _: () = assert!(
    USAGE_ROWS_PER_INSERT >= 1 && USAGE_ROWS_PER_INSERT * USAGE_COLUMN_COUNT <= MAX_BIND_PARAMS
);

/// Capture blocks one purge transaction works through at most (each is decompressed, and
/// rewritten when only some of its captures expired).
const PURGE_BLOCKS: i64 = 4;

/// Multi-row INSERT statements come in a few fixed row counts: the largest allowed and the powers
/// of two below it. A batch is written as chunks of those sizes, largest first, so each
/// statement's text is built once per process and prepared once per connection (the bulk
/// connection caches prepared statements by their text). One statement for many rows opens the
/// table's and its indexes' cursors once, not once per row: a third less CPU per usage record
/// than a single-row INSERT run for each.
struct InsertLadder {
    /// Parameters per row.
    columns: usize,
    /// `(rows, sql)`, largest first.
    steps: Vec<(usize, String)>,
}

impl InsertLadder {
    /// `head` is `INSERT INTO t (cols) VALUES`.
    fn new(head: &str, columns: usize, max_rows: usize) -> InsertLadder {
        let row = format!("({})", vec!["?"; columns].join(", "));
        let mut counts = vec![max_rows];
        let mut p = max_rows.next_power_of_two() / 2;
        while p >= 1 {
            if p < max_rows {
                counts.push(p);
            }
            p /= 2;
        }
        let steps = counts
            .into_iter()
            .map(|n| (n, format!("{head} {}", vec![row.as_str(); n].join(", "))))
            .collect();
        InsertLadder { columns, steps }
    }

    /// Cuts `len` rows into `(start, end, sql)` chunks of the ladder's sizes.
    fn chunks(&self, len: usize) -> impl Iterator<Item = (usize, usize, &str)> {
        let mut at = 0;
        std::iter::from_fn(move || {
            let left = len - at;
            let (n, sql) = self.steps.iter().find(|(n, _)| *n <= left)?;
            let start = at;
            at += n;
            Some((start, at, sql.as_str()))
        })
    }

    /// Statements in the ladder (each is cached once prepared).
    fn len(&self) -> usize {
        self.steps.len()
    }

    /// Prepare every statement of the ladder into `conn`'s statement cache.
    fn prepare_all(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        for (_, sql) in &self.steps {
            conn.prepare_cached(sql)?;
        }
        Ok(())
    }

    /// Insert `rows` in `tx`, a chunk per statement; `bind(statement, at, row)` binds one row's
    /// values from parameter `at + 1` on.
    fn insert_all<T>(
        &self,
        tx: &rusqlite::Transaction<'_>,
        rows: &[T],
        bind: impl Fn(&mut rusqlite::Statement<'_>, usize, &T) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // A statement goes back to the cache (which clears every one of its bindings) only when
        // the chunk size changes: the chunks of a batch are mostly of the largest size, and each
        // execution binds all of its parameters anew.
        let mut held: Option<(&str, rusqlite::CachedStatement<'_>)> = None;
        for (start, end, sql) in self.chunks(rows.len()) {
            let insert = match &mut held {
                Some((same, insert)) if std::ptr::eq(*same, sql) => insert,
                _ => {
                    held = None;
                    &mut held.insert((sql, tx.prepare_cached(sql)?)).1
                }
            };
            for (i, row) in rows[start..end].iter().enumerate() {
                bind(insert, i * self.columns, row)?;
            }
            insert.raw_execute()?;
        }
        Ok(())
    }
}

static USAGE_INSERT: LazyLock<InsertLadder> = LazyLock::new(|| {
    InsertLadder::new(
        &format!("INSERT OR IGNORE INTO usage_records ({USAGE_COLUMNS}) VALUES"),
        USAGE_COLUMN_COUNT,
        USAGE_ROWS_PER_INSERT,
    )
});

/// A block of a batch of captures, under the batch's key (schema 7: no row per capture).
const BLOCK_INSERT: &str =
    "INSERT INTO capture_blocks (ts_min, ts_max, data, batch) VALUES (?1, ?2, ?3, ?4)";

/// Prepared statements a bulk connection must keep cached: every rung of the usage ladder and
/// the block INSERT (each connection runs a part of them; the cache is small either way).
pub(crate) fn bulk_statements() -> usize {
    USAGE_INSERT.len() + 1
}

/// Prepare the statements the usage writer runs, when its connection opens. Prepared on first
/// use instead, each size of the ladder was compiled (a multi-row INSERT of up to 999
/// parameters: ~40,000 instructions) the first time a batch needed it, minutes into a run.
pub(crate) fn prepare_usage_writes(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    USAGE_INSERT.prepare_all(conn)
}

/// Likewise for the capture writer.
pub(crate) fn prepare_capture_writes(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.prepare_cached(BLOCK_INSERT).map(drop)
}

/// Bind one usage record's values from parameter `at + 1` on.
fn bind_usage(
    insert: &mut rusqlite::Statement<'_>,
    at: usize,
    r: &UsageRecord,
) -> Result<(), StoreError> {
    let tags = join_tags(&r.tags)?;
    // Most requests call no tool: no JSON to write for them.
    let tools: std::borrow::Cow<'_, str> = if r.tool_names.is_empty() {
        "[]".into()
    } else {
        serde_json::to_string(&r.tool_names)
            .unwrap_or_else(|_| "[]".into())
            .into()
    };
    let status = i64::from(r.status);
    let counters = [
        r.input_tokens,
        r.output_tokens,
        r.cache_read_tokens,
        r.cache_write_tokens,
        r.reasoning_tokens,
    ]
    .map(to_sql_int);
    let ttfb = r.ttfb_ms.map(to_sql_int);
    let (duration, bytes_in, bytes_out) = (
        to_sql_int(r.duration_ms),
        to_sql_int(r.bytes_in),
        to_sql_int(r.bytes_out),
    );
    let cost = r.cost_usd.filter(|c| c.is_finite());
    // In the order of USAGE_COLUMNS.
    let values: [&dyn rusqlite::ToSql; USAGE_COLUMN_COUNT] = [
        &r.id,
        &r.ts_ms,
        &r.request_id,
        &r.login,
        &r.display_name,
        &tags,
        &r.node,
        &r.node_id,
        &r.identity_source,
        &r.key_id,
        &r.api_family,
        &r.method,
        &r.path,
        &r.requested_model,
        &r.provider,
        &r.upstream_model,
        &r.streaming,
        &status,
        &r.error_class,
        &counters[0],
        &counters[1],
        &counters[2],
        &counters[3],
        &counters[4],
        &r.usage_known,
        &ttfb,
        &duration,
        &bytes_in,
        &bytes_out,
        &r.user_agent,
        &r.session_id,
        &r.session_kind,
        &cost,
        &r.priced_as,
        &tools,
        &r.capture_batch,
    ];
    for (i, v) in values.into_iter().enumerate() {
        insert.raw_bind_parameter(at + i + 1, v)?;
    }
    Ok(())
}

/// One compressed capture block (see `blocks.rs`): which rows of the batch it holds.
struct EncodedBlock {
    span: blocks::Span,
    data: Vec<u8>,
}

/// Compress `batch` into its blocks: CPU work, done before the write transaction begins.
fn encode_capture_blocks(batch: &[CaptureRow]) -> Result<Vec<EncodedBlock>, StoreError> {
    blocks::spans(batch)
        .into_iter()
        .map(|span| {
            let data = blocks::encode(&batch[span.start..span.end])?;
            Ok(EncodedBlock { span, data })
        })
        .collect()
}

/// Write the encoded blocks of a batch under its `key`, in `tx`.
fn insert_capture_blocks(
    tx: &rusqlite::Transaction<'_>,
    key: i64,
    encoded: &[EncodedBlock],
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(BLOCK_INSERT)?;
    for EncodedBlock { span, data } in encoded {
        insert.execute(rusqlite::params![span.ts_min, span.ts_max, data, key])?;
    }
    Ok(())
}

/// One step of a purge of capture blocks: up to `PURGE_BLOCKS` blocks holding a capture older
/// than `before_ms` lose those captures (a block left empty is deleted, any other rewritten
/// without them, so no expired text stays on disk) and their ids. Returns (captures deleted,
/// whether there may be more such blocks).
fn purge_capture_blocks(
    tx: &rusqlite::Transaction<'_>,
    before_ms: i64,
) -> Result<(u64, bool), StoreError> {
    // Prepared without the cache: a purge is rare, and the cache is sized for the INSERTs.
    let found: Vec<(i64, i64, Vec<u8>)> = tx
        .prepare(
            "SELECT id, ts_max, data FROM capture_blocks WHERE ts_min < ?1 \
             ORDER BY ts_min LIMIT ?2",
        )?
        .query_map(rusqlite::params![before_ms, PURGE_BLOCKS], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let mut deleted = 0;
    for (block, ts_max, data) in &found {
        let rows = match blocks::decode(data) {
            Ok(rows) => rows,
            Err(e) => {
                // A damaged block cannot say which ids are in it: it goes when all of it is
                // old (its ids then lead nowhere), else it waits for that.
                tracing::warn!(block, error = %e, "damaged capture block");
                if *ts_max < before_ms {
                    tx.execute("DELETE FROM capture_blocks WHERE id = ?1", [block])?;
                } else {
                    tx.execute(
                        "UPDATE capture_blocks SET ts_min = ?1 WHERE id = ?2",
                        rusqlite::params![before_ms, block],
                    )?;
                }
                continue;
            }
        };
        let (old, kept): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.ts_ms < before_ms);
        if kept.is_empty() {
            tx.execute("DELETE FROM capture_blocks WHERE id = ?1", [block])?;
        } else {
            let ts_min = kept.iter().map(|r| r.ts_ms).min().unwrap_or(before_ms);
            let ts_max = kept.iter().map(|r| r.ts_ms).max().unwrap_or(before_ms);
            tx.execute(
                "UPDATE capture_blocks SET ts_min = ?1, ts_max = ?2, data = ?3 WHERE id = ?4",
                rusqlite::params![ts_min, ts_max, blocks::encode(&kept)?, block],
            )?;
        }
        // Blocks written before schema 7 have their captures' ids in `capture_ids`.
        let mut forget =
            tx.prepare("DELETE FROM capture_ids WHERE request_id = ?1 AND block = ?2")?;
        for r in &old {
            forget.execute(rusqlite::params![r.request_id, block])?;
        }
        deleted += old.len() as u64;
    }
    Ok((deleted, found.len() as i64 == PURGE_BLOCKS))
}

/// Rows one statement of a purge deletes or updates at most.
const PURGE_CHUNK: i64 = 2_000;

const KEY_COLUMNS: &str = "id, token_hash, login, tags, note, created_ms, expires_ms, \
     revoked_ms, last_used_ms, created_by";

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Usage records: a connection of their own, so they never queue behind captures.
    usage_writes: Arc<BulkWriter>,
    /// Captures and their purge.
    capture_writes: Arc<BulkWriter>,
    /// Bumped by every revocation made through this store (see [`Store::key_revocations`]).
    revocations: std::sync::atomic::AtomicU64,
    /// The directory of a temporary store, deleted when the store is dropped (last: after
    /// the connections above).
    _temporary: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("writer_connections", &self.writer.size())
            .field("reader_connections", &self.reader.size())
            .field("usage_writes", &self.usage_writes)
            .field("capture_writes", &self.capture_writes)
            .finish()
    }
}

/// The page size of a database iris creates.
const PAGE_SIZE: u32 = 16 << 10;

/// Name of a temporary store's database file in its directory.
const TEMPORARY_FILE: &str = "iris.db";

impl SqliteStore {
    /// Open (or create) the database at `path` and bring its schema up to date.
    ///
    /// Missing parent directories are created with mode 0700 and a missing database file
    /// with mode 0600 (on unix), since the file holds who used what. Existing files and
    /// directories keep their permissions.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_file(path, Durability::Full, None).await
    }

    /// A fresh, private database for tests and throwaway runs, in a temporary directory that
    /// is deleted (with everything in it) when the store is dropped. Commits are not synced to
    /// disk: the data is not meant to outlive the process.
    pub async fn open_temporary() -> Result<SqliteStore, StoreError> {
        let dir = tempfile::Builder::new()
            .prefix("iris-store-")
            .tempdir()
            .map_err(|source| StoreError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let path = dir.path().join(TEMPORARY_FILE);
        Self::open_file(&path, Durability::Off, Some(dir)).await
    }

    async fn open_file(
        path: &Path,
        durability: Durability,
        temporary: Option<tempfile::TempDir>,
    ) -> Result<SqliteStore, StoreError> {
        prepare_location(path).await?;
        let synchronous = match durability {
            // FULL: the WAL is fsynced at every commit, so a batch the writer counts as
            // written is on disk. NORMAL (fsync only at checkpoints) survives `kill -9` too,
            // but leaves commits in the page cache, where a failure the kernel only reports
            // at writeback (a full or failing disk) drops them silently: the e2e store-fault
            // tests lost every record that way. With batching this costs one fsync per batch.
            Durability::Full => SqliteSynchronous::Full,
            Durability::Off => SqliteSynchronous::Off,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .synchronous(synchronous)
            // For a new database (an existing one keeps its page size). Captures are kilobytes
            // each and every WAL frame costs two `pwrite`s and every checkpointed page one more:
            // 16 KiB pages pack captures with less slack and need a quarter of the system calls
            // of 4 KiB ones for the same bytes.
            .page_size(PAGE_SIZE);
        // WAL is a property of the file: the writer sets it once, the others inherit it.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().journal_mode(SqliteJournalMode::Wal))
            .await?;
        MIGRATOR.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_POOL_SIZE)
            .connect_with(options)
            .await?;
        tracing::debug!(path = %path.display(), "sqlite store opened");
        Ok(SqliteStore {
            writer,
            reader,
            usage_writes: BulkWriter::new(path.to_path_buf(), durability, prepare_usage_writes),
            capture_writes: BulkWriter::new(path.to_path_buf(), durability, prepare_capture_writes),
            revocations: Default::default(),
            _temporary: temporary,
        })
    }

    /// Close all connections, waiting for queries in flight. The last connection to
    /// close checkpoints the WAL into the main file.
    pub async fn close(&self) {
        self.usage_writes.close().await;
        self.capture_writes.close().await;
        self.reader.close().await;
        self.writer.close().await;
    }
}

/// Create the parent directories (0700) and the database file (0600) if missing.
async fn prepare_location(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut dirs = tokio::fs::DirBuilder::new();
        dirs.recursive(true);
        #[cfg(unix)]
        dirs.mode(0o700);
        dirs.create(parent).await.map_err(|source| StoreError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let mut file = tokio::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    file.mode(0o600);
    match file.open(path).await {
        // An empty file is a valid, empty SQLite database.
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert_usage(&self, batch: Arc<Vec<UsageRecord>>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.usage_writes
            .write(move |tx| USAGE_INSERT.insert_all(tx, &batch, bind_usage))
            .await
    }

    async fn recent_usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError> {
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        let mut qb = recent_usage_query(q)?;
        let rows = qb.build().fetch_all(&self.reader).await?;
        rows.iter().map(usage_from_row).collect()
    }

    async fn count_usage(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_records")
            .fetch_one(&self.reader)
            .await?;
        from_sql_int("usage_records", "COUNT(*)", n)
    }

    async fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let tags = join_tags(&key.tags)?;
        let result = sqlx::query(&format!(
            "INSERT INTO api_keys ({KEY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(key.id.as_str())
        .bind(key.token_hash.as_str())
        .bind(key.login.as_deref())
        .bind(tags.as_str())
        .bind(key.note.as_deref())
        .bind(key.created_ms)
        .bind(key.expires_ms)
        .bind(key.revoked_ms)
        .bind(key.last_used_ms)
        .bind(key.created_by.as_deref())
        .execute(&self.writer)
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e))
                if e.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                // Deliberately vague: never echo the token hash back.
                Err(StoreError::Conflict(format!(
                    "a key with id {:?} or the same token hash already exists",
                    key.id
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn key_by_hash(&self, token_hash: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE token_hash = ?"
        ))
        .bind(token_hash)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_ms, id"
        ))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: &str, at_ms: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE api_keys SET revoked_ms = COALESCE(revoked_ms, ?) WHERE id = ?")
                .bind(at_ms)
                .bind(id)
                .execute(&self.writer)
                .await?;
        self.revocations
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok(done.rows_affected() > 0)
    }

    fn key_revocations(&self) -> u64 {
        self.revocations.load(std::sync::atomic::Ordering::Acquire)
    }

    async fn touch_key(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE api_keys SET last_used_ms = ? \
             WHERE id = ? AND (last_used_ms IS NULL OR last_used_ms < ?)",
        )
        .bind(at_ms)
        .bind(id)
        .bind(at_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn usage_summary(
        &self,
        q: &UsageQuery,
        by: GroupBy,
    ) -> Result<Vec<UsageGroup>, StoreError> {
        let mut qb = usage_summary_query(q, by)?;
        let rows = qb.build().fetch_all(&self.reader).await?;
        rows.iter()
            .map(|r| {
                let int = |i: usize| -> Result<u64, StoreError> {
                    let v: Option<i64> = r.try_get(i)?;
                    from_sql_int("usage_records", "SUM", v.unwrap_or(0))
                };
                Ok(UsageGroup {
                    key: r.try_get::<Option<String>, _>(0)?.unwrap_or_default(),
                    requests: int(1)?,
                    errors: int(2)?,
                    input_tokens: int(3)?,
                    output_tokens: int(4)?,
                    cache_read_tokens: int(5)?,
                    cache_write_tokens: int(6)?,
                    reasoning_tokens: int(7)?,
                    users: int(8)?,
                    cost_usd: r.try_get(9)?,
                    unpriced_requests: int(10)?,
                })
            })
            .collect()
    }

    async fn insert_captures(&self, key: i64, batch: Vec<CaptureRow>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.capture_writes
            .write_prepared(
                move || encode_capture_blocks(&batch),
                move |tx, encoded| insert_capture_blocks(tx, key, &encoded),
            )
            .await
    }

    async fn capture(&self, request_id: &str) -> Result<Option<CaptureRow>, StoreError> {
        // Since schema 7: the blocks of the batch the request's usage record names.
        let mut found: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT b.data FROM usage_records u JOIN capture_blocks b ON b.batch = u.capture_batch \
             WHERE u.id = ? ORDER BY b.id",
        )
        .bind(request_id)
        .fetch_all(&self.reader)
        .await?;
        // Before it: the block `capture_ids` names.
        if found.is_empty() {
            found = sqlx::query_scalar(
                "SELECT b.data FROM capture_ids i JOIN capture_blocks b ON b.id = i.block \
                 WHERE i.request_id = ?",
            )
            .bind(request_id)
            .fetch_all(&self.reader)
            .await?;
        }
        if !found.is_empty() {
            // Decompressing a block takes a millisecond or two: not on a request worker.
            let id = request_id.to_owned();
            return tokio::task::spawn_blocking(move || {
                for block in &found {
                    if let Some(row) = blocks::find(block, &id)? {
                        return Ok(Some(row));
                    }
                }
                Ok(None)
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("a capture read failed: {e}")))?;
        }
        // Captures written before schema version 5, a row each.
        let row = sqlx::query(
            "SELECT request_id, ts_ms, body, request_body, response_body FROM captures \
             WHERE request_id = ?",
        )
        .bind(request_id)
        .fetch_optional(&self.reader)
        .await?;
        row.map(|r| {
            Ok(CaptureRow {
                request_id: r.try_get(0)?,
                ts_ms: r.try_get(1)?,
                body: r.try_get(2)?,
                request_body: r.try_get(3)?,
                response_body: r.try_get(4)?,
            })
        })
        .transpose()
    }

    async fn purge(&self, before_ms: i64, tools: bool) -> Result<u64, StoreError> {
        // In chunks, one short statement each: usage and capture batches (which wait out a
        // held lock for `BUSY_TIMEOUT`) never wait long behind a purge, however much is old.
        let mut deleted = 0;
        loop {
            let n = sqlx::query(
                "DELETE FROM captures WHERE rowid IN \
                 (SELECT rowid FROM captures WHERE ts_ms < ?1 LIMIT ?2)",
            )
            .bind(before_ms)
            .bind(PURGE_CHUNK)
            .execute(&self.writer)
            .await?
            .rows_affected();
            deleted += n;
            if n < PURGE_CHUNK as u64 {
                break;
            }
        }
        loop {
            let (n, more) = self
                .capture_writes
                .write(move |tx| purge_capture_blocks(tx, before_ms))
                .await?;
            deleted += n;
            if !more {
                break;
            }
        }
        if tools {
            // By time from where the last chunk ended, so no chunk scans again the records
            // already cleared (or that never had tools).
            let mut from = i64::MIN;
            loop {
                let cleared = sqlx::query(
                    "UPDATE usage_records SET tool_names = '[]' WHERE rowid IN \
                     (SELECT rowid FROM usage_records WHERE ts_ms >= ?1 AND ts_ms < ?2 \
                      AND tool_names <> '[]' ORDER BY ts_ms LIMIT ?3) RETURNING ts_ms",
                )
                .bind(from)
                .bind(before_ms)
                .bind(PURGE_CHUNK)
                .fetch_all(&self.writer)
                .await?;
                if cleared.len() < PURGE_CHUNK as usize {
                    break;
                }
                for row in &cleared {
                    from = from.max(row.try_get::<i64, _>(0)?);
                }
            }
        }
        Ok(deleted)
    }

    async fn sessions(
        &self,
        q: &UsageQuery,
        before_last_ms: Option<i64>,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let mut qb = sessions_query(q, before_last_ms)?;
        let rows = qb.build().fetch_all(&self.reader).await?;
        rows.iter().map(session_from_row).collect()
    }

    async fn session_records(
        &self,
        session_id: &str,
        q: &UsageQuery,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let mut qb = session_records_query(session_id, q)?;
        let rows = qb.build().fetch_all(&self.reader).await?;
        rows.iter().map(usage_from_row).collect()
    }

    async fn insert_config_version(&self, v: &ConfigVersion) -> Result<i64, StoreError> {
        let bytes = i64::try_from(v.text.len()).unwrap_or(i64::MAX);
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO config_versions (hash, saved_by, saved_at_ms, source, bytes, text) \
             VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(v.hash.as_str())
        .bind(v.saved_by.as_str())
        .bind(v.saved_at_ms)
        .bind(v.source.as_str())
        .bind(bytes)
        .bind(v.text.as_str())
        .fetch_one(&self.writer)
        .await?;
        Ok(id)
    }

    async fn config_versions(&self, limit: u32) -> Result<Vec<ConfigVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, hash, saved_by, saved_at_ms, source, bytes FROM config_versions \
             ORDER BY id DESC LIMIT ?",
        )
        .bind(i64::from(limit.min(UsageQuery::MAX_LIMIT)))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(|r| version_from_row(r, false)).collect()
    }

    async fn config_version(&self, id: i64) -> Result<Option<ConfigVersion>, StoreError> {
        let row = sqlx::query(
            "SELECT id, hash, saved_by, saved_at_ms, source, bytes, text FROM config_versions WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        row.as_ref().map(|r| version_from_row(r, true)).transpose()
    }
}

/// Tags are stored comma-joined; refuse tags that would not read back the same.
fn join_tags(tags: &[String]) -> Result<String, StoreError> {
    if let Some(bad) = tags.iter().find(|t| t.is_empty() || t.contains(',')) {
        return Err(StoreError::InvalidRecord(format!(
            "tag {bad:?} cannot be stored: tags must be non-empty and contain no ','"
        )));
    }
    Ok(tags.join(","))
}

fn split_tags(joined: &str) -> Vec<String> {
    if joined.is_empty() {
        Vec::new()
    } else {
        joined.split(',').map(str::to_owned).collect()
    }
}

/// SQL integers are signed 64-bit; counters saturate rather than wrap.
fn to_sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn from_sql_int(table: &'static str, column: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("column {column} holds negative value {v}"),
    })
}

fn get_u64(row: &SqliteRow, column: &str) -> Result<u64, StoreError> {
    from_sql_int("usage_records", column, row.try_get(column)?)
}

fn usage_from_row(row: &SqliteRow) -> Result<UsageRecord, StoreError> {
    let status: i64 = row.try_get("status")?;
    let status = u16::try_from(status).map_err(|_| StoreError::Corrupt {
        table: "usage_records",
        detail: format!("column status holds {status}, not an HTTP status"),
    })?;
    let ttfb_ms = match row.try_get::<Option<i64>, _>("ttfb_ms")? {
        Some(v) => Some(from_sql_int("usage_records", "ttfb_ms", v)?),
        None => None,
    };
    Ok(UsageRecord {
        id: row.try_get("id")?,
        ts_ms: row.try_get("ts_ms")?,
        request_id: row.try_get("request_id")?,
        login: row.try_get("login")?,
        display_name: row.try_get("display_name")?,
        tags: split_tags(row.try_get("tags")?),
        node: row.try_get("node")?,
        node_id: row.try_get("node_id")?,
        identity_source: row.try_get("identity_source")?,
        key_id: row.try_get("key_id")?,
        api_family: row.try_get("api_family")?,
        method: row.try_get("method")?,
        path: row.try_get("path")?,
        requested_model: row.try_get("requested_model")?,
        provider: row.try_get("provider")?,
        upstream_model: row.try_get("upstream_model")?,
        streaming: row.try_get("streaming")?,
        status,
        error_class: row.try_get("error_class")?,
        input_tokens: get_u64(row, "input_tokens")?,
        output_tokens: get_u64(row, "output_tokens")?,
        cache_read_tokens: get_u64(row, "cache_read_tokens")?,
        cache_write_tokens: get_u64(row, "cache_write_tokens")?,
        reasoning_tokens: get_u64(row, "reasoning_tokens")?,
        usage_known: row.try_get("usage_known")?,
        ttfb_ms,
        duration_ms: get_u64(row, "duration_ms")?,
        bytes_in: get_u64(row, "bytes_in")?,
        bytes_out: get_u64(row, "bytes_out")?,
        user_agent: row.try_get("user_agent")?,
        session_id: row.try_get("session_id")?,
        session_kind: row.try_get("session_kind")?,
        cost_usd: row.try_get("cost_usd")?,
        priced_as: row.try_get("priced_as")?,
        tool_names: serde_json::from_str(&row.try_get::<String, _>("tool_names")?)
            .unwrap_or_default(),
        capture_batch: row.try_get("capture_batch")?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: row.try_get("id")?,
        token_hash: row.try_get("token_hash")?,
        login: row.try_get("login")?,
        tags: split_tags(row.try_get("tags")?),
        note: row.try_get("note")?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
        last_used_ms: row.try_get("last_used_ms")?,
        created_by: row.try_get("created_by")?,
    })
}

fn session_from_row(r: &SqliteRow) -> Result<SessionSummary, StoreError> {
    let int = |i: usize| -> Result<u64, StoreError> {
        let v: Option<i64> = r.try_get(i)?;
        from_sql_int("usage_records", "SUM", v.unwrap_or(0))
    };
    let login: Option<String> = r.try_get(2)?;
    let tags = split_tags(&r.try_get::<Option<String>, _>(3)?.unwrap_or_default());
    let source: Option<String> = r.try_get(4)?;
    let who = login.clone().unwrap_or_else(|| {
        if tags.is_empty() {
            match source.as_deref() {
                Some("loopback") | None => "(loopback)".to_owned(),
                Some(s) => s.to_owned(),
            }
        } else {
            tags.join(",")
        }
    });
    let first_ms: i64 = r.try_get(5)?;
    let last_ms: i64 = r.try_get(6)?;
    let mut models: Vec<String> = r
        .try_get::<Option<String>, _>(9)?
        .unwrap_or_default()
        .split(',')
        .filter(|m| !m.is_empty() && *m != "-")
        .map(str::to_owned)
        .collect();
    models.sort();
    let mut tools: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for line in r
        .try_get::<Option<String>, _>(17)?
        .unwrap_or_default()
        .lines()
    {
        for name in serde_json::from_str::<Vec<String>>(line).unwrap_or_default() {
            *tools.entry(name).or_default() += 1;
        }
    }
    let mut tools: Vec<ToolCount> = tools
        .into_iter()
        .map(|(name, count)| ToolCount { name, count })
        .collect();
    tools.sort_by(|a, b| b.count.cmp(&a.count).then(a.name.cmp(&b.name)));
    Ok(SessionSummary {
        id: r.try_get(0)?,
        kind: r.try_get(1)?,
        who,
        login,
        tags,
        first_ms,
        last_ms,
        duration_ms: last_ms - first_ms,
        requests: int(7)?,
        errors: int(8)?,
        models,
        input_tokens: int(10)?,
        output_tokens: int(11)?,
        cache_read_tokens: int(12)?,
        cache_write_tokens: int(13)?,
        reasoning_tokens: int(14)?,
        cost_usd: r.try_get(15)?,
        unpriced_requests: int(16)?,
        tools,
    })
}

fn version_from_row(r: &SqliteRow, with_text: bool) -> Result<ConfigVersion, StoreError> {
    Ok(ConfigVersion {
        id: r.try_get(0)?,
        hash: r.try_get(1)?,
        saved_by: r.try_get(2)?,
        saved_at_ms: r.try_get(3)?,
        source: r.try_get(4)?,
        bytes: from_sql_int("config_versions", "bytes", r.try_get(5)?)?,
        text: if with_text {
            r.try_get(6)?
        } else {
            String::new()
        },
    })
}

// The queries of the usage log, built apart from running them so that a test can hold each to
// the indexes it uses (`every_usage_query_uses_an_index_for_its_filters`).

fn recent_usage_query(q: &UsageQuery) -> Result<QueryBuilder<'_, Sqlite>, StoreError> {
    let limit = q.limit.min(UsageQuery::MAX_LIMIT);
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
        "SELECT {USAGE_COLUMNS} FROM usage_records WHERE 1 = 1"
    ));
    if let Some(before) = &q.before_id {
        // Same order as ORDER BY below; an unknown cursor compares to NULL: no rows.
        qb.push(" AND (ts_ms, id) < (SELECT ts_ms, id FROM usage_records WHERE id = ")
            .push_bind(before.as_str())
            .push(")");
    }
    push_filters(&mut qb, q)?;
    qb.push(" ORDER BY ts_ms DESC, id DESC LIMIT ")
        .push_bind(i64::from(limit));
    Ok(qb)
}

fn usage_summary_query(
    q: &UsageQuery,
    by: GroupBy,
) -> Result<QueryBuilder<'_, Sqlite>, StoreError> {
    let key = match by {
        GroupBy::User => {
            "COALESCE(login, NULLIF(tags, ''), CASE identity_source WHEN 'loopback' THEN '(loopback)' ELSE identity_source END)"
        }
        GroupBy::Model => "COALESCE(requested_model, '-')",
        GroupBy::Provider => "COALESCE(provider, '-')",
        GroupBy::Day => "strftime('%Y-%m-%d', ts_ms / 1000, 'unixepoch')",
        GroupBy::Week => "date(ts_ms / 1000, 'unixepoch', '-6 days', 'weekday 1')",
    };
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
        "SELECT {key} AS k, COUNT(*) AS requests, \
         SUM(CASE WHEN status >= 400 OR error_class IS NOT NULL THEN 1 ELSE 0 END) AS errors, \
         SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), \
         SUM(cache_write_tokens), SUM(reasoning_tokens), \
         COUNT(DISTINCT COALESCE(login, NULLIF(tags, ''), identity_source)), SUM(cost_usd), \
         SUM(CASE WHEN cost_usd IS NULL AND usage_known THEN 1 ELSE 0 END) \
         FROM usage_records WHERE 1 = 1"
    ));
    push_filters(&mut qb, q)?;
    qb.push(" GROUP BY k");
    qb.push(match by {
        GroupBy::Day | GroupBy::Week => " ORDER BY k ASC",
        _ => " ORDER BY requests DESC, k ASC",
    });
    Ok(qb)
}

fn sessions_query(
    q: &UsageQuery,
    before_last_ms: Option<i64>,
) -> Result<QueryBuilder<'_, Sqlite>, StoreError> {
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
        "SELECT session_id, MAX(session_kind), MAX(login), MAX(tags), MAX(identity_source), \
         MIN(ts_ms), MAX(ts_ms + duration_ms), COUNT(*), \
         SUM(CASE WHEN status >= 400 OR error_class IS NOT NULL THEN 1 ELSE 0 END), \
         GROUP_CONCAT(DISTINCT COALESCE(requested_model, '-')), \
         SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), SUM(cache_write_tokens), \
         SUM(reasoning_tokens), SUM(cost_usd), \
         SUM(CASE WHEN cost_usd IS NULL AND usage_known THEN 1 ELSE 0 END), \
         GROUP_CONCAT(tool_names, char(10)) \
         FROM usage_records WHERE session_id IS NOT NULL",
    );
    push_filters(&mut qb, q)?;
    qb.push(" GROUP BY session_id");
    if let Some(b) = before_last_ms {
        qb.push(" HAVING MAX(ts_ms + duration_ms) < ").push_bind(b);
    }
    qb.push(" ORDER BY MAX(ts_ms + duration_ms) DESC LIMIT ")
        .push_bind(i64::from(q.limit.min(UsageQuery::MAX_LIMIT)));
    Ok(qb)
}

fn session_records_query<'a>(
    session_id: &str,
    q: &'a UsageQuery,
) -> Result<QueryBuilder<'a, Sqlite>, StoreError> {
    let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
        "SELECT {USAGE_COLUMNS} FROM usage_records WHERE session_id = "
    ));
    qb.push_bind(session_id.to_owned());
    push_filters(&mut qb, q)?;
    qb.push(" ORDER BY ts_ms ASC, id ASC LIMIT ")
        .push_bind(i64::from(q.limit.min(UsageQuery::MAX_LIMIT)));
    Ok(qb)
}

/// The WHERE clauses shared by listings and summaries.
fn push_filters(qb: &mut QueryBuilder<'_, Sqlite>, q: &UsageQuery) -> Result<(), StoreError> {
    if let Some(login) = &q.login {
        qb.push(" AND login = ").push_bind(login.clone());
    }
    if let Some(tags) = &q.tags {
        qb.push(" AND tags = ").push_bind(join_tags(tags)?);
    }
    if let Some(src) = &q.identity_source {
        qb.push(" AND identity_source = ").push_bind(src.clone());
    }
    if let Some(model) = &q.model {
        qb.push(" AND (requested_model = ")
            .push_bind(model.clone())
            .push(" OR upstream_model = ")
            .push_bind(model.clone())
            .push(")");
    }
    if let Some(p) = &q.provider {
        qb.push(" AND provider = ").push_bind(p.clone());
    }
    if let Some(id) = &q.request_id {
        qb.push(" AND id = ").push_bind(id.clone());
    }
    if q.with_tools {
        qb.push(" AND tool_names <> '[]'");
    }
    if let Some(st) = q.status {
        qb.push(" AND status = ").push_bind(i64::from(st));
    }
    if let Some(since) = q.since_ms {
        qb.push(" AND ts_ms >= ").push_bind(since);
    }
    if let Some(until) = q.until_ms {
        qb.push(" AND ts_ms < ").push_bind(until);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retention takes expired captures out of a block that also holds newer ones: their text
    /// is gone from the stored block, not only unreachable by id.
    #[tokio::test]
    async fn a_partly_expired_block_is_rewritten_without_the_old_captures() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let rows: Vec<CaptureRow> = (0..6)
            .map(|i| CaptureRow {
                request_id: format!("r{i}"),
                ts_ms: 100 * i,
                body: format!("{{\"secret-{i}\":true}}"),
                request_body: Some(format!("prompt {i}")),
                response_body: None,
            })
            .collect();
        store.insert_captures(1, rows.clone()).await.unwrap();
        assert_eq!(store.purge(300, false).await.unwrap(), 3);
        let blocks: Vec<Vec<u8>> = sqlx::query_scalar("SELECT data FROM capture_blocks")
            .fetch_all(&store.reader)
            .await
            .unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks::decode(&blocks[0]).unwrap(), rows[3..]);
        let (min, max): (i64, i64) = sqlx::query_as("SELECT ts_min, ts_max FROM capture_blocks")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!((min, max), (300, 500));
        assert_eq!(store.purge(600, false).await.unwrap(), 3);
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM capture_blocks")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(left, 0);
        for r in &rows {
            assert_eq!(store.capture(&r.request_id).await.unwrap(), None);
        }
    }

    fn capture_row(id: &str, ts_ms: i64, text: String) -> CaptureRow {
        CaptureRow {
            request_id: id.into(),
            ts_ms,
            body: format!("{{\"id\":\"{id}\"}}"),
            request_body: Some(text),
            response_body: None,
        }
    }

    /// A usage record that names a batch of captures, as the observer writes it.
    fn record_in_batch(id: &str, ts_ms: i64, batch: Option<i64>) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            request_id: id.into(),
            ts_ms,
            capture_batch: batch,
            ..UsageRecord::default()
        }
    }

    /// A capture is found through the batch its record names: in whichever block of the batch
    /// it landed (a batch larger than a block is cut into several), and not when the record
    /// names another batch, or none. A key used twice only means more blocks to search.
    #[tokio::test]
    async fn a_capture_is_found_through_its_records_batch() {
        let store = SqliteStore::open_temporary().await.unwrap();
        // Four captures of 1.5 MB of incompressible-enough text: two or more blocks.
        let big = |seed: u64| {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            (0..1_500_000)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect::<String>()
        };
        let rows: Vec<CaptureRow> = (0..4)
            .map(|i| capture_row(&format!("r{i}"), 10 + i, big(i as u64)))
            .collect();
        assert!(blocks::spans(&rows).len() >= 2);
        let mut records: Vec<UsageRecord> = (0..4)
            .map(|i| record_in_batch(&format!("r{i}"), 10 + i, Some(41)))
            .collect();
        // Batch 42 (a key given out twice) holds r4; r5 names batch 41, which lacks it; r6
        // names no batch.
        let small = vec![capture_row("r4", 20, "four".into())];
        let stray = vec![
            capture_row("r5", 21, "five".into()),
            capture_row("r6", 22, "six".into()),
        ];
        records.push(record_in_batch("r4", 20, Some(42)));
        records.push(record_in_batch("r5", 21, Some(41)));
        records.push(record_in_batch("r6", 22, None));
        store.insert_usage(Arc::new(records)).await.unwrap();
        store.insert_captures(41, rows.clone()).await.unwrap();
        store.insert_captures(42, stray).await.unwrap();
        store.insert_captures(42, small.clone()).await.unwrap();
        for row in rows.iter().chain(&small) {
            assert_eq!(
                store.capture(&row.request_id).await.unwrap().as_ref(),
                Some(row)
            );
        }
        for missing in ["r5", "r6", "r7"] {
            assert_eq!(store.capture(missing).await.unwrap(), None, "{missing}");
        }
        // No row per capture.
        let ids: i64 = sqlx::query_scalar("SELECT count(*) FROM capture_ids")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(ids, 0);
        // Retention rewrites a block in place: what is left of it stays under its key.
        assert_eq!(store.purge(12, false).await.unwrap(), 2);
        assert_eq!(store.capture("r0").await.unwrap(), None);
        for row in rows[2..].iter().chain(&small) {
            assert_eq!(
                store.capture(&row.request_id).await.unwrap().as_ref(),
                Some(row)
            );
        }
    }

    /// Captures written before schema version 7 (their block under no batch number, an id row
    /// each in `capture_ids`, records naming no batch) are found, and retention still forgets
    /// their ids.
    #[tokio::test]
    async fn captures_written_before_version_7_are_found_and_purged() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let rows = vec![
            capture_row("r0", 5, "zero".into()),
            capture_row("r1", 9, "one".into()),
        ];
        store.insert_captures(3, rows.clone()).await.unwrap();
        // As schema 6 left them.
        let block: i64 = sqlx::query_scalar("UPDATE capture_blocks SET batch = NULL RETURNING id")
            .fetch_one(&store.writer)
            .await
            .unwrap();
        for r in &rows {
            sqlx::query("INSERT INTO capture_ids (request_id, block) VALUES (?, ?)")
                .bind(&r.request_id)
                .bind(block)
                .execute(&store.writer)
                .await
                .unwrap();
        }

        for r in &rows {
            assert_eq!(
                store.capture(&r.request_id).await.unwrap().as_ref(),
                Some(r)
            );
        }
        assert_eq!(store.purge(6, false).await.unwrap(), 1);
        assert_eq!(store.capture("r0").await.unwrap(), None);
        assert_eq!(store.capture("r1").await.unwrap().as_ref(), Some(&rows[1]));
        let ids: Vec<String> = sqlx::query_scalar("SELECT request_id FROM capture_ids")
            .fetch_all(&store.reader)
            .await
            .unwrap();
        assert_eq!(ids, ["r1"]);
        store.close().await;
    }

    /// Every query of the usage log with a time, login or session filter reads through an
    /// index, never the whole table; and every index on `usage_records` serves one of them (an
    /// index no query uses costs every record a B-tree insert for nothing: schema 8 dropped one).
    #[tokio::test]
    async fn every_usage_query_uses_an_index_for_its_filters() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let since = UsageQuery {
            since_ms: Some(5),
            until_ms: Some(9),
            ..UsageQuery::default()
        };
        let login = UsageQuery {
            login: Some("a@example.com".into()),
            ..since.clone()
        };
        let model = UsageQuery {
            model: Some("m".into()),
            provider: Some("p".into()),
            status: Some(200),
            ..since.clone()
        };
        let paged = UsageQuery {
            before_id: Some("x".into()),
            ..since.clone()
        };
        let mut cases: Vec<(String, QueryBuilder<'_, Sqlite>, bool)> = Vec::new();
        for (name, q) in [
            ("since", &since),
            ("login", &login),
            ("model", &model),
            ("paged", &paged),
        ] {
            cases.push((
                format!("recent {name}"),
                recent_usage_query(q).unwrap(),
                true,
            ));
            for by in [GroupBy::User, GroupBy::Model, GroupBy::Day] {
                cases.push((
                    format!("summary {by:?} {name}"),
                    usage_summary_query(q, by).unwrap(),
                    true,
                ));
            }
            cases.push((
                format!("sessions {name}"),
                sessions_query(q, Some(7)).unwrap(),
                true,
            ));
            cases.push((
                format!("session records {name}"),
                session_records_query("cc_x", q).unwrap(),
                true,
            ));
        }
        let all = UsageQuery::default();
        cases.push((
            "recent, no filter".into(),
            recent_usage_query(&all).unwrap(),
            false,
        ));
        cases.push((
            "sessions, no filter".into(),
            sessions_query(&all, None).unwrap(),
            false,
        ));

        let mut used = std::collections::BTreeSet::new();
        for (name, qb, must_use_index) in &cases {
            let sql = format!("EXPLAIN QUERY PLAN {}", qb.sql());
            let mut explain = sqlx::query(&sql);
            for _ in 0..sql.matches('?').count() {
                explain = explain.bind(1_i64);
            }
            let plan: Vec<String> = explain
                .fetch_all(&store.reader)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(3))
                .collect();
            for step in &plan {
                if let Some(at) = step.find("INDEX ") {
                    let index = step[at + 6..].split_whitespace().next().unwrap_or("");
                    used.insert(index.to_owned());
                }
            }
            if *must_use_index {
                assert!(
                    !plan.iter().any(|p| p == "SCAN usage_records"),
                    "{name}: a whole-table scan: {plan:?}"
                );
            }
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'usage_records' \
             AND name NOT LIKE 'sqlite_autoindex%'",
        )
        .fetch_all(&store.reader)
        .await
        .unwrap();
        assert!(!indexes.is_empty());
        for index in &indexes {
            assert!(
                used.contains(index),
                "{index} serves no query; used: {used:?}"
            );
        }
    }

    #[test]
    fn insert_ladders_cover_every_batch_with_few_statements() {
        for (ladder, columns, max) in [(&*USAGE_INSERT, USAGE_COLUMN_COUNT, USAGE_ROWS_PER_INSERT)]
        {
            assert!(ladder.steps.len() <= 10);
            for (n, sql) in &ladder.steps {
                assert_eq!(sql.matches('?').count(), n * columns, "{sql}");
                assert!(n * columns <= MAX_BIND_PARAMS);
            }
            let mut texts = std::collections::HashSet::new();
            for len in 0..=3 * max + 5 {
                let mut next = 0;
                for (start, end, sql) in ladder.chunks(len) {
                    assert_eq!(start, next);
                    assert_eq!(sql.matches('?').count(), (end - start) * columns);
                    texts.insert(sql);
                    next = end;
                }
                assert_eq!(next, len);
            }
            assert_eq!(texts.len(), ladder.steps.len());
        }
    }

    #[test]
    fn tag_lists_round_trip_through_text() {
        for tags in [vec![], vec!["tag:a"], vec!["tag:a", "tag:b-c"]] {
            let tags: Vec<String> = tags.into_iter().map(String::from).collect();
            assert_eq!(split_tags(&join_tags(&tags).unwrap()), tags);
        }
    }

    #[test]
    fn tags_that_would_not_read_back_are_refused() {
        for bad in [vec!["a,b"], vec![""], vec!["tag:a", ""]] {
            let bad: Vec<String> = bad.into_iter().map(String::from).collect();
            let err = join_tags(&bad).unwrap_err();
            assert!(err.is_permanent(), "{err}");
        }
    }

    #[test]
    fn counters_saturate_instead_of_wrapping() {
        assert_eq!(to_sql_int(0), 0);
        assert_eq!(to_sql_int(i64::MAX as u64), i64::MAX);
        assert_eq!(to_sql_int(u64::MAX), i64::MAX);
        assert!(from_sql_int("t", "c", -1).is_err());
    }

    #[test]
    fn usage_column_count_matches_the_column_list() {
        assert_eq!(USAGE_COLUMNS.split(',').count(), USAGE_COLUMN_COUNT);
    }
}
