//! The worker side of the API: external workers register, long-poll
//! their queue for tasks, heartbeat and complete them, always within their
//! tenant; served as `cerebelum.v1.WorkerService` ([`WorkerGrpc`]).

use super::convert::worker_to_pb;
use super::grpc::{status, tenant};
use super::pb;
use super::service::{Api, MAX_ID_BYTES, MAX_NAME_BYTES, check_len};
use crate::error::{Error, Result};
use crate::model::{
    CallError, ErrorKind, StepCallRecord, TaskBeat, TaskClaim, TaskId, TaskToken, TenantRecord,
    WorkerRecord, check_queue_name,
};
use serde_json::Value;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// The longest a poll waits for a task.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(60);
/// How long a poll waits unless told.
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(20);
/// A waiting poll looks at the queue at least this often, for tasks queued
/// by another node (this node's own wake it at once).
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// Workers seen within this are listed (and counted in `/metrics`).
const LISTED_WITHIN_MS: i64 = 60_000;
/// A worker's polls store that it was seen at most this often (a write
/// per poll would cost a flush per task).
const NOTE_SEEN_EVERY_MS: i64 = 5_000;

fn token(text: &str) -> Result<TaskToken> {
    check_len("the task token", text, MAX_ID_BYTES + 64)?;
    text.parse().map_err(Error::InvalidInput)
}

impl Api {
    /// Registers (or re-registers) a worker of `tenant` on `queue`.
    pub async fn register_worker(
        &self,
        tenant: &TenantRecord,
        worker_id: &str,
        queue: &str,
        host: &str,
        max_tasks: i64,
    ) -> Result<()> {
        check_len("the worker id", worker_id, MAX_NAME_BYTES)?;
        check_len("the host name", host, MAX_NAME_BYTES)?;
        check_queue_name(queue)?;
        if worker_id.is_empty() {
            return Err(Error::InvalidInput(
                "the worker id is empty; use one unique within the tenant, e.g. host:pid".into(),
            ));
        }
        let now = self.now_ms();
        self.store()
            .tasks()
            .register_worker(&WorkerRecord {
                tenant: tenant.name.clone(),
                worker_id: worker_id.to_owned(),
                queue: queue.to_owned(),
                host: host.to_owned(),
                max_tasks: max_tasks.max(1),
                registered_at_ms: now,
                last_seen_at_ms: now,
                tasks_in_flight: 0,
            })
            .await
    }

    /// Claims a task of `tenant`'s `queue` for `worker_id`, waiting up to
    /// `wait` for one.
    pub async fn poll_task(
        &self,
        tenant: &TenantRecord,
        worker_id: &str,
        queue: &str,
        wait: Duration,
    ) -> Result<Option<TaskClaim>> {
        check_len("the worker id", worker_id, MAX_NAME_BYTES)?;
        check_queue_name(queue)?;
        let tasks = self.store().tasks();
        let now = self.now_ms();
        let due = {
            let mut seen = self.workers_seen.lock().unwrap_or_else(|p| p.into_inner());
            let last = seen
                .entry((tenant.name.clone(), worker_id.to_owned()))
                .or_insert(i64::MIN);
            let due = now.saturating_sub(*last) >= NOTE_SEEN_EVERY_MS;
            if due {
                *last = now;
            }
            due
        };
        if due {
            tasks.worker_seen(&tenant.name, worker_id, now).await?;
        }
        let signal = self
            .node("serving workers")
            .ok()
            .map(|node| node.task_signals().queue(&tenant.name, queue));
        let until = tokio::time::Instant::now() + wait.min(MAX_POLL_WAIT);
        loop {
            // Listen before looking, so a task queued in between wakes us.
            let notified = signal.as_ref().map(|s| s.notified());
            let mut notified = std::pin::pin!(notified);
            if let Some(n) = notified.as_mut().as_pin_mut() {
                n.enable();
            }
            let claim = tasks
                .claim_task(&tenant.name, queue, worker_id, self.now_ms())
                .await?;
            if claim.is_some() {
                return Ok(claim);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(None);
            }
            let nap = tokio::time::sleep((until - now).min(LOOK_EVERY));
            match notified.as_mut().as_pin_mut() {
                Some(n) => {
                    tokio::select! {
                        _ = n => {}
                        _ = nap => {}
                    }
                }
                None => nap.await,
            }
        }
    }

