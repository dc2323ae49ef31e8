//! The sandbox benchmark: `cargo bench -p cerebelum-engine --bench hostile`
//! (`-- --quick` for smaller counts).
//!
//! - (s1) what the limits cost: testkit's CPU-bound `spin` step (20 M
//!   iterations) and a `noop` step, each in a fresh instance, with the
//!   component compiled three ways: bare (no epoch checks, no fuel), as the
//!   engine runs it (epoch deadline checks with a 10 ms ticker, memory
//!   limiter) and with fuel metering on top (`serve --meter-fuel`).
//! - (s2) an HTTP request from a step through the journal (allow-list
//!   check, request and whole response journaled) against the same request
//!   sent from this process, both to a server on 127.0.0.1 over a new
//!   connection each.
//! - (s3) tenant B's latency (StartExecution + WatchExecution of the 3-step
//!   `noop3`, one after the other, through a real `cerebelum serve`) alone
//!   and while tenant A keeps four executions of each attack of the
//!   hostile suite running (the next attack starts once A has nothing
//!   left running). B has the default limits; A the hostile suite's tight
//!   limits that make each attack end quickly (CPU, memory, journal
//!   entries, payload, output) and the default fairness limits
//!   (concurrency, journal rate, start rate); `-- --hostile-limits` gives A
//!   the suite's fairness limits too. B alone is measured again before
//!   each attack (after the last one's executions ended), as the machine's
//!   speed drifts; B's start rate is raised out of the way (B starts more
//!   than the default allows while A has work).
//!
//! Flags: `--quick` (smaller counts), `--attacks a,b` (only those, and
//! only (s3)), `--runs N` (B's runs per measurement, default 60),
//! `--a-limits "FLAGS"` (more of `admin tenant create`'s flags for A, e.g.
//! `"--max-journal-rate 2000"`).
//!
//! The machine is shared and noisy: compare within one run, quote medians.

use cerebelum_harness as common;

use cerebelum::api::pb;
use cerebelum::clock::SystemClock;
use cerebelum::executor::GuestData;
use cerebelum::model::{DEFAULT_TENANT, Quotas};
use cerebelum::runtime::{
    Embedding, InvocationLimits, PackagePre, RuntimeConfig, engine_config, linker, new_store,
};
use cerebelum::store::{self, Synchronous};
use cerebelum::{Engine, EngineConfig};
use common::grpc;
use common::http_server::TestServer;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let only_tenants = std::env::args().any(|a| a == "--attacks");
    println!(
        "cerebelum sandbox benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if !only_tenants {
        rt.block_on(limits_overhead(quick));
        rt.block_on(http_round_trip(quick));
    }
    tenant_b_under_attack(quick);
}

/// (s1)
async fn limits_overhead(quick: bool) {
    let wasm = std::fs::read(common::guest("testkit")).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let rounds = if quick { 5 } else { 15 };
    let mut spin_base = 0.0;
    for (name, epoch, fuel) in [
        ("bare (no epoch, no fuel)", false, false),
        ("engine default (epoch + limiter)", true, false),
        ("with fuel (epoch + limiter + fuel)", true, true),
    ] {
        let config = RuntimeConfig {
            cache_dir: cache.path().to_path_buf(),
            max_instances: 16,
            max_memory_bytes: 1 << 32,
            fuel,
            guest_memory_bytes: 8 << 30,
        };
        let mut wasmtime_config = engine_config(&config);
        wasmtime_config.epoch_interruption(epoch);
        let engine = wasmtime::Engine::new(&wasmtime_config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        if epoch {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(cerebelum::runtime::EPOCH_TICK);
                    engine.increment_epoch();
                }
            });
        }
        let component = wasmtime::component::Component::new(&engine, &wasm).unwrap();
        let pre = PackagePre::new(
            linker::<GuestData>(&engine)
                .unwrap()
                .instantiate_pre(&component)
                .unwrap(),
        )
        .unwrap();
        let mut limits = InvocationLimits::new(256 << 20, Duration::from_secs(600));
        limits.fuel = fuel.then_some(u64::MAX);
        let run = |step: &'static str, input: &'static str| {
            let (engine, pre) = (engine.clone(), pre.clone());
            async move {
                let t = Instant::now();
                let mut store = new_store(&engine, limits, 1, 0, GuestData::without_host);
                let instance = pre.instantiate_async(&mut store).await.unwrap();
                instance
                    .cerebelum_workflow_guest()
                    .call_run_step(&mut store, step, &input.to_owned())
                    .await
                    .unwrap()
                    .unwrap();
                t.elapsed().as_secs_f64() * 1e3
            }
        };
        let mut spin = Vec::new();
        for _ in 0..rounds {
            spin.push(run("spin", r#"{"iterations": 20000000}"#).await);
        }
        let mut noop = Vec::new();
        for _ in 0..rounds * 40 {
            noop.push(run("noop", "{}").await);
        }
        stop.store(true, Ordering::Relaxed);
        let spin = median(&mut spin);
        if spin_base == 0.0 {
            spin_base = spin;
        }
        println!(
            "(s1) {name:36} spin 20M: p50 {spin:7.2} ms ({:+5.1} %)   noop step: p50 {:.3} ms",
            (spin / spin_base - 1.0) * 100.0,
            median(&mut noop)
        );
    }
}

