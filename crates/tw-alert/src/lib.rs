//! The alert evaluator: one observation and the stored state of its (tenant, check, target) in,
//! the next state and the alert events to commit to the outbox out.
//!
//! Pure on purpose (ARCHITECTURE.md, "tw-alert"): no IO, no clock, no randomness. `now` is a
//! parameter, so the same (state, observation, rules, now) always gives the same result, the
//! table tests in `tests.rs` can drive months of probing in microseconds, and the recorder can
//! replay observations after a restart without re-sending anything (see [`evaluate`]).
//!
//! The decisions follow the design brief's Verdicts section: `unknown` is never critical, a
//! transient fault never pages, and a prolonged `unknown` is its own lower "probe blind" alert.
//! How each rule is implemented, and why, is written down on [`evaluate`].

mod state;

pub mod agreement;
pub mod render;

use std::time::Duration;

use tw_core::{CheckKind, Reason, Status, Timestamp};

pub use state::{evaluate, AlertState, Page, STATE_VERSION};

/// How eagerly an alert fires, repeats and resolves. One set per evaluation; the daemon builds
/// it from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Consecutive non-ok verdicts (unknowns skipped) needed before an alert fires. 0 acts as 1.
    pub confirm: u32,
    /// Consecutive ok verdicts (unknowns skipped) needed before a firing alert resolves. 0 acts
    /// as 1.
    pub recover: u32,
    /// A firing alert is re-sent this often; also the flapping window: per key at most one
    /// alert opening and one closing message are sent per window (see [`evaluate`]).
    pub repeat_interval: Duration,
    /// An unbroken run of `unknown` verdicts this long raises "probe blind".
    pub blind_after: Duration,
}

impl Rules {
    /// The defaults from the issue: confirm 2, recover 1, repeat every 4 h, blind after 30 min.
    pub fn defaults() -> Rules {
        Rules {
            confirm: 2,
            recover: 1,
            repeat_interval: Duration::from_secs(4 * 3600),
            blind_after: Duration::from_secs(30 * 60),
        }
    }
}

impl Default for Rules {
    fn default() -> Rules {
        Rules::defaults()
    }
}

/// What an event tells its receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A confirmed problem, or a firing warning that became critical.
    Firing,
    /// Still firing, `repeat_interval` after the last message about it.
    Repeat,
    /// The problem is gone (`recover` ok verdicts in a row).
    Resolved,
    /// The probe has not been able to tell for `blind_after`.
    Blind,
    /// The probe can tell again.
    BlindResolved,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Firing => "firing",
            EventKind::Repeat => "repeat",
            EventKind::Resolved => "resolved",
            EventKind::Blind => "blind",
            EventKind::BlindResolved => "blind_resolved",
        }
    }
}

/// How loud an event is; routes match on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Warning,
    /// "Probe blind": lower than a warning, because nothing is known to be broken.
    Blind,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Blind => "blind",
        }
    }
}

/// One message-worthy transition of one (tenant, check, target), ready for the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub kind: EventKind,
    /// Firing, Repeat and Resolved carry the firing episode's severity (so a resolution takes
    /// the route its alert took); Blind and BlindResolved carry [`Severity::Blind`].
    pub severity: Severity,
    pub tenant: String,
    pub check: CheckKind,
    pub target: String,
    /// The verdict the event is about. For Firing and Repeat this is the latest non-ok verdict,
    /// even when the observation that triggered the event was `unknown` (the summary then says
    /// so); for Resolved the ok verdict; for Blind the unknown one; for BlindResolved the first
    /// verdict the probe could give again.
    pub status: Status,
    pub reason: Reason,
    /// The specifics (the reply that decided it), with a note in parentheses where the event
    /// needs one: a stale verdict, an escalation, changes not notified while flapping.
    pub summary: String,
    /// When the condition began: the first non-ok verdict of the firing episode, or the first
    /// unknown of the blind streak.
    pub since: Timestamp,
    /// The `started_at` of the observation that caused the event.
    pub at: Timestamp,
    /// Numbers the alert episodes of this key; firing and blind episodes share the counter, so
    /// an episode number names one alert of this key.
    pub episode: u64,
    /// `tenant/check/target/episode/transition`, e.g. `contoso/smtp_rcpt/admin@contoso.com/7/firing`
    /// or `…/7/repeat/3`: unique per key and transition, and the same when an evaluation is
    /// replayed, so receivers and the outbox can drop duplicates. `/` and `%` in the parts are
    /// percent-encoded so the key cannot be ambiguous.
    pub dedup_key: String,
}

/// The last segment(s) of a dedup key, one per transition; `render` reads them back.
pub(crate) mod transition {
    pub(crate) const FIRING: &str = "firing";
    pub(crate) const ESCALATED: &str = "escalated";
    pub(crate) const REPEAT: &str = "repeat";
    pub(crate) const RESOLVED: &str = "resolved";
    pub(crate) const BLIND: &str = "blind";
    pub(crate) const BLIND_RESOLVED: &str = "blind_resolved";
}

#[cfg(test)]
mod tests;
