//! The read-only queries behind the status page, the API and incident reports: keyset paging
//! of history and check states, report windows, the state before a window, and notifications
//! with their delivery attempts.

#![cfg(test)]

use std::time::Duration;

use tempfile::TempDir;
use tw_core::{CheckKind, Evidence, Observation, Reason, Status, TenantName, Timestamp};
use tw_store::{
    AlertStateRow, AlertWrites, DeliveryOutcome, HistoryCursor, HistoryFilter, NewDelivery,
    RecordPolicy, StateCursor, StateFilter, Store, MAX_PAGE,
};

const T0: i64 = 1_795_000_000_000;
const MINUTE: i64 = 60_000;
const POLICY: RecordPolicy = RecordPolicy {
    ok_sample_interval: Duration::from_secs(3_600),
};

async fn fresh() -> (TempDir, Store) {
    let dir = TempDir::new().unwrap();
    let store = Store::open(&dir.path().join("tenantwatch.db"))
        .await
        .unwrap();
    (dir, store)
}

fn obs(tenant: &str, check: CheckKind, target: &str, reason: Reason, at: i64) -> Observation {
    Observation {
        tenant: TenantName::parse(tenant).unwrap(),
        check,
        target: target.to_owned(),
        scheduled_for: Timestamp(at),
        started_at: Timestamp(at),
        elapsed: Duration::from_millis(5),
        status: reason.status(),
        reason,
        summary: reason.as_str().to_owned(),
        evidence: Evidence::None,
    }
}

/// contoso admin: ok, then critical for five minutes, then ok again; contoso dns: ok once;
/// fabrikam dns: warning every minute.
async fn populated() -> (TempDir, Store) {
    let (dir, store) = fresh().await;
    for minute in 0..8 {
        let at = T0 + minute * MINUTE;
        let admin = match minute {
            0 => Reason::RecipientAccepted,
            1..=5 => Reason::RecipientNotFound,
            _ => Reason::RecipientAccepted,
        };
        let mut batch = vec![
            obs(
                "contoso",
                CheckKind::SmtpRcpt,
                "admin@contoso.com",
                admin,
                at,
            ),
            obs(
                "fabrikam",
                CheckKind::Dns,
                "fabrikam.com",
                Reason::DmarcMissing,
                at,
            ),
        ];
        if minute == 0 {
            batch.push(obs(
                "contoso",
                CheckKind::Dns,
                "contoso.com",
                Reason::DnsRecordsOk,
                at,
            ));
        }
        store.record(&batch, POLICY).await.unwrap();
    }
    (dir, store)
}

fn times(observations: &[tw_store::StoredObservation]) -> Vec<i64> {
    observations
        .iter()
        .map(|o| (o.started_at.as_millis() - T0) / MINUTE)
        .collect()
}

