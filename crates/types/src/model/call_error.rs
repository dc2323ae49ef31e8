//! The errors user code gets from the engine (the WIT `error` record),
//! with their kinds typed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The kinds of errors the engine gives user code (the `kind` of the WIT
/// `error` record). Steps may fail with kinds of their own: [`Other`].
///
/// [`Other`]: ErrorKind::Other
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The execution was cancelled by an operator.
    Cancelled,
    /// The invocation panicked or trapped.
    Trap,
    /// It ran past its CPU deadline.
    Deadline,
    /// It hit its memory limit, or the node's memory budget had no room.
    Memory,
    /// It wrote more than its output limit to stdout and stderr.
    Output,
    /// The execution burned its fuel budget.
    Fuel,
    /// It overflowed its call stack.
    Stack,
    /// A payload (input, result) was larger than the tenant allows.
    Payload,
    /// The execution reached its limit of journal entries.
    Journal,
    /// Replay found a different call than the journal recorded.
    Nondeterminism,
    /// The package has no step of that name.
    UnknownStep,
    /// `await-steps` got a handle no step was started with.
    InvalidHandle,
    /// A poll ran past its timeout.
    PollTimeout,
    /// A poll used up its checks.
    PollExhausted,
    /// Not allowed here (a secret read from workflow code).
    Denied,
    /// The thing named does not exist (a secret).
    NotFound,
    /// The engine failed too often running the execution.
    Engine,
    /// A child workflow that was awaited was cancelled.
    ChildCancelled,
    /// A tenant quota (open executions) left no room: no child started.
    Quota,
    /// A kind of user code's own (e.g. `transient`), or `error`.
    Other(String),
}

impl ErrorKind {
    /// Every kind the engine produces, for documentation and tests.
    pub const ENGINE_KINDS: [ErrorKind; 19] = [
        ErrorKind::Cancelled,
        ErrorKind::Trap,
        ErrorKind::Deadline,
        ErrorKind::Memory,
        ErrorKind::Output,
        ErrorKind::Fuel,
        ErrorKind::Stack,
        ErrorKind::Payload,
        ErrorKind::Journal,
        ErrorKind::Nondeterminism,
        ErrorKind::UnknownStep,
        ErrorKind::InvalidHandle,
        ErrorKind::PollTimeout,
        ErrorKind::PollExhausted,
        ErrorKind::Denied,
        ErrorKind::NotFound,
        ErrorKind::Engine,
        ErrorKind::ChildCancelled,
        ErrorKind::Quota,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Trap => "trap",
            ErrorKind::Deadline => "deadline",
            ErrorKind::Memory => "memory",
            ErrorKind::Output => "output",
            ErrorKind::Fuel => "fuel",
            ErrorKind::Stack => "stack",
            ErrorKind::Payload => "payload",
            ErrorKind::Journal => "journal",
            ErrorKind::Nondeterminism => "nondeterminism",
            ErrorKind::UnknownStep => "unknown-step",
            ErrorKind::InvalidHandle => "invalid-handle",
            ErrorKind::PollTimeout => "poll-timeout",
            ErrorKind::PollExhausted => "poll-exhausted",
            ErrorKind::Denied => "denied",
            ErrorKind::NotFound => "not-found",
            ErrorKind::Engine => "engine",
            ErrorKind::ChildCancelled => "child-cancelled",
            ErrorKind::Quota => "quota",
            ErrorKind::Other(kind) => kind,
        }
    }

    pub fn parse(kind: &str) -> Self {
        Self::ENGINE_KINDS
            .iter()
            .find(|k| k.as_str() == kind)
            .cloned()
            .unwrap_or_else(|| ErrorKind::Other(kind.to_owned()))
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(ErrorKind::parse(&String::deserialize(d)?))
    }
}

fn generic_kind() -> ErrorKind {
    ErrorKind::Other("error".into())
}

/// An error as user code gets it (the WIT `error` record) and the journal
/// keeps it: `{"kind", "message", "details"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallError {
    #[serde(default = "generic_kind")]
    pub kind: ErrorKind,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: Option<Value>,
}

impl CallError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            details: None,
        }
    }

    pub fn cancelled() -> Self {
        Self::new(
            ErrorKind::Cancelled,
            "the execution was cancelled by an operator",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind the engine produces is documented where users look: the
    /// WIT `error` record and both SDKs.
    #[test]
    fn every_engine_kind_is_documented_in_the_contract_and_the_sdks() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        for file in [
            "wit/cerebelum.wit",
            "guest-sdk/rust/src/error.rs",
            "guest-sdk/python/cerebelum/errors.py",
        ] {
            let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
            for kind in ErrorKind::ENGINE_KINDS {
                assert!(
                    text.contains(&format!("\"{kind}\"")) || text.contains(&format!("`{kind}`")),
                    "{file} does not document the error kind {kind}"
                );
            }
        }
    }

    #[test]
    fn error_kinds_read_back_as_themselves() {
        for kind in ErrorKind::ENGINE_KINDS {
            assert_eq!(ErrorKind::parse(kind.as_str()), kind);
        }
        assert_eq!(
            ErrorKind::parse("transient"),
            ErrorKind::Other("transient".into())
        );
    }
}
