//! `cerebelum trigger`: HTTP triggers, on the local database or a server
//! (`--server`). A server calls them at `POST /t/<tenant>/<name>`.

use super::Cli;
use super::connect::{Needs, ops};
use anyhow::Result;
use cerebelum::api::triggers::{NewTrigger, path_of};
use cerebelum::model::TriggerRecord;
use clap::{Args, Subcommand};
use std::process::ExitCode;

#[derive(Subcommand)]
pub(crate) enum TriggerCommand {
    /// Create a trigger: `POST /t/<tenant>/NAME` on the server starts
    /// WORKFLOW of PACKAGE with the request's JSON body as input.
    /// Requests are signed with --secret-hmac (GitHub's
    /// X-Hub-Signature-256), or else carry the token this prints once
    /// (`Authorization: Bearer <token>`). A delivery id (Idempotency-Key,
    /// X-GitHub-Delivery or X-Delivery-Id) makes a redelivery start
    /// nothing new.
    Create(CreateArgs),
    /// List the triggers: path, workflow, how requests authenticate.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Delete a trigger (its executions stay).
    Delete { name: String },
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// Letters, digits, '-', '_' and '.'.
    name: String,
    /// The package (name of an uploaded package).
    package: String,
    /// The workflow to start.
    workflow: String,
    /// Requests are signed with the value of this secret of the tenant
    /// (HMAC-SHA256 of the body; `admin secret set TENANT NAME` sets it).
    #[arg(long, value_name = "SECRET")]
    secret_hmac: Option<String>,
    /// The package version (default: the newest at each request).
    #[arg(long)]
    version: Option<i64>,
}

fn show(t: &TriggerRecord) -> String {
    let auth = match &t.hmac_secret {
        Some(secret) => format!("signed with secret '{secret}' (X-Hub-Signature-256)"),
        None => "token (Authorization: Bearer)".to_owned(),
    };
    let version = t.version.map(|v| format!(" v{v}")).unwrap_or_default();
    format!(
        "{}  POST {}  -> {}{} {}  {auth}",
        t.name,
        path_of(t),
        t.package,
        version,
        t.workflow
    )
}

pub(crate) async fn run(cli: &Cli, command: &TriggerCommand) -> Result<ExitCode> {
    let ops = ops(cli, Needs::Store).await?;
    match command {
        TriggerCommand::Create(args) => {
            let (trigger, token) = ops
                .create_trigger(NewTrigger {
                    name: args.name.clone(),
                    package: args.package.clone(),
                    version: args.version,
                    workflow: args.workflow.clone(),
                    hmac_secret: args.secret_hmac.clone(),
                })
                .await?;
            eprintln!("created trigger {}", show(&trigger));
            if let Some(token) = token {
                eprintln!("its token, shown only this once:");
                out!("{token}");
            }
        }
        TriggerCommand::List { json } => {
            let triggers = ops.triggers().await?;
            for t in &triggers {
                if *json {
                    out!("{}", serde_json::to_string(t)?);
                } else {
                    out!("{}", show(t));
                }
            }
            if triggers.is_empty() {
                eprintln!("no triggers; create one with `cerebelum trigger create`");
            }
        }
        TriggerCommand::Delete { name } => {
            ops.delete_trigger(name).await?;
            out!("deleted trigger {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
