//! Issue 3 §4: errors come back with the right gRPC code, exit code and a
//! message that names what went wrong.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use wimguard::api::v1 as pb;

use crate::common::{self, Rng};
use crate::harness::*;

#[test]
fn wrong_or_missing_token_is_unauthenticated() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let src = env.path("src");
    small_tree(&src, "t");
    let wim = env.path("a.wim");

    // CLI with a wrong token: exit 5, for reads and for a backup.
    for args in [
        vec![os("backups"), os("list"), os("--token"), os("wrong")],
        vec![os("stats"), os("--token"), os("wrong")],
        vec![
            os("backup"),
            os("--source"),
            src.as_os_str(),
            os("--destination"),
            wim.as_os_str(),
            os("--token"),
            os("wrong"),
        ],
    ] {
        let out = cli_code(&env.home, &args, 5);
        assert!(
            out.stderr.contains("token"),
            "the message should mention the token:\n{}",
            out.describe()
        );
    }
    assert!(!wim.exists(), "an unauthenticated backup wrote {}", wim.display());
    // The right token given explicitly works.
    let secret = config_secret(&env.home);
    cli_ok(&env.home, &[os("backups"), os("list"), os("--token"), os(&secret)]);

    let rt = runtime();
    // Client library without a token: UNAUTHENTICATED.
    let c = client(&env.home, Some(""));
    let e = rt
        .block_on(c.list_backups(pb::ListBackupsRequest::default()))
        .expect_err("a call without token succeeded");
    assert_eq!(e.code(), Some(tonic::Code::Unauthenticated), "{e}");
    // Client library with a wrong token.
    let c = client(&env.home, Some("wrong"));
    let e = rt
        .block_on(c.get_statistics())
        .expect_err("a call with a wrong token succeeded");
    assert_eq!(e.code(), Some(tonic::Code::Unauthenticated), "{e}");

    // Raw tonic, no metadata at all, on every service.
    let addr = server.address.clone();
    rt.block_on(async {
        use pb::backup_service_client::BackupServiceClient;
        use pb::env_service_client::EnvServiceClient;
        use pb::snapshot_service_client::SnapshotServiceClient;
        use pb::statistics_service_client::StatisticsServiceClient;
        let ch = tonic::transport::Endpoint::from_shared(addr.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .expect("connect");
        let s = BackupServiceClient::new(ch.clone())
            .list_backups(pb::ListBackupsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
        assert!(
            s.message().contains("authorization"),
            "the message should say what is missing: {s:?}"
        );
        let s = BackupServiceClient::new(ch.clone())
            .create_backup(pb::CreateBackupRequest {
                source: src.to_str().unwrap().into(),
                destination: wim.to_str().unwrap().into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
        let s = SnapshotServiceClient::new(ch.clone())
            .list_snapshots(pb::ListSnapshotsRequest::default())
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
        let s = EnvServiceClient::new(ch.clone())
            .get_environment(pb::GetEnvironmentRequest {})
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
        let s = StatisticsServiceClient::new(ch.clone())
            .get_statistics(pb::GetStatisticsRequest {})
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
        // A wrong bearer token in raw metadata.
        let mut req = tonic::Request::new(pb::ListBackupsRequest::default());
        req.metadata_mut()
            .insert("authorization", "Bearer wrong".parse().unwrap());
        let s = BackupServiceClient::new(ch.clone())
            .list_backups(req)
            .await
            .unwrap_err();
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
        // The right token in raw metadata works.
        let mut req = tonic::Request::new(pb::ListBackupsRequest::default());
        req.metadata_mut()
            .insert("authorization", format!("Bearer {secret}").parse().unwrap());
        BackupServiceClient::new(ch)
            .list_backups(req)
            .await
            .expect("raw call with the right token");
    });
    assert!(!wim.exists());
    drop(c);
    drop(rt); // closes the client's connection before the server stops
    server.stop();

    // An empty appSecret would match an empty bearer token: the server
    // refuses to start with one, naming the key.
    let env = Env::new();
    env.write_config("appSecret: \"  \"\n");
    let out = common::run_with_timeout(
        &wg_bin(),
        &[os("server"), os("--home"), env.home.as_os_str(), os("--port"), os("0")],
        Duration::from_secs(60),
    );
    assert!(
        !out.ok() && out.stderr.contains("appSecret is empty"),
        "{}",
        out.describe()
    );
}

#[test]
fn missing_source_unknown_uuid_and_unwritable_destination() {
    let env = Env::new();
    let server = Server::start(&env.home);

    // Missing source: NOT_FOUND (exit 4) naming the path.
    let missing = env.path("no-such-source");
    let wim = env.path("a.wim");
    let out = cli_code(
        &env.home,
        &[
            os("backup"),
            os("--source"),
            missing.as_os_str(),
            os("--destination"),
            wim.as_os_str(),
        ],
        4,
    );
    assert!(
        out.stderr.contains(missing.to_str().unwrap()),
        "the message should name the missing source:\n{}",
        out.describe()
    );
    assert!(!wim.exists());

    // An exclude pattern that does not parse: refused before any job
    // starts, as a usage error (exit 2) naming the flag.
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let out = cli_code(&env.home, &backup_args(&src, &wim, &["--exclude", "\\"]), 2);
    assert!(out.stderr.contains("--exclude"), "{}", out.describe());
    assert!(!wim.exists());

    // Unknown uuid: NOT_FOUND (exit 4) for every command that takes one.
    let unknown = "00000000-0000-4000-8000-000000000000";
    let t = env.path("t");
    for args in [
        vec![os("backups"), os("show"), os(unknown)],
        vec![os("backups"), os("delete"), os(unknown)],
        vec![os("restore"), os(unknown), os("--target"), t.as_os_str()],
        vec![os("snapshots"), os("show"), os(unknown)],
        vec![os("snapshots"), os("browse"), os(unknown)],
        vec![os("snapshots"), os("verify"), os(unknown)],
        vec![os("snapshots"), os("diff"), os(unknown), os(unknown)],
    ] {
        let out = cli_code(&env.home, &args, 4);
        assert!(
            out.stderr.contains(unknown),
            "the message should name the uuid:\n{}",
            out.describe()
        );
    }
    // An empty uuid (a script's unset variable), or one that cannot be a
    // uuid (a name, a path), is a usage error.
    for args in [
        vec![os("backups"), os("show"), os("")],
        vec![os("snapshots"), os("show"), os("")],
        vec![os("snapshots"), os("browse"), os("")],
        vec![os("backups"), os("delete"), os("notauuid")],
        vec![os("restore"), os("home/latest"), os("--target"), t.as_os_str()],
    ] {
        cli_code(&env.home, &args, 2);
    }
    // An empty --path (a script's unset variable) is refused, not taken
    // for "everything".
    let out = cli_code(
        &env.home,
        &[
            os("restore"),
            os(unknown),
            os("--target"),
            t.as_os_str(),
            os("--path"),
            os(""),
        ],
        2,
    );
    assert!(out.stderr.contains("empty --path"), "{}", out.describe());
    let rt = runtime();
    let c = client(&env.home, None);
    let e = rt.block_on(c.get_backup(unknown)).unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::NotFound), "{e}");

    // Unwritable destination, 1: below a regular file.
    let src = env.path("src");
    small_tree(&src, "u");
    let file = env.path("plain-file");
    fs::write(&file, b"not a directory").unwrap();
    let under_file = file.join("a.wim");
    let out = cli(
        &env.home,
        &[
            os("backup"),
            os("--source"),
            src.as_os_str(),
            os("--destination"),
            under_file.as_os_str(),
        ],
    );
    assert!(
        !out.ok() && !out.stderr.trim().is_empty(),
        "a destination below a file should fail:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains(file.to_str().unwrap()),
        "the message should name the path:\n{}",
        out.describe()
    );
    assert_eq!(fs::read(&file).unwrap(), b"not a directory");

    // Unwritable destination, 2: a directory made immutable (works as root).
    let ro = env.path("immutable");
    fs::create_dir(&ro).unwrap();
    let chattr = Command::new("chattr").arg("+i").arg(&ro).output();
    match chattr {
        Ok(o) if o.status.success() => {
            struct Unfreeze(std::path::PathBuf);
            impl Drop for Unfreeze {
                fn drop(&mut self) {
                    let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
                }
            }
            let _guard = Unfreeze(ro.clone());
            let dest = ro.join("a.wim");
            let out = cli(
                &env.home,
                &[
                    os("backup"),
                    os("--source"),
                    src.as_os_str(),
                    os("--destination"),
                    dest.as_os_str(),
                ],
            );
            assert!(
                !out.ok(),
                "a backup into an immutable directory succeeded:\n{}",
                out.describe()
            );
            assert!(
                out.stderr.contains(ro.to_str().unwrap()),
                "the message should name the directory:\n{}",
                out.describe()
            );
            assert!(
                out.stderr.to_lowercase().contains("permission denied")
                    || out.stderr.to_lowercase().contains("not writable"),
                "expected a permission error:\n{}",
                out.describe()
            );
            let c = client(&env.home, None);
            let e = rt
                .block_on(async {
                    c.create_backup(pb::CreateBackupRequest {
                        source: src.to_str().unwrap().into(),
                        destination: dest.to_str().unwrap().into(),
                        ..Default::default()
                    })
                    .await
                    .map(|_| ())
                })
                .unwrap_err();
            assert_eq!(e.code(), Some(tonic::Code::PermissionDenied), "{e}");
            assert!(!dest.exists());
        }
        other => common::skip(
            "missing_source_unknown_uuid_and_unwritable_destination (immutable part)",
            &format!("chattr +i does not work here: {other:?}"),
        ),
    }
    // None of the refused backups left a record that claims success.
    let l = list(&env.home);
    assert!(l.iter().all(|b| b["status"] != "succeeded"), "{l:?}");
    drop(c);
    drop(rt); // closes the client's connection before the server stops
    server.stop();
}

#[test]
fn corrupt_archive_is_data_loss() {
    let env = Env::new();
    let mut server = Server::start(&env.home);
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    let payload = Rng::new(99).bytes(256 * 1024);
    fs::write(src.join("payload.bin"), &payload).unwrap();
    fs::write(src.join("small.txt"), b"small\n").unwrap();
    let wim = env.path("c.wim");
    // Uncompressed, so the file's bytes can be found in the archive.
    let uuid = uuid_of(&backup(&env.home, &src, &wim, &["--compression", "none"]));
    let v = cli_json(&env.home, &[os("snapshots"), os("verify"), os(&uuid)]);
    assert_eq!(v["ok"], true, "{v}");

    // Another process writing the archive: the backup fails as a conflict
    // (7: try again later), as any command that finds it busy does.
    {
        use std::os::fd::AsRawFd;
        let held = fs::File::open(&wim).unwrap();
        // SAFETY: flock on a descriptor this test owns.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let out = cli_code(&env.home, &backup_args(&src, &wim, &["--json"]), 7);
        assert!(
            out.combined().contains("being modified by another process"),
            "{}",
            out.describe()
        );
        // The kind of failure is kept: watching the finished backup, even
        // after a restart, ends with the same code as its run.
        let failed = uuid_of(&last_json(&out));
        cli_code(&env.home, &[os("backups"), os("watch"), os(&failed)], 7);
        server.stop();
        server = Server::start(&env.home);
        cli_code(&env.home, &[os("backups"), os("watch"), os(&failed)], 7);
    }

    let mut bytes = fs::read(&wim).unwrap();
    let needle = &payload[100_000..100_064];
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the payload is stored uncompressed in the archive");
    bytes[at + 10] ^= 0x5a;
    bytes[at + 11] ^= 0xa5;
    fs::write(&wim, &bytes).unwrap();

    let target = env.path("restored");
    let out = cli_code(
        &env.home,
        &[os("restore"), os(&uuid), os("--target"), target.as_os_str()],
        3,
    );
    let msg = out.stderr.to_lowercase();
    assert!(
        msg.contains("damaged") || msg.contains("corrupt") || msg.contains("checksum") || msg.contains("sha-1"),
        "the restore error should say the archive is damaged:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("payload.bin") && out.stderr.contains("--recover-data"),
        "the restore error should name the file whose contents are damaged, and the way past it:\n{}",
        out.describe()
    );
    // Data recovery mode: everything restored, the damaged file as it is
    // stored (two bytes off), named in a warning; exit 8.
    let recovered = env.path("recovered");
    let out = cli_code(
        &env.home,
        &[
            os("restore"),
            os(&uuid),
            os("--target"),
            recovered.as_os_str(),
            os("--recover-data"),
        ],
        8,
    );
    assert!(
        out.stderr.contains("payload.bin") && out.stderr.contains("data recovery mode"),
        "{}",
        out.describe()
    );
    assert_eq!(fs::read(recovered.join("small.txt")).unwrap(), b"small\n");
    let got = fs::read(recovered.join("payload.bin")).unwrap();
    assert_eq!(got.len(), payload.len());
    let differ: Vec<usize> = (0..got.len()).filter(|&i| got[i] != payload[i]).collect();
    assert_eq!(differ, [100_010, 100_011], "only the damaged bytes differ");
    let out = cli_code(&env.home, &[os("snapshots"), os("verify"), os(&uuid)], 3);
    let msg = out.stderr.to_lowercase();
    assert!(
        msg.contains("damaged")
            && (msg.contains("sha") || msg.contains("corrupt") || msg.contains("checksum") || msg.contains("hash")),
        "the verify error should say what is damaged:\n{}",
        out.describe()
    );
    let out = cli(&env.home, &[os("snapshots"), os("verify"), os(&uuid), os("--json")]);
    assert_eq!(out.code(), Some(3), "{}", out.describe());
    let v = last_json(&out);
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a failed verify should carry an error: {v}"
    );
    server.stop();
}

