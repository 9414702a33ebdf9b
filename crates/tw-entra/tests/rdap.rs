//! The `domain` (RDAP) check against the simulator's RDAP listener over real HTTPS: expiry
//! thresholds, registry holds, domains without a service or a record, redirects, the bootstrap
//! cache, and faults.
// Test helpers beside the #[test] functions unwrap too; a failed set-up must fail the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tw_core::{DomainName, Reason, Status, Timestamp};
use tw_entra::rdap::RdapClient;
use tw_entra::Outcome;
use tw_sim::entra::{EntraSim, Fault, FaultKind, SimRdap, SimServer};
use tw_sim::tls::TestCa;

const WARN_DAYS: u32 = 30;
const CRITICAL_DAYS: u32 = 7;

struct World {
    sim: EntraSim,
    client: reqwest::Client,
    ca: TestCa,
    now: Timestamp,
    shutdown: CancellationToken,
    _stop: DropGuard,
}

impl World {
    async fn start() -> World {
        let ca = TestCa::generate().expect("test CA");
        let shutdown = CancellationToken::new();
        let sim = EntraSim::start(&ca, shutdown.clone())
            .await
            .expect("simulator");
        let client = tw_entra::http::build_client(Some(ca.ca_cert_pem.as_bytes())).expect("client");
        World {
            sim,
            client,
            ca,
            now: Timestamp::parse_utc("2026-11-23T12:00:00Z").unwrap(),
            shutdown: shutdown.clone(),
            _stop: shutdown.drop_guard(),
        }
    }

    /// Registers `domain` expiring `days` days (and an hour) after `now`.
    fn expiring_in(&self, domain: &str, days: i64) -> String {
        let at = if days >= 0 {
            self.now
                .plus(Duration::from_secs(days.unsigned_abs() * 86_400 + 3_600))
        } else {
            self.now
                .minus(Duration::from_secs(days.unsigned_abs() * 86_400 - 3_600))
        };
        let at = at.to_string();
        self.sim.set_rdap(domain, SimRdap::expiring(&at));
        at
    }

    fn bootstrap(&self) -> RdapClient {
        RdapClient::bootstrap(self.sim.rdap_bootstrap_url())
    }

    async fn check(&self, rdap: &RdapClient, domain: &str) -> Outcome {
        rdap.domain(
            &self.client,
            &DomainName::parse(domain).unwrap(),
            WARN_DAYS,
            CRITICAL_DAYS,
            self.now,
            Instant::now() + Duration::from_secs(10),
        )
        .await
    }

    fn bootstrap_fetches(&self) -> usize {
        self.sim
            .requests()
            .iter()
            .filter(|r| r.server == SimServer::Rdap && r.path.ends_with("/dns.json"))
            .count()
    }
}

/// A stand-in for a redirector such as rdap.org (the simulator has none): an HTTPS server on
/// loopback with a certificate from the test CA that answers every `…/domain/{name}` with
/// `302 Found`, `Location: {target}/domain/{name}`; without a target, with a relative Location
/// to a new path on itself, an endless chain.
struct Redirector {
    /// `https://127.0.0.1:P/rdap-redirect`; the client appends `/domain/{name}`.
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn redirector(world: &World, target: Option<String>) -> Redirector {
    let acceptor = tokio_rustls::TlsAcceptor::from(world.ca.server_config(&["127.0.0.1"]).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let (counted, stop) = (hits.clone(), world.shutdown.clone());
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                () = stop.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(_) => return,
                },
            };
            let (acceptor, target, counted) = (acceptor.clone(), target.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16_384 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let hop = counted.fetch_add(1, Ordering::SeqCst);
                let head = String::from_utf8_lossy(&head);
                let path = head.split_whitespace().nth(1).unwrap_or("/");
                let name = path.rsplit('/').next().unwrap_or_default();
                let location = match &target {
                    Some(base) => format!("{base}/domain/{name}"),
                    None => format!("/hop{hop}/domain/{name}"),
                };
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Redirector {
        url: format!("https://127.0.0.1:{port}/rdap-redirect"),
        hits,
    }
}

fn fact<'a>(outcome: &'a Outcome, name: &str) -> &'a str {
    outcome
        .evidence
        .facts
        .get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no fact {name} in {outcome:#?}"))
}

