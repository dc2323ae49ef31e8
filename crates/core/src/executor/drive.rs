//! Driving one claimed execution: replay its journal, run its workflow
//! code (its host calls run steps, polls, approvals and sleeps), then
//! hibernate it, finish it, or let it go when another node took it over.

use super::invocation::{self, Entrypoint, Outcome};
use super::replay::{Interrupt, ReplayIndex};
use super::state::{CancelState, ExecState, Inner};
use super::{MAX_ENGINE_RETRY, parse_payload};
use crate::error::{Error, Result};
use crate::journal::{CallError, ENGINE, ErrorKind, Event, Finished, Started, WORKFLOW};
use crate::model::{ExecutionRecord, MAX_ENGINE_FAILURES, Status};
use crate::store::{Claim, EngineFailure, NewEntry, SideWrite, StatusChange};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tracing::{info, instrument, warn};

/// Drives one claimed execution until it finishes, hibernates or is lost.
pub async fn drive(inner: Arc<Inner>, claim: Claim) {
    let cancel = Arc::new(CancelState::default());
    inner
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(claim.execution_id.clone(), cancel.clone());
    drive_registered(inner, claim, cancel, None).await;
}

/// [`drive`] for an execution already in `running`; `fresh` is the record
/// of an execution this node just created (its journal is empty).
#[instrument(name = "execution", skip_all, fields(execution_id = %claim.execution_id))]
pub async fn drive_registered(
    inner: Arc<Inner>,
    claim: Claim,
    cancel: Arc<CancelState>,
    fresh: Option<ExecutionRecord>,
) {
    let id = claim.execution_id.clone();
    match drive_claimed(&inner, &claim, cancel, fresh).await {
        Ok(()) => {}
        Err(Error::LostOwnership(_)) => lost_ownership(),
        Err(e) => {
            warn!(error = %e, "execution stopped by an engine error; it resumes from its journal later");
            let failure = EngineFailure {
                error: crate::util::shorten(&e.to_string(), 1000),
                now_ms: inner.now_ms(),
                base_delay_ms: inner.config.engine_retry.as_millis() as i64,
                max_delay_ms: MAX_ENGINE_RETRY.as_millis() as i64,
            };
            if let Err(e) = inner.store.abandon(&id, claim.epoch, &failure).await {
                warn!(error = %e, "could not release the execution");
            }
        }
    }
    inner
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
    inner.wake.notify_one();
}

/// The journal entry and status change that end an execution.
fn finish(
    status: Status,
    result: Option<Value>,
    error: Option<CallError>,
) -> (Vec<NewEntry>, StatusChange) {
    let finished = Finished {
        status,
        result: result.clone(),
        error: error.clone(),
    };
    (
        vec![NewEntry::new(ENGINE, Event::Finished(finished))],
        StatusChange::Finished {
            status,
            result,
            error,
        },
    )
}

/// Another node claimed the execution (its lease ran out here): what this
/// node was about to append was refused, and it lets the execution go.
fn lost_ownership() {
    // Claimed again under a newer lease: by another node, or by this one
    // after its lease lapsed (a write it gave up, a stall).
    warn!(
        "lost ownership: the execution was claimed again under a newer lease; dropping this run of it"
    );
}

