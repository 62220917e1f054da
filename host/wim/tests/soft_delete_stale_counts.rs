//! A soft delete trusts no reference count so far as to drop a blob: a
//! table whose counts are too low (another tool's bug, a hand edit) must
//! not cost the other images their contents.

use std::fs;
use std::path::Path;

use wimguard_wim::apply::{apply, ApplyOptions};
use wimguard_wim::capture::{capture, CaptureOptions};
use wimguard_wim::codecs::StandardCodecs;
use wimguard_wim::writer::soft_delete_image;
use wimguard_wim::{Compression, WimArchive, WimWriter};

/// Blob table entries: resource header (24 bytes), part number (2), then
/// the reference count (4) and the SHA-1 (20).
const ENTRY: usize = 50;
const REFCOUNT_AT: usize = 26;

fn capture_into(src: &Path, wim: &Path, name: &str) {
    let mut w = if wim.exists() {
        WimWriter::append(wim, &StandardCodecs).unwrap()
    } else {
        WimWriter::create(wim, Compression::Xpress, 32768).unwrap()
    };
    let opts = CaptureOptions {
        name: name.into(),
        ..Default::default()
    };
    capture(src, &mut w, None, &opts, &mut |_| {}).unwrap();
    w.commit().unwrap();
}

#[test]
fn blobs_other_images_use_survive_a_soft_delete_despite_stale_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("shared"), b"in both images, counted once too few".repeat(100)).unwrap();
    let wim = tmp.path().join("a.wim");
    capture_into(&src, &wim, "one");
    capture_into(&src, &wim, "two");

    // Every count set to 1, though each blob is used by both images.
    let table = WimArchive::open(&wim, &StandardCodecs).unwrap().header.blob_table;
    let mut bytes = fs::read(&wim).unwrap();
    let start = table.offset as usize;
    let len = table.original_size as usize;
    assert_eq!(len % ENTRY, 0);
    let mut patched = 0;
    for entry in bytes[start..start + len].chunks_exact_mut(ENTRY) {
        entry[REFCOUNT_AT..REFCOUNT_AT + 4].copy_from_slice(&1u32.to_le_bytes());
        patched += 1;
    }
    assert!(patched >= 3, "two metadata resources and a file: {patched} entries");
    fs::write(&wim, &bytes).unwrap();

    soft_delete_image(&wim, 1, &StandardCodecs).unwrap();
    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    assert_eq!(arch.image_count(), 1);
    let out = tmp.path().join("out");
    apply(&arch, 1, &out, &ApplyOptions::default(), &mut |_, _| {}).expect("the image left restores");
    assert_eq!(
        fs::read(out.join("shared")).unwrap(),
        fs::read(src.join("shared")).unwrap()
    );
}
