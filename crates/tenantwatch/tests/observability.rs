//! The Grafana dashboard and the Prometheus rules against the daemon itself. A real
//! `tenantwatch run` is started against the simulators (SMTP, DNS, Entra ID, Graph, RDAP and a
//! webhook sink) with every check that feeds a dashboard panel; every metric name the
//! dashboard and the rules use must be a family in its live `/metrics`, and promtool must
//! accept that scrape (`check metrics`), the rules (`check rules`, `test rules` on
//! deploy/prometheus/tenantwatch.rules.test.yml), the scrape config and every dashboard query.
//!
//! promtool comes from Debian's `prometheus` package, which scripts/test.sh installs and then
//! sets TW_REQUIRE_PROMTOOL=1: there a missing promtool fails these tests instead of skipping.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tw_sim::dns::DnsSim;
use tw_sim::entra::{days_from_now, EntraSim, HealthyTenant, SimAdmin, SimRdap};
use tw_sim::sink::HttpSink;
use tw_sim::smtp::{RcptBehaviour, SmtpSim, SmtpSimConfig};
use tw_sim::tls::TestCa;

/// Metrics Prometheus makes itself; the rules may use them, the dashboard does not.
const PROMETHEUS_OWN: [&str; 1] = ["up"];

/// `promtool check metrics` lint findings accepted on the live scrape, each with its reason.
/// Anything else it reports fails the test.
const ACCEPTED_LINTS: [(&str, &str); 1] = [(
    r#"tenantwatch_expiry_days use base unit "seconds" instead of "days""#,
    "days is the unit people renew by; the name is tw-server's and docs/metrics.md's",
)];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// promtool, or `None` after saying loudly why these checks are skipped.
fn promtool() -> Option<&'static str> {
    let found = Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if found {
        return Some("promtool");
    }
    assert!(
        std::env::var_os("TW_REQUIRE_PROMTOOL").is_none(),
        "promtool is required (TW_REQUIRE_PROMTOOL is set) but not found: apt-get install prometheus"
    );
    eprintln!(
        "\n*** SKIPPED: promtool not found; install Debian's `prometheus` package (scripts/test.sh does) ***\n"
    );
    None
}

fn run_promtool(promtool: &str, args: &[&str], dir: &Path, stdin: Option<&str>) -> (i32, String) {
    let mut child = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Metric names in PromQL.

/// PromQL words that are not metric names: operators, modifiers, aggregations (which may be
/// followed by `by (...)` before their parenthesis).
const PROMQL_WORDS: [&str; 26] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names an expression selects: identifiers outside strings, label matchers,
/// ranges and label lists, that are neither PromQL words nor followed by `(` (functions).
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Blank out strings, {…} and […], which hold label names, values and durations.
    let mut plain = String::with_capacity(expr.len());
    let mut closing: Option<char> = None;
    let mut in_string: Option<char> = None;
    for c in expr.chars() {
        if let Some(quote) = in_string {
            if c == quote {
                in_string = None;
            }
            continue;
        }
        match (closing, c) {
            (_, '"' | '\'' | '`') => in_string = Some(c),
            (None, '{') => closing = Some('}'),
            (None, '[') => closing = Some(']'),
            (Some(end), c) if c == end => closing = None,
            (Some(_), _) => {}
            (None, c) => plain.push(c),
        }
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut skip_label_list = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts_word = c.is_ascii_alphabetic() || c == '_' || c == ':';
        let after_digit_or_dollar =
            i > 0 && (chars[i - 1].is_ascii_digit() || chars[i - 1] == '$' || chars[i - 1] == '.');
        if !starts_word || after_digit_or_dollar {
            if c == '(' && skip_label_list {
                // by (…), on (…), group_left (…): label names, not metrics.
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_label_list = false;
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        if [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ]
        .contains(&word.as_str())
        {
            skip_label_list = true;
            continue;
        }
        if PROMQL_WORDS.contains(&word.to_ascii_lowercase().as_str()) || next == Some(&'(') {
            continue;
        }
        names.insert(word);
    }
    names
}

#[test]
fn metric_names_are_found_in_promql_and_nothing_else() {
    let expr = r#"histogram_quantile(0.99, sum by (instance, le) (rate(tenantwatch_lateness_bucket{check=~"$check", le!="x"}[$__rate_interval]))) > 2.5
        and on (instance) count(tenantwatch_check_status == 3) / ignoring (x) group_left (y) up{job="a{b}"} offset 5m
        or absent(tenantwatch_build_info) unless max(tenantwatch_jobs) by (job) > bool 1e3"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        [
            "tenantwatch_build_info",
            "tenantwatch_check_status",
            "tenantwatch_jobs",
            "tenantwatch_lateness_bucket",
            "up"
        ]
    );
}

