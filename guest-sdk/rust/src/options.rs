//! Retry, step and poll options.

use std::time::Duration;

use crate::bindings::cerebelum::workflow::types as wit;

/// Whole milliseconds in `d`, rounded up and saturating at `u64::MAX`.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// How a failed step is retried.
///
/// The wait after the n-th failed attempt is
/// `min(initial_backoff * multiplier^(n-1), max_backoff)`.
///
/// ```
/// use std::time::Duration;
/// use cerebelum_sdk::RetryPolicy;
///
/// let policy = RetryPolicy::new(5)
///     .initial_backoff(Duration::from_millis(200))
///     .multiplier(3.0)
///     .max_backoff(Duration::from_secs(10))
///     .non_retryable("invalid-input");
/// assert_eq!(policy.max_attempts, 5);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Total attempts including the first one; 1 means no retry.
    pub max_attempts: u32,
    /// Wait after the first failed attempt.
    pub initial_backoff: Duration,
    /// Growth factor of the wait between two attempts.
    pub multiplier: f64,
    /// Upper bound of the wait between two attempts.
    pub max_backoff: Duration,
    /// Error kinds that are never retried.
    pub non_retryable: Vec<String>,
}

impl RetryPolicy {
    /// At most `max_attempts` attempts in total (at least 1), with the
    /// default backoff.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            ..Self::default()
        }
    }

    /// Sets the wait after the first failed attempt.
    #[must_use]
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// Sets the growth factor of the wait.
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the upper bound of the wait.
    #[must_use]
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// Never retries errors of `kind`.
    #[must_use]
    pub fn non_retryable(mut self, kind: impl Into<String>) -> Self {
        self.non_retryable.push(kind.into());
        self
    }
}

impl Default for RetryPolicy {
    /// 3 attempts, 1 s initial backoff doubling up to 60 s.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1000),
            multiplier: 2.0,
            max_backoff: Duration::from_secs(60),
            non_retryable: Vec::new(),
        }
    }
}

impl From<&RetryPolicy> for wit::RetryPolicy {
    fn from(p: &RetryPolicy) -> Self {
        Self {
            max_attempts: p.max_attempts,
            initial_backoff_ms: millis(p.initial_backoff),
            multiplier: p.multiplier,
            max_backoff_ms: millis(p.max_backoff),
            non_retryable: p.non_retryable.clone(),
        }
    }
}

/// Options of one step call, or a step's defaults in [`package!`].
///
/// Unset fields fall back to the step's defaults, then to the engine's.
///
/// [`package!`]: crate::package
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StepOptions {
    /// How failed attempts are retried.
    pub retry: Option<RetryPolicy>,
    /// CPU deadline of one attempt.
    pub attempt_timeout: Option<Duration>,
    /// The external worker queue that serves the step instead of the
    /// sandbox (a worker process, e.g. `python -m cerebelum worker`, or
    /// any client of the worker API). A placement is the package's: set
    /// it in [`package!`](crate::package); a call's options cannot move
    /// a step (they are refused with `invalid-input`).
    pub worker: Option<String>,
    /// On a worker queue: an attempt no worker has taken this long fails
    /// (error kind `deadline`, retried by the policy); none: it waits.
    pub schedule_to_start: Option<Duration>,
    /// On a worker queue: an attempt whose worker sends no heartbeat this
    /// long fails; none: the server's `--worker-heartbeat-ms`.
    pub heartbeat: Option<Duration>,
}

