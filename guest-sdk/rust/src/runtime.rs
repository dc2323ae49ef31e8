//! What [`package!`](crate::package) expands to calls: not a public API.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use crate::bindings::cerebelum::workflow::types::{
    Error as WitError, PackageInfo, StepInfo, WorkflowInfo,
};
pub use crate::bindings::exports::cerebelum::workflow::guest::Guest;
pub use crate::bindings::exports::cerebelum::workflow::placement::{
    Guest as PlacementGuest, WorkerStep,
};
use crate::options::millis;
use crate::{Context, Error, StepOptions};

/// Runs `f` on the JSON `input` and returns its result as JSON.
pub fn run<F, I, O>(f: F, input: &str) -> Result<String, WitError>
where
    F: FnOnce(&Context, I) -> Result<O, Error>,
    I: DeserializeOwned,
    O: Serialize,
{
    let input: I = serde_json::from_str(input).map_err(Error::from)?;
    let output = f(&Context::new(), input)?;
    serde_json::to_string(&output)
        .map_err(|err| Error::new("invalid-output", err.to_string()).into())
}

/// The error for a workflow or step `name` this package does not have.
pub fn unknown(kind: &str, what: &str, name: &str, known: &[&str]) -> WitError {
    let known = if known.is_empty() {
        "none".to_owned()
    } else {
        known.join(", ")
    };
    Error::new(
        kind,
        format!("this package has no {what} `{name}`; its {what}s: {known}"),
    )
    .into()
}

/// A step of `package!`: name, description, default options.
pub type StepDecl = (&'static str, &'static str, Option<StepOptions>);

/// The steps placed on worker queues.
pub fn placement(steps: Vec<StepDecl>) -> Vec<WorkerStep> {
    steps
        .into_iter()
        .filter_map(|(name, _, options)| {
            let options = options?;
            Some(WorkerStep {
                step: name.to_owned(),
                queue: options.worker?,
                schedule_to_start_ms: options.schedule_to_start.map(millis),
                heartbeat_ms: options.heartbeat.map(millis),
            })
        })
        .collect()
}

/// The package description: workflows as (name, description), steps as
/// (name, description, default options).
pub fn describe(workflows: &[(&str, &str)], steps: Vec<StepDecl>) -> PackageInfo {
    PackageInfo {
        workflows: workflows
            .iter()
            .map(|&(name, description)| WorkflowInfo {
                name: name.to_owned(),
                description: description.to_owned(),
            })
            .collect(),
        steps: steps
            .into_iter()
            .map(|(name, description, options)| StepInfo {
                name: name.to_owned(),
                description: description.to_owned(),
                options: (&options.unwrap_or_default()).into(),
            })
            .collect(),
    }
}
