//! Drives the Entra/Graph/RDAP simulator over real loopback HTTPS with reqwest, the way the
//! probes do, so the fake is held to the reference (field names, status codes, error shapes,
//! headers, assertion verification, paging, faults) before probes are tested against it.

// clippy's allow-unwrap-in-tests covers `#[test]` functions but not the helpers beside them; in
// this file every function is test code, and a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Client, Response, StatusCode};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio_util::sync::{CancellationToken, DropGuard};
use tw_sim::entra::{
    EntraSim, Fault, FaultKind, SimAdmin, SimCredential, SimPlan, SimRdap, SimServer, SimSku,
    SimSubscription, SimTenant, SimUser, SimUserLicense, E3_SKU_ID, EXCHANGE_S_ENTERPRISE_ID,
    GLOBAL_ADMIN_ROLE_ID, TEST_APP_CERT_PEM, TEST_APP_KEY_PEM, TEST_OTHER_CERT_PEM,
    TEST_OTHER_KEY_PEM,
};
use tw_sim::tls::TestCa;

const TID: &str = "2f9a3c10-0000-4000-8000-00000000c0de";
const OTHER_TID: &str = "7b1e0d55-0000-4000-8000-0000000beef0";
const CLIENT_ID: &str = "6731de76-0000-4000-8000-00000000a991";
const SECRET: &str = "sim-secret-value~1";
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct Fixture {
    sim: EntraSim,
    http: Client,
    _stop: DropGuard,
}

async fn start() -> Fixture {
    let ca = TestCa::generate().unwrap();
    let shutdown = CancellationToken::new();
    let sim = EntraSim::start(&ca, shutdown.clone()).await.unwrap();
    let http = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_cert_pem.as_bytes()).unwrap())
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    sim.add_tenant(SimTenant::managed(
        TID,
        "Contoso",
        &["contoso.com", "contoso.onmicrosoft.com"],
    ));
    sim.add_tenant(SimTenant::managed(OTHER_TID, "Fabrikam", &["fabrikam.com"]));
    sim.register_app(TID, CLIENT_ID, SimCredential::Secret(SECRET.to_owned()));
    sim.register_app(TID, CLIENT_ID, SimCredential::test_app_certificate());
    Fixture {
        sim,
        http,
        _stop: shutdown.drop_guard(),
    }
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

/// The JSON body of a GET.
async fn response_json(f: &Fixture, url: &str) -> Value {
    f.http.get(url).send().await.unwrap().json().await.unwrap()
}

fn discovery_url(f: &Fixture, tenant: &str) -> String {
    format!(
        "{}/{tenant}/v2.0/.well-known/openid-configuration",
        f.sim.login_url()
    )
}

fn token_url(f: &Fixture, tenant: &str) -> String {
    format!("{}/{tenant}/oauth2/v2.0/token", f.sim.login_url())
}

async fn token_with_secret(f: &Fixture, tenant: &str, client_id: &str, secret: &str) -> Response {
    f.http
        .post(token_url(f, tenant))
        .header("client-request-id", "0d1e2f30-0000-4000-8000-0000000c1e47")
        .form(&[
            ("client_id", client_id),
            ("scope", GRAPH_SCOPE),
            ("client_secret", secret),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
}

async fn token_with_assertion(f: &Fixture, tenant: &str, assertion: &str) -> Response {
    f.http
        .post(token_url(f, tenant))
        .form(&[
            ("client_id", CLIENT_ID),
            ("scope", GRAPH_SCOPE),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
}

fn now_s() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn thumbprint(cert_pem: &str, sha256: bool) -> String {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let algorithm = if sha256 {
        &ring::digest::SHA256
    } else {
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY
    };
    URL_SAFE_NO_PAD.encode(ring::digest::digest(algorithm, der.as_ref()).as_ref())
}

struct Assertion<'a> {
    alg: Algorithm,
    key_pem: &'a str,
    /// The certificate whose thumbprint goes into the header.
    cert_pem: &'a str,
    legacy_x5t: bool,
    aud: String,
    nbf: i64,
    exp: i64,
}

impl Assertion<'_> {
    fn valid(f: &Fixture, alg: Algorithm) -> Assertion<'static> {
        Assertion {
            alg,
            key_pem: TEST_APP_KEY_PEM,
            cert_pem: TEST_APP_CERT_PEM,
            legacy_x5t: false,
            aud: token_url(f, TID),
            nbf: now_s() - 5,
            exp: now_s() + 600,
        }
    }

    fn sign(&self) -> String {
        let mut header = Header::new(self.alg);
        header.typ = Some("JWT".to_owned());
        if self.legacy_x5t {
            header.x5t = Some(thumbprint(self.cert_pem, false));
        } else {
            header.x5t_s256 = Some(thumbprint(self.cert_pem, true));
        }
        let claims = json!({
            "aud": self.aud, "iss": CLIENT_ID, "sub": CLIENT_ID,
            "jti": "5e1f0000-0000-4000-8000-00000000a55e",
            "nbf": self.nbf, "exp": self.exp, "iat": self.nbf,
        });
        let key = EncodingKey::from_rsa_pem(self.key_pem.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }
}

/// Asserts an Entra OAuth error body and returns it.
async fn assert_login_error(response: Response, status: u16, error: &str, code: u32) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let request_id = header(&response, "x-ms-request-id").expect("x-ms-request-id");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    assert_eq!(body["trace_id"], request_id.as_str());
    let description = body["error_description"].as_str().unwrap();
    assert!(
        description.starts_with(&format!("AADSTS{code}: ")),
        "{description}"
    );
    assert!(description.contains("\r\nTrace ID: "), "{description}");
    assert!(
        description.contains("\r\nCorrelation ID: "),
        "{description}"
    );
    assert!(description.contains("\r\nTimestamp: "), "{description}");
    for field in ["timestamp", "correlation_id", "error_uri"] {
        assert!(body[field].is_string(), "{field} missing in {body}");
    }
    body
}

// ---------------------------------------------------------------------------------------------
// Discovery and realm

#[tokio::test]
async fn discovery_by_tenant_id_and_domain() {
    let f = start().await;
    let response = f.http.get(discovery_url(&f, TID)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("max-age=86400, private")
    );
    assert!(header(&response, "x-ms-request-id").is_some());
    let body: Value = response.json().await.unwrap();
    let login = f.sim.login_url();
    assert_eq!(body["issuer"], format!("{login}/{TID}/v2.0"));
    assert_eq!(
        body["token_endpoint"],
        format!("{login}/{TID}/oauth2/v2.0/token")
    );
    assert_eq!(body["tenant_region_scope"], "EU");
    assert_eq!(body["cloud_instance_name"], "microsoftonline.com");
    assert_eq!(body["msgraph_host"], "graph.microsoft.com");

    let by_domain = response_json(&f, &discovery_url(&f, "CONTOSO.com")).await;
    assert_eq!(by_domain["issuer"], format!("{login}/{TID}/v2.0"));
    let fabrikam = response_json(&f, &discovery_url(&f, "fabrikam.com")).await;
    assert_eq!(fabrikam["issuer"], format!("{login}/{OTHER_TID}/v2.0"));
}

/// The request log can be turned off for load runs: requests are still answered, not kept.
#[tokio::test]
async fn the_request_log_keeps_nothing_while_off() {
    let f = start().await;
    f.sim.set_request_log(false);
    let body = response_json(&f, &discovery_url(&f, TID)).await;
    assert_eq!(body["issuer"], format!("{}/{TID}/v2.0", f.sim.login_url()));
    assert!(f.sim.requests().is_empty());
    f.sim.set_request_log(true);
    response_json(&f, &discovery_url(&f, TID)).await;
    assert_eq!(f.sim.requests().len(), 1);
}

#[tokio::test]
async fn discovery_of_unknown_removed_and_moved() {
    let f = start().await;
    let response = f
        .http
        .get(discovery_url(&f, "contoso-gone.com"))
        .header("client-request-id", "c1b9b8e2-0000-4000-8000-00006fc79269")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("max-age=86400, private")
    );
    let body = assert_login_error(response, 400, "invalid_tenant", 90002).await;
    assert_eq!(
        body["correlation_id"],
        "c1b9b8e2-0000-4000-8000-00006fc79269"
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("'contoso-gone.com'"));

    f.sim.move_domain("contoso.com", OTHER_TID);
    let moved = response_json(&f, &discovery_url(&f, "contoso.com")).await;
    assert_eq!(
        moved["issuer"],
        format!("{}/{OTHER_TID}/v2.0", f.sim.login_url())
    );

    f.sim.remove_tenant(TID);
    let by_id = f.http.get(discovery_url(&f, TID)).send().await.unwrap();
    assert_login_error(by_id, 400, "invalid_tenant", 90002).await;
    let by_domain = f
        .http
        .get(discovery_url(&f, "contoso.onmicrosoft.com"))
        .send()
        .await
        .unwrap();
    assert_login_error(by_domain, 400, "invalid_tenant", 90002).await;
}

