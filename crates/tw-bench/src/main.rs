//! `tw-bench`: runs the real `tenantwatch run` against the loopback simulators with N tenants
//! and measures it from outside (docs/benchmarks.md).
//!
//! The simulators run in this process, on threads of their own; tenantwatch is a separate
//! process. After a warm-up of one interval, a measurement window of fixed length is taken
//! between two /metrics scrapes and two readings of /proc. With `--blackbox`, a private
//! blackbox_exporter runs concurrently, driven at the same probe rate by a paced scraper
//! loop, and is measured the same way in the same window.

mod blackbox;
mod history;
mod http;
mod procfs;
mod prom;
mod report;
mod sims;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tokio::time::Instant;

use crate::procfs::{CpuTicks, Memory};
use crate::prom::Snapshot;
use crate::report::{Report, Side};

/// Benchmark tenantwatch (and optionally blackbox_exporter) against the loopback simulators.
#[derive(Parser, Debug)]
#[command(name = "tw-bench", version)]
struct Args {
    /// Tenants, each with one domain and one watched address.
    #[arg(long, default_value_t = 1_000)]
    tenants: usize,
    /// Checks per tenant: `mail` (dns, smtp_rcpt) or `all` (every check but mailflow: eleven
    /// targets per tenant, with the Entra ID / Graph / RDAP simulator).
    #[arg(long, value_enum, default_value = "mail")]
    checks: sims::CheckSet,
    /// Probe interval of every check (at least 10s).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Length of the measurement window, after the warm-up.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Warm-up before the window; default one interval, so every job has run once.
    #[arg(long, value_parser = humantime::parse_duration)]
    warmup: Option<Duration>,
    /// `store.ok_sample_interval` for the daemon; default: the daemon's own (1h).
    #[arg(long, value_parser = humantime::parse_duration)]
    ok_sample_interval: Option<Duration>,
    /// The tenantwatch binary; default target/release/tenantwatch (next to this binary, or
    /// under the current directory).
    #[arg(long)]
    tenantwatch: Option<PathBuf>,
    /// Also run this blackbox_exporter binary side by side, concurrently, at the same rate.
    #[arg(long)]
    blackbox: Option<PathBuf>,
    /// Worker threads of the in-process simulators.
    #[arg(long, default_value_t = 2)]
    sim_threads: usize,
    /// A name for this run in the outputs.
    #[arg(long, default_value = "run")]
    label: String,
    /// Write `<label>.json` and `<label>.md` here (besides printing both).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Keep the working directory (config, database, logs) instead of deleting it.
    #[arg(long)]
    keep: bool,
    /// Instead of running the daemon: replay `--days` of a healthy fleet's history for the
    /// first `--tenants` tenants of this database (from a `--checks all --keep` run) through
    /// the store with its default policy, and report the database size (history.rs).
    #[arg(long, value_name = "DB")]
    history_from: Option<PathBuf>,
    /// Days of history for `--history-from`.
    #[arg(long, default_value_t = 30)]
    days: u32,
}

/// Upper bounds on the flags, so every run ends by itself in reasonable time.
const MAX_TENANTS: usize = 100_000;
const MAX_PHASE: Duration = Duration::from_secs(24 * 3_600);
/// How often RSS is sampled during the window.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Thread-name prefix of the benchmark's own (scraping) runtime.
const BENCH_THREADS: &str = "tw-bench";

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tw-bench: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(source) = &args.history_from {
        return run_history(&args, source);
    }
    if args.interval < Duration::from_secs(10) {
        bail!("--interval must be at least 10s (the daemon's minimum)");
    }
    if args.tenants == 0 || args.tenants > MAX_TENANTS {
        bail!("--tenants must be 1..={MAX_TENANTS}");
    }
    let warmup = args.warmup.unwrap_or(args.interval);
    if args.duration.is_zero() || args.duration > MAX_PHASE || warmup > MAX_PHASE {
        bail!("--duration must be above zero, and it and --warmup at most 24h");
    }
    if args.blackbox.is_some() && args.checks != sims::CheckSet::Mail {
        bail!("--blackbox compares the dns and smtp_rcpt checks only: use it with --checks mail");
    }
    let tenantwatch = find_tenantwatch(args.tenantwatch.as_deref())?;

    let work = tempfile::Builder::new()
        .prefix("tw-bench-")
        .tempdir()
        .context("creating the working directory")?;
    eprintln!(
        "tw-bench: starting the simulators with {} tenants (checks: {})",
        args.tenants,
        args.checks.as_str()
    );
    let sims = sims::Sims::start(args.tenants, args.sim_threads, args.checks)?;
    let runtime = bench_runtime()?;
    let result = runtime.block_on(measure(&args, warmup, &tenantwatch, &sims, work.path()));
    runtime.shutdown_timeout(Duration::from_secs(2));
    sims.stop();
    let report = result?;

    let json = serde_json::to_string_pretty(&report.to_json()).context("encoding JSON")?;
    let markdown = format!("{}\n{}\n", Report::markdown_header(), report.markdown_row());
    println!("{markdown}\n{json}");
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let base = dir.join(&args.label);
        std::fs::write(base.with_extension("json"), format!("{json}\n"))
            .context("writing the JSON result")?;
        std::fs::write(base.with_extension("md"), markdown)
            .context("writing the markdown result")?;
        eprintln!("tw-bench: results in {}.{{json,md}}", base.display());
    }
    if args.keep {
        let kept = work.keep();
        eprintln!("tw-bench: working directory kept at {}", kept.display());
    }
    Ok(())
}

