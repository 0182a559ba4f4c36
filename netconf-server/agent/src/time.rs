//! Times as YANG `date-and-time` (RFC 3339, UTC, whole seconds).

use std::time::SystemTime;

/// RFC 3339 time in UTC with seconds, as yang:date-and-time.
pub fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    l45_netconf_proto::time::date_and_time(ms, false)
}

/// Parses a YANG `date-and-time` (RFC 3339: fraction optional, `Z` or a
/// numeric offset). `None` when it is not one.
pub fn parse_date_and_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = s.get(from..from + len)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (h, mi, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &s[start..i.min(start + 9)];
        nanos = digits.parse::<i64>().ok()? * 10i64.pow(9 - digits.len() as u32);
    }
    let offset_s = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let off = num(i + 1, 2)? * 3600 + num(i + 4, 2)? * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = l45_netconf_proto::time::days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    let secs = u64::try_from(secs).ok()?;
    Some(
        SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(secs)
            + std::time::Duration::from_nanos(nanos as u64),
    )
}

#[cfg(test)]
mod tests {
    use super::{parse_date_and_time, rfc3339};
    use std::time::{Duration, SystemTime};

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600)),
            "2026-11-22T00:00:00Z"
        );
        assert_eq!(
            rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn date_and_time_parses_back() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_305_600);
        assert_eq!(parse_date_and_time("2026-11-22T00:00:00Z"), Some(t));
        assert_eq!(parse_date_and_time("2026-11-22T01:30:00+01:30"), Some(t));
        assert_eq!(
            parse_date_and_time("2026-11-22T00:00:00.25Z"),
            Some(t + Duration::from_millis(250))
        );
        assert_eq!(parse_date_and_time("2026-11-22 00:00:00Z"), None);
        assert_eq!(parse_date_and_time("2026-13-22T00:00:00Z"), None);
        assert_eq!(parse_date_and_time("2026-11-22T00:00:00"), None);
    }
}
