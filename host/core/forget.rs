//! Retention: which snapshots of an archive to keep (restic's `forget`
//! rules, in `crate::retention`) and removing the others the cheap way —
//! a soft delete for a local archive (its tables rewritten, the bytes left
//! for `archive optimize`), a removal marker for a remote one (reclaimed by
//! consolidation). When the unused share passes `optimize_above`, the
//! archive is rebuilt (local) or consolidated (remote) right away.

use std::path::Path;

use crate::catalog::schedules::RetentionSpec;
use crate::catalog::BackupRecord;
use crate::error::CoreError;
use crate::jobs::Jobs;
use crate::remote::RemoteArchive;
use crate::retention::{self, Decision, Snapshot};
use crate::wim::{WimArchive, WimWriter};

/// What to forget.
#[derive(Debug, Clone, Default)]
pub struct ForgetRequest {
    /// The archive: a local path or a remote `PLUGIN:NAME`.
    pub archive: String,
    /// Only snapshots of this source (a schedule's); None: all of them.
    pub source: Option<String>,
    pub rules: RetentionSpec,
    /// IANA zone for the calendar buckets; empty: the server's.
    pub time_zone: String,
    pub dry_run: bool,
    /// Rebuild (local) or consolidate (remote) once this share of the
    /// archive is unused; None: never.
    pub optimize_above: Option<f64>,
}

/// One snapshot and what the rules decided.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub backup: BackupRecord,
    pub decision: Decision,
}

/// What forgetting did (or, for a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct ForgetReport {
    /// Every snapshot considered, newest first (each source's ruled apart).
    pub verdicts: Vec<Verdict>,
    pub removed: u64,
    /// Bytes left unused in the archive afterwards (local archives).
    pub reclaimable: u64,
    /// Whether the archive was then rebuilt or consolidated.
    pub optimized: bool,
}

fn zone(name: &str) -> Result<chrono_tz::Tz, CoreError> {
    let z = if name.trim().is_empty() {
        crate::cron::local_zone()
    } else {
        crate::cron::parse_zone(name)
    };
    z.map_err(|e| CoreError::InvalidArgument(e.to_string()))
}

/// Applies `req.rules` to the snapshots of `req.archive`.
pub fn forget(jobs: &Jobs, req: &ForgetRequest) -> Result<ForgetReport, CoreError> {
    let policy = req
        .rules
        .policy()
        .map_err(|e| CoreError::InvalidArgument(e.to_string()))?;
    let tz = zone(&req.time_zone)?;
    let (mut report, remove) = decide(jobs, req, &policy, tz)?;
    if report.verdicts.is_empty() {
        check_known(jobs, &req.archive)?;
    }
    if req.dry_run || remove.is_empty() {
        report.reclaimable = reclaimable(jobs, &req.archive);
        return Ok(report);
    }
    // Decided again once the archive is held: a snapshot deleted (or a
    // backup finished) since the first look changes what the rules keep,
    // and removing by the old verdicts would take one too many. The first
    // look spares a retention with nothing to remove the lock, which a
    // running backup of the archive would refuse.
    let key = Path::new(&req.archive).to_path_buf();
    jobs.lock_archive(&key, crate::jobs::RETENTION)?;
    let result = decide(jobs, req, &policy, tz).and_then(|(fresh, remove)| {
        report = fresh;
        if remove.is_empty() {
            report.reclaimable = reclaimable(jobs, &req.archive);
            return Ok(());
        }
        remove_snapshots(jobs, req, &remove, &mut report)
    });
    jobs.unlock_archive(&key);
    result?;
    Ok(report)
}

