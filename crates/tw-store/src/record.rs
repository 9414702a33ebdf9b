//! Writing a batch of observations: state, history with downsampling, DNS snapshots.
//!
//! One batch is one transaction, so a crash leaves either all of it or none. Which
//! observations are kept is decided by [`decide`], a pure function of the key's previous state:
//! state changes and every non-ok verdict are always stored with their evidence (they are what
//! a report is written from), while a run of identical ok verdicts is kept once per
//! `ok_sample_interval` as verdict, summary and timing without evidence, which is what keeps
//! 10,000 tenants' history small.
//!
//! A [`Reason::Shutdown`] observation (the daemon stopped before the probe finished) says
//! nothing about the target: it is kept in history but never moves a key's state, so a restart
//! does not reset `since` and `consecutive` or turn a critical target unknown. A key first seen
//! through one still needs a check_state row for the observation to refer to; that row keeps
//! reason `shutdown`, which no real verdict can leave behind, and is read as "no state yet":
//! it is left out of `Store::check_states` and the key's next real observation is its first
//! sight. See [`is_placeholder`].
//!
//! The previous state comes from the in-memory cache (see `check_state.rs`), never from a
//! SELECT per row, and the writes go out as a few multi-row statements per chunk of the batch
//! rather than a few statements per observation. The cache is changed only after the commit succeeds; while a batch is being
//! written it is taken out of its slot, so a failure or a cancelled call can never leave it
//! describing rows that did not commit.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::Mutex;
use tw_core::{Evidence, Observation, Reason, Status, Timestamp};

use crate::check_state::{self, Key, LastState, StateCache, StateUpdate};
use crate::dns_snapshots::{self, SeenRecords};
use crate::observations::{self, NewObservation};
use crate::outbox::{self, AlertCommit};
use crate::StoreError;

/// How the recorder thins out history.
#[derive(Debug, Clone, Copy)]
pub struct RecordPolicy {
    /// A repeated ok observation is stored only when the key's last stored observation is at
    /// least this much older; the ones in between only update `check_state`.
    pub ok_sample_interval: Duration,
}

/// What a call to `Store::record` did. `stored + sampled_out` is the batch length.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecordOutcome {
    /// Observations written to history.
    pub stored: usize,
    /// Repeated ok observations that only updated `check_state`.
    pub sampled_out: usize,
    /// Observations that were the first of their key or changed its status or reason.
    pub state_changes: usize,
    /// Outbox rows added (an event already enqueued for a receiver is not added twice).
    pub enqueued: usize,
}

/// The effect of one observation on its key.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Step {
    state_change: bool,
    store: bool,
    status: Status,
    reason: Reason,
    since: Timestamp,
    consecutive: u32,
    last_stored_at: Timestamp,
    /// Whether the observation was a real run, whose summary and start become the row's
    /// `summary` and `last_run`; a shutdown leaves both as they were.
    ran: bool,
}

/// Whether `state` is the row of a key seen only through shutdown observations: it has no
/// verdict yet. Shutdowns never change an existing state (see [`decide`]), so a check_state
/// row can only hold reason `shutdown` if no real observation ever reached it.
pub(crate) fn is_placeholder(state: &LastState) -> bool {
    state.reason == Reason::Shutdown
}

/// Decides what `observation` does to a key whose last state is `previous`.
fn decide(previous: Option<&LastState>, observation: &Observation, policy: RecordPolicy) -> Step {
    let started_at = observation.started_at;
    if observation.reason == Reason::Shutdown {
        return shutdown_step(previous, started_at);
    }
    // A placeholder is no state: this real observation is the key's first sight.
    let previous = previous.filter(|previous| !is_placeholder(previous));
    let new_state = Step {
        state_change: true,
        store: true,
        status: observation.status,
        reason: observation.reason,
        since: started_at,
        consecutive: 1,
        last_stored_at: started_at,
        ran: true,
    };
    let Some(previous) = previous else {
        return new_state;
    };
    if previous.status != observation.status || previous.reason != observation.reason {
        return new_state;
    }
    let interval_ms = u64::try_from(policy.ok_sample_interval.as_millis()).unwrap_or(u64::MAX);
    let sample_due = started_at.millis_since(previous.last_stored_at) >= interval_ms;
    let store = observation.status != Status::Ok || sample_due;
    Step {
        state_change: false,
        store,
        status: observation.status,
        reason: observation.reason,
        since: previous.since,
        consecutive: previous.consecutive.saturating_add(1),
        last_stored_at: if store {
            started_at
        } else {
            previous.last_stored_at
        },
        ran: true,
    }
}

/// Whether a stored observation is only the periodic sample of a run of identical ok
/// verdicts, which is stored without its evidence (see `NewObservation::keep_evidence`).
/// State changes, first sights and every non-ok verdict keep theirs.
fn is_ok_sample(observation: &Observation, step: &Step) -> bool {
    step.store && !step.state_change && step.ran && observation.status == Status::Ok
}

