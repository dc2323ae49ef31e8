//! Python workers end to end: a real `cerebelum serve`, executions started
//! with `--worker-queue`, and their steps run by real `python -m cerebelum
//! worker` processes (the Python SDK's `cerebelum.worker` and its gRPC
//! client, `cerebelum.client`), compared with the same workflow run in the
//! sandbox and locally.

use cerebelum_harness as common;

use cerebelum::api::Api;
use cerebelum::clock::TestClock;
use cerebelum::server::{self, ServerSettings};
use cerebelum::store::{self, Synchronous};
use cerebelum::{Engine, EngineConfig};
use common::{
    Db, Remote, WAIT, attempts, cache_dir, entries, free_port, guest, path, python, python_guest,
    results, root, step_call_seq,
};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Compiling a Python component takes seconds (once: it is cached).
const LONG: Duration = Duration::from_secs(180);
const PYWORKER: &str = "tests/guests/python/pyworker.py";
const PYPLACED: &str = "tests/guests/python/pyplaced.py";
const PYSLEEPER: &str = "tests/guests/python/pysleeper.py";
const PYAPPROVE: &str = "tests/guests/python/pyapprove.py";

common::on_both_backends!(
    a_python_worker_gives_the_sandboxes_result,
    kill9_of_a_python_worker_mid_step_retries_the_attempt_on_another_worker,
    a_stopped_python_workers_late_outcome_is_refused,
    a_step_placed_on_a_worker_runs_natively_and_the_rest_in_the_sandbox,
    a_worker_steps_long_sleep_is_handed_back_and_outlives_its_worker,
    an_approval_inside_a_worker_step_is_decided_while_no_worker_runs,
    a_signal_awaited_inside_a_worker_step_arrives_while_no_worker_runs,
);

/// A `python -m cerebelum worker` process serving the steps of a file
/// (`pyworker.py` unless said), or another Python program that serves as
/// a worker; killed when dropped.
struct PyWorker {
    child: Child,
    log: PathBuf,
}

impl PyWorker {
    fn start(db: &Db, port: u16, key: &str, queue: &str, id: &str) -> Self {
        Self::serving(PYWORKER, db, port, key, queue, id)
    }

    fn serving(file: &str, db: &Db, port: u16, key: &str, queue: &str, id: &str) -> Self {
        Self::at(file, db, &common::url(port), key, queue, id, &[])
    }

    /// A worker of the server at `url`, with `extra` arguments.
    fn at(
        file: &str,
        db: &Db,
        url: &str,
        key: &str,
        queue: &str,
        id: &str,
        extra: &[&str],
    ) -> Self {
        let log = db.dir.path().join(format!("worker-{id}.log"));
        let child = Command::new(python())
            .args(["-m", "cerebelum", "worker"])
            .arg(root().join(file))
            .args(["--queue", queue, "--server", url])
            .args(["--api-key", key, "--worker-id", id])
            .args(extra)
            .env_remove("CEREBELUM_CA_CERT")
            .env_remove("CEREBELUM_SERVER")
            .env_remove("CEREBELUM_API_KEY")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawning python -m cerebelum worker");
        Self { child, log }
    }

    /// What the worker logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the worker logged `text` (and is still running).
    fn wait_log(&mut self, text: &str, timeout: Duration) {
        self.wait_log_until(&format!("{text:?}"), timeout, |log| log.contains(text));
    }

    /// Waits until the worker's log passes `done` (and it is still
    /// running); the log. `what` says what it waits for.
    fn wait_log_until(
        &mut self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let log = self.log();
            if done(&log) {
                return log;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("the worker exited ({status}):\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not log {what}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the worker.
    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL: no shutdown code runs.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM (graceful stop); its exit status.
    fn terminate(mut self, timeout: Duration) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the worker did not stop after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PyWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with tenant `a` and `pyworker.py` built and uploaded as
/// `pyworker`; the server, a CLI of tenant `a` and its key.
fn setup(db: &Db, port: u16, serve_args: &[&str]) -> (common::Server, Remote, String) {
    serving(db, port, serve_args, PYWORKER, "pyworker")
}

/// A server with tenant `a` and the Python `file` built and uploaded as
/// `name`; the server, a CLI of tenant `a` and its key.
fn serving(
    db: &Db,
    port: u16,
    serve_args: &[&str],
    file: &str,
    name: &str,
) -> (common::Server, Remote, String) {
    let key = db.tenant("a", &[]);
    let server = db.serve_api(port, serve_args);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&python_guest(file)), "--name", name]);
    (server, cli, key)
}

fn start(cli: &Remote, input: &str, queue: Option<&str>) -> String {
    let mut args = vec!["start", "pyworker", "pyworker", "--input", input];
    if let Some(queue) = queue {
        args.extend(["--worker-queue", queue]);
    }
    cli.ok(&args).trim().to_owned()
}

fn a_python_worker_gives_the_sandboxes_result(db: Db) {
    let port = free_port();
    let (_server, cli, key) = setup(&db, port, &[]);
    let input = r#"{"name": "ada", "n": 3}"#;
    let sandboxed = start(&cli, input, None);
    let sandboxed = cli.wait_ended(&sandboxed, LONG);
    assert_eq!(sandboxed["status"], "completed", "{sandboxed}");

    let worker = PyWorker::start(&db, port, &key, "q", "py-1");
    let id = start(&cli, input, Some("q"));
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", worker.log());
    assert_eq!(ended["result"], sandboxed["result"]);
    assert_eq!(
        ended["result"]["steps"]["work"],
        json!({"words": ["hello", "ada"], "n": 6, "attempt": 1})
    );
    let log = worker.log();
    let journal = cli.journal(&id);
    for step in ["greet", "work", "finish"] {
        assert!(
            log.contains(&format!(
                "running step {step} of execution {id} (attempt 1)"
            )),
            "the worker ran {step}:\n{log}"
        );
        let seq = step_call_seq(&journal, step, 0);
        assert_eq!(attempts(&journal, seq), 1, "{step}: {journal:?}");
        assert_eq!(results(&journal, seq).len(), 1, "{step}: {journal:?}");
    }
    let shown = cli.ok(&["workers"]);
    assert!(shown.contains("py-1") && shown.contains('q'), "{shown}");

    // SIGTERM: a graceful stop that unregisters the worker.
    let status = worker.terminate(Duration::from_secs(30));
    assert!(status.success(), "the worker exited with {status}");
    let shown = cli.ok(&["workers"]);
    assert!(!shown.contains("py-1"), "unregistered: {shown}");
}

/// A worker reaches a TLS server by an `https://` URL and a private CA,
/// and refuses to talk to it without that CA.
#[test]
fn the_python_client_sends_signals() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&common::guest("testkit")), "--name", "kit"]);
    let input = json!({ "name": "go", "count": 2 }).to_string();
    let id = cli
        .ok(&["start", "kit", "signal_wait", "--input", &input])
        .trim()
        .to_owned();
    let script = "import asyncio, json, sys\n\
        from cerebelum.client import Client\n\
        async def main():\n\
        \x20   c = Client(sys.argv[1], api_key=sys.argv[2])\n\
        \x20   a = await c.signal(sys.argv[3], 'go', {'n': 1}, signal_id='s1')\n\
        \x20   again = await c.signal(sys.argv[3], 'go', {'n': 1}, signal_id='s1')\n\
        \x20   b = await c.signal(sys.argv[3], 'go', [2])\n\
        \x20   print(json.dumps([a, again, b]))\n\
        asyncio.run(main())";
    let out = Command::new(python())
        .args(["-c", script, &common::url(port), &key, &id])
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        sent,
        json!([
            { "seq": 1, "created": true },
            { "seq": 1, "created": false },
            { "seq": 2, "created": true }
        ])
    );
    let done = cli.wait_ended(&id, LONG);
    assert_eq!(
        done["result"],
        json!({ "signals": [{ "n": 1 }, [2]] }),
        "{done}"
    );
}

