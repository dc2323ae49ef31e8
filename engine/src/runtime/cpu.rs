//! The node's cores, handed to guest code fairly between tenants.
//!
//! Guest code runs only while its invocation holds a core. An invocation
//! gives its core back at every epoch tick and while it waits in a host
//! call, and queues for one again. When every core is taken, waiters are
//! served tenant by tenant in turn (each tenant's own waiters in order),
//! not in arrival order: a tenant with eight runnable invocations and one
//! with a single one each get half of the cores, and a tenant whose code
//! spins delays another's by about one tick per turn.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

#[derive(Default)]
struct State {
    free: usize,
    /// Tenants with waiters, in the order they are served.
    turns: VecDeque<Arc<str>>,
    /// Each tenant's waiters, first come first served.
    waiting: HashMap<Arc<str>, VecDeque<oneshot::Sender<()>>>,
}

/// The cores guest code of this node takes turns on.
#[derive(Clone)]
pub struct CpuSlots(Arc<Mutex<State>>);

impl CpuSlots {
    pub fn new(cores: usize) -> Self {
        Self(Arc::new(Mutex::new(State {
            free: cores.max(1),
            ..State::default()
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A core for `tenant`'s guest code, once it is its turn.
    pub fn acquire(&self, tenant: &Arc<str>) -> impl Future<Output = Core> + Send + 'static {
        let slots = self.clone();
        // Queued now, not when first polled; a future dropped unpolled
        // hands on what it was given (see `Waiter`).
        let waiter = {
            let mut state = slots.state();
            if state.free > 0 && state.turns.is_empty() {
                state.free -= 1;
                None
            } else {
                let (tx, rx) = oneshot::channel();
                let queue = state.waiting.entry(tenant.clone()).or_default();
                let first = queue.is_empty();
                queue.push_back(tx);
                if first {
                    state.turns.push_back(tenant.clone());
                }
                Some(Waiter {
                    slots: slots.clone(),
                    rx,
                    done: false,
                })
            }
        };
        async move {
            if let Some(mut waiter) = waiter {
                // Senders are dropped unsent only when their receiver is gone.
                let _ = (&mut waiter.rx).await;
                waiter.done = true;
            }
            Core { slots }
        }
    }

    /// Gives a core to the next waiter in turn, or back to the free ones.
    fn release(&self) {
        let mut state = self.state();
        while let Some(tenant) = state.turns.pop_front() {
            let Some(queue) = state.waiting.get_mut(&tenant) else {
                continue;
            };
            let next = queue.pop_front();
            if queue.is_empty() {
                state.waiting.remove(&tenant);
            } else {
                state.turns.push_back(tenant);
            }
            if let Some(tx) = next
                && tx.send(()).is_ok()
            {
                return;
            }
        }
        state.free += 1;
    }
}

/// A core held by an invocation; dropping it hands it on.
pub struct Core {
    slots: CpuSlots,
}

impl Drop for Core {
    fn drop(&mut self) {
        self.slots.release();
    }
}

/// A queued acquisition: if it is dropped after a core was handed to it
/// (but before it took it), the core is handed on.
struct Waiter {
    slots: CpuSlots,
    rx: oneshot::Receiver<()>,
    done: bool,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if !self.done && self.rx.try_recv().is_ok() {
            self.slots.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn waiting_tenants_are_served_in_turn() {
        let slots = CpuSlots::new(1);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let held = slots.acquire(&a).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Tenant a queues three, then b one: b goes second, not fourth.
        for (tenant, n) in [(&a, 1), (&a, 2), (&a, 3), (&b, 1)] {
            let queued = slots.acquire(tenant);
            let (order, name) = (order.clone(), format!("{tenant}{n}"));
            tasks.push(tokio::spawn(async move {
                let core = queued.await;
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(core);
            }));
        }
        drop(held);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["a1", "b1", "a2", "a3"]);
    }

    #[tokio::test]
    async fn a_cancelled_wait_hands_its_core_on() {
        let slots = CpuSlots::new(1);
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
