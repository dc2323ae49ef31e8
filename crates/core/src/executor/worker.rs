//! Step attempts served by external workers: the attempt's journal entry
//! and its task are committed together, then the execution waits for the
//! task's outcome (in process for a while, then hibernated until the
//! task's deadline; a completion wakes it either way) and treats it as
//! the outcome of a sandboxed attempt: same retry policy, same journal.

use super::replay::Interrupt;
use super::state::ExecState;
use crate::journal::{Attempt, CallError, Event, Outcome, Output};
use crate::model::{TaskId, TaskSpec, TaskStatus, TaskTimeouts};
use crate::store::{NewEntry, SideWrite};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The longest the engine waits between two looks at a task's row when
/// no completion on this node wakes it (one on another node).
const MAX_LOOK_EVERY: Duration = Duration::from_millis(500);

/// How long an execution's next task waits for the worker that completed
/// its last one before any worker of the queue may take it.
pub const STICKY_FOR: Duration = Duration::from_millis(1000);

/// In-process wake-ups: of workers long-polling a queue when a task is
/// queued on this node, and of executions waiting for a task when a
/// worker completes it through this node.
#[derive(Default)]
pub struct TaskSignals {
    queues: Mutex<HashMap<(String, String), Arc<Notify>>>,
    tasks: Mutex<HashMap<TaskId, Arc<Notify>>>,
}

impl TaskSignals {
    /// What a long-poll on `tenant`'s `queue` waits on.
    pub fn queue(&self, tenant: &str, queue: &str) -> Arc<Notify> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        queues
            .entry((tenant.to_owned(), queue.to_owned()))
            .or_default()
            .clone()
    }

    /// Wakes a worker long-polling `tenant`'s `queue` on this node for a
    /// task just queued: one (each claim takes the write lock), or every
    /// one if the task may go to a particular worker only (sticky).
    pub fn queued(&self, tenant: &str, queue: &str, everyone: bool) {
        let queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(waiting) = queues.get(&(tenant.to_owned(), queue.to_owned())) {
            if everyone {
                waiting.notify_waiters();
            }
            waiting.notify_one();
        }
    }

    /// Wakes the execution waiting for task `id` (if it waits here).
    pub fn finished(&self, id: &TaskId) {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(waiting) = tasks.get(id) {
            waiting.notify_one();
        }
    }

    fn waiter(&self, id: &TaskId) -> Arc<Notify> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.entry(id.clone()).or_default().clone()
    }

    fn forget(&self, id: &TaskId) {
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// How a worker attempt ended.
pub enum WorkerEnd {
    /// The worker's outcome, or a timeout's error, with the worker that
    /// held the task (none if no worker took it).
    Returned {
        outcome: Outcome,
        worker: Option<String>,
        /// What the step printed in this attempt, in order.
        output: Vec<Output>,
    },
    /// The execution was cancelled while it waited: the caller delivers
    /// the cancellation and closes the task.
    Cancelled,
}

/// A step attempt on an external worker queue.
pub struct WorkerAttempt<'a> {
    pub caller: &'a str,
    pub seq: i64,
    pub step: &'a str,
    pub input: &'a str,
    pub queue: &'a str,
    pub attempt: u32,
    /// Start-to-close: the step's attempt timeout.
    pub timeout: Duration,
    pub interruptible: bool,
}

