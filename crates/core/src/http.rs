//! Which outbound HTTP requests a tenant's steps may make.
//!
//! An allow-list entry is `[METHOD ]HOST[:PORT][/PATH]`:
//!
//! - `api.example.com` — any method, any port, any path on that host;
//! - `*.example.com` — any subdomain of example.com (not example.com itself);
//! - `127.0.0.1:8080` — that port only;
//! - `api.example.com/v1/*` — paths under `/v1/` (a trailing `*` is a
//!   prefix; without it the path must match exactly);
//! - `GET api.example.com` — that method only.
//!
//! Everything not allowed is denied; an empty list denies everything.

use crate::error::{Error, Result};

/// A parsed allow-list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllowList {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    method: Option<String>,
    host: String,
    /// `*.example.com` matches subdomains.
    wildcard: bool,
    port: Option<u16>,
    path: Option<PathRule>,
}

#[derive(Debug, Clone, PartialEq)]
enum PathRule {
    Exact(String),
    Prefix(String),
}

impl AllowList {
    /// Parses entries; an error names the entry and says what is wrong.
    pub fn parse(entries: &[String]) -> Result<Self> {
        let rules = entries
            .iter()
            .map(|e| parse_rule(e))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a request with this method to this host, port and path is
    /// allowed.
    pub fn allows(&self, method: &str, host: &str, port: u16, path: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.rules.iter().any(|r| {
            r.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && (if r.wildcard {
                    host.len() > r.host.len() + 1
                        && host.ends_with(&r.host)
                        && host.as_bytes()[host.len() - r.host.len() - 1] == b'.'
                } else {
                    host == r.host
                })
                && r.port.is_none_or(|p| p == port)
                && match &r.path {
                    None => true,
                    Some(PathRule::Exact(p)) => path == p,
                    Some(PathRule::Prefix(p)) => path.starts_with(p.as_str()),
                }
        })
    }
}

fn invalid(entry: &str, why: &str) -> Error {
    Error::InvalidInput(format!(
        "HTTP allow-list entry {entry:?} {why}; use e.g. `api.example.com`, `*.example.com`, \
         `127.0.0.1:8080`, `api.example.com/v1/*` or `GET api.example.com`"
    ))
}

fn parse_rule(entry: &str) -> Result<Rule> {
    let text = entry.trim();
    let (method, target) = match text.split_once(' ') {
        Some((m, rest)) => {
            if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(invalid(entry, "has a method that is not a word"));
            }
            (Some(m.to_ascii_uppercase()), rest.trim())
        }
        None => (None, text),
    };
    if target.contains("://") {
        return Err(invalid(entry, "has a scheme; give the host only"));
    }
    let (authority, path) = match target.find('/') {
        Some(i) => (&target[..i], Some(&target[i..])),
        None => (target, None),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .map_err(|_| invalid(entry, "has a port that is not a number from 0 to 65535"))?;
            (h, Some(port))
        }
        None => (authority, None),
    };
    let (wildcard, host) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(invalid(entry, "has no valid host name"));
    }
    let path = path.map(|p| match p.strip_suffix('*') {
        Some(prefix) => PathRule::Prefix(prefix.to_owned()),
        None => PathRule::Exact(p.to_owned()),
    });
    Ok(Rule {
        method,
        host: host.to_ascii_lowercase(),
        wildcard,
        port,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn hosts_ports_paths_and_methods() {
        let l = list(&[
            "api.example.com",
            "*.cdn.example.com",
            "127.0.0.1:8080",
            "GET status.example.com/v1/*",
            "hooks.example.com/deploy",
        ]);
        assert!(l.allows("POST", "api.example.com", 443, "/x"));
        assert!(l.allows("GET", "API.Example.com.", 80, "/"));
        assert!(!l.allows("GET", "evil-api.example.com", 443, "/"));
        assert!(l.allows("GET", "a.cdn.example.com", 443, "/"));
        assert!(!l.allows("GET", "cdn.example.com", 443, "/"));
        assert!(!l.allows("GET", "xcdn.example.com", 443, "/"));
        assert!(l.allows("GET", "127.0.0.1", 8080, "/anything"));
        assert!(!l.allows("GET", "127.0.0.1", 8081, "/anything"));
        assert!(l.allows("GET", "status.example.com", 443, "/v1/health"));
        assert!(!l.allows("POST", "status.example.com", 443, "/v1/health"));
        assert!(!l.allows("GET", "status.example.com", 443, "/v2/health"));
        assert!(l.allows("POST", "hooks.example.com", 443, "/deploy"));
        assert!(!l.allows("POST", "hooks.example.com", 443, "/deploy/other"));
        assert!(!AllowList::default().allows("GET", "api.example.com", 443, "/"));
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (entry, why) in [
            ("https://api.example.com", "scheme"),
            ("api.example.com:http", "port"),
            ("", "host"),
            ("G3T api.example.com", "method"),
            ("api.exa_mple.com", "host"),
        ] {
            let e = AllowList::parse(&[entry.to_owned()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{entry}: {e}");
        }
    }
}
