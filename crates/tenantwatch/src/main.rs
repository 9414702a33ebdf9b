//! The `tenantwatch` binary: CLI parsing, logging setup, signals and exit codes.
//!
//! Wiring only: every decision lives in a library crate. Exit codes: 0 success, 1 runtime
//! failure, 2 invalid config (and for `probe`, the Nagios convention 0-3).

mod alerts;
mod app;
mod cli;
mod demo;
mod heartbeat;
mod output;
mod pipeline;
mod receivers;
mod report;
mod systemd;
mod vantage;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tokio::sync::mpsc;
use tracing_subscriber::EnvFilter;
use tw_core::config;

use crate::cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "Cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli.command))
}

async fn dispatch(command: Command) -> ExitCode {
    if let Err(err) = survive_file_size_limit() {
        tracing::error!(error = %format!("{err:#}"), "Cannot install the SIGXFSZ handler");
        return ExitCode::FAILURE;
    }
    let result = match command {
        Command::CheckConfig { file } => return check_config(&file),
        Command::Run { config } => match load_config_or_exit(&config) {
            Ok(parsed) => run(parsed, &config).await,
            Err(code) => return code,
        },
        Command::Probe {
            config,
            tenant,
            check,
            json,
        } => match load_config_or_exit(&config) {
            Ok(parsed) => return output::probe(&parsed, &tenant, check.as_deref(), json).await,
            Err(code) => return code,
        },
        Command::Alerts { config } => match load_config_or_exit(&config) {
            Ok(parsed) => return output::alerts(&parsed).await,
            Err(code) => return code,
        },
        Command::Report {
            config,
            tenant,
            since,
            until,
            format,
        } => match load_config_or_exit(&config) {
            Ok(parsed) => return report::run(&parsed, &tenant, since, until, format).await,
            Err(code) => return code,
        },
        Command::Ack {
            config,
            tenant,
            check,
            target,
            comment,
            by,
        } => match load_config_or_exit(&config) {
            Ok(parsed) => {
                let key = output::AlertKey {
                    tenant: &tenant,
                    check: &check,
                    target: &target,
                };
                return output::ack(&parsed, key, comment, by).await;
            }
            Err(code) => return code,
        },
        Command::Silence { command } => return silence(command).await,
        Command::Notify {
            command: cli::NotifyCommand::Test { receiver, config },
        } => match load_config_or_exit(&config) {
            Ok(parsed) => return output::notify_test(&parsed, &receiver).await,
            Err(code) => return code,
        },
        Command::Migrate { config } => match load_config_or_exit(&config) {
            Ok(parsed) => migrate(&parsed).await,
            Err(code) => return code,
        },
        Command::Demo {
            listen,
            dir,
            vanish_after,
            interval,
        } => demo::run(listen, &dir, vanish_after, interval).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "Exiting after an error");
            ExitCode::FAILURE
        }
    }
}

async fn silence(command: cli::SilenceCommand) -> ExitCode {
    match command {
        cli::SilenceCommand::Add {
            config,
            tenant,
            check,
            target,
            duration,
            until,
            start,
            reason,
            by,
        } => match load_config_or_exit(&config) {
            Ok(parsed) => {
                let request = output::SilenceRequest {
                    tenant,
                    check,
                    target,
                    duration,
                    until,
                    start,
                    reason,
                    by,
                };
                output::silence_add(&parsed, request).await
            }
            Err(code) => code,
        },
        cli::SilenceCommand::List { config, all } => match load_config_or_exit(&config) {
            Ok(parsed) => output::silence_list(&parsed, all).await,
            Err(code) => code,
        },
        cli::SilenceCommand::Remove { id, config, by } => match load_config_or_exit(&config) {
            Ok(parsed) => output::silence_remove(&parsed, id, by).await,
            Err(code) => code,
        },
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}

/// Prints every problem of an invalid config and returns exit code 2.
fn load_config_or_exit(path: &Path) -> Result<config::Config, ExitCode> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) => {
            eprintln!("cannot read {}: {err}", path.display());
            return Err(ExitCode::from(2));
        }
    };
    config::parse(&text).map_err(|errors| {
        eprint!("{}: {errors}", path.display());
        ExitCode::from(2)
    })
}

fn check_config(path: &Path) -> ExitCode {
    match load_config_or_exit(path) {
        Ok(parsed) => {
            let jobs = tw_probe::plan(&parsed).len();
            println!(
                "{}: valid ({} tenants, {jobs} jobs)",
                path.display(),
                parsed.tenants.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

async fn migrate(config: &config::Config) -> anyhow::Result<()> {
    let store = tw_store::Store::open(&config.store.path)
        .await
        .with_context(|| format!("migrating {}", config.store.path.display()))?;
    store.close().await;
    tracing::info!(path = %config.store.path.display(), "Database is at the latest schema");
    Ok(())
}

async fn run(config: config::Config, path: &Path) -> anyhow::Result<()> {
    // Signal handlers first: a SIGTERM or SIGHUP that arrives while the database migrates
    // must be seen, not take the process down with the default action.
    let shutdown = shutdown_signal()?;
    let reloads = forward_sighup()?;
    let app = app::App::build(config, Some(path.to_owned())).await?;
    app.run(shutdown, reloads).await
}

/// Completes on SIGTERM or SIGINT. The handlers are installed now, not on first poll.
pub(crate) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// SIGXFSZ as Linux numbers it (asm-generic; MIPS is the exception).
#[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
const SIGXFSZ: i32 = 25;
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
const SIGXFSZ: i32 = 31;

/// A write past the file size limit (`RLIMIT_FSIZE`, systemd's `LimitFSIZE=`) raises SIGXFSZ,
/// whose default action kills the process. A full disk must be an error, not a crash: with a
/// handler installed the write fails with EFBIG instead, SQLite reports it, and the recorder
/// treats it like any unwritable store (probing goes on, /readyz says why, the batch is
/// retried). tokio never uninstalls a handler, so this holds for the life of the process; the
/// task only tells the operator the cause, at most every ten minutes.
fn survive_file_size_limit() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
    let mut exceeded = signal(SignalKind::from_raw(SIGXFSZ)).context("listening for SIGXFSZ")?;
    tokio::spawn(async move {
        let mut logged: Option<tokio::time::Instant> = None;
        while exceeded.recv().await.is_some() {
            if logged.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                logged = Some(tokio::time::Instant::now());
                tracing::warn!("File size limit reached (SIGXFSZ): writes to the database fail until RLIMIT_FSIZE (LimitFSIZE=) is raised or space is freed");
            }
        }
    });
    Ok(())
}

/// Turns each SIGHUP into a reload request. The forwarding task holds no state and lives as
/// long as the process; it ends when the receiver (the app) is gone.
fn forward_sighup() -> anyhow::Result<mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP received: reloading the config");
            // A reload already queued covers this one too; a closed channel ends the task.
            if let Err(mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                return;
            }
        }
    });
    Ok(rx)
}
