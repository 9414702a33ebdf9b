//! One entry point for the fuzzer (`fuzz/fuzz_targets/graph_json.rs`, docs/fuzzing.md): every
//! JSON answer the HTTP checks read from Entra ID, Graph and RDAP, decoded and judged exactly
//! as the checks do after their request, without a network. The daemon never calls it.
//!
//! It is public because a fuzz target can only reach what the crate exports, while the answer
//! types are private to their check modules (and should stay so); each module lends its own
//! `judge_for_fuzzing`, so what is fuzzed is the production decoding and judging code, not a
//! copy of it.

use tw_core::config::LicenceSettings;
use tw_core::{DomainName, EmailAddress, HttpEvidence, HttpExchange, Timestamp};

use crate::graph::GraphError;
use crate::http::Reply;
use crate::{aadsts, Outcome};

/// Which answer a body is, by the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `GET /users/{id}`.
    User,
    /// `GET /users?$filter=proxyAddresses/any(…)` (one page).
    UserPage,
    /// `GET /directory/deletedItems/{id}`.
    DeletedUser,
    /// `GET /directory/deletedItems/microsoft.graph.user?$filter=endswith(…)` (one page).
    DeletedUserPage,
    /// `GET /subscribedSkus`.
    SkuPage,
    /// `GET /directory/subscriptions`.
    SubscriptionPage,
    /// `GET /users/{id}/licenseDetails`.
    LicenseDetailPage,
    /// `GET /users/{id}?$select=assignedPlans`.
    UserPlans,
    /// `GET /roleManagement/directory/roleAssignments?…&$expand=principal`.
    RoleAssignmentPage,
    /// `GET /admin/serviceAnnouncement/healthOverviews`.
    HealthOverviewPage,
    /// `POST /{tenant}/oauth2/v2.0/token` (200).
    Token,
    /// `GET /{domain}/v2.0/.well-known/openid-configuration`.
    OpenIdConfiguration,
    /// `GET /common/userrealm/{address}?api-version=2.1`.
    UserRealm,
    /// `GET {rdap}/domain/{domain}`.
    RdapDomain,
    /// Any error answer: the OAuth error shape of the login endpoints or Graph's OData error.
    ErrorBody,
}

impl Answer {
    pub const ALL: [Answer; 15] = [
        Answer::User,
        Answer::UserPage,
        Answer::DeletedUser,
        Answer::DeletedUserPage,
        Answer::SkuPage,
        Answer::SubscriptionPage,
        Answer::LicenseDetailPage,
        Answer::UserPlans,
        Answer::RoleAssignmentPage,
        Answer::HealthOverviewPage,
        Answer::Token,
        Answer::OpenIdConfiguration,
        Answer::UserRealm,
        Answer::RdapDomain,
        Answer::ErrorBody,
    ];
}

/// "Now" for the judges that count days: fixed, so that a crash reproduces
/// (2026-11-23T12:00:00Z).
pub const NOW: Timestamp = Timestamp(1_795_435_200_000);

/// The watched address, tenant and domain the judges compare answers with.
pub const ADDRESS: &str = "admin@contoso.example";
pub const TENANT: &str = "contoso";
pub const DOMAIN: &str = "contoso.example";

/// Decodes `body` as `answer` and judges it as the check does: the outcomes, or the text the
/// check records when the body is not that answer. Never panics, whatever `body` holds (that
/// is what the fuzzer checks).
pub fn decode_for_fuzzing(answer: Answer, body: &[u8]) -> Result<Vec<Outcome>, String> {
    let reply = Reply {
        status: if answer == Answer::ErrorBody {
            400
        } else {
            200
        },
        headers: reqwest::header::HeaderMap::new(),
        body: body.to_vec(),
        retry_after: None,
    };
    let graph = |result: Result<Vec<Outcome>, GraphError>| result.map_err(|err| err.to_string());
    let settings = LicenceSettings {
        renewal_warn_days: vec![30, 7],
        manual_renewal: vec!["ENTERPRISEPACK".to_owned()],
    };
    match answer {
        Answer::User | Answer::UserPage | Answer::DeletedUser | Answer::DeletedUserPage => graph(
            crate::graph::identity::judge_for_fuzzing(answer, &reply, ADDRESS, NOW),
        ),
        Answer::SkuPage
        | Answer::SubscriptionPage
        | Answer::LicenseDetailPage
        | Answer::UserPlans => graph(crate::graph::licence::judge_for_fuzzing(
            answer, &reply, TENANT, &settings, NOW,
        )),
        Answer::RoleAssignmentPage => {
            graph(crate::graph::admins::judge_for_fuzzing(&reply, TENANT))
        }
        Answer::HealthOverviewPage => {
            graph(crate::graph::health::judge_for_fuzzing(&reply, TENANT))
        }
        Answer::Token => crate::token::judge_for_fuzzing(&reply, NOW),
        Answer::OpenIdConfiguration => crate::discovery::judge_for_fuzzing(&reply, DOMAIN),
        Answer::UserRealm => {
            let address = EmailAddress::parse(ADDRESS).map_err(|err| err.to_string())?;
            crate::realm::judge_for_fuzzing(&reply, &address)
        }
        Answer::RdapDomain => {
            let domain = DomainName::parse(DOMAIN).map_err(|err| err.to_string())?;
            crate::rdap::judge_for_fuzzing(&reply, &domain, NOW)
        }
        Answer::ErrorBody => {
            let mut record = HttpExchange {
                status: Some(reply.status),
                ..HttpExchange::default()
            };
            crate::http::read_error_body(&reply.body, &mut record);
            let (reason, meaning) = aadsts::classify(reply.status, &record.aadsts);
            let summary = format!(
                "{meaning} ({}, {:?})",
                aadsts::codes_text(&record.aadsts),
                record.error_code
            );
            Ok(vec![Outcome {
                target: TENANT.to_owned(),
                reason,
                summary,
                evidence: HttpEvidence {
                    exchanges: vec![record],
                    ..HttpEvidence::default()
                },
            }])
        }
    }
}

