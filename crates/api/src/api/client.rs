//! The gRPC client of `cerebelum.v1`: [`Operations`] on a remote
//! `cerebelum serve`, as the tenant of an API key. Messages are turned
//! back into records ([`super::convert`]), so a command prints the same
//! way whether its work went to the local database or to a server, and
//! the server's errors come back as the engine's own [`Error`] kinds.

use super::admin::{self, AdminOperations};
use super::convert::{
    approval_from_pb, entry_from_pb, execution_from_pb, package_from_pb, schedule_from_pb,
    signal_from_pb, status_to_pb, trigger_from_pb, worker_from_pb,
};
use super::keys::NewKey;
use super::ops::{Events, Operations};
use super::pb::{self, cerebelum_client::CerebelumClient};
use super::schedules::NewSchedule;
use super::service::{ExecutionView, Page, StartRequest, WatchEvent};
use super::triggers::NewTrigger;
use crate::error::{Error, Result};
use crate::journal::Entry;
use crate::model::{
    ApiKeyRecord, ApprovalRecord, AuditRecord, Decision, ExecutionRecord, ListFilter,
    PackageRecord, Quotas, ScheduleRecord, SecretRecord, SignalRecord, TenantRecord, TriggerRecord,
    WorkerRecord,
};
use crate::store::NewSignal;
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Code, Status};

/// Largest message the client sends or accepts (an upload carries a
/// package).
const MAX_MESSAGE: usize = 256 << 20;

/// The engine error of a status the server answered with. The message
/// keeps the server's words and names its code, e.g. `… (server:
/// NotFound)`. A server that is down or restarting is
/// [`Error::Unavailable`]: worth trying again.
pub fn from_status(status: Status) -> Error {
    let mut message = format!("{} (server: {:?})", status.message(), status.code());
    if status.message().contains("h2 protocol error") {
        // What a plaintext client reads from a TLS server.
        message.push_str("; if the server runs with --tls-cert, reach it with an https:// URL");
    }
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => Error::InvalidInput(message),
        Code::NotFound => Error::NotFound(message),
        Code::ResourceExhausted => Error::QuotaExceeded(message),
        Code::Unauthenticated => Error::Unauthenticated(message),
        Code::PermissionDenied => Error::PermissionDenied(message),
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => Error::Conflict(message),
        Code::Unavailable | Code::Unknown | Code::Cancelled => Error::Unavailable(message),
        _ => Error::Remote(message),
    }
}

/// Adds `authorization: Bearer KEY` to every request.
#[derive(Clone)]
struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Grpc = CerebelumClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;
type WorkerGrpc = pb::worker_service_client::WorkerServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, Auth>,
>;
type AdminGrpc =
    pb::admin_client::AdminClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

/// What `--server` names, checked before anything is sent: `http://` or
/// `https://` (TLS; the certificate is checked against the public roots,
/// or a private CA given with `--ca-cert`). `HOST:PORT` means
/// `http://HOST:PORT`.
#[derive(Debug, PartialEq)]
pub struct ServerUrl {
    pub url: String,
    /// Spoken to over TLS.
    pub tls: bool,
    /// The key travels over the network in clear (plaintext, not to a
    /// loopback address).
    pub in_clear: bool,
}

impl ServerUrl {
    pub fn parse(text: &str) -> Result<Self> {
        let (scheme, rest) = text.split_once("://").unwrap_or(("http", text));
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => {
                return Err(Error::InvalidInput(format!(
                    "--server {text}: unknown scheme {other:?}; use http://HOST:PORT (e.g. \
                     http://127.0.0.1:7433) or https://HOST:PORT"
                )));
            }
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        if host.is_empty() {
            return Err(Error::InvalidInput(format!(
                "--server {text}: no host; use http://HOST:PORT or https://HOST:PORT"
            )));
        }
        let scheme = if tls { "https" } else { "http" };
        Ok(Self {
            url: format!("{scheme}://{rest}"),
            tls,
            in_clear: !tls && !is_loopback(host),
        })
    }
}

