//! A real S3 server for tests: `s3s-fs` 0.14.1 (installed by
//! `scripts/ensure-deps.sh`), serving a temporary directory on a free
//! loopback port, checking SigV4 signatures with a fixed key pair. A bucket
//! is a directory under the root; an object `KEY` of bucket `B` is the file
//! `ROOT/B/KEY`, so tests can look at what was stored without going
//! through S3.
//!
//! ```text
//! let s3 = common::s3::S3Server::start();           // bucket "wimguard-test" exists
//! let endpoint = s3.endpoint();                     // "http://127.0.0.1:PORT"
//! let (key, secret) = (s3::ACCESS_KEY, s3::SECRET_KEY);
//! assert_eq!(s3.object("prefix/name/000001.wim").unwrap().len(), 42);
//! // killed (and its directory removed) on drop
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The version the tests were written against (newer ones need a newer rustc).
pub const S3S_FS_VERSION: &str = "0.14.1";
/// The access key id the server accepts.
pub const ACCESS_KEY: &str = "wimguard-test-key";
/// The secret access key the server accepts.
pub const SECRET_KEY: &str = "wimguard-test-secret-0123456789";
/// The bucket `start` creates.
pub const BUCKET: &str = "wimguard-test";

/// A running s3s-fs; killed on drop.
pub struct S3Server {
    child: Child,
    addr: SocketAddr,
    root: tempfile::TempDir,
    log: PathBuf,
}

/// Where the s3s-fs binary of [`S3S_FS_VERSION`] is: on PATH or in
/// `~/.cargo/bin` (where `cargo install` puts it).
pub fn s3s_fs_binary() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("s3s-fs")).collect())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        candidates.push(home.join("bin/s3s-fs"));
    }
    candidates.into_iter().find(|bin| {
        bin.is_file()
            && Command::new(bin).arg("--version").output().is_ok_and(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .any(|w| w == S3S_FS_VERSION)
            })
    })
}

impl S3Server {
    /// Starts s3s-fs with bucket [`BUCKET`]; panics with the way to install
    /// it when it is missing.
    pub fn start() -> S3Server {
        let s = Self::start_empty();
        s.create_bucket(BUCKET);
        s
    }

    /// Starts s3s-fs with no bucket at all.
    pub fn start_empty() -> S3Server {
        let bin = s3s_fs_binary().unwrap_or_else(|| {
            panic!(
                "s3s-fs {S3S_FS_VERSION} is not installed (neither on PATH nor in ~/.cargo/bin); run \
                 scripts/ensure-deps.sh, or: cargo install s3s-fs@{S3S_FS_VERSION} --features binary"
            )
        });
        let root = tempfile::Builder::new().prefix("wimguard-s3s-").tempdir().unwrap();
        let data = root.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let log = root.path().join("s3s-fs.log");
        // A free port: the kernel picks one, s3s-fs binds it right after. If
        // another process takes it in between, the start fails and is retried.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let out = std::fs::File::create(&log).unwrap();
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(&data)
                .env("RUST_LOG", std::env::var("S3S_LOG").unwrap_or_else(|_| "warn".into()))
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // exited: the port was taken; try another
                }
                if answers(addr) {
                    return S3Server { child, addr, root, log };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "s3s-fs did not answer on {addr} within 20s; its log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!(
            "s3s-fs could not start; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The allow-list entry for this server (`127.0.0.1:PORT`).
    pub fn allowed_host(&self) -> String {
        self.addr.to_string()
    }

    /// The directory s3s-fs serves.
    pub fn root(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Creates bucket `name` (a directory under the root).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root().join(name)).unwrap();
    }

    /// The file of object `key` of bucket [`BUCKET`].
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root().join(BUCKET).join(key)
    }

    /// The bytes of object `key` of bucket [`BUCKET`], read from disk.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.object_path(key)).ok()
    }

    /// Every object of bucket `bucket` with its size, by key, sorted (read
    /// from disk; s3s-fs's own bookkeeping files are left out).
    pub fn objects_in(&self, bucket: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let base = self.root().join(bucket);
        walk(&base, &base, &mut out);
        out.sort();
        out
    }

    /// [`S3Server::objects_in`] of [`BUCKET`].
    pub fn objects(&self) -> Vec<(String, u64)> {
        self.objects_in(BUCKET)
    }

    /// Files s3s-fs keeps for multipart uploads in progress (their parts
    /// and upload records): empty once every upload is completed or aborted.
    pub fn pending_upload_files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload"))
            .collect();
        v.sort();
        v
    }

    /// What s3s-fs logged (set `S3S_LOG=debug` for more).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".tmp") {
            continue;
        }
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            walk(base, &path, out);
        } else {
            let key = path.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            out.push((key, meta.len()));
        }
    }
}

/// Does an HTTP server answer on `addr`?
fn answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET / HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut first = [0u8; 12];
    s.read_exact(&mut first).is_ok() && first.starts_with(b"HTTP/1.")
}
