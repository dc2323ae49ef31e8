//! Child workflows (issue 18), end to end with a real `cerebelum serve`
//! on both backends: a parent starts children concurrently (of its own
//! package and of another) and awaits their results, followed through
//! continue-as-new; `kill -9` between a child's end and the parent's
//! wake-up loses nothing; cancelling a parent cancels its children but
//! not detached ones; a child that ends soon costs no claim and no
//! hibernation.

use cerebelum_harness as common;
use common::WAIT;
use common::kit;

use common::{Db, entries, free_port, path};
use serde_json::{Value, json};
use std::time::Duration;

common::on_both_backends!(
    a_parent_awaits_its_children,
    kill9_between_a_childs_end_and_the_parents_wake_up,
    cancelling_a_parent_cancels_its_children_but_not_detached_ones,
    a_child_runs_at_once_and_its_parent_waits_in_process,
    a_parent_that_read_its_childs_end_hibernates_once,
);

/// Starts testkit `parent` with `children`.
fn start_parent(db: &Db, children: Value) -> String {
    db.start(
        &kit(),
        "parent",
        &json!({ "children": children }).to_string(),
    )
}

/// The children `parent` started, in order (from its journal).
fn children_of(db: &Db, parent: &str) -> Vec<String> {
    db.journal(parent)
        .iter()
        .filter(|e| e["kind"] == "start-child")
        .filter_map(|e| e["payload"]["child"]["id"].as_str().map(str::to_owned))
        .collect()
}

fn a_parent_awaits_its_children(db: Db) {
    // The same bytes under another name: another package of the tenant.
    db.ok(&["upload", path(&kit()), "--name", "other"]);
    let _server = db.serve(&[]);
    let parent = start_parent(
        &db,
        json!([
            { "workflow": "noop3", "input": { "a": 1 } },
            { "workflow": "countdown", "input": { "n": 0, "until": 2 } },
            { "workflow": "nothing", "input": "x", "package": "other" },
            { "workflow": "no_such_workflow", "input": {} },
        ]),
    );
    let done = db.wait_status(&parent, "completed", WAIT);
    assert_eq!(
        done["result"],
        json!({ "children": [{ "a": 1 }, 2, "x", { "error": "not-found" }] }),
        "{done}"
    );
    let children = children_of(&db, &parent);
    assert_eq!(children.len(), 3, "the unknown workflow started nothing");
    for child in &children {
        let status = db.status(child);
        assert_eq!(status["parent_id"], parent.as_str(), "{status}");
        assert_eq!(status["status"], "completed");
    }
    assert_eq!(db.status(&children[2])["package_name"], "other");
    // Its journal holds the children's results once.
    let journal = db.journal(&parent);
    for call in entries(&journal, "await-child") {
        let seq = call["seq"].as_i64().unwrap();
        assert_eq!(common::results(&journal, seq).len(), 1);
    }
    let text = db.ok(&["status", &children[0]]);
    assert!(text.contains(&format!("child of {parent}")), "{text}");
}

fn kill9_between_a_childs_end_and_the_parents_wake_up(db: Db) {
    for (round, delay_ms) in [0_u64, 5, 20, 60].into_iter().enumerate() {
        let server = db.serve(&[]);
        let parent = start_parent(
            &db,
            json!([{ "workflow": "signal_wait", "input": { "name": "go", "count": 1 } }]),
        );
        db.wait_for(&parent, WAIT, |s, j| {
            s["status"] == "waiting" && !entries(j, "await-child").is_empty()
        });
        let child = children_of(&db, &parent).remove(0);
        db.wait_for(&child, WAIT, |s, _| s["status"] == "waiting");
        let payload = json!({ "round": round }).to_string();
        db.ok(&["signal", &child, "go", "--payload", &payload]);
        // Killed while the child takes the signal, ends and wakes the
        // parent, or just after.
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.kill9();
        let _server = db.serve(&[]);
        let done = db.wait_status(&parent, "completed", WAIT);
        assert_eq!(
            done["result"],
            json!({ "children": [{ "signals": [{ "round": round }] }] }),
            "round {round}: {done}"
        );
        assert_eq!(children_of(&db, &parent).len(), 1, "one child");
    }
}

