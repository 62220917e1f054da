//! Schedule time logic: cron expressions in a time zone, and what the scheduler should do now.
//!
//! Parsing and matching are done by the `croner` crate, which follows the OCPS rules for daylight
//! saving time:
//!
//! * a fixed-time job (single second, minute and hour, e.g. `30 2 * * *`) whose time falls in the
//!   spring-forward gap runs once, at the first valid instant after the gap (03:00 local in
//!   Europe/Berlin and America/New_York);
//! * a fixed-time job whose time falls in the autumn fold runs once, at the first (earlier) of the two
//!   instants;
//! * interval and wildcard jobs (`0 * * * *`, `*/15 * * * *`, `* * * * * *`) run at every real instant
//!   whose wall time matches: they skip the wall times that do not exist in the gap and run in both
//!   occurrences of the repeated hour.
//!
//! [`due`] implements run-missed the way kopia does it: after downtime exactly one catch-up run for the
//! newest missed slot, never one per slot, and a count of the others so the daemon can record them as
//! skipped.

use std::path::Path;
use std::str::FromStr;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::CronParser;
use croner::Cron;

/// Errors of this module. Each message names the expression or zone at fault, so it can be passed on
/// as is (the daemon maps it to `INVALID_ARGUMENT`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// The cron expression is malformed or can never fire.
    #[error("invalid cron expression {expression:?}: {reason}")]
    InvalidExpression {
        /// The expression as given.
        expression: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not a known IANA name.
    #[error(
        "unknown time zone {zone:?}: expected an IANA name such as \"Europe/Berlin\" or \"UTC\", or \"\" for the \
         server's zone"
    )]
    UnknownZone {
        /// The zone as given.
        zone: String,
    },
    /// The schedule asked for the server's zone and it could not be determined.
    #[error("cannot determine the server's time zone: {reason}; give the schedule an explicit IANA time zone")]
    LocalZone {
        /// Why detection failed.
        reason: String,
    },
}

/// A parsed cron expression together with the time zone its wall-clock times are in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CronSchedule {
    expression: String,
    zone: Tz,
    cron: Cron,
}

/// UTC years in which searches start (croner searches years 1 to 4999; a day of margin each side).
const FIRST_YEAR: i32 = 2;
const LAST_YEAR: i32 = 4999;

/// Beyond this many due slots [`due`] stops counting one by one and finds the newest slot directly;
/// `missed` is then a lower bound (see [`Due::RunNow`]).
pub const MISSED_COUNT_LIMIT: u64 = 1_000_000;

impl CronSchedule {
    /// Parses `expr` for the time zone `zone`.
    ///
    /// `expr` has 5 fields (`minute hour day-of-month month day-of-week`) or 6 with a leading seconds
    /// field, or is one of croner's nicknames (`@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`,
    /// `@hourly`). croner's syntax applies: names such as `MON` and `JAN` (any case), lists, ranges,
    /// `*/n` steps, `L`, `W`, `#`, `?`, and day-of-month OR day-of-week as in Vixie cron (`+MON` makes
    /// it AND). An expression that can never fire (e.g. `0 0 30 2 *`) is rejected.
    ///
    /// `zone` is an IANA name (`Europe/Berlin`, `UTC`; case-sensitive), or `""` for the server's zone
    /// as found by [`local_zone`].
    ///
    /// # Errors
    ///
    /// [`CronError::UnknownZone`] or [`CronError::LocalZone`] for the zone (checked first), else
    /// [`CronError::InvalidExpression`] naming the expression and, where one field is at fault, that
    /// field, its value and what it allows.
    pub fn parse(expr: &str, zone: &str) -> Result<CronSchedule, CronError> {
        let zone = if zone.trim().is_empty() {
            local_zone()?
        } else {
            parse_zone(zone)?
        };
        let invalid = |reason: String| CronError::InvalidExpression {
            expression: expr.to_string(),
            reason,
        };
        let trimmed = expr.trim();
        if trimmed.is_empty() {
            return Err(invalid("the expression is empty".to_string()));
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        if trimmed.starts_with('@') {
            if fields.len() != 1 || !NICKNAMES.contains(&trimmed.to_ascii_lowercase().as_str()) {
                return Err(invalid(format!(
                    "unknown nickname; expected one of {}",
                    NICKNAMES.join(", ")
                )));
            }
        } else if fields.len() != 5 && fields.len() != 6 {
            return Err(invalid(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with a leading seconds \
                 field, found {}",
                fields.len()
            )));
        }
        let cron = CronParser::new()
            .parse(trimmed)
            .map_err(|e| invalid(blame_field(&fields, &e)))?;
        // croner accepts a field such as "," that selects nothing; such a pattern never fires, and searching
        // for a match would take seconds, so reject it here.
        let p = &cron.pattern;
        let components = [&p.seconds, &p.minutes, &p.hours, &p.days, &p.months, &p.days_of_week];
        for (i, component) in components.iter().enumerate() {
            if component.values().is_empty() && !component.has_modifiers() {
                let given = (fields.len() + i).checked_sub(FIELDS.len()).and_then(|j| fields.get(j));
                let (name, allowed) = FIELDS[i];
                let value = given.copied().unwrap_or_default();
                return Err(invalid(format!(
                    "{name} field {value:?} matches no value (allowed: {allowed})"
                )));
            }
        }
        let schedule = CronSchedule {
            expression: expr.to_string(),
            zone,
            cron,
        };
        // Without a year field a pattern repeats at the latest every 400 years (the Gregorian cycle), and
        // croner searches far beyond that, so "no time after 2000" means "never".
        let reference = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
        if reference.and_then(|r| schedule.next_after(r)).is_none() {
            return Err(invalid("it never matches any date".to_string()));
        }
        Ok(schedule)
    }

