//! Signals, published state, pause/resume and continue-as-new (issue 18),
//! end to end with
//! a real `cerebelum serve` on both backends: signals sent before the
//! workflow waits are buffered in order and each delivered once (also
//! across `kill -9` of the server, with signals sent while it is down),
//! idempotent by signal id, timed out; `status` shows where an execution
//! stands and its state; an HTTP trigger signals an execution; a paused
//! execution runs nothing until resumed, also one paused mid-run; a
//! workflow continues as new executions, one per run, also across kill -9.

use cerebelum_harness as common;
use common::WAIT;
use common::kit;

use common::{Db, Remote, entries, free_port, http_request, path};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

common::on_both_backends!(
    signals_sent_before_the_wait_are_delivered_in_order_once,
    a_signal_wait_times_out,
    status_shows_the_signal_wait_and_the_state,
    signals_survive_kill9_of_the_server,
    a_trigger_signals_an_execution_once_per_delivery,
    a_paused_execution_runs_nothing_until_resumed,
    a_running_execution_pauses_before_its_next_step,
    a_pause_through_the_serving_node_reaches_its_execution_at_once,
    a_workflow_continues_as_new_with_an_empty_journal,
    continue_as_new_survives_kill9_of_the_server,
);

/// Starts testkit `signal_wait` taking `count` signals `name`.
fn start_waiting(db: &Db, name: &str, count: usize) -> String {
    let input = json!({ "name": name, "count": count }).to_string();
    db.start(&kit(), "signal_wait", &input)
}

/// Waits until `id` waits for a signal (hibernated, its call journaled).
fn wait_signal_wait(db: &Db, id: &str, waits: usize) -> Value {
    db.wait_for(id, WAIT, |s, j| {
        s["status"] == "waiting" && entries(j, "await-signal").len() >= waits
    })
}

fn signal(db: &Db, id: &str, name: &str, payload: Value, signal_id: &str) -> String {
    let payload = payload.to_string();
    db.ok(&["signal", id, name, "--payload", &payload, "--id", signal_id])
}

fn signals_sent_before_the_wait_are_delivered_in_order_once(db: Db) {
    // Sent while no server runs: all three are buffered before the
    // workflow first waits.
    let id = start_waiting(&db, "go", 3);
    for n in 1..=3 {
        let out = signal(&db, &id, "go", json!({ "n": n }), &format!("s{n}"));
        assert!(out.contains(&format!("#{n} sent")), "{out}");
    }
    // The same id again stores nothing; with another payload it is refused.
    let again = signal(&db, &id, "go", json!({ "n": 2 }), "s2");
    assert!(again.contains("before"), "{again}");
    let stderr = db.fails(&["signal", &id, "go", "--payload", "7", "--id", "s2"]);
    assert!(stderr.contains("signal id 's2'"), "{stderr}");
    // Another name is not delivered to `go`.
    signal(&db, &id, "other", json!("x"), "o1");
    let status = db.status(&id);
    assert_eq!(status["buffered_signals"].as_array().unwrap().len(), 4);

    let _server = db.serve(&[]);
    let done = db.wait_status(&id, "completed", WAIT);
    assert_eq!(
        done["result"],
        json!({ "signals": [{ "n": 1 }, { "n": 2 }, { "n": 3 }] })
    );
    let buffered = done["buffered_signals"].as_array().unwrap();
    assert_eq!(buffered.len(), 1, "{done}");
    assert_eq!(buffered[0]["name"], "other");
    // Each delivered once: three results of await-signal, three calls.
    let journal = db.journal(&id);
    assert_eq!(entries(&journal, "await-signal").len(), 3);
    // An ended execution takes no more signals, and says so.
    let stderr = db.fails(&["signal", &id, "go", "--payload", "{}"]);
    assert!(stderr.contains("takes no more signals"), "{stderr}");
    // Bad input is refused before anything is stored.
    let stderr = db.fails(&["signal", &id, "go", "--payload", "{not json"]);
    assert!(stderr.contains("--payload"), "{stderr}");
    let stderr = db.fails(&["signal", "ex_nope", "go"]);
    assert!(stderr.contains("no execution"), "{stderr}");
}