    /// A heartbeat of the claim `token`, with progress.
    pub async fn heartbeat_task(
        &self,
        tenant: &TenantRecord,
        token_text: &str,
        progress: Option<Value>,
    ) -> Result<TaskBeat> {
        let token = token(token_text)?;
        if let Some(p) = &progress {
            self.check_payload(tenant, "the progress", p.to_string().len())?;
        }
        self.store()
            .tasks()
            .heartbeat_task(&tenant.name, &token, progress.as_ref(), self.now_ms())
            .await
    }

    /// Completes the claim `token` with the step's outcome and wakes the
    /// execution if it waits on this node. `before` are the calls the
    /// worker answered itself since its last recorded one (its last
    /// `output` lines), recorded first: sent again with a retried
    /// completion, they are kept once.
    pub async fn complete_task(
        &self,
        tenant: &TenantRecord,
        token_text: &str,
        outcome: std::result::Result<Value, CallError>,
        before: Vec<StepCallRecord>,
    ) -> Result<()> {
        let token = token(token_text)?;
        let size = match &outcome {
            Ok(v) => v.to_string().len(),
            Err(e) => e.message.len() + e.details.as_ref().map_or(0, |d| d.to_string().len()),
        };
        self.check_payload(tenant, "the task's outcome", size)?;
        let tasks = self.store().tasks();
        if !before.is_empty() {
            let size = checked_calls(&before)?;
            self.check_payload(tenant, "the step's last calls", size)?;
            tasks
                .record_step_calls(&tenant.name, &token, &before, None, self.now_ms())
                .await?;
        }
        tasks
            .complete_task(&tenant.name, &token, &outcome, self.now_ms())
            .await?;
        if let Ok(node) = self.node("completing a task") {
            node.task_signals().finished(&token.id);
        }
        Ok(())
    }

