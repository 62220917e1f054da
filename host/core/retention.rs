//! Retention: which snapshots (images) to keep, by restic's `forget` rules.
//!
//! [`decide`] is a pure function: it takes the snapshots of one archive or schedule, a [`Policy`], the
//! time zone whose calendar defines hours, days, weeks, months and years, and the ids that must never be
//! removed, and returns one [`Decision`] per snapshot with every rule that kept it.
//!
//! # The rules (restic's)
//!
//! * Snapshots are sorted newest first. Equal timestamps keep their input order: of two snapshots with
//!   the same time, the one that comes first in the input counts as the newer (restic's stable sort).
//! * The rules are OR-ed: a snapshot is kept if any rule keeps it.
//! * `keep_last n` keeps the `n` newest snapshots.
//! * `keep_hourly`/`keep_daily`/`keep_weekly`/`keep_monthly`/`keep_yearly n` walk the snapshots newest
//!   first and keep the first (newest) snapshot of each bucket they meet (local hour, local calendar
//!   date, ISO 8601 week, month, year), until `n` buckets were kept. Buckets without snapshots do not
//!   count, so `keep_daily 7` keeps seven days that have snapshots, however far apart.
//! * restic's "oldest" rule: when the walk reaches the oldest snapshot and a bucket rule still has
//!   count left, the oldest snapshot is kept too, even if its bucket was already used (reason
//!   `"oldest daily 2026-03-01"`). This keeps the history as long as the policy allows.
//! * `keep_within d` keeps every snapshot strictly newer than `newest - d`, where `newest` is the
//!   newest snapshot's time (not the current time) and `d` is subtracted on the calendar of `zone` the
//!   way restic (Go's `AddDate`) does it: see [`KeepWithin`].
//! * The newest snapshot is always kept (reason `"newest"`); restic's rules keep it anyway for any
//!   non-empty policy, the explicit reason makes it visible.
//! * An empty policy is an error ([`RetentionError::EmptyPolicy`]) instead of "remove everything".
//! * A count of `Some(0)` means the rule is off, as restic's `0`. restic's `unlimited` is `u32::MAX`.
//!
//! # Calendar buckets and daylight saving time
//!
//! Buckets are computed from the local wall-clock time in `zone`, so they follow DST:
//!
//! * A day is the local calendar date: a 23-hour (spring forward) or 25-hour (fall back) day is one
//!   day bucket.
//! * An hour bucket is the local wall-clock hour (date + hour). The spring-forward gap hour simply has
//!   no bucket. In the autumn fold the repeated local hour (e.g. 02:00–02:59 in Europe/Berlin, which
//!   occurs once in CEST and once in CET) is ONE bucket spanning two real hours: only the newest
//!   snapshot of both occurrences is kept by `keep_hourly`. This is what restic does (it buckets by
//!   the local `YYYYMMDDHH`), and it keeps "one per hour on the clock" rather than "one per 60 real
//!   minutes".
//! * A bucket counts once even if the local clock were to leave and re-enter it (possible only in
//!   zones with a fold that crosses an hour or day boundary); restic would count such a bucket twice.
//!
//! # Protected snapshots
//!
//! Snapshots whose id is in `protected` (for example the image a running backup is writing) are kept
//! with the single reason `"protected"` and take no part in the rules: they use up no `keep_last` slot
//! and no bucket, and they are not the "newest" that `keep_within` counts from. So a running backup
//! that later fails can never push a complete backup out of the policy. restic's oldest rule applies to
//! the oldest unprotected snapshot. Ids in `protected` that match no snapshot are ignored.
//!
//! # Differences from restic
//!
//! * restic ignores snapshots dated in the future when it picks the newest snapshot for
//!   `--keep-within`; [`decide`] has no clock and uses the newest snapshot it is given. Callers that
//!   fear clock skew can filter or protect future-dated snapshots.
//! * The `keep-within-hourly/daily/…` and `keep-tag` options are not implemented.
//! * [`parse_duration`] is stricter: it rejects negative numbers, a unit given twice, and a zero
//!   duration, where restic silently accepts them.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// One snapshot (backup image) that retention may keep or remove.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// The snapshot's id, echoed in its [`Decision`] and matched against the `protected` ids.
    pub id: String,
    /// When the snapshot was taken.
    pub time: DateTime<Utc>,
}

