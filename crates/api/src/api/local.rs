//! The CLI's local mode (`--db`): the `cerebelum.v1` services served in
//! this process, over in-memory connections, to a [`super::Client`] — the
//! same client that reaches a `cerebelum serve`. A command does the same
//! thing on a database as on a server because it goes through the same
//! service methods, conversions and status mapping; a new RPC needs no
//! local twin.
//!
//! Whoever runs the CLI on the database file can read and write it
//! anyway, so no key is asked for: every call acts as tenant `default`
//! and as the database's operator, recorded in the audit log as
//! `cli:<user>` from `local` ([`Actor::cli`]).

use super::admin::{AdminGrpc, Operator};
use super::audit::Actor;
use super::auth::Caller;
use super::grpc::Service;
use super::pb::{
    admin_server::AdminServer, cerebelum_server::CerebelumServer,
    worker_service_server::WorkerServiceServer,
};
use super::service::Api;
use super::streams::{DEFAULT_NODE_MAX_STREAMS, Streams};
use super::workers::WorkerGrpc;
use crate::error::{Error, Result};
use crate::model::DEFAULT_TENANT;
use crate::secrets::MasterKey;
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::transport::{Channel, Endpoint};

/// Largest message either side sends (an upload carries a package).
const MAX_MESSAGE: usize = 256 << 20;
/// Bytes in flight per direction of one in-memory connection.
const PIPE_BYTES: usize = 1 << 20;

/// The services of one in-process client; they stop when the last clone
/// of its channel is dropped.
#[derive(Clone)]
pub(crate) struct InProcess {
    /// Never sent: watch streams end on it when a server shuts down, and
    /// this one only ends with the process.
    _stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl InProcess {
    /// Serves `api`'s services in this process and connects a channel to
    /// them. Tenant `default` must exist (every database has it).
    pub(crate) async fn start(
        api: Api,
        master_key: Option<Arc<MasterKey>>,
    ) -> Result<(Self, Channel)> {
        let tenant = api.store().catalog().tenant(DEFAULT_TENANT).await?;
        let trusted = Trusted {
            caller: Caller {
                tenant,
                key_hash: String::new(),
                actor: Actor::cli(),
            },
            operator: Operator {
                actor: Actor::cli(),
            },
        };
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let streams = Streams::new(DEFAULT_NODE_MAX_STREAMS);
        let service = Service::new(api.clone(), streams, stopping);
        let service = CerebelumServer::new(service)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let workers = WorkerServiceServer::new(WorkerGrpc::new(api.clone()))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let admin = AdminServer::new(AdminGrpc::new(api.store().clone(), master_key))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let (connect, connections) = mpsc::unbounded_channel::<DuplexStream>();
        let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(connections)
            .map(Ok::<_, std::io::Error>);
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(InterceptedService::new(service, trusted.clone()))
                .add_service(InterceptedService::new(workers, trusted.clone()))
                .add_service(InterceptedService::new(admin, trusted))
                .serve_with_incoming(incoming)
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "the in-process services stopped");
            }
        });
        let channel = Endpoint::from_static("http://in-process")
            .connect_with_connector(Connector(connect))
            .await
            .map_err(|e| Error::Runtime(format!("connecting to the in-process services: {e}")))?;
        let place = Self {
            _stopping: Arc::new(stop),
        };
        Ok((place, channel))
    }
}

/// Marks every call as made by tenant `default` and by the database's
/// operator (what the front door of a server does from a key).
#[derive(Clone)]
struct Trusted {
    caller: Caller,
    operator: Operator,
}

impl Interceptor for Trusted {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        request.extensions_mut().insert(self.caller.clone());
        request.extensions_mut().insert(self.operator.clone());
        Ok(request)
    }
}

/// Opens a connection: one end of a new in-memory pipe for the channel,
/// the other for the server.
#[derive(Clone)]
struct Connector(mpsc::UnboundedSender<DuplexStream>);

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<DuplexStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        let sent = self.0.send(server);
        Box::pin(async move {
            sent.map_err(|_| std::io::Error::other("the in-process services stopped"))?;
            Ok(TokioIo::new(client))
        })
    }
}
