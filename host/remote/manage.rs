//! Everything after a remote backup: opening a snapshot for reading (its
//! object, with the chain's other objects as references), deleting one
//! (a marker object plus the catalog), consolidating a chain, rebuilding
//! the catalog from the objects, and tidying up after a crash.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::source::RemoteSource;
use super::{ObjectStore, RemoteArchive};
use crate::catalog::remote::{ObjectState, RemoteImage};
use crate::catalog::Catalog;
use crate::jobs::CoreError;
use crate::wim::WimArchive;

/// Opens the object holding snapshot `img` so that its image can be read
/// like a local one: blobs stored in earlier objects of the chain are
/// referenced (and read by ranges from their objects), none is downloaded
/// ahead. Costs two reads (the header, then blob table and XML together).
pub fn open_snapshot(
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    img: &RemoteImage,
) -> Result<WimArchive, CoreError> {
    let objects = catalog.remote_objects(&img.archive)?;
    let own = objects
        .iter()
        .find(|o| o.seq == img.seq && o.state == ObjectState::Complete)
        .ok_or_else(|| {
            CoreError::NotFound(format!(
                "object {} of {} holding backup {} is not in the catalog",
                img.seq, img.archive, img.backup_uuid
            ))
        })?;
    let name = |key: &str| format!("{}:{key}", store.name());
    let source = Arc::new(RemoteSource::new(store.clone(), &own.key, own.size));
    let mut arch = WimArchive::from_source(Path::new(&name(&own.key)), source).map_err(|e| match e {
        crate::wim::WimError::CodecUnavailable(m) => CoreError::FailedPrecondition(m),
        other => CoreError::DataLoss(format!("{} cannot be read: {other}", name(&own.key))),
    })?;
    let mut by_object: BTreeMap<u32, Vec<crate::wim::blob_table::BlobEntry>> = BTreeMap::new();
    for b in catalog.remote_blobs(&img.archive)? {
        if b.seq != img.seq {
            by_object.entry(b.seq).or_default().push(b.entry);
        }
    }
    for (seq, entries) in by_object {
        let Some(o) = objects.iter().find(|o| o.seq == seq) else {
            return Err(CoreError::DataLoss(format!(
                "the catalog places blobs of {} in object {seq}, which it does not know",
                img.archive
            )));
        };
        let src = Arc::new(RemoteSource::new(store.clone(), &o.key, o.size));
        arch.add_ref(Path::new(&name(&o.key)), src, entries);
    }
    Ok(arch)
}

/// Deletes remote snapshot `uuid`: an empty marker object records it in
/// the store (so a catalog rebuilt from the objects agrees), then the
/// catalog marks the image removed and drops the backup. The bytes stay
/// until `archive consolidate`.
pub fn delete_snapshot(catalog: &Catalog, store: &Arc<dyn ObjectStore>, img: &RemoteImage) -> Result<(), CoreError> {
    let archive = RemoteArchive::from_id(&img.archive)
        .ok_or_else(|| CoreError::Internal(format!("{} is not a remote archive", img.archive)))?;
    let key = archive.removed_key(&img.backup_uuid);
    if store.stat(&key)?.is_none() {
        let token = store.begin_upload(&key, Some(0))?;
        let put = (|| {
            let receipt = store.upload_part(&token, 1, &[])?;
            store.finish_upload(&token, &[receipt])
        })();
        if let Err(e) = put {
            let _ = store.abort_upload(&token);
            // Someone (an earlier try) wrote it meanwhile: that is the goal.
            if store.stat(&key)?.is_none() {
                return Err(e);
            }
        }
    }
    catalog.remove_remote_snapshot(&img.backup_uuid)?;
    Ok(())
}

/// Gives the object store of a destination plugin, by name.
pub type StoreFor<'a> = dyn Fn(&str) -> Result<Arc<dyn ObjectStore>, CoreError> + 'a;

/// After a crash: uploads the catalog records as in progress are aborted
/// and forgotten (their backups are marked interrupted separately).
/// `store_for` gives the plugin of an archive; failures are logged, not
/// fatal (the store may be unreachable right now; stale multipart uploads
/// are also removed by bucket lifecycle rules).
pub fn abort_interrupted_uploads(catalog: &Catalog, store_for: &StoreFor<'_>) -> Result<usize, CoreError> {
    let mut n = 0;
    for o in catalog.remote_objects_in_state(ObjectState::Uploading)? {
        let Some(archive) = RemoteArchive::from_id(&o.archive) else {
            continue;
        };
        if !o.upload_token.is_empty() {
            match store_for(&archive.plugin).and_then(|s| s.abort_upload(&o.upload_token)) {
                Ok(()) => tracing::info!(key = %o.key, "aborted an upload a crash left behind"),
                Err(e) => tracing::warn!(key = %o.key, "cannot abort an upload a crash left behind: {e}"),
            }
        }
        catalog.drop_remote_object(&o.archive, o.seq)?;
        n += 1;
    }
    Ok(n)
}
