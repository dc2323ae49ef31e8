//! The durable-core benchmark: `cargo bench -p cerebelum-engine --bench engine`.
//!
//! Runs the engine in process with the real testkit component, on a real
//! SQLite file (default) or a fresh database on the real PostgreSQL server
//! (`-- --backend postgres`, at `CEREBELUM_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/test`), once with `--sync normal`
//! (durable against a crash of the engine) and once with `full` (durable
//! against power loss). Reports medians; the machine is shared, so compare
//! ratios within one run.
//!
//! - `-- --nodes N` runs N engine nodes (each with its own connections,
//!   node id and group-commit thread) on the one PostgreSQL database, in
//!   this process; starts go to them in turn.
//! - On PostgreSQL it also measures failover: two real `cerebelum serve`
//!   processes, one killed with SIGKILL while it holds executions, and the
//!   time until the other has claimed them all.
//! - `-- --quick` runs smaller counts (a smoke test of the benchmark itself).
//! - `-- --only LETTERS` runs only those parts (e.g. `--only a`; `0` for the
//!   floors), for a profile of one.

use cerebelum_harness as common;

use cerebelum::clock::SystemClock;
use cerebelum::model::DEFAULT_TENANT;
use cerebelum::store::{self, SharedStore, Synchronous};
use cerebelum::{Engine, EngineConfig};
use common::Backend;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

type Stop = tokio::sync::oneshot::Sender<()>;
type Served = tokio::task::JoinHandle<cerebelum::Result<()>>;

struct Bench {
    /// The engine nodes; `nodes[0]` also serves the raw measurements.
    nodes: Vec<Engine>,
    next: AtomicUsize,
    store: SharedStore,
    sha: String,
    servers: Vec<(Stop, Served)>,
    db: common::Db,
}

impl Bench {
    async fn new(backend: Backend, sync: Synchronous, nodes: usize) -> Self {
        let db = common::Db::on(backend);
        let mut engines = Vec::new();
        for _ in 0..nodes {
            let store = store::open(&db.url, sync).await.unwrap();
            let mut config = EngineConfig::new(common::cache_dir());
            config.hibernate_after = Duration::from_millis(100);
            config.max_running = 4096;
            config.tick = Duration::from_millis(5);
            config.runtime.max_instances = 2000;
            engines.push(Engine::new(store, config, Arc::new(SystemClock)).unwrap());
        }
        let sha = engines[0]
            .upload(
                DEFAULT_TENANT,
                "testkit",
                std::fs::read(common::guest("testkit")).unwrap(),
            )
            .await
            .unwrap()
            .sha256;
        let servers = engines.iter().map(common::serve_in_process).collect();
        Self {
            store: engines[0].store().clone(),
            nodes: engines,
            next: AtomicUsize::new(0),
            sha,
            servers,
            db,
        }
    }

    async fn stop(self) {
        for (stop, server) in self.servers {
            let _ = stop.send(());
            server.await.unwrap().unwrap();
        }
    }

    /// The node the next start goes to (in turn).
    fn node(&self) -> &Engine {
        &self.nodes[self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len()]
    }

    async fn start_on(&self, node: &Engine, workflow: &str, input: &str) -> String {
        node.start(DEFAULT_TENANT, &self.sha, workflow, input, None)
            .await
            .unwrap()
            .id
    }

    async fn start(&self, workflow: &str, input: &str) -> String {
        self.start_on(self.node(), workflow, input).await
    }

