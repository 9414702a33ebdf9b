//! Opening the database: the file, the pragmas every connection needs, and the migrations.
//!
//! The pragmas are set on every connection by sqlx's connect options, in the order SQLite
//! needs: `auto_vacuum` before `journal_mode`, so a new file gets incremental vacuum before
//! its first table exists (afterwards it would take a full `VACUUM` to change).

use std::path::Path;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::StoreError;

/// The schema, embedded at build time so the binary never depends on files next to it.
static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// How long a statement waits for another writer before failing with `Unavailable`. Long
/// enough to ride out a prune chunk or a checkpoint, short enough that the recorder notices a
/// stuck database well within its retry buffer.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The WAL is truncated to this size after checkpoints, so a burst of writes does not leave a
/// large file behind for good.
const JOURNAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// Writes are serialised by the store itself (one writer, as SQLite wants); the extra
/// connections are for readers (API, status page) that WAL lets run beside the writer.
const MAX_CONNECTIONS: u32 = 4;

pub(crate) async fn connect(path: &Path) -> Result<SqlitePool, StoreError> {
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|err| StoreError::Unavailable(sqlx::Error::Io(err)))?;
    }

    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .auto_vacuum(SqliteAutoVacuum::Incremental)
        .journal_mode(SqliteJournalMode::Wal)
        // NORMAL in WAL mode can lose the last commits on power loss but never corrupts the
        // file; an fsync per batch is not worth it for monitoring history.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true)
        .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string());

    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .after_release(|conn, _| Box::pin(async move { Ok(out_of_transaction(conn).await) }))
        .connect_with(options)
        .await
        .map_err(StoreError::from_sqlx)?;

    // Applied migrations are recorded in `_sqlx_migrations`, so reopening runs none of them
    // again, and a changed or unknown applied migration is refused instead of guessed at.
    if let Err(err) = MIGRATOR.run(&pool).await {
        pool.close().await;
        return Err(StoreError::Migration(err));
    }
    Ok(pool)
}

/// Whether a connection handed back to the pool may be reused. A COMMIT that fails on a full
/// disk or an IO error leaves the transaction rolled back by SQLite itself; the ROLLBACK that
/// sqlx then sends fails ("no transaction is active"), so sqlx goes on counting the connection
/// as inside a transaction, and every later `BEGIN IMMEDIATE` on it fails for good ("begin_with
/// at non-zero transaction depth"). Such a connection is closed and replaced instead. The
/// ping waits for a rollback still queued by a dropped transaction, so only a connection that
/// is really stuck is closed.
async fn out_of_transaction(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    if conn.is_in_transaction() {
        let _ = conn.ping().await;
    }
    !conn.is_in_transaction()
}
