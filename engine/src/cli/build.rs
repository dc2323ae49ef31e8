//! `cerebelum build`: a Python file or a Rust crate into a package.
//!
//! Both builds belong to their language's tools; this command finds the
//! tools, runs them with the user's terminal, and says how to install
//! what is missing.

use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

#[derive(Args)]
pub(crate) struct BuildArgs {
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
}

pub(crate) fn run(args: &BuildArgs) -> Result<ExitCode> {
    build(&args.source, args.output.as_deref(), args.python.as_deref())
}

pub(crate) fn build(
    source: &Path,
    output: Option<&Path>,
    python: Option<&Path>,
) -> Result<ExitCode> {
    if source.is_dir() {
        return build_crate(source, output);
    }
    if source.extension().is_some_and(|e| e == "py") {
        return build_python(source, output, python);
    }
    if !source.exists() {
        bail!("{}: no such file or directory", source.display());
    }
    bail!(
        "{}: expected a Python file (.py) or a Rust crate directory (with a Cargo.toml)",
        source.display()
    )
}

/// The Python to build with: the flag or `CEREBELUM_PYTHON`, else a
/// virtual environment in the current directory, else `python3`.
fn find_python(given: Option<&Path>) -> PathBuf {
    if let Some(p) = given {
        return p.to_path_buf();
    }
    let venv = Path::new(".venv").join("bin").join("python");
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

fn build_python(source: &Path, output: Option<&Path>, python: Option<&Path>) -> Result<ExitCode> {
    if !source.is_file() {
        bail!("{}: no such file", source.display());
    }
    let python = find_python(python);
    let probe = Command::new(&python)
        .args(["-c", "import cerebelum.build, componentize_py"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output();
    match probe {
        Err(e) => bail!(
            "cannot run {} ({e}): building a Python package needs Python 3.10+ with the \
             Cerebelum SDK and componentize-py; give it with --python or CEREBELUM_PYTHON",
            python.display()
        ),
        Ok(out) if !out.status.success() => bail!(
            "{} lacks the Cerebelum SDK or componentize-py ({}); install them with\n  \
             {} -m pip install './guest-sdk/python[build]'\n(or point --python / \
             CEREBELUM_PYTHON at a Python that has them)",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("import failed"),
            python.display()
        ),
        Ok(_) => {}
    }
    let mut command = Command::new(&python);
    command.args(["-m", "cerebelum", "build"]).arg(source);
    if let Some(out) = output {
        command.arg("-o").arg(out);
    }
    let status = command
        .status()
        .with_context(|| format!("running {}", python.display()))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn build_crate(dir: &Path, output: Option<&Path>) -> Result<ExitCode> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} is a directory without a Cargo.toml; give a Rust crate or a Python file",
            dir.display()
        );
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(&manifest)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !built.status.success() {
        bail!(
            "cargo could not build {} for wasm32-wasip2 (is the target installed? \
             `rustup target add wasm32-wasip2`)",
            dir.display()
        );
    }
    // The component is the .wasm artifact of the crate's cdylib.
    let wasm = String::from_utf8_lossy(&built.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            m["filenames"].as_array().and_then(|files| {
                files
                    .iter()
                    .filter_map(|f| f.as_str())
                    .find(|f| f.ends_with(".wasm"))
                    .map(PathBuf::from)
            })
        })
        .next_back()
        .with_context(|| {
            format!(
                "cargo built no .wasm for {}: is its crate-type [\"cdylib\"]?",
                dir.display()
            )
        })?;
    let out = match output {
        Some(o) => o.to_path_buf(),
        None => PathBuf::from(wasm.file_name().context("artifact has no file name")?),
    };
    std::fs::copy(&wasm, &out)
        .with_context(|| format!("copying {} to {}", wasm.display(), out.display()))?;
    eprintln!("built {}", out.display());
    Ok(ExitCode::SUCCESS)
}
