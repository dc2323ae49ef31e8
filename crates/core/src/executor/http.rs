//! Outbound HTTP of steps: the `wasi:http/outgoing-handler` hooks.
//!
//! Every request a step makes (`handle`) takes its place in the
//! invocation's journal at the moment it is made, like any other host call.
//! Its entry records the request (method, URL, headers, a hash of the body;
//! secrets redacted) and the whole response (status, headers, body), or the
//! error. Replaying the invocation returns the recorded response without
//! sending anything. A request is denied (and the denial journaled) unless
//! its host is on the tenant's allow-list; workflow code gets no network
//! at all.
//!
//! Ordering: a request's entry is written when its response has arrived.
//! So that entries stay in the order the calls were made, every other host
//! call of the invocation first waits until earlier requests are journaled,
//! and concurrent requests are journaled in the order they were made.

use super::invocation::Invocation;
use super::replay::Interrupt;
use super::state::ExecState;
use crate::journal::{Call, CallKind, Event, HttpAnswer, HttpCall, HttpRequest, describe_call};
use crate::store::NewEntry;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// A request may not take longer than this in all (connect, send, receive).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long another host call waits for an HTTP request made before it to
/// be journaled before the invocation is stopped (the request's body was
/// never finished, most likely).
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// The HTTP side of one invocation's store.
pub struct HttpHooks {
    state: Option<Arc<HttpState>>,
}

struct HttpState {
    exec: Arc<ExecState>,
    invocation: String,
    workflow: bool,
    /// The invocation's journal cursor (shared with [`Invocation`]).
    cursor: Arc<AtomicUsize>,
    /// Requests made and not yet journaled (or replayed).
    in_flight: AtomicUsize,
    settled: Notify,
    /// Resolved when the previous request is journaled.
    previous: Mutex<Option<oneshot::Receiver<()>>>,
    /// Why the invocation must stop, found while a request was in flight.
    interrupt: Mutex<Option<Interrupt>>,
}

impl HttpHooks {
    pub fn new(host: Option<&Invocation>) -> Self {
        Self {
            state: host.map(|inv| {
                Arc::new(HttpState {
                    exec: inv.exec.clone(),
                    invocation: inv.id.clone(),
                    workflow: inv.is_workflow(),
                    cursor: inv.cursor.clone(),
                    in_flight: AtomicUsize::new(0),
                    settled: Notify::new(),
                    previous: Mutex::new(None),
                    interrupt: Mutex::new(None),
                })
            }),
        }
    }

    /// Waits until every request made so far is journaled; the reason to
    /// stop the invocation if one of them found one.
    pub async fn settle(&self) -> Result<(), Interrupt> {
        let Some(state) = &self.state else {
            return Ok(());
        };
        let waited = tokio::time::timeout(ORDER_TIMEOUT, async {
            loop {
                let settled = state.settled.notified();
                if state.in_flight.load(Ordering::SeqCst) == 0 {
                    return;
                }
                settled.await;
            }
        })
        .await;
        if waited.is_err() {
            return Err(Interrupt::Infra(format!(
                "a host call waited {} s for an HTTP request made before it; was the \
                 request's body never finished?",
                ORDER_TIMEOUT.as_secs()
            )));
        }
        self.interrupted().map_or(Ok(()), Err)
    }