#[tokio::test]
async fn a_distant_expiry_is_ok_with_its_facts() {
    let world = World::start().await;
    let expires = world.expiring_in("contoso.test", 200);
    let rdap = world.bootstrap();
    let outcome = world.check(&rdap, "contoso.test").await;
    assert_eq!(outcome.reason, Reason::RegistrationOk, "{outcome:#?}");
    assert_eq!(outcome.target, "contoso.test");
    assert_eq!(fact(&outcome, "days_left"), "200");
    assert_eq!(
        Timestamp::parse_utc(fact(&outcome, "expires_at")),
        Timestamp::parse_utc(&expires)
    );
    assert_eq!(fact(&outcome, "registrar"), "Example Registrar LLC");
    assert_eq!(fact(&outcome, "status"), "active");
    assert!(outcome
        .evidence
        .findings
        .iter()
        .any(|f| f.contains("active")));
    // Bootstrap, then the domain query at the base it named.
    let urls: Vec<&str> = outcome
        .evidence
        .exchanges
        .iter()
        .map(|e| e.url.as_str())
        .collect();
    assert_eq!(
        urls,
        [
            world.sim.rdap_bootstrap_url(),
            format!("{}/domain/contoso.test", world.sim.rdap_base_url())
        ]
    );
    assert!(outcome
        .evidence
        .exchanges
        .iter()
        .all(|e| e.status == Some(200)));
}

#[tokio::test]
async fn expiry_thresholds() {
    let world = World::start().await;
    let rdap = world.bootstrap();
    for (days, reason) in [
        (31, Reason::RegistrationOk),
        (30, Reason::RegistrationExpiring),
        (8, Reason::RegistrationExpiring),
        (7, Reason::RegistrationExpiringSoon),
        (0, Reason::RegistrationExpiringSoon),
        (-3, Reason::RegistrationExpired),
    ] {
        let domain = format!("d{}.test", days + 100);
        world.expiring_in(&domain, days);
        let outcome = world.check(&rdap, &domain).await;
        assert_eq!(outcome.reason, reason, "{days} days: {outcome:#?}");
        assert_eq!(fact(&outcome, "days_left"), days.to_string());
    }
    let outcome = world.check(&rdap, "d130.test").await;
    assert!(
        outcome.summary.contains("expires in 30 days"),
        "{}",
        outcome.summary
    );
    assert_eq!(outcome.reason.status(), Status::Warning);
    let outcome = world.check(&rdap, "d107.test").await;
    assert_eq!(outcome.reason.status(), Status::Critical);
}

#[tokio::test]
async fn a_registry_hold_is_expired_whatever_the_date() {
    let world = World::start().await;
    let rdap = world.bootstrap();
    for status in [
        "client hold",
        "server hold",
        "redemption period",
        "pending delete",
    ] {
        let far = world
            .now
            .plus(Duration::from_secs(300 * 86_400))
            .to_string();
        world.sim.set_rdap(
            "held.test",
            SimRdap {
                expiration: Some(far),
                status: vec!["client transfer prohibited".to_owned(), status.to_owned()],
                ..SimRdap::default()
            },
        );
        let outcome = world.check(&rdap, "held.test").await;
        assert_eq!(
            outcome.reason,
            Reason::RegistrationExpired,
            "{status}: {outcome:#?}"
        );
        assert!(outcome.summary.contains(status), "{}", outcome.summary);
        assert_eq!(
            fact(&outcome, "status"),
            format!("client transfer prohibited, {status}")
        );
        assert_eq!(outcome.evidence.findings.len(), 2);
    }
}

#[tokio::test]
async fn no_expiration_date_is_unknown_not_critical() {
    let world = World::start().await;
    world.sim.set_rdap(
        "undated.test",
        SimRdap {
            expiration: None,
            ..SimRdap::default()
        },
    );
    let outcome = world.check(&world.bootstrap(), "undated.test").await;
    assert_eq!(outcome.reason, Reason::RdapUnavailable, "{outcome:#?}");
    assert_eq!(outcome.reason.status(), Status::Unknown);
    assert!(!outcome.evidence.facts.contains_key("days_left"));
}

