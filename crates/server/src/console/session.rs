//! Console sign-in: an API key is exchanged for a session, kept in this
//! process's memory and named by an HttpOnly, SameSite=Strict cookie.
//! The session holds the key's hash, never the key: every request asks
//! the store for the key's tenant again, so a revoked key signs its
//! sessions out at once. Each session has its own CSRF token, which every
//! state-changing request must carry (a form field or a header).

use crate::api::keys;
use crate::error::{Error, Result};
use crate::model::TenantRecord;
use crate::store::SharedStore;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cookie that names a session.
pub const COOKIE: &str = "cerebelum_session";
/// A session ends this long after its last request.
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once; the oldest is dropped beyond it.
const MAX_SESSIONS: usize = 10_000;

#[derive(Clone)]
struct Session {
    key_hash: String,
    key_id: String,
    csrf: String,
    /// Signed in with an operator key.
    operator: bool,
    last_seen: Instant,
}

/// Who is signed in, for one request.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The key's tenant; `None` for an operator key, which sees every
    /// tenant (see [`super::Console::tenant_of`]).
    pub tenant: Option<TenantRecord>,
    pub key_hash: String,
    /// The public id of the key signed in with (`cbk_…`).
    pub key_id: String,
    /// The token its forms carry.
    pub csrf: String,
}

/// The signed-in sessions of this server.
#[derive(Clone, Default)]
pub struct Sessions {
    open: Arc<Mutex<HashMap<String, Session>>>,
}

impl Sessions {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Signs in with `key` (a tenant's or an operator's): the new
    /// session's cookie value, or an error if the key is unknown or
    /// revoked.
    pub async fn sign_in(&self, store: &SharedStore, key: &str) -> Result<String> {
        let key_hash = keys::hash(key);
        let operator = match keys::authenticate(store, key).await {
            Ok(_) => false,
            Err(e @ Error::Unauthenticated(_)) => {
                keys::authenticate_operator(store, key)
                    .await
                    .map_err(|_| e)?;
                true
            }
            Err(e) => return Err(e),
        };
        let token = keys::random_hex(32)?;
        let session = Session {
            key_hash,
            key_id: keys::id_of(key).to_owned(),
            csrf: keys::random_hex(32)?,
            operator,
            last_seen: Instant::now(),
        };
        let mut open = self.open();
        open.retain(|_, s| s.last_seen.elapsed() < IDLE);
        if open.len() >= MAX_SESSIONS
            && let Some(oldest) = open
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(t, _)| t.clone())
        {
            open.remove(&oldest);
        }
        open.insert(token.clone(), session);
        Ok(token)
    }

    /// Ends the session named by `token`.
    pub fn sign_out(&self, token: &str) {
        self.open().remove(token);
    }

    /// The viewer of the session named by `token`, if it is open and its
    /// key still valid.
    pub async fn viewer(&self, store: &SharedStore, token: &str) -> Result<Option<Viewer>> {
        let session = {
            let mut open = self.open();
            match open.get_mut(token) {
                Some(s) if s.last_seen.elapsed() < IDLE => {
                    s.last_seen = Instant::now();
                    s.clone()
                }
                Some(_) => {
                    open.remove(token);
                    return Ok(None);
                }
                None => return Ok(None),
            }
        };
        let now = keys::now_ms();
        let tenant = if session.operator {
            store
                .catalog()
                .operator_by_key(&session.key_hash, now)
                .await?
                .map(|_| None)
        } else {
            store
                .catalog()
                .tenant_by_key(&session.key_hash, now)
                .await?
                .map(Some)
        };
        let Some(tenant) = tenant else {
            self.sign_out(token);
            return Ok(None);
        };
        Ok(Some(Viewer {
            tenant,
            key_hash: session.key_hash,
            key_id: session.key_id,
            csrf: session.csrf,
        }))
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Compares two tokens in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_found_among_others() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            "a=1; cerebelum_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn tokens_compare_equal_only_when_equal() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("", "a"));
    }
}
