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
//!   step (`serve`'s default `--sync full`), and the server process's CPU
//!   time (user + system) per step.
//!
//! - (p) with `-- --python`: the same through a Python package
//!   (`tests/guests/python/pybench.py`, built with the repository's
//!   `.venv`): W3, its 3-step workflow one at a time, p50/p99; and the cost
//!   of a durable Python step through the server (21 steps minus 1, per
//!   step). Only (p) runs then.
//!
//! - (peers) with `-- --peers-json`: the workloads `scripts/bench-peers.sh`
//!   runs on Temporal and Restate too, on the `testkit`'s `many_steps`
//!   and `fan_noop` (no-op steps), with `serve --sync full`: W1, 500
//!   sequential steps in one execution, and the server's CPU time per
//!   step over it; W2, 1,000 one-step executions started at once, until
//!   all are done; W2 fan-out, one execution starting 1,000 steps at
//!   once; W3, a 3-step execution one at a time, p50/p99; the server's
//!   RSS idle and after; the wall-clock bounds of W1 (for the script's
//!   count of flushes). One JSON line, prefixed `PEERS_JSON `.
//!   `--w1-steps N`, `--w2-count N`, `--w3-runs N` and `--repeats N`
//!   (W1 and W2 runs; the median is reported) set the sizes;
//!   `--guest python` runs W1, W2 and W3 on the Python package of (p)
//!   instead (it has no fan-out workflow); `--sync normal` runs the
//!   server without a flush per commit, to see what the flushes cost
//!   (not a durable setting: never quote it against the peers). Only
//!   this runs then.
//!
//! Every run starts an execution and waits for its end on one call,
//! `RunExecution`, as a client waiting for a result does;
//! `--start-then-wait` makes that two, a start and a watch for the end
//! alone (what these numbers measured from 2026-11-29 until
//! `RunExecution`), and `--watch-journal` a start and a watch of every
//! journal entry (before that).
//!
//! `-- --quick` runs smaller counts. The machine is shared: quote medians
//! and compare within one run.

use cerebelum_harness as common;

use cerebelum::api::pb;
use common::grpc::{Client, connect};
use std::time::{Duration, Instant};

/// Run to the end; the time it took.
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

/// The value of flag `--name N`, or `default`.
/// `serve --sync` of (peers): `full` (serve's default, a flush per
/// commit), or `normal` with `-- --sync normal` (no flush: what the
/// flushes cost, for comparison only).
fn sync_mode() -> &'static str {
    let args: Vec<String> = std::env::args().collect();
    match args
        .iter()
        .position(|a| a == "--sync")
        .map(|i| args.get(i + 1))
    {
        None => "full",
        Some(Some(mode)) if mode == "full" => "full",
        Some(Some(mode)) if mode == "normal" => "normal",
        Some(other) => panic!("--sync takes full or normal, not {other:?}"),
    }
}

fn count_flag(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a count")))
        .unwrap_or(default)
}

/// The resident set of this process's `cerebelum serve` child, KiB: the
/// child still running (the harness keeps no pid; the CLI commands run
/// before it have ended). `field` is the line of /proc/PID/status: `VmRSS`,
/// or `RssAnon` for its anonymous pages alone.
fn server_rss_kib(field: &str) -> Option<u64> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    let children: Vec<String> = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("children")).ok())
        .flat_map(|c| c.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    children.iter().find_map(|pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss = status
            .lines()
            .find(|l| l.strip_prefix(field).is_some_and(|l| l.starts_with(':')))?;
        rss.split_whitespace().nth(1)?.parse().ok()
    })
}

/// The package, workflows and input the (peers) workloads run: the
/// testkit's Rust `many_steps`/`fan_noop`, or (`--guest python`)
/// `tests/guests/python/pybench.py`'s chains, whose lengths are fixed when
/// the package is built (W1 must be 100 or 500 steps there).
struct Workloads {
    package: &'static str,
    guest: &'static str,
}

