//! The per-key alert state and [`evaluate`], the one function that advances it.
//!
//! The state keeps two pictures apart on purpose: *reality* (is the problem confirmed, is the
//! probe blind, as of the latest observation) and *what receivers were told* (the episode they
//! last heard about and when). Flapping is where they differ: reality follows every verdict,
//! while messages are rationed per `repeat_interval`, and a later message closes the gap. The
//! state is stored as JSON by tw-store, so every field has a serde default, empty values are
//! not written, and unknown fields are ignored: an older or newer daemon can read it.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use tw_core::{Observation, Reason, Status, Timestamp};

use crate::{transition, AlertEvent, EventKind, Rules, Severity};

/// Written into every state [`evaluate`] returns; bump it when a field changes meaning, so a
/// reader can tell which meaning a stored state has.
pub const STATE_VERSION: u32 = 1;

/// Stored summaries are clipped to this many characters: the state is rewritten on every
/// observation and must stay small; the full text lives with the observation.
const STORED_SUMMARY_CHARS: usize = 300;

/// Everything the evaluator remembers about one (tenant, check, target). Opaque on purpose:
/// only [`evaluate`] changes it, and the accessors answer what the CLI and API need.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertState {
    /// [`STATE_VERSION`] of the evaluator that wrote this state; 0 for a state never evaluated.
    #[serde(skip_serializing_if = "is_zero_u32")]
    v: u32,
    /// `started_at` of the latest observation taken into account; older or equal ones are
    /// replays and are ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<Timestamp>,
    /// Episodes numbered so far (firing and blind share the counter).
    #[serde(skip_serializing_if = "is_zero_u64")]
    episodes: u64,

    // Reality: confirmation and recovery.
    /// Non-ok verdicts in a row, unknowns skipped.
    #[serde(skip_serializing_if = "is_zero_u32")]
    bad_streak: u32,
    /// First non-ok verdict of that run.
    #[serde(skip_serializing_if = "Option::is_none")]
    bad_since: Option<Timestamp>,
    /// Ok verdicts in a row while firing, unknowns skipped.
    #[serde(skip_serializing_if = "is_zero_u32")]
    ok_streak: u32,
    /// The latest non-ok verdict, so a repeat sent on an `unknown` still says what is wrong.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_bad: Option<Verdict>,
    /// The confirmed problem, until `recover` ok verdicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    firing: Option<Firing>,

    // What receivers were told about the problem.
    /// The firing episode receivers last heard about and have not been told is resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    told: Option<Told>,
    /// When the latest Firing message went out, and whether it was critical: the flapping
    /// window for openings.
    #[serde(skip_serializing_if = "Option::is_none")]
    fired_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "is_false")]
    fired_critical: bool,
    /// When the latest Resolved message went out: the flapping window for closings.
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved_at: Option<Timestamp>,
    /// Firing/resolution changes of reality not notified since the latest message, reported in
    /// the next one so a rationed message still tells the whole truth.
    #[serde(skip_serializing_if = "is_zero_u32")]
    unnotified: u32,

    // Reality and messages for "probe blind".
    /// First unknown verdict of the current unbroken run of unknowns.
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown_since: Option<Timestamp>,
    /// The run of unknowns had lasted `blind_after` at the latest observation.
    #[serde(skip_serializing_if = "is_false")]
    blind: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    blind_told: Option<BlindTold>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blind_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blind_resolved_at: Option<Timestamp>,
}

