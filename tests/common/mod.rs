//! Shared helpers for the interop test suite: process runners (wimguard and
//! wimlib-imagex, with timeouts), a fixture tree builder covering the
//! conformance checklist of docs/wim-format.md §13.1, and a tree
//! snapshot/compare function.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use sha1::{Digest, Sha1};

/// A fault-injecting HTTP proxy for destination tests.
pub mod faulty_proxy;
/// A real S3 server (s3s-fs) for destination tests.
pub mod s3;

/// Default timeout for ordinary tool invocations.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Timeout for commands fed with bad input: they must finish quickly.
pub const BAD_INPUT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Process running
// ---------------------------------------------------------------------------

/// Path of the wimguard binary under test.
pub fn wimguard() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wimguard"))
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Prints a clear skip line (visible with `--nocapture`, and in the captured
/// output of the test otherwise).
pub fn skip(test: &str, why: &str) {
    // Written straight to fd 2 so that the line shows even though the test
    // harness captures print!/eprint! output of passing tests.
    let line = format!("skipped: {test}: {why}\n");
    unsafe { libc::write(2, line.as_ptr() as *const libc::c_void, line.len()) };
    println!("skipped: {test}: {why}");
}

/// Returns true (after printing "skipped: needs root") when not root.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        false
    } else {
        skip(test, "needs root");
        true
    }
}

#[derive(Debug)]
pub struct Out {
    pub cmd: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub stdout_bytes: Vec<u8>,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
    pub fn describe(&self) -> String {
        format!(
            "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.cmd,
            self.status,
            truncate_for_display(&self.stdout),
            truncate_for_display(&self.stderr)
        )
    }
    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn truncate_for_display(s: &str) -> String {
    const MAX: usize = 8000;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}\n... [{} more bytes]", &s[..cut], s.len() - cut)
    }
}

fn shell_quote(s: &OsStr) -> String {
    let t = s.to_string_lossy();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        t.into_owned()
    } else {
        format!("'{}'", t.replace('\'', "'\\''"))
    }
}

/// Runs `prog args...` with stdin closed, capturing stdout/stderr; kills the
/// child and fails the test when it does not finish within `timeout`.
pub fn run_with_timeout<S: AsRef<OsStr>>(prog: &Path, args: &[S], timeout: Duration) -> Out {
    let mut cmd_str = shell_quote(prog.as_os_str());
    for a in args {
        cmd_str.push(' ');
        cmd_str.push_str(&shell_quote(a.as_ref()));
    }
    let mut child = Command::new(prog)
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn `{cmd_str}`: {e}"));
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) => {
                if start.elapsed() > timeout {
                    let _ = child.kill();
                    let _ = child.wait();
                    let out = t_out.join().unwrap_or_default();
                    let err = t_err.join().unwrap_or_default();
                    panic!(
                        "TIMEOUT after {:?}: `{}` was killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                        timeout,
                        cmd_str,
                        truncate_for_display(&String::from_utf8_lossy(&out)),
                        truncate_for_display(&String::from_utf8_lossy(&err))
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("wait for `{cmd_str}` failed: {e}"),
        }
    };
    let out = t_out.join().unwrap_or_default();
    let err = t_err.join().unwrap_or_default();
    Out {
        cmd: cmd_str,
        status,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        stdout_bytes: out,
    }
}

fn assert_no_panic(out: &Out) {
    assert!(
        !out.stderr.contains("panicked") && !out.stdout.contains("panicked"),
        "wimguard PANICKED:\n{}",
        out.describe()
    );
    if let Some(sig) = std::os::unix::process::ExitStatusExt::signal(&out.status) {
        panic!("wimguard was killed by signal {sig}:\n{}", out.describe());
    }
}

/// Runs wimguard; only checks that it did not panic / crash. Use for negative tests.
pub fn wg_raw<S: AsRef<OsStr>>(args: &[S]) -> Out {
    let out = run_with_timeout(&wimguard(), args, DEFAULT_TIMEOUT);
    assert_no_panic(&out);
    out
}

/// Runs wimguard and fails the test unless it exits 0 (without panicking).
pub fn wg<S: AsRef<OsStr>>(args: &[S]) -> Out {
    let out = wg_raw(args);
    assert!(out.ok(), "wimguard failed:\n{}", out.describe());
    out
}

/// Runs wimguard on bad input: must exit non-zero, without panic, within
/// BAD_INPUT_TIMEOUT, and print a message on stderr.
pub fn wg_must_fail<S: AsRef<OsStr>>(args: &[S]) -> Out {
    let out = run_with_timeout(&wimguard(), args, BAD_INPUT_TIMEOUT);
    assert_no_panic(&out);
    assert!(
        !out.ok(),
        "wimguard unexpectedly SUCCEEDED on bad input:\n{}",
        out.describe()
    );
    assert!(
        !out.stderr.trim().is_empty(),
        "wimguard failed (as it should) but printed no message on stderr:\n{}",
        out.describe()
    );
    out
}

static WIMLIB_CHECK: Once = Once::new();

