//! Alert state and the notification outbox: committed with the batch that caused them,
//! enqueued once, handed out oldest first per receiver, retried, expired.

#![cfg(test)]

use std::time::Duration;

use tempfile::TempDir;
use tw_core::{CheckKind, Evidence, Observation, Reason, TenantName, Timestamp};
use tw_store::{AlertStateRow, AlertWrites, DeliveryOutcome, NewDelivery, RecordPolicy, Store};

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

fn alert_writes(state: &str, deliveries: Vec<NewDelivery>) -> AlertWrites {
    AlertWrites {
        states: vec![AlertStateRow {
            tenant: "contoso".into(),
            check: CheckKind::SmtpRcpt,
            target: ADMIN.into(),
            state_json: state.into(),
        }],
        deliveries,
    }
}

#[tokio::test]
async fn alert_state_and_outbox_rows_commit_with_the_batch_and_enqueue_once() {
    let (_dir, store) = fresh().await;
    let writes = alert_writes(
        "{\"firing\":true}",
        vec![delivery("e1", "ops", T0), delivery("e1", "sms", T0)],
    );
    let outcome = store
        .record_with_alerts(&[critical(T0)], POLICY, &writes)
        .await
        .unwrap();
    assert_eq!(outcome.enqueued, 2);
    // Replaying the same event (a retried batch, a restart) adds nothing.
    let again = store
        .record_with_alerts(&[critical(T0 + 1)], POLICY, &writes)
        .await
        .unwrap();
    assert_eq!(again.enqueued, 0);

    let states = store.alert_states().await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(
        (states[0].target.as_str(), states[0].state_json.as_str()),
        (ADMIN, "{\"firing\":true}")
    );
    let rows = store.outbox().await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.receiver.as_str(), r.state.as_str()))
            .collect::<Vec<_>>(),
        [("ops", "pending"), ("sms", "pending")]
    );
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!(
        (stats.pending, stats.oldest_pending_created_at),
        (2, Some(Timestamp(T0)))
    );
}

#[tokio::test]
async fn each_receiver_gets_its_oldest_pending_row_first_and_later_rows_wait_for_it() {
    let (_dir, store) = fresh().await;
    let writes = AlertWrites {
        states: vec![],
        deliveries: vec![
            delivery("e1", "ops", T0),
            delivery("e2", "ops", T0),
            delivery("e1", "sms", T0),
        ],
    };
    store
        .record_with_alerts(&[critical(T0)], POLICY, &writes)
        .await
        .unwrap();

    let due = store.due_deliveries(Timestamp(T0)).await.unwrap();
    assert_eq!(
        due.iter().map(|d| d.dedup_key.as_str()).collect::<Vec<_>>(),
        ["e1/ops", "e1/sms"]
    );

    // ops fails transiently: its second row must not overtake the first while it backs off.
    let ops = &due[0];
    let retry_at = Timestamp(T0 + 60_000);
    store
        .finish_delivery(
            ops.id,
            &DeliveryOutcome::Transient {
                error: "503".into(),
                retry_at,
            },
            Timestamp(T0),
            Duration::from_millis(5),
        )
        .await
        .unwrap();
    store
        .finish_delivery(
            due[1].id,
            &DeliveryOutcome::Sent,
            Timestamp(T0),
            Duration::from_millis(5),
        )
        .await
        .unwrap();
    assert!(store
        .due_deliveries(Timestamp(T0 + 1_000))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.next_delivery_due().await.unwrap(), Some(retry_at));

    let retried = store.due_deliveries(retry_at).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0].dedup_key.as_str(), retried[0].attempts),
        ("e1/ops", 1)
    );
    store
        .finish_delivery(
            retried[0].id,
            &DeliveryOutcome::Sent,
            retry_at,
            Duration::from_millis(5),
        )
        .await
        .unwrap();
    let next = store.due_deliveries(retry_at).await.unwrap();
    assert_eq!(
        next.iter()
            .map(|d| d.dedup_key.as_str())
            .collect::<Vec<_>>(),
        ["e2/ops"]
    );
}

#[tokio::test]
async fn permanent_failures_park_and_expired_rows_are_reported() {
    let (_dir, store) = fresh().await;
    let writes = AlertWrites {
        states: vec![],
        deliveries: vec![delivery("e1", "ops", T0), delivery("e1", "sms", T0)],
    };
    store
        .record_with_alerts(&[critical(T0)], POLICY, &writes)
        .await
        .unwrap();
    let due = store.due_deliveries(Timestamp(T0)).await.unwrap();
    store
        .finish_delivery(
            due[0].id,
            &DeliveryOutcome::Permanent {
                error: "401 unauthorized".into(),
            },
            Timestamp(T0),
            Duration::ZERO,
        )
        .await
        .unwrap();

    assert!(store
        .expire_deliveries(Timestamp(T0 + 1_000))
        .await
        .unwrap()
        .is_empty());
    let expired = store
        .expire_deliveries(Timestamp(T0 + 24 * 3_600_000))
        .await
        .unwrap();
    assert_eq!(expired, [("sms".to_owned(), "e1/sms".to_owned())]);

    let rows = store.outbox().await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(),
        ["failed", "expired"]
    );
    assert_eq!(rows[0].last_error.as_deref(), Some("401 unauthorized"));
    let stats = store.outbox_stats().await.unwrap();
    assert_eq!((stats.pending, stats.failed, stats.expired), (0, 1, 1));
    assert!(store
        .due_deliveries(Timestamp(T0 + 48 * 3_600_000))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_closed_store_enqueues_nothing_and_says_it_may_be_retried() {
    let (_dir, store) = fresh().await;
    store.close().await;
    let err = store
        .record_with_alerts(
            &[critical(T0)],
            POLICY,
            &alert_writes("{}", vec![delivery("e1", "ops", T0)]),
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

#[tokio::test]
async fn prune_removes_finished_notifications_but_never_pending_ones() {
    let (_dir, store) = fresh().await;
    let writes = AlertWrites {
        states: vec![],
        deliveries: vec![delivery("e1", "ops", T0), delivery("e1", "sms", T0)],
    };
    store
        .record_with_alerts(&[critical(T0)], POLICY, &writes)
        .await
        .unwrap();
    let due = store.due_deliveries(Timestamp(T0)).await.unwrap();
    store
        .finish_delivery(
            due[0].id,
            &DeliveryOutcome::Sent,
            Timestamp(T0),
            Duration::ZERO,
        )
        .await
        .unwrap();

    store.prune(Timestamp(T0 + 1)).await.unwrap();
    let rows = store.outbox().await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.receiver.as_str(), r.state.as_str()))
            .collect::<Vec<_>>(),
        [("sms", "pending")]
    );
}