#[test]
fn a_python_worker_serves_a_tls_server() {
    let db = Db::new();
    let dir = db.dir.path();
    let ca = common::ca::Ca::new(dir, "ca");
    let pair = ca.server(dir, "server");
    let port = free_port();
    let flags = ["--tls-cert", path(&pair.cert), "--tls-key", path(&pair.key)];
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &flags);
    let url = format!("https://127.0.0.1:{port}");
    let cli = Remote::at(&url, &key, &["--ca-cert", path(&ca.cert)]);
    cli.ok(&[
        "upload",
        path(&python_guest(PYWORKER)),
        "--name",
        "pyworker",
    ]);

    let mut stranger = PyWorker::at(PYWORKER, &db, &url, &key, "q", "py-no-ca", &[]);
    stranger.wait_log_until("a refused certificate", LONG, |log| {
        log.contains("cannot reach") || log.contains("CERTIFICATE_VERIFY_FAILED")
    });
    drop(stranger);

    let worker = PyWorker::at(
        PYWORKER,
        &db,
        &url,
        &key,
        "q",
        "py-tls",
        &["--ca-cert", path(&ca.cert)],
    );
    let id = start(&cli, r#"{"name": "ada", "n": 3}"#, Some("q"));
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", worker.log());
    assert!(
        worker
            .log()
            .contains(&format!("running step work of execution {id}"))
    );
}

