//! Operations on recorded snapshots: find, browse, diff, verify, delete,
//! restore. The core behind the snapshot and restore services; no gRPC.

use std::collections::HashSet;
use std::path::Path;

use crate::apply::{self, ApplyOptions, ApplyReport};
use crate::budget::Reservation;
use crate::catalog::{BackupRecord, Status};
use crate::error::CoreError;
use crate::jobs::Jobs;
use crate::remote::RemoteArchive;
use crate::wim::archive::hex;
use crate::wim::blob_table::{Sha1, ZERO_HASH};
use crate::wim::metadata::ImageTree;
use crate::wim::reparse::{decode_link, REPARSE_DATA_MAX};
use crate::wim::{time, WimArchive};

/// A successful backup's record, or NOT_FOUND / a conflict.
pub fn snapshot_record(jobs: &Jobs, uuid: &str) -> Result<BackupRecord, CoreError> {
    let uuid = &resolve_uuid(jobs, uuid)?;
    let rec = jobs
        .catalog()
        .get_backup(uuid)?
        .ok_or_else(|| CoreError::NotFound(format!("no backup with uuid {uuid}")))?;
    if rec.status() != Status::Succeeded {
        return Err(CoreError::NotFound(format!(
            "backup {uuid} has no snapshot (status {})",
            rec.status
        )));
    }
    Ok(rec)
}

/// The full uuid of the backup `given` names: itself, or (as restic takes
/// short ids) a prefix of at least 4 characters that starts one backup's
/// uuid only. Unknown: NOT_FOUND; a prefix of several: INVALID_ARGUMENT.
pub fn resolve_uuid(jobs: &Jobs, given: &str) -> Result<String, CoreError> {
    let given = given.trim();
    if given.is_empty() {
        return Err(CoreError::InvalidArgument("no backup uuid given".into()));
    }
    let uuid_like = given.len() <= 36 && given.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if !uuid_like {
        return Err(CoreError::InvalidArgument(format!(
            "{given:?} is not a backup uuid: give the 36 characters `backups list` shows, or 4 or more of the first"
        )));
    }
    if given.len() >= 4 && jobs.catalog().get_backup(given)?.is_none() {
        let found = jobs
            .catalog()
            .backup_uuids_with_prefix(&given.to_ascii_lowercase(), 2)?;
        match found.as_slice() {
            [one] => return Ok(one.clone()),
            [_, _, ..] => {
                return Err(CoreError::InvalidArgument(format!(
                    "{given} starts the uuids of several backups; give more of it"
                )))
            }
            [] => {}
        }
    }
    Ok(given.to_string())
}

/// Opens the backup's archive and finds its image (by the uuid recorded in
/// the image's XML, so renumbering by deletes cannot mislead us). A remote
/// snapshot opens its object with the rest of its chain as references.
pub fn open_image(jobs: &Jobs, rec: &BackupRecord) -> Result<(WimArchive, u32), CoreError> {
    if let Some(remote) = RemoteArchive::from_id(&rec.destination) {
        let img = jobs.catalog().remote_image(&rec.uuid)?.ok_or_else(|| {
            CoreError::NotFound(format!("the catalog does not know where backup {} is stored", rec.uuid))
        })?;
        let store = jobs.object_store(&remote.plugin)?;
        let arch = crate::remote::manage::open_snapshot(jobs.catalog(), &store, &img, &**jobs.plugins())?;
        return Ok((arch, img.image_index));
    }
    let arch = WimArchive::open(Path::new(&rec.destination), &**jobs.plugins()).map_err(|e| match e {
        crate::wim::WimError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            CoreError::NotFound(format!("archive {} of backup {} is missing", rec.destination, rec.uuid))
        }
        crate::wim::WimError::CodecUnavailable(m) => {
            CoreError::FailedPrecondition(format!("backup {} cannot be read: {m}", rec.uuid))
        }
        other => CoreError::from(other).context(&format!("archive {} cannot be read", rec.destination)),
    })?;
    let index = arch
        .images()
        .iter()
        .find(|i| i.backup_uuid == rec.uuid)
        .map(|i| i.index)
        .ok_or_else(|| {
            CoreError::NotFound(format!(
                "the image of backup {} is no longer in {}",
                rec.uuid, rec.destination
            ))
        })?;
    Ok((arch, index))
}

