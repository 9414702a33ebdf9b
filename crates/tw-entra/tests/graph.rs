//! The Graph client and the identity, licence, admins and health checks against the Entra
//! simulator over real HTTPS on 127.0.0.1: every verdict, the retry and paging rules, and
//! that the bearer token never reaches evidence.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};
use tw_core::config::LicenceSettings;
use tw_core::{EmailAddress, HttpEvidence, Reason, Secret, Timestamp};
use tw_entra::graph::{self, Call, GraphClient, GraphError};
use tw_entra::http::build_client;
use tw_entra::Outcome;
use tw_sim::entra::{
    EntraSim, Fault, FaultKind, SimAdmin, SimPlan, SimRequest, SimServer, SimSku, SimSubscription,
    SimTenant, SimUser, SimUserLicense,
};
use tw_sim::tls::TestCa;

const TENANT: &str = "3f1c2a9e-0000-4000-8000-00000000c0de";
const ALICE: &str = "a11ce000-0000-4000-8000-000000000001";
const BOB: &str = "b0b00000-0000-4000-8000-000000000002";
const CAROL: &str = "ca201000-0000-4000-8000-000000000003";
const DAVE: &str = "da7e0000-0000-4000-8000-000000000004";
const ALICE_UPN: &str = "alice@contoso.example";
const EXCHANGE_S_ENTERPRISE: &str = "efb87545-963c-4e0d-99df-69c6916d9eb0";
const EXCHANGE_S_FOUNDATION: &str = "113feb6c-3fe4-4440-bddc-54d774bf0318";
const DAY: Duration = Duration::from_secs(86_400);

struct Env {
    sim: EntraSim,
    ca: TestCa,
    graph: GraphClient,
    token: Secret,
    _shutdown: DropGuard,
}

impl Env {
    async fn start() -> Env {
        Env::with_limits(3, Duration::from_secs(5)).await
    }

    async fn with_limits(max_retries: u32, max_retry_wait: Duration) -> Env {
        let ca = TestCa::generate().unwrap();
        let shutdown = CancellationToken::new();
        let sim = EntraSim::start(&ca, shutdown.clone()).await.unwrap();
        sim.add_tenant(SimTenant::managed(TENANT, "Contoso", &["contoso.example"]));
        let token = Secret::new(sim.issue_token(TENANT));
        let graph = GraphClient::new(
            client(&ca),
            &sim.graph_url(),
            4,
            max_retries,
            max_retry_wait,
        );
        Env {
            sim,
            ca,
            graph,
            token,
            _shutdown: shutdown.drop_guard(),
        }
    }

    fn client_with(&self, max_retries: u32, max_retry_wait: Duration) -> GraphClient {
        GraphClient::new(
            client(&self.ca),
            &self.sim.graph_url(),
            4,
            max_retries,
            max_retry_wait,
        )
    }

    fn call(&self) -> Call<'_> {
        Call {
            token: &self.token,
            tenant: TENANT,
            deadline: deadline(),
        }
    }

    async fn identity(&self, address: &str, known: Option<&str>) -> Outcome {
        let outcome = graph::identity(
            &self.graph,
            &self.token,
            TENANT,
            &email(address),
            known,
            Timestamp::now(),
            deadline(),
        )
        .await;
        self.assert_clean(&outcome);
        outcome
    }

    async fn licence(
        &self,
        identities: &[(EmailAddress, Option<String>)],
        settings: &LicenceSettings,
        now: Timestamp,
    ) -> Vec<Outcome> {
        let outcomes = graph::licence(
            &self.graph,
            &self.token,
            TENANT,
            "contoso",
            identities,
            settings,
            now,
            deadline(),
        )
        .await;
        for outcome in &outcomes {
            self.assert_clean(outcome);
        }
        outcomes
    }

    async fn tenant_licence(&self, settings: &LicenceSettings, now: Timestamp) -> Outcome {
        let mut outcomes = self.licence(&[], settings, now).await;
        assert_eq!(outcomes.len(), 1);
        let outcome = outcomes.remove(0);
        assert_eq!(outcome.target, "contoso");
        outcome
    }

    async fn mailbox(&self, id: &str) -> Outcome {
        let outcomes = self
            .licence(
                &[(email(ALICE_UPN), Some(id.to_owned()))],
                &LicenceSettings::default(),
                Timestamp::now(),
            )
            .await;
        assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
        assert_eq!(outcomes[1].target, ALICE_UPN);
        outcomes[1].clone()
    }

    async fn admins(&self) -> Outcome {
        let outcome = graph::admins(&self.graph, &self.token, TENANT, "contoso", deadline()).await;
        self.assert_clean(&outcome);
        outcome
    }

    async fn health_with(&self, graph: &GraphClient, alert: bool) -> Outcome {
        let outcome = graph::health(graph, &self.token, TENANT, "contoso", alert, deadline()).await;
        self.assert_clean(&outcome);
        outcome
    }

    async fn health(&self, alert: bool) -> Outcome {
        self.health_with(&self.graph, alert).await
    }

    /// The bearer never shows in evidence or the summary, and every exchange carries the
    /// client-request-id it sent.
    fn assert_clean(&self, outcome: &Outcome) {
        assert_token_absent(&outcome.evidence, &self.token);
        assert!(!outcome.summary.contains(self.token.expose()));
        for exchange in &outcome.evidence.exchanges {
            assert!(exchange.client_request_id.is_some(), "{exchange:?}");
        }
    }

    fn graph_requests(&self) -> Vec<SimRequest> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.server == SimServer::Graph)
            .collect()
    }
}

fn client(ca: &TestCa) -> reqwest::Client {
    build_client(Some(ca.ca_cert_pem.as_bytes())).unwrap()
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(20)
}

fn email(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).unwrap()
}

fn assert_token_absent(evidence: &HttpEvidence, token: &Secret) {
    let json = serde_json::to_string(evidence).unwrap();
    assert!(!token.expose().is_empty());
    assert!(
        !json.contains(token.expose()),
        "the token leaked into evidence: {json}"
    );
}