fn a_signal_wait_times_out(db: Db) {
    let _server = db.serve(&[]);
    let input = json!({ "name": "never", "count": 2, "timeout_ms": 300 }).to_string();
    let id = db.start(&kit(), "signal_wait", &input);
    let done = db.wait_status(&id, "completed", WAIT);
    assert_eq!(
        done["result"],
        json!({ "signals": ["timed-out", "timed-out"] })
    );
    // A timeout stores no signal.
    assert_eq!(done["buffered_signals"], json!([]));
}

fn status_shows_the_signal_wait_and_the_state(db: Db) {
    let _server = db.serve(&[]);
    let id = start_waiting(&db, "dns-propagated", 2);
    let status = wait_signal_wait(&db, &id, 1);
    assert_eq!(status["waiting_on"], json!(["signal 'dns-propagated'"]));
    assert_eq!(
        status["state"],
        json!({ "received": 0, "waiting_for": "dns-propagated" })
    );
    let text = db.ok(&["status", &id]);
    assert!(
        text.contains("waiting for signal 'dns-propagated'")
            && text.contains(&format!("cerebelum signal {id} dns-propagated")),
        "{text}"
    );
    assert!(text.contains(r#"state: {"received":0"#), "{text}");
    signal(&db, &id, "dns-propagated", json!({ "ok": true }), "a");
    // The state moves on once the signal is taken (status and journal are
    // read one after the other: wait on the state itself).
    let status = db.wait_for(&id, WAIT, |s, _| s["state"]["received"] == 1);
    assert_eq!(status["state"]["waiting_for"], "dns-propagated", "{status}");
    signal(&db, &id, "dns-propagated", json!({ "ok": true }), "b");
    let done = db.wait_status(&id, "completed", WAIT);
    assert_eq!(done["state"], json!({ "received": 2, "done": true }));
    assert_eq!(done["waiting_on"], json!([]));
}

fn signals_survive_kill9_of_the_server(db: Db) {
    const ROUNDS: usize = 6;
    let id = start_waiting(&db, "tick", ROUNDS);
    for round in 0..ROUNDS {
        let server = db.serve(&[]);
        // Alternately sent while the server runs and while it is down (the
        // next round's server finds it buffered).
        signal(&db, &id, "tick", json!(round), &format!("t{round}"));
        // Killed at a moment that moves through the delivery: before the
        // workflow is claimed, while it takes the signal, after its step.
        std::thread::sleep(Duration::from_millis([0, 15, 40, 80, 150, 300][round]));
        server.kill9();
        // A resend after the crash (the client did not know) stores nothing.
        let again = signal(&db, &id, "tick", json!(round), &format!("t{round}"));
        assert!(again.contains("before"), "{again}");
    }
    let _server = db.serve(&[]);
    let done = db.wait_status(&id, "completed", WAIT);
    let expected: Vec<Value> = (0..ROUNDS).map(|r| json!(r)).collect();
    assert_eq!(done["result"], json!({ "signals": expected }), "{done}");
    assert_eq!(done["buffered_signals"], json!([]));
    let journal = db.journal(&id);
    common::assert_contiguous(&id, &journal);
    // One result per await-signal call: none delivered twice.
    for call in entries(&journal, "await-signal") {
        let seq = call["seq"].as_i64().unwrap();
        assert_eq!(common::results(&journal, seq).len(), 1, "call {seq}");
    }
}

fn a_trigger_signals_an_execution_once_per_delivery(db: Db) {
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&kit()), "--name", "kit"]);
    let token = cli
        .ok(&["trigger", "create", "dns", "kit", "signal_wait"])
        .trim()
        .to_owned();
    let bearer = format!("Bearer {token}");
    let input = json!({ "name": "propagated", "count": 1 }).to_string();
    let id = cli
        .ok(&["start", "kit", "signal_wait", "--input", &input])
        .trim()
        .to_owned();
    let post = |path: &str, headers: &[(&str, &str)], body: &str| {
        let reply = http_request(port, "POST", path, headers, body);
        (reply.status, reply.body)
    };
    let to = format!("/t/acme/dns/{id}/propagated");
    let headers = [("authorization", bearer.as_str()), ("x-delivery-id", "d1")];
    let (status, body) = post(&to, &headers, r#"{"zone":"example.com"}"#);
    assert_eq!(status, 202, "{body}");
    // A redelivery sends nothing again.
    let (status, body) = post(&to, &headers, r#"{"zone":"example.com"}"#);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""created":false"#), "{body}");
    // No token: refused; an execution of another workflow: not found.
    let (status, _) = post(&to, &[], "{}");
    assert_eq!(status, 401);
    let other = cli
        .ok(&["start", "kit", "noop3", "--input", "{}"])
        .trim()
        .to_owned();
    let (status, body) = post(
        &format!("/t/acme/dns/{other}/propagated"),
        &[("authorization", bearer.as_str())],
        "{}",
    );
    assert_eq!(status, 404, "{body}");
    let done = cli.wait_ended(&id, WAIT);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["result"],
        json!({ "signals": [{ "zone": "example.com" }] })
    );
    // The audit log names the trigger as the sender.
    let audit = db.ok(&["audit", "--json"]);
    assert!(audit.contains("trigger:dns"), "{audit}");
}

