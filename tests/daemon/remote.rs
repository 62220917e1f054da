//! Issue 10: `wimguard backup --destination NAME --plugin s3-upload` through
//! the real daemon, the bundled wasm plugin, a real S3 server (s3s-fs,
//! checking SigV4) and a fault-injecting proxy between them that counts
//! every exchange. Remote archives are chains of WIM objects: the tests
//! check what is stored (object by object), restore whole and one file
//! (within a request and byte budget), hand the objects to plain wimlib,
//! delete and consolidate, rebuild a lost catalog, and survive faults.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::faulty_proxy::{Fault, FaultyProxy, Rule};
use crate::common::s3::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
use crate::common::{self, Out, Rng};
use crate::harness::*;

const PREFIX: &str = "wg";

/// A server whose `s3-upload` plugin stores into `s3` through `proxy`.
struct Remote {
    env: Env,
    s3: S3Server,
    proxy: FaultyProxy,
    server: Option<Server>,
}

fn plugin_config(endpoint: &str, allowed: &str, secret_var: &str) -> String {
    format!(
        "appSecret: remote-test-secret\nplugins:\n  s3-upload:\n    settings: {{ endpoint: \"{endpoint}\", bucket: \
         \"{BUCKET}\", region: \"us-east-1\", prefix: \"{PREFIX}\", pathStyle: \"true\" }}\n    secrets: {{ \
         accessKeyId: WG_TEST_S3_KEY, secretAccessKey: {secret_var} }}\n    allowedHosts: [\"{allowed}\"]\n    \
         limits: {{ callTimeoutSeconds: 120 }}\n"
    )
}

const S3_ENV: [(&str, &str); 4] = [
    ("WG_TEST_S3_KEY", ACCESS_KEY),
    ("WG_TEST_S3_SECRET", SECRET_KEY),
    ("WG_TEST_S3_WRONG", "not-the-secret"),
    ("WG_TEST_S3_EMPTY", ""),
];

impl Remote {
    fn start() -> Remote {
        Self::start_with_secret("WG_TEST_S3_SECRET")
    }

    fn start_with_secret(secret_var: &str) -> Remote {
        Self::start_with(secret_var, "")
    }

    /// `extra_settings`: more of the plugin's settings, `, key: "value"`.
    fn start_with(secret_var: &str, extra_settings: &str) -> Remote {
        let env = Env::new();
        let s3 = S3Server::start();
        let proxy = FaultyProxy::start(s3.addr());
        let config = plugin_config(&proxy.endpoint(), &proxy.allowed_host(), secret_var);
        env.write_config(&config.replace("pathStyle: \"true\"", &format!("pathStyle: \"true\"{extra_settings}")));
        let server = Server::start_with_env(&env.home, &S3_ENV);
        Remote {
            env,
            s3,
            proxy,
            server: Some(server),
        }
    }

    fn home(&self) -> &Path {
        &self.env.home
    }

    fn backup(&self, src: &Path, name: &str) -> serde_json::Value {
        let dest = PathBuf::from(name);
        backup(
            self.home(),
            src,
            &dest,
            &["--plugin", "s3-upload", "--compression", "xpress"],
        )
    }

    /// Objects of archive `name`: (key relative to the prefix, size).
    fn objects(&self, name: &str) -> Vec<(String, u64)> {
        let lead = format!("{PREFIX}/{name}/");
        self.s3
            .objects()
            .into_iter()
            .filter_map(|(k, n)| k.strip_prefix(&lead).map(|r| (r.to_string(), n)))
            .collect()
    }
}

/// A source with many small files, some text, and `big` bytes of noise.
fn source(dir: &Path, big: usize) {
    fs::create_dir_all(dir.join("docs")).unwrap();
    fs::create_dir_all(dir.join("data")).unwrap();
    let mut rng = Rng::new(99);
    for i in 0..200 {
        fs::write(
            dir.join(format!("docs/note{i:03}.txt")),
            format!("note {i}\n").repeat(1 + i % 50),
        )
        .unwrap();
    }
    fs::write(dir.join("docs/small.txt"), b"the one small file\n").unwrap();
    fs::write(dir.join("data/big.bin"), rng.bytes(big)).unwrap();
    fs::write(dir.join("data/old.bin"), rng.bytes(4 << 20)).unwrap();
    std::os::unix::fs::symlink("docs/small.txt", dir.join("link")).unwrap();
}

fn restore_to(home: &Path, uuid: &str, target: &Path, extra: &[&str]) -> Out {
    let mut a = vec![os("restore"), os(uuid), os("--target"), target.as_os_str()];
    a.extend(extra.iter().map(os));
    cli_ok(home, &a)
}

fn same_tree(expected: &common::Snapshot, dir: &Path, src: &Path, what: &str) {
    common::assert_snapshots_equal(
        expected,
        &common::snapshot(dir),
        &common::CompareOpts::full(src, dir).without_atime(),
        what,
    );
}

