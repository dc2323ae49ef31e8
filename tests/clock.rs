//! Time you can drive: the engine in process on a [`TestClock`], on both
//! backends. A three-day durable sleep, an approval timing out after a day
//! and a poll every hour each finish in a fraction of a second of real
//! time, with the journal showing the time they waited.

use cerebelum_harness as common;

use cerebelum::clock::TestClock;
use cerebelum::journal::Event;
use cerebelum::model::{DEFAULT_TENANT, ExecutionRecord, Status};
use cerebelum::store::{self, Synchronous};
use cerebelum::{Engine, EngineConfig};
use common::Db;
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

common::on_both_backends!(
    async
    a_three_day_sleep_ends_when_the_clock_says_so,
    an_approval_times_out_after_a_day,
    a_poll_checks_every_hour,
);

/// An engine on `db` with a test clock, serving, and testkit uploaded.
struct Driven {
    engine: Engine,
    clock: TestClock,
    sha: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<cerebelum::Result<()>>,
    _db: Db,
}

impl Driven {
    async fn new(db: Db) -> Self {
        let store = store::open(&db.url, Synchronous::Normal).await.unwrap();
        let mut config = EngineConfig::new(common::cache_dir());
        config.tick = Duration::from_millis(10);
        let clock = TestClock::at_system_time();
        let engine = Engine::new(store, config, Arc::new(clock.clone())).unwrap();
        let wasm = std::fs::read(common::guest("testkit")).unwrap();
        let sha = engine
            .upload(DEFAULT_TENANT, "testkit", wasm)
            .await
            .unwrap()
            .sha256;
        let (stop, server) = common::serve_in_process(&engine);
        Self {
            engine,
            clock,
            sha,
            stop,
            server,
            _db: db,
        }
    }

    async fn start(&self, workflow: &str, input: &str) -> String {
        self.engine
            .start(DEFAULT_TENANT, &self.sha, workflow, input, None)
            .await
            .unwrap()
            .id
    }

    /// Waits (real time, briefly) until `id` hibernated.
    async fn hibernated(&self, id: &str) -> ExecutionRecord {
        self.hibernated_again(id, None).await
    }

    /// Waits until `id` hibernated with a wake-up time other than `before`.
    async fn hibernated_again(&self, id: &str, before: Option<i64>) -> ExecutionRecord {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let record = self
                .engine
                .store()
                .executions()
                .execution(id)
                .await
                .unwrap();
            if record.status == Status::Waiting && (before.is_none() || record.wake_at_ms != before)
            {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "{id} did not hibernate: {record:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn finished(&self, id: &str) -> ExecutionRecord {
        tokio::time::timeout(Duration::from_secs(30), self.engine.wait_finished(id))
            .await
            .expect("finished")
            .unwrap()
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }
}

async fn a_three_day_sleep_ends_when_the_clock_says_so(db: Db) {
    let began = Instant::now();
    let driven = Driven::new(db).await;
    let id = driven
        .start(
            "step_sleep_step",
            &format!(r#"{{"sleep_ms": {}}}"#, (3 * DAY).as_millis()),
        )
        .await;
    let waiting = driven.hibernated(&id).await;
    let due = waiting.wake_at_ms.expect("it wakes by itself");
    // A day in: still asleep.
    driven.clock.advance(DAY);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        driven
            .engine
            .store()
            .executions()
            .execution(&id)
            .await
            .unwrap()
            .status,
        Status::Waiting
    );
    driven.clock.advance(2 * DAY);
    assert!(driven.clock_now() >= due);
    let done = driven.finished(&id).await;
    driven.stop().await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    let result = done.result.unwrap();
    let slept = result["after_ms"].as_i64().unwrap() - result["before_ms"].as_i64().unwrap();
    assert!(slept >= (3 * DAY).as_millis() as i64, "{result}");
    eprintln!("three days of sleep in {:?} of real time", began.elapsed());
}

async fn an_approval_times_out_after_a_day(db: Db) {
    let began = Instant::now();
    let driven = Driven::new(db).await;
    let id = driven
        .start(
            "approval",
            &format!(r#"{{"key": "ship", "timeout_ms": {}}}"#, DAY.as_millis()),
        )
        .await;
    driven.hibernated(&id).await;
    driven.clock.advance(DAY + Duration::from_secs(1));
    let done = driven.finished(&id).await;
    driven.stop().await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    assert_eq!(done.result.unwrap()["decision"], "timed-out");
    eprintln!(
        "a day's approval timeout in {:?} of real time",
        began.elapsed()
    );
}

async fn a_poll_checks_every_hour(db: Db) {
    let began = Instant::now();
    let driven = Driven::new(db).await;
    let id = driven
        .start(
            "poll_ready",
            &format!(
                r#"{{"ready_after_ms": {}, "interval_ms": {}, "max_attempts": 10}}"#,
                (3 * HOUR).as_millis(),
                HOUR.as_millis()
            ),
        )
        .await;
    let mut wake = None;
    for _ in 0..3 {
        wake = driven.hibernated_again(&id, wake).await.wake_at_ms;
        driven.clock.advance(HOUR);
    }
    let done = driven.finished(&id).await;
    let journal = driven
        .engine
        .store()
        .executions()
        .journal(&id, 0)
        .await
        .unwrap();
    driven.stop().await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    let checks = journal
        .iter()
        .filter(|e| matches!(e.event, Event::PollCheck { .. }))
        .count();
    assert_eq!(checks, 3, "not ready at 0, 1 and 2 hours; ready at 3");
    eprintln!(
        "three hours of polling in {:?} of real time",
        began.elapsed()
    );
}

impl Driven {
    fn clock_now(&self) -> i64 {
        use cerebelum::clock::Clock;
        self.clock.now_ms()
    }
}
