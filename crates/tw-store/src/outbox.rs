//! Alert state and the notification outbox.
//!
//! The store treats an alert state as opaque JSON (tw-alert owns its shape) and a message as
//! opaque JSON (tw-notify owns that). What it guarantees: alert states and outbox rows commit
//! with the observations that caused them (`record.rs`), an event is enqueued once per
//! receiver (`dedup_key`), and each receiver's rows are handed out oldest first, one at a time,
//! so a receiver sees its notifications in order.
//!
//! Two refinements keep that contract. A row may carry a group key: the dispatcher sends the
//! pending rows of one receiver that share it as one message, and records the attempt on each
//! of them. A row may carry a fallback chain: when its receiver keeps failing, the row is
//! closed as `fallback` and the same message is enqueued for the next receiver of the chain
//! (same message id; a receiver that already has the event keeps its own row).

use std::time::Duration;

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

/// When a row gives up on its receiver and moves on to the next one of its route.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    /// The receivers still behind this one, in order of preference; never empty in a row the
    /// store hands out.
    pub to: Vec<String>,
    /// Failed attempts after which the row is handed on.
    pub after_attempts: u32,
    /// Time since the first attempt after which a failed row is handed on.
    pub after: Duration,
}

/// A notification to enqueue, with how it is held, grouped and handed on.
#[derive(Debug, Clone, PartialEq)]
pub struct Enqueue {
    pub delivery: NewDelivery,
    /// Not sent before this time (a group waiting for more of its tenant's alerts); `None`
    /// for at once.
    pub not_before: Option<Timestamp>,
    /// Pending rows of one receiver with the same key go out as one message.
    pub group_key: Option<String>,
    pub fallback: Option<Fallback>,
}

impl From<NewDelivery> for Enqueue {
    fn from(delivery: NewDelivery) -> Enqueue {
        Enqueue {
            delivery,
            not_before: None,
            group_key: None,
            fallback: None,
        }
    }
}

/// [`AlertWrites`] with grouping and fallback: what the recorder commits with a batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertCommit {
    pub states: Vec<AlertStateRow>,
    pub deliveries: Vec<Enqueue>,
}

impl AlertCommit {
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.deliveries.is_empty()
    }
}