    /// Starts `n` executions concurrently (as many clients would), 64 in
    /// flight at a time; returns their ids.
    async fn start_many(&self, n: usize, workflow: &str, input: &str) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        let mut pending = Vec::new();
        for _ in 0..n {
            pending.push(self.start(workflow, input));
            if pending.len() == 64 {
                ids.extend(futures_join(std::mem::take(&mut pending)).await);
            }
        }
        ids.extend(futures_join(pending).await);
        ids
    }

    /// Starts and waits for one execution; its wall time.
    async fn run_one(&self, workflow: &str, input: &str) -> Duration {
        let t = Instant::now();
        let node = self.node();
        let id = self.start_on(node, workflow, input).await;
        let done = node.wait_finished(&id).await.unwrap();
        assert_eq!(done.status.as_str(), "completed", "{done:?}");
        t.elapsed()
    }

    async fn count(&self, status: &str) -> i64 {
        common::count_by_status(&self.db.url)
            .await
            .into_iter()
            .find(|(s, _)| s == status)
            .map(|(_, n)| n)
            .unwrap_or(0)
    }

    /// Starts `n` executions at once and waits until all of them completed
    /// (counted from the engine's completion notifications); the time
    /// from the first start.
    async fn batch_completed(&self, n: usize, workflow: &str, input: &str) -> Duration {
        // Every node's completions, in one channel.
        let (tx, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let forwarders: Vec<_> = self
            .nodes
            .iter()
            .map(|node| {
                let mut rx = node.finished();
                let tx = tx.clone();
                tokio::spawn(async move {
                    loop {
                        let msg = rx.recv().await;
                        let lost = msg.is_err();
                        if tx.send(msg).is_err() || lost {
                            return;
                        }
                    }
                })
            })
            .collect();
        let t = Instant::now();
        let ids: std::collections::HashSet<String> = self
            .start_many(n, workflow, input)
            .await
            .into_iter()
            .collect();
        let mut done = 0;
        while done < n {
            match finished.recv().await.unwrap() {
                Ok(id) if ids.contains(&id) => done += 1,
                Ok(_) => {}
                Err(e) => panic!("completion notifications lost: {e}"),
            }
        }
        let elapsed = t.elapsed();
        for f in forwarders {
            f.abort();
        }
        elapsed
    }

    /// Starts `n` executions at once and waits until they all hibernated.
    async fn batch_waiting(&self, n: usize, workflow: &str, input: &str) -> Duration {
        let before = self.count("waiting").await;
        let t = Instant::now();
        self.start_many(n, workflow, input).await;
        while self.count("waiting").await < before + n as i64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        t.elapsed()
    }
}

