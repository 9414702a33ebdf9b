//! Facts HTTP checks learned and need again: a watched identity's object id, a domain's
//! namespace type, the tenant id a domain resolved to (`tw_core::REMEMBERED_FACTS`).
//!
//! The identity check looks a user up by object id after first sight, because a soft-deleted
//! user's UPN changes; if the id lived only in memory, a restart after the deletion would look
//! up the old UPN, get 404 and could no longer find the user in deleted items by id. The
//! facts are written with the observation that carried them, and only for observations that
//! are stored (first sight and every state change always are), so a steady state costs nothing.

use std::collections::BTreeMap;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tw_core::{CheckKind, Evidence, Observation, Timestamp, REMEMBERED_FACTS};

use crate::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct LearnedFacts {
    pub tenant: String,
    pub check: CheckKind,
    pub target: String,
    pub facts: BTreeMap<String, String>,
    pub seen_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct LearnedRow {
    tenant: String,
    check_kind: String,
    target: String,
    facts: String,
    seen_at: i64,
}

/// The remembered facts an observation carries, if any.
fn remembered(observation: &Observation) -> Option<BTreeMap<&str, &str>> {
    let Evidence::Http(evidence) = &observation.evidence else {
        return None;
    };
    let facts: BTreeMap<&str, &str> = REMEMBERED_FACTS
        .iter()
        .filter_map(|key| evidence.facts.get(*key).map(|value| (*key, value.as_str())))
        .collect();
    (!facts.is_empty()).then_some(facts)
}

pub(crate) async fn upsert_many(
    conn: &mut SqliteConnection,
    stored: &[&Observation],
) -> Result<(), StoreError> {
    let rows: Vec<(&Observation, String)> = stored
        .iter()
        .filter_map(|observation| remembered(observation).map(|facts| (*observation, facts)))
        .map(|(observation, facts)| {
            serde_json::to_string(&facts)
                .map(|json| (observation, json))
                .map_err(|err| StoreError::decode("learned facts could not be encoded", err))
        })
        .collect::<Result<_, _>>()?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut builder = QueryBuilder::<Sqlite>::new(
        "INSERT INTO learned_facts (tenant, check_kind, target, facts, seen_at) ",
    );
    builder.push_values(rows, |mut values, (observation, facts)| {
        values
            .push_bind(observation.tenant.as_str())
            .push_bind(observation.check.as_str())
            .push_bind(observation.target.as_str())
            .push_bind(facts)
            .push_bind(observation.started_at.as_millis());
    });
    builder.push(
        " ON CONFLICT (tenant, check_kind, target) DO UPDATE SET \
             facts = json_patch(facts, excluded.facts), seen_at = excluded.seen_at",
    );
    builder
        .build()
        .persistent(false)
        .execute(conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    Ok(())
}

pub(crate) async fn list(pool: &SqlitePool) -> Result<Vec<LearnedFacts>, StoreError> {
    let rows = sqlx::query_as::<_, LearnedRow>(
        "SELECT tenant, check_kind, target, facts, seen_at FROM learned_facts \
         ORDER BY tenant, check_kind, target",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.into_iter()
        .map(|row| {
            let check = row
                .check_kind
                .parse::<CheckKind>()
                .map_err(|err| StoreError::decode("learned_facts.check_kind", err))?;
            let facts = serde_json::from_str(&row.facts)
                .map_err(|err| StoreError::decode("learned_facts.facts JSON", err))?;
            Ok(LearnedFacts {
                tenant: row.tenant,
                check,
                target: row.target,
                facts,
                seen_at: Timestamp(row.seen_at),
            })
        })
        .collect()
}
