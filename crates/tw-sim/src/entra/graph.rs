//! The simulated Microsoft Graph v1.0 (reference §3): bearer check, the directory reads a
//! monitor makes (user, licence details, deleted items, SKUs, subscriptions, Global Admin
//! role assignments and group members, service health), paging and Graph's OData error
//! envelope.
//!
//! Each read runs under the state lock and builds the documented JSON from the scripted data,
//! so a setter's change shows in the very next answer. Collections page through one helper,
//! which keeps the caller's other query options in `@odata.nextLink` as Graph does.

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::https::{self, Handled};
use super::model::{
    SimAdmin, SimPlan, SimPrincipalKind, SimSku, SimSubscription, SimUser, SimUserLicense,
    GLOBAL_ADMIN_ROLE_ID,
};
use super::stamp::{self, Utc};
use super::state::{DeletedUser, Directory, Health, Shared};

pub(super) const CONTENT_TYPE: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

pub(super) async fn handle(shared: &Shared, request: Request) -> Handled {
    let cri = https::header_text(request.headers(), "client-request-id");
    let cri = cri.as_deref();
    let bearer = https::header_text(request.headers(), "authorization");
    let tenant_id = match authenticate(shared, bearer.as_deref()) {
        Ok(tenant_id) => tenant_id,
        Err(message) => return unauthenticated(shared, message, cri).into(),
    };
    let path = request.uri().path().to_owned();
    let decoded_path = stamp::percent_decode(&path);
    let query = Query::parse(
        request.uri().query().unwrap_or_default(),
        https::header_text(request.headers(), "consistencylevel")
            .is_some_and(|level| level.eq_ignore_ascii_case("eventual")),
    );
    if request.method() == Method::DELETE {
        let response = match delete_message(shared, &tenant_id, &path) {
            Ok(()) => {
                let mut response = Response::new(axum::body::Body::empty());
                *response.status_mut() = StatusCode::NO_CONTENT;
                ids(
                    &mut response,
                    &stamp::guid(),
                    &https::client_request_id(cri),
                );
                response
            }
            Err(failure) => failure.answer(cri),
        };
        return Handled {
            response,
            authorized: true,
        };
    }
    let response = {
        let state = shared.state.lock();
        let empty = Directory::default();
        let directory = state.directory(&tenant_id).unwrap_or(&empty);
        let denied = directory.denied.iter().any(|fragment| {
            path.contains(fragment.as_str()) || decoded_path.contains(fragment.as_str())
        });
        let read = Read {
            shared,
            tenant_id: &tenant_id,
            account_name: state
                .tenants
                .get(&tenant_id)
                .map_or("", |tenant| tenant.display_name.as_str()),
            directory,
            page_size: state.page_size,
            path: &path,
            query: &query,
        };
        if denied {
            Err(Failure::Denied)
        } else if request.method() != Method::GET {
            Err(Failure::Method)
        } else {
            read.route()
        }
    };
    let response = match response {
        Ok(body) => {
            let request_id = stamp::guid();
            let client_request_id = https::client_request_id(cri);
            let mut response = https::json(StatusCode::OK, CONTENT_TYPE, &body);
            ids(&mut response, &request_id, &client_request_id);
            response
        }
        Err(failure) => failure.answer(cri),
    };
    Handled {
        response,
        authorized: true,
    }
}

/// Why a Graph read gave no 200.
enum Failure {
    Denied,
    Method,
    NotFound(String),
    /// A user without an (active) Exchange Online mailbox, on a mail endpoint.
    NoMailbox,
    UnsupportedQuery(&'static str),
    BadRequest(String),
}

impl Failure {
    fn answer(self, cri: Option<&str>) -> Response {
        match self {
            Failure::Denied => error(
                StatusCode::FORBIDDEN,
                "Authorization_RequestDenied",
                "Insufficient privileges to complete the operation.",
                cri,
            ),
            Failure::Method => error(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request_BadRequest",
                "The HTTP method is not supported by this simulated resource.",
                cri,
            ),
            Failure::NotFound(key) => error(
                StatusCode::NOT_FOUND,
                "Request_ResourceNotFound",
                &format!(
                    "Resource '{key}' does not exist or one of its queried reference-property objects are not present."
                ),
                cri,
            ),
            Failure::NoMailbox => error(
                StatusCode::NOT_FOUND,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
                cri,
            ),
            Failure::UnsupportedQuery(message) => error(
                StatusCode::BAD_REQUEST,
                "Request_UnsupportedQuery",
                message,
                cri,
            ),
            Failure::BadRequest(message) => {
                error(StatusCode::BAD_REQUEST, "BadRequest", &message, cri)
            }
        }
    }
}

/// The OData query options the simulator reads.
struct Query {
    /// `&`-separated raw parts without `$skiptoken`, to build the next link from.
    raw_without_skiptoken: Vec<String>,
    select: Option<Vec<String>>,
    filter: Option<String>,
    expand: Option<String>,
    top: Option<usize>,
    skiptoken: Option<String>,
    count: bool,
    eventual: bool,
}

impl Query {
    fn parse(raw: &str, eventual: bool) -> Query {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).unwrap_or_default();
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        Query {
            raw_without_skiptoken: raw
                .split('&')
                .filter(|part| !part.is_empty())
                .filter(|part| {
                    let name = stamp::percent_decode(part.split('=').next().unwrap_or_default());
                    !name.eq_ignore_ascii_case("$skiptoken")
                })
                .map(str::to_owned)
                .collect(),
            select: get("$select").map(|list| {
                list.split(',')
                    .map(|name| name.trim().to_owned())
                    .filter(|name| !name.is_empty())
                    .collect()
            }),
            filter: get("$filter"),
            expand: get("$expand"),
            top: get("$top").and_then(|top| top.parse().ok()),
            skiptoken: get("$skiptoken"),
            count: get("$count").is_some_and(|count| count.eq_ignore_ascii_case("true")),
            eventual,
        }
    }
}

