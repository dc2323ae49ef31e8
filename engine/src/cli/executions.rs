//! The commands on executions: start, status, list, watch, journal,
//! approve, reject, cancel, retry. Each goes through a [`cerebelum::api::Client`], on
//! the local database or a server (`--server`).

use super::connect::{Needs, ops};
use super::flags::{EngineArgs, range, range_i64};
use super::packages::upload_file;
use super::{Cli, print_outcome, watch};
use anyhow::Result;
use cerebelum::api::Api;
use cerebelum::api::service::{MAX_PAGE, StartRequest};
use cerebelum::model::{Decision, ListFilter};
use cerebelum::store::NewSignal;
use clap::Args;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub(crate) struct StartArgs {
    /// A .wasm file (uploaded first) or the name of an uploaded package.
    package: String,
    /// The workflow to start.
    workflow: String,
    /// The workflow's input, JSON (`@FILE`: read from FILE).
    #[arg(long, default_value = "{}", value_parser = super::flags::json_text)]
    input: String,
    /// The package version (default: the newest).
    #[arg(long)]
    version: Option<i64>,
    /// Starting twice with the same key returns the first execution.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Run every step of this execution on the external worker queue
    /// QUEUE (workers serve it with `python -m cerebelum worker`) instead
    /// of in the sandbox.
    #[arg(long, value_name = "QUEUE")]
    worker_queue: Option<String>,
    /// Follow the execution until it ends, as `watch` does, print its
    /// result and exit with its status (0: completed, 1: failed or
    /// cancelled).
    #[arg(long)]
    wait: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// The execution id (from `start` or `list`).
    id: String,
    /// Print the record as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ListArgs {
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
}

#[derive(Args)]
pub(crate) struct WatchArgs {
    /// The execution id.
    id: String,
    /// Give up after the server is unreachable this long, seconds.
    #[arg(long, default_value_t = 120, value_parser = range(0, 86_400))]
    reconnect_timeout_s: u64,
}

