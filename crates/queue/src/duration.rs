//! The one parser for human-written durations (`30s`, `500ms`, `2m`, `1h`, or
//! a bare number of seconds), shared by the worker's settings and `spoolctl`.

use std::time::Duration;

/// The longest duration any spool setting or option accepts (366 days, the
/// longest delay or retention); longer values are refused rather than
/// overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Parses a duration; `None` for anything else (negative, unknown unit, text,
/// longer than [`MAX_DURATION`]). Never panics.
pub fn parse_duration(v: &str) -> Option<Duration> {
    let t = v.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    num.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .filter(|d| *d <= MAX_DURATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_seconds() {
        assert_eq!(parse_duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration(" 2m "), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("8784h"), Some(MAX_DURATION));
        for bad in [
            "soon",
            "-1s",
            "5d",
            "",
            "100000000000000000000",
            "99999999999999h",
            "1e400",
            "367d",
            "18446744073709551615ms",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