    /// Hands the claim `token`'s task back to its queue: claimable at
    /// once, or from `resume_at_ms` on (a worker step's long sleep).
    pub async fn release_task(
        &self,
        tenant: &TenantRecord,
        token_text: &str,
        resume_at_ms: Option<i64>,
    ) -> Result<()> {
        let token = token(token_text)?;
        let tasks = self.store().tasks();
        let now = self.now_ms();
        tasks
            .release_task(&tenant.name, &token, resume_at_ms, now)
            .await?;
        if let Ok(node) = self.node("releasing a task") {
            let task = tasks.task(&token.id).await?;
            let (tenant, queue) = (tenant.name.clone(), task.queue);
            match resume_at_ms.map(|at| at - now).filter(|&ms| ms > 0) {
                None => node.task_signals().queued(&tenant, &queue, false),
                // Wakes a poller of this node when the task is due (the
                // pollers' own look every 100 ms covers the other nodes
                // and a restart meanwhile).
                Some(ms) => {
                    let node = node.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
                        node.task_signals().queued(&tenant, &queue, false);
                    });
                }
            }
        }
        Ok(())
    }

    /// Records the next durable call of the step the claim `token` runs
    /// and answers it (see [`crate::store::Tasks::record_step_calls`]): `sleep` and `now`
    /// are answered by this server's clock, any other kind records the
    /// `answer` the worker computed. `before` are the calls the worker
    /// answered itself since its last recorded one (a clock read, a random
    /// seed, an HTTP response), recorded first, in the same transaction.
    pub async fn record_call(
        &self,
        tenant: &TenantRecord,
        token_text: &str,
        call: StepCallRecord,
        answer: Option<String>,
        before: Vec<StepCallRecord>,
    ) -> Result<(StepCallRecord, i64)> {
        let token = token(token_text)?;
        let (kind, args) = (call.kind.as_str(), call.args.as_str());
        let mut size = checked_calls(&before)?;
        check_len("the call's kind", kind, MAX_NAME_BYTES)?;
        size += args.len() + answer.as_ref().map_or(0, String::len);
        self.check_payload(tenant, "the call", size)?;
        let args_value = json_of("arguments", kind, args)?;
        check_output(kind, &args_value)?;
        let now = self.now_ms();
        let mut approval = None;
        let answer = match (kind, answer) {
            (_, Some(answer)) => {
                json_of("answer", kind, &answer)?;
                answer
            }
            ("sleep", None) => {
                let Some(ms) = args_value.get("duration_ms").and_then(Value::as_i64) else {
                    return Err(Error::InvalidInput(
                        "a sleep's arguments need \"duration_ms\": a number of milliseconds".into(),
                    ));
                };
                serde_json::json!({ "due_at_ms": now.saturating_add(ms.max(0)) }).to_string()
            }
            ("now", None) => serde_json::json!({ "now_ms": now }).to_string(),
            ("approval", None) => {
                let Some(key) = args_value.get("key").and_then(Value::as_str) else {
                    return Err(Error::InvalidInput(
                        "an approval's arguments need \"key\": the name `cerebelum approve` \
                         decides it by"
                            .into(),
                    ));
                };
                check_len("the approval key", key, MAX_NAME_BYTES)?;
                let due = args_value
                    .get("timeout_ms")
                    .and_then(Value::as_i64)
                    .map(|t| now.saturating_add(t.max(0)));
                // Stored as the sandbox's await-approval stores its request.
                let mut request = args_value.clone();
                request["due_at"] = serde_json::json!(due);
                approval = Some((key.to_owned(), request));
                serde_json::json!({ "pending": true, "due_at_ms": due }).to_string()
            }
            ("signal", None) => {
                if args_value.get("name").and_then(Value::as_str).is_none() {
                    return Err(Error::InvalidInput(
                        "a signal's arguments need \"name\": the signal to wait for".into(),
                    ));
                }
                let due = args_value
                    .get("timeout_ms")
                    .and_then(Value::as_i64)
                    .map(|t| now.saturating_add(t.max(0)));
                serde_json::json!({ "pending": true, "due_at_ms": due }).to_string()
            }
            (other, None) => {
                return Err(Error::InvalidInput(format!(
                    "call '{other}' has no answer: the server answers only `sleep`, `now`, \
                     `approval` and `signal`; send the value to record as answer_json"
                )));
            }
        };
        let mut calls = before;
        calls.push(StepCallRecord {
            answer,
            at_ms: now,
            ..call
        });
        let tasks = self.store().tasks();
        let recorded = tasks
            .record_step_calls(
                &tenant.name,
                &token,
                &calls,
                approval.as_ref().map(|(k, r)| (k.as_str(), r)),
                now,
            )
            .await?;
        let recorded = match recorded.kind.as_str() {
            // One sent already is taken at once.
            "signal" => self.resolve_signal(&token.id, &recorded).await?,
            _ => recorded,
        };
        Ok((recorded, now))
    }

    /// The `signal` call `call` of task `id`'s step, answered if a signal
    /// came (or its timeout passed) since.
    async fn resolve_signal(&self, id: &TaskId, call: &StepCallRecord) -> Result<StepCallRecord> {
        let args: Value = serde_json::from_str(&call.args).unwrap_or(Value::Null);
        let answer: Value = serde_json::from_str(&call.answer).unwrap_or(Value::Null);
        let name = args.get("name").and_then(Value::as_str).unwrap_or_default();
        let due = answer.get("due_at_ms").and_then(Value::as_i64);
        self.store()
            .tasks()
            .resolve_step_signal(id, call.position, name, due, self.now_ms())
            .await
    }

    /// Answers the approvals and signals the history waited for with their
    /// decisions and payloads (or their timeouts, once due); one still
    /// pending keeps its recorded answer, and the worker hands the task
    /// back again.
    async fn decided(&self, id: &TaskId, history: &mut [StepCallRecord]) -> Result<()> {
        for call in history
            .iter_mut()
            .filter(|c| c.kind == "signal" && c.pending())
        {
            *call = self.resolve_signal(id, call).await?;
        }
        if !history.iter().any(|c| c.kind == "approval") {
            return Ok(());
        }
        let execution_id = id.execution_id.as_str();
        let executions = self.store().executions();
        let approvals = executions.approvals(execution_id).await?;
        let now = self.now_ms();
        for call in history.iter_mut().filter(|c| c.kind == "approval") {
            let args: Value = serde_json::from_str(&call.args).unwrap_or(Value::Null);
            let key = args.get("key").and_then(Value::as_str).unwrap_or_default();
            let Some(mut approval) = approvals.iter().find(|a| a.key == key).cloned() else {
                continue;
            };
            let due = approval.request.get("due_at").and_then(Value::as_i64);
            if approval.status == "pending" && due.is_some_and(|d| d <= now) {
                approval = self
                    .store()
                    .time_out_approval(execution_id, key, now)
                    .await?;
            }
            let decision = approval.decision.clone().unwrap_or(Value::Null);
            let answer = match approval.status.as_str() {
                "approved" => serde_json::json!({ "approved": decision }),
                "rejected" => serde_json::json!({ "rejected": decision }),
                "timed-out" => serde_json::json!({ "timed_out": true }),
                "cancelled" => serde_json::json!({ "cancelled": true }),
                _ => continue,
            };
            call.answer = answer.to_string();
        }
        Ok(())
    }

    /// A claim, if any, as its worker receives it: with the step's
    /// history, and how long a wait in it may hold the worker.
    async fn task_of(&self, claim: Option<TaskClaim>) -> Result<Option<pb::WorkerTask>> {
        let Some(claim) = claim else {
            return Ok(None);
        };
        let mut history = match claim.resumed {
            true => self.store().tasks().step_calls(&claim.token.id).await?,
            false => Vec::new(),
        };
        self.decided(&claim.token.id, &mut history).await?;
        let hold_ms = self
            .node("serving workers")
            .map_or(0, |n| n.config().worker_hold.as_millis() as i64);
        Ok(Some(pb::WorkerTask {
            token: claim.token.to_string(),
            execution_id: claim.token.id.execution_id.clone(),
            step: claim.step,
            input_json: claim.input,
            attempt: claim.token.id.attempt as i32,
            deadline_at_ms: claim.deadline_at_ms,
            heartbeat_ms: claim.heartbeat_ms.map(|h| h as i64),
            history: history.into_iter().map(step_call_to_pb).collect(),
            hold_ms,
            now_ms: self.now_ms(),
        }))
    }

    pub async fn unregister_worker(&self, tenant: &TenantRecord, worker_id: &str) -> Result<()> {
        check_len("the worker id", worker_id, MAX_NAME_BYTES)?;
        self.workers_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(tenant.name.clone(), worker_id.to_owned()));
        self.store()
            .tasks()
            .remove_worker(&tenant.name, worker_id)
            .await
    }

    /// The node's metrics, with the database's counts as read now (workers
    /// counted as `cerebelum workers` lists them: seen in the last minute).
    pub async fn scrape_metrics(&self) -> String {
        let gauges = self
            .store()
            .executions()
            .gauges(self.now_ms() - LISTED_WITHIN_MS)
            .await;
        crate::metrics::metrics().scrape(gauges)
    }

    /// `tenant`'s workers seen in the last minute.
    pub async fn list_workers(&self, tenant: &TenantRecord) -> Result<Vec<WorkerRecord>> {
        self.store()
            .tasks()
            .list_workers(&tenant.name, self.now_ms() - LISTED_WITHIN_MS)
            .await
    }
}

