//! The scheduler of one node: claims due executions (new, woken, or left
//! behind by a dead node), drives each on its own task, renews leases and
//! forwards cancellation requests to executions running here.

use super::drive::drive;
use super::state::Inner;
use crate::error::Result;
use std::sync::Arc;
use tracing::{info, warn};

pub async fn run(inner: Arc<Inner>, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
    let lease_ms = inner.config.lease.as_millis() as i64;
    let mut tick = tokio::time::interval(inner.config.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeat = tokio::time::interval(inner.config.lease / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    // Another process's start, approval or cancel wakes this loop at once
    // (PostgreSQL LISTEN/NOTIFY); the tick stays the fallback and drives
    // timers.
    let weak = Arc::downgrade(&inner);
    let listener = inner
        .store
        .listen_due(Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                inner.wake.notify_one();
            }
        }))
        .await?;
    // When the next waiting execution is due (from the last sweep of
    // timers): the loop wakes then rather than at its next tick.
    let mut next_due: Option<i64> = None;
    // Whether to look for due timers in this round of the loop.
    let mut sweep = true;
    info!(node = %inner.node_id, "scheduler started");
    inner
        .serving
        .store(true, std::sync::atomic::Ordering::SeqCst);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = heartbeat.tick() => {
                inner.idle_steps.evict(super::idle::KEEP_IDLE);
                match inner.store.renew_leases(&inner.node_id, inner.now_ms(), lease_ms).await {
                    Ok(renewed) => {
                        let running = inner.running.lock().unwrap_or_else(|p| p.into_inner());
                        for lease in renewed {
                            if let Some(c) = running.get(&lease.execution_id) {
                                if lease.cancel_requested {
                                    c.request();
                                }
                                c.set_paused(lease.paused);
                            }
                        }
                    }
                    Err(e) => warn!(error = %e, "renewing leases failed"),
                }
                continue;
            }
            _ = tick.tick() => sweep = true,
            _ = inner.wake.notified() => {}
            // Made only when polled (not at every wake-up by a commit).
            _ = async {
                match next_due {
                    Some(due) => inner.clock.sleep_until(due).await,
                    None => std::future::pending().await,
                }
            } => sweep = true,
        }
        // Timers are looked for at each tick and when one is due, not at
        // every wake-up by a commit (a burst of starts); but a wake-up
        // after the next due time sweeps first, or the claim below would
        // take up to `max_running` of a wave due together one by one.
        // One reading of the clock for the sweep and the claim: a claim
        // that saw a later time would take executions whose timers came
        // due while the sweep ran (up to `max_running` of a wave due
        // together), to resume on the slower path.
        let now = inner.now_ms();
        let due = next_due.is_some_and(|due| due <= now);
        if std::mem::take(&mut sweep) || due {
            (next_due, sweep) = fire_timers(&inner, now).await;
            if sweep {
                inner.wake.notify_one();
            }
        }
        let running = inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let capacity = inner.config.max_running.saturating_sub(running) as i64;
        if capacity == 0 {
            continue;
        }
        match inner
            .store
            .claim_due(&inner.node_id, now, lease_ms, capacity)
            .await
        {
            Ok(claims) => {
                if claims.len() as i64 == capacity {
                    inner.wake.notify_one();
                }
                for claim in claims {
                    crate::metrics::metrics().claimed(claim.taken_over, claim.late_ms);
                    tokio::spawn(drive(inner.clone(), claim));
                }
            }
            Err(e) => warn!(error = %e, "claiming due executions failed"),
        }
    }
    if let Some(listener) = listener {
        listener.abort();
    }
    inner
        .serving
        .store(false, std::sync::atomic::Ordering::SeqCst);
    inner.store.release_leases(&inner.node_id).await?;
    info!("scheduler stopped");
    Ok(())
}

/// Sleeps that end in one transaction of [`fire_timers`]; more are fired
/// by the next round of the loop, at once.
const FIRE_BATCH: i64 = 10_000;

/// Journals the end of every due sleep of a hibernated execution, in
/// batches, before any of them is claimed: a timer fires on time however
/// many are due together, and their code resumes as the node has room.
/// Returns when the next waiting execution is due, and whether more
/// timers may be due already (a full transaction).
async fn fire_timers(inner: &Inner, now_ms: i64) -> (Option<i64>, bool) {
    let began = std::time::Instant::now();
    match inner.store.fire_timers(now_ms, FIRE_BATCH).await {
        Ok(fired) => {
            let n = fired.fired.len();
            if n > 0 {
                info!(
                    timers = n,
                    ms = began.elapsed().as_millis() as u64,
                    "fired due timers"
                );
            }
            (fired.next_due, fired.more)
        }
        Err(e) => {
            warn!(error = %e, "firing due timers failed");
            (None, false)
        }
    }
}
