//! The sandbox's controlled authority end to end, with real `cerebelum
//! serve` processes and a real HTTP server on 127.0.0.1: journaled,
//! allow-listed HTTP (never sent twice, even across `kill -9`), response
//! limits, secrets that never appear in clear, and fuel budgets.

use cerebelum_harness as common;
use common::WAIT;

use common::http_server::TestServer;
use common::{Db, Remote, entries, free_port, guest, path};
use serde_json::{Value, json};
use std::process::Stdio;
use std::time::Duration;

common::on_both_backends!(a_journaled_request_is_not_sent_again_after_kill9,);

const SECRET: &str = "tok-3f9a-very-secret";

fn a_journaled_request_is_not_sent_again_after_kill9(db: Db) {
    let http = TestServer::start();
    let key = db.tenant("acme", &["--allow-http", &http.host()]);
    db.set_secret("acme", "api-token", SECRET);
    let port = free_port();
    let server = db.serve_api(port, &["--hibernate-after-ms", "500"]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("hostile")), "--name", "hostile"]);
    let input = json!({ "url": http.url("/droplets/7"), "secret": "api-token", "sleep_ms": 3000 });
    let id = cli
        .ok(&["start", "hostile", "fetch", "--input", &input.to_string()])
        .trim()
        .to_owned();
    // The response is journaled, the step sleeps after it: kill the engine.
    let wait_journal = |pred: &dyn Fn(&[Value]) -> bool| {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let journal = cli.journal(&id);
            if pred(&journal) {
                return journal;
            }
            assert!(std::time::Instant::now() < deadline, "{journal:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_journal(&|j| !entries(j, "sleep").is_empty());
    server.kill9();
    assert_eq!(http.seen().len(), 1);

    let _server = db.serve_api(port, &[]);
    let status = cli.wait_text(&["status", &id, "--json"], WAIT, |s| {
        s.contains("\"completed\"")
    });
    let status: Value = serde_json::from_str(&status).unwrap();
    let seen = http.seen();
    assert_eq!(
        seen.len(),
        1,
        "the replayed step sent its request again: {seen:?}"
    );
    assert_eq!(seen[0].path, "/droplets/7");
    assert_eq!(
        seen[0].authorization.as_deref(),
        Some(format!("Bearer {SECRET}").as_str()),
        "the server got the secret itself"
    );
    let body: Value = serde_json::from_str(status["result"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["path"], "/droplets/7");
    assert_eq!(status["result"]["server"], "cerebelum-test");

    // The journal holds the request (secret redacted) and the whole response.
    let journal = cli.journal(&id);
    let requests = entries(&journal, "http");
    assert_eq!(requests.len(), 1, "one request, journaled once");
    let entry = requests[0];
    assert_eq!(entry["payload"]["args"]["method"], "GET");
    assert_eq!(entry["payload"]["answer"]["status"], 200);
    let headers = entry["payload"]["args"]["headers"].to_string();
    assert!(headers.contains("Bearer [redacted]"), "{headers}");
    assert!(
        !serde_json::to_string(&journal).unwrap().contains(SECRET),
        "the secret is in the journal"
    );
}

#[test]
fn denied_hosts_workflow_code_and_large_responses_fail_clearly() {
    let db = Db::new();
    let http = TestServer::start();
    let other = TestServer::start();
    let key = db.tenant(
        "acme",
        &["--allow-http", &http.host(), "--max-response-kb", "64"],
    );
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("hostile")), "--name", "hostile"]);
    let run = |workflow: &str, input: Value| -> Value {
        let id = cli
            .ok(&["start", "hostile", workflow, "--input", &input.to_string()])
            .trim()
            .to_owned();
        cli.wait_ended(&id, WAIT)
    };

    let small = run("fetch", json!({ "url": http.url("/bytes/1000") }));
    assert_eq!(small["status"], "completed", "{small}");
    assert_eq!(small["result"]["body"].as_str().unwrap().len(), 1000);

    let big = run("fetch", json!({ "url": http.url("/bytes/200000") }));
    assert_eq!(big["error"]["kind"], "http-response-too-large", "{big}");
    assert!(
        big["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536 bytes"),
        "{big}"
    );

    let denied = run("fetch", json!({ "url": other.url("/x") }));
    assert_eq!(denied["error"]["kind"], "http-denied", "{denied}");
    assert!(other.seen().is_empty(), "a denied request was sent");
    let journal = cli.journal(denied["id"].as_str().unwrap());
    assert_eq!(
        entries(&journal, "http")[0]["payload"]["answer"]["error"],
        "denied",
        "the denial is journaled (a replay denies it again)"
    );

    let from_workflow = run("fetch_from_workflow", json!({ "url": http.url("/x") }));
    assert_eq!(
        from_workflow["error"]["kind"], "http-denied",
        "{from_workflow}"
    );
    let sent = http.seen();
    assert_eq!(
        sent.iter().filter(|s| s.path == "/x").count(),
        0,
        "workflow code reached the network"
    );
}