/// A GET over a new connection, as the engine sends one; the body length.
fn bare_get(port: u16, path: &str) -> usize {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let mut buf = [0; 8192];
    loop {
        let n = stream.read(&mut buf).unwrap();
        response.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&response);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return length;
            }
        }
        assert!(n > 0, "the server closed early");
    }
}

/// (s2)
async fn http_round_trip(quick: bool) {
    let server = TestServer::start();
    let n = if quick { 20 } else { 100 };
    let mut bare = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        assert!(bare_get(server.port, "/bench") > 0);
        bare.push(t.elapsed().as_secs_f64() * 1e3);
    }

    let db = common::Db::new();
    let store = store::open(&db.url, Synchronous::Normal).await.unwrap();
    store
        .catalog()
        .update_tenant(DEFAULT_TENANT, &Quotas::default(), &[server.host()])
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let engine = Engine::new(
        store,
        EngineConfig::new(cache.path().to_path_buf()),
        Arc::new(SystemClock),
    )
    .unwrap();
    let package = engine
        .upload(
            DEFAULT_TENANT,
            "hostile",
            std::fs::read(common::guest("hostile")).unwrap(),
        )
        .await
        .unwrap();
    let served = common::serve_in_process(&engine);
    let run = |requests: u32| {
        let engine = engine.clone();
        let sha = package.sha256.clone();
        let input = serde_json::json!({ "url": server.url("/bench"), "n": requests }).to_string();
        async move {
            let t = Instant::now();
            let r = engine
                .start(DEFAULT_TENANT, &sha, "fetch_n", &input, None)
                .await
                .unwrap();
            let done = engine.wait_finished(&r.id).await.unwrap();
            assert_eq!(done.status.as_str(), "completed", "{:?}", done.error);
            t.elapsed().as_secs_f64() * 1e3
        }
    };
    run(1).await;
    let rounds = if quick { 3 } else { 9 };
    let mut per_request = Vec::new();
    for _ in 0..rounds {
        let none = run(0).await;
        let many = run(n).await;
        per_request.push((many - none) / f64::from(n));
    }
    let bare = median(&mut bare);
    let journaled = median(&mut per_request);
    println!(
        "(s2) HTTP GET, new connection each: bare from this process p50 {bare:.3} ms; \
         from a step through the journal {journaled:.3} ms per request ({:.1}x)",
        journaled / bare
    );
    let _ = served.0.send(());
    served.1.await.unwrap().unwrap();
}

/// Tenant B's 3-step workflows, one after the other: p50 and p99
/// latency (ms).
async fn b_latency(client: &mut grpc::Client, n: usize) -> (f64, f64) {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let (took, e) = grpc::start_to_completion(client, "kit", "noop3", "{}").await;
        assert_eq!(e.status, pb::ExecutionStatus::Completed as i32);
        times.push(took.as_secs_f64() * 1e3);
    }
    (
        common::percentile(&mut times, 0.5),
        common::percentile(&mut times, 0.99),
    )
}

/// Keeps `parallel` executions of `workflow` running for tenant A until `stop`.
fn keep_attacking(
    port: u16,
    key: String,
    workflow: &'static str,
    input: String,
    parallel: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for _ in 0..parallel {
                let (key, input, stop) = (key.clone(), input.clone(), stop.clone());
                tasks.push(tokio::spawn(async move {
                    let mut client = grpc::connect(port, &key).await;
                    let mut ended = 0;
                    while !stop.load(Ordering::SeqCst) {
                        grpc::start_to_completion(&mut client, "hostile", workflow, &input).await;
                        ended += 1;
                    }
                    ended
                }));
            }
            let mut total = 0;
            for t in tasks {
                total += t.await.unwrap();
            }
            total
        })
    })
}

