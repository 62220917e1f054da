//! The blob table ("lookup table"): one 50-byte entry per stored blob.
//!
//! Entry layout: reshdr (24), part number (2), reference count (4), SHA-1 (20).
//! Metadata resources come first, in image order: that order is the only link
//! between an image index and its metadata resource.

use super::error::{invalid, Le, Result, WimError};
use super::reshdr::{ResHdr, RESHDR_FLAG_COMPRESSED, RESHDR_FLAG_METADATA, RESHDR_FLAG_SOLID};

pub const BLOB_ENTRY_SIZE: usize = 50;
pub type Sha1 = [u8; 20];
pub const ZERO_HASH: Sha1 = [0; 20];

/// One stored blob: where it is, how often images refer to it, what it hashes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    /// Locator of the resource holding the blob.
    pub reshdr: ResHdr,
    /// Part of a split WIM holding it; always 1 here.
    pub part_number: u16,
    /// References from all images, counted per name (a hard-linked file counts once per link).
    pub refcount: u32,
    /// SHA-1 of the uncompressed blob.
    pub hash: Sha1,
}

impl BlobEntry {
    pub fn is_metadata(&self) -> bool {
        self.reshdr.flags & RESHDR_FLAG_METADATA != 0
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        self.reshdr.write(out);
        out.extend_from_slice(&self.part_number.to_le_bytes());
        out.extend_from_slice(&self.refcount.to_le_bytes());
        out.extend_from_slice(&self.hash);
    }
}

/// The blob table as read: metadata entries (image order) and file blobs.
#[derive(Debug, Default, Clone)]
pub struct BlobTable {
    /// One per image, in image order.
    pub metadata: Vec<BlobEntry>,
    /// File-data blobs, unique by hash.
    pub blobs: Vec<BlobEntry>,
}

impl BlobTable {
    /// Parses the raw table, applying wimlib's reading rules: zero hashes,
    /// empty blobs, duplicates and unused metadata entries are skipped.
    pub fn parse(raw: &[u8], image_count: u32, file_size: u64, solid_version: bool) -> Result<BlobTable> {
        let mut table = BlobTable::default();
        let mut seen = std::collections::HashSet::new();
        for (i, e) in raw.chunks_exact(BLOB_ENTRY_SIZE).enumerate() {
            let le = Le(e);
            let what = "blob table entry";
            let entry = BlobEntry {
                reshdr: ResHdr::parse(&e[0..24], what)?,
                part_number: le.u16(24, what)?,
                refcount: le.u32(26, what)?,
                hash: le.sha1(30, what)?,
            };
            let flags = entry.reshdr.flags;
            if flags & RESHDR_FLAG_SOLID != 0 && solid_version {
                return Err(WimError::Unsupported(
                        "solid/LZMS resources (wimlib --solid or DISM ESD); convert with `wimlib-imagex export SRC all DEST --compress=lzx`"
                            .into(),
                    ));
            }
            // wimlib ignores the SOLID flag in ordinary (version 0x10D00) files.
            if entry.part_number != 1 {
                continue;
            }
            if entry.is_metadata() {
                if entry.refcount == 0 {
                    continue;
                }
                if entry.refcount != 1 {
                    return invalid(format!(
                        "metadata resource (entry {i}) has reference count {} instead of 1",
                        entry.refcount
                    ));
                }
            } else if entry.hash == ZERO_HASH || entry.reshdr.original_size == 0 {
                continue;
            }
            if flags & RESHDR_FLAG_COMPRESSED == 0 && entry.reshdr.size_in_wim != entry.reshdr.original_size {
                return invalid(format!(
                    "uncompressed blob (entry {i}) has stored size {} but original size {}",
                    entry.reshdr.size_in_wim, entry.reshdr.original_size
                ));
            }
            entry.reshdr.end_within(file_size, &format!("blob table entry {i}"))?;
            if entry.is_metadata() {
                if table.metadata.len() < image_count as usize {
                    table.metadata.push(entry);
                }
            } else if seen.insert(entry.hash) {
                table.blobs.push(entry);
            }
        }
        if table.metadata.len() < image_count as usize {
            return invalid(format!(
                "header says {} images but the blob table holds {} metadata resources",
                image_count,
                table.metadata.len()
            ));
        }
        Ok(table)
    }

    /// Serializes metadata entries first (image order), then blobs by offset.
    pub fn to_bytes(metadata: &[BlobEntry], blobs: &[BlobEntry]) -> Vec<u8> {
        let mut out = Vec::with_capacity((metadata.len() + blobs.len()) * BLOB_ENTRY_SIZE);
        for e in metadata {
            e.write(&mut out);
        }
        let mut sorted: Vec<&BlobEntry> = blobs.iter().collect();
        sorted.sort_by_key(|e| e.reshdr.offset);
        for e in sorted {
            e.write(&mut out);
        }
        out
    }
}
