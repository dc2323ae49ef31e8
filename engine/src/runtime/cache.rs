//! Compiled components on disk, keyed by (sha256, engine fingerprint), and
//! loaded with `deserialize_file` (mmap): compiling a Python component takes
//! seconds, loading its artifact milliseconds.

use crate::error::{Error, Result};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use wasmtime::Engine;
use wasmtime::component::Component;

pub(super) struct ComponentCache {
    dir: PathBuf,
    fingerprint: String,
    engine: Engine,
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

    pub(super) fn get(&self, sha256: &str) -> Result<Option<Component>> {
        let path = self.path(sha256);
        if !path.exists() {
            return Ok(None);
        }
        // SAFETY: the file was written by `put` below from
        // `Component::serialize` of an engine with the same compatibility
        // hash (it is in the file name), and is replaced only atomically.
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

    fn info_path(&self, sha256: &str) -> PathBuf {
        self.dir
            .join(format!("{sha256}-{}.info.json", self.fingerprint))
    }

    /// What the package's `describe` returned when it was first loaded:
    /// loading it again then needs no instance (a Python instance costs
    /// milliseconds).
    pub(super) fn info(&self, sha256: &str) -> Option<super::PackageInfo> {
        let text = std::fs::read(self.info_path(sha256)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub(super) fn put_info(&self, sha256: &str, info: &super::PackageInfo) -> Result<()> {
        let path = self.info_path(sha256);
        let bytes = serde_json::to_vec(info)
            .map_err(|e| Error::Runtime(format!("encoding package info: {e}")))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    pub(super) fn put(&self, sha256: &str, component: &Component) -> Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| Error::Runtime(format!("serializing compiled component: {e}")))?;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("creating cache dir {}", self.dir.display()), e))?;
        let path = self.path(sha256);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(())
    }
}
