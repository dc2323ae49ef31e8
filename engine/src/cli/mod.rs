//! The commands, one module per group: `serve` (run, serve), `packages`
//! (upload, packages), `executions` (start, status, list, watch, journal, replay, upgrade,
//! approve, reject, cancel, retry), `admin` and `build`. Each defines its
//! flags and its work; `flags` holds the flags several share, `connect`
//! where a command's work goes (a [`cerebelum::api::Client`] of the
//! local database or a server), `watch` how an execution is followed.

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
mod connect;
mod executions;
mod flags;
mod packages;
mod schedules;
mod serve;
mod triggers;
mod watch;

use anyhow::Result;
use cerebelum::model::{ExecutionRecord, Status};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The commands grouped by what they are for, with examples: shown after
/// clap's list (a test checks that it names every command).
const BY_TASK: &str = "\
Commands by task:
  Develop:     dev, build, run
  Packages:    upload, packages
  Executions:  start, status, list, watch, journal, replay, upgrade
  Decide:      signal, approve, reject, cancel, pause, resume, retry
  Automate:    schedule, trigger
  Operate:     serve, workers, admin, audit, completions

Examples:
  cerebelum dev app.py                       a local server (console on, no sign-in)
                                             that rebuilds app.py when it changes
  cerebelum build app.py -o app.wasm         a package from a Python file (or a crate)
  cerebelum run app.wasm deploy --input '{\"name\": \"web-1\"}'
                                             run once here, showing its progress
  cerebelum upload app.wasm --name app       then, with `cerebelum serve` running:
  cerebelum start app deploy --input @input.json --wait
  cerebelum watch EXECUTION_ID
  cerebelum approve EXECUTION_ID review --payload '{}'

`cerebelum COMMAND --help` explains each command.";

/// A durable workflow engine for WebAssembly components.
///
/// Build a package (a .wasm component exporting cerebelum:workflow), then run
/// it once with `cerebelum run`, or keep `cerebelum serve` running and drive
/// executions with upload / start / status / watch / approve / cancel / retry.
///
/// Without --server, commands work directly on the database (--db) as the
/// tenant `default`. With --server (a `cerebelum serve` address) and
/// --api-key, they go through its gRPC API as the key's tenant (over TLS
/// for https://). `cerebelum admin` creates tenants and keys on the
/// server's database, or with --server and an operator key remotely.
#[derive(Parser)]
#[command(name = "cerebelum", version, about, long_about, after_help = BY_TASK)]
pub(crate) struct Cli {
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

    /// The master key that seals tenants' secrets at rest (a file of 64 hex
    /// digits; `cerebelum admin master-key create FILE` makes one). Default
    /// with a SQLite database: `<database file>.master-key`, created by the
    /// first `admin secret set`. With PostgreSQL it must be given to set or
    /// use secrets. Keep it away from the database's backups.
    #[arg(
        long,
        global = true,
        env = "CEREBELUM_MASTER_KEY_FILE",
        value_name = "FILE"
    )]
    master_key_file: Option<PathBuf>,

    /// For an https:// --server whose certificate is signed by a private
    /// CA: that CA's certificate (PEM). Default: the public web roots.
    #[arg(long, global = true, env = "CEREBELUM_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// A client certificate (PEM) for a server that requires one
    /// (`serve --tls-client-ca`); with --client-key.
    #[arg(
        long,
        global = true,
        env = "CEREBELUM_CLIENT_CERT",
        value_name = "FILE"
    )]
    client_cert: Option<PathBuf>,

    /// The private key of --client-cert (PEM).
    #[arg(long, global = true, env = "CEREBELUM_CLIENT_KEY", value_name = "FILE")]
    client_key: Option<PathBuf>,

    /// The API key for --server (from `cerebelum admin key create TENANT`).
    #[arg(long, global = true, env = "CEREBELUM_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// Log filter (tracing syntax), e.g. `info` or `cerebelum=debug`.
    #[arg(long, global = true, env = "CEREBELUM_LOG", default_value = "warn")]
    pub(crate) log: String,

    /// How log lines are written (to stderr): `text` for people, `json`
    /// for log shippers (one object per line, with the span's fields, e.g.
    /// the execution id).
    #[arg(
        long,
        global = true,
        env = "CEREBELUM_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub(crate) log_format: LogFormat,

    /// Send spans (an execution's drive loop, each invocation, each step
    /// attempt, with the execution id, step and attempt as attributes) to
    /// this OpenTelemetry collector by OTLP over gRPC, e.g.
    /// http://127.0.0.1:4317. Off by default; independent of --log.
    #[arg(
        long,
        global = true,
        env = "CEREBELUM_OTLP_ENDPOINT",
        value_name = "URL"
    )]
    pub(crate) otlp_endpoint: Option<String>,

    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// Parses the command line. An explicit `--db` wins over a server
    /// named only by the environment (`CEREBELUM_SERVER`): what the user
    /// typed now is what they asked for.
    pub(crate) fn from_command_line() -> Self {
        use clap::parser::ValueSource;
        use clap::{CommandFactory, FromArgMatches};
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        // A global flag may be given after the subcommand: look at every level.
        let given_on_command_line = |id: &str| {
            let mut level = Some(&matches);
            let mut given = false;
            while let Some(m) = level {
                given |= m.value_source(id) == Some(ValueSource::CommandLine);
                level = m.subcommand().map(|(_, sub)| sub);
            }
            given
        };
        if given_on_command_line("db") && !given_on_command_line("server") {
            cli.server = None;
        }
        cli
    }
}

