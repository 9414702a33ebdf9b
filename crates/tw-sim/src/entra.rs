//! A loopback HTTPS simulator of the three services the Entra/Graph/RDAP probes talk to:
//! Entra ID login (`login.microsoftonline.com`), Microsoft Graph v1.0 and RDAP, scriptable
//! while it runs, so probe tests can flip a tenant, a user or a licence and watch the next
//! probe see it.
//!
//! Written from `shared/reference/m365-facts.md` §1, §2, §3 and §5 without sharing code with
//! `tw-entra`, so that a misreading cannot hide in both the probe and its fake.
//!
//! # API
//!
//! [`EntraSim::start`] binds three listeners on `127.0.0.1:0` (login, Graph, RDAP) with
//! certificates from a [`TestCa`] valid for `127.0.0.1` and `localhost`; they stop when the
//! shutdown token is cancelled. [`EntraSim`] is a cheap `Clone` handle; every setter is
//! synchronous and takes effect for the next request.
//!
//! * Login ([`EntraSim::login_url`]): `GET /{tenant}/v2.0/.well-known/openid-configuration`
//!   (also the v1 path without `/v2.0`), `GET /common/userrealm/{upn}?api-version=2.1` (and
//!   the 1.0 shape for other versions), `POST /{tenant}/oauth2/v2.0/token`. Scripted with
//!   [`EntraSim::add_tenant`], [`EntraSim::remove_tenant`], [`EntraSim::move_domain`],
//!   [`EntraSim::set_namespace_type`], [`EntraSim::register_app`],
//!   [`EntraSim::set_token_error`], [`EntraSim::set_token_lifetime`];
//!   [`EntraSim::issue_token`] hands a test a Graph bearer without the token endpoint.
//! * Graph ([`EntraSim::graph_url`], client appends `/v1.0/…`): `users/{id|upn}` with
//!   `$select`, `users/{id}/licenseDetails`, `directory/deletedItems/{id}` and
//!   `…/microsoft.graph.user`, `subscribedSkus`, `directory/subscriptions`,
//!   `roleManagement/directory/roleAssignments` (`$filter` on the role, `$expand=principal`),
//!   `groups/{id}/transitiveMembers`, `admin/serviceAnnouncement/healthOverviews`. Collections
//!   page with `@odata.nextLink` ([`EntraSim::set_page_size`], `$top`).
//! * RDAP: [`EntraSim::rdap_bootstrap_url`] serves an RFC 9224 `dns.json` listing every TLD
//!   given to [`EntraSim::set_rdap`] (minus [`EntraSim::remove_rdap_service`]);
//!   [`EntraSim::rdap_base_url`]`/domain/{name}` answers RFC 9083 domain objects.
//! * Every listener: [`EntraSim::inject`] queues a [`Fault`] for the next matching requests
//!   (429 with `Retry-After`, 503, 504 with an empty body, a delay, malformed JSON, a body cut
//!   in half); [`EntraSim::requests`] is the log of every request, faulted or not.
//!
//! Test keys: [`TEST_APP_CERT_PEM`]/[`TEST_APP_KEY_PEM`] are the certificate a test registers
//! and the key that signs its assertions; [`TEST_OTHER_CERT_PEM`]/[`TEST_OTHER_KEY_PEM`] a pair
//! the simulator has never seen (assertions signed with it fail with AADSTS700027).
//!
//! # Faithful
//!
//! * Paths, field names, status codes, error shapes and AADSTS codes as in the reference:
//!   discovery 400 `invalid_tenant`/90002 with `trace_id` equal to `x-ms-request-id` and
//!   `Cache-Control: max-age=86400, private` on both answers; token errors 401 `invalid_client`
//!   for 7000215/700027/7000222, 400 `unauthorized_client`/700016, 400 700024/700023; Graph's
//!   OData envelope with `innerError.date/request-id/client-request-id`, `request-id` and
//!   `client-request-id` headers, 401 `InvalidAuthenticationToken` with `WWW-Authenticate`,
//!   403 `Authorization_RequestDenied`, 404 `Request_ResourceNotFound`, 400
//!   `Request_UnsupportedQuery` for the un-cast deleted items, the documented 429 body.
//! * Client assertions are really verified: the header's `x5t#S256` (or legacy SHA-1 `x5t`)
//!   must name a certificate registered for that app in that tenant, the RS256 or PS256
//!   signature must verify with that certificate's key, `aud` must be the tenant's token URL,
//!   `iss` = `sub` = `client_id`, `nbf` <= now <= `exp`, `jti` present.
//! * Soft-deleted users leave `/users`, and appear in deleted items with the mangled UPN (32
//!   hex digits of the id, then the original UPN).
//! * Entra adopts a sent `client-request-id` as `correlation_id`; Graph echoes it.
//!
//! # Simplified
//!
//! * Access tokens are opaque random strings, not JWTs with `tid`/`roles`; permissions are
//!   all-or-nothing per path fragment via [`EntraSim::deny`]. A removed tenant's tokens get
//!   401 `InvalidAuthenticationToken` on Graph.
//! * A forced [`EntraSim::set_token_error`] answers right after the tenant is resolved, before
//!   the request itself is checked. AADSTS7000218 (no credential) answers 400, as the table of
//!   forced codes says, although Entra is reported to send 401.
//! * `$select` is honoured loosely (unknown names ignored, not 400). `$filter` is read only on
//!   role assignments (`roleDefinitionId eq '…'`) and deleted users (`userPrincipalName eq`,
//!   `startswith`, `endswith`; `endswith` needs `ConsistencyLevel: eventual` and `$count=true`,
//!   else 400 `Request_UnsupportedQuery`); `$count=true` adds `@odata.count`; `$top` sets the
//!   page size; `$skiptoken` is an offset; `$orderby` and `$search` are ignored.
//! * Faults match `path_contains` against the path plus `?query`, tried in injection order.
//!   The request log's `authorized` is "valid Graph bearer" or "verified token-endpoint
//!   credential"; discovery, realm and RDAP requests are never `authorized`.
//! * Error texts are paraphrases. The login 429/503 fault bodies use the OAuth shape with
//!   AADSTS 90055/90033 (Entra's real 429 body is not in the reference).
//! * No replay check of `jti`, no certificate expiry check, no per-app consented roles, no
//!   national clouds (`cloud_instance_name` is always `microsoftonline.com`, region `EU`).
//! * `assignedPlans.capabilityStatus` follows the tenant SKU's status; `licenseAssignmentStates`
//!   are always `Active`.

