//! The status page: `GET /` is the tenants × checks grid (colour, reason, last change), and
//! `GET /tenants/{tenant}` one tenant's targets, alerts and recent observations with their
//! evidence. Server-rendered HTML without JavaScript; the stylesheet is served from
//! `/static/tenantwatch.css`, so the Content-Security-Policy can forbid inline styles and every
//! script.
//!
//! Each grid cell carries `data-tenant`, `data-check` and `data-status` attributes, so a test
//! (or a scraper) can read the grid exactly; the same holds for the tenant page's rows.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tw_core::{CheckKind, Status, Timestamp};
use tw_store::{CheckState, HistoryCursor, HistoryFilter, StoreError};

use crate::api::{alerts_of, Params};
use crate::html::{self, Html};
use crate::overview::{self, Catalog, CellStatus};
use crate::{evidence, ServerState};

/// Tenants per grid page.
const GRID_PAGE: u32 = 100;
const GRID_PAGE_MAX: u32 = 500;
/// Observations per tenant page.
const HISTORY_PAGE: u32 = 25;
const HISTORY_PAGE_MAX: u32 = 100;
/// Problems listed above the grid.
const PROBLEMS_SHOWN: u32 = 50;
/// The page reloads itself (no script needed) so a wall display stays current.
const REFRESH_SECS: &str = "60";

pub(crate) const STYLESHEET_PATH: &str = "/static/tenantwatch.css";

pub(crate) fn routes() -> Router<ServerState> {
    Router::new()
        .route("/", get(grid))
        .route("/tenants/{tenant}", get(tenant_page))
}

pub(crate) async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

fn page(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn head(out: &mut Html, title: &str, refresh: bool) {
    out.raw("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    if refresh {
        out.open(
            "meta",
            &[("http-equiv", "refresh"), ("content", REFRESH_SECS)],
        );
    }
    out.element("title", &[], title)
        .open("link", &[("rel", "stylesheet"), ("href", STYLESHEET_PATH)])
        .raw("</head><body>");
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let mut out = Html::new();
    head(&mut out, "tenantwatch: error", false);
    out.raw("<main><h1>")
        .display(status)
        .raw("</h1>")
        .element("p", &[], message)
        .raw("<p><a href=\"/\">All tenants</a></p></main></body></html>");
    page(status, out.finish())
}

fn store_error(err: &StoreError) -> Response {
    tracing::warn!(error = %crate::error_chain(err), "Status page read from the store failed");
    if err.is_retryable() {
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "The database is busy or unavailable; reload in a moment.",
        )
    } else {
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "The database could not be read.",
        )
    }
}

fn status_class(status: CellStatus) -> &'static str {
    match status {
        CellStatus::Verdict(Status::Ok) => "cell s-ok",
        CellStatus::Verdict(Status::Warning) => "cell s-warning",
        CellStatus::Verdict(Status::Critical) => "cell s-critical",
        CellStatus::Verdict(Status::Unknown) => "cell s-unknown",
        CellStatus::Pending => "cell s-pending",
        CellStatus::None => "cell s-none",
    }
}

fn badge_class(status: Status) -> &'static str {
    match status {
        Status::Ok => "badge s-ok",
        Status::Warning => "badge s-warning",
        Status::Critical => "badge s-critical",
        Status::Unknown => "badge s-unknown",
    }
}

fn tenant_href(tenant: &str) -> String {
    format!("/tenants/{}", html::query_value(tenant))
}

