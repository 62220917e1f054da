//! The walk runs beside the data stage: files are read while the tree is
//! still being listed, symlink data travels in the same ordered stream, and
//! duplicates are recognised by size as sizes turn up. These tests use a
//! tree far larger than the walk's queue, so the walk has to wait for the
//! reader, and check what a capture stores and restores, and what its
//! progress reports say.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::Path;

use wimguard_wim::apply::{apply, ApplyOptions};
use wimguard_wim::capture::{capture, CaptureOptions, CapturePhase, CaptureProgress};
use wimguard_wim::codecs::StandardCodecs;
use wimguard_wim::{Compression, WimArchive, WimWriter};

const FILES: usize = 3000;
const CONTENTS: usize = 700;
const SYMLINKS: usize = 200;

/// File `i`'s contents: one of `CONTENTS` texts, of lengths that collide
/// (so the first file of a size is streamed and later ones of that size,
/// copies or not, are hashed first), a few larger than 1 MiB.
fn contents(i: usize) -> Vec<u8> {
    let k = i % CONTENTS;
    let reps = if k % 97 == 5 { 40_000 } else { 1 + k % 40 };
    format!("contents {k:04} ").repeat(reps).into_bytes()
}

/// Every entry under `root` by relative path: a file's bytes, or a
/// symlink's target prefixed with "-> ".
fn entries(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.insert(rel, format!("-> {}", t.display()).into_bytes());
            } else if m.is_dir() {
                stack.push(p);
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// `FILES` files in 37 directories under `src`, and the first `symlinks`
/// of them with a symlink beside them (half of the targets repeat, so
/// their reparse data is stored once).
fn make_tree(src: &Path, symlinks: usize) {
    for i in 0..FILES {
        let dir = src.join(format!("d{:02}", i % 37));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("f{i:05}")), contents(i)).unwrap();
        if i < symlinks {
            let target = format!("../d{:02}/f{:05}", (i / 2) % 37, i / 2);
            std::os::unix::fs::symlink(target, dir.join(format!("l{i:05}"))).unwrap();
        }
    }
}

fn capture_tree(compression: Compression) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, SYMLINKS);
    let wim = tmp.path().join("a.wim");
    let mut w = WimWriter::create(&wim, compression, 32768).unwrap();
    let opts = CaptureOptions {
        name: "overlap".into(),
        ..Default::default()
    };
    let mut reports: Vec<CaptureProgress> = Vec::new();
    let report = capture(&src, &mut w, None, &opts, &mut |p| reports.push(*p)).unwrap();
    w.commit().unwrap();

    assert_eq!(
        (report.files, report.symlinks),
        (FILES as u64, SYMLINKS as u64),
        "{report:?}"
    );
    let total: u64 = (0..FILES).map(|i| contents(i).len() as u64).sum();
    assert_eq!(report.bytes_total, total);
    assert_eq!(report.bytes_read, total, "every file is read (or found a copy) once");
    assert_eq!(
        report.new_blobs, CONTENTS as u64,
        "one blob per distinct contents: {report:?}"
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // Progress: scanning (totals growing), then writing (totals final),
    // then finalizing; never more done than found.
    let phase_rank = |p: CapturePhase| match p {
        CapturePhase::Scanning => 0,
        CapturePhase::Writing => 1,
        CapturePhase::Finalizing => 2,
    };
    for pair in reports.windows(2) {
        assert!(phase_rank(pair[0].phase) <= phase_rank(pair[1].phase), "{pair:?}");
    }
    for p in reports.iter().filter(|p| p.phase != CapturePhase::Finalizing) {
        assert!(p.files_done <= p.files_total && p.bytes_done <= p.bytes_total, "{p:?}");
    }
    let last_writing = reports
        .iter()
        .rev()
        .find(|p| p.phase == CapturePhase::Writing)
        .expect("a tree this size is still being written after the walk");
    assert_eq!(
        (
            last_writing.files_done,
            last_writing.files_total,
            last_writing.bytes_done,
            last_writing.bytes_total
        ),
        (FILES as u64, FILES as u64, total, total)
    );

    // The archive holds each distinct symlink's data once, besides the
    // contents, and restores the tree exactly.
    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    let targets: HashSet<usize> = (0..SYMLINKS).map(|i| i / 2).collect();
    assert_eq!(arch.blob_entries(), (CONTENTS + targets.len()) as u64);
    let out = tmp.path().join("out");
    apply(&arch, 1, &out, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
    let (got, want) = (entries(&out), entries(&src));
    assert_eq!(got.len(), FILES + SYMLINKS);
    assert!(got == want, "the restored tree differs from the source");
}

#[test]
fn xpress_capture_while_walking_stores_each_content_once_and_restores_the_tree() {
    capture_tree(Compression::Xpress);
}

#[test]
fn uncompressed_capture_while_walking_stores_each_content_once_and_restores_the_tree() {
    capture_tree(Compression::None);
}

/// A symlink whose target does not fit a reparse point is left out with a
/// warning; the rest of the tree is captured.
#[test]
fn a_symlink_too_long_to_store_is_skipped_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("kept"), b"kept").unwrap();
    let long = "x/".repeat(2047) + "x"; // 4095 bytes: PATH_MAX - 1
    std::os::unix::fs::symlink(&long, src.join("long")).unwrap();
    std::os::unix::fs::symlink("kept", src.join("short")).unwrap();
    let wim = tmp.path().join("a.wim");
    let mut w = WimWriter::create(&wim, Compression::Lzx, 32768).unwrap();
    let opts = CaptureOptions {
        name: "long".into(),
        ..Default::default()
    };
    let report = capture(&src, &mut w, None, &opts, &mut |_| {}).unwrap();
    w.commit().unwrap();
    assert_eq!((report.files, report.symlinks), (1, 1), "{report:?}");
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].contains("/long: symlink target is too long"),
        "{:?}",
        report.warnings
    );
    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    let out = tmp.path().join("out");
    apply(&arch, 1, &out, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
    let mut want = entries(&src);
    want.remove("long");
    assert_eq!(entries(&out), want);
}