/// A shutdown observation is always stored (it is the record of why a run has no verdict) but
/// is never a state change, and leaves the key's state (or placeholder) exactly as it was,
/// `last_stored_at` included: counting it as a stored sample would let a daemon restarting more often than
/// `ok_sample_interval` crowd every ok sample out of a healthy key's history.
///
/// Without a previous state the key gets a placeholder (reason `shutdown`), which
/// [`is_placeholder`] recognises and the next real observation replaces as a first sight.
fn shutdown_step(previous: Option<&LastState>, started_at: Timestamp) -> Step {
    match previous {
        Some(previous) => Step {
            state_change: false,
            store: true,
            status: previous.status,
            reason: previous.reason,
            since: previous.since,
            consecutive: previous.consecutive,
            last_stored_at: previous.last_stored_at,
            ran: false,
        },
        None => Step {
            state_change: false,
            store: true,
            status: Reason::Shutdown.status(),
            reason: Reason::Shutdown,
            since: started_at,
            consecutive: 1,
            last_stored_at: started_at,
            ran: false,
        },
    }
}

pub(crate) async fn record(
    pool: &SqlitePool,
    writer: &Mutex<Option<StateCache>>,
    batch: &[Observation],
    policy: RecordPolicy,
    alerts: &AlertCommit,
) -> Result<RecordOutcome, StoreError> {
    if batch.is_empty() && alerts.is_empty() {
        return Ok(RecordOutcome::default());
    }
    // Holding the writer for the whole batch keeps batches in commit order with the cache,
    // and makes this process's writes queue here rather than in SQLite's busy timeout.
    let mut slot = writer.lock().await;
    // Taken, not borrowed: if this future is dropped mid-write, the slot stays empty and the
    // next call reloads from disk instead of trusting a cache that may not match the file.
    let mut cache = match slot.take() {
        Some(cache) => cache,
        None => check_state::load_cache(pool).await?,
    };

    // IMMEDIATE takes the write lock up front, so the busy timeout applies here instead of a
    // deferred transaction failing at its first write when another connection holds the lock.
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(err) => {
            *slot = Some(cache);
            return Err(StoreError::from_sqlx(err));
        }
    };
    let staged = match stage(&mut tx, &cache, batch, policy).await {
        // Alert states refer to check_state rows the batch may have just created, so they are
        // written after it, in the same transaction.
        Ok((mut outcome, touched)) => {
            match outbox::stage(&mut tx, alerts, Timestamp::now()).await {
                Ok(enqueued) => {
                    outcome.enqueued = enqueued;
                    Ok((outcome, touched))
                }
                Err(err) => Err(err),
            }
        }
        Err(err) => Err(err),
    };
    let (outcome, touched) = match staged {
        Ok(staged) => staged,
        Err(err) => {
            if let Err(rollback_err) = tx.rollback().await {
                tracing::debug!(error = %rollback_err, "Rollback after a failed batch failed");
            }
            // Nothing committed, so the cache still describes the file.
            *slot = Some(cache);
            return Err(err);
        }
    };
    if let Err(err) = tx.commit().await {
        // Whether the commit reached the file is not known; the slot stays empty so the next
        // batch starts from what the database says.
        return Err(StoreError::from_sqlx(err));
    }
    cache.extend(touched);
    *slot = Some(cache);

    tracing::debug!(
        stored = outcome.stored,
        sampled_out = outcome.sampled_out,
        state_changes = outcome.state_changes,
        "Batch recorded"
    );
    Ok(outcome)
}

/// Writes every observation of the batch inside the open transaction and returns the new
/// states of the keys it touched, for the cache once the commit succeeds.
async fn stage(
    conn: &mut SqliteConnection,
    cache: &StateCache,
    batch: &[Observation],
    policy: RecordPolicy,
) -> Result<(RecordOutcome, StateCache), StoreError> {
    let keys: Vec<Key> = batch.iter().map(Key::of).collect();
    let mut touched = StateCache::new();
    let mut outcome = RecordOutcome::default();
    let mut start = 0;
    while start < batch.len() {
        let end = chunk_end(&keys, start);
        let chunk = Chunk {
            observations: &batch[start..end],
            keys: &keys[start..end],
        };
        stage_chunk(conn, cache, &mut touched, chunk, policy, &mut outcome).await?;
        start = end;
    }
    Ok((outcome, touched))
}

/// Rows per multi-row statement: a handful of statements per batch instead of a few per
/// observation (each statement is a round trip to sqlx's SQLite worker thread), while staying
/// far below SQLite's limit of 32,766 bound parameters (10 per observation row).
const CHUNK_ROWS: usize = 500;

