//! What user code reports about itself: `set-state` (the execution's
//! published state), `report-progress` and `log`.

use super::*;
use crate::journal::call::answered;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `set-state`: the execution's published state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateArgs {
    pub state: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub percent: u8,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

answered!(SetState(StateArgs) -> Value);
answered!(ReportProgress(Progress) -> Value);
answered!(Log(LogLine) -> Value);

impl Show for SetState {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        let state = &self.args.state;
        Shown {
            row: Some("state"),
            title: format!("state {}", crate::util::shorten(&state.to_string(), 200)),
            line: Some(format!("◆ state: {state}")),
            ..Shown::default()
        }
    }
}

impl Show for ReportProgress {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        // `watch` shows it as its progress bar, not a line.
        Shown {
            row: Some("progress"),
            title: format!("progress {}%: {}", self.args.percent, self.args.message),
            ..Shown::default()
        }
    }
}

impl Show for Log {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        let line = format!("[{}] {}", self.args.level, self.args.message);
        Shown {
            row: Some("log"),
            line: Some(format!("  {line}")),
            title: line,
            ..Shown::default()
        }
    }
}
