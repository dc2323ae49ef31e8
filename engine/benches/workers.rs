//! The external-worker benchmark: `cargo bench -p cerebelum-engine --bench workers`.
//!
//! A real `cerebelum serve` process (this build's binary) on a real SQLite
//! file (default) or a fresh PostgreSQL database (`-- --backend postgres`);
//! workers are tonic clients of `cerebelum.v1.WorkerService` in this
//! process (a no-op step: they complete each task with its input at once):
//!
//! - (w1) round trip of a worker step: one execution calls `noop` 500
//!   times in a row on a worker queue, one worker serves it; the time
//!   between the worker receiving two consecutive tasks is one round trip
//!   (the workflow calls the step, the task is queued, the worker receives
//!   it, completes it, the result is journaled, the workflow continues and
//!   calls the next). p50/p99.
//! - (w2) sustained worker steps/s: 8 workers (own connections) serve 200
//!   executions of 10 steps each, started at once.
//! - (w3) the same round trip with a real Python worker (`python -m
//!   cerebelum worker`, the SDK's): a Python workflow of 50 no-op steps in a
//!   row (`tests/guests/python/pychain.py`), timed from start to completion
//!   and divided by 50 (so it also counts the workflow code between steps).
//! - (w4) sustained worker steps/s with 8 Python worker processes: 40
//!   executions of `pychain` (50 steps each) started at once; one task at
//!   a time per worker (the default), then `--concurrency 4`.
//!
//! - (w5) a durable call inside a worker step: (w1) with the worker
//!   recording one call (`now`, RecordCall) before completing each task;
//!   the extra round trip over (w1)'s, p50.
//! - (w6) a worker step's sleep handed back: each task records `sleep`
//!   (100 ms) and releases the task until it is due (ReleaseTask with
//!   resume_at_ms); the time from the sleep's due time to the worker
//!   receiving the task again, p50/p99.
//!
//! `-- --sync normal` runs the server with `--sync normal` (default
//! `full`). `-- --quick` runs smaller counts. The machine is shared: quote
//! medians and compare within one run.

use cerebelum_harness as common;

use cerebelum::api::pb;
use common::grpc::{WorkerClient, connect, upload, worker_client};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

async fn register(worker: &mut WorkerClient, id: &str, queue: &str) {
    worker
        .register_worker(pb::RegisterWorkerRequest {
            worker_id: id.into(),
            queue: queue.into(),
            host: "bench".into(),
            max_tasks: 1,
        })
        .await
        .unwrap();
}

/// What a bench worker's step does before completing its task.
#[derive(Clone, Copy, PartialEq)]
enum Step {
    /// Nothing.
    Noop,
    /// Records one durable call (`now`).
    OneCall,
    /// The first time, records a 100 ms sleep and hands the task back
    /// until it is due; the second time, completes it.
    Sleep,
}

/// What a bench worker saw: the instants at which it received its tasks,
/// and (for [`Step::Sleep`]) how late after its due time each handed-back
/// task came back, ms.
#[derive(Default)]
struct Served {
    received: Vec<Instant>,
    late_ms: Vec<f64>,
}

fn epoch_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// Polls `queue` as `id` and completes each task with its input (after
/// `step`), until `done` reaches `total`.
async fn serve(
    mut worker: WorkerClient,
    id: String,
    queue: &'static str,
    done: Arc<AtomicUsize>,
    total: usize,
    step: Step,
) -> Served {
    register(&mut worker, &id, queue).await;
    let mut served = Served::default();
    while done.load(Ordering::SeqCst) < total {
        let reply = worker
            .poll_task(pb::PollTaskRequest {
                worker_id: id.clone(),
                queue: queue.into(),
                wait_ms: 200,
            })
            .await
            .unwrap()
            .into_inner();
        let Some(task) = reply.task else { continue };
        served.received.push(Instant::now());
        if step != Step::Noop && task.history.is_empty() {
            let kind = if step == Step::Sleep { "sleep" } else { "now" };
            let call = worker
                .record_call(pb::RecordCallRequest {
                    token: task.token.clone(),
                    position: 0,
                    kind: kind.into(),
                    args_json: r#"{"duration_ms":100}"#.into(),
                    answer_json: None,
                    before: Vec::new(),
                })
                .await
                .unwrap()
                .into_inner()
                .call
                .unwrap();
            if step == Step::Sleep {
                let due: serde_json::Value = serde_json::from_str(&call.answer_json).unwrap();
                worker
                    .release_task(pb::ReleaseTaskRequest {
                        token: task.token,
                        resume_at_ms: due["due_at_ms"].as_i64(),
                    })
                    .await
                    .unwrap();
                continue;
            }
        }
        if step == Step::Sleep {
            let due: serde_json::Value =
                serde_json::from_str(&task.history[0].answer_json).unwrap();
            served
                .late_ms
                .push(epoch_ms() - due["due_at_ms"].as_f64().unwrap());
        }
        worker
            .complete_task(pb::CompleteTaskRequest {
                token: task.token,
                outcome: Some(pb::complete_task_request::Outcome::ResultJson(
                    task.input_json,
                )),
                next: None,
                before: Vec::new(),
            })
            .await
            .unwrap();
        done.fetch_add(1, Ordering::SeqCst);
    }
    served
}

