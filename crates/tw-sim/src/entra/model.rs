//! The test data a test scripts the Entra simulator with: tenants, app credentials, users,
//! licences, SKUs, subscriptions, admins, RDAP records, faults, and the request log entries.
//!
//! These are plain data: the simulator copies them into its state, so a test can build one,
//! hand it over and keep a clone to compare answers against. The helper constructors give the
//! common shapes (an E3-licensed user, an E3 SKU, a break-glass admin) so probe tests stay short.

use std::time::Duration;

/// Global Administrator role template / definition id (reference §3.8).
pub const GLOBAL_ADMIN_ROLE_ID: &str = "62e90394-69f5-4237-9190-012177145e10";
/// Office 365 E3 (`ENTERPRISEPACK`) SKU id, from Microsoft's licensing service plan reference.
pub const E3_SKU_ID: &str = "6fd2c87f-b296-42f0-b197-1e91e994b900";
/// `EXCHANGE_S_ENTERPRISE`, Exchange Online (Plan 2), the mailbox plan of E3/E5 (reference §3.4).
pub const EXCHANGE_S_ENTERPRISE_ID: &str = "efb87545-963c-4e0d-99df-69c6916d9eb0";
/// `EXCHANGE_S_FOUNDATION`: an Exchange plan that is **not** a mailbox licence (reference §3.4).
pub const EXCHANGE_S_FOUNDATION_ID: &str = "113feb6c-3fe4-4440-bddc-54d774bf0318";

/// A tenant known to the simulated Entra ID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimTenant {
    pub tenant_id: String,
    pub display_name: String,
    /// Verified domains; discovery answers for each of them (case-insensitive).
    pub domains: Vec<String>,
    /// `"Managed"` or `"Federated"`; what user realm discovery reports for the domains.
    pub namespace_type: String,
}

impl SimTenant {
    /// A managed tenant with these domains.
    pub fn managed(tenant_id: &str, display_name: &str, domains: &[&str]) -> SimTenant {
        SimTenant {
            tenant_id: tenant_id.to_owned(),
            display_name: display_name.to_owned(),
            domains: domains.iter().map(|domain| (*domain).to_owned()).collect(),
            namespace_type: "Managed".to_owned(),
        }
    }
}

/// One credential of an app registration (a tenant may hold several per app).
#[derive(Clone, PartialEq, Eq)]
pub enum SimCredential {
    /// A client secret value.
    Secret(String),
    /// An RSA certificate in PEM; client assertions must be signed with its key.
    Certificate { cert_pem: String },
}

impl SimCredential {
    /// The certificate of `fixtures/app.crt.pem`, whose key signs assertions in tests.
    pub fn test_app_certificate() -> SimCredential {
        SimCredential::Certificate {
            cert_pem: super::TEST_APP_CERT_PEM.to_owned(),
        }
    }
}

impl std::fmt::Debug for SimCredential {
    // A simulated secret is still never printed: test logs end up in CI artefacts.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimCredential::Secret(_) => f.write_str("Secret([redacted])"),
            SimCredential::Certificate { .. } => f.write_str("Certificate { .. }"),
        }
    }
}

/// A directory user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimUser {
    pub id: String,
    pub user_principal_name: String,
    pub display_name: String,
    pub mail: Option<String>,
    /// `"SMTP:primary"`, `"smtp:alias"`.
    pub proxy_addresses: Vec<String>,
    pub account_enabled: bool,
    pub licenses: Vec<SimUserLicense>,
}

impl SimUser {
    /// An enabled user with no licence; `mail` and the primary proxy address are the UPN.
    pub fn unlicensed(id: &str, upn: &str) -> SimUser {
        SimUser {
            id: id.to_owned(),
            user_principal_name: upn.to_owned(),
            display_name: upn.split('@').next().unwrap_or(upn).to_owned(),
            mail: Some(upn.to_owned()),
            proxy_addresses: vec![format!("SMTP:{upn}")],
            account_enabled: true,
            licenses: Vec::new(),
        }
    }

    /// An enabled user with an Office 365 E3 licence whose `EXCHANGE_S_ENTERPRISE` plan is
    /// `Success` (a working mailbox licence).
    pub fn licensed(id: &str, upn: &str) -> SimUser {
        SimUser {
            licenses: vec![SimUserLicense::e3()],
            ..SimUser::unlicensed(id, upn)
        }
    }
}

