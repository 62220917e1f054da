//! Issue 9 §3: hostile sources never hang a backup. A regular file replaced
//! by a FIFO, a device, a symlink (to a FIFO or device), a directory or
//! another file between listing and reading is skipped with a warning naming
//! it; the rest of the backup is exact, the archive stays usable, and cancel
//! works even while the reader is stuck in the kernel.
//!
//! The swap is made deterministic with a file lease: the test holds a write
//! lease on `a_gate`, the first file the server reads; the server's open
//! breaks the lease and waits, the test sees the break (F_GETLEASE), waits
//! for the walk to end, swaps the files the server has listed but not yet
//! opened, and lets it go on.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::common::{self, Rng};
use crate::harness::*;

/// A write lease held by the test (None where leases are unavailable).
struct Lease(fs::File);

impl Lease {
    fn take(p: &Path) -> Option<Lease> {
        let f = fs::File::open(p).unwrap();
        const F_SETSIG: libc::c_int = 10; // <linux/fcntl.h>; not in the libc crate
                                          // SAFETY: fcntl on an open fd. SIGWINCH is ignored by default, so
                                          // the break notice does not kill the test process.
        unsafe {
            libc::fcntl(f.as_raw_fd(), F_SETSIG, libc::SIGWINCH);
            if libc::fcntl(f.as_raw_fd(), libc::F_SETLEASE, libc::F_WRLCK) != 0 {
                return None;
            }
        }
        Some(Lease(f))
    }

    /// F_GETLEASE: F_WRLCK while held, F_RDLCK once an opener is waiting
    /// for the break, F_UNLCK when the kernel broke it by force.
    fn state(&self) -> libc::c_int {
        // SAFETY: fcntl on an open fd.
        unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_GETLEASE) }
    }

    /// Waits until the server blocks opening the file; fails the test if the
    /// backup ends first.
    fn wait_for_opener(&self, bg: &mut BgCli) {
        let start = std::time::Instant::now();
        while self.state() == libc::F_WRLCK {
            assert!(!bg.has_exited(), "the backup ended without opening the gate file");
            assert!(start.elapsed() < JOB_TIMEOUT, "the server never opened the gate file");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(
            self.state(),
            libc::F_RDLCK,
            "the lease was broken by force, not by the server's open"
        );
    }

    fn release(self) {
        // SAFETY: fcntl on an open fd.
        unsafe { libc::fcntl(self.0.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
    }
}

/// Waits until the server's walk of the source is over (the backup reports
/// `writing`). The reader blocked on the gate says nothing of the walk, a
/// thread of its own: on a loaded machine it may not have listed the later
/// entries yet, and would then take a swapped file for what it has become.
fn wait_until_walked(home: &Path, wim: &Path) {
    let uuid = running_uuid(home, wim);
    let start = std::time::Instant::now();
    loop {
        let b = show(home, &uuid);
        if b["phase"] == "writing" {
            return;
        }
        assert!(start.elapsed() < JOB_TIMEOUT, "the walk never ended: {b}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn backup_bg(env: &Env, src: &Path, wim: &Path) -> BgCli {
    let mut a = backup_args(src, wim, &["--name", "hostile"]);
    a.push(os("--json"));
    BgCli::spawn(&env.home, &a)
}

/// Files that stay regular, and their bytes.
fn good_files(src: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = Rng::new(99);
    let files = vec![
        ("a_gate", b"the gate file\n".repeat(100)),
        ("c_text.txt", b"plain text\n".repeat(5000)),
        ("c_random.bin", rng.bytes(300_000)),
        ("sub/d_deep.bin", rng.bytes(70_000)),
    ];
    fs::create_dir_all(src.join("sub")).unwrap();
    for (name, data) in &files {
        fs::write(src.join(name), data).unwrap();
    }
    files
}

#[test]
fn files_swapped_after_listing_are_skipped_with_warnings() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let src = env.path("src");
    let good = good_files(&src);
    let root = common::is_root();
    let mut victims = vec![
        "b_fifo",
        "b_link_to_fifo",
        "b_link_to_dev",
        "b_dir",
        "b_other_inode",
        "b_shrunk",
    ];
    if root {
        victims.push("b_device");
    }
    for v in &victims {
        fs::write(src.join(v), format!("listed as a regular file: {v}\n").repeat(4000)).unwrap();
    }
    let outside_fifo = env.path("outside.fifo");
    common::mknod(&outside_fifo, libc::S_IFIFO | 0o644, 0).unwrap();
    let Some(lease) = Lease::take(&src.join("a_gate")) else {
        common::skip(
            "files_swapped_after_listing_are_skipped_with_warnings",
            "file leases unavailable",
        );
        return;
    };
    let wim = env.path("a.wim");
    let mut bg = backup_bg(&env, &src, &wim);
    lease.wait_for_opener(&mut bg);
    wait_until_walked(&env.home, &wim);
    // Everything is listed now and nothing after the gate has been opened.
    for v in &victims {
        let p = src.join(v);
        if *v == "b_other_inode" {
            // Renamed over while the listed inode still exists, so the new
            // file cannot reuse its inode number.
            let tmp = env.path("other-inode");
            fs::write(&tmp, "a different file under the listed name\n").unwrap();
            fs::rename(&tmp, &p).unwrap();
            continue;
        }
        if *v == "b_shrunk" {
            // Cut short: stored with zeros for the lost bytes, it would
            // restore as a file that never existed.
            fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(10)
                .unwrap();
            continue;
        }
        fs::remove_file(&p).unwrap();
        match *v {
            "b_fifo" => common::mknod(&p, libc::S_IFIFO | 0o644, 0).unwrap(),
            "b_link_to_fifo" => std::os::unix::fs::symlink(&outside_fifo, &p).unwrap(),
            "b_link_to_dev" => std::os::unix::fs::symlink("/dev/zero", &p).unwrap(),
            "b_dir" => fs::create_dir(&p).unwrap(),
            "b_device" => common::mknod(&p, libc::S_IFCHR | 0o644, common::makedev(1, 3)).unwrap(),
            _ => unreachable!(),
        }
    }
    lease.release();
    let out = bg.wait(JOB_TIMEOUT);
    // Done, with warnings: exit code 8.
    assert_eq!(out.code(), Some(8), "{}", out.describe());
    let b = last_json(&out);
    assert_eq!(b["status"], "succeeded", "{b}");
    let warnings: Vec<String> = b["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings list: {b}"))
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    let expect = |v: &str, what: &str| {
        let path = src.join(v).display().to_string();
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with(&path) && w.contains(what) && w.contains("skipped")),
            "no warning names {path} as \"{what}\": {warnings:#?}"
        );
    };
    expect("b_fifo", "became a FIFO");
    expect("b_link_to_fifo", "became a symbolic link");
    expect("b_link_to_dev", "became a symbolic link");
    expect("b_dir", "became a directory");
    expect("b_other_inode", "was replaced by a different file");
    expect("b_shrunk", "shrank while it was read");
    if root {
        expect("b_device", "became a character device");
    }
    assert_eq!(warnings.len(), victims.len(), "unexpected warnings: {warnings:#?}");
    // The counts are what the image holds, without the skipped files.
    assert_eq!(b["files"].as_u64(), Some(good.len() as u64), "{b}");
    wimlib_verify(&wim);

    // The regular files restore bit-exactly; the swapped ones are absent.
    let dest = env.path("restored");
    cli_ok(
        &env.home,
        &[os("restore"), os(&uuid_of(&b)), os("--target"), dest.as_os_str()],
    );
    for (name, data) in &good {
        let got = fs::read(dest.join(name)).unwrap_or_else(|e| panic!("{name} not restored: {e}"));
        assert!(got == *data, "{name} restored with different bytes");
    }
    for v in &victims {
        assert!(
            fs::symlink_metadata(dest.join(v)).is_err(),
            "{v} was restored though it was skipped"
        );
    }

    // The archive is not left locked: a second backup appends to it.
    let again = backup(&env.home, &src, &wim, &["--name", "again"]);
    assert!(again["warnings"].as_array().is_some_and(|w| w.is_empty()), "{again}");
    wimlib_verify(&wim);
    assert_eq!(common::wimlib_image_count(&wim), 2);
    server.stop();
}