impl StepOptions {
    /// Sets the retry policy.
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Sets the CPU deadline of one attempt.
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Places the step on the external worker queue `queue` (1 to 128
    /// letters, digits, `-`, `_` or `.`), in [`package!`](crate::package).
    ///
    /// ```
    /// use cerebelum_sdk::StepOptions;
    ///
    /// let on_devops = StepOptions::default().worker("devops");
    /// assert_eq!(on_devops.worker.as_deref(), Some("devops"));
    /// ```
    #[must_use]
    pub fn worker(mut self, queue: impl Into<String>) -> Self {
        self.worker = Some(queue.into());
        self
    }

    /// On a worker queue: fails an attempt no worker took within `timeout`.
    #[must_use]
    pub fn schedule_to_start(mut self, timeout: Duration) -> Self {
        self.schedule_to_start = Some(timeout);
        self
    }

    /// On a worker queue: fails an attempt whose worker sent no heartbeat
    /// for `timeout` (at least 100 ms).
    #[must_use]
    pub fn heartbeat(mut self, timeout: Duration) -> Self {
        self.heartbeat = Some(timeout);
        self
    }

    /// Whether it places the step (a worker queue or its timeouts), which
    /// only `package!` may.
    pub(crate) fn places(&self) -> bool {
        self.worker.is_some() || self.schedule_to_start.is_some() || self.heartbeat.is_some()
    }
}

impl From<&StepOptions> for wit::StepOptions {
    fn from(o: &StepOptions) -> Self {
        Self {
            retry: o.retry.as_ref().map(Into::into),
            attempt_timeout_ms: o.attempt_timeout.map(millis),
        }
    }
}

/// How [`Context::poll`] checks: every `interval`, at most `max_attempts`
/// times (default 30), and optionally no longer than `timeout` in total.
///
/// ```
/// use std::time::Duration;
/// use cerebelum_sdk::PollOptions;
///
/// let options = PollOptions::every(Duration::from_millis(500))
///     .max_attempts(20)
///     .timeout(Duration::from_secs(60));
/// assert_eq!(options.max_attempts, 20);
/// ```
///
/// [`Context::poll`]: crate::Context::poll
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollOptions {
    /// Wait between two checks.
    pub interval: Duration,
    /// Checks before giving up with `poll-exhausted`.
    pub max_attempts: u32,
    /// Total time before giving up with `poll-timeout`.
    pub timeout: Option<Duration>,
}

impl PollOptions {
    /// Checks every `interval`, at most 30 times, without a timeout.
    pub fn every(interval: Duration) -> Self {
        Self {
            interval,
            max_attempts: 30,
            timeout: None,
        }
    }

    /// Sets the number of checks before giving up.
    #[must_use]
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the total time before giving up.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl From<PollOptions> for wit::PollOptions {
    fn from(o: PollOptions) -> Self {
        Self {
            interval_ms: millis(o.interval),
            max_attempts: o.max_attempts,
            timeout_ms: o.timeout.map(millis),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_rounds_up_and_saturates() {
        assert_eq!(millis(Duration::ZERO), 0);
        assert_eq!(millis(Duration::from_micros(1)), 1);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn retry_defaults_and_builder() {
        let raw = wit::RetryPolicy::from(&RetryPolicy::default());
        assert_eq!(raw.max_attempts, 3);
        assert_eq!(raw.initial_backoff_ms, 1000);
        assert!((raw.multiplier - 2.0).abs() < f64::EPSILON);
        assert_eq!(raw.max_backoff_ms, 60_000);
        assert!(raw.non_retryable.is_empty());

        let policy = RetryPolicy::new(0)
            .initial_backoff(Duration::from_millis(200))
            .non_retryable("fatal");
        let raw = wit::RetryPolicy::from(&policy);
        assert_eq!(raw.max_attempts, 1);
        assert_eq!(raw.initial_backoff_ms, 200);
        assert_eq!(raw.non_retryable, ["fatal"]);
    }

    #[test]
    fn step_options() {
        let raw = wit::StepOptions::from(&StepOptions::default());
        assert!(raw.retry.is_none() && raw.attempt_timeout_ms.is_none());
        let options = StepOptions::default()
            .retry(RetryPolicy::new(4))
            .attempt_timeout(Duration::from_secs(2));
        let raw = wit::StepOptions::from(&options);
        assert_eq!(raw.retry.map(|r| r.max_attempts), Some(4));
        assert_eq!(raw.attempt_timeout_ms, Some(2000));
    }

    #[test]
    fn poll_options() {
        let raw = wit::PollOptions::from(PollOptions::every(Duration::from_millis(500)));
        assert_eq!(
            (raw.interval_ms, raw.max_attempts, raw.timeout_ms),
            (500, 30, None)
        );
        let options = PollOptions::every(Duration::from_secs(1))
            .max_attempts(5)
            .timeout(Duration::from_secs(3));
        let raw = wit::PollOptions::from(options);
        assert_eq!((raw.max_attempts, raw.timeout_ms), (5, Some(3000)));
    }
}
