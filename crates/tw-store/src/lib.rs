//! tenantwatch's store: every byte on disk, in one SQLite file.
//!
//! This is the only crate that speaks SQL. Its API takes and returns tw-core types and the
//! plain structs defined here; no sqlx type crosses it, so the rest of the workspace cannot
//! grow queries of its own and the schema can change behind it (through `migrations/` only).
//!
//! One [`Store`] owns a database file: it keeps the last state of every check in memory to
//! decide what to store without reading it back per observation, so a second writer on the
//! same file (another daemon) would make that copy wrong. Reads may come from anywhere.

mod check_state;
mod codec;
mod dns_snapshots;
mod error;
mod learned;
mod meta;
mod observations;
mod outbox;
mod pool;
mod reads;
mod record;
mod retention;
mod runtime;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use sqlx::SqlitePool;
use tokio::sync::Mutex;
use tw_core::{CheckKind, Observation, Timestamp};

use crate::check_state::StateCache;

pub use crate::check_state::CheckState;
pub use crate::dns_snapshots::DnsSnapshot;
pub use crate::error::StoreError;
pub use crate::learned::LearnedFacts;
pub use crate::observations::StoredObservation;
pub use crate::outbox::{
    AlertCommit, AlertStateRow, AlertWrites, DeliveryOutcome, Enqueue, Fallback, NewDelivery,
    OutboxRow, OutboxStats, PendingDelivery,
};
pub use crate::reads::{
    BadCursor, DeliveryAttempt, HistoryCursor, HistoryFilter, HistoryPage, NotificationRecord,
    StateCursor, StateFilter, StatePage, MAX_PAGE, MAX_WINDOW,
};
pub use crate::record::{RecordOutcome, RecordPolicy};
pub use crate::runtime::{AckOutcome, AckRow, Escalation, NewAck, NewSilence, Removal, SilenceRow};

