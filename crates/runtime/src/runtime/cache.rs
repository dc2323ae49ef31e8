//! Compiled components on disk, keyed by (sha256, engine fingerprint), and
//! loaded with `deserialize_file` (mmap): compiling a Python component takes
//! seconds, loading its artifact milliseconds.
//!
//! Loading an artifact runs its machine code unchecked, so the cache is
//! private: its directory is created 0700 and its files 0600, and an
//! artifact is loaded only if it is owned by this user, writable by no one
//! else, and its checksum (an XXH3-128 of the whole file, kept beside it)
//! matches. Anything else is discarded and compiled again.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

pub(super) struct ComponentCache {
    dir: PathBuf,
    fingerprint: String,
    engine: Engine,
}

/// Options that create a file readable and writable by its owner only.
fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Writes `bytes` to `path` atomically (a private temporary file renamed).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    private_file()
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Why the file at `path` may not be trusted, if it may not.
fn untrusted(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(path).ok()?;
        #[allow(unsafe_code, reason = "geteuid has no preconditions and cannot fail")]
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Some(format!("owned by uid {}, not by this user", meta.uid()));
        }
        if meta.mode() & 0o022 != 0 {
            return Some(format!(
                "writable by others (mode {:o})",
                meta.mode() & 0o777
            ));
        }
        if !meta.is_file() {
            return Some("not a regular file".into());
        }
    }
    let _ = path;
    None
}

/// The checksum of a file's contents.
fn checksum(bytes: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(bytes))
}

impl ComponentCache {
    pub(super) fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Self {
            dir,
            fingerprint: format!("{:016x}", h.finish()),
            engine: engine.clone(),
        }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm", self.fingerprint))
    }

    fn sum_path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.cwasm.xxh3", self.fingerprint))
    }

    /// Why the artifact of `sha256` may not be loaded, if it may not.
    fn refuse(&self, sha256: &str) -> Option<String> {
        let (path, sum_path) = (self.path(sha256), self.sum_path(sha256));
        for p in [&path, &sum_path] {
            if let Some(why) = untrusted(p) {
                return Some(format!("{} is {why}", p.display()));
            }
        }
        let expected = std::fs::read_to_string(&sum_path).ok();
        let actual = File::open(&path).and_then(|f| {
            // SAFETY: the map is only read, and the cache's files are only
            // ever replaced by rename, never written in place.
            #[allow(unsafe_code, reason = "hashing a file without copying it")]
            let map = unsafe { memmap2::Mmap::map(&f) }?;
            Ok(checksum(&map))
        });
        match (expected, actual) {
            (Some(expected), Ok(actual)) if expected.trim() == actual => None,
            (None, _) => Some(format!("{} has no checksum", path.display())),
            (_, Err(e)) => Some(format!("{} cannot be read: {e}", path.display())),
            (Some(_), Ok(_)) => Some(format!(
                "{} does not match its checksum (corrupted or modified)",
                path.display()
            )),
        }
    }

    /// Whether a compiled artifact of `sha256` is on disk (not checked).
    pub(super) fn has(&self, sha256: &str) -> bool {
        self.path(sha256).exists()
    }

    pub(super) fn get(&self, sha256: &str) -> Result<Option<Component>> {
        let path = self.path(sha256);
        if !path.exists() {
            return Ok(None);
        }
        if let Some(why) = self.refuse(sha256) {
            tracing::warn!(reason = %why, "discarding a cached component; it is compiled again");
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        // SAFETY: the file was written by `put` below from
        // `Component::serialize` of an engine with the same compatibility
        // hash (it is in the file name), is replaced only atomically, is
        // this user's and no one else's to write, and matches the checksum
        // `put` wrote beside it.
        #[allow(unsafe_code, reason = "loading our own precompiled artifact")]
        let loaded = unsafe { Component::deserialize_file(&self.engine, &path) };
        match loaded {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unreadable cached component");
                let _ = std::fs::remove_file(&path);
                Ok(None)
            }
        }
    }

    /// Versioned: `.info2` added the steps' placement, which an older
    /// engine's `.info` files lack.
    fn info_path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.info2.json", self.fingerprint))
    }

    /// What the package's `describe` (and `placement`) returned when it was
    /// first loaded:
    /// loading it again then needs no instance (a Python instance costs
    /// milliseconds).
    pub(super) fn info(&self, sha256: &str) -> Option<super::PackageInfo> {
        let path = self.info_path(sha256);
        if untrusted(&path).is_some() {
            return None;
        }
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub(super) fn put_info(&self, sha256: &str, info: &super::PackageInfo) -> Result<()> {
        let bytes = serde_json::to_vec(info)
            .map_err(|e| Error::Runtime(format!("encoding package info: {e}")))?;
        self.create_dir()?;
        write_private(&self.info_path(sha256), &bytes)
    }

    /// Creates the cache directory, owner-only, if it does not exist.
    fn create_dir(&self) -> Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&self.dir)
            .map_err(|e| Error::io(format!("creating cache dir {}", self.dir.display()), e))
    }

    pub(super) fn put(&self, sha256: &str, component: &Component) -> Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| Error::Runtime(format!("serializing compiled component: {e}")))?;
        self.create_dir()?;
        // The checksum first: an artifact without one is never loaded.
        write_private(&self.sum_path(sha256), checksum(&bytes).as_bytes())?;
        write_private(&self.path(sha256), &bytes)
    }
}