#[test]
fn remote_backups_are_deltas_restore_by_ranges_and_open_in_wimlib() {
    let r = Remote::start();
    let home = r.home().to_path_buf();
    let src = r.env.path("src");
    source(&src, 100 << 20);
    let first = common::snapshot(&src);
    let b1 = r.backup(&src, "nightly");
    let u1 = uuid_of(&b1);
    assert_eq!(b1["destination"], "s3-upload:nightly", "{b1}");
    let objs = r.objects("nightly");
    assert_eq!(objs.len(), 1, "{objs:?}");
    assert_eq!(objs[0].0, "000001.wim");
    let full = objs[0].1;
    assert!(full > 100 << 20, "the first object holds everything: {full} bytes");
    // Multipart: parts of 16 MiB, numbered without gaps.
    assert!(r.proxy.count("PUT") >= 7, "{} PUTs", r.proxy.count("PUT"));

    // Second backup: a few files change; the object holds just them.
    fs::write(src.join("docs/note007.txt"), b"changed\n").unwrap();
    fs::remove_file(src.join("data/old.bin")).unwrap();
    fs::write(src.join("docs/new.txt"), Rng::new(5).bytes(300_000)).unwrap();
    let second = common::snapshot(&src);
    let b2 = r.backup(&src, "nightly");
    let u2 = uuid_of(&b2);
    let objs = r.objects("nightly");
    assert_eq!(
        objs.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(),
        ["000001.wim", "000002.wim"]
    );
    let delta = objs[1].1;
    assert!(
        delta < 300_000 + 200_000,
        "the delta holds {delta} bytes: only the new file, the changed one and metadata belong there"
    );
    assert!(b2["files_unchanged"].as_u64().unwrap() > 150, "{b2}");
    // Listings filter by the archive as they show it.
    for (cmd, flag) in [("backups", "--destination"), ("snapshots", "--archive")] {
        let l = cli_json(&home, &[os(cmd), os("list"), os(flag), os("s3-upload:nightly")]);
        let n = l.as_array().or_else(|| l["snapshots"].as_array()).map_or(0, Vec::len);
        assert_eq!(n, 2, "{cmd} list {flag} s3-upload:nightly: {l}");
    }

    // Whole restores, exact.
    for (u, want, name) in [(&u1, &first, "first"), (&u2, &second, "second")] {
        let out = r.env.path(&format!("restore-{name}"));
        restore_to(&home, u, &out, &[]);
        same_tree(want, &out, &src, &format!("restore of the {name} remote snapshot"));
    }

    // One small file from the >100 MiB archive: few GETs, few bytes.
    r.proxy.reset_counts();
    let one = r.env.path("one");
    restore_to(&home, &u2, &one, &["--path", "docs/small.txt"]);
    assert_eq!(fs::read(one.join("docs/small.txt")).unwrap(), b"the one small file\n");
    let gets = r.proxy.count("GET");
    let bytes = r.proxy.response_body_bytes("GET");
    assert!(gets <= 6, "{gets} GETs for one small file");
    assert!(
        bytes * 50 < full + delta,
        "{bytes} bytes fetched for one small file of a {} byte archive (budget 2 %)",
        full + delta
    );
    eprintln!(
        "one-file restore: {gets} GETs, {bytes} bytes of {} ({:.3} %)",
        full + delta,
        bytes as f64 * 100.0 / (full + delta) as f64
    );

    // Browse, diff, verify work on remote snapshots.
    let b = cli_json(&home, &[os("snapshots"), os("browse"), os(&u2), os("docs")]);
    assert!(b.to_string().contains("new.txt"), "{b}");
    let d = cli_json(&home, &[os("snapshots"), os("diff"), os(&u1), os(&u2)]);
    let counts = (d["added"].as_u64(), d["removed"].as_u64(), d["modified"].as_u64());
    assert_eq!(counts, (Some(1), Some(1), Some(1)), "{d}");
    cli_ok(&home, &[os("snapshots"), os("verify"), os(&u2)]);
    cli_ok(&home, &[os("stats")]);

    // Plain wimlib, with the objects downloaded: apply the newest with the rest as --ref.
    common::ensure_wimlib();
    let dl = r.env.path("download");
    fs::create_dir_all(&dl).unwrap();
    for (k, _) in r.objects("nightly") {
        fs::copy(r.s3.object_path(&format!("{PREFIX}/nightly/{k}")), dl.join(&k)).unwrap();
    }
    let out = r.env.path("by-wimlib");
    let refs = format!("--ref={}/*.wim", dl.display());
    common::wimlib(&[
        os("apply"),
        dl.join("000002.wim").as_os_str(),
        os("1"),
        out.as_os_str(),
        os(&refs),
        os("--unix-data"),
    ]);
    same_tree(&second, &out, &src, "wimlib apply of the downloaded chain");

    // Delete the first snapshot: a marker, no bytes reclaimed yet; the second still restores.
    let deleted = cli_ok(&home, &[os("backups"), os("delete"), os(&u1)]);
    // It says where the space goes (no "0 B → 0 B": nothing was rewritten yet).
    assert!(
        deleted.stdout.contains("marked removed")
            && deleted
                .stdout
                .contains("`wimguard archive consolidate nightly --plugin s3-upload`"),
        "{}",
        deleted.stdout
    );
    assert!(
        r.s3.object(&format!("{PREFIX}/nightly/removed/{u1}")).is_some(),
        "no removal marker"
    );
    cli_code(
        &home,
        &[os("restore"), os(&u1), os("--target"), r.env.path("gone").as_os_str()],
        4,
    );
    // Consolidate: one full object of what is kept, the old chain gone.
    let c = cli_json(
        &home,
        &[
            os("archive"),
            os("consolidate"),
            os("nightly"),
            os("--plugin"),
            os("s3-upload"),
        ],
    );
    assert_eq!(
        (c["images_kept"].as_u64(), c["images_dropped"].as_u64()),
        (Some(1), Some(1)),
        "{c}"
    );
    let objs = r.objects("nightly");
    assert_eq!(
        objs.iter().map(|o| o.0.as_str()).collect::<Vec<_>>(),
        ["000003.wim"],
        "{objs:?}"
    );
    // old.bin (4 MiB, only in the deleted snapshot) is gone.
    assert!(
        objs[0].1 + (4 << 20) < full + delta,
        "nothing reclaimed: {} vs {full} + {delta}",
        objs[0].1
    );
    let out = r.env.path("after-consolidation");
    restore_to(&home, &u2, &out, &[]);
    same_tree(&second, &out, &src, "restore after consolidation");
    let one_obj = r.s3.object_path(&format!("{PREFIX}/nightly/000003.wim"));
    common::wimlib_verify(&one_obj, false);
    // A later backup is a delta of the consolidated chain.
    fs::write(src.join("docs/after.txt"), b"after consolidation\n").unwrap();
    r.backup(&src, "nightly");
    assert_eq!(r.objects("nightly").len(), 2);
    assert!(
        r.s3.pending_upload_files().is_empty(),
        "{:?}",
        r.s3.pending_upload_files()
    );
}

