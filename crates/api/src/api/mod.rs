//! The API: tenant-scoped operations ([`service::Api`]) and operators'
//! administration ([`admin`]), served over gRPC
//! as `cerebelum.v1` ([`grpc`], proto in `proto/cerebelum/v1`) behind one
//! front door that authenticates every call and bounds its size
//! ([`auth`]), API keys ([`keys`]), open watch streams ([`streams`]), and
//! the conversions between records and messages ([`convert`]), and the
//! server's TLS ([`tls`]).
//!
//! Clients use one type, the gRPC [`Client`] ([`client`]): to a
//! `cerebelum serve`, or to this process's database through the same
//! services served in-process ([`local`]).

pub mod admin;
pub mod audit;
pub mod auth;
pub mod client;
pub mod codec;
pub mod convert;
pub mod grpc;
pub mod keys;
pub mod local;
pub mod schedules;
pub mod service;
pub mod streams;
pub mod throttle;
pub mod tls;
pub mod triggers;
pub mod upgrades;
pub mod web;
pub mod workers;

pub use client::Client;
pub use service::{Api, CheckTarget, DEFAULT_QUOTAS, ReplayTarget, UpgradeTarget};

/// The generated messages, client and server of `cerebelum.v1`.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("cerebelum.v1");
}

/// The encoded descriptors of `cerebelum.v1`, for gRPC reflection.
pub const DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cerebelum_descriptor.bin"));

/// The port `cerebelum serve` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7433;