#[test]
fn second_server_on_same_home_is_refused_and_catalog_survives_restart() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let src = env.path("src");
    small_tree(&src, "r");
    backup(&env.home, &src, &env.path("a.wim"), &["--name", "one"]);
    backup(&env.home, &src, &env.path("a.wim"), &["--name", "two"]);
    backup(&env.home, &src, &env.path("b.wim"), &[]);

    let second = common::run_with_timeout(
        &wg_bin(),
        &[os("server"), os("--home"), env.home.as_os_str(), os("--port"), os("0")],
        Duration::from_secs(30),
    );
    assert!(
        !second.ok(),
        "a second server on the same home started:\n{}",
        second.describe()
    );
    assert!(!second.stderr.contains("panicked"), "{}", second.describe());
    assert!(
        second.stderr.contains("already running") && second.stderr.contains(env.home.to_str().unwrap()),
        "the second server should say another one holds the home:\n{}",
        second.describe()
    );
    // The first server is unaffected, and clients still find it.
    assert_eq!(
        config_address(&env.home),
        server.address,
        "the refused server rewrote the client address"
    );
    cli_ok(&env.home, &[os("health")]);

    let before = cli_ok(&env.home, &[os("backups"), os("list"), os("--json")]).stdout;
    let snaps_before = cli_ok(&env.home, &[os("snapshots"), os("list"), os("--json")]).stdout;
    server.stop();
    let server = Server::start(&env.home);
    let after = cli_ok(&env.home, &[os("backups"), os("list"), os("--json")]).stdout;
    let snaps_after = cli_ok(&env.home, &[os("snapshots"), os("list"), os("--json")]).stdout;
    assert_eq!(before, after, "backups list changed across a restart");
    assert_eq!(snaps_before, snaps_after, "snapshots list changed across a restart");
    assert_eq!(list(&env.home).len(), 3);
    server.stop();
}

