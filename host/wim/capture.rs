//! Capture: turns a Linux directory tree into a new image of a WIM.
//!
//! Two stages that overlap. The *walk* lists the tree with lstat only and
//! builds the image metadata (memory grows with the number of files, not
//! their size); each file it finds goes straight to the *data* stage, where
//! a reader thread reads and hashes it, compression threads compress its
//! chunks and the calling thread writes them in order. A file whose inode
//! number, change time and modification time match those of the same path
//! in the previous image keeps its hash without being read.
//!
//! Metadata is stored the way wimlib stores it (`--unix-data`), so
//! `wimlib-imagex apply --unix-data` restores our images faithfully.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha1::{Digest, Sha1 as Sha1Hasher};

use crate::blob_table::{Sha1, ZERO_HASH};
use crate::fsutil;
use crate::identity::IdentityKey;
use crate::metadata::{
    ImageTree, Inode, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_ATTRIBUTE_SPARSE_FILE,
};
use crate::reparse::{encode_symlink, REPARSE_TAG_SYMLINK};
use crate::tagged::{TaggedItems, UnixData, XATTR_NAME_MAX, XATTR_VALUE_MAX};
use crate::writer::{ChunkJob, WimWriter};
use crate::xml::ImageInfo;
use crate::{time, Result, WimError};

/// What to capture and how.
#[derive(Debug, Clone, Default)]
pub struct CaptureOptions {
    /// Image name (must be unique in the archive).
    pub name: String,
    pub description: String,
    /// gitignore-style patterns, matched against paths relative to the source.
    pub excludes: Vec<String>,
    /// Disable re-rooting of absolute symlinks that point into the tree.
    pub no_rpfix: bool,
    /// Set to stop the capture early; it then fails with `WimError::Cancelled`.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Recorded in the image's XML (see `ImageInfo::backup_uuid`).
    pub backup_uuid: String,
}

impl CaptureOptions {
    fn check_cancel(&self) -> Result<()> {
        match &self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(WimError::Cancelled),
            _ => Ok(()),
        }
    }
}

/// Which part of the capture is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapturePhase {
    /// Walking the tree, while the files found so far are read and
    /// written: `files_total` and `bytes_total` still grow.
    Scanning,
    /// The walk is over (the totals are final); file contents are still
    /// being read, hashed, compressed and written.
    Writing,
    /// Writing metadata, blob table and XML.
    Finalizing,
}

