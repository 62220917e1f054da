//! Harness of the daemon tests: a real `wimguard server` per test (started
//! on a fresh home with `--port 0`, stopped by a Drop guard that SIGTERMs
//! then SIGKILLs and always reaps), CLI runners with timeouts, background
//! CLI processes, the client library on a small runtime, and test data.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Out, Rng};

/// Ordinary client commands (they touch small trees) must end within this.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// The server must answer `health` within this after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// A stopping server (and the jobs it cancels) must be gone within this.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// A job's final state must be visible within this.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(120);

pub fn wg_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wimguard"))
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Scratch space of one test: a canonical temp dir with `home/` inside.
pub struct Env {
    _scratch: common::Scratch,
    pub dir: PathBuf,
    pub home: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let s = common::Scratch::new();
        let dir = s.dir.clone();
        let home = dir.join("home");
        Env { _scratch: s, dir, home }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// Writes config.yaml before the first start (the server keeps what it finds).
    pub fn write_config(&self, yaml: &str) {
        fs::create_dir_all(&self.home).unwrap();
        fs::write(self.home.join("config.yaml"), yaml).unwrap();
    }
}

/// `service.client.address` from the home's config (empty when missing).
pub fn config_address(home: &Path) -> String {
    let text = fs::read_to_string(home.join("config.yaml")).unwrap_or_default();
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or(serde_yaml::Value::Null);
    v["service"]["client"]["address"].as_str().unwrap_or("").to_string()
}

