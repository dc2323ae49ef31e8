//! Hibernation: executions that wait hold no instance, only rows. Runs the
//! engine in process (to read its instance gauge) on a real SQLite file
//! with the real testkit component.

use cerebelum_harness as common;

use cerebelum::clock::SystemClock;
use cerebelum::model::DEFAULT_TENANT;
use cerebelum::model::ListFilter;
use cerebelum::runtime::live_instances;
use cerebelum::store::{self, Synchronous};
use cerebelum::{Engine, EngineConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sleeping_executions_hold_no_instance() {
    let db = common::Db::new();
    let store = store::open(&db.url, Synchronous::Normal).await.unwrap();
    let mut config = EngineConfig::new(common::cache_dir());
    config.hibernate_after = Duration::from_millis(100);
    config.tick = Duration::from_millis(10);
    let engine = Engine::new(store.clone(), config, Arc::new(SystemClock)).unwrap();
    let package = engine
        .upload(
            DEFAULT_TENANT,
            "testkit",
            std::fs::read(common::guest("testkit")).unwrap(),
        )
        .await
        .unwrap();

    let (stop_tx, server) = common::serve_in_process(&engine);
    const N: usize = 1000;
    for _ in 0..N {
        engine
            .start(
                DEFAULT_TENANT,
                &package.sha256,
                "step_sleep_step",
                r#"{"sleep_ms": 600000}"#,
                None,
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let counts = common::count_by_status(&db.url).await;
        let waiting = counts
            .iter()
            .find(|(s, _)| s == "waiting")
            .map(|(_, n)| *n)
            .unwrap_or(0);
        if waiting == N as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "not all hibernated: {counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every execution ran its first step and is asleep in the database;
    // their instances are dropped off their path, and kept step instances
    // after 2 s unused.
    let dropped_by = Instant::now() + Duration::from_secs(10);
    while live_instances() > 0 {
        assert!(
            Instant::now() < dropped_by,
            "a hibernated execution holds an instance ({} live)",
            live_instances()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sample = store
        .executions()
        .list_executions(&ListFilter {
            limit: 5,
            ..ListFilter::default()
        })
        .await
        .unwrap();
    for e in sample {
        assert!(e.owner.is_none(), "a hibernated execution keeps no owner");
        assert!(e.wake_at_ms.unwrap() > e.created_at_ms + 500_000);
        let journal = store.executions().journal(&e.id, 0).await.unwrap();
        assert!(journal.iter().any(|j| j.event.kind() == "sleep"));
    }
    stop_tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}
