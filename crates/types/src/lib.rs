//! Cerebelum's vocabulary, shared by every layer above: the engine's
//! [`Error`], the records it stores ([`model`]), the typed journal
//! ([`journal`]), injected time ([`clock`]) and the node's metrics
//! ([`metrics`]). No database driver and no wasmtime here: the store turns
//! its drivers' errors into [`Error`] through the `sqlx` and `rusqlite`
//! features.

#![deny(unsafe_code)]

pub mod clock;
pub mod error;
pub mod journal;
pub mod metrics;
pub mod model;
pub mod util;

pub use error::{Error, Result};
