//! Alert state and the notification outbox.
//!
//! The store treats an alert state as opaque JSON (tw-alert owns its shape) and a message as
//! opaque JSON (tw-notify owns that). What it guarantees: alert states and outbox rows commit
//! with the observations that caused them (`record.rs`), an event is enqueued once per
//! receiver (`dedup_key`), and each receiver's rows are handed out oldest first, one at a time,
//! so a receiver sees its notifications in order.

use sqlx::{SqliteConnection, SqlitePool};
use tw_core::{CheckKind, Timestamp};

use crate::codec;
use crate::StoreError;

/// The alert evaluator's state of one (tenant, check, target), as JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertStateRow {
    pub tenant: String,
    pub check: CheckKind,
    pub target: String,
    pub state_json: String,
}

/// A notification to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// Unique per (event, receiver); a second insert with the same key is ignored.
    pub dedup_key: String,
    pub receiver: String,
    pub message_json: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What the recorder commits with a batch besides the observations.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertWrites {
    pub states: Vec<AlertStateRow>,
    pub deliveries: Vec<NewDelivery>,
}

impl AlertWrites {
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.deliveries.is_empty()
    }
}

/// A pending notification handed to the dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDelivery {
    pub id: i64,
    pub dedup_key: String,
    pub receiver: String,
    pub message_json: String,
    pub attempts: u32,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Sent,
    /// Try again at `retry_at` (capped backoff decided by the dispatcher).
    Transient {
        error: String,
        retry_at: Timestamp,
    },
    /// The receiver refused it for good.
    Permanent {
        error: String,
    },
}

/// Outbox figures for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    pub pending: u64,
    pub oldest_pending_created_at: Option<Timestamp>,
    pub expired: u64,
    pub failed: u64,
}

/// Writes alert states and new outbox rows inside the recorder's open transaction. Returns how
/// many outbox rows were new (the rest were already enqueued).
pub(crate) async fn stage(
    conn: &mut SqliteConnection,
    writes: &AlertWrites,
    now: Timestamp,
) -> Result<usize, StoreError> {
    for row in &writes.states {
        sqlx::query(
            "INSERT INTO alert_state (check_id, state, updated_at) \
             SELECT id, ?1, ?2 FROM check_state WHERE tenant = ?3 AND check_kind = ?4 AND target = ?5 \
             ON CONFLICT (check_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
        )
        .bind(&row.state_json)
        .bind(now.as_millis())
        .bind(&row.tenant)
        .bind(row.check.as_str())
        .bind(&row.target)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    }
    let mut inserted = 0;
    for delivery in &writes.deliveries {
        let result = sqlx::query(
            "INSERT INTO outbox (dedup_key, receiver, message, created_at, next_attempt_at, expires_at, state) \
             VALUES (?1, ?2, ?3, ?4, ?4, ?5, 'pending') ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(&delivery.dedup_key)
        .bind(&delivery.receiver)
        .bind(&delivery.message_json)
        .bind(delivery.created_at.as_millis())
        .bind(delivery.expires_at.as_millis())
        .execute(&mut *conn)
        .await
        .map_err(StoreError::from_sqlx)?;
        inserted += usize::try_from(result.rows_affected()).unwrap_or(0);
    }
    Ok(inserted)
}

#[derive(sqlx::FromRow)]
struct AlertStateDbRow {
    tenant: String,
    check_kind: String,
    target: String,
    state: String,
}

pub(crate) async fn alert_states(pool: &SqlitePool) -> Result<Vec<AlertStateRow>, StoreError> {
    let rows: Vec<AlertStateDbRow> = sqlx::query_as(
        "SELECT c.tenant, c.check_kind, c.target, a.state FROM alert_state a \
         JOIN check_state c ON c.id = a.check_id ORDER BY c.tenant, c.check_kind, c.target",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.into_iter()
        .map(|row| {
            Ok(AlertStateRow {
                tenant: row.tenant,
                check: codec::parse_check(&row.check_kind)?,
                target: row.target,
                state_json: row.state,
            })
        })
        .collect()
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    id: i64,
    dedup_key: String,
    receiver: String,
    message: String,
    attempts: i64,
    created_at: i64,
    expires_at: i64,
}

/// The oldest pending row of each receiver, if it is due by `now`. A receiver whose oldest row
/// waits for its backoff gets nothing, so later rows never overtake it.
pub(crate) async fn due(
    pool: &SqlitePool,
    now: Timestamp,
) -> Result<Vec<PendingDelivery>, StoreError> {
    let rows: Vec<PendingRow> = sqlx::query_as(
        "SELECT o.id, o.dedup_key, o.receiver, o.message, o.attempts, o.created_at, o.expires_at \
         FROM outbox o \
         WHERE o.id IN (SELECT min(id) FROM outbox WHERE state = 'pending' GROUP BY receiver) \
           AND o.next_attempt_at <= ?1 \
         ORDER BY o.id",
    )
    .bind(now.as_millis())
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.into_iter()
        .map(|row| {
            Ok(PendingDelivery {
                id: row.id,
                dedup_key: row.dedup_key,
                receiver: row.receiver,
                message_json: row.message,
                attempts: codec::count_from_db(row.attempts)?,
                created_at: Timestamp(row.created_at),
                expires_at: Timestamp(row.expires_at),
            })
        })
        .collect()
}

/// The earliest `next_attempt_at` among receivers' oldest pending rows, so the dispatcher can
/// sleep until then.
pub(crate) async fn next_due_at(pool: &SqlitePool) -> Result<Option<Timestamp>, StoreError> {
    let next: Option<i64> = sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM outbox \
         WHERE id IN (SELECT min(id) FROM outbox WHERE state = 'pending' GROUP BY receiver)",
    )
    .fetch_one(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    Ok(next.map(Timestamp))
}

/// Records an attempt and moves the row on, in one short transaction (never held across the
/// network send itself).
pub(crate) async fn finish(
    pool: &SqlitePool,
    id: i64,
    outcome: &DeliveryOutcome,
    attempted_at: Timestamp,
    duration: std::time::Duration,
) -> Result<(), StoreError> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::from_sqlx)?;
    let (result, error, update) = match outcome {
        DeliveryOutcome::Sent => (
            "sent",
            None,
            sqlx::query("UPDATE outbox SET state = 'sent', attempts = attempts + 1, finished_at = ?2, last_error = NULL WHERE id = ?1")
                .bind(id)
                .bind(attempted_at.as_millis()),
        ),
        DeliveryOutcome::Transient { error, retry_at } => (
            "transient",
            Some(error.as_str()),
            sqlx::query("UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1")
                .bind(id)
                .bind(retry_at.as_millis())
                .bind(error.as_str()),
        ),
        DeliveryOutcome::Permanent { error } => (
            "permanent",
            Some(error.as_str()),
            sqlx::query("UPDATE outbox SET state = 'failed', attempts = attempts + 1, finished_at = ?2, last_error = ?3 WHERE id = ?1")
                .bind(id)
                .bind(attempted_at.as_millis())
                .bind(error.as_str()),
        ),
    };
    update
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
    sqlx::query("INSERT INTO deliveries (outbox_id, attempted_at, outcome, error, duration_us) VALUES (?1, ?2, ?3, ?4, ?5)")
        .bind(id)
        .bind(attempted_at.as_millis())
        .bind(result)
        .bind(error)
        .bind(codec::duration_to_db(duration))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
    tx.commit().await.map_err(StoreError::from_sqlx)
}

