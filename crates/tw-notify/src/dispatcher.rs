//! The dispatcher: delivers what the outbox holds, and only that.
//!
//! It never sees an alert being decided; it reads pending rows, sends each through its
//! receiver's channel outside any database transaction (SQLite has one writer, and a send can
//! take seconds), then records the attempt: sent, retried later with capped exponential
//! backoff and jitter, refused for good, or expired. A row stays pending until that record is
//! committed, so a crash mid-send means the send is repeated on restart (at least once; the
//! message id is the receiver's idempotency key), never lost.
//!
//! Two things happen per send on top of that. A row with a group key goes out together with
//! every other pending row of its receiver and group, as one message ([`group_message`]), and
//! the attempt is recorded on each of them. A row with a fallback chain is handed on to the
//! next receiver of its route, instead of waiting out its expiry, when its receiver refuses it
//! for good, or has failed [`Fallback::after_attempts`] times, or has not succeeded within
//! [`Fallback::after`] of the first attempt, whichever comes first; the store enqueues the
//! same message (same id) for that receiver and logs the hand-over as outcome `fallback`.
//!
//! [`group_message`]: crate::group_message
//! [`Fallback::after_attempts`]: tw_store::Fallback::after_attempts
//! [`Fallback::after`]: tw_store::Fallback::after

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tw_core::Timestamp;
use tw_store::{DeliveryOutcome, PendingDelivery, Store};

use crate::{deliver_group, group_message, Channel, DeliveryError, Message};

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long the dispatcher sleeps at most when nothing is due, to notice expiries.
const IDLE_WAKE: Duration = Duration::from_secs(30);
/// After a store error, wait this long before reading the outbox again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// Delivery counts per (receiver, result) for the metrics stage, one per notification (a
/// group of three delivered counts three); result is `sent`, `transient`, `permanent`,
/// `expired`, or `fallback` (handed on to the next receiver of its route, counted on the
/// receiver that gave it up).
#[derive(Debug, Default)]
pub struct DispatchStats {
    counts: Mutex<HashMap<(String, &'static str), u64>>,
}

impl DispatchStats {
    fn count(&self, receiver: &str, result: &'static str) {
        *self
            .counts
            .lock()
            .entry((receiver.to_owned(), result))
            .or_default() += 1;
    }

    /// A snapshot of every count so far.
    pub fn snapshot(&self) -> Vec<(String, &'static str, u64)> {
        self.counts
            .lock()
            .iter()
            .map(|((receiver, result), n)| (receiver.clone(), *result, *n))
            .collect()
    }
}

pub struct Dispatcher {
    pub store: Store,
    /// Channels by receiver name; replaced as a whole on a config reload.
    pub channels: Arc<RwLock<HashMap<String, Channel>>>,
    pub http: reqwest::Client,
    /// Notified by the recorder after it commits new outbox rows.
    pub wake: Arc<Notify>,
    pub stats: Arc<DispatchStats>,
    /// The longest one delivery attempt may take (HTTP timeout, SMTP session).
    pub attempt_timeout: Duration,
}

impl Dispatcher {
    /// Runs until `shutdown` is cancelled. Sends in flight at that moment are abandoned and
    /// their rows stay pending for the next start.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let unrecorded: Arc<Mutex<Vec<Unrecorded>>> = Arc::default();
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let now = Timestamp::now();
            match this.store.expire_deliveries(now).await {
                Ok(expired) => {
                    for (receiver, dedup_key) in expired {
                        this.stats.count(&receiver, "expired");
                        tracing::error!(receiver = %receiver, dedup_key = %dedup_key, "Notification expired undelivered");
                    }
                }
                Err(err) => tracing::warn!(error = %err, "Cannot expire old notifications"),
            }
            let due = match this.store.due_deliveries(now).await {
                Ok(due) => due,
                Err(err) => {
                    tracing::warn!(error = %err, "Cannot read the outbox; retrying");
                    if sleep_or_cancel(STORE_RETRY, &shutdown).await {
                        return;
                    }
                    continue;
                }
            };
            if due.is_empty() {
                let wait = match this.store.next_delivery_due().await {
                    Ok(Some(next)) => {
                        Duration::from_millis(next.millis_since(Timestamp::now())).min(IDLE_WAKE)
                    }
                    _ => IDLE_WAKE,
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = this.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }

            // One row per receiver is due at most, so the sends are independent: a hung
            // receiver delays only its own queue.
            let mut sends = JoinSet::new();
            for pending in due {
                let this = this.clone();
                let unrecorded = unrecorded.clone();
                sends.spawn(async move { this.attempt(pending, &unrecorded).await });
            }
            let mut all_recorded = true;
            tokio::select! {
                _ = shutdown.cancelled() => {
                    sends.abort_all();
                    return;
                }
                _ = async {
                    while let Some(recorded) = sends.join_next().await {
                        all_recorded &= recorded.unwrap_or(true);
                    }
                } => {}
            }
            // The rows whose attempt could not be recorded are still due: wait for the store
            // rather than spin on it.
            if !all_recorded && sleep_or_cancel(STORE_RETRY, &shutdown).await {
                return;
            }
        }
    }