fn fact<'a>(outcome: &'a Outcome, key: &str) -> &'a str {
    outcome
        .evidence
        .facts
        .get(key)
        .unwrap_or_else(|| panic!("no fact {key} in {:#?}", outcome.evidence.facts))
}

fn statuses(evidence: &HttpEvidence) -> Vec<Option<u16>> {
    evidence.exchanges.iter().map(|e| e.status).collect()
}

fn day(at: Timestamp) -> String {
    at.to_string()[..10].to_owned()
}

fn licence_with(plans: Vec<SimPlan>) -> SimUserLicense {
    SimUserLicense {
        plans,
        ..SimUserLicense::e3()
    }
}

// --- identity -----------------------------------------------------------------------------

#[tokio::test]
async fn identity_ok_learns_the_object_id_and_the_second_run_asks_by_id() {
    let env = Env::start().await;
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));

    let first = env.identity(ALICE_UPN, None).await;
    assert_eq!(first.reason, Reason::IdentityOk, "{first:#?}");
    assert_eq!(first.target, ALICE_UPN);
    assert_eq!(fact(&first, "object_id"), ALICE);
    assert_eq!(fact(&first, "user_principal_name"), ALICE_UPN);
    assert_eq!(fact(&first, "account_enabled"), "true");
    let exchange = &first.evidence.exchanges[0];
    assert_eq!(exchange.status, Some(200));
    assert!(
        exchange.request_id.is_some(),
        "request-id kept: {exchange:?}"
    );

    env.sim.clear_requests();
    let learned = fact(&first, "object_id").to_owned();
    let second = env.identity(ALICE_UPN, Some(&learned)).await;
    assert_eq!(second.reason, Reason::IdentityOk, "{second:#?}");
    let requests = env.graph_requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].path, format!("/v1.0/users/{ALICE}"));
    assert!(
        requests[0].query.contains("$select="),
        "{:?}",
        requests[0].query
    );
    assert!(requests[0].authorized);
    assert_eq!(
        requests[0].client_request_id,
        second.evidence.exchanges[0].client_request_id
    );
}

#[tokio::test]
async fn first_sight_asks_by_the_address_as_upn() {
    let env = Env::start().await;
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    let outcome = env.identity(ALICE_UPN, None).await;
    assert_eq!(outcome.reason, Reason::IdentityOk);
    let requests = env.graph_requests();
    assert_eq!(requests[0].path, format!("/v1.0/users/{ALICE_UPN}"));
    for field in [
        "accountEnabled",
        "proxyAddresses",
        "assignedPlans",
        "userType",
    ] {
        assert!(requests[0].query.contains(field), "{}", requests[0].query);
    }
}

#[tokio::test]
async fn a_disabled_account_is_critical() {
    let env = Env::start().await;
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    env.sim.set_account_enabled(TENANT, ALICE, false);
    let outcome = env.identity(ALICE_UPN, Some(ALICE)).await;
    assert_eq!(outcome.reason, Reason::IdentityDisabled, "{outcome:#?}");
    assert_eq!(fact(&outcome, "account_enabled"), "false");
}

#[tokio::test]
async fn a_watched_alias_removed_from_proxy_addresses_is_critical() {
    let env = Env::start().await;
    let mut alice = SimUser::licensed(ALICE, ALICE_UPN);
    alice.proxy_addresses = vec![
        format!("SMTP:{ALICE_UPN}"),
        "smtp:Sales@contoso.example".to_owned(),
    ];
    env.sim.add_user(TENANT, alice);

    // The proxy address is matched case-insensitively, without its smtp: prefix.
    let before = env.identity("sales@Contoso.example", Some(ALICE)).await;
    assert_eq!(before.reason, Reason::IdentityOk, "{before:#?}");

    env.sim
        .set_proxy_addresses(TENANT, ALICE, vec![format!("SMTP:{ALICE_UPN}")]);
    let after = env.identity("sales@contoso.example", Some(ALICE)).await;
    assert_eq!(after.reason, Reason::AddressRemoved, "{after:#?}");
    assert!(
        after.summary.contains("sales@contoso.example"),
        "{}",
        after.summary
    );

    // The UPN itself is still fine: it is the primary SMTP address.
    let upn = env.identity(ALICE_UPN, Some(ALICE)).await;
    assert_eq!(upn.reason, Reason::IdentityOk);
}

#[tokio::test]
async fn an_address_that_is_only_the_upn_is_not_enough() {
    let env = Env::start().await;
    let mut alice = SimUser::licensed(ALICE, ALICE_UPN);
    alice.mail = Some("alice.smith@contoso.example".to_owned());
    alice.proxy_addresses = vec!["SMTP:alice.smith@contoso.example".to_owned()];
    env.sim.add_user(TENANT, alice);
    let outcome = env.identity(ALICE_UPN, Some(ALICE)).await;
    assert_eq!(outcome.reason, Reason::AddressRemoved, "{outcome:#?}");
}

#[tokio::test]
async fn a_soft_deleted_user_reports_its_restore_deadline() {
    let env = Env::start().await;
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    // Whole seconds: Graph writes deletedDateTime without milliseconds.
    let deleted = Timestamp(Timestamp::now().as_millis() / 1000 * 1000).minus(DAY * 3);
    env.sim.delete_user_at(TENANT, ALICE, &deleted.to_string());

    let outcome = env.identity(ALICE_UPN, Some(ALICE)).await;
    assert_eq!(outcome.reason, Reason::IdentityDeleted, "{outcome:#?}");
    let until = deleted.plus(DAY * 30);
    assert_eq!(fact(&outcome, "deleted_at"), deleted.to_string());
    assert_eq!(fact(&outcome, "restorable_until"), until.to_string());
    assert!(
        outcome.summary.contains(&format!(
            "soft-deleted at {deleted}, restorable until {until}"
        )),
        "{}",
        outcome.summary
    );
    assert!(
        outcome.summary.contains("26 days left"),
        "{}",
        outcome.summary
    );
    assert_eq!(statuses(&outcome.evidence), [Some(404), Some(200)]);
    let requests = env.graph_requests();
    assert_eq!(
        requests[1].path,
        format!("/v1.0/directory/deletedItems/{ALICE}")
    );
}

