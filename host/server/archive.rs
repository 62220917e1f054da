//! ArchiveService: consolidating remote chains, rebuilding the catalog.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{convert, Shared};
use crate::api::v1 as pb;
use crate::error::CoreError;

pub struct ArchiveApi {
    shared: Arc<Shared>,
}

impl ArchiveApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        ArchiveApi { shared }
    }
}

type ConsolidateStream = Pin<Box<dyn Stream<Item = Result<pb::ConsolidateEvent, Status>> + Send>>;
type RebuildStream = Pin<Box<dyn Stream<Item = Result<pb::RebuildEvent, Status>> + Send>>;
type CheckStream = Pin<Box<dyn Stream<Item = Result<pb::CheckEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::archive_service_server::ArchiveService for ArchiveApi {
    type ConsolidateArchiveStream = ConsolidateStream;
    type RebuildCatalogStream = RebuildStream;
    type CheckArchiveStream = CheckStream;

    async fn check_archive(&self, req: Request<pb::CheckArchiveRequest>) -> Result<Response<CheckStream>, Status> {
        let r = req.into_inner();
        if r.name.is_empty() || r.plugin.is_empty() {
            return Err(Status::invalid_argument(
                "the archive's name and its destination plugin are required",
            ));
        }
        let jobs = self.shared.jobs.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::CheckEvent, Status>>(16);
        tokio::task::spawn_blocking(move || {
            let opts = crate::remote::check::CheckOptions {
                read_data: r.read_data,
                repair: r.repair,
            };
            let mut progress = every_200ms(pb::Phase::Verifying, |p| {
                let _ = tx.blocking_send(Ok(pb::CheckEvent {
                    progress: Some(p),
                    result: None,
                }));
            });
            let result = crate::ops::check_archive(&jobs, &r.plugin, &r.name, opts, &mut progress);
            let last = result
                .map(|c| pb::CheckEvent {
                    progress: None,
                    result: Some(convert::chain_check(&c)),
                })
                .map_err(convert::status);
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn consolidate_archive(
        &self,
        req: Request<pb::ConsolidateArchiveRequest>,
    ) -> Result<Response<ConsolidateStream>, Status> {
        let r = req.into_inner();
        if r.name.is_empty() || r.plugin.is_empty() {
            return Err(Status::invalid_argument(
                "the archive's name and its destination plugin are required",
            ));
        }
        let jobs = self.shared.jobs.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::ConsolidateEvent, Status>>(16);
        tokio::task::spawn_blocking(move || {
            let mut progress = every_200ms(pb::Phase::Uploading, |p| {
                let _ = tx.blocking_send(Ok(pb::ConsolidateEvent {
                    progress: Some(p),
                    result: None,
                }));
            });
            let result = crate::ops::consolidate(&jobs, &r.plugin, &r.name, &mut progress);
            let last = result
                .map(|c| pb::ConsolidateEvent {
                    progress: None,
                    result: Some(pb::ConsolidateResult {
                        objects_before: c.objects_before,
                        bytes_before: c.bytes_before,
                        images_kept: c.images_kept,
                        images_dropped: c.images_dropped,
                        bytes_after: c.bytes_after,
                        key: c.key,
                    }),
                })
                .map_err(convert::status);
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn forget(&self, req: Request<pb::ForgetRequest>) -> Result<Response<pb::ForgetResponse>, Status> {
        let r = req.into_inner();
        let rules = convert::retention_from_pb(r.retention.as_ref());
        let jobs = self.shared.jobs.clone();
        let report = tokio::task::spawn_blocking(move || {
            let request = if !r.schedule_uuid.is_empty() {
                let s = jobs
                    .catalog()
                    .get_schedule(&r.schedule_uuid)?
                    .ok_or_else(|| CoreError::NotFound(format!("no schedule {}", r.schedule_uuid)))?;
                crate::forget::request_for_schedule(&jobs, &s, &rules, &r.time_zone, r.dry_run)?
            } else if r.archive.is_empty() {
                return Err(CoreError::InvalidArgument(
                    "name a schedule (--schedule ID) or an archive (--archive PATH, or NAME with --plugin)".into(),
                ));
            } else {
                let archive = if r.plugin.is_empty() {
                    if !r.archive.starts_with('/') {
                        return Err(CoreError::InvalidArgument(format!(
                            "{} is not an absolute path (a remote archive needs --plugin)",
                            r.archive
                        )));
                    }
                    std::fs::canonicalize(&r.archive)
                        .map(|p| p.display().to_string())
                        .unwrap_or(r.archive.clone())
                } else {
                    crate::remote::RemoteArchive::new(&r.plugin, &r.archive)?.id()
                };
                crate::forget::ForgetRequest {
                    archive,
                    source: None,
                    rules,
                    time_zone: r.time_zone.clone(),
                    dry_run: r.dry_run,
                    optimize_above: None,
                }
            };
            if request.rules.is_empty() {
                return Err(CoreError::InvalidArgument(
                    "no retention rule: give at least one of --keep-last, --keep-hourly, --keep-daily, \
                     --keep-weekly, --keep-monthly, --keep-yearly, --keep-within"
                        .into(),
                ));
            }
            crate::forget::forget(&jobs, &request)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(convert::status)?;
        Ok(Response::new(pb::ForgetResponse {
            decisions: report
                .verdicts
                .iter()
                .map(|v| pb::ForgetDecision {
                    backup_uuid: v.decision.id.clone(),
                    created_at: Some(convert::timestamp_ms(v.backup.created_at)),
                    keep: v.decision.keep,
                    reasons: v.decision.reasons.clone(),
                    source: v.backup.source.clone(),
                    name: v.backup.name.clone(),
                })
                .collect(),
            removed: report.removed,
            reclaimable_bytes: report.reclaimable,
            optimized: report.optimized,
        }))
    }

    async fn rebuild_catalog(
        &self,
        req: Request<pb::RebuildCatalogRequest>,
    ) -> Result<Response<RebuildStream>, Status> {
        let r = req.into_inner();
        if r.plugins.is_empty() && r.archives.is_empty() {
            return Err(Status::invalid_argument(
                "name the destination plugins (--plugin) or local archives (--archive) to rebuild from",
            ));
        }
        let jobs = self.shared.jobs.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::RebuildEvent, Status>>(16);
        tokio::task::spawn_blocking(move || {
            let result = crate::ops::rebuild_catalog(&jobs, &r.plugins, &r.archives, &mut |what| {
                let _ = tx.blocking_send(Ok(pb::RebuildEvent {
                    reading: what.to_string(),
                    result: None,
                }));
            });
            let last = result
                .map(|r| pb::RebuildEvent {
                    reading: String::new(),
                    result: Some(pb::RebuildResult {
                        archives: r.archives,
                        objects: r.objects,
                        snapshots: r.snapshots,
                        added: r.added,
                        skipped: r.skipped,
                    }),
                })
                .map_err(convert::status);
            let _ = tx.blocking_send(last);
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

/// A progress callback for a blocking job: hands `send` a report of the
/// bytes done at most every 200 ms.
fn every_200ms(phase: pb::Phase, mut send: impl FnMut(pb::Progress)) -> impl FnMut(u64, u64) {
    let mut last = std::time::Instant::now();
    move |done, total| {
        if last.elapsed().as_millis() >= 200 {
            last = std::time::Instant::now();
            send(pb::Progress {
                phase: phase as i32,
                bytes_done: done,
                bytes_total: total,
                updated_at: Some(convert::timestamp_ms(crate::catalog::now_ms())),
                ..pb::Progress::default()
            });
        }
    }
}
