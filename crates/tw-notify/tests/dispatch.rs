//! The dispatcher against a real store and loopback receivers: a group of one tenant's alerts
//! goes out as one request per receiver (the webhook lists them, Alertmanager gets each),
//! and a receiver that keeps failing or refuses hands the same message (same id) to the next
//! receiver of its chain, with the hand-over in the delivery log and the counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tw_core::Timestamp;
use tw_notify::{http_client, Channel, DispatchStats, Dispatcher, Message};
use tw_store::{AlertCommit, Enqueue, Fallback, NewDelivery, Store};

/// A receiver on 127.0.0.1 recording (path, headers, body); `/fail*` answers 503, `/refuse*`
/// 400, anything else 200.
#[derive(Clone, Default)]
struct Sink {
    requests: Arc<Mutex<Vec<Captured>>>,
}

/// Path, headers (lower-case names) and body of one request.
type Captured = (String, HashMap<String, String>, String);

impl Sink {
    async fn start(shutdown: CancellationToken) -> (Sink, String) {
        let sink = Sink::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(record).with_state(sink.clone());
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await
                .unwrap();
        });
        (sink, base)
    }

    fn at(&self, prefix: &str) -> Vec<(HashMap<String, String>, Value)> {
        self.requests
            .lock()
            .iter()
            .filter(|(path, _, _)| path.starts_with(prefix))
            .map(|(_, headers, body)| (headers.clone(), serde_json::from_str(body).unwrap()))
            .collect()
    }
}

async fn record(State(sink): State<Sink>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let headers = request
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    sink.requests.lock().push((
        path.clone(),
        headers,
        String::from_utf8_lossy(&body).into_owned(),
    ));
    if path.starts_with("/fail") {
        StatusCode::SERVICE_UNAVAILABLE.into_response()
    } else if path.starts_with("/refuse") {
        StatusCode::BAD_REQUEST.into_response()
    } else {
        StatusCode::OK.into_response()
    }
}

fn message(id: &str, target: &str) -> Message {
    Message {
        id: id.to_owned(),
        kind: "firing".to_owned(),
        severity: "critical".to_owned(),
        tenant: "contoso".to_owned(),
        check: "smtp_rcpt".to_owned(),
        target: target.to_owned(),
        status: "critical".to_owned(),
        reason: "recipient_not_found".to_owned(),
        title: format!("CRITICAL: contoso {target} recipient_not_found"),
        short: format!("CRITICAL contoso {target} recipient_not_found"),
        body: format!("{target} is gone\n"),
        since: Timestamp::now(),
        at: Timestamp::now(),
        link: None,
    }
}

fn row(message: &Message, receiver: &str) -> Enqueue {
    let now = Timestamp::now();
    Enqueue::from(NewDelivery {
        dedup_key: format!("{}/{receiver}", message.id),
        receiver: receiver.to_owned(),
        message_json: serde_json::to_string(message).unwrap(),
        created_at: now,
        expires_at: now.plus(Duration::from_secs(3_600)),
    })
}

struct Running {
    _dir: TempDir,
    store: Store,
    stats: Arc<DispatchStats>,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

async fn dispatcher(channels: HashMap<String, Channel>) -> Running {
    let dir = TempDir::new().unwrap();
    let store = Store::open(&dir.path().join("t.db")).await.unwrap();
    let stats = Arc::new(DispatchStats::default());
    let wake = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let dispatcher = Dispatcher {
        store: store.clone(),
        channels: Arc::new(RwLock::new(channels)),
        http: http_client(Duration::from_secs(5)).unwrap(),
        wake: wake.clone(),
        stats: stats.clone(),
        attempt_timeout: Duration::from_secs(5),
    };
    tokio::spawn(dispatcher.run(stop.clone()));
    Running {
        _dir: dir,
        store,
        stats,
        wake,
        stop,
    }
}

impl Running {
    async fn enqueue(&self, rows: Vec<Enqueue>) {
        self.store
            .record_with_alert_commit(
                &[],
                tw_store::RecordPolicy {
                    ok_sample_interval: Duration::from_secs(60),
                },
                &AlertCommit {
                    states: vec![],
                    deliveries: rows,
                },
            )
            .await
            .unwrap();
        self.wake.notify_one();
    }

    fn count(&self, receiver: &str, result: &str) -> u64 {
        self.stats
            .snapshot()
            .into_iter()
            .find(|(r, res, _)| r == receiver && *res == result)
            .map(|(_, _, n)| n)
            .unwrap_or(0)
    }

