//! Store behaviour against a real SQLite file: one fresh database per test.
//!
//! Timestamps are built explicitly from `T0`, so sampling intervals are crossed by arithmetic,
//! never by sleeping. Where a test needs to look under the API (pragmas, migrations, injected
//! failures), it opens its own sqlx connection to the same file.

// Integration tests are always built with cfg(test), so this excludes nothing; it tells clippy
// that the helpers outside #[test] functions are test code too (allow-unwrap-in-tests).
#![cfg(test)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tempfile::TempDir;
use tw_core::{
    CheckKind, Direction, DnsEvidence, DnsFinding, Evidence, Observation, RcptVerdict, Reason,
    SmtpEvidence, Status, TenantName, Timestamp, TlsEvidence, TranscriptLine,
};
use tw_store::{
    CheckState, DnsSnapshot, RecordOutcome, RecordPolicy, Store, StoreError, StoredObservation,
};

const T0: i64 = 1_795_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const POLICY: RecordPolicy = RecordPolicy {
    ok_sample_interval: Duration::from_secs(3_600),
};
const ADMIN: &str = "admin@contoso.com";
const SALES: &str = "sales@contoso.com";

struct Fixture {
    // Held so the directory outlives the store.
    _dir: TempDir,
    path: PathBuf,
    store: Store,
}

async fn fresh() -> Fixture {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tenantwatch.db");
    let store = Store::open(&path).await.unwrap();
    Fixture {
        _dir: dir,
        path,
        store,
    }
}

/// A second connection to the same file, for looking under the API.
async fn raw(path: &Path) -> SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

fn rcpt(tenant: &str, target: &str, reason: Reason, at: i64) -> Observation {
    Observation {
        tenant: TenantName::parse(tenant).unwrap(),
        check: CheckKind::SmtpRcpt,
        target: target.to_owned(),
        scheduled_for: Timestamp(at),
        started_at: Timestamp(at),
        elapsed: Duration::from_millis(120),
        status: reason.status(),
        reason,
        summary: format!("{reason} at {at}"),
        evidence: Evidence::None,
    }
}

fn dns(domain: &str, records: &[(&str, &[&str])], reason: Reason, at: i64) -> Observation {
    let records: BTreeMap<String, Vec<String>> = records
        .iter()
        .map(|(label, values)| {
            let values = values.iter().map(|value| (*value).to_owned()).collect();
            ((*label).to_owned(), values)
        })
        .collect();
    Observation {
        tenant: TenantName::parse("contoso").unwrap(),
        check: CheckKind::Dns,
        target: domain.to_owned(),
        scheduled_for: Timestamp(at),
        started_at: Timestamp(at),
        elapsed: Duration::from_millis(8),
        status: reason.status(),
        reason,
        summary: reason.describe().to_owned(),
        evidence: Evidence::Dns(DnsEvidence {
            domain: domain.to_owned(),
            records,
            ..Default::default()
        }),
    }
}

fn outcome(stored: usize, sampled_out: usize, state_changes: usize) -> RecordOutcome {
    RecordOutcome {
        stored,
        sampled_out,
        state_changes,
        enqueued: 0,
    }
}

async fn state_of(store: &Store, target: &str) -> CheckState {
    store
        .check_states()
        .await
        .unwrap()
        .into_iter()
        .find(|state| state.target == target)
        .unwrap()
}

/// (started_at, reason, state_change) of a target's stored history, oldest first.
async fn history(store: &Store, target: &str) -> Vec<(i64, Reason, bool)> {
    let mut rows: Vec<_> = store
        .observations(None, None, Some(target), 1_000)
        .await
        .unwrap()
        .into_iter()
        .map(|row| (row.started_at.0, row.reason, row.state_change))
        .collect();
    rows.reverse();
    rows
}

#[tokio::test]
async fn open_creates_the_directory_and_a_wal_database_with_incremental_vacuum() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nested/state/tenantwatch.db");
    let store = Store::open(&path).await.unwrap();
    assert!(path.exists());

    let mut conn = raw(&path).await;
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(journal_mode, "wal");
    // 2 = INCREMENTAL; it only sticks if set before the first table was created.
    let auto_vacuum: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(auto_vacuum, 2);
    conn.close().await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn an_empty_batch_writes_nothing() {
    let fx = fresh().await;
    assert_eq!(
        fx.store.record(&[], POLICY).await.unwrap(),
        outcome(0, 0, 0)
    );
    assert!(fx.store.check_states().await.unwrap().is_empty());
}

#[tokio::test]
async fn first_observation_of_a_key_is_a_stored_state_change() {
    let fx = fresh().await;
    let first = rcpt("contoso", ADMIN, Reason::RecipientAccepted, T0);
    let result = fx
        .store
        .record(std::slice::from_ref(&first), POLICY)
        .await
        .unwrap();
    assert_eq!(result, outcome(1, 0, 1));

    assert_eq!(
        fx.store.check_states().await.unwrap(),
        [CheckState {
            tenant: "contoso".to_owned(),
            check: CheckKind::SmtpRcpt,
            target: ADMIN.to_owned(),
            status: Status::Ok,
            reason: Reason::RecipientAccepted,
            summary: first.summary.clone(),
            since: Timestamp(T0),
            last_run: Timestamp(T0),
            consecutive: 1,
        }]
    );
    assert_eq!(
        history(&fx.store, ADMIN).await,
        [(T0, Reason::RecipientAccepted, true)]
    );
}

