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
//! Layers, lowest first; a module uses only those below it
//! (`scripts/module-edges.sh` lists the edges):
//!
//! - [`model`]: the records the engine stores (executions, tenants,
//!   packages with their typed metadata, approvals) and the errors user
//!   code gets ([`model::ErrorKind`], [`model::CallError`]).
//! - [`journal`]: the typed journal: one [`journal::Event`] per kind of
//!   entry, the [`journal::Call`]s replay compares, and their stored form.
//! - [`clock`]: injected time ([`clock::SystemClock`], [`clock::TestClock`]).
//! - [`store`]: storage split by who uses it: [`store::Catalog`] (tenants,
//!   keys, secrets, packages), [`store::Executions`] (what clients read and
//!   decide) and [`store::Store`] (what nodes write, with the durability
//!   contract); the SQL both backends share is written once; SQLite
//!   (embedded, one node) and PostgreSQL (any number of nodes: fenced
//!   commits, `SKIP LOCKED` claims, `LISTEN/NOTIFY`); the group committer.
//! - [`runtime`]: wasmtime, knowing nothing of executions: the one engine
//!   config, the compiled-component cache, packages, the sandbox of an
//!   invocation inside store data its embedder owns
//!   ([`runtime::Embedding`]).
//! - [`executor`]: the [`Engine`] facade; replay, the host imports
//!   (journaled outbound HTTP among them), driving executions, the
//!   scheduler (claims, leases, cancellation), tenants' sandbox settings.
//! - [`http`]: the HTTP allow-lists of tenants.
//! - [`api`]: tenant-scoped operations (isolation lives there), the one
//!   trait clients use ([`api::Operations`]: local, or [`api::client::Remote`]
//!   over gRPC), the `cerebelum.v1` gRPC service with health and
//!   reflection, API keys, the trigger webhooks.
//! - [`console`]: the web console, on [`api::Api`] as gRPC is.
//! - [`server`]: `serve`'s listener, wiring the gRPC services, metrics,
//!   webhooks and the console together.
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
pub mod console;
mod error;
pub mod executor;
pub mod http;
pub mod journal;
pub mod metrics;
pub mod model;
pub mod runtime;
pub mod secrets;
pub mod server;
pub mod store;
pub mod util;

pub use error::{Error, Result};
pub use executor::{Engine, EngineConfig};
