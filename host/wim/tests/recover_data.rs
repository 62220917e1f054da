//! Data recovery mode (`ApplyOptions::recover_data`, wimlib's
//! `--recover-data`): a chunk that no longer decodes does not stop the
//! restore; the file is restored as well as it decodes, named in a warning,
//! and every other file is restored intact.

use std::fs;

use wimguard_wim::apply::{apply, ApplyOptions};
use wimguard_wim::codecs::StandardCodecs;
use wimguard_wim::{Compression, WimArchive, WimError};

mod support;

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
    // The same contents under a second name: one blob, two damaged files.
    fs::write(src.join("same.txt"), &damaged).unwrap();
    fs::write(src.join("intact.txt"), &intact).unwrap();
    let wim = tmp.path().join("a.wim");
    support::archive_of(&src, &wim, Compression::Xpress);

    // Overwrite the middle of the damaged file's compressed data (its
    // resource is the largest blob) with bytes no XPRESS stream holds.
    let big = support::largest_blob(&wim);
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
    // Every damaged file is named.
    assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
    for name in ["damaged.txt", "same.txt"] {
        assert!(
            report.warnings.iter().any(|w| w.contains(name)),
            "{name}: {:?}",
            report.warnings
        );
    }
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

/// A blob whose data cannot even be located (its chunk table broken) is
/// no reason to give up the rest: recovering, its file is restored empty
/// and named, every other file intact.
#[test]
fn a_blob_that_cannot_be_read_at_all_leaves_its_file_empty_and_the_rest_restored() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let big = text(40_000, "big");
    let small = text(100, "small");
    fs::write(src.join("big.txt"), &big).unwrap();
    fs::write(src.join("small.txt"), &small).unwrap();
    let wim = tmp.path().join("a.wim");
    support::archive_of(&src, &wim, Compression::Lzx);
    let r = support::largest_blob(&wim);
    // The chunk table's third entry (4 bytes each, before the chunks).
    let mut bytes = fs::read(&wim).unwrap();
    let at = r.offset as usize + 8;
    bytes[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    fs::write(&wim, &bytes).unwrap();

    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    assert!(apply(
        &arch,
        1,
        &tmp.path().join("strict"),
        &ApplyOptions::default(),
        &mut |_, _| {}
    )
    .is_err());
    let out = tmp.path().join("recovered");
    let opts = ApplyOptions {
        recover_data: true,
        ..Default::default()
    };
    let report = apply(&arch, 1, &out, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(
        report.warnings[0].contains("big.txt") && report.warnings[0].contains("restored empty"),
        "{:?}",
        report.warnings
    );
    assert_eq!(fs::read(out.join("small.txt")).unwrap(), small);
    assert_eq!(fs::read(out.join("big.txt")).unwrap(), b"");
}
