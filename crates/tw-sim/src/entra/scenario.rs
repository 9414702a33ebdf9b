//! Ready-made simulator states: a healthy tenant as the probes, the demo and the end-to-end
//! tests all start from, so none of them repeats the dozen setter calls.

use std::time::{Duration, SystemTime};

use super::{
    EntraSim, SimAdmin, SimCredential, SimRdap, SimSku, SimSubscription, SimTenant, SimUser,
};

/// One tenant in good health: managed, the app registered with a client secret, every
/// watched user E3-licensed with an Exchange mailbox plan, an E3 SKU with seats to spare, an
/// auto-renewing subscription a year out, two enabled Global Administrators, services
/// operational, and every domain registered for another year.
#[derive(Debug, Clone)]
pub struct HealthyTenant<'a> {
    pub tenant_id: &'a str,
    pub display_name: &'a str,
    pub domains: &'a [&'a str],
    /// (object id, user principal name) of each user.
    pub users: &'a [(&'a str, &'a str)],
    pub client_id: &'a str,
    pub client_secret: &'a str,
}

/// An RFC 3339 time `days` from now (negative: in the past).
pub fn days_from_now(days: i64) -> String {
    let offset = Duration::from_secs(days.unsigned_abs() * 86_400);
    let at = if days >= 0 {
        SystemTime::now() + offset
    } else {
        SystemTime::now()
            .checked_sub(offset)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    humantime::format_rfc3339_seconds(at).to_string()
}

impl EntraSim {
    /// The `[entra]` section of a tenantwatch config that points every endpoint at this
    /// simulator and trusts `extra_ca_file` (the PEM of the CA it was started with).
    pub fn config_section(&self, extra_ca_file: &std::path::Path) -> String {
        format!(
            "[entra]\nlogin_url = \"{}\"\ngraph_url = \"{}\"\nrdap_bootstrap_url = \"{}\"\nextra_ca_file = \"{}\"\n",
            self.login_url(),
            self.graph_url(),
            self.rdap_bootstrap_url(),
            extra_ca_file.display()
        )
    }

    /// Sets up `tenant` as described on [`HealthyTenant`].
    pub fn add_healthy_tenant(&self, tenant: &HealthyTenant<'_>) {
        let id = tenant.tenant_id;
        self.add_tenant(SimTenant::managed(id, tenant.display_name, tenant.domains));
        self.register_app(
            id,
            tenant.client_id,
            SimCredential::Secret(tenant.client_secret.to_owned()),
        );
        for (object_id, upn) in tenant.users {
            self.add_user(id, SimUser::licensed(object_id, upn));
        }
        let seats = u32::try_from(tenant.users.len()).unwrap_or(u32::MAX);
        self.set_skus(id, vec![SimSku::e3(seats.saturating_add(5), seats)]);
        self.set_subscriptions(
            id,
            vec![SimSubscription::e3(
                "5a1e0000-0000-4000-8000-000000000001",
                Some(&days_from_now(365)),
                seats.saturating_add(5),
            )],
        );
        self.set_global_admins(
            id,
            vec![
                SimAdmin::user("6a000000-0000-4000-8000-000000000001", "Break Glass 1"),
                SimAdmin::user("6a000000-0000-4000-8000-000000000002", "Break Glass 2"),
            ],
        );
        for domain in tenant.domains {
            self.set_rdap(domain, SimRdap::expiring(&days_from_now(365)));
        }
    }
}