/// See `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Upload a package, start a workflow and drive it here until it ends,
    /// showing its progress. Exits non-zero if it fails.
    Run(serve::RunArgs),
    /// Run the engine and its gRPC API (cerebelum.v1, with health and
    /// reflection): drive executions, wake timers, resurrect after a crash.
    Serve(serve::ServeArgs),
    /// A development server: `serve` on loopback with the embedded
    /// database, a new API key of tenant `default` printed as a ready
    /// `export CEREBELUM_SERVER=… CEREBELUM_API_KEY=…` line, and the console
    /// open without sign-in from this machine. Refuses other addresses.
    Dev(serve::DevArgs),
    /// Store a package (validated) and print its name and version.
    Upload(packages::UploadArgs),
    /// List uploaded packages with their workflows and steps, or describe one.
    Packages(packages::PackagesArgs),
    /// Start an execution and print its id; `cerebelum serve` drives it.
    Start(executions::StartArgs),
    /// Show an execution.
    Status(executions::StatusArgs),
    /// List executions, newest first.
    List(executions::ListArgs),
    /// Follow an execution: progress bar and journal events, until it ends.
    /// With --server, survives a server restart: it reconnects and goes on
    /// after the last event it printed.
    Watch(executions::WatchArgs),
    /// Print an execution's journal.
    Journal(executions::JournalArgs),
    /// Replay an execution against other code (a new build of its package,
    /// another version) without side effects: whether that code makes the
    /// calls its journal recorded, or where it first differs. Steps,
    /// sleeps, approvals and HTTP are answered from the journal; nothing
    /// runs live and nothing is stored. Exit status 1 if it diverges.
    /// --local replays here, printing the journal entry by entry; for a
    /// Python file under a debugger: `python -m cerebelum replay ID FILE.py`.
    Replay(executions::ReplayArgs),
    /// Move hibernated executions to a newer version of their package:
    /// each whose journal replays cleanly against that version's code goes
    /// on there (an `upgraded` journal entry, audited); the others stay,
    /// each with why. Exit status 1 if any stayed.
    Upgrade(executions::UpgradeArgs),
    /// Send a signal to an execution: stored at once, in order, and taken
    /// by the workflow's next `await-signal` of that name (buffered until
    /// then).
    Signal(executions::SignalArgs),
    /// Approve what an execution waits for; the payload reaches the workflow.
    Approve(executions::ApproveArgs),
    /// Reject what an execution waits for.
    Reject(executions::RejectArgs),
    /// Cancel an execution: its next suspension point returns a
    /// cancellation error to the workflow, which may compensate.
    Cancel(executions::IdArgs),
    /// Pause an execution: it runs no new step attempt (a running one stops
    /// before its next) until resumed; its timers pass and its signals are
    /// kept meanwhile.
    Pause(executions::IdArgs),
    /// Resume a paused execution: what came due meanwhile runs at once.
    Resume(executions::IdArgs),
    /// Retry a failed or cancelled execution: completed steps are kept,
    /// the failed call runs again.
    Retry(executions::IdArgs),
    /// List the external workers seen in the last minute: queue, id, host,
    /// tasks in flight, last heartbeat.
    Workers(executions::WorkersArgs),
    /// Tenants, API keys and secrets: on the database (--db) directly, or
    /// with --server through the server's admin API as the operator of
    /// --api-key (an operator key: `admin key create --operator`, made on
    /// the database, bootstraps it).
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// The audit log, newest first: who (key id, or cli:USER) approved,
    /// rejected, cancelled or retried an execution, or changed a tenant, a
    /// key or a secret, when and from where. On the database (--db), or
    /// with --server and an operator key.
    Audit(admin::AuditArgs),
    /// Schedules: a workflow started at the due times of a cron expression
    /// in a time zone (create, list, pause, resume, delete, trigger-now).
    Schedule {
        #[command(subcommand)]
        command: schedules::ScheduleCommand,
    },
    /// HTTP triggers: `POST /t/<tenant>/<name>` on the server starts a
    /// workflow with the request's JSON body (create, list, delete).
    Trigger {
        #[command(subcommand)]
        command: triggers::TriggerCommand,
    },
    /// Build a package (.wasm) from a Python file or a Rust crate.
    ///
    /// A Python file (its @workflow and @step functions) is built with
    /// componentize-py by `PYTHON -m cerebelum build`: that Python needs the
    /// SDK and componentize-py (`pip install ./guest-sdk/python[build]`). A
    /// directory with a Cargo.toml is built with `cargo build --release
    /// --target wasm32-wasip2`.
    Build(build::BuildArgs),
    /// Print a completion script for a shell, e.g. for bash:
    /// `cerebelum completions bash > ~/.local/share/bash-completion/completions/cerebelum`
    /// (zsh: a file `_cerebelum` in a directory of `$fpath`; fish:
    /// `~/.config/fish/completions/cerebelum.fish`).
    Completions(CompletionsArgs),
}

