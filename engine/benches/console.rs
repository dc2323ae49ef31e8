//! The console and `/metrics` benchmark:
//! `cargo bench -p cerebelum-engine --bench console [-- --quick]`.
//!
//! Fills a real SQLite file with 100,000 executions (run to completion by
//! an engine in this process: each a workflow and one step, about five
//! journal entries) and one execution of 3,333 steps (10,000 journal
//! entries), then starts a real `cerebelum serve` process on it and asks
//! it over loopback, signed in as the tenant:
//!
//! - (k1) the executions list, first page (50 rows, newest first);
//! - (k2) a later page (the page token of the first);
//! - (k3) the list filtered by status, by workflow and by the start of an id;
//! - (k4) the page of the execution with 10,000 journal entries (its last
//!   500 timeline rows, and every row);
//! - (k5) `GET /metrics` (its gauges read the database at each scrape);
//! - (k6) the list filtered by a field of the input (`input.n = 3333`,
//!   no index: every input is read) and by a time range (the last hour:
//!   every execution, whose counts per status the page shows).
//!
//! - (k7) the counts per status the list page fetches after it (every
//!   execution, and those of the input filter).
//!
//! Times are the server's own (`Server-Timing`, from request to response
//! ready); p50 and p99 over many requests. `-- --quick` stores 10,000
//! executions instead. The machine is shared: quote medians.

use cerebelum_harness as common;

use cerebelum::clock::{Clock, SystemClock};
use cerebelum::store::{self, Synchronous};
use cerebelum::{Engine, EngineConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One HTTP/1.1 request with the session's cookie: status, head
/// (lower-case) and body.
fn request(port: u16, method: &str, path: &str, cookie: &str, body: &str) -> (u16, String, String) {
    let reply = common::http_request(
        port,
        method,
        path,
        &[
            ("Cookie", cookie),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        body,
    );
    (reply.status, reply.head.to_ascii_lowercase(), reply.body)
}

/// The server's time for `path`, from its `Server-Timing` header.
fn server_ms(port: u16, path: &str, cookie: &str, expect: &str) -> f64 {
    let (status, head, body) = request(port, "GET", path, cookie, "");
    assert_eq!(status, 200, "{path}: {head}\n{body}");
    assert!(body.contains(expect), "{path} lacks {expect:?}");
    head.lines()
        .find_map(|l| l.strip_prefix("server-timing: app;dur="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{path}: no Server-Timing in {head}"))
}

fn measure(what: &str, n: usize, mut one: impl FnMut() -> f64) {
    for _ in 0..3 {
        one();
    }
    let mut ms: Vec<f64> = (0..n).map(|_| one()).collect();
    let (p50, p99) = (
        common::percentile(&mut ms, 0.5),
        common::percentile(&mut ms, 0.99),
    );
    println!("{what:<58} p50 {p50:>8.3} ms   p99 {p99:>8.3} ms   ({n} requests)");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let stored = if quick { 10_000 } else { 100_000 };
    let db = common::Db::new();
    let key = db.tenant("bench", &["--max-open-executions", "1000000"]);
    println!(
        "cerebelum console benchmark on SQLite ({} cores): {stored} executions stored",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );

    // Fill the database with an engine in this process.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let big = runtime.block_on(async {
        let store = store::open(&db.url, Synchronous::Normal).await.unwrap();
        let mut config = EngineConfig::new(common::cache_dir());
        config.max_running = 4096;
        config.runtime.max_instances = 2000;
        let engine = Engine::new(store, config, Arc::new(SystemClock)).unwrap();
        let sha = engine
            .upload(
                "bench",
                "kit",
                std::fs::read(common::guest("testkit")).unwrap(),
            )
            .await
            .unwrap()
            .sha256;
        let (stop, served) = common::serve_in_process(&engine);
        let t = Instant::now();
        let mut started = 0;
        while started < stored {
            let batch: Vec<_> = (0..64.min(stored - started))
                .map(|_| engine.start("bench", &sha, "clock_random", "{}", None))
                .collect();
            started += batch.len();
            for start in batch {
                start.await.unwrap();
            }
            if started % 10_000 == 0 {
                eprint!("\r  started {started}/{stored}");
            }
        }
        let big = engine
            .start("bench", &sha, "many_steps", r#"{"n": 3333}"#, None)
            .await
            .unwrap()
            .id;
        loop {
            let open: i64 = common::count_by_status(&db.url)
                .await
                .into_iter()
                .filter(|(s, _)| ["pending", "running", "waiting"].contains(&s.as_str()))
                .map(|(_, n)| n)
                .sum();
            eprint!("\r  {open} executions still running        ");
            if open == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "\r  ran {} executions in {:.1} s            ",
            stored + 1,
            t.elapsed().as_secs_f64()
        );
        let _ = stop.send(());
        served.await.unwrap().unwrap();
        let entries = engine.store().executions().journal(&big, 0).await.unwrap();
        assert!(entries.len() >= 10_000, "{} entries", entries.len());
        println!("execution {big}: {} journal entries", entries.len());
        big
    });

    let port = common::free_port();
    let _server = db.serve_api(port, &[]);
    let (status, head, body) = request(port, "POST", "/login", "", &format!("key={key}"));
    assert_eq!(status, 303, "{head}\n{body}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_owned();
    let (_, _, first) = request(port, "GET", "/executions", &cookie, "");
    let next = first
        .split("id=\"next\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a next page")
        .replace("&amp;", "&");
    let prefix = &big[..7];

    let n = if quick { 50 } else { 200 };
    measure("(k1) executions list, first page", n, || {
        server_ms(port, "/executions", &cookie, "<tbody id=\"rows\"")
    });
    measure("(k2) executions list, second page", n, || {
        server_ms(port, &next, &cookie, "Newest")
    });
    measure("(k3) list filtered by status (completed)", n, || {
        server_ms(
            port,
            "/executions?status=completed",
            &cookie,
            "<tbody id=\"rows\"",
        )
    });
    measure("(k3) list filtered by workflow", n, || {
        server_ms(port, "/executions?workflow=many_steps", &cookie, &big)
    });
    measure("(k3) list filtered by the start of an id", n, || {
        server_ms(port, &format!("/executions?q={prefix}"), &cookie, &big)
    });
    measure("(k6) list filtered by a field of the input", n, || {
        server_ms(port, "/executions?input=input.n+%3D+3333", &cookie, &big)
    });
    // The last hour: every execution, so the counts cover them all.
    let hour_ago = cerebelum::util::utc(SystemClock.now_ms() - 3_600_000);
    let range = format!("/executions?from={}", &hour_ago[..16]);
    measure(
        "(k6) list filtered by a time range (the last hour)",
        n,
        || server_ms(port, &range, &cookie, "<tbody id=\"rows\""),
    );
    measure("(k7) counts per status, every execution", n / 4, || {
        server_ms(port, "/executions/counts", &cookie, "data-status")
    });
    measure(
        "(k7) counts per status, filtered by a field of the input",
        n / 4,
        || {
            server_ms(
                port,
                "/executions/counts?input=input.n+%3D+3333",
                &cookie,
                "data-status",
            )
        },
    );
    measure(
        "(k4) execution page, 10,000 journal entries (last 500 rows)",
        n / 4,
        || server_ms(port, &format!("/executions/{big}"), &cookie, "3333"),
    );
    measure("(k4) the same, every row (?all=1)", n / 4, || {
        server_ms(port, &format!("/executions/{big}?all=1"), &cookie, "3333")
    });
    measure("(k5) GET /metrics", n, || {
        server_ms(port, "/metrics", "", "cerebelum_live_instances")
    });
    drop(runtime);
}
