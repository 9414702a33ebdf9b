//! The simulated `login.microsoftonline.com`: OpenID discovery per tenant or domain, user realm
//! discovery, and the client-credentials token endpoint with client secrets and certificate
//! assertions (reference §1.1, §1.2, §2).
//!
//! Every error answers in Entra's OAuth error shape with the AADSTS code a probe classifies on;
//! texts are paraphrased, because Microsoft says they change and a probe must not read them.

use std::collections::HashMap;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::json;

use super::assertion::{self, RegisteredCert};
use super::https::{self, Handled};
use super::stamp::{self, Utc};
use super::state::{Registered, Shared};

pub(super) const CONTENT_TYPE: &str = "application/json; charset=utf-8";
const ESTS_SERVER: &str = "2.1.19521.4 - WEULR1 ProdSlices";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const CLOUD_INSTANCE: &str = "microsoftonline.com";
/// The `tid` Entra uses for personal Microsoft accounts (the `consumers` keyword).
const CONSUMERS_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

pub(super) async fn handle(shared: &Shared, request: Request) -> Handled {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let sent_id = https::header_text(request.headers(), "client-request-id");
    let cri = sent_id.as_deref();
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(stamp::percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (segments.as_slice(), method == Method::GET) {
        ([tenant, "v2.0", ".well-known", "openid-configuration"], true) => {
            discovery(shared, tenant, true, cri).into()
        }
        ([tenant, ".well-known", "openid-configuration"], true) => {
            discovery(shared, tenant, false, cri).into()
        }
        (["common", "userrealm", login], true) => realm(shared, login, &query, cri).into(),
        ([tenant, "oauth2", "v2.0", "token"], _) => {
            if method != Method::POST {
                return aadsts(900561, None, cri).into();
            }
            let headers = request.headers().clone();
            let body =
                match axum::body::to_bytes(request.into_body(), https::MAX_REQUEST_BODY).await {
                    Ok(body) => body,
                    Err(_) => return aadsts(900144, None, cri).into(),
                };
            let basic = https::header_text(&headers, "authorization");
            token(shared, tenant, &body, basic.as_deref(), cri)
        }
        _ => {
            let mut response = https::json(
                StatusCode::NOT_FOUND,
                CONTENT_TYPE,
                &json!({"error": "not_found", "error_description": "No such endpoint in the simulator."}),
            );
            common_headers(&mut response, &stamp::guid(), cri);
            response.into()
        }
    }
}

fn common_headers(response: &mut Response, request_id: &str, client_request_id: Option<&str>) {
    let headers = response.headers_mut();
    https::set(headers, "x-ms-request-id", request_id);
    https::set(headers, "x-ms-ests-server", ESTS_SERVER);
    https::set(headers, "access-control-allow-origin", "*");
    if let Some(id) = client_request_id {
        https::set(headers, "client-request-id", id);
    }
}

// ---------------------------------------------------------------------------------------------
// Discovery

fn discovery(shared: &Shared, tenant: &str, v2: bool, cri: Option<&str>) -> Response {
    let lower = tenant.to_ascii_lowercase();
    let tid = match lower.as_str() {
        "common" | "organizations" if v2 => Some("{tenantid}".to_owned()),
        "common" if !v2 => Some("{tenantid}".to_owned()),
        "consumers" => Some(CONSUMERS_TENANT.to_owned()),
        _ => shared
            .state
            .lock()
            .resolve_tenant(tenant)
            .map(|found| found.tenant_id.to_ascii_lowercase()),
    };
    let mut response = match tid {
        Some(tid) => {
            let request_id = stamp::guid();
            let mut response = https::json(
                StatusCode::OK,
                CONTENT_TYPE,
                &discovery_document(&shared.login_url, &shared.graph_url, &tid, v2),
            );
            common_headers(&mut response, &request_id, cri);
            response
        }
        None => {
            let text = format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and \
                 are signing into the correct cloud. Check with your subscription administrator, \
                 this may happen if there are no active subscriptions for the tenant."
            );
            error_with(StatusCode::BAD_REQUEST, "invalid_tenant", 90002, &text, cri)
        }
    };
    // Both answers carry it (reference §1.1): a cache in front of a probe may keep a 400.
    https::set(
        response.headers_mut(),
        "cache-control",
        "max-age=86400, private",
    );
    response
}