/// `kill -9` of the worker while its step sleeps: no heartbeat comes, the
/// claim expires (1 s), the attempt fails and the step's retry policy
/// (`@step(retry=3)`) runs it again on a second worker.
fn kill9_of_a_python_worker_mid_step_retries_the_attempt_on_another_worker(db: Db) {
    let port = free_port();
    let (_server, cli, key) = setup(&db, port, &["--worker-heartbeat-ms", "1000"]);
    let mut first = PyWorker::start(&db, port, &key, "q", "py-1");
    let id = start(&cli, r#"{"name": "bo", "sleep_ms": 3000}"#, Some("q"));
    first.wait_log(
        &format!("running step work of execution {id} (attempt 1)"),
        LONG,
    );
    // The progress the step reported reaches `status` with a heartbeat.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = cli.ok(&["status", &id]);
        if shown.contains("step 'work' on worker 'py-1'") && shown.contains(" — 50% working") {
            break;
        }
        assert!(Instant::now() < deadline, "no progress shown:\n{shown}");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill9();

    let mut second = PyWorker::start(&db, port, &key, "q", "py-2");
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", second.log());
    assert_eq!(
        ended["result"]["steps"]["work"],
        json!({"words": ["hello", "bo"], "n": 2, "attempt": 2})
    );
    second.wait_log(
        &format!("running step work of execution {id} (attempt 2)"),
        LONG,
    );
    let journal = cli.journal(&id);
    let seq = step_call_seq(&journal, "work", 0);
    assert_eq!(attempts(&journal, seq), 2, "{journal:?}");
    assert_eq!(
        results(&journal, seq).len(),
        1,
        "one result for the call: {journal:?}"
    );
    let failed = entries(&journal, "attempt-failed");
    assert_eq!(failed.len(), 1, "{journal:?}");
    assert!(failed[0].to_string().contains("py-1"), "{}", failed[0]);
}

/// SIGSTOP of the worker while its step sleeps: its claim expires (no
/// heartbeat for 1 s), a second worker runs the attempt again and its
/// result is journaled; after SIGCONT the first worker's heartbeat or
/// completion is refused, and the journal keeps one result.
fn a_stopped_python_workers_late_outcome_is_refused(db: Db) {
    let port = free_port();
    let (_server, cli, key) = setup(&db, port, &["--worker-heartbeat-ms", "1000"]);
    let mut first = PyWorker::start(&db, port, &key, "q", "py-1");
    let id = start(&cli, r#"{"name": "cy", "sleep_ms": 2000}"#, Some("q"));
    first.wait_log(
        &format!("running step work of execution {id} (attempt 1)"),
        LONG,
    );
    first.signal("STOP");
    let second = PyWorker::start(&db, port, &key, "q", "py-2");
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", second.log());
    assert_eq!(ended["result"]["steps"]["work"]["attempt"], 2, "{ended}");
    first.signal("CONT");
    let refused = first.wait_log_until("a refusal", LONG, |log| {
        log.contains("the server no longer takes its outcome")
            || log.contains("the server refused its heartbeat")
    });
    assert!(refused.contains("is no longer current"), "{refused}");
    let journal = cli.journal(&id);
    let seq = step_call_seq(&journal, "work", 0);
    assert_eq!(results(&journal, seq).len(), 1, "{journal:?}");
    let served: Vec<&Value> = entries(&journal, "served")
        .into_iter()
        .filter(|e| e["ref_seq"] == seq)
        .map(|e| &e["payload"]["worker"])
        .collect();
    assert_eq!(served, vec![&json!("py-1"), &json!("py-2")], "{journal:?}");
    assert_eq!(cli.status(&id)["result"], ended["result"], "unchanged");
}

/// `await wf.execute(inputs, distributed=True, once=True)` in a Python
/// program: the file is built and uploaded, the workflow runs in the
/// server and its steps in that program; the output is local mode's.
#[test]
fn execute_distributed_gives_the_local_output() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    let script = "import asyncio, json, sys\n\
        sys.path.insert(0, sys.argv[1])\n\
        import pyworker\n\
        from datetime import datetime\n\
        from cerebelum import ExecutionError\n\
        async def main():\n\
        \x20   for distributed in (False, True):\n\
        \x20       try:\n\
        \x20           r, raised = await pyworker.pyworker.execute(json.loads(sys.argv[2]), distributed=distributed, once=True), None\n\
        \x20       except ExecutionError as e:\n\
        \x20           r, raised = e.result, [str(e), e.step_name, e.error]\n\
        \x20       took = datetime.fromisoformat(r.completed_at) - datetime.fromisoformat(r.started_at)\n\
        \x20       print(json.dumps({'id': r.execution_id, 'status': r.status, 'output': r.output,\n\
        \x20                         'steps': r.steps, 'error': r.error, 'raised': raised,\n\
        \x20                         'seconds': took.total_seconds()}))\n\
        asyncio.run(main())\n";
    let dir = root().join(PYWORKER);
    let dir = dir.parent().unwrap();
    for input in [
        r#"{"name": "cy", "n": 2}"#,
        r#"{"name": "cy", "fail": "no greeting today"}"#,
    ] {
        let out = Command::new(python())
            .args(["-c", script])
            .arg(dir)
            .arg(input)
            .env("CEREBELUM_SERVER", common::url(port))
            .env("CEREBELUM_API_KEY", &key)
            .env("CEREBELUM_CACHE_DIR", cache_dir())
            .output()
            .expect("running python");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{input}: {stderr}");
        let runs: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            // Local mode prints the steps' progress lines too.
            .filter(|l| !l.starts_with("  ["))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let (here, there) = (&runs[0], &runs[1]);
        for field in ["status", "output", "steps", "error", "raised"] {
            assert_eq!(here[field], there[field], "{input}: {field}\n{stderr}");
        }
        assert!(there["seconds"].as_f64().unwrap() >= 0.0, "{there}");
        // It really ran in the server, its steps on a queue of its own.
        let id = there["id"].as_str().unwrap();
        let status = cli.status(id);
        assert_eq!(status["status"], here["status"], "{status}");
        assert!(
            status["worker_queue"].as_str().unwrap().starts_with("py-"),
            "{status}"
        );
        if here["status"] == "completed" {
            assert_eq!(status["result"]["output"], here["output"]);
            assert_eq!(status["result"]["steps"], here["steps"]);
            assert_eq!(here["output"]["ok"]["summary"], "hello cy x4");
            assert_eq!(here["raised"], Value::Null);
        } else {
            assert_eq!(here["error"], "step `greet` failed: no greeting today");
            assert_eq!(
                here["raised"],
                json!([
                    "Execution failed at step 'greet': Step 'greet' returned error: no greeting today",
                    "greet",
                    "no greeting today"
                ])
            );
        }
        let journal = cli.journal(id);
        assert_eq!(
            entries(&journal, "attempt").len(),
            here["steps"].as_object().unwrap().len(),
            "one attempt per step: {journal:?}"
        );
    }
    // The same file and SDK: one package version, uploaded once.
    let packages = cli.ok(&["packages"]);
    assert!(packages.contains("pyworker"), "{packages}");
    assert_eq!(packages.matches("pyworker v").count(), 1, "{packages}");
}

/// `execute(distributed=True, once=True)` waits for the end on a watch
/// stream; when the tenant has none left (its `max streams` all open), it
/// looks at the execution now and then instead, and still returns the
/// result.
#[test]
fn execute_distributed_waits_without_a_watch_stream_left() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &["--max-streams", "1"]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    // The tenant's one stream: a watch of an execution that waits.
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let waiting = cli
        .ok(&["start", "kit", "approval", "--input", r#"{"key":"never"}"#])
        .trim()
        .to_owned();
    let mut watch = cli
        .command(&["watch", &waiting])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    cli.wait_text(&["status", &waiting], WAIT, |s| {
        s.contains("waiting for approval 'never'")
    });
    let script = "import asyncio, json, sys\n\
        sys.path.insert(0, sys.argv[1])\n\
        import pyworker\n\
        async def main():\n\
        \x20   r = await pyworker.pyworker.execute({'name': 'cy', 'n': 2}, distributed=True, once=True)\n\
        \x20   print(json.dumps({'id': r.execution_id, 'status': r.status, 'output': r.output}))\n\
        asyncio.run(main())\n";
    let dir = root().join(PYWORKER);
    let out = Command::new(python())
        .args(["-c", script])
        .arg(dir.parent().unwrap())
        .env("CEREBELUM_SERVER", common::url(port))
        .env("CEREBELUM_API_KEY", &key)
        .env("CEREBELUM_CACHE_DIR", cache_dir())
        .output()
        .expect("running python");
    let _ = watch.kill();
    let _ = watch.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"], "completed", "{run}\n{stderr}");
    assert_eq!(run["output"]["ok"]["summary"], "hello cy x4", "{run}");
    let status = cli.status(run["id"].as_str().unwrap());
    assert_eq!(status["status"], "completed", "{status}");
}

/// `pyplaced.py` places `probe` on queue `native` (`@step(worker=...)`):
/// started without a queue, the execution runs `greet` and `finish` in the
/// sandbox and `probe` (a subprocess: impossible in the sandbox) on a
/// Python worker; the output is the local mode's.
fn a_step_placed_on_a_worker_runs_natively_and_the_rest_in_the_sandbox(db: Db) {
    let port = free_port();
    let key = db.tenant("a", &[]);
    let package = python_guest(PYPLACED);
    // `run` serves no workers: it warns, and the call of the placed step
    // fails at once instead of waiting. (Before any server: on PostgreSQL
    // a server would take the execution over and wait for a worker.)
    let refused = db.fails(&[
        "run",
        path(&package),
        "pyplaced",
        "--input",
        r#"{"name": "cy"}"#,
    ]);
    assert!(
        refused.contains("warning: step 'probe' runs on worker queue 'native'"),
        "{refused}"
    );
    assert!(
        refused.contains("`cerebelum run` serves no workers"),
        "{refused}"
    );
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&package), "--name", "pyplaced"]);
    let input = r#"{"name": "cy"}"#;
    let id = cli.ok(&["start", "pyplaced", "pyplaced", "--input", input]);
    let id = id.trim();
    cli.wait_text(&["status", id], LONG, |s| {
        s.contains("waiting for a worker on queue 'native'")
    });
    let worker = PyWorker::serving(PYPLACED, &db, port, &key, "native", "py-native");
    let ended = cli.wait_ended(id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", worker.log());
    let local = run_locally(PYPLACED, "pyplaced", input);
    assert_eq!(ended["result"], local, "the local mode's output");
    assert_eq!(
        ended["result"]["steps"]["finish"]["summary"],
        "hello cy: 42"
    );
    let journal = cli.journal(id);
    let placed: Vec<Value> = entries(&journal, "attempt")
        .iter()
        .map(|a| json!([a["payload"]["step"], a["payload"]["queue"]]))
        .collect();
    assert_eq!(
        placed,
        vec![
            json!(["greet", null]),
            json!(["probe", "native"]),
            json!(["finish", null])
        ]
    );
    let served = entries(&journal, "served");
    assert_eq!(served.len(), 1, "{served:?}");
    assert_eq!(served[0]["payload"]["worker"], "py-native");
    let log = worker.log();
    assert!(log.contains("running step probe of execution"), "{log}");
    for sandboxed in ["running step greet", "running step finish"] {
        assert!(!log.contains(sandboxed), "{log}");
    }
}

