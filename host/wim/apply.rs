//! Apply: restores an image (or chosen paths of it) into a directory with
//! contents, hard links, symlinks, special files, ownership, modes, xattrs
//! and times, checking every blob's SHA-1 on the way.
//!
//! Safety: every name is checked (no `/`, NUL, `.` or `..`), directories are
//! created first, files are opened with O_NOFOLLOW after removing whatever
//! was in the way, and symlinks are created last, so extraction never walks
//! through a link the archive itself planted.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use crate::archive::{hex, WimArchive};
use crate::blob_table::{Sha1, ZERO_HASH};
use crate::codecs::is_run_of;
use crate::fsutil;
use crate::header::HDR_FLAG_RP_FIX;
use crate::metadata::{ImageTree, Inode, FILE_ATTRIBUTE_SPARSE_FILE};
use crate::reparse::{decode_link, REPARSE_DATA_MAX};
use crate::{time, Result, WimError};

/// What to restore and how.
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// Paths inside the image to restore (with their subtrees); empty = all.
    pub paths: Vec<String>,
    /// Restore uid/gid (needs root). Defaults to "when running as root".
    pub restore_owner: bool,
    /// What to do with files that already exist in the target.
    pub overwrite: Overwrite,
    /// Only report what would be written (`ApplyReport::planned`).
    pub dry_run: bool,
    /// Set to stop early (between batches of files); the restore then fails
    /// with `WimError::Cancelled`, leaving what was already written.
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    /// Restore files whose stored data is damaged (a chunk that does not
    /// decode, a SHA-1 that does not match) as well as it decodes, with a
    /// warning naming them, instead of stopping at the first one: wimlib's
    /// `apply --recover-data`.
    pub recover_data: bool,
}

/// Policy for paths that already exist in the target (directories merge).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace them (what `wimlib-imagex apply` does).
    #[default]
    Replace,
    /// Refuse the whole restore, writing nothing, when any exists.
    Fail,
    /// Keep them and restore everything else.
    Skip,
}

#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    pub specials: u64,
    pub hard_links: u64,
    pub bytes: u64,
    pub warnings: Vec<String>,
    /// Dry run: the paths (relative to the target) that would be written.
    pub planned: Vec<String>,
    /// Existing paths kept under `Overwrite::Skip`.
    pub skipped: Vec<String>,
    /// Entries of the image left out because they cannot be restored
    /// safely (each also has a warning, the first thousand by name).
    pub unsafe_skipped: u64,
}

/// Small blobs are decoded many at a time in parallel; larger ones stream.
/// A small blob is held whole (with its compressed bytes) while written,
/// so these bound apply's data memory: 4 MiB each measured 20 MiB peak
/// RSS restoring /usr/share/doc (LZX) against wimlib's 9 MiB.
const SMALL_BLOB: u64 = 1 << 20;
const SMALL_BATCH_BYTES: u64 = 2 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Dir,
    File,
    Symlink,
    Special,
}

fn kind_of(ino: &Inode) -> Kind {
    if ino.is_reparse() {
        return Kind::Symlink;
    }
    if ino.is_dir() {
        return Kind::Dir;
    }
    match ino.tagged.unix_data() {
        Some(u) if u.mode & libc::S_IFMT != libc::S_IFREG && u.mode & libc::S_IFMT != 0 => Kind::Special,
        _ => Kind::File,
    }
}

/// Longest file name Linux file systems take (NAME_MAX), in bytes.
const NAME_MAX_BYTES: usize = 255;
/// Longest path one system call takes (PATH_MAX less the NUL), in bytes.
const PATH_MAX_BYTES: usize = crate::metadata::PATH_MAX_BYTES;
/// Warnings a report keeps by name; the counts stay exact.
const WARNINGS_KEPT: usize = 1000;

/// Where each dentry of the image goes: rebuilt on demand from the tree,
/// since the names are already in memory once.
struct Targets<'a> {
    tree: &'a ImageTree,
    dest: PathBuf,
}

impl Targets<'_> {
    /// The target path of dentry `d` (its names were checked when selected).
    fn path(&self, mut d: usize) -> PathBuf {
        let mut names = Vec::new();
        while d != 0 {
            names.push(String::from_utf16_lossy(&self.tree.dentries[d].name));
            d = self.tree.dentries[d].parent;
        }
        let mut p = self.dest.clone();
        for n in names.iter().rev() {
            p.push(n);
        }
        p
    }
}

fn unsafe_name(name: &str) -> bool {
    name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0')
}

