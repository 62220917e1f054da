//! Everything after a remote backup: opening a snapshot for reading (its
//! object, with the chain's other objects as references), deleting one
//! (a marker object plus the catalog), consolidating a chain, rebuilding
//! the catalog from the objects, and tidying up after a crash.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use super::source::RemoteSource;
use super::{ObjectStore, RemoteArchive};
use crate::catalog::remote::{ObjectState, RemoteImage, RemoteObject};
use crate::catalog::Catalog;
use crate::error::CoreError;
use crate::wim::codecs::{CodecResolver, KnownCodec, SharedCodec};
use crate::wim::WimArchive;

/// Opens the object holding snapshot `img` so that its image can be read
/// like a local one: blobs stored in earlier objects of the chain are
/// referenced (and read by ranges from their objects), none is downloaded
/// ahead. Costs two reads (the header, then blob table and XML together).
pub fn open_snapshot(
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    img: &RemoteImage,
    codecs: &dyn CodecResolver,
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
    let mut arch = WimArchive::from_source(Path::new(&name(&own.key)), source, codecs)
        .map_err(|e| CoreError::from(e).context(&format!("{} cannot be read", name(&own.key))))?;
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
        // The catalog's place wins over the own table's: a blob found
        // damaged there (`archive check --repair`) and stored again since.
        arch.add_ref_preferred(Path::new(&name(&o.key)), src, entries);
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
    write_marker(store, &archive.removed_key(&img.backup_uuid))?;
    catalog.remove_remote_snapshot(&img.backup_uuid)?;
    Ok(())
}

/// Writes the empty marker object `key` unless it is there already (a
/// deleted snapshot, a damaged blob): how the store itself remembers what
/// a catalog rebuilt from it must leave out.
pub fn write_marker(store: &Arc<dyn ObjectStore>, key: &str) -> Result<(), CoreError> {
    if store.stat(key)?.is_some() {
        return Ok(());
    }
    let token = store.begin_upload(key, Some(0))?;
    let put = (|| {
        let receipt = store.upload_part(&token, 1, &[])?;
        store.finish_upload(&token, &[receipt])
    })();
    if let Err(e) = put {
        let _ = store.abort_upload(&token);
        // Someone (an earlier try) wrote it meanwhile: that is the goal.
        if store.stat(key)?.is_none() {
            return Err(e);
        }
    }
    Ok(())
}

/// Gives the object store of a destination plugin, by name.
pub type StoreFor<'a> = dyn Fn(&str) -> Result<Arc<dyn ObjectStore>, CoreError> + 'a;

/// Aborts an upload that no backup is writing any more (a crash, or an
/// abort that failed then) and forgets it. When the store still refuses,
/// the catalog keeps its row and token, and false is returned: the next
/// start, or the next backup to the archive, tries again. (Otherwise the
/// parts would stay in the bucket, billed, with nothing left that knows.)
pub fn tidy_abandoned_upload(catalog: &Catalog, store: &dyn ObjectStore, o: &RemoteObject) -> Result<bool, CoreError> {
    if !o.upload_token.is_empty() {
        match store.abort_upload(&o.upload_token) {
            Ok(()) => tracing::info!(key = %o.key, "aborted an abandoned upload"),
            Err(e) => {
                tracing::warn!(key = %o.key, "cannot abort an abandoned upload yet (tried again later): {e}");
                return Ok(false);
            }
        }
    }
    // Completed in the store but never recorded (a crash came between the
    // two): nothing refers to it, and it would block its number.
    match store.stat(&o.key) {
        Ok(Some(_)) => {
            if let Err(e) = store.delete(&o.key) {
                tracing::warn!(key = %o.key, "cannot delete an object left unrecorded yet: {e}");
                return Ok(false);
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(key = %o.key, "cannot check an abandoned upload yet: {e}");
            return Ok(false);
        }
    }
    catalog.drop_remote_object(&o.archive, o.seq)?;
    Ok(true)
}

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
        let store = match store_for(&archive.plugin) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(key = %o.key, "cannot tidy an upload a crash left behind: {e}");
                continue;
            }
        };
        if tidy_abandoned_upload(catalog, &*store, &o)? {
            n += 1;
        }
    }
    // A consolidation that switched but had not deleted the old chain yet.
    for archive in catalog.remote_archives()? {
        let Some(r) = RemoteArchive::from_id(&archive) else {
            continue;
        };
        if catalog
            .remote_objects(&archive)?
            .iter()
            .any(|o| o.state == ObjectState::Obsolete)
        {
            match store_for(&r.plugin).and_then(|s| delete_obsolete(catalog, &s, &archive)) {
                Ok(k) => n += k,
                Err(e) => tracing::warn!(%archive, "cannot delete objects a consolidation left: {e}"),
            }
        }
    }
    Ok(n)
}

