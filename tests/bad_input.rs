//! Bad input gets a clear error, and nothing is stored half-way: files that
//! are not packages, unknown names and ids, invalid JSON, approvals nobody
//! waits for, steps that fail in every way a sandbox can stop them, and
//! database URLs that are malformed, unreachable or name no database.

use cerebelum_harness as common;
use common::WAIT;

use common::Db;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `cerebelum <command> --json` parsed.
fn listed(db: &Db, command: &str) -> Vec<Value> {
    serde_json::from_value(json(&db.ok(&[command, "--json"]))).unwrap()
}

/// Asserts that `text` contains every one of `words`.
fn assert_mentions(text: &str, words: &[&str]) {
    for word in words {
        assert!(text.contains(word), "{word:?} is not in: {text}");
    }
}

/// Asserts that nothing at all was stored.
fn assert_empty(db: &Db) {
    assert_eq!(listed(db, "packages"), Vec::<Value>::new());
    assert_eq!(listed(db, "list"), Vec::<Value>::new());
}

/// Uploads `file`, which must be refused with `words`; nothing is stored.
fn refused_upload(file: &Path, words: &[&str]) {
    let db = Db::new();
    let stderr = db.fails(&["upload", common::path(file)]);
    assert_mentions(&stderr, &["is not a usable package"]);
    assert_mentions(&stderr, words);
    // `run` refuses it the same way, before creating any execution.
    let stderr = db.fails(&["run", common::path(file), "hello"]);
    assert_mentions(&stderr, words);
    assert_empty(&db);
}

