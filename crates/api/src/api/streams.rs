//! Open watch streams of a server: counted per tenant (its `max_streams`
//! quota) and per node (`serve --node-max-streams`), and ended when the
//! key that opened them is revoked.
//!
//! A stream holds a [`StreamGuard`] for as long as the server works for
//! it: the guard is dropped when the client goes away, so the counts are
//! of streams that cost something. Every [`CHECK_EVERY`], one task asks the
//! store whether each key with open streams is still valid; streams of a
//! revoked key end with UNAUTHENTICATED.

use crate::error::{Error, Result};
use crate::store::SharedStore;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How often the keys of open streams are checked for revocation.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The node's default bound on open streams, all tenants together.
pub const DEFAULT_NODE_MAX_STREAMS: usize = 10_000;

struct Open {
    tenant: String,
    key_hash: String,
    revoked: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    open: HashMap<u64, Open>,
    per_tenant: HashMap<String, usize>,
}

/// The open streams of a node.
#[derive(Clone)]
pub struct Streams {
    state: Arc<Mutex<State>>,
    node_max: usize,
}

impl Streams {
    pub fn new(node_max: usize) -> Self {
        Self {
            state: Arc::default(),
            node_max,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a stream of `tenant` (at most `tenant_max` at once) with the
    /// key hashed as `key_hash`.
    pub fn open(
        &self,
        tenant: &str,
        tenant_max: Option<i64>,
        key_hash: &str,
    ) -> Result<StreamGuard> {
        let mut state = self.state();
        let mine = state.per_tenant.get(tenant).copied().unwrap_or(0);
        if let Some(max) = tenant_max
            && mine as i64 >= max
        {
            return Err(Error::QuotaExceeded(format!(
                "tenant '{tenant}' has {mine} open watch streams and may have at most {max} \
                 (max streams); close some (each `cerebelum watch` holds one)"
            )));
        }
        if state.open.len() >= self.node_max {
            return Err(Error::QuotaExceeded(format!(
                "this server has {} open watch streams, its maximum (serve \
                 --node-max-streams); try again later",
                state.open.len()
            )));
        }
        state.next_id += 1;
        let id = state.next_id;
        let (revoked, watched) = watch::channel(false);
        state.open.insert(
            id,
            Open {
                tenant: tenant.to_owned(),
                key_hash: key_hash.to_owned(),
                revoked,
            },
        );
        *state.per_tenant.entry(tenant.to_owned()).or_default() += 1;
        Ok(StreamGuard {
            streams: self.clone(),
            id,
            revoked: watched,
        })
    }

    /// Streams open now, all tenants together.
    pub fn count(&self) -> usize {
        self.state().open.len()
    }

    /// Ends the streams whose key the store no longer accepts.
    pub async fn end_revoked(&self, store: &SharedStore) {
        let keys: HashSet<String> = self
            .state()
            .open
            .values()
            .map(|o| o.key_hash.clone())
            .collect();
        for hash in keys {
            // A tenant's key, or an operator's (the console's live views).
            match super::keys::still_valid(store, &hash).await {
                Ok(true) => {}
                Ok(false) => {
                    for open in self.state().open.values() {
                        if open.key_hash == hash {
                            open.revoked.send_replace(true);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "checking the keys of open streams"),
            }
        }
    }

    /// Checks the keys of open streams every [`CHECK_EVERY`], until dropped.
    pub async fn check_revocations(self, store: SharedStore) {
        let mut every = tokio::time::interval(CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            if self.count() > 0 {
                self.end_revoked(&store).await;
            }
        }
    }
}

/// One open stream; dropping it closes it.
pub struct StreamGuard {
    streams: Streams,
    id: u64,
    revoked: watch::Receiver<bool>,
}

impl StreamGuard {
    /// Resolves when the stream's key is revoked.
    pub async fn revoked(&mut self) {
        let _ = self.revoked.wait_for(|r| *r).await;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut state = self.streams.state();
        if let Some(open) = state.open.remove(&self.id)
            && let Some(n) = state.per_tenant.get_mut(&open.tenant)
        {
            *n -= 1;
            if *n == 0 {
                state.per_tenant.remove(&open.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_per_tenant_and_per_node() {
        let streams = Streams::new(3);
        let a1 = streams.open("a", Some(2), "ka").unwrap();
        let _a2 = streams.open("a", Some(2), "ka").unwrap();
        let refused = streams.open("a", Some(2), "ka").err().unwrap();
        assert!(refused.to_string().contains("max streams"), "{refused}");
        let _b1 = streams.open("b", None, "kb").unwrap();
        let full = streams.open("b", None, "kb").err().unwrap();
        assert!(full.to_string().contains("node-max-streams"), "{full}");
        drop(a1);
        assert_eq!(streams.count(), 2);
        assert!(streams.open("a", Some(2), "ka").is_ok());
    }

    /// An operator's live view of a tenant's execution stays open until
    /// the operator key is revoked (it used to end at every check: only
    /// tenants' keys were looked up).
    #[tokio::test]
    async fn streams_of_an_operator_key_end_only_when_it_is_revoked() {
        use crate::api::keys;
        use crate::model::Quotas;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(
            dir.path().join("t.db").to_str().unwrap(),
            crate::store::Synchronous::Normal,
        )
        .await
        .unwrap();
        store
            .catalog()
            .create_tenant("acme", &Quotas::default(), &[], 0)
            .await
            .unwrap();
        let tenant_key = keys::create(&store, "acme", 0, None).await.unwrap();
        let operator = keys::create_operator(&store, 0, None).await.unwrap();
        let streams = Streams::new(10);
        let mut of_tenant = streams
            .open("acme", None, &keys::hash(&tenant_key.secret))
            .unwrap();
        let mut of_operator = streams
            .open("acme", None, &keys::hash(&operator.secret))
            .unwrap();
        let ended = |guard: &mut StreamGuard| *guard.revoked.borrow_and_update();

        streams.end_revoked(&store).await;
        assert!(!ended(&mut of_tenant), "a valid tenant key's stream ended");
        assert!(
            !ended(&mut of_operator),
            "a valid operator key's stream ended"
        );

        store
            .catalog()
            .revoke_api_key(&operator.record.id, 1)
            .await
            .unwrap();
        streams.end_revoked(&store).await;
        assert!(
            ended(&mut of_operator),
            "the revoked operator key's stream goes on"
        );
        assert!(!ended(&mut of_tenant));
    }
}
