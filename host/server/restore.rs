//! RestoreService: restores a snapshot on a worker thread, streaming progress.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{convert, Shared};
use crate::api::v1 as pb;
use crate::apply::{ApplyOptions, Overwrite};

pub struct RestoreApi {
    shared: Arc<Shared>,
}

impl RestoreApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        RestoreApi { shared }
    }
}

type RestoreStream = Pin<Box<dyn Stream<Item = Result<pb::RestoreEvent, Status>> + Send>>;

fn progress(done: u64, total: u64, phase: pb::Phase) -> pb::Progress {
    pb::Progress {
        phase: phase as i32,
        bytes_done: done,
        bytes_total: total,
        updated_at: Some(convert::timestamp_ms(crate::catalog::now_ms())),
        ..pb::Progress::default()
    }
}

#[tonic::async_trait]
impl pb::restore_service_server::RestoreService for RestoreApi {
    type RestoreStream = RestoreStream;

    async fn restore(&self, req: Request<pb::RestoreRequest>) -> Result<Response<RestoreStream>, Status> {
        let r = req.into_inner();
        let target = PathBuf::from(&r.target);
        if !target.is_absolute() {
            return Err(Status::invalid_argument("target must be an absolute directory path"));
        }
        let overwrite = match pb::OverwritePolicy::try_from(r.overwrite)
            .map_err(|_| Status::invalid_argument("unknown overwrite policy"))?
        {
            pb::OverwritePolicy::Unspecified | pb::OverwritePolicy::Fail => Overwrite::Fail,
            pb::OverwritePolicy::Overwrite => Overwrite::Replace,
            pb::OverwritePolicy::Skip => Overwrite::Skip,
        };
        // An empty path (a script's unset variable) would mean "everything":
        // refused, not taken for the whole snapshot.
        if r.paths.iter().any(|p| p.trim().is_empty()) {
            return Err(Status::invalid_argument(
                "an empty --path was given; name a path inside the snapshot, or leave --path out to restore everything",
            ));
        }
        let rec = crate::ops::snapshot_record(&self.shared.jobs, &r.backup_uuid).map_err(convert::status)?;
        // A client that goes away stops its restore.
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opts = ApplyOptions {
            paths: r.paths,
            restore_owner: crate::fsutil::is_root(),
            overwrite,
            dry_run: r.dry_run,
            cancel: Some(cancel.clone()),
            recover_data: r.recover_data,
        };
        let jobs = self.shared.jobs.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::RestoreEvent, Status>>(16);
        // The moment the client is gone (Ctrl-C, a dropped connection), not
        // at the next progress report: a large file sends none until done.
        // The watcher's sender must go when the restore ends, or the stream
        // would never close.
        let gone = tx.clone();
        let stop = cancel.clone();
        let (ended, end) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            tokio::select! {
                _ = gone.closed() => stop.store(true, std::sync::atomic::Ordering::Relaxed),
                _ = end => {}
            }
        });
        tokio::task::spawn_blocking(move || {
            let mut last = std::time::Instant::now();
            let result = crate::ops::restore(&jobs, &rec, &target, &opts, &mut |done, total| {
                if tx.is_closed() {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if last.elapsed().as_millis() >= 100 || done == total {
                    last = std::time::Instant::now();
                    let _ = tx.blocking_send(Ok(pb::RestoreEvent {
                        progress: Some(progress(done, total, pb::Phase::Restoring)),
                        result: None,
                    }));
                }
            });
            let msg = match result {
                Ok(rep) => Ok(pb::RestoreEvent {
                    progress: Some(progress(rep.bytes, rep.bytes, pb::Phase::Done)),
                    result: Some(pb::RestoreResult {
                        status: pb::JobStatus::Succeeded as i32,
                        files: rep.files + rep.hard_links + rep.specials,
                        directories: rep.dirs,
                        symlinks: rep.symlinks,
                        bytes: rep.bytes,
                        planned: rep.planned,
                        skipped: rep.skipped,
                        warnings: rep.warnings,
                        error: String::new(),
                        unsafe_skipped: rep.unsafe_skipped,
                    }),
                }),
                Err(e) => Err(convert::status(e)),
            };
            let _ = tx.blocking_send(msg);
            let _ = ended.send(());
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