#[tokio::test]
async fn a_purged_user_is_hard_deleted() {
    let env = Env::start().await;
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    env.sim.delete_user(TENANT, ALICE);
    env.sim.purge_user(TENANT, ALICE);
    let outcome = env.identity(ALICE_UPN, Some(ALICE)).await;
    assert_eq!(outcome.reason, Reason::IdentityNotFound, "{outcome:#?}");
    assert!(
        outcome
            .summary
            .contains("not in deleted items: hard-deleted or never existed"),
        "{}",
        outcome.summary
    );
    assert_eq!(statuses(&outcome.evidence), [Some(404), Some(404)]);
    assert_eq!(
        outcome.evidence.exchanges[0].error_code.as_deref(),
        Some("Request_ResourceNotFound")
    );
}

#[tokio::test]
async fn first_sight_of_a_deleted_user_finds_it_by_its_mangled_upn() {
    let env = Env::start().await;
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    // A look-alike whose UPN also ends with the watched address, deleted more recently.
    env.sim
        .add_user(TENANT, SimUser::licensed(BOB, "xalice@contoso.example"));
    let earlier = Timestamp(Timestamp::now().as_millis() / 1000 * 1000).minus(DAY);
    env.sim.delete_user_at(TENANT, ALICE, &earlier.to_string());
    env.sim.delete_user(TENANT, BOB);

    let outcome = env.identity(ALICE_UPN, None).await;
    assert_eq!(outcome.reason, Reason::IdentityDeleted, "{outcome:#?}");
    assert_eq!(fact(&outcome, "object_id"), ALICE, "the id is learned");
    assert_eq!(fact(&outcome, "deleted_at"), earlier.to_string());
    let requests = env.graph_requests();
    // The UPN (404), the address among proxyAddresses (none), then deleted items.
    assert_eq!(requests[1].path, "/v1.0/users");
    let search = &requests[2];
    assert_eq!(
        search.path,
        "/v1.0/directory/deletedItems/microsoft.graph.user"
    );
    assert!(search.query.contains("endswith"), "{}", search.query);
    assert!(search.query.contains("$count=true"), "{}", search.query);
}

#[tokio::test]
async fn first_sight_of_an_unknown_address_is_not_found() {
    let env = Env::start().await;
    let outcome = env.identity("nobody@contoso.example", None).await;
    assert_eq!(outcome.reason, Reason::IdentityNotFound, "{outcome:#?}");
    assert_eq!(
        statuses(&outcome.evidence),
        [Some(404), Some(200), Some(200)]
    );
}

#[tokio::test]
async fn first_sight_of_a_watched_alias_finds_its_user_by_address_not_a_false_critical() {
    let env = Env::start().await;
    let mut alice = SimUser::licensed(ALICE, ALICE_UPN);
    alice.proxy_addresses = vec![
        format!("SMTP:{ALICE_UPN}"),
        "smtp:billing@contoso.example".to_owned(),
    ];
    env.sim.add_user(TENANT, alice);
    let outcome = env.identity("billing@contoso.example", None).await;
    assert_eq!(outcome.reason, Reason::IdentityOk, "{outcome:#?}");
    assert_eq!(fact(&outcome, "object_id"), ALICE, "the id is learned");
    assert_eq!(fact(&outcome, "looked_up_by"), "proxy_address");
    let requests = env.graph_requests();
    assert_eq!(requests[1].path, "/v1.0/users");
    assert!(
        requests[1].query.contains("proxyAddresses"),
        "{}",
        requests[1].query
    );
    assert!(
        requests[1].query.contains("$count=true"),
        "{}",
        requests[1].query
    );
}

#[tokio::test]
async fn a_refused_user_read_is_permission_denied() {
    let env = Env::start().await;
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    env.sim.deny(TENANT, "/users");
    let outcome = env.identity(ALICE_UPN, Some(ALICE)).await;
    assert_eq!(outcome.reason, Reason::PermissionDenied, "{outcome:#?}");
    assert!(
        outcome.summary.contains("Authorization_RequestDenied"),
        "{}",
        outcome.summary
    );
    assert_eq!(
        outcome.evidence.exchanges[0].error_code.as_deref(),
        Some("Authorization_RequestDenied")
    );
}

#[tokio::test]
async fn a_refused_token_is_an_http_error_and_never_in_evidence() {
    let env = Env::start().await;
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    let forged = Secret::new("forged-token-canary-7d1e");
    let outcome = graph::identity(
        &env.graph,
        &forged,
        TENANT,
        &email(ALICE_UPN),
        Some(ALICE),
        Timestamp::now(),
        deadline(),
    )
    .await;
    assert_eq!(outcome.reason, Reason::HttpError, "{outcome:#?}");
    assert!(
        outcome
            .summary
            .contains("token refused (InvalidAuthenticationToken)"),
        "{}",
        outcome.summary
    );
    assert_token_absent(&outcome.evidence, &forged);
    assert!(!format!("{outcome:?}").contains(forged.expose()));
}

#[tokio::test]
async fn a_truncated_user_answer_is_malformed() {
    let env = Env::start().await;
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    env.sim
        .inject(Fault::once("/users/", FaultKind::TruncatedJson));
    let outcome = env.identity(ALICE_UPN, Some(ALICE)).await;
    assert_eq!(outcome.reason, Reason::MalformedResponse, "{outcome:#?}");
    assert!(outcome.evidence.exchanges[0].error.is_some());
}

// --- licence ------------------------------------------------------------------------------