/// The benchmark's own runtime: one worker, its threads named so their CPU is not counted as
/// the simulators'.
fn bench_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("{BENCH_THREADS}-worker"))
        .enable_all()
        .build()
        .context("starting the benchmark runtime")
}

fn run_history(args: &Args, source: &Path) -> anyhow::Result<()> {
    if args.days == 0 || args.days > 400 {
        bail!("--days must be 1..=400");
    }
    if args.tenants == 0 || args.tenants > MAX_TENANTS {
        bail!("--tenants must be 1..={MAX_TENANTS}");
    }
    let work = tempfile::Builder::new()
        .prefix("tw-bench-history-")
        .tempdir()
        .context("creating the working directory")?;
    let runtime = bench_runtime()?;
    let history = runtime.block_on(history::replay(
        source,
        args.tenants,
        args.days,
        work.path(),
    ))?;
    let mut json = history.to_json();
    json["label"] = serde_json::Value::String(args.label.clone());
    let machine = procfs::machine();
    json["machine"] = serde_json::json!({
        "cpus": machine.cpus,
        "model": machine.model,
        "mem_total_mib": machine.mem_total_mib,
    });
    let json = serde_json::to_string_pretty(&json).context("encoding JSON")?;
    println!("{json}");
    if let Some(dir) = &args.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join(&args.label).with_extension("json");
        std::fs::write(&file, format!("{json}\n")).context("writing the JSON result")?;
        eprintln!("tw-bench: result in {}", file.display());
    }
    if args.keep {
        let kept = work.keep();
        eprintln!("tw-bench: working directory kept at {}", kept.display());
    }
    Ok(())
}

/// `--tenantwatch`, else target/release/tenantwatch beside this binary or under the
/// current directory.
fn find_tenantwatch(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("tenantwatch"));
        }
    }
    candidates.push(PathBuf::from("target/release/tenantwatch"));
    candidates
        .into_iter()
        .find(|path| path.is_file())
        .context("no tenantwatch binary found: build it with `cargo build --release -p tenantwatch` or pass --tenantwatch")
}

/// A child process that is killed if the benchmark stops early for any reason.
struct Guarded {
    name: &'static str,
    child: Child,
}

impl Guarded {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("{} exited during the run: {status}", self.name),
            Err(err) => bail!("cannot check on {}: {err}", self.name),
        }
    }

    /// SIGTERM, then up to `grace` for it to exit, then SIGKILL. Returns how it ended.
    async fn stop(mut self, grace: Duration) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        format!("killed after {}s", grace.as_secs())
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything read at one edge of the window.
struct Edge {
    at: Instant,
    tw_cpu: CpuTicks,
    bb_cpu: Option<CpuTicks>,
    sims_cpu: CpuTicks,
    bench_cpu: CpuTicks,
    db_bytes: u64,
    bb_counts: blackbox::Counts,
    load: Option<f64>,
}