/// Restores image `index` of `arch` into `dest`.
/// `progress(bytes done, bytes total)` is called as file contents are written.
pub fn apply(
    arch: &WimArchive,
    index: u32,
    dest: &Path,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ApplyReport> {
    let tree = arch.load_image(index)?;
    let mut report = ApplyReport::default();

    // Which dentries to restore: the chosen subtrees and their ancestors.
    let mut selected: Vec<usize> = Vec::new();
    if opts.paths.is_empty() {
        selected = tree.walk(0);
    } else {
        let mut seen = HashSet::new();
        for p in &opts.paths {
            let d = tree
                .lookup(p)
                .ok_or_else(|| WimError::NotFound(format!("path {p:?} does not exist in image {index}")))?;
            let mut anc = Vec::new();
            let mut a = d;
            while a != 0 {
                a = tree.dentries[a].parent;
                anc.push(a);
            }
            for x in anc.into_iter().rev().chain(tree.walk(d)) {
                if seen.insert(x) {
                    selected.push(x);
                }
            }
        }
    }

    // A target that was there before keeps its own owner, mode and times
    // (the image root's are for a directory this restore makes).
    let dest_existed = fs::symlink_metadata(dest).is_ok();
    if !opts.dry_run {
        fs::create_dir_all(dest).map_err(|e| io_err(e, dest, "cannot create"))?;
    }
    let dest_abs = fs::canonicalize(dest).unwrap_or_else(|_| dest.to_path_buf());
    let targets = Targets {
        tree: &tree,
        dest: dest_abs.clone(),
    };

    // Entries that cannot be restored safely are left out, each with a
    // warning (wimlib warns too): those the parser dropped, and here names
    // this system cannot hold. A left-out directory takes its subtree along.
    let chosen = |path: &str| {
        opts.paths.is_empty()
            || opts.paths.iter().any(|p| {
                let p = format!("/{}", p.trim_matches('/'));
                p == "/" || path == p || path.starts_with(&format!("{p}/"))
            })
    };
    for sk in tree.skipped.iter().filter(|sk| chosen(&sk.path)) {
        report.warnings.push(format!("skipped {}: {}", sk.path, sk.reason));
    }
    report.unsafe_skipped = if opts.paths.is_empty() {
        tree.skipped_total
    } else {
        report.warnings.len() as u64
    };
    let dest_len = dest_abs.as_os_str().len();
    // UTF-8 length of each kept dentry's path below the target; a dentry
    // whose parent is not in it was left out with its parent.
    let mut rel_len: HashMap<usize, usize> = HashMap::with_capacity(selected.len());
    rel_len.insert(0, 0);
    selected.retain(|&d| {
        if d == 0 {
            return true;
        }
        let parent = tree.dentries[d].parent;
        if !rel_len.contains_key(&parent) {
            return false;
        }
        let why = match String::from_utf16(&tree.dentries[d].name) {
            Err(_) => Some("name is not valid UTF-16".to_string()),
            Ok(n) if unsafe_name(&n) => Some("unsafe name (`/`, NUL, `.`, `..` or empty)".into()),
            Ok(n) if n.len() > NAME_MAX_BYTES => Some(format!("name longer than {NAME_MAX_BYTES} bytes")),
            Ok(n) if dest_len + rel_len[&parent] + 1 + n.len() > PATH_MAX_BYTES => Some(format!(
                "path below {} longer than {PATH_MAX_BYTES} bytes",
                dest_abs.display()
            )),
            Ok(n) => {
                rel_len.insert(d, rel_len[&parent] + 1 + n.len());
                None
            }
        };
        match why {
            Some(why) => {
                report.unsafe_skipped += 1;
                if report.warnings.len() < WARNINGS_KEPT {
                    report.warnings.push(format!("skipped {}: {why}", tree.path_of(d)));
                }
                false
            }
            None => true,
        }
    });
    drop(rel_len);

    // Existing paths in the way: a non-directory where the image has a
    // directory, or anything where it has a non-directory. Refuse, skip or
    // replace them, per policy (existing directories merge).
    let mut existing: Vec<usize> = Vec::new();
    // Directories where the image has a non-directory: never replaced.
    let mut dirs_in_way: Vec<usize> = Vec::new();
    // Nothing can be in the way below a directory that is not there, nor
    // in an empty destination: a restore into a new directory looks at no
    // path at all (parents come before their children in `selected`).
    let mut absent: HashSet<usize> = HashSet::new();
    let dest_empty = match fs::read_dir(&dest_abs) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    };
    if dest_empty {
        absent.insert(0);
    }
    for &d in &selected {
        if d == 0 {
            continue;
        }
        let is_dir = kind_of(tree.inode_of(d)) == Kind::Dir;
        if absent.contains(&tree.dentries[d].parent) {
            if is_dir {
                absent.insert(d);
            }
            continue;
        }
        let in_way = match fs::symlink_metadata(targets.path(d)) {
            Ok(m) => {
                if !is_dir && m.is_dir() {
                    dirs_in_way.push(d);
                }
                !is_dir || !m.is_dir()
            }
            Err(_) => {
                if is_dir {
                    absent.insert(d);
                }
                false
            }
        };
        if in_way {
            existing.push(d);
        }
    }
    // Only these are looked at again before their name is created: the
    // others were free when scanned, and a name that appears since makes
    // the creation fail with EEXIST, handled the same way (one `statx` less
    // per restored file).
    let in_way: HashSet<usize> = existing.iter().copied().collect();
    let rel = |d: usize| tree.path_of(d);
    // A dry run says so too: it predicts the restore, refusal included.
    if opts.overwrite == Overwrite::Fail && !existing.is_empty() {
        let names: Vec<String> = existing.iter().take(5).map(|&d| rel(d)).collect();
        return Err(WimError::Locked(format!(
            "{} path(s) already exist in {} (e.g. {}); restore with overwrite (--overwrite) or skip (--skip-existing)",
            existing.len(),
            dest_abs.display(),
            names.join(", ")
        )));
    }
    if opts.overwrite == Overwrite::Replace && !dirs_in_way.is_empty() {
        // Known now, so refused before anything is written (the dry run
        // says so too): replacing would delete a directory tree.
        let more = match dirs_in_way.len() {
            1 => String::new(),
            n => format!(" (and {} more such directories)", n - 1),
        };
        return Err(WimError::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists as a directory where the snapshot has a file{more}; refusing to replace a directory \
                 (move it away, restore elsewhere, or keep it with --skip-existing)",
                targets.path(dirs_in_way[0]).display()
            ),
        )));
    }
    if opts.overwrite == Overwrite::Skip {
        // A kept non-directory where the image has a directory keeps out
        // the directory's whole subtree: nothing may be created below it.
        let mut skip: HashSet<usize> = existing.iter().copied().collect();
        report.skipped = existing.iter().map(|&d| rel(d)).collect();
        selected.retain(|&d| {
            if skip.contains(&d) || (d != 0 && skip.contains(&tree.dentries[d].parent)) {
                skip.insert(d);
                return false;
            }
            true
        });
    }
    if opts.dry_run {
        report.planned = selected.iter().map(|&d| rel(d)).collect();
        for &d in &selected {
            match kind_of(tree.inode_of(d)) {
                Kind::Dir => report.dirs += 1,
                Kind::File => {
                    report.files += 1;
                    report.bytes += arch.blob_size(&tree.inode_of(d).data_hash).unwrap_or(0);
                }
                Kind::Symlink => report.symlinks += 1,
                Kind::Special => report.specials += 1,
            }
        }
        return Ok(report);
    }

    // 1. Directories, parents first.
    for &d in &selected {
        let ino = tree.inode_of(d);
        if kind_of(ino) != Kind::Dir {
            continue;
        }
        let p = &targets.path(d);
        if d != 0 {
            // Known absent at the scan: create it without looking again (a
            // name that appeared since goes the long way below).
            if absent.contains(&d) {
                match fs::create_dir(p) {
                    Ok(()) => {
                        report.dirs += 1;
                        continue;
                    }
                    Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                        return Err(io_err(e, p, "cannot create directory"))
                    }
                    Err(_) => {}
                }
            }
            match fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(p).map_err(|e| io_err(e, p, "cannot replace"))?;
                    fs::create_dir(p).map_err(|e| io_err(e, p, "cannot create directory"))?;
                }
                Err(_) => fs::create_dir(p).map_err(|e| io_err(e, p, "cannot create directory"))?,
            }
            report.dirs += 1;
        }
    }

    // 2. Regular files: one primary path per inode, contents grouped by blob.
    // Dentries, not paths, are kept: a path per entry would cost memory
    // quadratic in depth; each is rebuilt from the tree when needed.
    let mut primary: HashMap<usize, usize> = HashMap::new();
    let mut by_blob: HashMap<Sha1, Vec<(usize, bool)>> = HashMap::new();
    // Every name created here and the blob it waits for (none for an empty
    // file), so that after a failure (a damaged blob, a codec error,
    // cancellation) the names left empty or half-written are removed rather
    // than left looking restored.
    let mut created: Vec<(usize, Option<Sha1>)> = Vec::new();
    // Hard links (name, first name of the file), made after the contents.
    let mut links: Vec<(usize, usize)> = Vec::new();
    // Files restored under more than one name get their metadata by path
    // after the links are made, as before: with fs.protected_hardlinks, a
    // restorer without CAP_FOWNER may not link a file whose owner and mode
    // were already set to someone else's.
    let mut names_of: HashMap<usize, u32> = HashMap::new();
    for &d in &selected {
        let inode = tree.dentries[d].inode;
        if kind_of(&tree.inodes[inode]) == Kind::File {
            *names_of.entry(inode).or_default() += 1;
        }
    }
    let linked: HashSet<usize> = names_of.into_iter().filter(|&(_, n)| n > 1).map(|(i, _)| i).collect();
    let meta = FileMeta {
        tree: &tree,
        restore_owner: opts.restore_owner,
        linked: &linked,
        warnings: std::sync::Mutex::default(),
    };
    let mut create_files = || -> Result<()> {
        for &d in &selected {
            let inode = tree.dentries[d].inode;
            let ino = &tree.inodes[inode];
            if kind_of(ino) != Kind::File {
                continue;
            }
            let p = targets.path(d);
            let blob = (ino.data_hash != ZERO_HASH).then_some(ino.data_hash);
            if in_way.contains(&d) {
                remove_non_dir(&p)?;
            }
            created.push((d, blob));
            if let Some(&first) = primary.get(&inode) {
                // Linked once the first name has its contents.
                links.push((d, first));
                report.hard_links += 1;
                continue;
            }
            primary.insert(inode, d);
            report.files += 1;
            match blob {
                // Created when its contents are written: one open per file.
                Some(h) => {
                    let sparse = ino.attributes & FILE_ATTRIBUTE_SPARSE_FILE != 0;
                    by_blob.entry(h).or_default().push((d, sparse));
                }
                None => meta.set(&create_for_contents(&p)?, &p, d)?,
            }
        }
        Ok(())
    };
    // Blobs whose files were all written completely.
    let written: std::sync::Mutex<HashSet<Sha1>> = std::sync::Mutex::default();
    let mut result = create_files();
    if result.is_ok() {
        result = write_blobs(arch, &targets, &by_blob, &written, &meta, opts, &mut report, progress);
    }
    if result.is_ok() {
        result = links.iter().try_for_each(|&(d, first)| {
            let (p, first) = (targets.path(d), targets.path(first));
            replacing(&p, || fs::hard_link(&first, &p)).map_err(|e| io_err(e, &p, "cannot create hard link"))
        });
    }
    if let Err(e) = result {
        let written = written.lock().unwrap_or_else(|p| p.into_inner());
        for (d, blob) in &created {
            if blob.is_some_and(|h| !written.contains(&h)) {
                let _ = fs::remove_file(targets.path(*d));
            }
        }
        return Err(e);
    }

    // 3. Special files.
    let restore_owner = opts.restore_owner;
    // Names left out with a warning: no metadata to set on them.
    let mut not_created: HashSet<usize> = HashSet::new();
    for &d in &selected {
        let ino = tree.inode_of(d);
        if kind_of(ino) != Kind::Special {
            continue;
        }
        let p = &targets.path(d);
        let u = ino.tagged.unix_data().expect("specials have UNIX data");
        if in_way.contains(&d) {
            remove_non_dir(p)?;
        }
        match replacing(p, || fsutil::mknod(p, u.mode & (libc::S_IFMT | 0o777), u.rdev as u64)) {
            Ok(()) => report.specials += 1,
            Err(e) => {
                not_created.insert(d);
                report
                    .warnings
                    .push(format!("{}: cannot create special file: {e}; skipped", p.display()))
            }
        }
    }

    // 4. Symlinks, last of all, so nothing is ever created through them.
    let rpfix = arch.header.flags & HDR_FLAG_RP_FIX != 0;
    for &d in &selected {
        let ino = tree.inode_of(d);
        if kind_of(ino) != Kind::Symlink {
            continue;
        }
        let p = &targets.path(d);
        // No reparse data at all (a zero hash) is data that does not decode.
        let data = if ino.reparse_hash == ZERO_HASH {
            Vec::new()
        } else {
            arch.read_blob_to_vec(&ino.reparse_hash, REPARSE_DATA_MAX as u64)?
        };
        let link = match decode_link(ino.reparse_tag, ino.rp_flags, &data) {
            Ok(l) => l,
            Err(e) => {
                not_created.insert(d);
                report.warnings.push(format!("{}: {e}; skipped", p.display()));
                continue;
            }
        };
        let mut target = link.path;
        if link.fixed_absolute && rpfix {
            // A link to the image's root points at the target directory
            // itself (no trailing slash, as wimlib writes it).
            target = match target.as_str() {
                "" | "/" => dest_abs.display().to_string(),
                _ => format!("{}{}", dest_abs.display(), target),
            };
        }
        if target.is_empty() {
            target = "/".into();
        }
        if in_way.contains(&d) {
            remove_non_dir(p)?;
        }
        replacing(p, || std::os::unix::fs::symlink(&target, p)).map_err(|e| io_err(e, p, "cannot create symlink"))?;
        report.symlinks += 1;
    }

    // 5. Metadata. Regular files have theirs, set while they were open
    // from writing, except those with several names. Those, symlinks and
    // special files get theirs by path (each inode once, in parallel: a
    // path walk and three or four system calls each), then directories
    // deepest first, so a directory that denies entry is closed after its
    // contents. The warnings of the files written came in whatever order
    // the parallel batches ended: sorted, so a restore reports the same way.
    let mut file_warnings = meta.warnings.into_inner().unwrap_or_else(|p| p.into_inner());
    file_warnings.sort_unstable();
    report.warnings.extend(file_warnings);
    let mut done: HashSet<usize> = HashSet::new();
    let files: Vec<usize> = selected
        .iter()
        .copied()
        .filter(|&d| {
            let inode = tree.dentries[d].inode;
            let kind = kind_of(&tree.inodes[inode]);
            let by_path = kind != Kind::Dir && (kind != Kind::File || linked.contains(&inode));
            by_path && !not_created.contains(&d) && done.insert(inode)
        })
        .collect();
    let warnings = files
        .par_iter()
        .map(|&d| {
            let ino = tree.inode_of(d);
            let mut warnings = Vec::new();
            set_metadata(&targets.path(d), ino, kind_of(ino), restore_owner, &mut warnings)?;
            Ok(warnings)
        })
        .collect::<Result<Vec<Vec<String>>>>()?;
    report.warnings.extend(warnings.into_iter().flatten());
    // Directories that were there before keep their own metadata (unless
    // the user asked to replace what exists), and so does the target
    // unless this restore made it for the whole image: a root restoring
    // one file into /tmp must not make /tmp the image root's 0700.
    let keeps_own = |d: usize| match d {
        0 => dest_existed || !opts.paths.is_empty(),
        _ => opts.overwrite != Overwrite::Replace && !absent.contains(&d),
    };
    for &d in selected.iter().rev() {
        let ino = tree.inode_of(d);
        if kind_of(ino) == Kind::Dir && !keeps_own(d) {
            set_metadata(&targets.path(d), ino, Kind::Dir, restore_owner, &mut report.warnings)?;
        }
    }
    Ok(report)
}