#[cfg(test)]
mod tests {
    use tw_core::Reason;

    use super::*;

    #[test]
    fn a_fixed_now_reads_as_its_date() {
        assert_eq!(NOW.to_string(), "2026-11-23T12:00:00.000Z");
    }

    #[test]
    fn real_shaped_answers_are_judged_like_the_checks_judge_them() {
        let cases: [(Answer, &str, Reason); 6] = [
            (
                Answer::User,
                r#"{"id":"87d349ed-0000-4000-8000-5f2406dee5bd","userPrincipalName":"admin@contoso.example","accountEnabled":true,"mail":"admin@contoso.example","proxyAddresses":["SMTP:admin@contoso.example"]}"#,
                Reason::IdentityOk,
            ),
            (
                Answer::DeletedUser,
                r#"{"id":"87d349ed-0000-4000-8000-5f2406dee5bd","userPrincipalName":"87d349ed00004000800050f2406dee5badmin@contoso.example","deletedDateTime":"2026-11-20T09:00:00Z"}"#,
                Reason::IdentityDeleted,
            ),
            (
                Answer::SkuPage,
                r#"{"value":[{"skuId":"6fd2c87f-b296-42f0-b197-1e91e994b900","skuPartNumber":"ENTERPRISEPACK","capabilityStatus":"Suspended","consumedUnits":5,"prepaidUnits":{"enabled":0,"suspended":10,"warning":0,"lockedOut":0}}]}"#,
                Reason::LicenceSuspended,
            ),
            (
                Answer::Token,
                r#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAiOiJKV1Qi.e30.sig"}"#,
                Reason::TokenIssued,
            ),
            (
                Answer::ErrorBody,
                r#"{"error":"invalid_request","error_description":"AADSTS90002: Tenant 'x' not found.","error_codes":[90002],"timestamp":"2026-11-23 12:00:00Z","trace_id":"t","correlation_id":"c"}"#,
                Reason::TenantUnknown,
            ),
            (
                Answer::HealthOverviewPage,
                r#"{"value":[{"service":"Exchange Online","status":"serviceOperational","id":"Exchange"},{"service":"Microsoft Entra","status":"serviceDegradation","id":"OrgLiveID"}]}"#,
                Reason::ServiceDegraded,
            ),
        ];
        for (answer, body, reason) in cases {
            let outcomes = decode_for_fuzzing(answer, body.as_bytes()).unwrap();
            assert_eq!(outcomes.len(), 1, "{answer:?}");
            assert_eq!(outcomes[0].reason, reason, "{answer:?}: {outcomes:?}");
        }
        assert!(!decode_for_fuzzing(Answer::Token, br#"{"access_token":"eyJ0eXAiOiJKV1Qi.e30.sig","token_type":"Bearer","expires_in":3599}"#)
            .unwrap()[0]
            .summary
            .contains("eyJ0eXAi"));
    }

    #[test]
    fn a_body_that_is_not_the_answer_is_the_checks_error_text() {
        for answer in Answer::ALL {
            match decode_for_fuzzing(answer, b"<html>") {
                Err(text) => assert!(text.contains("invalid JSON"), "{answer:?}: {text}"),
                Ok(outcomes) => assert_eq!(answer, Answer::ErrorBody, "{outcomes:?}"),
            }
        }
    }
}
