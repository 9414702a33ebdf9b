//! The JSON API under `/api/v1/`: tenants, checks with their current state, observation history
//! (paged with a cursor), and alerts. Read-only; docs/openapi.yaml describes every path,
//! parameter and schema, and docs/api.md how to use them.
//!
//! Every list is bounded: tenants and check states are paged by key (`after`), history by
//! `(started_at, id)` (`before`), and `limit` is capped (at [`tw_store::MAX_PAGE`]), so no request
//! can make SQLite read the whole history. Unknown query parameters are refused with 400, so
//! a misspelt filter is an error and not a silently unfiltered answer.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tw_core::{CheckKind, Evidence, Status, Timestamp};
use tw_store::{
    CheckState, HistoryCursor, HistoryFilter, StateCursor, StateFilter, StoreError,
    StoredObservation, MAX_PAGE,
};

use crate::overview::{self, Catalog, Cell};
use crate::ServerState;

/// Page size when `limit` is not given.
const DEFAULT_LIMIT: u32 = 100;

pub(crate) fn routes() -> Router<ServerState> {
    Router::new()
        .route("/api/v1/tenants", get(tenants))
        .route("/api/v1/tenants/{tenant}", get(tenant))
        .route("/api/v1/checks", get(checks))
        .route("/api/v1/observations", get(observations))
        .route("/api/v1/alerts", get(alerts))
}

/// An error answer: `{"error": "..."}` with the status code.
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// A busy or unavailable database is 503 (try again); anything else is 500. The error
    /// text is logged here; it is tenantwatch's own and never holds a credential.
    pub(crate) fn store(err: &StoreError) -> ApiError {
        tracing::warn!(error = %crate::error_chain(err), "API read from the store failed");
        if err.is_retryable() {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database busy or unavailable; try again",
            )
        } else {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "database read failed")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

/// Query parameters, each at most once and each one the endpoint knows.
pub(crate) struct Params(BTreeMap<String, String>);

impl Params {
    pub(crate) fn parse(raw: Vec<(String, String)>, allowed: &[&str]) -> Result<Params, String> {
        let mut params = BTreeMap::new();
        for (name, value) in raw {
            if !allowed.contains(&name.as_str()) {
                return Err(format!(
                    "unknown query parameter {name:?} (this endpoint takes: {})",
                    allowed.join(", ")
                ));
            }
            if params.insert(name.clone(), value).is_some() {
                return Err(format!("query parameter {name:?} given twice"));
            }
        }
        Ok(Params(params))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub(crate) fn limit(&self, default: u32, max: u32) -> Result<u32, String> {
        match self.get("limit") {
            None => Ok(default),
            Some(raw) => match raw.parse::<u32>() {
                Ok(0) | Err(_) => Err(format!(
                    "limit must be a whole number from 1 to {max}, got {raw:?}"
                )),
                // Larger pages are capped rather than refused, as documented.
                Ok(limit) => Ok(limit.min(max)),
            },
        }
    }

    pub(crate) fn check(&self) -> Result<Option<CheckKind>, String> {
        self.get("check")
            .map(|raw| raw.parse::<CheckKind>().map_err(|err| err.to_string()))
            .transpose()
    }

    pub(crate) fn flag(&self, name: &str) -> Result<bool, String> {
        match self.get(name) {
            None | Some("false" | "0") => Ok(false),
            Some("true" | "1") => Ok(true),
            Some(other) => Err(format!("{name} must be true or false, got {other:?}")),
        }
    }
}

fn params(raw: Vec<(String, String)>, allowed: &[&str]) -> Result<Params, ApiError> {
    Params::parse(raw, allowed).map_err(ApiError::bad_request)
}

fn time(at: Timestamp) -> String {
    at.to_string()
}

#[derive(Serialize)]
struct Counts {
    ok: usize,
    warning: usize,
    critical: usize,
    unknown: usize,
    /// Configured targets without a verdict yet.
    pending: usize,
}

#[derive(Serialize)]
struct CellJson {
    status: &'static str,
    targets: usize,
    counts: Counts,
    /// The worst target's verdict: what the cell's colour is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    worst: Option<WorstJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_change: Option<String>,
}

#[derive(Serialize)]
struct WorstJson {
    target: String,
    reason: &'static str,
    summary: String,
    since: String,
}

#[derive(Serialize)]
struct TenantJson {
    name: String,
    status: &'static str,
    counts: Counts,
    checks: BTreeMap<&'static str, CellJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_change: Option<String>,
}

fn counts_of<'a>(cells: impl Iterator<Item = &'a Cell>) -> Counts {
    let mut counts = Counts {
        ok: 0,
        warning: 0,
        critical: 0,
        unknown: 0,
        pending: 0,
    };
    for cell in cells {
        counts.ok += cell.count(Status::Ok);
        counts.warning += cell.count(Status::Warning);
        counts.critical += cell.count(Status::Critical);
        counts.unknown += cell.count(Status::Unknown);
        counts.pending += cell.targets.saturating_sub(cell.seen());
    }
    counts
}