fn wimlib_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    for dir in std::env::split_paths(&path) {
        let p = dir.join("wimlib-imagex");
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// Fails the test with a clear message when wimlib-imagex is missing.
pub fn ensure_wimlib() -> PathBuf {
    match wimlib_path() {
        Some(p) => {
            WIMLIB_CHECK.call_once(|| {
                let out = run_with_timeout(&p, &["--version"], Duration::from_secs(30));
                assert!(out.ok(), "wimlib-imagex --version failed:\n{}", out.describe());
            });
            p
        }
        None => panic!(
            "wimlib-imagex not found in PATH: the interop tests need wimlib 1.13. \
             install wimtools: apt-get install wimtools"
        ),
    }
}

/// Runs wimlib-imagex without judging the result.
pub fn wimlib_raw<S: AsRef<OsStr>>(args: &[S]) -> Out {
    let p = ensure_wimlib();
    run_with_timeout(&p, args, DEFAULT_TIMEOUT)
}

/// Runs wimlib-imagex and fails the test on a non-zero exit code or any
/// `[WARNING]` line on stderr whose text does not contain one of `allowed`.
pub fn wimlib_allow<S: AsRef<OsStr>>(args: &[S], allowed: &[&str]) -> Out {
    let out = wimlib_raw(args);
    assert!(out.ok(), "wimlib-imagex failed:\n{}", out.describe());
    let bad: Vec<&str> = out
        .stderr
        .split(['\n', '\r'])
        .filter(|l| l.contains("[WARNING]") || l.contains("[ERROR]"))
        .filter(|l| !allowed.iter().any(|a| l.contains(a)))
        .collect();
    assert!(
        bad.is_empty(),
        "wimlib-imagex printed warnings (treated as failures): {bad:#?}\n{}",
        out.describe()
    );
    out
}

/// Runs wimlib-imagex; any warning or non-zero exit fails the test.
pub fn wimlib<S: AsRef<OsStr>>(args: &[S]) -> Out {
    wimlib_allow(args, &[])
}

/// `wimlib-imagex verify WIM`: must succeed and print "successfully verified".
/// The "does not contain integrity information" warning is allowed only when
/// `has_integrity` is false.
pub fn wimlib_verify(wim: &Path, has_integrity: bool) -> Out {
    let allowed: &[&str] = if has_integrity {
        &[]
    } else {
        &["does not contain integrity information"]
    };
    let out = wimlib_allow(&[OsStr::new("verify"), wim.as_os_str()], allowed);
    assert!(
        out.stdout.contains("successfully verified"),
        "wimlib verify did not report success:\n{}",
        out.describe()
    );
    if has_integrity {
        assert!(
            !out.stderr.contains("does not contain integrity information"),
            "WIM was expected to carry an integrity table:\n{}",
            out.describe()
        );
    }
    out
}

/// Runs `wimlib-imagex dir WIM IMAGE` and returns the sorted path list.
pub fn wimlib_dir(wim: &Path, image: &str) -> Vec<String> {
    let out = wimlib(&[OsStr::new("dir"), wim.as_os_str(), OsStr::new(image)]);
    sorted_lines(&out.stdout)
}

pub fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().filter(|l| !l.is_empty()).map(|l| l.to_string()).collect();
    v.sort();
    v
}