mod assertion;
mod graph;
mod https;
mod login;
mod model;
mod rdap;
mod scenario;
mod stamp;
mod state;

use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use self::assertion::RegisteredCert;
pub use self::model::{
    Fault, FaultKind, SimAdmin, SimCredential, SimPlan, SimPrincipalKind, SimRdap, SimRequest,
    SimServer, SimSku, SimSubscription, SimTenant, SimUser, SimUserLicense, E3_SKU_ID,
    EXCHANGE_S_ENTERPRISE_ID, EXCHANGE_S_FOUNDATION_ID, GLOBAL_ADMIN_ROLE_ID,
};
pub use self::scenario::{days_from_now, HealthyTenant};
use self::state::{service_name, DeletedUser, Health, Registered, Shared, State};
use crate::tls::{SimError, TestCa};

/// The certificate registered for the test app (`fixtures/app.crt.pem`).
pub const TEST_APP_CERT_PEM: &str = include_str!("../fixtures/app.crt.pem");
/// The key that signs the test app's client assertions (`fixtures/app.key.pem`, PKCS#8).
pub const TEST_APP_KEY_PEM: &str = include_str!("../fixtures/app.key.pem");
/// A certificate the simulator never registers (`fixtures/other.crt.pem`).
pub const TEST_OTHER_CERT_PEM: &str = include_str!("../fixtures/other.crt.pem");
/// The key of [`TEST_OTHER_CERT_PEM`]; assertions signed with it fail with AADSTS700027.
pub const TEST_OTHER_KEY_PEM: &str = include_str!("../fixtures/other.key.pem");