/// How a client speaks TLS to an `https://` server: a private CA to trust
/// (else the public web roots), and a client certificate for a server
/// that asks for one (`serve --tls-client-ca`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientTls {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl ClientTls {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// tonic's configuration for a server named `domain`.
    fn config(&self, domain: &str) -> Result<ClientTlsConfig> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                Error::InvalidInput(format!("cannot read the {what} {}: {e}", path.display()))
            })
        };
        let mut config = ClientTlsConfig::new().domain_name(domain);
        config = match &self.ca_cert {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca, "CA (--ca-cert)")?)),
            None => config.with_webpki_roots(),
        };
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => Ok(config.identity(Identity::from_pem(
                read(cert, "client certificate (--client-cert)")?,
                read(key, "client key (--client-key)")?,
            ))),
            (None, None) => Ok(config),
            _ => Err(Error::InvalidInput(
                "--client-cert and --client-key go together: give both, or neither".into(),
            )),
        }
    }
}

/// `localhost` or a loopback IP address (names are not resolved: any
/// other name may lead off this machine).
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// [`Operations`] on a `cerebelum serve`, over gRPC.
#[derive(Clone)]
pub struct Remote {
    url: String,
    api_key: Option<String>,
    tls: ClientTls,
    client: Grpc,
    workers: WorkerGrpc,
    admin: AdminGrpc,
}

impl Remote {
    /// Connects to `url` (checked by [`ServerUrl::parse`]) with `api_key`,
    /// over TLS set up by `tls` if the URL is `https://`.
    pub async fn connect(url: &str, api_key: Option<&str>, tls: &ClientTls) -> Result<Self> {
        let auth = match api_key.filter(|k| !k.trim().is_empty()) {
            Some(key) => Some(format!("Bearer {key}").parse().map_err(|e| {
                Error::InvalidInput(format!(
                    "the API key has characters a header cannot carry: {e}"
                ))
            })?),
            None => None,
        };
        let mut endpoint = Channel::from_shared(url.to_owned())
            .map_err(|e| Error::InvalidInput(format!("invalid server URL {url:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        let https = endpoint.uri().scheme_str() == Some("https");
        if https {
            let host = endpoint.uri().host().unwrap_or_default();
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            endpoint = endpoint
                .tls_config(tls.config(&host)?)
                .map_err(|e| Error::InvalidInput(format!("TLS settings for {url}: {e}")))?;
        } else if !tls.is_empty() {
            return Err(Error::InvalidInput(format!(
                "--ca-cert, --client-cert and --client-key are for https:// servers, and {url} \
                 is not one (nothing was sent)"
            )));
        }
        let channel = endpoint.connect().await.map_err(|e| {
            from_status(Status::unavailable(format!(
                "cannot reach the Cerebelum server at {url} ({}); {}",
                error_chain(&e),
                if https {
                    "is `cerebelum serve --tls-cert` running there, and is its certificate \
                     signed by a CA this client trusts (--ca-cert)?"
                } else {
                    "is `cerebelum serve` running there (without TLS; use https:// for a \
                     server with --tls-cert)?"
                }
            )))
        })?;
        let workers = pb::worker_service_client::WorkerServiceClient::with_interceptor(
            channel.clone(),
            Auth(auth.clone()),
        );
        let admin =
            pb::admin_client::AdminClient::with_interceptor(channel.clone(), Auth(auth.clone()));
        let client = CerebelumClient::with_interceptor(channel, Auth(auth))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Self {
            url: url.to_owned(),
            api_key: api_key.map(str::to_owned),
            tls: tls.clone(),
            client,
            workers,
            admin,
        })
    }

    fn grpc(&self) -> Grpc {
        self.client.clone()
    }

    /// The server's `Admin` service, with this connection's key (an
    /// operator key, or every call is PERMISSION_DENIED).
    pub fn admin(&self) -> RemoteAdmin {
        RemoteAdmin {
            url: self.url.clone(),
            client: self.admin.clone(),
        }
    }
}

/// [`AdminOperations`] on a `cerebelum serve`, as the operator of the key.
#[derive(Clone)]
pub struct RemoteAdmin {
    url: String,
    client: AdminGrpc,
}

#[async_trait]
impl AdminOperations for RemoteAdmin {
    async fn create_tenant(
        &self,
        name: &str,
        quotas: Quotas,
        http_allow: Vec<String>,
    ) -> Result<TenantRecord> {
        let request = pb::CreateTenantRequest {
            name: name.to_owned(),
            quotas: Some(admin::quotas_to_pb(&quotas)),
            http_allow,
        };
        let reply = self.client.clone().create_tenant(request).await;
        Ok(admin::tenant_from_pb(
            reply.map_err(from_status)?.into_inner(),
        ))
    }

    async fn update_tenant(
        &self,
        name: &str,
        quotas: Quotas,
        http_allow: Option<Vec<String>>,
    ) -> Result<TenantRecord> {
        let request = pb::UpdateTenantRequest {
            name: name.to_owned(),
            quotas: Some(admin::quotas_to_pb(&quotas)),
            replace_http_allow: http_allow.is_some(),
            http_allow: http_allow.unwrap_or_default(),
        };
        let reply = self.client.clone().update_tenant(request).await;
        Ok(admin::tenant_from_pb(
            reply.map_err(from_status)?.into_inner(),
        ))
    }

    async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        let reply = self
            .client
            .clone()
            .list_tenants(pb::ListTenantsRequest {})
            .await;
        let tenants = reply.map_err(from_status)?.into_inner().tenants;
        Ok(tenants.into_iter().map(admin::tenant_from_pb).collect())
    }

    async fn create_key(&self, tenant: Option<&str>, expires_in_ms: Option<i64>) -> Result<NewKey> {
        let request = pb::CreateKeyRequest {
            tenant: tenant.unwrap_or_default().to_owned(),
            operator: tenant.is_none(),
            expires_in_ms,
        };
        let reply = self.client.clone().create_key(request).await;
        let reply = reply.map_err(from_status)?.into_inner();
        let record = reply
            .key
            .ok_or_else(|| Error::Remote("the server's reply has no key".into()))?;
        Ok(NewKey {
            record: admin::key_from_pb(record),
            secret: reply.secret,
        })
    }

    async fn keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let request = pb::ListKeysRequest {
            tenant: tenant.unwrap_or_default().to_owned(),
            operator: tenant.is_none(),
        };
        let reply = self.client.clone().list_keys(request).await;
        let keys = reply.map_err(from_status)?.into_inner().keys;
        Ok(keys.into_iter().map(admin::key_from_pb).collect())
    }

