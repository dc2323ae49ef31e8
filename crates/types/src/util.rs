//! Small helpers shared across layers.

/// `text` cut to at most `max` bytes (at a character boundary), with `...`
/// where it was cut: for messages that quote what a user sent.
pub fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max.saturating_sub(3);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// The most levels of arrays and objects a JSON payload may nest
/// (serde_json's limit: it guards the parser's stack).
pub const MAX_JSON_DEPTH: usize = 128;

/// Why serde_json refused some JSON text, in words that name our limits
/// where one was hit: valid JSON nested deeper than [`MAX_JSON_DEPTH`], or
/// a number beyond a 64-bit float's range, is refused with what to do.
pub fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.starts_with("recursion limit exceeded") {
        format!("{text}: a payload may nest at most {MAX_JSON_DEPTH} levels of arrays and objects")
    } else if text.starts_with("number out of range") {
        format!(
            "{text}: a number must fit a 64-bit float (at most about 1.8e308, 17 significant \
             digits kept); send a longer one as a string"
        )
    } else {
        text
    }
}

/// A fresh id with a prefix, e.g. `ex_019ac4f3e2a1` + 16 random hex
/// digits: the creation time in milliseconds (12 hex digits, as in a
/// UUIDv7), then 64 random bits.
///
/// Ids made together sort together. Rows keyed by an execution id (its
/// journal, its timer) then sit side by side in every key index: the
/// executions started in one burst, which a sleep of the same length
/// makes due in one burst, are swept from a few index pages instead of
/// one page each (`--bench hibernated`), and inserts land on the right
/// edge of each index. The random half keeps ids unique across nodes
/// and processes; an id is no secret (every lookup checks the tenant).
pub fn new_id(prefix: &str) -> String {
    use crate::clock::{Clock, SystemClock};
    timed_id(prefix, SystemClock.now_ms() as u64, random_u64())
}

/// The id [`new_id`] makes at `ms` with random bits `random`.
fn timed_id(prefix: &str, ms: u64, random: u64) -> String {
    format!("{prefix}_{:012x}{random:016x}", ms & 0xffff_ffff_ffff)
}

/// 64 bits that differ between calls, processes and machines (std's
/// randomly keyed SipHash over a counter and the process id).
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.finish()
}

/// A time in milliseconds since the Unix epoch as UTC RFC 3339, to the
/// second (`2026-11-25T17:00:00Z`).
/// A time a person typed, as ms since the epoch, read as UTC unless it
/// says otherwise: `2026-11-26T10:00` (a browser's `datetime-local`),
/// with seconds, with a space for the `T`, an RFC 3339 time
/// (`2026-11-26T10:00:00+01:00`), or a date alone (its midnight).
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc().timestamp_millis());
        }
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A time as people read it in a table: `2026-11-26 10:40:02` (UTC, to
/// the second).
pub fn datetime(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// A time of day to the millisecond: `10:40:02.123` (UTC).
pub fn time_of_day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%H:%M:%S%.3f").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_their_creation_time_and_never_repeat() {
        let early = timed_id("ex", 1_764_000_000_000, u64::MAX);
        let late = timed_id("ex", 1_764_000_000_001, 0);
        assert!(early < late, "{early} sorts after {late}");
        assert_eq!(early, "ex_019ab697e800ffffffffffffffff");
        let first = new_id("ex");
        let burst: std::collections::HashSet<String> = (0..100_000).map(|_| new_id("ex")).collect();
        assert_eq!(burst.len(), 100_000, "an id repeated within a burst");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let after = new_id("ex");
        assert!(first < after, "{first} was made before {after}");
        assert!(
            burst
                .iter()
                .all(|id| id.len() == 31 && id[3..].bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn long_text_is_cut_at_a_character_boundary() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("abcdefghijkl", 8), "abcde...");
        assert_eq!(shorten("ééééé", 6), "é...");
    }

    #[test]
    fn times_people_type_are_read_as_utc_unless_they_say() {
        let ten = 1_795_687_200_000; // 2026-11-26T10:00:00Z
        assert_eq!(parse_time("2026-11-26T10:00"), Some(ten));
        assert_eq!(parse_time(" 2026-11-26 10:00:30 "), Some(ten + 30_000));
        assert_eq!(parse_time("2026-11-26T11:00:00+01:00"), Some(ten));
        assert_eq!(parse_time("2026-11-26"), Some(ten - 10 * 3_600_000));
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn utc_is_rfc3339_to_the_second() {
        assert_eq!(super::utc(1_764_090_000_123), "2025-11-25T17:00:00Z");
        assert_eq!(super::datetime(1_764_090_000_123), "2025-11-25 17:00:00");
        assert_eq!(super::time_of_day(1_764_090_000_123), "17:00:00.123");
    }

    /// A float in a user's value (a Python step's `time.time()`, a random
    /// number) reaches the journal and the client bit for bit: the JSON
    /// parser rounds correctly (`float_roundtrip`), where its default fast
    /// path can be one unit in the last place off.
    #[test]
    fn json_floats_survive_a_parse_and_print_unchanged() {
        for text in [
            "1795730797.3830001",
            "0.13957968262236053",
            "2.2250738585072014e-308",
            "0.30000000000000004",
        ] {
            let exact: f64 = text.parse().unwrap();
            let value: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(value.as_f64(), Some(exact), "{text}");
            let back: serde_json::Value = serde_json::from_str(&value.to_string()).unwrap();
            assert_eq!(back.as_f64(), Some(exact), "{text} printed as {value}");
        }
    }
}
