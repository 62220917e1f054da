//! The destination stage: one backup into a remote archive. The capture
//! writes a new object of the chain (a full WIM first, delta WIMs after)
//! straight into a multipart upload; only when the store has the whole
//! object does the catalog record it, its blobs and its image, together
//! with the backup's success, in one transaction.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use wimguard_sdk::Codec;

use super::source::RemoteSource;
use super::upload::{ObjectUpload, OnProgress};
use super::{ObjectStore, RemoteArchive};
use crate::budget::MemoryBudget;
use crate::capture::{self, CaptureOptions, CaptureReport, ProgressFn};
use crate::catalog::remote::{ObjectState, RemoteBlob, RemoteImage, RemoteObject};
use crate::catalog::{now_ms, BackupRecord, Catalog, CodecName, Status};
use crate::error::CoreError;
use crate::wim::codecs::SharedCodec;
use crate::wim::{Compression, WimWriter};

/// Where a remote backup goes and what it may use.
pub struct Target<'a> {
    pub catalog: &'a Arc<Catalog>,
    pub memory: &'a Arc<MemoryBudget>,
    pub store: Arc<dyn ObjectStore>,
    pub archive: RemoteArchive,
}

/// The codec of an existing chain, and its chunk size; None for a new one.
pub fn chain_codec(catalog: &Catalog, archive: &RemoteArchive) -> Result<Option<(CodecName, u32)>, CoreError> {
    Ok(catalog
        .remote_objects(&archive.id())?
        .into_iter()
        .find(|o| o.state == ObjectState::Complete)
        .map(|o| (o.compression, o.chunk_size)))
}

/// The newest live image of the chain backed up from `source` (else the
/// newest live image), loaded with one ranged read of its metadata
/// (unchanged files reuse its hashes), within the memory budget: the image
/// holds its reservation for as long as it lives.
fn previous_tree(
    t: &Target,
    source: &str,
    codec: Option<&dyn Codec>,
    chunk_size: u32,
    lost: &[RemoteObject],
    cancel: &AtomicBool,
) -> Result<Option<capture::PreviousImage>, CoreError> {
    let id = t.archive.id();
    let live: Vec<_> = t
        .catalog
        .remote_images(&id)?
        .into_iter()
        .filter(|i| !i.removed && !lost.iter().any(|o| o.seq == i.seq))
        .collect();
    let mut same_source = None;
    for img in live.iter().rev() {
        if t.catalog
            .get_backup(&img.backup_uuid)?
            .is_some_and(|b| b.source == source)
        {
            same_source = Some(img);
            break;
        }
    }
    let Some(img) = same_source.or(live.last()) else {
        return Ok(None);
    };
    let objects = t.catalog.remote_objects(&id)?;
    let Some(obj) = objects.iter().find(|o| o.seq == img.seq) else {
        return Ok(None);
    };
    let need = img
        .metadata
        .reshdr
        .original_size
        .saturating_mul(crate::budget::TREE_BYTES_PER_METADATA_BYTE);
    let reservation = t
        .memory
        .reserve(need, &format!("the previous image of {id}"), Some(cancel))?;
    let source = RemoteSource::new(t.store.clone(), &obj.key, obj.size);
    let what = format!("metadata of {} in {}", img.backup_uuid, obj.key);
    // Damage is DATA_LOSS; a store that fails to answer stays what it is.
    let tree =
        crate::wim::archive::load_tree_at(&source, &img.metadata, codec, chunk_size, &what).map_err(CoreError::from)?;
    Ok(Some(capture::PreviousImage::holding(tree, reservation)))
}

