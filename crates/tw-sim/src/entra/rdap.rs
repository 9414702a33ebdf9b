//! The simulated RDAP side: an RFC 9224 bootstrap file (`/dns.json`) that points every
//! configured TLD at this listener, and RFC 9083 domain objects under `/rdap/domain/{name}`
//! (reference §5).
//!
//! One listener plays both IANA and the registry so that a probe's bootstrap-then-query path
//! is exercised end to end, including a TLD that drops out of the bootstrap file.

use std::collections::BTreeSet;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::https::{self, Handled};
use super::stamp::{self, Utc};
use super::state::Shared;

pub(super) const CONTENT_TYPE: &str = "application/rdap+json";

pub(super) async fn handle(shared: &Shared, request: Request) -> Handled {
    if request.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed").into();
    }
    let path = request.uri().path().to_owned();
    if path == "/dns.json" {
        return bootstrap(shared).into();
    }
    match path.strip_prefix("/rdap/domain/") {
        Some(name) if !name.is_empty() && !name.contains('/') => {
            domain(shared, &stamp::percent_decode(name)).into()
        }
        _ => error(StatusCode::BAD_REQUEST, "Bad Request").into(),
    }
}

fn bootstrap(shared: &Shared) -> Response {
    let tlds: BTreeSet<String> = {
        let state = shared.state.lock();
        state
            .rdap
            .keys()
            .filter_map(|domain| domain.rsplit('.').next())
            .map(str::to_owned)
            .filter(|tld| !state.removed_tlds.contains(tld))
            .collect()
    };
    let services = if tlds.is_empty() {
        json!([])
    } else {
        json!([[tlds, [format!("{}/rdap/", shared.rdap_origin)]]])
    };
    let body = json!({
        "version": "1.0",
        "publication": Utc::now().rfc3339(),
        "description": "RDAP bootstrap file for Domain Name System registrations (tw-sim)",
        "services": services,
    });
    https::json(StatusCode::OK, "application/json", &body)
}

fn domain(shared: &Shared, name: &str) -> Response {
    let key = name.trim_end_matches('.').to_ascii_lowercase();
    let Some(record) = shared.state.lock().rdap.get(&key).cloned() else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut events =
        vec![json!({"eventAction": "registration", "eventDate": "2015-08-14T04:00:00Z"})];
    if let Some(expiration) = &record.expiration {
        events.push(json!({"eventAction": "expiration", "eventDate": expiration}));
    }
    events.push(json!({"eventAction": "last changed", "eventDate": "2024-08-14T07:01:44Z"}));
    events.push(
        json!({"eventAction": "last update of RDAP database", "eventDate": Utc::now().rfc3339()}),
    );
    let body = json!({
        "rdapConformance": ["rdap_level_0", "icann_rdap_response_profile_0", "icann_rdap_technical_implementation_guide_0"],
        "objectClassName": "domain",
        "handle": format!("{}_DOMAIN-TWSIM", key.replace('.', "_").to_ascii_uppercase()),
        "ldhName": key.to_ascii_uppercase(),
        "status": record.status,
        "secureDNS": {"delegationSigned": false},
        "events": events,
        "nameservers": [
            {"objectClassName": "nameserver", "ldhName": "NS1.EXAMPLE-DNS.NET"},
            {"objectClassName": "nameserver", "ldhName": "NS2.EXAMPLE-DNS.NET"}
        ],
        "entities": [{
            "objectClassName": "entity",
            "roles": ["registrar"],
            "handle": "9999",
            "vcardArray": ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", record.registrar]]]
        }],
    });
    https::json(StatusCode::OK, CONTENT_TYPE, &body)
}

/// RFC 9083 §6 error object.
pub(super) fn error(status: StatusCode, title: &str) -> Response {
    https::json(
        status,
        CONTENT_TYPE,
        &json!({"errorCode": status.as_u16(), "title": title, "description": [format!("{title} (tw-sim)")]}),
    )
}
