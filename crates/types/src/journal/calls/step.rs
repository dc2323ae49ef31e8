//! `call-step`, `start-step` and `await-steps`: steps run to their result
//! (with retries), in the sandbox or on a worker queue.

use super::*;
use crate::model::StepOptions;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepArgs {
    pub step: String,
    pub input: Value,
    pub options: Option<StepOptions>,
}

/// `call-step`: runs a step and waits for its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallStep {
    pub args: StepArgs,
}

/// `start-step`: starts a step beside the code (its handle is the call's
/// seq); `await-steps` waits for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartStep {
    pub args: StepArgs,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handles {
    pub handles: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwaitSteps {
    pub args: Handles,
}

impl StepArgs {
    fn show(&self) -> Shown {
        let name = format!("step {}", self.step);
        Shown {
            row: Some("step"),
            title: name.clone(),
            details: vec![Detail::Json(self.input.clone())],
            waits: true,
            line: Some(format!("→ {name}")),
            waiting: Some(name.clone()),
            name: Some(name),
            ..Shown::default()
        }
    }
}

impl Show for CallStep {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        self.args.show()
    }
}

impl Show for StartStep {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        self.args.show()
    }
}

impl Show for AwaitSteps {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        Shown {
            row: Some("await"),
            title: format!("awaits {} started steps", self.args.handles.len()),
            waits: true,
            ..Shown::default()
        }
    }
}
