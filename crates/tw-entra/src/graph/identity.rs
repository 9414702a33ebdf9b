//! The identity check: does the watched user still exist, is it enabled, does it still carry
//! the watched address, and if it is gone, can it be restored and until when (reference
//! §3.2, §3.3).
//!
//! The user is read by its object id once known: a soft-deleted user's UPN is mangled and a
//! renamed user's UPN changes, so only the id says reliably "this person is gone". The id is
//! learned on first sight (fact `object_id`); the caller stores it and passes it back.

use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use tw_core::{EmailAddress, HttpEvidence, Reason, Secret, Timestamp};

use super::{
    encode_query_value, encode_segment, failed, odata_string, Call, GraphClient, GraphError,
};
use crate::Outcome;

/// The user properties the check reads; most are only returned when selected.
pub const USER_SELECT: &str = "id,userPrincipalName,accountEnabled,mail,proxyAddresses,assignedLicenses,assignedPlans,userType,onPremisesSyncEnabled";

/// How long Entra keeps a deleted user restorable.
const RESTORE_WINDOW: Duration = Duration::from_secs(30 * 86_400);

/// Hex characters of the object id Entra puts in front of a deleted user's UPN.
const MANGLE_PREFIX_LEN: usize = 32;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct User {
    id: Option<String>,
    user_principal_name: Option<String>,
    account_enabled: Option<bool>,
    mail: Option<String>,
    proxy_addresses: Option<Vec<String>>,
    user_type: Option<String>,
    on_premises_sync_enabled: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeletedUser {
    id: Option<String>,
    user_principal_name: Option<String>,
    deleted_date_time: Option<String>,
}

/// Checks the user behind `address` (by `known_object_id` when given, else by the address
/// as its UPN). The outcome's `object_id` fact is the id to pass next time.
pub async fn identity(
    graph: &GraphClient,
    token: &Secret,
    tenant: &str,
    address: &EmailAddress,
    known_object_id: Option<&str>,
    now: Timestamp,
    deadline: Instant,
) -> Outcome {
    let target = address.to_string();
    let call = Call {
        token,
        tenant,
        deadline,
    };
    let mut evidence = HttpEvidence::default();
    let path = match known_object_id {
        Some(id) => {
            evidence.facts.insert("object_id".into(), id.to_owned());
            evidence
                .facts
                .insert("looked_up_by".into(), "object_id".into());
            format!("/users/{}?$select={USER_SELECT}", encode_segment(id))
        }
        None => {
            evidence
                .facts
                .insert("looked_up_by".into(), "user_principal_name".into());
            format!("{}?$select={USER_SELECT}", user_by_upn(&target))
        }
    };
    match graph.get_json::<User>(call, &path, &mut evidence).await {
        Ok(user) => judge(&target, user, evidence),
        Err(GraphError::NotFound { .. }) => match known_object_id {
            Some(id) => deleted_by_id(graph, call, &target, id, now, evidence).await,
            // The watched address may be an alias rather than the UPN: look for it among
            // the users' addresses before calling anyone gone.
            None => match by_address(graph, call, &target, &mut evidence).await {
                Ok(Some(user)) => judge(&target, user, evidence),
                Ok(None) => deleted_by_upn(graph, call, &target, now, evidence).await,
                Err(err) => failed(
                    &target,
                    &format!("no user with the UPN {target} (404), and the address search failed"),
                    &err,
                    evidence,
                ),
            },
        },
        Err(err @ GraphError::PermissionDenied { .. }) => failed(
            &target,
            "reading the user (is User.Read.All still consented?)",
            &err,
            evidence,
        ),
        Err(err) => failed(&target, "reading the user", &err, evidence),
    }
}

/// `/users/{upn}`; a UPN starting with `$` must be written `/users('$…')` (reference §3.2).
fn user_by_upn(upn: &str) -> String {
    if upn.starts_with('$') {
        format!("/users({})", encode_segment(&odata_string(upn)))
    } else {
        format!("/users/{}", encode_segment(upn))
    }
}

fn judge(target: &str, user: User, mut evidence: HttpEvidence) -> Outcome {
    let facts = &mut evidence.facts;
    if let Some(id) = &user.id {
        facts.insert("object_id".into(), id.clone());
    }
    if let Some(upn) = &user.user_principal_name {
        facts.insert("user_principal_name".into(), upn.clone());
    }
    if let Some(enabled) = user.account_enabled {
        facts.insert("account_enabled".into(), enabled.to_string());
    }
    if let Some(user_type) = &user.user_type {
        facts.insert("user_type".into(), user_type.clone());
    }
    if let Some(mail) = &user.mail {
        facts.insert("mail".into(), mail.clone());
    }
    let proxies = user.proxy_addresses.unwrap_or_default();
    facts.insert("proxy_addresses".into(), proxies.join(", "));
    if let Some(synced) = user.on_premises_sync_enabled {
        facts.insert("on_premises_sync_enabled".into(), synced.to_string());
    }
    let outcome = |reason: Reason, summary: String, evidence: HttpEvidence| Outcome {
        target: target.to_owned(),
        reason,
        summary,
        evidence,
    };
    let Some(enabled) = user.account_enabled else {
        return outcome(
            Reason::MalformedResponse,
            "the user was returned without accountEnabled although it was selected".into(),
            evidence,
        );
    };
    let upn = user.user_principal_name.as_deref().unwrap_or("?");
    if !enabled {
        return outcome(
            Reason::IdentityDisabled,
            format!("the account {upn} is disabled (accountEnabled false): sign-in fails"),
            evidence,
        );
    }
    let carries = user
        .mail
        .iter()
        .map(String::as_str)
        .chain(proxies.iter().filter_map(|proxy| smtp_address(proxy)))
        .any(|known| known.eq_ignore_ascii_case(target));
    if !carries {
        let mail = user.mail.as_deref().unwrap_or("none");
        let list = if proxies.is_empty() {
            "none".to_owned()
        } else {
            proxies.join(", ")
        };
        return outcome(
            Reason::AddressRemoved,
            format!(
                "{target} is no longer an address of {upn} (mail: {mail}; proxyAddresses: {list}): mail to it will bounce"
            ),
            evidence,
        );
    }
    outcome(
        Reason::IdentityOk,
        format!("{upn} exists, is enabled and carries {target}"),
        evidence,
    )
}

/// The address of an `smtp:`/`SMTP:` proxy address; other types (`x500:`, `sip:`) are not mail
/// addresses.
fn smtp_address(proxy: &str) -> Option<&str> {
    let (kind, address) = proxy.split_once(':')?;
    kind.eq_ignore_ascii_case("smtp").then_some(address)
}

async fn deleted_by_id(
    graph: &GraphClient,
    call: Call<'_>,
    target: &str,
    id: &str,
    now: Timestamp,
    mut evidence: HttpEvidence,
) -> Outcome {
    let path = format!("/directory/deletedItems/{}", encode_segment(id));
    match graph
        .get_json::<DeletedUser>(call, &path, &mut evidence)
        .await
    {
        Ok(deleted) => soft_deleted(target, deleted, now, evidence),
        Err(GraphError::NotFound { .. }) => Outcome {
            target: target.to_owned(),
            reason: Reason::IdentityNotFound,
            summary: format!(
                "user {id} not found (404) and not in deleted items: hard-deleted or never existed"
            ),
            evidence,
        },
        Err(err) => failed(
            target,
            &format!("user {id} not found (404), but deleted items could not be read"),
            &err,
            evidence,
        ),
    }
}

/// The user carrying `address` among its `proxyAddresses`, if exactly one does.
async fn by_address(
    graph: &GraphClient,
    call: Call<'_>,
    address: &str,
    evidence: &mut HttpEvidence,
) -> Result<Option<User>, GraphError> {
    let filter = format!(
        "proxyAddresses/any(x:x eq {})",
        odata_string(&format!("smtp:{address}"))
    );
    let path = format!(
        "/users?$filter={}&$count=true&$select={USER_SELECT}",
        encode_query_value(&filter)
    );
    let mut users = graph
        .get_all_eventual::<User>(call, &path, evidence)
        .await?;
    if users.len() == 1 {
        evidence
            .facts
            .insert("looked_up_by".into(), "proxy_address".into());
        Ok(users.pop())
    } else {
        if users.len() > 1 {
            evidence.findings.push(format!(
                "{} users carry {address}; none is taken as the watched identity",
                users.len()
            ));
        }
        Ok(None)
    }
}

async fn deleted_by_upn(
    graph: &GraphClient,
    call: Call<'_>,
    target: &str,
    now: Timestamp,
    mut evidence: HttpEvidence,
) -> Outcome {
    let filter = format!("endswith(userPrincipalName,{})", odata_string(target));
    let path = format!(
        "/directory/deletedItems/microsoft.graph.user?$filter={}&$count=true&$select=id,displayName,userPrincipalName,deletedDateTime",
        encode_query_value(&filter)
    );
    match graph
        .get_all_eventual::<DeletedUser>(call, &path, &mut evidence)
        .await
    {
        Ok(found) => {
            // endswith also matches `xalice@…` for `alice@…`: only the mangled form (32 hex
            // characters of the id, then the UPN) or the UPN itself is this user. Several
            // deletions of the same UPN: the latest one is the user we watched.
            let latest = found
                .into_iter()
                .filter(|user| {
                    user.user_principal_name
                        .as_deref()
                        .is_some_and(|upn| is_deleted_form_of(upn, target))
                })
                .max_by_key(|user| {
                    user.deleted_date_time
                        .as_deref()
                        .and_then(Timestamp::parse_utc)
                });
            match latest {
                Some(user) => soft_deleted(target, user, now, evidence),
                None => Outcome {
                    target: target.to_owned(),
                    reason: Reason::IdentityNotFound,
                    summary: format!(
                        "no user with the UPN {target} (404) and none in deleted items: hard-deleted or never existed"
                    ),
                    evidence,
                },
            }
        }
        Err(err) => failed(
            target,
            &format!(
                "no user with the UPN {target} (404), but deleted items could not be searched"
            ),
            &err,
            evidence,
        ),
    }
}

fn is_deleted_form_of(upn: &str, address: &str) -> bool {
    if upn.eq_ignore_ascii_case(address) {
        return true;
    }
    upn.len() == MANGLE_PREFIX_LEN + address.len()
        && upn.is_char_boundary(MANGLE_PREFIX_LEN)
        && upn[..MANGLE_PREFIX_LEN]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
        && upn[MANGLE_PREFIX_LEN..].eq_ignore_ascii_case(address)
}

fn soft_deleted(
    target: &str,
    deleted: DeletedUser,
    now: Timestamp,
    mut evidence: HttpEvidence,
) -> Outcome {
    let facts = &mut evidence.facts;
    if let Some(id) = &deleted.id {
        facts.insert("object_id".into(), id.clone());
    }
    if let Some(upn) = &deleted.user_principal_name {
        facts.insert("deleted_user_principal_name".into(), upn.clone());
    }
    let at = deleted
        .deleted_date_time
        .as_deref()
        .and_then(Timestamp::parse_utc);
    let summary = match at {
        Some(at) => {
            let until = at.plus(RESTORE_WINDOW);
            facts.insert("deleted_at".into(), at.to_string());
            facts.insert("restorable_until".into(), until.to_string());
            let left = now.days_until(until);
            let tail = if left >= 0 {
                format!(" ({left} days left)")
            } else {
                " (the window has passed; it may be purged any moment)".to_owned()
            };
            format!("soft-deleted at {at}, restorable until {until}{tail}")
        }
        None => "soft-deleted (deleted items give no deletion time), restorable for up to 30 days"
            .to_owned(),
    };
    Outcome {
        target: target.to_owned(),
        reason: Reason::IdentityDeleted,
        summary,
        evidence,
    }
}

/// For [`crate::fuzzing`]: what the check makes of one answer, without the request.
pub(crate) fn judge_for_fuzzing(
    answer: crate::fuzzing::Answer,
    reply: &crate::http::Reply,
    target: &str,
    now: Timestamp,
) -> Result<Vec<Outcome>, GraphError> {
    use crate::fuzzing::Answer;
    let mut evidence = HttpEvidence::default();
    Ok(match answer {
        Answer::User => vec![judge(
            target,
            super::decode::<User>(reply, &mut evidence)?,
            evidence,
        )],
        Answer::UserPage => super::decode_page::<User>(reply, &mut evidence)?
            .into_iter()
            .map(|user| judge(target, user, HttpEvidence::default()))
            .collect(),
        Answer::DeletedUser => vec![soft_deleted(
            target,
            super::decode::<DeletedUser>(reply, &mut evidence)?,
            now,
            evidence,
        )],
        Answer::DeletedUserPage => super::decode_page::<DeletedUser>(reply, &mut evidence)?
            .into_iter()
            .filter(|user| {
                user.user_principal_name
                    .as_deref()
                    .is_some_and(|upn| is_deleted_form_of(upn, target))
            })
            .map(|user| soft_deleted(target, user, now, HttpEvidence::default()))
            .collect(),
        _ => Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_smtp_proxies_are_addresses() {
        assert_eq!(smtp_address("SMTP:a@b.com"), Some("a@b.com"));
        assert_eq!(smtp_address("smtp:a@b.com"), Some("a@b.com"));
        assert_eq!(smtp_address("x500:/o=ExchangeLabs"), None);
        assert_eq!(smtp_address("a@b.com"), None);
    }

    #[test]
    fn the_mangled_upn_is_recognised_and_lookalikes_are_not() {
        let address = "admin@contoso.com";
        assert!(is_deleted_form_of(
            "87d349ed00004000800050f2406dee5bAdmin@Contoso.com",
            address
        ));
        assert!(is_deleted_form_of("admin@contoso.com", address));
        assert!(!is_deleted_form_of("superadmin@contoso.com", address));
        assert!(!is_deleted_form_of(
            "87d349ed00004000800050f2406dee5zadmin@contoso.com",
            address
        ));
    }

    #[test]
    fn dollar_upns_use_the_key_syntax() {
        assert_eq!(
            user_by_upn("$svc@contoso.com"),
            "/users('$svc@contoso.com')"
        );
        assert_eq!(user_by_upn("alice@contoso.com"), "/users/alice@contoso.com");
    }
}