/// Parks pending rows past their expiry as `expired`; returns them (receiver and dedup key)
/// so the caller can log each one.
pub(crate) async fn expire(
    pool: &SqlitePool,
    now: Timestamp,
) -> Result<Vec<(String, String)>, StoreError> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::from_sqlx)?;
    let expired: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, receiver, dedup_key FROM outbox WHERE state = 'pending' AND expires_at <= ?1",
    )
    .bind(now.as_millis())
    .fetch_all(&mut *tx)
    .await
    .map_err(StoreError::from_sqlx)?;
    for (id, _, _) in &expired {
        sqlx::query("UPDATE outbox SET state = 'expired', finished_at = ?2 WHERE id = ?1")
            .bind(id)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
        sqlx::query("INSERT INTO deliveries (outbox_id, attempted_at, outcome, error, duration_us) VALUES (?1, ?2, 'expired', 'not delivered before expiry', 0)")
            .bind(id)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
    }
    tx.commit().await.map_err(StoreError::from_sqlx)?;
    Ok(expired
        .into_iter()
        .map(|(_, receiver, key)| (receiver, key))
        .collect())
}

pub(crate) async fn stats(pool: &SqlitePool) -> Result<OutboxStats, StoreError> {
    let (pending, oldest, expired, failed): (i64, Option<i64>, i64, i64) = sqlx::query_as(
        "SELECT \
           coalesce(sum(state = 'pending'), 0), \
           min(CASE WHEN state = 'pending' THEN created_at END), \
           coalesce(sum(state = 'expired'), 0), \
           coalesce(sum(state = 'failed'), 0) \
         FROM outbox",
    )
    .fetch_one(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    Ok(OutboxStats {
        pending: u64::try_from(pending).unwrap_or(0),
        oldest_pending_created_at: oldest.map(Timestamp),
        expired: u64::try_from(expired).unwrap_or(0),
        failed: u64::try_from(failed).unwrap_or(0),
    })
}

/// A finished outbox row, for tests, the CLI and reports.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub dedup_key: String,
    pub receiver: String,
    pub message_json: String,
    pub state: String,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct OutboxDbRow {
    id: i64,
    dedup_key: String,
    receiver: String,
    message: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
}

/// Every outbox row, oldest first.
pub(crate) async fn list(pool: &SqlitePool) -> Result<Vec<OutboxRow>, StoreError> {
    let rows: Vec<OutboxDbRow> =
        sqlx::query_as("SELECT id, dedup_key, receiver, message, state, attempts, last_error FROM outbox ORDER BY id")
            .fetch_all(pool)
            .await
            .map_err(StoreError::from_sqlx)?;
    rows.into_iter()
        .map(|row| {
            Ok(OutboxRow {
                id: row.id,
                dedup_key: row.dedup_key,
                receiver: row.receiver,
                message_json: row.message,
                state: row.state,
                attempts: codec::count_from_db(row.attempts)?,
                last_error: row.last_error,
            })
        })
        .collect()
}
