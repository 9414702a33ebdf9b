//! The dispatcher: delivers what the outbox holds, and only that.
//!
//! It never sees an alert being decided; it reads pending rows, sends each through its
//! receiver's channel outside any database transaction (SQLite has one writer, and a send can
//! take seconds), then records the attempt: sent, retried later with capped exponential
//! backoff and jitter, refused for good, or expired. A row stays pending until that record is
//! committed, so a crash mid-send means the send is repeated on restart (at least once; the
//! message id is the receiver's idempotency key), never lost.

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

use crate::{deliver, Channel, DeliveryError, Message};

/// First retry delay; doubles per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long the dispatcher sleeps at most when nothing is due, to notice expiries.
const IDLE_WAKE: Duration = Duration::from_secs(30);
/// After a store error, wait this long before reading the outbox again.
const STORE_RETRY: Duration = Duration::from_secs(5);

/// Delivery counts per (receiver, result) for the metrics stage; result is `sent`,
/// `transient`, `permanent` or `expired`.
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
        let unrecorded: Arc<Mutex<HashMap<i64, Unrecorded>>> = Arc::default();
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

    /// Sends one row and records the attempt; false if the record failed. A send whose record
    /// failed is not repeated while the process lives: the row stays pending in the store,
    /// so the next pass only retries the record (a restart sends it again: at least once).
    async fn attempt(
        &self,
        pending: PendingDelivery,
        unrecorded: &Mutex<HashMap<i64, Unrecorded>>,
    ) -> bool {
        let remembered = unrecorded.lock().remove(&pending.id);
        let (outcome, attempted_at, elapsed) = match remembered {
            Some(earlier) => earlier,
            None => self.send(&pending).await,
        };
        match self
            .store
            .finish_delivery(pending.id, &outcome, attempted_at, elapsed)
            .await
        {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, dedup_key = %pending.dedup_key, "Cannot record a delivery attempt; will record it again without sending again");
                unrecorded
                    .lock()
                    .insert(pending.id, (outcome, attempted_at, elapsed));
                false
            }
        }
    }

    /// One delivery attempt: the outcome, when it started and how long it took.
    async fn send(&self, pending: &PendingDelivery) -> Unrecorded {
        let attempted_at = Timestamp::now();
        let started = Instant::now();
        // Cloned out so no lock is held across the send.
        let channel = self.channels.read().get(&pending.receiver).cloned();
        let result = match (
            channel,
            serde_json::from_str::<Message>(&pending.message_json),
        ) {
            (None, _) => Err(DeliveryError::Permanent(
                "receiver no longer configured".to_owned(),
            )),
            (_, Err(err)) => Err(DeliveryError::Permanent(format!(
                "stored message unreadable: {err}"
            ))),
            (Some(channel), Ok(message)) => match tokio::time::timeout(
                self.attempt_timeout,
                deliver(&channel, &message, &self.http),
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
        let outcome = match result {
            Ok(()) => {
                self.stats.count(&pending.receiver, "sent");
                tracing::info!(receiver = %pending.receiver, dedup_key = %pending.dedup_key, attempts = pending.attempts + 1, "Notification delivered");
                DeliveryOutcome::Sent
            }
            Err(DeliveryError::Transient(error)) => {
                self.stats.count(&pending.receiver, "transient");
                let retry_at = attempted_at.plus(backoff(pending.attempts));
                tracing::warn!(receiver = %pending.receiver, dedup_key = %pending.dedup_key, attempts = pending.attempts + 1, error = %error, retry_at = %retry_at, "Notification not delivered; will retry");
                DeliveryOutcome::Transient { error, retry_at }
            }
            Err(DeliveryError::Permanent(error)) => {
                self.stats.count(&pending.receiver, "permanent");
                tracing::error!(receiver = %pending.receiver, dedup_key = %pending.dedup_key, error = %error, "Notification refused by its receiver; not retried");
                DeliveryOutcome::Permanent { error }
            }
        };
        (outcome, attempted_at, elapsed)
    }
}

/// An attempt's outcome, start and duration, kept until the store takes its record.
type Unrecorded = (DeliveryOutcome, Timestamp, Duration);

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
    use super::*;

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