    /// Sends one row (with its group) and records the attempt; false if the record failed.
    /// A send whose record failed is not repeated while the process lives: the rows stay
    /// pending in the store, so the next pass only retries the record (a restart sends them
    /// again: at least once).
    async fn attempt(&self, pending: PendingDelivery, unrecorded: &Mutex<Vec<Unrecorded>>) -> bool {
        let remembered = {
            let mut unrecorded = unrecorded.lock();
            unrecorded
                .iter()
                .position(|earlier| earlier.covers(pending.id))
                .map(|index| unrecorded.swap_remove(index))
        };
        let mut attempt = match remembered {
            Some(earlier) => earlier,
            None => self.send(&pending).await,
        };
        while let Some((ids, outcome)) = attempt.records.first() {
            match self
                .store
                .finish_deliveries(ids, outcome, attempt.attempted_at, attempt.elapsed)
                .await
            {
                Ok(_) => {
                    attempt.records.remove(0);
                }
                Err(err) => {
                    tracing::warn!(error = %err, dedup_key = %pending.dedup_key, "Cannot record a delivery attempt; will record it again without sending again");
                    unrecorded.lock().push(attempt);
                    return false;
                }
            }
        }
        true
    }

    /// One delivery attempt of `head` and, if it has a group key, of the other pending rows
    /// of its receiver and group: the outcome of each row, when it started and how long it
    /// took.
    async fn send(&self, head: &PendingDelivery) -> Unrecorded {
        let attempted_at = Timestamp::now();
        let started = Instant::now();
        let rows = self.members(head).await;
        let mut records: Vec<(Vec<i64>, DeliveryOutcome)> = Vec::new();
        let mut sendable: Vec<(&PendingDelivery, Message)> = Vec::new();
        for row in &rows {
            match serde_json::from_str::<Message>(&row.message_json) {
                Ok(message) => sendable.push((row, message)),
                Err(err) => {
                    let error = format!("stored message unreadable: {err}");
                    self.stats.count(&row.receiver, "permanent");
                    tracing::error!(receiver = %row.receiver, dedup_key = %row.dedup_key, error = %error, "Notification refused by its receiver; not retried");
                    records.push((vec![row.id], DeliveryOutcome::Permanent { error }));
                }
            }
        }
        if sendable.is_empty() {
            return Unrecorded {
                records,
                attempted_at,
                elapsed: started.elapsed(),
            };
        }
        // Cloned out so no lock is held across the send.
        let channel = self.channels.read().get(&head.receiver).cloned();
        let messages: Vec<Message> = sendable.iter().map(|(_, m)| m.clone()).collect();
        let (message, members) = match messages.as_slice() {
            [one] => (one.clone(), Vec::new()),
            _ => (group_message(&messages), messages),
        };
        let result = match channel {
            None => Err(DeliveryError::Permanent(
                "receiver no longer configured".to_owned(),
            )),
            Some(channel) => match tokio::time::timeout(
                self.attempt_timeout,
                deliver_group(&channel, &message, &members, &self.http),
            )
            .await
            {
                Ok(result) => result,
                Err(_) => Err(DeliveryError::Transient(format!(
                    "no answer within {}s",
                    self.attempt_timeout.as_secs()
                ))),
            },
        };
        let elapsed = started.elapsed();
        let rows: Vec<&PendingDelivery> = sendable.iter().map(|(row, _)| *row).collect();
        let grouped = rows.len();
        match result {
            Ok(()) => {
                for row in &rows {
                    self.stats.count(&row.receiver, "sent");
                }
                tracing::info!(receiver = %head.receiver, dedup_key = %head.dedup_key, id = %message.id, grouped, attempts = head.attempts + 1, "Notification delivered");
                records.push((rows.iter().map(|r| r.id).collect(), DeliveryOutcome::Sent));
            }
            Err(error) => {
                let retry_at = attempted_at.plus(backoff(head.attempts));
                let mut by_outcome: Vec<(Vec<i64>, DeliveryOutcome)> = Vec::new();
                for row in &rows {
                    let outcome = after_failure(row, &error, attempted_at, retry_at);
                    let result = match &outcome {
                        DeliveryOutcome::Sent => "sent",
                        DeliveryOutcome::Transient { .. } => "transient",
                        DeliveryOutcome::Permanent { .. } => "permanent",
                        DeliveryOutcome::Fallback { .. } => "fallback",
                    };
                    // The attempt itself failed, whatever happens to the row next.
                    if result == "fallback" {
                        self.stats.count(&row.receiver, error_result(&error));
                    }
                    self.stats.count(&row.receiver, result);
                    match by_outcome.iter_mut().find(|(_, o)| *o == outcome) {
                        Some((ids, _)) => ids.push(row.id),
                        None => by_outcome.push((vec![row.id], outcome)),
                    }
                }
                for (ids, outcome) in &by_outcome {
                    match outcome {
                        DeliveryOutcome::Transient { error, retry_at } => {
                            tracing::warn!(receiver = %head.receiver, dedup_key = %head.dedup_key, id = %message.id, grouped, notifications = ids.len(), attempts = head.attempts + 1, error = %error, retry_at = %retry_at, "Notification not delivered; will retry");
                        }
                        DeliveryOutcome::Permanent { error } => {
                            tracing::error!(receiver = %head.receiver, dedup_key = %head.dedup_key, id = %message.id, grouped, notifications = ids.len(), error = %error, "Notification refused by its receiver; not retried");
                        }
                        DeliveryOutcome::Fallback { error } => {
                            let to = rows
                                .iter()
                                .find(|r| ids.contains(&r.id))
                                .and_then(|r| r.fallback.as_ref())
                                .and_then(|f| f.to.first())
                                .map(String::as_str)
                                .unwrap_or("?");
                            tracing::warn!(receiver = %head.receiver, to = %to, dedup_key = %head.dedup_key, id = %message.id, grouped, notifications = ids.len(), attempts = head.attempts + 1, error = %error, "Notification not delivered; falling back to the next receiver of its route");
                        }
                        DeliveryOutcome::Sent => {}
                    }
                }
                records.extend(by_outcome);
            }
        }
        Unrecorded {
            records,
            attempted_at,
            elapsed,
        }
    }

