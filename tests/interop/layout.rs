//! Appends to archives whose resources are not where writers usually put
//! them. The format fixes no order: a WIM laid out header, blob table, XML,
//! then data is valid (wimlib and we verify it), and an append must start
//! after the last byte any resource uses, not after the table or the XML.

use std::fs;
use std::path::Path;

use crate::common::*;

const HDR_BLOB_TABLE: usize = 0x30;
const HDR_XML: usize = 0x48;
const HDR_BOOT_METADATA: usize = 0x60;
const HDR_INTEGRITY: usize = 0x7c;
const BLOB_ENTRY: usize = 50;

fn reshdr_at(b: &[u8], at: usize) -> (u64, u64) {
    let mut s = [0u8; 8];
    s[..7].copy_from_slice(&b[at..at + 7]);
    let size = u64::from_le_bytes(s);
    let off = u64::from_le_bytes(b[at + 8..at + 16].try_into().unwrap());
    (off, size)
}

fn set_offset(b: &mut [u8], at: usize, off: u64) {
    b[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
}

/// Rewrites a wimlib-written WIM (data, blob table, XML[, integrity]) as
/// header, blob table, XML, data: every resource moves by the size of the
/// table and the XML; the integrity table is dropped.
fn data_last(src: &Path, dst: &Path) {
    let b = fs::read(src).unwrap();
    let (bt_off, bt_size) = reshdr_at(&b, HDR_BLOB_TABLE);
    let (xml_off, xml_size) = reshdr_at(&b, HDR_XML);
    assert!(bt_off < xml_off, "expected wimlib's order: blob table before XML");
    let data = &b[208..bt_off as usize];
    let shift = bt_size + xml_size;
    let mut table = b[bt_off as usize..(bt_off + bt_size) as usize].to_vec();
    for e in table.chunks_exact_mut(BLOB_ENTRY) {
        let (off, _) = reshdr_at(e, 0);
        set_offset(e, 0, off + shift);
    }
    let mut header = b[..208].to_vec();
    set_offset(&mut header, HDR_BLOB_TABLE, 208);
    set_offset(&mut header, HDR_XML, 208 + bt_size);
    let (boot_off, boot_size) = reshdr_at(&b, HDR_BOOT_METADATA);
    if boot_size != 0 {
        set_offset(&mut header, HDR_BOOT_METADATA, boot_off + shift);
    }
    header[HDR_INTEGRITY..HDR_INTEGRITY + 24].fill(0);
    let mut out = header;
    out.extend_from_slice(&table);
    out.extend_from_slice(&b[xml_off as usize..(xml_off + xml_size) as usize]);
    out.extend_from_slice(data);
    fs::write(dst, out).unwrap();
}

/// Regular files of mixed sizes (some compressible, one over a chunk).
fn tree(dir: &Path, seed: u64) {
    let mut rng = Rng::new(seed);
    fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    for (i, size) in [0usize, 1, 100, 4096, 40_000, 300_000].iter().enumerate() {
        fs::write(dir.join(format!("f{i}.bin")), rng.bytes(*size)).unwrap();
        fs::write(dir.join(format!("sub/t{i}.txt")), text_bytes(&mut rng, size * 2)).unwrap();
    }
    fs::write(dir.join("sub/deeper/shared.txt"), b"same in every tree\n").unwrap();
}

/// Every regular file under `src` exists under `dest` with the same bytes.
fn assert_same_files(src: &Path, dest: &Path, ctx: &str) {
    let paths = tree_paths(src);
    assert!(!paths.is_empty());
    for rel in paths {
        let rel = rel.trim_start_matches('/');
        let (a, b) = (src.join(rel), dest.join(rel));
        if fs::symlink_metadata(&a).unwrap().is_file() {
            let got = fs::read(&b).unwrap_or_else(|e| panic!("{ctx}: {rel} missing in restore: {e}"));
            assert!(fs::read(&a).unwrap() == got, "{ctx}: {rel} differs after restore");
        }
    }
}

fn check_layout_case(compress: &str) {
    ensure_wimlib();
    let s = Scratch::new();
    let (a, b) = (s.path("a"), s.path("b"));
    tree(&a, 1);
    tree(&b, 2);
    let plain = s.path("plain.wim");
    wl_capture(&a, &plain, "one", &[&format!("--compress={compress}")]);
    let wim = s.path("data-last.wim");
    data_last(&plain, &wim);
    // The crafted file is valid: both tools accept it before we touch it.
    wimlib_verify(&wim, false);
    let v = wg_verify(&wim);
    assert!(v.ok(), "wimguard rejects the valid data-last WIM:\n{}", v.describe());
    let before = file_len(&wim);

    let out = wg_capture(&b, &wim, "two", &[]);
    assert!(out.ok(), "append failed:\n{}", out.describe());
    assert!(file_len(&wim) > before, "the archive shrank on append");
    wimlib_verify(&wim, false);
    assert_eq!(wimlib_image_count(&wim), 2);
    for (image, src) in [("1", &a), ("2", &b)] {
        let theirs = s.path(&format!("wl-{image}"));
        wl_apply(&wim, image, &theirs);
        assert_same_files(src, &theirs, &format!("wimlib apply image {image}"));
        let ours = s.path(&format!("wg-{image}"));
        let x = wg_extract(&wim, image, &ours, &[]);
        assert!(x.ok(), "{}", x.describe());
        assert_same_files(src, &ours, &format!("wimguard extract image {image}"));
    }
}

#[test]
fn append_to_data_last_wim_keeps_every_image_uncompressed() {
    check_layout_case("none");
}

#[test]
fn append_to_data_last_wim_keeps_every_image_lzx() {
    check_layout_case("lzx");
}

/// An integrity locator far past the end of the file: the append is refused
/// at once with a message naming the table, and the file is left as it was.
#[test]
fn integrity_table_past_the_end_is_refused_before_writing() {
    ensure_wimlib();
    let s = Scratch::new();
    let a = s.path("a");
    tree(&a, 3);
    let wim = s.path("x.wim");
    wl_capture(&a, &wim, "one", &["--check"]);
    let mut bytes = fs::read(&wim).unwrap();
    set_offset(&mut bytes, HDR_INTEGRITY, 1 << 40);
    fs::write(&wim, &bytes).unwrap();

    let out = wg_raw(&[
        os("archive"),
        os("capture"),
        a.as_os_str(),
        wim.as_os_str(),
        os("--name"),
        os("two"),
    ]);
    assert!(
        !out.ok(),
        "append into a WIM with an impossible integrity offset succeeded"
    );
    assert!(
        out.stderr.contains("integrity table") && out.stderr.contains("past the end"),
        "{}",
        out.describe()
    );
    assert_eq!(fs::read(&wim).unwrap(), bytes, "the refused append changed the file");
}

/// Archive names up to NAME_MAX (255 bytes) work for a new archive and for
/// appends: the temp name next to it must not grow with the name.
#[test]
fn archive_names_of_255_bytes_are_written_and_appended() {
    ensure_wimlib();
    let s = Scratch::new();
    let a = s.path("a");
    tree(&a, 4);
    let name = format!("{}.wim", "n".repeat(251));
    assert_eq!(name.len(), 255);
    let wim = s.path(&name);
    wg_capture(&a, &wim, "one", &[]);
    wg_capture(&a, &wim, "two", &["--compression", "lzx"]);
    wimlib_verify(&wim, false);
    assert_eq!(wimlib_image_count(&wim), 2);
    let leftovers: Vec<_> = fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("wimguard-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}
