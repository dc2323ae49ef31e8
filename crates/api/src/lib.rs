//! Tenant-scoped operations (isolation lives there), API keys, schedules,
//! triggers, and the `cerebelum.v1` gRPC service ([`api`]).

#![deny(unsafe_code)]

pub mod api;

use cerebelum_core::{executor, http};
use cerebelum_store::{secrets, store};
use cerebelum_types::{Error, clock, error, journal, metrics, model, util};