/// Parses `wimlib-imagex info WIM --header` into key → value.
pub fn wimlib_header(wim: &Path) -> BTreeMap<String, String> {
    let out = wimlib(&[OsStr::new("info"), wim.as_os_str(), OsStr::new("--header")]);
    let mut m = BTreeMap::new();
    for l in out.stdout.lines() {
        if let Some((k, v)) = l.split_once('=') {
            m.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    m
}

pub fn parse_num(s: &str) -> u64 {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x") {
        u64::from_str_radix(h, 16).unwrap_or_else(|_| panic!("bad hex {s:?}"))
    } else {
        s.parse().unwrap_or_else(|_| panic!("bad number {s:?}"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub hash: String,
    pub size: u64,
    pub refcount: u64,
    pub metadata: bool,
    pub flags: String,
    pub offset: u64,
    pub stored_size: u64,
}

/// Parses `wimlib-imagex info WIM --blobs`.
pub fn wimlib_blobs(wim: &Path) -> Vec<BlobInfo> {
    let out = wimlib(&[OsStr::new("info"), wim.as_os_str(), OsStr::new("--blobs")]);
    let mut v = Vec::new();
    let mut cur: Option<BlobInfo> = None;
    for l in out.stdout.lines() {
        let Some((k, val)) = l.split_once('=') else { continue };
        let (k, val) = (k.trim(), val.trim());
        match k {
            "Hash" => {
                if let Some(b) = cur.take() {
                    v.push(b);
                }
                cur = Some(BlobInfo {
                    hash: val.trim_start_matches("0x").to_string(),
                    size: 0,
                    refcount: 0,
                    metadata: false,
                    flags: String::new(),
                    offset: 0,
                    stored_size: 0,
                });
            }
            "Uncompressed size" => {
                cur.as_mut().unwrap().size = parse_num(val.trim_end_matches(" bytes"));
            }
            "Offset in WIM" => cur.as_mut().unwrap().offset = parse_num(val.trim_end_matches(" bytes")),
            "Compressed size" => cur.as_mut().unwrap().stored_size = parse_num(val.trim_end_matches(" bytes")),
            "Reference Count" => cur.as_mut().unwrap().refcount = parse_num(val),
            "Flags" => {
                let b = cur.as_mut().unwrap();
                b.metadata = val.contains("METADATA");
                b.flags = val.to_string();
            }
            _ => {}
        }
    }
    if let Some(b) = cur.take() {
        v.push(b);
    }
    v
}

/// Number of images reported by `wimlib-imagex info WIM`.
pub fn wimlib_image_count(wim: &Path) -> u64 {
    let out = wimlib(&[OsStr::new("info"), wim.as_os_str()]);
    for l in out.stdout.lines() {
        if let Some(v) = l.strip_prefix("Image Count:") {
            return parse_num(v);
        }
    }
    panic!("no Image Count in wimlib info output:\n{}", out.describe())
}

/// Raw header fields read directly from the file (§2).
#[derive(Debug, Clone, Copy)]
pub struct RawHeader {
    pub flags: u32,
    pub chunk_size: u32,
    pub image_count: u32,
    pub blob_table: (u64, u64), // (offset, size in wim)
    pub xml: (u64, u64),
    pub integrity: (u64, u64),
}

pub fn read_raw_header(wim: &Path) -> RawHeader {
    let b = fs::read(wim).unwrap();
    assert!(b.len() >= 208, "{} is shorter than a WIM header", wim.display());
    let u32at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let reshdr = |o: usize| {
        let mut s = [0u8; 8];
        s[..7].copy_from_slice(&b[o..o + 7]);
        let size = u64::from_le_bytes(s);
        let off = u64::from_le_bytes(b[o + 8..o + 16].try_into().unwrap());
        (off, size)
    };
    RawHeader {
        flags: u32at(0x10),
        chunk_size: u32at(0x14),
        image_count: u32at(0x2c),
        blob_table: reshdr(0x30),
        xml: reshdr(0x48),
        integrity: reshdr(0x7c),
    }
}

/// Checks the layout rules of §1 that keep wimlib's in-place append possible:
/// blob table ends at or before the XML, integrity (if any) after the XML, and
/// nothing after the end of the last of XML / integrity table.
pub fn assert_appendable_layout(wim: &Path) {
    let h = read_raw_header(wim);
    let len = fs::metadata(wim).unwrap().len();
    let xml_end = h.xml.0 + h.xml.1;
    assert!(
        h.blob_table.0 + h.blob_table.1 <= h.xml.0,
        "{}: blob table {:?} does not end before the XML {:?}",
        wim.display(),
        h.blob_table,
        h.xml
    );
    let end = if h.integrity.1 != 0 {
        assert!(
            h.integrity.0 >= xml_end,
            "integrity table {:?} before XML end {xml_end}",
            h.integrity
        );
        h.integrity.0 + h.integrity.1
    } else {
        xml_end
    };
    assert_eq!(
        end,
        len,
        "{}: data after the XML/integrity table (end {end}, file length {len})",
        wim.display()
    );
    for b in wimlib_blobs(wim) {
        let (bt0, bt1) = (h.blob_table.0, h.blob_table.0 + h.blob_table.1);
        let end = b.offset + b.stored_size;
        assert!(
            end <= h.xml.0 && (end <= bt0 || b.offset >= bt1),
            "{}: resource {} ({}..{}) overlaps the blob table or extends past the XML start",
            wim.display(),
            b.hash,
            b.offset,
            b.offset + b.stored_size
        );
    }
}

// ---------------------------------------------------------------------------
// Small deterministic PRNG
// ---------------------------------------------------------------------------

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Compressible English-ish text.
pub fn text_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "lazy",
        "dog",
        "archive",
        "image",
        "window",
        "backup",
        "restore",
        "blob",
        "table",
        "metadata",
        "resource",
        "chunk",
        "huffman",
        "offset",
        "wimguard",
        "wimlib",
        "symlink",
        "directory",
        "integrity",
        "compression",
        "lzx",
        "xpress",
    ];
    let mut v = Vec::with_capacity(n + 32);
    let mut col = 0;
    while v.len() < n {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        v.extend_from_slice(w.as_bytes());
        col += w.len() + 1;
        if col > 70 {
            v.push(b'\n');
            col = 0;
        } else {
            v.push(b' ');
        }
    }
    v.truncate(n);
    v
}

// ---------------------------------------------------------------------------
// libc wrappers
// ---------------------------------------------------------------------------

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno_err(what: &str, p: &Path) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
}

pub fn lchown(p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let c = cpath(p);
    if unsafe { libc::lchown(c.as_ptr(), uid, gid) } != 0 {
        return Err(errno_err("lchown", p));
    }
    Ok(())
}

pub fn chmod(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

pub fn mknod(p: &Path, mode: u32, dev: u64) -> std::io::Result<()> {
    let c = cpath(p);
    if unsafe { libc::mknod(c.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) } != 0 {
        return Err(errno_err("mknod", p));
    }
    Ok(())
}

pub fn makedev(major: u32, minor: u32) -> u64 {
    libc::makedev(major, minor) as u64
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let c = cpath(p);
    let n = CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr() as *const libc::c_void,
            value.len(),
            0,
        )
    };
    if r != 0 {
        return Err(errno_err("lsetxattr", p));
    }
    Ok(())
}

/// Sorted (name, value) list of all xattrs of `p` (not following symlinks).
pub fn list_xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let c = cpath(p);
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if n <= 0 {
        return Vec::new();
    }
    let mut buf = vec![0u8; n as usize + 256];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    buf.truncate(n as usize);
    let mut v = Vec::new();
    for name in buf.split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let cname = CString::new(name).unwrap();
        let sz = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        let value = if sz < 0 {
            b"<unreadable>".to_vec()
        } else {
            let mut val = vec![0u8; sz as usize + 1];
            let got = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    val.as_mut_ptr() as *mut libc::c_void,
                    val.len(),
                )
            };
            if got < 0 {
                b"<unreadable>".to_vec()
            } else {
                val.truncate(got as usize);
                val
            }
        };
        v.push((String::from_utf8_lossy(name).into_owned(), value));
    }
    v.sort();
    v
}

/// Sets atime and mtime (seconds, nanoseconds) without following symlinks.
pub fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let c = cpath(p);
    let ts = [
        libc::timespec {
            tv_sec: atime.0 as libc::time_t,
            tv_nsec: atime.1 as _,
        },
        libc::timespec {
            tv_sec: mtime.0 as libc::time_t,
            tv_nsec: mtime.1 as _,
        },
    ];
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    assert_eq!(r, 0, "{}", errno_err("utimensat", p));
}

/// 100 ns ticks relative to the Unix epoch (truncating, like wimlib).
pub fn ticks(sec: i64, nsec: i64) -> i64 {
    sec * 10_000_000 + nsec / 100
}

// ---------------------------------------------------------------------------
// Fixture tree
// ---------------------------------------------------------------------------

pub struct Fixture {
    _tmp: tempfile::TempDir,
    /// Canonical absolute path of the tree root.
    pub root: PathBuf,
    /// Whether user.* xattrs could be set.
    pub xattrs: bool,
    /// Whether char/block devices were created.
    pub devices: bool,
    /// Whether ownership variety was applied.
    pub owners: bool,
    /// Total bytes of regular file contents (each inode once).
    pub total_bytes: u64,
}