#[tokio::test]
async fn user_realm_managed_federated_unknown() {
    let f = start().await;
    let realm = |login: &str| {
        format!(
            "{}/common/userrealm/{login}?api-version=2.1",
            f.sim.login_url()
        )
    };
    let managed = response_json(&f, &realm("probe@contoso.com")).await;
    assert_eq!(managed["NameSpaceType"], "Managed");
    assert_eq!(managed["Login"], "probe@contoso.com");
    assert_eq!(managed["DomainName"], "contoso.com");
    assert_eq!(managed["FederationBrandName"], "Contoso");
    assert_eq!(managed["cloud_instance_name"], "microsoftonline.com");
    assert!(managed.get("AuthURL").is_none());

    f.sim.set_namespace_type("contoso.com", "Federated");
    let federated = response_json(&f, &realm("probe@contoso.com")).await;
    assert_eq!(federated["NameSpaceType"], "Federated");
    assert!(federated["AuthURL"]
        .as_str()
        .unwrap()
        .contains("username=probe%40contoso.com"));
    assert_eq!(federated["federation_protocol"], "WSTrust");

    let unknown = response_json(&f, &realm("probe@unknown-example.com")).await;
    assert_eq!(
        unknown,
        json!({"NameSpaceType": "Unknown", "Login": "probe@unknown-example.com",
               "cloud_instance_name": "microsoftonline.com"})
    );
    f.sim.set_namespace_type("fabrikam.com", "Unknown");
    let now_unknown = response_json(&f, &realm("probe@fabrikam.com")).await;
    assert_eq!(now_unknown["NameSpaceType"], "Unknown");
}

// ---------------------------------------------------------------------------------------------
// Token endpoint

#[tokio::test]
async fn token_with_client_secret_and_graph_use() {
    let f = start().await;
    let response = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store, no-cache")
    );
    assert!(header(&response, "x-ms-request-id").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let token = body["access_token"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());

    // By domain, too.
    let by_domain = token_with_secret(&f, "contoso.com", CLIENT_ID, SECRET).await;
    assert_eq!(by_domain.status(), StatusCode::OK);

    let log = f.sim.requests();
    let last = log.last().unwrap();
    assert_eq!(last.server, SimServer::Login);
    assert_eq!(last.method, "POST");
    assert_eq!(last.path, "/contoso.com/oauth2/v2.0/token");
    assert!(last.authorized);
    assert_eq!(last.status, 200);
    assert_eq!(
        last.client_request_id.as_deref(),
        Some("0d1e2f30-0000-4000-8000-0000000c1e47")
    );
    assert!(!format!("{log:?}").contains(SECRET));
}

#[tokio::test]
async fn token_errors_for_secret_app_and_tenant() {
    let f = start().await;
    let wrong = token_with_secret(&f, TID, CLIENT_ID, "not-the-secret").await;
    let body = assert_login_error(wrong, 401, "invalid_client", 7000215).await;
    // Entra adopts the client-request-id as correlation id.
    assert_eq!(
        body["correlation_id"],
        "0d1e2f30-0000-4000-8000-0000000c1e47"
    );
    assert!(!f.sim.requests().last().unwrap().authorized);

    let unregistered = token_with_secret(&f, OTHER_TID, CLIENT_ID, SECRET).await;
    assert_login_error(unregistered, 400, "unauthorized_client", 700016).await;

    let unknown = token_with_secret(&f, "nowhere.example", CLIENT_ID, SECRET).await;
    assert_login_error(unknown, 400, "invalid_request", 90002).await;

    f.sim.remove_tenant(TID);
    let removed = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_login_error(removed, 400, "invalid_request", 90002).await;
}

#[tokio::test]
async fn forced_token_errors_and_lifetime() {
    let f = start().await;
    f.sim.set_token_error(TID, Some(7000222));
    let expired = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_login_error(expired, 401, "invalid_client", 7000222).await;
    f.sim.set_token_error(TID, Some(90055));
    let throttled = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_eq!(header(&throttled, "retry-after"), None);
    assert_login_error(throttled, 400, "temporarily_unavailable", 90055).await;
    f.sim.set_token_error(TID, Some(53003));
    let blocked = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_login_error(blocked, 400, "invalid_grant", 53003).await;

    f.sim.set_token_error(TID, None);
    f.sim.set_token_lifetime(60);
    let ok: Value = token_with_secret(&f, TID, CLIENT_ID, SECRET)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ok["expires_in"], 60);
}