async fn grid(
    State(state): State<ServerState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Response {
    let params = match Params::parse(raw, &["after", "limit"]) {
        Ok(params) => params,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message),
    };
    let limit = match params.limit(GRID_PAGE, GRID_PAGE_MAX) {
        Ok(limit) => limit,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message),
    };
    let now = Timestamp::now();
    let catalog = Catalog::of(&state.metrics);
    let (names, next) = catalog.page(params.get("after"), limit as usize);
    let (states, problems) = match tokio::try_join!(
        state.store.check_states_of(&names),
        state.store.problems(PROBLEMS_SHOWN),
    ) {
        Ok(read) => read,
        Err(err) => return store_error(&err),
    };
    let columns = catalog.columns();

    let mut out = Html::new();
    head(&mut out, "tenantwatch", true);
    out.raw("<header><h1>tenantwatch</h1><p class=\"muted\">")
        .display(catalog.len())
        .raw(" tenants · as of ")
        .text(&html::when(now))
        .raw(" · reloads every minute</p></header><main>");

    // Counted in memory over the configured targets' latest runs, so a target removed from
    // the config no longer counts, and no query scans every key.
    let (counts, pending) = state.metrics.verdict_counts();
    out.raw("<section class=\"summary\" id=\"summary\">");
    for status in [
        Status::Critical,
        Status::Warning,
        Status::Unknown,
        Status::Ok,
    ] {
        let count = counts[usize::from(status.code())].to_string();
        out.open(
            "span",
            &[
                ("class", badge_class(status)),
                ("data-status", status.as_str()),
                ("data-count", &count),
            ],
        )
        .text(&count)
        .raw(" ")
        .text(status.as_str())
        .close("span");
    }
    if pending > 0 {
        let count = pending.to_string();
        out.open(
            "span",
            &[
                ("class", "badge s-pending"),
                ("data-status", "pending"),
                ("data-count", &count),
            ],
        )
        .text(&count)
        .raw(" not run since start")
        .close("span");
    }
    out.raw("</section>");

    if !problems.is_empty() {
        out.raw("<section><h2>Problems</h2><table class=\"list\" id=\"problems\"><thead><tr><th>status</th><th>tenant</th><th>check</th><th>target</th><th>reason</th><th>since</th></tr></thead><tbody>");
        for problem in problems
            .iter()
            .filter(|p| state.metrics.is_configured(&p.tenant, p.check, &p.target))
        {
            problem_row(&mut out, problem, now);
        }
        out.raw("</tbody></table></section>");
    }

    out.raw("<section><h2>Tenants</h2>");
    if names.is_empty() {
        out.raw("<p class=\"muted\">No tenants configured.</p>");
    } else {
        out.raw("<table class=\"grid\" id=\"grid\"><thead><tr><th>tenant</th>");
        for kind in &columns {
            out.element("th", &[], kind.as_str());
        }
        out.raw("</tr></thead><tbody>");
        for name in &names {
            let cells = overview::cells(&state.metrics, &catalog, name, &states);
            let tenant_status = overview::tenant_status(&cells);
            out.open(
                "tr",
                &[
                    ("data-tenant", name),
                    ("data-status", tenant_status.as_str()),
                ],
            )
            .raw("<th>")
            .open("a", &[("href", &tenant_href(name))])
            .text(name)
            .raw("</a></th>");
            for kind in &columns {
                grid_cell(&mut out, name, *kind, cells.get(kind), now);
            }
            out.raw("</tr>");
        }
        out.raw("</tbody></table>");
    }
    if let Some(next) = next {
        out.raw("<nav class=\"pager\">")
            .open(
                "a",
                &[(
                    "href",
                    &format!("/?after={}&limit={limit}", html::query_value(&next)),
                )],
            )
            .raw("Next tenants →</a></nav>");
    }
    out.raw("</section></main></body></html>");
    page(StatusCode::OK, out.finish())
}

fn problem_row(out: &mut Html, problem: &CheckState, now: Timestamp) {
    out.open(
        "tr",
        &[
            ("data-tenant", &problem.tenant),
            ("data-check", problem.check.as_str()),
            ("data-target", &problem.target),
            ("data-status", problem.status.as_str()),
        ],
    )
    .raw("<td>")
    .element(
        "span",
        &[("class", badge_class(problem.status))],
        problem.status.as_str(),
    )
    .raw("</td><td>")
    .open("a", &[("href", &tenant_href(&problem.tenant))])
    .text(&problem.tenant)
    .raw("</a></td>")
    .element("td", &[], problem.check.as_str())
    .element("td", &[], &problem.target)
    .open("td", &[("title", problem.reason.describe())])
    .element("code", &[], problem.reason.as_str())
    .raw(" ")
    .element("span", &[("class", "muted")], &problem.summary)
    .raw("</td>")
    .element(
        "td",
        &[],
        &format!(
            "{} ({} ago)",
            html::when(problem.since),
            html::age(now, problem.since)
        ),
    )
    .raw("</tr>");
}

