//! Records ↔ protobuf messages, both ways: the server sends records as
//! messages, the remote CLI turns them back into records so it prints them
//! with the same code as the local one.

use super::pb;
use super::service::ExecutionView;
use crate::journal::{Call, Entry, Event, Row};
use crate::model::{
    ApprovalRecord, CheckedExecution, ExecutionRecord, Overlap, PackageCheck, PackageInfo,
    PackageRecord, ScheduleRecord, SignalRecord, Status, StepInfo, TriggerRecord, WorkerRecord,
    WorkflowInfo,
};
use serde_json::Value;

fn text(v: &Value) -> String {
    v.to_string()
}

/// JSON text from the wire; text that is not JSON is kept as a string.
fn value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

pub fn status_to_pb(status: Status) -> pb::ExecutionStatus {
    match status {
        Status::Pending => pb::ExecutionStatus::Pending,
        Status::Running => pb::ExecutionStatus::Running,
        Status::Waiting => pb::ExecutionStatus::Waiting,
        Status::Completed => pb::ExecutionStatus::Completed,
        Status::Failed => pb::ExecutionStatus::Failed,
        Status::Cancelled => pb::ExecutionStatus::Cancelled,
    }
}

pub fn status_from_pb(status: pb::ExecutionStatus) -> Option<Status> {
    Some(match status {
        pb::ExecutionStatus::Unspecified => return None,
        pb::ExecutionStatus::Pending => Status::Pending,
        pb::ExecutionStatus::Running => Status::Running,
        pb::ExecutionStatus::Waiting => Status::Waiting,
        pb::ExecutionStatus::Completed => Status::Completed,
        pb::ExecutionStatus::Failed => Status::Failed,
        pb::ExecutionStatus::Cancelled => Status::Cancelled,
    })
}

pub fn package_to_pb(p: &PackageRecord) -> pb::Package {
    pb::Package {
        name: p.name.clone(),
        version: p.version,
        sha256: p.sha256.clone(),
        workflows: p
            .info
            .workflows
            .iter()
            .map(|w| pb::Workflow {
                name: w.name.clone(),
                description: w.description.clone(),
            })
            .collect(),
        steps: p
            .info
            .steps
            .iter()
            .map(|s| pb::Step {
                name: s.name.clone(),
                description: s.description.clone(),
                options_json: serde_json::to_string(&s.options).unwrap_or_default(),
            })
            .collect(),
        created_at_ms: p.created_at_ms,
        size_bytes: p.size_bytes,
        check: None,
    }
}

/// A package record from the wire (`tenant` is the caller's own).
pub fn package_from_pb(p: pb::Package) -> PackageRecord {
    PackageRecord {
        tenant: String::new(),
        sha256: p.sha256,
        name: p.name,
        version: p.version,
        info: PackageInfo {
            workflows: p
                .workflows
                .into_iter()
                .map(|w| WorkflowInfo {
                    name: w.name,
                    description: w.description,
                })
                .collect(),
            steps: p
                .steps
                .into_iter()
                .map(|s| StepInfo {
                    name: s.name,
                    description: s.description,
                    options: serde_json::from_str(&s.options_json).unwrap_or_default(),
                })
                .collect(),
        },
        created_at_ms: p.created_at_ms,
        size_bytes: p.size_bytes,
    }
}

pub fn check_to_pb(c: &PackageCheck) -> pb::PackageCheck {
    let each = |list: &[CheckedExecution]| {
        list.iter()
            .map(|e| pb::CheckedExecution {
                id: e.id.clone(),
                version: e.version,
                entries: e.entries,
                message: e.message.clone(),
            })
            .collect()
    };
    pb::PackageCheck {
        name: c.name.clone(),
        version: c.version,
        sha256: c.sha256.clone(),
        open: c.open,
        checked: c.checked,
        compatible: c.compatible,
        diverging: each(&c.diverging),
        unchecked: each(&c.unchecked),
        elapsed_ms: c.elapsed_ms,
    }
}

pub fn check_from_pb(c: pb::PackageCheck) -> PackageCheck {
    let each = |list: Vec<pb::CheckedExecution>| {
        list.into_iter()
            .map(|e| CheckedExecution {
                id: e.id,
                version: e.version,
                entries: e.entries,
                message: e.message,
            })
            .collect()
    };
    PackageCheck {
        name: c.name,
        version: c.version,
        sha256: c.sha256,
        open: c.open,
        checked: c.checked,
        compatible: c.compatible,
        diverging: each(c.diverging),
        unchecked: each(c.unchecked),
        elapsed_ms: c.elapsed_ms,
    }
}