#[tokio::test]
async fn token_with_rs256_and_ps256_assertions() {
    let f = start().await;
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let assertion = Assertion::valid(&f, alg).sign();
        let response = token_with_assertion(&f, TID, &assertion).await;
        assert_eq!(response.status(), StatusCode::OK, "{alg:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert!(f.sim.requests().last().unwrap().authorized);
    }
    let legacy = Assertion {
        legacy_x5t: true,
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, TID, &legacy.sign()).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn rejected_assertions() {
    let f = start().await;
    // A key the simulator never saw, under its own thumbprint: the key is not found.
    let unregistered = Assertion {
        key_pem: TEST_OTHER_KEY_PEM,
        cert_pem: TEST_OTHER_CERT_PEM,
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, TID, &unregistered.sign()).await;
    assert_login_error(response, 401, "invalid_client", 700027).await;

    // The registered thumbprint but signed with another key: the signature fails.
    let forged = Assertion {
        key_pem: TEST_OTHER_KEY_PEM,
        ..Assertion::valid(&f, Algorithm::PS256)
    };
    let response = token_with_assertion(&f, TID, &forged.sign()).await;
    assert_login_error(response, 401, "invalid_client", 700027).await;

    let stale = Assertion {
        nbf: now_s() - 1200,
        exp: now_s() - 600,
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, TID, &stale.sign()).await;
    assert_login_error(response, 400, "invalid_client", 700024).await;

    let early = Assertion {
        nbf: now_s() + 600,
        exp: now_s() + 1200,
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, TID, &early.sign()).await;
    assert_login_error(response, 400, "invalid_client", 700024).await;

    let wrong_cloud = Assertion {
        aud: format!("https://login.microsoftonline.us/{TID}/oauth2/v2.0/token"),
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, TID, &wrong_cloud.sign()).await;
    assert_login_error(response, 400, "invalid_client", 700023).await;

    let response = token_with_assertion(&f, TID, "not.a.jwt").await;
    assert_login_error(response, 400, "invalid_request", 50027).await;
    assert!(f.sim.requests().iter().all(|request| !request.authorized));
}

// ---------------------------------------------------------------------------------------------
// Graph

#[tokio::test]
async fn graph_refuses_missing_unknown_and_expired_bearers() {
    let f = start().await;
    let url = format!("{}/v1.0/users/admin@contoso.com", f.sim.graph_url());
    let response = f
        .http
        .get(&url)
        .header("client-request-id", "77777777-0000-4000-8000-000000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(header(&response, "www-authenticate")
        .unwrap()
        .starts_with("Bearer "));
    let request_id = header(&response, "request-id").unwrap();
    assert_eq!(
        header(&response, "client-request-id").as_deref(),
        Some("77777777-0000-4000-8000-000000000001")
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    assert_eq!(
        body["error"]["innerError"]["request-id"],
        request_id.as_str()
    );
    assert_eq!(
        body["error"]["innerError"]["client-request-id"],
        "77777777-0000-4000-8000-000000000001"
    );
    assert!(body["error"]["innerError"]["date"].is_string());

    let forged = f.http.get(&url).bearer_auth("forged").send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    f.sim.set_token_lifetime(0);
    let expired = f.sim.issue_token(TID);
    let response = f.http.get(&url).bearer_auth(expired).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let requests = f.sim.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests
        .iter()
        .all(|request| request.server == SimServer::Graph && !request.authorized));
}

const ADMIN_ID: &str = "87d349ed-0000-4000-8000-5f2406dee5bd";
const USER_SELECT: &str = "id,userPrincipalName,accountEnabled,mail,proxyAddresses,assignedLicenses,assignedPlans,licenseAssignmentStates,userType,onPremisesSyncEnabled";

/// A GET on Graph with a bearer of `tenant`; returns status, headers' request ids and body.
async fn graph_get(f: &Fixture, tenant: &str, path: &str) -> (u16, Value) {
    graph_get_with(f, &f.sim.issue_token(tenant), path, &[]).await
}

async fn graph_get_with(
    f: &Fixture,
    token: &str,
    path_or_url: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let url = if path_or_url.starts_with("https://") {
        path_or_url.to_owned()
    } else {
        format!("{}/v1.0{path_or_url}", f.sim.graph_url())
    };
    let mut request = f.http.get(url).bearer_auth(token);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    assert!(header(&response, "request-id").is_some());
    assert!(header(&response, "client-request-id").is_some());
    assert!(header(&response, "content-type")
        .unwrap()
        .starts_with("application/json"));
    (status, response.json().await.unwrap())
}

fn assert_graph_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string());
    for field in ["date", "request-id", "client-request-id"] {
        assert!(body["error"]["innerError"][field].is_string(), "{body}");
    }
}

#[tokio::test]
async fn graph_user_by_id_and_upn() {
    let f = start().await;
    f.sim
        .add_user(TID, SimUser::licensed(ADMIN_ID, "admin@contoso.com"));
    let (status, user) =
        graph_get(&f, TID, &format!("/users/{ADMIN_ID}?$select={USER_SELECT}")).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["id"], ADMIN_ID);
    assert_eq!(user["userPrincipalName"], "admin@contoso.com");
    assert_eq!(user["accountEnabled"], true);
    assert_eq!(user["mail"], "admin@contoso.com");
    assert_eq!(user["proxyAddresses"], json!(["SMTP:admin@contoso.com"]));
    assert_eq!(user["userType"], "Member");
    assert_eq!(user["onPremisesSyncEnabled"], Value::Null);
    assert_eq!(
        user["assignedLicenses"],
        json!([{"disabledPlans": [], "skuId": E3_SKU_ID}])
    );
    let exchange = user["assignedPlans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plan| plan["servicePlanId"] == EXCHANGE_S_ENTERPRISE_ID)
        .unwrap()
        .clone();
    assert_eq!(exchange["capabilityStatus"], "Enabled");
    assert_eq!(exchange["service"], "exchange");
    assert_eq!(user["licenseAssignmentStates"][0]["state"], "Active");
    assert!(user["@odata.context"]
        .as_str()
        .unwrap()
        .contains("$metadata#users("));
    assert!(user.get("displayName").is_none(), "not selected: {user}");

    // Without $select only the default set, which has no accountEnabled.
    let (_, by_upn) = graph_get(&f, TID, "/users/ADMIN@contoso.com").await;
    assert_eq!(by_upn["id"], ADMIN_ID);
    assert!(by_upn.get("accountEnabled").is_none());
    assert!(by_upn.get("businessPhones").is_some());
    // The OData key syntax for UPNs starting with '$'.
    f.sim.add_user(
        TID,
        SimUser::unlicensed("11111111-0000-4000-8000-000000000001", "$svc@contoso.com"),
    );
    let (status, svc) = graph_get(&f, TID, "/users('%24svc%40contoso.com')").await;
    assert_eq!(status, 200, "{svc}");
    assert_eq!(svc["userPrincipalName"], "$svc@contoso.com");

    f.sim.set_account_enabled(TID, ADMIN_ID, false);
    f.sim
        .set_proxy_addresses(TID, ADMIN_ID, vec!["SMTP:other@contoso.com".to_owned()]);
    f.sim.set_sku_status(TID, "ENTERPRISEPACK", "Suspended");
    f.sim.set_skus(
        TID,
        vec![SimSku {
            capability_status: "Suspended".to_owned(),
            ..SimSku::e3(25, 1)
        }],
    );
    let (_, changed) =
        graph_get(&f, TID, &format!("/users/{ADMIN_ID}?$select={USER_SELECT}")).await;
    assert_eq!(changed["accountEnabled"], false);
    assert_eq!(changed["mail"], Value::Null);
    assert_eq!(changed["proxyAddresses"], json!(["SMTP:other@contoso.com"]));
    assert_eq!(changed["assignedPlans"][0]["capabilityStatus"], "Suspended");

    let (status, missing) = graph_get(&f, TID, "/users/nobody@contoso.com").await;
    assert_graph_error(status, &missing, 404, "Request_ResourceNotFound");
    // The other tenant's directory does not hold the user.
    let (status, elsewhere) = graph_get(&f, OTHER_TID, &format!("/users/{ADMIN_ID}")).await;
    assert_graph_error(status, &elsewhere, 404, "Request_ResourceNotFound");
}

