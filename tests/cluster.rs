//! Several engine nodes on one PostgreSQL database: real `cerebelum serve`
//! processes sharing work, one killed with SIGKILL, one frozen with SIGSTOP
//! past its lease; approvals reaching whichever node claims the execution.

use cerebelum_harness as common;

use common::{
    Db, Server, assert_consistent, attempts, entries, guest, now_ms, results, step_call_seq,
};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(120);

/// Runs `f` on every item with `threads` threads; results in item order.
fn par_map<I: Sync, T: Send>(items: &[I], threads: usize, f: impl Fn(&I) -> T + Sync) -> Vec<T> {
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| s.spawn(|| part.iter().map(&f).collect::<Vec<T>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

/// Executions by id, as `list` shows them.
fn statuses(db: &Db) -> HashMap<String, Value> {
    let listed: Vec<Value> =
        serde_json::from_str(&db.ok(&["list", "--json", "--limit", "100000"])).unwrap();
    listed
        .into_iter()
        .map(|e| (e["id"].as_str().unwrap().to_owned(), e))
        .collect()
}

/// Approves `key` of `id` as soon as the execution waits for it.
fn approve_when_waiting(db: &Db, id: &str, key: &str, payload: &str) {
    let deadline = Instant::now() + LONG;
    loop {
        let out = db.run(&["approve", id, key, "--payload", payload]);
        if out.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("not waiting for"),
            "approving {id} failed: {stderr}"
        );
        assert!(Instant::now() < deadline, "{id} never waited for {key}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn upload(db: &Db, package: &Path) {
    db.ok(&["upload", package.to_str().unwrap(), "--name", "testkit"]);
}

fn start(db: &Db, workflow: &str, input: &Value) -> String {
    db.ok(&["start", "testkit", workflow, "--input", &input.to_string()])
        .trim()
        .to_owned()
}

#[test]
fn three_nodes_run_300_executions_through_a_kill9() {
    let db = Db::postgres();
    upload(&db, &guest("testkit"));
    let node_args = [
        "--lease-ms",
        "2000",
        "--tick-ms",
        "50",
        "--hibernate-after-ms",
        "1000",
    ];
    let mut nodes: Vec<Option<Server>> = (0..3).map(|_| Some(db.serve(&node_args))).collect();

    // 100 three-step workflows, 100 sleeps (some in process, some
    // hibernated), 100 approvals.
    let work: Vec<(&str, Value)> = (0..300)
        .map(|i| match i % 3 {
            0 => ("noop3", json!({ "i": i })),
            1 => (
                "step_sleep_step",
                json!({ "sleep_ms": 300 + (i * 37) % 2700 }),
            ),
            _ => ("approval", json!({ "key": "go" })),
        })
        .collect();
    let (first, second) = work.split_at(150);
    let mut ids = par_map(first, 4, |(wf, input)| start(&db, wf, input));

    // Midway: node 0 dies with executions in flight.
    let in_flight = statuses(&db)
        .values()
        .filter(|e| !["completed", "failed", "cancelled"].contains(&e["status"].as_str().unwrap()))
        .count();
    assert!(in_flight > 0, "nothing was in flight at the kill");
    nodes[0].take().unwrap().kill9();
    let killed_at = now_ms();

    ids.extend(par_map(second, 4, |(wf, input)| start(&db, wf, input)));
    let approvals: Vec<(usize, &String)> =
        ids.iter().enumerate().filter(|(i, _)| i % 3 == 2).collect();
    par_map(&approvals, 4, |(i, id)| {
        approve_when_waiting(&db, id, "go", &json!({ "n": i }).to_string())
    });

    let deadline = Instant::now() + LONG;
    let finished = loop {
        let all = statuses(&db);
        let done = ids
            .iter()
            .filter(|id| all[*id]["status"] == "completed")
            .count();
        let failed: Vec<&Value> = all
            .values()
            .filter(|e| ["failed", "cancelled"].contains(&e["status"].as_str().unwrap()))
            .collect();
        assert!(failed.is_empty(), "executions failed: {failed:?}");
        if done == ids.len() {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {} completed",
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let taken_over = finished
        .values()
        .filter(|e| e["epoch"].as_i64().unwrap() >= 2)
        .count();
    eprintln!(
        "300 executions completed; {in_flight} were in flight when node 0 was killed at \
         {killed_at}; {taken_over} were claimed more than once (woken from hibernation or taken over)"
    );

    let journals = par_map(&ids, 4, |id| (id.clone(), db.journal(id)));
    for (i, (id, journal)) in journals.iter().enumerate() {
        assert_consistent(id, journal);
        let result = &finished[id]["result"];
        match i % 3 {
            0 => assert_eq!(entries(journal, "call-step").len(), 3, "{id}"),
            1 => assert_eq!(entries(journal, "sleep").len(), 1, "{id}: one sleep"),
            _ => assert_eq!(
                result,
                &json!({ "decision": "approved", "payload": { "n": i } }),
                "{id}: its own approval reached it"
            ),
        }
    }
}

/// Waits until `log` contains `needle`.
fn wait_for_log(log: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the log never said {needle:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_frozen_node_past_its_lease_cannot_append() {
    let db = Db::postgres();
    upload(&db, &guest("testkit"));
    let log_a = db.dir.path().join("node-a.log");
    let node_a = db.serve_logged(&["--lease-ms", "1000"], Some(&log_a));
    // A step long enough to be frozen in the middle of.
    let id = start(
        &db,
        "spin_step",
        &json!({ "iterations": 3_000_000_000_u64 }),
    );
    db.wait_for(&id, LONG, |_, j| !entries(j, "attempt").is_empty());
    node_a.freeze();
    let frozen_at = Instant::now();
    let owner_a = db.status(&id)["owner"].clone();
    assert!(owner_a.is_string(), "node A owns it while it runs");

    // Node B takes over once A's lease has run out and runs the step again.
    let _node_b = db.serve(&["--lease-ms", "1000"]);
    let status = db.wait_status(&id, "completed", LONG);
    assert_ne!(status["owner"], owner_a);
    let journal = db.journal(&id);
    assert_consistent(&id, &journal);
    let spin = step_call_seq(&journal, "spin", 0);
    assert_eq!(attempts(&journal, spin), 2, "B ran the step again");
    assert!(
        frozen_at.elapsed() > Duration::from_secs(1),
        "B cannot have taken over before A's lease ran out"
    );

    // A wakes up, finishes its attempt, and its append is refused.
    node_a.resume();
    let text = wait_for_log(&log_a, "claimed again under a newer lease", LONG);
    assert!(
        text.contains(&id),
        "the refusal names the execution:\n{text}"
    );
    let after = db.journal(&id);
    assert_eq!(
        after, journal,
        "the refused append left the journal as it was"
    );
    assert_eq!(results(&after, spin).len(), 1);
    assert_eq!(db.status(&id)["status"], "completed");
}

#[test]
fn an_approval_reaches_the_node_that_claims_it_at_once() {
    let db = Db::postgres();
    upload(&db, &guest("testkit"));
    // Polling every 10 s: only LISTEN/NOTIFY can make this prompt.
    let slow_polling = ["--tick-ms", "10000"];
    let _b = db.serve(&slow_polling);
    let _c = db.serve(&slow_polling);
    let mut latencies = Vec::new();
    for round in 0..5 {
        let started_at = now_ms();
        let id = start(&db, "approval", &json!({ "key": "ship" }));
        db.wait_for(&id, Duration::from_secs(5), |s, j| {
            s["status"] == "waiting" && !entries(j, "await-approval").is_empty()
        });
        let waiting_after = now_ms() - started_at;
        assert!(
            waiting_after < 5000,
            "the start reached a node after {waiting_after} ms"
        );
        let approved_at = now_ms();
        db.ok(&["approve", &id, "ship", "--payload", &round.to_string()]);
        let status = db.wait_status(&id, "completed", Duration::from_secs(5));
        assert_eq!(status["result"]["payload"], json!(round));
        let journal = db.journal(&id);
        let resumed_at = entries(&journal, "result")[0]["at_ms"].as_i64().unwrap();
        latencies.push(resumed_at - approved_at);
    }
    latencies.sort();
    eprintln!(
        "approve → workflow resumed on another node: {latencies:?} ms (includes the CLI's start-up)"
    );
    assert!(
        latencies[2] < 2000,
        "approvals took {latencies:?} ms; the polling tick is 10 s"
    );
}
