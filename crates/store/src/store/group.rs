//! Group commit: one task owns the write path and commits everything that is
//! ready in one transaction, because a durable flush costs 0.1–4 ms here.
//!
//! Writers push entries without waiting and call [`JournalWriter::sync`]
//! (or commit with an acknowledgement) where the durability contract needs
//! it: before user code sees a step result, before an execution hibernates
//! or finishes (see the store's module docs for the whole list). What
//! nobody waits for stays with its writer: the next write of the execution
//! that somebody waits for takes it along (in order, in one operation), or
//! after [`RIDE_ALONG`] a task sends it on its own. So a step's call entry
//! rides in the same commit as its result (one flush per sequential step,
//! not two; and no wake-up of the commit thread for it), and a long step's
//! call still shows up for `watch` a few milliseconds after it started. A
//! crash can therefore lose only a suffix of an execution's journal that
//! nobody has observed, and replay regenerates it.
//!
//! Tenants share the write path fairly: what is waiting is queued per
//! tenant, and a batch takes an equal part from each tenant with something
//! waiting, so a tenant that floods the journal delays another's commit by
//! at most the batch being written, not by its whole backlog.

use super::SharedStore;
use super::feed::Feeds;
use super::{CommitOp, Creation, SideWrite, StatusChange};
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::journal::{Entry, Event};
use crate::model::CallError;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long entries that nobody waits for may stay with their writer,
/// waiting for a write somebody waits for to take them along.
const RIDE_ALONG: Duration = Duration::from_millis(10);

/// How many operations one transaction takes at most.
const MAX_BATCH: usize = 2048;

/// How many when several tenants have operations waiting: a smaller batch
/// is written sooner, and the operations of the others wait for it.
const SHARED_BATCH: usize = 128;

struct Pending {
    /// The tenant of the execution, whose queue it waits in.
    tenant: Arc<str>,
    op: CommitOp,
    health: Arc<AtomicU8>,
    ack: Option<oneshot::Sender<Result<()>>>,
}

const HEALTHY: u8 = 0;
const LOST: u8 = 1;
const FAILED: u8 = 2;

/// What the commit loop observes: the size of each batch and the time its
/// commit took (`journal_commit_batch`, `journal_commit_seconds`).
#[derive(Clone)]
pub struct CommitMetrics {
    pub batch: Histogram,
    pub seconds: Histogram,
}

/// The handle to the group-commit task.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::UnboundedSender<Pending>,
    clock: SharedClock,
}

impl GroupCommitter {
    /// Starts the commit loop on a thread of its own (a batch then costs
    /// one thread hop each way; on these VMs a cross-thread wake-up is the
    /// dominant cost of a commit). Must be called inside a tokio runtime,
    /// which the loop uses for the store's async API.
    /// Each commit touches the `feeds` of the executions it wrote, so
    /// their followers see the new entries at once.
    /// `metrics` observes each batch (the node's; a handle, so the store
    /// imports no global).
    pub fn start(
        store: SharedStore,
        clock: SharedClock,
        feeds: Feeds,
        metrics: CommitMetrics,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = tokio::runtime::Handle::current();
        let loop_clock = clock.clone();
        std::thread::Builder::new()
            .name("cerebelum-group-commit".into())
            .spawn(move || run(&handle, store, loop_clock, feeds, metrics, rx))
            .map_err(|e| Error::io("starting the group-commit thread", e))?;
        Ok(Self { tx, clock })
    }

    /// Creates an execution in the next group commit; returns once it is
    /// durable. Its journal starts empty.
    pub async fn create(&self, creation: Creation) -> Result<()> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                tenant: creation.new.tenant.as_str().into(),
                op: CommitOp {
                    execution_id: creation.new.id.clone(),
                    epoch: creation.epoch(),
                    create: Some(creation),
                    entries: Vec::new(),
                    side: Vec::new(),
                    status: None,
                },
                health: Arc::new(AtomicU8::new(HEALTHY)),
                ack: Some(ack),
            })
            .map_err(|_| Error::Runtime("the commit task has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Runtime("the commit task has stopped".into()))?
    }

    /// A writer for an execution of `tenant` this node owns at `epoch`,
    /// whose journal currently ends at `last_seq`.
    pub fn writer(
        &self,
        tenant: &str,
        execution_id: &str,
        epoch: i64,
        last_seq: i64,
    ) -> JournalWriter {
        JournalWriter {
            tenant: tenant.into(),
            execution_id: execution_id.to_owned(),
            epoch,
            state: Arc::new(Mutex::new(WriterState {
                next_seq: last_seq + 1,
                unsent: Vec::new(),
                unsent_side: Vec::new(),
            })),
            health: Arc::new(AtomicU8::new(HEALTHY)),
            committer: self.clone(),
            secrets: None,
        }
    }
}

