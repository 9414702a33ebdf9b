//! Config tests: data in, exact error lines out.

use super::*;
use crate::Timestamp;

const MINIMAL: &str = r#"
[smtp]
helo_name = "probe.msp.example"
mail_from = "probe@msp.example"
"#;

/// Parse `text` (appended to a minimal valid config) and compare the rendered errors.
fn check_errors(extra: &str, expected: &[&str]) {
    let text = format!("{MINIMAL}{extra}");
    let errors = parse(&text).expect_err("config should be invalid");
    let rendered: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(rendered, expected, "config:\n{text}");
}

fn check_valid(extra: &str) -> Config {
    let text = format!("{MINIMAL}{extra}");
    match parse(&text) {
        Ok(config) => config,
        Err(errors) => panic!("config should be valid:\n{text}\n{errors}"),
    }
}

#[test]
fn minimal_config_gets_safe_defaults() {
    let config = check_valid("");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:9317");
    assert_eq!(config.schedule.interval, Duration::from_secs(300));
    assert_eq!(config.schedule.timeout, Duration::from_secs(30));
    assert_eq!(config.smtp.port, 25);
    assert!(config.dns.nameservers.is_empty());
    assert!(config.tenants.is_empty());
}

#[test]
fn example_config_in_the_repo_parses() {
    let text = include_str!("../../../../config/tenantwatch.example.toml");
    let config = parse(text).unwrap_or_else(|errors| panic!("{errors}"));
    assert_eq!(config.tenants.len(), 2);
    let contoso = &config.tenants[0];
    assert_eq!(contoso.domains().count(), 2);
    assert_eq!(
        contoso.enabled_check(CheckKind::Dns).unwrap().interval,
        Duration::from_secs(900)
    );
    assert_eq!(
        contoso.enabled_check(CheckKind::SmtpRcpt).unwrap().timeout,
        Duration::from_secs(20)
    );
}

#[test]
fn tenant_overrides_and_disables_checks() {
    let config = check_valid(
        r#"
[[tenants]]
name = "contoso"
domain = "Contoso.com"
watch = ["admin@contoso.com"]
[tenants.checks.dns]
enabled = false
[tenants.checks.smtp_rcpt]
interval = "10m"
"#,
    );
    let tenant = &config.tenants[0];
    assert_eq!(tenant.domain.as_str(), "contoso.com");
    assert!(tenant.enabled_check(CheckKind::Dns).is_none());
    let smtp = tenant.enabled_check(CheckKind::SmtpRcpt).unwrap();
    assert_eq!(smtp.interval, Duration::from_secs(600));
    assert_eq!(smtp.timeout, Duration::from_secs(30));
}

#[test]
fn unknown_top_level_key_is_rejected_with_its_line() {
    let errors = parse(&format!("listen = \"0.0.0.0:1\"\n{MINIMAL}")).expect_err("unknown key");
    let rendered: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        ["listen (line 1): unknown field `listen`, expected one of `server`, `store`, `schedule`, `smtp`, `dns`, `tenants`, `alerting`, `heartbeat`, `receivers`, `routes`, `silences`, `entra`, `app`, `mailflow`, `checks`"]
    );
}

#[test]
fn unknown_key_inside_a_tenant_check_is_rejected_with_its_path() {
    check_errors(
        "[[tenants]]\nname = \"a\"\ndomain = \"a.com\"\n[tenants.checks.dns]\nintervall = \"5m\"\n",
        &["tenants[0].checks.dns.intervall (line 9): unknown field `intervall`, expected one of `enabled`, `interval`, `timeout`"],
    );
}

#[test]
fn bare_number_durations_are_refused() {
    check_errors(
        "[schedule]\ninterval = 300\n",
        &["schedule.interval (line 6): invalid type: integer `300`, expected a string"],
    );
}

#[test]
fn every_validation_error_is_reported_at_once() {
    check_errors(
        r#"
[server]
listen = "localhost"
[schedule]
interval = "1m"
timeout = "2m"
[dns]
nameservers = ["127.0.0.1:5353", "not-an-ip"]
[[tenants]]
name = "Contoso Ltd"
domain = "contoso"
tenant_id = "nope"
watch = ["admin@fabrikam.com", "broken"]
[tenants.checks.smpt_rcpt]
enabled = true
[[tenants]]
name = "fab"
domain = "fab.com"
[[tenants]]
name = "fab"
domain = "FAB.com"
"#,
        &[
            "server.listen (line 7): \"localhost\" is not an address:port such as 127.0.0.1:9317",
            "schedule.timeout (line 10): must be above zero and shorter than the interval (2m >= 1m)",
            "dns.nameservers[1] (line 12): \"not-an-ip\" is not an IP address or ip:port",
            "tenants[0].name (line 14): tenant name \"Contoso Ltd\" must be 1-64 characters of a-z, 0-9, '-', '_' or '.'",
            "tenants[0].domain (line 15): \"contoso\" is not a valid domain name (letters, digits and '-' in dot-separated labels, at least two labels)",
            "tenants[0].tenant_id (line 16): \"nope\" is not a tenant id GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)",
            "tenants[0].watch[0] (line 17): admin@fabrikam.com is not on one of this tenant's domains (add fabrikam.com to extra_domains)",
            "tenants[0].watch[1] (line 17): \"broken\" is not a valid e-mail address (expected local-part@domain)",
            "tenants[0].checks.smpt_rcpt: unknown check kind \"smpt_rcpt\" (known: dns, smtp_rcpt, tenant, realm, domain, signin, identity, licence, admins, health, mailflow)",
            "tenants[2].name (line 24): duplicate tenant name \"fab\"",
            "tenants[2].domain (line 25): domain fab.com already belongs to tenant \"fab\"; a domain is verified in one tenant only",
        ],
    );
}

