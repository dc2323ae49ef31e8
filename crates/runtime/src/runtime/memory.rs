//! The node's budget of guest linear memory: what all live instances may
//! hold together, so that many invocations growing at once cannot take the
//! machine's memory, whatever each tenant's own limit.
//!
//! An instance takes its share as its memories grow (and at instantiation,
//! which grows them from zero) and gives it back when it is dropped. One
//! that would pass the budget waits for room, off its CPU time and without
//! its core, in turn as others free theirs.
//!
//! Tenants take turns: each waits in a line of its own, and only the first
//! of each line waits for memory, so a tenant with forty invocations
//! waiting has one in the node's line at a time (FIFO per tenant). In the
//! node's line, the waiters of tenants that hold less than their share of
//! the budget (the budget divided by the tenants that hold or wait for
//! memory) go first, in the order they came; those of tenants at or over
//! their share go after them. A tenant over its share cannot take memory
//! that is free while another tenant waits: its invocations wait while the
//! others run.
//!
//! Waiting is only worth it while some holder of the budget runs and will
//! give its memory back. When every page held belongs to an invocation
//! that waits for more — or waits for other invocations (a workflow in
//! `call-step`: [`MemoryBudget::waiting_on_guests`]) — none ever will (48
//! memory bombs sat for minutes that way): the invocation that would
//! complete that circle fails at once with the `memory` error, its memory
//! goes to the first in line, and the others go on in turn. [`MAX_WAIT`]
//! bounds any other wait.
//!
//! Workflow instances may hold half the budget between them: the other
//! half is for the steps they wait for. A workflow instance waits to start
//! ([`MemoryBudget::admit_workflow`]) while those started hold half, by
//! the size of the package's last instance at its start. Without that, a
//! burst of executions whose instances are large (1,000 Python executions
//! started at once) filled the budget with workflow instances, each in
//! `call-step`, and every step failed with `memory`: none could start, and
//! only a step would have freed room.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// A tenant's line of memory waiters: the first holds the lock.
type Turn = Arc<tokio::sync::Mutex<()>>;

/// The unit of the budget: a wasm page.
const PAGE: usize = 64 << 10;

/// How long an invocation waits for room before it fails.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How often a waiter looks whether its wait could still end.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// The budget's pages: who holds them and who waits for them.
#[derive(Default)]
struct Pages {
    total: usize,
    free: usize,
    /// Pages held, by tenant (tenants holding none are not here).
    held: HashMap<Arc<str>, usize>,
    /// The node's line: the first waiter of each tenant's line, by ticket.
    line: BTreeMap<u64, Waiter>,
    /// Pages held by invocations that wait for more, or for others.
    held_by_waiters: usize,
    /// Each memory waiter's pages, by the order it began waiting.
    growing: BTreeMap<u64, usize>,
    next: u64,
}

/// A waiter in the node's line.
struct Waiter {
    tenant: Arc<str>,
    pages: usize,
    /// Told when its pages are counted as its tenant's.
    granted: oneshot::Sender<()>,
}

impl Pages {
    /// A tenant's fair share of the budget: divided by the tenants that
    /// hold or wait for memory (counting `tenant`; the line has one waiter
    /// of a tenant at most).
    fn share(&self, tenant: &str) -> usize {
        let holds_none = |t: &str| !self.held.contains_key(t);
        let mut active =
            self.held.len() + self.line.values().filter(|w| holds_none(&w.tenant)).count();
        if holds_none(tenant) && !self.line.values().any(|w| &*w.tenant == tenant) {
            active += 1;
        }
        self.total / active.max(1)
    }

    fn under_share(&self, tenant: &str) -> bool {
        self.held.get(tenant).copied().unwrap_or(0) < self.share(tenant)
    }

    /// The next waiter to serve: the first of a tenant under its share,
    /// else the first.
    fn next_waiter(&self) -> Option<u64> {
        self.line
            .iter()
            .find(|(_, w)| self.under_share(&w.tenant))
            .or_else(|| self.line.iter().next())
            .map(|(ticket, _)| *ticket)
    }