#[test]
fn a_lost_catalog_is_rebuilt_from_the_bucket_and_from_local_archives() {
    let r = Remote::start();
    let src = r.env.path("src");
    source(&src, 2 << 20);
    let u1 = uuid_of(&r.backup(&src, "home-dir"));
    fs::write(src.join("docs/later.txt"), b"later\n").unwrap();
    let want = common::snapshot(&src);
    let u2 = uuid_of(&r.backup(&src, "home-dir"));
    let local = r.env.path("local.wim");
    let u3 = uuid_of(&backup(r.home(), &src, &local, &[]));
    let mut r = r;
    r.server.take().unwrap().stop();

    // A fresh home with only the config (plugin settings and secrets).
    let fresh = r.env.path("fresh-home");
    fs::create_dir_all(&fresh).unwrap();
    fs::copy(r.home().join("config.yaml"), fresh.join("config.yaml")).unwrap();
    let server = Server::start_with_env(&fresh, &S3_ENV);
    assert!(list(&fresh).is_empty());
    let out = cli_json(&fresh, &[os("catalog"), os("rebuild"), os("--plugin"), os("s3-upload")]);
    assert_eq!(
        (out["snapshots"].as_u64(), out["added"].as_u64()),
        (Some(2), Some(2)),
        "{out}"
    );
    let out = cli_json(
        &fresh,
        &[os("catalog"), os("rebuild"), os("--archive"), local.as_os_str()],
    );
    assert_eq!(out["added"].as_u64(), Some(1), "{out}");
    let listed = list(&fresh);
    for u in [&u1, &u2, &u3] {
        let b = listed
            .iter()
            .find(|b| b["uuid"] == u.as_str())
            .unwrap_or_else(|| panic!("{u} not rebuilt"));
        assert_eq!(b["status"], "succeeded");
        assert_eq!(b["source"], src.display().to_string());
    }
    let out = r.env.path("recovered");
    restore_to(&fresh, &u2, &out, &[]);
    same_tree(&want, &out, &src, "restore through a rebuilt catalog");
    // Rebuilding again adds nothing.
    let again = cli_json(&fresh, &[os("catalog"), os("rebuild"), os("--plugin"), os("s3-upload")]);
    assert_eq!(again["added"].as_u64(), Some(0), "{again}");
    // And the chain goes on from where it was.
    fs::write(src.join("docs/even-later.txt"), b"x\n").unwrap();
    let b = backup(&fresh, &src, Path::new("home-dir"), &["--plugin", "s3-upload"]);
    assert_eq!(b["status"], "succeeded");
    assert_eq!(r.objects("home-dir").len(), 3);
    server.stop();
}

