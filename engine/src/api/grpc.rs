//! The tonic server of `cerebelum.v1`, with gRPC health and reflection.
//!
//! Each RPC authenticates its caller's key, then calls [`Api`] for the
//! key's tenant. Errors become gRPC statuses in one place, [`status`]:
//! database and internal failures are logged here and reach the client as
//! a generic message, never with SQL or paths in it.

use super::convert::{self, entry_to_pb, execution_to_pb, package_to_pb};
use super::pb::{self, cerebelum_server::CerebelumServer};
use super::service::{Api, StartRequest, WatchEvent};
use super::{DESCRIPTOR, keys};
use crate::error::Error;
use crate::model::{Decision, ListFilter, TenantRecord};
use std::future::Future;
use std::pin::Pin;
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};

/// The gRPC status of an engine error: the one mapping of the API.
pub fn status(e: Error) -> Status {
    match e {
        Error::InvalidInput(m) => Status::invalid_argument(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::Conflict(m) => Status::failed_precondition(m),
        Error::QuotaExceeded(m) => Status::resource_exhausted(m),
        Error::Unauthenticated(m) => Status::unauthenticated(m),
        Error::LostOwnership(_) => {
            Status::unavailable("the execution moved to another node meanwhile; retry")
        }
        Error::Store(e) => {
            tracing::error!(error = %e, "database error answering a request");
            Status::unavailable("the database is unavailable; retry later")
        }
        other => {
            tracing::error!(error = %other, "internal error answering a request");
            Status::internal("internal error; the server's log has the details")
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// The `cerebelum.v1.Cerebelum` service.
pub struct Service {
    api: Api,
    /// Turns true when the server shuts down: open watch streams end then
    /// (UNAVAILABLE, so clients reconnect), or they would hold the
    /// graceful shutdown open until their executions end.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Service {
    pub fn new(api: Api, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { api, stopping }
    }

    /// The tenant of the request's `authorization: Bearer KEY`.
    async fn tenant<T>(&self, request: &Request<T>) -> Result<TenantRecord, Status> {
        let Some(header) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(
                "missing API key: send the metadata `authorization: Bearer <key>` (the CLI: \
                 --api-key or CEREBELUM_API_KEY); create a key with `cerebelum admin key create \
                 TENANT`",
            ));
        };
        let key = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("malformed authorization: expected `Bearer <api key>`")
            })?;
        keys::authenticate(self.api.engine().store(), key)
            .await
            .map_err(status)
    }
}

fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn json(text: &str, what: &str) -> Result<serde_json::Value, Status> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| Status::invalid_argument(format!("{what} is not valid JSON ({e})")))
}

