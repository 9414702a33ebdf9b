//! The `meta` table and the readiness write probe.
//!
//! `/readyz` must say whether a batch could be written now. An actual write is the only
//! honest test: `BEGIN IMMEDIATE` alone takes the lock but writes nothing, so it would not
//! notice a full disk or a read-only file. Rewriting one small row costs one WAL frame.

use sqlx::SqlitePool;
use tw_core::Timestamp;

use crate::StoreError;

pub(crate) async fn check_writable(pool: &SqlitePool) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO meta (key, value) VALUES ('writable_checked_at', ?1) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .bind(Timestamp::now().as_millis().to_string())
    .execute(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    Ok(())
}
