//! `--expires DURATION|DATE`: a time as the command line gives it, to Unix seconds.

use snaptree_engine::retention::days_from_civil;
use snaptree_engine::{Error, Result};

/// Parses `text` as a duration from `now` (`30m`, `12h`, `7d`, `2w`, `1y`, or a sum:
/// `1d12h`; `s` for seconds), a UTC date (`2027-01-31`, `2027-01-31T18:00`,
/// `2027-01-31T18:00:30Z`, a space instead of the `T`), or `@UNIXSECONDS`.
pub fn parse_expires(text: &str, now: i64) -> Result<i64> {
    let t = text.trim();
    let bad = || {
        Error::InvalidArg(format!(
            "--expires '{}' is neither a duration (7d, 12h, 1d12h) nor a UTC date (2027-01-31[T18:00[:00]][Z]) nor @UNIXSECONDS",
            text.escape_default()
        ))
    };
    if let Some(secs) = t.strip_prefix('@') {
        return secs.parse().map_err(|_| bad());
    }
    if t.len() >= 10 && t.as_bytes()[4] == b'-' {
        return parse_date(t).ok_or_else(bad);
    }
    let mut total: i64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: i64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            'y' => 365 * 86_400,
            _ => return Err(bad()),
        };
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    now.checked_add(total).ok_or_else(bad)
}

fn parse_date(t: &str) -> Option<i64> {
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let days = days_from_civil(y, m, day);
    // A day that does not exist (02-30) comes back as another date: refuse it.
    if snaptree_engine::retention::civil_from_days(days) != (y, m, day) {
        return None;
    }
    let mut secs = 0i64;
    if let Some(time) = time {
        let parts: Vec<&str> = time.split(':').collect();
        if !(2..=3).contains(&parts.len()) {
            return None;
        }
        let h: i64 = parts[0].parse().ok()?;
        let mi: i64 = parts[1].parse().ok()?;
        let s: i64 = match parts.get(2) {
            Some(s) => s.parse().ok()?,
            None => 0,
        };
        if h > 23 || mi > 59 || s > 59 {
            return None;
        }
        secs = h * 3_600 + mi * 60 + s;
    }
    Some(days * 86_400 + secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_dates_and_refusals() {
        assert_eq!(parse_expires("7d", 100).unwrap(), 100 + 7 * 86_400);
        assert_eq!(parse_expires("1d12h", 0).unwrap(), 36 * 3_600);
        assert_eq!(parse_expires("@42", 0).unwrap(), 42);
        assert_eq!(
            parse_expires("2023-11-14T22:13:20Z", 0).unwrap(),
            1_700_000_000
        );
        assert_eq!(parse_expires("2023-11-14", 0).unwrap(), 1_699_920_000);
        for bad in [
            "",
            "7",
            "7x",
            "2023-02-30",
            "2023-11-14T25:00",
            "soon",
            "0d",
        ] {
            let e = parse_expires(bad, 0).unwrap_err();
            assert!(e.to_string().contains("--expires"), "{bad}: {e}");
        }
    }
}