/// One Graph read against one tenant's directory, under the state lock.
struct Read<'a> {
    shared: &'a Shared,
    tenant_id: &'a str,
    account_name: &'a str,
    directory: &'a Directory,
    page_size: usize,
    /// Still percent-encoded, as sent.
    path: &'a str,
    query: &'a Query,
}

const SKIPTOKEN_PREFIX: &str = "RFNwdAIAAQAAA";

impl Read<'_> {
    fn route(&self) -> Result<Value, Failure> {
        let Some(rest) = self.path.strip_prefix("/v1.0/") else {
            return Err(Failure::BadRequest(format!(
                "Invalid version: the simulator serves /v1.0 only, not '{}'.",
                self.path
            )));
        };
        let segments: Vec<String> = rest
            .trim_end_matches('/')
            .split('/')
            .map(stamp::percent_decode)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["users"] => self.users_by_address(),
            ["users", key] => self.user(key),
            [single] if single.starts_with("users(") => self.user(single),
            ["users", key, "licenseDetails"] => self.license_details(key),
            ["users", key, "messages"] => self.messages(key),
            ["directory", "deletedItems"] => Err(Failure::UnsupportedQuery(
                "Searches against this resource are not supported.",
            )),
            ["directory", "deletedItems", "microsoft.graph.user"] => self.deleted_users(),
            ["directory", "deletedItems", id] => self.deleted_item(id),
            ["subscribedSkus"] => {
                let items = self
                    .directory
                    .skus
                    .iter()
                    .map(|sku| self.sku(sku))
                    .collect();
                self.collection("subscribedSkus", items)
            }
            ["subscribedSkus", id] => self
                .directory
                .skus
                .iter()
                .find(|sku| self.sku_object_id(sku).eq_ignore_ascii_case(id))
                .map(|sku| self.entity("subscribedSkus/$entity", self.sku(sku)))
                .ok_or_else(|| Failure::NotFound((*id).to_owned())),
            ["directory", "subscriptions"] => {
                let items = self
                    .directory
                    .subscriptions
                    .iter()
                    .map(|subscription| self.subscription(subscription))
                    .collect();
                self.collection("directory/subscriptions", items)
            }
            ["directory", "subscriptions", id] => self
                .directory
                .subscriptions
                .iter()
                .find(|s| {
                    s.id.eq_ignore_ascii_case(id)
                        || s.commerce_subscription_id.eq_ignore_ascii_case(id)
                })
                .map(|s| self.entity("directory/subscriptions/$entity", self.subscription(s)))
                .ok_or_else(|| Failure::NotFound((*id).to_owned())),
            ["roleManagement", "directory", "roleAssignments"] => self.role_assignments(),
            ["groups", id, "transitiveMembers"] => self.transitive_members(id),
            ["admin", "serviceAnnouncement", "healthOverviews"] => {
                let items = self.directory.health.iter().map(health).collect();
                self.collection("admin/serviceAnnouncement/healthOverviews", items)
            }
            ["admin", "serviceAnnouncement", "healthOverviews", id] => self
                .directory
                .health
                .iter()
                .find(|entry| entry.id.eq_ignore_ascii_case(id))
                .map(|entry| {
                    self.entity(
                        "admin/serviceAnnouncement/healthOverviews/$entity",
                        health(entry),
                    )
                })
                .ok_or_else(|| Failure::NotFound((*id).to_owned())),
            _ => Err(Failure::BadRequest(format!(
                "Resource not found for the segment '{}'.",
                segments.first().copied().unwrap_or_default()
            ))),
        }
    }

    fn context(&self, what: &str) -> String {
        format!("{}/v1.0/$metadata#{what}", self.shared.graph_url)
    }

    fn entity(&self, context: &str, object: Value) -> Value {
        let mut object = self.select(object, &[]);
        if let Value::Object(map) = &mut object {
            map.insert("@odata.context".to_owned(), json!(self.context(context)));
        }
        object
    }

    /// Keeps the `$select`ed fields (case-insensitive) and any `@odata.*` annotation; without
    /// `$select`, keeps `default` (or everything when `default` is empty).
    fn select(&self, object: Value, default: &[&str]) -> Value {
        let Value::Object(map) = object else {
            return object;
        };
        let keep = |key: &str| -> bool {
            if key.starts_with("@odata.") {
                return true;
            }
            match &self.query.select {
                Some(names) => names.iter().any(|name| name.eq_ignore_ascii_case(key)),
                None => default.is_empty() || default.contains(&key),
            }
        };
        Value::Object(map.into_iter().filter(|(key, _)| keep(key)).collect())
    }

    /// One page of `items` (already filtered), with `@odata.nextLink` when more remain.
    fn collection(&self, context: &str, items: Vec<Value>) -> Result<Value, Failure> {
        let offset = match &self.query.skiptoken {
            None => 0,
            Some(token) => token
                .strip_prefix(SKIPTOKEN_PREFIX)
                .and_then(|rest| rest.parse::<usize>().ok())
                .ok_or_else(|| Failure::BadRequest("Invalid $skiptoken.".to_owned()))?,
        };
        let size = self.query.top.unwrap_or(self.page_size).clamp(1, 999);
        let total = items.len();
        let page: Vec<Value> = items
            .into_iter()
            .skip(offset)
            .take(size)
            .map(|item| self.select(item, &[]))
            .collect();
        let mut body = serde_json::Map::new();
        body.insert("@odata.context".to_owned(), json!(self.context(context)));
        if self.query.count {
            body.insert("@odata.count".to_owned(), json!(total));
        }
        if offset + size < total {
            let mut parts = self.query.raw_without_skiptoken.clone();
            parts.push(format!("$skiptoken={SKIPTOKEN_PREFIX}{}", offset + size));
            body.insert(
                "@odata.nextLink".to_owned(),
                json!(format!(
                    "{}{}?{}",
                    self.shared.graph_url,
                    self.path,
                    parts.join("&")
                )),
            );
        }
        body.insert("value".to_owned(), Value::Array(page));
        Ok(Value::Object(body))
    }

    // --- users ---------------------------------------------------------------------------

    fn find_user(&self, key: &str) -> Option<&SimUser> {
        // `users('$x@y.com')`: the key in OData string syntax, quotes doubled inside.
        let key = match key.strip_prefix("users(").and_then(|k| k.strip_suffix(')')) {
            Some(inner) => inner
                .strip_prefix('\'')
                .and_then(|k| k.strip_suffix('\''))
                .unwrap_or(inner)
                .replace("''", "'"),
            None => key.to_owned(),
        };
        self.directory.users.iter().find(|user| {
            user.id.eq_ignore_ascii_case(&key)
                || user.user_principal_name.eq_ignore_ascii_case(&key)
        })
    }

    fn user(&self, key: &str) -> Result<Value, Failure> {
        let user = self
            .find_user(key)
            .ok_or_else(|| Failure::NotFound(key.to_owned()))?;
        let context = match &self.query.select {
            Some(names) => format!("users({})/$entity", names.join(",")),
            None => "users/$entity".to_owned(),
        };
        let mut object = self.select(self.user_object(user), DEFAULT_USER_FIELDS);
        if let Value::Object(map) = &mut object {
            map.insert("@odata.context".to_owned(), json!(self.context(&context)));
        }
        Ok(object)
    }

    /// `GET /users?$filter=proxyAddresses/any(x:x eq 'smtp:addr')`: the one collection
    /// filter the probes use (finding a user by an alias before its object id is known).
    /// The lambda on a multi-valued property is an advanced query here, as with `endswith`.
    fn users_by_address(&self) -> Result<Value, Failure> {
        const UNSUPPORTED: &str =
            "Unsupported or invalid query filter clause specified for property 'proxyAddresses' of resource 'User'.";
        let filter = self
            .query
            .filter
            .as_deref()
            .ok_or(Failure::UnsupportedQuery(
                "The simulator lists users only with a proxyAddresses filter.",
            ))?;
        let address = proxy_filter(filter).ok_or(Failure::UnsupportedQuery(UNSUPPORTED))?;
        if !(self.query.eventual && self.query.count) {
            return Err(Failure::UnsupportedQuery(UNSUPPORTED));
        }
        let items = self
            .directory
            .users
            .iter()
            .filter(|user| {
                user.proxy_addresses
                    .iter()
                    .any(|proxy| proxy.eq_ignore_ascii_case(&address))
            })
            .map(|user| self.select(self.user_object(user), DEFAULT_USER_FIELDS))
            .collect();
        let context = match &self.query.select {
            Some(names) => format!("users({})", names.join(",")),
            None => "users".to_owned(),
        };
        self.collection(&context, items)
    }

    /// `GET /users/{id}/messages?$filter=internetMessageId eq '<…>'`: the probe's lookup.
    fn messages(&self, key: &str) -> Result<Value, Failure> {
        let user = self
            .find_user(key)
            .ok_or_else(|| Failure::NotFound(key.to_owned()))?;
        if !has_mailbox(user) {
            return Err(Failure::NoMailbox);
        }
        let wanted = match &self.query.filter {
            None => None,
            Some(filter) => {
                let (field, value) = filter.split_once(" eq ").ok_or(Failure::BadRequest(
                    "The simulator filters messages on internetMessageId only.".to_owned(),
                ))?;
                if !field.trim().eq_ignore_ascii_case("internetMessageId") {
                    return Err(Failure::BadRequest(
                        "The simulator filters messages on internetMessageId only.".to_owned(),
                    ));
                }
                Some(
                    odata_string(value.trim())
                        .ok_or(Failure::BadRequest("Invalid filter value.".to_owned()))?,
                )
            }
        };
        let items = self
            .directory
            .messages
            .iter()
            .filter(|m| m.user_id.eq_ignore_ascii_case(&user.id))
            .filter(|m| wanted.as_deref().is_none_or(|w| w == m.internet_message_id))
            .map(|m| {
                self.select(
                    json!({
                        "@odata.etag": format!("W/\"{}\"", m.id),
                        "id": m.id,
                        "subject": m.subject,
                        "internetMessageId": m.internet_message_id,
                        "receivedDateTime": m.received,
                    }),
                    &["id", "subject", "internetMessageId", "receivedDateTime"],
                )
            })
            .collect();
        self.collection(&format!("users('{}')/messages", user.id), items)
    }

    fn sku_status(&self, sku_id: &str) -> String {
        self.directory
            .skus
            .iter()
            .find(|sku| sku.sku_id.eq_ignore_ascii_case(sku_id))
            .map_or_else(|| "Enabled".to_owned(), |sku| sku.capability_status.clone())
    }

    fn user_object(&self, user: &SimUser) -> Value {
        let disabled = |license: &SimUserLicense| -> Vec<String> {
            license
                .plans
                .iter()
                .filter(|plan| plan.provisioning_status.eq_ignore_ascii_case("Disabled"))
                .map(|plan| plan.service_plan_id.clone())
                .collect()
        };
        let assigned_licenses: Vec<Value> = user
            .licenses
            .iter()
            .map(|license| json!({"disabledPlans": disabled(license), "skuId": license.sku_id}))
            .collect();
        let assigned_plans: Vec<Value> = user
            .licenses
            .iter()
            .flat_map(|license| {
                let status = self.sku_status(&license.sku_id);
                license
                    .plans
                    .iter()
                    .filter(|plan| !plan.provisioning_status.eq_ignore_ascii_case("Disabled"))
                    .map(move |plan| {
                        json!({
                            "assignedDateTime": ASSIGNED_AT,
                            "capabilityStatus": status,
                            "service": plan_service(&plan.service_plan_name),
                            "servicePlanId": plan.service_plan_id,
                        })
                    })
            })
            .collect();
        let states: Vec<Value> = user
            .licenses
            .iter()
            .map(|license| {
                json!({
                    "assignedByGroup": null,
                    "disabledPlans": disabled(license),
                    "error": null,
                    "lastUpdatedDateTime": ASSIGNED_AT,
                    "skuId": license.sku_id,
                    "state": "Active",
                })
            })
            .collect();
        json!({
            "businessPhones": [],
            "displayName": user.display_name,
            "givenName": null,
            "jobTitle": null,
            "mail": user.mail,
            "mobilePhone": null,
            "officeLocation": null,
            "preferredLanguage": null,
            "surname": null,
            "userPrincipalName": user.user_principal_name,
            "id": user.id,
            "accountEnabled": user.account_enabled,
            "proxyAddresses": user.proxy_addresses,
            "assignedLicenses": assigned_licenses,
            "assignedPlans": assigned_plans,
            "licenseAssignmentStates": states,
            "userType": "Member",
            "onPremisesSyncEnabled": null,
            "createdDateTime": CREATED_AT,
            "deletedDateTime": null,
        })
    }

    fn license_details(&self, key: &str) -> Result<Value, Failure> {
        let user = self
            .find_user(key)
            .ok_or_else(|| Failure::NotFound(key.to_owned()))?;
        let items = user
            .licenses
            .iter()
            .map(|license| {
                let digest = ring::digest::digest(
                    &ring::digest::SHA256,
                    format!("{}/{}", user.id, license.sku_id).as_bytes(),
                );
                json!({
                    "id": URL_SAFE_NO_PAD.encode(digest.as_ref()),
                    "skuId": license.sku_id,
                    "skuPartNumber": license.sku_part_number,
                    "servicePlans": license.plans.iter().map(plan).collect::<Vec<_>>(),
                })
            })
            .collect();
        self.collection(&format!("users('{}')/licenseDetails", user.id), items)
    }

    // --- deleted items -------------------------------------------------------------------

    fn deleted_object(entry: &DeletedUser) -> Value {
        let user = &entry.user;
        json!({
            "@odata.type": "#microsoft.graph.user",
            "id": user.id,
            "displayName": user.display_name,
            "userPrincipalName": format!("{}{}", user.id.replace('-', ""), user.user_principal_name),
            "mail": user.mail,
            "accountEnabled": user.account_enabled,
            "userType": "Member",
            "deletedDateTime": entry.deleted,
        })
    }

    fn deleted_item(&self, id: &str) -> Result<Value, Failure> {
        self.directory
            .deleted
            .iter()
            .find(|entry| entry.user.id.eq_ignore_ascii_case(id))
            .map(|entry| self.entity("directoryObjects/$entity", Self::deleted_object(entry)))
            .ok_or_else(|| Failure::NotFound(id.to_owned()))
    }

    fn deleted_users(&self) -> Result<Value, Failure> {
        let matcher = match &self.query.filter {
            None => None,
            Some(filter) => Some(UpnFilter::parse(filter).ok_or(Failure::UnsupportedQuery(
                "Unsupported or invalid query filter clause specified for property 'userPrincipalName' of resource 'User'.",
            ))?),
        };
        // Advanced queries on directory objects need both (reference §3.3).
        if matcher.as_ref().is_some_and(UpnFilter::is_advanced)
            && !(self.query.eventual && self.query.count)
        {
            return Err(Failure::UnsupportedQuery(
                "Unsupported or invalid query filter clause specified for property 'userPrincipalName' of resource 'User'.",
            ));
        }
        let items = self
            .directory
            .deleted
            .iter()
            .map(Self::deleted_object)
            .filter(|object| {
                matcher.as_ref().is_none_or(|matcher| {
                    matcher.matches(object["userPrincipalName"].as_str().unwrap_or_default())
                })
            })
            .collect();
        let context = match &self.query.select {
            Some(names) => format!("users({})", names.join(",")),
            None => "users".to_owned(),
        };
        self.collection(&context, items)
    }

    // --- licences ------------------------------------------------------------------------

    fn sku_object_id(&self, sku: &SimSku) -> String {
        format!("{}_{}", self.tenant_id, sku.sku_id)
    }

    fn sku(&self, sku: &SimSku) -> Value {
        json!({
            "accountName": self.account_name,
            "accountId": self.tenant_id,
            "appliesTo": "User",
            "capabilityStatus": sku.capability_status,
            "consumedUnits": sku.consumed,
            "id": self.sku_object_id(sku),
            "prepaidUnits": {
                "enabled": sku.enabled,
                "lockedOut": sku.locked_out,
                "suspended": sku.suspended,
                "warning": sku.warning,
            },
            "servicePlans": sku.service_plans.iter().map(plan).collect::<Vec<_>>(),
            "skuId": sku.sku_id,
            "skuPartNumber": sku.sku_part_number,
            "subscriptionIds": sku.subscription_ids,
        })
    }

    fn subscription(&self, subscription: &SimSubscription) -> Value {
        let service_status: Vec<Value> = self
            .directory
            .skus
            .iter()
            .find(|sku| sku.sku_id.eq_ignore_ascii_case(&subscription.sku_id))
            .map(|sku| sku.service_plans.iter().map(plan).collect())
            .unwrap_or_default();
        json!({
            "createdDateTime": subscription.created,
            "commerceSubscriptionId": subscription.commerce_subscription_id,
            "id": subscription.id,
            "isTrial": subscription.is_trial,
            "nextLifecycleDateTime": subscription.next_lifecycle,
            "serviceStatus": service_status,
            "skuId": subscription.sku_id,
            "skuPartNumber": subscription.sku_part_number,
            "status": subscription.status,
            "totalLicenses": subscription.total_licenses,
            "ownerId": null,
            "ownerTenantId": null,
            "ownerType": null,
        })
    }

    // --- admins --------------------------------------------------------------------------

    fn role_assignments(&self) -> Result<Value, Failure> {
        let role = match &self.query.filter {
            None => None,
            Some(filter) => Some(role_filter(filter).ok_or_else(|| {
                Failure::BadRequest(format!("Invalid filter clause: '{filter}'."))
            })?),
        };
        let expand = self.query.expand.as_deref().is_some_and(|expand| {
            expand
                .split(',')
                .any(|e| e.trim().eq_ignore_ascii_case("principal"))
        });
        let items = if role
            .as_deref()
            .is_none_or(|role| role.eq_ignore_ascii_case(GLOBAL_ADMIN_ROLE_ID))
        {
            self.directory
                .admins
                .iter()
                .map(|admin| {
                    let mut assignment = json!({
                        "id": format!("lAPpYvVpN0KRkAEhdxReE{}-1", admin.id.replace('-', "")),
                        "principalId": admin.id,
                        "resourceScope": "/",
                        "directoryScopeId": "/",
                        "roleDefinitionId": GLOBAL_ADMIN_ROLE_ID,
                    });
                    if expand {
                        assignment["principal"] = self.principal(admin);
                    }
                    assignment
                })
                .collect()
        } else {
            Vec::new()
        };
        let context = if expand {
            "roleManagement/directory/roleAssignments(principal())"
        } else {
            "roleManagement/directory/roleAssignments"
        };
        self.collection(context, items)
    }

    fn principal(&self, admin: &SimAdmin) -> Value {
        match &admin.kind {
            SimPrincipalKind::User => {
                let user = self
                    .directory
                    .users
                    .iter()
                    .find(|user| user.id.eq_ignore_ascii_case(&admin.id));
                json!({
                    "@odata.type": "#microsoft.graph.user",
                    "id": admin.id,
                    "displayName": admin.display_name,
                    "userPrincipalName": user.map(|user| user.user_principal_name.clone()),
                    "mail": user.and_then(|user| user.mail.clone()),
                    "accountEnabled": admin.account_enabled,
                    "userType": admin.user_type,
                })
            }
            SimPrincipalKind::ServicePrincipal => json!({
                "@odata.type": "#microsoft.graph.servicePrincipal",
                "id": admin.id,
                "displayName": admin.display_name,
                "accountEnabled": admin.account_enabled,
                "servicePrincipalType": "Application",
            }),
            SimPrincipalKind::Group { .. } => json!({
                "@odata.type": "#microsoft.graph.group",
                "id": admin.id,
                "displayName": admin.display_name,
                "mail": null,
                "securityEnabled": true,
                "isAssignableToRole": true,
            }),
        }
    }

    fn transitive_members(&self, id: &str) -> Result<Value, Failure> {
        let group = find_group(&self.directory.admins, id)
            .ok_or_else(|| Failure::NotFound(id.to_owned()))?;
        let mut members = Vec::new();
        flatten(group, &mut members);
        let items = members
            .into_iter()
            .map(|member| self.principal(member))
            .collect();
        self.collection("directoryObjects", items)
    }
}