fn healthy_tenant(env: &Env, now: Timestamp) {
    env.sim.set_skus(TENANT, vec![SimSku::e3(25, 10)]);
    env.sim.set_subscriptions(
        TENANT,
        vec![SimSubscription::e3(
            "5b0e0000-0000-4000-8000-000000000001",
            Some(&now.plus(DAY * 200).to_string()),
            25,
        )],
    );
}

#[tokio::test]
async fn licences_ok_for_the_tenant_and_the_identity() {
    let env = Env::start().await;
    let now = Timestamp::now();
    healthy_tenant(&env, now);
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    let outcomes = env
        .licence(
            &[
                (email(ALICE_UPN), Some(ALICE.to_owned())),
                // No object id yet: left to the identity check.
                (email("bob@contoso.example"), None),
            ],
            &LicenceSettings::default(),
            now,
        )
        .await;
    assert_eq!(outcomes.len(), 2, "{outcomes:#?}");
    let tenant = &outcomes[0];
    assert_eq!(tenant.reason, Reason::LicencesOk, "{tenant:#?}");
    assert_eq!(fact(tenant, "sku.ENTERPRISEPACK.status"), "Enabled");
    assert_eq!(fact(tenant, "sku.ENTERPRISEPACK.consumed"), "10");
    assert_eq!(fact(tenant, "sku.ENTERPRISEPACK.enabled"), "25");
    assert_eq!(
        fact(
            tenant,
            "subscription.5b0e0000-0000-4000-8000-000000000001.status"
        ),
        "Enabled"
    );
    assert_eq!(
        fact(
            tenant,
            "subscription.5b0e0000-0000-4000-8000-000000000001.days_to_next_lifecycle"
        ),
        "200"
    );
    let alice = &outcomes[1];
    assert_eq!(alice.target, ALICE_UPN);
    assert_eq!(alice.reason, Reason::LicencesOk, "{alice:#?}");
    assert!(
        alice.summary.contains("EXCHANGE_S_ENTERPRISE"),
        "{}",
        alice.summary
    );
}

#[tokio::test]
async fn a_sku_in_warning_is_grace_and_suspended_or_locked_out_is_critical() {
    let env = Env::start().await;
    let now = Timestamp::now();
    healthy_tenant(&env, now);
    let settings = LicenceSettings::default();

    env.sim.set_sku_status(TENANT, "ENTERPRISEPACK", "Warning");
    let grace = env.tenant_licence(&settings, now).await;
    assert_eq!(grace.reason, Reason::LicenceGrace, "{grace:#?}");
    assert!(
        grace.summary.contains("ENTERPRISEPACK"),
        "{}",
        grace.summary
    );

    env.sim
        .set_sku_status(TENANT, "ENTERPRISEPACK", "Suspended");
    let suspended = env.tenant_licence(&settings, now).await;
    assert_eq!(suspended.reason, Reason::LicenceSuspended, "{suspended:#?}");

    env.sim
        .set_sku_status(TENANT, "ENTERPRISEPACK", "LockedOut");
    let locked = env.tenant_licence(&settings, now).await;
    assert_eq!(locked.reason, Reason::LicenceSuspended, "{locked:#?}");
}

#[tokio::test]
async fn a_subscription_status_decides_too() {
    let env = Env::start().await;
    let now = Timestamp::now();
    healthy_tenant(&env, now);
    let settings = LicenceSettings::default();
    let id = "5b0e0000-0000-4000-8000-000000000001";

    env.sim.set_subscription(TENANT, id, "Warning", None);
    let grace = env.tenant_licence(&settings, now).await;
    assert_eq!(grace.reason, Reason::LicenceGrace, "{grace:#?}");

    env.sim.set_subscription(TENANT, id, "LockedOut", None);
    let locked = env.tenant_licence(&settings, now).await;
    assert_eq!(locked.reason, Reason::LicenceSuspended, "{locked:#?}");
    // Every finding is a line; the worst one decides.
    assert!(
        locked
            .evidence
            .findings
            .iter()
            .any(|f| f.starts_with("critical:")),
        "{:#?}",
        locked.evidence.findings
    );
}

#[tokio::test]
async fn more_assigned_than_enabled_seats_is_over_consumed() {
    let env = Env::start().await;
    let now = Timestamp::now();
    healthy_tenant(&env, now);
    env.sim.set_skus(TENANT, vec![SimSku::e3(10, 12)]);
    let outcome = env.tenant_licence(&LicenceSettings::default(), now).await;
    assert_eq!(outcome.reason, Reason::SeatsOverConsumed, "{outcome:#?}");
    assert!(outcome.summary.contains("12"), "{}", outcome.summary);
}

#[tokio::test]
async fn a_trial_counts_down_to_its_end() {
    let env = Env::start().await;
    let now = Timestamp::now();
    healthy_tenant(&env, now);
    let ends = now.plus(DAY * 6 + Duration::from_secs(3_600));
    let mut trial = SimSubscription::e3(
        "7a1a0000-0000-4000-8000-000000000002",
        Some(&ends.to_string()),
        25,
    );
    trial.is_trial = true;
    trial.sku_part_number = "ENTERPRISEPREMIUM".to_owned();
    env.sim.set_subscriptions(TENANT, vec![trial.clone()]);
    let outcome = env.tenant_licence(&LicenceSettings::default(), now).await;
    assert_eq!(outcome.reason, Reason::RenewalDue, "{outcome:#?}");
    assert_eq!(
        outcome.summary,
        format!("ENTERPRISEPREMIUM trial ends in 6 days on {}", day(ends))
    );

    // Far from its end a trial is fine.
    trial.next_lifecycle = Some(now.plus(DAY * 60).to_string());
    env.sim.set_subscriptions(TENANT, vec![trial.clone()]);
    let later = env.tenant_licence(&LicenceSettings::default(), now).await;
    assert_eq!(later.reason, Reason::LicencesOk, "{later:#?}");

    // Past its end it has lapsed.
    trial.next_lifecycle = Some(now.minus(DAY * 2).to_string());
    env.sim.set_subscriptions(TENANT, vec![trial]);
    let lapsed = env.tenant_licence(&LicenceSettings::default(), now).await;
    assert_eq!(lapsed.reason, Reason::LicenceLapsed, "{lapsed:#?}");
}

