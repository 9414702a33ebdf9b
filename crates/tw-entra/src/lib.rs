//! The HTTP probes: Entra ID (OpenID discovery, user realm, client-credentials token),
//! Microsoft Graph and RDAP. Stage: probe. Each check gets a target, clients and a deadline
//! and returns an outcome (reason, summary, [`tw_core::HttpEvidence`]); nothing here writes
//! to the store, touches metrics or alerts.
//!
//! Every request goes through [`http::exchange`], which records it as evidence with the
//! identifiers Microsoft support asks for, and maps transport faults to `unknown` reasons.
//! Credentials (client secret, private key, access tokens) are [`tw_core::Secret`]s and never
//! reach evidence, logs or error text.

pub mod aadsts;
pub mod credentials;
pub mod discovery;
pub mod fuzzing;
pub mod graph;
pub mod http;
pub mod rdap;
pub mod realm;
pub mod signin;
pub mod token;

use tw_core::{HttpEvidence, Reason};

/// What one HTTP check concluded about one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The observation target: a domain, a watched address, or the tenant name.
    pub target: String,
    pub reason: Reason,
    /// One human line with the specifics (the code, the date, the count).
    pub summary: String,
    pub evidence: HttpEvidence,
}
