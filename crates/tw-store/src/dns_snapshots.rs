//! The last DNS record set seen per (tenant, domain): what drift is measured against.
//!
//! The dns probe reports drift against the previous record set; keeping that set here (rather
//! than only in memory) means a restart does not forget it and a change made while the daemon
//! was down is still reported. `changed_at` moves only when the set differs, so it answers
//! "since when do the records look like this".

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
    /// When this set was last seen.
    pub seen_at: Timestamp,
    /// When the set last differed from the one before it (first sight counts).
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

/// Records each set as its tenant's latest for its domain. The JSON of a `BTreeMap` has its
/// keys in order, so equal sets have equal text and the comparison can stay in SQL, with no
/// read before the write. (In an UPDATE, SQLite evaluates every right-hand side against the
/// old row, so `records` in the CASE is the previous set; rows naming the same domain twice
/// are applied one after the other.)
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
             changed_at = CASE WHEN records = excluded.records THEN changed_at \
                               ELSE excluded.seen_at END, \
             records = excluded.records, \
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