pub fn approval_to_pb(a: &ApprovalRecord) -> pb::Approval {
    pb::Approval {
        execution_id: a.execution_id.clone(),
        key: a.key.clone(),
        status: a.status.clone(),
        request_json: text(&a.request),
        decision_json: a.decision.as_ref().map(text),
    }
}

pub fn approval_from_pb(a: pb::Approval) -> ApprovalRecord {
    ApprovalRecord {
        execution_id: a.execution_id,
        key: a.key,
        status: a.status,
        request: value(&a.request_json),
        decision: a.decision_json.as_deref().map(value),
    }
}

pub fn execution_to_pb(r: &ExecutionRecord, approvals: &[ApprovalRecord]) -> pb::Execution {
    pb::Execution {
        id: r.id.clone(),
        package: r.package_name.clone(),
        package_version: r.package_version,
        package_sha256: r.package_sha256.clone(),
        workflow: r.workflow.clone(),
        input_json: text(&r.input),
        status: status_to_pb(r.status) as i32,
        result_json: r.result.as_ref().map(text),
        error_json: r
            .error
            .as_ref()
            .map(|e| serde_json::to_string(e).unwrap_or_default()),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        wake_at_ms: r.wake_at_ms,
        cancel_requested: r.cancel_requested,
        pending_approvals: approvals.iter().map(approval_to_pb).collect(),
        engine_failures: r.engine_failures,
        engine_error: r.engine_error.clone(),
        note: None,
        worker_queue: r.worker_queue.clone(),
        paused: r.paused,
        continued_from: r.continued_from.clone(),
        parent_id: r.parent_id.clone(),
        detached: r.detached,
        owner: r.owner.clone(),
        epoch: r.epoch,
        tenant: r.tenant.clone(),
        idempotency_key: r.idempotency_key.clone(),
        waiting_on: Vec::new(),
        state_json: None,
        buffered_signals: Vec::new(),
        upgrade_to: None,
    }
}

/// An execution as GetExecution answers: with where it stands.
pub fn view_to_pb(view: &ExecutionView) -> pb::Execution {
    pb::Execution {
        note: view.note.clone(),
        waiting_on: view.waiting_on.clone(),
        state_json: view.state.as_ref().map(text),
        buffered_signals: view.buffered_signals.iter().map(signal_to_pb).collect(),
        upgrade_to: view.upgrade_to,
        ..execution_to_pb(&view.record, &view.pending_approvals)
    }
}

pub fn signal_to_pb(s: &SignalRecord) -> pb::Signal {
    pb::Signal {
        execution_id: s.execution_id.clone(),
        seq: s.seq,
        name: s.name.clone(),
        payload_json: text(&s.payload),
        signal_id: s.signal_id.clone(),
        received_at_ms: s.received_at_ms,
        consumed_by: s.consumed_by,
    }
}

pub fn signal_from_pb(s: pb::Signal) -> SignalRecord {
    SignalRecord {
        execution_id: s.execution_id,
        seq: s.seq,
        name: s.name,
        payload: value(&s.payload_json),
        signal_id: s.signal_id,
        received_at_ms: s.received_at_ms,
        consumed_by: s.consumed_by,
    }
}

/// An execution from the wire. Ownership fields (owner, epoch) are the
/// server's business and not sent.
pub fn execution_from_pb(e: pb::Execution) -> ExecutionView {
    let status = pb::ExecutionStatus::try_from(e.status)
        .ok()
        .and_then(status_from_pb)
        .unwrap_or(Status::Pending);
    ExecutionView {
        record: ExecutionRecord {
            id: e.id,
            tenant: e.tenant,
            package_sha256: e.package_sha256,
            package_name: e.package,
            package_version: e.package_version,
            workflow: e.workflow,
            input: value(&e.input_json),
            status,
            result: e.result_json.as_deref().map(value),
            error: e
                .error_json
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok()),
            created_at_ms: e.created_at_ms,
            updated_at_ms: e.updated_at_ms,
            wake_at_ms: e.wake_at_ms,
            owner: e.owner,
            epoch: e.epoch,
            cancel_requested: e.cancel_requested,
            engine_failures: e.engine_failures,
            engine_error: e.engine_error,
            worker_queue: e.worker_queue,
            paused: e.paused,
            continued_from: e.continued_from,
            parent_id: e.parent_id,
            detached: e.detached,
            idempotency_key: e.idempotency_key,
        },
        note: e.note,
        waiting_on: e.waiting_on,
        state: e.state_json.as_deref().map(value),
        buffered_signals: e.buffered_signals.into_iter().map(signal_from_pb).collect(),
        upgrade_to: e.upgrade_to,
        pending_approvals: e
            .pending_approvals
            .into_iter()
            .map(approval_from_pb)
            .collect(),
    }
}

