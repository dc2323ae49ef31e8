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

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
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
