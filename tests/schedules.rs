//! Schedules (issue 18), end to end with real `cerebelum serve` processes:
//! every due time starts one execution, across `kill -9` of the server and
//! across two servers on one PostgreSQL database; overlap policies, pause,
//! resume, trigger-now and delete through the CLI and the gRPC API.

use cerebelum_harness as common;
use common::WAIT;

use common::{Db, Remote, free_port, guest, path};
use serde_json::Value;
use std::time::{Duration, Instant};

common::on_both_backends!(
    every_due_time_starts_one_execution_across_kill9,
    overlap_policies_pause_resume_and_trigger_now
);

/// The due times (ms) of schedule `name`'s executions, each with its
/// status, in order.
fn fired(db: &Db, name: &str) -> Vec<(i64, String)> {
    let prefix = format!("schedule:{name}:");
    let rows = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(common::executions_by_key(&db.url, &prefix));
    // (`trigger-now`'s keys are `schedule:NAME:now:MS`: not a due time.)
    let mut due: Vec<(i64, String)> = rows
        .into_iter()
        .filter_map(|(key, status, _)| Some((key.strip_prefix(&prefix)?.parse().ok()?, status)))
        .collect();
    due.sort();
    due
}

/// Asserts that `due` are consecutive seconds: no due time was lost.
fn assert_every_second(due: &[(i64, String)]) {
    assert!(due.len() >= 2, "{due:?}");
    for pair in due.windows(2) {
        assert_eq!(pair[1].0 - pair[0].0, 1000, "a due time was lost: {due:?}");
    }
}