fn tenant_json(name: &str, cells: &BTreeMap<CheckKind, Cell>) -> TenantJson {
    TenantJson {
        name: name.to_owned(),
        status: overview::tenant_status(cells).as_str(),
        counts: counts_of(cells.values()),
        checks: cells
            .iter()
            .map(|(kind, cell)| {
                let json = CellJson {
                    status: cell.status.as_str(),
                    targets: cell.targets,
                    counts: counts_of(std::iter::once(cell)),
                    worst: cell.worst.as_ref().map(|worst| WorstJson {
                        target: worst.target.clone(),
                        reason: worst.reason.as_str(),
                        summary: worst.summary.clone(),
                        since: time(worst.since),
                    }),
                    last_change: cell.last_change.map(time),
                };
                (kind.as_str(), json)
            })
            .collect(),
        last_change: cells
            .values()
            .filter_map(|cell| cell.last_change)
            .max()
            .map(time),
    }
}

#[derive(Serialize)]
struct TenantsPage {
    tenants: Vec<TenantJson>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

async fn tenants(
    State(state): State<ServerState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Json<TenantsPage>, ApiError> {
    let params = params(raw, &["after", "limit"])?;
    let limit = params
        .limit(DEFAULT_LIMIT, MAX_PAGE)
        .map_err(ApiError::bad_request)?;
    let catalog = Catalog::of(&state.metrics);
    let (names, next) = catalog.page(params.get("after"), limit as usize);
    let states = state
        .store
        .check_states_of(&names)
        .await
        .map_err(|err| ApiError::store(&err))?;
    let tenants = names
        .iter()
        .map(|name| {
            tenant_json(
                name,
                &overview::cells(&state.metrics, &catalog, name, &states),
            )
        })
        .collect();
    Ok(Json(TenantsPage { tenants, next }))
}

#[derive(Serialize)]
pub(crate) struct CheckStateJson {
    tenant: String,
    check: &'static str,
    target: String,
    status: &'static str,
    reason: &'static str,
    /// What the reason means, in one line.
    reason_text: &'static str,
    summary: String,
    since: String,
    last_run: String,
    consecutive: u32,
    /// False for a target no longer in the config (its last state is kept as history).
    configured: bool,
}

fn check_state_json(state: &ServerState, row: CheckState) -> CheckStateJson {
    CheckStateJson {
        configured: state
            .metrics
            .is_configured(&row.tenant, row.check, &row.target),
        check: row.check.as_str(),
        status: row.status.as_str(),
        reason: row.reason.as_str(),
        reason_text: row.reason.describe(),
        since: time(row.since),
        last_run: time(row.last_run),
        consecutive: row.consecutive,
        tenant: row.tenant,
        target: row.target,
        summary: row.summary,
    }
}

#[derive(Serialize)]
struct TenantDetail {
    tenant: TenantJson,
    checks: Vec<CheckStateJson>,
    alerts: Vec<AlertJson>,
}

async fn tenant(
    State(state): State<ServerState>,
    Path(name): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Json<TenantDetail>, ApiError> {
    params(raw, &[])?;
    let catalog = Catalog::of(&state.metrics);
    let states = state
        .store
        .check_states_of(&[name.as_str()])
        .await
        .map_err(|err| ApiError::store(&err))?;
    if !catalog.contains(&name) && states.is_empty() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no tenant named {name:?}"),
        ));
    }
    let alert_rows = state
        .store
        .alert_states_of(&name)
        .await
        .map_err(|err| ApiError::store(&err))?;
    let tenant = tenant_json(
        &name,
        &overview::cells(&state.metrics, &catalog, &name, &states),
    );
    Ok(Json(TenantDetail {
        tenant,
        checks: states
            .into_iter()
            .map(|row| check_state_json(&state, row))
            .collect(),
        alerts: alert_rows.iter().flat_map(alerts_of).collect(),
    }))
}

#[derive(Serialize)]
struct ChecksPage {
    checks: Vec<CheckStateJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

async fn checks(
    State(state): State<ServerState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Json<ChecksPage>, ApiError> {
    let params = params(raw, &["tenant", "check", "status", "after", "limit"])?;
    let limit = params
        .limit(DEFAULT_LIMIT, MAX_PAGE)
        .map_err(ApiError::bad_request)?;
    let status = params
        .get("status")
        .map(|raw| {
            Status::ALL
                .into_iter()
                .find(|status| status.as_str() == raw)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "status must be ok, warning, critical or unknown, got {raw:?}"
                    ))
                })
        })
        .transpose()?;
    let filter = StateFilter {
        tenant: params.get("tenant").map(str::to_owned),
        check: params.check().map_err(ApiError::bad_request)?,
        status,
    };
    let after = params
        .get("after")
        .map(|raw| {
            raw.parse::<StateCursor>()
                .map_err(|err| ApiError::bad_request(format!("after: {err}")))
        })
        .transpose()?;
    let page = state
        .store
        .check_state_page(&filter, after.as_ref(), limit)
        .await
        .map_err(|err| ApiError::store(&err))?;
    Ok(Json(ChecksPage {
        checks: page
            .states
            .into_iter()
            .map(|row| check_state_json(&state, row))
            .collect(),
        next: page.next.map(|cursor| cursor.to_string()),
    }))
}