#[tokio::test]
async fn graph_soft_deleted_and_purged_users() {
    let f = start().await;
    f.sim
        .add_user(TID, SimUser::licensed(ADMIN_ID, "admin@contoso.com"));
    f.sim.delete_user_at(TID, ADMIN_ID, "2026-10-26T16:56:36Z");
    let (status, gone) = graph_get(&f, TID, &format!("/users/{ADMIN_ID}")).await;
    assert_graph_error(status, &gone, 404, "Request_ResourceNotFound");

    let (status, deleted) =
        graph_get(&f, TID, &format!("/directory/deletedItems/{ADMIN_ID}")).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["id"], ADMIN_ID);
    assert_eq!(
        deleted["userPrincipalName"],
        "87d349ed0000400080005f2406dee5bdadmin@contoso.com"
    );
    assert_eq!(deleted["deletedDateTime"], "2026-10-26T16:56:36Z");

    let token = f.sim.issue_token(TID);
    let search = "/directory/deletedItems/microsoft.graph.user?$filter=endswith(userPrincipalName,'admin@contoso.com')&$count=true&$select=id,displayName,userPrincipalName,deletedDateTime";
    let (status, found) =
        graph_get_with(&f, &token, search, &[("ConsistencyLevel", "eventual")]).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["@odata.count"], 1);
    assert_eq!(found["value"][0]["id"], ADMIN_ID);
    assert!(found["value"][0].get("mail").is_none(), "not selected");
    // endswith is an advanced query: refused without ConsistencyLevel.
    let (status, refused) = graph_get_with(&f, &token, search, &[]).await;
    assert_graph_error(status, &refused, 400, "Request_UnsupportedQuery");
    // The mangled UPN does not equal the original.
    let (_, none) = graph_get(
        &f,
        TID,
        "/directory/deletedItems/microsoft.graph.user?$filter=userPrincipalName%20eq%20'admin@contoso.com'",
    )
    .await;
    assert_eq!(none["value"], json!([]));

    let (status, uncast) = graph_get(&f, TID, "/directory/deletedItems").await;
    assert_graph_error(status, &uncast, 400, "Request_UnsupportedQuery");

    f.sim.purge_user(TID, ADMIN_ID);
    let (status, purged) = graph_get(&f, TID, &format!("/directory/deletedItems/{ADMIN_ID}")).await;
    assert_graph_error(status, &purged, 404, "Request_ResourceNotFound");

    // delete_user stamps now.
    f.sim.add_user(
        TID,
        SimUser::unlicensed("22222222-0000-4000-8000-000000000002", "b@contoso.com"),
    );
    f.sim
        .delete_user(TID, "22222222-0000-4000-8000-000000000002");
    let (_, fresh) = graph_get(
        &f,
        TID,
        "/directory/deletedItems/22222222-0000-4000-8000-000000000002",
    )
    .await;
    assert!(fresh["deletedDateTime"].as_str().unwrap().starts_with("20"));
}

#[tokio::test]
async fn graph_licences_skus_and_subscriptions() {
    let f = start().await;
    let mut user = SimUser::licensed(ADMIN_ID, "admin@contoso.com");
    user.licenses[0].plans[0].provisioning_status = "PendingInput".to_owned();
    f.sim.add_user(TID, user);
    let (status, details) = graph_get(&f, TID, &format!("/users/{ADMIN_ID}/licenseDetails")).await;
    assert_eq!(status, 200, "{details}");
    let detail = &details["value"][0];
    assert!(detail["id"].as_str().unwrap().len() > 20);
    assert_eq!(detail["skuId"], E3_SKU_ID);
    assert_eq!(detail["skuPartNumber"], "ENTERPRISEPACK");
    assert_eq!(
        detail["servicePlans"][0],
        json!({"servicePlanId": EXCHANGE_S_ENTERPRISE_ID, "servicePlanName": "EXCHANGE_S_ENTERPRISE",
               "provisioningStatus": "PendingInput", "appliesTo": "User"})
    );
    f.sim.set_user_licenses(
        TID,
        ADMIN_ID,
        vec![SimUserLicense {
            plans: vec![SimPlan::new(
                EXCHANGE_S_ENTERPRISE_ID,
                "EXCHANGE_S_ENTERPRISE",
                "Disabled",
                "User",
            )],
            ..SimUserLicense::e3()
        }],
    );
    let (_, user) = graph_get(
        &f,
        TID,
        &format!("/users/{ADMIN_ID}?$select=assignedLicenses,assignedPlans"),
    )
    .await;
    assert_eq!(
        user["assignedLicenses"][0]["disabledPlans"],
        json!([EXCHANGE_S_ENTERPRISE_ID])
    );
    assert_eq!(user["assignedPlans"], json!([]));

    f.sim.set_skus(
        TID,
        vec![SimSku {
            subscription_ids: vec!["43d26afe-0000-4000-8000-ae3ef2ac6c51".to_owned()],
            ..SimSku::e3(25, 14)
        }],
    );
    let (status, skus) = graph_get(&f, TID, "/subscribedSkus").await;
    assert_eq!(status, 200);
    let sku = &skus["value"][0];
    assert_eq!(sku["id"], format!("{TID}_{E3_SKU_ID}"));
    assert_eq!(sku["accountName"], "Contoso");
    assert_eq!(sku["capabilityStatus"], "Enabled");
    assert_eq!(sku["consumedUnits"], 14);
    assert_eq!(
        sku["prepaidUnits"],
        json!({"enabled": 25, "lockedOut": 0, "suspended": 0, "warning": 0})
    );
    assert_eq!(
        sku["subscriptionIds"],
        json!(["43d26afe-0000-4000-8000-ae3ef2ac6c51"])
    );
    assert_eq!(
        sku["servicePlans"][0]["servicePlanName"],
        "EXCHANGE_S_ENTERPRISE"
    );
    f.sim.set_sku_status(TID, "enterprisepack", "Warning");
    let (_, skus) = graph_get(&f, TID, "/subscribedSkus").await;
    assert_eq!(skus["value"][0]["capabilityStatus"], "Warning");

    let sub_id = "860697e3-0000-4000-8000-7ec361ed58f7";
    f.sim.set_subscriptions(
        TID,
        vec![SimSubscription::e3(
            sub_id,
            Some("2026-01-01T00:00:00Z"),
            25,
        )],
    );
    let (status, subs) = graph_get(&f, TID, "/directory/subscriptions").await;
    assert_eq!(status, 200);
    let sub = &subs["value"][0];
    assert_eq!(sub["id"], sub_id);
    assert_eq!(sub["status"], "Enabled");
    assert_eq!(sub["isTrial"], false);
    assert_eq!(sub["nextLifecycleDateTime"], "2026-01-01T00:00:00Z");
    assert_eq!(sub["totalLicenses"], 25);
    assert_eq!(sub["skuPartNumber"], "ENTERPRISEPACK");
    assert!(sub["commerceSubscriptionId"].is_string());
    assert!(sub["createdDateTime"].is_string());
    assert!(sub["serviceStatus"].is_array());
    f.sim.set_subscription(TID, sub_id, "Warning", None);
    let (_, subs) = graph_get(&f, TID, "/directory/subscriptions").await;
    assert_eq!(subs["value"][0]["status"], "Warning");
    assert_eq!(subs["value"][0]["nextLifecycleDateTime"], Value::Null);
}

