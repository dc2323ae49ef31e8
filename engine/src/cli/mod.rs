//! The commands. Work on executions goes through a [`client::Client`]:
//! the local database or a remote server. Only the commands that run or
//! validate packages locally start the wasm runtime.

/// `println!` for commands: a closed stdout (`cerebelum journal ID | head`)
/// ends the command quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
    }};
}

mod admin;
mod build;
mod client;
mod watch;

use super::{Cli, Command, EngineArgs, QuotaArgs};
use anyhow::{Context, Result};
use cerebelum::api::Api;
use cerebelum::api::service::StartRequest;
use cerebelum::clock::SystemClock;
use cerebelum::model::{DEFAULT_QUOTAS, Decision, ListFilter, PackageRecord, Quotas, Status};
use cerebelum::store::{self, SharedStore, Synchronous};
use cerebelum::{Engine, EngineConfig};
use client::{Client, Remote};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

async fn open_store(db: &str, sync: Synchronous) -> Result<SharedStore> {
    Ok(store::open(db, sync).await?)
}
fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("cerebelum");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("cerebelum");
    }
    PathBuf::from(".cerebelum-cache")
}

/// An engine node on `db`; `quotas`: the server's defaults for tenants
/// (unset ones: the built-in [`DEFAULT_QUOTAS`]).
async fn engine(db: &str, args: &EngineArgs, quotas: Quotas) -> Result<Engine> {
    let store = open_store(db, args.sync).await?;
    let mut config = EngineConfig::new(args.cache_dir.clone().unwrap_or_else(default_cache_dir));
    config.hibernate_after = Duration::from_millis(args.hibernate_after_ms);
    config.lease = Duration::from_millis(args.lease_ms);
    config.tick = Duration::from_millis(args.tick_ms);
    config.memory_limit_bytes = (args.memory_limit_mb << 20) as usize;
    config.step_timeout = Duration::from_millis(args.step_timeout_ms);
    config.workflow_timeout = Duration::from_millis(args.workflow_timeout_ms);
    config.max_running = args.max_running as usize;
    config.runtime.fuel = args.meter_fuel;
    config.engine_retry = Duration::from_millis(args.engine_retry_ms);
    if let Some(mb) = args.max_guest_memory_mb {
        config.runtime.guest_memory_bytes = (mb << 20) as usize;
    }
    config.quotas = quotas.or(DEFAULT_QUOTAS);
    Ok(Engine::new(store, config, Arc::new(SystemClock))?)
}

fn package_name(path: &Path, name: Option<String>) -> Result<String> {
    match name {
        Some(n) => Ok(n),
        None => Ok(path
            .file_stem()
            .and_then(|s| s.to_str())
            .context("cannot derive a package name from the file name; pass --name")?
            .to_owned()),
    }
}

fn read_package(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read package file {}", path.display()))
}

/// Parses a JSON flag. The error names the position and shows a few
/// characters around it, never the whole (possibly huge) text.
fn json_arg(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{what} is not valid JSON: {e}, near `{}`",
            near(text, e.line(), e.column())
        )
    })
}

