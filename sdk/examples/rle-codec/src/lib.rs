//! Example WimGuard codec plugin: byte run-length encoding.
//!
//! Format: a sequence of `(count: u8 in 1..=255, byte)` pairs.
//! Build: `cargo build --target wasm32-wasip2 --release` (a component), or
//! `cargo build --release --features native` (a trusted native plugin,
//! `libwimguard_rle_codec.so`, native ABI 1).

use wimguard_sdk::{CodecInfo, CodecPlugin, CodecPluginError, HostInfo, InitError, Plugin, PluginInfo};

pub struct Rle {
    /// Longest run to emit (setting `max-run`, 1..=255, default 255).
    max_run: u8,
}

impl Plugin for Rle {
    fn info() -> PluginInfo {
        PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            env!("CARGO_PKG_DESCRIPTION"),
        )
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
        CodecInfo {
            id: "x-example-rle".into(),
            name: "Run-length (example)".into(),
            max_chunk_size: 1 << 20,
            extras: vec![],
        }
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
    if !data.len().is_multiple_of(2) {
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
        return Err(CodecPluginError::Corrupt(format!(
            "decoded {pos} bytes, expected {}",
            out.len()
        )));
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

/// The native ABI as the host sees it, without a host: the symbols that
/// `export_codec!` emits with the `native` feature, called directly.
#[cfg(all(test, feature = "native"))]
mod native_abi_tests {
    use std::collections::BTreeMap;
    use std::ffi::c_void;

    use wimguard_sdk::native::*;

    // The symbols are defined by `export_codec!` above, inside an anonymous
    // const block: reach them by their unmangled names, as a host would.
    unsafe extern "C" {
        fn wimguard_native_abi_version() -> u32;
        fn wimguard_native_plugin_info() -> *const WgPluginInfo;
        fn wimguard_native_codec_new(host: *const WgHostApi, err: *const WgBuf) -> *mut c_void;
        fn wimguard_native_codec_free(inst: *mut c_void);
        fn wimguard_native_codec_compress(
            inst: *mut c_void,
            input: *const u8,
            input_len: usize,
            out: *mut u8,
            out_cap: usize,
            out_len: *mut usize,
            err: *const WgBuf,
        ) -> i32;
        fn wimguard_native_codec_decompress(
            inst: *mut c_void,
            input: *const u8,
            input_len: usize,
            out: *mut u8,
            out_len: usize,
            err: *const WgBuf,
        ) -> i32;
    }

    struct Host {
        settings: BTreeMap<&'static str, &'static str>,
        logs: std::sync::Mutex<Vec<String>>,
    }

    unsafe extern "C" fn log(ctx: *mut c_void, _level: u32, msg: *const u8, len: usize) {
        // SAFETY: `ctx` is the `Host` below; the plugin passes `len` bytes.
        let (host, msg) = unsafe { (&*ctx.cast::<Host>(), WgStr { ptr: msg, len }.as_bytes()) };
        host.logs
            .lock()
            .unwrap()
            .push(String::from_utf8_lossy(msg).into_owned());
    }

    unsafe extern "C" fn config_get(ctx: *mut c_void, key: *const u8, key_len: usize, out: *const WgBuf) -> bool {
        // SAFETY: as in `log`.
        let (host, key) = unsafe { (&*ctx.cast::<Host>(), WgStr { ptr: key, len: key_len }.as_bytes()) };
        match host.settings.get(std::str::from_utf8(key).unwrap()) {
            // SAFETY: the plugin passes a valid buffer.
            Some(v) => {
                // SAFETY: the plugin passes a valid buffer.
                unsafe { WgBuf::write(out, v.as_bytes()) };
                true
            }
            None => false,
        }
    }

    fn api(host: &Host) -> WgHostApi {
        WgHostApi {
            abi_version: ABI_VERSION,
            size: size_of::<WgHostApi>() as u32,
            ctx: (host as *const Host).cast_mut().cast(),
            host_version: WgStr::from_static(c"test"),
            api_major: 1,
            api_minor: 0,
            log: Some(log),
            config_get: Some(config_get),
            config_key: None,
        }
    }

    #[test]
    fn info_and_round_trip() {
        // SAFETY: no arguments; returns a constant.
        assert_eq!(unsafe { wimguard_native_abi_version() }, 1);
        // SAFETY: static data of this crate.
        let info = unsafe { &*wimguard_native_plugin_info() };
        // SAFETY: static data of this crate.
        let text = |s: WgStr| unsafe { std::str::from_utf8(s.as_bytes()).unwrap() };
        assert_eq!((text(info.kind), text(info.name)), ("codec", "wimguard-rle-codec"));
        assert_eq!((text(info.codec_id), info.max_chunk_size), ("x-example-rle", 1 << 20));

        let host = Host {
            settings: [("max-run", "100")].into(),
            logs: Default::default(),
        };
        let api = api(&host);
        let mut err = Vec::new();
        let buf = VecBuf::new(&mut err);
        // SAFETY: `api`, `host` and `buf` outlive the instance and the calls.
        unsafe {
            let inst = wimguard_native_codec_new(&api, buf.as_ptr());
            assert!(!inst.is_null());
            let input = [9u8; 250];
            let (mut out, mut out_len) = ([0u8; 249], 0usize);
            let rc = wimguard_native_codec_compress(
                inst,
                input.as_ptr(),
                input.len(),
                out.as_mut_ptr(),
                out.len(),
                &mut out_len,
                buf.as_ptr(),
            );
            assert_eq!((rc, &out[..out_len]), (WG_COMPRESSED, &[100, 9, 100, 9, 50, 9][..]));
            let mut back = [0u8; 250];
            let rc = wimguard_native_codec_decompress(
                inst,
                out.as_ptr(),
                out_len,
                back.as_mut_ptr(),
                back.len(),
                buf.as_ptr(),
            );
            assert_eq!(rc, WG_OK);
            assert_eq!(back, input);
            let rc = wimguard_native_codec_decompress(inst, [0u8, 1].as_ptr(), 2, back.as_mut_ptr(), 1, buf.as_ptr());
            assert_eq!(rc, WG_ERR_CORRUPT);
            wimguard_native_codec_free(inst);
        }
        assert_eq!(err, b"bad run length");
        assert_eq!(*host.logs.lock().unwrap(), ["rle ready, max-run 100"]);
    }

    #[test]
    fn bad_setting_is_refused() {
        let host = Host {
            settings: [("max-run", "0")].into(),
            logs: Default::default(),
        };
        let api = api(&host);
        let mut err = Vec::new();
        let buf = VecBuf::new(&mut err);
        // SAFETY: as above.
        let inst = unsafe { wimguard_native_codec_new(&api, buf.as_ptr()) };
        assert!(inst.is_null());
        assert_eq!(
            String::from_utf8(err).unwrap(),
            "bad configuration: max-run must be 1..=255, got `0`"
        );
    }
}