fn grid_cell(
    out: &mut Html,
    tenant: &str,
    kind: CheckKind,
    cell: Option<&overview::Cell>,
    now: Timestamp,
) {
    let status = cell.map_or(CellStatus::None, |cell| cell.status);
    let mut attrs = vec![
        ("class", status_class(status)),
        ("data-tenant", tenant),
        ("data-check", kind.as_str()),
        ("data-status", status.as_str()),
    ];
    let title;
    if let Some(worst) = cell.and_then(|cell| cell.worst.as_ref()) {
        title = format!("{}: {}", worst.target, worst.summary);
        attrs.push(("title", &title));
    }
    out.open("td", &attrs);
    match cell {
        None => {
            out.raw("<span class=\"muted\">–</span>");
        }
        Some(cell) => {
            out.element("span", &[("class", "st")], status.as_str());
            let bad = cell.seen() - cell.count(Status::Ok);
            if cell.targets > 1 && bad > 0 {
                out.raw(" ").element(
                    "span",
                    &[("class", "muted")],
                    &format!("{bad} of {} targets not ok", cell.targets),
                );
            }
            if let Some(worst) = &cell.worst {
                out.element("span", &[("class", "why")], worst.reason.as_str());
            }
            if let Some(since) = cell.worst.as_ref().map(|worst| worst.since) {
                out.open("span", &[("class", "since"), ("title", &html::when(since))])
                    .raw("since ")
                    .text(&html::age(now, since))
                    .raw(" ago")
                    .close("span");
            }
        }
    }
    out.close("td");
}

