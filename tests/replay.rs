//! `cerebelum replay` (issue 36): an execution's journal replayed against
//! other code without side effects, through a real `cerebelum serve` and
//! on the database file, with Python packages built by `cerebelum build`
//! and the Rust test kit.

use cerebelum_harness as common;

use common::{Db, Remote, free_port, kit, path, python_guest};
use serde_json::{Value, json};
use std::time::Duration;

/// Compiling a Python component takes seconds (once: it is cached).
const LONG: Duration = Duration::from_secs(180);
const V1: &str = "tests/guests/python/pyreplay_v1.py";
const V2: &str = "tests/guests/python/pyreplay_v2.py";
const V3: &str = "tests/guests/python/pyreplay_v3.py";

common::on_both_backends!(
    replay_reports_compatible_code_and_where_other_code_diverges,
    replay_runs_nothing_live_and_stores_nothing,
);

/// `cerebelum replay ... --json` through the CLI `cli`; its exit status
/// and report.
fn replay(cli: &Remote, args: &[&str]) -> (bool, Value) {
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = cli.run(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "replay {args:?}: {e}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// A server with tenant `a` and versions 1, 2 and 3 of `pyreplay`; one
/// execution of version 1 asleep in its middle step and one completed.
fn three_versions(db: &Db, port: u16) -> (common::Server, Remote, String, String) {
    let key = db.tenant("a", &[]);
    let server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    for file in [V1, V2, V3] {
        cli.ok(&["upload", path(&python_guest(file)), "--name", "pyreplay"]);
    }
    let start = |sleep_ms: u64| {
        let input = json!({"sleep_ms": sleep_ms}).to_string();
        let args = [
            "start",
            "pyreplay",
            "pyreplay",
            "--version",
            "1",
            "--input",
            &input,
        ];
        cli.ok(&args).trim().to_owned()
    };
    let asleep = start(3_600_000);
    let done = start(0);
    let ended = cli.wait_ended(&done, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    let deadline = std::time::Instant::now() + LONG;
    while cli.status(&asleep)["status"] != "waiting" {
        assert!(
            std::time::Instant::now() < deadline,
            "{asleep} did not hibernate"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (server, cli, asleep, done)
}

/// Version 2 (a step's body changed) is compatible with both executions;
/// version 3 (a step inserted before the last) diverges for the one that
/// got past that point, at the entry of its `last` call, and not for the
/// one still asleep before it. Another tenant's execution is not found.
fn replay_reports_compatible_code_and_where_other_code_diverges(db: Db) {
    let port = free_port();
    let (_server, cli, asleep, done) = three_versions(&db, port);
    let entries = |id: &str| cli.journal(id).len() as i64;

    let (ok, report) = replay(&cli, &[&done, "--version", "2"]);
    assert!(ok, "{report}");
    assert_eq!(report["compatible"], true, "{report}");
    assert_eq!(report["entries"], entries(&done), "{report}");
    assert_eq!(report["ended"], "completed", "{report}");
    assert_eq!(report["version"], 2, "{report}");

    let (ok, report) = replay(&cli, &[&asleep, "--version", "2"]);
    assert!(ok, "{report}");
    assert_eq!(report["compatible"], true, "{report}");
    assert_eq!(report["ended"], "waiting", "{report}");

    // Version 3 as a file (not uploaded) and as the stored version.
    let v3 = python_guest(V3);
    for target in [["--component", path(&v3)], ["--version", "3"]] {
        let (ok, report) = replay(&cli, &[&done, target[0], target[1]]);
        assert!(!ok, "a divergence exits 1: {report}");
        assert_eq!(report["compatible"], false, "{report}");
        let journal = cli.journal(&done);
        let last_call = journal
            .iter()
            .find(|e| e["kind"] == "call-step" && e["payload"]["args"]["step"] == "last")
            .expect("the journal has the call of `last`");
        assert_eq!(report["diverged_at"], last_call["seq"], "{report}");
        let divergence = report["divergence"].as_str().unwrap();
        assert!(
            divergence.contains("last") && divergence.contains("audit"),
            "names what was recorded and what the code called: {divergence}"
        );
        let (ok, report) = replay(&cli, &[&asleep, target[0], target[1]]);
        assert!(ok, "still before the insertion: {report}");
        assert_eq!(report["ended"], "waiting", "{report}");
    }

    // The words a person reads.
    let out = cli.run(&["replay", &done, "--version", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("{done} diverges from pyreplay v3 at entry ")),
        "{text}"
    );
    let text = cli.ok(&["replay", &done, "--version", "2"]);
    let n = entries(&done);
    assert!(
        text.contains(&format!(
            "is compatible with pyreplay v2 through entry {n} of {n}"
        )),
        "{text}"
    );

    // Tenant-scoped: another tenant's key does not find it.
    let other = Remote::new(port, &db.tenant("b", &[]));
    let refused = other.run(&["replay", &done]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("no execution with id '{done}'")),
        "{stderr}"
    );
    // A version that does not exist, and a component without the workflow.
    let missing = cli.run(&["replay", &done, "--version", "9"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("pyreplay") && stderr.contains('9'),
        "{stderr}"
    );
    let hello = common::guest("hello");
    let wrong = cli.run(&["replay", &done, "--component", path(&hello)]);
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("pyreplay"),
        "says which workflow is missing: {stderr}"
    );
}

/// The replay of an execution asleep mid-step runs no step and stores
/// nothing: its journal and status are as before, and a Rust execution
/// replayed against its own version on the database file (no server) is
/// compatible.
fn replay_runs_nothing_live_and_stores_nothing(db: Db) {
    let port = free_port();
    let (server, cli, asleep, _done) = three_versions(&db, port);
    let before = cli.journal(&asleep);
    let status = cli.status(&asleep);
    for version in ["1", "2", "3"] {
        let (ok, report) = replay(&cli, &[&asleep, "--version", version]);
        assert!(ok, "{report}");
    }
    assert_eq!(cli.journal(&asleep), before, "the journal is untouched");
    assert_eq!(cli.status(&asleep)["status"], status["status"]);
    drop(server);

    // The Rust kit, on the database file.
    let run = db.run(&["run", path(&kit()), "noop3", "--input", "{}"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let id = common::run_execution_id(&String::from_utf8_lossy(&run.stderr));
    let out = db.ok(&["replay", &id]);
    assert!(out.contains(&format!("{id} is compatible with")), "{out}");
    assert!(
        out.contains("the code then completes the workflow"),
        "{out}"
    );
}
