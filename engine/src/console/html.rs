//! HTML building blocks of the console: escaping, the page layout, times
//! and JSON. Pages are plain strings built on the server; the one script
//! (`assets/console.js`) adds confirmations, JSON checks, live updates and
//! local times, and every page works without it except the upload.

use super::session::Viewer;
use std::fmt::Write;

/// `text` escaped for HTML text and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

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
pub fn time(ms: i64) -> String {
    format!("<time data-ms=\"{ms}\">{}</time>", utc(ms))
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A duration in ms as short text: `820 ms`, `3.4 s`, `2 min 5 s`, `3 h 2 min`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// Longest JSON text shown whole; longer values are cut (the API and
/// `cerebelum journal --json` give them whole).
const MAX_JSON_CHARS: usize = 20_000;

/// A JSON value, pretty-printed, in a `<pre>`.
pub fn json(value: &serde_json::Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    if text.len() > MAX_JSON_CHARS {
        let mut cut = MAX_JSON_CHARS;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… (cut; `cerebelum journal ID --json` has all of it)");
    }
    format!("<pre class=\"json\">{}</pre>", esc(&text))
}

/// A status as a coloured badge.
pub fn badge(status: &str) -> String {
    format!(
        "<span class=\"badge status-{0}\" data-status=\"{0}\">{0}</span>",
        esc(status)
    )
}

/// The hidden field of a form's CSRF token.
pub fn csrf_field(viewer: &Viewer) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&viewer.csrf)
    )
}

/// Which part of the console a page belongs to, for the menu.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Executions,
    Packages,
    Tenant,
    Audit,
    None,
}

/// A whole page: the menu (when signed in), `body`, the script.
pub fn layout(title: &str, section: Section, viewer: Option<&Viewer>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Cerebelum</title>\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\
         <script src=\"/assets/console.js\" defer></script></head><body>\
         <header><a class=\"brand\" href=\"/executions\">Cerebelum</a>",
        esc(title)
    );
    if let Some(viewer) = viewer {
        out.push_str("<nav>");
        let sections: &[_] = match viewer.tenant {
            Some(_) => &[
                (Section::Executions, "/executions", "Executions"),
                (Section::Packages, "/packages", "Packages"),
                (Section::Tenant, "/tenant", "Tenant"),
                (Section::Audit, "/audit", "Audit"),
            ],
            None => &[
                (Section::Executions, "/executions", "Executions"),
                (Section::Tenant, "/tenant", "Tenants and nodes"),
                (Section::Audit, "/audit", "Audit"),
            ],
        };
        for &(s, href, label) in sections {
            let class = if s == section { " class=\"here\"" } else { "" };
            let _ = write!(out, "<a href=\"{href}\"{class}>{label}</a>");
        }
        let _ = write!(
            out,
            "</nav><form class=\"signout\" method=\"post\" action=\"/logout\">{}\
             <span class=\"who\">{} · key {}</span>\
             <button type=\"submit\">Sign out</button></form>",
            csrf_field(viewer),
            viewer.tenant.as_ref().map_or_else(
                || "<b id=\"tenant\">operator</b> (every tenant)".to_owned(),
                |t| format!("tenant <b id=\"tenant\">{}</b>", esc(&t.name))
            ),
            esc(&viewer.key_id)
        );
    }
    let _ = write!(out, "</header><main>{body}</main></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
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
