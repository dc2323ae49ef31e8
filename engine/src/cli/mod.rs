//! The commands. Each opens the database itself; only the commands that
//! run or validate packages start the wasm runtime.

mod watch;

use super::{Cli, Command, EngineArgs};
use anyhow::{Context, Result};
use cerebelum::clock::SystemClock;
use cerebelum::model::{Decision, ListFilter, Status};
use cerebelum::store::{self, SharedStore, Synchronous};
use cerebelum::{Engine, EngineConfig};
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

async fn engine(db: &str, args: &EngineArgs) -> Result<Engine> {
    let store = open_store(db, args.sync).await?;
    let mut config = EngineConfig::new(args.cache_dir.clone().unwrap_or_else(default_cache_dir));
    config.hibernate_after = Duration::from_millis(args.hibernate_after_ms);
    config.lease = Duration::from_millis(args.lease_ms.max(30));
    config.tick = Duration::from_millis(args.tick_ms.max(1));
    config.memory_limit_bytes = args.memory_limit_mb.max(1) << 20;
    config.step_timeout = Duration::from_millis(args.step_timeout_ms);
    config.workflow_timeout = Duration::from_millis(args.workflow_timeout_ms);
    config.max_running = args.max_running.max(1);
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

async fn upload(
    engine: &Engine,
    path: &Path,
    name: Option<String>,
) -> Result<cerebelum::model::PackageRecord> {
    let name = package_name(path, name)?;
    cerebelum::executor::check_package_name(&name)?;
    let bytes = read_package(path)?;
    engine
        .upload(&name, bytes)
        .await
        .with_context(|| format!("{} is not a usable package", path.display()))
}

fn json_arg(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("{what} is not valid JSON: {text}"))
}

pub(crate) async fn dispatch(cli: Cli) -> Result<ExitCode> {
    let db = cli.db;
    match cli.command {
        Command::Run {
            package,
            workflow,
            input,
            name,
            engine: args,
        } => {
            let engine = engine(&db, &args).await?;
            let record = upload(&engine, &package, name).await?;
            let execution = engine
                .start(&record.sha256, &workflow, &input, None)
                .await?;
            eprintln!(
                "execution {} of {} v{} ({} in {db})",
                execution.id, record.name, record.version, workflow
            );
            let watcher = tokio::spawn(watch::follow(engine.store().clone(), execution.id.clone()));
            let done = engine.run_until_done(&execution.id).await?;
            let _ = watcher.await;
            Ok(print_outcome(&done))
        }
        Command::Serve { engine: args } => {
            let engine = engine(&db, &args).await?;
            eprintln!("cerebelum serving {db}; Ctrl-C to stop");
            engine.serve(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Upload {
            package,
            name,
            engine: args,
        } => {
            let engine = engine(&db, &args).await?;
            let record = upload(&engine, &package, name).await?;
            println!(
                "{} v{} sha256:{}",
                record.name, record.version, record.sha256
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Start {
            package,
            workflow,
            input,
            idempotency_key,
            engine: args,
        } => {
            json_arg(&input, "--input")?;
            let engine = engine(&db, &args).await?;
            let path = Path::new(&package);
            let sha = if path.exists() {
                upload(&engine, path, None).await?.sha256
            } else if package.ends_with(".wasm") || package.contains('/') {
                anyhow::bail!("package file {package} does not exist");
            } else {
                engine.store().latest_package(&package).await?.sha256
            };
            let execution = engine
                .start(&sha, &workflow, &input, idempotency_key)
                .await?;
            println!("{}", execution.id);
            Ok(ExitCode::SUCCESS)
        }
        Command::Packages { json } => {
            let store = open_store(&db, Synchronous::Full).await?;
            let packages = store.list_packages().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&packages)?);
            } else if packages.is_empty() {
                println!("no packages");
            } else {
                for p in packages {
                    let names = |key: &str| {
                        p.info[key]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|w| w["name"].as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            })
                            .unwrap_or_default()
                    };
                    println!(
                        "{} v{}  sha256:{}\n  workflows: {}\n  steps: {}",
                        p.name,
                        p.version,
                        &p.sha256[..12],
                        names("workflows"),
                        names("steps")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { id, json } => {
            let store = open_store(&db, Synchronous::Full).await?;
            let record = store.execution(&id).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&record)?);
            } else {
                println!("{}", watch::summary(&record));
                for approval in store.approvals(&id).await? {
                    if approval.status == "pending" {
                        println!(
                            "  waiting for approval '{}': {}  (cerebelum approve {id} {})",
                            approval.key,
                            approval.request["message"].as_str().unwrap_or(""),
                            approval.key
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List {
            status,
            workflow,
            limit,
            json,
        } => {
            let status = status
                .map(|s| {
                    Status::parse(&s).with_context(|| {
                        format!("unknown status '{s}': use pending, running, waiting, completed, failed or cancelled")
                    })
                })
                .transpose()?;
            let store = open_store(&db, Synchronous::Full).await?;
            let rows = store
                .list_executions(&ListFilter {
                    status,
                    workflow,
                    limit,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if rows.is_empty() {
                println!("no executions");
            } else {
                for r in rows {
                    println!("{}", watch::summary(&r));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch { id } => {
            let store = open_store(&db, Synchronous::Full).await?;
            let record = watch::follow(store, id).await?;
            Ok(print_outcome(&record))
        }
        Command::Journal { id, json } => {
            let store = open_store(&db, Synchronous::Full).await?;
            store.execution(&id).await?;
            let entries = store.journal(&id, 0).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
            } else {
                for e in entries {
                    println!(
                        "{:>5} {:<8} {:<16} {}{}",
                        e.seq,
                        e.invocation,
                        e.kind,
                        e.ref_seq.map(|r| format!("(of {r}) ")).unwrap_or_default(),
                        e.payload
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve { id, key, payload } => {
            let payload = json_arg(&payload, "--payload")?;
            decide(&db, &id, &key, Decision::Approve(payload)).await
        }
        Command::Reject { id, key, reason } => {
            decide(&db, &id, &key, Decision::Reject(reason)).await
        }
        Command::Cancel { id } => {
            let store = open_store(&db, Synchronous::Full).await?;
            let record = store.request_cancel(&id, now_ms()).await?;
            println!(
                "cancellation requested for {} ({})",
                record.id, record.status
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry { id } => {
            let store = open_store(&db, Synchronous::Full).await?;
            let record = store.retry_execution(&id, now_ms()).await?;
            println!(
                "{} is {} again; `cerebelum serve` resumes it",
                record.id, record.status
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn now_ms() -> i64 {
    use cerebelum::clock::Clock;
    SystemClock.now_ms()
}

async fn decide(db: &str, id: &str, key: &str, decision: Decision) -> Result<ExitCode> {
    let store = open_store(db, Synchronous::Full).await?;
    let approval = store.decide_approval(id, key, &decision, now_ms()).await?;
    println!("approval '{}' of {id} is {}", approval.key, approval.status);
    Ok(ExitCode::SUCCESS)
}

fn print_outcome(record: &cerebelum::model::ExecutionRecord) -> ExitCode {
    match record.status {
        Status::Completed => {
            println!(
                "{}",
                record
                    .result
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "null".into())
            );
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
                    .map(|e| e.to_string())
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
