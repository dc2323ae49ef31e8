//! API keys: `cbk_<id>_<secret>`. The id (`cbk_<8 hex>`) is public and
//! names the key for `admin key revoke`; the store keeps only the SHA-256
//! of the whole key, so a leaked database reveals no key.

use crate::error::{Error, Result};
use crate::model::{ApiKeyRecord, TenantRecord};
use crate::store::SharedStore;
use sha2::{Digest, Sha256};
use std::io::Read;

/// A key as created: the secret is shown once and never stored.
pub struct NewKey {
    pub record: ApiKeyRecord,
    pub secret: String,
}

pub(crate) fn random_hex(bytes: usize) -> Result<String> {
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

fn new_key(tenant: &str, now_ms: i64) -> Result<NewKey> {
    let id = format!("cbk_{}", random_hex(4)?);
    let secret = format!("{id}_{}", random_hex(24)?);
    let record = ApiKeyRecord {
        id,
        tenant: tenant.to_owned(),
        created_at_ms: now_ms,
        revoked_at_ms: None,
    };
    Ok(NewKey { record, secret })
}

/// Creates a key for `tenant`.
pub async fn create(store: &SharedStore, tenant: &str, now_ms: i64) -> Result<NewKey> {
    let key = new_key(tenant, now_ms)?;
    store
        .catalog()
        .add_api_key(&key.record, &hash(&key.secret))
        .await?;
    Ok(key)
}

/// Creates an operator key: it belongs to no tenant, and signs in to the
/// console's views of every tenant and of the nodes.
pub async fn create_operator(store: &SharedStore, now_ms: i64) -> Result<NewKey> {
    let key = new_key("", now_ms)?;
    store
        .catalog()
        .add_operator_key(&key.record, &hash(&key.secret))
        .await?;
    Ok(key)
}

/// The tenant of `key`; an error if the key is unknown or revoked.
pub async fn authenticate(store: &SharedStore, key: &str) -> Result<TenantRecord> {
    store
        .catalog()
        .tenant_by_key(&hash(key))
        .await?
        .ok_or_else(|| {
            Error::Unauthenticated(
                "invalid or revoked API key; create one with `cerebelum admin key create TENANT`"
                    .into(),
            )
        })
}

/// Tenant names: letters, digits, '-', '_' and '.'.
pub fn check_tenant_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(Error::InvalidInput(format!(
            "invalid tenant name {name:?}: use 1 to 64 letters, digits, '-', '_' and '.'"
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
    fn hashes_differ_per_key() {
        assert_ne!(hash("cbk_a_1"), hash("cbk_a_2"));
        assert_eq!(hash("x").len(), 64);
    }
}
