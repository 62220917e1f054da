//! Archives crafted with names no honest writer produces (`../x`, `a/b`)
//! must be refused at extraction with a clear message, and nothing may be
//! written outside the destination. wimlib cannot produce such archives, so
//! this test builds them with our own writer.

use std::path::Path;
use std::process::Command;

use wimguard::wim::metadata::{ImageTree, Inode, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_NORMAL};
use wimguard::wim::xml::ImageInfo;
use wimguard::wim::{Compression, WimWriter};

fn craft(wim: &Path, names: &[&str]) {
    let mut w = WimWriter::create(wim, Compression::Xpress, 32768).unwrap();
    let hash = w.add_small_blob(b"payload that must stay inside\n").unwrap();
    let mut t = ImageTree::new(Inode {
        attributes: FILE_ATTRIBUTE_DIRECTORY,
        security_id: -1,
        ..Inode::default()
    });
    for n in names {
        let i = t.add_inode(Inode {
            attributes: FILE_ATTRIBUTE_NORMAL,
            security_id: -1,
            data_hash: hash,
            ..Inode::default()
        });
        t.add_dentry(0, n.encode_utf16().collect(), i);
    }
    w.add_image(
        &t,
        ImageInfo {
            name: "crafted".into(),
            ..ImageInfo::default()
        },
    )
    .unwrap();
    w.commit().unwrap();
}

fn extract(wim: &Path, dest: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wimguard"))
        .args(["archive", "extract"])
        .arg(wim)
        .arg("1")
        .arg(dest)
        .output()
        .unwrap()
}

#[test]
fn names_with_separators_are_refused_and_nothing_escapes() {
    for evil in ["../escaped", "../../escaped", "sub/../../escaped", "a/b"] {
        let t = tempfile::tempdir().unwrap();
        let wim = t.path().join("evil.wim");
        craft(&wim, &["innocent", evil]);
        let dest = t.path().join("deep/dest");
        let out = extract(&wim, &dest);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "extraction of {evil:?} succeeded");
        assert!(err.contains("unsafe file name"), "unclear message for {evil:?}: {err}");
        assert!(!err.contains("panicked"));
        for outside in [
            t.path().join("escaped"),
            t.path().join("deep/escaped"),
            t.path().join("a"),
        ] {
            assert!(
                !outside.exists(),
                "{} was written outside the destination",
                outside.display()
            );
        }
    }
}

#[test]
fn dot_names_are_ignored_like_wimlib_does() {
    let t = tempfile::tempdir().unwrap();
    let wim = t.path().join("dots.wim");
    craft(&wim, &["..", ".", "fine"]);
    let dest = t.path().join("dest");
    let out = extract(&wim, &dest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["fine"]);
    assert_eq!(
        std::fs::read(dest.join("fine")).unwrap(),
        b"payload that must stay inside\n"
    );
}
