//! Replaying a recorded execution against a component, without side
//! effects (`cerebelum replay`): would this code, given this execution's
//! journal, make the calls the journal recorded?
//!
//! The check runs the real executor, on a scratch copy: a temporary SQLite
//! database holds the component, the execution's record and its journal,
//! and a node on it — sharing this node's runtime, so compiled components
//! are not compiled again — drives the execution with
//! [`EngineConfig::replay_only`](super::EngineConfig::replay_only) set.
//! Every recorded call is answered from the journal as in any replay; the
//! first thing the code would do that the journal does not hold (a call
//! past it, a step attempt, a worker task, an HTTP request) stops it as a
//! hibernation would. Nothing reaches the real database, the network or a
//! worker. A call other than the recorded one at the same place is the
//! replay's ordinary `nondeterminism` error, which names the entry.

use super::drive::drive;
use super::{Engine, new_id};
use crate::error::{Error, Result};
use crate::journal::ErrorKind;
use crate::model::{ExecutionRecord, NewExecution, Status};
use crate::runtime::sha256_hex;
use crate::store::{Claim, CommitOp, Creation, Synchronous};
use std::path::PathBuf;

/// What a replay check found.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayReport {
    /// Entries in the execution's journal.
    pub entries: i64,
    /// The first place the code differs from the journal: the
    /// `nondeterminism` message, which names the entry (`at seq N`).
    pub divergence: Option<String>,
    /// How the replay ended when it did not diverge: `waiting` (it made
    /// every recorded call and stopped at the next new one), `completed`
    /// or `failed` (the code ended the workflow there, as it would now).
    pub ended: Status,
    /// The workflow's error, when it failed without diverging.
    pub error: Option<String>,
    /// The sha256 of the component replayed against.
    pub sha256: String,
}

/// A temporary directory, removed when dropped: a replay check's scratch
/// database, or `cerebelum replay --local`'s node.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new empty directory under the system's temporary one, named
    /// `<prefix>-<id>`.
    pub fn new(prefix: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(new_id(prefix));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Runtime(format!("creating {}: {e}", dir.display())))?;
        Ok(Self(dir))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(path = %self.0.display(), error = %e, "could not remove a replay check's scratch database");
        }
    }
}

/// Replays executions of one tenant against one package, one after
/// another or side by side, on one scratch database and node: what
/// [`Engine::replay_check`] does for one execution, and `upload --check`
/// for every open execution of a package (the scratch is made once, so a
/// check costs a copy of the journal and a replay).
pub struct ReplayChecker {
    /// The node whose executions are checked.
    source: Engine,
    /// The scratch node, on the scratch database.
    node: Engine,
    /// The package checked against, as stored in the scratch database.
    package: crate::model::PackageRecord,
    /// Dropped last: removes the scratch database.
    _scratch: Scratch,
}

