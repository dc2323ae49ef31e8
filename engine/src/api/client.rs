//! The gRPC client of `cerebelum.v1`: [`Operations`] on a remote
//! `cerebelum serve`, as the tenant of an API key. Messages are turned
//! back into records ([`super::convert`]), so a command prints the same
//! way whether its work went to the local database or to a server, and
//! the server's errors come back as the engine's own [`Error`] kinds.

use super::convert::{
    approval_from_pb, entry_from_pb, execution_from_pb, package_from_pb, status_to_pb,
    worker_from_pb,
};
use super::ops::{Events, Operations};
use super::pb::{self, cerebelum_client::CerebelumClient};
use super::service::{ExecutionView, Page, StartRequest, WatchEvent};
use crate::error::{Error, Result};
use crate::journal::Entry;
use crate::model::{
    ApprovalRecord, Decision, ExecutionRecord, ListFilter, PackageRecord, WorkerRecord,
};
use async_trait::async_trait;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Largest message the client sends or accepts (an upload carries a
/// package).
const MAX_MESSAGE: usize = 256 << 20;

/// The engine error of a status the server answered with. The message
/// keeps the server's words and names its code, e.g. `… (server:
/// NotFound)`. A server that is down or restarting is
/// [`Error::Unavailable`]: worth trying again.
pub fn from_status(status: Status) -> Error {
    let message = format!("{} (server: {:?})", status.message(), status.code());
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => Error::InvalidInput(message),
        Code::NotFound => Error::NotFound(message),
        Code::ResourceExhausted => Error::QuotaExceeded(message),
        Code::Unauthenticated | Code::PermissionDenied => Error::Unauthenticated(message),
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

/// What `--server` names, checked before anything is sent: `http://`
/// URLs only (the server does not speak TLS yet, and an `https://` URL
/// spoken to in plaintext would send the API key in clear to whoever
/// answers). `HOST:PORT` means `http://HOST:PORT`.
#[derive(Debug, PartialEq)]
pub struct ServerUrl {
    pub url: String,
    /// The key travels over the network in clear (not to a loopback address).
    pub in_clear: bool,
}

impl ServerUrl {
    pub fn parse(text: &str) -> Result<Self> {
        let (scheme, rest) = text.split_once("://").unwrap_or(("http", text));
        match scheme.to_ascii_lowercase().as_str() {
            "http" => {}
            "https" => {
                return Err(Error::InvalidInput(format!(
                    "--server {text}: `cerebelum serve` does not speak TLS yet, so an https:// \
                     URL cannot be used (nothing was sent). Reach the server over http:// on a \
                     trusted network (e.g. through an SSH tunnel to 127.0.0.1), or put a \
                     TLS-terminating proxy in front of it"
                )));
            }
            other => {
                return Err(Error::InvalidInput(format!(
                    "--server {text}: unknown scheme {other:?}; use http://HOST:PORT (e.g. \
                     http://127.0.0.1:7433)"
                )));
            }
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
        };
        if host.is_empty() {
            return Err(Error::InvalidInput(format!(
                "--server {text}: no host; use http://HOST:PORT"
            )));
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

/// [`Operations`] on a `cerebelum serve`, over gRPC.
#[derive(Clone)]
pub struct Remote {
    url: String,
    api_key: Option<String>,
    client: Grpc,
    workers: WorkerGrpc,
}

impl Remote {
    /// Connects to `url` (checked by [`ServerUrl::parse`]) with `api_key`.
    pub async fn connect(url: &str, api_key: Option<&str>) -> Result<Self> {
        let auth = match api_key.filter(|k| !k.trim().is_empty()) {
            Some(key) => Some(format!("Bearer {key}").parse().map_err(|e| {
                Error::InvalidInput(format!(
                    "the API key has characters a header cannot carry: {e}"
                ))
            })?),
            None => None,
        };
        let channel = Channel::from_shared(url.to_owned())
            .map_err(|e| Error::InvalidInput(format!("invalid server URL {url:?}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| {
                from_status(Status::unavailable(format!(
                    "cannot reach the Cerebelum server at {url} ({e}); is `cerebelum serve` \
                     running there?"
                )))
            })?;
        let workers = pb::worker_service_client::WorkerServiceClient::with_interceptor(
            channel.clone(),
            Auth(auth.clone()),
        );
        let client = CerebelumClient::with_interceptor(channel, Auth(auth))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Self {
            url: url.to_owned(),
            api_key: api_key.map(str::to_owned),
            client,
            workers,
        })
    }

    fn grpc(&self) -> Grpc {
        self.client.clone()
    }
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

    async fn reconnect(&self) -> Result<Box<dyn Operations>> {
        Ok(Box::new(
            Remote::connect(&self.url, self.api_key.as_deref()).await?,
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
        let https = ServerUrl::parse("https://api.example.com").unwrap_err();
        assert!(https.to_string().contains("does not speak TLS"), "{https}");
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
