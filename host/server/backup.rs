//! BackupService: thin handlers over `jobs` and the catalog.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::convert;
use super::Shared;
use crate::api::v1 as pb;
use crate::catalog::{BackupFilter, CodecName};
use crate::jobs::{BackupSpec, JobUpdate};

pub struct BackupApi {
    shared: Arc<Shared>,
}

impl BackupApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        BackupApi { shared }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::BackupEvent, Status>> + Send>>;

fn event(u: &JobUpdate, with_record: bool) -> pb::BackupEvent {
    pb::BackupEvent {
        uuid: u.record.uuid.clone(),
        progress: Some(convert::progress(u)),
        backup: with_record.then(|| convert::backup(&u.record)),
    }
}

/// Streams a job's updates until it ends. When the client goes away and
/// `cancel_on_drop` is set, the job is cancelled.
fn follow(shared: Arc<Shared>, mut rx: tokio::sync::watch::Receiver<JobUpdate>, cancel_on_drop: bool) -> EventStream {
    let (tx, out) = tokio::sync::mpsc::channel::<Result<pb::BackupEvent, Status>>(16);
    tokio::spawn(async move {
        let first = rx.borrow_and_update().clone();
        let uuid = first.record.uuid.clone();
        let mut last_status = first.record.status;
        let mut done = first.record.status().is_final();
        if tx.send(Ok(event(&first, true))).await.is_err() {
            if cancel_on_drop && !done {
                let _ = shared.jobs.cancel(&uuid);
            }
            return;
        }
        while !done {
            let changed = rx.changed().await;
            let u = rx.borrow_and_update().clone();
            done = u.record.status().is_final() || changed.is_err();
            let status_changed = u.record.status != last_status;
            last_status = u.record.status;
            if tx.send(Ok(event(&u, done || status_changed))).await.is_err() {
                if cancel_on_drop && !done {
                    tracing::info!(%uuid, "client went away: cancelling its backup");
                    let _ = shared.jobs.cancel(&uuid);
                }
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(out))
}

/// The codec name a request asks for: `codec` when set, else the enum.
fn codec_name(c: i32, codec: &str) -> Result<Option<CodecName>, Status> {
    if !codec.is_empty() {
        return CodecName::parse(codec).map(Some).map_err(Status::invalid_argument);
    }
    Ok(
        match pb::Compression::try_from(c).map_err(|_| Status::invalid_argument(format!("unknown compression {c}")))? {
            pb::Compression::Unspecified => None,
            pb::Compression::None => Some(CodecName::None),
            pb::Compression::Xpress => Some(CodecName::Xpress),
            pb::Compression::Lzx => Some(CodecName::Lzx),
        },
    )
}

fn record_or_not_found(shared: &Shared, uuid: &str) -> Result<crate::catalog::BackupRecord, Status> {
    let uuid = &crate::ops::resolve_uuid(&shared.jobs, uuid).map_err(convert::status)?;
    shared
        .jobs
        .catalog()
        .get_backup(uuid)
        .map_err(|e| Status::internal(e.to_string()))?
        .ok_or_else(|| Status::not_found(format!("no backup with uuid {uuid}")))
}

#[tonic::async_trait]
impl pb::backup_service_server::BackupService for BackupApi {
    type CreateBackupStream = EventStream;
    type WatchBackupStream = EventStream;

    async fn create_backup(&self, req: Request<pb::CreateBackupRequest>) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        if r.source.is_empty() || r.destination.is_empty() {
            return Err(Status::invalid_argument("source and destination are required"));
        }
        let spec = BackupSpec {
            source: PathBuf::from(&r.source),
            destination: PathBuf::from(&r.destination),
            compression: codec_name(r.compression, &r.codec)?,
            name: (!r.name.is_empty()).then_some(r.name),
            description: r.description,
            excludes: r.excludes,
            plugins: r.plugins,
            destination_as_given: r.destination_as_given,
            remote: None,
            schedule_id: String::new(),
        };
        let jobs = self.shared.jobs.clone();
        let rx = tokio::task::spawn_blocking(move || jobs.start_backup(spec))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(convert::status)?;
        Ok(Response::new(follow(self.shared.clone(), rx, !r.detach)))
    }

    async fn watch_backup(&self, req: Request<pb::WatchBackupRequest>) -> Result<Response<EventStream>, Status> {
        let uuid = crate::ops::resolve_uuid(&self.shared.jobs, &req.into_inner().uuid).map_err(convert::status)?;
        let rx = self.shared.jobs.watch(&uuid).map_err(convert::status)?;
        Ok(Response::new(follow(self.shared.clone(), rx, false)))
    }

    async fn cancel_backup(&self, req: Request<pb::CancelBackupRequest>) -> Result<Response<pb::Backup>, Status> {
        let uuid = crate::ops::resolve_uuid(&self.shared.jobs, &req.into_inner().uuid).map_err(convert::status)?;
        let rec = self.shared.jobs.cancel(&uuid).map_err(convert::status)?;
        Ok(Response::new(convert::backup(&rec)))
    }

    async fn list_backups(
        &self,
        req: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let r = req.into_inner();
        let (offset, limit) = convert::page(r.page.as_ref())?;
        let status = pb::JobStatus::try_from(r.status).map_err(|_| Status::invalid_argument("unknown status"))?;
        let filter = BackupFilter {
            status: convert::job_state(status),
            source: (!r.source.is_empty()).then_some(r.source),
            destination: (!r.destination.is_empty()).then_some(r.destination),
            created_after: r.created_after.as_ref().map(convert::ms_of),
            created_before: r.created_before.as_ref().map(convert::ms_of),
        };
        let (rows, total) = self
            .shared
            .jobs
            .catalog()
            .list_backups(&filter, offset, limit)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListBackupsResponse {
            page: Some(convert::page_info(offset, rows.len(), total)),
            backups: rows.iter().map(convert::backup).collect(),
        }))
    }

    async fn get_backup(&self, req: Request<pb::GetBackupRequest>) -> Result<Response<pb::Backup>, Status> {
        let uuid = crate::ops::resolve_uuid(&self.shared.jobs, &req.into_inner().uuid).map_err(convert::status)?;
        // A running job's live record is fresher than the catalog's.
        if self.shared.jobs.is_running(&uuid) {
            if let Ok(rx) = self.shared.jobs.watch(&uuid) {
                return Ok(Response::new(convert::backup(&rx.borrow().record)));
            }
        }
        Ok(Response::new(convert::backup(&record_or_not_found(
            &self.shared,
            &uuid,
        )?)))
    }

    async fn delete_backup(
        &self,
        req: Request<pb::DeleteBackupRequest>,
    ) -> Result<Response<pb::DeleteBackupResponse>, Status> {
        let r = req.into_inner();
        let (uuid, forget_missing) = (r.uuid, r.forget_missing);
        let shared = self.shared.clone();
        let (rec, effect) =
            tokio::task::spawn_blocking(move || crate::ops::delete_backup(&shared.jobs, &uuid, forget_missing))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(convert::status)?;
        let (outcome, before, after) = convert::delete_effect(effect);
        Ok(Response::new(pb::DeleteBackupResponse {
            backup: Some(convert::backup(&rec)),
            archive_bytes_before: before,
            archive_bytes_after: after,
            outcome: outcome.into(),
        }))
    }
}