#[test]
fn smtp_identity_is_required() {
    let errors = parse("").expect_err("empty config lacks the SMTP identity");
    let rendered: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "smtp.helo_name: required: the probe's own host name, sent in EHLO (not the target's, which EOP rejects with 5.7.506)",
            "smtp.mail_from: required: the envelope sender of probe sessions, on a domain of your own",
        ]
    );
}

#[test]
fn too_frequent_probing_is_refused() {
    check_errors(
        "[schedule]\ninterval = \"2s\"\ntimeout = \"1s\"\n",
        &["schedule.interval (line 6): must be at least 10s"],
    );
}

#[test]
fn malformed_toml_names_the_line() {
    let errors = parse("[smtp\nhelo_name = 1").expect_err("syntax error");
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].line, Some(1));
    assert!(
        errors.0[0].message.contains("invalid table header"),
        "{}",
        errors.0[0].message
    );
}

#[test]
fn bad_port_and_zero_counts_are_refused() {
    check_errors(
        "port = 70000\n[schedule]\nmax_concurrent = 0\n",
        &[
            "schedule.max_concurrent (line 7): must be a positive whole number, got 0",
            "smtp.port (line 5): must be a TCP port 1-65535, got 70000",
        ],
    );
}

#[test]
fn a_short_interval_gets_a_timeout_of_half_of_it() {
    let config = check_valid("[schedule]\ninterval = \"20s\"\n");
    assert_eq!(config.schedule.timeout, Duration::from_secs(10));
}

#[test]
fn old_ok_samples_are_thinned_after_a_week_to_one_a_day_unless_configured() {
    let defaults = check_valid("");
    assert_eq!(
        defaults.store.ok_sample_interval,
        Duration::from_secs(3_600)
    );
    assert_eq!(
        defaults.store.thin_ok_after,
        Duration::from_secs(7 * 86_400)
    );
    assert_eq!(defaults.store.thin_ok_interval, Duration::from_secs(86_400));
    let config = check_valid("[store]\nthin_ok_after = \"30d\"\nthin_ok_interval = \"6h\"\n");
    assert_eq!(config.store.thin_ok_after, Duration::from_secs(30 * 86_400));
    assert_eq!(
        config.store.thin_ok_interval,
        Duration::from_secs(6 * 3_600)
    );
    check_errors(
        "[store]\nthin_ok_after = \"7\"\nthin_ok_interval = \"100000d\"\n",
        &[
            "store.thin_ok_after (line 6): \"7\" is not a duration such as \"30s\", \"5m\" or \"90d\" (time unit needed, for example 7sec or 7ms)",
            "store.thin_ok_interval (line 7): \"100000d\" is longer than the maximum of 3650 days",
        ],
    );
}

#[test]
fn absurdly_long_durations_are_refused() {
    check_errors(
        "[store]\nretention = \"100000d\"\n",
        &["store.retention (line 6): \"100000d\" is longer than the maximum of 3650 days"],
    );
}

#[test]
fn accepted_mx_suffixes_are_validated_and_normalised() {
    let config = check_valid(
        "[[tenants]]\nname = \"a\"\ndomain = \"a.com\"\naccepted_mx = [\".Mimecast.com\", \"pphosted.com\"]\n",
    );
    assert_eq!(
        config.tenants[0].accepted_mx,
        ["mimecast.com", "pphosted.com"]
    );
    check_errors(
        "[[tenants]]\nname = \"a\"\ndomain = \"a.com\"\naccepted_mx = [\"not a host\"]\n",
        &["tenants[0].accepted_mx[0] (line 8): \"not a host\" is not a host name suffix such as \"mimecast.com\""],
    );
}