async fn tenant_page(
    State(state): State<ServerState>,
    Path(tenant): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Response {
    let params = match Params::parse(raw, &["before", "check", "changes_only", "limit"]) {
        Ok(params) => params,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message),
    };
    let parsed = (|| -> Result<_, String> {
        let limit = params.limit(HISTORY_PAGE, HISTORY_PAGE_MAX)?;
        let check = params.check()?;
        let changes_only = params.flag("changes_only")?;
        let before = params
            .get("before")
            .map(|raw| {
                raw.parse::<HistoryCursor>()
                    .map_err(|err| format!("before: {err}"))
            })
            .transpose()?;
        Ok((limit, check, changes_only, before))
    })();
    let (limit, check, changes_only, before) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => return error_page(StatusCode::BAD_REQUEST, &message),
    };
    let now = Timestamp::now();
    let catalog = Catalog::of(&state.metrics);
    let filter = HistoryFilter {
        tenant: Some(tenant.clone()),
        check,
        target: None,
        changes_only,
    };
    let tenants = [tenant.as_str()];
    let (states, alert_rows, history) = match tokio::try_join!(
        state.store.check_states_of(&tenants),
        state.store.alert_states_of(&tenant),
        state.store.observation_page(&filter, before, limit),
    ) {
        Ok(read) => read,
        Err(err) => return store_error(&err),
    };
    if !catalog.contains(&tenant) && states.is_empty() {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("No tenant named {tenant:?}."),
        );
    }
    let alerts: BTreeMap<(CheckKind, String), Vec<crate::api::AlertJson>> = alert_rows
        .iter()
        .map(|row| ((row.check, row.target.clone()), alerts_of(row)))
        .collect();

    let mut out = Html::new();
    head(&mut out, &format!("tenantwatch: {tenant}"), true);
    out.raw("<header><p><a href=\"/\">← All tenants</a></p><h1>")
        .text(&tenant)
        .raw("</h1><p class=\"muted\">as of ")
        .text(&html::when(now));
    if !catalog.contains(&tenant) {
        out.raw(" · no longer configured; showing stored history");
    }
    out.raw("</p></header><main>");

    out.raw("<section><h2>Checks</h2>");
    let configured = catalog.checks_of(&tenant);
    let waiting: Vec<&str> = configured
        .into_iter()
        .flat_map(|checks| checks.keys())
        .filter(|kind| !states.iter().any(|s| s.check == **kind))
        .map(|kind| kind.as_str())
        .collect();
    if !waiting.is_empty() {
        out.raw("<p class=\"muted\">No verdict yet: ")
            .text(&waiting.join(", "))
            .raw("</p>");
    }
    out.raw("<table class=\"list\" id=\"checks\"><thead><tr><th>check</th><th>target</th><th>status</th><th>reason</th><th>summary</th><th>since</th><th>last run</th><th>runs</th><th>alert</th></tr></thead><tbody>");
    for row in &states {
        let is_configured = state
            .metrics
            .is_configured(&row.tenant, row.check, &row.target);
        out.open(
            "tr",
            &[
                ("data-check", row.check.as_str()),
                ("data-target", &row.target),
                ("data-status", row.status.as_str()),
            ],
        )
        .element("td", &[], row.check.as_str())
        .raw("<td>")
        .text(&row.target);
        if !is_configured {
            out.raw(" <span class=\"muted\">(no longer configured)</span>");
        }
        out.raw("</td><td>")
            .element(
                "span",
                &[("class", badge_class(row.status))],
                row.status.as_str(),
            )
            .raw("</td>")
            .open("td", &[("title", row.reason.describe())])
            .element("code", &[], row.reason.as_str())
            .raw("</td>")
            .element("td", &[], &row.summary)
            .element(
                "td",
                &[("title", &html::when(row.since))],
                &format!("{} ago", html::age(now, row.since)),
            )
            .element(
                "td",
                &[("title", &html::when(row.last_run))],
                &format!("{} ago", html::age(now, row.last_run)),
            )
            .element("td", &[], &row.consecutive.to_string())
            .raw("<td>");
        for alert in alerts
            .get(&(row.check, row.target.clone()))
            .into_iter()
            .flatten()
        {
            let text = match alert.severity {
                Some(severity) => format!("{} ({severity})", alert.state),
                None => alert.state.to_owned(),
            };
            out.open("span", &[("class", "alert"), ("title", &alert.since)])
                .text(&text)
                .close("span")
                .raw(" ");
        }
        out.raw("</td></tr>");
    }
    out.raw("</tbody></table></section>");

    out.raw("<section><h2>Recent observations</h2><nav class=\"filters\">");
    let base = tenant_href(&tenant);
    let filter_link = |out: &mut Html, label: &str, href: String, active: bool| {
        let class = if active { "filter active" } else { "filter" };
        out.open("a", &[("class", class), ("href", &href)])
            .text(label)
            .close("a")
            .raw(" ");
    };
    filter_link(
        &mut out,
        "all",
        base.clone(),
        check.is_none() && !changes_only,
    );
    filter_link(
        &mut out,
        "state changes",
        format!("{base}?changes_only=true"),
        check.is_none() && changes_only,
    );
    for kind in configured.into_iter().flat_map(|checks| checks.keys()) {
        filter_link(
            &mut out,
            kind.as_str(),
            format!("{base}?check={}", kind.as_str()),
            check == Some(*kind),
        );
    }
    out.raw("</nav>");
    if history.observations.is_empty() {
        out.raw("<p class=\"muted\">No stored observations.</p>");
    }
    out.raw("<div id=\"observations\">");
    for observation in &history.observations {
        let id = observation.id.to_string();
        out.open(
            "article",
            &[
                ("class", "obs"),
                ("id", &format!("obs-{id}")),
                ("data-observation", &id),
                ("data-check", observation.check.as_str()),
                ("data-target", &observation.target),
                ("data-status", observation.status.as_str()),
            ],
        )
        .raw("<p>")
        .element(
            "span",
            &[("class", badge_class(observation.status))],
            observation.status.as_str(),
        )
        .raw(" ")
        .element("time", &[], &html::when(observation.started_at))
        .raw(" · ")
        .text(observation.check.as_str())
        .raw(" · ")
        .text(&observation.target)
        .raw(" · ")
        .open("code", &[("title", observation.reason.describe())])
        .text(observation.reason.as_str())
        .close("code");
        if observation.state_change {
            out.raw(" <span class=\"change\">state change</span>");
        }
        out.raw("</p>")
            .element("p", &[("class", "summary-line")], &observation.summary)
            .raw("<details><summary>Evidence (")
            .text(&format!(
                "{:.0} ms",
                observation.elapsed.as_secs_f64() * 1000.0
            ))
            .raw(")</summary>");
        evidence::render(&mut out, &observation.evidence);
        out.raw("</details></article>");
    }
    out.raw("</div>");
    if let Some(next) = history.next {
        let mut href = format!("{base}?before={}&limit={limit}", next);
        if let Some(check) = check {
            href.push_str(&format!("&check={}", check.as_str()));
        }
        if changes_only {
            href.push_str("&changes_only=true");
        }
        out.raw("<nav class=\"pager\">")
            .open("a", &[("href", &href)])
            .raw("Older observations →</a></nav>");
    }
    out.raw("</section></main></body></html>");
    page(StatusCode::OK, out.finish())
}

