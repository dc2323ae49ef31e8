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
    /// The worker queue that serves the step (the package's `placement`
    /// export); none: the sandbox. Packages only declare it (a call's
    /// options never carry it), and an execution's own queue wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// On a worker queue: an attempt no worker has taken this long fails;
    /// none: it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_to_start_ms: Option<u64>,
    /// On a worker queue: an attempt whose worker sends no heartbeat this
    /// long fails; none: the server's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
}

/// A step the package places on a worker queue (its `placement` export).
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub step: String,
    pub queue: String,
    pub schedule_to_start_ms: Option<u64>,
    pub heartbeat_ms: Option<u64>,
}

impl Placement {
    /// `step` on `queue`, with the server's timeouts.
    pub fn new(step: &str, queue: &str) -> Self {
        Self {
            step: step.to_owned(),
            queue: queue.to_owned(),
            schedule_to_start_ms: None,
            heartbeat_ms: None,
        }
    }
}

/// The shortest heartbeat timeout a package may ask for.
pub const MIN_HEARTBEAT_MS: u64 = 100;

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

    /// Places the steps of `placement` (the package's `placement` export)
    /// on their worker queues; an error names a step the package lacks, a
    /// queue name that is not one, a timeout out of range, or a step placed
    /// twice.
    pub fn place(&mut self, placement: Vec<Placement>) -> Result<()> {
        for placed in placement {
            let Placement {
                step,
                queue,
                schedule_to_start_ms,
                heartbeat_ms,
            } = placed;
            crate::model::check_queue_name(&queue).map_err(|e| {
                Error::InvalidInput(format!("the package places step '{step}' on a queue: {e}"))
            })?;
            if schedule_to_start_ms == Some(0) {
                return Err(Error::InvalidInput(format!(
                    "step '{step}': a schedule-to-start timeout of 0 ms fails every attempt; \
                     give a positive one, or none to wait for a worker"
                )));
            }
            if heartbeat_ms.is_some_and(|h| h < MIN_HEARTBEAT_MS) {
                return Err(Error::InvalidInput(format!(
                    "step '{step}': a heartbeat timeout must be at least {MIN_HEARTBEAT_MS} ms"
                )));
            }
            let known = list(self.steps.iter().map(|s| s.name.as_str()));
            let Some(info) = self.steps.iter_mut().find(|s| s.name == step) else {
                return Err(Error::InvalidInput(format!(
                    "the package places step '{step}' on worker queue '{queue}', but has no \
                     step of that name; it has: {known}"
                )));
            };
            if let Some(before) = info.options.worker.replace(queue.clone()) {
                return Err(Error::InvalidInput(format!(
                    "the package places step '{step}' on two worker queues, '{before}' and \
                     '{queue}'; a step has one"
                )));
            }
            info.options.schedule_to_start_ms = schedule_to_start_ms;
            info.options.heartbeat_ms = heartbeat_ms;
        }
        Ok(())
    }

    /// The worker queues the package's steps are placed on, with their
    /// steps, in step order.
    pub fn placed(&self) -> Vec<(&str, &str)> {
        self.steps
            .iter()
            .filter_map(|s| Some((s.name.as_str(), s.options.worker.as_deref()?)))
            .collect()
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

/// What checking a package against the open executions of its earlier
/// versions found (`cerebelum upload --check`, the console's package
/// page): each execution's journal replayed against the new code.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PackageCheck {
    /// The package checked.
    pub name: String,
    /// Its version, 0 for a component not (yet) stored.
    pub version: i64,
    pub sha256: String,
    /// Open (pending, running, waiting) executions of the package's
    /// earlier versions.
    pub open: i64,
    /// How many of them were replayed (all, or a sample).
    pub checked: i64,
    /// How many replayed cleanly against the new code.
    pub compatible: i64,
    /// Those that would diverge, each with its first divergence.
    pub diverging: Vec<CheckedExecution>,
    /// Those that could not be checked (an engine error), each with why.
    pub unchecked: Vec<CheckedExecution>,
    /// How long the check took.
    pub elapsed_ms: i64,
}

