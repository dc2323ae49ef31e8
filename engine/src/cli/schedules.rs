//! `cerebelum schedule`: a workflow started at the due times of a cron
//! expression, on the local database or a server (`--server`). A server
//! (`cerebelum serve`) fires them; without one running, due times wait
//! (and are caught up, within `--catch-up`, when one starts).

use super::Cli;
use super::connect::{Needs, ops};
use super::flags::EngineArgs;
use anyhow::Result;
use cerebelum::api::schedules::{MAX_CATCH_UP, NewSchedule};
use cerebelum::model::{Overlap, ScheduleRecord};
use clap::{Args, Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Create a schedule: WORKFLOW of PACKAGE started at each due time of
    /// --cron (e.g. `--cron '0 3 * * *'`: 03:00 every day), in --timezone.
    /// Each due time starts at most one execution, across restarts and
    /// servers.
    Create(CreateArgs),
    /// List the schedules: expression, next due time, last execution,
    /// counts, last error.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Pause a schedule: its due times pass without firing.
    Pause { name: String },
    /// Resume a schedule: it is next due at its first due time from now
    /// (what passed while paused is not caught up).
    Resume { name: String },
    /// Delete a schedule (its executions stay).
    Delete { name: String },
    /// Start the schedule's workflow now, outside its due times; prints
    /// the execution id.
    TriggerNow {
        name: String,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

/// `--overlap`.
#[derive(Clone, Copy, ValueEnum)]
enum OverlapArg {
    /// Start nothing while the previous execution is open.
    Skip,
    /// Start one once the previous execution ended.
    BufferOne,
    /// Start regardless.
    Allow,
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// Letters, digits, '-', '_' and '.'.
    name: String,
    /// The package (name of an uploaded package).
    package: String,
    /// The workflow to start.
    workflow: String,
    /// Five fields (minute hour day-of-month month day-of-week), or six
    /// with seconds first; `*`, lists, ranges and steps (`*/15`).
    #[arg(long)]
    cron: String,
    /// The time zone of the expression (IANA name).
    #[arg(long, default_value = "UTC")]
    timezone: String,
    /// Each execution's input, JSON (`@FILE`: read from FILE).
    #[arg(long, default_value = "{}", value_parser = super::flags::json_text)]
    input: String,
    /// The package version (default: the newest at each firing).
    #[arg(long)]
    version: Option<i64>,
    /// What a due time does while the previous execution is still open.
    #[arg(long, value_enum, default_value = "skip")]
    overlap: OverlapArg,
    /// Of the due times missed while no server ran, fire the latest N
    /// (with --overlap allow; otherwise one).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i64).range(1..=MAX_CATCH_UP))]
    catch_up: i64,
}

fn when(ms: i64) -> String {
    format!("{} UTC", cerebelum::console::html::utc(ms))
}

fn show(s: &ScheduleRecord) -> String {
    let version = s.version.map(|v| format!(" v{v}")).unwrap_or_default();
    let mut text = format!(
        "{}  '{}' ({})  {}{} {}  overlap {}  {}\n  next due {}  fired {}  skipped {}",
        s.name,
        s.cron,
        s.timezone,
        s.package,
        version,
        s.workflow,
        s.overlap,
        if s.paused { "PAUSED" } else { "active" },
        when(s.next_due_ms),
        s.fired,
        s.skipped,
    );
    if let (Some(due), Some(id)) = (s.last_due_ms, &s.last_execution) {
        text.push_str(&format!("\n  last: {id} (due {})", when(due)));
    }
    if let Some(error) = &s.last_error {
        text.push_str(&format!("\n  last error: {error}"));
    }
    text
}

pub(crate) async fn run(cli: &Cli, command: &ScheduleCommand) -> Result<ExitCode> {
    match command {
        ScheduleCommand::Create(args) => {
            let ops = ops(cli, Needs::Store).await?;
            let overlap = match args.overlap {
                OverlapArg::Skip => Overlap::Skip,
                OverlapArg::BufferOne => Overlap::BufferOne,
                OverlapArg::Allow => Overlap::Allow,
            };
            let created = ops
                .create_schedule(NewSchedule {
                    name: args.name.clone(),
                    cron: args.cron.clone(),
                    timezone: args.timezone.clone(),
                    package: args.package.clone(),
                    version: args.version,
                    workflow: args.workflow.clone(),
                    input: args.input.clone(),
                    overlap,
                    catch_up: args.catch_up,
                })
                .await?;
            out!("created schedule {}", show(&created));
            if cli.server.is_none() {
                eprintln!(
                    "note: `cerebelum serve` on this database fires it; nothing does until one runs"
                );
            }
        }
        ScheduleCommand::List { json } => {
            let ops = ops(cli, Needs::Store).await?;
            let schedules = ops.schedules().await?;
            for s in &schedules {
                if *json {
                    out!("{}", serde_json::to_string(s)?);
                } else {
                    out!("{}", show(s));
                }
            }
            if schedules.is_empty() {
                eprintln!("no schedules; create one with `cerebelum schedule create`");
            }
        }
        ScheduleCommand::Pause { name } | ScheduleCommand::Resume { name } => {
            let paused = matches!(command, ScheduleCommand::Pause { .. });
            let ops = ops(cli, Needs::Store).await?;
            let changed = ops.pause_schedule(name, paused).await?;
            out!("{}", show(&changed));
        }
        ScheduleCommand::Delete { name } => {
            let ops = ops(cli, Needs::Store).await?;
            ops.delete_schedule(name).await?;
            out!("deleted schedule {name}");
        }
        ScheduleCommand::TriggerNow { name, engine } => {
            let ops = ops(cli, Needs::Engine(engine)).await?;
            let (execution, _) = ops.trigger_schedule(name).await?;
            out!("{}", execution.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}