/// Writes the contents of every blob in `by_blob` to its files, noting in
/// `written` each blob whose files are complete.
#[allow(clippy::too_many_arguments)]
fn write_blobs(
    arch: &WimArchive,
    targets: &Targets,
    by_blob: &HashMap<Sha1, Vec<(usize, bool)>>,
    written: &std::sync::Mutex<HashSet<Sha1>>,
    meta: &FileMeta,
    opts: &ApplyOptions,
    report: &mut ApplyReport,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    // Blobs restored with damage (data recovery mode), for the warnings,
    // and those that could not be read at all, with why (restored empty).
    let recovered = std::sync::Mutex::new(Vec::<Sha1>::new());
    let unreadable = std::sync::Mutex::new(Vec::<(Sha1, String)>::new());
    // In data recovery mode a blob whose data cannot be located (missing,
    // a broken chunk table, an extent past the end) leaves its files empty;
    // its size cannot be trusted either. Anything else still stops.
    let give_up = |h: &Sha1, e: WimError| -> Result<()> {
        match e {
            WimError::Corrupt(m) | WimError::Invalid(m) if opts.recover_data => {
                unreadable.lock().unwrap_or_else(|p| p.into_inner()).push((*h, m));
                Ok(())
            }
            e => Err(recovery_hint(naming_files(e, &by_blob[h], targets), opts)),
        }
    };
    for h in by_blob.keys() {
        if !arch.has_blob(h) && opts.recover_data {
            give_up(
                h,
                WimError::Corrupt(format!("blob {} is missing from the archive", hex(h))),
            )?;
        } else if !arch.has_blob(h) {
            return Err(WimError::Corrupt(format!(
                "blob {} needed by {} is missing from the archive",
                hex(h),
                targets.path(by_blob[h][0].0).display()
            )));
        }
    }
    // Read blobs in file order so the archive is read sequentially.
    // (Missing blobs were refused or, recovering, set aside above.)
    let mut order: Vec<((usize, u64), Sha1, u64)> = by_blob
        .keys()
        .filter_map(|h| {
            arch.blob_entry(h)
                .map(|(src, b)| ((src, b.reshdr.offset), *h, b.reshdr.original_size))
        })
        .collect();
    order.sort();
    let bytes_total: u64 = order.iter().map(|o| o.2).sum();
    let mut batch: Vec<Sha1> = Vec::new();
    let mut batch_bytes = 0u64;
    let flush = |batch: &mut Vec<Sha1>| -> Result<()> {
        batch.par_iter().try_for_each(|h| -> Result<()> {
            let damaged = AtomicBool::new(false);
            let data = match arch.read_blob_to_vec_checked(h, SMALL_BLOB, opts.recover_data.then_some(&damaged)) {
                Ok(data) => data,
                Err(e) => return give_up(h, e),
            };
            if damaged.load(Ordering::Relaxed) {
                recovered.lock().unwrap_or_else(|p| p.into_inner()).push(*h);
            }
            for (d, sparse) in &by_blob[h] {
                write_contents(&targets.path(*d), &data, *sparse, meta, *d)?;
            }
            written.lock().unwrap_or_else(|p| p.into_inner()).insert(*h);
            Ok(())
        })?;
        batch.clear();
        Ok(())
    };
    let cancelled = || {
        opts.cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    };
    for (_, h, size) in order {
        if cancelled() {
            return Err(WimError::Cancelled);
        }
        report.bytes += size;
        if size <= SMALL_BLOB {
            batch.push(h);
            batch_bytes += size;
            if batch_bytes >= SMALL_BATCH_BYTES || batch.len() >= 1024 {
                flush(&mut batch)?;
                batch_bytes = 0;
                progress(report.bytes, bytes_total);
            }
        } else {
            let files: Vec<(PathBuf, bool, usize)> =
                by_blob[&h].iter().map(|&(d, sp)| (targets.path(d), sp, d)).collect();
            let damaged = AtomicBool::new(false);
            match stream_large(
                arch,
                &h,
                &files,
                meta,
                opts.recover_data.then_some(&damaged),
                &cancelled,
            ) {
                Ok(()) => {
                    if damaged.load(Ordering::Relaxed) {
                        recovered.lock().unwrap_or_else(|p| p.into_inner()).push(h);
                    }
                    written.lock().unwrap_or_else(|p| p.into_inner()).insert(h);
                }
                Err(e) => give_up(&h, e)?,
            }
            progress(report.bytes, bytes_total);
        }
    }
    flush(&mut batch)?;
    progress(report.bytes, bytes_total);
    // Every damaged file is named (data recovery mode).
    for h in recovered.into_inner().unwrap_or_else(|p| p.into_inner()) {
        for &(d, _) in &by_blob[&h] {
            report.warnings.push(format!(
                "{}: its data is damaged (blob {}); restored as well as it decodes (data recovery mode)",
                targets.path(d).display(),
                hex(&h)
            ));
        }
    }
    for (h, why) in unreadable.into_inner().unwrap_or_else(|p| p.into_inner()) {
        for &(d, sparse) in &by_blob[&h] {
            write_contents(&targets.path(d), &[], sparse, meta, d)?;
            report.warnings.push(format!(
                "{}: its data cannot be read ({why}); restored empty (data recovery mode)",
                targets.path(d).display()
            ));
        }
        written.lock().unwrap_or_else(|p| p.into_inner()).insert(h);
    }
    Ok(())
}

