//! Where a command sends its work: the local database (as tenant
//! `default`, through the same [`Api`] the server uses) or a remote server
//! over gRPC (as the tenant of the API key). Both answer with the same
//! records, so every command prints the same way either way.

use anyhow::{Context, Result};
use cerebelum::api::convert::{
    approval_from_pb, entry_from_pb, execution_from_pb, package_from_pb, status_to_pb,
};
use cerebelum::api::pb::{self, cerebelum_client::CerebelumClient};
use cerebelum::api::service::{ExecutionView, Page, StartRequest, WatchEvent};
use cerebelum::api::{Api, grpc};
use cerebelum::journal::Entry;
use cerebelum::model::{
    ApprovalRecord, DEFAULT_TENANT, Decision, ExecutionRecord, ListFilter, PackageRecord,
    TenantRecord,
};
use std::fmt;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;

/// Largest message the CLI sends or accepts (an upload carries a package).
const MAX_MESSAGE: usize = 256 << 20;

/// An error the server answered with; `Display` is its message.
#[derive(Debug)]
pub(crate) struct RemoteError(pub tonic::Status);

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (server: {:?})", self.0.message(), self.0.code())
    }
}

impl std::error::Error for RemoteError {}

impl RemoteError {
    /// The server is down or restarting: worth trying again.
    pub(crate) fn is_transient(e: &anyhow::Error) -> bool {
        e.downcast_ref::<RemoteError>()
            .is_some_and(|r| grpc::is_transient(&r.0))
    }
}

fn remote(status: tonic::Status) -> anyhow::Error {
    RemoteError(status).into()
}

/// Adds `authorization: Bearer KEY` to every request.
#[derive(Clone)]
struct Auth(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Auth {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Grpc = CerebelumClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

/// A connection to a `cerebelum serve` over gRPC.
#[derive(Clone)]
pub(crate) struct Remote {
    url: String,
    api_key: Option<String>,
    client: Grpc,
}

/// What `--server` names, checked before anything is sent: `http://`
/// URLs only (the server does not speak TLS yet, and an `https://` URL
/// spoken to in plaintext would send the API key in clear to whoever
/// answers). `HOST:PORT` means `http://HOST:PORT`.
#[derive(Debug, PartialEq)]
pub(crate) struct ServerUrl {
    pub(crate) url: String,
    /// The key travels over the network in clear (not to a loopback address).
    pub(crate) in_clear: bool,
}

impl ServerUrl {
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let (scheme, rest) = text.split_once("://").unwrap_or(("http", text));
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {}
            "https" => anyhow::bail!(
                "--server {text}: `cerebelum serve` does not speak TLS yet, so an https:// URL \
                 cannot be used (nothing was sent). Reach the server over http:// on a trusted \
                 network (e.g. through an SSH tunnel to 127.0.0.1), or put a TLS-terminating \
                 proxy in front of it"
            ),
            other => anyhow::bail!(
                "--server {text}: unknown scheme {other:?}; use http://HOST:PORT (e.g. \
                 http://127.0.0.1:7433)"
            ),
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        if host.is_empty() {
            anyhow::bail!("--server {text}: no host; use http://HOST:PORT");
        }
        Ok(Self {
            url: format!("http://{rest}"),
            in_clear: !is_loopback(host),
        })
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

impl Remote {
    /// Connects to `url` (checked by [`ServerUrl::parse`]) with `api_key`.
    pub(crate) async fn connect(url: &str, api_key: Option<&str>) -> Result<Self> {
        let url = url.to_owned();
        let auth = match api_key.filter(|k| !k.trim().is_empty()) {
            Some(key) => Some(
                format!("Bearer {key}")
                    .parse()
                    .context("the API key has characters a header cannot carry")?,
            ),
            None => None,
        };
        let channel = Channel::from_shared(url.clone())
            .with_context(|| format!("invalid server URL {url:?}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                remote(tonic::Status::unavailable(format!(
                    "cannot reach the Cerebelum server at {url} ({e}); is `cerebelum serve` \
                     running there?"
                )))
            })?;
        let client = CerebelumClient::with_interceptor(channel, Auth(auth))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Self {
            url,
            api_key: api_key.map(str::to_owned),
            client,
        })
    }
}

/// Where commands go.
pub(crate) enum Client {
    Local { api: Api, tenant: Box<TenantRecord> },
    Remote(Remote),
}

impl Client {
    /// The local database, as tenant `default`.
    pub(crate) async fn local(api: Api) -> Result<Self> {
        let tenant = api
            .engine()
            .store()
            .catalog()
            .tenant(DEFAULT_TENANT)
            .await?;
        Ok(Client::Local {
            api,
            tenant: Box::new(tenant),
        })
    }