async fn drive_claimed(
    inner: &Arc<Inner>,
    claim: &Claim,
    cancel: Arc<CancelState>,
    fresh: Option<ExecutionRecord>,
) -> Result<()> {
    let (record, entries) = match fresh {
        Some(record) => (record, Vec::new()),
        None => {
            let record = inner
                .store
                .executions()
                .execution(&claim.execution_id)
                .await?;
            let entries = inner.store.executions().journal(&record.id, 0).await?;
            (record, entries)
        }
    };
    if record.cancel_requested {
        cancel.request();
    }
    cancel.set_paused(record.paused);
    let last_seq = entries.last().map(|e| e.seq).unwrap_or(0);
    if record.paused {
        // Claimed while paused (its lease had expired): no invocation;
        // back to sleep without a due time until resumed.
        let writer = inner
            .committer
            .writer(&record.tenant, &record.id, claim.epoch, last_seq);
        let wait = StatusChange::Waiting {
            wake_at_ms: None,
            seen_signals: claim.signals,
            timer: None,
        };
        writer.commit(Vec::new(), Vec::new(), Some(wait)).await?;
        info!("execution is paused: hibernated");
        return Ok(());
    }
    if record.engine_failures >= MAX_ENGINE_FAILURES {
        // Retried often enough: an operator looks at the cause and retries it.
        let error = CallError::new(
            ErrorKind::Engine,
            format!(
                "the engine failed {} times in a row running this execution, the last time \
                 with: {}; fix the cause, then `cerebelum retry {}`",
                record.engine_failures,
                record.engine_error.as_deref().unwrap_or("(no message)"),
                record.id
            ),
        );
        let writer = inner
            .committer
            .writer(&record.tenant, &record.id, claim.epoch, last_seq);
        let (entries, change) = finish(Status::Failed, None, Some(error));
        writer
            .commit(entries, wake_parent(&record), Some(change))
            .await?;
        warn!("execution failed after too many engine errors");
        let _ = inner.finished.send(record.id.clone());
        return Ok(());
    }
    let store = inner.store.clone();
    let sha = record.package_sha256.clone();
    let package = inner
        .runtime
        .load(&record.package_sha256, || async move {
            store.catalog().package_bytes(&sha).await
        })
        .await?;
    let sandbox = inner.tenant_sandbox(&record.tenant).await?;
    // The tenant is entitled to its share of the cores while this runs.
    let _active = inner.runtime.cpu().activate(&sandbox.name);
    let writer = inner
        .committer
        .writer(&record.tenant, &record.id, claim.epoch, last_seq)
        .redacting(sandbox.secret_values.clone());
    let mut index = ReplayIndex::build(&entries);
    index.resumed = claim.resumed;
    let fuel_used = index.fuel_used;
    if index.cancel_delivered {
        cancel.delivered.store(true, Ordering::SeqCst);
    }
    if entries.is_empty() {
        let started = Started {
            workflow: record.workflow.clone(),
            input: record.input.clone(),
            package: record.package_sha256.clone(),
        };
        writer
            .push(NewEntry::new(ENGINE, Event::Started(started)))
            .await?;
    }
    info!(replaying = entries.len(), "driving execution");
    let exec = Arc::new(ExecState {
        engine: inner.clone(),
        package,
        writer: writer.clone(),
        index: Mutex::new(index),
        cancel,
        tasks: Mutex::new(HashMap::new()),
        children: Mutex::new(HashMap::new()),
        signals: claim.signals,
        child_ends: Mutex::default(),
        record,
        sandbox,
        fuel_used: AtomicU64::new(fuel_used),
        last_worker: Mutex::default(),
        timer: Mutex::default(),
    });
    let input = exec.record.input.to_string();
    let outcome = invocation::run(
        &exec,
        WORKFLOW.to_owned(),
        1,
        inner.config.workflow_timeout,
        Entrypoint::Workflow {
            name: &exec.record.workflow,
            input: &input,
        },
    )
    .await;
    for (_, task) in exec.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        task.abort();
    }
    let outcome = match outcome {
        Outcome::Returned(Ok(text)) => {
            match exec.check_payload("the workflow's result", text.len()) {
                Ok(()) => Outcome::Returned(Ok(text)),
                Err(e) => Outcome::Returned(Err(e)),
            }
        }
        other => other,
    };
    let (entries, change) = match outcome {
        Outcome::Returned(Ok(text)) => finish(Status::Completed, Some(parse_payload(&text)), None),
        Outcome::Returned(Err(e)) => {
            if exec.cancel.delivered.load(Ordering::SeqCst) {
                finish(Status::Cancelled, None, Some(e))
            } else {
                finish(Status::Failed, None, Some(e))
            }
        }
        Outcome::Interrupted(Interrupt::Nondeterminism(message)) => finish(
            Status::Failed,
            None,
            Some(CallError::new(ErrorKind::Nondeterminism, message)),
        ),
        Outcome::Interrupted(Interrupt::Suspend { wake_at }) => {
            let timer = exec.timer.lock().unwrap_or_else(|p| p.into_inner()).clone();
            writer
                .commit(
                    Vec::new(),
                    Vec::new(),
                    Some(StatusChange::Waiting {
                        wake_at_ms: wake_at,
                        seen_signals: exec.seen_signals(),
                        timer,
                    }),
                )
                .await?;
            crate::metrics::metrics().hibernations.inc();
            info!(?wake_at, "execution hibernated");
            return Ok(());
        }
        Outcome::Interrupted(Interrupt::LostOwnership) => {
            lost_ownership();
            return Ok(());
        }
        Outcome::Interrupted(Interrupt::ContinueAsNew { next }) => finish(
            Status::Completed,
            Some(serde_json::json!({ "continued_as": next })),
            None,
        ),
        Outcome::Interrupted(Interrupt::Limit { kind, message }) => {
            finish(Status::Failed, None, Some(CallError::new(kind, message)))
        }
        Outcome::Interrupted(Interrupt::Cancelled) => {
            info!("cancellation stopped running workflow code");
            finish(Status::Cancelled, None, Some(CallError::cancelled()))
        }
        Outcome::Interrupted(Interrupt::Infra(message)) => return Err(Error::Runtime(message)),
    };
    let status = match &change {
        StatusChange::Finished { status, .. } => *status,
        StatusChange::Waiting { .. } => Status::Waiting,
    };
    let side = match change {
        StatusChange::Finished { .. } => wake_parent(&exec.record),
        StatusChange::Waiting { .. } => Vec::new(),
    };
    let wakes_parent = !side.is_empty();
    writer.commit(entries, side, Some(change)).await?;
    if wakes_parent {
        // The parent is due now: claim it without waiting for a tick.
        inner.wake.notify_one();
    }
    if status.is_terminal() {
        crate::metrics::metrics()
            .executions_finished
            .get_or_create(&crate::metrics::FinishedLabels {
                tenant: exec.record.tenant.clone(),
                package: exec.record.package_name.clone(),
                status: status.to_string(),
            })
            .inc();
    }
    info!(%status, "execution finished");
    let _ = inner.finished.send(exec.record.id.clone());
    Ok(())
}

/// What the commit that finishes `record` also writes: the wake-up of
/// its parent, if it is a child (see `start-child`).
fn wake_parent(record: &ExecutionRecord) -> Vec<SideWrite> {
    record
        .parent_id
        .iter()
        .map(|parent| SideWrite::WakeParent {
            parent: parent.clone(),
        })
        .collect()
}
