//! The SQLite backend.
//!
//! One database file, in WAL mode. Usage records and captures, written once per request
//! each, go through a [`BulkWriter`] each: a rusqlite connection, batches run on tokio's
//! blocking pool (see `bulk.rs` for why not sqlx, and why usage and captures do not share one).
//! Both are stored as compressed blocks, one row per block (`usage_log.rs`, `blocks.rs`), and
//! the usage log is read through a [`ReadPool`] of rusqlite connections: every query selects
//! blocks by time, login, session or id with SQL, and decodes, filters and folds their records
//! in Rust. Every other write (keys, config versions, purges) goes through a sqlx pool of
//! exactly one connection; other reads go through a separate small pool so dashboards and the
//! CLI never queue behind a usage batch. The write connections take SQLite's write lock in turn
//! (each waits out the others for up to the busy timeout). The temporary variant (tests,
//! throwaway runs) is the same on a file in a private temporary directory that is deleted with
//! the store.
//!
//! The SQL here sticks to what SQLite and PostgreSQL both accept where that costs nothing, so
//! a PostgreSQL backend can reuse most statements. The block INSERTs are `INSERT OR IGNORE`
//! (PostgreSQL: `ON CONFLICT DO NOTHING`): a block already stored under its hash is a retried
//! batch, skipped.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::OptionalExtension;
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};

use crate::blocks;
use crate::bulk::{BulkWriter, Durability, ReadPool};
use crate::usage_log::{self, join_tags, split_tags};
use crate::{
    CaptureRow, ConfigVersion, GroupBy, KeyRecord, SessionSummary, Store, StoreError, UsageGroup,
    UsageQuery, UsageRecord,
};

/// Schema migrations, embedded at compile time from `migrations/`.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// How long a statement waits for another connection's lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the read pool of a file database.
const READ_POOL_SIZE: u32 = 4;

/// Columns of `usage_records` (schema 8 and before), read once to convert its rows to blocks.
const USAGE_COLUMNS: &str = "id, ts_ms, request_id, login, display_name, tags, node, node_id, \
     identity_source, key_id, api_family, method, path, requested_model, provider, \
     upstream_model, streaming, status, error_class, input_tokens, output_tokens, \
     cache_read_tokens, cache_write_tokens, reasoning_tokens, usage_known, ttfb_ms, \
     duration_ms, bytes_in, bytes_out, user_agent, session_id, session_kind, cost_usd, \
     priced_as, tool_names, capture_batch";
#[cfg(test)]
const USAGE_COLUMN_COUNT: usize = 36;

/// Rows of `usage_records` one step of the conversion to blocks moves.
const CONVERT_CHUNK: i64 = 5_000;

/// Records converted between two progress lines in the log.
const CONVERT_REPORT_EVERY: u64 = 250_000;

/// Capture blocks one purge transaction works through at most (each is decompressed, and
/// rewritten when only some of its captures expired).
const PURGE_BLOCKS: i64 = 4;

/// Usage blocks one step of the `tools` purge rewrites at most.
const PURGE_USAGE_BLOCKS: i64 = 16;

/// A block of usage records. A block already stored under the same hash is not written again
/// (see `insert_usage_blocks`).
const USAGE_BLOCK_INSERT: &str = "INSERT OR IGNORE INTO usage_blocks \
     (batch, ts_min, ts_max, records, tools, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// A login or session of a usage block.
const USAGE_KEY_INSERT: &str =
    "INSERT OR IGNORE INTO usage_block_keys (key, block) VALUES (?1, ?2)";

/// The usage blocks that may hold records of a time range: `?1` ≤ `ts_max` ≤ `?2` (the range's
/// end plus a bucket: a block spans less than one) and `ts_min` ≤ `?3` (the range's end), the
/// newest first.
const BLOCKS_IN_RANGE: &str = "SELECT id, ts_max FROM usage_blocks \
     WHERE ts_max >= ?1 AND ts_max <= ?2 AND ts_min <= ?3 ORDER BY ts_max DESC";

/// The same for the blocks of one key (a login, a session, an id); the time terms are kept off
/// the `ts_max` index (`+`) so the key's rows are the ones searched.
const BLOCKS_OF_KEY: &str = "SELECT b.id, b.ts_max FROM usage_block_keys k \
     JOIN usage_blocks b ON b.id = k.block \
     WHERE k.key = ?4 AND +b.ts_max >= ?1 AND +b.ts_max <= ?2 AND b.ts_min <= ?3 \
     ORDER BY b.ts_max DESC";

/// One usage block's records.
const BLOCK_DATA: &str = "SELECT data FROM usage_blocks WHERE id = ?1";

/// A block of a batch of captures, under the batch's key (schema 7: no row per capture).
const BLOCK_INSERT: &str =
    "INSERT INTO capture_blocks (ts_min, ts_max, data, batch) VALUES (?1, ?2, ?3, ?4)";

