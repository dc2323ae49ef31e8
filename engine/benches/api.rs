//! The gRPC benchmark: `cargo bench -p cerebelum-engine --bench api`.
//!
//! A real `cerebelum serve` process (this build's binary) on a real SQLite
//! file (default) or a fresh PostgreSQL database (`-- --backend postgres`),
//! driven over loopback by tonic clients in this process, as one tenant:
//!
//! - (g) start-to-completion latency of the 3-step example (`hello`):
//!   StartExecution, then WatchExecution until the execution ends; p50/p99.
//! - (h) sustained StartExecution calls per second from 16 concurrent
//!   clients, each on its own connection (the executions run meanwhile).
//! - (i) 500 sequential no-op steps in one execution (the testkit's
//!   `many_steps`), start to completion: the server's durable write per
//!   step (`serve`'s default `--sync full`).
//!
//! - (p) with `-- --python`: the same through a Python package
//!   (`tests/guests/python/pybench.py`, built with the repository's
//!   `.venv`): W3, its 3-step workflow one at a time, p50/p99; and the cost
//!   of a durable Python step through the server (21 steps minus 1, per
//!   step). Only (p) runs then.
//!
//! `-- --quick` runs smaller counts. The machine is shared: quote medians
//! and compare within one run.

use cerebelum_harness as common;

use cerebelum::api::pb;
use common::grpc::{Client, connect};
use std::time::{Duration, Instant};

/// Start, then watch until the end; the time it took.
async fn start_to_completion(client: &mut Client) -> Duration {
    let (took, e) =
        common::grpc::start_to_completion(client, "hello", "hello", r#"{"name":"bench"}"#).await;
    assert_eq!(
        e.status,
        pb::ExecutionStatus::Completed as i32,
        "{:?}",
        e.error_json
    );
    took
}

fn start_request() -> pb::StartExecutionRequest {
    pb::StartExecutionRequest {
        package: "hello".into(),
        workflow: "hello".into(),
        input_json: r#"{"name":"bench"}"#.into(),
        ..Default::default()
    }
}

/// A run of `workflow` of package `pybench` to completion, ms.
async fn run(client: &mut Client, workflow: &str) -> f64 {
    let (took, e) = common::grpc::start_to_completion(client, "pybench", workflow, "{}").await;
    assert_eq!(
        e.status,
        pb::ExecutionStatus::Completed as i32,
        "{:?}",
        e.error_json
    );
    took.as_secs_f64() * 1e3
}

/// (p): Python workflows through the server.
async fn python(client: &mut Client, quick: bool) {
    let package = common::python_guest("tests/guests/python/pybench.py");
    common::grpc::upload(client, "pybench", &package).await;
    for _ in 0..5 {
        run(client, "three").await;
    }
    let mut three = Vec::new();
    for _ in 0..(if quick { 20 } else { 200 }) {
        three.push(run(client, "three").await);
    }
    let (mut one, mut many) = (Vec::new(), Vec::new());
    for _ in 0..(if quick { 5 } else { 30 }) {
        one.push(run(client, "one").await);
        many.push(run(client, "twenty_one").await);
    }
    let (one, many) = (
        common::percentile(&mut one, 0.5),
        common::percentile(&mut many, 0.5),
    );
    println!(
        "(p) Python W3, 3-step workflow, StartExecution + WatchExecution to completion: p50 \
         {:.2} ms, p99 {:.2} ms ({} runs)   [target p50 <= 8 ms]",
        common::percentile(&mut three, 0.5),
        common::percentile(&mut three, 0.99),
        three.len()
    );
    println!(
        "(p) a durable Python step through serve: {:.2} ms ((21 steps p50 {many:.1} ms - 1 step \
         p50 {one:.1} ms) / 20)   [W1's target: 500 steps <= 1.0 s, 2 ms a step]",
        (many - one) / 20.0
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let only_python = std::env::args().any(|a| a == "--python");
    let backend = common::bench_backend();
    let scale = if quick { 10 } else { 1 };
    let db = common::Db::on(backend);
    let key = db.tenant("bench", &["--max-open-executions", "1000000"]);
    let port = common::free_port();
    let _server = db.serve_api(port, &[]);
    let hello = common::guest("hello");
    println!(
        "cerebelum gRPC benchmark on {backend:?} ({} cores): a `cerebelum serve` process, \
         clients in this process",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = connect(port, &key).await;
        if only_python {
            python(&mut client, quick).await;
            return;
        }
        client
            .upload_package(pb::UploadPackageRequest {
                name: "hello".into(),
                wasm: std::fs::read(&hello).unwrap(),
            })
            .await
            .unwrap();
        for _ in 0..20 {
            start_to_completion(&mut client).await;
        }

        let mut latency: Vec<f64> = Vec::new();
        for _ in 0..(500 / scale) {
            latency.push(start_to_completion(&mut client).await.as_secs_f64() * 1e3);
        }
        println!(
            "(g) 3-step example, StartExecution + WatchExecution to completion: p50 {:.2} ms, \
             p99 {:.2} ms ({} runs, one at a time)   [target p50 <= 3 ms on SQLite]",
            common::percentile(&mut latency, 0.5),
            common::percentile(&mut latency, 0.99),
            latency.len()
        );

        common::grpc::upload(&mut client, "kit", &common::guest("testkit")).await;
        let mut runs: Vec<f64> = Vec::new();
        for _ in 0..(if quick { 3 } else { 11 }) {
            let (took, e) = common::grpc::start_to_completion(
                &mut client,
                "kit",
                "many_steps",
                r#"{"n": 500}"#,
            )
            .await;
            assert_eq!(e.status, pb::ExecutionStatus::Completed as i32);
            runs.push(took.as_secs_f64());
        }
        println!(
            "(i) 500 sequential steps through serve (--sync full), start to completion: p50 \
             {:.3} s, min {:.3} s ({} runs)   [target <= 0.25 s]",
            common::percentile(&mut runs, 0.5),
            common::percentile(&mut runs, 0.0),
            runs.len()
        );

        const CLIENTS: usize = 16;
        let per_client = 400 / scale;
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            clients.push(connect(port, &key).await);
        }
        let t = Instant::now();
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    let mut calls = Vec::with_capacity(per_client);
                    for _ in 0..per_client {
                        let t = Instant::now();
                        c.start_execution(start_request()).await.unwrap();
                        calls.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    calls
                })
            })
            .collect();
        let mut calls = Vec::new();
        for task in tasks {
            calls.extend(task.await.unwrap());
        }
        let elapsed = t.elapsed();
        println!(
            "(h) sustained starts, {CLIENTS} concurrent clients: {:.0} starts/s ({} starts in \
             {:.2} s; StartExecution p50 {:.2} ms, p99 {:.2} ms)",
            calls.len() as f64 / elapsed.as_secs_f64(),
            calls.len(),
            elapsed.as_secs_f64(),
            common::percentile(&mut calls, 0.5),
            common::percentile(&mut calls, 0.99)
        );
    });
}
