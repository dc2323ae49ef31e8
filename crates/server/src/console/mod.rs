//! The web console, served by `cerebelum serve` on the gRPC port: sign in
//! with an API key, then see and operate the tenant's executions,
//! packages and keys. Server-rendered pages ([`pages`]) with one small
//! script; an execution's page stays live through Server-Sent Events fed
//! by one shared view per execution ([`live`]), which follows it with the
//! feed `watch` uses: one reader of the store and one rendering per
//! execution, whatever the number of viewers.
//!
//! Every page and action goes through [`Api`] for the signed-in key's
//! tenant, exactly as gRPC does: another tenant's execution is "not
//! found". Sign-in makes a session ([`session`]); every POST must carry
//! the session's CSRF token and, when the browser says where it comes
//! from, come from this origin.

pub mod html;
pub mod live;
pub mod pages;
pub mod session;
pub mod timeline;

use crate::api::Api;
use crate::api::streams::Streams;
pub use crate::api::web::{OverTls, Peer, status_of};
use crate::error::Error;
use crate::model::TenantRecord;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use html::{Section, layout};
use maud::html;
use session::{Sessions, Viewer};

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub api: Api,
    pub sessions: Sessions,
    /// Open live views count as watch streams (quotas, revocation).
    pub streams: Streams,
    /// Turns true when the server shuts down: live views end then.
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Failed sign-ins per peer (shared with gRPC's front door).
    pub throttle: crate::api::throttle::Throttle,
    /// Executions' pages followed live, shared by their viewers.
    pub live: live::LiveViews,
    /// `cerebelum dev`: the key a visitor from loopback is signed in with,
    /// without the sign-in page (`None` for `serve`: everyone signs in).
    pub dev_key: Option<String>,
}

/// The console's routes; the largest upload is `max_upload_bytes`.
pub fn router(console: Console, max_upload_bytes: usize) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/executions", get(pages::executions))
        .route("/executions/rows", get(pages::execution_rows))
        .route("/executions/bulk", post(pages::bulk))
        .route("/executions/counts", get(pages::execution_counts))
        .route("/executions/{id}", get(pages::execution))
        .route("/executions/{id}/live", get(pages::live))
        .route("/executions/{id}/approve", post(pages::approve))
        .route("/executions/{id}/reject", post(pages::reject))
        .route("/executions/{id}/cancel", post(pages::cancel))
        .route("/executions/{id}/retry", post(pages::retry))
        .route("/executions/{id}/signal", post(pages::signal))
        .route("/executions/{id}/pause", post(pages::pause))
        .route("/executions/{id}/resume", post(pages::resume))
        .route(
            "/packages",
            get(pages::packages)
                .post(pages::upload)
                .layer(DefaultBodyLimit::max(max_upload_bytes)),
        )
        .route("/packages/{name}", get(pages::package))
        .route("/start", post(pages::start))
        .route("/schedules", get(pages::schedules))
        .route("/schedules/{name}/pause", post(pages::pause_schedule))
        .route("/schedules/{name}/resume", post(pages::resume_schedule))
        .route("/schedules/{name}/trigger", post(pages::trigger_schedule))
        .route("/workers", get(pages::workers))
        .route("/tenant", get(pages::tenant))
        .route("/tenant/keys", post(pages::create_key))
        .route("/tenant/keys/{id}/revoke", post(pages::revoke_key))
        .route("/audit", get(pages::audit))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .layer(axum::middleware::map_response(secure_headers))
        .with_state(console)
}

/// Paths no route serves: gRPC's "unimplemented" to a gRPC client, a
/// page saying so to anyone else.
pub async fn fallback(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("no such method: {}", request.uri().path()))
            .into_http::<axum::body::Body>()
            .into_response();
    }
    let body = html! {
        h1 { "Not found" }
        p { "Nothing is at " code { (request.uri().path()) } ". " a href="/executions" { "Executions" } }
    };
    (
        StatusCode::NOT_FOUND,
        axum::response::Html(layout("Not found", Section::None, None, body).into_string()),
    )
        .into_response()
}

/// Adds `Server-Timing: app;dur=MS` to a response of the HTTP side: the
/// time the server took to make it (what the console benchmark reads, and
/// what a browser's developer tools show).
pub async fn server_timing(request: Request, next: axum::middleware::Next) -> Response {
    let began = std::time::Instant::now();
    let mut response = next.run(request).await;
    let ms = began.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        response.headers_mut().insert("server-timing", value);
    }
    response
}

async fn secure_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A request the console refuses or could not do: a page that says why,
/// or where to go instead.
pub enum Refusal {
    /// Not signed in (or the key was revoked): to the sign-in page.
    SignIn,
    /// A state-changing request without this session's token or from
    /// another site.
    Forged,
    /// The API's error, shown with its status.
    Failed(Error),
}