/// A progress report.
#[derive(Debug, Clone, Copy)]
pub struct CaptureProgress {
    pub phase: CapturePhase,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// Checks a user-chosen image name: it must be storable in WIM's XML and
/// addressable by `wimlib-imagex` (which reads a number as an index and
/// `all`/`*` as every image). Returns why not.
pub fn check_image_name(name: &str) -> std::result::Result<(), String> {
    if !crate::xml::valid_xml_text(name) {
        return Err(format!(
            "invalid image name {name:?}: control characters cannot be stored"
        ));
    }
    if name.is_empty() || name.chars().all(|c| c.is_ascii_digit()) || name.eq_ignore_ascii_case("all") || name == "*" {
        return Err(format!(
            "invalid image name {name:?}: it must not be empty, a number, \"all\" or \"*\""
        ));
    }
    Ok(())
}

/// `wimguard-2024-01-02T03:04:05Z` (now, UTC), with a `-2`, `-3`, … suffix
/// until `taken` says the name is free.
pub fn default_image_name(taken: &dyn Fn(&str) -> bool) -> String {
    let (seconds, _) = time::to_unix(time::now());
    let base = format!("wimguard-{}", time::rfc3339_utc(seconds));
    let mut name = base.clone();
    let mut n = 2;
    while taken(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// The image whose hashes unchanged files may reuse, and whatever must
/// live exactly as long as it does.
///
/// The capture's walk owns it. A walk stuck in the kernel (a hung network
/// mount) outlives the capture that gave up on it, and the tree with it; so
/// what accounts for the tree's memory (the daemon's reservation) is held
/// here, not by the caller, and is given back only once the tree is freed.
pub struct PreviousImage {
    /// Dropped first (fields drop in order): the memory goes, then its
    /// account.
    tree: ImageTree,
    _held: Option<Box<dyn Send>>,
}

impl PreviousImage {
    /// An image that needs nothing kept beside it.
    pub fn new(tree: ImageTree) -> Self {
        PreviousImage { tree, _held: None }
    }

    /// An image that keeps `held` alive until it is itself dropped.
    pub fn holding(tree: ImageTree, held: impl Send + 'static) -> Self {
        PreviousImage {
            tree,
            _held: Some(Box::new(held)),
        }
    }

    pub fn tree(&self) -> &ImageTree {
        &self.tree
    }
}

/// The images [`latest_wimguard_image`] may load, newest first.
pub fn reuse_candidates(writer: &crate::WimWriter) -> impl Iterator<Item = u32> {
    (1..=writer.base_image_count()).rev().take(8)
}

/// The newest of the last few images that carries WimGuard's file identity
/// items, whose hashes unchanged files may reuse. Images appended by other
/// tools (wimlib) lack them; an older WimGuard image behind them still helps.
/// Read through the appending writer, so the archive is parsed only once.
pub fn latest_wimguard_image(writer: &crate::WimWriter) -> Result<Option<ImageTree>> {
    previous_wimguard_image(writer, "")
}

/// Like [`latest_wimguard_image`], but the newest image the daemon backed up
/// from `source` comes first (its XML names the source): when several
/// sources share one archive, a backup compares with its own last snapshot,
/// where its unchanged files are, not with another source's.
pub fn previous_wimguard_image(writer: &crate::WimWriter, source: &str) -> Result<Option<ImageTree>> {
    let mut candidates: Vec<u32> = reuse_candidates(writer).collect();
    if !source.is_empty() {
        let infos = writer.xml().images();
        let own = |i: &u32| infos.iter().any(|x| x.index == *i && x.source == source);
        // Stable: newest first within each group.
        candidates.sort_by_key(|i| !own(i));
    }
    for i in candidates {
        let tree = writer.load_image(i)?;
        if tree.inodes.iter().any(|ino| ino.identity_key().is_some()) {
            return Ok(Some(tree));
        }
    }
    Ok(None)
}

/// Counts reported after a capture.
#[derive(Debug, Clone, Default)]
pub struct CaptureReport {
    pub image_index: u32,
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub specials: u64,
    /// Logical bytes of regular file contents in the image.
    pub bytes_total: u64,
    /// Bytes actually read from disk (unchanged files are not read).
    pub bytes_read: u64,
    /// Bytes written for new blobs (after compression).
    pub bytes_stored: u64,
    pub new_blobs: u64,
    /// Files whose hash was reused from the previous image.
    pub reused: u64,
    /// Paths skipped or captured imperfectly, with the reason.
    pub warnings: Vec<String>,
}

/// Receives progress reports (often: after every file written, and every
/// 0.1 s while only the walk makes progress).
pub type ProgressFn<'a> = dyn FnMut(&CaptureProgress) + 'a;

/// A directory the scan has yet to list.
struct DirToScan {
    path: PathBuf,
    /// Its dentry in the new image.
    dentry: usize,
    /// Its path relative to the source; kept only for `--exclude`.
    rel: String,
    /// (device, inode) as listed: what may be opened for it.
    id: (u64, u64),
    /// The same directory's dentry in the previous image, if it had one.
    before: Option<usize>,
}

struct DataJob {
    /// The file's inode in the new image; `None` for a symlink's reparse
    /// data, stored as a blob but not as anyone's contents.
    inode: Option<usize>,
    path: PathBuf,
    size: u64,
    /// (device, inode) as listed: what may be read for it.
    id: (u64, u64),
    /// Modification and change times as listed, (seconds, nanoseconds)
    /// each: a file whose times moved by the end of its read changed
    /// while it was read.
    listed_times: [(i64, i64); 2],
}

/// A file's modification and change times, (seconds, nanoseconds) each.
fn times_of(m: &fs::Metadata) -> [(i64, i64); 2] {
    [(m.mtime(), m.mtime_nsec()), (m.ctime(), m.ctime_nsec())]
}

fn unix_of(m: &fs::Metadata) -> UnixData {
    UnixData {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode(),
        rdev: m.rdev() as u32,
    }
}

fn read_xattrs(path: &Path, warnings: &mut Vec<String>) -> Vec<(Vec<u8>, Vec<u8>)> {
    match fsutil::list_xattrs(path) {
        Ok(list) => list
            .into_iter()
            .filter(|(n, v)| {
                let ok = n.len() <= XATTR_NAME_MAX && v.len() <= XATTR_VALUE_MAX;
                if !ok {
                    warnings.push(format!(
                        "{}: extended attribute {} is too large for a WIM; skipped",
                        path.display(),
                        String::from_utf8_lossy(n)
                    ));
                }
                ok
            })
            .collect(),
        Err(e) => {
            warnings.push(format!("{}: cannot read extended attributes: {e}", path.display()));
            Vec::new()
        }
    }
}

fn base_inode(m: &fs::Metadata, attributes: u32) -> Inode {
    let mtime = time::from_unix(m.mtime(), m.mtime_nsec());
    Inode {
        attributes,
        security_id: -1,
        creation_time: mtime,
        last_write_time: mtime,
        last_access_time: time::from_unix(m.atime(), m.atime_nsec()),
        ..Inode::default()
    }
}

/// If an absolute symlink target resolves (by device and inode of its
/// successive prefixes, from the first component on) to the capture root,
/// returns what follows that prefix, as written: `""` for a link to the
/// root itself, `"/sub"` for one into it. The same rule as wimlib's, so
/// both tools restore the link alike (the root link without a trailing
/// slash; a capture of `/` itself keeps its absolute links as they are).
fn rpfix_target(target: &str, root_id: (u64, u64)) -> Option<String> {
    if !target.starts_with('/') {
        return None;
    }
    let bytes = target.as_bytes();
    let mut end = 0;
    loop {
        while end < bytes.len() && bytes[end] == b'/' {
            end += 1;
        }
        if end == bytes.len() {
            return None;
        }
        while end < bytes.len() && bytes[end] != b'/' {
            end += 1;
        }
        match fs::metadata(&target[..end]) {
            Ok(m) if (m.dev(), m.ino()) == root_id => return Some(target[end..].to_string()),
            Ok(_) => {}
            // The link points outside what can be looked at.
            Err(_) => return None,
        }
    }
}

/// What the walk hands the data phase, in archive order.
enum Found {
    /// A regular file whose contents must be read.
    File(DataJob),
    /// A symlink's reparse data (`job.inode` is `None`), new to the
    /// archive: compressed and stored like a file's contents.
    ReparseData { job: DataJob, data: Vec<u8>, hash: Sha1 },
}

/// How far the walk has got, shared with the thread that reports progress.
#[derive(Default)]
struct WalkCounters {
    /// Files found that must be read, and their bytes.
    files: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
    /// The walk is over: the totals above are final.
    done: AtomicBool,
}

/// Items (files to read, symlink data) the walk may be ahead of the
/// reader: the files found wait here, not in a list of the whole tree.
/// Where reading is the slower part (compressed captures), the walk thus
/// ends when the reader is this close to the end, and the hashes of the
/// files written until then wait in a list of 24 bytes a file.
const FOUND_QUEUE: usize = 1024;

/// What the walk produced besides the files it sent on.
struct Walked {
    tree: ImageTree,
    report: CaptureReport,
}

/// What the walk needs, owned: it is not joined when the capture fails or
/// is cancelled, since it may be stuck in the kernel (a hung network mount)
/// and the capture must still end.
struct WalkContext {
    src: PathBuf,
    root_meta: fs::Metadata,
    opts: CaptureOptions,
    excludes: Option<Gitignore>,
    previous: Option<PreviousImage>,
    /// For each inode of `previous`: are its contents in the archive (so
    /// an unchanged file may keep them)?
    previous_stored: Vec<bool>,
    root_id: (u64, u64),
    /// The archive being written, when it lives inside the source.
    own_output: Option<(u64, u64)>,
    counters: Arc<WalkCounters>,
    /// Set by whichever side fails (the walk, or the data stage): the
    /// other stops early.
    abort: Arc<AtomicBool>,
}

/// Captures `src` as a new image in `writer`. `previous` is the image whose
/// hashes may be reused for unchanged files; it is dropped when the walk
/// ends, which may be after this returns (a walk stuck in a hung mount).
///
/// The walk runs on a thread of its own and sends each file to the reader
/// as soon as it is listed, so reading and compressing start at once
/// instead of after the whole tree was listed (on /usr/share the walk is
/// 0.2 s, a quarter of an uncompressed capture).
pub fn capture(
    src: &Path,
    writer: &mut WimWriter,
    previous: Option<PreviousImage>,
    opts: &CaptureOptions,
    progress: &mut ProgressFn,
) -> Result<CaptureReport> {
    let root_meta = fs::metadata(src).map_err(|e| {
        WimError::Io(io::Error::new(
            e.kind(),
            format!("cannot read source {}: {e}", src.display()),
        ))
    })?;
    if !root_meta.is_dir() {
        return Err(WimError::Invalid(format!(
            "source {} is not a directory",
            src.display()
        )));
    }
    let excludes = build_excludes(src, &opts.excludes)?;
    let counters = Arc::new(WalkCounters::default());
    let abort = Arc::new(AtomicBool::new(false));
    // What of the previous image the archive holds: each inode's contents
    // (an unchanged file may keep them), and its reparse data (a symlink
    // with the same data sends nothing). The walk cannot ask the writer.
    let stored_in = |hash: &Sha1| *hash != ZERO_HASH && writer.has_blob(hash);
    let mut previous_stored = Vec::new();
    let mut reparse_known = std::collections::HashSet::new();
    for i in previous.as_ref().map_or(&[][..], |p| &p.tree.inodes[..]) {
        previous_stored.push(stored_in(&i.data_hash));
        if i.is_reparse() && stored_in(&i.reparse_hash) {
            reparse_known.insert(i.reparse_hash);
        }
    }
    let ctx = WalkContext {
        src: src.to_path_buf(),
        root_id: (root_meta.dev(), root_meta.ino()),
        root_meta,
        opts: opts.clone(),
        excludes,
        previous_stored,
        previous,
        own_output: writer.output_identity(),
        counters: Arc::clone(&counters),
        abort: Arc::clone(&abort),
    };
    let (found_tx, found_rx) = mpsc::sync_channel::<Found>(FOUND_QUEUE);
    // The walk hands its tree over as soon as it is done: the hashes of the
    // files written after that go straight into it.
    let (walked_tx, walked_rx) = mpsc::sync_channel::<Result<Walked>>(1);
    std::thread::Builder::new()
        .name("capture-walk".into())
        .spawn(move || {
            let _crash = AbortOnDrop::if_panicking(Arc::clone(&ctx.abort));
            let walked = walk(ctx, reparse_known, found_tx);
            let _ = walked_tx.send(walked);
        })
        .map_err(|e| WimError::Io(io::Error::new(e.kind(), format!("cannot start the walk thread: {e}"))))?;
    // However this function ends (an error, a panic), the walk and the
    // reader stop; on success both are over already.
    let _end = AbortOnDrop::always(Arc::clone(&abort));
    // A failed data stage explains itself better than the walk it stops.
    let mut stored = match read_and_store(writer, found_rx, &walked_rx, opts, &counters, &abort, progress) {
        Ok(s) => s,
        Err(e) => {
            abort.store(true, Ordering::Relaxed);
            // Most often the walk ends within moments, and with it the
            // previous image (and the memory account it holds). A walk stuck
            // in the kernel keeps both until it ends.
            let _ = walked_rx.recv_timeout(std::time::Duration::from_secs(1));
            return Err(e);
        }
    };
    // The reader ended, so the walk is over (or failed): its result is
    // there or about to be.
    let walked = match stored.walked.take() {
        Some(w) => w,
        None => walked_rx.recv().unwrap_or_else(|_| {
            Err(WimError::Io(io::Error::other(
                "the directory walk crashed (please report); the archive is unchanged",
            )))
        }),
    };
    let Walked { mut tree, mut report } = walked?;
    for (inode, hash) in std::mem::take(&mut stored.hashes) {
        tree.inodes[inode as usize].data_hash = hash;
    }
    report.bytes_read = stored.bytes_read;
    report.bytes_stored = stored.bytes_stored;
    report.new_blobs = stored.new_blobs;
    report.warnings.extend(stored.warnings);
    opts.check_cancel()?;
    progress(&CaptureProgress {
        phase: CapturePhase::Finalizing,
        files_done: 0,
        files_total: 0,
        bytes_done: report.bytes_read,
        bytes_total: report.bytes_read,
    });
    if !stored.failed.is_empty() {
        // The counts say what the image holds: a skipped file is only in
        // the warnings.
        let (kept, names_dropped) = without_inodes(&tree, &stored.failed);
        tree = kept;
        report.files = report.files.saturating_sub(names_dropped);
        report.bytes_total = report.bytes_total.saturating_sub(stored.failed_bytes);
    }
    let now = time::now();
    let info = ImageInfo {
        name: opts.name.clone(),
        description: opts.description.clone(),
        creation_time: now,
        last_modification_time: now,
        backup_uuid: opts.backup_uuid.clone(),
        // Only the daemon's backups say where they came from.
        source: if opts.backup_uuid.is_empty() {
            String::new()
        } else {
            src.display().to_string()
        },
        ..ImageInfo::default()
    };
    report.image_index = writer.add_image(&tree, info)?;
    Ok(report)
}

/// Raises an abort flag when dropped: always, or only while the thread
/// unwinds from a panic.
struct AbortOnDrop {
    flag: Arc<AtomicBool>,
    only_on_panic: bool,
}

impl AbortOnDrop {
    fn always(flag: Arc<AtomicBool>) -> Self {
        AbortOnDrop {
            flag,
            only_on_panic: false,
        }
    }

    fn if_panicking(flag: Arc<AtomicBool>) -> Self {
        AbortOnDrop {
            flag,
            only_on_panic: true,
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.only_on_panic || std::thread::panicking() {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Walks the tree with lstat only and builds the image metadata (memory
/// grows with the number of files, not their size); each file to read and
/// each symlink's data not in `reparse_known` goes to `found` as soon as it
/// is listed. On failure it raises `abort`, so the reader stops too.
fn walk(
    ctx: WalkContext,
    mut reparse_known: std::collections::HashSet<Sha1>,
    found: mpsc::SyncSender<Found>,
) -> Result<Walked> {
    let walked = walk_tree(&ctx, &mut reparse_known, &found);
    if walked.is_err() {
        ctx.abort.store(true, Ordering::Relaxed);
    }
    walked
}

fn walk_tree(
    ctx: &WalkContext,
    reparse_known: &mut std::collections::HashSet<Sha1>,
    found: &mpsc::SyncSender<Found>,
) -> Result<Walked> {
    let previous = ctx.previous.as_ref().map(PreviousImage::tree);
    let (src, opts) = (ctx.src.as_path(), &ctx.opts);
    let root_meta = &ctx.root_meta;
    let mut report = CaptureReport::default();
    let mut root = base_inode(root_meta, FILE_ATTRIBUTE_DIRECTORY);
    let root_x = read_xattrs(src, &mut report.warnings);
    root.tagged = TaggedItems::build(Some(unix_of(root_meta)), &root_x);
    let mut tree = ImageTree::new(root);
    let mut links: HashMap<(u64, u64), usize> = HashMap::new();
    let mut stack = vec![DirToScan {
        path: src.to_path_buf(),
        dentry: 0,
        rel: String::new(),
        id: ctx.root_id,
        before: previous.map(|_| 0),
    }];
    // The data stage failed (or this capture is over): the walk ends too;
    // its error is not the one reported.
    let stopped = || -> Result<()> {
        if ctx.abort.load(Ordering::Relaxed) {
            return Err(WimError::Cancelled);
        }
        opts.check_cancel()
    };
    // A full queue waits for the reader. The reader stops at cancel or
    // abort and drops its end, which ends this wait; a reader stuck in the
    // kernel keeps the walk waiting too, but neither is joined.
    let send = |f: Found| -> Result<()> { found.send(f).map_err(|_| WimError::Cancelled) };
    let mut scanned = 0u64;
    while let Some(DirToScan {
        path: dir,
        dentry,
        rel: rel_dir,
        id: dir_id,
        before: prev_dir,
    }) = stack.pop()
    {
        stopped()?;
        // The previous image's entries of this directory, by name: an
        // unchanged file there keeps its hash without being read.
        let prev_entries = match (previous, prev_dir) {
            (Some(prev), Some(d)) => previous_entries(prev, d),
            _ => Vec::new(),
        };
        // Only the root may be reached through a symlink (the user named it).
        let mut entries = match fsutil::list_source_dir(&dir, dir_id, dentry == 0) {
            Ok(Ok(names)) => names,
            Ok(Err(why)) => {
                report.warnings.push(format!(
                    "{}: {why} since it was listed; its contents are not in this backup",
                    dir.display()
                ));
                continue;
            }
            Err(e) => {
                report
                    .warnings
                    .push(format!("{}: cannot list directory: {e}", dir.display()));
                continue;
            }
        };
        entries.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for os_name in entries {
            scanned += 1;
            if scanned.is_multiple_of(1000) {
                stopped()?;
            }
            let path = dir.join(&os_name);
            let Some(name) = fsutil::utf8_name(&os_name) else {
                report.warnings.push(format!(
                    "{}: name is not valid UTF-8; skipped (WIM names are UTF-16)",
                    path.display()
                ));
                continue;
            };
            let rel = match &ctx.excludes {
                None => String::new(),
                Some(_) if rel_dir.is_empty() => name.to_string(),
                Some(_) => format!("{rel_dir}/{name}"),
            };
            let m = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    report
                        .warnings
                        .push(format!("{}: cannot stat: {e}; skipped", path.display()));
                    continue;
                }
            };
            let ft = m.file_type();
            if Some((m.dev(), m.ino())) == ctx.own_output {
                continue; // the archive being written lives inside the source
            }
            if let Some(ex) = &ctx.excludes {
                if ex.matched_path_or_any_parents(&rel, ft.is_dir()).is_ignore() {
                    continue;
                }
            }
            let mut name16: Vec<u16> = Vec::with_capacity(name.len());
            name16.extend(name.encode_utf16());
            let before = prev_entries
                .binary_search_by(|(n, ..)| (*n).cmp(&name16[..]))
                .ok()
                .map(|i| prev_entries[i]);
            if !ft.is_dir() && m.nlink() > 1 {
                if let Some(&ino) = links.get(&(m.dev(), m.ino())) {
                    tree.add_dentry(dentry, name16, ino);
                    count_type(&mut report, &ft);
                    continue;
                }
            }
            let xattrs = read_xattrs(&path, &mut report.warnings);
            let unix = Some(unix_of(&m));
            let inode = if ft.is_dir() {
                let mut ino = base_inode(&m, FILE_ATTRIBUTE_DIRECTORY);
                ino.tagged = TaggedItems::build(unix, &xattrs);
                ino
            } else if ft.is_file() {
                let sparse = m.blocks() * 512 < m.size();
                let mut ino = base_inode(
                    &m,
                    if sparse {
                        FILE_ATTRIBUTE_SPARSE_FILE
                    } else {
                        FILE_ATTRIBUTE_NORMAL
                    },
                );
                ino.tagged = TaggedItems::build(unix, &xattrs);
                ino.reserved = IdentityKey {
                    ino: m.ino(),
                    ctime: time::from_unix(m.ctime(), m.ctime_nsec()),
                }
                .to_reserved();
                ino
            } else if ft.is_symlink() {
                let target = match fs::read_link(&path) {
                    Ok(t) => t,
                    Err(e) => {
                        report
                            .warnings
                            .push(format!("{}: cannot read symlink: {e}; skipped", path.display()));
                        continue;
                    }
                };
                let Some(target) = fsutil::utf8_name(target.as_os_str()) else {
                    report.warnings.push(format!(
                        "{}: symlink target is not valid UTF-8; skipped",
                        path.display()
                    ));
                    continue;
                };
                let fixed = if opts.no_rpfix {
                    None
                } else {
                    rpfix_target(target, ctx.root_id)
                };
                // A target of nearly PATH_MAX bytes does not fit a reparse
                // point: one such link must not fail the whole backup.
                let (data, rp_flags) = match encode_symlink(target, fixed.as_deref()) {
                    Ok(encoded) => encoded,
                    Err(e) => {
                        let why = match e {
                            WimError::Invalid(why) => why,
                            other => other.to_string(),
                        };
                        report.warnings.push(format!("{}: {why}; skipped", path.display()));
                        continue;
                    }
                };
                let mut attributes = FILE_ATTRIBUTE_REPARSE_POINT;
                if fs::metadata(&path).map(|t| t.is_dir()).unwrap_or(false) {
                    attributes |= FILE_ATTRIBUTE_DIRECTORY;
                }
                let mut ino = base_inode(&m, attributes);
                ino.reparse_tag = REPARSE_TAG_SYMLINK;
                ino.rp_flags = rp_flags;
                let hash: Sha1 = Sha1Hasher::digest(&data).into();
                ino.reparse_hash = hash;
                ino.tagged = TaggedItems::build(unix, &xattrs);
                if reparse_known.insert(hash) {
                    let job = DataJob {
                        inode: None,
                        path: path.clone(),
                        size: data.len() as u64,
                        id: (m.dev(), m.ino()),
                        listed_times: times_of(&m),
                    };
                    send(Found::ReparseData { job, data, hash })?;
                }
                ino
            } else {
                // FIFO, socket, character or block device: type and rdev live in the UNIX data.
                let mut ino = base_inode(&m, 0);
                ino.tagged = TaggedItems::build(unix, &xattrs);
                ino
            };
            let is_file = ft.is_file();
            let is_dir = ft.is_dir();
            let size = m.size();
            let idx = tree.add_inode(inode);
            let d = tree.add_dentry(dentry, name16, idx);
            count_type(&mut report, &ft);
            if !is_dir && m.nlink() > 1 {
                links.insert((m.dev(), m.ino()), idx);
            }
            if is_file && size > 0 {
                report.bytes_total += size;
                let now = &tree.inodes[idx];
                let reuse = before.filter(|&(_, _, was_idx, was)| {
                    !was.is_dir()
                        && !was.is_reparse()
                        && ctx.previous_stored[was_idx]
                        && was.identity_key().is_some_and(|k| Some(k) == now.identity_key())
                        && was.last_write_time == now.last_write_time
                });
                match reuse {
                    Some((.., was)) => {
                        tree.inodes[idx].data_hash = was.data_hash;
                        report.reused += 1;
                    }
                    None => {
                        ctx.counters.files.fetch_add(1, Ordering::Relaxed);
                        ctx.counters.bytes.fetch_add(size, Ordering::Relaxed);
                        send(Found::File(DataJob {
                            inode: Some(idx),
                            path,
                            size,
                            id: (m.dev(), m.ino()),
                            listed_times: times_of(&m),
                        }))?;
                    }
                }
            } else if is_dir {
                stack.push(DirToScan {
                    path,
                    dentry: d,
                    rel,
                    id: (m.dev(), m.ino()),
                    before: before.filter(|(.., was)| was.is_dir()).map(|(_, c, ..)| c),
                });
            }
        }
    }
    ctx.counters.done.store(true, Ordering::Release);
    // What only the walk needed goes before the metadata phase, which
    // reaches the peak of memory (the serialized metadata beside the
    // tree). Growth by doubling leaves up to half of each vector unused.
    drop(links);
    tree.inodes.shrink_to_fit();
    tree.dentries.shrink_to_fit();
    Ok(Walked { tree, report })
}

fn count_type(r: &mut CaptureReport, ft: &fs::FileType) {
    if ft.is_dir() {
        r.dirs += 1;
    } else if ft.is_file() {
        r.files += 1;
    } else if ft.is_symlink() {
        r.symlinks += 1;
    } else if ft.is_fifo() || ft.is_socket() || ft.is_char_device() || ft.is_block_device() {
        r.specials += 1;
    }
}

fn build_excludes(src: &Path, patterns: &[String]) -> Result<Option<Gitignore>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    // The user's input, not the archive's: a usage error.
    let bad = |m: String| WimError::Io(io::Error::new(io::ErrorKind::InvalidInput, m));
    let mut b = GitignoreBuilder::new(src);
    for p in patterns {
        b.add_line(None, p)
            .map_err(|e| bad(format!("bad --exclude pattern {p:?}: {e}")))?;
    }
    b.build()
        .map(Some)
        .map_err(|e| bad(format!("bad --exclude patterns: {e}")))
}

/// Checks `--exclude` patterns before any work starts: the error
/// [`capture`] would end with.
pub fn check_excludes(patterns: &[String]) -> Result<()> {
    build_excludes(Path::new("/"), patterns).map(|_| ())
}

/// The entries of directory `dir` of the previous image (name, dentry,
/// inode index, inode), sorted by name for lookup by the names the scan
/// lists. Walking the previous tree beside the scan, one directory at a
/// time, needs no path strings and no map of every file of the image.
type PreviousEntry<'a> = (&'a [u16], usize, usize, &'a Inode);

fn previous_entries(prev: &ImageTree, dir: usize) -> Vec<PreviousEntry<'_>> {
    let mut v: Vec<PreviousEntry> = prev.dentries[dir]
        .children
        .iter()
        .map(|&c| {
            let i = prev.dentries[c].inode;
            (prev.dentries[c].name.as_slice(), c, i, &prev.inodes[i])
        })
        .collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

/// A copy of `tree` without the names of the given inodes (files we could
/// not read), and how many names that removed.
fn without_inodes(tree: &ImageTree, drop: &[usize]) -> (ImageTree, u64) {
    let drop: std::collections::HashSet<usize> = drop.iter().copied().collect();
    let mut t = ImageTree::new(tree.inodes[0].clone());
    t.security = tree.security.clone();
    let mut map: HashMap<usize, usize> = HashMap::new();
    let mut stack = vec![(0usize, 0usize)];
    let mut dropped = 0;
    while let Some((old, new)) = stack.pop() {
        for &c in &tree.dentries[old].children {
            let oi = tree.dentries[c].inode;
            if drop.contains(&oi) {
                dropped += 1;
                continue;
            }
            let ni = *map.entry(oi).or_insert_with(|| t.add_inode(tree.inodes[oi].clone()));
            let nd = t.add_dentry(new, tree.dentries[c].name.clone(), ni);
            stack.push((c, nd));
        }
    }
    (t, dropped)
}

/// Bytes the reader hands over at a time. Up to about fourteen batches are
/// alive at once (being read, queued, compressed, written), so this sets
/// most of capture's buffer memory: 256 KiB measured as fast as 512 KiB on
/// /usr/share with every codec, 1.3-1.8 MB lower peak.
const BATCH_BYTES: usize = 256 << 10;

enum Piece {
    Chunk {
        job: Arc<DataJob>,
        data: Vec<u8>,
        first: bool,
        last: Option<Sha1>,
    },
    Failed {
        job: Arc<DataJob>,
        error: String,
    },
    /// No longer the regular file that was listed (see `fsutil::SourceOpen`).
    Swapped {
        job: Arc<DataJob>,
        why: String,
    },
    /// Contents already stored (or sent to be stored earlier): the file
    /// was hashed before its chunks went anywhere (see [`Prehash`]).
    Known {
        job: Arc<DataJob>,
        hash: Sha1,
    },
    /// The file was stored, but was written to while it was read.
    ChangedWhileRead {
        job: Arc<DataJob>,
    },
}

/// Which files the reader hashes before their chunks go to the codec, so
/// that a duplicate is never compressed only to be dropped (wimlib does the
/// same): those of a size that a blob already in the archive, or an earlier
/// file of this capture, has. The first file of a size cannot be a copy of
/// an earlier one: it is sent as it is read and its hash learned at the end.
/// Used only when chunks are compressed: storing a duplicate raw costs no
/// more than hashing it first.
///
/// Hashes are kept by their first 8 bytes: a hint only, since the writer
/// checks the whole hash of a [`Piece::Known`] against what it stored.
struct Prehash {
    /// (size, hash key) of the blobs in the archive before this capture, sorted.
    stored: Vec<(u64, u64)>,
    /// Every size read so far in this capture, with the key of the first
    /// file of that size (none if it could not be read).
    first_of_size: HashMap<u64, Option<u64>>,
    /// Keys of the later files of those sizes, read in full and sent.
    learned: std::collections::HashSet<u64>,
}

/// A file to prehash up to this size is read into memory once and, when its
/// contents are new, sent from there; a larger one is read twice.
const PREHASH_IN_MEMORY: u64 = 1 << 20;

impl Prehash {
    fn new(stored: impl Iterator<Item = (Sha1, u64)>) -> Prehash {
        let mut stored: Vec<(u64, u64)> = stored.map(|(hash, size)| (size, Prehash::key(&hash))).collect();
        stored.sort_unstable();
        Prehash {
            stored,
            first_of_size: HashMap::new(),
            learned: std::collections::HashSet::new(),
        }
    }

    /// Should a file of `size` be hashed before it is sent?
    fn wanted(&self, size: u64) -> bool {
        self.first_of_size.contains_key(&size) || self.stored_of_size(size).next().is_some()
    }

    fn stored_of_size(&self, size: u64) -> impl Iterator<Item = u64> + '_ {
        let from = self.stored.partition_point(|&(s, _)| s < size);
        self.stored[from..]
            .iter()
            .take_while(move |&&(s, _)| s == size)
            .map(|&(_, k)| k)
    }

    fn key(hash: &Sha1) -> u64 {
        u64::from_le_bytes(hash[..8].try_into().expect("a SHA-1 has 20 bytes"))
    }

    /// Are contents of `size` bytes with this hash stored or on their way?
    fn is_known(&self, size: u64, hash: &Sha1) -> bool {
        let key = Prehash::key(hash);
        self.first_of_size.get(&size) == Some(&Some(key))
            || self.learned.contains(&key)
            || self.stored_of_size(size).any(|k| k == key)
    }

    /// The first file of `size` was sent; `hash` is what it held, if it
    /// could be read in full.
    fn first(&mut self, size: u64, hash: Option<&Sha1>) {
        self.first_of_size.insert(size, hash.map(Prehash::key));
    }

    /// A later file of a size already seen was read in full and sent.
    fn learn(&mut self, hash: &Sha1) {
        self.learned.insert(Prehash::key(hash));
    }
}

/// The reader's outgoing batch, sent once it holds about `BATCH_BYTES`.
struct Outbox<'a> {
    batch: Vec<Piece>,
    bytes: usize,
    tx: &'a mpsc::SyncSender<Vec<Piece>>,
}

impl Outbox<'_> {
    /// Queues `piece` (`bytes` of file or symlink data); false once the
    /// receiver is gone.
    fn push(&mut self, piece: Piece, bytes: usize) -> bool {
        self.batch.push(piece);
        self.bytes += bytes;
        if self.bytes < BATCH_BYTES {
            return true;
        }
        self.flush()
    }

    /// Sends what is queued; false once the receiver is gone.
    fn flush(&mut self) -> bool {
        self.bytes = 0;
        self.batch.is_empty() || self.tx.send(std::mem::take(&mut self.batch)).is_ok()
    }
}

/// How reading one file ended.
enum FileEnd {
    /// Read to the end (zeros stand in for bytes a shrinking file lost);
    /// its contents hash to this.
    Read(Sha1),
    /// A read error, already reported as [`Piece::Failed`].
    Failed,
    /// Cancelled, or the receiver is gone: the reader stops.
    Stop,
}

/// How often the writing side looks at the cancel flag while it waits for
/// the reader (which may sit in a read(2) of a hung network or FUSE file).
const CANCEL_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// The reader thread: opens and reads every file the walk finds, in order,
/// and sends batches of about `BATCH_BYTES`. Stops when the walk is over
/// and every file was read, at cancel or abort, or when the receiver is
/// gone.
fn read_jobs(
    found: mpsc::Receiver<Found>,
    chunk: usize,
    cancel: Option<&AtomicBool>,
    abort: &AtomicBool,
    tx: &mpsc::SyncSender<Vec<Piece>>,
    mut prehash: Option<Prehash>,
) {
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed)) || abort.load(Ordering::Relaxed);
    let mut out = Outbox {
        batch: Vec::new(),
        bytes: 0,
        tx,
    };
    while let Some(next) = next_found(&found, &mut out, &cancelled) {
        if cancelled() {
            return;
        }
        let job = match next {
            Found::File(job) => Arc::new(job),
            Found::ReparseData { job, data, hash } => {
                if !send_reparse_data(job, &data, hash, chunk, &mut out) {
                    return;
                }
                continue;
            }
        };
        let mut f = match fsutil::open_source_file(&job.path, job.id) {
            Ok(fsutil::SourceOpen::File(f)) => f,
            Ok(fsutil::SourceOpen::Changed(why)) => {
                if !out.push(Piece::Swapped { job, why }, 0) {
                    return;
                }
                continue;
            }
            Err(e) => {
                if !out.push(
                    Piece::Failed {
                        job,
                        error: e.to_string(),
                    },
                    0,
                ) {
                    return;
                }
                continue;
            }
        };
        let end = match prehash.as_mut() {
            Some(p) if p.wanted(job.size) => prehash_file(&job, &mut f, chunk, p, &cancelled, &mut out),
            Some(p) => {
                let end = stream_file(&job, &mut f, chunk, &cancelled, &mut out);
                p.first(job.size, if let FileEnd::Read(h) = &end { Some(h) } else { None });
                end
            }
            None => stream_file(&job, &mut f, chunk, &cancelled, &mut out),
        };
        if matches!(end, FileEnd::Stop) {
            return;
        }
        // Like tar's "file changed as we read it": what was stored may mix
        // old and new contents, which the user must hear about.
        let changed = matches!(end, FileEnd::Read(_)) && f.metadata().is_ok_and(|m| times_of(&m) != job.listed_times);
        if changed && !out.push(Piece::ChangedWhileRead { job }, 0) {
            return;
        }
    }
    out.flush();
}