    /// Where this client works, for messages.
    pub(crate) fn place(&self) -> String {
        match self {
            Client::Local { .. } => "the local database".into(),
            Client::Remote(r) => r.url.clone(),
        }
    }

    pub(crate) async fn upload(&self, name: &str, wasm: Vec<u8>) -> Result<PackageRecord> {
        match self {
            Client::Local { api, tenant } => Ok(api.upload(tenant, name, wasm).await?),
            Client::Remote(r) => {
                let reply = r
                    .client
                    .clone()
                    .upload_package(pb::UploadPackageRequest {
                        name: name.to_owned(),
                        wasm,
                    })
                    .await
                    .map_err(remote)?;
                Ok(package_from_pb(reply.into_inner()))
            }
        }
    }

    pub(crate) async fn packages(&self) -> Result<Vec<PackageRecord>> {
        match self {
            Client::Local { api, tenant } => Ok(api.list_packages(tenant).await?),
            Client::Remote(r) => {
                let reply = r
                    .client
                    .clone()
                    .list_packages(pb::ListPackagesRequest {})
                    .await
                    .map_err(remote)?;
                Ok(reply
                    .into_inner()
                    .packages
                    .into_iter()
                    .map(package_from_pb)
                    .collect())
            }
        }
    }

    pub(crate) async fn describe(&self, name: &str, version: Option<i64>) -> Result<PackageRecord> {
        match self {
            Client::Local { api, tenant } => Ok(api.describe(tenant, name, version).await?),
            Client::Remote(r) => {
                let reply = r
                    .client
                    .clone()
                    .describe_package(pb::DescribePackageRequest {
                        name: name.to_owned(),
                        version,
                    })
                    .await
                    .map_err(remote)?;
                Ok(package_from_pb(reply.into_inner()))
            }
        }
    }

    /// Starts an execution; `true` if it is new.
    pub(crate) async fn start(&self, request: StartRequest) -> Result<(ExecutionRecord, bool)> {
        match self {
            Client::Local { api, tenant } => Ok(api.start(tenant, request).await?),
            Client::Remote(r) => {
                let reply = r
                    .client
                    .clone()
                    .start_execution(pb::StartExecutionRequest {
                        package: request.package,
                        version: request.version,
                        workflow: request.workflow,
                        input_json: request.input,
                        idempotency_key: request.idempotency_key,
                    })
                    .await
                    .map_err(remote)?
                    .into_inner();
                let execution = reply
                    .execution
                    .context("the server's reply has no execution")?;
                Ok((execution_from_pb(execution).record, reply.created))
            }
        }
    }

    pub(crate) async fn execution(&self, id: &str) -> Result<ExecutionView> {
        match self {
            Client::Local { api, tenant } => Ok(api.execution(tenant, id).await?),
            Client::Remote(r) => {
                let reply = r
                    .client
                    .clone()
                    .get_execution(pb::GetExecutionRequest { id: id.to_owned() })
                    .await
                    .map_err(remote)?;
                Ok(execution_from_pb(reply.into_inner()))
            }
        }
    }

    pub(crate) async fn list(&self, filter: ListFilter, page_token: Option<&str>) -> Result<Page> {
        match self {
            Client::Local { api, tenant } => Ok(api.list(tenant, filter, page_token).await?),
            Client::Remote(r) => {
                let reply = r
                    .client
                    .clone()
                    .list_executions(pb::ListExecutionsRequest {
                        status: filter.status.map(|s| status_to_pb(s) as i32).unwrap_or(0),
                        package: filter.package.unwrap_or_default(),
                        workflow: filter.workflow.unwrap_or_default(),
                        page_size: filter.limit.clamp(0, i32::MAX as i64) as i32,
                        page_token: page_token.unwrap_or_default().to_owned(),
                    })
                    .await
                    .map_err(remote)?
                    .into_inner();
                Ok(Page {
                    executions: reply
                        .executions
                        .into_iter()
                        .map(|e| execution_from_pb(e).record)
                        .collect(),
                    next: (!reply.next_page_token.is_empty()).then_some(reply.next_page_token),
                })
            }
        }
    }

    pub(crate) async fn journal(&self, id: &str) -> Result<Vec<Entry>> {
        match self {
            Client::Local { api, tenant } => Ok(api.journal(tenant, id, 0).await?),
            Client::Remote(r) => {
                let reply = r
                    .client
                    .clone()
                    .get_journal(pb::GetJournalRequest {
                        id: id.to_owned(),
                        after_seq: 0,
                    })
                    .await
                    .map_err(remote)?;
                reply
                    .into_inner()
                    .entries
                    .into_iter()
                    .map(entry_from_pb)
                    .collect::<Result<Vec<Entry>, String>>()
                    .map_err(|e| anyhow::anyhow!(e))
            }
        }
    }

