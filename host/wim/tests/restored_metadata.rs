//! Extract sets a regular file's owner, xattrs, mode and times on the file
//! itself, right after its contents: every way a file is written must end
//! with the file's own mode and times, including a large content shared by
//! more than 64 names (the ones past 64 are copied from the first, which
//! must not be read once its times are set: reading moves its access time).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use wimguard_wim::apply::{apply, ApplyOptions, Overwrite};
use wimguard_wim::codecs::StandardCodecs;
use wimguard_wim::{fsutil, Compression, WimArchive};

mod support;

/// (mode, atime, mtime) of `p`, times as (seconds, nanoseconds).
fn meta(p: &Path) -> (u32, (i64, i64), (i64, i64)) {
    let m = fs::symlink_metadata(p).unwrap();
    (
        m.mode() & 0o7777,
        (m.atime(), m.atime_nsec()),
        (m.mtime(), m.mtime_nsec()),
    )
}

#[test]
fn every_restored_file_ends_with_its_own_mode_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    // Larger than the small-blob limit (1 MiB): streamed, and past 64
    // names copied from the first.
    let big: Vec<u8> = (0..(3u32 << 19)).map(|i| (i % 251) as u8).collect();
    let mut names = Vec::new();
    for i in 0..70 {
        names.push((format!("big{i:02}"), big.clone(), 0o640 - (i % 3) * 0o10));
    }
    names.push(("small".into(), b"a small file\n".to_vec(), 0o604));
    names.push(("empty".into(), Vec::new(), 0o600));
    names.push(("setuid".into(), b"#!/bin/sh\n".to_vec(), 0o4755));
    for (n, (name, bytes, mode)) in names.iter().enumerate() {
        let p = src.join(name);
        fs::write(&p, bytes).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        // Old times, each its own: an access after they are set moves the
        // access time to now.
        let t = 1_000_000_000 + n as i64 * 1000;
        fsutil::set_times(&p, (t, 123_400), (t + 1, 567_800)).unwrap();
    }
    // A file with two names gets its metadata after the link is made.
    let linked = src.join("linked");
    fs::write(&linked, b"two names\n").unwrap();
    fs::hard_link(&linked, src.join("linked-too")).unwrap();
    fs::set_permissions(&linked, fs::Permissions::from_mode(0o444)).unwrap();
    fsutil::set_times(&linked, (999_000_000, 100), (999_000_001, 200)).unwrap();
    let wim = dir.path().join("a.wim");
    support::archive_of(&src, &wim, Compression::None);

    let out = dir.path().join("out");
    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    let report = apply(&arch, 1, &out, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    for (name, bytes, _) in &names {
        let (a, b) = (src.join(name), out.join(name));
        assert_eq!(meta(&b), meta(&a), "{name}: (mode, atime, mtime)");
        assert!(fs::read(&b).unwrap() == *bytes, "{name}: contents");
    }
    let (one, two) = (out.join("linked"), out.join("linked-too"));
    assert_eq!(fs::metadata(&one).unwrap().ino(), fs::metadata(&two).unwrap().ino());
    assert_eq!(meta(&one), meta(&linked), "linked: (mode, atime, mtime)");
}

/// A directory that was there before a restore keeps its own owner, mode
/// and times: the target (unless the restore made it for the whole image)
/// and, unless the user asked to replace what exists, the directories it
/// merges into. A directory where the image has a file is refused before
/// anything is written, also when replacing.
#[test]
fn existing_directories_keep_their_own_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/f"), b"hello\n").unwrap();
    fs::write(src.join("t"), b"top\n").unwrap();
    for d in [src.join("sub"), src.clone()] {
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700)).unwrap();
        fsutil::set_times(&d, (978_307_200, 0), (978_307_200, 0)).unwrap();
    }
    let wim = dir.path().join("a.wim");
    support::archive_of(&src, &wim, Compression::None);
    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    let sticky = |p: &Path| {
        fs::create_dir_all(p).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o1777)).unwrap();
        meta(p)
    };

    // One file into an existing, shared directory.
    let tmp_like = dir.path().join("shared");
    let before = sticky(&tmp_like);
    let one = ApplyOptions {
        paths: vec!["sub/f".into()],
        ..Default::default()
    };
    apply(&arch, 1, &tmp_like, &one, &mut |_, _| {}).unwrap();
    assert_eq!(fs::read(tmp_like.join("sub/f")).unwrap(), b"hello\n");
    // (Its mtime moves: a name was made in it.)
    assert_eq!(meta(&tmp_like).0, before.0, "the target's mode changed");
    // The directory the restore made has the image's.
    assert_eq!(meta(&tmp_like.join("sub")).0, 0o700);

    // Everything, merging into an existing `sub` (skip and default keep
    // its metadata; replace takes the image's).
    for (overwrite, keeps) in [(Overwrite::Skip, true), (Overwrite::Replace, false)] {
        let target = dir.path().join(format!("merge-{overwrite:?}"));
        let before = sticky(&target.join("sub")).0;
        let target_mode = meta(&target).0;
        let all = ApplyOptions {
            overwrite,
            ..Default::default()
        };
        apply(&arch, 1, &target, &all, &mut |_, _| {}).unwrap();
        assert_eq!(meta(&target.join("sub")).0 == before, keeps, "{overwrite:?}");
        assert_eq!(
            meta(&target).0,
            target_mode,
            "{overwrite:?}: the existing target's mode changed"
        );
    }

    // A fresh target made by a whole-image restore takes the image root's.
    let fresh = dir.path().join("fresh");
    apply(&arch, 1, &fresh, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
    assert_eq!(meta(&fresh).0, 0o700);

    // A directory where the image has the file `t`: refused up front when
    // replacing, nothing written; the dry run says the same.
    let blocked = dir.path().join("blocked");
    fs::create_dir_all(blocked.join("t")).unwrap();
    for dry_run in [true, false] {
        let replace = ApplyOptions {
            overwrite: Overwrite::Replace,
            dry_run,
            ..Default::default()
        };
        let e = apply(&arch, 1, &blocked, &replace, &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("exists as a directory"), "{e}");
    }
    assert!(!blocked.join("sub").exists(), "written before the refusal");
    // Refusing anything in the way (the daemon's default): its dry run too.
    let taken = dir.path().join("taken");
    fs::create_dir_all(&taken).unwrap();
    fs::write(taken.join("t"), b"mine\n").unwrap();
    let dry = ApplyOptions {
        dry_run: true,
        overwrite: Overwrite::Fail,
        ..Default::default()
    };
    assert!(apply(&arch, 1, &taken, &dry, &mut |_, _| {}).is_err());
    assert_eq!(fs::read(taken.join("t")).unwrap(), b"mine\n");
}