    /// The expression as given to [`CronSchedule::parse`].
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression's wall-clock times are in (the detected zone if `""` was given).
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire time strictly after `after`, or `None` if there is none before croner's search
    /// limit (the year 5000). Sub-second parts of `after` are honoured: a slot at `10:00:00` is not
    /// after `10:00:00.5`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Checked on the UTC year: a local year outside chrono's range would make chrono panic.
        if !(FIRST_YEAR..=LAST_YEAR).contains(&after.year()) {
            return None;
        }
        let local = after.with_timezone(&self.zone);
        let next = self.cron.find_next_occurrence(&local, false).ok()?.with_timezone(&Utc);
        // croner works in whole seconds; guard the "strictly after" contract anyway.
        if next > after {
            Some(next)
        } else {
            self.cron
                .find_next_occurrence(&next.with_timezone(&self.zone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc))
        }
    }

    /// The last fire time at or before `at`, or `None` if there is none since year 1.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !(FIRST_YEAR..=LAST_YEAR).contains(&at.year()) {
            return None;
        }
        let local = at.with_timezone(&self.zone);
        let prev = self
            .cron
            .find_previous_occurrence(&local, true)
            .ok()?
            .with_timezone(&Utc);
        (prev <= at).then_some(prev)
    }
}

/// What the scheduler should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// No slot is due; sleep (in short slices, re-reading the clock) until `next`.
    NotYet {
        /// The next slot.
        next: DateTime<Utc>,
    },
    /// Run now, once, for `slot`, the newest slot at or before now.
    RunNow {
        /// The slot this run stands for. Store it as the schedule's last slot (rather than the time
        /// the run started or ended) and pass it to the next [`due`] call.
        slot: DateTime<Utc>,
        /// Older due slots that this single catch-up run replaces (after downtime); record them as
        /// skipped. Exact up to [`MISSED_COUNT_LIMIT`] due slots; beyond that it is a lower bound.
        missed: u64,
        /// The slot after `slot` (always after now), or `None` if the schedule never fires again.
        next: Option<DateTime<Utc>>,
    },
    /// The schedule has no slot after `last_slot` (only possible near croner's year-5000 limit).
    Never,
}

/// Decides what to do for schedule `s` at `now`, given `last_slot`: the slot of its last run, or the
/// schedule's creation time if it never ran.
///
/// The due slots are those strictly after `last_slot` and at or before `now`. None: [`Due::NotYet`]
/// with the first slot after `last_slot` (also when the clock went back before `last_slot`, so a clock
/// jump backwards never repeats a run). One or more: [`Due::RunNow`] for the newest of them, with the
/// others counted in `missed` (kopia's run-missed: one catch-up run, never one per slot).
///
/// Counting walks the due slots one by one (about a million per second), so it stays cheap for the
/// downtimes that occur in practice; see [`MISSED_COUNT_LIMIT`] for the bound.
pub fn due(s: &CronSchedule, last_slot: DateTime<Utc>, now: DateTime<Utc>) -> Due {
    let Some(first) = s.next_after(last_slot) else {
        return Due::Never;
    };
    if first > now {
        return Due::NotYet { next: first };
    }
    let mut slot = first;
    let mut due_slots: u64 = 1;
    loop {
        if due_slots >= MISSED_COUNT_LIMIT {
            if let Some(latest) = s.latest_at_or_before(now) {
                if latest > slot {
                    slot = latest;
                    due_slots += 1;
                }
            }
            break;
        }
        match s.next_after(slot) {
            Some(n) if n <= now => {
                slot = n;
                due_slots += 1;
            }
            _ => break,
        }
    }
    Due::RunNow {
        slot,
        missed: due_slots - 1,
        next: s.next_after(slot),
    }
}

