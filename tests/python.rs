//! The Python SDK end to end: files from `examples/python` and
//! `tests/guests/python` built with `cerebelum build` (componentize-py),
//! run by real engine processes, and compared with the same files run
//! locally under CPython.

use cerebelum_harness as common;

use common::{Db, assert_contiguous, entries, now_ms, path, python, python_guest, root};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Compiling a Python component takes seconds (once: it is cached).
const LONG: Duration = Duration::from_secs(180);
const PYKIT: &str = "tests/guests/python/pykit.py";

common::on_both_backends!(
    kill9_while_a_python_step_hibernates_resumes_on_the_next_line,
    kill9_during_a_python_steps_in_process_sleep_resumes_on_the_next_line,
);

/// Runs `workflow` of the Python file `rel` locally (plain CPython, no
/// engine): `{status, result: {output, steps}, error}`, `error` being
/// the `ExecutionError` raised when it failed.
fn local(rel: &str, workflow: &str, input: &str) -> Value {
    let file = root().join(rel);
    let script = "import asyncio, json, sys\n\
        from pathlib import Path\n\
        from cerebelum import ExecutionError, _registry, build\n\
        build.import_source(Path(sys.argv[1]))\n\
        wf = _registry.WORKFLOWS[sys.argv[2]]\n\
        try:\n\
        \x20   r, error = asyncio.run(wf.execute(json.loads(sys.argv[3]))), None\n\
        except ExecutionError as e:\n\
        \x20   r, error = e.result, str(e)\n\
        print(json.dumps({'status': r.status, 'result': {'output': r.output, 'steps': r.steps},\n\
        \x20                 'error': error}))";
    let out = Command::new(python())
        .args(["-c", script])
        .arg(&file)
        .args([workflow, input])
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "local run of {rel} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Progress lines come first (the original SDK prints them on stdout).
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Runs `workflow` in the engine (`cerebelum run`); its result.
fn engine(db: &Db, wasm: &Path, workflow: &str, input: &str) -> Value {
    run_logged(db, wasm, workflow, input).0
}

/// Runs `workflow` in the engine (`cerebelum run`), which must succeed:
/// its result, and what `run` printed on stderr (its progress, the
/// execution's id: [`common::run_execution_id`]).
fn run_logged(db: &Db, wasm: &Path, workflow: &str, input: &str) -> (Value, String) {
    let out = db.run(&["run", path(wasm), workflow, "--input", input]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let result = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    (result, stderr)
}

#[test]
fn examples_give_the_same_output_locally_and_in_the_engine() {
    let db = Db::new();
    let cases = [
        (
            "examples/python/deploy.py",
            "deploy",
            r#"{"name": "web-1", "install_ms": 300}"#,
        ),
        (
            "examples/python/pipeline.py",
            "pipeline",
            r#"{"delay_ms": 150}"#,
        ),
        (
            "examples/python/routing.py",
            "release",
            r#"{"install": "ok"}"#,
        ),
        (
            "examples/python/routing.py",
            "release",
            r#"{"install": "timeout"}"#,
        ),
        (
            "examples/python/routing.py",
            "release",
            r#"{"install": "broken"}"#,
        ),
        (
            "examples/python/routing.py",
            "release",
            r#"{"install": "ok", "healthy": false}"#,
        ),
    ];
    for (rel, workflow, input) in cases {
        let here = local(rel, workflow, input);
        assert_eq!(here["status"], "completed", "{rel} {input}: {here}");
        let wasm = python_guest(rel);
        let there = engine(&db, &wasm, workflow, input);
        assert_eq!(there, here["result"], "{rel} {input}: engine vs local");
    }
    // The paths taken are the ones the inputs ask for.
    let timeout = local(
        "examples/python/routing.py",
        "release",
        r#"{"install": "timeout"}"#,
    );
    let steps = &timeout["result"]["steps"];
    assert_eq!(steps["install_from_cache"]["from"], "cache");
    assert_eq!(steps["done"], "srv-1 is serving");
    assert_eq!(
        timeout["result"]["output"],
        json!({"ok": "srv-1 is serving"}),
        "the last step's result"
    );
    let unhealthy = local(
        "examples/python/routing.py",
        "release",
        r#"{"install": "ok", "healthy": false}"#,
    );
    assert_eq!(
        unhealthy["result"]["steps"]["rollback"],
        "srv-1 rolled back"
    );
}

/// A file written for the original SDK, unchanged: its name starts with a
/// digit (`cerebelum build` takes it), and `ExecutionResult.output`,
/// `retry`, `poll`, `sleep(ms, data)`, input fields as step parameters
/// and `ExecutionError` behave as there, the same locally and in the
/// engine.
#[test]
fn an_original_sdk_file_behaves_as_there_locally_and_in_the_engine() {
    let db = Db::new();
    let rel = "tests/guests/python/01_original_api.py";
    let wasm = python_guest(rel);
    let input = r#"{"name": "web", "size": 7, "ready_after": 2}"#;
    let here = local(rel, "original", input);
    assert_eq!(here["status"], "completed", "{here}");
    let (there, stderr) = run_logged(&db, &wasm, "original", input);
    assert_eq!(there, here["result"], "engine vs local");
    assert_eq!(there["output"], json!({"ok": {"square": 49}}));
    let connect = &there["steps"]["connect"];
    assert_eq!(
        connect["attempts"],
        json!([[1, null], [2, "refused 1"], [3, "refused 2"]]),
        "on_attempt(attempt, last_error) before each attempt"
    );
    assert_eq!(
        connect["wrong_type"], "KeyError 'missing'",
        "only on_error's type is retried; the error itself is raised"
    );
    let ready = &there["steps"]["wait_ready"];
    assert_eq!(
        ready["on_attempt"],
        json!([[1, {}], [2, {"ready": true}]]),
        "truthiness, and on_attempt on every check"
    );
    assert_eq!(
        ready["gave_up"],
        "Polling failed after 2 attempts (interval: 10ms)"
    );
    // The sleep's data is in the journal, recorded with the sleep, and
    // `run` (as `watch`) shows it.
    assert!(
        stderr.contains(r#"[start_process] ⏸ sleeping 50 ms: {"waiting_for":"boot"}"#),
        "{stderr}"
    );
    let id = common::run_execution_id(&stderr);
    let journal = db.journal(&id);
    let recorded = entries(&journal, "record");
    let sleep = recorded
        .iter()
        .find(|e| e["payload"]["args"]["name"] == "sleep")
        .unwrap_or_else(|| panic!("no recorded sleep: {journal:?}"));
    assert_eq!(
        sleep["payload"]["answer"],
        json!({"duration_ms": 50, "data": {"waiting_for": "boot"}})
    );
    // A failing step: `execute` raises ExecutionError locally; the engine
    // fails the execution with the same step and results.
    let bad = r#"{"name": "web", "size": -1, "ready_after": 1}"#;
    let here = local(rel, "original", bad);
    assert_eq!(
        here["error"],
        "Execution failed at step 'square': Step 'square' returned error: size must be positive, got -1"
    );
    let _server = db.serve(&[]);
    let id = db.start(&wasm, "original", bad);
    let failed = db.wait_status(&id, "failed", LONG);
    let details = &failed["error"]["details"];
    assert_eq!(details["step"], "square", "{failed}");
    assert_eq!(details["steps"], here["result"]["steps"], "{failed}");
    assert_eq!(details["output"], here["result"]["output"], "{failed}");
}

#[test]
fn deploy_journals_its_polls_retries_and_progress() {
    let db = Db::new();
    let wasm = python_guest("examples/python/deploy.py");
    let (_, stderr) = run_logged(
        &db,
        &wasm,
        "deploy",
        r#"{"name": "web-2", "install_ms": 200}"#,
    );
    let id = common::run_execution_id(&stderr);
    let journal = db.journal(&id);
    assert_contiguous(&id, &journal);
    // The poll's three checks and the retry's three attempts are recorded
    // values; the waits between them are durable sleeps.
    let recorded: Vec<&str> = entries(&journal, "record")
        .iter()
        .map(|e| e["payload"]["args"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        recorded,
        [
            "poll-check",
            "poll-check",
            "poll-check",
            "retry-attempt",
            "retry-attempt",
            "retry-attempt"
        ]
    );
    let sleeps: Vec<i64> = entries(&journal, "sleep")
        .iter()
        .map(|e| e["payload"]["args"]["duration_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(
        sleeps,
        [200, 200, 100, 200, 200],
        "poll, retry backoff, install"
    );
    let progress: Vec<&str> = entries(&journal, "report-progress")
        .iter()
        .map(|e| e["payload"]["args"]["message"].as_str().unwrap())
        .collect();
    assert!(progress.contains(&"Running migrations..."), "{progress:?}");
    // The parallel group was started as two steps and awaited together.
    assert_eq!(entries(&journal, "start-step").len(), 2);
    assert_eq!(entries(&journal, "await-steps").len(), 1);
}

fn crash_during_python_sleep(db: Db, serve_args: &[&str]) {
    let wasm = python_guest(PYKIT);
    let server = db.serve(serve_args);
    let id = db.start(&wasm, "napper", r#"{"sleep_ms": 4000}"#);
    db.wait_for(&id, LONG, |_, j| !entries(j, "sleep").is_empty());
    // `status` says what the execution waits for, with the sleep's data.
    let status = db.ok(&["status", &id]);
    assert!(
        status.contains("sleeping 4000 ms in [nap], due in")
            && status.contains(r#": {"for":"the crash test"}"#),
        "{status}"
    );
    server.kill9();
    let killed_at = now_ms();
    let journal = db.journal(&id);
    let due_at = entries(&journal, "sleep")[0]["payload"]["due_at"]
        .as_i64()
        .unwrap();
    assert!(
        killed_at < due_at - 1000,
        "the engine must die well before the timer is due"
    );

    let _server = db.serve(serve_args);
    let status = db.wait_status(&id, "completed", LONG);
    assert_eq!(
        status["result"]["steps"],
        json!({ "nap": { "slept_ms": 4000 } })
    );
    let journal = db.journal(&id);
    assert_contiguous(&id, &journal);
    let progress: Vec<(&str, i64)> = entries(&journal, "report-progress")
        .iter()
        .map(|e| {
            (
                e["payload"]["args"]["message"].as_str().unwrap(),
                e["at_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        progress.iter().map(|p| p.0).collect::<Vec<_>>(),
        ["before the sleep", "after the sleep"],
        "the line before the sleep ran once; the step went on after it"
    );
    assert_eq!(
        entries(&journal, "sleep").len(),
        1,
        "the sleep was not restarted"
    );
    let woke = progress[1].1;
    assert!(
        woke >= due_at,
        "woke at {woke}, before the due time {due_at}"
    );
    assert!(
        woke - due_at < 3000,
        "woke {} ms after the original due time",
        woke - due_at
    );
}

fn kill9_while_a_python_step_hibernates_resumes_on_the_next_line(db: Db) {
    crash_during_python_sleep(db, &["--hibernate-after-ms", "500"]);
}

fn kill9_during_a_python_steps_in_process_sleep_resumes_on_the_next_line(db: Db) {
    crash_during_python_sleep(db, &["--hibernate-after-ms", "60000"]);
}

#[test]
fn approvals_from_the_cli_reach_a_python_step() {
    let db = Db::new();
    let wasm = python_guest("examples/python/approval.py");
    let _server = db.serve(&["--hibernate-after-ms", "500"]);
    let pending = |id: &str| {
        db.wait_for(id, LONG, |_, j| !entries(j, "await-approval").is_empty());
    };

    let approved = db.start(&wasm, "change", r#"{"change": "resize db"}"#);
    pending(&approved);
    db.ok(&[
        "approve",
        &approved,
        "change-review",
        "--payload",
        r#"{"by": "ana"}"#,
    ]);
    let rejected = db.start(&wasm, "change", r#"{"change": "drop table"}"#);
    pending(&rejected);
    db.ok(&[
        "reject",
        &rejected,
        "change-review",
        "--reason",
        "too risky",
    ]);
    let ignored = db.start(
        &wasm,
        "change",
        r#"{"change": "rename", "timeout_ms": 300}"#,
    );

    let result =
        |id: &str| db.wait_status(id, "completed", LONG)["result"]["steps"]["apply_change"].clone();
    assert_eq!(result(&approved), "applied 'resize db', approved by ana");
    assert_eq!(result(&rejected), "dropped 'drop table': too risky");
    assert_eq!(
        result(&ignored),
        "dropped 'rename': nobody answered in time"
    );
    // `watch` shows a Python step's approval as it shows a Rust
    // workflow's: what it waits for, how to answer, and the answer.
    let watched = db.run(&["watch", &approved]);
    let seen = format!(
        "{}{}",
        String::from_utf8_lossy(&watched.stdout),
        String::from_utf8_lossy(&watched.stderr)
    );
    assert!(
        seen.contains("⏳ waiting for approval 'change-review'")
            && seen.contains(&format!(
                "approve: cerebelum approve {approved} change-review"
            ))
            && seen.contains("✓ approval 'change-review' → "),
        "{seen}"
    );
}

#[test]
fn signals_reach_a_python_step_and_its_state_shows_in_status() {
    let db = Db::new();
    let wasm = python_guest(PYKIT);
    let _server = db.serve(&["--hibernate-after-ms", "500"]);
    let id = db.start(&wasm, "dns_wf", "{}");
    let status = db.wait_for(&id, LONG, |s, j| {
        s["status"] == "waiting" && !entries(j, "await-signal").is_empty()
    });
    assert_eq!(status["state"], json!({ "phase": "waiting for dns" }));
    assert_eq!(
        status["waiting_on"],
        json!(["step await_dns", "signal 'dns'"])
    );
    db.ok(&[
        "signal",
        &id,
        "dns",
        "--payload",
        r#"{"zone": "example.com"}"#,
    ]);
    let done = db.wait_status(&id, "completed", LONG);
    assert_eq!(
        done["result"]["steps"]["await_dns"],
        json!({ "dns": { "zone": "example.com" } })
    );
    assert_eq!(done["state"], json!({ "phase": "dns ok" }));
    // Nobody signals: the wait times out inside the step.
    let quiet = db.start(&wasm, "dns_wf", r#"{"timeout_ms": 300}"#);
    let done = db.wait_status(&quiet, "completed", LONG);
    let timed_out = &done["result"]["steps"]["await_dns"]["timed_out"];
    assert!(
        timed_out.as_str().unwrap_or("").contains("no signal 'dns'"),
        "{done}"
    );
}

#[test]
fn python_workflows_run_children() {
    let db = Db::new();
    let wasm = python_guest(PYKIT);
    let _server = db.serve(&["--hibernate-after-ms", "500"]);
    // A @workflow as a step of a timeline.
    let rollout = db.start(&wasm, "rollout", r#"{"server": "web-1"}"#);
    let done = db.wait_status(&rollout, "completed", LONG);
    assert_eq!(
        done["result"]["steps"]["announce"], "deployed web-1",
        "{done}"
    );
    // context.child from a step, twice in a row.
    let fleet = db.start(&wasm, "fleet", r#"{"servers": ["a", "b"]}"#);
    let done = db.wait_status(&fleet, "completed", LONG);
    assert_eq!(
        done["result"]["steps"]["fan_children"],
        json!(["deployed a", "deployed b"])
    );
    // Each child is an execution of its own, naming its parent.
    let list: Vec<Value> =
        serde_json::from_str(&db.ok(&["list", "--workflow", "deploy_server", "--json"])).unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    let parents: Vec<&str> = list
        .iter()
        .filter_map(|e| e["parent_id"].as_str())
        .collect();
    assert_eq!(parents.iter().filter(|p| **p == rollout).count(), 1);
    assert_eq!(parents.iter().filter(|p| **p == fleet).count(), 2);
    // The same file runs locally, children included.
    let local = local(PYKIT, "rollout", r#"{"server": "web-1"}"#);
    assert_eq!(
        local["result"]["steps"]["announce"], "deployed web-1",
        "{local}"
    );
}

#[test]
fn a_python_workflow_continues_as_new() {
    let db = Db::new();
    let wasm = python_guest(PYKIT);
    let _server = db.serve(&[]);
    let mut id = db.start(&wasm, "counter", r#"{"n": 0, "until": 3}"#);
    let mut chain = vec![id.clone()];
    let last = loop {
        let done = db.wait_status(&id, "completed", LONG);
        match done["result"]["continued_as"].as_str() {
            Some(next) => {
                assert_eq!(db.status(next)["continued_from"], id.as_str());
                id = next.to_owned();
                chain.push(id.clone());
            }
            None => break done,
        }
    };
    assert_eq!(chain.len(), 4, "{chain:?}");
    assert_eq!(last["result"]["steps"]["count_up"], json!({ "reached": 3 }));
    assert_eq!(last["input"], json!({ "n": 3, "until": 3 }));
    // Locally the workflow simply runs again.
    let local = local(PYKIT, "counter", r#"{"n": 0, "until": 3}"#);
    assert_eq!(
        local["result"]["steps"]["count_up"],
        json!({ "reached": 3 }),
        "{local}"
    );
}

#[test]
fn a_step_as_poll_check_is_polled_by_the_engine() {
    let db = Db::new();
    let wasm = python_guest(PYKIT);
    let result = engine(&db, &wasm, "poller", "{}");
    assert_eq!(
        result["steps"],
        json!({ "wait_ready": { "ready_on_check": 3 } })
    );
}

#[test]
fn step_retry_policy_gives_real_attempt_numbers() {
    let db = Db::new();
    let wasm = python_guest(PYKIT);
    assert_eq!(
        engine(&db, &wasm, "retrier", "{}")["steps"],
        json!({ "flaky": 3 })
    );
    let listed: Value = serde_json::from_str(&db.ok(&["packages", "--json"])).unwrap();
    let steps = listed[0]["info"]["steps"].as_array().unwrap();
    let flaky = steps.iter().find(|s| s["name"] == "flaky").unwrap();
    assert_eq!(
        flaky["options"]["retry"]["max_attempts"], 3,
        "describe carries @step(retry=3)"
    );
    let noop = steps.iter().find(|s| s["name"] == "nap").unwrap();
    assert_eq!(
        noop["options"]["retry"]["max_attempts"], 1,
        "steps do not retry by default"
    );
}

#[test]
fn random_time_and_asyncio_work_in_steps() {
    let db = Db::new();
    let wasm = python_guest(PYKIT);
    let first = engine(&db, &wasm, "ambient_wf", "{}");
    let second = engine(&db, &wasm, "ambient_wf", "{}");
    let a = &first["steps"]["ambient"];
    assert_eq!(a["time_ok"], true);
    assert_eq!(a["gathered"], json!(["a", "b"]));
    assert_eq!((&a["in_task"], &a["grouped"]), (&json!(true), &json!("g")));
    let numbers = a["random"].as_array().unwrap();
    assert_ne!(numbers[0], numbers[1]);
    assert_ne!(
        a["random"], second["steps"]["ambient"]["random"],
        "each execution draws other numbers (the build's snapshot is reseeded)"
    );
}

/// In a step, `time.time()` and `datetime.now()` give the real time of
/// each call, journaled (`now-ms`): around a 1.2 s durable sleep they move
/// by 1.2 s (they were frozen at the execution's start before).
#[test]
fn a_steps_clock_is_live_and_journaled() {
    let db = Db::new();
    let wasm = python_guest(PYKIT);
    let (result, stderr) = run_logged(&db, &wasm, "clock_wf", r#"{"sleep_ms": 1200}"#);
    let clock = &result["steps"]["clock"];
    for read in ["slept_s", "datetime_s"] {
        let moved = clock[read].as_f64().unwrap();
        assert!((1.15..60.0).contains(&moved), "{read}: {clock}");
    }
    let journal = db.journal(&common::run_execution_id(&stderr));
    let reads: Vec<i64> = entries(&journal, "now-ms")
        .iter()
        .map(|e| e["payload"]["answer"].as_i64().unwrap())
        .collect();
    assert!(reads.len() >= 4, "one entry per read: {reads:?}");
    assert_eq!(
        clock["t0_ms"].as_i64(),
        Some(reads[0]),
        "time.time() is the journaled answer"
    );
}

/// `print()` in a step is journaled before the step's next call, so
/// `run` (and `watch`) show it as the step goes, after the step's name:
/// the line before a 1.5 s durable sleep is in the journal before the
/// sleep began.
#[test]
fn a_steps_print_is_shown_as_it_goes() {
    let db = Db::new();
    let wasm = python_guest(PYKIT);
    let (_, stderr) = run_logged(&db, &wasm, "talk_wf", r#"{"sleep_ms": 1500}"#);
    let before = stderr
        .find("  [talk] before the sleep of 1500 ms")
        .unwrap_or_else(|| panic!("{stderr}"));
    let after = stderr
        .find("  [talk] after the sleep")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(before < after, "{stderr}");
    let id = common::run_execution_id(&stderr);
    let journal = db.journal(&id);
    let printed = entries(&journal, "output");
    let sleep = &entries(&journal, "sleep")[0];
    assert_eq!(printed.len(), 2, "one entry per flush: {printed:?}");
    assert!(
        printed[0]["seq"].as_i64() < sleep["seq"].as_i64()
            && printed[0]["at_ms"].as_i64() <= sleep["at_ms"].as_i64(),
        "the first line was journaled before the sleep: {journal:?}"
    );
    assert!(printed[1]["seq"].as_i64() > sleep["seq"].as_i64());
}

#[test]
fn build_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let build = |file: &Path| {
        let out = Command::new(common::bin())
            .args(["build", path(file), "-o"])
            .arg(dir.path().join("out.wasm"))
            .arg("--python")
            .arg(python())
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "building {} must fail",
            file.display()
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let header = "from cerebelum import step, workflow\n\n";

    let syntax = write(
        "syntax.py",
        &format!("{header}@step\nasync def a(context, inputs)\n    return 1\n"),
    );
    let err = build(&syntax);
    assert!(
        err.contains("syntax.py:4:") && err.contains("syntax error"),
        "{err}"
    );

    let nothing = write(
        "nothing.py",
        &format!("{header}@step\nasync def a(context, inputs):\n    return 1\n"),
    );
    let err = build(&nothing);
    assert!(err.contains("nothing.py: defines no workflow"), "{err}");

    let late = write(
        "late_dep.py",
        &format!(
            "{header}@step\nasync def a(context, inputs):\n    return 1\n\n\
             @step\nasync def b(context, a):\n    return 1\n\n\
             @workflow\ndef w(wf):\n    wf.timeline(b >> a)\n"
        ),
    );
    let err = build(&late);
    assert!(
        err.contains("late_dep.py:11:") && err.contains("step `b` needs `a`"),
        "{err}"
    );

    // Importable here, not inside a component: reported by the wasm build.
    let module = write(
        "needs_ssl.py",
        &format!(
            "{header}import ssl\n\n@step\nasync def a(context, inputs):\n    return 1\n\n\
             @workflow\ndef w(wf):\n    wf.timeline(a)\n"
        ),
    );
    let err = build(&module);
    assert!(
        err.contains("needs_ssl.py:3:") && err.contains("not available inside a wasm component"),
        "{err}"
    );
    assert!(
        !dir.path().join("out.wasm").exists(),
        "a failed build writes no package"
    );
}

#[test]
fn a_parallel_group_runs_its_steps_at_the_same_time() {
    let db = Db::new();
    let wasm = python_guest("examples/python/pipeline.py");
    let (_, stderr) = run_logged(&db, &wasm, "pipeline", r#"{"delay_ms": 1000}"#);
    let id = common::run_execution_id(&stderr);
    let journal = db.journal(&id);
    let started: Vec<i64> = entries(&journal, "start-step")
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(started.len(), 3, "one start-step per fetch");
    // Each fetch sleeps 1 s in its step: all three sleeps are journaled
    // before the first of them is over.
    let sleeps: Vec<&Value> = entries(&journal, "sleep")
        .into_iter()
        .filter(|e| e["payload"]["args"]["duration_ms"] == 1000)
        .collect();
    assert_eq!(sleeps.len(), 3);
    let last_sleep_began = sleeps
        .iter()
        .map(|e| e["at_ms"].as_i64().unwrap())
        .max()
        .unwrap();
    let first_due = sleeps
        .iter()
        .map(|e| e["payload"]["due_at"].as_i64().unwrap())
        .min()
        .unwrap();
    assert!(
        last_sleep_began < first_due,
        "the third fetch began sleeping at {last_sleep_began}, after the first had woken at {first_due}: \
         the group ran one step after another"
    );
}

#[test]
fn a_python_step_sends_its_request_once_across_kill9() {
    let db = Db::new();
    let server_http = common::http_server::TestServer::start();
    db.ok(&[
        "admin",
        "tenant",
        "update",
        "default",
        "--allow-http",
        &server_http.host(),
    ]);
    db.set_secret("default", "api-token", "py-secret-0042");
    let wasm = python_guest(PYKIT);
    let server = db.serve(&["--hibernate-after-ms", "500"]);
    let input = json!({ "url": server_http.url("/python"), "sleep_ms": 3000 });
    let id = db.start(&wasm, "fetcher", &input.to_string());
    db.wait_for(&id, LONG, |_, j| !entries(j, "sleep").is_empty());
    server.kill9();
    assert_eq!(server_http.seen().len(), 1);
    let _server = db.serve(&[]);
    let status = db.wait_status(&id, "completed", LONG);
    let seen = server_http.seen();
    assert_eq!(seen.len(), 1, "the request was sent again: {seen:?}");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some("Bearer py-secret-0042")
    );
    let fetched = &status["result"]["steps"]["fetch"];
    assert_eq!(fetched["status"], 200);
    assert_eq!(fetched["echo"]["path"], "/python");
    assert_eq!(fetched["server"], "cerebelum-test");
    assert_eq!(
        fetched["echo"]["authorization"], "Bearer [redacted]",
        "the secret came back in the response and was redacted in the result"
    );
    let journal = db.journal(&id);
    assert_eq!(entries(&journal, "http").len(), 1);
    assert!(
        !serde_json::to_string(&journal)
            .unwrap()
            .contains("py-secret-0042")
    );
}

/// `cerebelum dev FILE.py` (issue 35, 2) builds and uploads the file at
/// start, and again as a new version each time it is saved; the printed
/// key starts the new workflow through the server.
#[test]
fn cerebelum_dev_rebuilds_and_uploads_a_python_file_when_it_changes() {
    use std::io::BufRead;
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app.py");
    std::fs::copy(root().join("tests/guests/python/pybench.py"), &app).unwrap();
    let port = common::free_port();
    let mut child = db
        .command(&["dev", path(&app)])
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--python",
            path(&python()),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let _dev = common::Server::from(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let until = |wanted: &str| loop {
        let line = rx
            .recv_timeout(LONG)
            .unwrap_or_else(|_| panic!("`cerebelum dev` never said {wanted:?}"));
        if line.starts_with("dev: ") && !line.starts_with("dev: uploaded") {
            panic!("{line}");
        }
        if line.contains(wanted) {
            return line;
        }
    };
    let mut export = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut export)
        .unwrap();
    let key = export
        .trim()
        .split(' ')
        .find_map(|w| w.strip_prefix("CEREBELUM_API_KEY="))
        .unwrap_or_else(|| panic!("no key in {export:?}"))
        .to_owned();
    until("dev: uploaded app v1 (workflows: one, three, twenty_one, chain_100, chain_500)");

    let mut text = std::fs::read_to_string(&app).unwrap();
    text.push_str("\n\n@workflow\ndef added(wf):\n    wf.timeline(noop)\n");
    std::fs::write(&app, text).unwrap();
    until("dev: uploaded app v2 (workflows: one, three, twenty_one, chain_100, chain_500, added)");

    let cli = common::Remote::new(port, &key);
    let id = cli.ok(&["start", "app", "added", "--wait"]);
    assert!(id.lines().count() == 2, "{id}");
}

/// A burst of Python executions that the node's guest memory cannot hold
/// at once completes. Each holds a workflow instance while its step runs
/// in another; when workflow instances filled the budget, every step
/// waited for memory that only a step could free, and the budget failed
/// them with `memory` (1,000 Python executions started at once by
/// `scripts/bench-peers.sh` failed that way on 2026-11-29). Workflow
/// instances now wait for room to start while they hold half the budget.
#[test]
fn a_burst_of_python_executions_past_the_memory_budget_completes() {
    let db = Db::new();
    let key = db.tenant("burst", &[]);
    let port = common::free_port();
    let _server = db.serve_api(port, &["--max-guest-memory-mb", "256"]);
    let wasm = python_guest("tests/guests/python/pybench.py");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = common::grpc::connect(port, &key).await;
        common::grpc::upload(&mut client, "pybench", &wasm).await;
        let runs: Vec<_> = (0..60)
            .map(|_| {
                let mut client = client.clone();
                tokio::spawn(async move {
                    common::grpc::start_to_completion(&mut client, "pybench", "three", "{}")
                        .await
                        .1
                })
            })
            .collect();
        for run in runs {
            let ended = run.await.unwrap();
            assert_eq!(
                ended.status,
                cerebelum::api::pb::ExecutionStatus::Completed as i32,
                "{:?}",
                ended.error_json
            );
        }
    });
}
