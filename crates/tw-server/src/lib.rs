//! Everything a scraper or a browser sees: `/metrics`, `/healthz`, `/readyz`.
//!
//! Architecture invariant: this crate never starts probes and never writes SQL; it is the
//! only crate that knows the Prometheus metric names (all defined in `metrics.rs`).

mod health;
mod metrics;
mod router;

pub use health::Health;
pub use metrics::{Metrics, StoreResult, TargetKey};
pub use router::{router, serve, ServerState};