#[tokio::test]
async fn history_pages_walk_back_without_gaps_or_repeats() {
    let (_dir, store) = populated().await;
    let filter = HistoryFilter {
        tenant: Some("contoso".into()),
        ..HistoryFilter::default()
    };
    let mut before = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = store.observation_page(&filter, before, 3).await.unwrap();
        assert!(page.observations.len() <= 3);
        pages += 1;
        seen.extend(page.observations.iter().map(|o| (o.started_at, o.id)));
        match page.next {
            Some(next) => {
                assert_eq!(
                    next,
                    HistoryCursor {
                        started_at: page.observations.last().unwrap().started_at,
                        id: page.observations.last().unwrap().id
                    }
                );
                before = Some(next);
            }
            None => break,
        }
    }
    // admin: 0 (first), 1-5 (not ok), 6 (recovery); 7 is a sampled-out ok. dns: 0.
    assert_eq!(seen.len(), 8);
    assert_eq!(pages, 3);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first, each once");

    let changes = store
        .observation_page(
            &HistoryFilter {
                tenant: Some("contoso".into()),
                check: Some(CheckKind::SmtpRcpt),
                target: Some("admin@contoso.com".into()),
                changes_only: true,
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(times(&changes.observations), [6, 1, 0]);
    assert_eq!(changes.next, None);

    let everything = store
        .observation_page(&HistoryFilter::default(), None, 100_000)
        .await
        .unwrap();
    assert_eq!(everything.observations.len(), 8 + 8);
    assert!(everything.observations.len() <= MAX_PAGE as usize);
}

#[tokio::test]
async fn a_report_window_is_oldest_first_and_knows_the_state_before_it() {
    let (_dir, store) = populated().await;
    let window = store
        .observations_between(
            "contoso",
            Timestamp(T0 + 2 * MINUTE),
            Timestamp(T0 + 7 * MINUTE),
            100,
        )
        .await
        .unwrap();
    assert_eq!(times(&window), [2, 3, 4, 5, 6]);
    assert!(window.iter().all(|o| o.tenant == "contoso"));
    let capped = store
        .observations_between("contoso", Timestamp(0), Timestamp(i64::MAX), 2)
        .await
        .unwrap();
    assert_eq!(times(&capped), [0, 0]);

    let before = store
        .states_before("contoso", Timestamp(T0 + 3 * MINUTE))
        .await
        .unwrap();
    let states: Vec<(CheckKind, Reason, i64)> = before
        .iter()
        .map(|o| (o.check, o.reason, (o.started_at.as_millis() - T0) / MINUTE))
        .collect();
    assert_eq!(
        states,
        [
            (CheckKind::Dns, Reason::DnsRecordsOk, 0),
            (CheckKind::SmtpRcpt, Reason::RecipientNotFound, 1)
        ]
    );
    assert!(store
        .states_before("contoso", Timestamp(T0))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn check_states_page_by_key_and_filter() {
    let (_dir, store) = populated().await;
    let mut after: Option<StateCursor> = None;
    let mut keys = Vec::new();
    loop {
        let page = store
            .check_state_page(&StateFilter::default(), after.as_ref(), 2)
            .await
            .unwrap();
        keys.extend(
            page.states
                .iter()
                .map(|s| format!("{}/{}/{}", s.tenant, s.check, s.target)),
        );
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        keys,
        [
            "contoso/dns/contoso.com",
            "contoso/smtp_rcpt/admin@contoso.com",
            "fabrikam/dns/fabrikam.com"
        ]
    );
    let warnings = store
        .check_state_page(
            &StateFilter {
                status: Some(Status::Warning),
                ..StateFilter::default()
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(warnings.states.len(), 1);
    assert_eq!(warnings.states[0].tenant, "fabrikam");
    let dns_of_contoso = store
        .check_state_page(
            &StateFilter {
                tenant: Some("contoso".into()),
                check: Some(CheckKind::Dns),
                status: None,
            },
            None,
            10,
        )
        .await
        .unwrap();
    assert_eq!(dns_of_contoso.states.len(), 1);

    let of = store
        .check_states_of(&["fabrikam", "nobody"])
        .await
        .unwrap();
    assert_eq!(of.len(), 1);
    assert_eq!(of[0].consecutive, 8);
    assert!(store.check_states_of(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn problems_are_worst_first_then_longest_standing() {
    let (_dir, store) = fresh().await;
    store
        .record(
            &[
                obs("a", CheckKind::Dns, "a.com", Reason::DnsUnavailable, T0),
                obs("b", CheckKind::Dns, "b.com", Reason::DmarcMissing, T0 + 1),
                obs(
                    "c",
                    CheckKind::SmtpRcpt,
                    "x@c.com",
                    Reason::RecipientNotFound,
                    T0 + 2,
                ),
                obs(
                    "d",
                    CheckKind::SmtpRcpt,
                    "x@d.com",
                    Reason::RecipientNotFound,
                    T0 + 1,
                ),
                obs("e", CheckKind::Dns, "e.com", Reason::DnsRecordsOk, T0),
            ],
            POLICY,
        )
        .await
        .unwrap();
    let tenants: Vec<String> = store
        .problems(10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.tenant)
        .collect();
    assert_eq!(tenants, ["d", "c", "b", "a"]);
    assert_eq!(store.problems(1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn notifications_in_a_window_carry_their_attempts() {
    let (_dir, store) = fresh().await;
    let critical = obs(
        "contoso",
        CheckKind::SmtpRcpt,
        "admin@contoso.com",
        Reason::RecipientNotFound,
        T0,
    );
    let delivery = |key: &str, receiver: &str, at: i64| NewDelivery {
        dedup_key: format!("{key}/{receiver}"),
        receiver: receiver.to_owned(),
        message_json: format!("{{\"tenant\":\"contoso\",\"kind\":\"{key}\"}}"),
        created_at: Timestamp(at),
        expires_at: Timestamp(at + 3_600_000),
    };
    store
        .record_with_alerts(
            &[critical],
            POLICY,
            &AlertWrites {
                states: vec![AlertStateRow {
                    tenant: "contoso".into(),
                    check: CheckKind::SmtpRcpt,
                    target: "admin@contoso.com".into(),
                    state_json: "{}".into(),
                }],
                deliveries: vec![
                    delivery("firing", "hook", T0),
                    delivery("firing", "sms", T0),
                    delivery("late", "hook", T0 + 10 * MINUTE),
                ],
            },
        )
        .await
        .unwrap();
    let rows = store.outbox().await.unwrap();
    let hook = rows
        .iter()
        .find(|r| r.dedup_key == "firing/hook")
        .unwrap()
        .id;
    let sms = rows
        .iter()
        .find(|r| r.dedup_key == "firing/sms")
        .unwrap()
        .id;
    store
        .finish_delivery(
            hook,
            &DeliveryOutcome::Transient {
                error: "503".into(),
                retry_at: Timestamp(T0 + 2_000),
            },
            Timestamp(T0 + 100),
            Duration::from_millis(30),
        )
        .await
        .unwrap();
    store
        .finish_delivery(
            hook,
            &DeliveryOutcome::Sent,
            Timestamp(T0 + 2_100),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
    store
        .finish_delivery(
            sms,
            &DeliveryOutcome::Permanent {
                error: "400 bad number".into(),
            },
            Timestamp(T0 + 200),
            Duration::from_millis(10),
        )
        .await
        .unwrap();

    let window = store
        .notifications_between(Timestamp(T0), Timestamp(T0 + MINUTE), 100)
        .await
        .unwrap();
    assert_eq!(window.len(), 2, "the late one is outside the window");
    let hook = window.iter().find(|n| n.receiver == "hook").unwrap();
    assert_eq!(hook.state, "sent");
    assert_eq!(hook.finished_at, Some(Timestamp(T0 + 2_100)));
    let outcomes: Vec<(&str, Option<&str>)> = hook
        .attempts
        .iter()
        .map(|a| (a.outcome.as_str(), a.error.as_deref()))
        .collect();
    assert_eq!(outcomes, [("transient", Some("503")), ("sent", None)]);
    assert_eq!(hook.attempts[0].duration, Duration::from_millis(30));
    let sms = window.iter().find(|n| n.receiver == "sms").unwrap();
    assert_eq!(sms.state, "failed");
    assert_eq!(sms.last_error.as_deref(), Some("400 bad number"));
    assert_eq!(sms.attempts.len(), 1);
    assert!(store
        .notifications_between(Timestamp(0), Timestamp(T0), 100)
        .await
        .unwrap()
        .is_empty());

    let states = store.alert_states_of("contoso").await.unwrap();
    assert_eq!(states.len(), 1);
    assert!(store.alert_states_of("fabrikam").await.unwrap().is_empty());
}