    async fn revoke_key(&self, id: &str) -> Result<ApiKeyRecord> {
        let request = pb::RevokeKeyRequest { id: id.to_owned() };
        let reply = self.client.clone().revoke_key(request).await;
        Ok(admin::key_from_pb(reply.map_err(from_status)?.into_inner()))
    }

    async fn set_secret(&self, tenant: &str, name: &str, value: &str) -> Result<SecretRecord> {
        let request = pb::SetSecretRequest {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            value: value.to_owned(),
        };
        let reply = self.client.clone().set_secret(request).await;
        Ok(admin::secret_from_pb(
            reply.map_err(from_status)?.into_inner(),
        ))
    }

    async fn secrets(&self, tenant: &str) -> Result<Vec<SecretRecord>> {
        let request = pb::ListSecretsRequest {
            tenant: tenant.to_owned(),
        };
        let reply = self.client.clone().list_secrets(request).await;
        let secrets = reply.map_err(from_status)?.into_inner().secrets;
        Ok(secrets.into_iter().map(admin::secret_from_pb).collect())
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<()> {
        let request = pb::DeleteSecretRequest {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        };
        let reply = self.client.clone().delete_secret(request).await;
        reply.map_err(from_status)?;
        Ok(())
    }

    async fn audit(
        &self,
        tenant: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>> {
        let request = pb::ListAuditRequest {
            tenant: tenant.unwrap_or_default().to_owned(),
            before,
            limit,
        };
        let reply = self.client.clone().list_audit(request).await;
        let records = reply.map_err(from_status)?.into_inner().records;
        Ok(records.into_iter().map(admin::audit_from_pb).collect())
    }

    fn place(&self) -> String {
        self.url.clone()
    }
}

/// An error with its causes (tonic's transport errors say little at the
/// top: "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn entries(entries: Vec<pb::JournalEntry>) -> Result<Vec<Entry>> {
    entries
        .into_iter()
        .map(|e| entry_from_pb(e).map_err(Error::Remote))
        .collect()
}

#[async_trait]
impl Operations for Remote {
    fn place(&self) -> String {
        self.url.clone()
    }

