//! The tonic server of `cerebelum.v1`, with gRPC health and reflection.
//!
//! Every call passes the front door first ([`super::auth`]: the caller's
//! key, the size of its request), then each RPC calls [`Api`] for the
//! key's tenant. Errors become gRPC statuses in one place, [`status`]:
//! database and internal failures are logged here and reach the client as
//! a generic message, never with SQL or paths in it.

use super::auth::Caller;
use super::convert::{self, entry_to_pb, execution_to_pb, package_to_pb};
use super::pb;
use super::schedules::NewSchedule;
use super::service::{Api, CheckTarget, ReplayTarget, StartRequest, UpgradeTarget, WatchEvent};
use super::streams::{StreamGuard, Streams};
use super::triggers::NewTrigger;
use crate::error::{DISK_FULL, Error};
use crate::model::{Decision, ListFilter, Overlap, TenantRecord};
use crate::store::{Follower, NewSignal};
use std::pin::Pin;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

/// The gRPC status of an engine error: the one mapping of the API.
pub fn status(e: Error) -> Status {
    match e {
        Error::InvalidInput(m) => Status::invalid_argument(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::Conflict(m) => Status::failed_precondition(m),
        e @ Error::KeyTaken(_) => Status::already_exists(e.to_string()),
        Error::QuotaExceeded(m) => Status::resource_exhausted(m),
        Error::Unauthenticated(m) => Status::unauthenticated(m),
        Error::PermissionDenied(m) => Status::permission_denied(m),
        Error::LostOwnership(_) => {
            Status::unavailable("the execution moved to another node meanwhile; retry")
        }
        // The action happened; its audit record is what was lost.
        Error::Unaudited(m) => Status::data_loss(m),
        Error::DiskFull(e) => {
            tracing::error!(error = %e, "the disk is full answering a request");
            Status::resource_exhausted(DISK_FULL)
        }
        Error::Store(e) => {
            tracing::error!(error = %e, "database error answering a request");
            Status::unavailable("the database is unavailable; retry later")
        }
        Error::Unavailable(m) => Status::unavailable(m),
        Error::Remote(m) => {
            tracing::error!(error = %m, "a server this one called failed");
            Status::internal("internal error; the server's log has the details")
        }
        other => {
            tracing::error!(error = %other, "internal error answering a request");
            Status::internal("internal error; the server's log has the details")
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// The events of a watch or a run, as the client receives them.
type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

/// The `cerebelum.v1.Cerebelum` service. Its calls were authenticated
/// by the front door ([`AuthLayer`]) before they arrive here.
pub struct Service {
    api: Api,
    streams: Streams,
    /// Turns true when the server shuts down: open watch streams end then
    /// (UNAVAILABLE, so clients reconnect), or they would hold the
    /// graceful shutdown open until their executions end.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl Service {
    pub fn new(api: Api, streams: Streams, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        Self {
            api,
            streams,
            stopping,
        }
    }

    /// Counts a stream of `caller`'s against its tenant's `max_streams`
    /// until the guard drops.
    fn open_stream(&self, caller: &Caller) -> Result<StreamGuard, Status> {
        self.streams
            .open(
                &caller.tenant.name,
                self.api.quotas(&caller.tenant).max_streams,
                &caller.key_hash,
            )
            .map_err(status)
    }

    /// The stream of a watch: `first` (if any), then `events` as gRPC
    /// events. The server works for the stream while its task runs: it
    /// ends when the execution ends, the client goes away, the key is
    /// revoked or the server stops.
    fn forward(
        &self,
        mut guard: StreamGuard,
        first: Option<pb::WatchEvent>,
        mut events: Follower,
    ) -> Response<EventStream> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        if let Some(first) = first {
            // The channel is new and empty: this cannot wait.
            let _ = tx.try_send(Ok(first));
        }
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = events.next() => match event {
                        Some(event) => event,
                        None => return,
                    },
                    () = tx.closed() => return,
                    () = guard.revoked() => {
                        let _ = tx
                            .send(Err(Status::unauthenticated(
                                "the API key of this stream was revoked",
                            )))
                            .await;
                        return;
                    }
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
        Response::new(Box::pin(ReceiverStream::new(rx)))
    }
}

/// Who made `request` (put there by the front door).
fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| {
            tracing::error!("a request reached the service without passing the front door");
            Status::internal("internal error; the server's log has the details")
        })
}

/// The tenant of `request`'s caller.
pub fn tenant<T>(request: &Request<T>) -> Result<TenantRecord, Status> {
    caller(request).map(|c| c.tenant)
}

fn start_request(r: pb::StartExecutionRequest) -> StartRequest {
    StartRequest {
        package: r.package,
        version: r.version,
        workflow: r.workflow,
        input: r.input_json,
        idempotency_key: r.idempotency_key,
        worker_queue: r.worker_queue,
    }
}

fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn json(text: &str, what: &str) -> Result<serde_json::Value, Status> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text).map_err(|e| {
        Status::invalid_argument(format!(
            "{what} is not valid JSON ({})",
            crate::util::json_error(&e)
        ))
    })
}