/// Merges consecutive operations of the same execution (and epoch) into
/// one, so a step's call, attempt and result entries are one INSERT.
/// Returns the merged operations and, per pending one, its merged index.
fn coalesce(batch: &mut [Pending]) -> (Vec<CommitOp>, Vec<usize>) {
    let mut ops: Vec<CommitOp> = Vec::with_capacity(batch.len());
    let mut index = Vec::with_capacity(batch.len());
    for pending in batch.iter_mut() {
        let op = &mut pending.op;
        match ops.last_mut() {
            Some(last)
                if last.execution_id == op.execution_id
                    && last.epoch == op.epoch
                    && last.status.is_none()
                    && op.create.is_none() =>
            {
                last.entries.append(&mut op.entries);
                last.side.append(&mut op.side);
                last.status = op.status.take();
            }
            _ => ops.push(CommitOp {
                create: op.create.take(),
                execution_id: op.execution_id.clone(),
                epoch: op.epoch,
                entries: std::mem::take(&mut op.entries),
                side: std::mem::take(&mut op.side),
                status: op.status.take(),
            }),
        }
        index.push(ops.len() - 1);
    }
    (ops, index)
}

/// What waits to be committed, per tenant, served in turn.
#[derive(Default)]
struct Queues {
    /// Tenants with something queued, in the order they are served.
    turns: VecDeque<Arc<str>>,
    queued: HashMap<Arc<str>, VecDeque<Pending>>,
}

impl Queues {
    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    fn push(&mut self, pending: Pending) {
        let queue = self.queued.entry(pending.tenant.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(pending.tenant.clone());
        }
        queue.push_back(pending);
    }

    /// The next batch: up to [`MAX_BATCH`] operations ([`SHARED_BATCH`]
    /// when several tenants have some queued), an equal part from each
    /// (in order within a tenant), the rest to those with more.
    fn batch(&mut self, batch: &mut Vec<Pending>) {
        let max = if self.turns.len() > 1 {
            SHARED_BATCH
        } else {
            MAX_BATCH
        };
        while batch.len() < max && !self.turns.is_empty() {
            let part = ((max - batch.len()) / self.turns.len()).max(1);
            for _ in 0..self.turns.len() {
                let Some(tenant) = self.turns.pop_front() else {
                    break;
                };
                let Some(queue) = self.queued.get_mut(&tenant) else {
                    continue;
                };
                let take = part.min(queue.len()).min(max - batch.len());
                batch.extend(queue.drain(..take));
                if queue.is_empty() {
                    self.queued.remove(&tenant);
                } else {
                    self.turns.push_back(tenant);
                }
                if batch.len() == max {
                    return;
                }
            }
        }
    }
}