/// A canonical temp directory (so that absolute symlinks and rpfix agree).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wgtest-")
        .tempdir()
        .expect("create temp dir")
}

pub fn canon(p: &Path) -> PathBuf {
    p.canonicalize()
        .unwrap_or_else(|e| panic!("canonicalize {}: {e}", p.display()))
}

/// A scratch directory with a canonical path; `path()` gives it.
pub struct Scratch {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let t = tempdir();
        let dir = canon(t.path());
        Scratch { _tmp: t, dir }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// Scratch for `bytes` of bulk test data: in `/dev/shm` when that
    /// memory file system has room for twice as much, else on disk. CI's
    /// disk is shared with `target/` and has run out under a 1 GiB source.
    pub fn for_bulk(bytes: u64) -> Scratch {
        let shm = Path::new("/dev/shm");
        if free_bytes(shm).is_some_and(|free| free > bytes.saturating_mul(2)) {
            if let Ok(t) = tempfile::Builder::new().prefix("wimguard-test").tempdir_in(shm) {
                let dir = canon(t.path());
                return Scratch { _tmp: t, dir };
            }
        }
        Scratch::new()
    }
}

/// Bytes free to an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs(3) fills the zeroed struct we own from a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statvfs(c.as_ptr(), &mut st) } == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Seconds and nanoseconds of a timestamp.
type Timespec = (i64, i64);

struct Builder {
    root: PathBuf,
    rng: Rng,
    total: u64,
    /// (relative path, atime, mtime) overrides.
    times: HashMap<PathBuf, (Timespec, Timespec)>,
}

