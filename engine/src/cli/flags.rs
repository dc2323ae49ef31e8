//! Flags several commands share: the engine's settings (`run`, `serve`,
//! and `upload`/`start` on the local database) and tenants' quotas
//! (`serve`'s defaults, `admin tenant`), with the ranges clap checks.

use anyhow::Result;
use cerebelum::clock::SystemClock;
use cerebelum::model::{DEFAULT_QUOTAS, Quotas};
use cerebelum::secrets::MasterKey;
use cerebelum::store::{self, SharedStore, Synchronous};
use cerebelum::{Engine, EngineConfig};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Largest linear memory of one invocation, MiB (the pooling allocator
/// reserves at most 4 GiB per memory).
pub(crate) const MAX_MEMORY_MB: u64 = 4096;
/// A day, in ms: the longest CPU deadline a flag takes.
pub(crate) const DAY_MS: u64 = 86_400_000;

/// A number flag between `min` and `max`: anything else is refused by clap
/// with the range in the message, so sizes never wrap around when they are
/// turned into bytes.
/// A JSON argument as given, or with `@PATH` the text of file PATH (as
/// curl reads `-d @file`): large or multi-line inputs need no quoting.
pub(crate) fn json_text(value: &str) -> Result<String, String> {
    match value.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the JSON file {path}: {e}")),
        None => Ok(value.to_owned()),
    }
}

pub(crate) fn range(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(min..=max)
}

/// [`range`] for signed flags (quotas are stored as `i64`).
pub(crate) fn range_i64(min: i64, max: i64) -> clap::builder::RangedI64ValueParser<i64> {
    clap::value_parser!(i64).range(min..=max)
}

/// Settings of the engine, for commands that run or validate packages.
#[derive(Args, Clone, Debug)]
pub(crate) struct EngineArgs {
    /// Where compiled components are cached (default: ~/.cache/cerebelum).
    #[arg(long, env = "CEREBELUM_CACHE_DIR")]
    pub(crate) cache_dir: Option<PathBuf>,
    /// How commits are flushed: `full` survives power loss (SQLite fsync;
    /// PostgreSQL synchronous_commit=on), `normal` survives a crash of the
    /// engine process only.
    #[arg(long, value_enum, env = "CEREBELUM_SYNC", default_value = "full")]
    sync: Synchronous,
    /// Waits longer than this hibernate (the instance is dropped).
    #[arg(long, default_value_t = 2000, value_parser = range(0, DAY_MS))]
    hibernate_after_ms: u64,
    /// Lease of an execution this node drives; another node (or a restart)
    /// takes it over after the lease expires.
    #[arg(long, default_value_t = 5000, value_parser = range(100, 3_600_000))]
    lease_ms: u64,
    /// How often to look for due executions.
    #[arg(long, default_value_t = 50, value_parser = range(1, 60_000))]
    tick_ms: u64,
    /// Linear memory all the guests of this node may hold together, MiB
    /// (default: a quarter of the machine's memory, leaving the rest to
    /// the engine and a database beside it). An invocation that would pass
    /// it waits for room in turn (`status` says so); it fails with the
    /// `memory` error at once when every guest holding memory waits too
    /// (none would free any), or after waiting a minute.
    #[arg(long, value_parser = range(16, 1 << 20))]
    max_guest_memory_mb: Option<u64>,
    /// Memory limit of one invocation (workflow or step attempt), MiB.
    #[arg(long, default_value_t = 256, value_parser = range(1, MAX_MEMORY_MB))]
    memory_limit_mb: u64,
    /// CPU deadline of a step attempt unless the step's options set one.
    #[arg(long, default_value_t = 60_000, value_parser = range(1, DAY_MS))]
    step_timeout_ms: u64,
    /// How long a worker holding a task (a step on an external worker
    /// queue) may go without a heartbeat before its attempt fails and is
    /// retried; a step's whole attempt is bounded by its step timeout.
    #[arg(long, default_value_t = 30_000, value_parser = range(100, DAY_MS))]
    worker_heartbeat_ms: u64,
    /// A sleep inside a step on an external worker longer than this hands
    /// the task back until the sleep ends (the worker's slot serves other
    /// tasks meanwhile, and the step survives the worker); shorter ones
    /// stay in the worker.
    #[arg(long, default_value_t = 2_000, value_parser = range(0, DAY_MS))]
    worker_hold_ms: u64,
    /// CPU deadline of workflow code per run.
    #[arg(long, default_value_t = 30_000, value_parser = range(1, DAY_MS))]
    workflow_timeout_ms: u64,
    /// Executions driven at once by this node.
    #[arg(long, default_value_t = 512, value_parser = range(1, 1_000_000))]
    max_running: u64,
    /// Meter fuel (wasm instructions) so tenants' `--fuel` budgets are
    /// enforced; costs ~30% on CPU-bound guest code.
    #[arg(long)]
    meter_fuel: bool,
    /// After an engine error (a database or runtime failure, not one of
    /// user code), an execution runs again after this long, doubling with
    /// each error in a row up to 5 minutes; after 10 in a row it fails
    /// (error kind `engine`) until an operator retries it.
    #[arg(long, default_value_t = 1000, value_parser = range(1, 300_000))]
    engine_retry_ms: u64,
}

