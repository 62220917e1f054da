//! What loading an archive's structures costs in memory, estimated from
//! what the file holds, before anything is loaded: the daemon's memory
//! budget reserves these amounts (see the host's `budget` module).

use crate::blob_table::BlobEntry;
use crate::WimArchive;

/// Peak bytes in memory per byte of an uncompressed metadata resource while
/// it is parsed: the raw buffer (1x) plus the tree at its largest. Measured
/// by `cargo run --release --example tree_memory` on trees of minimal
/// dentries, the worst case: parsing peaks at 3.1x the resource on top of
/// the buffer (an in-memory dentry and inode are about three times a
/// 120-byte on-disk dentry), so 5 leaves a margin.
pub const TREE_BYTES_PER_METADATA_BYTE: u64 = 5;
/// Bytes one blob-table entry costs in memory once loaded (a 50-byte entry
/// on disk becomes a hash-map slot of key, entry and control bytes).
pub const BYTES_PER_BLOB_ENTRY: u64 = 112;
/// Estimated peak bytes of loading image `index` of `arch`.
pub fn image_cost(arch: &WimArchive, index: u32) -> u64 {
    metadata_cost(&arch.metadata, index)
}

/// Estimated peak bytes of parsing image `index` (1-based) whose metadata
/// resource is `metadata[index - 1]`.
pub fn metadata_cost(metadata: &[BlobEntry], index: u32) -> u64 {
    metadata
        .get((index as usize).wrapping_sub(1))
        .map(|m| m.reshdr.original_size.saturating_mul(TREE_BYTES_PER_METADATA_BYTE))
        .unwrap_or(0)
}

/// Bytes the archive's loaded blob table holds.
pub fn table_cost(arch: &WimArchive) -> u64 {
    entries_cost(arch.blob_entries() + arch.metadata.len() as u64)
}

/// Bytes `entries` loaded blob-table entries hold.
pub fn entries_cost(entries: u64) -> u64 {
    entries.saturating_mul(BYTES_PER_BLOB_ENTRY)
}