/// `cerebelum run testkit run_step` of `step` (one attempt) with `extra`
/// flags, which must fail; returns the failed execution's `error`.
fn failed_step(step: &str, extra: &[&str]) -> Value {
    let db = Db::new();
    let input = format!(r#"{{"step":"{step}"}}"#);
    let kit = common::guest("testkit");
    let mut args = vec!["run", common::path(&kit), "run_step", "--input", &input];
    args.extend_from_slice(extra);
    let stderr = db.fails(&args);
    let executions = listed(&db, "list");
    assert_eq!(executions.len(), 1, "{executions:?}");
    let id = executions[0]["id"].as_str().unwrap();
    let status = db.status(id);
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(status["result"], Value::Null);
    let error = status["error"].clone();
    // `run` reports the failure and its kind on stderr.
    assert_mentions(&stderr, &[id, "failed", error["kind"].as_str().unwrap()]);
    // The journal ends with the failure, recorded as the step's result.
    let journal = db.journal(id);
    assert_eq!(journal.last().unwrap()["kind"], "failed");
    let call = common::step_call_seq(&journal, step, 0);
    let results = common::results(&journal, call);
    assert_eq!(results.len(), 1, "{journal:?}");
    assert_eq!(results[0]["payload"]["err"]["kind"], error["kind"]);
    error
}

#[test]
fn a_file_that_is_not_wasm_is_refused() {
    let db = Db::new();
    let file = db.dir.path().join("notes.wasm");
    std::fs::write(&file, "these are my notes, not a package\n").unwrap();
    refused_upload(&file, &["not WebAssembly", "wasm32-wasip2"]);
}

#[test]
fn a_core_module_is_refused() {
    let db = Db::new();
    let file = db.dir.path().join("core.wasm");
    std::fs::write(&file, b"\0asm\x01\0\0\0").unwrap();
    refused_upload(&file, &["core WebAssembly module, not a component"]);
}

#[test]
fn a_component_of_another_world_is_refused() {
    refused_upload(
        &common::guest("not-a-package"),
        &["does not implement", "cerebelum:workflow"],
    );
}

#[test]
fn a_missing_package_file_is_refused() {
    let db = Db::new();
    let missing = db.dir.path().join("missing.wasm");
    let stderr = db.fails(&["upload", common::path(&missing)]);
    assert_mentions(&stderr, &["cannot read package file", "missing.wasm"]);
    assert_empty(&db);
}

#[test]
fn an_unknown_workflow_is_refused_with_the_workflows_there_are() {
    let db = Db::new();
    let kit = common::guest("testkit");
    for command in ["run", "start"] {
        let stderr = db.fails(&[command, common::path(&kit), "nope"]);
        assert_mentions(&stderr, &["no workflow named 'nope'", "noop3", "approval"]);
    }
    assert_eq!(listed(&db, "list"), Vec::<Value>::new());
    // The same by package name, once uploaded.
    let stderr = db.fails(&["start", "testkit", "nope"]);
    assert_mentions(&stderr, &["no workflow named 'nope'", "noop3"]);
    assert_eq!(listed(&db, "list"), Vec::<Value>::new());
}

#[test]
fn unknown_packages_and_invalid_names_are_refused() {
    let db = Db::new();
    let stderr = db.fails(&["start", "nopkg", "noop3"]);
    assert_mentions(
        &stderr,
        &["no package named 'nopkg'", "known packages: none"],
    );
    let kit = common::guest("testkit");
    let stderr = db.fails(&["upload", common::path(&kit), "--name", "my package"]);
    assert_mentions(&stderr, &["invalid package name \"my package\""]);
    let stderr = db.fails(&["list", "--status", "bogus"]);
    assert_mentions(&stderr, &["unknown status 'bogus'", "waiting"]);
    assert_empty(&db);
    // Once uploaded, the message lists it.
    db.ok(&["upload", common::path(&kit)]);
    let stderr = db.fails(&["start", "nopkg", "noop3"]);
    assert_mentions(&stderr, &["no package named 'nopkg'", "testkit"]);
    assert_eq!(listed(&db, "list"), Vec::<Value>::new());
}

#[test]
fn invalid_json_input_is_refused() {
    let db = Db::new();
    let kit = common::guest("testkit");
    // `start` checks the input before uploading anything.
    let stderr = db.fails(&[
        "start",
        common::path(&kit),
        "noop3",
        "--input",
        "{name: web-1",
    ]);
    assert_mentions(&stderr, &["not valid JSON", "{name: web-1"]);
    assert_empty(&db);
    let stderr = db.fails(&["run", common::path(&kit), "noop3", "--input", "[1, 2"]);
    assert_mentions(&stderr, &["not valid JSON"]);
    assert_eq!(listed(&db, "list"), Vec::<Value>::new());
    // Issue 31 (12): valid JSON past a limit is refused with the limit
    // named and what to do.
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let stderr = db.fails(&["start", common::path(&kit), "noop3", "--input", &deep]);
    assert_mentions(&stderr, &["at most 128 levels"]);
    let huge = format!("{{\"n\": {}}}", "9".repeat(5000));
    let stderr = db.fails(&["start", common::path(&kit), "noop3", "--input", &huge]);
    assert_mentions(&stderr, &["64-bit float", "as a string"]);
    assert!(stderr.len() < 1000, "{stderr}");
    assert_eq!(listed(&db, "list"), Vec::<Value>::new());
}

#[test]
fn approving_what_nobody_waits_for_is_refused() {
    let db = Db::new();
    let _server = db.serve(&[]);
    let id = db.start(&common::guest("testkit"), "approval", r#"{"key":"a"}"#);
    db.wait_status(&id, "waiting", WAIT);
    let stderr = db.fails(&["approve", &id, "b"]);
    assert_mentions(&stderr, &["not waiting for approval 'b'", "waiting for: a"]);
    let stderr = db.fails(&["reject", &id, "b", "--reason", "no"]);
    assert_mentions(&stderr, &["not waiting for approval 'b'"]);
    let stderr = db.fails(&["approve", "ex_nope", "a"]);
    assert_mentions(&stderr, &["no execution with id 'ex_nope'"]);
    let stderr = db.fails(&["approve", &id, "a", "--payload", "{oops"]);
    assert_mentions(&stderr, &["--payload is not valid JSON"]);
    // None of that touched the execution: it still waits for 'a'.
    assert_eq!(db.status(&id)["status"], "waiting");
    db.ok(&["approve", &id, "a"]);
    let done = db.wait_status(&id, "completed", WAIT);
    assert_eq!(done["result"]["decision"], "approved");
}

#[test]
fn an_unknown_execution_id_is_refused() {
    let db = Db::new();
    for command in ["status", "journal", "cancel", "retry", "watch", "replay"] {
        let stderr = db.fails(&[command, "ex_missing"]);
        assert_mentions(&stderr, &["no execution with id 'ex_missing'"]);
    }
    assert_empty(&db);
}

#[test]
fn an_unknown_step_fails_with_the_steps_there_are() {
    let error = failed_step("nope", &[]);
    assert_eq!(error["kind"], "unknown-step", "{error}");
    let message = error["message"].as_str().unwrap();
    assert_mentions(message, &["no step named 'nope'", "noop", "panic_step"]);
}

#[test]
fn a_step_that_loops_forever_hits_its_deadline() {
    let error = failed_step("infinite_loop", &["--step-timeout-ms", "500"]);
    assert_eq!(error["kind"], "deadline", "{error}");
    assert_mentions(error["message"].as_str().unwrap(), &["500 ms"]);
}

#[test]
fn a_step_that_allocates_without_bound_hits_its_memory_limit() {
    let error = failed_step("memory_bomb", &["--memory-limit-mb", "32"]);
    assert_eq!(error["kind"], "memory", "{error}");
    assert_mentions(error["message"].as_str().unwrap(), &["32 MiB"]);
}

#[test]
fn a_step_that_panics_is_a_trap_with_the_panic_message() {
    let error = failed_step("panic_step", &[]);
    assert_eq!(error["kind"], "trap", "{error}");
    assert_mentions(error["message"].as_str().unwrap(), &["boom"]);
}

#[test]
fn finished_executions_cannot_be_retried_or_cancelled() {
    let db = Db::new();
    let kit = common::guest("testkit");
    let out = db.ok(&["run", common::path(&kit), "noop3", "--input", r#"{"x":1}"#]);
    assert_eq!(json(&out), json(r#"{"x":1}"#));
    let id = listed(&db, "list")[0]["id"].as_str().unwrap().to_owned();
    let journal_before = db.journal(&id);
    let stderr = db.fails(&["retry", &id]);
    assert_mentions(&stderr, &["is completed", "only failed or cancelled"]);
    let stderr = db.fails(&["cancel", &id]);
    assert_mentions(&stderr, &["already completed", "nothing to cancel"]);
    // Neither left a trace.
    let status = db.status(&id);
    assert_eq!(status["status"], "completed");
    assert_eq!(status["cancel_requested"], false);
    assert_eq!(db.journal(&id), journal_before);
}

/// `cerebelum --db URL list`, which must fail at once with one clear line
/// mentioning `words`; returns that line.
fn refused_database(url: &str, words: &[&str]) -> String {
    let t = Instant::now();
    let out = std::process::Command::new(common::bin())
        .args(["--db", url, "list"])
        .env("CEREBELUM_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{url} was accepted");
    assert!(t.elapsed() < Duration::from_secs(15), "no hang on {url}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_mentions(&stderr, words);
    stderr
}

#[test]
fn a_malformed_database_url_is_refused_with_the_expected_form() {
    refused_database(
        "postgres://me@127.0.0.1:notaport/db",
        &["invalid PostgreSQL URL", "notaport", "postgres://USER"],
    );
}

#[test]
fn an_unreachable_database_is_refused_at_once_without_its_password() {
    let line = refused_database(
        "postgres://me:hunter2@127.0.0.1:1/db",
        &["cannot connect to PostgreSQL", "127.0.0.1:1/db", "refused"],
    );
    assert!(!line.contains("hunter2"), "the password is masked: {line}");
}

#[test]
fn a_database_that_does_not_exist_is_refused_with_how_to_create_it() {
    let db = Db::postgres();
    let missing = db.url.replace("cerebelum_test_", "cerebelum_missing_");
    refused_database(&missing, &["does not exist", "createdb"]);
}
