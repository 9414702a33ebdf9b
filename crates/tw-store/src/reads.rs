//! Read-only queries for the status page, the JSON API and incident reports.
//!
//! Every list here is bounded: pages of check states walk the unique
//! `(tenant, check_kind, target)` index from a keyset cursor, pages of history walk
//! `(started_at, id)` downwards from a cursor, and page sizes are capped in the store itself
//! ([`MAX_PAGE`]) so no caller can ask SQLite for the whole history at once. Keyset cursors
//! (rather than OFFSET) keep a deep page as cheap as the first and stay stable while the
//! recorder appends rows.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use tw_core::{CheckKind, Reason, Status, Timestamp};

use crate::check_state::CheckState;
use crate::codec;
use crate::observations::{ObservationRow, StoredObservation, SELECT_OBSERVATIONS};
use crate::StoreError;

/// The most rows one page call returns, whatever the caller asks for.
pub const MAX_PAGE: u32 = 500;

/// The most observations [`crate::Store::observations_between`] returns.
pub const MAX_WINDOW: u32 = 50_000;

/// Where a page of history continues: observations strictly older than this one, in the
/// order `started_at DESC, id DESC`. Shown to API clients as `"<started_at>_<id>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryCursor {
    pub started_at: Timestamp,
    pub id: i64,
}

impl HistoryCursor {
    fn after(observation: &StoredObservation) -> HistoryCursor {
        HistoryCursor {
            started_at: observation.started_at,
            id: observation.id,
        }
    }
}

impl fmt::Display for HistoryCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.started_at.as_millis(), self.id)
    }
}

/// A cursor that does not parse; the API answers 400 with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor this server issued")]
pub struct BadCursor;

impl FromStr for HistoryCursor {
    type Err = BadCursor;

    fn from_str(raw: &str) -> Result<HistoryCursor, BadCursor> {
        let (at, id) = raw.split_once('_').ok_or(BadCursor)?;
        Ok(HistoryCursor {
            started_at: Timestamp(at.parse().map_err(|_| BadCursor)?),
            id: id.parse().map_err(|_| BadCursor)?,
        })
    }
}

/// Which observations a history page holds; each filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryFilter {
    pub tenant: Option<String>,
    pub check: Option<CheckKind>,
    pub target: Option<String>,
    /// Only observations that changed their key's status or reason.
    pub changes_only: bool,
}

/// One page of history, newest first, and where the next (older) page starts.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryPage {
    pub observations: Vec<StoredObservation>,
    pub next: Option<HistoryCursor>,
}

/// Where a page of check states continues: keys strictly after this one in
/// `(tenant, check, target)` order. Shown to API clients as `tenant/check/target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCursor {
    pub tenant: String,
    pub check: CheckKind,
    pub target: String,
}

impl fmt::Display for StateCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Tenant names and check kinds never contain '/'; the target may, so it goes last.
        write!(f, "{}/{}/{}", self.tenant, self.check, self.target)
    }
}

impl FromStr for StateCursor {
    type Err = BadCursor;

    fn from_str(raw: &str) -> Result<StateCursor, BadCursor> {
        let mut parts = raw.splitn(3, '/');
        let (Some(tenant), Some(check), Some(target)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(BadCursor);
        };
        Ok(StateCursor {
            tenant: tenant.to_owned(),
            check: check.parse().map_err(|_| BadCursor)?,
            target: target.to_owned(),
        })
    }
}

/// Which check states a page holds; each filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateFilter {
    pub tenant: Option<String>,
    pub check: Option<CheckKind>,
    pub status: Option<Status>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatePage {
    pub states: Vec<CheckState>,
    pub next: Option<StateCursor>,
}

/// A notification as the outbox holds it, with every delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationRecord {
    pub id: i64,
    pub dedup_key: String,
    pub receiver: String,
    /// The rendered message (tw-notify's `Message` as JSON); opaque to the store.
    pub message_json: String,
    /// `pending`, `sent`, `failed`, `expired` or `fallback` (handed on to the next receiver
    /// of its route).
    pub state: String,
    pub created_at: Timestamp,
    /// When it was sent, refused for good or parked as expired.
    pub finished_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub attempts: Vec<DeliveryAttempt>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryAttempt {
    pub attempted_at: Timestamp,
    /// `sent`, `transient`, `permanent`, `expired` or `fallback`.
    pub outcome: String,
    pub error: Option<String>,
    pub duration: Duration,
}

