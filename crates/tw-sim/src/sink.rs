//! An HTTP sink: the stand-in for every notification service (webhook receiver, ntfy,
//! Alertmanager, signal-cli-rest-api, Twilio…) in tests and the demo. It records each
//! request as it arrived and answers with a scriptable status, or not at all (a hung
//! receiver), so delivery, retries and idempotency can be checked from the receiving side.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::Router;
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One request as the sink received it.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedRequest {
    pub method: String,
    /// Path and query, e.g. `/v2/send`.
    pub path: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl CapturedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<CapturedRequest>>,
    /// Status for the next requests; 200 when unset.
    status: Mutex<Option<u16>>,
    /// Hold each request this long before answering (a hung receiver).
    delay: Mutex<Option<Duration>>,
}

/// The sink's handle. Cheap to clone.
#[derive(Clone)]
pub struct HttpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl HttpSink {
    /// Binds 127.0.0.1:0 and serves until `shutdown` is cancelled.
    pub async fn start(shutdown: CancellationToken) -> std::io::Result<HttpSink> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let app = Router::new().fallback(capture).with_state(shared.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::debug!(error = %err, "HTTP sink stopped");
            }
        });
        Ok(HttpSink { addr, shared })
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<CapturedRequest> {
        self.shared.requests.lock().clone()
    }

    /// Answer every following request with `status` (e.g. 503 for a receiver that is down).
    pub fn set_status(&self, status: u16) {
        *self.shared.status.lock() = Some(status);
    }

    /// Hold every following request for `delay` before answering (`None`: answer at once).
    pub fn set_delay(&self, delay: Option<Duration>) {
        *self.shared.delay.lock() = delay;
    }
}

async fn capture(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let request = CapturedRequest {
        method: method.to_string(),
        path: uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    tracing::info!(method = %request.method, path = %request.path, bytes = request.body.len(), "HTTP sink received a request");
    // Recorded on arrival: a receiver that hangs has still seen the request, which is what
    // at-least-once delivery and its idempotency key are about.
    shared.requests.lock().push(request);
    let delay = *shared.delay.lock();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let status = shared.status.lock().unwrap_or(200);
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