/// Served from its own URL so the CSP can say `style-src 'self'` and allow no inline style.
const STYLESHEET: &str = r#"
:root { color-scheme: light dark; --ok: #1a7f37; --warning: #b26a00; --critical: #c62828; --unknown: #5a6b7b; --pending: #9aa5b1; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 1.5rem 2rem; }
header h1 { margin: 1rem 0 0.2rem; font-size: 1.5rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 0.5rem; }
h4 { margin: 0.8rem 0 0.3rem; font-size: 0.95rem; }
a { color: inherit; }
.muted { color: #6b7785; }
table { border-collapse: collapse; }
th, td { text-align: left; vertical-align: top; padding: 0.35rem 0.5rem; }
table.list td, table.list th, table.evidence td, table.evidence th { border-bottom: 1px solid #8883; }
table.grid th { position: sticky; top: 0; background: Canvas; }
table.grid td.cell { min-width: 7rem; border: 2px solid Canvas; border-radius: 6px; color: #fff; }
table.grid td.cell span { display: block; }
table.grid td.cell .muted { color: #fffc; }
.cell .st { font-weight: 600; text-transform: uppercase; font-size: 0.8rem; }
.cell .why, .cell .since { font-size: 0.78rem; opacity: 0.92; }
.s-ok { background: var(--ok); }
.s-warning { background: var(--warning); }
.s-critical { background: var(--critical); }
.s-unknown { background: var(--unknown); }
.s-pending { background: var(--pending); }
td.s-none { background: transparent; color: inherit; }
.badge { display: inline-block; color: #fff; border-radius: 4px; padding: 0.05rem 0.45rem; font-size: 0.8rem; font-weight: 600; margin-right: 0.4rem; }
.summary .badge { font-size: 0.95rem; padding: 0.25rem 0.7rem; }
.alert { border: 1px solid var(--critical); border-radius: 4px; padding: 0 0.3rem; font-size: 0.8rem; }
.change { font-size: 0.75rem; border: 1px solid #8888; border-radius: 4px; padding: 0 0.3rem; }
article.obs { border-left: 3px solid #8886; padding: 0.2rem 0.8rem; margin: 0.6rem 0; }
article.obs p { margin: 0.2rem 0; }
pre.transcript { background: #8881; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; white-space: pre-wrap; word-break: break-all; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 1rem; margin: 0.4rem 0; }
dl.facts dt { color: #6b7785; }
dl.facts dd { margin: 0; word-break: break-all; }
td.ids code, code { font-size: 0.8rem; }
nav.filters a.filter { margin-right: 0.3rem; }
nav.filters a.active { font-weight: 700; }
nav.pager { margin-top: 1rem; }
"#;
