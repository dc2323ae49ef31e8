//! Live views of executions' pages, shared by their viewers.
//!
//! One task per followed execution ([`LiveViews::follow`]) reads its
//! journal once, follows it through the node's feed (the one `watch`
//! uses), keeps its timeline, renders each row once, and publishes a
//! [`Snapshot`] after every burst of entries. Each row remembers the
//! journal seq at which it last changed, so a viewer ([`serve_viewer`])
//! keeps only the seq its page shows and sends what changed after it: the
//! rows that are new or different, its own summary and actions (they
//! carry its session's CSRF token) — never the whole timeline again. A
//! hundred viewers of an execution with 20,000 steps cost one copy of its
//! journal and of its rendered rows, not a hundred; the task ends with its
//! last viewer.

use super::pages::live_parts;
use super::session::Viewer;
use super::timeline::{Progress, Timeline, more_line};
use crate::api::Api;
use crate::api::service::{ExecutionView, WatchEvent};
use crate::api::streams::StreamGuard;
use crate::journal::Entry;
use crate::model::TenantRecord;
use axum::response::sse::Event;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A burst: what arrives within this time of its first entry is
/// published once (a steady stream is published this often).
const BURST: Duration = Duration::from_millis(100);

/// One rendered timeline row and the journal seq at which it last
/// changed.
#[derive(Clone)]
struct Row {
    changed_at: i64,
    html: Arc<str>,
}

/// An execution's page as it stands, shared by every viewer.
pub struct Snapshot {
    /// Grows by one with every publication.
    version: u64,
    view: ExecutionView,
    rows: Arc<Vec<Row>>,
    entries: usize,
    progress: Option<Progress>,
    last_seq: i64,
}

type Feed = watch::Receiver<Option<Arc<Snapshot>>>;
type Publisher = watch::Sender<Option<Arc<Snapshot>>>;

/// The live views of this server's console, by (tenant, execution).
#[derive(Clone, Default)]
pub struct LiveViews {
    open: Arc<Mutex<HashMap<(String, String), Publisher>>>,
}

impl LiveViews {
    /// The shared view of execution `id` of `tenant` (its ownership
    /// checked by the caller), started by its first viewer.
    pub fn follow(&self, api: &Api, tenant: &TenantRecord, id: &str) -> Feed {
        let key = (tenant.name.clone(), id.to_owned());
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = open.get(&key) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        open.insert(key.clone(), tx.clone());
        let views = self.clone();
        let (api, tenant) = (api.clone(), tenant.clone());
        tokio::spawn(async move {
            if let Err(e) = publish(&api, &tenant, &key, &tx, &views).await {
                tracing::warn!(execution = %key.1, error = %e, "live view of an execution ended");
            }
            views.close(&key);
        });
        rx
    }

    /// Forgets the view of `key` (its task ended).
    fn close(&self, key: &(String, String)) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    /// Whether the view of `key` has no viewer left; if so it is
    /// forgotten at once, so no viewer can join a task that is ending.
    fn abandoned(&self, key: &(String, String), tx: &Publisher) -> bool {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if tx.receiver_count() > 0 {
            return false;
        }
        open.remove(key);
        true
    }
}

