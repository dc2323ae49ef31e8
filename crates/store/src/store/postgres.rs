//! The PostgreSQL store: one database shared by any number of engine nodes.
//!
//! PostgreSQL is the distributed substrate (DESIGN.md "Scheduler and
//! nodes"): row locks serialise a node's fenced commit with another node's
//! claim of the same execution, claims skip rows another node has locked
//! (`FOR UPDATE SKIP LOCKED`), and a trigger sends `NOTIFY cerebelum_due`
//! when an execution becomes claimable, which every node `LISTEN`s to.
//!
//! A group commit is one transaction of a few statements whatever its
//! size: the fencing check locks all its executions in one query, and the
//! journal rows, creations and status changes go in as arrays (`UNNEST`).
//! The common batch (journal entries and status changes, nothing else) is
//! a single statement, fence included: one round trip.
//!
//! A node gives up the writes that keep it going after [`WRITE_DEADLINE`]
//! (a dead link would otherwise hold them for as long as the kernel keeps
//! the TCP connection) and drops their connection; a write given up may
//! still have committed, which the journal shows when the execution is
//! claimed again.
//!
//! Lock order, to rule out deadlocks: every statement that locks several
//! execution rows locks them in id order (`ORDER BY id FOR UPDATE`), and
//! execution rows are locked before approval rows. Claims never wait
//! (`SKIP LOCKED`).

use super::rows;
use super::sql::CONSUME_SIGNAL;
use super::sql::{Dialect, Sql};
use super::tasks::{CLOSE_TASK, OPEN_TASK, WAKE};
use super::{
    Catalog, Claim, CommitOp, Creation, EngineFailure, Executions, FiredTimers, Renewed, SideWrite,
    StatusChange, Tasks,
};
use super::{Store, Synchronous};
use crate::error::{Error, Result};
use crate::journal::{Entry, Event};
use crate::model::{ApprovalRecord, ExecutionRecord, NewExecution};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{PgConnection, Postgres};
use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::time::Duration;

/// The channel the `executions_due_notify` trigger notifies.
const DUE_CHANNEL: &str = "cerebelum_due";

/// How long a node waits for PostgreSQL to answer one of the writes that
/// keep it going (a group commit, a claim, a timer sweep, a lease renewal
/// or release, an abandon) before it gives the write up. Across a dead
/// link a statement would otherwise wait until the kernel gives up the TCP
/// connection (about 15 minutes of retransmits), holding the node's
/// group commit or scheduler all that time. Twice the pool's 10 s wait
/// for a connection; far past any write's time on a live database (a
/// sweep of 10,000 timers among a million takes under a second).
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// How many statements sweep due timers at once ([`Store::fire_timers`]),
/// each in its own transaction on its own connection, each over the timers
/// whose execution id ends in a character of its residue (ids end in
/// random hex digits, so the parts are even). A sweep's time is a random
/// page of the journal's key index per timer, and the statements fill
/// those pages side by side: 10,000 due among a million hibernated under
/// random ids (`--bench hibernated -- --scattered`) took 86-111 ms (median
/// 102) in one statement, 54-112 ms (median 77) in four; see
/// docs/benchmarks.md. The `tokio::join!` in `fire_timers` names each part.
const SWEEP_PARTS: i64 = 4;

/// PostgreSQL-backed [`Store`].
pub struct PgStore {
    /// The shared SQL, reading and writing on [`PgStore::pool`].
    sql: Sql<Postgres>,
}

/// PostgreSQL's side of the shared SQL: rows a transaction changes are
/// locked as they are read (execution rows before approval rows, the
/// order a commit locks them); uploads are serialised by an advisory lock.
const DIALECT: Dialect = Dialect {
    begin: "BEGIN",
    lock_row: " FOR UPDATE",
    lock_uploads: Some("SELECT pg_advisory_xact_lock(hashtext('cerebelum.packages'))"),
    skip_locked: " FOR UPDATE SKIP LOCKED",
    no_flush: Some("SET LOCAL synchronous_commit = off"),
    shard: "pg_backend_pid()",
    input_at: "(CAST(input AS JSONB) #>> CAST({} AS TEXT[]))",
    json_path: postgres_json_path,
};

/// `{a,b}`: the text array `#>>` takes for fields `a`, `b` (names are
/// letters, digits, `_` and `-`: the API checks).
fn postgres_json_path(path: &[String]) -> String {
    format!("{{{}}}", path.join(","))
}

impl PgStore {
    fn pool(&self) -> &PgPool {
        &self.sql.writer
    }

