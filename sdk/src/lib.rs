//! The WimGuard plugin SDK.
//!
//! For now this crate holds the codec contract as plain Rust; the WebAssembly
//! export (WIT worlds, export macro) arrives with the plugin platform. Codec
//! crates depend only on this crate, so they stay pure: no I/O, no unsafe.

use std::fmt;

/// Why a compressed chunk could not be decoded.
///
/// Decoders never panic on hostile input: every malformed stream ends in one
/// of these, with a short human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    /// What was wrong with the input, for the error message shown to users.
    pub reason: String,
}

impl CodecError {
    pub fn new(reason: impl Into<String>) -> Self {
        CodecError { reason: reason.into() }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for CodecError {}

/// Compresses independent chunks. One instance per worker thread: it may keep
/// scratch state (hash tables, buffers) between calls, but no data carries
/// over from one chunk to the next.
pub trait ChunkCompressor: Send {
    /// Compresses `chunk` into `out` (cleared first).
    ///
    /// Returns `false` when the result would not be strictly smaller than the
    /// input; the caller then stores the chunk raw and `out` is meaningless.
    fn compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool;
}

/// Decompresses independent chunks. One instance per worker thread.
pub trait ChunkDecompressor: Send {
    /// Decodes `compressed` into exactly `out.len()` bytes.
    fn decompress(&mut self, compressed: &[u8], out: &mut [u8]) -> Result<(), CodecError>;
}

/// A chunk codec: a factory for per-thread compressors and decompressors.
pub trait Codec: Send + Sync {
    /// Short lowercase name users type (`xpress`, `lzx`).
    fn name(&self) -> &'static str;
    /// Largest chunk size this codec can handle, in bytes.
    fn max_chunk_size(&self) -> usize;
    /// A compressor for chunks of at most `chunk_size` bytes.
    fn compressor(&self, chunk_size: usize) -> Box<dyn ChunkCompressor>;
    /// A decompressor for chunks of at most `chunk_size` bytes.
    fn decompressor(&self, chunk_size: usize) -> Box<dyn ChunkDecompressor>;
}
