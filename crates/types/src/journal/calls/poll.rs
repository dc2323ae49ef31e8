//! `poll`: a check step run every interval until it returns something
//! other than `null`, one journal entry per check.

use super::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollOptions {
    pub interval_ms: u64,
    pub max_attempts: u32,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PollArgs {
    pub check_step: String,
    pub input: Value,
    pub options: PollOptions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Poll {
    pub args: PollArgs,
    /// When it started: its timeout counts from here.
    pub started_at: i64,
}

impl Poll {
    /// When it times out, if it does.
    pub fn deadline_ms(&self) -> Option<i64> {
        self.args
            .options
            .timeout_ms
            .map(|t| self.started_at + t as i64)
    }
}

impl Show for Poll {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        let (check, options) = (&self.args.check_step, &self.args.options);
        Shown {
            row: Some("poll"),
            title: format!(
                "polls {check} every {} (at most {} checks)",
                duration(options.interval_ms as i64),
                options.max_attempts
            ),
            due_ms: self.deadline_ms(),
            waits: true,
            name: Some(format!("poll {check}")),
            waiting: Some(format!("poll {check}")),
            line: Some(format!(
                "⟳ polling {check} every {} ms",
                options.interval_ms
            )),
            ..Shown::default()
        }
    }
}