fn cancelling_a_parent_cancels_its_children_but_not_detached_ones(db: Db) {
    let _server = db.serve(&[]);
    let wait = json!({ "name": "go", "count": 1 });
    let parent = start_parent(
        &db,
        json!([
            { "workflow": "signal_wait", "input": wait },
            { "workflow": "signal_wait", "input": wait, "detached": true },
        ]),
    );
    db.wait_for(&parent, WAIT, |s, j| {
        s["status"] == "waiting" && !entries(j, "await-child").is_empty()
    });
    let children = children_of(&db, &parent);
    for child in &children {
        db.wait_for(child, WAIT, |s, _| s["status"] == "waiting");
    }
    let waiting = db.status(&parent)["waiting_on"].clone();
    assert_eq!(
        waiting,
        json!([format!("child signal_wait {}", children[0])]),
        "{waiting}"
    );
    db.ok(&["cancel", &parent]);
    db.wait_status(&parent, "cancelled", WAIT);
    db.wait_status(&children[0], "cancelled", WAIT);
    let detached = db.status(&children[1]);
    assert_eq!(detached["status"], "waiting", "{detached}");
    assert_eq!(detached["detached"], true);
    db.ok(&["signal", &children[1], "go", "--payload", "1"]);
    let done = db.wait_status(&children[1], "completed", WAIT);
    assert_eq!(done["result"], json!({ "signals": [1] }));
}

/// The counter `metric` (without labels) of the server on `port`.
fn counter(port: u16, metric: &str) -> f64 {
    let reply = common::http_request(port, "GET", "/metrics", &[], "");
    assert_eq!(reply.status, 200, "{}", reply.head);
    reply
        .body
        .lines()
        .find_map(|l| l.strip_prefix(metric)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {metric} in:\n{}", reply.body))
}

/// The node that runs a parent drives its children at once (created
/// claimed by it: no claim), and the parent waits for a child that ends
/// soon in process (no hibernation, no claim and replay to wake it).
fn a_child_runs_at_once_and_its_parent_waits_in_process(db: Db) {
    let port = free_port();
    // Long enough for the children to end even on a slow machine.
    let _server = db.serve_api(port, &["--hibernate-after-ms", "60000"]);
    let parent = start_parent(
        &db,
        json!([
            { "workflow": "noop3", "input": { "a": 1 } },
            { "workflow": "noop3", "input": { "a": 2 } },
        ]),
    );
    let done = db.wait_status(&parent, "completed", WAIT);
    assert_eq!(
        done["result"],
        json!({ "children": [{ "a": 1 }, { "a": 2 }] }),
        "{done}"
    );
    // `start` wrote the parent pending: the node's one claim.
    // Each claim moves an epoch on: which execution was claimed again, if
    // the count is off (it was 2 once in a fresh-clone run under load).
    let children = children_of(&db, &parent);
    let epochs: Vec<String> = std::iter::once(&parent)
        .chain(&children)
        .map(|id| format!("{id} at epoch {}", db.status(id)["epoch"]))
        .collect();
    assert_eq!(
        counter(port, "cerebelum_claims_total"),
        1.0,
        "claims ({epochs:?})"
    );
    assert_eq!(
        counter(port, "cerebelum_hibernations_total"),
        0.0,
        "hibernations"
    );
    assert_eq!(done["epoch"], 1, "the parent was claimed once: {done}");
    for child in children {
        let status = db.status(&child);
        assert_eq!(status["epoch"], 1, "created claimed: {status}");
    }
}

/// A child's end moves its parent's signal counter on (so a parent about
/// to hibernate is woken by it). A parent that read that end in process
/// and hibernates later, for a sleep, counts it as seen: it is not due at
/// once for an end it has, which would cost one claim and replay more.
fn a_parent_that_read_its_childs_end_hibernates_once(db: Db) {
    let port = free_port();
    // The parent waits in process for its child even on a slow machine;
    // its hour's sleep still hibernates at once.
    let _server = db.serve_api(port, &["--hibernate-after-ms", "60000"]);
    let input = json!({
        "children": [{ "workflow": "noop3", "input": { "a": 1 } }],
        "then_sleep_ms": 3_600_000,
    });
    let parent = db.start(&kit(), "parent", &input.to_string());
    db.wait_status(&parent, "waiting", WAIT);
    // A parent due at once would be claimed again within a tick (50 ms).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        counter(port, "cerebelum_hibernations_total"),
        1.0,
        "hibernations"
    );
    assert_eq!(counter(port, "cerebelum_claims_total"), 1.0, "claims");
    let status = db.status(&parent);
    assert_eq!(
        (&status["status"], &status["epoch"]),
        (&json!("waiting"), &json!(1)),
        "{status}"
    );
}
