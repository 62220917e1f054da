//! Operations on recorded snapshots: find, browse, diff, verify, delete,
//! restore. The core behind the snapshot and restore services; no gRPC.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use crate::apply::{self, ApplyOptions, ApplyReport};
use crate::catalog::{BackupRecord, Status};
use crate::jobs::{CoreError, Jobs};
use crate::wim::archive::hex;
use crate::wim::blob_table::{Sha1, ZERO_HASH};
use crate::wim::metadata::ImageTree;
use crate::wim::reparse::{decode_link, REPARSE_DATA_MAX};
use crate::wim::{time, WimArchive};

/// A successful backup's record, or NOT_FOUND / a conflict.
pub fn snapshot_record(jobs: &Jobs, uuid: &str) -> Result<BackupRecord, CoreError> {
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

/// Opens the backup's archive and finds its image (by the uuid recorded in
/// the image's XML, so renumbering by deletes cannot mislead us).
pub fn open_image(rec: &BackupRecord) -> Result<(WimArchive, u32), CoreError> {
    let arch = WimArchive::open(Path::new(&rec.destination)).map_err(|e| match e {
        crate::wim::WimError::Io(io) if io.kind() == std::io::ErrorKind::NotFound => {
            CoreError::NotFound(format!("archive {} of backup {} is missing", rec.destination, rec.uuid))
        }
        crate::wim::WimError::CodecUnavailable(m) => {
            CoreError::FailedPrecondition(format!("backup {} cannot be read: {m}", rec.uuid))
        }
        other => CoreError::DataLoss(format!("archive {} cannot be read: {other}", rec.destination)),
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

fn load(arch: &WimArchive, index: u32) -> Result<ImageTree, CoreError> {
    arch.load_image(index).map_err(|e| CoreError::DataLoss(e.to_string()))
}

/// One entry as shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryInfo {
    pub path: String,
    /// 'd', '-', 'l' or 's'.
    pub kind: char,
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
    let kind = if ino.is_reparse() {
        'l'
    } else if ino.is_dir() {
        'd'
    } else if unix.mode & libc::S_IFMT != 0 && unix.mode & libc::S_IFMT != libc::S_IFREG {
        's'
    } else {
        '-'
    };
    let symlink_target = if kind == 'l' {
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
        sha1: if ino.data_hash == ZERO_HASH || kind != '-' {
            String::new()
        } else {
            hex(&ino.data_hash)
        },
    }
}

/// Lists directory `path` of a snapshot: the directory and its children.
pub fn browse(rec: &BackupRecord, path: &str) -> Result<(EntryInfo, Vec<EntryInfo>), CoreError> {
    let (arch, index) = open_image(rec)?;
    let tree = load(&arch, index)?;
    let d = tree
        .lookup(path)
        .ok_or_else(|| CoreError::NotFound(format!("{path} does not exist in backup {}", rec.uuid)))?;
    let me = entry(&arch, &tree, d);
    if me.kind != 'd' {
        return Ok((me.clone(), vec![me]));
    }
    let mut kids: Vec<EntryInfo> = tree.dentries[d]
        .children
        .iter()
        .map(|&c| entry(&arch, &tree, c))
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

fn all_entries(rec: &BackupRecord) -> Result<BTreeMap<String, EntryInfo>, CoreError> {
    let (arch, index) = open_image(rec)?;
    let tree = load(&arch, index)?;
    Ok(tree
        .walk(0)
        .into_iter()
        .map(|d| entry(&arch, &tree, d))
        .map(|e| (e.path.clone(), e))
        .collect())
}

/// Does `after` differ from `before` in anything a user would call a change?
/// Directory times are ignored (they move whenever a child is added).
fn differs(a: &EntryInfo, b: &EntryInfo) -> bool {
    a.kind != b.kind
        || a.mode != b.mode
        || a.uid != b.uid
        || a.gid != b.gid
        || a.symlink_target != b.symlink_target
        || (a.kind != 'd' && (a.sha1 != b.sha1 || a.size != b.size || a.mtime_ms != b.mtime_ms))
}

pub fn diff(base: &BackupRecord, target: &BackupRecord) -> Result<Vec<Change>, CoreError> {
    let a = all_entries(base)?;
    let b = all_entries(target)?;
    let mut out = Vec::new();
    for (p, e) in &a {
        match b.get(p) {
            None => out.push(Change::Removed(e.clone())),
            Some(f) if differs(e, f) => out.push(Change::Modified(e.clone(), f.clone())),
            _ => {}
        }
    }
    for (p, f) in &b {
        if !a.contains_key(p) {
            out.push(Change::Added(f.clone()));
        }
    }
    out.sort_by(|x, y| x.path().cmp(y.path()));
    Ok(out)
}

/// Checks the snapshot's metadata and every blob it uses. Reports (blobs, bytes).
pub fn verify(rec: &BackupRecord, progress: &mut dyn FnMut(u64, u64)) -> Result<(u64, u64), CoreError> {
    let (arch, index) = open_image(rec)?;
    let tree = load(&arch, index)?;
    let used: HashSet<Sha1> = tree.inodes.iter().flat_map(|ino| ino.blob_hashes().copied()).collect();
    arch.verify_blobs(used, progress)
        .map_err(|e| CoreError::DataLoss(e.to_string()))
}

/// Restores a snapshot (or paths of it) into `target`.
pub fn restore(
    rec: &BackupRecord,
    target: &Path,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ApplyReport, CoreError> {
    let (arch, index) = open_image(rec)?;
    apply::apply(&arch, index, target, opts, progress).map_err(|e| match e {
        crate::wim::WimError::Locked(m) => CoreError::Conflict(m),
        crate::wim::WimError::Invalid(m) | crate::wim::WimError::Corrupt(m) => CoreError::DataLoss(m),
        other => CoreError::from(other),
    })
}

/// Removes a backup: its image from the archive (rebuilt without blobs no
/// other image uses) and its record. Returns the record and the archive
/// size before and after.
pub fn delete_backup(jobs: &Jobs, uuid: &str) -> Result<(BackupRecord, u64, u64), CoreError> {
    let rec = jobs
        .catalog()
        .get_backup(uuid)?
        .ok_or_else(|| CoreError::NotFound(format!("no backup with uuid {uuid}")))?;
    if jobs.is_running(uuid) {
        return Err(CoreError::Conflict(format!(
            "backup {uuid} is still running; cancel it first"
        )));
    }
    if rec.status() != Status::Succeeded {
        jobs.catalog().delete_backup(uuid)?;
        return Ok((rec, 0, 0));
    }
    let path = Path::new(&rec.destination).to_path_buf();
    jobs.lock_archive(&path, uuid)?;
    let result = (|| {
        let (arch, index) = match open_image(&rec) {
            Ok(x) => x,
            Err(CoreError::NotFound(_)) => {
                // Image or archive already gone: forget the record.
                jobs.catalog().delete_backup(uuid)?;
                return Ok((0, 0));
            }
            Err(e) => return Err(e),
        };
        let before = arch.file_size;
        drop(arch);
        crate::wim::writer::delete_image(&path, index)?;
        let after = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        jobs.catalog()
            .delete_backup_and_renumber(uuid, &rec.destination, index)?;
        Ok((before, after))
    })();
    jobs.unlock_archive(&path);
    let (before, after) = result?;
    Ok((rec, before, after))
}