    /// `head` alone, or every pending row of its receiver and group (`head` among them).
    async fn members(&self, head: &PendingDelivery) -> Vec<PendingDelivery> {
        let Some(group) = &head.group_key else {
            return vec![head.clone()];
        };
        match self.store.group_members(&head.receiver, group).await {
            Ok(rows) if rows.iter().any(|row| row.id == head.id) => rows,
            Ok(_) => vec![head.clone()],
            Err(err) => {
                // Sending the head alone is still correct: the others follow as their own
                // (smaller) group.
                tracing::warn!(error = %err, dedup_key = %head.dedup_key, "Cannot read the rest of a notification group; sending this one alone");
                vec![head.clone()]
            }
        }
    }
}

/// What happens to `row` after a failed attempt: handed on to the next receiver of its chain
/// if its receiver refused it for good, or it has now failed `after_attempts` times, or its
/// first attempt is at least `after` ago; otherwise retried at `retry_at`, or parked when
/// refused for good without a chain.
fn after_failure(
    row: &PendingDelivery,
    error: &DeliveryError,
    attempted_at: Timestamp,
    retry_at: Timestamp,
) -> DeliveryOutcome {
    let (permanent, text) = match error {
        DeliveryError::Permanent(text) => (true, text.clone()),
        DeliveryError::Transient(text) => (false, text.clone()),
    };
    if let Some(fallback) = row.fallback.as_ref().filter(|f| !f.to.is_empty()) {
        let failed = row.attempts.saturating_add(1);
        let first = row.first_attempt_at.unwrap_or(attempted_at);
        let waited = Duration::from_millis(attempted_at.millis_since(first));
        if permanent || failed >= fallback.after_attempts || waited >= fallback.after {
            return DeliveryOutcome::Fallback { error: text };
        }
    }
    if permanent {
        DeliveryOutcome::Permanent { error: text }
    } else {
        DeliveryOutcome::Transient {
            error: text,
            retry_at,
        }
    }
}

