//! SnapshotService: list, get, browse, diff, verify, delete.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{convert, Shared};
use crate::api::v1 as pb;
use crate::catalog::{BackupFilter, BackupRecord, Status as JobState};
use crate::error::CoreError;
use crate::ops::{self, Change, EntryInfo, EntryKind};

pub struct SnapshotApi {
    shared: Arc<Shared>,
}

impl SnapshotApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        SnapshotApi { shared }
    }
}

type VerifyStream = Pin<Box<dyn Stream<Item = Result<pb::VerifyEvent, Status>> + Send>>;
type DiffStream = Pin<Box<dyn Stream<Item = Result<pb::DiffEvent, Status>> + Send>>;

/// Bytes of changes a unary DiffSnapshots reply may carry (gRPC clients
/// refuse messages over 4 MiB by default).
const MAX_UNARY_BYTES: usize = 3 << 20;
/// Changes per event of DiffSnapshotsStream.
const DIFF_BATCH: usize = 1000;

fn change(c: &Change) -> pb::Change {
    let (kind, before, after) = match c {
        Change::Added(e) => (pb::ChangeKind::Added, None, Some(entry(e))),
        Change::Removed(e) => (pb::ChangeKind::Removed, Some(entry(e)), None),
        Change::Modified(x, y) => (pb::ChangeKind::Modified, Some(entry(x)), Some(entry(y))),
    };
    pb::Change {
        kind: kind as i32,
        path: c.path().to_string(),
        before,
        after,
    }
}

fn snapshot(r: &BackupRecord) -> pb::Snapshot {
    pb::Snapshot {
        backup_uuid: r.uuid.clone(),
        archive: r.destination.clone(),
        image_index: r.image_index,
        name: r.name.clone(),
        description: r.description.clone(),
        source: r.source.clone(),
        created_at: Some(convert::timestamp_ms(r.created_at)),
        files: r.files,
        directories: r.directories,
        bytes_total: r.bytes_total,
    }
}

