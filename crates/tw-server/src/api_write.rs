//! The state-changing part of the JSON API: acknowledge a firing alert
//! (`POST /api/v1/acks`) and set, list and remove run-time silences (`POST`/`GET
//! /api/v1/silences`, `DELETE /api/v1/silences/{id}`).
//!
//! Writes always need the API token ([`Access::Write`]; with no token configured they are
//! refused with 403), whatever `read_requires_token` says; listing silences is a read. Bodies
//! must be `application/json` with known fields only: a cross-site form cannot send that
//! without a CORS preflight (which is never granted), so a browser's remembered Basic
//! credentials cannot be used against these endpoints, and a misspelt field is an error
//! rather than silently ignored. They write through tw-store like `tenantwatch ack` and
//! `tenantwatch silence`; the daemon reads them back within seconds.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tw_core::{CheckKind, Timestamp};
use tw_store::{AckOutcome, AckRow, NewAck, NewSilence, Removal, SilenceRow};

use crate::api::{ApiError, Params};
use crate::auth::Access;
use crate::ServerState;

/// A run-time silence lasts at most this long (as with `tenantwatch silence add`): longer
/// ones belong in the config, and a slip of the finger must not silence a tenant for good.
const MAX_SILENCE: Duration = Duration::from_secs(90 * 86_400);

/// What `acked_by` and `created_by` say when the request does not.
const DEFAULT_BY: &str = "api";

pub(crate) fn routes(state: ServerState) -> Router<ServerState> {
    let write = middleware::from_fn_with_state(state, guard_writes);
    Router::new()
        .route(
            "/api/v1/acks",
            axum::routing::post(add_ack).route_layer(write.clone()),
        )
        .route(
            "/api/v1/silences",
            get(list_silences).merge(axum::routing::post(add_silence).route_layer(write.clone())),
        )
        .route(
            "/api/v1/silences/{id}",
            delete(remove_silence).route_layer(write),
        )
}

/// Lets a request through only with the API token, answering like the read guard otherwise
/// (`{"error": …}` and a Bearer challenge).
async fn guard_writes(State(state): State<ServerState>, request: Request, next: Next) -> Response {
    match state.auth.authorize(request.headers(), Access::Write) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            let mut response = ApiError::new(denied.status(), denied.message()).into_response();
            for challenge in denied.challenges(false) {
                response
                    .headers_mut()
                    .append(header::WWW_AUTHENTICATE, challenge);
            }
            response
        }
    }
}

/// A JSON body, or a 400 (415 without `Content-Type: application/json`) in the API's error
/// shape.
fn body<T>(parsed: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    match parsed {
        Ok(Json(value)) => Ok(value),
        Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the body as Content-Type: application/json",
        )),
        Err(rejection) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body: {}", rejection.body_text()),
        )),
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

fn check_of(raw: &str) -> Result<CheckKind, ApiError> {
    raw.parse::<CheckKind>()
        .map_err(|err| bad_request(format!("check: {err}")))
}

fn by_or_default(by: Option<String>) -> String {
    by.map(|by| by.trim().to_owned())
        .filter(|by| !by.is_empty())
        .unwrap_or_else(|| DEFAULT_BY.to_owned())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    tenant: String,
    check: String,
    target: String,
    #[serde(default)]
    comment: Option<String>,
    /// Who acknowledges (a name, a ticket system); default `api`.
    #[serde(default)]
    by: Option<String>,
}

#[derive(Serialize)]
struct AckJson {
    tenant: String,
    check: &'static str,
    target: String,
    episode: u64,
    acked_by: String,
    acked_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    /// True when this episode had been acknowledged before (that acknowledgement stands).
    already: bool,
}

impl AckJson {
    fn of(row: AckRow, already: bool) -> AckJson {
        AckJson {
            tenant: row.tenant,
            check: row.check.as_str(),
            target: row.target,
            episode: row.episode,
            acked_by: row.acked_by,
            acked_at: row.acked_at.to_string(),
            comment: row.comment,
            already,
        }
    }
}