/// The verdicts of the rules on the archive's snapshots as the catalog has
/// them now, and the ids of those to remove.
fn decide(
    jobs: &Jobs,
    req: &ForgetRequest,
    policy: &retention::Policy,
    tz: chrono_tz::Tz,
) -> Result<(ForgetReport, Vec<String>), CoreError> {
    let backups: Vec<BackupRecord> = jobs
        .catalog()
        .backups_in_archive(&req.archive)?
        .into_iter()
        .filter(|b| req.source.as_deref().is_none_or(|s| b.source == s))
        .collect();
    let snapshots: Vec<Snapshot> = backups
        .iter()
        .map(|b| Snapshot {
            id: b.uuid.clone(),
            time: chrono::DateTime::from_timestamp_millis(b.created_at).unwrap_or_default(),
        })
        .collect();
    // Each source's snapshots are a history of their own, ruled apart (as
    // restic groups by host and paths): with sources sharing an archive,
    // `--keep-last 2` keeps the last two of each, never removing the only
    // snapshot of one because another was backed up more often.
    let mut sources: Vec<&str> = backups.iter().map(|b| b.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    let mut report = ForgetReport::default();
    for source in sources {
        let group: Vec<Snapshot> = snapshots
            .iter()
            .zip(&backups)
            .filter(|(_, b)| b.source == source)
            .map(|(s, _)| s.clone())
            .collect();
        // A snapshot a running job is reading (a restore) is not protected
        // here: removal only rewrites tables, and open readers keep their file.
        let decisions =
            retention::decide(&group, policy, tz, &[]).map_err(|e| CoreError::InvalidArgument(e.to_string()))?;
        for d in decisions {
            let backup = backups.iter().find(|b| b.uuid == d.id).cloned().unwrap_or_default();
            report.verdicts.push(Verdict { backup, decision: d });
        }
    }
    // Newest first, across sources.
    report.verdicts.sort_by(|a, b| {
        b.backup
            .created_at
            .cmp(&a.backup.created_at)
            .then_with(|| a.backup.uuid.cmp(&b.backup.uuid))
    });
    let remove = report
        .verdicts
        .iter()
        .filter(|v| !v.decision.keep)
        .map(|v| v.decision.id.clone())
        .collect();
    Ok((report, remove))
}

/// Refuses an archive that is neither there nor known to the catalog: a
/// mistyped path or name would otherwise "remove 0 of 0 snapshots" and
/// succeed, and the retention it was meant to apply would silently not
/// happen.
fn check_known(jobs: &Jobs, archive: &str) -> Result<(), CoreError> {
    let catalog = jobs.catalog();
    if !catalog.backups_in_archive(archive)?.is_empty() {
        return Ok(());
    }
    match RemoteArchive::from_id(archive) {
        None if Path::new(archive).exists() => Ok(()),
        None => Err(CoreError::NotFound(format!(
            "no archive at {archive}, and no snapshots of it in the catalog (a remote archive is named with \
             --archive NAME --plugin PLUGIN)"
        ))),
        Some(_) if !catalog.remote_objects(archive)?.is_empty() => Ok(()),
        Some(remote) => Err(CoreError::NotFound(format!(
            "no remote archive {:?} of plugin {} in the catalog (`wimguard backups list` shows the archives; \
             `wimguard catalog rebuild --plugin {}` reads a bucket's)",
            remote.name, remote.plugin, remote.plugin
        ))),
    }
}

/// Refuses retention on a remote chain the store has lost part of (one
/// listing; a store that refuses to list is trusted, as backups trust it).
fn refuse_a_damaged_chain(
    jobs: &Jobs,
    store: &std::sync::Arc<dyn crate::remote::ObjectStore>,
    remote: &RemoteArchive,
) -> Result<(), CoreError> {
    let objects = jobs.catalog().remote_objects(&remote.id())?;
    let lost = crate::remote::check::list_chain_or_trust(store, remote, &objects).lost;
    if lost.is_empty() {
        return Ok(());
    }
    Err(crate::remote::check::refuse_lost_chain(
        remote,
        store.name(),
        &lost,
        "the rules could keep snapshots that cannot be restored and remove ones that can; nothing was removed",
    ))
}

/// Bytes no image uses in a local archive (0 for a remote one, or one
/// that cannot be read).
fn reclaimable(jobs: &Jobs, archive: &str) -> u64 {
    local(archive)
        .and_then(|a| WimArchive::open(a, &**jobs.plugins()).ok())
        .map_or(0, |x| crate::wim::writer::reclaimable_bytes(&x))
}

fn local(archive: &str) -> Option<&Path> {
    RemoteArchive::from_id(archive).is_none().then(|| Path::new(archive))
}

fn remove_snapshots(
    jobs: &Jobs,
    req: &ForgetRequest,
    remove: &[String],
    report: &mut ForgetReport,
) -> Result<(), CoreError> {
    match RemoteArchive::from_id(&req.archive) {
        Some(remote) => {
            let store = jobs.object_store(&remote.plugin)?;
            // Rules that count a snapshot the store has lost as kept would
            // remove the ones that can still be restored.
            refuse_a_damaged_chain(jobs, &store, &remote)?;
            for uuid in remove {
                if let Some(img) = jobs.catalog().remote_image(uuid)? {
                    crate::remote::manage::delete_snapshot(jobs.catalog(), &store, &img)?;
                    report.removed += 1;
                }
            }
            let images = jobs.catalog().remote_images(&req.archive)?;
            let removed = images.iter().filter(|i| i.removed).count() as f64;
            if let Some(limit) = req.optimize_above {
                if !images.is_empty() && removed / images.len() as f64 > limit {
                    // This job holds the archive already. A restore reading
                    // it postpones consolidation to the next retention.
                    match crate::ops::consolidate_held(jobs, &remote.plugin, &remote.name, &mut |_, _| {}) {
                        Ok(_) => report.optimized = true,
                        Err(CoreError::Conflict(m)) => {
                            tracing::warn!(archive = %req.archive, "not consolidated now: {m}")
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        None => {
            let path = Path::new(&req.archive);
            let codecs = &**jobs.plugins();
            // One parse for the soft delete: the writer reads the images.
            // It loads each removed image's tree to count its references;
            // the server-wide budget bounds that as any load.
            let removed = |w: &WimWriter| -> Vec<u32> {
                w.xml()
                    .images()
                    .iter()
                    .filter(|i| remove.contains(&i.backup_uuid))
                    .map(|i| i.index)
                    .collect()
            };
            let (memory, writer) = jobs.append_with_memory(path, removed, None)?;
            let indexes = removed(&writer);
            // Noted first: a crash after the rewrite and before the records
            // go is settled at the next start.
            jobs.catalog().note_pending_removals(&req.archive, remove)?;
            if let Err(e) = crate::wim::writer::soft_delete_with(writer, &indexes) {
                let _ = jobs.catalog().clear_pending_removals(remove);
                return Err(e.into());
            }
            drop(memory);
            report.removed = indexes.len() as u64;
            let arch = WimArchive::open(path, codecs).map_err(CoreError::from)?;
            let now: Vec<(String, u32)> = arch.images().into_iter().map(|i| (i.backup_uuid, i.index)).collect();
            jobs.catalog().forget_local_snapshots(&req.archive, remove, &now)?;
            report.reclaimable = crate::wim::writer::reclaimable_bytes(&arch);
            let share = report.reclaimable as f64 / arch.file_size.max(1) as f64;
            if req.optimize_above.is_some_and(|limit| share > limit) {
                // The rebuild loads every kept image in turn.
                let _memory = jobs
                    .memory()
                    .reserve_images_in_turn(&arch, 1..=arch.image_count(), None)?;
                drop(arch);
                crate::wim::writer::optimize(path, codecs)?;
                report.optimized = true;
                report.reclaimable = 0;
            }
        }
    }
    Ok(())
}

/// The forget request of schedule `s`: its archive and source as its
/// backups recorded them (canonical), its rules and zone unless `rules` or
/// `time_zone` override them.
pub fn request_for_schedule(
    jobs: &Jobs,
    s: &crate::catalog::schedules::ScheduleRecord,
    rules: &RetentionSpec,
    time_zone: &str,
    dry_run: bool,
) -> Result<ForgetRequest, CoreError> {
    let (archive, source) = match jobs.catalog().latest_backup_of_schedule(&s.id)? {
        Some(b) => (b.destination, b.source),
        None => {
            let remote = s.plugins.iter().find(|p| {
                jobs.plugins()
                    .get(p)
                    .is_ok_and(|r| r.kind == crate::catalog::PluginKind::Destination)
            });
            let archive = match remote {
                Some(p) => RemoteArchive::new(p, &s.destination)?.id(),
                None => std::fs::canonicalize(&s.destination)
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| s.destination.clone()),
            };
            let source = std::fs::canonicalize(&s.source)
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| s.source.clone());
            (archive, source)
        }
    };
    Ok(ForgetRequest {
        archive,
        source: Some(source),
        rules: if rules.is_empty() {
            s.retention.clone()
        } else {
            rules.clone()
        },
        time_zone: if time_zone.is_empty() {
            s.time_zone.clone()
        } else {
            time_zone.to_string()
        },
        dry_run,
        optimize_above: None,
    })
}