/// The walk's next item, or `None` once the walk is over (or the capture
/// is). Ahead of the walk, what was read so far goes on before waiting, and
/// the wait ends at cancel or abort: a walk stuck in a hung mount must not
/// keep the reader (and what it holds) once the capture is over.
fn next_found(found: &mpsc::Receiver<Found>, out: &mut Outbox, cancelled: &dyn Fn() -> bool) -> Option<Found> {
    match found.try_recv() {
        Ok(f) => return Some(f),
        Err(mpsc::TryRecvError::Disconnected) => return None,
        Err(mpsc::TryRecvError::Empty) => {}
    }
    if !out.flush() {
        return None;
    }
    loop {
        match found.recv_timeout(CANCEL_POLL) {
            Ok(f) => return Some(f),
            Err(mpsc::RecvTimeoutError::Timeout) if !cancelled() => {}
            Err(_) => return None,
        }
    }
}

/// Sends a symlink's reparse data like a file's contents, chunk by chunk;
/// false once the receiver is gone.
fn send_reparse_data(job: DataJob, data: &[u8], hash: Sha1, chunk: usize, out: &mut Outbox) -> bool {
    let job = Arc::new(job);
    let pieces = data.len().div_ceil(chunk);
    data.chunks(chunk).enumerate().all(|(k, piece)| {
        let chunk = Piece::Chunk {
            job: Arc::clone(&job),
            data: piece.to_vec(),
            first: k == 0,
            last: (k + 1 == pieces).then_some(hash),
        };
        out.push(chunk, piece.len())
    })
}

