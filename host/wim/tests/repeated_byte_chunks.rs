//! Chunks of one repeated byte (the zeros of sparse files and disk images,
//! erased flash's 0xFF) are compressed once per writer thread and copied
//! after that. These tests check that archives holding many of them, in
//! several lengths and next to chunks that differ by one byte, restore
//! bit-exactly with us and with wimlib.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use wimguard_wim::apply::{apply, ApplyOptions};
use wimguard_wim::capture::{capture, CaptureOptions};
use wimguard_wim::codecs::StandardCodecs;
use wimguard_wim::{Compression, WimArchive, WimWriter};

const CHUNK: usize = 32768;

/// Files whose chunks are runs of one byte, in whole and partial chunks,
/// and files whose chunks differ from a run in a single byte.
fn make_tree(src: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut files = Vec::new();
    // 40 chunks of zeros (a hole) and a short text tail.
    let mut sparse = vec![0u8; 40 * CHUNK];
    sparse.extend_from_slice(b"the end of a sparse file\n");
    files.push(("sparse", sparse));
    // 0xFF in 10 whole chunks and a last one of 5000 bytes.
    files.push(("erased", vec![0xFF; 10 * CHUNK + 5000]));
    // Zeros with a different byte at the end of every chunk: never a run.
    let mut marked = vec![0u8; 12 * CHUNK];
    for c in 0..12 {
        marked[c * CHUNK + CHUNK - 1] = c as u8 + 1;
    }
    files.push(("marked", marked));
    // Zeros of a length that ends mid-chunk, and a run of another byte.
    files.push(("zeros-odd", vec![0u8; 5 * CHUNK + 2000]));
    files.push(("sevens", vec![7u8; 6 * CHUNK]));
    fs::create_dir_all(src).unwrap();
    for (name, data) in &files {
        if *name == "sparse" {
            // Written as a real hole: the file is sized, then only its tail written.
            let mut f = fs::File::create(src.join(name)).unwrap();
            f.set_len(data.len() as u64).unwrap();
            f.seek(SeekFrom::Start(40 * CHUNK as u64)).unwrap();
            f.write_all(&data[40 * CHUNK..]).unwrap();
        } else {
            fs::write(src.join(name), data).unwrap();
        }
    }
    files
}

fn capture_and_restore(compression: Compression, wimlib_name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let files = make_tree(&src);
    let wim = tmp.path().join("a.wim");
    let mut w = WimWriter::create(&wim, compression, CHUNK as u32).unwrap();
    let opts = CaptureOptions {
        name: "runs".into(),
        ..Default::default()
    };
    let report = capture(&src, &mut w, None, &opts, &mut |_| {}).unwrap();
    w.commit().unwrap();
    assert_eq!(report.new_blobs, files.len() as u64, "{report:?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    // Runs compress: the archive is a small fraction of the data.
    let total: usize = files.iter().map(|(_, d)| d.len()).sum();
    let size = fs::metadata(&wim).unwrap().len() as usize;
    assert!(size < total / 20, "{size} bytes for {total} of runs");

    // Our restore.
    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    let ours = tmp.path().join("ours");
    apply(&arch, 1, &ours, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
    for (name, data) in &files {
        assert!(
            fs::read(ours.join(name)).unwrap() == *data,
            "{name} restored by us differs"
        );
    }

    // wimlib's: it must read the copied chunks as it reads any other.
    let theirs = tmp.path().join("theirs");
    let out = Command::new("wimlib-imagex")
        .arg("apply")
        .arg(&wim)
        .arg("1")
        .arg(&theirs)
        .arg("--unix-data")
        .output()
        .expect("wimlib-imagex runs (scripts/ensure-deps.sh installs it)");
    assert!(out.status.success(), "wimlib-imagex apply failed: {out:?}");
    let verify = Command::new("wimlib-imagex").arg("verify").arg(&wim).output().unwrap();
    assert!(verify.status.success(), "wimlib-imagex verify failed: {verify:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("WARNING"), "wimlib warned: {stderr}");
    for (name, data) in &files {
        assert!(
            fs::read(theirs.join(name)).unwrap() == *data,
            "{name} restored by wimlib ({wimlib_name}) differs"
        );
    }
}

#[test]
fn xpress_archives_of_repeated_byte_chunks_restore_exactly_with_us_and_wimlib() {
    capture_and_restore(Compression::Xpress, "xpress");
}

#[test]
fn lzx_archives_of_repeated_byte_chunks_restore_exactly_with_us_and_wimlib() {
    capture_and_restore(Compression::Lzx, "lzx");
}
