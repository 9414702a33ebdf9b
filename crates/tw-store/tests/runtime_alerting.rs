//! Alerting decided at run time, on a fresh database: silences and acknowledgements written
//! (as the CLI and the API do) and read back (as the recorder does), escalations recorded
//! once per episode, grouped outbox rows sent and recorded together, fallback rows handed on
//! to the next receiver, and the outbox migration keeping what an older database held.

#![cfg(test)]

use std::time::Duration;

use tempfile::TempDir;
use tw_core::{CheckKind, Evidence, Observation, Reason, TenantName, Timestamp};
use tw_store::{
    AckOutcome, AlertCommit, DeliveryOutcome, Enqueue, Escalation, Fallback, NewAck, NewDelivery,
    NewSilence, RecordPolicy, Removal, Store,
};

const T0: i64 = 1_795_000_000_000;
const POLICY: RecordPolicy = RecordPolicy {
    ok_sample_interval: Duration::from_secs(3_600),
};
const ADMIN: &str = "admin@contoso.com";

async fn fresh() -> (TempDir, Store) {
    let dir = TempDir::new().unwrap();
    let store = Store::open(&dir.path().join("tenantwatch.db"))
        .await
        .unwrap();
    (dir, store)
}

fn critical(at: i64) -> Observation {
    Observation {
        tenant: TenantName::parse("contoso").unwrap(),
        check: CheckKind::SmtpRcpt,
        target: ADMIN.to_owned(),
        scheduled_for: Timestamp(at),
        started_at: Timestamp(at),
        elapsed: Duration::from_millis(80),
        status: Reason::RecipientNotFound.status(),
        reason: Reason::RecipientNotFound,
        summary: "recipient not found".to_owned(),
        evidence: Evidence::None,
    }
}

fn delivery(key: &str, receiver: &str, created: i64) -> NewDelivery {
    NewDelivery {
        dedup_key: format!("{key}/{receiver}"),
        receiver: receiver.to_owned(),
        message_json: format!("{{\"id\":\"{key}\"}}"),
        created_at: Timestamp(created),
        expires_at: Timestamp(created + 24 * 3_600_000),
    }
}

fn silence(tenant: Option<&str>, check: Option<CheckKind>, start: i64, end: i64) -> NewSilence {
    NewSilence {
        tenant: tenant.map(str::to_owned),
        check,
        target: None,
        starts_at: Timestamp(start),
        ends_at: Timestamp(end),
        reason: "mailbox migration".to_owned(),
        created_by: "alice".to_owned(),
        created_at: Timestamp(T0),
    }
}

#[tokio::test]
async fn silences_are_listed_while_in_force_or_to_come_and_removed_ones_are_kept() {
    let (_dir, store) = fresh().await;
    let now = T0 + 1_000;
    let current = store
        .add_silence(&silence(Some("contoso"), None, T0, T0 + 3_600_000))
        .await
        .unwrap();
    let future = store
        .add_silence(&silence(
            Some("fabrikam"),
            Some(CheckKind::Dns),
            T0 + 7_200_000,
            T0 + 9_000_000,
        ))
        .await
        .unwrap();
    let ended = store
        .add_silence(&silence(None, None, T0 - 7_200_000, T0 - 3_600_000))
        .await
        .unwrap();
    assert!(current < future && future < ended);

    let active = store.silences(Timestamp(now), false).await.unwrap();
    assert_eq!(
        active.iter().map(|s| s.id).collect::<Vec<_>>(),
        [current, future]
    );
    let row = &active[0];
    assert_eq!(
        (row.tenant.as_deref(), row.check, row.created_by.as_str()),
        (Some("contoso"), None, "alice")
    );
    assert!(row.matches("contoso", CheckKind::SmtpRcpt, ADMIN, Timestamp(now)));
    assert!(!row.matches("fabrikam", CheckKind::SmtpRcpt, ADMIN, Timestamp(now)));
    assert!(!row.matches(
        "contoso",
        CheckKind::SmtpRcpt,
        ADMIN,
        Timestamp(T0 + 3_600_000)
    ));
    assert!(!active[1].matches("fabrikam", CheckKind::Dns, "fabrikam.com", Timestamp(now)));
    assert!(active[1].matches(
        "fabrikam",
        CheckKind::Dns,
        "fabrikam.com",
        Timestamp(T0 + 8_000_000)
    ));

    match store
        .remove_silence(current, "bob", Timestamp(now))
        .await
        .unwrap()
    {
        Removal::Removed(row) => {
            assert_eq!(
                (row.removed_at, row.removed_by.as_deref()),
                (Some(Timestamp(now)), Some("bob"))
            );
            assert!(!row.matches("contoso", CheckKind::SmtpRcpt, ADMIN, Timestamp(now)));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.remove_silence(current, "carol", Timestamp(now + 1)).await.unwrap(),
        Removal::AlreadyRemoved(row) if row.removed_by.as_deref() == Some("bob")
    ));
    assert_eq!(
        store
            .remove_silence(9_999, "bob", Timestamp(now))
            .await
            .unwrap(),
        Removal::NotFound
    );
    assert_eq!(
        store
            .silences(Timestamp(now), false)
            .await
            .unwrap()
            .iter()
            .map(|s| s.id)
            .collect::<Vec<_>>(),
        [future]
    );
    let all = store.silences(Timestamp(now), true).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(
        store
            .silence(current)
            .await
            .unwrap()
            .unwrap()
            .removed_by
            .as_deref(),
        Some("bob")
    );
    assert_eq!(store.silence(9_999).await.unwrap(), None);
}

