//! The TOML shape, exactly as written by the operator. Private to `config`: nothing outside
//! sees these structs, only the validated [`super::Config`].
//!
//! Every struct denies unknown keys, so a typo is an error rather than a silently ignored
//! setting. Values that are validated later are `Spanned` so their errors can name a line.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: Option<RawServer>,
    pub(super) store: Option<RawStore>,
    pub(super) schedule: Option<RawSchedule>,
    pub(super) smtp: Option<RawSmtp>,
    pub(super) dns: Option<RawDns>,
    #[serde(default)]
    pub(super) tenants: Vec<RawTenant>,
    pub(super) alerting: Option<super::alerting::RawAlerting>,
    pub(super) heartbeat: Option<RawHeartbeat>,
    #[serde(default)]
    pub(super) receivers: Vec<super::alerting::RawReceiver>,
    #[serde(default)]
    pub(super) routes: Vec<super::alerting::RawRoute>,
    #[serde(default)]
    pub(super) silences: Vec<super::alerting::RawSilence>,
    pub(super) entra: Option<super::entra::RawEntra>,
    pub(super) app: Option<super::entra::RawApp>,
    pub(super) mailflow: Option<super::mailflow::RawMailflow>,
    /// Defaults for every tenant's `checks`.
    #[serde(default)]
    pub(super) checks: BTreeMap<String, RawCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: Option<Spanned<String>>,
    /// The API bearer token, by reference like receivers' secrets: a file or an environment
    /// variable, never inline.
    pub(super) api_token_file: Option<Spanned<String>>,
    pub(super) api_token_env: Option<Spanned<String>>,
    pub(super) read_requires_token: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) path: Option<Spanned<String>>,
    pub(super) retention: Option<Spanned<String>>,
    pub(super) ok_sample_interval: Option<Spanned<String>>,
    pub(super) thin_ok_after: Option<Spanned<String>>,
    pub(super) thin_ok_interval: Option<Spanned<String>>,
    pub(super) queue_capacity: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) max_concurrent: Option<Spanned<i64>>,
    pub(super) max_per_destination: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub(super) helo_name: Option<Spanned<String>>,
    pub(super) mail_from: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<i64>>,
    pub(super) extra_ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    #[serde(default)]
    pub(super) nameservers: Vec<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub(super) name: Spanned<String>,
    pub(super) domain: Spanned<String>,
    #[serde(default)]
    pub(super) extra_domains: Vec<Spanned<String>>,
    pub(super) tenant_id: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) accepted_mx: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) watch: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) checks: BTreeMap<String, RawCheck>,
    /// Overrides `[app]` for this tenant.
    pub(super) app: Option<super::entra::RawApp>,
    pub(super) licence: Option<super::entra::RawLicence>,
    /// Watched addresses the mailflow check sends its probe message to.
    #[serde(default)]
    pub(super) mailflow_to: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub(super) enabled: Option<bool>,
    pub(super) interval: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeartbeat {
    pub(super) url: Spanned<String>,
    pub(super) interval: Option<Spanned<String>>,
}