/// What a consolidation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consolidated {
    pub objects_before: u32,
    pub bytes_before: u64,
    pub images_kept: u32,
    pub images_dropped: u32,
    pub bytes_after: u64,
    /// Key of the new full object (empty when nothing was left to keep).
    pub key: String,
}

/// Rewrites a chain as one full WIM of the images still kept, reclaiming
/// what deleted snapshots used:
/// 1. the kept images' metadata and blobs are copied, as stored (no
///    recompression, read in runs by ranges), into a new object with the
///    next number;
/// 2. only once the store has it does the catalog switch to it (one
///    transaction: images and blobs now live there, older objects become
///    obsolete);
/// 3. then the old objects and the removal markers are deleted.
///
/// A crash before 2 leaves the old chain as it was (the new object is
/// aborted or deleted at the next start); after 2, every kept snapshot
/// reads from the new object and leftovers are deleted at the next start.
pub fn consolidate(
    catalog: &Arc<Catalog>,
    store: &Arc<dyn ObjectStore>,
    archive: &RemoteArchive,
    compression: crate::wim::Compression,
    codec: Option<SharedCodec>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Consolidated, CoreError> {
    use crate::catalog::remote::RemoteObject;
    use std::collections::HashSet;

    let id = archive.id();
    let objects: Vec<_> = catalog
        .remote_objects(&id)?
        .into_iter()
        .filter(|o| o.state == ObjectState::Complete)
        .collect();
    if objects.is_empty() {
        return Err(CoreError::NotFound(format!("no remote archive {id} in the catalog")));
    }
    let images = catalog.remote_images(&id)?;
    let (kept, dropped): (Vec<_>, Vec<_>) = images.into_iter().partition(|i| !i.removed);
    let mut report = Consolidated {
        objects_before: objects.len() as u32,
        bytes_before: objects.iter().map(|o| o.size).sum(),
        images_kept: kept.len() as u32,
        images_dropped: dropped.len() as u32,
        ..Consolidated::default()
    };
    if dropped.is_empty() && objects.len() == 1 {
        report.bytes_after = report.bytes_before;
        report.key = objects[0].key.clone();
        return Ok(report);
    }
    // Rewriting a chain the store has lost part of would copy what is left
    // of it and delete the evidence: the check names what to do first.
    let all = catalog.remote_objects(&id)?;
    let listed = super::check::list_chain(store, archive, &all)?;
    if !listed.lost.is_empty() {
        return Err(super::check::refuse_lost_chain(
            archive,
            store.name(),
            &listed.lost,
            "rewriting it would copy what is left and delete the evidence; nothing was rewritten",
        ));
    }
    let chunk_size = objects[0].chunk_size;
    let sources: HashMap<u32, Arc<RemoteSource>> = objects
        .iter()
        .map(|o| (o.seq, Arc::new(RemoteSource::new(store.clone(), &o.key, o.size))))
        .collect();
    // Which blobs the kept images use, and their XML entries.
    let (refs, infos) = kept_references(store, &objects, &sources, &kept, codec.as_ref(), chunk_size)?;
    let blobs = catalog.remote_blobs(&id)?;
    let mut wanted: Vec<_> = blobs.iter().filter(|b| refs.contains_key(&b.entry.hash)).collect();
    let missing: HashSet<_> = refs
        .keys()
        .filter(|h| !blobs.iter().any(|b| &b.entry.hash == *h))
        .collect();
    if !missing.is_empty() {
        return Err(CoreError::DataLoss(format!(
            "{id}: {} blob(s) the kept snapshots use are stored nowhere in the chain; nothing was rewritten. \
             `wimguard archive check {} --plugin {}` names the snapshots: back their sources up again (what they \
             still have is stored again) or delete them, then consolidate",
            missing.len(),
            archive.name,
            archive.plugin
        )));
    }
    wanted.sort_by_key(|b| (b.seq, b.entry.reshdr.offset));
    let seq = all.iter().map(|o| o.seq).max().unwrap_or(0).max(listed.highest) + 1;
    let key = archive.object_key(seq);
    let object = RemoteObject::uploading(&id, seq, &key, "consolidation", &objects[0].compression, chunk_size);
    catalog.begin_remote_object(&object)?;
    let plan = Consolidation {
        catalog,
        store,
        id: &id,
        seq,
        key: &key,
        object: &object,
        compression,
        codec,
        chunk_size,
    };
    let written = plan.write(&sources, &wanted, &refs, &kept, infos, progress);
    let size = match written {
        Ok(size) => size,
        Err(e) => {
            let _ = catalog.drop_remote_object(&id, seq);
            return Err(e);
        }
    };
    report.bytes_after = size;
    report.key = archive.object_key(seq);
    // The switch is durable: what follows only frees space.
    delete_obsolete(catalog, store, &id)?;
    for img in &dropped {
        store.delete(&archive.removed_key(&img.backup_uuid))?;
    }
    Ok(report)
}

/// What a consolidation writes and where (see [`consolidate`]).
struct Consolidation<'a> {
    catalog: &'a Arc<Catalog>,
    store: &'a Arc<dyn ObjectStore>,
    id: &'a str,
    seq: u32,
    key: &'a str,
    object: &'a crate::catalog::remote::RemoteObject,
    compression: crate::wim::Compression,
    codec: Option<SharedCodec>,
    chunk_size: u32,
}

