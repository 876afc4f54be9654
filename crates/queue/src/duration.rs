//! The one parser for human-written durations (`30s`, `500ms`, `2m`, `1h`, or
//! a bare number of seconds), shared by the worker's settings and `spoolctl`.

use std::time::Duration;

/// Parses a duration; `None` for anything else (negative, unknown unit, text).
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
        .map(|n| Duration::from_secs_f64(n * scale))
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
        for bad in ["soon", "-1s", "5d", ""] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
