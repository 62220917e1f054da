//! Duplicate contents: a compressed capture hashes the files whose size
//! another file (or a stored blob) shares before compressing them, so a
//! duplicate is stored by reference without going through the codec. These
//! tests check that every such path stores each content once and restores
//! every copy bit for bit, with wimguard and with wimlib.

use std::collections::BTreeMap;
use std::path::Path;

use crate::common::*;

/// Writes `files` (relative path, contents) under `root`.
fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (rel, data) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
}

/// Content blobs in the archive: hash -> (size, reference count).
fn content_blobs(wim: &Path) -> BTreeMap<String, (u64, u64)> {
    wimlib_blobs(wim)
        .into_iter()
        .filter(|b| !b.metadata)
        .map(|b| (b.hash, (b.size, b.refcount)))
        .collect()
}

/// Every file of `files` restores to its contents from image `image`, with
/// wimguard and with wimlib.
fn assert_restores(wim: &Path, image: &str, files: &[(&str, &[u8])]) {
    let s = Scratch::new();
    let ours = s.path("ours");
    let theirs = s.path("theirs");
    wg_extract(wim, image, &ours, &[]);
    wimlib(&[
        os("apply"),
        wim.as_os_str(),
        os(image),
        theirs.as_os_str(),
        os("--unix-data"),
    ]);
    for dest in [&ours, &theirs] {
        for (rel, data) in files {
            let got = std::fs::read(dest.join(rel)).unwrap_or_else(|e| panic!("{rel} in {}: {e}", dest.display()));
            assert!(
                got == *data,
                "{rel} restored from image {image} into {} differs from what was captured",
                dest.display()
            );
        }
    }
}

fn duplicates_in_one_capture(compression: &str) {
    ensure_wimlib();
    let mut rng = Rng::new(41);
    let small = text_bytes(&mut rng, 5000);
    let small_other = text_bytes(&mut rng, 5000); // same size, other contents
    let large = text_bytes(&mut rng, 3 << 20); // read twice: hash, then chunks
    let mut large_other = large.clone();
    large_other[(3 << 20) - 1] ^= 1; // same size, differs in its last byte
    let lone = text_bytes(&mut rng, 777); // a size nobody shares
    let files: Vec<(&str, &[u8])> = vec![
        ("a/small", &small),
        ("b/small-copy", &small),
        ("b/deeper/small-again", &small),
        ("c/small-other", &small_other),
        ("a/large", &large),
        ("c/large-copy", &large),
        ("c/large-other", &large_other),
        ("lone", &lone),
    ];
    let src = tempdir();
    write_tree(src.path(), &files);
    let s = Scratch::new();
    let wim = s.path("dups.wim");
    wg_capture(src.path(), &wim, "img", &["--compression", compression]);
    wimlib_verify(&wim, false);

    let blobs = content_blobs(&wim);
    let expect: BTreeMap<String, (u64, u64)> = [
        (&small, 3u64),
        (&small_other, 1),
        (&large, 2),
        (&large_other, 1),
        (&lone, 1),
    ]
    .into_iter()
    .map(|(data, refs)| (sha1_hex(data), (data.len() as u64, refs)))
    .collect();
    assert_eq!(
        blobs, expect,
        "content blobs of a {compression} capture (hash -> size, references)"
    );
    assert_restores(&wim, "1", &files);
}

#[test]
fn lzx_stores_duplicates_once_and_restores_every_copy() {
    duplicates_in_one_capture("lzx");
}

#[test]
fn xpress_stores_duplicates_once_and_restores_every_copy() {
    duplicates_in_one_capture("xpress");
}

#[test]
fn uncompressed_stores_duplicates_once_and_restores_every_copy() {
    duplicates_in_one_capture("none");
}

/// Files whose contents an earlier image already stored (copied, renamed,
/// or touched so their identity changed) are matched against the stored
/// blobs: the archive gains no content blob for them.
#[test]
fn contents_stored_by_an_earlier_image_are_not_stored_again() {
    ensure_wimlib();
    let mut rng = Rng::new(42);
    let doc = text_bytes(&mut rng, 40_000);
    let big = text_bytes(&mut rng, 2 << 20);
    let src = tempdir();
    write_tree(src.path(), &[("doc", &doc), ("big", &big)]);
    let s = Scratch::new();
    let wim = s.path("append.wim");
    wg_capture(src.path(), &wim, "first", &["--compression", "lzx"]);
    let before = content_blobs(&wim);
    assert_eq!(before.len(), 2, "first image: {before:?}");

    // A copy of each under a new name, the originals rewritten with the
    // same bytes (new ctime and mtime: read again), and one new file.
    let fresh = text_bytes(&mut rng, 40_000); // shares doc's size
    write_tree(
        src.path(),
        &[
            ("doc", &doc),
            ("big", &big),
            ("copies/doc", &doc),
            ("copies/big", &big),
            ("fresh", &fresh),
        ],
    );
    wg_capture(src.path(), &wim, "second", &[]);
    wimlib_verify(&wim, false);
    let after = content_blobs(&wim);
    assert_eq!(after.len(), 3, "only the new file adds a blob: {after:?}");
    assert_eq!(
        after[&sha1_hex(&doc)],
        (doc.len() as u64, 3),
        "doc: one name in image 1, two in image 2"
    );
    assert_eq!(
        after[&sha1_hex(&big)],
        (big.len() as u64, 3),
        "big: one name in image 1, two in image 2"
    );
    assert_eq!(after[&sha1_hex(&fresh)], (fresh.len() as u64, 1));
    assert_restores(
        &wim,
        "2",
        &[
            ("doc", &doc),
            ("big", &big),
            ("copies/doc", &doc),
            ("copies/big", &big),
            ("fresh", &fresh),
        ],
    );
    assert_restores(&wim, "1", &[("doc", &doc), ("big", &big)]);
}