/// A snapshot's archive, open, with its image's tree loaded and the memory
/// both take reserved from the server's budget until it is dropped.
pub struct LoadedImage {
    pub arch: WimArchive,
    pub index: u32,
    pub tree: ImageTree,
    _memory: Reservation,
}

/// Opens the snapshot's archive and loads its tree within the budget.
pub fn load_snapshot(jobs: &Jobs, rec: &BackupRecord) -> Result<LoadedImage, CoreError> {
    let (arch, index) = open_image(jobs, rec)?;
    let memory = jobs.memory().reserve_image(&arch, index, None)?;
    let tree = arch
        .load_image(index)
        .map_err(|e| CoreError::from(e).context(&format!("image {index} of {}", arch.path.display())))?;
    Ok(LoadedImage {
        arch,
        index,
        tree,
        _memory: memory,
    })
}

/// What an entry of a snapshot is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Directory,
    /// A symbolic link (a reparse point with a link target).
    Symlink,
    /// A device, FIFO or socket (its mode says which).
    Special,
}

impl EntryKind {
    /// The word users see (`ls --json`, diffs).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink => "symlink",
            EntryKind::Special => "special",
        }
    }

    /// The kind of an inode of an image: reparse points are links,
    /// directories are directories, and a UNIX mode that is neither a
    /// regular file nor absent is special.
    fn of(ino: &crate::wim::metadata::Inode, mode: u32) -> EntryKind {
        if ino.is_reparse() {
            EntryKind::Symlink
        } else if ino.is_dir() {
            EntryKind::Directory
        } else if mode & libc::S_IFMT != 0 && mode & libc::S_IFMT != libc::S_IFREG {
            EntryKind::Special
        } else {
            EntryKind::File
        }
    }
}

/// One entry as shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Unix milliseconds.
    pub mtime_ms: i64,
    pub symlink_target: String,
    pub sha1: String,
}

fn entry(arch: &WimArchive, tree: &ImageTree, d: usize) -> EntryInfo {
    let ino = tree.inode_of(d);
    let unix = ino.tagged.unix_data().unwrap_or_default();
    let kind = EntryKind::of(ino, unix.mode);
    let symlink_target = if kind == EntryKind::Symlink {
        arch.read_blob_to_vec(&ino.reparse_hash, REPARSE_DATA_MAX as u64)
            .ok()
            .and_then(|data| decode_link(ino.reparse_tag, ino.rp_flags, &data).ok())
            .map(|l| l.path)
            .unwrap_or_default()
    } else {
        String::new()
    };
    let (s, ns) = time::to_unix(ino.last_write_time);
    EntryInfo {
        path: tree.path_of(d),
        kind,
        size: arch.blob_size(&ino.data_hash).unwrap_or(0),
        mode: unix.mode,
        uid: unix.uid,
        gid: unix.gid,
        mtime_ms: s * 1000 + ns / 1_000_000,
        symlink_target,
        sha1: if ino.data_hash == ZERO_HASH || kind != EntryKind::File {
            String::new()
        } else {
            hex(&ino.data_hash)
        },
    }
}

/// Lists directory `path` of a snapshot: the directory and its children.
pub fn browse(jobs: &Jobs, rec: &BackupRecord, path: &str) -> Result<(EntryInfo, Vec<EntryInfo>), CoreError> {
    let LoadedImage { arch, tree, .. } = &load_snapshot(jobs, rec)?;
    let d = tree
        .lookup(path)
        .ok_or_else(|| CoreError::NotFound(format!("{path} does not exist in backup {}", rec.uuid)))?;
    let me = entry(arch, tree, d);
    if me.kind != EntryKind::Directory {
        return Ok((me.clone(), vec![me]));
    }
    let mut kids: Vec<EntryInfo> = tree.dentries[d]
        .children
        .iter()
        .map(|&c| entry(arch, tree, c))
        .collect();
    kids.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((me, kids))
}

/// What changed between two snapshots, path by path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added(EntryInfo),
    Removed(EntryInfo),
    Modified(EntryInfo, EntryInfo),
}