#[test]
fn receivers_and_routes_are_validated_per_kind() {
    let config = check_valid(
        r#"
[alerting]
confirm = 3
repeat_interval = "2h"
[[receivers]]
name = "ops"
kind = "webhook"
url = "https://hooks.msp.example/tenantwatch/"
secret_file = "/run/credentials/tenantwatch.service/ops-hmac"
[[receivers]]
name = "oncall-sms"
kind = "twilio_sms"
account_sid = "AC123"
from = "+15550001111"
to = ["+15550002222"]
secret_env = "TWILIO_TOKEN"
[[receivers]]
name = "mail"
kind = "email"
relay_host = "smtp.relay.example"
from = "tenantwatch@msp.example"
to = ["noc@msp.example"]
[[routes]]
receivers = ["oncall-sms"]
severities = ["critical"]
[[routes]]
receivers = ["ops", "mail"]
"#,
    );
    let alerting = &config.alerting;
    assert_eq!((alerting.confirm, alerting.recover), (3, 1));
    assert_eq!(alerting.repeat_interval, Duration::from_secs(7_200));
    assert_eq!(
        alerting.receivers[0].kind,
        ReceiverKind::Webhook {
            url: "https://hooks.msp.example/tenantwatch".into()
        }
    );
    assert_eq!(
        alerting.receivers[1].secret,
        Some(SecretSource::Env("TWILIO_TOKEN".into()))
    );
    let ReceiverKind::Email {
        relay_port, tls, ..
    } = &alerting.receivers[2].kind
    else {
        panic!("email expected")
    };
    assert_eq!((*relay_port, *tls), (587, EmailTls::StartTls));
    assert_eq!(
        alerting.receivers_for("critical", "contoso", CheckKind::SmtpRcpt),
        ["oncall-sms", "ops", "mail"]
    );
    assert_eq!(
        alerting.receivers_for("warning", "contoso", CheckKind::Dns),
        ["ops", "mail"]
    );
}

#[test]
fn without_routes_every_receiver_gets_every_alert() {
    let config = check_valid(
        "[[receivers]]\nname = \"a\"\nkind = \"ntfy\"\nurl = \"http://127.0.0.1:8080/alerts\"\n",
    );
    assert_eq!(
        config.alerting.receivers_for("blind", "x", CheckKind::Dns),
        ["a"]
    );
}

#[test]
fn receiver_mistakes_are_all_reported() {
    check_errors(
        r#"
[[receivers]]
name = "tg"
kind = "telegram"
chat_id = "42"
[[receivers]]
name = "x"
kind = "pager"
[[receivers]]
name = "hook"
kind = "webhook"
url = "ftp://nope"
secret_file = "/a"
secret_env = "B"
[[routes]]
receivers = ["nobody"]
severities = ["urgent"]
"#,
        &[
            "receivers[0].secret_file: a telegram receiver needs its bot token in secret_file or secret_env",
            "receivers[1].kind (line 12): unknown receiver kind \"pager\" (known: webhook, ntfy, alertmanager, signal, twilio_sms, http_sms, telegram, matrix, email)",
            "receivers[2].secret_env: give secret_file or secret_env, not both",
            "receivers[2].url (line 16): \"ftp://nope\" is not an http:// or https:// URL",
            "routes[0].receivers[0] (line 20): no receiver named \"nobody\"",
            "routes[0].severities[0] (line 21): unknown severity \"urgent\" (known: critical, warning, blind)",
        ],
    );
}

#[test]
fn alertmanager_needs_repeats_within_its_alert_validity() {
    check_errors(
        "[alerting]\nrepeat_interval = \"2d\"\n[[receivers]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n",
        &["alerting.repeat_interval (line 6): must be under 24h with an alertmanager receiver (its alerts would lapse between repeats)"],
    );
}

#[test]
fn heartbeat_takes_a_url_and_an_interval() {
    let config = check_valid("[heartbeat]\nurl = \"https://hc-ping.com/0f3c\"\n");
    let heartbeat = config.heartbeat.unwrap();
    assert_eq!(
        (heartbeat.url.as_str(), heartbeat.interval),
        ("https://hc-ping.com/0f3c", Duration::from_secs(60))
    );
    check_errors(
        "[heartbeat]\nurl = \"hc-ping.com\"\ninterval = \"1s\"\n",
        &[
            "heartbeat.interval (line 7): must be at least 10s",
            "heartbeat.url (line 6): \"hc-ping.com\" is not an http:// or https:// URL",
        ],
    );
}

