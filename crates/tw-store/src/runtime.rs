//! Alerting decided at run time: silences and acknowledgements (written by the CLI and the
//! API, possibly from another process while the daemon runs) and the escalations the daemon
//! sent.
//!
//! The daemon's recorder reads silences and acks back every few seconds, so each read is one
//! indexed query: active silences by their end, acks by id after the last one seen.
//! Escalations are written with the outbox rows that carry them, in one transaction, so an
//! escalation is recorded exactly when its messages are enqueued and a restart neither
//! repeats nor forgets it.

use sqlx::SqlitePool;
use tw_core::{CheckKind, Timestamp};

use crate::codec;
use crate::outbox::{self, Enqueue};
use crate::StoreError;

/// A silence to add. `None` filters match anything.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSilence {
    pub tenant: Option<String>,
    pub check: Option<CheckKind>,
    pub target: Option<String>,
    pub starts_at: Timestamp,
    /// Must be after `starts_at` (the table refuses anything else).
    pub ends_at: Timestamp,
    pub reason: String,
    pub created_by: String,
    pub created_at: Timestamp,
}

/// A stored silence.
#[derive(Debug, Clone, PartialEq)]
pub struct SilenceRow {
    pub id: i64,
    pub tenant: Option<String>,
    pub check: Option<CheckKind>,
    pub target: Option<String>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub reason: String,
    pub created_by: String,
    pub created_at: Timestamp,
    pub removed_at: Option<Timestamp>,
    pub removed_by: Option<String>,
}

impl SilenceRow {
    /// Whether this silence holds back an alert of (tenant, check, target) at `at`: not
    /// removed, `starts_at <= at < ends_at`, and every filter it has matches (the target
    /// case-insensitively, like the config's windows).
    pub fn matches(&self, tenant: &str, check: CheckKind, target: &str, at: Timestamp) -> bool {
        self.removed_at.is_none()
            && self.starts_at <= at
            && at < self.ends_at
            && self.tenant.as_deref().is_none_or(|t| t == tenant)
            && self.check.is_none_or(|c| c == check)
            && self
                .target
                .as_deref()
                .is_none_or(|t| t.eq_ignore_ascii_case(target))
    }
}

/// What removing a silence did.
#[derive(Debug, Clone, PartialEq)]
pub enum Removal {
    /// Removed now; the row as it is after the removal.
    Removed(SilenceRow),
    /// It had been removed before; the row with the earlier removal.
    AlreadyRemoved(SilenceRow),
    NotFound,
}

/// An acknowledgement to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAck {
    pub tenant: String,
    pub check: CheckKind,
    pub target: String,
    /// The firing episode acknowledged (`AlertState::notified_episode`).
    pub episode: u64,
    pub acked_by: String,
    pub acked_at: Timestamp,
    pub comment: Option<String>,
}

/// A stored acknowledgement.
#[derive(Debug, Clone, PartialEq)]
pub struct AckRow {
    pub id: i64,
    pub tenant: String,
    pub check: CheckKind,
    pub target: String,
    pub episode: u64,
    pub acked_by: String,
    pub acked_at: Timestamp,
    pub comment: Option<String>,
}

/// What recording an acknowledgement did.
#[derive(Debug, Clone, PartialEq)]
pub enum AckOutcome {
    Added(AckRow),
    /// This episode was acknowledged before; the earlier acknowledgement stands.
    Already(AckRow),
}

/// An escalation: one firing episode handed to more receivers because nobody acknowledged it.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    pub tenant: String,
    pub check: CheckKind,
    pub target: String,
    pub episode: u64,
    pub escalated_at: Timestamp,
    pub receivers: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct SilenceDbRow {
    id: i64,
    tenant: Option<String>,
    check_kind: Option<String>,
    target: Option<String>,
    starts_at: i64,
    ends_at: i64,
    reason: String,
    created_by: String,
    created_at: i64,
    removed_at: Option<i64>,
    removed_by: Option<String>,
}

impl SilenceDbRow {
    fn decode(self) -> Result<SilenceRow, StoreError> {
        Ok(SilenceRow {
            id: self.id,
            tenant: self.tenant,
            check: self
                .check_kind
                .as_deref()
                .map(codec::parse_check)
                .transpose()?,
            target: self.target,
            starts_at: Timestamp(self.starts_at),
            ends_at: Timestamp(self.ends_at),
            reason: self.reason,
            created_by: self.created_by,
            created_at: Timestamp(self.created_at),
            removed_at: self.removed_at.map(Timestamp),
            removed_by: self.removed_by,
        })
    }
}