/// Reads a file of `size` bytes into chunks, hashing them; `Err` carries
/// the read error, or says the file shrank while it was read: its chunks
/// so far are abandoned, since storing them with zeros for the lost bytes
/// would restore a file that never existed (bytes a growing file gains are
/// left out: what is stored is its state when it was listed, cut there).
/// `Ok(None)`: cancelled, or `each` asked to stop.
fn read_chunks(
    f: &mut fs::File,
    size: u64,
    chunk: usize,
    cancelled: &dyn Fn() -> bool,
    each: &mut dyn FnMut(Vec<u8>, Option<Sha1>) -> bool,
) -> std::result::Result<Option<Sha1>, io::Error> {
    let mut h = Sha1Hasher::new();
    let mut left = size;
    let mut hash = None;
    while left > 0 {
        if cancelled() {
            return Ok(None);
        }
        let n = left.min(chunk as u64) as usize;
        let mut data = vec![0u8; n];
        let got = read_full(f, &mut data)?;
        if got < n {
            let had = size - left + got as u64;
            return Err(io::Error::other(format!(
                "it shrank while it was read (listed at {size} bytes, ended after {had})"
            )));
        }
        h.update(&data);
        left -= n as u64;
        if left == 0 {
            hash = Some(std::mem::take(&mut h).finalize().into());
        }
        if !each(data, hash) {
            return Ok(None);
        }
    }
    Ok(Some(hash.unwrap_or_else(|| h.finalize().into())))
}

