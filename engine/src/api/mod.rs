//! The API: tenant-scoped operations ([`service::Api`]), served over gRPC
//! as `cerebelum.v1` ([`grpc`], proto in `proto/cerebelum/v1`) behind one
//! front door that authenticates every call and bounds its size
//! ([`auth`]), API keys ([`keys`]), open watch streams ([`streams`]), and
//! the conversions between records and messages ([`convert`]).

pub mod auth;
pub mod convert;
pub mod grpc;
pub mod keys;
pub mod service;
pub mod streams;

pub use service::{Api, DEFAULT_QUOTAS};

/// The generated messages, client and server of `cerebelum.v1`.
#[allow(clippy::all)]
pub mod pb {
    tonic::include_proto!("cerebelum.v1");
}

/// The encoded descriptors of `cerebelum.v1`, for gRPC reflection.
pub const DESCRIPTOR: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cerebelum_descriptor.bin"));

/// The port `cerebelum serve` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7433;
