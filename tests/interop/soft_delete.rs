//! Issue 11 §4: deleting an image without rebuilding the archive (wimlib's
//! `delete --soft`), then reclaiming the space with `archive optimize`.
//! After each step wimlib verifies the file and every other image restores
//! bit-exactly with both tools; a wimlib soft delete reads back with us.

use std::fs;

use crate::common::*;

fn info_json(wim: &std::path::Path) -> serde_json::Value {
    let out = wg(&[os("archive"), os("info"), wim.as_os_str(), os("--json")]);
    serde_json::from_str(out.stdout.trim()).unwrap()
}

#[test]
fn soft_delete_keeps_the_rest_exact_and_optimize_reclaims() {
    ensure_wimlib();
    let s = Scratch::new();
    let wim = s.path("a.wim");
    let fx = build_tree2(31);
    let src = fx.root.clone();
    let mut expected = Vec::new();
    for i in 0..3u64 {
        // Each image has a large file of its own.
        fs::write(src.join("own.bin"), Rng::new(100 + i).bytes(3 << 20)).unwrap();
        wg_capture(&src, &wim, &format!("img{i}"), &[]);
        expected.push(snapshot(&src));
    }
    let size0 = fs::metadata(&wim).unwrap().len();
    // Appends leave the old tables behind (as wimlib's do): a few KB.
    let r0 = info_json(&wim)["reclaimable"].as_u64().unwrap();
    assert!(r0 < 64 << 10, "{r0}");

    let said = wg(&[os("archive"), os("delete"), wim.as_os_str(), os("2"), os("--soft")]);
    let size1 = fs::metadata(&wim).unwrap().len();
    assert!(size1 >= size0, "a soft delete does not shrink the file");
    let reclaimable = info_json(&wim)["reclaimable"].as_u64().unwrap();
    assert!(
        said.stdout
            .contains(&format!("soft: {reclaimable} bytes now reclaimable")),
        "the delete and `archive info` disagree on what is reclaimable ({reclaimable}):\n{}",
        said.describe()
    );
    assert!(
        reclaimable >= r0 + (3 << 20),
        "image 2's own file should be reclaimable: {reclaimable}"
    );
    wimlib_verify(&wim, false);
    assert_eq!(wimlib_image_count(&wim), 2);
    let check = |stage: &str| {
        for (image, want) in [("1", &expected[0]), ("2", &expected[2])] {
            let out = s.path(&format!("{stage}-wl-{image}"));
            wimlib(&[
                os("apply"),
                wim.as_os_str(),
                os(image),
                out.as_os_str(),
                os("--unix-data"),
            ]);
            assert_snapshots_equal(
                want,
                &snapshot(&out),
                &CompareOpts::full(&src, &out).without_atime(),
                stage,
            );
            let out = s.path(&format!("{stage}-wg-{image}"));
            wg_extract(&wim, image, &out, &[]);
            assert_snapshots_equal(
                want,
                &snapshot(&out),
                &CompareOpts::full(&src, &out).without_atime(),
                stage,
            );
        }
    };
    check("soft");

    wg(&[os("archive"), os("optimize"), wim.as_os_str()]);
    let size2 = fs::metadata(&wim).unwrap().len();
    assert!(
        size2 + (3 << 20) <= size1,
        "optimize reclaimed only {} bytes",
        size1 - size2
    );
    assert_eq!(info_json(&wim)["reclaimable"], 0);
    wimlib_verify(&wim, false);
    check("optimized");

    // wimlib's own soft delete reads back with us, and we reclaim it.
    let wl = s.path("wl.wim");
    fs::copy(&wim, &wl).unwrap();
    wimlib(&[os("delete"), wl.as_os_str(), os("1"), os("--soft")]);
    assert!(info_json(&wl)["reclaimable"].as_u64().unwrap() >= 3 << 20);
    let out = s.path("wl-soft");
    wg_extract(&wl, "1", &out, &[]);
    assert_snapshots_equal(
        &expected[2],
        &snapshot(&out),
        &CompareOpts::full(&src, &out).without_atime(),
        "wimlib soft",
    );
    wg(&[os("archive"), os("optimize"), wl.as_os_str()]);
    wimlib_verify(&wl, false);
}
