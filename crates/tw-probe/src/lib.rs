//! Deciding when probes run, and running them: target and clients in, observations out.
//! The DNS and SMTP probes live here; the HTTP ones (Entra ID, Graph, RDAP) in `tw-entra`,
//! which `entra.rs` calls.
//!
//! Architecture invariant: nothing here touches the store, metrics or alerting. A probe never
//! returns an error for what the target did (that is an `unknown` observation), never panics
//! on input, and does every network wait under the deadline its job carries.

pub mod clients;
pub mod dns;
mod entra;
mod job;
pub mod scheduler;
pub mod smtp_rcpt;

pub use clients::{ClientBuildError, Clients};
pub use job::{plan, run_job, shutdown_observations, Job, ProbeMemory, Subject, TenantContext};
pub use scheduler::{Plan, Scheduler, SchedulerStats};
