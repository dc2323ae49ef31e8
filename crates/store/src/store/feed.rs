//! Journal feeds: one source of events per followed execution, shared by
//! everyone who follows it (`watch` streams, local `watch`, the console).
//!
//! The first follower of an execution starts one poller task; every other
//! follower subscribes to what the feed broadcasts. This node's group
//! commit hands the feed the entries it committed, which are broadcast as
//! they are, without reading them back ([`Feeds::committed`]). The poller
//! reads the store for the rest: the execution's end, entries another
//! writer made (another node, the scheduler firing a timer) and any gap,
//! at once when a commit asks, else every [`POLL`]. It stops when its last
//! follower goes away or the execution ends, so a follower that
//! disconnects costs nothing afterwards.
//!
//! A follower first reads the journal it asked for from the store, then
//! takes the broadcast, skipping what it already has by `seq`: nothing is
//! missed between the two, and a follower that falls behind the broadcast
//! reads the store again from where it was. The follower that starts a
//! feed reads nothing itself: it listens before the poller's first read,
//! which broadcasts everything after the seq it asked for.
//!
//! A follower may ask for the end alone ([`Feeds::follow_end_checked`]:
//! a client waiting for a result). While every follower of a feed is
//! such, commits keep no copy of their entries, the poller reads only the
//! execution's record, and a commit wakes it only when it ended the
//! execution: the wait costs nothing per step. Such a follower brings its own read of
//! the record (the API's ownership check), which stands for the poller's
//! first.

use super::SharedStore;
use crate::error::{Error, Result};
use crate::journal::Entry;
use crate::model::ExecutionRecord;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};

/// How often a feed reads the store when no local commit woke it (the
/// execution runs on another node, or nowhere).
const POLL: Duration = Duration::from_millis(50);
/// How often it reads the store while this node's commits wake it.
const POLL_WHILE_LOCAL: Duration = Duration::from_secs(1);
/// Events a slow follower may fall behind before it rereads the store.
const BACKLOG: usize = 1024;
/// The same for a feed started by a follower of the end alone: its one
/// event needs no room, and a broadcast channel's slots are allocated
/// when it is made (a follower of entries who joins it later rereads the
/// store more often).
const END_BACKLOG: usize = 16;

/// One event of a followed execution.
// Handed from the feed to its follower once; entries are nearly every
// event, and the record comes once: boxing either costs more than the
// size difference.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum FeedEvent {
    Entry(Entry),
    /// The last event: the execution ended.
    Finished(ExecutionRecord),
}

/// What the poller broadcasts.
#[derive(Debug, Clone)]
enum Broadcast {
    Entry(Arc<Entry>),
    Finished(Arc<ExecutionRecord>),
    /// Reading the store failed; the message of the error.
    Failed(Arc<str>),
}

struct Feed {
    tx: broadcast::Sender<Broadcast>,
    wake: Notify,
    followers: AtomicUsize,
    /// Those of `followers` that take the entries, not only the end.
    entry_followers: AtomicUsize,
    /// When a local commit last touched the execution.
    touched: Mutex<Option<Instant>>,
    /// The seq of the last entry broadcast; entries are broadcast in
    /// order, under this lock, by the poller and by commits alike.
    last_seq: Mutex<i64>,
}

impl Feed {
    /// Whether some follower takes the entries.
    fn wants_entries(&self) -> bool {
        self.entry_followers.load(Ordering::SeqCst) > 0
    }

    /// Broadcasts the entries after the last one broadcast, in order:
    /// `entries` is a run of consecutive seqs. Unless `gaps_ok`, nothing
    /// is broadcast if they do not start right after it (false; the
    /// poller reads the store instead).
    fn broadcast(&self, entries: impl IntoIterator<Item = Entry>, gaps_ok: bool) -> bool {
        let mut last = self.last_seq.lock().unwrap_or_else(|p| p.into_inner());
        let from = *last;
        let mut entries = entries.into_iter().skip_while(|e| e.seq <= from).peekable();
        if !gaps_ok && entries.peek().is_some_and(|e| e.seq != from + 1) {
            return false;
        }
        for entry in entries {
            *last = entry.seq;
            let _ = self.tx.send(Broadcast::Entry(Arc::new(entry)));
        }
        true
    }
}

