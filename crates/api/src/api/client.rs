//! The gRPC client of `cerebelum.v1`: the one way the CLI does anything.
//! [`Client::connect`] reaches a `cerebelum serve` as the tenant (or
//! operator) of an API key; [`Client::in_process`] reaches this process's
//! database through the same services, served in-process over an
//! in-memory connection ([`super::local`]). So each RPC is written once on
//! each side: the server method, and here one client method. Messages are
//! turned back into records ([`super::convert`]), and the server's errors
//! come back as the engine's own [`Error`] kinds.
//!
//! ```no_run
//! # async fn demo(client: &cerebelum_api::api::Client) -> cerebelum_types::Result<()> {
//! use cerebelum_api::api::service::StartRequest;
//! let (execution, _) = client
//!     .start(StartRequest {
//!         package: "hello".into(),
//!         workflow: "hello".into(),
//!         input: r#"{"name":"web-1"}"#.into(),
//!         ..StartRequest::default()
//!     })
//!     .await?;
//! println!("{} is {}", execution.id, execution.status);
//! # Ok(()) }
//! ```

use super::admin;
use super::convert::{
    approval_from_pb, check_from_pb, entry_from_pb, execution_from_pb, package_from_pb,
    schedule_from_pb, signal_from_pb, status_to_pb, trigger_from_pb, worker_from_pb,
};
use super::keys::NewKey;
use super::local::InProcess;
use super::pb::{self, cerebelum_client::CerebelumClient};
use super::schedules::NewSchedule;
use super::service::{Api, ExecutionView, Page, StartRequest, WatchEvent};
use super::triggers::NewTrigger;
use crate::error::{Error, Result};
use crate::journal::Entry;
use crate::model::{
    ApiKeyRecord, ApprovalRecord, AuditRecord, Decision, ExecutionRecord, ListFilter, PackageCheck,
    PackageRecord, Quotas, ScheduleRecord, SecretRecord, SignalRecord, TenantRecord, TriggerRecord,
    UpgradeResult, WorkerRecord,
};
use crate::secrets::MasterKey;
use crate::store::NewSignal;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
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
fn from_status(status: Status) -> Error {
    error_of(status, true)
}