impl Builder {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    fn dir(&mut self, rel: &str) -> PathBuf {
        let p = self.p(rel);
        fs::create_dir_all(&p).unwrap();
        chmod(&p, 0o755);
        p
    }
    fn file(&mut self, rel: &str, data: &[u8]) -> PathBuf {
        let p = self.p(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        let mut f = fs::File::create(&p).unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        f.write_all(data).unwrap();
        drop(f);
        chmod(&p, 0o644);
        self.total += data.len() as u64;
        p
    }
    fn random(&mut self, rel: &str, n: usize) -> PathBuf {
        let d = self.rng.bytes(n);
        self.file(rel, &d)
    }
    fn link(&mut self, rel: &str, target: &str) -> PathBuf {
        let p = self.p(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        symlink(target, &p).unwrap_or_else(|e| panic!("symlink {}: {e}", p.display()));
        p
    }
}

/// Builds the full conformance fixture (§13.1) in a fresh temp dir.
pub fn build_fixture() -> Fixture {
    build_tree(1, true)
}

/// A second, smaller tree (for append tests): some content shared with the
/// main fixture (same seed-derived small files), some unique.
pub fn build_tree2(seed: u64) -> Fixture {
    build_tree(seed, false)
}

fn build_tree(seed: u64, full: bool) -> Fixture {
    let tmp = tempdir();
    let root = canon(tmp.path()).join("tree");
    fs::create_dir(&root).unwrap();
    let mut b = Builder {
        root: root.clone(),
        rng: Rng::new(seed),
        total: 0,
        times: HashMap::new(),
    };
    let rs = root.to_str().expect("temp dir path must be UTF-8").to_string();

    // --- regular files of boundary sizes (shared between trees: fixed seed) ---
    {
        let mut shared = Rng::new(42);
        for n in [0usize, 1, 63, 64, 32767, 32768, 32769] {
            let d = shared.bytes(n);
            b.file(&format!("files/size_{n}"), &d);
        }
    }
    // unique content per tree
    b.random("files/unique_random.bin", 100_000 + seed as usize);
    let t = text_bytes(&mut b.rng, 20_000);
    b.file("names/with spaces.txt", &t);
    b.file("names/naïve café.txt", b"caf\xc3\xa9\n");
    b.file("names/日本語のファイル.txt", "こんにちは\n".as_bytes());
    b.file("names/😀 emoji.txt", "astral 😀\n".as_bytes());
    b.file("names/Case.txt", b"upper\n");
    b.file("names/case.txt", b"lower\n");
    b.file("names/ünïcödé dir/inner.txt", b"inner\n");
    b.dir("empty_dir");
    b.file("modes/m0777", b"#!/bin/sh\necho 0777\n");
    chmod(&b.p("modes/m0777"), 0o777);
    b.link("sym/rel", "../files/size_63");
    b.link("sym/abs_out", "/etc/passwd");
    b.link("sym/abs_in_file", &format!("{rs}/files/size_64"));

    if full {
        // several MiB: random, text, 32 KiB-aligned mix
        b.random("files/random_big.bin", 1024 * 1024 + 4321);
        let t = text_bytes(&mut b.rng, 1024 * 1024 + 77);
        b.file("files/text_big.txt", &t);
        let mut mix = Vec::new();
        for i in 0..24 {
            match i % 3 {
                0 => mix.extend(text_bytes(&mut b.rng, 32768)),
                1 => mix.extend(b.rng.bytes(32768)),
                _ => mix.extend(std::iter::repeat_n(0u8, 32768)),
            }
        }
        b.file("files/mix_aligned.bin", &mix);
        // x86 binary (E8 translation path)
        let bin = ["/usr/bin/env", "/bin/ls", "/bin/true"]
            .iter()
            .find_map(|p| fs::read(p).ok())
            .expect("no x86 binary found to copy");
        b.file("files/x86/env", &bin);
        chmod(&b.p("files/x86/env"), 0o755);

        // sparse file: hole + data + hole
        {
            let p = b.p("files/sparse.img");
            let f = fs::File::create(&p).unwrap();
            f.set_len(1024 * 1024).unwrap();
            use std::os::unix::fs::FileExt;
            let data = b.rng.bytes(8192);
            f.write_at(&data, 512 * 1024).unwrap();
            drop(f);
            chmod(&p, 0o640);
            b.total += 1024 * 1024;
        }

        // hard links + identical copy elsewhere
        let hl = b.rng.bytes(40_000);
        b.file("links/hard1", &hl);
        fs::create_dir_all(b.p("links/sub")).unwrap();
        fs::hard_link(b.p("links/hard1"), b.p("links/hard2")).unwrap();
        fs::hard_link(b.p("links/hard1"), b.p("links/sub/hard3")).unwrap();
        b.file("other/copy_of_hard1", &hl);
        b.total -= hl.len() as u64; // the copy dedups

        // symlinks
        b.link("sym/abs_in_dir", &format!("{rs}/files"));
        b.link("sym/abs_in_dangling", &format!("{rs}/no/such/file"));
        b.link("sym/dangling", "does/not/exist");
        b.link("sym/dir_rel", "../deep");
        b.link("sym/backslash", "back\\slash\\target");
        b.link("sym/dot", ".");

        // special files
        fs::create_dir_all(b.p("special")).unwrap();
        let fifo = b.p("special/fifo");
        mknod(&fifo, libc::S_IFIFO | 0o640, 0).expect("mkfifo");
        {
            let sock = b.p("special/socket");
            let l = std::os::unix::net::UnixListener::bind(&sock).expect("bind unix socket");
            drop(l);
            chmod(&sock, 0o755);
        }

        // modes
        b.file("modes/setuid", b"setuid\n");
        chmod(&b.p("modes/setuid"), 0o4755);
        b.file("modes/setgid", b"setgid\n");
        chmod(&b.p("modes/setgid"), 0o2750);
        b.file("modes/m0600", b"secret\n");
        chmod(&b.p("modes/m0600"), 0o600);
        b.dir("modes/sticky_dir");
        b.file("modes/sticky_dir/f", b"in sticky\n");
        chmod(&b.p("modes/sticky_dir"), 0o1777);
        b.dir("modes/setgid_dir");
        chmod(&b.p("modes/setgid_dir"), 0o2775);
        b.dir("modes/dir0700");
        chmod(&b.p("modes/dir0700"), 0o700);

        // deep nesting
        let mut deep = String::from("deep");
        for i in 0..24 {
            deep.push_str(&format!("/level{i:02}"));
        }
        b.file(&format!("{deep}/leaf.txt"), b"deep leaf\n");

        // awkward names: Windows-invalid characters, backslash, long names
        b.file("names/back\\slash.txt", b"backslash in name\n");
        b.file("names/colon:star*quest?.txt", b"windows-invalid chars\n");
        b.file("names/trailing dot.", b"dot\n");
        b.file("names/ leading space", b"space\n");
        let long_ascii = "L".repeat(255);
        b.file(&format!("names/{long_ascii}"), b"255-byte name\n");
        let long_emoji = "😀".repeat(63); // 252 UTF-8 bytes, 126 UTF-16 units
        b.file(&format!("names/{long_emoji}"), b"astral long name\n");
        b.link("sym/long_target", &"abcdefghi/".repeat(300));
        // hard-linked empty files
        b.file("links/empty_hl1", b"");
        fs::hard_link(b.p("links/empty_hl1"), b.p("links/empty_hl2")).unwrap();
        // a directory with many entries (child ordering: case, non-ASCII, punctuation)
        for i in 0..120 {
            let name = match i % 6 {
                0 => format!("many/f{i:03}"),
                1 => format!("many/F{i:03}"),
                2 => format!("many/é{i}"),
                3 => format!("many/_{i}"),
                4 => format!("many/Ω{i}.dat"),
                _ => format!("many/z{i}~"),
            };
            if i % 2 == 0 {
                b.file(&name, format!("content {i}\n").as_bytes());
            } else {
                b.file(&name, b"shared small content\n");
            }
        }

        // times
        b.file("times/ns", b"ns\n");
        b.file("times/epoch", b"epoch\n");
        b.times.insert("times/epoch".into(), ((2_208_988_804, 0), (0, 0)));
        b.file("times/pre1970", b"1960\n");
        b.file("times/post2038", b"2100\n");
        b.times.insert(
            "times/ns".into(),
            ((2_208_988_800, 999_999_999), (1_234_567_890, 123_456_789)),
        );
        b.times.insert(
            "times/pre1970".into(),
            ((2_208_988_801, 1), (-315_619_200, 987_654_321)),
        );
        b.times.insert(
            "times/post2038".into(),
            ((4_102_444_800 + 99_999, 500), (4_102_444_800 + 12345, 999_999_999)),
        );
        b.times.insert("times".into(), ((2_208_988_803, 0), (-1, 999_999_900)));
    }

    // mode 0000 (readable only by root)
    let mut owners = false;
    let mut devices = false;
    if full && is_root() {
        b.file("modes/m0000", b"nobody may read me\n");
        chmod(&b.p("modes/m0000"), 0o000);
        // devices
        let c = mknod(&b.p("special/chr_1_3"), libc::S_IFCHR | 0o644, makedev(1, 3));
        let k = mknod(&b.p("special/blk_7_200"), libc::S_IFBLK | 0o660, makedev(7, 200));
        match (c, k) {
            (Ok(()), Ok(())) => devices = true,
            (c, k) => {
                let _ = fs::remove_file(b.p("special/chr_1_3"));
                let _ = fs::remove_file(b.p("special/blk_7_200"));
                eprintln!(
                    "note: cannot create device nodes ({:?} / {:?}); devices left out",
                    c.err(),
                    k.err()
                );
            }
        }
        // owners
        b.file("owners/u1000", b"1000\n");
        lchown(&b.p("owners/u1000"), 1000, 1000).unwrap();
        b.file("owners/nobody", b"65534\n");
        lchown(&b.p("owners/nobody"), 65534, 65534).unwrap();
        b.file("owners/odd", b"12345:54321\n");
        lchown(&b.p("owners/odd"), 12345, 54321).unwrap();
        b.file("owners/setuid_owned", b"suid owned\n");
        lchown(&b.p("owners/setuid_owned"), 1234, 5678).unwrap();
        chmod(&b.p("owners/setuid_owned"), 0o6755); // chown clears suid: chmod after
        b.dir("owners/dir_1001");
        b.file("owners/dir_1001/f", b"in owned dir\n");
        lchown(&b.p("owners/dir_1001/f"), 1001, 0).unwrap();
        lchown(&b.p("owners/dir_1001"), 1001, 1002).unwrap();
        b.link("owners/link_4242", "u1000");
        lchown(&b.p("owners/link_4242"), 4242, 4243).unwrap();
        lchown(&b.p("special/fifo"), 77, 88).unwrap();
        owners = true;
    }

    // xattrs (regular files and directories only: user.* is not allowed on
    // symlinks / special files)
    let xattrs = {
        let f = b.file("xattr/with_xattrs", b"xattr carrier\n");
        match lsetxattr(&f, "user.test", b"hello") {
            Ok(()) => {
                lsetxattr(&f, "user.empty", b"").unwrap();
                let bin: Vec<u8> = (0..=255u8).collect();
                lsetxattr(&f, "user.binary", &bin).unwrap();
                lsetxattr(&f, "user.with space", b"v").unwrap();
                lsetxattr(&b.p("xattr"), "user.dir", b"directory xattr").unwrap();
                true
            }
            Err(e) => {
                eprintln!("note: filesystem refuses user xattrs ({e}); xattrs left out");
                false
            }
        }
    };
    // security.capability (VFS_CAP_REVISION_2, effective, cap_net_bind_service)
    // and POSIX ACLs (access ACL on a file, default ACL on a directory): root only.
    if full && is_root() && xattrs {
        let cap: Vec<u8> = [0x0200_0001u32, 1 << 10, 0, 0, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        if let Err(e) = lsetxattr(&b.p("files/x86/env"), "security.capability", &cap) {
            eprintln!("note: cannot set security.capability ({e}); left out");
        }
        let acl = |entries: &[(u16, u16, u32)]| -> Vec<u8> {
            let mut v = 2u32.to_le_bytes().to_vec();
            for (tag, perm, id) in entries {
                v.extend(tag.to_le_bytes());
                v.extend(perm.to_le_bytes());
                v.extend(id.to_le_bytes());
            }
            v
        };
        const UNDEF: u32 = u32::MAX;
        let f = b.file("xattr/acl_file", b"acl carrier\n");
        chmod(&f, 0o640);
        let access = acl(&[
            (0x01, 6, UNDEF),
            (0x02, 4, 1000),
            (0x04, 4, UNDEF),
            (0x10, 4, UNDEF),
            (0x20, 0, UNDEF),
        ]);
        let d = b.dir("xattr/acl_dir");
        let default = acl(&[
            (0x01, 7, UNDEF),
            (0x04, 5, UNDEF),
            (0x08, 5, 2000),
            (0x10, 5, UNDEF),
            (0x20, 5, UNDEF),
        ]);
        if let Err(e) = lsetxattr(&f, "system.posix_acl_access", &access)
            .and_then(|_| lsetxattr(&d, "system.posix_acl_default", &default))
        {
            eprintln!("note: cannot set POSIX ACLs ({e}); left out");
        }
    }

    chmod(&root, 0o750);

    // timestamps: last, bottom-up (deepest paths first, root at the end)
    let mut all = Vec::new();
    collect_paths(&root, Path::new(""), &mut all);
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for rel in all {
        let (at, mt) = b.times.get(&rel).copied().unwrap_or_else(|| default_times(&rel));
        set_times(&root.join(&rel), at, mt);
    }
    let (at, mt) = default_times(Path::new("/"));
    set_times(&root, at, mt);

    Fixture {
        _tmp: tmp,
        root,
        xattrs,
        devices,
        owners,
        total_bytes: b.total,
    }
}

/// Deterministic per-path times: mtime in 2001..2004 with nanoseconds,
/// atime in the future (2040, > ctime and > mtime so relatime never updates it).
fn default_times(rel: &Path) -> ((i64, i64), (i64, i64)) {
    let mut h = Sha1::new();
    h.update(rel.as_os_str().as_bytes());
    let d = h.finalize();
    let x = u64::from_le_bytes(d[..8].try_into().unwrap());
    let y = u64::from_le_bytes(d[8..16].try_into().unwrap());
    let mtime = (1_000_000_000 + (x % 100_000_000) as i64, (y % 1_000_000_000) as i64);
    let atime = (
        2_208_988_800 + (y % 1_000_000) as i64,
        ((x >> 7) % 1_000_000_000) as i64,
    );
    (atime, mtime)
}

fn collect_paths(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    let dir = root.join(rel);
    for e in fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let r = rel.join(e.file_name());
        let ft = e.file_type().unwrap();
        out.push(r.clone());
        if ft.is_dir() {
            collect_paths(root, &r, out);
        }
    }
}

// ---------------------------------------------------------------------------
// Snapshot / compare
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Char,
    Block,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits incl. setuid/setgid/sticky; None for symlinks.
    pub mode: Option<u32>,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only.
    pub size: Option<u64>,
    pub sha1: Option<String>,
    pub target: Option<Vec<u8>>,
    pub rdev: Option<u64>,
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Paths (relative) sharing this inode, when more than one inside the tree.
    pub link_group: Option<Vec<String>>,
    /// 100 ns units since the Unix epoch.
    pub mtime: i64,
    pub atime: i64,
    /// st_blocks * 512 (for sparse checks).
    pub allocated: u64,
}

/// Relative path ("/" for the root, "/a/b" otherwise) → entry.
pub type Snapshot = BTreeMap<String, Entry>;

fn file_sha1(p: &Path) -> String {
    // O_NOATIME so that hashing does not disturb atimes (we own the files or are root).
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(p)
        .or_else(|_| fs::File::open(p));
    let mut f = f.unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let mut h = Sha1::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex(&h.finalize())
}

pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

pub fn sha1_hex(data: &[u8]) -> String {
    hex(&Sha1::digest(data))
}

/// Records every path below (and including) `root`.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut snap = Snapshot::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    snap_rec(root, "", &mut snap, &mut inodes);
    for (_, paths) in inodes {
        if paths.len() > 1 {
            let mut g = paths.clone();
            g.sort();
            for p in &paths {
                snap.get_mut(p).unwrap().link_group = Some(g.clone());
            }
        }
    }
    snap
}

