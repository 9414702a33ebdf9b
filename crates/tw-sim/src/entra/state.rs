//! The simulator's mutable world: tenants and their domains, app registrations, issued tokens,
//! each tenant's directory (users, licences, SKUs, subscriptions, admins, service health), RDAP
//! records, pending faults and the request log.
//!
//! One `parking_lot::Mutex` guards it all. Setters from the test and request handlers both take
//! it briefly and never across an `.await`, so a change is visible to the very next request.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

use super::assertion::RegisteredCert;
use super::model::{
    Fault, FaultKind, SimAdmin, SimRdap, SimRequest, SimSku, SimSubscription, SimTenant, SimUser,
};

pub(super) const DEFAULT_TOKEN_LIFETIME_S: u64 = 3599;
pub(super) const DEFAULT_PAGE_SIZE: usize = 100;

/// What the listeners share: their public URLs and the world behind a lock.
pub(super) struct Shared {
    /// `https://127.0.0.1:P1`
    pub(super) login_url: String,
    /// `https://127.0.0.1:P2`
    pub(super) graph_url: String,
    /// `https://127.0.0.1:P3`
    pub(super) rdap_origin: String,
    pub(super) state: Mutex<State>,
}

impl std::fmt::Debug for Shared {
    // The state holds simulated secrets and issued tokens; neither is ever printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("login_url", &self.login_url)
            .field("graph_url", &self.graph_url)
            .field("rdap_origin", &self.rdap_origin)
            .finish_non_exhaustive()
    }
}

/// A credential as registered, ready to check a token request against.
pub(super) enum Registered {
    Secret(String),
    Certificate(Box<RegisteredCert>),
}

/// An access token this simulator handed out.
pub(super) struct IssuedToken {
    pub(super) tenant_id: String,
    pub(super) expires_at: Instant,
}

/// A soft-deleted user and when it was deleted (RFC 3339).
#[derive(Debug, Clone)]
pub(super) struct DeletedUser {
    pub(super) user: SimUser,
    pub(super) deleted: String,
}

/// One row of `/admin/serviceAnnouncement/healthOverviews`.
#[derive(Debug, Clone)]
pub(super) struct Health {
    pub(super) id: String,
    pub(super) service: String,
    pub(super) status: String,
}

/// Everything Graph reads for one tenant.
#[derive(Debug, Clone)]
pub(super) struct Directory {
    pub(super) users: Vec<SimUser>,
    pub(super) deleted: Vec<DeletedUser>,
    pub(super) skus: Vec<SimSku>,
    pub(super) subscriptions: Vec<SimSubscription>,
    pub(super) admins: Vec<SimAdmin>,
    pub(super) health: Vec<Health>,
    /// Path fragments answered with 403 `Authorization_RequestDenied`.
    pub(super) denied: Vec<String>,
    /// Messages in users' mailboxes (only what the probes look for).
    pub(super) messages: Vec<SimMessage>,
}

/// A message in a user's mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SimMessage {
    pub(super) id: String,
    /// Lower-case object id of the mailbox owner.
    pub(super) user_id: String,
    pub(super) internet_message_id: String,
    pub(super) subject: String,
    pub(super) received: String,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            users: Vec::new(),
            deleted: Vec::new(),
            skus: Vec::new(),
            subscriptions: Vec::new(),
            admins: Vec::new(),
            messages: Vec::new(),
            health: ["Exchange", "OrgLiveID", "OSDPPlatform"]
                .iter()
                .map(|id| Health {
                    id: (*id).to_owned(),
                    service: service_name(id),
                    status: "serviceOperational".to_owned(),
                })
                .collect(),
            denied: Vec::new(),
        }
    }
}

/// The display name Microsoft shows for a service health id (reference §3.7).
pub(super) fn service_name(id: &str) -> String {
    match id {
        "Exchange" => "Exchange Online",
        "OrgLiveID" => "Identity Service",
        "OSDPPlatform" => "Microsoft 365 suite",
        "SharePoint" => "SharePoint Online",
        "microsoftteams" => "Microsoft Teams",
        other => other,
    }
    .to_owned()
}