#[tokio::test]
async fn a_silence_must_end_after_it_starts() {
    let (_dir, store) = fresh().await;
    let err = store
        .add_silence(&silence(Some("contoso"), None, T0, T0))
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

#[tokio::test]
async fn an_episode_is_acknowledged_once_and_readers_pick_up_only_new_acks() {
    let (_dir, store) = fresh().await;
    let ack = |episode: u64, by: &str| NewAck {
        tenant: "contoso".to_owned(),
        check: CheckKind::SmtpRcpt,
        target: ADMIN.to_owned(),
        episode,
        acked_by: by.to_owned(),
        acked_at: Timestamp(T0),
        comment: Some("on it".to_owned()),
    };
    let first = match store.add_ack(&ack(3, "alice")).await.unwrap() {
        AckOutcome::Added(row) => row,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        (
            first.episode,
            first.acked_by.as_str(),
            first.comment.as_deref()
        ),
        (3, "alice", Some("on it"))
    );
    // A second acknowledgement of the same episode leaves the first one standing.
    match store.add_ack(&ack(3, "bob")).await.unwrap() {
        AckOutcome::Already(row) => {
            assert_eq!((row.id, row.acked_by.as_str()), (first.id, "alice"))
        }
        other => panic!("{other:?}"),
    }
    let all = store.acks_after(0).await.unwrap();
    assert_eq!(all, std::slice::from_ref(&first));
    assert!(store.acks_after(first.id).await.unwrap().is_empty());
    let AckOutcome::Added(next) = store.add_ack(&ack(4, "bob")).await.unwrap() else {
        panic!("episode 4 is new");
    };
    assert_eq!(store.acks_after(first.id).await.unwrap(), [next]);
}

#[tokio::test]
async fn an_episode_escalates_once_with_its_messages_and_is_remembered() {
    let (_dir, store) = fresh().await;
    // The outbox rows of an escalation refer to nothing, but a check_state row keeps the
    // database realistic.
    store.record(&[critical(T0)], POLICY).await.unwrap();
    let escalation = Escalation {
        tenant: "contoso".to_owned(),
        check: CheckKind::SmtpRcpt,
        target: ADMIN.to_owned(),
        episode: 2,
        escalated_at: Timestamp(T0 + 1_800_000),
        receivers: vec!["sms".to_owned(), "pager".to_owned()],
    };
    let rows: Vec<Enqueue> = ["sms", "pager"]
        .iter()
        .map(|r| Enqueue::from(delivery("k/2/escalation", r, T0 + 1_800_000)))
        .collect();
    assert_eq!(
        store
            .escalate(std::slice::from_ref(&escalation), &rows)
            .await
            .unwrap(),
        2
    );
    // A second pass (a restart that did not know) adds nothing.
    let mut later = escalation.clone();
    later.escalated_at = Timestamp(T0 + 3_600_000);
    assert_eq!(store.escalate(&[later], &rows).await.unwrap(), 0);
    assert_eq!(store.escalations().await.unwrap(), [escalation]);
    assert_eq!(store.outbox().await.unwrap().len(), 2);
}

fn grouped(key: &str, receiver: &str, group: &str, not_before: i64) -> Enqueue {
    Enqueue {
        delivery: delivery(key, receiver, T0),
        not_before: Some(Timestamp(not_before)),
        group_key: Some(group.to_owned()),
        fallback: None,
    }
}

#[tokio::test]
async fn a_group_waits_for_its_time_and_is_sent_and_recorded_as_one() {
    let (_dir, store) = fresh().await;
    let hold = T0 + 30_000;
    let commit = AlertCommit {
        states: vec![],
        deliveries: vec![
            grouped("a", "ops", "g1", hold),
            Enqueue::from(delivery("other", "ops", T0)),
            grouped("b", "ops", "g1", hold),
            grouped("a", "sms", "g1", hold),
        ],
    };
    let outcome = store
        .record_with_alert_commit(&[critical(T0)], POLICY, &commit)
        .await
        .unwrap();
    assert_eq!(outcome.enqueued, 4);
    // Held: nothing is due before the group's time, and the row behind it keeps its place.
    assert!(store
        .due_deliveries(Timestamp(hold - 1))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.next_delivery_due().await.unwrap(),
        Some(Timestamp(hold))
    );
    let due = store.due_deliveries(Timestamp(hold)).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.dedup_key.as_str()).collect::<Vec<_>>(),
        ["a/ops", "a/sms"]
    );
    assert_eq!(due[0].group_key.as_deref(), Some("g1"));
    let members = store.group_members("ops", "g1").await.unwrap();
    assert_eq!(
        members
            .iter()
            .map(|d| d.dedup_key.as_str())
            .collect::<Vec<_>>(),
        ["a/ops", "b/ops"]
    );
    let ids: Vec<i64> = members.iter().map(|m| m.id).collect();
    store
        .finish_deliveries(
            &ids,
            &DeliveryOutcome::Transient {
                error: "503".into(),
                retry_at: Timestamp(hold + 2_000),
            },
            Timestamp(hold),
            Duration::from_millis(3),
        )
        .await
        .unwrap();
    // Every member moved on together, and each has the attempt in its own log.
    let retried = store.group_members("ops", "g1").await.unwrap();
    assert!(retried
        .iter()
        .all(|m| m.attempts == 1 && m.first_attempt_at == Some(Timestamp(hold))));
    store
        .finish_deliveries(
            &ids,
            &DeliveryOutcome::Sent,
            Timestamp(hold + 2_000),
            Duration::from_millis(3),
        )
        .await
        .unwrap();
    let next = store.due_deliveries(Timestamp(hold + 2_000)).await.unwrap();
    assert_eq!(
        next.iter()
            .map(|d| d.dedup_key.as_str())
            .collect::<Vec<_>>(),
        ["other/ops", "a/sms"]
    );
    let log = store
        .notifications_between(Timestamp(T0), Timestamp(T0 + 1), 100)
        .await
        .unwrap();
    let attempts_of = |key: &str| {
        log.iter()
            .find(|n| n.dedup_key == key)
            .map(|n| {
                n.attempts
                    .iter()
                    .map(|a| a.outcome.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap()
    };
    assert_eq!(attempts_of("a/ops"), ["transient", "sent"]);
    assert_eq!(attempts_of("b/ops"), ["transient", "sent"]);
}

fn chained(key: &str, receiver: &str, to: &[&str]) -> Enqueue {
    Enqueue {
        delivery: delivery(key, receiver, T0),
        not_before: None,
        group_key: None,
        fallback: Some(Fallback {
            to: to.iter().map(|s| (*s).to_owned()).collect(),
            after_attempts: 3,
            after: Duration::from_secs(300),
        }),
    }
}

#[tokio::test]
async fn a_fallback_hands_the_same_message_to_the_next_receiver_and_logs_it() {
    let (_dir, store) = fresh().await;
    let commit = AlertCommit {
        states: vec![],
        deliveries: vec![chained("e1", "signal", &["sms", "hook"])],
    };
    store
        .record_with_alert_commit(&[critical(T0)], POLICY, &commit)
        .await
        .unwrap();
    let due = store.due_deliveries(Timestamp(T0)).await.unwrap();
    assert_eq!(due.len(), 1);
    let fallback = due[0].fallback.clone().unwrap();
    assert_eq!(
        (fallback.to, fallback.after_attempts, fallback.after),
        (
            vec!["sms".to_owned(), "hook".to_owned()],
            3,
            Duration::from_secs(300)
        )
    );
    let handed = store
        .finish_deliveries(
            &[due[0].id],
            &DeliveryOutcome::Fallback {
                error: "429 rate limited".into(),
            },
            Timestamp(T0 + 10_000),
            Duration::from_millis(4),
        )
        .await
        .unwrap();
    assert_eq!(handed, 1);

    let rows = store.outbox().await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.dedup_key.as_str(), r.state.as_str(), r.fallback_from))
            .collect::<Vec<_>>(),
        [
            ("e1/signal", "fallback", None),
            ("e1/sms", "pending", Some(rows[0].id))
        ]
    );
    assert_eq!(rows[1].message_json, rows[0].message_json);
    assert_eq!(
        rows[0].last_error.as_deref(),
        Some("429 rate limited; handed on to sms")
    );
    // The new row is due at once, with the rest of the chain.
    let due = store.due_deliveries(Timestamp(T0 + 10_000)).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(
        (
            due[0].receiver.as_str(),
            due[0].fallback.as_ref().map(|f| f.to.clone())
        ),
        ("sms", Some(vec!["hook".to_owned()]))
    );
    assert_eq!(due[0].first_attempt_at, None);
    let log = store
        .notifications_between(Timestamp(T0), Timestamp(T0 + 1), 10)
        .await
        .unwrap();
    assert_eq!(log[0].attempts[0].outcome, "fallback");
}

