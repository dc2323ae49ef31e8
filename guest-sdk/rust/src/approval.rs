//! Human approvals: [`Approval`] asks, [`Decision`] answers.

use std::time::Duration;

use serde_json::Value;

use crate::bindings::cerebelum::workflow::types as wit;
use crate::options::millis;

/// A request for an operator's decision, see [`Context::await_approval`].
///
/// ```
/// use std::time::Duration;
/// use cerebelum_sdk::Approval;
/// use serde_json::json;
///
/// let request = Approval::new("go-live")
///     .message("Put web-1 into the load balancer?")
///     .details(json!({"ip": "10.0.0.7"}))
///     .timeout(Duration::from_secs(3600));
/// assert_eq!(request.key, "go-live");
/// ```
///
/// [`Context::await_approval`]: crate::Context::await_approval
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Approval {
    /// Identifies the approval within the execution.
    pub key: String,
    /// What the operator is asked.
    pub message: String,
    /// Structured context shown to the operator.
    pub details: Option<Value>,
    /// After this long the approval resolves to [`Decision::TimedOut`].
    pub timeout: Option<Duration>,
}

impl Approval {
    /// An approval identified by `key` within the execution, with no message,
    /// no details and no timeout.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: String::new(),
            details: None,
            timeout: None,
        }
    }

    /// Sets what the operator is asked.
    #[must_use]
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Sets structured context shown to the operator.
    #[must_use]
    pub fn details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Resolves to [`Decision::TimedOut`] after `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl From<Approval> for wit::ApprovalRequest {
    fn from(a: Approval) -> Self {
        Self {
            key: a.key,
            message: a.message,
            details: a.details.map(|value| value.to_string()),
            timeout_ms: a.timeout.map(millis),
        }
    }
}

/// The outcome of an [`Approval`].
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Approved, with the payload the operator attached (JSON `null` if none).
    Approved(Value),
    /// Rejected, with the operator's reason.
    Rejected(String),
    /// Nobody decided before the approval's timeout.
    TimedOut,
}

impl From<wit::ApprovalDecision> for Decision {
    fn from(d: wit::ApprovalDecision) -> Self {
        match d {
            // A payload that is not JSON is kept as a JSON string.
            wit::ApprovalDecision::Approved(raw) => {
                Self::Approved(serde_json::from_str(&raw).unwrap_or_else(|_| {
                    if raw.trim().is_empty() {
                        Value::Null
                    } else {
                        Value::String(raw)
                    }
                }))
            }
            wit::ApprovalDecision::Rejected(reason) => Self::Rejected(reason),
            wit::ApprovalDecision::TimedOut => Self::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request() {
        let raw = wit::ApprovalRequest::from(
            Approval::new("k")
                .message("ok?")
                .details(json!({"a": 1}))
                .timeout(Duration::from_secs(2)),
        );
        assert_eq!(raw.key, "k");
        assert_eq!(raw.message, "ok?");
        assert_eq!(raw.details.as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(raw.timeout_ms, Some(2000));
        let raw = wit::ApprovalRequest::from(Approval::new("k"));
        assert!(raw.details.is_none() && raw.timeout_ms.is_none());
    }

    #[test]
    fn decisions() {
        let approved = wit::ApprovalDecision::Approved(r#"{"by":"ana"}"#.into());
        assert_eq!(
            Decision::from(approved),
            Decision::Approved(json!({"by": "ana"}))
        );
        let empty = wit::ApprovalDecision::Approved(String::new());
        assert_eq!(Decision::from(empty), Decision::Approved(Value::Null));
        let text = wit::ApprovalDecision::Approved("yes".into());
        assert_eq!(Decision::from(text), Decision::Approved(json!("yes")));
        let rejected = wit::ApprovalDecision::Rejected("no".into());
        assert_eq!(Decision::from(rejected), Decision::Rejected("no".into()));
        assert_eq!(
            Decision::from(wit::ApprovalDecision::TimedOut),
            Decision::TimedOut
        );
    }
}
