//! HTML building blocks of the console: the page layout, times and JSON.
//! Pages are [maud] templates rendered on the server, which escape every
//! value they insert (text and attribute values alike); markup enters a
//! page only as [`Markup`] built by a template, never as a string. The one
//! script (`assets/console.js`) adds confirmations, JSON checks, live
//! updates and local times, and every page works without it except the
//! upload.

use super::session::Viewer;
use maud::{DOCTYPE, Markup, html};
use std::fmt::Write;

/// `text` escaped for a URL query value.
pub fn query_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A time as UTC text, `2026-11-25 14:03:07`, in a `<time>` element
/// that the script shows in the viewer's own zone.
pub fn time(ms: i64) -> Markup {
    html! { time data-ms=(ms) { (utc(ms)) } }
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub use crate::util::datetime as utc;
pub use crate::util::duration;

/// Longest JSON text shown whole; longer values are cut (the API and
/// `cerebelum journal --json` give them whole).
const MAX_JSON_CHARS: usize = 20_000;

/// A JSON value, pretty-printed, in a `<pre>`.
pub fn json(value: &serde_json::Value) -> Markup {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    if text.len() > MAX_JSON_CHARS {
        let mut cut = MAX_JSON_CHARS;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (cut; `cerebelum journal ID --json` has all of it)");
    }
    html! { pre.json { (text) } }
}

/// A status as a coloured badge.
pub fn badge(status: &str) -> Markup {
    html! { span class={ "badge status-" (status) } data-status=(status) { (status) } }
}

/// The hidden field of a form's CSRF token.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// Which part of the console a page belongs to, for the menu.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Executions,
    Packages,
    Schedules,
    Workers,
    Tenant,
    Audit,
    None,
}

/// A whole page: the menu (when signed in), `body`, the script.
pub fn layout(title: &str, section: Section, viewer: Option<&Viewer>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Cerebelum" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header {
                    a.brand href="/executions" { "Cerebelum" }
                    @if let Some(viewer) = viewer { (menu(section, viewer)) }
                }
                main { (body) }
            }
        }
    }
}

/// The menu of a signed-in viewer, and its sign-out button.
fn menu(section: Section, viewer: &Viewer) -> Markup {
    let sections: &[_] = match viewer.tenant {
        Some(_) => &[
            (Section::Executions, "/executions", "Executions"),
            (Section::Packages, "/packages", "Packages"),
            (Section::Schedules, "/schedules", "Schedules"),
            (Section::Workers, "/workers", "Workers"),
            (Section::Tenant, "/tenant", "Tenant"),
            (Section::Audit, "/audit", "Audit"),
        ],
        None => &[
            (Section::Executions, "/executions", "Executions"),
            (Section::Tenant, "/tenant", "Tenants and nodes"),
            (Section::Audit, "/audit", "Audit"),
        ],
    };
    html! {
        nav {
            @for &(s, href, label) in sections {
                a href=(href) class=[(s == section).then_some("here")] { (label) }
            }
        }
        form.signout method="post" action="/logout" {
            (csrf_field(viewer))
            span.who {
                @match &viewer.tenant {
                    Some(t) => { "tenant " b #tenant { (t.name) } }
                    None => { b #tenant { "operator" } " (every tenant)" }
                }
                " · key " (viewer.key_id)
            }
            button type="submit" { "Sign out" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_in_text_and_attributes() {
        let hostile = "<a href=\"x\">'&'</a>";
        assert_eq!(
            badge(hostile).into_string(),
            "<span class=\"badge status-&lt;a href=&quot;x&quot;&gt;'&amp;'&lt;/a&gt;\" \
             data-status=\"&lt;a href=&quot;x&quot;&gt;'&amp;'&lt;/a&gt;\">\
             &lt;a href=&quot;x&quot;&gt;'&amp;'&lt;/a&gt;</span>"
        );
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_795_000_000_123), "2026-11-18 11:06:40");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(820), "820 ms");
        assert_eq!(duration(3400), "3.4 s");
        assert_eq!(duration(125_000), "2 min 5 s");
        assert_eq!(duration(3 * 3_600_000 + 120_000), "3 h 2 min");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
    }
}