#[tokio::test]
async fn a_receiver_that_already_has_the_event_gets_no_second_row_from_a_fallback() {
    let (_dir, store) = fresh().await;
    let commit = AlertCommit {
        states: vec![],
        deliveries: vec![
            chained("e1", "signal", &["sms"]),
            Enqueue::from(delivery("e1", "sms", T0)),
        ],
    };
    store
        .record_with_alert_commit(&[critical(T0)], POLICY, &commit)
        .await
        .unwrap();
    let due = store.due_deliveries(Timestamp(T0)).await.unwrap();
    let signal = due.iter().find(|d| d.receiver == "signal").unwrap();
    let handed = store
        .finish_deliveries(
            &[signal.id],
            &DeliveryOutcome::Fallback {
                error: "400 captcha required".into(),
            },
            Timestamp(T0),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(handed, 0);
    assert_eq!(
        store
            .outbox()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.receiver == "sms")
            .count(),
        1
    );
}

#[tokio::test]
async fn a_fallback_of_a_row_without_a_chain_is_refused_and_changes_nothing() {
    let (_dir, store) = fresh().await;
    let commit = AlertCommit {
        states: vec![],
        deliveries: vec![Enqueue::from(delivery("e1", "ops", T0))],
    };
    store
        .record_with_alert_commit(&[critical(T0)], POLICY, &commit)
        .await
        .unwrap();
    let due = store.due_deliveries(Timestamp(T0)).await.unwrap();
    assert!(due[0].fallback.is_none());
    assert!(store
        .finish_deliveries(
            &[due[0].id],
            &DeliveryOutcome::Fallback { error: "x".into() },
            Timestamp(T0),
            Duration::ZERO
        )
        .await
        .is_err());
    assert_eq!(store.outbox().await.unwrap()[0].state, "pending");
}