    /// Runs `work` (`what` names it) on a connection of the pool and gives
    /// it up after [`WRITE_DEADLINE`]: the connection, which may be half-way
    /// through a statement on a dead link, is then dropped instead of
    /// returned to the pool (its transaction, if any, never commits unless
    /// its `COMMIT` had reached the server), and the write fails with
    /// [`Error::Unavailable`]. Its caller treats it as any failed write:
    /// the executions it carried resume from their durable journals.
    async fn within_deadline<T>(
        &self,
        what: &str,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.pool().acquire().await?;
        let outcome = tokio::time::timeout(WRITE_DEADLINE, work(&mut conn)).await;
        match outcome {
            Ok(result) => result,
            Err(_) => {
                drop(conn.detach());
                Err(Error::Unavailable(format!(
                    "PostgreSQL did not answer {what} within {} s (is the database or \
                     the link to it down?); gave it up, not knowing whether it was made, \
                     and dropped its connection",
                    WRITE_DEADLINE.as_secs()
                )))
            }
        }
    }
}

/// `url` with its password masked, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _password)) => format!("{scheme}://{name}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl PgStore {
    /// Connects to the database at `url` and migrates it. `sync`: `full`
    /// waits for PostgreSQL's WAL flush on every commit; `normal` does not
    /// (`synchronous_commit = off`: survives a crash of engine nodes, not
    /// of the PostgreSQL server).
    pub async fn open(url: &str, sync: Synchronous) -> Result<Self> {
        let shown = redact(url);
        let mut options = PgConnectOptions::from_str(url).map_err(|e| {
            Error::InvalidInput(format!(
                "invalid PostgreSQL URL {shown}: {e}; expected \
                 postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ))
        })?;
        options = options.application_name("cerebelum");
        if sync == Synchronous::Normal {
            options = options.options([("synchronous_commit", "off")]);
        }
        // One connection first, to report the real failure (the pool
        // would retry until its timeout and say only that it timed out).
        let probe = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::ConnectOptions::connect(&options),
        )
        .await;
        let cannot = |why: String| {
            Error::InvalidInput(format!("cannot connect to PostgreSQL at {shown}: {why}"))
        };
        match probe {
            Err(_) => return Err(cannot("no answer within 10 s".into())),
            Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("3D000") => {
                return Err(cannot(format!(
                    "{}; create it first (e.g. `createdb`) or name another database",
                    e.message()
                )));
            }
            Ok(Err(e)) => return Err(cannot(e.to_string())),
            Ok(Ok(conn)) => sqlx::Connection::close(conn).await?,
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| cannot(e.to_string()))?;
        // sqlx serialises concurrent migrations with an advisory lock, so
        // nodes starting together on a fresh database are safe.
        let migrate = |e| rows::migrate_error(&shown, e);
        let migrator = super::migrations::postgres().await.map_err(migrate)?;
        migrator.run(&pool).await.map_err(migrate)?;
        Ok(Self {
            sql: Sql {
                reader: pool.clone(),
                writer: pool,
                dialect: DIALECT,
                folding: Default::default(),
                task_batches: Default::default(),
                point: None,
            },
        })
    }
}

/// The journal rows of a batch, column by column (for one `UNNEST` insert),
/// borrowing the batch's strings.
#[derive(Default)]
struct EntryColumns<'a> {
    execution_id: Vec<&'a str>,
    seq: Vec<i64>,
    invocation: Vec<&'a str>,
    kind: Vec<&'static str>,
    ref_seq: Vec<Option<i64>>,
    args_hash: Vec<Option<&'a str>>,
    payload: Vec<String>,
    at: Vec<i64>,
}

impl<'a> EntryColumns<'a> {
    fn push(&mut self, id: &'a str, e: &'a Entry) {
        self.execution_id.push(id);
        self.seq.push(e.seq);
        self.invocation.push(&e.invocation);
        self.kind.push(e.event.kind());
        self.ref_seq.push(e.event.ref_seq());
        self.args_hash.push(e.event.args_hash());
        self.payload.push(e.event.payload_text());
        self.at.push(e.at_ms);
    }

    async fn insert(self, conn: &mut PgConnection) -> Result<()> {
        if self.seq.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO journal (execution_id, seq, invocation, kind, ref_seq, args_hash, \
             payload, at) SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], \
             $5::bigint[], $6::text[], $7::text[], $8::bigint[])",
        )
        .bind(self.execution_id)
        .bind(self.seq)
        .bind(self.invocation)
        .bind(self.kind)
        .bind(self.ref_seq)
        .bind(self.args_hash)
        .bind(self.payload)
        .bind(self.at)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Inserts the batch's new executions; returns the ids that were inserted,
