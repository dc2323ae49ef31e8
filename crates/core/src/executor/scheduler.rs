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
    info!(node = %inner.node_id, "scheduler started");
    inner
        .serving
        .store(true, std::sync::atomic::Ordering::SeqCst);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = heartbeat.tick() => {
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
            _ = tick.tick() => {}
            _ = inner.wake.notified() => {}
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
            .claim_due(&inner.node_id, inner.now_ms(), lease_ms, capacity)
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