    async fn upload(&self, name: &str, wasm: Vec<u8>) -> Result<PackageRecord> {
        let request = pb::UploadPackageRequest {
            name: name.to_owned(),
            wasm,
        };
        let reply = self.grpc().upload_package(request).await;
        Ok(package_from_pb(reply.map_err(from_status)?.into_inner()))
    }

    async fn packages(&self) -> Result<Vec<PackageRecord>> {
        let reply = self.grpc().list_packages(pb::ListPackagesRequest {}).await;
        let packages = reply.map_err(from_status)?.into_inner().packages;
        Ok(packages.into_iter().map(package_from_pb).collect())
    }

    async fn describe(&self, name: &str, version: Option<i64>) -> Result<PackageRecord> {
        let request = pb::DescribePackageRequest {
            name: name.to_owned(),
            version,
        };
        let reply = self.grpc().describe_package(request).await;
        Ok(package_from_pb(reply.map_err(from_status)?.into_inner()))
    }

    async fn start(&self, request: StartRequest) -> Result<(ExecutionRecord, bool)> {
        let request = pb::StartExecutionRequest {
            package: request.package,
            version: request.version,
            workflow: request.workflow,
            input_json: request.input,
            idempotency_key: request.idempotency_key,
            worker_queue: request.worker_queue,
        };
        let reply = self.grpc().start_execution(request).await;
        let reply = reply.map_err(from_status)?.into_inner();
        let execution = reply
            .execution
            .ok_or_else(|| Error::Remote("the server's reply has no execution".into()))?;
        Ok((execution_from_pb(execution).record, reply.created))
    }

    async fn execution(&self, id: &str) -> Result<ExecutionView> {
        let request = pb::GetExecutionRequest { id: id.to_owned() };
        let reply = self.grpc().get_execution(request).await;
        Ok(execution_from_pb(reply.map_err(from_status)?.into_inner()))
    }

    async fn list(&self, filter: ListFilter, page_token: Option<&str>) -> Result<Page> {
        let request = pb::ListExecutionsRequest {
            status: filter.status.map(|s| status_to_pb(s) as i32).unwrap_or(0),
            package: filter.package.unwrap_or_default(),
            workflow: filter.workflow.unwrap_or_default(),
            page_size: filter.limit.clamp(0, i32::MAX as i64) as i32,
            page_token: page_token.unwrap_or_default().to_owned(),
        };
        let reply = self.grpc().list_executions(request).await;
        let reply = reply.map_err(from_status)?.into_inner();
        Ok(Page {
            executions: reply
                .executions
                .into_iter()
                .map(|e| execution_from_pb(e).record)
                .collect(),
            next: (!reply.next_page_token.is_empty()).then_some(reply.next_page_token),
        })
    }

    async fn journal(&self, id: &str, after_seq: i64) -> Result<Vec<Entry>> {
        let request = pb::GetJournalRequest {
            id: id.to_owned(),
            after_seq,
        };
        let reply = self.grpc().get_journal(request).await;
        entries(reply.map_err(from_status)?.into_inner().entries)
    }

    async fn decide(&self, id: &str, key: &str, decision: Decision) -> Result<ApprovalRecord> {
        let mut client = self.grpc();
        let reply = match decision {
            Decision::Approve(payload) => {
                let request = pb::ApproveRequest {
                    id: id.to_owned(),
                    key: key.to_owned(),
                    payload_json: payload.to_string(),
                };
                client.approve(request).await
            }
            Decision::Reject(reason) => {
                let request = pb::RejectRequest {
                    id: id.to_owned(),
                    key: key.to_owned(),
                    reason,
                };
                client.reject(request).await
            }
        };
        Ok(approval_from_pb(reply.map_err(from_status)?.into_inner()))
    }

