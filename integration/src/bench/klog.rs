//! A Go program's klog lines (`I1207 13:05:12.345678    1234 file.go:32] message`), as
//! kube-router writes them to stderr: their times and the Go durations they print.

use super::log::parse_timestamp;

/// The time of a klog line in Unix seconds, its header read in `year` and UTC (klog writes no
/// year and the machine's local time, which the benchmarks' VM keeps in UTC); `None` when the
/// line has no klog header.
pub fn line_time(line: &str, year: i32) -> Option<f64> {
    let mut chars = line.chars();
    if !matches!(chars.next()?, 'I' | 'W' | 'E' | 'F') {
        return None;
    }
    let rest = chars.as_str();
    let (date, rest) = (rest.get(..4)?, rest.get(4..)?);
    let time = rest.strip_prefix(' ')?.split_whitespace().next()?;
    if !date.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (month, day) = (&date[..2], &date[2..]);
    parse_timestamp(&format!("{year}-{month}-{day}T{time}Z"))
}

/// The calendar year (UTC) of a time in Unix seconds.
pub fn year_of(unix: f64) -> i32 {
    let start = |y: i32| parse_timestamp(&format!("{y:04}-01-01T00:00:00Z")).unwrap_or(f64::MAX);
    let mut year = 1970 + (unix / 31_556_952.0) as i32;
    while year > 1970 && start(year) > unix {
        year -= 1;
    }
    while start(year + 1) <= unix {
        year += 1;
    }
    year
}

/// A Go `time.Duration` as `%v` prints it (`1.5s`, `250.3ms`, `12µs`, `1m2.5s`, `1h0m0s`), in
/// seconds.
pub fn go_duration(text: &str) -> Option<f64> {
    let mut rest = text.trim();
    if rest == "0s" {
        return Some(0.0);
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest.get(..digits)?.parse().ok()?;
        rest = &rest[digits..];
        let (scale, unit) = [
            ("ns", 1e-9),
            ("µs", 1e-6),
            ("us", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ]
        .iter()
        .find(|(unit, _)| rest.starts_with(unit))
        .map(|(unit, scale)| (*scale, *unit))?;
        total += value * scale;
        rest = &rest[unit.len()..];
    }
    Some(total)
}

/// Each line of `log` whose message starts with `prefix`: its time (see [`line_time`]) and
/// the rest of its message after the prefix.
pub fn messages<'a>(log: &'a str, prefix: &str, year: i32) -> Vec<(f64, &'a str)> {
    log.lines()
        .filter_map(|line| {
            let (_, message) = line.split_once("] ")?;
            let rest = message.strip_prefix(prefix)?;
            Some((line_time(line, year)?, rest))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klog_headers_are_read_in_utc_of_the_year_given() {
        let line = "I1207 13:05:12.500000    1234 service_endpoints_sync.go:32] sync ipvs \
                    services took 1.5s";
        let at = line_time(line, 2026).unwrap();
        assert_eq!(Some(at), parse_timestamp("2026-12-07T13:05:12.5Z"));
        assert_eq!(
            line_time("W0101 00:00:00.000000 1 x.go:1] y", 1970),
            Some(0.0)
        );
        assert_eq!(
            line_time("Starting network services controller", 2026),
            None
        );
        assert_eq!(line_time("I12x7 13:05:12.5 1 x.go:1] y", 2026), None);
        let log = format!("{line}\nI1207 13:05:20.000000 1 x.go:1] other\nnot klog\n");
        let found = messages(&log, "sync ipvs services took ", 2026);
        assert_eq!(found, vec![(at, "1.5s")]);
    }

    #[test]
    fn years_of_unix_times() {
        assert_eq!(year_of(0.0), 1970);
        let new_year = parse_timestamp("2027-01-01T00:00:00Z").unwrap();
        assert_eq!(year_of(new_year - 0.5), 2026);
        assert_eq!(year_of(new_year), 2027);
    }

    #[test]
    fn go_durations_in_every_unit() {
        let near = |text: &str, want: f64| {
            let got = go_duration(text).unwrap();
            assert!((got - want).abs() <= want * 1e-12, "{text}: {got}");
        };
        near("1.5s", 1.5);
        near("250ms", 0.25);
        near("12µs", 12e-6);
        near("1m2.5s", 62.5);
        near("1h0m0s", 3600.0);
        assert_eq!(go_duration("0s"), Some(0.0));
        assert_eq!(go_duration("3 apples"), None);
        assert_eq!(go_duration("s"), None);
    }
}
