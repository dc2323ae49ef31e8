//! The durable-core benchmark: `cargo bench -p cerebelum-engine --bench engine`.
//!
//! Runs the engine in process on a real SQLite file with the real testkit
//! component, once with `synchronous=NORMAL` (durable against a process
//! crash) and once with `FULL` (fsync per group commit, durable against
//! power loss). Reports medians; the machine is shared, so compare ratios
//! within one run.
//!
//! `-- --quick` runs smaller counts (a smoke test of the benchmark itself).

#[path = "../../tests/common/mod.rs"]
mod common;

use cerebelum::clock::SystemClock;
use cerebelum::store::{self, SharedStore, Synchronous};
use cerebelum::{Engine, EngineConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Bench {
    engine: Engine,
    store: SharedStore,
    sha: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<cerebelum::Result<()>>>,
    db: common::Db,
}

impl Bench {
    async fn new(sync: Synchronous) -> Self {
        let db = common::Db::new();
        let store = store::open(db.path.to_str().unwrap(), sync).await.unwrap();
        let mut config = EngineConfig::new(common::cache_dir());
        config.hibernate_after = Duration::from_millis(100);
        config.max_running = 4096;
        config.tick = Duration::from_millis(5);
        config.runtime.max_instances = 2000;
        let engine = Engine::new(store.clone(), config, Arc::new(SystemClock)).unwrap();
        let sha = engine
            .upload("testkit", std::fs::read(common::guest("testkit")).unwrap())
            .await
            .unwrap()
            .sha256;
        let (stop, server) = common::serve_in_process(&engine);
        Self {
            engine,
            store,
            sha,
            stop: Some(stop),
            server: Some(server),
            db,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap().unwrap();
    }

    async fn start(&self, workflow: &str, input: &str) -> String {
        self.engine
            .start(&self.sha, workflow, input, None)
            .await
            .unwrap()
            .id
    }

    /// Starts and waits for one execution; its wall time.
    async fn run_one(&self, workflow: &str, input: &str) -> Duration {
        let t = Instant::now();
        let id = self.start(workflow, input).await;
        let done = self.engine.wait_finished(&id).await.unwrap();
        assert_eq!(done.status.as_str(), "completed", "{done:?}");
        t.elapsed()
    }

    async fn count(&self, status: &str) -> i64 {
        self.store
            .count_by_status()
            .await
            .unwrap()
            .into_iter()
            .find(|(s, _)| s == status)
            .map(|(_, n)| n)
            .unwrap_or(0)
    }

    /// Starts `n` executions at once and waits until all of them completed
    /// (counted from the engine's completion notifications); the time
    /// from the first start.
    async fn batch_completed(&self, n: usize, workflow: &str, input: &str) -> Duration {
        let mut finished = self.engine.finished();
        let t = Instant::now();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..n {
            ids.insert(self.start(workflow, input).await);
        }
        let mut done = 0;
        while done < n {
            match finished.recv().await {
                Ok(id) if ids.contains(&id) => done += 1,
                Ok(_) => {}
                Err(e) => panic!("completion notifications lost: {e}"),
            }
        }
        t.elapsed()
    }

    /// Starts `n` executions at once and waits until they all hibernated.
    async fn batch_waiting(&self, n: usize, workflow: &str, input: &str) -> Duration {
        let before = self.count("waiting").await;
        let t = Instant::now();
        for _ in 0..n {
            self.start(workflow, input).await;
        }
        while self.count("waiting").await < before + n as i64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        t.elapsed()
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
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

async fn suite(sync: Synchronous, quick: bool) {
    let scale = if quick { 10 } else { 1 };
    println!("\n== SQLite synchronous={sync:?} ==");
    let bench = Bench::new(sync).await;
    // Warm up: package loaded, pool slots touched.
    for _ in 0..20 {
        bench.run_one("noop3", "{}").await;
    }

    // (0) The floor: one sequential durable append through the store.
    let floor = raw_commit(&bench, 500 / scale).await;
    println!("(0) sequential store commit of one journal entry: p50 {floor:.3} ms");

    let floor = raw_instance(&bench, 500 / scale).await;
    println!("(0) fresh instance + call + drop of the no-op step (no journal): p50 {floor:.3} ms");

    // (a) Sequential durable step: the difference between a 100-step and
    // a 0-step workflow, per step; median over runs.
    let mut per_step = Vec::new();
    for _ in 0..(21 / scale).max(3) {
        let zero = bench.run_one("many_steps", r#"{"n": 0}"#).await;
        let hundred = bench.run_one("many_steps", r#"{"n": 100}"#).await;
        per_step.push((hundred.as_secs_f64() - zero.as_secs_f64()) / 100.0 * 1e3);
    }
    println!(
        "(a) sequential durable step (no-op Rust step): p50 {:.3} ms   [target <= 0.25 ms]",
        median(&mut per_step)
    );

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

    // (c) 3-step no-op workflow end to end: latency alone, throughput in bulk.
    let mut latency: Vec<f64> = Vec::new();
    for _ in 0..(300 / scale) {
        latency.push(bench.run_one("noop3", "{}").await.as_secs_f64() * 1e3);
    }
    let p50 = median(&mut latency);
    let p99 = percentile(&mut latency, 0.99);
    let n = 2000 / scale;
    let t = bench.batch_completed(n, "noop3", "{}").await;
    println!(
        "(c) 3-step workflow: p50 {p50:.3} ms, p99 {p99:.3} ms   [target p50 <= 1 ms]; \
         {:.0} workflows/s ({n} at once)   [target >= 2,000/s]",
        n as f64 / t.as_secs_f64()
    );

    // (e) Replay speed: re-drive a finished 2,000-step execution from its
    // journal (made due again by hand), which answers every call from the
    // journal without instantiating a step.
    let steps = 2000 / scale;
    let id = bench
        .start("many_steps", &format!(r#"{{"n": {steps}}}"#))
        .await;
    bench.engine.wait_finished(&id).await.unwrap();
    let entries = bench.store.journal(&id, 0).await.unwrap().len();
    let t = replay_again(&bench, &id).await;
    println!(
        "(e) replay: {entries} journal entries in {:.1} ms = {:.0} entries/s",
        t.as_secs_f64() * 1e3,
        entries as f64 / t.as_secs_f64()
    );

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
    bench.stop().await;
}

/// p50 of a fresh instance + `run-step noop` + drop, in ms.
async fn raw_instance(bench: &Bench, n: usize) -> f64 {
    use cerebelum::runtime::{InvocationLimits, Runtime, RuntimeConfig, sandbox_store};
    let runtime = Runtime::new(&RuntimeConfig {
        cache_dir: common::cache_dir(),
        max_instances: 100,
        max_memory_bytes: 1 << 32,
    })
    .unwrap();
    let store = bench.store.clone();
    let sha = bench.sha.clone();
    let package = runtime
        .load(
            &bench.sha,
            || async move { store.package_bytes(&sha).await },
        )
        .await
        .unwrap();
    let limits = InvocationLimits {
        memory_bytes: 256 << 20,
        cpu: Duration::from_secs(10),
    };
    let input = String::from("{}");
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut store = sandbox_store(runtime.engine(), limits, None, 1, 0);
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
    use cerebelum::model::{CommitOp, Entry};
    let id = bench.start("noop3", "{}").await;
    bench.engine.wait_finished(&id).await.unwrap();
    let epoch = bench.store.execution(&id).await.unwrap().epoch;
    let last = bench.store.journal(&id, 0).await.unwrap().len() as i64;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as i64 {
        let op = CommitOp {
            create: None,
            execution_id: id.clone(),
            epoch,
            entries: vec![Entry {
                seq: last + 1 + i,
                invocation: "bench".into(),
                kind: "log".into(),
                ref_seq: None,
                args_hash: None,
                payload: serde_json::json!({"i": i}),
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
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", bench.db.path.display()))
        .await
        .unwrap();
    sqlx::query("DELETE FROM journal WHERE execution_id = ? AND kind = 'completed'")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let t = Instant::now();
    sqlx::query(
        "UPDATE executions SET status = 'pending', result = NULL, wake_at = 0 WHERE id = ?",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    loop {
        let record = bench.store.execution(id).await.unwrap();
        if record.status.as_str() == "completed" {
            return t.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let only = std::env::args()
        .skip_while(|a| a != "--sync")
        .nth(1)
        .map(|s| s.to_lowercase());
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
                suite(sync, quick).await;
            }
        }
    });
}
