//! The node's budget of guest linear memory: what all live instances may
//! hold together, so that many invocations growing at once cannot take the
//! machine's memory, whatever each tenant's own limit.
//!
//! An instance takes its share as its memories grow (and at instantiation,
//! which grows them from zero) and gives it back when it is dropped. One
//! that would pass the budget waits for room, off its CPU time and without
//! its core, in turn (first come, first served) as others free theirs.
//!
//! Tenants take turns: each waits in a line of its own, and only the first
//! of each line waits for memory, so a tenant with forty invocations
//! waiting has one in the node's line at a time, and another tenant's
//! one waiter is served after at most one of them (FIFO per tenant,
//! round-robin between tenants).
//!
//! Waiting is only worth it while some holder of the budget runs and will
//! give its memory back. When every page held belongs to an invocation
//! that waits for more — or waits for other invocations (a workflow in
//! `call-step`: [`MemoryBudget::waiting_on_guests`]) — none ever will (48
//! memory bombs sat for minutes that way): the invocation that would
//! complete that circle fails at once with the `memory` error, its memory
//! goes to the first in line, and the others go on in turn. [`MAX_WAIT`]
//! bounds any other wait.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A tenant's line of memory waiters: the first holds the lock.
type Turn = Arc<tokio::sync::Mutex<()>>;

/// A wait for pages of the budget.
type Acquire = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = Result<OwnedSemaphorePermit, tokio::sync::AcquireError>>
            + Send,
    >,
>;

/// The unit of the budget: a wasm page.
const PAGE: usize = 64 << 10;

/// How long an invocation waits for room before it fails.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How often a waiter looks whether its wait could still end.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// Who waits: what they hold, and the invocations that wait for memory
/// in the order they began.
#[derive(Default)]
struct Waiters {
    /// Pages held by invocations that wait for more, or for others.
    held: usize,
    /// Each memory waiter's pages, by the order it began waiting.
    growing: BTreeMap<u64, usize>,
    next: u64,
}

/// The budget shared by a node's instances.
#[derive(Clone)]
pub struct MemoryBudget {
    pages: Arc<Semaphore>,
    total_pages: usize,
    waiters: Arc<Mutex<Waiters>>,
    /// Pages in [`Held`] values: held by invocations.
    in_use: Arc<AtomicUsize>,
    /// Each tenant's line: its first waiter holds the turn.
    turns: Arc<Mutex<HashMap<Arc<str>, Turn>>>,
}

/// Memory taken from a [`MemoryBudget`]; given back when dropped.
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    /// The budget's count of pages held by invocations.
    in_use: Option<Arc<AtomicUsize>>,
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        let total_pages = (bytes / PAGE).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            pages: Arc::new(Semaphore::new(total_pages)),
            total_pages,
            waiters: Arc::default(),
            in_use: Arc::default(),
            turns: Arc::default(),
        }
    }

    /// A quarter of this machine's memory (2 GiB where it cannot be
    /// read). Guest memory is not all a node uses: compiled code, the
    /// engine's own buffers and, on one machine, the database need the
    /// rest — with half, 48 memory bombs took 10.8 GB of a 23 GB machine
    /// that also ran PostgreSQL.
    pub fn default_bytes() -> usize {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib << 10)
            });
        total.map_or(2 << 30, |t| t / 4)
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
            return Ok(Held::none());
        }
        match self.pages.clone().try_acquire_many_owned(need as u32) {
            Ok(permit) => Ok(self.held(permit)),
            Err(_) => Err(need),
        }
    }

    /// Counts `held` as held by an invocation that waits for other
    /// invocations (which may wait for memory) until
    /// [`MemoryBudget::done_waiting`] with what this returns.
    pub fn waiting_on_guests(&self, held: &Held) -> usize {
        let pages = held.pages();
        self.waiters().held += pages;
        pages
    }

    /// The end of a [`MemoryBudget::waiting_on_guests`].
    pub fn done_waiting(&self, pages: usize) {
        self.waiters().held -= pages;
    }

    /// `permit` as held by an invocation.
    fn held(&self, permit: OwnedSemaphorePermit) -> Held {
        self.in_use
            .fetch_add(permit.num_permits(), Ordering::SeqCst);
        Held {
            permit: Some(permit),
            in_use: Some(self.in_use.clone()),
        }
    }

    fn waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the memory waiter `ticket` should give up: every page held
    /// is held by a waiter, and it is the latest of the waiters that hold
    /// any (failing it frees memory for the others).
    fn circle_closed_by(&self, ticket: u64) -> bool {
        let waiters = self.waiters();
        // Not `total - available`: permits the semaphore has handed to the
        // first waiter in line, short of all it asked for, are in neither.
        let held = self.in_use.load(Ordering::SeqCst);
        waiters.held >= held
            && waiters
                .growing
                .iter()
                .rev()
                .find(|(_, pages)| **pages > 0)
                .is_some_and(|(t, _)| *t == ticket)
    }

    /// `tenant`'s line of memory waiters.
    fn turn(&self, tenant: &str) -> Turn {
        let mut turns = self.turns.lock().unwrap_or_else(|p| p.into_inner());
        match turns.get(tenant) {
            Some(turn) => turn.clone(),
            None => {
                let turn = Arc::new(tokio::sync::Mutex::new(()));
                turns.insert(tenant.into(), turn.clone());
                turn
            }
        }
    }

    /// Waits for `pages` (from [`MemoryBudget::try_grow`]) for an
    /// invocation of `tenant` that holds `holding` pages (of all its
    /// memories), in turn (see the module docs); `None` if the budget
    /// could never hold them, if waiting could not end (it looks every
    /// [`CHECK_EVERY`]), or after [`MAX_WAIT`].
    pub(super) async fn grow(&self, tenant: &str, pages: usize, holding: usize) -> Option<Held> {
        if pages > self.total_pages {
            return None;
        }
        let ticket = {
            let mut waiters = self.waiters();
            let ticket = waiters.next;
            waiters.next += 1;
            waiters.held += holding;
            waiters.growing.insert(ticket, holding);
            ticket
        };
        // The tenant's turn first, then one acquisition for the whole
        // wait: each keeps its place in its line.
        let turn = self.turn(tenant).lock_owned();
        tokio::pin!(turn);
        let mut acquire: Option<(Acquire, tokio::sync::OwnedMutexGuard<()>)> = None;
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        let got = loop {
            if self.circle_closed_by(ticket) {
                break None;
            }
            tokio::select! {
                mine = &mut turn, if acquire.is_none() => {
                    let permits = self.pages.clone().acquire_many_owned(pages as u32);
                    acquire = Some((Box::pin(permits), mine));
                }
                got = async { acquire.as_mut().expect("guarded").0.as_mut().await },
                    if acquire.is_some() =>
                {
                    break got.ok().map(|p| self.held(p));
                }
                () = tokio::time::sleep(CHECK_EVERY) => {
                    if tokio::time::Instant::now() >= deadline {
                        break None;
                    }
                }
            }
        };
        let mut waiters = self.waiters();
        waiters.held -= holding;
        waiters.growing.remove(&ticket);
        got
    }
}