    /// Whether `tenant` may take `pages` now, without waiting: they are
    /// free and no one waiting goes before it.
    fn may_take(&self, tenant: &str, pages: usize) -> bool {
        if pages > self.free {
            return false;
        }
        if self.under_share(tenant) {
            !self.line.values().any(|w| self.under_share(&w.tenant))
        } else {
            self.line.is_empty()
        }
    }

    fn take(&mut self, tenant: &Arc<str>, pages: usize) {
        self.free -= pages;
        *self.held.entry(tenant.clone()).or_default() += pages;
    }

    fn give_back(&mut self, tenant: &str, pages: usize) {
        self.free += pages;
        if let Some(held) = self.held.get_mut(tenant) {
            *held -= pages;
            if *held == 0 {
                self.held.remove(tenant);
            }
        }
    }

    /// Serves the line while the next waiter's pages are free.
    fn serve(&mut self) {
        while let Some(ticket) = self.next_waiter() {
            if self.line[&ticket].pages > self.free {
                return;
            }
            let waiter = self.line.remove(&ticket).expect("found");
            self.take(&waiter.tenant, waiter.pages);
            if waiter.granted.send(()).is_err() {
                // It stopped waiting meanwhile.
                self.give_back(&waiter.tenant, waiter.pages);
            }
        }
    }
}

/// The budget shared by a node's instances.
#[derive(Clone)]
pub struct MemoryBudget {
    pages: Arc<Mutex<Pages>>,
    /// Each tenant's line: its first waiter holds the turn.
    turns: Arc<Mutex<HashMap<Arc<str>, Turn>>>,
    workflows: Arc<WorkflowRoom>,
}

/// The half of the budget that workflow instances may hold.
struct WorkflowRoom {
    /// Half the budget's pages.
    half: usize,
    state: Mutex<WorkflowPages>,
    /// Told when workflow instances start or end.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct WorkflowPages {
    /// Pages of the workflow instances started, each by its size at start.
    held: usize,
    /// Instances started of packages with no instance before, whose size
    /// is not known yet: one at a time.
    of_unknown_size: usize,
}

/// A workflow instance's part of the half of the budget that workflow
/// instances may hold ([`MemoryBudget::admit_workflow`]); given back when
/// dropped.
pub struct WorkflowAdmission {
    room: Arc<WorkflowRoom>,
    pages: usize,
    sized: bool,
}

/// Memory taken from a [`MemoryBudget`] by a tenant's invocation; given
/// back when dropped.
pub struct Held {
    pages: usize,
    from: Option<(Arc<Mutex<Pages>>, Arc<str>)>,
}

