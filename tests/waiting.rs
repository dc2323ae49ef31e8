//! Waiting: approvals (approve, reject, time out), polls (ready, exhausted,
//! timed out), cancellation reaching user code, fan-out running steps
//! concurrently, the journaled clock and randomness, and the deploy example
//! driven end to end through the CLI. Every test runs on SQLite and on
//! PostgreSQL.

use cerebelum_harness as common;
use common::WAIT;
use common::kit;

use common::{Db, entries};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

common::on_both_backends!(
    an_approval_payload_reaches_the_workflow,
    a_rejection_reason_reaches_the_workflow,
    an_approval_times_out_without_an_operator,
    a_poll_checks_until_ready,
    a_poll_gives_up_after_max_attempts,
    a_poll_times_out,
    cancelling_a_hibernated_execution_runs_its_compensation,
    cancelling_an_in_process_wait_interrupts_it,
    fan_out_runs_steps_concurrently,
    clock_and_randomness_are_journaled,
    the_deploy_example_end_to_end,
    a_due_execution_says_so_instead_of_a_negative_wait,
    due_sleeps_end_on_time_while_the_node_is_busy,
);

/// Hibernated sleeps end when they are due even while the node has no
/// room to resume their code (`--max-running 1`, held by an execution
/// waiting in process): the scheduler journals each sleep's result at its
/// due time, and the code resumes from it later, once.
fn due_sleeps_end_on_time_while_the_node_is_busy(db: Db) {
    const SLEEPERS: usize = 3;
    let _server = db.serve(&["--max-running", "1", "--hibernate-after-ms", "3000"]);
    let sleepers: Vec<String> = (0..SLEEPERS)
        .map(|_| db.start(&kit(), "step_sleep_step", r#"{"sleep_ms": 3500}"#))
        .collect();
    let mut due = Vec::new();
    for id in &sleepers {
        db.wait_status(id, "waiting", WAIT);
        let journal = db.journal(id);
        due.push(
            entries(&journal, "sleep")[0]["payload"]["due_at"]
                .as_i64()
                .unwrap(),
        );
    }
    let (first_due, last_due) = (*due.iter().min().unwrap(), *due.iter().max().unwrap());
    // A blocker waiting 3 s in process holds the one slot from 2 s before
    // the last sleeper is due to 1 s after.
    std::thread::sleep(Duration::from_millis(
        (last_due - 2000 - common::now_ms()).max(0) as u64,
    ));
    let blocker = db.start(&kit(), "step_sleep_step", r#"{"sleep_ms": 3000}"#);
    db.wait_for(&blocker, WAIT, |_, journal| {
        !entries(journal, "sleep").is_empty()
    });
    // Read after its journal showed the sleep (`wait_for`'s status was read
    // before the journal: it could still say "pending").
    let blocker_sleep = db.status(&blocker);
    assert_eq!(blocker_sleep["status"], "running", "{blocker_sleep}");
    let blocker_journal = db.journal(&blocker);
    let slept_at = entries(&blocker_journal, "sleep")[0]["at_ms"]
        .as_i64()
        .unwrap();
    assert!(
        slept_at < first_due,
        "the blocker took the slot only {} ms after the first sleeper was due (a slow machine?)",
        slept_at - first_due
    );

    db.wait_status(&blocker, "completed", WAIT);
    let blocker_end = db.journal(&blocker).last().unwrap()["at_ms"]
        .as_i64()
        .unwrap();
    for (id, due) in sleepers.iter().zip(due) {
        let status = db.wait_status(id, "completed", WAIT);
        let journal = db.journal(id);
        let sleep_seq = entries(&journal, "sleep")[0]["seq"].as_i64().unwrap();
        let results: Vec<&Value> = entries(&journal, "result")
            .into_iter()
            .filter(|e| e["ref_seq"] == sleep_seq)
            .collect();
        assert_eq!(results.len(), 1, "one end of the sleep: {journal:#?}");
        let ended = results[0]["at_ms"].as_i64().unwrap();
        assert!(
            ended >= due && ended < blocker_end,
            "{id}: the sleep due at {due} ended at {ended}, {} ms late, and the node's one slot \
             was busy until {blocker_end}: it waited for the slot",
            ended - due
        );
        // The code resumed from that result after the slot freed.
        let output = &status["result"];
        assert!(
            output["after_ms"].as_i64().unwrap() - output["before_ms"].as_i64().unwrap() >= 3500,
            "{status}"
        );
    }
}

/// An execution started with no engine serving the database is due at
/// once: `status` and `list` say "due now", not "wakes in -0.1s".
fn a_due_execution_says_so_instead_of_a_negative_wait(db: Db) {
    db.ok(&["upload", common::path(&kit()), "--name", "kit"]);
    let id = db.ok(&["start", "kit", "one_step", "--input", "{}"]);
    std::thread::sleep(Duration::from_millis(50));
    for args in [vec!["status", id.trim()], vec!["list"]] {
        let out = db.ok(&args);
        assert!(
            out.contains("pending") && out.contains("  due now"),
            "{out}"
        );
        assert!(!out.contains("wakes in -"), "{out}");
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `cerebelum run testkit <workflow>`: (exit success, stdout, stderr, id).
fn run_kit(db: &Db, workflow: &str, input: Value) -> (bool, String, String, String) {
    let input = input.to_string();
    let out = db.run(&["run", common::path(&kit()), workflow, "--input", &input]);
    let list = parse(&db.ok(&["list", "--json"]));
    let id = list[0]["id"].as_str().expect("run created an execution");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    (out.status.success(), stdout, stderr, id.to_owned())
}

/// Runs `workflow`, which must complete; returns (result, id).
fn completes(db: &Db, workflow: &str, input: Value) -> (Value, String) {
    let (ok, stdout, stderr, id) = run_kit(db, workflow, input);
    assert!(ok, "{workflow} failed: {stderr}");
    let status = db.status(&id);
    assert_eq!(status["status"], "completed");
    assert_eq!(parse(&stdout), status["result"], "run prints the result");
    (status["result"].clone(), id)
}

/// Runs `workflow`, which must fail; returns (error, id).
fn fails(db: &Db, workflow: &str, input: Value) -> (Value, String) {
    let (ok, _, stderr, id) = run_kit(db, workflow, input);
    assert!(!ok, "{workflow} should have failed");
    let status = db.status(&id);
    assert_eq!(status["status"], "failed", "{status}");
    assert!(stderr.contains("failed"), "{stderr}");
    (status["error"].clone(), id)
}

/// Waits until `id` is completed, failed or cancelled.
fn wait_done(db: &Db, id: &str) -> Value {
    db.wait_for(id, WAIT, |s, _| {
        ["completed", "failed", "cancelled"].contains(&s["status"].as_str().unwrap_or(""))
    })
}

/// Starts testkit `approval` of `key` under `db`'s server; waits until it
/// hibernates waiting for the approval.
fn waiting_approval(db: &Db, input: Value) -> String {
    let id = db.start(&kit(), "approval", &input.to_string());
    db.wait_for(&id, WAIT, |s, j| {
        s["status"] == "waiting" && !entries(j, "await-approval").is_empty()
    });
    id
}

/// The seq of the first entry of `kind` made by the workflow.
fn call_seq(journal: &[Value], kind: &str) -> i64 {
    let call = journal
        .iter()
        .find(|e| e["kind"] == kind && e["invocation"] == "wf")
        .unwrap_or_else(|| panic!("no {kind} call in {journal:?}"));
    call["seq"].as_i64().unwrap()
}

fn an_approval_payload_reaches_the_workflow(db: Db) {
    let _server = db.serve(&[]);
    let id = waiting_approval(&db, json!({"key": "go"}));
    let status = db.ok(&["status", &id]);
    assert!(
        status.contains("waiting for approval 'go': Approve go?"),
        "{status}"
    );
    db.ok(&["approve", &id, "go", "--payload", r#"{"by":"alice"}"#]);
    let done = db.wait_status(&id, "completed", WAIT);
    let expected = json!({"decision": "approved", "payload": {"by": "alice"}});
    assert_eq!(done["result"], expected);
    // The same decision again is a no-op; a different one is refused.
    db.ok(&["approve", &id, "go", "--payload", r#"{"by": "alice"}"#]);
    let stderr = db.fails(&["approve", &id, "go", "--payload", r#"{"by":"bob"}"#]);
    assert!(stderr.contains("already approved"), "{stderr}");
    let stderr = db.fails(&["reject", &id, "go", "--reason", "late"]);
    assert!(stderr.contains("already approved"), "{stderr}");
    assert_eq!(db.status(&id)["result"], expected);
}

fn a_rejection_reason_reaches_the_workflow(db: Db) {
    let _server = db.serve(&[]);
    let id = waiting_approval(&db, json!({"key": "go"}));
    db.ok(&["reject", &id, "go", "--reason", "not on a Friday"]);
    let done = db.wait_status(&id, "completed", WAIT);
    let expected = json!({"decision": "rejected", "reason": "not on a Friday"});
    assert_eq!(done["result"], expected);
}

fn an_approval_times_out_without_an_operator(db: Db) {
    let started = Instant::now();
    let (result, id) = completes(&db, "approval", json!({"key": "t", "timeout_ms": 800}));
    assert_eq!(result, json!({"decision": "timed-out"}));
    assert!(started.elapsed() >= Duration::from_millis(800));
    let stderr = db.fails(&["approve", &id, "t"]);
    assert!(stderr.contains("already timed-out"), "{stderr}");
}

fn a_poll_checks_until_ready(db: Db) {
    let input = json!({"ready_after_ms": 600, "interval_ms": 100, "max_attempts": 50});
    let (result, id) = completes(&db, "poll_ready", input);
    assert_eq!(result["ready"], true, "{result}");
    let journal = db.journal(&id);
    let poll = call_seq(&journal, "poll");
    assert!(entries(&journal, "poll-check").len() >= 2, "{journal:?}");
    let results = common::results(&journal, poll);
    assert_eq!(results.len(), 1, "{journal:?}");
    assert_eq!(results[0]["payload"]["ok"], result);
}

fn a_poll_gives_up_after_max_attempts(db: Db) {
    let input = json!({"ready_after_ms": 60_000, "interval_ms": 50, "max_attempts": 3});
    let (error, id) = fails(&db, "poll_ready", input);
    assert_eq!(error["kind"], "poll-exhausted", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("after 3 checks"),
        "{error}"
    );
    let journal = db.journal(&id);
    // One `poll-check` between two checks; each check is one invocation.
    assert_eq!(entries(&journal, "poll-check").len(), 2, "{journal:?}");
    let poll = call_seq(&journal, "poll");
    let mut checks: Vec<&str> = journal
        .iter()
        .filter_map(|e| e["invocation"].as_str())
        .filter(|i| i.starts_with(&format!("{poll}.")))
        .collect();
    checks.dedup();
    let expected: Vec<String> = (1..=3).map(|n| format!("{poll}.{n}")).collect();
    assert_eq!(checks, expected, "{journal:?}");
}

fn a_poll_times_out(db: Db) {
    let input = json!({"ready_after_ms": 60_000, "interval_ms": 100, "max_attempts": 1000,
        "timeout_ms": 700});
    let started = Instant::now();
    let (error, _) = fails(&db, "poll_ready", input);
    assert_eq!(error["kind"], "poll-timeout", "{error}");
    assert!(started.elapsed() >= Duration::from_millis(700));
}

/// Asserts that `id` ran its `compensate` step and ended cancelled.
fn assert_compensated(db: &Db, id: &str) {
    let journal = db.journal(id);
    let sleep = call_seq(&journal, "sleep");
    let cancelled = common::results(&journal, sleep);
    assert_eq!(cancelled.len(), 1, "{journal:?}");
    assert_eq!(cancelled[0]["payload"]["err"]["kind"], "cancelled");
    let compensate = common::step_call_seq(&journal, "compensate", 0);
    let results = common::results(&journal, compensate);
    assert_eq!(results.len(), 1, "{journal:?}");
    assert_eq!(results[0]["payload"]["ok"], json!({"compensated": true}));
    assert_eq!(journal.last().unwrap()["kind"], "cancelled");
    let status = db.status(id);
    assert_eq!(status["status"], "cancelled");
    assert_eq!(status["error"]["kind"], "cancelled");
}

fn cancelling_a_hibernated_execution_runs_its_compensation(db: Db) {
    let _server = db.serve(&[]);
    let id = db.start(&kit(), "cancellable", r#"{"sleep_ms":60000}"#);
    db.wait_status(&id, "waiting", WAIT);
    let out = db.ok(&["cancel", &id]);
    assert!(out.contains("cancellation requested"), "{out}");
    db.wait_status(&id, "cancelled", WAIT);
    assert_compensated(&db, &id);
}

fn cancelling_an_in_process_wait_interrupts_it(db: Db) {
    let _server = db.serve(&["--hibernate-after-ms", "100000"]);
    let id = db.start(&kit(), "cancellable", r#"{"sleep_ms":20000}"#);
    db.wait_for(&id, WAIT, |_, j| !entries(j, "sleep").is_empty());
    // (Read after the journal: `wait_for` reads the status first.)
    let status = db.status(&id);
    assert_eq!(status["status"], "running", "the sleep waits in process");
    let cancelled_at = Instant::now();
    db.ok(&["cancel", &id]);
    let done = wait_done(&db, &id);
    assert_eq!(done["status"], "cancelled", "{done}");
    let took = cancelled_at.elapsed();
    assert!(took < Duration::from_secs(15), "cancelling took {took:?}");
    assert_compensated(&db, &id);
}

fn fan_out_runs_steps_concurrently(db: Db) {
    let (result, id) = completes(&db, "fanout", json!({"n": 4, "sleep_ms": 400}));
    assert_eq!(result, json!([0, 1, 2, 3]));
    let journal = db.journal(&id);
    let starts: Vec<i64> = entries(&journal, "start-step")
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(starts.len(), 4, "{journal:?}");
    let seqs = |kind: &str| -> Vec<i64> {
        journal
            .iter()
            .filter(|e| e["kind"] == kind && starts.contains(&e["ref_seq"].as_i64().unwrap_or(-1)))
            .map(|e| e["seq"].as_i64().unwrap())
            .collect()
    };
    let (attempts, results) = (seqs("attempt"), seqs("result"));
    assert_eq!((attempts.len(), results.len()), (4, 4), "{journal:?}");
    let last_start = attempts.iter().max().unwrap();
    let first_end = results.iter().min().unwrap();
    assert!(last_start < first_end, "not concurrent: {journal:?}");
}

fn clock_and_randomness_are_journaled(db: Db) {
    let before = common::now_ms();
    let (result, id) = completes(&db, "clock_random", json!({}));
    assert_eq!(result["id"], id.as_str());
    let now = result["now"].as_i64().unwrap();
    assert!(now >= before && now <= common::now_ms(), "{result}");
    let journal = db.journal(&id);
    let answer = |kind: &str| {
        let calls = entries(&journal, kind);
        assert_eq!(calls.len(), 1, "{journal:?}");
        assert_eq!(calls[0]["invocation"], "wf");
        calls[0]["payload"]["answer"].clone()
    };
    assert_eq!(answer("now-ms"), result["now"]);
    assert_eq!(answer("random-u64"), result["random"]);
    assert!(result["random"].is_u64(), "{result}");
}

fn the_deploy_example_end_to_end(db: Db) {
    let _server = db.serve(&[]);
    let input = r#"{"name":"web-1","settle_ms":300,"ready_after_ms":300}"#;
    let id = db.start(&common::guest("deploy"), "deploy", input);
    db.wait_for(&id, WAIT, |s, j| {
        s["status"] == "waiting" && !entries(j, "await-approval").is_empty()
    });
    let journal = db.journal(&id);
    let approval = &entries(&journal, "await-approval")[0]["payload"]["args"];
    assert_eq!(approval["key"], "go-live");
    assert_eq!(approval["details"]["ip"], "10.0.0.7");
    // `configure` failed once and was retried.
    assert_eq!(entries(&journal, "attempt-failed").len(), 1, "{journal:?}");
    let status = db.ok(&["status", &id]);
    assert!(status.contains("cerebelum approve"), "{status}");
    db.ok(&["approve", &id, "go-live", "--payload", r#"{"by":"ops"}"#]);
    let done = db.wait_status(&id, "completed", WAIT);
    assert_eq!(done["result"]["status"], "live", "{done}");
    assert_eq!(done["result"]["approved_by"], "ops", "{done}");
    assert_eq!(done["result"]["droplet_id"], "d-web-1", "{done}");
    let out = db.run(&["watch", &id]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("completed"), "{stderr}");
    assert_eq!(parse(&String::from_utf8_lossy(&out.stdout)), done["result"]);
}
