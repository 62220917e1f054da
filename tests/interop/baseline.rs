//! Baseline: wimlib alone (capture → apply → compare). Validates the fixture
//! builder, the tree comparator and the wimlib runner independently of
//! wimguard. If these fail, the environment (or the helpers) is broken, not
//! wimguard.

use crate::common::*;

fn wimlib_only(extra: &[&str], rpfix: bool) {
    ensure_wimlib();
    let fx = build_fixture();
    let s = Scratch::new();
    let wim = s.path("base.wim");
    wl_capture(&fx.root, &wim, "img1", extra);
    let integrity = extra.contains(&"--check");
    wimlib_verify(&wim, integrity);
    assert_eq!(wimlib_dir(&wim, "1"), tree_paths(&fx.root), "wimlib dir vs tree");
    for out in ["out1", "out2"] {
        let dest = s.path(out);
        wl_apply(&wim, "1", &dest);
        let mut o = CompareOpts::full(&fx.root, &dest);
        if !rpfix {
            o = o.no_rpfix();
        }
        assert_trees_equal(
            &fx.root,
            &dest,
            &o,
            &format!("wimlib-only round trip {extra:?} → {out}"),
        );
    }
    let sparse = snapshot(&s.path("out1"))["/files/sparse.img"].clone();
    assert!(
        sparse.allocated < sparse.size.unwrap(),
        "wimlib did not restore the sparse file with holes: {sparse:?}"
    );
}

#[test]
fn baseline_wimlib_roundtrip_lzx() {
    wimlib_only(&[], true);
}

#[test]
fn baseline_wimlib_roundtrip_none_norpfix() {
    wimlib_only(&["--compress=none", "--norpfix"], false);
}

/// The comparator must actually detect differences.
#[test]
fn baseline_comparator_detects_differences() {
    let fx = build_fixture();
    let s = Scratch::new();
    let copy = s.path("copy");
    ensure_wimlib();
    let wim = s.path("c.wim");
    wl_capture(&fx.root, &wim, "x", &["--compress=none"]);
    wl_apply(&wim, "1", &copy);
    let o = CompareOpts::full(&fx.root, &copy);
    let base = snapshot(&fx.root);
    assert!(diff_snapshots(&base, &snapshot(&copy), &o).is_empty());
    // content change (same size), mode change, mtime change, xattr change, new file, rpfix target
    std::fs::write(copy.join("files/size_64"), vec![0u8; 64]).unwrap();
    chmod(&copy.join("modes/m0777"), 0o755);
    set_times(&copy.join("names/Case.txt"), (2_208_988_800, 0), (5, 0));
    std::fs::write(copy.join("extra"), b"x").unwrap();
    std::fs::remove_file(copy.join("sym/abs_in_file")).unwrap();
    std::os::unix::fs::symlink(fx.root.join("files/size_64"), copy.join("sym/abs_in_file")).unwrap();
    if fx.xattrs {
        lsetxattr(&copy.join("xattr/with_xattrs"), "user.test", b"HELLO").unwrap();
    }
    let d = diff_snapshots(&base, &snapshot(&copy), &o);
    let text = d.join("\n");
    for needle in [
        "/files/size_64: ",
        "/modes/m0777: mode",
        "/names/Case.txt: mtime",
        "/extra: UNEXPECTED",
        "/sym/abs_in_file: symlink target",
    ] {
        assert!(text.contains(needle), "comparator missed {needle:?}; diff was:\n{text}");
    }
    if fx.xattrs {
        assert!(
            text.contains("/xattr/with_xattrs: xattrs"),
            "comparator missed xattrs; diff:\n{text}"
        );
    }
}

/// The fixture really contains what the checklist asks for (so that passing
/// comparisons mean something).
#[test]
fn baseline_fixture_contents() {
    let fx = build_fixture();
    let snap = snapshot(&fx.root);
    let kinds: std::collections::BTreeSet<String> = snap.values().map(|e| format!("{:?}", e.kind)).collect();
    for k in ["File", "Dir", "Symlink", "Fifo", "Socket"] {
        assert!(kinds.contains(k), "fixture lacks a {k}");
    }
    assert!(snap["/links/hard1"].link_group.as_ref().map(|g| g.len()) == Some(3));
    assert!(snap.keys().any(|k| k.contains('😀')));
    assert!(snap["/times/pre1970"].mtime < 0);
    assert!(snap["/sym/backslash"].target.as_deref() == Some(&b"back\\slash\\target"[..]));
    if fx.xattrs {
        assert!(
            snap["/xattr/with_xattrs"].xattrs.len() >= 4,
            "{:?}",
            snap["/xattr/with_xattrs"].xattrs
        );
    }
    if is_root() {
        assert!(fx.owners);
        assert!(snap["/modes/m0000"].mode == Some(0));
        let names = |p: &str| snap[p].xattrs.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        println!(
            "env xattrs: {:?}; acl_file: {:?}; acl_dir: {:?}; devices: {}",
            names("/files/x86/env"),
            names("/xattr/acl_file"),
            names("/xattr/acl_dir"),
            fx.devices
        );
        assert!(kinds.contains("Char") == fx.devices && kinds.contains("Block") == fx.devices);
    } else {
        skip("baseline_fixture_contents (root part)", "needs root");
    }
}