/// A damaged blob's error, naming the files whose contents it is: the user
/// needs the paths (to restore them from elsewhere), not a hash.
fn naming_files(e: WimError, files: &[(usize, bool)], targets: &Targets) -> WimError {
    let name = |m: String| {
        let first = files.first().map(|&(d, _)| targets.path(d));
        match (first, files.len()) {
            (None, _) => m,
            (Some(p), 1) => format!("{m} (the contents of {})", p.display()),
            (Some(p), n) => format!("{m} (the contents of {} and {} more files)", p.display(), n - 1),
        }
    };
    match e {
        WimError::Corrupt(m) => WimError::Corrupt(name(m)),
        WimError::Invalid(m) => WimError::Invalid(name(m)),
        other => other,
    }
}

/// Says, on damage that stopped a restore, that `--recover-data` would
/// have restored everything else (and the damaged files as they decode).
fn recovery_hint(e: WimError, opts: &ApplyOptions) -> WimError {
    match e {
        WimError::Corrupt(m) if !opts.recover_data => WimError::Corrupt(format!(
            "{m}; with --recover-data the restore goes on past damaged files (restored as well as they decode, each \
             named in a warning)"
        )),
        other => other,
    }
}

fn io_err(e: io::Error, p: &Path, what: &str) -> WimError {
    WimError::Io(io::Error::new(e.kind(), format!("{what} {}: {e}", p.display())))
}

