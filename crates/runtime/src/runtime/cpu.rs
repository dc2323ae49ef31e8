//! The node's cores, handed to guest code fairly between tenants.
//!
//! Guest code runs only while its invocation holds a core. An invocation
//! gives its core back at every epoch tick and while it waits in a host
//! call, and queues for one again. Each tenant with work on the node (an
//! execution being driven, or guest code holding or waiting for a core),
//! or that had some within [`KEEP_SHARE`], is entitled to an equal share
//! of the cores, and gets no more while others are entitled to theirs:
//!
//! - a freed core goes to the waiting tenant below its share that holds
//!   the fewest cores (the one served least recently among equals), each
//!   tenant's own waiters in order; a core no entitled waiter wants stays
//!   free for a tenant whose execution is busy elsewhere (in the engine, in
//!   a host call), so a tenant with eight runnable invocations and one with
//!   a single one each get half of the cores;
//! - a tenant below its share that has to wait while a guest has run for
//!   more than [`MIN_SLICE`] preempts: an extra epoch tick, at which every
//!   guest that has held its core that long gives it back (younger ones go
//!   on), so the waiter gets a core within microseconds, not at the next
//!   tick.
//!
//! A tenant alone on the node may use every core.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What makes running guests give their cores back now (an epoch tick).
pub type Preempt = Arc<dyn Fn() + Send + Sync>;

/// At most one preemption this often: one makes every running guest
/// yield, so more within this time would only add churn.
const PREEMPT_EVERY: Duration = Duration::from_micros(200);

/// A guest keeps its core at least this long once it has it: preemption
/// does not take it from it sooner (else two tenants would take it from
/// each other back and forth).
pub const MIN_SLICE: Duration = Duration::from_micros(200);

/// How long a tenant counts as having work on the node after its last
/// execution here stopped (for [`CpuSlots::others_active`]).
pub const RECENT: Duration = Duration::from_secs(1);

/// How long a tenant keeps its share of the cores after its last
/// execution here stopped: a client that starts its next execution at
/// once finds its core free, instead of preempting a guest that may not
/// give it back soon (one long `memory.fill` runs with no epoch check).
/// Short, as the share stays unused meanwhile.
pub const KEEP_SHARE: Duration = Duration::from_millis(100);
const _: () = assert!(KEEP_SHARE.as_nanos() <= RECENT.as_nanos());

#[derive(Default)]
struct State {
    cores: usize,
    free: usize,
    /// Each tenant's waiters, first come first served; they are sent the
    /// id of the core they get.
    waiting: HashMap<Arc<str>, VecDeque<oneshot::Sender<u64>>>,
    /// Cores each tenant holds.
    held: HashMap<Arc<str>, usize>,
    /// Executions each tenant has being driven on the node.
    active: HashMap<Arc<str>, usize>,
    /// When each tenant last stopped having one (see [`RECENT`]).
    last_active: HashMap<Arc<str>, Instant>,
    /// When each tenant last got a core (a count of hand-outs).
    served: HashMap<Arc<str>, u64>,
    handed_out: u64,
    /// When each core handed out (by id) was taken.
    holders: HashMap<u64, Instant>,
    next_id: u64,
}

impl State {
    fn held(&self, tenant: &str) -> usize {
        self.held.get(tenant).copied().unwrap_or(0)
    }

    fn served(&self, tenant: &str) -> u64 {
        self.served.get(tenant).copied().unwrap_or(0)
    }

    /// `tenant`'s share of the cores: an equal part (rounded up) among the
    /// tenants with work on the node, `tenant` included.
    fn share(&self, tenant: &str) -> usize {
        let mut entitled: HashSet<&str> = self.active.keys().map(|t| &**t).collect();
        entitled.extend(self.held.keys().map(|t| &**t));
        entitled.extend(self.waiting.keys().map(|t| &**t));
        let now = Instant::now();
        entitled.extend(
            self.last_active
                .iter()
                .filter(|(_, at)| now.duration_since(**at) < KEEP_SHARE)
                .map(|(t, _)| &**t),
        );
        entitled.insert(tenant);
        self.cores.div_ceil(entitled.len())
    }

    fn below_share(&self, tenant: &str) -> bool {
        self.held(tenant) < self.share(tenant)
    }

