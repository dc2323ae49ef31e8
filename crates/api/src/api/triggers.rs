//! HTTP triggers: `POST /t/<tenant>/<name>` on the server's port starts a
//! workflow of the tenant with the request's JSON body as its input, so a
//! Git host's webhook, a monitoring alert or a script with `curl` can
//! start one.
//!
//! A request is authenticated by the trigger: an HMAC-SHA256 signature of
//! the body with one of the tenant's secrets, in GitHub's form
//! (`X-Hub-Signature-256: sha256=<hex>`), or a token made with the trigger
//! (`Authorization: Bearer <token>`; only its SHA-256 is stored).
//!
//! Replays: a GitHub-style signature covers the body only, so a captured
//! request stays valid as long as the secret does; its delivery id makes a
//! replay start nothing new, but a replay with another id (or none) starts
//! another execution. A sender that also sends `X-Cerebelum-Timestamp:
//! <Unix seconds>` and signs `<timestamp>.<body>` (Stripe's and Slack's
//! form) bounds that: the server refuses a timestamp more than 5 minutes
//! from its clock, and within those minutes the delivery id keeps a replay
//! idempotent. Failures
//! count against the caller's address like wrong API keys
//! ([`super::throttle`]). A delivery id (`Idempotency-Key`,
//! `X-GitHub-Delivery` or `X-Delivery-Id`) makes the start idempotent: a
//! redelivery returns the execution the first one started (key
//! `trigger:<name>:<delivery id>`). A body over the tenant's payload quota
//! is refused with 413 before it is read past the quota.
//!
//! `POST /t/<tenant>/<name>/<execution>/<signal>`, authenticated the same
//! way, sends signal `<signal>` with the body as payload to an execution
//! of the trigger's workflow (the delivery id becomes the signal's id).
//!
//! Answers are JSON: 202 `{"execution": ID, "created": true}` for a new
//! execution, 200 with `"created": false` for a redelivery, or
//! `{"error": MESSAGE}` with 400, 401, 404, 413, 429 or 503.

use super::audit::Actor;
use super::keys;
use super::service::{Api, StartRequest};
use super::throttle::{self, Throttle};
use crate::error::{Error, Result};
use crate::model::{TenantRecord, TriggerRecord};
use crate::store::NewSignal;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The longest delivery id (it becomes part of an idempotency key).
const MAX_DELIVERY_ID: usize = 200;
/// Headers that carry a delivery id, in order of preference.
const DELIVERY_HEADERS: [&str; 3] = ["idempotency-key", "x-github-delivery", "x-delivery-id"];

/// A trigger as a client asks for it.
#[derive(Debug, Clone)]
pub struct NewTrigger {
    pub name: String,
    pub package: String,
    pub version: Option<i64>,
    pub workflow: String,
    /// Sign with this secret of the tenant; `None`: a token is made.
    pub hmac_secret: Option<String>,
}

/// The idempotency key (and signal id) of delivery `delivery` of trigger
/// `trigger`: `trigger:<name>:<delivery id>`, or, when that is longer than
/// a key may be (a long name with a long id), the id's SHA-256 in its
/// place, so every documented name and id fits.
pub fn delivery_key(trigger: &str, delivery: &str) -> String {
    let key = format!("trigger:{trigger}:{delivery}");
    if key.len() <= super::service::MAX_NAME_BYTES {
        return key;
    }
    format!(
        "trigger:{trigger}:sha256:{}",
        hex::encode(Sha256::digest(delivery.as_bytes()))
    )
}

/// The path a trigger is called at.
pub fn path_of(trigger: &TriggerRecord) -> String {
    format!("/t/{}/{}", trigger.tenant, trigger.name)
}

fn check_trigger_name(name: &str) -> Result<()> {
    super::keys::check_name("trigger", name, 128)
}