    pub(crate) async fn decide(
        &self,
        id: &str,
        key: &str,
        decision: Decision,
    ) -> Result<ApprovalRecord> {
        match self {
            Client::Local { api, tenant } => Ok(api.decide(tenant, id, key, decision).await?),
            Client::Remote(r) => {
                let mut client = r.client.clone();
                let reply = match decision {
                    Decision::Approve(payload) => {
                        client
                            .approve(pb::ApproveRequest {
                                id: id.to_owned(),
                                key: key.to_owned(),
                                payload_json: payload.to_string(),
                            })
                            .await
                    }
                    Decision::Reject(reason) => {
                        client
                            .reject(pb::RejectRequest {
                                id: id.to_owned(),
                                key: key.to_owned(),
                                reason,
                            })
                            .await
                    }
                };
                Ok(approval_from_pb(reply.map_err(remote)?.into_inner()))
            }
        }
    }

    pub(crate) async fn cancel(&self, id: &str) -> Result<ExecutionRecord> {
        match self {
            Client::Local { api, tenant } => Ok(api.cancel(tenant, id).await?),
            Client::Remote(r) => {
                let reply = r
                    .client
                    .clone()
                    .cancel(pb::CancelRequest { id: id.to_owned() })
                    .await
                    .map_err(remote)?;
                Ok(execution_from_pb(reply.into_inner()).record)
            }
        }
    }

    pub(crate) async fn retry(&self, id: &str) -> Result<ExecutionRecord> {
        match self {
            Client::Local { api, tenant } => Ok(api.retry(tenant, id).await?),
            Client::Remote(r) => {
                let reply = r
                    .client
                    .clone()
                    .retry(pb::RetryRequest { id: id.to_owned() })
                    .await
                    .map_err(remote)?;
                Ok(execution_from_pb(reply.into_inner()).record)
            }
        }
    }

    /// Journal events of `id` after `after_seq`, then `Finished`. A broken
    /// connection arrives as a transient [`RemoteError`] (see
    /// [`RemoteError::is_transient`]): call again from the last seq.
    pub(crate) async fn watch(
        &self,
        id: &str,
        after_seq: i64,
    ) -> Result<mpsc::Receiver<Result<WatchEvent>>> {
        match self {
            Client::Local { api, tenant } => {
                let mut events = api.watch(tenant, id, after_seq).await?;
                let (tx, rx) = mpsc::channel(256);
                tokio::spawn(async move {
                    loop {
                        let event = tokio::select! {
                            event = events.next() => event,
                            () = tx.closed() => return,
                        };
                        let Some(event) = event else { return };
                        if tx.send(event.map_err(anyhow::Error::from)).await.is_err() {
                            return;
                        }
                    }
                });
                Ok(rx)
            }
            Client::Remote(r) => {
                let mut stream = r
                    .client
                    .clone()
                    .watch_execution(pb::WatchExecutionRequest {
                        id: id.to_owned(),
                        after_seq,
                    })
                    .await
                    .map_err(remote)?
                    .into_inner();
                let (tx, rx) = mpsc::channel(256);
                tokio::spawn(async move {
                    loop {
                        let event = match stream.message().await {
                            Ok(Some(pb::WatchEvent { event: Some(e) })) => e,
                            Ok(Some(_)) => continue,
                            // The stream ended before the execution did:
                            // the server went away.
                            Ok(None) => {
                                let _ = tx
                                    .send(Err(remote(tonic::Status::unavailable(
                                        "the server closed the stream",
                                    ))))
                                    .await;
                                return;
                            }
                            Err(status) => {
                                let _ = tx.send(Err(remote(status))).await;
                                return;
                            }
                        };
                        let out = match event {
                            pb::watch_event::Event::Entry(e) => match entry_from_pb(e) {
                                Ok(e) => WatchEvent::Entry(e),
                                Err(e) => {
                                    let _ = tx.send(Err(anyhow::anyhow!(e))).await;
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
                Ok(rx)
            }
        }
    }

    /// A new connection to the same server (after it restarted).
    pub(crate) async fn reconnect(&self) -> Result<Self> {
        match self {
            Client::Local { api, tenant } => Ok(Client::Local {
                api: api.clone(),
                tenant: tenant.clone(),
            }),
            Client::Remote(r) => Ok(Client::Remote(
                Remote::connect(&r.url, r.api_key.as_deref()).await?,
            )),
        }
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
        let https = ServerUrl::parse("https://api.example.com").unwrap_err();
        assert!(https.to_string().contains("does not speak TLS"), "{https}");
        assert!(ServerUrl::parse("ftp://x").is_err());
        assert!(ServerUrl::parse("http://:7433").is_err());
    }
}
