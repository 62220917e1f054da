//! Tagged items: the typed extra data after a dentry's names.
//!
//! Each item is `tag (u32), data length (u32), data`, padded to 8 bytes.
//! wimlib stores Linux metadata here: the UNIX data item (uid, gid, mode,
//! rdev) and extended attributes. Unknown items are kept byte for byte.

use super::error::{invalid, Result};
use super::identity::IdentityKey;

/// Windows NTFS object id; opaque, preserved.
pub const TAG_OBJECT_ID: u32 = 0x0000_0001;
/// Extended attributes (Windows EAs; Linux xattrs as wimlib stores them).
pub const TAG_XATTRS: u32 = 0x0000_0002;
/// wimlib's UNIX data: uid, gid, mode, rdev (16 bytes).
pub const TAG_UNIX_DATA: u32 = 0x337D_D873;
/// wimlib 1.11–1.12 Linux xattrs (read only).
pub const TAG_OLD_XATTRS: u32 = 0x337D_D874;
/// WimGuard 0.1's file identity (device, inode, ctime, size; 32 bytes).
/// Read from older archives only: the identity now lives in the dentry's
/// reserved fields (see `identity.rs`). Readers that do not know the tag
/// skip it (wimlib does).
pub const TAG_WIMGUARD_IDENTITY: u32 = 0x5747_4901;

/// Ownership, permissions and device number of a file (wimlib's UNIX data).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnixData {
    pub uid: u32,
    pub gid: u32,
    /// Full st_mode including the file-type bits.
    pub mode: u32,
    /// Low 32 bits of st_rdev (glibc encoding); 0 for non-devices.
    pub rdev: u32,
}

/// One extended attribute: full name (`user.foo`) and value.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// The raw tagged-item region of an inode, with typed accessors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaggedItems {
    /// Items as stored: each one 8-byte aligned and padded.
    pub raw: Vec<u8>,
}

impl TaggedItems {
    /// Iterates over (tag, data) of well-formed items; stops at the first
    /// item that does not fit (wimlib ignores trailing garbage the same way).
    pub fn iter(&self) -> impl Iterator<Item = (u32, &[u8])> {
        let raw = &self.raw;
        let mut off = 0usize;
        std::iter::from_fn(move || {
            if off + 8 > raw.len() {
                return None;
            }
            let tag = u32::from_le_bytes(raw[off..off + 4].try_into().unwrap());
            let len = u32::from_le_bytes(raw[off + 4..off + 8].try_into().unwrap()) as usize;
            let data = raw.get(off + 8..off + 8 + len)?;
            off = (off + 8 + len + 7) & !7;
            Some((tag, data))
        })
    }

    fn find(&self, tag: u32, min_len: usize) -> Option<&[u8]> {
        self.iter()
            .find(|(t, d)| *t == tag && d.len() >= min_len)
            .map(|(_, d)| d)
    }

    pub fn unix_data(&self) -> Option<UnixData> {
        let d = self.find(TAG_UNIX_DATA, 16)?;
        let f = |i: usize| u32::from_le_bytes(d[i..i + 4].try_into().unwrap());
        Some(UnixData {
            uid: f(0),
            gid: f(4),
            mode: f(8),
            rdev: f(12),
        })
    }

    /// The identity in the item of archives written by WimGuard 0.1
    /// (device, inode, ctime, size: only inode and ctime are compared).
    pub fn legacy_identity(&self) -> Option<IdentityKey> {
        let d = self.find(TAG_WIMGUARD_IDENTITY, 32)?;
        let f = |i: usize| u64::from_le_bytes(d[i..i + 8].try_into().unwrap());
        Some(IdentityKey {
            ino: f(8),
            ctime: f(16),
        })
    }

    /// Extended attributes, from the current format or the old wimlib one.
    pub fn xattrs(&self) -> Result<Vec<Xattr>> {
        if let Some(d) = self.find(TAG_XATTRS, 0) {
            return parse_xattrs(d);
        }
        if let Some(d) = self.find(TAG_OLD_XATTRS, 0) {
            return parse_old_xattrs(d);
        }
        Ok(Vec::new())
    }

    /// Items other than the ones we regenerate, kept byte for byte.
    fn others(&self) -> Vec<(u32, Vec<u8>)> {
        self.iter()
            .filter(|(t, _)| ![TAG_UNIX_DATA, TAG_XATTRS, TAG_OLD_XATTRS, TAG_WIMGUARD_IDENTITY].contains(t))
            .map(|(t, d)| (t, d.to_vec()))
            .collect()
    }

