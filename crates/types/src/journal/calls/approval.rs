//! `await-approval`: waits for a person's decision (or a timeout); the
//! request is kept in the approvals table beside the journal.

use super::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalArgs {
    pub key: String,
    pub message: String,
    pub details: Option<Value>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwaitApproval {
    pub args: ApprovalArgs,
    /// When it times out, if it does.
    pub due_at: Option<i64>,
}

/// The answer of an `await-approval`, as its result holds it:
/// `{"approved": payload}`, `{"rejected": reason}` or `"timed-out"`.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    Approved(Value),
    Rejected(String),
    TimedOut,
}

impl Decided {
    pub fn to_value(&self) -> Value {
        match self {
            Decided::Approved(payload) => json!({ "approved": payload }),
            Decided::Rejected(reason) => json!({ "rejected": reason }),
            Decided::TimedOut => json!("timed-out"),
        }
    }

    pub fn from_value(v: &Value) -> Self {
        if let Some(payload) = v.get("approved") {
            return Decided::Approved(payload.clone());
        }
        match v.get("rejected") {
            Some(Value::String(reason)) => Decided::Rejected(reason.clone()),
            Some(other) => Decided::Rejected(other.to_string()),
            None => Decided::TimedOut,
        }
    }
}

impl Show for AwaitApproval {
    fn show(&self, cx: &ShowContext<'_>) -> Shown {
        let key = &self.args.key;
        let mut details = vec![Detail::Text(self.args.message.clone())];
        details.extend(self.args.details.clone().map(Detail::Json));
        let id = cx.execution;
        Shown {
            row: Some("approval"),
            title: format!("waits for approval '{key}'"),
            details,
            due_ms: self.due_at,
            waits: true,
            name: Some(format!("approval '{key}'")),
            waiting: Some(match self.due_at {
                Some(due) => format!("approval '{key}' (times out {})", utc(due)),
                None => format!("approval '{key}'"),
            }),
            line: Some(format!(
                "⏳ waiting for approval '{key}': {}\n   approve: cerebelum approve {id} {key} \
                 --payload '{{}}'   reject: cerebelum reject {id} {key} --reason '...'",
                self.args.message
            )),
        }
    }
}
