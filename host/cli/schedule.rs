//! `wimguard schedule …` (scheduled backups) and `wimguard forget`
//! (retention on demand).

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::output::{print_json, status_word, time_human, Table};
use super::{CliError, ClientOptions};
use crate::api::v1 as pb;

/// The retention rules (restic's `forget` options).
#[derive(Args, Debug, Clone, Default)]
pub struct RetentionArgs {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// … of each of the last N days (calendar days in the time zone).
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// … of each of the last N ISO weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// … of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// … of each of the last N years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this long of the newest one (e.g. 7d, 1y6m, 12h).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
}

impl RetentionArgs {
    fn policy(&self) -> pb::RetentionPolicy {
        pb::RetentionPolicy {
            keep_last: self.keep_last.unwrap_or(0),
            keep_hourly: self.keep_hourly.unwrap_or(0),
            keep_daily: self.keep_daily.unwrap_or(0),
            keep_weekly: self.keep_weekly.unwrap_or(0),
            keep_monthly: self.keep_monthly.unwrap_or(0),
            keep_yearly: self.keep_yearly.unwrap_or(0),
            keep_within: self.keep_within.clone().unwrap_or_default(),
        }
    }
}

/// What a schedule runs.
#[derive(Args, Debug, Clone)]
pub struct ScheduleSpecArgs {
    /// Cron expression: 5 fields (minute hour day month weekday) or 6 with seconds first.
    #[arg(long)]
    pub cron: String,
    /// Directory to back up (absolute).
    #[arg(long)]
    pub source: String,
    /// Archive path (absolute), or a remote archive's name with a destination plugin.
    #[arg(long)]
    pub destination: String,
    /// Plugins to attach (hooks, a destination), repeatable.
    #[arg(long = "plugin", value_name = "NAME")]
    pub plugins: Vec<String>,
    /// Codec for a new archive (none, xpress, lzx or a codec plugin).
    #[arg(long)]
    pub compression: Option<String>,
    /// gitignore-style exclude pattern, repeatable.
    #[arg(long = "exclude", value_name = "PAT")]
    pub excludes: Vec<String>,
    /// IANA time zone of the cron expression and the retention buckets (default: the server's).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// A name to show in lists.
    #[arg(long)]
    pub name: Option<String>,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

impl ScheduleSpecArgs {
    fn schedule(&self, uuid: &str) -> pb::Schedule {
        pb::Schedule {
            uuid: uuid.into(),
            name: self.name.clone().unwrap_or_default(),
            cron: self.cron.clone(),
            time_zone: self.time_zone.clone().unwrap_or_default(),
            source: self.source.clone(),
            destination: self.destination.clone(),
            plugins: self.plugins.clone(),
            codec: self.compression.clone().unwrap_or_default(),
            excludes: self.excludes.clone(),
            retention: Some(self.retention.policy()),
            enabled: !self.disabled,
            ..pb::Schedule::default()
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum ScheduleCommand {
    /// Create a scheduled backup.
    Create(ScheduleSpecArgs),
    /// List schedules with their next run, last run and last status.
    List,
    /// Show one schedule.
    Show { id: String },
    /// Replace a schedule's settings (its history stays).
    Update {
        id: String,
        #[command(flatten)]
        spec: ScheduleSpecArgs,
    },
    /// Delete a schedule (its backups stay).
    Delete { id: String },
    /// Enable a schedule (slots count from now).
    Enable { id: String },
    /// Disable a schedule.
    Disable { id: String },
    /// Start a run now, outside the schedule's slots.
    RunNow { id: String },
}

fn ts(t: &Option<prost_types::Timestamp>) -> String {
    time_human(t)
}

fn ts_json(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref().map(|t| json!(t.to_string())).unwrap_or(Value::Null)
}

pub fn schedule_json(s: &pb::Schedule) -> Value {
    let r = s.retention.clone().unwrap_or_default();
    json!({
        "id": s.uuid, "name": s.name, "origin": s.origin, "cron": s.cron, "time_zone": s.time_zone,
        "source": s.source, "destination": s.destination, "plugins": s.plugins, "compression": s.codec,
        "excludes": s.excludes, "enabled": s.enabled,
        "retention": {
            "keep_last": r.keep_last, "keep_hourly": r.keep_hourly, "keep_daily": r.keep_daily,
            "keep_weekly": r.keep_weekly, "keep_monthly": r.keep_monthly, "keep_yearly": r.keep_yearly,
            "keep_within": r.keep_within,
        },
        "next_run_at": ts_json(&s.next_run_at), "last_run_at": ts_json(&s.last_run_at),
        "last_backup_uuid": s.last_backup_uuid,
        "last_status": if s.last_status == 0 { Value::Null } else { json!(status_word(s.last_status())) },
        "last_error": s.last_error, "skipped_runs": s.skipped_runs,
    })
}

fn show_one(s: &pb::Schedule, json: bool) {
    if json {
        print_json(&schedule_json(s));
        return;
    }
    let r = s.retention.clone().unwrap_or_default();
    let mut rules = Vec::new();
    for (k, v) in [
        ("last", r.keep_last),
        ("hourly", r.keep_hourly),
        ("daily", r.keep_daily),
        ("weekly", r.keep_weekly),
        ("monthly", r.keep_monthly),
        ("yearly", r.keep_yearly),
    ] {
        if v > 0 {
            rules.push(format!("{k} {v}"));
        }
    }
    if !r.keep_within.is_empty() {
        rules.push(format!("within {}", r.keep_within));
    }
    let rows = [
        ("ID", s.uuid.clone()),
        ("Name", s.name.clone()),
        ("Origin", s.origin.clone()),
        (
            "Cron",
            format!(
                "{} ({})",
                s.cron,
                if s.time_zone.is_empty() {
                    "server time"
                } else {
                    &s.time_zone
                }
            ),
        ),
        ("Source", s.source.clone()),
        ("Destination", s.destination.clone()),
        ("Plugins", s.plugins.join(", ")),
        (
            "Retention",
            if rules.is_empty() {
                "keep everything".into()
            } else {
                rules.join(", ")
            },
        ),
        ("Enabled", s.enabled.to_string()),
        ("Next run", ts(&s.next_run_at)),
        ("Last run", ts(&s.last_run_at)),
        (
            "Last status",
            if s.last_status == 0 {
                "-".into()
            } else {
                status_word(s.last_status())
            },
        ),
        ("Last backup", s.last_backup_uuid.clone()),
        ("Last error", s.last_error.clone()),
        ("Skipped runs", s.skipped_runs.to_string()),
    ];
    for (k, v) in rows {
        outln!("{:<13} {v}", format!("{k}:"));
    }
}

pub async fn run(args: ScheduleArgs) -> Result<(), CliError> {
    let json = args.client.json;
    let client = args.client.client()?;
    match args.command {
        ScheduleCommand::Create(spec) => show_one(&client.create_schedule(spec.schedule("")).await?, json),
        ScheduleCommand::List => {
            let all = client.list_schedules().await?;
            if json {
                print_json(&Value::Array(all.iter().map(schedule_json).collect()));
                return Ok(());
            }
            if all.is_empty() {
                outln!("no schedules");
                return Ok(());
            }
            let mut t = Table::new(&[
                "ID",
                "NAME",
                "CRON",
                "SOURCE",
                "DESTINATION",
                "NEXT RUN",
                "LAST RUN",
                "LAST STATUS",
            ]);
            for s in &all {
                t.row(vec![
                    s.uuid.clone(),
                    s.name.clone(),
                    if s.enabled {
                        s.cron.clone()
                    } else {
                        format!("{} (disabled)", s.cron)
                    },
                    s.source.clone(),
                    s.destination.clone(),
                    ts(&s.next_run_at),
                    ts(&s.last_run_at),
                    if s.last_status == 0 {
                        "-".into()
                    } else if s.last_error.is_empty() {
                        status_word(s.last_status())
                    } else {
                        format!("{}: {}", status_word(s.last_status()), s.last_error)
                    },
                ]);
            }
            t.print();
        }
        ScheduleCommand::Show { id } => show_one(&client.get_schedule(&id).await?, json),
        ScheduleCommand::Update { id, spec } => show_one(&client.update_schedule(spec.schedule(&id)).await?, json),
        ScheduleCommand::Delete { id } => {
            client.delete_schedule(&id).await?;
            if json {
                print_json(&json!({ "id": id, "deleted": true }));
            } else {
                outln!("deleted schedule {id} (its backups stay)");
            }
        }
        ScheduleCommand::Enable { id } => show_one(&client.enable_schedule(&id, true).await?, json),
        ScheduleCommand::Disable { id } => show_one(&client.enable_schedule(&id, false).await?, json),
        ScheduleCommand::RunNow { id } => {
            let uuid = client.run_schedule_now(&id).await?;
            if json {
                print_json(&json!({ "schedule_id": id, "backup_uuid": uuid }));
            } else {
                outln!("started backup {uuid} (follow it with `wimguard backups watch {uuid}`)");
            }
        }
    }
    Ok(())
}

/// `wimguard forget`.
#[derive(Args, Debug, Clone)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// The snapshots of this schedule (its archive and source; its rules
    /// and time zone unless given here).
    #[arg(long, conflicts_with = "archive")]
    pub schedule: Option<String>,
    /// Every snapshot of this archive (a path, or a remote archive's name
    /// with --plugin); each source's snapshots are ruled apart.
    #[arg(long)]
    pub archive: Option<String>,
    /// The destination plugin of a remote --archive.
    #[arg(long)]
    pub plugin: Option<String>,
    /// IANA time zone for the calendar rules (default: the schedule's, else the server's).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// Say what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub retention: RetentionArgs,
}

pub async fn forget(args: ForgetArgs) -> Result<(), CliError> {
    let json = args.client.json;
    if args.schedule.is_none() && args.archive.is_none() {
        return Err(CliError::usage(
            "name what to forget in: --schedule ID or --archive PATH|NAME",
        ));
    }
    let archive = match (&args.archive, &args.plugin) {
        (Some(a), None) => super::absolute_path(std::path::Path::new(a), "archive")?,
        (Some(a), Some(_)) => a.clone(),
        (None, _) => String::new(),
    };
    let client = args.client.client()?;
    let r = client
        .forget(pb::ForgetRequest {
            schedule_uuid: args.schedule.clone().unwrap_or_default(),
            archive,
            plugin: args.plugin.clone().unwrap_or_default(),
            retention: Some(args.retention.policy()),
            time_zone: args.time_zone.clone().unwrap_or_default(),
            dry_run: args.dry_run,
        })
        .await?;
    if json {
        let decisions: Vec<Value> = r
            .decisions
            .iter()
            .map(|d| {
                json!({
                    "backup_uuid": d.backup_uuid, "created_at": ts_json(&d.created_at), "keep": d.keep,
                    "action": if d.keep { "keep" } else { "remove" }, "reasons": d.reasons,
                    "source": d.source, "name": d.name,
                })
            })
            .collect();
        print_json(&json!({
            "dry_run": args.dry_run, "decisions": decisions, "removed": r.removed,
            "reclaimable_bytes": r.reclaimable_bytes, "optimized": r.optimized,
        }));
        return Ok(());
    }
    let mut t = Table::new(&["BACKUP", "CREATED", "ACTION", "REASONS"]);
    for d in &r.decisions {
        t.row(vec![
            d.backup_uuid.clone(),
            ts(&d.created_at),
            if d.keep { "keep".into() } else { "remove".into() },
            d.reasons.join(", "),
        ]);
    }
    t.print();
    let remove = r.decisions.iter().filter(|d| !d.keep).count();
    if args.dry_run {
        outln!(
            "dry run: {remove} of {} snapshots would be removed; nothing changed",
            r.decisions.len()
        );
    } else {
        outln!(
            "removed {} of {} snapshots{}",
            r.removed,
            r.decisions.len(),
            if r.optimized {
                "; the archive was then rebuilt"
            } else {
                ""
            }
        );
    }
    Ok(())
}