impl Change {
    pub fn path(&self) -> &str {
        match self {
            Change::Added(e) | Change::Removed(e) | Change::Modified(_, e) => &e.path,
        }
    }
}

/// Does `after` differ from `before` in anything a user would call a change?
/// Directory times are ignored (they move whenever a child is added).
fn differs(a: &EntryInfo, b: &EntryInfo) -> bool {
    a.kind != b.kind
        || a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.symlink_target != b.symlink_target
        || (a.kind != EntryKind::Directory && (a.sha1 != b.sha1 || a.size != b.size || a.mtime_ms != b.mtime_ms))
}

/// Counts of a diff.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffCounts {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
}

/// One side of a diff: a loaded image.
struct Side<'a> {
    arch: &'a WimArchive,
    tree: &'a ImageTree,
}

impl Side<'_> {
    fn entry(&self, d: usize) -> EntryInfo {
        entry(self.arch, self.tree, d)
    }
    fn is_dir(&self, d: usize) -> bool {
        self.tree.inode_of(d).is_dir()
    }
    /// A directory's children by their (display) name.
    fn children(&self, d: usize) -> impl Iterator<Item = (String, usize)> + '_ {
        self.tree.dentries[d]
            .children
            .iter()
            .map(|&c| (String::from_utf16_lossy(&self.tree.dentries[c].name), c))
    }
}

/// What a key of a directory's merged listing stands for: the entry named
/// `n` itself, or (key `n/`) everything below it.
#[derive(Clone, Copy)]
enum Slot {
    Entry(Option<usize>, Option<usize>),
    Below(Option<usize>, Option<usize>),
}

/// Compares two snapshots and hands every change to `emit` in path order
/// (byte order of the paths, as `sort` would give), without building a map
/// of all paths: both trees are walked together, one directory at a time,
/// and entries are only turned into [`EntryInfo`]s where something changed.
/// Both trees are loaded under one reservation of the memory budget.
pub fn diff(
    jobs: &Jobs,
    base: &BackupRecord,
    target: &BackupRecord,
    emit: &mut dyn FnMut(Change) -> Result<(), CoreError>,
) -> Result<DiffCounts, CoreError> {
    let (a_arch, a_index) = open_image(jobs, base)?;
    let (b_arch, b_index) = open_image(jobs, target)?;
    let need = crate::budget::image_cost(&a_arch, a_index)
        + crate::budget::table_cost(&a_arch)
        + crate::budget::image_cost(&b_arch, b_index)
        + crate::budget::table_cost(&b_arch);
    let _memory = jobs
        .memory()
        .reserve(need, &format!("the diff of {} and {}", base.uuid, target.uuid), None)?;
    let load = |arch: &WimArchive, i| {
        arch.load_image(i)
            .map_err(|e| CoreError::from(e).context(&format!("image {i} of {}", arch.path.display())))
    };
    let (a_tree, b_tree) = (load(&a_arch, a_index)?, load(&b_arch, b_index)?);
    let a = Side {
        arch: &a_arch,
        tree: &a_tree,
    };
    let b = Side {
        arch: &b_arch,
        tree: &b_tree,
    };
    let mut counts = DiffCounts::default();
    let mut report = |x: Option<usize>, y: Option<usize>, counts: &mut DiffCounts| -> Result<(), CoreError> {
        let change = match (x.map(|d| a.entry(d)), y.map(|d| b.entry(d))) {
            (Some(e), None) => {
                counts.removed += 1;
                Change::Removed(e)
            }
            (None, Some(f)) => {
                counts.added += 1;
                Change::Added(f)
            }
            (Some(e), Some(f)) if differs(&e, &f) => {
                counts.modified += 1;
                Change::Modified(e, f)
            }
            _ => return Ok(()),
        };
        emit(change)
    };
    report(Some(0), Some(0), &mut counts)?;
    // A directory pair's children merged by name; `name/` stands for what is
    // below `name`, which sorts it exactly where its paths belong.
    let listing = |x: Option<usize>, y: Option<usize>| {
        let mut keys: std::collections::BTreeMap<String, Slot> = std::collections::BTreeMap::new();
        for (first, side, dir) in [(true, &a, x), (false, &b, y)] {
            let Some(dir) = dir else { continue };
            for (name, c) in side.children(dir) {
                let put = |slot: &mut Slot| {
                    *slot = match (*slot, first) {
                        (Slot::Entry(_, y), true) => Slot::Entry(Some(c), y),
                        (Slot::Entry(x, _), false) => Slot::Entry(x, Some(c)),
                        (Slot::Below(_, y), true) => Slot::Below(Some(c), y),
                        (Slot::Below(x, _), false) => Slot::Below(x, Some(c)),
                    }
                };
                if side.is_dir(c) {
                    put(keys.entry(format!("{name}/")).or_insert(Slot::Below(None, None)));
                }
                put(keys.entry(name).or_insert(Slot::Entry(None, None)));
            }
        }
        keys.into_iter()
    };
    // The directories being listed, innermost last, with what is left of them.
    let mut stack = vec![listing(Some(0), Some(0))];
    while let Some(frame) = stack.last_mut() {
        match frame.next() {
            None => {
                stack.pop();
            }
            Some((_, Slot::Entry(x, y))) => report(x, y, &mut counts)?,
            Some((_, Slot::Below(x, y))) => {
                let next = listing(x, y);
                stack.push(next);
            }
        }
    }
    Ok(counts)
}

