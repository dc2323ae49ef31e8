//! `cerebelum`: the engine's command line. Every command works on the
//! database named by `--db`: an embedded SQLite file (default
//! `./cerebelum.db`) or a PostgreSQL URL shared by several nodes.

mod cli;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// A durable workflow engine for WebAssembly components.
///
/// Build a package (a .wasm component exporting cerebelum:workflow), then run
/// it once with `cerebelum run`, or keep `cerebelum serve` running and drive
/// executions with start / status / watch / approve / cancel / retry.
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

    /// Log filter (tracing syntax), e.g. `info` or `cerebelum=debug`.
    #[arg(long, global = true, env = "CEREBELUM_LOG", default_value = "warn")]
    log: String,

    #[command(subcommand)]
    command: Command,
}

/// Settings of the engine, for commands that run or validate packages.
#[derive(Args, Clone)]
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
    #[arg(long, default_value_t = 2000)]
    hibernate_after_ms: u64,
    /// Lease of an execution this node drives; another node (or a restart)
    /// takes it over after the lease expires.
    #[arg(long, default_value_t = 5000)]
    lease_ms: u64,
    /// How often to look for due executions.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// Memory limit of one invocation (workflow or step attempt), MiB.
    #[arg(long, default_value_t = 256)]
    memory_limit_mb: usize,
    /// CPU deadline of a step attempt unless the step's options set one.
    #[arg(long, default_value_t = 60_000)]
    step_timeout_ms: u64,
    /// CPU deadline of workflow code per run.
    #[arg(long, default_value_t = 30_000)]
    workflow_timeout_ms: u64,
    /// Executions driven at once by this node.
    #[arg(long, default_value_t = 512)]
    max_running: usize,
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
    /// Run the engine: drive executions, wake timers, resurrect after a crash.
    Serve {
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
    /// List uploaded packages with their workflows and steps.
    Packages {
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
        #[arg(long)]
        workflow: Option<String>,
        /// Show at most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Follow an execution: progress bar and journal events, until it ends.
    Watch {
        /// The execution id.
        id: String,
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
