//! The optional integrity table: SHA-1 of each 10 MiB chunk of the file
//! from the end of the header to the end of the blob table.
//!
//! Layout: total size (u32) = 12 + 20n, entry count n (u32), chunk size
//! (u32), then n SHA-1 values. Stored uncompressed after the XML.

use sha1::{Digest, Sha1};

use super::error::{invalid, Le, Result, WimError};
use super::header::HEADER_SIZE;
use super::storage::ReadAt;

/// Chunk size wimlib writes.
pub const INTEGRITY_CHUNK: u32 = 10 << 20;

/// SHA-1 of each `chunk`-sized piece of [start, end), reading at most 4 MiB at a time.
fn hash_range(file: &dyn ReadAt, start: u64, end: u64, chunk: u32) -> Result<Vec<[u8; 20]>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; (chunk as usize).min(4 << 20)];
    let mut pos = start;
    while pos < end {
        let chunk_end = (pos + chunk as u64).min(end);
        let mut h = Sha1::new();
        while pos < chunk_end {
            let n = (chunk_end - pos).min(buf.len() as u64) as usize;
            file.read_exact_at(&mut buf[..n], pos)?;
            h.update(&buf[..n]);
            pos += n as u64;
        }
        out.push(h.finalize().into());
    }
    Ok(out)
}

/// Hashes of an existing table that a rewrite may reuse: those of chunks
/// lying entirely inside the range the old table covered, which an append
/// never touches.
#[derive(Debug, Clone)]
pub struct Reusable {
    pub chunk_size: u32,
    pub hashes: Vec<[u8; 20]>,
    /// End of the range the old table covered (the old blob table's end).
    pub covered_end: u64,
}

impl Reusable {
    /// Parses an old table; `None` when it is unusable (then everything is re-hashed).
    pub fn parse(table: &[u8], covered_end: u64) -> Option<Reusable> {
        let le = Le(table);
        let n = le.u32(4, "integrity table").ok()? as usize;
        let chunk_size = le.u32(8, "integrity table").ok()?;
        // wimlib keeps an old chunk size between 4 KiB and 128 MiB.
        if !(4096..=(128 << 20)).contains(&chunk_size) || table.len() != 12 + 20 * n {
            return None;
        }
        let hashes = table[12..].chunks_exact(20).map(|c| c.try_into().unwrap()).collect();
        Some(Reusable {
            chunk_size,
            hashes,
            covered_end,
        })
    }
}

/// Builds the table for the file's bytes [208, blob_table_end), reusing the
/// hashes of unchanged chunks when an old table is given.
pub fn build(file: &dyn ReadAt, blob_table_end: u64, old: Option<&Reusable>) -> Result<Vec<u8>> {
    let chunk = old.map_or(INTEGRITY_CHUNK, |o| o.chunk_size);
    let start = HEADER_SIZE as u64;
    let n = blob_table_end.saturating_sub(start).div_ceil(chunk as u64) as usize;
    let mut hashes = Vec::with_capacity(n);
    for i in 0..n {
        let lo = start + i as u64 * chunk as u64;
        let hi = (lo + chunk as u64).min(blob_table_end);
        let reused = old.and_then(|o| {
            (hi <= o.covered_end && hi - lo == chunk as u64)
                .then(|| o.hashes.get(i).copied())
                .flatten()
        });
        match reused {
            Some(h) => hashes.push(h),
            None => hashes.extend(hash_range(file, lo, hi, chunk)?),
        }
    }
    let mut out = Vec::with_capacity(12 + 20 * hashes.len());
    out.extend_from_slice(&((12 + 20 * hashes.len()) as u32).to_le_bytes());
    out.extend_from_slice(&(hashes.len() as u32).to_le_bytes());
    out.extend_from_slice(&chunk.to_le_bytes());
    for h in hashes {
        out.extend_from_slice(&h);
    }
    Ok(out)
}

/// Checks a stored table against the file. Returns the number of chunks checked.
pub fn verify(file: &dyn ReadAt, table: &[u8], blob_table_end: u64) -> Result<u32> {
    let le = Le(table);
    let what = "integrity table";
    let size = le.u32(0, what)? as usize;
    let n = le.u32(4, what)? as u64;
    let chunk = le.u32(8, what)?;
    if chunk == 0 || size != table.len() || 12 + 20 * n != table.len() as u64 {
        return invalid("integrity table sizes are inconsistent");
    }
    let covered = blob_table_end.saturating_sub(HEADER_SIZE as u64);
    if n != covered.div_ceil(chunk as u64) {
        return invalid(format!(
            "integrity table has {n} entries but the file needs {}",
            covered.div_ceil(chunk as u64)
        ));
    }
    let actual = hash_range(file, HEADER_SIZE as u64, blob_table_end, chunk)?;
    for (i, h) in actual.iter().enumerate() {
        if &table[12 + 20 * i..32 + 20 * i] != h {
            return Err(WimError::Corrupt(format!(
                "integrity check failed for bytes {}..{}",
                HEADER_SIZE as u64 + i as u64 * chunk as u64,
                (HEADER_SIZE as u64 + (i as u64 + 1) * chunk as u64).min(blob_table_end)
            )));
        }
    }
    Ok(n as u32)
}