/// Waits until the tenant of `key` has no execution left open.
async fn until_idle(port: u16, key: &str) {
    let mut client = grpc::connect(port, key).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    for status in [
        pb::ExecutionStatus::Pending,
        pb::ExecutionStatus::Running,
        pb::ExecutionStatus::Waiting,
    ] {
        loop {
            let open = client
                .list_executions(pb::ListExecutionsRequest {
                    status: status as i32,
                    page_size: 1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .executions;
            if open.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tenant A's executions do not end"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// (s3)
fn tenant_b_under_attack(quick: bool) {
    let db = common::Db::new();
    let elsewhere = TestServer::start();
    // The hostile suite's limits make each attack end (and restart)
    // quickly; its fairness limits (--max-concurrency, --max-journal-rate)
    // stay at their defaults unless asked for.
    let fair = ["--max-concurrency", "--max-journal-rate"];
    let mut limits_a: Vec<&str> = if std::env::args().any(|a| a == "--hostile-limits") {
        common::HOSTILE_LIMITS.to_vec()
    } else {
        common::HOSTILE_LIMITS
            .chunks(2)
            .filter(|flag| !fair.contains(&flag[0]))
            .flatten()
            .copied()
            .collect()
    };
    // `-- --a-limits "--max-journal-rate 2000"`: more of A's limits.
    let more = common::bench_arg("--a-limits").unwrap_or_default();
    let more: Vec<&str> = more.split_whitespace().collect();
    limits_a.extend(more.iter().copied());
    let key_a = db.tenant("a", &limits_a);
    println!(
        "(s3) tenant A's limits: {} (the others: defaults)",
        limits_a.join(" ")
    );
    // B starts an execution every few milliseconds, above the default
    // start rate that applies while A has work: B's own limit would then
    // be measured, not A's effect on it.
    let key_b = db.tenant("b", &["--max-start-rate", "1000000"]);
    let port = common::free_port();
    let _server = db.serve_api(port, &[]);
    // `-- --runs N`: B's runs per measurement.
    let n = std::env::args()
        .skip_while(|a| a != "--runs")
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(if quick { 20 } else { 60 });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut b = rt.block_on(async {
        let mut a = grpc::connect(port, &key_a).await;
        grpc::upload(&mut a, "hostile", &common::guest("hostile")).await;
        let mut b = grpc::connect(port, &key_b).await;
        grpc::upload(&mut b, "kit", &common::guest("testkit")).await;
        b_latency(&mut b, 20).await;
        b
    });
    let alone = rt.block_on(b_latency(&mut b, n));
    println!(
        "(s3) tenant B's 3-step workflow alone: p50 {:.2} ms, p99 {:.2} ms ({n} runs)",
        alone.0, alone.1
    );
    // The machine's speed drifts over minutes: each attack is compared
    // with B alone measured right before it.
    let mut alone = Some(alone);
    let denied = format!(r#"{{"url": "{}"}}"#, elsewhere.url("/x"));
    let attacks: [(&'static str, String); 10] = [
        ("loop_in_step", "{}".into()),
        ("loop_in_workflow", "{}".into()),
        ("memory_bomb", "{}".into()),
        ("stack_overflow", "{}".into()),
        ("huge_result", r#"{"mb": 8}"#.into()),
        ("huge_print", "{}".into()),
        ("host_call_flood", "{}".into()),
        ("fan_out", r#"{"n": 20000}"#.into()),
        ("fetch", denied),
        ("ambient", "{}".into()),
    ];
    // `-- --attacks a,b` runs only those.
    let only: Option<Vec<String>> = std::env::args()
        .skip_while(|a| a != "--attacks")
        .nth(1)
        .map(|list| list.split(',').map(str::to_owned).collect());
    for (workflow, input) in attacks {
        if only
            .as_ref()
            .is_some_and(|o| !o.iter().any(|w| w == workflow))
        {
            continue;
        }
        let alone = match alone.take() {
            Some(first) => first,
            None => rt.block_on(b_latency(&mut b, n)),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let attack = keep_attacking(port, key_a.clone(), workflow, input, 4, stop.clone());
        // Let the attack get going.
        std::thread::sleep(Duration::from_millis(300));
        let loaded = rt.block_on(b_latency(&mut b, n));
        stop.store(true, Ordering::SeqCst);
        let ended = attack.join().unwrap();
        // The next attack starts on a quiet server.
        rt.block_on(until_idle(port, &key_a));
        // The target is on the p50; the p99 shows the tail (B's runs
        // that waited behind A the longest).
        println!(
            "(s3) under {workflow:18} B p50 {:7.2} ms = {:4.2}x alone ({:.2} ms just before)   \
             [target <= 2x]   p99 {:7.2} ms = {:4.2}x ({:.2})   ({ended} attack executions \
             ended meanwhile)",
            loaded.0,
            loaded.0 / alone.0,
            alone.0,
            loaded.1,
            loaded.1 / alone.1,
            alone.1
        );
    }
}
