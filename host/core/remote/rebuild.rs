//! `wimguard catalog rebuild`: the catalog is an index; the archives are
//! the truth. For remote archives the plugin's objects are listed and each
//! object's header, blob table and XML read back (two ranged reads each);
//! for local archives the files named. Snapshots reappear with their
//! original backup uuids (kept in each image's XML), sources and times.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::source::RemoteSource;
use super::{ObjectStore, RemoteArchive};
use crate::catalog::remote::{ObjectState, RemoteBlob, RemoteImage, RemoteObject};
use crate::catalog::{BackupRecord, Catalog, CodecName, Status};
use crate::error::CoreError;
use crate::wim::codecs::CodecResolver;
use crate::wim::xml::ImageInfo;
use crate::wim::{time, WimArchive};

/// What a rebuild found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rebuilt {
    pub archives: u64,
    pub objects: u64,
    pub snapshots: u64,
    /// Snapshots the catalog did not know before.
    pub added: u64,
    /// Images skipped (not made by WimGuard, or deleted), with the reason.
    pub skipped: Vec<String>,
}

/// The job runner's per-archive hold, as a rebuild needs it: `take(id)`
/// fails (CONFLICT) while a backup, delete or consolidation has the archive;
/// `give_back(id)` ends the hold.
pub struct ArchiveLock<'a> {
    pub take: &'a dyn Fn(&str) -> Result<(), CoreError>,
    pub give_back: &'a dyn Fn(&str),
}

/// A backup record for image `info` found in archive `destination`.
fn record_for(info: &ImageInfo, destination: &str, compression: &CodecName, image_index: u32) -> BackupRecord {
    let (s, ns) = time::to_unix(info.creation_time);
    let created = s * 1000 + ns / 1_000_000;
    BackupRecord {
        uuid: info.backup_uuid.clone(),
        status: Status::Succeeded,
        phase: crate::catalog::Phase::Done,
        source: info.source.clone(),
        destination: destination.into(),
        compression: compression.clone(),
        name: info.name.clone(),
        description: info.description.clone(),
        image_index,
        files: info.file_count,
        directories: info.dir_count,
        bytes_total: info.total_bytes,
        created_at: created,
        started_at: Some(created),
        finished_at: Some(created),
        ..BackupRecord::default()
    }
}

/// The codec id an archive uses (`none`, `xpress`, `lzx`, a plugin's id).
fn codec_id(a: &WimArchive) -> Result<CodecName, CoreError> {
    let c = a.header.compression()?;
    let name = match c {
        crate::wim::Compression::Plugin => a.xml.plugin_codec().and_then(|id| CodecName::from_name(&id)),
        c => CodecName::of_standard(c),
    };
    name.ok_or_else(|| CoreError::DataLoss(format!("{} names no codec this version knows", a.path.display())))
}

/// Rebuilds the catalog of every remote archive stored through `store`
/// (plugin `plugin`).
pub fn rebuild_remote(
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    plugin: &str,
    codecs: &dyn CodecResolver,
    lock: &ArchiveLock,
) -> Result<Rebuilt, CoreError> {
    let names: BTreeSet<String> = list_all(store, "")?
        .into_iter()
        .filter_map(|o| o.key.split_once('/').map(|(name, _)| name.to_string()))
        .filter(|name| RemoteArchive::new(plugin, name).is_ok())
        .collect();
    let mut report = Rebuilt::default();
    for name in names {
        let archive = RemoteArchive::new(plugin, &name)?;
        let id = archive.id();
        // Held while its rows are replaced: a backup, delete or
        // consolidation finishing in between would be undone.
        if let Err(e) = (lock.take)(&id) {
            report.skipped.push(e.to_string());
            continue;
        }
        let result = rebuild_archive(catalog, store, &archive, codecs, &mut report);
        (lock.give_back)(&id);
        result?;
    }
    Ok(report)
}

