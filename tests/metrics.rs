//! Observing a real `cerebelum serve`: `GET /metrics` on the gRPC API's
//! port, parsed with a Prometheus text-format parser (its counters move by
//! what a known workload did), and `--log-format json`.

#[macro_use]
mod common;

use common::{Db, Remote, free_port, guest, path};
use prometheus_parse::{Sample, Scrape, Value};
use std::io::{Read, Write};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// `GET /metrics` over plain HTTP/1.1: the body, parsed.
fn scrape(port: u16) -> Scrape {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// The value of `metric` with `labels` (0 when it has no sample yet).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let matches = |s: &&Sample| {
        s.metric == metric
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(k).is_some_and(|l| l == *v))
    };
    match scrape.samples.iter().find(matches).map(|s| &s.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        Some(Value::Histogram(buckets)) => buckets.last().map_or(0.0, |b| b.count),
        Some(other) => panic!("{metric}: unexpected value {other:?}"),
        None => 0.0,
    }
}

#[test]
fn metrics_count_what_a_known_workload_did() {
    let db = Db::new();
    let key = db.tenant("acme", &["--memory-mb", "64"]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let before = scrape(port);
    let kit = [("tenant", "acme"), ("package", "kit")];

    // Three executions of three steps each, one that fails on its second
    // step, and one whose step hits the tenant's memory limit (one attempt
    // each): 5 started, 12 attempts.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(cli.ok(&["start", "kit", "noop3", "--input", "{}"]));
    }
    ids.push(cli.ok(&[
        "start",
        "kit",
        "retry_me",
        "--input",
        r#"{"until_ms": 99999999999999}"#,
    ]));
    ids.push(cli.ok(&[
        "start",
        "kit",
        "run_step",
        "--input",
        r#"{"step": "memory_bomb", "input": null}"#,
    ]));
    let mut statuses: Vec<String> = ids
        .iter()
        .map(|id| {
            cli.wait_ended(id.trim(), WAIT)["status"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        ["completed", "completed", "completed", "failed", "failed"]
    );

    let after = scrape(port);
    let delta = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert_eq!(delta("cerebelum_executions_started_total", &kit), 5.0);
    let finished = |status| {
        delta(
            "cerebelum_executions_finished_total",
            &[kit[0], kit[1], ("status", status)],
        )
    };
    assert_eq!((finished("completed"), finished("failed")), (3.0, 2.0));
    assert_eq!(delta("cerebelum_step_attempts_total", &kit), 12.0);
    let breaches = |kind| {
        delta(
            "cerebelum_limit_breaches_total",
            &[("tenant", "acme"), ("kind", kind)],
        )
    };
    assert_eq!((breaches("memory"), breaches("deadline")), (1.0, 0.0));
    // Each step's attempt and result, at least, were durable commits.
    let commits = delta("cerebelum_journal_commit_seconds", &[]);
    assert!(commits >= 12.0, "{commits} commits");
    assert_eq!(
        delta("cerebelum_journal_commit_batch", &[]),
        commits,
        "one batch size per commit"
    );
    // Every attempt ran in an invocation of its own; each workflow in at
    // least one.
    let invocations = |kind| delta("cerebelum_invocation_seconds", &[("kind", kind)]);
    assert_eq!(invocations("step"), 12.0);
    assert!(
        invocations("workflow") >= 5.0,
        "{}",
        invocations("workflow")
    );
    assert_eq!(
        value(&after, "cerebelum_live_instances", &[]),
        0.0,
        "every instance was dropped"
    );
    // Another tenant's work is labelled as its own.
    assert_eq!(
        value(
            &after,
            "cerebelum_executions_started_total",
            &[("tenant", "other")]
        ),
        0.0
    );
}

/// `--log-format json`: every log line is one JSON object, and the lines
/// about an execution carry its id from the span they were logged in.
#[test]
fn json_logs_carry_the_execution_id() {
    let db = Db::new();
    let mut server = db.serve_api(free_port(), &["--log-format", "json"]);
    let id = db.start(&guest("testkit"), "noop3", "{}");
    db.wait_status(&id, "completed", WAIT);
    let log = server.log();
    let mut finished = false;
    for line in log.lines().filter(|l| l.starts_with('{')) {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(entry["level"].is_string(), "{line}");
        if entry["fields"]["message"] == "execution finished" {
            assert_eq!(entry["span"]["execution_id"], id.as_str(), "{line}");
            assert_eq!(entry["fields"]["status"], "completed", "{line}");
            finished = true;
        }
    }
    assert!(finished, "no JSON line says the execution finished:\n{log}");
}
