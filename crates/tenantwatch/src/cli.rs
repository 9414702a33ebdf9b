//! Command-line interface: the subcommands and their flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

pub(crate) const DEFAULT_CONFIG: &str = "/etc/tenantwatch/tenantwatch.toml";

#[derive(Parser)]
#[command(
    name = "tenantwatch",
    version,
    about = "Outside-in monitoring of Microsoft 365 tenants"
)]
pub(crate) struct Cli {
    /// Log format: `text` for people, `json` for journald/Loki pipelines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Validate a config file: print every problem, exit 2 if invalid, 0 if valid.
    CheckConfig {
        #[arg(default_value = DEFAULT_CONFIG)]
        file: PathBuf,
    },
    /// Run a tenant's checks once and print the verdicts (exit 0 ok, 1 warning, 2 critical,
    /// 3 unknown, as a Nagios plugin does). Nothing is stored.
    Probe {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        tenant: String,
        /// Only this check kind (dns, smtp_rcpt).
        #[arg(long)]
        check: Option<String>,
        /// Print JSON (with the evidence) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// List alerts firing, pending confirmation, or blind, from the database.
    Alerts {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Write an incident evidence report for one tenant from the database: a summary, the
    /// timeline of detections, confirmations and recoveries with the evidence behind each, and
    /// the notifications sent.
    Report {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        tenant: String,
        /// Start of the window: a UTC time (2026-11-23T08:00:00Z), a date (2026-11-23), or a
        /// duration before now (24h, 7d).
        #[arg(long, value_parser = crate::report::parse_time)]
        since: tw_core::Timestamp,
        /// End of the window (exclusive), in the same forms; default now.
        #[arg(long, value_parser = crate::report::parse_time)]
        until: Option<tw_core::Timestamp>,
        /// `md` for a support case or an incident notification, `json` for tools.
        #[arg(long, value_enum, default_value_t = crate::report::ReportFormat::Md)]
        format: crate::report::ReportFormat,
    },
    /// Acknowledge a firing alert: its repeats and its escalation stop until it resolves
    /// (the running daemon reads it within seconds).
    Ack {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        tenant: String,
        /// Check kind, e.g. smtp_rcpt, identity, dns.
        #[arg(long)]
        check: String,
        /// The address or domain the alert is about.
        #[arg(long)]
        target: String,
        /// Kept with the acknowledgement and logged (who is on it, a ticket number).
        #[arg(long)]
        comment: Option<String>,
        /// Who acknowledges; default: the user running the command.
        #[arg(long)]
        by: Option<String>,
    },
    /// Silences set at run time: hold back a tenant's alerts (or one check's, one target's)
    /// for a while, like a [[silences]] window in the config.
    Silence {
        #[command(subcommand)]
        command: SilenceCommand,
    },
    /// Notification tools.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Start the bundled simulator with two sample tenants and the daemon against it; after
    /// a while one watched identity vanishes.
    Demo {
        /// Where /metrics is served.
        #[arg(long, default_value = "127.0.0.1:9317")]
        listen: SocketAddr,
        /// Directory for the demo's database, config and CA file.
        #[arg(long, default_value = "tenantwatch-demo")]
        dir: PathBuf,
        /// When admin@contoso.example vanishes from the simulated directory.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        vanish_after: Duration,
        /// Probe interval of the demo tenants.
        #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
        interval: Duration,
    },
}

#[derive(Subcommand)]
pub(crate) enum SilenceCommand {
    /// Add a silence; prints its id.
    Add {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        tenant: String,
        /// Only this check kind (default: every check of the tenant).
        #[arg(long)]
        check: Option<String>,
        /// Only this address or domain (case-insensitive; default: every target).
        #[arg(long)]
        target: Option<String>,
        /// How long from the start, e.g. 2h, 30m.
        #[arg(long, value_parser = humantime::parse_duration, required_unless_present = "until", conflicts_with = "until")]
        duration: Option<Duration>,
        /// When it ends: a UTC time such as 2026-11-24T06:00:00Z.
        #[arg(long, value_parser = crate::output::parse_utc)]
        until: Option<tw_core::Timestamp>,
        /// When it starts (a UTC time); default now.
        #[arg(long, value_parser = crate::output::parse_utc)]
        start: Option<tw_core::Timestamp>,
        /// Why; logged with every alert it holds back.
        #[arg(long)]
        reason: String,
        /// Who sets it; default: the user running the command.
        #[arg(long)]
        by: Option<String>,
    },
    /// List silences in force or still to come (with --all, ended and removed ones too).
    List {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        all: bool,
    },
    /// End a silence now (it stays listed with --all, with who removed it).
    Remove {
        id: i64,
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Who removes it; default: the user running the command.
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum NotifyCommand {
    /// Send a test message to one receiver now, bypassing the outbox, and say how it went.
    Test {
        receiver: String,
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}
