//! The error type shared by workflows, steps and the engine.

use std::fmt;

use serde_json::Value;

use crate::bindings::cerebelum::workflow::types as wit;

/// An error returned by user code or produced by the engine.
///
/// `kind` is a short machine-readable tag. The kinds produced by the engine
/// are the constants of [`kind`]. Kinds produced by this SDK:
/// `unknown-workflow`, `unknown-step`, `invalid-input` (input JSON that does
/// not fit the function's input type), `invalid-output` (a result that does not
/// fit the type the caller asked for).
///
/// Step errors are retried according to the step's [`RetryPolicy`], except
/// for the kinds it lists as non-retryable.
///
/// [`RetryPolicy`]: crate::RetryPolicy
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    /// Machine-readable tag, e.g. `"transient"` or `"cancelled"`.
    pub kind: String,
    /// Human-readable description.
    pub message: String,
    /// Optional structured context.
    pub details: Option<Value>,
}

/// The kinds of errors the engine produces (see `error` in
/// `wit/cerebelum.wit`), to match on `Error::kind`:
///
/// ```
/// use cerebelum_sdk::{Error, kind};
/// # let err = Error::new(kind::DEADLINE, "late");
/// match err.kind.as_str() {
///     kind::DEADLINE | kind::MEMORY => { /* a limit of the sandbox */ }
///     kind::CANCELLED => { /* compensate */ }
///     _ => {}
/// }
/// ```
pub mod kind {
    /// The execution was cancelled by an operator.
    pub const CANCELLED: &str = "cancelled";
    /// The invocation panicked or trapped.
    pub const TRAP: &str = "trap";
    /// It ran past its CPU deadline.
    pub const DEADLINE: &str = "deadline";
    /// It hit its memory limit (or the node's guest memory budget).
    pub const MEMORY: &str = "memory";
    /// It wrote more than its limit to stdout and stderr.
    pub const OUTPUT: &str = "output";
    /// The execution burned its fuel budget.
    pub const FUEL: &str = "fuel";
    /// It overflowed its call stack.
    pub const STACK: &str = "stack";
    /// An input or result was larger than the tenant allows.
    pub const PAYLOAD: &str = "payload";
    /// The execution reached its limit of journal entries.
    pub const JOURNAL: &str = "journal";
    /// Replay found another call than the journal recorded.
    pub const NONDETERMINISM: &str = "nondeterminism";
    /// The package has no step of that name.
    pub const UNKNOWN_STEP: &str = "unknown-step";
    /// `await_steps` got a handle no step was started with.
    pub const INVALID_HANDLE: &str = "invalid-handle";
    /// A poll ran past its timeout.
    pub const POLL_TIMEOUT: &str = "poll-timeout";
    /// A poll used up its checks.
    pub const POLL_EXHAUSTED: &str = "poll-exhausted";
    /// Not allowed here (a secret read from workflow code, a step on a
    /// worker queue under `cerebelum run`).
    pub const DENIED: &str = "denied";
    /// No such secret.
    pub const NOT_FOUND: &str = "not-found";
    /// The engine failed running the execution too often.
    pub const ENGINE: &str = "engine";
    /// An awaited child workflow was cancelled.
    pub const CHILD_CANCELLED: &str = "child-cancelled";
    /// The tenant's open executions are at their limit: no child started.
    pub const QUOTA: &str = "quota";
    /// Every kind above.
    pub const ALL: [&str; 19] = [
        CANCELLED,
        TRAP,
        DEADLINE,
        MEMORY,
        OUTPUT,
        FUEL,
        STACK,
        PAYLOAD,
        JOURNAL,
        NONDETERMINISM,
        UNKNOWN_STEP,
        INVALID_HANDLE,
        POLL_TIMEOUT,
        POLL_EXHAUSTED,
        DENIED,
        NOT_FOUND,
        ENGINE,
        CHILD_CANCELLED,
        QUOTA,
    ];
}

impl Error {
    /// Kind of the error the engine returns once an execution is cancelled.
    pub const CANCELLED: &'static str = kind::CANCELLED;

    /// An error of `kind` with `message`.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
            details: None,
        }
    }

    /// An error of the generic kind `"error"`.
    pub fn msg(message: impl Into<String>) -> Self {
        Self::new("error", message)
    }

    /// Attaches structured details.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Whether the execution was cancelled: the workflow should compensate
    /// (if needed) and return this error.
    pub fn is_cancelled(&self) -> bool {
        self.kind == Self::CANCELLED
    }

    /// A result that does not deserialize into the type the caller asked for.
    pub(crate) fn invalid_output(what: &str, err: &serde_json::Error) -> Self {
        Self::new("invalid-output", format!("{what}: {err}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for Error {}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::new("invalid-input", err.to_string())
    }
}

impl From<wit::Error> for Error {
    fn from(err: wit::Error) -> Self {
        Self {
            kind: err.kind,
            message: err.message,
            // Details that are not JSON are kept as a JSON string.
            details: err
                .details
                .map(|raw| serde_json::from_str(&raw).unwrap_or(Value::String(raw))),
        }
    }
}

impl From<Error> for wit::Error {
    fn from(err: Error) -> Self {
        Self {
            kind: err.kind,
            message: err.message,
            details: err.details.map(|value| value.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constructors() {
        let err = Error::new("transient", "apt lock held");
        assert_eq!(err.to_string(), "transient: apt lock held");
        assert!(!err.is_cancelled());
        assert_eq!(Error::msg("x").kind, "error");
        assert!(Error::new("cancelled", "stop").is_cancelled());
    }

    #[test]
    fn serde_errors_are_invalid_input() {
        let err: Error = serde_json::from_str::<u32>("\"x\"").unwrap_err().into();
        assert_eq!(err.kind, "invalid-input");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[test]
    fn wit_round_trip() {
        let err = Error::new("k", "m").with_details(json!({"a": [1, 2]}));
        let raw: wit::Error = err.clone().into();
        assert_eq!(raw.details.as_deref(), Some(r#"{"a":[1,2]}"#));
        assert_eq!(Error::from(raw), err);
    }

    #[test]
    fn non_json_details_become_a_string() {
        let raw = wit::Error {
            kind: "k".into(),
            message: "m".into(),
            details: Some("not json".into()),
        };
        assert_eq!(Error::from(raw).details, Some(json!("not json")));
    }
}