/// Every object under `prefix`, page by page.
pub(crate) fn list_all(store: &Arc<dyn ObjectStore>, prefix: &str) -> Result<Vec<super::ObjectInfo>, CoreError> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let (page, next) = store.list(prefix, cursor.as_deref())?;
        keys.extend(page);
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(keys),
        }
    }
}

/// Replaces the catalog's rows of `archive` with what its objects hold
/// (listed now, under the caller's hold).
fn rebuild_archive(
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    archive: &RemoteArchive,
    codecs: &dyn CodecResolver,
    report: &mut Rebuilt,
) -> Result<(), CoreError> {
    let plugin = archive.plugin.as_str();
    // Objects by number, and the deleted snapshots.
    let mut objects: BTreeMap<u32, super::ObjectInfo> = BTreeMap::new();
    let mut removed: HashSet<String> = HashSet::new();
    let mut damaged: HashSet<(u32, crate::wim::blob_table::Sha1)> = HashSet::new();
    for o in list_all(store, &format!("{}/", archive.name))? {
        let Some((_, rest)) = o.key.split_once('/') else {
            continue;
        };
        if let Some(uuid) = rest.strip_prefix("removed/") {
            removed.insert(uuid.to_string());
        } else if let Some(marker) = rest.strip_prefix("damaged/") {
            damaged.extend(RemoteArchive::parse_damaged(marker));
        } else if let Some(seq) = archive.seq_of_key(&o.key) {
            objects.insert(seq, o);
        }
    }
    if objects.is_empty() {
        return Ok(());
    }
    let id = archive.id();
    let mut rows = Vec::new();
    let mut blobs: HashMap<crate::wim::blob_table::Sha1, RemoteBlob> = HashMap::new();
    // Each snapshot from the newest object holding it (a consolidation
    // copies images forward; the old objects may linger after a crash).
    let mut images: HashMap<String, (RemoteImage, ImageInfo, CodecName)> = HashMap::new();
    for (seq, info) in &objects {
        let source = Arc::new(RemoteSource::new(store.clone(), &info.key, info.size));
        let label = format!("{plugin}:{}", info.key);
        let a = match WimArchive::from_source(Path::new(&label), source, codecs) {
            Ok(a) => a,
            // A damaged object (truncated, overwritten) holds nothing to
            // record; the rest of the chain is still worth recording. A
            // store that fails to answer stops the rebuild: recording the
            // chain without that object would drop its snapshots.
            Err(e @ (crate::wim::WimError::Corrupt(_) | crate::wim::WimError::Invalid(_))) => {
                report.skipped.push(format!("{label}: cannot be read, left out: {e}"));
                continue;
            }
            Err(e) => return Err(CoreError::from(e).context(&format!("{label} cannot be read"))),
        };
        let compression = codec_id(&a)?;
        rows.push(RemoteObject {
            archive: id.clone(),
            seq: *seq,
            key: info.key.clone(),
            state: ObjectState::Complete,
            upload_token: String::new(),
            backup_uuid: String::new(),
            compression: compression.clone(),
            chunk_size: a.header.chunk_size,
            size: info.size,
            etag: info.etag.clone().unwrap_or_default(),
            sha256: String::new(),
            created_at: crate::catalog::now_ms(),
        });
        for b in a.blobs.values().filter(|b| !damaged.contains(&(*seq, b.hash))) {
            blobs.insert(
                b.hash,
                RemoteBlob {
                    seq: *seq,
                    entry: b.clone(),
                },
            );
        }
        for img in a.images() {
            if img.backup_uuid.is_empty() {
                report
                    .skipped
                    .push(format!("{label} image {}: not made by a wimguard backup", img.index));
                continue;
            }
            let Some(meta) = a.metadata.get(img.index as usize - 1) else {
                continue;
            };
            let remote = RemoteImage {
                backup_uuid: img.backup_uuid.clone(),
                archive: id.clone(),
                seq: *seq,
                image_index: img.index,
                metadata: meta.clone(),
                removed: removed.contains(&img.backup_uuid),
            };
            images.insert(img.backup_uuid.clone(), (remote, img, compression.clone()));
        }
        report.objects += 1;
    }
    let mut image_rows = Vec::new();
    let mut backups = Vec::new();
    for (uuid, (img, info, compression)) in images {
        if img.removed {
            report.skipped.push(format!("snapshot {uuid} of {id}: deleted"));
        } else {
            backups.push(record_for(&info, &id, &compression, img.seq));
            report.snapshots += 1;
        }
        image_rows.push(img);
    }
    let known: HashSet<String> = backups
        .iter()
        .filter(|b| catalog.get_backup(&b.uuid).ok().flatten().is_some())
        .map(|b| b.uuid.clone())
        .collect();
    report.added += backups.iter().filter(|b| !known.contains(&b.uuid)).count() as u64;
    let blob_rows: Vec<RemoteBlob> = blobs.into_values().collect();
    catalog.replace_remote_archive(&id, &rows, &image_rows, &blob_rows, &backups)?;
    report.archives += 1;
    Ok(())
}

