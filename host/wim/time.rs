//! Windows FILETIME: 100-ns ticks since 1601-01-01 UTC.

/// Seconds between 1601-01-01 and 1970-01-01.
const EPOCH_DIFF_SECS: i64 = 11_644_473_600;

/// Unix seconds + nanoseconds → FILETIME (truncating to 100 ns, as wimlib does).
pub fn from_unix(secs: i64, nsecs: i64) -> u64 {
    let ticks = (secs as i128 + EPOCH_DIFF_SECS as i128) * 10_000_000 + (nsecs as i128) / 100;
    ticks.clamp(0, u64::MAX as i128) as u64
}

/// FILETIME → (Unix seconds, nanoseconds).
pub fn to_unix(ft: u64) -> (i64, i64) {
    let secs = (ft / 10_000_000) as i64 - EPOCH_DIFF_SECS;
    let nsecs = ((ft % 10_000_000) * 100) as i64;
    (secs, nsecs)
}

/// Now as FILETIME.
pub fn now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    from_unix(d.as_secs() as i64, d.subsec_nanos() as i64)
}

/// Unix seconds as RFC 3339 in UTC without a fraction
/// (`2024-01-02T03:04:05Z`), for names made from the time.
pub fn rfc3339_utc(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm:
    // eras of 400 years, March-based years so the leap day comes last).
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
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates_across_leap_years_and_centuries() {
        use super::rfc3339_utc;
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_704_164_645), "2024-01-02T03:04:05Z");
        assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
        assert_eq!(rfc3339_utc(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn pre_1970_and_truncation() {
        let ft = super::from_unix(-315_619_200, 123_456_789);
        assert_eq!(super::to_unix(ft), (-315_619_200, 123_456_700));
    }
}