#[tokio::test]
async fn repeated_ok_is_sampled_out_until_the_interval_has_passed() {
    let fx = fresh().await;
    let ok = |at| rcpt("contoso", ADMIN, Reason::RecipientAccepted, at);

    let batch: Vec<_> = (0..12).map(|i| ok(T0 + i * 5 * MINUTE)).collect();
    assert_eq!(
        fx.store.record(&batch, POLICY).await.unwrap(),
        outcome(1, 11, 1)
    );
    // One hour after the last stored one: stored again, as a sample, not a change.
    assert_eq!(
        fx.store.record(&[ok(T0 + HOUR)], POLICY).await.unwrap(),
        outcome(1, 0, 0)
    );
    // The interval now counts from that sample.
    assert_eq!(
        fx.store
            .record(&[ok(T0 + HOUR + 5 * MINUTE)], POLICY)
            .await
            .unwrap(),
        outcome(0, 1, 0)
    );
    assert_eq!(
        history(&fx.store, ADMIN).await,
        [
            (T0, Reason::RecipientAccepted, true),
            (T0 + HOUR, Reason::RecipientAccepted, false),
        ]
    );
}

/// The hourly sample of a healthy key keeps its verdict, summary and timing but not its
/// evidence; the state change before it and every non-ok observation keep theirs in full.
#[tokio::test]
async fn ok_samples_are_stored_without_evidence_and_changes_with_it() {
    let fx = fresh().await;
    let mx: &[&str] = &["0 contoso-com.mail.protection.outlook.com."];
    let ok = |at| dns("contoso.com", &[("mx", mx)], Reason::DnsRecordsOk, at);
    let missing = |at| dns("contoso.com", &[("mx", &[])], Reason::MxMissing, at);
    let batch = [
        ok(T0),
        ok(T0 + HOUR),
        missing(T0 + HOUR + 5 * MINUTE),
        missing(T0 + HOUR + 10 * MINUTE),
        ok(T0 + HOUR + 15 * MINUTE),
        ok(T0 + 3 * HOUR),
    ];
    assert_eq!(
        fx.store.record(&batch, POLICY).await.unwrap(),
        outcome(6, 0, 3)
    );
    let mut rows = fx
        .store
        .observations(None, None, Some("contoso.com"), 100)
        .await
        .unwrap();
    rows.sort_by_key(|row| row.started_at);
    let kept: Vec<(i64, bool, bool)> = rows
        .iter()
        .map(|row| {
            let with_evidence = row.evidence != Evidence::None;
            (row.started_at.0, row.state_change, with_evidence)
        })
        .collect();
    assert_eq!(
        kept,
        [
            (T0, true, true),
            (T0 + HOUR, false, false),
            (T0 + HOUR + 5 * MINUTE, true, true),
            (T0 + HOUR + 10 * MINUTE, false, true),
            (T0 + HOUR + 15 * MINUTE, true, true),
            (T0 + 3 * HOUR, false, false),
        ]
    );
    // The sample still says what the run saw, in one line, and when.
    let sample = &rows[1];
    assert_eq!(sample.status, Status::Ok);
    assert_eq!(sample.summary, ok(T0 + HOUR).summary);
    assert_eq!(sample.elapsed, Duration::from_millis(8));
}

#[tokio::test]
async fn every_non_ok_observation_and_every_change_is_stored() {
    let fx = fresh().await;
    let at = |i: i64| T0 + i * 5 * MINUTE;
    let batch = [
        rcpt("contoso", ADMIN, Reason::RecipientAccepted, at(0)),
        rcpt("contoso", ADMIN, Reason::Timeout, at(1)),
        rcpt("contoso", ADMIN, Reason::Timeout, at(2)),
        rcpt("contoso", ADMIN, Reason::RecipientNotFound, at(3)),
        rcpt("contoso", ADMIN, Reason::RecipientNotFound, at(4)),
        rcpt("contoso", ADMIN, Reason::RecipientAccepted, at(5)),
        rcpt("contoso", ADMIN, Reason::RecipientAccepted, at(6)),
    ];
    assert_eq!(
        fx.store.record(&batch, POLICY).await.unwrap(),
        outcome(6, 1, 4)
    );
    assert_eq!(
        history(&fx.store, ADMIN).await,
        [
            (at(0), Reason::RecipientAccepted, true),
            (at(1), Reason::Timeout, true),
            (at(2), Reason::Timeout, false),
            (at(3), Reason::RecipientNotFound, true),
            (at(4), Reason::RecipientNotFound, false),
            (at(5), Reason::RecipientAccepted, true),
        ]
    );
}

#[tokio::test]
async fn since_holds_and_consecutive_counts_until_status_or_reason_changes() {
    let fx = fresh().await;
    let at = |i: i64| T0 + i * 5 * MINUTE;
    for i in 0..3 {
        fx.store
            .record(&[rcpt("contoso", ADMIN, Reason::Timeout, at(i))], POLICY)
            .await
            .unwrap();
    }
    let state = state_of(&fx.store, ADMIN).await;
    assert_eq!(
        (state.since, state.last_run, state.consecutive),
        (Timestamp(at(0)), Timestamp(at(2)), 3)
    );
    assert_eq!(
        state.summary,
        format!("timeout at {}", at(2)),
        "summary follows the latest run"
    );

    // Same status (unknown), different reason: a new state.
    fx.store
        .record(
            &[rcpt("contoso", ADMIN, Reason::ConnectFailed, at(3))],
            POLICY,
        )
        .await
        .unwrap();
    let state = state_of(&fx.store, ADMIN).await;
    assert_eq!(
        (state.status, state.reason, state.since, state.consecutive),
        (Status::Unknown, Reason::ConnectFailed, Timestamp(at(3)), 1)
    );

    fx.store
        .record(
            &[rcpt("contoso", ADMIN, Reason::RecipientNotFound, at(4))],
            POLICY,
        )
        .await
        .unwrap();
    let state = state_of(&fx.store, ADMIN).await;
    assert_eq!(
        (state.status, state.since, state.last_run, state.consecutive),
        (Status::Critical, Timestamp(at(4)), Timestamp(at(4)), 1)
    );
}

