//! The node's budget of guest linear memory: what all live instances may
//! hold together, so that many invocations growing at once cannot take the
//! machine's memory, whatever each tenant's own limit.
//!
//! An instance takes its share as its memories grow (and at instantiation,
//! which grows them from zero) and gives it back when it is dropped. One
//! that would pass the budget waits for room, off its CPU time and without
//! its core; after [`MAX_WAIT`] it fails with the `memory` error instead
//! of waiting for ever (invocations that all wait on each other could).

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The unit of the budget: a wasm page.
const PAGE: usize = 64 << 10;

/// How long an invocation waits for room before it fails.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// The budget shared by a node's instances.
#[derive(Clone)]
pub struct MemoryBudget {
    pages: Arc<Semaphore>,
    total_pages: usize,
}

/// Memory taken from a [`MemoryBudget`]; given back when dropped.
pub struct Held(Option<OwnedSemaphorePermit>);

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        let total_pages = (bytes / PAGE).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            pages: Arc::new(Semaphore::new(total_pages)),
            total_pages,
        }
    }

    /// Half of this machine's memory (4 GiB where it cannot be read).
    pub fn default_bytes() -> usize {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib << 10)
            });
        total.map_or(4 << 30, |t| t / 2)
    }

    /// The whole budget, bytes.
    pub fn bytes(&self) -> usize {
        self.total_pages * PAGE
    }

    /// Bytes not held by any instance now.
    pub fn available(&self) -> usize {
        self.pages.available_permits() * PAGE
    }

    fn pages(bytes: usize) -> usize {
        bytes.div_ceil(PAGE)
    }

    /// Takes what growing from `current` to `desired` bytes needs at once,
    /// if there is room; `Err(pages)` with what it needs otherwise.
    pub(super) fn try_grow(&self, current: usize, desired: usize) -> Result<Held, usize> {
        let need = Self::pages(desired).saturating_sub(Self::pages(current));
        if need == 0 {
            return Ok(Held(None));
        }
        match self.pages.clone().try_acquire_many_owned(need as u32) {
            Ok(permit) => Ok(Held(Some(permit))),
            Err(_) => Err(need),
        }
    }

    /// Waits for `pages` (from [`MemoryBudget::try_grow`]); `None` if the
    /// budget could never hold them or they did not come within [`MAX_WAIT`].
    pub(super) async fn grow(&self, pages: usize) -> Option<Held> {
        if pages > self.total_pages {
            return None;
        }
        tokio::time::timeout(
            MAX_WAIT,
            self.pages.clone().acquire_many_owned(pages as u32),
        )
        .await
        .ok()?
        .ok()
        .map(|p| Held(Some(p)))
    }
}

impl Held {
    /// Nothing held.
    pub fn none() -> Self {
        Held(None)
    }

    /// Adds `more` to what is held.
    pub fn merge(&mut self, more: Held) {
        match (&mut self.0, more.0) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn growth_takes_room_and_dropping_gives_it_back() {
        let budget = MemoryBudget::new(10 * PAGE);
        let mut held = budget.try_grow(0, 6 * PAGE).ok().unwrap();
        assert_eq!(budget.available(), 4 * PAGE);
        assert_eq!(budget.try_grow(6 * PAGE, 12 * PAGE).err(), Some(6));
        held.merge(budget.try_grow(6 * PAGE, 8 * PAGE).ok().unwrap());
        assert_eq!(budget.available(), 2 * PAGE);
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.grow(5).await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(
            waiting.await.unwrap(),
            "room came when the holder went away"
        );
        assert!(
            budget.grow(11).await.is_none(),
            "more than the whole budget"
        );
    }
}
