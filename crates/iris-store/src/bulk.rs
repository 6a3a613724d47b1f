//! The connections usage records and captures are written on (one each).
//!
//! Everything else in the SQLite backend goes through sqlx. These two writes do not: they
//! happen once per proxied request each, and sqlx's way of running a statement (every bound
//! text copied into an owned argument list, the statement handed over a channel to sqlx's
//! worker thread, every binding cleared again afterwards) cost about as much CPU as SQLite's
//! own work. Here a plain rusqlite connection runs the batch on tokio's blocking pool: the
//! batch's blocks (usage records, `usage_log.rs`; captures, `blocks.rs`) compressed first, then
//! written in one transaction with cached statements. (ARCHITECTURE.md, "Why some things are
//! our own code".)
//!
//! The usage log is read here too ([`ReadPool`]): a read decodes blocks, CPU work that belongs
//! on the blocking pool rather than on a request worker.
//!
//! A connection is opened on first use and dropped after any failed write, so the next
//! write starts on a fresh connection whatever state a failure (a full disk, an I/O error in
//! the middle of a COMMIT) left behind.
//!
//! Usage records and captures have a connection each: a write waits out a lock another
//! process holds for the busy timeout (5 s), and a usage batch must not wait for that behind
//! a capture batch that is itself waiting (under load a new capture batch is ready as soon as
//! the last one gave up, so the usage writer could wait behind them indefinitely and never
//! report the store failing). Between the two connections SQLite's busy handler takes turns.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

use crate::StoreError;
use crate::sqlite::BUSY_TIMEOUT;

/// How a write connection commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// `synchronous = FULL`: a committed batch is on disk (see `SqliteStore::open`).
    Full,
    /// `synchronous = OFF`: for a temporary database, which does not outlive the process.
    Off,
}

/// One write connection to a database file whose schema is already in place.
pub(crate) struct BulkWriter {
    path: PathBuf,
    durability: Durability,
    /// Prepares, into a new connection's cache, every statement the writer runs.
    prepare: Prepare,
    conn: Mutex<Slot>,
}

type Prepare = fn(&Connection) -> rusqlite::Result<()>;

/// The connection, opened on first use; `Closed` once the store is closed, after which writes
/// are refused instead of opening a connection nobody would close.
enum Slot {
    Idle,
    Open(Connection),
    Closed,
}

