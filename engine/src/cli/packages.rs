//! The commands on packages: upload, packages.

use super::Cli;
use super::connect::{Needs, ops};
use super::flags::EngineArgs;
use anyhow::{Context, Result};
use cerebelum::api::Client;
use cerebelum::model::{PackageCheck, PackageRecord};
use clap::Args;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub(crate) struct UploadArgs {
    /// The package (.wasm component).
    package: PathBuf,
    /// Package name (default: the file name without .wasm).
    #[arg(long)]
    name: Option<String>,
    /// Before storing it, replay every open execution of the package's
    /// earlier versions against it (without side effects) and print how
    /// many would go on unchanged and where the others would diverge.
    #[arg(long)]
    check: bool,
    /// With --check: replay only N of the open executions, spread from
    /// the oldest to the newest.
    #[arg(long, value_name = "N", requires = "check")]
    sample: Option<i64>,
    /// Check (as --check), and refuse the upload, storing nothing, if any
    /// open execution would diverge or could not be checked.
    #[arg(long)]
    require_compatible: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
pub(crate) struct PackagesArgs {
    /// Describe only this package.
    name: Option<String>,
    /// With NAME: this version (default: the newest).
    #[arg(long)]
    version: Option<i64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
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

/// Uploads the package file at `path` (named `name`, or after the file).
pub(crate) async fn upload_file(
    ops: &Client,
    path: &Path,
    name: Option<String>,
) -> Result<PackageRecord> {
    Ok(upload_checked(ops, path, name, None).await?.0)
}

/// How an upload checks the open executions first: a sample size, and
/// whether to refuse the upload if any would diverge.
struct Check {
    sample: Option<i64>,
    require_compatible: bool,
}

/// Uploads the package file at `path`, after replaying the open
/// executions of its earlier versions against it when `check` says so.
async fn upload_checked(
    ops: &Client,
    path: &Path,
    name: Option<String>,
    check: Option<Check>,
) -> Result<(PackageRecord, Option<PackageCheck>)> {
    let name = package_name(path, name)?;
    cerebelum::executor::check_package_name(&name)?;
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read package file {}", path.display()))?;
    // A large package (a Python one is ~40 MiB) takes seconds to send,
    // validate and compile: a spinner with the time so far says it is
    // working, on a terminal.
    let spinner = (bytes.len() > 1 << 20 && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_message(format!(
            "uploading {} ({:.1} MiB) to {}: sending, validating, compiling{}…",
            path.display(),
            bytes.len() as f64 / (1 << 20) as f64,
            ops.place(),
            if check.is_some() {
                ", replaying the open executions"
            } else {
                ""
            }
        ));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let uploaded = match check {
        None => ops
            .upload(&name, bytes)
            .await
            .map(|p| (p, None))
            .with_context(|| format!("{} is not a usable package", path.display())),
        Some(c) => ops
            .upload_checked(&name, bytes, c.sample, c.require_compatible)
            .await
            .map(|(p, c)| (p, Some(c)))
            .with_context(|| format!("{} was not uploaded", path.display())),
    };
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    uploaded
}

fn summary(p: &PackageRecord) -> String {
    let workflows: Vec<&str> = p.info.workflows.iter().map(|w| w.name.as_str()).collect();
    let steps: Vec<String> = p
        .info
        .steps
        .iter()
        .map(|s| match &s.options.worker {
            Some(queue) => format!("{} (on worker queue {queue})", s.name),
            None => s.name.clone(),
        })
        .collect();
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

pub(crate) async fn upload(cli: &Cli, args: &UploadArgs) -> Result<ExitCode> {
    let ops = ops(cli, Needs::Engine(&args.engine)).await?;
    let check = (args.check || args.require_compatible).then_some(Check {
        sample: args.sample,
        require_compatible: args.require_compatible,
    });
    let (record, check) = upload_checked(&ops, &args.package, args.name.clone(), check).await?;
    if let Some(check) = &check {
        out!("{}", check_text(check));
    }
    out!(
        "{} v{} sha256:{}",
        record.name,
        record.version,
        record.sha256
    );
    Ok(ExitCode::SUCCESS)
}

/// Most incompatible executions a check prints one by one.
const LISTED: usize = 20;

/// A package check as the CLI prints it: the summary, then each execution
/// that would diverge or could not be checked (the first few).
fn check_text(check: &PackageCheck) -> String {
    let mut text = check.summary();
    for (what, list) in [
        ("diverges", &check.diverging),
        ("not checked", &check.unchecked),
    ] {
        for e in list.iter().take(LISTED) {
            text += &format!(
                "\n  {} (v{}, {} entries) {what}: {}",
                e.id, e.version, e.entries, e.message
            );
        }
        if list.len() > LISTED {
            text += &format!("\n  … and {} more", list.len() - LISTED);
        }
    }
    text
}

pub(crate) async fn list(cli: &Cli, args: &PackagesArgs) -> Result<ExitCode> {
    let ops = ops(cli, Needs::Store).await?;
    let packages = match &args.name {
        Some(name) => vec![ops.describe(name, args.version).await?],
        None => ops.packages().await?,
    };
    if args.json {
        out!("{}", serde_json::to_string_pretty(&packages)?);
    } else if packages.is_empty() {
        out!("no packages in {}", ops.place());
    } else {
        for p in &packages {
            out!("{}", summary(p));
        }
    }
    Ok(ExitCode::SUCCESS)
}