/// The output of `await WORKFLOW.execute(INPUT)` in local mode.
fn run_locally(file: &str, workflow: &str, input: &str) -> Value {
    let file = root().join(file);
    let script = format!(
        "import asyncio, json, sys\n\
         sys.path.insert(0, sys.argv[1])\n\
         import {workflow} as m\n\
         r = asyncio.run(m.{workflow}.execute(json.loads(sys.argv[2])))\n\
         print(json.dumps({{'output': r.output, 'steps': r.steps}}))\n"
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .arg(file.parent().unwrap())
        .arg(input)
        .output()
        .expect("running python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The one-shot distributed mode across `kill -9` of the server: while
/// step `work` sleeps in the worker (the `execute(distributed=True,
/// once=True)` process itself), the server is killed and restarted; the
/// worker's heartbeats and completion wait for it, the execution resumes
/// from its journal, and `execute` returns the local mode's output with
/// one attempt and one result per step.
#[test]
fn execute_distributed_survives_kill9_of_the_server_mid_step() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let serve_args = ["--lease-ms", "1000"];
    let server = db.serve_api(port, &serve_args);
    let cli = Remote::new(port, &key);
    let input = r#"{"name": "cy", "n": 3, "sleep_ms": 4000}"#;
    let script = "import asyncio, json, logging, sys\n\
        logging.basicConfig(level=logging.INFO)\n\
        sys.path.insert(0, sys.argv[1])\n\
        import pyworker\n\
        r = asyncio.run(pyworker.pyworker.execute(json.loads(sys.argv[2]), distributed=True, once=True))\n\
        print(json.dumps({'id': r.execution_id, 'status': r.status, 'steps': r.steps}))\n";
    let file = root().join(PYWORKER);
    let log = db.dir.path().join("distributed.log");
    let child = Command::new(python())
        .args(["-c", script])
        .arg(file.parent().unwrap())
        .arg(input)
        .env("CEREBELUM_SERVER", common::url(port))
        .env("CEREBELUM_API_KEY", &key)
        .env("CEREBELUM_CACHE_DIR", cache_dir())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("running python");
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + LONG;
    while !said().contains("running step work of execution") {
        assert!(Instant::now() < deadline, "work never started:\n{}", said());
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let _server = db.serve_api(port, &serve_args);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", said());
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"], "completed", "{run}\n{}", said());
    assert_eq!(run["steps"]["finish"]["summary"], "hello cy x6", "{run}");
    assert_eq!(run["steps"]["work"]["attempt"], 1, "{run}");
    let journal = cli.journal(run["id"].as_str().unwrap());
    for step in ["greet", "work", "finish"] {
        let seq = step_call_seq(&journal, step, 0);
        assert_eq!(attempts(&journal, seq), 1, "{step}: {journal:?}");
        assert_eq!(results(&journal, seq).len(), 1, "{step}: {journal:?}");
    }
}

/// A Python program's output, stdout and stderr, once it succeeded.
fn run_python(program: &mut Command) -> (String, String) {
    let out = program.output().expect("running python");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// The id in the first line of `text` that contains `before` (an `ex_…`
/// word after it).
fn execution_id_after(text: &str, before: &str) -> Option<String> {
    let line = text.lines().find(|l| l.contains(before))?;
    let rest = &line[line.find(before)? + before.len()..];
    rest.split_whitespace()
        .find(|w| w.starts_with("ex_"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_alphanumeric())
                .to_owned()
        })
}

/// `python FILE` (in `dir`) for the server at `port` and tenant key `key`,
/// as a user runs a script in the original's distributed style: its
/// stdout in `NAME.out` and its log (stderr) in `NAME.err`.
fn script(dir: &std::path::Path, file: &str, name: &str, port: u16, key: &str) -> PyWorker {
    PyWorker {
        child: Command::new(python())
            .arg(dir.join(file))
            .current_dir(dir)
            .env("CEREBELUM_SERVER", common::url(port))
            .env("CEREBELUM_API_KEY", key)
            .env("CEREBELUM_CACHE_DIR", cache_dir())
            .env("PYTHONUNBUFFERED", "1")
            .stdout(std::fs::File::create(dir.join(format!("{name}.out"))).unwrap())
            .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("running {file}: {e}")),
        log: dir.join(format!("{name}.err")),
    }
}

/// The original SDK's distributed files, in its style
/// (`examples/python/distributed`), against `cerebelum serve`:
/// `hello_server.py`, whose `main()` awaits `execute(distributed=True)`,
/// uploads its file, runs its initial execution and **keeps serving**;
/// `hello_execute.py` starts `hello_workflow` by name with
/// `DistributedExecutor(core_url="localhost:PORT")` (the key from
/// `CEREBELUM_API_KEY`), prints the id and status at once and `close()`s;
/// the server runs that execution's steps. `ExecutionClient` reads it back
/// with the original's types; SIGTERM stops the server.
#[test]
fn the_originals_distributed_server_and_execute_files_run_unchanged() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    let examples = root().join("examples/python/distributed");
    let dir = db.dir.path().join("distributed");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        examples.join("hello_server.py"),
        dir.join("hello_server.py"),
    )
    .unwrap();
    // The execute file names its server as the original's did, a bare
    // `localhost:PORT`: this test's port.
    let execute = std::fs::read_to_string(examples.join("hello_execute.py")).unwrap();
    assert!(execute.contains(r#"core_url="localhost:7433""#));
    let execute = execute.replace("localhost:7433", &format!("localhost:{port}"));
    std::fs::write(dir.join("hello_execute.py"), execute).unwrap();

    let hello_server = |name: &str| script(&dir, "hello_server.py", name, port, &key);
    let out = dir.join("server.out");
    let mut server_py = hello_server("server");
    let said = |server_py: &PyWorker| {
        let stdout = std::fs::read_to_string(&out).unwrap_or_default();
        format!("{stdout}\n{}", server_py.log())
    };
    let log = server_py.wait_log_until("its initial execution", LONG, |log| {
        log.contains("serves queue") && log.contains("started execution")
    });
    let initial = execution_id_after(&log, "started execution").expect(&log);
    let ended = cli.wait_ended(&initial, LONG);
    assert_eq!(
        ended["status"],
        "completed",
        "{ended}\n{}",
        said(&server_py)
    );
    assert_eq!(
        ended["result"]["output"],
        json!({"ok": {"result": "HELLO, INITIAL!"}})
    );
    assert_eq!(ended["worker_queue"], "py-hello_server-v1", "{ended}");

    // `python hello_execute.py hello_workflow NAME`: what it printed.
    let execute_by_name = |name: &str| {
        run_python(
            Command::new(python())
                .arg(dir.join("hello_execute.py"))
                .args(["hello_workflow", name])
                .current_dir(&dir)
                .env_remove("CEREBELUM_SERVER")
                .env("CEREBELUM_API_KEY", &key),
        )
        .0
    };
    // Started by name from another process that does not define it.
    let printed = execute_by_name("Alice");
    assert!(
        printed.contains("Workflow submitted successfully"),
        "{printed}"
    );
    let id = execution_id_after(&printed, "Execution ID:").expect(&printed);
    assert!(
        printed.contains("Status: pending") || printed.contains("Status: running"),
        "it returned at once: {printed}"
    );
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(
        ended["status"],
        "completed",
        "{ended}\n{}",
        said(&server_py)
    );
    assert_eq!(
        ended["result"]["output"],
        json!({"ok": {"result": "HELLO, ALICE!"}})
    );
    let journal = cli.journal(&id);
    let served = entries(&journal, "served");
    assert_eq!(served.len(), 2, "{served:?}");
    let worker = served[0]["payload"]["worker"].as_str().unwrap().to_owned();
    assert!(worker.starts_with("python-hello_workflow-"), "{worker}");
    let shown = said(&server_py);
    assert!(shown.contains("👋 [greet] Hello, Alice!"), "{shown}");
    assert!(
        shown.contains("🔠 [make_uppercase] HELLO, ALICE!"),
        "{shown}"
    );
    assert!(
        server_py.child.try_wait().unwrap().is_none(),
        "execute(distributed=True) returned:\n{shown}"
    );

    // A name no worker server registered: said, with the names there are.
    let refused = Command::new(python())
        .arg(dir.join("hello_execute.py"))
        .arg("goodbye_workflow")
        .env("CEREBELUM_API_KEY", &key)
        .output()
        .unwrap();
    let refusal = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        refusal.contains("no workflow named 'goodbye_workflow'")
            && refusal.contains("(they have: hello_workflow)"),
        "{refusal}"
    );

    // The original's ExecutionClient and its types.
    let script = "import asyncio, json, sys\n\
        from cerebelum import ExecutionClient, ExecutionState\n\
        async def main():\n\
        \x20   client = ExecutionClient(core_url=sys.argv[1])\n\
        \x20   s = await client.get_execution_status(sys.argv[2])\n\
        \x20   listed, total, more = await client.list_executions(status=ExecutionState.COMPLETED, limit=1)\n\
        \x20   running, _, _ = await client.list_executions(status=ExecutionState.RUNNING)\n\
        \x20   print(json.dumps({'status': s.status.value, 'workflow': s.workflow_name,\n\
        \x20       'steps': [[t.step_name, t.step_index, t.status] for t in s.completed_steps],\n\
        \x20       'outputs': s.step_outputs, 'inputs': s.inputs, 'index': s.current_step_index,\n\
        \x20       'total': s.total_steps, 'percent': s.progress_percentage, 'error': s.error,\n\
        \x20       'timed': s.started_at <= s.completed_at and s.elapsed_seconds >= 0,\n\
        \x20       'listed': [e.execution_id for e in listed], 'total_count': total, 'more': more,\n\
        \x20       'running': len(running)}))\n\
        \x20   client.close()\n\
        asyncio.run(main())\n";
    let (read, _) = run_python(
        Command::new(python())
            .args(["-c", script, &format!("localhost:{port}"), &id])
            .env("CEREBELUM_API_KEY", &key),
    );
    let read: Value = serde_json::from_str(&read).unwrap();
    assert_eq!(
        read,
        json!({
            "status": "EXECUTION_COMPLETED", "workflow": "hello_workflow",
            "steps": [["greet", 0, "completed"], ["make_uppercase", 1, "completed"]],
            "outputs": {"greet": {"message": "Hello, Alice!"},
                        "make_uppercase": {"result": "HELLO, ALICE!"}},
            "inputs": {"name": "Alice"}, "index": 2, "total": 2, "percent": 100.0,
            "error": null, "timed": true,
            "listed": [id], "total_count": 2, "more": true, "running": 0
        })
    );

    // SIGTERM stops it gracefully (running steps may finish, the rest are
    // handed back), and the worker is unregistered. (Ctrl-C cancels it the
    // same way, but a test's child may inherit an ignored SIGINT.)
    server_py.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server_py.child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            panic!("SIGTERM did not stop it:\n{}", said(&server_py));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let shown = said(&server_py);
    assert!(status.success(), "{status}:\n{shown}");
    assert!(
        shown.contains(&format!("worker {worker} stopped")),
        "{shown}"
    );
    let workers = cli.ok(&["workers"]);
    assert!(!workers.contains(&worker), "unregistered: {workers}");

    // Started while no worker server runs, it waits on the queue; the
    // next run of the same file serves the same queue, says what it
    // picked up, and finishes it (issue 33, 5).
    let printed = execute_by_name("Bob");
    let left = execution_id_after(&printed, "Execution ID:").expect(&printed);
    let mut again = hello_server("again");
    let log = again.wait_log_until("what it picked up", LONG, |log| {
        log.contains("an earlier run left open")
    });
    assert!(
        log.contains(&format!(
            "resuming 1 execution(s) an earlier run left open on py-hello_server-v1: {left}"
        )),
        "{log}"
    );
    let ended = cli.wait_ended(&left, LONG);
    assert_eq!(
        ended["result"]["output"],
        json!({"ok": {"result": "HELLO, BOB!"}}),
        "{ended}\n{}",
        again.log()
    );
}

/// A server serving `pysleeper.py` (uploaded as `sleeper`) with
/// `serve_args`; the server, the CLI, the key, and where the step's marks
/// go.
fn sleeper(db: &Db, port: u16, serve_args: &[&str]) -> (common::Server, Remote, String, PathBuf) {
    let (server, cli, key) = serving(db, port, serve_args, PYSLEEPER, "sleeper");
    let marks = db.dir.path().join("marks.txt");
    (server, cli, key, marks)
}

fn start_sleeper(cli: &Remote, input: Value) -> String {
    start_on_q(cli, "sleeper", "pysleeper", input)
}

/// Starts `workflow` of package `package` with its steps on queue `q`.
fn start_on_q(cli: &Remote, package: &str, workflow: &str, input: Value) -> String {
    let input = input.to_string();
    let args = [
        "start",
        package,
        workflow,
        "--input",
        &input,
        "--worker-queue",
        "q",
    ];
    cli.ok(&args).trim().to_owned()
}

fn marks(file: &std::path::Path) -> String {
    std::fs::read_to_string(file).unwrap_or_default()
}

/// Issue 33: a worker step's sleep longer than `--worker-hold-ms` hands
/// the task back (the same attempt, not claimable until the sleep ends);
/// the worker is killed meanwhile, another one takes the task when the
/// sleep ends, replays the step's history (the mark made before the sleep
/// is not made again) and completes it.
fn a_worker_steps_long_sleep_is_handed_back_and_outlives_its_worker(db: Db) {
    let port = free_port();
    let (_server, cli, key, file) = sleeper(&db, port, &["--worker-hold-ms", "300"]);
    let mut first = PyWorker::serving(PYSLEEPER, &db, port, &key, "q", "py-1");
    let id = start_sleeper(&cli, json!({"marks": file, "sleep_ms": 2500}));
    first.wait_log(
        &format!("step nap of execution {id} (attempt 1): sleeps until"),
        LONG,
    );
    let first_log = first.log();
    first.kill9();
    assert_eq!(marks(&file), "before\n");
    let status = cli.status(&id);
    assert_ne!(status["status"], "failed", "{status}");

    let second = PyWorker::serving(PYSLEEPER, &db, port, &key, "q", "py-2");
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", second.log());
    assert_eq!(
        ended["result"]["steps"]["nap"],
        json!({"before": "before", "after": "after", "attempt": 1}),
        "{ended}"
    );
    assert_eq!(marks(&file), "before\nafter\n", "each mark made once");
    let log = second.log();
    assert!(
        log.contains(&format!("running step nap of execution {id} (attempt 1)")),
        "{log}"
    );
    let journal = cli.journal(&id);
    let seq = step_call_seq(&journal, "nap", 0);
    assert_eq!(attempts(&journal, seq), 1, "one attempt: {journal:?}");
    // What the step printed, journaled once as the attempt's output, in
    // order; the run after the sleep printed only its own line.
    let printed: Vec<(&Value, &Value, &Value)> = journal
        .iter()
        .filter(|e| e["kind"] == "output")
        .map(|e| {
            (
                &e["invocation"],
                &e["payload"]["stream"],
                &e["payload"]["text"],
            )
        })
        .collect();
    let invocation = json!(format!("{seq}.1"));
    assert_eq!(
        printed,
        [
            (&invocation, &json!("stderr"), &json!("nap made before\n")),
            (&invocation, &json!("stderr"), &json!("nap made after\n")),
        ],
        "{journal:?}"
    );
    assert!(first_log.contains("nap made before"), "{first_log}");
    assert!(!log.contains("nap made before"), "printed again: {log}");
    assert!(log.contains("nap made after"), "{log}");
    let watched = cli.command(&["watch", &id]).output().unwrap();
    let watched = String::from_utf8_lossy(&watched.stderr);
    assert!(watched.contains("[nap] nap made after"), "{watched}");
}

/// Issue 33: a worker step's clock reads and random numbers are
/// journaled: handed back during a sleep and run again by another worker
/// after the first was killed, the step reads the time and the random
/// number its first run read.
#[test]
fn a_worker_step_run_again_reads_the_clock_and_random_numbers_of_its_first_run() {
    let db = Db::new();
    let port = free_port();
    let (_server, cli, key, file) = sleeper(&db, port, &["--worker-hold-ms", "300"]);
    let mut first = PyWorker::serving(PYSLEEPER, &db, port, &key, "q", "py-1");
    let id = start_on_q(
        &cli,
        "sleeper",
        "pystamp",
        json!({"marks": file, "sleep_ms": 2000}),
    );
    first.wait_log(
        &format!("step stamp of execution {id} (attempt 1): sleeps until"),
        LONG,
    );
    first.kill9();
    let second = PyWorker::serving(PYSLEEPER, &db, port, &key, "q", "py-2");
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", second.log());
    let got = &ended["result"]["steps"]["stamp"];
    let reads = marks(&file);
    let lines: Vec<&str> = reads.lines().collect();
    assert_eq!(lines.len(), 2, "one line per run: {reads}");
    assert_eq!(lines[0], lines[1], "the second run read what the first did");
    let (t, r) = (got["t"].as_f64().unwrap(), got["r"].as_f64().unwrap());
    let read: Vec<f64> = lines[0]
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(read, [t, r], "the result has what the runs read: {reads}");
    let after = got["after"].as_f64().unwrap();
    assert!(after >= t + 2.0, "the clock after the sleep is live: {got}");
}

/// Issue 33: `kill -9` of a worker whose step sleeps in the worker (a
/// short sleep, held): the claim expires, the step's next attempt inherits
/// its history, so the mark made before the sleep is not made again, and
/// the sleep is not slept from the start.
#[test]
fn kill9_of_a_worker_mid_sleep_resumes_the_step_after_its_recorded_calls() {
    let db = Db::new();
    let port = free_port();
    let (_server, cli, key, file) = sleeper(&db, port, &["--worker-heartbeat-ms", "1000"]);
    let mut first = PyWorker::serving(PYSLEEPER, &db, port, &key, "q", "py-1");
    let id = start_sleeper(&cli, json!({"marks": file, "sleep_ms": 1500}));
    first.wait_log(
        &format!("running step nap of execution {id} (attempt 1)"),
        LONG,
    );
    // Printed once the mark's call is recorded: a kill between the mark
    // and its record (the file alone shows the mark) makes it again, as
    // any side effect whose record was lost.
    first.wait_log("nap made before", LONG);
    first.kill9();
    assert_eq!(marks(&file), "before\n");

    let second = PyWorker::serving(PYSLEEPER, &db, port, &key, "q", "py-2");
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", second.log());
    assert_eq!(ended["result"]["steps"]["nap"]["attempt"], 2, "{ended}");
    assert_eq!(marks(&file), "before\nafter\n", "each mark made once");
}

/// Issue 33: a worker step that, run again, makes another call than its
/// history recorded at the same position fails with `nondeterminism`, as
/// in the sandbox.
#[test]
fn a_worker_step_that_diverges_from_its_history_fails_with_nondeterminism() {
    let db = Db::new();
    let port = free_port();
    let (_server, cli, key, file) = sleeper(&db, port, &["--worker-hold-ms", "300"]);
    let flip = db.dir.path().join("flip");
    let mut worker = PyWorker::serving(PYSLEEPER, &db, port, &key, "q", "py-1");
    let input = json!({"marks": file, "sleep_ms": 1500, "flip": flip});
    let id = start_sleeper(&cli, input);
    worker.wait_log(
        &format!("step nap of execution {id} (attempt 1): sleeps until"),
        LONG,
    );
    std::fs::write(&flip, "").unwrap();
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "failed", "{ended}\n{}", worker.log());
    let error = ended["error"].to_string();
    assert!(
        error.contains("made a different call than its history recorded"),
        "{error}"
    );
    // The step's own result has the sandbox's error kind, and was not
    // retried (a fresh attempt would mark "before" again).
    let journal = cli.journal(&id);
    let seq = step_call_seq(&journal, "nap", 0);
    let result = results(&journal, seq);
    assert_eq!(result.len(), 1, "{journal:?}");
    assert!(
        result[0].to_string().contains("nondeterminism"),
        "{}",
        result[0]
    );
    assert_eq!(attempts(&journal, seq), 1, "{journal:?}");
    assert_eq!(marks(&file), "before\n");
}

