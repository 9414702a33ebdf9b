//! The Graph client: bearer requests to `{graph_url}/v1.0/…`, each attempt recorded as
//! evidence, with the retry, concurrency, budget and paging rules in one place.
//!
//! Why each rule exists:
//! - 429/503/504 are retried because Microsoft asks for it (reference §3.0), but only as
//!   long as the probe has time: a `Retry-After` longer than `max_retry_wait` or than the
//!   time left ends the call as `throttled`/`service_unavailable` at once rather than
//!   sleeping into a timeout that would say less.
//! - Requests per tenant are bounded because Graph throttles per app and tenant; one busy
//!   tenant must not be hammered by every check at once.
//! - Each probe run has a request budget (counted as the exchanges in its evidence), so a
//!   paging loop that never ends stops with an `unknown` verdict instead of running forever.
//! - `@odata.nextLink` is followed only on the configured Graph origin: the bearer token is
//!   attached to every page request, and a link elsewhere would hand it to a stranger.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use reqwest::header::ACCEPT;
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tw_core::{HttpEvidence, Reason, Secret};

use crate::http::{self, Reply};

/// Requests one probe run may make, retries and pages included.
pub const DEFAULT_REQUEST_BUDGET: usize = 50;

/// The first back-off without `Retry-After`; doubled per retry.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// The longest back-off without `Retry-After` (also bounded by `max_retry_wait`).
const BACKOFF_CAP: Duration = Duration::from_secs(32);

/// Who asks and until when: the tenant's token, the tenant (the concurrency key) and the
/// probe's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub token: &'a Secret,
    pub tenant: &'a str,
    pub deadline: Instant,
}

/// Why a Graph request gave no usable answer. Each variant fixes its `unknown` reason
/// ([`GraphError::reason`]) except `NotFound`, which the caller judges (a user 404 by its
/// object id is a finding, not a fault). The text never carries the token.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// 401: the token was refused (expired, wrong tenant or wrong cloud).
    #[error("token refused ({})", code.as_deref().unwrap_or("HTTP 401"))]
    TokenRefused { code: Option<String> },
    /// 403: the app lacks the permission (or the consent was withdrawn).
    #[error("permission denied (403 {})", code.as_deref().unwrap_or("without an error code"))]
    PermissionDenied { code: Option<String> },
    /// 404.
    #[error("not found (404 {})", code.as_deref().unwrap_or("without an error code"))]
    NotFound { code: Option<String> },
    /// 429 after the retries, or with a `Retry-After` the probe cannot wait out.
    #[error("throttled (429): {detail}")]
    Throttled { detail: String },
    /// 5xx (after the retries for 503 and 504).
    #[error("service unavailable ({status}{}): {detail}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Unavailable {
        status: u16,
        code: Option<String>,
        detail: String,
    },
    /// Any other status.
    #[error("HTTP {status}{}", code.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Http { status: u16, code: Option<String> },
    /// The body was not the JSON expected.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// `@odata.nextLink` pointed away from the Graph origin (or looped); not followed.
    #[error("@odata.nextLink not followed: {0}")]
    BadNextLink(String),
    /// The transport failed (timeout, connect, TLS, dropped connection).
    #[error("{detail}")]
    Transport { reason: Reason, detail: String },
    /// The probe run used up its request budget.
    #[error("request budget of {0} requests spent (runaway paging or retries)")]
    BudgetSpent(usize),
}

impl GraphError {
    /// The `unknown` reason of the failure (`http_error` for a 404 the caller did not judge).
    pub fn reason(&self) -> Reason {
        match self {
            GraphError::TokenRefused { .. }
            | GraphError::NotFound { .. }
            | GraphError::Http { .. }
            | GraphError::BudgetSpent(_) => Reason::HttpError,
            GraphError::PermissionDenied { .. } => Reason::PermissionDenied,
            GraphError::Throttled { .. } => Reason::Throttled,
            GraphError::Unavailable { .. } => Reason::ServiceUnavailable,
            GraphError::Malformed(_) | GraphError::BadNextLink(_) => Reason::MalformedResponse,
            GraphError::Transport { reason, .. } => *reason,
        }
    }

