//! Direction A (§13.2): wimlib writes, wimguard reads.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;

use crate::common::*;

/// wimlib captures the fixture with `extra`; wimguard verifies, lists and
/// extracts it (by index and by name) and the result equals the source.
fn direction_a(extra: &[&str], rpfix: bool) {
    ensure_wimlib();
    let fx = build_fixture();
    let s = Scratch::new();
    let wim = s.path("a.wim");
    wl_capture(&fx.root, &wim, "img1", extra);
    wimlib_verify(&wim, extra.contains(&"--check"));

    wg_verify(&wim);
    assert_eq!(
        wg_ls(&wim, "1"),
        wimlib_dir(&wim, "1"),
        "`wimguard archive ls` vs `wimlib-imagex dir`"
    );
    assert_eq!(
        wg_ls(&wim, "img1"),
        tree_paths(&fx.root),
        "`wimguard archive ls` (by name) vs source tree"
    );

    for (image, out) in [("1", "by_index"), ("img1", "by_name")] {
        let dest = s.path(out);
        wg_extract(&wim, image, &dest, &[]);
        let mut o = CompareOpts::full(&fx.root, &dest);
        if !rpfix {
            o = o.no_rpfix();
        }
        assert_trees_equal(
            &fx.root,
            &dest,
            &o,
            &format!("wimguard extract of wimlib WIM {extra:?}, image {image}"),
        );
    }
    let sp = snapshot(&s.path("by_index"))["/files/sparse.img"].clone();
    assert!(
        sp.allocated < sp.size.unwrap(),
        "wimguard restored the sparse file fully allocated ({} of {} bytes)",
        sp.allocated,
        sp.size.unwrap()
    );
}

#[test]
fn a_extract_none() {
    direction_a(&["--compress=none"], true);
}

#[test]
fn a_extract_xpress() {
    direction_a(&["--compress=xpress"], true);
}

#[test]
fn a_extract_lzx() {
    direction_a(&[], true);
}

#[test]
fn a_extract_lzx_check() {
    direction_a(&["--check"], true);
}

#[test]
fn a_extract_norpfix() {
    direction_a(&["--norpfix"], false);
}

/// LZX with a non-default chunk size (wimlib allows 2^15..2^21 for LZX).
#[test]
fn a_extract_lzx_chunk_size_64k() {
    direction_a(&["--chunk-size=65536"], true);
}

/// append (shared blobs, hole), delete --soft (refcount-0 blobs), optimize
/// (rebuilt layout): wimguard reads every state.
#[test]
fn a_append_delete_soft_optimize() {
    ensure_wimlib();
    let t1 = build_fixture();
    let t2 = build_tree2(2);
    let s = Scratch::new();
    let wim = s.path("a.wim");
    wl_capture(&t1.root, &wim, "img1", &[]);
    wl_append(&t2.root, &wim, "img2", &[]);
    wimlib_verify(&wim, false);

    wg_verify(&wim);
    let check = |image: &str, src: &Path, tag: &str| {
        let dest = s.path(&format!("{tag}_{image}"));
        wg_extract(&wim, image, &dest, &[]);
        assert_trees_equal(
            src,
            &dest,
            &CompareOpts::full(src, &dest),
            &format!("{tag}: wimguard extract image {image}"),
        );
        assert_eq!(
            wg_ls(&wim, image),
            wimlib_dir(&wim, image),
            "{tag}: ls vs dir of image {image}"
        );
    };
    check("1", &t1.root, "appended");
    check("2", &t2.root, "appended");
    check("img2", &t2.root, "appended");

    wimlib(&[os("delete"), wim.as_os_str(), os("1"), os("--soft")]);
    assert!(
        wimlib_blobs(&wim).iter().any(|b| b.refcount == 0),
        "test premise: delete --soft should leave refcount-0 blobs"
    );
    wg_verify(&wim);
    check("1", &t2.root, "soft_deleted");
    check("img2", &t2.root, "soft_deleted");
    let bad = wg_raw(&[
        os("archive"),
        os("extract"),
        wim.as_os_str(),
        os("2"),
        s.path("nope").as_os_str(),
    ]);
    assert!(
        !bad.ok(),
        "image 2 no longer exists after delete, extract must fail:\n{}",
        bad.describe()
    );

    wimlib(&[os("optimize"), wim.as_os_str()]);
    wg_verify(&wim);
    check("1", &t2.root, "optimized");
}