/// Follows `@odata.nextLink` to the end; returns the items and how many pages it took.
async fn all_pages(f: &Fixture, token: &str, path: &str) -> (Vec<Value>, usize) {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut next = Some(path.to_owned());
    while let Some(url) = next {
        let (status, page) = graph_get_with(f, token, &url, &[]).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        items.extend(page["value"].as_array().unwrap().iter().cloned());
        next = page["@odata.nextLink"].as_str().map(str::to_owned);
        if let Some(link) = &next {
            assert!(
                link.starts_with(&format!("{}/v1.0/", f.sim.graph_url())),
                "{link}"
            );
        }
        assert!(pages < 20, "paging does not end");
    }
    (items, pages)
}

#[tokio::test]
async fn graph_admins_groups_and_paging() {
    let f = start().await;
    let member = |id: &str, enabled: bool| SimAdmin {
        account_enabled: enabled,
        ..SimAdmin::user(id, &format!("Member {id}"))
    };
    f.sim.set_global_admins(
        TID,
        vec![
            SimAdmin::user("a0000000-0000-4000-8000-000000000001", "Break Glass 1"),
            SimAdmin {
                account_enabled: false,
                ..SimAdmin::user("a0000000-0000-4000-8000-000000000002", "Break Glass 2")
            },
            SimAdmin {
                user_type: "Guest".to_owned(),
                ..SimAdmin::user("a0000000-0000-4000-8000-000000000003", "Partner")
            },
            SimAdmin::service_principal("a0000000-0000-4000-8000-000000000004", "Automation"),
            SimAdmin::group(
                "a0000000-0000-4000-8000-000000000005",
                "GA group",
                vec![member("b1", true), member("b2", false), member("b3", true)],
            ),
        ],
    );
    f.sim.set_page_size(2);
    let token = f.sim.issue_token(TID);
    let path = format!(
        "/roleManagement/directory/roleAssignments?$filter=roleDefinitionId%20eq%20'{GLOBAL_ADMIN_ROLE_ID}'&$expand=principal"
    );
    let (items, pages) = all_pages(&f, &token, &path).await;
    assert_eq!(pages, 3);
    assert_eq!(items.len(), 5);
    assert!(items
        .iter()
        .all(|item| item["roleDefinitionId"] == GLOBAL_ADMIN_ROLE_ID));
    let types: Vec<&str> = items
        .iter()
        .map(|item| item["principal"]["@odata.type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "#microsoft.graph.user",
            "#microsoft.graph.user",
            "#microsoft.graph.user",
            "#microsoft.graph.servicePrincipal",
            "#microsoft.graph.group"
        ]
    );
    assert_eq!(items[1]["principal"]["accountEnabled"], false);
    assert_eq!(items[2]["principal"]["userType"], "Guest");
    assert_eq!(items[0]["principalId"], items[0]["principal"]["id"]);

    let (members, pages) = all_pages(
        &f,
        &token,
        "/groups/a0000000-0000-4000-8000-000000000005/transitiveMembers?$select=id,accountEnabled",
    )
    .await;
    assert_eq!(pages, 2);
    assert_eq!(
        members,
        vec![
            json!({"@odata.type": "#microsoft.graph.user", "id": "b1", "accountEnabled": true}),
            json!({"@odata.type": "#microsoft.graph.user", "id": "b2", "accountEnabled": false}),
            json!({"@odata.type": "#microsoft.graph.user", "id": "b3", "accountEnabled": true}),
        ]
    );
    let (status, body) = graph_get(&f, TID, "/groups/nope/transitiveMembers").await;
    assert_graph_error(status, &body, 404, "Request_ResourceNotFound");

    // Another role's assignments: none. $top overrides the page size.
    let (_, other) = graph_get(
        &f,
        TID,
        "/roleManagement/directory/roleAssignments?$filter=roleDefinitionId%20eq%20'fe930be7-5e62-47db-91af-98c3a49a38b1'",
    )
    .await;
    assert_eq!(other["value"], json!([]));
    let (_, top) = graph_get(&f, TID, "/roleManagement/directory/roleAssignments?$top=5").await;
    assert_eq!(top["value"].as_array().unwrap().len(), 5);
    assert!(top.get("@odata.nextLink").is_none());
    assert!(top["value"][0].get("principal").is_none(), "not expanded");
}