fn snap_rec(path: &Path, rel: &str, snap: &mut Snapshot, inodes: &mut BTreeMap<(u64, u64), Vec<String>>) {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let fmt = md.mode() & libc::S_IFMT;
    let kind = match fmt {
        libc::S_IFREG => Kind::File,
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFLNK => Kind::Symlink,
        libc::S_IFIFO => Kind::Fifo,
        libc::S_IFSOCK => Kind::Socket,
        libc::S_IFCHR => Kind::Char,
        libc::S_IFBLK => Kind::Block,
        _ => panic!("unknown file type {fmt:o} at {}", path.display()),
    };
    let key = if rel.is_empty() {
        "/".to_string()
    } else {
        rel.to_string()
    };
    let e = Entry {
        kind,
        mode: if kind == Kind::Symlink {
            None
        } else {
            Some(md.mode() & 0o7777)
        },
        uid: md.uid(),
        gid: md.gid(),
        size: if kind == Kind::File { Some(md.len()) } else { None },
        sha1: if kind == Kind::File {
            Some(file_sha1(path))
        } else {
            None
        },
        target: if kind == Kind::Symlink {
            Some(fs::read_link(path).unwrap().into_os_string().into_vec())
        } else {
            None
        },
        rdev: if matches!(kind, Kind::Char | Kind::Block) {
            Some(md.rdev())
        } else {
            None
        },
        xattrs: list_xattrs(path),
        link_group: None,
        mtime: ticks(md.mtime(), md.mtime_nsec()),
        atime: ticks(md.atime(), md.atime_nsec()),
        allocated: md.blocks() * 512,
    };
    if kind != Kind::Dir && md.nlink() > 1 {
        inodes.entry((md.dev(), md.ino())).or_default().push(key.clone());
    }
    snap.insert(key, e);
    if kind == Kind::Dir {
        let mut names: Vec<OsString> = fs::read_dir(path).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        for n in names {
            let child_rel = format!("{rel}/{}", n.to_str().expect("non-UTF-8 name in tree"));
            snap_rec(&path.join(&n), &child_rel, snap, inodes);
        }
    }
}

