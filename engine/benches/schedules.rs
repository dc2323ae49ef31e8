//! The schedules benchmark: `cargo bench -p cerebelum-engine --bench
//! schedules [-- --backend postgres] [-- --count N]`.
//!
//! N schedules (default 1,000) of one tenant, all due at the same second,
//! fired by a real `cerebelum serve` process (this build's binary). The
//! lateness of a firing is the time from its due time to the creation of
//! its execution (both as the server's clock reads them, from the
//! database). Prints p50, p99 and the latest, and how long until every
//! schedule had fired.

use cerebelum_harness as common;

use cerebelum::api::pb;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() {
    let backend = common::bench_backend();
    let count: usize = common::bench_arg("--count").map_or(1000, |c| c.parse().unwrap());
    let db = common::Db::on(backend);
    let key = common::bench_tenant(&db);
    let port = common::free_port();
    let _server = db.serve_api(port, &[]);
    println!(
        "cerebelum schedules benchmark on {backend:?} ({} cores): {count} schedules due at the \
         same second, one `cerebelum serve`",
        common::cores()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Far enough ahead for every schedule to be created first.
    let due_s = now_s + 10 + count as u64 / 200;
    let due_ms = due_s as i64 * 1000;
    let (s, m, h) = (due_s % 60, due_s / 60 % 60, due_s / 3600 % 24);
    let cron = format!("{s} {m} {h} * * *");
    runtime.block_on(async {
        let mut client = common::grpc::connect(port, &key).await;
        common::grpc::upload(&mut client, "kit", &common::guest("testkit")).await;
        for i in 0..count {
            client
                .create_schedule(pb::CreateScheduleRequest {
                    name: format!("s{i}"),
                    cron: cron.clone(),
                    package: "kit".into(),
                    workflow: "noop3".into(),
                    input_json: "{}".into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    });
    let created = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    assert!(
        (created.as_millis() as i64) < due_ms,
        "creating the schedules took past their due time"
    );
    let deadline = due_ms + 120_000;
    let rows = loop {
        std::thread::sleep(Duration::from_millis(500));
        let rows = runtime.block_on(common::executions_by_key(&db.url, "schedule:"));
        if rows.len() >= count {
            break rows;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        assert!(
            (now.as_millis() as i64) < deadline,
            "only {} of {count} schedules fired within 2 minutes",
            rows.len()
        );
    };
    let mut late: Vec<f64> = rows
        .iter()
        .map(|(key, _, created_at)| {
            let due: i64 = key.rsplit(':').next().unwrap().parse().unwrap();
            assert_eq!(due, due_ms, "{key}");
            (created_at - due) as f64
        })
        .collect();
    assert_eq!(late.len(), count, "one execution per schedule");
    let p50 = common::percentile(&mut late, 0.50);
    let p99 = common::percentile(&mut late, 0.99);
    let max = common::percentile(&mut late, 1.0);
    println!(
        "firing lateness of {count} schedules due at the same second: p50 {p50:.0} ms, p99 \
         {p99:.0} ms, last {max:.0} ms"
    );
}
