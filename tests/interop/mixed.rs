//! Mixed modifications (§13.4): both tools modify the same archive.

use std::path::Path;

use crate::common::*;

/// Both tools extract `image` of `wim` equal to `src`.
fn both_extract_equal(wim: &Path, image: &str, src: &Path, s: &Scratch, tag: &str) {
    let d1 = s.path(&format!("{tag}_wg_{image}"));
    wg_extract(wim, image, &d1, &[]);
    assert_trees_equal(
        src,
        &d1,
        &CompareOpts::full(src, &d1),
        &format!("{tag}: wimguard extract image {image}"),
    );
    let d2 = s.path(&format!("{tag}_wl_{image}"));
    wl_apply(wim, image, &d2);
    assert_trees_equal(
        src,
        &d2,
        &CompareOpts::full(src, &d2),
        &format!("{tag}: wimlib apply image {image}"),
    );
}

fn wimlib_appends_to_wimguard(compression: &str, check: bool) {
    ensure_wimlib();
    let t1 = build_fixture();
    let t2 = build_tree2(2);
    let s = Scratch::new();
    let wim = s.path("b.wim");
    let mut extra = vec!["--compression", compression];
    if check {
        extra.push("--check");
    }
    wg_capture(&t1.root, &wim, "wg-capture", &extra);
    assert_appendable_layout(&wim);
    let before = file_len(&wim);
    // wl_append fails on "Falling back to re-building entire WIM"
    wl_append(&t2.root, &wim, "wl-append", &[]);
    assert!(file_len(&wim) > before, "in-place append should grow the file");
    wimlib_verify(&wim, check);
    wg_verify(&wim);
    assert_eq!(wimlib_image_count(&wim), 2);
    both_extract_equal(&wim, "1", &t1.root, &s, "wl-appended");
    both_extract_equal(&wim, "2", &t2.root, &s, "wl-appended");
    both_extract_equal(&wim, "wl-append", &t2.root, &s, "wl-appended-byname");
}

#[test]
fn mixed_wimlib_appends_to_wimguard_lzx() {
    wimlib_appends_to_wimguard("lzx", false);
}

#[test]
fn mixed_wimlib_appends_to_wimguard_xpress_check() {
    wimlib_appends_to_wimguard("xpress", true);
}

#[test]
fn mixed_wimlib_appends_to_wimguard_none() {
    wimlib_appends_to_wimguard("none", false);
}

fn wimguard_appends_to_wimlib(wl_extra: &[&str], check: bool) {
    ensure_wimlib();
    let t1 = build_fixture();
    let t2 = build_tree2(2);
    let t3 = build_tree2(3);
    let s = Scratch::new();
    let wim = s.path("a.wim");
    wl_capture(&t1.root, &wim, "wl-capture", wl_extra);
    let before = file_len(&wim);
    wg_capture(&t2.root, &wim, "wg-append", &[]);
    assert!(file_len(&wim) > before);
    // appended in place after the old end, layout keeps wimlib's append possible
    assert_appendable_layout(&wim);
    let h = read_raw_header(&wim);
    assert!(
        h.blob_table.0 >= before,
        "new blob table should be written after the old end ({before}), got {:?}",
        h.blob_table
    );
    assert_eq!(h.flags & 0x40, 0, "WRITE_IN_PROGRESS left set");
    wimlib_verify(&wim, check);
    wg_verify(&wim);
    assert_eq!(wimlib_image_count(&wim), 2);
    both_extract_equal(&wim, "1", &t1.root, &s, "wg-appended");
    both_extract_equal(&wim, "2", &t2.root, &s, "wg-appended");
    // and wimlib can still append in place afterwards
    wl_append(&t3.root, &wim, "wl-again", &[]);
    wimlib_verify(&wim, check);
    both_extract_equal(&wim, "3", &t3.root, &s, "wl-after-wg");
    both_extract_equal(&wim, "2", &t2.root, &s, "wl-after-wg");
}