impl Consolidation<'_> {
    /// Copies the wanted blobs and the kept images' metadata, as stored,
    /// into the new object, uploads it and switches the catalog to it.
    /// Returns the object's size.
    fn write(
        &self,
        sources: &HashMap<u32, Arc<RemoteSource>>,
        wanted: &[&crate::catalog::remote::RemoteBlob],
        refs: &HashMap<crate::wim::blob_table::Sha1, u32>,
        kept: &[crate::catalog::remote::RemoteImage],
        infos: Vec<crate::wim::xml::ImageInfo>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<u64, CoreError> {
        use crate::catalog::remote::{RemoteBlob, RemoteObject};
        let (c, a, seq, key) = (self.catalog.clone(), self.id.to_string(), self.seq, self.key);
        let upload = super::upload::ObjectUpload::new(
            self.store.clone(),
            key,
            Box::new(move |t| {
                if let Err(e) = c.set_remote_upload_token(&a, seq, t) {
                    tracing::warn!("cannot record an upload token: {e}");
                }
            }),
            Box::new(|_| {}),
        );
        let name = format!("{}:{key}", self.store.name());
        let mut w = crate::wim::WimWriter::create_for_upload(
            &name,
            self.compression,
            self.codec.clone(),
            self.chunk_size,
            upload.parts(),
        )?;
        let total: u64 = wanted.iter().map(|b| b.entry.reshdr.size_in_wim).sum();
        let mut done = 0u64;
        let mut new_blobs = Vec::new();
        for b in wanted {
            let r = w.copy_resource(&*sources[&b.seq], &b.entry.reshdr)?;
            let entry = crate::wim::blob_table::BlobEntry {
                reshdr: r,
                refcount: refs[&b.entry.hash],
                ..b.entry.clone()
            };
            new_blobs.push(RemoteBlob {
                seq,
                entry: entry.clone(),
            });
            w.add_copied_blob(entry);
            done += b.entry.reshdr.size_in_wim;
            progress(done, total);
        }
        let mut new_images = Vec::new();
        for (img, info) in kept.iter().zip(infos) {
            let r = w.copy_resource(&*sources[&img.seq], &img.metadata.reshdr)?;
            let metadata = crate::wim::blob_table::BlobEntry {
                reshdr: r,
                ..img.metadata.clone()
            };
            let index = w.add_copied_image(metadata.clone(), info);
            new_images.push(crate::catalog::remote::RemoteImage {
                seq,
                image_index: index,
                metadata,
                ..img.clone()
            });
        }
        let (_, parts) = w.finish_upload()?;
        let up = upload.finish(parts)?;
        let done = RemoteObject {
            size: up.info.size,
            etag: up.info.etag.unwrap_or_default(),
            sha256: up.sha256,
            ..self.object.clone()
        };
        self.catalog.switch_to_consolidated(&done, &new_images, &new_blobs)?;
        Ok(done.size)
    }
}

