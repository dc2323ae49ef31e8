//! The front door of `cerebelum.v1`: a tower layer that authenticates
//! every call before it reaches the service, and bounds the size of its
//! request by the caller's tenant before the body is read.
//!
//! A call carries `authorization: Bearer <key>` (the scheme is matched
//! without regard to case, as RFC 7235 says). The key's tenant travels to
//! the handler as a [`Caller`] in the request's extensions, so each
//! handler only reads it. The `Admin` service takes operator keys instead
//! (an [`Operator`] travels then); a valid key of the wrong kind is
//! PERMISSION_DENIED. The body is wrapped so that a request larger than
//! the tenant may send (its package quota for uploads, its payload quota
//! for everything else, plus room for names) is refused with
//! RESOURCE_EXHAUSTED as soon as the gRPC frame header announces its
//! length: memory stays bounded by the quota, not by the request.

use super::admin::Operator;
use super::audit::{self, Actor};
use super::keys;
use super::service::Api;
use super::throttle::{self, Throttle};
use crate::model::TenantRecord;
use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::body::Body;

/// The path prefix of the services' RPCs (`Cerebelum`, `WorkerService`;
/// health and reflection are open).
const SERVICE: &str = "/cerebelum.v1.";
/// The path prefix of the `Admin` service's RPCs: operator keys only.
const ADMIN: &str = "/cerebelum.v1.Admin/";
/// The upload RPC, whose limit is the tenant's package quota.
const UPLOAD: &str = "/cerebelum.v1.Cerebelum/UploadPackage";
const REPLAY: &str = "/cerebelum.v1.Cerebelum/ReplayExecution";
const CHECK: &str = "/cerebelum.v1.Cerebelum/CheckPackage";
/// Room for the fields of a request besides its payload (names, ids).
const ROOM: u64 = 64 << 10;

/// Who made a call: the tenant of its key, and the key's hash (to notice
/// a revocation while a stream is open).
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: TenantRecord,
    pub key_hash: String,
    /// The key's id and the peer address, for the audit log.
    pub actor: Actor,
}

/// The key of an `authorization` header value `Bearer <key>`.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, key) = header.trim().split_once(char::is_whitespace)?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty()).then_some(key)
}

/// Who a call's key belongs to.
enum Who {
    Tenant(Box<Caller>),
    Operator(Operator),
}

/// Who made a call (the tenant of its key, or for the `Admin` service an
/// operator), or the status to answer with. A peer that presented too many
/// wrong keys lately is refused without a lookup. A valid key of the wrong
/// kind is PERMISSION_DENIED (and no failure of the peer).
async fn authenticate(
    api: &Api,
    throttle: &Throttle,
    headers: &http::HeaderMap,
    peer: Option<std::net::SocketAddr>,
    admin: bool,
) -> Result<Who, Status> {
    let ip = peer.map(|p| p.ip());
    if let Err(wait_s) = throttle.check(ip) {
        crate::metrics::metrics().auth_failures.inc();
        return Err(Status::unauthenticated(throttle::refusal(wait_s)));
    }
    let Some(header) = headers.get(http::header::AUTHORIZATION) else {
        throttle.failed(ip, "no API key");
        return Err(Status::unauthenticated(
            "missing API key: send the metadata `authorization: Bearer <key>` (the CLI: \
             --api-key or CEREBELUM_API_KEY); create a key with `cerebelum admin key create \
             TENANT`",
        ));
    };
    let Some(key) = header.to_str().ok().and_then(bearer) else {
        throttle.failed(ip, "malformed authorization header");
        return Err(Status::unauthenticated(
            "malformed authorization: expected `Bearer <api key>`",
        ));
    };
    let store = api.store();
    let found = if admin {
        keys::authenticate_operator(store, key).await.map(|id| {
            Who::Operator(Operator {
                actor: Actor::key(&id, peer),
            })
        })
    } else {
        keys::authenticate(store, key).await.map(|tenant| {
            Who::Tenant(Box::new(Caller {
                tenant,
                key_hash: keys::hash(key),
                actor: Actor::key(keys::id_of(key), peer),
            }))
        })
    };
    let e = match found {
        Ok(who) => return Ok(who),
        Err(e) => e,
    };
    if !matches!(e, crate::Error::Unauthenticated(_)) {
        return Err(super::grpc::status(e));
    }
    // Valid, but of the other kind?
    let hash = keys::hash(key);
    let now = keys::now_ms();
    if admin && let Ok(Some(tenant)) = store.catalog().tenant_by_key(&hash, now).await {
        return Err(Status::permission_denied(format!(
            "the Admin service takes operator keys, and this is a key of tenant '{}': create \
             an operator key with `cerebelum admin key create --operator` on the server's \
             database",
            tenant.name
        )));
    }
    if !admin && let Ok(Some(_)) = store.catalog().operator_by_key(&hash, now).await {
        return Err(Status::permission_denied(
            "this is an operator key, which administers the server (`cerebelum admin \
             --server`, the console); a tenant's calls need a key of that tenant",
        ));
    }
    throttle.failed(ip, "unknown or revoked API key");
    Err(super::grpc::status(e))
}