/// A cancel raised while files are being written ends the capture with
/// `Cancelled`, whatever the walk is doing.
#[test]
fn cancel_while_walking_and_writing_ends_the_capture() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 0);
    let wim = tmp.path().join("a.wim");
    let mut w = WimWriter::create(&wim, Compression::Lzx, 32768).unwrap();
    let cancel = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let opts = CaptureOptions {
        name: "cancelled".into(),
        cancel: Some(cancel.clone()),
        ..Default::default()
    };
    let mut last_done = 0;
    let r = capture(&src, &mut w, None, &opts, &mut |p| {
        last_done = p.files_done;
        if p.files_done >= 10 {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    assert!(matches!(r, Err(wimguard_wim::WimError::Cancelled)), "{r:?}");
    assert!(last_done < FILES as u64, "cancelled before the end: {last_done}");
}

/// A tree of symlinks only, with long distinct targets: their data goes
/// through the compression threads in batches bounded by bytes, and every
/// link restores.
#[test]
fn a_tree_of_long_symlinks_is_stored_through_the_codec_and_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    const LINKS: usize = 1500;
    for i in 0..LINKS {
        let target = format!("{i:04}/{}", "long-component/".repeat(60));
        std::os::unix::fs::symlink(target, src.join(format!("l{i:04}"))).unwrap();
    }
    let wim = tmp.path().join("a.wim");
    let mut w = WimWriter::create(&wim, Compression::Lzx, 32768).unwrap();
    let opts = CaptureOptions {
        name: "links".into(),
        ..Default::default()
    };
    let mut phases = Vec::new();
    let report = capture(&src, &mut w, None, &opts, &mut |p| phases.push(p.phase)).unwrap();
    w.commit().unwrap();
    assert_eq!(
        (report.files, report.symlinks, report.new_blobs),
        (0, LINKS as u64, 0),
        "{report:?}"
    );
    assert_eq!(phases.last(), Some(&CapturePhase::Finalizing));
    assert!(phases.contains(&CapturePhase::Writing), "{phases:?}");
    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    assert_eq!(arch.blob_entries(), LINKS as u64, "one blob per distinct target");
    // Compressed: each target repeats a component 60 times.
    assert!(fs::metadata(&wim).unwrap().len() < (LINKS * 900) as u64);
    let out = tmp.path().join("out");
    apply(&arch, 1, &out, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
    assert!(entries(&out) == entries(&src), "the restored links differ");
}