impl Engine {
    /// Replays execution `record` (of this node's store) against the
    /// package `bytes` (named `name`), without side effects: see the
    /// module's documentation.
    pub async fn replay_check(
        &self,
        record: &ExecutionRecord,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<ReplayReport> {
        self.replay_checker(&record.tenant, name, bytes)
            .await?
            .check(record)
            .await
    }

    /// A checker of `tenant`'s executions against the package `bytes`
    /// (named `name`): the package is validated and compiled (or found in
    /// the cache), and stored in a new scratch database.
    pub async fn replay_checker(
        &self,
        tenant: &str,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<ReplayChecker> {
        let sha = sha256_hex(&bytes);
        let package = self.inner.runtime.validate(&sha, bytes.clone()).await?;
        let scratch = Scratch::new("cerebelum-replay")?;
        let url = scratch.0.join("replay.db");
        let store = crate::store::open(&url.to_string_lossy(), Synchronous::Normal).await?;
        let now = self.now_ms();
        // The tenant's quotas and allow-list (not its secrets: what the
        // code read of them is in the journal).
        let tenant = self.inner.store.catalog().tenant(tenant).await?;
        let catalog = store.catalog();
        // A new database has the default tenant already.
        match catalog.tenant(&tenant.name).await {
            Ok(_) => {
                catalog
                    .update_tenant(&tenant.name, &tenant.quotas, &tenant.http_allow)
                    .await?
            }
            Err(Error::NotFound(_)) => {
                catalog
                    .create_tenant(&tenant.name, &tenant.quotas, &tenant.http_allow, now)
                    .await?
            }
            Err(e) => return Err(e),
        };
        let stored = catalog
            .put_package(&tenant.name, name, &sha, &bytes, &package.info, now)
            .await?;
        let mut config = self.inner.config.clone();
        config.replay_only = true;
        let node = Engine::on_runtime(
            store,
            config,
            self.inner.clock.clone(),
            self.inner.runtime.clone(),
        )?;
        Ok(ReplayChecker {
            source: self.clone(),
            node,
            package: stored,
            _scratch: scratch,
        })
    }
}

impl ReplayChecker {
    /// The sha256 of the package checked against.
    pub fn sha256(&self) -> &str {
        &self.package.sha256
    }

    /// Replays execution `record` (of the source node's store, of the
    /// checker's tenant) against the checker's package. A workflow the
    /// package lacks is a divergence at the start.
    pub async fn check(&self, record: &ExecutionRecord) -> Result<ReplayReport> {
        let source = &self.source.inner.store;
        let journal = source.executions().journal(&record.id, 0).await?;
        self.check_journal(record, journal).await
    }

    /// Replays execution `record` against the checker's package with
    /// `journal` as its journal (read from another place: `cerebelum
    /// replay --local` fetches it over the API). `record.tenant` must be
    /// the checker's tenant.
    pub async fn check_journal(
        &self,
        record: &ExecutionRecord,
        journal: Vec<crate::journal::Entry>,
    ) -> Result<ReplayReport> {
        let entries = journal.last().map_or(0, |e| e.seq);
        let sha = self.package.sha256.clone();
        if let Err(e) = self.package.info.check_workflow(&record.workflow) {
            return Ok(ReplayReport {
                entries,
                divergence: Some(e.to_string()),
                ended: Status::Failed,
                error: None,
                sha256: sha,
            });
        }
        let store = &self.node.inner.store;
        let now = self.node.now_ms();
        let lease = now + 24 * 3_600_000;
        // The copy and its journal in one commit, owned by the scratch node.
        let creation = Creation {
            new: NewExecution {
                id: record.id.clone(),
                tenant: record.tenant.clone(),
                package_name: self.package.name.clone(),
                package_version: self.package.version,
                package_sha256: sha.clone(),
                workflow: record.workflow.clone(),
                input: record.input.clone(),
                idempotency_key: None,
                worker_queue: record.worker_queue.clone(),
                continued_from: None,
                parent_id: None,
                detached: false,
            },
            owner: Some((self.node.inner.node_id.clone(), lease)),
        };
        let epoch = creation.epoch();
        let op = CommitOp {
            create: Some(creation),
            execution_id: record.id.clone(),
            epoch,
            entries: journal,
            side: Vec::new(),
            status: None,
        };
        for result in store.commit(vec![op], now).await? {
            result?;
        }
        let claim = Claim {
            execution_id: record.id.clone(),
            epoch,
            signals: 0,
            resumed: true,
            late_ms: None,
            taken_over: false,
        };
        drive(self.node.inner.clone(), claim).await;
        let after = store.executions().execution(&record.id).await?;
        if let Some(error) = after.engine_error.filter(|_| !after.status.is_terminal()) {
            return Err(Error::Runtime(format!(
                "the replay check of {} stopped on an engine error: {error}",
                record.id
            )));
        }
        let error = after.error;
        let divergence = error
            .as_ref()
            .filter(|e| e.kind == ErrorKind::Nondeterminism)
            .map(|e| e.message.clone());
        Ok(ReplayReport {
            entries,
            ended: after.status,
            error: error.filter(|_| divergence.is_none()).map(|e| e.message),
            divergence,
            sha256: sha,
        })
    }
}