    /// Whether a guest has held its core for [`MIN_SLICE`] or longer.
    fn preemptible(&self) -> bool {
        self.holders.values().any(|at| at.elapsed() >= MIN_SLICE)
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Counts core `id` as handed to `tenant`.
    fn hold(&mut self, tenant: &Arc<str>, id: u64) {
        *self.held.entry(tenant.clone()).or_default() += 1;
        self.handed_out += 1;
        self.served.insert(tenant.clone(), self.handed_out);
        self.holders.insert(id, Instant::now());
    }

    fn unhold(&mut self, tenant: &str, id: u64) {
        self.holders.remove(&id);
        if let Some(n) = self.held.get_mut(tenant) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(tenant);
            }
        }
        self.free += 1;
    }

    /// Hands free cores to waiters below their share, fewest held first.
    fn dispatch(&mut self) {
        while self.free > 0 {
            let next = self
                .waiting
                .keys()
                .filter(|t| self.below_share(t))
                .min_by_key(|t| (self.held(t), self.served(t)))
                .cloned();
            let Some(tenant) = next else { return };
            let Some(queue) = self.waiting.get_mut(&tenant) else {
                return;
            };
            let sender = queue.pop_front();
            if queue.is_empty() {
                self.waiting.remove(&tenant);
            }
            // A sender whose receiver is gone is skipped.
            if let Some(tx) = sender {
                let id = self.new_id();
                if tx.send(id).is_ok() {
                    self.free -= 1;
                    self.hold(&tenant, id);
                }
            }
        }
    }
}

/// The cores guest code of this node takes turns on.
#[derive(Clone)]
pub struct CpuSlots {
    state: Arc<Mutex<State>>,
    /// Until when (ns since `epoch`) several tenants count as having work
    /// on the node after they last had: read on hot paths without the lock.
    contended_until: Arc<AtomicU64>,
    /// How many tenants have executions driven on the node now (the
    /// length of `State::active`), read the same way.
    active_tenants: Arc<AtomicUsize>,
    preempt: Option<Preempt>,
    /// When the last preemption was, in ns since `epoch`.
    preempted_at: Arc<AtomicU64>,
    epoch: Instant,
}