#[test]
fn silences_are_time_windows_matching_tenant_check_and_target() {
    let config = check_valid(
        "[[silences]]\ntenant = \"contoso\"\ncheck = \"smtp_rcpt\"\nstart = \"2026-11-24T22:00:00Z\"\nend = \"2026-11-25T02:00:00Z\"\nreason = \"mailbox migration\"\n",
    );
    let silence = &config.alerting.silences[0];
    let start = Timestamp(1_795_557_600_000);
    assert_eq!(silence.start, start);
    assert!(config
        .alerting
        .silenced("contoso", CheckKind::SmtpRcpt, "a@contoso.com", start)
        .is_some());
    assert!(config
        .alerting
        .silenced("contoso", CheckKind::Dns, "contoso.com", start)
        .is_none());
    assert!(config
        .alerting
        .silenced("fabrikam", CheckKind::SmtpRcpt, "a@fabrikam.com", start)
        .is_none());
    assert!(config
        .alerting
        .silenced("contoso", CheckKind::SmtpRcpt, "a@contoso.com", silence.end)
        .is_none());
    check_errors(
        "[[silences]]\nstart = \"tomorrow\"\nend = \"2026-11-25T02:00:00Z\"\nreason = \"\"\n[[silences]]\nstart = \"2026-11-25T02:00:00Z\"\nend = \"2026-11-24T02:00:00Z\"\nreason = \"x\"\n",
        &[
            "silences[0].start (line 6): \"tomorrow\" is not a UTC time such as \"2026-11-24T22:00:00Z\"",
            "silences[0].reason: say why (it is logged with every alert it holds back)",
            "silences[1].end (line 11): must be after start",
        ],
    );
}

#[test]
fn app_checks_follow_app_credentials_and_global_check_defaults_apply() {
    let config = check_valid(
        r#"
[checks.realm]
enabled = false
[checks.tenant]
interval = "10m"

[app]
client_id = "11111111-2222-4333-8444-555555555555"
client_secret_env = "TW_APP_SECRET"
credential_expires = "2027-03-01"

[[tenants]]
name = "with-app"
domain = "contoso.com"

[[tenants]]
name = "own-cert"
domain = "fabrikam.com"
[tenants.app]
client_id = "AAAAAAAA-2222-4333-8444-555555555555"
certificate_file = "/etc/tenantwatch/app.pem"
private_key_file = "/run/credentials/tenantwatch.service/app.key"
[tenants.licence]
renewal_warn_days = [7, 30]
manual_renewal = ["ENTERPRISEPREMIUM"]
[tenants.checks.admins]
enabled = false
"#,
    );
    let with_app = &config.tenants[0];
    assert!(with_app.enabled_check(CheckKind::Identity).is_some());
    assert!(with_app.enabled_check(CheckKind::Realm).is_none());
    assert_eq!(
        with_app.checks[&CheckKind::Tenant].interval,
        Duration::from_secs(600)
    );
    assert_eq!(
        with_app.checks[&CheckKind::Domain].interval,
        Duration::from_secs(12 * 3600)
    );
    let app = with_app.app.as_ref().unwrap();
    assert_eq!(app.client_id, "11111111-2222-4333-8444-555555555555");
    assert_eq!(
        app.credential,
        AppCredential::Secret(SecretSource::Env("TW_APP_SECRET".into()))
    );
    assert_eq!(app.credential_expires, Timestamp::parse_utc("2027-03-01"));
    assert_eq!(with_app.licence.renewal_warn_days, [30, 14, 7, 1]);

    let own = &config.tenants[1];
    let own_app = own.app.as_ref().unwrap();
    assert_eq!(own_app.client_id, "aaaaaaaa-2222-4333-8444-555555555555");
    assert!(matches!(
        own_app.credential,
        AppCredential::Certificate { .. }
    ));
    assert!(own.enabled_check(CheckKind::Admins).is_none());
    assert_eq!(own.licence.renewal_warn_days, [30, 7]);
    assert_eq!(own.licence.manual_renewal, ["ENTERPRISEPREMIUM"]);
}

#[test]
fn app_checks_are_off_without_an_app_and_asking_for_one_is_an_error() {
    let config = check_valid("[[tenants]]\nname = \"a\"\ndomain = \"a.com\"\n");
    let tenant = &config.tenants[0];
    for kind in CheckKind::ALL {
        assert_eq!(
            tenant.enabled_check(kind).is_some(),
            // mailflow needs [mailflow] and the tenant's mailflow_to instead.
            !kind.needs_app() && kind != CheckKind::Mailflow,
            "{kind}"
        );
    }
    check_errors(
        "[[tenants]]\nname = \"a\"\ndomain = \"a.com\"\n[tenants.checks.identity]\nenabled = true\n",
        &["tenants[0].checks.identity.enabled: the identity check needs app credentials: add [app] or this tenant's app"],
    );
}

#[test]
fn bad_app_and_entra_settings_are_all_reported() {
    check_errors(
        r#"
[entra]
cloud = "mars"
login_url = "ftp://login"
domain_warn_days = 5
domain_critical_days = 9

[app]
client_id = "not-a-guid"
client_secret_env = "X"
certificate_file = "/x.pem"
credential_expires = "someday"
"#,
        &[
            "entra.cloud (line 7): unknown cloud \"mars\" (known: global, us_gov_high, us_gov_dod, china)",
            "entra.login_url (line 8): \"ftp://login\" is not an http:// or https:// URL",
            "entra.domain_critical_days (line 10): must not exceed domain_warn_days (5)",
            "app.client_id (line 13): \"not-a-guid\" is not an application (client) id GUID",
            "app.client_secret_file: give a client secret or a certificate with its private key, not both",
            "app.credential_expires (line 16): \"someday\" is not a date such as \"2027-03-01\" or \"2027-03-01T12:00:00Z\"",
        ],
    );
}