impl std::fmt::Debug for BulkWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkWriter")
            .field("path", &self.path)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl BulkWriter {
    pub(crate) fn new(path: PathBuf, durability: Durability, prepare: Prepare) -> Arc<BulkWriter> {
        Arc::new(BulkWriter {
            path,
            durability,
            prepare,
            conn: Mutex::new(Slot::Idle),
        })
    }

    /// Run `f` in one `BEGIN IMMEDIATE` transaction, on the blocking pool; commit when it
    /// returns `Ok`. Nothing of a failed write stays: it is rolled back, whichever step failed.
    pub(crate) async fn write<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_prepared(|| Ok(()), move |tx, ()| f(tx)).await
    }

    /// Like [`write`](Self::write), with CPU work that needs no lock (compressing a block)
    /// done first by `prepare`, on the same blocking thread, before the transaction takes
    /// SQLite's write lock: the other write connection waits only for the database work.
    pub(crate) async fn write_prepared<P, T, F>(
        self: &Arc<Self>,
        prepare: impl FnOnce() -> Result<P, StoreError> + Send + 'static,
        f: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, P) -> Result<T, StoreError> + Send + 'static,
    {
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            crate::pace::start();
            let prepared = prepare()?;
            this.write_now(move |tx| f(tx, prepared))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the store's write task failed: {e}")))?
    }

    fn write_now<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.lock();
        if matches!(*guard, Slot::Idle) {
            *guard = Slot::Open(self.open()?);
        }
        let Slot::Open(conn) = &mut *guard else {
            return Err(StoreError::Unavailable("the store is closed".into()));
        };
        let result = in_transaction(conn, f);
        if result.is_err() {
            // The transaction was rolled back when it was dropped; if the connection still
            // has one open (a failed ROLLBACK), try once more. Then start over next time.
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            *guard = Slot::Idle;
        }
        result
    }

    /// Close the connection (the last connection to a WAL database to close checkpoints it).
    /// Later writes are refused.
    pub(crate) async fn close(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let closed = tokio::task::spawn_blocking(move || {
            let slot = std::mem::replace(&mut *this.lock(), Slot::Closed);
            if let Slot::Open(conn) = slot
                && let Err((_, e)) = conn.close()
            {
                tracing::debug!(error = %e, "closing the store's bulk write connection failed");
            }
        })
        .await;
        if let Err(e) = closed {
            tracing::debug!(error = %e, "closing the store's bulk write connection failed");
        }
    }

    /// The connection slot. A panic while it was held (a bug) leaves it poisoned: the
    /// connection it held is dropped (which rolls back an open transaction) and a fresh one is
    /// opened next time.
    fn lock(&self) -> MutexGuard<'_, Slot> {
        match self.conn.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                if matches!(*g, Slot::Open(_)) {
                    *g = Slot::Idle;
                }
                self.conn.clear_poison();
                g
            }
        }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        // The file exists and has its schema: `SqliteStore` opened and migrated it first.
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let synchronous = match self.durability {
            Durability::Full => "FULL",
            Durability::Off => "OFF",
        };
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Every INSERT of the ladders stays prepared: they are all this connection runs.
        conn.set_prepared_statement_cache_capacity(crate::sqlite::bulk_statements());
        (self.prepare)(&conn)?;
        Ok(conn)
    }
}

/// Connections the usage log is read on (rusqlite, like its writes: a read decodes blocks, which
/// is CPU work for the blocking pool, not for a request worker). Connections are opened on
/// demand; at most [`READ_CONNECTIONS`] reads run at once, and as many connections stay idle.
pub(crate) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    closed: std::sync::atomic::AtomicBool,
    /// One permit per read running. A read is CPU work (decoding blocks) and holds blocks in
    /// memory: more reads at once than this only share the same cores and add memory, and
    /// each would open a connection of its own. Later reads wait their turn.
    running: Arc<tokio::sync::Semaphore>,
    /// The damaged blocks reads have skipped (see [`note_skipped_block`]), at most
    /// [`DAMAGED_KEPT`] of them.
    damaged: Mutex<std::collections::BTreeSet<i64>>,
}

/// Damaged blocks a pool remembers (distinct ids): enough to say how bad it is.
const DAMAGED_KEPT: usize = 10_000;

