//! The gRPC API end to end: real `cerebelum serve` processes, the real
//! CLI binary with `--server`, and a tonic client for what the CLI does not
//! show (status codes of every RPC).

use cerebelum_harness as common;
use common::WAIT;

use cerebelum::api::pb::{self, cerebelum_client::CerebelumClient};
use common::{Db, Remote, free_port, guest, path};
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::metadata::MetadataValue;

common::on_both_backends!(
    upload_start_watch_approve_through_the_cli,
    tenants_never_see_each_other,
    watches_see_every_entry_once_in_order,
    run_execution_starts_and_waits_in_one_call,
);

/// `WatchExecution` hands out every journal entry once, in order: those
/// the node's commits broadcast as they are, and those written by
/// something else (a sleep's end, journaled by the scheduler while the
/// execution hibernates) read from the store in their place. With
/// `end_only` it hands out the final record alone: beside a watch of the
/// journal, alone (no entry is read or copied for it), and after the end.
fn watches_see_every_entry_once_in_order(db: Db) {
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &["--hibernate-after-ms", "100"]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = common::grpc::connect(port, &key).await;
        let mut watched = Vec::new();
        let mut waited = Vec::new();
        for (workflow, input) in [
            ("many_steps", r#"{"n": 300}"#),
            ("step_sleep_step", r#"{"sleep_ms": 1500}"#),
        ] {
            let id = common::grpc::start(&mut client, "kit", workflow, input).await;
            let stream = watch(&mut client, &id, false).await;
            waited.push((id.clone(), watch(&mut client, &id, true).await));
            watched.push((id, stream));
        }
        // Followed for its end alone, by nobody else.
        let alone = common::grpc::start(&mut client, "kit", "many_steps", r#"{"n": 200}"#).await;
        waited.push((alone.clone(), watch(&mut client, &alone, true).await));
        for (id, stream) in waited {
            let finished = only_the_end(&id, stream).await;
            assert_eq!(finished.status, pb::ExecutionStatus::Completed as i32);
            assert_eq!(finished.id, id);
            // Asked again after the end: the same record at once.
            let again = only_the_end(&id, watch(&mut client, &id, true).await).await;
            assert_eq!(again.result_json, finished.result_json);
            assert_eq!(
                serde_json::from_str::<Value>(finished.result_json.as_deref().unwrap()).unwrap(),
                cli.status(&id)["result"],
                "{id}: the result of an end-only watch"
            );
        }
        for (id, mut stream) in watched {
            let mut seqs = Vec::new();
            let mut finished = None;
            while let Some(event) = stream.message().await.unwrap() {
                match event.event.unwrap() {
                    pb::watch_event::Event::Entry(entry) => seqs.push(entry.seq),
                    pb::watch_event::Event::Progress(_) => {}
                    pb::watch_event::Event::Finished(execution) => finished = Some(execution),
                    pb::watch_event::Event::Started(s) => panic!("{id}: a watch handed out {s:?}"),
                }
            }
            let finished = finished.unwrap_or_else(|| panic!("{id}: the watch ended early"));
            assert_eq!(finished.status, pb::ExecutionStatus::Completed as i32);
            let journal = cli.journal(&id);
            let expected: Vec<i64> = (1..=journal.len() as i64).collect();
            assert_eq!(seqs, expected, "{id}: the entries watched");
        }
    });
}

/// `RunExecution` is a start and an end-only watch on one call: its
/// first event says what started, its last is the end. An idempotency key
/// used before gives the earlier execution and its end. A refused call
/// (unknown package, no stream left) starts nothing, and dropping the call
/// stops the wait, not the execution.
fn run_execution_starts_and_waits_in_one_call(db: Db) {
    let key = db.tenant("acme", &["--max-streams", "2"]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = common::grpc::connect(port, &key).await;
        let request = |workflow: &str, input: &str, key: Option<&str>| pb::StartExecutionRequest {
            package: "kit".into(),
            workflow: workflow.into(),
            input_json: input.into(),
            idempotency_key: key.map(str::to_owned),
            ..Default::default()
        };
        let run = request("many_steps", r#"{"n": 20}"#, Some("run-1"));
        let (first, created, end) = run_events(&mut client, run.clone()).await;
        assert!(created, "a new key starts a new execution");
        assert_eq!(end.status, pb::ExecutionStatus::Completed as i32);
        assert_eq!(end.id, first.id);
        assert_eq!(
            serde_json::from_str::<Value>(end.result_json.as_deref().unwrap()).unwrap(),
            cli.status(&first.id)["result"],
            "the end a run hands out is the stored one"
        );
        // The same key: the same execution, ended already.
        let (again, created, end_again) = run_events(&mut client, run).await;
        assert!(!created, "a used key returns the earlier execution");
        assert_eq!(again.id, first.id);
        assert_eq!(end_again.result_json, end.result_json);

        let listed = || {
            let rows: Vec<Value> = serde_json::from_str(&cli.ok(&["list", "--json"])).unwrap();
            rows.len()
        };
        let unknown = client.run_execution(pb::StartExecutionRequest {
            package: "nope".into(),
            ..request("many_steps", "{}", None)
        });
        assert_eq!(refused(unknown.await).0, Code::NotFound);

        // Both of the tenant's streams held by runs waiting for an
        // approval: a third run is refused, and starts nothing.
        let mut waiting = Vec::new();
        for key in ["a", "b"] {
            let input = format!(r#"{{"key": "{key}"}}"#);
            let mut stream = client
                .run_execution(request("approval", &input, None))
                .await
                .unwrap()
                .into_inner();
            let started = match stream.message().await.unwrap().and_then(|e| e.event) {
                Some(pb::watch_event::Event::Started(s)) => s.execution.unwrap(),
                other => panic!("a run's first event: {other:?}"),
            };
            waiting.push((started.id, key, stream));
        }
        let before = listed();
        assert_eq!(before, 3, "the run of many_steps and two approvals");
        let third = client.run_execution(request("approval", r#"{"key": "c"}"#, None));
        let (code, message) = refused(third.await);
        assert_eq!(code, Code::ResourceExhausted, "{message}");
        assert_eq!(listed(), before, "a refused run stores nothing");

        // Dropping a run leaves its execution running; the other run sees
        // its approval's end.
        let (dropped, dropped_key, stream) = waiting.pop().unwrap();
        drop(stream);
        let (kept, kept_key, mut stream) = waiting.pop().unwrap();
        for (id, key) in [(&dropped, dropped_key), (&kept, kept_key)] {
            client
                .approve(pb::ApproveRequest {
                    id: id.clone(),
                    key: key.into(),
                    payload_json: "{}".into(),
                })
                .await
                .unwrap();
        }
        let end = tokio::time::timeout(WAIT, async {
            let mut last = None;
            while let Some(event) = stream.message().await.unwrap() {
                last = event.event;
            }
            last
        })
        .await
        .expect("the run waiting for its approval never saw the end");
        match end {
            Some(pb::watch_event::Event::Finished(e)) => {
                assert_eq!(e.id, kept);
                assert_eq!(e.status, pb::ExecutionStatus::Completed as i32);
            }
            other => panic!("a run's last event: {other:?}"),
        }
        cli.wait_text(&["status", &dropped], WAIT, |s| s.contains("completed"));
    });
}

/// The events of a `RunExecution` that must be exactly two: what started
/// (and whether it is new), then its end.
async fn run_events(
    client: &mut common::grpc::Client,
    request: pb::StartExecutionRequest,
) -> (pb::Execution, bool, pb::Execution) {
    let mut stream = client.run_execution(request).await.unwrap().into_inner();
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a run handed out nothing for a minute")
        .unwrap()
    {
        events.push(event.event.unwrap());
    }
    match <[_; 2]>::try_from(events) {
        Ok(
            [
                pb::watch_event::Event::Started(started),
                pb::watch_event::Event::Finished(end),
            ],
        ) => (started.execution.unwrap(), started.created, end),
        other => panic!("a run must hand out what started, then the end: {other:?}"),
    }
}

/// A watch of execution `id` from its start, or for its end alone.
async fn watch(
    client: &mut common::grpc::Client,
    id: &str,
    end_only: bool,
) -> tonic::Streaming<pb::WatchEvent> {
    client
        .watch_execution(pb::WatchExecutionRequest {
            id: id.to_owned(),
            after_seq: 0,
            end_only,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The one event of an end-only watch, which must be the end.
async fn only_the_end(id: &str, mut stream: tonic::Streaming<pb::WatchEvent>) -> pb::Execution {
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event.event.unwrap());
    }
    match <[_; 1]>::try_from(events) {
        Ok([pb::watch_event::Event::Finished(execution)]) => execution,
        Ok([other]) => panic!("{id}: an end-only watch handed out {other:?}"),
        Err(events) => panic!("{id}: an end-only watch handed out {} events", events.len()),
    }
}

fn upload_start_watch_approve_through_the_cli(db: Db) {
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);

    let uploaded = cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    assert!(uploaded.starts_with("kit v1 sha256:"), "{uploaded}");
    let listed = cli.ok(&["packages", "kit"]);
    assert!(
        listed.contains("workflows:") && listed.contains("approval"),
        "{listed}"
    );

    let id = cli
        .ok(&["start", "kit", "approval", "--input", r#"{"key":"ship"}"#])
        .trim()
        .to_owned();
    let watch = cli
        .command(&["watch", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cli.wait_text(&["status", &id], WAIT, |s| {
        s.contains("waiting for approval 'ship'")
    });
    let approved = cli.ok(&["approve", &id, "ship", "--payload", r#"{"by":"ops"}"#]);
    assert!(approved.contains("is approved"), "{approved}");

    let out = watch.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "watch failed: {stderr}");
    let result: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["decision"], "approved");
    assert_eq!(result["payload"]["by"], "ops");
    assert!(
        stderr.contains("⏳ waiting for approval 'ship'"),
        "{stderr}"
    );
    assert!(stderr.contains("■ completed"), "{stderr}");
    assert_eq!(cli.status(&id)["status"], "completed");
    common::assert_contiguous(&id, &cli.journal(&id));
}

/// A tonic client with `key`.
async fn client(
    port: u16,
    key: &str,
) -> CerebelumClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor + use<>,
    >,
> {
    let channel = tonic::transport::Channel::from_shared(common::url(port))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let header: MetadataValue<_> = format!("Bearer {key}").parse().unwrap();
    CerebelumClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", header.clone());
        Ok(r)
    })
}

/// The code and message of a refused call.
fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    let status = r.expect_err("the call should have been refused");
    (status.code(), status.message().to_owned())
}

fn tenants_never_see_each_other(db: Db) {
    let key_a = db.tenant("a", &[]);
    let key_b = db.tenant("b", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let a = Remote::new(port, &key_a);
    let b = Remote::new(port, &key_b);
    a.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let id_a = a
        .ok(&["start", "kit", "approval", "--input", r#"{"key":"k"}"#])
        .trim()
        .to_owned();
    a.wait_text(&["status", &id_a], WAIT, |s| {
        s.contains("waiting for approval")
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut b = client(port, &key_b).await;
        let missing = |id: &str| format!("no execution with id '{id}'");
        // Every call of B on A's execution is NOT_FOUND, worded exactly as
        // for an id that does not exist.
        let id = || id_a.clone();
        let end_only = |id: String| pb::WatchExecutionRequest {
            id,
            after_seq: 0,
            end_only: true,
        };
        // B's end-only watch, refused, starts no feed A's would miss the
        // end by; A's, opened after it, sees the end, though B tries again
        // while it waits (below).
        let first = refused(b.watch_execution(end_only(id())).await);
        let mut a_client = client(port, &key_a).await;
        let a_waits = a_client
            .watch_execution(end_only(id()))
            .await
            .unwrap()
            .into_inner();
        let calls: Vec<(&str, (Code, String))> = vec![
            ("WatchExecution (end only, before A's)", first),
            (
                "GetExecution",
                refused(b.get_execution(pb::GetExecutionRequest { id: id() }).await),
            ),
            (
                "GetJournal",
                refused(
                    b.get_journal(pb::GetJournalRequest {
                        id: id(),
                        after_seq: 0,
                    })
                    .await,
                ),
            ),
            (
                "WatchExecution",
                refused(
                    b.watch_execution(pb::WatchExecutionRequest {
                        id: id(),
                        after_seq: 0,
                        end_only: false,
                    })
                    .await,
                ),
            ),
            (
                "WatchExecution (end only, beside A's)",
                refused(b.watch_execution(end_only(id())).await),
            ),
            (
                "Approve",
                refused(
                    b.approve(pb::ApproveRequest {
                        id: id(),
                        key: "k".into(),
                        payload_json: "{}".into(),
                    })
                    .await,
                ),
            ),
            (
                "Reject",
                refused(
                    b.reject(pb::RejectRequest {
                        id: id(),
                        key: "k".into(),
                        reason: "no".into(),
                    })
                    .await,
                ),
            ),
            (
                "Cancel",
                refused(b.cancel(pb::CancelRequest { id: id() }).await),
            ),
            (
                "Retry",
                refused(b.retry(pb::RetryRequest { id: id() }).await),
            ),
        ];
        for (rpc, (code, message)) in calls {
            assert_eq!(code, Code::NotFound, "{rpc}: {message}");
            assert!(message.starts_with(&missing(&id_a)), "{rpc}: {message}");
        }
        a_client
            .approve(pb::ApproveRequest {
                id: id(),
                key: "k".into(),
                payload_json: "{}".into(),
            })
            .await
            .unwrap();
        let ended = tokio::time::timeout(WAIT, only_the_end(&id_a, a_waits))
            .await
            .expect("A's end-only watch never saw the end");
        assert_eq!(ended.status, pb::ExecutionStatus::Completed as i32);
        let (code, unknown) = refused(
            b.get_execution(pb::GetExecutionRequest {
                id: "ex_does_not_exist".into(),
            })
            .await,
        );
        assert_eq!(code, Code::NotFound);
        assert_eq!(
            unknown.replace("ex_does_not_exist", &id_a),
            refused(b.get_execution(pb::GetExecutionRequest { id: id() }).await).1,
            "another tenant's id must read exactly like a missing one"
        );
        // A's package does not exist for B either.
        let (code, message) = refused(
            b.describe_package(pb::DescribePackageRequest {
                name: "kit".into(),
                version: None,
            })
            .await,
        );
        assert_eq!(code, Code::NotFound, "{message}");
        assert!(message.contains("known packages: none"), "{message}");
        let (code, _) = refused(
            b.start_execution(pb::StartExecutionRequest {
                package: "kit".into(),
                workflow: "approval".into(),
                ..Default::default()
            })
            .await,
        );
        assert_eq!(code, Code::NotFound);
        // Listings show only B's own (nothing).
        let packages = b.list_packages(pb::ListPackagesRequest {}).await.unwrap();
        assert!(packages.into_inner().packages.is_empty());
        let listed = b
            .list_executions(pb::ListExecutionsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(listed.executions.is_empty(), "{listed:?}");
        // No key, a wrong key: UNAUTHENTICATED.
        let channel = tonic::transport::Channel::from_shared(common::url(port))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (code, message) = refused(
            CerebelumClient::new(channel)
                .list_packages(pb::ListPackagesRequest {})
                .await,
        );
        assert_eq!(code, Code::Unauthenticated);
        assert!(message.contains("missing API key"), "{message}");
        let mut wrong = client(port, "cbk_00000000_nope").await;
        let (code, _) = refused(wrong.list_packages(pb::ListPackagesRequest {}).await);
        assert_eq!(code, Code::Unauthenticated);
    });

    // The same package name and idempotency key are B's own.
    b.ok(&["upload", path(&guest("hello")), "--name", "kit"]);
    let key_args = ["--idempotency-key", "order-1", "--input", r#"{"name":"b"}"#];
    let id_b = b.ok(&[&["start", "kit", "hello"][..], &key_args[..]].concat());
    let a_key_args = ["--idempotency-key", "order-1", "--input", r#"{"key":"k2"}"#];
    let id_a2 = a.ok(&[&["start", "kit", "approval"][..], &a_key_args[..]].concat());
    assert_ne!(id_b, id_a2);
    let listed_a = a.ok(&["list"]);
    assert!(!listed_a.contains(id_b.trim()), "{listed_a}");
    let listed_b = b.ok(&["list"]);
    assert!(
        !listed_b.contains(&id_a) && listed_b.contains(id_b.trim()),
        "{listed_b}"
    );

    // A revoked key stops working at once (no restart, no cache).
    let key_id = &key_a[..12];
    let revoked = db.ok(&["admin", "key", "revoke", key_id]);
    assert!(revoked.contains("revoked"), "{revoked}");
    let refused = a.fails(&["status", &id_a]);
    assert!(refused.contains("invalid or revoked API key"), "{refused}");
    // B is unaffected.
    b.ok(&["status", id_b.trim()]);
}

#[test]
fn start_is_idempotent_and_bad_uploads_store_nothing() {
    let db = Db::new();
    let key = db.tenant(
        "small",
        &[
            "--max-package-mb",
            "1",
            "--max-payload-kb",
            "1",
            "--max-open-executions",
            "2",
        ],
    );
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    let dir = tempfile::tempdir().unwrap();

    // Garbage, a component of another world, an oversized file.
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"definitely not wasm").unwrap();
    let err = cli.fails(&["upload", path(&garbage)]);
    assert!(err.contains("InvalidArgument"), "{err}");
    assert!(err.contains("not WebAssembly"), "{err}");
    let err = cli.fails(&["upload", path(&guest("not-a-package"))]);
    assert!(err.contains("InvalidArgument"), "{err}");
    assert!(err.contains("cerebelum:workflow"), "{err}");
    let big = dir.path().join("big.wasm");
    std::fs::write(&big, vec![0u8; 1_500_000]).unwrap();
    let err = cli.fails(&["upload", path(&big)]);
    assert!(err.contains("ResourceExhausted"), "{err}");
    assert!(
        err.contains("at most 1.0 MiB (max package size)"),
        "the message names the limit: {err}"
    );
    assert_eq!(
        cli.ok(&["packages"]).trim(),
        format!("no packages in {}", cli.url)
    );

    // Identical bytes are the same version; a start with a used key
    // returns the first execution.
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let again = cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    assert!(again.starts_with("kit v1 "), "{again}");
    let start = |key: &str| {
        let out = cli.run(&[
            "start",
            "kit",
            "approval",
            "--input",
            r#"{"key":"go"}"#,
            "--idempotency-key",
            key,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (first, _) = start("deploy-42");
    let (second, note) = start("deploy-42");
    assert_eq!(first, second);
    assert!(note.contains("used before"), "{note}");

    // Payload and open-execution quotas.
    let huge = format!(r#"{{"key":"{}"}}"#, "x".repeat(2000));
    let err = cli.fails(&["start", "kit", "approval", "--input", &huge]);
    assert!(
        err.contains("ResourceExhausted") && err.contains("max payload size"),
        "{err}"
    );
    let (_, _) = start("deploy-43");
    let err = cli.fails(&["start", "kit", "approval", "--input", r#"{"key":"x"}"#]);
    assert!(
        err.contains("ResourceExhausted") && err.contains("at most 2 (max open executions)"),
        "{err}"
    );
    let listed = cli.ok(&["list", "--json"]);
    let rows: Vec<Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(rows.len(), 2, "nothing stored for refused starts: {listed}");
    // Ending one makes room again.
    cli.ok(&["cancel", &first]);
    cli.wait_text(&["status", &first], WAIT, |s| s.contains("cancelled"));
    cli.ok(&["start", "kit", "approval", "--input", r#"{"key":"y"}"#]);
}

#[test]
fn watch_continues_after_the_server_is_killed() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let id = cli
        .ok(&[
            "start",
            "kit",
            "step_sleep_step",
            "--input",
            r#"{"sleep_ms": 3000}"#,
        ])
        .trim()
        .to_owned();
    let watch = cli
        .command(&["watch", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !cli.journal(&id).iter().any(|e| e["kind"] == "sleep") {
        assert!(
            std::time::Instant::now() < deadline,
            "the execution never slept"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    server.kill9();
    std::thread::sleep(Duration::from_millis(700));
    let _server = db.serve_api(port, &[]);

    let out = watch.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "watch failed: {stderr}");
    assert!(
        stderr.contains("connection lost"),
        "the watch saw the crash: {stderr}"
    );
    // Issue 31 (15): a server that went away is not a TLS problem.
    assert!(
        !stderr.contains("https://") && !stderr.contains("--tls-cert"),
        "a misleading hint: {stderr}"
    );
    // Every event shows once: the watch went on after its last seq.
    for line in ["▶ started", "⏸ sleeping", "■ completed"] {
        assert_eq!(stderr.matches(line).count(), 1, "{line:?} in:\n{stderr}");
    }
    assert_eq!(stderr.matches("✓ step record").count(), 2, "{stderr}");
    let journal = cli.journal(&id);
    common::assert_contiguous(&id, &journal);
    assert_eq!(cli.status(&id)["status"], "completed");
}

#[test]
fn a_graceful_shutdown_ends_open_watches_and_they_reconnect() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let id = cli
        .ok(&["start", "kit", "approval", "--input", r#"{"key":"go"}"#])
        .trim()
        .to_owned();
    let watch = cli
        .command(&["watch", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    cli.wait_text(&["status", &id], WAIT, |s| {
        s.contains("waiting for approval")
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.terminate(Duration::from_secs(10)),
        "an open watch must not hold the server's shutdown"
    );
    let _server = db.serve_api(port, &[]);
    cli.ok(&["approve", &id, "go"]);
    let out = watch.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "watch failed: {stderr}");
    assert!(stderr.contains("shutting down"), "{stderr}");
    assert_eq!(
        stderr.matches("⏳ waiting for approval").count(),
        1,
        "{stderr}"
    );
}

#[test]
fn health_and_reflection_answer() {
    let db = Db::new();
    let port = free_port();
    let mut server = db.serve_api(port, &[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let channel = tonic::transport::Channel::from_shared(common::url(port))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let serving = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "cerebelum.v1.Cerebelum".into(),
            })
            .await
            .unwrap_or_else(|e| panic!("{e:?}\nthe server's log:\n{}", server.log()))
            .into_inner();
        assert_eq!(
            serving.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut replies = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let reply = replies.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
            panic!("unexpected reflection reply {reply:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(
            names.contains(&"cerebelum.v1.Cerebelum".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"grpc.health.v1.Health".to_owned()),
            "{names:?}"
        );
    });
}

/// Runs `cerebelum ARGS` on `db` with at most `kib` of virtual memory: far
/// too little for the wasm runtime's pooling allocator to reserve its
/// instance slots, plenty for a command that opens the database only.
fn run_within(db: &Db, kib: u64, args: &[&str]) -> std::process::Output {
    let plain = db.command(args);
    let mut limited = std::process::Command::new("bash");
    limited
        .arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(plain.get_program())
        .args(plain.get_args());
    for (key, value) in plain.get_envs() {
        if let Some(value) = value {
            limited.env(key, value);
        }
    }
    limited.output().unwrap()
}

/// The local commands that read or decide open the database alone: they
/// work where no wasm runtime can start (the same limit stops `upload`).
#[test]
fn read_only_local_commands_open_the_database_only() {
    const LIMIT_KIB: u64 = 2_000_000;
    let db = Db::new();
    let testkit = guest("testkit");
    let id = db.start(&testkit, "approval", r#"{"key": "go"}"#);
    let upload = run_within(&db, LIMIT_KIB, &["upload", path(&testkit)]);
    let stderr = String::from_utf8_lossy(&upload.stderr);
    assert!(
        !upload.status.success() && stderr.contains("configuring wasmtime"),
        "upload should need the wasm runtime, which cannot start under the limit: {stderr}"
    );
    for args in [
        vec!["status", &id],
        vec!["status", &id, "--json"],
        vec!["list"],
        vec!["journal", &id],
        vec!["packages"],
        vec!["packages", "testkit"],
        vec!["cancel", &id],
    ] {
        let out = run_within(&db, LIMIT_KIB, &args);
        assert!(
            out.status.success(),
            "cerebelum {args:?} failed under the limit: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Refused for what they are, not for want of a runtime.
    for (args, refusal) in [
        (vec!["approve", &id, "nobody"], "not waiting for approval"),
        (vec!["retry", &id], "only failed or cancelled"),
    ] {
        let out = run_within(&db, LIMIT_KIB, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(refusal),
            "cerebelum {args:?}: {stderr}"
        );
    }
}

/// `start --wait` follows the execution to its end, prints its result and
/// exits with its status; `--input @FILE` and `--payload @FILE` read their
/// JSON from a file (issue 35, 6).
#[test]
fn start_waits_for_the_end_and_json_arguments_read_files() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    std::fs::write(&input, "{\n  \"name\": \"from a file\"\n}\n").unwrap();
    let at_input = format!("@{}", input.display());

    let out = cli.run(&["start", "kit", "nothing", "--input", &at_input, "--wait"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(lines[0].starts_with("ex_"), "{stdout}");
    assert_eq!(
        serde_json::from_str::<Value>(lines[1]).unwrap(),
        serde_json::json!({"name": "from a file"})
    );

    // A failed execution: exit status 1, what failed on stderr.
    let failing = serde_json::json!({"step": "panic_step"}).to_string();
    let out = cli.run(&["start", "kit", "run_step", "--input", &failing, "--wait"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // A readable line: the error's kind and message, not its JSON.
    assert!(stderr.contains(" failed: trap: "), "{stderr}");
    assert!(!stderr.contains(r#""kind""#), "{stderr}");

    // `list` is a table with a header and times people read; `journal`
    // gives each entry's time.
    let listed = cli.ok(&["list"]);
    let header = listed.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("ID") && header.contains("STATUS") && header.contains("STARTED (UTC)"),
        "{listed}"
    );
    let first = lines[0];
    let row = listed
        .lines()
        .find(|l| l.starts_with(first))
        .unwrap_or_default();
    let started = row.split_whitespace().nth(4).unwrap_or_default();
    assert!(
        row.contains("completed") && started.len() == 10 && started.as_bytes()[4] == b'-',
        "a date after the workflow: {row}"
    );
    let journal = cli.ok(&["journal", first]);
    let time = journal.split_whitespace().nth(1).unwrap_or_default();
    assert!(
        time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.',
        "HH:MM:SS.mmm after the seq: {journal}"
    );

    // A file that is not there: refused, saying which, and nothing started.
    let before = cli.ok(&["list"]);
    let out = cli.run(&[
        "start",
        "kit",
        "nothing",
        "--input",
        "@/nonexistent/in.json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot read the JSON file /nonexistent/in.json"),
        "{stderr}"
    );
    assert_eq!(cli.ok(&["list"]), before);

    // An approval's payload from a file.
    let id = cli.ok(&["start", "kit", "approval", "--input", r#"{"key":"go"}"#]);
    let id = id.trim();
    cli.wait_text(&["status", id], WAIT, |s| s.contains("approval 'go'"));
    let payload = dir.path().join("payload.json");
    std::fs::write(&payload, r#"{"by": "file"}"#).unwrap();
    cli.ok(&[
        "approve",
        id,
        "go",
        "--payload",
        &format!("@{}", payload.display()),
    ]);
    assert_eq!(
        cli.wait_ended(id, WAIT)["result"],
        serde_json::json!({"decision": "approved", "payload": {"by": "file"}})
    );
}

/// `cerebelum completions bash` is a script bash loads, and its completion
/// offers the commands and a command's flags (issue 35, 6).
#[test]
fn shell_completions_complete_commands_and_flags() {
    let script = std::process::Command::new(common::bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(script.status.success(), "{script:?}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cerebelum.bash");
    std::fs::write(&file, &script.stdout).unwrap();
    let complete = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let program = format!(
            "source {}; COMP_WORDS=({line}); COMP_CWORD={}; COMP_LINE='{line}'; \
             COMP_POINT=${{#COMP_LINE}}; _cerebelum cerebelum '{}' '{}'; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display(),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &program])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let commands = complete("cerebelum sta");
    assert!(
        commands.lines().any(|l| l == "start") && commands.lines().any(|l| l == "status"),
        "{commands}"
    );
    let flags = complete("cerebelum start --wa");
    assert!(flags.lines().any(|l| l == "--wait"), "{flags}");
}

/// A steady stream of runs through the API on the embedded database:
/// SQLite's write-ahead log starts over at the beginning of its file
/// again and again, so a commit overwrites blocks the file already has
/// instead of lengthening it (the flush of a longer file also writes its
/// size through the file system's journal: 0.5 against 0.3 ms a commit
/// here). Left to SQLite, the log of such a stream never started over
/// while the watches' reads came and went: every commit lengthened it.
#[test]
fn on_sqlite_the_log_starts_over_under_a_steady_stream_of_runs() {
    let db = Db::new();
    let key = db.tenant("acme", &[]);
    let port = free_port();
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    // The log file's size, and its checkpoint sequence number (bytes
    // 12-15 of its header), which a start over increments; none while a
    // truncation has left the file empty.
    let wal = db.path.with_extension("db-wal");
    let look = || {
        let mut header = [0u8; 16];
        let file = std::fs::File::open(&wal).unwrap();
        let size = file.metadata().unwrap().len();
        let seq = std::io::Read::read_exact(&mut &file, &mut header)
            .ok()
            .map(|()| u32::from_be_bytes(header[12..].try_into().unwrap()));
        (size, seq)
    };
    // Its input is in the execution, the step's call and result, and the
    // execution's result: about 140 KB of log a run (with the pages of the
    // execution's row and indexes), so the log passes the 1,000 frames
    // (4 MiB) of a start over in 30 runs or so.
    let input = serde_json::json!({ "blob": "x".repeat(4 << 10) }).to_string();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (runs, start_overs, truncations, largest) = runtime.block_on(async {
        let mut client = common::grpc::connect(port, &key).await;
        let (mut size, mut seq) = look();
        let (mut runs, mut start_overs, mut truncations, mut largest) = (0, 0, 0, size);
        let mut emptied = seq.is_none();
        // Until the log has started over three times: the checkpoint looks
        // every half second, so how many runs that takes depends on the
        // disk (a fixed count of runs took 4 s on a slow disk and 1 s, two
        // looks, on a fast one). A start over keeps the file's size; a
        // truncation (past 32 MB, the safety net) empties it, and is not
        // counted. Without the restarting checkpoint the number never
        // moved in 60 s (nearly 20,000 runs), and the deadline ends the
        // loop.
        let deadline = Instant::now() + Duration::from_secs(60);
        while start_overs < 3 && Instant::now() < deadline {
            let (_, finished) =
                common::grpc::start_to_completion(&mut client, "kit", "one_step", &input).await;
            assert_eq!(finished.status, pb::ExecutionStatus::Completed as i32);
            runs += 1;
            let (now_size, now_seq) = look();
            match now_seq {
                None => emptied = true,
                Some(now) if Some(now) != seq => {
                    if emptied || now_size < size {
                        truncations += 1;
                    } else {
                        start_overs += 1;
                    }
                    (seq, emptied) = (Some(now), false);
                }
                Some(_) => {}
            }
            size = now_size;
            largest = largest.max(size);
        }
        (runs, start_overs, truncations, largest)
    });
    eprintln!(
        "{runs} runs: the log started over {start_overs} times and was truncated \
         {truncations} times; its file reached {largest} bytes"
    );
    assert!(
        start_overs >= 3,
        "the log started over {start_overs} times in {runs} runs (and was truncated \
         {truncations} times, its file at {largest} bytes)"
    );
}