fn a_paused_execution_runs_nothing_until_resumed(db: Db) {
    let _server = db.serve(&[]);
    let id = start_waiting(&db, "go", 2);
    wait_signal_wait(&db, &id, 1);
    let out = db.ok(&["pause", &id]);
    assert!(out.contains("paused"), "{out}");
    assert_eq!(db.status(&id)["paused"], true);
    // Signals sent while paused are kept, and nothing runs.
    signal(&db, &id, "go", json!(1), "a");
    signal(&db, &id, "go", json!(2), "b");
    let before = db.journal(&id).len();
    std::thread::sleep(Duration::from_millis(1500));
    let status = db.status(&id);
    assert_eq!(status["status"], "waiting", "{status}");
    assert_eq!(status["wake_at_ms"], Value::Null, "{status}");
    assert_eq!(db.journal(&id).len(), before, "a paused execution ran");
    assert_eq!(status["buffered_signals"].as_array().unwrap().len(), 2);
    let text = db.ok(&["status", &id]);
    assert!(text.contains("PAUSED"), "{text}");
    db.ok(&["resume", &id]);
    let done = db.wait_status(&id, "completed", WAIT);
    assert_eq!(done["result"], json!({ "signals": [1, 2] }));
    assert_eq!(done["paused"], false);
    let stderr = db.fails(&["pause", &id]);
    assert!(stderr.contains("nothing to pause"), "{stderr}");
    let audit = db.ok(&["audit", "--json"]);
    assert!(
        audit.contains("execution.pause") && audit.contains("execution.resume"),
        "{audit}"
    );
}

fn a_running_execution_pauses_before_its_next_step(db: Db) {
    let _server = db.serve(&[]);
    // Long enough to be paused mid-run: 200 steps of 20 ms in a row.
    let id = db.start(&kit(), "naps", r#"{"n":200,"sleep_ms":20}"#);
    db.wait_for(&id, WAIT, |_, j| entries(j, "call-step").len() >= 5);
    db.ok(&["pause", &id]);
    // The node learns of the pause at its next lease renewal (a third of
    // the lease: 1 s in tests), then starts no new step.
    let stopped = db.wait_for(&id, WAIT, |s, _| s["status"] == "waiting");
    let steps = entries(&db.journal(&id), "call-step").len();
    assert!(steps < 200, "it ran to the end: {stopped}");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        entries(&db.journal(&id), "call-step").len(),
        steps,
        "a paused execution started steps"
    );
    db.ok(&["resume", &id]);
    let done = db.wait_status(&id, "completed", WAIT);
    let journal = db.journal(&id);
    assert_eq!(entries(&journal, "call-step").len(), 200, "{done}");
    assert_eq!(done["result"], 200);
    common::assert_contiguous(&id, &journal);
}