/// Checks the snapshot's metadata and every blob it uses. Reports (blobs, bytes).
pub fn verify(jobs: &Jobs, rec: &BackupRecord, progress: &mut dyn FnMut(u64, u64)) -> Result<(u64, u64), CoreError> {
    crate::metrics::job("verify", || {
        let _reading = reading_remote(jobs, rec)?;
        let LoadedImage { arch, tree, .. } = load_snapshot(jobs, rec)?;
        crate::wim::archive::check_items(rec.image_index, &tree).map_err(|e| CoreError::DataLoss(e.to_string()))?;
        let used: HashSet<Sha1> = tree.inodes.iter().flat_map(|ino| ino.blob_hashes().copied()).collect();
        arch.verify_blobs(used, progress)
            .map_err(|e| CoreError::from(e).context(&arch.path.display().to_string()))
    })
}

/// For a snapshot in a remote archive, counts this reader until dropped
/// (consolidation, which deletes the objects, waits for none).
fn reading_remote<'a>(jobs: &'a Jobs, rec: &BackupRecord) -> Result<Option<crate::jobs::Reading<'a>>, CoreError> {
    match RemoteArchive::from_id(&rec.destination) {
        Some(_) => Ok(Some(jobs.begin_reading(Path::new(&rec.destination))?)),
        None => Ok(None),
    }
}

/// Restores a snapshot (or paths of it) into `target`.
pub fn restore(
    jobs: &Jobs,
    rec: &BackupRecord,
    target: &Path,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ApplyReport, CoreError> {
    crate::metrics::job("restore", || {
        let _reading = reading_remote(jobs, rec)?;
        let (arch, index) = open_image(jobs, rec)?;
        // apply loads the tree itself; the reservation covers it until the end.
        let _memory = jobs.memory().reserve_image(&arch, index, opts.cancel.as_deref())?;
        apply::apply(&arch, index, target, opts, progress)
            .map_err(|e| CoreError::from(e).context(&arch.path.display().to_string()))
    })
}

/// What [`delete_backup`] did to the backup's archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteEffect {
    /// The image left the local archive, rebuilt from `before` to `after`
    /// bytes.
    Rebuilt { before: u64, after: u64 },
    /// Remote: the image is marked removed (the chain is immutable); its
    /// bytes go when the archive is consolidated.
    MarkedRemoved,
    /// Only the catalog record went: the backup never completed, or its
    /// image or archive was gone already.
    RecordOnly,
}