/// Prepared statements a bulk connection must keep cached (each connection runs a part of them).
pub(crate) fn bulk_statements() -> usize {
    3
}

/// Prepare the statements the usage writer runs, when its connection opens.
pub(crate) fn prepare_usage_writes(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.prepare_cached(USAGE_BLOCK_INSERT)?;
    conn.prepare_cached(USAGE_KEY_INSERT).map(drop)
}

/// Likewise for the capture writer.
pub(crate) fn prepare_capture_writes(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    conn.prepare_cached(BLOCK_INSERT).map(drop)
}

/// Write the encoded blocks of a batch of usage records, with their keys, in `tx`.
///
/// A block's `batch` is a hash of its records' ids and times: a block whose hash is stored
/// already holds either the same records (the batch was written before and is written again: a
/// retry after a commit whose answer was lost), and is skipped, or, with odds of 2^-64, others,
/// and is stored under the next free value. So a retried batch adds nothing and no batch is lost.
fn insert_usage_blocks(
    tx: &rusqlite::Transaction<'_>,
    blocks: &[usage_log::Block],
) -> Result<(), StoreError> {
    let mut insert = tx.prepare_cached(USAGE_BLOCK_INSERT)?;
    let mut key = tx.prepare_cached(USAGE_KEY_INSERT)?;
    'blocks: for b in blocks {
        let mut batch = b.batch;
        loop {
            let added = insert.execute(rusqlite::params![
                batch, b.ts_min, b.ts_max, b.records, b.tools, b.data
            ])?;
            if added == 1 {
                break;
            }
            let stored: Vec<u8> = tx.query_row(
                "SELECT data FROM usage_blocks WHERE batch = ?1",
                [batch],
                |r| r.get(0),
            )?;
            // The same records (by id and time: retention may have rewritten their tools).
            if usage_log::same_records(&stored, &b.data) {
                continue 'blocks;
            }
            batch = batch.wrapping_add(1);
        }
        let block = tx.last_insert_rowid();
        for k in &b.keys {
            key.execute(rusqlite::params![k, block])?;
        }
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
    /// Reads of the usage log (its blocks are decoded on the blocking pool).
    usage_reads: Arc<ReadPool>,
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
            .field("usage_reads", &self.usage_reads)
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
        let usage_writes = BulkWriter::new(path.to_path_buf(), durability, prepare_usage_writes);
        convert_usage_rows(&usage_writes).await?;
        tracing::debug!(path = %path.display(), "sqlite store opened");
        Ok(SqliteStore {
            writer,
            reader,
            usage_writes,
            capture_writes: BulkWriter::new(path.to_path_buf(), durability, prepare_capture_writes),
            usage_reads: ReadPool::new(path.to_path_buf()),
            revocations: Default::default(),
            _temporary: temporary,
        })
    }

    /// Close all connections, waiting for queries in flight. The last connection to
    /// close checkpoints the WAL into the main file.
    pub async fn close(&self) {
        self.usage_reads.close();
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
            .write_prepared(
                move || usage_log::encode_batch(&batch),
                |tx, blocks| insert_usage_blocks(tx, &blocks),
            )
            .await
    }

    async fn recent_usage(&self, q: &UsageQuery) -> Result<Vec<UsageRecord>, StoreError> {
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        let q = q.clone();
        self.usage_reads
            .read(move |conn| read_recent(conn, &q))
            .await
    }

    async fn count_usage(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(records), 0) FROM usage_blocks")
            .fetch_one(&self.reader)
            .await?;
        from_sql_int("usage_blocks", "SUM(records)", n)
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

    fn damaged_usage_blocks(&self) -> u64 {
        self.usage_reads.damaged_blocks()
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
        let q = q.clone();
        self.usage_reads
            .read(move |conn| {
                let mut summary = usage_log::Summary::new(by);
                for_each_match(conn, &q, |r| summary.add(&r))?;
                Ok(summary.finish())
            })
            .await
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
        let id = request_id.to_owned();
        let batch = self
            .usage_reads
            .read(move |conn| Ok(find_record(conn, &id)?.and_then(|r| r.capture_batch)))
            .await?;
        let mut found: Vec<Vec<u8>> = match batch {
            Some(batch) => {
                sqlx::query_scalar("SELECT data FROM capture_blocks WHERE batch = ? ORDER BY id")
                    .bind(batch)
                    .fetch_all(&self.reader)
                    .await?
            }
            None => Vec::new(),
        };
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
            let mut after = 0;
            while let Some(last) = self
                .usage_writes
                .write(move |tx| purge_usage_tools(tx, before_ms, after))
                .await?
            {
                after = last;
            }
        }
        Ok(deleted)
    }

    async fn sessions(
        &self,
        q: &UsageQuery,
        before_last_ms: Option<i64>,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let q = q.clone();
        self.usage_reads
            .read(move |conn| {
                usage_log::list_sessions(before_last_ms, q.limit, |offer| {
                    for_each_match(conn, &q, |r| offer(&r))
                })
            })
            .await
    }

    async fn session_records(
        &self,
        session_id: &str,
        q: &UsageQuery,
    ) -> Result<Vec<UsageRecord>, StoreError> {
        let (session_id, q) = (session_id.to_owned(), q.clone());
        self.usage_reads
            .read(move |conn| read_session(conn, &session_id, &q))
            .await
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

fn from_sql_int(table: &'static str, column: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt {
        table,
        detail: format!("column {column} holds negative value {v}"),
    })
}

