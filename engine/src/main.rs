//! `cerebelum`: the engine's command line. Commands work on the database
//! named by `--db` (an embedded SQLite file, default `./cerebelum.db`, or a
//! PostgreSQL URL shared by several nodes) as tenant `default`, or, with
//! `--server URL --api-key KEY`, on a remote `cerebelum serve` as the key's
//! tenant.

mod cli;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// A durable workflow engine for WebAssembly components.
///
/// Build a package (a .wasm component exporting cerebelum:workflow), then run
/// it once with `cerebelum run`, or keep `cerebelum serve` running and drive
/// executions with upload / start / status / watch / approve / cancel / retry.
///
/// Without --server, commands work directly on the database (--db) as the
/// tenant `default`. With --server (a `cerebelum serve` address) and
/// --api-key, they go through its gRPC API as the key's tenant; create
/// tenants and keys with `cerebelum admin` on the server's database.
#[derive(Parser)]
#[command(name = "cerebelum", version, about, long_about)]
struct Cli {
    /// The database: a SQLite file (created if missing), or a PostgreSQL
    /// URL such as postgres://USER:PASSWORD@HOST:5432/DATABASE (the
    /// database must exist; its tables are created). Several `serve`
    /// processes on one PostgreSQL database share the work.
    #[arg(
        long,
        global = true,
        env = "CEREBELUM_DATABASE_URL",
        default_value = "cerebelum.db"
    )]
    db: String,

    /// A `cerebelum serve` to send commands to, e.g. http://127.0.0.1:7433;
    /// without it, commands work on the database directly.
    #[arg(long, global = true, env = "CEREBELUM_SERVER")]
    server: Option<String>,

    /// The API key for --server (from `cerebelum admin key create TENANT`).
    #[arg(long, global = true, env = "CEREBELUM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Log filter (tracing syntax), e.g. `info` or `cerebelum=debug`.
    #[arg(long, global = true, env = "CEREBELUM_LOG", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

/// Largest linear memory of one invocation, MiB (the pooling allocator
/// reserves at most 4 GiB per memory).
const MAX_MEMORY_MB: u64 = 4096;
/// A day, in ms: the longest CPU deadline a flag takes.
const DAY_MS: u64 = 86_400_000;

/// A number flag between `min` and `max`: anything else is refused by clap
/// with the range in the message, so sizes never wrap around when they are
/// turned into bytes.
fn range(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(min..=max)
}

/// [`range`] for signed flags (quotas are stored as `i64`).
fn range_i64(min: i64, max: i64) -> clap::builder::RangedI64ValueParser<i64> {
    clap::value_parser!(i64).range(min..=max)
}