/// One worker serving `queue` (doing `step`) while one execution runs
/// `steps` steps on it; what the worker saw.
async fn one_worker(
    client: &mut common::grpc::Client,
    port: u16,
    key: &str,
    queue: &'static str,
    steps: usize,
    step: Step,
) -> Served {
    let done = Arc::new(AtomicUsize::new(0));
    let worker = worker_client(port, key).await;
    let id = format!("{queue}-worker");
    let serving = tokio::spawn(serve(worker, id, queue, done, steps, step));
    client.start_execution(start(queue, steps)).await.unwrap();
    serving.await.unwrap()
}

/// The gaps between consecutive instants, ms.
fn gaps_ms(received: &[Instant]) -> Vec<f64> {
    received
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect()
}

fn start(queue: &str, steps: usize) -> pb::StartExecutionRequest {
    pb::StartExecutionRequest {
        package: "kit".into(),
        workflow: "many_steps".into(),
        input_json: format!(r#"{{"n":{steps}}}"#),
        worker_queue: Some(queue.into()),
        ..Default::default()
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let backend = common::bench_backend();
    let scale = if quick { 5 } else { 1 };
    let sync = common::bench_arg("--sync").unwrap_or_else(|| "full".into());
    let db = common::Db::on(backend);
    let key = db.tenant("bench", &["--max-open-executions", "1000000"]);
    let port = common::free_port();
    let _server = db.serve_api(port, &["--sync", &sync]);
    println!(
        "cerebelum worker benchmark on {backend:?}, --sync {sync} ({} cores): a `cerebelum \
         serve` process, workers in this process (tonic), a no-op step",
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
        upload(&mut client, "kit", &common::guest("testkit")).await;

        // (w1) One execution, one worker, steps in a row.
        let steps = 500 / scale;
        let served = one_worker(&mut client, port, &key, "rt", steps, Step::Noop).await;
        let mut gaps = gaps_ms(&served.received);
        let plain = common::percentile(&mut gaps, 0.5);
        println!(
            "(w1) worker step round trip, {} steps in a row: p50 {:.2} ms, p99 {:.2} ms \
             (target p50 <= 3 ms with a Python worker)",
            steps,
            plain,
            common::percentile(&mut gaps, 0.99)
        );

        // (w5) The same with one durable call in each step.
        let served = one_worker(&mut client, port, &key, "rc", steps, Step::OneCall).await;
        let mut gaps = gaps_ms(&served.received);
        let with_call = common::percentile(&mut gaps, 0.5);
        println!(
            "(w5) worker step with one durable call (RecordCall now), {steps} in a row: p50 \
             {with_call:.2} ms, {:+.2} ms over (w1) (target <= 1 ms on SQLite)",
            with_call - plain
        );

        // (w6) A sleep handed back, resumed when due.
        let sleeps = 50 / scale;
        let mut late = one_worker(&mut client, port, &key, "hb", sleeps, Step::Sleep)
            .await
            .late_ms;
        println!(
            "(w6) worker step sleeping 100 ms, handed back: {sleeps} resumed p50 {:.2} ms, p99 \
             {:.2} ms after due (target p50 <= 5 ms)",
            common::percentile(&mut late, 0.5),
            common::percentile(&mut late, 0.99)
        );

        // (w2) Many executions, 8 workers.
        let (executions, per) = (200 / scale, 10);
        let total = executions * per;
        let done = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for w in 0..8 {
            let worker = worker_client(port, &key).await;
            workers.push(tokio::spawn(serve(
                worker,
                format!("w2-{w}"),
                "tp",
                done.clone(),
                total,
                Step::Noop,
            )));
        }
        let began = Instant::now();
        for _ in 0..executions {
            client.start_execution(start("tp", per)).await.unwrap();
        }
        let mut served = Vec::new();
        for w in workers {
            served.push(w.await.unwrap().received.len());
        }
        let took = began.elapsed();
        println!(
            "(w2) 8 workers, {executions} executions x {per} steps: {total} steps in {:.2} s = \
             {:.0} worker steps/s (target >= 2,000/s on SQLite); per worker {served:?}",
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64()
        );

        // (w3) A Python worker process.
        let package = common::python_guest("tests/guests/python/pychain.py");
        upload(&mut client, "pychain", &package).await;
        let mut worker = python_worker(port, &key, "py", "py-bench", 1);
        wait_registered(port, &key, &["py-bench".to_owned()]).await;
        let mut per_step = Vec::new();
        for _ in 0..(10 / scale).max(2) {
            let request = pb::StartExecutionRequest {
                package: "pychain".into(),
                workflow: "pychain".into(),
                input_json: "{}".into(),
                worker_queue: Some("py".into()),
                ..Default::default()
            };
            let began = Instant::now();
            let id = client
                .start_execution(request)
                .await
                .unwrap()
                .into_inner()
                .execution
                .unwrap()
                .id;
            wait_completed(&mut client, &id, 2).await;
            per_step.push(began.elapsed().as_secs_f64() * 1000.0 / 50.0);
        }
        let _ = worker.kill();
        let _ = worker.wait();
        println!(
            "(w3) Python worker, 50 steps in a row, {} executions: {:.2} ms per step (median; \
             target p50 <= 3 ms)",
            per_step.len(),
            common::percentile(&mut per_step, 0.5)
        );

        // (w4) 8 Python worker processes, many executions.
        for concurrency in [1, 4] {
            let queue = format!("py8-{concurrency}");
            let ids: Vec<String> = (0..8).map(|w| format!("{queue}-{w}")).collect();
            let mut workers: Vec<_> = ids
                .iter()
                .map(|id| python_worker(port, &key, &queue, id, concurrency))
                .collect();
            wait_registered(port, &key, &ids).await;
            let executions = 40 / scale;
            let began = Instant::now();
            let mut started = Vec::new();
            for _ in 0..executions {
                let request = pb::StartExecutionRequest {
                    package: "pychain".into(),
                    workflow: "pychain".into(),
                    input_json: "{}".into(),
                    worker_queue: Some(queue.clone()),
                    ..Default::default()
                };
                let reply = client.start_execution(request).await.unwrap().into_inner();
                started.push(reply.execution.unwrap().id);
            }
            for id in &started {
                wait_completed(&mut client, id, 5).await;
            }
            let took = began.elapsed();
            for worker in &mut workers {
                let _ = worker.kill();
                let _ = worker.wait();
            }
            println!(
                "(w4) 8 Python worker processes x {concurrency} task(s) at a time, {executions} \
                 executions x 50 steps: {} steps in {:.2} s = {:.0} worker steps/s (target >= \
                 2,000/s on SQLite)",
                executions * 50,
                took.as_secs_f64(),
                (executions * 50) as f64 / took.as_secs_f64()
            );
        }
    });
}

/// A `python -m cerebelum worker` process serving `pychain.py` on `queue`,
/// `concurrency` tasks at a time.
fn python_worker(
    port: u16,
    key: &str,
    queue: &str,
    id: &str,
    concurrency: usize,
) -> std::process::Child {
    std::process::Command::new(common::python())
        .args(["-m", "cerebelum", "worker"])
        .arg(common::root().join("tests/guests/python/pychain.py"))
        .args(["--queue", queue, "--server", &common::url(port)])
        .args(["--api-key", key, "--worker-id", id])
        .args(["--concurrency", &concurrency.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning python -m cerebelum worker")
}

/// Waits until execution `id` completes, looking every `every_ms`;
/// panics if it fails.
async fn wait_completed(client: &mut common::grpc::Client, id: &str, every_ms: u64) {
    loop {
        let e = client
            .get_execution(pb::GetExecutionRequest { id: id.to_owned() })
            .await
            .unwrap()
            .into_inner();
        if e.status == pb::ExecutionStatus::Completed as i32 {
            return;
        }
        assert!(
            e.status != pb::ExecutionStatus::Failed as i32,
            "{:?}",
            e.error_json
        );
        tokio::time::sleep(std::time::Duration::from_millis(every_ms)).await;
    }
}

/// Waits until every worker of `ids` has registered.
async fn wait_registered(port: u16, key: &str, ids: &[String]) {
    let mut lister = worker_client(port, key).await;
    loop {
        let listed = lister
            .list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers;
        if ids
            .iter()
            .all(|id| listed.iter().any(|w| &w.worker_id == id))
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