fn run(
    runtime: &tokio::runtime::Handle,
    store: SharedStore,
    clock: SharedClock,
    feeds: Feeds,
    metrics: CommitMetrics,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut queues = Queues::default();
    let mut batch = Vec::new();
    loop {
        if queues.is_empty() {
            match rx.blocking_recv() {
                Some(first) => queues.push(first),
                None => return,
            }
        }
        while let Ok(p) = rx.try_recv() {
            queues.push(p);
        }
        queues.batch(&mut batch);
        let (ops, merged_into) = coalesce(&mut batch);
        metrics.batch.observe(ops.len() as f64);
        // What the feeds of these executions are told once committed, op
        // by op: a copy of the entries if the execution is followed here,
        // and whether it ended. Every op is told, even with no feed open
        // now: a feed opened while the commit runs may have read the store
        // before the commit showed, and only this wakes it (else it waits
        // for its next poll, 50 ms: W3's p99).
        let any_feed = feeds.open() > 0;
        let touched: Vec<(String, Option<Vec<Entry>>, bool)> = ops
            .iter()
            .map(|op| {
                let copy =
                    (any_feed && feeds.followed(&op.execution_id)).then(|| op.entries.clone());
                let ended = matches!(op.status, Some(StatusChange::Finished { .. }));
                (op.execution_id.clone(), copy, ended)
            })
            .collect();
        let began = std::time::Instant::now();
        let outcome = runtime.block_on(store.commit(ops, clock.now_ms()));
        metrics.seconds.observe(began.elapsed().as_secs_f64());
        match outcome {
            Ok(results) => {
                for ((id, entries, ended), result) in touched.into_iter().zip(&results) {
                    if result.is_ok() {
                        feeds.committed(&id, entries, ended);
                    }
                }
                for (pending, i) in batch.drain(..).zip(merged_into) {
                    let result = match &results[i] {
                        Ok(()) => Ok(()),
                        Err(Error::NotFound(m)) => Err(Error::NotFound(m.clone())),
                        Err(Error::KeyTaken(id)) => Err(Error::KeyTaken(id.clone())),
                        Err(_) => Err(Error::LostOwnership(pending.op.execution_id.clone())),
                    };
                    if let Err(Error::LostOwnership(_)) = &result {
                        pending.health.store(LOST, Ordering::SeqCst);
                    }
                    if let Some(ack) = pending.ack {
                        let _ = ack.send(result);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, ops = batch.len(), "group commit failed");
                for pending in batch.drain(..) {
                    pending.health.store(FAILED, Ordering::SeqCst);
                    if let Some(ack) = pending.ack {
                        // A full disk stays one, and a database that did
                        // not answer stays unavailable (the client is told
                        // so, and may try again).
                        let _ = ack.send(Err(match &e {
                            Error::DiskFull(m) => Error::DiskFull(m.clone()),
                            Error::Unavailable(m) => Error::Unavailable(m.clone()),
                            other => Error::Runtime(format!("journal commit failed: {other}")),
                        }));
                    }
                }
            }
        }
    }
}

/// Appends to one execution's journal. Sequence numbers are assigned here,
/// in order, by the node that owns the execution.
#[derive(Clone)]
pub struct JournalWriter {
    tenant: Arc<str>,
    execution_id: String,
    epoch: i64,
    state: Arc<Mutex<WriterState>>,
    health: Arc<AtomicU8>,
    committer: GroupCommitter,
    /// Values never written in clear (the tenant's secrets).
    secrets: Option<Arc<[String]>>,
}

/// A writer's sequence numbers and what it holds back (see the module
/// docs): entries and side writes nobody waits for, not yet sent.
struct WriterState {
    next_seq: i64,
    unsent: Vec<Entry>,
    unsent_side: Vec<SideWrite>,
}

/// An entry before its sequence number is known.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub invocation: String,
    pub event: Event,
}

impl NewEntry {
    pub fn new(invocation: impl Into<String>, event: Event) -> Self {
        Self {
            invocation: invocation.into(),
            event,
        }
    }
}

/// `event` with every occurrence of a secret in its strings replaced (the
/// stored form is redacted and read back).
fn redact_event(event: &mut Event, secrets: &[String]) {
    let mut row = event.to_row();
    redact(&mut row.payload, secrets);
    if let Ok(redacted) = Event::from_row(row) {
        *event = redacted;
    }
}

/// `error` with every occurrence of a secret replaced.
fn redact_error(error: &mut CallError, secrets: &[String]) {
    let Ok(mut value) = serde_json::to_value(&*error) else {
        return;
    };
    redact(&mut value, secrets);
    if let Ok(redacted) = serde_json::from_value(value) {
        *error = redacted;
    }
}