    async fn until(&self, what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..200 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out waiting for {what}; outbox: {:#?}",
            self.store.outbox().await
        );
    }
}

fn webhook(url: String) -> Channel {
    Channel::Webhook { url, secret: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_goes_out_as_one_request_per_receiver_and_every_row_is_recorded() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (sink, base) = Sink::start(stop.clone()).await;
    let running = dispatcher(HashMap::from([
        ("hook".to_owned(), webhook(format!("{base}/hook"))),
        (
            "am".to_owned(),
            Channel::Alertmanager {
                url: format!("{base}/am"),
            },
        ),
    ]))
    .await;
    let a = message("contoso/smtp_rcpt/a@contoso.com/1/firing", "a@contoso.com");
    let b = message("contoso/smtp_rcpt/b@contoso.com/1/firing", "b@contoso.com");
    let grouped = |message: &Message, receiver: &str| Enqueue {
        group_key: Some("contoso/g1".to_owned()),
        ..row(message, receiver)
    };
    running
        .enqueue(vec![
            grouped(&a, "hook"),
            grouped(&a, "am"),
            grouped(&b, "hook"),
            grouped(&b, "am"),
        ])
        .await;
    running
        .until("both receivers to be done", || {
            running.count("hook", "sent") == 2 && running.count("am", "sent") == 2
        })
        .await;

    let hooks = sink.at("/hook");
    assert_eq!(hooks.len(), 1, "{hooks:#?}");
    let (headers, body) = &hooks[0];
    assert_eq!(body["kind"], "group");
    assert_eq!(body["title"], "CRITICAL: contoso: 2 alerts");
    assert_eq!(
        body["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| alert["target"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["a@contoso.com", "b@contoso.com"]
    );
    assert_eq!(
        headers.get("idempotency-key"),
        body["id"].as_str().map(str::to_owned).as_ref()
    );
    // The group's id is the same for every receiver of the same alerts.
    let expected = tw_notify::group_message(&[a.clone(), b.clone()]).id;
    assert_eq!(body["id"].as_str(), Some(expected.as_str()));

    let alertmanager = sink.at("/am/api/v2/alerts");
    assert_eq!(alertmanager.len(), 1);
    let alerts = alertmanager[0].1.as_array().unwrap();
    assert_eq!(alerts.len(), 2);
    assert_eq!(
        alerts[1]["annotations"]["tenantwatch_id"].as_str(),
        Some(b.id.as_str())
    );
    let rows = running.store.outbox().await.unwrap();
    assert!(rows.iter().all(|r| r.state == "sent"), "{rows:#?}");
    running.stop.cancel();
}

fn chained(message: &Message, receiver: &str, to: &[&str], after_attempts: u32) -> Enqueue {
    Enqueue {
        fallback: Some(Fallback {
            to: to.iter().map(|s| (*s).to_owned()).collect(),
            after_attempts,
            after: Duration::from_secs(300),
        }),
        ..row(message, receiver)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_keeps_failing_hands_the_same_message_to_the_next_one() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (sink, base) = Sink::start(stop.clone()).await;
    let running = dispatcher(HashMap::from([
        ("signal".to_owned(), webhook(format!("{base}/fail/signal"))),
        ("sms".to_owned(), webhook(format!("{base}/sms"))),
    ]))
    .await;
    let alert = message("contoso/smtp_rcpt/a@contoso.com/1/firing", "a@contoso.com");
    // Two failed attempts (2 s backoff in between), then the hand-over.
    running
        .enqueue(vec![chained(&alert, "signal", &["sms"], 2)])
        .await;
    running
        .until("the fallback receiver to get it", || {
            running.count("sms", "sent") == 1
        })
        .await;
    assert_eq!(running.count("signal", "transient"), 2);
    assert_eq!(running.count("signal", "fallback"), 1);
    let first = sink.at("/fail/signal");
    let second = sink.at("/sms");
    assert_eq!((first.len(), second.len()), (2, 1));
    for (headers, body) in first.iter().chain(&second) {
        assert_eq!(body["id"].as_str(), Some(alert.id.as_str()));
        assert_eq!(
            headers.get("idempotency-key").map(String::as_str),
            Some(alert.id.as_str())
        );
    }
    let rows = running.store.outbox().await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| (r.receiver.as_str(), r.state.as_str(), r.attempts))
            .collect::<Vec<_>>(),
        [("signal", "fallback", 2), ("sms", "sent", 1)]
    );
    assert_eq!(rows[1].fallback_from, Some(rows[0].id));
    running.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_hands_a_whole_group_on_at_once_as_the_same_group() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (sink, base) = Sink::start(stop.clone()).await;
    let running = dispatcher(HashMap::from([
        (
            "signal".to_owned(),
            webhook(format!("{base}/refuse/signal")),
        ),
        ("sms".to_owned(), webhook(format!("{base}/fail/sms"))),
        ("hook".to_owned(), webhook(format!("{base}/hook"))),
    ]))
    .await;
    let a = message("contoso/smtp_rcpt/a@contoso.com/1/firing", "a@contoso.com");
    let b = message("contoso/identity/b@contoso.com/1/firing", "b@contoso.com");
    let grouped = |message: &Message| Enqueue {
        group_key: Some("contoso/g2".to_owned()),
        ..chained(message, "signal", &["sms", "hook"], 1)
    };
    running.enqueue(vec![grouped(&a), grouped(&b)]).await;
    running
        .until("the end of the chain to get the group", || {
            running.count("hook", "sent") == 2
        })
        .await;
    // signal refused (handed on at once), sms failed once (after_attempts = 1), hook took it.
    assert_eq!(
        (
            running.count("signal", "permanent"),
            running.count("signal", "fallback"),
            running.count("sms", "transient"),
            running.count("sms", "fallback"),
        ),
        (2, 2, 2, 2)
    );
    let ids: Vec<String> = ["/refuse/signal", "/fail/sms", "/hook"]
        .iter()
        .map(|path| {
            let requests = sink.at(path);
            assert_eq!(requests.len(), 1, "{path}: {requests:#?}");
            requests[0].1["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(ids[0], tw_notify::group_message(&[a, b]).id);
    let rows = running.store.outbox().await.unwrap();
    assert_eq!(
        rows.iter()
            .map(|r| format!("{}:{}", r.receiver, r.state))
            .collect::<Vec<_>>(),
        [
            "signal:fallback",
            "signal:fallback",
            "sms:fallback",
            "sms:fallback",
            "hook:sent",
            "hook:sent"
        ]
    );
    running.stop.cancel();
}
