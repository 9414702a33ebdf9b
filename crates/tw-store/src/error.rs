//! `StoreError`: what can go wrong on disk, sorted by what the caller should do about it.
//!
//! The recorder retries a batch only when [`StoreError::is_retryable`] says the database was
//! temporarily unable to take it (busy, locked, disk full, IO, pool closed). Everything else is
//! a bug, a damaged file or a schema mismatch, and retrying would fail the same way. The sqlx
//! error stays reachable as the `source` for logs, but no function of this crate takes or
//! returns a sqlx type, and the conversion is crate-private on purpose.

use std::fmt::Display;

/// SQLite primary result codes that describe the environment rather than the statement:
/// another writer, memory, the disk or the file. <https://www.sqlite.org/rescode.html>
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
/// A read-only database is an operator problem (permissions, a remount after disk errors);
/// once fixed, the same batch goes through, so it is worth retrying.
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_PROTOCOL: i64 = 15;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not take the request right now: busy or locked past the busy
    /// timeout, disk full, an IO error, or the pool closed. Retrying later may succeed.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Applying the migrations in `migrations/` failed, or the database has migrations this
    /// build does not know or whose checksum changed.
    #[error("database migration failed")]
    Migration(#[source] sqlx::migrate::MigrateError),
    /// A stored value is not one this build understands (an unknown status, reason or check
    /// kind, evidence JSON that does not parse), or a value could not be encoded for storage.
    #[error("stored value could not be decoded: {0}")]
    Decode(String),
    /// Any other database failure: a constraint, a malformed statement, a damaged file.
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
}

impl StoreError {
    /// True when the same request may succeed later without anything in tenantwatch changing.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// Sorts a sqlx error into `Unavailable` or `Query` by whether it describes the
    /// environment or the request.
    pub(crate) fn from_sqlx(err: sqlx::Error) -> StoreError {
        if is_environmental(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Query(err)
        }
    }

    pub(crate) fn decode(what: &str, detail: impl Display) -> StoreError {
        StoreError::Decode(format!("{what}: {detail}"))
    }
}

fn is_environmental(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db_err) => {
            // sqlx reports SQLite's extended result code as a decimal string; the primary code
            // is its low byte (e.g. SQLITE_BUSY_SNAPSHOT 517 is SQLITE_BUSY 5).
            let primary = db_err
                .code()
                .and_then(|code| code.parse::<i64>().ok())
                .map(|code| code & 0xff);
            matches!(
                primary,
                Some(
                    SQLITE_BUSY
                        | SQLITE_LOCKED
                        | SQLITE_NOMEM
                        | SQLITE_READONLY
                        | SQLITE_IOERR
                        | SQLITE_FULL
                        | SQLITE_CANTOPEN
                        | SQLITE_PROTOCOL
                )
            )
        }
        _ => false,
    }
}
