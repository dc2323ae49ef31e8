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
//! A workspace of crates whose dependency graph is the architecture
//! (docs/architecture.md draws it); this library re-exports them so one
//! path, `cerebelum::…`, serves the CLI, the tests and the benchmarks.
//! Lowest first; each crate depends only on those above it in this list:
//!
//! - `cerebelum-types`: [`error`](Error), [`util`], [`model`] (the records
//!   the engine stores and the errors user code gets), [`journal`] (one
//!   [`journal::Event`] per kind of entry, the [`journal::Call`]s replay
//!   compares, their stored form), [`clock`] (injected time), [`metrics`].
//!   No database driver, no wasmtime.
//! - `cerebelum-store`: [`store`] — [`store::Catalog`] (tenants, keys,
//!   secrets, packages), [`store::Executions`] (what clients read and
//!   decide) and [`store::Store`] (what nodes write, with the durability
//!   contract); the SQL both backends share is written once; SQLite
//!   (embedded, one node) and PostgreSQL (any number of nodes: fenced
//!   commits, `SKIP LOCKED` claims, `LISTEN/NOTIFY`); the group committer.
//!   And [`secrets`] at rest.
//! - `cerebelum-runtime`: [`runtime`] — wasmtime, knowing nothing of
//!   executions: the one engine config, the compiled-component cache,
//!   packages, the sandbox of an invocation ([`runtime::Embedding`]).
//! - `cerebelum-core`: [`executor`] — the [`Engine`] facade; replay, the
//!   host imports (journaled outbound HTTP among them), driving
//!   executions, the scheduler (claims, leases, cancellation); [`http`],
//!   the HTTP allow-lists of tenants.
//! - `cerebelum-api`: [`api`] — tenant-scoped operations (isolation lives
//!   there), the `cerebelum.v1` gRPC service with health and reflection,
//!   API keys, schedules, the trigger webhooks.
//! - `cerebelum-server`: [`console`], the web console on [`api::Api`] as
//!   gRPC is, and [`server`], `serve`'s listener wiring them together.
//! - `cerebelum-engine` (this package): the `cerebelum` binary (the CLI),
//!   the end-to-end tests and the benchmarks.
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

pub use cerebelum_api::api;
pub use cerebelum_core::{Engine, EngineConfig, executor, http};
pub use cerebelum_runtime::runtime;
pub use cerebelum_server::{console, server};
pub use cerebelum_store::{secrets, store};
pub use cerebelum_types::{Error, Result, clock, journal, metrics, model, util};
