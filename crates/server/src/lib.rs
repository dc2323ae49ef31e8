//! The web console ([`console`]) and `serve`'s listener ([`server`]): the
//! one place that wires gRPC, metrics, webhooks and the console together.

#![deny(unsafe_code)]

pub mod console;
pub mod server;

use cerebelum_api::api;
use cerebelum_store::store;
use cerebelum_types::{Result, error, journal, metrics, model, util};