pub(super) struct State {
    /// By lower-case tenant id.
    pub(super) tenants: BTreeMap<String, SimTenant>,
    /// By lower-case domain: a realm answer that overrides the tenant's namespace type.
    pub(super) namespace_overrides: HashMap<String, String>,
    /// Lower-case domains whose realm answer says `IsViral: true` (an unmanaged tenant).
    pub(super) viral: std::collections::HashSet<String>,
    /// By (lower-case tenant id, lower-case client id). Kept apart from `tenants` so an app can
    /// be registered before its tenant is added, and survives the tenant's removal.
    pub(super) apps: HashMap<(String, String), Vec<Registered>>,
    /// By lower-case tenant id.
    pub(super) token_errors: HashMap<String, u32>,
    pub(super) token_lifetime_s: u64,
    pub(super) tokens: HashMap<String, IssuedToken>,
    /// By lower-case tenant id; created on first use so data can be set in any order.
    pub(super) directories: HashMap<String, Directory>,
    pub(super) page_size: usize,
    /// By lower-case domain without a trailing dot.
    pub(super) rdap: BTreeMap<String, SimRdap>,
    pub(super) removed_tlds: BTreeSet<String>,
    pub(super) faults: Vec<Fault>,
    pub(super) requests: Vec<SimRequest>,
    /// Whether `requests` is kept; off for load runs, where it would only grow.
    pub(super) log_requests: bool,
}

impl State {
    pub(super) fn new() -> State {
        State {
            tenants: BTreeMap::new(),
            namespace_overrides: HashMap::new(),
            viral: std::collections::HashSet::new(),
            apps: HashMap::new(),
            token_errors: HashMap::new(),
            token_lifetime_s: DEFAULT_TOKEN_LIFETIME_S,
            tokens: HashMap::new(),
            directories: HashMap::new(),
            page_size: DEFAULT_PAGE_SIZE,
            rdap: BTreeMap::new(),
            removed_tlds: BTreeSet::new(),
            faults: Vec::new(),
            requests: Vec::new(),
            log_requests: true,
        }
    }

    /// The tenant named by a URL segment: its id or any of its domains, case-insensitive.
    pub(super) fn resolve_tenant(&self, name: &str) -> Option<&SimTenant> {
        let name = name.to_ascii_lowercase();
        self.tenants
            .get(&name)
            .or_else(|| self.tenant_of_domain(&name))
    }

    pub(super) fn tenant_of_domain(&self, domain: &str) -> Option<&SimTenant> {
        let domain = domain.trim_end_matches('.');
        self.tenants.values().find(|tenant| {
            tenant
                .domains
                .iter()
                .any(|owned| owned.eq_ignore_ascii_case(domain))
        })
    }

    pub(super) fn directory_mut(&mut self, tenant_id: &str) -> &mut Directory {
        self.directories
            .entry(tenant_id.to_ascii_lowercase())
            .or_default()
    }

    pub(super) fn directory(&self, tenant_id: &str) -> Option<&Directory> {
        self.directories.get(&tenant_id.to_ascii_lowercase())
    }

    /// A fresh opaque bearer token for `tenant_id`, remembered until it expires.
    pub(super) fn issue_token(&mut self, tenant_id: &str) -> String {
        let token: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(48)
            .collect();
        let now = Instant::now();
        // Forgetting expired tokens keeps a long test from growing the map without bound.
        self.tokens.retain(|_, issued| issued.expires_at > now);
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                tenant_id: tenant_id.to_ascii_lowercase(),
                expires_at: now + Duration::from_secs(self.token_lifetime_s),
            },
        );
        token
    }

    /// Consumes one use of the first pending fault matching `target` (path and `?query`).
    pub(super) fn take_fault(&mut self, target: &str) -> Option<FaultKind> {
        let index = self
            .faults
            .iter()
            .position(|fault| fault.times > 0 && target.contains(&fault.path_contains))?;
        let fault = &mut self.faults[index];
        fault.times -= 1;
        let kind = fault.kind.clone();
        if fault.times == 0 {
            self.faults.remove(index);
        }
        Some(kind)
    }
}