/// One execution of a [`PackageCheck`] that is not compatible.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckedExecution {
    pub id: String,
    /// The package version it runs on.
    pub version: i64,
    /// Entries in its journal.
    pub entries: i64,
    /// The first divergence (the `nondeterminism` message, which names
    /// the entry), or why it could not be checked.
    pub message: String,
}

impl PackageCheck {
    /// Every checked execution replayed cleanly.
    pub fn all_compatible(&self) -> bool {
        self.diverging.is_empty() && self.unchecked.is_empty()
    }

    /// One line: what was checked and what was found.
    pub fn summary(&self) -> String {
        let of = if self.checked < self.open {
            format!("a sample of {} of the {}", self.checked, self.open)
        } else {
            format!("{}", self.checked)
        };
        let mut found = format!("{} compatible", self.compatible);
        if !self.diverging.is_empty() {
            found += &format!(", {} would diverge", self.diverging.len());
        }
        if !self.unchecked.is_empty() {
            found += &format!(", {} could not be checked", self.unchecked.len());
        }
        format!(
            "checked {of} open execution{} of {}'s earlier versions in {:.1} s: {found}",
            if self.open == 1 { "" } else { "s" },
            self.name,
            self.elapsed_ms as f64 / 1000.0
        )
    }
}

/// What an upgrade (`cerebelum upgrade`) did with one execution.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpgradeResult {
    pub id: String,
    /// The version it was on.
    pub from_version: i64,
    /// The version it was to move to.
    pub to_version: i64,
    /// It moved (its journal has an `upgraded` entry).
    pub upgraded: bool,
    /// Why it did not move (a divergence, ...), or when it will; empty
    /// when it did.
    pub message: String,
    /// It was running: it moves when it next hibernates, if its journal
    /// then replays cleanly against the version.
    #[serde(default)]
    pub pending: bool,
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

    fn two_steps() -> PackageInfo {
        let step = |name: &str| StepInfo {
            name: name.into(),
            description: String::new(),
            options: StepOptions::default(),
        };
        PackageInfo {
            workflows: Vec::new(),
            steps: vec![step("plan"), step("ssh")],
        }
    }

    #[test]
    fn placement_puts_steps_on_queues() {
        let mut info = two_steps();
        let mut ssh = Placement::new("ssh", "devops");
        ssh.heartbeat_ms = Some(5_000);
        info.place(vec![ssh]).unwrap();
        assert_eq!(info.steps[1].options.heartbeat_ms, Some(5_000));
        assert_eq!(info.placed(), vec![("ssh", "devops")]);
        assert_eq!(info.steps[0].options.worker, None);
        // Stored as JSON and read back (an older package has no field).
        let text = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<PackageInfo>(&text).unwrap(), info);
        assert!(
            !serde_json::to_string(&two_steps())
                .unwrap()
                .contains("worker")
        );
    }

    #[test]
    fn placement_refuses_what_it_cannot_honour() {
        let placed = |step: &str, queue: &str, s2s, beat| Placement {
            schedule_to_start_ms: s2s,
            heartbeat_ms: beat,
            ..Placement::new(step, queue)
        };
        let cases = [
            (
                vec![placed("scp", "devops", None, None)],
                "has no step of that name; it has: plan, ssh",
            ),
            (
                vec![placed("ssh", "dev ops", None, None)],
                "'dev ops' is not a worker queue name",
            ),
            (
                vec![
                    placed("ssh", "a", None, None),
                    placed("ssh", "b", None, None),
                ],
                "on two worker queues, 'a' and 'b'",
            ),
            (vec![placed("ssh", "a", None, Some(10))], "at least 100 ms"),
            (
                vec![placed("ssh", "a", Some(0), None)],
                "fails every attempt",
            ),
        ];
        for (placement, expected) in cases {
            let err = two_steps().place(placement).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