/// The fields `GET /users/{id}` returns without `$select` (reference §3.2).
const DEFAULT_USER_FIELDS: &[&str] = &[
    "businessPhones",
    "displayName",
    "givenName",
    "id",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];
const ASSIGNED_AT: &str = "2024-03-01T10:00:00Z";
const CREATED_AT: &str = "2024-01-15T09:00:00Z";

/// The `service` of an assigned plan, from the plan's name.
fn plan_service(name: &str) -> &'static str {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("EXCHANGE") {
        "exchange"
    } else if upper.starts_with("SHAREPOINT") || upper.starts_with("ONEDRIVE") {
        "SharePoint"
    } else if upper.starts_with("MCO") {
        "MicrosoftCommunicationsOnline"
    } else if upper.starts_with("TEAMS") {
        "TeamspaceAPI"
    } else {
        "MicrosoftOffice"
    }
}

fn plan(plan: &SimPlan) -> Value {
    json!({
        "servicePlanId": plan.service_plan_id,
        "servicePlanName": plan.service_plan_name,
        "provisioningStatus": plan.provisioning_status,
        "appliesTo": plan.applies_to,
    })
}

fn health(entry: &Health) -> Value {
    json!({"service": entry.service, "status": entry.status, "id": entry.id})
}

fn find_group<'a>(admins: &'a [SimAdmin], id: &str) -> Option<&'a [SimAdmin]> {
    admins.iter().find_map(|admin| match &admin.kind {
        SimPrincipalKind::Group { enabled_members } if admin.id.eq_ignore_ascii_case(id) => {
            Some(enabled_members.as_slice())
        }
        SimPrincipalKind::Group { enabled_members } => find_group(enabled_members, id),
        _ => None,
    })
}