/// The engine error of `status`; its message names the server's code when
/// the answer came from a `server`.
fn error_of(status: Status, server: bool) -> Error {
    let mut message = status.message().to_owned();
    if server {
        message.push_str(&format!(" (server: {:?})", status.code()));
    }
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

/// The events of [`Client::watch`], in order; the last is
/// [`WatchEvent::Finished`]. A stream that breaks before it (the server
/// went away) ends with a transient error ([`crate::Error::is_transient`]):
/// watch again after the last seq received.
pub type Events = Pin<Box<dyn Stream<Item = Result<WatchEvent>> + Send>>;

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

/// Where a [`Client`]'s calls go.
#[derive(Clone)]
enum Place {
    /// A `cerebelum serve` over the network.
    Server {
        url: String,
        api_key: Option<String>,
        tls: ClientTls,
    },
    /// This process's database, through the services served in-process
    /// (kept open while a clone of the client lives).
    InProcess { _services: InProcess },
}

/// A client of `cerebelum.v1`: a tenant's packages, executions, schedules
/// and triggers, and (with an operator key, or in-process) the `Admin`
/// service. Every operation is scoped to the caller's tenant: another
/// tenant's executions are "not found", exactly as missing ones.
#[derive(Clone)]
pub struct Client {
    place: Place,
    client: Grpc,
    workers: WorkerGrpc,
    admin: AdminGrpc,
}

impl Client {
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
        let place = Place::Server {
            url: url.to_owned(),
            api_key: api_key.map(str::to_owned),
            tls: tls.clone(),
        };
        Ok(Self::over(channel, auth, place))
    }

    /// The tenant `default` and the operator of this process's database
    /// (what `--db` means to the CLI), through the services of `api`
    /// served in this process; `master_key` seals the secrets set through
    /// it.
    pub async fn in_process(api: Api, master_key: Option<Arc<MasterKey>>) -> Result<Self> {
        let (place, channel) = InProcess::start(api, master_key).await?;
        Ok(Self::over(
            channel,
            None,
            Place::InProcess { _services: place },
        ))
    }

    fn over(channel: Channel, auth: Option<MetadataValue<Ascii>>, place: Place) -> Self {
        let workers = pb::worker_service_client::WorkerServiceClient::with_interceptor(
            channel.clone(),
            Auth(auth.clone()),
        );
        let admin =
            pb::admin_client::AdminClient::with_interceptor(channel.clone(), Auth(auth.clone()));
        let client = CerebelumClient::with_interceptor(channel, Auth(auth))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Self {
            place,
            client,
            workers,
            admin,
        }
    }

    /// Where the calls go, for messages: the server's URL, or "the local
    /// database".
    pub fn place(&self) -> String {
        match &self.place {
            Place::Server { url, .. } => url.clone(),
            Place::InProcess { .. } => "the local database".into(),
        }
    }

    /// A client of the same place over a new connection (after the server
    /// restarted); an in-process one is simply the same.
    pub async fn reconnect(&self) -> Result<Self> {
        match &self.place {
            Place::Server { url, api_key, tls } => {
                Self::connect(url, api_key.as_deref(), tls).await
            }
            Place::InProcess { .. } => Ok(self.clone()),
        }
    }

    /// The engine error of a status this client was answered with.
    fn error(&self, status: Status) -> Error {
        error_of(status, matches!(self.place, Place::Server { .. }))
    }

    fn grpc(&self) -> Grpc {
        self.client.clone()
    }

    /// Validates, compiles and stores a package under `name` (the same
    /// bytes under the same name return the existing version).
    pub async fn upload(&self, name: &str, wasm: Vec<u8>) -> Result<PackageRecord> {
        let request = pb::UploadPackageRequest {
            name: name.to_owned(),
            wasm,
            ..Default::default()
        };
        let reply = self.grpc().upload_package(request).await;
        Ok(package_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    /// Uploads as [`Client::upload`], after replaying the open executions
    /// of the package's earlier versions against it (all, or a `sample`);
    /// with `require_compatible`, nothing is stored if any would diverge.
    pub async fn upload_checked(
        &self,
        name: &str,
        wasm: Vec<u8>,
        sample: Option<i64>,
        require_compatible: bool,
    ) -> Result<(PackageRecord, PackageCheck)> {
        let request = pb::UploadPackageRequest {
            name: name.to_owned(),
            wasm,
            check: true,
            sample: sample.unwrap_or(0),
            require_compatible,
        };
        let mut reply = self
            .grpc()
            .upload_package(request)
            .await
            .map_err(|s| self.error(s))?
            .into_inner();
        let check = reply.check.take().map(check_from_pb).ok_or_else(|| {
            Error::Remote(
                "the server stored the package without checking it: it is older than this client"
                    .into(),
            )
        })?;
        Ok((package_from_pb(reply), check))
    }

    /// Replays the open executions of package `name`'s earlier versions
    /// against `component`, or `version` (neither: the newest version),
    /// without side effects.
    pub async fn check_package(
        &self,
        name: &str,
        component: Option<Vec<u8>>,
        version: Option<i64>,
        sample: Option<i64>,
    ) -> Result<PackageCheck> {
        use pb::check_package_request::Target;
        let target = match (component, version) {
            (Some(bytes), _) => Some(Target::Component(bytes)),
            (None, Some(version)) => Some(Target::Version(version)),
            (None, None) => None,
        };
        let request = pb::CheckPackageRequest {
            name: name.to_owned(),
            target,
            sample: sample.unwrap_or(0),
        };
        let reply = self.grpc().check_package(request).await;
        Ok(check_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    /// Every package version, by name then version.
    pub async fn packages(&self) -> Result<Vec<PackageRecord>> {
        let reply = self.grpc().list_packages(pb::ListPackagesRequest {}).await;
        let packages = reply.map_err(|s| self.error(s))?.into_inner().packages;
        Ok(packages.into_iter().map(package_from_pb).collect())
    }

    /// Package `name`: that version, or the newest.
    pub async fn describe(&self, name: &str, version: Option<i64>) -> Result<PackageRecord> {
        let request = pb::DescribePackageRequest {
            name: name.to_owned(),
            version,
        };
        let reply = self.grpc().describe_package(request).await;
        Ok(package_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    /// Starts an execution; `true` if it is new (`false`: the idempotency
    /// key returned an earlier one).
    pub async fn start(&self, request: StartRequest) -> Result<(ExecutionRecord, bool)> {
        let request = pb::StartExecutionRequest {
            package: request.package,
            version: request.version,
            workflow: request.workflow,
            input_json: request.input,
            idempotency_key: request.idempotency_key,
            worker_queue: request.worker_queue,
        };
        let reply = self.grpc().start_execution(request).await;
        let reply = reply.map_err(|s| self.error(s))?.into_inner();
        let execution = reply
            .execution
            .ok_or_else(|| Error::Remote("the server's reply has no execution".into()))?;
        Ok((execution_from_pb(execution).record, reply.created))
    }

    /// An execution, with the approvals it waits for.
    pub async fn execution(&self, id: &str) -> Result<ExecutionView> {
        let request = pb::GetExecutionRequest { id: id.to_owned() };
        let reply = self.grpc().get_execution(request).await;
        Ok(execution_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    /// One page of executions, newest first; `page_token` is the `next` of
    /// the page before.
    pub async fn list(&self, filter: ListFilter, page_token: Option<&str>) -> Result<Page> {
        let request = pb::ListExecutionsRequest {
            status: filter.status.map(|s| status_to_pb(s) as i32).unwrap_or(0),
            package: filter.package.unwrap_or_default(),
            workflow: filter.workflow.unwrap_or_default(),
            page_size: filter.limit.clamp(0, i32::MAX as i64) as i32,
            page_token: page_token.unwrap_or_default().to_owned(),
        };
        let reply = self.grpc().list_executions(request).await;
        let reply = reply.map_err(|s| self.error(s))?.into_inner();
        Ok(Page {
            executions: reply
                .executions
                .into_iter()
                .map(|e| execution_from_pb(e).record)
                .collect(),
            next: (!reply.next_page_token.is_empty()).then_some(reply.next_page_token),
            prev: None,
        })
    }

    /// Journal entries with `seq > after_seq`, in order.
    pub async fn journal(&self, id: &str, after_seq: i64) -> Result<Vec<Entry>> {
        let request = pb::GetJournalRequest {
            id: id.to_owned(),
            after_seq,
        };
        let reply = self.grpc().get_journal(request).await;
        entries(reply.map_err(|s| self.error(s))?.into_inner().entries)
    }

    /// Replays execution `id` against `component` (bytes), `version` of its
    /// package, or (neither) its own version, without side effects.
    pub async fn replay(
        &self,
        id: &str,
        component: Option<Vec<u8>>,
        version: Option<i64>,
    ) -> Result<pb::ReplayExecutionResponse> {
        use pb::replay_execution_request::Target;
        let target = match (component, version) {
            (Some(bytes), _) => Some(Target::Component(bytes)),
            (None, Some(version)) => Some(Target::Version(version)),
            (None, None) => None,
        };
        let request = pb::ReplayExecutionRequest {
            id: id.to_owned(),
            target,
        };
        let reply = self.grpc().replay_execution(request).await;
        Ok(reply.map_err(|s| self.error(s))?.into_inner())
    }

    /// Approves or rejects what execution `id` waits for under `key`.
    pub async fn decide(&self, id: &str, key: &str, decision: Decision) -> Result<ApprovalRecord> {
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
        Ok(approval_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    /// Sends a signal to execution `id`; `true` if it is new (`false`: its
    /// signal id was sent before).
    pub async fn signal(&self, id: &str, signal: NewSignal) -> Result<(SignalRecord, bool)> {
        let request = pb::SignalRequest {
            id: id.to_owned(),
            name: signal.name,
            payload_json: signal.payload.to_string(),
            signal_id: signal.signal_id.unwrap_or_default(),
        };
        let reply = self.grpc().signal(request).await;
        let reply = reply.map_err(|s| self.error(s))?.into_inner();
        let signal = reply
            .signal
            .ok_or_else(|| Error::Remote("the server sent no signal".into()))?;
        Ok((signal_from_pb(signal), reply.created))
    }

    /// Pauses (`true`: it runs no new invocation) or resumes execution `id`.
    pub async fn set_paused(&self, id: &str, paused: bool) -> Result<ExecutionRecord> {
        let id = id.to_owned();
        let mut client = self.grpc();
        let reply = if paused {
            client.pause(pb::PauseRequest { id }).await
        } else {
            client.resume(pb::ResumeRequest { id }).await
        };
        Ok(execution_from_pb(reply.map_err(|s| self.error(s))?.into_inner()).record)
    }

    /// Requests cancellation: the execution's next suspension point
    /// returns a cancellation error to its code.
    pub async fn cancel(&self, id: &str) -> Result<ExecutionRecord> {
        let request = pb::CancelRequest { id: id.to_owned() };
        let reply = self.grpc().cancel(request).await;
        Ok(execution_from_pb(reply.map_err(|s| self.error(s))?.into_inner()).record)
    }

    /// Runs a failed or cancelled execution again, keeping what it
    /// completed.
    /// Moves execution `id`, or (with `package`) every open execution of
    /// `package` v`from`, to version `to` where its journal replays
    /// cleanly against that code: what became of each.
    pub async fn upgrade(
        &self,
        id: Option<&str>,
        package: Option<(&str, i64)>,
        to: i64,
    ) -> Result<Vec<UpgradeResult>> {
        use pb::upgrade_executions_request::Target;
        let (target, from_version) = match (id, package) {
            (Some(id), _) => (Some(Target::Id(id.to_owned())), 0),
            (None, Some((name, from))) => (Some(Target::Package(name.to_owned())), from),
            (None, None) => (None, 0),
        };
        let request = pb::UpgradeExecutionsRequest {
            target,
            from_version,
            to_version: to,
        };
        let reply = self.grpc().upgrade_executions(request).await;
        let results = reply.map_err(|s| self.error(s))?.into_inner().results;
        Ok(results
            .into_iter()
            .map(|u| UpgradeResult {
                id: u.id,
                from_version: u.from_version,
                to_version: u.to_version,
                upgraded: u.upgraded,
                message: u.message,
                pending: u.pending,
            })
            .collect())
    }

    pub async fn retry(&self, id: &str) -> Result<ExecutionRecord> {
        let request = pb::RetryRequest { id: id.to_owned() };
        let reply = self.grpc().retry(request).await;
        Ok(execution_from_pb(reply.map_err(|s| self.error(s))?.into_inner()).record)
    }

    /// Follows an execution: its journal entries after `after_seq` as they
    /// are written, then [`WatchEvent::Finished`]. Dropping the stream
    /// stops following.
    pub async fn watch(&self, id: &str, after_seq: i64) -> Result<Events> {
        let request = pb::WatchExecutionRequest {
            id: id.to_owned(),
            after_seq,
            end_only: false,
        };
        let reply = self.grpc().watch_execution(request).await;
        let mut stream = reply.map_err(|s| self.error(s))?.into_inner();
        let this = self.clone();
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
                            let _ = tx.send(Err(this.error(closed))).await;
                            return;
                        }
                        Err(status) => {
                            let _ = tx.send(Err(this.error(status))).await;
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
                    // Only RunExecution sends it, first.
                    pb::watch_event::Event::Started(_) => continue,
                };
                let last = matches!(out, WatchEvent::Finished(_));
                if tx.send(Ok(out)).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// The tenant's external workers seen in the last minute, by queue.
    pub async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        let reply = self
            .workers
            .clone()
            .list_workers(pb::ListWorkersRequest {})
            .await;
        Ok(reply
            .map_err(|s| self.error(s))?
            .into_inner()
            .workers
            .into_iter()
            .map(worker_from_pb)
            .collect())
    }

    /// Creates a schedule (see [`super::schedules`]).
    pub async fn create_schedule(&self, new: NewSchedule) -> Result<ScheduleRecord> {
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
        Ok(schedule_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    /// The tenant's schedules, by name.
    pub async fn schedules(&self) -> Result<Vec<ScheduleRecord>> {
        let reply = self
            .grpc()
            .list_schedules(pb::ListSchedulesRequest {})
            .await;
        let schedules = reply.map_err(|s| self.error(s))?.into_inner().schedules;
        Ok(schedules.into_iter().map(schedule_from_pb).collect())
    }

    /// Pauses (`true`) or resumes a schedule.
    pub async fn pause_schedule(&self, name: &str, paused: bool) -> Result<ScheduleRecord> {
        let request = pb::PauseScheduleRequest {
            name: name.to_owned(),
            paused,
        };
        let reply = self.grpc().pause_schedule(request).await;
        Ok(schedule_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    pub async fn delete_schedule(&self, name: &str) -> Result<()> {
        let request = pb::DeleteScheduleRequest {
            name: name.to_owned(),
        };
        self.grpc()
            .delete_schedule(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    /// Starts a schedule's workflow now.
    pub async fn trigger_schedule(&self, name: &str) -> Result<(ExecutionRecord, bool)> {
        let request = pb::TriggerScheduleRequest {
            name: name.to_owned(),
        };
        let reply = self.grpc().trigger_schedule(request).await;
        let reply = reply.map_err(|s| self.error(s))?.into_inner();
        let execution = reply
            .execution
            .ok_or_else(|| Error::Remote("the server's reply has no execution".into()))?;
        Ok((execution_from_pb(execution).record, reply.created))
    }

    /// Creates an HTTP trigger (see [`super::triggers`]); without an HMAC
    /// secret, also its token.
    pub async fn create_trigger(&self, new: NewTrigger) -> Result<(TriggerRecord, Option<String>)> {
        let request = pb::CreateTriggerRequest {
            name: new.name,
            package: new.package,
            version: new.version,
            workflow: new.workflow,
            hmac_secret: new.hmac_secret,
        };
        let reply = self.grpc().create_trigger(request).await;
        let reply = reply.map_err(|s| self.error(s))?.into_inner();
        let trigger = reply
            .trigger
            .ok_or_else(|| Error::Remote("the server's reply has no trigger".into()))?;
        Ok((trigger_from_pb(trigger), reply.token))
    }

    pub async fn triggers(&self) -> Result<Vec<TriggerRecord>> {
        let reply = self.grpc().list_triggers(pb::ListTriggersRequest {}).await;
        let triggers = reply.map_err(|s| self.error(s))?.into_inner().triggers;
        Ok(triggers.into_iter().map(trigger_from_pb).collect())
    }

    pub async fn delete_trigger(&self, name: &str) -> Result<()> {
        let request = pb::DeleteTriggerRequest {
            name: name.to_owned(),
        };
        self.grpc()
            .delete_trigger(request)
            .await
            .map_err(|s| self.error(s))?;
        Ok(())
    }

    // The `Admin` service: an operator key's calls, or in-process ones.

    /// Creates tenant `name` with its own `quotas` (unset: the server's)
    /// and HTTP allow-list.
    pub async fn create_tenant(
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
        let reply = self.admin.clone().create_tenant(request).await;
        Ok(admin::tenant_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    /// Changes tenant `name`: the quotas that are set replace its own, the
    /// others stay; the allow-list is replaced if given.
    pub async fn update_tenant(
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
        let reply = self.admin.clone().update_tenant(request).await;
        Ok(admin::tenant_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    pub async fn tenants(&self) -> Result<Vec<TenantRecord>> {
        let reply = self
            .admin
            .clone()
            .list_tenants(pb::ListTenantsRequest {})
            .await;
        let tenants = reply.map_err(|s| self.error(s))?.into_inner().tenants;
        Ok(tenants.into_iter().map(admin::tenant_from_pb).collect())
    }

    /// A new key of `tenant` (an operator key for `None`), expiring
    /// `expires_in_ms` from now (never for `None`).
    pub async fn create_key(
        &self,
        tenant: Option<&str>,
        expires_in_ms: Option<i64>,
    ) -> Result<NewKey> {
        let request = pb::CreateKeyRequest {
            tenant: tenant.unwrap_or_default().to_owned(),
            operator: tenant.is_none(),
            expires_in_ms,
        };
        let reply = self.admin.clone().create_key(request).await;
        let reply = reply.map_err(|s| self.error(s))?.into_inner();
        let record = reply
            .key
            .ok_or_else(|| Error::Remote("the server's reply has no key".into()))?;
        Ok(NewKey {
            record: admin::key_from_pb(record),
            secret: reply.secret,
        })
    }

    /// The keys of `tenant` (the operator keys for `None`).
    pub async fn keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>> {
        let request = pb::ListKeysRequest {
            tenant: tenant.unwrap_or_default().to_owned(),
            operator: tenant.is_none(),
        };
        let reply = self.admin.clone().list_keys(request).await;
        let keys = reply.map_err(|s| self.error(s))?.into_inner().keys;
        Ok(keys.into_iter().map(admin::key_from_pb).collect())
    }

    /// Revokes the key with id `id` (or the whole key).
    pub async fn revoke_key(&self, id: &str) -> Result<ApiKeyRecord> {
        let request = pb::RevokeKeyRequest { id: id.to_owned() };
        let reply = self.admin.clone().revoke_key(request).await;
        Ok(admin::key_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    pub async fn set_secret(&self, tenant: &str, name: &str, value: &str) -> Result<SecretRecord> {
        let request = pb::SetSecretRequest {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            value: value.to_owned(),
        };
        let reply = self.admin.clone().set_secret(request).await;
        Ok(admin::secret_from_pb(
            reply.map_err(|s| self.error(s))?.into_inner(),
        ))
    }

    pub async fn secrets(&self, tenant: &str) -> Result<Vec<SecretRecord>> {
        let request = pb::ListSecretsRequest {
            tenant: tenant.to_owned(),
        };
        let reply = self.admin.clone().list_secrets(request).await;
        let secrets = reply.map_err(|s| self.error(s))?.into_inner().secrets;
        Ok(secrets.into_iter().map(admin::secret_from_pb).collect())
    }

    pub async fn delete_secret(&self, tenant: &str, name: &str) -> Result<()> {
        let request = pb::DeleteSecretRequest {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
        };
        let reply = self.admin.clone().delete_secret(request).await;
        reply.map_err(|s| self.error(s))?;
        Ok(())
    }

    /// The audit log (of `tenant`), newest first, older than `before`.
    pub async fn audit(
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
        let reply = self.admin.clone().list_audit(request).await;
        let records = reply.map_err(|s| self.error(s))?.into_inner().records;
        Ok(records.into_iter().map(admin::audit_from_pb).collect())
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
