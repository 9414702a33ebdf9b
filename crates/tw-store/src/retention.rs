//! Retention: deleting old history without ever deleting a current state's evidence, and
//! thinning old ok samples to one per key per day (`store.thin_ok_after`).
//!
//! Deletion runs in chunks, each its own short transaction taken through the store's writer
//! lock, so a prune of millions of rows lets the recorder's batches in between instead of
//! holding SQLite's write lock past their busy timeout.

use sqlx::SqlitePool;
use tokio::sync::Mutex;
use tw_core::Timestamp;

use crate::check_state::StateCache;
use crate::StoreError;

/// Rows per delete transaction: large enough that the per-statement cost does not dominate,
/// small enough that one chunk holds the write lock for milliseconds.
const CHUNK: u32 = 5_000;

/// Thins the ok samples that started before `before` to the first of each key in each
/// `keep_one_per` bucket (buckets counted from the Unix epoch, so a bucket is a UTC day for
/// `1d`). Only repeated-ok samples go (`status = 'ok' AND state_change = 0`): every state
/// change and every non-ok observation stays until retention, and so does the observation a
/// current state started with. Idempotent: the row a bucket keeps is its smallest id, which
/// a later run keeps again.
pub(crate) async fn thin_ok_samples(
    pool: &SqlitePool,
    writer: &Mutex<Option<StateCache>>,
    before: Timestamp,
    keep_one_per: std::time::Duration,
) -> Result<u64, StoreError> {
    let bucket_ms = i64::try_from(keep_one_per.as_millis())
        .unwrap_or(i64::MAX)
        .max(1);
    // The correlated MIN uses observations_check_started (check_id, started_at) to look only
    // at the key's rows inside the bucket.
    delete_in_chunks(
        pool,
        writer,
        "DELETE FROM observations WHERE id IN ( \
             SELECT o.id FROM observations o \
             WHERE o.started_at < ?1 AND o.status = 'ok' AND o.state_change = 0 \
               AND o.id != ( \
                   SELECT MIN(p.id) FROM observations p \
                   WHERE p.check_id = o.check_id \
                     AND p.started_at >= (o.started_at / ?3) * ?3 \
                     AND p.started_at < (o.started_at / ?3) * ?3 + ?3 \
                     AND p.status = 'ok' AND p.state_change = 0) \
               AND NOT EXISTS (SELECT 1 FROM check_state c WHERE c.change_id = o.id) \
             ORDER BY o.started_at LIMIT ?2)",
        &[before.as_millis(), i64::from(CHUNK), bucket_ms],
    )
    .await
}

/// Runs `sql`, a DELETE of at most `?2` rows (`CHUNK`) bound to `binds` in order, until a
/// run deletes fewer: each chunk its own statement under the store's writer lock, so the
/// recorder's batches get in between. Returns the rows deleted.
async fn delete_in_chunks(
    pool: &SqlitePool,
    writer: &Mutex<Option<StateCache>>,
    sql: &str,
    binds: &[i64],
) -> Result<u64, StoreError> {
    let mut deleted: u64 = 0;
    loop {
        // The cache is not touched: it holds no observation ids, and `last_stored_at` is
        // still the right basis for sampling after the row itself is gone.
        let _writer = writer.lock().await;
        let query = binds
            .iter()
            .fold(sqlx::query(sql), |query, value| query.bind(*value));
        let chunk = query
            .execute(pool)
            .await
            .map_err(StoreError::from_sqlx)?
            .rows_affected();
        deleted += chunk;
        if chunk < u64::from(CHUNK) {
            return Ok(deleted);
        }
    }
}

pub(crate) async fn prune(
    pool: &SqlitePool,
    writer: &Mutex<Option<StateCache>>,
    older_than: Timestamp,
) -> Result<u64, StoreError> {
    // The observation a key's current state started with is kept at any age, so every
    // current verdict can still show its evidence; the foreign key from check_state.change_id
    // would refuse the delete anyway.
    let deleted = delete_in_chunks(
        pool,
        writer,
        "DELETE FROM observations WHERE id IN ( \
             SELECT o.id FROM observations o \
             WHERE o.started_at < ?1 \
               AND NOT EXISTS (SELECT 1 FROM check_state c WHERE c.change_id = o.id) \
             ORDER BY o.started_at LIMIT ?2)",
        &[older_than.as_millis(), i64::from(CHUNK)],
    )
    .await?;

    let _writer = writer.lock().await;
    // Finished notifications (sent, failed, expired) and their attempts go with the same
    // retention; pending ones stay whatever their age until they finish or expire.
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::from_sqlx)?;
    sqlx::query(
        "DELETE FROM deliveries WHERE outbox_id IN \
         (SELECT id FROM outbox WHERE state != 'pending' AND finished_at < ?1)",
    )
    .bind(older_than.as_millis())
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from_sqlx)?;
    sqlx::query("DELETE FROM outbox WHERE state != 'pending' AND finished_at < ?1")
        .bind(older_than.as_millis())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
    tx.commit().await.map_err(StoreError::from_sqlx)?;
    // auto_vacuum=INCREMENTAL only marks freed pages; this hands them back to the file system.
    sqlx::query("PRAGMA incremental_vacuum")
        .execute(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    // TRUNCATE resets the WAL to zero bytes, so the space the deletes wrote there is returned
    // too. It reports `busy` when a reader kept it from finishing; the next prune catches up.
    let (busy, _log_frames, _checkpointed) =
        sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(pool)
            .await
            .map_err(StoreError::from_sqlx)?;
    if busy != 0 {
        tracing::debug!("WAL checkpoint after prune was blocked by a reader");
    }
    tracing::debug!(deleted, older_than = %older_than, "Observations pruned");
    Ok(deleted)
}