/// Removes a backup: its image from the archive (rebuilt without blobs no
/// other image uses; a remote one is marked removed) and its record.
/// Returns the record and what happened to the archive. A local archive
/// that is missing is refused unless `forget_missing` (then the record
/// alone goes): it is more often an unmounted disk than a lost one.
pub fn delete_backup(jobs: &Jobs, uuid: &str, forget_missing: bool) -> Result<(BackupRecord, DeleteEffect), CoreError> {
    crate::metrics::job("delete", || {
        // Asked before the record is read: a job records its final status
        // before it stops running, so what is read next is final (read
        // first, a job ending in between looked unfinished and its image
        // stayed in the archive).
        let uuid = &resolve_uuid(jobs, uuid)?;
        if jobs.is_running(uuid) {
            return Err(CoreError::Conflict(format!(
                "backup {uuid} is still running; cancel it first"
            )));
        }
        let rec = jobs
            .catalog()
            .get_backup(uuid)?
            .ok_or_else(|| CoreError::NotFound(format!("no backup with uuid {uuid}")))?;
        if rec.status() != Status::Succeeded {
            jobs.catalog().delete_backup(uuid)?;
            return Ok((rec, DeleteEffect::RecordOnly));
        }
        if let Some(remote) = RemoteArchive::from_id(&rec.destination) {
            // The chain is immutable: the image is marked removed and its bytes
            // wait for `archive consolidate`.
            let key = Path::new(&rec.destination).to_path_buf();
            jobs.lock_archive(&key, uuid)?;
            let result = (|| -> Result<DeleteEffect, CoreError> {
                match jobs.catalog().remote_image(uuid)? {
                    Some(img) => {
                        let store = jobs.object_store(&remote.plugin)?;
                        crate::remote::manage::delete_snapshot(jobs.catalog(), &store, &img)?;
                        Ok(DeleteEffect::MarkedRemoved)
                    }
                    None => {
                        jobs.catalog().delete_backup(uuid)?;
                        Ok(DeleteEffect::RecordOnly)
                    }
                }
            })();
            jobs.unlock_archive(&key);
            return Ok((rec, result?));
        }
        let path = Path::new(&rec.destination).to_path_buf();
        if !forget_missing && std::fs::symlink_metadata(&path).is_err() {
            return Err(CoreError::NotFound(format!(
                "archive {} is missing (an unmounted disk? a moved file?); nothing was deleted. Delete again once it \
                 is back, or, if it is gone for good, remove the record with `wimguard backups delete {uuid} \
                 --forget-missing`",
                path.display()
            )));
        }
        jobs.lock_archive(&path, uuid)?;
        let result = (|| {
            let (arch, index) = match open_image(jobs, &rec) {
                Ok(x) => x,
                Err(CoreError::NotFound(_)) => {
                    // Image or archive already gone: forget the record.
                    jobs.catalog().delete_backup(uuid)?;
                    return Ok(DeleteEffect::RecordOnly);
                }
                Err(e) => return Err(e),
            };
            let before = arch.file_size;
            // The rebuild loads every other image in turn and holds two tables.
            let largest = (1..=arch.image_count())
                .filter(|&i| i != index)
                .map(|i| crate::budget::image_cost(&arch, i))
                .max()
                .unwrap_or(0);
            let _memory = jobs.memory().reserve(
                largest + 2 * crate::budget::table_cost(&arch),
                &format!("the rebuild of {}", path.display()),
                None,
            )?;
            drop(arch);
            // Noted first: a crash after the rewrite and before the record
            // goes is settled at the next start, not left as a phantom.
            jobs.catalog()
                .note_pending_removals(&rec.destination, std::slice::from_ref(&rec.uuid))?;
            if let Err(e) = crate::wim::writer::delete_image(&path, index, &**jobs.plugins()) {
                let _ = jobs.catalog().clear_pending_removals(std::slice::from_ref(&rec.uuid));
                return Err(e.into());
            }
            let after = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            jobs.catalog()
                .delete_backup_and_renumber(uuid, &rec.destination, index)?;
            Ok(DeleteEffect::Rebuilt { before, after })
        })();
        jobs.unlock_archive(&path);
        Ok((rec, result?))
    })
}

