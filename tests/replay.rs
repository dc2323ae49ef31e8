//! `cerebelum replay` (issue 36): an execution's journal replayed against
//! other code without side effects, through a real `cerebelum serve` and
//! on the database file, with Python packages built by `cerebelum build`
//! and the Rust test kit.

use cerebelum_harness as common;

use cerebelum::journal::Event;
use cerebelum::model::{ListFilter, Status};
use cerebelum::store::{self, Synchronous};
use common::{Db, Remote, free_port, kit, path, python_guest};
use serde_json::{Value, json};
use std::time::Duration;

/// Compiling a Python component takes seconds (once: it is cached).
const LONG: Duration = Duration::from_secs(180);
const V1: &str = "tests/guests/python/pyreplay_v1.py";
const V2: &str = "tests/guests/python/pyreplay_v2.py";
const V3: &str = "tests/guests/python/pyreplay_v3.py";
const PATCH: [&str; 3] = [
    "tests/guests/python/pypatch_v1.py",
    "tests/guests/python/pypatch_v2.py",
    "tests/guests/python/pypatch_v3.py",
];

common::on_both_backends!(
    replay_reports_compatible_code_and_where_other_code_diverges,
    replay_runs_nothing_live_and_stores_nothing,
    upload_check_reports_what_would_diverge_and_require_compatible_refuses,
    upgrade_moves_hibernated_executions_whose_journal_replays_cleanly,
    kill9_during_an_upgrade_of_1000_executions_leaves_each_on_one_version,
    patched_keeps_upgraded_executions_on_the_old_path_and_new_ones_on_the_new,
    a_running_execution_is_upgraded_when_it_next_hibernates,
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

/// Starts pyreplay's workflow on version 1 with `input`; its id.
fn start_v1(cli: &Remote, input: Value) -> String {
    let input = input.to_string();
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
    let start = |sleep_ms: u64| start_v1(&cli, json!({ "sleep_ms": sleep_ms }));
    let asleep = start(3_600_000);
    let done = start(0);
    let ended = cli.wait_ended(&done, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    wait_waiting(&cli, &asleep);
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
    let (ok, report) = replay(&cli, &[&done, "--component", path(&hello)]);
    assert!(!ok, "{report}");
    let divergence = report["divergence"].as_str().unwrap_or_default();
    assert!(
        divergence.contains("no workflow named 'pyreplay'"),
        "says which workflow is missing: {report}"
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

/// Waits until execution `id` hibernates.
fn wait_waiting(cli: &Remote, id: &str) {
    let deadline = std::time::Instant::now() + LONG;
    while cli.status(id)["status"] != "waiting" {
        assert!(
            std::time::Instant::now() < deadline,
            "{id} did not hibernate"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `upload --check` replays the open executions of the package's earlier
/// versions, of the uploading tenant only: version 2 (a step's body
/// changed) is compatible with all; version 3 (a step inserted) diverges
/// for the one asleep past the insertion, and `--require-compatible`
/// refuses it, storing nothing. The same for a Rust package, where a
/// component without the workflow is a divergence.
fn upload_check_reports_what_would_diverge_and_require_compatible_refuses(db: Db) {
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    let (v1, v2, v3) = (python_guest(V1), python_guest(V2), python_guest(V3));
    let start = |cli: &Remote, input: Value| {
        let input = input.to_string();
        cli.ok(&["start", "pyreplay", "pyreplay", "--input", &input])
            .trim()
            .to_owned()
    };
    cli.ok(&["upload", path(&v1), "--name", "pyreplay"]);
    let in_nap = start(&cli, json!({"sleep_ms": 3_600_000}));
    let in_last = start(&cli, json!({"sleep_ms": 0, "last_ms": 3_600_000}));
    let done = start(&cli, json!({"sleep_ms": 0}));
    assert_eq!(cli.wait_ended(&done, LONG)["status"], "completed");
    wait_waiting(&cli, &in_nap);
    wait_waiting(&cli, &in_last);
    // Another tenant's open execution of its own `pyreplay` is not checked.
    let other = Remote::new(port, &db.tenant("b", &[]));
    other.ok(&["upload", path(&v1), "--name", "pyreplay"]);
    let theirs = start(&other, json!({"sleep_ms": 0, "last_ms": 3_600_000}));
    wait_waiting(&other, &theirs);

    let out = cli.ok(&["upload", path(&v2), "--name", "pyreplay", "--check"]);
    assert!(
        out.contains("checked 2 open executions of pyreplay's earlier versions")
            && out.contains(": 2 compatible\n"),
        "{out}"
    );
    assert!(out.contains("pyreplay v2 sha256:"), "stored: {out}");

    let refused = cli.run(&[
        "upload",
        path(&v3),
        "--name",
        "pyreplay",
        "--require-compatible",
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("was not uploaded")
            && stderr.contains("not stored")
            && stderr.contains("1 compatible, 1 would diverge")
            && stderr.contains(&in_last)
            && !stderr.contains(&theirs),
        "{stderr}"
    );
    let newest: Value = serde_json::from_str(&cli.ok(&["packages", "pyreplay", "--json"])).unwrap();
    assert_eq!(newest[0]["version"], 2, "nothing stored: {newest}");

    let out = cli.ok(&["upload", path(&v3), "--name", "pyreplay", "--check"]);
    assert!(out.contains(": 1 compatible, 1 would diverge"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains(&in_last))
        .unwrap_or_else(|| panic!("lists the one that diverges: {out}"));
    assert!(
        line.contains("(v1, ") && line.contains("diverges:") && line.contains("audit"),
        "its version and first divergence: {line}"
    );
    assert!(
        !out.contains(&in_nap),
        "the compatible one is not listed: {out}"
    );
    assert!(out.contains("pyreplay v3 sha256:"), "stored: {out}");
    let out = cli.ok(&[
        "upload",
        path(&v3),
        "--name",
        "pyreplay",
        "--check",
        "--sample",
        "1",
    ]);
    assert!(
        out.contains("checked a sample of 1 of the 2 open executions"),
        "{out}"
    );
    // Nothing the checks did reached the executions.
    for id in [&in_nap, &in_last] {
        assert_eq!(cli.status(id)["status"], "waiting");
    }

    // A Rust package: the test kit, and a component without its workflow.
    cli.ok(&["upload", path(&kit()), "--name", "kit"]);
    let input = json!({"n": 3, "key": "go"}).to_string();
    let id = cli
        .ok(&["start", "kit", "steps_then_wait", "--input", &input])
        .trim()
        .to_owned();
    wait_waiting(&cli, &id);
    let out = cli.ok(&[
        "upload",
        path(&kit()),
        "--name",
        "kit",
        "--require-compatible",
    ]);
    assert!(out.contains(": 1 compatible\n"), "{out}");
    let hello = common::guest("hello");
    let refused = cli.run(&[
        "upload",
        path(&hello),
        "--name",
        "kit",
        "--require-compatible",
    ]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&id) && stderr.contains("no workflow named 'steps_then_wait'"),
        "{stderr}"
    );
}

/// `cerebelum upgrade` (issue 36, item 3): executions of version 1 asleep
/// before and past the point version 3 changes. Version 2 (a step's body
/// changed) takes both; the one that then wakes completes on version 2's
/// code. Version 3 refuses the one asleep past its insertion, which stays
/// where it is; a completed execution and another tenant's are refused.
/// Each upgrade is a journal entry and an audit record.
fn upgrade_moves_hibernated_executions_whose_journal_replays_cleanly(db: Db) {
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    for file in [V1, V2, V3] {
        cli.ok(&["upload", path(&python_guest(file)), "--name", "pyreplay"]);
    }
    let start = |input: Value| start_v1(&cli, input);
    // Wakes soon after the upgrade, and goes on on the new version.
    let in_nap = start(json!({"sleep_ms": 20_000}));
    let in_last = start(json!({"sleep_ms": 0, "last_ms": 3_600_000}));
    let done = start(json!({"sleep_ms": 0}));
    wait_waiting(&cli, &in_nap);
    wait_waiting(&cli, &in_last);
    assert_eq!(cli.wait_ended(&done, LONG)["status"], "completed");

    let out = cli.ok(&[
        "upgrade",
        "--package",
        "pyreplay",
        "--from",
        "1",
        "--to",
        "2",
    ]);
    assert!(
        out.contains(&format!("{in_nap} upgraded from v1 to v2"))
            && out.contains(&format!("{in_last} upgraded from v1 to v2"))
            && out.contains("2 of 2 upgraded to v2")
            && !out.contains(&done),
        "{out}"
    );
    for id in [&in_nap, &in_last] {
        let status = cli.status(id);
        assert_eq!(status["package_version"], 2, "{status}");
        assert_eq!(status["status"], "waiting", "{status}");
        let journal = cli.journal(id);
        let upgraded: Vec<&Value> = journal.iter().filter(|e| e["kind"] == "upgraded").collect();
        assert_eq!(upgraded.len(), 1, "one upgraded entry: {journal:?}");
        assert_eq!(upgraded[0]["payload"]["from_version"], 1);
        assert_eq!(upgraded[0]["payload"]["to_version"], 2);
    }
    // Version 3 inserts a step before `last`: refused for the one there.
    let refused = cli.run(&["upgrade", &in_last, "--to", "3"]);
    assert!(!refused.status.success(), "a refusal exits 1");
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(
        text.contains(&format!("{in_last} stays on v2: it would diverge"))
            && text.contains("audit"),
        "{text}"
    );
    assert_eq!(cli.status(&in_last)["package_version"], 2);
    let refused = cli.run(&["upgrade", &done, "--to", "2"]);
    assert!(!refused.status.success());
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(
        text.contains(&format!("{done} stays on v1: it is completed")),
        "{text}"
    );
    let other = Remote::new(port, &db.tenant("b", &[]));
    let refused = other.run(&["upgrade", &in_nap, "--to", "2"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains(&format!("no execution with id '{in_nap}'")),
        "{stderr}"
    );

    // The one that wakes runs version 2's `last`.
    let ended = cli.wait_ended(&in_nap, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["result"]["steps"]["last"]["fixed"], true, "{ended}");
    let audit = db.ok(&["audit", "--tenant", "a", "--json", "--limit", "1000"]);
    assert_eq!(audit.matches("execution.upgrade").count(), 2, "{audit}");
}

/// The version of each of `tenant`'s executions, and the `upgraded`
/// entries of its journal, read from the database itself.
async fn versions(url: &str) -> Vec<(String, Status, i64, usize)> {
    let store = store::open(url, Synchronous::Normal).await.unwrap();
    let filter = ListFilter {
        limit: 100_000,
        ..ListFilter::default()
    };
    let mut found = Vec::new();
    for e in store.executions().list_executions(&filter).await.unwrap() {
        let journal = store.executions().journal(&e.id, 0).await.unwrap();
        let upgraded = journal
            .iter()
            .filter(|j| matches!(j.event, Event::Upgraded(_)))
            .count();
        found.push((e.id, e.status, e.package_version, upgraded));
    }
    found
}

/// `kill -9` of the server while it upgrades 1,000 hibernated executions:
/// each is on exactly one version afterwards, with an `upgraded` entry
/// if and only if it moved; the upgrade run again moves the rest, and an
/// upgraded one goes on on its new version.
fn kill9_during_an_upgrade_of_1000_executions_leaves_each_on_one_version(db: Db) {
    const N: usize = 1000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&kit()), "--name", "kit"]);
    rt.block_on(common::start_open_executions(port, &key, N, 8));
    let deadline = std::time::Instant::now() + LONG;
    while rt.block_on(common::count_by_status(&db.url)) != [("waiting".to_owned(), N as i64)] {
        assert!(std::time::Instant::now() < deadline, "not all hibernated");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Version 2: the same code in other bytes (a custom section added).
    let v2 = db.dir.path().join("kit-v2.wasm");
    let mut bytes = std::fs::read(kit()).unwrap();
    bytes.extend_from_slice(&[0, 5, 4, b'v', b'2', b'v', b'2']);
    std::fs::write(&v2, bytes).unwrap();
    let out = cli.ok(&["upload", path(&v2), "--name", "kit"]);
    assert!(out.starts_with("kit v2 "), "{out}");

    let mut upgrade = cli
        .command(&["upgrade", "--package", "kit", "--from", "1", "--to", "2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let moved = rt
            .block_on(versions(&db.url))
            .iter()
            .filter(|v| v.2 == 2)
            .count();
        if moved >= 50 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upgrade did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    let _ = upgrade.wait();

    let after = rt.block_on(versions(&db.url));
    assert_eq!(after.len(), N);
    let moved = after.iter().filter(|v| v.2 == 2).count();
    for (id, status, version, upgraded) in &after {
        assert_eq!(*status, Status::Waiting, "{id}");
        assert!(
            (*version == 1 && *upgraded == 0) || (*version == 2 && *upgraded == 1),
            "{id}: on v{version} with {upgraded} upgraded entries"
        );
    }
    assert!(
        moved > 0 && moved < N,
        "the kill came mid-way: {moved} of {N} had moved"
    );

    // Run again, it moves the rest. On PostgreSQL, the upgrade the kill
    // interrupted may commit after the kill (the server had sent its
    // COMMIT): that execution is then found moved on, and stays as it is.
    let _server = db.serve_api(port, &[]);
    let out = cli.run(&["upgrade", "--package", "kit", "--from", "1", "--to", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let late = text.matches("moved on while it was checked").count();
    let upgraded = text.matches(" upgraded from v1 to v2").count();
    assert!(late <= 2, "{text}");
    assert_eq!(upgraded + late, N - moved, "{text}");
    assert_eq!(out.status.success(), late == 0, "{text}");
    let after = rt.block_on(versions(&db.url));
    assert!(
        after.iter().all(|v| v.2 == 2 && v.3 == 1),
        "every one on v2, upgraded once"
    );
    let id = &after[0].0;
    cli.ok(&["approve", id, "go"]);
    let ended = cli.wait_ended(id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["package_version"], 2, "{ended}");
}

/// `patched()` (issue 36, item 4), in a Python step: two executions of
/// version 1 asleep in the step's second sleep are upgraded, one to
/// version 2 (a sleep inserted behind `patched()`), one to version 3 (the
/// same without). When they wake, the first keeps the old path (its
/// history holds the second sleep where the patch is) and completes; the
/// second fails with nondeterminism. A new execution of version 2 takes
/// the new path, recorded as a `patched` call.
fn patched_keeps_upgraded_executions_on_the_old_path_and_new_ones_on_the_new(db: Db) {
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    for file in PATCH {
        cli.ok(&["upload", path(&python_guest(file)), "--name", "pypatch"]);
    }
    let start = |version: &str, b_ms: u64| {
        let input = json!({"a_ms": 1, "b_ms": b_ms}).to_string();
        let args = [
            "start",
            "pypatch",
            "pypatch",
            "--version",
            version,
            "--input",
            &input,
        ];
        cli.ok(&args).trim().to_owned()
    };
    let patched_old = start("1", 8_000);
    let unpatched_old = start("1", 8_000);
    wait_waiting(&cli, &patched_old);
    wait_waiting(&cli, &unpatched_old);
    cli.ok(&["upgrade", &patched_old, "--to", "2"]);
    cli.ok(&["upgrade", &unpatched_old, "--to", "3"]);
    let new = start("2", 100);

    let ended = cli.wait_ended(&new, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["result"]["steps"]["work"]["path"], "new", "{ended}");
    let marks = |id: &str| {
        cli.journal(id)
            .iter()
            .filter(|e| e["kind"] == "patched")
            .count()
    };
    assert_eq!(marks(&new), 1, "the new path is recorded");

    let ended = cli.wait_ended(&patched_old, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["result"]["steps"]["work"]["path"], "old", "{ended}");
    assert_eq!(ended["package_version"], 2, "{ended}");
    assert_eq!(marks(&patched_old), 0, "nothing recorded for the old path");

    // The Rust SDK's `ctx.patched`: a new execution takes the new path,
    // recorded, and its replay answers the same from the journal.
    cli.ok(&["upload", path(&kit()), "--name", "kit"]);
    // `ctx.deprecate_patch` (`{"deprecated": true}`): the patch recorded
    // the same way, no branch.
    for (input, result) in [
        ("{}", json!({"patched": true})),
        (r#"{"deprecated": true}"#, json!({"deprecated": true})),
    ] {
        let probe = cli
            .ok(&["start", "kit", "patch_probe", "--input", input])
            .trim()
            .to_owned();
        let ended = cli.wait_ended(&probe, LONG);
        assert_eq!(ended["result"], result, "{ended}");
        assert_eq!(marks(&probe), 1);
        let (ok, report) = replay(&cli, &[&probe]);
        assert!(ok && report["ended"] == "completed", "{report}");
    }

    let ended = cli.wait_ended(&unpatched_old, LONG);
    assert_eq!(ended["status"], "failed", "{ended}");
    let error = ended["error"]["message"].as_str().unwrap_or_default();
    assert!(
        error.contains("made a different call than the journal recorded"),
        "{ended}"
    );
}

const PATCH_V4: &str = "tests/guests/python/pypatch_v4.py";
const DEBUG: &str = "tests/guests/python/pydebug.py";
const DEBUG_V2: &str = "tests/guests/python/pydebug_v2.py";

/// `python -m cerebelum replay ID FILE.py` (the SDK's CLI) against the
/// server `cli` talks to: its exit status and stdout (stderr appended).
fn python_replay(cli: &Remote, id: &str, file: &str, pdb: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut command = std::process::Command::new(common::python());
    if pdb.is_some() {
        command.args(["-m", "pdb"]);
    }
    command
        .args(["-m", "cerebelum", "replay", id])
        .arg(common::root().join(file))
        .args(["--server", &cli.url, "--api-key", &cli.key])
        .env_remove("CEREBELUM_SERVER")
        .env_remove("CEREBELUM_API_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("running python -m cerebelum replay");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(pdb.unwrap_or("").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The line of `file` that contains `text` (1-based).
fn line_of(file: &str, text: &str) -> usize {
    let source = std::fs::read_to_string(common::root().join(file)).unwrap();
    1 + source
        .lines()
        .position(|l| l.contains(text))
        .unwrap_or_else(|| panic!("{file} has no line with {text:?}"))
}

/// Issue 36, item 5: a recorded Python execution replayed under plain
/// CPython, every durable call answered from its journal fetched over the
/// API — the clock a step read, its sleep, the approval's decision — with
/// each entry printed; a `pdb` breakpoint in the file stops there with the
/// recorded values; changed code reports the entry and the line where it
/// diverges; an execution still asleep replays up to where it waits; an
/// id of another tenant is refused.
#[test]
fn python_replay_debugs_a_recorded_execution_under_cpython() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&python_guest(DEBUG)), "--name", "pydebug"]);
    let start = |sleep_ms: u64| {
        let input = json!({"sleep_ms": sleep_ms}).to_string();
        cli.ok(&["start", "pydebug", "pydebug", "--input", &input])
            .trim()
            .to_owned()
    };
    let done = start(40);
    let asleep = start(3_600_000);
    wait_waiting(&cli, &done);
    cli.ok(&["approve", &done, "go", "--payload", r#"{"by": "ann"}"#]);
    let ended = cli.wait_ended(&done, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    let now = ended["result"]["steps"]["stamp"]["now"].as_f64().unwrap();
    wait_waiting(&cli, &asleep);

    // The replay prints the journal as the code consumes it, and the
    // step's own print shows the clock its first run read.
    let (ok, out) = python_replay(&cli, &done, DEBUG, None);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("stamp read the clock: {now}")),
        "{out}"
    );
    for line in [
        "call-step stamp",
        "now-ms -> ",
        "sleep 40 ms (returns at once)",
        "approval 'go' -> ",
        "call-step finish",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    let calls = cli
        .journal(&done)
        .iter()
        .filter(|e| e["invocation"] == "wf" || e["invocation"].as_str().unwrap().contains('.'))
        .filter(|e| e["args_hash"].is_string())
        .count();
    assert!(
        out.contains(&format!(
            "replayed through call {calls} of {calls}: the workflow completed, as it did"
        )),
        "{calls} calls:\n{out}"
    );

    // A breakpoint set in pdb stops in the step with the recorded values.
    let at = line_of(DEBUG, "total = stamp");
    let file = common::root().join(DEBUG);
    let commands = format!(
        "break {}:{at}\ncontinue\np ask\np stamp['now']\ncontinue\nquit\n",
        file.display()
    );
    let (_, out) = python_replay(&cli, &done, DEBUG, Some(&commands));
    assert!(out.contains("{'decision': {'by': 'ann'}}"), "{out}");
    assert!(out.contains(&format!("{now}")), "{out}");

    // Changed code: the entry, the calls, and the line of the file.
    let (ok, out) = python_replay(&cli, &done, DEBUG_V2, None);
    assert!(!ok, "a divergence exits 1: {out}");
    let line = line_of(DEBUG_V2, "await sleep(inputs[\"sleep_ms\"] // 2)");
    assert!(
        out.contains("diverges at entry ")
            && out.contains("recorded sleep(40 ms), the code called sleep(20 ms)")
            && out.contains(&format!("pydebug_v2.py:{line} in nap")),
        "{out}"
    );

    // Asleep: replayed up to the sleep, which had not ended.
    let (ok, out) = python_replay(&cli, &asleep, DEBUG, None);
    assert!(ok, "{out}");
    assert!(
        out.contains("the journal ends there (step nap had not finished)"),
        "{out}"
    );

    // Another tenant's id is refused, and nothing was replayed.
    let other = Remote::new(port, &db.tenant("b", &[]));
    let (ok, out) = python_replay(&other, &done, DEBUG, None);
    assert!(!ok, "{out}");
    assert!(
        out.contains("NOT_FOUND") && !out.contains("call-step"),
        "{out}"
    );
}

/// `cerebelum replay ID --local --component FILE`: the execution and its
/// journal fetched from the server, replayed in the CLI's own process and
/// printed entry by entry — every entry replayed for the Rust test kit's
/// execution against the kit; for a Python execution against code that
/// inserts a step, the entries up to the divergence replayed, the
/// divergence marked, the rest not reached. Against a debug build of
/// other Rust code, the divergence names the source line of the call.
#[test]
fn replay_local_replays_in_the_cli_and_prints_the_journal_entry_by_entry() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&kit()), "--name", "kit"]);
    let input = json!({"n": 3, "key": "go"}).to_string();
    let id = cli
        .ok(&["start", "kit", "steps_then_wait", "--input", &input])
        .trim()
        .to_owned();
    wait_waiting(&cli, &id);
    cli.ok(&["approve", &id, "go"]);
    assert_eq!(cli.wait_ended(&id, LONG)["status"], "completed");
    let journal = cli.journal(&id);
    let n = journal.last().unwrap()["seq"].as_i64().unwrap();

    let out = cli.ok(&["replay", &id, "--local", "--component", path(&kit())]);
    let marked: Vec<&str> = out.lines().filter(|l| l.starts_with('✓')).collect();
    assert_eq!(marked.len(), journal.len(), "every entry replayed:\n{out}");
    assert!(
        out.contains(&format!("through entry {n} of {n} (completed)")),
        "{out}"
    );

    // A debug build of other code (item 1): the divergence names the line
    // of the guest's source that made the call, here and on the server.
    let variant = common::kit_variant();
    let kit_source = "tests/guests/testkit/src/lib.rs";
    let at = format!(
        "the code made that call at {}:{} in testkit::steps_then_wait",
        common::root().join(kit_source).display(),
        line_of(kit_source, "\"variant\": variant")
    );
    for local in [&["--local"][..], &[]] {
        let mut args = vec!["replay", &id, "--component", path(&variant)];
        args.extend_from_slice(local);
        let out = cli.run(&args);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains(" at entry 2 of ") && text.contains(&at),
            "{at}:\n{text}"
        );
    }

    let db2 = Db::new();
    let (_server2, py, _asleep, done) = three_versions(&db2, free_port());
    let v3 = python_guest(V3);
    let out = py.run(&["replay", &done, "--local", "--component", path(&v3)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a divergence exits 1:\n{text}");
    let crossed: Vec<&str> = text.lines().filter(|l| l.starts_with('✗')).collect();
    assert_eq!(crossed.len(), 1, "{text}");
    assert!(crossed[0].contains("call-step"), "{text}");
    assert!(
        text.contains(" diverges from ") && text.contains(" at entry "),
        "{text}"
    );
    // CPython's frames name no line of the file (`python -m cerebelum
    // replay` does).
    assert!(!text.contains("the code made that call"), "{text}");

    // --local needs the component it replays against.
    let err = cli.fails(&["replay", &id, "--local"]);
    assert!(err.contains("--component"), "{err}");
}

/// Issue 36, item 4: `deprecate_patch` retires a patch. Version 4 of
/// pypatch has the new path only, behind `deprecate_patch("extra-nap")`:
/// an execution that took version 2's new path (its history has the
/// patch) upgrades to it and completes there; one recorded by version 1
/// past that point is told apart before any upgrade by the local Python
/// replay (it diverges, with the line), while the patched one replays.
#[test]
fn deprecate_patch_keeps_patched_histories_replaying() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    for file in [PATCH[0], PATCH[1], PATCH_V4] {
        cli.ok(&["upload", path(&python_guest(file)), "--name", "pypatch"]);
    }
    let start = |version: &str| {
        let input = json!({"a_ms": 1, "b_ms": 6_000}).to_string();
        cli.ok(&[
            "start",
            "pypatch",
            "pypatch",
            "--version",
            version,
            "--input",
            &input,
        ])
        .trim()
        .to_owned()
    };
    let old = start("1");
    let patched = start("2");
    wait_waiting(&cli, &old);
    wait_waiting(&cli, &patched);

    let (ok, out) = python_replay(&cli, &patched, PATCH_V4, None);
    assert!(ok, "{out}");
    assert!(out.contains("patched 'extra-nap' -> true"), "{out}");
    let (ok, out) = python_replay(&cli, &old, PATCH_V4, None);
    assert!(!ok, "{out}");
    let line = line_of(PATCH_V4, "await sleep(10)");
    assert!(
        out.contains("recorded sleep(6000 ms), the code called sleep(10 ms)")
            && out.contains(&format!("pypatch_v4.py:{line} in work")),
        "{out}"
    );

    cli.ok(&["upgrade", &patched, "--to", "3"]);
    let ended = cli.wait_ended(&patched, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["package_version"], 3, "{ended}");
    assert_eq!(ended["result"]["steps"]["work"]["path"], "new", "{ended}");
}

/// Issue 36, item 3: an execution that is running when it is upgraded
/// moves at its next hibernation. Two run `nap` (a 4 s sleep, shorter than
/// the server's 10 s hibernation threshold): asked to v2 and v3 they answer
/// that they will move when they next wait, and `status` shows it. When
/// they hibernate in `last`, the one asked to v2 (a step's body changed)
/// moves — an `upgraded` entry, the request gone; the one asked to v3 (a
/// step inserted before `last`, which its journal went past) stays on v1,
/// its request dropped with the divergence in the audit log.
fn a_running_execution_is_upgraded_when_it_next_hibernates(db: Db) {
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &["--hibernate-after-ms", "10000"]);
    let cli = Remote::new(port, &key);
    for file in [V1, V2, V3] {
        cli.ok(&["upload", path(&python_guest(file)), "--name", "pyreplay"]);
    }
    let start = || start_v1(&cli, json!({"sleep_ms": 4_000, "last_ms": 3_600_000}));
    let (to_v2, to_v3) = (start(), start());
    for (id, to) in [(&to_v2, "2"), (&to_v3, "3")] {
        let out = cli.ok(&["upgrade", id, "--to", to]);
        // Running in nap (or not claimed yet: pending).
        assert!(
            out.contains(&format!("{id} on v1: it is "))
                && out.contains(&format!(": it moves to v{to} when it next waits")),
            "{out}"
        );
        assert_eq!(cli.status(id)["upgrade_to"], to.parse::<i64>().unwrap());
    }

    let deadline = std::time::Instant::now() + LONG;
    let settled = |id: &str| {
        let status = cli.status(id);
        status["status"] == "waiting" && status["upgrade_to"].is_null()
    };
    while !(settled(&to_v2) && settled(&to_v3)) {
        assert!(std::time::Instant::now() < deadline, "not settled");
        std::thread::sleep(Duration::from_millis(200));
    }
    let moved = cli.status(&to_v2);
    assert_eq!(moved["package_version"], 2, "{moved}");
    let journal = cli.journal(&to_v2);
    let upgraded: Vec<&Value> = journal.iter().filter(|e| e["kind"] == "upgraded").collect();
    assert_eq!(upgraded.len(), 1, "{journal:?}");
    assert_eq!(upgraded[0]["payload"]["to_version"], 2);

    let stayed = cli.status(&to_v3);
    assert_eq!(stayed["package_version"], 1, "{stayed}");
    assert!(!cli.journal(&to_v3).iter().any(|e| e["kind"] == "upgraded"));
    let audit = db.ok(&["audit", "--tenant", "a", "--json", "--limit", "1000"]);
    let refusal = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["target"] == to_v3.as_str() && r["detail"]["refused"].is_string())
        .unwrap_or_else(|| panic!("no refusal of {to_v3} audited: {audit}"));
    let why = refusal["detail"]["refused"].as_str().unwrap();
    assert!(
        why.contains("it would diverge") && why.contains("audit"),
        "{why}"
    );
}
