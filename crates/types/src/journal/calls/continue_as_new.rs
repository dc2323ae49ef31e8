//! `continue-as-new`: ends the execution, and a new one of the same
//! workflow continues it with a new input (a fresh journal).

use super::*;
use crate::journal::call::answered;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `continue-as-new`: the input of the execution that continues this one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinueArgs {
    pub input: Value,
}

answered! {
    /// Answered with the id of the execution that continues this one.
    ContinueAsNew(ContinueArgs) -> String
}

impl Show for ContinueAsNew {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        let next = &self.answer;
        Shown {
            row: Some("continue"),
            title: format!("continued as {next}"),
            details: vec![Detail::Json(self.args.input.clone())],
            line: Some(format!("↻ continued as {next} (cerebelum watch {next})")),
            ..Shown::default()
        }
    }
}
