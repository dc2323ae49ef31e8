//! Tenants' secrets, encrypted at rest with an envelope scheme.
//!
//! A master key (32 random bytes, written as 64 hex characters in a file:
//! `--master-key-file`, or `<sqlite file>.master-key` beside a SQLite
//! database) never reaches the database. Each secret gets a data key of
//! its own (32 random bytes): the value is encrypted with the data key,
//! and the data key with the master key, both with ChaCha20-Poly1305 and a
//! fresh 96-bit nonce, bound to the secret's tenant and name (associated
//! data), so a sealed value moved to another row does not open. What is
//! stored:
//!
//! ```text
//! sealed:v1:<master key id>:<hex(nonce ‖ wrapped data key)>:<hex(nonce ‖ encrypted value)>
//! ```
//!
//! The master key id (the first 8 hex digits of its SHA-256) says which
//! master key sealed a row, so the wrong key is a clear error, not
//! garbage. Rotating the master key re-wraps only the data keys; a
//! rotation that stops half-way leaves rows under either key, and running
//! it again finishes it. A value stored before encryption existed (not
//! `sealed:`) is read as it is, and sealed by the next rotation.

use crate::error::{Error, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

const PREFIX: &str = "sealed:v1:";
const NONCE: usize = 12;

/// A master key, which seals and opens secrets.
pub struct MasterKey {
    cipher: ChaCha20Poly1305,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("reading /dev/urandom", e))?;
    Ok(buf)
}

/// What a secret is bound to: its tenant and name.
fn bound_to(tenant: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(tenant.len() + name.len() + 1);
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

fn encrypt(cipher: &ChaCha20Poly1305, plain: &[u8], aad: &[u8]) -> Result<String> {
    let nonce: [u8; NONCE] = random()?;
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .map_err(|_| Error::Runtime("encrypting a secret failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(hex::encode(out))
}

fn decrypt(cipher: &ChaCha20Poly1305, text: &str, aad: &[u8]) -> Option<Vec<u8>> {
    let bytes = hex::decode(text).ok()?;
    if bytes.len() < NONCE {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .ok()
}

/// Whether a stored value is sealed (else it is a value stored in clear
/// before encryption at rest existed).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

/// The id of the master key that sealed `stored`, if it is sealed.
pub fn sealed_by(stored: &str) -> Option<&str> {
    stored.strip_prefix(PREFIX)?.split(':').next()
}

impl MasterKey {
    /// A master key from its 32 bytes.
    pub fn new(bytes: [u8; 32]) -> Self {
        let id = hex::encode(Sha256::digest(bytes))[..8].to_owned();
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&bytes)),
            id,
        }
    }

    /// A new random master key, and its file text (64 hex digits).
    pub fn generate() -> Result<(Self, String)> {
        let bytes: [u8; 32] = random()?;
        Ok((Self::new(bytes), format!("{}\n", hex::encode(bytes))))
    }

    /// The master key in `path` (64 hex digits, whitespace around them
    /// ignored).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading the master key {}", path.display()), e))?;
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "{} is not a master key: it must hold 64 hex digits (32 random bytes); \
                     `cerebelum admin master-key create FILE` makes one",
                    path.display()
                ))
            })?;
        Ok(Self::new(bytes))
    }

    /// Writes a new random master key to `path`, readable by its owner
    /// only; refuses to replace an existing file.
    pub fn create(path: &Path) -> Result<Self> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let (key, text) = Self::generate()?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("creating the master key {}", path.display()), e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(format!("writing the master key {}", path.display()), e))?;
        Ok(key)
    }

    /// The key's public id (8 hex digits of its SHA-256).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The stored form of secret `name` of `tenant` with `value`.
    pub fn seal(&self, tenant: &str, name: &str, value: &str) -> Result<String> {
        let aad = bound_to(tenant, name);
        let data_key: [u8; 32] = random()?;
        let wrapped = encrypt(&self.cipher, &data_key, &aad)?;
        let value = encrypt(
            &ChaCha20Poly1305::new(Key::from_slice(&data_key)),
            value.as_bytes(),
            &aad,
        )?;
        Ok(format!("{PREFIX}{}:{wrapped}:{value}", self.id))
    }

    /// The parts of a sealed value: (key id, wrapped data key, value).
    fn parts(stored: &str) -> Option<(&str, &str, &str)> {
        let mut parts = stored.strip_prefix(PREFIX)?.split(':');
        let out = (parts.next()?, parts.next()?, parts.next()?);
        parts.next().is_none().then_some(out)
    }

    fn wrong_key(&self, tenant: &str, name: &str, id: &str) -> Error {
        Error::InvalidInput(format!(
            "secret '{name}' of tenant '{tenant}' was sealed by master key {id}, not by the one \
             given ({}): start with the master key file it was sealed with (--master-key-file)",
            self.id
        ))
    }

    /// The data key of a sealed value, opened.
    fn data_key(&self, tenant: &str, name: &str, stored: &str) -> Result<[u8; 32]> {
        let (id, wrapped, _) = Self::parts(stored).ok_or_else(|| corrupt(tenant, name))?;
        if id != self.id {
            return Err(self.wrong_key(tenant, name, id));
        }
        decrypt(&self.cipher, wrapped, &bound_to(tenant, name))
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| corrupt(tenant, name))
    }

    /// The value of a stored secret (a value stored in clear before
    /// encryption existed is returned as it is).
    pub fn open(&self, tenant: &str, name: &str, stored: &str) -> Result<String> {
        if !is_sealed(stored) {
            return Ok(stored.to_owned());
        }
        let data_key = self.data_key(tenant, name, stored)?;
        let (_, _, value) = Self::parts(stored).ok_or_else(|| corrupt(tenant, name))?;
        let plain = decrypt(
            &ChaCha20Poly1305::new(Key::from_slice(&data_key)),
            value,
            &bound_to(tenant, name),
        )
        .ok_or_else(|| corrupt(tenant, name))?;
        String::from_utf8(plain).map_err(|_| corrupt(tenant, name))
    }

    /// `stored` sealed by `new` instead of this key: its data key is
    /// re-wrapped (the value's ciphertext stays). A row already sealed by
    /// `new` is returned as it is; one in clear is sealed.
    pub fn reseal(
        &self,
        new: &MasterKey,
        tenant: &str,
        name: &str,
        stored: &str,
    ) -> Result<String> {
        if !is_sealed(stored) {
            return new.seal(tenant, name, stored);
        }
        if sealed_by(stored) == Some(new.id()) {
            return Ok(stored.to_owned());
        }
        let data_key = self.data_key(tenant, name, stored)?;
        let (_, _, value) = Self::parts(stored).ok_or_else(|| corrupt(tenant, name))?;
        let wrapped = encrypt(&new.cipher, &data_key, &bound_to(tenant, name))?;
        Ok(format!("{PREFIX}{}:{wrapped}:{value}", new.id))
    }
}