/// A handle on the database. Cloning is cheap and every clone shares the pool and the cache.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    pool: SqlitePool,
    /// The writer lock and, inside it, the last state of every key. Writes from this process
    /// queue here (SQLite allows one writer), so `record` always sees the cache as of the last
    /// commit. `None` means it must be reloaded from disk before the next batch.
    writer: Mutex<Option<StateCache>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("pool", &self.inner.pool)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the database at `path`, creating the file and its directory if missing, and
    /// applies any migrations not yet applied.
    ///
    /// Every connection runs with WAL, `synchronous=NORMAL`, a 5 s busy timeout, foreign keys
    /// on, `auto_vacuum=INCREMENTAL` (effective for files created here) and a 64 MiB
    /// `journal_size_limit`.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let pool = pool::connect(path).await?;
        let cache = match check_state::load_cache(&pool).await {
            Ok(cache) => cache,
            Err(err) => {
                pool.close().await;
                return Err(err);
            }
        };
        tracing::debug!(path = %path.display(), checks = cache.len(), "Store opened");
        Ok(Store {
            inner: Arc::new(Inner {
                pool,
                writer: Mutex::new(Some(cache)),
            }),
        })
    }

    /// Writes a batch in one transaction: the check state of every key, the observations
    /// worth keeping (state changes, every non-ok, and an ok once per
    /// `policy.ok_sample_interval`), and the DNS snapshot of every DNS observation that has
    /// records (merged label by label into the stored one). Observations of the same key are
    /// applied in batch order. A `Reason::Shutdown` observation is stored but changes no
    /// key's state.
    pub async fn record(
        &self,
        batch: &[Observation],
        policy: RecordPolicy,
    ) -> Result<RecordOutcome, StoreError> {
        record::record(
            &self.inner.pool,
            &self.inner.writer,
            batch,
            policy,
            &AlertCommit::default(),
        )
        .await
    }

    /// [`Store::record`], plus the alert states and outbox rows the batch caused, all in the
    /// same transaction: an alert is durable before anything is sent, and a failed batch
    /// enqueues nothing.
    pub async fn record_with_alerts(
        &self,
        batch: &[Observation],
        policy: RecordPolicy,
        alerts: &AlertWrites,
    ) -> Result<RecordOutcome, StoreError> {
        let commit = AlertCommit::from(alerts);
        record::record(&self.inner.pool, &self.inner.writer, batch, policy, &commit).await
    }

    /// [`Store::record_with_alerts`] with outbox rows that may be held, grouped and handed
    /// on to a fallback receiver.
    pub async fn record_with_alert_commit(
        &self,
        batch: &[Observation],
        policy: RecordPolicy,
        alerts: &AlertCommit,
    ) -> Result<RecordOutcome, StoreError> {
        record::record(&self.inner.pool, &self.inner.writer, batch, policy, alerts).await
    }

    /// Every stored alert state (JSON), to seed the evaluator at start.
    pub async fn alert_states(&self) -> Result<Vec<AlertStateRow>, StoreError> {
        outbox::alert_states(&self.inner.pool).await
    }

    /// The oldest pending notification of each receiver that is due by `now`.
    pub async fn due_deliveries(&self, now: Timestamp) -> Result<Vec<PendingDelivery>, StoreError> {
        outbox::due(&self.inner.pool, now).await
    }

    /// When the next pending notification falls due, if any is pending.
    pub async fn next_delivery_due(&self) -> Result<Option<Timestamp>, StoreError> {
        outbox::next_due_at(&self.inner.pool).await
    }

    /// Records a delivery attempt and moves its outbox row on.
    pub async fn finish_delivery(
        &self,
        id: i64,
        outcome: &DeliveryOutcome,
        attempted_at: Timestamp,
        duration: std::time::Duration,
    ) -> Result<(), StoreError> {
        outbox::finish(&self.inner.pool, &[id], outcome, attempted_at, duration)
            .await
            .map(drop)
    }

    /// Records one attempt that carried the messages of all `ids` (a group) and moves each row
    /// on, in one transaction. Returns how many rows a fallback enqueued for the next
    /// receiver (a receiver that already had the event gets no second row).
    pub async fn finish_deliveries(
        &self,
        ids: &[i64],
        outcome: &DeliveryOutcome,
        attempted_at: Timestamp,
        duration: std::time::Duration,
    ) -> Result<usize, StoreError> {
        outbox::finish(&self.inner.pool, ids, outcome, attempted_at, duration).await
    }

    /// The pending rows of `receiver` in the group `group_key`, oldest first.
    pub async fn group_members(
        &self,
        receiver: &str,
        group_key: &str,
    ) -> Result<Vec<PendingDelivery>, StoreError> {
        outbox::group_members(&self.inner.pool, receiver, group_key).await
    }

    /// Adds a silence; returns its id.
    pub async fn add_silence(&self, silence: &NewSilence) -> Result<i64, StoreError> {
        runtime::add_silence(&self.inner.pool, silence).await
    }

    /// Silences in force or still to come at `now` (not removed, not ended), by start; with
    /// `include_inactive`, every silence ever added, removed and ended ones too.
    pub async fn silences(
        &self,
        now: Timestamp,
        include_inactive: bool,
    ) -> Result<Vec<SilenceRow>, StoreError> {
        runtime::list_silences(&self.inner.pool, now, include_inactive).await
    }

    /// One silence by id, whatever its state.
    pub async fn silence(&self, id: i64) -> Result<Option<SilenceRow>, StoreError> {
        runtime::silence(&self.inner.pool, id).await
    }

    /// Ends a silence now; the row stays, with who removed it and when.
    pub async fn remove_silence(
        &self,
        id: i64,
        removed_by: &str,
        at: Timestamp,
    ) -> Result<Removal, StoreError> {
        runtime::remove_silence(&self.inner.pool, id, removed_by, at).await
    }

    /// Records an acknowledgement of one firing episode; a second one of the same episode
    /// leaves the first in place.
    pub async fn add_ack(&self, ack: &NewAck) -> Result<AckOutcome, StoreError> {
        runtime::add_ack(&self.inner.pool, ack).await
    }

    /// Acknowledgements with an id above `after_id`, oldest first (0 for all of them).
    pub async fn acks_after(&self, after_id: i64) -> Result<Vec<AckRow>, StoreError> {
        runtime::acks_after(&self.inner.pool, after_id).await
    }

    /// Records escalations and enqueues their messages, in one transaction. Returns how many
    /// outbox rows were new.
    pub async fn escalate(
        &self,
        escalations: &[Escalation],
        deliveries: &[Enqueue],
    ) -> Result<usize, StoreError> {
        runtime::escalate(&self.inner.pool, escalations, deliveries).await
    }

    /// Every escalation recorded, to seed the alert engine at start.
    pub async fn escalations(&self) -> Result<Vec<Escalation>, StoreError> {
        runtime::escalations(&self.inner.pool).await
    }

    /// Parks pending notifications past their expiry; returns (receiver, dedup key) of each.
    pub async fn expire_deliveries(
        &self,
        now: Timestamp,
    ) -> Result<Vec<(String, String)>, StoreError> {
        outbox::expire(&self.inner.pool, now).await
    }

    pub async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        outbox::stats(&self.inner.pool).await
    }

    /// Every outbox row, oldest first.
    pub async fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        outbox::list(&self.inner.pool).await
    }

    /// Every key's latest state, ordered by tenant, check and target. A key seen only through
    /// `Reason::Shutdown` observations has no state yet and is not listed.
    pub async fn check_states(&self) -> Result<Vec<CheckState>, StoreError> {
        check_state::list(&self.inner.pool).await
    }

    /// Every (tenant, domain)'s last DNS record set, ordered by tenant and domain.
    pub async fn dns_snapshots(&self) -> Result<Vec<DnsSnapshot>, StoreError> {
        dns_snapshots::list(&self.inner.pool).await
    }

    /// Every target's remembered facts (object ids, namespace types, tenant ids).
    pub async fn learned_facts(&self) -> Result<Vec<LearnedFacts>, StoreError> {
        learned::list(&self.inner.pool).await
    }

    /// Stored observations, newest first, at most `limit` of them; each filter that is `Some`
    /// must match.
    pub async fn observations(
        &self,
        tenant: Option<&str>,
        check: Option<CheckKind>,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        observations::list(&self.inner.pool, tenant, check, target, limit).await
    }

    /// One page of history, newest first, strictly older than `before`; at most `limit`
    /// observations (capped at [`MAX_PAGE`]). `next` is set when older ones remain.
    pub async fn observation_page(
        &self,
        filter: &HistoryFilter,
        before: Option<HistoryCursor>,
        limit: u32,
    ) -> Result<HistoryPage, StoreError> {
        reads::history_page(&self.inner.pool, filter, before, limit).await
    }

    /// A tenant's stored observations started in `[since, until)`, oldest first, at most
    /// `limit` (capped at [`MAX_WINDOW`]): the raw material of an incident report.
    pub async fn observations_between(
        &self,
        tenant: &str,
        since: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        reads::between(&self.inner.pool, tenant, since, until, limit).await
    }

    /// For each of a tenant's keys, the latest state-changing observation started before
    /// `at` (the state it was in then), ordered by check and target. Keys first seen later, or
    /// whose earlier history was pruned, are absent.
    pub async fn states_before(
        &self,
        tenant: &str,
        at: Timestamp,
    ) -> Result<Vec<StoredObservation>, StoreError> {
        reads::states_before(&self.inner.pool, tenant, at).await
    }

    /// One page of check states in `(tenant, check, target)` order, strictly after `after`;
    /// at most `limit` (capped at [`MAX_PAGE`]).
    pub async fn check_state_page(
        &self,
        filter: &StateFilter,
        after: Option<&StateCursor>,
        limit: u32,
    ) -> Result<StatePage, StoreError> {
        reads::states_page(&self.inner.pool, filter, after, limit).await
    }

    /// Every key of the named tenants (the first [`MAX_PAGE`] names are used), in
    /// `(tenant, check, target)` order.
    pub async fn check_states_of(&self, tenants: &[&str]) -> Result<Vec<CheckState>, StoreError> {
        reads::states_of_tenants(&self.inner.pool, tenants).await
    }

    /// Keys that are not ok, critical first, then warning, then unknown, the longest-standing
    /// first within each; at most `limit` (capped at [`MAX_PAGE`]).
    pub async fn problems(&self, limit: u32) -> Result<Vec<CheckState>, StoreError> {
        reads::problems(&self.inner.pool, limit).await
    }

    /// One tenant's alert states (JSON), ordered by check and target.
    pub async fn alert_states_of(&self, tenant: &str) -> Result<Vec<AlertStateRow>, StoreError> {
        reads::alert_states_of(&self.inner.pool, tenant).await
    }

    /// Notifications enqueued in `[since, until)`, oldest first, each with its delivery
    /// attempts; at most `limit` (capped at [`MAX_WINDOW`]).
    pub async fn notifications_between(
        &self,
        since: Timestamp,
        until: Timestamp,
        limit: u32,
    ) -> Result<Vec<NotificationRecord>, StoreError> {
        reads::notifications_between(&self.inner.pool, since, until, limit).await
    }

    /// Deletes observations started before `older_than`, except the one each key's current
    /// state started with, then returns the freed space to the file system and truncates the
    /// WAL. Returns the number of observations deleted.
    pub async fn prune(&self, older_than: Timestamp) -> Result<u64, StoreError> {
        retention::prune(&self.inner.pool, &self.inner.writer, older_than).await
    }

    /// Deletes the repeated-ok samples started before `before` except the first of each key
    /// per `keep_one_per` (see `store.thin_ok_after`); state changes, non-ok observations
    /// and current states' evidence are never touched. Returns the number deleted; the space
    /// goes back to the file system at the next [`Store::prune`].
    pub async fn thin_ok_samples(
        &self,
        before: Timestamp,
        keep_one_per: std::time::Duration,
    ) -> Result<u64, StoreError> {
        retention::thin_ok_samples(&self.inner.pool, &self.inner.writer, before, keep_one_per).await
    }

    /// Writes one row to prove a batch could be written now. The daemon calls it at start,
    /// so `/readyz` reports an unwritable database before the first batch fails.
    pub async fn check_writable(&self) -> Result<(), StoreError> {
        meta::check_writable(&self.inner.pool).await
    }

    /// Closes every connection, which checkpoints the WAL into the database file. Calls made
    /// afterwards, on this handle or any clone, fail with a retryable `Unavailable`.
    pub async fn close(&self) {
        self.inner.pool.close().await;
    }
}