/// and for those whose idempotency key is taken, the execution that has
/// it (the others name a package that does not exist).
async fn create_all(
    conn: &mut PgConnection,
    ops: &[CommitOp],
    now_ms: i64,
) -> Result<(HashSet<String>, HashMap<String, String>)> {
    let creations: Vec<&Creation> = ops.iter().filter_map(|op| op.create.as_ref()).collect();
    let inserted = insert(conn, &creations, now_ms).await?;
    // A keyed creation not inserted: its key is taken (by an execution
    // committed before, or by one earlier in this batch), or its package
    // does not exist. One query finds the holders of all of them.
    let (mut refused, mut refused_tenant, mut refused_key) = (Vec::new(), Vec::new(), Vec::new());
    for c in &creations {
        if let Some(k) = &c.new.idempotency_key
            && !inserted.contains(&c.new.id)
        {
            refused.push(c.new.id.as_str());
            refused_tenant.push(c.new.tenant.as_str());
            refused_key.push(k.as_str());
        }
    }
    let taken = if refused.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as(
            "SELECT n.id, e.id FROM UNNEST($1::text[], $2::text[], $3::text[]) AS n (id, tenant, key) \
             JOIN executions e ON e.tenant = n.tenant AND e.idempotency_key = n.key",
        )
        .bind(refused)
        .bind(refused_tenant)
        .bind(refused_key)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect()
    };
    Ok((inserted, taken))
}

/// Inserts new executions in one statement, except those whose key is
/// taken or whose package does not exist; returns the ids inserted.
async fn insert(
    conn: &mut PgConnection,
    creations: &[&Creation],
    now_ms: i64,
) -> Result<HashSet<String>> {
    let mut id = Vec::new();
    let mut name = Vec::new();
    let mut version = Vec::new();
    let mut workflow = Vec::new();
    let mut input = Vec::new();
    let mut owner: Vec<Option<&str>> = Vec::new();
    let mut lease: Vec<Option<i64>> = Vec::new();
    let mut tenant = Vec::new();
    let mut queue: Vec<Option<&str>> = Vec::new();
    let mut key: Vec<Option<&str>> = Vec::new();
    let mut continued_from: Vec<Option<&str>> = Vec::new();
    let mut parent: Vec<Option<&str>> = Vec::new();
    let mut detached = Vec::new();
    for c in creations {
        id.push(c.new.id.as_str());
        tenant.push(c.new.tenant.as_str());
        name.push(c.new.package_name.as_str());
        version.push(c.new.package_version);
        workflow.push(c.new.workflow.as_str());
        input.push(c.new.input.to_string());
        owner.push(c.owner.as_ref().map(|o| o.0.as_str()));
        lease.push(c.owner.as_ref().map(|o| o.1));
        queue.push(c.new.worker_queue.as_deref());
        key.push(c.new.idempotency_key.as_deref());
        continued_from.push(c.new.continued_from.as_deref());
        parent.push(c.new.parent_id.as_deref());
        detached.push(c.new.detached);
    }
    if id.is_empty() {
        return Ok(Default::default());
    }
    // Owned: running at epoch 1, else pending and due now at epoch 0.
    let inserted = sqlx::query_scalar(
        "INSERT INTO executions (id, tenant, package_sha256, package_name, package_version, \
         workflow, input, status, created_at, updated_at, wake_at, owner, lease_expires_at, epoch, \
         worker_queue, idempotency_key, continued_from, parent_id, detached) \
         SELECT n.id, p.tenant, p.sha256, p.name, p.version, n.workflow, n.input, \
           CASE WHEN n.owner IS NULL THEN 'pending' ELSE 'running' END, $7, $7, \
           CASE WHEN n.owner IS NULL THEN $7 END, n.owner, n.lease, \
           CASE WHEN n.owner IS NULL THEN 0 ELSE 1 END, n.queue, n.key, n.continued_from, \
           n.parent, n.detached \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
           $8::text[], $9::bigint[], $10::text[], $11::text[], $12::text[], $13::text[], \
           $14::boolean[]) \
           AS n (id, name, workflow, input, owner, lease, tenant, version, queue, key, \
           continued_from, parent, detached) \
         JOIN packages p ON p.tenant = n.tenant AND p.name = n.name AND p.version = n.version \
         ORDER BY n.id \
         ON CONFLICT (tenant, idempotency_key) DO NOTHING \
         RETURNING id",
    )
    .bind(id)
    .bind(name)
    .bind(workflow)
    .bind(input)
    .bind(owner)
    .bind(lease)
    .bind(now_ms)
    .bind(tenant)
    .bind(version)
    .bind(queue)
    .bind(&key)
    .bind(continued_from)
    .bind(parent)
    .bind(detached)
    .fetch_all(&mut *conn)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// One transaction for the whole batch; each operation fenced by its epoch.
