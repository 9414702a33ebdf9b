//! The HTTPS plumbing shared by the login, Graph and RDAP listeners: accept TCP on loopback,
//! do the TLS handshake, serve HTTP/1.1 with hyper, and run every request through one entry
//! point that applies pending faults, dispatches to the listener's handler and logs the
//! request.
//!
//! Faults and the request log live here rather than in each handler so that every listener
//! honours them identically, and a request is logged even when a fault answered it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::time::{Duration, Instant};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::model::{FaultKind, SimRequest, SimServer};
use super::state::Shared;
use super::{graph, login, rdap, stamp};

/// A client that connects and never finishes the handshake must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// No request this simulator understands is larger (a token form with an assertion is ~2 KiB).
pub(super) const MAX_REQUEST_BODY: usize = 256 * 1024;

/// Binds `127.0.0.1:0`: a fixture must never be reachable from outside the machine.
pub(super) async fn bind() -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let address = listener.local_addr()?;
    Ok((listener, address))
}

#[derive(Clone)]
struct Listener {
    shared: Arc<Shared>,
    server: SimServer,
}

/// Serves `server`'s endpoints on `listener` until `shutdown` is cancelled.
pub(super) fn spawn(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shared: Arc<Shared>,
    server: SimServer,
    shutdown: CancellationToken,
) {
    let router = Router::new()
        .fallback(entry)
        .with_state(Listener { shared, server });
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(err) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::debug!(?server, %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let acceptor = acceptor.clone();
            let router = router.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(err)) => {
                        tracing::debug!(?server, %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    result = connection => {
                        if let Err(err) = result {
                            tracing::debug!(?server, %err, "connection ended with an error");
                        }
                    }
                }
            });
        }
    });
}

/// What a handler returns: the response and whether the request carried a valid credential.
pub(super) struct Handled {
    pub(super) response: Response,
    pub(super) authorized: bool,
}

impl From<Response> for Handled {
    fn from(response: Response) -> Self {
        Handled {
            response,
            authorized: false,
        }
    }
}

async fn entry(State(listener): State<Listener>, request: Request) -> Response {
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let client_request_id = header_text(request.headers(), "client-request-id");
    let target = if query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let fault = listener.shared.state.lock().take_fault(&target);
    let server = listener.server;
    let handled = match fault {
        None => dispatch(&listener, request).await,
        Some(FaultKind::Delay(delay)) => {
            tokio::time::sleep(delay).await;
            dispatch(&listener, request).await
        }
        Some(FaultKind::TruncatedJson) => {
            let handled = dispatch(&listener, request).await;
            Handled {
                response: truncate(handled.response).await,
                authorized: handled.authorized,
            }
        }
        Some(kind) => fault_response(server, &kind, client_request_id.as_deref()).into(),
    };
    let status = handled.response.status().as_u16();
    tracing::debug!(?server, %method, %path, status, "entra sim request");
    let mut state = listener.shared.state.lock();
    if state.log_requests {
        state.requests.push(SimRequest {
            at: Instant::now(),
            server,
            method,
            path,
            query,
            client_request_id,
            authorized: handled.authorized,
            status,
        });
    }
    drop(state);
    handled.response
}

async fn dispatch(listener: &Listener, request: Request) -> Handled {
    match listener.server {
        SimServer::Login => login::handle(&listener.shared, request).await,
        SimServer::Graph => graph::handle(&listener.shared, request).await,
        SimServer::Rdap => rdap::handle(&listener.shared, request).await,
    }
}

/// The normal answer's body cut in half, with status 200 and the other headers kept.
async fn truncate(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(half))
}

fn fault_response(
    server: SimServer,
    kind: &FaultKind,
    client_request_id: Option<&str>,
) -> Response {
    let (status, retry_after) = match kind {
        FaultKind::TooManyRequests { retry_after_s } => {
            (StatusCode::TOO_MANY_REQUESTS, *retry_after_s)
        }
        FaultKind::Unavailable { retry_after_s } => {
            (StatusCode::SERVICE_UNAVAILABLE, *retry_after_s)
        }
        FaultKind::GatewayTimeout => {
            return (StatusCode::GATEWAY_TIMEOUT, Body::empty()).into_response();
        }
        FaultKind::MalformedJson => {
            let mut response =
                (StatusCode::OK, "{\"value\": [{\"id\": \"4f1e\",, <html>").into_response();
            set(response.headers_mut(), "content-type", content_type(server));
            return response;
        }
        // Handled by the caller; an answer is still needed for exhaustiveness.
        FaultKind::Delay(_) | FaultKind::TruncatedJson => {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let throttled = status == StatusCode::TOO_MANY_REQUESTS;
    let mut response = match server {
        SimServer::Graph => {
            if throttled {
                graph::too_many_requests(client_request_id)
            } else {
                graph::error(
                    status,
                    "ServiceNotAvailable",
                    "Service unavailable. Please retry later.",
                    client_request_id,
                )
            }
        }
        SimServer::Login => {
            if throttled {
                login::error(status, "temporarily_unavailable", 90055, client_request_id)
            } else {
                login::error(status, "temporarily_unavailable", 90033, client_request_id)
            }
        }
        SimServer::Rdap => {
            if throttled {
                rdap::error(status, "Too Many Requests")
            } else {
                rdap::error(status, "Service Unavailable")
            }
        }
    };
    if let Some(seconds) = retry_after {
        set(response.headers_mut(), "retry-after", &seconds.to_string());
    }
    response
}

fn content_type(server: SimServer) -> &'static str {
    match server {
        SimServer::Login => login::CONTENT_TYPE,
        SimServer::Graph => graph::CONTENT_TYPE,
        SimServer::Rdap => rdap::CONTENT_TYPE,
    }
}

pub(super) fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Sets a header; names and values this module builds are always valid, others are skipped
/// (`HeaderName::from_static` would panic on an upper-case name).
pub(super) fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        headers.insert(name, value);
    }
}

/// A JSON response with `content_type`.
pub(super) fn json(status: StatusCode, content_type: &str, body: &serde_json::Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    set(response.headers_mut(), "content-type", content_type);
    response
}

/// The client's `client-request-id` if it sent one, else a fresh one (Graph and login both echo
/// or invent it).
pub(super) fn client_request_id(sent: Option<&str>) -> String {
    sent.map_or_else(stamp::guid, str::to_owned)
}
