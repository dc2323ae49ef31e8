//! Upgrades asked while an execution ran (`cerebelum upgrade ID --to V` of
//! an execution that did not wait yet): every serving node looks for those
//! whose execution now waits, or has ended, every [`TICK`] ([`run`]), and
//! settles them with [`Api::apply_due_upgrades`]: the execution moves if
//! its journal replays cleanly against V, else its request is dropped with
//! why (audit log, warning). An execution that woke before a node got to
//! it keeps its request for its next hibernation. Nodes may race for one:
//! the move is one transaction guarded by the version and journal the
//! check saw, so one wins and the others find it moved.

use super::Api;
use std::time::Duration;

/// How often a node looks.
pub const TICK: Duration = Duration::from_millis(500);

/// Settles asked upgrades every [`TICK`] until `shutdown`.
pub async fn run(api: Api, shutdown: impl Future<Output = ()>) {
    super::every(TICK, shutdown, "applying asked upgrades", || {
        api.apply_due_upgrades()
    })
    .await
}