/// (where, expr) of every query in the dashboard, template variables included.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/tenantwatch-fleet.json")).unwrap();
    let mut queries = Vec::new();
    fn walk(panel: &serde_json::Value, queries: &mut Vec<(String, String)>) {
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: no expr"));
            queries.push((title.clone(), expr.to_owned()));
        }
        for inner in panel["panels"].as_array().into_iter().flatten() {
            walk(inner, queries);
        }
    }
    for panel in dashboard["panels"].as_array().unwrap() {
        walk(panel, &mut queries);
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"].as_str().unwrap();
        // label_values(SELECTOR, label): the selector is PromQL.
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map(|(selector, _)| selector)
            .unwrap_or_else(|| panic!("unexpected variable query {query}"));
        queries.push((
            format!("variable {}", variable["name"]),
            selector.to_owned(),
        ));
    }
    queries
}

/// (alert, expr) of every rule; the rules file keeps each expr on one line so no YAML
/// parser is needed here (promtool parses it for real).
fn rule_queries() -> Vec<(String, String)> {
    let text = read("deploy/prometheus/tenantwatch.rules.yml");
    let mut queries = Vec::new();
    let mut current = String::from("?");
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line
            .strip_prefix("- alert:")
            .or_else(|| line.strip_prefix("- record:"))
        {
            current = name.trim().to_owned();
        }
        if let Some(expr) = line.strip_prefix("expr:") {
            let expr = expr.trim();
            assert!(
                !expr.is_empty() && !expr.starts_with('|') && !expr.starts_with('>'),
                "{current}: keep rule expressions on one line"
            );
            queries.push((current.clone(), expr.to_owned()));
        }
    }
    assert!(!queries.is_empty(), "no rules found");
    queries
}

/// Families in a text exposition, with the series names each implies (histograms).
fn exported_names(scrape: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        names.insert(name.to_owned(), kind.to_owned());
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"), kind.to_owned());
            }
        }
    }
    names
}

// ---------------------------------------------------------------------------------------
// The live daemon.

const TENANT_ID: &str = "2f9a3c10-0000-4000-8000-00000000c0de";
const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
const SECRET: &str = "observability-test-secret-not-for-logs";
const ADMIN: &str = "admin@contoso.example";
/// Watched, but unknown to the MX and to Graph: critical at once, so an alert is delivered.
const GONE: &str = "gone@contoso.example";

struct Daemon {
    _child: tokio::process::Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    async fn start(config: &Path) -> Daemon {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tenantwatch"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("TW_OBS_APP_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                collected.lock().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let found = logs.lock().iter().find_map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line).ok()?;
                entry.get("listen")?.as_str()?.parse::<SocketAddr>().ok()
            });
            if let Some(addr) = found {
                break addr;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not log its listen address:\n{}",
                logs.lock().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Daemon {
            _child: child,
            addr,
            logs,
        }
    }

    async fn scrape(&self) -> String {
        let response = reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "/metrics: {}",
            response.status()
        );
        response.text().await.unwrap()
    }
}

