//! The composition benchmark: `cargo bench -p cerebelum-engine --bench
//! compose [-- --backend postgres] [-- --signals N] [-- --children N]`.
//!
//! Child workflows: N times (default 200), one at a time, the testkit's
//! `parent` starts a child `nothing` (no step) and awaits it; the round
//! trip is StartExecution of the parent → its completion (watched), next
//! to `nothing` started alone the same way (the baseline of one execution).
//!
//! Signals: a real `cerebelum serve` process (this build's binary) and N executions
//! (default 200) of the testkit's `signal_wait`, each hibernated waiting
//! for signal `go`. Then, one at a time, a gRPC `Signal` is sent to each
//! and its watch stream followed until the journal holds the result of
//! its `await-signal` call: the delivery latency, from the API call to
//! the workflow resuming with the payload (claim, replay and the durable
//! commit of the delivery included). Prints p50/p99.

use cerebelum_harness as common;

use cerebelum::api::pb;
use std::time::{Duration, Instant};

fn main() {
    let backend = common::bench_backend();
    let count: usize = common::bench_arg("--signals").map_or(200, |n| n.parse().unwrap());
    let children: usize = common::bench_arg("--children").map_or(200, |n| n.parse().unwrap());
    let db = common::Db::on(backend);
    let key = common::bench_tenant(&db);
    let port = common::free_port();
    let _server = db.serve_api(port, &[]);
    println!(
        "cerebelum composition benchmark on {backend:?} ({} cores): {children} parents with \
         one child each, {count} hibernated executions with one signal each, one at a time \
         over gRPC",
        common::cores()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut took = runtime.block_on(async {
        let mut client = common::grpc::connect(port, &key).await;
        common::grpc::upload(&mut client, "kit", &common::guest("testkit")).await;
        // Children: alternately a parent of one `nothing` child, and
        // `nothing` alone (the baseline), so both see the same machine.
        let parent = r#"{"children":[{"workflow":"nothing","input":{}}]}"#;
        let (mut round_trip, mut alone) = (Vec::new(), Vec::new());
        for _ in 0..children {
            let (t, e) =
                common::grpc::start_to_completion(&mut client, "kit", "parent", parent).await;
            assert_eq!(e.status, pb::ExecutionStatus::Completed as i32, "{e:?}");
            round_trip.push(t.as_secs_f64() * 1000.0);
            let (t, _) =
                common::grpc::start_to_completion(&mut client, "kit", "nothing", "{}").await;
            alone.push(t.as_secs_f64() * 1000.0);
        }
        let p50 = common::percentile(&mut round_trip, 0.50);
        let p99 = common::percentile(&mut round_trip, 0.99);
        let base = common::percentile(&mut alone, 0.50);
        println!(
            "{children} parents: start → completed with one child p50 {p50:.2} ms, p99 \
             {p99:.2} ms; one execution alone p50 {base:.2} ms: the child round trip adds \
             {:.2} ms",
            p50 - base
        );

        let mut ids = Vec::new();
        for _ in 0..count {
            let started = client
                .start_execution(pb::StartExecutionRequest {
                    package: "kit".into(),
                    workflow: "signal_wait".into(),
                    input_json: r#"{"name":"go","count":1}"#.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
            ids.push(started.into_inner().execution.unwrap().id);
        }
        // Every one hibernated on its await-signal.
        let deadline = Instant::now() + Duration::from_secs(120);
        for id in &ids {
            loop {
                let e = client
                    .get_execution(pb::GetExecutionRequest { id: id.clone() })
                    .await
                    .unwrap()
                    .into_inner();
                if e.status == pb::ExecutionStatus::Waiting as i32 && !e.waiting_on.is_empty() {
                    break;
                }
                assert!(Instant::now() < deadline, "{id} never waited: {e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let mut took = Vec::new();
        for (n, id) in ids.iter().enumerate() {
            let journal = client
                .get_journal(pb::GetJournalRequest {
                    id: id.clone(),
                    after_seq: 0,
                })
                .await
                .unwrap()
                .into_inner()
                .entries;
            let wait = journal
                .iter()
                .find(|e| e.kind == "await-signal")
                .expect("the await-signal call")
                .seq;
            let last = journal.last().map_or(0, |e| e.seq);
            let mut events = client
                .watch_execution(pb::WatchExecutionRequest {
                    id: id.clone(),
                    after_seq: last,
                    end_only: false,
                })
                .await
                .unwrap()
                .into_inner();
            let t = Instant::now();
            client
                .signal(pb::SignalRequest {
                    id: id.clone(),
                    name: "go".into(),
                    payload_json: format!(r#"{{"n":{n}}}"#),
                    signal_id: String::new(),
                })
                .await
                .unwrap();
            loop {
                let event = events.message().await.unwrap().expect("the watch ended");
                if let Some(pb::watch_event::Event::Entry(e)) = event.event
                    && e.kind == "result"
                    && e.ref_seq == Some(wait)
                {
                    break;
                }
            }
            took.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        took
    });
    let p50 = common::percentile(&mut took, 0.50);
    let p99 = common::percentile(&mut took, 0.99);
    println!(
        "{} signals: delivery latency (Signal RPC → await-signal result journaled) p50 \
         {p50:.2} ms, p99 {p99:.2} ms",
        took.len()
    );
}
