//! `start-child` and `await-child`: executions started by an execution
//! (its children), and waiting for their results.

use super::*;
use crate::model::CallError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a child is started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChildOptions {
    pub package: Option<String>,
    pub version: Option<u64>,
    pub detached: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildArgs {
    pub workflow: String,
    pub input: Value,
    pub options: Option<ChildOptions>,
}

/// The child a `start-child` started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildStarted {
    pub id: String,
    pub package: String,
    pub version: i64,
}

/// `start-child`: the child it started (its id is chosen and journaled
/// before the execution is created), or why it could not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartChild {
    pub args: ChildArgs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ChildStarted>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CallError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildHandle {
    pub handle: u64,
}

/// `await-child`: its result is the child's result or error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwaitChild {
    pub args: ChildHandle,
}

impl Show for StartChild {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        let workflow = &self.args.workflow;
        let (title, name, line) = match &self.child {
            Some(child) => (
                format!(
                    "child {workflow} {} ({} v{})",
                    child.id, child.package, child.version
                ),
                Some(format!("child {workflow} {}", child.id)),
                format!(
                    "⇉ child {workflow} started: {} (cerebelum watch {})",
                    child.id, child.id
                ),
            ),
            None => (
                format!("child {workflow} (not started)"),
                None,
                format!("⇉ child {workflow} not started"),
            ),
        };
        Shown {
            row: Some("child"),
            title,
            details: vec![Detail::Json(self.args.input.clone())],
            name,
            line: Some(line),
            ..Shown::default()
        }
    }
}

impl Show for AwaitChild {
    fn show(&self, cx: &ShowContext<'_>) -> Shown {
        let handle = self.args.handle;
        // The child its `start-child` (at seq `handle`) named, if it started one.
        let child = cx.names.get(&(handle as i64)).cloned();
        let name = child.clone().unwrap_or_else(|| format!("child {handle}"));
        Shown {
            row: Some("await"),
            title: format!("awaits child {handle}"),
            waits: true,
            line: Some(format!("⏳ waiting for {name}")),
            name: Some(name),
            waiting: child,
            ..Shown::default()
        }
    }
}
