//! [`Context`]: everything user code asks of the engine.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bindings::cerebelum::workflow::host;
use crate::bindings::cerebelum::workflow::types as wit;
use crate::options::millis;
use crate::{Approval, Decision, Error, PollOptions, StepOptions};

/// The engine, as seen from a workflow or a step.
///
/// The same type is handed to workflows and steps. Every call is journaled:
/// when an execution replays, the engine answers from the journal without
/// repeating the effect. A workflow must therefore be deterministic and reach
/// the outside world (clock, randomness, I/O) only through this type; steps
/// are where side effects belong.
///
/// Calls that wait (steps, sleeps, polls, approvals) return an error of kind
/// `cancelled` once the execution is cancelled (see [`Error::is_cancelled`]);
/// the workflow may then run compensating steps before returning it.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    _private: (),
}

/// A step started with [`Context::start_step`], resolved by
/// [`Context::await_steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a started step is only resolved by Context::await_steps"]
pub struct StepHandle(u64);

impl StepHandle {
    /// The engine's identifier of the started step.
    pub fn id(self) -> u64 {
        self.0
    }
}

/// A child workflow started with [`Context::start_child`], resolved by
/// [`Context::await_child`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[must_use = "a started child is only resolved by Context::await_child"]
pub struct ChildHandle(u64);

/// How a child workflow is started, see [`Context::start_child`].
///
/// ```
/// use cerebelum_sdk::ChildOptions;
///
/// let options = ChildOptions::default().package("deployer").version(3).detached();
/// assert_eq!(options.package.as_deref(), Some("deployer"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildOptions {
    /// A package of the tenant by name; `None`: this execution's package
    /// version.
    pub package: Option<String>,
    /// That package's version; `None`: its newest.
    pub version: Option<u64>,
    /// Leave the child running when this execution is cancelled (by
    /// default it is cancelled with it).
    pub detached: bool,
}

impl ChildOptions {
    /// The child is a workflow of package `name` (its newest version
    /// unless [`version`](Self::version) says).
    #[must_use]
    pub fn package(mut self, name: impl Into<String>) -> Self {
        self.package = Some(name.into());
        self
    }

    /// That package's version `version`.
    #[must_use]
    pub fn version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }

    /// The child keeps running when this execution is cancelled.
    #[must_use]
    pub fn detached(mut self) -> Self {
        self.detached = true;
        self
    }
}

/// Severity of a [`Context::log`] message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the code handles.
    Warn,
    /// A failure.
    Error,
}

impl From<Level> for wit::LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => Self::Trace,
            Level::Debug => Self::Debug,
            Level::Info => Self::Info,
            Level::Warn => Self::Warn,
            Level::Error => Self::Error,
        }
    }
}

/// JSON text of `input`; failing to serialize is `invalid-input`.
fn encode<I: Serialize + ?Sized>(input: &I) -> Result<String, Error> {
    Ok(serde_json::to_string(input)?)
}

/// `raw` JSON as an `O`; not fitting is `invalid-output`.
fn decode<O: DeserializeOwned>(raw: &str, what: impl FnOnce() -> String) -> Result<O, Error> {
    serde_json::from_str(raw).map_err(|err| Error::invalid_output(&what(), &err))
}

impl Context {
    pub(crate) const fn new() -> Self {
        Self { _private: () }
    }