/// Whether this node drives an execution (see [`Feeds::driven_here`]).
type DrivenHere = Box<dyn Fn(&str) -> bool + Send + Sync>;

struct Shared {
    store: SharedStore,
    feeds: Mutex<HashMap<String, Arc<Feed>>>,
    /// Feeds open: `touched` does nothing while there are none.
    open: AtomicUsize,
    driven_here: std::sync::OnceLock<DrivenHere>,
    /// Counts each read of the store (see [`Feeds::count_reads`]).
    reads: std::sync::OnceLock<prometheus_client::metrics::counter::Counter>,
}

impl Shared {
    /// Whether this node's commits will wake the feed of `id`: a local
    /// commit touched it lately, or the node drives it.
    fn local(&self, id: &str, feed: &Feed) -> bool {
        let touched = *feed.touched.lock().unwrap_or_else(|p| p.into_inner());
        touched.is_some_and(|at| at.elapsed() < POLL_WHILE_LOCAL)
            || self.driven_here.get().is_some_and(|here| here(id))
    }
}

/// The feeds of one engine node.
#[derive(Clone)]
pub struct Feeds {
    shared: Arc<Shared>,
}

impl Feeds {
    pub fn new(store: SharedStore) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                feeds: Mutex::new(HashMap::new()),
                open: AtomicUsize::new(0),
                driven_here: std::sync::OnceLock::new(),
                reads: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Tells the feeds which executions this node drives (the engine's
    /// running set): every change of those is a commit of this node, which
    /// wakes their feeds, so they read the store only every
    /// `POLL_WHILE_LOCAL`, not every `POLL`. Without it, thousands of
    /// executions started here and waiting for room to run, each followed
    /// by its `RunExecution`, read their records 20 times a second. Set
    /// once; later calls are ignored.
    pub fn driven_here(&self, check: impl Fn(&str) -> bool + Send + Sync + 'static) {
        let _ = self.shared.driven_here.set(Box::new(check));
    }

    /// Counts every read of the store by a feed in `reads` (the node's
    /// `feed_reads`; a handle, so the store imports no global). Set once.
    pub fn count_reads(&self, reads: prometheus_client::metrics::counter::Counter) {
        let _ = self.shared.reads.set(reads);
    }

    /// Tells the feed of execution `id`, if it has one, that its journal or
    /// status changed outside this node's group commit: it reads the store.
    pub fn touched(&self, id: &str) {
        if let Some(feed) = self.feed(id) {
            *feed.touched.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            feed.wake.notify_one();
        }
    }

    /// The feed of execution `id`, if it has one.
    fn feed(&self, id: &str) -> Option<Arc<Feed>> {
        if self.shared.open.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.shared
            .feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Whether execution `id` has a feed here that hands out entries (its
    /// commits then keep a copy of their entries for [`Feeds::committed`]).
    pub fn followed(&self, id: &str) -> bool {
        self.feed(id).is_some_and(|feed| feed.wants_entries())
    }

    /// Tells the feed of execution `id`, if it has one, what a group
    /// commit of this node wrote: `entries` (a copy, if it kept one) are
    /// broadcast at once; the poller reads the store if they do not follow
    /// what was broadcast, if the commit kept no copy, or if `ended` (the
    /// record of the end).
    ///
    /// A feed whose followers all wait for the end alone is woken only by
    /// the commit that ended the execution.
    pub fn committed(&self, id: &str, entries: Option<Vec<Entry>>, ended: bool) {
        let Some(feed) = self.feed(id) else {
            return;
        };
        *feed.touched.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let published = entries.is_some_and(|entries| feed.broadcast(entries, false));
        if ended || (!published && feed.wants_entries()) {
            feed.wake.notify_one();
        }
    }

    /// Executions followed right now (one poller each).
    pub fn open(&self) -> usize {
        self.shared.open.load(Ordering::Relaxed)
    }

    /// Follows execution `id`: its journal entries after `after_seq`, then
    /// [`FeedEvent::Finished`].
    pub fn follow(&self, id: &str, after_seq: i64) -> Follower {
        let (follower, started) = self.register(id, Some(after_seq));
        if started {
            self.spawn_poller(id, &follower.feed, true);
        }
        follower
    }

    /// Follows execution `id` for its end alone: [`FeedEvent::Finished`]
    /// and nothing before it. `check` is the caller's own read of its
    /// record, which stands for the poller's first. The follower is
    /// registered before `check` runs, so an end committed after the read
    /// still wakes the feed; if `check` finds the execution ended, the
    /// follower hands out that record. An error of `check` is returned as
    /// it is, and the follower dropped.
    pub async fn follow_end_checked(
        &self,
        id: &str,
        check: impl Future<Output = Result<ExecutionRecord>>,
    ) -> Result<Follower> {
        let (follower, started) = self.register(id, None);
        let checked = check.await;
        if started {
            match &checked {
                Ok(record) if record.status.is_terminal() => {
                    // As the poller ends a feed: removed, then the end.
                    self.shared.remove(id, &follower.feed, false);
                    let _ = follower
                        .feed
                        .tx
                        .send(Broadcast::Finished(Arc::new(record.clone())));
                }
                // The poller waits for the end (or a poll) before it reads.
                Ok(_) => self.spawn_poller(id, &follower.feed, false),
                // Others may have joined: the poller serves them, or stops.
                Err(_) => self.spawn_poller(id, &follower.feed, true),
            }
        }
        checked.map(|_| follower)
    }

    /// Starts the poller of a feed that [`Feeds::register`] made; it reads
    /// the store at once if `read_first`, else at its first wake-up.
    fn spawn_poller(&self, id: &str, feed: &Arc<Feed>, read_first: bool) {
        tokio::spawn(poll(
            self.shared.clone(),
            id.to_owned(),
            feed.clone(),
            read_first,
        ));
    }

    /// A follower of execution `id`, of its entries after `after` or (if
    /// `None`) of its end alone, and whether it made the feed, whose
    /// poller the caller then starts.
    fn register(&self, id: &str, after: Option<i64>) -> (Follower, bool) {
        let takes_entries = after.is_some();
        let after_seq = after.unwrap_or(0);
        let (feed, rx, started) = {
            let mut feeds = self.shared.feeds.lock().unwrap_or_else(|p| p.into_inner());
            match feeds.get(id) {
                Some(feed) => {
                    feed.followers.fetch_add(1, Ordering::SeqCst);
                    feed.entry_followers
                        .fetch_add(usize::from(takes_entries), Ordering::SeqCst);
                    (feed.clone(), feed.tx.subscribe(), false)
                }
                None => {
                    let (tx, rx) =
                        broadcast::channel(if takes_entries { BACKLOG } else { END_BACKLOG });
                    let feed = Arc::new(Feed {
                        tx,
                        wake: Notify::new(),
                        followers: AtomicUsize::new(1),
                        entry_followers: AtomicUsize::new(usize::from(takes_entries)),
                        touched: Mutex::new(None),
                        // An end-only feed broadcasts no entries until a
                        // follower of entries wakes its poller.
                        last_seq: Mutex::new(after_seq),
                    });
                    feeds.insert(id.to_owned(), feed.clone());
                    self.shared.open.fetch_add(1, Ordering::Relaxed);
                    (feed, rx, true)
                }
            }
        };
        let follower = Follower {
            shared: self.shared.clone(),
            id: id.to_owned(),
            feed,
            rx,
            last_seq: after_seq,
            backlog: VecDeque::new(),
            // The feed it started broadcasts everything after `after_seq`
            // (its poller's first read), and it listens from the start.
            // One that waits for the end reads no history.
            read_history: !started && takes_entries,
            takes_entries,
            done: false,
        };
        (follower, started)
    }
}

impl Shared {
    /// Removes `feed` if it is still the feed of `id` and nobody follows
    /// it (`idle`), or in any case (`!idle`); true if it was removed.
    fn remove(&self, id: &str, feed: &Arc<Feed>, idle: bool) -> bool {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if idle && feed.followers.load(Ordering::SeqCst) > 0 {
            return false;
        }
        if feeds.get(id).is_some_and(|f| Arc::ptr_eq(f, feed)) {
            feeds.remove(id);
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        true
    }
}

/// The one poller of a feed.
async fn poll(shared: Arc<Shared>, id: String, feed: Arc<Feed>, mut read: bool) {
    loop {
        if shared.remove(&id, &feed, true) {
            return;
        }
        if std::mem::replace(&mut read, true) && poll_once(&shared, &id, &feed).await {
            return;
        }
        let wait = if shared.local(&id, &feed) {
            POLL_WHILE_LOCAL
        } else {
            POLL
        };
        tokio::select! {
            _ = feed.wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One read of the store by the poller: what it finds is broadcast; true
/// when the feed is done (the execution ended, or the read failed).
async fn poll_once(shared: &Shared, id: &str, feed: &Arc<Feed>) -> bool {
    // The status first: entries committed before it are then read too.
    let last_seq = *feed.last_seq.lock().unwrap_or_else(|p| p.into_inner());
    let wants_entries = feed.wants_entries();
    if let Some(reads) = shared.reads.get() {
        reads.inc();
    }
    let read = async {
        let record = shared.store.executions().execution(id).await?;
        let entries = if wants_entries {
            shared.store.executions().journal(id, last_seq).await?
        } else {
            Vec::new()
        };
        Ok::<_, Error>((record, entries))
    };
    let (record, entries) = match read.await {
        Ok(found) => found,
        Err(e) => {
            shared.remove(id, feed, false);
            let _ = feed.tx.send(Broadcast::Failed(e.to_string().into()));
            return true;
        }
    };
    // What commits broadcast meanwhile is skipped.
    feed.broadcast(entries, true);
    if record.status.is_terminal() {
        // Removed before the last event: a follower arriving later
        // starts a new feed instead of waiting on this one.
        shared.remove(id, feed, false);
        let _ = feed.tx.send(Broadcast::Finished(Arc::new(record)));
        return true;
    }
    false
}

/// One follower of a feed; dropping it is how it stops following.
pub struct Follower {
    shared: Arc<Shared>,
    id: String,
    feed: Arc<Feed>,
    rx: broadcast::Receiver<Broadcast>,
    /// The last seq handed out.
    last_seq: i64,
    /// Entries read from the store, to hand out before the broadcast.
    backlog: VecDeque<Entry>,
    read_history: bool,
    /// Hands out entries (else only the end).
    takes_entries: bool,
    done: bool,
}

impl Follower {
    /// The next event; `None` after [`FeedEvent::Finished`] or an error.
    pub async fn next(&mut self) -> Option<Result<FeedEvent>> {
        if self.done {
            return None;
        }
        loop {
            if self.read_history {
                self.read_history = false;
                match self
                    .shared
                    .store
                    .executions()
                    .journal(&self.id, self.last_seq)
                    .await
                {
                    Ok(entries) => self.backlog.extend(entries),
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            if let Some(entry) = self.backlog.pop_front() {
                self.last_seq = entry.seq;
                return Some(Ok(FeedEvent::Entry(entry)));
            }
            match self.rx.recv().await {
                Ok(Broadcast::Entry(entry))
                    if entry.seq <= self.last_seq || !self.takes_entries => {}
                Ok(Broadcast::Entry(entry)) => {
                    self.last_seq = entry.seq;
                    return Some(Ok(FeedEvent::Entry((*entry).clone())));
                }
                Ok(Broadcast::Finished(record)) => {
                    self.done = true;
                    return Some(Ok(FeedEvent::Finished((*record).clone())));
                }
                Ok(Broadcast::Failed(message)) => {
                    self.done = true;
                    return Some(Err(Error::Runtime(format!(
                        "following execution {}: {message}",
                        self.id
                    ))));
                }
                // Fell behind: what was missed is in the store.
                Err(broadcast::error::RecvError::Lagged(_)) => self.read_history = true,
                Err(broadcast::error::RecvError::Closed) => {
                    self.done = true;
                    return Some(Err(Error::Runtime(format!(
                        "the feed of execution {} stopped",
                        self.id
                    ))));
                }
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if self.takes_entries {
            self.feed.entry_followers.fetch_sub(1, Ordering::SeqCst);
        }
        if self.feed.followers.fetch_sub(1, Ordering::SeqCst) == 1 {
            // The poller sees it has no followers left and stops.
            self.feed.wake.notify_one();
        }
    }
}
