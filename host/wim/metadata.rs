//! An image's metadata resource: the security block and the dentry tree.
//!
//! In memory an image is a list of dentries (names; dentry 0 is the root)
//! pointing at inodes (everything a name shares with its hard links). On
//! disk every dentry repeats its inode's data; hard links share a non-zero
//! link group id. Dentry layout (102-byte fixed part, names, tagged items,
//! then extra stream entries) follows wimlib `dentry.c`; see
//! `docs/wim-format.md` §6.

use std::collections::{HashMap, HashSet};

use super::blob_table::{Sha1, ZERO_HASH};
use super::error::{invalid, Le, Result};
use super::identity::IdentityKey;
use super::security;
use super::tagged::TaggedItems;

pub const FILE_ATTRIBUTE_READONLY: u32 = 0x1;
pub const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
pub const FILE_ATTRIBUTE_NORMAL: u32 = 0x80;
pub const FILE_ATTRIBUTE_SPARSE_FILE: u32 = 0x200;
pub const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
pub const FILE_ATTRIBUTE_ENCRYPTED: u32 = 0x4000;

const DENTRY_FIXED: usize = 102;
/// Deeper trees are refused (wimlib's limit; also stops cycles).
const MAX_DEPTH: usize = 16384;

/// Longest path, in UTF-8 bytes from the image root, that we keep: Linux's
/// PATH_MAX less its terminating NUL. Nothing longer can be created or even
/// named in one system call, and without the cap a resource of deep long
/// names makes every consumer that builds full paths quadratic in depth.
pub const PATH_MAX_BYTES: usize = 4095;
/// How many left-out names a tree remembers by name (all are counted).
const SKIPPED_KEPT: usize = 1000;

/// A name the parser left out of the tree, and why. Restores and listings
/// report each one (wimlib warns about these too), never silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEntry {
    /// Path of the entry as far as it can be shown (lossy UTF-16).
    pub path: String,
    /// Why it was left out, in words.
    pub reason: &'static str,
}

/// A named data stream (NTFS alternate data stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedStream {
    pub name: Vec<u16>,
    pub hash: Sha1,
}

/// What the names of one file share.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Inode {
    /// Windows FILE_ATTRIBUTE_* bits.
    pub attributes: u32,
    /// Index into the security descriptors, -1 for none.
    pub security_id: i32,
    /// FILETIMEs; wimlib on Linux stores mtime as the creation time.
    pub creation_time: u64,
    pub last_access_time: u64,
    pub last_write_time: u64,
    /// The dentry field at 0x54 whose meaning is unknown; preserved.
    pub unknown_0x54: u32,
    /// Reparse tag, reserved field and rp-flags (reparse points only).
    pub reparse_tag: u32,
    pub reparse_reserved: u16,
    pub rp_flags: u16,
    /// SHA-1 of the file contents (unnamed data stream); zero when empty.
    pub data_hash: Sha1,
    /// SHA-1 of the reparse data (symlinks); zero otherwise.
    pub reparse_hash: Sha1,
    pub named_streams: Vec<NamedStream>,
    pub tagged: TaggedItems,
    /// The dentry's two reserved fields (0x18, 0x20), from its first name:
    /// zero in images other tools write; WimGuard keeps a regular file's
    /// identity there (`identity.rs`).
    pub reserved: [u64; 2],
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.attributes & FILE_ATTRIBUTE_DIRECTORY != 0 && !self.is_reparse()
    }
    pub fn is_reparse(&self) -> bool {
        self.attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0
    }
    /// The blobs this inode uses (contents, reparse data, named streams), zero hashes skipped.
    pub fn blob_hashes(&self) -> impl Iterator<Item = &Sha1> {
        std::iter::once(&self.data_hash)
            .chain(std::iter::once(&self.reparse_hash))
            .chain(self.named_streams.iter().map(|s| &s.hash))
            .filter(|h| **h != ZERO_HASH)
    }

    /// The identity this file was captured with: from the reserved fields,
    /// or from the tagged item of WimGuard 0.1's archives.
    pub fn identity_key(&self) -> Option<IdentityKey> {
        IdentityKey::from_reserved(self.reserved).or_else(|| self.tagged.legacy_identity())
    }

    fn has_extra_streams(&self) -> bool {
        self.is_reparse() || !self.named_streams.is_empty()
    }
}

