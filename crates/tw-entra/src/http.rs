//! One HTTP exchange with Entra ID, Graph or an RDAP server, recorded as evidence.
//!
//! [`exchange`] sends a request with a fresh `client-request-id`, waits for the answer and
//! its body within the caller's deadline, and returns the [`HttpExchange`] (status, the
//! server's request id, AADSTS or Graph error code, trace and correlation ids,
//! `Retry-After`) beside the reply or the `unknown` reason the transport failed with. It
//! never retries; the Graph client decides that.

use std::error::Error as _;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Client, RequestBuilder};
use serde::Deserialize;
use tokio::time::Instant;
use tw_core::{HttpExchange, Reason};

/// Bodies larger than this are cut off and treated as malformed: no answer we read is
/// anywhere near it, and an endless body must not eat memory.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The longest error text kept in evidence.
const MAX_ERROR_TEXT: usize = 300;

#[derive(Debug, thiserror::Error)]
pub enum HttpSetupError {
    #[error("reading the extra CA file: {0}")]
    ExtraCa(String),
    #[error("building the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The one HTTP client of the process: pooled connections (HTTP/2 where offered), the
/// public web PKI plus `extra_ca_pem` (the simulator's CA in tests), no redirects (RDAP
/// redirects are followed explicitly so each hop is evidence), no proxy from the
/// environment (a monitor that silently goes through a proxy measures the proxy).
pub fn build_client(extra_ca_pem: Option<&[u8]>) -> Result<Client, HttpSetupError> {
    let mut builder = Client::builder()
        .user_agent(concat!("tenantwatch/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(90))
        .tcp_keepalive(Duration::from_secs(60))
        .https_only(false);
    if let Some(pem) = extra_ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|err| HttpSetupError::ExtraCa(err.to_string()))?;
        if certs.is_empty() {
            return Err(HttpSetupError::ExtraCa(
                "no certificate found in the PEM file".to_owned(),
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder.build()?)
}

/// A complete answer: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// `Retry-After` in seconds, when the server sent one.
    pub retry_after: Option<Duration>,
}

impl Reply {
    /// The body as JSON of type `T`; `MalformedResponse` with the decoder's words otherwise.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|err| {
            let mut text = format!("invalid JSON in a {} response: {err}", self.status);
            cut_at_char(&mut text, MAX_ERROR_TEXT);
            text
        })
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends `request` (built on `client`, e.g. `client.get(url)`), reads the reply within
/// `deadline` and records it. `method` and `url` are what the evidence shows; the caller
/// passes the same values it built the request from, so nothing else (a form body with a
/// secret, a bearer header) can leak into evidence.
pub async fn exchange(
    request: RequestBuilder,
    method: &str,
    url: &str,
    deadline: Instant,
) -> (HttpExchange, Result<Reply, Reason>) {
    let client_request_id = uuid::Uuid::new_v4().to_string();
    let mut record = HttpExchange {
        method: method.to_owned(),
        url: url.to_owned(),
        client_request_id: Some(client_request_id.clone()),
        ..HttpExchange::default()
    };
    let started = Instant::now();
    let request = request
        .header("client-request-id", &client_request_id)
        .header("return-client-request-id", "true");
    let outcome = tokio::time::timeout_at(deadline, async {
        let response = request.send().await.map_err(|err| transport_reason(&err))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = read_body(response).await?;
        Ok::<_, (Reason, String)>((status, headers, body))
    })
    .await;
    record.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, headers, body) = match outcome {
        Err(_) => {
            record.error = Some("no complete answer before the probe deadline".to_owned());
            return (record, Err(Reason::Timeout));
        }
        Ok(Err((reason, text))) => {
            record.error = Some(text);
            return (record, Err(reason));
        }
        Ok(Ok(answer)) => answer,
    };
    record.status = Some(status);
    record.request_id =
        header(&headers, "request-id").or_else(|| header(&headers, "x-ms-request-id"));
    let retry_after = header(&headers, "retry-after")
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    record.retry_after_s = retry_after.map(|d| d.as_secs());
    if !(200..300).contains(&status) {
        read_error_body(&body, &mut record);
    }
    (
        record,
        Ok(Reply {
            status,
            headers,
            body,
            retry_after,
        }),
    )
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.chars().take(200).collect())
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, (Reason, String)> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|err| (Reason::ConnectionDropped, short(&err)))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err((
                Reason::MalformedResponse,
                format!("response body larger than {MAX_BODY} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The OAuth error shape of the login endpoints and Graph's OData error envelope, read
/// leniently: any field may be missing, and a body that is neither is simply not evidence.
#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorField>,
    #[serde(default)]
    error_codes: Vec<u32>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    OAuth(String),
    Graph(GraphError),
}

#[derive(Deserialize)]
struct GraphError {
    code: Option<String>,
    #[serde(rename = "innerError", alias = "innererror")]
    inner: Option<GraphInnerError>,
}

#[derive(Deserialize)]
struct GraphInnerError {
    #[serde(rename = "request-id")]
    request_id: Option<String>,
}

pub(crate) fn read_error_body(body: &[u8], record: &mut HttpExchange) {
    let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) else {
        return;
    };
    match parsed.error {
        Some(ErrorField::OAuth(code)) => record.error_code = Some(code),
        Some(ErrorField::Graph(graph)) => {
            record.error_code = graph.code;
            if record.request_id.is_none() {
                record.request_id = graph.inner.and_then(|inner| inner.request_id);
            }
        }
        None => {}
    }
    record.aadsts = parsed.error_codes;
    record.trace_id = parsed.trace_id;
    record.correlation_id = parsed.correlation_id;
}

/// Transport failures are `unknown`: they say nothing about the tenant.
fn transport_reason(err: &reqwest::Error) -> (Reason, String) {
    let text = short(err);
    if err.is_timeout() {
        return (Reason::Timeout, text);
    }
    // reqwest wraps the rustls error in hyper and io errors; its words are the stable part.
    let mut source = err.source();
    while let Some(cause) = source {
        let described = cause.to_string().to_ascii_lowercase();
        if described.contains("certificate")
            || described.contains("tls")
            || described.contains("handshake")
        {
            return (Reason::TlsFailed, text);
        }
        source = cause.source();
    }
    if err.is_connect() {
        (Reason::ConnectFailed, text)
    } else {
        (Reason::ConnectionDropped, text)
    }
}

/// The full error chain on one line, cut to a length evidence can carry.
fn short(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    cut_at_char(&mut text, MAX_ERROR_TEXT);
    text
}

/// Cuts `text` to at most `max` bytes without splitting a character. serde_json's errors
/// quote the offending value, so the cut often falls inside non-ASCII text, where
/// `String::truncate` would panic (found by the `graph_json` fuzz target).
fn cut_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: &[u8]) -> Reply {
        Reply {
            status: 200,
            headers: HeaderMap::new(),
            body: body.to_vec(),
            retry_after: None,
        }
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // only decoded, for serde_json's error text
    struct Flag {
        enabled: bool,
    }

    /// Regression for the `graph_json` fuzz crash: a long decoder error whose 300th byte fell
    /// inside a multi-byte character panicked in `String::truncate`.
    #[test]
    fn a_long_decoder_error_is_cut_on_a_character_boundary() {
        for pad in 0..3 {
            let body = format!(
                "{{\"enabled\": \"{}{}\"}}",
                "x".repeat(pad),
                "\u{2026}".repeat(150)
            );
            let text = reply(body.as_bytes()).json::<Flag>().unwrap_err();
            assert!(
                (MAX_ERROR_TEXT - 2..=MAX_ERROR_TEXT).contains(&text.len()),
                "{} bytes",
                text.len()
            );
            assert!(text.starts_with("invalid JSON in a 200 response: invalid type: string"));
        }
        // The fuzzer's minimized input, less its selector byte: a JSON string with `…` where
        // an object was expected.
        let found = b" \"inva ID--accountEnabled------ \xe2\x80\xa6\\r\\n----------------- \xe2\x80\xa6\\r\\nTimesta------------ \xe2\x80\xa6\\r\\n-----------------n---------------------------------------|--------------------------------ntEnabled------ \xe2\x80\xa6\\r\\n----------------- \xe2\x80\xa6\\r\\nTimesta------------ \xe2\x80\xa6\\n\"\ru";
        let text = reply(found).json::<Flag>().unwrap_err();
        assert!(text.len() <= MAX_ERROR_TEXT, "{} bytes", text.len());
    }

    #[test]
    fn short_text_is_left_alone_and_long_text_cut_before_a_character() {
        let mut text = "d\u{e9}j\u{e0} vu".to_owned();
        cut_at_char(&mut text, 300);
        assert_eq!(text, "d\u{e9}j\u{e0} vu");
        cut_at_char(&mut text, 2);
        assert_eq!(text, "d");
    }
}
