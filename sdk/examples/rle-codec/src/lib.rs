//! Example WimGuard codec plugin: byte run-length encoding.
//!
//! Format: a sequence of `(count: u8 in 1..=255, byte)` pairs.
//! Build: `cargo build --target wasm32-wasip2 --release`.

use wimguard_sdk::{CodecInfo, CodecPlugin, CodecPluginError, HostInfo, InitError, Plugin, PluginInfo};

pub struct Rle {
    /// Longest run to emit (setting `max-run`, 1..=255, default 255).
    max_run: u8,
}

impl Plugin for Rle {
    fn info() -> PluginInfo {
        PluginInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_DESCRIPTION"))
    }

    fn init(_host: &HostInfo) -> Result<Self, InitError> {
        let max_run = match wimguard_sdk::config::get("max-run") {
            None => 255,
            Some(v) => match v.parse::<u8>() {
                Ok(n) if n >= 1 => n,
                _ => return Err(InitError::BadConfig(format!("max-run must be 1..=255, got `{v}`"))),
            },
        };
        wimguard_sdk::log::debug(&format!("rle ready, max-run {max_run}"));
        Ok(Rle { max_run })
    }
}

impl CodecPlugin for Rle {
    fn describe() -> CodecInfo {
        CodecInfo { id: "x-example-rle".into(), name: "Run-length (example)".into(), max_chunk_size: 1 << 20, extras: vec![] }
    }

    fn compress(&mut self, chunk: &[u8], max_out: usize, out: &mut Vec<u8>) -> bool {
        compress(chunk, self.max_run, max_out, out)
    }

    fn decompress(&mut self, data: &[u8], out: &mut [u8]) -> Result<(), CodecPluginError> {
        decompress(data, out)
    }
}

wimguard_sdk::export_codec!(Rle);

/// Encodes `chunk`; false as soon as the output would exceed `max_out`.
pub fn compress(chunk: &[u8], max_run: u8, max_out: usize, out: &mut Vec<u8>) -> bool {
    let mut i = 0;
    while i < chunk.len() {
        let b = chunk[i];
        let mut n = 1;
        while n < max_run as usize && i + n < chunk.len() && chunk[i + n] == b {
            n += 1;
        }
        if out.len() + 2 > max_out {
            return false;
        }
        out.push(n as u8);
        out.push(b);
        i += n;
    }
    true
}

/// Decodes into exactly `out.len()` bytes.
pub fn decompress(data: &[u8], out: &mut [u8]) -> Result<(), CodecPluginError> {
    if data.len() % 2 != 0 {
        return Err(CodecPluginError::Corrupt("odd length".into()));
    }
    let mut pos = 0;
    for pair in data.chunks_exact(2) {
        let n = pair[0] as usize;
        if n == 0 || pos + n > out.len() {
            return Err(CodecPluginError::Corrupt("bad run length".into()));
        }
        out[pos..pos + n].fill(pair[1]);
        pos += n;
    }
    if pos != out.len() {
        return Err(CodecPluginError::Corrupt(format!("decoded {pos} bytes, expected {}", out.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let input: Vec<u8> = [vec![7u8; 1000], b"abc".to_vec(), vec![0u8; 300]].concat();
        let mut out = Vec::new();
        assert!(compress(&input, 255, input.len() - 1, &mut out));
        let mut back = vec![0u8; input.len()];
        decompress(&out, &mut back).unwrap();
        assert_eq!(back, input);
        let mut out = Vec::new();
        assert!(!compress(b"abcdef", 255, 5, &mut out));
        assert!(decompress(&[0, 1], &mut [0u8; 1]).is_err());
    }
}