#[tonic::async_trait]
impl pb::cerebelum_server::Cerebelum for Service {
    async fn upload_package(
        &self,
        request: Request<pb::UploadPackageRequest>,
    ) -> Reply<pb::Package> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let package = self
            .api
            .upload(&tenant, &r.name, r.wasm)
            .await
            .map_err(status)?;
        Ok(Response::new(package_to_pb(&package)))
    }

    async fn list_packages(
        &self,
        request: Request<pb::ListPackagesRequest>,
    ) -> Reply<pb::ListPackagesResponse> {
        let tenant = self.tenant(&request).await?;
        let packages = self.api.list_packages(&tenant).await.map_err(status)?;
        Ok(Response::new(pb::ListPackagesResponse {
            packages: packages.iter().map(package_to_pb).collect(),
        }))
    }

    async fn describe_package(
        &self,
        request: Request<pb::DescribePackageRequest>,
    ) -> Reply<pb::Package> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let package = self
            .api
            .describe(&tenant, &r.name, r.version)
            .await
            .map_err(status)?;
        Ok(Response::new(package_to_pb(&package)))
    }

    async fn start_execution(
        &self,
        request: Request<pb::StartExecutionRequest>,
    ) -> Reply<pb::StartExecutionResponse> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let (record, created) = self
            .api
            .start(
                &tenant,
                StartRequest {
                    package: r.package,
                    version: r.version,
                    workflow: r.workflow,
                    input: r.input_json,
                    idempotency_key: r.idempotency_key,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StartExecutionResponse {
            execution: Some(execution_to_pb(&record, &[])),
            created,
        }))
    }

    async fn get_execution(
        &self,
        request: Request<pb::GetExecutionRequest>,
    ) -> Reply<pb::Execution> {
        let tenant = self.tenant(&request).await?;
        let view = self
            .api
            .execution(&tenant, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(execution_to_pb(
            &view.record,
            &view.pending_approvals,
        )))
    }

    async fn list_executions(
        &self,
        request: Request<pb::ListExecutionsRequest>,
    ) -> Reply<pb::ListExecutionsResponse> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let status_filter = pb::ExecutionStatus::try_from(r.status)
            .map_err(|_| Status::invalid_argument(format!("unknown status {}", r.status)))?;
        let filter = ListFilter {
            status: convert::status_from_pb(status_filter),
            package: optional(r.package),
            workflow: optional(r.workflow),
            limit: r.page_size.into(),
            ..ListFilter::default()
        };
        let page = self
            .api
            .list(&tenant, filter, Some(&r.page_token))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListExecutionsResponse {
            executions: page
                .executions
                .iter()
                .map(|r| execution_to_pb(r, &[]))
                .collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    type WatchExecutionStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

    async fn watch_execution(
        &self,
        request: Request<pb::WatchExecutionRequest>,
    ) -> Reply<Self::WatchExecutionStream> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let mut events = self
            .api
            .watch(&tenant, &r.id, r.after_seq)
            .await
            .map_err(status)?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = events.recv() => match event {
                        Some(event) => event,
                        None => return,
                    },
                    () = async { drop(stopping.wait_for(|s| *s).await) } => {
                        let _ = tx
                            .send(Err(Status::unavailable(
                                "the server is shutting down; reconnect to continue watching",
                            )))
                            .await;
                        return;
                    }
                };
                let out = match event {
                    Ok(WatchEvent::Entry(entry)) => {
                        let progress = convert::progress_of(&entry);
                        let sent = tx
                            .send(Ok(pb::WatchEvent {
                                event: Some(pb::watch_event::Event::Entry(entry_to_pb(&entry))),
                            }))
                            .await;
                        if sent.is_err() {
                            return;
                        }
                        match progress {
                            Some(p) => Ok(pb::WatchEvent {
                                event: Some(pb::watch_event::Event::Progress(p)),
                            }),
                            None => continue,
                        }
                    }
                    Ok(WatchEvent::Finished(record)) => Ok(pb::WatchEvent {
                        event: Some(pb::watch_event::Event::Finished(execution_to_pb(
                            &record,
                            &[],
                        ))),
                    }),
                    Err(e) => Err(status(e)),
                };
                if tx.send(out).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn approve(&self, request: Request<pb::ApproveRequest>) -> Reply<pb::Approval> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let payload = json(&r.payload_json, "payload_json")?;
        let approval = self
            .api
            .decide(&tenant, &r.id, &r.key, Decision::Approve(payload))
            .await
            .map_err(status)?;
        Ok(Response::new(convert::approval_to_pb(&approval)))
    }

    async fn reject(&self, request: Request<pb::RejectRequest>) -> Reply<pb::Approval> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let approval = self
            .api
            .decide(&tenant, &r.id, &r.key, Decision::Reject(r.reason))
            .await
            .map_err(status)?;
        Ok(Response::new(convert::approval_to_pb(&approval)))
    }

    async fn cancel(&self, request: Request<pb::CancelRequest>) -> Reply<pb::Execution> {
        let tenant = self.tenant(&request).await?;
        let record = self
            .api
            .cancel(&tenant, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(execution_to_pb(&record, &[])))
    }

    async fn retry(&self, request: Request<pb::RetryRequest>) -> Reply<pb::Execution> {
        let tenant = self.tenant(&request).await?;
        let record = self
            .api
            .retry(&tenant, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(execution_to_pb(&record, &[])))
    }

    async fn get_journal(
        &self,
        request: Request<pb::GetJournalRequest>,
    ) -> Reply<pb::GetJournalResponse> {
        let tenant = self.tenant(&request).await?;
        let r = request.into_inner();
        let entries = self
            .api
            .journal(&tenant, &r.id, r.after_seq)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetJournalResponse {
            entries: entries.iter().map(entry_to_pb).collect(),
        }))
    }
}

/// Serves `cerebelum.v1`, health and reflection on `listener` until
/// `shutdown` resolves. `max_message_bytes` bounds one request (an upload
/// carries a whole package).
pub async fn serve(
    api: Api,
    listener: TcpListener,
    max_message_bytes: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> crate::Result<()> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CerebelumServer<Service>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(DESCRIPTOR)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_error = |e| Error::Runtime(format!("building gRPC reflection: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let service = CerebelumServer::new(Service::new(api, stopping))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        // No Nagle: a small reply must not wait for the client's delayed ACK
        // (that cost 40 ms a round trip).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
        .map_err(|e| Error::Runtime(format!("gRPC server: {e}")))
}

/// Whether a status means "try again": the server is down or restarting.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}