    /// The reason to stop found by a request, if any.
    pub fn interrupted(&self) -> Option<Interrupt> {
        let state = self.state.as_ref()?;
        state
            .interrupt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Marks a request settled when its future ends, however it ends.
struct InFlight {
    state: Arc<HttpState>,
    journaled: bool,
    done: Option<oneshot::Sender<()>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.journaled {
            // The guest dropped the request before its response was
            // journaled: the journal has a hole where it belongs. Stop the
            // invocation; it runs again from the journal (and sends again).
            let mut interrupt = self
                .state
                .interrupt
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            interrupt.get_or_insert_with(|| {
                Interrupt::Infra(
                    "an HTTP request was abandoned before its response was journaled".into(),
                )
            });
        }
        self.done.take().map(|tx| tx.send(()));
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.state.settled.notify_waiters();
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        drop(fut);
        let Some(state) = self.state.clone() else {
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        };
        if state.workflow {
            // Constant for workflow code, so nothing to journal.
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        let slot = state.cursor.fetch_add(1, Ordering::SeqCst);
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        let (done_tx, done_rx) = oneshot::channel();
        let previous = state
            .previous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(done_rx);
        let guard = InFlight {
            state: state.clone(),
            journaled: false,
            done: Some(done_tx),
        };
        Box::new(exchange(guard, slot, previous, request, options))
    }
}

/// What a journaled request got: a response or an error.
fn outcome_of(answer: &HttpAnswer) -> Result<http::Response<WasiBody>, HttpError> {
    let (status, headers, encoding, body) = match answer {
        HttpAnswer::Error { error, limit } => {
            return Err(match error.as_str() {
                "denied" => HttpError::HttpRequestDenied,
                "response-too-large" => HttpError::HttpResponseBodySize(*limit),
                "request-too-large" => HttpError::HttpRequestBodySize(*limit),
                "timeout" => HttpError::ConnectionTimeout,
                "connection-refused" => HttpError::ConnectionRefused,
                "invalid-url" => HttpError::HttpRequestUriInvalid,
                other => HttpError::InternalError(Some(other.to_owned())),
            });
        }
        HttpAnswer::Response {
            status,
            headers,
            encoding,
            body,
        } => (status, headers, encoding, body),
    };
    let body = match encoding.as_str() {
        "hex" => hex::decode(body)
            .map_err(|e| HttpError::InternalError(Some(format!("journaled body: {e}"))))?,
        _ => body.as_bytes().to_vec(),
    };
    let mut response = http::Response::builder()
        .status(*status)
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(n, v);
        }
    }
    Ok(response)
}

/// Header pairs as journaled: `(name, value)`, sorted.
fn header_pairs(headers: &http::HeaderMap) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

fn error_answer(code: &str) -> HttpAnswer {
    HttpAnswer::Error {
        error: code.to_owned(),
        limit: None,
    }
}

/// `request` with every occurrence of a secret replaced (in the URL and
/// headers: the journal never holds them).
fn redacted(request: HttpRequest, secrets: &[String]) -> HttpRequest {
    let Ok(mut value) = serde_json::to_value(&request) else {
        return request;
    };
    crate::store::redact(&mut value, secrets);
    serde_json::from_value(value).unwrap_or(request)
}