/// Polls all `futures` concurrently on this task; their outputs in order.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut ready = true;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => ready = false,
                }
            }
        }
        if ready {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn suite(backend: Backend, sync: Synchronous, nodes: usize, quick: bool) {
    let scale = if quick { 10 } else { 1 };
    // `-- --only ab` runs parts (a) and (b) alone (`0` for the floors):
    // for a profile of one part.
    let only = common::bench_arg("--only");
    let part = |p: char| only.as_deref().is_none_or(|o| o.contains(p));
    println!("\n== {backend:?} sync={sync:?}, {nodes} node(s) ==");
    let bench = Bench::new(backend, sync, nodes).await;
    // Warm up: package loaded, pool slots touched.
    for _ in 0..20 {
        bench.run_one("noop3", "{}").await;
    }

    if part('0') {
        // (0) The floor: one sequential durable append through the store.
        let floor = raw_commit(&bench, 500 / scale).await;
        println!("(0) sequential store commit of one journal entry: p50 {floor:.3} ms");

        let floor = raw_instance(&bench, 500 / scale).await;
        println!(
            "(0) fresh instance + call + drop of the no-op step (no journal): p50 {floor:.3} ms"
        );
    }

    if part('a') {
        // (a) Sequential durable step: the difference between a 100-step and
        // a 0-step workflow, per step; median over runs.
        let mut per_step = Vec::new();
        for _ in 0..(21 / scale).max(3) {
            let zero = bench.run_one("many_steps", r#"{"n": 0}"#).await;
            let hundred = bench.run_one("many_steps", r#"{"n": 100}"#).await;
            per_step.push((hundred.as_secs_f64() - zero.as_secs_f64()) / 100.0 * 1e3);
        }
        let target = match (backend, sync) {
            (Backend::Sqlite, Synchronous::Normal) => "<= 0.15 ms",
            (Backend::Sqlite, _) => "<= 0.45 ms",
            (Backend::Postgres, Synchronous::Normal) => "none",
            (Backend::Postgres, _) => "<= 0.9 ms",
        };
        println!(
            "(a) sequential durable step (no-op Rust step): p50 {:.3} ms   [target {target}]",
            median(&mut per_step)
        );
    }

    if part('b') {
        // (b) Concurrent durable steps per second.
        let (n, steps) = (200 / scale, 50);
        let t = bench
            .batch_completed(n, "many_steps", &format!(r#"{{"n": {steps}}}"#))
            .await;
        println!(
            "(b) concurrent durable steps: {:.0} steps/s ({} executions x {steps} steps in {:.2} s)   [target >= 5,000/s]",
            (n * steps) as f64 / t.as_secs_f64(),
            n,
            t.as_secs_f64()
        );
    }

    if part('c') {
        // (c) 3-step no-op workflow end to end: latency alone, throughput in bulk.
        let mut latency: Vec<f64> = Vec::new();
        for _ in 0..(300 / scale) {
            latency.push(bench.run_one("noop3", "{}").await.as_secs_f64() * 1e3);
        }
        let p50 = median(&mut latency);
        let p99 = common::percentile(&mut latency, 0.99);
        let n = 2000 / scale;
        let t = bench.batch_completed(n, "noop3", "{}").await;
        let (latency_target, rate_target) = match (backend, sync) {
            (Backend::Sqlite, Synchronous::Normal) => ("p50 <= 1 ms", ">= 2,000/s"),
            (Backend::Sqlite, _) => ("p50 <= 2.5 ms", "none"),
            (Backend::Postgres, _) => ("none", ">= 1,000/s"),
        };
        println!(
            "(c) 3-step workflow: p50 {p50:.3} ms, p99 {p99:.3} ms   [target {latency_target}]; \
             {:.0} workflows/s ({n} at once)   [target {rate_target}]",
            n as f64 / t.as_secs_f64()
        );
    }

    if part('e') {
        // (e) Replay speed: re-drive a finished 2,000-step execution from its
        // journal (made due again by hand), which answers every call from the
        // journal without instantiating a step.
        let steps = 2000 / scale;
        let node = &bench.nodes[0];
        let id = bench
            .start_on(node, "many_steps", &format!(r#"{{"n": {steps}}}"#))
            .await;
        node.wait_finished(&id).await.unwrap();
        let entries = bench
            .store
            .executions()
            .journal(&id, 0)
            .await
            .unwrap()
            .len();
        let t = replay_again(&bench, &id).await;
        println!(
            "(e) replay: {entries} journal entries in {:.1} ms = {:.0} entries/s",
            t.as_secs_f64() * 1e3,
            entries as f64 / t.as_secs_f64()
        );
    }

    if part('d') {
        // (d) Memory with hibernated executions: each ran a step and sleeps an hour.
        let n = 10_000 / scale;
        let before = rss_kib();
        let t = bench
            .batch_waiting(n, "step_sleep_step", r#"{"sleep_ms": 3600000}"#)
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss_kib();
        println!(
            "(d) {n} hibernated executions: engine RSS {} MiB (+{} MiB over {} MiB before; hibernated in {:.1} s); live instances {}",
            after / 1024,
            after.saturating_sub(before) / 1024,
            before / 1024,
            t.as_secs_f64(),
            cerebelum::runtime::live_instances()
        );
    }

    bench.stop().await;
}

/// p50 of a fresh instance + `run-step noop` + drop, in ms.
async fn raw_instance(bench: &Bench, n: usize) -> f64 {
    use cerebelum::executor::GuestData;
    use cerebelum::runtime::{Embedding, InvocationLimits, RuntimeConfig, new_store};
    type Runtime = cerebelum::runtime::Runtime<GuestData>;
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: common::cache_dir(),
        max_instances: 100,
        max_memory_bytes: 1 << 32,
        fuel: false,
        guest_memory_bytes: 8 << 30,
    })
    .unwrap();
    let store = bench.store.clone();
    let sha = bench.sha.clone();
    let package = runtime
        .load(&bench.sha, || async move {
            store.catalog().package_bytes(&sha).await
        })
        .await
        .unwrap();
    let limits = InvocationLimits::new(256 << 20, Duration::from_secs(10));
    let input = String::from("{}");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut store = new_store(runtime.engine(), limits, 1, 0, GuestData::without_host);
        let instance = package.pre.instantiate_async(&mut store).await.unwrap();
        instance
            .cerebelum_workflow_guest()
            .call_run_step(&mut store, "noop", &input)
            .await
            .unwrap()
            .unwrap();
        drop(store);
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    median(&mut samples)
}

/// p50 of single-entry commits straight to the store, in ms.
async fn raw_commit(bench: &Bench, n: usize) -> f64 {
    use cerebelum::journal::{Call, CallKind, Entry, Event, Log, LogLine};
    use cerebelum::store::CommitOp;
    let node = &bench.nodes[0];
    let id = bench.start_on(node, "noop3", "{}").await;
    node.wait_finished(&id).await.unwrap();
    let epoch = bench.store.executions().execution(&id).await.unwrap().epoch;
    let last = bench
        .store
        .executions()
        .journal(&id, 0)
        .await
        .unwrap()
        .len() as i64;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as i64 {
        let op = CommitOp {
            create: None,
            execution_id: id.clone(),
            epoch,
            entries: vec![Entry {
                seq: last + 1 + i,
                invocation: "bench".into(),
                event: Event::Call {
                    hash: CallKind::Log.hash(&i),
                    call: Call::Log(Log {
                        args: LogLine {
                            level: "info".into(),
                            message: i.to_string(),
                        },
                        answer: serde_json::Value::Null,
                    }),
                },
                at_ms: 0,
            }],
            side: Vec::new(),
            status: None,
        };
        let t = Instant::now();
        let r = bench.store.commit(vec![op], 0).await.unwrap();
        samples.push(t.elapsed().as_secs_f64() * 1e3);
        r[0].as_ref().unwrap();
    }
    median(&mut samples)
}

/// Makes a completed execution due again (as after a crash before its end
/// was recorded) and times its replay to completion.
async fn replay_again(bench: &Bench, id: &str) -> Duration {
    bench.db.sql(&format!(
        "DELETE FROM journal WHERE execution_id = '{id}' AND kind = 'completed'"
    ));
    // Includes connecting to the database to make it due.
    let t = Instant::now();
    bench.db.sql(&format!(
        "UPDATE executions SET status = 'pending', result = NULL, wake_at = 0 WHERE id = '{id}'"
    ));
    loop {
        let record = bench.store.executions().execution(id).await.unwrap();
        if record.status.as_str() == "completed" {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Failover: node A (a real `cerebelum serve`, default 5 s lease) holds
/// `n` executions sleeping in process; node B runs beside it. A is killed
/// with SIGKILL; returns the times until B has claimed the first and the
/// last of them.
async fn failover(n: usize) -> (Duration, Duration, Duration) {
    let db = common::Db::on(Backend::Postgres);
    let lease = Duration::from_millis(5000);
    let lease_ms = lease.as_millis().to_string();
    let args = [
        "--lease-ms",
        lease_ms.as_str(),
        "--tick-ms",
        "50",
        "--hibernate-after-ms",
        "600000",
    ];
    db.ok(&[
        "upload",
        common::guest("testkit").to_str().unwrap(),
        "--name",
        "testkit",
    ]);
    let node_a = db.serve(&args);
    let store = store::open(&db.url, Synchronous::Full).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let id = db.ok(&[
            "start",
            "testkit",
            "step_sleep_step",
            "--input",
            r#"{"sleep_ms": 600000}"#,
        ]);
        ids.push(id.trim().to_owned());
    }
    // All of them asleep in A (their sleep journaled), then B comes up.
    for id in &ids {
        while store
            .executions()
            .journal(id, 0)
            .await
            .unwrap()
            .iter()
            .all(|e| e.event.kind() != "sleep")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let _node_b = db.serve(&args);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let owner_a = store
        .executions()
        .execution(&ids[0])
        .await
        .unwrap()
        .owner
        .unwrap();
    node_a.kill9();
    let killed = Instant::now();
    let mut first = None;
    let mut remaining: std::collections::HashSet<&String> = ids.iter().collect();
    while !remaining.is_empty() {
        let mut taken = Vec::new();
        for id in &remaining {
            let record = store.executions().execution(id).await.unwrap();
            if record.owner.as_ref().is_some_and(|o| *o != owner_a) {
                taken.push(*id);
            }
        }
        if !taken.is_empty() && first.is_none() {
            first = Some(killed.elapsed());
        }
        for id in taken {
            remaining.remove(id);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no failover within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (lease, first.unwrap(), killed.elapsed())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let only = common::bench_arg("--sync");
    let backend = common::bench_backend();
    let nodes: usize = common::bench_arg("--nodes").map_or(1, |n| n.parse().expect("--nodes N"));
    assert!(
        nodes == 1 || backend == Backend::Postgres,
        "several nodes need --backend postgres"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "cerebelum durable-core benchmark ({} cores); guests from {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        common::guest_dir().display()
    );
    runtime.block_on(async {
        for (name, sync) in [("normal", Synchronous::Normal), ("full", Synchronous::Full)] {
            if only.as_deref().is_none_or(|o| o == name) {
                suite(backend, sync, nodes, quick).await;
            }
        }
        if backend == Backend::Postgres {
            let n = if quick { 5 } else { 50 };
            let (lease, first, last) = failover(n).await;
            println!(
                "\n(f) failover after kill -9: {n} executions held by the killed node, first \
                 claimed by the other after {:.2} s, last after {:.2} s   [target: lease {:.1} s + < 1 s]",
                first.as_secs_f64(),
                last.as_secs_f64(),
                lease.as_secs_f64()
            );
        }
    });
}