/// Handle to a running simulator; clones share the same listeners and state.
#[derive(Debug, Clone)]
pub struct EntraSim {
    shared: Arc<Shared>,
}

impl EntraSim {
    /// Three HTTPS listeners on `127.0.0.1:0` (login, Graph, RDAP) with certificates from `ca`
    /// valid for IP `127.0.0.1` and `localhost`; stops when `shutdown` is cancelled.
    pub async fn start(ca: &TestCa, shutdown: CancellationToken) -> Result<EntraSim, SimError> {
        let tls = ca.server_config(&["localhost", "127.0.0.1"])?;
        let (login, login_address) = https::bind().await?;
        let (graph, graph_address) = https::bind().await?;
        let (rdap, rdap_address) = https::bind().await?;
        let shared = Arc::new(Shared {
            login_url: format!("https://{login_address}"),
            graph_url: format!("https://{graph_address}"),
            rdap_origin: format!("https://{rdap_address}"),
            state: Mutex::new(State::new()),
        });
        for (listener, server) in [
            (login, SimServer::Login),
            (graph, SimServer::Graph),
            (rdap, SimServer::Rdap),
        ] {
            https::spawn(
                listener,
                tls.clone(),
                shared.clone(),
                server,
                shutdown.clone(),
            );
        }
        Ok(EntraSim { shared })
    }

    /// `https://127.0.0.1:P1`, no trailing slash.
    pub fn login_url(&self) -> String {
        self.shared.login_url.clone()
    }

    /// `https://127.0.0.1:P2`; the client appends `/v1.0/…`.
    pub fn graph_url(&self) -> String {
        self.shared.graph_url.clone()
    }

    /// `https://127.0.0.1:P3/dns.json`.
    pub fn rdap_bootstrap_url(&self) -> String {
        format!("{}/dns.json", self.shared.rdap_origin)
    }

    /// `https://127.0.0.1:P3/rdap`; the client appends `/domain/{name}`.
    pub fn rdap_base_url(&self) -> String {
        format!("{}/rdap", self.shared.rdap_origin)
    }

    // --- directory / login ---------------------------------------------------------------

    /// Adds (or replaces) a tenant; its domains leave any other tenant that listed them.
    pub fn add_tenant(&self, tenant: SimTenant) {
        let mut state = self.shared.state.lock();
        for other in state.tenants.values_mut() {
            other.domains.retain(|owned| {
                !tenant
                    .domains
                    .iter()
                    .any(|domain| domain.eq_ignore_ascii_case(owned))
            });
        }
        state
            .tenants
            .insert(tenant.tenant_id.to_ascii_lowercase(), tenant);
    }

    /// Discovery by id or domain and the token endpoint answer AADSTS90002 from now on; Graph
    /// refuses tokens issued for it.
    pub fn remove_tenant(&self, tenant_id: &str) {
        self.shared
            .state
            .lock()
            .tenants
            .remove(&tenant_id.to_ascii_lowercase());
    }

    /// Moves `domain` to `to_tenant_id` (or nowhere, if that tenant is unknown).
    pub fn move_domain(&self, domain: &str, to_tenant_id: &str) {
        let mut state = self.shared.state.lock();
        for tenant in state.tenants.values_mut() {
            tenant
                .domains
                .retain(|owned| !owned.eq_ignore_ascii_case(domain));
        }
        if let Some(tenant) = state.tenants.get_mut(&to_tenant_id.to_ascii_lowercase()) {
            tenant.domains.push(domain.to_owned());
        }
    }

    /// What user realm discovery says for `domain`: `"Managed"`, `"Federated"` or `"Unknown"`,
    /// overriding the owning tenant's namespace type.
    pub fn set_namespace_type(&self, domain: &str, namespace_type: &str) {
        self.shared.state.lock().namespace_overrides.insert(
            domain.trim_end_matches('.').to_ascii_lowercase(),
            namespace_type.to_owned(),
        );
    }