const MAILFLOW: &str = r#"
[mailflow]
relay_host = "smtp.msp-mail.example"
relay_username = "probe"
relay_password_file = "/etc/tenantwatch/relay-password"
mail_from = "bounces@msp-mail.example"
imap_host = "imap.msp-mail.example"
imap_username = "bounces"
imap_password_env = "TW_IMAP_PASSWORD"
"#;

#[test]
fn mailflow_runs_where_mailflow_and_mailflow_to_are_set_with_a_timeout_covering_the_wait() {
    let config = check_valid(&format!(
        r#"{MAILFLOW}
[[tenants]]
name = "contoso"
domain = "contoso.com"
watch = ["admin@contoso.com", "ceo@contoso.com"]
mailflow_to = ["ceo@contoso.com"]

[[tenants]]
name = "fabrikam"
domain = "fabrikam.com"
watch = ["admin@fabrikam.com"]
"#
    ));
    let mailflow = config.mailflow.as_ref().unwrap();
    assert_eq!(mailflow.relay_host, "smtp.msp-mail.example");
    assert_eq!(
        (mailflow.relay_port, mailflow.relay_tls),
        (587, EmailTls::StartTls)
    );
    assert_eq!(
        (mailflow.imap_port, mailflow.imap_tls),
        (993, EmailTls::Implicit)
    );
    assert_eq!(mailflow.relay_username.as_deref(), Some("probe"));
    assert_eq!(
        mailflow.relay_password,
        Some(SecretSource::File("/etc/tenantwatch/relay-password".into()))
    );
    assert_eq!(
        mailflow.imap_password,
        SecretSource::Env("TW_IMAP_PASSWORD".into())
    );
    assert_eq!(mailflow.helo_name.as_str(), "msp-mail.example");
    assert_eq!(mailflow.imap_folder, "INBOX");
    assert_eq!(mailflow.bounce_wait, Duration::from_secs(120));
    assert_eq!(mailflow.poll_interval, Duration::from_secs(5));

    let contoso = &config.tenants[0];
    assert_eq!(contoso.mailflow_to[0].to_string(), "ceo@contoso.com");
    let check = contoso.enabled_check(CheckKind::Mailflow).unwrap();
    assert_eq!(check.interval, Duration::from_secs(1_800));
    assert_eq!(check.timeout, Duration::from_secs(180));
    assert!(!CheckKind::Mailflow.needs_app());
    assert!(config.tenants[1]
        .enabled_check(CheckKind::Mailflow)
        .is_none());

    // Without [mailflow] the check is off everywhere, and nobody asked for it.
    let config = check_valid(
        r#"
[[tenants]]
name = "contoso"
domain = "contoso.com"
watch = ["admin@contoso.com"]
"#,
    );
    assert!(config.mailflow.is_none());
    assert!(config.tenants[0]
        .enabled_check(CheckKind::Mailflow)
        .is_none());
}

#[test]
fn mailflow_implicit_tls_ports_and_a_longer_wait() {
    let config = check_valid(&format!(
        r#"{}
relay_tls = "implicit"
imap_tls = "starttls"
imap_folder = "Bounces"
bounce_wait = "10m"
extra_ca_file = "/etc/tenantwatch/ca.pem"

[[tenants]]
name = "contoso"
domain = "contoso.com"
watch = ["admin@contoso.com"]
mailflow_to = ["admin@contoso.com"]
"#,
        MAILFLOW.replace("relay_username = \"probe\"\nrelay_password_file = \"/etc/tenantwatch/relay-password\"\n", "")
    ));
    let mailflow = config.mailflow.as_ref().unwrap();
    assert_eq!(
        (mailflow.relay_port, mailflow.relay_tls),
        (465, EmailTls::Implicit)
    );
    assert_eq!(
        (mailflow.imap_port, mailflow.imap_tls),
        (143, EmailTls::StartTls)
    );
    assert_eq!(
        (
            mailflow.relay_username.as_ref(),
            mailflow.relay_password.as_ref()
        ),
        (None, None)
    );
    assert_eq!(mailflow.imap_folder, "Bounces");
    assert_eq!(
        mailflow.extra_ca_file,
        Some("/etc/tenantwatch/ca.pem".into())
    );
    let check = config.tenants[0]
        .enabled_check(CheckKind::Mailflow)
        .unwrap();
    assert_eq!(check.timeout, Duration::from_secs(660));
}

