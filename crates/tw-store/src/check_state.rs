//! The latest verdict per (tenant, check, target), on disk and in memory.
//!
//! `check_state` has one row per key, rewritten on every run. The recorder needs the previous
//! state of each key to decide whether an observation is a state change and whether it is
//! stored; reading it back per observation would cost a round trip per row, so the store keeps
//! a copy of the columns it decides on ([`LastState`]) in memory, loaded at open and updated
//! only after a commit (see `record.rs`). Public reads ([`list`]) always go to the database,
//! which stays the one source of truth.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tw_core::{CheckKind, Observation, Reason, Status, Timestamp};

use crate::codec;
use crate::StoreError;

/// The latest verdict of one (tenant, check, target).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckState {
    pub tenant: String,
    pub check: CheckKind,
    pub target: String,
    pub status: Status,
    pub reason: Reason,
    /// The summary of the latest run.
    pub summary: String,
    /// When status or reason last changed.
    pub since: Timestamp,
    pub last_run: Timestamp,
    /// Runs in a row with this status and reason, the latest included.
    pub consecutive: u32,
}

/// Identifies a check_state row the way observations do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    tenant: String,
    check: CheckKind,
    target: String,
}

impl Key {
    pub(crate) fn of(observation: &Observation) -> Key {
        Key {
            tenant: observation.tenant.as_str().to_owned(),
            check: observation.check,
            target: observation.target.clone(),
        }
    }
}

/// What the recorder needs to know about a key's previous run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct LastState {
    /// check_state.id, which observations refer to.
    pub(crate) id: i64,
    pub(crate) status: Status,
    pub(crate) reason: Reason,
    pub(crate) since: Timestamp,
    pub(crate) consecutive: u32,
    pub(crate) last_stored_at: Timestamp,
}

pub(crate) type StateCache = HashMap<Key, LastState>;

#[derive(sqlx::FromRow)]
struct CheckStateRow {
    id: i64,
    tenant: String,
    check_kind: String,
    target: String,
    status: String,
    reason: String,
    summary: String,
    since: i64,
    last_run: i64,
    consecutive: i64,
    last_stored_at: i64,
}

const SELECT_ALL: &str = "SELECT id, tenant, check_kind, target, status, reason, summary, \
     since, last_run, consecutive, last_stored_at \
     FROM check_state";

const SELECT_VERDICTS: &str = "SELECT id, tenant, check_kind, target, status, reason, summary, \
     since, last_run, consecutive, last_stored_at \
     FROM check_state WHERE reason <> ?1 ORDER BY tenant, check_kind, target";

/// Every key with a verdict. Placeholder rows (keys seen only through shutdown observations,
/// see `record::is_placeholder`) have none, so they are left out.
pub(crate) async fn list(pool: &SqlitePool) -> Result<Vec<CheckState>, StoreError> {
    let rows = sqlx::query_as::<_, CheckStateRow>(SELECT_VERDICTS)
        .bind(Reason::Shutdown.as_str())
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    rows.into_iter()
        .map(|row| {
            Ok(CheckState {
                check: codec::parse_check(&row.check_kind)?,
                status: codec::parse_status(&row.status)?,
                reason: codec::parse_reason(&row.reason)?,
                consecutive: codec::count_from_db(row.consecutive)?,
                since: Timestamp(row.since),
                last_run: Timestamp(row.last_run),
                tenant: row.tenant,
                target: row.target,
                summary: row.summary,
            })
        })
        .collect()
}

/// Reads every key's last state, placeholders included (their ids are needed), for the
/// recorder's cache.
pub(crate) async fn load_cache(pool: &SqlitePool) -> Result<StateCache, StoreError> {
    let rows = sqlx::query_as::<_, CheckStateRow>(SELECT_ALL)
        .fetch_all(pool)
        .await
        .map_err(StoreError::from_sqlx)?;
    let mut cache = StateCache::with_capacity(rows.len());
    for row in rows {
        let last = LastState {
            id: row.id,
            status: codec::parse_status(&row.status)?,
            reason: codec::parse_reason(&row.reason)?,
            since: Timestamp(row.since),
            consecutive: codec::count_from_db(row.consecutive)?,
            last_stored_at: Timestamp(row.last_stored_at),
        };
        let key = Key {
            tenant: row.tenant,
            check: codec::parse_check(&row.check_kind)?,
            target: row.target,
        };
        cache.insert(key, last);
    }
    Ok(cache)
}