/// Issue 33 (5): the original's resurrection test, in its style. A
/// distributed script (`examples/python/distributed/resurrection.py`) is
/// killed with SIGKILL while its worker step sleeps 10 s; run again, it
/// serves the same queue, takes the task when the sleep ends and finishes
/// the step: `prepare` and the part of `long_task` before the sleep do
/// not run again.
#[test]
fn a_distributed_script_killed_mid_sleep_finishes_its_execution_when_run_again() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    let dir = db.dir.path().join("resurrection");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        root().join("examples/python/distributed/resurrection.py"),
        dir.join("resurrection.py"),
    )
    .unwrap();
    let mut first = script(&dir, "resurrection.py", "first", port, &key);
    let log = first.wait_log_until("the sleep handed back", LONG, |log| {
        log.contains("started execution") && log.contains("handed back until then")
    });
    let id = execution_id_after(&log, "started execution").expect(&log);
    first.kill9();
    let printed = |name: &str| std::fs::read_to_string(dir.join(format!("{name}.out"))).unwrap();
    assert_eq!(
        printed("first"),
        format!("[{id}] preparing phoenix\n[{id}] long task: sleeping 10 s\n")
    );

    let mut second = script(&dir, "resurrection.py", "second", port, &key);
    second.wait_log(
        &format!("an earlier run left open on py-resurrection-v1: {id}"),
        LONG,
    );
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", second.log());
    assert_eq!(
        ended["result"]["output"],
        json!({"ok": {"done": "phoenix"}})
    );
    // Of the first execution, the second run did only what follows the
    // sleep (it also runs an execution of its own).
    let both = printed("first") + &printed("second");
    for line in [
        "preparing phoenix",
        "long task: sleeping 10 s",
        "long task: awake",
    ] {
        let line = format!("[{id}] {line}");
        assert_eq!(both.matches(&line).count(), 1, "{line:?} once:\n{both}");
    }
    let journal = cli.journal(&id);
    let seq = step_call_seq(&journal, "long_task", 0);
    assert_eq!(
        attempts(&journal, seq),
        1,
        "handed back, not retried: {journal:?}"
    );
}