/// Removes a file, symlink or special file in the way (never a directory).
fn remove_non_dir(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => Err(WimError::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists as a directory where the snapshot has a file; refusing to replace it (move it away, or restore elsewhere)",
                p.display()
            ),
        ))),
        Ok(_) => fs::remove_file(p).map_err(|e| io_err(e, p, "cannot replace")),
        Err(_) => Ok(()),
    }
}

/// Creates a new file for writing (never through a symlink, never over
/// an existing name).
fn create_file(p: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(p)
}

/// [`create_file`], replacing a name that appeared since the scan.
fn create_for_contents(p: &Path) -> Result<File> {
    replacing(p, || create_file(p)).map_err(|e| io_err(e, p, "cannot create"))
}

/// Runs `create` (which makes the name `p`); if the name is taken (it
/// appeared after the scan for paths in the way), replaces what is there,
/// as for paths found in the way (never a directory), and tries once more.
fn replacing<T>(p: &Path, mut create: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    match create() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            remove_non_dir(p).map_err(|e| io::Error::other(e.to_string()))?;
            create()
        }
        r => r,
    }
}

/// Writes data, leaving holes where a sparse file had zeros.
///
/// Zeros are looked for in 4 KiB blocks; a run of zero blocks becomes one
/// seek and a run of other blocks one write (a seek or a write per block
/// made a 512 MiB hole 131,072 system calls).
fn write_piece(f: &mut File, data: &[u8], sparse: bool) -> io::Result<()> {
    if !sparse {
        return f.write_all(data);
    }
    const BLOCK: usize = 4096;
    // Start of the bytes not yet written or skipped, and whether they are a hole.
    let (mut from, mut in_hole) = (0usize, false);
    for (i, block) in data.chunks(BLOCK).enumerate() {
        let zero = is_run_of(block, 0);
        if zero != in_hole {
            flush_run(f, &data[from..i * BLOCK], in_hole)?;
            (from, in_hole) = (i * BLOCK, zero);
        }
    }
    flush_run(f, &data[from..], in_hole)
}