    /// Whether user realm discovery (v2) says `"IsViral": true` for `domain`: the domain sits in
    /// an unmanaged, self-service ("viral") tenant.
    pub fn set_viral(&self, domain: &str, viral: bool) {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut state = self.shared.state.lock();
        if viral {
            state.viral.insert(domain);
        } else {
            state.viral.remove(&domain);
        }
    }

    /// Registers (consents) `client_id` in `tenant_id` with one more credential. A certificate
    /// that does not parse as an RSA X.509 certificate is logged and never matches.
    pub fn register_app(&self, tenant_id: &str, client_id: &str, credential: SimCredential) {
        let registered = match credential {
            SimCredential::Secret(secret) => Some(Registered::Secret(secret)),
            SimCredential::Certificate { cert_pem } => match RegisteredCert::parse(&cert_pem) {
                Ok(cert) => Some(Registered::Certificate(Box::new(cert))),
                Err(err) => {
                    tracing::warn!(%err, "entra sim: certificate not registered");
                    None
                }
            },
        };
        let mut state = self.shared.state.lock();
        let credentials = state
            .apps
            .entry((
                tenant_id.to_ascii_lowercase(),
                client_id.to_ascii_lowercase(),
            ))
            .or_default();
        credentials.extend(registered);
    }

    /// Removes the app's registration from the tenant (consent revoked: AADSTS700016).
    pub fn unregister_app(&self, tenant_id: &str, client_id: &str) {
        self.shared.state.lock().apps.remove(&(
            tenant_id.to_ascii_lowercase(),
            client_id.to_ascii_lowercase(),
        ));
    }

    /// `Some(code)`: token requests for the tenant fail with that AADSTS code's documented error
    /// (401 `invalid_client` for 7000222, 7000215, 700027; 400 otherwise) until set to `None`.
    pub fn set_token_error(&self, tenant_id: &str, aadsts: Option<u32>) {
        let mut state = self.shared.state.lock();
        let key = tenant_id.to_ascii_lowercase();
        match aadsts {
            Some(code) => {
                state.token_errors.insert(key, code);
            }
            None => {
                state.token_errors.remove(&key);
            }
        }
    }

    /// `expires_in` of tokens issued from now on (default 3599); Graph refuses them after it.
    pub fn set_token_lifetime(&self, expires_in_secs: u64) {
        self.shared.state.lock().token_lifetime_s = expires_in_secs;
    }

    /// A valid Graph bearer for `tenant_id`, for tests that skip the token endpoint.
    pub fn issue_token(&self, tenant_id: &str) -> String {
        self.shared.state.lock().issue_token(tenant_id)
    }

    // --- Graph ---------------------------------------------------------------------------

    /// Adds or replaces (by id) a user.
    pub fn add_user(&self, tenant_id: &str, user: SimUser) {
        let mut state = self.shared.state.lock();
        let directory = state.directory_mut(tenant_id);
        directory
            .users
            .retain(|existing| !existing.id.eq_ignore_ascii_case(&user.id));
        directory
            .deleted
            .retain(|existing| !existing.user.id.eq_ignore_ascii_case(&user.id));
        directory.users.push(user);
    }

    /// A message arrives in the mailbox of the user whose UPN or proxy address is `recipient`
    /// (what Exchange Online does after accepting mail). Returns false, storing nothing, when
    /// no such user exists or it has no working Exchange mailbox plan: then Exchange would
    /// have bounced it (see `RcptBehaviour::AcceptThenBounce` on the SMTP side).
    pub fn deliver_message(
        &self,
        tenant_id: &str,
        recipient: &str,
        internet_message_id: &str,
        subject: &str,
    ) -> bool {
        let mut state = self.shared.state.lock();
        let directory = state.directory_mut(tenant_id);
        let Some(user) = directory
            .users
            .iter()
            .find(|user| graph::user_has_address(user, recipient))
        else {
            return false;
        };
        if !graph::has_mailbox(user) {
            return false;
        }
        let message = state::SimMessage {
            id: format!("AAMkAG{}=", stamp::guid().replace('-', "")),
            user_id: user.id.to_ascii_lowercase(),
            internet_message_id: internet_message_id.to_owned(),
            subject: subject.to_owned(),
            received: stamp::Utc::now().rfc3339(),
        };
        directory.messages.push(message);
        true
    }