impl CpuSlots {
    /// `cores` cores; `preempt`, if given, makes running guests yield.
    pub fn new(cores: usize, preempt: Option<Preempt>) -> Self {
        let cores = cores.max(1);
        Self {
            state: Arc::new(Mutex::new(State {
                cores,
                free: cores,
                ..State::default()
            })),
            preempt,
            contended_until: Arc::new(AtomicU64::new(0)),
            active_tenants: Arc::new(AtomicUsize::new(0)),
            preempted_at: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an execution of `tenant` as being driven on the node until
    /// the guard is dropped: it is entitled to its share of the cores
    /// meanwhile, even between its invocations' turns.
    pub fn activate(&self, tenant: &Arc<str>) -> Active {
        let mut state = self.state();
        *state.active.entry(tenant.clone()).or_default() += 1;
        self.note_contention(&state);
        drop(state);
        Active {
            slots: self.clone(),
            tenant: tenant.clone(),
        }
    }

    /// Several tenants have work on the node now: they count as such for
    /// [`RECENT`] more (see [`CpuSlots::contended`]).
    fn note_contention(&self, state: &State) {
        self.active_tenants
            .store(state.active.len(), Ordering::Relaxed);
        if state.active.len() > 1 {
            let until = self.epoch.elapsed() + RECENT;
            self.contended_until
                .fetch_max(until.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Whether several tenants have work on the node, or had within
    /// [`RECENT`]: cheap, for the calls of a tenant that has work there
    /// itself.
    pub fn contended(&self) -> bool {
        self.active_tenants.load(Ordering::Relaxed) > 1
            || (self.epoch.elapsed().as_nanos() as u64)
                < self.contended_until.load(Ordering::Relaxed)
    }

    /// Whether tenants other than `tenant` have work on the node, or had
    /// some within [`RECENT`].
    pub fn others_active(&self, tenant: &str) -> bool {
        let state = self.state();
        state.active.keys().any(|t| &**t != tenant)
            || state.held.keys().any(|t| &**t != tenant)
            || state
                .last_active
                .iter()
                .any(|(t, at)| &**t != tenant && at.elapsed() < RECENT)
    }

    /// Makes the running guests yield, unless that was done just now.
    fn preempt(&self) {
        let Some(preempt) = &self.preempt else {
            return;
        };
        let now = self.epoch.elapsed().as_nanos() as u64;
        let last = self.preempted_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < PREEMPT_EVERY.as_nanos() as u64 {
            return;
        }
        if self
            .preempted_at
            .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            preempt();
        }
    }

    /// A core for `tenant`'s guest code, once it is its turn.
    pub fn acquire(&self, tenant: &Arc<str>) -> impl Future<Output = Core> + Send + 'static {
        let slots = self.clone();
        // Queued now, not when first polled; a future dropped unpolled
        // hands on what it was given (see `Waiter`).
        let (waiter, preempt) = {
            let mut state = slots.state();
            // Free cores are ones no entitled waiter wants (see `dispatch`).
            if state.free > 0 && state.below_share(tenant) {
                state.free -= 1;
                let id = state.new_id();
                state.hold(tenant, id);
                (Err(id), false)
            } else {
                let (tx, rx) = oneshot::channel();
                state
                    .waiting
                    .entry(tenant.clone())
                    .or_default()
                    .push_back(tx);
                let preempt = state.below_share(tenant) && state.preemptible();
                let waiter = Waiter {
                    slots: slots.clone(),
                    tenant: tenant.clone(),
                    rx,
                    done: false,
                };
                (Ok(waiter), preempt)
            }
        };
        if preempt {
            slots.preempt();
        }
        let tenant = tenant.clone();
        async move {
            let id = match waiter {
                Err(id) => id,
                Ok(mut waiter) => {
                    // Senders are dropped unsent only when their receiver is gone.
                    let id = (&mut waiter.rx).await.unwrap_or(0);
                    waiter.done = true;
                    id
                }
            };
            Core {
                slots,
                tenant,
                id,
                taken: Instant::now(),
            }
        }
    }

    fn give_back(&self, tenant: &str, id: u64) {
        let mut state = self.state();
        state.unhold(tenant, id);
        state.dispatch();
    }
}

/// An execution being driven (see [`CpuSlots::activate`]).
pub struct Active {
    slots: CpuSlots,
    tenant: Arc<str>,
}

impl Drop for Active {
    fn drop(&mut self) {
        let mut state = self.slots.state();
        self.slots.note_contention(&state);
        if let Some(n) = state.active.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                state.active.remove(&self.tenant);
                // Only the last RECENT matter (it outlasts KEEP_SHARE):
                // `share` reads them at every hand-out of a core.
                let now = Instant::now();
                state
                    .last_active
                    .retain(|_, at| now.duration_since(*at) < RECENT);
                state.last_active.insert(self.tenant.clone(), now);
                self.slots
                    .active_tenants
                    .store(state.active.len(), Ordering::Relaxed);
            }
        }
        // Others' shares grew.
        state.dispatch();
    }
}

/// A core held by an invocation; dropping it hands it on.
pub struct Core {
    slots: CpuSlots,
    tenant: Arc<str>,
    id: u64,
    taken: Instant,
}

impl Core {
    /// Whether it was taken less than [`MIN_SLICE`] ago: a preemption
    /// does not take it yet.
    pub fn young(&self) -> bool {
        self.taken.elapsed() < MIN_SLICE
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        self.slots.give_back(&self.tenant, self.id);
    }
}

/// A queued acquisition: if it is dropped after a core was handed to it
/// (but before it took it), the core is handed on.
struct Waiter {
    slots: CpuSlots,
    tenant: Arc<str>,
    rx: oneshot::Receiver<u64>,
    done: bool,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.done
            && let Ok(id) = self.rx.try_recv()
        {
            self.slots.give_back(&self.tenant, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn tenants_get_equal_shares_whatever_they_queue() {
        let slots = CpuSlots::new(2, None);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let a0 = slots.acquire(&a).await;
        let a1 = slots.acquire(&a).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Tenant a queues three more, then b one: b goes first.
        for (tenant, n) in [(&a, 2), (&a, 3), (&a, 4), (&b, 1)] {
            let queued = slots.acquire(tenant);
            let (order, name) = (order.clone(), format!("{tenant}{n}"));
            tasks.push(tokio::spawn(async move {
                let core = queued.await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(core);
            }));
        }
        drop(a0);
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(a1);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["b1", "a2", "a3", "a4"]);
    }

    #[tokio::test]
    async fn an_active_tenant_keeps_its_share_free_while_it_is_not_running() {
        let slots = CpuSlots::new(2, None);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let active_b = slots.activate(&b);
        let a0 = slots.acquire(&a).await;
        // b drives an execution: a gets one core of two, not both.
        let a1 = slots.acquire(&a);
        let waited = tokio::time::timeout(Duration::from_millis(50), a1).await;
        assert!(waited.is_err(), "a took b's share");
        let b0 = tokio::time::timeout(Duration::from_secs(5), slots.acquire(&b))
            .await
            .expect("b's share was free");
        drop(b0);
        // b is done, but may start more at once: its share stays free for
        // KEEP_SHARE, then a may have both.
        drop(active_b);
        let early = tokio::time::timeout(KEEP_SHARE / 2, slots.acquire(&a)).await;
        assert!(early.is_err(), "a took b's share just after b's work");
        tokio::time::sleep(KEEP_SHARE).await;
        let a1 = tokio::time::timeout(Duration::from_secs(5), slots.acquire(&a))
            .await
            .expect("a alone may use every core");
        drop((a0, a1));
    }

    #[tokio::test]
    async fn a_tenant_below_its_share_preempts_an_old_guest() {
        let preempted = Arc::new(AtomicUsize::new(0));
        let counter = preempted.clone();
        let slots = CpuSlots::new(
            1,
            Some(Arc::new(move || {
                counter.fetch_add(1, Ordering::SeqCst);
            })),
        );
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let held = slots.acquire(&a).await;
        // a holds its share: a second invocation of a waits its turn.
        let more_a = slots.acquire(&a);
        assert_eq!(preempted.load(Ordering::SeqCst), 0);
        // b holds nothing, but a's guest just took its core: b waits.
        let early_b = slots.acquire(&b);
        assert_eq!(preempted.load(Ordering::SeqCst), 0);
        drop(early_b);
        // Once a's guest has run its minimum slice, b preempts it.
        tokio::time::sleep(MIN_SLICE * 2).await;
        let for_b = slots.acquire(&b);
        assert_eq!(preempted.load(Ordering::SeqCst), 1);
        drop(held);
        let core_b = tokio::time::timeout(Duration::from_secs(5), for_b)
            .await
            .expect("b got the core first");
        drop(core_b);
        tokio::time::timeout(Duration::from_secs(5), more_a)
            .await
            .expect("then a");
    }

    #[test]
    fn several_tenants_with_work_count_as_contention_for_a_while() {
        let slots = CpuSlots::new(2, None);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let active_a = slots.activate(&a);
        assert!(!slots.contended() && !slots.others_active("a"));
        assert!(slots.others_active("b"));
        let active_b = slots.activate(&b);
        assert!(slots.contended() && slots.others_active("a"));
        drop((active_a, active_b));
        assert!(slots.contended(), "for a while after");
        assert!(slots.others_active("a"), "b worked here just now");
    }

    /// Contention was noted only when an execution began or ended: two
    /// executions driven side by side for longer than [`RECENT`] stopped
    /// counting as contention, and the limit that applies only then (the
    /// journal rate) lapsed.
    #[test]
    fn tenants_with_work_for_long_still_count_as_contention() {
        let slots = CpuSlots::new(2, None);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let _active = (slots.activate(&a), slots.activate(&b));
        std::thread::sleep(RECENT + Duration::from_millis(100));
        assert!(slots.contended());
    }

    #[tokio::test]
    async fn a_cancelled_wait_hands_its_core_on() {
        let slots = CpuSlots::new(1, None);
        let t: Arc<str> = "t".into();
        let held = slots.acquire(&t).await;
        let abandoned = slots.acquire(&t);
        let next = slots.acquire(&t);
        drop(held);
        drop(abandoned);
        tokio::time::timeout(Duration::from_secs(5), next)
            .await
            .expect("the core reached the next waiter");
    }
}
