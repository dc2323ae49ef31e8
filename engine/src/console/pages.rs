//! The console's pages and actions. Each handler signs the request in
//! ([`Console::viewer`], or [`Console::acting`] for what changes state),
//! calls [`crate::api::Api`] for the viewer's tenant and renders HTML.
//! Actions answer with a redirect to the page they were made on (so a
//! reload does not repeat them), or with a page that says what was wrong.

use super::html::{Section, badge, csrf_field, duration, esc, json, layout, query_value, time};
use super::session::{self, Viewer};
use super::timeline::{Progress, Timeline};
use super::{Console, OverTls, Peer, Refusal, check_origin, own_tenant, status_of};
use crate::api::audit::Actor;
use crate::api::keys;
use crate::api::service::{ExecutionView, StartRequest};
use crate::api::throttle;
use crate::error::Error;
use crate::journal::Entry;
use crate::model::{Decision, ExecutionRecord, ListFilter, Status};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::convert::Infallible;
use std::fmt::Write;
use tokio_stream::StreamExt;

type Page = Result<Response, Refusal>;

fn html(title: &str, section: Section, viewer: &Viewer, body: &str) -> Response {
    Html(layout(title, section, Some(viewer), body)).into_response()
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
    let error = error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" id=\"error\">{}</p>", esc(e))
    });
    let body = format!(
        "<section class=\"card narrow\"><h1>Sign in</h1>{error}\
         <form method=\"post\" action=\"/login\" id=\"login\">\
         <label>API key <input type=\"password\" name=\"key\" autocomplete=\"off\" \
         placeholder=\"cbk_…\" required autofocus></label>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"muted\">A tenant's key, from <code>cerebelum admin key create TENANT</code>. \
         The console sees what the key's tenant sees through the API.</p></section>"
    );
    layout("Sign in", Section::None, None, &body)
}

pub async fn login_page() -> Html<String> {
    Html(login_form(None))
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
        Ok(token) => (
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
            .into_response(),
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
    #[serde(default)]
    package: String,
    #[serde(default)]
    workflow: String,
    /// The start of an execution id.
    #[serde(default)]
    q: String,
    /// One tenant (an operator's list; a tenant sees only its own).
    #[serde(default)]
    tenant: String,
    /// The page token of the page before.
    #[serde(default)]
    after: String,
}

impl ListQuery {
    fn filter(&self) -> Result<ListFilter, Error> {
        let some = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        Ok(ListFilter {
            status: some(&self.status)
                .map(|s| crate::api::Api::parse_status(&s))
                .transpose()?,
            package: some(&self.package),
            workflow: some(&self.workflow),
            id_prefix: some(&self.q).map(|q| q.to_ascii_lowercase()),
            tenant: some(&self.tenant),
            limit: 50,
            ..ListFilter::default()
        })
    }

    /// The query string of these filters, `after` left out.
    fn filters(&self) -> String {
        [
            ("status", &self.status),
            ("package", &self.package),
            ("workflow", &self.workflow),
            ("q", &self.q),
            ("tenant", &self.tenant),
        ]
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", query_value(v)))
        .collect::<Vec<_>>()
        .join("&")
    }
}

/// A row of the executions list; an operator's has the tenant too, an
/// open execution that reported progress its latest report.
fn execution_row(r: &ExecutionRecord, operator: bool, progress: Option<&Progress>) -> String {
    let mut note = String::new();
    if let Some(error) = &r.error {
        note = format!("{}: {}", error.kind, error.message);
    } else if let Some(wake) = r.wake_at_ms
        && !r.status.is_terminal()
    {
        note = format!("wakes at {}", super::html::utc(wake));
    }
    format!(
        "<tr data-id=\"{id}\"><td><a class=\"id\" href=\"/executions/{id}\">{id}</a></td>{tenant}\
         <td>{}</td><td>{} <span class=\"muted\">v{}</span></td><td>{}</td>\
         <td>{}</td><td>{}</td><td class=\"note\">{}{}</td></tr>",
        badge(r.status.as_str()),
        esc(&r.package_name),
        r.package_version,
        esc(&r.workflow),
        time(r.created_at_ms),
        time(r.updated_at_ms),
        progress.map_or_else(String::new, |p| format!(
            "<span class=\"progress\"><progress max=\"100\" value=\"{0}\">{0}%</progress> {0}% {1}</span> ",
            p.percent,
            esc(&p.message)
        )),
        esc(&note),
        id = esc(&r.id),
        tenant = if operator {
            format!("<td>{}</td>", esc(&r.tenant))
        } else {
            String::new()
        },
    )
}

async fn rows(
    c: &Console,
    viewer: &Viewer,
    query: &ListQuery,
) -> Result<(String, Option<String>), Refusal> {
    let page = c
        .api
        .list_of(viewer.tenant.as_ref(), query.filter()?, Some(&query.after))
        .await?;
    let operator = viewer.tenant.is_none();
    let mut out = String::with_capacity(page.executions.len() * 400);
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
        out.push_str(&execution_row(r, operator, progress.as_ref()));
    }
    if page.executions.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"muted\">No executions match.</td></tr>");
    }
    Ok((out, page.next))
}