#[tokio::test]
async fn keys_repeated_within_one_batch_are_applied_in_batch_order() {
    let fx = fresh().await;
    let batch = [
        rcpt("contoso", ADMIN, Reason::RecipientAccepted, T0),
        rcpt("contoso", SALES, Reason::RecipientAccepted, T0),
        rcpt("contoso", ADMIN, Reason::RecipientAccepted, T0 + MINUTE),
        rcpt("contoso", ADMIN, Reason::RecipientNotFound, T0 + 2 * MINUTE),
        rcpt("fabrikam", ADMIN, Reason::RecipientAccepted, T0),
    ];
    assert_eq!(
        fx.store.record(&batch, POLICY).await.unwrap(),
        outcome(4, 1, 4)
    );

    let states = fx.store.check_states().await.unwrap();
    let summary: Vec<_> = states
        .iter()
        .map(|s| {
            (
                s.tenant.as_str(),
                s.target.as_str(),
                s.reason,
                s.consecutive,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("contoso", ADMIN, Reason::RecipientNotFound, 1),
            ("contoso", SALES, Reason::RecipientAccepted, 1),
            ("fabrikam", ADMIN, Reason::RecipientAccepted, 1),
        ]
    );
}

#[tokio::test]
async fn a_batch_larger_than_one_statement_is_recorded_whole() {
    let fx = fresh().await;
    let address = |i: usize| format!("user{i}@contoso.com");
    // 1,300 keys, each seen twice in the same batch: more rows than one multi-row statement
    // takes, and every key repeated.
    let batch: Vec<Observation> = (0..2)
        .flat_map(|round| {
            (0..1_300).map(move |i| {
                let reason = if i % 2 == 0 {
                    Reason::RecipientAccepted
                } else {
                    Reason::Timeout
                };
                rcpt("contoso", &address(i), reason, T0 + round * 5 * MINUTE)
            })
        })
        .collect();
    assert_eq!(
        fx.store.record(&batch, POLICY).await.unwrap(),
        outcome(1_300 + 650, 650, 1_300)
    );

    let states = fx.store.check_states().await.unwrap();
    assert_eq!(states.len(), 1_300);
    assert!(states
        .iter()
        .all(|state| state.consecutive == 2 && state.since == Timestamp(T0)));
    let stored = fx
        .store
        .observations(None, None, None, 10_000)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1_950);
    assert_eq!(stored.iter().filter(|row| row.state_change).count(), 1_300);
}

#[tokio::test]
async fn dns_snapshot_is_upserted_and_changed_at_moves_only_when_records_differ() {
    let fx = fresh().await;
    let mx_a: &[&str] = &["0 contoso-com.mail.protection.outlook.com."];
    let mx_b: &[&str] = &["10 mx.elsewhere.example."];
    let spf: &[&str] = &["v=spf1 include:spf.protection.outlook.com -all"];
    let snapshot = |records: &[(&str, &[&str])], seen: i64, changed: i64| DnsSnapshot {
        tenant: "contoso".to_owned(),
        domain: "contoso.com".to_owned(),
        records: records
            .iter()
            .map(|(label, values)| {
                let values = values.iter().map(|value| (*value).to_owned()).collect();
                ((*label).to_owned(), values)
            })
            .collect(),
        seen_at: Timestamp(seen),
        changed_at: Timestamp(changed),
    };

    let first = [("mx", mx_a), ("spf", spf)];
    fx.store
        .record(
            &[dns("contoso.com", &first, Reason::DnsRecordsOk, T0)],
            POLICY,
        )
        .await
        .unwrap();
    assert_eq!(
        fx.store.dns_snapshots().await.unwrap(),
        [snapshot(&first, T0, T0)]
    );

    fx.store
        .record(
            &[dns(
                "contoso.com",
                &first,
                Reason::DnsRecordsOk,
                T0 + 5 * MINUTE,
            )],
            POLICY,
        )
        .await
        .unwrap();
    assert_eq!(
        fx.store.dns_snapshots().await.unwrap(),
        [snapshot(&first, T0 + 5 * MINUTE, T0)]
    );

    let moved = [("mx", mx_b), ("spf", spf)];
    fx.store
        .record(
            &[dns(
                "contoso.com",
                &moved,
                Reason::MxNotMicrosoft,
                T0 + 10 * MINUTE,
            )],
            POLICY,
        )
        .await
        .unwrap();
    assert_eq!(
        fx.store.dns_snapshots().await.unwrap(),
        [snapshot(&moved, T0 + 10 * MINUTE, T0 + 10 * MINUTE)]
    );

    // Every lookup failed: no record set to compare against, so the last one is kept.
    fx.store
        .record(
            &[dns(
                "contoso.com",
                &[],
                Reason::DnsUnavailable,
                T0 + 15 * MINUTE,
            )],
            POLICY,
        )
        .await
        .unwrap();
    assert_eq!(
        fx.store.dns_snapshots().await.unwrap(),
        [snapshot(&moved, T0 + 10 * MINUTE, T0 + 10 * MINUTE)]
    );
    assert_eq!(
        state_of(&fx.store, "contoso.com").await.reason,
        Reason::DnsUnavailable
    );
}

