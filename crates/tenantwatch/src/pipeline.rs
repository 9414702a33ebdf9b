//! The recorder stage: observations in, SQLite and metrics out.
//!
//! One task. It takes observations in batches and writes each batch in one transaction. Metrics
//! are updated as observations arrive, whether or not the store is healthy, so a full disk
//! never blinds /metrics. A failed write keeps the batch in a bounded retry buffer and tries
//! again with capped backoff; what overflows the buffer is dropped and counted. The stage ends
//! when every sender of the channel is gone (the scheduler has stopped), after a last write.
//!
//! Every [`REFRESH_EVERY`] it also reads back what people decided at run time (silences and
//! acknowledgements, written by the CLI or the API from other processes) and commits the
//! escalations that have fallen due.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tw_core::config::AlertingConfig;
use tw_core::{Observation, Status, Timestamp};
use tw_server::{Health, Metrics, StoreResult};
use tw_store::{RecordPolicy, Store};

use crate::alerts::AlertEngine;

/// Largest batch taken from the channel at once.
const BATCH: usize = 512;
/// Retry backoff after a failed write: doubles from the first to the last value.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long the final write may keep retrying during shutdown.
const FINAL_WRITE_BUDGET: Duration = Duration::from_secs(2);
/// How often run-time silences and acknowledgements are read back and escalations checked:
/// a silence or an ack takes effect within this, and an escalation is at most this late.
const REFRESH_EVERY: Duration = Duration::from_secs(3);

pub(crate) struct Recorder {
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: Arc<Health>,
    pub(crate) policy: RecordPolicy,
    /// Observations kept for retry while the store is failing.
    pub(crate) retry_capacity: usize,
    /// Alert states between batches; evaluated with each write, in its transaction.
    pub(crate) alerts: AlertEngine,
    /// A reload's new alerting config (rules, receivers, routes).
    pub(crate) alerting_updates: watch::Receiver<AlertingConfig>,
    /// Tells the dispatcher new outbox rows were committed.
    pub(crate) dispatcher_wake: Arc<Notify>,
}

impl Recorder {
    pub(crate) async fn run(mut self, mut observations: mpsc::Receiver<Observation>) {
        let mut pending: VecDeque<Observation> = VecDeque::new();
        let mut incoming = Vec::with_capacity(BATCH);
        let mut backoff = RETRY_MIN;
        let mut retry_at: Option<Instant> = None;
        // Before the first batch, so a restart honours silences, acks and past escalations
        // from its first evaluation.
        self.load_escalations().await;
        self.refresh().await;
        let mut refresh_at = Instant::now() + REFRESH_EVERY;

        loop {
            let received = tokio::select! {
                n = observations.recv_many(&mut incoming, BATCH) => n,
                _ = tokio::time::sleep_until(retry_at.unwrap_or(refresh_at)), if retry_at.is_some() => usize::MAX,
                _ = tokio::time::sleep_until(refresh_at) => {
                    self.refresh().await;
                    refresh_at = Instant::now() + REFRESH_EVERY;
                    continue;
                }
            };
            let closed = received == 0;
            for observation in &incoming {
                self.observe(observation);
            }
            pending.extend(incoming.drain(..));
            let dropped = self.trim(&mut pending);

            let retry_due = retry_at.is_none_or(|at| Instant::now() >= at);
            if !pending.is_empty() && (retry_due || closed) {
                match self.write(&mut pending, dropped).await {
                    true => {
                        backoff = RETRY_MIN;
                        retry_at = None;
                    }
                    false => {
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            } else if dropped > 0 {
                self.metrics.record_store_result(
                    StoreResult {
                        failed: true,
                        pending: pending.len() as u64,
                        dropped,
                        ..StoreResult::default()
                    },
                    Timestamp::now().as_secs_f64(),
                );
            }
            if closed {
                break;
            }
        }

        // The channel is closed: one last bounded effort for whatever is still pending.
        // Each attempt is cut at the deadline too (a locked database would otherwise hold one
        // attempt for the whole busy timeout); `Store::record` is cancel-safe.
        let deadline = Instant::now() + FINAL_WRITE_BUDGET;
        while !pending.is_empty() && Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, self.write(&mut pending, 0)).await {
                Ok(true) | Err(_) => break,
                Ok(false) => tokio::time::sleep(RETRY_MIN).await,
            }
        }
        if !pending.is_empty() {
            tracing::error!(
                lost = pending.len(),
                "Observations not stored at shutdown: the store stayed unavailable"
            );
        }
    }