    async fn signal(&self, id: &str, signal: NewSignal) -> Result<(SignalRecord, bool)> {
        let request = pb::SignalRequest {
            id: id.to_owned(),
            name: signal.name,
            payload_json: signal.payload.to_string(),
            signal_id: signal.signal_id.unwrap_or_default(),
        };
        let reply = self.grpc().signal(request).await;
        let reply = reply.map_err(from_status)?.into_inner();
        let signal = reply
            .signal
            .ok_or_else(|| Error::Remote("the server sent no signal".into()))?;
        Ok((signal_from_pb(signal), reply.created))
    }

    async fn set_paused(&self, id: &str, paused: bool) -> Result<ExecutionRecord> {
        let id = id.to_owned();
        let mut client = self.grpc();
        let reply = if paused {
            client.pause(pb::PauseRequest { id }).await
        } else {
            client.resume(pb::ResumeRequest { id }).await
        };
        Ok(execution_from_pb(reply.map_err(from_status)?.into_inner()).record)
    }

    async fn cancel(&self, id: &str) -> Result<ExecutionRecord> {
        let request = pb::CancelRequest { id: id.to_owned() };
        let reply = self.grpc().cancel(request).await;
        Ok(execution_from_pb(reply.map_err(from_status)?.into_inner()).record)
    }

    async fn retry(&self, id: &str) -> Result<ExecutionRecord> {
        let request = pb::RetryRequest { id: id.to_owned() };
        let reply = self.grpc().retry(request).await;
        Ok(execution_from_pb(reply.map_err(from_status)?.into_inner()).record)
    }

    async fn watch(&self, id: &str, after_seq: i64) -> Result<Events> {
        let request = pb::WatchExecutionRequest {
            id: id.to_owned(),
            after_seq,
        };
        let reply = self.grpc().watch_execution(request).await;
        let mut stream = reply.map_err(from_status)?.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    message = stream.message() => match message {
                        Ok(Some(pb::WatchEvent { event: Some(e) })) => e,
                        Ok(Some(_)) => continue,
                        // The stream ended before the execution did: the
                        // server went away.
                        Ok(None) => {
                            let closed = Status::unavailable("the server closed the stream");
                            let _ = tx.send(Err(from_status(closed))).await;
                            return;
                        }
                        Err(status) => {
                            let _ = tx.send(Err(from_status(status))).await;
                            return;
                        }
                    },
                    () = tx.closed() => return,
                };
                let out = match event {
                    pb::watch_event::Event::Entry(e) => match entry_from_pb(e) {
                        Ok(e) => WatchEvent::Entry(e),
                        Err(e) => {
                            let _ = tx.send(Err(Error::Remote(e))).await;
                            return;
                        }
                    },
                    pb::watch_event::Event::Finished(e) => {
                        WatchEvent::Finished(execution_from_pb(e).record)
                    }
                    // Also sent as a `report-progress` entry.
                    pb::watch_event::Event::Progress(_) => continue,
                };
                let last = matches!(out, WatchEvent::Finished(_));
                if tx.send(Ok(out)).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let reply = self
            .workers
            .clone()
            .list_workers(pb::ListWorkersRequest {})
            .await;
        Ok(reply
            .map_err(from_status)?
            .into_inner()
            .workers
            .into_iter()
            .map(worker_from_pb)
            .collect())
    }

    async fn create_schedule(&self, new: NewSchedule) -> Result<ScheduleRecord> {
        let request = pb::CreateScheduleRequest {
            name: new.name,
            cron: new.cron,
            timezone: new.timezone,
            package: new.package,
            version: new.version,
            workflow: new.workflow,
            input_json: new.input,
            overlap: new.overlap.as_str().to_owned(),
            catch_up: new.catch_up,
        };
        let reply = self.grpc().create_schedule(request).await;
        Ok(schedule_from_pb(reply.map_err(from_status)?.into_inner()))
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        let reply = self
            .grpc()
            .list_schedules(pb::ListSchedulesRequest {})
            .await;
        let schedules = reply.map_err(from_status)?.into_inner().schedules;
        Ok(schedules.into_iter().map(schedule_from_pb).collect())
    }

