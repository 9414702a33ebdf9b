//! Loopback simulators for the servers tenantwatch probes: an SMTP server that answers like
//! Exchange Online Protection, and a small authoritative DNS server, each scriptable with faults.
//!
//! The simulators are written from `shared/reference/m365-facts.md` §4 and share no code with
//! `tw-probe`, so that a misreading of the protocol cannot hide in both the probe and its fake.
//! Every listener binds `127.0.0.1` only: a test fixture must never be reachable from outside.

pub mod dns;
pub mod entra;
pub mod sink;
pub mod smtp;
pub mod tls;

pub use tls::SimError;