    /// Escalations recorded before this start: they are not sent again, and their episodes'
    /// resolutions reach the escalation receivers.
    async fn load_escalations(&mut self) {
        match self.store.escalations().await {
            Ok(escalations) => self.alerts.escalated(escalations),
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "Cannot read past escalations; an episode escalated before this start may escalate again")
            }
        }
    }

    /// Reads silences and new acknowledgements back from the store and commits the
    /// escalations due now. A failed read keeps what was read last; a failed escalation is
    /// tried again on the next refresh.
    async fn refresh(&mut self) {
        if self.alerting_updates.has_changed().unwrap_or(false) {
            let config = self.alerting_updates.borrow_and_update().clone();
            self.alerts.reconfigure(config);
        }
        let now = Timestamp::now();
        match self.store.silences(now, false).await {
            Ok(silences) => self.alerts.set_silences(silences),
            Err(err) => {
                tracing::debug!(error = %error_chain(&err), "Cannot read run-time silences; keeping the last ones read")
            }
        }
        match self.store.acks_after(self.alerts.last_ack_id()).await {
            Ok(acks) => {
                for ack in &acks {
                    tracing::info!(tenant = %ack.tenant, check = %ack.check, target = %ack.target, episode = ack.episode, acked_by = %ack.acked_by, comment = ack.comment.as_deref().unwrap_or(""), "Alert acknowledged; its repeats and escalation stop until it resolves");
                }
                self.alerts.add_acks(acks);
            }
            Err(err) => {
                tracing::debug!(error = %error_chain(&err), "Cannot read acknowledgements; will try again")
            }
        }
        let due = self.alerts.escalations_due(now);
        if due.escalations.is_empty() {
            return;
        }
        match self.store.escalate(&due.escalations, &due.deliveries).await {
            Ok(enqueued) => {
                for _ in &due.escalations {
                    self.metrics.record_alert_event("escalation", "critical");
                }
                self.alerts.escalated(due.escalations);
                if enqueued > 0 {
                    self.dispatcher_wake.notify_one();
                }
            }
            Err(err) => {
                tracing::warn!(error = %error_chain(&err), "Cannot record escalations; will try again")
            }
        }
    }

    /// Metrics first, and a log line when a verdict changes (per-probe noise stays at DEBUG).
    fn observe(&self, observation: &Observation) {
        if self.metrics.observe(observation) {
            let tenant = observation.tenant.as_str();
            let check = observation.check.as_str();
            let target = observation.target.as_str();
            let status = observation.status.as_str();
            let reason = observation.reason.as_str();
            let summary = observation.summary.as_str();
            match observation.status {
                Status::Critical => tracing::warn!(
                    tenant,
                    check,
                    target,
                    status,
                    reason,
                    summary,
                    "Check status changed"
                ),
                _ => tracing::info!(
                    tenant,
                    check,
                    target,
                    status,
                    reason,
                    summary,
                    "Check status changed"
                ),
            }
        }
    }

    /// Drops the oldest pending observations beyond capacity; returns how many.
    fn trim(&self, pending: &mut VecDeque<Observation>) -> u64 {
        let excess = pending.len().saturating_sub(self.retry_capacity);
        pending.drain(..excess);
        excess as u64
    }

    /// Writes everything pending in one transaction. True on success.
    async fn write(&mut self, pending: &mut VecDeque<Observation>, dropped: u64) -> bool {
        if self.alerting_updates.has_changed().unwrap_or(false) {
            let config = self.alerting_updates.borrow_and_update().clone();
            self.alerts.reconfigure(config);
        }
        let batch = pending.make_contiguous();
        let evaluated = self.alerts.evaluate(batch);
        match self
            .store
            .record_with_alert_commit(batch, self.policy, &evaluated.writes)
            .await
        {
            Ok(outcome) => {
                for event in &evaluated.events {
                    self.metrics
                        .record_alert_event(event.kind.as_str(), event.severity.as_str());
                    tracing::warn!(
                        tenant = %event.tenant,
                        check = %event.check,
                        target = %event.target,
                        kind = event.kind.as_str(),
                        severity = event.severity.as_str(),
                        reason = %event.reason,
                        dedup_key = %event.dedup_key,
                        "Alert event"
                    );
                }
                self.alerts.adopt(evaluated);
                if outcome.enqueued > 0 {
                    self.dispatcher_wake.notify_one();
                }
                let was_failing = self.health.readiness_store_error().is_some();
                pending.clear();
                self.health.set_store_error(None);
                self.metrics.record_store_result(
                    StoreResult {
                        stored: outcome.stored as u64,
                        sampled_out: outcome.sampled_out as u64,
                        failed: false,
                        pending: 0,
                        dropped,
                    },
                    Timestamp::now().as_secs_f64(),
                );
                if was_failing {
                    tracing::info!("Store writable again");
                }
                true
            }
            Err(err) => {
                let first_failure = self.health.readiness_store_error().is_none();
                self.health.set_store_error(Some(error_chain(&err)));
                self.metrics.record_store_result(
                    StoreResult {
                        failed: true,
                        pending: pending.len() as u64,
                        dropped,
                        ..StoreResult::default()
                    },
                    Timestamp::now().as_secs_f64(),
                );
                if first_failure {
                    tracing::error!(error = %error_chain(&err), retryable = err.is_retryable(), pending = pending.len(), "Store write failed; probing continues and the batch will be retried");
                } else {
                    tracing::debug!(error = %error_chain(&err), pending = pending.len(), "Store write failed again");
                }
                false
            }
        }
    }
}

/// `error: cause: cause`, as `{:#}` prints an anyhow chain.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
