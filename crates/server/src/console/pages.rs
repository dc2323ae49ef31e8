//! The console's pages and actions. Each handler signs the request in
//! ([`Console::viewer`], or [`Console::acting`] for what changes state),
//! calls [`crate::api::Api`] for the viewer's tenant and renders HTML.
//! Actions answer with a redirect to the page they were made on (so a
//! reload does not repeat them), or with a page that says what was wrong.

use super::html::{Section, badge, csrf_field, duration, json, layout, query_value, time};
use super::session::{self, Viewer};
use super::timeline::{Progress, Timeline};
use super::{Console, OverTls, Peer, Refusal, check_origin, own_tenant, status_of};
use crate::api::audit::Actor;
use crate::api::keys;
use crate::api::service::{CheckTarget, ExecutionView, StartRequest};
use crate::api::throttle;
use crate::error::Error;
use crate::journal::Entry;
use crate::model::{Decision, ExecutionRecord, ListFilter, Origin, PackageCheck, Status};
use crate::store::NewSignal;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use std::convert::Infallible;
use tokio_stream::StreamExt;

type Page = Result<Response, Refusal>;

fn page(title: &str, section: Section, viewer: &Viewer, body: Markup) -> Response {
    Html(layout(title, section, Some(viewer), body).into_string()).into_response()
}

fn back_to(path: String) -> Response {
    Redirect::to(&path).into_response()
}

pub async fn home(State(c): State<Console>, headers: HeaderMap) -> Response {
    match c.viewer(&headers).await {
        Ok(_) => Redirect::to("/executions").into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

fn login_form(error: Option<&str>) -> String {
    let body = html! {
        section.card.narrow {
            h1 { "Sign in" }
            @if let Some(error) = error { p.error #error { (error) } }
            form #login method="post" action="/login" {
                label {
                    "API key "
                    input type="password" name="key" autocomplete="off" placeholder="cbk_…" required autofocus;
                }
                button type="submit" { "Sign in" }
            }
            p.muted {
                "A tenant's key, from " code { "cerebelum admin key create TENANT" } ". "
                "The console sees what the key's tenant sees through the API."
            }
        }
    };
    layout("Sign in", Section::None, None, body).into_string()
}

/// The sign-in page; under `cerebelum dev` a visitor from loopback is
/// signed in at once with the dev server's key.
pub async fn login_page(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    OverTls(tls): OverTls,
) -> Response {
    match (&c.dev_key, peer) {
        (Some(key), Some(peer)) if peer.ip().is_loopback() && loopback_host(&headers) => {
            match c.sessions.sign_in(c.api.store(), key).await {
                Ok(token) => signed_in(&token, tls),
                Err(e) => {
                    let (status, message) = status_of(e);
                    (status, Html(login_form(Some(&message)))).into_response()
                }
            }
        }
        _ => Html(login_form(None)).into_response(),
    }
}

/// Whether the request names this machine as its host (`localhost`,
/// `127.0.0.1`, `[::1]`, any port): a page of another site whose name was
/// made to resolve to 127.0.0.1 (DNS rebinding) names its own host, and is
/// not signed in by `cerebelum dev`.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// The answer to a sign-in: the session's cookie, and on to the list.
fn signed_in(token: &str, tls: bool) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/executions".to_owned()),
            (
                header::SET_COOKIE,
                format!(
                    "{}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
                    session::COOKIE,
                    session::IDLE.as_secs(),
                    if tls { "; Secure" } else { "" }
                ),
            ),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
}

pub async fn login(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    OverTls(tls): OverTls,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(refusal) = check_origin(&headers) {
        return refusal.into_response();
    }
    let ip = peer.map(|p| p.ip());
    if let Err(wait_s) = c.throttle.check(ip) {
        crate::metrics::metrics().auth_failures.inc();
        let message = throttle::refusal(wait_s);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Html(login_form(Some(&message))),
        )
            .into_response();
    }
    let key = form.key.trim();
    match c.sessions.sign_in(c.api.store(), key).await {
        Ok(token) => signed_in(&token, tls),
        Err(e) => {
            if matches!(e, Error::Unauthenticated(_)) {
                c.throttle
                    .failed(ip, "console sign-in with an unknown or revoked key");
            }
            let (status, message) = status_of(e);
            (status, Html(login_form(Some(&message)))).into_response()
        }
    }
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Page {
    c.acting(&headers, &form.csrf).await?;
    if let Some(token) = session::cookie(&headers, session::COOKIE) {
        c.sessions.sign_out(token);
    }
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/login".to_owned()),
            (
                header::SET_COOKIE,
                format!(
                    "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
                    session::COOKIE
                ),
            ),
        ],
    )
        .into_response())
}

// ---------------------------------------------------------------- executions

/// The filters of the executions list.
#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    /// The start of a package's name.
    #[serde(default)]
    package: String,
    /// The start of a workflow's name.
    #[serde(default)]
    workflow: String,
    /// The start of an execution id.
    #[serde(default)]
    q: String,
    /// A field of the input and its value: `input.name = web-1`.
    #[serde(default)]
    input: String,
    /// Created at or after (a time, UTC unless it says).
    #[serde(default)]
    from: String,
    /// Created before.
    #[serde(default)]
    to: String,
    /// One tenant (an operator's list; a tenant sees only its own).
    #[serde(default)]
    tenant: String,
    /// The page token of the page before (older executions follow it).
    #[serde(default)]
    after: String,
    /// The page token of the page after (newer executions precede it).
    #[serde(default)]
    before: String,
    /// What a bulk action did, to say above the list.
    #[serde(default)]
    done: String,
}

/// `input.server.name = web-1` (or without `input.`): the field's path
/// and the value, or an error that shows how to write it.
fn input_field(text: &str) -> Result<(Vec<String>, String), Error> {
    let Some((path, value)) = text.split_once('=') else {
        return Err(Error::InvalidInput(format!(
            "the input search {:?} has no '=': write a field and a value, e.g.              `input.name = web-1`",
            crate::util::shorten(text, 80)
        )));
    };
    let path = path.trim();
    let path = path.strip_prefix("input.").unwrap_or(path);
    let value = value.trim().trim_matches('"');
    Ok((
        path.split('.').map(str::to_owned).collect(),
        value.to_owned(),
    ))
}

/// A time typed in the list's range, or an error that says how to write it.
fn typed_time(text: &str, what: &str) -> Result<Option<i64>, Error> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    crate::util::parse_time(text).map(Some).ok_or_else(|| {
        Error::InvalidInput(format!(
            "{what} {:?} is not a time: write it as 2026-11-26T10:00 (UTC) or 2026-11-26",
            crate::util::shorten(text, 80)
        ))
    })
}

impl ListQuery {
    fn filter(&self) -> Result<ListFilter, Error> {
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        Ok(ListFilter {
            status: some(&self.status)
                .map(|s| crate::api::Api::parse_status(&s))
                .transpose()?,
            package_prefix: some(&self.package),
            workflow_prefix: some(&self.workflow),
            id_prefix: some(&self.q).map(|q| q.to_ascii_lowercase()),
            input_field: some(&self.input).map(|i| input_field(&i)).transpose()?,
            created_from_ms: typed_time(&self.from, "the start of the range")?,
            created_to_ms: typed_time(&self.to, "the end of the range")?,
            tenant: some(&self.tenant),
            limit: 50,
            ..ListFilter::default()
        })
    }

