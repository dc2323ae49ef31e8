//! Replay checks before a deploy: `cargo bench -p cerebelum-engine --bench
//! replay_check [-- --count 1000] [--steps 24] [--rounds 3] [--backend
//! postgres]`.
//!
//! A real `cerebelum serve` holds `--count` open executions of the
//! testkit's `steps_then_wait` (`--steps` noop steps, then a wait for an
//! approval: hibernated, with a journal of about `2 × steps + 2`
//! entries). Through the API, `CheckPackage` replays every one against
//! the testkit component (what `cerebelum upload --check` does before it
//! stores a new version): executions checked per second, median of
//! `--rounds` rounds (issue 36's target: at least 500/s for 1,000 open
//! executions of 50 entries, on SQLite). Then the time a checked upload
//! adds to a plain one, both of the same bytes.

use cerebelum::api::pb;
use cerebelum_harness as common;

use std::time::Instant;

const CLIENTS: usize = 16;

fn main() {
    let arg = |flag: &str, default: usize| {
        common::bench_arg(flag).map_or(default, |c| c.parse().expect("a number"))
    };
    let count = arg("--count", 1000);
    let steps = arg("--steps", 24);
    let rounds = arg("--rounds", 3);
    let backend = common::bench_backend();
    let db = common::Db::on(backend);
    let key = common::bench_tenant(&db);
    let port = common::free_port();
    let _server = db.serve_api(port, &[]);
    let kit = std::fs::read(common::guest("testkit")).unwrap();
    println!(
        "replay checks on {backend:?} ({} cores): {count} open executions of {steps} steps \
         then an approval",
        common::cores()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut client = common::grpc::connect(port, &key).await;
        common::grpc::upload(&mut client, "kit", &common::guest("testkit")).await;
        let input = serde_json::json!({"n": steps, "key": "go"}).to_string();
        let t = Instant::now();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (key, input) = (key.clone(), input.clone());
                let mine = count / CLIENTS + usize::from(c < count % CLIENTS);
                tokio::spawn(async move {
                    let mut client = common::grpc::connect(port, &key).await;
                    for _ in 0..mine {
                        let request = pb::StartExecutionRequest {
                            package: "kit".into(),
                            workflow: "steps_then_wait".into(),
                            input_json: input.clone(),
                            ..Default::default()
                        };
                        client.start_execution(request).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // Until every one has hibernated at its approval.
        let waiting = loop {
            let mut busy = 0;
            for status in [pb::ExecutionStatus::Pending, pb::ExecutionStatus::Running] {
                let request = pb::ListExecutionsRequest {
                    status: status as i32,
                    page_size: 1,
                    ..Default::default()
                };
                busy += client
                    .list_executions(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .executions
                    .len();
            }
            if busy == 0 {
                break t.elapsed();
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
        let one = client
            .list_executions(pb::ListExecutionsRequest {
                page_size: 1,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .executions
            .remove(0);
        let entries = client
            .get_journal(pb::GetJournalRequest {
                id: one.id,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .entries
            .len();
        println!(
            "  {count} executions started and hibernated in {:.1} s; {entries} journal entries each",
            waiting.as_secs_f64()
        );

        let mut rates = Vec::new();
        for round in 1..=rounds {
            let t = Instant::now();
            let check = client
                .check_package(pb::CheckPackageRequest {
                    name: "kit".into(),
                    target: Some(pb::check_package_request::Target::Component(kit.clone())),
                    sample: 0,
                })
                .await
                .unwrap()
                .into_inner();
            let wall = t.elapsed().as_secs_f64();
            assert_eq!(check.checked as usize, count, "every open execution is checked");
            assert_eq!(check.compatible, check.checked, "{check:?}");
            let rate = check.checked as f64 / wall;
            println!(
                "  round {round}: {} checked, {} compatible in {:.2} s: {rate:.0} checks/s \
                 (server's own count: {} ms)",
                check.checked, check.compatible, wall, check.elapsed_ms
            );
            rates.push(rate);
        }
        let median = common::percentile(&mut rates, 0.5);

        let upload = |check: bool| pb::UploadPackageRequest {
            name: "kit".into(),
            wasm: kit.clone(),
            check,
            ..Default::default()
        };
        let t = Instant::now();
        client.upload_package(upload(false)).await.unwrap();
        let plain = t.elapsed().as_secs_f64();
        let t = Instant::now();
        client.upload_package(upload(true)).await.unwrap();
        let checked = t.elapsed().as_secs_f64();
        println!(
            "replay check: median {median:.0} executions checked/s over {rounds} rounds   \
             [target: >= 500/s for 1,000 open executions of 50 entries on SQLite]"
        );
        println!(
            "upload --check of the same bytes: {checked:.2} s, a plain upload {plain:.2} s: the \
             check adds {:.2} s for {count} open executions",
            checked - plain
        );
    });
}