/// Settles removals a crash interrupted (see
/// [`crate::catalog::Catalog::note_pending_removals`]): a backup whose
/// image is gone from its archive loses its record and the others follow
/// the archive's numbering; one whose image is still there keeps it (the
/// rewrite never happened). Returns how many records were removed.
pub fn settle_pending_removals(
    catalog: &crate::catalog::Catalog,
    codecs: &dyn crate::wim::codecs::CodecResolver,
) -> Result<u64, CoreError> {
    let pending = catalog.pending_removals()?;
    let mut archives: Vec<&str> = pending.iter().map(|(_, a)| a.as_str()).collect();
    archives.dedup();
    let mut removed = 0;
    for archive in archives {
        let uuids: Vec<String> = pending
            .iter()
            .filter(|(_, a)| a == archive)
            .map(|(u, _)| u.clone())
            .collect();
        match WimArchive::open(Path::new(archive), codecs) {
            Ok(arch) => {
                let present: HashSet<String> = arch.images().into_iter().map(|i| i.backup_uuid).collect();
                drop(arch);
                for uuid in uuids.iter().filter(|u| !present.contains(*u)) {
                    tracing::warn!(%uuid, %archive, "finishing the removal of a snapshot a crash interrupted");
                    catalog.delete_backup(uuid)?;
                    removed += 1;
                }
                crate::remote::rebuild::adopt_local(catalog, Path::new(archive), codecs)?;
            }
            Err(e) => tracing::warn!(%archive, "cannot check removals a crash interrupted: {e}"),
        }
        catalog.clear_pending_removals(&uuids)?;
    }
    Ok(removed)
}