/// Loads the kept images' trees in turn: the reference count of every blob
/// they use, and each image's XML entry (from its object).
fn kept_references(
    store: &Arc<dyn ObjectStore>,
    objects: &[crate::catalog::remote::RemoteObject],
    sources: &HashMap<u32, Arc<RemoteSource>>,
    kept: &[crate::catalog::remote::RemoteImage],
    codec: Option<&SharedCodec>,
    chunk_size: u32,
) -> Result<
    (
        HashMap<crate::wim::blob_table::Sha1, u32>,
        Vec<crate::wim::xml::ImageInfo>,
    ),
    CoreError,
> {
    let mut refs: HashMap<crate::wim::blob_table::Sha1, u32> = HashMap::new();
    let mut infos = Vec::new();
    let mut opened: HashMap<u32, WimArchive> = HashMap::new();
    for img in kept {
        let src = &sources[&img.seq];
        let tree = crate::wim::archive::load_tree_at(
            &**src,
            &img.metadata,
            codec.map(|c| &**c),
            chunk_size,
            &format!("metadata of {} in object {}", img.backup_uuid, img.seq),
        )
        .map_err(|e| CoreError::DataLoss(e.to_string()))?;
        for (h, n) in tree.blob_references() {
            *refs.entry(h).or_default() += n;
        }
        if let std::collections::hash_map::Entry::Vacant(v) = opened.entry(img.seq) {
            let name = format!(
                "{}:{}",
                store.name(),
                objects.iter().find(|o| o.seq == img.seq).map_or("", |o| &o.key)
            );
            let a = WimArchive::from_source(Path::new(&name), src.clone(), &KnownCodec(codec.cloned()))
                .map_err(|e| CoreError::DataLoss(format!("{name} cannot be read: {e}")))?;
            v.insert(a);
        }
        let info = opened[&img.seq]
            .images()
            .into_iter()
            .find(|i| i.index == img.image_index)
            .ok_or_else(|| CoreError::DataLoss(format!("object {} has no image {}", img.seq, img.image_index)))?;
        infos.push(info);
    }
    Ok((refs, infos))
}

/// Deletes from the store the objects of `archive` a consolidation made
/// obsolete, then forgets them. Returns how many went.
pub fn delete_obsolete(catalog: &Catalog, store: &Arc<dyn ObjectStore>, archive: &str) -> Result<usize, CoreError> {
    let mut n = 0;
    for o in catalog.remote_objects(archive)? {
        if o.state == ObjectState::Obsolete {
            store.delete(&o.key)?;
            catalog.drop_remote_object(&o.archive, o.seq)?;
            n += 1;
        }
    }
    Ok(n)
}