    /// Runs step `name` with `input` and returns its result, retried with the
    /// step's default options.
    pub fn step<I, O>(&self, name: &str, input: &I) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        self.call_step(name, input, None)
    }

    /// Like [`step`](Self::step), with `options` overriding the step's
    /// defaults.
    pub fn step_with<I, O>(&self, name: &str, input: &I, options: StepOptions) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        self.call_step(name, input, Some(&options))
    }

    fn call_step<I, O>(
        &self,
        name: &str,
        input: &I,
        options: Option<&StepOptions>,
    ) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        let input = encode(input)?;
        let options = options.map(call_options).transpose()?;
        let output = host::call_step(name, &input, options.as_ref())?;
        decode(&output, || format!("result of step `{name}`"))
    }

    /// Starts step `name` without waiting for it; steps started in a row run
    /// concurrently. Resolve the handles with [`await_steps`](Self::await_steps).
    pub fn start_step<I>(&self, name: &str, input: &I) -> Result<StepHandle, Error>
    where
        I: Serialize + ?Sized,
    {
        let input = encode(input)?;
        Ok(StepHandle(host::start_step(name, &input, None)))
    }

    /// Like [`start_step`](Self::start_step), with `options` overriding the
    /// step's defaults.
    pub fn start_step_with<I>(
        &self,
        name: &str,
        input: &I,
        options: StepOptions,
    ) -> Result<StepHandle, Error>
    where
        I: Serialize + ?Sized,
    {
        let input = encode(input)?;
        let options = call_options(&options)?;
        Ok(StepHandle(host::start_step(name, &input, Some(&options))))
    }

    /// Waits for every started step and returns their results, in the order
    /// of `handles`.
    pub fn await_steps(&self, handles: Vec<StepHandle>) -> Vec<Result<Value, Error>> {
        let ids: Vec<u64> = handles.iter().map(|h| h.0).collect();
        host::await_steps(&ids)
            .into_iter()
            .zip(handles)
            .map(|(result, handle)| {
                let output = result?;
                decode(&output, || format!("result of started step {}", handle.0))
            })
            .collect()
    }

    /// Runs the steps `calls` (name, input) concurrently and returns their
    /// results in order, or the first error in that order.
    ///
    /// Every input is serialized before any step starts.
    pub fn parallel<I, O>(&self, calls: &[(&str, I)]) -> Result<Vec<O>, Error>
    where
        I: Serialize,
        O: DeserializeOwned,
    {
        let inputs = calls
            .iter()
            .map(|(_, input)| encode(input))
            .collect::<Result<Vec<_>, _>>()?;
        let ids: Vec<u64> = calls
            .iter()
            .zip(&inputs)
            .map(|((name, _), input)| host::start_step(name, input, None))
            .collect();
        host::await_steps(&ids)
            .into_iter()
            .zip(calls)
            .map(|(result, (name, _))| {
                let output = result?;
                decode(&output, || format!("result of step `{name}`"))
            })
            .collect()
    }

    /// Durable sleep: survives engine restarts, measured from the first call.
    pub fn sleep(&self, duration: Duration) -> Result<(), Error> {
        Ok(host::sleep(millis(duration))?)
    }

    /// Calls step `check_step` with `input` until it returns something other
    /// than JSON `null`, and returns that.
    ///
    /// Fails with kind `poll-exhausted` after `options.max_attempts` checks, or
    /// `poll-timeout` after `options.timeout`.
    pub fn poll<I, O>(&self, check_step: &str, input: &I, options: PollOptions) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        let input = encode(input)?;
        let output = host::poll(check_step, &input, options.into())?;
        decode(&output, || format!("result of poll step `{check_step}`"))
    }

    /// Waits until an operator approves or rejects `request`, or its timeout
    /// passes.
    pub fn await_approval(&self, request: Approval) -> Result<Decision, Error> {
        Ok(host::await_approval(&request.into())?.into())
    }

    /// Starts workflow `workflow` with `input` as a child execution of its
    /// own (own id, journal and status, naming this one as its parent),
    /// without waiting for it: children started in a row run concurrently.
    /// Cancelling this execution cancels the child unless it is
    /// [`detached`](ChildOptions::detached). Fails with kind `not-found`
    /// when the package has no such workflow.
    pub fn start_child<I>(
        &self,
        workflow: &str,
        input: &I,
        options: ChildOptions,
    ) -> Result<ChildHandle, Error>
    where
        I: Serialize + ?Sized,
    {
        let input = encode(input)?;
        let options = wit::ChildOptions {
            package_name: options.package,
            version: options.version,
            detached: options.detached,
        };
        Ok(ChildHandle(host::start_child(
            workflow,
            &input,
            Some(&options),
        )?))
    }

    /// Waits until the child ends: its result decoded as `O`, or its error
    /// (kind `child-cancelled` if it was cancelled). A child that continued
    /// as new is followed to its last run.
    pub fn await_child<O>(&self, handle: ChildHandle) -> Result<O, Error>
    where
        O: DeserializeOwned,
    {
        let output = host::await_child(handle.0)?;
        decode(&output, || format!("result of child {}", handle.0))
    }

    /// Runs workflow `workflow` of this package version as a child and
    /// waits for its result: [`start_child`](Self::start_child) then
    /// [`await_child`](Self::await_child).
    pub fn child<I, O>(&self, workflow: &str, input: &I) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        let handle = self.start_child(workflow, input, ChildOptions::default())?;
        self.await_child(handle)
    }

    /// Waits for the next signal `name` sent to this execution (`cerebelum
    /// signal ID NAME --payload JSON`, the API's `Signal`, an HTTP trigger)
    /// and returns its payload decoded as `O`; `None` once `timeout` passes
    /// without one (`None`: wait as long as it takes).
    ///
    /// Signals sent before the workflow waits are kept in the order they
    /// arrived; each is delivered to exactly one `await_signal`, also
    /// across engine restarts.
    pub fn await_signal<O>(&self, name: &str, timeout: Option<Duration>) -> Result<Option<O>, Error>
    where
        O: DeserializeOwned,
    {
        match host::await_signal(name, timeout.map(millis))? {
            Some(payload) => decode(&payload, || format!("payload of signal `{name}`")).map(Some),
            None => Ok(None),
        }
    }

    /// Publishes `state` (small JSON) as where the execution stands:
    /// `cerebelum status`, `watch` and the API show the latest. Fails with
    /// kind `payload` if it is larger than the tenant allows.
    pub fn set_state<S>(&self, state: &S) -> Result<(), Error>
    where
        S: Serialize + ?Sized,
    {
        Ok(host::set_state(&encode(state)?)?)
    }

    /// Ends this run of the workflow and starts it again with `input` and
    /// an empty journal: a new execution whose `continued_from` is this
    /// one (which completes with `{"continued_as": NEW_ID}`). A workflow
    /// that loops forever (poll a queue, handle, repeat) calls it now and
    /// then so its journal never reaches the tenant's limit.
    ///
    /// Return what it returns: `return Err(ctx.continue_as_new(&next))`.
    /// It only returns when it cannot continue: kind `denied` in a step,
    /// `payload` for an input larger than the tenant allows.
    pub fn continue_as_new<I>(&self, input: &I) -> Error
    where
        I: Serialize + ?Sized,
    {
        match encode(input) {
            Ok(input) => host::continue_as_new(&input).into(),
            Err(e) => e,
        }
    }

    /// Reports the progress of the execution, `percent` capped at 100.
    pub fn progress(&self, percent: u8, message: &str) {
        host::report_progress(percent.min(100), message);
    }

    /// Logs `message` at `level`.
    pub fn log(&self, level: Level, message: &str) {
        host::log(level.into(), message);
    }

    /// Logs at [`Level::Debug`].
    pub fn debug(&self, message: &str) {
        self.log(Level::Debug, message);
    }

    /// Logs at [`Level::Info`].
    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    /// Logs at [`Level::Warn`].
    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// Logs at [`Level::Error`].
    pub fn error(&self, message: &str) {
        self.log(Level::Error, message);
    }

    /// Wall-clock milliseconds since the Unix epoch, fixed on first call
    /// (replays see the same value).
    pub fn now_ms(&self) -> u64 {
        host::now_ms()
    }

    /// Whether this run takes the new path of patch `id`, for changing
    /// code that executions recorded before the change must still replay
    /// (Temporal's patching): true where the execution reaches this point
    /// on code that has the patch (recorded: its replays say true again);
    /// false where its journal was recorded past this point by code
    /// without it, so it keeps the old path and replays unchanged. Once no
    /// open execution needs the old path (`cerebelum upload --check` of
    /// the code without it says so), the `if` and the old path give way to
    /// [`Context::deprecate_patch`].
    ///
    /// ```no_run
    /// # use cerebelum_sdk::{Context, Error};
    /// # use serde_json::{json, Value};
    /// # fn f(ctx: &Context) -> Result<(), Error> {
    /// if ctx.patched("audit-before-charge") {
    ///     let _: Value = ctx.step("audit", &json!({}))?;
    /// }
    /// let _: Value = ctx.step("charge", &json!({}))?;
    /// # Ok(()) }
    /// ```
    pub fn patched(&self, id: &str) -> bool {
        host::patched(id)
    }

    /// The second stage of retiring patch `id`, where `if
    /// ctx.patched(id)` and its old path stood: the code takes the new
    /// path only, and executions whose journal recorded the patch (they
    /// ran `patched(id)` there) still replay, their record of it matched
    /// here. Executions recorded before the patch no longer replay: deploy
    /// this once none is open (`cerebelum upload --check` says so). When
    /// no open execution has the patch in its journal either, this line
    /// goes too.
    ///
    /// ```no_run
    /// # use cerebelum_sdk::{Context, Error};
    /// # use serde_json::{json, Value};
    /// # fn f(ctx: &Context) -> Result<(), Error> {
    /// ctx.deprecate_patch("audit-before-charge");
    /// let _: Value = ctx.step("audit", &json!({}))?;
    /// let _: Value = ctx.step("charge", &json!({}))?;
    /// # Ok(()) }
    /// ```
    pub fn deprecate_patch(&self, id: &str) {
        // The same host call: it matches the recorded patch, and records
        // it for new runs, so a replay on code that still asks
        // `patched(id)` takes the new path too.
        host::patched(id);
    }

    /// A random number, fixed on first call (replays see the same value).
    pub fn random_u64(&self) -> u64 {
        host::random_u64()
    }

    /// The identifier of the running execution.
    pub fn execution_id(&self) -> String {
        host::execution_id()
    }

    /// The attempt number of the running step, starting at 1; always 1 in a
    /// workflow.
    pub fn attempt(&self) -> u32 {
        host::attempt()
    }

    /// The tenant's secret `name` (`cerebelum admin secret set TENANT
    /// NAME`). Steps only: workflow code gets an error of kind `denied`.
    /// Secrets are never journaled; wherever their value would be written
    /// (journal, results, logs) it reads `[redacted]`, so pass a secret to
    /// an HTTP request and never return it.
    pub fn secret(&self, name: &str) -> Result<String, Error> {
        host::secret(name).map_err(Into::into)
    }

    /// A value computed by `compute` once and recorded in the journal under
    /// `name`: when the invocation replays, the recorded value is returned
    /// and `compute` does not run again. Use it in a step for work whose
    /// result later calls depend on (a check of an outside system, a
    /// generated id), so a replay takes the same path.
    ///
    /// ```no_run
    /// # use cerebelum_sdk::{Context, Error};
    /// # fn ready(_: &str) -> bool { true }
    /// # fn f(ctx: &Context) -> Result<(), Error> {
    /// let up: bool = ctx.recorded("droplet-ready", || Ok(ready("d-1")))?;
    /// # Ok(()) }
    /// ```
    pub fn recorded<T, F>(&self, name: &str, compute: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Result<T, Error>,
    {
        if let Some(raw) = host::recall(name) {
            return decode(&raw, || format!("value recorded as `{name}`"));
        }
        let value = compute()?;
        host::remember(name, &encode(&value)?);
        Ok(value)
    }
}

/// A call's options as the host takes them; a worker placement is refused
/// (it is the package's, declared in `package!`).
fn call_options(options: &StepOptions) -> Result<wit::StepOptions, Error> {
    if options.places() {
        return Err(Error::new(
            "invalid-input",
            "a call's options cannot place the step on a worker queue or set its worker \
             timeouts: declare them in package! (`with StepOptions::default().worker(\"devops\")`)",
        ));
    }
    Ok(options.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        assert_eq!(encode(&serde_json::json!({"a": 1})).unwrap(), r#"{"a":1}"#);
        let n: u32 = decode("7", || unreachable!()).unwrap();
        assert_eq!(n, 7);
        let err = decode::<u32>("\"x\"", || "result of step `s`".into()).unwrap_err();
        assert_eq!(err.kind, "invalid-output");
        assert!(
            err.message.starts_with("result of step `s`: "),
            "{}",
            err.message
        );
    }

    #[test]
    fn levels() {
        assert!(wit::LogLevel::from(Level::Warn) == wit::LogLevel::Warn);
        assert!(Level::Trace < Level::Error);
    }
}
