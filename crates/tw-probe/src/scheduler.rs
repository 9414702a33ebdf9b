//! The scheduler: one task that starts every job at its interval, spread evenly across it.
//!
//! A heap of `(due, job)` and a sleep until the earliest (mini-redis's expiry task shape).
//! Each job's first run is at a phase offset derived from its key, so a restart or a fleet of
//! 10,000 tenants never starts in a herd. A job still running when it falls due again is
//! skipped and counted, and a stalled scheduler skips missed runs instead of bursting them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tw_core::{Observation, Timestamp};

use crate::clients::Clients;
use crate::job::{run_job, shutdown_observations, Job, ProbeMemory};

/// What to run and with which clients; replaced as a whole on reload.
pub struct Plan {
    pub jobs: Vec<Job>,
    pub clients: Arc<Clients>,
}

/// Counters the scheduler keeps for the metrics stage to read.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    /// Runs started.
    pub started: AtomicU64,
    /// Runs not started because the previous run of the job was still going, or because the
    /// scheduler fell more than an interval behind.
    pub skipped: AtomicU64,
    /// Jobs in the current plan.
    pub jobs: AtomicU64,
    /// Times a new plan was taken.
    pub reloads: AtomicU64,
}

struct Entry {
    job: Arc<Job>,
    due: Instant,
    running: Arc<AtomicBool>,
}

pub struct Scheduler {
    pub stats: Arc<SchedulerStats>,
    pub memory: Arc<ProbeMemory>,
    pub max_concurrent: usize,
    /// How long an in-flight probe may continue after shutdown before it reports `shutdown`.
    pub drain: Duration,
}

impl Scheduler {
    /// Runs until `shutdown` is cancelled. Returns once every probe it started has sent its
    /// observations; the `observations` sender (and its clones) are then dropped, which is
    /// how the recorder learns the stream has ended.
    pub async fn run(
        self,
        plan: Plan,
        mut reloads: mpsc::Receiver<Plan>,
        observations: mpsc::Sender<Observation>,
        shutdown: CancellationToken,
    ) {
        let permits = Arc::new(Semaphore::new(self.max_concurrent.max(1)));
        let probes = TaskTracker::new();
        let mut clients = plan.clients.clone();
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut heap: BinaryHeap<Reverse<(Instant, String)>> = BinaryHeap::new();
        self.replace_plan(
            plan,
            &mut entries,
            &mut heap,
            Instant::now(),
            Timestamp::now(),
        );
        let mut reloads_open = true;

        loop {
            let next_due = heap.peek().map(|Reverse((due, _))| *due);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                new_plan = reloads.recv(), if reloads_open => match new_plan {
                    Some(new_plan) => {
                        clients = new_plan.clients.clone();
                        self.replace_plan(new_plan, &mut entries, &mut heap, Instant::now(), Timestamp::now());
                        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                    }
                    None => reloads_open = false,
                },
                _ = sleep_until_opt(next_due) => {
                    let now = Instant::now();
                    while let Some(Reverse((due, key))) = heap.peek().cloned() {
                        if due > now {
                            break;
                        }
                        heap.pop();
                        let Some(entry) = entries.get_mut(&key) else { continue };
                        if entry.due != due {
                            continue; // stale heap entry left by a reload
                        }
                        if entry.running.swap(true, Ordering::AcqRel) {
                            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        } else {
                            self.stats.started.fetch_add(1, Ordering::Relaxed);
                            let scheduled_for = Timestamp::now().minus(now.saturating_duration_since(due));
                            probes.spawn(probe_task(
                                entry.job.clone(),
                                clients.clone(),
                                self.memory.clone(),
                                permits.clone(),
                                entry.running.clone(),
                                observations.clone(),
                                shutdown.clone(),
                                self.drain,
                                scheduled_for,
                            ));
                        }
                        let mut next = due + entry.job.interval;
                        while next <= now {
                            // Fell behind by more than an interval: skip, never burst.
                            next += entry.job.interval;
                            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                        }
                        entry.due = next;
                        heap.push(Reverse((next, key)));
                    }
                }
            }
        }

