//! Scheduled backups: the schedules (made through the API or declared in
//! config.yaml), and the thread that runs them. No gRPC here.
//!
//! - Time: cron expressions in an IANA zone (`crate::cron`, croner: DST per
//!   OCPS). The thread looks at the wall clock every second, so a suspend or
//!   a clock jump delays a run by about a second, never a slot's length.
//! - Run-missed: after downtime, one catch-up run for all the slots missed;
//!   the others are counted as skipped. `last_slot` is stored with every
//!   slot handled, so a restart neither repeats nor loses one.
//! - Overlap: a slot that comes while the schedule's previous run is still
//!   going is coalesced: at most one run waits, further slots are skipped.
//! - `maxParallelBackups`: scheduled runs wait while that many backups (of
//!   any kind) run.
//! - Failure: a failed run is tried again after a backoff (doubling, at most
//!   an hour) unless its next slot comes first; the error is shown in `list`.
//! - After a successful run, the schedule's retention rules are applied
//!   (`crate::forget`) to its snapshots (same archive, same source).
//!
//! Runs go through the same job runner as CLI backups (hooks, plugins,
//! remote destinations), and carry the schedule's id.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::catalog::schedules::{Origin, RetentionSpec, ScheduleRecord};
use crate::catalog::{now_ms, CodecName, Status};
use crate::config::{ScheduleConfig, SchedulerConfig};
use crate::cron::{CronSchedule, Due};
use crate::error::CoreError;
use crate::jobs::{BackupSpec, Jobs};

/// What a user gives for a schedule (create, update, config.yaml).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleSpec {
    pub name: String,
    pub cron: String,
    pub time_zone: String,
    pub source: String,
    pub destination: String,
    pub plugins: Vec<String>,
    pub compression: String,
    pub excludes: Vec<String>,
    pub retention: RetentionSpec,
    pub enabled: bool,
}

/// The codec a schedule asks for; None: the server's default.
fn codec_of(spec: &ScheduleSpec) -> Result<Option<CodecName>, CoreError> {
    match spec.compression.trim() {
        "" => Ok(None),
        name => CodecName::parse(name).map(Some).map_err(CoreError::InvalidArgument),
    }
}

impl From<&ScheduleConfig> for ScheduleSpec {
    fn from(c: &ScheduleConfig) -> Self {
        ScheduleSpec {
            name: String::new(),
            cron: c.cron.clone(),
            time_zone: c.time_zone.clone(),
            source: c.source.clone(),
            destination: c.destination.clone(),
            plugins: c.plugins.clone(),
            compression: c.compression.clone(),
            excludes: c.excludes.clone(),
            retention: c.retention.clone(),
            enabled: c.enabled,
        }
    }
}

/// In memory: which schedules have a run going, and which wait to run again.
#[derive(Default)]
struct Runs {
    running: HashMap<String, String>,
    queued: HashSet<String>,
}

/// How an attempt to start a schedule's run ended.
enum Start {
    Started(String),
    /// A run of it (this backup) is going or being finished: nothing was
    /// started or recorded.
    Busy(String),
    /// The schedule was deleted.
    Gone,
    /// The backup was refused; the error and a retry are recorded.
    Failed(String),
}

/// The scheduler: owns the schedules' runs.
pub struct Scheduler {
    jobs: Arc<Jobs>,
    settings: SchedulerConfig,
    runs: Mutex<Runs>,
    wake: Condvar,
    stop: AtomicBool,
}

fn to_time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// Longest retry backoff.
const RETRY_MAX: Duration = Duration::from_secs(3600);