/// Adds to the catalog the snapshots of local archive `path` it lacks,
/// holding the archive meanwhile (a delete in between would come back).
pub fn rebuild_local(
    catalog: &Catalog,
    path: &Path,
    codecs: &dyn CodecResolver,
    lock: &ArchiveLock,
) -> Result<Rebuilt, CoreError> {
    let key = path.display().to_string();
    (lock.take)(&key)?;
    let result = adopt_local(catalog, path, codecs);
    (lock.give_back)(&key);
    result
}

/// Adds to the catalog the snapshots of local archive `path` it lacks, and
/// corrects the records of those whose image is there but which the
/// catalog lost track of: a backup whose end could not be recorded (a full
/// disk, a crash between the archive's commit and the catalog's write)
/// becomes the snapshot it is, and an image renumbered by another tool gets
/// its index. The caller holds the archive.
pub fn adopt_local(catalog: &Catalog, path: &Path, codecs: &dyn CodecResolver) -> Result<Rebuilt, CoreError> {
    let a = WimArchive::open(path, codecs).map_err(|e| match e {
        crate::wim::WimError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            CoreError::NotFound(format!("{} does not exist", path.display()))
        }
        other => CoreError::DataLoss(format!("{} cannot be read: {other}", path.display())),
    })?;
    let compression = codec_id(&a)?;
    let destination = path.display().to_string();
    let mut report = Rebuilt {
        archives: 1,
        objects: 1,
        ..Rebuilt::default()
    };
    let mut backups = Vec::new();
    for img in a.images() {
        if img.backup_uuid.is_empty() {
            report.skipped.push(format!(
                "{} image {}: not made by a wimguard backup",
                path.display(),
                img.index
            ));
            continue;
        }
        backups.push(record_for(&img, &destination, &compression, img.index));
    }
    report.snapshots = backups.len() as u64;
    let mut corrected = 0;
    for found in &backups {
        let Some(mut known) = catalog.get_backup(&found.uuid)? else {
            continue;
        };
        if known.destination != found.destination
            || (known.status == Status::Succeeded && known.image_index == found.image_index)
        {
            continue;
        }
        tracing::info!(uuid = %known.uuid, archive = %path.display(), image = found.image_index,
            was = %known.status, "the archive holds this backup's image; recorded as a snapshot");
        known.status = Status::Succeeded;
        known.phase = crate::catalog::Phase::Done;
        known.image_index = found.image_index;
        known.error.clear();
        known.finished_at = known.finished_at.or(found.finished_at);
        // Counts the catalog never got (its last write failed) come from
        // the image's XML.
        if known.files == 0 && known.bytes_total == 0 {
            known.files = found.files;
            known.directories = found.directories;
            known.bytes_total = found.bytes_total;
        }
        catalog.update_backup(&known)?;
        corrected += 1;
    }
    report.added = catalog.adopt_backups(&backups)? + corrected;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{capture, CaptureOptions};
    use crate::wim::codecs::StandardCodecs;
    use crate::wim::{Compression, WimWriter};

    /// A backup whose end the catalog could not record (a full disk, a
    /// crash after the archive's commit) is found by its image: the record
    /// becomes the snapshot it is, with the image's index.
    #[test]
    fn a_record_the_catalog_lost_track_of_is_corrected_from_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"contents\n").unwrap();
        let wim = dir.path().join("a.wim");
        let mut w = WimWriter::create(&wim, Compression::Xpress, 32768).unwrap();
        let opts = CaptureOptions {
            name: "one".into(),
            backup_uuid: "u-1".into(),
            ..CaptureOptions::default()
        };
        capture(&src, &mut w, None, &opts, &mut |_| {}).unwrap();
        w.commit().unwrap();
        let catalog = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        let stale = BackupRecord {
            uuid: "u-1".into(),
            status: Status::Interrupted,
            source: src.display().to_string(),
            destination: wim.display().to_string(),
            error: "the server stopped while the backup ran".into(),
            ..BackupRecord::default()
        };
        catalog.insert_backup(&stale).unwrap();

        let r = adopt_local(&catalog, &wim, &StandardCodecs).unwrap();
        assert_eq!((r.snapshots, r.added), (1, 1), "{r:?}");
        let now = catalog.get_backup("u-1").unwrap().unwrap();
        assert_eq!((now.status, now.image_index), (Status::Succeeded, 1));
        assert!(now.error.is_empty(), "{now:?}");
        assert_eq!(
            (now.files, now.bytes_total),
            (1, 9),
            "counts from the image's XML: {now:?}"
        );
        // Nothing left to correct the second time.
        assert_eq!(adopt_local(&catalog, &wim, &StandardCodecs).unwrap().added, 0);
    }

    /// A crash between an archive's rewrite without an image and the
    /// removal of its record: the next start removes the record (no
    /// phantom snapshot) and renumbers the rest; a removal whose rewrite
    /// never happened keeps its snapshot.
    #[test]
    fn removals_a_crash_cut_short_are_settled() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"contents\n").unwrap();
        let wim = dir.path().join("a.wim");
        let catalog = Catalog::open(&dir.path().join("catalog.sqlite")).unwrap();
        for (i, uuid) in ["u-1", "u-2", "u-3"].into_iter().enumerate() {
            let mut w = if i == 0 {
                WimWriter::create(&wim, Compression::Xpress, 32768).unwrap()
            } else {
                WimWriter::append(&wim, &StandardCodecs).unwrap()
            };
            let opts = CaptureOptions {
                name: uuid.into(),
                backup_uuid: uuid.into(),
                ..CaptureOptions::default()
            };
            capture(&src, &mut w, None, &opts, &mut |_| {}).unwrap();
            w.commit().unwrap();
            catalog
                .insert_backup(&BackupRecord {
                    uuid: uuid.into(),
                    status: Status::Succeeded,
                    source: src.display().to_string(),
                    destination: wim.display().to_string(),
                    image_index: i as u32 + 1,
                    ..BackupRecord::default()
                })
                .unwrap();
        }
        let archive = wim.display().to_string();
        // u-1's removal got as far as the rewrite; u-3's not even that.
        catalog
            .note_pending_removals(&archive, &["u-1".into(), "u-3".into()])
            .unwrap();
        crate::wim::writer::delete_image(&wim, 1, &StandardCodecs).unwrap();

        assert_eq!(
            crate::ops::settle_pending_removals(&catalog, &StandardCodecs).unwrap(),
            1
        );
        assert!(catalog.get_backup("u-1").unwrap().is_none());
        assert_eq!(catalog.get_backup("u-2").unwrap().unwrap().image_index, 1);
        assert_eq!(catalog.get_backup("u-3").unwrap().unwrap().image_index, 2);
        assert!(catalog.pending_removals().unwrap().is_empty());
    }
}