impl Workloads {
    fn from_args() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let guest = args
            .iter()
            .position(|a| a == "--guest")
            .and_then(|i| args.get(i + 1))
            .map_or("rust", String::as_str);
        match guest {
            "rust" => Self {
                package: "kit",
                guest: "rust",
            },
            "python" => Self {
                package: "pybench",
                guest: "python",
            },
            other => panic!("--guest takes rust or python, not {other:?}"),
        }
    }

    async fn upload(&self, client: &mut Client) {
        let package = if self.guest == "rust" {
            common::guest("testkit")
        } else {
            common::python_guest("tests/guests/python/pybench.py")
        };
        common::grpc::upload(client, self.package, &package).await;
    }

    /// `n` sequential no-op steps in one execution: (workflow, input).
    fn sequential(&self, n: usize) -> (String, String) {
        if self.guest == "rust" {
            return ("many_steps".into(), format!(r#"{{"n": {n}}}"#));
        }
        match n {
            1 => ("one".into(), "{}".into()),
            3 => ("three".into(), "{}".into()),
            100 | 500 => (format!("chain_{n}"), "{}".into()),
            _ => panic!(
                "the Python package has chains of 1, 3, 100 and 500 steps, not {n} \
                 (tests/guests/python/pybench.py)"
            ),
        }
    }

    /// One execution fanning out `n` no-op steps at once, if the guest has one.
    fn fan_out(&self, n: usize) -> Option<(String, String)> {
        (self.guest == "rust").then(|| ("fan_noop".into(), format!(r#"{{"n": {n}}}"#)))
    }
}

/// An execution of `workflow` with `input`, to completion: seconds.
async fn to_completion(
    client: &mut Client,
    package: &str,
    (workflow, input): (String, String),
) -> f64 {
    let (took, e) = common::grpc::start_to_completion(client, package, &workflow, &input).await;
    assert_eq!(
        e.status,
        pb::ExecutionStatus::Completed as i32,
        "{workflow}: {:?}",
        e.error_json
    );
    took.as_secs_f64()
}

/// W2: `count` one-step executions started at once over 16 connections,
/// each watched to its end; seconds until the last ended.
async fn fan_out(port: u16, key: &str, count: usize, workloads: &Workloads) -> f64 {
    const CONNECTIONS: usize = 16;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(connect(port, key).await);
    }
    let t = Instant::now();
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let mut client = clients[i % CONNECTIONS].clone();
            let (package, one) = (workloads.package, workloads.sequential(1));
            tokio::spawn(async move { to_completion(&mut client, package, one).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    t.elapsed().as_secs_f64()
}

/// (peers): W1, W2, W3, CPU and RSS as one JSON line for
/// `scripts/bench-peers.sh`.
async fn peers(client: &mut Client, port: u16, key: &str, server: &common::Server) {
    let w1_steps = count_flag("--w1-steps", 500);
    let w2_count = count_flag("--w2-count", 1000);
    let w3_runs = count_flag("--w3-runs", 200);
    let repeats = count_flag("--repeats", 3);
    let workloads = Workloads::from_args();
    let package = workloads.package;
    let rss_idle = server_rss_kib("VmRSS");
    workloads.upload(client).await;
    for _ in 0..5 {
        to_completion(client, package, workloads.sequential(3)).await;
    }
    // Wall-clock bounds of W1, for the script's flush count (strace -ttt).
    let epoch = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64()
    };
    let w1_start = epoch();
    let cpu_before = server.cpu_time();
    let mut w1 = Vec::new();
    for _ in 0..repeats {
        w1.push(to_completion(client, package, workloads.sequential(w1_steps)).await);
    }
    let w1_cpu = server.cpu_time() - cpu_before;
    let w1_window = [w1_start, epoch()];
    let mut w2 = Vec::new();
    for _ in 0..repeats {
        w2.push(fan_out(port, key, w2_count, &workloads).await);
    }
    let mut w2f = Vec::new();
    if let Some(fan) = workloads.fan_out(w2_count) {
        for _ in 0..repeats {
            w2f.push(to_completion(client, package, fan.clone()).await);
        }
    }
    let mut w3 = Vec::new();
    for _ in 0..w3_runs {
        w3.push(to_completion(client, package, workloads.sequential(3)).await * 1e3);
    }
    let line = serde_json::json!({
        "system": if workloads.guest == "rust" { "cerebelum" } else { "cerebelum-python" },
        "durability": if sync_mode() == "full" {
            "serve --sync full: SQLite synchronous=FULL, a flush per commit"
        } else {
            "serve --sync normal: no flush per commit (not durable across a power loss)"
        },
        "w1_steps": w1_steps,
        "w1_s": common::percentile(&mut w1, 0.5),
        "w1_runs": repeats,
        "w1_window": w1_window,
        // The guests run in the server: no other process works for a step.
        "w1_server_cpu_ms": w1_cpu.as_secs_f64() * 1e3 / (w1_steps * repeats) as f64,
        "w1_sdk_cpu_ms": 0.0,
        "w2_count": w2_count,
        "w2_s": common::percentile(&mut w2, 0.5),
        "w2f_s": (!w2f.is_empty()).then(|| common::percentile(&mut w2f, 0.5)),
        "w3_runs": w3_runs,
        "w3_p50_ms": common::percentile(&mut w3, 0.5),
        "w3_p99_ms": common::percentile(&mut w3, 0.99),
        "rss_idle_kib": rss_idle,
        "rss_after_kib": server_rss_kib("VmRSS"),
        "rss_after_anon_kib": server_rss_kib("RssAnon"),
    });
    println!("PEERS_JSON {line}");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let flag = |name: &str| std::env::args().any(|a| a == name);
    common::grpc::waiting(if flag("--watch-journal") {
        common::grpc::Waiting::Journal
    } else if flag("--start-then-wait") {
        common::grpc::Waiting::StartThenEnd
    } else {
        common::grpc::Waiting::Run
    });
    let only_python = std::env::args().any(|a| a == "--python");
    let only_peers = std::env::args().any(|a| a == "--peers-json");
    let backend = common::bench_backend();
    let scale = if quick { 10 } else { 1 };
    let db = common::Db::on(backend);
    // W2 (peers) watches 1,000 executions at once: past the default 100 streams.
    let streams: &[&str] = if only_peers {
        &["--max-streams", "100000"]
    } else {
        &[]
    };
    let key = db.tenant(
        "bench",
        &[&["--max-open-executions", "1000000"], streams].concat(),
    );
    let port = common::free_port();
    // `full` is serve's default; the peers' comparison names it.
    let sync: &[&str] = if only_peers {
        &["--sync", sync_mode()]
    } else {
        &[]
    };
    let server = db.serve_api(port, sync);
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
        if only_peers {
            peers(&mut client, port, &key, &server).await;
            return;
        }
        client
            .upload_package(pb::UploadPackageRequest {
                name: "hello".into(),
                wasm: std::fs::read(&hello).unwrap(),
                ..Default::default()
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
        let cpu_before = server.cpu_time();
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
        // The server's CPU (user + system, all its threads) over the runs.
        let cpu_per_step =
            (server.cpu_time() - cpu_before).as_secs_f64() * 1e3 / (500 * runs.len()) as f64;
        println!(
            "(i) 500 sequential steps through serve (--sync full), start to completion: p50 \
             {:.3} s, min {:.3} s ({} runs); server CPU {:.3} ms a step   [target <= 0.2 s, \
             <= 0.3 ms CPU a step]",
            common::percentile(&mut runs, 0.5),
            common::percentile(&mut runs, 0.0),
            runs.len(),
            cpu_per_step
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