impl JournalWriter {
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// The seq the next entry will get.
    pub fn next_seq(&self) -> i64 {
        self.state().next_seq
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WriterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This writer, replacing every occurrence of one of `secrets` in what
    /// it writes (entries, results and errors) with `[redacted]`.
    pub fn redacting(mut self, secrets: Arc<[String]>) -> Self {
        self.secrets = (!secrets.is_empty()).then_some(secrets);
        self
    }

    fn check(&self) -> Result<()> {
        match self.health.load(Ordering::SeqCst) {
            HEALTHY => Ok(()),
            LOST => Err(Error::LostOwnership(self.execution_id.clone())),
            _ => Err(Error::Runtime(format!(
                "journal writes of execution {} failed; it will resume from its durable journal",
                self.execution_id
            ))),
        }
    }

    /// Queues entries and, if `ack`, waits until they (and everything
    /// queued before them) are durable. Returns the first assigned seq.
    async fn send(
        &self,
        entries: Vec<NewEntry>,
        side: impl FnOnce(i64) -> Vec<SideWrite>,
        status: Option<StatusChange>,
        ack: bool,
    ) -> Result<i64> {
        self.check()?;
        let mut entries = entries;
        let mut status = status;
        if let Some(secrets) = &self.secrets {
            for e in &mut entries {
                redact_event(&mut e.event, secrets);
            }
            if let Some(StatusChange::Finished { result, error, .. }) = &mut status {
                if let Some(result) = result {
                    redact(result, secrets);
                }
                if let Some(error) = error {
                    redact_error(error, secrets);
                }
            }
        }
        let (ack_tx, ack_rx) = if ack {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let first;
        let hold_back = ack_tx.is_none() && status.is_none();
        let mut arm = false;
        {
            let mut state = self.state();
            first = state.next_seq;
            let side = side(first);
            let at_ms = self.committer.clock.now_ms();
            let entries = entries.into_iter().map(|e| {
                let seq = state.next_seq;
                state.next_seq += 1;
                Entry {
                    seq,
                    invocation: e.invocation,
                    event: e.event,
                    at_ms,
                }
            });
            let entries: Vec<Entry> = entries.collect();
            if let Some(StatusChange::Waiting {
                timer: Some(timer), ..
            }) = &mut status
            {
                // The hibernation's entries are the journal's last.
                timer.next_seq = state.next_seq;
            }
            if hold_back {
                arm = state.unsent.is_empty() && state.unsent_side.is_empty();
                state.unsent.extend(entries);
                state.unsent_side.extend(side);
            } else {
                let mut all = std::mem::take(&mut state.unsent);
                all.extend(entries);
                let mut all_side = std::mem::take(&mut state.unsent_side);
                all_side.extend(side);
                // Sent under the lock so the commit task sees seqs in order.
                self.enqueue(all, all_side, status, ack_tx)?;
            }
        }
        if arm {
            let writer = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(RIDE_ALONG).await;
                writer.send_held_back();
            });
        }
        if let Some(rx) = ack_rx {
            rx.await
                .map_err(|_| Error::Runtime("the commit task has stopped".into()))??;
            self.check()?;
        }
        Ok(first)
    }

    /// Hands one operation to the commit task. Called under the state's
    /// lock.
    fn enqueue(
        &self,
        entries: Vec<Entry>,
        side: Vec<SideWrite>,
        status: Option<StatusChange>,
        ack: Option<oneshot::Sender<Result<()>>>,
    ) -> Result<()> {
        self.committer
            .tx
            .send(Pending {
                tenant: self.tenant.clone(),
                op: CommitOp {
                    create: None,
                    execution_id: self.execution_id.clone(),
                    epoch: self.epoch,
                    entries,
                    side,
                    status,
                },
                health: self.health.clone(),
                ack,
            })
            .map_err(|_| Error::Runtime("the commit task has stopped".into()))
    }

    /// Sends what is held back, if a write that is waited for did not take
    /// it along meanwhile.
    fn send_held_back(&self) {
        let mut state = self.state();
        if state.unsent.is_empty() && state.unsent_side.is_empty() {
            return;
        }
        let entries = std::mem::take(&mut state.unsent);
        let side = std::mem::take(&mut state.unsent_side);
        if self.enqueue(entries, side, None, None).is_err() {
            // The engine is stopping: what was held back is lost as in a
            // crash, and replay writes it anew.
            tracing::debug!(execution_id = %self.execution_id, "journal entries held back at shutdown");
        }
    }

    /// Queues one entry without waiting for durability; returns its seq.
    pub async fn push(&self, entry: NewEntry) -> Result<i64> {
        self.send(vec![entry], |_| Vec::new(), None, false).await
    }

    /// Queues entries (committed together, in order) without waiting.
    pub async fn push_all(&self, entries: Vec<NewEntry>) -> Result<i64> {
        self.send(entries, |_| Vec::new(), None, false).await
    }

    /// Queues one entry with side writes (committed atomically with it),
    /// without waiting; returns its seq. `side` is given the entry's seq
    /// (a child's idempotency key holds it).
    pub async fn push_side(
        &self,
        entry: NewEntry,
        side: impl FnOnce(i64) -> Vec<SideWrite>,
    ) -> Result<i64> {
        self.send(vec![entry], side, None, false).await
    }

    /// Queues one entry and waits until it is durable; returns its seq.
    pub async fn push_durable(&self, entry: NewEntry) -> Result<i64> {
        self.send(vec![entry], |_| Vec::new(), None, true).await
    }

    /// Waits until everything queued so far is durable.
    pub async fn sync(&self) -> Result<()> {
        self.send(Vec::new(), |_| Vec::new(), None, true)
            .await
            .map(|_| ())
    }