const SILENCE_COLUMNS: &str = "id, tenant, check_kind, target, starts_at, ends_at, reason, \
     created_by, created_at, removed_at, removed_by";

pub(crate) async fn add_silence(
    pool: &SqlitePool,
    silence: &NewSilence,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO silences (tenant, check_kind, target, starts_at, ends_at, reason, created_by, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
    )
    .bind(&silence.tenant)
    .bind(silence.check.map(CheckKind::as_str))
    .bind(&silence.target)
    .bind(silence.starts_at.as_millis())
    .bind(silence.ends_at.as_millis())
    .bind(&silence.reason)
    .bind(&silence.created_by)
    .bind(silence.created_at.as_millis())
    .fetch_one(pool)
    .await
    .map_err(StoreError::from_sqlx)
}

/// Silences not removed that have not ended by `now` (in force or still to come), or with
/// `include_inactive` every silence ever added; ordered by start, then id.
pub(crate) async fn list_silences(
    pool: &SqlitePool,
    now: Timestamp,
    include_inactive: bool,
) -> Result<Vec<SilenceRow>, StoreError> {
    let rows: Vec<SilenceDbRow> = if include_inactive {
        sqlx::query_as(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences ORDER BY starts_at, id"
        ))
        .fetch_all(pool)
        .await
    } else {
        sqlx::query_as(&format!(
            "SELECT {SILENCE_COLUMNS} FROM silences \
             WHERE removed_at IS NULL AND ends_at > ?1 ORDER BY starts_at, id"
        ))
        .bind(now.as_millis())
        .fetch_all(pool)
        .await
    }
    .map_err(StoreError::from_sqlx)?;
    rows.into_iter().map(SilenceDbRow::decode).collect()
}

pub(crate) async fn silence(pool: &SqlitePool, id: i64) -> Result<Option<SilenceRow>, StoreError> {
    let row: Option<SilenceDbRow> = sqlx::query_as(&format!(
        "SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    row.map(SilenceDbRow::decode).transpose()
}

pub(crate) async fn remove_silence(
    pool: &SqlitePool,
    id: i64,
    removed_by: &str,
    at: Timestamp,
) -> Result<Removal, StoreError> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::from_sqlx)?;
    let updated = sqlx::query(
        "UPDATE silences SET removed_at = ?2, removed_by = ?3 WHERE id = ?1 AND removed_at IS NULL",
    )
    .bind(id)
    .bind(at.as_millis())
    .bind(removed_by)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from_sqlx)?
    .rows_affected();
    let row: Option<SilenceDbRow> = sqlx::query_as(&format!(
        "SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::from_sqlx)?;
    tx.commit().await.map_err(StoreError::from_sqlx)?;
    Ok(match (row, updated) {
        (None, _) => Removal::NotFound,
        (Some(row), 0) => Removal::AlreadyRemoved(row.decode()?),
        (Some(row), _) => Removal::Removed(row.decode()?),
    })
}

#[derive(sqlx::FromRow)]
struct AckDbRow {
    id: i64,
    tenant: String,
    check_kind: String,
    target: String,
    episode: i64,
    acked_by: String,
    acked_at: i64,
    comment: Option<String>,
}

impl AckDbRow {
    fn decode(self) -> Result<AckRow, StoreError> {
        Ok(AckRow {
            id: self.id,
            tenant: self.tenant,
            check: codec::parse_check(&self.check_kind)?,
            target: self.target,
            episode: u64::try_from(self.episode)
                .map_err(|_| StoreError::decode("negative episode", self.episode))?,
            acked_by: self.acked_by,
            acked_at: Timestamp(self.acked_at),
            comment: self.comment,
        })
    }
}

const ACK_COLUMNS: &str = "id, tenant, check_kind, target, episode, acked_by, acked_at, comment";

fn episode_to_db(episode: u64) -> Result<i64, StoreError> {
    i64::try_from(episode).map_err(|_| StoreError::decode("episode out of range", episode))
}

pub(crate) async fn add_ack(pool: &SqlitePool, ack: &NewAck) -> Result<AckOutcome, StoreError> {
    let episode = episode_to_db(ack.episode)?;
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::from_sqlx)?;
    let inserted = sqlx::query(
        "INSERT INTO acks (tenant, check_kind, target, episode, acked_by, acked_at, comment) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (tenant, check_kind, target, episode) DO NOTHING",
    )
    .bind(&ack.tenant)
    .bind(ack.check.as_str())
    .bind(&ack.target)
    .bind(episode)
    .bind(&ack.acked_by)
    .bind(ack.acked_at.as_millis())
    .bind(&ack.comment)
    .execute(&mut *tx)
    .await
    .map_err(StoreError::from_sqlx)?
    .rows_affected();
    let row: AckDbRow = sqlx::query_as(&format!(
        "SELECT {ACK_COLUMNS} FROM acks \
         WHERE tenant = ?1 AND check_kind = ?2 AND target = ?3 AND episode = ?4"
    ))
    .bind(&ack.tenant)
    .bind(ack.check.as_str())
    .bind(&ack.target)
    .bind(episode)
    .fetch_one(&mut *tx)
    .await
    .map_err(StoreError::from_sqlx)?;
    tx.commit().await.map_err(StoreError::from_sqlx)?;
    let row = row.decode()?;
    Ok(if inserted > 0 {
        AckOutcome::Added(row)
    } else {
        AckOutcome::Already(row)
    })
}

