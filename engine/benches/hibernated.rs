//! A million hibernated executions: `cargo bench -p cerebelum-engine
//! --bench hibernated [-- --count 1000000] [--backend postgres|sqlite]
//! [--waves 3] [--starts 5000] [--scattered]` (PostgreSQL by default: the
//! production backend).
//!
//! A real `cerebelum serve` (`--sync full`) and 16 gRPC clients:
//!
//! 1. measure the start rate on the empty database (`--starts` starts of
//!    the testkit's `approval` workflow, which stay open);
//! 2. hibernate `--count` executions of `step_sleep_step` sleeping one
//!    hour: one is started through the API and, once it hibernated, its
//!    row and journal are copied `--count` times in the database (what a
//!    million starts would leave, written in minutes instead of hours),
//!    each copy under an id of the engine's form as if started at 1,000 a
//!    second over the last `--count` ms (an id begins with its creation
//!    time, see `util::new_id`);
//! 3. measure the start rate again with them all open (the start checks
//!    the tenant's open executions: issue 31 keeps a counter for it);
//! 4. `--waves` times, 10,000 executions due in the same millisecond (one
//!    started with a 20 s sleep, copied 9,999 times once it hibernated,
//!    with ids as if started at 2,000 a second among the million, in the
//!    middle of their span: due together because they slept as long from
//!    the same moment; `--scattered` gives every copy a random id instead,
//!    as executions started at any time and due together, a sleep until a
//!    wall-clock time, would have):
//!    the timer lateness of each is the time from its due time to its
//!    first journal entry after waking (the sleep's result, which the
//!    scheduler journals for all due sleeps at once); it also prints when
//!    the code resumed (the entry after that), as the node had room.
//!
//! It prints serve's RSS after each phase (flat: hibernated executions
//! hold no memory). Targets (issue 31): the start rate with all open
//! within 10% of the empty database's; lateness p99 <= 100 ms.

use cerebelum_harness as common;

use cerebelum::api::pb;
use common::{Backend, Db};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const WAVE: usize = 10_000;
/// How many copies one statement writes.
const CHUNK: usize = 50_000;

