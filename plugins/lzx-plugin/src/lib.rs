//! The LZX chunk codec of `plugins/lzx` (WIM dialect) as a WimGuard codec
//! plugin (world `codec-plugin`, codec id `lzx`).
//!
//! LZX needs a window size on both sides: it fixes the main alphabet and
//! the width of block-size fields, and it is not stored in the stream. The
//! codec interface passes only the chunk (`compress`) or the decoded length
//! (`decompress`), so the window is derived from that length the same way
//! on both sides: the length rounded up to a power of two, 32 KiB..=2 MiB
//! (what [`wimguard_lzx::compress`] / [`wimguard_lzx::decompress`] do).
//! For archives with the default 32 KiB chunk size this is also exactly
//! what wimlib uses; with larger chunk sizes a short last chunk gets a
//! smaller window than the archive's chunk size would give it, which only
//! this plugin needs to read (archives compressed by a plugin are read
//! back through the plugin).
//!
//! Build: `cargo build --release --target wasm32-wasip2` (or
//! `plugins/build-wasm.sh`).

use wimguard_lzx::{LzxCompressor, LzxDecompressor, MAX_CHUNK_SIZE, MIN_WINDOW_SIZE};
use wimguard_sdk::{
    ChunkCompressor, ChunkDecompressor, CodecInfo, CodecPlugin, CodecPluginError, HostInfo, InitError, Plugin,
    PluginInfo,
};

/// Number of window sizes: 32 KiB (2^15) ..= 2 MiB (2^21).
const WINDOWS: usize = (MAX_CHUNK_SIZE.trailing_zeros() - MIN_WINDOW_SIZE.trailing_zeros() + 1) as usize;

/// Index into the per-window slots for a chunk of `len` bytes (`None` above
/// 2 MiB).
fn window_index(len: usize) -> Option<usize> {
    (len <= MAX_CHUNK_SIZE).then(|| {
        (len.max(MIN_WINDOW_SIZE).next_power_of_two().trailing_zeros() - MIN_WINDOW_SIZE.trailing_zeros()) as usize
    })
}

/// Window size of slot `index`.
fn window_size(index: usize) -> usize {
    MIN_WINDOW_SIZE << index
}

/// Plugin state: one compressor and one decompressor per window size in
/// use, reused across chunks (the host runs one instance per worker thread).
#[derive(Default)]
pub struct LzxPlugin {
    // Created on first use. A job normally sees two sizes (its chunk size
    // and the shorter last chunk of a file); keeping each avoids rebuilding
    // a large encoder every time the size alternates.
    compressors: [Option<LzxCompressor>; WINDOWS],
    decompressors: [Option<LzxDecompressor>; WINDOWS],
}

impl Plugin for LzxPlugin {
    fn info() -> PluginInfo {
        PluginInfo::new("lzx", env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_DESCRIPTION"))
    }

    fn init(_host: &HostInfo) -> Result<Self, InitError> {
        // No settings: the window follows from the chunk length (module doc).
        Ok(LzxPlugin::default())
    }
}

impl CodecPlugin for LzxPlugin {
    fn describe() -> CodecInfo {
        CodecInfo {
            id: "lzx".into(),
            name: "LZX".into(),
            max_chunk_size: MAX_CHUNK_SIZE as u32,
            extras: vec![],
        }
    }

    fn compress(&mut self, chunk: &[u8], max_out: usize, out: &mut Vec<u8>) -> bool {
        let Some(i) = window_index(chunk.len()) else {
            return false;
        };
        let compressor = self.compressors[i].get_or_insert_with(|| LzxCompressor::new(window_size(i)));
        // The native codec already refuses results that are not strictly
        // smaller than the chunk; `max_out` may ask for even less.
        compressor.compress(chunk, out) && out.len() <= max_out
    }