#[tokio::test]
async fn graph_service_health_and_denied_paths() {
    let f = start().await;
    let (status, health) = graph_get(&f, TID, "/admin/serviceAnnouncement/healthOverviews").await;
    assert_eq!(status, 200);
    assert_eq!(
        health["value"],
        json!([
            {"service": "Exchange Online", "status": "serviceOperational", "id": "Exchange"},
            {"service": "Identity Service", "status": "serviceOperational", "id": "OrgLiveID"},
            {"service": "Microsoft 365 suite", "status": "serviceOperational", "id": "OSDPPlatform"}
        ])
    );
    f.sim
        .set_service_health(TID, "Exchange", "serviceDegradation");
    let (_, health) = graph_get(&f, TID, "/admin/serviceAnnouncement/healthOverviews").await;
    assert_eq!(health["value"][0]["status"], "serviceDegradation");
    assert_eq!(health["value"][1]["status"], "serviceOperational");

    f.sim.deny(TID, "/roleManagement/");
    let (status, denied) = graph_get(&f, TID, "/roleManagement/directory/roleAssignments").await;
    assert_graph_error(status, &denied, 403, "Authorization_RequestDenied");
    let (status, _) = graph_get(&f, TID, "/subscribedSkus").await;
    assert_eq!(status, 200);
    // The deny is per tenant.
    let (status, _) = graph_get(&f, OTHER_TID, "/roleManagement/directory/roleAssignments").await;
    assert_eq!(status, 200);
    f.sim.allow_all(TID);
    let (status, _) = graph_get(&f, TID, "/roleManagement/directory/roleAssignments").await;
    assert_eq!(status, 200);
    let log = f.sim.requests();
    assert!(log
        .iter()
        .all(|request| request.authorized && request.server == SimServer::Graph));
    assert_eq!(
        log.iter().filter(|request| request.status == 403).count(),
        1
    );
}

#[tokio::test]
async fn graph_with_a_token_from_the_token_endpoint() {
    let f = start().await;
    f.sim
        .add_user(TID, SimUser::licensed(ADMIN_ID, "admin@contoso.com"));
    let assertion = Assertion::valid(&f, Algorithm::PS256).sign();
    let body: Value = token_with_assertion(&f, TID, &assertion)
        .await
        .json()
        .await
        .unwrap();
    let token = body["access_token"].as_str().unwrap();
    let (status, user) = graph_get_with(&f, token, &format!("/users/{ADMIN_ID}"), &[]).await;
    assert_eq!(status, 200, "{user}");
    assert_eq!(user["id"], ADMIN_ID);
    // A removed tenant's tokens are refused.
    f.sim.remove_tenant(TID);
    let (status, refused) = graph_get_with(&f, token, &format!("/users/{ADMIN_ID}"), &[]).await;
    assert_graph_error(status, &refused, 401, "InvalidAuthenticationToken");
}

#[tokio::test]
async fn graph_faults() {
    let f = start().await;
    let token = f.sim.issue_token(TID);
    let url = format!("{}/v1.0/subscribedSkus", f.sim.graph_url());
    f.sim.inject(Fault::once(
        "/subscribedSkus",
        FaultKind::TooManyRequests {
            retry_after_s: Some(10),
        },
    ));
    let response = f.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("10"));
    assert!(header(&response, "request-id").is_some());
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TooManyRequests");
    assert_eq!(body["error"]["innerError"]["status"], "429");

    f.sim.inject(Fault::once(
        "",
        FaultKind::Unavailable {
            retry_after_s: Some(3),
        },
    ));
    let response = f.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&response, "retry-after").as_deref(), Some("3"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ServiceNotAvailable");

    f.sim
        .inject(Fault::once("subscribedSkus", FaultKind::TruncatedJson));
    let response = f.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(!text.is_empty());
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");

    f.sim
        .inject(Fault::once("subscribedSkus", FaultKind::GatewayTimeout));
    let response = f.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(response.bytes().await.unwrap().is_empty());

    let response = f.http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let statuses: Vec<u16> = f
        .sim
        .requests()
        .iter()
        .map(|request| request.status)
        .collect();
    assert_eq!(statuses, [429, 503, 200, 504, 200]);
}

// ---------------------------------------------------------------------------------------------
// RDAP

#[tokio::test]
async fn rdap_bootstrap_and_domain_objects() {
    let f = start().await;
    f.sim
        .set_rdap("contoso.com", SimRdap::expiring("2027-08-13T04:00:00Z"));
    f.sim.set_rdap(
        "contoso.nl",
        SimRdap {
            status: vec!["redemption period".to_owned()],
            ..SimRdap::default()
        },
    );
    let bootstrap = response_json(&f, &f.sim.rdap_bootstrap_url()).await;
    assert_eq!(bootstrap["version"], "1.0");
    assert!(bootstrap["publication"].is_string());
    let base = format!("{}/", f.sim.rdap_base_url());
    assert_eq!(bootstrap["services"], json!([[["com", "nl"], [base]]]));

    let url = format!("{}/domain/contoso.com", f.sim.rdap_base_url());
    let response = f.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("application/rdap+json")
    );
    let domain: Value = response.json().await.unwrap();
    assert_eq!(domain["objectClassName"], "domain");
    assert_eq!(domain["ldhName"], "CONTOSO.COM");
    assert_eq!(domain["status"], json!(["active"]));
    let events = domain["events"].as_array().unwrap();
    let event = |action: &str| {
        events
            .iter()
            .find(|event| event["eventAction"] == action)
            .map(|event| event["eventDate"].clone())
    };
    assert_eq!(event("expiration"), Some(json!("2027-08-13T04:00:00Z")));
    assert!(event("registration").is_some());
    assert!(event("last update of RDAP database").is_some());
    assert_eq!(domain["entities"][0]["roles"], json!(["registrar"]));
    assert_eq!(
        domain["entities"][0]["vcardArray"][1][1],
        json!(["fn", {}, "text", "Example Registrar LLC"])
    );

    let missing = f
        .http
        .get(format!("{}/domain/unknown.com", f.sim.rdap_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["errorCode"], 404);
    assert_eq!(body["title"], "Not Found");

    f.sim.remove_rdap_service("nl");
    let bootstrap = response_json(&f, &f.sim.rdap_bootstrap_url()).await;
    assert_eq!(bootstrap["services"][0][0], json!(["com"]));
}

// ---------------------------------------------------------------------------------------------
// Faults and the request log

