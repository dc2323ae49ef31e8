//! The wasmtime embedding, knowing nothing of executions ([`runtime`]).

#![deny(unsafe_code)]

pub mod runtime;

use cerebelum_types::{error, model};