/// Members and, for nested groups, the group and its members: what `transitiveMembers` lists.
fn flatten<'a>(members: &'a [SimAdmin], out: &mut Vec<&'a SimAdmin>) {
    for member in members {
        if out
            .iter()
            .any(|seen| seen.id.eq_ignore_ascii_case(&member.id))
        {
            continue;
        }
        out.push(member);
        if let SimPrincipalKind::Group { enabled_members } = &member.kind {
            flatten(enabled_members, out);
        }
    }
}

/// The role id of `roleDefinitionId eq '…'`.
fn role_filter(filter: &str) -> Option<String> {
    let (field, value) = filter.split_once(" eq ")?;
    if !field.trim().eq_ignore_ascii_case("roleDefinitionId") {
        return None;
    }
    odata_string(value.trim())
}

/// `DELETE /v1.0/users/{key}/messages/{id}`: 204, or 404 `ErrorItemNotFound`.
fn delete_message(shared: &Shared, tenant_id: &str, path: &str) -> Result<(), Failure> {
    let decoded = stamp::percent_decode(path);
    let segments: Vec<&str> = decoded
        .strip_prefix("/v1.0/")
        .unwrap_or_default()
        .trim_end_matches('/')
        .split('/')
        .collect();
    let ["users", key, "messages", id] = segments.as_slice() else {
        return Err(Failure::Method);
    };
    let mut state = shared.state.lock();
    let directory = state.directory_mut(tenant_id);
    if directory
        .denied
        .iter()
        .any(|fragment| path.contains(fragment.as_str()))
    {
        return Err(Failure::Denied);
    }
    let user_id = directory
        .users
        .iter()
        .find(|user| {
            user.id.eq_ignore_ascii_case(key) || user.user_principal_name.eq_ignore_ascii_case(key)
        })
        .map(|user| user.id.clone())
        .ok_or_else(|| Failure::NotFound((*key).to_owned()))?;
    let before = directory.messages.len();
    directory
        .messages
        .retain(|m| !(m.id == *id && m.user_id.eq_ignore_ascii_case(&user_id)));
    if directory.messages.len() == before {
        return Err(Failure::NotFound((*id).to_owned()));
    }
    Ok(())
}

