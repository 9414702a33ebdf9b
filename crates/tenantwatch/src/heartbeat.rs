//! The heartbeat: a dead man's switch for the monitor itself.
//!
//! healthchecks.io-style: `POST url/start` once at start, then every interval `POST url`
//! while the daemon is ready (scheduler running, store writable) or `POST url/fail` with the
//! reasons while it is not. When the daemon dies, the pings stop, and the heartbeat service
//! (not Microsoft, not this machine) raises the alarm. The URL often embeds a secret token,
//! so only its host is ever logged.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tw_core::config::HeartbeatConfig;
use tw_server::Health;

pub(crate) async fn run(
    config: HeartbeatConfig,
    http: reqwest::Client,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    ping(
        &http,
        &config.url,
        "/start",
        "tenantwatch started".to_owned(),
    )
    .await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
        match health.readiness() {
            Ok(()) => ping(&http, &config.url, "", "ok".to_owned()).await,
            Err(problems) => ping(&http, &config.url, "/fail", problems.join("\n")).await,
        }
    }
}

async fn ping(http: &reqwest::Client, url: &str, suffix: &str, body: String) {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("?");
    match http.post(format!("{url}{suffix}")).body(body).send().await {
        Ok(response) if response.status().is_success() => {
            tracing::debug!(host, suffix, "Heartbeat sent")
        }
        Ok(response) => tracing::warn!(
            host,
            suffix,
            status = response.status().as_u16(),
            "Heartbeat refused"
        ),
        // reqwest's error text includes the URL, which may carry the check's token.
        Err(err) => tracing::warn!(
            host,
            suffix,
            timeout = err.is_timeout(),
            connect = err.is_connect(),
            "Heartbeat not sent"
        ),
    }
}