/// At most 60 bytes of `text` around (1-based) `line` and `column`, with
/// `…` where it was cut.
fn near(text: &str, line: usize, column: usize) -> String {
    let line_text = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let at = column.saturating_sub(1).min(line_text.len());
    let floor = |mut i: usize| {
        while !line_text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let start = floor(at.saturating_sub(30));
    let end = floor((at + 30).min(line_text.len()));
    format!(
        "{}{}{}",
        if start > 0 { "…" } else { "" },
        &line_text[start..end],
        if end < line_text.len() { "…" } else { "" }
    )
}

impl QuotaArgs {
    /// The quotas given, in bytes.
    fn quotas(&self) -> Quotas {
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

/// The engine settings of a command that has none of its own.
fn default_engine_args() -> EngineArgs {
    #[derive(clap::Parser)]
    struct Defaults {
        #[command(flatten)]
        engine: EngineArgs,
    }
    <Defaults as clap::Parser>::parse_from(["cerebelum"]).engine
}

/// Where the command's work goes: `--server`, else the local database.
async fn client(cli: &Cli, args: Option<&EngineArgs>) -> Result<Client> {
    match &cli.server {
        Some(url) => {
            let server = client::ServerUrl::parse(url)?;
            if server.in_clear && cli.api_key.is_some() {
                eprintln!(
                    "warning: the API key travels in clear over http:// to {}; use such a \
                     server only on a network you trust (or through an SSH tunnel)",
                    server.url
                );
            }
            Ok(Client::Remote(
                Remote::connect(&server.url, cli.api_key.as_deref()).await?,
            ))
        }
        None => {
            let args = args.cloned().unwrap_or_else(default_engine_args);
            let engine = engine(&cli.db, &args, Quotas::default()).await?;
            Client::local(Api::new(engine)).await
        }
    }
}

/// Uploads the package file at `path`.
async fn upload_file(client: &Client, path: &Path, name: Option<String>) -> Result<PackageRecord> {
    let name = package_name(path, name)?;
    cerebelum::executor::check_package_name(&name)?;
    let bytes = read_package(path)?;
    client
        .upload(&name, bytes)
        .await
        .with_context(|| format!("{} is not a usable package", path.display()))
}

fn package_summary(p: &PackageRecord) -> String {
    let workflows: Vec<&str> = p.info.workflows.iter().map(|w| w.name.as_str()).collect();
    let steps: Vec<&str> = p.info.steps.iter().map(|s| s.name.as_str()).collect();
    format!(
        "{} v{}  sha256:{}  {:.1} MiB\n  workflows: {}\n  steps: {}",
        p.name,
        p.version,
        &p.sha256[..p.sha256.len().min(12)],
        p.size_bytes as f64 / (1 << 20) as f64,
        workflows.join(", "),
        steps.join(", ")
    )
}

pub(crate) async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let db = cli.db.clone();
    match &cli.command {
        Command::Run {
            package,
            workflow,
            input,
            name,
            engine: args,
        } => {
            if cli.server.is_some() {
                anyhow::bail!(
                    "`run` drives the execution in this process on the local database; with a \
                     server use `cerebelum start FILE WORKFLOW` and `cerebelum watch ID`"
                );
            }
            let engine = engine(&db, args, Quotas::default()).await?;
            let api = Api::new(engine.clone());
            let client = Client::local(api).await?;
            let record = upload_file(&client, package, name.clone()).await?;
            let (execution, _) = client
                .start(StartRequest {
                    package: record.name.clone(),
                    version: Some(record.version),
                    workflow: workflow.clone(),
                    input: input.clone(),
                    idempotency_key: None,
                })
                .await?;
            eprintln!(
                "execution {} of {} v{} ({} in {db})",
                execution.id, record.name, record.version, workflow
            );
            let id = execution.id.clone();
            let watcher = async {
                let followed = watch::follow(&client, &id, Duration::ZERO).await;
                if let Err(e) = followed {
                    eprintln!("warning: cannot show the progress: {e:#}");
                }
            };
            let (done, ()) = tokio::join!(engine.run_until_done(&execution.id), watcher);
            Ok(print_outcome(&done?))
        }
        Command::Serve {
            listen,
            max_message_mb,
            node_max_streams,
            quotas,
            engine: args,
        } => {
            let engine = engine(&db, args, quotas.quotas()).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| {
                    format!("cannot listen on {listen}; pass another address with --listen")
                })?;
            let addr = listener.local_addr()?;
            let api = Api::new(engine.clone());
            eprintln!(
                "cerebelum serving {} on grpc://{addr}; Ctrl-C to stop",
                store::redacted(&db)
            );
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let grpc = cerebelum::api::grpc::serve(
                api,
                listener,
                cerebelum::api::grpc::ServerLimits {
                    max_message_bytes: (max_message_mb << 20) as usize,
                    max_streams: *node_max_streams as usize,
                },
                until_stopped(stopped.clone()),
            );
            let scheduler = engine.serve(until_stopped(stopped));
            let signal = async {
                shutdown_signal().await;
                let _ = stop.send(true);
            };
            let (grpc, scheduler, ()) = tokio::join!(grpc, scheduler, signal);
            grpc?;
            scheduler?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Upload {
            package,
            name,
            engine: args,
        } => {
            let client = client(&cli, Some(args)).await?;
            let record = upload_file(&client, package, name.clone()).await?;
            out!(
                "{} v{} sha256:{}",
                record.name,
                record.version,
                record.sha256
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Start {
            package,
            workflow,
            input,
            version,
            idempotency_key,
            engine: args,
        } => {
            json_arg(input, "--input")?;
            let client = client(&cli, Some(args)).await?;
            let path = Path::new(package);
            let (name, version) = if path.exists() {
                let record = upload_file(&client, path, None).await?;
                (record.name, Some(record.version))
            } else if package.ends_with(".wasm") || package.contains('/') {
                anyhow::bail!("package file {package} does not exist");
            } else {
                (package.clone(), *version)
            };
            let (execution, created) = client
                .start(StartRequest {
                    package: name,
                    version,
                    workflow: workflow.clone(),
                    input: input.clone(),
                    idempotency_key: idempotency_key.clone(),
                })
                .await?;
            if !created {
                eprintln!("the idempotency key was used before: this is the execution it started");
            }
            out!("{}", execution.id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Packages {
            name,
            version,
            json,
        } => {
            let client = client(&cli, None).await?;
            let packages = match name {
                Some(name) => vec![client.describe(name, *version).await?],
                None => client.packages().await?,
            };
            if *json {
                out!("{}", serde_json::to_string_pretty(&packages)?);
            } else if packages.is_empty() {
                out!("no packages in {}", client.place());
            } else {
                for p in &packages {
                    out!("{}", package_summary(p));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { id, json } => {
            let client = client(&cli, None).await?;
            let view = client.execution(id).await?;
            if *json {
                out!("{}", serde_json::to_string_pretty(&view.record)?);
            } else {
                out!("{}", watch::summary(&view.record));
                if let Some(note) = &view.note {
                    out!("  waiting for {note}");
                }
                for approval in view.pending_approvals {
                    out!(
                        "  waiting for approval '{}': {}  (cerebelum approve {id} {})",
                        approval.key,
                        approval.request["message"].as_str().unwrap_or(""),
                        approval.key
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List {
            status,
            package,
            workflow,
            limit,
            json,
        } => {
            let status = status.as_deref().map(Api::parse_status).transpose()?;
            let client = client(&cli, None).await?;
            let mut rows = Vec::new();
            let mut token: Option<String> = None;
            // Page through until `limit` rows (pages hold at most 1000).
            while (rows.len() as i64) < *limit {
                let page = client
                    .list(
                        ListFilter {
                            status,
                            package: package.clone(),
                            workflow: workflow.clone(),
                            limit: (*limit - rows.len() as i64)
                                .min(cerebelum::api::service::MAX_PAGE),
                            ..ListFilter::default()
                        },
                        token.as_deref(),
                    )
                    .await?;
                rows.extend(page.executions);
                match page.next {
                    Some(next) => token = Some(next),
                    None => break,
                }
            }
            if *json {
                out!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                out!("no executions");
            } else {
                for r in rows {
                    out!("{}", watch::summary(&r));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch {
            id,
            reconnect_timeout_s,
        } => {
            let client = client(&cli, None).await?;
            let record =
                watch::follow(&client, id, Duration::from_secs(*reconnect_timeout_s)).await?;
            Ok(print_outcome(&record))
        }
        Command::Journal { id, json } => {
            let client = client(&cli, None).await?;
            let entries = client.journal(id).await?;
            if *json {
                out!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for e in entries {
                    let row = e.row();
                    out!(
                        "{:>5} {:<8} {:<16} {}{}",
                        e.seq,
                        e.invocation,
                        row.kind,
                        row.ref_seq
                            .map(|r| format!("(of {r}) "))
                            .unwrap_or_default(),
                        row.payload
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve { id, key, payload } => {
            let payload = json_arg(payload, "--payload")?;
            decide(&cli, id, key, Decision::Approve(payload)).await
        }
        Command::Reject { id, key, reason } => {
            decide(&cli, id, key, Decision::Reject(reason.clone())).await
        }
        Command::Cancel { id } => {
            let record = client(&cli, None).await?.cancel(id).await?;
            out!(
                "cancellation requested for {} ({})",
                record.id,
                record.status
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry { id } => {
            let record = client(&cli, None).await?.retry(id).await?;
            out!(
                "{} is {} again; `cerebelum serve` resumes it",
                record.id,
                record.status
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { command } => {
            if let Some(server) = &cli.server {
                anyhow::bail!(
                    "`cerebelum admin` works on the server's database directly and has no remote \
                     form yet, so it does not use --server {server} (or CEREBELUM_SERVER); run it \
                     where the database is, with --db (the URL `cerebelum serve` was given)"
                );
            }
            let sqlite_file = (!db.starts_with("postgres://") && !db.starts_with("postgresql://"))
                .then(|| PathBuf::from(db.strip_prefix("sqlite://").unwrap_or(&db)));
            let created = sqlite_file.as_ref().is_some_and(|f| !f.exists());
            let store = open_store(&db, Synchronous::Full).await?;
            if created {
                eprintln!("note: created a new, empty database {db} (pass --db to use another)");
            }
            admin::run(&store, command).await
        }
        Command::Build {
            source,
            output,
            python,
        } => build::run(source, output.as_deref(), python.as_deref()),
    }
}

async fn decide(cli: &Cli, id: &str, key: &str, decision: Decision) -> Result<ExitCode> {
    let approval = client(cli, None).await?.decide(id, key, decision).await?;
    out!("approval '{}' of {id} is {}", approval.key, approval.status);
    Ok(ExitCode::SUCCESS)
}

fn print_outcome(record: &cerebelum::model::ExecutionRecord) -> ExitCode {
    match record.status {
        Status::Completed => {
            use std::io::Write as _;
            let result = record.result.as_ref().map(|r| r.to_string());
            // A closed stdout (`| head -0`) is not a failure of the execution.
            let _ = writeln!(std::io::stdout(), "{}", result.as_deref().unwrap_or("null"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "execution {} {}: {}",
                record.id,
                record.status,
                record
                    .error
                    .as_ref()
                    .map(|e| serde_json::to_string(e).unwrap_or_default())
                    .unwrap_or_default()
            );
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