#[tokio::test]
async fn only_hand_renewed_subscriptions_count_down() {
    let env = Env::start().await;
    let now = Timestamp::now();
    healthy_tenant(&env, now);
    let id = "5b0e0000-0000-4000-8000-000000000009";
    let near = now.plus(DAY * 2 + Duration::from_secs(60));
    let subscription = SimSubscription::e3(id, Some(&near.to_string()), 25);
    env.sim.set_subscriptions(TENANT, vec![subscription]);

    // Not listed: it may renew itself, so a monthly renewal date does not warn.
    let auto = env.tenant_licence(&LicenceSettings::default(), now).await;
    assert_eq!(auto.reason, Reason::LicencesOk, "{auto:#?}");
    // The figure is kept, but not as `days_left`, which the daemon exports as a countdown.
    assert_eq!(
        fact(&auto, &format!("subscription.{id}.days_to_next_lifecycle")),
        "2"
    );
    assert!(!auto
        .evidence
        .facts
        .contains_key(&format!("subscription.{id}.days_left")));

    // Listed by SKU part number (any case) or by id: it counts down.
    for listed in ["enterprisepack", id] {
        let settings = LicenceSettings {
            manual_renewal: vec![listed.to_owned()],
            ..LicenceSettings::default()
        };
        let manual = env.tenant_licence(&settings, now).await;
        assert_eq!(manual.reason, Reason::RenewalDue, "{listed}: {manual:#?}");
        assert!(
            manual
                .summary
                .contains(&format!("ends in 2 days on {}", day(near))),
            "{}",
            manual.summary
        );
    }

    // A hand-renewed subscription past its date has lapsed.
    env.sim.set_subscriptions(
        TENANT,
        vec![SimSubscription::e3(
            id,
            Some(&now.minus(DAY).to_string()),
            25,
        )],
    );
    let settings = LicenceSettings {
        manual_renewal: vec!["ENTERPRISEPACK".to_owned()],
        ..LicenceSettings::default()
    };
    let lapsed = env.tenant_licence(&settings, now).await;
    assert_eq!(lapsed.reason, Reason::LicenceLapsed, "{lapsed:#?}");
}

#[tokio::test]
async fn an_identity_without_a_mailbox_plan_loses_its_mailbox() {
    let env = Env::start().await;
    healthy_tenant(&env, Timestamp::now());
    env.sim
        .add_user(TENANT, SimUser::unlicensed(ALICE, ALICE_UPN));
    let none = env.mailbox(ALICE).await;
    assert_eq!(none.reason, Reason::MailboxPlanLost, "{none:#?}");
    assert!(
        none.summary.contains("mailbox will be disconnected"),
        "{}",
        none.summary
    );

    // EXCHANGE_S_FOUNDATION is an Exchange plan but no mailbox.
    env.sim.set_user_licenses(
        TENANT,
        ALICE,
        vec![licence_with(vec![SimPlan::new(
            EXCHANGE_S_FOUNDATION,
            "EXCHANGE_S_FOUNDATION",
            "Success",
            "Company",
        )])],
    );
    let foundation = env.mailbox(ALICE).await;
    assert_eq!(
        foundation.reason,
        Reason::MailboxPlanLost,
        "{foundation:#?}"
    );
    assert!(
        foundation.summary.contains("no Exchange mailbox plan"),
        "{}",
        foundation.summary
    );
}

#[tokio::test]
async fn a_disabled_or_failed_mailbox_plan_is_named() {
    let env = Env::start().await;
    healthy_tenant(&env, Timestamp::now());
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    for (status, words) in [
        (
            "Disabled",
            "EXCHANGE_S_ENTERPRISE (ENTERPRISEPACK) is Disabled",
        ),
        ("Error", "failed provisioning (Error)"),
        ("PendingInput", "failed provisioning (PendingInput)"),
    ] {
        env.sim.set_user_licenses(
            TENANT,
            ALICE,
            vec![licence_with(vec![SimPlan::new(
                EXCHANGE_S_ENTERPRISE,
                "EXCHANGE_S_ENTERPRISE",
                status,
                "User",
            )])],
        );
        let outcome = env.mailbox(ALICE).await;
        assert_eq!(
            outcome.reason,
            Reason::MailboxPlanLost,
            "{status}: {outcome:#?}"
        );
        assert!(
            outcome.summary.contains(words),
            "{status}: {}",
            outcome.summary
        );
    }
    // A plan matched by name when its id is unknown (another cloud's id).
    env.sim.set_user_licenses(
        TENANT,
        ALICE,
        vec![licence_with(vec![SimPlan::new(
            "0b0b0b0b-0000-4000-8000-000000000000",
            "EXCHANGE_S_STANDARD",
            "Success",
            "User",
        )])],
    );
    let by_name = env.mailbox(ALICE).await;
    assert_eq!(by_name.reason, Reason::LicencesOk, "{by_name:#?}");
}

#[tokio::test]
async fn a_refused_license_details_falls_back_to_assigned_plans() {
    let env = Env::start().await;
    healthy_tenant(&env, Timestamp::now());
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    env.sim
        .add_user(TENANT, SimUser::unlicensed(BOB, "bob@contoso.example"));
    env.sim.deny(TENANT, "licenseDetails");

    let alice = env.mailbox(ALICE).await;
    assert_eq!(alice.reason, Reason::LicencesOk, "{alice:#?}");
    assert!(alice.summary.contains("assignedPlans"), "{}", alice.summary);
    let statuses: Vec<_> = statuses(&alice.evidence);
    assert_eq!(statuses, [Some(403), Some(200)]);
    let requests = env.graph_requests();
    let fallback = requests
        .iter()
        .find(|r| r.path == format!("/v1.0/users/{ALICE}"))
        .expect("the fallback asks the user");
    assert!(
        fallback.query.contains("assignedPlans"),
        "{}",
        fallback.query
    );

    let bob = env.mailbox(BOB).await;
    assert_eq!(bob.reason, Reason::MailboxPlanLost, "{bob:#?}");
}

