//! Guests for the engine's end-to-end tests and benchmark: each workflow and
//! step is small and exercises one feature of the host interface.
//!
//! Inputs are JSON; "any" means any JSON value.

use std::hint::black_box;
use std::time::Duration;

use cerebelum_sdk::{
    Approval, ChildOptions, Context, Decision, Error, PollOptions, RetryPolicy, StepOptions,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

// ---------------------------------------------------------------- workflows

/// Benchmark: three `noop` steps in a row, each fed the previous result.
/// Returns its input: no step, no host call (child round trips).
fn nothing(_ctx: &Context, input: Value) -> Result<Value, Error> {
    Ok(input)
}

fn noop3(ctx: &Context, input: Value) -> Result<Value, Error> {
    let first: Value = ctx.step("noop", &input)?;
    let second: Value = ctx.step("noop", &first)?;
    ctx.step("noop", &second)
}

/// `noop`, then `native` (placed on worker queue `kit-native`), then
/// `noop`: only the middle step goes to a worker.
fn placed(ctx: &Context, input: Value) -> Result<Value, Error> {
    let first: Value = ctx.step("noop", &input)?;
    let second: Value = ctx.step("native", &first)?;
    ctx.step("noop", &second)
}

/// `native_hurry`: a worker step that fails if no worker takes it soon.
fn placed_hurry(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.step("native_hurry", &input)
}

/// Benchmark: one `noop` step.
fn one_step(ctx: &Context, input: Value) -> Result<Value, Error> {
    ctx.step("noop", &input)
}

#[derive(Deserialize)]
struct Sleep {
    sleep_ms: u64,
}

/// Durable sleep test: `record`, sleep `sleep_ms`, `record`; returns the
/// clock read just before and just after the sleep.
fn step_sleep_step(ctx: &Context, input: Sleep) -> Result<Value, Error> {
    let _: Value = ctx.step("record", &json!({ "n": 1 }))?;
    let before_ms = ctx.now_ms();
    ctx.sleep(Duration::from_millis(input.sleep_ms))?;
    let after_ms = ctx.now_ms();
    let _: Value = ctx.step("record", &json!({ "n": 2 }))?;
    Ok(json!({ "before_ms": before_ms, "after_ms": after_ms }))
}

#[derive(Serialize, Deserialize)]
struct Spin {
    iterations: u64,
}

/// Crash-recovery test (the engine is killed while a step runs): one long
/// `spin` step.
fn spin_step(ctx: &Context, input: Spin) -> Result<Value, Error> {
    ctx.step("spin", &input)
}

#[derive(Deserialize)]
struct RunStep {
    step: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    max_attempts: Option<u32>,
}

/// Deadline, memory-limit and panic tests: runs step `step` with `input`,
/// `max_attempts` attempts (default 1), and returns its result.
fn run_step(ctx: &Context, input: RunStep) -> Result<Value, Error> {
    let retry = RetryPolicy::new(input.max_attempts.unwrap_or(1));
    ctx.step_with(
        &input.step,
        &input.input,
        StepOptions::default().retry(retry),
    )
}

#[derive(Deserialize)]
struct ApprovalInput {
    key: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Approval tests: waits for approval `key` and returns the decision.
fn approval(ctx: &Context, input: ApprovalInput) -> Result<Value, Error> {
    let mut request = Approval::new(&input.key).message(format!("Approve {}?", input.key));
    if let Some(ms) = input.timeout_ms {
        request = request.timeout(Duration::from_millis(ms));
    }
    Ok(match ctx.await_approval(request)? {
        Decision::Approved(payload) => json!({ "decision": "approved", "payload": payload }),
        Decision::Rejected(reason) => json!({ "decision": "rejected", "reason": reason }),
        Decision::TimedOut => json!({ "decision": "timed-out" }),
    })
}

#[derive(Deserialize)]
struct SignalWait {
    name: String,
    count: usize,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Signal tests: takes `count` signals `name` (a noop step after each),
/// publishing how many it has as its state, and returns their payloads
/// (`"timed-out"` for a wait that timed out).
fn signal_wait(ctx: &Context, input: SignalWait) -> Result<Value, Error> {
    let mut got = Vec::new();
    for i in 0..input.count {
        ctx.set_state(&json!({ "received": i, "waiting_for": input.name }))?;
        let timeout = input.timeout_ms.map(Duration::from_millis);
        match ctx.await_signal::<Value>(&input.name, timeout)? {
            Some(payload) => {
                let _: Value = ctx.step("noop", &json!(i))?;
                got.push(payload);
            }
            None => got.push(json!("timed-out")),
        }
    }
    ctx.set_state(&json!({ "received": input.count, "done": true }))?;
    Ok(json!({ "signals": got }))
}

#[derive(Deserialize)]
struct PollReady {
    ready_after_ms: u64,
    interval_ms: u64,
    max_attempts: u32,
    #[serde(default)]
    timeout_ms: Option<u64>,
}

/// Poll tests: `start_clock`, then polls `check_ready` until
/// `ready_after_ms` has passed; poll errors (`poll-exhausted`,
/// `poll-timeout`, ...) are returned as they are.
fn poll_ready(ctx: &Context, input: PollReady) -> Result<Value, Error> {
    let clock: Clock = ctx.step(
        "start_clock",
        &json!({ "ready_after_ms": input.ready_after_ms }),
    )?;
    let mut options = PollOptions::every(Duration::from_millis(input.interval_ms))
        .max_attempts(input.max_attempts);
    if let Some(ms) = input.timeout_ms {
        options = options.timeout(Duration::from_millis(ms));
    }
    ctx.poll("check_ready", &clock, options)
}

/// Cancellation test: sleeps `sleep_ms`; when cancelled meanwhile, runs the
/// `compensate` step and returns the cancellation error.
fn cancellable(ctx: &Context, input: Sleep) -> Result<Value, Error> {
    match ctx.sleep(Duration::from_millis(input.sleep_ms)) {
        Ok(()) => Ok(json!({ "slept": true })),
        Err(err) if err.is_cancelled() => {
            let _: Value = ctx.step("compensate", &Value::Null)?;
            Err(err)
        }
        Err(err) => Err(err),
    }
}

#[derive(Serialize, Deserialize)]
struct Until {
    until_ms: u64,
}

/// Operator-retry test: `noop`, then `fail_until` without retries, so the
/// execution fails until an operator retries it after `until_ms`.
fn retry_me(ctx: &Context, input: Until) -> Result<Value, Error> {
    let _: Value = ctx.step("noop", &json!({ "first": true }))?;
    ctx.step_with(
        "fail_until",
        &input,
        StepOptions::default().retry(RetryPolicy::new(1)),
    )
}

#[derive(Deserialize)]
struct Fanout {
    n: u32,
    sleep_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Nap {
    i: u32,
    #[serde(default)]
    sleep_ms: u64,
}

/// Fan-out/fan-in test: starts `n` `nap` steps, awaits them all, and returns
/// their `i` in order.
fn fanout(ctx: &Context, input: Fanout) -> Result<Vec<u32>, Error> {
    let handles = (0..input.n)
        .map(|i| {
            let nap = Nap {
                i,
                sleep_ms: input.sleep_ms,
            };
            ctx.start_step("nap", &nap)
        })
        .collect::<Result<Vec<_>, _>>()?;
    ctx.await_steps(handles)
        .into_iter()
        .map(|result| Ok(serde_json::from_value::<Nap>(result?)?.i))
        .collect()
}

/// Benchmark (W2 fan-out of `scripts/bench-peers.sh`): starts `n` `noop`
/// steps at once, awaits them all, and returns `n`.
fn fan_noop(ctx: &Context, input: Count) -> Result<u32, Error> {
    let handles = (0..input.n)
        .map(|i| ctx.start_step("noop", &json!({ "i": i })))
        .collect::<Result<Vec<_>, _>>()?;
    for result in ctx.await_steps(handles) {
        result?;
    }
    Ok(input.n)
}

/// Replay-determinism test: the recorded clock, random number and execution
/// id, then a `noop` step (replays must return the same values).
fn clock_random(ctx: &Context, _input: Value) -> Result<Value, Error> {
    let values = json!({
        "now": ctx.now_ms(),
        "random": ctx.random_u64(),
        "id": ctx.execution_id(),
    });
    ctx.step("noop", &values)
}

#[derive(Deserialize)]
struct Count {
    n: u32,
}

/// Replay-speed test: `n` `noop` steps in a row; returns `n`.
fn many_steps(ctx: &Context, input: Count) -> Result<u32, Error> {
    for i in 0..input.n {
        let _: Value = ctx.step("noop", &json!({ "i": i }))?;
    }
    Ok(input.n)
}

#[derive(Deserialize)]
struct StepsThenWait {
    n: u32,
    key: String,
}

/// Replay-check benchmark: `n` `noop` steps, then waits for approval
/// `key` (hibernated, open, with a journal of about `2n + 2` entries).
fn steps_then_wait(ctx: &Context, input: StepsThenWait) -> Result<Value, Error> {
    // The kit built with CEREBELUM_TESTKIT_VARIANT=diverge (a debug build,
    // `harness::kit_variant`) gives its steps other input: a replay of an
    // execution of the kit against it diverges here, at a known line.
    let variant = option_env!("CEREBELUM_TESTKIT_VARIANT") == Some("diverge");
    for i in 0..input.n {
        let _: Value = ctx.step("noop", &json!({ "i": i, "variant": variant }))?;
    }
    approval(
        ctx,
        ApprovalInput {
            key: input.key,
            timeout_ms: None,
        },
    )
}

/// Patching (`ctx.patched`): whether this run takes patch `probe`'s new
/// path, then a step. With `{"deprecated": true}`, the patch retired
/// (`ctx.deprecate_patch`) instead of asked.
fn patch_probe(ctx: &Context, input: Value) -> Result<Value, Error> {
    if input["deprecated"] == json!(true) {
        ctx.deprecate_patch("probe");
        let _: Value = ctx.step("noop", &json!({}))?;
        return Ok(json!({ "deprecated": true }));
    }
    let before = ctx.patched("probe");
    let _: Value = ctx.step("noop", &json!({}))?;
    Ok(json!({ "patched": before }))
}

/// Steps sharing an instance: `calls` twice, once leaking 4 MiB (which
/// doubles a fresh instance's memory), twice more, then a sleep of
/// `sleep_ms`, then once more; returns what each call counted.
fn reuse_probe(ctx: &Context, input: Sleep) -> Result<Vec<u32>, Error> {
    let mut counts = Vec::new();
    for leak_mb in [0, 0, 4, 0, 0] {
        counts.push(ctx.step("calls", &json!({ "leak_mb": leak_mb }))?);
    }
    ctx.sleep(Duration::from_millis(input.sleep_ms))?;
    counts.push(ctx.step("calls", &json!({}))?);
    Ok(counts)
}

// -------------------------------------------------------------------- steps

#[derive(Deserialize)]
struct Leak {
    #[serde(default)]
    leak_mb: usize,
}

/// How many times this instance ran `calls`, this call included, after
/// leaking `leak_mb` MiB.
fn calls(_ctx: &Context, input: Leak) -> Result<u32, Error> {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    std::mem::forget(black_box(vec![1u8; input.leak_mb << 20]));
    Ok(CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1)
}

/// Returns its input.
fn noop(_ctx: &Context, input: Value) -> Result<Value, Error> {
    Ok(input)
}

/// Returns its input; the package places it on worker queue `kit-native`,
/// so a worker serves it (the worker decides what it returns).
/// Returns its input (placed on `kit-native` with a schedule-to-start
/// timeout).
fn native_hurry(_ctx: &Context, input: Value) -> Result<Value, Error> {
    Ok(input)
}

fn native(_ctx: &Context, input: Value) -> Result<Value, Error> {
    Ok(input)
}

/// Returns its input (a marker in the journal of `step_sleep_step`).
fn record(_ctx: &Context, input: Value) -> Result<Value, Error> {
    Ok(input)
}

/// Burns CPU for `iterations` rounds.
fn spin(_ctx: &Context, input: Spin) -> Result<Value, Error> {
    let mut acc = 0_u64;
    for i in 0..input.iterations {
        acc = black_box(acc.wrapping_add(i));
    }
    black_box(acc);
    Ok(json!({ "done": true }))
}

/// Never returns: for the CPU deadline.
fn infinite_loop(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    let mut acc = 0_u64;
    loop {
        acc = black_box(acc.wrapping_add(1));
    }
}

/// Allocates and touches 16 MiB after 16 MiB until the memory limit kills
/// it.
fn memory_bomb(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    const CHUNK: usize = 16 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0_u8; CHUNK];
        for byte in chunk.iter_mut().step_by(4096) {
            *byte = 1;
        }
        hoard.push(black_box(chunk));
    }
}

/// Panics with "boom": for traps.
fn panic_step(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    panic!("boom")
}

/// Fails with kind `transient` until the clock reaches `until_ms`.
fn fail_until(ctx: &Context, input: Until) -> Result<Value, Error> {
    if ctx.now_ms() < input.until_ms {
        return Err(Error::new("transient", "not yet"));
    }
    Ok(json!({ "ok": true }))
}

#[derive(Serialize, Deserialize)]
struct Clock {
    ready_at_ms: u64,
}

/// `{"ready_at_ms": now + ready_after_ms}`.
fn start_clock(ctx: &Context, input: Value) -> Result<Clock, Error> {
    let ready_after_ms = input["ready_after_ms"].as_u64().unwrap_or(0);
    Ok(Clock {
        ready_at_ms: ctx.now_ms().saturating_add(ready_after_ms),
    })
}

/// JSON `null` until `ready_at_ms`, then `{"ready": true, "at_ms": now}`.
fn check_ready(ctx: &Context, input: Clock) -> Result<Value, Error> {
    let now = ctx.now_ms();
    if now < input.ready_at_ms {
        return Ok(Value::Null);
    }
    Ok(json!({ "ready": true, "at_ms": now }))
}

/// The compensation of `cancellable`.
fn compensate(_ctx: &Context, _input: Value) -> Result<Value, Error> {
    Ok(json!({ "compensated": true }))
}

#[derive(Deserialize)]
struct Countdown {
    n: u32,
    until: u32,
}

/// Continue-as-new tests: one noop step, then, until `n` reaches `until`,
/// continues as a new execution with `n + 1`; returns `n`.
fn countdown(ctx: &Context, input: Countdown) -> Result<u32, Error> {
    let _: Value = ctx.step("noop", &json!({ "n": input.n }))?;
    if input.n < input.until {
        let next = json!({ "n": input.n + 1, "until": input.until });
        return Err(ctx.continue_as_new(&next));
    }
    Ok(input.n)
}

#[derive(Deserialize)]
struct ChildSpec {
    workflow: String,
    input: Value,
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    detached: bool,
}

#[derive(Deserialize)]
struct Parent {
    children: Vec<ChildSpec>,
    /// Sleeps this long (durably) after the children ended.
    #[serde(default)]
    then_sleep_ms: Option<u64>,
}

/// Child workflow tests: starts every child (concurrently), then awaits
/// each; returns their results in order (an error starting or running
/// one as `{"error": kind}`), after `then_sleep_ms` if given.
fn parent(ctx: &Context, input: Parent) -> Result<Value, Error> {
    let mut handles = Vec::new();
    for spec in input.children {
        let mut options = ChildOptions::default();
        if let Some(package) = spec.package {
            options = options.package(package);
        }
        if spec.detached {
            options = options.detached();
        }
        handles.push(ctx.start_child(&spec.workflow, &spec.input, options));
    }
    let mut results = Vec::new();
    for handle in handles {
        results.push(match handle.and_then(|h| ctx.await_child::<Value>(h)) {
            Ok(value) => value,
            Err(e) if e.is_cancelled() => return Err(e),
            Err(e) => json!({ "error": e.kind }),
        });
    }
    if let Some(ms) = input.then_sleep_ms {
        ctx.sleep(Duration::from_millis(ms))?;
    }
    Ok(json!({ "children": results }))
}

/// Pause tests: `n` `nap` steps of `sleep_ms` in a row; returns `n`.
fn naps(ctx: &Context, input: Fanout) -> Result<u32, Error> {
    for i in 0..input.n {
        let nap = Nap {
            i,
            sleep_ms: input.sleep_ms,
        };
        let _: Value = ctx.step("nap", &nap)?;
    }
    Ok(input.n)
}

/// Sleeps `sleep_ms` (durably), then returns `{"i": i}`.
fn nap(ctx: &Context, input: Nap) -> Result<Value, Error> {
    ctx.sleep(Duration::from_millis(input.sleep_ms))?;
    Ok(json!({ "i": input.i }))
}

#[derive(Serialize, Deserialize)]
struct Hold {
    mb: usize,
    ms: u64,
}

/// Memory-budget and crash tests: one `hold` step.
fn hold_step(ctx: &Context, input: Hold) -> Result<Value, Error> {
    ctx.step_with(
        "hold",
        &input,
        StepOptions::default().retry(RetryPolicy::new(1)),
    )
}

/// Allocates and touches `mb` MiB, keeps it while it sleeps `ms` (in
/// process when short), then tells its attempt number and when it held
/// the memory (journaled clock).
fn hold(ctx: &Context, input: Hold) -> Result<Value, Error> {
    let mut memory = vec![0_u8; input.mb << 20];
    for byte in memory.iter_mut().step_by(4096) {
        *byte = 1;
    }
    let from_ms = ctx.now_ms();
    ctx.sleep(Duration::from_millis(input.ms))?;
    black_box(&memory);
    Ok(json!({ "attempt": ctx.attempt(), "from_ms": from_ms, "to_ms": ctx.now_ms() }))
}

cerebelum_sdk::package! {
    workflows: [
        noop3 => "Three noop steps (benchmark)",
        one_step => "One noop step (benchmark)",
        step_sleep_step => "record, durable sleep, record",
        spin_step => "One CPU-bound spin step",
        run_step => "Run any step with a given number of attempts",
        approval => "Wait for an approval and return the decision",
        signal_wait => "Take count signals of a name and return their payloads",
        naps => "n nap steps of sleep_ms in a row",
        countdown => "A step, then continue as new with n + 1 until n reaches until",
        parent => "Start children concurrently and await them all",
        nothing => "Return the input (no step)",
        poll_ready => "Poll check_ready until a deadline passes",
        cancellable => "Sleep; compensate when cancelled",
        retry_me => "Fail without retries until a given time",
        fanout => "Run n nap steps in parallel",
        fan_noop => "Run n noop steps at once (benchmark)",
        clock_random => "Recorded clock, randomness and execution id",
        many_steps => "n noop steps in a row (replay speed)",
        steps_then_wait => "n noop steps, then wait for an approval (replay checks)",
        patch_probe => "Whether patch `probe` applies (or retire it), then a noop step",
        hold_step => "One hold step (one attempt)",
        placed => "noop, native (on a worker), noop",
        placed_hurry => "native_hurry (on a worker, 300 ms to start)",
        reuse_probe => "calls x5 (one leaking 4 MiB), a sleep, calls: the counts",
    ],
    steps: [
        noop => "Return the input",
        record => "Return the input",
        spin => "Burn CPU for a number of iterations",
        infinite_loop => "Loop forever",
        memory_bomb => "Allocate until the memory limit",
        panic_step => "Panic",
        fail_until => "Fail with transient until a given time",
        start_clock => "Compute when check_ready turns ready",
        check_ready => "null until ready",
        compensate => "Compensation of cancellable",
        nap => "Durable sleep inside a step",
        hold => "Hold mb MiB of memory for ms",
        calls => "How many times this instance ran calls (after leaking leak_mb MiB)",
        native => "Return the input (placed on worker queue kit-native)"
            with StepOptions::default().worker("kit-native"),
        native_hurry => "Return the input (on kit-native; 300 ms to start, one attempt)"
            with StepOptions::default()
                .worker("kit-native")
                .schedule_to_start(Duration::from_millis(300))
                .retry(RetryPolicy::new(1)),
    ],
}