#[derive(Debug, Clone)]
pub struct CompareOpts {
    /// Compare uid/gid (only meaningful when root extracted the tree).
    pub owners: bool,
    /// Compare atime.
    pub atime: bool,
    /// Compare mtime.
    pub mtime: bool,
    /// Compare mode/uid/gid/mtime/xattrs of the root directory.
    pub root_meta: bool,
    /// (source root, destination root): absolute symlink targets inside the
    /// source root are expected re-rooted at the destination (rpfix).
    pub rpfix: Option<(PathBuf, PathBuf)>,
}

impl CompareOpts {
    /// Full comparison of an extraction of `src` at `dest` with rpfix.
    pub fn full(src: &Path, dest: &Path) -> CompareOpts {
        CompareOpts {
            owners: is_root(),
            atime: true,
            mtime: true,
            root_meta: true,
            rpfix: Some((src.to_path_buf(), dest.to_path_buf())),
        }
    }
    pub fn no_rpfix(mut self) -> Self {
        self.rpfix = None;
        self
    }
    pub fn without_atime(mut self) -> Self {
        self.atime = false;
        self
    }
}

fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => format!("{s:?}"),
        Err(_) => format!("0x{}", hex(b)),
    }
}

fn fmt_time(t: i64) -> String {
    let s = t.div_euclid(10_000_000);
    let f = t.rem_euclid(10_000_000);
    format!("{t} ({s}.{f:07} s)")
}

