//! Time, injected: engine and host code never read the system clock directly.
//!
//! Everything an execution's semantics depends on goes through a
//! [`Clock`]: the due times of sleeps, poll intervals, retry backoffs and
//! approval timeouts, the clock user code reads, lease expiry, and the
//! waits until those due times. A [`TestClock`] replaces it in tests, so a
//! three-day durable sleep takes no time at all. What only paces the
//! engine's own work (the scheduler's polling tick, rate limits, I/O
//! timeouts) runs on real time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A future of a [`Clock`] wait.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A source of wall-clock time in milliseconds since the Unix epoch.
///
/// Everything the engine schedules (timers, backoffs, leases, approval
/// timeouts) is computed from this clock, never from the system clock
/// directly, so a simulated clock can be substituted.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;

    /// Resolves once [`Clock::now_ms`] has reached `due_ms`.
    fn sleep_until(&self, due_ms: i64) -> Sleep;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as i64
    }

    fn sleep_until(&self, due_ms: i64) -> Sleep {
        let remaining = (due_ms - self.now_ms()).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(remaining)))
    }
}

/// A clock that moves only when told to ([`TestClock::advance`]): waits
/// on it end when it is moved past their due time.
#[derive(Debug, Clone)]
pub struct TestClock(Arc<TestTime>);

#[derive(Debug)]
struct TestTime {
    now: AtomicI64,
    moved: tokio::sync::Notify,
}

impl TestClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: i64) -> Self {
        Self(Arc::new(TestTime {
            now: AtomicI64::new(now_ms),
            moved: tokio::sync::Notify::new(),
        }))
    }

    /// A clock showing the system's time now (then moving only when told).
    pub fn at_system_time() -> Self {
        Self::new(SystemClock.now_ms())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.0
            .now
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        self.0.moved.notify_waiters();
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.now.load(Ordering::SeqCst)
    }

    fn sleep_until(&self, due_ms: i64) -> Sleep {
        let time = self.0.clone();
        Box::pin(async move {
            loop {
                let moved = time.moved.notified();
                if time.now.load(Ordering::SeqCst) >= due_ms {
                    return;
                }
                moved.await;
            }
        })
    }
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_on_the_test_clock_ends_when_it_is_moved_past_its_due_time() {
        let clock = TestClock::new(1_000);
        let shared: SharedClock = Arc::new(clock.clone());
        let wait = tokio::spawn(shared.sleep_until(1_000 + 3 * 86_400_000));
        clock.advance(Duration::from_secs(86_400));
        tokio::task::yield_now().await;
        assert!(!wait.is_finished());
        clock.advance(Duration::from_secs(2 * 86_400));
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .expect("the wait ended")
            .unwrap();
    }
}
