//! Issue 3 §1: backup → list → show → restore → identical tree; an
//! incremental backup of the unchanged tree stores almost nothing; a diff
//! after changing two files names exactly those two; wimlib verifies.

use std::collections::BTreeSet;
use std::fs;

use crate::common::{self, CompareOpts, Kind};
use crate::harness::*;

#[test]
fn backup_list_show_restore_incremental_diff_verify() {
    let env = Env::new();
    let fx = common::build_fixture();
    let src = fx.root.clone();
    let wim = env.path("archive.wim");
    let server = Server::start(&env.home);

    // 1. backup
    let b1 = backup(&env.home, &src, &wim, &["--name", "first"]);
    let u1 = uuid_of(&b1);
    assert_eq!(b1["source"].as_str(), src.to_str(), "{b1}");
    assert_eq!(b1["destination"].as_str(), wim.to_str(), "{b1}");
    assert_eq!(b1["image_index"], 1, "{b1}");
    assert!(wim.is_file(), "archive was not created");

    // 2. backups list names it, with the documented shape.
    let l = list(&env.home);
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0]["uuid"].as_str(), Some(u1.as_str()));
    assert_eq!(l[0]["status"], "succeeded");
    assert_eq!(l[0]["source"].as_str(), src.to_str());
    assert_eq!(l[0]["destination"].as_str(), wim.to_str());

    // 3. backups show
    let s = show(&env.home, &u1);
    assert_eq!(s["uuid"].as_str(), Some(u1.as_str()));
    assert_eq!(s["status"], "succeeded");
    assert_eq!(s["name"], "first");
    assert_eq!(s["files"], b1["files"]);
    // As restic takes short ids: the first 8 characters name it.
    assert_eq!(show(&env.home, &u1[..8])["uuid"].as_str(), Some(u1.as_str()));
    let human = cli_ok(&env.home, &[os("backups"), os("show"), os(&u1)]);
    assert!(
        human.stdout.contains(&u1),
        "human `backups show` does not name the backup:\n{}",
        human.describe()
    );

    // 4. restore into a fresh directory (created by the server) and compare.
    let target = env.path("restored");
    let r = cli_json(&env.home, &[os("restore"), os(&u1), os("--target"), target.as_os_str()]);
    assert_eq!(r["status"], "succeeded", "{r}");
    common::assert_trees_equal(
        &src,
        &target,
        &CompareOpts::full(&src, &target),
        "server restore of the fixture",
    );

    // 5. a second backup of the unchanged source: a new image, almost no new bytes.
    let size1 = fs::metadata(&wim).unwrap().len();
    let b2 = backup(&env.home, &src, &wim, &["--name", "second"]);
    let u2 = uuid_of(&b2);
    let size2 = fs::metadata(&wim).unwrap().len();
    assert_eq!(b2["image_index"], 2, "{b2}");
    assert_eq!(common::wimlib_image_count(&wim), 2);
    let growth = size2 - size1;
    assert!(
        growth * 10 < fx.total_bytes,
        "unchanged re-backup grew the archive by {growth} bytes; the tree holds {} bytes of contents: {b2}",
        fx.total_bytes
    );
    // Every distinct non-empty regular file is reused (hard links count once).
    let snap = common::snapshot(&src);
    let mut seen_groups = BTreeSet::new();
    let mut content_files = 0u64;
    for e in snap.values() {
        if e.kind != Kind::File || e.size == Some(0) {
            continue;
        }
        if let Some(g) = &e.link_group {
            if !seen_groups.insert(g.clone()) {
                continue;
            }
        }
        content_files += 1;
    }
    assert_eq!(
        b2["files_unchanged"].as_u64(),
        Some(content_files),
        "files_unchanged should equal the number of (non-empty) files of the unchanged tree: {b2}"
    );
    assert_eq!(b2["bytes_read"], 0, "an unchanged tree should not be read again: {b2}");
    assert_eq!(b2["files"], b1["files"], "{b2}");

    // 6. change exactly two files, back up, diff.
    let f1 = src.join("names/case.txt");
    let f2 = src.join("files/unique_random.bin");
    fs::write(&f1, b"lower, changed\n").unwrap();
    let mut data = fs::read(&f2).unwrap();
    data[5000] ^= 0xff;
    fs::write(&f2, &data).unwrap();
    let b3 = backup(&env.home, &src, &wim, &["--name", "third"]);
    let u3 = uuid_of(&b3);
    let d = cli_json(&env.home, &[os("snapshots"), os("diff"), os(&u2), os(&u3)]);
    let changes = d["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changes array: {d}"));
    let got: BTreeSet<(String, String)> = changes
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap_or("?").to_string(),
                c["path"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [
        ("modified".to_string(), "/files/unique_random.bin".to_string()),
        ("modified".to_string(), "/names/case.txt".to_string()),
    ]
    .into();
    assert_eq!(
        got, want,
        "snapshots diff should name exactly the two changed files: {d}"
    );
    assert_eq!(
        (d["added"].as_u64(), d["removed"].as_u64(), d["modified"].as_u64()),
        (Some(0), Some(0), Some(2)),
        "{d}"
    );
    // Human output lists the same two paths.
    let h = cli_ok(&env.home, &[os("snapshots"), os("diff"), os(&u2), os(&u3)]);
    let lines: Vec<&str> = h
        .stdout
        .lines()
        .filter(|l| l.starts_with("M ") || l.starts_with("+ ") || l.starts_with("- "))
        .collect();
    assert_eq!(
        lines,
        vec!["M /files/unique_random.bin", "M /names/case.txt"],
        "{}",
        h.describe()
    );
    // The first snapshot is still restorable and the third holds the new contents.
    let t3 = env.path("restored3");
    cli_ok(
        &env.home,
        &[
            os("restore"),
            os(&u3),
            os("--target"),
            t3.as_os_str(),
            os("--path"),
            os("/names"),
        ],
    );
    assert_eq!(fs::read(t3.join("names/case.txt")).unwrap(), b"lower, changed\n");

    // 7. the archive is a valid WIM for wimlib and for wimguard.
    wimlib_verify(&wim);
    archive_verify(&wim);
    let v = cli_json(&env.home, &[os("snapshots"), os("verify"), os(&u1)]);
    assert_eq!(v["ok"], true, "{v}");

    // 8. delete: the third image leaves the archive, which is rebuilt
    // without the two files only it held, and the reply says so.
    let before = fs::metadata(&wim).unwrap().len();
    let d = cli_json(&env.home, &[os("backups"), os("delete"), os(&u3)]);
    assert_eq!(d["outcome"], "rebuilt", "{d}");
    assert_eq!(d["archive_bytes_before"].as_u64(), Some(before), "{d}");
    let after = fs::metadata(&wim).unwrap().len();
    assert_eq!(d["archive_bytes_after"].as_u64(), Some(after), "{d}");
    assert!(after < before, "the rebuild kept the deleted image's contents: {d}");
    assert_eq!(common::wimlib_image_count(&wim), 2);
    let h = cli_ok(&env.home, &[os("backups"), os("delete"), os(&u2)]);
    assert!(
        h.stdout.contains(&format!("image 2 of {}", wim.display())) && h.stdout.contains(" → "),
        "{}",
        h.describe()
    );
    wimlib_verify(&wim);
    // With the archive missing, the delete is refused (an unmounted disk
    // is likelier than a lost archive) and the record stays; asked to,
    // only the record goes, and the reply does not pretend an archive
    // changed.
    fs::remove_file(&wim).unwrap();
    let out = cli_code(&env.home, &[os("backups"), os("delete"), os(&u1)], 4);
    assert!(
        out.stderr.contains("is missing") && out.stderr.contains("--forget-missing"),
        "{}",
        out.describe()
    );
    assert_eq!(list(&env.home).len(), 1);
    let h = cli_ok(
        &env.home,
        &[os("backups"), os("delete"), os(&u1), os("--forget-missing")],
    );
    assert!(
        h.stdout.contains("only its catalog record") && !h.stdout.contains("→"),
        "{}",
        h.describe()
    );
    assert!(list(&env.home).is_empty(), "{:?}", list(&env.home));

    server.stop();
}

/// An archive reached through a symbolic link is one archive: the catalog
/// records the real path, so listings, retention and stats count it once.
#[test]
fn a_destination_behind_a_symlink_is_recorded_under_its_real_path() {
    let env = Env::new();
    let _server = Server::start(&env.home);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"contents").unwrap();
    let real = env.path("real.wim");
    let link = env.path("link.wim");
    let first = backup(&env.home, &src, &real, &[]);
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let second = backup(&env.home, &src, &link, &[]);
    assert_eq!(second["destination"], real.to_str().unwrap(), "{second}");
    assert_eq!(second["image_index"], 2, "{second}");
    assert_eq!(first["destination"], second["destination"]);
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    // A listing filtered by either spelling finds both.
    for spelled in [&real, &link] {
        let l = cli_json(
            &env.home,
            &[os("backups"), os("list"), os("--destination"), spelled.as_os_str()],
        );
        assert_eq!(l.as_array().map_or(0, Vec::len), 2, "{spelled:?}: {l}");
    }
}