#[tokio::test]
async fn a_shutdown_is_stored_as_history_but_leaves_since_and_consecutive_alone() {
    let fx = fresh().await;
    let at = |i: i64| T0 + i * 5 * MINUTE;
    let ok = |i| rcpt("contoso", ADMIN, Reason::RecipientAccepted, at(i));
    let shutdown = rcpt("contoso", ADMIN, Reason::Shutdown, at(2));

    assert_eq!(
        fx.store.record(&[ok(0)], POLICY).await.unwrap(),
        outcome(1, 0, 1)
    );
    assert_eq!(
        fx.store.record(&[ok(1)], POLICY).await.unwrap(),
        outcome(0, 1, 0)
    );
    let before = state_of(&fx.store, ADMIN).await;
    assert_eq!(
        fx.store.record(&[shutdown], POLICY).await.unwrap(),
        outcome(1, 0, 0)
    );
    // Not a run: summary and last_run still describe the last real one.
    assert_eq!(state_of(&fx.store, ADMIN).await, before);

    // The daemon restarts: the state comes back from disk, not from the cache.
    fx.store.close().await;
    let store = Store::open(&fx.path).await.unwrap();
    assert_eq!(
        store.record(&[ok(3)], POLICY).await.unwrap(),
        outcome(0, 1, 0)
    );
    let state = state_of(&store, ADMIN).await;
    assert_eq!(
        (
            state.status,
            state.reason,
            state.since,
            state.last_run,
            state.consecutive
        ),
        (
            Status::Ok,
            Reason::RecipientAccepted,
            Timestamp(at(0)),
            Timestamp(at(3)),
            3
        ),
        "the shutdown is not counted as a run"
    );
    // One state change only; the shutdown is kept as a plain row. It does not count as an ok
    // sample either, so the sampling interval still runs from T0.
    assert_eq!(
        history(&store, ADMIN).await,
        [
            (at(0), Reason::RecipientAccepted, true),
            (at(2), Reason::Shutdown, false),
        ]
    );
    assert_eq!(
        store.record(&[ok(12)], POLICY).await.unwrap(),
        outcome(1, 0, 0)
    );
    store.close().await;
}

#[tokio::test]
async fn a_shutdown_keeps_a_critical_target_critical() {
    let fx = fresh().await;
    let critical = |at| rcpt("contoso", ADMIN, Reason::RecipientNotFound, at);
    fx.store
        .record(&[critical(T0), critical(T0 + 5 * MINUTE)], POLICY)
        .await
        .unwrap();
    let before = state_of(&fx.store, ADMIN).await;
    assert_eq!(
        fx.store
            .record(
                &[rcpt("contoso", ADMIN, Reason::Shutdown, T0 + 10 * MINUTE)],
                POLICY
            )
            .await
            .unwrap(),
        outcome(1, 0, 0)
    );
    let after = state_of(&fx.store, ADMIN).await;
    assert_eq!(after, before);
    assert_eq!(
        (after.status, after.since, after.consecutive),
        (Status::Critical, Timestamp(T0), 2)
    );

    // Confirmation carries on across the restart.
    assert_eq!(
        fx.store
            .record(&[critical(T0 + 15 * MINUTE)], POLICY)
            .await
            .unwrap(),
        outcome(1, 0, 0)
    );
    let state = state_of(&fx.store, ADMIN).await;
    assert_eq!(
        (state.status, state.since, state.consecutive),
        (Status::Critical, Timestamp(T0), 3)
    );
}

#[tokio::test]
async fn a_key_seen_only_through_shutdowns_has_no_state_until_its_first_real_run() {
    let fx = fresh().await;
    let shutdown = |at| rcpt("contoso", ADMIN, Reason::Shutdown, at);
    assert_eq!(
        fx.store.record(&[shutdown(T0)], POLICY).await.unwrap(),
        outcome(1, 0, 0)
    );
    assert!(fx.store.check_states().await.unwrap().is_empty());
    assert_eq!(
        history(&fx.store, ADMIN).await,
        [(T0, Reason::Shutdown, false)]
    );
    // The placeholder row the history refers to points at that observation: no check_state
    // row is left with a NULL change_id after a commit.
    let mut conn = raw(&fx.path).await;
    let null_change_ids: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM check_state WHERE change_id IS NULL")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(null_change_ids, 0);
    conn.close().await.unwrap();

    fx.store.close().await;
    let store = Store::open(&fx.path).await.unwrap();
    assert_eq!(
        store
            .record(&[shutdown(T0 + 5 * MINUTE)], POLICY)
            .await
            .unwrap(),
        outcome(1, 0, 0)
    );
    assert!(store.check_states().await.unwrap().is_empty());

    let first = rcpt(
        "contoso",
        ADMIN,
        Reason::RecipientNotFound,
        T0 + 10 * MINUTE,
    );
    assert_eq!(
        store
            .record(std::slice::from_ref(&first), POLICY)
            .await
            .unwrap(),
        outcome(1, 0, 1)
    );
    assert_eq!(
        store.check_states().await.unwrap(),
        [CheckState {
            tenant: "contoso".to_owned(),
            check: CheckKind::SmtpRcpt,
            target: ADMIN.to_owned(),
            status: Status::Critical,
            reason: Reason::RecipientNotFound,
            summary: first.summary.clone(),
            since: first.started_at,
            last_run: first.started_at,
            consecutive: 1,
        }]
    );
    assert_eq!(
        history(&store, ADMIN).await,
        [
            (T0, Reason::Shutdown, false),
            (T0 + 5 * MINUTE, Reason::Shutdown, false),
            (T0 + 10 * MINUTE, Reason::RecipientNotFound, true),
        ]
    );
    // The current state's evidence is its first real observation, which prune keeps.
    assert_eq!(store.prune(Timestamp(T0 + HOUR)).await.unwrap(), 2);
    assert_eq!(
        history(&store, ADMIN).await,
        [(T0 + 10 * MINUTE, Reason::RecipientNotFound, true)]
    );
    store.close().await;
}