async fn measure(
    args: &Args,
    warmup: Duration,
    tenantwatch: &Path,
    sims: &sims::Sims,
    work: &Path,
) -> anyhow::Result<Report> {
    let ca_file = work.join("simulator-ca.pem");
    std::fs::write(&ca_file, &sims.ca_pem).context("writing the CA file")?;
    let db = work.join("tenantwatch.db");
    let config_path = work.join("tenantwatch.toml");
    let secret_file = work.join("app-secret");
    let entra = match &sims.entra {
        Some((entra, secret)) => {
            std::fs::write(&secret_file, secret).context("writing the app secret")?;
            Some((entra.config_section(&ca_file), secret_file.as_path()))
        }
        None => None,
    };
    std::fs::write(
        &config_path,
        sims::config(&sims::ConfigSpec {
            tenants: args.tenants,
            interval: args.interval,
            ok_sample_interval: args.ok_sample_interval,
            db: &db,
            ca_file: &ca_file,
            smtp: sims.smtp,
            dns: sims.dns,
            entra,
        }),
    )
    .context("writing the config")?;

    let log_path = work.join("tenantwatch.log");
    let log = std::fs::File::create(&log_path).context("creating the daemon log")?;
    let mut tw = Guarded {
        name: "tenantwatch",
        child: Command::new(tenantwatch)
            .args(["--log-format", "json", "run", "--config"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", tenantwatch.display()))?,
    };
    let started = Instant::now();
    let listen = wait_for_listen(&mut tw, &log_path).await?;
    wait_ready(&mut tw, listen).await?;
    eprintln!(
        "tw-bench: tenantwatch pid {} ready on {listen} after {:.1}s",
        tw.pid(),
        started.elapsed().as_secs_f64()
    );

    // Targets, not jobs: one run of a job can report on several (see `targets_per_tenant`);
    // every figure of the report counts observations.
    let targets = args.checks.targets_per_tenant() * args.tenants;
    let rate = targets as f64 / args.interval.as_secs_f64();
    let counters = Arc::new(blackbox::Counters::default());
    let mut bb: Option<Guarded> = None;
    let mut scraper = None;
    let stop_scraper = tokio_util::sync::CancellationToken::new();
    if let Some(binary) = &args.blackbox {
        let (_, domain, watched) = sims::tenant(0);
        let bb_config = work.join("blackbox.yml");
        std::fs::write(
            &bb_config,
            blackbox::config(
                &ca_file.display().to_string(),
                &sims::mx_host(&domain),
                &domain,
                &watched,
            ),
        )
        .context("writing the blackbox config")?;
        let port = blackbox::free_port().context("finding a port for blackbox_exporter")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let bb_log = std::fs::File::create(work.join("blackbox.log"))
            .context("creating the blackbox log")?;
        let mut child = Guarded {
            name: "blackbox_exporter",
            child: Command::new(binary)
                .arg(format!("--config.file={}", bb_config.display()))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(bb_log)
                .spawn()
                .with_context(|| format!("starting {}", binary.display()))?,
        };
        wait_http_ok(&mut child, addr, "/metrics").await?;
        // One probe of each module, checked, before any load: a wrong module config must
        // fail the run, not be measured.
        for (module, target) in [
            (blackbox::SMTP_MODULE, sims.smtp),
            (blackbox::DNS_MODULE, sims.dns),
        ] {
            let path = format!("/probe?module={module}&target={target}&debug=true");
            let response = http::get_once(addr, &path).await?;
            let body = String::from_utf8_lossy(&response.body);
            if !body.contains("probe_success 1") {
                bail!("blackbox_exporter module {module} failed its first probe:\n{body}");
            }
        }
        eprintln!(
            "tw-bench: blackbox_exporter pid {} on {addr}, driven at {rate:.1} probes/s",
            child.pid()
        );
        let run = blackbox::Scraper {
            blackbox: addr,
            smtp_target: sims.smtp,
            dns_target: sims.dns,
            rate,
            until: Instant::now() + warmup + args.duration + Duration::from_secs(300),
            stop: stop_scraper.clone(),
        };
        scraper = Some(tokio::spawn(run.run(counters.clone())));
        bb = Some(child);
    }

    eprintln!(
        "tw-bench: warm-up {} ({} targets, {rate:.1} probes/s expected)",
        humantime::format_duration(warmup),
        targets
    );
    wait_alive(&mut tw, &mut bb, warmup).await?;

    // Window start: scrape first, then /proc, so the scrape's own cost is outside.
    let metrics_start = scrape(listen).await?;
    let start = edge(&tw, bb.as_ref(), &counters, &db)?;
    let mut rss_max = procfs::memory(tw.pid())?.rss_kib;
    let rss_start = rss_max;
    let mut bb_rss_max = bb
        .as_ref()
        .map(|bb| procfs::memory(bb.pid()).map(|m| m.rss_kib))
        .transpose()?
        .unwrap_or(0);
    eprintln!(
        "tw-bench: measuring for {}",
        humantime::format_duration(args.duration)
    );
    let window_end = start.at + args.duration;
    while Instant::now() < window_end {
        let next = (Instant::now() + SAMPLE_EVERY).min(window_end);
        tokio::time::sleep_until(next).await;
        tw.ensure_running()?;
        rss_max = rss_max.max(procfs::memory(tw.pid())?.rss_kib);
        if let Some(bb) = bb.as_mut() {
            bb.ensure_running()?;
            bb_rss_max = bb_rss_max.max(procfs::memory(bb.pid())?.rss_kib);
        }
    }
    // Window end: /proc first, then the scrape.
    let end = edge(&tw, bb.as_ref(), &counters, &db)?;
    let tw_memory = procfs::memory(tw.pid())?;
    let bb_memory: Option<Memory> = bb.as_ref().map(|bb| procfs::memory(bb.pid())).transpose()?;
    let metrics_end = scrape(listen).await?;

    // What one /metrics scrape costs the daemon, measured on its own.
    let before = procfs::process_cpu(tw.pid())?;
    let scrape_started = Instant::now();
    let body = http::get_once(listen, "/metrics").await?.body;
    let scrape_wall = scrape_started.elapsed();
    let scrape_cpu = procfs::process_cpu(tw.pid())?.since(before);

    stop_scraper.cancel();
    if let Some(task) = scraper {
        let _ = task.await;
    }
    let bb_exit = match bb {
        Some(bb) => Some(bb.stop(Duration::from_secs(5)).await),
        None => None,
    };
    let tw_exit = tw.stop(Duration::from_secs(10)).await;
    eprintln!("tw-bench: tenantwatch stopped: {tw_exit}");

    let ticks = procfs::clock_ticks_per_second() as f64;
    let seconds = |ticks_delta: CpuTicks| ticks_delta.total() as f64 / ticks;
    let window = end.at.duration_since(start.at).as_secs_f64();
    let tw_side = Side {
        cpu_seconds: seconds(end.tw_cpu.since(start.tw_cpu)),
        cpu_user_seconds: end.tw_cpu.since(start.tw_cpu).user as f64 / ticks,
        cpu_system_seconds: end.tw_cpu.since(start.tw_cpu).system as f64 / ticks,
        probes: metrics_end.total_runs() - metrics_start.total_runs(),
        failed: metrics_end.not_ok_runs() - metrics_start.not_ok_runs(),
        peak_rss_kib: tw_memory.hwm_kib,
        end_rss_kib: tw_memory.rss_kib,
        window_rss_start_kib: rss_start,
        window_rss_max_kib: rss_max,
    };
    let bb_side = match (start.bb_cpu, end.bb_cpu, bb_memory) {
        (Some(before), Some(after), Some(memory)) => {
            let counts = end.bb_counts.since(&start.bb_counts);
            Some((
                Side {
                    cpu_seconds: seconds(after.since(before)),
                    cpu_user_seconds: after.since(before).user as f64 / ticks,
                    cpu_system_seconds: after.since(before).system as f64 / ticks,
                    probes: counts.completed() as f64,
                    failed: counts.failed() as f64,
                    peak_rss_kib: memory.hwm_kib,
                    end_rss_kib: memory.rss_kib,
                    window_rss_start_kib: 0,
                    window_rss_max_kib: bb_rss_max,
                },
                counts,
            ))
        }
        _ => None,
    };

    Ok(Report {
        label: args.label.clone(),
        machine: procfs::machine(),
        tenants: args.tenants,
        targets,
        interval: args.interval,
        warmup,
        window_seconds: window,
        expected_rate: rate,
        ok_sample_interval: args.ok_sample_interval,
        tw: tw_side,
        smtp_runs: metrics_end.runs_of_check("smtp_rcpt")
            - metrics_start.runs_of_check("smtp_rcpt"),
        dns_runs: metrics_end.runs_of_check("dns") - metrics_start.runs_of_check("dns"),
        lateness_p50: prom::bucket_quantile(&metrics_start.lateness, &metrics_end.lateness, 0.5),
        lateness_p99: prom::bucket_quantile(&metrics_start.lateness, &metrics_end.lateness, 0.99),
        written: metrics_end.written - metrics_start.written,
        sampled_out: metrics_end.sampled_out - metrics_start.sampled_out,
        dropped: metrics_end.dropped - metrics_start.dropped,
        store_errors: metrics_end.store_errors - metrics_start.store_errors,
        started: metrics_end.started - metrics_start.started,
        skipped: metrics_end.skipped - metrics_start.skipped,
        db_start_bytes: start.db_bytes,
        db_end_bytes: end.db_bytes,
        sims_cpu_seconds: seconds(end.sims_cpu.since(start.sims_cpu)),
        bench_cpu_seconds: seconds(end.bench_cpu.since(start.bench_cpu)),
        scrape_cpu_seconds: seconds(scrape_cpu),
        scrape_wall_seconds: scrape_wall.as_secs_f64(),
        scrape_bytes: body.len(),
        load_start: start.load,
        load_end: end.load,
        blackbox: bb_side,
        blackbox_exit: bb_exit,
        tenantwatch_exit: tw_exit,
    })
}

fn edge(
    tw: &Guarded,
    bb: Option<&Guarded>,
    counters: &blackbox::Counters,
    db: &Path,
) -> anyhow::Result<Edge> {
    Ok(Edge {
        at: Instant::now(),
        tw_cpu: procfs::process_cpu(tw.pid())?,
        bb_cpu: bb.map(|bb| procfs::process_cpu(bb.pid())).transpose()?,
        bb_counts: counters.read(),
        sims_cpu: procfs::own_threads_cpu(sims::THREAD_PREFIX)?,
        bench_cpu: procfs::own_threads_cpu(BENCH_THREADS)?,
        db_bytes: database_bytes(db),
        load: procfs::load_average(),
    })
}

/// The database and its WAL (the -shm index is a fixed-size mapping, left out).
fn database_bytes(db: &Path) -> u64 {
    let size = |path: PathBuf| std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    size(db.to_owned()) + size(PathBuf::from(wal))
}

async fn scrape(listen: SocketAddr) -> anyhow::Result<Snapshot> {
    let response = http::get_once(listen, "/metrics")
        .await
        .context("scraping tenantwatch /metrics")?;
    if response.status != 200 {
        bail!("tenantwatch /metrics answered {}", response.status);
    }
    Ok(Snapshot::parse(&String::from_utf8_lossy(&response.body)))
}

/// Sleeps `duration`, checking every few seconds that the children are still running.
async fn wait_alive(
    tw: &mut Guarded,
    bb: &mut Option<Guarded>,
    duration: Duration,
) -> anyhow::Result<()> {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        tokio::time::sleep_until((Instant::now() + SAMPLE_EVERY).min(end)).await;
        tw.ensure_running()?;
        if let Some(bb) = bb.as_mut() {
            bb.ensure_running()?;
        }
    }
    Ok(())
}

/// The daemon logs `"listen":"127.0.0.1:PORT"` (JSON logs) once its listener is bound.
async fn wait_for_listen(tw: &mut Guarded, log: &Path) -> anyhow::Result<SocketAddr> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        tw.ensure_running()
            .with_context(|| format!("see {}", log.display()))?;
        let text = std::fs::read_to_string(log).unwrap_or_default();
        for line in text.lines() {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(listen) = value.get("listen").and_then(|v| v.as_str()) {
                return listen
                    .parse()
                    .with_context(|| format!("bad listen address {listen:?} in the daemon log"));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "tenantwatch did not log its listen address within 120s; see {}",
        log.display()
    )
}

async fn wait_ready(tw: &mut Guarded, listen: SocketAddr) -> anyhow::Result<()> {
    wait_http_ok(tw, listen, "/readyz").await
}

async fn wait_http_ok(child: &mut Guarded, addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        child.ensure_running()?;
        if let Ok(response) = http::get_once(addr, path).await {
            if response.status == 200 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{} at {addr}{path} not ready within 60s", child.name)
}
