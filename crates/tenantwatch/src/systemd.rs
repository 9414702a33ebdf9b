//! systemd integration: readiness, stopping and watchdog notifications.
//!
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`), so the same binary runs under
//! a terminal, in tests and as a `Type=notify` service.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

pub(crate) fn ready() {
    notify(&[NotifyState::Ready]);
}

pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping]);
}

pub(crate) fn reloading() {
    notify(&[NotifyState::Reloading]);
}

fn notify(states: &[NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, states) {
        tracing::debug!(error = %err, "sd_notify failed");
    }
}

/// Pings the watchdog at half its period until cancelled, if systemd asked for one.
pub(crate) async fn watchdog(shutdown: CancellationToken) {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec) / 2;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => notify(&[NotifyState::Watchdog]),
        }
    }
}