#[test]
fn cancel_works_while_the_reader_is_blocked_in_open() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let src = env.path("src");
    good_files(&src);
    let Some(lease) = Lease::take(&src.join("a_gate")) else {
        common::skip(
            "cancel_works_while_the_reader_is_blocked_in_open",
            "file leases unavailable",
        );
        return;
    };
    let wim = env.path("a.wim");
    let mut bg = backup_bg(&env, &src, &wim);
    lease.wait_for_opener(&mut bg);
    let uuid = running_uuid(&env.home, &wim);
    let rt = runtime();
    let c = client(&env.home, None);
    rt.block_on(c.cancel_backup(&uuid))
        .unwrap_or_else(|e| panic!("CancelBackup({uuid}) failed: {e}"));
    let out = bg.wait(JOB_TIMEOUT);
    assert_eq!(
        out.code(),
        Some(1),
        "a cancelled backup should exit 1:\n{}",
        out.describe()
    );
    assert_eq!(last_json(&out)["status"], "cancelled", "{}", out.describe());
    assert_eq!(wait_final(&env.home, &uuid)["status"], "cancelled");
    // The job ended while the server's open still waits on our lease.
    assert_eq!(
        lease.state(),
        libc::F_RDLCK,
        "the lease was broken before the cancel took effect: the job waited for the read"
    );
    // The archive is free: another backup into it runs now, lease still held.
    let other = env.path("other");
    small_tree(&other, "other");
    backup(&env.home, &other, &wim, &["--name", "after-cancel"]);
    wimlib_verify(&wim);
    assert_eq!(common::wimlib_image_count(&wim), 1);
    lease.release();
    drop(c);
    drop(rt);
    server.stop();
}
