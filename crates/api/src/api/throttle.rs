//! Failed authentications, limited per peer address: after
//! [`MAX_FAILURES`] (`serve --max-auth-failures`) wrong keys from one
//! address within [`WINDOW`], further
//! attempts from it are refused at once (without looking the key up) until
//! the window has passed. A failure is logged with the peer's address and
//! never with the key presented. Guessing a key is hopeless anyway (192
//! random bits); this keeps a guesser from costing the database a lookup
//! per attempt and makes the attempts visible.
//!
//! One [`Throttle`] per server, shared by gRPC's front door and the
//! console's sign-in. Its memory is bounded: at most [`MAX_PEERS`]
//! addresses are remembered, the oldest windows forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Wrong keys one address may present per window, by default.
pub const MAX_FAILURES: u32 = 20;
/// The window over which failures are counted.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most.
const MAX_PEERS: usize = 10_000;

#[derive(Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// The failed authentications of recent peers.
#[derive(Clone)]
pub struct Throttle {
    peers: Arc<Mutex<HashMap<IpAddr, Failures>>>,
    /// Failures per window before refusals; 0: no limit.
    max: u32,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(MAX_FAILURES)
    }
}

impl Throttle {
    /// Refuses a peer after `max` failures in a window (0: never).
    pub fn new(max: u32) -> Self {
        Self {
            peers: Arc::default(),
            max,
        }
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err(seconds to wait)` if `peer` has failed too often lately.
    pub fn check(&self, peer: Option<IpAddr>) -> Result<(), u64> {
        self.check_at(peer, Instant::now())
    }

    fn check_at(&self, peer: Option<IpAddr>, now: Instant) -> Result<(), u64> {
        let Some(peer) = peer else { return Ok(()) };
        if self.max == 0 {
            return Ok(());
        }
        match self.peers().get(&peer) {
            Some(f) if f.count >= self.max && now.duration_since(f.since) < WINDOW => {
                let left = WINDOW.saturating_sub(now.duration_since(f.since));
                Err(left.as_secs().max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed authentication from `peer` (`what` failed: logged,
    /// the key never is).
    pub fn failed(&self, peer: Option<IpAddr>, what: &str) {
        self.failed_at(peer, what, Instant::now());
    }

    fn failed_at(&self, peer: Option<IpAddr>, what: &str, now: Instant) {
        crate::metrics::metrics().auth_failures.inc();
        let Some(peer) = peer else {
            tracing::warn!(reason = what, "failed authentication from an unknown peer");
            return;
        };
        let mut peers = self.peers();
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            peers.retain(|_, f| now.duration_since(f.since) < WINDOW);
            if peers.len() >= MAX_PEERS {
                // Still full of live windows: forget the oldest one.
                if let Some(oldest) = peers.iter().min_by_key(|(_, f)| f.since).map(|(p, _)| *p) {
                    peers.remove(&oldest);
                }
            }
        }
        let failures = peers.entry(peer).or_insert(Failures {
            since: now,
            count: 0,
        });
        if now.duration_since(failures.since) >= WINDOW {
            *failures = Failures {
                since: now,
                count: 0,
            };
        }
        failures.count += 1;
        let count = failures.count;
        drop(peers);
        if count == self.max {
            tracing::warn!(
                %peer, reason = what, failures = count,
                "failed authentication; further attempts from this address are refused for {} s",
                WINDOW.as_secs()
            );
        } else if count < self.max || self.max == 0 {
            tracing::warn!(%peer, reason = what, failures = count, "failed authentication");
        }
    }
}

/// The message of a refusal by the throttle.
pub fn refusal(wait_s: u64) -> String {
    format!(
        "too many failed authentications from this address; try again in {wait_s} s with a \
         valid API key"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_refused_after_too_many_failures_until_its_window_passes() {
        let throttle = Throttle::default();
        let guesser: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES {
            assert_eq!(throttle.check_at(Some(guesser), t0), Ok(()), "failure {i}");
            throttle.failed_at(Some(guesser), "unknown key", t0);
        }
        let wait = throttle.check_at(Some(guesser), t0 + Duration::from_secs(10));
        assert_eq!(wait, Err(50), "refused for the rest of the window");
        assert_eq!(throttle.check_at(Some(other), t0), Ok(()), "others are not");
        assert_eq!(throttle.check_at(None, t0), Ok(()));
        assert_eq!(
            throttle.check_at(Some(guesser), t0 + WINDOW),
            Ok(()),
            "after the window"
        );
        throttle.failed_at(Some(guesser), "unknown key", t0 + WINDOW);
        assert_eq!(
            throttle.check_at(Some(guesser), t0 + WINDOW),
            Ok(()),
            "a new window counts from zero"
        );
    }

    #[test]
    fn no_limit_refuses_nobody() {
        let throttle = Throttle::new(0);
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..100 {
            throttle.failed_at(Some(peer), "unknown key", t0);
        }
        assert_eq!(throttle.check_at(Some(peer), t0), Ok(()));
    }

    #[test]
    fn memory_is_bounded() {
        let throttle = Throttle::default();
        let t0 = Instant::now();
        for i in 0..(MAX_PEERS as u32 + 50) {
            let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            throttle.failed_at(
                Some(peer),
                "unknown key",
                t0 + Duration::from_millis(i.into()),
            );
        }
        assert!(throttle.peers().len() <= MAX_PEERS);
    }
}