/// Skips (`hole`) or writes `run`.
fn flush_run(f: &mut File, run: &[u8], hole: bool) -> io::Result<()> {
    match (run.is_empty(), hole) {
        (true, _) => Ok(()),
        (false, true) => f.seek(SeekFrom::Current(run.len() as i64)).map(|_| ()),
        (false, false) => f.write_all(run),
    }
}

fn write_contents(p: &Path, data: &[u8], sparse: bool, meta: &FileMeta, d: usize) -> Result<()> {
    let mut f = create_for_contents(p)?;
    write_piece(&mut f, data, sparse).map_err(|e| io_err(e, p, "cannot write"))?;
    if sparse {
        f.set_len(data.len() as u64).map_err(|e| io_err(e, p, "cannot write"))?;
    }
    meta.set(&f, p, d)
}

fn stream_large(
    arch: &WimArchive,
    h: &Sha1,
    targets: &[(PathBuf, bool, usize)],
    meta: &FileMeta,
    recover: Option<&AtomicBool>,
    cancelled: &dyn Fn() -> bool,
) -> Result<()> {
    let mut files: Vec<(File, bool, &Path)> = Vec::new();
    for (p, sparse, _) in targets.iter().take(64) {
        files.push((create_for_contents(p)?, *sparse, p));
    }
    let mut total = 0u64;
    let mut write = |piece: &[u8]| {
        // A large file is a long time between the loop's own checks.
        if cancelled() {
            return Err(WimError::Cancelled);
        }
        for (f, sparse, p) in files.iter_mut() {
            write_piece(f, piece, *sparse).map_err(|e| io_err(e, p, "cannot write"))?;
        }
        total += piece.len() as u64;
        Ok(())
    };
    arch.read_blob_checked(h, recover, &mut write)?;
    for (f, sparse, p) in &files {
        if *sparse {
            f.set_len(total).map_err(|e| io_err(e, p, "cannot write"))?;
        }
    }
    // Beyond 64 identical files, copy the first instead of keeping more open.
    for (p, _, d) in targets.iter().skip(64) {
        let mut to = create_for_contents(p)?;
        let mut from = File::open(&targets[0].0).map_err(|e| io_err(e, &targets[0].0, "cannot read back"))?;
        io::copy(&mut from, &mut to).map_err(|e| io_err(e, p, "cannot write"))?;
        meta.set(&to, p, *d)?;
    }
    // The first 64 get theirs last: the copies read the first one back,
    // which its mode could forbid and which could move its access time.
    for ((f, _, p), (_, _, d)) in files.iter().zip(targets) {
        meta.set(f, p, *d)?;
    }
    Ok(())
}

