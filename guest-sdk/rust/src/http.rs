//! Outbound HTTP for steps, through the standard `wasi:http/outgoing-handler`.
//!
//! The engine sends a request only if its host is on the tenant's
//! allow-list, journals it with its whole response, and on replay returns
//! the recorded response without sending it again: a step that crashed
//! after a request was answered does not repeat it. Workflow code gets no
//! network (use a step).
//!
//! ```no_run
//! use cerebelum_sdk::{Context, Error, http};
//! use serde_json::{Value, json};
//!
//! fn create_droplet(ctx: &Context, name: String) -> Result<Value, Error> {
//!     let token = ctx.secret("do-token")?;
//!     let response = http::Request::post("https://api.example.com/v2/droplets")
//!         .header("authorization", format!("Bearer {token}"))
//!         .json(&json!({ "name": name }))?
//!         .send()?;
//!     response.error_for_status()?.json()
//! }
//! ```

use crate::Error;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types as wasi;
use crate::bindings::wasi::io::streams::StreamError;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest chunk written to a body stream at once (the WASI limit is 4096
/// for `blocking-write-and-flush`).
const CHUNK: usize = 4096;

/// A request being built; [`Request::send`] sends it.
#[derive(Debug, Clone)]
pub struct Request {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A response with its whole body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Header names are lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, Error> {
    Request::get(url).send()
}

/// `POST url` with a JSON body.
pub fn post_json<T: Serialize + ?Sized>(url: &str, body: &T) -> Result<Response, Error> {
    Request::post(url).json(body)?.send()
}

impl Request {
    pub fn new(method: &str, url: &str) -> Self {
        Self {
            method: method.to_ascii_uppercase(),
            url: url.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(url: &str) -> Self {
        Self::new("GET", url)
    }

    pub fn post(url: &str) -> Self {
        Self::new("POST", url)
    }

    pub fn put(url: &str) -> Self {
        Self::new("PUT", url)
    }

    pub fn delete(url: &str) -> Self {
        Self::new("DELETE", url)
    }

    #[must_use]
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// A JSON body, with `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, body: &T) -> Result<Self, Error> {
        let bytes = serde_json::to_vec(body)?;
        Ok(self.header("content-type", "application/json").body(bytes))
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, Error> {
        let url = Url::parse(&self.url)?;
        let fields = wasi::Fields::new();
        for (name, value) in &self.headers {
            fields
                .append(name, value.as_bytes())
                .map_err(|e| Error::new("invalid-input", format!("header {name}: {e:?}")))?;
        }
        let request = wasi::OutgoingRequest::new(fields);
        let method = match self.method.as_str() {
            "GET" => wasi::Method::Get,
            "POST" => wasi::Method::Post,
            "PUT" => wasi::Method::Put,
            "DELETE" => wasi::Method::Delete,
            "PATCH" => wasi::Method::Patch,
            "HEAD" => wasi::Method::Head,
            "OPTIONS" => wasi::Method::Options,
            other => wasi::Method::Other(other.to_owned()),
        };
        let invalid = |what: &str| Error::new("invalid-input", format!("{what} of {}", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&if url.https {
                wasi::Scheme::Https
            } else {
                wasi::Scheme::Http
            }))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(&url.authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(&url.path))
            .map_err(|()| invalid("path"))?;
        let body = request.body().map_err(|()| invalid("body"))?;
        // The request goes out first and its body streams into it.
        let pending = outgoing_handler::handle(request, None).map_err(|e| failed(&self, &e))?;
        {
            let stream = body.write().map_err(|()| invalid("body"))?;
            for chunk in self.body.chunks(CHUNK) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|e| Error::new("http", format!("writing the request body: {e:?}")))?;
            }
        }
        wasi::OutgoingBody::finish(body, None).map_err(|e| failed(&self, &e))?;
        pending.subscribe().block();
        let response = match pending.get() {
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => return Err(failed(&self, &e)),
            Some(Err(())) | None => {
                return Err(Error::new("http", "the response was already taken"));
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| Error::new("http", "the response has no body"))?;
        let stream = incoming
            .stream()
            .map_err(|()| Error::new("http", "the response body is gone"))?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 << 10) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => {
                    return Err(Error::new(
                        "http",
                        format!("reading the response body: {e:?}"),
                    ));
                }
            }
        }
        drop(stream);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

fn failed(request: &Request, e: &wasi::ErrorCode) -> Error {
    match e {
        wasi::ErrorCode::HttpRequestDenied => Error::new(
            "http-denied",
            format!(
                "{} {} was denied: its host is not on the tenant's HTTP allow-list (an \
                 operator adds it with `cerebelum admin tenant update TENANT --allow-http \
                 HOST`), or this is workflow code, which has no network (use a step)",
                request.method, request.url
            ),
        ),
        wasi::ErrorCode::HttpResponseBodySize(limit) => Error::new(
            "http-response-too-large",
            format!(
                "the response to {} {} is larger than the tenant's limit{}",
                request.method,
                request.url,
                limit.map(|l| format!(" of {l} bytes")).unwrap_or_default()
            ),
        ),
        other => Error::new(
            "http",
            format!("{} {} failed: {other:?}", request.method, request.url),
        ),
    }
}

impl Response {
    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Error::new("invalid-output", format!("the body is not UTF-8: {e}")))
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::invalid_output("the response body", &e))
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// This response, or an error of kind `http-status` for 4xx and 5xx.
    pub fn error_for_status(self) -> Result<Self, Error> {
        if self.status >= 400 {
            return Err(Error::new(
                "http-status",
                format!(
                    "the server answered {}: {}",
                    self.status,
                    String::from_utf8_lossy(&self.body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ),
            ));
        }
        Ok(self)
    }
}

/// The parts of an `http://` or `https://` URL a request needs.
#[derive(Debug, PartialEq)]
struct Url {
    https: bool,
    authority: String,
    /// Path and query, starting with `/`.
    path: String,
}

impl Url {
    fn parse(url: &str) -> Result<Self, Error> {
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(Error::new(
                "invalid-input",
                format!("{url:?} is not an http:// or https:// URL"),
            ));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.is_empty() {
            return Err(Error::new("invalid-input", format!("{url:?} has no host")));
        }
        Ok(Self {
            https,
            authority: authority.to_owned(),
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        assert_eq!(
            Url::parse("https://api.example.com/v2/droplets?page=2#top").unwrap(),
            Url {
                https: true,
                authority: "api.example.com".into(),
                path: "/v2/droplets?page=2".into()
            }
        );
        assert_eq!(
            Url::parse("http://127.0.0.1:8080").unwrap(),
            Url {
                https: false,
                authority: "127.0.0.1:8080".into(),
                path: "/".into()
            }
        );
        assert_eq!(Url::parse("http://h?q=1").unwrap().path, "/?q=1");
        assert!(
            Url::parse("ftp://x")
                .unwrap_err()
                .message
                .contains("http://")
        );
        assert!(
            Url::parse("http:///path")
                .unwrap_err()
                .message
                .contains("no host")
        );
    }

    #[test]
    fn responses_read_as_text_json_and_status() {
        let r = Response {
            status: 404,
            headers: vec![("content-type".into(), "application/json".into())],
            body: br#"{"missing": true}"#.to_vec(),
        };
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.json::<serde_json::Value>().unwrap()["missing"], true);
        assert_eq!(r.text().unwrap(), r#"{"missing": true}"#);
        let e = r.error_for_status().unwrap_err();
        assert_eq!(e.kind, "http-status");
        assert!(e.message.contains("404"), "{e}");
    }
}