pub async fn executions(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Page {
    let viewer = c.viewer(&headers).await?;
    let (rows, next) = rows(&c, &viewer, &query).await?;
    let filters = query.filters();
    let mut status_options = String::from("<option value=\"\">any status</option>");
    for s in [
        "pending",
        "running",
        "waiting",
        "completed",
        "failed",
        "cancelled",
    ] {
        let selected = if query.status == s { " selected" } else { "" };
        let _ = write!(status_options, "<option{selected}>{s}</option>");
    }
    // Only the first page refreshes itself: later pages hold still.
    let refresh = if query.after.is_empty() {
        format!(
            " data-refresh=\"/executions/rows{}{}\"",
            if filters.is_empty() { "" } else { "?" },
            esc(&filters)
        )
    } else {
        String::new()
    };
    let mut paging = String::new();
    if !query.after.is_empty() {
        let _ = write!(
            paging,
            "<a href=\"/executions{}{}\">⇤ First page</a> ",
            if filters.is_empty() { "" } else { "?" },
            esc(&filters)
        );
    }
    if let Some(next) = next {
        let sep = if filters.is_empty() { "" } else { "&" };
        let _ = write!(
            paging,
            "<a id=\"next\" href=\"/executions?{}{sep}after={}\">Next page →</a>",
            esc(&filters),
            query_value(&next)
        );
    }
    let body = format!(
        "<h1>Executions</h1>\
         <form class=\"filters\" method=\"get\" action=\"/executions\">\
         <input name=\"q\" placeholder=\"id starts with…\" value=\"{}\">\
         <select name=\"status\">{status_options}</select>\
         <input name=\"package\" placeholder=\"package\" value=\"{}\">\
         <input name=\"workflow\" placeholder=\"workflow\" value=\"{}\">{tenant_filter}\
         <button type=\"submit\">Filter</button> <a href=\"/executions\">clear</a></form>\
         <table class=\"executions\"><thead><tr><th>id</th>{tenant_column}<th>status</th>\
         <th>package</th><th>workflow</th><th>started</th><th>updated</th><th></th></tr></thead>\
         <tbody id=\"rows\"{refresh}>{rows}</tbody></table><p class=\"paging\">{paging}</p>",
        esc(&query.q),
        esc(&query.package),
        esc(&query.workflow),
        tenant_filter = if viewer.tenant.is_none() {
            format!(
                "<input name=\"tenant\" placeholder=\"tenant\" value=\"{}\">",
                esc(&query.tenant)
            )
        } else {
            String::new()
        },
        tenant_column = if viewer.tenant.is_none() {
            "<th>tenant</th>"
        } else {
            ""
        },
    );
    Ok(html("Executions", Section::Executions, &viewer, &body))
}

/// The rows of the executions list alone, for its live refresh.
pub async fn execution_rows(
    State(c): State<Console>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Page {
    let viewer = c.viewer(&headers).await?;
    let (rows, _) = rows(&c, &viewer, &query).await?;
    Ok(Html(rows).into_response())
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
) -> (String, String) {
    let r = &view.record;
    let id = esc(&r.id);
    let mut summary = format!(
        "<div class=\"summary\"><h1>{} {}</h1><dl>\
         <dt>id</dt><dd><code id=\"execution-id\">{id}</code></dd>\
         <dt>package</dt><dd>{} v{} <span class=\"muted\">{}</span></dd>\
         <dt>started</dt><dd>{}</dd><dt>updated</dt><dd>{}</dd><dt>journal</dt><dd>{} entries</dd>",
        esc(&r.workflow),
        badge(r.status.as_str()),
        // An operator has no package pages: the tenant's name instead.
        match viewer.tenant {
            Some(_) => format!(
                "<a href=\"/packages/{}\">{}</a>",
                query_value(&r.package_name),
                esc(&r.package_name)
            ),
            None => format!(
                "{} <span class=\"muted\">of tenant {}</span>",
                esc(&r.package_name),
                esc(&r.tenant)
            ),
        },
        r.package_version,
        esc(&r.package_sha256[..r.package_sha256.len().min(12)]),
        time(r.created_at_ms),
        time(r.updated_at_ms),
        entries,
    );
    if let Some(queue) = &r.worker_queue {
        let _ = write!(
            summary,
            "<dt>worker queue</dt><dd><code>{}</code></dd>",
            esc(queue)
        );
    }
    if let (Some(wake), false) = (r.wake_at_ms, r.status.is_terminal()) {
        let _ = write!(
            summary,
            "<dt>wakes</dt><dd>{} · <span class=\"countdown\" data-due=\"{wake}\">in {}</span></dd>",
            time(wake),
            duration(wake - now_ms)
        );
    }
    if r.cancel_requested && !r.status.is_terminal() {
        summary.push_str("<dt>cancel</dt><dd>requested; it ends at its next wait</dd>");
    }
    for wait in &view.waiting_on {
        let _ = write!(summary, "<dt>waiting for</dt><dd>{}</dd>", esc(wait));
    }
    if let Some(state) = &view.state {
        let _ = write!(
            summary,
            "<dt>state</dt><dd><code class=\"state\">{}</code></dd>",
            esc(&crate::util::shorten(&state.to_string(), 500))
        );
    }
    if let Some(parent) = &r.parent_id {
        let _ = write!(
            summary,
            "<dt>parent</dt><dd><a href=\"/executions/{}\">{}</a></dd>",
            query_value(parent),
            esc(parent)
        );
    }
    if let Some(from) = &r.continued_from {
        let _ = write!(
            summary,
            "<dt>continues</dt><dd><a href=\"/executions/{}\">{}</a></dd>",
            query_value(from),
            esc(from)
        );
    }
    if r.paused && !r.status.is_terminal() {
        summary.push_str(
            "<dt>paused</dt><dd>by an operator; it starts no new step until resumed</dd>",
        );
    }
    if r.engine_failures > 0 && !r.status.is_terminal() {
        let _ = write!(
            summary,
            "<dt>engine</dt><dd class=\"error\">{} engine error(s) in a row, retried \
             automatically: {}</dd>",
            r.engine_failures,
            esc(r.engine_error.as_deref().unwrap_or(""))
        );
    }
    if let Some(note) = &view.note {
        let _ = write!(summary, "<dt>note</dt><dd>{}</dd>", esc(note));
    }
    summary.push_str("</dl>");
    if let Some(p) = progress {
        let _ = write!(
            summary,
            "<div class=\"progress\"><progress max=\"100\" value=\"{0}\">{0}%</progress> \
             {0}% {1}</div>",
            p.percent,
            esc(&p.message)
        );
    }
    if let Some(result) = &r.result {
        let _ = write!(
            summary,
            "<h2>Result</h2><div id=\"result\">{}</div>",
            json(result)
        );
    }
    if let Some(error) = &r.error {
        let _ = write!(
            summary,
            "<h2>Error</h2><p class=\"error\" id=\"failure\">{}: {}</p>{}",
            error.kind,
            esc(&error.message),
            error.details.as_ref().map(json).unwrap_or_default()
        );
    }
    summary.push_str("</div>");

    let csrf = csrf_field(viewer);
    let mut actions = String::new();
    for a in &view.pending_approvals {
        let key = esc(&a.key);
        let message = a
            .request
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("");
        let _ = write!(
            actions,
            "<section class=\"card approval\" data-key=\"{key}\"><h2>Approval <code>{key}</code></h2>\
             <p>{}</p>\
             <form method=\"post\" action=\"/executions/{id}/approve\" class=\"approve\" \
             data-confirm=\"Approve '{key}' with this payload?\">{csrf}\
             <input type=\"hidden\" name=\"key\" value=\"{key}\">\
             <label>Payload (JSON)<textarea name=\"payload\" rows=\"4\" data-json>{{}}</textarea></label>\
             <p class=\"json-error error\"></p><button type=\"submit\" class=\"primary\">Approve</button></form>\
             <form method=\"post\" action=\"/executions/{id}/reject\" class=\"reject\" \
             data-confirm=\"Reject '{key}'?\">{csrf}\
             <input type=\"hidden\" name=\"key\" value=\"{key}\">\
             <label>Reason <input name=\"reason\" placeholder=\"why not\"></label>\
             <button type=\"submit\" class=\"danger\">Reject</button></form></section>",
            esc(message)
        );
    }
    if !r.status.is_terminal() && !r.cancel_requested {
        let _ = write!(
            actions,
            "<form method=\"post\" action=\"/executions/{id}/cancel\" class=\"inline\" \
             data-confirm=\"Cancel this execution? Its code gets a cancellation error at its \
             next wait.\">{csrf}<button type=\"submit\" id=\"cancel\" class=\"danger\">Cancel</button></form>"
        );
    }
    if matches!(r.status, Status::Failed | Status::Cancelled) {
        let _ = write!(
            actions,
            "<form method=\"post\" action=\"/executions/{id}/retry\" class=\"inline\" \
             data-confirm=\"Retry this execution? It keeps what it completed.\">{csrf}\
             <button type=\"submit\" id=\"retry\" class=\"primary\">Retry</button></form>"
        );
    }
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
    Ok(html(
        &view.record.workflow.clone(),
        Section::Executions,
        &viewer,
        &execution_body(&c, &viewer, &view, &entries, show.all.is_some()),
    ))
}

/// The body of an execution's page.
pub fn execution_body(
    c: &Console,
    viewer: &Viewer,
    view: &ExecutionView,
    entries: &[Entry],
    all: bool,
) -> String {
    let timeline = Timeline::build(entries);
    let now_ms = c.api.now_ms();
    let (summary, actions) = live_parts(
        viewer,
        view,
        timeline.entries,
        timeline.progress.as_ref(),
        now_ms,
    );
    let timeline_html = timeline.html(now_ms, (!all).then_some(MAX_TIMELINE_ROWS));
    let live = if view.record.status.is_terminal() {
        String::new()
    } else {
        format!(
            " data-live=\"/executions/{}/live?seq={}{}\"",
            esc(&view.record.id),
            timeline.last_seq,
            if all { "&amp;all=1" } else { "" }
        )
    };
    format!(
        "<div id=\"execution\"{live}><div id=\"summary\">{summary}</div>\
         <div id=\"actions\">{actions}</div>\
         <h2>Input</h2>{}<h2>Timeline</h2><div id=\"timeline\">{timeline_html}</div></div>",
        json(&view.record.input)
    )
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
    let payload = if form.payload.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&form.payload).map_err(|e| {
            Error::InvalidInput(format!(
                "the approval payload is not valid JSON ({})",
                crate::util::json_error(&e)
            ))
        })?
    };
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

// ------------------------------------------------------------------ packages

pub async fn packages(State(c): State<Console>, headers: HeaderMap) -> Page {
    let viewer = c.viewer(&headers).await?;
    let packages = c.api.list_packages(own_tenant(&viewer)?).await?;
    let mut rows = String::new();
    for p in &packages {
        let workflows: Vec<&str> = p.info.workflows.iter().map(|w| w.name.as_str()).collect();
        let _ = write!(
            rows,
            "<tr><td><a href=\"/packages/{}\">{}</a></td><td>v{}</td><td><code>{}</code></td>\
             <td>{}</td><td>{} steps</td><td>{}</td></tr>",
            query_value(&p.name),
            esc(&p.name),
            p.version,
            esc(&p.sha256[..p.sha256.len().min(16)]),
            esc(&workflows.join(", ")),
            p.info.steps.len(),
            time(p.created_at_ms)
        );
    }
    if packages.is_empty() {
        rows.push_str(
            "<tr><td colspan=\"6\" class=\"muted\">No packages yet: upload one.</td></tr>",
        );
    }
    let body = format!(
        "<h1>Packages</h1>\
         <section class=\"card\"><h2>Upload</h2>\
         <form id=\"upload\" data-csrf=\"{}\">\
         <label>Component (.wasm) <input type=\"file\" name=\"file\" accept=\".wasm\" required></label>\
         <label>Name <input name=\"name\" placeholder=\"the file name without .wasm\"></label>\
         <button type=\"submit\" class=\"primary\">Upload</button>\
         <p class=\"upload-status\" id=\"upload-status\"></p></form></section>\
         <table><thead><tr><th>name</th><th>version</th><th>sha256</th><th>workflows</th>\
         <th>steps</th><th>uploaded</th></tr></thead><tbody>{rows}</tbody></table>",
        esc(&viewer.csrf)
    );
    Ok(html("Packages", Section::Packages, &viewer, &body))
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

pub async fn package(
    State(c): State<Console>,
    headers: HeaderMap,
    Path(name): Path<String>,
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
    let mut body = format!(
        "<h1>Package {} <span class=\"muted\">v{}</span></h1><dl><dt>sha256</dt><dd><code>{}</code></dd>\
         <dt>size</dt><dd>{} bytes</dd><dt>uploaded</dt><dd>{}</dd></dl><h2>Workflows</h2><ul>",
        esc(&newest.name),
        newest.version,
        esc(&newest.sha256),
        newest.size_bytes,
        time(newest.created_at_ms)
    );
    for w in &newest.info.workflows {
        let _ = write!(
            body,
            "<li><b>{}</b> {}</li>",
            esc(&w.name),
            esc(&w.description)
        );
    }
    body.push_str("</ul><h2>Steps</h2><table><thead><tr><th>step</th><th>description</th><th>options</th></tr></thead><tbody>");
    for s in &newest.info.steps {
        let _ = write!(
            body,
            "<tr><td><b>{}</b></td><td>{}</td><td>{}</td></tr>",
            esc(&s.name),
            esc(&s.description),
            esc(&options_text(&s.options))
        );
    }
    body.push_str("</tbody></table>");
    let mut version_options = String::new();
    for v in versions.iter().rev() {
        let _ = write!(
            version_options,
            "<option value=\"{0}\">v{0} ({1})</option>",
            v.version,
            esc(&v.sha256[..v.sha256.len().min(12)])
        );
    }
    let mut workflow_options = String::new();
    for w in &newest.info.workflows {
        let _ = write!(
            workflow_options,
            "<option value=\"{0}\">{0}</option>",
            esc(&w.name)
        );
    }
    let _ = write!(
        body,
        "<section class=\"card\"><h2>Start an execution</h2>\
         <form method=\"post\" action=\"/start\" id=\"start\">{}\
         <input type=\"hidden\" name=\"package\" value=\"{}\">\
         <label>Version <select name=\"version\">{version_options}</select></label>\
         <label>Workflow <select name=\"workflow\">{workflow_options}</select></label>\
         <label>Input (JSON)<textarea name=\"input\" rows=\"6\" data-json>{{}}</textarea></label>\
         <p class=\"json-error error\"></p>\
         <label>Idempotency key <input name=\"idempotency_key\" placeholder=\"optional\"></label>\
         <button type=\"submit\" class=\"primary\">Start</button></form></section>",
        csrf_field(&viewer),
        esc(&newest.name)
    );
    Ok(html(&newest.name, Section::Packages, &viewer, &body))
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
    let mut body = String::from(
        "<h1>Tenants</h1><table class=\"tenants\"><thead><tr><th>tenant</th>\
         <th>open executions</th><th>of at most</th><th>journal entries per execution</th>\
         <th>HTTP allow-list</th><th>created</th></tr></thead><tbody>",
    );
    for tenant in c.api.store().catalog().list_tenants().await? {
        let q = c.api.quotas(&tenant);
        let open = c
            .api
            .store()
            .executions()
            .count_open_executions(&tenant.name)
            .await?;
        let _ = write!(
            body,
            "<tr data-tenant=\"{0}\"><td><a href=\"/executions?tenant={1}\">{0}</a></td>\
             <td class=\"open\">{open}</td><td>{2}</td><td>{3}</td><td>{4}</td><td>{5}</td></tr>",
            esc(&tenant.name),
            query_value(&tenant.name),
            quota(q.max_open_executions, ""),
            quota(q.max_journal_entries, ""),
            if tenant.http_allow.is_empty() {
                "none".to_owned()
            } else {
                esc(&tenant.http_allow.join(", "))
            },
            time(tenant.created_at_ms),
        );
    }
    body.push_str(
        "</tbody></table><h2>Nodes</h2><p class=\"muted\">Engine processes that hold \
         leases on running executions now (one on SQLite; several on PostgreSQL).</p>\
         <table class=\"nodes\"><thead><tr><th>node</th><th>running executions owned</th>\
         <th>leases expire</th></tr></thead><tbody>",
    );
    let nodes = c.api.store().executions().nodes().await?;
    for node in &nodes {
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td>{}</td><td>in {} to {}</td></tr>",
            esc(&node.id),
            node.owned,
            duration(node.lease_min_ms - now),
            duration(node.lease_max_ms - now),
        );
    }
    if nodes.is_empty() {
        body.push_str(
            "<tr><td colspan=\"3\" class=\"muted\">No execution is running now.</td></tr>",
        );
    }
    body.push_str("</tbody></table>");
    Ok(html("Tenants and nodes", Section::Tenant, viewer, &body))
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
    let longest = match c
        .api
        .store()
        .executions()
        .longest_open_journal(&tenant.name)
        .await?
    {
        Some((id, entries)) => format!(
            "{entries} <span class=\"muted\">(longest open: <a href=\"/executions/{0}\">{0}</a>)</span>",
            esc(&id)
        ),
        None => "0".to_owned(),
    };
    let mut body = format!("<h1>Tenant {}</h1>", esc(&tenant.name));
    if let Some(secret) = new_key {
        let _ = write!(
            body,
            "<section class=\"card notice\"><h2>New API key</h2><p>Copy it now: it is shown \
             once, and only its hash is stored.</p><pre id=\"new-key\">{}</pre></section>",
            esc(secret)
        );
    }
    let _ = write!(
        body,
        "<h2>Quotas and usage</h2><table class=\"quotas\"><tbody>\
         <tr><th>open executions</th><td id=\"open-executions\">{open}</td><td>of {}</td></tr>\
         <tr><th>package size</th><td></td><td>{}</td></tr>\
         <tr><th>payload size</th><td></td><td>{}</td></tr>\
         <tr><th>memory per invocation</th><td></td><td>{}</td></tr>\
         <tr><th>CPU per invocation</th><td></td><td>{}</td></tr>\
         <tr><th>fuel per execution</th><td></td><td>{}</td></tr>\
         <tr><th>journal entries per execution</th><td id=\"longest-journal\">{}</td><td>{}</td></tr>\
         <tr><th>output per invocation</th><td></td><td>{}</td></tr>\
         <tr><th>concurrent invocations</th><td></td><td>{}</td></tr>\
         <tr><th>watch streams</th><td></td><td>{}</td></tr>\
         </tbody></table><h2>HTTP allow-list</h2>",
        quota(q.max_open_executions, ""),
        quota(q.max_package_bytes, "bytes"),
        quota(q.max_payload_bytes, "bytes"),
        quota(q.memory_bytes, "bytes"),
        quota(q.cpu_ms, "ms"),
        quota(q.fuel, ""),
        longest,
        quota(q.max_journal_entries, ""),
        quota(q.max_output_bytes, "bytes"),
        quota(q.max_concurrency, ""),
        quota(q.max_streams, ""),
    );
    if tenant.http_allow.is_empty() {
        body.push_str("<p class=\"muted\">Empty: steps may send no HTTP requests.</p>");
    } else {
        body.push_str("<ul>");
        for host in &tenant.http_allow {
            let _ = write!(body, "<li><code>{}</code></li>", esc(host));
        }
        body.push_str("</ul>");
    }
    let csrf = csrf_field(viewer);
    body.push_str("<h2>API keys</h2><table class=\"keys\"><thead><tr><th>id</th><th>created</th><th>status</th><th>expires</th><th>last used</th><th></th></tr></thead><tbody>");
    let now = c.api.now_ms();
    for k in &keys {
        let status = match (k.revoked_at_ms, k.state(now)) {
            (Some(at), _) => format!("revoked {}", time(at)),
            (None, "expired") => "expired".into(),
            _ if k.id == viewer.key_id => "active (this session)".into(),
            _ => "active".into(),
        };
        let expires = k.expires_at_ms.map_or_else(|| "never".to_owned(), time);
        let used = k.last_used_at_ms.map_or_else(|| "never".to_owned(), time);
        let action = if k.revoked_at_ms.is_none() {
            format!(
                "<form method=\"post\" action=\"/tenant/keys/{0}/revoke\" class=\"inline\" \
                 data-confirm=\"Revoke key {0}? Clients using it are refused at once.\">{csrf}\
                 <button type=\"submit\" class=\"danger\">Revoke</button></form>",
                esc(&k.id)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td>{}</td><td>{status}</td><td>{expires}</td>\
             <td>{used}</td><td>{action}</td></tr>",
            esc(&k.id),
            time(k.created_at_ms)
        );
    }
    let _ = write!(
        body,
        "</tbody></table><form method=\"post\" action=\"/tenant/keys\" id=\"create-key\">{csrf}\
         <button type=\"submit\">Create a key</button></form>"
    );
    Ok(html("Tenant", Section::Tenant, viewer, &body))
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
    let mut body = String::from(
        "<h1>Audit log</h1><p class=\"muted\">Who approved, rejected, cancelled or retried an \
         execution, or changed a tenant, a key or a secret: the key's id (or <code>cli:USER</code> \
         for <code>cerebelum admin</code> on the database), when and from where. Rows are never \
         changed or deleted.</p><table class=\"audit\"><thead><tr><th>#</th><th>when</th>\
         <th>action</th><th>on</th><th>by</th><th>from</th>",
    );
    if viewer.tenant.is_none() {
        body.push_str("<th>tenant</th>");
    }
    body.push_str("<th>detail</th></tr></thead><tbody>");
    for row in &rows {
        let target = if row.action.starts_with("execution.") {
            format!(
                "<a href=\"/executions/{}\"><code>{}</code></a>",
                query_value(&row.target),
                esc(&row.target)
            )
        } else {
            format!("<code>{}</code>", esc(&row.target))
        };
        let _ = write!(
            body,
            "<tr data-action=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{target}</td>\
             <td class=\"actor\"><code>{}</code></td><td>{}</td>",
            esc(&row.action),
            row.id,
            time(row.at_ms),
            esc(&row.action),
            esc(&row.actor),
            esc(&row.origin),
        );
        if viewer.tenant.is_none() {
            let _ = write!(
                body,
                "<td>{}</td>",
                if row.tenant.is_empty() {
                    "—".to_owned()
                } else {
                    esc(&row.tenant)
                }
            );
        }
        let detail = row
            .detail
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default();
        let _ = write!(body, "<td><code>{}</code></td></tr>", esc(&detail));
    }
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"8\" class=\"muted\">Nothing recorded yet.</td></tr>");
    }
    body.push_str("</tbody></table>");
    if rows.len() as i64 == AUDIT_PAGE
        && let Some(last) = rows.last()
    {
        let tenant = if viewer.tenant.is_none() && !query.tenant.is_empty() {
            format!("&tenant={}", query_value(&query.tenant))
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<p><a href=\"/audit?before={}{tenant}\">Older</a></p>",
            last.id
        );
    }
    Ok(html("Audit log", Section::Audit, &viewer, &body))
}
