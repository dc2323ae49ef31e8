//! Cerebelum: a durable workflow engine whose user code runs as sandboxed
//! WebAssembly components.
//!
//! Every call user code makes to the engine is a journaled host import
//! (`cerebelum:workflow/host`, see `wit/`). The journal lets an execution
//! hibernate for days, survive `kill -9` of the engine, and continue on the
//! next line of user code after a restart without repeating a side effect.
//!
//! # Layout
//!
//! - [`model`]: the records the engine stores (executions, journal entries, approvals).
//! - [`store`]: the [`store::Store`] trait with its durability contract, the
//!   SQLite backend (embedded, one node), the PostgreSQL backend (any number
//!   of nodes: fenced commits, `SKIP LOCKED` claims, `LISTEN/NOTIFY`) and
//!   the group committer.
//! - [`runtime`]: wasmtime: the one engine config, the compiled-component
//!   cache, packages, the per-invocation sandbox.
//! - [`executor`]: replay and the host imports (journaled outbound HTTP
//!   among them); drives one execution; tenants' sandbox settings.
//! - [`http`]: the HTTP allow-lists of tenants.
//! - `scheduler`: claims due executions (woken by the store's notifications
//!   or its polling tick), leases, cancellation forwarding.
//! - [`api`]: the API: tenant-scoped operations (isolation lives there),
//!   the `cerebelum.v1` gRPC service with health and reflection, API keys.
//! - [`clock`]: injected time.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> cerebelum::Result<()> {
//! use cerebelum::{Engine, EngineConfig, clock::SystemClock, model::DEFAULT_TENANT, store};
//! use std::sync::Arc;
//!
//! // Or "postgres://user@host/db" to share the work with other nodes.
//! let store = store::open("cerebelum.db", store::Synchronous::Full).await?;
//! let engine = Engine::new(store, EngineConfig::new("cache".into()), Arc::new(SystemClock))?;
//! let wasm = std::fs::read("hello.wasm").unwrap();
//! let package = engine.upload(DEFAULT_TENANT, "hello", wasm).await?;
//! let execution = engine
//!     .start(DEFAULT_TENANT, &package.sha256, "hello", r#"{"name":"web-1"}"#, None)
//!     .await?;
//! let done = engine.run_until_done(&execution.id).await?;
//! println!("{:?}", done.result);
//! # Ok(()) }
//! ```

#![deny(unsafe_code)]

pub mod api;
pub mod clock;
mod error;
pub mod executor;
pub mod http;
pub mod journal;
pub mod model;
pub mod runtime;
pub mod store;
mod util;

pub use error::{Error, Result};
pub use executor::{Engine, EngineConfig};
