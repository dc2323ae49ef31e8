//! What the HTTP side of the server shares (the console, the trigger
//! webhooks): the request's peer and transport, and the one mapping of
//! engine errors to HTTP statuses.

use crate::error::{DISK_FULL, Error};
use axum::http::StatusCode;
use std::convert::Infallible;

/// The peer address of a request (for the audit log and the sign-in
/// throttle); `None` where the server did not record one.
pub struct Peer(pub Option<std::net::SocketAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(crate::api::audit::peer(&parts.extensions)))
    }
}

/// Whether a request came over TLS (`serve --tls-cert`): the session
/// cookie is `Secure` then, so a browser never sends it in clear.
pub struct OverTls(pub bool);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for OverTls {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        Ok(OverTls(
            parts
                .extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .is_some(),
        ))
    }
}

/// The HTTP status and the message a person sees for an API error;
/// database and internal failures are logged and shown generically.
pub fn status_of(e: Error) -> (StatusCode, String) {
    match e {
        Error::InvalidInput(m) => (StatusCode::BAD_REQUEST, m),
        Error::NotFound(m) => (StatusCode::NOT_FOUND, m),
        Error::Conflict(m) => (StatusCode::CONFLICT, m),
        e @ Error::KeyTaken(_) => (StatusCode::CONFLICT, e.to_string()),
        Error::QuotaExceeded(m) => (StatusCode::TOO_MANY_REQUESTS, m),
        Error::Unauthenticated(m) => (StatusCode::UNAUTHORIZED, m),
        Error::PermissionDenied(m) => (StatusCode::FORBIDDEN, m),
        Error::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        Error::LostOwnership(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the execution moved to another node meanwhile; try again".into(),
        ),
        Error::Unaudited(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        Error::DiskFull(e) => {
            tracing::error!(error = %e, "the disk is full answering a console request");
            (StatusCode::INSUFFICIENT_STORAGE, DISK_FULL.into())
        }
        Error::Store(e) => {
            tracing::error!(error = %e, "database error answering a console request");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; try again later".into(),
            )
        }
        other => {
            tracing::error!(error = %other, "internal error answering a console request");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; the server's log has the details".into(),
            )
        }
    }
}
