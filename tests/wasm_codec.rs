//! Codec plugins in the wasm runtime (host/plugin-host): the RLE example from the
//! SDK round-trips data, and a hostile fixture (tests/fixtures/hostile-codec)
//! is stopped by the epoch deadline, the memory limit, and survives a panic
//! on a fresh instance.
//!
//! The plugins are built here for wasm32-wasip2 with cargo, in their own
//! target directory (`target/wasm-test-plugins`), once per test run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use wimguard::plugins::{PluginError, PluginLimits, PluginSettings, WasmCodec};
use wimguard_sdk::Codec;

struct Built {
    rle: Vec<u8>,
    hostile: Vec<u8>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ensure_wasm_target() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2") => {}
        _ => {
            // Same as scripts/ensure-deps.sh.
            let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
            assert!(
                matches!(status, Ok(s) if s.success()),
                "the rustup target wasm32-wasip2 is missing and `rustup target add wasm32-wasip2` failed; run scripts/ensure-deps.sh"
            );
        }
    }
}

fn build_plugin(crate_dir: &Path, artifact: &str, target_dir: &Path) -> Vec<u8> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .current_dir(crate_dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running cargo to build a wasm plugin");
    assert!(
        status.success(),
        "building {} for wasm32-wasip2 failed",
        crate_dir.display()
    );
    let path = target_dir.join("wasm32-wasip2/release").join(artifact);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Guest log/stdout/stderr show up with `--nocapture`.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("wimguard=trace")
            .with_test_writer()
            .try_init();
        ensure_wasm_target();
        let target_dir = root().join("target/wasm-test-plugins");
        Built {
            rle: build_plugin(
                &root().join("sdk/examples/rle-codec"),
                "wimguard_rle_codec.wasm",
                &target_dir,
            ),
            hostile: build_plugin(
                &root().join("tests/fixtures/hostile-codec"),
                "wimguard_hostile_codec.wasm",
                &target_dir,
            ),
        }
    })
}

fn settings(pairs: &[(&str, &str)]) -> PluginSettings {
    wimguard::plugins::plain_settings(pairs.iter().copied())
}

fn hostile(mode: &str, limits: PluginLimits) -> WasmCodec {
    WasmCodec::load(&built().hostile, settings(&[("mode", mode)]), limits, None).expect("loading the hostile fixture")
}

