//! YANG `date-and-time` (RFC 3339 in UTC) from Unix time, and the civil
//! calendar arithmetic behind it (Howard Hinnant's algorithms), shared by
//! the agent, the NCO and the CIB.

const MS_PER_DAY: i64 = 86_400_000;

/// `unix_ms` as RFC 3339 in UTC: `2026-12-05T18:30:00Z`, or with
/// `millis` `2026-12-05T18:30:00.250Z`.
pub fn date_and_time(unix_ms: i64, millis: bool) -> String {
    let (y, mo, d) = civil_from_days(unix_ms.div_euclid(MS_PER_DAY));
    let in_day = unix_ms.rem_euclid(MS_PER_DAY);
    let (secs, milli) = (in_day / 1000, in_day % 1000);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if millis {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, mo: i64, d: i64) -> i64 {
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400;
    (if mo <= 2 { y + 1 } else { y }, mo, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(date_and_time(0, false), "1970-01-01T00:00:00Z");
        assert_eq!(date_and_time(-1, true), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            date_and_time(951_782_400_000, false),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            date_and_time(1_795_305_600_250, true),
            "2026-11-22T00:00:00.250Z"
        );
    }

    #[test]
    fn days_round_trip() {
        for days in -40_000..60_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