/// Sends a file's chunks as they are read.
fn stream_file(
    job: &Arc<DataJob>,
    f: &mut fs::File,
    chunk: usize,
    cancelled: &dyn Fn() -> bool,
    out: &mut Outbox,
) -> FileEnd {
    let mut first = true;
    let read = read_chunks(f, job.size, chunk, cancelled, &mut |data, last| {
        let n = data.len();
        let piece = Piece::Chunk {
            job: Arc::clone(job),
            data,
            first: std::mem::take(&mut first),
            last,
        };
        out.push(piece, n)
    });
    finish_file(job, read, out)
}

/// Reports how a file's read ended: a read error (or a file that shrank) as
/// [`Piece::Failed`].
fn finish_file(job: &Arc<DataJob>, read: std::result::Result<Option<Sha1>, io::Error>, out: &mut Outbox) -> FileEnd {
    match read {
        Err(e) => {
            if out.push(
                Piece::Failed {
                    job: Arc::clone(job),
                    error: e.to_string(),
                },
                0,
            ) {
                FileEnd::Failed
            } else {
                FileEnd::Stop
            }
        }
        Ok(None) => FileEnd::Stop,
        Ok(Some(hash)) => FileEnd::Read(hash),
    }
}

/// Hashes a file before sending it: contents already known become a
/// [`Piece::Known`]; new ones are sent (from memory when small, else read
/// again, and hashed again: what is stored is what the second read saw).
fn prehash_file(
    job: &Arc<DataJob>,
    f: &mut fs::File,
    chunk: usize,
    prehash: &mut Prehash,
    cancelled: &dyn Fn() -> bool,
    out: &mut Outbox,
) -> FileEnd {
    let size = job.size;
    if size <= PREHASH_IN_MEMORY {
        let mut chunks: Vec<(Vec<u8>, Option<Sha1>)> = Vec::new();
        let read = read_chunks(f, size, chunk, cancelled, &mut |data, last| {
            chunks.push((data, last));
            true
        });
        let hash = match read {
            Ok(Some(hash)) => hash,
            other => return finish_file(job, other, out),
        };
        if prehash.is_known(size, &hash) {
            let known = Piece::Known {
                job: Arc::clone(job),
                hash,
            };
            if !out.push(known, 0) {
                return FileEnd::Stop;
            }
        } else {
            prehash.learn(&hash);
            for (k, (data, last)) in chunks.into_iter().enumerate() {
                let n = data.len();
                let piece = Piece::Chunk {
                    job: Arc::clone(job),
                    data,
                    first: k == 0,
                    last,
                };
                if !out.push(piece, n) {
                    return FileEnd::Stop;
                }
            }
        }
        return finish_file(job, Ok(Some(hash)), out);
    }
    // Large: hash it first (its chunks are dropped), then decide.
    match read_chunks(f, size, chunk, cancelled, &mut |_, _| true) {
        Ok(Some(hash)) if prehash.is_known(size, &hash) => {
            let known = Piece::Known {
                job: Arc::clone(job),
                hash,
            };
            return if out.push(known, 0) {
                FileEnd::Read(hash)
            } else {
                FileEnd::Stop
            };
        }
        Ok(Some(_)) => {}
        other => return finish_file(job, other, out),
    }
    if let Err(e) = f.seek(io::SeekFrom::Start(0)) {
        return finish_file(job, Err(e), out);
    }
    let end = stream_file(job, f, chunk, cancelled, out);
    if let FileEnd::Read(hash) = end {
        prehash.learn(&hash);
    }
    end
}