fn entry(e: &EntryInfo) -> pb::Entry {
    pb::Entry {
        path: e.path.clone(),
        kind: match e.kind {
            EntryKind::File => pb::EntryKind::File,
            EntryKind::Directory => pb::EntryKind::Directory,
            EntryKind::Symlink => pb::EntryKind::Symlink,
            EntryKind::Special => pb::EntryKind::Special,
        } as i32,
        size: e.size,
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        modified_at: Some(convert::timestamp_ms(e.mtime_ms)),
        symlink_target: e.symlink_target.clone(),
        sha1: e.sha1.clone(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::error::CoreError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(convert::status)
}

#[tonic::async_trait]
impl pb::snapshot_service_server::SnapshotService for SnapshotApi {
    type VerifySnapshotStream = VerifyStream;
    type DiffSnapshotsStreamStream = DiffStream;

    async fn list_snapshots(
        &self,
        req: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        let r = req.into_inner();
        let (offset, limit) = convert::page(r.page.as_ref())?;
        let filter = BackupFilter {
            status: Some(JobState::Succeeded),
            destination: (!r.archive.is_empty()).then_some(r.archive),
            ..BackupFilter::default()
        };
        let (rows, total) = self
            .shared
            .jobs
            .catalog()
            .list_backups(&filter, offset, limit)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListSnapshotsResponse {
            page: Some(convert::page_info(offset, rows.len(), total)),
            snapshots: rows.iter().map(snapshot).collect(),
        }))
    }

    async fn get_snapshot(&self, req: Request<pb::GetSnapshotRequest>) -> Result<Response<pb::Snapshot>, Status> {
        let rec = ops::snapshot_record(&self.shared.jobs, &req.into_inner().backup_uuid).map_err(convert::status)?;
        Ok(Response::new(snapshot(&rec)))
    }

    async fn browse_snapshot(
        &self,
        req: Request<pb::BrowseSnapshotRequest>,
    ) -> Result<Response<pb::BrowseSnapshotResponse>, Status> {
        let r = req.into_inner();
        let (offset, limit) = convert::page(r.page.as_ref())?;
        let rec = ops::snapshot_record(&self.shared.jobs, &r.backup_uuid).map_err(convert::status)?;
        let path = if r.path.is_empty() { "/".to_string() } else { r.path };
        let jobs = self.shared.jobs.clone();
        let (dir, kids) = blocking(move || ops::browse(&jobs, &rec, &path)).await?;
        let total = kids.len() as u64;
        let page: Vec<pb::Entry> = kids
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(entry)
            .collect();
        Ok(Response::new(pb::BrowseSnapshotResponse {
            directory: Some(entry(&dir)),
            page: Some(convert::page_info(offset, page.len(), total)),
            entries: page,
        }))
    }

    async fn diff_snapshots(
        &self,
        req: Request<pb::DiffSnapshotsRequest>,
    ) -> Result<Response<pb::DiffSnapshotsResponse>, Status> {
        let r = req.into_inner();
        let a = ops::snapshot_record(&self.shared.jobs, &r.base_uuid).map_err(convert::status)?;
        let b = ops::snapshot_record(&self.shared.jobs, &r.target_uuid).map_err(convert::status)?;
        let jobs = self.shared.jobs.clone();
        let (changes, counts) = blocking(move || {
            let mut changes = Vec::new();
            let mut bytes = 0;
            let counts = ops::diff(&jobs, &a, &b, &mut |c| {
                let c = change(&c);
                bytes += prost::Message::encoded_len(&c) + 4;
                if bytes > MAX_UNARY_BYTES {
                    return Err(CoreError::OutOfRange(format!(
                        "the changes between the snapshots take more than {} MiB, too many for one reply; use \
                         DiffSnapshotsStream (`wimguard snapshots diff` does)",
                        MAX_UNARY_BYTES >> 20
                    )));
                }
                changes.push(c);
                Ok(())
            })?;
            Ok((changes, counts))
        })
        .await?;
        Ok(Response::new(pb::DiffSnapshotsResponse {
            changes,
            added: counts.added,
            removed: counts.removed,
            modified: counts.modified,
        }))
    }

    async fn diff_snapshots_stream(
        &self,
        req: Request<pb::DiffSnapshotsRequest>,
    ) -> Result<Response<Self::DiffSnapshotsStreamStream>, Status> {
        let r = req.into_inner();
        let a = ops::snapshot_record(&self.shared.jobs, &r.base_uuid).map_err(convert::status)?;
        let b = ops::snapshot_record(&self.shared.jobs, &r.target_uuid).map_err(convert::status)?;
        let jobs = self.shared.jobs.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::DiffEvent, Status>>(4);
        tokio::task::spawn_blocking(move || {
            let mut batch = Vec::new();
            let result = ops::diff(&jobs, &a, &b, &mut |c| {
                batch.push(change(&c));
                if batch.len() >= DIFF_BATCH {
                    let event = pb::DiffEvent {
                        changes: std::mem::take(&mut batch),
                        summary: None,
                    };
                    // A client that went away ends the walk.
                    tx.blocking_send(Ok(event)).map_err(|_| CoreError::Cancelled)?;
                }
                Ok(())
            });
            let last = result.map(|counts| pb::DiffEvent {
                changes: batch,
                summary: Some(pb::DiffSummary {
                    added: counts.added,
                    removed: counts.removed,
                    modified: counts.modified,
                }),
            });
            let _ = tx.blocking_send(last.map_err(convert::status));
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn verify_snapshot(&self, req: Request<pb::VerifySnapshotRequest>) -> Result<Response<VerifyStream>, Status> {
        let rec = ops::snapshot_record(&self.shared.jobs, &req.into_inner().backup_uuid).map_err(convert::status)?;
        let jobs = self.shared.jobs.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::VerifyEvent, Status>>(16);
        tokio::task::spawn_blocking(move || {
            let progress = |done: u64, total: u64, phase: pb::Phase| pb::Progress {
                phase: phase as i32,
                bytes_done: done,
                bytes_total: total,
                updated_at: Some(convert::timestamp_ms(crate::catalog::now_ms())),
                ..pb::Progress::default()
            };
            let result = ops::verify(&jobs, &rec, &mut |done, total| {
                let _ = tx.blocking_send(Ok(pb::VerifyEvent {
                    progress: Some(progress(done, total, pb::Phase::Verifying)),
                    result: None,
                }));
            });
            let ev = match result {
                Ok((blobs, bytes)) => pb::VerifyEvent {
                    progress: Some(progress(bytes, bytes, pb::Phase::Done)),
                    result: Some(pb::VerifyResult {
                        ok: true,
                        blobs_checked: blobs,
                        bytes_checked: bytes,
                        error: String::new(),
                    }),
                },
                Err(crate::error::CoreError::DataLoss(m)) => pb::VerifyEvent {
                    progress: None,
                    result: Some(pb::VerifyResult {
                        ok: false,
                        error: m,
                        ..pb::VerifyResult::default()
                    }),
                },
                Err(e) => {
                    let _ = tx.blocking_send(Err(convert::status(e)));
                    return;
                }
            };
            let _ = tx.blocking_send(Ok(ev));
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn delete_snapshot(
        &self,
        req: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let r = req.into_inner();
        let (uuid, forget_missing) = (r.backup_uuid, r.forget_missing);
        ops::snapshot_record(&self.shared.jobs, &uuid).map_err(convert::status)?;
        let shared = self.shared.clone();
        let (_, effect) = blocking(move || ops::delete_backup(&shared.jobs, &uuid, forget_missing)).await?;
        let (outcome, before, after) = convert::delete_effect(effect);
        Ok(Response::new(pb::DeleteSnapshotResponse {
            archive_bytes_before: before,
            archive_bytes_after: after,
            outcome: outcome.into(),
        }))
    }
}