fn snapshot_of(records: &[(&str, &[&str])], seen: i64, changed: i64) -> DnsSnapshot {
    DnsSnapshot {
        tenant: "contoso".to_owned(),
        domain: "contoso.com".to_owned(),
        records: records
            .iter()
            .map(|(label, values)| {
                let values = values.iter().map(|value| (*value).to_owned()).collect();
                ((*label).to_owned(), values)
            })
            .collect(),
        seen_at: Timestamp(seen),
        changed_at: Timestamp(changed),
    }
}

#[tokio::test]
async fn a_failed_dns_lookup_keeps_its_label_and_changed_at_in_the_snapshot() {
    let fx = fresh().await;
    let mx: &[&str] = &["0 contoso-com.mail.protection.outlook.com."];
    let dmarc_x: &[&str] = &["v=DMARC1; p=reject"];
    let dmarc_y: &[&str] = &["v=DMARC1; p=none"];
    let spf: &[&str] = &["v=spf1 include:spf.protection.outlook.com -all"];
    let at = |i: i64| T0 + i * 5 * MINUTE;
    let seen = |records: &[(&str, &[&str])], i: i64| {
        dns("contoso.com", records, Reason::DnsRecordsOk, at(i))
    };

    fx.store
        .record(&[seen(&[("mx", mx), ("dmarc", dmarc_x)], 0)], POLICY)
        .await
        .unwrap();
    // The dmarc lookup failed, so the label is absent: its last value is kept, nothing changed.
    fx.store
        .record(&[seen(&[("mx", mx)], 1)], POLICY)
        .await
        .unwrap();
    assert_eq!(
        fx.store.dns_snapshots().await.unwrap(),
        [snapshot_of(&[("mx", mx), ("dmarc", dmarc_x)], at(1), at(0))]
    );

    // After a restart the kept value is still there to measure drift against.
    fx.store.close().await;
    let store = Store::open(&fx.path).await.unwrap();
    store
        .record(&[seen(&[("mx", mx), ("dmarc", dmarc_y)], 2)], POLICY)
        .await
        .unwrap();
    assert_eq!(
        store.dns_snapshots().await.unwrap(),
        [snapshot_of(&[("mx", mx), ("dmarc", dmarc_y)], at(2), at(2))]
    );

    // A label seen for the first time is a change; seeing the same labels again (in whatever
    // order they were merged) is not, even with other lookups failing.
    store
        .record(&[seen(&[("spf", spf)], 3)], POLICY)
        .await
        .unwrap();
    let all = [("mx", mx), ("dmarc", dmarc_y), ("spf", spf)];
    assert_eq!(
        store.dns_snapshots().await.unwrap(),
        [snapshot_of(&all, at(3), at(3))]
    );
    store.record(&[seen(&all, 4)], POLICY).await.unwrap();
    store
        .record(&[seen(&[("dmarc", dmarc_y)], 5)], POLICY)
        .await
        .unwrap();
    assert_eq!(
        store.dns_snapshots().await.unwrap(),
        [snapshot_of(&all, at(5), at(3))]
    );

    // A label that answered with no records is present and empty, which is a change.
    store
        .record(&[seen(&[("mx", mx), ("dmarc", &[])], 6)], POLICY)
        .await
        .unwrap();
    assert_eq!(
        store.dns_snapshots().await.unwrap(),
        [snapshot_of(
            &[("mx", mx), ("dmarc", &[]), ("spf", spf)],
            at(6),
            at(6)
        )]
    );
    store.close().await;
}

#[tokio::test]
async fn evidence_and_timings_round_trip_through_the_database() {
    let fx = fresh().await;
    let mut observation = rcpt("contoso", ADMIN, Reason::RecipientNotFound, T0);
    observation.scheduled_for = Timestamp(T0 - 1_500);
    observation.elapsed = Duration::from_micros(1_234_567);
    observation.summary = "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found".into();
    observation.evidence = Evidence::SmtpRcpt(SmtpEvidence {
        mx_host: Some("contoso-com.mail.protection.outlook.com".into()),
        peer: Some("192.0.2.10:25".into()),
        tls: Some(TlsEvidence {
            established: true,
            protocol: Some("TLSv1.3".into()),
            error: None,
        }),
        transcript: vec![
            TranscriptLine {
                at_ms: 0,
                direction: Direction::Note,
                line: "connected".into(),
            },
            TranscriptLine {
                at_ms: 41,
                direction: Direction::Client,
                line: format!("RCPT TO:<{ADMIN}>"),
            },
            TranscriptLine {
                at_ms: 97,
                direction: Direction::Server,
                line: "550 5.1.10 RESOLVER.ADR.RecipientNotFound; \"quoted\" ünïcode".into(),
            },
        ],
        rcpt: vec![RcptVerdict {
            address: ADMIN.into(),
            control: false,
            code: Some(550),
            enhanced: Some("5.1.10".into()),
            text: "RESOLVER.ADR.RecipientNotFound".into(),
        }],
    });
    let mut dns_observation = dns(
        "contoso.com",
        &[("mx", &["0 contoso-com.mail.protection.outlook.com."])],
        Reason::DkimMissing,
        T0,
    );
    if let Evidence::Dns(evidence) = &mut dns_observation.evidence {
        evidence
            .lookup_errors
            .insert("dkim_selector1".into(), "NXDOMAIN".into());
        evidence.findings.push(DnsFinding {
            record: "dkim_selector1".into(),
            status: "warning".into(),
            message: "selector1 CNAME missing".into(),
        });
        evidence.drift.push("mx: [a] -> [b]".into());
    }

    fx.store
        .record(&[observation.clone(), dns_observation.clone()], POLICY)
        .await
        .unwrap();

    for expected in [observation, dns_observation] {
        let stored = fx
            .store
            .observations(None, Some(expected.check), None, 10)
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(
            stored[0],
            StoredObservation {
                id: stored[0].id,
                tenant: expected.tenant.as_str().to_owned(),
                check: expected.check,
                target: expected.target.clone(),
                scheduled_for: expected.scheduled_for,
                started_at: expected.started_at,
                elapsed: expected.elapsed,
                status: expected.status,
                reason: expected.reason,
                summary: expected.summary.clone(),
                state_change: true,
                evidence: expected.evidence.clone(),
            }
        );
    }
}