#[test]
fn secrets_never_appear_in_the_journal_results_or_logs() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    db.set_secret("acme", "api-token", SECRET);
    let listed = db.ok(&["admin", "secret", "list", "acme"]);
    assert_eq!(listed.trim(), "api-token", "names only");
    let short = db
        .command(&["admin", "secret", "set", "acme", "pin"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("at least 8"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );

    let log = db.dir.path().join("serve.log");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _server = db.serve_logged(&["--listen", &listen], Some(&log));
    let cli = Remote::new(port, &key);
    let deadline = std::time::Instant::now() + WAIT;
    while cli.run(&["packages"]).status.code() != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "the server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cli.ok(&["upload", path(&guest("hostile")), "--name", "hostile"]);
    let id = cli
        .ok(&[
            "start",
            "hostile",
            "leak_secret",
            "--input",
            r#"{"secret":"api-token"}"#,
        ])
        .trim()
        .to_owned();
    let status = cli.wait_text(&["status", &id, "--json"], WAIT, |s| {
        s.contains("\"completed\"")
    });
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["result"],
        json!({ "value": "[redacted]", "length": SECRET.len() })
    );
    let journal = cli.journal(&id);
    let text = serde_json::to_string(&journal).unwrap();
    assert!(!text.contains(SECRET), "the secret is in the journal");
    assert!(text.contains("the secret is [redacted]"), "{text}");
    let output = entries(&journal, "output");
    assert_eq!(
        output[0]["payload"]["text"], "printing the secret: [redacted]\n",
        "stdout is journaled, redacted"
    );
    let watched = cli.ok(&["watch", &id]);
    assert!(!watched.contains(SECRET));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("the secret is [redacted]"), "{logged}");
    assert!(
        !logged.contains(SECRET),
        "the secret is in the server's log"
    );

    let id = cli
        .ok(&[
            "start",
            "hostile",
            "secret_in_workflow",
            "--input",
            r#"{"secret":"api-token"}"#,
        ])
        .trim()
        .to_owned();
    let status = cli.wait_text(&["status", &id, "--json"], WAIT, |s| {
        s.contains("\"failed\"")
    });
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["error"]["kind"], "denied", "{status}");
}

#[test]
fn a_fuel_budget_ends_an_execution_across_its_steps() {
    let db = Db::new();
    let key = db.tenant("acme", &["--fuel", "50000000"]);
    let port = free_port();
    let _server = db.serve_api(port, &["--meter-fuel"]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let start = |iterations: u64| {
        let input =
            json!({ "step": "spin", "input": { "iterations": iterations }, "max_attempts": 1 });
        cli.ok(&["start", "kit", "run_step", "--input", &input.to_string()])
            .trim()
            .to_owned()
    };
    let ended = |id: &str| cli.wait_ended(id, WAIT);
    let small = start(1000);
    assert_eq!(ended(&small)["status"], "completed");
    let journal = cli.journal(&small);
    let used: u64 = entries(&journal, "usage")
        .iter()
        .map(|e| e["payload"]["fuel"].as_u64().unwrap())
        .sum();
    assert!(used > 0, "fuel use is journaled: {journal:?}");

    let big = ended(&start(1_000_000_000));
    assert_eq!(big["error"]["kind"], "fuel", "{big}");
    assert!(
        big["error"]["message"]
            .as_str()
            .unwrap()
            .contains("50000000"),
        "{big}"
    );
}

/// Steps run one after another in the instance a step of the same tenant
/// and package returned from: across the steps of an execution, across a
/// wait, across executions; never past an instance whose memory grew by
/// half, and never into another tenant's step.
#[test]
fn steps_of_a_tenants_package_share_instances() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &["--hibernate-after-ms", "5000"]);
    let acme = Remote::new(port, &key);
    acme.ok(&["upload", path(&common::kit()), "--name", "kit"]);
    let input = r#"{"sleep_ms": 100}"#;
    // calls, calls (the same instance), calls leaking 4 MiB (the same,
    // then dropped), calls (a fresh one), calls (the same), the sleep,
    // calls (the same).
    let id = acme
        .ok(&["start", "kit", "reuse_probe", "--input", input])
        .trim()
        .to_owned();
    let done = acme.wait_ended(&id, WAIT);
    assert_eq!(done["result"], json!([1, 2, 3, 1, 2, 3]), "{done}");
    // Another tenant's steps do not run in acme's instance (kept for 2 s).
    let first = db.start(&common::kit(), "reuse_probe", input);
    let done = db.wait_status(&first, "completed", WAIT);
    assert_eq!(done["result"], json!([1, 2, 3, 1, 2, 3]), "{done}");
    // Its next execution's do run in its own.
    let second = db.start(&common::kit(), "reuse_probe", input);
    let done = db.wait_status(&second, "completed", WAIT);
    assert_eq!(done["result"], json!([4, 5, 6, 1, 2, 3]), "{done}");
}