/// Bytes of chunks handed to the compression threads and not yet written:
/// eight reader batches (at least two chunks per thread are let through).
/// With two, the reader, the writer and the compression threads kept
/// waiting on each other where files are small; eight took 2-3% off an
/// XPRESS capture of /usr/share on 2 CPUs, for 0.5 MB more peak memory.
const IN_FLIGHT_BYTES: usize = 8 * BATCH_BYTES;

/// One step of writing the image's data, in archive order.
enum Item {
    /// A chunk of file `job` (or of symlink data); its compressed form is
    /// result `seq`.
    Chunk {
        job: Arc<DataJob>,
        first: bool,
        last: Option<Sha1>,
        seq: u64,
    },
    Failed(Arc<DataJob>, String),
    Swapped(Arc<DataJob>, String),
    /// File `job` holds contents already stored under this hash.
    Known(Arc<DataJob>, Sha1),
    ChangedWhileRead(Arc<DataJob>),
}

/// Chunks a compression thread takes at a time: fewer wake-ups than one
/// by one, still fine-grained enough to keep every thread busy.
const CHUNKS_PER_TASK: usize = 4;

/// What a compression thread hands back: the chunks of one task, the
/// first being result `seq`.
struct Compressed {
    seq: u64,
    jobs: Vec<ChunkJob>,
    /// The codec failed (a plugin that crashed, hit a limit or panicked):
    /// the write ends rather than store its chunks raw.
    failure: Option<String>,
}

/// A compression thread: takes tasks until the sender is gone (or the write
/// was abandoned), with the writer's compressor of `slot` (its own, for its
/// whole life).
fn compress_worker(
    comps: &crate::codecs::Compressors,
    slot: usize,
    tasks: &std::sync::Mutex<mpsc::Receiver<(u64, Vec<ChunkJob>)>>,
    results: mpsc::Sender<Compressed>,
    abandoned: &AtomicBool,
) {
    loop {
        let next = tasks.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok((seq, mut jobs)) = next else { return };
        if abandoned.load(Ordering::Relaxed) {
            return;
        }
        let failure = comps.with_slot(slot, |c| {
            for job in jobs.iter_mut() {
                let run = std::panic::AssertUnwindSafe(|| job.compress_with(c.as_mut()));
                if std::panic::catch_unwind(run).is_err() {
                    return Some("the codec panicked while compressing a chunk".to_string());
                }
            }
            c.take_failure()
        });
        if results.send(Compressed { seq, jobs, failure }).is_err() {
            return;
        }
    }
}

/// The compression threads are gone while chunks still wait for them.
fn compression_stopped() -> WimError {
    WimError::Io(io::Error::other(
        "the compression threads ended early (please report); the archive is unchanged",
    ))
}

/// What the data phase did, for the report and the tree.
#[derive(Default)]
struct Stored {
    /// The walk's result, once it was handed over during the data phase.
    walked: Option<Result<Walked>>,
    /// (inode, contents) of the files stored, or found stored, before the
    /// walk's tree was handed over; those after go into the tree.
    hashes: Vec<(u32, Sha1)>,
    /// Inodes whose files could not be read.
    failed: Vec<usize>,
    /// Their listed sizes.
    failed_bytes: u64,
    warnings: Vec<String>,
    bytes_read: u64,
    bytes_stored: u64,
    new_blobs: u64,
}

