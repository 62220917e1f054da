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

#[cfg(test)]
mod tests {
    #[test]
    fn pre_1970_and_truncation() {
        let ft = super::from_unix(-315_619_200, 123_456_789);
        assert_eq!(super::to_unix(ft), (-315_619_200, 123_456_700));
    }
}