/// Per-tenant limits; unset ones keep their current value (for a new
/// tenant: the server's default). On `serve`, the server's defaults.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct QuotaArgs {
    /// Largest package upload, MiB (built-in default 64).
    #[arg(long, value_parser = range_i64(1, 2048))]
    max_package_mb: Option<i64>,
    /// Most executions pending, running or waiting at once (built-in default 10000).
    #[arg(long, value_parser = range_i64(1, 100_000_000))]
    max_open_executions: Option<i64>,
    /// Largest JSON payload: workflow input, approval payload, step input
    /// or result, KiB (built-in default 1024).
    #[arg(long, value_parser = range_i64(1, 262_144))]
    max_payload_kb: Option<i64>,
    /// Fuel (about one unit per wasm instruction) one execution may burn
    /// in all its invocations; enforced when `serve --meter-fuel` (built-in
    /// default: unlimited).
    #[arg(long, value_parser = range_i64(1, i64::MAX))]
    fuel: Option<i64>,
    /// Journal entries one execution may write (built-in default 100000).
    #[arg(long, value_parser = range_i64(1, 1_000_000_000))]
    max_journal_entries: Option<i64>,
    /// Guest stdout + stderr kept per invocation, KiB; the rest is dropped
    /// (built-in default 64).
    #[arg(long, value_parser = range_i64(1, 1_048_576))]
    max_output_kb: Option<i64>,
    /// Largest HTTP response body a step may receive, KiB (built-in default 10240).
    #[arg(long, value_parser = range_i64(1, 1_048_576))]
    max_response_kb: Option<i64>,
    /// Invocations of one tenant running guest code at once on a node
    /// (built-in default: unlimited; cores are taken in turns anyway).
    #[arg(long, value_parser = range_i64(1, 1_000_000))]
    max_concurrency: Option<i64>,
    /// Journaled host calls per second a tenant's code may make on a node
    /// while other tenants have work there (a tenant alone is not slowed);
    /// faster callers wait, off their CPU time (built-in default 1000; a
    /// node with more cores than two can take more).
    #[arg(long, value_parser = range_i64(1, 1_000_000_000))]
    max_journal_rate: Option<i64>,
    /// Watch streams (`cerebelum watch`, WatchExecution) a tenant may have
    /// open at once on a node (built-in default 100).
    #[arg(long, value_parser = range_i64(1, 1_000_000))]
    max_streams: Option<i64>,
    /// Executions a tenant may start per second on a node while other
    /// tenants have work there (a tenant alone is not slowed); faster
    /// starts wait their turn, and are refused if that would take over
    /// 10 s (built-in default 50).
    #[arg(long, value_parser = range_i64(1, 1_000_000))]
    max_start_rate: Option<i64>,
}