// --- admins -------------------------------------------------------------------------------

#[tokio::test]
async fn no_enabled_admin_is_critical() {
    let env = Env::start().await;
    env.sim.set_global_admins(TENANT, vec![]);
    let none = env.admins().await;
    assert_eq!(none.reason, Reason::NoAdmin, "{none:#?}");
    assert_eq!(fact(&none, "admin_count"), "0");

    let disabled = SimAdmin {
        account_enabled: false,
        ..SimAdmin::user(ALICE, "Alice")
    };
    env.sim.set_global_admins(
        TENANT,
        vec![disabled, SimAdmin::service_principal(BOB, "Automation")],
    );
    let only_disabled = env.admins().await;
    assert_eq!(only_disabled.reason, Reason::NoAdmin, "{only_disabled:#?}");
    assert!(
        only_disabled
            .evidence
            .findings
            .iter()
            .any(|f| f.contains("service principal") && f.contains("Automation")),
        "{:#?}",
        only_disabled.evidence.findings
    );
}

#[tokio::test]
async fn a_single_admin_has_no_independent_second() {
    let env = Env::start().await;
    env.sim
        .set_global_admins(TENANT, vec![SimAdmin::user(ALICE, "Alice")]);
    let outcome = env.admins().await;
    assert_eq!(outcome.reason, Reason::SingleAdmin, "{outcome:#?}");
    assert_eq!(fact(&outcome, "admin_count"), "1");
    assert!(
        outcome
            .summary
            .contains("no independent second admin identity"),
        "{}",
        outcome.summary
    );
    let requests = env.graph_requests();
    assert_eq!(
        requests[0].path,
        "/v1.0/roleManagement/directory/roleAssignments"
    );
    assert!(
        requests[0]
            .query
            .contains("62e90394-69f5-4237-9190-012177145e10"),
        "{}",
        requests[0].query
    );
    assert!(
        requests[0].query.contains("$expand=principal"),
        "{}",
        requests[0].query
    );
}

#[tokio::test]
async fn group_members_count_once_and_disabled_ones_not_at_all() {
    let env = Env::start().await;
    let disabled = SimAdmin {
        account_enabled: false,
        ..SimAdmin::user(CAROL, "Carol")
    };
    let guest = SimAdmin {
        user_type: "Guest".to_owned(),
        ..SimAdmin::user(DAVE, "Dave (partner)")
    };
    // Alice directly and through the group; Bob only through the group.
    env.sim.set_global_admins(
        TENANT,
        vec![
            SimAdmin::user(ALICE, "Alice"),
            SimAdmin::group(
                "9a0b0000-0000-4000-8000-0000000000aa",
                "Tier0 admins",
                vec![
                    SimAdmin::user(ALICE, "Alice"),
                    SimAdmin::user(BOB, "Bob"),
                    disabled,
                ],
            ),
        ],
    );
    let two = env.admins().await;
    assert_eq!(two.reason, Reason::AdminsOk, "{two:#?}");
    assert_eq!(fact(&two, "admin_count"), "2");
    assert_eq!(fact(&two, "guest_admins"), "0");
    assert!(
        env.graph_requests()
            .iter()
            .any(|r| r.path.ends_with("/transitiveMembers")),
        "the group was expanded"
    );

    // Only the disabled member in the group plus a guest: one counted, and it is a guest.
    env.sim.set_global_admins(
        TENANT,
        vec![
            guest,
            SimAdmin::group(
                "9a0b0000-0000-4000-8000-0000000000aa",
                "Tier0 admins",
                vec![SimAdmin {
                    account_enabled: false,
                    ..SimAdmin::user(CAROL, "Carol")
                }],
            ),
        ],
    );
    let single = env.admins().await;
    assert_eq!(single.reason, Reason::SingleAdmin, "{single:#?}");
    assert_eq!(fact(&single, "admin_count"), "1");
    assert_eq!(fact(&single, "guest_admins"), "1");
}

// --- health -------------------------------------------------------------------------------

#[tokio::test]
async fn service_health_operational_then_degraded() {
    let env = Env::start().await;
    let ok = env.health(true).await;
    assert_eq!(ok.reason, Reason::ServiceOperational, "{ok:#?}");
    assert_eq!(fact(&ok, "service.Exchange"), "serviceOperational");
    assert_eq!(fact(&ok, "service.OrgLiveID"), "serviceOperational");
    assert_eq!(fact(&ok, "service.OSDPPlatform"), "serviceOperational");

    env.sim
        .set_service_health(TENANT, "Exchange", "serviceDegradation");
    let context = env.health(false).await;
    assert_eq!(context.reason, Reason::ServiceIssueReported, "{context:#?}");
    assert!(context.summary.contains("Exchange"), "{}", context.summary);
    assert!(
        context.summary.contains("serviceDegradation"),
        "{}",
        context.summary
    );
    let alerting = env.health(true).await;
    assert_eq!(alerting.reason, Reason::ServiceDegraded, "{alerting:#?}");

    // Statuses compare case-insensitively; a restored service is operational again.
    env.sim
        .set_service_health(TENANT, "Exchange", "ServiceRestored");
    let restored = env.health(true).await;
    assert_eq!(restored.reason, Reason::ServiceOperational, "{restored:#?}");

    // Other services do not decide.
    env.sim
        .set_service_health(TENANT, "OSDPPlatform", "serviceInterruption");
    let other = env.health(true).await;
    assert_eq!(other.reason, Reason::ServiceOperational, "{other:#?}");
    assert_eq!(fact(&other, "service.OSDPPlatform"), "serviceInterruption");
}