/// Issue 33: a worker step's hour-long sleep, on a server whose clock the
/// test drives ([`TestClock`]): the task is handed back, the worker's one
/// slot serves another execution meanwhile, and when the clock is moved
/// past the hour a worker takes the step again, replays it (the mark made
/// before the sleep is not made again) and completes it — its wait judged
/// by the server's clock, not the worker's.
#[test]
fn a_worker_steps_hour_long_sleep_frees_the_workers_slot_and_ends_on_the_servers_clock() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let driven = Driven::serve(&db, port);
    let cli = Remote::new(port, &key);
    cli.ok(&[
        "upload",
        path(&python_guest(PYSLEEPER)),
        "--name",
        "sleeper",
    ]);
    let file = db.dir.path().join("marks.txt");
    let mut worker = PyWorker::serving(PYSLEEPER, &db, port, &key, "q", "py-1");
    let asleep = start_sleeper(&cli, json!({"marks": file, "sleep_ms": 3_600_000}));
    worker.wait_log(
        &format!("step nap of execution {asleep} (attempt 1): sleeps until"),
        LONG,
    );
    let other = db.dir.path().join("other.txt");
    let quick = start_sleeper(&cli, json!({"marks": other, "sleep_ms": 0}));
    let ended = cli.wait_ended(&quick, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", worker.log());
    assert_eq!(marks(&other), "before\nafter\n");
    let status = cli.status(&asleep);
    assert!(
        status["status"] == "waiting" || status["status"] == "running",
        "{status}"
    );
    let shown = cli.ok(&["status", &asleep]);
    assert!(
        shown.contains("step 'nap' (worker queue 'q'), asleep until"),
        "{shown}"
    );
    assert_eq!(marks(&file), "before\n");

    driven.clock.advance(Duration::from_secs(3600));
    let ended = cli.wait_ended(&asleep, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", worker.log());
    assert_eq!(marks(&file), "before\nafter\n", "each mark made once");
    let journal = cli.journal(&asleep);
    let seq = step_call_seq(&journal, "nap", 0);
    assert_eq!(attempts(&journal, seq), 1, "one attempt: {journal:?}");
}

/// `cerebelum serve`'s parts (the engine serving workers, the gRPC API)
/// in this process, on a [`TestClock`]: a real server whose time the test
/// moves. Stopped when dropped.
struct Driven {
    clock: TestClock,
    stop: tokio::sync::watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Driven {
    fn serve(db: &Db, port: u16) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let clock = TestClock::at_system_time();
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let until = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let engine = runtime.block_on(async {
            let store = store::open(&db.url, Synchronous::Normal).await.unwrap();
            let mut config = EngineConfig::new(cache_dir());
            config.tick = Duration::from_millis(10);
            config.serves_workers = true;
            Engine::new(store, config, Arc::new(clock.clone())).unwrap()
        });
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        let api = Api::new(engine.clone());
        runtime.spawn(server::serve(
            api,
            listener,
            None,
            ServerSettings::default(),
            until(stopped.clone()),
        ));
        runtime.spawn(async move { engine.serve(until(stopped)).await });
        Self {
            clock,
            stop,
            runtime: Some(runtime),
        }
    }
}

impl Drop for Driven {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// Issue 33: `kill -9` of the server while a worker step's sleep is
/// handed back: after the restart the task is still due at the same time,
/// the worker (reconnecting) takes it then, and nothing is lost or done
/// twice.
#[test]
fn kill9_of_the_server_during_a_worker_steps_sleep_loses_nothing() {
    let db = Db::new();
    let port = free_port();
    let serve_args = ["--worker-hold-ms", "300"];
    let (server, cli, key, file) = sleeper(&db, port, &serve_args);
    let mut worker = PyWorker::serving(PYSLEEPER, &db, port, &key, "q", "py-1");
    let id = start_sleeper(&cli, json!({"marks": file, "sleep_ms": 2500}));
    worker.wait_log(
        &format!("step nap of execution {id} (attempt 1): sleeps until"),
        LONG,
    );
    server.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let _server = db.serve_api(port, &serve_args);
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", worker.log());
    assert_eq!(ended["result"]["steps"]["nap"]["attempt"], 1, "{ended}");
    assert_eq!(marks(&file), "before\nafter\n", "each mark made once");
    let journal = cli.journal(&id);
    let seq = step_call_seq(&journal, "nap", 0);
    assert_eq!(attempts(&journal, seq), 1, "{journal:?}");
    assert_eq!(results(&journal, seq).len(), 1, "{journal:?}");
}

/// Issue 33: `wait_for_approval` inside a worker step is durable. The
/// server opens the approval and the task is handed back; the approval is
/// given while no worker runs; a worker started later takes the task and
/// the step goes on after the approval ("before" is not marked again). A
/// rejection reaches the step as `ApprovalRejectedError`.
fn an_approval_inside_a_worker_step_is_decided_while_no_worker_runs(db: Db) {
    let port = free_port();
    let (_server, cli, key) = serving(&db, port, &[], PYAPPROVE, "approve");
    let file = db.dir.path().join("marks.txt");
    let start = |input: Value| start_on_q(&cli, "approve", "pyapprove", input);
    let mut first = PyWorker::serving(PYAPPROVE, &db, port, &key, "q", "py-1");
    let id = start(json!({"marks": file, "version": "1.2"}));
    first.wait_log(
        &format!("step gate of execution {id} (attempt 1): waits for approval 'ship'"),
        LONG,
    );
    first.kill9();
    let shown = cli.ok(&["status", &id]);
    assert!(
        shown.contains("approval 'ship' in step 'gate' (worker queue 'q')"),
        "{shown}"
    );
    cli.ok(&["approve", &id, "ship", "--payload", r#"{"by":"ada"}"#]);
    assert_eq!(marks(&file), "before\n");

    let mut second = PyWorker::serving(PYAPPROVE, &db, port, &key, "q", "py-2");
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", second.log());
    assert_eq!(
        ended["result"]["steps"]["gate"],
        json!({"decision": {"by": "ada"}}),
        "{ended}"
    );
    assert_eq!(marks(&file), "before\nafter\n", "each mark made once");

    // Rejected while a worker runs.
    let other = db.dir.path().join("other.txt");
    let rejected = start(json!({"marks": other, "version": "1.3"}));
    second.wait_log(
        &format!("step gate of execution {rejected} (attempt 1): waits for approval 'ship'"),
        LONG,
    );
    cli.ok(&["reject", &rejected, "ship", "--reason", "not today"]);
    let ended = cli.wait_ended(&rejected, LONG);
    assert_eq!(ended["status"], "failed", "{ended}\n{}", second.log());
    assert!(
        ended["error"]
            .to_string()
            .contains("approval rejected: not today"),
        "{ended}"
    );
    assert_eq!(marks(&other), "before\n");
}

/// Issue 33: `wait_for_signal` inside a worker step is durable. The task
/// is handed back until the signal comes; it is sent while no worker runs,
/// and a worker started later takes the task and gives the step its
/// payload ("before" is not marked again). A signal sent before the step
/// waits is buffered and taken at once.
fn a_signal_awaited_inside_a_worker_step_arrives_while_no_worker_runs(db: Db) {
    let port = free_port();
    let (_server, cli, key) = serving(&db, port, &[], PYAPPROVE, "approve");
    let start = |input: Value| start_on_q(&cli, "approve", "pysignal", input);
    let file = db.dir.path().join("marks.txt");
    let mut first = PyWorker::serving(PYAPPROVE, &db, port, &key, "q", "py-1");
    let id = start(json!({"marks": file}));
    first.wait_log(
        &format!("step listen of execution {id} (attempt 1): waits for signal 'go'"),
        LONG,
    );
    first.kill9();
    let shown = cli.ok(&["status", &id]);
    assert!(
        shown.contains("signal 'go' in step 'listen' (worker queue 'q')"),
        "{shown}"
    );
    cli.ok(&["signal", &id, "go", "--payload", r#"{"n":7}"#]);
    let second = PyWorker::serving(PYAPPROVE, &db, port, &key, "q", "py-2");
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", second.log());
    assert_eq!(ended["result"]["steps"]["listen"], json!({"got": {"n": 7}}));
    assert_eq!(marks(&file), "before\nafter\n", "each mark made once");

    // Sent before the step waits: buffered, then taken.
    let early = db.dir.path().join("early.txt");
    let id = start(json!({"marks": early}));
    cli.ok(&["signal", &id, "go", "--payload", "8"]);
    let ended = cli.wait_ended(&id, LONG);
    assert_eq!(ended["status"], "completed", "{ended}\n{}", second.log());
    assert_eq!(ended["result"]["steps"]["listen"], json!({"got": 8}));
    assert_eq!(marks(&early), "before\nafter\n");
}

/// `ExecutionClient.run`: a Python program runs a workflow of an uploaded
/// package in the server's sandbox and gets its result on one
/// `RunExecution` call: a Python package's output and steps, a Rust
/// package's result as it is. The same idempotency key gives the same
/// execution (one stored, not two); a failed execution raises
/// `ExecutionError`, as in local mode; a missing workflow or package is a
/// `ServerError` that names it, and nothing is stored for it.
#[test]
fn a_python_program_runs_an_uploaded_workflow_and_gets_its_result() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let _server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&[
        "upload",
        path(&python_guest("tests/guests/python/pybench.py")),
        "--name",
        "pybench",
    ]);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let script = "import asyncio, json, sys\n\
        from cerebelum import ExecutionClient, ExecutionError\n\
        from cerebelum.client import ServerError\n\
        async def main():\n\
        \x20   client = ExecutionClient(core_url=sys.argv[1])\n\
        \x20   py = await client.run('pybench', 'three')\n\
        \x20   a = await client.run('kit', 'many_steps', {'n': 3}, idempotency_key='k1')\n\
        \x20   b = await client.run('kit', 'many_steps', {'n': 3}, idempotency_key='k1')\n\
        \x20   try:\n\
        \x20       await client.run('kit', 'retry_me', {'until_ms': 9000000000000000}, version=1)\n\
        \x20       failed = None\n\
        \x20   except ExecutionError as e:\n\
        \x20       failed = [e.result.status, e.result.execution_id.startswith('ex_'), str(e)]\n\
        \x20   missing = []\n\
        \x20   for package, workflow in (('kit', 'no_such_workflow'), ('no_such_package', 'x')):\n\
        \x20       try:\n\
        \x20           await client.run(package, workflow)\n\
        \x20       except ServerError as e:\n\
        \x20           missing.append([e.code, workflow in str(e)\n\
        \x20                           if package == 'kit' else package in str(e)])\n\
        \x20   print(json.dumps({'py': [py.status, sorted(py.steps), py.output is not None],\n\
        \x20       'kit': [a.status, a.output, a.steps], 'same': a.execution_id == b.execution_id,\n\
        \x20       'failed': failed, 'missing': missing}))\n\
        \x20   await client.close()\n\
        asyncio.run(main())\n";
    let (out, _) = run_python(
        Command::new(python())
            .args(["-c", script, &format!("localhost:{port}")])
            .env("CEREBELUM_API_KEY", &key),
    );
    let out: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let failed = &out["failed"];
    assert_eq!(failed[0], "failed", "{out}");
    assert_eq!(failed[1], true, "{out}");
    assert!(
        failed[2].as_str().is_some_and(|m| m.contains("not yet")),
        "the ExecutionError says why: {out}"
    );
    assert_eq!(
        out,
        json!({
            "py": ["completed", ["noop", "noop_0", "noop_1"], true],
            "kit": ["completed", 3, {}],
            "same": true,
            "failed": failed.clone(),
            "missing": [["INVALID_ARGUMENT", true], ["NOT_FOUND", true]],
        })
    );
    // Two runs with one key: one execution of many_steps, one of each other.
    let listed: Value = serde_json::from_str(&cli.ok(&["list", "--json"])).unwrap();
    let workflows: Vec<&str> = listed
        .as_array()
        .expect("list --json gives an array")
        .iter()
        .filter_map(|e| e["workflow"].as_str())
        .collect();
    assert_eq!(
        workflows.iter().filter(|w| **w == "many_steps").count(),
        1,
        "{listed}"
    );
    assert_eq!(workflows.len(), 3, "{listed}");
}

/// `ExecutionClient.run` across a `kill -9` of the server: the call's
/// stream breaks after the start, the client waits on (it says so), and
/// the execution, resumed by the restarted server, ends with its result
/// in the same call. One execution: nothing is started twice.
#[test]
fn a_python_run_waits_for_its_result_across_a_server_kill9() {
    let db = Db::new();
    let port = free_port();
    let key = db.tenant("a", &[]);
    let server = db.serve_api(port, &[]);
    let cli = Remote::new(port, &key);
    cli.ok(&["upload", path(&guest("testkit")), "--name", "kit"]);
    let script = "import asyncio, json, sys\n\
        from cerebelum import ExecutionClient\n\
        async def main():\n\
        \x20   client = ExecutionClient(core_url=sys.argv[1])\n\
        \x20   r = await asyncio.wait_for(\n\
        \x20       client.run('kit', 'naps', {'n': 1, 'sleep_ms': 3000}), 120)\n\
        \x20   print(json.dumps([r.status, r.output, r.execution_id]))\n\
        asyncio.run(main())\n";
    let run = Command::new(python())
        .args(["-c", script, &format!("localhost:{port}")])
        .env("CEREBELUM_API_KEY", &key)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running python");
    // The execution sleeps in its step: then the server dies.
    let deadline = Instant::now() + LONG;
    let id = loop {
        let listed: Value = serde_json::from_str(&cli.ok(&["list", "--json"])).unwrap();
        if let Some(id) = listed
            .as_array()
            .and_then(|l| l.first())
            .map(|e| e["id"].clone())
        {
            let id = id.as_str().unwrap().to_owned();
            if !entries(&cli.journal(&id), "sleep").is_empty() {
                break id;
            }
        }
        assert!(Instant::now() < deadline, "the run never reached its sleep");
        std::thread::sleep(Duration::from_millis(50));
    };
    server.kill9();
    let _server = db.serve_api(port, &[]);
    let out = run.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let ended: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(ended, json!(["completed", 1, id]), "{stderr}");
    assert!(
        stderr.contains(&format!("waiting for execution {id} again")),
        "the client says it waits on after the break: {stderr}"
    );
    let listed: Value = serde_json::from_str(&cli.ok(&["list", "--json"])).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}