/// Issue 9 §4: a file where the snapshot has a directory is existing data.
/// Without `--overwrite` the restore refuses and the file stays; with
/// `--skip-existing` the file stays and the directory's subtree is left
/// out; with `--overwrite` the directory replaces it.
#[test]
fn a_file_in_place_of_a_snapshot_directory_is_not_clobbered() {
    let env = Env::new();
    let src = env.path("src");
    fs::create_dir_all(src.join("docs")).unwrap();
    fs::write(src.join("docs/a.txt"), b"from the snapshot\n").unwrap();
    fs::write(src.join("top.txt"), b"top\n").unwrap();
    let wim = env.path("archive.wim");
    let _server = Server::start(&env.home);
    let uuid = uuid_of(&backup(&env.home, &src, &wim, &[]));

    let target = env.path("target");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("docs"), b"precious\n").unwrap();
    let out = cli(
        &env.home,
        &[os("restore"), os(&uuid), os("--target"), target.as_os_str()],
    );
    assert!(
        !out.ok(),
        "restore over a file where the snapshot has a directory succeeded:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("docs"),
        "the refusal should name the path:\n{}",
        out.describe()
    );
    assert_eq!(fs::read(target.join("docs")).unwrap(), b"precious\n");

    let r = cli_json(
        &env.home,
        &[
            os("restore"),
            os(&uuid),
            os("--target"),
            target.as_os_str(),
            os("--skip-existing"),
        ],
    );
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(
        fs::read(target.join("docs")).unwrap(),
        b"precious\n",
        "--skip-existing replaced the file"
    );
    assert_eq!(fs::read(target.join("top.txt")).unwrap(), b"top\n");
    assert!(r["skipped"].to_string().contains("docs"), "{r}");

    let r = cli_json(
        &env.home,
        &[
            os("restore"),
            os(&uuid),
            os("--target"),
            target.as_os_str(),
            os("--overwrite"),
        ],
    );
    assert_eq!(r["status"], "succeeded", "{r}");
    assert_eq!(fs::read(target.join("docs/a.txt")).unwrap(), b"from the snapshot\n");
}

