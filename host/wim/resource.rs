//! Reading resources: uncompressed ones and chunked, compressed ones.
//!
//! A compressed non-solid resource is `[chunk table][chunk 0]…[chunk N-1]`.
//! The table has N-1 entries (none for chunk 0), each the start of the next
//! chunk relative to the end of the table; entries are 8 bytes wide when the
//! uncompressed size exceeds 4 GiB - 1, else 4. A chunk whose stored size
//! equals its uncompressed size is stored raw.

use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use wimguard_sdk::Codec;

use super::codecs::Decompressors;
use super::error::{invalid, Result, WimError};
use super::reshdr::{ResHdr, RESHDR_FLAG_COMPRESSED};
use super::storage::ReadAt;

/// Uncompressed bytes decoded together (in parallel) when streaming a blob:
/// 32 chunks of the default size, plenty for two threads. Held twice
/// (compressed and decoded) while a batch is written.
const BATCH_BYTES: usize = 1 << 20;

/// Everything needed to decode resources of one WIM.
pub struct ResourceContext<'a> {
    pub source: &'a dyn ReadAt,
    pub file_size: u64,
    /// The WIM-wide codec, when the header names one.
    pub codec: Option<&'a dyn Codec>,
    pub chunk_size: u32,
    pub decompressors: Option<&'a Decompressors>,
}

impl<'a> ResourceContext<'a> {
    pub fn new(
        source: &'a dyn ReadAt,
        file_size: u64,
        codec: Option<&'a dyn Codec>,
        chunk_size: u32,
        decompressors: Option<&'a Decompressors>,
    ) -> Self {
        ResourceContext {
            source,
            file_size,
            codec,
            chunk_size,
            decompressors,
        }
    }

    /// Reads a whole resource into memory. Only for bounded structures
    /// (metadata, XML, tables): `limit` guards against hostile sizes.
    pub fn read_all(&self, r: &ResHdr, limit: u64, what: &str) -> Result<Vec<u8>> {
        if r.original_size > limit {
            return invalid(format!(
                "{what} claims {} bytes, more than the limit of {limit}",
                r.original_size
            ));
        }
        // Grow with the data actually decoded, not with what a header claims.
        let mut out = Vec::with_capacity(r.original_size.min(64 << 20) as usize);
        self.stream(r, what, &mut |piece| {
            out.extend_from_slice(piece);
            Ok(())
        })?;
        Ok(out)
    }

    /// Streams the uncompressed bytes of a resource to `sink`, in order,
    /// decoding chunks in parallel batches so memory stays bounded.
    pub fn stream(&self, r: &ResHdr, what: &str, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.stream_checked(r, what, None, sink)
    }

