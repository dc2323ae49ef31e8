//! Administration: tenants (quotas, sandbox limits, HTTP allow-lists), API
//! keys, secrets and the audit log, for operators.
//!
//! [`Admin`] is what `cerebelum admin` does, on a database; the `Admin`
//! gRPC service ([`AdminGrpc`]) runs it for a server's operator keys (the
//! front door opens it to no other) and for the CLI's `--db` in-process
//! ([`super::local`]); [`super::Client`] calls it. Every change is checked here, once, and recorded in the audit log
//! with its [`Actor`].

use super::audit::Actor;
use super::keys::{self, NewKey};
use super::pb::{self, admin_server::Admin as AdminRpc};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::http::AllowList;
use crate::model::{ApiKeyRecord, AuditRecord, Quotas, SecretRecord, TenantRecord};
use crate::secrets::MasterKey;
use crate::store::SharedStore;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Secrets shorter than this could match ordinary text, and redacting
/// them would garble journals.
pub const MIN_SECRET_LEN: usize = 8;

/// Why a secret cannot be set without a master key, and what to do.
pub const NO_MASTER_KEY: &str = "secrets are stored encrypted, and there is no master key: \
     give --master-key-file FILE (or set CEREBELUM_MASTER_KEY_FILE) to `cerebelum serve` and to \
     `cerebelum admin` on the database; `cerebelum admin master-key create FILE` makes one";

/// The most audit rows one call returns.
pub const MAX_AUDIT_ROWS: i64 = 100_000;

/// What `cerebelum admin` does, on a database, by `actor`: the `Admin`
/// service's implementation.
#[derive(Clone)]
pub(crate) struct Admin {
    store: SharedStore,
    /// Seals secrets; without it, setting one is refused.
    master_key: Option<Arc<MasterKey>>,
    actor: Actor,
}

impl Admin {
    pub fn new(store: SharedStore, master_key: Option<Arc<MasterKey>>, actor: Actor) -> Self {
        Self {
            store,
            master_key,
            actor,
        }
    }

    fn now(&self) -> i64 {
        SystemClock.now_ms()
    }
}

/// A secret's name: letters, digits, '-', '_' and '.'.
pub fn check_secret_name(name: &str) -> Result<()> {
    keys::check_name("secret", name, 256)
}

/// Quotas as a client may send them: each one set is positive, and
/// linear memory fits a 32-bit wasm address space.
fn check_quotas(q: &Quotas) -> Result<()> {
    let fields = [
        ("max_package_bytes", q.max_package_bytes),
        ("max_open_executions", q.max_open_executions),
        ("max_payload_bytes", q.max_payload_bytes),
        ("memory_bytes", q.memory_bytes),
        ("cpu_ms", q.cpu_ms),
        ("fuel", q.fuel),
        ("max_journal_entries", q.max_journal_entries),
        ("max_output_bytes", q.max_output_bytes),
        ("max_response_bytes", q.max_response_bytes),
        ("max_concurrency", q.max_concurrency),
        ("max_journal_rate", q.max_journal_rate),
        ("max_streams", q.max_streams),
        ("max_start_rate", q.max_start_rate),
    ];
    for (name, value) in fields {
        if let Some(v) = value
            && v < 1
        {
            return Err(Error::InvalidInput(format!(
                "quota {name} is {v}; a quota is at least 1 (leave it unset for the server's \
                 default)"
            )));
        }
    }
    if let Some(m) = q.memory_bytes
        && m > 4 << 30
    {
        return Err(Error::InvalidInput(format!(
            "quota memory_bytes is {m}; a wasm32 instance has at most 4 GiB"
        )));
    }
    Ok(())
}

fn check_allow_list(http_allow: &[String]) -> Result<()> {
    AllowList::parse(http_allow).map(drop)
}

impl Admin {
    async fn create_tenant(
        &self,
        name: &str,
        quotas: Quotas,
        http_allow: Vec<String>,
    ) -> Result<TenantRecord> {
        keys::check_tenant_name(name)?;
        check_quotas(&quotas)?;
        check_allow_list(&http_allow)?;
        let now = self.now();
        let created = self
            .store
            .catalog()
            .create_tenant(name, &quotas, &http_allow, now)
            .await?;
        let actor = &self.actor;
        actor
            .record(&self.store, now, name, "tenant.create", name, None)
            .await?;
        Ok(created)
    }