/// Waits while `busy` holds (at most [`WAIT`]).
fn wait_while(busy: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while busy() {
        assert!(Instant::now() < deadline, "timed out waiting");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn schedule(db: &Db, name: &str) -> Value {
    db.ok(&["schedule", "list", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no schedule {name}"))
}

fn every_due_time_starts_one_execution_across_kill9(db: Db) {
    db.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    db.ok(&[
        "schedule",
        "create",
        "tick",
        "kit",
        "noop3",
        "--cron",
        "* * * * * *",
        "--overlap",
        "allow",
        "--catch-up",
        "10",
    ]);
    // Servers killed at arbitrary moments, some of them between a start
    // and the move of the schedule; the downtime is caught up.
    for round in 0..4u64 {
        let server = db.serve(&[]);
        std::thread::sleep(Duration::from_millis(1300 + 370 * round));
        server.kill9();
        std::thread::sleep(Duration::from_millis(700));
    }
    let server = db.serve(&[]);
    let deadline = Instant::now() + WAIT;
    loop {
        let due = fired(&db, "tick");
        if due.len() >= 8 && due.iter().all(|(_, s)| s == "completed") {
            break;
        }
        assert!(Instant::now() < deadline, "{due:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(server);
    let due = fired(&db, "tick");
    assert_every_second(&due);
    let listed = schedule(&db, "tick");
    assert_eq!(
        listed["fired"].as_i64().unwrap(),
        due.len() as i64,
        "each due time counted once: {listed}"
    );
    assert_eq!(listed["skipped"], 0, "{listed}");
    assert_eq!(listed["tenant"], "default", "{listed}");
    assert!(listed["last_error"].is_null(), "{listed}");
}

#[test]
fn two_servers_on_one_postgresql_fire_each_due_time_once() {
    let db = Db::postgres();
    db.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    db.ok(&[
        "schedule",
        "create",
        "both",
        "kit",
        "noop3",
        "--cron",
        "* * * * * *",
        "--overlap",
        "allow",
    ]);
    let a = db.serve(&[]);
    let b = db.serve(&[]);
    std::thread::sleep(Duration::from_secs(5));
    // One goes away for a while; the other keeps firing.
    a.kill9();
    std::thread::sleep(Duration::from_secs(2));
    wait_while(|| fired(&db, "both").iter().any(|(_, s)| s != "completed"));
    drop(b);
    let due = fired(&db, "both");
    assert!(due.len() >= 6, "{due:?}");
    assert_every_second(&due);
    let listed = schedule(&db, "both");
    assert_eq!(
        listed["fired"].as_i64().unwrap(),
        due.len() as i64,
        "{listed}"
    );
}

fn overlap_policies_pause_resume_and_trigger_now(db: Db) {
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);

    // Clear refusals, nothing stored.
    let bad_cron = cli.fails(&[
        "schedule", "create", "x", "kit", "noop3", "--cron", "0 3 * *",
    ]);
    assert!(bad_cron.contains("has 4 fields"), "{bad_cron}");
    let bad_zone = cli.fails(&[
        "schedule",
        "create",
        "x",
        "kit",
        "noop3",
        "--cron",
        "0 3 * * *",
        "--timezone",
        "Mars/Base",
    ]);
    assert!(bad_zone.contains("unknown time zone"), "{bad_zone}");
    let bad_workflow = cli.fails(&[
        "schedule",
        "create",
        "x",
        "kit",
        "nope",
        "--cron",
        "0 3 * * *",
    ]);
    assert!(
        bad_workflow.contains("no workflow named 'nope'"),
        "{bad_workflow}"
    );
    let bad_input = cli.fails(&[
        "schedule",
        "create",
        "x",
        "kit",
        "noop3",
        "--cron",
        "0 3 * * *",
        "--input",
        "{",
    ]);
    assert!(bad_input.contains("not valid JSON"), "{bad_input}");
    assert!(cli.ok(&["schedule", "list"]).trim().is_empty());

    // Skip: an execution waiting for approval holds later due times off.
    let input = r#"{"key":"go"}"#;
    cli.ok(&[
        "schedule",
        "create",
        "held",
        "kit",
        "approval",
        "--cron",
        "* * * * * *",
        "--input",
        input,
    ]);
    let listed = |name: &str| -> Value {
        cli.ok(&["schedule", "list", "--json"])
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|s| s["name"] == name)
            .unwrap()
    };
    wait_while(|| listed("held")["skipped"].as_i64().unwrap() < 2);
    let held = fired(&db, "held");
    assert_eq!(
        held.len(),
        1,
        "skip starts nothing while one is open: {held:?}"
    );
    let first = listed("held")["last_execution"]
        .as_str()
        .unwrap()
        .to_owned();
    cli.ok(&["approve", &first, "go"]);
    wait_while(|| fired(&db, "held").len() < 2);
    // Pause: nothing more fires; trigger-now still starts one.
    let paused = cli.ok(&["schedule", "pause", "held"]);
    assert!(paused.contains("PAUSED"), "{paused}");
    let second = listed("held")["last_execution"]
        .as_str()
        .unwrap()
        .to_owned();
    cli.ok(&["approve", &second, "go"]);
    cli.wait_ended(&second, WAIT);
    let before = fired(&db, "held").len();
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(fired(&db, "held").len(), before, "a paused schedule fired");
    let now = cli
        .ok(&["schedule", "trigger-now", "held"])
        .trim()
        .to_owned();
    assert_eq!(cli.status(&now)["workflow"], "approval");
    cli.ok(&["approve", &now, "go"]);
    // Resume: it fires again.
    cli.ok(&["schedule", "resume", "held"]);
    wait_while(|| fired(&db, "held").len() == before);
    cli.ok(&["schedule", "delete", "held"]);

    // Buffer-one: the due time waits for the open execution, then starts.
    cli.ok(&[
        "schedule",
        "create",
        "queued",
        "kit",
        "approval",
        "--cron",
        "* * * * * *",
        "--input",
        input,
        "--overlap",
        "buffer-one",
    ]);
    wait_while(|| fired(&db, "queued").is_empty());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(fired(&db, "queued").len(), 1, "buffer-one waits");
    let open = listed("queued")["last_execution"]
        .as_str()
        .unwrap()
        .to_owned();
    cli.ok(&["approve", &open, "go"]);
    wait_while(|| fired(&db, "queued").len() < 2);
    // The due times that passed meanwhile collapsed into that one.
    assert!(listed("queued")["skipped"].as_i64().unwrap() >= 1);
    cli.ok(&["schedule", "delete", "queued"]);
    let gone = cli.fails(&["schedule", "pause", "queued"]);
    assert!(gone.contains("no schedule named 'queued'"), "{gone}");

    // Every change is in the audit log, by the tenant's key.
    let audit = db.ok(&["audit", "--tenant", "acme", "--json", "--limit", "1000"]);
    for action in [
        "schedule.create",
        "schedule.pause",
        "schedule.trigger",
        "schedule.resume",
        "schedule.delete",
    ] {
        assert!(audit.contains(action), "{action}: {audit}");
    }
}