#[test]
fn refused_credentials_missing_buckets_and_local_looking_names_fail_clearly() {
    let r = Remote::start_with_secret("WG_TEST_S3_WRONG");
    let src = r.env.path("src");
    source(&src, 1000);
    let out = backup_out(r.home(), &src, Path::new("nightly"), &["--plugin", "s3-upload"]);
    assert!(!out.ok(), "{}", out.describe());
    let text = out.combined();
    assert!(
        text.contains("credentials") && text.contains(BUCKET) && text.contains(&r.proxy.endpoint()),
        "the message should say the credentials were refused and name endpoint and bucket:\n{text}"
    );
    assert!(list(r.home()).iter().all(|b| b["status"] != "succeeded"));
    assert!(r.objects("nightly").is_empty());
    assert!(
        r.s3.pending_upload_files().is_empty(),
        "{:?}",
        r.s3.pending_upload_files()
    );

    // A path where a remote archive's name belongs.
    let out = cli_code(
        r.home(),
        &[
            os("backup"),
            os("--source"),
            src.as_os_str(),
            os("--destination"),
            os("/tmp/x.wim"),
            os("--plugin"),
            os("s3-upload"),
        ],
        2,
    );
    assert!(out.stderr.contains("looks like a local path"), "{}", out.describe());

    // A bucket that does not exist.
    let env = Env::new();
    let s3 = S3Server::start_empty();
    env.write_config(&plugin_config(&s3.endpoint(), &s3.allowed_host(), "WG_TEST_S3_SECRET"));
    let _server = Server::start_with_env(&env.home, &S3_ENV);
    let out = backup_out(&env.home, &src, Path::new("nightly"), &["--plugin", "s3-upload"]);
    assert!(!out.ok());
    assert!(out.combined().contains(BUCKET), "{}", out.describe());
}

#[test]
fn transient_faults_are_retried_and_persistent_ones_fail_without_a_trace() {
    let r = Remote::start();
    let src = r.env.path("src");
    source(&src, 40 << 20);
    r.proxy.inject(Rule::new(Fault::SlowDown).method("PUT").times(3));
    r.proxy.inject(Rule::new(Fault::Reset).method("PUT").times(2));
    r.proxy.inject(
        Rule::new(Fault::ErrorIn200)
            .method("POST")
            .target_contains("uploadId")
            .times(1),
    );
    let want = common::snapshot(&src);
    let u = uuid_of(&r.backup(&src, "flaky"));
    let out = r.env.path("out");
    restore_to(r.home(), &u, &out, &[]);
    same_tree(&want, &out, &src, "restore after retried faults");

    // A store that keeps failing: the backup fails, nothing is recorded,
    // and the multipart upload is aborted.
    fs::write(src.join("docs/more.txt"), Rng::new(8).bytes(20 << 20)).unwrap();
    r.proxy.inject(Rule::new(Fault::SlowDown).method("PUT").times(100_000));
    let out = backup_out(
        r.home(),
        &src,
        Path::new("flaky"),
        &["--plugin", "s3-upload", "--compression", "xpress"],
    );
    // A store that stayed down: try again later (6).
    assert_eq!(out.code(), Some(6), "{}", out.describe());
    r.proxy.clear_rules();
    let failed = last_json(&out);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(r.objects("flaky").len(), 1, "{:?}", r.objects("flaky"));
    assert!(
        r.s3.pending_upload_files().is_empty(),
        "{:?}",
        r.s3.pending_upload_files()
    );
    // The next backup works and the first snapshot is intact.
    r.backup(&src, "flaky");
    let out = r.env.path("out-again");
    restore_to(r.home(), &u, &out, &[]);
    same_tree(&want, &out, &src, "the first snapshot after a failed one");
}

/// A failed upload whose abort the store refuses too is not forgotten:
/// the catalog keeps its token, and the next backup to the archive aborts
/// it (the parts would otherwise stay in the bucket, billed, for good).
#[test]
fn an_upload_whose_abort_failed_is_aborted_by_the_next_backup() {
    // A short retry budget: the store stays down for the whole attempt.
    let r = Remote::start_with("WG_TEST_S3_SECRET", ", maxRetrySeconds: \"2\"");
    let src = r.env.path("src");
    source(&src, 1 << 20);
    r.backup(&src, "stuck");
    fs::write(src.join("docs/more.txt"), Rng::new(9).bytes(40 << 20)).unwrap();
    r.proxy.inject(Rule::new(Fault::SlowDown).method("PUT").times(100_000));
    r.proxy
        .inject(Rule::new(Fault::SlowDown).method("DELETE").times(100_000));
    let out = backup_out(
        r.home(),
        &src,
        Path::new("stuck"),
        &["--plugin", "s3-upload", "--compression", "xpress"],
    );
    assert!(!out.ok(), "{}", out.describe());
    r.proxy.clear_rules();
    assert!(
        !r.s3.pending_upload_files().is_empty(),
        "premise: the refused abort leaves the parts"
    );
    let want = common::snapshot(&src);
    let b = r.backup(&src, "stuck");
    assert!(
        r.s3.pending_upload_files().is_empty(),
        "the abandoned upload was never aborted: {:?}",
        r.s3.pending_upload_files()
    );
    let out = r.env.path("out");
    restore_to(r.home(), &uuid_of(&b), &out, &[]);
    same_tree(&want, &out, &src, "the backup after the abandoned upload");
}