impl Held {
    /// Nothing held.
    pub fn none() -> Self {
        Held {
            permit: None,
            in_use: None,
        }
    }

    /// Pages held.
    pub fn pages(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// Adds `more` to what is held.
    pub fn merge(&mut self, mut more: Held) {
        // `more`'s pages stay counted in use: they move here.
        let theirs = more.permit.take();
        if self.in_use.is_none() {
            self.in_use = more.in_use.take();
        }
        match (&mut self.permit, theirs) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let (Some(permit), Some(in_use)) = (&self.permit, &self.in_use) {
            in_use.fetch_sub(permit.num_permits(), Ordering::SeqCst);
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
        // A waiter holding 1 page: the holder of 8 runs, so it waits.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.grow("t", 5, 1).await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(
            waiting.await.unwrap(),
            "room came when the holder went away"
        );
        assert!(
            budget.grow("t", 11, 0).await.is_none(),
            "more than the whole budget"
        );
    }

    #[tokio::test]
    async fn tenants_take_turns_and_each_tenant_waits_in_order() {
        let budget = MemoryBudget::new(10 * PAGE);
        let all = budget.try_grow(0, 10 * PAGE).ok().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let wait = |tenant: &'static str, name: &'static str| {
            let (budget, order) = (budget.clone(), order.clone());
            tokio::spawn(async move {
                let held = budget.grow(tenant, 5, 0).await.expect("room comes");
                order.lock().unwrap().push(name);
                // Hold it until the test ends.
                tokio::time::sleep(Duration::from_secs(3600)).await;
                drop(held);
            })
        };
        // Three of A's wait, then one of B's.
        let mut waiting = Vec::new();
        for (tenant, name) in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1")] {
            waiting.push(wait(tenant, name));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Room for two: A's first, then B's (not A's second).
        drop(all);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*order.lock().unwrap(), ["a1", "b1"]);
        for task in waiting {
            task.abort();
        }
    }

    #[tokio::test]
    async fn a_wait_that_could_never_end_fails_at_once() {
        let budget = MemoryBudget::new(10 * PAGE);
        let first = budget.try_grow(0, 6 * PAGE).ok().unwrap();
        let second = budget.try_grow(0, 4 * PAGE).ok().unwrap();
        // The first waits for more while the second runs: it may wait.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.grow("a", 2, 6).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The second asks too: both would wait for ever. It fails now...
        let started = std::time::Instant::now();
        assert!(budget.grow("b", 2, 4).await.is_none());
        assert!(started.elapsed() < MAX_WAIT / 2);
        // ...its memory is freed, and the first goes on.
        drop(second);
        assert!(waiting.await.unwrap());
        drop(first);
    }
}
