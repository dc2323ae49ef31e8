//! Many open executions: `cargo bench -p cerebelum-engine --bench open
//! [-- --count 100000] [--backend postgres]`.
//!
//! A real `cerebelum serve` (`--sync full`) and 16 gRPC clients start
//! `--count` executions of the testkit's `approval` workflow, which then
//! wait for ever (hibernated, open). Every tenth of the way it prints the
//! start rate over that tenth, the largest SQLite WAL file seen so far
//! (sampled every 50 ms; issue 31 bounds it to 64 MB) and serve's RSS — so
//! a start rate that falls as open executions pile up shows, and so does
//! a log that grows without bound.

use cerebelum_harness as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;

fn main() {
    let count: usize = common::bench_arg("--count").map_or(100_000, |c| c.parse().unwrap());
    let backend = common::bench_backend();
    let db = common::Db::on(backend);
    let key = common::bench_tenant(&db);
    let port = common::free_port();
    let server = db.serve_api(port, &[]);
    println!(
        "open executions on {backend:?} ({} cores): {count} starts of a workflow that stays \
         open, {CLIENTS} clients",
        common::cores()
    );
    // The largest WAL seen, sampled while the run goes.
    let wal = {
        let mut name = db.path.clone().into_os_string();
        name.push("-wal");
        std::path::PathBuf::from(name)
    };
    let max_wal = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (max_wal, done) = (max_wal.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
                max_wal.fetch_max(size, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut started = 0;
        let mut client = common::grpc::connect(port, &key).await;
        common::grpc::upload(&mut client, "kit", &common::guest("testkit")).await;
        let tenth = (count / 10).max(1);
        let mut rates = Vec::new();
        let all = Instant::now();
        for _ in 0..10 {
            let rate = common::start_open_executions(port, &key, tenth, CLIENTS).await;
            started += tenth;
            rates.push(rate);
            println!(
                "  {:>7} open: {:>6.0} starts/s over the last {tenth}; largest WAL so far {:.1} \
                 MB; serve peak RSS {:.0} MB",
                started,
                rate,
                max_wal.load(Ordering::Relaxed) as f64 / 1e6,
                server.peak_rss() as f64 / 1e6,
            );
        }
        println!(
            "start rate: {:.0}/s overall, first tenth {:.0}/s, last tenth {:.0}/s ({:.0}% of the \
             first); largest WAL {:.1} MB   [targets: last within 10% of the first; WAL <= 64 MB]",
            (tenth * 10) as f64 / all.elapsed().as_secs_f64(),
            rates[0],
            rates[9],
            rates[9] / rates[0] * 100.0,
            max_wal.load(Ordering::Relaxed) as f64 / 1e6
        );
    });
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
}
