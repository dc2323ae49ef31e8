//! The Python SDK benchmark: `cargo bench -p cerebelum-engine --bench python`.
//!
//! With the real `tests/guests/python/pybench.py` package, built by
//! `cerebelum build` (componentize-py) with the repository's `.venv`
//! (`scripts/python-env.sh` makes it):
//!
//! - `cerebelum build` time (a fresh build, not the harness's cached one);
//! - first compile of the component by Cranelift, and loading it from the
//!   on-disk compiled cache into a fresh runtime (what a restarted engine
//!   does), p50;
//! - fresh instance + `run-step noop` + drop, no journal (an execution's
//!   first step), p50;
//! - `run-step noop` again and again on one instance, no journal, p50;
//! - a durable Python step in the engine (call + journal, in the instance
//!   the execution's step before returned from): the
//!   difference between a 21-step and a 1-step workflow, per step, p50;
//! - idle memory per live Python instance (RSS growth over N instances
//!   that each ran a step and are kept alive).
//!
//! SQLite file, synchronous=normal. `-- --quick` runs smaller counts.

use cerebelum_harness as common;

use cerebelum::clock::SystemClock;
use cerebelum::executor::GuestData;
use cerebelum::model::DEFAULT_TENANT;
use cerebelum::runtime::{Embedding, InvocationLimits, RuntimeConfig, new_store};
type Runtime = cerebelum::runtime::Runtime<GuestData>;
use cerebelum::store::{self, Synchronous};
use cerebelum::{Engine, EngineConfig};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Resident memory of this process, KiB: (private, shared). Pages an
/// instance only reads from its copy-on-write memory image are shared
/// (the same physical page for every instance); pages it writes to are
/// private.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("RssFile:") + field("RssShmem:"))
}