/// A licence assigned to a user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimUserLicense {
    pub sku_id: String,
    pub sku_part_number: String,
    pub plans: Vec<SimPlan>,
}

impl SimUserLicense {
    /// E3 with `EXCHANGE_S_ENTERPRISE` `Success` (User) and `EXCHANGE_S_FOUNDATION` (Company).
    pub fn e3() -> SimUserLicense {
        SimUserLicense {
            sku_id: E3_SKU_ID.to_owned(),
            sku_part_number: "ENTERPRISEPACK".to_owned(),
            plans: e3_plans(),
        }
    }
}

/// A service plan inside a licence or SKU (`servicePlanInfo`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimPlan {
    pub service_plan_id: String,
    pub service_plan_name: String,
    /// `Success`, `Disabled`, `Error`, `PendingInput`, `PendingActivation`, `PendingProvisioning`.
    pub provisioning_status: String,
    /// `User` or `Company`.
    pub applies_to: String,
}

impl SimPlan {
    pub fn new(id: &str, name: &str, provisioning_status: &str, applies_to: &str) -> SimPlan {
        SimPlan {
            service_plan_id: id.to_owned(),
            service_plan_name: name.to_owned(),
            provisioning_status: provisioning_status.to_owned(),
            applies_to: applies_to.to_owned(),
        }
    }
}

fn e3_plans() -> Vec<SimPlan> {
    vec![
        SimPlan::new(
            EXCHANGE_S_ENTERPRISE_ID,
            "EXCHANGE_S_ENTERPRISE",
            "Success",
            "User",
        ),
        SimPlan::new(
            EXCHANGE_S_FOUNDATION_ID,
            "EXCHANGE_S_FOUNDATION",
            "Success",
            "Company",
        ),
    ]
}

/// A tenant SKU (`subscribedSku`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimSku {
    pub sku_id: String,
    pub sku_part_number: String,
    /// `Enabled`, `Warning`, `Suspended`, `Deleted`, `LockedOut`.
    pub capability_status: String,
    pub enabled: u32,
    pub suspended: u32,
    pub warning: u32,
    pub locked_out: u32,
    pub consumed: u32,
    pub service_plans: Vec<SimPlan>,
    pub subscription_ids: Vec<String>,
}

impl SimSku {
    /// An `Enabled` E3 SKU with `enabled` prepaid seats of which `consumed` are assigned.
    pub fn e3(enabled: u32, consumed: u32) -> SimSku {
        SimSku {
            sku_id: E3_SKU_ID.to_owned(),
            sku_part_number: "ENTERPRISEPACK".to_owned(),
            capability_status: "Enabled".to_owned(),
            enabled,
            consumed,
            service_plans: e3_plans(),
            ..SimSku::default()
        }
    }
}

/// A commercial subscription (`companySubscription`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimSubscription {
    pub id: String,
    pub commerce_subscription_id: String,
    pub sku_id: String,
    pub sku_part_number: String,
    /// `Enabled`, `Deleted`, `Suspended`, `Warning`, `LockedOut`.
    pub status: String,
    pub is_trial: bool,
    /// RFC 3339, e.g. `"2026-01-01T00:00:00Z"`.
    pub next_lifecycle: Option<String>,
    pub total_licenses: u32,
    /// RFC 3339 creation time.
    pub created: String,
}

impl SimSubscription {
    /// An `Enabled`, non-trial E3 subscription of `total_licenses` seats.
    pub fn e3(id: &str, next_lifecycle: Option<&str>, total_licenses: u32) -> SimSubscription {
        SimSubscription {
            id: id.to_owned(),
            commerce_subscription_id: format!("c0{}", id.get(2..).unwrap_or_default()),
            sku_id: E3_SKU_ID.to_owned(),
            sku_part_number: "ENTERPRISEPACK".to_owned(),
            status: "Enabled".to_owned(),
            is_trial: false,
            next_lifecycle: next_lifecycle.map(str::to_owned),
            total_licenses,
            created: "2025-01-01T00:00:00Z".to_owned(),
        }
    }
}