/// Backs `source` up as the next object of the chain. On success the
/// catalog holds the object, its blobs and image, and `record` (filled in
/// and marked succeeded); on failure the upload is aborted and nothing of
/// it is recorded.
#[allow(clippy::too_many_arguments)]
pub fn capture(
    t: &Target,
    record: &mut BackupRecord,
    source: &Path,
    compression: Compression,
    codec: Option<SharedCodec>,
    chunk_size: u32,
    opts: &CaptureOptions,
    cancel: &Arc<AtomicBool>,
    progress: &mut ProgressFn,
    upload_progress: OnProgress,
    uploading: &dyn Fn(),
) -> Result<CaptureReport, CoreError> {
    let id = t.archive.id();
    let objects = t.catalog.remote_objects(&id)?;
    for o in objects.iter().filter(|o| o.state == ObjectState::Uploading) {
        let writer = t.catalog.get_backup(&o.backup_uuid)?;
        if writer.as_ref().is_none_or(|b| b.status == Status::Running) {
            return Err(CoreError::Conflict(format!(
                "{} is being written by backup {}; wait for it or cancel it",
                o.key, o.backup_uuid
            )));
        }
        // An upload an earlier backup failed to abort: tried again now.
        // If the store still refuses, the row stays and this backup takes
        // the next number.
        crate::remote::manage::tidy_abandoned_upload(t.catalog, &*t.store, o)?;
    }
    let objects = t.catalog.remote_objects(&id)?;
    let listed = super::check::list_chain_or_trust(&t.store, &t.archive, &objects);
    // Past every number the catalog or the store has: a stray key (another
    // home's, a forgotten object's) would refuse the upload.
    let seq = objects.iter().map(|o| o.seq).max().unwrap_or(0).max(listed.highest) + 1;
    let key = t.archive.object_key(seq);
    // Reading takes the format's own decoder (a wasm implementation may
    // have been chosen to compress).
    let decoder = match compression {
        Compression::Plugin => codec.clone(),
        c => crate::wim::codecs::codec_for(c)?,
    };
    let lost = listed.lost;
    let previous = previous_tree(t, &record.source, decoder.as_deref(), chunk_size, &lost, cancel)?;
    // Blobs in an object the store lost are stored again by this backup:
    // the catalog then places them in the new object, which also makes
    // older snapshots that use them whole again.
    let mut known = t.catalog.remote_blobs(&id)?;
    known.retain(|b| !lost.iter().any(|o| o.seq == b.seq));
    let object = RemoteObject::uploading(&id, seq, &key, &record.uuid, &record.compression, chunk_size);
    t.catalog.begin_remote_object(&object)?;
    let abort_failed = Arc::new(AtomicBool::new(false));
    let result = (|| {
        let catalog = t.catalog.clone();
        let (token_archive, token_seq) = (id.clone(), seq);
        // Recorded at once: a crash leaves a token the next start aborts.
        let mut upload = ObjectUpload::new(
            t.store.clone(),
            &key,
            Box::new(move |token| {
                if let Err(e) = catalog_set_token(&catalog, &token_archive, token_seq, token) {
                    tracing::warn!("cannot record an upload token: {e}");
                }
            }),
            upload_progress,
        );
        upload.report_abort_failure_to(abort_failed.clone());
        let name = format!("{}/{key}", t.store.name());
        let mut writer = WimWriter::create_for_upload(&name, compression, codec, chunk_size, upload.parts())?;
        writer.watch_cancel(cancel.clone());
        writer.add_external_blobs(known.iter().map(|b| (b.entry.hash, b.entry.reshdr.original_size)));
        let mut report = crate::metrics::timed("capture", || {
            capture::capture(source, &mut writer, previous, opts, progress)
        })?;
        for o in &lost {
            report.warnings.push(format!(
                "{} is missing from {} or was changed there (deleted outside WimGuard?): this backup stored again \
                 what it needed of it, but snapshots stored before may be damaged; run `wimguard archive check {} \
                 --plugin {}` to name them",
                o.key,
                t.store.name(),
                t.archive.name,
                t.archive.plugin
            ));
        }
        if cancel.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(CoreError::Cancelled);
        }
        let blobs: Vec<RemoteBlob> = writer
            .stored_blobs()
            .map(|e| RemoteBlob { seq, entry: e.clone() })
            .collect();
        let metadata = writer
            .metadata_entries()
            .first()
            .cloned()
            .ok_or_else(|| CoreError::Internal("the capture wrote no image".into()))?;
        uploading();
        // The parts went out during the capture; this is the rest and the commit.
        let uploaded = crate::metrics::timed("upload", || {
            let (_size, parts) = writer.finish_upload()?;
            upload.finish(parts)
        })?;
        let done = RemoteObject {
            size: uploaded.info.size,
            etag: uploaded.info.etag.clone().unwrap_or_default(),
            sha256: uploaded.sha256,
            ..object.clone()
        };
        let image = RemoteImage {
            backup_uuid: record.uuid.clone(),
            archive: id.clone(),
            seq,
            image_index: 1,
            metadata,
            removed: false,
        };
        crate::jobs::record_capture(record, &report, seq);
        record.status = Status::Succeeded;
        record.finished_at = Some(now_ms());
        record.phase = crate::catalog::Phase::Done;
        crate::metrics::timed("publish", || {
            t.catalog.complete_remote_object(&done, &blobs, &[image], Some(record))
        })?;
        Ok(report)
    })();
    if result.is_err() {
        if abort_failed.load(std::sync::atomic::Ordering::SeqCst) {
            // Its parts are still in the bucket: the row keeps the token,
            // and the next backup to the archive (or start) aborts it.
            tracing::warn!(%key, "a failed upload could not be aborted; it is tried again at the next backup or start");
        } else if let Err(e) = t.catalog.drop_remote_object(&id, seq) {
            // The upload was aborted when it was dropped; forget the object.
            tracing::warn!(%key, "cannot forget a failed upload in the catalog: {e}");
        }
    }
    result
}

fn catalog_set_token(catalog: &Catalog, archive: &str, seq: u32, token: &str) -> Result<(), CoreError> {
    Ok(catalog.set_remote_upload_token(archive, seq, token)?)
}