async fn commit_batch(
    conn: &mut PgConnection,
    ops: &[CommitOp],
    now_ms: i64,
) -> Result<Vec<Result<()>>> {
    let (created, taken) = create_all(conn, ops, now_ms).await?;
    // Lock every execution of the batch, in id order (so two nodes
    // committing for the same executions cannot deadlock). A claim by
    // another node either happened before (the epoch moved on: fenced) or
    // waits for this transaction; it never interleaves with it.
    let mut ids: Vec<&str> = ops
        .iter()
        .filter(|op| op.create.is_none())
        .map(|op| op.execution_id.as_str())
        .collect();
    // The parents a finishing child wakes are locked in the same order.
    ids.extend(
        ops.iter()
            .flat_map(|op| &op.side)
            .filter_map(|side| match side {
                SideWrite::WakeParent { parent } => Some(parent.as_str()),
                _ => None,
            }),
    );
    ids.sort_unstable();
    ids.dedup();
    let epochs: HashMap<String, i64> = if ids.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_as("SELECT id, epoch FROM executions WHERE id = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .collect()
    };
    let mut owned: HashMap<(&str, i64), bool> = HashMap::new();
    let mut results = Vec::with_capacity(ops.len());
    let mut entries = EntryColumns::default();
    let mut applied: Vec<&CommitOp> = Vec::new();
    for op in ops {
        let key = (op.execution_id.as_str(), op.epoch);
        if let Some(creation) = &op.create {
            if let Some(holder) = taken.get(&op.execution_id) {
                results.push(Err(Error::KeyTaken(holder.clone())));
                continue;
            }
            if !created.contains(&op.execution_id) {
                results.push(Err(rows::package_not_found(&creation.new.package_sha256)));
                continue;
            }
            owned.insert(key, true);
        }
        let is_owned = *owned
            .entry(key)
            .or_insert_with(|| epochs.get(&op.execution_id) == Some(&op.epoch));
        if !is_owned {
            results.push(Err(Error::LostOwnership(op.execution_id.clone())));
            continue;
        }
        for e in &op.entries {
            entries.push(&op.execution_id, e);
        }
        if op.status.is_some() {
            // Ownership ends with a status change.
            owned.insert(key, false);
        }
        applied.push(op);
        results.push(Ok(()));
    }
    entries.insert(conn).await?;
    let mut children = Vec::new();
    for op in &applied {
        for side in &op.side {
            match side {
                SideWrite::CreateChild(child) => children.push(&**child),
                side => side_write(conn, &op.execution_id, side, now_ms).await?,
            }
        }
    }
    if !children.is_empty() {
        let created = insert(conn, &children, now_ms).await?;
        for child in children.iter().filter(|c| !created.contains(&c.new.id)) {
            // Not expected: the package was found before and is never
            // deleted, and the key holds a seq not used before. A replay
            // creates it if it can.
            tracing::warn!(child = %child.new.id, "a child started in this commit was not created");
        }
    }
    status_changes(conn, &applied, now_ms).await?;
    Ok(results)
}

