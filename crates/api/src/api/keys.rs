//! API keys: `cbk_<id>_<secret>`. The id (`cbk_<8 hex>`) is public and
//! names the key for `admin key revoke`; the store keeps only the SHA-256
//! of the whole key, so a leaked database reveals no key. A key may expire;
//! when it was last used is recorded to the minute.

use crate::error::{Error, Result};
use crate::model::{ApiKeyRecord, TenantRecord};
use crate::store::SharedStore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Mutex, OnceLock};

/// A key as created: the secret is shown once and never stored.
pub struct NewKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

pub fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("reading /dev/urandom for a new API key", e))?;
    Ok(hex::encode(buf))
}

/// The stored form of `key`.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The id of a key (its public prefix), from the id itself or the whole key.
pub fn id_of(key_or_id: &str) -> &str {
    match key_or_id.strip_prefix("cbk_") {
        Some(rest) if rest.len() > 8 && rest.as_bytes()[8] == b'_' => &key_or_id[..12],
        _ => key_or_id,
    }
}

fn new_key(tenant: &str, now_ms: i64, expires_at_ms: Option<i64>) -> Result<NewKey> {
    let id = format!("cbk_{}", random_hex(4)?);
    let secret = format!("{id}_{}", random_hex(24)?);
    let record = ApiKeyRecord {
        id,
        tenant: tenant.to_owned(),
        created_at_ms: now_ms,
        revoked_at_ms: None,
        expires_at_ms,
        last_used_at_ms: None,
    };
    Ok(NewKey { record, secret })
}

/// Creates a key for `tenant`, valid until `expires_at_ms` (or forever).
pub async fn create(
    store: &SharedStore,
    tenant: &str,
    now_ms: i64,
    expires_at_ms: Option<i64>,
) -> Result<NewKey> {
    let key = new_key(tenant, now_ms, expires_at_ms)?;
    store
        .catalog()
        .add_api_key(&key.record, &hash(&key.secret))
        .await?;
    Ok(key)
}

/// Creates an operator key: it belongs to no tenant, and signs in to the
/// console's views of every tenant and of the nodes.
pub async fn create_operator(
    store: &SharedStore,
    now_ms: i64,
    expires_at_ms: Option<i64>,
) -> Result<NewKey> {
    let key = new_key("", now_ms, expires_at_ms)?;
    store
        .catalog()
        .add_operator_key(&key.record, &hash(&key.secret))
        .await?;
    Ok(key)
}

/// The message of a key that is not (or no longer) valid.
const INVALID: &str = "invalid or revoked API key (or it has expired); create one with \
     `cerebelum admin key create TENANT`";

/// Keys are checked against the wall clock (expiry is an operator's date).
pub fn now_ms() -> i64 {
    use crate::clock::Clock as _;
    crate::clock::SystemClock.now_ms()
}

/// The tenant of `key`; an error if the key is unknown, revoked or
/// expired. Notes that the key was used.
pub async fn authenticate(store: &SharedStore, key: &str) -> Result<TenantRecord> {
    let hash = hash(key);
    let now = now_ms();
    let tenant = store.catalog().tenant_by_key(&hash, now).await?;
    let tenant = tenant.ok_or_else(|| Error::Unauthenticated(INVALID.into()))?;
    used(store, hash, now);
    Ok(tenant)
}

/// The id of operator key `key`; an error if it is unknown, revoked or
/// expired (or a tenant's). Notes that the key was used.
pub async fn authenticate_operator(store: &SharedStore, key: &str) -> Result<String> {
    let hash = hash(key);
    let now = now_ms();
    let id = store.catalog().operator_by_key(&hash, now).await?;
    let id = id.ok_or_else(|| Error::Unauthenticated(INVALID.into()))?;
    used(store, hash, now);
    Ok(id)
}

/// Whether the key whose secret hashes to `hash` (a tenant's or an
/// operator's) is still valid: neither revoked nor expired.
pub async fn still_valid(store: &SharedStore, hash: &str) -> Result<bool> {
    let now = now_ms();
    let catalog = store.catalog();
    Ok(catalog.tenant_by_key(hash, now).await?.is_some()
        || catalog.operator_by_key(hash, now).await?.is_some())
}

/// How precisely "last used" is kept: a key's use is written at most
/// once per this long per node.
const USE_PRECISION_MS: i64 = 60_000;

/// Records, in the background, that the key with `hash` was used at
/// `now_ms` — unless this node recorded it less than a minute ago.
fn used(store: &SharedStore, hash: String, now_ms: i64) {
    static NOTED: OnceLock<Mutex<HashMap<String, i64>>> = OnceLock::new();
    {
        let mut noted = NOTED
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if noted
            .get(&hash)
            .is_some_and(|&at| now_ms - at < USE_PRECISION_MS)
        {
            return;
        }
        if noted.len() >= 100_000 {
            noted.retain(|_, at| now_ms - *at < USE_PRECISION_MS);
        }
        noted.insert(hash.clone(), now_ms);
    }
    let store = store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.catalog().key_used(&hash, now_ms).await {
            tracing::warn!(error = %e, "recording when an API key was last used");
        }
    });
}

/// A duration as an operator writes it: `90s`, `45m`, `12h`, `30d`
/// (a number and a unit); in ms.
pub fn parse_duration(text: &str) -> Result<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match number.parse::<i64>() {
        Ok(n) if n > 0 && unit_ms > 0 && n <= 36_500 * 86_400_000 / unit_ms => Ok(n * unit_ms),
        _ => Err(Error::InvalidInput(format!(
            "invalid duration {text:?}: write a positive number and a unit, s, m, h or d \
             (e.g. 90s, 12h, 30d; at most 100 years)"
        ))),
    }
}

/// Tenant names: letters, digits, '-', '_' and '.'.
pub fn check_tenant_name(name: &str) -> Result<()> {
    check_name("tenant", name, 64)
}

/// The name of a `what` (tenant, secret, schedule, trigger) as a client
/// gives it: 1 to `max` letters, digits, '-', '_' and '.'.
pub fn check_name(what: &str, name: &str, max: usize) -> Result<()> {
    if name.is_empty()
        || name.len() > max
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::InvalidInput(format!(
            "invalid {what} name {name:?}: use 1 to {max} letters, digits, '-', '_' and '.'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_of_a_key_is_its_prefix() {
        assert_eq!(id_of("cbk_0123abcd_ffee"), "cbk_0123abcd");
        assert_eq!(id_of("cbk_0123abcd"), "cbk_0123abcd");
        assert_eq!(id_of("other"), "other");
    }

    #[test]
    fn durations_take_a_number_and_a_unit() {
        assert_eq!(parse_duration("90s").unwrap(), 90_000);
        assert_eq!(parse_duration("45m").unwrap(), 2_700_000);
        assert_eq!(parse_duration(" 12h").unwrap(), 43_200_000);
        assert_eq!(parse_duration("30d").unwrap(), 2_592_000_000);
        for bad in ["", "30", "d", "0d", "-1d", "1w", "1.5h", "99999999999999d"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains("invalid duration"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn hashes_differ_per_key() {
        assert_ne!(hash("cbk_a_1"), hash("cbk_a_2"));
        assert_eq!(hash("x").len(), 64);
    }
}