/// One name in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dentry {
    /// UTF-16 name; empty only for the root.
    pub name: Vec<u16>,
    /// DOS 8.3 name (Windows images only).
    pub short_name: Vec<u16>,
    pub inode: usize,
    pub parent: usize,
    /// Child dentries (directories only).
    pub children: Vec<usize>,
}

/// A whole image tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageTree {
    /// The raw security data block (at least 8 bytes).
    pub security: Vec<u8>,
    /// Dentry 0 is the root.
    pub dentries: Vec<Dentry>,
    pub inodes: Vec<Inode>,
    /// Entries of the resource that are not in the tree (unsafe or duplicate
    /// names, children of non-directories, paths past [`PATH_MAX_BYTES`]):
    /// the first [`SKIPPED_KEPT`] by name.
    pub skipped: Vec<SkippedEntry>,
    /// How many entries were left out in all (subtrees count once).
    pub skipped_total: u64,
}

impl ImageTree {
    /// A tree holding only a root directory with the given inode.
    pub fn new(root: Inode) -> ImageTree {
        ImageTree {
            security: security::empty(),
            dentries: vec![Dentry {
                name: Vec::new(),
                short_name: Vec::new(),
                inode: 0,
                parent: 0,
                children: Vec::new(),
            }],
            inodes: vec![root],
            skipped: Vec::new(),
            skipped_total: 0,
        }
    }

    /// Notes an entry left out of the tree.
    fn skip(&mut self, path: String, reason: &'static str) {
        self.skipped_total += 1;
        if self.skipped.len() < SKIPPED_KEPT {
            self.skipped.push(SkippedEntry { path, reason });
        }
    }

    /// Path of child `name` of dentry `parent`, for messages.
    fn child_path(&self, parent: usize, name: &[u16]) -> String {
        let base = self.path_of(parent);
        let sep = if base == "/" { "" } else { "/" };
        format!("{base}{sep}{}", String::from_utf16_lossy(name))
    }

    pub fn add_inode(&mut self, inode: Inode) -> usize {
        self.inodes.push(inode);
        self.inodes.len() - 1
    }

    /// Adds a name for `inode` under directory dentry `parent`.
    pub fn add_dentry(&mut self, parent: usize, name: Vec<u16>, inode: usize) -> usize {
        let id = self.dentries.len();
        self.dentries.push(Dentry {
            name,
            short_name: Vec::new(),
            inode,
            parent,
            children: Vec::new(),
        });
        self.dentries[parent].children.push(id);
        id
    }

    pub fn inode_of(&self, dentry: usize) -> &Inode {
        &self.inodes[self.dentries[dentry].inode]
    }

    /// Names per inode (link counts).
    pub fn link_counts(&self) -> Vec<u32> {
        let mut c = vec![0u32; self.inodes.len()];
        for d in &self.dentries {
            c[d.inode] += 1;
        }
        c
    }

    /// References to each blob, counted per name as the blob table counts
    /// them (a hard-linked file's blob counts once per link).
    pub fn blob_references(&self) -> HashMap<Sha1, u32> {
        let counts = self.link_counts();
        let mut refs: HashMap<Sha1, u32> = HashMap::new();
        for (i, ino) in self.inodes.iter().enumerate() {
            for h in ino.blob_hashes() {
                *refs.entry(*h).or_default() += counts[i];
            }
        }
        refs
    }