pub fn config_secret(home: &Path) -> String {
    let text = fs::read_to_string(home.join("config.yaml")).unwrap_or_default();
    let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or(serde_yaml::Value::Null);
    v["appSecret"].as_str().unwrap_or("").to_string()
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

pub fn send_signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child we started and have not reaped yet.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Waits for a child with a deadline; on timeout the child is SIGKILLed,
/// reaped, and None is returned.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running `wimguard server --home HOME --port 0`. Dropping it stops it
/// (SIGTERM, then SIGKILL) and reaps it.
pub struct Server {
    pub home: PathBuf,
    child: Option<Child>,
    pub log: PathBuf,
    /// `http://127.0.0.1:PORT`, from the config the server wrote.
    pub address: String,
    pub pid: u32,
}

impl Server {
    pub fn start(home: &Path) -> Server {
        Self::start_with_env(home, &[])
    }

    /// Starts the server with extra environment variables (e.g. plugin secrets).
    pub fn start_with_env(home: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with(home, &[], env)
    }

    /// Starts the server with extra arguments (`--port N` replaces the
    /// default free port) and environment variables.
    pub fn start_with(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let log = home.parent().unwrap().join(format!("server-{n}.log"));
        let logf = fs::File::create(&log).unwrap();
        let child = Command::new(wg_bin())
            .arg("server")
            .arg("--home")
            .arg(home)
            // A free port unless the test picks one.
            .args(if args.contains(&"--port") {
                &[][..]
            } else {
                &["--port", "0"][..]
            })
            .args(args)
            .env("WIMGUARD_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("spawn wimguard server");
        let pid = child.id();
        let mut s = Server {
            home: home.to_path_buf(),
            child: Some(child),
            log,
            address: String::new(),
            pid,
        };
        s.wait_healthy();
        s
    }

    fn wait_healthy(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "wimguard server exited before it was healthy ({st}):\n{}",
                    self.log_text()
                );
            }
            // The first start writes config.yaml before it has bound its
            // port, with no address in it: a health check then would ask
            // whatever server holds the default port.
            if !config_address(&self.home).is_empty() {
                let out = common::run_with_timeout(
                    &wg_bin(),
                    &[os("health"), os("--home"), self.home.as_os_str()],
                    Duration::from_secs(20),
                );
                if out.ok() {
                    break;
                }
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "wimguard server did not become healthy within {START_TIMEOUT:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.address = config_address(&self.home);
        assert!(
            self.address.starts_with("http://127.0.0.1:") || self.address.starts_with("https://127.0.0.1:"),
            "unexpected address {:?}",
            self.address
        );
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the server's log contains `needle` (e.g. a line a
    /// plugin logs as it starts a call); fails the test after JOB_TIMEOUT.
    pub fn wait_for_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(
                start.elapsed() < JOB_TIMEOUT,
                "{needle:?} never appeared in the server log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:PORT`
    pub fn host_port(&self) -> String {
        self.address
            .split_once("://")
            .map_or(&*self.address, |(_, rest)| rest)
            .to_string()
    }

    pub fn signal(&self, sig: i32) {
        if self.child.is_some() {
            send_signal(self.pid, sig);
        }
    }

    /// Waits for the server to exit (after a signal); fails the test after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server already reaped");
        match wait_timeout(&mut child, timeout) {
            Some(st) => st,
            None => panic!(
                "wimguard server did not exit within {timeout:?} after the signal (killed with SIGKILL). log:\n{}",
                self.log_text()
            ),
        }
    }

    /// SIGTERM, wait, check the exit status is 0 and nothing panicked.
    pub fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let st = self.wait_exit(STOP_TIMEOUT);
        self.assert_no_panic();
        assert!(
            st.success(),
            "wimguard server exited with {st} after SIGTERM; log:\n{}",
            self.log_text()
        );
    }

    /// `kill -9` and reap.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let st = self.wait_exit(STOP_TIMEOUT);
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "server was not killed by SIGKILL: {st}"
        );
    }

    /// Fails if the server itself panicked. What plugins print (their own
    /// panics included) is logged under `wimguard::plugin` and does not count.
    pub fn assert_no_panic(&self) {
        let log = self.log_text();
        let own = log
            .lines()
            .filter(|l| !l.contains(" wimguard::plugin: "))
            .any(|l| l.contains("panicked"));
        assert!(!own, "the wimguard server panicked:\n{log}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            send_signal(child.id(), libc::SIGTERM);
            if wait_timeout(&mut child, Duration::from_secs(15)).is_none() {
                eprintln!("note: wimguard server {} needed SIGKILL", self.pid);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

pub fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

pub fn with_home(home: &Path, args: &[&std::ffi::OsStr]) -> Vec<std::ffi::OsString> {
    let mut v: Vec<std::ffi::OsString> = args.iter().map(|a| a.to_os_string()).collect();
    v.push("--home".into());
    v.push(home.as_os_str().to_os_string());
    v
}

fn assert_no_panic(out: &Out) {
    assert!(
        !out.stderr.contains("panicked") && !out.stdout.contains("panicked"),
        "wimguard PANICKED:\n{}",
        out.describe()
    );
    assert!(
        out.status.signal().is_none(),
        "wimguard died of a signal:\n{}",
        out.describe()
    );
}

/// Runs `wimguard ARGS --home HOME`; no judgement beyond "did not panic".
pub fn cli(home: &Path, args: &[&std::ffi::OsStr]) -> Out {
    let out = common::run_with_timeout(&wg_bin(), &with_home(home, args), CLI_TIMEOUT);
    assert_no_panic(&out);
    out
}

/// Runs the CLI and fails the test unless it exits 0.
pub fn cli_ok(home: &Path, args: &[&std::ffi::OsStr]) -> Out {
    let out = cli(home, args);
    assert!(out.ok(), "wimguard failed:\n{}", out.describe());
    out
}

/// Runs the CLI expecting exit code `code`, and a message on stderr.
pub fn cli_code(home: &Path, args: &[&std::ffi::OsStr], code: i32) -> Out {
    let out = cli(home, args);
    assert_eq!(out.code(), Some(code), "expected exit code {code}:\n{}", out.describe());
    if code != 0 {
        assert!(
            !out.stderr.trim().is_empty(),
            "failed without a message on stderr:\n{}",
            out.describe()
        );
    }
    out
}

/// The JSON value of the last non-empty stdout line.
pub fn last_json(out: &Out) -> Value {
    let line = out
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("no JSON on stdout:\n{}", out.describe()));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", out.describe()))
}

/// Runs `wimguard ARGS --json --home HOME`, requires exit 0, parses the JSON.
pub fn cli_json(home: &Path, args: &[&std::ffi::OsStr]) -> Value {
    let mut a = args.to_vec();
    a.push(os("--json"));
    last_json(&cli_ok(home, &a))
}

/// The arguments of `backup --source SRC --destination WIM [extra]`.
pub fn backup_args<'a>(src: &'a Path, wim: &'a Path, extra: &'a [&'a str]) -> Vec<&'a std::ffi::OsStr> {
    let mut a = vec![
        os("backup"),
        os("--source"),
        src.as_os_str(),
        os("--destination"),
        wim.as_os_str(),
    ];
    a.extend(extra.iter().map(os));
    a
}

/// `backup … --json` whatever its outcome (for backups expected to fail;
/// used by tests/plugins).
#[allow(dead_code)]
pub fn backup_out(home: &Path, src: &Path, wim: &Path, extra: &[&str]) -> Out {
    let mut a = backup_args(src, wim, extra);
    a.push(os("--json"));
    cli(home, &a)
}

/// `backup --source SRC --destination WIM [extra] --json`, must succeed; the final object.
/// A backup with warnings exits 8 and one without exits 0: both are
/// success here, but the code must agree with the warnings.
pub fn backup(home: &Path, src: &Path, wim: &Path, extra: &[&str]) -> Value {
    let mut a = backup_args(src, wim, extra);
    a.push(os("--json"));
    let out = cli(home, &a);
    let b = last_json(&out);
    let warned = b["warnings"].as_array().is_some_and(|w| !w.is_empty());
    assert_eq!(
        out.code(),
        Some(if warned { 8 } else { 0 }),
        "exit code and warnings disagree:\n{}",
        out.describe()
    );
    assert_eq!(b["status"], "succeeded", "backup did not succeed: {b}");
    assert!(b["uuid"].as_str().is_some_and(|u| u.len() == 36), "no uuid: {b}");
    b
}

pub fn uuid_of(b: &Value) -> String {
    b["uuid"].as_str().unwrap().to_string()
}

pub fn show(home: &Path, uuid: &str) -> Value {
    cli_json(home, &[os("backups"), os("show"), os(uuid)])
}

pub fn list(home: &Path) -> Vec<Value> {
    match cli_json(home, &[os("backups"), os("list")]) {
        Value::Array(v) => v,
        other => panic!("backups list --json is not an array: {other}"),
    }
}

/// Polls `backups show UUID` until the status is final; fails after JOB_TIMEOUT.
pub fn wait_final(home: &Path, uuid: &str) -> Value {
    let start = Instant::now();
    loop {
        let b = show(home, uuid);
        let st = b["status"].as_str().unwrap_or("").to_string();
        if !["running", "queued"].contains(&st.as_str()) {
            return b;
        }
        assert!(
            start.elapsed() < JOB_TIMEOUT,
            "backup {uuid} still {st} after {JOB_TIMEOUT:?}: {b}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A CLI process running in the background (stdout/stderr to files).
/// Dropping it SIGKILLs and reaps it.
pub struct BgCli {
    child: Option<Child>,
    pub cmd: String,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl BgCli {
    pub fn spawn(home: &Path, args: &[&std::ffi::OsStr]) -> BgCli {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let base = home.parent().unwrap();
        let out_path = base.join(format!("cli-{n}.out"));
        let err_path = base.join(format!("cli-{n}.err"));
        let a = with_home(home, args);
        let child = Command::new(wg_bin())
            .args(&a)
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("spawn wimguard");
        let cmd = format!(
            "wimguard {}",
            a.iter().map(|s| s.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
        BgCli {
            child: Some(child),
            cmd,
            out_path,
            err_path,
        }
    }

    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .map(|c| c.try_wait().unwrap().is_some())
            .unwrap_or(true)
    }

    fn collect(&self, status: ExitStatus) -> Out {
        let mut so = Vec::new();
        let _ = fs::File::open(&self.out_path).and_then(|mut f| f.read_to_end(&mut so));
        let se = fs::read_to_string(&self.err_path).unwrap_or_default();
        Out {
            cmd: self.cmd.clone(),
            status,
            stdout: String::from_utf8_lossy(&so).into_owned(),
            stderr: se,
            stdout_bytes: so,
        }
    }

    /// Waits for the exit (failing the test after `timeout`) and returns the output.
    pub fn wait(mut self, timeout: Duration) -> Out {
        let mut child = self.child.take().unwrap();
        let st = wait_timeout(&mut child, timeout)
            .unwrap_or_else(|| panic!("TIMEOUT after {timeout:?}: `{}` was killed", self.cmd));
        let out = self.collect(st);
        assert!(
            !out.stderr.contains("panicked"),
            "wimguard PANICKED:\n{}",
            out.describe()
        );
        out
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) -> Out {
        let mut child = self.child.take().unwrap();
        let _ = child.kill();
        let st = child.wait().unwrap();
        self.collect(st)
    }
}

impl Drop for BgCli {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Client library
// ---------------------------------------------------------------------------

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn client(home: &Path, token: Option<&str>) -> wimguard::client::Client {
    let s = wimguard::client::ClientSettings::resolve(Some(home), None, token).expect("client settings");
    wimguard::client::Client::new(s)
}

// ---------------------------------------------------------------------------
// Data and files
// ---------------------------------------------------------------------------

/// `files` files of `size` bytes of pseudo-random (incompressible) data.
pub fn big_tree(dir: &Path, files: usize, size: usize, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(seed);
    for i in 0..files {
        fs::write(dir.join(format!("f{i:03}.bin")), rng.bytes(size)).unwrap();
    }
}

/// The big source of the cancel and conflict tests: 48 MiB of random
/// letters from a 4-letter alphabet, about 3 seconds of LZX work for the
/// server on 2 cores, so a test can act while the backup runs. (Random
/// bytes took 0.2 s: they are recognised as incompressible and stored.)
pub fn cancel_source(dir: &Path, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    let mut rng = Rng::new(seed);
    for i in 0..24 {
        let letters: Vec<u8> = rng.bytes(2 << 20).iter().map(|b| b"acgt"[usize::from(b & 3)]).collect();
        fs::write(dir.join(format!("f{i:03}.bin")), letters).unwrap();
    }
}

/// A small tree with text and a subdirectory.
pub fn small_tree(dir: &Path, tag: &str) {
    fs::create_dir_all(dir.join("sub")).unwrap();
    fs::write(dir.join("a.txt"), format!("alpha {tag}\n").repeat(1000)).unwrap();
    fs::write(dir.join("sub/b.txt"), format!("beta {tag}\n")).unwrap();
    fs::write(dir.join("sub/c.bin"), Rng::new(7).bytes(50_000)).unwrap();
}

pub fn temps_in(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("wimguard-tmp"))
        .collect()
}

/// Bytes of `wim` plus any temp files next to it (what a running backup writes).
pub fn written_bytes(wim: &Path) -> u64 {
    let len = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    len(wim) + temps_in(wim.parent().unwrap()).iter().map(|p| len(p)).sum::<u64>()
}

/// Waits until a backup into `wim` has written `grow` bytes beyond `base`.
/// `alive` tells whether whatever runs the backup is still going; the test
/// fails clearly when it ends (or the timeout passes) first.
pub fn wait_growth(wim: &Path, base: u64, grow: u64, alive: &mut dyn FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if written_bytes(wim) >= base + grow {
            return;
        }
        assert!(
            alive(),
            "the backup into {} ended before it had written {grow} bytes: the source is too small to catch it mid-way",
            wim.display()
        );
        assert!(
            start.elapsed() < JOB_TIMEOUT,
            "the backup into {} did not write {grow} bytes within {JOB_TIMEOUT:?}",
            wim.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Starts `backup --source SRC --destination WIM [extra] --json` in the
/// background, cancels it once the server has logged `needle` (a plugin
/// saying it is busy), and returns the job's final object. Used by
/// tests/plugins.
#[allow(dead_code)]
pub fn cancel_backup_when_logged(server: &Server, src: &Path, wim: &Path, extra: &[&str], needle: &str) -> Value {
    let mut args = backup_args(src, wim, extra);
    args.push(os("--json"));
    let bg = BgCli::spawn(&server.home, &args);
    let uuid = running_uuid(&server.home, wim);
    server.wait_for_log(needle);
    cli_ok(&server.home, &[os("backups"), os("cancel"), os(&uuid)]);
    last_json(&bg.wait(JOB_TIMEOUT))
}

/// The uuid of the backup running into `wim` (polls `backups list --status running`).
pub fn running_uuid(home: &Path, wim: &Path) -> String {
    let start = Instant::now();
    loop {
        let v = cli_json(home, &[os("backups"), os("list"), os("--status"), os("running")]);
        if let Some(b) = v
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["destination"].as_str() == wim.to_str())
        {
            return uuid_of(b);
        }
        assert!(
            start.elapsed() < JOB_TIMEOUT,
            "no running backup into {} appeared",
            wim.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Counts of `backups list` by status word.
pub fn counts_by_status(backups: &[Value]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for b in backups {
        *m.entry(b["status"].as_str().unwrap().to_string()).or_insert(0) += 1;
    }
    m
}

/// `stats --json`'s backups_by_status, without zero counts.
pub fn stats_counts(home: &Path) -> BTreeMap<String, u64> {
    let s = cli_json(home, &[os("stats")]);
    let obj = s["backups_by_status"]
        .as_object()
        .unwrap_or_else(|| panic!("no backups_by_status in {s}"));
    obj.iter()
        .filter(|(_, v)| v.as_u64() != Some(0))
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

/// `wimlib-imagex verify` with only the "no integrity table" note allowed.
pub fn wimlib_verify(wim: &Path) {
    common::wimlib_verify(wim, false);
}

/// `wimguard archive verify WIM` must succeed.
pub fn archive_verify(wim: &Path) -> Out {
    let out = common::run_with_timeout(&wg_bin(), &[os("archive"), os("verify"), wim.as_os_str()], CLI_TIMEOUT);
    assert_no_panic(&out);
    assert!(out.ok(), "wimguard archive verify failed:\n{}", out.describe());
    out
}

/// A process's peak resident set (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() / 1024
}
