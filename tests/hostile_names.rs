//! Archives crafted with names no honest writer produces (`../x`, `a/b`),
//! or with trees deeper than any path the system can hold: such entries are
//! left out of an extraction, each with a warning and a count in the
//! summary, and nothing may be written outside the destination. wimlib cannot produce such archives, so
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
fn names_with_separators_are_skipped_with_a_warning_and_nothing_escapes() {
    for evil in ["../escaped", "../../escaped", "sub/../../escaped", "a/b"] {
        let t = tempfile::tempdir().unwrap();
        let wim = t.path().join("evil.wim");
        craft(&wim, &["innocent", evil]);
        let dest = t.path().join("deep/dest");
        let out = extract(&wim, &dest);
        let err = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The entry is left out, with a warning naming it and a count in the
        // summary; the rest of the image is restored.
        // Done, with warnings: exit code 8.
        assert_eq!(out.status.code(), Some(8), "extraction with {evil:?}: {err}");
        assert!(
            err.contains(&format!("skipped /{evil}: unsafe name")),
            "no warning naming {evil:?}: {err}"
        );
        assert!(
            stdout.contains("skipped 1 entries"),
            "no count in the summary: {stdout}"
        );
        assert!(dest.join("innocent").is_file(), "the safe entry was not restored");
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
    // The dot names are skipped with warnings: exit code 8.
    assert_eq!(out.status.code(), Some(8), "{}", String::from_utf8_lossy(&out.stderr));
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

/// 16,000 nested directories with 255-character names: the paths past
/// PATH_MAX are left out with a warning, the rest (and `ls`) work, and
/// nothing builds a full path per entry (that was quadratic: gigabytes).
#[test]
fn a_deep_tree_of_long_names_is_cut_at_path_max() {
    let t = tempfile::tempdir().unwrap();
    let wim = t.path().join("deep.wim");
    let mut w = WimWriter::create(&wim, Compression::Lzx, 32768).unwrap();
    let dir = || Inode {
        attributes: FILE_ATTRIBUTE_DIRECTORY,
        security_id: -1,
        ..Inode::default()
    };
    let mut tree = ImageTree::new(dir());
    let name: Vec<u16> = "d".repeat(255).encode_utf16().collect();
    let mut parent = 0;
    for _ in 0..16_000 {
        let i = tree.add_inode(dir());
        parent = tree.add_dentry(parent, name.clone(), i);
    }
    w.add_image(
        &tree,
        ImageInfo {
            name: "deep".into(),
            ..ImageInfo::default()
        },
    )
    .unwrap();
    w.commit().unwrap();

    let ls = Command::new(env!("CARGO_BIN_EXE_wimguard"))
        .args(["archive", "ls"])
        .arg(&wim)
        .arg("1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&ls.stderr);
    assert!(ls.status.success(), "{err}");
    assert!(err.contains("longer than 4095 bytes"), "{err}");
    // 4095 bytes hold 15 levels of 256 bytes ("/" + 255).
    assert_eq!(String::from_utf8_lossy(&ls.stdout).lines().count(), 1 + 15);

    let dest = t.path().join("out");
    let out = extract(&wim, &dest);
    let err = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(8), "{err}");
    assert!(err.contains("longer than"), "{err}");
    assert!(
        stdout.contains("skipped 1 entries") || stdout.contains("skipped 2 entries"),
        "{stdout}"
    );
    assert!(dest.join("d".repeat(255)).is_dir());
}