#[test]
fn mailflow_mistakes_are_all_reported() {
    check_errors(
        r#"
[mailflow]
relay_host = "smtp.office365.com"
relay_tls = "none"
relay_password_file = "/x"
relay_password_env = "X"
mail_from = "bounces@contoso.com"
imap_host = "imap bad"
imap_username = "bounces"
bounce_wait = "2h"

[[tenants]]
name = "contoso"
domain = "contoso.com"
watch = ["admin@contoso.com"]
mailflow_to = ["ceo@contoso.com", "nobody"]
"#,
        &[
            "mailflow.relay_host (line 7): smtp.office365.com is Microsoft's; the mailflow check must send and read bounces outside Microsoft, or it fails together with what it watches",
            "mailflow.relay_tls (line 8): \"none\" is not \"starttls\" or \"implicit\" (plaintext is not supported)",
            "mailflow.relay_password_env: give the file or the environment variable, not both",
            "mailflow.imap_host (line 12): \"imap bad\" is not a host name or IP address",
            "mailflow.bounce_wait (line 14): must be between 5s and 1h",
            "tenants[0].mailflow_to[0] (line 20): ceo@contoso.com is not in this tenant's watch list; add it there too",
            "tenants[0].mailflow_to[1] (line 20): \"nobody\" is not a valid e-mail address (expected local-part@domain)",
        ],
    );
    // The envelope sender on a watched tenant's domain would send the bounces into the tenant.
    check_errors(
        &format!(
            r#"{}
[[tenants]]
name = "contoso"
domain = "contoso.com"
watch = ["admin@contoso.com"]
"#,
            MAILFLOW.replace("bounces@msp-mail.example", "bounces@contoso.com")
        ),
        &["mailflow.mail_from (line 10): bounces@contoso.com is on tenant \"contoso\"'s domain; bounces must come back to a mailbox of your own, outside the tenants watched"],
    );
}

#[test]
fn mailflow_without_its_section_or_addresses_is_refused_when_asked_for() {
    check_errors(
        r#"
[[tenants]]
name = "contoso"
domain = "contoso.com"
watch = ["admin@contoso.com"]
mailflow_to = ["admin@contoso.com"]
"#,
        &["tenants[0].mailflow_to (line 10): needs a [mailflow] section: the relay that sends the probe and the mailbox its bounces come back to"],
    );
    check_errors(
        &format!(
            r#"{MAILFLOW}
[[tenants]]
name = "contoso"
domain = "contoso.com"
watch = ["admin@contoso.com"]
[tenants.checks.mailflow]
enabled = true
"#
        ),
        &["tenants[0].checks.mailflow.enabled: the mailflow check needs [mailflow] and this tenant's mailflow_to"],
    );
}

#[test]
fn a_mailflow_timeout_within_the_bounce_wait_is_refused() {
    let tenant = r#"
[[tenants]]
name = "contoso"
domain = "contoso.com"
watch = ["admin@contoso.com"]
mailflow_to = ["admin@contoso.com"]
"#;
    check_errors(
        &format!("{MAILFLOW}\n[checks.mailflow]\ntimeout = \"1m\"\n{tenant}"),
        &["checks.mailflow.timeout (line 16): 1m must be longer than mailflow.bounce_wait (2m), or the probe stops before a bounce can arrive; allow about a minute more for the relay and the mailbox"],
    );
    // A short interval halves the default timeout below the wait; that is named too.
    check_errors(
        &format!("{MAILFLOW}{tenant}[tenants.checks.mailflow]\ninterval = \"3m\"\n"),
        &["tenants[0].checks.mailflow.timeout (line 21): 1m 30s must be longer than mailflow.bounce_wait (2m), or the probe stops before a bounce can arrive; allow about a minute more for the relay and the mailbox"],
    );
    // A wait that fills the default interval is reported on the wait itself.
    check_errors(
        &format!("{MAILFLOW}bounce_wait = \"30m\"\n{tenant}"),
        &["mailflow.bounce_wait: 30m leaves no room in the mailflow check's interval of 30m: shorten it or set [checks.mailflow] interval"],
    );
    let config = check_valid(&format!(
        "{MAILFLOW}\n[checks.mailflow]\ninterval = \"10m\"\ntimeout = \"150s\"\n{tenant}"
    ));
    let check = config.tenants[0]
        .enabled_check(CheckKind::Mailflow)
        .unwrap();
    assert_eq!(
        (check.interval, check.timeout),
        (Duration::from_secs(600), Duration::from_secs(150))
    );
}