    /// Durably writes entries, side writes and a status change atomically.
    pub async fn commit(
        &self,
        entries: Vec<NewEntry>,
        side: Vec<SideWrite>,
        status: Option<StatusChange>,
    ) -> Result<()> {
        self.send(entries, |_| side, status, true).await.map(|_| ())
    }
}

/// What a secret becomes in anything written.
pub const REDACTED: &str = "[redacted]";

/// Replaces every occurrence of a secret in the strings (and keys) of `v`.
pub fn redact(v: &mut Value, secrets: &[String]) {
    fn clean(text: &str, secrets: &[String]) -> Option<String> {
        let mut out: Option<String> = None;
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            let current = out.as_deref().unwrap_or(text);
            if current.contains(s.as_str()) {
                out = Some(current.replace(s.as_str(), REDACTED));
            }
        }
        out
    }
    match v {
        Value::String(text) => {
            if let Some(cleaned) = clean(text, secrets) {
                *text = cleaned;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| redact(i, secrets)),
        Value::Object(map) => {
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                if let Some(mut value) = map.remove(&key) {
                    redact(&mut value, secrets);
                    map.insert(clean(&key, secrets).unwrap_or(key), value);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    #[test]
    fn secrets_are_redacted_everywhere_in_a_payload() {
        let secrets = ["s3cr3t-token".to_owned(), "hunter22".to_owned()];
        let mut v = serde_json::json!({
            "args": { "headers": [["authorization", "Bearer s3cr3t-token"]] },
            "s3cr3t-token": ["hunter22 and hunter22", 7, null],
            "plain": "nothing to hide",
        });
        redact(&mut v, &secrets);
        assert_eq!(
            v,
            serde_json::json!({
                "args": { "headers": [["authorization", "Bearer [redacted]"]] },
                "[redacted]": ["[redacted] and [redacted]", 7, null],
                "plain": "nothing to hide",
            })
        );
    }

    fn pending(id: &str, entries: usize, status: Option<StatusChange>) -> Pending {
        Pending {
            tenant: "t".into(),
            op: CommitOp {
                create: None,
                execution_id: id.into(),
                epoch: 1,
                entries: (0..entries)
                    .map(|i| Entry {
                        seq: i as i64,
                        invocation: "wf".into(),
                        event: Event::Usage(crate::journal::Usage { fuel: 0 }),
                        at_ms: 0,
                    })
                    .collect(),
                side: Vec::new(),
                status,
            },
            health: Arc::new(AtomicU8::new(HEALTHY)),
            ack: None,
        }
    }

    #[test]
    fn consecutive_ops_of_one_execution_merge_until_a_status_change() {
        let done = StatusChange::Finished {
            status: Status::Completed,
            result: None,
            error: None,
        };
        let mut batch = vec![
            pending("a", 2, None),
            pending("a", 1, None),
            pending("a", 1, Some(done.clone())),
            pending("a", 1, None),
            pending("b", 3, None),
        ];
        let (ops, index) = coalesce(&mut batch);
        assert_eq!(index, vec![0, 0, 0, 1, 2]);
        assert_eq!(ops.len(), 3);
        assert_eq!(ops[0].entries.len(), 4);
        assert!(
            ops[0].status.is_some(),
            "the status change closes the merged op"
        );
        assert_eq!(ops[1].entries.len(), 1);
        assert_eq!(ops[2].execution_id, "b");
    }

    #[test]
    fn a_batch_takes_an_equal_part_from_each_tenant() {
        let mut queues = Queues::default();
        for i in 0..3 * MAX_BATCH {
            let mut p = pending(&format!("a{i}"), 1, None);
            p.tenant = "flood".into();
            queues.push(p);
        }
        let mut quiet = pending("b", 1, None);
        quiet.tenant = "quiet".into();
        queues.push(quiet);
        let mut batch = Vec::new();
        queues.batch(&mut batch);
        assert_eq!(batch.len(), SHARED_BATCH, "a smaller batch while shared");
        assert!(
            batch.iter().any(|p| p.op.execution_id == "b"),
            "the quiet tenant's op is in the first batch"
        );
        // The flooding tenant's ops stay in order.
        let flood: Vec<&str> = batch
            .iter()
            .filter(|p| &*p.tenant == "flood")
            .map(|p| p.op.execution_id.as_str())
            .collect();
        assert_eq!(flood[..3], ["a0", "a1", "a2"]);
        batch.clear();
        queues.batch(&mut batch);
        assert_eq!(batch.len(), MAX_BATCH, "alone again: whole batches");
        assert_eq!(batch[0].op.execution_id, format!("a{}", SHARED_BATCH - 1));
    }
}
