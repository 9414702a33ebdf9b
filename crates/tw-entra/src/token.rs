//! App-only access tokens from the client-credentials grant, cached per tenant (reference §2).
//!
//! Every Graph check of a tenant needs a token, and Entra ID asks clients to cache them
//! (AADSTS50196 "loop detected" punishes those that do not), so a token is reused until shortly
//! before it expires, and concurrent callers for one tenant wait for a single request instead of
//! each sending their own. Failures are not cached: the next scheduled run asks again, and
//! callers that were already waiting for the failed request share its answer.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Client;
use serde::Deserialize;
use tokio::time::Instant;
use tw_core::config::Cloud;
use tw_core::{HttpExchange, Reason, Secret, Timestamp};

use crate::aadsts::{classify, codes_text};
use crate::credentials::{token_url, LoadedApp};
use crate::http;

/// Tokens are renewed this long before they expire, so a check never starts with a token
/// that dies mid-run.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// An access token for one tenant. `Debug` shows the expiry, never the value.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessToken {
    pub value: Secret,
    /// When Entra ID said it expires (`expires_in` after the request was sent).
    pub expires_at: Timestamp,
    /// When the request that obtained it was sent.
    pub acquired_at: Timestamp,
}

/// What one [`TokenCache::get`] did: the HTTP exchanges it made (none when the token came from
/// the cache; when the call waited for another caller's request that then failed, that
/// request's exchanges, with `fresh` false), whether a new token was requested for this call,
/// and the token or the reason and summary it could not be had for.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenAttempt {
    pub exchanges: Vec<HttpExchange>,
    pub fresh: bool,
    pub result: Result<AccessToken, (Reason, String)>,
}

struct Cached {
    token: AccessToken,
    refresh_at: Instant,
}

struct Failure {
    finished: Instant,
    exchanges: Vec<HttpExchange>,
    error: (Reason, String),
}

/// One tenant's token and the lock that lets a single request be in flight for it.
#[derive(Default)]
struct Slot {
    token: parking_lot::Mutex<Option<Cached>>,
    last_failure: parking_lot::Mutex<Option<Failure>>,
    flight: tokio::sync::Mutex<()>,
}

impl Slot {
    fn valid_token(&self, now: Instant) -> Option<AccessToken> {
        self.token
            .lock()
            .as_ref()
            .filter(|cached| now < cached.refresh_at)
            .map(|cached| cached.token.clone())
    }
}

/// Access tokens per tenant, keyed by the tenant id or domain the caller puts in the token URL
/// (case-insensitive). One cache serves the whole process, shared behind an `Arc`.
pub struct TokenCache {
    scope: String,
    slots: parking_lot::Mutex<HashMap<String, Arc<Slot>>>,
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tenants: Vec<String> = self.slots.lock().keys().cloned().collect();
        f.debug_struct("TokenCache")
            .field("scope", &self.scope)
            .field("tenants", &tenants)
            .finish()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    token_type: Option<String>,
    /// A number on the v2 endpoint; some answers carry it as a string.
    expires_in: Option<serde_json::Value>,
}