fn error_result(error: &DeliveryError) -> &'static str {
    match error {
        DeliveryError::Permanent(_) => "permanent",
        DeliveryError::Transient(_) => "transient",
    }
}

/// An attempt's outcomes (each with the rows it applies to), start and duration, kept until
/// the store takes every record.
struct Unrecorded {
    records: Vec<(Vec<i64>, DeliveryOutcome)>,
    attempted_at: Timestamp,
    elapsed: Duration,
}

impl Unrecorded {
    fn covers(&self, id: i64) -> bool {
        self.records.iter().any(|(ids, _)| ids.contains(&id))
    }
}

/// Capped exponential backoff with ±20% jitter, so receivers recovering from an outage are
/// not hit by every tenantwatch retry at the same instant.
fn backoff(attempts_before: u32) -> Duration {
    let exponent = attempts_before.min(16);
    let base = FIRST_BACKOFF
        .saturating_mul(1u32 << exponent)
        .min(MAX_BACKOFF);
    base.mul_f64(0.8 + fastrand::f64() * 0.4)
}

/// True if cancelled.
async fn sleep_or_cancel(duration: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(duration) => false,
    }
}

#[cfg(test)]
mod tests {
    use tw_store::Fallback;

    use super::*;

    fn row(attempts: u32, first_attempt_at: Option<i64>, chain: &[&str]) -> PendingDelivery {
        PendingDelivery {
            id: 1,
            dedup_key: "k/signal".into(),
            receiver: "signal".into(),
            message_json: "{}".into(),
            attempts,
            created_at: Timestamp(0),
            expires_at: Timestamp(86_400_000),
            group_key: None,
            fallback: (!chain.is_empty()).then(|| Fallback {
                to: chain.iter().map(|s| (*s).to_owned()).collect(),
                after_attempts: 3,
                after: Duration::from_secs(300),
            }),
            first_attempt_at: first_attempt_at.map(Timestamp),
        }
    }

    fn kind(outcome: &DeliveryOutcome) -> &'static str {
        match outcome {
            DeliveryOutcome::Sent => "sent",
            DeliveryOutcome::Transient { .. } => "transient",
            DeliveryOutcome::Permanent { .. } => "permanent",
            DeliveryOutcome::Fallback { .. } => "fallback",
        }
    }

    #[test]
    fn a_failing_receiver_is_given_up_after_attempts_or_time_or_a_refusal() {
        let transient = DeliveryError::Transient("503".into());
        let refused = DeliveryError::Permanent("400 captcha".into());
        let at = Timestamp(1_000_000);
        let retry = Timestamp(1_002_000);
        let cases: [(PendingDelivery, &DeliveryError, &str); 8] = [
            // First and second failures are retried; the third hands on (3 attempts).
            (row(0, None, &["sms"]), &transient, "transient"),
            (row(1, Some(999_000), &["sms"]), &transient, "transient"),
            (row(2, Some(998_000), &["sms"]), &transient, "fallback"),
            // Five minutes since the first attempt hand on even after one failure.
            (
                row(1, Some(1_000_000 - 300_000), &["sms"]),
                &transient,
                "fallback",
            ),
            (
                row(1, Some(1_000_000 - 299_999), &["sms"]),
                &transient,
                "transient",
            ),
            // A refusal hands on at once.
            (row(0, None, &["sms"]), &refused, "fallback"),
            // Without a chain: retried until expiry, parked when refused.
            (row(40, Some(0), &[]), &transient, "transient"),
            (row(0, None, &[]), &refused, "permanent"),
        ];
        for (index, (row, error, expected)) in cases.iter().enumerate() {
            let outcome = after_failure(row, error, at, retry);
            assert_eq!(kind(&outcome), *expected, "case {index}");
        }
        match after_failure(&row(0, None, &[]), &transient, at, retry) {
            DeliveryOutcome::Transient { retry_at, error } => {
                assert_eq!((retry_at, error.as_str()), (retry, "503"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for (attempts, nominal) in [
            (0u32, 2.0f64),
            (1, 4.0),
            (2, 8.0),
            (5, 64.0),
            (8, 300.0),
            (40, 300.0),
        ] {
            let secs = backoff(attempts).as_secs_f64();
            assert!(
                secs >= nominal * 0.8 - 1e-9 && secs <= nominal * 1.2 + 1e-9,
                "attempt {attempts}: {secs}s"
            );
        }
    }
}