    /// The Graph `error.code`, when the answer had one.
    pub fn code(&self) -> Option<&str> {
        match self {
            GraphError::TokenRefused { code }
            | GraphError::PermissionDenied { code }
            | GraphError::NotFound { code }
            | GraphError::Unavailable { code, .. }
            | GraphError::Http { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

/// One page of a Graph collection.
#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

/// The Graph client of the process; cheap to clone (the pool and the per-tenant limits are
/// shared).
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    /// `graph_url` without a trailing slash.
    base: Arc<str>,
    /// The origin page links must stay on; `None` if `graph_url` did not parse (then no link
    /// is followed).
    origin: Option<Url>,
    max_concurrent_per_tenant: usize,
    max_retries: u32,
    max_retry_wait: Duration,
    request_budget: usize,
    tenants: Arc<Mutex<HashMap<String, Arc<Semaphore>>>>,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("base", &self.base)
            .field("max_concurrent_per_tenant", &self.max_concurrent_per_tenant)
            .field("max_retries", &self.max_retries)
            .field("max_retry_wait", &self.max_retry_wait)
            .field("request_budget", &self.request_budget)
            .finish_non_exhaustive()
    }
}

impl GraphClient {
    /// `graph_url` is the host root without `/v1.0` (e.g. `https://graph.microsoft.com`);
    /// `max_concurrent_per_tenant` of 0 is taken as 1.
    pub fn new(
        client: reqwest::Client,
        graph_url: &str,
        max_concurrent_per_tenant: usize,
        max_retries: u32,
        max_retry_wait: Duration,
    ) -> GraphClient {
        let base = graph_url.trim_end_matches('/');
        GraphClient {
            http: client,
            base: Arc::from(base),
            origin: Url::parse(base).ok(),
            max_concurrent_per_tenant: max_concurrent_per_tenant.max(1),
            max_retries,
            max_retry_wait,
            request_budget: DEFAULT_REQUEST_BUDGET,
            tenants: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The same client with another request budget per probe run (at least 1).
    pub fn with_request_budget(mut self, requests: usize) -> GraphClient {
        self.request_budget = requests.max(1);
        self
    }

    /// `{graph_url}/v1.0{path}`; `path` starts with `/` and is already encoded
    /// ([`super::encode_segment`], [`super::encode_query_value`]).
    pub fn url(&self, path: &str) -> String {
        format!("{}/v1.0{path}", self.base)
    }

    /// GET `path`, retried as the module explains; a 2xx reply or the failure.
    pub async fn get(
        &self,
        call: Call<'_>,
        path: &str,
        evidence: &mut HttpEvidence,
    ) -> Result<Reply, GraphError> {
        self.fetch(call, &self.url(path), false, evidence).await
    }

    /// GET `path` and decode the body as `T`.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        call: Call<'_>,
        path: &str,
        evidence: &mut HttpEvidence,
    ) -> Result<T, GraphError> {
        let reply = self.get(call, path, evidence).await?;
        decode(&reply, evidence)
    }

    /// Every item of the collection at `path`, following `@odata.nextLink`.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        call: Call<'_>,
        path: &str,
        evidence: &mut HttpEvidence,
    ) -> Result<Vec<T>, GraphError> {
        self.collect(call, path, false, evidence).await
    }

    /// Like [`GraphClient::get_all`] with `ConsistencyLevel: eventual`, which Graph requires
    /// for advanced queries such as `endswith` or `$count` on directory objects.
    pub async fn get_all_eventual<T: DeserializeOwned>(
        &self,
        call: Call<'_>,
        path: &str,
        evidence: &mut HttpEvidence,
    ) -> Result<Vec<T>, GraphError> {
        self.collect(call, path, true, evidence).await
    }

    async fn collect<T: DeserializeOwned>(
        &self,
        call: Call<'_>,
        path: &str,
        eventual: bool,
        evidence: &mut HttpEvidence,
    ) -> Result<Vec<T>, GraphError> {
        let mut items = Vec::new();
        let mut url = self.url(path);
        let mut seen = vec![url.clone()];
        loop {
            let reply = self.fetch(call, &url, eventual, evidence).await?;
            let page: Page<T> = decode(&reply, evidence)?;
            items.extend(page.value);
            let Some(next) = page.next_link else {
                return Ok(items);
            };
            let next = match self.follow(&url, &next) {
                Ok(next) => next,
                Err(err) => {
                    note_error(evidence, &err.to_string());
                    return Err(err);
                }
            };
            if seen.contains(&next) {
                let err = GraphError::BadNextLink("it points to a page already read".to_owned());
                note_error(evidence, &err.to_string());
                return Err(err);
            }
            seen.push(next.clone());
            url = next;
        }
    }

    /// Resolves a page link and checks it stays on the Graph origin without credentials of
    /// its own.
    fn follow(&self, current: &str, next: &str) -> Result<String, GraphError> {
        let refuse = |why: &str| GraphError::BadNextLink(why.to_owned());
        let Some(origin) = &self.origin else {
            return Err(refuse("the configured graph_url is not a URL"));
        };
        let current = Url::parse(current).map_err(|_| refuse("the current URL does not parse"))?;
        let next = current.join(next).map_err(|_| refuse("it is not a URL"))?;
        let same_origin = next.scheme() == origin.scheme()
            && next.host_str() == origin.host_str()
            && next.port_or_known_default() == origin.port_or_known_default();
        if !same_origin {
            let host = next.host_str().unwrap_or("?");
            return Err(GraphError::BadNextLink(format!(
                "it leads to {}://{host} instead of the Graph origin; the token is not sent there",
                next.scheme()
            )));
        }
        if !next.username().is_empty() || next.password().is_some() {
            return Err(refuse("it carries credentials of its own"));
        }
        Ok(next.to_string())
    }

    fn semaphore(&self, tenant: &str) -> Arc<Semaphore> {
        let mut tenants = self.tenants.lock();
        tenants
            .entry(tenant.to_ascii_lowercase())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_concurrent_per_tenant)))
            .clone()
    }

    /// One GET with its retries; each attempt is pushed to `evidence`.
    async fn fetch(
        &self,
        call: Call<'_>,
        url: &str,
        eventual: bool,
        evidence: &mut HttpEvidence,
    ) -> Result<Reply, GraphError> {
        self.send(reqwest::Method::GET, call, url, eventual, evidence)
            .await
    }

    /// DELETE `path` (a probe message after its arrival was confirmed), with the same retries.
    pub async fn delete(
        &self,
        call: Call<'_>,
        path: &str,
        evidence: &mut HttpEvidence,
    ) -> Result<Reply, GraphError> {
        self.send(
            reqwest::Method::DELETE,
            call,
            &self.url(path),
            false,
            evidence,
        )
        .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        call: Call<'_>,
        url: &str,
        eventual: bool,
        evidence: &mut HttpEvidence,
    ) -> Result<Reply, GraphError> {
        let semaphore = self.semaphore(call.tenant);
        let mut retries = 0u32;
        let mut backoff = BACKOFF_START;
        loop {
            if evidence.exchanges.len() >= self.request_budget {
                return Err(GraphError::BudgetSpent(self.request_budget));
            }
            let permit =
                match tokio::time::timeout_at(call.deadline, semaphore.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(permit)) => permit,
                    // The semaphore is never closed; treat it like waiting past the deadline.
                    Ok(Err(_)) | Err(_) => {
                        return Err(GraphError::Transport {
                            reason: Reason::Timeout,
                            detail: format!(
                                "no free Graph request slot for the tenant before the deadline ({} at once)",
                                self.max_concurrent_per_tenant
                            ),
                        })
                    }
                };
            let mut request = self
                .http
                .request(method.clone(), url)
                .bearer_auth(call.token.expose())
                .header(ACCEPT, "application/json");
            if eventual {
                request = request.header("ConsistencyLevel", "eventual");
            }
            let (record, result) =
                http::exchange(request, method.as_str(), url, call.deadline).await;
            drop(permit);
            let code = record.error_code.clone();
            let transport_error = record.error.clone();
            evidence.exchanges.push(record);
            let reply = match result {
                Ok(reply) => reply,
                Err(reason) => {
                    return Err(GraphError::Transport {
                        reason,
                        detail: transport_error.unwrap_or_else(|| reason.describe().to_owned()),
                    })
                }
            };
            let throttled = match reply.status {
                200..=299 => return Ok(reply),
                401 => return Err(GraphError::TokenRefused { code }),
                403 => return Err(GraphError::PermissionDenied { code }),
                404 => return Err(GraphError::NotFound { code }),
                429 => true,
                503 | 504 => false,
                status @ 500..=599 => {
                    return Err(GraphError::Unavailable {
                        status,
                        code,
                        detail: "not retried".to_owned(),
                    })
                }
                status => return Err(GraphError::Http { status, code }),
            };
            let give_up = |detail: String| {
                if throttled {
                    GraphError::Throttled { detail }
                } else {
                    GraphError::Unavailable {
                        status: reply.status,
                        code: code.clone(),
                        detail,
                    }
                }
            };
            let wait = match reply.retry_after {
                Some(wait) if wait > self.max_retry_wait => {
                    return Err(give_up(format!(
                        "Retry-After {}s is longer than max_retry_wait {}s",
                        wait.as_secs(),
                        self.max_retry_wait.as_secs()
                    )))
                }
                Some(wait) => wait,
                None => jitter(backoff.min(self.max_retry_wait)),
            };
            if retries >= self.max_retries {
                return Err(give_up(match retries {
                    0 => "retries are disabled".to_owned(),
                    1 => "still failing after 1 retry".to_owned(),
                    n => format!("still failing after {n} retries"),
                }));
            }
            let left = call.deadline.saturating_duration_since(Instant::now());
            if wait > left {
                return Err(give_up(format!(
                    "waiting {} ms before retrying would pass the probe deadline ({} ms left)",
                    wait.as_millis(),
                    left.as_millis()
                )));
            }
            tokio::time::sleep(wait).await;
            retries += 1;
            backoff = backoff.saturating_mul(2).min(BACKOFF_CAP);
        }
    }
}