fn lock(pages: &Mutex<Pages>) -> std::sync::MutexGuard<'_, Pages> {
    pages.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        let total_pages = (bytes / PAGE).max(1);
        Self {
            pages: Arc::new(Mutex::new(Pages {
                total: total_pages,
                free: total_pages,
                ..Pages::default()
            })),
            turns: Arc::default(),
            workflows: Arc::new(WorkflowRoom {
                half: total_pages / 2,
                state: Mutex::default(),
                changed: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Waits until a workflow instance of a package whose last instance
    /// held `last_pages` at its start (0: none yet) may start: while the
    /// workflow instances started hold half the budget, or one of a
    /// package of no known size is starting, it waits for one to end. One
    /// alone may always start, whatever its size. Steps never wait here.
    /// `on_wait` is told why when it begins to wait, and `None` when it
    /// stops.
    pub async fn admit_workflow(
        &self,
        last_pages: &AtomicUsize,
        on_wait: impl Fn(Option<String>),
    ) -> WorkflowAdmission {
        let room = &self.workflows;
        let mut waited = false;
        loop {
            let changed = room.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = room.state.lock().unwrap_or_else(|p| p.into_inner());
                let size = last_pages.load(Ordering::Relaxed);
                let admitted = if size == 0 {
                    state.of_unknown_size == 0 && {
                        state.of_unknown_size += 1;
                        true
                    }
                } else {
                    (state.held == 0 || state.held + size <= room.half) && {
                        state.held += size;
                        true
                    }
                };
                if admitted {
                    if waited {
                        on_wait(None);
                    }
                    return WorkflowAdmission {
                        room: room.clone(),
                        pages: size,
                        sized: size != 0,
                    };
                }
            }
            if !waited {
                waited = true;
                on_wait(Some(format!(
                    "waiting to start its workflow instance: workflow instances hold half of \
                     the node's guest memory budget of {} MiB, the other half is for steps \
                     (serve --max-guest-memory-mb)",
                    self.bytes() >> 20
                )));
            }
            changed.await;
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
        lock(&self.pages).total * PAGE
    }

    /// Bytes not held by any instance now.
    pub fn available(&self) -> usize {
        lock(&self.pages).free * PAGE
    }

    fn pages(bytes: usize) -> usize {
        bytes.div_ceil(PAGE)
    }

    /// Takes what growing from `current` to `desired` bytes needs for an
    /// invocation of `tenant`, if it may have it at once (see the module
    /// docs); `Err(pages)` with what it needs otherwise.
    pub(super) fn try_grow(
        &self,
        tenant: &Arc<str>,
        current: usize,
        desired: usize,
    ) -> Result<Held, usize> {
        let need = Self::pages(desired).saturating_sub(Self::pages(current));
        if need == 0 {
            return Ok(Held::none());
        }
        let mut pages = lock(&self.pages);
        if !pages.may_take(tenant, need) {
            return Err(need);
        }
        pages.take(tenant, need);
        Ok(self.held(tenant, need))
    }

    /// Counts `held` as held by an invocation that waits for other
    /// invocations (which may wait for memory) until
    /// [`MemoryBudget::done_waiting`] with what this returns.
    pub fn waiting_on_guests(&self, held: &Held) -> usize {
        let pages = held.pages();
        lock(&self.pages).held_by_waiters += pages;
        pages
    }

    /// The end of a [`MemoryBudget::waiting_on_guests`].
    pub fn done_waiting(&self, pages: usize) {
        lock(&self.pages).held_by_waiters -= pages;
    }

    /// `pages` now counted as `tenant`'s.
    fn held(&self, tenant: &Arc<str>, pages: usize) -> Held {
        Held {
            pages,
            from: Some((self.pages.clone(), tenant.clone())),
        }
    }

    /// Whether the memory waiter `ticket` should give up: every page held
    /// is held by a waiter, and it is the latest of the waiters that hold
    /// any (failing it frees memory for the others).
    fn circle_closed_by(&self, ticket: u64) -> bool {
        let pages = lock(&self.pages);
        let held = pages.total - pages.free;
        pages.held_by_waiters >= held
            && pages
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
    pub(super) async fn grow(
        &self,
        tenant: &Arc<str>,
        pages: usize,
        holding: usize,
    ) -> Option<Held> {
        let ticket = {
            let mut state = lock(&self.pages);
            if pages > state.total {
                return None;
            }
            let ticket = state.next;
            state.next += 1;
            state.held_by_waiters += holding;
            state.growing.insert(ticket, holding);
            ticket
        };
        // The tenant's turn first, then a place in the node's line.
        let turn = self.turn(tenant).lock_owned();
        tokio::pin!(turn);
        let mut granted: Option<(oneshot::Receiver<()>, tokio::sync::OwnedMutexGuard<()>)> = None;
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        let got = loop {
            if let Some((rx, _)) = &mut granted
                && rx.try_recv().is_ok()
            {
                break true;
            }
            if self.circle_closed_by(ticket) {
                break false;
            }
            tokio::select! {
                mine = &mut turn, if granted.is_none() => {
                    let (tx, rx) = oneshot::channel();
                    let mut state = lock(&self.pages);
                    state.line.insert(ticket, Waiter { tenant: tenant.clone(), pages, granted: tx });
                    state.serve();
                    granted = Some((rx, mine));
                }
                got = async { (&mut granted.as_mut().expect("guarded").0).await },
                    if granted.is_some() =>
                {
                    break got.is_ok();
                }
                () = tokio::time::sleep(CHECK_EVERY) => {
                    if tokio::time::Instant::now() >= deadline {
                        break false;
                    }
                }
            }
        };
        let mut state = lock(&self.pages);
        state.held_by_waiters -= holding;
        state.growing.remove(&ticket);
        if got {
            return Some(self.held(tenant, pages));
        }
        // Out of the line; pages granted meanwhile go back.
        if state.line.remove(&ticket).is_none()
            && let Some((mut rx, _)) = granted
            && rx.try_recv().is_ok()
        {
            state.give_back(tenant, pages);
            state.serve();
        }
        None
    }
}

impl WorkflowAdmission {
    /// The instance started holding `pages`: counted instead of the size
    /// it was admitted by, and remembered in `last_pages` for the
    /// package's next instance.
    pub fn started(&mut self, pages: usize, last_pages: &AtomicUsize) {
        last_pages.store(pages, Ordering::Relaxed);
        {
            let mut state = self.room.state.lock().unwrap_or_else(|p| p.into_inner());
            state.held = state.held + pages - self.pages;
            if !self.sized {
                state.of_unknown_size -= 1;
            }
        }
        (self.pages, self.sized) = (pages, true);
        self.room.changed.notify_waiters();
    }
}

impl Drop for WorkflowAdmission {
    fn drop(&mut self) {
        {
            let mut state = self.room.state.lock().unwrap_or_else(|p| p.into_inner());
            state.held -= self.pages;
            if !self.sized {
                state.of_unknown_size -= 1;
            }
        }
        self.room.changed.notify_waiters();
    }
}

impl Held {
    /// Nothing held.
    pub fn none() -> Self {
        Held {
            pages: 0,
            from: None,
        }
    }

    /// Pages held.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Adds `more` (the same tenant's) to what is held.
    pub fn merge(&mut self, mut more: Held) {
        self.pages += std::mem::take(&mut more.pages);
        if self.from.is_none() {
            self.from = more.from.take();
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((pages, tenant)) = &self.from
            && self.pages > 0
        {
            let mut state = lock(pages);
            state.give_back(tenant, self.pages);
            state.serve();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    /// Workflow instances start while those started hold less than half
    /// the budget (by their packages' last sizes), one at a time while a
    /// package's size is unknown; each that ends lets the next start.
    #[tokio::test]
    async fn workflow_instances_start_within_half_the_budget() {
        let budget = MemoryBudget::new(24 * PAGE);
        let size = Arc::new(AtomicUsize::new(0));
        let admit = |budget: &MemoryBudget, size: &Arc<AtomicUsize>| {
            let (budget, size) = (budget.clone(), size.clone());
            tokio::spawn(async move { budget.admit_workflow(&size, |_| ()).await })
        };
        async fn waits(task: &tokio::task::JoinHandle<WorkflowAdmission>) -> bool {
            tokio::time::sleep(Duration::from_millis(50)).await;
            !task.is_finished()
        }
        // Size unknown: the second waits for the first to start.
        let mut first = admit(&budget, &size).await.unwrap();
        let second = admit(&budget, &size);
        assert!(waits(&second).await, "a second of unknown size started");
        first.started(4, &size);
        let second = second.await.unwrap();
        // Half is 12: a third of 4 fits, a fourth waits.
        let third = admit(&budget, &size).await.unwrap();
        let notes = Arc::new(Mutex::new(Vec::new()));
        let fourth = {
            let (budget, size, notes) = (budget.clone(), size.clone(), notes.clone());
            tokio::spawn(async move {
                let note = |n: Option<String>| notes.lock().unwrap().push(n);
                budget.admit_workflow(&size, note).await
            })
        };
        assert!(waits(&fourth).await, "workflow instances passed half");
        drop(third);
        let fourth = fourth.await.unwrap();
        // It said why it waited, and that it no longer does.
        let notes = notes.lock().unwrap().clone();
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(
            notes[0]
                .as_deref()
                .is_some_and(|n| n.contains("half of the node's guest memory budget of 1 MiB")),
            "{notes:?}"
        );
        assert_eq!(notes[1], None);
        // One alone starts whatever its size.
        drop((first, second, fourth));
        size.store(30, Ordering::Relaxed);
        let big = admit(&budget, &size).await.unwrap();
        let other = admit(&budget, &size);
        assert!(waits(&other).await);
        drop(big);
        other.await.unwrap();
    }

    #[tokio::test]
    async fn growth_takes_room_and_dropping_gives_it_back() {
        let budget = MemoryBudget::new(10 * PAGE);
        let t = tenant("t");
        let mut held = budget.try_grow(&t, 0, 6 * PAGE).ok().unwrap();
        assert_eq!(budget.available(), 4 * PAGE);
        assert_eq!(budget.try_grow(&t, 6 * PAGE, 12 * PAGE).err(), Some(6));
        held.merge(budget.try_grow(&t, 6 * PAGE, 8 * PAGE).ok().unwrap());
        assert_eq!(budget.available(), 2 * PAGE);
        // A waiter holding 1 page: the holder of 8 runs, so it waits.
        let waiting = tokio::spawn({
            let (budget, t) = (budget.clone(), t.clone());
            async move { budget.grow(&t, 5, 1).await.is_some() }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(
            waiting.await.unwrap(),
            "room came when the holder went away"
        );
        assert!(
            budget.grow(&t, 11, 0).await.is_none(),
            "more than the whole budget"
        );
        assert_eq!(
            budget.available(),
            10 * PAGE,
            "the waiter's pages came back"
        );
    }

    /// Starts a waiter of `tenant` for `pages`, which records `name` in
    /// `order` when it has them, then holds them until aborted.
    fn wait_for(
        budget: &MemoryBudget,
        order: &Arc<Mutex<Vec<&'static str>>>,
        tenant_name: &'static str,
        name: &'static str,
        pages: usize,
    ) -> tokio::task::JoinHandle<()> {
        let (budget, order) = (budget.clone(), order.clone());
        tokio::spawn(async move {
            let held = budget
                .grow(&tenant(tenant_name), pages, 0)
                .await
                .expect("room comes");
            order.lock().unwrap().push(name);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(held);
        })
    }

    #[tokio::test]
    async fn tenants_take_turns_and_each_tenant_waits_in_order() {
        let budget = MemoryBudget::new(10 * PAGE);
        let all = budget.try_grow(&tenant("c"), 0, 10 * PAGE).ok().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        // Three of A's wait, then one of B's.
        let mut waiting = Vec::new();
        for (tenant, name) in [("a", "a1"), ("a", "a2"), ("a", "a3"), ("b", "b1")] {
            waiting.push(wait_for(&budget, &order, tenant, name, 5));
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
    async fn a_tenant_over_its_share_waits_while_another_takes_the_room() {
        // Two tenants: a share is 6 pages each.
        let budget = MemoryBudget::new(12 * PAGE);
        let a = tenant("a");
        // A alone: all of the budget is its share. It runs three
        // invocations (10 pages); 2 are free.
        let a_running: Vec<Held> = [3, 3, 4]
            .into_iter()
            .map(|pages| budget.try_grow(&a, 0, pages * PAGE).ok().unwrap())
            .collect();
        let order = Arc::new(Mutex::new(Vec::new()));
        // A waits for 3 more, then B (none held) does: A is over its share.
        let a4 = wait_for(&budget, &order, "a", "a4", 3);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let b1 = wait_for(&budget, &order, "b", "b1", 3);
        tokio::time::sleep(Duration::from_millis(5)).await;
        // A's running invocation may not take a free page either.
        assert_eq!(budget.try_grow(&a, 3 * PAGE, 4 * PAGE).err(), Some(1));
        // One of A's invocations ends (5 free): B came later but is under
        // its share, A still holds 7 of 12.
        let mut a_running = a_running.into_iter();
        drop(a_running.next());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*order.lock().unwrap(), ["b1"]);
        // Another ends: A holds 4, under its share, and has its turn.
        drop(a_running.next());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(*order.lock().unwrap(), ["b1", "a4"]);
        a4.abort();
        b1.abort();
    }

    #[tokio::test]
    async fn a_wait_that_could_never_end_fails_at_once() {
        let budget = MemoryBudget::new(10 * PAGE);
        let (a, b) = (tenant("a"), tenant("b"));
        let first = budget.try_grow(&a, 0, 6 * PAGE).ok().unwrap();
        let second = budget.try_grow(&b, 0, 4 * PAGE).ok().unwrap();
        // The first waits for more while the second runs: it may wait.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.grow(&a, 2, 6).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The second asks too: both would wait for ever. It fails now...
        let started = std::time::Instant::now();
        assert!(budget.grow(&b, 2, 4).await.is_none());
        assert!(started.elapsed() < MAX_WAIT / 2);
        // ...its memory is freed, and the first goes on.
        drop(second);
        assert!(waiting.await.unwrap());
        drop(first);
    }
}
