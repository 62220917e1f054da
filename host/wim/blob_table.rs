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
    pub blobs: BlobIndex,
}

/// File-data blob entries, unique by hash, found by hash.
///
/// Every file of a tree being captured or extracted has one, so their size
/// is a large part of a small tree's memory: the entries sit in one vector
/// and the hash table holds only their 4-byte positions. A map from hash to
/// entry took 88 bytes a bucket (a quarter to half of them empty) and, while
/// it grew, held the old and the new buckets at once. The table is hashed
/// with random keys over all 20 bytes ([`BlobKeys`]), not with the SHA-1's
/// own first bytes: a hostile archive could list many hashes that start
/// alike.
#[derive(Default, Clone)]
pub struct BlobIndex {
    entries: Vec<BlobEntry>,
    positions: hashbrown::HashTable<u32>,
    seed: BlobKeys,
}

/// Random keys of a [`BlobIndex`]'s hash: two folded multiplies over the
/// SHA-1's three words (as foldhash does). SipHash, which the standard
/// library's maps use, was 2.5% of an unchanged re-backup's time.
#[derive(Clone)]
struct BlobKeys([u64; 3]);

impl Default for BlobKeys {
    fn default() -> Self {
        let seed = std::hash::RandomState::new();
        BlobKeys([1u8, 2, 3].map(|i| std::hash::BuildHasher::hash_one(&seed, i)))
    }
}

/// The high and low halves of a 128-bit product, folded together.
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

impl std::fmt::Debug for BlobIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter()).finish()
    }
}

impl BlobIndex {
    fn hash_of(keys: &BlobKeys, h: &Sha1) -> u64 {
        let word = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let tail = u64::from(u32::from_le_bytes(h[16..20].try_into().expect("4 bytes")));
        let x = folded_multiply(word(0) ^ keys.0[0], word(8) ^ keys.0[1]);
        folded_multiply(x ^ tail ^ keys.0[2], 0x9E37_79B9_7F4A_7C15)
    }

    fn position(&self, h: &Sha1) -> Option<usize> {
        let entries = &self.entries;
        self.positions
            .find(Self::hash_of(&self.seed, h), |&i| entries[i as usize].hash == *h)
            .map(|&i| i as usize)
    }

    /// How many entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains_key(&self, h: &Sha1) -> bool {
        self.position(h).is_some()
    }

    pub fn get(&self, h: &Sha1) -> Option<&BlobEntry> {
        self.position(h).map(|i| &self.entries[i])
    }

    pub fn get_mut(&mut self, h: &Sha1) -> Option<&mut BlobEntry> {
        self.position(h).map(|i| &mut self.entries[i])
    }

    /// Adds `entry` under its hash, replacing (and returning) the entry
    /// that hash had.
    pub fn insert(&mut self, entry: BlobEntry) -> Option<BlobEntry> {
        if let Some(i) = self.position(&entry.hash) {
            return Some(std::mem::replace(&mut self.entries[i], entry));
        }
        let at = u32::try_from(self.entries.len()).expect("fewer than 2^32 blobs");
        let (entries, keys) = (&self.entries, &self.seed);
        self.positions
            .insert_unique(Self::hash_of(keys, &entry.hash), at, |&i| {
                Self::hash_of(keys, &entries[i as usize].hash)
            });
        self.entries.push(entry);
        None
    }

    /// Removes the entry of hash `h`. The last entry takes its place, so
    /// [`values`](Self::values) changes order.
    pub fn remove(&mut self, h: &Sha1) -> Option<BlobEntry> {
        let hh = Self::hash_of(&self.seed, h);
        let entries = &self.entries;
        let at = match self.positions.find_entry(hh, |&i| entries[i as usize].hash == *h) {
            Ok(found) => found.remove().0 as usize,
            Err(_) => return None,
        };
        let last = self.entries.len() - 1;
        if at != last {
            // The last entry moves to `at`: its position changes with it.
            let moved = Self::hash_of(&self.seed, &self.entries[last].hash);
            let entries = &self.entries;
            if let Some(p) = self
                .positions
                .find_mut(moved, |&i| entries[i as usize].hash == entries[last].hash)
            {
                *p = at as u32;
            }
        }
        Some(self.entries.swap_remove(at))
    }

    /// The entries, in the order they were added (until a removal).
    pub fn values(&self) -> std::slice::Iter<'_, BlobEntry> {
        self.entries.iter()
    }

    /// The hashes, in the order of [`values`](Self::values).
    pub fn keys(&self) -> impl Iterator<Item = &Sha1> {
        self.entries.iter().map(|e| &e.hash)
    }

    /// Room for `more` entries without growing.
    pub fn reserve(&mut self, more: usize) {
        self.entries.reserve(more);
        let (entries, keys) = (&self.entries, &self.seed);
        self.positions
            .reserve(more, |&i| Self::hash_of(keys, &entries[i as usize].hash));
    }
}

impl FromIterator<BlobEntry> for BlobIndex {
    /// Later entries of a hash replace earlier ones.
    fn from_iter<I: IntoIterator<Item = BlobEntry>>(iter: I) -> Self {
        let mut index = BlobIndex::default();
        for e in iter {
            index.insert(e);
        }
        index
    }
}

