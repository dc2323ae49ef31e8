//! The data of an invocation's wasmtime store, owned by the executor: the
//! runtime's [`Sandbox`], the journal-backed host of the invocation and
//! the hooks its outbound HTTP goes through. The runtime reaches it only
//! through [`Embedding`]; the host imports are implemented on it in
//! `host.rs`.

use super::http::HttpHooks;
use super::invocation::Invocation;
use crate::runtime::{Embedding, Sandbox};
use wasmtime_wasi::{WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

/// The store data of one invocation.
pub struct GuestData {
    pub sandbox: Sandbox,
    pub http: HttpHooks,
    /// The journal-backed host of this invocation; `None` for an instance
    /// that only answers `describe` (or a benchmark's bare call).
    pub host: Option<Invocation>,
}

impl GuestData {
    pub fn new(sandbox: Sandbox, host: Invocation) -> Self {
        let mut data = Self::without_host(sandbox);
        data.bind(host);
        data
    }

    /// Makes `host` the invocation this store's instance serves.
    pub fn bind(&mut self, host: Invocation) {
        self.http = HttpHooks::new(Some(&host));
        self.host = Some(host);
    }

    /// Lets go of the invocation served last (and so of its execution):
    /// the instance is kept for another step ([`super::idle`]).
    pub fn unbind(&mut self) {
        self.http = HttpHooks::new(None);
        self.host = None;
    }

    /// Journal entries for the output written since the last ones (see
    /// [`Invocation::new_output`]).
    pub fn new_output(&mut self) -> Vec<crate::store::NewEntry> {
        match &mut self.host {
            Some(host) => host.new_output(&self.sandbox),
            None => Vec::new(),
        }
    }
}

impl Embedding for GuestData {
    fn sandbox(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }

    fn sandbox_ref(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Host calls fail (there is no execution); HTTP is denied.
    fn without_host(sandbox: Sandbox) -> Self {
        Self {
            sandbox,
            http: HttpHooks::new(None),
            host: None,
        }
    }
}

impl WasiView for GuestData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.sandbox.wasi()
    }
}

impl WasiHttpView for GuestData {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.sandbox.http(&mut self.http)
    }
}