/// A critical episode as receivers were paged about it ([`AlertState::critical_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub episode: u64,
    /// The first non-ok verdict of the episode.
    pub since: Timestamp,
    /// When the critical Firing message went out (evaluation time).
    pub paged_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Verdict {
    #[serde(default)]
    critical: bool,
    /// `Reason::as_str()`; a label, not the enum, so a removed reason cannot make the whole
    /// state unreadable.
    #[serde(default)]
    reason: String,
    #[serde(default)]
    summary: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Firing {
    since: Timestamp,
    /// Once critical, critical until the episode ends: a warning after a critical does not
    /// mean it got better, and de-escalation messages would be noise.
    #[serde(default)]
    critical: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Told {
    episode: u64,
    since: Timestamp,
    #[serde(default)]
    critical: bool,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    repeats: u32,
    /// The latest Firing or Repeat for this episode; the repeat timer runs from here.
    notified_at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct BlindTold {
    episode: u64,
    since: Timestamp,
}

fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl AlertState {
    /// A problem is confirmed and has not recovered. This is reality, which is what the CLI
    /// and status page show; while flapping it can differ from what was last sent (see
    /// [`AlertState::notified_episode`]).
    pub fn is_firing(&self) -> bool {
        self.firing.is_some()
    }

    /// The first non-ok verdict of the confirmed problem.
    pub fn firing_since(&self) -> Option<Timestamp> {
        self.firing.map(|firing| firing.since)
    }

    /// The severity of the confirmed problem.
    pub fn severity(&self) -> Option<Severity> {
        self.firing.map(|firing| severity_of(firing.critical))
    }

    /// The probe has answered only `unknown` for at least `blind_after`, as of the latest
    /// observation.
    pub fn is_blind(&self) -> bool {
        self.blind
    }

    /// The first unknown of the blind run, while blind.
    pub fn blind_since(&self) -> Option<Timestamp> {
        self.unknown_since.filter(|_| self.blind)
    }

    /// Non-ok verdicts seen but not (yet) confirmed: the "pending" alerts of `tenantwatch alerts`.
    pub fn is_pending(&self) -> bool {
        self.firing.is_none() && self.bad_streak > 0
    }

    /// The first non-ok verdict of a pending run.
    pub fn pending_since(&self) -> Option<Timestamp> {
        self.bad_since.filter(|_| self.is_pending())
    }

    /// The firing episode receivers were last told about and not yet told is resolved; an
    /// acknowledgement belongs to this episode.
    pub fn notified_episode(&self) -> Option<u64> {
        self.told.map(|told| told.episode)
    }

    /// The `started_at` of the latest observation evaluated.
    pub fn last_seen(&self) -> Option<Timestamp> {
        self.last_seen
    }

    /// The episode receivers were told is critical and not yet told is resolved, with when it
    /// began and when its critical Firing message went out (the first one, or the escalation
    /// from warning): where an escalation timer starts. `None` while nothing critical is
    /// being told, a warning episode included.
    pub fn critical_page(&self) -> Option<Page> {
        let told = self.told.filter(|told| told.critical)?;
        Some(Page {
            episode: told.episode,
            since: told.since,
            paged_at: self.fired_at?,
        })
    }

    /// The latest non-ok verdict (confirmed or not, resolved or not): whether it was
    /// critical, its reason label and its summary (clipped), for a message built from the
    /// state rather than from an observation.
    pub fn last_problem(&self) -> Option<(bool, &str, &str)> {
        self.last_bad.as_ref().map(|verdict| {
            (
                verdict.critical,
                verdict.reason.as_str(),
                verdict.summary.as_str(),
            )
        })
    }

    /// What this target's check currently says is wrong: the reason label of the latest
    /// non-ok verdict while no ok verdict has followed it (unknowns skipped), confirmed or
    /// not. Another layer's alert uses it to tell whether two checks agree.
    pub fn current_problem(&self) -> Option<&str> {
        if self.bad_streak == 0 {
            return None;
        }
        self.last_bad
            .as_ref()
            .map(|verdict| verdict.reason.as_str())
    }
}

/// Advance one key's alert state by one observation and return the events to send.
///
/// Pure and deterministic: the same inputs always give the same outputs. `now` is the caller's
/// wall clock at evaluation; every timer (repeat, blind, flapping window) compares against it,
/// never against the system clock. A `now` earlier than a recorded message counts as no time
/// passed, so a clock stepped back delays a repeat rather than sending an extra one.
///
/// Rules, in the order they apply:
///
/// - **Ignored observations.** `Reason::Shutdown` (a probe cut short by our own shutdown says
///   nothing about the target) and observations whose `started_at` is not later than the last
///   one evaluated return the state unchanged and no events. "Not later" includes equal, so
///   evaluating the same observation twice is a no-op, and with the deterministic dedup keys a
///   replay after a restart can neither re-fire nor double-count.
/// - **Confirmation.** An alert fires after `confirm` non-ok (warning or critical) verdicts in
///   a row; an ok verdict resets the count. Unknown verdicts are transparent: they neither
///   advance nor reset a pending confirmation (`C U C` confirms with `confirm = 2`), because a
///   failed look is no evidence either way and a flaky probe must not hide a real outage. The
///   severity is that of the latest confirming verdict: it is what the target looks like now.
/// - **Escalation.** A critical verdict while a warning episode is firing sends a new Firing
///   (critical, same episode, its own dedup key), at once and at most once per episode,
///   because severity never goes down within an episode.
/// - **Repeat.** While firing, a Repeat goes out when `now - last message >= repeat_interval`,
///   checked on every non-ok or unknown observation. An unknown does not end or pause a firing
///   alert; the Repeat then carries the last non-ok verdict and says the latest check could not
///   tell. Nothing is paged on an ok verdict (with `recover > 1` it may be the start of the
///   recovery), so a Repeat due at an ok waits for the next non-ok or unknown one.
/// - **Recovery.** `recover` ok verdicts in a row (unknowns skipped, non-ok resets) resolve the
///   alert; Resolved carries the episode's `since` and severity.
/// - **Probe blind.** When an unbroken run of unknowns has lasted `blind_after` (measured from
///   its first unknown to `now`), Blind is sent once. The next non-unknown verdict, whatever it
///   is, sends BlindResolved. Blind and firing are independent: a firing alert that goes blind
///   keeps firing, and a blind key can still fire on the verdicts before the blindness.
/// - **Flapping.** Per key, at most one opening and one closing message per `repeat_interval`:
///   a Firing goes out only if the previous Firing is at least `repeat_interval` old, a
///   Resolved only if the previous Resolved is, and the same for Blind and BlindResolved.
///   The one exception is severity: a critical is never held back by an earlier *warning*
///   Firing (an identity vanishing right after an SPF warning flapped must still page), so a
///   window can hold one warning and one critical Firing. Reality keeps following every
///   verdict meanwhile. A held-back change is sent when its window opens, if reality still
///   differs from what receivers were told: a held-back Firing goes out as a new episode (a
///   Firing, not a Repeat, because receivers were told the previous one resolved) on the first
///   non-ok or unknown observation once `repeat_interval` has passed since the previous Firing;
///   a held-back Resolved goes out on the first ok once `repeat_interval` has passed since the
///   previous Resolved. If reality returns to what receivers were told before the window
///   opens, nothing is sent. A message sent after held-back changes says how many there were.
///   Example, `confirm = recover = 1`, one verdict per 5 minutes, `C O C O …` for hours: Firing
///   at 0:00, Resolved at 0:05, then silence until 4:00, where a critical sends Firing (new
///   episode) and the ok at 4:05 Resolved; when it ends on `… C C C`, the Firing at the first
///   non-ok from 4:00 on tells the truth, and when it ends on `… O O O`, nothing more is sent.
///
/// Within one evaluation events come in this order: BlindResolved, then the firing alert's
/// event (at most one), then Blind.
pub fn evaluate(
    state: &AlertState,
    observation: &Observation,
    rules: &Rules,
    now: Timestamp,
) -> (AlertState, Vec<AlertEvent>) {
    if observation.reason == Reason::Shutdown
        || state
            .last_seen
            .is_some_and(|seen| observation.started_at <= seen)
    {
        return (state.clone(), Vec::new());
    }

    let mut next = state.clone();
    next.v = STATE_VERSION;
    next.last_seen = Some(observation.started_at);
    let was_firing = next.firing.is_some();
    next.follow(observation, rules, now);

    let at = At {
        observation,
        now,
        window: millis(rules.repeat_interval),
    };
    let mut events = Vec::new();
    events.extend(next.close_blind(&at));
    match next.notify_firing(&at) {
        Some(event) => events.push(event),
        None if was_firing != next.firing.is_some() => {
            next.unnotified = next.unnotified.saturating_add(1);
        }
        None => {}
    }
    events.extend(next.open_blind(&at));
    (next, events)
}

/// The observation being evaluated and the clock, passed together to the message steps.
struct At<'a> {
    observation: &'a Observation,
    now: Timestamp,
    /// `repeat_interval` in milliseconds.
    window: u64,
}

impl At<'_> {
    /// Whether a message last sent at `last` may be sent again now.
    fn window_over(&self, last: Option<Timestamp>) -> bool {
        last.is_none_or(|last| self.now.millis_since(last) >= self.window)
    }
}

impl AlertState {
    /// Update reality from one verdict.
    fn follow(&mut self, observation: &Observation, rules: &Rules, now: Timestamp) {
        match observation.status {
            Status::Ok => {
                self.bad_streak = 0;
                self.bad_since = None;
                self.unknown_since = None;
                self.blind = false;
                if self.firing.is_some() {
                    self.ok_streak = self.ok_streak.saturating_add(1);
                    if self.ok_streak >= rules.recover.max(1) {
                        self.firing = None;
                        self.ok_streak = 0;
                    }
                }
            }
            Status::Warning | Status::Critical => {
                let critical = observation.status == Status::Critical;
                self.ok_streak = 0;
                self.unknown_since = None;
                self.blind = false;
                self.bad_streak = self.bad_streak.saturating_add(1);
                let since = *self.bad_since.get_or_insert(observation.started_at);
                self.last_bad = Some(Verdict {
                    critical,
                    reason: observation.reason.as_str().to_owned(),
                    summary: observation
                        .summary
                        .chars()
                        .take(STORED_SUMMARY_CHARS)
                        .collect(),
                });
                match &mut self.firing {
                    Some(firing) => firing.critical |= critical,
                    None if self.bad_streak >= rules.confirm.max(1) => {
                        self.firing = Some(Firing { since, critical });
                    }
                    None => {}
                }
            }
            Status::Unknown => {
                let since = *self.unknown_since.get_or_insert(observation.started_at);
                if now.millis_since(since) >= millis(rules.blind_after) {
                    self.blind = true;
                }
            }
        }
    }

    /// The Firing, Repeat or Resolved message that brings receivers in line with reality, if
    /// one is due and allowed now.
    fn notify_firing(&mut self, at: &At<'_>) -> Option<AlertEvent> {
        let is_ok = at.observation.status == Status::Ok;
        match (self.firing, self.told) {
            (Some(real), None) => {
                let exempt = real.critical && !self.fired_critical;
                if is_ok || !(exempt || at.window_over(self.fired_at)) {
                    return None;
                }
                self.episodes = self.episodes.saturating_add(1);
                let told = Told {
                    episode: self.episodes,
                    since: real.since,
                    critical: real.critical,
                    repeats: 0,
                    notified_at: at.now,
                };
                self.told = Some(told);
                self.fired_at = Some(at.now);
                self.fired_critical = real.critical;
                Some(self.firing_event(at, EventKind::Firing, told, transition::FIRING, None))
            }
            (Some(real), Some(mut told)) => {
                if is_ok {
                    return None;
                }
                let (kind, name, note) = if real.critical && !told.critical {
                    told.critical = true;
                    self.fired_at = Some(at.now);
                    self.fired_critical = true;
                    (
                        EventKind::Firing,
                        transition::ESCALATED,
                        Some("escalated from warning".to_owned()),
                    )
                } else if at.now.millis_since(told.notified_at) >= at.window {
                    told.repeats = told.repeats.saturating_add(1);
                    (EventKind::Repeat, transition::REPEAT, None)
                } else {
                    return None;
                };
                told.notified_at = at.now;
                self.told = Some(told);
                let repeat = (kind == EventKind::Repeat).then_some(told.repeats);
                let mut event = self.firing_event(at, kind, told, name, repeat);
                if let Some(note) = note {
                    event.summary = format!("{} ({note})", event.summary);
                }
                Some(event)
            }
            (None, Some(told)) => {
                if !is_ok || !at.window_over(self.resolved_at) {
                    return None;
                }
                self.told = None;
                self.resolved_at = Some(at.now);
                let observation = at.observation;
                let summary = self.with_unnotified(observation.summary.clone());
                Some(AlertEvent {
                    kind: EventKind::Resolved,
                    severity: severity_of(told.critical),
                    status: observation.status,
                    reason: observation.reason,
                    summary,
                    ..base_event(
                        observation,
                        told.episode,
                        transition::RESOLVED,
                        None,
                        told.since,
                    )
                })
            }
            (None, None) => None,
        }
    }

    /// A Firing or Repeat event for `told`, carrying the latest non-ok verdict.
    fn firing_event(
        &mut self,
        at: &At<'_>,
        kind: EventKind,
        told: Told,
        name: &str,
        repeat: Option<u32>,
    ) -> AlertEvent {
        let observation = at.observation;
        let (status, reason, summary) = match (observation.status, &self.last_bad) {
            (Status::Warning | Status::Critical, _) | (_, None) => (
                observation.status,
                observation.reason,
                observation.summary.clone(),
            ),
            (_, Some(last)) => (
                if last.critical {
                    Status::Critical
                } else {
                    Status::Warning
                },
                Reason::parse(&last.reason).unwrap_or(observation.reason),
                format!(
                    "{} (latest check {}: {})",
                    last.summary, observation.status, observation.reason
                ),
            ),
        };
        let summary = self.with_unnotified(summary);
        AlertEvent {
            kind,
            severity: severity_of(told.critical),
            status,
            reason,
            summary,
            ..base_event(observation, told.episode, name, repeat, told.since)
        }
    }

    /// Append the count of held-back changes, and start counting afresh: this message is the
    /// one that reports them.
    fn with_unnotified(&mut self, summary: String) -> String {
        match std::mem::take(&mut self.unnotified) {
            0 => summary,
            1 => format!("{summary} (flapping: 1 change not notified)"),
            n => format!("{summary} (flapping: {n} changes not notified)"),
        }
    }

    fn close_blind(&mut self, at: &At<'_>) -> Option<AlertEvent> {
        let observation = at.observation;
        if observation.status == Status::Unknown || !at.window_over(self.blind_resolved_at) {
            return None;
        }
        let told = self.blind_told.take()?;
        self.blind_resolved_at = Some(at.now);
        Some(AlertEvent {
            kind: EventKind::BlindResolved,
            ..base_event(
                observation,
                told.episode,
                transition::BLIND_RESOLVED,
                None,
                told.since,
            )
        })
    }

    fn open_blind(&mut self, at: &At<'_>) -> Option<AlertEvent> {
        if !self.blind || self.blind_told.is_some() || !at.window_over(self.blind_at) {
            return None;
        }
        let since = self.unknown_since?;
        self.episodes = self.episodes.saturating_add(1);
        self.blind_told = Some(BlindTold {
            episode: self.episodes,
            since,
        });
        self.blind_at = Some(at.now);
        Some(AlertEvent {
            kind: EventKind::Blind,
            ..base_event(
                at.observation,
                self.episodes,
                transition::BLIND,
                None,
                since,
            )
        })
    }
}

/// An event about `observation` with its own verdict and the Blind severity; callers override
/// what differs.
fn base_event(
    observation: &Observation,
    episode: u64,
    name: &str,
    repeat: Option<u32>,
    since: Timestamp,
) -> AlertEvent {
    let tenant = observation.tenant.as_str();
    let check = observation.check.as_str();
    let mut dedup_key = format!(
        "{}/{}/{}/{episode}/{name}",
        escape(tenant),
        escape(check),
        escape(&observation.target)
    );
    if let Some(n) = repeat {
        // Writing to a String cannot fail.
        let _ = write!(dedup_key, "/{n}");
    }
    AlertEvent {
        kind: EventKind::Blind,
        severity: Severity::Blind,
        tenant: tenant.to_owned(),
        check: observation.check,
        target: observation.target.clone(),
        status: observation.status,
        reason: observation.reason,
        summary: observation.summary.clone(),
        since,
        at: observation.started_at,
        episode,
        dedup_key,
    }
}

/// Percent-encode the key separator (and the escape character itself), so `a/b@x` as a target
/// cannot produce the same key as another target and episode.
fn escape(part: &str) -> String {
    part.replace('%', "%25").replace('/', "%2F")
}

fn severity_of(critical: bool) -> Severity {
    if critical {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
