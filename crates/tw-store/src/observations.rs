//! Stored observations: every verdict worth keeping, with its evidence as versioned JSON.
//!
//! Rows refer to their key through `check_id` (check_state.id) instead of repeating tenant,
//! check and target; reads join the key back in, so callers see the same fields an
//! `Observation` has. Which observations get here is decided in `record.rs`.

use std::time::Duration;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tw_core::{CheckKind, Evidence, Observation, Reason, Status, Timestamp, EVIDENCE_VERSION};

use crate::codec;
use crate::StoreError;

/// An observation as stored, with its row id and whether it changed the key's state.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObservation {
    /// Never reused, also after a prune.
    pub id: i64,
    pub tenant: String,
    pub check: CheckKind,
    pub target: String,
    pub scheduled_for: Timestamp,
    pub started_at: Timestamp,
    /// Kept to the microsecond.
    pub elapsed: Duration,
    pub status: Status,
    pub reason: Reason,
    pub summary: String,
    /// True for the first observation of a key and for one whose status or reason differed
    /// from the run before it. Never for a `Reason::Shutdown` observation, which changes no
    /// state; after only those, a key's first real observation counts as its first.
    pub state_change: bool,
    pub evidence: Evidence,
}

/// The columns [`ObservationRow`] reads, with the key joined back in; callers append
/// `WHERE` and `ORDER BY`.
pub(crate) const SELECT_OBSERVATIONS: &str =
    "SELECT o.id, c.tenant, c.check_kind, c.target, o.scheduled_for, o.started_at, \
     o.elapsed_us, o.status, o.reason, o.summary, o.state_change, o.evidence_version, \
     o.evidence \
     FROM observations o JOIN check_state c ON c.id = o.check_id";

#[derive(sqlx::FromRow)]
pub(crate) struct ObservationRow {
    id: i64,
    tenant: String,
    check_kind: String,
    target: String,
    scheduled_for: i64,
    started_at: i64,
    elapsed_us: i64,
    status: String,
    reason: String,
    summary: String,
    state_change: bool,
    evidence_version: i64,
    evidence: String,
}

impl ObservationRow {
    pub(crate) fn decode(self) -> Result<StoredObservation, StoreError> {
        Ok(StoredObservation {
            id: self.id,
            check: codec::parse_check(&self.check_kind)?,
            scheduled_for: Timestamp(self.scheduled_for),
            started_at: Timestamp(self.started_at),
            elapsed: codec::duration_from_db(self.elapsed_us)?,
            status: codec::parse_status(&self.status)?,
            reason: codec::parse_reason(&self.reason)?,
            state_change: self.state_change,
            evidence: codec::evidence_from_db(self.evidence_version, &self.evidence)?,
            tenant: self.tenant,
            target: self.target,
            summary: self.summary,
        })
    }
}

/// An observation to write, with the key it belongs to and whether it changed the key's state.
pub(crate) struct NewObservation<'a> {
    pub(crate) check_id: i64,
    pub(crate) observation: &'a Observation,
    pub(crate) state_change: bool,
    /// False for a repeated ok kept only as the hourly sample: its verdict, summary and
    /// timing are stored, its evidence is not (`Evidence::None`). The evidence of the state
    /// it belongs to is on the state's change observation, which retention never prunes;
    /// keeping a transcript per sample was 95 % of the history's bytes (docs/benchmarks.md).
    pub(crate) keep_evidence: bool,
}

/// Writes observations of distinct keys in one statement and returns `(check_id, id)` for
/// each; with one row per key, the key identifies the row whatever order SQLite returns them in.
pub(crate) async fn insert_many(
    conn: &mut SqliteConnection,
    rows: &[NewObservation<'_>],
) -> Result<Vec<(i64, i64)>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let evidence = rows
        .iter()
        .map(|row| {
            if row.keep_evidence {
                codec::evidence_to_db(&row.observation.evidence)
            } else {
                codec::evidence_to_db(&Evidence::None)
            }
        })
        .collect::<Result<Vec<String>, StoreError>>()?;
    let mut builder = QueryBuilder::<Sqlite>::new(
        "INSERT INTO observations (check_id, scheduled_for, started_at, elapsed_us, status, \
         reason, summary, state_change, evidence_version, evidence) ",
    );
    builder.push_values(rows.iter().zip(evidence), |mut values, (row, evidence)| {
        let observation = row.observation;
        values
            .push_bind(row.check_id)
            .push_bind(observation.scheduled_for.as_millis())
            .push_bind(observation.started_at.as_millis())
            .push_bind(codec::duration_to_db(observation.elapsed))
            .push_bind(observation.status.as_str())
            .push_bind(observation.reason.as_str())
            .push_bind(observation.summary.as_str())
            .push_bind(row.state_change)
            .push_bind(i64::from(EVIDENCE_VERSION))
            .push_bind(evidence);
    });
    builder.push(" RETURNING check_id, id");
    builder
        .build_query_as::<(i64, i64)>()
        // Statements built for one batch size are not worth a slot in the statement cache.
        .persistent(false)
        .fetch_all(conn)
        .await
        .map_err(StoreError::from_sqlx)
}

/// Newest first. Only the filters that are set become conditions, so SQLite can use the key's
/// unique index and `observations_check_started` when a full key is given instead of scanning
/// all history for rows that match `? IS NULL OR ...`.
pub(crate) async fn list(
    pool: &SqlitePool,
    tenant: Option<&str>,
    check: Option<CheckKind>,
    target: Option<&str>,
    limit: u32,
) -> Result<Vec<StoredObservation>, StoreError> {
    let mut sql = String::from(SELECT_OBSERVATIONS);
    let conditions: Vec<&str> = [
        tenant.map(|_| "c.tenant = ?"),
        check.map(|_| "c.check_kind = ?"),
        target.map(|_| "c.target = ?"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    // id breaks ties between observations started in the same millisecond, in write order.
    sql.push_str(" ORDER BY o.started_at DESC, o.id DESC LIMIT ?");

    // Binds follow the order the conditions were pushed in.
    let mut query = sqlx::query_as::<_, ObservationRow>(&sql);
    if let Some(tenant) = tenant {
        query = query.bind(tenant);
    }
    if let Some(check) = check {
        query = query.bind(check.as_str());
    }
    if let Some(target) = target {
        query = query.bind(target);
    }
    let rows = query
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    rows.into_iter().map(ObservationRow::decode).collect()
}