/// Whether `address` (any case, `smtp:` prefix or not) is the user's UPN, mail or a proxy
/// address.
pub(super) fn user_has_address(user: &SimUser, address: &str) -> bool {
    let address = address.trim().to_ascii_lowercase();
    user.user_principal_name.eq_ignore_ascii_case(&address)
        || user
            .mail
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case(&address))
        || user.proxy_addresses.iter().any(|proxy| {
            proxy.split_once(':').is_some_and(|(kind, value)| {
                kind.eq_ignore_ascii_case("smtp") && value.eq_ignore_ascii_case(&address)
            })
        })
}

/// Whether the user has a working Exchange Online mailbox plan (reference §3.4).
pub(super) fn has_mailbox(user: &SimUser) -> bool {
    const MAILBOX_PLANS: [&str; 5] = [
        "9aaf7827-d63c-4b61-89c3-182f06f82e5c",
        "efb87545-963c-4e0d-99df-69c6916d9eb0",
        "4a82b400-a79f-41a4-b4e2-e94f5787b113",
        "1126bef5-da20-4f07-b45e-ad25d2581aa8",
        "fc52cc4b-ed7d-472d-bbe7-b081c23ecc56",
    ];
    // A disabled account's mailbox still receives mail; a licence without the plan does not.
    user.licenses.iter().flat_map(|l| &l.plans).any(|plan| {
        MAILBOX_PLANS.contains(&plan.service_plan_id.to_ascii_lowercase().as_str())
            && plan.provisioning_status == "Success"
    })
}

