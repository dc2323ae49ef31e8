//! The HTTP triggers benchmark: `cargo bench -p cerebelum-engine --bench
//! triggers [-- --backend postgres] [-- --requests N] [-- --clients C]`.
//!
//! A real `cerebelum serve` process (this build's binary) and C clients
//! (default 16) in this process, each sending its share of N requests
//! (default 2,000) to an HMAC-signed trigger, one connection per request
//! (as webhooks arrive), each with its own delivery id and a signed JSON
//! body. Every accepted request starts an execution (the testkit's
//! three-step `noop3`). Prints requests per second and p50/p99 latency.

use cerebelum_harness as common;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Instant;

fn main() {
    let backend = common::bench_backend();
    let requests: usize = common::bench_arg("--requests").map_or(2000, |n| n.parse().unwrap());
    let clients: usize = common::bench_arg("--clients").map_or(16, |n| n.parse().unwrap());
    let db = common::Db::on(backend);
    let key = common::bench_tenant(&db);
    // Before the server starts: the first secret makes the master key it
    // loads.
    let secret = "bench-webhook-secret";
    db.set_secret("bench", "hook", secret);
    let port = common::free_port();
    let _server = db.serve_api(port, &[]);
    let cli = common::Remote::new(port, &key);
    cli.ok(&[
        "upload",
        common::path(&common::guest("testkit")),
        "--name",
        "kit",
    ]);
    cli.ok(&[
        "trigger",
        "create",
        "push",
        "kit",
        "noop3",
        "--secret-hmac",
        "hook",
    ]);
    println!(
        "cerebelum HTTP trigger benchmark on {backend:?} ({} cores): {requests} signed requests \
         from {clients} clients, one `cerebelum serve`",
        common::cores()
    );
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|c| {
            std::thread::spawn(move || {
                let mut took = Vec::new();
                for i in (c..requests).step_by(clients) {
                    let body = format!(r#"{{"ref":"refs/heads/main","n":{i}}}"#);
                    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
                    mac.update(body.as_bytes());
                    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                    let delivery = format!("d-{i}");
                    let t = Instant::now();
                    let reply = common::http_request(
                        port,
                        "POST",
                        "/t/bench/push",
                        &[
                            ("content-type", "application/json"),
                            ("x-hub-signature-256", &signature),
                            ("x-github-delivery", &delivery),
                        ],
                        &body,
                    );
                    took.push(t.elapsed().as_secs_f64() * 1000.0);
                    assert_eq!(reply.status, 202, "{}", reply.body);
                }
                took
            })
        })
        .collect();
    let mut took: Vec<f64> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let elapsed = started.elapsed();
    let p50 = common::percentile(&mut took, 0.50);
    let p99 = common::percentile(&mut took, 0.99);
    println!(
        "{} requests in {:.2} s: {:.0} requests/s; latency p50 {p50:.2} ms, p99 {p99:.2} ms",
        took.len(),
        elapsed.as_secs_f64(),
        took.len() as f64 / elapsed.as_secs_f64()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let rows = runtime.block_on(common::executions_by_key(&db.url, "trigger:push:"));
    assert_eq!(rows.len(), requests, "one execution per delivery");
}