// --- client behaviour ---------------------------------------------------------------------

fn health_requests(env: &Env) -> Vec<SimRequest> {
    env.graph_requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/healthOverviews"))
        .collect()
}

#[tokio::test]
async fn retry_after_is_waited_out_in_full() {
    let env = Env::start().await;
    env.sim.inject(Fault::once(
        "healthOverviews",
        FaultKind::TooManyRequests {
            retry_after_s: Some(1),
        },
    ));
    let outcome = env.health(false).await;
    assert_eq!(outcome.reason, Reason::ServiceOperational, "{outcome:#?}");
    assert_eq!(statuses(&outcome.evidence), [Some(429), Some(200)]);
    assert_eq!(outcome.evidence.exchanges[0].retry_after_s, Some(1));
    assert_eq!(
        outcome.evidence.exchanges[0].error_code.as_deref(),
        Some("TooManyRequests")
    );
    let requests = health_requests(&env);
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].status, 429);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}");
    assert!(gap < Duration::from_secs(3), "retried after {gap:?}");
}

#[tokio::test]
async fn a_503_without_retry_after_backs_off_and_succeeds() {
    let env = Env::start().await;
    env.sim.inject(Fault::once(
        "healthOverviews",
        FaultKind::Unavailable {
            retry_after_s: None,
        },
    ));
    let outcome = env.health(false).await;
    assert_eq!(outcome.reason, Reason::ServiceOperational, "{outcome:#?}");
    assert_eq!(statuses(&outcome.evidence), [Some(503), Some(200)]);
    let requests = health_requests(&env);
    let gap = requests[1].at.duration_since(requests[0].at);
    // The first back-off is 1 s with jitter down to half of it.
    assert!(gap >= Duration::from_millis(500), "retried after {gap:?}");
}

#[tokio::test]
async fn a_504_with_an_empty_body_is_retried_or_unavailable() {
    let env = Env::start().await;
    env.sim
        .inject(Fault::once("healthOverviews", FaultKind::GatewayTimeout));
    let retried = env.health(false).await;
    assert_eq!(retried.reason, Reason::ServiceOperational, "{retried:#?}");
    assert_eq!(statuses(&retried.evidence), [Some(504), Some(200)]);

    let no_retries = env.client_with(0, Duration::from_secs(5));
    env.sim
        .inject(Fault::once("healthOverviews", FaultKind::GatewayTimeout));
    let outcome = env.health_with(&no_retries, false).await;
    assert_eq!(outcome.reason, Reason::ServiceUnavailable, "{outcome:#?}");
    assert_eq!(statuses(&outcome.evidence), [Some(504)]);
}

#[tokio::test]
async fn retries_run_out_as_throttled_or_unavailable() {
    let env = Env::with_limits(2, Duration::from_secs(5)).await;
    env.sim.inject(Fault {
        path_contains: "healthOverviews".to_owned(),
        kind: FaultKind::TooManyRequests {
            retry_after_s: Some(0),
        },
        times: 3,
    });
    let throttled = env.health(false).await;
    assert_eq!(throttled.reason, Reason::Throttled, "{throttled:#?}");
    assert_eq!(statuses(&throttled.evidence), [Some(429); 3]);
    assert!(
        throttled.summary.contains("2 retries"),
        "{}",
        throttled.summary
    );

    env.sim.inject(Fault {
        path_contains: "healthOverviews".to_owned(),
        kind: FaultKind::Unavailable {
            retry_after_s: Some(0),
        },
        times: 3,
    });
    let unavailable = env.health(false).await;
    assert_eq!(
        unavailable.reason,
        Reason::ServiceUnavailable,
        "{unavailable:#?}"
    );
    assert_eq!(statuses(&unavailable.evidence), [Some(503); 3]);
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_or_the_deadline_ends_at_once() {
    let env = Env::with_limits(3, Duration::from_secs(5)).await;
    env.sim.inject(Fault::once(
        "healthOverviews",
        FaultKind::TooManyRequests {
            retry_after_s: Some(120),
        },
    ));
    let started = Instant::now();
    let outcome = env.health(false).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.reason, Reason::Throttled, "{outcome:#?}");
    assert_eq!(statuses(&outcome.evidence), [Some(429)]);
    assert!(outcome.summary.contains("120"), "{}", outcome.summary);

    // Within max_retry_wait but past the probe deadline: no sleeping into a timeout.
    env.sim.inject(Fault::once(
        "healthOverviews",
        FaultKind::Unavailable {
            retry_after_s: Some(3),
        },
    ));
    let started = Instant::now();
    let outcome = graph::health(
        &env.graph,
        &env.token,
        TENANT,
        "contoso",
        false,
        Instant::now() + Duration::from_secs(2),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcome.reason, Reason::ServiceUnavailable, "{outcome:#?}");
    assert!(outcome.summary.contains("deadline"), "{}", outcome.summary);
}

