//! Liveness and readiness facts, set by the stages that know them and read by `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

/// Readiness means: migrations applied, the scheduler running, the store writable, and not
/// shutting down. Each stage flips its own flag.
#[derive(Debug, Default)]
pub struct Health {
    migrated: AtomicBool,
    scheduling: AtomicBool,
    stopping: AtomicBool,
    store_error: Mutex<Option<String>>,
}

impl Health {
    pub fn set_migrated(&self) {
        self.migrated.store(true, Ordering::Release);
    }

    pub fn set_scheduling(&self) {
        self.scheduling.store(true, Ordering::Release);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// `None` once a write succeeds again; the text is our own error summary, never a secret.
    pub fn set_store_error(&self, error: Option<String>) {
        *self.store_error.lock() = error;
    }

    /// The current store error, if writes are failing.
    pub fn readiness_store_error(&self) -> Option<String> {
        self.store_error.lock().clone()
    }

    /// `Ok` when ready, otherwise every reason it is not.
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !self.migrated.load(Ordering::Acquire) {
            problems.push("database migrations not applied yet".to_owned());
        }
        if !self.scheduling.load(Ordering::Acquire) {
            problems.push("scheduler not running yet".to_owned());
        }
        if self.stopping.load(Ordering::Acquire) {
            problems.push("shutting down".to_owned());
        }
        if let Some(error) = self.store_error.lock().as_ref() {
            problems.push(format!("store not writable: {error}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}