/// A principal holding the Global Administrator role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimAdmin {
    pub id: String,
    pub display_name: String,
    pub account_enabled: bool,
    /// `Member` or `Guest` (users only).
    pub user_type: String,
    pub kind: SimPrincipalKind,
}

impl Default for SimAdmin {
    fn default() -> Self {
        SimAdmin {
            id: String::new(),
            display_name: String::new(),
            account_enabled: true,
            user_type: "Member".to_owned(),
            kind: SimPrincipalKind::User,
        }
    }
}

impl SimAdmin {
    /// An enabled member user.
    pub fn user(id: &str, display_name: &str) -> SimAdmin {
        SimAdmin {
            id: id.to_owned(),
            display_name: display_name.to_owned(),
            ..SimAdmin::default()
        }
    }

    /// A role-assignable group whose members count as admins.
    pub fn group(id: &str, display_name: &str, members: Vec<SimAdmin>) -> SimAdmin {
        SimAdmin {
            id: id.to_owned(),
            display_name: display_name.to_owned(),
            kind: SimPrincipalKind::Group {
                enabled_members: members,
            },
            ..SimAdmin::default()
        }
    }

    /// A service principal (an app holding the role).
    pub fn service_principal(id: &str, display_name: &str) -> SimAdmin {
        SimAdmin {
            id: id.to_owned(),
            display_name: display_name.to_owned(),
            kind: SimPrincipalKind::ServicePrincipal,
            ..SimAdmin::default()
        }
    }
}

/// What kind of directory object a role holder is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SimPrincipalKind {
    #[default]
    User,
    ServicePrincipal,
    /// A group; `enabled_members` are its (transitive) members, each with its own
    /// `account_enabled`, listed by `/groups/{id}/transitiveMembers`.
    Group {
        enabled_members: Vec<SimAdmin>,
    },
}

/// The registry data of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimRdap {
    /// RFC 3339 expiration date; `None` leaves the `expiration` event out.
    pub expiration: Option<String>,
    /// RDAP status values, e.g. `"active"`, `"client transfer prohibited"`, `"redemption period"`.
    pub status: Vec<String>,
    pub registrar: String,
}

impl Default for SimRdap {
    fn default() -> Self {
        SimRdap {
            expiration: None,
            status: vec!["active".to_owned()],
            registrar: "Example Registrar LLC".to_owned(),
        }
    }
}

impl SimRdap {
    /// An `active` registration expiring at `expiration` (RFC 3339).
    pub fn expiring(expiration: &str) -> SimRdap {
        SimRdap {
            expiration: Some(expiration.to_owned()),
            ..SimRdap::default()
        }
    }
}

/// A misbehaviour applied to the next `times` requests whose path (with `?query`) contains
/// `path_contains`, on any listener, before normal handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// `""` matches every request on every listener.
    pub path_contains: String,
    pub kind: FaultKind,
    pub times: usize,
}

impl Fault {
    /// The fault for the next matching request only.
    pub fn once(path_contains: &str, kind: FaultKind) -> Fault {
        Fault {
            path_contains: path_contains.to_owned(),
            kind,
            times: 1,
        }
    }
}

/// How a faulted request is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// 429 with `Retry-After` when given; Graph's `TooManyRequests` body.
    TooManyRequests { retry_after_s: Option<u64> },
    /// 503 `ServiceNotAvailable`, with `Retry-After` when given.
    Unavailable { retry_after_s: Option<u64> },
    /// 504 with an empty body, like a gateway.
    GatewayTimeout,
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// 200 whose body is not JSON.
    MalformedJson,
    /// The normal answer's body cut in half, sent with status 200.
    TruncatedJson,
}

/// Which listener saw a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimServer {
    Login,
    Graph,
    Rdap,
}

/// One request as the simulator saw it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    pub at: tokio::time::Instant,
    pub server: SimServer,
    pub method: String,
    /// The path as sent (still percent-encoded).
    pub path: String,
    /// The query string without `?` (`""` when none).
    pub query: String,
    pub client_request_id: Option<String>,
    /// Graph: a valid bearer token of this simulator was presented. Login token endpoint: the
    /// client credential was verified. Otherwise `false`.
    pub authorized: bool,
    pub status: u16,
}
