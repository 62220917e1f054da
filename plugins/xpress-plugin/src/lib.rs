//! The XPRESS (Huffman) chunk codec of `plugins/xpress` as a WimGuard codec
//! plugin (world `codec-plugin`, codec id `xpress`).
//!
//! The component is a thin adapter: the bit stream is exactly the one the
//! native codec writes, so chunks compressed here decode with the built-in
//! codec, wimlib and WIMGAPI, and the other way round.
//!
//! Build: `cargo build --release --target wasm32-wasip2` (or
//! `plugins/build-wasm.sh`).

use wimguard_sdk::{CodecInfo, CodecPlugin, CodecPluginError, HostInfo, InitError, Plugin, PluginInfo};
use wimguard_xpress::{XpressCompressor, XpressDecompressor, MAX_CHUNK_SIZE};

/// Plugin state: one compressor and one decompressor, reused for every chunk
/// this instance sees (the host runs one instance per worker thread).
#[derive(Default)]
pub struct XpressPlugin {
    // Created on first use so that an instance that only decompresses never
    // pays for the compressor's hash tables. Both work for any chunk size up
    // to 64 KiB, so one of each is enough whatever sizes the host sends.
    compressor: Option<XpressCompressor>,
    decompressor: Option<XpressDecompressor>,
}

impl Plugin for XpressPlugin {
    fn info() -> PluginInfo {
        PluginInfo::new("xpress", env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_DESCRIPTION"))
    }

    fn init(_host: &HostInfo) -> Result<Self, InitError> {
        // No settings: XPRESS has no parameters that change the format.
        Ok(XpressPlugin::default())
    }
}

impl CodecPlugin for XpressPlugin {
    fn describe() -> CodecInfo {
        CodecInfo {
            id: "xpress".into(),
            name: "XPRESS (Huffman)".into(),
            max_chunk_size: MAX_CHUNK_SIZE as u32,
            extras: vec![],
        }
    }

    fn compress(&mut self, chunk: &[u8], max_out: usize, out: &mut Vec<u8>) -> bool {
        let compressor = self
            .compressor
            .get_or_insert_with(|| XpressCompressor::new(MAX_CHUNK_SIZE));
        // The native codec already refuses results that are not strictly
        // smaller than the chunk; `max_out` may ask for even less.
        compressor.compress_chunk(chunk, out) && out.len() <= max_out
    }

    fn decompress(&mut self, data: &[u8], out: &mut [u8]) -> Result<(), CodecPluginError> {
        if out.len() > MAX_CHUNK_SIZE {
            return Err(CodecPluginError::Unsupported(format!(
                "xpress chunks are at most {MAX_CHUNK_SIZE} bytes, asked for {}",
                out.len()
            )));
        }
        let decompressor = self.decompressor.get_or_insert_with(XpressDecompressor::new);
        Ok(decompressor.decompress_chunk(data, out)?)
    }
}

wimguard_sdk::export_codec!(XpressPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    /// Text-like data with repeats, so XPRESS has something to find.
    fn sample(len: usize) -> Vec<u8> {
        let words = [&b"backup "[..], b"chunk ", b"window ", b"wimguard ", b"xpress\n"];
        let mut v = Vec::with_capacity(len);
        let mut i = 0usize;
        while v.len() < len {
            v.extend_from_slice(words[(i * 7 + i / 3) % words.len()]);
            i += 1;
        }
        v.truncate(len);
        v
    }

    fn round_trip(plugin: &mut XpressPlugin, chunk: &[u8]) {
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
        // Same bit stream as the native codec: interchangeable with it.
        let mut native = Vec::new();
        assert!(wimguard_xpress::compress(chunk, &mut native));
        let mut back = vec![0u8; chunk.len()];
        wimguard_xpress::decompress(&packed, &mut back).unwrap();
        assert_eq!(back, chunk);
    }

    #[test]
    fn round_trips_through_the_plugin_api() {
        assert_eq!(XpressPlugin::describe().id, "xpress");
        assert_eq!(XpressPlugin::describe().max_chunk_size, 65536);
        assert_eq!(XpressPlugin::info().name, "xpress");
        let mut plugin = XpressPlugin::init(&HostInfo {
            host_version: "test".into(),
            api_version: wimguard_sdk::API_VERSION,
            extras: vec![],
        })
        .unwrap();
        // Varying sizes on one instance, largest first and last.
        for len in [65536, 1000, 32768, 300, 65536, 40000] {
            round_trip(&mut plugin, &sample(len));
        }
    }

    #[test]
    fn respects_max_out_and_rejects_bad_input() {
        let mut plugin = XpressPlugin::default();
        let chunk = sample(4096);
        let mut packed = Vec::new();
        assert!(plugin.compress(&chunk, chunk.len() - 1, &mut packed));
        let fits = packed.len();
        let mut out = Vec::new();
        assert!(plugin.compress(&chunk, fits, &mut out));
        let mut out = Vec::new();
        assert!(!plugin.compress(&chunk, fits - 1, &mut out));
        // Incompressible and tiny chunks are "store raw", not errors.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift64: incompressible enough for a Huffman coder.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        assert!(!plugin.compress(&noise, noise.len() - 1, &mut Vec::new()));
        assert!(!plugin.compress(b"ab", 1, &mut Vec::new()));
        // Garbage and oversized requests are errors, not panics.
        assert!(plugin.decompress(&[0xff; 10], &mut [0u8; 4096]).is_err());
        assert!(matches!(
            plugin.decompress(&packed, &mut vec![0u8; 65537]),
            Err(CodecPluginError::Unsupported(_))
        ));
    }
}