/// Where metadata is set: a name (a directory, a symlink, a special file)
/// or a regular file still open from writing its contents, which saves a
/// path walk per call (three or four per file).
#[derive(Clone, Copy)]
enum On<'a> {
    Name(&'a Path),
    Open(&'a File, &'a Path),
}

impl On<'_> {
    fn path(&self) -> &Path {
        match self {
            On::Name(p) | On::Open(_, p) => p,
        }
    }
    fn chown(&self, uid: u32, gid: u32) -> io::Result<()> {
        match self {
            On::Name(p) => std::os::unix::fs::lchown(p, Some(uid), Some(gid)),
            On::Open(f, _) => std::os::unix::fs::fchown(f, Some(uid), Some(gid)),
        }
    }
    fn set_xattr(&self, name: &[u8], value: &[u8]) -> io::Result<()> {
        match self {
            On::Name(p) => fsutil::set_xattr(p, name, value),
            On::Open(f, _) => fsutil::fset_xattr(f, name, value),
        }
    }
    fn set_mode(&self, mode: u32) -> io::Result<()> {
        let perms = fs::Permissions::from_mode(mode);
        match self {
            On::Name(p) => fs::set_permissions(p, perms),
            On::Open(f, _) => f.set_permissions(perms),
        }
    }
    fn set_times(&self, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
        match self {
            On::Name(p) => fsutil::set_times(p, atime, mtime),
            On::Open(f, _) => fsutil::fset_times(f, atime, mtime),
        }
    }
}

/// Sets owner, xattrs, mode and times of `p` (which exists: names left
/// out are not passed here); what could not be set but need not stop the
/// restore goes to `warnings`.
fn set_metadata(p: &Path, ino: &Inode, kind: Kind, restore_owner: bool, warnings: &mut Vec<String>) -> Result<()> {
    set_metadata_on(On::Name(p), ino, kind, restore_owner, warnings)
}

