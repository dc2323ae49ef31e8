//! `cerebelum`: the engine's command line. Commands work on the database
//! named by `--db` (an embedded SQLite file, default `./cerebelum.db`, or a
//! PostgreSQL URL shared by several nodes) as tenant `default`, or, with
//! `--server URL --api-key KEY`, on a remote `cerebelum serve` as the key's
//! tenant. The commands live in `cli/`, one module per group.

mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|e| {
        eprintln!(
            "warning: --log {:?} is not a log filter ({e}); logging warnings only (try `info` \
             or `cerebelum=debug`)",
            cli.log
        );
        tracing_subscriber::EnvFilter::new("warn")
    });
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        cli::LogFormat::Text => logs.init(),
        cli::LogFormat::Json => logs.json().with_current_span(true).init(),
    }
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
