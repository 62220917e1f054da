//! What a rebuild (delete, optimize) or a new archive does to the file it
//! replaces: it lands where a symbolic link points, keeps the old file's
//! mode, owner and extended attributes, and the bootable image stays
//! bootable across append, delete and soft delete; wimlib agrees each time.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;

fn boot_index(wim: &Path) -> String {
    let out = wimlib(&[os("info"), wim.as_os_str(), os("--header")]);
    out.stdout
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Boot Index")
                .map(|v| v.trim_start_matches([' ', '=']).trim().to_string())
        })
        .unwrap_or_else(|| panic!("no Boot Index in:\n{}", out.describe()))
}

fn image_names(wim: &Path) -> Vec<String> {
    let out = wg(&[os("archive"), os("info"), wim.as_os_str(), os("--json")]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_string())
        .collect()
}

/// wimlib checked, a scratch directory and a small source tree in it.
fn scratch_with_source() -> (Scratch, std::path::PathBuf) {
    ensure_wimlib();
    let s = Scratch::new();
    let src = s.path("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"contents").unwrap();
    (s, src)
}

#[test]
fn rebuilds_follow_links_and_keep_the_files_mode_owner_and_xattrs() {
    let (s, src) = scratch_with_source();
    let real_dir = s.path("real");
    fs::create_dir(&real_dir).unwrap();
    let real = real_dir.join("a.wim");
    let link = s.path("link.wim");
    std::os::unix::fs::symlink(&real, &link).unwrap();

    // A new archive through a link that points at nothing yet.
    wg_capture(&src, &link, "x", &[]);
    wg_capture(&src, &link, "y", &[]);
    wg_capture(&src, &link, "z", &[]);
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(image_names(&real), ["x", "y", "z"]);

    fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
    let _ = std::os::unix::fs::chown(&real, Some(1234), Some(5678));
    let owner = fs::metadata(&real).map(|m| (m.uid(), m.gid())).unwrap();
    let xattr = xattr_supported(&real);

    wg(&[os("archive"), os("delete"), link.as_os_str(), os("y")]);
    wg(&[os("archive"), os("optimize"), link.as_os_str()]);
    assert!(
        fs::symlink_metadata(&link).unwrap().file_type().is_symlink(),
        "the link was replaced by the archive"
    );
    assert_eq!(image_names(&real), ["x", "z"], "the real archive did not change");
    let m = fs::metadata(&real).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o640);
    assert_eq!((m.uid(), m.gid()), owner);
    if xattr {
        assert_eq!(read_xattr(&real).as_deref(), Some(&b"kept"[..]), "the xattr was lost");
    }
    wimlib_verify(&real, false);
    let leftovers: Vec<_> = fs::read_dir(s.path(""))
        .unwrap()
        .chain(fs::read_dir(&real_dir).unwrap())
        .collect();
    assert_eq!(leftovers.len(), 3 + 1, "temp files left behind: {leftovers:?}");
}

/// Sets `user.wimguard-test = kept` on `p`; false where the filesystem has
/// no user xattrs.
fn xattr_supported(p: &Path) -> bool {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let v = b"kept";
    // SAFETY: valid C strings and a live buffer.
    unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.wimguard-test".as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        ) == 0
    }
}

fn read_xattr(p: &Path) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and a live buffer.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"user.wimguard-test".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

#[test]
fn the_bootable_image_stays_bootable() {
    let (s, src) = scratch_with_source();
    let wim = s.path("b.wim");
    wimlib(&[os("capture"), src.as_os_str(), wim.as_os_str(), os("A")]);
    wimlib(&[os("append"), src.as_os_str(), wim.as_os_str(), os("B")]);
    wimlib(&[os("append"), src.as_os_str(), wim.as_os_str(), os("C")]);
    wimlib(&[os("info"), wim.as_os_str(), os("3"), os("--boot")]);
    assert_eq!(boot_index(&wim), "3");

    wg_capture(&src, &wim, "D", &[]);
    assert_eq!(boot_index(&wim), "3", "an append keeps it");
    wimlib_verify(&wim, false);
    wg(&[os("archive"), os("delete"), wim.as_os_str(), os("A")]);
    assert_eq!(boot_index(&wim), "2", "C moved down one");
    wimlib_verify(&wim, false);
    wg(&[os("archive"), os("delete"), wim.as_os_str(), os("B"), os("--soft")]);
    assert_eq!(boot_index(&wim), "1", "C moved down again");
    wimlib_verify(&wim, false);
    // wimlib reads the boot image's metadata through the header's copy.
    wimlib(&[os("apply"), wim.as_os_str(), os("1"), s.path("out").as_os_str()]);
    wg(&[os("archive"), os("delete"), wim.as_os_str(), os("C"), os("--soft")]);
    assert_eq!(boot_index(&wim), "0", "the bootable image is gone");
    wimlib_verify(&wim, false);
}
