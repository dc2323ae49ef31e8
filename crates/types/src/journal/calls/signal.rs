//! `await-signal`: takes the next signal of a name sent to the execution
//! (buffered until then), or times out.

use super::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalArgs {
    pub name: String,
    pub timeout_ms: Option<u64>,
}

/// `await-signal`: its result is `{"received": payload}` or `"timed-out"`
/// (see [`Received`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwaitSignal {
    pub args: SignalArgs,
    /// When it times out, if it does.
    pub due_at: Option<i64>,
}

/// The answer of an `await-signal`, as its result holds it:
/// `{"received": payload}` or `"timed-out"`.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    Signal(Value),
    TimedOut,
}

impl Received {
    pub fn to_value(&self) -> Value {
        match self {
            Received::Signal(payload) => json!({ "received": payload }),
            Received::TimedOut => json!("timed-out"),
        }
    }

    pub fn from_value(v: &Value) -> Self {
        match v.get("received") {
            Some(payload) => Received::Signal(payload.clone()),
            None => Received::TimedOut,
        }
    }
}

impl Show for AwaitSignal {
    fn show(&self, cx: &ShowContext<'_>) -> Shown {
        let name = &self.args.name;
        Shown {
            row: Some("signal"),
            title: format!("waits for signal '{name}'"),
            due_ms: self.due_at,
            waits: true,
            name: Some(format!("signal '{name}'")),
            waiting: Some(match self.due_at {
                Some(due) => format!("signal '{name}' (times out {})", utc(due)),
                None => format!("signal '{name}'"),
            }),
            line: Some(format!(
                "⏳ waiting for signal '{name}'\n   send: cerebelum signal {} {name} --payload '{{}}'",
                cx.execution
            )),
            ..Shown::default()
        }
    }
}