impl TokenCache {
    /// A cache that asks for `scope`, e.g. `https://graph.microsoft.com/.default`.
    ///
    /// The scope names the Graph *resource* of the cloud, which is not the Graph URL the checks
    /// send requests to when that is overridden (tests point it at a simulator, which still
    /// expects the real resource): use [`TokenCache::for_cloud`] unless a test needs otherwise.
    pub fn new(scope: impl Into<String>) -> TokenCache {
        TokenCache {
            scope: scope.into(),
            slots: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// A cache asking for the Graph resource of `cloud`: `{graph host}/.default`
    /// (`https://graph.microsoft.com/.default` for the global cloud).
    pub fn for_cloud(cloud: Cloud) -> TokenCache {
        TokenCache::new(format!("{}/.default", cloud.graph_url()))
    }

    /// The scope token requests ask for.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// Forgets the cached token of `tenant`, e.g. after Graph refused it with 401; the next
    /// [`get`](Self::get) requests a new one.
    pub fn invalidate(&self, tenant: &str) {
        let slot = self.slots.lock().get(&key(tenant)).cloned();
        if let Some(slot) = slot {
            *slot.token.lock() = None;
        }
    }

    fn slot(&self, tenant: &str) -> Arc<Slot> {
        self.slots.lock().entry(key(tenant)).or_default().clone()
    }

    /// A token for `tenant` (the tenant id or a verified domain, used in the token URL): the
    /// cached one while it is more than [`REFRESH_BEFORE_EXPIRY`] (or, for tokens living under
    /// ten minutes, half their lifetime) from expiry; otherwise a new one from
    /// `POST {login_url}/{tenant}/oauth2/v2.0/token` (client credentials, the cache's scope,
    /// `app`'s secret or a fresh client assertion). While one request for a tenant is in
    /// flight, other callers for that tenant wait for it (until their `deadline`).
    /// Error answers are classified by their AADSTS codes ([`classify`]).
    pub async fn get(
        &self,
        client: &Client,
        login_url: &str,
        tenant: &str,
        app: &LoadedApp,
        deadline: Instant,
    ) -> TokenAttempt {
        let slot = self.slot(tenant);
        if let Some(token) = slot.valid_token(Instant::now()) {
            return TokenAttempt {
                exchanges: Vec::new(),
                fresh: false,
                result: Ok(token),
            };
        }
        let waiting_since = Instant::now();
        let Ok(_flight) = tokio::time::timeout_at(deadline, slot.flight.lock()).await else {
            return TokenAttempt {
                exchanges: Vec::new(),
                fresh: false,
                result: Err((
                    Reason::Timeout,
                    format!("waited for another token request for {tenant} until the deadline"),
                )),
            };
        };
        // Another caller may have got a token, or failed, while this one waited.
        if let Some(token) = slot.valid_token(Instant::now()) {
            return TokenAttempt {
                exchanges: Vec::new(),
                fresh: false,
                result: Ok(token),
            };
        }
        if let Some(failure) = slot
            .last_failure
            .lock()
            .as_ref()
            .filter(|failure| failure.finished >= waiting_since)
        {
            return TokenAttempt {
                exchanges: failure.exchanges.clone(),
                fresh: false,
                result: Err(failure.error.clone()),
            };
        }
        let requested = Instant::now();
        let attempt = self.request(client, login_url, tenant, app, deadline).await;
        match &attempt.result {
            Ok(token) => {
                let lifetime =
                    Duration::from_millis(token.expires_at.millis_since(token.acquired_at));
                let margin = REFRESH_BEFORE_EXPIRY.min(lifetime / 2);
                *slot.token.lock() = Some(Cached {
                    token: token.clone(),
                    refresh_at: requested + lifetime.saturating_sub(margin),
                });
                *slot.last_failure.lock() = None;
            }
            Err(error) => {
                *slot.last_failure.lock() = Some(Failure {
                    finished: Instant::now(),
                    exchanges: attempt.exchanges.clone(),
                    error: error.clone(),
                });
            }
        }
        attempt
    }

    async fn request(
        &self,
        client: &Client,
        login_url: &str,
        tenant: &str,
        app: &LoadedApp,
        deadline: Instant,
    ) -> TokenAttempt {
        let url = token_url(login_url, tenant);
        let acquired_at = Timestamp::now();
        let failed = |exchanges: Vec<HttpExchange>, reason: Reason, summary: String| TokenAttempt {
            exchanges,
            fresh: true,
            result: Err((reason, summary)),
        };
        let credential = match app.credential_form(login_url, tenant, acquired_at) {
            Ok(credential) => credential,
            Err(err) => {
                return failed(
                    Vec::new(),
                    Reason::MonitorMisconfigured,
                    format!("no token request for {tenant}: {err}"),
                )
            }
        };
        let mut form: Vec<(&str, &str)> = vec![
            ("client_id", app.client_id()),
            ("scope", &self.scope),
            ("grant_type", "client_credentials"),
        ];
        form.extend(
            credential
                .iter()
                .map(|(name, value)| (*name, value.expose())),
        );
        // The credential travels in the form body only; the evidence gets the bare URL.
        let request = client.post(&url).form(&form);
        let (mut exchange, reply) = http::exchange(request, "POST", &url, deadline).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(reason) => {
                let why = exchange.error.clone().unwrap_or_default();
                return failed(
                    vec![exchange],
                    reason,
                    format!("token request for {tenant} failed: {why}"),
                );
            }
        };
        if !reply.is_success() {
            let (reason, why) = classify(reply.status, &exchange.aadsts);
            let code = match (exchange.aadsts.is_empty(), &exchange.error_code) {
                (false, Some(error)) => format!("{} ({error})", codes_text(&exchange.aadsts)),
                (false, None) => codes_text(&exchange.aadsts),
                (true, _) => format!("HTTP {}", reply.status),
            };
            return failed(
                vec![exchange],
                reason,
                format!("Entra ID refused the token for {tenant}: {code}: {why}"),
            );
        }
        let parsed = match reply.json::<TokenResponse>() {
            Ok(parsed) => parsed,
            Err(why) => {
                exchange.error = Some(why.clone());
                return failed(
                    vec![exchange],
                    Reason::MalformedResponse,
                    format!("token answer for {tenant}: {why}"),
                );
            }
        };
        match read_token(parsed, acquired_at) {
            Ok(token) => TokenAttempt {
                exchanges: vec![exchange],
                fresh: true,
                result: Ok(token),
            },
            Err(why) => {
                exchange.error = Some(why.to_owned());
                failed(
                    vec![exchange],
                    Reason::MalformedResponse,
                    format!("token answer for {tenant}: {why}"),
                )
            }
        }
    }
}

fn read_token(parsed: TokenResponse, acquired_at: Timestamp) -> Result<AccessToken, &'static str> {
    let value = parsed
        .access_token
        .filter(|token| !token.is_empty())
        .ok_or("no access_token in the answer")?;
    if let Some(kind) = parsed.token_type {
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err("token_type is not Bearer");
        }
    }
    let expires_in = match parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .ok_or("no readable expires_in in the answer")?;
    Ok(AccessToken {
        value: Secret::new(value),
        expires_at: acquired_at.plus(Duration::from_secs(expires_in)),
        acquired_at,
    })
}