/// Settings of the engine, for commands that run or validate packages.
#[derive(Args, Clone, Debug)]
struct EngineArgs {
    /// Where compiled components are cached (default: ~/.cache/cerebelum).
    #[arg(long, env = "CEREBELUM_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// How commits are flushed: `full` survives power loss (SQLite fsync;
    /// PostgreSQL synchronous_commit=on), `normal` survives a crash of the
    /// engine process only.
    #[arg(long, value_enum, env = "CEREBELUM_SYNC", default_value = "full")]
    sync: cerebelum::store::Synchronous,
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
    /// (default: half of the machine's memory). An invocation that would
    /// pass it waits for room (`status` says so), and fails with the
    /// `memory` error after waiting a minute.
    #[arg(long, value_parser = range(16, 1 << 20))]
    max_guest_memory_mb: Option<u64>,
    /// Memory limit of one invocation (workflow or step attempt), MiB.
    #[arg(long, default_value_t = 256, value_parser = range(1, MAX_MEMORY_MB))]
    memory_limit_mb: u64,
    /// CPU deadline of a step attempt unless the step's options set one.
    #[arg(long, default_value_t = 60_000, value_parser = range(1, DAY_MS))]
    step_timeout_ms: u64,
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

#[derive(Subcommand)]
enum Command {
    /// Upload a package, start a workflow and drive it here until it ends,
    /// showing its progress. Exits non-zero if it fails.
    Run {
        /// The package (.wasm component).
        package: PathBuf,
        /// The workflow to run.
        workflow: String,
        /// The workflow's input, JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Package name (default: the file name without .wasm).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Run the engine and its gRPC API (cerebelum.v1, with health and
    /// reflection): drive executions, wake timers, resurrect after a crash.
    Serve {
        /// Address of the gRPC API; port 0 picks a free port (the address
        /// is printed).
        #[arg(long, env = "CEREBELUM_LISTEN", default_value = "127.0.0.1:7433")]
        listen: String,
        /// Largest gRPC message, MiB (an upload is one message; keep it
        /// above every tenant's package quota).
        #[arg(long, default_value_t = 256, value_parser = range(1, 4095))]
        max_message_mb: u64,
        /// Watch streams open at once on this server, all tenants together.
        #[arg(long, default_value_t = 10_000, value_parser = range(1, 10_000_000))]
        node_max_streams: u64,
        #[command(flatten)]
        quotas: QuotaArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Store a package (validated) and print its name and version.
    Upload {
        /// The package (.wasm component).
        package: PathBuf,
        /// Package name (default: the file name without .wasm).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// List uploaded packages with their workflows and steps, or describe one.
    Packages {
        /// Describe only this package.
        name: Option<String>,
        /// With NAME: this version (default: the newest).
        #[arg(long)]
        version: Option<i64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start an execution and print its id; `cerebelum serve` drives it.
    Start {
        /// A .wasm file (uploaded first) or the name of an uploaded package.
        package: String,
        /// The workflow to start.
        workflow: String,
        /// The workflow's input, JSON.
        #[arg(long, default_value = "{}")]
        input: String,
        /// The package version (default: the newest).
        #[arg(long)]
        version: Option<i64>,
        /// Starting twice with the same key returns the first execution.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Show an execution.
    Status {
        /// The execution id (from `start` or `list`).
        id: String,
        /// Print the record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List executions, newest first.
    List {
        /// pending, running, waiting, completed, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only executions of this package.
        #[arg(long)]
        package: Option<String>,
        /// Only executions of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Show at most this many.
        #[arg(long, default_value_t = 50, value_parser = range_i64(1, 1_000_000))]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow an execution: progress bar and journal events, until it ends.
    /// With --server, survives a server restart: it reconnects and goes on
    /// after the last event it printed.
    Watch {
        /// The execution id.
        id: String,
        /// Give up after the server is unreachable this long, seconds.
        #[arg(long, default_value_t = 120, value_parser = range(0, 86_400))]
        reconnect_timeout_s: u64,
    },
    /// Print an execution's journal.
    Journal {
        /// The execution id.
        id: String,
        /// Print the entries as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve what an execution waits for; the payload reaches the workflow.
    Approve {
        /// The execution id.
        id: String,
        /// The approval key the workflow waits on (`status` shows it).
        key: String,
        /// JSON handed to the workflow with the approval.
        #[arg(long, default_value = "null")]
        payload: String,
    },
    /// Reject what an execution waits for.
    Reject {
        /// The execution id.
        id: String,
        /// The approval key the workflow waits on.
        key: String,
        /// Why; handed to the workflow.
        #[arg(long)]
        reason: String,
    },
    /// Cancel an execution: its next suspension point returns a
    /// cancellation error to the workflow, which may compensate.
    Cancel {
        /// The execution id.
        id: String,
    },
    /// Retry a failed or cancelled execution: completed steps are kept,
    /// the failed call runs again.
    Retry {
        /// The execution id.
        id: String,
    },
    /// Tenants and API keys; works on the database (--db) directly.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Build a package (.wasm) from a Python file or a Rust crate.
    ///
    /// A Python file (its @workflow and @step functions) is built with
    /// componentize-py by `PYTHON -m cerebelum build`: that Python needs the
    /// SDK and componentize-py (`pip install ./guest-sdk/python[build]`). A
    /// directory with a Cargo.toml is built with `cargo build --release
    /// --target wasm32-wasip2`.
    Build {
        /// A Python file, or a Rust crate directory depending on cerebelum-sdk.
        source: PathBuf,
        /// Where to write the package (default: the Python file with .wasm,
        /// or CRATE.wasm in the current directory).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The Python to build with (default: ./.venv/bin/python if it
        /// exists, else python3).
        #[arg(long, env = "CEREBELUM_PYTHON")]
        python: Option<PathBuf>,
    },
}

/// Per-tenant limits; unset ones keep their current value (for a new
/// tenant: the server's default). On `serve`, the server's defaults.
#[derive(Args, Clone, Debug, Default)]
struct QuotaArgs {
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
    /// faster callers wait, off their CPU time (built-in default 10000).
    #[arg(long, value_parser = range_i64(1, 1_000_000_000))]
    max_journal_rate: Option<i64>,
    /// Watch streams (`cerebelum watch`, WatchExecution) a tenant may have
    /// open at once on a node (built-in default 100).
    #[arg(long, value_parser = range_i64(1, 1_000_000))]
    max_streams: Option<i64>,
    /// Executions a tenant may start per second on a node while other
    /// tenants have work there (a tenant alone is not slowed); faster
    /// starts wait their turn, and are refused if that would take over
    /// 10 s (built-in default 100).
    #[arg(long, value_parser = range_i64(1, 1_000_000))]
    max_start_rate: Option<i64>,
}

/// Per-tenant settings whose server default is an engine flag
/// (`--memory-limit-mb`, `--step-timeout-ms`), and the HTTP allow-list.
#[derive(Args, Clone, Debug, Default)]
struct TenantArgs {
    /// Linear memory of one invocation, MiB (default: the server's
    /// --memory-limit-mb).
    #[arg(long, value_parser = range_i64(1, MAX_MEMORY_MB as i64))]
    memory_mb: Option<i64>,
    /// CPU time of one invocation, ms (default: the server's --step-timeout-ms).
    #[arg(long, value_parser = range_i64(1, DAY_MS as i64))]
    cpu_ms: Option<i64>,
    /// A host the tenant's steps may send HTTP requests to; repeat for
    /// several (replaces the list). Forms: `api.example.com`,
    /// `*.example.com`, `127.0.0.1:8080`, `api.example.com/v1/*`, and any
    /// of them after a method: `GET api.example.com`.
    #[arg(long = "allow-http", value_name = "HOST")]
    allow_http: Vec<String>,
    /// Remove every host from the HTTP allow-list.
    #[arg(long, conflicts_with = "allow_http")]
    deny_http: bool,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create, list or change tenants.
    Tenant {
        #[command(subcommand)]
        command: Box<TenantCommand>,
    },
    /// Create, list or revoke API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Secrets of a tenant, which its steps read through the SDK and
    /// which never appear in journals, logs or API answers.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant (its quotas default to the server's; no HTTP).
    Create {
        /// Letters, digits, '-', '_' and '.'.
        name: String,
        #[command(flatten)]
        quotas: QuotaArgs,
        #[command(flatten)]
        tenant: TenantArgs,
    },
    /// List tenants with their quotas and HTTP allow-lists.
    List,
    /// Change a tenant's quotas or HTTP allow-list (what is not given stays).
    Update {
        name: String,
        #[command(flatten)]
        quotas: QuotaArgs,
        #[command(flatten)]
        tenant: TenantArgs,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Set a secret of a tenant; the value is read from standard input
    /// (one line, or all of it), so it stays out of the shell history.
    Set { tenant: String, name: String },
    /// List a tenant's secrets (names only).
    List { tenant: String },
    /// Delete a secret.
    Delete { tenant: String, name: String },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key for a tenant and print it (only once: the
    /// database keeps a hash).
    Create { tenant: String },
    /// List a tenant's keys (ids only).
    List { tenant: String },
    /// Revoke a key at once, by its id (`cbk_…`, the part before the
    /// second underscore) or the whole key.
    Revoke { id: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // One worker thread more than cores: guest code runs on at most one
    // per core (see `runtime::CpuSlots`), so the engine's own work (the
    // API, commits, timers) always finds a thread, even while every core
    // runs a guest that spins; the kernel shares the cores between them.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores + 1)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