    /// The internet message ids in a user's mailbox (by object id), oldest first.
    pub fn mailbox(&self, tenant_id: &str, user_id: &str) -> Vec<String> {
        let state = self.shared.state.lock();
        state
            .directory(tenant_id)
            .map(|directory| {
                directory
                    .messages
                    .iter()
                    .filter(|m| m.user_id.eq_ignore_ascii_case(user_id))
                    .map(|m| m.internet_message_id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Soft delete now: the user moves into deleted items with a mangled UPN.
    pub fn delete_user(&self, tenant_id: &str, user_id: &str) {
        self.delete_user_at(tenant_id, user_id, &stamp::Utc::now().rfc3339());
    }

    /// Soft delete with the given `deletedDateTime` (RFC 3339).
    pub fn delete_user_at(&self, tenant_id: &str, user_id: &str, deleted: &str) {
        let mut state = self.shared.state.lock();
        let directory = state.directory_mut(tenant_id);
        if let Some(index) = directory
            .users
            .iter()
            .position(|user| user.id.eq_ignore_ascii_case(user_id))
        {
            let user = directory.users.remove(index);
            directory.deleted.push(DeletedUser {
                user,
                deleted: deleted.to_owned(),
            });
        } else if let Some(entry) = directory
            .deleted
            .iter_mut()
            .find(|entry| entry.user.id.eq_ignore_ascii_case(user_id))
        {
            entry.deleted = deleted.to_owned();
        }
    }

    /// Gone from users and deleted items.
    pub fn purge_user(&self, tenant_id: &str, user_id: &str) {
        let mut state = self.shared.state.lock();
        let directory = state.directory_mut(tenant_id);
        directory
            .users
            .retain(|user| !user.id.eq_ignore_ascii_case(user_id));
        directory
            .deleted
            .retain(|entry| !entry.user.id.eq_ignore_ascii_case(user_id));
    }

    pub fn set_account_enabled(&self, tenant_id: &str, user_id: &str, enabled: bool) {
        self.with_user(tenant_id, user_id, |user| user.account_enabled = enabled);
    }

    /// Replaces the proxy addresses; `mail` becomes `None` when it is no longer among them.
    pub fn set_proxy_addresses(&self, tenant_id: &str, user_id: &str, addresses: Vec<String>) {
        self.with_user(tenant_id, user_id, |user| {
            let keeps_mail = user.mail.as_ref().is_some_and(|mail| {
                addresses.iter().any(|address| {
                    address
                        .split_once(':')
                        .is_some_and(|(_, value)| value.eq_ignore_ascii_case(mail))
                })
            });
            if !keeps_mail {
                user.mail = None;
            }
            user.proxy_addresses = addresses;
        });
    }

    pub fn set_user_licenses(&self, tenant_id: &str, user_id: &str, licenses: Vec<SimUserLicense>) {
        self.with_user(tenant_id, user_id, |user| user.licenses = licenses);
    }

    fn with_user(&self, tenant_id: &str, user_id: &str, change: impl FnOnce(&mut SimUser)) {
        let mut state = self.shared.state.lock();
        match state
            .directory_mut(tenant_id)
            .users
            .iter_mut()
            .find(|user| user.id.eq_ignore_ascii_case(user_id))
        {
            Some(user) => change(user),
            None => tracing::warn!(user_id, "entra sim: no such user to change"),
        }
    }

    pub fn set_skus(&self, tenant_id: &str, skus: Vec<SimSku>) {
        self.shared.state.lock().directory_mut(tenant_id).skus = skus;
    }

    /// Sets `capabilityStatus` of the SKU with this part number.
    pub fn set_sku_status(&self, tenant_id: &str, sku_part_number: &str, capability_status: &str) {
        let mut state = self.shared.state.lock();
        for sku in state
            .directory_mut(tenant_id)
            .skus
            .iter_mut()
            .filter(|sku| sku.sku_part_number.eq_ignore_ascii_case(sku_part_number))
        {
            sku.capability_status = capability_status.to_owned();
        }
    }

    pub fn set_subscriptions(&self, tenant_id: &str, subscriptions: Vec<SimSubscription>) {
        self.shared
            .state
            .lock()
            .directory_mut(tenant_id)
            .subscriptions = subscriptions;
    }

    /// Sets status and `nextLifecycleDateTime` of the subscription with this id (or
    /// commerce subscription id).
    pub fn set_subscription(
        &self,
        tenant_id: &str,
        id: &str,
        status: &str,
        next_lifecycle: Option<&str>,
    ) {
        let mut state = self.shared.state.lock();
        let mut found = false;
        for subscription in state
            .directory_mut(tenant_id)
            .subscriptions
            .iter_mut()
            .filter(|s| {
                s.id.eq_ignore_ascii_case(id) || s.commerce_subscription_id.eq_ignore_ascii_case(id)
            })
        {
            subscription.status = status.to_owned();
            subscription.next_lifecycle = next_lifecycle.map(str::to_owned);
            found = true;
        }
        if !found {
            tracing::warn!(id, "entra sim: no such subscription to change");
        }
    }

    pub fn set_global_admins(&self, tenant_id: &str, admins: Vec<SimAdmin>) {
        self.shared.state.lock().directory_mut(tenant_id).admins = admins;
    }

    /// Sets one service's health status (camelCase, e.g. `"serviceDegradation"`); default:
    /// `Exchange`, `OrgLiveID`, `OSDPPlatform` `"serviceOperational"`.
    pub fn set_service_health(&self, tenant_id: &str, service_id: &str, status: &str) {
        let mut state = self.shared.state.lock();
        let health = &mut state.directory_mut(tenant_id).health;
        match health
            .iter_mut()
            .find(|entry| entry.id.eq_ignore_ascii_case(service_id))
        {
            Some(entry) => entry.status = status.to_owned(),
            None => health.push(Health {
                id: service_id.to_owned(),
                service: service_name(service_id),
                status: status.to_owned(),
            }),
        }
    }

    /// Graph answers 403 `Authorization_RequestDenied` for this tenant's requests whose path
    /// contains `path_contains` (the consent for that API was removed).
    pub fn deny(&self, tenant_id: &str, path_contains: &str) {
        self.shared
            .state
            .lock()
            .directory_mut(tenant_id)
            .denied
            .push(path_contains.to_owned());
    }

    /// Undoes every [`EntraSim::deny`] of the tenant.
    pub fn allow_all(&self, tenant_id: &str) {
        self.shared
            .state
            .lock()
            .directory_mut(tenant_id)
            .denied
            .clear();
    }

    /// Collections return at most `n` items plus `@odata.nextLink` (default 100).
    pub fn set_page_size(&self, n: usize) {
        self.shared.state.lock().page_size = n.max(1);
    }

    // --- RDAP ----------------------------------------------------------------------------

    /// The registry record of `domain`; its TLD joins the bootstrap file unless removed.
    pub fn set_rdap(&self, domain: &str, record: SimRdap) {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.shared.state.lock().rdap.insert(domain, record);
    }

    /// The bootstrap file no longer lists this TLD (a registry without RDAP service).
    pub fn remove_rdap_service(&self, tld: &str) {
        self.shared
            .state
            .lock()
            .removed_tlds
            .insert(tld.trim_matches('.').to_ascii_lowercase());
    }

    // --- faults and observation ----------------------------------------------------------

    /// Queues a fault; faults are tried in the order injected.
    pub fn inject(&self, fault: Fault) {
        if fault.times > 0 {
            self.shared.state.lock().faults.push(fault);
        }
    }

    /// Every request so far, in arrival order of completion.
    pub fn requests(&self) -> Vec<SimRequest> {
        self.shared.state.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.state.lock().requests.clear();
    }

    /// Turns the request log on (the default) or off; a load generator turns it off, since
    /// the log keeps every request for as long as the simulator runs.
    pub fn set_request_log(&self, on: bool) {
        self.shared.state.lock().log_requests = on;
    }
}