/// The [`tower_layer::Layer`] of the front door.
#[derive(Clone)]
pub struct AuthLayer {
    api: Api,
    throttle: Throttle,
}

impl AuthLayer {
    /// The front door of `api`, counting failures in `throttle` (which
    /// the console's sign-in shares).
    pub fn new(api: Api, throttle: Throttle) -> Self {
        Self { api, throttle }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            api: self.api.clone(),
            throttle: self.throttle.clone(),
        }
    }
}

/// A service behind the front door.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    api: Api,
    throttle: Throttle,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ResBody> tower_service::Service<http::Request<Body>> for Authenticated<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        if !request.uri().path().starts_with(SERVICE) {
            return Box::pin(self.inner.call(request));
        }
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let api = self.api.clone();
        let throttle = self.throttle.clone();
        let peer = audit::peer(request.extensions());
        let admin = request.uri().path().starts_with(ADMIN);
        Box::pin(async move {
            let who = authenticate(&api, &throttle, request.headers(), peer, admin).await;
            let caller = match who {
                Ok(Who::Tenant(caller)) => caller,
                Ok(Who::Operator(operator)) => {
                    // Operators' requests are bounded by the server's
                    // message size alone.
                    let (mut parts, body) = request.into_parts();
                    parts.extensions.insert(operator);
                    return inner.call(http::Request::from_parts(parts, body)).await;
                }
                Err(status) => return Ok(status.into_http()),
            };
            let quotas = api.quotas(&caller.tenant);
            // A component to upload, or to replay an execution against.
            let carries_package = [UPLOAD, REPLAY, CHECK].contains(&request.uri().path());
            let (limit, what) = if carries_package {
                (quotas.max_package_bytes, "max package size")
            } else {
                (quotas.max_payload_bytes, "max payload size")
            };
            let limit = limit.map(|l| l.max(0) as u64);
            let tenant = caller.tenant.name.clone();
            let (mut parts, body) = request.into_parts();
            parts.extensions.insert(*caller);
            let body = match limit {
                Some(limit) => Body::new(Limited::new(body, limit, tenant, what)),
                None => body,
            };
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

/// A request body refused once its gRPC message is announced (or turns
/// out) to be larger than `limit`.
struct Limited {
    inner: Body,
    /// The tenant's quota, bytes.
    quota: u64,
    /// The quota and room for the request's other fields.
    limit: u64,
    /// The first five bytes of the body: the gRPC frame header.
    header: Vec<u8>,
    seen: u64,
    tenant: String,
    what: &'static str,
}

impl Limited {
    fn new(inner: Body, quota: u64, tenant: String, what: &'static str) -> Self {
        Self {
            inner,
            quota,
            limit: quota + ROOM,
            header: Vec::with_capacity(5),
            seen: 0,
            tenant,
            what,
        }
    }

    fn refuse(&self, size: u64) -> Status {
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        Status::resource_exhausted(format!(
            "the request is {:.1} MiB but tenant '{}' may send at most {:.1} MiB ({})",
            mib(size),
            self.tenant,
            mib(self.quota),
            self.what
        ))
    }

    /// Counts `data`; the status to fail with if it is too much.
    fn account(&mut self, data: &Bytes) -> Result<(), Status> {
        if self.header.len() < 5 {
            let take = (5 - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            if self.header.len() == 5 {
                let announced = u64::from((&self.header[1..5]).get_u32());
                if announced > self.limit {
                    return Err(self.refuse(announced));
                }
            }
        }
        self.seen += data.len() as u64;
        if self.seen > self.limit + 5 {
            return Err(self.refuse(self.seen));
        }
        Ok(())
    }
}

impl HttpBody for Limited {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref()
            && let Err(status) = self.account(data)
        {
            return Poll::Ready(Some(Err(status)));
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_without_regard_to_case() {
        for header in ["Bearer k1", "bearer k1", "BEARER k1", "  BeArEr   k1 "] {
            assert_eq!(bearer(header), Some("k1"), "{header:?}");
        }
        for header in ["Basic k1", "Bearer", "Bearer   ", "k1", "Bearerk1"] {
            assert_eq!(bearer(header), None, "{header:?}");
        }
    }

    #[test]
    fn a_body_is_refused_when_its_frame_announces_too_much() {
        // A quota of 100 bytes: the request may be 100 + ROOM bytes.
        let mut body = Limited::new(Body::empty(), 100, "t".into(), "max payload size");
        // The frame header comes in two pieces and announces 0x20007 bytes.
        assert!(body.account(&Bytes::from_static(&[0, 0, 2])).is_ok());
        let refused = body.account(&Bytes::from_static(&[0, 7, 1])).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("tenant 't'"), "{refused:?}");

        let mut small = Limited::new(Body::empty(), 100, "t".into(), "max payload size");
        let header = small.account(&Bytes::from_static(&[0, 0, 0, 0, 50]));
        assert!(header.is_ok());
        let allowed = 100 + ROOM as usize;
        assert!(small.account(&Bytes::from(vec![0; allowed])).is_ok());
        assert!(
            small.account(&Bytes::from(vec![0; 10])).is_err(),
            "more than announced and allowed"
        );
    }
}