/// A worker from the wire (its tenant is the caller's).
pub fn worker_from_pb(w: pb::Worker) -> WorkerRecord {
    WorkerRecord {
        tenant: String::new(),
        worker_id: w.worker_id,
        queue: w.queue,
        host: w.host,
        max_tasks: w.max_tasks.into(),
        registered_at_ms: w.registered_at_ms,
        last_seen_at_ms: w.last_seen_at_ms,
        tasks_in_flight: w.tasks_in_flight,
    }
}

pub fn worker_to_pb(w: &WorkerRecord) -> pb::Worker {
    pb::Worker {
        worker_id: w.worker_id.clone(),
        queue: w.queue.clone(),
        host: w.host.clone(),
        max_tasks: w.max_tasks.clamp(0, i32::MAX as i64) as i32,
        tasks_in_flight: w.tasks_in_flight,
        registered_at_ms: w.registered_at_ms,
        last_seen_at_ms: w.last_seen_at_ms,
    }
}

pub fn entry_to_pb(e: &Entry) -> pb::JournalEntry {
    let row = e.row();
    pb::JournalEntry {
        seq: e.seq,
        invocation: e.invocation.clone(),
        kind: row.kind,
        ref_seq: row.ref_seq,
        args_hash: row.args_hash,
        payload_json: text(&row.payload),
        at_ms: e.at_ms,
    }
}

/// A journal entry from the wire; an entry this version cannot read (a
/// newer server's) is an error that says so.
pub fn entry_from_pb(e: pb::JournalEntry) -> Result<Entry, String> {
    let event = Event::from_row(Row {
        kind: e.kind,
        ref_seq: e.ref_seq,
        args_hash: e.args_hash,
        payload: value(&e.payload_json),
    })?;
    Ok(Entry {
        seq: e.seq,
        invocation: e.invocation,
        event,
        at_ms: e.at_ms,
    })
}

/// The progress a `report-progress` entry carries, if it is one.
pub fn progress_of(e: &Entry) -> Option<pb::Progress> {
    match e.call() {
        Some((Call::ReportProgress(p), _)) => Some(pb::Progress {
            seq: e.seq,
            percent: u32::from(p.args.percent.min(100)),
            message: p.args.message.clone(),
        }),
        _ => None,
    }
}

pub fn schedule_to_pb(s: &ScheduleRecord) -> pb::Schedule {
    pb::Schedule {
        tenant: s.tenant.clone(),
        name: s.name.clone(),
        cron: s.cron.clone(),
        timezone: s.timezone.clone(),
        package: s.package.clone(),
        version: s.version,
        workflow: s.workflow.clone(),
        input_json: s.input.clone(),
        overlap: s.overlap.as_str().to_owned(),
        catch_up: s.catch_up,
        paused: s.paused,
        next_due_ms: s.next_due_ms,
        last_due_ms: s.last_due_ms,
        last_execution: s.last_execution.clone(),
        last_error: s.last_error.clone(),
        fired: s.fired,
        skipped: s.skipped,
        created_at_ms: s.created_at_ms,
    }
}

pub fn schedule_from_pb(s: pb::Schedule) -> ScheduleRecord {
    ScheduleRecord {
        tenant: s.tenant,
        name: s.name,
        cron: s.cron,
        timezone: s.timezone,
        package: s.package,
        version: s.version,
        workflow: s.workflow,
        input: s.input_json,
        overlap: Overlap::parse(&s.overlap).unwrap_or(Overlap::Skip),
        catch_up: s.catch_up,
        paused: s.paused,
        next_due_ms: s.next_due_ms,
        last_due_ms: s.last_due_ms,
        last_execution: s.last_execution,
        last_error: s.last_error,
        fired: s.fired,
        skipped: s.skipped,
        created_at_ms: s.created_at_ms,
    }
}

pub fn trigger_to_pb(t: &TriggerRecord) -> pb::Trigger {
    pb::Trigger {
        tenant: t.tenant.clone(),
        name: t.name.clone(),
        package: t.package.clone(),
        version: t.version,
        workflow: t.workflow.clone(),
        hmac_secret: t.hmac_secret.clone(),
        created_at_ms: t.created_at_ms,
    }
}

pub fn trigger_from_pb(t: pb::Trigger) -> TriggerRecord {
    TriggerRecord {
        tenant: t.tenant,
        name: t.name,
        package: t.package,
        version: t.version,
        workflow: t.workflow,
        hmac_secret: t.hmac_secret,
        token_hash: None,
        created_at_ms: t.created_at_ms,
    }
}
