//! The `signin` check: can the monitor's app still get an app-only token for the tenant, and
//! how long until its own credential runs out (reference §2).
//!
//! A refused token says why by its AADSTS code: the app was removed from the tenant, its
//! credential is wrong or expired, a tenant policy blocks it, a service is switched off. The
//! credential's configured expiry gives the one failure that can be seen coming, so it warns
//! ahead of time rather than after every Graph check has gone blind.

use reqwest::Client;
use tokio::time::Instant;
use tw_core::{HttpEvidence, Reason, Timestamp};

use crate::credentials::LoadedApp;
use crate::token::TokenCache;
use crate::Outcome;

/// Asks `cache` for a token for `tenant` (through [`TokenCache::get`]) and judges the answer;
/// `target` is what the outcome is about (the tenant name the caller uses).
///
/// A token → `token_issued` (facts `tenant`, `token_expires_at`, `acquired_at`, `from_cache`,
/// `credential` = `secret` | `certificate`), unless `credential_expires` is within
/// `warn_days` of `now` → `credential_expiring` (also when the configured date has already
/// passed while Entra ID still issues tokens: the summary asks to correct the date). A refusal
/// → the reason its AADSTS code classifies to, with the codes in the summary and the trace and
/// correlation ids in the exchange; transport faults → their `unknown` reason.
#[allow(clippy::too_many_arguments)]
pub async fn signin(
    cache: &TokenCache,
    client: &Client,
    login_url: &str,
    tenant: &str,
    target: &str,
    app: &LoadedApp,
    credential_expires: Option<Timestamp>,
    warn_days: u32,
    now: Timestamp,
    deadline: Instant,
) -> Outcome {
    let attempt = cache.get(client, login_url, tenant, app, deadline).await;
    let mut evidence = HttpEvidence {
        exchanges: attempt.exchanges,
        ..HttpEvidence::default()
    };
    let facts = &mut evidence.facts;
    facts.insert("tenant".to_owned(), tenant.to_owned());
    facts.insert("credential".to_owned(), app.kind().as_str().to_owned());
    facts.insert("client_id".to_owned(), app.client_id().to_owned());
    if let Some(expires) = credential_expires {
        facts.insert("credential_expires".to_owned(), expires.to_string());
        facts.insert(
            "credential_days_left".to_owned(),
            now.days_until(expires).to_string(),
        );
    }
    let token = match attempt.result {
        Ok(token) => token,
        Err((reason, summary)) => {
            if let Some(codes) = evidence.exchanges.last().map(|e| e.aadsts.clone()) {
                if !codes.is_empty() {
                    let codes: Vec<String> = codes.iter().map(u32::to_string).collect();
                    evidence.facts.insert("aadsts".to_owned(), codes.join(","));
                }
            }
            return Outcome {
                target: target.to_owned(),
                reason,
                summary,
                evidence,
            };
        }
    };
    facts.insert("token_expires_at".to_owned(), token.expires_at.to_string());
    facts.insert("acquired_at".to_owned(), token.acquired_at.to_string());
    facts.insert("from_cache".to_owned(), (!attempt.fresh).to_string());
    let what = app.kind().describe();
    let (reason, summary) = match credential_expires {
        Some(expires) => {
            let days = now.days_until(expires);
            let date = date_of(expires);
            if days < 0 {
                (
                    Reason::CredentialExpiring,
                    format!(
                        "the configured {what} expiry {date} has passed but Entra ID still issues tokens: \
                         update credential_expires to the {what}'s real end date"
                    ),
                )
            } else if days <= i64::from(warn_days) {
                (
                    Reason::CredentialExpiring,
                    format!("{what} expires in {days} days on {date}"),
                )
            } else {
                issued(tenant, what, &token.expires_at, attempt.fresh)
            }
        }
        None => issued(tenant, what, &token.expires_at, attempt.fresh),
    };
    Outcome {
        target: target.to_owned(),
        reason,
        summary,
        evidence,
    }
}

fn issued(tenant: &str, what: &str, expires_at: &Timestamp, fresh: bool) -> (Reason, String) {
    let source = if fresh { "new" } else { "cached" };
    (
        Reason::TokenIssued,
        format!("Entra ID issued a token for {tenant} with the {what} ({source}, valid until {expires_at})"),
    )
}

/// `2027-03-01` from a timestamp.
fn date_of(at: Timestamp) -> String {
    at.to_string().chars().take(10).collect()
}