/// The size of calls a worker answered itself (sent to be recorded), if
/// each has a kind of a name's length and JSON arguments and answer.
fn checked_calls(calls: &[StepCallRecord]) -> Result<usize> {
    let mut size = 0;
    for call in calls {
        check_len("the call's kind", &call.kind, MAX_NAME_BYTES)?;
        let args = json_of("arguments", &call.kind, &call.args)?;
        check_output(&call.kind, &args)?;
        json_of("answer", &call.kind, &call.answer)?;
        size += call.args.len() + call.answer.len();
    }
    Ok(size)
}

/// An `output` call's arguments name the stream and hold the text (the
/// engine journals them as the step's output).
fn check_output(kind: &str, args: &Value) -> Result<()> {
    let stream = args.get("stream").and_then(Value::as_str);
    if kind == "output"
        && (!matches!(stream, Some("stdout" | "stderr"))
            || !args.get("text").is_some_and(Value::is_string))
    {
        return Err(Error::InvalidInput(
            "an output call's arguments are {\"stream\": \"stdout\" or \"stderr\", \"text\": \
             the text printed}"
                .into(),
        ));
    }
    Ok(())
}

/// `text`, the `what` (arguments or answer) of a call of kind `kind`,
/// as JSON (empty: `null`), or an error that says which is not JSON.
fn json_of(what: &str, kind: &str, text: &str) -> Result<Value> {
    let text = if text.trim().is_empty() { "null" } else { text };
    let verb = if what.ends_with('s') { "are" } else { "is" };
    serde_json::from_str(text).map_err(|e| {
        Error::InvalidInput(format!(
            "the {what} of call '{kind}' {verb} not valid JSON ({})",
            crate::util::json_error(&e)
        ))
    })
}

fn step_call_from_pb(c: pb::StepCall) -> StepCallRecord {
    StepCallRecord {
        position: c.position,
        kind: c.kind,
        args: c.args_json,
        answer: c.answer_json,
        at_ms: c.at_ms,
    }
}

fn step_call_to_pb(c: StepCallRecord) -> pb::StepCall {
    pb::StepCall {
        position: c.position,
        kind: c.kind,
        args_json: c.args,
        answer_json: c.answer,
        at_ms: c.at_ms,
    }
}

/// The `cerebelum.v1.WorkerService` service (behind the same front door
/// as `Cerebelum`).
pub struct WorkerGrpc {
    api: Api,
}