#[test]
fn kill_9_during_an_upload_aborts_it_at_the_next_start() {
    let mut r = Remote::start();
    let src = r.env.path("src");
    source(&src, 1 << 20);
    let want = common::snapshot(&src);
    let u = uuid_of(&r.backup(&src, "crashy"));
    fs::write(src.join("data/huge.bin"), Rng::new(3).bytes(120 << 20)).unwrap();
    // Slow the upload down so the kill lands in the middle of it.
    r.proxy.inject(
        Rule::new(Fault::Stall(Duration::from_secs(30)))
            .method("PUT")
            .times(1000),
    );
    let dest = PathBuf::from("crashy");
    let bg = BgCli::spawn(r.home(), &backup_args(&src, &dest, &["--plugin", "s3-upload"]));
    // Killed once the upload is under way and recorded: the server has
    // stored the multipart upload's id (the proxy sees the POST earlier,
    // before the server has the answer).
    let catalog = rusqlite::Connection::open(r.home().join("catalog.sqlite")).unwrap();
    let recorded = || -> i64 {
        catalog
            .query_row(
                "SELECT COUNT(*) FROM remote_objects WHERE state = 'uploading' AND upload_token != ''",
                [],
                |row| row.get(0),
            )
            .unwrap_or(0)
    };
    let start = Instant::now();
    while recorded() < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the upload never started: {:?}\n{}",
            r.proxy.exchanges(),
            r.server.as_ref().unwrap().log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(catalog);
    r.server.take().unwrap().kill9();
    drop(bg);
    r.proxy.clear_rules();
    let server = Server::start_with_env(r.home(), &S3_ENV);
    let start = Instant::now();
    while !r.s3.pending_upload_files().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the interrupted upload was not aborted: {:?}",
            r.s3.pending_upload_files()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let statuses = counts_by_status(&list(r.home()));
    assert_eq!(statuses.get("interrupted"), Some(&1), "{statuses:?}");
    assert_eq!(r.objects("crashy").len(), 1, "{:?}", r.objects("crashy"));
    let out = r.env.path("out");
    restore_to(r.home(), &u, &out, &[]);
    same_tree(&want, &out, &src, "the earlier snapshot after a kill -9 mid-upload");
    // And the chain continues.
    fs::remove_file(src.join("data/huge.bin")).unwrap();
    r.backup(&src, "crashy");
    server.stop();
}

#[test]
fn uploading_a_1_gib_source_keeps_the_server_under_200_mb() {
    let r = Remote::start();
    // The source is read through the page cache either way; in memory it
    // leaves the disk to the bucket (the object and its parts).
    let bulk = common::Scratch::for_bulk(1 << 30);
    let src = bulk.path("src");
    fs::create_dir_all(&src).unwrap();
    let mut rng = Rng::new(1);
    for i in 0..16 {
        fs::write(src.join(format!("chunk{i:02}.bin")), rng.bytes(64 << 20)).unwrap();
    }
    let pid = r.server.as_ref().unwrap().pid;
    let before = peak_rss_mib(pid);
    let b = r.backup(&src, "big");
    let peak = peak_rss_mib(pid);
    let size = r.objects("big")[0].1;
    eprintln!("1 GiB source: object {size} bytes; server peak RSS {peak} MiB (before the backup {before} MiB)");
    assert!(size > 1 << 30, "{b}");
    assert!(peak < 200, "the server peaked at {peak} MiB while uploading 1 GiB");
    for f in fs::read_dir(&src).unwrap() {
        fs::remove_file(f.unwrap().path()).unwrap();
    }
}

/// `archive check NAME --plugin s3-upload [extra]`, whatever its outcome.
fn check_out(r: &Remote, name: &str, extra: &[&str]) -> Out {
    let mut a = vec![os("archive"), os("check"), os(name), os("--plugin"), os("s3-upload")];
    a.extend(extra.iter().map(os));
    cli(r.home(), &a)
}

/// `archive check … --json` with its exit code.
fn check(r: &Remote, name: &str, extra: &[&str], code: i32) -> serde_json::Value {
    let mut a = extra.to_vec();
    a.push("--json");
    let out = check_out(r, name, &a);
    assert_eq!(out.code(), Some(code), "{}", out.describe());
    last_json(&out)
}

