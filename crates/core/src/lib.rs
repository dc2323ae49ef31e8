//! The engine proper: the [`Engine`] facade, replay, the journaled host
//! imports (outbound HTTP among them), driving executions and the
//! scheduler ([`executor`]); tenants' HTTP allow-lists ([`http`]).

#![deny(unsafe_code)]

pub mod executor;
pub mod http;

pub use executor::{Engine, EngineConfig, ReplayReport};

use cerebelum_runtime::runtime;
use cerebelum_store::{secrets, store};
use cerebelum_types::{Error, clock, error, journal, metrics, model, util};