fn clamp(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE)
}

/// Newest first, from `before` (exclusive). The row-value comparison lets SQLite seek in
/// `observations_check_started` (one key) or `observations_started` (all keys) instead of
/// counting past skipped rows.
pub(crate) async fn history_page(
    pool: &SqlitePool,
    filter: &HistoryFilter,
    before: Option<HistoryCursor>,
    limit: u32,
) -> Result<HistoryPage, StoreError> {
    let limit = clamp(limit);
    let mut builder = QueryBuilder::<Sqlite>::new(SELECT_OBSERVATIONS);
    builder.push(" WHERE 1 = 1");
    if let Some(tenant) = &filter.tenant {
        builder.push(" AND c.tenant = ").push_bind(tenant.as_str());
    }
    if let Some(check) = filter.check {
        builder
            .push(" AND c.check_kind = ")
            .push_bind(check.as_str());
    }
    if let Some(target) = &filter.target {
        builder.push(" AND c.target = ").push_bind(target.as_str());
    }
    if filter.changes_only {
        builder.push(" AND o.state_change = 1");
    }
    if let Some(cursor) = before {
        builder
            .push(" AND (o.started_at, o.id) < (")
            .push_bind(cursor.started_at.as_millis())
            .push(", ")
            .push_bind(cursor.id)
            .push(")");
    }
    // One more than asked tells whether there is a next page without a COUNT.
    builder
        .push(" ORDER BY o.started_at DESC, o.id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows = builder
        .build_query_as::<ObservationRow>()
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    let mut observations = rows
        .into_iter()
        .map(ObservationRow::decode)
        .collect::<Result<Vec<_>, _>>()?;
    let next = if observations.len() > limit as usize {
        observations.truncate(limit as usize);
        observations.last().map(HistoryCursor::after)
    } else {
        None
    };
    Ok(HistoryPage { observations, next })
}

/// A tenant's observations started in `[since, until)`, oldest first, at most `limit`
/// (capped at [`MAX_WINDOW`]).
pub(crate) async fn between(
    pool: &SqlitePool,
    tenant: &str,
    since: Timestamp,
    until: Timestamp,
    limit: u32,
) -> Result<Vec<StoredObservation>, StoreError> {
    let sql = format!(
        "{SELECT_OBSERVATIONS} WHERE c.tenant = ?1 AND o.started_at >= ?2 AND o.started_at < ?3 \
         ORDER BY o.started_at, o.id LIMIT ?4"
    );
    let rows = sqlx::query_as::<_, ObservationRow>(&sql)
        .bind(tenant)
        .bind(since.as_millis())
        .bind(until.as_millis())
        .bind(i64::from(limit.min(MAX_WINDOW)))
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    rows.into_iter().map(ObservationRow::decode).collect()
}

/// For each key of `tenant`, the latest state-changing observation started before `at`: the
/// state each key was in when a report window opens. Keys whose earlier history was pruned,
/// or that were first seen later, are absent.
pub(crate) async fn states_before(
    pool: &SqlitePool,
    tenant: &str,
    at: Timestamp,
) -> Result<Vec<StoredObservation>, StoreError> {
    // The subquery seeks in observations_check_started once per key of the tenant.
    let sql = format!(
        "{SELECT_OBSERVATIONS} WHERE c.tenant = ?1 AND o.id = ( \
             SELECT p.id FROM observations p \
             WHERE p.check_id = c.id AND p.state_change = 1 AND p.started_at < ?2 \
             ORDER BY p.started_at DESC, p.id DESC LIMIT 1) \
         ORDER BY c.check_kind, c.target"
    );
    let rows = sqlx::query_as::<_, ObservationRow>(&sql)
        .bind(tenant)
        .bind(at.as_millis())
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    rows.into_iter().map(ObservationRow::decode).collect()
}

#[derive(sqlx::FromRow)]
struct StateRow {
    tenant: String,
    check_kind: String,
    target: String,
    status: String,
    reason: String,
    summary: String,
    since: i64,
    last_run: i64,
    consecutive: i64,
}

impl StateRow {
    fn decode(self) -> Result<CheckState, StoreError> {
        Ok(CheckState {
            check: codec::parse_check(&self.check_kind)?,
            status: codec::parse_status(&self.status)?,
            reason: codec::parse_reason(&self.reason)?,
            consecutive: codec::count_from_db(self.consecutive)?,
            since: Timestamp(self.since),
            last_run: Timestamp(self.last_run),
            tenant: self.tenant,
            target: self.target,
            summary: self.summary,
        })
    }
}

const SELECT_STATES: &str = "SELECT tenant, check_kind, target, status, reason, summary, since, \
     last_run, consecutive FROM check_state";

/// Keys in `(tenant, check, target)` order after `after`. Placeholder rows (keys seen only
/// through shutdowns) have no verdict and are left out, as in `Store::check_states`.
pub(crate) async fn states_page(
    pool: &SqlitePool,
    filter: &StateFilter,
    after: Option<&StateCursor>,
    limit: u32,
) -> Result<StatePage, StoreError> {
    let limit = clamp(limit);
    let mut builder = QueryBuilder::<Sqlite>::new(SELECT_STATES);
    builder
        .push(" WHERE reason <> ")
        .push_bind(Reason::Shutdown.as_str());
    if let Some(tenant) = &filter.tenant {
        builder.push(" AND tenant = ").push_bind(tenant.as_str());
    }
    if let Some(check) = filter.check {
        builder.push(" AND check_kind = ").push_bind(check.as_str());
    }
    if let Some(status) = filter.status {
        builder.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(cursor) = after {
        builder
            .push(" AND (tenant, check_kind, target) > (")
            .push_bind(cursor.tenant.as_str())
            .push(", ")
            .push_bind(cursor.check.as_str())
            .push(", ")
            .push_bind(cursor.target.as_str())
            .push(")");
    }
    builder
        .push(" ORDER BY tenant, check_kind, target LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows = builder
        .build_query_as::<StateRow>()
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    let mut states = rows
        .into_iter()
        .map(StateRow::decode)
        .collect::<Result<Vec<_>, _>>()?;
    let next = if states.len() > limit as usize {
        states.truncate(limit as usize);
        states.last().map(|state| StateCursor {
            tenant: state.tenant.clone(),
            check: state.check,
            target: state.target.clone(),
        })
    } else {
        None
    };
    Ok(StatePage { states, next })
}

/// Every key of the given tenants (at most [`MAX_PAGE`] tenants per call), in
/// `(tenant, check, target)` order.
pub(crate) async fn states_of_tenants(
    pool: &SqlitePool,
    tenants: &[&str],
) -> Result<Vec<CheckState>, StoreError> {
    let tenants = &tenants[..tenants.len().min(MAX_PAGE as usize)];
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    let mut builder = QueryBuilder::<Sqlite>::new(SELECT_STATES);
    builder
        .push(" WHERE reason <> ")
        .push_bind(Reason::Shutdown.as_str())
        .push(" AND tenant IN (");
    let mut list = builder.separated(", ");
    for tenant in tenants {
        list.push_bind(*tenant);
    }
    builder.push(") ORDER BY tenant, check_kind, target");
    let rows = builder
        .build_query_as::<StateRow>()
        .persistent(false)
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    rows.into_iter().map(StateRow::decode).collect()
}

/// The keys that are not ok, worst first (critical, warning, unknown), then longest-standing
/// first; at most `limit` (capped at [`MAX_PAGE`]).
pub(crate) async fn problems(pool: &SqlitePool, limit: u32) -> Result<Vec<CheckState>, StoreError> {
    let sql = format!(
        "{SELECT_STATES} WHERE status <> 'ok' AND reason <> ?1 \
         ORDER BY CASE status WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, \
         since, tenant, check_kind, target LIMIT ?2"
    );
    let rows = sqlx::query_as::<_, StateRow>(&sql)
        .bind(Reason::Shutdown.as_str())
        .bind(i64::from(clamp(limit)))
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    rows.into_iter().map(StateRow::decode).collect()
}

#[derive(sqlx::FromRow)]
struct NotificationRow {
    id: i64,
    dedup_key: String,
    receiver: String,
    message: String,
    state: String,
    created_at: i64,
    finished_at: Option<i64>,
    last_error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    outbox_id: i64,
    attempted_at: i64,
    outcome: String,
    error: Option<String>,
    duration_us: i64,
}

/// Outbox rows created in `[since, until)`, oldest first, each with its delivery attempts in
/// order; at most `limit` rows (capped at [`MAX_WINDOW`]). The store does not read messages,
/// so filtering by tenant is the caller's.
pub(crate) async fn notifications_between(
    pool: &SqlitePool,
    since: Timestamp,
    until: Timestamp,
    limit: u32,
) -> Result<Vec<NotificationRecord>, StoreError> {
    let rows: Vec<NotificationRow> = sqlx::query_as(
        "SELECT id, dedup_key, receiver, message, state, created_at, finished_at, last_error \
         FROM outbox WHERE created_at >= ?1 AND created_at < ?2 ORDER BY created_at, id LIMIT ?3",
    )
    .bind(since.as_millis())
    .bind(until.as_millis())
    .bind(i64::from(limit.min(MAX_WINDOW)))
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    let (Some(low), Some(high)) = (
        rows.iter().map(|row| row.id).min(),
        rows.iter().map(|row| row.id).max(),
    ) else {
        return Ok(Vec::new());
    };
    // One range read through deliveries_outbox; attempts of rows outside the window that fall
    // in the id range are dropped below.
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT outbox_id, attempted_at, outcome, error, duration_us FROM deliveries \
         WHERE outbox_id BETWEEN ?1 AND ?2 ORDER BY outbox_id, attempted_at, id",
    )
    .bind(low)
    .bind(high)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    let mut by_outbox: BTreeMap<i64, Vec<DeliveryAttempt>> = BTreeMap::new();
    for attempt in attempts {
        by_outbox
            .entry(attempt.outbox_id)
            .or_default()
            .push(DeliveryAttempt {
                attempted_at: Timestamp(attempt.attempted_at),
                outcome: attempt.outcome,
                error: attempt.error,
                duration: codec::duration_from_db(attempt.duration_us)?,
            });
    }
    Ok(rows
        .into_iter()
        .map(|row| NotificationRecord {
            attempts: by_outbox.remove(&row.id).unwrap_or_default(),
            id: row.id,
            dedup_key: row.dedup_key,
            receiver: row.receiver,
            message_json: row.message,
            state: row.state,
            created_at: Timestamp(row.created_at),
            finished_at: row.finished_at.map(Timestamp),
            last_error: row.last_error,
        })
        .collect())
}

/// The alert states (JSON) of one tenant's keys.
pub(crate) async fn alert_states_of(
    pool: &SqlitePool,
    tenant: &str,
) -> Result<Vec<crate::AlertStateRow>, StoreError> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT c.tenant, c.check_kind, c.target, a.state FROM check_state c \
         JOIN alert_state a ON a.check_id = c.id WHERE c.tenant = ?1 \
         ORDER BY c.check_kind, c.target",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.into_iter()
        .map(|(tenant, check, target, state_json)| {
            Ok(crate::AlertStateRow {
                tenant,
                check: codec::parse_check(&check)?,
                target,
                state_json,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_what_they_did_not_issue() {
        let cursor = HistoryCursor {
            started_at: Timestamp(1_795_000_000_250),
            id: 42,
        };
        assert_eq!(cursor.to_string(), "1795000000250_42");
        assert_eq!("1795000000250_42".parse(), Ok(cursor));
        for bad in ["", "42", "x_1", "1_x", "1_2_3"] {
            assert_eq!(bad.parse::<HistoryCursor>(), Err(BadCursor), "{bad}");
        }
        let state = StateCursor {
            tenant: "contoso".into(),
            check: CheckKind::SmtpRcpt,
            target: "a/b@contoso.com".into(),
        };
        assert_eq!(state.to_string(), "contoso/smtp_rcpt/a/b@contoso.com");
        assert_eq!(state.to_string().parse(), Ok(state));
        assert_eq!("contoso/nope/x".parse::<StateCursor>(), Err(BadCursor));
        assert_eq!("contoso".parse::<StateCursor>(), Err(BadCursor));
    }
}