    fn decompress(&mut self, data: &[u8], out: &mut [u8]) -> Result<(), CodecPluginError> {
        let Some(i) = window_index(out.len()) else {
            return Err(CodecPluginError::Unsupported(format!(
                "lzx chunks are at most {MAX_CHUNK_SIZE} bytes, asked for {}",
                out.len()
            )));
        };
        let decompressor = self.decompressors[i].get_or_insert_with(|| LzxDecompressor::new(window_size(i)));
        Ok(decompressor.decompress(data, out)?)
    }
}

wimguard_sdk::export_codec!(LzxPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    /// Text-like data with repeats at short and long distances.
    fn sample(len: usize) -> Vec<u8> {
        let words = [
            &b"backup "[..],
            b"chunk ",
            b"window ",
            b"wimguard ",
            b"lzx\n",
            b"\xe8\x10\x20\x30\x40",
        ];
        let mut v = Vec::with_capacity(len);
        let mut i = 0usize;
        while v.len() < len {
            v.extend_from_slice(words[(i * 7 + i / 5) % words.len()]);
            v.extend_from_slice(&(i as u32 % 1013).to_le_bytes());
            i += 1;
        }
        v.truncate(len);
        v
    }

    fn round_trip(plugin: &mut LzxPlugin, chunk: &[u8]) {
        let mut packed = Vec::new();
        assert!(
            plugin.compress(chunk, chunk.len() - 1, &mut packed),
            "{} bytes did not compress",
            chunk.len()
        );
        assert!(packed.len() < chunk.len());
        let mut back = vec![0u8; chunk.len()];
        plugin.decompress(&packed, &mut back).unwrap();
        assert_eq!(back, chunk);
        // Same window rule as the native free functions: interchangeable.
        let mut back = vec![0u8; chunk.len()];
        wimguard_lzx::decompress(&packed, &mut back).unwrap();
        assert_eq!(back, chunk);
    }

    #[test]
    fn window_follows_the_length() {
        assert_eq!(WINDOWS, 7);
        assert_eq!(window_index(0), Some(0));
        assert_eq!(window_index(32768), Some(0));
        assert_eq!(window_index(32769), Some(1));
        assert_eq!(window_index(1 << 21), Some(6));
        assert_eq!(window_index((1 << 21) + 1), None);
        assert_eq!(window_size(6), 1 << 21);
    }

    #[test]
    fn round_trips_through_the_plugin_api() {
        assert_eq!(LzxPlugin::describe().id, "lzx");
        assert_eq!(LzxPlugin::describe().max_chunk_size, 2 << 20);
        assert_eq!(LzxPlugin::info().name, "lzx");
        let mut plugin = LzxPlugin::init(&HostInfo {
            host_version: "test".into(),
            api_version: wimguard_sdk::API_VERSION,
            extras: vec![],
        })
        .unwrap();
        // Varying sizes (several windows) on one instance, alternating.
        for len in [32768, 1000, 2 << 20, 100_000, 32768, 70_000, 2 << 20, 200] {
            round_trip(&mut plugin, &sample(len));
        }
    }

    #[test]
    fn respects_max_out_and_rejects_bad_input() {
        let mut plugin = LzxPlugin::default();
        let chunk = sample(8192);
        let mut packed = Vec::new();
        assert!(plugin.compress(&chunk, chunk.len() - 1, &mut packed));
        let fits = packed.len();
        assert!(plugin.compress(&chunk, fits, &mut Vec::new()));
        assert!(!plugin.compress(&chunk, fits - 1, &mut Vec::new()));
        // Too small or too large chunks are "store raw", not errors.
        assert!(!plugin.compress(b"abc", 2, &mut Vec::new()));
        assert!(!plugin.compress(&vec![0u8; (2 << 20) + 1], 1 << 20, &mut Vec::new()));
        // Garbage and oversized requests are errors, not panics.
        assert!(plugin.decompress(&[0xff; 10], &mut [0u8; 4096]).is_err());
        assert!(plugin.decompress(&packed, &mut vec![0u8; 8191]).is_err());
        assert!(matches!(
            plugin.decompress(&packed, &mut vec![0u8; (2 << 20) + 1]),
            Err(CodecPluginError::Unsupported(_))
        ));
    }
}