impl Scheduler {
    pub fn new(jobs: Arc<Jobs>, settings: SchedulerConfig) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            jobs,
            settings,
            runs: Mutex::new(Runs::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        })
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, Runs> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks a spec: cron expression, zone, retention, paths. Errors name
    /// what is wrong (INVALID_ARGUMENT).
    pub fn validate(&self, spec: &ScheduleSpec) -> Result<CronSchedule, CoreError> {
        let cron =
            CronSchedule::parse(&spec.cron, &spec.time_zone).map_err(|e| CoreError::InvalidArgument(e.to_string()))?;
        spec.retention
            .policy()
            .map_err(|e| CoreError::InvalidArgument(format!("retention: {e}")))?;
        if !spec.source.starts_with('/') {
            return Err(CoreError::InvalidArgument(format!(
                "the source {:?} must be an absolute path",
                spec.source
            )));
        }
        if spec.destination.trim().is_empty() {
            return Err(CoreError::InvalidArgument("the destination is empty".into()));
        }
        let remote = spec.plugins.iter().any(|p| {
            self.jobs
                .plugins()
                .get(p)
                .is_ok_and(|r| r.kind == crate::catalog::PluginKind::Destination)
        });
        for p in &spec.plugins {
            self.jobs.plugins().get(p)?;
        }
        if !remote && !spec.destination.starts_with('/') {
            return Err(CoreError::InvalidArgument(format!(
                "the destination {:?} must be an absolute path (or the name of a remote archive with a destination \
                 plugin)",
                spec.destination
            )));
        }
        if let Some(codec) = codec_of(spec)? {
            self.jobs.resolve_codec(&codec)?;
        }
        Ok(cron)
    }

    /// Creates a schedule (origin `api`).
    pub fn create(&self, spec: &ScheduleSpec) -> Result<ScheduleRecord, CoreError> {
        self.validate(spec)?;
        let now = now_ms();
        let rec = ScheduleRecord {
            id: uuid::Uuid::new_v4().to_string(),
            origin: Origin::Api,
            created_at: now,
            updated_at: now,
            // Slots count from now: a new schedule does not catch up the past.
            last_slot: Some(now),
            ..with_spec(ScheduleRecord::default(), spec)
        };
        self.jobs.catalog().put_schedule(&rec)?;
        self.wake.notify_all();
        Ok(rec)
    }

    fn get_api(&self, id: &str) -> Result<ScheduleRecord, CoreError> {
        let rec = self
            .jobs
            .catalog()
            .get_schedule(id)?
            .ok_or_else(|| CoreError::NotFound(format!("no schedule {id}")))?;
        if rec.origin == Origin::Config {
            return Err(CoreError::FailedPrecondition(format!(
                "schedule {id} ({}) is declared in config.yaml; change it there and restart the server",
                rec.name
            )));
        }
        Ok(rec)
    }

    /// Replaces a schedule's spec (not its run history).
    pub fn update(&self, id: &str, spec: &ScheduleSpec) -> Result<ScheduleRecord, CoreError> {
        let old = self.get_api(id)?;
        self.validate(spec)?;
        let rec = ScheduleRecord {
            updated_at: now_ms(),
            ..with_spec(old, spec)
        };
        // The spec's columns only: the scheduler may be recording a run.
        if !self.jobs.catalog().update_schedule_spec(&rec)? {
            return Err(CoreError::NotFound(format!("no schedule {id}")));
        }
        self.wake.notify_all();
        self.get(id)
    }

    pub fn set_enabled(&self, id: &str, enabled: bool) -> Result<ScheduleRecord, CoreError> {
        self.get_api(id)?;
        // Re-enabled: slots count from now, no catch-up of the paused time.
        if !self.jobs.catalog().set_schedule_enabled(id, enabled, now_ms())? {
            return Err(CoreError::NotFound(format!("no schedule {id}")));
        }
        self.wake.notify_all();
        self.get(id)
    }

    pub fn delete(&self, id: &str) -> Result<(), CoreError> {
        self.get_api(id)?;
        self.jobs.catalog().delete_schedule(id)?;
        self.runs().queued.remove(id);
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<ScheduleRecord, CoreError> {
        self.jobs
            .catalog()
            .get_schedule(id)?
            .ok_or_else(|| CoreError::NotFound(format!("no schedule {id}")))
    }

    /// When the schedule fires next (None: disabled, or never again).
    pub fn next_run(&self, rec: &ScheduleRecord) -> Option<i64> {
        if !rec.enabled {
            return None;
        }
        let cron = CronSchedule::parse(&rec.cron, &rec.time_zone).ok()?;
        let from = rec.last_slot.unwrap_or(rec.created_at).max(now_ms() - 1000);
        let next = cron.next_after(to_time(from))?.timestamp_millis();
        Some(match rec.retry_at {
            Some(r) => r.min(next),
            None => next,
        })
    }

    /// Starts a run of schedule `id` now, outside its slots. Refused while
    /// one runs.
    pub fn run_now(&self, id: &str) -> Result<String, CoreError> {
        self.get(id)?;
        match self.start_run(id, |_| {})? {
            Start::Started(uuid) => Ok(uuid),
            Start::Busy(uuid) => Err(CoreError::Conflict(format!(
                "schedule {id} is already running (backup {uuid})"
            ))),
            Start::Gone => Err(CoreError::NotFound(format!("no schedule {id}"))),
            Start::Failed(error) => Err(CoreError::Conflict(error)),
        }
    }

    /// Reconciles the schedules of config.yaml into the catalog: new ones
    /// added, changed ones updated (their history kept), removed ones
    /// deleted. Every one is checked first; a bad one is an error naming it.
    pub fn reconcile(&self, declared: &std::collections::BTreeMap<String, ScheduleConfig>) -> Result<(), CoreError> {
        for (name, c) in declared {
            self.validate(&ScheduleSpec::from(c))
                .map_err(|e| CoreError::InvalidArgument(format!("config.yaml: schedules.{name}: {e}")))?;
        }
        let existing: Vec<ScheduleRecord> = self
            .jobs
            .catalog()
            .list_schedules()?
            .into_iter()
            .filter(|s| s.origin == Origin::Config)
            .collect();
        for s in &existing {
            if !declared.contains_key(&s.name) {
                self.jobs.catalog().delete_schedule(&s.id)?;
            }
        }
        let now = now_ms();
        for (name, c) in declared {
            let spec = ScheduleSpec {
                name: name.clone(),
                ..ScheduleSpec::from(c)
            };
            let rec = match existing.iter().find(|s| &s.name == name) {
                Some(old) => ScheduleRecord {
                    updated_at: now,
                    ..with_spec(old.clone(), &spec)
                },
                None => ScheduleRecord {
                    id: uuid::Uuid::new_v4().to_string(),
                    origin: Origin::Config,
                    created_at: now,
                    updated_at: now,
                    last_slot: Some(now),
                    ..with_spec(ScheduleRecord::default(), &spec)
                },
            };
            self.jobs.catalog().put_schedule(&rec)?;
        }
        Ok(())
    }

    /// Runs the scheduler on its own thread until [`stop`](Self::stop).
    pub fn spawn(self: &Arc<Self>) -> std::thread::JoinHandle<()> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("scheduler".into())
            .spawn(move || {
                while !me.stop.load(Ordering::Relaxed) {
                    if let Err(e) = me.tick(to_time(now_ms())) {
                        tracing::warn!("scheduler: {e}");
                    }
                    let runs = me.runs();
                    // Short slices: the wall clock is read again every second.
                    let _ = me.wake.wait_timeout(runs, Duration::from_secs(1));
                }
            })
            .expect("spawning the scheduler thread")
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wake.notify_all();
    }

    fn capacity(&self) -> bool {
        self.jobs.running_count() < self.settings.max_parallel_backups.max(1) as usize
    }

    /// One look at every schedule.
    fn tick(&self, now: DateTime<Utc>) -> Result<(), CoreError> {
        for id in self.jobs.catalog().schedule_ids()? {
            // Each schedule as it is now: an earlier one's retention may
            // have taken a while, and this one changed or went meanwhile.
            let Some(mut rec) = self.jobs.catalog().get_schedule(&id)? else {
                continue;
            };
            let running = self.runs().running.get(&rec.id).cloned();
            if let Some(uuid) = &running {
                if !self.jobs.is_running(uuid) {
                    // The run counts as going until its end and retention
                    // are recorded: a `run-now` meanwhile is refused, not
                    // started against the archive retention holds, and its
                    // record is not overwritten by this one.
                    self.finish(&mut rec, uuid, now);
                    self.runs().running.remove(&rec.id);
                    // Retention may have taken a while: decide on the
                    // schedule as it is now (disabled, edited or deleted
                    // meanwhile), with the outcome just recorded.
                    match self.jobs.catalog().get_schedule(&rec.id)? {
                        Some(fresh) => rec = fresh,
                        None => continue,
                    }
                }
            }
            if !rec.enabled {
                continue;
            }
            let cron = match CronSchedule::parse(&rec.cron, &rec.time_zone) {
                Ok(c) => c,
                Err(e) => {
                    if rec.last_error != e.to_string() {
                        self.jobs.catalog().record_schedule_error(&rec.id, &e.to_string())?;
                    }
                    continue;
                }
            };
            let last = to_time(rec.last_slot.unwrap_or(rec.created_at));
            let due = crate::cron::due(&cron, last, now);
            let slot = match due {
                Due::RunNow { slot, missed, .. } => Some((slot, missed)),
                _ => None,
            };
            if self.runs().running.contains_key(&rec.id) {
                if let Some((slot, missed)) = slot {
                    self.coalesce(&rec.id, slot, missed)?;
                }
                continue;
            }
            let queued = self.runs().queued.contains(&rec.id);
            let retry = rec.retry_at.is_some_and(|r| r <= now.timestamp_millis());
            if !(queued || retry || slot.is_some()) || !self.capacity() {
                continue; // nothing due, or wait for room (the slot stays due)
            }
            let started = self.start_run(&rec.id, |r| {
                if let Some((slot, missed)) = slot {
                    r.last_slot = Some(slot.timestamp_millis());
                    r.skipped += missed;
                }
                r.retry_at = None;
            })?;
            if let (Start::Busy(_), Some((slot, missed))) = (started, slot) {
                // A `run-now` started it since this tick looked: the slot
                // waits for that run, like any slot that comes during a run.
                self.coalesce(&rec.id, slot, missed)?;
            }
        }
        Ok(())
    }

    /// A slot came while a run of schedule `id` is going: at most one run
    /// waits for it, later slots (and the `missed` ones before this slot)
    /// count as skipped. Writes only the slot columns, so the going run's
    /// state, recorded by whoever started it, stays as it is.
    fn coalesce(&self, id: &str, slot: DateTime<Utc>, missed: u64) -> Result<(), CoreError> {
        let newly = self.runs().queued.insert(id.to_string());
        let skipped = if newly { missed } else { missed + 1 };
        self.jobs
            .catalog()
            .record_schedule_slots(id, slot.timestamp_millis(), skipped)?;
        Ok(())
    }

    /// Starts a run of schedule `id` unless one is going, and records it:
    /// `prepare` sets what the caller decided (the slot taken) on the
    /// schedule as it is in the catalog. The check, the start and the record
    /// happen under one lock: `run-now` and the scheduler's thread may both
    /// try, and only one may start it and write its run state.
    ///
    /// A queued run is taken by the run that starts (or fails to start:
    /// its retry takes over); the catalog's errors are returned as they are.
    fn start_run(&self, id: &str, prepare: impl FnOnce(&mut ScheduleRecord)) -> Result<Start, CoreError> {
        let mut runs = self.runs();
        if let Some(uuid) = runs.running.get(id) {
            return Ok(Start::Busy(uuid.clone()));
        }
        let found = self.jobs.catalog().get_schedule(id)?;
        runs.queued.remove(id);
        let Some(mut rec) = found else {
            return Ok(Start::Gone);
        };
        prepare(&mut rec);
        let rec = &mut rec;
        let spec = BackupSpec {
            source: PathBuf::from(&rec.source),
            destination: PathBuf::from(&rec.destination),
            destination_as_given: rec.destination.clone(),
            compression: rec.compression.clone(),
            name: None,
            description: format!("scheduled ({})", if rec.name.is_empty() { &rec.id } else { &rec.name }),
            excludes: rec.excludes.clone(),
            plugins: rec.plugins.clone(),
            remote: None,
            schedule_id: rec.id.clone(),
        };
        let now = now_ms();
        rec.last_run_at = Some(now);
        let started = match self.jobs.start_backup(spec) {
            Ok(rx) => {
                let uuid = rx.borrow().record.uuid.clone();
                runs.running.insert(rec.id.clone(), uuid.clone());
                rec.last_backup_uuid = uuid.clone();
                rec.last_status = Some(Status::Running);
                Start::Started(uuid)
            }
            Err(e) => {
                tracing::warn!(schedule = %rec.id, "a scheduled backup could not start: {e}");
                self.failed(rec, e.to_string(), now);
                Start::Failed(e.to_string())
            }
        };
        if let Err(e) = self.jobs.catalog().record_schedule_run(rec) {
            tracing::warn!(schedule = %rec.id, "cannot record a scheduled run: {e}");
        }
        Ok(started)
    }

    fn failed(&self, rec: &mut ScheduleRecord, error: String, now: i64) {
        rec.last_status = Some(Status::Failed);
        rec.last_error = error;
        rec.failures = rec.failures.saturating_add(1);
        let backoff = Duration::from_secs(self.settings.retry_after_seconds.max(1))
            .saturating_mul(1 << rec.failures.saturating_sub(1).min(16))
            .min(RETRY_MAX);
        rec.retry_at = Some(now + backoff.as_millis() as i64);
    }

    /// A run ended: record it; retention after a success, a retry after a failure.
    fn finish(&self, rec: &mut ScheduleRecord, uuid: &str, now: DateTime<Utc>) {
        let backup = match self.jobs.catalog().get_backup(uuid) {
            Ok(Some(b)) => b,
            _ => return,
        };
        rec.last_status = Some(backup.status);
        if backup.status() == Status::Succeeded {
            rec.failures = 0;
            rec.retry_at = None;
            rec.last_error.clear();
            if !rec.retention.is_empty() {
                let req = crate::forget::ForgetRequest {
                    archive: backup.destination.clone(),
                    source: Some(backup.source.clone()),
                    rules: rec.retention.clone(),
                    time_zone: rec.time_zone.clone(),
                    dry_run: false,
                    optimize_above: (self.settings.optimize_above < 1.0).then_some(self.settings.optimize_above),
                };
                match crate::metrics::timed("retention", || crate::forget::forget(&self.jobs, &req)) {
                    Ok(r) if r.removed > 0 => {
                        tracing::info!(schedule = %rec.id, removed = r.removed, "retention removed snapshots")
                    }
                    Ok(_) => {}
                    Err(e) => rec.last_error = format!("the backup succeeded, but retention failed: {e}"),
                }
            }
        } else {
            let error = if backup.error.is_empty() {
                format!("the backup ended {}", backup.status)
            } else {
                backup.error.clone()
            };
            self.failed(rec, error, now.timestamp_millis());
        }
        if let Err(e) = self.jobs.catalog().record_schedule_run(rec) {
            tracing::warn!(schedule = %rec.id, "cannot record the end of a scheduled run: {e}");
        }
    }
}