#[derive(Args)]
pub(crate) struct JournalArgs {
    /// The execution id.
    id: String,
    /// Print the entries as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ReplayArgs {
    /// The execution id.
    id: String,
    /// Replay against this component (a `.wasm` file, e.g. a new build of
    /// the package; it is not uploaded).
    #[arg(long, value_name = "FILE", conflicts_with = "version")]
    component: Option<std::path::PathBuf>,
    /// Replay against this version of the execution's package (default:
    /// the version it runs).
    #[arg(long, value_name = "V")]
    version: Option<i64>,
    /// Replay in this process, not on the server: fetch the execution and
    /// its journal (from --server, or the local database) and replay them
    /// against --component (a local build) here, printing each journal
    /// entry marked replayed (✓), where it diverges (✗) or not reached.
    /// For a Python package, `python -m cerebelum replay ID FILE.py` runs
    /// the file itself under CPython, for a debugger.
    #[arg(long, requires = "component")]
    local: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
pub(crate) struct UpgradeArgs {
    /// The execution to upgrade (or --package and --from for all of a
    /// version).
    #[arg(required_unless_present = "package", conflicts_with = "package")]
    id: Option<String>,
    /// The version of its package to move to.
    #[arg(long, value_name = "V")]
    to: i64,
    /// Upgrade every open execution of this package on version --from.
    #[arg(long, value_name = "NAME", requires = "from")]
    package: Option<String>,
    /// With --package: the version to move executions from.
    #[arg(long, value_name = "V", requires = "package")]
    from: Option<i64>,
    /// Print what became of each execution as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
pub(crate) struct ApproveArgs {
    /// The execution id.
    id: String,
    /// The approval key the workflow waits on (`status` shows it).
    key: String,
    /// JSON handed to the workflow with the approval (`@FILE`: read from
    /// FILE).
    #[arg(long, default_value = "null", value_parser = super::flags::json_text)]
    payload: String,
}

#[derive(Args)]
pub(crate) struct SignalArgs {
    /// The execution id.
    id: String,
    /// The signal's name: what the workflow's `await-signal` waits for.
    name: String,
    /// JSON handed to the workflow with the signal (`@FILE`: read from
    /// FILE).
    #[arg(long, default_value = "null", value_parser = super::flags::json_text)]
    payload: String,
    /// Makes sending idempotent: a signal with this id is stored once,
    /// however often it is sent (e.g. a webhook's delivery id).
    #[arg(long = "id", value_name = "SIGNAL_ID")]
    signal_id: Option<String>,
}

#[derive(Args)]
pub(crate) struct RejectArgs {
    /// The execution id.
    id: String,
    /// The approval key the workflow waits on.
    key: String,
    /// Why; handed to the workflow.
    #[arg(long)]
    reason: String,
}

#[derive(Args)]
pub(crate) struct IdArgs {
    /// The execution id.
    id: String,
}

/// Parses a JSON flag. The error names the position and shows a few
/// characters around it, never the whole (possibly huge) text.
fn json_arg(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{what} is not valid JSON: {}, near `{}`",
            cerebelum::util::json_error(&e),
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

pub(crate) async fn start(cli: &Cli, args: &StartArgs) -> Result<ExitCode> {
    json_arg(&args.input, "--input")?;
    let ops = ops(cli, Needs::Engine(&args.engine)).await?;
    let path = Path::new(&args.package);
    let (name, version) = if path.exists() {
        let record = upload_file(&ops, path, None).await?;
        (record.name, Some(record.version))
    } else if args.package.ends_with(".wasm") || args.package.contains('/') {
        anyhow::bail!("package file {} does not exist", args.package);
    } else {
        (args.package.clone(), args.version)
    };
    let (execution, created) = ops
        .start(StartRequest {
            package: name,
            version,
            workflow: args.workflow.clone(),
            input: args.input.clone(),
            idempotency_key: args.idempotency_key.clone(),
            worker_queue: args.worker_queue.clone(),
        })
        .await?;
    if !created {
        eprintln!("the idempotency key was used before: this is the execution it started");
    }
    out!("{}", execution.id);
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    if cli.server.is_none() {
        eprintln!(
            "waiting for `cerebelum serve` on this database to run it (`cerebelum run` runs \
             a workflow in this process)"
        );
    }
    let record = watch::follow(&ops, &execution.id, Duration::from_secs(120)).await?;
    Ok(print_outcome(&record))
}

pub(crate) async fn status(cli: &Cli, args: &StatusArgs) -> Result<ExitCode> {
    let ops = ops(cli, Needs::Store).await?;
    let view = ops.execution(&args.id).await?;
    if args.json {
        let mut json = serde_json::to_value(&view.record)?;
        json["waiting_on"] = serde_json::json!(view.waiting_on);
        json["upgrade_to"] = serde_json::json!(view.upgrade_to);
        json["state"] = view.state.clone().unwrap_or_default();
        json["buffered_signals"] = view
            .buffered_signals
            .iter()
            .map(|s| serde_json::json!({"seq": s.seq, "name": s.name, "payload": s.payload}))
            .collect();
        out!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    out!("{}", watch::summary(&view.record));
    if let Some(url) = super::console_url(cli, &args.id) {
        out!("  console: {url}");
    }
    if let Some(note) = &view.note {
        out!("  waiting for {note}");
    }
    if !view.record.status.is_terminal() {
        for line in watch::pending_sleeps(&ops.journal(&args.id, 0).await?) {
            out!("{line}");
        }
    }
    if let Some(state) = &view.state {
        out!("  state: {state}");
    }
    if let Some(to) = view.upgrade_to {
        out!(
            "  upgrade to v{to} asked: it moves when it next waits, if its journal then \
             replays cleanly against v{to}"
        );
    }
    // Sleeps and approvals are shown below, with more to say.
    for wait in &view.waiting_on {
        if let Some(name) = wait.strip_prefix("signal '") {
            let name = name.split('\'').next().unwrap_or_default();
            out!(
                "  waiting for {wait}  (cerebelum signal {} {name} --payload '{{}}')",
                args.id
            );
        } else if !wait.starts_with("approval ") && !wait.starts_with("sleep ") {
            out!("  waiting for {wait}");
        }
    }
    for signal in &view.buffered_signals {
        out!(
            "  signal '{}' #{} received, not taken yet: {}",
            signal.name,
            signal.seq,
            cerebelum::util::shorten(&signal.payload.to_string(), 120)
        );
    }
    for approval in view.pending_approvals {
        out!(
            "  waiting for approval '{}': {}  (cerebelum approve {} {})",
            approval.key,
            approval.request["message"].as_str().unwrap_or(""),
            args.id,
            approval.key
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn list(cli: &Cli, args: &ListArgs) -> Result<ExitCode> {
    let status = args.status.as_deref().map(Api::parse_status).transpose()?;
    let ops = ops(cli, Needs::Store).await?;
    let mut rows = Vec::new();
    let mut token: Option<String> = None;
    // Page through until `limit` rows (pages hold at most MAX_PAGE).
    while (rows.len() as i64) < args.limit {
        let filter = ListFilter {
            status,
            package: args.package.clone(),
            workflow: args.workflow.clone(),
            limit: (args.limit - rows.len() as i64).min(MAX_PAGE),
            ..ListFilter::default()
        };
        let page = ops.list(filter, token.as_deref()).await?;
        rows.extend(page.executions);
        match page.next {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    if args.json {
        out!("{}", serde_json::to_string_pretty(&rows)?);
    } else if rows.is_empty() {
        out!("no executions");
    } else {
        out!("{}", watch::table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn follow(cli: &Cli, args: &WatchArgs) -> Result<ExitCode> {
    let ops = ops(cli, Needs::Store).await?;
    let reconnect_for = Duration::from_secs(args.reconnect_timeout_s);
    if let Some(url) = super::console_url(cli, &args.id) {
        eprintln!("console: {url}");
    }
    let record = watch::follow(&ops, &args.id, reconnect_for).await?;
    Ok(print_outcome(&record))
}

pub(crate) async fn journal(cli: &Cli, args: &JournalArgs) -> Result<ExitCode> {
    let entries = ops(cli, Needs::Store).await?.journal(&args.id, 0).await?;
    if args.json {
        out!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in entries {
        let row = e.row();
        out!(
            "{:>5} {} {:<8} {:<16} {}{}",
            e.seq,
            cerebelum::util::time_of_day(e.at_ms),
            e.invocation,
            row.kind,
            row.ref_seq
                .map(|r| format!("(of {r}) "))
                .unwrap_or_default(),
            row.payload
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Replays an execution against other code, without side effects: exit
/// status 1 if that code diverges from its journal.
pub(crate) async fn upgrade(cli: &Cli, args: &UpgradeArgs) -> Result<ExitCode> {
    let package = args.package.as_deref().zip(args.from);
    let results = ops(cli, Needs::Engine(&args.engine))
        .await?
        .upgrade(args.id.as_deref(), package, args.to)
        .await?;
    let stayed = results.iter().filter(|u| !u.upgraded && !u.pending).count();
    let pending = results.iter().filter(|u| u.pending).count();
    if args.json {
        out!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        for u in &results {
            if u.upgraded {
                out!(
                    "{} upgraded from v{} to v{}",
                    u.id,
                    u.from_version,
                    u.to_version
                );
            } else if u.pending {
                out!("{} on v{}: {}", u.id, u.from_version, u.message);
            } else {
                out!("{} stays on v{}: {}", u.id, u.from_version, u.message);
            }
        }
        if args.package.is_some() {
            let mut also = String::new();
            if pending > 0 {
                also += &format!("; {pending} running move when they next wait");
            }
            if stayed > 0 {
                also += &format!("; {stayed} stay where they are");
            }
            out!(
                "{} of {} upgraded to v{}{also}",
                results.len() - stayed - pending,
                results.len(),
                args.to,
            );
        }
    }
    Ok(if stayed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) async fn replay(cli: &Cli, args: &ReplayArgs) -> Result<ExitCode> {
    use anyhow::Context as _;
    if args.local {
        return replay_local(cli, args).await;
    }
    let component = match &args.component {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let r = ops(cli, Needs::Engine(&args.engine))
        .await?
        .replay(&args.id, component, args.version)
        .await?;
    let against = match &args.component {
        Some(path) => path.display().to_string(),
        None => format!("{} v{}", r.package, r.version),
    };
    let ended = cerebelum::api::convert::status_from_pb(r.ended());
    let diverged_at = r.divergence.as_deref().and_then(diverged_at);
    if args.json {
        let report = serde_json::json!({
            "id": args.id,
            "package": r.package,
            "version": r.version,
            "sha256": r.sha256,
            "entries": r.entries,
            "compatible": r.divergence.is_none(),
            "diverged_at": diverged_at,
            "divergence": r.divergence,
            "ended": ended.map(|s| s.as_str()),
            "error": r.error,
        });
        out!("{}", serde_json::to_string_pretty(&report)?);
    } else if let Some(divergence) = &r.divergence {
        let at = diverged_at.map_or(String::new(), |seq| {
            format!(" at entry {seq} of {}", r.entries)
        });
        out!("{} diverges from {against}{at}: {divergence}", args.id);
    } else {
        let then = match ended {
            Some(cerebelum::model::Status::Completed) => {
                "the code then completes the workflow".to_owned()
            }
            Some(cerebelum::model::Status::Failed) => format!(
                "the code then fails the workflow: {}",
                r.error.as_deref().unwrap_or("no error given")
            ),
            _ => "it would go on from there".to_owned(),
        };
        out!(
            "{} is compatible with {against} through entry {n} of {n}; {then}",
            args.id,
            n = r.entries
        );
    }
    Ok(if r.divergence.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `cerebelum replay ID --local --component FILE`: the execution and its
/// journal fetched from where the command points, replayed in this process
/// on a scratch node, the journal printed entry by entry with how far the
/// replay went.
async fn replay_local(cli: &Cli, args: &ReplayArgs) -> Result<ExitCode> {
    use anyhow::Context as _;
    use cerebelum::Engine;
    let file = args
        .component
        .as_deref()
        .context("--local replays against a component file: pass --component FILE")?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let client = ops(cli, Needs::Store).await?;
    let mut record = client.execution(&args.id).await?.record;
    let journal = client.journal(&args.id, 0).await?;
    // A node of this process, on a database of its own (removed after):
    // the checker copies the execution into a scratch database of its own.
    let dir = cerebelum::executor::Scratch::new("cerebelum-replay-local")?;
    let store = cerebelum::store::open(
        &dir.path().join("local.db").to_string_lossy(),
        cerebelum::store::Synchronous::Normal,
    )
    .await?;
    let cache = args
        .engine
        .cache_dir
        .clone()
        .unwrap_or_else(super::flags::default_cache_dir);
    let config = cerebelum::EngineConfig::new(cache);
    let node = Engine::new(
        store,
        config,
        std::sync::Arc::new(cerebelum::clock::SystemClock),
    )?;
    record.tenant = "default".to_owned();
    let checker = node
        .replay_checker(&record.tenant, &record.package_name, bytes)
        .await?;
    let report = checker.check_journal(&record, journal.clone()).await?;
    let diverged_at = report.divergence.as_deref().and_then(diverged_at);
    if args.json {
        let json = serde_json::json!({
            "id": args.id,
            "component": file.display().to_string(),
            "sha256": report.sha256,
            "entries": report.entries,
            "compatible": report.divergence.is_none(),
            "diverged_at": diverged_at,
            "divergence": report.divergence,
            "ended": report.ended.as_str(),
            "error": report.error,
        });
        out!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        out!(
            "replaying {} ({} {}) in this process against {}: {} journal entries",
            args.id,
            record.package_name,
            record.workflow,
            file.display(),
            report.entries
        );
        for e in &journal {
            let row = e.row();
            let mark = match diverged_at {
                Some(at) if e.seq == at => "✗",
                Some(at) if e.seq > at => " ",
                _ => "✓",
            };
            let payload = cerebelum::util::shorten(&row.payload.to_string(), 100);
            out!(
                "{mark} {:>5} {:<8} {:<16} {payload}",
                e.seq,
                e.invocation,
                row.kind
            );
        }
        if let Some(divergence) = &report.divergence {
            let at = diverged_at.map_or(String::new(), |seq| {
                format!(" at entry {seq} of {}", report.entries)
            });
            out!(
                "{} diverges from {}{at}: {divergence}",
                args.id,
                file.display()
            );
        } else {
            out!(
                "{} replays against {} through entry {n} of {n} ({})",
                args.id,
                file.display(),
                report.ended.as_str(),
                n = report.entries
            );
        }
    }
    Ok(if report.divergence.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The journal entry a `nondeterminism` message names ("at seq N ...").
fn diverged_at(message: &str) -> Option<i64> {
    message
        .strip_prefix("at seq ")?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(crate) async fn approve(cli: &Cli, args: &ApproveArgs) -> Result<ExitCode> {
    let payload = json_arg(&args.payload, "--payload")?;
    decide(cli, &args.id, &args.key, Decision::Approve(payload)).await
}

pub(crate) async fn reject(cli: &Cli, args: &RejectArgs) -> Result<ExitCode> {
    let decision = Decision::Reject(args.reason.clone());
    decide(cli, &args.id, &args.key, decision).await
}

async fn decide(cli: &Cli, id: &str, key: &str, decision: Decision) -> Result<ExitCode> {
    let approval = ops(cli, Needs::Store)
        .await?
        .decide(id, key, decision)
        .await?;
    out!("approval '{}' of {id} is {}", approval.key, approval.status);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn signal(cli: &Cli, args: &SignalArgs) -> Result<ExitCode> {
    let signal = NewSignal {
        name: args.name.clone(),
        payload: json_arg(&args.payload, "--payload")?,
        signal_id: args.signal_id.clone(),
    };
    let (signal, created) = ops(cli, Needs::Store)
        .await?
        .signal(&args.id, signal)
        .await?;
    if created {
        out!(
            "signal '{}' #{} sent to {}",
            signal.name,
            signal.seq,
            args.id
        );
    } else {
        out!(
            "signal '{}' #{} was sent to {} before (same --id): nothing sent again",
            signal.name,
            signal.seq,
            args.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn pause(cli: &Cli, args: &IdArgs, paused: bool) -> Result<ExitCode> {
    let record = ops(cli, Needs::Store)
        .await?
        .set_paused(&args.id, paused)
        .await?;
    if paused {
        out!(
            "{} is paused ({}): it runs no new step until `cerebelum resume {}`",
            record.id,
            record.status,
            record.id
        );
    } else {
        out!("{} is resumed ({})", record.id, record.status);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn cancel(cli: &Cli, args: &IdArgs) -> Result<ExitCode> {
    let record = ops(cli, Needs::Store).await?.cancel(&args.id).await?;
    out!(
        "cancellation requested for {} ({})",
        record.id,
        record.status
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn retry(cli: &Cli, args: &IdArgs) -> Result<ExitCode> {
    let record = ops(cli, Needs::Store).await?.retry(&args.id).await?;
    out!(
        "{} is {} again; `cerebelum serve` resumes it",
        record.id,
        record.status
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_error_shows_a_little_around_its_position() {
        let long = format!("{{\"a\": [{}], oops", "1,".repeat(50_000));
        let e = json_arg(&long, "--input").unwrap_err().to_string();
        assert!(e.starts_with("--input is not valid JSON"), "{e}");
        assert!(
            e.len() < 300,
            "the message quotes the whole input: {} bytes",
            e.len()
        );
        assert!(e.contains("oops"), "{e}");
        assert_eq!(near("ab", 1, 2), "ab");
        assert_eq!(near("é", 1, 1), "é");
    }
}

#[derive(Args)]
pub(crate) struct WorkersArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `cerebelum workers`: the tenant's external workers, by queue.
pub(crate) async fn workers(cli: &Cli, args: &WorkersArgs) -> Result<ExitCode> {
    let ops = ops(cli, Needs::Store).await?;
    let workers = ops.workers().await?;
    if args.json {
        let rows: Vec<serde_json::Value> = workers
            .iter()
            .map(|w| {
                serde_json::json!({
                    "queue": w.queue, "worker_id": w.worker_id, "host": w.host,
                    "max_tasks": w.max_tasks, "tasks_in_flight": w.tasks_in_flight,
                    "last_seen_at_ms": w.last_seen_at_ms,
                })
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if workers.is_empty() {
        out!("no workers seen in the last minute on {}", ops.place());
        return Ok(ExitCode::SUCCESS);
    }
    let now = cerebelum::clock::Clock::now_ms(&cerebelum::clock::SystemClock);
    out!("QUEUE            WORKER                   HOST                 TASKS  LAST SEEN");
    for w in &workers {
        let ago = (now - w.last_seen_at_ms).max(0) as f64 / 1000.0;
        out!(
            "{:<16} {:<24} {:<20} {:>2}/{:<2}  {ago:.1} s ago",
            w.queue,
            w.worker_id,
            w.host,
            w.tasks_in_flight,
            w.max_tasks
        );
    }
    Ok(ExitCode::SUCCESS)
}
