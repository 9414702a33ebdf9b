//! Everything a scraper or a browser sees: `/metrics`, `/healthz`, `/readyz`, the status page
//! (`/`, `/tenants/{tenant}`) and the read-only JSON API under `/api/v1/`.
//!
//! Architecture invariant: this crate never starts probes and never writes SQL; it reads the
//! store only through tw-store's query functions, and it is the only crate that knows the
//! Prometheus metric names (all defined in `metrics.rs`).

mod api;
mod api_write;
mod auth;
mod evidence;
mod health;
mod html;
mod metrics;
mod overview;
mod router;
mod status_page;
mod target_series;

pub use auth::{Access, ApiAuth, Denied, TokenError};
pub use health::Health;
pub use metrics::{Metrics, StoreResult, TargetKey};
pub use router::{router, serve, ServerState};

/// An error and its sources on one line, for logs.
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