/// A restic-style retention policy. Every field that is `None` (or a count of `Some(0)`) is off.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Keep the `n` newest snapshots.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` local hours that have snapshots.
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` local calendar days that have snapshots.
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` ISO 8601 weeks that have snapshots.
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` calendar months that have snapshots.
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last `n` calendar years that have snapshots.
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot newer than this span before the newest snapshot.
    pub keep_within: Option<KeepWithin>,
}

impl Policy {
    /// True if no rule is on: every count is `None` or `Some(0)` and `keep_within` is `None` or zero.
    /// [`decide`] refuses such a policy.
    pub fn is_empty(&self) -> bool {
        let counts = [
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        ];
        counts.iter().all(|c| c.unwrap_or(0) == 0) && self.keep_within.is_none_or(|w| w.is_zero())
    }
}

/// A restic `--keep-within` span: years, months, days and hours, applied on the calendar.
///
/// restic subtracts it from the newest snapshot's time with Go's `AddDate(-years, -months, -days)`
/// followed by `Add(-hours)`, so `1m` is one calendar month and `1y` one calendar year, not 30 or 365
/// days. [`KeepWithin::cutoff`] does the same on the wall clock of the policy's zone:
///
/// * years and months are subtracted from the year and month; a day that does not exist in the
///   resulting month overflows into the next one, as in Go (31 March minus `1m` is "31 February",
///   which is 3 March, or 2 March in a leap year);
/// * then the days are subtracted from the local date (so `1d` across a DST change is 23 or 25 real
///   hours, like restic on a machine in that zone);
/// * the resulting local wall time is turned into an instant: a time in a spring-forward gap is moved
///   forward by the gap's length (as Go does in zones east of UTC), an ambiguous time in an autumn fold
///   takes the earlier instant (which keeps more);
/// * finally the hours are subtracted as real elapsed hours.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KeepWithin {
    /// Calendar years (`y`).
    pub years: u32,
    /// Calendar months (`m`).
    pub months: u32,
    /// Calendar days (`d`).
    pub days: u32,
    /// Elapsed hours (`h`).
    pub hours: u32,
}

impl KeepWithin {
    /// True if every part is zero (the rule is off).
    pub fn is_zero(&self) -> bool {
        self.years == 0 && self.months == 0 && self.days == 0 && self.hours == 0
    }

    /// The instant this span before `newest`, computed on the calendar of `zone` (see the type's
    /// documentation). `None` if the result falls outside the representable range, which callers treat
    /// as "no lower bound".
    pub fn cutoff(&self, newest: DateTime<Utc>, zone: Tz) -> Option<DateTime<Utc>> {
        let local = local_wall_time(newest, zone)?;
        let total_months = i64::from(local.year()) * 12 + i64::from(local.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = i32::try_from(total_months.div_euclid(12)).ok()?;
        let month0 = u32::try_from(total_months.rem_euclid(12)).ok()?;
        let first_of_month = NaiveDate::from_ymd_opt(year, month0 + 1, 1)?;
        // Go's normalisation: the day of month overflows into the following month.
        let date = first_of_month
            .checked_add_days(Days::new(u64::from(local.day() - 1)))?
            .checked_sub_days(Days::new(u64::from(self.days)))?;
        let instant = resolve_local(zone, date.and_time(local.time()))?;
        instant.checked_sub_signed(chrono::Duration::try_hours(i64::from(self.hours))?)
    }
}

impl fmt::Display for KeepWithin {
    /// Canonical restic form, largest unit first and zero parts left out: `1y2m3d4h`, `7d`; `0h` if zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for KeepWithin {
    type Err = RetentionError;

    /// Same as [`parse_duration`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s)
    }
}

/// The verdict for one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The snapshot's id.
    pub id: String,
    /// The snapshot's time.
    pub time: DateTime<Utc>,
    /// True to keep the snapshot, false to remove it.
    pub keep: bool,
    /// Every rule that kept it, empty when `keep` is false. One or more of: `"protected"`, `"newest"`,
    /// `"last"`, `"hourly 2026-03-29 01:00"`, `"daily 2026-03-29"`, `"weekly 2020-W53"`,
    /// `"monthly 2026-03"`, `"yearly 2026"`, the same prefixed with `"oldest "` for restic's oldest
    /// rule, and `"within 7d"`; in that order. Bucket labels are in the policy's zone.
    pub reasons: Vec<String>,
}

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    /// The policy has no rule, so applying it would remove every snapshot.
    #[error(
        "the retention policy is empty: set at least one of keep-last, keep-hourly, keep-daily, keep-weekly, \
         keep-monthly, keep-yearly or keep-within (refusing to remove every snapshot)"
    )]
    EmptyPolicy,
    /// A `keep-within` duration could not be parsed.
    #[error(
        "invalid duration {input:?}: {reason} (expected numbers with units y, m, d, h such as \"1y2m3d4h\", \
         \"30d\" or \"12h\")"
    )]
    InvalidDuration {
        /// The text as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Parses a restic `--keep-within` duration such as `1y2m3d4h`, `30d` or `12h`.
///
/// Units: `y` calendar years, `m` calendar months (not minutes), `d` days, `h` hours; each a decimal
/// number followed by its unit, in any order, each unit at most once, surrounding whitespace ignored.
/// See [`KeepWithin`] for how the span is applied.
///
/// # Errors
///
/// [`RetentionError::InvalidDuration`], naming the input and the fault, for: empty text, a missing
/// number or unit, an unknown unit, a sign, a unit given twice, a number above `u32::MAX`, a zero span.
pub fn parse_duration(s: &str) -> Result<KeepWithin, RetentionError> {
    let err = |reason: String| RetentionError::InvalidDuration {
        input: s.to_string(),
        reason,
    };
    let text = s.trim();
    if text.is_empty() {
        return Err(err("it is empty".to_string()));
    }
    let mut out = KeepWithin::default();
    let mut seen = [false; 4];
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            let c = rest.chars().next().unwrap_or(' ');
            return Err(err(format!("expected a number at {c:?}")));
        }
        let (number, tail) = rest.split_at(digits);
        let value: u32 = number
            .parse()
            .map_err(|_| err(format!("number {number} is too large")))?;
        let mut chars = tail.chars();
        let (slot, part) = match chars.next() {
            Some('y') => (0, &mut out.years),
            Some('m') => (1, &mut out.months),
            Some('d') => (2, &mut out.days),
            Some('h') => (3, &mut out.hours),
            Some(c) => return Err(err(format!("unknown unit {c:?} after {number}"))),
            None => return Err(err(format!("no unit after {number}"))),
        };
        if seen[slot] {
            return Err(err(format!("unit {:?} given twice", ['y', 'm', 'd', 'h'][slot])));
        }
        seen[slot] = true;
        *part = value;
        rest = chars.as_str();
    }
    if out.is_zero() {
        return Err(err("the duration is zero".to_string()));
    }
    Ok(out)
}

/// Applies `policy` to `snapshots` and returns one decision per snapshot, newest first (equal times in
/// input order).
///
/// `zone` is the calendar for the hour/day/week/month/year buckets and for `keep_within`'s calendar
/// arithmetic. Snapshots whose id is in `protected` are always kept and take no part in the rules. See
/// the module documentation for the exact rules. Never panics.
///
/// # Errors
///
/// [`RetentionError::EmptyPolicy`] if [`Policy::is_empty`], checked even when `snapshots` is empty.
pub fn decide(
    snapshots: &[Snapshot],
    policy: &Policy,
    zone: Tz,
    protected: &[String],
) -> Result<Vec<Decision>, RetentionError> {
    if policy.is_empty() {
        return Err(RetentionError::EmptyPolicy);
    }
    let protected: HashSet<&str> = protected.iter().map(String::as_str).collect();

    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    // `sort_by` is stable: equal times keep their input order.
    order.sort_by(|&a, &b| snapshots[b].time.cmp(&snapshots[a].time));

    let ruled: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| !protected.contains(snapshots[i].id.as_str()))
        .collect();

    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snapshots.len()];
    for &i in &order {
        if protected.contains(snapshots[i].id.as_str()) {
            reasons[i].push("protected".to_string());
        }
    }

    let within = policy.keep_within.filter(|w| !w.is_zero());
    let cutoff = match (within, ruled.first()) {
        (Some(w), Some(&newest)) => w.cutoff(snapshots[newest].time, zone),
        _ => None,
    };

    let mut last_left = policy.keep_last.unwrap_or(0);
    let mut buckets: Vec<BucketRule> = [
        (policy.keep_hourly, Unit::Hour),
        (policy.keep_daily, Unit::Day),
        (policy.keep_weekly, Unit::Week),
        (policy.keep_monthly, Unit::Month),
        (policy.keep_yearly, Unit::Year),
    ]
    .into_iter()
    .filter_map(|(count, unit)| {
        count.filter(|&n| n > 0).map(|left| BucketRule {
            unit,
            left,
            seen: HashSet::new(),
        })
    })
    .collect();

    for (pos, &i) in ruled.iter().enumerate() {
        let snap = &snapshots[i];
        let is_oldest = pos + 1 == ruled.len();
        let why = &mut reasons[i];
        if pos == 0 {
            why.push("newest".to_string());
        }
        if last_left > 0 {
            last_left -= 1;
            why.push("last".to_string());
        }
        // Only within hours of chrono's year ±262143 limits can the wall time be unrepresentable; such a
        // snapshot is bucketed by its UTC time.
        let local = local_wall_time(snap.time, zone).unwrap_or(snap.time.naive_utc());
        for rule in &mut buckets {
            if rule.left == 0 {
                continue;
            }
            let (key, label) = rule.unit.bucket(&local);
            if rule.seen.insert(key) {
                rule.left -= 1;
                why.push(label);
            } else if is_oldest {
                rule.left -= 1;
                why.push(format!("oldest {label}"));
            }
        }
        if let Some(w) = within {
            // `None` cutoff: the span reaches before the representable range, so everything is within.
            if cutoff.is_none_or(|c| snap.time > c) {
                why.push(format!("within {w}"));
            }
        }
    }

    Ok(order
        .into_iter()
        .map(|i| {
            let why = std::mem::take(&mut reasons[i]);
            Decision {
                id: snapshots[i].id.clone(),
                time: snapshots[i].time,
                keep: !why.is_empty(),
                reasons: why,
            }
        })
        .collect())
}

/// A calendar bucket size.
#[derive(Clone, Copy, Debug)]
enum Unit {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    /// The bucket of a local wall time: a key unique per bucket and a label for the reason.
    fn bucket(self, t: &NaiveDateTime) -> (i64, String) {
        let (y, m, d, h) = (
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
            i64::from(t.hour()),
        );
        match self {
            Unit::Hour => (
                ((y * 100 + m) * 100 + d) * 100 + h,
                format!("hourly {} {:02}:00", t.format("%Y-%m-%d"), t.hour()),
            ),
            Unit::Day => ((y * 100 + m) * 100 + d, format!("daily {}", t.format("%Y-%m-%d"))),
            Unit::Week => {
                let w = t.iso_week();
                (
                    i64::from(w.year()) * 100 + i64::from(w.week()),
                    format!("weekly {}-W{:02}", w.year(), w.week()),
                )
            }
            Unit::Month => (y * 100 + m, format!("monthly {}", t.format("%Y-%m"))),
            Unit::Year => (y, format!("yearly {}", t.year())),
        }
    }
}

/// The running state of one bucket rule.
struct BucketRule {
    unit: Unit,
    left: u32,
    seen: HashSet<i64>,
}

/// The wall time of `t` in `zone`, or `None` if it is outside chrono's range (`naive_local` would panic).
fn local_wall_time(t: DateTime<Utc>, zone: Tz) -> Option<NaiveDateTime> {
    let offset = zone.offset_from_utc_datetime(&t.naive_utc()).fix();
    t.naive_utc().checked_add_offset(offset)
}

/// Turns a local wall time in `zone` into an instant: gap times move forward by the gap's length,
/// fold times take the earlier instant.
fn resolve_local(zone: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    match zone.from_local_datetime(&naive) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
        LocalResult::None => {
            // Interpret the wall time with the offset in force before the gap (a day earlier).
            let before = naive.checked_sub_days(Days::new(1))?;
            let offset = zone.offset_from_utc_datetime(&before).fix();
            let utc = naive.checked_sub_signed(chrono::Duration::try_seconds(i64::from(offset.local_minus_utc()))?)?;
            Some(Utc.from_utc_datetime(&utc))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test timestamp")
            .with_timezone(&Utc)
    }

    fn snap(id: &str, time: &str) -> Snapshot {
        Snapshot {
            id: id.to_string(),
            time: t(time),
        }
    }

    /// Snapshots whose id is their UTC time, e.g. `2026-03-29T01:30:00Z`.
    fn at(times: &[&str]) -> Vec<Snapshot> {
        times.iter().map(|s| snap(s, s)).collect()
    }

    fn tz(name: &str) -> Tz {
        name.parse().expect("test zone")
    }

    fn run(snaps: &[Snapshot], policy: &Policy, zone: &str) -> Vec<Decision> {
        decide(snaps, policy, tz(zone), &[]).expect("policy is valid")
    }

    fn kept(ds: &[Decision]) -> Vec<&str> {
        ds.iter().filter(|d| d.keep).map(|d| d.id.as_str()).collect()
    }

    fn removed(ds: &[Decision]) -> Vec<&str> {
        ds.iter().filter(|d| !d.keep).map(|d| d.id.as_str()).collect()
    }

    fn reasons<'a>(ds: &'a [Decision], id: &str) -> Vec<&'a str> {
        ds.iter()
            .find(|d| d.id == id)
            .expect("id present")
            .reasons
            .iter()
            .map(String::as_str)
            .collect()
    }

    fn within(s: &str) -> Option<KeepWithin> {
        Some(parse_duration(s).expect("test duration"))
    }

    // ---- policy validation ----

    #[test]
    fn empty_policy_is_an_error_naming_the_options() {
        let snaps = at(&["2026-01-01T00:00:00Z"]);
        let err = decide(&snaps, &Policy::default(), Tz::UTC, &[]).unwrap_err();
        assert_eq!(err, RetentionError::EmptyPolicy);
        let msg = err.to_string();
        for option in [
            "keep-last",
            "keep-hourly",
            "keep-daily",
            "keep-weekly",
            "keep-monthly",
            "keep-yearly",
            "keep-within",
        ] {
            assert!(msg.contains(option), "{msg}");
        }
        // Zero counts are "off", like restic's 0.
        let zeros = Policy {
            keep_last: Some(0),
            keep_hourly: Some(0),
            keep_daily: Some(0),
            keep_weekly: Some(0),
            keep_monthly: Some(0),
            keep_yearly: Some(0),
            keep_within: Some(KeepWithin::default()),
        };
        assert!(zeros.is_empty());
        assert_eq!(decide(&snaps, &zeros, Tz::UTC, &[]), Err(RetentionError::EmptyPolicy));
        // Checked even without snapshots.
        assert_eq!(
            decide(&[], &Policy::default(), Tz::UTC, &[]),
            Err(RetentionError::EmptyPolicy)
        );
    }

    #[test]
    fn is_empty_false_for_any_rule() {
        assert!(!Policy {
            keep_last: Some(1),
            ..Policy::default()
        }
        .is_empty());
        assert!(!Policy {
            keep_yearly: Some(3),
            ..Policy::default()
        }
        .is_empty());
        assert!(!Policy {
            keep_within: within("1h"),
            ..Policy::default()
        }
        .is_empty());
    }

    #[test]
    fn no_snapshots_no_decisions() {
        let p = Policy {
            keep_last: Some(3),
            ..Policy::default()
        };
        assert_eq!(decide(&[], &p, Tz::UTC, &[]), Ok(vec![]));
    }

    // ---- keep-last ----

    #[test]
    fn keep_last_keeps_the_n_newest_and_sorts_newest_first() {
        // Input deliberately unsorted.
        let snaps = vec![
            snap("c", "2026-01-03T00:00:00Z"),
            snap("a", "2026-01-01T00:00:00Z"),
            snap("e", "2026-01-05T00:00:00Z"),
            snap("b", "2026-01-02T00:00:00Z"),
            snap("d", "2026-01-04T00:00:00Z"),
        ];
        let ds = run(
            &snaps,
            &Policy {
                keep_last: Some(2),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(
            ds.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["e", "d", "c", "b", "a"]
        );
        assert_eq!(kept(&ds), ["e", "d"]);
        assert_eq!(reasons(&ds, "e"), ["newest", "last"]);
        assert_eq!(reasons(&ds, "d"), ["last"]);
        assert!(reasons(&ds, "c").is_empty());
        assert_eq!(ds[0].time, t("2026-01-05T00:00:00Z"));
    }

    #[test]
    fn keep_last_larger_than_the_list_keeps_all_without_oldest_reason() {
        let snaps = at(&["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"]);
        let ds = run(
            &snaps,
            &Policy {
                keep_last: Some(10),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z"]);
        assert_eq!(reasons(&ds, "2026-01-01T00:00:00Z"), ["last"]);
    }

    // ---- calendar buckets ----

    /// Two snapshots on 1 March, one on 2 March, none on 3 March, two on 4 March, one on 5 March.
    fn days_with_a_gap() -> Vec<Snapshot> {
        vec![
            snap("d1-10", "2026-03-01T10:00:00Z"),
            snap("d1-18", "2026-03-01T18:00:00Z"),
            snap("d2-09", "2026-03-02T09:00:00Z"),
            snap("d4-12", "2026-03-04T12:00:00Z"),
            snap("d4-20", "2026-03-04T20:00:00Z"),
            snap("d5-08", "2026-03-05T08:00:00Z"),
        ]
    }

    #[test]
    fn keep_daily_counts_only_days_that_have_snapshots() {
        let ds = run(
            &days_with_a_gap(),
            &Policy {
                keep_daily: Some(3),
                ..Policy::default()
            },
            "UTC",
        );
        // 5, 4 and 2 March (3 March has none and does not count); the newest of each.
        assert_eq!(kept(&ds), ["d5-08", "d4-20", "d2-09"]);
        assert_eq!(removed(&ds), ["d4-12", "d1-18", "d1-10"]);
        assert_eq!(reasons(&ds, "d5-08"), ["newest", "daily 2026-03-05"]);
        assert_eq!(reasons(&ds, "d2-09"), ["daily 2026-03-02"]);
    }

    #[test]
    fn restic_keeps_the_oldest_when_a_bucket_rule_has_count_left() {
        // Four days have snapshots; keep-daily 5 leaves one count when the walk reaches the oldest snapshot,
        // so restic keeps it too although its day already has a kept snapshot.
        let ds = run(
            &days_with_a_gap(),
            &Policy {
                keep_daily: Some(5),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["d5-08", "d4-20", "d2-09", "d1-18", "d1-10"]);
        assert_eq!(removed(&ds), ["d4-12"]);
        assert_eq!(reasons(&ds, "d1-10"), ["oldest daily 2026-03-01"]);
        // With exactly enough days, the count is used up before the oldest: not kept.
        let ds = run(
            &days_with_a_gap(),
            &Policy {
                keep_daily: Some(4),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["d5-08", "d4-20", "d2-09", "d1-18"]);
    }

    #[test]
    fn keep_hourly_in_utc() {
        let snaps = at(&[
            "2026-05-01T10:05:00Z",
            "2026-05-01T10:55:00Z",
            "2026-05-01T11:10:00Z",
            "2026-05-01T13:00:00Z",
            "2026-05-01T13:59:59Z",
        ]);
        let ds = run(
            &snaps,
            &Policy {
                keep_hourly: Some(2),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["2026-05-01T13:59:59Z", "2026-05-01T11:10:00Z"]);
        assert_eq!(reasons(&ds, "2026-05-01T11:10:00Z"), ["hourly 2026-05-01 11:00"]);
        // Unlimited (restic's `unlimited`): one per hour plus the oldest.
        let ds = run(
            &snaps,
            &Policy {
                keep_hourly: Some(u32::MAX),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(
            kept(&ds),
            [
                "2026-05-01T13:59:59Z",
                "2026-05-01T11:10:00Z",
                "2026-05-01T10:55:00Z",
                "2026-05-01T10:05:00Z"
            ]
        );
        assert_eq!(reasons(&ds, "2026-05-01T10:05:00Z"), ["oldest hourly 2026-05-01 10:00"]);
    }

    /// ISO weeks around the end of 2020: 2020 has 53 ISO weeks, and 1–3 January 2021 belong to 2020-W53.
    fn year_end() -> Vec<Snapshot> {
        vec![
            snap("sun-27", "2020-12-27T12:00:00Z"), // Sunday, 2020-W52
            snap("mon-28", "2020-12-28T12:00:00Z"), // Monday, 2020-W53
            snap("thu-31", "2020-12-31T12:00:00Z"), // Thursday, 2020-W53
            snap("fri-01", "2021-01-01T12:00:00Z"), // Friday, 2020-W53
            snap("sun-03", "2021-01-03T12:00:00Z"), // Sunday, 2020-W53
            snap("mon-04", "2021-01-04T12:00:00Z"), // Monday, 2021-W01
            snap("sun-10", "2021-01-10T12:00:00Z"), // Sunday, 2021-W01
        ]
    }

    #[test]
    fn keep_weekly_uses_iso_weeks_across_the_year_end() {
        let ds = run(
            &year_end(),
            &Policy {
                keep_weekly: Some(3),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["sun-10", "sun-03", "sun-27"]);
        assert_eq!(reasons(&ds, "sun-10"), ["newest", "weekly 2021-W01"]);
        assert_eq!(reasons(&ds, "sun-03"), ["weekly 2020-W53"]);
        assert_eq!(reasons(&ds, "sun-27"), ["weekly 2020-W52"]);
    }

    #[test]
    fn keep_monthly_and_yearly_across_the_year_end() {
        let ds = run(
            &year_end(),
            &Policy {
                keep_monthly: Some(2),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["sun-10", "thu-31"]);
        assert_eq!(reasons(&ds, "thu-31"), ["monthly 2020-12"]);
        let ds = run(
            &year_end(),
            &Policy {
                keep_yearly: Some(2),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["sun-10", "thu-31"]);
        assert_eq!(reasons(&ds, "sun-10"), ["newest", "yearly 2021"]);
        assert_eq!(reasons(&ds, "thu-31"), ["yearly 2020"]);
    }

    #[test]
    fn keep_monthly_skips_months_without_snapshots() {
        let snaps = at(&[
            "2025-11-15T00:00:00Z",
            "2025-12-01T00:00:00Z",
            "2025-12-20T00:00:00Z",
            "2026-02-03T00:00:00Z", // no January
            "2026-02-27T00:00:00Z",
            "2026-03-01T00:00:00Z",
        ]);
        let ds = run(
            &snaps,
            &Policy {
                keep_monthly: Some(3),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(
            kept(&ds),
            ["2026-03-01T00:00:00Z", "2026-02-27T00:00:00Z", "2025-12-20T00:00:00Z"]
        );
    }

    #[test]
    fn year_buckets_follow_the_zone() {
        let snaps = vec![
            snap("a", "2021-01-01T03:00:00Z"), // 2020-12-31 22:00 in New York
            snap("b", "2020-12-31T12:00:00Z"),
            snap("c", "2020-06-01T12:00:00Z"),
        ];
        let p = Policy {
            keep_yearly: Some(2),
            ..Policy::default()
        };
        // UTC: 2021 and 2020 use both counts.
        let ds = run(&snaps, &p, "UTC");
        assert_eq!(kept(&ds), ["a", "b"]);
        // New York: all three are in 2020; one count is left at the oldest, so restic keeps it.
        let ds = run(&snaps, &p, "America/New_York");
        assert_eq!(kept(&ds), ["a", "c"]);
        assert_eq!(reasons(&ds, "a"), ["newest", "yearly 2020"]);
        assert_eq!(reasons(&ds, "c"), ["oldest yearly 2020"]);
    }

    // ---- keep-within ----

    #[test]
    fn keep_within_is_relative_to_the_newest_snapshot_and_strict() {
        let snaps = at(&[
            "2020-01-01T00:00:00Z",
            "2026-03-08T12:00:00Z", // exactly 2 days before the newest: not within (restic: After)
            "2026-03-08T12:00:01Z",
            "2026-03-09T00:00:00Z",
            "2026-03-10T12:00:00Z",
        ]);
        let ds = run(
            &snaps,
            &Policy {
                keep_within: within("2d"),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(
            kept(&ds),
            ["2026-03-10T12:00:00Z", "2026-03-09T00:00:00Z", "2026-03-08T12:00:01Z"]
        );
        assert_eq!(reasons(&ds, "2026-03-10T12:00:00Z"), ["newest", "within 2d"]);
        assert_eq!(reasons(&ds, "2026-03-09T00:00:00Z"), ["within 2d"]);
        assert_eq!(removed(&ds), ["2026-03-08T12:00:00Z", "2020-01-01T00:00:00Z"]);
    }

    #[test]
    fn keep_within_hours() {
        let snaps = at(&[
            "2026-03-10T00:00:00Z",
            "2026-03-10T00:00:01Z",
            "2026-03-10T11:00:00Z",
            "2026-03-10T12:00:00Z",
        ]);
        let ds = run(
            &snaps,
            &Policy {
                keep_within: within("12h"),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(
            kept(&ds),
            ["2026-03-10T12:00:00Z", "2026-03-10T11:00:00Z", "2026-03-10T00:00:01Z"]
        );
    }

    #[test]
    fn keep_within_months_and_years_are_calendar_units_with_go_overflow() {
        let w = |s: &str| parse_duration(s).unwrap();
        // 31 March - 1 month = "31 February" = 3 March (2 March in a leap year), as Go's AddDate.
        assert_eq!(
            w("1m").cutoff(t("2026-03-31T12:00:00Z"), Tz::UTC),
            Some(t("2026-03-03T12:00:00Z"))
        );
        assert_eq!(
            w("1m").cutoff(t("2024-03-31T12:00:00Z"), Tz::UTC),
            Some(t("2024-03-02T12:00:00Z"))
        );
        // 29 February - 1 year = "29 February 2023" = 1 March 2023.
        assert_eq!(
            w("1y").cutoff(t("2024-02-29T00:00:00Z"), Tz::UTC),
            Some(t("2023-03-01T00:00:00Z"))
        );
        // Months wrap the year; all units together.
        assert_eq!(
            w("1y2m3d4h").cutoff(t("2026-01-15T10:00:00Z"), Tz::UTC),
            Some(t("2024-11-12T06:00:00Z"))
        );
        assert_eq!(
            w("14m").cutoff(t("2026-02-10T00:00:00Z"), Tz::UTC),
            Some(t("2024-12-10T00:00:00Z"))
        );

        let snaps = at(&["2026-03-03T12:00:00Z", "2026-03-03T12:00:01Z", "2026-03-31T12:00:00Z"]);
        let ds = run(
            &snaps,
            &Policy {
                keep_within: within("1m"),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["2026-03-31T12:00:00Z", "2026-03-03T12:00:01Z"]);
    }

    #[test]
    fn keep_within_days_are_calendar_days_across_dst() {
        let berlin = tz("Europe/Berlin");
        let w = parse_duration("1d").unwrap();
        // 2026-03-29 12:00 CEST minus one calendar day is 2026-03-28 12:00 CET: 23 real hours.
        assert_eq!(
            w.cutoff(t("2026-03-29T10:00:00Z"), berlin),
            Some(t("2026-03-28T11:00:00Z"))
        );
        // 2026-10-25 12:00 CET minus one day is 2026-10-24 12:00 CEST: 25 real hours.
        assert_eq!(
            w.cutoff(t("2026-10-25T11:00:00Z"), berlin),
            Some(t("2026-10-24T10:00:00Z"))
        );
        // Hours are real hours, after the calendar part.
        assert_eq!(
            parse_duration("1d2h")
                .unwrap()
                .cutoff(t("2026-03-29T10:00:00Z"), berlin),
            Some(t("2026-03-28T09:00:00Z"))
        );
        // A cutoff in the spring gap (02:30 on 29 March) moves forward by the gap: 03:30 CEST.
        assert_eq!(
            w.cutoff(t("2026-03-30T00:30:00Z"), berlin),
            Some(t("2026-03-29T01:30:00Z"))
        );
        // A cutoff in the autumn fold (02:30 on 25 October) takes the earlier instant, 02:30 CEST.
        assert_eq!(
            w.cutoff(t("2026-10-26T01:30:00Z"), berlin),
            Some(t("2026-10-25T00:30:00Z"))
        );

        // End to end: 23.5 real hours before the newest is outside "1d" in Berlin on the spring day.
        let snaps = at(&["2026-03-28T10:30:00Z", "2026-03-28T11:30:00Z", "2026-03-29T10:00:00Z"]);
        let p = Policy {
            keep_within: within("1d"),
            ..Policy::default()
        };
        assert_eq!(
            kept(&run(&snaps, &p, "Europe/Berlin")),
            ["2026-03-29T10:00:00Z", "2026-03-28T11:30:00Z"]
        );
        assert_eq!(
            kept(&run(&snaps, &p, "UTC")),
            ["2026-03-29T10:00:00Z", "2026-03-28T11:30:00Z", "2026-03-28T10:30:00Z"]
        );
    }

    // ---- ties, OR, protected ----

    #[test]
    fn identical_timestamps_keep_input_order() {
        let snaps = vec![snap("x", "2026-04-01T00:00:00Z"), snap("y", "2026-04-01T00:00:00Z")];
        let p = Policy {
            keep_last: Some(1),
            ..Policy::default()
        };
        let ds = run(&snaps, &p, "UTC");
        assert_eq!(ds.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(kept(&ds), ["x"]);
        let swapped = vec![snaps[1].clone(), snaps[0].clone()];
        assert_eq!(kept(&run(&swapped, &p, "UTC")), ["y"]);
        // Same bucket: one is kept by keep-daily; with count left, the other as restic's oldest.
        assert_eq!(
            kept(&run(
                &snaps,
                &Policy {
                    keep_daily: Some(1),
                    ..Policy::default()
                },
                "UTC"
            )),
            ["x"]
        );
        let ds = run(
            &snaps,
            &Policy {
                keep_daily: Some(2),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["x", "y"]);
        assert_eq!(reasons(&ds, "y"), ["oldest daily 2026-04-01"]);
        // keep-within keeps both (neither is before the cutoff).
        let ds = run(
            &snaps,
            &Policy {
                keep_within: within("1h"),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["x", "y"]);
    }

    #[test]
    fn rules_are_ored_and_every_reason_is_listed() {
        // Daily snapshots at 12:00 UTC, 1 to 20 January 2026 (Thursday to Tuesday).
        let times: Vec<String> = (1..=20).map(|d| format!("2026-01-{d:02}T12:00:00Z")).collect();
        let snaps = at(&times.iter().map(String::as_str).collect::<Vec<_>>());
        let p = Policy {
            keep_last: Some(2),
            keep_daily: Some(3),
            keep_weekly: Some(3),
            keep_monthly: Some(1),
            keep_within: within("4d"),
            ..Policy::default()
        };
        let ds = run(&snaps, &p, "UTC");
        // last: 20, 19. daily: 20, 19, 18. within 4d of 20 Jan 12:00: after 16 Jan 12:00 -> 17..20.
        // weekly (ISO): 2026-W04 (19-20) -> 20, W03 (12-18) -> 18, W02 (5-11) -> 11. monthly: 20.
        assert_eq!(
            kept(&ds),
            [
                "2026-01-20T12:00:00Z",
                "2026-01-19T12:00:00Z",
                "2026-01-18T12:00:00Z",
                "2026-01-17T12:00:00Z",
                "2026-01-11T12:00:00Z"
            ]
        );
        assert_eq!(
            reasons(&ds, "2026-01-20T12:00:00Z"),
            [
                "newest",
                "last",
                "daily 2026-01-20",
                "weekly 2026-W04",
                "monthly 2026-01",
                "within 4d"
            ]
        );
        assert_eq!(
            reasons(&ds, "2026-01-19T12:00:00Z"),
            ["last", "daily 2026-01-19", "within 4d"]
        );
        assert_eq!(
            reasons(&ds, "2026-01-18T12:00:00Z"),
            ["daily 2026-01-18", "weekly 2026-W03", "within 4d"]
        );
        assert_eq!(reasons(&ds, "2026-01-17T12:00:00Z"), ["within 4d"]);
        assert_eq!(reasons(&ds, "2026-01-11T12:00:00Z"), ["weekly 2026-W02"]);
        assert_eq!(removed(&ds).len(), 15);
    }

    #[test]
    fn protected_snapshots_are_kept_and_take_no_part_in_the_rules() {
        let snaps = vec![
            snap("old", "2026-01-01T00:00:00Z"),
            snap("done", "2026-01-02T00:00:00Z"),
            snap("prev", "2026-01-01T12:00:00Z"),
            snap("running", "2026-01-03T00:00:00Z"),
        ];
        let protected = vec!["running".to_string(), "no-such-id".to_string()];
        let p = Policy {
            keep_last: Some(1),
            keep_within: within("1d"),
            ..Policy::default()
        };
        let ds = decide(&snaps, &p, Tz::UTC, &protected).unwrap();
        assert_eq!(
            ds.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
            ["running", "done", "prev", "old"]
        );
        // The running backup does not use up keep-last 1, and keep-within counts from "done".
        assert_eq!(kept(&ds), ["running", "done", "prev"]);
        assert_eq!(reasons(&ds, "running"), ["protected"]);
        assert_eq!(reasons(&ds, "done"), ["newest", "last", "within 1d"]);
        assert_eq!(reasons(&ds, "prev"), ["within 1d"]);
        // An old protected snapshot is kept too.
        let ds = decide(
            &snaps,
            &Policy {
                keep_last: Some(1),
                ..Policy::default()
            },
            Tz::UTC,
            &["old".to_string()],
        )
        .unwrap();
        assert_eq!(kept(&ds), ["running", "old"]);
        // Everything protected: everything kept, no "newest".
        let all: Vec<String> = snaps.iter().map(|s| s.id.clone()).collect();
        let ds = decide(&snaps, &p, Tz::UTC, &all).unwrap();
        assert!(ds.iter().all(|d| d.keep && d.reasons == ["protected"]));
    }

    #[test]
    fn the_newest_is_always_kept() {
        let snaps = at(&["2026-01-01T00:00:00Z", "2026-01-05T00:00:00Z"]);
        for p in [
            Policy {
                keep_last: Some(1),
                ..Policy::default()
            },
            Policy {
                keep_yearly: Some(1),
                ..Policy::default()
            },
            Policy {
                keep_within: within("1h"),
                ..Policy::default()
            },
        ] {
            let ds = run(&snaps, &p, "Europe/Berlin");
            assert_eq!(kept(&ds), ["2026-01-05T00:00:00Z"], "{p:?}");
            assert_eq!(ds[0].reasons[0], "newest");
        }
    }

    // ---- DST: Europe/Berlin (CET/CEST, switches at 01:00 UTC) ----

    #[test]
    fn berlin_spring_forward_hourly_and_daily() {
        // Every 30 minutes; 2026-03-29 01:00Z: 02:00 CET becomes 03:00 CEST (local 02:xx does not exist).
        let snaps = at(&[
            "2026-03-28T22:00:00Z", // 23:00 CET (28th)
            "2026-03-28T22:30:00Z", // 23:30 CET (28th)
            "2026-03-28T23:00:00Z", // 00:00 CET
            "2026-03-28T23:30:00Z", // 00:30 CET
            "2026-03-29T00:00:00Z", // 01:00 CET
            "2026-03-29T00:30:00Z", // 01:30 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-29T01:30:00Z", // 03:30 CEST
            "2026-03-29T02:00:00Z", // 04:00 CEST
            "2026-03-29T02:30:00Z", // 04:30 CEST
            "2026-03-29T03:00:00Z", // 05:00 CEST
            "2026-03-29T03:30:00Z", // 05:30 CEST
        ]);
        let ds = run(
            &snaps,
            &Policy {
                keep_hourly: Some(4),
                ..Policy::default()
            },
            "Europe/Berlin",
        );
        // Local hours 05, 04, 03, then 01 (02 does not exist).
        assert_eq!(
            kept(&ds),
            [
                "2026-03-29T03:30:00Z",
                "2026-03-29T02:30:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-29T00:30:00Z"
            ]
        );
        assert_eq!(reasons(&ds, "2026-03-29T01:30:00Z"), ["hourly 2026-03-29 03:00"]);
        assert_eq!(reasons(&ds, "2026-03-29T00:30:00Z"), ["hourly 2026-03-29 01:00"]);

        let ds = run(
            &snaps,
            &Policy {
                keep_hourly: Some(100),
                ..Policy::default()
            },
            "Europe/Berlin",
        );
        assert_eq!(
            kept(&ds),
            [
                "2026-03-29T03:30:00Z",
                "2026-03-29T02:30:00Z",
                "2026-03-29T01:30:00Z",
                "2026-03-29T00:30:00Z",
                "2026-03-28T23:30:00Z",
                "2026-03-28T22:30:00Z",
                "2026-03-28T22:00:00Z", // restic's oldest rule
            ]
        );

        let ds = run(
            &snaps,
            &Policy {
                keep_daily: Some(2),
                ..Policy::default()
            },
            "Europe/Berlin",
        );
        assert_eq!(kept(&ds), ["2026-03-29T03:30:00Z", "2026-03-28T22:30:00Z"]);
        assert_eq!(reasons(&ds, "2026-03-28T22:30:00Z"), ["daily 2026-03-28"]);
        // In UTC the same policy splits the days differently.
        let ds = run(
            &snaps,
            &Policy {
                keep_daily: Some(2),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(kept(&ds), ["2026-03-29T03:30:00Z", "2026-03-28T23:30:00Z"]);
    }

    #[test]
    fn berlin_fall_back_repeated_hour_is_one_bucket() {
        // 2026-10-25 01:00Z: 03:00 CEST becomes 02:00 CET, so local 02:00-02:59 happens twice.
        let snaps = at(&[
            "2026-10-24T21:30:00Z", // 23:30 CEST (24th)
            "2026-10-24T23:00:00Z", // 01:00 CEST (25th)
            "2026-10-24T23:30:00Z", // 01:30 CEST
            "2026-10-25T00:00:00Z", // 02:00 CEST (first 02:xx)
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET (second 02:xx)
            "2026-10-25T01:30:00Z", // 02:30 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
            "2026-10-25T02:30:00Z", // 03:30 CET
        ]);
        let ds = run(
            &snaps,
            &Policy {
                keep_hourly: Some(3),
                ..Policy::default()
            },
            "Europe/Berlin",
        );
        // Local hours 03, 02 (both occurrences together), 01.
        assert_eq!(
            kept(&ds),
            ["2026-10-25T02:30:00Z", "2026-10-25T01:30:00Z", "2026-10-24T23:30:00Z"]
        );
        assert_eq!(reasons(&ds, "2026-10-25T01:30:00Z"), ["hourly 2026-10-25 02:00"]);
        // In UTC the two real hours are separate buckets.
        let ds = run(
            &snaps,
            &Policy {
                keep_hourly: Some(3),
                ..Policy::default()
            },
            "UTC",
        );
        assert_eq!(
            kept(&ds),
            ["2026-10-25T02:30:00Z", "2026-10-25T01:30:00Z", "2026-10-25T00:30:00Z"]
        );

        let ds = run(
            &snaps,
            &Policy {
                keep_daily: Some(2),
                ..Policy::default()
            },
            "Europe/Berlin",
        );
        assert_eq!(kept(&ds), ["2026-10-25T02:30:00Z", "2026-10-24T21:30:00Z"]);
    }

    #[test]
    fn berlin_daily_at_half_past_midnight_across_both_changes() {
        // 00:30 local each day, plus one 23:45 local on the change days; UTC offsets differ by season.
        let spring = vec![
            snap("27 00:30", "2026-03-26T23:30:00Z"),
            snap("28 00:30", "2026-03-27T23:30:00Z"),
            snap("29 00:30", "2026-03-28T23:30:00Z"), // CET, 23-hour day
            snap("29 23:45", "2026-03-29T21:45:00Z"), // CEST
            snap("30 00:30", "2026-03-29T22:30:00Z"), // CEST
            snap("31 00:30", "2026-03-30T22:30:00Z"),
        ];
        let ds = run(
            &spring,
            &Policy {
                keep_daily: Some(4),
                ..Policy::default()
            },
            "Europe/Berlin",
        );
        assert_eq!(kept(&ds), ["31 00:30", "30 00:30", "29 23:45", "28 00:30"]);
        assert_eq!(reasons(&ds, "29 23:45"), ["daily 2026-03-29"]);

        let autumn = vec![
            snap("24 00:30", "2026-10-23T22:30:00Z"),
            snap("25 00:30", "2026-10-24T22:30:00Z"), // CEST, 25-hour day
            snap("25 23:45", "2026-10-25T22:45:00Z"), // CET
            snap("26 00:30", "2026-10-25T23:30:00Z"), // CET
        ];
        let ds = run(
            &autumn,
            &Policy {
                keep_daily: Some(2),
                ..Policy::default()
            },
            "Europe/Berlin",
        );
        assert_eq!(kept(&ds), ["26 00:30", "25 23:45"]);
        let ds = run(
            &autumn,
            &Policy {
                keep_daily: Some(3),
                ..Policy::default()
            },
            "Europe/Berlin",
        );
        assert_eq!(kept(&ds), ["26 00:30", "25 23:45", "24 00:30"]);
    }

    // ---- DST: America/New_York (EST -5 / EDT -4) ----

    #[test]
    fn new_york_spring_forward_hourly() {
        // 2026-03-08 07:00Z: 02:00 EST becomes 03:00 EDT.
        let snaps = at(&[
            "2026-03-08T04:00:00Z", // 23:00 EST (7th)
            "2026-03-08T05:00:00Z", // 00:00 EST
            "2026-03-08T06:00:00Z", // 01:00 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT
            "2026-03-08T08:00:00Z", // 04:00 EDT
            "2026-03-08T09:00:00Z", // 05:00 EDT
        ]);
        let ds = run(
            &snaps,
            &Policy {
                keep_hourly: Some(5),
                ..Policy::default()
            },
            "America/New_York",
        );
        assert_eq!(
            kept(&ds),
            [
                "2026-03-08T09:00:00Z",
                "2026-03-08T08:00:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-08T06:00:00Z",
                "2026-03-08T05:00:00Z"
            ]
        );
        assert_eq!(reasons(&ds, "2026-03-08T07:00:00Z"), ["hourly 2026-03-08 03:00"]);
        assert_eq!(reasons(&ds, "2026-03-08T06:00:00Z"), ["hourly 2026-03-08 01:00"]);
        let ds = run(
            &snaps,
            &Policy {
                keep_daily: Some(2),
                ..Policy::default()
            },
            "America/New_York",
        );
        assert_eq!(kept(&ds), ["2026-03-08T09:00:00Z", "2026-03-08T04:00:00Z"]);
        assert_eq!(reasons(&ds, "2026-03-08T04:00:00Z"), ["daily 2026-03-07"]);
    }

    #[test]
    fn new_york_daily_at_half_past_midnight_across_spring_forward() {
        let snaps = vec![
            snap("06 00:30", "2026-03-06T05:30:00Z"),
            snap("07 00:30", "2026-03-07T05:30:00Z"),
            snap("08 00:30", "2026-03-08T05:30:00Z"), // still EST
            snap("08 23:30", "2026-03-09T03:30:00Z"), // EDT, 23-hour day; 9 March in UTC
            snap("09 00:30", "2026-03-09T04:30:00Z"),
            snap("10 00:30", "2026-03-10T04:30:00Z"),
        ];
        let p = Policy {
            keep_daily: Some(3),
            ..Policy::default()
        };
        assert_eq!(
            kept(&run(&snaps, &p, "America/New_York")),
            ["10 00:30", "09 00:30", "08 23:30"]
        );
        // UTC days would keep the 00:30 of the 8th instead.
        assert_eq!(kept(&run(&snaps, &p, "UTC")), ["10 00:30", "09 00:30", "08 00:30"]);
    }

    #[test]
    fn new_york_fall_back_25_hour_day_and_repeated_hour() {
        // 2026-11-01 06:00Z: 02:00 EDT becomes 01:00 EST, so 01:00-01:59 happens twice.
        let snaps = vec![
            snap("31 23:30", "2026-11-01T03:30:00Z"), // EDT (31 October)
            snap("01 00:30", "2026-11-01T04:30:00Z"), // EDT
            snap("01 01:30 EDT", "2026-11-01T05:30:00Z"),
            snap("01 01:30 EST", "2026-11-01T06:30:00Z"),
            snap("01 02:30", "2026-11-01T07:30:00Z"),
            snap("01 23:30", "2026-11-02T04:30:00Z"), // EST, 25-hour day
        ];
        let ds = run(
            &snaps,
            &Policy {
                keep_daily: Some(2),
                ..Policy::default()
            },
            "America/New_York",
        );
        assert_eq!(kept(&ds), ["01 23:30", "31 23:30"]);
        let ds = run(
            &snaps,
            &Policy {
                keep_hourly: Some(4),
                ..Policy::default()
            },
            "America/New_York",
        );
        // Local hours 23, 02, 01 (EDT and EST together), 00.
        assert_eq!(kept(&ds), ["01 23:30", "01 02:30", "01 01:30 EST", "01 00:30"]);
        assert_eq!(removed(&ds), ["01 01:30 EDT", "31 23:30"]);
    }

    // ---- parse_duration ----

    #[test]
    fn parse_duration_accepts_restic_forms() {
        let d = |y, m, dd, h| KeepWithin {
            years: y,
            months: m,
            days: dd,
            hours: h,
        };
        assert_eq!(parse_duration("1y2m3d4h"), Ok(d(1, 2, 3, 4)));
        assert_eq!(parse_duration("30d"), Ok(d(0, 0, 30, 0)));
        assert_eq!(parse_duration("12h"), Ok(d(0, 0, 0, 12)));
        assert_eq!(parse_duration(" 7d "), Ok(d(0, 0, 7, 0)));
        assert_eq!(parse_duration("4h1y"), Ok(d(1, 0, 0, 4)));
        assert_eq!(parse_duration("0y5m"), Ok(d(0, 5, 0, 0)));
        assert_eq!("2y".parse::<KeepWithin>(), Ok(d(2, 0, 0, 0)));
        assert_eq!(parse_duration("4294967295h"), Ok(d(0, 0, 0, u32::MAX)));
    }

    #[test]
    fn parse_duration_display_round_trips() {
        for s in ["1y2m3d4h", "30d", "12h", "5m", "1y1h"] {
            assert_eq!(parse_duration(s).unwrap().to_string(), s);
        }
        assert_eq!(parse_duration("4h1y").unwrap().to_string(), "1y4h");
        assert_eq!(KeepWithin::default().to_string(), "0h");
    }

    #[test]
    fn parse_duration_rejects_bad_input_and_names_it() {
        for bad in [
            "",
            "  ",
            "d",
            "5",
            "5w",
            "5M",
            "-5d",
            "+5d",
            "1d1d",
            "0d",
            "0y0h",
            "99999999999d",
            "1.5d",
            "7 d",
            "7d x",
            "ä",
        ] {
            let err = parse_duration(bad).unwrap_err();
            let RetentionError::InvalidDuration { input, .. } = &err else {
                panic!("wrong error for {bad:?}")
            };
            assert_eq!(input, bad);
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(parse_duration("5w")
            .unwrap_err()
            .to_string()
            .contains("unknown unit 'w'"));
        assert!(parse_duration("1d1d").unwrap_err().to_string().contains("given twice"));
        assert!(parse_duration("5").unwrap_err().to_string().contains("no unit"));
    }

    // ---- robustness ----

    #[test]
    fn extreme_inputs_do_not_panic() {
        let snaps = vec![
            Snapshot {
                id: "min".into(),
                time: DateTime::<Utc>::MIN_UTC,
            },
            Snapshot {
                id: "max".into(),
                time: DateTime::<Utc>::MAX_UTC,
            },
            Snapshot {
                id: "epoch".into(),
                time: DateTime::<Utc>::UNIX_EPOCH,
            },
        ];
        let huge = KeepWithin {
            years: u32::MAX,
            months: u32::MAX,
            days: u32::MAX,
            hours: u32::MAX,
        };
        let p = Policy {
            keep_last: Some(u32::MAX),
            keep_hourly: Some(u32::MAX),
            keep_daily: Some(1),
            keep_weekly: Some(2),
            keep_monthly: Some(3),
            keep_yearly: Some(4),
            keep_within: Some(huge),
        };
        for zone in ["UTC", "Europe/Berlin", "America/New_York", "Pacific/Kiritimati"] {
            let ds = decide(&snaps, &p, tz(zone), &[]).unwrap();
            assert_eq!(ds.len(), 3);
            assert!(ds.iter().all(|d| d.keep));
        }
        assert_eq!(huge.cutoff(DateTime::<Utc>::MIN_UTC, Tz::UTC), None);
        let one = parse_duration("1d").unwrap();
        assert_eq!(one.cutoff(DateTime::<Utc>::MIN_UTC, tz("Europe/Berlin")), None);
        // MAX_UTC's wall time in Berlin is past chrono's range: no cutoff, no panic.
        assert_eq!(one.cutoff(DateTime::<Utc>::MAX_UTC, tz("Europe/Berlin")), None);
        let near_max = DateTime::<Utc>::MAX_UTC - chrono::Duration::days(2);
        assert_eq!(
            one.cutoff(near_max, tz("Europe/Berlin")),
            near_max.checked_sub_signed(chrono::Duration::days(1))
        );
        // keep-within with an out-of-range cutoff keeps everything.
        let ds = decide(
            &snaps,
            &Policy {
                keep_within: Some(huge),
                ..Policy::default()
            },
            Tz::UTC,
            &[],
        )
        .unwrap();
        assert!(ds.iter().all(|d| d.keep));
    }
}