fn set_metadata_on(on: On, ino: &Inode, kind: Kind, restore_owner: bool, warnings: &mut Vec<String>) -> Result<()> {
    let p = on.path();
    let unix = ino.tagged.unix_data();
    if let (Some(u), true) = (unix, restore_owner) {
        if let Err(e) = on.chown(u.uid, u.gid) {
            warnings.push(format!("{}: cannot set owner {}:{}: {e}", p.display(), u.uid, u.gid));
        }
    }
    match ino.tagged.xattrs() {
        Ok(xs) => {
            for (name, value) in xs {
                if let Err(e) = on.set_xattr(&name, &value) {
                    // Linux refuses user.* xattrs on symlinks; not worth a warning.
                    if !(kind == Kind::Symlink && e.raw_os_error() == Some(libc::EPERM)) {
                        warnings.push(format!(
                            "{}: cannot set extended attribute {}: {e}",
                            p.display(),
                            String::from_utf8_lossy(&name)
                        ));
                    }
                }
            }
        }
        Err(e) => return Err(WimError::Invalid(format!("{}: {e}", p.display()))),
    }
    if kind != Kind::Symlink {
        let mode = match unix {
            Some(u) => u.mode & 0o7777,
            None if kind == Kind::Dir => 0o755,
            None => 0o644,
        };
        on.set_mode(mode).map_err(|e| io_err(e, p, "cannot set mode of"))?;
    }
    on.set_times(time::to_unix(ino.last_access_time), time::to_unix(ino.last_write_time))
        .map_err(|e| io_err(e, p, "cannot set times of"))?;
    Ok(())
}

/// Metadata of regular files, set on each file while it is open from
/// writing its contents (the last write before it: times would move).
struct FileMeta<'a> {
    tree: &'a ImageTree,
    restore_owner: bool,
    /// Inodes restored under several names: left to the pass by path.
    linked: &'a HashSet<usize>,
    warnings: std::sync::Mutex<Vec<String>>,
}

impl FileMeta<'_> {
    /// Sets the metadata of dentry `d`'s inode on `f`, its file, named `p`.
    fn set(&self, f: &File, p: &Path, d: usize) -> Result<()> {
        if self.linked.contains(&self.tree.dentries[d].inode) {
            return Ok(());
        }
        let mut warnings = Vec::new();
        set_metadata_on(
            On::Open(f, p),
            self.tree.inode_of(d),
            Kind::File,
            self.restore_owner,
            &mut warnings,
        )?;
        if !warnings.is_empty() {
            self.warnings.lock().unwrap_or_else(|p| p.into_inner()).extend(warnings);
        }
        Ok(())
    }
}

/// Lists an image's paths under `start` (for `archive ls`), with their kind
/// and size, one at a time: a full list of paths could be many times the
/// size of the metadata.
pub fn list(
    arch: &WimArchive,
    tree: &ImageTree,
    start: &str,
    out: &mut dyn FnMut(&str, char, u64) -> io::Result<()>,
) -> Result<()> {
    let d = tree
        .lookup(start)
        .ok_or_else(|| WimError::NotFound(format!("path {start:?} does not exist in the image")))?;
    for x in tree.walk(d) {
        let ino = tree.inode_of(x);
        let k = match kind_of(ino) {
            Kind::Dir => 'd',
            Kind::File => '-',
            Kind::Symlink => 'l',
            Kind::Special => 's',
        };
        let size = arch.blob_size(&ino.data_hash).unwrap_or(0);
        out(&tree.path_of(x), k, size)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Data blocks, zero blocks, partial blocks and a zero tail, written
    /// in pieces of several sizes: the file reads back the same, with holes.
    #[test]
    fn sparse_pieces_read_back_exactly_and_leave_holes() {
        let mut data = vec![0u8; 64 * 4096 + 1000];
        data[..5000].fill(0xAB); // a block and a bit of data
        data[20 * 4096 + 7] = 1; // one byte alone in a block of zeros
        data[40 * 4096..44 * 4096].fill(0x5C); // a run of data blocks
        data[64 * 4096 + 999] = 2; // the last, partial block
        let dir = tempfile::tempdir().unwrap();
        for piece in [data.len(), 32768, 4096, 3000, 1] {
            let p = dir.path().join(format!("f{piece}"));
            let mut f = File::create(&p).unwrap();
            for part in data.chunks(piece) {
                write_piece(&mut f, part, true).unwrap();
            }
            f.set_len(data.len() as u64).unwrap();
            drop(f);
            assert!(fs::read(&p).unwrap() == data, "pieces of {piece} bytes");
            // Some filesystems do not make holes; where they do, the zero
            // blocks must not be allocated.
            let allocated = fs::metadata(&p).unwrap().blocks() * 512;
            if piece >= 4096 && allocated < data.len() as u64 {
                assert!(
                    allocated <= data.len() as u64 / 2,
                    "{allocated} bytes allocated for pieces of {piece}"
                );
            }
        }
    }
}
