//! The axum router, the access guard and security headers, and the serve loop with graceful
//! shutdown.
//!
//! Routes fall in three groups: health (`/healthz`, `/readyz`) and the stylesheet are always
//! open; reads (`/metrics`, the status page, `/api/v1/`) pass the read guard, which lets
//! everyone through unless `[server] read_requires_token`; the state-changing routes
//! (`api_write.rs`: acks and silences) pass it too and then [`Access::Write`], which always
//! needs the token.
//! Every response carries a strict Content-Security-Policy (no script, no inline style, no
//! framing) and `nosniff`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tw_store::Store;

use crate::auth::{Access, ApiAuth};
use crate::{api, api_write, status_page, Health, Metrics};

type BeforeScrape = Arc<dyn Fn(&Metrics) + Send + Sync>;

/// No script at all, styles only from our own stylesheet, no plugins, no framing, forms and
/// links only back to us.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
     img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

#[derive(Clone)]
pub struct ServerState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// Called before each scrape to copy counters kept elsewhere (the scheduler's).
    pub before_scrape: Option<BeforeScrape>,
    /// What the status page and the API read.
    pub store: Store,
    pub auth: Arc<ApiAuth>,
}

pub fn router(state: ServerState) -> Router {
    let reads = Router::new()
        .route("/metrics", get(metrics))
        .merge(status_page::routes())
        .merge(api::routes())
        .merge(api_write::routes(state.clone()))
        // route_layer: an unknown path is a 404, not a 401.
        .route_layer(middleware::from_fn_with_state(state.clone(), guard_reads));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(status_page::STYLESHEET_PATH, get(status_page::stylesheet))
        .merge(reads)
        .fallback(not_found)
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled; in-flight requests finish first.
pub async fn serve(
    listener: TcpListener,
    state: ServerState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn guard_reads(State(state): State<ServerState>, request: Request, next: Next) -> Response {
    match state.auth.authorize(request.headers(), Access::Read) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            let path = request.uri().path();
            let api = path.starts_with("/api/");
            // A browser opening the status page gets a Basic challenge and so a password
            // prompt; API clients and Prometheus get Bearer only.
            let browser = !api && path != "/metrics";
            let mut response = if api {
                api::ApiError::new(denied.status(), denied.message()).into_response()
            } else {
                (denied.status(), format!("{}\n", denied.message())).into_response()
            };
            for challenge in denied.challenges(browser) {
                response
                    .headers_mut()
                    .append(header::WWW_AUTHENTICATE, challenge);
            }
            response
        }
    }
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Pages and API answers are live data; only the stylesheet sets its own caching.
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn metrics(State(state): State<ServerState>) -> Response {
    if let Some(before) = &state.before_scrape {
        before(&state.metrics);
    }
    match state.metrics.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "Cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "cannot render metrics\n").into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<ServerState>) -> Response {
    match state.health.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(problems) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready:\n{}\n", problems.join("\n")),
        )
            .into_response(),
    }
}