impl Api {
    /// Creates a trigger of `tenant`; with no HMAC secret, also the token
    /// its requests carry (shown once).
    pub async fn create_trigger(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        new: NewTrigger,
    ) -> Result<(TriggerRecord, Option<String>)> {
        check_trigger_name(&new.name)?;
        let package = self.describe(tenant, &new.package, new.version).await?;
        package.info.check_workflow(&new.workflow)?;
        if let Some(secret) = &new.hmac_secret {
            let secrets = self.store().catalog().list_secrets(&tenant.name).await?;
            if !secrets.iter().any(|s| &s.name == secret) {
                return Err(Error::InvalidInput(format!(
                    "tenant '{}' has no secret named '{secret}' to sign with; set it first \
                     (`cerebelum admin secret set {} {secret}`)",
                    tenant.name, tenant.name
                )));
            }
        }
        let token = match new.hmac_secret {
            Some(_) => None,
            None => Some(format!("cbt_{}", keys::random_hex(24)?)),
        };
        let now = self.now_ms();
        let record = TriggerRecord {
            tenant: tenant.name.clone(),
            name: new.name.clone(),
            package: package.name.clone(),
            version: new.version,
            workflow: new.workflow.clone(),
            hmac_secret: new.hmac_secret.clone(),
            token_hash: token.as_deref().map(keys::hash),
            created_at_ms: now,
        };
        self.store().catalog().create_trigger(&record).await?;
        let detail = serde_json::json!({ "workflow": record.workflow, "package": record.package });
        actor
            .record(
                self.store(),
                now,
                &tenant.name,
                "trigger.create",
                &record.name,
                Some(detail),
            )
            .await?;
        Ok((record, token))
    }

    pub async fn triggers(&self, tenant: &TenantRecord) -> Result<Vec<TriggerRecord>> {
        self.store().catalog().list_triggers(&tenant.name).await
    }

    /// The executions trigger `name`'s last `limit` deliveries started,
    /// newest first.
    pub async fn deliveries(
        &self,
        tenant: &TenantRecord,
        name: &str,
        limit: i64,
    ) -> Result<Vec<crate::model::ExecutionRecord>> {
        self.store()
            .executions()
            .keyed_executions(&tenant.name, &format!("trigger:{name}:"), limit)
            .await
    }

    pub async fn delete_trigger(
        &self,
        tenant: &TenantRecord,
        actor: &Actor,
        name: &str,
    ) -> Result<()> {
        self.store()
            .catalog()
            .delete_trigger(&tenant.name, name)
            .await?;
        let now = self.now_ms();
        actor
            .record(
                self.store(),
                now,
                &tenant.name,
                "trigger.delete",
                name,
                None,
            )
            .await
    }

    /// The value of `tenant`'s secret `name`, opened.
    async fn secret_value(&self, tenant: &str, name: &str) -> Result<Option<String>> {
        let stored = self.store().catalog().secret_values(tenant).await?;
        let Some((_, value)) = stored.into_iter().find(|(n, _)| n == name) else {
            return Ok(None);
        };
        if !crate::secrets::is_sealed(&value) {
            return Ok(Some(value));
        }
        let key = self.master_key().ok_or_else(|| {
            Error::Unavailable(
                "this server has no master key to open the trigger's secret (--master-key-file)"
                    .into(),
            )
        })?;
        key.open(tenant, name, &value).map(Some)
    }
}

/// What the trigger routes share.
#[derive(Clone)]
pub struct Triggers {
    pub api: Api,
    pub throttle: Throttle,
}

/// The routes of triggers.
pub fn router(triggers: Triggers) -> axum::Router {
    axum::Router::new()
        .route("/t/{tenant}/{name}", axum::routing::post(fire))
        .route(
            "/t/{tenant}/{name}/{execution}/{signal}",
            axum::routing::post(fire_signal),
        )
        .with_state(triggers)
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    answer(status, serde_json::json!({ "error": message.into() }))
}

/// How far a signed timestamp may be from the server's clock.
const TIMESTAMP_WINDOW_MS: i64 = 5 * 60 * 1000;

