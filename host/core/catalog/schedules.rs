//! The `schedules` table: scheduled backups, their retention policy, and
//! where each one stands (the last cron slot handled, the last run).

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use super::{Catalog, CodecName, Result};

/// Retention as stored and configured (restic's `forget` options).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<u32>,
    /// A restic duration (`7d`, `1y6m`, `12h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<String>,
}

impl RetentionSpec {
    /// No rule at all: nothing is ever removed.
    pub fn is_empty(&self) -> bool {
        *self == RetentionSpec::default()
    }

    /// The policy the rules describe (a bad `keepWithin` is an error naming it).
    pub fn policy(&self) -> std::result::Result<crate::retention::Policy, crate::retention::RetentionError> {
        let on = |n: Option<u32>| n.filter(|&n| n > 0);
        Ok(crate::retention::Policy {
            keep_last: on(self.keep_last),
            keep_hourly: on(self.keep_hourly),
            keep_daily: on(self.keep_daily),
            keep_weekly: on(self.keep_weekly),
            keep_monthly: on(self.keep_monthly),
            keep_yearly: on(self.keep_yearly),
            keep_within: match &self.keep_within {
                Some(d) if !d.trim().is_empty() => Some(crate::retention::parse_duration(d)?),
                _ => None,
            },
        })
    }
}

/// One scheduled backup.
/// Where a schedule comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Origin {
    /// Made through the API (`wimguard schedule create`); kept until deleted.
    #[default]
    Api,
    /// Declared under `schedules:` in config.yaml; follows the file.
    Config,
}

impl Origin {
    const ALL: [Origin; 2] = [Origin::Api, Origin::Config];

    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Api => "api",
            Origin::Config => "config",
        }
    }

    /// The origin named `s`; None for any other word.
    pub fn from_name(s: &str) -> Option<Origin> {
        Origin::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleRecord {
    pub id: String,
    /// The key under `schedules:` in config.yaml (config-declared ones), or
    /// a name given at creation; may be empty.
    pub name: String,
    /// Who made it: the API (`wimguard schedule create`) or config.yaml.
    pub origin: Origin,
    pub cron: String,
    /// IANA zone; empty for the server's.
    pub time_zone: String,
    pub source: String,
    pub destination: String,
    pub plugins: Vec<String>,
    /// Codec name; empty for the server's default.
    /// None: the server's default for the destination.
    pub compression: Option<CodecName>,
    pub excludes: Vec<String>,
    pub retention: RetentionSpec,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// The last cron slot handled, Unix ms.
    pub last_slot: Option<i64>,
    pub last_run_at: Option<i64>,
    pub last_backup_uuid: String,
    /// Status of the last run; None before the first (stored as '').
    pub last_status: Option<super::Status>,
    pub last_error: String,
    /// Slots not run: missed during downtime, or coalesced while a run was going.
    pub skipped: u64,
    /// When a failed run is tried again, Unix ms.
    pub retry_at: Option<i64>,
    /// Failures in a row.
    pub failures: u32,
}

const COLUMNS: &str = "id, name, origin, cron, time_zone, source, destination, plugins, compression, excludes, \
                       retention, enabled, created_at, updated_at, last_slot, last_run_at, last_backup_uuid, \
                       last_status, last_error, skipped, retry_at, failures";

fn from_row(r: &Row) -> rusqlite::Result<ScheduleRecord> {
    let retention: String = r.get(10)?;
    Ok(ScheduleRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        origin: super::word_column(r, 2, "schedule origin", Origin::from_name)?,
        cron: r.get(3)?,
        time_zone: r.get(4)?,
        source: r.get(5)?,
        destination: r.get(6)?,
        plugins: super::json_list(r, 7)?,
        compression: super::word_column(r, 8, "codec name", |w| match w {
            "" => Some(None),
            w => CodecName::from_name(w).map(Some),
        })?,
        excludes: super::json_list(r, 9)?,
        retention: serde_json::from_str(&retention)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, Box::new(e)))?,
        enabled: r.get(11)?,
        created_at: r.get(12)?,
        updated_at: r.get(13)?,
        last_slot: r.get(14)?,
        last_run_at: r.get(15)?,
        last_backup_uuid: r.get(16)?,
        // Empty before the first run.
        last_status: super::word_column(r, 17, "schedule status", |w| match w {
            "" => Some(None),
            w => super::Status::from_name(w).map(Some),
        })?,
        last_error: r.get(18)?,
        skipped: r.get::<_, i64>(19)? as u64,
        retry_at: r.get(20)?,
        failures: r.get(21)?,
    })
}

