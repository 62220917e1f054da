//! An append trusts the previous image only for files that are provably
//! the same: same path, same inode and change time, same modification
//! time. Every other file is read again, and the new image restores the
//! tree as it is now.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use wimguard_wim::apply::{apply, ApplyOptions};
use wimguard_wim::capture::{
    capture, latest_wimguard_image, previous_wimguard_image, CaptureOptions, CaptureReport, PreviousImage,
};
use wimguard_wim::codecs::StandardCodecs;
use wimguard_wim::{Compression, WimArchive, WimWriter};

fn write(p: &Path, bytes: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

/// Sets `p`'s modification time to `mtime` (seconds, nanoseconds).
fn set_mtime(p: &Path, mtime: (i64, u32)) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(mtime.0 as u64, mtime.1);
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn mtime_of(p: &Path) -> (i64, u32) {
    let m = fs::metadata(p).unwrap();
    (m.mtime(), m.mtime_nsec() as u32)
}

fn append(src: &Path, wim: &Path, name: &str) -> CaptureReport {
    let mut w = WimWriter::append(wim, &StandardCodecs).unwrap();
    let previous = latest_wimguard_image(&w).unwrap();
    let opts = CaptureOptions {
        name: name.into(),
        ..Default::default()
    };
    let r = capture(src, &mut w, previous.map(PreviousImage::new), &opts, &mut |_| {}).unwrap();
    w.commit().unwrap();
    r
}

/// Every regular file under `root`, by relative path, with its bytes.
fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn only_files_provably_unchanged_keep_their_hash_without_being_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write(&src.join("a/kept"), b"kept as it was");
    write(&src.join("a/rewritten"), b"rewritten: old contents");
    write(&src.join("a/replaced"), b"replaced: old contents");
    write(&src.join("moved/inside"), b"its directory gets renamed....");
    write(&src.join("top"), b"at the top, kept too..........");
    let wim = tmp.path().join("a.wim");
    let mut w = WimWriter::create(&wim, Compression::Xpress, 32768).unwrap();
    let opts = CaptureOptions {
        name: "first".into(),
        ..Default::default()
    };
    let first = capture(&src, &mut w, None, &opts, &mut |_| {}).unwrap();
    w.commit().unwrap();
    assert_eq!((first.reused, first.files), (0, 5));

    // Same bytes, same length, same modification time: only the change
    // time (and for the replacement, the inode) tells.
    let rewritten = src.join("a/rewritten");
    let was = mtime_of(&rewritten);
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(&rewritten, b"rewritten: new contents").unwrap();
    set_mtime(&rewritten, was);
    let replaced = src.join("a/replaced");
    let was = mtime_of(&replaced);
    let fresh = src.join("a/.replaced.new");
    fs::write(&fresh, b"replaced: new contents").unwrap();
    set_mtime(&fresh, was);
    fs::rename(&fresh, &replaced).unwrap();
    fs::rename(src.join("moved"), src.join("renamed")).unwrap();
    write(&src.join("a/new"), b"not there before");

    let second = append(&src, &wim, "second");
    assert_eq!(second.files, 6);
    assert_eq!(second.reused, 2, "only a/kept and top are unchanged: {second:?}");
    let read_again: u64 = ["a/rewritten", "a/replaced", "renamed/inside", "a/new"]
        .iter()
        .map(|p| fs::metadata(src.join(p)).unwrap().len())
        .sum();
    assert_eq!(second.bytes_read, read_again, "{second:?}");

    // And nothing changed: everything is trusted.
    let third = append(&src, &wim, "third");
    assert_eq!((third.reused, third.bytes_read), (6, 0), "{third:?}");

    let arch = WimArchive::open(&wim, &StandardCodecs).unwrap();
    for image in [2, 3] {
        let out = tmp.path().join(format!("out{image}"));
        apply(&arch, image, &out, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
        assert_eq!(files(&out), files(&src), "image {image}");
    }
}

/// Sets its flag when dropped.
struct DropFlag(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The archive's latest image, holding a flag that says when it is dropped.
fn previous_with_flag(w: &WimWriter) -> (PreviousImage, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tree = latest_wimguard_image(w).unwrap().expect("a WimGuard image");
    (PreviousImage::holding(tree, DropFlag(dropped.clone())), dropped)
}

/// What a previous image holds goes with the walk that uses it, and no one
/// else keeps it: it is gone once a capture has succeeded, and once the
/// walk of a cancelled one stopped.
#[test]
fn the_previous_image_and_what_it_holds_go_with_the_walk() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..50 {
        write(&src.join(format!("d{}/f{i}", i % 5)), format!("file {i}").as_bytes());
    }
    let wim = tmp.path().join("a.wim");
    let mut w = WimWriter::create(&wim, Compression::Xpress, 32768).unwrap();
    let opts = CaptureOptions {
        name: "first".into(),
        ..Default::default()
    };
    capture(&src, &mut w, None, &opts, &mut |_| {}).unwrap();
    w.commit().unwrap();

    // A successful append: the walk frees the image before the capture ends.
    let mut w = WimWriter::append(&wim, &StandardCodecs).unwrap();
    let (previous, dropped) = previous_with_flag(&w);
    let opts = CaptureOptions {
        name: "second".into(),
        ..Default::default()
    };
    let report = capture(&src, &mut w, Some(previous), &opts, &mut |_| {}).unwrap();
    assert_eq!(report.reused, 50, "the walk used the previous image: {report:?}");
    assert!(dropped.load(Ordering::SeqCst), "the image outlived a finished capture");
    drop(w);

    // A cancelled one: freed when the walk stops, not kept by anyone else.
    let mut w = WimWriter::append(&wim, &StandardCodecs).unwrap();
    let (previous, dropped) = previous_with_flag(&w);
    let opts = CaptureOptions {
        name: "cancelled".into(),
        cancel: Some(Arc::new(AtomicBool::new(true))),
        ..Default::default()
    };
    assert!(capture(&src, &mut w, Some(previous), &opts, &mut |_| {}).is_err());
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !dropped.load(Ordering::SeqCst) {
        assert!(std::time::Instant::now() < give_up, "the walk never freed the image");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Two sources backed up into one archive: each backup compares with its
/// own source's last image (named in the XML), so the unchanged files of
/// one are not read again because the other was backed up in between.
#[test]
fn each_source_compares_with_its_own_last_image() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for i in 0..20 {
        write(&a.join(format!("f{i}")), format!("file {i} of source a").as_bytes());
        write(&b.join(format!("g{i}")), format!("file {i} of source b").as_bytes());
    }
    let wim = tmp.path().join("shared.wim");
    let opts = |name: &str, uuid: &str| CaptureOptions {
        name: name.into(),
        backup_uuid: uuid.into(),
        ..Default::default()
    };
    let mut w = WimWriter::create(&wim, Compression::Xpress, 32768).unwrap();
    capture(&a, &mut w, None, &opts("a1", "u-a1"), &mut |_| {}).unwrap();
    w.commit().unwrap();
    let mut w = WimWriter::append(&wim, &StandardCodecs).unwrap();
    capture(&b, &mut w, None, &opts("b1", "u-b1"), &mut |_| {}).unwrap();
    w.commit().unwrap();

    let again = |src: &Path, name: &str| {
        let mut w = WimWriter::append(&wim, &StandardCodecs).unwrap();
        let source = src.display().to_string();
        let previous = previous_wimguard_image(&w, &source).unwrap();
        let r = capture(
            src,
            &mut w,
            previous.map(PreviousImage::new),
            &opts(name, name),
            &mut |_| {},
        )
        .unwrap();
        w.commit().unwrap();
        r
    };
    // The newest image is b's; a's backup still finds its own.
    let r = again(&a, "a2");
    assert_eq!((r.reused, r.bytes_read), (20, 0), "{r:?}");
    let r = again(&b, "b2");
    assert_eq!((r.reused, r.bytes_read), (20, 0), "{r:?}");
    // A source never backed up falls back to the newest image.
    let w = WimWriter::append(&wim, &StandardCodecs).unwrap();
    let newest = previous_wimguard_image(&w, "/nowhere").unwrap().unwrap();
    let latest = latest_wimguard_image(&w).unwrap().unwrap();
    assert_eq!(newest.inodes.len(), latest.inodes.len());
}
