//! A tonic client of `cerebelum serve` as one tenant, for tests and
//! benchmarks that drive the API the way a program would.

use cerebelum::api::pb::{self, cerebelum_client::CerebelumClient};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// What adds the API key to every request. `Clone`, so a client can be
/// cloned to make many calls at once over one connection.
#[derive(Clone)]
pub struct Auth(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        r.metadata_mut().insert("authorization", self.0.clone());
        Ok(r)
    }
}

pub type Client = CerebelumClient<InterceptedService<Channel, Auth>>;

/// A channel to the server on 127.0.0.1:`port`, and what authenticates
/// its requests with API key `key`.
async fn channel(port: u16, key: &str) -> (Channel, Auth) {
    let channel = Channel::from_shared(super::url(port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (channel, Auth(format!("Bearer {key}").parse().unwrap()))
}

/// A client of the server on 127.0.0.1:`port` with API key `key`.
pub async fn connect(port: u16, key: &str) -> Client {
    let (channel, auth) = channel(port, key).await;
    CerebelumClient::with_interceptor(channel, auth)
}

/// The `Admin` service of the server on 127.0.0.1:`port`, with key `key`.
pub type Admin = pb::admin_client::AdminClient<InterceptedService<Channel, Auth>>;

pub async fn admin(port: u16, key: &str) -> Admin {
    let (channel, auth) = channel(port, key).await;
    pb::admin_client::AdminClient::with_interceptor(channel, auth)
}

/// Uploads the package file at `path` as `name`.
pub async fn upload(client: &mut Client, name: &str, path: &std::path::Path) {
    client
        .upload_package(pb::UploadPackageRequest {
            name: name.into(),
            wasm: std::fs::read(path).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Starts `workflow` of `package` with `input` (JSON); its id.
pub async fn start(client: &mut Client, package: &str, workflow: &str, input: &str) -> String {
    client
        .start_execution(pb::StartExecutionRequest {
            package: package.into(),
            workflow: workflow.into(),
            input_json: input.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .execution
        .unwrap()
        .id
}

/// Whether [`start_to_completion`] watches the whole journal instead of
/// the end alone (`--bench api -- --watch-journal`: what it measured
/// before `end_only`).
static WATCH_JOURNAL: AtomicBool = AtomicBool::new(false);

/// Makes [`start_to_completion`] watch every journal entry (`true`) or
/// the end alone, as a client waiting for the result does (the default).
pub fn watch_journal(all: bool) {
    WATCH_JOURNAL.store(all, Ordering::Relaxed);
}

/// Starts `workflow` of `package`, then waits for its end (a watch with
/// `end_only`, unless [`watch_journal`]): how long that took and the final
/// record.
pub async fn start_to_completion(
    client: &mut Client,
    package: &str,
    workflow: &str,
    input: &str,
) -> (Duration, pb::Execution) {
    let t = Instant::now();
    let id = start(client, package, workflow, input).await;
    let mut events = client
        .watch_execution(pb::WatchExecutionRequest {
            id,
            after_seq: 0,
            end_only: !WATCH_JOURNAL.load(Ordering::Relaxed),
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(event) = events.message().await.unwrap() {
        if let Some(pb::watch_event::Event::Finished(e)) = event.event {
            return (t.elapsed(), e);
        }
    }
    panic!("the watch ended before the execution");
}

pub type WorkerClient =
    pb::worker_service_client::WorkerServiceClient<InterceptedService<Channel, Auth>>;

/// A `WorkerService` client of the server on 127.0.0.1:`port` with API
/// key `key`: what an external worker speaks.
pub async fn worker_client(port: u16, key: &str) -> WorkerClient {
    let (channel, auth) = channel(port, key).await;
    pb::worker_service_client::WorkerServiceClient::with_interceptor(channel, auth)
}