/// The fields of a schedule stored as text: lists and retention as JSON,
/// the codec and the last status as words ('' for none).
struct Encoded<'a> {
    plugins: String,
    compression: &'a str,
    excludes: String,
    retention: String,
    last_status: &'a str,
}

fn encode(s: &ScheduleRecord) -> Encoded<'_> {
    Encoded {
        plugins: serde_json::to_string(&s.plugins).unwrap_or_default(),
        compression: s.compression.as_ref().map_or("", |c| c.as_str()),
        excludes: serde_json::to_string(&s.excludes).unwrap_or_default(),
        retention: serde_json::to_string(&s.retention).unwrap_or_default(),
        last_status: s.last_status.map_or("", |st| st.as_str()),
    }
}

impl Catalog {
    /// Inserts a schedule, or replaces every field of the one with its id.
    pub fn put_schedule(&self, s: &ScheduleRecord) -> Result<()> {
        let e = encode(s);
        self.db().execute(
            &format!(
                "INSERT INTO schedules ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
                 ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22) ON CONFLICT(id) DO UPDATE SET name = excluded.name, \
                 origin = excluded.origin, cron = excluded.cron, time_zone = excluded.time_zone, \
                 source = excluded.source, destination = excluded.destination, plugins = excluded.plugins, \
                 compression = excluded.compression, excludes = excluded.excludes, retention = excluded.retention, \
                 enabled = excluded.enabled, updated_at = excluded.updated_at, last_slot = excluded.last_slot, \
                 last_run_at = excluded.last_run_at, last_backup_uuid = excluded.last_backup_uuid, \
                 last_status = excluded.last_status, last_error = excluded.last_error, skipped = excluded.skipped, \
                 retry_at = excluded.retry_at, failures = excluded.failures"
            ),
            params![
                s.id,
                s.name,
                s.origin.as_str(),
                s.cron,
                s.time_zone,
                s.source,
                s.destination,
                e.plugins,
                e.compression,
                e.excludes,
                e.retention,
                s.enabled,
                s.created_at,
                s.updated_at,
                s.last_slot,
                s.last_run_at,
                s.last_backup_uuid,
                e.last_status,
                s.last_error,
                s.skipped as i64,
                s.retry_at,
                s.failures
            ],
        )?;
        Ok(())
    }

    /// Records a schedule's run state (its last slot, run, status, error,
    /// skipped slots and retry) and nothing else: the scheduler's write, so
    /// an edit, a disable, a re-enable or a delete made while it looked at
    /// the schedule is not undone. False when the schedule is gone.
    pub fn record_schedule_run(&self, s: &ScheduleRecord) -> Result<bool> {
        let changed = self.db().execute(
            // The slot only moves forward: a re-enable made meanwhile set it
            // to "now", and the stale one would catch up the paused time.
            "UPDATE schedules SET last_status = ?2, \
             last_slot = CASE WHEN last_slot IS NULL OR last_slot < ?3 THEN ?3 ELSE last_slot END, \
             last_run_at = ?4, last_backup_uuid = ?5, last_error = ?6, skipped = ?7, retry_at = ?8, failures = ?9 \
             WHERE id = ?1",
            params![
                s.id,
                encode(s).last_status,
                s.last_slot,
                s.last_run_at,
                s.last_backup_uuid,
                s.last_error,
                s.skipped as i64,
                s.retry_at,
                s.failures
            ],
        )?;
        Ok(changed > 0)
    }

    /// Records slots that came while a run of the schedule was going: the
    /// last slot moves to `slot` (never back) and `more` slots count as
    /// skipped. Only those two columns: the run's own state (status, backup,
    /// failures) may have been written since the caller looked. False when
    /// the schedule is gone.
    pub fn record_schedule_slots(&self, id: &str, slot: i64, more: u64) -> Result<bool> {
        let changed = self.db().execute(
            "UPDATE schedules SET \
             last_slot = CASE WHEN last_slot IS NULL OR last_slot < ?2 THEN ?2 ELSE last_slot END, \
             skipped = skipped + ?3 WHERE id = ?1",
            params![id, slot, more as i64],
        )?;
        Ok(changed > 0)
    }

    /// Records why a schedule cannot run (its expression or zone no longer
    /// parses), and nothing else. False when the schedule is gone.
    pub fn record_schedule_error(&self, id: &str, error: &str) -> Result<bool> {
        let changed = self
            .db()
            .execute("UPDATE schedules SET last_error = ?2 WHERE id = ?1", params![id, error])?;
        Ok(changed > 0)
    }

    /// Replaces what a schedule does (name, cron, zone, source, destination,
    /// plugins, codec, excludes, retention, enabled) and nothing of its run
    /// state, except that enabling a disabled one moves its last slot to
    /// `updated_at`, as [`Catalog::set_schedule_enabled`] does. False when
    /// the schedule is gone.
    pub fn update_schedule_spec(&self, s: &ScheduleRecord) -> Result<bool> {
        let e = encode(s);
        // SET expressions see the row as it was: `enabled` there is the old value.
        let changed = self.db().execute(
            "UPDATE schedules SET name = ?2, cron = ?3, time_zone = ?4, source = ?5, destination = ?6, \
             plugins = ?7, compression = ?8, excludes = ?9, retention = ?10, updated_at = ?11, \
             last_slot = CASE WHEN ?12 AND NOT enabled THEN ?11 ELSE last_slot END, enabled = ?12 WHERE id = ?1",
            params![
                s.id,
                s.name,
                s.cron,
                s.time_zone,
                s.source,
                s.destination,
                e.plugins,
                e.compression,
                e.excludes,
                e.retention,
                s.updated_at,
                s.enabled
            ],
        )?;
        Ok(changed > 0)
    }

    /// Enables or disables a schedule at `now` (Unix ms). Enabling a
    /// disabled one also moves its last slot to `now`: the paused time is
    /// not caught up. False when the schedule is gone.
    pub fn set_schedule_enabled(&self, id: &str, enabled: bool, now: i64) -> Result<bool> {
        // SET expressions see the row as it was: `enabled` there is the old value.
        let changed = self.db().execute(
            "UPDATE schedules SET last_slot = CASE WHEN ?2 AND NOT enabled THEN ?3 ELSE last_slot END, \
             enabled = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, enabled, now],
        )?;
        Ok(changed > 0)
    }

    pub fn get_schedule(&self, id: &str) -> Result<Option<ScheduleRecord>> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {COLUMNS} FROM schedules WHERE id = ?1"),
                params![id],
                from_row,
            )
            .optional()?)
    }

    /// The ids of every schedule, oldest first.
    pub fn schedule_ids(&self) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT id FROM schedules ORDER BY created_at, id")?;
        let ids = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ids)
    }

    /// Every schedule, oldest first.
    pub fn list_schedules(&self) -> Result<Vec<ScheduleRecord>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!("SELECT {COLUMNS} FROM schedules ORDER BY created_at, id"))?;
        let rows = stmt.query_map([], from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn delete_schedule(&self, id: &str) -> Result<bool> {
        Ok(self.db().execute("DELETE FROM schedules WHERE id = ?1", params![id])? > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Status;
    use super::*;

    fn schedule(id: &str) -> ScheduleRecord {
        ScheduleRecord {
            id: id.into(),
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            source: "/src".into(),
            destination: "/dst/a.wim".into(),
            enabled: true,
            created_at: 1,
            updated_at: 1,
            last_slot: Some(1000),
            ..Default::default()
        }
    }

    /// The scheduler writes a run's outcome from a record it read before a
    /// user disabled, edited or deleted the schedule: none of those may be
    /// undone by that write.
    #[test]
    fn a_run_recorded_from_a_stale_read_keeps_what_users_changed_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        cat.put_schedule(&schedule("s1")).unwrap();

        let mut seen = cat.get_schedule("s1").unwrap().unwrap();
        assert!(cat.set_schedule_enabled("s1", false, 2000).unwrap());
        let edited = ScheduleRecord {
            cron: "0 4 * * *".into(),
            enabled: false,
            updated_at: 2500,
            ..schedule("s1")
        };
        assert!(cat.update_schedule_spec(&edited).unwrap());
        seen.last_status = Some(Status::Succeeded);
        seen.last_slot = Some(3000);
        seen.skipped = 2;
        assert!(cat.record_schedule_run(&seen).unwrap());

        let now = cat.get_schedule("s1").unwrap().unwrap();
        assert!(!now.enabled, "the disable was undone");
        assert_eq!(now.cron, "0 4 * * *", "the edit was undone");
        assert_eq!(now.last_status, Some(Status::Succeeded));
        assert_eq!((now.last_slot, now.skipped), (Some(3000), 2));

        // An edit keeps the run state; re-enabling starts the slots anew,
        // and a run recorded from before the re-enable does not move them back.
        assert!(cat.update_schedule_spec(&edited).unwrap());
        assert_eq!(cat.get_schedule("s1").unwrap().unwrap().last_status, now.last_status);
        assert!(cat.set_schedule_enabled("s1", true, 5000).unwrap());
        assert_eq!(cat.get_schedule("s1").unwrap().unwrap().last_slot, Some(5000));
        assert!(cat.record_schedule_run(&seen).unwrap());
        assert_eq!(cat.get_schedule("s1").unwrap().unwrap().last_slot, Some(5000));
        // Enabling through an edit does the same.
        assert!(cat.set_schedule_enabled("s1", false, 5500).unwrap());
        let enabled = ScheduleRecord {
            enabled: true,
            updated_at: 5600,
            ..edited.clone()
        };
        assert!(cat.update_schedule_spec(&enabled).unwrap());
        let after = cat.get_schedule("s1").unwrap().unwrap();
        assert!(after.enabled);
        assert_eq!(after.last_slot, Some(5600));
        assert!(cat.set_schedule_enabled("s1", true, 6000).unwrap());
        assert_eq!(
            cat.get_schedule("s1").unwrap().unwrap().last_slot,
            Some(5600),
            "enabling an enabled schedule moved its slot"
        );

        // A deleted schedule stays deleted.
        assert!(cat.delete_schedule("s1").unwrap());
        assert!(!cat.record_schedule_run(&seen).unwrap());
        assert!(!cat.update_schedule_spec(&edited).unwrap());
        assert!(!cat.set_schedule_enabled("s1", true, 7000).unwrap());
        assert!(cat.get_schedule("s1").unwrap().is_none());
    }

    /// Slots that come during a run, and a parse error, are written without
    /// the run state: a run started since the caller's read stays recorded.
    #[test]
    fn slots_and_errors_are_recorded_without_touching_the_run_state() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        cat.put_schedule(&schedule("s1")).unwrap();
        let mut running = cat.get_schedule("s1").unwrap().unwrap();
        running.last_status = Some(Status::Running);
        running.last_backup_uuid = "new-run".into();
        running.skipped = 1;
        assert!(cat.record_schedule_run(&running).unwrap());

        assert!(cat.record_schedule_slots("s1", 4000, 2).unwrap());
        assert!(cat.record_schedule_slots("s1", 3000, 1).unwrap());
        assert!(cat.record_schedule_error("s1", "bad zone").unwrap());
        let now = cat.get_schedule("s1").unwrap().unwrap();
        assert_eq!(
            (now.last_slot, now.skipped),
            (Some(4000), 4),
            "the slot moved back or a count was lost"
        );
        assert_eq!(now.last_error, "bad zone");
        assert_eq!(
            (now.last_status, now.last_backup_uuid.as_str()),
            (Some(Status::Running), "new-run")
        );
        assert!(cat.delete_schedule("s1").unwrap());
        assert!(!cat.record_schedule_slots("s1", 5000, 1).unwrap());
        assert!(!cat.record_schedule_error("s1", "x").unwrap());
    }
}