impl WorkerAttempt<'_> {
    fn id(&self, exec: &ExecState) -> TaskId {
        TaskId {
            execution_id: exec.record.id.clone(),
            seq: self.seq,
            attempt: self.attempt,
        }
    }

    /// Journals the attempt and queues its task, in one durable commit
    /// (a worker can take the task only once the attempt is journaled).
    pub async fn open(&self, exec: &ExecState) -> Result<(), Interrupt> {
        if exec.engine.config.replay_only {
            // A task for a worker: a replay check ends here.
            return Err(Interrupt::Suspend { wake_at: None });
        }
        // The step's own timeouts, if the package places it on this queue.
        let placed = exec
            .package
            .info
            .step(self.step)
            .ok()
            .map(|s| &s.options)
            .filter(|o| o.worker.as_deref() == Some(self.queue));
        let spec = TaskSpec {
            seq: self.seq,
            attempt: self.attempt,
            queue: self.queue.to_owned(),
            step: self.step.to_owned(),
            input: self.input.to_owned(),
            timeouts: TaskTimeouts {
                schedule_to_start_ms: placed.and_then(|o| o.schedule_to_start_ms),
                start_to_close_ms: self.timeout.as_millis() as u64,
                heartbeat_ms: Some(
                    placed
                        .and_then(|o| o.heartbeat_ms)
                        .unwrap_or(exec.engine.config.worker_heartbeat.as_millis() as u64),
                ),
            },
            sticky: exec
                .last_worker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .map(|w| (w, exec.engine.now_ms() + STICKY_FOR.as_millis() as i64)),
        };
        let entry = NewEntry::new(
            self.caller,
            Event::Attempt {
                call: self.seq,
                attempt: Attempt {
                    step: self.step.to_owned(),
                    attempt: self.attempt,
                    invocation: None,
                    queue: Some(self.queue.to_owned()),
                },
            },
        );
        let sticky = spec.sticky.is_some();
        exec.writer
            .commit(vec![entry], vec![SideWrite::OpenTask(spec)], None)
            .await?;
        exec.engine
            .tasks
            .queued(&exec.record.tenant, self.queue, sticky);
        Ok(())
    }

    /// Whether this attempt's task exists (it was opened before a crash
    /// or a hibernation, and is waited for again rather than re-opened).
    pub async fn exists(&self, exec: &ExecState) -> Result<bool, Interrupt> {
        match exec.engine.store.tasks().task(&self.id(exec)).await {
            Ok(_) => Ok(true),
            Err(crate::Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits for the task's outcome; `fresh`: the task was just queued
    /// (nothing to read before a worker completes it or a while passes).
    pub async fn wait(&self, exec: &ExecState, fresh: bool) -> Result<WorkerEnd, Interrupt> {
        let id = self.id(exec);
        let woken = exec.engine.tasks.waiter(&id);
        let ended = self.wait_on(exec, &id, &woken, fresh).await;
        exec.engine.tasks.forget(&id);
        ended
    }

    async fn wait_on(
        &self,
        exec: &ExecState,
        id: &TaskId,
        woken: &Notify,
        fresh: bool,
    ) -> Result<WorkerEnd, Interrupt> {
        let engine = &exec.engine;
        let began = engine.now_ms();
        let mut look_every = Duration::from_millis(5);
        if fresh {
            self.nap(exec, woken, &mut look_every).await;
        }
        loop {
            if self.interruptible && exec.cancel.pending() {
                return Ok(WorkerEnd::Cancelled);
            }
            let task = engine.store.tasks().task(id).await?;
            if let Some(outcome) = task.outcome {
                if task.status == TaskStatus::Completed {
                    *exec.last_worker.lock().unwrap_or_else(|p| p.into_inner()) =
                        task.worker.clone();
                }
                return Ok(WorkerEnd::Returned {
                    outcome,
                    worker: task.worker,
                    output: printed(exec, id).await?,
                });
            }
            let now = engine.now_ms();
            if task.status.is_final() {
                // Closed without an outcome (the execution stopped waiting).
                return Ok(WorkerEnd::Returned {
                    outcome: Err(CallError::cancelled()),
                    worker: task.worker,
                    output: printed(exec, id).await?,
                });
            }
            if task.deadline_at_ms.is_some_and(|d| d <= now) {
                engine.store.tasks().time_out_task(id, now).await?;
                continue;
            }
            // What it waits for (a worker of the queue, or the worker
            // running it) `status` reads from the tasks table itself.
            if now - began >= engine.config.hibernate_after.as_millis() as i64 {
                // The completion (or the deadline) wakes it again.
                return Err(Interrupt::Suspend {
                    wake_at: task.deadline_at_ms,
                });
            }
            self.nap(exec, woken, &mut look_every).await;
        }
    }

    /// Until a wake-up (the task finished on this node, a cancellation)
    /// or `look_every` has passed (which then doubles).
    async fn nap(&self, exec: &ExecState, woken: &Notify, look_every: &mut Duration) {
        let notified = woken.notified();
        let cancelled = exec.cancel.notify.notified();
        tokio::select! {
            _ = notified => {}
            _ = cancelled, if self.interruptible => {}
            _ = tokio::time::sleep(*look_every) => {
                *look_every = (*look_every * 2).min(MAX_LOOK_EVERY);
            }
        }
    }
}

/// What attempt `id`'s step printed: the `output` calls its worker
/// recorded (args `{"stream", "text"}`), as the sandbox's output is
/// journaled.
async fn printed(exec: &ExecState, id: &TaskId) -> Result<Vec<Output>, Interrupt> {
    let calls = exec
        .engine
        .store
        .tasks()
        .attempt_calls(id, "output")
        .await?;
    calls
        .into_iter()
        .map(|call| {
            // Checked when recorded: {"stream": "stdout"|"stderr", "text": ...}.
            let printed: Printed = serde_json::from_str(&call.args).map_err(|e| {
                Interrupt::Infra(format!(
                    "output call {} of task {id:?} is not {{\"stream\", \"text\"}}: {e}",
                    call.position
                ))
            })?;
            Ok(Output {
                stream: printed.stream,
                bytes: printed.text.len() as u64,
                text: printed.text,
            })
        })
        .collect()
}

/// The arguments of an `output` call.
#[derive(serde::Deserialize)]
struct Printed {
    stream: String,
    text: String,
}