/// Minor page faults of this process so far (/proc/self/stat field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    rest.split_whitespace()
        .nth(7)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn runtime_config(cache: &std::path::Path) -> RuntimeConfig {
    RuntimeConfig {
        cache_dir: cache.to_path_buf(),
        max_instances: 300,
        max_memory_bytes: 1 << 32,
        fuel: false,
        guest_memory_bytes: 8 << 30,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "cerebelum Python benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // `cerebelum build`, timed on a fresh output (the harness caches its own).
    let source = common::root().join("tests/guests/python/pybench.py");
    let out_dir = tempfile::tempdir().unwrap();
    let mut build_s = Vec::new();
    for i in 0..if quick { 1 } else { 3 } {
        let out = out_dir.path().join(format!("pybench{i}.wasm"));
        let t = Instant::now();
        let status = Command::new(common::bin())
            .args([
                "build",
                common::path(&source),
                "-o",
                common::path(&out),
                "--python",
            ])
            .arg(common::python())
            .status()
            .unwrap();
        assert!(status.success(), "cerebelum build failed");
        build_s.push(t.elapsed().as_secs_f64());
    }
    let wasm = common::python_guest("tests/guests/python/pybench.py");
    let bytes = std::fs::read(&wasm).unwrap();
    println!(
        "(p1) cerebelum build pybench.py: p50 {:.1} s over {} builds ({:.1} MB component)",
        median(&mut build_s),
        build_s.len(),
        bytes.len() as f64 / 1e6
    );

    rt.block_on(async {
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        // First compile, into an empty cache.
        let cold = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(&runtime_config(cold.path())).unwrap();
        let t = Instant::now();
        let b = bytes.clone();
        runtime.load(&sha, || async move { Ok(b) }).await.unwrap();
        println!(
            "(p2) first load: Cranelift compile + cache write + link: {:.1} s",
            t.elapsed().as_secs_f64()
        );
        drop(runtime);

        // Loads from the compiled cache into fresh runtimes.
        let mut load_ms = Vec::new();
        for _ in 0..if quick { 3 } else { 15 } {
            let runtime = Runtime::new(&runtime_config(cold.path())).unwrap();
            let t = Instant::now();
            runtime
                .load(&sha, || async { panic!("the cache must answer") })
                .await
                .unwrap();
            load_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "(p3) load from the compiled cache (mmap + link; describe cached): p50 {:.2} ms   [target <= 5 ms]",
            median(&mut load_ms)
        );

        // A step in a fresh instance: instantiate, call, drop.
        let runtime = Runtime::new(&runtime_config(cold.path())).unwrap();
        let package = runtime
            .load(&sha, || async { panic!("cached") })
            .await
            .unwrap();
        let limits = InvocationLimits::new(1 << 30, Duration::from_secs(10));
        let input = r#"{"workflow": "one", "inputs": null, "deps": {}}"#.to_owned();
        let mut floor = Vec::new();
        let mut instantiate = Vec::new();
        let faults = minor_faults();
        let rounds = if quick { 100 } else { 300 };
        for _ in 0..rounds {
            let t = Instant::now();
            let mut store = new_store(runtime.engine(), limits, 1, 0, GuestData::without_host);
            let instance = package.pre.instantiate_async(&mut store).await.unwrap();
            instantiate.push(t.elapsed().as_secs_f64() * 1e3);
            instance
                .cerebelum_workflow_guest()
                .call_run_step(&mut store, "noop", &input)
                .await
                .unwrap()
                .unwrap();
            drop(store);
            floor.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "(p4) fresh instance + run-step + drop, no journal: p50 {:.3} ms, p99 {:.3} ms \
             (of which instantiation p50 {:.3} ms); {} page faults per invocation",
            median(&mut floor.clone()),
            common::percentile(&mut floor, 0.99),
            median(&mut instantiate),
            (minor_faults() - faults) / rounds
        );

        // The same call again and again on one instance: what a step costs
        // without its instantiation.
        let mut store = new_store(runtime.engine(), limits, 1, 0, GuestData::without_host);
        let instance = package.pre.instantiate_async(&mut store).await.unwrap();
        let guest = instance.cerebelum_workflow_guest();
        let mut warm = Vec::new();
        let faults = minor_faults();
        for _ in 0..rounds {
            let t = Instant::now();
            guest
                .call_run_step(&mut store, "noop", &input)
                .await
                .unwrap()
                .unwrap();
            warm.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "(p4w) run-step on a warm instance, no journal: p50 {:.3} ms, p99 {:.3} ms; {} page \
             faults per call",
            median(&mut warm.clone()),
            common::percentile(&mut warm, 0.99),
            (minor_faults() - faults) / rounds
        );
        drop(store);

        // Idle memory per live instance: just instantiated, then after a step.
        let n = if quick { 20 } else { 200 };
        let before = rss_kib();
        let mut alive = Vec::with_capacity(n);
        for _ in 0..n {
            let mut store = new_store(runtime.engine(), limits, 1, 0, GuestData::without_host);
            let instance = package.pre.instantiate_async(&mut store).await.unwrap();
            alive.push((store, instance));
        }
        let instantiated = rss_kib();
        for (store, instance) in &mut alive {
            let _ = instance
                .cerebelum_workflow_guest()
                .call_run_step(&mut *store, "noop", &input)
                .await
                .unwrap();
        }
        let after = rss_kib();
        let per = |a: (u64, u64), b: (u64, u64)| {
            (
                a.0.saturating_sub(b.0) as f64 / n as f64,
                a.1.saturating_sub(b.1) as f64 / n as f64,
            )
        };
        let (fresh_private, fresh_shared) = per(instantiated, before);
        let (used_private, used_shared) = per(after, before);
        println!(
            "(p5) memory per live Python instance ({n} kept alive): instantiated {fresh_private:.0} KiB private \
             + {fresh_shared:.0} KiB shared; after a step {used_private:.0} KiB private + {used_shared:.0} KiB shared"
        );
        drop(alive);
        drop(package);
        drop(runtime);

        // Durable Python steps in the engine.
        let db = common::Db::new();
        let store = store::open(&db.url, Synchronous::Normal).await.unwrap();
        let mut config = EngineConfig::new(cold.path().to_path_buf());
        config.max_running = 64;
        config.tick = Duration::from_millis(5);
        config.runtime.max_instances = 64;
        let engine = Engine::new(store, config, Arc::new(SystemClock)).unwrap();
        engine
            .upload(DEFAULT_TENANT, "pybench", bytes.clone())
            .await
            .unwrap();
        let served = common::serve_in_process(&engine);
        let run = |workflow: &'static str| {
            let engine = engine.clone();
            let sha = sha.clone();
            async move {
                let t = Instant::now();
                let r = engine
                    .start(DEFAULT_TENANT, &sha, workflow, "{}", None)
                    .await
                    .unwrap();
                let done = engine.wait_finished(&r.id).await.unwrap();
                assert_eq!(done.status.as_str(), "completed", "{:?}", done.error);
                t.elapsed().as_secs_f64() * 1e3
            }
        };
        for _ in 0..3 {
            run("twenty_one").await;
        }
        let mut per_step = Vec::new();
        let mut one = Vec::new();
        for _ in 0..if quick { 3 } else { 21 } {
            let a = run("one").await;
            let b = run("twenty_one").await;
            one.push(a);
            per_step.push((b - a) / 20.0);
        }
        println!(
            "(p6) durable Python step (the instance of the step before + call + journal): p50 {:.3} ms   [target <= 1.5 ms]; \
             1-step workflow end to end: p50 {:.2} ms",
            median(&mut per_step),
            median(&mut one)
        );
        let _ = served.0.send(());
        served.1.await.unwrap().unwrap();
    });
}