/// `rec` with what `spec` sets (its id, origin and run history kept).
fn with_spec(rec: ScheduleRecord, spec: &ScheduleSpec) -> ScheduleRecord {
    ScheduleRecord {
        name: spec.name.clone(),
        cron: spec.cron.trim().to_string(),
        time_zone: spec.time_zone.trim().to_string(),
        source: spec.source.clone(),
        destination: spec.destination.clone(),
        plugins: spec.plugins.clone(),
        // Checked by `validate` before any record is made.
        compression: codec_of(spec).unwrap_or_default(),
        excludes: spec.excludes.clone(),
        retention: spec.retention.clone(),
        enabled: spec.enabled,
        ..rec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::tests::jobs_for_tests;

    /// `run-now` from many callers at once (as from the scheduler's thread
    /// beside a user): one run starts, the others are told it runs, and
    /// nothing records a failure or a retry over the run that started.
    #[test]
    fn concurrent_starts_of_one_schedule_start_one_run_and_record_it() {
        let home = tempfile::tempdir().unwrap();
        let jobs = jobs_for_tests(home.path());
        let src = home.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for i in 0..200 {
            std::fs::write(src.join(format!("f{i}")), format!("file {i} ").repeat(200)).unwrap();
        }
        let scheduler = Scheduler::new(jobs.clone(), SchedulerConfig::default());
        let rec = scheduler
            .create(&ScheduleSpec {
                cron: "0 0 1 1 *".into(),
                time_zone: "UTC".into(),
                source: src.display().to_string(),
                destination: home.path().join("a.wim").display().to_string(),
                compression: "none".into(),
                enabled: true,
                ..ScheduleSpec::default()
            })
            .unwrap();

        let callers = 8;
        let barrier = std::sync::Barrier::new(callers);
        let results: Vec<Result<String, CoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..callers)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        scheduler.run_now(&rec.id)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let started: Vec<&String> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(started.len(), 1, "{results:?}");
        for r in &results {
            if let Err(e) = r {
                assert!(e.to_string().contains("already running"), "{e}");
            }
        }
        let after = scheduler.get(&rec.id).unwrap();
        assert_eq!(&after.last_backup_uuid, started[0]);
        assert_eq!(after.last_status, Some(Status::Running));
        assert_eq!(
            (after.failures, after.retry_at, after.last_error.as_str()),
            (0, None, "")
        );

        // Its end is recorded by a tick; then it can be started again.
        let wait_end = |uuid: &str| {
            let waiting = std::time::Instant::now();
            while jobs.is_running(uuid) {
                assert!(
                    waiting.elapsed() < Duration::from_secs(120),
                    "backup {uuid} never ended"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        wait_end(started[0]);
        scheduler.tick(to_time(now_ms())).unwrap();
        let after = scheduler.get(&rec.id).unwrap();
        assert_eq!(after.last_status, Some(Status::Succeeded), "{after:?}");
        let again = scheduler.run_now(&rec.id).unwrap();
        assert_ne!(&again, started[0]);
        wait_end(&again);
        scheduler.tick(to_time(now_ms())).unwrap();
        let after = scheduler.get(&rec.id).unwrap();
        assert_eq!(
            (after.last_status, after.last_backup_uuid),
            (Some(Status::Succeeded), again)
        );
    }
}