#[derive(clap::Args)]
pub(crate) struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: clap_complete::Shell,
}

/// Runs the command.
pub(crate) async fn dispatch(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Completions(args) => {
            use clap::CommandFactory as _;
            use std::io::Write as _;
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "cerebelum", &mut script);
            // A closed stdout (`| head`) is not an error of the command.
            let _ = std::io::stdout().write_all(&script);
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => serve::run(&cli, args).await,
        Command::Serve(args) => serve::serve(&cli, args).await,
        Command::Dev(args) => serve::dev(&cli, args).await,
        Command::Upload(args) => packages::upload(&cli, args).await,
        Command::Packages(args) => packages::list(&cli, args).await,
        Command::Start(args) => executions::start(&cli, args).await,
        Command::Status(args) => executions::status(&cli, args).await,
        Command::List(args) => executions::list(&cli, args).await,
        Command::Watch(args) => executions::follow(&cli, args).await,
        Command::Journal(args) => executions::journal(&cli, args).await,
        Command::Replay(args) => executions::replay(&cli, args).await,
        Command::Upgrade(args) => executions::upgrade(&cli, args).await,
        Command::Signal(args) => executions::signal(&cli, args).await,
        Command::Approve(args) => executions::approve(&cli, args).await,
        Command::Reject(args) => executions::reject(&cli, args).await,
        Command::Cancel(args) => executions::cancel(&cli, args).await,
        Command::Retry(args) => executions::retry(&cli, args).await,
        Command::Pause(args) => executions::pause(&cli, args, true).await,
        Command::Resume(args) => executions::pause(&cli, args, false).await,
        Command::Workers(args) => executions::workers(&cli, args).await,
        Command::Admin { command } => admin::run(&cli, command).await,
        Command::Audit(args) => admin::audit(&cli, args).await,
        Command::Schedule { command } => schedules::run(&cli, command).await,
        Command::Trigger { command } => triggers::run(&cli, command).await,
        Command::Build(args) => build::run(args),
    }
}

/// Prints a completed execution's result (exit 0), or how it ended (exit 1).
fn print_outcome(record: &ExecutionRecord) -> ExitCode {
    match record.status {
        Status::Completed => {
            use std::io::Write as _;
            let result = record.result.as_ref().map(|r| r.to_string());
            // A closed stdout (`| head -0`) is not a failure of the execution.
            let _ = writeln!(std::io::stdout(), "{}", result.as_deref().unwrap_or("null"));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{}", ended_line(record));
            ExitCode::FAILURE
        }
    }
}

/// How an execution that did not complete ended, for people: `execution ID
/// failed: KIND: MESSAGE`, then its error's details (a traceback as it was
/// printed, other details as indented JSON).
fn ended_line(record: &ExecutionRecord) -> String {
    let mut line = format!("execution {} {}", record.id, record.status);
    let Some(error) = &record.error else {
        return line;
    };
    line.push_str(&format!(": {}: {}", error.kind, error.message));
    match &error.details {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(text)) => {
            line.push('\n');
            line.push_str(text.trim_end());
        }
        Some(details) => {
            line.push('\n');
            line.push_str(&serde_json::to_string_pretty(details).unwrap_or_default());
        }
    }
    line
}

/// The console page of execution `id` on the server the CLI talks to
/// (none without --server).
fn console_url(cli: &Cli, id: &str) -> Option<String> {
    let server = cerebelum::api::client::ServerUrl::parse(cli.server.as_deref()?).ok()?;
    Some(format!(
        "{}/executions/{id}",
        server.url.trim_end_matches('/')
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_help_groups_every_command() {
        let groups: Vec<&str> = BY_TASK
            .lines()
            .skip(1)
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .flat_map(|(_, names)| names.split(','))
            .map(str::trim)
            .collect();
        let commands: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        for command in &commands {
            assert!(
                groups.contains(&command.as_str()),
                "`{command}` is in no group of BY_TASK"
            );
        }
        for named in &groups {
            assert!(
                commands.iter().any(|c| c == named),
                "BY_TASK names `{named}`, which is no command"
            );
        }
    }
}