impl WorkerGrpc {
    pub fn new(api: Api) -> Self {
        Self { api }
    }
}

type Reply<T> = std::result::Result<Response<T>, Status>;

fn json_field(text: &str, what: &str) -> std::result::Result<Value, Status> {
    serde_json::from_str(text).map_err(|e| {
        Status::invalid_argument(format!(
            "{what} is not valid JSON ({})",
            crate::util::json_error(&e)
        ))
    })
}

#[tonic::async_trait]
impl pb::worker_service_server::WorkerService for WorkerGrpc {
    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> Reply<pb::RegisterWorkerResponse> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        self.api
            .register_worker(&tenant, &r.worker_id, &r.queue, &r.host, r.max_tasks.into())
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RegisterWorkerResponse {}))
    }

    async fn poll_task(
        &self,
        request: Request<pb::PollTaskRequest>,
    ) -> Reply<pb::PollTaskResponse> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let wait = match r.wait_ms {
            ms if ms <= 0 => DEFAULT_POLL_WAIT,
            ms => Duration::from_millis(ms as u64),
        };
        let claim = self
            .api
            .poll_task(&tenant, &r.worker_id, &r.queue, wait)
            .await
            .map_err(status)?;
        let task = self.api.task_of(claim).await.map_err(status)?;
        Ok(Response::new(pb::PollTaskResponse { task }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Reply<pb::HeartbeatResponse> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let progress = r
            .progress_json
            .as_deref()
            .map(|p| json_field(p, "the progress"))
            .transpose()?;
        let beat = self
            .api
            .heartbeat_task(&tenant, &r.token, progress)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::HeartbeatResponse {
            cancel_requested: beat.cancel_requested,
            deadline_at_ms: beat.deadline_at_ms,
        }))
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Reply<pb::CompleteTaskResponse> {
        use pb::complete_task_request::Outcome;
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let outcome = match r.outcome {
            Some(Outcome::ResultJson(text)) => Ok(json_field(&text, "the result")?),
            Some(Outcome::Error(e)) => Err(CallError {
                kind: ErrorKind::parse(&e.kind),
                message: e.message,
                details: e
                    .details_json
                    .as_deref()
                    .map(|d| json_field(d, "the error's details"))
                    .transpose()?,
            }),
            None => {
                return Err(Status::invalid_argument(
                    "the completion has neither result_json nor error",
                ));
            }
        };
        self.api
            .complete_task(
                &tenant,
                &r.token,
                outcome,
                r.before.into_iter().map(step_call_from_pb).collect(),
            )
            .await
            .map_err(status)?;
        // A claim of what is queued now, without waiting.
        let claim = match r.next {
            Some(next) => self
                .api
                .poll_task(&tenant, &next.worker_id, &next.queue, Duration::ZERO)
                .await
                .map_err(status)?,
            None => None,
        };
        let task = self.api.task_of(claim).await.map_err(status)?;
        Ok(Response::new(pb::CompleteTaskResponse { task }))
    }

    async fn release_task(
        &self,
        request: Request<pb::ReleaseTaskRequest>,
    ) -> Reply<pb::ReleaseTaskResponse> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        self.api
            .release_task(&tenant, &r.token, r.resume_at_ms)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ReleaseTaskResponse {}))
    }

    async fn record_call(
        &self,
        request: Request<pb::RecordCallRequest>,
    ) -> Reply<pb::RecordCallResponse> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        let (call, now_ms) = self
            .api
            .record_call(
                &tenant,
                &r.token,
                StepCallRecord {
                    position: r.position,
                    kind: r.kind,
                    args: r.args_json,
                    answer: String::new(),
                    at_ms: 0,
                },
                r.answer_json,
                r.before.into_iter().map(step_call_from_pb).collect(),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RecordCallResponse {
            call: Some(step_call_to_pb(call)),
            now_ms,
        }))
    }

    async fn unregister_worker(
        &self,
        request: Request<pb::UnregisterWorkerRequest>,
    ) -> Reply<pb::UnregisterWorkerResponse> {
        let tenant = tenant(&request)?;
        let r = request.into_inner();
        self.api
            .unregister_worker(&tenant, &r.worker_id)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::UnregisterWorkerResponse {}))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Reply<pb::ListWorkersResponse> {
        let tenant = tenant(&request)?;
        let workers = self.api.list_workers(&tenant).await.map_err(status)?;
        Ok(Response::new(pb::ListWorkersResponse {
            workers: workers.iter().map(worker_to_pb).collect(),
        }))
    }
}