#[tokio::test]
async fn faults_on_login_and_rdap() {
    let f = start().await;
    let discovery = discovery_url(&f, TID);
    f.sim.inject(Fault {
        path_contains: "openid-configuration".to_owned(),
        kind: FaultKind::TooManyRequests {
            retry_after_s: Some(7),
        },
        times: 2,
    });
    for _ in 0..2 {
        let response = f.http.get(&discovery).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&response, "retry-after").as_deref(), Some("7"));
    }
    assert_eq!(f.http.get(&discovery).send().await.unwrap().status(), 200);

    f.sim.inject(Fault::once(
        "",
        FaultKind::Unavailable {
            retry_after_s: None,
        },
    ));
    let unavailable = f.http.get(&discovery).send().await.unwrap();
    assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&unavailable, "retry-after"), None);

    f.sim
        .inject(Fault::once("/dns.json", FaultKind::GatewayTimeout));
    let timeout = f.http.get(f.sim.rdap_bootstrap_url()).send().await.unwrap();
    assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(timeout.bytes().await.unwrap().is_empty());

    f.sim
        .inject(Fault::once("openid", FaultKind::TruncatedJson));
    let truncated = f.http.get(&discovery).send().await.unwrap();
    assert_eq!(truncated.status(), StatusCode::OK);
    let text = truncated.text().await.unwrap();
    assert!(text.starts_with("{\""), "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err());

    f.sim
        .inject(Fault::once("openid", FaultKind::MalformedJson));
    let malformed = f.http.get(&discovery).send().await.unwrap();
    assert_eq!(malformed.status(), StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&malformed.bytes().await.unwrap()).is_err());

    f.sim.inject(Fault::once(
        "openid",
        FaultKind::Delay(Duration::from_millis(300)),
    ));
    let started = tokio::time::Instant::now();
    let delayed = f.http.get(&discovery).send().await.unwrap();
    assert_eq!(delayed.status(), StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let statuses: Vec<(SimServer, u16)> = f
        .sim
        .requests()
        .iter()
        .map(|request| (request.server, request.status))
        .collect();
    assert_eq!(
        statuses,
        vec![
            (SimServer::Login, 429),
            (SimServer::Login, 429),
            (SimServer::Login, 200),
            (SimServer::Login, 503),
            (SimServer::Rdap, 504),
            (SimServer::Login, 200),
            (SimServer::Login, 200),
            (SimServer::Login, 200),
        ]
    );
    f.sim.clear_requests();
    assert!(f.sim.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Less common paths

async fn token_form(f: &Fixture, tenant: &str, form: &[(&str, &str)]) -> Response {
    f.http
        .post(token_url(f, tenant))
        .form(form)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn token_request_shape_errors() {
    let f = start().await;
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut form = vec![
            ("client_id", CLIENT_ID),
            ("grant_type", "client_credentials"),
        ];
        form.extend_from_slice(extra);
        form
    };
    // (form, status, error, AADSTS code)
    type Case = (Vec<(&'static str, &'static str)>, u16, &'static str, u32);
    let cases: Vec<Case> = vec![
        (
            base(&[("client_secret", SECRET)]),
            400,
            "invalid_request",
            900144,
        ),
        (
            base(&[("client_secret", SECRET), ("scope", "User.Read")]),
            400,
            "invalid_scope",
            70011,
        ),
        (
            base(&[
                ("client_secret", SECRET),
                ("scope", "https://outlook.office365.com/.default"),
            ]),
            400,
            "invalid_resource",
            500011,
        ),
        (
            base(&[("scope", GRAPH_SCOPE)]),
            400,
            "invalid_client",
            7000218,
        ),
        (
            base(&[
                ("scope", GRAPH_SCOPE),
                ("client_secret", SECRET),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", "x.y.z"),
            ]),
            400,
            "invalid_request",
            90014,
        ),
        (
            vec![
                ("client_id", CLIENT_ID),
                ("grant_type", "password"),
                ("scope", GRAPH_SCOPE),
                ("client_secret", SECRET),
            ],
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("scope", GRAPH_SCOPE),
                ("client_secret", SECRET),
            ],
            400,
            "invalid_request",
            900144,
        ),
    ];
    for (form, status, error, code) in cases {
        let response = token_form(&f, TID, &form).await;
        assert_login_error(response, status, error, code).await;
    }
    let common = token_with_secret(&f, "common", CLIENT_ID, SECRET).await;
    assert_login_error(common, 400, "invalid_request", 9001023).await;
    let get = f.http.get(token_url(&f, TID)).send().await.unwrap();
    assert_login_error(get, 400, "invalid_request", 900561).await;
}

#[tokio::test]
async fn token_with_basic_auth_and_unregistered_app() {
    let f = start().await;
    let response = f
        .http
        .post(token_url(&f, TID))
        .basic_auth(CLIENT_ID, Some(SECRET))
        .form(&[("scope", GRAPH_SCOPE), ("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    f.sim.unregister_app(TID, CLIENT_ID);
    let revoked = token_with_secret(&f, TID, CLIENT_ID, SECRET).await;
    assert_login_error(revoked, 400, "unauthorized_client", 700016).await;

    // A certificate that does not parse is not registered: nothing matches it.
    f.sim.register_app(
        TID,
        CLIENT_ID,
        SimCredential::Certificate {
            cert_pem: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned(),
        },
    );
    let assertion = Assertion::valid(&f, Algorithm::RS256).sign();
    let response = token_with_assertion(&f, TID, &assertion).await;
    assert_login_error(response, 401, "invalid_client", 700027).await;
    // Registering the real certificate again makes the same assertion work.
    f.sim
        .register_app(TID, CLIENT_ID, SimCredential::test_app_certificate());
    let response = token_with_assertion(&f, TID, &assertion).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn assertion_claim_and_header_checks() {
    let f = start().await;
    // The token URL by domain is an accepted audience when the request uses the domain.
    let by_domain = Assertion {
        aud: token_url(&f, "contoso.com"),
        ..Assertion::valid(&f, Algorithm::RS256)
    };
    let response = token_with_assertion(&f, "contoso.com", &by_domain.sign()).await;
    assert_eq!(response.status(), StatusCode::OK);

    let now = now_s();
    let sign = |claims: Value, alg: Algorithm| {
        let mut header = Header::new(alg);
        header.x5t_s256 = Some(thumbprint(TEST_APP_CERT_PEM, true));
        let key = if alg == Algorithm::HS256 {
            EncodingKey::from_secret(b"shared")
        } else {
            EncodingKey::from_rsa_pem(TEST_APP_KEY_PEM.as_bytes()).unwrap()
        };
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    };
    let aud = token_url(&f, TID);
    let other_client = "99999999-0000-4000-8000-000000000009";
    let wrong_issuer = sign(
        json!({"aud": aud, "iss": other_client, "sub": other_client, "jti": "1", "nbf": now - 5, "exp": now + 600}),
        Algorithm::RS256,
    );
    let response = token_with_assertion(&f, TID, &wrong_issuer).await;
    assert_login_error(response, 400, "invalid_client", 700021).await;
    let no_jti = sign(
        json!({"aud": aud, "iss": CLIENT_ID, "sub": CLIENT_ID, "nbf": now - 5, "exp": now + 600}),
        Algorithm::RS256,
    );
    let response = token_with_assertion(&f, TID, &no_jti).await;
    assert_login_error(response, 400, "invalid_request", 50027).await;
    let hmac = sign(
        json!({"aud": aud, "iss": CLIENT_ID, "sub": CLIENT_ID, "jti": "1", "nbf": now - 5, "exp": now + 600}),
        Algorithm::HS256,
    );
    let response = token_with_assertion(&f, TID, &hmac).await;
    assert_login_error(response, 401, "invalid_client", 700027).await;
}

#[tokio::test]
async fn v1_discovery_keywords_and_v1_realm() {
    let f = start().await;
    let v1 = response_json(
        &f,
        &format!(
            "{}/{TID}/.well-known/openid-configuration",
            f.sim.login_url()
        ),
    )
    .await;
    assert_eq!(v1["issuer"], format!("https://sts.windows.net/{TID}/"));
    let common = response_json(&f, &discovery_url(&f, "organizations")).await;
    assert_eq!(
        common["issuer"],
        format!("{}/{{tenantid}}/v2.0", f.sim.login_url())
    );
    let zero = f
        .http
        .get(discovery_url(&f, "00000000-0000-0000-0000-000000000000"))
        .send()
        .await
        .unwrap();
    assert_login_error(zero, 400, "invalid_tenant", 90002).await;

    f.sim.set_namespace_type("contoso.com", "Federated");
    let realm = response_json(
        &f,
        &format!(
            "{}/common/userrealm/probe@contoso.com?api-version=1.0",
            f.sim.login_url()
        ),
    )
    .await;
    assert_eq!(realm["ver"], "1.0");
    assert_eq!(realm["account_type"], "Federated");
    assert_eq!(realm["domain_name"], "contoso.com");
    assert!(realm["federation_metadata_url"].is_string());
}

#[tokio::test]
async fn graph_bad_requests() {
    let f = start().await;
    let (status, body) = graph_get(&f, TID, "/me/nothing").await;
    assert_graph_error(status, &body, 400, "BadRequest");
    let (status, body) = graph_get(&f, TID, "/subscribedSkus?$skiptoken=garbage").await;
    assert_graph_error(status, &body, 400, "BadRequest");
    let response = f
        .http
        .get(format!("{}/beta/subscribedSkus", f.sim.graph_url()))
        .bearer_auth(f.sim.issue_token(TID))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = f
        .http
        .post(format!("{}/v1.0/subscribedSkus", f.sim.graph_url()))
        .bearer_auth(f.sim.issue_token(TID))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // Adding a user with an existing id replaces it (and undeletes it).
    f.sim
        .add_user(TID, SimUser::licensed(ADMIN_ID, "admin@contoso.com"));
    f.sim.delete_user(TID, ADMIN_ID);
    f.sim
        .add_user(TID, SimUser::unlicensed(ADMIN_ID, "renamed@contoso.com"));
    let (status, user) = graph_get(&f, TID, &format!("/users/{ADMIN_ID}")).await;
    assert_eq!(status, 200);
    assert_eq!(user["userPrincipalName"], "renamed@contoso.com");
    let (status, _) = graph_get(&f, TID, &format!("/directory/deletedItems/{ADMIN_ID}")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn faults_count_down_match_any_listener_and_log_queries() {
    let f = start().await;
    f.sim.set_rdap("contoso.com", SimRdap::default());
    f.sim.inject(Fault {
        path_contains: String::new(),
        kind: FaultKind::GatewayTimeout,
        times: 3,
    });
    let rdap = format!("{}/domain/contoso.com", f.sim.rdap_base_url());
    let graph = format!("{}/v1.0/subscribedSkus?$top=1", f.sim.graph_url());
    let token = f.sim.issue_token(TID);
    assert_eq!(f.http.get(&rdap).send().await.unwrap().status(), 504);
    assert_eq!(
        f.http
            .get(&graph)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        504
    );
    assert_eq!(
        f.http
            .get(discovery_url(&f, TID))
            .send()
            .await
            .unwrap()
            .status(),
        504
    );
    assert_eq!(f.http.get(&rdap).send().await.unwrap().status(), 200);

    f.sim
        .inject(Fault::once("/rdap/", FaultKind::MalformedJson));
    let malformed = f.http.get(&rdap).send().await.unwrap();
    assert_eq!(malformed.status(), 200);
    assert_eq!(
        header(&malformed, "content-type").as_deref(),
        Some("application/rdap+json")
    );
    assert!(serde_json::from_slice::<Value>(&malformed.bytes().await.unwrap()).is_err());

    f.sim.inject(Fault::once(
        "$top=1",
        FaultKind::Delay(Duration::from_millis(200)),
    ));
    let started = tokio::time::Instant::now();
    let delayed = f.http.get(&graph).bearer_auth(&token).send().await.unwrap();
    assert_eq!(delayed.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));

    let log = f.sim.requests();
    let graph_requests: Vec<_> = log
        .iter()
        .filter(|request| request.server == SimServer::Graph)
        .collect();
    assert_eq!(graph_requests.len(), 2);
    assert_eq!(graph_requests[0].path, "/v1.0/subscribedSkus");
    assert_eq!(graph_requests[0].query, "$top=1");
    assert_eq!(graph_requests[1].status, 200);
    assert!(graph_requests[1].authorized);
    assert!(log.windows(2).all(|pair| pair[0].at <= pair[1].at));
}

#[tokio::test]
async fn rdap_odd_requests() {
    let f = start().await;
    let empty = response_json(&f, &f.sim.rdap_bootstrap_url()).await;
    assert_eq!(empty["services"], json!([]));
    f.sim
        .set_rdap("Contoso.COM.", SimRdap::expiring("2027-01-01T00:00:00Z"));
    let domain = response_json(
        &f,
        &format!("{}/domain/CONTOSO.com.", f.sim.rdap_base_url()),
    )
    .await;
    assert_eq!(domain["ldhName"], "CONTOSO.COM");
    let bad = f
        .http
        .get(format!("{}/nameserver/ns1.example", f.sim.rdap_base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["errorCode"], 400);
}

#[tokio::test]
async fn listeners_stop_on_shutdown() {
    let ca = TestCa::generate().unwrap();
    let shutdown = CancellationToken::new();
    let sim = EntraSim::start(&ca, shutdown.clone()).await.unwrap();
    let http = Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.ca_cert_pem.as_bytes()).unwrap())
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    assert!(sim.login_url().starts_with("https://127.0.0.1:"));
    let url = sim.rdap_bootstrap_url();
    assert_eq!(http.get(&url).send().await.unwrap().status(), 200);
    shutdown.cancel();
    // The accept loop notices the cancellation at its next poll.
    let mut refused = false;
    for _ in 0..50 {
        let fresh = Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(ca.ca_cert_pem.as_bytes()).unwrap(),
            )
            .no_proxy()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        if fresh.get(&url).send().await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still answering after shutdown");
}