/// Creates the rows of keys seen for the first time (each once) and returns their ids. The
/// caller writes their observations next and then [`update_many`]s these rows with them.
pub(crate) async fn insert_many(
    conn: &mut SqliteConnection,
    first_sightings: &[&Observation],
) -> Result<HashMap<Key, i64>, StoreError> {
    if first_sightings.is_empty() {
        return Ok(HashMap::new());
    }
    let mut builder = QueryBuilder::<Sqlite>::new(
        "INSERT INTO check_state (tenant, check_kind, target, status, reason, summary, \
         since, last_run, consecutive, last_stored_at) ",
    );
    builder.push_values(first_sightings, |mut row, observation| {
        let at = observation.started_at.as_millis();
        row.push_bind(observation.tenant.as_str())
            .push_bind(observation.check.as_str())
            .push_bind(observation.target.as_str())
            .push_bind(observation.status.as_str())
            .push_bind(observation.reason.as_str())
            .push_bind(observation.summary.as_str())
            .push_bind(at)
            .push_bind(at)
            .push_bind(1_i64)
            .push_bind(at);
    });
    // The order of RETURNING rows is unspecified, so each row says which key it belongs to.
    builder.push(" RETURNING id, tenant, check_kind, target");
    let rows = builder
        .build_query_as::<(i64, String, String, String)>()
        // Statements built for one batch size are not worth a slot in the statement cache.
        .persistent(false)
        .fetch_all(conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    rows.into_iter()
        .map(|(id, tenant, check_kind, target)| {
            let key = Key {
                tenant,
                check: codec::parse_check(&check_kind)?,
                target,
            };
            Ok((key, id))
        })
        .collect()
}

/// A key's state after one observation, as written to its check_state row.
pub(crate) struct StateUpdate<'a> {
    pub(crate) next: LastState,
    /// `None` keeps the row's summary and last_run (a shutdown is not a run).
    pub(crate) summary: Option<&'a str>,
    pub(crate) last_run: Option<Timestamp>,
    /// The id of the stored observation that started a new state; `None` keeps the old one.
    pub(crate) change_id: Option<i64>,
}

/// Rewrites the check_state rows of distinct keys in one statement.
pub(crate) async fn update_many(
    conn: &mut SqliteConnection,
    updates: &[StateUpdate<'_>],
) -> Result<(), StoreError> {
    if updates.is_empty() {
        return Ok(());
    }
    let mut builder = QueryBuilder::<Sqlite>::new(
        "WITH v (id, status, reason, summary, since, last_run, consecutive, last_stored_at, \
         change_id) AS (",
    );
    builder.push_values(updates, |mut row, update| {
        row.push_bind(update.next.id)
            .push_bind(update.next.status.as_str())
            .push_bind(update.next.reason.as_str())
            .push_bind(update.summary)
            .push_bind(update.next.since.as_millis())
            .push_bind(update.last_run.map(Timestamp::as_millis))
            .push_bind(i64::from(update.next.consecutive))
            .push_bind(update.next.last_stored_at.as_millis())
            .push_bind(update.change_id);
    });
    builder.push(
        ") UPDATE check_state SET status = v.status, reason = v.reason, \
         summary = COALESCE(v.summary, check_state.summary), \
         since = v.since, last_run = COALESCE(v.last_run, check_state.last_run), \
         consecutive = v.consecutive, \
         last_stored_at = v.last_stored_at, \
         change_id = COALESCE(v.change_id, check_state.change_id) \
         FROM v WHERE check_state.id = v.id",
    );
    builder
        .build()
        .persistent(false)
        .execute(conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    Ok(())
}
