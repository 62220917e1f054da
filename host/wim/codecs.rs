//! Maps the WIM-wide compression type to a chunk codec, and keeps one
//! compressor or decompressor per worker thread.

use std::sync::Mutex;

use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec};

use super::error::{Result, WimError};
use super::header::Compression;

static XPRESS: wimguard_xpress::Xpress = wimguard_xpress::Xpress;
static LZX: wimguard_lzx::Lzx = wimguard_lzx::Lzx;

/// The codec for a compression type; `None` for uncompressed WIMs.
pub fn codec_for(c: Compression) -> Result<Option<&'static dyn Codec>> {
    match c {
        Compression::None => Ok(None),
        Compression::Xpress => Ok(Some(&XPRESS)),
        Compression::Lzx => Ok(Some(&LZX)),
        Compression::Lzms => Err(WimError::Unsupported("solid/LZMS compression".into())),
    }
}

/// One codec state per rayon worker, so parallel chunk work never shares scratch memory.
pub struct PerThread<T> {
    slots: Vec<Mutex<T>>,
}

impl<T> PerThread<T> {
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        let n = rayon::current_num_threads() + 1;
        PerThread {
            slots: (0..n).map(|_| Mutex::new(make())).collect(),
        }
    }

    /// Runs `f` with this thread's state.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let i = rayon::current_thread_index().map_or(self.slots.len() - 1, |i| i.min(self.slots.len() - 1));
        let mut guard = self.slots[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

pub type Compressors = PerThread<Box<dyn ChunkCompressor>>;
pub type Decompressors = PerThread<Box<dyn ChunkDecompressor>>;