#[test]
fn api_token_is_a_reference_and_reads_are_open_by_default() {
    let config = check_valid("");
    assert_eq!(config.server.api_token, None);
    assert!(!config.server.read_requires_token);

    let config = check_valid(
        "[server]\napi_token_file = \"/run/credentials/tenantwatch.service/api-token\"\nread_requires_token = true\n",
    );
    assert_eq!(
        config.server.api_token,
        Some(SecretSource::File(PathBuf::from(
            "/run/credentials/tenantwatch.service/api-token"
        )))
    );
    assert!(config.server.read_requires_token);

    let config = check_valid("[server]\napi_token_env = \"TENANTWATCH_API_TOKEN\"\n");
    assert_eq!(
        config.server.api_token,
        Some(SecretSource::Env("TENANTWATCH_API_TOKEN".into()))
    );
    assert!(!config.server.read_requires_token);
}

#[test]
fn api_token_mistakes_are_reported_with_their_lines() {
    check_errors(
        "[server]\napi_token_file = \"/etc/tw/token\"\napi_token_env = \"TW_TOKEN\"\n",
        &["server.api_token_env (line 7): give api_token_file or api_token_env, not both"],
    );
    check_errors(
        "[server]\nread_requires_token = true\n",
        &["server.read_requires_token (line 6): needs the token itself: set server.api_token_file or server.api_token_env"],
    );
    check_errors(
        "[server]\napi_token_env = \" \"\n",
        &["server.api_token_env (line 6): must not be empty"],
    );
    check_errors(
        "[server]\napi_token_file = \"\"\n",
        &["server.api_token_file (line 6): must not be empty"],
    );
    // The token itself is never accepted inline.
    check_errors(
        "[server]\napi_token = \"hunter2\"\n",
        &["server.api_token (line 6): unknown field `api_token`, expected one of `listen`, `api_token_file`, `api_token_env`, `read_requires_token`"],
    );
}

#[test]
fn degraded_source_thresholds_are_checked() {
    let config = check_valid("[alerting]\ndegraded_fraction = 0.3\ndegraded_min_targets = 50\n");
    assert_eq!(config.alerting.degraded_fraction, 0.3);
    assert_eq!(config.alerting.degraded_min_targets, 50);
    check_errors(
        "[alerting]\ndegraded_fraction = 2.0\n",
        &["alerting.degraded_fraction (line 6): must be a share between 0.05 and 1.0, got 2"],
    );
}