/// A row of `usage_records` (schema 8), its columns in the order of [`USAGE_COLUMNS`] from `at`.
fn usage_from_row(row: &rusqlite::Row<'_>, at: usize) -> Result<UsageRecord, StoreError> {
    let int = |i: usize, column: &str| -> Result<u64, StoreError> {
        from_sql_int("usage_records", column, row.get(at + i)?)
    };
    let status: i64 = row.get(at + 17)?;
    let status = u16::try_from(status).map_err(|_| StoreError::Corrupt {
        table: "usage_records",
        detail: format!("column status holds {status}, not an HTTP status"),
    })?;
    let ttfb_ms = match row.get::<_, Option<i64>>(at + 25)? {
        Some(v) => Some(from_sql_int("usage_records", "ttfb_ms", v)?),
        None => None,
    };
    Ok(UsageRecord {
        id: row.get(at)?,
        ts_ms: row.get(at + 1)?,
        request_id: row.get(at + 2)?,
        login: row.get(at + 3)?,
        display_name: row.get(at + 4)?,
        tags: split_tags(&row.get::<_, String>(at + 5)?),
        node: row.get(at + 6)?,
        node_id: row.get(at + 7)?,
        identity_source: row.get(at + 8)?,
        key_id: row.get(at + 9)?,
        api_family: row.get(at + 10)?,
        method: row.get(at + 11)?,
        path: row.get(at + 12)?,
        requested_model: row.get(at + 13)?,
        provider: row.get(at + 14)?,
        upstream_model: row.get(at + 15)?,
        streaming: row.get(at + 16)?,
        status,
        error_class: row.get(at + 18)?,
        input_tokens: int(19, "input_tokens")?,
        output_tokens: int(20, "output_tokens")?,
        cache_read_tokens: int(21, "cache_read_tokens")?,
        cache_write_tokens: int(22, "cache_write_tokens")?,
        reasoning_tokens: int(23, "reasoning_tokens")?,
        usage_known: row.get(at + 24)?,
        ttfb_ms,
        duration_ms: int(26, "duration_ms")?,
        bytes_in: int(27, "bytes_in")?,
        bytes_out: int(28, "bytes_out")?,
        user_agent: row.get(at + 29)?,
        session_id: row.get(at + 30)?,
        session_kind: row.get(at + 31)?,
        cost_usd: row.get(at + 32)?,
        priced_as: row.get(at + 33)?,
        tool_names: serde_json::from_str(&row.get::<_, String>(at + 34)?).unwrap_or_default(),
        capture_batch: row.get(at + 35)?,
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

// Reading the usage log: the blocks a query selects, decoded, filtered and folded by the
// functions of `usage_log.rs`.

/// A usage block to read: its row id and its newest record's time.
type BlockRef = (i64, i64);

/// Hand `f` each block that may hold records of `key` (a login, a session, an id; or anyone)
/// between `lo` and `hi` (inclusive), newest first, until it returns `false`. The blocks are
/// stepped through as SQLite finds them: a page of the log stops after a few.
fn each_block(
    conn: &rusqlite::Connection,
    key: Option<&str>,
    lo: i64,
    hi: i64,
    mut f: impl FnMut(BlockRef) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let ts_max_hi = hi.saturating_add(usage_log::SPAN_MS);
    let mut statement;
    let mut rows = match key {
        None => {
            statement = conn.prepare_cached(BLOCKS_IN_RANGE)?;
            statement.query(rusqlite::params![lo, ts_max_hi, hi])?
        }
        Some(k) => {
            statement = conn.prepare_cached(BLOCKS_OF_KEY)?;
            statement.query(rusqlite::params![lo, ts_max_hi, hi, k])?
        }
    };
    while let Some(row) = rows.next()? {
        if !f((row.get(0)?, row.get(1)?))? {
            break;
        }
    }
    Ok(())
}

/// The blocks [`each_block`] hands out, all of them.
fn select_blocks(
    conn: &rusqlite::Connection,
    key: Option<&str>,
    lo: i64,
    hi: i64,
) -> Result<Vec<BlockRef>, StoreError> {
    let mut found = Vec::new();
    each_block(conn, key, lo, hi, |b| {
        found.push(b);
        Ok(true)
    })?;
    Ok(found)
}

/// The blocks that may hold the record `id`: its key's, and those of the time its id carries.
fn blocks_of_id(conn: &rusqlite::Connection, id: &str) -> Result<Vec<BlockRef>, StoreError> {
    let key = format!("{}{id}", usage_log::ID_KEY);
    let mut found = select_blocks(conn, Some(&key), i64::MIN, i64::MAX)?;
    if let Some(t) = crate::record_id_time(id) {
        found.extend(select_blocks(conn, None, t, t)?);
    }
    Ok(newest_first(found))
}

/// Blocks by newest record first, each once.
fn newest_first(mut blocks: Vec<BlockRef>) -> Vec<BlockRef> {
    blocks.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    blocks.dedup_by_key(|b| b.0);
    blocks
}

/// A usage block's stored data (none when the block is gone).
fn block_data(conn: &rusqlite::Connection, block: i64) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached(BLOCK_DATA)?
        .query_row([block], |r| r.get(0))
        .optional()?)
}

/// The records of one block that `filter` selects (none when the block is gone).
fn scan_block(
    conn: &rusqlite::Connection,
    block: i64,
    filter: &usage_log::Filter<'_>,
    f: impl FnMut(UsageRecord),
) -> Result<(), StoreError> {
    match block_data(conn, block)?.map(|d| usage_log::each_match(&d, filter, f)) {
        Some(Err(e)) => skip_damaged(block, e),
        _ => Ok(()),
    }
}

/// A damaged usage block is read as far as it can be and then skipped, with a warning: it must
/// not make every later query over its time range fail (nothing can repair it). Reads count it
/// ([`Store::damaged_usage_blocks`], shown by `/api/health`).
fn skip_damaged(block: i64, e: StoreError) -> Result<(), StoreError> {
    match e {
        StoreError::Corrupt { .. } => {
            crate::bulk::note_skipped_block(block);
            tracing::warn!(block, error = %e, "damaged usage block skipped");
            Ok(())
        }
        e => Err(e),
    }
}

/// The record with this id.
fn find_record(conn: &rusqlite::Connection, id: &str) -> Result<Option<UsageRecord>, StoreError> {
    for (block, _) in blocks_of_id(conn, id)? {
        match block_data(conn, block)?.map(|d| usage_log::find(&d, id)) {
            Some(Ok(Some(r))) => return Ok(Some(r)),
            Some(Err(e)) => skip_damaged(block, e)?,
            _ => {}
        }
    }
    Ok(None)
}

/// The time range of a query, inclusive.
fn time_range(q: &UsageQuery) -> (i64, i64) {
    (
        q.since_ms.unwrap_or(i64::MIN),
        q.until_ms.map_or(i64::MAX, |u| u.saturating_sub(1)),
    )
}

/// Hand `f` the blocks a query reads, newest first, until it returns `false`: those of its
/// request id, else of its login in its time range (up to `hi`), else of its time range.
fn query_blocks(
    conn: &rusqlite::Connection,
    q: &UsageQuery,
    hi: i64,
    mut f: impl FnMut(BlockRef) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    if let Some(id) = &q.request_id {
        for b in blocks_of_id(conn, id)? {
            if !f(b)? {
                break;
            }
        }
        return Ok(());
    }
    let key = q
        .login
        .as_ref()
        .map(|l| format!("{}{l}", usage_log::LOGIN_KEY));
    each_block(conn, key.as_deref(), time_range(q).0, hi, f)
}

/// Every record `q` selects (its cursor and limit aside), in no particular order.
fn for_each_match(
    conn: &rusqlite::Connection,
    q: &UsageQuery,
    mut f: impl FnMut(UsageRecord),
) -> Result<(), StoreError> {
    let filter = usage_log::Filter::new(q)?;
    query_blocks(conn, q, time_range(q).1, |(block, _)| {
        scan_block(conn, block, &filter, &mut f)?;
        Ok(true)
    })
}

/// A page of the log, newest first: blocks are read newest first until no block left can hold
/// a record of the page.
fn read_recent(
    conn: &rusqlite::Connection,
    q: &UsageQuery,
) -> Result<Vec<UsageRecord>, StoreError> {
    let filter = usage_log::Filter::new(q)?;
    let mut hi = time_range(q).1;
    let below = match &q.before_id {
        None => None,
        // An unknown cursor gives an empty page.
        Some(cursor) => match find_record(conn, cursor)? {
            None => return Ok(Vec::new()),
            Some(r) => {
                hi = hi.min(r.ts_ms);
                Some((r.ts_ms, r.id))
            }
        },
    };
    let mut page = usage_log::Page::newest(q, below);
    query_blocks(conn, q, hi, |(block, ts_max)| {
        if page.complete_before(ts_max) {
            return Ok(false);
        }
        scan_block(conn, block, &filter, |r| page.offer(r))?;
        Ok(true)
    })?;
    Ok(page.finish())
}

/// A session's records, oldest first: from the blocks keyed by the session, and for a single
/// request's session the blocks of its request.
fn read_session(
    conn: &rusqlite::Connection,
    session_id: &str,
    q: &UsageQuery,
) -> Result<Vec<UsageRecord>, StoreError> {
    let filter = usage_log::Filter::new(q)?.in_session(session_id);
    let key = format!("{}{session_id}", usage_log::SESSION_KEY);
    let mut blocks = select_blocks(conn, Some(&key), i64::MIN, i64::MAX)?;
    if let Some(id) = usage_log::single_session_request(session_id) {
        blocks.extend(blocks_of_id(conn, id)?);
    }
    let mut page = usage_log::Page::oldest(q);
    for (block, _) in newest_first(blocks) {
        scan_block(conn, block, &filter, |r| page.offer(r))?;
    }
    Ok(page.finish())
}

/// One step of converting schema 8's rows to blocks: up to [`CONVERT_CHUNK`] rows, oldest row
/// first, become blocks and leave the table, in one transaction; the table goes when it is
/// empty. A row that does not make a record (a negative counter: it failed every query that
/// read it before) is left out with a warning, not allowed to stop the store from opening.
/// Returns (records converted, whether there may be more).
fn convert_usage_chunk(tx: &rusqlite::Transaction<'_>) -> Result<(u64, bool), StoreError> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage_records')",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok((0, false));
    }
    let mut records = Vec::new();
    let mut last = None;
    {
        let mut select = tx.prepare(&format!(
            "SELECT rowid, {USAGE_COLUMNS} FROM usage_records ORDER BY rowid LIMIT ?1"
        ))?;
        let mut rows = select.query([CONVERT_CHUNK])?;
        while let Some(row) = rows.next()? {
            let rowid = row.get::<_, i64>(0)?;
            last = Some(rowid);
            match usage_from_row(row, 1) {
                Ok(r) => records.push(r),
                Err(e) => tracing::warn!(rowid, error = %e, "unreadable usage row left out"),
            }
        }
    }
    let Some(last) = last else {
        tx.execute_batch("DROP TABLE usage_records")?;
        return Ok((0, false));
    };
    if !records.is_empty() {
        insert_usage_blocks(tx, &usage_log::encode_batch(&records)?)?;
    }
    tx.execute("DELETE FROM usage_records WHERE rowid <= ?1", [last])?;
    Ok((records.len() as u64, true))
}

