//! The audit log: every admin action (tenants, keys, secrets) and every
//! decision on an execution (approve, reject, cancel, retry) is recorded
//! with who made it (the key's id, or `cli:<user>` for commands on the
//! database), when, and from where (the peer address, or `local`), in an
//! append-only table (the database refuses to change or delete its rows).
//! `cerebelum audit` lists it; so does the console's Audit page.
//!
//! A row is appended after the action succeeded: what failed changed
//! nothing and is not audited (failed authentications are logged, see
//! [`super::throttle`]). If the row cannot be written, the caller gets an
//! error that says the action was carried out.

use crate::error::{Error, Result};
use crate::model::AuditRecord;
use crate::store::SharedStore;
use serde_json::Value;
use std::net::SocketAddr;

/// Who acts, and from where.
#[derive(Debug, Clone, PartialEq)]
pub struct Actor {
    /// A key's id (`cbk_…`), or `cli:<user>`.
    pub id: String,
    /// The peer address, or `local`.
    pub origin: String,
}

impl Actor {
    /// The holder of the key with id `key_id`, calling from `peer`.
    pub fn key(key_id: &str, peer: Option<SocketAddr>) -> Self {
        Self {
            id: key_id.to_owned(),
            origin: peer.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        }
    }

    /// Whoever runs a command of this process on the database directly
    /// (`cerebelum admin`, or `cancel` without `--server`): the user is
    /// the operating system's.
    pub fn cli() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".to_owned());
        Self {
            id: format!("cli:{user}"),
            origin: "local".to_owned(),
        }
    }
}

/// The peer address of a request served by `cerebelum serve` (tonic puts
/// it in the request's extensions, wrapped when the connection is TLS).
pub fn peer(extensions: &http::Extensions) -> Option<SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    extensions
        .get::<TcpConnectInfo>()
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(|tls| tls.get_ref())
        })
        .and_then(|info| info.remote_addr())
}

impl Actor {
    /// Appends `action` on `target` (of `tenant`, "" for none) by this
    /// actor at `now_ms` to the log.
    pub async fn record(
        &self,
        store: &SharedStore,
        now_ms: i64,
        tenant: &str,
        action: &str,
        target: &str,
        detail: Option<Value>,
    ) -> Result<()> {
        let record = AuditRecord {
            id: 0,
            at_ms: now_ms,
            tenant: tenant.to_owned(),
            actor: self.id.clone(),
            origin: self.origin.clone(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail,
        };
        store.catalog().append_audit(&record).await.map_err(|e| {
            tracing::error!(
                error = %e, actor = %record.actor, action = %record.action,
                target = %record.target, "writing the audit log failed"
            );
            let why = match e {
                Error::DiskFull(_) => "the server's disk is full",
                _ => "the server's log has the details",
            };
            Error::Unaudited(format!(
                "{} of '{}' was carried out, but recording it in the audit log failed ({why})",
                record.action, record.target
            ))
        })
    }
}