#[test]
fn objects_deleted_in_the_bucket_are_named_by_check_healed_by_backups_and_forgotten_by_repair() {
    let r = Remote::start();
    let src = r.env.path("src");
    source(&src, 1 << 20);
    let u1 = uuid_of(&r.backup(&src, "lossy"));
    fs::write(src.join("docs/second.txt"), b"only the second object holds this\n").unwrap();
    let u2 = uuid_of(&r.backup(&src, "lossy"));
    fs::write(src.join("docs/third.txt"), b"and this one the third\n").unwrap();
    let want3 = common::snapshot(&src);
    let u3 = uuid_of(&r.backup(&src, "lossy"));

    // A whole chain checks clean, data included.
    let c = check(&r, "lossy", &["--read-data"], 0);
    assert_eq!(
        (c["objects"].as_u64(), c["snapshots"].as_u64()),
        (Some(3), Some(3)),
        "{c}"
    );
    assert!(c["blobs_read"].as_u64().unwrap() > 200, "{c}");
    assert_eq!(c["problems_left"], 0, "{c}");
    assert!(c["damaged"].as_array().unwrap().is_empty(), "{c}");

    // An operator deletes the second object in the bucket.
    fs::remove_file(r.s3.object_path(&format!("{PREFIX}/lossy/000002.wim"))).unwrap();
    let c = check(&r, "lossy", &[], 3);
    assert_eq!(c["missing_objects"], serde_json::json!(["lossy/000002.wim"]), "{c}");
    let damaged = c["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 2, "{c}");
    let of = |u: &str| damaged.iter().find(|d| d["backup_uuid"] == u).cloned();
    assert!(of(&u1).is_none(), "the first snapshot is whole: {c}");
    let lost = of(&u2).expect("the second snapshot is named");
    assert_eq!(lost["lost"], true, "{lost}");
    let hurt = of(&u3).expect("the third snapshot is named");
    assert_eq!(hurt["lost"], false, "{hurt}");
    assert_eq!(hurt["files"], serde_json::json!(["/docs/second.txt"]), "{hurt}");
    assert_eq!(hurt["files_total"], 1, "{hurt}");
    let human = check_out(&r, "lossy", &[]);
    assert_eq!(human.code(), Some(3), "{}", human.describe());
    assert!(
        human.stdout.contains("missing from s3-upload: lossy/000002.wim")
            && human.stdout.contains(&format!(
                "snapshot {u3}: 1 file(s) have contents that are lost\n    /docs/second.txt"
            ))
            && human.stderr.contains("--repair"),
        "{}",
        human.describe()
    );
    // Retention would count the lost snapshot as kept: it refuses instead.
    let out = cli_code(
        r.home(),
        &[
            os("forget"),
            os("--archive"),
            os("lossy"),
            os("--plugin"),
            os("s3-upload"),
            os("--keep-last"),
            os("1"),
        ],
        3,
    );
    assert!(
        out.stderr.contains("nothing was removed") && out.stderr.contains("--repair"),
        "{}",
        out.describe()
    );
    assert_eq!(list(r.home()).len(), 3);
    // A local path is not a remote archive's name.
    let out = check_out(&r, "/tmp/x.wim", &[]);
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(out.stderr.contains("archive verify"), "{}", out.describe());
    // A restore of the damaged snapshot is DATA_LOSS, naming the object and the check.
    let out = cli_code(
        r.home(),
        &[os("restore"), os(&u3), os("--target"), r.env.path("fails").as_os_str()],
        3,
    );
    assert!(
        out.stderr.contains("lossy/000002.wim") && out.stderr.contains("archive check lossy"),
        "{}",
        out.describe()
    );

    // The next backup stores again what it needs of the lost object, and warns.
    let b = r.backup(&src, "lossy");
    let warnings = b["warnings"].to_string();
    assert!(
        warnings.contains("lossy/000002.wim") && warnings.contains("archive check lossy"),
        "{b}"
    );
    let u4 = uuid_of(&b);
    // That made the third snapshot whole again; the second stays lost.
    let c = check(&r, "lossy", &["--read-data"], 3);
    let damaged = c["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{c}");
    assert_eq!(damaged[0]["backup_uuid"], u2.as_str(), "{c}");
    let out = r.env.path("healed");
    restore_to(r.home(), &u3, &out, &[]);
    same_tree(&want3, &out, &src, "a snapshot healed by a later backup");

    // Repair forgets the lost snapshot and the missing object; then all is whole.
    let c = check(&r, "lossy", &["--repair"], 0);
    assert_eq!(c["repaired"], true, "{c}");
    assert_eq!(c["damaged"][0]["forgotten"], true, "{c}");
    assert!(list(r.home()).iter().all(|b| b["uuid"] != u2.as_str()));
    let c = check(&r, "lossy", &[], 0);
    assert_eq!(
        (c["objects"].as_u64(), c["snapshots"].as_u64()),
        (Some(3), Some(3)),
        "{c}"
    );
    // Backups no longer warn, and consolidation works on what is left.
    let b = r.backup(&src, "lossy");
    assert!(b["warnings"].as_array().is_none_or(|w| w.is_empty()), "{b}");
    cli_ok(
        r.home(),
        &[
            os("archive"),
            os("consolidate"),
            os("lossy"),
            os("--plugin"),
            os("s3-upload"),
        ],
    );
    let out = r.env.path("after-consolidation");
    restore_to(r.home(), &u4, &out, &[]);
    same_tree(&want3, &out, &src, "restore after repair and consolidation");
    // A chain of one full object has nothing to reclaim, and says so.
    let again = cli_ok(
        r.home(),
        &[
            os("archive"),
            os("consolidate"),
            os("lossy"),
            os("--plugin"),
            os("s3-upload"),
        ],
    );
    assert!(
        again
            .stdout
            .contains("nothing to reclaim; lossy/000006.wim alone holds its 4 snapshots"),
        "{}",
        again.describe()
    );
}

#[test]
fn a_blob_damaged_in_the_bucket_is_found_by_read_data_and_stored_again_after_repair() {
    // Short retries: the store is made to fail on purpose below.
    let r = Remote::start_with("WG_TEST_S3_SECRET", ", maxRetrySeconds: \"1\"");
    let src = r.env.path("src");
    source(&src, 1 << 20);
    let want = common::snapshot(&src);
    let u1 = uuid_of(&r.backup(&src, "rot"));
    // Bit rot in the middle of the object (in the random files' contents):
    // same size, so only reading the data finds it.
    let path = r.s3.object_path(&format!("{PREFIX}/rot/000001.wim"));
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&path, &bytes).unwrap();
    check(&r, "rot", &[], 0);
    // A store that fails to answer says nothing of the archive: the check
    // stops with the store's error, and its repair forgets nothing.
    r.proxy.inject(
        Rule::new(Fault::Reset)
            .method("GET")
            .target_contains("000001.wim")
            .times(100_000),
    );
    let out = check_out(&r, "rot", &["--read-data", "--repair"]);
    assert!(
        out.code() == Some(6) && out.stderr.contains("nothing was changed"),
        "{}",
        out.describe()
    );
    // A restore meets the same outage: try again later (6), not damage.
    let out = cli(
        r.home(),
        &[
            os("restore"),
            os(&u1),
            os("--target"),
            r.env.path("not-now").as_os_str(),
        ],
    );
    assert!(
        out.code() == Some(6) && out.stderr.contains("unavailable"),
        "{}",
        out.describe()
    );
    r.proxy.clear_rules();
    let c = check(&r, "rot", &["--read-data"], 3);
    assert_eq!(c["damaged_blobs"].as_array().unwrap().len(), 1, "{c}");
    let damaged = c["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{c}");
    assert_eq!(damaged[0]["backup_uuid"], u1.as_str(), "{c}");
    assert_eq!(damaged[0]["files_total"], 1, "{c}");
    let file = damaged[0]["files"][0].as_str().unwrap().to_string();
    assert!(file == "/data/big.bin" || file == "/data/old.bin", "{c}");

    // Repair forgets the blob; the snapshot stays damaged until the next
    // backup stores those contents again, which makes it whole.
    let out = check_out(&r, "rot", &["--read-data"]);
    assert_eq!(out.code(), Some(3), "{}", out.describe());
    assert!(out.stderr.contains("--read-data --repair"), "{}", out.describe());
    let c = check(&r, "rot", &["--read-data", "--repair"], 3);
    assert_eq!(c["blobs_dropped"], 1, "{c}");
    // The store remembers the damaged copy: a catalog rebuilt from it
    // leaves it out, so no backup dedupes against it again.
    cli_json(
        r.home(),
        &[os("catalog"), os("rebuild"), os("--plugin"), os("s3-upload")],
    );
    let c = check(&r, "rot", &[], 3);
    assert_eq!(c["damaged"][0]["files"][0].as_str(), Some(file.as_str()), "{c}");
    let u2 = uuid_of(&r.backup(&src, "rot"));
    let c = check(&r, "rot", &["--read-data"], 0);
    assert_eq!(c["snapshots"], 2, "{c}");
    for u in [&u1, &u2] {
        let out = r.env.path(&format!("restored-{u}"));
        restore_to(r.home(), u, &out, &[]);
        same_tree(&want, &out, &src, &format!("{file} stored again after bit rot"));
    }
}