/// Compares two snapshots; returns a human-readable list of differences.
pub fn diff_snapshots(expected: &Snapshot, actual: &Snapshot, o: &CompareOpts) -> Vec<String> {
    let mut d = Vec::new();
    for (p, e) in expected {
        let Some(a) = actual.get(p) else {
            d.push(format!("{p}: MISSING in extracted tree (expected {:?})", e.kind));
            continue;
        };
        let mut f = Vec::new();
        if e.kind != a.kind {
            f.push(format!("type: expected {:?}, got {:?}", e.kind, a.kind));
            d.push(format!("{p}: {}", f.join("; ")));
            continue;
        }
        let is_root = p == "/";
        let meta = !is_root || o.root_meta;
        if meta && e.mode != a.mode {
            f.push(format!(
                "mode: expected {:o}, got {:o}",
                e.mode.unwrap_or(0),
                a.mode.unwrap_or(0)
            ));
        }
        if meta && o.owners && (e.uid, e.gid) != (a.uid, a.gid) {
            f.push(format!("owner: expected {}:{}, got {}:{}", e.uid, e.gid, a.uid, a.gid));
        }
        if e.size != a.size {
            f.push(format!("size: expected {:?}, got {:?}", e.size, a.size));
        }
        if e.sha1 != a.sha1 {
            f.push(format!("sha1: expected {:?}, got {:?}", e.sha1, a.sha1));
        }
        if let Some(t) = &e.target {
            let mut want = t.clone();
            if let Some((src, dest)) = &o.rpfix {
                let s = src.as_os_str().as_bytes();
                if t.starts_with(s) && (t.len() == s.len() || t[s.len()] == b'/') {
                    want = dest.as_os_str().as_bytes().to_vec();
                    want.extend_from_slice(&t[s.len()..]);
                }
            }
            if Some(&want) != a.target.as_ref() {
                f.push(format!(
                    "symlink target: expected {}, got {}",
                    show_bytes(&want),
                    a.target.as_deref().map(show_bytes).unwrap_or_default()
                ));
            }
        }
        if e.rdev != a.rdev {
            f.push(format!("rdev: expected {:?}, got {:?}", e.rdev, a.rdev));
        }
        if meta && e.xattrs != a.xattrs {
            let fx = |v: &Vec<(String, Vec<u8>)>| {
                v.iter()
                    .map(|(n, v)| format!("{n}={}", show_bytes(v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            f.push(format!("xattrs: expected [{}], got [{}]", fx(&e.xattrs), fx(&a.xattrs)));
        }
        if e.link_group != a.link_group {
            f.push(format!(
                "hard-link group: expected {:?}, got {:?}",
                e.link_group, a.link_group
            ));
        }
        if meta && o.mtime && e.mtime != a.mtime {
            f.push(format!(
                "mtime: expected {}, got {}",
                fmt_time(e.mtime),
                fmt_time(a.mtime)
            ));
        }
        if meta && o.atime && e.atime != a.atime {
            f.push(format!(
                "atime: expected {}, got {}",
                fmt_time(e.atime),
                fmt_time(a.atime)
            ));
        }
        if !f.is_empty() {
            d.push(format!("{p}: {}", f.join("; ")));
        }
    }
    for (p, a) in actual {
        if !expected.contains_key(p) {
            d.push(format!("{p}: UNEXPECTED extra {:?} in extracted tree", a.kind));
        }
    }
    d
}

/// Fails the test with a readable diff when the trees differ.
pub fn assert_trees_equal(src: &Path, dest: &Path, o: &CompareOpts, ctx: &str) {
    let e = snapshot(src);
    let a = snapshot(dest);
    assert_snapshots_equal(&e, &a, o, ctx);
}

pub fn assert_snapshots_equal(e: &Snapshot, a: &Snapshot, o: &CompareOpts, ctx: &str) {
    let d = diff_snapshots(e, a, o);
    if !d.is_empty() {
        let n = d.len();
        let shown: Vec<&String> = d.iter().take(60).collect();
        panic!(
            "{ctx}: extracted tree differs from the source in {n} path(s):\n  {}{}",
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n  "),
            if n > 60 {
                format!("\n  ... and {} more", n - 60)
            } else {
                String::new()
            }
        );
    }
}

/// The absolute path list of a tree, like `wimlib-imagex dir` prints it
/// ("/" plus "/a", "/a/b", ...), sorted.
pub fn tree_paths(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = snapshot(root).keys().cloned().collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------
// Convenience wrappers for the two tools
// ---------------------------------------------------------------------------

pub fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

/// `wimguard archive capture SRC WIM --name NAME [extra...]`
pub fn wg_capture(src: &Path, wim: &Path, name: &str, extra: &[&str]) -> Out {
    let mut a: Vec<&OsStr> = vec![
        os("archive"),
        os("capture"),
        src.as_os_str(),
        wim.as_os_str(),
        os("--name"),
        os(name),
    ];
    a.extend(extra.iter().map(|s| os(*s)));
    wg(&a)
}

/// `wimguard archive extract WIM IMAGE DEST [PATH...]`
pub fn wg_extract(wim: &Path, image: &str, dest: &Path, paths: &[&str]) -> Out {
    let mut a: Vec<&OsStr> = vec![
        os("archive"),
        os("extract"),
        wim.as_os_str(),
        os(image),
        dest.as_os_str(),
    ];
    a.extend(paths.iter().map(|s| os(*s)));
    wg(&a)
}

pub fn wg_ls(wim: &Path, image: &str) -> Vec<String> {
    let out = wg(&[os("archive"), os("ls"), wim.as_os_str(), os(image)]);
    sorted_lines(&out.stdout)
}

pub fn wg_verify(wim: &Path) -> Out {
    wg(&[os("archive"), os("verify"), wim.as_os_str()])
}

/// `wimlib-imagex capture SRC WIM NAME --unix-data [extra...]`
pub fn wl_capture(src: &Path, wim: &Path, name: &str, extra: &[&str]) -> Out {
    let mut a: Vec<&OsStr> = vec![
        os("capture"),
        src.as_os_str(),
        wim.as_os_str(),
        os(name),
        os("--unix-data"),
    ];
    a.extend(extra.iter().map(|s| os(*s)));
    wimlib(&a)
}

pub fn wl_append(src: &Path, wim: &Path, name: &str, extra: &[&str]) -> Out {
    let mut a: Vec<&OsStr> = vec![
        os("append"),
        src.as_os_str(),
        wim.as_os_str(),
        os(name),
        os("--unix-data"),
    ];
    a.extend(extra.iter().map(|s| os(*s)));
    let out = wimlib(&a);
    assert!(
        !out.combined().contains("Falling back to re-building"),
        "wimlib could not append in place (layout rules of §1 violated):\n{}",
        out.describe()
    );
    out
}

/// `wimlib-imagex apply WIM IMAGE DEST --unix-data`
pub fn wl_apply(wim: &Path, image: &str, dest: &Path) -> Out {
    wimlib(&[
        os("apply"),
        wim.as_os_str(),
        os(image),
        dest.as_os_str(),
        os("--unix-data"),
    ])
}

pub fn file_len(p: &Path) -> u64 {
    fs::metadata(p).unwrap().len()
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