    async fn pause_schedule(&self, name: &str, paused: bool) -> Result<ScheduleRecord> {
        let request = pb::PauseScheduleRequest {
            name: name.to_owned(),
            paused,
        };
        let reply = self.grpc().pause_schedule(request).await;
        Ok(schedule_from_pb(reply.map_err(from_status)?.into_inner()))
    }

    async fn delete_schedule(&self, name: &str) -> Result<()> {
        let request = pb::DeleteScheduleRequest {
            name: name.to_owned(),
        };
        self.grpc()
            .delete_schedule(request)
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn trigger_schedule(&self, name: &str) -> Result<(ExecutionRecord, bool)> {
        let request = pb::TriggerScheduleRequest {
            name: name.to_owned(),
        };
        let reply = self.grpc().trigger_schedule(request).await;
        let reply = reply.map_err(from_status)?.into_inner();
        let execution = reply
            .execution
            .ok_or_else(|| Error::Remote("the server's reply has no execution".into()))?;
        Ok((execution_from_pb(execution).record, reply.created))
    }

    async fn create_trigger(&self, new: NewTrigger) -> Result<(TriggerRecord, Option<String>)> {
        let request = pb::CreateTriggerRequest {
            name: new.name,
            package: new.package,
            version: new.version,
            workflow: new.workflow,
            hmac_secret: new.hmac_secret,
        };
        let reply = self.grpc().create_trigger(request).await;
        let reply = reply.map_err(from_status)?.into_inner();
        let trigger = reply
            .trigger
            .ok_or_else(|| Error::Remote("the server's reply has no trigger".into()))?;
        Ok((trigger_from_pb(trigger), reply.token))
    }

    async fn triggers(&self) -> Result<Vec<TriggerRecord>> {
        let reply = self.grpc().list_triggers(pb::ListTriggersRequest {}).await;
        let triggers = reply.map_err(from_status)?.into_inner().triggers;
        Ok(triggers.into_iter().map(trigger_from_pb).collect())
    }

    async fn delete_trigger(&self, name: &str) -> Result<()> {
        let request = pb::DeleteTriggerRequest {
            name: name.to_owned(),
        };
        self.grpc()
            .delete_trigger(request)
            .await
            .map_err(from_status)?;
        Ok(())
    }

    async fn reconnect(&self) -> Result<Box<dyn Operations>> {
        Ok(Box::new(
            Remote::connect(&self.url, self.api_key.as_deref(), &self.tls).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_http_and_loopback_is_told_apart() {
        let local = ServerUrl::parse("127.0.0.1:7433").unwrap();
        assert_eq!(local.url, "http://127.0.0.1:7433");
        assert!(!local.in_clear);
        for url in [
            "http://localhost:1",
            "http://[::1]:7433",
            "HTTP://127.0.0.2:9/x",
        ] {
            assert!(!ServerUrl::parse(url).unwrap().in_clear, "{url}");
        }
        for url in [
            "http://10.0.0.5:7433",
            "http://api.example.com",
            "http://0.0.0.0:1",
            "http://[2001:db8::1]:7433",
        ] {
            assert!(ServerUrl::parse(url).unwrap().in_clear, "{url}");
        }
        let https = ServerUrl::parse("https://api.example.com:7433").unwrap();
        assert_eq!(https.url, "https://api.example.com:7433");
        assert!(https.tls && !https.in_clear);
        assert!(!local.tls);
        assert!(ServerUrl::parse("ftp://x").is_err());
        assert!(ServerUrl::parse("http://:7433").is_err());
    }

    #[test]
    fn statuses_come_back_as_the_errors_they_were() {
        let not_found = from_status(Status::not_found("no execution with id 'x'"));
        assert!(matches!(not_found, Error::NotFound(_)), "{not_found:?}");
        assert_eq!(
            not_found.to_string(),
            "no execution with id 'x' (server: NotFound)"
        );
        assert!(from_status(Status::unavailable("down")).is_transient());
        assert!(!from_status(Status::invalid_argument("bad")).is_transient());
        assert!(matches!(
            from_status(Status::internal("boom")),
            Error::Remote(_)
        ));
    }
}