impl From<&AlertWrites> for AlertCommit {
    fn from(writes: &AlertWrites) -> AlertCommit {
        AlertCommit {
            states: writes.states.clone(),
            deliveries: writes
                .deliveries
                .iter()
                .cloned()
                .map(Enqueue::from)
                .collect(),
        }
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
    /// Rows of this receiver with the same key go out together ([`Store::group_members`]).
    ///
    /// [`Store::group_members`]: crate::Store::group_members
    pub group_key: Option<String>,
    pub fallback: Option<Fallback>,
    /// When this row was first attempted, if it has been.
    pub first_attempt_at: Option<Timestamp>,
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
    /// The receiver keeps failing (or refused it): close the row as `fallback` and enqueue
    /// the same message for the next receiver of its chain.
    Fallback {
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
    writes: &AlertCommit,
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
    insert_deliveries(conn, &writes.deliveries).await
}

/// Inserts outbox rows; a dedup key already present is left alone. Returns how many were new.
pub(crate) async fn insert_deliveries(
    conn: &mut SqliteConnection,
    deliveries: &[Enqueue],
) -> Result<usize, StoreError> {
    let mut inserted = 0;
    for queued in deliveries {
        let delivery = &queued.delivery;
        let fallback = queued.fallback.as_ref().filter(|f| !f.to.is_empty());
        let result = sqlx::query(
            "INSERT INTO outbox (dedup_key, receiver, message, created_at, next_attempt_at, expires_at, state, \
                                 group_key, fallback_to, fallback_attempts, fallback_after_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'pending', ?7, ?8, ?9, ?10) ON CONFLICT (dedup_key) DO NOTHING",
        )
        .bind(&delivery.dedup_key)
        .bind(&delivery.receiver)
        .bind(&delivery.message_json)
        .bind(delivery.created_at.as_millis())
        .bind(
            queued
                .not_before
                .unwrap_or(delivery.created_at)
                .as_millis(),
        )
        .bind(delivery.expires_at.as_millis())
        .bind(&queued.group_key)
        .bind(fallback.map(|f| f.to.join(",")))
        .bind(fallback.map(|f| i64::from(f.after_attempts.max(1))))
        .bind(fallback.map(|f| i64::try_from(f.after.as_millis()).unwrap_or(i64::MAX)))
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
    group_key: Option<String>,
    fallback_to: Option<String>,
    fallback_attempts: Option<i64>,
    fallback_after_ms: Option<i64>,
    first_attempt_at: Option<i64>,
}

const PENDING_COLUMNS: &str = "o.id, o.dedup_key, o.receiver, o.message, o.attempts, \
     o.created_at, o.expires_at, o.group_key, o.fallback_to, o.fallback_attempts, \
     o.fallback_after_ms, o.first_attempt_at";

impl PendingRow {
    fn decode(self) -> Result<PendingDelivery, StoreError> {
        let to = self
            .fallback_to
            .as_deref()
            .map(crate::runtime::split_names)
            .unwrap_or_default();
        let fallback = (!to.is_empty()).then(|| Fallback {
            to,
            after_attempts: self
                .fallback_attempts
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            after: Duration::from_millis(
                self.fallback_after_ms
                    .and_then(|ms| u64::try_from(ms).ok())
                    .unwrap_or(0),
            ),
        });
        Ok(PendingDelivery {
            id: self.id,
            dedup_key: self.dedup_key,
            receiver: self.receiver,
            message_json: self.message,
            attempts: codec::count_from_db(self.attempts)?,
            created_at: Timestamp(self.created_at),
            expires_at: Timestamp(self.expires_at),
            group_key: self.group_key,
            fallback,
            first_attempt_at: self.first_attempt_at.map(Timestamp),
        })
    }
}

/// The oldest pending row of each receiver, if it is due by `now`. A receiver whose oldest row
/// waits for its backoff gets nothing, so later rows never overtake it.
pub(crate) async fn due(
    pool: &SqlitePool,
    now: Timestamp,
) -> Result<Vec<PendingDelivery>, StoreError> {
    let rows: Vec<PendingRow> = sqlx::query_as(&format!(
        "SELECT {PENDING_COLUMNS} FROM outbox o \
         WHERE o.id IN (SELECT min(id) FROM outbox WHERE state = 'pending' GROUP BY receiver) \
           AND o.next_attempt_at <= ?1 \
         ORDER BY o.id"
    ))
    .bind(now.as_millis())
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.into_iter().map(PendingRow::decode).collect()
}

/// Every pending row of `receiver` with `group_key`, oldest first: the rows that go out as one
/// message with the group's oldest row.
pub(crate) async fn group_members(
    pool: &SqlitePool,
    receiver: &str,
    group_key: &str,
) -> Result<Vec<PendingDelivery>, StoreError> {
    let rows: Vec<PendingRow> = sqlx::query_as(&format!(
        "SELECT {PENDING_COLUMNS} FROM outbox o \
         WHERE o.receiver = ?1 AND o.group_key = ?2 AND o.state = 'pending' ORDER BY o.id"
    ))
    .bind(receiver)
    .bind(group_key)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.into_iter().map(PendingRow::decode).collect()
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

/// Records one attempt on every row in `ids` (the rows of one message: one row, or a group)
/// and moves each on, in one short transaction (never held across the network send itself).
/// Returns how many rows a fallback enqueued for the next receiver.
pub(crate) async fn finish(
    pool: &SqlitePool,
    ids: &[i64],
    outcome: &DeliveryOutcome,
    attempted_at: Timestamp,
    duration: std::time::Duration,
) -> Result<usize, StoreError> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::from_sqlx)?;
    let mut handed_on = 0;
    for &id in ids {
        let (result, error) = match outcome {
            DeliveryOutcome::Sent => {
                sqlx::query(
                    "UPDATE outbox SET state = 'sent', attempts = attempts + 1, finished_at = ?2, last_error = NULL, \
                     first_attempt_at = coalesce(first_attempt_at, ?2) WHERE id = ?1",
                )
                .bind(id)
                .bind(attempted_at.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                ("sent", None)
            }
            DeliveryOutcome::Transient { error, retry_at } => {
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3, \
                     first_attempt_at = coalesce(first_attempt_at, ?4) WHERE id = ?1",
                )
                .bind(id)
                .bind(retry_at.as_millis())
                .bind(error.as_str())
                .bind(attempted_at.as_millis())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                ("transient", Some(error.clone()))
            }
            DeliveryOutcome::Permanent { error } => {
                sqlx::query(
                    "UPDATE outbox SET state = 'failed', attempts = attempts + 1, finished_at = ?2, last_error = ?3, \
                     first_attempt_at = coalesce(first_attempt_at, ?2) WHERE id = ?1",
                )
                .bind(id)
                .bind(attempted_at.as_millis())
                .bind(error.as_str())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                ("permanent", Some(error.clone()))
            }
            DeliveryOutcome::Fallback { error } => {
                let (to, new) = hand_on(&mut tx, id, attempted_at).await?;
                handed_on += new;
                let error = format!("{error}; handed on to {to}");
                sqlx::query(
                    "UPDATE outbox SET state = 'fallback', attempts = attempts + 1, finished_at = ?2, last_error = ?3, \
                     first_attempt_at = coalesce(first_attempt_at, ?2) WHERE id = ?1",
                )
                .bind(id)
                .bind(attempted_at.as_millis())
                .bind(error.as_str())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
                ("fallback", Some(error))
            }
        };
        sqlx::query("INSERT INTO deliveries (outbox_id, attempted_at, outcome, error, duration_us) VALUES (?1, ?2, ?3, ?4, ?5)")
            .bind(id)
            .bind(attempted_at.as_millis())
            .bind(result)
            .bind(error)
            .bind(codec::duration_to_db(duration))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from_sqlx)?;
    }
    tx.commit().await.map_err(StoreError::from_sqlx)?;
    Ok(handed_on)
}

#[derive(sqlx::FromRow)]
struct ChainRow {
    dedup_key: String,
    receiver: String,
    fallback_to: Option<String>,
}

/// Enqueues row `id`'s message for the first receiver of its chain, due at once, carrying the
/// rest of the chain, its group, creation and expiry. The new row's dedup key is the event's
/// with the new receiver, so a receiver that already has this event (from another route)
/// keeps its own row and gets nothing twice. Returns that receiver and whether a row was added.
async fn hand_on(
    conn: &mut SqliteConnection,
    id: i64,
    now: Timestamp,
) -> Result<(String, usize), StoreError> {
    let row: ChainRow =
        sqlx::query_as("SELECT dedup_key, receiver, fallback_to FROM outbox WHERE id = ?1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::from_sqlx)?;
    let mut chain = row
        .fallback_to
        .as_deref()
        .map(crate::runtime::split_names)
        .unwrap_or_default()
        .into_iter();
    let Some(to) = chain.next() else {
        return Err(StoreError::Decode(format!(
            "outbox row {id} has no receiver to fall back to"
        )));
    };
    let rest: Vec<String> = chain.collect();
    let event_key = row
        .dedup_key
        .strip_suffix(&format!("/{}", row.receiver))
        .unwrap_or(&row.dedup_key);
    let result = sqlx::query(
        "INSERT INTO outbox (dedup_key, receiver, message, created_at, next_attempt_at, expires_at, state, \
                             group_key, fallback_to, fallback_attempts, fallback_after_ms, fallback_from) \
         SELECT ?2, ?3, message, created_at, ?4, expires_at, 'pending', group_key, ?5, \
                fallback_attempts, fallback_after_ms, id \
         FROM outbox WHERE id = ?1 \
         ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(id)
    .bind(format!("{event_key}/{to}"))
    .bind(&to)
    .bind(now.as_millis())
    .bind((!rest.is_empty()).then(|| rest.join(",")))
    .execute(&mut *conn)
    .await
    .map_err(StoreError::from_sqlx)?;
    Ok((to, usize::try_from(result.rows_affected()).unwrap_or(0)))
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
    pub group_key: Option<String>,
    /// The row this one was handed on from by a fallback.
    pub fallback_from: Option<i64>,
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
    group_key: Option<String>,
    fallback_from: Option<i64>,
}

/// Every outbox row, oldest first.
pub(crate) async fn list(pool: &SqlitePool) -> Result<Vec<OutboxRow>, StoreError> {
    let rows: Vec<OutboxDbRow> =
        sqlx::query_as("SELECT id, dedup_key, receiver, message, state, attempts, last_error, group_key, fallback_from FROM outbox ORDER BY id")
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
                group_key: row.group_key,
                fallback_from: row.fallback_from,
            })
        })
        .collect()
}