impl BlobTable {
    /// Parses the raw table, applying wimlib's reading rules: zero hashes,
    /// empty blobs, duplicates and unused metadata entries are skipped.
    pub fn parse(raw: &[u8], image_count: u32, file_size: u64, solid_version: bool) -> Result<BlobTable> {
        let mut table = BlobTable::default();
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
            entry
                .reshdr
                .end_within(file_size, format_args!("blob table entry {i}"))?;
            if entry.is_metadata() {
                if table.metadata.len() < image_count as usize {
                    table.metadata.push(entry);
                }
            } else if !table.blobs.contains_key(&entry.hash) {
                // The first entry of a hash wins, as in wimlib.
                table.blobs.insert(entry);
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
    pub fn to_bytes<'a>(metadata: &[BlobEntry], blobs: impl ExactSizeIterator<Item = &'a BlobEntry>) -> Vec<u8> {
        let mut out = Vec::with_capacity((metadata.len() + blobs.len()) * BLOB_ENTRY_SIZE);
        for e in metadata {
            e.write(&mut out);
        }
        let mut sorted: Vec<&BlobEntry> = blobs.collect();
        sorted.sort_by_key(|e| e.reshdr.offset);
        for e in sorted {
            e.write(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u32, offset: u64) -> BlobEntry {
        let mut hash = [0u8; 20];
        hash[..4].copy_from_slice(&n.to_le_bytes());
        hash[19] = 1;
        BlobEntry {
            reshdr: ResHdr {
                size_in_wim: 10,
                flags: 0,
                offset,
                original_size: 10,
            },
            part_number: 1,
            refcount: n,
            hash,
        }
    }

    #[test]
    fn the_index_finds_every_entry_after_removals_and_replacements() {
        let mut index = BlobIndex::default();
        for n in 0..1000 {
            assert!(index.insert(entry(n, u64::from(n) * 10)).is_none());
        }
        // Removing the last, the first and entries in between moves the last
        // entry into each hole; every survivor must still be found.
        let gone: Vec<u32> = (0..1000).filter(|n| n % 3 == 0 || *n == 999).collect();
        for &n in gone.iter().rev() {
            assert_eq!(index.remove(&entry(n, 0).hash).map(|e| e.refcount), Some(n));
        }
        assert!(index.remove(&entry(0, 0).hash).is_none(), "removed twice");
        for n in 0..1000 {
            let found = index.get(&entry(n, 0).hash).map(|e| e.refcount);
            assert_eq!(found, (!gone.contains(&n)).then_some(n), "entry {n}");
        }
        assert_eq!(index.len(), 1000 - gone.len());
        assert_eq!(index.values().count(), index.len());
        assert!(index.keys().all(|h| index.contains_key(h)));

        // Insert replaces the entry of the same hash and returns the old one.
        let old = index.insert(entry(1, 12345)).expect("1 was there");
        assert_eq!(old.reshdr.offset, 10);
        assert_eq!(index.get(&entry(1, 0).hash).map(|e| e.reshdr.offset), Some(12345));
        assert_eq!(index.len(), 1000 - gone.len());
        index.get_mut(&entry(2, 0).hash).expect("2 is there").refcount = 77;
        assert_eq!(index.get(&entry(2, 0).hash).map(|e| e.refcount), Some(77));
    }

    /// A hostile table may list hashes alike but for a few bytes: they must
    /// still spread over the table (else every lookup walks them all).
    #[test]
    fn hashes_alike_but_for_one_word_spread_over_the_table() {
        let keys = BlobKeys::default();
        for varied in [0usize, 8, 16] {
            let mut seen = std::collections::HashSet::new();
            for n in 0u32..10_000 {
                let mut h = [0x5au8; 20];
                h[varied..varied + 4].copy_from_slice(&n.to_le_bytes());
                // hashbrown picks buckets with the low bits, control bytes
                // with the top 7: both must vary.
                seen.insert((
                    BlobIndex::hash_of(&keys, &h) & 0xFFFF,
                    BlobIndex::hash_of(&keys, &h) >> 57,
                ));
            }
            assert!(seen.len() > 9_000, "word at {varied}: {} distinct of 10000", seen.len());
        }
    }

    #[test]
    fn parsing_keeps_the_first_entry_of_a_duplicated_hash_and_writes_by_offset() {
        let (a, b, dup) = (entry(1, 200), entry(2, 100), entry(1, 300));
        let mut raw = Vec::new();
        for e in [&a, &b, &dup] {
            e.write(&mut raw);
        }
        let table = BlobTable::parse(&raw, 0, 1000, false).expect("valid table");
        assert_eq!(table.blobs.len(), 2);
        assert_eq!(table.blobs.get(&a.hash).map(|e| e.reshdr.offset), Some(200));
        let out = BlobTable::to_bytes(&[], table.blobs.values());
        let mut want = Vec::new();
        b.write(&mut want);
        a.write(&mut want);
        assert_eq!(out, want);
    }
}