/// Observations written together, each of a different key.
#[derive(Clone, Copy)]
struct Chunk<'a> {
    observations: &'a [Observation],
    keys: &'a [Key],
}

/// Where the chunk starting at `start` ends: after at most `CHUNK_ROWS` observations and
/// before a key's second appearance. With every key at most once per statement, each row a
/// statement returns maps back to exactly one observation, and a key's later observation is
/// decided against the state its earlier one left (in the next chunk). Always makes progress.
fn chunk_end(keys: &[Key], start: usize) -> usize {
    let mut seen = HashSet::new();
    let mut end = start;
    while end < keys.len() && end - start < CHUNK_ROWS && seen.insert(&keys[end]) {
        end += 1;
    }
    end
}

async fn stage_chunk(
    conn: &mut SqliteConnection,
    cache: &StateCache,
    touched: &mut StateCache,
    chunk: Chunk<'_>,
    policy: RecordPolicy,
    outcome: &mut RecordOutcome,
) -> Result<(), StoreError> {
    let previous: Vec<Option<LastState>> = chunk
        .keys
        .iter()
        .map(|key| touched.get(key).or_else(|| cache.get(key)).copied())
        .collect();

    // Keys seen for the first time need a check_state row before observations can refer to it.
    let first_sightings: Vec<&Observation> = chunk
        .observations
        .iter()
        .zip(&previous)
        .filter(|(_, previous)| previous.is_none())
        .map(|(observation, _)| observation)
        .collect();
    let new_ids = check_state::insert_many(conn, &first_sightings).await?;

    let mut steps = Vec::with_capacity(chunk.observations.len());
    for ((observation, key), previous) in chunk.observations.iter().zip(chunk.keys).zip(&previous) {
        let id = match previous {
            Some(previous) => previous.id,
            None => *new_ids.get(key).ok_or_else(|| {
                StoreError::Decode(format!(
                    "check_state row of new key {}/{}/{} was not returned by its insert",
                    observation.tenant, observation.check, observation.target
                ))
            })?,
        };
        steps.push((id, decide(previous.as_ref(), observation, policy)));
    }

    let to_store: Vec<NewObservation<'_>> = chunk
        .observations
        .iter()
        .zip(&steps)
        .filter(|(_, (_, step))| step.store)
        .map(|(observation, (id, step))| NewObservation {
            check_id: *id,
            observation,
            state_change: step.state_change,
            keep_evidence: !is_ok_sample(observation, step),
        })
        .collect();
    let stored: Vec<&Observation> = to_store.iter().map(|row| row.observation).collect();
    crate::learned::upsert_many(conn, &stored).await?;
    // Keys are distinct within a chunk, so check_id identifies the observation written.
    let stored_ids: HashMap<i64, i64> = observations::insert_many(conn, &to_store)
        .await?
        .into_iter()
        .collect();

    let updates: Vec<StateUpdate<'_>> = chunk
        .observations
        .iter()
        .zip(&steps)
        .zip(&previous)
        .map(|((observation, (id, step)), previous)| StateUpdate {
            next: LastState {
                id: *id,
                status: step.status,
                reason: step.reason,
                since: step.since,
                consecutive: step.consecutive,
                last_stored_at: step.last_stored_at,
            },
            summary: step.ran.then_some(observation.summary.as_str()),
            last_run: step.ran.then_some(observation.started_at),
            // A state change and a first sight are always stored (see `decide`), so they
            // always have an id here. A key first seen through a shutdown points at that
            // observation, so change_id is never left NULL after the commit.
            change_id: if step.state_change || previous.is_none() {
                stored_ids.get(id).copied()
            } else {
                None
            },
        })
        .collect();
    check_state::update_many(conn, &updates).await?;

    let dns_seen: Vec<SeenRecords<'_>> = chunk
        .observations
        .iter()
        .filter_map(|observation| match &observation.evidence {
            // An empty set means every lookup failed; that is not a record set to compare
            // against, and keeping the old one lets drift be measured once DNS answers again.
            Evidence::Dns(evidence) if !evidence.records.is_empty() => Some(SeenRecords {
                tenant: observation.tenant.as_str(),
                evidence,
                seen_at: observation.started_at,
            }),
            Evidence::Dns(_)
            | Evidence::SmtpRcpt(_)
            | Evidence::Http(_)
            | Evidence::Mailflow(_)
            | Evidence::None => None,
        })
        .collect();
    dns_snapshots::upsert_many(conn, &dns_seen).await?;

    outcome.stored += to_store.len();
    outcome.sampled_out += steps.len() - to_store.len();
    outcome.state_changes += steps.iter().filter(|(_, step)| step.state_change).count();
    for (key, update) in chunk.keys.iter().zip(&updates) {
        touched.insert(key.clone(), update.next);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