#[tonic::async_trait]
impl pb::cerebelum_server::Cerebelum for Service {
    async fn upload_package(
        &self,
        request: Request<pb::UploadPackageRequest>,
    ) -> Reply<pb::Package> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        if !r.check {
            let package = self
                .api
                .upload(&tenant, &r.name, r.wasm)
                .await
                .map_err(status)?;
            return Ok(Response::new(package_to_pb(&package)));
        }
        let sample = (r.sample != 0).then_some(r.sample);
        let (package, check) = self
            .api
            .upload_checked(&tenant, &r.name, r.wasm, sample, r.require_compatible)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::Package {
            check: Some(convert::check_to_pb(&check)),
            ..package_to_pb(&package)
        }))
    }

    async fn check_package(
        &self,
        request: Request<pb::CheckPackageRequest>,
    ) -> Reply<pb::PackageCheck> {
        use pb::check_package_request::Target;
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let target = match r.target {
            Some(Target::Component(bytes)) => CheckTarget::Component(bytes),
            Some(Target::Version(version)) => CheckTarget::Version(version),
            None => CheckTarget::Version(
                self.api
                    .describe(&tenant, &r.name, None)
                    .await
                    .map_err(status)?
                    .version,
            ),
        };
        let sample = (r.sample != 0).then_some(r.sample);
        let check = self
            .api
            .check_package(&tenant, &r.name, target, sample)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::check_to_pb(&check)))
    }

    async fn list_packages(
        &self,
        request: Request<pb::ListPackagesRequest>,
    ) -> Reply<pb::ListPackagesResponse> {
        let tenant = tenant(&request)?;
        let packages = self.api.list_packages(&tenant).await.map_err(status)?;
        Ok(Response::new(pb::ListPackagesResponse {
            packages: packages.iter().map(package_to_pb).collect(),
        }))
    }

    async fn describe_package(
        &self,
        request: Request<pb::DescribePackageRequest>,
    ) -> Reply<pb::Package> {
        let tenant = tenant(&request)?;
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
        let tenant = tenant(&request)?;
        let (record, created) = self
            .api
            .start(&tenant, start_request(request.into_inner()))
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
        let tenant = tenant(&request)?;
        let view = self
            .api
            .execution(&tenant, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::view_to_pb(&view)))
    }

    async fn list_executions(
        &self,
        request: Request<pb::ListExecutionsRequest>,
    ) -> Reply<pb::ListExecutionsResponse> {
        let tenant = tenant(&request)?;
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

    type WatchExecutionStream = EventStream;

    async fn watch_execution(
        &self,
        request: Request<pb::WatchExecutionRequest>,
    ) -> Reply<Self::WatchExecutionStream> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let guard = self.open_stream(&caller)?;
        let events = if r.end_only {
            self.api.watch_end(&caller.tenant, &r.id).await
        } else {
            self.api.watch(&caller.tenant, &r.id, r.after_seq).await
        };
        Ok(self.forward(guard, None, events.map_err(status)?))
    }

    type RunExecutionStream = EventStream;

    async fn run_execution(
        &self,
        request: Request<pb::StartExecutionRequest>,
    ) -> Reply<Self::RunExecutionStream> {
        let caller = caller(&request)?;
        // The stream first: past the tenant's streams, nothing starts.
        let guard = self.open_stream(&caller)?;
        let (record, created, events) = self
            .api
            .run(&caller.tenant, start_request(request.into_inner()))
            .await
            .map_err(status)?;
        let started = pb::WatchEvent {
            event: Some(pb::watch_event::Event::Started(
                pb::StartExecutionResponse {
                    execution: Some(execution_to_pb(&record, &[])),
                    created,
                },
            )),
        };
        Ok(self.forward(guard, Some(started), events))
    }

    async fn signal(&self, request: Request<pb::SignalRequest>) -> Reply<pb::SignalResponse> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let signal = NewSignal {
            payload: json(&r.payload_json, "payload_json")?,
            name: r.name,
            signal_id: Some(r.signal_id).filter(|id| !id.is_empty()),
        };
        let (signal, created) = self
            .api
            .signal(&caller.tenant, &caller.actor, &r.id, signal)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::SignalResponse {
            signal: Some(convert::signal_to_pb(&signal)),
            created,
        }))
    }

    async fn approve(&self, request: Request<pb::ApproveRequest>) -> Reply<pb::Approval> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let payload = json(&r.payload_json, "payload_json")?;
        let approval = self
            .api
            .decide(
                &caller.tenant,
                &caller.actor,
                &r.id,
                &r.key,
                Decision::Approve(payload),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(convert::approval_to_pb(&approval)))
    }

    async fn reject(&self, request: Request<pb::RejectRequest>) -> Reply<pb::Approval> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let approval = self
            .api
            .decide(
                &caller.tenant,
                &caller.actor,
                &r.id,
                &r.key,
                Decision::Reject(r.reason),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(convert::approval_to_pb(&approval)))
    }

    async fn cancel(&self, request: Request<pb::CancelRequest>) -> Reply<pb::Execution> {
        let caller = caller(&request)?;
        let record = self
            .api
            .cancel(&caller.tenant, &caller.actor, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(execution_to_pb(&record, &[])))
    }

    async fn pause(&self, request: Request<pb::PauseRequest>) -> Reply<pb::Execution> {
        let caller = caller(&request)?;
        let record = self
            .api
            .set_paused(&caller.tenant, &caller.actor, &request.get_ref().id, true)
            .await
            .map_err(status)?;
        Ok(Response::new(execution_to_pb(&record, &[])))
    }

    async fn resume(&self, request: Request<pb::ResumeRequest>) -> Reply<pb::Execution> {
        let caller = caller(&request)?;
        let record = self
            .api
            .set_paused(&caller.tenant, &caller.actor, &request.get_ref().id, false)
            .await
            .map_err(status)?;
        Ok(Response::new(execution_to_pb(&record, &[])))
    }

    async fn upgrade_executions(
        &self,
        request: Request<pb::UpgradeExecutionsRequest>,
    ) -> Reply<pb::UpgradeExecutionsResponse> {
        use pb::upgrade_executions_request::Target;
        let caller = caller(&request)?;
        let r = request.into_inner();
        let target = match r.target {
            Some(Target::Id(id)) => UpgradeTarget::Execution(id),
            Some(Target::Package(name)) => UpgradeTarget::Package {
                name,
                from: r.from_version,
            },
            None => {
                return Err(Status::invalid_argument(
                    "name an execution (`id`) or a package (`package` and `from_version`) to upgrade",
                ));
            }
        };
        let results = self
            .api
            .upgrade(&caller.tenant, &caller.actor, target, r.to_version)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UpgradeExecutionsResponse {
            results: results
                .into_iter()
                .map(|u| pb::UpgradeResult {
                    id: u.id,
                    from_version: u.from_version,
                    to_version: u.to_version,
                    upgraded: u.upgraded,
                    message: u.message,
                    pending: u.pending,
                })
                .collect(),
        }))
    }

    async fn retry(&self, request: Request<pb::RetryRequest>) -> Reply<pb::Execution> {
        let caller = caller(&request)?;
        let record = self
            .api
            .retry(&caller.tenant, &caller.actor, &request.get_ref().id)
            .await
            .map_err(status)?;
        Ok(Response::new(execution_to_pb(&record, &[])))
    }

    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Reply<pb::Schedule> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let overlap = if r.overlap.is_empty() {
            Overlap::Skip
        } else {
            Overlap::parse(&r.overlap).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "unknown overlap policy {:?}: use skip, buffer-one or allow",
                    r.overlap
                ))
            })?
        };
        let new = NewSchedule {
            name: r.name,
            cron: r.cron,
            timezone: optional(r.timezone).unwrap_or_else(|| "UTC".to_owned()),
            package: r.package,
            version: r.version,
            workflow: r.workflow,
            input: r.input_json,
            overlap,
            catch_up: if r.catch_up == 0 { 1 } else { r.catch_up },
        };
        let created = self
            .api
            .create_schedule(&caller.tenant, &caller.actor, new)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::schedule_to_pb(&created)))
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Reply<pb::ListSchedulesResponse> {
        let tenant = tenant(&request)?;
        let schedules = self.api.schedules(&tenant).await.map_err(status)?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: schedules.iter().map(convert::schedule_to_pb).collect(),
        }))
    }

    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> Reply<pb::Schedule> {
        let caller = caller(&request)?;
        let r = request.get_ref();
        let changed = self
            .api
            .pause_schedule(&caller.tenant, &caller.actor, &r.name, r.paused)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::schedule_to_pb(&changed)))
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Reply<pb::DeleteScheduleResponse> {
        let caller = caller(&request)?;
        self.api
            .delete_schedule(&caller.tenant, &caller.actor, &request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }

    async fn trigger_schedule(
        &self,
        request: Request<pb::TriggerScheduleRequest>,
    ) -> Reply<pb::StartExecutionResponse> {
        let caller = caller(&request)?;
        let (record, created) = self
            .api
            .trigger_schedule(&caller.tenant, &caller.actor, &request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StartExecutionResponse {
            execution: Some(execution_to_pb(&record, &[])),
            created,
        }))
    }

    async fn create_trigger(
        &self,
        request: Request<pb::CreateTriggerRequest>,
    ) -> Reply<pb::CreateTriggerResponse> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let new = NewTrigger {
            name: r.name,
            package: r.package,
            version: r.version,
            workflow: r.workflow,
            hmac_secret: r.hmac_secret.filter(|s| !s.is_empty()),
        };
        let (trigger, token) = self
            .api
            .create_trigger(&caller.tenant, &caller.actor, new)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreateTriggerResponse {
            trigger: Some(convert::trigger_to_pb(&trigger)),
            token,
        }))
    }

    async fn list_triggers(
        &self,
        request: Request<pb::ListTriggersRequest>,
    ) -> Reply<pb::ListTriggersResponse> {
        let tenant = tenant(&request)?;
        let triggers = self.api.triggers(&tenant).await.map_err(status)?;
        Ok(Response::new(pb::ListTriggersResponse {
            triggers: triggers.iter().map(convert::trigger_to_pb).collect(),
        }))
    }

    async fn delete_trigger(
        &self,
        request: Request<pb::DeleteTriggerRequest>,
    ) -> Reply<pb::DeleteTriggerResponse> {
        let caller = caller(&request)?;
        self.api
            .delete_trigger(&caller.tenant, &caller.actor, &request.get_ref().name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteTriggerResponse {}))
    }

    async fn get_journal(
        &self,
        request: Request<pb::GetJournalRequest>,
    ) -> Reply<pb::GetJournalResponse> {
        let tenant = tenant(&request)?;
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

    async fn replay_execution(
        &self,
        request: Request<pb::ReplayExecutionRequest>,
    ) -> Reply<pb::ReplayExecutionResponse> {
        use pb::replay_execution_request::Target;
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let target = match r.target {
            None => ReplayTarget::Own,
            Some(Target::Component(bytes)) => ReplayTarget::Component(bytes),
            Some(Target::Version(version)) => ReplayTarget::Version(version),
        };
        let (report, package, version) = self
            .api
            .replay(&tenant, &r.id, target)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ReplayExecutionResponse {
            entries: report.entries,
            divergence: report.divergence,
            ended: convert::status_to_pb(report.ended) as i32,
            error: report.error,
            package,
            version,
            sha256: report.sha256,
        }))
    }
}

/// Whether a status means "try again": the server is down or restarting.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled
    )
}