impl QuotaArgs {
    /// The quotas given, in bytes.
    pub(crate) fn quotas(&self) -> Quotas {
        Quotas {
            max_package_bytes: self.max_package_mb.map(|m| m << 20),
            max_open_executions: self.max_open_executions,
            max_payload_bytes: self.max_payload_kb.map(|k| k << 10),
            fuel: self.fuel,
            max_journal_entries: self.max_journal_entries,
            max_output_bytes: self.max_output_kb.map(|k| k << 10),
            max_response_bytes: self.max_response_kb.map(|k| k << 10),
            max_concurrency: self.max_concurrency,
            max_journal_rate: self.max_journal_rate,
            max_streams: self.max_streams,
            max_start_rate: self.max_start_rate,
            ..Quotas::default()
        }
    }
}

pub(crate) fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("cerebelum");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("cerebelum");
    }
    PathBuf::from(".cerebelum-cache")
}

/// The database at `db` (migrated), for commands that need only it.
pub(crate) async fn open_store(db: &str, sync: Synchronous) -> Result<SharedStore> {
    Ok(store::open(db, sync).await?)
}

/// The SQLite file of `db`, if it names one.
pub(crate) fn sqlite_file(db: &str) -> Option<PathBuf> {
    (!db.starts_with("postgres://") && !db.starts_with("postgresql://"))
        .then(|| PathBuf::from(db.strip_prefix("sqlite://").unwrap_or(db)))
}

/// The master key of `--master-key-file`, else of a SQLite database's
/// `<file>.master-key` when it exists (or, with `create`, is made now).
pub(crate) fn master_key(cli: &super::Cli, create: bool) -> Result<Option<MasterKey>> {
    if let Some(path) = &cli.master_key_file {
        return Ok(Some(MasterKey::read(path)?));
    }
    let Some(file) = sqlite_file(&cli.db) else {
        return Ok(None);
    };
    let mut path = file.into_os_string();
    path.push(".master-key");
    let path = PathBuf::from(path);
    if path.exists() {
        return Ok(Some(MasterKey::read(&path)?));
    }
    if !create {
        return Ok(None);
    }
    let key = MasterKey::create(&path)?;
    eprintln!(
        "note: created the master key {} ({}), which seals this database's secrets; keep it \
         with the database, but out of its backups",
        path.display(),
        key.id()
    );
    Ok(Some(key))
}

/// An engine node on `db`; `quotas`: the server's defaults for tenants
/// (unset ones: the built-in [`DEFAULT_QUOTAS`]).
/// The engine of a command; `serves_workers`: external workers can reach
/// it (see [`EngineConfig::serves_workers`]).
pub(crate) async fn engine(
    cli: &super::Cli,
    args: &EngineArgs,
    quotas: Quotas,
    serves_workers: bool,
) -> Result<Engine> {
    let db = &cli.db;
    let store = open_store(db, args.sync).await?;
    let mut config = EngineConfig::new(args.cache_dir.clone().unwrap_or_else(default_cache_dir));
    config.hibernate_after = Duration::from_millis(args.hibernate_after_ms);
    config.lease = Duration::from_millis(args.lease_ms);
    config.tick = Duration::from_millis(args.tick_ms);
    config.memory_limit_bytes = (args.memory_limit_mb << 20) as usize;
    config.step_timeout = Duration::from_millis(args.step_timeout_ms);
    config.worker_heartbeat = Duration::from_millis(args.worker_heartbeat_ms);
    config.worker_hold = Duration::from_millis(args.worker_hold_ms);
    config.serves_workers = serves_workers;
    config.workflow_timeout = Duration::from_millis(args.workflow_timeout_ms);
    config.max_running = args.max_running as usize;
    config.runtime.fuel = args.meter_fuel;
    config.engine_retry = Duration::from_millis(args.engine_retry_ms);
    if let Some(mb) = args.max_guest_memory_mb {
        config.runtime.guest_memory_bytes = (mb << 20) as usize;
    }
    config.quotas = quotas.or(DEFAULT_QUOTAS);
    config.master_key = master_key(cli, false)?.map(Arc::new);
    Ok(Engine::new(store, config, Arc::new(SystemClock))?)
}
