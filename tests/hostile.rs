//! The hostile-guest suite: tenant A uploads the packages of `tests/hostile/`
//! and runs every attack while tenant B runs a steady load of normal
//! workflows on the same `cerebelum serve` process. Each attack must end
//! with an error that names the limit it hit, the server must stay up, and
//! every one of B's executions must complete. (How much B's latency moves
//! under each attack is measured by `cargo bench --bench hostile`: timing
//! belongs to a benchmark, not to a test on a shared machine.)

use cerebelum_harness as common;
use common::WAIT;

use cerebelum::api::pb;
use common::http_server::TestServer;
use common::{Db, Remote, free_port, grpc, guest, path};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One attack: its workflow, input and the error kind it must end with.
struct Attack {
    workflow: &'static str,
    input: String,
    kind: &'static str,
    /// Words the error message must contain (the limit's value).
    says: &'static str,
}

fn attacks(denied_url: &str) -> Vec<Attack> {
    let attack = |workflow, input: &str, kind, says| Attack {
        workflow,
        input: input.to_owned(),
        kind,
        says,
    };
    vec![
        attack("loop_in_step", "{}", "deadline", "2000 ms"),
        attack("loop_in_workflow", "{}", "deadline", "2000 ms"),
        attack("memory_bomb", "{}", "memory", "128 MiB"),
        attack("stack_overflow", "{}", "stack", "512 KiB"),
        attack("huge_result", r#"{"mb": 8}"#, "payload", "1048576 bytes"),
        attack("huge_print", "{}", "output", "64 KiB"),
        attack("host_call_flood", "{}", "journal", "2000 journal entries"),
        attack(
            "fan_out",
            r#"{"n": 20000}"#,
            "journal",
            "2000 journal entries",
        ),
        attack(
            "fetch",
            &format!(r#"{{"url": "{denied_url}"}}"#),
            "http-denied",
            "allow-list",
        ),
    ]
}

/// Tenant B's steady load until `stop`: 3-step workflows one after the
/// other; the final status of each.
fn steady_load(port: u16, key: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<i32>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = grpc::connect(port, &key).await;
            grpc::upload(&mut client, "kit", &guest("testkit")).await;
            let mut statuses = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (_, e) = grpc::start_to_completion(&mut client, "kit", "noop3", "{}").await;
                statuses.push(e.status);
            }
            statuses
        })
    })
}

#[test]
fn every_attack_ends_with_its_named_limit_while_the_other_tenant_runs() {
    let db = Db::new();
    let elsewhere = TestServer::start();
    let key_a = db.tenant("a", common::HOSTILE_LIMITS);
    let key_b = db.tenant("b", &[]);
    let port = free_port();
    let mut server = db.serve_api(port, &[]);
    let a = Remote::new(port, &key_a);
    a.ok(&["upload", path(&guest("hostile")), "--name", "hostile"]);

    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(port, key_b, stop.clone());

    for attack in attacks(&elsewhere.url("/secrets")) {
        let id = a
            .ok(&[
                "start",
                "hostile",
                attack.workflow,
                "--input",
                &attack.input,
            ])
            .trim()
            .to_owned();
        let status = a.wait_ended(&id, WAIT * 2);
        assert_eq!(status["status"], "failed", "{}: {status}", attack.workflow);
        let error = &status["error"];
        assert_eq!(
            error["kind"], attack.kind,
            "{} ended with the wrong error: {error}",
            attack.workflow
        );
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains(attack.says),
            "{}: the message does not name the limit: {message}",
            attack.workflow
        );
        assert!(
            server.is_running(),
            "the server died during {}",
            attack.workflow
        );
    }
    assert!(
        elsewhere.seen().is_empty(),
        "a denied request reached the network"
    );

    // Files, environment, sockets: nothing there.
    let id = a
        .ok(&["start", "hostile", "ambient", "--input", "{}"])
        .trim()
        .to_owned();
    let status = a.wait_ended(&id, WAIT * 2);
    assert_eq!(status["status"], "completed", "{status}");
    let probe = &status["result"];
    assert_eq!(
        probe["env"],
        Value::Array(Vec::new()),
        "environment: {probe}"
    );
    assert_eq!(
        probe["args"],
        Value::Array(Vec::new()),
        "arguments: {probe}"
    );
    for file in probe["files"].as_array().unwrap() {
        assert!(!file.as_str().unwrap().contains("OPENED"), "{probe}");
    }
    for key in ["write", "tcp", "udp", "listen"] {
        let got = probe[key].as_str().unwrap();
        assert!(
            !["WRITTEN", "CONNECTED", "BOUND", "LISTENING"].contains(&got),
            "{key}: {got}"
        );
    }

    // A cancel stops code that spins (issue 31, 3): a step that never
    // ends, and workflow code that never reaches a suspension point, end
    // `cancelled` — not at their CPU deadline, which they would hold a
    // core until.
    for workflow in ["loop_in_step", "loop_in_workflow"] {
        let id = a
            .ok(&["start", "hostile", workflow, "--input", "{}"])
            .trim()
            .to_owned();
        // Running: the workflow claimed, and the step's attempt begun.
        let deadline = std::time::Instant::now() + WAIT * 2;
        while a.status(&id)["status"] != "running"
            || (workflow == "loop_in_step"
                && !a.journal(&id).iter().any(|e| e["kind"] == "attempt"))
        {
            assert!(std::time::Instant::now() < deadline, "{id} never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        a.ok(&["cancel", &id]);
        let status = a.wait_ended(&id, WAIT * 2);
        assert_eq!(status["status"], "cancelled", "{workflow}: {status}");
        assert_eq!(status["error"]["kind"], "cancelled", "{workflow}: {status}");
    }

    stop.store(true, Ordering::SeqCst);
    let statuses = load.join().unwrap();
    assert!(
        statuses.len() >= 10,
        "tenant B ran only {} executions meanwhile",
        statuses.len()
    );
    assert!(
        statuses
            .iter()
            .all(|s| *s == pb::ExecutionStatus::Completed as i32),
        "tenant B's executions did not all complete: {statuses:?}"
    );
    assert!(server.is_running(), "the server died");
}