async fn side_write(
    conn: &mut PgConnection,
    id: &str,
    side: &SideWrite,
    now_ms: i64,
) -> Result<()> {
    match side {
        SideWrite::OpenApproval { key, request } => {
            sqlx::query(
                "INSERT INTO approvals (execution_id, key, status, request, created_at) \
                 VALUES ($1, $2, 'pending', $3, $4) ON CONFLICT (execution_id, key) DO NOTHING",
            )
            .bind(id)
            .bind(key)
            .bind(request.to_string())
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
        }
        SideWrite::CloseApproval { key, status } => {
            sqlx::query(
                "UPDATE approvals SET status = $1, decided_at = $2 \
                 WHERE execution_id = $3 AND key = $4 AND status = 'pending'",
            )
            .bind(status)
            .bind(now_ms)
            .bind(id)
            .bind(key)
            .execute(&mut *conn)
            .await?;
        }
        SideWrite::OpenTask(task) => {
            sqlx::query(OPEN_TASK)
                .bind(id)
                .bind(task.seq)
                .bind(i64::from(task.attempt))
                .bind(&task.queue)
                .bind(&task.step)
                .bind(&task.input)
                .bind(now_ms)
                .bind(task.timeouts.schedule_to_start_ms.map(|t| t as i64))
                .bind(task.timeouts.start_to_close_ms as i64)
                .bind(task.timeouts.heartbeat_ms.map(|t| t as i64))
                .bind(task.sticky.as_ref().map(|s| s.0.as_str()))
                .bind(task.sticky.as_ref().map(|s| s.1))
                .execute(&mut *conn)
                .await?;
        }
        SideWrite::CloseTask { seq, attempt } => {
            sqlx::query(CLOSE_TASK)
                .bind(now_ms)
                .bind(id)
                .bind(seq)
                .bind(i64::from(*attempt))
                .execute(&mut *conn)
                .await?;
        }
        SideWrite::WakeParent { parent } => {
            sqlx::query(WAKE)
                .bind(now_ms)
                .bind(parent)
                .execute(&mut *conn)
                .await?;
        }
        // Created together, after the batch's fences (see `commit_batch`).
        SideWrite::CreateChild(_) => {}
        SideWrite::ConsumeSignal { signal, call } => {
            sqlx::query(CONSUME_SIGNAL)
                .bind(call)
                .bind(now_ms)
                .bind(id)
                .bind(signal)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// The status changes of a batch, column by column (for `UNNEST`).
#[derive(Default)]
struct StatusColumns {
    wait_ids: Vec<String>,
    wait_epochs: Vec<i64>,
    wake_at: Vec<Option<i64>>,
    seen: Vec<i64>,
    timer_seq: Vec<Option<i64>>,
    timer_due: Vec<Option<i64>>,
    timer_invocation: Vec<Option<String>>,
    timer_next_seq: Vec<Option<i64>>,
    done_ids: Vec<String>,
    done_epochs: Vec<i64>,
    status: Vec<String>,
    result: Vec<Option<String>>,
    error: Vec<Option<String>>,
}

impl StatusColumns {
    fn push(&mut self, op: &CommitOp) {
        match &op.status {
            None => {}
            Some(StatusChange::Waiting {
                wake_at_ms,
                seen_signals,
                timer,
            }) => {
                self.wait_ids.push(op.execution_id.clone());
                self.wait_epochs.push(op.epoch);
                self.wake_at.push(*wake_at_ms);
                self.seen.push(*seen_signals);
                self.timer_seq.push(timer.as_ref().map(|t| t.seq));
                self.timer_due.push(timer.as_ref().map(|t| t.due_at));
                self.timer_invocation
                    .push(timer.as_ref().map(|t| t.invocation.clone()));
                self.timer_next_seq.push(timer.as_ref().map(|t| t.next_seq));
            }
            Some(StatusChange::Finished {
                status,
                result,
                error,
            }) => {
                self.done_ids.push(op.execution_id.clone());
                self.done_epochs.push(op.epoch);
                self.status.push(status.as_str().to_owned());
                self.result.push(result.as_ref().map(Value::to_string));
                self.error.push(
                    error
                        .as_ref()
                        .map(|e| serde_json::to_string(e).unwrap_or_default()),
                );
            }
        }
    }
}

/// Hibernation: an approval or cancel that arrived since the claim
/// (`signals` moved past what the node saw) makes it due at once.
const SET_WAITING: &str = "status = 'waiting', owner = NULL, lease_expires_at = NULL, \
     engine_failures = 0, engine_error = NULL, \
     wake_at = CASE WHEN e.paused THEN NULL WHEN e.signals != w.seen THEN $NOW ELSE w.wake_at END, updated_at = $NOW";

/// The timers of hibernations, one row per execution (`$TIMERS`: id, seq,
/// due_at, invocation, next_seq, held; a NULL seq: none). An execution held
/// (paused, or with a cancel requested, as its locked row says) keeps none.
const SET_TIMERS: &str = "INSERT INTO timers (execution_id, seq, due_at, invocation, next_seq) \
     SELECT t.id, t.seq, t.due_at, t.invocation, t.next_seq FROM $TIMERS \
     WHERE t.seq IS NOT NULL AND NOT t.held \
     ON CONFLICT (execution_id) DO UPDATE SET seq = EXCLUDED.seq, due_at = EXCLUDED.due_at, \
     invocation = EXCLUDED.invocation, next_seq = EXCLUDED.next_seq";

const SET_FINISHED: &str = "status = d.status, result = d.result, error = d.error, \
     owner = NULL, lease_expires_at = NULL, wake_at = NULL, engine_failures = 0, \
     engine_error = NULL, updated_at = $NOW";

/// Hibernations and finishes of the batch, one statement each (the rows
/// are locked and their epochs checked already).
async fn status_changes(conn: &mut PgConnection, ops: &[&CommitOp], now_ms: i64) -> Result<()> {
    let mut c = StatusColumns::default();
    for op in ops {
        c.push(op);
    }
    if !c.wait_ids.is_empty() {
        sqlx::query(&format!(
            "UPDATE executions e SET {} \
             FROM UNNEST($1::text[], $2::bigint[], $3::bigint[]) AS w (id, wake_at, seen) \
             WHERE e.id = w.id",
            SET_WAITING.replace("$NOW", "$4")
        ))
        .bind(&c.wait_ids)
        .bind(c.wake_at)
        .bind(c.seen)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
        if c.timer_seq.iter().any(Option::is_some) {
            // The rows are locked by this transaction: current.
            sqlx::query(&SET_TIMERS.replace(
                "$TIMERS",
                "(SELECT u.*, x.paused OR x.cancel_requested AS held \
                  FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], \
                    $5::bigint[]) AS u (id, seq, due_at, invocation, next_seq) \
                  JOIN executions x ON x.id = u.id) t",
            ))
            .bind(&c.wait_ids)
            .bind(c.timer_seq)
            .bind(c.timer_due)
            .bind(c.timer_invocation)
            .bind(c.timer_next_seq)
            .execute(&mut *conn)
            .await?;
        }
    }
    if !c.done_ids.is_empty() {
        sqlx::query(&format!(
            "UPDATE executions e SET {} \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
               AS d (id, status, result, error) \
             WHERE e.id = d.id",
            SET_FINISHED.replace("$NOW", "$5")
        ))
        .bind(c.done_ids)
        .bind(c.status)
        .bind(c.result)
        .bind(c.error)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A batch of journal entries and status changes (no creations, no side
/// writes: the journal's hot path) as one statement, committed on its own:
/// one round trip to the server instead of five. Fenced as
/// [`commit_batch`] does: the batch's executions are locked in id order
/// first (`fence`), and only the rows of an operation whose epoch is the
/// locked row's are written (each write joins `fence` on id and epoch and
/// checks the epoch again on the row it changes).
fn one_statement_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH fence AS ( \
               SELECT id, epoch, paused OR cancel_requested AS held FROM executions \
               WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE), \
             j AS ( \
               INSERT INTO journal (execution_id, seq, invocation, kind, ref_seq, args_hash, \
                 payload, at) \
               SELECT u.execution_id, u.seq, u.invocation, u.kind, u.ref_seq, u.args_hash, \
                 u.payload, u.at \
               FROM UNNEST($2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], \
                 $7::text[], $8::text[], $9::bigint[], $10::bigint[]) \
                 AS u (execution_id, seq, invocation, kind, ref_seq, args_hash, payload, at, epoch) \
               JOIN fence f ON f.id = u.execution_id AND f.epoch = u.epoch), \
             waiting AS ( \
               UPDATE executions e SET {} \
               FROM UNNEST($11::text[], $12::bigint[], $13::bigint[], $14::bigint[]) \
                 AS w (id, epoch, wake_at, seen) \
               JOIN fence f ON f.id = w.id AND f.epoch = w.epoch \
               WHERE e.id = w.id AND e.epoch = w.epoch), \
             finished AS ( \
               UPDATE executions e SET {} \
               FROM UNNEST($15::text[], $16::bigint[], $17::text[], $18::text[], $19::text[]) \
                 AS d (id, epoch, status, result, error) \
               JOIN fence f ON f.id = d.id AND f.epoch = d.epoch \
               WHERE e.id = d.id AND e.epoch = d.epoch), \
             timers AS ({}) \
             SELECT id, epoch FROM fence",
            SET_WAITING.replace("$NOW", "$20"),
            SET_FINISHED.replace("$NOW", "$20"),
            SET_TIMERS.replace(
                "$TIMERS",
                // The fence's locked rows say whether it is held now (the
                // statement's snapshot may predate a pause it waited for).
                "(SELECT u.id, u.seq, u.due_at, u.invocation, u.next_seq, f.held \
                  FROM UNNEST($11::text[], $12::bigint[], $21::bigint[], $22::bigint[], \
                    $23::text[], $24::bigint[]) AS u (id, epoch, seq, due_at, invocation, \
                    next_seq) \
                  JOIN fence f ON f.id = u.id AND f.epoch = u.epoch) t"
            ),
        )
    })
}

/// See [`one_statement_sql`].
async fn commit_in_one_statement(
    conn: &mut PgConnection,
    ops: &[CommitOp],
    now_ms: i64,
) -> Result<Vec<Result<()>>> {
    let mut ids: Vec<&str> = ops.iter().map(|op| op.execution_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    // Ownership ends with a status change: what follows it in the batch
    // is refused without asking the database.
    let mut ended: HashSet<(&str, i64)> = HashSet::new();
    let mut sent = Vec::with_capacity(ops.len());
    let mut entries = EntryColumns::default();
    let mut entry_epochs = Vec::new();
    let mut status = StatusColumns::default();
    for op in ops {
        let key = (op.execution_id.as_str(), op.epoch);
        if ended.contains(&key) {
            sent.push(false);
            continue;
        }
        for e in &op.entries {
            entries.push(&op.execution_id, e);
            entry_epochs.push(op.epoch);
        }
        if op.status.is_some() {
            status.push(op);
            ended.insert(key);
        }
        sent.push(true);
    }
    let locked: HashMap<String, i64> = sqlx::query_as(one_statement_sql())
        .bind(&ids)
        .bind(entries.execution_id)
        .bind(entries.seq)
        .bind(entries.invocation)
        .bind(entries.kind)
        .bind(entries.ref_seq)
        .bind(entries.args_hash)
        .bind(entries.payload)
        .bind(entries.at)
        .bind(entry_epochs)
        .bind(status.wait_ids)
        .bind(status.wait_epochs)
        .bind(status.wake_at)
        .bind(status.seen)
        .bind(status.done_ids)
        .bind(status.done_epochs)
        .bind(status.status)
        .bind(status.result)
        .bind(status.error)
        .bind(now_ms)
        .bind(status.timer_seq)
        .bind(status.timer_due)
        .bind(status.timer_invocation)
        .bind(status.timer_next_seq)
        .fetch_all(conn)
        .await?
        .into_iter()
        .collect();
    Ok(ops
        .iter()
        .zip(sent)
        .map(|(op, sent)| {
            if sent && locked.get(&op.execution_id) == Some(&op.epoch) {
                Ok(())
            } else {
                Err(Error::LostOwnership(op.execution_id.clone()))
            }
        })
        .collect())
}

#[async_trait]
impl Store for PgStore {
    fn catalog(&self) -> &dyn Catalog {
        &self.sql
    }

    fn executions(&self) -> &dyn Executions {
        &self.sql
    }

    fn tasks(&self) -> &dyn Tasks {
        &self.sql
    }

    async fn create_execution(
        &self,
        new: NewExecution,
        now_ms: i64,
        owner: Option<(&str, i64)>,
    ) -> Result<ExecutionRecord> {
        self.sql.create_execution(new, now_ms, owner).await
    }

    async fn commit(&self, ops: Vec<CommitOp>, now_ms: i64) -> Result<Vec<Result<()>>> {
        let simple = ops
            .iter()
            .all(|op| op.create.is_none() && op.side.is_empty());
        self.within_deadline("the group commit", async |conn| {
            if simple {
                return commit_in_one_statement(conn, &ops, now_ms).await;
            }
            // The group-commit thread's own call, never cancelled but by
            // the deadline, which drops the connection: no need of
            // `begin_write`'s task on the journal's hot path.
            let mut tx = sqlx::Connection::begin(conn).await?;
            let results = commit_batch(&mut tx, &ops, now_ms).await?;
            tx.commit().await?;
            Ok(results)
        })
        .await
    }

    async fn claim_due(
        &self,
        owner: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<Claim>> {
        // A claimed execution's code ends the sleep it waited for, if any:
        // its timer goes in the same statement.
        let claimed = self
            .within_deadline("a claim", async |conn| {
                Ok(
                    sqlx::query_as::<_, (String, i64, i64, bool, Option<i64>, bool)>(
                        "WITH claimed AS ( \
                     UPDATE executions e SET owner = $1, lease_expires_at = $2 + $3, \
                     epoch = e.epoch + 1, status = 'running', wake_at = NULL, updated_at = $2 \
                     FROM (SELECT id, status = 'waiting' AS resumed, \
                           CASE WHEN status = 'waiting' THEN wake_at END AS due_at, \
                           status = 'running' AS taken_over FROM executions \
                           WHERE (status IN ('pending', 'waiting') AND wake_at <= $2) \
                              OR (status = 'running' AND lease_expires_at < $2) \
                           LIMIT $4 FOR UPDATE SKIP LOCKED) due \
                     WHERE e.id = due.id \
                     RETURNING e.id, e.epoch, e.signals, due.resumed, due.due_at, \
                       due.taken_over), \
                     cleared AS (DELETE FROM timers t USING claimed c \
                       WHERE t.execution_id = c.id) \
                     SELECT * FROM claimed",
                    )
                    .bind(owner)
                    .bind(now_ms)
                    .bind(lease_ms)
                    .bind(limit)
                    .fetch_all(conn)
                    .await?,
                )
            })
            .await?;
        Ok(claimed
            .into_iter()
            .map(
                |(execution_id, epoch, signals, resumed, due_at, taken_over)| Claim {
                    execution_id,
                    epoch,
                    signals,
                    resumed,
                    late_ms: due_at.map(|due| now_ms - due),
                    taken_over,
                },
            )
            .collect())
    }

    async fn fire_timers(&self, now_ms: i64, limit: i64) -> Result<FiredTimers> {
        let event = Event::Result {
            call: 0,
            outcome: Ok(Value::Null),
        };
        // One statement per part of the timers (see `SWEEP_PARTS`), each
        // in its own transaction on its own connection, all at once: lock
        // the due timers (skipping those another node fires, or an upgrade
        // holds), delete them, journal each sleep's result at the timer's
        // `next_seq`. A claim deletes the timer in its own statement
        // (waiting for this one if it holds the timer). A timer is there
        // only while its execution waits, unpaused and not cancelled (see
        // `Timer`), and carries the sleep's invocation and its result's
        // seq: the statement reads no row of `executions` and no journal
        // entry. The timers are found by their place (`ctid`): as a join
        // the planner hashes whole tables.
        let part = |k: i64| {
            let (kind, payload) = (event.kind(), event.payload_text());
            self.within_deadline("the timer sweep", async move |conn| {
                let fired: Vec<(String, i64)> = sqlx::query_as(
                    "WITH cleared AS ( \
                   DELETE FROM timers WHERE ctid = ANY (ARRAY ( \
                     SELECT ctid FROM timers WHERE due_at <= $1 \
                       AND ascii(right(execution_id, 1)) % $5 = $6 \
                     ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED)) \
                   RETURNING execution_id, seq, invocation, next_seq) \
                 INSERT INTO journal (execution_id, seq, invocation, kind, ref_seq, args_hash, \
                   payload, at) \
                 SELECT c.execution_id, c.next_seq, c.invocation, $3, c.seq, NULL, $4, $1 \
                 FROM cleared c \
                 RETURNING execution_id, seq",
                )
                .bind(now_ms)
                .bind(limit)
                .bind(kind)
                .bind(payload)
                .bind(SWEEP_PARTS)
                .bind(k)
                .fetch_all(&mut *conn)
                .await?;
                Ok(fired)
            })
        };
        const _: () = assert!(SWEEP_PARTS == 4, "one `part` below for each");
        let parts = tokio::join!(part(0), part(1), part(2), part(3));
        let parts = [parts.0?, parts.1?, parts.2?, parts.3?];
        let more = parts.iter().any(|p| p.len() as i64 == limit);
        let fired = parts.into_iter().flatten().collect();
        let next_due: Option<i64> = self
            .within_deadline("the timer sweep", async |conn| {
                // Pending ones too: the condition of the partial index on
                // wake_at.
                Ok(sqlx::query_scalar(
                    "SELECT MIN(wake_at) FROM executions \
                     WHERE status IN ('pending', 'waiting') AND wake_at > $1",
                )
                .bind(now_ms)
                .fetch_one(conn)
                .await?)
            })
            .await?;
        Ok(FiredTimers {
            fired,
            more,
            next_due,
        })
    }

    async fn renew_leases(&self, owner: &str, now_ms: i64, lease_ms: i64) -> Result<Vec<Renewed>> {
        let renewed: Vec<(String, bool, bool)> = self
            .within_deadline("a lease renewal", async |conn| {
                Ok(sqlx::query_as(
                    "UPDATE executions SET lease_expires_at = $1 WHERE id IN ( \
               SELECT id FROM executions WHERE owner = $2 AND status = 'running' \
               ORDER BY id FOR UPDATE) \
             RETURNING id, cancel_requested, paused",
                )
                .bind(now_ms + lease_ms)
                .bind(owner)
                .fetch_all(conn)
                .await?)
            })
            .await?;
        Ok(renewed
            .into_iter()
            .map(|(execution_id, cancel_requested, paused)| Renewed {
                execution_id,
                cancel_requested,
                paused,
            })
            .collect())
    }

    async fn abandon(&self, execution_id: &str, epoch: i64, failure: &EngineFailure) -> Result<()> {
        self.within_deadline("the release of a failed execution", async |conn| {
            sqlx::query(
                "UPDATE executions SET owner = NULL, engine_failures = engine_failures + 1, \
             engine_error = $1, lease_expires_at = $2 + LEAST($3::bigint, \
               $4::bigint * (1::bigint << LEAST(engine_failures, 20)::int)) \
             WHERE id = $5 AND epoch = $6 AND status = 'running'",
            )
            .bind(&failure.error)
            .bind(failure.now_ms)
            .bind(failure.max_delay_ms)
            .bind(failure.base_delay_ms)
            .bind(execution_id)
            .bind(epoch)
            .execute(conn)
            .await?;
            Ok(())
        })
        .await
    }

    async fn release_leases(&self, owner: &str) -> Result<()> {
        self.within_deadline("the release of the node's leases", async |conn| {
            let mut tx = sqlx::Connection::begin(conn).await?;
            let released = sqlx::query(
                "UPDATE executions SET lease_expires_at = 0 WHERE id IN ( \
               SELECT id FROM executions WHERE owner = $1 AND status = 'running' \
               ORDER BY id FOR UPDATE)",
            )
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if released > 0 {
                // Claimable at once: tell the other nodes.
                sqlx::query("SELECT pg_notify($1, '')")
                    .bind(DUE_CHANNEL)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    async fn time_out_approval(
        &self,
        execution_id: &str,
        key: &str,
        now_ms: i64,
    ) -> Result<ApprovalRecord> {
        self.sql.time_out_approval(execution_id, key, now_ms).await
    }

    async fn listen_due(
        &self,
        due: super::DueCallback,
    ) -> Result<Option<tokio::task::JoinHandle<()>>> {
        let mut listener = PgListener::connect_with(self.pool()).await?;
        listener.listen(DUE_CHANNEL).await?;
        Ok(Some(tokio::spawn(async move {
            loop {
                // `try_recv` reconnects after a lost connection and returns
                // `None` once: notifications may have been missed, so look.
                match listener.try_recv().await {
                    Ok(_) => due(),
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for due executions failed; polling until it recovers");
                        due();
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_masked_in_urls() {
        assert_eq!(
            redact("postgres://me:s3cret@db:5432/x?sslmode=require"),
            "postgres://me:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            redact("postgres://me@db/x"),
            "postgres://me@db/x",
            "nothing to mask"
        );
        assert_eq!(redact("postgres://me:p@ss@db/x"), "postgres://me:***@db/x");
        assert_eq!(redact("cerebelum.db"), "cerebelum.db");
    }
}