    /// [`stream`](Self::stream), for data recovery when `recover` is given:
    /// a chunk that does not decode is passed on as what its decoder wrote
    /// before it gave up, with zeros for the rest (as `wimlib-imagex apply
    /// --recover-data` does), and `recover` is set. A resource whose layout
    /// is unsound (chunk table, extent) still fails: there is nothing to
    /// recover from it.
    pub fn stream_checked(
        &self,
        r: &ResHdr,
        what: &str,
        recover: Option<&AtomicBool>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        r.end_within(self.file_size, what)?;
        // Remote sources fetch a small resource in one request.
        self.source.will_read(r.offset, r.size_in_wim);
        if r.flags & RESHDR_FLAG_COMPRESSED == 0 {
            if r.size_in_wim != r.original_size {
                return invalid(format!(
                    "{what}: uncompressed resource with stored size {} != size {}",
                    r.size_in_wim, r.original_size
                ));
            }
            let mut off = 0u64;
            let mut buf = vec![0u8; (r.original_size.min(1 << 20)) as usize];
            while off < r.original_size {
                let n = (r.original_size - off).min(buf.len() as u64) as usize;
                self.source.read_exact_at(&mut buf[..n], r.offset + off)?;
                sink(&buf[..n])?;
                off += n as u64;
            }
            return Ok(());
        }
        let codec = self
            .codec
            .ok_or_else(|| WimError::Invalid(format!("{what} is compressed but the WIM names no codec")))?;
        let decomps = self
            .decompressors
            .ok_or_else(|| WimError::Invalid(format!("{what}: no decompressor")))?;
        let table = ChunkTable::read(self, r, what)?;
        let cs = self.chunk_size as u64;
        let per_batch = (BATCH_BYTES / self.chunk_size as usize)
            .max(rayon::current_num_threads())
            .max(1);
        let mut first = 0usize;
        while first < table.count {
            let last = (first + per_batch).min(table.count);
            let (start, _) = table.span(first);
            let (end_start, end_len) = table.span(last - 1);
            let end = end_start + end_len;
            let mut comp = vec![0u8; (end - start) as usize];
            self.source
                .read_exact_at(&mut comp, r.offset + table.data_start + start)?;
            let mut outs: Vec<Vec<u8>> = (first..last)
                .map(|i| {
                    let usize_ = if i + 1 == table.count {
                        r.original_size - cs * i as u64
                    } else {
                        cs
                    };
                    vec![0u8; usize_ as usize]
                })
                .collect();
            outs.par_iter_mut().enumerate().try_for_each(|(k, out)| -> Result<()> {
                let i = first + k;
                let (s, len) = table.span(i);
                let src = &comp[(s - start) as usize..(s - start + len) as usize];
                if len as usize == out.len() {
                    out.copy_from_slice(src);
                    Ok(())
                } else {
                    match decomps.with(|d| d.decompress(src, out)) {
                        Ok(()) => Ok(()),
                        Err(_) if recover.is_some() => {
                            // Whatever decoded before the damage is kept; a
                            // decoder that wrote nothing leaves zeros.
                            recover.unwrap().store(true, Ordering::Relaxed);
                            out.fill(0);
                            let _ = decomps.with(|d| d.decompress(src, out));
                            Ok(())
                        }
                        Err(e) => Err(WimError::Corrupt(format!(
                            "{what}: chunk {i} does not decode with {}: {e}",
                            codec.name()
                        ))),
                    }
                }
            })?;
            for o in &outs {
                sink(o)?;
            }
            first = last;
        }
        Ok(())
    }
}

/// The decoded chunk table of one compressed resource.
struct ChunkTable {
    count: usize,
    /// Start of chunk data relative to the resource offset (= table bytes).
    data_start: u64,
    /// Chunk starts relative to `data_start`, plus the end as a last element.
    bounds: Vec<u64>,
}

impl ChunkTable {
    fn read(ctx: &ResourceContext, r: &ResHdr, what: &str) -> Result<ChunkTable> {
        let cs = ctx.chunk_size as u64;
        if r.original_size == 0 {
            return invalid(format!("{what}: compressed resource of size 0"));
        }
        let count = r.original_size.div_ceil(cs);
        let width: u64 = if r.original_size > u32::MAX as u64 { 8 } else { 4 };
        let table_bytes = (count - 1)
            .checked_mul(width)
            .filter(|&t| t < r.size_in_wim)
            .ok_or_else(|| WimError::Invalid(format!("{what}: chunk table does not fit in the resource")))?;
        let mut raw = vec![0u8; table_bytes as usize];
        ctx.source.read_exact_at(&mut raw, r.offset)?;
        let data_len = r.size_in_wim - table_bytes;
        let mut bounds = Vec::with_capacity(count as usize + 1);
        bounds.push(0u64);
        for e in raw.chunks_exact(width as usize) {
            let v = if width == 8 {
                u64::from_le_bytes(e.try_into().unwrap())
            } else {
                u32::from_le_bytes(e.try_into().unwrap()) as u64
            };
            bounds.push(v);
        }
        bounds.push(data_len);
        for i in 0..count as usize {
            let stored = bounds[i + 1].saturating_sub(bounds[i]);
            let usize_ = if i + 1 == count as usize {
                r.original_size - cs * i as u64
            } else {
                cs
            };
            if stored == 0 || stored > usize_ {
                return invalid(format!(
                    "{what}: chunk {i} has stored size {stored} (offsets out of order or larger than its {usize_} bytes)"
                ));
            }
        }
        Ok(ChunkTable {
            count: count as usize,
            data_start: table_bytes,
            bounds,
        })
    }

    /// (start, stored length) of chunk `i`.
    fn span(&self, i: usize) -> (u64, u64) {
        (self.bounds[i], self.bounds[i + 1] - self.bounds[i])
    }
}