    /// The path of a dentry from the root, `/`-separated, lossy for display.
    pub fn path_of(&self, mut d: usize) -> String {
        let mut parts = Vec::new();
        while d != 0 {
            parts.push(String::from_utf16_lossy(&self.dentries[d].name));
            d = self.dentries[d].parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// Finds a dentry by `/`-separated path (case-sensitive).
    pub fn lookup(&self, path: &str) -> Option<usize> {
        let mut cur = 0usize;
        for comp in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
            let want: Vec<u16> = comp.encode_utf16().collect();
            cur = *self.dentries[cur]
                .children
                .iter()
                .find(|&&c| self.dentries[c].name == want)?;
        }
        Some(cur)
    }

    /// Dentries in depth-first pre-order, starting at `start`.
    pub fn walk(&self, start: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(d) = stack.pop() {
            out.push(d);
            for &c in self.dentries[d].children.iter().rev() {
                stack.push(c);
            }
        }
        out
    }

    /// Parses an uncompressed metadata resource.
    pub fn parse(buf: &[u8]) -> Result<ImageTree> {
        let (sec, _count, root_off) = security::parse(buf)?;
        let mut tree = ImageTree {
            security: sec,
            dentries: Vec::new(),
            inodes: Vec::new(),
            skipped: Vec::new(),
            skipped_total: 0,
        };
        let root = parse_dentry(buf, root_off)?
            .ok_or_else(|| super::error::WimError::Invalid("metadata resource has no root dentry".into()))?;
        if root.inode.attributes & FILE_ATTRIBUTE_DIRECTORY == 0 || root.inode.is_reparse() {
            return invalid("root of the image is not a directory");
        }
        // Hard links: same non-zero group id and same contents hash => one inode.
        let mut groups: HashMap<(u64, Sha1), usize> = HashMap::new();
        // One bit per byte offset (an eighth of the resource; a hash set of
        // offsets costs about a third of it for minimal dentries).
        let mut seen_dentries = OffsetSet::new(buf.len());
        seen_dentries.insert(root_off);
        let root_subdir = root.subdir_offset;
        tree.inodes.push(root.inode);
        tree.dentries.push(Dentry {
            name: Vec::new(),
            short_name: Vec::new(),
            inode: 0,
            parent: 0,
            children: Vec::new(),
        });
        // (dentry id, list offset, depth, UTF-8 length of its path)
        let mut stack = vec![(0usize, root_subdir, 0usize, 0usize)];
        while let Some((dir, list_off, depth, dir_len)) = stack.pop() {
            if list_off == 0 {
                continue;
            }
            if depth >= MAX_DEPTH {
                return invalid("directory tree is too deep (cyclic?)");
            }
            let mut off = usize::try_from(list_off)
                .map_err(|_| super::error::WimError::Invalid("subdirectory offset out of range".into()))?;
            let mut names: HashSet<Vec<u16>> = HashSet::new();
            loop {
                if !seen_dentries.insert(off) {
                    return invalid(format!(
                        "dentry at offset {off} is listed twice (overlapping or cyclic directory lists)"
                    ));
                }
                let Some(p) = parse_dentry(buf, off)? else { break };
                off = p.next;
                // wimlib ignores these names; so do we, but not silently.
                let bad = p.name.is_empty() || p.name.contains(&0) || p.name == [0x2E] || p.name == [0x2E, 0x2E];
                if bad {
                    tree.skip(tree.child_path(dir, &p.name), "unsafe name (empty, `.`, `..` or NUL)");
                    continue;
                }
                let len = dir_len + 1 + utf8_len(&p.name);
                if len > PATH_MAX_BYTES {
                    tree.skip(
                        tree.child_path(dir, &p.name[..p.name.len().min(64)]) + "…",
                        "path longer than 4095 bytes (the system's PATH_MAX)",
                    );
                    continue;
                }
                if names.contains(&p.name) {
                    tree.skip(tree.child_path(dir, &p.name), "duplicate name in its directory");
                    continue;
                }
                names.insert(p.name.clone());
                if !p.inode.is_dir()
                    && p.subdir_offset != 0
                    && matches!(parse_dentry(buf, p.subdir_offset as usize), Ok(Some(_)))
                {
                    tree.skip(
                        tree.child_path(dir, &p.name) + "/*",
                        "children of a symlink or other non-directory",
                    );
                }
                let key = (p.link_group, p.inode.data_hash);
                let inode = if p.link_group != 0 && !p.inode.is_dir() && !p.inode.is_reparse() {
                    match groups.get(&key) {
                        Some(&i) => i,
                        None => {
                            tree.inodes.push(p.inode);
                            groups.insert(key, tree.inodes.len() - 1);
                            tree.inodes.len() - 1
                        }
                    }
                } else {
                    tree.inodes.push(p.inode);
                    tree.inodes.len() - 1
                };
                let is_dir = tree.inodes[inode].is_dir();
                let id = tree.add_dentry(dir, p.name, inode);
                tree.dentries[id].short_name = p.short_name;
                if is_dir {
                    stack.push((id, p.subdir_offset, depth + 1, len));
                }
            }
        }
        // The vectors grew by doubling; an apply keeps the tree for its
        // whole run, next to its data buffers.
        tree.inodes.shrink_to_fit();
        tree.dentries.shrink_to_fit();
        Ok(tree)
    }

    /// Serializes the tree the way wimlib lays it out: security block, root,
    /// end marker, then child lists in depth-first pre-order, children
    /// sorted case-insensitively then case-sensitively.
    pub fn serialize(&self) -> Vec<u8> {
        let tree = self;
        // Every directory's children in wimlib's order, in one flat list
        // (`kids[first[d]..first[d + 1]]`): the bookkeeping is alive beside
        // the growing output, the peak of a capture's memory, so it is kept
        // to a few bytes per entry.
        let mut first = Vec::with_capacity(tree.dentries.len() + 1);
        let mut kids: Vec<u32> = Vec::with_capacity(tree.dentries.len());
        for d in &tree.dentries {
            first.push(kids.len() as u32);
            let at = kids.len();
            kids.extend(d.children.iter().map(|&c| c as u32));
            kids[at..]
                .sort_by(|&a, &b| compare_names(&tree.dentries[a as usize].name, &tree.dentries[b as usize].name));
        }
        first.push(kids.len() as u32);
        let children = |d: usize| {
            kids[first[d] as usize..first[d + 1] as usize]
                .iter()
                .map(|&c| c as usize)
        };
        let counts = tree.link_counts();
        // Hard link group ids for multi-name inodes (not for dirs and reparse
        // points), numbered in write order so equal trees give equal bytes.
        let mut group = vec![0u32; tree.inodes.len()];
        let mut next = 1u32;
        // Pass 1: where each directory's child list starts.
        let mut subdir = vec![0u64; tree.dentries.len()];
        let root_off = (tree.security.len() + 7) & !7;
        let size_of = |c: usize| dentry_size(&tree.dentries[c], &tree.inodes[tree.dentries[c].inode]);
        let mut off = root_off + size_of(0) + 8;
        let mut order = Vec::new(); // directories whose lists are placed, in pre-order
        let mut stack = vec![0usize];
        while let Some(dir) = stack.pop() {
            order.push(dir as u32);
            subdir[dir] = off as u64;
            off += children(dir).map(size_of).sum::<usize>() + 8;
            for c in children(dir).rev() {
                if tree.inodes[tree.dentries[c].inode].is_dir() {
                    stack.push(c);
                }
            }
        }
        // Pass 2: bytes.
        let mut out = Vec::with_capacity(off);
        out.extend_from_slice(&tree.security);
        out.resize(root_off, 0);
        write_dentry(
            &mut out,
            &tree.dentries[0],
            &tree.inodes[tree.dentries[0].inode],
            subdir[0],
            0,
        );
        out.extend_from_slice(&[0; 8]);
        for dir in order {
            let dir = dir as usize;
            debug_assert_eq!(out.len() as u64, subdir[dir]);
            for c in children(dir) {
                let d = &tree.dentries[c];
                let ino = &tree.inodes[d.inode];
                let sub = if ino.is_dir() { subdir[c] } else { 0 };
                if counts[d.inode] > 1 && !ino.is_dir() && !ino.is_reparse() && group[d.inode] == 0 {
                    group[d.inode] = next;
                    next += 1;
                }
                write_dentry(&mut out, d, ino, sub, u64::from(group[d.inode]));
            }
            out.extend_from_slice(&[0; 8]);
        }
        debug_assert_eq!(out.len(), off);
        out
    }
}

/// Which byte offsets of a resource have been visited.
struct OffsetSet(Vec<u64>);

impl OffsetSet {
    fn new(len: usize) -> OffsetSet {
        OffsetSet(vec![0; len.div_ceil(64)])
    }
    /// Marks `off`; false if it was marked already. Offsets past the end
    /// count as new (parsing them fails anyway).
    fn insert(&mut self, off: usize) -> bool {
        let Some(word) = self.0.get_mut(off / 64) else {
            return true;
        };
        let bit = 1u64 << (off % 64);
        let new = *word & bit == 0;
        *word |= bit;
        new
    }
}

/// wimlib's child order: case-insensitive first, then case-sensitive.
pub fn compare_names(a: &[u16], b: &[u16]) -> std::cmp::Ordering {
    let up = |u: u16| -> u16 {
        match char::from_u32(u as u32) {
            Some(c) => {
                let mut it = c.to_uppercase();
                match (it.next(), it.next()) {
                    (Some(x), None) if (x as u32) <= 0xFFFF => x as u16,
                    _ => u,
                }
            }
            None => u,
        }
    };
    a.iter()
        .map(|&u| up(u))
        .cmp(b.iter().map(|&u| up(u)))
        .then_with(|| a.cmp(b))
}

/// The tagged-item region, zero-padded to a multiple of 8 so that it can be
/// written back without misaligning the dentries after it.
fn padded8(b: &[u8]) -> Vec<u8> {
    let mut v = b.to_vec();
    v.resize(align8(v.len()), 0);
    v
}

fn align8(n: usize) -> usize {
    (n + 7) & !7
}

fn names_len(d: &Dentry) -> usize {
    let mut n = DENTRY_FIXED;
    if !d.name.is_empty() {
        n += d.name.len() * 2 + 2;
    }
    if !d.short_name.is_empty() {
        n += d.short_name.len() * 2 + 2;
    }
    n
}

fn stream_entry_len(name: &[u16]) -> usize {
    align8(38 + if name.is_empty() { 0 } else { name.len() * 2 + 2 })
}

fn dentry_size(d: &Dentry, ino: &Inode) -> usize {
    let mut n = align8(names_len(d)) + ino.tagged.raw.len();
    if ino.has_extra_streams() {
        if ino.is_reparse() {
            n += stream_entry_len(&[]);
        }
        n += stream_entry_len(&[]);
        for s in &ino.named_streams {
            n += stream_entry_len(&s.name);
        }
    }
    n
}

fn write_stream_entry(out: &mut Vec<u8>, name: &[u16], hash: &Sha1) {
    let len = stream_entry_len(name);
    let start = out.len();
    out.extend_from_slice(&(len as u64).to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    out.extend_from_slice(hash);
    out.extend_from_slice(&((name.len() * 2) as u16).to_le_bytes());
    if !name.is_empty() {
        for u in name.iter().chain(&[0]) {
            out.extend_from_slice(&u.to_le_bytes());
        }
    }
    out.resize(start + len, 0);
}

fn write_dentry(out: &mut Vec<u8>, d: &Dentry, ino: &Inode, subdir: u64, group: u64) {
    let start = out.len();
    let length = align8(names_len(d)) + ino.tagged.raw.len();
    out.extend_from_slice(&(length as u64).to_le_bytes());
    out.extend_from_slice(&ino.attributes.to_le_bytes());
    out.extend_from_slice(&ino.security_id.to_le_bytes());
    out.extend_from_slice(&subdir.to_le_bytes());
    for v in ino.reserved {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&ino.creation_time.to_le_bytes());
    out.extend_from_slice(&ino.last_access_time.to_le_bytes());
    out.extend_from_slice(&ino.last_write_time.to_le_bytes());
    let default_hash = if ino.has_extra_streams() {
        ZERO_HASH
    } else {
        ino.data_hash
    };
    out.extend_from_slice(&default_hash);
    out.extend_from_slice(&ino.unknown_0x54.to_le_bytes());
    if ino.is_reparse() {
        out.extend_from_slice(&ino.reparse_tag.to_le_bytes());
        out.extend_from_slice(&ino.reparse_reserved.to_le_bytes());
        out.extend_from_slice(&ino.rp_flags.to_le_bytes());
    } else {
        out.extend_from_slice(&group.to_le_bytes());
    }
    let extra = if ino.has_extra_streams() {
        1 + ino.is_reparse() as usize + ino.named_streams.len()
    } else {
        0
    };
    out.extend_from_slice(&(extra as u16).to_le_bytes());
    out.extend_from_slice(&((d.short_name.len() * 2) as u16).to_le_bytes());
    out.extend_from_slice(&((d.name.len() * 2) as u16).to_le_bytes());
    for name in [&d.name, &d.short_name] {
        if !name.is_empty() {
            for u in name.iter().chain(&[0]) {
                out.extend_from_slice(&u.to_le_bytes());
            }
        }
    }
    out.resize(start + align8(names_len(d)), 0);
    out.extend_from_slice(&ino.tagged.raw);
    debug_assert_eq!(out.len(), start + length);
    if ino.has_extra_streams() {
        if ino.is_reparse() {
            write_stream_entry(out, &[], &ino.reparse_hash);
        }
        write_stream_entry(out, &[], &ino.data_hash);
        for s in &ino.named_streams {
            write_stream_entry(out, &s.name, &s.hash);
        }
    }
}

struct ParsedDentry {
    name: Vec<u16>,
    short_name: Vec<u16>,
    subdir_offset: u64,
    link_group: u64,
    inode: Inode,
    /// Offset just past this dentry and its extra stream entries.
    next: usize,
}

/// Bytes the name takes as UTF-8 (unpaired surrogates count as U+FFFD).
fn utf8_len(name: &[u16]) -> usize {
    char::decode_utf16(name.iter().copied())
        .map(|c| c.map_or(3, char::len_utf8))
        .sum()
}

fn utf16_at(buf: &[u8], off: usize, bytes: usize) -> Result<Vec<u16>> {
    let s = buf
        .get(off..off + bytes)
        .ok_or_else(|| super::error::WimError::Invalid("dentry name runs past its dentry".into()))?;
    Ok(s.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect())
}

/// Parses the dentry at `off`; `None` for an end-of-directory marker.
fn parse_dentry(buf: &[u8], off: usize) -> Result<Option<ParsedDentry>> {
    let le = Le(buf);
    let what = "dentry";
    let raw_len = le.u64(off, what)?;
    if raw_len <= 8 {
        return Ok(None);
    }
    let length = usize::try_from((raw_len + 7) & !7).unwrap_or(usize::MAX);
    if off.checked_add(length).is_none_or(|e| e > buf.len()) || length < DENTRY_FIXED {
        return invalid(format!("dentry at offset {off} has impossible length {raw_len}"));
    }
    let short_len = le.u16(off + 98, what)? as usize;
    let name_len = le.u16(off + 100, what)? as usize;
    if !name_len.is_multiple_of(2) || !short_len.is_multiple_of(2) {
        return invalid(format!("dentry at offset {off} has an odd name length"));
    }
    let mut p = off + DENTRY_FIXED;
    let name = if name_len > 0 {
        let n = utf16_at(buf, p, name_len)?;
        p += name_len + 2;
        n
    } else {
        Vec::new()
    };
    let short_name = if short_len > 0 {
        let n = utf16_at(buf, p, short_len)?;
        p += short_len + 2;
        n
    } else {
        Vec::new()
    };
    if p > off + length {
        return invalid(format!("dentry at offset {off} is shorter than its names"));
    }
    let tagged_start = align8(p).min(off + length);
    let attributes = le.u32(off + 8, what)?;
    let mut inode = Inode {
        attributes,
        security_id: le.u32(off + 12, what)? as i32,
        creation_time: le.u64(off + 40, what)?,
        last_access_time: le.u64(off + 48, what)?,
        last_write_time: le.u64(off + 56, what)?,
        unknown_0x54: le.u32(off + 84, what)?,
        reserved: [le.u64(off + 24, what)?, le.u64(off + 32, what)?],
        tagged: TaggedItems {
            raw: padded8(&buf[tagged_start..off + length]),
        },
        ..Inode::default()
    };
    let mut link_group = 0;
    if attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        inode.reparse_tag = le.u32(off + 88, what)?;
        inode.reparse_reserved = le.u16(off + 92, what)?;
        inode.rp_flags = le.u16(off + 94, what)?;
    } else {
        link_group = le.u64(off + 88, what)?;
    }
    let default_hash = le.sha1(off + 64, what)?;
    let extra = le.u16(off + 96, what)? as usize;
    // Extra stream entries follow the dentry.
    let mut q = off + length;
    let mut unnamed: Vec<Sha1> = Vec::new();
    if default_hash != ZERO_HASH {
        unnamed.push(default_hash);
    }
    for _ in 0..extra {
        let elen = le.u64(q, "stream entry")?;
        let elen = usize::try_from((elen + 7) & !7).unwrap_or(usize::MAX);
        if elen < 38 || q.checked_add(elen).is_none_or(|e| e > buf.len()) {
            return invalid(format!("stream entry at offset {q} has impossible length"));
        }
        let hash = le.sha1(q + 16, "stream entry")?;
        let nlen = le.u16(q + 36, "stream entry")? as usize;
        if !nlen.is_multiple_of(2) || 38 + nlen > elen {
            return invalid(format!("stream entry at offset {q} has a bad name length"));
        }
        if nlen == 0 {
            unnamed.push(hash);
        } else {
            inode.named_streams.push(NamedStream {
                name: utf16_at(buf, q + 38, nlen)?,
                hash,
            });
        }
        q += elen;
    }
    if default_hash == ZERO_HASH {
        unnamed.push(ZERO_HASH);
    }
    // Assign unnamed candidates: reparse data first (for reparse points), then contents.
    let (mut have_rp, mut have_data) = (false, false);
    for h in unnamed {
        if inode.is_reparse() && !have_rp {
            inode.reparse_hash = h;
            have_rp = true;
        } else if !have_data {
            inode.data_hash = h;
            have_data = true;
        }
    }
    Ok(Some(ParsedDentry {
        name,
        short_name,
        subdir_offset: le.u64(off + 16, what)?,
        link_group,
        inode,
        next: q,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tagged::UnixData;

    fn file(hash: u8) -> Inode {
        Inode {
            attributes: FILE_ATTRIBUTE_NORMAL,
            security_id: -1,
            data_hash: [hash; 20],
            // A captured file's identity key: kept through a rewrite.
            reserved: [u64::from(hash) + 100, 0x1234_5678_9ABC_DEF0],
            tagged: TaggedItems::build(
                Some(UnixData {
                    uid: 1000,
                    gid: 1000,
                    mode: 0o100640,
                    rdev: 0,
                }),
                &[],
            ),
            ..Inode::default()
        }
    }

    #[test]
    fn identity_comes_from_the_reserved_fields_or_the_old_tagged_item() {
        use crate::tagged::TAG_WIMGUARD_IDENTITY;
        let mut ino = file(1);
        ino.reserved = [0, 0];
        assert_eq!(ino.identity_key(), None, "wimlib's files have none");
        // WimGuard 0.1 wrote a tagged item: the next backup still trusts it.
        let old: Vec<u8> = [2049u64, 77, 5, 6].iter().flat_map(|v| v.to_le_bytes()).collect();
        ino.tagged.push(TAG_WIMGUARD_IDENTITY, &old);
        assert_eq!(ino.identity_key(), Some(IdentityKey { ino: 77, ctime: 5 }));
        // The reserved fields win when both are there.
        ino.reserved = [1, 2];
        assert_eq!(ino.identity_key().map(|k| k.to_reserved()), Some([1, 2]));
    }

    #[test]
    fn roundtrip_tree_with_links_and_symlink() {
        let mut root = Inode {
            attributes: FILE_ATTRIBUTE_DIRECTORY,
            security_id: -1,
            ..Inode::default()
        };
        root.tagged = TaggedItems::build(
            Some(UnixData {
                uid: 0,
                gid: 0,
                mode: 0o40755,
                rdev: 0,
            }),
            &[],
        );
        let mut t = ImageTree::new(root.clone());
        let f = t.add_inode(file(1));
        t.add_dentry(0, "hello.txt".encode_utf16().collect(), f);
        t.add_dentry(0, "Link".encode_utf16().collect(), f);
        let d = t.add_inode(root.clone());
        let dd = t.add_dentry(0, "dir".encode_utf16().collect(), d);
        let e = t.add_inode(root);
        t.add_dentry(dd, "empty".encode_utf16().collect(), e);
        let s = t.add_inode(Inode {
            attributes: FILE_ATTRIBUTE_REPARSE_POINT,
            security_id: -1,
            reparse_tag: 0xA000_000C,
            rp_flags: 1,
            reparse_hash: [7; 20],
            ..Inode::default()
        });
        t.add_dentry(dd, "sym".encode_utf16().collect(), s);
        let bytes = t.serialize();
        let back = ImageTree::parse(&bytes).unwrap();
        assert_eq!(back.serialize(), bytes);
        assert_eq!(back.inodes.len(), 5);
        let h = back.lookup("/hello.txt").unwrap();
        let l = back.lookup("/Link").unwrap();
        assert_eq!(back.dentries[h].inode, back.dentries[l].inode);
        assert_eq!(back.inode_of(h).reserved, [101, 0x1234_5678_9ABC_DEF0]);
        assert!(back.inode_of(h).identity_key().is_some());
        let sym = back.inode_of(back.lookup("/dir/sym").unwrap());
        assert_eq!(sym.reparse_hash, [7; 20]);
        assert_eq!(sym.data_hash, ZERO_HASH);
        assert!(back.inode_of(back.lookup("/dir/empty").unwrap()).is_dir());
    }

    #[test]
    fn hello_dentry_is_152_bytes() {
        let mut t = ImageTree::new(Inode {
            attributes: FILE_ATTRIBUTE_DIRECTORY,
            security_id: -1,
            ..Inode::default()
        });
        let f = t.add_inode(file(1));
        t.add_dentry(0, "hello.txt".encode_utf16().collect(), f);
        assert_eq!(dentry_size(&t.dentries[1], &t.inodes[f]), 152);
    }

    #[test]
    fn cyclic_lists_are_refused() {
        let mut t = ImageTree::new(Inode {
            attributes: FILE_ATTRIBUTE_DIRECTORY,
            security_id: -1,
            ..Inode::default()
        });
        let d = t.add_inode(Inode {
            attributes: FILE_ATTRIBUTE_DIRECTORY,
            security_id: -1,
            ..Inode::default()
        });
        t.add_dentry(0, "d".encode_utf16().collect(), d);
        let mut bytes = t.serialize();
        // Point the subdirectory back at the root's list.
        let root_list = u64::from_le_bytes(bytes[8 + 16..8 + 24].try_into().unwrap());
        let child = root_list as usize;
        bytes[child + 16..child + 24].copy_from_slice(&root_list.to_le_bytes());
        assert!(ImageTree::parse(&bytes).is_err());
    }
}

#[cfg(test)]
mod hostile_tests {
    use super::*;

    fn dir() -> Inode {
        Inode {
            attributes: FILE_ATTRIBUTE_DIRECTORY,
            security_id: -1,
            ..Inode::default()
        }
    }

    /// A symlink (or any non-directory) listing children must not get them:
    /// extraction would otherwise create files "below" a link.
    #[test]
    fn children_of_a_reparse_point_are_ignored() {
        let mut t = ImageTree::new(dir());
        let d = t.add_inode(dir());
        let evil = t.add_dentry(0, "evil".encode_utf16().collect(), d);
        let f = t.add_inode(Inode {
            attributes: FILE_ATTRIBUTE_NORMAL,
            security_id: -1,
            ..Inode::default()
        });
        t.add_dentry(evil, "x".encode_utf16().collect(), f);
        let mut bytes = t.serialize();
        // Turn "evil" into a symlink to a directory while keeping its child list.
        let root_list = u64::from_le_bytes(bytes[8 + 16..8 + 24].try_into().unwrap()) as usize;
        let attrs = (FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_DIRECTORY).to_le_bytes();
        bytes[root_list + 8..root_list + 12].copy_from_slice(&attrs);
        let back = ImageTree::parse(&bytes).unwrap();
        let e = back.lookup("/evil").unwrap();
        assert!(back.inode_of(e).is_reparse());
        assert!(back.dentries[e].children.is_empty());
        assert!(back.lookup("/evil/x").is_none());
    }

    /// Names wimlib ignores (`.`, `..`, embedded NUL, duplicates) are dropped.
    #[test]
    fn dot_names_nul_names_and_duplicates_are_dropped() {
        let mut t = ImageTree::new(dir());
        for name in [".", "..", "a\0b", "dup", "dup", "ok"] {
            let i = t.add_inode(Inode {
                attributes: FILE_ATTRIBUTE_NORMAL,
                security_id: -1,
                ..Inode::default()
            });
            t.add_dentry(0, name.encode_utf16().collect(), i);
        }
        let back = ImageTree::parse(&t.serialize()).unwrap();
        let names: Vec<String> = back.dentries[0]
            .children
            .iter()
            .map(|&c| String::from_utf16_lossy(&back.dentries[c].name))
            .collect();
        assert_eq!(names, vec!["dup", "ok"]);
    }

    /// Truncations and bit flips anywhere in a metadata resource end in an
    /// error or a tree, never a panic.
    #[test]
    fn truncated_and_flipped_resources_never_panic() {
        let mut t = ImageTree::new(dir());
        let d = t.add_inode(dir());
        let sub = t.add_dentry(0, "sub".encode_utf16().collect(), d);
        for i in 0..5 {
            let f = t.add_inode(Inode {
                attributes: FILE_ATTRIBUTE_NORMAL,
                security_id: -1,
                data_hash: [i; 20],
                ..Inode::default()
            });
            t.add_dentry(sub, format!("f{i}").encode_utf16().collect(), f);
        }
        let bytes = t.serialize();
        for cut in 0..bytes.len() {
            let _ = ImageTree::parse(&bytes[..cut]);
        }
        for pos in 0..bytes.len() {
            for bit in [0x01u8, 0x10, 0x80] {
                let mut b = bytes.clone();
                b[pos] ^= bit;
                let _ = ImageTree::parse(&b);
            }
        }
    }
}
