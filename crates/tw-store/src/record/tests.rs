//! Table tests for `decide`: which observations are stored and how a key's state moves.

use std::time::Duration;

use tw_core::{CheckKind, Evidence, Observation, Reason, TenantName, Timestamp};

use super::{chunk_end, decide, RecordPolicy, Step, CHUNK_ROWS};
use crate::check_state::{Key, LastState};

const HOUR_MS: i64 = 3_600_000;

fn observation(reason: Reason, at: i64) -> Observation {
    Observation {
        tenant: TenantName::parse("contoso").unwrap(),
        check: CheckKind::SmtpRcpt,
        target: "admin@contoso.com".to_owned(),
        scheduled_for: Timestamp(at),
        started_at: Timestamp(at),
        elapsed: Duration::from_millis(10),
        status: reason.status(),
        reason,
        summary: String::new(),
        evidence: Evidence::None,
    }
}

/// `previous` is (reason, since, consecutive, last_stored_at); the result is
/// (state_change, store, since, consecutive, last_stored_at).
fn check(
    previous: Option<(Reason, i64, u32, i64)>,
    now: (Reason, i64),
    expect: (bool, bool, i64, u32, i64),
) {
    let previous = previous.map(|(reason, since, consecutive, last_stored_at)| LastState {
        id: 1,
        status: reason.status(),
        reason,
        since: Timestamp(since),
        consecutive,
        last_stored_at: Timestamp(last_stored_at),
    });
    let policy = RecordPolicy {
        ok_sample_interval: Duration::from_secs(3_600),
    };
    let (reason, at) = now;
    let step = decide(previous.as_ref(), &observation(reason, at), policy);
    let (state_change, store, since, consecutive, last_stored_at) = expect;
    assert_eq!(
        step,
        Step {
            state_change,
            store,
            status: reason.status(),
            reason,
            since: Timestamp(since),
            consecutive,
            last_stored_at: Timestamp(last_stored_at),
            ran: true,
        },
        "previous {previous:?}, now {now:?}"
    );
}

#[test]
fn decide_stores_changes_and_problems_and_samples_repeated_ok() {
    use Reason::*;
    // First sight is a state change and is stored.
    check(None, (RecipientAccepted, 100), (true, true, 100, 1, 100));
    // A repeated ok within the interval only counts.
    check(
        Some((RecipientAccepted, 100, 1, 100)),
        (RecipientAccepted, 200),
        (false, false, 100, 2, 100),
    );
    // A repeated ok once the interval has passed since the last stored one is stored.
    check(
        Some((RecipientAccepted, 100, 7, 100)),
        (RecipientAccepted, 100 + HOUR_MS),
        (false, true, 100, 8, 100 + HOUR_MS),
    );
    check(
        Some((RecipientAccepted, 100, 7, 100)),
        (RecipientAccepted, 99 + HOUR_MS),
        (false, false, 100, 8, 100),
    );
    // A status change is stored and restarts the run.
    check(
        Some((RecipientAccepted, 100, 7, 100)),
        (RecipientNotFound, 200),
        (true, true, 200, 1, 200),
    );
    // A reason change with the same status is a state change too.
    check(
        Some((Timeout, 100, 3, 100)),
        (ConnectFailed, 200),
        (true, true, 200, 1, 200),
    );
    // A repeated non-ok is always stored, but is not a change.
    check(
        Some((RecipientNotFound, 100, 2, 150)),
        (RecipientNotFound, 200),
        (false, true, 100, 3, 200),
    );
    check(
        Some((Timeout, 100, 2, 150)),
        (Timeout, 200),
        (false, true, 100, 3, 200),
    );
    // An observation older than the last stored one never triggers a sample.
    check(
        Some((RecipientAccepted, 100, 1, 500)),
        (RecipientAccepted, 400),
        (false, false, 100, 2, 500),
    );
    // The run count saturates instead of wrapping.
    check(
        Some((Timeout, 100, u32::MAX, 100)),
        (Timeout, 200),
        (false, true, 100, u32::MAX, 200),
    );
}

#[test]
fn a_shutdown_is_stored_but_leaves_the_state_alone() {
    let policy = RecordPolicy {
        ok_sample_interval: Duration::from_secs(3_600),
    };
    let critical = LastState {
        id: 1,
        status: Reason::RecipientNotFound.status(),
        reason: Reason::RecipientNotFound,
        since: Timestamp(100),
        consecutive: 4,
        last_stored_at: Timestamp(150),
    };
    let shutdown = observation(Reason::Shutdown, 100 + HOUR_MS);
    assert_eq!(
        decide(Some(&critical), &shutdown, policy),
        Step {
            state_change: false,
            store: true,
            status: critical.status,
            reason: critical.reason,
            since: critical.since,
            consecutive: 4,
            last_stored_at: Timestamp(150),
            ran: false,
        }
    );

    // Without a state, a shutdown leaves a placeholder, not a state change...
    let placeholder = decide(None, &shutdown, policy);
    assert_eq!(
        placeholder,
        Step {
            state_change: false,
            store: true,
            status: Reason::Shutdown.status(),
            reason: Reason::Shutdown,
            since: shutdown.started_at,
            consecutive: 1,
            last_stored_at: shutdown.started_at,
            ran: false,
        }
    );
    let placeholder = LastState {
        id: 1,
        status: placeholder.status,
        reason: placeholder.reason,
        since: placeholder.since,
        consecutive: placeholder.consecutive,
        last_stored_at: placeholder.last_stored_at,
    };
    // ...which another shutdown leaves as it is...
    let again = observation(Reason::Shutdown, 200 + HOUR_MS);
    let kept = decide(Some(&placeholder), &again, policy);
    assert_eq!(
        (kept.state_change, kept.store, kept.reason, kept.since),
        (false, true, Reason::Shutdown, shutdown.started_at)
    );
    // ...and the next real observation replaces as a first sight.
    let real = observation(Reason::RecipientAccepted, 300 + HOUR_MS);
    assert_eq!(
        decide(Some(&placeholder), &real, policy),
        decide(None, &real, policy)
    );
    assert!(decide(None, &real, policy).state_change);
}

#[test]
fn chunks_end_before_a_repeated_key_and_at_the_row_limit() {
    let key = |target: &str| Key::of(&observation_of(target));
    let keys = [key("a"), key("b"), key("a"), key("c"), key("c")];
    assert_eq!(chunk_end(&keys, 0), 2);
    assert_eq!(chunk_end(&keys, 2), 4);
    assert_eq!(chunk_end(&keys, 4), 5);

    let many: Vec<Key> = (0..CHUNK_ROWS + 3).map(|i| key(&i.to_string())).collect();
    assert_eq!(chunk_end(&many, 0), CHUNK_ROWS);
    assert_eq!(chunk_end(&many, CHUNK_ROWS), CHUNK_ROWS + 3);
}

fn observation_of(target: &str) -> Observation {
    Observation {
        target: target.to_owned(),
        ..observation(Reason::RecipientAccepted, 0)
    }
}