#[test]
fn mixed_wimguard_appends_to_wimlib_lzx() {
    wimguard_appends_to_wimlib(&[], false);
}

#[test]
fn mixed_wimguard_appends_to_wimlib_xpress_check() {
    // The WIM had an integrity table: it must still have a valid one (§11.2 step 5).
    wimguard_appends_to_wimlib(&["--compress=xpress", "--check"], true);
}

#[test]
fn mixed_wimguard_appends_to_wimlib_none() {
    wimguard_appends_to_wimlib(&["--compress=none"], false);
}

/// Appending an unchanged tree adds an image with almost no new bytes, and
/// reference counts double (§5.4).
#[test]
fn mixed_unchanged_append_dedups() {
    ensure_wimlib();
    let fx = build_fixture();
    let s = Scratch::new();
    let wim = s.path("d.wim");
    wg_capture(&fx.root, &wim, "first", &[]);
    let one = file_len(&wim);
    let refs1: std::collections::BTreeMap<String, u64> = wimlib_blobs(&wim)
        .into_iter()
        .filter(|b| !b.metadata)
        .map(|b| (b.hash, b.refcount))
        .collect();
    wg_capture(&fx.root, &wim, "second", &[]);
    let two = file_len(&wim);
    let growth = two - one;
    assert!(
        growth < fx.total_bytes / 20,
        "appending an unchanged tree grew the WIM by {growth} bytes (tree holds {} bytes of file data)",
        fx.total_bytes
    );
    wimlib_verify(&wim, false);
    let blobs = wimlib_blobs(&wim);
    assert_eq!(blobs.iter().filter(|b| b.metadata).count(), 2);
    for b in blobs.iter().filter(|b| !b.metadata) {
        assert_eq!(
            refs1.get(&b.hash).map(|r| r * 2),
            Some(b.refcount),
            "refcount of {} after appending the same tree",
            b.hash
        );
    }
    both_extract_equal(&wim, "2", &fx.root, &s, "dedup");
    both_extract_equal(&wim, "first", &fx.root, &s, "dedup");
}

/// wimguard delete: remaining images intact, wimlib verifies, file shrinks
/// when the deleted image had unique data; wimlib can append afterwards.
#[test]
fn mixed_wimguard_delete() {
    ensure_wimlib();
    let t1 = build_fixture();
    let t2 = build_tree2(2);
    let t3 = build_tree2(3);
    let s = Scratch::new();
    let wim = s.path("x.wim");
    wg_capture(&t2.root, &wim, "img-a", &[]);
    let s0 = file_len(&wim);
    wg_capture(&t1.root, &wim, "img-big", &[]); // ~4 MiB (2 MiB compressed) of unique data
    let unique = file_len(&wim) - s0;
    wg_capture(&t3.root, &wim, "img-c", &[]);
    let before = file_len(&wim);
    wg(&[os("archive"), os("delete"), wim.as_os_str(), os("img-big")]);
    let after = file_len(&wim);
    assert!(
        after + unique * 9 / 10 < before,
        "deleting the image that added {unique} bytes of unique data did not shrink the file accordingly: {before} → {after}"
    );
    wimlib_verify(&wim, false);
    wg_verify(&wim);
    assert_eq!(wimlib_image_count(&wim), 2);
    both_extract_equal(&wim, "1", &t2.root, &s, "after-delete");
    both_extract_equal(&wim, "2", &t3.root, &s, "after-delete");
    both_extract_equal(&wim, "img-c", &t3.root, &s, "after-delete-byname");
    assert!(
        wimlib_blobs(&wim).iter().all(|b| b.refcount > 0),
        "unreferenced blobs left after wimguard delete"
    );
    // delete by index
    wg(&[os("archive"), os("delete"), wim.as_os_str(), os("1")]);
    wimlib_verify(&wim, false);
    assert_eq!(wimlib_image_count(&wim), 1);
    both_extract_equal(&wim, "1", &t3.root, &s, "after-delete2");
    let t4 = build_tree2(4);
    wl_append(&t4.root, &wim, "wl-after-delete", &[]);
    wimlib_verify(&wim, false);
    both_extract_equal(&wim, "2", &t4.root, &s, "wl-after-delete");
}

