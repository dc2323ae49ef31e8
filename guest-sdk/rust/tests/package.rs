//! `package!` expansion, driven on the host: functions here never call the
//! host imports (they only exist inside the engine).

use std::time::Duration;

use cerebelum_sdk::__private::{Guest, PlacementGuest};
use cerebelum_sdk::{Context, Error, RetryPolicy, StepOptions};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Deserialize)]
struct Greet {
    name: String,
}

#[derive(Serialize)]
struct Greeting {
    greeting: String,
}

fn greet(_ctx: &Context, input: Greet) -> Result<Greeting, Error> {
    Ok(Greeting {
        greeting: format!("Hello, {}", input.name),
    })
}

fn echo(_ctx: &Context, input: Value) -> Result<Value, Error> {
    Ok(input)
}

fn native(_ctx: &Context, input: Value) -> Result<Value, Error> {
    Ok(input)
}

/// Tries to move `echo` to a worker queue from a call: refused.
fn move_echo(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.step_with("echo", &input, StepOptions::default().worker("devops"))
}

fn fail(_ctx: &Context, _input: Value) -> Result<(), Error> {
    Err(Error::new("transient", "not yet").with_details(json!({"n": 1})))
}

cerebelum_sdk::package! {
    workflows: [
        greet => "Greets",
        move_echo => "Moves a step from a call",
    ],
    steps: [
        echo => "Returns its input",
        native => "Runs on a worker" with StepOptions::default()
            .worker("devops")
            .heartbeat(Duration::from_secs(5)),
        fail => "Always fails" with StepOptions::default()
            .retry(RetryPolicy::new(4).initial_backoff(Duration::from_millis(200)))
            .attempt_timeout(Duration::from_secs(1)),
    ],
}

#[test]
fn describe_lists_functions_and_options() {
    let info = __CerebelumPackage::describe();
    assert_eq!(info.workflows.len(), 2);
    assert_eq!(info.workflows[0].name, "greet");
    assert_eq!(info.workflows[0].description, "Greets");
    let names: Vec<&str> = info.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["echo", "native", "fail"]);
    assert!(info.steps[0].options.retry.is_none());
    let retry = info.steps[2].options.retry.as_ref().unwrap();
    assert_eq!((retry.max_attempts, retry.initial_backoff_ms), (4, 200));
    assert_eq!(info.steps[2].options.attempt_timeout_ms, Some(1000));
}

#[test]
fn placement_lists_the_steps_on_worker_queues() {
    let placed: Vec<_> = __CerebelumPackage::worker_steps()
        .into_iter()
        .map(|w| (w.step, w.queue, w.schedule_to_start_ms, w.heartbeat_ms))
        .collect();
    assert_eq!(
        placed,
        vec![("native".to_owned(), "devops".to_owned(), None, Some(5000))]
    );
}

#[test]
fn a_call_cannot_move_a_step_to_a_worker() {
    let err = __CerebelumPackage::run_workflow("move_echo".into(), "{}".into()).unwrap_err();
    assert_eq!(err.kind, "invalid-input");
    assert!(
        err.message.contains("declare them in package!"),
        "{}",
        err.message
    );
}

#[test]
fn dispatches_and_serializes() {
    let out = __CerebelumPackage::run_workflow("greet".into(), r#"{"name":"web-1"}"#.into());
    assert_eq!(out.unwrap(), r#"{"greeting":"Hello, web-1"}"#);
    let out = __CerebelumPackage::run_step("echo".into(), "[1,null]".into());
    assert_eq!(out.unwrap(), "[1,null]");
}

#[test]
fn user_errors_pass_through() {
    let err = __CerebelumPackage::run_step("fail".into(), "null".into()).unwrap_err();
    assert_eq!(err.kind, "transient");
    assert_eq!(err.message, "not yet");
    assert_eq!(err.details.as_deref(), Some(r#"{"n":1}"#));
}

#[test]
fn unknown_names_list_the_known_ones() {
    let err = __CerebelumPackage::run_workflow("nope".into(), "{}".into()).unwrap_err();
    assert_eq!(err.kind, "unknown-workflow");
    assert!(err.message.contains("`nope`") && err.message.contains("greet"));
    let err = __CerebelumPackage::run_step("greet".into(), "{}".into()).unwrap_err();
    assert_eq!(err.kind, "unknown-step");
    assert!(
        err.message.contains("echo, native, fail"),
        "{}",
        err.message
    );
}

#[test]
fn bad_input_is_invalid_input() {
    let err = __CerebelumPackage::run_workflow("greet".into(), r#"{"nom":1}"#.into()).unwrap_err();
    assert_eq!(err.kind, "invalid-input");
    assert!(
        err.message.contains("missing field `name`"),
        "{}",
        err.message
    );
    let err = __CerebelumPackage::run_step("echo".into(), "not json".into()).unwrap_err();
    assert_eq!(err.kind, "invalid-input");
}
