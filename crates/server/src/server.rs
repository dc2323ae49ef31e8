//! `cerebelum serve`'s one listener: the `cerebelum.v1` gRPC services
//! (with health and reflection) behind the front door, and beside them on
//! the same port plain HTTP: `GET /metrics`, the trigger webhooks and the
//! console. The one place that wires the layers below together.

use crate::api::DESCRIPTOR;
use crate::api::admin::AdminGrpc;
use crate::api::auth::AuthLayer;
use crate::api::grpc::Service;
use crate::api::pb::{
    admin_server::AdminServer, cerebelum_server::CerebelumServer,
    worker_service_server::WorkerServiceServer,
};
use crate::api::service::Api;
use crate::api::streams::Streams;
use crate::api::tls::ServerTls;
use crate::api::triggers::Triggers;
use crate::api::workers::WorkerGrpc;
use crate::error::Error;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;

/// How a server runs: its limits, all tenants together, and whether it is
/// `cerebelum dev`'s.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Largest request any tenant may send (a tenant's own quotas are
    /// lower, and checked before the request is read).
    pub max_message_bytes: usize,
    /// Watch streams open at once.
    pub max_streams: usize,
    /// Failed authentications per peer address and minute (0: no limit).
    pub max_auth_failures: u32,
    /// `cerebelum dev`: the API key the console signs a visitor from
    /// loopback in with (no sign-in page); `None` for `serve`.
    pub dev_key: Option<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_message_bytes: 256 << 20,
            max_streams: crate::api::streams::DEFAULT_NODE_MAX_STREAMS,
            max_auth_failures: crate::api::throttle::MAX_FAILURES,
            dev_key: None,
        }
    }
}

/// Serves `cerebelum.v1`, health and reflection on `listener` (behind
/// `tls` when given) until `shutdown` resolves.
pub async fn serve(
    api: Api,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: ServerSettings,
    shutdown: impl Future<Output = ()> + Send,
) -> crate::Result<()> {
    let max_message_bytes = limits.max_message_bytes;
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
    let streams = Streams::new(limits.max_streams);
    let revocations = tokio::spawn(streams.clone().check_revocations(api.store().clone()));
    let throttle = crate::api::throttle::Throttle::new(limits.max_auth_failures);
    let triggers = Triggers {
        api: api.clone(),
        throttle: throttle.clone(),
    };
    let front_door = AuthLayer::new(api.clone(), throttle.clone());
    let metrics_api = api.clone();
    let console = crate::console::Console {
        api: api.clone(),
        sessions: crate::console::session::Sessions::default(),
        streams: streams.clone(),
        stopping: stopping.clone(),
        throttle,
        live: Default::default(),
        dev_key: limits.dev_key.clone(),
    };
    let admin = AdminServer::new(AdminGrpc::new(api.store().clone(), api.master_key()))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let workers = WorkerServiceServer::new(WorkerGrpc::new(api.clone()))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let service = CerebelumServer::new(Service::new(api, streams, stopping))
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    // Plain HTTP (`GET /metrics`, the console) shares the listener:
    // HTTP/1.1 is accepted beside gRPC's HTTP/2, and the front door only
    // guards gRPC paths.
    let mut routes = tonic::service::Routes::new(health);
    let grpc = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() = grpc
        .route(
            "/metrics",
            axum::routing::get(move || metrics_page(metrics_api.clone())),
        )
        .merge(crate::api::triggers::router(triggers))
        .merge(crate::console::router(console, max_message_bytes))
        .fallback(crate::console::fallback)
        .layer(axum::middleware::from_fn(crate::console::server_timing));
    let router = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(front_door)
        .add_routes(routes)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(service)
        .add_service(workers)
        .add_service(admin);
    // No Nagle: a small reply must not wait for the client's delayed ACK
    // (that cost 40 ms a round trip).
    let tcp = TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = match tls {
        None => router.serve_with_incoming_shutdown(tcp, shutdown).await,
        Some(tls) => {
            let reloads = tokio::spawn(tls.clone().watch());
            let served = router
                .serve_with_incoming_shutdown(tls.incoming(tcp), shutdown)
                .await;
            reloads.abort();
            served
        }
    };
    revocations.abort();
    served.map_err(|e| Error::Runtime(format!("gRPC server: {e}")))
}

/// `GET /metrics`: the node's metrics in the Prometheus text format.
async fn metrics_page(api: crate::api::Api) -> impl axum::response::IntoResponse {
    (
        [(
            http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.scrape_metrics().await,
    )
}