/// A back-off between half and all of `base`, so probes throttled together do not retry in
/// lockstep.
fn jitter(base: Duration) -> Duration {
    let half = base / 2;
    half + half.mul_f64(fastrand::f64())
}

pub(crate) fn decode<T: DeserializeOwned>(
    reply: &Reply,
    evidence: &mut HttpEvidence,
) -> Result<T, GraphError> {
    reply.json::<T>().map_err(|text| {
        note_error(evidence, &text);
        GraphError::Malformed(text)
    })
}

/// The items of one collection page, decoded as [`GraphClient::get_all`] decodes each page.
pub(crate) fn decode_page<T: DeserializeOwned>(
    reply: &Reply,
    evidence: &mut HttpEvidence,
) -> Result<Vec<T>, GraphError> {
    decode::<Page<T>>(reply, evidence).map(|page| page.value)
}

/// Marks the last exchange with why its answer was not used.
fn note_error(evidence: &mut HttpEvidence, text: &str) {
    if let Some(last) = evidence.exchanges.last_mut() {
        if last.error.is_none() {
            last.error = Some(text.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> GraphClient {
        GraphClient::new(
            reqwest::Client::new(),
            "https://graph.example:8443/",
            2,
            3,
            Duration::from_secs(60),
        )
    }

    #[test]
    fn urls_are_under_v1() {
        assert_eq!(
            client().url("/users/a"),
            "https://graph.example:8443/v1.0/users/a"
        );
    }

    #[test]
    fn next_links_stay_on_the_graph_origin() {
        let graph = client();
        let here = "https://graph.example:8443/v1.0/users";
        assert_eq!(
            graph
                .follow(here, "https://graph.example:8443/v1.0/users?$skiptoken=x")
                .unwrap(),
            "https://graph.example:8443/v1.0/users?$skiptoken=x"
        );
        assert!(graph.follow(here, "/v1.0/users?$skiptoken=y").is_ok());
        for bad in [
            "https://evil.example:8443/v1.0/users?$skiptoken=x",
            "https://graph.example:8444/v1.0/users",
            "http://graph.example:8443/v1.0/users",
            "https://graph.example.evil.example/v1.0/users",
            "https://user:pw@graph.example:8443/v1.0/users",
        ] {
            assert!(
                matches!(graph.follow(here, bad), Err(GraphError::BadNextLink(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..100 {
            let wait = jitter(Duration::from_secs(4));
            assert!(wait >= Duration::from_secs(2) && wait <= Duration::from_secs(4));
        }
    }

    #[test]
    fn errors_map_to_unknown_reasons() {
        let cases = [
            (
                GraphError::TokenRefused {
                    code: Some("InvalidAuthenticationToken".into()),
                },
                Reason::HttpError,
            ),
            (
                GraphError::PermissionDenied { code: None },
                Reason::PermissionDenied,
            ),
            (
                GraphError::Throttled {
                    detail: String::new(),
                },
                Reason::Throttled,
            ),
            (
                GraphError::Unavailable {
                    status: 504,
                    code: None,
                    detail: String::new(),
                },
                Reason::ServiceUnavailable,
            ),
            (
                GraphError::Malformed(String::new()),
                Reason::MalformedResponse,
            ),
            (GraphError::BudgetSpent(50), Reason::HttpError),
        ];
        for (err, reason) in cases {
            assert_eq!(err.reason(), reason, "{err}");
            assert_eq!(err.reason().status(), tw_core::Status::Unknown);
        }
        assert_eq!(
            GraphError::TokenRefused {
                code: Some("InvalidAuthenticationToken".into())
            }
            .to_string(),
            "token refused (InvalidAuthenticationToken)"
        );
    }
}