/// Parses an IANA time zone name, e.g. `Europe/Berlin` or `UTC` (case-sensitive, surrounding
/// whitespace ignored).
///
/// # Errors
///
/// [`CronError::UnknownZone`] naming `name` if it is not in the time zone database.
pub fn parse_zone(name: &str) -> Result<Tz, CronError> {
    Tz::from_str(name.trim()).map_err(|_| CronError::UnknownZone { zone: name.to_string() })
}

/// The server's time zone, found the way the C library finds it:
///
/// 1. the `TZ` environment variable if set: empty means UTC; otherwise an IANA name, optionally with a
///    leading `:` or given as a path under a `zoneinfo` directory (`:/usr/share/zoneinfo/Europe/Berlin`).
///    A POSIX rule string such as `CET-1CEST,M3.5.0,M10.5.0/3` is not supported and is an error;
/// 2. else the target of the `/etc/localtime` symbolic link (`…/zoneinfo/Europe/Berlin`);
/// 3. else the name in `/etc/timezone` (Debian);
/// 4. else UTC if `/etc/localtime` does not exist (the C library's default);
/// 5. else ([`CronError::LocalZone`]) `/etc/localtime` is a copied file whose zone has no name here.
///
/// It reads the environment and the file system on every call; the daemon may call it once at start.
///
/// # Errors
///
/// [`CronError::LocalZone`] saying what was found, when `TZ`, the link target or `/etc/timezone`
/// names no known zone, or in case 5.
pub fn local_zone() -> Result<Tz, CronError> {
    let tz_env = std::env::var_os("TZ").map(|v| v.to_string_lossy().into_owned());
    let localtime = Path::new("/etc/localtime");
    let link = std::fs::read_link(localtime)
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let etc_timezone = std::fs::read_to_string("/etc/timezone").ok();
    let localtime_exists = localtime.exists();
    local_zone_from(
        tz_env.as_deref(),
        link.as_deref(),
        etc_timezone.as_deref(),
        localtime_exists,
    )
}

/// The pure part of [`local_zone`]: decides from the already-read environment and files.
fn local_zone_from(
    tz_env: Option<&str>,
    localtime_link: Option<&str>,
    etc_timezone: Option<&str>,
    localtime_exists: bool,
) -> Result<Tz, CronError> {
    if let Some(tz) = tz_env {
        let name = tz.trim();
        let name = name.strip_prefix(':').unwrap_or(name);
        if name.is_empty() {
            return Ok(Tz::UTC);
        }
        return zone_from_path_or_name(name).ok_or_else(|| CronError::LocalZone {
            reason: format!("TZ={tz:?} is not an IANA time zone name"),
        });
    }
    if let Some(target) = localtime_link {
        return zone_from_path_or_name(target).ok_or_else(|| CronError::LocalZone {
            reason: format!("/etc/localtime points to {target:?}, which names no known zone"),
        });
    }
    if let Some(name) = etc_timezone.map(str::trim).filter(|n| !n.is_empty()) {
        return Tz::from_str(name).map_err(|_| CronError::LocalZone {
            reason: format!("/etc/timezone names {name:?}, which is not a known zone"),
        });
    }
    if !localtime_exists {
        return Ok(Tz::UTC);
    }
    Err(CronError::LocalZone {
        reason: "/etc/localtime is not a symbolic link into a zoneinfo directory and /etc/timezone is missing"
            .to_string(),
    })
}

/// An IANA name given directly or as the part of a path after `zoneinfo/`.
fn zone_from_path_or_name(s: &str) -> Option<Tz> {
    let name = match s.rfind("zoneinfo/") {
        Some(i) => &s[i + "zoneinfo/".len()..],
        None => s,
    };
    // Some systems link into `zoneinfo/posix/…` or `zoneinfo/right/…`.
    let name = name
        .strip_prefix("posix/")
        .or_else(|| name.strip_prefix("right/"))
        .unwrap_or(name);
    Tz::from_str(name).ok()
}

/// croner's nicknames, accepted alone in place of the fields.
const NICKNAMES: [&str; 6] = ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"];

/// The fields of a 6-field expression, with what each allows (a 5-field one lacks the first).
const FIELDS: [(&str, &str); 6] = [
    ("second", "0-59"),
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L, W"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, #, L"),
];