        drop(observations);
        probes.close();
        probes.wait().await;
    }

    /// Swaps in a new job list. Jobs that survive a reload unchanged keep their due time and
    /// running flag; new or changed ones get a fresh phase offset.
    fn replace_plan(
        &self,
        plan: Plan,
        entries: &mut HashMap<String, Entry>,
        heap: &mut BinaryHeap<Reverse<(Instant, String)>>,
        now: Instant,
        wall_now: Timestamp,
    ) {
        let mut next_entries = HashMap::with_capacity(plan.jobs.len());
        for job in plan.jobs {
            let key = job.key();
            let entry = match entries.remove(&key) {
                Some(old) if old.job.interval == job.interval => Entry {
                    job: Arc::new(job),
                    due: old.due,
                    running: old.running,
                },
                Some(old) => Entry {
                    due: now + first_run_delay(&key, job.interval, wall_now),
                    job: Arc::new(job),
                    running: old.running,
                },
                None => Entry {
                    due: now + first_run_delay(&key, job.interval, wall_now),
                    job: Arc::new(job),
                    running: Arc::new(AtomicBool::new(false)),
                },
            };
            next_entries.insert(key, entry);
        }
        *entries = next_entries;
        heap.clear();
        heap.extend(
            entries
                .iter()
                .map(|(key, entry)| Reverse((entry.due, key.clone()))),
        );
        self.stats
            .jobs
            .store(entries.len() as u64, Ordering::Relaxed);
    }
}

#[allow(clippy::too_many_arguments)]
async fn probe_task(
    job: Arc<Job>,
    clients: Arc<Clients>,
    memory: Arc<ProbeMemory>,
    permits: Arc<Semaphore>,
    running: Arc<AtomicBool>,
    observations: mpsc::Sender<Observation>,
    shutdown: CancellationToken,
    drain: Duration,
    scheduled_for: Timestamp,
) {
    // Cleared however the task ends: a probe that panics (a bug) must not leave its job
    // marked running, which would skip it silently until restart.
    let _running = ClearOnDrop(running);
    let permit = tokio::select! {
        permit = permits.acquire_owned() => permit.ok(),
        // Not started yet, so nothing is in flight to report.
        _ = shutdown.cancelled() => None,
    };
    if permit.is_some() {
        let started_at = Timestamp::now();
        let start = Instant::now();
        let results = tokio::select! {
            results = run_job(&job, &clients, &memory, scheduled_for) => results,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(drain).await } => {
                shutdown_observations(&job, scheduled_for, started_at, start.elapsed())
            }
        };
        for observation in results {
            // Bounded queue: when the recorder is behind, probes wait here (back-pressure).
            if observations.send(observation).await.is_err() {
                break;
            }
        }
    }
}

/// Clears a job's running flag when dropped (at the end of its task, or while unwinding).
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// How long after `wall_now` a job's first run is due: the next wall-clock instant whose
/// position within the interval equals the job's phase offset. Anchoring the phase to the
/// wall clock (not to process start) keeps each job in its slot across restarts, so a
/// restart never probes a domain twice in quick succession.
pub fn first_run_delay(key: &str, interval: Duration, wall_now: Timestamp) -> Duration {
    let interval_ms = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let offset_ms = u64::try_from(phase_offset(key, interval).as_millis()).unwrap_or(0);
    let into_interval = u64::try_from(wall_now.as_millis()).unwrap_or(0) % interval_ms;
    Duration::from_millis((offset_ms + interval_ms - into_interval) % interval_ms)
}

/// A stable offset in `[0, interval)` from the job key (FNV-1a), so jobs spread evenly over
/// the interval.
pub fn phase_offset(key: &str, interval: Duration) -> Duration {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let millis = u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    Duration::from_millis(hash % millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_runs_land_on_the_same_wall_clock_slot_whatever_the_start_time() {
        let interval = Duration::from_secs(300);
        let key = "contoso/smtp_rcpt/contoso.com";
        let offset = phase_offset(key, interval).as_millis() as i64;
        for start in [0i64, 1, 123_456, 299_999, 1_795_000_000_000] {
            let delay = first_run_delay(key, interval, Timestamp(start));
            assert!(delay < interval);
            let due = start + delay.as_millis() as i64;
            assert_eq!(due % 300_000, offset, "start {start}");
        }
    }

    #[test]
    fn phase_offsets_are_stable_and_spread_over_the_interval() {
        let interval = Duration::from_secs(300);
        assert_eq!(
            phase_offset("contoso/dns/contoso.com", interval),
            phase_offset("contoso/dns/contoso.com", interval)
        );
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let offset = phase_offset(&format!("tenant{i}/smtp_rcpt/tenant{i}.example"), interval);
            assert!(offset < interval);
            buckets[(offset.as_millis() * 10 / interval.as_millis()) as usize] += 1;
        }
        // Each tenth of the interval gets about a tenth of the jobs: no herd.
        for count in buckets {
            assert!((800..1200).contains(&count), "{buckets:?}");
        }
    }
}