/// A database at the schema before run-time alerting, with a pending and a finished
/// notification, keeps both (ids, states, attempts) through the outbox rebuild, and new rows
/// continue the id sequence.
#[tokio::test]
async fn the_outbox_rebuild_keeps_rows_attempts_and_the_id_sequence() {
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tenantwatch.db");
    let mut migrator = sqlx::migrate!("../../migrations");
    let before: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version < 4)
        .cloned()
        .collect();
    migrator.migrations = std::borrow::Cow::Owned(before);
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    migrator.run(&pool).await.unwrap();
    for (id, state) in [(7_i64, "pending"), (9, "sent")] {
        sqlx::query(
            "INSERT INTO outbox (id, dedup_key, receiver, message, created_at, next_attempt_at, expires_at, attempts, state) \
             VALUES (?1, ?2, 'ops', '{}', ?3, ?3, ?4, 1, ?5)",
        )
        .bind(id)
        .bind(format!("e{id}/ops"))
        .bind(T0)
        .bind(T0 + 86_400_000)
        .bind(state)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO deliveries (outbox_id, attempted_at, outcome, error, duration_us) VALUES (?1, ?2, 'transient', '503', 10)")
            .bind(id)
            .bind(T0)
            .execute(&pool)
            .await
            .unwrap();
    }
    // A pruned row leaves the sequence ahead of the highest id.
    sqlx::query("INSERT INTO outbox (id, dedup_key, receiver, message, created_at, next_attempt_at, expires_at, state) VALUES (12, 'gone', 'ops', '{}', 0, 0, 0, 'sent')")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM outbox WHERE id = 12")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let store = Store::open(&path).await.unwrap();
    let rows = store.outbox().await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.id, r.state.as_str(), r.attempts))
            .collect::<Vec<_>>(),
        [(7, "pending", 1), (9, "sent", 1)]
    );
    let log = store
        .notifications_between(Timestamp(T0), Timestamp(T0 + 1), 10)
        .await
        .unwrap();
    assert!(log.iter().all(|n| n.attempts.len() == 1), "{log:?}");
    store
        .record_with_alert_commit(
            &[critical(T0)],
            POLICY,
            &AlertCommit {
                states: vec![],
                deliveries: vec![Enqueue::from(delivery("new", "ops", T0))],
            },
        )
        .await
        .unwrap();
    let new = store.outbox().await.unwrap();
    assert_eq!(new.last().map(|r| r.id), Some(13));
    // The delivery log still refers to the outbox: an attempt on the new row is recorded.
    store
        .finish_delivery(13, &DeliveryOutcome::Sent, Timestamp(T0), Duration::ZERO)
        .await
        .unwrap();
    store.close().await;
}