fn main() {
    let count: usize = common::bench_arg("--count").map_or(1_000_000, |c| c.parse().unwrap());
    let waves: usize = common::bench_arg("--waves").map_or(3, |c| c.parse().unwrap());
    let starts: usize = common::bench_arg("--starts").map_or(5_000, |c| c.parse().unwrap());
    let scattered = std::env::args().any(|a| a == "--scattered");
    // The million as if started at 1,000 a second until now; wave `w` as if
    // started at 2,000 a second at the `w + 1`-th of `waves + 1` points of
    // that span.
    let first_ms = common::now_ms() - count as i64;
    let ids = |started_ms: i64, per_second: i64| match scattered {
        true => Ids::Scattered,
        false => Ids::Started {
            first_ms: started_ms,
            per_second,
        },
    };
    let backend = match common::bench_arg("--backend").as_deref() {
        None | Some("postgres") => Backend::Postgres,
        Some("sqlite") => Backend::Sqlite,
        Some(other) => panic!("--backend {other}: use postgres or sqlite"),
    };
    let db = Db::on(backend);
    let key = db.tenant(
        "bench",
        &[
            "--max-open-executions",
            "100000000",
            "--max-start-rate",
            "1000000",
        ],
    );
    let port = common::free_port();
    let mut server = db.serve_api(port, &[]);
    let mb = |bytes: u64| bytes as f64 / 1e6;
    println!(
        "{count} hibernated executions on {backend:?} ({} cores), {CLIENTS} clients, {}",
        common::cores(),
        match scattered {
            true => "random ids (--scattered: due together, started at any time)",
            false => "ids in start order (due together, started together)",
        }
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = common::grpc::connect(port, &key).await;
        common::grpc::upload(&mut client, "kit", &common::guest("testkit")).await;
        // Whether this server keeps an open count (an older build does not).
        let counts = keeps_open_count(&db);
        let empty = common::start_open_executions(port, &key, starts, CLIENTS).await;
        println!(
            "  empty database: {empty:.0} starts/s over {starts}; serve RSS {:.0} MB",
            mb(server.rss())
        );

        let seeding = Instant::now();
        let seed = hibernated(&mut client, 3_600_000).await;
        copy(&db, &seed, "h", count - 1, counts, ids(first_ms, 1_000));
        // What autovacuum does within a minute of so many new rows (the
        // planner's statistics would still describe an empty table).
        db.sql("ANALYZE");
        let open = db.scalar(
            "SELECT COUNT(*) FROM executions WHERE status IN ('pending', 'running', 'waiting')",
        );
        if counts {
            let kept = db.scalar("SELECT CAST(SUM(n) AS BIGINT) FROM open_counts");
            assert_eq!(kept, open, "the open count kept for starts");
        } else {
            println!("  (this server counts open executions at each start: an older build)");
        }
        println!(
            "  hibernated {count} in {:.0} s ({open} open); serve RSS {:.0} MB",
            seeding.elapsed().as_secs_f64(),
            mb(server.rss())
        );

        let full = common::start_open_executions(port, &key, starts, CLIENTS).await;
        println!(
            "  {open} open: {full:.0} starts/s over {starts} ({:.0}% of the empty database's); \
             serve RSS {:.0} MB",
            full / empty * 100.0,
            mb(server.rss())
        );

        let mut lateness = Vec::new();
        let mut sweeps_seen = 0;
        for wave in 0..waves {
            let seed = hibernated(&mut client, 20_000).await;
            let due = db.scalar(&format!(
                "SELECT wake_at FROM executions WHERE id = '{seed}'"
            ));
            let entries = db.scalar(&format!(
                "SELECT COUNT(*) FROM journal WHERE execution_id = '{seed}'"
            ));
            let prefix = format!("w{wave}_");
            let started = first_ms + (wave as i64 + 1) * count as i64 / (waves as i64 + 1);
            copy(&db, &seed, &prefix, WAVE - 1, counts, ids(started, 2_000));
            let left = due - common::now_ms();
            assert!(
                left > 2_000,
                "the wave was copied {left} ms before it is due"
            );
            let ids = format!(
                "(execution_id = '{seed}' OR execution_id IN \
                 (SELECT id FROM bench_copies WHERE prefix = '{prefix}'))"
            );
            // Woken: the sleep ended (its result journaled) and the code
            // ran on from it (an entry after that result).
            let woken = format!(
                "SELECT COUNT(DISTINCT execution_id) FROM journal WHERE {ids} AND seq > {}",
                entries + 1
            );
            let waited = Instant::now();
            while db.scalar(&woken) < WAVE as i64 {
                assert!(
                    waited.elapsed() < Duration::from_secs(300),
                    "{} of the wave's {WAVE} woke in 5 minutes",
                    db.scalar(&woken)
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let after = |seq: i64| -> Vec<f64> {
                db.column::<i64>(&format!(
                    "SELECT MIN(at) - {due} FROM journal WHERE {ids} AND seq > {seq} \
                     GROUP BY execution_id"
                ))
                .into_iter()
                .map(|ms| ms as f64)
                .collect()
            };
            // The sleep's end (its result) and the code's next entry.
            let (mut late, mut resumed) = (after(entries), after(entries + 1));
            println!(
                "  wave {}: {WAVE} due in the same ms, timer lateness (sleep ended) p50 {:.0} ms, \
                 p99 {:.0} ms, max {:.0} ms; code resumed p50 {:.0} ms, p99 {:.0} ms, max {:.0} \
                 ms; serve RSS {:.0} MB",
                wave + 1,
                common::percentile(&mut late, 0.5),
                common::percentile(&mut late, 0.99),
                common::percentile(&mut late, 1.0),
                common::percentile(&mut resumed, 0.5),
                common::percentile(&mut resumed, 0.99),
                common::percentile(&mut resumed, 1.0),
                mb(server.rss())
            );
            lateness.extend(late);
            // The sweeps that journaled them (serve's log): how long the
            // transactions that made the sleeps' ends durable took.
            let log = server.log();
            let sweeps: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("fired due timers"))
                .skip(sweeps_seen)
                .collect();
            sweeps_seen += sweeps.len();
            let sweeps: Vec<String> = sweeps
                .iter()
                .map(|l| {
                    let l = common::plain(l);
                    let field = |name: &str| {
                        l.split_whitespace()
                            .find_map(|w| w.strip_prefix(name))
                            .unwrap_or("?")
                            .to_owned()
                    };
                    format!("{} in {} ms", field("timers="), field("ms="))
                })
                .collect();
            println!("    sweeps: {}", sweeps.join(", "));
        }
        let p99 = if lateness.is_empty() {
            f64::NAN
        } else {
            common::percentile(&mut lateness, 0.99)
        };
        println!(
            "start rate with {count} open: {:.0}% of the empty database's ({full:.0}/s vs \
             {empty:.0}/s); timer lateness p99 {p99:.0} ms over {waves} waves; serve RSS {:.0} \
             MB now, {:.0} MB at most   [targets: start rate within 10%; lateness p99 <= 100 \
             ms; RSS flat]",
            full / empty * 100.0,
            mb(server.rss()),
            mb(server.peak_rss())
        );
    });
}