/// `proxyAddresses/any(x:x eq 'smtp:a@b.c')` → `smtp:a@b.c` (any lambda variable name).
fn proxy_filter(filter: &str) -> Option<String> {
    let inner = filter
        .trim()
        .strip_prefix("proxyAddresses/any(")?
        .strip_suffix(')')?;
    let (variable, predicate) = inner.split_once(':')?;
    let (left, value) = predicate.split_once(" eq ")?;
    if left.trim() != variable.trim() {
        return None;
    }
    odata_string(value.trim())
}

/// `'it''s'` → `it's`.
fn odata_string(text: &str) -> Option<String> {
    let inner = text.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(inner.replace("''", "'"))
}

/// The `$filter`s on deleted users' UPNs the simulator understands.
enum UpnFilter {
    Equals(String),
    EndsWith(String),
    StartsWith(String),
}

impl UpnFilter {
    fn parse(filter: &str) -> Option<UpnFilter> {
        let filter = filter.trim();
        if let Some((field, value)) = filter.split_once(" eq ") {
            if field.trim().eq_ignore_ascii_case("userPrincipalName") {
                return odata_string(value.trim()).map(UpnFilter::Equals);
            }
            return None;
        }
        let (function, args) = filter.split_once('(')?;
        let args = args.strip_suffix(')')?;
        let (field, value) = args.split_once(',')?;
        if !field.trim().eq_ignore_ascii_case("userPrincipalName") {
            return None;
        }
        let value = odata_string(value.trim())?;
        match function.trim().to_ascii_lowercase().as_str() {
            "endswith" => Some(UpnFilter::EndsWith(value)),
            "startswith" => Some(UpnFilter::StartsWith(value)),
            _ => None,
        }
    }

