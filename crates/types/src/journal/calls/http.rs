//! `http`: an outbound request of a step, journaled with its whole answer
//! (secrets redacted), so a replay never sends it again.

use super::*;
use serde::{Deserialize, Serialize};

/// An outbound HTTP request of a step (secrets redacted) and the whole
/// answer it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpCall {
    pub args: HttpRequest,
    pub answer: HttpAnswer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    pub url: String,
    /// `[name, value]` pairs, sorted.
    pub headers: Vec<(String, String)>,
    pub body_sha256: Option<String>,
    pub body_bytes: Option<u64>,
}

/// What a request got: a response, or an error (`denied`, `timeout`,
/// `request-too-large`, `response-too-large`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HttpAnswer {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        /// `utf8` or `hex`.
        encoding: String,
        body: String,
    },
    Error {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
}

/// The host of a URL, without credentials.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let host = &rest[..end];
    host.rsplit_once('@').map_or(host, |(_, h)| h)
}

impl Show for HttpCall {
    fn show(&self, _: &ShowContext<'_>) -> Shown {
        let answer = match &self.answer {
            HttpAnswer::Response { status, .. } => format!("→ {status}"),
            HttpAnswer::Error { error, .. } => format!("→ {error}"),
        };
        Shown {
            row: Some("http"),
            title: format!("{} {} {answer}", self.args.method, host_of(&self.args.url)),
            details: vec![Detail::Code(self.args.url.clone())],
            ..Shown::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_host_of_a_url_has_no_credentials() {
        assert_eq!(host_of("https://api.example.com/v1?q"), "api.example.com");
        assert_eq!(host_of("http://user:pw@h:8080/x"), "h:8080");
        assert_eq!(host_of("h"), "h");
    }
}