const ROUTED: &str = r#"
[[receivers]]
name = "signal"
kind = "signal"
url = "http://127.0.0.1:8080"
number = "+15550001111"
recipients = ["+15550002222"]
[[receivers]]
name = "sms"
kind = "http_sms"
url = "http://127.0.0.1:9000/send"
body_template = "to={to}&text={message}"
to = ["+15550003333"]
[[receivers]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9001/hook"
[[receivers]]
name = "boss"
kind = "ntfy"
url = "http://127.0.0.1:9002/boss"
"#;

#[test]
fn fallback_routes_send_to_the_first_receiver_and_keep_the_rest_in_order() {
    let config = check_valid(&format!(
        "{ROUTED}[[routes]]\nreceivers = [\"signal\", \"sms\", \"hook\"]\nfallback = true\nfallback_attempts = 4\nfallback_after = \"2m\"\n[[routes]]\nreceivers = [\"hook\", \"boss\"]\nseverities = [\"warning\"]\n"
    ));
    let alerting = &config.alerting;
    let targets = alerting.targets_for("critical", "contoso", CheckKind::SmtpRcpt);
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(
        (
            targets[0].receiver,
            targets[0].fallback.clone(),
            targets[0].fallback_attempts,
            targets[0].fallback_after
        ),
        ("signal", vec!["sms", "hook"], 4, Duration::from_secs(120))
    );
    // The plain route adds its receivers directly; one already reached through the chain's
    // head is not repeated, and a chain member may still be a direct receiver.
    let warning = alerting.targets_for("warning", "contoso", CheckKind::Dns);
    assert_eq!(
        warning
            .iter()
            .map(|t| (t.receiver, t.fallback.len()))
            .collect::<Vec<_>>(),
        [("signal", 2), ("hook", 0), ("boss", 0)]
    );
    // Every receiver that may get it, fallbacks included.
    assert_eq!(
        alerting.receivers_for("critical", "contoso", CheckKind::SmtpRcpt),
        ["signal", "sms", "hook"]
    );
    // Defaults: 3 attempts or 5 minutes.
    let config = check_valid(&format!(
        "{ROUTED}[[routes]]\nreceivers = [\"signal\", \"sms\"]\nfallback = true\n"
    ));
    let targets = config
        .alerting
        .targets_for("blind", "x", CheckKind::Identity);
    assert_eq!(
        (targets[0].fallback_attempts, targets[0].fallback_after),
        (3, Duration::from_secs(300))
    );
}

#[test]
fn without_routes_every_receiver_is_a_direct_target() {
    let config = check_valid(ROUTED);
    let targets = config.alerting.targets_for("critical", "x", CheckKind::Dns);
    assert_eq!(
        targets.iter().map(|t| t.receiver).collect::<Vec<_>>(),
        ["signal", "sms", "hook", "boss"]
    );
    assert!(targets.iter().all(|t| t.fallback.is_empty()));
    assert_eq!(config.alerting.escalation_for("x", CheckKind::Dns), None);
    assert_eq!(config.alerting.group_window, Duration::from_secs(30));
}

#[test]
fn escalation_takes_the_shortest_delay_and_every_escalation_receiver_of_matching_routes() {
    let config = check_valid(&format!(
        "{ROUTED}[[routes]]\nreceivers = [\"hook\"]\nescalate_after = \"30m\"\nescalate_to = [\"sms\"]\n\
         [[routes]]\nreceivers = [\"signal\"]\nseverities = [\"critical\"]\ntenants = [\"contoso\"]\nescalate_after = \"10m\"\nescalate_to = [\"boss\", \"sms\"]\n\
         [[routes]]\nreceivers = [\"boss\"]\nseverities = [\"warning\"]\n"
    ));
    let alerting = &config.alerting;
    let rule = alerting
        .escalation_for("contoso", CheckKind::SmtpRcpt)
        .unwrap();
    assert_eq!(
        (rule.after, rule.to),
        (Duration::from_secs(600), vec!["sms", "boss"])
    );
    let rule = alerting
        .escalation_for("fabrikam", CheckKind::SmtpRcpt)
        .unwrap();
    assert_eq!(
        (rule.after, rule.to),
        (Duration::from_secs(1_800), vec!["sms"])
    );
}

#[test]
fn a_group_window_is_a_short_duration_and_zero_turns_grouping_off() {
    let config = check_valid("[alerting]\ngroup_window = \"0s\"\n");
    assert_eq!(config.alerting.group_window, Duration::ZERO);
    let config = check_valid("[alerting]\ngroup_window = \"45s\"\n");
    assert_eq!(config.alerting.group_window, Duration::from_secs(45));
    check_errors(
        "[alerting]\ngroup_window = \"1h\"\n",
        &["alerting.group_window (line 6): 1h is too long: a group holds its receivers' later messages back too; at most 10m (0s turns grouping off)"],
    );
    check_errors(
        "[alerting]\ngroup_window = \"30\"\n",
        &["alerting.group_window (line 6): \"30\" is not a duration such as \"30s\", \"5m\" or \"90d\" (time unit needed, for example 30sec or 30ms)"],
    );
}

#[test]
fn fallback_and_escalation_mistakes_are_all_reported_with_their_lines() {
    check_errors(
        &format!(
            "{ROUTED}[[routes]]\nreceivers = [\"signal\"]\nfallback = true\nfallback_attempts = 0\n\
             [[routes]]\nreceivers = [\"hook\"]\nfallback_after = \"1m\"\n\
             [[routes]]\nreceivers = [\"hook\", \"sms\"]\nfallback = true\nfallback_after = \"0s\"\n\
             [[routes]]\nreceivers = [\"hook\"]\nescalate_to = [\"nobody\", \"sms\"]\n\
             [[routes]]\nreceivers = [\"hook\"]\nescalate_after = \"15m\"\n\
             [[routes]]\nreceivers = [\"hook\"]\nseverities = [\"warning\"]\nescalate_after = \"15m\"\nescalate_to = [\"sms\"]\n\
             [[routes]]\nreceivers = [\"hook\"]\nescalate_after = \"0s\"\nescalate_to = [\"sms\"]\n"
        ),
        &[
            "routes[0].fallback_attempts (line 29): must be a whole number from 1 to 100, got 0",
            "routes[0].fallback (line 28): a fallback route needs at least two receivers, in order of preference",
            "routes[1].fallback_after (line 32): only applies with fallback = true",
            "routes[2].fallback_after (line 36): must be longer than 0s (a permanent refusal falls back at once anyway)",
            "routes[3].escalate_to[0] (line 39): no receiver named \"nobody\"",
            "routes[3].escalate_after (line 39): escalate_to needs escalate_after (how long an unacknowledged critical alert waits)",
            "routes[4].escalate_to (line 42): escalate_after needs escalate_to (the receivers to escalate to)",
            "routes[5].escalate_after (line 46): only critical alerts escalate, and this route's severities leave critical out",
            "routes[6].escalate_after (line 50): must be longer than 0s (route the receivers directly instead)",
        ],
    );
}

#[test]
fn control_tenants_must_be_configured_tenants() {
    let config = check_valid(
        "[alerting]\ncontrol_tenants = [\"msp-own\"]\n[[tenants]]\nname = \"msp-own\"\ndomain = \"msp.example\"\naccepted_mx = [\"msp.example\"]\n",
    );
    assert_eq!(config.alerting.control_tenants[0].as_str(), "msp-own");
    check_errors(
        "[alerting]\ncontrol_tenants = [\"nobody\"]\n",
        &["alerting.control_tenants[0]: no tenant named \"nobody\": a control tenant is a [[tenants]] entry that watches your own mail domain"],
    );
}