    /// The query string of these filters, paging left out; with `status`
    /// instead of this one's when given.
    fn filters_with(&self, status: Option<&str>) -> String {
        [
            ("status", status.unwrap_or(&self.status)),
            ("package", &self.package),
            ("workflow", &self.workflow),
            ("q", &self.q),
            ("input", &self.input),
            ("from", &self.from),
            ("to", &self.to),
            ("tenant", &self.tenant),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", query_value(v)))
        .collect::<Vec<_>>()
        .join("&")
    }

    fn filters(&self) -> String {
        self.filters_with(None)
    }
}

/// A row of the executions list; an operator's has the tenant too, an
/// open execution that reported progress its latest report.
fn execution_row(r: &ExecutionRecord, operator: bool, progress: Option<&Progress>) -> Markup {
    let note = match (&r.error, r.wake_at_ms) {
        (Some(error), _) => format!("{}: {}", error.kind, error.message),
        (None, Some(wake)) if !r.status.is_terminal() => {
            format!("wakes at {}", super::html::utc(wake))
        }
        _ => String::new(),
    };
    html! {
        tr data-id=(r.id) {
            td.pick {
                input type="checkbox" name="id" value=(r.id) form="bulk"
                    aria-label={ "select " (r.id) };
            }
            td { a.id href={ "/executions/" (query_value(&r.id)) } { (r.id) } }
            @if operator { td { (r.tenant) } }
            td { (badge(r.status.as_str())) }
            td { (r.package_name) " " span.muted { "v" (r.package_version) } }
            td { (r.workflow) }
            td { (time(r.created_at_ms)) }
            td { (time(r.updated_at_ms)) }
            td.note {
                @if let Some(p) = progress {
                    span.progress {
                        progress max="100" value=(p.percent) { (p.percent) "%" }
                        " " (p.percent) "% " (p.message)
                    }
                    " "
                }
                (note)
            }
        }
    }
}

async fn rows(
    c: &Console,
    viewer: &Viewer,
    query: &ListQuery,
) -> Result<(Markup, crate::api::service::Page), Refusal> {
    let page = c
        .api
        .list_page(
            viewer.tenant.as_ref(),
            query.filter()?,
            Some(&query.after),
            Some(&query.before),
        )
        .await?;
    let operator = viewer.tenant.is_none();
    let mut rows = Vec::with_capacity(page.executions.len());
    for r in &page.executions {
        // The latest progress of what still runs (one indexed read each).
        let progress = if r.status.is_terminal() {
            None
        } else {
            c.api
                .store()
                .executions()
                .latest_progress(&r.id)
                .await?
                .and_then(|e| match e.event {
                    crate::journal::Event::Call {
                        call: crate::journal::Call::ReportProgress(p),
                        ..
                    } => Some(Progress {
                        percent: p.args.percent,
                        message: p.args.message,
                    }),
                    _ => None,
                })
        };
        rows.push(execution_row(r, operator, progress.as_ref()));
    }
    let rows = html! {
        @for row in rows { (row) }
        @if page.executions.is_empty() {
            tr { td colspan="9" class="muted" { "No executions match." } }
        }
    };
    Ok((rows, page))
}

pub async fn executions(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Page {
    let viewer = c.viewer(&headers).await?;
    let (rows, listed) = rows(&c, &viewer, &query).await?;
    let filters = query.filters();
    let with = |path: &str| match filters.as_str() {
        "" => path.to_owned(),
        filters => format!("{path}?{filters}"),
    };
    let paged = |key: &str, token: &str| {
        format!(
            "/executions?{filters}{}{key}={}",
            if filters.is_empty() { "" } else { "&" },
            query_value(token)
        )
    };
    let operator = viewer.tenant.is_none();
    // Only the first page refreshes itself: later pages hold still.
    let first = query.after.is_empty() && query.before.is_empty();
    let refresh = first.then(|| with("/executions/rows"));
    let back = format!("/executions?{filters}");
    let body = html! {
        h1 { "Executions" }
        form.filters method="get" action="/executions" {
            input name="q" placeholder="id starts with…" value=(query.q);
            select name="status" {
                option value="" { "any status" }
                @for s in Status::ALL { option selected[query.status == s.as_str()] { (s.as_str()) } }
            }
            input name="workflow" placeholder="workflow starts with…" value=(query.workflow);
            input name="package" placeholder="package starts with…" value=(query.package);
            input name="input" placeholder="input.name = web-1" value=(query.input);
            label.range { "from " input type="datetime-local" name="from" value=(query.from); }
            label.range { "to " input type="datetime-local" name="to" value=(query.to); " UTC" }
            @if operator { input name="tenant" placeholder="tenant" value=(query.tenant); }
            button type="submit" { "Filter" }
            " " a href="/executions" { "clear" }
        }
        // Counted apart (a count reads every row the filters find): the
        // script fills it in after the page.
        nav.counts #counts data-src=(with("/executions/counts")) { span.muted { "counting…" } }
        @if !query.done.is_empty() { p.notice #done { (query.done) } }
        form #bulk method="post" action="/executions/bulk" {
            (csrf_field(&viewer))
            input type="hidden" name="back" value=(back);
            span.muted { "Selected: " }
            button #bulk-cancel .danger type="submit" name="action" value="cancel"
                data-confirm="Cancel the selected executions?" { "Cancel" }
            " "
            button #bulk-retry type="submit" name="action" value="retry"
                data-confirm="Retry the selected executions? Each keeps what it completed." { "Retry" }
        }
        table.executions {
            thead { tr {
                th.pick { input #pick-all type="checkbox" aria-label="select all"; }
                th { "id" } @if operator { th { "tenant" } }
                th { "status" } th { "package" } th { "workflow" } th { "started" }
                th { "updated" } th {}
            } }
            tbody #rows data-refresh=[refresh] { (rows) }
        }
        p.paging {
            @if !first { a #first href=(with("/executions")) { "⇤ Newest" } " " }
            @if let Some(prev) = &listed.prev { a #prev href=(paged("before", prev)) { "← Newer" } " " }
            @if let Some(next) = &listed.next { a #next href=(paged("after", next)) { "Older →" } }
        }
    };
    Ok(page("Executions", Section::Executions, &viewer, body))
}

/// How many executions the list's filters find in each status, each a
/// link to the list of that status (fetched by the list page's script).
pub async fn execution_counts(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Page {
    let viewer = c.viewer(&headers).await?;
    let counts = c
        .api
        .count_by_status(viewer.tenant.as_ref(), query.filter()?)
        .await?;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let count_of = |s: Status| {
        counts
            .iter()
            .find(|(status, _)| *status == s)
            .map_or(0, |(_, n)| *n)
    };
    let nav = html! {
        a href=(format!("/executions?{}", query.filters_with(Some(""))))
            .current[query.status.is_empty()] data-status="" {
            "all " span.n { (total) }
        }
        @for s in Status::ALL {
            " · "
            a href=(format!("/executions?{}", query.filters_with(Some(s.as_str()))))
                .current[query.status == s.as_str()] data-status=(s.as_str()) {
                (s.as_str()) " " span.n { (count_of(s)) }
            }
        }
    };
    Ok(Html(nav.into_string()).into_response())
}

/// The most executions one bulk action takes.
const MAX_BULK: usize = 200;

/// Cancels or retries the executions selected in the list, each as its
/// own button would (the same checks, each audited); back to the list,
/// which says what was done and what was refused.
pub async fn bulk(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    body: axum::body::Bytes,
) -> Page {
    let (mut csrf, mut action, mut back, mut ids) =
        (String::new(), String::new(), String::new(), Vec::new());
    for (key, value) in form_urlencoded::parse(&body) {
        match key.as_ref() {
            "csrf" => csrf = value.into_owned(),
            "action" => action = value.into_owned(),
            "back" => back = value.into_owned(),
            "id" => ids.push(value.into_owned()),
            _ => {}
        }
    }
    let viewer = c.acting(&headers, &csrf).await?;
    if ids.is_empty() {
        return Err(Error::InvalidInput(
            "no execution was selected: tick the boxes of the ones to act on".into(),
        )
        .into());
    }
    if ids.len() > MAX_BULK {
        return Err(Error::InvalidInput(format!(
            "{} executions were selected; one action takes at most {MAX_BULK}",
            ids.len()
        ))
        .into());
    }
    let (done, verb) = match action.as_str() {
        "cancel" => ("cancelled", "cancelling"),
        "retry" => ("retried", "retrying"),
        other => {
            return Err(Error::InvalidInput(format!(
                "unknown action {:?}: the list cancels or retries",
                crate::util::shorten(other, 40)
            ))
            .into());
        }
    };
    let actor = Actor::key(&viewer.key_id, peer);
    let (mut acted, mut refused) = (0, Vec::new());
    for id in &ids {
        let outcome = async {
            let tenant = c.tenant_of(&viewer, id).await?;
            match action.as_str() {
                "cancel" => c.api.cancel(&tenant, &actor, id).await.map(|_| ()),
                _ => c.api.retry(&tenant, &actor, id).await.map(|_| ()),
            }
            .map_err(Refusal::from)
        };
        match outcome.await {
            Ok(()) => acted += 1,
            Err(Refusal::Failed(e)) => refused.push(format!("{id}: {e}")),
            Err(refusal) => return Err(refusal),
        }
    }
    let mut said = format!("{done} {acted} of {}", ids.len());
    if !refused.is_empty() {
        said.push_str(&format!("; {verb} refused for {}", refused.join("; ")));
    }
    // Back to the list the person was on (only this console's lists).
    let back = if back.starts_with("/executions?") || back == "/executions" {
        back
    } else {
        "/executions?".to_owned()
    };
    let sep = if back.ends_with('?') { "" } else { "&" };
    Ok(back_to(format!(
        "{back}{sep}done={}",
        query_value(&crate::util::shorten(&said, 1_000))
    )))
}

/// The rows of the executions list alone, for its live refresh.
pub async fn execution_rows(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Page {
    let viewer = c.viewer(&headers).await?;
    let (rows, _) = rows(&c, &viewer, &query).await?;
    Ok(Html(rows.into_string()).into_response())
}

/// What changes while an execution runs, besides its timeline: its
/// summary (with `entries`, the journal's length, and the last
/// `progress`) and the actions `viewer` may take on it.
pub fn live_parts(
    viewer: &Viewer,
    view: &ExecutionView,
    entries: usize,
    progress: Option<&Progress>,
    now_ms: i64,
) -> (Markup, Markup) {
    let r = &view.record;
    let open = !r.status.is_terminal();
    let link = |id: &str| html! { a href={ "/executions/" (query_value(id)) } { (id) } };
    let summary = html! {
        div.summary {
            h1 { (r.workflow) " " (badge(r.status.as_str())) }
            dl {
                dt { "id" } dd { code #execution-id { (r.id) } }
                dt { "package" }
                dd {
                    // An operator has no package pages: the tenant's name instead.
                    @match viewer.tenant {
                        Some(_) => { a href={ "/packages/" (query_value(&r.package_name)) } { (r.package_name) } }
                        None => { (r.package_name) " " span.muted { "of tenant " (r.tenant) } }
                    }
                    " v" (r.package_version) " "
                    span.muted { (r.package_sha256[..r.package_sha256.len().min(12)]) }
                }
                dt { "started" } dd { (time(r.created_at_ms)) }
                dt { "updated" } dd { (time(r.updated_at_ms)) }
                dt { "journal" } dd { (entries) " entries" }
                @if let Some(queue) = &r.worker_queue { dt { "worker queue" } dd { code { (queue) } } }
                @if let (Some(wake), true) = (r.wake_at_ms, open) {
                    dt { "wakes" }
                    dd { (time(wake)) " · " span.countdown data-due=(wake) { "in " (duration(wake - now_ms)) } }
                }
                @if r.cancel_requested && open {
                    dt { "cancel" } dd { "requested; it ends at its next wait" }
                }
                @for wait in &view.waiting_on { dt { "waiting for" } dd { (wait) } }
                @if let Some(state) = &view.state {
                    dt { "state" }
                    dd { code.state { (crate::util::shorten(&state.to_string(), 500)) } }
                }
                @if let Some(parent) = &r.parent_id { dt { "parent" } dd { (link(parent)) } }
                @if let Some(from) = &r.continued_from { dt { "continues" } dd { (link(from)) } }
                @match r.origin() {
                    Some(Origin::Schedule { name, due_ms, by_hand }) => {
                        dt { "origin" }
                        dd #origin {
                            "schedule " a href={ "/schedules#schedule-" (query_value(name)) } { (name) }
                            @if by_hand { ", Trigger now at " } @else { ", due " }
                            (time(due_ms))
                        }
                    }
                    Some(Origin::Trigger { name, delivery }) => {
                        dt { "origin" }
                        dd #origin {
                            "HTTP trigger " a href={ "/schedules#trigger-" (query_value(name)) } { (name) }
                            ", delivery " code { (delivery) }
                        }
                    }
                    Some(Origin::Key(key)) => { dt { "idempotency key" } dd #origin { code { (key) } } }
                    None => {}
                }
                @if r.paused && open {
                    dt { "paused" } dd { "by an operator; it starts no new step until resumed" }
                }
                @if r.engine_failures > 0 && open {
                    dt { "engine" }
                    dd.error {
                        (r.engine_failures) " engine error(s) in a row, retried automatically: "
                        (r.engine_error.as_deref().unwrap_or(""))
                    }
                }
                @if let Some(note) = &view.note { dt { "note" } dd { (note) } }
            }
            @if let Some(p) = progress {
                div.progress {
                    progress max="100" value=(p.percent) { (p.percent) "%" }
                    " " (p.percent) "% " (p.message)
                }
            }
            @if let Some(result) = &r.result { h2 { "Result" } div #result { (json(result)) } }
            @if let Some(error) = &r.error {
                h2 { "Error" }
                p.error #failure { (error.kind.to_string()) ": " (error.message) }
                @match &error.details {
                    // A traceback (a Python step's), as it was printed.
                    Some(serde_json::Value::String(text)) => pre.traceback #details { (text) }
                    Some(details) => (json(details)),
                    None => {}
                }
            }
        }
    };
    let action = |what: &str| format!("/executions/{}/{what}", query_value(&r.id));
    let actions = html! {
        @for a in &view.pending_approvals {
            section.card.approval data-key=(a.key) {
                h2 { "Approval " code { (a.key) } }
                p { (a.request.get("message").and_then(|m| m.as_str()).unwrap_or("")) }
                form.approve method="post" action=(action("approve"))
                    data-confirm={ "Approve '" (a.key) "' with this payload?" } {
                    (csrf_field(viewer))
                    input type="hidden" name="key" value=(a.key);
                    label { "Payload (JSON)" textarea name="payload" rows="4" data-json { "{}" } }
                    p.json-error.error {}
                    button.primary type="submit" { "Approve" }
                }
                form.reject method="post" action=(action("reject"))
                    data-confirm={ "Reject '" (a.key) "'?" } {
                    (csrf_field(viewer))
                    input type="hidden" name="key" value=(a.key);
                    label { "Reason " input name="reason" placeholder="why not"; }
                    button.danger type="submit" { "Reject" }
                }
            }
        }
        @if open {
            section.card #signal-card {
                h2 { "Signal" }
                form.signal method="post" action=(action("signal"))
                    data-confirm="Send this signal to the execution?" {
                    (csrf_field(viewer))
                    label { "Name " input #signal-name name="name" required placeholder="the name the workflow waits for"; }
                    label { "Payload (JSON)" textarea #signal-payload name="payload" rows="3" data-json { "{}" } }
                    p.json-error.error {}
                    button #send-signal .primary type="submit" { "Send signal" }
                }
            }
            @if r.paused {
                form.inline method="post" action=(action("resume"))
                    data-confirm="Resume this execution? What came due meanwhile runs at once." {
                    (csrf_field(viewer))
                    button #resume .primary type="submit" { "Resume" }
                }
            } @else {
                form.inline method="post" action=(action("pause"))
                    data-confirm="Pause this execution? It starts no new step until resumed." {
                    (csrf_field(viewer))
                    button #pause type="submit" { "Pause" }
                }
            }
        }
        @if open && !r.cancel_requested {
            form.inline method="post" action=(action("cancel"))
                data-confirm="Cancel this execution? Its code gets a cancellation error at its next wait." {
                (csrf_field(viewer))
                button #cancel .danger type="submit" { "Cancel" }
            }
        }
        @if matches!(r.status, Status::Failed | Status::Cancelled) {
            form.inline method="post" action=(action("retry"))
                data-confirm="Retry this execution? It keeps what it completed." {
                (csrf_field(viewer))
                button #retry .primary type="submit" { "Retry" }
            }
        }
    };
    (summary, actions)
}

/// Rows of an execution's timeline shown unless all are asked for
/// (`?all=1`): the latest ones.
pub const MAX_TIMELINE_ROWS: usize = 500;

/// How much of an execution's page to show.
#[derive(Deserialize)]
pub struct ShowQuery {
    /// Any value: every row of the timeline.
    #[serde(default)]
    all: Option<String>,
}

pub async fn execution(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(show): Query<ShowQuery>,
) -> Page {
    let viewer = c.viewer(&headers).await?;
    let tenant = c.tenant_of(&viewer, &id).await?;
    let view = c.api.execution(&tenant, &id).await?;
    let entries = c.api.journal(&tenant, &id, 0).await?;
    Ok(page(
        &view.record.workflow.clone(),
        Section::Executions,
        &viewer,
        execution_body(&c, &viewer, &view, &entries, show.all.is_some()),
    ))
}

/// The body of an execution's page.
pub fn execution_body(
    c: &Console,
    viewer: &Viewer,
    view: &ExecutionView,
    entries: &[Entry],
    all: bool,
) -> Markup {
    let timeline = Timeline::build(entries);
    let now_ms = c.api.now_ms();
    let (summary, actions) = live_parts(
        viewer,
        view,
        timeline.entries,
        timeline.progress.as_ref(),
        now_ms,
    );
    let live = (!view.record.status.is_terminal()).then(|| {
        format!(
            "/executions/{}/live?seq={}{}",
            query_value(&view.record.id),
            timeline.last_seq,
            if all { "&all=1" } else { "" }
        )
    });
    html! {
        div #execution data-live=[live] {
            div #summary { (summary) }
            div #actions { (actions) }
            h2 { "Input" } (json(&view.record.input))
            h2 { "Timeline" }
            div #timeline { (timeline.html(now_ms, (!all).then_some(MAX_TIMELINE_ROWS))) }
        }
    }
}

/// Where the execution's page is: the last journal seq it shows.
#[derive(Deserialize)]
pub struct LiveQuery {
    #[serde(default)]
    seq: i64,
    /// Every row of the timeline (see [`ShowQuery`]).
    #[serde(default)]
    all: Option<String>,
}

/// Server-Sent Events of an execution's page, fed by the execution's
/// shared live view ([`super::live`]): when the page lacks entries (those
/// after its `seq`), `summary`, `actions` and the whole `timeline` once;
/// then after every burst of entries `summary`, `actions`, the `rows` that
/// changed or are new, and the `more` line of a cut timeline; `finished`
/// when it ends. Nothing is sent while nothing happens, so a form being
/// filled in stays as it is.
pub async fn live(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<LiveQuery>,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>, Refusal> {
    let viewer = c.viewer(&headers).await?;
    let tenant = c.tenant_of(&viewer, &id).await?;
    let guard = c.streams.open(
        &tenant.name,
        c.api.quotas(&tenant).max_streams,
        &viewer.key_hash,
    )?;
    // The execution must be the tenant's before anything is shared.
    c.api.owned(&tenant, &id).await?;
    let feed = c.live.follow(&c.api, &tenant, &id);
    let max_rows = query.all.is_none().then_some(MAX_TIMELINE_ROWS);
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(8);
    tokio::spawn(super::live::serve_viewer(
        c.api.clone(),
        viewer,
        feed,
        guard,
        c.stopping.clone(),
        query.seq,
        max_rows,
        tx,
    ));
    let events = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
pub struct ApproveForm {
    #[serde(default)]
    csrf: String,
    key: String,
    #[serde(default)]
    payload: String,
}

pub async fn approve(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Form(form): Form<ApproveForm>,
) -> Page {
    let (tenant, viewer) = c.acting_on(&headers, &form.csrf, &id).await?;
    let actor = Actor::key(&viewer.key_id, peer);
    let payload = json_payload(&form.payload, "the approval payload")?;
    c.api
        .decide(&tenant, &actor, &id, &form.key, Decision::Approve(payload))
        .await?;
    Ok(back_to(format!("/executions/{id}")))
}

#[derive(Deserialize)]
pub struct RejectForm {
    #[serde(default)]
    csrf: String,
    key: String,
    #[serde(default)]
    reason: String,
}

pub async fn reject(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Form(form): Form<RejectForm>,
) -> Page {
    let (tenant, viewer) = c.acting_on(&headers, &form.csrf, &id).await?;
    let actor = Actor::key(&viewer.key_id, peer);
    c.api
        .decide(
            &tenant,
            &actor,
            &id,
            &form.key,
            Decision::Reject(form.reason),
        )
        .await?;
    Ok(back_to(format!("/executions/{id}")))
}

pub async fn cancel(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Form(form): Form<TokenForm>,
) -> Page {
    let (tenant, viewer) = c.acting_on(&headers, &form.csrf, &id).await?;
    let actor = Actor::key(&viewer.key_id, peer);
    c.api.cancel(&tenant, &actor, &id).await?;
    Ok(back_to(format!("/executions/{id}")))
}

pub async fn retry(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Form(form): Form<TokenForm>,
) -> Page {
    let (tenant, viewer) = c.acting_on(&headers, &form.csrf, &id).await?;
    let actor = Actor::key(&viewer.key_id, peer);
    c.api.retry(&tenant, &actor, &id).await?;
    Ok(back_to(format!("/executions/{id}")))
}

/// A JSON payload typed in a form (`what` names it in the error); empty:
/// `null`.
fn json_payload(text: &str, what: &str) -> Result<serde_json::Value, Error> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_str(text).map_err(|e| {
        Error::InvalidInput(format!(
            "{what} is not valid JSON ({})",
            crate::util::json_error(&e)
        ))
    })
}

#[derive(Deserialize)]
pub struct SignalForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    payload: String,
}

/// Sends a signal, as `cerebelum signal` does: stored at once, taken by
/// the workflow's next wait for that name.
pub async fn signal(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Form(form): Form<SignalForm>,
) -> Page {
    let (tenant, viewer) = c.acting_on(&headers, &form.csrf, &id).await?;
    let actor = Actor::key(&viewer.key_id, peer);
    let signal = NewSignal {
        name: form.name.trim().to_owned(),
        payload: json_payload(&form.payload, "the signal's payload")?,
        signal_id: None,
    };
    c.api.signal(&tenant, &actor, &id, signal).await?;
    Ok(back_to(format!("/executions/{id}")))
}

pub async fn pause(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Form(form): Form<TokenForm>,
) -> Page {
    set_paused(c, headers, peer, id, form, true).await
}

pub async fn resume(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Form(form): Form<TokenForm>,
) -> Page {
    set_paused(c, headers, peer, id, form, false).await
}

/// Pauses or resumes, as `cerebelum pause` / `resume` do.
async fn set_paused(
    c: Console,
    headers: HeaderMap,
    peer: Option<std::net::SocketAddr>,
    id: String,
    form: TokenForm,
    paused: bool,
) -> Page {
    let (tenant, viewer) = c.acting_on(&headers, &form.csrf, &id).await?;
    let actor = Actor::key(&viewer.key_id, peer);
    c.api.set_paused(&tenant, &actor, &id, paused).await?;
    Ok(back_to(format!("/executions/{id}")))
}

// ----------------------------------------------------- schedules, workers

/// The tenant's schedules (with Pause/Resume and Trigger now, as
/// `cerebelum schedule pause|resume|trigger-now`) and HTTP triggers.
pub async fn schedules(State(c): State<Console>, headers: HeaderMap) -> Page {
    let viewer = c.viewer(&headers).await?;
    let tenant = own_tenant(&viewer)?;
    let schedules = c.api.schedules(tenant).await?;
    let mut triggers = Vec::new();
    for t in c.api.triggers(tenant).await? {
        let delivered = c.api.deliveries(tenant, &t.name, 5).await?;
        triggers.push((t, delivered));
    }
    let action = |name: &str, what: &str| format!("/schedules/{}/{what}", query_value(name));
    let version = |v: Option<i64>| v.map_or_else(|| "newest".to_owned(), |v| format!("v{v}"));
    let body = html! {
        h1 { "Schedules" }
        p.muted {
            "A workflow started at the due times of a cron expression. Create them with "
            code { "cerebelum schedule create" } "."
        }
        @if schedules.is_empty() {
            p #no-schedules { "No schedules." }
        } @else {
            table #schedules {
                thead { tr {
                    th { "name" } th { "when" } th { "starts" } th { "next due" }
                    th { "last" } th { "fired" } th {}
                } }
                tbody {
                    @for s in &schedules {
                        tr id={ "schedule-" (s.name) } data-schedule=(s.name) {
                            td { code { (s.name) } }
                            td { code { (s.cron) } " " span.muted { (s.timezone) } }
                            td { (s.package) "/" (s.workflow) " " span.muted { (version(s.version)) } }
                            td {
                                @if s.paused { span.badge.status-cancelled { "paused" } }
                                @else { (time(s.next_due_ms)) }
                            }
                            td {
                                @if let Some(id) = &s.last_execution {
                                    a.id href={ "/executions/" (query_value(id)) } { (id) }
                                }
                                @if let Some(error) = &s.last_error { p.error { (error) } }
                            }
                            td { (s.fired) }
                            td {
                                @if s.paused {
                                    form.inline method="post" action=(action(&s.name, "resume"))
                                        data-confirm={ "Resume schedule '" (s.name) "'? It fires at its next due time." } {
                                        (csrf_field(&viewer))
                                        button.resume.primary type="submit" { "Resume" }
                                    }
                                } @else {
                                    form.inline method="post" action=(action(&s.name, "pause"))
                                        data-confirm={ "Pause schedule '" (s.name) "'? Its due times pass without starting anything." } {
                                        (csrf_field(&viewer))
                                        button.pause type="submit" { "Pause" }
                                    }
                                }
                                form.inline method="post" action=(action(&s.name, "trigger"))
                                    data-confirm={ "Start '" (s.workflow) "' of schedule '" (s.name) "' now?" } {
                                    (csrf_field(&viewer))
                                    button.trigger type="submit" { "Trigger now" }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "HTTP triggers" }
        p.muted {
            code { "POST /t/" (tenant.name) "/NAME" } " starts the trigger's workflow with the request's \
             JSON body. Create them with " code { "cerebelum trigger create" } "."
        }
        @if triggers.is_empty() {
            p #no-triggers { "No triggers." }
        } @else {
            table #triggers {
                thead { tr {
                    th { "name" } th { "starts" } th { "checks" } th { "created" }
                    th { "last deliveries" }
                } }
                tbody {
                    @for (t, delivered) in &triggers {
                        tr id={ "trigger-" (t.name) } data-trigger=(t.name) {
                            td { code { "/t/" (t.tenant) "/" (t.name) } }
                            td { (t.package) "/" (t.workflow) " " span.muted { (version(t.version)) } }
                            td {
                                @match (&t.hmac_secret, &t.token_hash) {
                                    (Some(_), _) => { "HMAC signature" }
                                    (None, Some(_)) => { "bearer token" }
                                    (None, None) => { "none" }
                                }
                            }
                            td { (time(t.created_at_ms)) }
                            td.deliveries {
                                @if delivered.is_empty() { span.muted { "none yet" } }
                                @for e in delivered {
                                    div {
                                        a.id href={ "/executions/" (query_value(&e.id)) } { (e.id) }
                                        " " (badge(e.status.as_str())) " " (time(e.created_at_ms))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Schedules", Section::Schedules, &viewer, body))
}

pub async fn pause_schedule(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(name): Path<String>,
    Form(form): Form<TokenForm>,
) -> Page {
    set_schedule_paused(c, headers, peer, name, form, true).await
}

pub async fn resume_schedule(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(name): Path<String>,
    Form(form): Form<TokenForm>,
) -> Page {
    set_schedule_paused(c, headers, peer, name, form, false).await
}

/// Pauses or resumes a schedule, as `cerebelum schedule pause|resume`.
async fn set_schedule_paused(
    c: Console,
    headers: HeaderMap,
    peer: Option<std::net::SocketAddr>,
    name: String,
    form: TokenForm,
    paused: bool,
) -> Page {
    let viewer = c.acting(&headers, &form.csrf).await?;
    let actor = Actor::key(&viewer.key_id, peer);
    c.api
        .pause_schedule(own_tenant(&viewer)?, &actor, &name, paused)
        .await?;
    Ok(back_to("/schedules".into()))
}

/// Starts the schedule's workflow now; shows the execution it started.
pub async fn trigger_schedule(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(name): Path<String>,
    Form(form): Form<TokenForm>,
) -> Page {
    let viewer = c.acting(&headers, &form.csrf).await?;
    let actor = Actor::key(&viewer.key_id, peer);
    let (execution, _) = c
        .api
        .trigger_schedule(own_tenant(&viewer)?, &actor, &name)
        .await?;
    Ok(back_to(format!("/executions/{}", execution.id)))
}

/// The tenant's worker queues: the workers polling each (seen in the last
/// minute) and the tasks waiting, with a warning where tasks wait and no
/// worker polls.
pub async fn workers(State(c): State<Console>, headers: HeaderMap) -> Page {
    let viewer = c.viewer(&headers).await?;
    let tenant = own_tenant(&viewer)?;
    let workers = c.api.list_workers(tenant).await?;
    let queued = c.api.store().tasks().queued_by_queue(&tenant.name).await?;
    let mut queues: std::collections::BTreeMap<&str, (Vec<&crate::model::WorkerRecord>, i64)> =
        Default::default();
    for w in &workers {
        queues.entry(&w.queue).or_default().0.push(w);
    }
    for (queue, waiting) in &queued {
        queues.entry(queue).or_default().1 = *waiting;
    }
    let now = c.api.now_ms();
    let body = html! {
        h1 { "Workers" }
        p.muted {
            "External workers (" code { "python -m cerebelum worker FILE --queue QUEUE" } ") seen \
             polling in the last minute, and the step attempts waiting on each queue."
        }
        @if queues.is_empty() {
            p #no-workers { "No worker has polled and no task waits on a worker queue." }
        }
        @for (queue, (polling, waiting)) in &queues {
            section.card.queue data-queue=(queue) {
                h2 { "Queue " code { (queue) } " " span.muted { (waiting) " task(s) waiting" } }
                @if polling.is_empty() && *waiting > 0 {
                    p.error.unserved {
                        "No worker polls '" (queue) "': " (waiting) " task(s) wait, and their \
                         executions with them. Start one: "
                        code { "python -m cerebelum worker FILE --queue " (queue) }
                    }
                }
                @if !polling.is_empty() {
                    table {
                        thead { tr { th { "worker" } th { "host" } th { "tasks" } th { "last seen" } } }
                        tbody {
                            @for w in polling {
                                tr {
                                    td { code { (w.worker_id) } }
                                    td { (w.host) }
                                    td { (w.tasks_in_flight) " / " (w.max_tasks) }
                                    td { (duration(now - w.last_seen_at_ms)) " ago" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Workers", Section::Workers, &viewer, body))
}

// ------------------------------------------------------------------ packages

pub async fn packages(State(c): State<Console>, headers: HeaderMap) -> Page {
    let viewer = c.viewer(&headers).await?;
    let packages = c.api.list_packages(own_tenant(&viewer)?).await?;
    let body = html! {
        h1 { "Packages" }
        section.card {
            h2 { "Upload" }
            form #upload data-csrf=(viewer.csrf) {
                label { "Component (.wasm) " input type="file" name="file" accept=".wasm" required; }
                label { "Name " input name="name" placeholder="the file name without .wasm"; }
                button.primary type="submit" { "Upload" }
                p.upload-status #upload-status {}
            }
        }
        table {
            thead { tr {
                th { "name" } th { "version" } th { "sha256" } th { "workflows" } th { "steps" }
                th { "uploaded" }
            } }
            tbody {
                @for p in &packages {
                    tr {
                        td { a href={ "/packages/" (query_value(&p.name)) } { (p.name) } }
                        td { "v" (p.version) }
                        td { code { (p.sha256[..p.sha256.len().min(16)]) } }
                        td {
                            @for (i, w) in p.info.workflows.iter().enumerate() {
                                @if i > 0 { ", " } (w.name)
                            }
                        }
                        td { (p.info.steps.len()) " steps" }
                        td { (time(p.created_at_ms)) }
                    }
                }
                @if packages.is_empty() {
                    tr { td colspan="6" class="muted" { "No packages yet: upload one." } }
                }
            }
        }
    };
    Ok(page("Packages", Section::Packages, &viewer, body))
}

#[derive(Deserialize)]
pub struct UploadQuery {
    name: String,
}

/// `POST /packages?name=NAME` with the component as the body and the
/// CSRF token in `x-csrf-token`: the stored package as JSON.
pub async fn upload(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(query): Query<UploadQuery>,
    body: axum::body::Bytes,
) -> Response {
    let viewer = match c.acting(&headers, "").await {
        Ok(viewer) => viewer,
        Err(Refusal::SignIn) => {
            return (StatusCode::UNAUTHORIZED, "sign in again: the session ended").into_response();
        }
        Err(refusal) => return refusal.into_response(),
    };
    let tenant = match own_tenant(&viewer) {
        Ok(tenant) => tenant,
        Err(refusal) => return refusal.into_response(),
    };
    match c.api.upload(tenant, &query.name, body.to_vec()).await {
        Ok(p) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({
                "name": p.name,
                "version": p.version,
                "sha256": p.sha256,
                "url": format!("/packages/{}", query_value(&p.name)),
            })
            .to_string(),
        )
            .into_response(),
        Err(e) => status_of(e).into_response(),
    }
}

fn options_text(o: &crate::model::StepOptions) -> String {
    let mut parts = Vec::new();
    if let Some(retry) = &o.retry {
        parts.push(format!(
            "retry {}",
            serde_json::to_string(retry).unwrap_or_default()
        ));
    }
    if let Some(ms) = o.attempt_timeout_ms {
        parts.push(format!("attempt timeout {}", duration(ms as i64)));
    }
    if let Some(worker) = &o.worker {
        parts.push(format!("worker queue {worker}"));
    }
    if let Some(ms) = o.schedule_to_start_ms {
        parts.push(format!("schedule-to-start {}", duration(ms as i64)));
    }
    if let Some(ms) = o.heartbeat_ms {
        parts.push(format!("heartbeat {}", duration(ms as i64)));
    }
    if parts.is_empty() {
        "defaults".into()
    } else {
        parts.join(" · ")
    }
}

#[derive(Deserialize)]
pub struct PackageQuery {
    /// A version to check against the open executions of the versions
    /// before it.
    #[serde(default)]
    check: Option<String>,
}

/// A package check's report: its summary, and each execution that would
/// diverge or could not be checked, linked.
fn check_report(check: &PackageCheck) -> Markup {
    html! {
        p #check-summary .(if check.all_compatible() { "ok" } else { "error" }) {
            (check.summary())
        }
        @if !check.all_compatible() {
            table #check-report {
                thead { tr { th { "execution" } th { "on" } th { "entries" } th { "found" } } }
                tbody {
                    @for (what, list) in [("diverges", &check.diverging), ("not checked", &check.unchecked)] {
                        @for e in list {
                            tr data-id=(e.id) {
                                td { a href={ "/executions/" (query_value(&e.id)) } { code { (e.id) } } }
                                td { "v" (e.version) }
                                td { (e.entries) }
                                td { b { (what) } ": " (e.message) }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub async fn package(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(query): Query<PackageQuery>,
) -> Page {
    let viewer = c.viewer(&headers).await?;
    let tenant = own_tenant(&viewer)?;
    let newest = c.api.describe(tenant, &name, None).await?;
    let versions: Vec<_> = c
        .api
        .list_packages(tenant)
        .await?
        .into_iter()
        .filter(|p| p.name == name)
        .collect();
    let checked = match query.check.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(v) => {
            let version = v
                .parse::<i64>()
                .map_err(|_| Error::InvalidInput(format!("the version {v:?} is not a number")))?;
            let target = CheckTarget::Version(version);
            Some(c.api.check_package(tenant, &name, target, None).await?)
        }
    };
    let body = html! {
        h1 { "Package " (newest.name) " " span.muted { "v" (newest.version) } }
        dl {
            dt { "sha256" } dd { code { (newest.sha256) } }
            dt { "size" } dd { (newest.size_bytes) " bytes" }
            dt { "uploaded" } dd { (time(newest.created_at_ms)) }
        }
        h2 { "Workflows" }
        ul { @for w in &newest.info.workflows { li { b { (w.name) } " " (w.description) } } }
        h2 { "Steps" }
        table {
            thead { tr { th { "step" } th { "description" } th { "options" } } }
            tbody {
                @for s in &newest.info.steps {
                    tr { td { b { (s.name) } } td { (s.description) } td { (options_text(&s.options)) } }
                }
            }
        }
        section.card {
            h2 { "Check open executions" }
            p.muted {
                "Replays the open executions of the versions before one against its code, "
                "without side effects: which would go on unchanged on it, and where the others "
                "would diverge (" code { "cerebelum upload --check" } " does it before storing a version)."
            }
            form #check method="get" action={ "/packages/" (query_value(&newest.name)) } {
                label {
                    "Version "
                    select name="check" {
                        @for v in versions.iter().rev() {
                            option value=(v.version) selected[checked.as_ref().is_some_and(|c| c.version == v.version)] {
                                "v" (v.version) " (" (v.sha256[..v.sha256.len().min(12)]) ")"
                            }
                        }
                    }
                }
                button.primary type="submit" { "Check" }
            }
            @if let Some(check) = &checked {
                (check_report(check))
            }
        }
        section.card {
            h2 { "Start an execution" }
            form #start method="post" action="/start" {
                (csrf_field(&viewer))
                input type="hidden" name="package" value=(newest.name);
                label {
                    "Version "
                    select name="version" {
                        @for v in versions.iter().rev() {
                            option value=(v.version) { "v" (v.version) " (" (v.sha256[..v.sha256.len().min(12)]) ")" }
                        }
                    }
                }
                label {
                    "Workflow "
                    select name="workflow" {
                        @for w in &newest.info.workflows { option value=(w.name) { (w.name) } }
                    }
                }
                label { "Input (JSON)" textarea name="input" rows="6" data-json { "{}" } }
                p.json-error.error {}
                label { "Idempotency key " input name="idempotency_key" placeholder="optional"; }
                button.primary type="submit" { "Start" }
            }
        }
    };
    Ok(page(&newest.name, Section::Packages, &viewer, body))
}

#[derive(Deserialize)]
pub struct StartForm {
    #[serde(default)]
    csrf: String,
    package: String,
    #[serde(default)]
    version: String,
    workflow: String,
    #[serde(default)]
    input: String,
    #[serde(default)]
    idempotency_key: String,
}

pub async fn start(
    State(c): State<Console>,
    headers: HeaderMap,
    Form(form): Form<StartForm>,
) -> Page {
    let viewer = c.acting(&headers, &form.csrf).await?;
    if !form.input.trim().is_empty()
        && let Err(e) = serde_json::from_str::<serde_json::Value>(&form.input)
    {
        return Err(Error::InvalidInput(format!("the input is not valid JSON ({e})")).into());
    }
    let version = match form.version.trim() {
        "" => None,
        v => Some(
            v.parse::<i64>()
                .map_err(|_| Error::InvalidInput(format!("the version {v:?} is not a number")))?,
        ),
    };
    let key = form.idempotency_key.trim();
    let (record, _) = c
        .api
        .start(
            own_tenant(&viewer)?,
            StartRequest {
                package: form.package,
                version,
                workflow: form.workflow,
                input: form.input,
                idempotency_key: (!key.is_empty()).then(|| key.to_owned()),
                worker_queue: None,
            },
        )
        .await?;
    Ok(back_to(format!("/executions/{}", record.id)))
}

// -------------------------------------------------------------------- tenant

fn quota(value: Option<i64>, unit: &str) -> String {
    match value {
        None => "no limit".into(),
        Some(v) if unit == "bytes" && v >= 1 << 20 => {
            format!("{:.1} MiB", v as f64 / f64::from(1 << 20))
        }
        Some(v) => format!("{v} {unit}"),
    }
}

/// An operator's view: every tenant with its usage, and the nodes.
async fn operator_page(c: &Console, viewer: &Viewer) -> Page {
    let now = c.api.now_ms();
    let mut tenants = Vec::new();
    for tenant in c.api.store().catalog().list_tenants().await? {
        let open = c
            .api
            .store()
            .executions()
            .count_open_executions(&tenant.name)
            .await?;
        tenants.push((c.api.quotas(&tenant), open, tenant));
    }
    let nodes = c.api.store().executions().nodes().await?;
    let body = html! {
        h1 { "Tenants" }
        table.tenants {
            thead { tr {
                th { "tenant" } th { "open executions" } th { "of at most" }
                th { "journal entries per execution" } th { "HTTP allow-list" } th { "created" }
            } }
            tbody {
                @for (q, open, tenant) in &tenants {
                    tr data-tenant=(tenant.name) {
                        td { a href={ "/executions?tenant=" (query_value(&tenant.name)) } { (tenant.name) } }
                        td.open { (open) }
                        td { (quota(q.max_open_executions, "")) }
                        td { (quota(q.max_journal_entries, "")) }
                        td {
                            @if tenant.http_allow.is_empty() { "none" }
                            @else { (tenant.http_allow.join(", ")) }
                        }
                        td { (time(tenant.created_at_ms)) }
                    }
                }
            }
        }
        h2 { "Nodes" }
        p.muted {
            "Engine processes that hold leases on running executions now (one on SQLite; \
             several on PostgreSQL)."
        }
        table.nodes {
            thead { tr { th { "node" } th { "running executions owned" } th { "leases expire" } } }
            tbody {
                @for node in &nodes {
                    tr {
                        td { code { (node.id) } }
                        td { (node.owned) }
                        td {
                            "in " (duration(node.lease_min_ms - now)) " to "
                            (duration(node.lease_max_ms - now))
                        }
                    }
                }
                @if nodes.is_empty() {
                    tr { td colspan="3" class="muted" { "No execution is running now." } }
                }
            }
        }
    };
    Ok(page("Tenants and nodes", Section::Tenant, viewer, body))
}

async fn tenant_page(c: &Console, viewer: &Viewer, new_key: Option<&str>) -> Page {
    let Some(tenant) = &viewer.tenant else {
        return operator_page(c, viewer).await;
    };
    let q = c.api.quotas(tenant);
    let open = c
        .api
        .store()
        .executions()
        .count_open_executions(&tenant.name)
        .await?;
    let keys = c.api.store().catalog().list_api_keys(&tenant.name).await?;
    // Usage of the per-execution journal limit: the longest open journal.
    let longest = c
        .api
        .store()
        .executions()
        .longest_open_journal(&tenant.name)
        .await?;
    let now = c.api.now_ms();
    let quotas = [
        ("package size", quota(q.max_package_bytes, "bytes")),
        ("payload size", quota(q.max_payload_bytes, "bytes")),
        ("memory per invocation", quota(q.memory_bytes, "bytes")),
        ("CPU per invocation", quota(q.cpu_ms, "ms")),
        ("fuel per execution", quota(q.fuel, "")),
    ];
    let more_quotas = [
        ("output per invocation", quota(q.max_output_bytes, "bytes")),
        ("concurrent invocations", quota(q.max_concurrency, "")),
        ("watch streams", quota(q.max_streams, "")),
    ];
    let body = html! {
        h1 { "Tenant " (tenant.name) }
        @if let Some(secret) = new_key {
            section.card.notice {
                h2 { "New API key" }
                p { "Copy it now: it is shown once, and only its hash is stored." }
                pre #new-key { (secret) }
            }
        }
        h2 { "Quotas and usage" }
        table.quotas { tbody {
            tr {
                th { "open executions" } td #open-executions { (open) }
                td { "of " (quota(q.max_open_executions, "")) }
            }
            @for (what, limit) in &quotas { tr { th { (what) } td {} td { (limit) } } }
            tr {
                th { "journal entries per execution" }
                td #longest-journal {
                    @match &longest {
                        Some((id, entries)) => {
                            (entries) " " span.muted {
                                "(longest open: " a href={ "/executions/" (query_value(id)) } { (id) } ")"
                            }
                        }
                        None => { "0" }
                    }
                }
                td { (quota(q.max_journal_entries, "")) }
            }
            @for (what, limit) in &more_quotas { tr { th { (what) } td {} td { (limit) } } }
        } }
        h2 { "HTTP allow-list" }
        @if tenant.http_allow.is_empty() {
            p.muted { "Empty: steps may send no HTTP requests." }
        } @else {
            ul { @for host in &tenant.http_allow { li { code { (host) } } } }
        }
        h2 { "API keys" }
        table.keys {
            thead { tr {
                th { "id" } th { "created" } th { "status" } th { "expires" } th { "last used" } th {}
            } }
            tbody {
                @for k in &keys {
                    tr {
                        td { code { (k.id) } }
                        td { (time(k.created_at_ms)) }
                        td {
                            @match (k.revoked_at_ms, k.state(now)) {
                                (Some(at), _) => { "revoked " (time(at)) }
                                (None, "expired") => { "expired" }
                                _ if k.id == viewer.key_id => { "active (this session)" }
                                _ => { "active" }
                            }
                        }
                        td { @match k.expires_at_ms { Some(at) => { (time(at)) } None => { "never" } } }
                        td { @match k.last_used_at_ms { Some(at) => { (time(at)) } None => { "never" } } }
                        td {
                            @if k.revoked_at_ms.is_none() {
                                form.inline method="post"
                                    action={ "/tenant/keys/" (query_value(&k.id)) "/revoke" }
                                    data-confirm={ "Revoke key " (k.id) "? Clients using it are refused at once." } {
                                    (csrf_field(viewer))
                                    button.danger type="submit" { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
        form #create-key method="post" action="/tenant/keys" {
            (csrf_field(viewer))
            button type="submit" { "Create a key" }
        }
    };
    Ok(page("Tenant", Section::Tenant, viewer, body))
}

pub async fn tenant(State(c): State<Console>, headers: HeaderMap) -> Page {
    let viewer = c.viewer(&headers).await?;
    tenant_page(&c, &viewer, None).await
}

pub async fn create_key(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Form(form): Form<TokenForm>,
) -> Page {
    let viewer = c.acting(&headers, &form.csrf).await?;
    let tenant = &own_tenant(&viewer)?.name;
    let now = c.api.now_ms();
    let key = keys::create(c.api.store(), tenant, now, None).await?;
    Actor::key(&viewer.key_id, peer)
        .record(
            c.api.store(),
            now,
            tenant,
            "key.create",
            &key.record.id,
            None,
        )
        .await?;
    tenant_page(&c, &viewer, Some(&key.secret)).await
}

pub async fn revoke_key(
    State(c): State<Console>,
    headers: HeaderMap,
    Peer(peer): Peer,
    Path(id): Path<String>,
    Form(form): Form<TokenForm>,
) -> Page {
    let viewer = c.acting(&headers, &form.csrf).await?;
    let mine = c
        .api
        .store()
        .catalog()
        .list_api_keys(&own_tenant(&viewer)?.name)
        .await?;
    if !mine.iter().any(|k| k.id == id) {
        return Err(Error::NotFound(format!("no API key {id:?} in this tenant")).into());
    }
    let now = c.api.now_ms();
    let key = c.api.store().catalog().revoke_api_key(&id, now).await?;
    Actor::key(&viewer.key_id, peer)
        .record(c.api.store(), now, &key.tenant, "key.revoke", &key.id, None)
        .await?;
    Ok(back_to("/tenant".into()))
}

// --------------------------------------------------------------------- audit

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    /// An operator's filter by tenant (a tenant sees only its own).
    #[serde(default)]
    tenant: String,
    /// Rows older than this id.
    before: Option<i64>,
}

/// Rows of the audit log per page.
const AUDIT_PAGE: i64 = 100;

/// The audit log: a tenant's own actions and those on it, or for an
/// operator every tenant's (`?tenant=` narrows it), newest first.
pub async fn audit(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Page {
    let viewer = c.viewer(&headers).await?;
    let tenant = match &viewer.tenant {
        Some(own) => Some(own.name.clone()),
        None => (!query.tenant.is_empty()).then(|| query.tenant.clone()),
    };
    let rows = c
        .api
        .store()
        .catalog()
        .list_audit(tenant.as_deref(), query.before, AUDIT_PAGE)
        .await?;
    let operator = viewer.tenant.is_none();
    // The next page keeps an operator's tenant filter.
    let older = (rows.len() as i64 == AUDIT_PAGE)
        .then(|| rows.last())
        .flatten()
        .map(|last| match operator && !query.tenant.is_empty() {
            true => format!(
                "/audit?before={}&tenant={}",
                last.id,
                query_value(&query.tenant)
            ),
            false => format!("/audit?before={}", last.id),
        });
    let body = html! {
        h1 { "Audit log" }
        p.muted {
            "Who approved, rejected, cancelled or retried an execution, or changed a tenant, a \
             key or a secret: the key's id (or " code { "cli:USER" } " for "
            code { "cerebelum admin" } " on the database), when and from where. Rows are never \
             changed or deleted."
        }
        table.audit {
            thead { tr {
                th { "#" } th { "when" } th { "action" } th { "on" } th { "by" } th { "from" }
                @if operator { th { "tenant" } }
                th { "detail" }
            } }
            tbody {
                @for row in &rows {
                    tr data-action=(row.action) {
                        td { (row.id) }
                        td { (time(row.at_ms)) }
                        td { (row.action) }
                        td {
                            @if row.action.starts_with("execution.") {
                                a href={ "/executions/" (query_value(&row.target)) } { code { (row.target) } }
                            } @else {
                                code { (row.target) }
                            }
                        }
                        td.actor { code { (row.actor) } }
                        td { (row.origin) }
                        @if operator {
                            td { @if row.tenant.is_empty() { "—" } @else { (row.tenant) } }
                        }
                        td { code { (row.detail.as_ref().map(|d| d.to_string()).unwrap_or_default()) } }
                    }
                }
                @if rows.is_empty() {
                    tr { td colspan="8" class="muted" { "Nothing recorded yet." } }
                }
            }
        }
        @if let Some(older) = older { p { a href=(older) { "Older" } } }
    };
    Ok(page("Audit log", Section::Audit, &viewer, body))
}