fn discovery_document(login: &str, graph: &str, tid: &str, v2: bool) -> serde_json::Value {
    let base = format!("{login}/{tid}");
    if !v2 {
        return json!({
            "token_endpoint": format!("{base}/oauth2/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{login}/common/discovery/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
            "scopes_supported": ["openid"],
            "issuer": format!("https://sts.windows.net/{tid}/"),
            "microsoft_multi_refresh_token": true,
            "authorization_endpoint": format!("{base}/oauth2/authorize"),
            "http_logout_supported": true,
            "frontchannel_logout_supported": true,
            "end_session_endpoint": format!("{base}/oauth2/logout"),
            "tenant_region_scope": "EU",
            "cloud_instance_name": CLOUD_INSTANCE,
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net"
        });
    }
    json!({
        "token_endpoint": format!("{base}/oauth2/v2.0/token"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": format!("{base}/discovery/v2.0/keys"),
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": format!("{base}/v2.0"),
        "request_uri_parameter_supported": false,
        "userinfo_endpoint": format!("{graph}/oidc/userinfo"),
        "authorization_endpoint": format!("{base}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{base}/oauth2/v2.0/devicecode"),
        "http_logout_supported": true,
        "frontchannel_logout_supported": true,
        "end_session_endpoint": format!("{base}/oauth2/v2.0/logout"),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name", "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr", "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": format!("{base}/kerberos"),
        "tenant_region_scope": "EU",
        "cloud_instance_name": CLOUD_INSTANCE,
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net"
    })
}

// ---------------------------------------------------------------------------------------------
// User realm

fn realm(shared: &Shared, login: &str, query: &str, cri: Option<&str>) -> Response {
    let params: HashMap<String, String> = serde_urlencoded::from_str(query).unwrap_or_default();
    let v2 = params
        .get("api-version")
        .is_some_and(|version| version.starts_with('2'));
    let domain = login
        .rsplit_once('@')
        .map(|(_, domain)| domain.trim_end_matches('.').to_ascii_lowercase())
        .filter(|domain| !domain.is_empty());
    let (namespace, brand, viral) = {
        let state = shared.state.lock();
        let viral = domain
            .as_ref()
            .is_some_and(|domain| state.viral.contains(domain));
        match &domain {
            None => ("Unknown".to_owned(), String::new(), viral),
            Some(domain) => {
                let tenant = state.tenant_of_domain(domain);
                let namespace = state
                    .namespace_overrides
                    .get(domain)
                    .cloned()
                    .or_else(|| tenant.map(|tenant| tenant.namespace_type.clone()))
                    .unwrap_or_else(|| "Unknown".to_owned());
                let brand = tenant.map_or_else(|| domain.clone(), |t| t.display_name.clone());
                (namespace, brand, viral)
            }
        }
    };
    let domain = domain.unwrap_or_default();
    let federated = namespace.eq_ignore_ascii_case("Federated");
    let known = !namespace.eq_ignore_ascii_case("Unknown");
    let body = if v2 {
        if known {
            let mut body = json!({
                "NameSpaceType": namespace,
                "Login": login,
                "DomainName": domain,
                "FederationBrandName": brand,
                "TenantBrandingInfo": null,
                "cloud_instance_name": CLOUD_INSTANCE,
            });
            if federated {
                body["AuthURL"] = json!(format!(
                    "https://sts.{domain}/adfs/ls/?username={}&wa=wsignin1.0&wtrealm=urn%3afederation%3aMicrosoftOnline&wctx=",
                    stamp::percent_encode(login)
                ));
                body["federation_protocol"] = json!("WSTrust");
            }
            if viral {
                body["IsViral"] = json!(true);
            }
            body
        } else {
            json!({"NameSpaceType": "Unknown", "Login": login, "cloud_instance_name": CLOUD_INSTANCE})
        }
    } else if known {
        let mut body = json!({
            "ver": "1.0",
            "account_type": namespace,
            "domain_name": domain,
            "cloud_instance_name": CLOUD_INSTANCE,
            "cloud_audience_urn": "urn:federation:MicrosoftOnline",
        });
        if federated {
            body["federation_protocol"] = json!("WSTrust");
            body["federation_metadata_url"] =
                json!(format!("https://sts.{domain}/adfs/services/trust/mex"));
            body["federation_active_auth_url"] = json!(format!(
                "https://sts.{domain}/adfs/services/trust/2005/usernamemixed"
            ));
        }
        body
    } else {
        json!({"ver": "1.0", "account_type": "Unknown", "cloud_instance_name": CLOUD_INSTANCE,
               "cloud_audience_urn": "urn:federation:MicrosoftOnline"})
    };
    let mut response = https::json(StatusCode::OK, CONTENT_TYPE, &body);
    common_headers(&mut response, &stamp::guid(), cri);
    https::set(
        response.headers_mut(),
        "cache-control",
        "no-store, no-cache",
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Token

fn token(
    shared: &Shared,
    tenant: &str,
    body: &[u8],
    authorization: Option<&str>,
    cri: Option<&str>,
) -> Handled {
    let form: HashMap<String, String> = match serde_urlencoded::from_bytes(body) {
        Ok(form) => form,
        Err(_) => return aadsts(900144, None, cri).into(),
    };
    let field = |name: &str| {
        form.get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    };
    let lower_tenant = tenant.to_ascii_lowercase();
    if matches!(
        lower_tenant.as_str(),
        "common" | "organizations" | "consumers"
    ) {
        return aadsts(9001023, None, cri).into();
    }
    let mut state = shared.state.lock();
    let Some(tid) = state
        .resolve_tenant(tenant)
        .map(|found| found.tenant_id.to_ascii_lowercase())
    else {
        let text = format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and \
             are signing into the correct cloud. Check with your subscription administrator, this \
             may happen if there are no active subscriptions for the tenant."
        );
        return error_with(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            &text,
            cri,
        )
        .into();
    };
    if let Some(code) = state.token_errors.get(&tid).copied() {
        return aadsts(code, None, cri).into();
    }
    match field("grant_type") {
        Some("client_credentials") => {}
        Some(_) => return aadsts(70003, None, cri).into(),
        None => {
            return aadsts(
                900144,
                Some("The request body must contain the following parameter: 'grant_type'."),
                cri,
            )
            .into()
        }
    }
    // client_secret_basic: RFC 6749 §2.3.1 form-encodes both parts before base64.
    let basic = authorization
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| STANDARD.decode(encoded.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(id, secret)| (form_decode(id), form_decode(secret)))
        });
    let client_id = match (field("client_id"), &basic) {
        (Some(id), _) => id.to_owned(),
        (None, Some((id, _))) => id.clone(),
        (None, None) => {
            return aadsts(
                900144,
                Some("The request body must contain the following parameter: 'client_id'."),
                cri,
            )
            .into();
        }
    };
    match field("scope") {
        Some(GRAPH_SCOPE) => {}
        Some(scope) if scope.ends_with("/.default") => {
            return aadsts(500011, None, cri).into();
        }
        Some(_) => return aadsts(70011, None, cri).into(),
        None => {
            return aadsts(
                900144,
                Some("The request body must contain the following parameter: 'scope'."),
                cri,
            )
            .into();
        }
    }
    let Some(credentials) = state
        .apps
        .get(&(tid.clone(), client_id.to_ascii_lowercase()))
    else {
        let text = format!(
            "Application with identifier '{client_id}' was not found in the directory '{tid}'. \
             This can happen if the application has not been installed by the administrator of \
             the tenant or consented to by any user in the tenant. You might have sent your \
             authentication request to the wrong tenant."
        );
        return error_with(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            &text,
            cri,
        )
        .into();
    };
    let secret = field("client_secret")
        .map(str::to_owned)
        .or_else(|| basic.map(|(_, secret)| secret));
    let assertion = field("client_assertion");
    let verdict = match (secret, assertion) {
        (Some(_), Some(_)) => Err(90014),
        (None, None) => Err(7000218),
        (Some(secret), None) => {
            let known = credentials.iter().any(|credential| {
                matches!(credential, Registered::Secret(registered) if *registered == secret)
            });
            if known {
                Ok(())
            } else {
                Err(7000215)
            }
        }
        (None, Some(assertion)) => {
            if field("client_assertion_type") != Some(JWT_BEARER) {
                Err(90014)
            } else {
                let certs: Vec<&RegisteredCert> = credentials
                    .iter()
                    .filter_map(|credential| match credential {
                        Registered::Certificate(cert) => Some(cert.as_ref()),
                        Registered::Secret(_) => None,
                    })
                    .collect();
                let audiences = [
                    format!("{}/{tid}/oauth2/v2.0/token", shared.login_url),
                    format!("{}/{tenant}/oauth2/v2.0/token", shared.login_url),
                ];
                assertion::verify(assertion, &certs, &client_id, &audiences)
                    .map_err(assertion::Rejection::code)
            }
        }
    };
    if let Err(code) = verdict {
        return aadsts(code, None, cri).into();
    }
    let access_token = state.issue_token(&tid);
    let lifetime = state.token_lifetime_s;
    drop(state);
    let mut response = https::json(
        StatusCode::OK,
        CONTENT_TYPE,
        &json!({
            "token_type": "Bearer",
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access_token,
        }),
    );
    common_headers(&mut response, &stamp::guid(), cri);
    let headers = response.headers_mut();
    https::set(headers, "cache-control", "no-store, no-cache");
    https::set(headers, "pragma", "no-cache");
    Handled {
        response,
        authorized: true,
    }
}

fn form_decode(text: &str) -> String {
    stamp::percent_decode(&text.replace('+', " "))
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Status, OAuth `error` value and paraphrased description for an AADSTS code.
fn describe(code: u32) -> (StatusCode, &'static str, &'static str) {
    let bad = StatusCode::BAD_REQUEST;
    let unauthorized = StatusCode::UNAUTHORIZED;
    match code {
        7000222 => (unauthorized, "invalid_client", "The provided client secret keys for app are expired. Visit the Azure portal to create new keys for your app."),
        7000215 => (unauthorized, "invalid_client", "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID."),
        700027 => (unauthorized, "invalid_client", "The certificate with identifier used to sign the client assertion is not registered on application. The key was not found."),
        7000218 => (bad, "invalid_client", "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."),
        700024 => (bad, "invalid_client", "Client assertion is not within its valid time range."),
        700023 => (bad, "invalid_client", "Client assertion audience claim does not match Realm issuer."),
        700021 => (bad, "invalid_client", "Client assertion application identifier doesn't match 'client_id' parameter."),
        50012 | 700030 => (bad, "invalid_client", "Authentication failed: the client certificate or assertion is not authorized."),
        50027 => (bad, "invalid_request", "JWT token is invalid or malformed."),
        90002 => (bad, "invalid_request", "Tenant not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        700016 | 700011 => (bad, "unauthorized_client", "Application was not found in the directory. This can happen if the application has not been installed by the administrator of the tenant."),
        70001 | 7000112 => (bad, "unauthorized_client", "Application is disabled."),
        65001 | 90094 | 90008 => (bad, "invalid_grant", "The user or administrator has not consented to use the application."),
        53003 | 530032 | 530035 => (bad, "invalid_grant", "Access has been blocked by Conditional Access policies."),
        50196 => (bad, "invalid_grant", "The server terminated an operation because it encountered a client request loop."),
        90055 | 90024 | 90033 | 50000 => (bad, "temporarily_unavailable", "The service is temporarily unavailable or the tenant is throttled. Retry the request."),
        70011 => (bad, "invalid_scope", "The provided request must include a 'scope' input parameter with a valid /.default scope."),
        500011 | 500014 | 650052 => (bad, "invalid_resource", "The resource principal was not found in the tenant or is disabled."),
        70003 => (bad, "unsupported_grant_type", "The app requested an unsupported grant type."),
        9001023 | 90124 | 90130 => (bad, "invalid_request", "The grant type is not supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint."),
        900561 => (bad, "invalid_request", "The endpoint only accepts POST requests."),
        90014 | 900144 => (bad, "invalid_request", "A required field is missing or malformed in the request."),
        90038 => (bad, "invalid_request", "The tenant lives in another national cloud."),
        _ => (bad, "invalid_request", "The request was refused."),
    }
}

/// Entra's error answer for `code` with its tabled status and `error`, optionally a specific text.
fn aadsts(code: u32, text: Option<&str>, cri: Option<&str>) -> Response {
    let (status, error, default_text) = describe(code);
    error_with(status, error, code, text.unwrap_or(default_text), cri)
}

/// An error with the default text for `code` but a chosen status and `error` (used by faults).
pub(super) fn error(status: StatusCode, error: &str, code: u32, cri: Option<&str>) -> Response {
    error_with(status, error, code, describe(code).2, cri)
}

fn error_with(
    status: StatusCode,
    error: &str,
    code: u32,
    text: &str,
    cri: Option<&str>,
) -> Response {
    let trace_id = stamp::guid();
    // Entra adopts the caller's client-request-id as the correlation id.
    let correlation_id = https::client_request_id(cri);
    let timestamp = Utc::now().login();
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {text}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}"
        ),
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    let mut response = https::json(status, CONTENT_TYPE, &body);
    common_headers(&mut response, &trace_id, cri);
    https::set(
        response.headers_mut(),
        "cache-control",
        "no-store, no-cache",
    );
    response
}