#[tokio::test]
async fn pages_are_followed_to_the_end() {
    let env = Env::start().await;
    env.sim.set_page_size(2);
    let skus: Vec<SimSku> = (0..5)
        .map(|n| SimSku {
            sku_id: format!("00000000-0000-4000-8000-00000000000{n}"),
            sku_part_number: format!("SKU{n}"),
            ..SimSku::e3(10, 1)
        })
        .collect();
    env.sim.set_skus(TENANT, skus);
    let mut evidence = HttpEvidence::default();
    let all: Vec<Value> = env
        .graph
        .get_all(env.call(), "/subscribedSkus", &mut evidence)
        .await
        .unwrap();
    let names: Vec<&str> = all
        .iter()
        .map(|sku| sku["skuPartNumber"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["SKU0", "SKU1", "SKU2", "SKU3", "SKU4"]);
    assert_eq!(evidence.exchanges.len(), 3);
    assert!(
        evidence.exchanges[1].url.contains("skiptoken"),
        "{:?}",
        evidence.exchanges[1]
    );
    assert_token_absent(&evidence, &env.token);

    // The checks page too: three services over two pages.
    let health = env.health(false).await;
    assert_eq!(health.reason, Reason::ServiceOperational, "{health:#?}");
    assert_eq!(health.evidence.exchanges.len(), 2);
    assert!(health.evidence.facts.contains_key("service.OSDPPlatform"));
}

#[tokio::test]
async fn runaway_paging_stops_at_the_request_budget() {
    let env = Env::start().await;
    env.sim.set_page_size(1);
    let tight = env
        .client_with(3, Duration::from_secs(5))
        .with_request_budget(2);
    let outcome = env.health_with(&tight, false).await;
    assert_eq!(outcome.reason, Reason::HttpError, "{outcome:#?}");
    assert!(outcome.summary.contains("budget"), "{}", outcome.summary);
    assert_eq!(outcome.evidence.exchanges.len(), 2);
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_not_followed() {
    let env = Env::start().await;
    env.sim.set_page_size(2);
    // The simulator links pages to https://127.0.0.1:P; a client configured for
    // https://localhost:P sees them as another origin.
    let localhost = env.sim.graph_url().replace("127.0.0.1", "localhost");
    let graph = GraphClient::new(client(&env.ca), &localhost, 4, 3, Duration::from_secs(5));
    let outcome = env.health_with(&graph, false).await;
    assert_eq!(outcome.reason, Reason::MalformedResponse, "{outcome:#?}");
    assert!(outcome.summary.contains("nextLink"), "{}", outcome.summary);
    assert_eq!(
        health_requests(&env).len(),
        1,
        "the foreign link was not requested"
    );

    let mut evidence = HttpEvidence::default();
    let err = graph
        .get_all::<Value>(
            env.call(),
            "/admin/serviceAnnouncement/healthOverviews",
            &mut evidence,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, GraphError::BadNextLink(_)), "{err:?}");
}

#[tokio::test]
async fn malformed_and_truncated_json_are_malformed_responses() {
    let env = Env::start().await;
    for kind in [FaultKind::MalformedJson, FaultKind::TruncatedJson] {
        env.sim.inject(Fault::once("healthOverviews", kind.clone()));
        let outcome = env.health(false).await;
        assert_eq!(
            outcome.reason,
            Reason::MalformedResponse,
            "{kind:?}: {outcome:#?}"
        );
        assert_eq!(statuses(&outcome.evidence), [Some(200)]);
        assert!(outcome.evidence.exchanges[0].error.is_some(), "{kind:?}");
    }
    // The licence check records the failed read as a finding and still judges the rest.
    let now = Timestamp::now();
    healthy_tenant(&env, now);
    env.sim.inject(Fault::once(
        "/directory/subscriptions",
        FaultKind::MalformedJson,
    ));
    let licence = env.tenant_licence(&LicenceSettings::default(), now).await;
    assert_eq!(licence.reason, Reason::MalformedResponse, "{licence:#?}");
    env.sim
        .set_sku_status(TENANT, "ENTERPRISEPACK", "Suspended");
    env.sim.inject(Fault::once(
        "/directory/subscriptions",
        FaultKind::TruncatedJson,
    ));
    let worse = env.tenant_licence(&LicenceSettings::default(), now).await;
    assert_eq!(worse.reason, Reason::LicenceSuspended, "{worse:#?}");
}

#[tokio::test]
async fn requests_per_tenant_are_limited() {
    let env = Env::start().await;
    let one_at_a_time = GraphClient::new(
        client(&env.ca),
        &env.sim.graph_url(),
        1,
        0,
        Duration::from_secs(5),
    );
    env.sim.inject(Fault {
        path_contains: "healthOverviews".to_owned(),
        kind: FaultKind::Delay(Duration::from_millis(600)),
        times: 2,
    });
    let started = Instant::now();
    let (a, b) = tokio::join!(
        env.health_with(&one_at_a_time, false),
        env.health_with(&one_at_a_time, false)
    );
    assert_eq!(a.reason, Reason::ServiceOperational, "{a:#?}");
    assert_eq!(b.reason, Reason::ServiceOperational, "{b:#?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1_200),
        "both ran at once: {:?}",
        started.elapsed()
    );
    let requests = health_requests(&env);
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at.duration_since(requests[0].at);
    assert!(
        gap >= Duration::from_millis(550),
        "second request after {gap:?}"
    );
}

#[tokio::test]
async fn evidence_of_every_check_is_free_of_the_token() {
    let env = Env::start().await;
    let now = Timestamp::now();
    healthy_tenant(&env, now);
    env.sim
        .add_user(TENANT, SimUser::licensed(ALICE, ALICE_UPN));
    env.sim.set_global_admins(
        TENANT,
        vec![SimAdmin::user(ALICE, "Alice"), SimAdmin::user(BOB, "Bob")],
    );
    env.sim.inject(Fault::once(
        "",
        FaultKind::TooManyRequests {
            retry_after_s: Some(0),
        },
    ));
    let mut all = vec![
        env.identity(ALICE_UPN, None).await,
        env.admins().await,
        env.health(true).await,
    ];
    all.extend(
        env.licence(
            &[(email(ALICE_UPN), Some(ALICE.to_owned()))],
            &LicenceSettings::default(),
            now,
        )
        .await,
    );
    assert_eq!(all.len(), 5);
    for outcome in &all {
        assert_eq!(outcome.reason.status(), tw_core::Status::Ok, "{outcome:#?}");
        assert_token_absent(&outcome.evidence, &env.token);
        for exchange in &outcome.evidence.exchanges {
            assert!(
                exchange.url.starts_with(&env.sim.graph_url()),
                "{exchange:?}"
            );
        }
    }
    assert_eq!(all[0].evidence.exchanges[0].status, Some(429));
}
