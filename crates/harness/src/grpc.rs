//! A tonic client of `cerebelum serve` as one tenant, for tests and
//! benchmarks that drive the API the way a program would.

use cerebelum::api::pb::{self, cerebelum_client::CerebelumClient};
use std::sync::atomic::{AtomicU8, Ordering};
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

/// How [`start_to_completion`] waits for the end of what it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// One `RunExecution` call, as a client waiting for the result does
    /// (the default).
    Run = 0,
    /// `StartExecution`, then a `WatchExecution` of the end alone (what
    /// `--bench api -- --start-then-wait` measures: two calls).
    StartThenEnd = 1,
    /// `StartExecution`, then a `WatchExecution` of every journal entry
    /// (`--watch-journal`: what was measured before `end_only`).
    Journal = 2,
}

static WAITING: AtomicU8 = AtomicU8::new(Waiting::Run as u8);

/// Sets how [`start_to_completion`] waits, for the whole process.
pub fn waiting(how: Waiting) {
    WAITING.store(how as u8, Ordering::Relaxed);
}

/// Runs `workflow` of `package` to its end, waiting as [`waiting`] set:
/// how long that took and the final record.
pub async fn start_to_completion(
    client: &mut Client,
    package: &str,
    workflow: &str,
    input: &str,
) -> (Duration, pb::Execution) {
    let t = Instant::now();
    let request = pb::StartExecutionRequest {
        package: package.into(),
        workflow: workflow.into(),
        input_json: input.into(),
        ..Default::default()
    };
    let how = WAITING.load(Ordering::Relaxed);
    let mut events = if how == Waiting::Run as u8 {
        client.run_execution(request).await
    } else {
        let started = client.start_execution(request).await.unwrap();
        let watch = pb::WatchExecutionRequest {
            id: started.into_inner().execution.unwrap().id,
            after_seq: 0,
            end_only: how == Waiting::StartThenEnd as u8,
        };
        client.watch_execution(watch).await
    }
    .unwrap()
    .into_inner();
    while let Some(event) = events.message().await.unwrap() {
        if let Some(pb::watch_event::Event::Finished(e)) = event.event {
            let took = t.elapsed();
            // Read on to the stream's end, which follows: a stream dropped
            // before its end is reset by this client, and after 1,024 such
            // resets h2 closes the connection (`too_many_internal_resets`),
            // which a loop of a few thousand runs on one client reached.
            while events.message().await.unwrap().is_some() {}
            return (took, e);
        }
    }
    panic!("the stream ended before the execution");
}

pub type WorkerClient =
    pb::worker_service_client::WorkerServiceClient<InterceptedService<Channel, Auth>>;

/// A `WorkerService` client of the server on 127.0.0.1:`port` with API
/// key `key`: what an external worker speaks.
pub async fn worker_client(port: u16, key: &str) -> WorkerClient {
    let (channel, auth) = channel(port, key).await;
    pb::worker_service_client::WorkerServiceClient::with_interceptor(channel, auth)
}