#[test]
fn rle_round_trip_and_cache() {
    let cache = tempfile::tempdir().unwrap();
    let rle = &built().rle;
    let codec = WasmCodec::load(rle, PluginSettings::new(), PluginLimits::default(), Some(cache.path())).unwrap();
    assert_eq!(codec.plugin_name(), "wimguard-rle-codec");
    assert_eq!(codec.name(), "x-example-rle");
    assert_eq!(codec.max_chunk_size(), 1 << 20);
    let cached: Vec<_> = std::fs::read_dir(cache.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(cached.len(), 1, "one compiled component in the cache: {cached:?}");
    assert!(cached[0].to_string_lossy().starts_with(codec.sha256()));

    // Through the native trait objects, as the WIM writer would use them.
    let mut comp = codec.compressor(32 * 1024);
    let mut decomp = codec.decompressor(32 * 1024);
    let chunks: Vec<Vec<u8>> = vec![
        [vec![7u8; 10_000], b"abc".to_vec(), vec![0u8; 22_765]].concat(),
        vec![0x42; 32 * 1024],
        (0..32 * 1024).map(|i| (i / 300) as u8).collect(),
    ];
    for chunk in &chunks {
        let mut out = Vec::new();
        assert!(comp.compress(chunk, &mut out), "compressible chunk");
        assert!(out.len() < chunk.len());
        let mut back = vec![0u8; chunk.len()];
        decomp.decompress(&out, &mut back).unwrap();
        assert_eq!(&back, chunk);
    }
    // Incompressible data: stored raw.
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut out = Vec::new();
    assert!(!comp.compress(&noise, &mut out));
    // Corrupt input: a CodecError naming the plugin, and the instance stays usable.
    let err = decomp.decompress(&[0, 1], &mut [0u8; 1]).unwrap_err();
    assert!(
        err.reason.contains("wimguard-rle-codec") && err.reason.contains("corrupt"),
        "{err}"
    );
    let mut back = [0u8; 3];
    decomp.decompress(&[3, 9], &mut back).unwrap();
    assert_eq!(back, [9, 9, 9]);

    // Second load hits the cache (same file, still works); settings reach `init`.
    let codec2 = WasmCodec::load(
        rle,
        settings(&[("max-run", "3")]),
        PluginLimits::default(),
        Some(cache.path()),
    )
    .unwrap();
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
    let mut out = Vec::new();
    assert!(codec2.compressor(4096).compress(&[5u8; 12], &mut out));
    assert_eq!(out, [3, 5, 3, 5, 3, 5, 3, 5], "max-run=3 from config");
    // A bad setting fails the load with init's message.
    let err = WasmCodec::load(
        rle,
        settings(&[("max-run", "0")]),
        PluginLimits::default(),
        Some(cache.path()),
    )
    .unwrap_err();
    assert!(matches!(err, PluginError::Init { .. }), "{err}");
    assert!(err.to_string().contains("max-run"), "{err}");
}

#[test]
fn rejects_what_is_not_a_codec_component() {
    let err = WasmCodec::load(b"not wasm at all", PluginSettings::new(), PluginLimits::default(), None).unwrap_err();
    assert!(matches!(err, PluginError::Invalid { .. }), "{err}");
    // A valid component of another world (no imports, no exports).
    let empty = wat_component();
    let err = WasmCodec::load(&empty, PluginSettings::new(), PluginLimits::default(), None).unwrap_err();
    assert!(matches!(err, PluginError::WrongWorld { .. }), "{err}");
    assert!(
        err.to_string().contains("not a usable wimguard:plugin@1.x plugin"),
        "{err}"
    );
}

/// The smallest valid component: `(component)` in binary form.
fn wat_component() -> Vec<u8> {
    vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
}

#[test]
fn infinite_loop_hits_the_epoch_deadline() {
    let limits = PluginLimits {
        call_timeout: Duration::from_millis(300),
        ..PluginLimits::default()
    };
    let codec = hostile("loop", limits);
    let mut comp = codec.wasm_compressor();
    let err = comp.try_compress(&[1u8; 1000], &mut Vec::new()).unwrap_err();
    assert!(matches!(err, PluginError::Timeout { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("hostile-codec") && msg.contains("time limit"), "{msg}");
    // Through the native trait: stored raw, failure counted and kept.
    let mut boxed = codec.compressor(4096);
    assert!(!boxed.compress(&[1u8; 100], &mut Vec::new()));
    assert_eq!(codec.compress_failures(), 1);
    assert!(codec.last_compress_error().unwrap().contains("time limit"));
}

#[test]
fn raising_the_cancel_flag_stops_a_compress_call_in_progress() {
    // Ten minutes of limit: only the flag can end this call.
    let limits = PluginLimits {
        call_timeout: Duration::from_secs(600),
        ..PluginLimits::default()
    };
    let codec = hostile("loop", limits);
    let mut comp = codec.compressor(4096);
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    comp.watch_cancel(cancel.clone());
    let raise = std::thread::spawn({
        let cancel = cancel.clone();
        move || {
            std::thread::sleep(Duration::from_millis(200));
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    assert!(!comp.compress(&[1u8; 100], &mut Vec::new()));
    raise.join().unwrap();
    let failure = comp.take_failure().expect("the stopped call is reported");
    assert!(
        failure.contains("hostile-codec") && failure.contains("stopped because the backup was cancelled"),
        "{failure}"
    );
    // A cancelled call is not the plugin's failure.
    assert_eq!(codec.compress_failures(), 0);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    let limits = PluginLimits {
        memory_bytes: 16 << 20,
        ..PluginLimits::default()
    };
    let codec = hostile("bomb", limits);
    let mut comp = codec.wasm_compressor();
    let err = comp.try_compress(&[1u8; 1000], &mut Vec::new()).unwrap_err();
    assert!(matches!(err, PluginError::MemoryLimit { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("hostile-codec") && msg.contains("memory limit of 16777216 bytes"),
        "{msg}"
    );
}

#[test]
fn panic_traps_and_the_next_call_gets_a_fresh_instance() {
    let codec = hostile("panic", PluginLimits::default());
    let mut comp = codec.wasm_compressor();
    let mut out = Vec::new();
    assert!(comp.try_compress(&[0u8; 64], &mut out).unwrap());
    assert_eq!(out.len(), 63);
    let err = comp.try_compress(b"!boom", &mut out).unwrap_err();
    assert!(matches!(err, PluginError::Trap { .. }), "{err}");
    assert!(err.to_string().contains("hostile-codec"), "{err}");
    // The trapped instance was dropped; this call runs on a fresh one.
    assert!(comp.try_compress(&[0u8; 64], &mut out).unwrap());
    assert_eq!(out.len(), 63);
    // And decompression on its own instance is unaffected.
    let mut back = [1u8; 8];
    codec.decompressor(4096).decompress(&[], &mut back).unwrap();
    assert_eq!(back, [0u8; 8]);
}