/// Acknowledgements with an id above `after_id`, oldest first: the recorder keeps the highest
/// id it has seen and asks only for newer ones.
pub(crate) async fn acks_after(
    pool: &SqlitePool,
    after_id: i64,
) -> Result<Vec<AckRow>, StoreError> {
    let rows: Vec<AckDbRow> = sqlx::query_as(&format!(
        "SELECT {ACK_COLUMNS} FROM acks WHERE id > ?1 ORDER BY id"
    ))
    .bind(after_id)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.into_iter().map(AckDbRow::decode).collect()
}

/// Records escalations and enqueues their messages in one transaction. An episode already
/// escalated is left as it was, and so are its messages (their dedup keys exist already).
/// Returns how many outbox rows were new.
pub(crate) async fn escalate(
    pool: &SqlitePool,
    escalations: &[Escalation],
    deliveries: &[Enqueue],
) -> Result<usize, StoreError> {
    let mut tx = pool
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(StoreError::from_sqlx)?;
    for escalation in escalations {
        sqlx::query(
            "INSERT INTO escalations (tenant, check_kind, target, episode, escalated_at, receivers) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )
        .bind(&escalation.tenant)
        .bind(escalation.check.as_str())
        .bind(&escalation.target)
        .bind(episode_to_db(escalation.episode)?)
        .bind(escalation.escalated_at.as_millis())
        .bind(escalation.receivers.join(","))
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_sqlx)?;
    }
    let enqueued = outbox::insert_deliveries(&mut tx, deliveries).await?;
    tx.commit().await.map_err(StoreError::from_sqlx)?;
    Ok(enqueued)
}

#[derive(sqlx::FromRow)]
struct EscalationDbRow {
    tenant: String,
    check_kind: String,
    target: String,
    episode: i64,
    escalated_at: i64,
    receivers: String,
}

/// Every escalation recorded, oldest first.
pub(crate) async fn escalations(pool: &SqlitePool) -> Result<Vec<Escalation>, StoreError> {
    let rows: Vec<EscalationDbRow> = sqlx::query_as(
        "SELECT tenant, check_kind, target, episode, escalated_at, receivers FROM escalations \
         ORDER BY escalated_at, tenant, check_kind, target, episode",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.into_iter()
        .map(|row| {
            Ok(Escalation {
                tenant: row.tenant,
                check: codec::parse_check(&row.check_kind)?,
                target: row.target,
                episode: u64::try_from(row.episode)
                    .map_err(|_| StoreError::decode("negative episode", row.episode))?,
                escalated_at: Timestamp(row.escalated_at),
                receivers: split_names(&row.receivers),
            })
        })
        .collect()
}

/// Receiver names stored comma-separated (names cannot contain a comma).
pub(crate) fn split_names(raw: &str) -> Vec<String> {
    raw.split(',')
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}
