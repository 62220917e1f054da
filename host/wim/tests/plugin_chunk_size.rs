//! A codec plugin's `max-chunk-size` is checked wherever an archive is
//! started or appended to, so no archive gets chunks its codec cannot take
//! or the format does not allow (a remote archive with 2 KiB chunks would
//! be written and then be unreadable; an upgraded codec that lowered its
//! limit would be sent chunks above it).

use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec};
use wimguard_wim::capture::{capture, CaptureOptions};
use wimguard_wim::codecs::{CodecResolver, SharedCodec};
use wimguard_wim::writer::check_plugin_chunk_size;
use wimguard_wim::WimWriter;

/// XPRESS under another name, with an adjustable limit.
struct Limited;
static LIMIT: AtomicUsize = AtomicUsize::new(1 << 16);

impl Codec for Limited {
    fn name(&self) -> &'static str {
        "x-test-limited"
    }
    fn max_chunk_size(&self) -> usize {
        LIMIT.load(Ordering::Relaxed)
    }
    fn compressor(&self, chunk_size: usize) -> Box<dyn ChunkCompressor> {
        wimguard_xpress::Xpress.compressor(chunk_size)
    }
    fn decompressor(&self, chunk_size: usize) -> Box<dyn ChunkDecompressor> {
        wimguard_xpress::Xpress.decompressor(chunk_size)
    }
}
static LIMITED: Limited = Limited;

/// This test's own codec registry: it knows only [`Limited`].
struct OnlyLimited;

impl CodecResolver for OnlyLimited {
    fn plugin_codec(&self, id: &str) -> Result<SharedCodec, String> {
        match id {
            "x-test-limited" => Ok(Arc::new(Limited)),
            other => Err(format!("no codec {other}")),
        }
    }
}

#[test]
fn chunk_sizes_outside_the_codec_or_the_format_are_refused_before_writing() {
    LIMIT.store(1 << 16, Ordering::Relaxed);
    assert!(check_plugin_chunk_size(&LIMITED, 1 << 15).is_ok());
    for bad in [2048, 3 << 12, 1 << 17] {
        let e = check_plugin_chunk_size(&LIMITED, bad).unwrap_err().to_string();
        assert!(
            e.contains(&format!("chunk size {bad}")) && e.contains("max-chunk-size"),
            "{e}"
        );
    }
    let t = tempfile::tempdir().unwrap();
    let e = WimWriter::create_with_plugin(&t.path().join("a.wim"), Arc::new(Limited), 2048)
        .err()
        .unwrap();
    assert!(e.to_string().contains("chunk size 2048"), "{e}");
    assert!(!t.path().join("a.wim").exists());

    // An archive of 32 KiB chunks, then the codec "upgraded" to 16 KiB:
    // the append is refused at once and the archive is left as it was.
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"some bytes some bytes some bytes").unwrap();
    let wim = t.path().join("b.wim");
    let mut w = WimWriter::create_with_plugin(&wim, Arc::new(Limited), 1 << 15).unwrap();
    let opts = CaptureOptions {
        name: "one".into(),
        ..Default::default()
    };
    capture(&src, &mut w, None, &opts, &mut |_| {}).unwrap();
    w.commit().unwrap();
    let before = std::fs::read(&wim).unwrap();
    LIMIT.store(1 << 14, Ordering::Relaxed);
    let e = WimWriter::append(&wim, &OnlyLimited).err().unwrap().to_string();
    assert!(e.contains("chunk size 32768") && e.contains("x-test-limited"), "{e}");
    assert_eq!(
        std::fs::read(&wim).unwrap(),
        before,
        "a refused append changed the archive"
    );

    // Without a resolver that knows the codec, the archive cannot be read,
    // and the message says where it can.
    let e = wimguard_wim::WimArchive::open(&wim, &wimguard_wim::codecs::StandardCodecs)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("x-test-limited") && e.contains("wimguard server"), "{e}");
    LIMIT.store(1 << 16, Ordering::Relaxed);
    let arch = wimguard_wim::WimArchive::open(&wim, &OnlyLimited).unwrap();
    assert_eq!(arch.codec().unwrap().name(), "x-test-limited");
}
