//! Durability end to end: real `cerebelum serve` processes on real SQLite
//! files and real PostgreSQL databases, killed with SIGKILL at awkward
//! moments; replay must continue on the next line of user code without
//! repeating a completed step. Every test runs on both backends.

use cerebelum_harness as common;

use common::{
    Backend, Db, assert_contiguous, attempts, entries, guest, now_ms, results, step_call_seq,
};
use serde_json::Value;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

common::on_both_backends!(
    kill9_while_hibernated_wakes_at_the_original_due_time,
    kill9_during_an_in_process_sleep_wakes_at_the_original_due_time,
    kill9_during_a_running_step_reattempts_it,
    tampered_journal_fails_with_nondeterminism,
    operator_retry_keeps_completed_steps,
    a_step_cut_short_by_kill9_reruns_under_the_next_attempt_number,
    a_step_woken_from_hibernation_keeps_its_attempt_number,
    a_journal_written_before_the_typed_journal_replays,
    kill9_between_steps_start_and_result_many_times_loses_no_result,
);

fn crash_during_sleep(db: Db, serve_args: &[&str]) {
    let testkit = guest("testkit");
    let server = db.serve(serve_args);
    let id = db.start(&testkit, "step_sleep_step", r#"{"sleep_ms": 3000}"#);
    db.wait_for(&id, LONG, |_, j| !entries(j, "sleep").is_empty());
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
    let journal = db.journal(&id);
    assert_contiguous(&id, &journal);

    let first = step_call_seq(&journal, "record", 0);
    assert_eq!(attempts(&journal, first), 1, "step 1 ran exactly once");
    assert_eq!(results(&journal, first).len(), 1, "step 1 has one result");
    let second = step_call_seq(&journal, "record", 1);
    assert_eq!(results(&journal, second).len(), 1);
    assert_eq!(
        entries(&journal, "sleep").len(),
        1,
        "the sleep was not restarted"
    );

    // The clock read before the crash is replayed, not read again.
    let clock = entries(&journal, "now-ms");
    assert_eq!(
        status["result"]["before_ms"], clock[0]["payload"]["answer"],
        "the workflow saw the journaled clock"
    );
    assert!(clock[0]["at_ms"].as_i64().unwrap() <= killed_at);

    let after = status["result"]["after_ms"].as_i64().unwrap();
    assert!(
        after >= due_at,
        "woke at {after}, before the due time {due_at}"
    );
    assert!(
        after - due_at < 2500,
        "woke {} ms after the original due time: the sleep was restarted or scheduling is slow",
        after - due_at
    );
}

/// A step's call entry is not waited for: it rides in its result's
/// commit. SIGKILL the server at random moments of a long run of
/// sequential steps (almost always between a step's call and its
/// durable result), again and again: every journal read after a kill is
/// consistent and a prefix of the final journal (nothing durable is ever
/// rewritten or lost), every call has exactly one result, the result the
/// step returned, and at most one attempt per kill ran again.
fn kill9_between_steps_start_and_result_many_times_loses_no_result(db: Db) {
    const STEPS: usize = 3000;
    const KILLS: usize = 8;
    let testkit = guest("testkit");
    let mut server = db.serve(&[]);
    let id = db.start(&testkit, "many_steps", &format!(r#"{{"n": {STEPS}}}"#));
    let mut seed = now_ms() as u64 | 1;
    println!("seed {seed}");
    let mut snapshots = Vec::new();
    let mut seen_results = 0;
    for round in 0..KILLS {
        // Let the new server claim it (the dead one's lease expires) and
        // make progress, then kill it a random few ms later.
        db.wait_for(&id, LONG, |status, j| {
            status["status"] != "running" && status["status"] != "pending"
                || entries(j, "result").len() > seen_results
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 40));
        server.kill9();
        let journal = db.journal(&id);
        assert_consistent(&id, &journal);
        let results = entries(&journal, "result").len();
        assert!(results >= seen_results, "round {round}: results were lost");
        seen_results = results;
        snapshots.push(journal);
        server = db.serve(&[]);
    }
    let status = db.wait_status(&id, "completed", LONG);
    assert_eq!(status["result"], STEPS, "{status}");
    let journal = db.journal(&id);
    assert_consistent(&id, &journal);
    for (round, snapshot) in snapshots.iter().enumerate() {
        assert_eq!(
            &journal[..snapshot.len()],
            &snapshot[..],
            "what was durable at kill {round} was rewritten"
        );
    }
    let calls = entries(&journal, "call-step");
    assert_eq!(calls.len(), STEPS, "one call per step");
    let mut reattempts = 0;
    for (i, call) in calls.iter().enumerate() {
        let seq = call["seq"].as_i64().unwrap();
        let results = results(&journal, seq);
        assert_eq!(results.len(), 1, "call {seq}: {results:?}");
        assert_eq!(results[0]["payload"], serde_json::json!({"ok": {"i": i}}));
        reattempts += attempts(&journal, seq) - 1;
    }
    assert!(
        reattempts <= KILLS,
        "{reattempts} attempts ran again after {KILLS} kills"
    );
}

/// Contiguous seqs; every result answers an earlier call, once.
fn assert_consistent(id: &str, journal: &[Value]) {
    assert_contiguous(id, journal);
    let mut calls = std::collections::HashSet::new();
    let mut answered = std::collections::HashSet::new();
    for e in journal {
        if e["kind"] == "call-step" {
            calls.insert(e["seq"].as_i64().unwrap());
        }
        if e["kind"] == "result" {
            let call = e["ref_seq"].as_i64().unwrap();
            assert!(calls.contains(&call), "{id}: result {e} of no call");
            assert!(answered.insert(call), "{id}: a second result {e}");
        }
    }
}

fn kill9_while_hibernated_wakes_at_the_original_due_time(db: Db) {
    crash_during_sleep(db, &["--hibernate-after-ms", "500"]);
}

fn kill9_during_an_in_process_sleep_wakes_at_the_original_due_time(db: Db) {
    crash_during_sleep(db, &["--hibernate-after-ms", "60000"]);
}

fn kill9_during_a_running_step_reattempts_it(db: Db) {
    let testkit = guest("testkit");
    let server = db.serve(&[]);
    let id = db.start(&testkit, "spin_step", r#"{"iterations": 4000000000}"#);
    db.wait_for(&id, LONG, |_, j| !entries(j, "attempt").is_empty());
    server.kill9();
    let journal = db.journal(&id);
    assert!(
        entries(&journal, "result").is_empty(),
        "the step finished before the kill; it must still be running"
    );

    let _server = db.serve(&[]);
    let status = db.wait_status(&id, "completed", LONG);
    assert_eq!(status["result"], serde_json::json!({"done": true}));
    let journal = db.journal(&id);
    assert_contiguous(&id, &journal);
    let spin = step_call_seq(&journal, "spin", 0);
    assert_eq!(
        attempts(&journal, spin),
        2,
        "the interrupted attempt ran again"
    );
    assert_eq!(
        results(&journal, spin).len(),
        1,
        "its result is recorded once"
    );
}

/// A step killed in the middle (here: during an in-process sleep) runs
/// again under the next attempt number, so `attempt()` tells its code it
/// may be a re-run; it replays what the first run journaled (its sleep
/// goes on until the same due time) and its result is journaled once.
fn a_step_cut_short_by_kill9_reruns_under_the_next_attempt_number(db: Db) {
    let testkit = guest("testkit");
    let server = db.serve(&["--hibernate-after-ms", "60000"]);
    let id = db.start(&testkit, "hold_step", r#"{"mb": 1, "ms": 3000}"#);
    db.wait_for(&id, LONG, |_, j| {
        j.iter()
            .any(|e| e["kind"] == "sleep" && e["invocation"] != "wf")
    });
    server.kill9();
    let _server = db.serve(&["--hibernate-after-ms", "60000"]);
    let status = db.wait_status(&id, "completed", LONG);
    assert_eq!(status["result"]["attempt"], 2, "{status}");
    let journal = db.journal(&id);
    assert_contiguous(&id, &journal);
    let hold = step_call_seq(&journal, "hold", 0);
    let numbers: Vec<&Value> = journal
        .iter()
        .filter(|e| e["kind"] == "attempt" && e["ref_seq"] == hold)
        .map(|e| &e["payload"])
        .collect();
    assert_eq!(numbers.len(), 2, "{numbers:?}");
    assert_eq!(numbers[1]["attempt"], 2);
    assert_eq!(
        numbers[1]["invocation"],
        format!("{hold}.1"),
        "the re-run replays the first run's journal"
    );
    assert_eq!(
        entries(&journal, "sleep").len(),
        1,
        "the sleep was replayed"
    );
    assert_eq!(results(&journal, hold).len(), 1);
}

/// Hibernation is not a crash: a step woken from its durable sleep goes on
/// under its own attempt number.
fn a_step_woken_from_hibernation_keeps_its_attempt_number(db: Db) {
    let testkit = guest("testkit");
    let _server = db.serve(&["--hibernate-after-ms", "200"]);
    let id = db.start(&testkit, "hold_step", r#"{"mb": 1, "ms": 1000}"#);
    let status = db.wait_status(&id, "completed", LONG);
    assert_eq!(status["result"]["attempt"], 1, "{status}");
    let journal = db.journal(&id);
    let hold = step_call_seq(&journal, "hold", 0);
    let numbers: Vec<&Value> = journal
        .iter()
        .filter(|e| e["kind"] == "attempt" && e["ref_seq"] == hold)
        .map(|e| &e["payload"]["attempt"])
        .collect();
    assert_eq!(
        numbers,
        [1, 1],
        "it hibernated once and went on as attempt 1"
    );
}

/// seq, invocation, kind, ref_seq, args_hash, payload.
type OldRow = (
    i64,
    &'static str,
    &'static str,
    Option<i64>,
    Option<&'static str>,
    &'static str,
);

/// The journal of an execution hibernated in a one-hour sleep, row by row
/// exactly as the engine wrote it before the journal was typed (captured
/// from that version): seq, invocation, kind, ref_seq, args_hash, payload.
const OLD_JOURNAL: &[OldRow] = &[
    (
        1,
        "engine",
        "started",
        None,
        None,
        r#"{"input":{"sleep_ms":3600000},"package":"88437bdff321fd6a502ae3d8bde092389d93aea136cc2dc54251d94e6fad0253","workflow":"step_sleep_step"}"#,
    ),
    (
        2,
        "wf",
        "call-step",
        None,
        Some("9bbe357589299ef2"),
        r#"{"args":{"input":{"n":1},"options":null,"step":"record"}}"#,
    ),
    (
        3,
        "wf",
        "attempt",
        Some(2),
        None,
        r#"{"attempt":1,"step":"record"}"#,
    ),
    (4, "wf", "result", Some(2), None, r#"{"ok":{"n":1}}"#),
    (
        5,
        "wf",
        "now-ms",
        None,
        Some("1fc125e2810373a9"),
        r#"{"answer":1795463026514,"args":{}}"#,
    ),
    (
        6,
        "wf",
        "sleep",
        None,
        Some("c8241fadb5062db6"),
        r#"{"args":{"duration_ms":3600000},"due_at":DUE}"#,
    ),
];

/// A database written before the journal was typed loads and replays: the
/// recorded clock and step result come back, the sleep ends at its
/// recorded due time, and nothing recorded runs again.
fn a_journal_written_before_the_typed_journal_replays(db: Db) {
    let testkit = guest("testkit");
    db.ok(&["upload", testkit.to_str().unwrap()]);
    let packages: Vec<Value> = serde_json::from_str(&db.ok(&["packages", "--json"])).unwrap();
    let sha = packages[0]["sha256"].as_str().unwrap();
    let now = now_ms();
    let mut sql = format!(
        "INSERT INTO executions (id, tenant, package_sha256, package_name, package_version, \
         workflow, input, status, created_at, updated_at, wake_at, epoch) VALUES ('ex_old', \
         'default', '{sha}', 'testkit', 1, 'step_sleep_step', '{{\"sleep_ms\":3600000}}', \
         'waiting', {now}, {now}, {now}, 1);"
    );
    for (seq, invocation, kind, ref_seq, hash, payload) in OLD_JOURNAL {
        let quote = |v: Option<String>| v.map_or("NULL".into(), |v| format!("'{v}'"));
        // The sleep is due now: the hour has passed.
        let payload = payload.replace("DUE", &(now - 1000).to_string());
        sql.push_str(&format!(
            "INSERT INTO journal (execution_id, seq, invocation, kind, ref_seq, args_hash, \
             payload, at) VALUES ('ex_old', {seq}, '{invocation}', '{kind}', {}, {}, '{payload}', \
             {now});",
            quote(ref_seq.map(|r| r.to_string())),
            quote(hash.map(str::to_owned)),
        ));
    }
    db.sql(&sql);
    let _server = db.serve(&[]);
    let status = db.wait_status("ex_old", "completed", LONG);
    assert_eq!(status["result"]["before_ms"], 1795463026514_i64, "{status}");
    let journal = db.journal("ex_old");
    assert_contiguous("ex_old", &journal);
    let first = step_call_seq(&journal, "record", 0);
    assert_eq!(first, 2, "the recorded call is the first step call");
    assert_eq!(
        attempts(&journal, first),
        1,
        "the recorded step did not run again"
    );
    assert_eq!(results(&journal, first).len(), 1);
    let second = step_call_seq(&journal, "record", 1);
    assert_eq!(results(&journal, second)[0]["payload"]["ok"]["n"], 2);
}

fn tampered_journal_fails_with_nondeterminism(db: Db) {
    let testkit = guest("testkit");
    let server = db.serve(&["--hibernate-after-ms", "200"]);
    let id = db.start(&testkit, "step_sleep_step", r#"{"sleep_ms": 600000}"#);
    db.wait_status(&id, "waiting", LONG);
    server.kill9();

    // Make the journal say the first step call was a different one, and
    // make the execution due now.
    let journal = db.journal(&id);
    let first = step_call_seq(&journal, "record", 0);
    let rename = match db.backend {
        Backend::Sqlite => "json_set(payload, '$.args.step', 'other')",
        Backend::Postgres => "jsonb_set(payload::jsonb, '{args,step}', '\"other\"')::text",
    };
    let changed = db.sql(&format!(
        "UPDATE journal SET args_hash = 'tampered', payload = {rename} \
         WHERE execution_id = '{id}' AND seq = {first}"
    ));
    assert_eq!(changed, 1);
    assert_eq!(
        db.sql(&format!(
            "UPDATE executions SET wake_at = 0 WHERE id = '{id}'"
        )),
        1
    );

    let _server = db.serve(&[]);
    let status = db.wait_status(&id, "failed", LONG);
    let error = &status["error"];
    assert_eq!(error["kind"], "nondeterminism", "{status}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(&format!("seq {first}")), "{message}");
    assert!(
        message.contains("other"),
        "names the recorded call: {message}"
    );
    assert!(message.contains("record"), "names the new call: {message}");
}

/// Compiling a package takes seconds (tens for a Python one): the first
/// `run` says so, a later one (cached) does not.
#[test]
fn the_first_run_of_a_package_says_it_is_compiling() {
    let db = Db::new();
    let cache = tempfile::tempdir().unwrap();
    let testkit = guest("testkit");
    let run = || {
        let out = db
            .command(&[
                "run",
                testkit.to_str().unwrap(),
                "one_step",
                "--input",
                "{}",
            ])
            .env("CEREBELUM_CACHE_DIR", cache.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
    };
    let first = run();
    assert!(
        first.contains("compiling ") && first.contains("(first run only; it is cached)"),
        "{first}"
    );
    let second = run();
    assert!(!second.contains("compiling "), "{second}");
}

fn operator_retry_keeps_completed_steps(db: Db) {
    let testkit = guest("testkit");
    let until = now_ms() + 1500;
    let input = format!(r#"{{"until_ms": {until}}}"#);
    let failed = db.run(&[
        "run",
        testkit.to_str().unwrap(),
        "retry_me",
        "--input",
        &input,
    ]);
    assert!(
        !failed.status.success(),
        "fail_until must fail before {until}"
    );
    let listed: Vec<Value> = serde_json::from_str(&db.ok(&["list", "--json"])).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let status = db.status(&id);
    assert_eq!(status["status"], "failed");
    assert_eq!(status["error"]["kind"], "transient");

    while now_ms() <= until {
        std::thread::sleep(Duration::from_millis(50));
    }
    db.ok(&["retry", &id]);
    let _server = db.serve(&[]);
    db.wait_status(&id, "completed", LONG);
    let journal = db.journal(&id);
    assert_contiguous(&id, &journal);
    assert_eq!(entries(&journal, "retried").len(), 1);
    let first = step_call_seq(&journal, "noop", 0);
    assert_eq!(
        attempts(&journal, first),
        1,
        "the completed step is not run again"
    );
    let flaky = step_call_seq(&journal, "fail_until", 0);
    assert_eq!(
        attempts(&journal, flaky),
        2,
        "the failed call ran again, live"
    );
}