/// Extract single paths: files (incl. astral-plane name, deep), a directory
/// with its contents, a symlink, an empty directory — each lands at DEST +
/// its path, nothing else is created except ancestor directories.
#[test]
fn a_extract_single_paths() {
    ensure_wimlib();
    let fx = build_fixture();
    let s = Scratch::new();
    let wim = s.path("a.wim");
    wl_capture(&fx.root, &wim, "img1", &[]);
    let mut deep = String::from("/deep");
    for i in 0..24 {
        deep.push_str(&format!("/level{i:02}"));
    }
    deep.push_str("/leaf.txt");
    let wanted = [
        "/files/size_32769",
        "/names/😀 emoji.txt",
        deep.as_str(),
        "/names/ünïcödé dir",
        "/sym/rel",
        "/sym/abs_in_file",
        "/empty_dir",
        "/xattr",
    ];
    let dest = s.path("out");
    wg_extract(&wim, "1", &dest, &wanted);

    let src = snapshot(&fx.root);
    let got = snapshot(&dest);
    let under = |p: &str| wanted.iter().any(|w| p == *w || p.starts_with(&format!("{w}/")));
    let mut exp_sub = Snapshot::new();
    let mut got_sub = Snapshot::new();
    for (p, e) in &src {
        if under(p) {
            let mut e = e.clone();
            e.link_group = None;
            exp_sub.insert(p.clone(), e);
        }
    }
    let mut extra = Vec::new();
    for (p, e) in &got {
        if under(p) {
            let mut e = e.clone();
            e.link_group = None;
            got_sub.insert(p.clone(), e);
        } else if p != "/" {
            let is_ancestor = wanted.iter().any(|w| w.starts_with(&format!("{p}/")));
            if !(is_ancestor && e.kind == Kind::Dir) {
                extra.push(p.clone());
            }
        }
    }
    assert!(
        extra.is_empty(),
        "extracting {wanted:?} created unrelated paths: {extra:?}"
    );
    assert_snapshots_equal(
        &exp_sub,
        &got_sub,
        &CompareOpts::full(&fx.root, &dest),
        "single-path extraction",
    );

    // ls with a PATH argument lists like `wimlib-imagex dir --path`
    for p in ["/names", "/files/size_1"] {
        let ours = wg(&[os("archive"), os("ls"), wim.as_os_str(), os("1"), os(p)]);
        let theirs = wimlib(&[os("dir"), wim.as_os_str(), os("1"), OsStr::new(&format!("--path={p}"))]);
        assert_eq!(sorted_lines(&ours.stdout), sorted_lines(&theirs.stdout), "ls {p}");
    }

    // a path that does not exist in the image is an error
    let bad = wg_raw(&[
        os("archive"),
        os("extract"),
        wim.as_os_str(),
        os("1"),
        s.path("o2").as_os_str(),
        os("/no/such/path"),
    ]);
    assert!(
        !bad.ok(),
        "extracting a nonexistent path must fail:\n{}",
        bad.describe()
    );
    assert!(!bad.stderr.trim().is_empty(), "no error message:\n{}", bad.describe());
}