thread_local! {
    /// The damaged blocks the read running on this thread skipped.
    static SKIPPED: std::cell::RefCell<Vec<i64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A read skipped block `block` as damaged: the pool running the read counts it
/// ([`ReadPool::damaged_blocks`]). Only reads call it (the list is emptied at each read's start
/// and end).
pub(crate) fn note_skipped_block(block: i64) {
    SKIPPED.with(|s| s.borrow_mut().push(block));
}

fn take_skipped() -> Vec<i64> {
    SKIPPED.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

/// Read connections: at most this many reads run at once, and as many connections stay open.
const READ_CONNECTIONS: usize = 4;

/// Statements a read connection keeps prepared (the few block selections and the block read).
const READ_STATEMENTS: usize = 8;

impl std::fmt::Debug for ReadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadPool")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ReadPool {
    pub(crate) fn new(path: PathBuf) -> Arc<ReadPool> {
        Arc::new(ReadPool {
            path,
            idle: Mutex::new(Vec::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            running: Arc::new(tokio::sync::Semaphore::new(READ_CONNECTIONS)),
            damaged: Mutex::new(std::collections::BTreeSet::new()),
        })
    }

    /// Distinct damaged blocks reads have skipped since the pool was made (at most
    /// [`DAMAGED_KEPT`]).
    pub(crate) fn damaged_blocks(&self) -> u64 {
        self.damaged.lock().unwrap_or_else(|p| p.into_inner()).len() as u64
    }

    /// Run `f` on a connection, in one read transaction (one snapshot of the database), on the
    /// blocking pool.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        // Given back when the read ends, also if its task is cancelled or panics.
        let permit = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if this.closed.load(std::sync::atomic::Ordering::Acquire) {
                return Err(StoreError::Unavailable("the store is closed".into()));
            }
            let taken = this.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            let conn = match taken {
                Some(c) => c,
                None => {
                    // Read-write (SQLite falls back to reading only on a read-only file), so
                    // the connection can take part in the WAL whatever state its files are in;
                    // `query_only` keeps it from writing.
                    let c = Connection::open_with_flags(
                        &this.path,
                        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    c.busy_timeout(BUSY_TIMEOUT)?;
                    c.pragma_update(None, "query_only", "ON")?;
                    c.set_prepared_statement_cache_capacity(READ_STATEMENTS);
                    c
                }
            };
            take_skipped();
            let result = {
                let tx = conn.unchecked_transaction()?;
                f(&tx)
            };
            let skipped = take_skipped();
            if !skipped.is_empty() {
                let mut damaged = this.damaged.lock().unwrap_or_else(|p| p.into_inner());
                for block in skipped {
                    if damaged.len() < DAMAGED_KEPT {
                        damaged.insert(block);
                    }
                }
            }
            if result.is_ok() {
                let mut idle = this.idle.lock().unwrap_or_else(|p| p.into_inner());
                // Under the lock `close` takes: a connection is never kept after it.
                if idle.len() < READ_CONNECTIONS
                    && !this.closed.load(std::sync::atomic::Ordering::Acquire)
                {
                    idle.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the store's read task failed: {e}")))?
    }

    /// Close the idle connections; later reads are refused, and so are reads waiting their turn.
    pub(crate) fn close(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.running.close();
        idle.clear();
    }
}

fn in_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    // IMMEDIATE: the write lock is taken (waiting out the busy timeout) before any work, so a
    // transaction never fails half way for want of it.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = f(&tx)?;
    tx.commit()?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT NOT NULL);",
        )
        .unwrap();
        (dir, path)
    }

    fn insert(id: &'static str) -> impl FnOnce(&Transaction<'_>) -> Result<(), StoreError> {
        move |tx| {
            tx.execute("INSERT INTO t (id, v) VALUES (?1, 'x')", [id])?;
            Ok(())
        }
    }

    fn count(path: &std::path::Path) -> i64 {
        Connection::open(path)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    /// The errors SQLite really gives this connection for a held lock, a full database and a
    /// read-only file are transient (the usage writer retries); a constraint is permanent.
    #[test]
    fn real_errors_are_classified_like_the_sqlx_ones() {
        let (_dir, path) = scratch();
        let impatient = Connection::open(&path).unwrap();
        impatient.busy_timeout(std::time::Duration::ZERO).unwrap();

        let locker = Connection::open(&path).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let locked = StoreError::from(
            impatient
                .execute("INSERT INTO t (id, v) VALUES ('a', 'x')", [])
                .unwrap_err(),
        );
        assert!(locked.to_string().contains("locked"), "{locked}");
        assert!(!locked.is_permanent(), "{locked}");
        locker.execute_batch("ROLLBACK").unwrap();

        let capped = Connection::open(&path).unwrap();
        let pages: i64 = capped
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        capped.pragma_update(None, "max_page_count", pages).unwrap();
        let big = "x".repeat(64 << 10);
        let full = StoreError::from(
            capped
                .execute("INSERT INTO t (id, v) VALUES ('b', ?1)", [&big])
                .unwrap_err(),
        );
        assert!(full.to_string().contains("full"), "{full}");
        assert!(!full.is_permanent(), "{full}");

        let ro = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let readonly = StoreError::from(
            ro.execute("INSERT INTO t (id, v) VALUES ('c', 'x')", [])
                .unwrap_err(),
        );
        assert!(readonly.to_string().contains("readonly"), "{readonly}");
        assert!(!readonly.is_permanent(), "{readonly}");

        let dup = StoreError::from(
            impatient
                .execute("INSERT INTO t (id, v) VALUES ('d', 'x'), ('d', 'y')", [])
                .unwrap_err(),
        );
        assert!(dup.is_permanent(), "{dup}");
    }

    #[tokio::test]
    async fn a_failed_write_is_rolled_back_and_the_next_starts_afresh() {
        let (_dir, path) = scratch();
        let writer = BulkWriter::new(path.clone(), Durability::Off, |_| Ok(()));
        writer.write(insert("a")).await.unwrap();
        // The second row fails after the first went in: neither stays.
        let err = writer
            .write(|tx| {
                insert("b")(tx)?;
                insert("a")(tx)
            })
            .await
            .unwrap_err();
        assert!(err.is_permanent(), "{err}");
        assert_eq!(count(&path), 1);
        writer.write(insert("b")).await.unwrap();
        assert_eq!(count(&path), 2);

        // A write that panics (a bug) fails alone; the connection is replaced.
        let panicked = writer
            .write(|tx| -> Result<(), StoreError> {
                insert("c")(tx)?;
                panic!("bug in a write")
            })
            .await
            .unwrap_err();
        assert!(!panicked.is_permanent(), "{panicked}");
        writer.write(insert("d")).await.unwrap();
        assert_eq!(count(&path), 3);

        // Closed: writes are refused (transient for the usage writer), nothing reopens.
        writer.close().await;
        let refused = writer.write(insert("e")).await.unwrap_err();
        assert!(matches!(refused, StoreError::Unavailable(_)), "{refused}");
        assert_eq!(count(&path), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_beyond_the_pool_wait_their_turn_and_closing_refuses_them() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (_dir, path) = scratch();
        let pool = ReadPool::new(path);
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let reads: Vec<_> = (0..4 * READ_CONNECTIONS)
            .map(|_| {
                let (pool, now, most) = (pool.clone(), now.clone(), most.clone());
                tokio::spawn(async move {
                    pool.read(move |c| {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        let rows: i64 = c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok(rows)
                    })
                    .await
                })
            })
            .collect();
        for r in reads {
            assert_eq!(r.await.unwrap().unwrap(), 0);
        }
        // Never more at once than the pool's bound, and the bound is used (each read lasts
        // 50 ms, so the four running reads overlap).
        assert_eq!(most.load(Ordering::SeqCst), READ_CONNECTIONS);

        // A read waiting for its turn when the pool closes is refused, not run.
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let release = Arc::new(Mutex::new(release));
        let busy: Vec<_> = (0..READ_CONNECTIONS)
            .map(|_| {
                let (pool, release) = (pool.clone(), release.clone());
                tokio::spawn(async move {
                    pool.read(move |_| {
                        let _ = release.lock().unwrap().recv();
                        Ok(())
                    })
                    .await
                })
            })
            .collect();
        while pool.running.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut waiting = Box::pin(pool.read({
            let ran = ran.clone();
            move |_| {
                ran.store(true, Ordering::SeqCst);
                Ok(())
            }
        }));
        let short = std::time::Duration::from_millis(50);
        assert!(
            tokio::time::timeout(short, &mut waiting).await.is_err(),
            "the fifth read waits while four run"
        );
        pool.close();
        let refused = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("a waiting read is refused when the pool closes")
            .unwrap_err();
        assert!(matches!(refused, StoreError::Unavailable(_)), "{refused}");
        assert!(!ran.load(Ordering::SeqCst));
        drop(hold);
        for b in busy {
            // Begun before the close: they end as they would, and no connection is kept.
            let _ = b.await.unwrap();
        }
        assert!(pool.idle.lock().unwrap().is_empty());
    }
}