    async fn update_tenant(
        &self,
        name: &str,
        quotas: Quotas,
        http_allow: Option<Vec<String>>,
    ) -> Result<TenantRecord> {
        check_quotas(&quotas)?;
        if let Some(allow) = &http_allow {
            check_allow_list(allow)?;
        }
        let current = self.store.catalog().tenant(name).await?;
        let allow = http_allow.unwrap_or(current.http_allow);
        let updated = self
            .store
            .catalog()
            .update_tenant(name, &quotas.or(current.quotas), &allow)
            .await?;
        let now = self.now();
        self.actor
            .record(&self.store, now, name, "tenant.update", name, None)
            .await?;
        Ok(updated)
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        self.store.catalog().list_tenants().await
    }

    async fn create_key(&self, tenant: Option<&str>, expires_in_ms: Option<i64>) -> Result<NewKey> {
        let now = self.now();
        let expires_at = match expires_in_ms {
            Some(ms) if ms <= 0 => {
                return Err(Error::InvalidInput(format!(
                    "a key's lifetime must be positive, not {ms} ms"
                )));
            }
            Some(ms) => Some(now.saturating_add(ms)),
            None => None,
        };
        let (key, action) = match tenant {
            Some(tenant) => (
                keys::create(&self.store, tenant, now, expires_at).await?,
                "key.create",
            ),
            None => (
                keys::create_operator(&self.store, now, expires_at).await?,
                "operator_key.create",
            ),
        };
        let detail = expires_at.map(|at| serde_json::json!({ "expires_at_ms": at }));
        let of = tenant.unwrap_or_default();
        self.actor
            .record(&self.store, now, of, action, &key.record.id, detail)
            .await?;
        Ok(key)
    }