#[tokio::test]
async fn observations_are_newest_first_and_filtered_by_tenant_check_and_target() {
    let fx = fresh().await;
    let batch = [
        rcpt("contoso", ADMIN, Reason::Timeout, T0),
        rcpt("contoso", SALES, Reason::Timeout, T0 + MINUTE),
        rcpt("fabrikam", ADMIN, Reason::Timeout, T0 + 2 * MINUTE),
        dns(
            "contoso.com",
            &[("mx", &["0 a."])],
            Reason::DnsRecordsOk,
            T0 + 3 * MINUTE,
        ),
        rcpt("contoso", ADMIN, Reason::Timeout, T0 + 4 * MINUTE),
    ];
    fx.store.record(&batch, POLICY).await.unwrap();

    let keys = |rows: Vec<StoredObservation>| -> Vec<(String, String, i64)> {
        rows.into_iter()
            .map(|row| (row.tenant, row.target, (row.started_at.0 - T0) / MINUTE))
            .collect()
    };
    let key =
        |tenant: &str, target: &str, minute: i64| (tenant.to_owned(), target.to_owned(), minute);

    let all = fx.store.observations(None, None, None, 100).await.unwrap();
    assert_eq!(
        keys(all),
        [
            key("contoso", ADMIN, 4),
            key("contoso", "contoso.com", 3),
            key("fabrikam", ADMIN, 2),
            key("contoso", SALES, 1),
            key("contoso", ADMIN, 0),
        ]
    );
    let limited = fx.store.observations(None, None, None, 2).await.unwrap();
    assert_eq!(
        keys(limited),
        [key("contoso", ADMIN, 4), key("contoso", "contoso.com", 3)]
    );

    let contoso_rcpt = fx
        .store
        .observations(Some("contoso"), Some(CheckKind::SmtpRcpt), None, 100)
        .await
        .unwrap();
    assert_eq!(
        keys(contoso_rcpt),
        [
            key("contoso", ADMIN, 4),
            key("contoso", SALES, 1),
            key("contoso", ADMIN, 0)
        ]
    );
    let one_key = fx
        .store
        .observations(Some("contoso"), Some(CheckKind::SmtpRcpt), Some(ADMIN), 100)
        .await
        .unwrap();
    assert_eq!(
        keys(one_key),
        [key("contoso", ADMIN, 4), key("contoso", ADMIN, 0)]
    );
    let by_target = fx
        .store
        .observations(None, None, Some(ADMIN), 100)
        .await
        .unwrap();
    assert_eq!(
        keys(by_target),
        [
            key("contoso", ADMIN, 4),
            key("fabrikam", ADMIN, 2),
            key("contoso", ADMIN, 0)
        ]
    );
    let dns_only = fx
        .store
        .observations(None, Some(CheckKind::Dns), None, 100)
        .await
        .unwrap();
    assert_eq!(keys(dns_only), [key("contoso", "contoso.com", 3)]);
    assert!(fx
        .store
        .observations(Some("nobody"), None, None, 100)
        .await
        .unwrap()
        .is_empty());
    assert!(fx
        .store
        .observations(None, None, None, 0)
        .await
        .unwrap()
        .is_empty());
}

