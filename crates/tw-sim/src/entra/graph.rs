//! The simulated Microsoft Graph v1.0 (reference §3): bearer check, the directory reads a
//! monitor makes, paging and Graph's OData error envelope.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;
use tokio::time::Instant;

use super::https::{self, Handled};
use super::stamp::{self, Utc};
use super::state::Shared;

pub(super) const CONTENT_TYPE: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

pub(super) async fn handle(shared: &Shared, request: Request) -> Handled {
    let cri = https::header_text(request.headers(), "client-request-id");
    let cri = cri.as_deref();
    let bearer = https::header_text(request.headers(), "authorization");
    let tenant_id = match authenticate(shared, bearer.as_deref()) {
        Ok(tenant_id) => tenant_id,
        Err(message) => return unauthenticated(shared, message, cri).into(),
    };
    let denied = shared
        .state
        .lock()
        .directory(&tenant_id)
        .is_some_and(|directory| {
            directory
                .denied
                .iter()
                .any(|fragment| request.uri().path().contains(fragment.as_str()))
        });
    let response = if denied {
        error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
            cri,
        )
    } else {
        error(
            StatusCode::NOT_IMPLEMENTED,
            "notSupported",
            "Graph endpoints are not simulated yet.",
            cri,
        )
    };
    Handled {
        response,
        authorized: true,
    }
}

/// The tenant whose directory a bearer token reads, or the 401 message.
fn authenticate(shared: &Shared, authorization: Option<&str>) -> Result<String, &'static str> {
    let token = authorization
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or("Access token is empty.")?;
    let state = shared.state.lock();
    let issued = state
        .tokens
        .get(token)
        .ok_or("IDX14100: JWT is not well formed, there are no dots (.).")?;
    if issued.expires_at <= Instant::now() {
        return Err("Lifetime validation failed, the token is expired.");
    }
    if !state.tenants.contains_key(&issued.tenant_id) {
        return Err("Access token validation failure. Invalid audience.");
    }
    Ok(issued.tenant_id.clone())
}

fn unauthenticated(shared: &Shared, message: &str, cri: Option<&str>) -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        message,
        cri,
    );
    https::set(
        response.headers_mut(),
        "www-authenticate",
        &format!(
            "Bearer realm=\"\", authorization_uri=\"{}/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
            shared.login_url
        ),
    );
    response
}

/// Graph's `{"error":{"code","message","innerError":{…}}}` with `request-id` headers.
pub(super) fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    client_request_id: Option<&str>,
) -> Response {
    let request_id = stamp::guid();
    let client_request_id = https::client_request_id(client_request_id);
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": Utc::now().graph(),
                "request-id": request_id,
                "client-request-id": client_request_id,
            }
        }
    });
    let mut response = https::json(status, CONTENT_TYPE, &body);
    ids(&mut response, &request_id, &client_request_id);
    response
}

/// The documented throttling answer's body (reference §3.0); the caller adds `Retry-After`.
pub(super) fn too_many_requests(client_request_id: Option<&str>) -> Response {
    let request_id = stamp::guid();
    let client_request_id = https::client_request_id(client_request_id);
    let body = json!({
        "error": {
            "code": "TooManyRequests",
            "innerError": {
                "code": "429",
                "date": Utc::now().graph(),
                "message": "Please retry after",
                "request-id": request_id,
                "client-request-id": client_request_id,
                "status": "429",
            },
            "message": "Please retry again later.",
        }
    });
    let mut response = https::json(StatusCode::TOO_MANY_REQUESTS, CONTENT_TYPE, &body);
    ids(&mut response, &request_id, &client_request_id);
    response
}

fn ids(response: &mut Response, request_id: &str, client_request_id: &str) {
    let headers = response.headers_mut();
    https::set(headers, "request-id", request_id);
    https::set(headers, "client-request-id", client_request_id);
    https::set(
        headers,
        "x-ms-ags-diagnostic",
        r#"{"ServerInfo":{"DataCenter":"West Europe","Slice":"E","Ring":"5","ScaleUnit":"003","RoleInstance":"AM1PEPF0000TWSIM"}}"#,
    );
}