fn corrupt(tenant: &str, name: &str) -> Error {
    Error::Schema(format!(
        "secret '{name}' of tenant '{tenant}' does not open: its stored form was changed or \
         belongs to another row; set it again with `cerebelum admin secret set`"
    ))
}

/// The values of `stored` secrets of `tenant` (name, stored form), opened
/// with `key`. Without a key, a sealed secret is an error that says how
/// to give one.
pub fn open_all(
    key: Option<&MasterKey>,
    tenant: &str,
    stored: Vec<(String, String)>,
) -> Result<Vec<(String, String)>> {
    stored
        .into_iter()
        .map(|(name, value)| {
            let value = match key {
                Some(key) => key.open(tenant, &name, &value)?,
                None if is_sealed(&value) => {
                    return Err(Error::InvalidInput(format!(
                        "secret '{name}' of tenant '{tenant}' is encrypted and no master key \
                         was given: start with --master-key-file FILE (the key it was sealed \
                         with, {})",
                        sealed_by(&value).unwrap_or("?")
                    )));
                }
                None => value,
            };
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_in_its_row() {
        let (key, _) = MasterKey::generate().unwrap();
        let (other, _) = MasterKey::generate().unwrap();
        let sealed = key.seal("acme", "token", "s3cr3t value").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("s3cr3t"), "{sealed}");
        assert_eq!(key.open("acme", "token", &sealed).unwrap(), "s3cr3t value");
        // Two seals of one value differ (fresh data key and nonces).
        assert_ne!(key.seal("acme", "token", "s3cr3t value").unwrap(), sealed);
        let wrong = other
            .open("acme", "token", &sealed)
            .unwrap_err()
            .to_string();
        assert!(
            wrong.contains(&format!("sealed by master key {}", key.id())),
            "{wrong}"
        );
        for (tenant, name) in [("evil", "token"), ("acme", "other")] {
            let moved = key.open(tenant, name, &sealed).unwrap_err().to_string();
            assert!(moved.contains("does not open"), "{moved}");
        }
        let mut tampered = sealed.clone();
        let last = tampered.pop().unwrap();
        tampered.push(if last == '0' { '1' } else { '0' });
        assert!(key.open("acme", "token", &tampered).is_err());
        // A value stored in clear before encryption is read as it is.
        assert_eq!(key.open("acme", "token", "plain").unwrap(), "plain");
    }

    #[test]
    fn resealing_moves_a_secret_to_the_new_key() {
        let (old, _) = MasterKey::generate().unwrap();
        let (new, _) = MasterKey::generate().unwrap();
        let sealed = old.seal("t", "n", "v").unwrap();
        let resealed = old.reseal(&new, "t", "n", &sealed).unwrap();
        assert_eq!(sealed_by(&resealed), Some(new.id()));
        assert_eq!(new.open("t", "n", &resealed).unwrap(), "v");
        assert!(old.open("t", "n", &resealed).is_err());
        // Again (a rotation run twice): unchanged. In clear: sealed.
        assert_eq!(old.reseal(&new, "t", "n", &resealed).unwrap(), resealed);
        let from_clear = old.reseal(&new, "t", "n", "plain").unwrap();
        assert_eq!(new.open("t", "n", &from_clear).unwrap(), "plain");
    }

    #[test]
    fn without_a_key_sealed_secrets_say_which_key_they_need() {
        let (key, _) = MasterKey::generate().unwrap();
        let sealed = key.seal("t", "n", "v").unwrap();
        let e = open_all(None, "t", vec![("n".into(), sealed)]).unwrap_err();
        assert!(e.to_string().contains(key.id()), "{e}");
        let clear = open_all(None, "t", vec![("n".into(), "v".into())]).unwrap();
        assert_eq!(clear, vec![("n".to_owned(), "v".to_owned())]);
    }
}