/// Convert the usage records a store of schema 8 or before kept a row each into blocks. The
/// store opens when it is done (about 5 s a million records, measured on this project's 2-core
/// machines), so a large log says how far it got as it goes.
async fn convert_usage_rows(writes: &Arc<BulkWriter>) -> Result<(), StoreError> {
    let mut converted = 0;
    let mut reported = 0;
    let mut announced = false;
    loop {
        let (n, more) = writes.write(convert_usage_chunk).await?;
        if more && !announced {
            announced = true;
            tracing::info!(
                "converting the usage log to blocks (schema 9); the store opens when it is done"
            );
        }
        converted += n;
        if !more {
            break;
        }
        if converted - reported >= CONVERT_REPORT_EVERY {
            reported = converted;
            tracing::info!(records = converted, "usage records converted so far");
        }
    }
    if converted > 0 {
        tracing::info!(
            records = converted,
            "usage records converted to the block store"
        );
    }
    Ok(())
}

/// One step of retention's `tools` purge: up to [`PURGE_USAGE_BLOCKS`] blocks (after block
/// `after`) holding a record older than `before_ms` that names tools are rewritten with those
/// names cleared. Returns the last block looked at when there may be more.
fn purge_usage_tools(
    tx: &rusqlite::Transaction<'_>,
    before_ms: i64,
    after: i64,
) -> Result<Option<i64>, StoreError> {
    let found: Vec<(i64, Vec<u8>)> = tx
        .prepare(
            "SELECT id, data FROM usage_blocks WHERE id > ?1 AND tools > 0 AND ts_min < ?2 \
             ORDER BY id LIMIT ?3",
        )?
        .query_map(
            rusqlite::params![after, before_ms, PURGE_USAGE_BLOCKS],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<Result<_, _>>()?;
    for (block, data) in &found {
        let mut records = match usage_log::decode(data) {
            Ok(records) => records,
            Err(e) => {
                // Left as it is; the reads that meet it count it (`skip_damaged`).
                tracing::warn!(block, error = %e, "damaged usage block left as it is");
                continue;
            }
        };
        for r in records.iter_mut().filter(|r| r.ts_ms < before_ms) {
            r.tool_names.clear();
        }
        let refs: Vec<&UsageRecord> = records.iter().collect();
        let rewritten = usage_log::encode_block(&refs)?;
        tx.execute(
            "UPDATE usage_blocks SET data = ?1, tools = ?2 WHERE id = ?3",
            rusqlite::params![rewritten.data, rewritten.tools, block],
        )?;
    }
    Ok((found.len() as i64 == PURGE_USAGE_BLOCKS)
        .then(|| found.last().map(|(id, _)| *id))
        .flatten())
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

    /// Every selection of usage blocks searches an index, never the whole table; and the time
    /// index serves them.
    #[tokio::test]
    async fn every_block_selection_uses_an_index() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let mut used = std::collections::BTreeSet::new();
        for (sql, params) in [(BLOCKS_IN_RANGE, 3), (BLOCKS_OF_KEY, 4), (BLOCK_DATA, 1)] {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let mut q = sqlx::query(&explain);
            for _ in 0..params {
                q = q.bind(1_i64);
            }
            let plan: Vec<String> = q
                .fetch_all(&store.reader)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>(3))
                .collect();
            assert!(
                plan.iter().all(|p| !p.starts_with("SCAN")),
                "{sql}: a whole-table scan: {plan:?}"
            );
            for step in &plan {
                if let Some(at) = step.find("INDEX ") {
                    let index = step[at + 6..].split_whitespace().next().unwrap_or("");
                    used.insert(index.to_owned());
                }
            }
            if sql == BLOCKS_OF_KEY {
                assert!(
                    plan.iter()
                        .any(|p| p.starts_with("SEARCH k USING PRIMARY KEY")),
                    "{plan:?}"
                );
            }
        }
        assert!(used.contains("usage_blocks_ts_max"), "{used:?}");
    }

    /// Records whose id carries their time (every record iris makes) get no key row of their
    /// own, nor does a single request's session: both are found through the time in the id.
    #[tokio::test]
    async fn records_are_found_by_the_time_in_their_id() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let mut records = Vec::new();
        for i in 0..300 {
            let (id, ts_ms) = crate::new_record_id_and_time();
            records.push(UsageRecord {
                request_id: id.clone(),
                session_id: Some(format!("rq_{id}")),
                capture_batch: Some(i),
                id,
                ts_ms,
                ..UsageRecord::default()
            });
            if i % 100 == 99 {
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            }
        }
        for chunk in records.chunks(64) {
            store.insert_usage(Arc::new(chunk.to_vec())).await.unwrap();
        }
        let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM usage_block_keys")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(keys, 0);
        let q = |request_id: Option<&str>, before_id: Option<&str>| UsageQuery {
            limit: 1,
            request_id: request_id.map(Into::into),
            before_id: before_id.map(Into::into),
            ..UsageQuery::default()
        };
        let mut newest_first = records.clone();
        newest_first.sort_by(|a, b| (b.ts_ms, &b.id).cmp(&(a.ts_ms, &a.id)));
        for (i, r) in newest_first.iter().enumerate() {
            let found = store.recent_usage(&q(Some(&r.id), None)).await.unwrap();
            assert_eq!(found.as_slice(), std::slice::from_ref(r));
            let session = store
                .session_records(r.session_id.as_deref().unwrap(), &q(None, None))
                .await
                .unwrap();
            assert_eq!(session.as_slice(), std::slice::from_ref(r));
            let next = store.recent_usage(&q(None, Some(&r.id))).await.unwrap();
            assert_eq!(next.first(), newest_first.get(i + 1));
        }
    }

    /// A page ends only when no block left can hold a record that sorts before its last: a
    /// record of the same millisecond in another block still counts, whichever block is read
    /// first.
    #[tokio::test]
    async fn a_page_takes_ties_from_every_block() {
        for order in [["a", "b"], ["b", "a"]] {
            let store = SqliteStore::open_temporary().await.unwrap();
            for id in order {
                let r = UsageRecord {
                    id: id.into(),
                    ts_ms: 1_000,
                    ..UsageRecord::default()
                };
                store.insert_usage(Arc::new(vec![r])).await.unwrap();
            }
            let page = store
                .recent_usage(&UsageQuery {
                    limit: 1,
                    ..UsageQuery::default()
                })
                .await
                .unwrap();
            assert_eq!(page[0].id, "b", "{order:?}");
        }
    }

    /// A block whose records straddle the end of a time range is read for the records before
    /// it, and one that straddles its start for those after it.
    #[tokio::test]
    async fn blocks_straddling_a_range_are_read() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let at = |id: &str, ts_ms: i64| UsageRecord {
            id: id.into(),
            ts_ms,
            ..UsageRecord::default()
        };
        let span = usage_log::SPAN_MS;
        store
            .insert_usage(Arc::new(vec![at("first", 1), at("last", span - 1)]))
            .await
            .unwrap();
        let ids = |q: UsageQuery| {
            let store = &store;
            async move {
                let page = store.recent_usage(&q).await.unwrap();
                page.into_iter().map(|r| r.id).collect::<Vec<_>>()
            }
        };
        let until = UsageQuery {
            until_ms: Some(2),
            ..UsageQuery::default()
        };
        assert_eq!(ids(until).await, ["first"]);
        let since = UsageQuery {
            since_ms: Some(span - 2),
            ..UsageQuery::default()
        };
        assert_eq!(ids(since).await, ["last"]);
    }

    /// A batch written again after retention rewrote its block (its tool names cleared) is
    /// still recognised as the same batch.
    #[tokio::test]
    async fn a_batch_rewritten_by_retention_is_still_the_same_batch() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let batch: Vec<UsageRecord> = (0..10)
            .map(|i| UsageRecord {
                id: format!("r{i}"),
                ts_ms: 1_000 + i,
                tool_names: vec!["bash".into()],
                ..UsageRecord::default()
            })
            .collect();
        store.insert_usage(Arc::new(batch.clone())).await.unwrap();
        store.purge(i64::MAX, true).await.unwrap();
        store.insert_usage(Arc::new(batch)).await.unwrap();
        assert_eq!(store.count_usage().await.unwrap(), 10);
    }

    /// A damaged usage block is skipped by every read, with a warning: the records of the other
    /// blocks are still listed, summed and found.
    #[tokio::test]
    async fn a_damaged_block_is_skipped_not_fatal() {
        let store = SqliteStore::open_temporary().await.unwrap();
        for i in 0..3i64 {
            let r = UsageRecord {
                id: format!("r{i}"),
                ts_ms: 1_000 + i,
                session_id: Some("cc_s".into()),
                ..UsageRecord::default()
            };
            store.insert_usage(Arc::new(vec![r])).await.unwrap();
        }
        assert_eq!(
            store
                .usage_summary(&UsageQuery::default(), GroupBy::Model)
                .await
                .unwrap()[0]
                .requests,
            3
        );
        assert_eq!(store.damaged_usage_blocks(), 0);
        sqlx::query("UPDATE usage_blocks SET data = x'28b52ffd00' WHERE id = 2")
            .execute(&store.writer)
            .await
            .unwrap();
        let all = UsageQuery {
            limit: 100,
            ..UsageQuery::default()
        };
        let ids: Vec<String> = store
            .recent_usage(&all)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, ["r2", "r0"]);
        let summary = store.usage_summary(&all, GroupBy::Model).await.unwrap();
        assert_eq!(summary[0].requests, 2);
        assert_eq!(store.sessions(&all, None).await.unwrap()[0].requests, 2);
        assert_eq!(store.session_records("cc_s", &all).await.unwrap().len(), 2);
        assert_eq!(store.capture("r1").await.unwrap(), None);
        // Every read skipped the same block: it is counted once.
        assert_eq!(store.damaged_usage_blocks(), 1);
    }

    fn old_record(i: i64) -> UsageRecord {
        let (id, ts) = crate::new_record_id_and_time();
        UsageRecord {
            id: id.clone(),
            request_id: id,
            ts_ms: ts - i * 1_000,
            login: Some(format!("user{}", i % 3)),
            tags: if i % 2 == 0 {
                vec![]
            } else {
                vec!["tag:a".into(), "tag:b".into()]
            },
            identity_source: "whois".into(),
            api_family: "openai_chat".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            requested_model: Some("gpt-4o".into()),
            status: 200,
            input_tokens: i as u64,
            usage_known: true,
            ttfb_ms: (i % 2 == 0).then_some(3),
            session_id: Some(format!("cc_{}", i % 7)),
            cost_usd: (i % 5 != 0).then_some(0.5),
            tool_names: if i % 11 == 0 {
                vec!["bash".into()]
            } else {
                vec![]
            },
            capture_batch: (i % 13 == 0).then_some(i),
            ..UsageRecord::default()
        }
    }

    /// A database as schema 8 left it, holding `records` a row each.
    fn schema_8_database(path: &Path, records: &[UsageRecord]) {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, \
             description TEXT NOT NULL, installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, \
             success BOOLEAN NOT NULL, checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
        )
        .unwrap();
        for m in MIGRATOR.iter().filter(|m| m.version <= 8) {
            conn.execute_batch(&m.sql).unwrap();
            conn.execute(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                 execution_time) VALUES (?1, ?2, 1, ?3, 0)",
                rusqlite::params![m.version, m.description.as_ref(), m.checksum.as_ref()],
            )
            .unwrap();
        }
        let placeholders = vec!["?"; USAGE_COLUMN_COUNT].join(", ");
        let mut insert = conn
            .prepare(&format!(
                "INSERT INTO usage_records ({USAGE_COLUMNS}) VALUES ({placeholders})"
            ))
            .unwrap();
        let n = |v: u64| i64::try_from(v).unwrap();
        for r in records {
            let tools = serde_json::to_string(&r.tool_names).unwrap();
            let values: [&dyn rusqlite::ToSql; USAGE_COLUMN_COUNT] = [
                &r.id,
                &r.ts_ms,
                &r.request_id,
                &r.login,
                &r.display_name,
                &r.tags.join(","),
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
                &r.status,
                &r.error_class,
                &n(r.input_tokens),
                &n(r.output_tokens),
                &n(r.cache_read_tokens),
                &n(r.cache_write_tokens),
                &n(r.reasoning_tokens),
                &r.usage_known,
                &r.ttfb_ms.map(n),
                &n(r.duration_ms),
                &n(r.bytes_in),
                &n(r.bytes_out),
                &r.user_agent,
                &r.session_id,
                &r.session_kind,
                &r.cost_usd,
                &r.priced_as,
                &tools,
                &r.capture_batch,
            ];
            insert.execute(values.as_slice()).unwrap();
        }
    }

    /// A store of schema 8 (a row per record) has its records converted to blocks when it
    /// opens, in several steps: every record reads back the same, and the table is gone.
    #[tokio::test]
    async fn records_of_schema_8_are_converted_to_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let records: Vec<UsageRecord> = (0..12_000).map(old_record).collect();
        schema_8_database(&path, &records);
        // A row no record can be made of (it failed every query that read it before).
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute(
                &format!(
                    "INSERT INTO usage_records ({USAGE_COLUMNS}) SELECT 'bad', ts_ms, 'bad', \
                     login, display_name, tags, node, node_id, identity_source, key_id, \
                     api_family, method, path, requested_model, provider, upstream_model, \
                     streaming, status, error_class, -1, output_tokens, cache_read_tokens, \
                     cache_write_tokens, reasoning_tokens, usage_known, ttfb_ms, duration_ms, \
                     bytes_in, bytes_out, user_agent, session_id, session_kind, cost_usd, \
                     priced_as, tool_names, capture_batch FROM usage_records LIMIT 1"
                ),
                [],
            )
            .unwrap();
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.count_usage().await.unwrap(), 12_000);
        let all = |before_id: Option<String>| UsageQuery {
            limit: UsageQuery::MAX_LIMIT,
            before_id,
            ..UsageQuery::default()
        };
        let mut back = store.recent_usage(&all(None)).await.unwrap();
        let cursor = back.last().unwrap().id.clone();
        back.extend(store.recent_usage(&all(Some(cursor))).await.unwrap());
        let mut want = records.clone();
        want.sort_by(|a, b| (b.ts_ms, &b.id).cmp(&(a.ts_ms, &a.id)));
        assert_eq!(back, want);
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'usage%' \
             ORDER BY name",
        )
        .fetch_all(&store.reader)
        .await
        .unwrap();
        assert_eq!(tables, ["usage_block_keys", "usage_blocks"]);
        // A session of the old rows is found through its key, a capture through its record.
        let session = store.session_records("cc_3", &all(None)).await.unwrap();
        let in_session = records
            .iter()
            .filter(|r| r.session_id.as_deref() == Some("cc_3"))
            .count();
        assert_eq!(session.len(), in_session);
        store.close().await;
        // Opening it again finds nothing left to convert.
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.count_usage().await.unwrap(), 12_000);
        store.close().await;
    }

    /// Retention's `tools` purge clears the tool names of old records in their blocks, and only
    /// theirs, however many blocks it takes.
    #[tokio::test]
    async fn the_tools_purge_rewrites_blocks_without_old_tool_names() {
        let store = SqliteStore::open_temporary().await.unwrap();
        let records: Vec<UsageRecord> = (0..80i64)
            .map(|i| UsageRecord {
                id: format!("r{i:02}"),
                request_id: format!("r{i:02}"),
                ts_ms: i * 100_000,
                tool_names: vec![format!("tool{i}")],
                ..UsageRecord::default()
            })
            .collect();
        for chunk in records.chunks(2) {
            store.insert_usage(Arc::new(chunk.to_vec())).await.unwrap();
        }
        store.purge(6_000_000, true).await.unwrap();
        let all = store
            .recent_usage(&UsageQuery {
                limit: 100,
                ..UsageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 80);
        for r in &all {
            assert_eq!(r.tool_names.is_empty(), r.ts_ms < 6_000_000, "{}", r.id);
        }
        let with_tools: i64 = sqlx::query_scalar("SELECT SUM(tools) FROM usage_blocks")
            .fetch_one(&store.reader)
            .await
            .unwrap();
        assert_eq!(with_tools, 20);
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
        assert!(from_sql_int("t", "c", -1).is_err());
    }

    #[test]
    fn usage_column_count_matches_the_column_list() {
        assert_eq!(USAGE_COLUMNS.split(',').count(), USAGE_COLUMN_COUNT);
    }
}