/// Follows the execution of `key` (tenant, id), publishing a snapshot
/// after every burst, until it ends or nobody looks.
async fn publish(
    api: &Api,
    tenant: &TenantRecord,
    key: &(String, String),
    tx: &Publisher,
    views: &LiveViews,
) -> crate::Result<()> {
    let id = key.1.as_str();
    let mut entries: Vec<Entry> = api.journal(tenant, id, 0).await?;
    let mut follower = api
        .watch(tenant, id, entries.last().map_or(0, |e| e.seq))
        .await?;
    let mut timeline = Timeline::build(&entries);
    let mut rows: Vec<Row> = Vec::new();
    // The journal seq `rows` were rendered as of.
    let mut rows_seq = 0;
    let mut version = 0;
    loop {
        let mut view = api.execution_with(tenant, id, &entries).await?;
        if view.record.status.is_terminal() {
            // Its journal is complete now: what the feed has not brought
            // yet is read, so the last snapshot shows all of it.
            let rest = api.journal(tenant, id, timeline.last_seq).await?;
            if !rest.is_empty() {
                let read = entries.len();
                entries.extend(rest);
                timeline.extend(&entries[read..]);
                view = api.execution_with(tenant, id, &entries).await?;
            }
        }
        let now_ms = api.now_ms();
        version += 1;
        // Only rows an entry made or changed since the last publication
        // (as of the seq it showed) are rendered again.
        for i in 0..timeline.len() {
            let changed_at = timeline.row_seq(i);
            if i < rows.len() && changed_at <= rows_seq {
                continue;
            }
            let row = Row {
                changed_at,
                html: timeline.row_html(i, now_ms).into_string().into(),
            };
            match rows.get_mut(i) {
                Some(old) => *old = row,
                None => rows.push(row),
            }
        }
        rows_seq = timeline.last_seq;
        let ended = view.record.status.is_terminal();
        tx.send_replace(Some(Arc::new(Snapshot {
            version,
            view,
            rows: Arc::new(rows.clone()),
            entries: timeline.entries,
            progress: timeline.progress.clone(),
            last_seq: timeline.last_seq,
        })));
        if ended {
            return Ok(());
        }
        // The next burst, or the end of every viewer.
        let mut event = loop {
            tokio::select! {
                event = follower.next() => break event,
                () = tx.closed() => {
                    if views.abandoned(key, tx) {
                        return Ok(());
                    }
                }
            }
        };
        let burst_ends = tokio::time::Instant::now() + BURST;
        let read = entries.len();
        loop {
            match event {
                Some(Ok(WatchEvent::Entry(entry))) => entries.push(entry),
                Some(Ok(WatchEvent::Finished(_))) | None => break,
                Some(Err(e)) => return Err(e),
            }
            match tokio::time::timeout_at(burst_ends, follower.next()).await {
                Ok(next) => event = next,
                Err(_) => break,
            }
        }
        timeline.extend(&entries[read..]);
    }
}

/// Sends one viewer's events (see `pages::live`) until the execution
/// ends, the viewer goes away, its key is revoked or the server stops.
/// `seq`: the last entry its page shows; `max_rows`: its timeline is cut
/// to the last rows.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the viewer's whole context"
)]
pub async fn serve_viewer(
    api: Api,
    viewer: Viewer,
    mut feed: Feed,
    mut guard: StreamGuard,
    mut stopping: watch::Receiver<bool>,
    seq: i64,
    max_rows: Option<usize>,
    tx: mpsc::Sender<Event>,
) {
    // The journal seq the page shows, and the snapshot last sent.
    let mut shown = seq;
    let mut sent = 0;
    loop {
        let snapshot = feed.borrow_and_update().clone();
        if let Some(snapshot) = snapshot.filter(|s| s.version > sent) {
            for event in viewer_events(&api, &viewer, &snapshot, shown, max_rows) {
                tokio::select! {
                    sent = tx.send(event) => if sent.is_err() { return },
                    () = guard.revoked() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
            sent = snapshot.version;
            shown = shown.max(snapshot.last_seq);
            if snapshot.view.record.status.is_terminal() {
                let finished = Event::default()
                    .event("finished")
                    .data(snapshot.view.record.status.as_str());
                let _ = tx.send(finished).await;
                return;
            }
        }
        tokio::select! {
            changed = feed.changed() => if changed.is_err() { return },
            () = tx.closed() => return,
            () = guard.revoked() => return,
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

/// What a viewer whose page shows the journal up to seq `shown` is sent
/// of `snapshot`: its summary and actions, the rows that changed after
/// `shown` (in the window of the last `max_rows`), and the line above a
/// cut timeline.
fn viewer_events(
    api: &Api,
    viewer: &Viewer,
    snapshot: &Snapshot,
    shown: i64,
    max_rows: Option<usize>,
) -> Vec<Event> {
    let total = snapshot.rows.len();
    let skip = max_rows.map_or(0, |max| total.saturating_sub(max));
    let mut rows = String::new();
    for row in snapshot.rows[skip..]
        .iter()
        .filter(|r| r.changed_at > shown)
    {
        rows.push_str(&row.html);
    }
    let (summary, actions) = live_parts(
        viewer,
        &snapshot.view,
        snapshot.entries,
        snapshot.progress.as_ref(),
        api.now_ms(),
    );
    let mut parts = vec![
        ("summary", summary.into_string()),
        ("actions", actions.into_string()),
    ];
    if !rows.is_empty() {
        parts.push(("rows", rows));
    }
    if max_rows.is_some() {
        parts.push(("more", more_line(skip, total).into_string()));
    }
    parts
        .into_iter()
        // A browser drops an event whose data is empty: a space instead.
        .map(|(name, data)| {
            let data = if data.is_empty() {
                " ".to_owned()
            } else {
                data
            };
            Event::default().event(name).data(data)
        })
        .collect()
}