/// Ok samples older than the cutoff are thinned to the first of each key per UTC day;
/// state changes, non-ok observations and everything newer stay, and a second run deletes
/// nothing more.
#[tokio::test]
async fn thinning_keeps_one_ok_sample_per_key_per_day_and_every_change() {
    const DAY: i64 = 24 * HOUR;
    let fx = fresh().await;
    let day0 = (T0 / DAY + 1) * DAY;
    let mut batch = Vec::new();
    for hour in -2..=50 {
        let reason = if hour == 10 {
            Reason::RecipientNotFound
        } else {
            Reason::RecipientAccepted
        };
        batch.push(rcpt("contoso", ADMIN, reason, day0 + hour * HOUR));
    }
    // Another key, one day of samples entirely before the cutoff.
    for hour in 0..24 {
        batch.push(rcpt(
            "contoso",
            SALES,
            Reason::RecipientAccepted,
            day0 + hour * HOUR,
        ));
    }
    let recorded = fx.store.record(&batch, POLICY).await.unwrap();
    assert_eq!(
        recorded.stored,
        batch.len(),
        "hourly: every one is a sample"
    );
    let before = history(&fx.store, ADMIN).await;

    let cutoff = day0 + 48 * HOUR;
    let deleted = fx
        .store
        .thin_ok_samples(Timestamp(cutoff), Duration::from_secs(86_400))
        .await
        .unwrap();

    let mut seen_days = std::collections::HashSet::new();
    let expected: Vec<_> = before
        .iter()
        .filter(|&&(at, reason, change)| {
            let first_sample_of_day = !change && seen_days.insert(at.div_euclid(DAY));
            change || reason.status() != Status::Ok || at >= cutoff || first_sample_of_day
        })
        .copied()
        .collect();
    let after = history(&fx.store, ADMIN).await;
    assert_eq!(after, expected);
    // Day -1: the first sight and one sample; day 0: a sample, the critical and the
    // recovery; day 1: one sample; day 2 (after the cutoff): all three.
    assert_eq!(after.len(), 2 + 3 + 1 + 3, "{after:?}");
    assert!(after.contains(&(day0 + 10 * HOUR, Reason::RecipientNotFound, true)));
    assert!(after.contains(&(day0 + 11 * HOUR, Reason::RecipientAccepted, true)));
    // SALES: its first sight (a state change) and its first sample of the day.
    assert_eq!(history(&fx.store, SALES).await.len(), 2);
    assert_eq!(deleted as usize, before.len() - after.len() + 22);

    assert_eq!(
        fx.store
            .thin_ok_samples(Timestamp(cutoff), Duration::from_secs(86_400))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn prune_deletes_old_history_but_keeps_each_keys_latest_state_change() {
    let fx = fresh().await;
    let batch = [
        rcpt("contoso", ADMIN, Reason::RecipientAccepted, T0),
        rcpt("contoso", SALES, Reason::RecipientAccepted, T0),
        rcpt("contoso", ADMIN, Reason::RecipientAccepted, T0 + 2 * HOUR),
        rcpt("contoso", SALES, Reason::RecipientAccepted, T0 + 2 * HOUR),
        rcpt("contoso", ADMIN, Reason::RecipientNotFound, T0 + 3 * HOUR),
        rcpt("contoso", ADMIN, Reason::RecipientNotFound, T0 + 4 * HOUR),
        rcpt("contoso", ADMIN, Reason::RecipientNotFound, T0 + 6 * HOUR),
    ];
    assert_eq!(
        fx.store.record(&batch, POLICY).await.unwrap(),
        outcome(7, 0, 3)
    );
    let states_before = fx.store.check_states().await.unwrap();

    assert_eq!(
        fx.store.prune(Timestamp(T0)).await.unwrap(),
        0,
        "nothing is older than T0"
    );
    assert_eq!(fx.store.prune(Timestamp(T0 + 5 * HOUR)).await.unwrap(), 4);

    assert_eq!(
        history(&fx.store, ADMIN).await,
        [
            (T0 + 3 * HOUR, Reason::RecipientNotFound, true),
            (T0 + 6 * HOUR, Reason::RecipientNotFound, false),
        ]
    );
    // SALES never changed after T0, so its first observation is still its evidence.
    assert_eq!(
        history(&fx.store, SALES).await,
        [(T0, Reason::RecipientAccepted, true)]
    );
    assert_eq!(fx.store.check_states().await.unwrap(), states_before);

    // Pruning everything still keeps one row per key, and recording goes on afterwards.
    assert_eq!(fx.store.prune(Timestamp(T0 + 100 * HOUR)).await.unwrap(), 1);
    assert_eq!(
        fx.store
            .observations(None, None, None, 100)
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        fx.store
            .record(
                &[rcpt(
                    "contoso",
                    SALES,
                    Reason::RecipientAccepted,
                    T0 + 101 * HOUR
                )],
                POLICY
            )
            .await
            .unwrap(),
        outcome(1, 0, 0)
    );
}

#[tokio::test]
async fn reopening_keeps_data_and_the_state_cache_and_does_not_rerun_migrations() {
    let fx = fresh().await;
    let batch = [
        rcpt("contoso", ADMIN, Reason::RecipientAccepted, T0),
        dns(
            "contoso.com",
            &[("mx", &["0 a."])],
            Reason::DnsRecordsOk,
            T0,
        ),
    ];
    fx.store.record(&batch, POLICY).await.unwrap();
    let states = fx.store.check_states().await.unwrap();
    let snapshots = fx.store.dns_snapshots().await.unwrap();
    let observations = fx.store.observations(None, None, None, 100).await.unwrap();
    fx.store.close().await;

    let reopened = Store::open(&fx.path).await.unwrap();
    assert_eq!(reopened.check_states().await.unwrap(), states);
    assert_eq!(reopened.dns_snapshots().await.unwrap(), snapshots);
    assert_eq!(
        reopened.observations(None, None, None, 100).await.unwrap(),
        observations
    );

    // The state loaded at open makes this a repeat, not a first sight.
    let repeat = rcpt("contoso", ADMIN, Reason::RecipientAccepted, T0 + 5 * MINUTE);
    assert_eq!(
        reopened.record(&[repeat], POLICY).await.unwrap(),
        outcome(0, 1, 0)
    );
    assert_eq!(state_of(&reopened, ADMIN).await.consecutive, 2);
    reopened.close().await;

    let again = Store::open(&fx.path).await.unwrap();
    let mut conn = raw(&fx.path).await;
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    // Every file in migrations/ applied once, in order, and nothing else.
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .unwrap()
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|ext| ext == "sql"))
        })
        .count();
    let expected: Vec<(i64, bool)> = (1..=i64::try_from(files).unwrap())
        .map(|v| (v, true))
        .collect();
    assert!(files >= 3, "{files} migrations found");
    assert_eq!(applied, expected);
    conn.close().await.unwrap();
    again.close().await;
}