/// A listing piped into a reader that stops early (`… | head -1`) ends the
/// client quietly, as `ls` would: no panic from printing, nothing on
/// stderr, and the server is not bothered.
#[test]
fn a_closed_output_pipe_ends_a_listing_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let _server = Server::start(&env.home);
    let src = env.path("src");
    fs::create_dir(&src).unwrap();
    for i in 0..5000 {
        fs::write(src.join(format!("file-{i:05}")), b"").unwrap();
    }
    let b = backup(&env.home, &src, &env.path("a.wim"), &[]);
    let uuid = uuid_of(&b);
    let target = env.path("out");
    for args in [
        vec![os("snapshots"), os("browse"), os(&uuid)],
        vec![
            os("restore"),
            os(&uuid),
            os("--target"),
            target.as_os_str(),
            os("--dry-run"),
        ],
    ] {
        let mut child = Command::new(wg_bin())
            .args(with_home(&env.home, &args))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty(), "{args:?} printed nothing");
        // The reader is gone now; the rest of the listing has nowhere to go.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?} ended with {:?}:\n{stderr}",
            out.status
        );
    }
    cli_ok(&env.home, &[os("health")]);
}

/// A home removed under the running server: records would go to a catalog
/// nobody can open again, so the server stops taking work and says why.
#[test]
fn a_home_deleted_under_the_server_stops_it_taking_work() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let src = env.path("src");
    small_tree(&src, "h");
    backup(&env.home, &src, &env.path("a.wim"), &[]);
    let (address, token) = (config_address(&env.home), config_secret(&env.home));
    fs::remove_dir_all(&env.home).unwrap();
    let elsewhere = env.path("other-home");
    let remote = |args: &[&std::ffi::OsStr]| {
        let mut a = args.to_vec();
        a.extend([os("--server"), os(&address), os("--token"), os(&token)]);
        cli(&elsewhere, &a)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = remote(&[os("health")]);
        if out.code() != Some(0) {
            assert!(out.combined().contains("NOT_SERVING"), "{}", out.describe());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still SERVING 30 s after its home was deleted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = remote(&backup_args(&src, &env.path("b.wim"), &[]));
    assert_eq!(out.code(), Some(6), "{}", out.describe());
    assert!(!env.path("b.wim").exists());
    assert!(
        server
            .log_text()
            .contains("was deleted or replaced while the server ran"),
        "{}",
        server.log_text()
    );
    server.stop();
}