#[tokio::test]
async fn a_tld_without_rdap_service_is_unknown() {
    let world = World::start().await;
    world.expiring_in("contoso.test", 200);
    world.expiring_in("contoso.example", 200);
    world.sim.remove_rdap_service("example");
    let rdap = world.bootstrap();
    let outcome = world.check(&rdap, "contoso.example").await;
    assert_eq!(outcome.reason, Reason::RdapUnavailable, "{outcome:#?}");
    assert_eq!(
        outcome.summary,
        "no RDAP service for .example in the bootstrap file"
    );
    // Only the bootstrap file was asked for.
    assert_eq!(outcome.evidence.exchanges.len(), 1);
    let outcome = world.check(&rdap, "contoso.test").await;
    assert_eq!(outcome.reason, Reason::RegistrationOk);
}

#[tokio::test]
async fn a_domain_the_registry_does_not_know_is_unknown() {
    let world = World::start().await;
    world.expiring_in("contoso.test", 200);
    let outcome = world.check(&world.bootstrap(), "nobody.test").await;
    assert_eq!(outcome.reason, Reason::RdapUnavailable, "{outcome:#?}");
    assert!(outcome.summary.contains("404"), "{}", outcome.summary);
    assert!(
        outcome.summary.contains("nobody.test"),
        "{}",
        outcome.summary
    );
    assert_eq!(outcome.evidence.exchanges.last().unwrap().status, Some(404));
}

