//! Direction B (§13.3): wimguard writes, wimlib reads.

use std::collections::BTreeMap;
use std::ffi::OsStr;

use crate::common::*;

const F_COMPRESSION: u64 = 0x2;
const F_RP_FIX: u64 = 0x80;
const F_XPRESS: u64 = 0x20000;
const F_LZX: u64 = 0x40000;

/// Captures the fixture with wimguard (`compression` None = default) and
/// checks the result with every read-only wimlib command.
fn direction_b(compression: Option<&str>, check: bool) {
    ensure_wimlib();
    let fx = build_fixture();
    let src_before = snapshot(&fx.root);
    let s = Scratch::new();
    let wim = s.path("b.wim");
    let mut extra: Vec<&str> = vec!["--description", "wimguard test image"];
    if let Some(c) = compression {
        extra.extend(["--compression", c]);
    }
    if check {
        extra.push("--check");
    }
    wg_capture(&fx.root, &wim, "img1", &extra);

    // Capturing must not change the source (incl. atimes).
    let src_after = snapshot(&fx.root);
    let same = CompareOpts {
        owners: true,
        atime: true,
        mtime: true,
        root_meta: true,
        rpfix: None,
    };
    assert_snapshots_equal(&src_before, &src_after, &same, "source tree after wimguard capture");

    // verify
    wimlib_verify(&wim, check);

    // info
    let info = wimlib(&[os("info"), wim.as_os_str()]);
    let expect_comp = match compression.unwrap_or("lzx") {
        "none" => "None",
        "xpress" => "XPRESS",
        "lzx" => "LZX",
        other => panic!("unknown compression {other}"),
    };
    for needle in [
        "Image Count:    1",
        &format!("Compression:    {expect_comp}"),
        "Name:                   img1",
        "Description:            wimguard test image",
    ] {
        assert!(
            info.stdout.contains(needle),
            "wimlib info lacks {needle:?}:\n{}",
            info.describe()
        );
    }

    // info --header
    let h = wimlib_header(&wim);
    let flags = parse_num(&h["Flags"]);
    let chunk = parse_num(&h["Chunk Size"]);
    assert_eq!(parse_num(&h["Version"]), 0x10d00, "version; header: {h:#?}");
    assert_eq!(parse_num(&h["Header Size"]), 208);
    assert_eq!(parse_num(&h["Image Count"]), 1);
    assert!(
        flags & F_RP_FIX != 0,
        "RP_FIX header flag not set (rpfix capture): {flags:#x}"
    );
    match expect_comp {
        "None" => {
            assert_eq!(flags & (F_COMPRESSION | F_XPRESS | F_LZX), 0, "flags {flags:#x}");
            assert_eq!(chunk, 0, "uncompressed WIM must have chunk size 0");
        }
        "XPRESS" => {
            assert_eq!(
                flags & (F_COMPRESSION | F_XPRESS | F_LZX),
                F_COMPRESSION | F_XPRESS,
                "flags {flags:#x}"
            );
            assert_eq!(chunk, 32768);
        }
        _ => {
            assert_eq!(
                flags & (F_COMPRESSION | F_XPRESS | F_LZX),
                F_COMPRESSION | F_LZX,
                "flags {flags:#x}"
            );
            assert_eq!(chunk, 32768);
        }
    }
    assert_eq!(flags & 0x40, 0, "WRITE_IN_PROGRESS left set");
    let integrity_size = parse_num(&h["Integrity Size"]);
    assert_eq!(
        integrity_size != 0,
        check,
        "integrity table presence (size {integrity_size}) vs --check={check}"
    );
    assert_appendable_layout(&wim);

    // info --blobs: no duplicates, metadata refcount 1, content refcounts >= 1
    let blobs = wimlib_blobs(&wim);
    let mut seen = BTreeMap::new();
    for b in &blobs {
        assert!(seen.insert(b.hash.clone(), ()).is_none(), "duplicate blob {}", b.hash);
        assert!(b.size > 0, "empty blob in table: {b:?}");
        if b.metadata {
            assert_eq!(b.refcount, 1, "metadata blob refcount: {b:?}");
        } else {
            assert!(b.refcount >= 1, "blob with refcount 0 in a fresh capture: {b:?}");
        }
    }
    assert_eq!(
        blobs.iter().filter(|b| b.metadata).count(),
        1,
        "one metadata resource expected"
    );

    // info --xml
    let xml = wimlib(&[os("info"), wim.as_os_str(), os("--xml")]);
    let raw = &xml.stdout_bytes;
    assert!(
        raw.starts_with(&[0xff, 0xfe]),
        "XML does not start with a UTF-16LE BOM: {:02x?}",
        &raw[..raw.len().min(16)]
    );
    let units: Vec<u16> = raw[2..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let text = String::from_utf16(&units).expect("XML is not valid UTF-16LE");
    assert!(
        text.starts_with("<WIM>")
            && text.trim_end().ends_with("</WIM>")
            && text.contains("<IMAGE INDEX=\"1\">")
            && text.contains("<NAME>img1</NAME>"),
        "unexpected XML:\n{text}"
    );

    // dir
    assert_eq!(
        wimlib_dir(&wim, "1"),
        tree_paths(&fx.root),
        "`wimlib-imagex dir` path list vs source tree"
    );
    let det = wimlib(&[
        os("dir"),
        wim.as_os_str(),
        os("1"),
        os("--detailed"),
        os("--path=/links/hard1"),
    ]);
    assert!(
        det.stdout.contains("Link Count          = 3"),
        "hard link count in dir --detailed:\n{}",
        det.describe()
    );
    assert!(
        det.stdout.contains("mode:0100644"),
        "UNIX data in dir --detailed:\n{}",
        det.describe()
    );

    // apply twice into different directories (rpfix targets follow DEST)
    for out in ["out1", "out2"] {
        let dest = s.path(out);
        wl_apply(&wim, "1", &dest);
        assert_trees_equal(
            &fx.root,
            &dest,
            &CompareOpts::full(&fx.root, &dest),
            &format!("wimlib apply of wimguard WIM ({compression:?}, check={check}) → {out}"),
        );
    }
    // sparse flag: wimlib re-creates holes only for files flagged sparse
    let sp = snapshot(&s.path("out1"))["/files/sparse.img"].clone();
    assert!(
        sp.allocated < sp.size.unwrap(),
        "sparse file restored fully allocated ({} of {} bytes): SPARSE_FILE attribute not captured?",
        sp.allocated,
        sp.size.unwrap()
    );

    // extract single file to stdout and to a dest dir
    let big = std::fs::read(fx.root.join("files/random_big.bin")).unwrap();
    let so = wimlib(&[
        os("extract"),
        wim.as_os_str(),
        os("1"),
        os("/files/random_big.bin"),
        os("--to-stdout"),
    ]);
    assert!(
        so.stdout_bytes == big,
        "extract --to-stdout content differs ({} vs {} bytes)",
        so.stdout_bytes.len(),
        big.len()
    );
    let x = s.path("x");
    wimlib(&[
        os("extract"),
        wim.as_os_str(),
        os("1"),
        os("/names/😀 emoji.txt"),
        os("--unix-data"),
        OsStr::new("--dest-dir"),
        x.as_os_str(),
    ]);
    assert_eq!(
        std::fs::read(x.join("😀 emoji.txt")).unwrap(),
        std::fs::read(fx.root.join("names/😀 emoji.txt")).unwrap()
    );

    // wimguard's own reader agrees
    wg_verify(&wim);
    assert_eq!(
        wg_ls(&wim, "1"),
        tree_paths(&fx.root),
        "`wimguard archive ls` vs source tree"
    );
}

#[test]
fn b_capture_none() {
    direction_b(Some("none"), false);
}

#[test]
fn b_capture_xpress() {
    direction_b(Some("xpress"), false);
}

#[test]
fn b_capture_lzx() {
    direction_b(Some("lzx"), false);
}

#[test]
fn b_capture_default_is_lzx() {
    direction_b(None, false);
}

#[test]
fn b_capture_lzx_check() {
    direction_b(Some("lzx"), true);
}

#[test]
fn b_capture_xpress_check() {
    direction_b(Some("xpress"), true);
}

#[test]
fn b_capture_none_check() {
    direction_b(Some("none"), true);
}

/// The blob table written by wimguard has the same content blobs (hash, size)
/// and the same reference counts as wimlib's own capture of the same tree
/// (refcounts per dentry, §5.4; symlink reparse blobs identical, §7.3).
#[test]
fn b_blob_table_matches_wimlib_capture() {
    ensure_wimlib();
    let fx = build_fixture();
    let s = Scratch::new();
    let ours = s.path("wg.wim");
    let theirs = s.path("wl.wim");
    wg_capture(&fx.root, &ours, "img1", &["--compression", "lzx"]);
    wl_capture(&fx.root, &theirs, "img1", &[]);
    let table = |w: &std::path::Path| -> BTreeMap<String, (u64, u64)> {
        wimlib_blobs(w)
            .into_iter()
            .filter(|b| !b.metadata)
            .map(|b| (b.hash, (b.size, b.refcount)))
            .collect()
    };
    let a = table(&ours);
    let b = table(&theirs);
    let mut diffs = Vec::new();
    for (h, v) in &b {
        match a.get(h) {
            None => diffs.push(format!(
                "{h}: missing in wimguard WIM (wimlib: size {}, refcount {})",
                v.0, v.1
            )),
            Some(x) if x != v => diffs.push(format!("{h}: wimguard (size, refcount) {x:?}, wimlib {v:?}")),
            _ => {}
        }
    }
    for (h, v) in &a {
        if !b.contains_key(h) {
            diffs.push(format!("{h}: only in wimguard WIM (size {}, refcount {})", v.0, v.1));
        }
    }
    assert!(diffs.is_empty(), "blob tables differ:\n  {}", diffs.join("\n  "));
}

/// Two images written by wimguard (second capture appends); wimlib applies
/// each image and `all`.
#[test]
fn b_multi_image_apply_all() {
    ensure_wimlib();
    let t1 = build_fixture();
    let t2 = build_tree2(2);
    let s = Scratch::new();
    let wim = s.path("m.wim");
    wg_capture(&t1.root, &wim, "first", &[]);
    wg_capture(&t2.root, &wim, "second", &[]);
    assert_eq!(wimlib_image_count(&wim), 2);
    wimlib_verify(&wim, false);
    let all = s.path("all");
    wimlib(&[
        os("apply"),
        wim.as_os_str(),
        os("all"),
        all.as_os_str(),
        os("--unix-data"),
    ]);
    let d1 = all.join("first");
    let d2 = all.join("second");
    assert_trees_equal(&t1.root, &d1, &CompareOpts::full(&t1.root, &d1), "apply all: image 1");
    assert_trees_equal(&t2.root, &d2, &CompareOpts::full(&t2.root, &d2), "apply all: image 2");
    let one = s.path("one");
    wl_apply(&wim, "second", &one);
    assert_trees_equal(
        &t2.root,
        &one,
        &CompareOpts::full(&t2.root, &one),
        "apply image 'second'",
    );
}

/// wimguard info/--json/ls/verify on its own file.
#[test]
fn b_wimguard_info_and_json() {
    let fx = build_tree2(5);
    let s = Scratch::new();
    let wim = s.path("i.wim");
    wg_capture(&fx.root, &wim, "infoimg", &["--description", "some description"]);
    let info = wg(&[os("archive"), os("info"), wim.as_os_str()]);
    assert!(
        info.stdout.contains("infoimg"),
        "info does not show the image name:\n{}",
        info.describe()
    );
    let js = wg(&[os("archive"), os("info"), wim.as_os_str(), os("--json")]);
    let t = js.stdout.trim();
    assert!(
        t.starts_with('{') && t.ends_with('}') && t.contains("infoimg"),
        "info --json is not a JSON object naming the image:\n{}",
        js.describe()
    );
}

/// Root only: devices, ownership and setuid on owned files survive
/// wimguard capture → wimlib apply (explicit checks on top of the full tree
/// comparison).
#[test]
fn b_root_devices_and_ownership() {
    if skip_unless_root("b_root_devices_and_ownership") {
        return;
    }
    ensure_wimlib();
    let fx = build_fixture();
    assert!(fx.owners, "fixture has no ownership variety although root");
    let s = Scratch::new();
    let wim = s.path("r.wim");
    wg_capture(&fx.root, &wim, "img1", &[]);
    let dest = s.path("out");
    wl_apply(&wim, "1", &dest);
    let snap = snapshot(&dest);
    let e = |p: &str| snap.get(p).unwrap_or_else(|| panic!("{p} missing after apply")).clone();
    assert_eq!((e("/owners/odd").uid, e("/owners/odd").gid), (12345, 54321));
    assert_eq!(
        (e("/owners/link_4242").uid, e("/owners/link_4242").gid),
        (4242, 4243),
        "symlink ownership (lchown)"
    );
    assert_eq!(e("/owners/setuid_owned").mode, Some(0o6755));
    assert_eq!((e("/owners/dir_1001").uid, e("/owners/dir_1001").gid), (1001, 1002));
    if fx.devices {
        assert_eq!(e("/special/chr_1_3").kind, Kind::Char);
        assert_eq!(e("/special/chr_1_3").rdev, Some(makedev(1, 3)));
        assert_eq!(e("/special/blk_7_200").kind, Kind::Block);
        assert_eq!(e("/special/blk_7_200").rdev, Some(makedev(7, 200)));
    } else {
        skip(
            "b_root_devices_and_ownership (devices part)",
            "mknod not permitted here",
        );
    }
    assert_trees_equal(&fx.root, &dest, &CompareOpts::full(&fx.root, &dest), "root round trip");
}

/// `--norpfix`: absolute links into the tree are stored as-is; RP_FIX is not
/// set and wimlib restores the original targets.
#[test]
fn b_capture_norpfix() {
    ensure_wimlib();
    let fx = build_fixture();
    let s = Scratch::new();
    let wim = s.path("n.wim");
    wg_capture(&fx.root, &wim, "img1", &["--norpfix"]);
    wimlib_verify(&wim, false);
    let dest = s.path("out");
    wl_apply(&wim, "1", &dest);
    assert_trees_equal(
        &fx.root,
        &dest,
        &CompareOpts::full(&fx.root, &dest).no_rpfix(),
        "--norpfix capture → wimlib apply",
    );
    let dest2 = s.path("out2");
    wg_extract(&wim, "1", &dest2, &[]);
    assert_trees_equal(
        &fx.root,
        &dest2,
        &CompareOpts::full(&fx.root, &dest2).no_rpfix(),
        "--norpfix capture → wimguard extract",
    );
    // wimlib's `capture --norpfix` leaves the RP_FIX header flag clear (0x40002 vs 0x40082)
    let h = read_raw_header(&wim);
    assert_eq!(
        h.flags & F_RP_FIX as u32,
        0,
        "RP_FIX header flag set although --norpfix (wimlib clears it): {:#x}",
        h.flags
    );
}

/// `--exclude PAT` (gitignore-style): excluded names are absent from the
/// image; everything else is there.
#[test]
fn b_capture_exclude() {
    ensure_wimlib();
    let fx = build_fixture();
    let s = Scratch::new();
    let wim = s.path("e.wim");
    wg_capture(&fx.root, &wim, "img1", &["--exclude", "*.txt", "--exclude", "special"]);
    wimlib_verify(&wim, false);
    let expected: Vec<String> = tree_paths(&fx.root)
        .into_iter()
        .filter(|p| !p.ends_with(".txt") && p != "/special" && !p.starts_with("/special/"))
        .collect();
    assert_eq!(
        wimlib_dir(&wim, "1"),
        expected,
        "paths after --exclude '*.txt' --exclude special"
    );
}

/// `wimlib-imagex apply --strict-acls`: xattr/ACL/ownership failures would be
/// errors instead of warnings.
#[test]
fn b_apply_strict_acls() {
    ensure_wimlib();
    let fx = build_fixture();
    let s = Scratch::new();
    let wim = s.path("s.wim");
    wg_capture(&fx.root, &wim, "img1", &[]);
    let dest = s.path("out");
    wimlib(&[
        os("apply"),
        wim.as_os_str(),
        os("1"),
        dest.as_os_str(),
        os("--unix-data"),
        os("--strict-acls"),
    ]);
    assert_trees_equal(
        &fx.root,
        &dest,
        &CompareOpts::full(&fx.root, &dest),
        "apply --strict-acls",
    );
}

/// Absolute links to the captured root and into it are fixed up (rpfix):
/// both tools restore them pointing at the same places, the root link
/// without a trailing slash.
#[test]
fn b_absolute_links_to_the_root_restore_as_wimlib_does() {
    ensure_wimlib();
    let s = Scratch::new();
    let src = s.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/f"), b"x").unwrap();
    std::os::unix::fs::symlink(&src, src.join("to_root")).unwrap();
    std::os::unix::fs::symlink(src.join("sub"), src.join("to_sub")).unwrap();
    let wim = s.path("r.wim");
    wg_capture(&src, &wim, "img1", &[]);
    wimlib_verify(&wim, false);
    let (ours, theirs) = (s.path("ours"), s.path("theirs"));
    wg_extract(&wim, "1", &ours, &[]);
    wl_apply(&wim, "1", &theirs);
    for (name, under) in [("to_root", ""), ("to_sub", "/sub")] {
        let got = std::fs::read_link(ours.join(name)).unwrap();
        let want = std::fs::read_link(theirs.join(name)).unwrap();
        let strip = |p: &std::path::Path, base: &std::path::Path| {
            p.to_str()
                .unwrap()
                .strip_prefix(base.to_str().unwrap())
                .map(str::to_string)
        };
        assert_eq!(strip(&got, &ours), Some(under.to_string()), "{name}: ours {got:?}");
        assert_eq!(
            strip(&want, &theirs),
            Some(under.to_string()),
            "{name}: wimlib {want:?}"
        );
    }
}
