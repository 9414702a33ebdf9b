//! The vocabulary every tenantwatch stage speaks, and config parsing.
//!
//! This crate does no IO and knows nothing of tokio: the binary reads the config file and
//! hands `&str` to [`config::parse`]; probes produce [`Observation`]s; the store, the metrics
//! and (later) the alert evaluator consume them. Keeping it pure is what lets every other
//! crate agree on the same types without agreeing on a runtime.

mod names;
mod observation;
mod secret;
mod time;

pub mod config;

pub use names::{CheckKind, DomainName, EmailAddress, NameError, TenantName};
pub use observation::{
    ArrivalEvidence, Direction, DnsEvidence, DnsFinding, DsnEvidence, Evidence, HttpEvidence,
    HttpExchange, MailflowEvidence, Observation, RcptVerdict, Reason, RecordSet, SmtpEvidence,
    Status, TlsEvidence, TranscriptLine, EVIDENCE_VERSION, REMEMBERED_FACTS,
};
pub use secret::Secret;
pub use time::Timestamp;