/// wimguard deletes an image from a wimlib-written archive.
#[test]
fn mixed_wimguard_deletes_from_wimlib_archive() {
    ensure_wimlib();
    let t1 = build_tree2(7);
    let t2 = build_tree2(8);
    let s = Scratch::new();
    let wim = s.path("l.wim");
    wl_capture(&t1.root, &wim, "one", &["--check"]);
    wl_append(&t2.root, &wim, "two", &[]);
    wg(&[os("archive"), os("delete"), wim.as_os_str(), os("1")]);
    wimlib_verify(&wim, true);
    assert_eq!(wimlib_image_count(&wim), 1);
    both_extract_equal(&wim, "1", &t2.root, &s, "wg-delete-wl");
    both_extract_equal(&wim, "two", &t2.root, &s, "wg-delete-wl");
}

/// wimlib export (raw copy and recompress), delete (rebuild and --soft) and
/// optimize on a wimguard archive; wimguard reads every result.
#[test]
fn mixed_wimlib_export_delete_optimize_wimguard_archive() {
    ensure_wimlib();
    let t1 = build_fixture();
    let t2 = build_tree2(2);
    let t3 = build_tree2(3);
    let s = Scratch::new();
    let wim = s.path("b.wim");
    wg_capture(&t1.root, &wim, "one", &[]);
    wg_capture(&t2.root, &wim, "two", &[]);
    wg_capture(&t3.root, &wim, "three", &[]);

    let c = s.path("c.wim");
    wimlib(&[os("export"), wim.as_os_str(), os("1"), c.as_os_str()]);
    wimlib_verify(&c, false);
    wg_verify(&c);
    both_extract_equal(&c, "1", &t1.root, &s, "export-raw");

    let d = s.path("d.wim");
    wimlib(&[
        os("export"),
        wim.as_os_str(),
        os("2"),
        d.as_os_str(),
        os("--compress=xpress"),
    ]);
    wimlib_verify(&d, false);
    both_extract_equal(&d, "1", &t2.root, &s, "export-xpress");

    wimlib(&[os("delete"), wim.as_os_str(), os("1")]);
    wimlib_verify(&wim, false);
    wg_verify(&wim);
    both_extract_equal(&wim, "1", &t2.root, &s, "wl-delete");

    wimlib(&[os("delete"), wim.as_os_str(), os("1"), os("--soft")]);
    wg_verify(&wim);
    both_extract_equal(&wim, "1", &t3.root, &s, "wl-delete-soft");

    // (wimlib checks the existing integrity table while opening: the WIM has none yet)
    wimlib_allow(
        &[os("optimize"), wim.as_os_str(), os("--check")],
        &["does not contain integrity information"],
    );
    wimlib_verify(&wim, true);
    wg_verify(&wim);
    both_extract_equal(&wim, "1", &t3.root, &s, "wl-optimize");

    // and wimguard appends to the optimized (integrity-carrying) file
    wg_capture(&t1.root, &wim, "again", &[]);
    wimlib_verify(&wim, true);
    both_extract_equal(&wim, "2", &t1.root, &s, "wg-after-optimize");
}

