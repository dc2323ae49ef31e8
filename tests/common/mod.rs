//! Shared harness of the end-to-end tests and the benchmark: builds the
//! guest packages once (cargo's lock makes concurrent builds wait), runs the
//! real `cerebelum` binary on temporary SQLite files, starts and kills
//! `cerebelum serve` processes.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The compiled-component cache shared by every test and benchmark run.
pub fn cache_dir() -> PathBuf {
    root().join("target").join("cerebelum-cache")
}

/// Builds the example and test guests for wasm32-wasip2 (once per process)
/// and returns the directory holding `<name>.wasm`.
pub fn guest_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target_dir = root().join("target").join("guests");
        let status = Command::new(env!("CARGO"))
            .current_dir(root())
            .args([
                "build",
                "--quiet",
                "--target",
                "wasm32-wasip2",
                "--profile",
                "guest",
                "-p",
                "hello",
                "-p",
                "deploy",
                "-p",
                "testkit",
                "-p",
                "not-a-package",
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .status()
            .expect("running cargo to build the guests");
        assert!(status.success(), "building the guest packages failed");
        target_dir.join("wasm32-wasip2").join("guest")
    })
}

/// Path of a guest package built by [`guest_dir`].
pub fn guest(name: &str) -> PathBuf {
    let path = guest_dir().join(format!("{name}.wasm"));
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A path as a command-line argument.
pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `engine`'s scheduler on a task until the returned sender fires.
pub fn serve_in_process(
    engine: &cerebelum::Engine,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<cerebelum::Result<()>>,
) {
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let engine = engine.clone();
    let server = tokio::spawn(async move {
        engine
            .serve(async {
                let _ = stop_rx.await;
            })
            .await
    });
    (stop, server)
}

/// The `cerebelum` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cerebelum")
}

/// A temporary directory holding one database.
pub struct Db {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Db {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cerebelum.db");
        Self { dir, path }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.arg("--db").arg(&self.path).args(args);
        c.env("CEREBELUM_CACHE_DIR", cache_dir());
        c.env("CEREBELUM_LOG", "warn");
        c
    }

    /// Runs a CLI command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running cerebelum")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cerebelum {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a CLI command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "cerebelum {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Starts `workflow` of the package file `package`; returns the id.
    pub fn start(&self, package: &Path, workflow: &str, input: &str) -> String {
        self.ok(&[
            "start",
            package.to_str().unwrap(),
            workflow,
            "--input",
            input,
        ])
        .trim()
        .to_owned()
    }

    pub fn status(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["status", id, "--json"])).unwrap()
    }

    pub fn journal(&self, id: &str) -> Vec<Value> {
        serde_json::from_str(&self.ok(&["journal", id, "--json"])).unwrap()
    }

    /// Waits until `id` has status `status` (panics after `timeout`).
    pub fn wait_status(&self, id: &str, status: &str, timeout: Duration) -> Value {
        self.wait_for(id, timeout, |s, _| s["status"] == status)
    }

    /// Waits until `pred(status, journal)` holds; returns the status.
    pub fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value, &[Value]) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id);
            let journal = self.journal(id);
            if pred(&status, &journal) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {id}: status {status}\njournal: {}",
                serde_json::to_string_pretty(&journal).unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `cerebelum serve` on this database.
    pub fn serve(&self, extra: &[&str]) -> Server {
        let mut args = vec!["serve", "--lease-ms", "1000", "--tick-ms", "20"];
        args.extend_from_slice(extra);
        let child = self
            .command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning cerebelum serve");
        Server { child }
    }
}

/// A `cerebelum serve` process; killed when dropped.
pub struct Server {
    child: Child,
}

impl Server {
    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Entries of `kind` in a journal.
pub fn entries<'a>(journal: &'a [Value], kind: &str) -> Vec<&'a Value> {
    journal.iter().filter(|e| e["kind"] == kind).collect()
}

/// The seq of the n-th (0-based) workflow call of `kind` to `step`.
pub fn step_call_seq(journal: &[Value], step: &str, n: usize) -> i64 {
    journal
        .iter()
        .filter(|e| e["kind"] == "call-step" && e["payload"]["args"]["step"] == step)
        .nth(n)
        .unwrap_or_else(|| panic!("no call {n} of step {step}"))["seq"]
        .as_i64()
        .unwrap()
}

/// `attempt` entries of the call at `seq`.
pub fn attempts(journal: &[Value], seq: i64) -> usize {
    journal
        .iter()
        .filter(|e| e["kind"] == "attempt" && e["ref_seq"] == seq)
        .count()
}

/// `result` entries of the call at `seq`.
pub fn results(journal: &[Value], seq: i64) -> Vec<&Value> {
    journal
        .iter()
        .filter(|e| e["kind"] == "result" && e["ref_seq"] == seq)
        .collect()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