#[tokio::test]
async fn redirects_are_followed_and_recorded() {
    let world = World::start().await;
    world.expiring_in("contoso.test", 200);
    // Two hops, as a redirector in front of another redirector would give.
    let second = redirector(&world, Some(world.sim.rdap_base_url())).await;
    let first = redirector(&world, Some(second.url.clone())).await;
    let rdap = RdapClient::fixed(first.url.clone());
    let outcome = world.check(&rdap, "contoso.test").await;
    assert_eq!(outcome.reason, Reason::RegistrationOk, "{outcome:#?}");
    let hops: Vec<(Option<u16>, &str)> = outcome
        .evidence
        .exchanges
        .iter()
        .map(|e| (e.status, e.url.as_str()))
        .collect();
    let expected = [
        (Some(302), format!("{}/domain/contoso.test", first.url)),
        (Some(302), format!("{}/domain/contoso.test", second.url)),
        (
            Some(200),
            format!("{}/domain/contoso.test", world.sim.rdap_base_url()),
        ),
    ];
    let expected: Vec<(Option<u16>, &str)> =
        expected.iter().map(|(s, u)| (*s, u.as_str())).collect();
    assert_eq!(hops, expected);
    assert_eq!(
        outcome
            .evidence
            .findings
            .iter()
            .filter(|f| f.contains("redirect"))
            .count(),
        2,
        "{:?}",
        outcome.evidence.findings
    );
    assert_eq!(first.hits.load(Ordering::SeqCst), 1);
    assert_eq!(second.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_endless_redirect_chain_stops_after_three_hops() {
    let world = World::start().await;
    world.expiring_in("contoso.test", 200);
    let endless = redirector(&world, None).await;
    let outcome = world
        .check(&RdapClient::fixed(endless.url.clone()), "contoso.test")
        .await;
    assert_eq!(outcome.reason, Reason::HttpError, "{outcome:#?}");
    assert!(
        outcome.summary.contains("more than 3 redirects"),
        "{}",
        outcome.summary
    );
    // The first request and three followed redirects, each recorded.
    assert_eq!(outcome.evidence.exchanges.len(), 4);
    assert_eq!(endless.hits.load(Ordering::SeqCst), 4);
    assert!(outcome
        .evidence
        .exchanges
        .iter()
        .all(|e| e.status == Some(302)));
}

#[tokio::test]
async fn a_fixed_base_needs_no_bootstrap() {
    let world = World::start().await;
    world.expiring_in("contoso.test", 200);
    for base in [
        world.sim.rdap_base_url(),
        format!("{}/", world.sim.rdap_base_url()),
    ] {
        let outcome = world.check(&RdapClient::fixed(base), "contoso.test").await;
        assert_eq!(outcome.reason, Reason::RegistrationOk, "{outcome:#?}");
        assert_eq!(
            outcome.evidence.exchanges[0].url,
            format!("{}/domain/contoso.test", world.sim.rdap_base_url())
        );
    }
    assert_eq!(world.bootstrap_fetches(), 0);
}

#[tokio::test]
async fn the_bootstrap_file_is_fetched_once_and_refetched_when_old() {
    let world = World::start().await;
    world.expiring_in("contoso.test", 200);
    world.expiring_in("fabrikam.test", 200);
    let rdap = world.bootstrap();
    for domain in ["contoso.test", "fabrikam.test", "contoso.test"] {
        assert_eq!(
            world.check(&rdap, domain).await.reason,
            Reason::RegistrationOk
        );
    }
    assert_eq!(world.bootstrap_fetches(), 1);
    // The later checks carry only their own query as evidence.
    let outcome = world.check(&rdap, "fabrikam.test").await;
    assert_eq!(outcome.evidence.exchanges.len(), 1);

    let stale = world.bootstrap().with_bootstrap_max_age(Duration::ZERO);
    for _ in 0..2 {
        assert_eq!(
            world.check(&stale, "contoso.test").await.reason,
            Reason::RegistrationOk
        );
    }
    assert_eq!(world.bootstrap_fetches(), 3);

    // A failed refetch keeps the old copy rather than losing every domain.
    world.sim.inject(Fault::once(
        "dns.json",
        FaultKind::Unavailable {
            retry_after_s: None,
        },
    ));
    let outcome = world.check(&stale, "contoso.test").await;
    assert_eq!(outcome.reason, Reason::RegistrationOk, "{outcome:#?}");
    assert!(outcome
        .evidence
        .findings
        .iter()
        .any(|f| f.contains("previously fetched copy")));
}

#[tokio::test]
async fn concurrent_checks_share_one_bootstrap_fetch() {
    let world = World::start().await;
    for i in 0..8 {
        world.expiring_in(&format!("d{i}.test"), 200);
    }
    world.sim.inject(Fault::once(
        "dns.json",
        FaultKind::Delay(Duration::from_millis(300)),
    ));
    let rdap = Arc::new(world.bootstrap());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let (rdap, client, now) = (rdap.clone(), world.client.clone(), world.now);
        tasks.spawn(async move {
            rdap.domain(
                &client,
                &DomainName::parse(&format!("d{i}.test")).unwrap(),
                WARN_DAYS,
                CRITICAL_DAYS,
                now,
                Instant::now() + Duration::from_secs(10),
            )
            .await
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        let outcome = outcome.unwrap();
        assert_eq!(outcome.reason, Reason::RegistrationOk, "{outcome:#?}");
    }
    assert_eq!(world.bootstrap_fetches(), 1);
}

#[tokio::test]
async fn faults_are_unknown() {
    let world = World::start().await;
    world.expiring_in("contoso.test", 200);
    let rdap = RdapClient::fixed(world.sim.rdap_base_url());
    for (kind, reason) in [
        (
            FaultKind::TooManyRequests {
                retry_after_s: Some(30),
            },
            Reason::Throttled,
        ),
        (
            FaultKind::Unavailable {
                retry_after_s: None,
            },
            Reason::ServiceUnavailable,
        ),
        (FaultKind::GatewayTimeout, Reason::ServiceUnavailable),
        (FaultKind::MalformedJson, Reason::MalformedResponse),
        (FaultKind::TruncatedJson, Reason::MalformedResponse),
    ] {
        world.sim.inject(Fault::once("/domain/", kind.clone()));
        let outcome = world.check(&rdap, "contoso.test").await;
        assert_eq!(outcome.reason, reason, "{kind:?}: {outcome:#?}");
        assert_eq!(outcome.reason.status(), Status::Unknown);
    }
    // A bootstrap file that cannot be read, with no earlier copy: unknown too.
    world
        .sim
        .inject(Fault::once("dns.json", FaultKind::TruncatedJson));
    let outcome = world.check(&world.bootstrap(), "contoso.test").await;
    assert_eq!(outcome.reason, Reason::MalformedResponse, "{outcome:#?}");
    assert!(outcome.summary.contains("bootstrap"), "{}", outcome.summary);
}