/// Appending with a different `--compression` keeps the archive's codec.
#[test]
fn mixed_append_keeps_existing_codec() {
    ensure_wimlib();
    let t1 = build_tree2(31);
    let t2 = build_tree2(32);
    let s = Scratch::new();
    let wim = s.path("k.wim");
    wl_capture(&t1.root, &wim, "x", &["--compress=xpress"]);
    let out = wg_raw(&[
        os("archive"),
        os("capture"),
        t2.root.as_os_str(),
        wim.as_os_str(),
        os("--name"),
        os("y"),
        os("--compression"),
        os("lzx"),
    ]);
    if out.ok() {
        let h = wimlib_header(&wim);
        assert!(
            h["Flags"].contains("2008") || parse_num(&h["Flags"]) & 0x20000 != 0,
            "codec changed: {h:#?}"
        );
        wimlib_verify(&wim, false);
        both_extract_equal(&wim, "2", &t2.root, &s, "codec");
    } else {
        assert!(!out.stderr.trim().is_empty());
    }
}

/// While another process holds wimlib's advisory lock (flock LOCK_EX) on the
/// WIM, wimguard must not modify it (§11.2: "wimguard should take the same lock").
#[test]
fn mixed_respects_wimlib_lock() {
    use std::os::unix::io::AsRawFd;
    ensure_wimlib();
    let t1 = build_tree2(41);
    let t2 = build_tree2(42);
    let s = Scratch::new();
    let wim = s.path("l.wim");
    wl_capture(&t1.root, &wim, "one", &[]);
    let before = std::fs::read(&wim).unwrap();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&wim).unwrap();
    assert_eq!(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    // premise: wimlib honours the lock
    let wl = wimlib_raw(&[
        os("append"),
        t2.root.as_os_str(),
        wim.as_os_str(),
        os("two"),
        os("--unix-data"),
    ]);
    assert!(
        !wl.ok(),
        "premise: wimlib appended although the file was locked:\n{}",
        wl.describe()
    );
    let out = run_with_timeout(
        &wimguard(),
        &[
            os("archive"),
            os("capture"),
            t2.root.as_os_str(),
            wim.as_os_str(),
            os("--name"),
            os("two"),
        ],
        std::time::Duration::from_secs(60),
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    assert!(
        !out.ok(),
        "wimguard appended to a WIM locked by another process:\n{}",
        out.describe()
    );
    let del = wg_raw(&[os("archive"), os("delete"), wim.as_os_str(), os("1")]);
    assert!(
        !del.ok(),
        "wimguard deleted from a WIM locked by another process:\n{}",
        del.describe()
    );
    assert!(std::fs::read(&wim).unwrap() == before, "locked WIM was modified");
    drop(f);
    wg_capture(&t2.root, &wim, "two", &[]);
    wimlib_verify(&wim, false);
}

/// Killing wimguard (SIGKILL) at various points of an append leaves a WIM
/// that both tools open: the original image intact, the new one either
/// absent or complete; only the WRITE_IN_PROGRESS warning is allowed.
#[test]
fn mixed_kill_during_append() {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    ensure_wimlib();
    let t1 = build_tree2(51);
    let t2 = build_fixture(); // several MiB of new data → the append takes a while
    let s = Scratch::new();
    let base = s.path("base.wim");
    wl_capture(&t1.root, &base, "one", &[]);
    let mut completed = 0;
    let mut interrupted = 0;
    for (i, delay_ms) in [0u64, 5, 15, 30, 60, 100, 150, 220, 300, 450, 700].iter().enumerate() {
        let wim = s.path(&format!("k{i}.wim"));
        std::fs::copy(&base, &wim).unwrap();
        let mut child = Command::new(wimguard())
            .args([
                os("archive"),
                os("capture"),
                t2.root.as_os_str(),
                wim.as_os_str(),
                os("--name"),
                os("two"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        let mut done = false;
        while start.elapsed() < Duration::from_millis(*delay_ms) {
            if child.try_wait().unwrap().is_some() {
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if !done {
            let _ = child.kill();
        }
        let st = child.wait().unwrap();
        if st.success() {
            completed += 1;
        } else {
            interrupted += 1;
        }
        let allowed = &["WRITE_IN_PROGRESS", "does not contain integrity information"];
        let v = wimlib_allow(&[os("verify"), wim.as_os_str()], allowed);
        assert!(
            v.stdout.contains("successfully verified"),
            "after kill at {delay_ms} ms:\n{}",
            v.describe()
        );
        let info = wimlib_allow(&[os("info"), wim.as_os_str()], allowed);
        let n = if info.stdout.contains("Image Count:    2") {
            2
        } else {
            1
        };
        if st.success() {
            assert_eq!(n, 2, "wimguard exited 0 but the image is missing");
        }
        let d1 = s.path(&format!("k{i}_1"));
        wg_extract(&wim, "1", &d1, &[]);
        assert_trees_equal(
            &t1.root,
            &d1,
            &CompareOpts::full(&t1.root, &d1),
            &format!("image 1 after kill at {delay_ms} ms"),
        );
        if n == 2 {
            let d2 = s.path(&format!("k{i}_2"));
            wg_extract(&wim, "2", &d2, &[]);
            assert_trees_equal(
                &t2.root,
                &d2,
                &CompareOpts::full(&t2.root, &d2),
                &format!("image 2 after kill at {delay_ms} ms"),
            );
        }
        // and the file can be appended to again by both tools
        let t3 = s.path(&format!("t3_{i}"));
        std::fs::create_dir(&t3).unwrap();
        std::fs::write(t3.join("f"), format!("again {i}")).unwrap();
        wg_capture(&t3, &wim, "again", &[]);
        wimlib_allow(
            &[
                os("append"),
                t3.as_os_str(),
                wim.as_os_str(),
                os("wl-again"),
                os("--unix-data"),
            ],
            allowed,
        );
        wimlib_verify(&wim, false);
    }
    println!("kill test: {interrupted} interrupted, {completed} completed appends");
}

/// Image names are unique and must not look like indices (§14.11): a
/// duplicate or numeric name is refused and leaves the WIM unchanged.
#[test]
fn mixed_image_name_rules() {
    ensure_wimlib();
    let t1 = build_tree2(71);
    let s = Scratch::new();
    let wim = s.path("n.wim");
    wl_capture(&t1.root, &wim, "taken", &[]);
    let before = std::fs::read(&wim).unwrap();
    for bad in ["taken", "7", "all"] {
        wg_must_fail(&[
            os("archive"),
            os("capture"),
            t1.root.as_os_str(),
            wim.as_os_str(),
            os("--name"),
            os(bad),
        ]);
        assert!(
            std::fs::read(&wim).unwrap() == before,
            "refused capture --name {bad:?} modified the WIM"
        );
    }
    // default name (no --name) twice in a row: both appends succeed with distinct names
    wg(&[os("archive"), os("capture"), t1.root.as_os_str(), wim.as_os_str()]);
    wg(&[os("archive"), os("capture"), t1.root.as_os_str(), wim.as_os_str()]);
    assert_eq!(wimlib_image_count(&wim), 3);
    wimlib_verify(&wim, false);
}

/// Deleting the only image leaves a valid 0-image WIM; both tools can append
/// to it afterwards.
#[test]
fn mixed_delete_last_image_then_append() {
    ensure_wimlib();
    let t1 = build_tree2(81);
    let t2 = build_tree2(82);
    let s = Scratch::new();
    let wim = s.path("z.wim");
    wg_capture(&t1.root, &wim, "only", &[]);
    wg(&[os("archive"), os("delete"), wim.as_os_str(), os("only")]);
    assert_eq!(wimlib_image_count(&wim), 0);
    wimlib_verify(&wim, false);
    wg_verify(&wim);
    wg_capture(&t2.root, &wim, "after", &[]);
    wl_append(&t1.root, &wim, "wl-after", &[]);
    wimlib_verify(&wim, false);
    both_extract_equal(&wim, "1", &t2.root, &s, "after-empty");
    both_extract_equal(&wim, "2", &t1.root, &s, "after-empty");
}
