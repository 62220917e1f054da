//! LZX compression in the WIM dialect, interoperable with wimlib and WIMGAPI.
//!
//! Each chunk is an independent LZX stream whose window is the chunk size
//! (a power of two from 32 KiB to 2 MiB): no stream header, repeat offsets
//! reset to 1, E8 call translation always applied with a file size of
//! 12 000 000. See `shared/docs/wim-format.md` §10.4 for the format.
//!
//! The window size matters for decoding: it fixes the main alphabet size and
//! the width of block-size fields. A WIM's last chunk is usually shorter than
//! its chunk size but still uses the WIM's window, so container code should
//! use [`Lzx`]'s factories with the WIM chunk size; the free functions
//! [`compress`] and [`decompress`] derive the window from the chunk length.

#![forbid(unsafe_code)]
// Parallel per-symbol arrays (frequencies, lengths, codes) read best indexed.
#![allow(clippy::needless_range_loop)]

mod bits;
mod compress;
mod decompress;
mod e8;
mod huffman;
mod matchfinder;
mod tables;

pub use compress::Params;
use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec, CodecError};

/// Largest chunk (and window) size: 2 MiB.
pub const MAX_CHUNK_SIZE: usize = 1 << tables::MAX_WINDOW_ORDER;
/// Smallest window size: 32 KiB (the WIM default chunk size).
pub const MIN_WINDOW_SIZE: usize = 1 << tables::MIN_WINDOW_ORDER;

/// The LZX codec (`lzx`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lzx;

/// Window order for a codec instance: `chunk_size` rounded up to a power of
/// two within 32 KiB..=2 MiB.
fn order_for_instance(chunk_size: usize) -> u32 {
    tables::window_order_for(chunk_size.min(MAX_CHUNK_SIZE)).unwrap_or(tables::MAX_WINDOW_ORDER)
}

impl Codec for Lzx {
    fn name(&self) -> &'static str {
        "lzx"
    }

    fn max_chunk_size(&self) -> usize {
        MAX_CHUNK_SIZE
    }

    fn compressor(&self, chunk_size: usize) -> Box<dyn ChunkCompressor> {
        Box::new(LzxCompressor::new(chunk_size))
    }

    fn decompressor(&self, chunk_size: usize) -> Box<dyn ChunkDecompressor> {
        Box::new(LzxDecompressor::new(chunk_size))
    }
}

/// Per-thread LZX compressor for one window (WIM chunk) size.
pub struct LzxCompressor {
    enc: compress::Encoder,
}

impl LzxCompressor {
    /// A compressor whose window is `chunk_size` rounded up to a power of two
    /// (32 KiB..=2 MiB); it compresses chunks of at most that size.
    pub fn new(chunk_size: usize) -> Self {
        Self::with_params(chunk_size, Params::for_chunk_size(chunk_size))
    }

    /// Like [`LzxCompressor::new`] with explicit effort settings.
    pub fn with_params(chunk_size: usize, params: Params) -> Self {
        LzxCompressor {
            enc: compress::Encoder::new(order_for_instance(chunk_size), params),
        }
    }
}

impl ChunkCompressor for LzxCompressor {
    fn compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        self.enc.compress(chunk, out)
    }
}

/// Per-thread LZX decompressor for one window (WIM chunk) size.
pub struct LzxDecompressor {
    dec: decompress::Decoder,
}

impl LzxDecompressor {
    /// A decompressor whose window is `chunk_size` rounded up to a power of
    /// two (32 KiB..=2 MiB); it decodes chunks of at most that size.
    pub fn new(chunk_size: usize) -> Self {
        LzxDecompressor {
            dec: decompress::Decoder::new(order_for_instance(chunk_size)),
        }
    }
}

impl ChunkDecompressor for LzxDecompressor {
    fn decompress(&mut self, compressed: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        self.dec.decompress(compressed, out)
    }
}

/// Compresses one chunk with the window derived from its length (at least
/// 32 KiB). Returns `false` when the chunk should be stored raw: the output
/// would not be strictly smaller, the input is shorter than 64 bytes, or it
/// exceeds 2 MiB. Allocates fresh state; prefer [`LzxCompressor`] in loops.
pub fn compress(input: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    match tables::window_order_for(input.len()) {
        Some(order) => compress::Encoder::new(order, Params::for_chunk_size(input.len())).compress(input, out),
        None => false,
    }
}

/// Decompresses one chunk into exactly `out.len()` bytes, with the window
/// derived from `out.len()` (at least 32 KiB). Malformed input yields an
/// error, never a panic.
pub fn decompress(input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    match tables::window_order_for(out.len()) {
        Some(order) => decompress::Decoder::new(order).decompress(input, out),
        None => Err(CodecError::new("lzx: chunk larger than 2 MiB")),
    }
}