/// Solid (LZMS, version 0xE00) WIMs: wimguard either extracts correctly or
/// fails cleanly with a message (no panic, non-zero exit).
#[test]
fn a_solid_wim_extracts_or_fails_cleanly() {
    ensure_wimlib();
    let fx = build_tree2(3);
    let s = Scratch::new();
    let wim = s.path("s.wim");
    wl_capture(&fx.root, &wim, "solid", &["--solid"]);
    let dest = s.path("out");
    let out = wg_raw(&[os("archive"), os("extract"), wim.as_os_str(), os("1"), dest.as_os_str()]);
    if out.ok() {
        assert_trees_equal(
            &fx.root,
            &dest,
            &CompareOpts::full(&fx.root, &dest),
            "solid WIM extraction",
        );
    } else {
        assert!(
            !out.stderr.trim().is_empty(),
            "solid WIM rejected without a message:\n{}",
            out.describe()
        );
        println!("note: solid WIM not supported by wimguard: {}", out.stderr.trim());
    }
}

/// Root only: devices and ownership written by wimlib are restored by wimguard.
#[test]
fn a_root_devices_and_ownership() {
    if skip_unless_root("a_root_devices_and_ownership") {
        return;
    }
    ensure_wimlib();
    let fx = build_fixture();
    let s = Scratch::new();
    let wim = s.path("r.wim");
    wl_capture(&fx.root, &wim, "img1", &[]);
    let dest = s.path("out");
    wg_extract(&wim, "1", &dest, &[]);
    let snap = snapshot(&dest);
    let e = |p: &str| {
        snap.get(p)
            .unwrap_or_else(|| panic!("{p} missing after wimguard extract"))
            .clone()
    };
    assert_eq!(
        (e("/owners/odd").uid, e("/owners/odd").gid),
        (12345, 54321),
        "ownership"
    );
    assert_eq!(
        (e("/owners/link_4242").uid, e("/owners/link_4242").gid),
        (4242, 4243),
        "symlink ownership (lchown)"
    );
    assert_eq!(
        e("/owners/setuid_owned").mode,
        Some(0o6755),
        "setuid+setgid after chown"
    );
    assert_eq!(
        (e("/special/fifo").uid, e("/special/fifo").gid),
        (77, 88),
        "fifo ownership"
    );
    if fx.devices {
        assert_eq!(
            (e("/special/chr_1_3").kind, e("/special/chr_1_3").rdev),
            (Kind::Char, Some(makedev(1, 3)))
        );
        assert_eq!(
            (e("/special/blk_7_200").kind, e("/special/blk_7_200").rdev),
            (Kind::Block, Some(makedev(7, 200)))
        );
    } else {
        skip(
            "a_root_devices_and_ownership (devices part)",
            "mknod not permitted here",
        );
    }
    assert_trees_equal(
        &fx.root,
        &dest,
        &CompareOpts::full(&fx.root, &dest),
        "root: wimlib capture → wimguard extract",
    );
}

/// Image names and indices: both select the same image; names listed by
/// wimguard info match wimlib's.
#[test]
fn a_image_selection_by_name_and_index() {
    ensure_wimlib();
    let t1 = build_tree2(11);
    let t2 = build_tree2(12);
    let s = Scratch::new();
    let wim = s.path("n.wim");
    wl_capture(&t1.root, &wim, "alpha", &[]);
    wl_append(&t2.root, &wim, "beta gamma", &[]);
    let info = wg(&[os("archive"), os("info"), wim.as_os_str()]);
    for n in ["alpha", "beta gamma"] {
        assert!(
            info.stdout.contains(n),
            "wimguard info misses image name {n:?}:\n{}",
            info.describe()
        );
    }
    let a: BTreeSet<String> = wg_ls(&wim, "beta gamma").into_iter().collect();
    let b: BTreeSet<String> = wg_ls(&wim, "2").into_iter().collect();
    assert_eq!(a, b);
    let dest = s.path("o");
    wg_extract(&wim, "beta gamma", &dest, &[]);
    assert_trees_equal(
        &t2.root,
        &dest,
        &CompareOpts::full(&t2.root, &dest),
        "extract by name with a space",
    );
}
