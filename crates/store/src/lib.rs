//! Storage: the journal, executions, tenants, packages and the durability
//! contract on SQLite or PostgreSQL ([`store`]), and secrets at rest
//! ([`secrets`]).

#![deny(unsafe_code)]

pub mod secrets;
pub mod store;

use cerebelum_types::{clock, error, journal, metrics, model, util};