/// Why a request is not the trigger's: `None` if it is. `now_ms`: the
/// server's clock, for a signed timestamp.
fn authenticate(
    trigger: &TriggerRecord,
    key: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    now_ms: i64,
) -> Option<&'static str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match (&trigger.hmac_secret, &trigger.token_hash) {
        (Some(_), _) => {
            let Some(key) = key else {
                return Some("the trigger's secret is gone");
            };
            let Some(signature) = header("x-hub-signature-256") else {
                return Some(
                    "missing signature: send X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the \
                     body>",
                );
            };
            let Some(digest) = signature
                .trim()
                .strip_prefix("sha256=")
                .and_then(|h| hex::decode(h).ok())
            else {
                return Some("malformed signature: expected sha256=<hex>");
            };
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else {
                return Some("the trigger's secret cannot key an HMAC");
            };
            // A signed timestamp (Stripe's and Slack's form): the HMAC is of
            // `<timestamp>.<body>`, and a request older than the window is
            // refused, so a captured request cannot be replayed later.
            if let Some(timestamp) = header("x-cerebelum-timestamp") {
                let Ok(seconds) = timestamp.trim().parse::<i64>() else {
                    return Some(
                        "malformed X-Cerebelum-Timestamp: expected whole seconds since the Unix                          epoch",
                    );
                };
                if (seconds.saturating_mul(1000) - now_ms).abs() > TIMESTAMP_WINDOW_MS {
                    return Some(
                        "X-Cerebelum-Timestamp is more than 5 minutes from the server's clock                          (a replayed request, or a clock that is off)",
                    );
                }
                mac.update(timestamp.trim().as_bytes());
                mac.update(b".");
            }
            mac.update(body);
            // Constant time.
            mac.verify_slice(&digest)
                .err()
                .map(|_| "wrong signature for this body")
        }
        (None, Some(hash)) => {
            let token = header("authorization")
                .and_then(super::auth::bearer)
                .or_else(|| header("x-cerebelum-token"));
            match token {
                // Hashes compared, not tokens.
                Some(token) if keys::hash(token) == *hash => None,
                Some(_) => Some("wrong token"),
                None => Some("missing token: send Authorization: Bearer <trigger token>"),
            }
        }
        (None, None) => Some("the trigger has no way to authenticate requests"),
    }
}

/// A request the trigger authenticated: its tenant, trigger, JSON body
/// and delivery id.
struct Accepted {
    tenant: TenantRecord,
    trigger: TriggerRecord,
    body: String,
    delivery: Option<String>,
}

