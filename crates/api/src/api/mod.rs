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

/// Runs `chore` every `period` until `shutdown` (a node's periodic duty:
/// due schedules, asked upgrades); a failed round is logged as `what`
/// failing, and the next one tries again.
pub(crate) async fn every<F, Fut, T>(
    period: std::time::Duration,
    shutdown: impl Future<Output = ()>,
    what: &str,
    mut chore: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::error::Result<T>>,
{
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = chore().await {
            tracing::warn!(error = %e, "{what} failed; trying again");
        }
    }
}

/// The port `cerebelum serve` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7433;
