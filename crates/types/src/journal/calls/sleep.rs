//! `sleep`: a durable timer; long ones hibernate the execution.

use super::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SleepArgs {
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sleep {
    pub args: SleepArgs,
    /// When it ends (the clock when it was made + the duration).
    pub due_at: i64,
}

impl Show for Sleep {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        Shown {
            row: Some("sleep"),
            title: format!("sleeps {}", duration(self.args.duration_ms as i64)),
            due_ms: Some(self.due_at),
            waits: true,
            name: Some("sleep".into()),
            waiting: Some(format!("sleep until {}", utc(self.due_at))),
            line: Some(format!("⏸ sleeping {} ms (durable)", self.args.duration_ms)),
            ..Shown::default()
        }
    }
}