/// The viewer's own tenant: an operator key has none, and is told to
/// use a tenant's key for what belongs to one (packages, keys, starts).
pub fn own_tenant(viewer: &Viewer) -> Result<&TenantRecord, Refusal> {
    viewer.tenant.as_ref().ok_or_else(|| {
        Refusal::Failed(Error::InvalidInput(
            "an operator key belongs to no tenant: sign in with a tenant's key (`cerebelum \
             admin key create TENANT`) to see its packages and keys or to start executions"
                .into(),
        ))
    })
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Failed(e)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::SignIn => (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/login")],
                "sign in first",
            )
                .into_response(),
            Refusal::Forged => (
                StatusCode::FORBIDDEN,
                axum::response::Html(
                    layout(
                        "Refused",
                        Section::None,
                        None,
                        html! {
                            h1 { "Refused" }
                            p.error {
                                "This request did not come from a page of this console (its \
                                 CSRF token is missing or wrong, or it came from another \
                                 site). Reload the page and try again."
                            }
                        },
                    )
                    .into_string(),
                ),
            )
                .into_response(),
            Refusal::Failed(e) => {
                let (status, message) = status_of(e);
                // "Back" goes back in history with the script (the CSP
                // refuses `javascript:` links), to the list without it.
                let body = html! {
                    h1 { (status.canonical_reason().unwrap_or("Error")) }
                    p.error #error { (message) }
                    p { a href="/executions" data-back { "Back" } " · " a href="/executions" { "Executions" } }
                };
                (
                    status,
                    axum::response::Html(layout("Error", Section::None, None, body).into_string()),
                )
                    .into_response()
            }
        }
    }
}

impl Console {
    /// The viewer of a request's session, or a redirect to sign in.
    pub async fn viewer(&self, headers: &HeaderMap) -> Result<Viewer, Refusal> {
        let Some(token) = session::cookie(headers, session::COOKIE) else {
            return Err(Refusal::SignIn);
        };
        self.sessions
            .viewer(self.api.store(), token)
            .await?
            .ok_or(Refusal::SignIn)
    }

    /// The tenant of execution `id` as `viewer` may see it: the viewer's
    /// own (the API then says "not found" for another tenant's id), or
    /// for an operator the execution's.
    pub async fn tenant_of(&self, viewer: &Viewer, id: &str) -> Result<TenantRecord, Refusal> {
        if let Some(tenant) = &viewer.tenant {
            return Ok(tenant.clone());
        }
        let record = self.api.store().executions().execution(id).await?;
        Ok(self.api.store().catalog().tenant(&record.tenant).await?)
    }

    /// [`Console::acting`] on execution `id`: the tenant to ask the API
    /// for it as (see [`Console::tenant_of`]).
    pub async fn acting_on(
        &self,
        headers: &HeaderMap,
        token: &str,
        id: &str,
    ) -> Result<(TenantRecord, Viewer), Refusal> {
        let viewer = self.acting(headers, token).await?;
        let tenant = self.tenant_of(&viewer, id).await?;
        Ok((tenant, viewer))
    }

    /// The viewer of a state-changing request, refused unless it carries
    /// the session's token (`token`, from the form or the
    /// `x-csrf-token` header) and comes from this origin.
    pub async fn acting(&self, headers: &HeaderMap, token: &str) -> Result<Viewer, Refusal> {
        check_origin(headers)?;
        let viewer = self.viewer(headers).await?;
        let token = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(token);
        if !session::same_token(token, &viewer.csrf) {
            return Err(Refusal::Forged);
        }
        Ok(viewer)
    }
}

/// Refuses a request the browser says came from another site or origin
/// (`Sec-Fetch-Site`, else `Origin` against `Host`).
pub fn check_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        return match site {
            "same-origin" | "none" => Ok(()),
            _ => Err(Refusal::Forged),
        };
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
            if origin_host == host {
                Ok(())
            } else {
                Err(Refusal::Forged)
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn requests_from_another_site_are_refused() {
        assert!(check_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(check_origin(&headers(&[("sec-fetch-site", "same-site")])).is_err());
        assert!(check_origin(&headers(&[("sec-fetch-site", "cross-site")])).is_err());
        assert!(
            check_origin(&headers(&[
                ("origin", "http://127.0.0.1:7433"),
                ("host", "127.0.0.1:7433")
            ]))
            .is_ok()
        );
        assert!(
            check_origin(&headers(&[
                ("origin", "http://evil.example"),
                ("host", "127.0.0.1:7433")
            ]))
            .is_err()
        );
        // curl and other non-browser clients send neither: the token decides.
        assert!(check_origin(&headers(&[])).is_ok());
    }
}
