//! A daemon's JSON log (one object per line, as `tracing-subscriber` writes it): its entries,
//! their messages and their timestamps.

use std::path::Path;

use serde_json::Value;

/// Parses `2025-06-12T08:57:55.123456Z` (what tracing-subscriber writes) to Unix seconds.
pub fn parse_timestamp(text: &str) -> Option<f64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let s: f64 = t.next()?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

/// The JSON lines of a log file (lines that are not JSON are skipped; a missing file has
/// none).
pub fn entries(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// An entry's message (empty when it has none).
pub fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or("")
}

/// An entry's time, in Unix seconds (NaN when it has none).
pub fn timestamp(v: &Value) -> f64 {
    v["timestamp"]
        .as_str()
        .and_then(parse_timestamp)
        .unwrap_or(f64::NAN)
}

/// The first entry with this message.
pub fn find<'a>(entries: &'a [Value], text: &str) -> Option<&'a Value> {
    entries.iter().find(|v| message(v) == text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_unix_seconds() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_timestamp("2000-03-01T01:02:03.5Z"),
            Some(951_872_523.5)
        );
        assert_eq!(parse_timestamp("yesterday"), None);
        let entry: Value = serde_json::from_str(
            r#"{"timestamp":"1970-01-02T00:00:00Z","message":"node adopted"}"#,
        )
        .unwrap();
        assert_eq!(timestamp(&entry), 86_400.0);
        assert_eq!(message(&entry), "node adopted");
        assert!(find(std::slice::from_ref(&entry), "node adopted").is_some());
    }
}