fn key(tenant: &str) -> String {
    tenant.trim().to_ascii_lowercase()
}

/// For [`crate::fuzzing`]: the token answer read as [`TokenCache`] reads it, without the
/// request. The outcome's summary never holds the token.
pub(crate) fn judge_for_fuzzing(
    reply: &http::Reply,
    acquired_at: Timestamp,
) -> Result<Vec<crate::Outcome>, String> {
    let (reason, summary) = match read_token(reply.json::<TokenResponse>()?, acquired_at) {
        Ok(token) => (
            Reason::TokenIssued,
            format!("token valid until {}", token.expires_at),
        ),
        Err(why) => (Reason::MalformedResponse, why.to_owned()),
    };
    Ok(vec![crate::Outcome {
        target: "token".to_owned(),
        reason,
        summary,
        evidence: tw_core::HttpEvidence::default(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(json: &str) -> TokenResponse {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_the_documented_answer() {
        let token = read_token(
            response(r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"abc"}"#),
            Timestamp(1_000),
        )
        .unwrap();
        assert_eq!(token.value.expose(), "abc");
        assert_eq!(token.expires_at, Timestamp(3_600_000));
        let token = read_token(
            response(r#"{"token_type":"Bearer","expires_in":"60","access_token":"abc"}"#),
            Timestamp(0),
        )
        .unwrap();
        assert_eq!(token.expires_at, Timestamp(60_000));
    }

    #[test]
    fn refuses_answers_without_token_or_lifetime() {
        assert!(read_token(response(r#"{"expires_in":60}"#), Timestamp(0)).is_err());
        assert!(read_token(response(r#"{"access_token":"a"}"#), Timestamp(0)).is_err());
        assert!(read_token(
            response(r#"{"access_token":"a","expires_in":60,"token_type":"mac"}"#),
            Timestamp(0)
        )
        .is_err());
    }

    #[test]
    fn scope_follows_the_cloud() {
        assert_eq!(
            TokenCache::for_cloud(Cloud::Global).scope(),
            "https://graph.microsoft.com/.default"
        );
        assert_eq!(
            TokenCache::for_cloud(Cloud::UsGovHigh).scope(),
            "https://graph.microsoft.us/.default"
        );
    }
}