/// A secret whose variable the server's environment lacks, or has empty
/// (`VAR=` in a unit file): the backup is refused before it starts (exit 7,
/// as for a hook plugin), naming the variable, and nothing is recorded.
#[test]
fn a_destination_whose_secret_is_unset_or_empty_is_refused_before_the_backup_starts() {
    for (var, says) in [
        ("WG_TEST_S3_NEVER_SET", "does not have"),
        ("WG_TEST_S3_EMPTY", "is empty"),
    ] {
        let r = Remote::start_with_secret(var);
        let src = r.env.path("src");
        source(&src, 1 << 10);
        let out = cli_code(
            r.home(),
            &backup_args(&src, Path::new("nowhere"), &["--plugin", "s3-upload"]),
            7,
        );
        assert!(
            out.stderr.contains(var) && out.stderr.contains(says),
            "{}",
            out.describe()
        );
        assert!(list(r.home()).is_empty());
        assert!(r.objects("nowhere").is_empty());
    }
}

/// An object changed in the bucket (here: grown) and a stray key at a later
/// chain number: consolidation refuses to rewrite over the damage, backups
/// go on (past the stray number), and a repair settles it.
#[test]
fn a_changed_object_and_a_stray_key_are_handled_by_backups_consolidation_and_repair() {
    let r = Remote::start();
    let src = r.env.path("src");
    source(&src, 1 << 20);
    let u1 = uuid_of(&r.backup(&src, "mix"));
    fs::write(src.join("docs/second.txt"), b"in the second object\n").unwrap();
    let u2 = uuid_of(&r.backup(&src, "mix"));
    let want = common::snapshot(&src);
    let second = r.s3.object_path(&format!("{PREFIX}/mix/000002.wim"));
    fs::copy(&second, r.s3.object_path(&format!("{PREFIX}/mix/000004.wim"))).unwrap();
    let mut grown = fs::OpenOptions::new().append(true).open(&second).unwrap();
    std::io::Write::write_all(&mut grown, b"twenty-one more bytes").unwrap();
    drop(grown);

    let consolidate = [
        os("archive"),
        os("consolidate"),
        os("mix"),
        os("--plugin"),
        os("s3-upload"),
    ];
    let out = cli_code(r.home(), &consolidate, 3);
    assert!(
        out.stderr.contains("mix/000002.wim") && out.stderr.contains("archive check mix"),
        "{}",
        out.describe()
    );
    assert_eq!(r.objects("mix").len(), 3, "nothing was deleted");

    // The backup stores again what the changed object held, and takes a
    // number past the stray key instead of failing on it.
    let b = r.backup(&src, "mix");
    assert!(b["warnings"].to_string().contains("mix/000002.wim"), "{b}");
    let u3 = uuid_of(&b);
    assert!(
        r.objects("mix").iter().any(|(k, _)| k == "000005.wim"),
        "{:?}",
        r.objects("mix")
    );

    let c = check(&r, "mix", &[], 3);
    assert_eq!(c["changed_objects"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c["unknown_objects"], serde_json::json!(["mix/000004.wim"]), "{c}");
    let damaged = c["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{c}");
    assert_eq!(
        (damaged[0]["backup_uuid"].as_str(), damaged[0]["lost"].as_bool()),
        (Some(u2.as_str()), Some(true))
    );
    let c = check(&r, "mix", &["--repair"], 0);
    assert_eq!(c["damaged"][0]["forgotten"], true, "{c}");
    let c = check(&r, "mix", &["--read-data"], 0);
    assert_eq!(c["snapshots"], 2, "{c}");

    // A rebuilt catalog agrees with the repair: the forgotten snapshot stays
    // forgotten, and an object that cannot be read any more (cut short) is
    // left out and named, not the end of the rebuild.
    fs::OpenOptions::new()
        .write(true)
        .open(&second)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let rebuilt = cli_json(
        r.home(),
        &[os("catalog"), os("rebuild"), os("--plugin"), os("s3-upload")],
    );
    assert!(rebuilt["skipped"].to_string().contains("mix/000002.wim"), "{rebuilt}");
    let uuids: Vec<String> = list(r.home()).iter().map(uuid_of).collect();
    assert!(
        uuids.contains(&u1) && uuids.contains(&u3) && !uuids.contains(&u2),
        "{uuids:?}"
    );
    let b = r.backup(&src, "mix");
    assert!(b["warnings"].as_array().is_none_or(|w| w.is_empty()), "{b}");
    assert!(
        r.objects("mix").iter().any(|(k, _)| k == "000006.wim"),
        "{:?}",
        r.objects("mix")
    );
    cli_ok(r.home(), &consolidate);
    for u in [&u1, &u3] {
        let out = r.env.path(&format!("r-{u}"));
        restore_to(r.home(), u, &out, &[]);
        if u == &u3 {
            same_tree(
                &want,
                &out,
                &src,
                "after a changed object was repaired and the chain consolidated",
            );
        }
    }
}