#[tokio::test]
async fn a_failed_batch_commits_nothing_and_leaves_the_state_cache_true() {
    let fx = fresh().await;
    fx.store
        .record(
            &[rcpt("contoso", ADMIN, Reason::RecipientAccepted, T0)],
            POLICY,
        )
        .await
        .unwrap();

    // Make the second observation of the next batch fail, after the first has been staged.
    let mut conn = raw(&fx.path).await;
    sqlx::query(
        "CREATE TRIGGER fail_on_boom BEFORE INSERT ON observations WHEN NEW.summary = 'boom' \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let mut boom = rcpt("contoso", SALES, Reason::RecipientNotFound, T0 + 5 * MINUTE);
    boom.summary = "boom".to_owned();
    let failing = [
        rcpt("contoso", ADMIN, Reason::RecipientNotFound, T0 + 5 * MINUTE),
        boom,
    ];
    let err = fx.store.record(&failing, POLICY).await.unwrap_err();
    assert!(matches!(err, StoreError::Query(_)), "{err:?}");
    assert!(!err.is_retryable());

    let admin = state_of(&fx.store, ADMIN).await;
    assert_eq!(
        (admin.reason, admin.consecutive),
        (Reason::RecipientAccepted, 1)
    );
    assert_eq!(
        fx.store.check_states().await.unwrap().len(),
        1,
        "SALES was rolled back"
    );
    assert_eq!(
        fx.store
            .observations(None, None, None, 100)
            .await
            .unwrap()
            .len(),
        1
    );

    sqlx::query("DROP TRIGGER fail_on_boom")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    // Had the cache kept the failed batch, ADMIN would not be a change here and SALES would
    // point at a check_state row that was rolled back.
    let retry = [
        rcpt(
            "contoso",
            ADMIN,
            Reason::RecipientNotFound,
            T0 + 10 * MINUTE,
        ),
        rcpt(
            "contoso",
            SALES,
            Reason::RecipientNotFound,
            T0 + 10 * MINUTE,
        ),
    ];
    assert_eq!(
        fx.store.record(&retry, POLICY).await.unwrap(),
        outcome(2, 0, 2)
    );
    let admin = state_of(&fx.store, ADMIN).await;
    assert_eq!(
        (admin.reason, admin.since, admin.consecutive),
        (Reason::RecipientNotFound, Timestamp(T0 + 10 * MINUTE), 1)
    );
    assert_eq!(
        state_of(&fx.store, SALES).await.since,
        Timestamp(T0 + 10 * MINUTE)
    );
}

#[tokio::test]
async fn check_writable_succeeds_while_open_and_fails_retryably_after_close() {
    let fx = fresh().await;
    fx.store.check_writable().await.unwrap();
    fx.store.check_writable().await.unwrap();

    let clone = fx.store.clone();
    fx.store.close().await;
    let err = clone.check_writable().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());
    let err = clone
        .record(
            &[rcpt("contoso", ADMIN, Reason::RecipientAccepted, T0)],
            POLICY,
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn values_this_build_does_not_know_are_decode_errors() {
    let fx = fresh().await;
    fx.store
        .record(&[rcpt("contoso", ADMIN, Reason::Timeout, T0)], POLICY)
        .await
        .unwrap();
    let mut conn = raw(&fx.path).await;

    sqlx::query("UPDATE check_state SET reason = 'reason_from_the_future'")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = fx.store.check_states().await.unwrap_err();
    assert!(
        matches!(&err, StoreError::Decode(detail) if detail.contains("reason_from_the_future")),
        "{err:?}"
    );

    sqlx::query("UPDATE observations SET status = 'sideways'")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = fx
        .store
        .observations(None, None, None, 10)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Decode(detail) if detail.contains("sideways")),
        "{err:?}"
    );

    sqlx::query("UPDATE observations SET status = 'unknown', evidence_version = 99")
        .execute(&mut conn)
        .await
        .unwrap();
    let err = fx
        .store
        .observations(None, None, None, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Decode(_)), "{err:?}");

    sqlx::query(
        "UPDATE observations SET evidence_version = 1, evidence = '{\"kind\":\"carrier_pigeon\"}'",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let err = fx
        .store
        .observations(None, None, None, 10)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Decode(_)), "{err:?}");
    assert!(!err.is_retryable());
    conn.close().await.unwrap();
}

fn identity(target: &str, reason: Reason, facts: &[(&str, &str)], at: i64) -> Observation {
    Observation {
        check: CheckKind::Identity,
        evidence: Evidence::Http(tw_core::HttpEvidence {
            facts: facts
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }),
        ..rcpt("contoso", target, reason, at)
    }
}

#[tokio::test]
async fn learned_facts_survive_a_restart_and_merge_without_losing_earlier_values() {
    let fixture = fresh().await;
    let id = "87d349ed-0000-4000-8000-5f2406dee5bd";
    fixture
        .store
        .record(
            &[identity(
                ADMIN,
                Reason::IdentityOk,
                &[("object_id", id), ("account_enabled", "true")],
                T0,
            )],
            POLICY,
        )
        .await
        .unwrap();
    // A later state change that did not learn the id (the user is gone) keeps it.
    fixture
        .store
        .record(
            &[identity(
                ADMIN,
                Reason::IdentityDeleted,
                &[("deleted_at", "x")],
                T0 + MINUTE,
            )],
            POLICY,
        )
        .await
        .unwrap();
    fixture.store.close().await;

    let store = Store::open(&fixture.path).await.unwrap();
    let learned = store.learned_facts().await.unwrap();
    assert_eq!(learned.len(), 1, "{learned:?}");
    assert_eq!(learned[0].check, CheckKind::Identity);
    assert_eq!(learned[0].target, ADMIN);
    // Only remembered keys are kept; the rest is in the observation's evidence.
    assert_eq!(
        learned[0].facts,
        BTreeMap::from([("object_id".to_owned(), id.to_owned())])
    );
    assert_eq!(learned[0].seen_at, Timestamp(T0));

    // An observation without evidence (or sampled out) leaves the row alone.
    store
        .record(
            &[rcpt("contoso", SALES, Reason::RecipientAccepted, T0)],
            POLICY,
        )
        .await
        .unwrap();
    assert_eq!(store.learned_facts().await.unwrap().len(), 1);
}