/// Starts `step_sleep_step` sleeping `sleep_ms` and waits until it has
/// hibernated; its id.
async fn hibernated(client: &mut common::grpc::Client, sleep_ms: u64) -> String {
    let input = format!(r#"{{"sleep_ms":{sleep_ms}}}"#);
    let id = common::grpc::start(client, "kit", "step_sleep_step", &input).await;
    let waited = Instant::now();
    loop {
        let status = client
            .get_execution(pb::GetExecutionRequest { id: id.clone() })
            .await
            .unwrap()
            .into_inner()
            .status;
        if status == pb::ExecutionStatus::Waiting as i32 {
            return id;
        }
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "{id} did not hibernate in a minute: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Copies the hibernated execution `seed` (row, journal and timer) `n`
/// times, [`CHUNK`] per statement, printing progress; `keeps_count`: adds
/// them to the server's open count. Each copy gets an id of the engine's
/// form (`ex_` and 28 hex digits) placed by `ids`, listed in the bench's
/// own table `bench_copies` under `prefix`.
fn copy(db: &Db, seed: &str, prefix: &str, n: usize, keeps_count: bool, ids: Ids) {
    let random_hex = |bytes: usize| match db.backend {
        Backend::Sqlite => format!("lower(hex(randomblob({bytes})))"),
        Backend::Postgres => {
            format!("substr(md5(random()::text || g.n::text), 1, {})", 2 * bytes)
        }
    };
    // The 12 hex digits of the creation time.
    let time_hex = match ids {
        Ids::Scattered => random_hex(6),
        Ids::Started {
            first_ms,
            per_second,
        } => {
            let ms = format!("{first_ms} + CAST(g.n AS BIGINT) * 1000 / {per_second}");
            match db.backend {
                Backend::Sqlite => format!("printf('%012x', {ms})"),
                Backend::Postgres => format!("lpad(to_hex({ms}), 12, '0')"),
            }
        }
    };
    let random_id = format!("'ex_' || {time_hex} || {}", random_hex(8));
    db.sql(
        "CREATE TABLE IF NOT EXISTS bench_copies (prefix TEXT NOT NULL, n BIGINT NOT NULL, \
         id TEXT PRIMARY KEY)",
    );
    let columns = |table: &str| -> Vec<String> {
        let query = match db.backend {
            Backend::Sqlite => format!("SELECT name FROM pragma_table_info('{table}')"),
            Backend::Postgres => format!(
                "SELECT column_name FROM information_schema.columns WHERE table_name = '{table}' \
                 AND table_schema = current_schema() ORDER BY ordinal_position"
            ),
        };
        db.column::<String>(&query)
    };
    let copied = |table: &str, id_column: &str, replaced: &[(&str, &str)]| {
        let names = columns(table);
        let values: Vec<String> = names
            .iter()
            .map(|c| {
                if c == id_column {
                    "b.id".to_owned()
                } else {
                    replaced
                        .iter()
                        .find(|(name, _)| name == c)
                        .map_or(format!("t.{c}"), |(_, v)| (*v).to_owned())
                }
            })
            .collect();
        (names.join(", "), values.join(", "))
    };
    let (exec_names, exec_values) = copied(
        "executions",
        "id",
        &[("idempotency_key", "NULL"), ("owner", "NULL")],
    );
    let (journal_names, journal_values) = copied("journal", "execution_id", &[]);
    // The sleep it waits for (a build from before migration 0017 has no
    // timers table).
    let timers = table_exists(db, "timers").then(|| copied("timers", "execution_id", &[]));
    let t = Instant::now();
    let mut done = 0;
    while done < n {
        let to = (done + CHUNK).min(n);
        db.sql(&format!(
            "WITH RECURSIVE g(n) AS (SELECT {} UNION ALL SELECT n + 1 FROM g WHERE n < {to}) \
             INSERT INTO bench_copies (prefix, n, id) SELECT '{prefix}', g.n, {random_id} FROM g",
            done + 1
        ));
        let copies_of = format!(
            "bench_copies b WHERE b.prefix = '{prefix}' AND b.n BETWEEN {} AND {to}",
            done + 1
        );
        // On PostgreSQL without the triggers (and foreign-key checks) of
        // the session: the copies' open count is added once below, as a
        // million starts, each in its own commit, would have left it.
        let (quiet, copies) = match db.backend {
            Backend::Sqlite => ("", 0),
            Backend::Postgres => ("SET session_replication_role = replica; ", to - done),
        };
        let count = if keeps_count {
            format!(
                "UPDATE open_counts SET n = n + {copies} \
                 WHERE tenant = (SELECT tenant FROM executions WHERE id = '{seed}') AND shard = \
                 (SELECT MIN(shard) FROM open_counts WHERE tenant = \
                  (SELECT tenant FROM executions WHERE id = '{seed}'))"
            )
        } else {
            String::new()
        };
        db.sql(&format!(
            "{quiet} INSERT INTO executions ({exec_names}) SELECT {exec_values} \
             FROM executions t, {copies_of} AND t.id = '{seed}'; {count}"
        ));
        db.sql(&format!(
            "INSERT INTO journal ({journal_names}) SELECT {journal_values} \
             FROM journal t, {copies_of} AND t.execution_id = '{seed}'"
        ));
        if let Some((names, values)) = &timers {
            db.sql(&format!(
                "INSERT INTO timers ({names}) SELECT {values} \
                 FROM timers t, {copies_of} AND t.execution_id = '{seed}'"
            ));
        }
        done = to;
        if n > CHUNK {
            eprint!(
                "\r    copied {done}/{n} ({:.0}/s)   ",
                done as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    if n > CHUNK {
        eprintln!();
    }
}

/// Where copies' ids sort among the others'.
#[derive(Clone, Copy)]
enum Ids {
    /// As the engine makes them for executions started `per_second` a
    /// second from `first_ms` on: the creation time, then random digits.
    Started { first_ms: i64, per_second: i64 },
    /// Random throughout.
    Scattered,
}

/// Whether the server keeps an open count (migration 0014; a build from
/// before counts at each start: `CEREBELUM_TEST_BIN` runs this bench
/// against one).
fn keeps_open_count(db: &Db) -> bool {
    table_exists(db, "open_counts")
}

/// Whether the server's schema has `table`.
fn table_exists(db: &Db, table: &str) -> bool {
    db.scalar(&match db.backend {
        Backend::Sqlite => format!("SELECT COUNT(*) FROM sqlite_master WHERE name = '{table}'"),
        Backend::Postgres => format!(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = '{table}' \
             AND table_schema = current_schema()"
        ),
    }) == 1
}