/// Explains croner's error `e` for the expression split into `fields`, naming the first field that
/// fails on its own (every other field replaced by `*`), if one does.
fn blame_field(fields: &[&str], e: &croner::errors::CronError) -> String {
    let reason = describe_croner_error(e);
    let names = &FIELDS[FIELDS.len().saturating_sub(fields.len())..];
    if fields.len() != names.len() {
        return reason;
    }
    for (i, ((name, allowed), value)) in names.iter().zip(fields).enumerate() {
        let probe: Vec<&str> = (0..fields.len()).map(|j| if j == i { *value } else { "*" }).collect();
        if let Err(field_err) = CronParser::new().parse(&probe.join(" ")) {
            return format!(
                "{name} field {value:?}: {} (allowed: {allowed})",
                describe_croner_error(&field_err)
            );
        }
    }
    reason
}

/// croner's error as a lower-case phrase without its type prefix.
fn describe_croner_error(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    let text = match e {
        E::EmptyPattern => "the expression is empty".to_string(),
        E::InvalidPattern(m) | E::ComponentError(m) => m.clone(),
        E::IllegalCharacters(m) => m.replace("CronPattern contains illegal", "illegal"),
        other => other.to_string(),
    };
    let text = text.trim().trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "rejected by the cron parser".to_string(),
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

    fn sched(expr: &str, zone: &str) -> CronSchedule {
        CronSchedule::parse(expr, zone).expect("valid test schedule")
    }

    /// The first `n` fire times after `start`.
    fn fires(s: &CronSchedule, start: &str, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut at = t(start);
        for _ in 0..n {
            at = s.next_after(at).expect("a next fire time");
            out.push(at);
        }
        out
    }

    fn ts(list: &[&str]) -> Vec<DateTime<Utc>> {
        list.iter().map(|s| t(s)).collect()
    }

    fn invalid_reason(expr: &str) -> String {
        match CronSchedule::parse(expr, "UTC") {
            Err(e @ CronError::InvalidExpression { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(&format!("{expr:?}")),
                    "message should name the expression: {msg}"
                );
                msg
            }
            other => panic!("expected InvalidExpression for {expr:?}, got {other:?}"),
        }
    }

    // ---- parsing ----

    #[test]
    fn five_field_expression() {
        let s = sched("0 3 * * *", "UTC");
        assert_eq!(s.expression(), "0 3 * * *");
        assert_eq!(s.zone(), Tz::UTC);
        assert_eq!(
            fires(&s, "2026-05-01T02:59:59Z", 2),
            ts(&["2026-05-01T03:00:00Z", "2026-05-02T03:00:00Z"])
        );
        // Strictly after: a fire time is not its own successor.
        assert_eq!(s.next_after(t("2026-05-01T03:00:00Z")), Some(t("2026-05-02T03:00:00Z")));
    }

    #[test]
    fn six_field_expression_has_leading_seconds() {
        let s = sched("30 0 3 * * *", "UTC");
        assert_eq!(
            fires(&s, "2026-05-01T00:00:00Z", 2),
            ts(&["2026-05-01T03:00:30Z", "2026-05-02T03:00:30Z"])
        );
        let s = sched("*/20 * * * * *", "UTC");
        assert_eq!(
            fires(&s, "2026-05-01T00:00:00Z", 3),
            ts(&["2026-05-01T00:00:20Z", "2026-05-01T00:00:40Z", "2026-05-01T00:01:00Z"])
        );
    }

    #[test]
    fn every_second() {
        let s = sched("* * * * * *", "Europe/Berlin");
        assert_eq!(
            fires(&s, "2026-05-01T10:00:00Z", 3),
            ts(&["2026-05-01T10:00:01Z", "2026-05-01T10:00:02Z", "2026-05-01T10:00:03Z"])
        );
        // A fractional start: the next whole second.
        assert_eq!(
            s.next_after(t("2026-05-01T10:00:00.500Z")),
            Some(t("2026-05-01T10:00:01Z"))
        );
        assert_eq!(
            s.next_after(t("2026-05-01T10:00:00.999999999Z")),
            Some(t("2026-05-01T10:00:01Z"))
        );
        // Every second straight through the spring gap and the autumn fold.
        assert_eq!(
            fires(&s, "2026-03-29T00:59:58Z", 3),
            ts(&["2026-03-29T00:59:59Z", "2026-03-29T01:00:00Z", "2026-03-29T01:00:01Z"])
        );
        assert_eq!(
            fires(&s, "2026-10-25T00:59:58Z", 3),
            ts(&["2026-10-25T00:59:59Z", "2026-10-25T01:00:00Z", "2026-10-25T01:00:01Z"])
        );
    }

    #[test]
    fn names_and_nicknames() {
        // 2027-01-01 is a Friday; the first Monday in January 2027 is the 4th.
        for expr in ["0 12 * JAN MON", "0 12 * jan mon", "0 12 * 1 1"] {
            let s = sched(expr, "UTC");
            assert_eq!(
                fires(&s, "2026-06-01T00:00:00Z", 2),
                ts(&["2027-01-04T12:00:00Z", "2027-01-11T12:00:00Z"]),
                "{expr}"
            );
        }
        let s = sched("@daily", "America/New_York");
        assert_eq!(fires(&s, "2026-05-01T12:00:00Z", 1), ts(&["2026-05-02T04:00:00Z"]));
        let s = sched("@HOURLY", "UTC");
        assert_eq!(fires(&s, "2026-05-01T12:00:00Z", 1), ts(&["2026-05-01T13:00:00Z"]));
        // Day of month OR day of week, as in Vixie cron; `+` makes it AND.
        let s = sched("0 0 13 * FRI", "UTC");
        assert_eq!(
            fires(&s, "2026-02-01T00:00:00Z", 2),
            ts(&["2026-02-06T00:00:00Z", "2026-02-13T00:00:00Z"])
        );
        let s = sched("0 0 13 * +FRI", "UTC");
        assert_eq!(
            fires(&s, "2026-01-01T00:00:00Z", 2),
            ts(&["2026-02-13T00:00:00Z", "2026-03-13T00:00:00Z"])
        );
    }

    #[test]
    fn zones_are_applied() {
        let s = sched("0 9 * * *", "America/New_York");
        assert_eq!(s.zone(), chrono_tz::America::New_York);
        assert_eq!(fires(&s, "2026-01-10T00:00:00Z", 1), ts(&["2026-01-10T14:00:00Z"]));
        assert_eq!(fires(&s, "2026-07-10T00:00:00Z", 1), ts(&["2026-07-10T13:00:00Z"]));
        let s = sched("0 9 * * *", " Europe/Berlin ");
        assert_eq!(s.zone(), chrono_tz::Europe::Berlin);
    }

    #[test]
    fn empty_zone_is_the_server_zone() {
        // Whatever this machine's zone is (or the error when TZ holds a POSIX rule string).
        assert_eq!(CronSchedule::parse("0 9 * * *", "").map(|s| s.zone()), local_zone());
        assert_eq!(CronSchedule::parse("0 9 * * *", "  ").map(|s| s.zone()), local_zone());
    }

    #[test]
    fn bad_expressions_are_errors_naming_them() {
        let msg = invalid_reason("61 * * * *");
        assert!(msg.contains("minute field \"61\"") && msg.contains("0-59"), "{msg}");
        let msg = invalid_reason("* * *");
        assert!(msg.contains("expected 5 fields") && msg.contains("found 3"), "{msg}");
        let msg = invalid_reason("");
        assert!(msg.contains("empty"), "{msg}");
        let msg = invalid_reason("   ");
        assert!(msg.contains("empty"), "{msg}");
        let msg = invalid_reason("* * * * * * *");
        assert!(msg.contains("found 7"), "{msg}");
        let msg = invalid_reason("0 24 * * *");
        assert!(msg.contains("hour field \"24\""), "{msg}");
        let msg = invalid_reason("0 0 32 * *");
        assert!(msg.contains("day-of-month field \"32\""), "{msg}");
        let msg = invalid_reason("0 0 * 13 *");
        assert!(msg.contains("month field \"13\""), "{msg}");
        let msg = invalid_reason("0 0 * * 8");
        assert!(msg.contains("day-of-week field \"8\""), "{msg}");
        let msg = invalid_reason("60 0 0 * * *");
        assert!(msg.contains("second field \"60\""), "{msg}");
        let msg = invalid_reason("*/0 * * * *");
        assert!(msg.contains("step cannot be zero"), "{msg}");
        let msg = invalid_reason("x * * * *");
        assert!(msg.contains("illegal"), "{msg}");
        let msg = invalid_reason("@reboot");
        assert!(msg.contains("unknown nickname"), "{msg}");
        let msg = invalid_reason("* , * * *");
        assert!(msg.contains("hour field \",\" matches no value"), "{msg}");
        let msg = invalid_reason(", * * * * JAN");
        assert!(msg.contains("second field \",\" matches no value"), "{msg}");
        let msg = invalid_reason("0 0 30 2 *");
        assert!(msg.contains("never matches"), "{msg}");
        invalid_reason("0 0 31 4,6,9,11 *");
    }

    #[test]
    fn bad_zone_is_an_error_naming_it() {
        let err = CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(
            err,
            CronError::UnknownZone {
                zone: "Mars/Olympus".to_string()
            }
        );
        assert!(err.to_string().contains("\"Mars/Olympus\""), "{err}");
        assert!(CronSchedule::parse("* * * * *", "europe/berlin").is_err());
        assert!(parse_zone("CET-1CEST,M3.5.0,M10.5.0/3").is_err());
        // The zone is checked even if the expression is bad too; either error is fine, none panics.
        assert!(CronSchedule::parse("61 * * * *", "Mars/Olympus").is_err());
    }

    #[test]
    fn odd_expressions_never_panic() {
        let odd = [
            "99999999999 * * * *",
            "-1 * * * *",
            "* * * * * * * *",
            "5#9 * * * *",
            "0 0 L * *",
            "0 0 LW * *",
            "0 0 15W * *",
            "0 0 * * 5#L",
            "0 0 * * 5L",
            "0 0 * * MON#2",
            "0 0 ? * ?",
            "0 0 1 * +MON",
            "0 0 29 2 *",
            "a-b * * * *",
            "* * * * ä",
            "1,2,,3 * * * *",
            "@",
            "@ daily",
            "0 0 * * * @daily",
            "\u{0} * * * *",
            "*/60 * * * *",
            "59-0/5 * * * *",
        ];
        for expr in odd {
            if let Ok(s) = CronSchedule::parse(expr, "America/New_York") {
                let _ = s.next_after(t("2026-01-01T00:00:00Z"));
                let _ = due(&s, t("2026-01-01T00:00:00Z"), t("2026-01-02T00:00:00Z"));
            }
        }
        // Leap day only: parses, fires on 29 February.
        assert_eq!(
            fires(&sched("0 0 29 2 *", "UTC"), "2026-01-01T00:00:00Z", 1),
            ts(&["2028-02-29T00:00:00Z"])
        );
    }

    #[test]
    fn random_expressions_never_panic() {
        let tokens = [
            "*",
            "0",
            "1",
            "59",
            "60",
            "23",
            "24",
            "31",
            "32",
            "12",
            "13",
            "7",
            "8",
            "L",
            "W",
            "#",
            "/",
            "-",
            ",",
            "?",
            "+",
            "MON",
            "JAN",
            "5#2",
            "5#L",
            "1-5",
            "*/5",
            "3-1",
            "0/5",
            "LW",
            "15W",
            "@",
            "x",
            "99999999999999999999",
            "-1",
            "L-2",
            "5L",
            "#5",
            "1#",
            "W1",
            "L#1",
            "2-",
            "-3",
        ];
        let zones = [
            "UTC",
            "Europe/Berlin",
            "America/New_York",
            "Australia/Lord_Howe",
            "America/Santiago",
        ];
        let mut seed: u64 = 0x5eed;
        let mut random = move |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let start = t("2026-03-01T00:00:00Z");
        let mut parsed = 0;
        for i in 0..3000 {
            let fields: Vec<String> = (0..5 + random(2))
                .map(|_| match random(2) {
                    0 => "*".to_string(),
                    _ => (0..1 + random(3)).map(|_| tokens[random(tokens.len())]).collect(),
                })
                .collect();
            if let Ok(s) = CronSchedule::parse(&fields.join(" "), zones[i % zones.len()]) {
                parsed += 1;
                let _ = s.next_after(start);
                let _ = due(&s, start, t("2026-03-01T01:00:00Z"));
            }
        }
        assert!(
            parsed > 50,
            "the generator should produce some valid expressions ({parsed})"
        );
    }

    // ---- DST ----

    #[test]
    fn berlin_spring_forward_fixed_time_runs_once_at_03_00() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&s, "2026-03-27T12:00:00Z", 3),
            ts(&["2026-03-28T01:30:00Z", "2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"])
        );
    }

    #[test]
    fn berlin_fall_back_fixed_time_runs_once() {
        // 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice, the job runs at the first.
        let s = sched("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            fires(&s, "2026-10-23T12:00:00Z", 3),
            ts(&["2026-10-24T00:30:00Z", "2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"])
        );
        // Starting between the two 02:30s (02:00 CET) does not yield the second one.
        assert_eq!(s.next_after(t("2026-10-25T01:00:00Z")), Some(t("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn new_york_spring_forward_fixed_time_runs_once_at_03_00() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let s = sched("30 2 * * *", "America/New_York");
        assert_eq!(
            fires(&s, "2026-03-06T12:00:00Z", 3),
            ts(&["2026-03-07T07:30:00Z", "2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"])
        );
    }

    #[test]
    fn new_york_fall_back_fixed_time_runs_once() {
        // 2026-11-01: 02:00 EDT goes back to 01:00 EST; 01:30 happens twice.
        let s = sched("30 1 * * *", "America/New_York");
        assert_eq!(
            fires(&s, "2026-10-30T12:00:00Z", 3),
            ts(&["2026-10-31T05:30:00Z", "2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"])
        );
        assert_eq!(s.next_after(t("2026-11-01T06:00:00Z")), Some(t("2026-11-02T06:30:00Z")));
    }

    #[test]
    fn interval_jobs_skip_the_gap_and_repeat_in_the_fold() {
        let s = sched("30 * * * *", "Europe/Berlin");
        // 01:30 CET, then 03:30 CEST: 02:30 does not exist.
        assert_eq!(
            fires(&s, "2026-03-28T23:45:00Z", 3),
            ts(&["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z", "2026-03-29T02:30:00Z"])
        );
        let s = sched("30 * * * *", "America/New_York");
        // 00:30 EDT, 01:30 EDT, 01:30 EST, 02:30 EST.
        assert_eq!(
            fires(&s, "2026-11-01T04:00:00Z", 4),
            ts(&[
                "2026-11-01T04:30:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-01T06:30:00Z",
                "2026-11-01T07:30:00Z"
            ])
        );
    }

    // ---- due ----

    #[test]
    fn due_after_three_days_of_downtime_runs_once() {
        let s = sched("0 * * * *", "Europe/Berlin");
        let last = t("2026-01-01T00:00:00Z");
        // Slots 01:00 on the 1st to 00:00 on the 4th: 72 due, one run, 71 missed.
        assert_eq!(
            due(&s, last, t("2026-01-04T00:00:00Z")),
            Due::RunNow {
                slot: t("2026-01-04T00:00:00Z"),
                missed: 71,
                next: Some(t("2026-01-04T01:00:00Z"))
            }
        );
        assert_eq!(
            due(&s, last, t("2026-01-04T00:30:00Z")),
            Due::RunNow {
                slot: t("2026-01-04T00:00:00Z"),
                missed: 71,
                next: Some(t("2026-01-04T01:00:00Z"))
            }
        );
        assert_eq!(
            due(&s, last, t("2026-01-03T23:59:59Z")),
            Due::RunNow {
                slot: t("2026-01-03T23:00:00Z"),
                missed: 70,
                next: Some(t("2026-01-04T00:00:00Z"))
            }
        );
    }

    #[test]
    fn due_not_yet_and_exactly_on_time() {
        let s = sched("0 * * * *", "UTC");
        let last = t("2026-01-01T10:00:00Z");
        assert_eq!(
            due(&s, last, t("2026-01-01T10:59:59Z")),
            Due::NotYet {
                next: t("2026-01-01T11:00:00Z")
            }
        );
        assert_eq!(
            due(&s, last, last),
            Due::NotYet {
                next: t("2026-01-01T11:00:00Z")
            }
        );
        assert_eq!(
            due(&s, last, t("2026-01-01T11:00:00Z")),
            Due::RunNow {
                slot: t("2026-01-01T11:00:00Z"),
                missed: 0,
                next: Some(t("2026-01-01T12:00:00Z"))
            }
        );
        // After that run the daemon stores the slot; right afterwards nothing is due.
        assert_eq!(
            due(&s, t("2026-01-01T11:00:00Z"), t("2026-01-01T11:00:07Z")),
            Due::NotYet {
                next: t("2026-01-01T12:00:00Z")
            }
        );
    }

    #[test]
    fn due_from_creation_time_between_slots() {
        let s = sched("0 * * * *", "UTC");
        let created = t("2026-01-01T10:15:30Z");
        assert_eq!(
            due(&s, created, t("2026-01-01T10:59:00Z")),
            Due::NotYet {
                next: t("2026-01-01T11:00:00Z")
            }
        );
        assert_eq!(
            due(&s, created, t("2026-01-01T11:00:05Z")),
            Due::RunNow {
                slot: t("2026-01-01T11:00:00Z"),
                missed: 0,
                next: Some(t("2026-01-01T12:00:00Z"))
            }
        );
    }

    #[test]
    fn due_when_the_clock_went_back() {
        let s = sched("0 * * * *", "UTC");
        let last = t("2026-01-01T10:00:00Z");
        assert_eq!(
            due(&s, last, t("2026-01-01T08:30:00Z")),
            Due::NotYet {
                next: t("2026-01-01T11:00:00Z")
            }
        );
    }

    #[test]
    fn due_across_spring_forward_counts_real_slots() {
        // Daily 02:30 Berlin; down from just after the 27 March run until noon on the 31st.
        let s = sched("30 2 * * *", "Europe/Berlin");
        let last = t("2026-03-27T01:30:00Z");
        // Slots: 28th 02:30 CET, 29th 03:00 CEST (gap), 30th and 31st 02:30 CEST: 4 due.
        assert_eq!(
            due(&s, last, t("2026-03-31T12:00:00Z")),
            Due::RunNow {
                slot: t("2026-03-31T00:30:00Z"),
                missed: 3,
                next: Some(t("2026-04-01T00:30:00Z"))
            }
        );
        // Hourly in New York across the autumn fold: 01:00 happens twice, so 25 slots in that day.
        let s = sched("0 * * * *", "America/New_York");
        assert_eq!(
            due(&s, t("2026-11-01T04:00:00Z"), t("2026-11-02T05:00:00Z")),
            Due::RunNow {
                slot: t("2026-11-02T05:00:00Z"),
                missed: 24,
                next: Some(t("2026-11-02T06:00:00Z"))
            }
        );
        // And 23 slots in the spring-forward day.
        assert_eq!(
            due(&s, t("2026-03-08T05:00:00Z"), t("2026-03-09T04:00:00Z")),
            Due::RunNow {
                slot: t("2026-03-09T04:00:00Z"),
                missed: 22,
                next: Some(t("2026-03-09T05:00:00Z"))
            }
        );
    }

    #[test]
    fn due_every_second_after_three_hours() {
        let s = sched("* * * * * *", "UTC");
        assert_eq!(
            due(&s, t("2026-01-01T00:00:00Z"), t("2026-01-01T03:00:00.250Z")),
            Due::RunNow {
                slot: t("2026-01-01T03:00:00Z"),
                missed: 10_799,
                next: Some(t("2026-01-01T03:00:01Z"))
            }
        );
    }

    #[test]
    fn due_counting_is_bounded() {
        // 13 days of every-second slots exceed the counting limit: the slot is still exact, `missed` a bound.
        let s = sched("* * * * * *", "UTC");
        let now = t("2026-01-14T00:00:00Z");
        match due(&s, t("2026-01-01T00:00:00Z"), now) {
            Due::RunNow { slot, missed, next } => {
                assert_eq!(slot, now);
                assert_eq!(missed, MISSED_COUNT_LIMIT);
                assert_eq!(next, Some(t("2026-01-14T00:00:01Z")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn extreme_times_do_not_panic() {
        let s = sched("0 * * * *", "Pacific/Kiritimati");
        assert_eq!(s.next_after(DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(s.next_after(DateTime::<Utc>::MIN_UTC), None);
        assert_eq!(s.latest_at_or_before(DateTime::<Utc>::MIN_UTC), None);
        assert_eq!(s.latest_at_or_before(DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(due(&s, DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MAX_UTC), Due::Never);
        assert_eq!(due(&s, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MIN_UTC), Due::Never);
        // Near croner's year-5000 limit the schedule ends.
        assert_eq!(s.next_after(t("4999-12-31T23:30:00Z")), None);
        match due(&s, t("4999-12-31T20:30:00Z"), t("4999-12-31T23:30:00Z")) {
            Due::RunNow { missed, .. } => assert!(missed >= 1),
            Due::Never => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            s.latest_at_or_before(t("2026-01-01T00:30:00Z")),
            Some(t("2026-01-01T00:00:00Z"))
        );
    }

    // ---- the server's zone ----

    #[test]
    fn local_zone_detection_rules() {
        use chrono_tz::{America, Asia, Europe};
        let f = local_zone_from;
        assert_eq!(f(Some(":Europe/Berlin"), None, None, true), Ok(Europe::Berlin));
        assert_eq!(
            f(
                Some("America/New_York"),
                Some("/usr/share/zoneinfo/Asia/Tokyo"),
                None,
                true
            ),
            Ok(America::New_York)
        );
        assert_eq!(
            f(Some(""), Some("/usr/share/zoneinfo/Asia/Tokyo"), None, true),
            Ok(Tz::UTC)
        );
        assert_eq!(
            f(Some(":/usr/share/zoneinfo/Asia/Tokyo"), None, None, true),
            Ok(Asia::Tokyo)
        );
        let err = f(Some("CET-1CEST,M3.5.0,M10.5.0/3"), None, None, true).unwrap_err();
        assert!(err.to_string().contains("CET-1CEST,M3.5.0,M10.5.0/3"), "{err}");
        assert_eq!(
            f(None, Some("/usr/share/zoneinfo/Europe/Berlin"), None, true),
            Ok(Europe::Berlin)
        );
        assert_eq!(
            f(None, Some("../usr/share/zoneinfo/posix/Europe/Paris"), None, true),
            Ok(Europe::Paris)
        );
        assert_eq!(
            f(None, Some("/var/db/timezone/zoneinfo/Etc/UTC"), None, true),
            Ok(Tz::Etc__UTC)
        );
        assert!(f(None, Some("/somewhere/else"), None, true).is_err());
        assert_eq!(f(None, None, Some("Europe/Berlin\n"), true), Ok(Europe::Berlin));
        assert!(f(None, None, Some("Nowhere/Land\n"), true).is_err());
        assert_eq!(f(None, None, None, false), Ok(Tz::UTC));
        let err = f(None, None, None, true).unwrap_err();
        assert!(matches!(err, CronError::LocalZone { .. }));
        assert!(err.to_string().contains("explicit"), "{err}");
    }
}
