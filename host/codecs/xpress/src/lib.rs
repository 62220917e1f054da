//! XPRESS (Huffman variant) chunk codec, as used in WIM files.
//!
//! Each chunk (at most 64 KiB) is compressed on its own: a 256-byte table of
//! 4-bit code lengths for 512 symbols, then a bit stream of Huffman-coded
//! literals and matches with match-length bytes interleaved. The layout is
//! described in the project's format reference, §10.1–§10.3; the output
//! interoperates with wimlib and Microsoft's WIMGAPI.
//!
//! The code is pure and safe: no I/O, no `unsafe`, and hostile input only
//! ever yields a [`CodecError`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decode;
mod encode;
mod huffman;

pub use encode::XpressCompressor;
use huffman::DecodeTable;
use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec, CodecError};

/// Largest chunk XPRESS supports: match offsets are limited to 65535.
pub const MAX_CHUNK_SIZE: usize = encode::MAX_CHUNK;

/// The XPRESS codec, registered under the name `xpress`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Xpress;

impl Codec for Xpress {
    fn name(&self) -> &'static str {
        "xpress"
    }

    fn max_chunk_size(&self) -> usize {
        MAX_CHUNK_SIZE
    }

    fn compressor(&self, chunk_size: usize) -> Box<dyn ChunkCompressor> {
        Box::new(XpressCompressor::new(chunk_size))
    }

    fn decompressor(&self, _chunk_size: usize) -> Box<dyn ChunkDecompressor> {
        Box::new(XpressDecompressor::new())
    }
}

impl ChunkCompressor for XpressCompressor {
    fn compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        self.compress_chunk(chunk, out)
    }
}

/// Per-thread XPRESS decompressor; keeps its decode table between chunks to
/// avoid re-allocating it.
pub struct XpressDecompressor {
    table: Box<DecodeTable>,
}

impl XpressDecompressor {
    /// A new decompressor (usable for any chunk size up to 64 KiB).
    pub fn new() -> Self {
        XpressDecompressor {
            table: Box::new(DecodeTable::new()),
        }
    }

    /// Decodes `compressed` into exactly `out.len()` bytes.
    pub fn decompress_chunk(&mut self, compressed: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        decode::decompress_with(&mut self.table, compressed, out)
    }
}

impl Default for XpressDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkDecompressor for XpressDecompressor {
    fn decompress(&mut self, compressed: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        self.decompress_chunk(compressed, out)
    }
}

/// Compresses one chunk (≤ 64 KiB) into `out` (cleared first).
///
/// Returns `false` when the result would not be strictly smaller than the
/// input; store the chunk raw then. Allocates fresh tables on every call:
/// for many chunks, keep an [`XpressCompressor`] instead.
pub fn compress(input: &[u8], out: &mut Vec<u8>) -> bool {
    XpressCompressor::new(input.len()).compress_chunk(input, out)
}

/// Decodes one compressed chunk into exactly `out.len()` bytes.
///
/// Malformed input yields an error, never a panic; trailing bytes after the
/// data (normally the end-of-data symbol and padding) are ignored.
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let mut table = Box::new(DecodeTable::new());
    decode::decompress_with(&mut table, input, out)
}
