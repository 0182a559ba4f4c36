//! Times on the command line and in output: RFC 3339 in UTC with
//! milliseconds (`2026-12-05T18:30:00.250Z`), the CIB's precision. One form
//! everywhere (tables and JSON), fixed width, so it sorts as text.

use l45_cib::Timestamp;

use l45_netconf_proto::time::days_from_civil;

/// `t` as RFC 3339 in UTC with milliseconds, e.g. `2026-12-05T18:30:00.250Z`.
pub fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}

fn days_in_month(y: i64, mo: i64) -> i64 {
    match mo {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses a `--at` time: `+30s`, `+5m`, `+2h` (from now), Unix seconds, or
/// RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SSZ` with optional fractional seconds
/// (as the NCO prints times).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let bad = || {
        format!(
            "bad time {s:?}: use +30s, +5m, +2h, unix seconds or YYYY-MM-DDTHH:MM:SS[.sss]Z (UTC)"
        )
    };
    if let Some(rel) = s.strip_prefix('+') {
        let unit_at = rel
            .len()
            .checked_sub(1)
            .filter(|&i| rel.is_char_boundary(i));
        let (n, unit) = rel.split_at(unit_at.ok_or_else(bad)?);
        let n: i64 = n.parse().map_err(|_| bad())?;
        let ms = match unit {
            "s" => n.saturating_mul(1000),
            "m" => n.saturating_mul(60_000),
            "h" => n.saturating_mul(3_600_000),
            _ => return Err(bad()),
        };
        return Ok(Timestamp::now().plus_millis(ms));
    }
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(Timestamp::from_secs(secs));
    }
    let b = s.as_bytes();
    let shape_ok = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[b.len() - 1] == b'Z';
    if !shape_ok {
        return Err(bad());
    }
    let digits = |r: std::ops::Range<usize>| {
        s.get(r)
            .filter(|x| x.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|x| x.parse::<i64>().ok())
            .ok_or_else(bad)
    };
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, se) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    // Optional fraction: ".d…" with 1 to 9 digits, kept to milliseconds.
    let milli = match s.get(19..s.len() - 1).ok_or_else(bad)? {
        "" => 0,
        frac => {
            let f = frac.strip_prefix('.').ok_or_else(bad)?;
            if f.is_empty() || f.len() > 9 || !f.bytes().all(|c| c.is_ascii_digit()) {
                return Err(bad());
            }
            // Digits past the third are dropped (the CIB keeps milliseconds).
            f.bytes()
                .chain(std::iter::repeat(b'0'))
                .take(3)
                .fold(0, |ms, c| ms * 10 + i64::from(c - b'0'))
        }
    };
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || se > 59
    {
        return Err(bad());
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
    Ok(Timestamp::from_secs(secs).plus_millis(milli))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_dates() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            (1_709_208_000_000, "2024-02-29T12:00:00.000Z"),
            (1_795_305_600_000, "2026-11-22T00:00:00.000Z"),
            (1_796_495_400_250, "2026-12-05T18:30:00.250Z"),
            (-2_203_891_200_000, "1900-03-01T00:00:00.000Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(rfc3339(Timestamp(ms)), text, "{ms}");
            assert_eq!(parse_time(text), Ok(Timestamp(ms)), "{text}");
        }
    }

    #[test]
    fn every_day_round_trips() {
        // Each day from 1960 to 2100 at 12:34:56.789.
        for day in -3653..47_482_i64 {
            let t = Timestamp(day * 86_400_000 + 45_296_789);
            assert_eq!(parse_time(&rfc3339(t)), Ok(t), "{}", rfc3339(t));
        }
    }

    #[test]
    fn times_parse() {
        assert_eq!(
            parse_time("1800000000").unwrap(),
            Timestamp::from_secs(1_800_000_000)
        );
        assert_eq!(
            parse_time("2026-11-22T00:00:00Z").unwrap(),
            Timestamp::from_secs(1_795_305_600)
        );
        assert_eq!(
            parse_time("1970-01-01T00:00:00Z").unwrap(),
            Timestamp::from_secs(0)
        );
        assert_eq!(
            parse_time("2026-12-05T18:30:00.25Z").unwrap(),
            Timestamp(1_796_495_400_250)
        );
        assert_eq!(
            parse_time("2024-02-29T12:00:00.000000001Z").unwrap(),
            Timestamp(1_709_208_000_000)
        );
        let rel = parse_time("+2m").unwrap().0 - Timestamp::now().0;
        assert!((119_000..=120_000).contains(&rel), "{rel}");
        for bad in [
            "",
            "+",
            "+5x",
            "+5\u{e9}",
            "2026-11-22T00:00:00\u{e9}Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-22 00:00:00",
            "2026-11-22T00:00:00.Z",
            "2026-11-22T00:00:00,5Z",
            "2026-11-22T00:00:00.1234567890Z",
            "2026-11-22T00:00:00+00:00",
            "2026-11-22T0-:00:00Z",
            "soon",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
