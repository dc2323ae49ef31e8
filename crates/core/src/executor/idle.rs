//! Step instances kept between steps, per tenant and package.
//!
//! A step runs in an instance its tenant's last step of the same package
//! returned from, if one is kept, else in a fresh one; the instance goes
//! back here when the step returns its result within its limits. For a
//! Python package that saves, per step, the instance's making and what
//! CPython does the first time in each instance (filling its function
//! table, writing its pages): a durable Python step through `serve` went
//! from 2.6–3.5 to 0.7–1.0 ms, a Python W3 from 12–16.5 to 7.3–10.7 ms
//! (`--bench api -- --python`, 2026-11-29, docs/benchmarks.md).
//! Steps share an instance one after another, as activities share a
//! worker's process elsewhere: module state persists between them. A
//! workflow's instance is never shared (its replay needs a fresh one).
//!
//! Kept instances hold memory and a slot of the pool: at most
//! [`MAX_IDLE`] per tenant and package, each for [`KEEP_IDLE`] at most,
//! and all are let go as soon as an invocation waits for room in the
//! node's memory budget. Their memory counts as held by a waiter (see
//! `runtime::memory`).

use super::guest::GuestData;
use crate::runtime::bindings::EnginePackage;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// How long an instance is kept unused before it is dropped.
pub const KEEP_IDLE: Duration = Duration::from_secs(2);

/// Instances kept per tenant and package.
pub const MAX_IDLE: usize = 4;

/// Instances holding fewer wasm pages than this (4 MiB) are dropped in
/// place ([`IdleInstance::retire`]).
const DROP_IN_PLACE_PAGES: usize = 64;

/// An instance with its store: while it runs an invocation, or kept for
/// a later step ([`IdleSteps`]).
pub struct IdleInstance {
    pub store: wasmtime::Store<GuestData>,
    pub package: EnginePackage,
    /// The wasm pages its memories held when it was made: one that grew
    /// by half since is not kept (a leak would carry on into every step).
    pub made_pages: usize,
    /// When it was last kept.
    parked_at: Instant,
    _live: crate::metrics::LiveInstance,
}

impl IdleInstance {
    pub fn new(store: wasmtime::Store<GuestData>, package: EnginePackage) -> Self {
        Self {
            made_pages: store.data().sandbox.memory_pages(),
            store,
            package,
            parked_at: Instant::now(),
            _live: crate::metrics::LiveInstance::new(),
        }
    }

    /// Whether it may serve another step: its memory did not grow by
    /// half since it was made.
    pub fn reusable(&self) -> bool {
        self.store.data().sandbox.memory_pages() <= self.made_pages + self.made_pages / 2
    }

    /// Drops the instance: one of a few MiB (a Rust package's) in place,
    /// which takes tens of µs; a larger one on the node's dropping
    /// thread, since giving a Python instance's memory back (resetting
    /// and unmapping tens of MiB) takes 0.3 to several ms, which an
    /// execution's next commit need not wait for. One thread (not tokio's
    /// blocking pool): under load it drops one instance after another
    /// without a hand-off for each.
    pub fn retire(self) {
        if self.store.data().sandbox.memory_pages() < DROP_IN_PLACE_PAGES {
            drop(self);
            return;
        }
        static DROPPER: OnceLock<mpsc::Sender<IdleInstance>> = OnceLock::new();
        let dropper = DROPPER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<IdleInstance>();
            let spawned = std::thread::Builder::new()
                .name("cerebelum-drop".into())
                .spawn(move || rx.into_iter().for_each(drop));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no thread to drop instances on: dropping them in place");
            }
            tx
        });
        let sent = dropper.send(self);
        // Without the thread, the instance comes back and is dropped here.
        drop(sent);
    }
}

/// The instances kept of one tenant: package sha256 -> most recent last.
type Kept = HashMap<String, Vec<IdleInstance>>;

/// The instances kept, by tenant.
#[derive(Default)]
pub struct IdleSteps(Mutex<HashMap<Arc<str>, Kept>>);

impl IdleSteps {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Kept>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance of `tenant`'s package `sha256` kept last, if any.
    pub fn take(&self, tenant: &str, sha256: &str) -> Option<IdleInstance> {
        self.lock().get_mut(tenant)?.get_mut(sha256)?.pop()
    }

    /// Keeps `idle` (parked, its host let go) for a later step of
    /// `tenant`'s package `sha256`, unless [`MAX_IDLE`] are kept already.
    pub fn keep(&self, tenant: &Arc<str>, sha256: &str, mut idle: IdleInstance) {
        idle.parked_at = Instant::now();
        let mut kept = self.lock();
        let packages = kept.entry(tenant.clone()).or_default();
        // No new key for a package already here: this runs after each step.
        let list = match packages.get_mut(sha256) {
            Some(list) => list,
            None => packages.entry(sha256.to_owned()).or_default(),
        };
        if list.len() < MAX_IDLE {
            list.push(idle);
            return;
        }
        drop(kept);
        idle.retire();
    }

    /// Drops the instances kept unused for `older_than` or longer.
    pub fn evict(&self, older_than: Duration) {
        let mut old = Vec::new();
        {
            let mut kept = self.lock();
            for packages in kept.values_mut() {
                for list in packages.values_mut() {
                    // Oldest first: the ones to drop are a prefix.
                    let n = list
                        .iter()
                        .take_while(|i| i.parked_at.elapsed() >= older_than)
                        .count();
                    old.extend(list.drain(..n));
                }
                packages.retain(|_, list| !list.is_empty());
            }
            kept.retain(|_, packages| !packages.is_empty());
        }
        for idle in old {
            idle.retire();
        }
    }
}