/// Consolidates remote archive `name` of destination plugin `plugin` (see
/// [`crate::remote::manage::consolidate`]), with the archive held against
/// backups and deletes meanwhile.
pub fn consolidate(
    jobs: &Jobs,
    plugin: &str,
    name: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<crate::remote::manage::Consolidated, CoreError> {
    let key = Path::new(&RemoteArchive::new(plugin, name)?.id()).to_path_buf();
    jobs.lock_archive(&key, crate::jobs::CONSOLIDATION)?;
    let result = consolidate_held(jobs, plugin, name, progress);
    jobs.unlock_archive(&key);
    result
}

/// [`consolidate`] for a caller that already holds the archive (retention,
/// right after it removed snapshots: taking the archive again would find it
/// busy with that very job).
pub(crate) fn consolidate_held(
    jobs: &Jobs,
    plugin: &str,
    name: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<crate::remote::manage::Consolidated, CoreError> {
    crate::metrics::job("consolidate", || {
        let archive = RemoteArchive::new(plugin, name)?;
        // New readers are refused while the caller holds the archive.
        let readers = jobs.readers(Path::new(&archive.id()));
        if readers > 0 {
            return Err(CoreError::Conflict(format!(
                "{} is being read by {readers} restore(s) or verify(s), whose objects consolidation would delete; \
                 consolidate it when they are done",
                archive.id()
            )));
        }
        let store = jobs.object_store(plugin)?;
        let (compression, codec) = chain_codec(jobs, &archive)?;
        crate::remote::manage::consolidate(jobs.catalog(), &store, &archive, compression, codec, progress)
    })
}

/// The format and codec a remote chain is written in (a plugin codec's
/// when the chain's codec id is not a standard one).
fn chain_codec(
    jobs: &Jobs,
    archive: &RemoteArchive,
) -> Result<(crate::wim::Compression, Option<crate::wim::codecs::SharedCodec>), CoreError> {
    let (codec_id, _) = crate::remote::backup::chain_codec(jobs.catalog(), archive)?
        .ok_or_else(|| CoreError::NotFound(format!("no remote archive {} in the catalog", archive.id())))?;
    Ok(match codec_id.standard() {
        Some(c) => (c, crate::wim::codecs::codec_for(c)?),
        None => match jobs.resolve_codec(&codec_id)? {
            crate::jobs::CodecChoice::Plugin(c) => (crate::wim::Compression::Plugin, Some(c)),
            crate::jobs::CodecChoice::Standard { compression, .. } => {
                (compression, crate::wim::codecs::codec_for(compression)?)
            }
        },
    })
}

/// Checks remote archive `name` of `plugin` against its store (see
/// [`crate::remote::check`]). A plain check counts as a reader (no
/// consolidation deletes objects under it); a repair holds the archive, as
/// a backup would.
pub fn check_archive(
    jobs: &Jobs,
    plugin: &str,
    name: &str,
    opts: crate::remote::check::CheckOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<crate::remote::check::ChainCheck, CoreError> {
    let archive = RemoteArchive::new(plugin, name)?;
    let key = Path::new(&archive.id()).to_path_buf();
    let mut run = || {
        let _reading = jobs.begin_reading(&key)?;
        let store = jobs.object_store(plugin)?;
        let (_, codec) = chain_codec(jobs, &archive)?;
        crate::remote::check::check(jobs.catalog(), &store, &archive, codec, opts, progress)
    };
    crate::metrics::job("check", || {
        if !opts.repair {
            return run();
        }
        jobs.lock_archive(&key, crate::jobs::CHECK)?;
        let result = run();
        jobs.unlock_archive(&key);
        result
    })
}

/// Rebuilds the catalog from the remote archives of `plugins` and the local
/// `archives` (see [`crate::remote::rebuild`]); `reading` hears what is read.
pub fn rebuild_catalog(
    jobs: &Jobs,
    plugins: &[String],
    archives: &[String],
    reading: &mut dyn FnMut(&str),
) -> Result<crate::remote::rebuild::Rebuilt, CoreError> {
    crate::metrics::job("catalog-rebuild", || {
        let mut total = crate::remote::rebuild::Rebuilt::default();
        let mut add = |r: crate::remote::rebuild::Rebuilt| {
            total.archives += r.archives;
            total.objects += r.objects;
            total.snapshots += r.snapshots;
            total.added += r.added;
            total.skipped.extend(r.skipped);
        };
        // Each archive is held while its rows are replaced, like any job.
        let take = |id: &str| jobs.lock_archive(Path::new(id), "catalog rebuild");
        let give_back = |id: &str| jobs.unlock_archive(Path::new(id));
        let lock = crate::remote::rebuild::ArchiveLock {
            take: &take,
            give_back: &give_back,
        };
        for p in plugins {
            reading(&format!("the archives of plugin {p}"));
            let store = jobs.object_store(p)?;
            add(crate::remote::rebuild::rebuild_remote(
                jobs.catalog(),
                &store,
                p,
                &**jobs.plugins(),
                &lock,
            )?);
        }
        for a in archives {
            let path = Path::new(a);
            if !path.is_absolute() {
                return Err(CoreError::InvalidArgument(format!("{a} is not an absolute path")));
            }
            reading(a);
            add(crate::remote::rebuild::rebuild_local(
                jobs.catalog(),
                path,
                &**jobs.plugins(),
                &lock,
            )?);
        }
        Ok(total)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::wim::metadata::{Inode, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_NORMAL};
    use crate::wim::xml::ImageInfo;
    use crate::wim::{Compression, WimWriter};

    /// A backup can be named by a short prefix of its uuid, as restic takes
    /// short ids; one that starts several is refused, not guessed.
    #[test]
    fn short_uuid_prefixes_name_one_backup_or_are_refused() {
        let home = tempfile::tempdir().unwrap();
        let jobs = crate::jobs::tests::jobs_for_tests(home.path());
        for uuid in [
            "abcd1111-0000-4000-8000-000000000001",
            "abcd2222-0000-4000-8000-000000000002",
        ] {
            jobs.catalog()
                .insert_backup(&BackupRecord {
                    uuid: uuid.into(),
                    ..BackupRecord::default()
                })
                .unwrap();
        }
        let full = "abcd1111-0000-4000-8000-000000000001";
        assert_eq!(resolve_uuid(&jobs, full).unwrap(), full);
        assert_eq!(resolve_uuid(&jobs, "abcd1").unwrap(), full);
        assert_eq!(resolve_uuid(&jobs, " ABCD1111 ").unwrap(), full);
        assert_eq!(resolve_uuid(&jobs, &full.to_uppercase()).unwrap(), full);
        assert!(matches!(resolve_uuid(&jobs, "abcd"), Err(CoreError::InvalidArgument(m)) if m.contains("several")));
        // Too short to be a prefix, or no backup's: passed on as given
        // (then not found), never a LIKE pattern.
        assert_eq!(resolve_uuid(&jobs, "abc").unwrap(), "abc");
        assert!(matches!(snapshot_record(&jobs, "ffff"), Err(CoreError::NotFound(_))));
        // What cannot be a uuid is bad usage (exit 2), not "not found".
        for bad in ["ab%d", "notauuid", "abcd1111-0000-4000-8000-000000000001x", "../x"] {
            assert!(
                matches!(resolve_uuid(&jobs, bad), Err(CoreError::InvalidArgument(m)) if m.contains("not a backup uuid")),
                "{bad}"
            );
        }
    }

    #[test]
    fn entry_kind_words() {
        let kinds = [
            EntryKind::File,
            EntryKind::Directory,
            EntryKind::Symlink,
            EntryKind::Special,
        ];
        assert_eq!(
            kinds.map(EntryKind::as_str),
            ["file", "directory", "symlink", "special"]
        );
    }

    fn dir() -> Inode {
        Inode {
            attributes: FILE_ATTRIBUTE_DIRECTORY,
            security_id: -1,
            ..Inode::default()
        }
    }

    /// Builds a tree from `(path, is_dir, contents byte)` entries, parents first.
    fn tree(w: &mut WimWriter, entries: &[(&str, bool, u8)]) -> ImageTree {
        let mut t = ImageTree::new(dir());
        for &(path, is_dir, byte) in entries {
            let (parent, name) = path.rsplit_once('/').unwrap();
            let p = t.lookup(parent).unwrap();
            let ino = if is_dir {
                dir()
            } else {
                Inode {
                    attributes: FILE_ATTRIBUTE_NORMAL,
                    security_id: -1,
                    data_hash: w.add_small_blob(&[byte]).unwrap(),
                    ..Inode::default()
                }
            };
            let i = t.add_inode(ino);
            t.add_dentry(p, name.encode_utf16().collect(), i);
        }
        t
    }

    /// Changes come in the byte order of their paths (`/a` < `/a-b` <
    /// `/a/x`), a directory that became a file removes its whole subtree,
    /// and unchanged entries are not reported.
    #[test]
    fn diff_walks_both_trees_in_path_order() {
        let t = tempfile::tempdir().unwrap();
        let wim = t.path().join("d.wim");
        let mut w = WimWriter::create(&wim, Compression::None, 32768).unwrap();
        let before = tree(
            &mut w,
            &[
                ("/a", true, 0),
                ("/a/x", false, 1),
                ("/a/y", false, 2),
                ("/d", true, 0),
                ("/d/sub", true, 0),
                ("/d/sub/z", false, 3),
                ("/same", false, 4),
            ],
        );
        let after = tree(
            &mut w,
            &[
                ("/a", true, 0),
                ("/a/x", false, 9),
                ("/a-b", false, 5),
                ("/d", false, 6),
                ("/same", false, 4),
            ],
        );
        for (n, tr) in [("u1", &before), ("u2", &after)] {
            let info = ImageInfo {
                name: n.into(),
                backup_uuid: n.into(),
                ..ImageInfo::default()
            };
            w.add_image(tr, info).unwrap();
        }
        w.commit().unwrap();
        let rec = |u: &str| BackupRecord {
            uuid: u.into(),
            destination: wim.display().to_string(),
            ..BackupRecord::default()
        };
        let home = tempfile::tempdir().unwrap();
        let jobs = crate::jobs::tests::jobs_for_tests(home.path());
        let mut seen = Vec::new();
        let counts = diff(&jobs, &rec("u1"), &rec("u2"), &mut |c| {
            let mark = match &c {
                Change::Added(_) => '+',
                Change::Removed(_) => '-',
                Change::Modified(..) => 'M',
            };
            seen.push(format!("{mark}{}", c.path()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            ["+/a-b", "M/a/x", "-/a/y", "M/d", "-/d/sub", "-/d/sub/z"],
            "changes out of order or wrong"
        );
        let mut sorted = seen.iter().map(|s| s[1..].to_string()).collect::<Vec<_>>();
        sorted.sort();
        assert_eq!(sorted, seen.iter().map(|s| s[1..].to_string()).collect::<Vec<_>>());
        assert_eq!(
            counts,
            DiffCounts {
                added: 1,
                removed: 3,
                modified: 2
            }
        );
        assert_eq!(jobs.memory().in_use(), 0, "the diff kept its reservation");
    }
}