/// Acknowledges the firing episode receivers were last told about: 201 with the ack, 200 if
/// it was acknowledged before, 404 for a key with no alert state, 409 when it is not firing.
async fn add_ack(
    State(state): State<ServerState>,
    request: Result<Json<AckRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request)?;
    let check = check_of(&request.check)?;
    let rows = state
        .store
        .alert_states_of(&request.tenant)
        .await
        .map_err(|err| ApiError::store(&err))?;
    let Some(row) = rows
        .into_iter()
        .find(|row| row.check == check && row.target.eq_ignore_ascii_case(&request.target))
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "{} {check} {}: no alert state (never checked, or never failed)",
                request.tenant, request.target
            ),
        ));
    };
    let alert = serde_json::from_str::<tw_alert::AlertState>(&row.state_json).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "stored alert state unreadable (written by a newer build?)",
        )
    })?;
    let Some(episode) = alert.notified_episode() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{} {check} {}: not firing; nothing to acknowledge",
                row.tenant, row.target
            ),
        ));
    };
    let ack = NewAck {
        tenant: row.tenant,
        check,
        target: row.target,
        episode,
        acked_by: by_or_default(request.by),
        acked_at: Timestamp::now(),
        comment: request.comment.filter(|c| !c.trim().is_empty()),
    };
    let outcome = state
        .store
        .add_ack(&ack)
        .await
        .map_err(|err| ApiError::store(&err))?;
    Ok(match outcome {
        AckOutcome::Added(row) => {
            tracing::info!(tenant = %row.tenant, check = %row.check, target = %row.target, episode = row.episode, acked_by = %row.acked_by, "Alert acknowledged over the API");
            (StatusCode::CREATED, Json(AckJson::of(row, false))).into_response()
        }
        AckOutcome::Already(row) => (StatusCode::OK, Json(AckJson::of(row, true))).into_response(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceRequest {
    tenant: String,
    #[serde(default)]
    check: Option<String>,
    #[serde(default)]
    target: Option<String>,
    /// UTC time (RFC 3339); default now.
    #[serde(default)]
    start: Option<String>,
    /// UTC time (RFC 3339); give this or `duration_seconds`.
    #[serde(default)]
    end: Option<String>,
    #[serde(default)]
    duration_seconds: Option<u64>,
    reason: String,
    #[serde(default)]
    by: Option<String>,
}

#[derive(Serialize)]
struct SilenceJson {
    id: i64,
    tenant: Option<String>,
    check: Option<&'static str>,
    target: Option<String>,
    start: String,
    end: String,
    reason: String,
    created_by: String,
    created_at: String,
    /// `active`, `upcoming`, `ended` or `removed`.
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_by: Option<String>,
}

impl SilenceJson {
    fn of(row: SilenceRow, now: Timestamp) -> SilenceJson {
        let state = match row.removed_at {
            Some(_) => "removed",
            None if row.ends_at <= now => "ended",
            None if row.starts_at > now => "upcoming",
            None => "active",
        };
        SilenceJson {
            id: row.id,
            tenant: row.tenant,
            check: row.check.map(CheckKind::as_str),
            target: row.target,
            start: row.starts_at.to_string(),
            end: row.ends_at.to_string(),
            reason: row.reason,
            created_by: row.created_by,
            created_at: row.created_at.to_string(),
            state,
            removed_at: row.removed_at.map(|at| at.to_string()),
            removed_by: row.removed_by,
        }
    }
}

fn utc(field: &str, raw: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_utc(raw).ok_or_else(|| {
        bad_request(format!(
            "{field}: {raw:?} is not a UTC time such as \"2026-11-24T06:00:00Z\""
        ))
    })
}

/// Adds a silence: 201 with it (and `Location`), 400 for one that cannot be (an unknown
/// tenant or check, no end or two, an end not after the start and now, longer than 90 days,
/// no reason).
async fn add_silence(
    State(state): State<ServerState>,
    request: Result<Json<SilenceRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let request = body(request)?;
    if !state
        .metrics
        .configured_checks()
        .contains_key(&request.tenant)
    {
        return Err(bad_request(format!(
            "tenant: no tenant named {:?} is configured",
            request.tenant
        )));
    }
    let check = request.check.as_deref().map(check_of).transpose()?;
    let now = Timestamp::now();
    let starts_at = match &request.start {
        Some(raw) => utc("start", raw)?,
        None => now,
    };
    let ends_at = match (&request.end, request.duration_seconds) {
        (Some(raw), None) => utc("end", raw)?,
        (None, Some(seconds)) => starts_at.plus(Duration::from_secs(seconds)),
        _ => return Err(bad_request("give end or duration_seconds (one of them)")),
    };
    if ends_at <= starts_at || ends_at <= now {
        return Err(bad_request(format!(
            "the silence must end after it starts and after now (end {ends_at})"
        )));
    }
    if Duration::from_millis(ends_at.millis_since(starts_at)) > MAX_SILENCE {
        return Err(bad_request(
            "a run-time silence lasts at most 90 days; use a [[silences]] window in the config",
        ));
    }
    if request.reason.trim().is_empty() {
        return Err(bad_request(
            "reason: say why (it is logged with every alert the silence holds back)",
        ));
    }
    let silence = NewSilence {
        tenant: Some(request.tenant),
        check,
        target: request.target.filter(|t| !t.trim().is_empty()),
        starts_at,
        ends_at,
        reason: request.reason,
        created_by: by_or_default(request.by),
        created_at: now,
    };
    let id = state
        .store
        .add_silence(&silence)
        .await
        .map_err(|err| ApiError::store(&err))?;
    tracing::info!(silence_id = id, tenant = ?silence.tenant, check = ?silence.check, target = ?silence.target, until = %ends_at, created_by = %silence.created_by, "Silence added over the API");
    let row = SilenceRow {
        id,
        tenant: silence.tenant,
        check: silence.check,
        target: silence.target,
        starts_at,
        ends_at,
        reason: silence.reason,
        created_by: silence.created_by,
        created_at: now,
        removed_at: None,
        removed_by: None,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/v1/silences/{id}"))],
        Json(SilenceJson::of(row, now)),
    )
        .into_response())
}

#[derive(Serialize)]
struct SilencesPage {
    silences: Vec<SilenceJson>,
}

/// Silences in force or to come; with `all=true`, ended and removed ones too.
async fn list_silences(
    State(state): State<ServerState>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Json<SilencesPage>, ApiError> {
    let params = Params::parse(raw, &["all"]).map_err(bad_request)?;
    let all = params.flag("all").map_err(bad_request)?;
    let now = Timestamp::now();
    let rows = state
        .store
        .silences(now, all)
        .await
        .map_err(|err| ApiError::store(&err))?;
    Ok(Json(SilencesPage {
        silences: rows
            .into_iter()
            .map(|row| SilenceJson::of(row, now))
            .collect(),
    }))
}

/// Ends a silence now: 200 with it (also when it had been removed before), 404 when there is
/// no such silence. `by` (query) says who; default `api`.
async fn remove_silence(
    State(state): State<ServerState>,
    Path(id): Path<String>,
    Query(raw): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| bad_request(format!("{id:?} is not a silence id")))?;
    let params = Params::parse(raw, &["by"]).map_err(bad_request)?;
    let by = by_or_default(params.get("by").map(str::to_owned));
    let now = Timestamp::now();
    match state
        .store
        .remove_silence(id, &by, now)
        .await
        .map_err(|err| ApiError::store(&err))?
    {
        Removal::Removed(row) => {
            tracing::info!(silence_id = id, removed_by = %by, "Silence removed over the API");
            Ok(Json(SilenceJson::of(row, now)).into_response())
        }
        Removal::AlreadyRemoved(row) => Ok(Json(SilenceJson::of(row, now)).into_response()),
        Removal::NotFound => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no silence with id {id}"),
        )),
    }
}