/// One request: replayed from the journal, or sent and journaled.
async fn exchange(
    mut guard: InFlight,
    slot: usize,
    previous: Option<oneshot::Receiver<()>>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
> {
    let state = guard.state.clone();
    let exec = &state.exec;
    let sandbox = &exec.sandbox;
    let (parts, body) = request.into_parts();
    let body_limit = sandbox.quotas.max_payload_bytes.unwrap_or(i64::MAX).max(0) as usize;
    let body = match Limited::new(body, body_limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(_) => Err(body_limit),
    };
    let uri = &parts.uri;
    let host = uri.host().unwrap_or_default().to_owned();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let path = uri.path().to_owned();
    let method = parts.method.as_str().to_owned();
    let args = HttpRequest {
        method: method.clone(),
        url: uri.to_string(),
        headers: header_pairs(&parts.headers),
        body_sha256: body.as_ref().map(|b| crate::runtime::sha256_hex(b)).ok(),
        body_bytes: body.as_ref().map(|b| b.len() as u64).ok(),
    };
    let args = redacted(args, &sandbox.secret_values);
    let args_json = serde_json::to_value(&args).unwrap_or(Value::Null);
    let hash = CallKind::Http.hash_value(&args_json);

    let recorded = {
        let index = exec.index.lock().unwrap_or_else(|p| p.into_inner());
        index.call(&state.invocation, slot).cloned()
    };
    if let Some(entry) = recorded {
        if let Some((Call::Http(call), recorded_hash)) = entry.call()
            && *recorded_hash == hash
        {
            guard.journaled = true;
            return outcome_of(&call.answer).map(finished);
        }
        let recorded = entry
            .call()
            .map_or_else(|| entry.event.kind().to_owned(), |(c, _)| c.describe());
        let message = format!(
            "at seq {} step invocation {} made a different call than the journal recorded: \
             recorded `{recorded}`, now `{}`; the code is not deterministic (or the journal was \
             modified)",
            entry.seq,
            state.invocation,
            describe_call(CallKind::Http, &args_json),
        );
        *state.interrupt.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Interrupt::Nondeterminism(message.clone()));
        guard.journaled = true;
        return Err(HttpError::InternalError(Some(message)));
    }
    if exec.engine.config.replay_only {
        // Past the journal: a replay check sends nothing and ends here.
        *state.interrupt.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Interrupt::Suspend { wake_at: None });
        guard.journaled = true;
        return Err(HttpError::InternalError(Some(
            "a replay check sends no request".into(),
        )));
    }

    let answer = match body {
        Err(limit) => HttpAnswer::Error {
            error: "request-too-large".into(),
            limit: Some(limit as u64),
        },
        Ok(_) if !sandbox.http.allows(&method, &host, port, &path) => {
            tracing::info!(execution_id = %exec.record.id, %method, %host, port, %path,
                "HTTP request denied: not on the tenant's allow-list");
            error_answer("denied")
        }
        Ok(bytes) => {
            let limit = sandbox.quotas.max_response_bytes.unwrap_or(i64::MAX).max(0) as usize;
            let request = http::Request::from_parts(
                parts,
                Full::new(bytes)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            );
            match tokio::time::timeout(REQUEST_TIMEOUT, send(request, options, limit)).await {
                Ok(answer) => answer,
                Err(_) => error_answer("timeout"),
            }
        }
    };

    crate::metrics::metrics().http_request(&exec.record.tenant, &answer);
    // Journal in the order the requests were made, before the step sees
    // the response. The push runs on its own task, so the entry is written
    // even if the guest drops this request meanwhile.
    let call = Call::Http(HttpCall {
        args,
        answer: answer.clone(),
    });
    let entry = NewEntry::new(state.invocation.clone(), Event::Call { hash, call });
    let writer = exec.writer.clone();
    let pushed = tokio::spawn(async move {
        if let Some(previous) = previous {
            let _ = previous.await;
        }
        writer.push_durable(entry).await
    });
    guard.journaled = true;
    match pushed.await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            let interrupt = Interrupt::from(e);
            *state.interrupt.lock().unwrap_or_else(|p| p.into_inner()) = Some(interrupt);
            return Err(HttpError::InternalError(Some(
                "the response could not be journaled".into(),
            )));
        }
        Err(e) => return Err(HttpError::InternalError(Some(e.to_string()))),
    }
    outcome_of(&answer).map(finished)
}

fn finished(
    response: http::Response<WasiBody>,
) -> (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
) {
    (response, Box::new(async { Ok(()) }))
}

/// Sends a request for real; its whole response (body up to `limit`
/// bytes) as a journal answer.
async fn send(
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    limit: usize,
) -> HttpAnswer {
    let options = RequestOptions {
        connect_timeout: Some(
            options
                .and_then(|o| o.connect_timeout)
                .unwrap_or(CONNECT_TIMEOUT),
        ),
        first_byte_timeout: options
            .and_then(|o| o.first_byte_timeout)
            .or(Some(REQUEST_TIMEOUT)),
        between_bytes_timeout: options
            .and_then(|o| o.between_bytes_timeout)
            .or(Some(REQUEST_TIMEOUT)),
    };
    let (response, io) =
        match wasmtime_wasi_http::default_send_request(request, Some(options)).await {
            Ok(r) => r,
            Err(e) => return error_answer(&send_error(&e)),
        };
    let driver = tokio::spawn(io);
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, limit).collect().await;
    driver.abort();
    let bytes = match body {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return HttpAnswer::Error {
                error: "response-too-large".into(),
                limit: Some(limit as u64),
            };
        }
        Err(e) => return error_answer(&format!("reading the response failed: {e}")),
    };
    let (encoding, body) = match std::str::from_utf8(&bytes) {
        Ok(text) => ("utf8", text.to_owned()),
        Err(_) => ("hex", hex::encode(&bytes)),
    };
    HttpAnswer::Response {
        status: parts.status.as_u16(),
        headers: header_pairs(&parts.headers),
        encoding: encoding.to_owned(),
        body,
    }
}

fn send_error(e: &HttpError) -> String {
    match e {
        HttpError::ConnectionRefused => "connection-refused".into(),
        HttpError::ConnectionTimeout | HttpError::ConnectionReadTimeout => "timeout".into(),
        HttpError::HttpRequestUriInvalid => "invalid-url".into(),
        other => format!("{other:?}"),
    }
}
