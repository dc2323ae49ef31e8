//! What a package exports, as its `describe` told it: workflows, steps
//! and their options. Stored with the package (JSON) and read typed.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// What a package exports, as `describe` told it. Stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PackageInfo {
    #[serde(default)]
    pub workflows: Vec<WorkflowInfo>,
    #[serde(default)]
    pub steps: Vec<StepInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowInfo {
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepInfo {
    pub name: String,
    pub description: String,
    pub options: StepOptions,
}

/// Step options as the engine keeps them (JSON-friendly mirror of the WIT).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StepOptions {
    pub retry: Option<RetryPolicy>,
    pub attempt_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub multiplier: f64,
    pub max_backoff_ms: u64,
    pub non_retryable: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff_ms: 1000,
            multiplier: 2.0,
            max_backoff_ms: 60_000,
            non_retryable: Vec::new(),
        }
    }
}

impl RetryPolicy {
    /// Wait after `failed` failed attempts (1-based).
    pub fn backoff_ms(&self, failed: u32) -> u64 {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(failed.saturating_sub(1) as i32);
        ((self.initial_backoff_ms as f64) * exp).min(self.max_backoff_ms as f64) as u64
    }
}

impl PackageInfo {
    /// The step called `name`, or an error listing the steps there are.
    pub fn step(&self, name: &str) -> std::result::Result<&StepInfo, String> {
        self.steps.iter().find(|s| s.name == name).ok_or_else(|| {
            format!(
                "the package has no step named '{name}'; it has: {}",
                list(self.steps.iter().map(|s| s.name.as_str()))
            )
        })
    }

    /// Checks that the package has a workflow called `name`.
    pub fn check_workflow(&self, name: &str) -> Result<()> {
        if self.workflows.iter().any(|w| w.name == name) {
            return Ok(());
        }
        Err(Error::InvalidInput(format!(
            "the package has no workflow named '{name}'; it has: {}",
            list(self.workflows.iter().map(|w| w.name.as_str()))
        )))
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            multiplier: 2.0,
            max_backoff_ms: 1000,
            non_retryable: Vec::new(),
        };
        let waits: Vec<u64> = (1..=6).map(|n| policy.backoff_ms(n)).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000]);
    }
}