/// The writing side of [`read_and_store`]: blobs in progress and counts.
struct Store<'a, 'p> {
    writer: &'a mut WimWriter,
    counters: &'a WalkCounters,
    walked: &'a mpsc::Receiver<Result<Walked>>,
    progress: &'a mut ProgressFn<'p>,
    pending: Option<(Arc<DataJob>, crate::writer::PendingBlob)>,
    files_done: u64,
    bytes_done: u64,
    /// When progress was last reported.
    reported: std::time::Instant,
    out: Stored,
}

impl Store<'_, '_> {
    /// Reports progress: while the walk goes on, as scanning, with the
    /// totals found so far.
    fn report_progress(&mut self) {
        self.reported = std::time::Instant::now();
        let walked = self.counters.done.load(Ordering::Acquire);
        (self.progress)(&CaptureProgress {
            phase: if walked {
                CapturePhase::Writing
            } else {
                CapturePhase::Scanning
            },
            files_done: self.files_done,
            files_total: self.counters.files.load(Ordering::Relaxed),
            bytes_done: self.bytes_done,
            bytes_total: self.counters.bytes.load(Ordering::Relaxed),
        });
    }

    /// Reports progress if nothing was reported for `CANCEL_POLL` (a run
    /// of symlinks or of unchanged files completes no file).
    fn report_if_quiet(&mut self) {
        if self.reported.elapsed() >= CANCEL_POLL {
            self.report_progress();
        }
    }

    /// File `inode` is stored with contents `hash`.
    fn file_done(&mut self, inode: usize, hash: Sha1) {
        if self.out.walked.is_none() {
            if let Ok(mut w) = self.walked.try_recv() {
                if let Ok(w) = &mut w {
                    for (inode, hash) in std::mem::take(&mut self.out.hashes) {
                        w.tree.inodes[inode as usize].data_hash = hash;
                    }
                }
                self.out.walked = Some(w);
            }
        }
        match &mut self.out.walked {
            Some(Ok(w)) => w.tree.inodes[inode].data_hash = hash,
            // A tree of 2^32 inodes would not fit in memory.
            _ => self.out.hashes.push((inode as u32, hash)),
        }
        self.files_done += 1;
        self.report_progress();
    }

    /// File `job` could not be read: its inode leaves the tree. It counts
    /// as done, so that progress still reaches the totals.
    fn file_dropped(&mut self, job: &DataJob) {
        if let Some(inode) = job.inode {
            self.out.failed.push(inode);
            self.out.failed_bytes += job.size;
        }
        self.files_done += 1;
        self.report_progress();
    }

    /// Writes one item; a chunk's result is taken from `ready`.
    fn write(&mut self, item: Item, ready: &mut HashMap<u64, ChunkJob>) -> Result<()> {
        match item {
            Item::Chunk { job, first, last, seq } => {
                let cj = ready.remove(&seq).expect("written only once its result is in");
                if first {
                    // The reader sends a file's (or symlink's) pieces one
                    // after the other, never inside another's.
                    if self.pending.is_some() {
                        return Err(WimError::Io(io::Error::other(format!(
                            "{}: contents began inside another file's (a bug: please report); the archive is unchanged",
                            job.path.display()
                        ))));
                    }
                    let blob = self.writer.begin_blob(job.size)?;
                    self.pending = Some((Arc::clone(&job), blob));
                }
                let (_, b) = self.pending.as_mut().expect("a blob is open");
                self.writer.blob_chunk(b, &cj)?;
                // Symlink data is stored, but is no file's contents.
                let Some(inode) = job.inode else {
                    if let Some(hash) = last {
                        let (_, b) = self.pending.take().expect("a blob is open");
                        self.writer.finish_blob(b, hash)?;
                    }
                    return Ok(());
                };
                self.out.bytes_read += cj.raw.len() as u64;
                self.bytes_done += cj.raw.len() as u64;
                if let Some(hash) = last {
                    let (_, b) = self.pending.take().expect("a blob is open");
                    let stored = b.stored_bytes();
                    if self.writer.finish_blob(b, hash)? {
                        self.out.new_blobs += 1;
                        self.out.bytes_stored += stored;
                    }
                    self.file_done(inode, hash);
                }
            }
            Item::Known(job, hash) => {
                // Its first copy was written before it (items are in order);
                // the reader matched only a prefix of the hash.
                if !self.writer.has_blob(&hash) {
                    return Err(WimError::Io(io::Error::other(format!(
                        "{}: taken for a copy of contents that are not stored (a collision of 64-bit hash prefixes, or a bug: please report); the archive is unchanged",
                        job.path.display()
                    ))));
                }
                self.out.bytes_read += job.size;
                self.bytes_done += job.size;
                self.file_done(job.inode.expect("only files are prehashed"), hash);
            }
            Item::Failed(job, error) => {
                // A read error abandons the partly written blob and drops the file.
                if let Some((j, b)) = self.pending.take() {
                    if Arc::ptr_eq(&j, &job) {
                        self.writer.abandon_blob(b)?;
                    } else {
                        self.pending = Some((j, b));
                    }
                }
                self.out
                    .warnings
                    .push(format!("{}: cannot read: {error}; skipped", job.path.display()));
                self.file_dropped(&job);
            }
            Item::Swapped(job, why) => {
                self.out.warnings.push(format!(
                    "{}: {why} since it was listed; skipped (not read)",
                    job.path.display()
                ));
                self.file_dropped(&job);
            }
            Item::ChangedWhileRead(job) => {
                self.out.warnings.push(format!(
                    "{}: changed while it was read; stored as read, which may mix old and new contents (back it \
                     up again once it is quiet, or back up a filesystem snapshot)",
                    job.path.display()
                ));
            }
        }
        Ok(())
    }
}

