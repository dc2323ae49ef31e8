//! Records ↔ protobuf messages, both ways: the server sends records as
//! messages, the remote CLI turns them back into records so it prints them
//! with the same code as the local one.

use super::pb;
use super::service::ExecutionView;
use crate::model::{ApprovalRecord, Entry, ExecutionRecord, PackageRecord, Status};
use serde_json::{Value, json};

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

fn str_of(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

pub fn package_to_pb(p: &PackageRecord) -> pb::Package {
    let list = |key: &str| p.info[key].as_array().cloned().unwrap_or_default();
    pb::Package {
        name: p.name.clone(),
        version: p.version,
        sha256: p.sha256.clone(),
        workflows: list("workflows")
            .iter()
            .map(|w| pb::Workflow {
                name: str_of(w, "name"),
                description: str_of(w, "description"),
            })
            .collect(),
        steps: list("steps")
            .iter()
            .map(|s| pb::Step {
                name: str_of(s, "name"),
                description: str_of(s, "description"),
                options_json: text(&s["options"]),
            })
            .collect(),
        created_at_ms: p.created_at_ms,
        size_bytes: p.size_bytes,
    }
}

/// A package record from the wire (`tenant` is the caller's own).
pub fn package_from_pb(p: pb::Package) -> PackageRecord {
    PackageRecord {
        tenant: String::new(),
        sha256: p.sha256,
        name: p.name,
        version: p.version,
        info: json!({
            "workflows": p.workflows.iter().map(|w| json!({
                "name": w.name, "description": w.description,
            })).collect::<Vec<_>>(),
            "steps": p.steps.iter().map(|s| json!({
                "name": s.name, "description": s.description, "options": value(&s.options_json),
            })).collect::<Vec<_>>(),
        }),
        created_at_ms: p.created_at_ms,
        size_bytes: p.size_bytes,
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
        error_json: r.error.as_ref().map(text),
        created_at_ms: r.created_at_ms,
        updated_at_ms: r.updated_at_ms,
        wake_at_ms: r.wake_at_ms,
        cancel_requested: r.cancel_requested,
        pending_approvals: approvals.iter().map(approval_to_pb).collect(),
        engine_failures: r.engine_failures,
        engine_error: r.engine_error.clone(),
        note: None,
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
            tenant: String::new(),
            package_sha256: e.package_sha256,
            package_name: e.package,
            package_version: e.package_version,
            workflow: e.workflow,
            input: value(&e.input_json),
            status,
            result: e.result_json.as_deref().map(value),
            error: e.error_json.as_deref().map(value),
            created_at_ms: e.created_at_ms,
            updated_at_ms: e.updated_at_ms,
            wake_at_ms: e.wake_at_ms,
            owner: None,
            epoch: 0,
            cancel_requested: e.cancel_requested,
            engine_failures: e.engine_failures,
            engine_error: e.engine_error,
        },
        note: e.note,
        pending_approvals: e
            .pending_approvals
            .into_iter()
            .map(approval_from_pb)
            .collect(),
    }
}

pub fn entry_to_pb(e: &Entry) -> pb::JournalEntry {
    pb::JournalEntry {
        seq: e.seq,
        invocation: e.invocation.clone(),
        kind: e.kind.clone(),
        ref_seq: e.ref_seq,
        args_hash: e.args_hash.clone(),
        payload_json: text(&e.payload),
        at_ms: e.at_ms,
    }
}

pub fn entry_from_pb(e: pb::JournalEntry) -> Entry {
    Entry {
        seq: e.seq,
        invocation: e.invocation,
        kind: e.kind,
        ref_seq: e.ref_seq,
        args_hash: e.args_hash,
        payload: value(&e.payload_json),
        at_ms: e.at_ms,
    }
}

/// The progress a `report-progress` entry carries, if it is one.
pub fn progress_of(e: &Entry) -> Option<pb::Progress> {
    (e.kind == "report-progress").then(|| pb::Progress {
        seq: e.seq,
        percent: e.payload["args"]["percent"].as_u64().unwrap_or(0).min(100) as u32,
        message: str_of(&e.payload["args"], "message"),
    })
}