/// Starts the simulators and a daemon probing one tenant with every check that feeds the
/// dashboard: a healthy contoso except for a watched address that does not exist (critical
/// at RCPT and in Graph, alerted to a webhook), a single Global Administrator and a domain
/// registration ending in 20 days.
async fn live_daemon(dir: &Path, stop: &CancellationToken) -> (Daemon, Sims) {
    let ca = TestCa::generate().unwrap();
    let smtp = SmtpSim::start(
        SmtpSimConfig {
            banner_host: "AM5EUR02FT017.mail.protection.outlook.com".into(),
            tls: Some(
                ca.server_config(&["*.mail.protection.outlook.com"])
                    .unwrap(),
            ),
            accept_all: false,
        },
        stop.clone(),
    )
    .await
    .unwrap();
    smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    let dns = DnsSim::start(stop.clone()).await.unwrap();
    dns.add_microsoft_365_domain("contoso.example");
    let sink = HttpSink::start(stop.clone()).await.unwrap();
    let entra = EntraSim::start(&ca, stop.clone()).await.unwrap();
    entra.add_healthy_tenant(&HealthyTenant {
        tenant_id: TENANT_ID,
        display_name: "Contoso",
        domains: &["contoso.example"],
        users: &[("87d349ed-0000-4000-8000-5f2406dee5bd", ADMIN)],
        client_id: CLIENT_ID,
        client_secret: SECRET,
    });
    entra.set_global_admins(
        TENANT_ID,
        vec![SimAdmin::user(
            "6b000000-0000-4000-8000-000000000001",
            "Contoso Admin",
        )],
    );
    entra.set_rdap("contoso.example", SimRdap::expiring(&days_from_now(20)));

    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &ca.ca_cert_pem).unwrap();
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"

[store]
path = "{db}"

[schedule]
interval = "10s"
timeout = "5s"

[smtp]
helo_name = "probe.msp.example"
mail_from = "probe@msp.example"
port = {smtp_port}
extra_ca_file = "{ca}"

[dns]
nameservers = ["{dns}"]
timeout = "2s"

[entra]
login_url = "{login}"
graph_url = "{graph}"
rdap_bootstrap_url = "{rdap}"
extra_ca_file = "{ca}"

[app]
client_id = "{CLIENT_ID}"
client_secret_env = "TW_OBS_APP_SECRET"

[checks.domain]
interval = "10s"
[checks.licence]
interval = "10s"
[checks.admins]
interval = "10s"
[checks.health]
interval = "10s"

[[tenants]]
name = "contoso"
domain = "contoso.example"
tenant_id = "{TENANT_ID}"
watch = ["{ADMIN}", "{GONE}"]

[alerting]
confirm = 1

[[receivers]]
name = "noc-webhook"
kind = "webhook"
url = "{sink}/webhook"
"#,
        db = dir.join("tenantwatch.db").display(),
        smtp_port = smtp.local_addr().port(),
        ca = ca_path.display(),
        dns = dns.local_addr(),
        login = entra.login_url(),
        graph = entra.graph_url(),
        rdap = entra.rdap_bootstrap_url(),
        sink = sink.url(),
    );
    let config_path = dir.join("tenantwatch.toml");
    std::fs::write(&config_path, config).unwrap();
    (Daemon::start(&config_path).await, (smtp, dns, sink, entra))
}

