//! External workers end to end: a real `cerebelum serve` on a real
//! database, executions started with `--worker-queue` through the CLI, and
//! workers speaking `cerebelum.v1.WorkerService` over gRPC (a tonic
//! client here, as a worker in any language would).

use cerebelum_harness as common;

use cerebelum::api::pb;
use common::grpc::{WorkerClient, worker_client};
use common::{Db, Remote, entries, free_port, guest, path, step_call_seq};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tonic::Code;

const LONG: Duration = Duration::from_secs(60);

common::on_both_backends!(
    a_step_on_an_unserved_queue_says_so_while_it_waits,
    every_step_runs_on_the_worker_queue_with_the_sandboxes_result,
    an_expired_claim_fails_the_attempt_and_its_late_result_is_refused,
    cancelling_reaches_the_worker_through_its_heartbeat,
    an_executions_next_task_prefers_its_last_worker_for_a_moment,
    a_task_held_across_kill9_of_the_server_completes_once,
    a_step_the_package_places_on_a_queue_runs_there_and_the_rest_in_the_sandbox,
    a_worker_whose_key_is_revoked_is_cut_off,
    a_completion_claims_the_next_queued_task,
    a_placed_step_no_worker_takes_in_time_fails_its_attempt,
);

#[test]
fn workers_on_either_node_serve_executions_driven_by_the_other() {
    let db = Db::postgres();
    let key = db.tenant("a", &[]);
    let (p1, p2) = (free_port(), free_port());
    let _one = db.serve_api(p1, &[]);
    let _two = db.serve_api(p2, &[]);
    let (via_one, via_two) = (Remote::new(p1, &key), Remote::new(p2, &key));
    via_one.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    for (starts_on, worker_port, input) in [(&via_one, p2, 1), (&via_two, p1, 2)] {
        let id = start_on_queue(starts_on, "one_step", &format!(r#"{{"n":{input}}}"#));
        runtime().block_on(async {
            let mut worker = worker_client(worker_port, &key).await;
            register(&mut worker, "w-1").await;
            let task = poll(&mut worker, "w-1", 10_000).await.expect("a task");
            assert_eq!(task.execution_id, id);
            let result: Value = serde_json::from_str(&task.input_json).unwrap();
            complete(&mut worker, &task.token, result).await.unwrap();
        });
        let ended = starts_on.wait_ended(&id, LONG);
        assert_eq!(ended["status"], "completed", "{ended}");
        assert_eq!(ended["result"], json!({"n": input}));
        let journal = starts_on.journal(&id);
        let seq = step_call_seq(&journal, "noop", 0);
        assert_eq!(common::results(&journal, seq).len(), 1);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A server with tenant `a` (and the testkit uploaded as `kit`) and tenant
/// `b`; their keys.
fn setup(db: &Db, port: u16, serve_args: &[&str]) -> (common::Server, String, String) {
    let key_a = db.tenant("a", &[]);
    let key_b = db.tenant("b", &[]);
    let server = db.serve_api(port, serve_args);
    Remote::new(port, &key_a).ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    (server, key_a, key_b)
}

/// Starts `workflow` of the testkit with every step on queue `devops`;
/// its id.
fn start_on_queue(cli: &Remote, workflow: &str, input: &str) -> String {
    let id = cli.ok(&[
        "start",
        "kit",
        workflow,
        "--input",
        input,
        "--worker-queue",
        "devops",
    ]);
    id.trim().to_owned()
}

async fn register(client: &mut WorkerClient, id: &str) {
    register_on(client, id, "devops").await
}

async fn register_on(client: &mut WorkerClient, id: &str, queue: &str) {
    client
        .register_worker(pb::RegisterWorkerRequest {
            worker_id: id.into(),
            queue: queue.into(),
            host: "test-host".into(),
            max_tasks: 1,
        })
        .await
        .unwrap();
}

async fn poll(client: &mut WorkerClient, id: &str, wait_ms: i32) -> Option<pb::WorkerTask> {
    poll_on(client, id, "devops", wait_ms).await.unwrap()
}

async fn poll_on(
    client: &mut WorkerClient,
    id: &str,
    queue: &str,
    wait_ms: i32,
) -> Result<Option<pb::WorkerTask>, tonic::Status> {
    let reply = client
        .poll_task(pb::PollTaskRequest {
            worker_id: id.into(),
            queue: queue.into(),
            wait_ms,
        })
        .await?;
    Ok(reply.into_inner().task)
}

async fn complete(client: &mut WorkerClient, token: &str, result: Value) -> Result<(), Code> {
    complete_then(client, token, result, None).await.map(|_| ())
}

/// Completes `token` and, with `next` (a worker id), claims the task
/// queued for that worker now, if any.
async fn complete_then(
    client: &mut WorkerClient,
    token: &str,
    result: Value,
    next: Option<&str>,
) -> Result<Option<pb::WorkerTask>, Code> {
    client
        .complete_task(pb::CompleteTaskRequest {
            token: token.into(),
            outcome: Some(pb::complete_task_request::Outcome::ResultJson(
                result.to_string(),
            )),
            next: next.map(|worker| pb::NextTask {
                worker_id: worker.into(),
                queue: "devops".into(),
            }),
            before: Vec::new(),
        })
        .await
        .map(|r| r.into_inner().task)
        .map_err(|s| s.code())
}

/// A step waiting on a queue no worker polls says so in `status` for as
/// long as it waits — also after its execution hibernated (2 s), which
/// used to end the line (issue 33, 9) — and who runs it once one does.
fn a_step_on_an_unserved_queue_says_so_while_it_waits(db: Db) {
    let port = free_port();
    let (_server, key_a, _) = setup(&db, port, &[]);
    let cli = Remote::new(port, &key_a);
    let id = start_on_queue(&cli, "one_step", r#"{"v":1}"#);
    let waiting = "waiting for a worker on queue 'devops' (for ";
    let unpolled = "— no worker has polled 'devops' yet";
    cli.wait_text(&["status", &id], LONG, |s| s.contains(unpolled));
    std::thread::sleep(Duration::from_secs(4));
    let status = cli.ok(&["status", &id]);
    assert!(
        status.contains(waiting) && status.contains(unpolled),
        "{status}"
    );
    runtime().block_on(async {
        let mut worker = worker_client(port, &key_a).await;
        register(&mut worker, "a-1").await;
        let status = cli.ok(&["status", &id]);
        assert!(
            status.contains(waiting) && !status.contains("no worker has polled"),
            "{status}"
        );
        assert!(poll(&mut worker, "a-1", 5000).await.is_some());
        let status = cli.ok(&["status", &id]);
        assert!(
            status.contains("waiting for step 'noop' on worker 'a-1' (for "),
            "{status}"
        );
    });
}

fn every_step_runs_on_the_worker_queue_with_the_sandboxes_result(db: Db) {
    let port = free_port();
    let (_server, key_a, key_b) = setup(&db, port, &[]);
    let cli = Remote::new(port, &key_a);
    let input = r#"{"name":"web-1","n":3}"#;
    let sandboxed = cli.ok(&["start", "kit", "noop3", "--input", input]);
    let sandboxed = cli.wait_ended(sandboxed.trim(), LONG);
    let id = start_on_queue(&cli, "noop3", input);
    let waiting = cli.wait_text(&["status", &id], LONG, |s| {
        s.contains("waiting for a worker on queue 'devops'")
    });
    assert!(waiting.contains("running"), "{waiting}");
    runtime().block_on(async {
        // Tenant b has a worker on a queue of the same name: it sees nothing.
        let mut other = worker_client(port, &key_b).await;
        register(&mut other, "b-1").await;
        assert!(poll(&mut other, "b-1", 300).await.is_none());

        let mut worker = worker_client(port, &key_a).await;
        register(&mut worker, "a-1").await;
        for n in 1..=3 {
            let task = poll(&mut worker, "a-1", 10_000).await.expect("a task");
            assert_eq!((task.step.as_str(), task.attempt), ("noop", 1), "task {n}");
            assert_eq!(task.execution_id, id);
            // The worker runs the step natively: noop returns its input.
            let input: Value = serde_json::from_str(&task.input_json).unwrap();
            complete(&mut worker, &task.token, input).await.unwrap();
        }
        let listed = worker
            .list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers;
        let ids: Vec<(&str, i64)> = listed
            .iter()
            .map(|w| (w.worker_id.as_str(), w.tasks_in_flight))
            .collect();
        assert_eq!(ids, vec![("a-1", 0)], "only this tenant's workers");
    });
    let on_worker = cli.wait_ended(&id, LONG);
    assert_eq!(on_worker["status"], "completed", "{on_worker}");
    assert_eq!(on_worker["result"], sandboxed["result"]);
    assert_eq!(on_worker["result"], json!({"name": "web-1", "n": 3}));
    let journal = cli.journal(&id);
    assert_eq!(entries(&journal, "attempt").len(), 3);
    for n in 0..3 {
        let seq = step_call_seq(&journal, "noop", n);
        assert_eq!(
            common::results(&journal, seq).len(),
            1,
            "one result per call"
        );
    }
}

/// A busy worker saves a round trip per task: `CompleteTask` with `next`
/// stores the outcome, then claims what is queued for the worker now
/// (never another tenant's), without waiting when nothing is.
fn a_completion_claims_the_next_queued_task(db: Db) {
    let port = free_port();
    let (_server, key_a, key_b) = setup(&db, port, &[]);
    let cli = Remote::new(port, &key_a);
    let ids: Vec<String> = (1..=2)
        .map(|v| start_on_queue(&cli, "one_step", &format!(r#"{{"v":{v}}}"#)))
        .collect();
    for id in &ids {
        cli.wait_text(&["status", id], LONG, |s| {
            s.contains("waiting for a worker on queue 'devops'")
        });
    }
    runtime().block_on(async {
        let mut other = worker_client(port, &key_b).await;
        register(&mut other, "b-1").await;
        let mut worker = worker_client(port, &key_a).await;
        register(&mut worker, "a-1").await;
        let first = poll(&mut worker, "a-1", 10_000).await.expect("a task");
        let input: Value = serde_json::from_str(&first.input_json).unwrap();
        let second = complete_then(&mut worker, &first.token, input, Some("a-1"))
            .await
            .unwrap()
            .expect("the other execution's task, claimed with the completion");
        assert_ne!(second.execution_id, first.execution_id);
        let input: Value = serde_json::from_str(&second.input_json).unwrap();
        let started = Instant::now();
        let none = complete_then(&mut worker, &second.token, input, Some("a-1"))
            .await
            .unwrap();
        assert!(none.is_none(), "{none:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "it did not wait"
        );
        assert!(poll(&mut other, "b-1", 300).await.is_none());
    });
    for id in &ids {
        let ended = cli.wait_ended(id, LONG);
        assert_eq!(ended["status"], "completed", "{ended}");
    }
}

fn an_expired_claim_fails_the_attempt_and_its_late_result_is_refused(db: Db) {
    let port = free_port();
    let (_server, key_a, _) = setup(&db, port, &["--worker-heartbeat-ms", "500"]);
    let cli = Remote::new(port, &key_a);
    let id = start_on_queue(&cli, "one_step", r#"{"v":1}"#);
    runtime().block_on(async {
        let mut first = worker_client(port, &key_a).await;
        register(&mut first, "w-1").await;
        let stale = poll(&mut first, "w-1", 10_000).await.expect("a task");
        assert_eq!(stale.attempt, 1);
        assert_eq!(stale.heartbeat_ms, Some(500));
        // w-1 goes silent (as a worker stopped with SIGSTOP or killed):
        // no heartbeat; the attempt fails and is retried on another worker.
        let mut second = worker_client(port, &key_a).await;
        register(&mut second, "w-2").await;
        let task = poll(&mut second, "w-2", 10_000).await.expect("the retry");
        assert_eq!((task.attempt, task.execution_id.as_str()), (2, id.as_str()));
        // w-1 comes back: its result is refused and stored nowhere.
        let late = complete(&mut first, &stale.token, json!({"by": "w-1"})).await;
        assert_eq!(late, Err(Code::FailedPrecondition));
        let beat = first
            .heartbeat(pb::HeartbeatRequest {
                token: stale.token.clone(),
                progress_json: None,
            })
            .await
            .unwrap_err();
        assert_eq!(beat.code(), Code::FailedPrecondition, "{beat:?}");
        complete(&mut second, &task.token, json!({"by": "w-2"}))
            .await
            .unwrap();
    });
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["result"], json!({"by": "w-2"}));
    let journal = cli.journal(&id);
    let failed = entries(&journal, "attempt-failed");
    assert_eq!(failed.len(), 1, "{journal:?}");
    let text = failed[0].to_string();
    assert!(text.contains("deadline") && text.contains("w-1"), "{text}");
    let seq = step_call_seq(&journal, "noop", 0);
    assert_eq!(common::results(&journal, seq).len(), 1, "one result");
}

fn cancelling_reaches_the_worker_through_its_heartbeat(db: Db) {
    let port = free_port();
    let (_server, key_a, _) = setup(&db, port, &[]);
    let cli = Remote::new(port, &key_a);
    let id = start_on_queue(&cli, "one_step", "{}");
    runtime().block_on(async {
        let mut worker = worker_client(port, &key_a).await;
        register(&mut worker, "w-1").await;
        let task = poll(&mut worker, "w-1", 10_000).await.expect("a task");
        let request = || pb::HeartbeatRequest {
            token: task.token.clone(),
            progress_json: Some(r#"{"percent":10}"#.into()),
        };
        let beat = worker.heartbeat(request()).await.unwrap().into_inner();
        assert!(!beat.cancel_requested);
        cli.ok(&["cancel", &id]);
        let beat = worker.heartbeat(request()).await.unwrap().into_inner();
        assert!(beat.cancel_requested, "the heartbeat says so");
        let ended = cli.wait_ended(&id, LONG);
        assert_eq!(ended["status"], "cancelled", "{ended}");
        let late = complete(&mut worker, &task.token, json!(1)).await;
        assert_eq!(late, Err(Code::FailedPrecondition), "the task was closed");
    });
}

fn an_executions_next_task_prefers_its_last_worker_for_a_moment(db: Db) {
    let port = free_port();
    let (_server, key_a, _) = setup(&db, port, &[]);
    let cli = Remote::new(port, &key_a);
    let id = start_on_queue(&cli, "noop3", "{}");
    runtime().block_on(async {
        let mut one = worker_client(port, &key_a).await;
        let mut two = worker_client(port, &key_a).await;
        register(&mut one, "w-1").await;
        register(&mut two, "w-2").await;
        let first = poll(&mut one, "w-1", 10_000).await.expect("task 1");
        complete(&mut one, &first.token, json!({})).await.unwrap();
        // Task 2 is w-1's for a moment: w-2 asking first gets nothing.
        assert!(poll(&mut two, "w-2", 300).await.is_none(), "sticky to w-1");
        let second = poll(&mut one, "w-1", 10_000).await.expect("task 2");
        complete(&mut one, &second.token, json!({})).await.unwrap();
        // w-1 does not ask again: after the window, w-2 takes task 3.
        let started = Instant::now();
        let third = poll(&mut two, "w-2", 10_000).await.expect("task 3");
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "waited for the window"
        );
        complete(&mut two, &third.token, json!({})).await.unwrap();
        let workers = two
            .list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers;
        assert_eq!(workers.len(), 2);
    });
    assert_eq!(cli.wait_ended(&id, LONG)["status"], "completed");
    let shown = cli.ok(&["workers"]);
    assert!(
        shown.contains("w-1") && shown.contains("w-2") && shown.contains("devops"),
        "{shown}"
    );
}

/// `kill -9` of the server while a worker holds a task: the worker's
/// completion reaches the restarted server, the execution (claimed again
/// after its lease) waits for the same task instead of queueing another,
/// and the step has one attempt and one result.
fn a_task_held_across_kill9_of_the_server_completes_once(db: Db) {
    let port = free_port();
    let args = ["--lease-ms", "1000"];
    let (server, key_a, _) = setup(&db, port, &args);
    let cli = Remote::new(port, &key_a);
    let id = start_on_queue(&cli, "one_step", r#"{"v":7}"#);
    let rt = runtime();
    let task = rt.block_on(async {
        let mut worker = worker_client(port, &key_a).await;
        register(&mut worker, "w-1").await;
        poll(&mut worker, "w-1", 10_000).await.expect("a task")
    });
    server.kill9();
    let _server = db.serve_api(port, &args);
    rt.block_on(async {
        // The worker reconnects and completes the task it holds.
        let mut worker = worker_client(port, &key_a).await;
        complete(&mut worker, &task.token, json!({"v": 7, "on": "w-1"}))
            .await
            .unwrap();
    });
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["result"], json!({"v": 7, "on": "w-1"}));
    let journal = cli.journal(&id);
    let seq = step_call_seq(&journal, "noop", 0);
    assert_eq!(
        common::attempts(&journal, seq),
        1,
        "no second attempt: {journal:?}"
    );
    assert_eq!(common::results(&journal, seq).len(), 1, "one result");
}

/// The testkit places step `native` on queue `kit-native` (`package!`,
/// `StepOptions::worker`): an execution started without a queue of its
/// own runs `noop` in the sandbox and only `native` on a worker, and the
/// journal says which worker served it.
fn a_step_the_package_places_on_a_queue_runs_there_and_the_rest_in_the_sandbox(db: Db) {
    let port = free_port();
    let (_server, key, _) = setup(&db, port, &[]);
    let cli = Remote::new(port, &key);
    let described = cli.ok(&["packages", "kit"]);
    assert!(
        described.contains("native (on worker queue kit-native)"),
        "{described}"
    );
    let id = cli.ok(&["start", "kit", "placed", "--input", r#"{"n":1}"#]);
    let id = id.trim();
    cli.wait_text(&["status", id], LONG, |s| {
        s.contains("waiting for a worker on queue 'kit-native'")
    });
    runtime().block_on(async {
        let mut worker = worker_client(port, &key).await;
        register_on(&mut worker, "native-1", "kit-native").await;
        let task = poll_on(&mut worker, "native-1", "kit-native", 10_000)
            .await
            .unwrap()
            .expect("the placed step's task");
        assert_eq!(
            (task.step.as_str(), task.execution_id.as_str()),
            ("native", id)
        );
        // The worker's answer, not the sandbox's (which returns its input).
        complete(&mut worker, &task.token, json!({"n": 1, "native": true}))
            .await
            .unwrap();
        // Nothing else of the execution reaches the queue.
        let more = poll_on(&mut worker, "native-1", "kit-native", 300).await;
        assert!(more.unwrap().is_none());
    });
    let ended = cli.wait_ended(id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["result"], json!({"n": 1, "native": true}));
    let journal = cli.journal(id);
    let queues: Vec<Value> = entries(&journal, "attempt")
        .iter()
        .map(|a| json!([a["payload"]["step"], a["payload"]["queue"]]))
        .collect();
    assert_eq!(
        queues,
        vec![
            json!(["noop", null]),
            json!(["native", "kit-native"]),
            json!(["noop", null])
        ]
    );
    let served: Vec<Value> = entries(&journal, "served")
        .iter()
        .map(|e| e["payload"].clone())
        .collect();
    assert_eq!(
        served,
        vec![json!({"step": "native", "attempt": 1, "worker": "native-1"})]
    );
    let watched = cli.run(&["watch", id]);
    let watched = String::from_utf8_lossy(&watched.stderr);
    assert!(
        watched.contains("native attempt 1 ran on worker 'native-1'"),
        "{watched}"
    );
}

/// A worker's key is revoked while it holds a task: its polls and its
/// completion are refused, and another worker (another key) finishes.
fn a_worker_whose_key_is_revoked_is_cut_off(db: Db) {
    let port = free_port();
    let (_server, key, _) = setup(&db, port, &["--worker-heartbeat-ms", "1500"]);
    let second_key = db.ok(&["admin", "key", "create", "a"]);
    let second_key = second_key.trim().to_owned();
    let cli = Remote::new(port, &key);
    let id = start_on_queue(&cli, "one_step", r#"{"n":7}"#);
    runtime().block_on(async {
        let mut doomed = worker_client(port, &key).await;
        register(&mut doomed, "doomed").await;
        let task = poll(&mut doomed, "doomed", 10_000).await.expect("a task");
        db.ok(&["admin", "key", "revoke", &key]);
        let refused = poll_on(&mut doomed, "doomed", "devops", 100).await;
        assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
        let late = complete(&mut doomed, &task.token, json!({"n": "doomed"})).await;
        assert_eq!(late, Err(Code::Unauthenticated));
        // The claim expires without heartbeats; the retry goes to another worker.
        let mut other = worker_client(port, &second_key).await;
        register(&mut other, "other").await;
        let retried = poll(&mut other, "other", 20_000).await.expect("the retry");
        assert_eq!(retried.attempt, 2);
        let input: Value = serde_json::from_str(&retried.input_json).unwrap();
        complete(&mut other, &retried.token, input).await.unwrap();
    });
    let ended = Remote::new(port, &second_key).wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}");
    assert_eq!(ended["result"], json!({"n": 7}));
}

/// The testkit gives `native_hurry` 300 ms to start (`StepOptions::
/// schedule_to_start`) and one attempt: with no worker on its queue the
/// attempt fails with `deadline`, and so does the execution.
fn a_placed_step_no_worker_takes_in_time_fails_its_attempt(db: Db) {
    let port = free_port();
    let (_server, key, _) = setup(&db, port, &[]);
    let cli = Remote::new(port, &key);
    let id = cli.ok(&["start", "kit", "placed_hurry", "--input", "{}"]);
    let ended = cli.wait_ended(id.trim(), LONG);
    assert_eq!(ended["status"], "failed", "{ended}");
    assert_eq!(ended["error"]["kind"], "deadline", "{ended}");
    let message = ended["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(
            "no worker on queue 'kit-native' took step 'native_hurry' within its \
             schedule-to-start timeout of 300 ms"
        ),
        "{message}"
    );
}