    /// `endswith` is an advanced query: `ConsistencyLevel: eventual` and `$count=true`.
    fn is_advanced(&self) -> bool {
        matches!(self, UpnFilter::EndsWith(_))
    }

    fn matches(&self, upn: &str) -> bool {
        let upn = upn.to_ascii_lowercase();
        match self {
            UpnFilter::Equals(value) => upn == value.to_ascii_lowercase(),
            UpnFilter::EndsWith(value) => upn.ends_with(&value.to_ascii_lowercase()),
            UpnFilter::StartsWith(value) => upn.starts_with(&value.to_ascii_lowercase()),
        }
    }
}

/// The tenant whose directory a bearer token reads, or the 401 message.
fn authenticate(shared: &Shared, authorization: Option<&str>) -> Result<String, &'static str> {
    let token = authorization
        .and_then(|value| {
            value
                .strip_prefix("Bearer ")
                .or_else(|| value.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .ok_or("Access token is empty.")?;
    let state = shared.state.lock();
    let issued = state
        .tokens
        .get(token)
        .ok_or("IDX14100: JWT is not well formed, there are no dots (.).")?;
    if issued.expires_at <= Instant::now() {
        return Err("Lifetime validation failed, the token is expired.");
    }
    if !state.tenants.contains_key(&issued.tenant_id) {
        return Err("Access token validation failure. Invalid audience.");
    }
    Ok(issued.tenant_id.clone())
}

fn unauthenticated(shared: &Shared, message: &str, cri: Option<&str>) -> Response {
    let mut response = error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        message,
        cri,
    );
    https::set(
        response.headers_mut(),
        "www-authenticate",
        &format!(
            "Bearer realm=\"\", authorization_uri=\"{}/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
            shared.login_url
        ),
    );
    response
}

/// Graph's `{"error":{"code","message","innerError":{…}}}` with `request-id` headers.
pub(super) fn error(
    status: StatusCode,
    code: &str,
    message: &str,
    client_request_id: Option<&str>,
) -> Response {
    let request_id = stamp::guid();
    let client_request_id = https::client_request_id(client_request_id);
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": Utc::now().graph(),
                "request-id": request_id,
                "client-request-id": client_request_id,
            }
        }
    });
    let mut response = https::json(status, CONTENT_TYPE, &body);
    ids(&mut response, &request_id, &client_request_id);
    response
}

/// The documented throttling answer's body (reference §3.0); the caller adds `Retry-After`.
pub(super) fn too_many_requests(client_request_id: Option<&str>) -> Response {
    let request_id = stamp::guid();
    let client_request_id = https::client_request_id(client_request_id);
    let body = json!({
        "error": {
            "code": "TooManyRequests",
            "innerError": {
                "code": "429",
                "date": Utc::now().graph(),
                "message": "Please retry after",
                "request-id": request_id,
                "client-request-id": client_request_id,
                "status": "429",
            },
            "message": "Please retry again later.",
        }
    });
    let mut response = https::json(StatusCode::TOO_MANY_REQUESTS, CONTENT_TYPE, &body);
    ids(&mut response, &request_id, &client_request_id);
    response
}

fn ids(response: &mut Response, request_id: &str, client_request_id: &str) {
    let headers = response.headers_mut();
    https::set(headers, "request-id", request_id);
    https::set(headers, "client-request-id", client_request_id);
    https::set(
        headers,
        "x-ms-ags-diagnostic",
        r#"{"ServerInfo":{"DataCenter":"West Europe","Slice":"E","Ring":"5","ScaleUnit":"003","RoleInstance":"AM1PEPF0000TWSIM"}}"#,
    );
}