    async fn keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        match tenant {
            Some(tenant) => {
                self.store.catalog().tenant(tenant).await?;
                self.store.catalog().list_api_keys(tenant).await
            }
            None => self.store.catalog().list_operator_keys().await,
        }
    }

    async fn revoke_key(&self, id: &str) -> Result<ApiKeyRecord> {
        let now = self.now();
        let key = self
            .store
            .catalog()
            .revoke_api_key(keys::id_of(id), now)
            .await?;
        self.actor
            .record(&self.store, now, &key.tenant, "key.revoke", &key.id, None)
            .await?;
        Ok(key)
    }

    async fn set_secret(&self, tenant: &str, name: &str, value: &str) -> Result<SecretRecord> {
        check_secret_name(name)?;
        self.store.catalog().tenant(tenant).await?;
        let Some(key) = &self.master_key else {
            return Err(Error::Conflict(NO_MASTER_KEY.into()));
        };
        let length = value.chars().count();
        if length < MIN_SECRET_LEN {
            return Err(Error::InvalidInput(format!(
                "the secret is {length} characters long; give at least {MIN_SECRET_LEN}: \
                 shorter values cannot be told apart from ordinary text when they are redacted"
            )));
        }
        let sealed = key.seal(tenant, name, value)?;
        let now = self.now();
        let secret = self
            .store
            .catalog()
            .set_secret(tenant, name, &sealed, now)
            .await?;
        self.actor
            .record(&self.store, now, tenant, "secret.set", name, None)
            .await?;
        Ok(secret)
    }

    async fn secrets(&self, tenant: &str) -> Result<Vec<SecretRecord>> {
        self.store.catalog().tenant(tenant).await?;
        self.store.catalog().list_secrets(tenant).await
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<()> {
        self.store.catalog().delete_secret(tenant, name).await?;
        let now = self.now();
        self.actor
            .record(&self.store, now, tenant, "secret.delete", name, None)
            .await
    }

    async fn audit(
        &self,
        tenant: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>> {
        if !(1..=MAX_AUDIT_ROWS).contains(&limit) {
            return Err(Error::InvalidInput(format!(
                "limit {limit}: ask for 1 to {MAX_AUDIT_ROWS} rows"
            )));
        }
        if let Some(tenant) = tenant {
            self.store.catalog().tenant(tenant).await?;
        }
        self.store.catalog().list_audit(tenant, before, limit).await
    }
}

/// The operator who made a call of the `Admin` service (put there by the
/// front door).
#[derive(Debug, Clone)]
pub struct Operator {
    pub actor: Actor,
}

/// The `cerebelum.v1.Admin` service: [`Admin`] as the calling operator.
pub struct AdminGrpc {
    store: SharedStore,
    master_key: Option<Arc<MasterKey>>,
}

impl AdminGrpc {
    pub fn new(store: SharedStore, master_key: Option<Arc<MasterKey>>) -> Self {
        Self { store, master_key }
    }

    fn admin<T>(&self, request: &Request<T>) -> std::result::Result<Admin, Status> {
        let operator = request.extensions().get::<Operator>().ok_or_else(|| {
            tracing::error!("an admin request reached the service without passing the front door");
            Status::internal("internal error; the server's log has the details")
        })?;
        Ok(Admin::new(
            self.store.clone(),
            self.master_key.clone(),
            operator.actor.clone(),
        ))
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

fn reply<T>(result: Result<T>) -> Reply<T> {
    result.map(Response::new).map_err(super::grpc::status)
}

/// `""` as none.
fn named(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

#[tonic::async_trait]
impl AdminRpc for AdminGrpc {
    async fn create_tenant(&self, request: Request<pb::CreateTenantRequest>) -> Reply<pb::Tenant> {
        let admin = self.admin(&request)?;
        let r = request.into_inner();
        let quotas = quotas_from_pb(r.quotas.unwrap_or_default());
        let created = admin.create_tenant(&r.name, quotas, r.http_allow).await;
        reply(created.map(|t| tenant_to_pb(&t)))
    }

    async fn update_tenant(&self, request: Request<pb::UpdateTenantRequest>) -> Reply<pb::Tenant> {
        let admin = self.admin(&request)?;
        let r = request.into_inner();
        let quotas = quotas_from_pb(r.quotas.unwrap_or_default());
        let allow = r.replace_http_allow.then_some(r.http_allow);
        let updated = admin.update_tenant(&r.name, quotas, allow).await;
        reply(updated.map(|t| tenant_to_pb(&t)))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Reply<pb::ListTenantsResponse> {
        let admin = self.admin(&request)?;
        reply(admin.tenants().await.map(|t| pb::ListTenantsResponse {
            tenants: t.iter().map(tenant_to_pb).collect(),
        }))
    }

    async fn create_key(
        &self,
        request: Request<pb::CreateKeyRequest>,
    ) -> Reply<pb::CreateKeyResponse> {
        let admin = self.admin(&request)?;
        let r = request.into_inner();
        let tenant = match (named(&r.tenant), r.operator) {
            (Some(_), true) | (None, false) => {
                return Err(Status::invalid_argument(
                    "name a tenant, or ask for an operator key: one of the two",
                ));
            }
            (tenant, _) => tenant,
        };
        let key = admin.create_key(tenant, r.expires_in_ms).await;
        reply(key.map(|k| pb::CreateKeyResponse {
            key: Some(key_to_pb(&k.record)),
            secret: k.secret,
        }))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Reply<pb::ListKeysResponse> {
        let admin = self.admin(&request)?;
        let r = request.get_ref();
        let tenant = match (named(&r.tenant), r.operator) {
            (Some(_), true) | (None, false) => {
                return Err(Status::invalid_argument(
                    "name a tenant, or ask for the operator keys: one of the two",
                ));
            }
            (tenant, _) => tenant,
        };
        reply(admin.keys(tenant).await.map(|k| pb::ListKeysResponse {
            keys: k.iter().map(key_to_pb).collect(),
        }))
    }

    async fn revoke_key(&self, request: Request<pb::RevokeKeyRequest>) -> Reply<pb::ApiKey> {
        let admin = self.admin(&request)?;
        let revoked = admin.revoke_key(&request.get_ref().id).await;
        reply(revoked.map(|k| key_to_pb(&k)))
    }

    async fn set_secret(&self, request: Request<pb::SetSecretRequest>) -> Reply<pb::Secret> {
        let admin = self.admin(&request)?;
        let r = request.get_ref();
        let set = admin.set_secret(&r.tenant, &r.name, &r.value).await;
        reply(set.map(|s| secret_to_pb(&s)))
    }

    async fn list_secrets(
        &self,
        request: Request<pb::ListSecretsRequest>,
    ) -> Reply<pb::ListSecretsResponse> {
        let admin = self.admin(&request)?;
        let secrets = admin.secrets(&request.get_ref().tenant).await;
        reply(secrets.map(|s| pb::ListSecretsResponse {
            secrets: s.iter().map(secret_to_pb).collect(),
        }))
    }

    async fn delete_secret(
        &self,
        request: Request<pb::DeleteSecretRequest>,
    ) -> Reply<pb::DeleteSecretResponse> {
        let admin = self.admin(&request)?;
        let r = request.get_ref();
        let deleted = admin.delete_secret(&r.tenant, &r.name).await;
        reply(deleted.map(|()| pb::DeleteSecretResponse {}))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Reply<pb::ListAuditResponse> {
        let admin = self.admin(&request)?;
        let r = request.get_ref();
        let limit = if r.limit == 0 { 50 } else { r.limit };
        let rows = admin.audit(named(&r.tenant), r.before, limit).await;
        reply(rows.map(|rows| pb::ListAuditResponse {
            records: rows.iter().map(audit_to_pb).collect(),
        }))
    }
}

/// The fields of [`Quotas`] and [`pb::Quotas`], which have the same names.
macro_rules! quota_fields {
    ($from:expr, $to:ident) => {
        $to {
            max_package_bytes: $from.max_package_bytes,
            max_open_executions: $from.max_open_executions,
            max_payload_bytes: $from.max_payload_bytes,
            memory_bytes: $from.memory_bytes,
            cpu_ms: $from.cpu_ms,
            fuel: $from.fuel,
            max_journal_entries: $from.max_journal_entries,
            max_output_bytes: $from.max_output_bytes,
            max_response_bytes: $from.max_response_bytes,
            max_concurrency: $from.max_concurrency,
            max_journal_rate: $from.max_journal_rate,
            max_streams: $from.max_streams,
            max_start_rate: $from.max_start_rate,
        }
    };
}

pub fn quotas_to_pb(q: &Quotas) -> pb::Quotas {
    use pb::Quotas as To;
    quota_fields!(q, To)
}

pub fn quotas_from_pb(q: pb::Quotas) -> Quotas {
    quota_fields!(q, Quotas)
}

pub fn tenant_to_pb(t: &TenantRecord) -> pb::Tenant {
    pb::Tenant {
        name: t.name.clone(),
        created_at_ms: t.created_at_ms,
        quotas: Some(quotas_to_pb(&t.quotas)),
        http_allow: t.http_allow.clone(),
    }
}

pub fn tenant_from_pb(t: pb::Tenant) -> TenantRecord {
    TenantRecord {
        name: t.name,
        created_at_ms: t.created_at_ms,
        quotas: quotas_from_pb(t.quotas.unwrap_or_default()),
        http_allow: t.http_allow,
    }
}

pub fn key_to_pb(k: &ApiKeyRecord) -> pb::ApiKey {
    pb::ApiKey {
        id: k.id.clone(),
        tenant: k.tenant.clone(),
        created_at_ms: k.created_at_ms,
        revoked_at_ms: k.revoked_at_ms,
        expires_at_ms: k.expires_at_ms,
        last_used_at_ms: k.last_used_at_ms,
    }
}

pub fn key_from_pb(k: pb::ApiKey) -> ApiKeyRecord {
    ApiKeyRecord {
        id: k.id,
        tenant: k.tenant,
        created_at_ms: k.created_at_ms,
        revoked_at_ms: k.revoked_at_ms,
        expires_at_ms: k.expires_at_ms,
        last_used_at_ms: k.last_used_at_ms,
    }
}

pub fn secret_to_pb(s: &SecretRecord) -> pb::Secret {
    pb::Secret {
        tenant: s.tenant.clone(),
        name: s.name.clone(),
        updated_at_ms: s.updated_at_ms,
    }
}

pub fn secret_from_pb(s: pb::Secret) -> SecretRecord {
    SecretRecord {
        tenant: s.tenant,
        name: s.name,
        updated_at_ms: s.updated_at_ms,
    }
}

pub fn audit_to_pb(a: &AuditRecord) -> pb::AuditRecord {
    pb::AuditRecord {
        id: a.id,
        at_ms: a.at_ms,
        tenant: a.tenant.clone(),
        actor: a.actor.clone(),
        origin: a.origin.clone(),
        action: a.action.clone(),
        target: a.target.clone(),
        detail_json: a.detail.as_ref().map(|d| d.to_string()).unwrap_or_default(),
    }
}

pub fn audit_from_pb(a: pb::AuditRecord) -> AuditRecord {
    AuditRecord {
        id: a.id,
        at_ms: a.at_ms,
        tenant: a.tenant,
        actor: a.actor,
        origin: a.origin,
        action: a.action,
        target: a.target,
        detail: serde_json::from_str(&a.detail_json).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_survive_the_wire() {
        let q = Quotas {
            max_package_bytes: Some(1),
            fuel: Some(6),
            max_start_rate: Some(13),
            ..Quotas::default()
        };
        assert_eq!(quotas_from_pb(quotas_to_pb(&q)), q);
        assert_eq!(quotas_from_pb(pb::Quotas::default()), Quotas::default());
    }
}