/// `POST /t/<tenant>/<name>`: starts the trigger's workflow.
async fn fire(
    State(triggers): State<Triggers>,
    peer: super::web::Peer,
    Path((tenant, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let accepted = match accept(&triggers, peer, &tenant, &name, &headers, body).await {
        Ok(accepted) => accepted,
        Err(refused) => return refused,
    };
    let Accepted {
        tenant,
        trigger,
        body,
        delivery,
    } = accepted;
    let request = StartRequest {
        package: trigger.package.clone(),
        version: trigger.version,
        workflow: trigger.workflow.clone(),
        input: body,
        idempotency_key: delivery.map(|d| delivery_key(&trigger.name, &d)),
        worker_queue: None,
    };
    match triggers.api.start(&tenant, request).await {
        Ok((execution, created)) => answer(
            created_status(created),
            serde_json::json!({ "execution": execution.id, "created": created }),
        ),
        Err(e) => failed(e),
    }
}

/// `POST /t/<tenant>/<name>/<execution>/<signal>`: sends signal `signal`
/// with the body as its payload to an execution the trigger's workflow
/// runs (of another, the answer is 404). A delivery id makes it the
/// signal's id, so a redelivery sends nothing twice.
async fn fire_signal(
    State(triggers): State<Triggers>,
    peer: super::web::Peer,
    Path((tenant, name, execution, signal)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let origin = peer
        .0
        .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
    let accepted = match accept(&triggers, peer, &tenant, &name, &headers, body).await {
        Ok(accepted) => accepted,
        Err(refused) => return refused,
    };
    let api = &triggers.api;
    let not_found = || {
        refuse(
            StatusCode::NOT_FOUND,
            format!("trigger '{name}' has no execution {execution}"),
        )
    };
    match api.store().executions().execution(&execution).await {
        Ok(record)
            if record.tenant == accepted.tenant.name
                && record.package_name == accepted.trigger.package
                && record.workflow == accepted.trigger.workflow => {}
        Ok(_) | Err(Error::NotFound(_)) => return not_found(),
        Err(e) => return failed(e),
    }
    let new = NewSignal {
        name: signal,
        payload: serde_json::from_str(&accepted.body).unwrap_or_default(),
        signal_id: accepted
            .delivery
            .map(|d| delivery_key(&accepted.trigger.name, &d)),
    };
    let actor = Actor {
        id: format!("trigger:{}", accepted.trigger.name),
        origin,
    };
    match api.signal(&accepted.tenant, &actor, &execution, new).await {
        Ok((signal, created)) => answer(
            created_status(created),
            serde_json::json!({
                "execution": execution,
                "signal": signal.name,
                "seq": signal.seq,
                "created": created,
            }),
        ),
        Err(e) => failed(e),
    }
}

fn created_status(created: bool) -> StatusCode {
    if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    }
}

/// Finds trigger `name` of `tenant`, reads the body (up to the tenant's
/// payload quota) and authenticates the request; the refusal otherwise.
async fn accept(
    triggers: &Triggers,
    super::web::Peer(peer): super::web::Peer,
    tenant: &str,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> std::result::Result<Accepted, Response> {
    let ip = peer.map(|p| p.ip());
    if let Err(wait_s) = triggers.throttle.check(ip) {
        crate::metrics::metrics().auth_failures.inc();
        return Err(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            throttle::refusal(wait_s),
        ));
    }
    let api = &triggers.api;
    let found = async {
        let tenant = api.store().catalog().tenant(tenant).await?;
        let trigger = api.store().catalog().trigger(&tenant.name, name).await?;
        Ok::<_, Error>((tenant, trigger))
    };
    let (tenant, trigger) = match found.await {
        Ok(found) => found,
        Err(Error::NotFound(_)) => {
            return Err(refuse(
                StatusCode::NOT_FOUND,
                format!("no trigger /t/{tenant}/{name}"),
            ));
        }
        Err(e) => return Err(failed(e)),
    };
    // The body, up to the tenant's payload quota.
    let limit = api.quotas(&tenant).max_payload_bytes.unwrap_or(i64::MAX) as usize;
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is larger than tenant '{}' may send ({limit} bytes, its max payload \
                 size)",
                tenant.name
            ),
        )
    };
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if announced.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => return Err(too_large()),
    };
    let key = match &trigger.hmac_secret {
        Some(secret) => match api.secret_value(&tenant.name, secret).await {
            Ok(Some(value)) => Some(value),
            // The server's side is wrong, not the caller's: no failure of
            // the caller is counted.
            Ok(None) => {
                return Err(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "the trigger's signing secret '{secret}' no longer exists; tenant '{}' \
                         must set it again (`cerebelum admin secret set {} {secret}`)",
                        tenant.name, tenant.name
                    ),
                ));
            }
            Err(e) => return Err(failed(e)),
        },
        None => None,
    };
    if let Some(why) = authenticate(&trigger, key.as_deref(), headers, &body, api.now_ms()) {
        triggers
            .throttle
            .failed(ip, "a trigger request failed to authenticate");
        return Err(refuse(StatusCode::UNAUTHORIZED, why));
    }
    let body = match std::str::from_utf8(&body) {
        Ok(text) if text.trim().is_empty() => "{}".to_owned(),
        Ok(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(_) => text.to_owned(),
            Err(e) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("the body is not JSON ({})", crate::util::json_error(&e)),
                ));
            }
        },
        Err(_) => {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "the body is not JSON (not UTF-8)",
            ));
        }
    };
    let delivery = DELIVERY_HEADERS
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()));
    if let Some(id) = delivery
        && (id.is_empty() || id.len() > MAX_DELIVERY_ID)
    {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            format!("a delivery id is 1 to {MAX_DELIVERY_ID} characters"),
        ));
    }
    Ok(Accepted {
        tenant,
        trigger,
        body,
        delivery: delivery.map(str::to_owned),
    })
}

/// The answer to a failure of the engine.
fn failed(e: Error) -> Response {
    let (status, message) = super::web::status_of(e);
    refuse(status, message)
}
