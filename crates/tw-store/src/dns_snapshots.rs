//! The last DNS record set seen per (tenant, domain): what drift is measured against.
//!
//! The dns probe reports drift against the previous record set; keeping that set here (rather
//! than only in memory) means a restart does not forget it and a change made while the daemon
//! was down is still reported. A label whose lookup failed keeps its last known values, and
//! `changed_at` moves only when the merged set differs, so it answers "since when do the
//! records look like this".

use std::collections::BTreeMap;

use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use tw_core::{DnsEvidence, Timestamp};

use crate::StoreError;

#[derive(Debug, Clone, PartialEq)]
pub struct DnsSnapshot {
    pub tenant: String,
    pub domain: String,
    /// Record set by label, as in `DnsEvidence::records`.
    pub records: BTreeMap<String, Vec<String>>,
    /// When a lookup of this domain last answered (some labels may have failed then and
    /// kept their earlier values).
    pub seen_at: Timestamp,
    /// When the merged set last differed from the one before it (first sight counts).
    pub changed_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct DnsSnapshotRow {
    tenant: String,
    domain: String,
    records: String,
    seen_at: i64,
    changed_at: i64,
}

/// A DNS record set seen by one observation.
pub(crate) struct SeenRecords<'a> {
    pub(crate) tenant: &'a str,
    pub(crate) evidence: &'a DnsEvidence,
    pub(crate) seen_at: Timestamp,
}

/// Merges each set into its tenant's snapshot for its domain. A label whose lookup failed is
/// absent from `DnsEvidence::records` (a label that has no records is present, empty), so the
/// stored set is the previous one with the new labels laid over it: `json_patch` (RFC 7396)
/// replaces the value of every label present, arrays whole, and keeps the others. A failed
/// lookup therefore neither drops a label from the snapshot nor moves `changed_at`, and drift
/// for it is still measured after a restart.
///
/// `changed_at` moves only when the merged set differs from the stored one. Both sides of that
/// comparison are SQLite's rendering of the same object with its labels in the same order
/// (`json_patch` keeps the target's order and appends new labels), so equal sets have equal
/// text and the comparison stays in SQL, with no read before the write. (In an UPDATE, SQLite
/// evaluates every right-hand side against the old row, so `records` in the CASE is the
/// previous set; rows naming the same domain twice are applied one after the other.)
pub(crate) async fn upsert_many(
    conn: &mut SqliteConnection,
    seen: &[SeenRecords<'_>],
) -> Result<(), StoreError> {
    if seen.is_empty() {
        return Ok(());
    }
    let records = seen
        .iter()
        .map(|row| {
            serde_json::to_string(&row.evidence.records)
                .map_err(|err| StoreError::decode("DNS records could not be encoded as JSON", err))
        })
        .collect::<Result<Vec<String>, StoreError>>()?;
    let mut builder = QueryBuilder::<Sqlite>::new(
        "INSERT INTO dns_snapshots (tenant, domain, records, seen_at, changed_at) ",
    );
    builder.push_values(seen.iter().zip(records), |mut values, (row, records)| {
        values
            .push_bind(row.tenant)
            .push_bind(row.evidence.domain.as_str())
            .push_bind(records)
            .push_bind(row.seen_at.as_millis())
            .push_bind(row.seen_at.as_millis());
    });
    builder.push(
        " ON CONFLICT (tenant, domain) DO UPDATE SET \
             changed_at = CASE WHEN json_patch(records, excluded.records) = json(records) \
                               THEN changed_at ELSE excluded.seen_at END, \
             records = json_patch(records, excluded.records), \
             seen_at = excluded.seen_at",
    );
    builder
        .build()
        .persistent(false)
        .execute(conn)
        .await
        .map_err(StoreError::from_sqlx)?;
    Ok(())
}

pub(crate) async fn list(pool: &SqlitePool) -> Result<Vec<DnsSnapshot>, StoreError> {
    let rows = sqlx::query_as::<_, DnsSnapshotRow>(
        "SELECT tenant, domain, records, seen_at, changed_at FROM dns_snapshots \
         ORDER BY tenant, domain",
    )
    .fetch_all(pool)
    .await
    .map_err(StoreError::from_sqlx)?;
    rows.into_iter()
        .map(|row| {
            let records = serde_json::from_str(&row.records)
                .map_err(|err| StoreError::decode("DNS snapshot JSON", err))?;
            Ok(DnsSnapshot {
                tenant: row.tenant,
                domain: row.domain,
                records,
                seen_at: Timestamp(row.seen_at),
                changed_at: Timestamp(row.changed_at),
            })
        })
        .collect()
}
