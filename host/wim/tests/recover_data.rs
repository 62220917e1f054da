//! Data recovery mode (`ApplyOptions::recover_data`, wimlib's
//! `--recover-data`): a chunk that no longer decodes does not stop the
//! restore; the file is restored as well as it decodes, named in a warning,
//! and every other file is restored intact.

use std::fs;

use wimguard_wim::apply::{apply, ApplyOptions};
use wimguard_wim::capture::{capture, CaptureOptions};
use wimguard_wim::codecs::StandardCodecs;
use wimguard_wim::{Compression, WimArchive, WimError, WimWriter};

/// Text that compresses, different in every line.
fn text(lines: usize, tag: &str) -> Vec<u8> {
    (0..lines)
        .map(|i| format!("{tag} line {i}: the quick brown fox {} jumps\n", i * 7919 % 1000))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn a_chunk_that_does_not_decode_is_restored_as_well_as_it_decodes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let damaged = text(20_000, "damaged");
    let intact = text(3_000, "intact");
    fs::write(src.join("damaged.txt"), &damaged).unwrap();
    fs::write(src.join("intact.txt"), &intact).unwrap();
    let wim = tmp.path().join("a.wim");
    let mut w = WimWriter::create(&wim, Compression::Xpress, 32768).unwrap();
    let opts = CaptureOptions {
        name: "one".into(),
        ..Default::default()
    };
    capture(&src, &mut w, None, &opts, &mut |_| {}).unwrap();
    w.commit().unwrap();

    // Overwrite the middle of the damaged file's compressed data (its
    // resource is the largest blob) with bytes no XPRESS stream holds.
    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    let big = arch
        .blobs
        .values()
        .max_by_key(|b| b.reshdr.original_size)
        .map(|b| b.reshdr)
        .unwrap();
    drop(arch);
    let mut bytes = fs::read(&wim).unwrap();
    let mid = (big.offset + big.size_in_wim / 2) as usize;
    bytes[mid..mid + 64].fill(0xff);
    fs::write(&wim, &bytes).unwrap();

    // Without recovery: the restore stops, naming the file and the way on.
    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    let e = apply(
        &arch,
        1,
        &tmp.path().join("strict"),
        &ApplyOptions::default(),
        &mut |_, _| {},
    )
    .unwrap_err();
    assert!(
        matches!(&e, WimError::Corrupt(m) if m.contains("damaged.txt") && m.contains("--recover-data")),
        "{e}"
    );

    let out = tmp.path().join("recovered");
    let opts = ApplyOptions {
        recover_data: true,
        ..Default::default()
    };
    let report = apply(&arch, 1, &out, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("damaged.txt"), "{:?}", report.warnings);
    assert_eq!(fs::read(out.join("intact.txt")).unwrap(), intact);
    let got = fs::read(out.join("damaged.txt")).unwrap();
    assert_eq!(got.len(), damaged.len());
    // The chunks before the damaged one decode as they were.
    let chunk = 32768;
    let bad_chunk_start = got
        .iter()
        .zip(&damaged)
        .position(|(a, b)| a != b)
        .expect("the damage shows");
    assert!(
        bad_chunk_start >= chunk,
        "the first chunk was intact, yet differs at {bad_chunk_start}"
    );
    assert_eq!(
        got[..bad_chunk_start / chunk * chunk],
        damaged[..bad_chunk_start / chunk * chunk]
    );
}