/// Follows the continue-as-new chain from `first` until an execution
/// completes with something else than `{"continued_as": …}`: the ids in
/// order and the last result.
fn follow_chain(db: &Db, first: &str) -> (Vec<String>, Value) {
    let mut ids = vec![first.to_owned()];
    loop {
        let id = ids.last().unwrap().clone();
        let done = db.wait_status(&id, "completed", WAIT);
        match done["result"]["continued_as"].as_str() {
            Some(next) => {
                let next_status = db.status(next);
                assert_eq!(next_status["continued_from"], id.as_str(), "{next_status}");
                ids.push(next.to_owned());
            }
            None => return (ids, done["result"].clone()),
        }
        assert!(ids.len() < 100, "the chain does not end: {ids:?}");
    }
}

/// Every execution of `workflow`, as `list --json` shows them.
fn executions_of(db: &Db, workflow: &str) -> Vec<Value> {
    let list = db.ok(&["list", "--workflow", workflow, "--limit", "1000", "--json"]);
    serde_json::from_str::<Vec<Value>>(&list).unwrap()
}

fn a_pause_through_the_serving_node_reaches_its_execution_at_once(db: Db) {
    let key = db.tenant("acme", &[]);
    let port = free_port();
    // A lease renewal (a third of the lease) would take 20 s.
    let _server = db.serve_api(port, &["--lease-ms", "60000"]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&kit()), "--name", "kit"]);
    let id = cli
        .ok(&[
            "start",
            "kit",
            "naps",
            "--input",
            r#"{"n":300,"sleep_ms":20}"#,
        ])
        .trim()
        .to_owned();
    let started = Instant::now();
    while entries(&cli.journal(&id), "call-step").len() < 5 {
        assert!(started.elapsed() < WAIT, "it never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    cli.ok(&["pause", &id]);
    let paused = Instant::now();
    while cli.status(&id)["status"] != "waiting" {
        assert!(
            paused.elapsed() < Duration::from_secs(10),
            "the pause did not reach the running execution"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cli.ok(&["resume", &id]);
    let done = cli.wait_ended(&id, WAIT);
    assert_eq!(done["result"], 300, "{done}");
}

fn a_workflow_continues_as_new_with_an_empty_journal(db: Db) {
    let _server = db.serve(&[]);
    let id = db.start(&kit(), "countdown", r#"{"n":0,"until":5}"#);
    let (ids, last) = follow_chain(&db, &id);
    assert_eq!(last, json!(5));
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert_eq!(db.status(&ids[0])["continued_from"], Value::Null);
    for (n, id) in ids.iter().enumerate() {
        let status = db.status(id);
        assert_eq!(status["input"]["n"], n, "{status}");
        // Each run starts with an empty journal: started, the step, maybe
        // the continue-as-new call, finished.
        let journal = db.journal(id);
        assert!(journal.len() <= 7, "{id}: {journal:?}");
        assert_eq!(
            entries(&journal, "continue-as-new").len(),
            usize::from(n < 5)
        );
    }
    assert_eq!(executions_of(&db, "countdown").len(), 6);
    let text = db.ok(&["status", &ids[1]]);
    assert!(text.contains(&format!("continues {}", ids[0])), "{text}");
}

fn continue_as_new_survives_kill9_of_the_server(db: Db) {
    const UNTIL: u64 = 8;
    let input = json!({ "n": 0, "until": UNTIL }).to_string();
    let id = db.start(&kit(), "countdown", &input);
    for pause_ms in [10, 30, 60, 100, 160] {
        let server = db.serve(&[]);
        std::thread::sleep(Duration::from_millis(pause_ms));
        server.kill9();
    }
    let _server = db.serve(&[]);
    let (ids, last) = follow_chain(&db, &id);
    assert_eq!(last, json!(UNTIL));
    assert_eq!(ids.len() as u64, UNTIL + 1);
    // Exactly one execution per run: no crash started one twice.
    let all = executions_of(&db, "countdown");
    let mut runs: Vec<u64> = all
        .iter()
        .map(|e| e["input"]["n"].as_u64().unwrap())
        .collect();
    runs.sort_unstable();
    assert_eq!(runs, (0..=UNTIL).collect::<Vec<_>>(), "{all:?}");
}