/// Reads every file the walk finds (`found`) on a helper thread and stores
/// the contents.
fn read_and_store(
    writer: &mut WimWriter,
    found: mpsc::Receiver<Found>,
    walked: &mpsc::Receiver<Result<Walked>>,
    opts: &CaptureOptions,
    counters: &WalkCounters,
    abort: &Arc<AtomicBool>,
    progress: &mut ProgressFn,
) -> Result<Stored> {
    let chunk = if writer.chunk_size() == 0 {
        32768
    } else {
        writer.chunk_size() as usize
    };
    // Room for a few batches (about 1 MiB): the reader keeps going while the
    // writer is busy with a run of small files. A batch holds at least one
    // chunk, so large chunks get fewer.
    let queued = (4 * BATCH_BYTES / chunk).clamp(1, 4);
    let (tx, rx) = mpsc::sync_channel::<Vec<Piece>>(queued);
    let comps = writer.compressors();
    let prehash = comps.is_some().then(|| Prehash::new(writer.blob_hashes_and_sizes()));
    // Not a scoped thread: a cancelled backup must end (and unlock its
    // archive) even while the reader is stuck in the kernel; it exits on
    // its own at its next cancel check or send.
    let reader = {
        let cancel = opts.cancel.clone();
        let abort = Arc::clone(abort);
        std::thread::Builder::new()
            .name("capture-reader".into())
            .spawn(move || read_jobs(found, chunk, cancel.as_deref(), &abort, &tx, prehash))
            .map_err(|e| WimError::Io(io::Error::new(e.kind(), format!("cannot start the reader thread: {e}"))))?
    };
    let workers = if comps.is_some() {
        rayon::current_num_threads().max(1)
    } else {
        0
    };
    // Compression is a stage of its own: `workers` threads take chunks as
    // they come and the results are written in order, so no thread waits
    // for the slowest chunk of a batch (measured: that barrier cost 3% of
    // an LZX capture with 1 MiB batches and 6% with 512 KiB ones).
    let in_flight_max = (IN_FLIGHT_BYTES / chunk).max(2 * workers + 2);
    let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<ChunkJob>)>(in_flight_max.div_ceil(CHUNKS_PER_TASK));
    let job_rx = std::sync::Mutex::new(job_rx);
    let (res_tx, res_rx) = mpsc::channel::<Compressed>();
    let mut store = Store {
        writer,
        counters,
        walked,
        progress,
        pending: None,
        files_done: 0,
        bytes_done: 0,
        reported: std::time::Instant::now(),
        out: Stored::default(),
    };
    // Set when the write stops early: the compression threads then drop
    // the chunks still queued for them instead of compressing them first.
    let abandoned = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<()> {
        let job_tx = job_tx;
        if let Some(comps) = &comps {
            for slot in 0..workers {
                let (job_rx, res_tx, abandoned) = (&job_rx, res_tx.clone(), &abandoned);
                s.spawn(move || compress_worker(comps, slot, job_rx, res_tx, abandoned));
            }
        }
        drop(res_tx);
        let written = (|| -> Result<()> {
            // Items in archive order; a chunk item waits for its result.
            let mut order: std::collections::VecDeque<Item> = std::collections::VecDeque::new();
            let mut ready: HashMap<u64, ChunkJob> = HashMap::new();
            let (mut next_seq, mut in_flight, mut reader_done) = (0u64, 0usize, false);
            let take = |r: Compressed, ready: &mut HashMap<u64, ChunkJob>, in_flight: &mut usize| -> Result<()> {
                *in_flight -= r.jobs.len();
                if let Some(f) = r.failure {
                    opts.check_cancel()?;
                    return Err(WimError::CodecFailed(f));
                }
                for (i, job) in r.jobs.into_iter().enumerate() {
                    ready.insert(r.seq + i as u64, job);
                }
                Ok(())
            };
            loop {
                while let Ok(r) = res_rx.try_recv() {
                    take(r, &mut ready, &mut in_flight)?;
                }
                while let Some(item) = order.pop_front() {
                    if let Item::Chunk { seq, .. } = item {
                        if !ready.contains_key(&seq) {
                            order.push_front(item);
                            break;
                        }
                    }
                    store.write(item, &mut ready)?;
                }
                if reader_done && order.is_empty() {
                    break;
                }
                if reader_done || in_flight >= in_flight_max {
                    match res_rx.recv_timeout(CANCEL_POLL) {
                        Ok(r) => take(r, &mut ready, &mut in_flight)?,
                        Err(mpsc::RecvTimeoutError::Timeout) => opts.check_cancel()?,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return Err(compression_stopped()),
                    }
                    continue;
                }
                // Returning early drops `rx`, which stops the reader at its next send.
                let batch = match rx.recv_timeout(CANCEL_POLL) {
                    Ok(b) => b,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        opts.check_cancel()?;
                        // The walk may be all there is to report (files
                        // that are unchanged are not read).
                        store.report_if_quiet();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        reader_done = true;
                        continue;
                    }
                };
                opts.check_cancel()?;
                store.report_if_quiet();
                // Chunks go out in tasks of consecutive sequence numbers.
                let mut task: Vec<ChunkJob> = Vec::new();
                let mut task_seq = next_seq;
                let send = |task: &mut Vec<ChunkJob>, seq: u64| -> Result<()> {
                    if task.is_empty() {
                        return Ok(());
                    }
                    job_tx
                        .send((seq, std::mem::take(task)))
                        .map_err(|_| compression_stopped())
                };
                for p in batch {
                    order.push_back(match p {
                        Piece::Chunk { job, data, first, last } => {
                            let cj = ChunkJob {
                                raw: data,
                                compressed: Vec::new(),
                                use_compressed: false,
                            };
                            let seq = next_seq;
                            next_seq += 1;
                            if comps.is_some() {
                                in_flight += 1;
                                task.push(cj);
                                if task.len() == CHUNKS_PER_TASK {
                                    send(&mut task, task_seq)?;
                                    task_seq = next_seq;
                                }
                            } else {
                                ready.insert(seq, cj);
                            }
                            Item::Chunk { job, first, last, seq }
                        }
                        Piece::Failed { job, error } => Item::Failed(job, error),
                        Piece::Swapped { job, why } => Item::Swapped(job, why),
                        Piece::Known { job, hash } => Item::Known(job, hash),
                        Piece::ChangedWhileRead { job } => Item::ChangedWhileRead(job),
                    });
                }
                send(&mut task, task_seq)?;
            }
            Ok(())
        })();
        if written.is_err() {
            abandoned.store(true, Ordering::Relaxed);
        }
        written
    })?;
    // The last word on the data: the walk is over by now.
    store.report_progress();
    let stored = std::mem::take(&mut store.out);
    drop(store);
    // The reader hung up: it finished, was cancelled, or panicked.
    opts.check_cancel()?;
    if reader.join().is_err() {
        return Err(WimError::Io(io::Error::other(
            "the file reader thread crashed (please report); the archive is unchanged",
        )));
    }
    Ok(stored)
}

fn read_full(f: &mut fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn default_name_is_rfc3339_and_unique() {
        let name = default_image_name(&|n| !n.ends_with("-3"));
        assert!(name.starts_with("wimguard-20") && name.ends_with("Z-3"), "{name}");
        assert_eq!(name.len(), "wimguard-2024-01-02T03:04:05Z-3".len(), "{name}");
    }

    #[test]
    fn names_wimlib_cannot_address_are_refused() {
        for bad in ["", "12", "ALL", "*", "a\u{1}b"] {
            assert!(check_image_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_image_name("nightly 3").is_ok());
    }
}

#[cfg(test)]
mod read_tests {
    use super::*;

    /// A file cut short between listing and reading is an error (the file
    /// is skipped with a warning), never its old size with zeros at the
    /// end; one that grew is read up to its listed size.
    #[test]
    fn a_file_whose_times_moved_while_read_is_reported_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        fs::write(&path, vec![7u8; 50_000]).unwrap();
        let m = fs::metadata(&path).unwrap();
        let job = |listed_times| DataJob {
            inode: Some(0),
            path: path.clone(),
            size: 50_000,
            id: (m.dev(), m.ino()),
            listed_times,
        };
        // Listed with other times than it has once read: as if written to
        // meanwhile. Listed with its own: quiet.
        for (listed, changed) in [([(1, 0), (1, 0)], true), (times_of(&m), false)] {
            let (found_tx, found_rx) = mpsc::channel();
            found_tx.send(Found::File(job(listed))).unwrap();
            drop(found_tx);
            let (tx, rx) = mpsc::sync_channel(64);
            read_jobs(found_rx, 32768, None, &AtomicBool::new(false), &tx, None);
            drop(tx);
            let pieces: Vec<Piece> = rx.iter().flatten().collect();
            let chunks = pieces.iter().filter(|p| matches!(p, Piece::Chunk { .. })).count();
            let notes = pieces
                .iter()
                .filter(|p| matches!(p, Piece::ChangedWhileRead { .. }))
                .count();
            assert_eq!((chunks, notes), (2, usize::from(changed)), "listed {listed:?}");
        }
    }

    #[test]
    fn a_file_that_shrank_while_read_is_an_error_not_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&path, &bytes).unwrap();
        let mut f = fs::File::open(&path).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(40_000)
            .unwrap();
        let mut sent = 0;
        let r = read_chunks(&mut f, 100_000, 32768, &|| false, &mut |data, _| {
            sent += data.len();
            true
        });
        let e = r.expect_err("a short read must fail");
        assert!(
            e.to_string()
                .contains("shrank while it was read (listed at 100000 bytes, ended after 40000)"),
            "{e}"
        );
        assert_eq!(sent, 32768, "only whole chunks it really had went out");

        fs::write(&path, &bytes).unwrap();
        let mut f = fs::File::open(&path).unwrap();
        let mut got = Vec::new();
        let hash = read_chunks(&mut f, 60_000, 32768, &|| false, &mut |data, _| {
            got.extend(data);
            true
        })
        .unwrap()
        .unwrap();
        assert_eq!(got, bytes[..60_000]);
        assert_eq!(hash, <[u8; 20]>::from(Sha1Hasher::digest(&bytes[..60_000])));
    }
}