/// Kept until the end of the test.
type Sims = (SmtpSim, DnsSim, HttpSink, EntraSim);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_use_only_exported_metrics_and_promtool_accepts_the_scrape() {
    let dashboard = dashboard_queries();
    let rules = rule_queries();
    let mut used: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (origin, expr) in dashboard.iter().chain(&rules) {
        for name in metric_names(expr) {
            used.entry(name).or_default().push(origin.clone());
        }
    }
    for (name, origins) in &used {
        let in_dashboard = dashboard.iter().any(|(origin, _)| origins.contains(origin));
        assert!(
            name.starts_with("tenantwatch_")
                || (PROMETHEUS_OWN.contains(&name.as_str()) && !in_dashboard),
            "{name} (used by {origins:?}) is not a tenantwatch metric"
        );
    }
    assert!(used.len() >= 15, "too few metric names found: {used:?}");

    let dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let (daemon, _sims) = live_daemon(dir.path(), &stop).await;

    // Wait until every family the dashboard and rules use has series: runs of every check,
    // the alert for the missing address delivered to the webhook.
    let wanted: BTreeSet<&str> = used
        .keys()
        .map(String::as_str)
        .filter(|name| !PROMETHEUS_OWN.contains(name))
        .collect();
    // The scenario's own verdict: the missing address critical on /metrics.
    let gone = format!(
        "tenantwatch_check_status{{check=\"smtp_rcpt\",target=\"{GONE}\",tenant=\"contoso\"}} 2"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let scrape = loop {
        let scrape = daemon.scrape().await;
        let exported = exported_names(&scrape);
        let missing: Vec<&&str> = wanted
            .iter()
            .filter(|name| !exported.contains_key(**name))
            .collect();
        // Families can all be there before the scenario has played out (a histogram is
        // exported from the start), so wait for the verdict too.
        if missing.is_empty() && scrape.contains(&gone) {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon does not export {missing:?}, used by the dashboard or rules ({:?}), or {gone} is not there yet;\nit exports {:?}\nlogs:\n{}",
            missing
                .iter()
                .map(|name| (name, &used[**name]))
                .collect::<Vec<_>>(),
            exported.keys().collect::<Vec<_>>(),
            daemon.logs.lock().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(scrape.contains(&gone), "{gone} not in the scrape");
    assert!(!scrape.contains(SECRET), "the app secret is on /metrics");

    let Some(promtool) = promtool() else {
        return;
    };
    let (code, output) = run_promtool(promtool, &["check", "metrics"], dir.path(), Some(&scrape));
    let unexpected: Vec<&str> = output
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !ACCEPTED_LINTS.iter().any(|(lint, _)| line.contains(lint)))
        .collect();
    assert!(
        (code == 0 || code == 3) && unexpected.is_empty(),
        "promtool check metrics exit {code}: {unexpected:?}\n{output}"
    );
    // And promtool is really reading it: a broken exposition is refused.
    let (code, _) = run_promtool(
        promtool,
        &["check", "metrics"],
        dir.path(),
        Some("tenantwatch_check_status{tenant=\"a\" 1\n"),
    );
    assert_ne!(code, 0, "promtool accepted a broken exposition");
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = repo().join("deploy/prometheus");
    for args in [
        &["check", "rules", "tenantwatch.rules.yml"][..],
        &["test", "rules", "tenantwatch.rules.test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let (code, output) = run_promtool(promtool, args, &dir, None);
        assert_eq!(code, 0, "promtool {}:\n{output}", args.join(" "));
    }
    // Every alert has a unit test.
    let tests = read("deploy/prometheus/tenantwatch.rules.test.yml");
    for (alert, _) in rule_queries() {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - exp_labels"
            )),
            "{alert} is never shown firing in tenantwatch.rules.test.yml"
        );
    }
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let Some(promtool) = promtool() else {
        return;
    };
    // promtool parses PromQL only in rule files: each query becomes a recording rule, with
    // Grafana's variables replaced the way Grafana would.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, (_, expr)) in dashboard_queries().iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "2m")
            .replace("$instance", ".*")
            .replace("$tenant", ".*")
            .replace("$check", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query_{index}\n        expr: {}\n",
            serde_json::Value::String(expr)
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.rules.yml"), &rules).unwrap();
    let (code, output) = run_promtool(
        promtool,
        &["check", "rules", "dashboard.rules.yml"],
        dir.path(),
        None,
    );
    assert_eq!(code, 0, "{output}\n{rules}");
}

#[test]
fn the_dashboard_is_well_formed() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/tenantwatch-fleet.json")).unwrap();
    assert_eq!(dashboard["uid"], "tenantwatch-fleet");
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| variable["name"].as_str().unwrap())
        .collect();
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{title}: wider than the grid");
        if panel["type"] == "row" {
            continue;
        }
        titles.push(title);
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{title}: not on the dashboard's data source variable"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            for (index, _) in expr.match_indices('$') {
                let name: String = expr[index + 1..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    name.starts_with("__") || variables.contains(name.as_str()),
                    "{title}: ${name} is not a dashboard variable"
                );
            }
        }
    }
    // The panels the fleet overview promises (docs/grafana.md).
    for wanted in [
        "Status: tenants × checks",
        "Identities critical now",
        "Renewal countdown",
        "Probe errors by kind",
        "Notification outbox depth",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
}