    /// Builds the region for a captured Linux file.
    pub fn build(unix: Option<UnixData>, xattrs: &[Xattr]) -> TaggedItems {
        let mut t = TaggedItems::default();
        if let Some(u) = unix {
            let mut d = Vec::with_capacity(16);
            for v in [u.uid, u.gid, u.mode, u.rdev] {
                d.extend_from_slice(&v.to_le_bytes());
            }
            t.push(TAG_UNIX_DATA, &d);
        }
        if !xattrs.is_empty() {
            t.push(TAG_XATTRS, &encode_xattrs(xattrs));
        }
        t
    }

    /// Same region with our regenerated items replaced and others preserved.
    pub fn rebuilt_with(&self, unix: Option<UnixData>, xattrs: &[Xattr]) -> TaggedItems {
        let mut t = TaggedItems::build(unix, xattrs);
        for (tag, d) in self.others() {
            t.push(tag, &d);
        }
        t
    }

    pub fn push(&mut self, tag: u32, data: &[u8]) {
        self.raw.extend_from_slice(&tag.to_le_bytes());
        self.raw.extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.raw.extend_from_slice(data);
        while !self.raw.len().is_multiple_of(8) {
            self.raw.push(0);
        }
    }
}

/// Longest xattr name and value wimlib (and the Windows EA format) can hold.
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_VALUE_MAX: usize = 65535;

fn encode_xattrs(xattrs: &[Xattr]) -> Vec<u8> {
    let mut d = Vec::new();
    for (name, value) in xattrs {
        d.extend_from_slice(&(value.len() as u16).to_le_bytes());
        d.push(name.len() as u8);
        d.push(0);
        d.extend_from_slice(name);
        d.push(0);
        d.extend_from_slice(value);
    }
    d
}

fn parse_xattrs(d: &[u8]) -> Result<Vec<Xattr>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < d.len() {
        if off + 4 > d.len() {
            return invalid("extended attribute entry is truncated");
        }
        let vlen = u16::from_le_bytes([d[off], d[off + 1]]) as usize;
        let nlen = d[off + 2] as usize;
        let name_start = off + 4;
        let value_start = name_start + nlen + 1;
        let end = value_start + vlen;
        if nlen == 0 || end > d.len() || d[name_start + nlen] != 0 {
            return invalid("extended attribute entry is corrupt");
        }
        let name = &d[name_start..name_start + nlen];
        if name.contains(&0) {
            return invalid("extended attribute name contains NUL");
        }
        out.push((name.to_vec(), d[value_start..end].to_vec()));
        off = end;
    }
    Ok(out)
}

fn parse_old_xattrs(d: &[u8]) -> Result<Vec<Xattr>> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 8 <= d.len() {
        let nlen = u16::from_le_bytes([d[off], d[off + 1]]) as usize;
        let vlen = u32::from_le_bytes(d[off + 4..off + 8].try_into().unwrap()) as usize;
        let name_end = off + 8 + nlen;
        let end = name_end.checked_add(vlen).filter(|&e| e <= d.len());
        let Some(end) = end else {
            return invalid("old-format extended attribute is truncated");
        };
        if nlen == 0 {
            return invalid("old-format extended attribute has an empty name");
        }
        out.push((d[off + 8..name_end].to_vec(), d[name_end..end].to_vec()));
        off = (end + 3) & !3;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_layout_matches_wimlib() {
        let t = TaggedItems::build(None, &[(b"user.test".to_vec(), b"hello".to_vec())]);
        assert_eq!(&t.raw[..8], &[2, 0, 0, 0, 0x13, 0, 0, 0]);
        assert_eq!(&t.raw[8..12], &[5, 0, 9, 0]);
        assert_eq!(t.raw.len(), 32);
        assert_eq!(t.xattrs().unwrap(), vec![(b"user.test".to_vec(), b"hello".to_vec())]);
    }

    #[test]
    fn unix_data_and_preserved_items() {
        let mut t = TaggedItems::build(
            Some(UnixData {
                uid: 1,
                gid: 2,
                mode: 0o100644,
                rdev: 0,
            }),
            &[],
        );
        t.push(TAG_OBJECT_ID, &[9; 16]);
        // WimGuard 0.1's identity item: read, then dropped on a rebuild.
        let old: Vec<u8> = [7u64, 8, 9, 10].iter().flat_map(|v| v.to_le_bytes()).collect();
        t.push(TAG_WIMGUARD_IDENTITY, &old);
        assert_eq!(t.legacy_identity(), Some(IdentityKey { ino: 8, ctime: 9 }));
        let r = t.rebuilt_with(
            Some(UnixData {
                uid: 5,
                gid: 6,
                mode: 0o100600,
                rdev: 0,
            }),
            &[],
        );
        assert_eq!(r.unix_data().unwrap().uid, 5);
        assert_eq!(r.legacy_identity(), None);
        assert!(r.iter().any(|(tag, d)| tag == TAG_OBJECT_ID && d == [9; 16]));
    }
}
