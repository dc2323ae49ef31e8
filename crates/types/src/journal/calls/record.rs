//! `remember` / `recall`: a value user code records under a name and gets
//! back on replay (the Python SDK records its clock, its random seed and
//! what a `sleep(ms, data)` waits for this way).

use super::*;
use crate::journal::call::answered;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The name a value is recorded under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordName {
    pub name: String,
}

answered!(Record(RecordName) -> Value);

impl Show for Record {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        if self.args.name != "sleep" {
            return Shown::default();
        }
        // What the Python SDK's `sleep(ms, data)` waits for.
        Shown {
            row: Some("sleep"),
            title: format!(
                "sleeps {} ms: {}",
                self.answer["duration_ms"], self.answer["data"]
            ),
            ..Shown::default()
        }
    }
}

/// The id of a patch (`patched(id)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchId {
    pub id: String,
}

answered!(
    /// A run reached patch `id` on code that has it: it takes the new
    /// path (the answer is always true; old histories have no entry).
    Patched(PatchId) -> bool
);

impl Show for Patched {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        Shown::default()
    }
}