#[derive(Serialize)]
pub(crate) struct ObservationJson<'a> {
    id: i64,
    tenant: &'a str,
    check: &'static str,
    target: &'a str,
    scheduled_for: String,
    started_at: String,
    elapsed_ms: f64,
    status: &'static str,
    reason: &'static str,
    summary: &'a str,
    state_change: bool,
    evidence: &'a Evidence,
}

impl<'a> From<&'a StoredObservation> for ObservationJson<'a> {
    fn from(o: &'a StoredObservation) -> ObservationJson<'a> {
        ObservationJson {
            id: o.id,
            tenant: &o.tenant,
            check: o.check.as_str(),
            target: &o.target,
            scheduled_for: time(o.scheduled_for),
            started_at: time(o.started_at),
            elapsed_ms: o.elapsed.as_secs_f64() * 1000.0,
            status: o.status.as_str(),
            reason: o.reason.as_str(),
            summary: &o.summary,
            state_change: o.state_change,
            evidence: &o.evidence,
        }
    }
}

async fn observations(
    State(state): State<ServerState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let params = params(
        raw,
        &[
            "tenant",
            "check",
            "target",
            "changes_only",
            "before",
            "limit",
        ],
    )?;
    let limit = params
        .limit(DEFAULT_LIMIT, MAX_PAGE)
        .map_err(ApiError::bad_request)?;
    let filter = HistoryFilter {
        tenant: params.get("tenant").map(str::to_owned),
        check: params.check().map_err(ApiError::bad_request)?,
        target: params.get("target").map(str::to_owned),
        changes_only: params.flag("changes_only").map_err(ApiError::bad_request)?,
    };
    let before = params
        .get("before")
        .map(|raw| {
            raw.parse::<HistoryCursor>()
                .map_err(|err| ApiError::bad_request(format!("before: {err}")))
        })
        .transpose()?;
    let page = state
        .store
        .observation_page(&filter, before, limit)
        .await
        .map_err(|err| ApiError::store(&err))?;
    #[derive(Serialize)]
    struct Page<'a> {
        observations: Vec<ObservationJson<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    }
    Ok(Json(Page {
        observations: page
            .observations
            .iter()
            .map(ObservationJson::from)
            .collect(),
        next: page.next.map(|cursor| cursor.to_string()),
    })
    .into_response())
}

#[derive(Serialize)]
pub(crate) struct AlertJson {
    pub(crate) tenant: String,
    pub(crate) check: &'static str,
    pub(crate) target: String,
    /// `firing` (confirmed), `pending` (not ok, not yet confirmed) or `blind` (only unknown
    /// verdicts for `blind_after`).
    pub(crate) state: &'static str,
    /// For `firing`: `critical` or `warning`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) severity: Option<&'static str>,
    pub(crate) since: String,
    /// The alert state could not be read (written by a newer build?).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) unreadable: bool,
}

/// The alert conditions one stored state holds: firing or pending, and blind.
pub(crate) fn alerts_of(row: &tw_store::AlertStateRow) -> Vec<AlertJson> {
    let alert =
        |state: &'static str, severity: Option<&'static str>, since: Option<Timestamp>| AlertJson {
            tenant: row.tenant.clone(),
            check: row.check.as_str(),
            target: row.target.clone(),
            state,
            severity,
            since: since.map(time).unwrap_or_default(),
            unreadable: false,
        };
    let Ok(parsed) = serde_json::from_str::<tw_alert::AlertState>(&row.state_json) else {
        let mut unreadable = alert("unknown", None, None);
        unreadable.unreadable = true;
        return vec![unreadable];
    };
    let mut alerts = Vec::new();
    if let Some(since) = parsed.firing_since() {
        alerts.push(alert(
            "firing",
            parsed.severity().map(|severity| severity.as_str()),
            Some(since),
        ));
    } else if let Some(since) = parsed.pending_since() {
        alerts.push(alert("pending", None, Some(since)));
    }
    if let Some(since) = parsed.blind_since() {
        alerts.push(alert("blind", None, Some(since)));
    }
    alerts
}

#[derive(Serialize)]
struct AlertsPage {
    alerts: Vec<AlertJson>,
}

async fn alerts(
    State(state): State<ServerState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Json<AlertsPage>, ApiError> {
    let params = params(raw, &["tenant"])?;
    let rows = match params.get("tenant") {
        Some(tenant) => state.store.alert_states_of(tenant).await,
        None => state.store.alert_states().await,
    }
    .map_err(|err| ApiError::store(&err))?;
    Ok(Json(AlertsPage {
        alerts: rows.iter().flat_map(alerts_of).collect(),
    }))
}
