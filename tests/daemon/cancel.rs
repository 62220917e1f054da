//! Issue 3 §3: a backup stopped mid-way — by CancelBackup, by its client
//! going away, by SIGTERM to the server, by `kill -9` of the server — leaves
//! the archive as it was (or absent) and the job in the right final state.

use std::fs;
use std::time::{Duration, Instant};

use wimguard::api::v1 as pb;

use crate::common;
use crate::harness::*;

/// An archive holding one small image, and its bytes.
fn base_archive(env: &Env, wim: &std::path::Path) -> (String, Vec<u8>) {
    let small = env.path("small");
    small_tree(&small, "base");
    let b = backup(&env.home, &small, wim, &["--name", "base"]);
    (uuid_of(&b), fs::read(wim).unwrap())
}

fn spawn_big_backup(env: &Env, big: &std::path::Path, wim: &std::path::Path) -> BgCli {
    BgCli::spawn(
        &env.home,
        &[
            os("backup"),
            os("--source"),
            big.as_os_str(),
            os("--destination"),
            wim.as_os_str(),
            os("--name"),
            os("big"),
            os("--json"),
        ],
    )
}

fn assert_unchanged(wim: &std::path::Path, before: &[u8]) {
    let after = fs::read(wim).unwrap_or_else(|e| panic!("archive {} is gone: {e}", wim.display()));
    assert_eq!(
        after.len(),
        before.len(),
        "the archive changed size: {} → {} bytes",
        before.len(),
        after.len()
    );
    let first_diff = after.iter().zip(before).position(|(a, b)| a != b);
    assert_eq!(
        first_diff, None,
        "the archive is not byte-identical to before (first difference at offset {first_diff:?})"
    );
}

fn assert_no_temps(dir: &std::path::Path) {
    let t = temps_in(dir);
    assert!(t.is_empty(), "temp files left in {}: {t:?}", dir.display());
}

#[test]
fn cancel_backup_rpc_mid_append_leaves_archive_byte_identical() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let wim = env.path("a.wim");
    let (_, before) = base_archive(&env, &wim);
    let big = env.path("big");
    cancel_source(&big, 31);

    let mut bg = spawn_big_backup(&env, &big, &wim);
    let uuid = running_uuid(&env.home, &wim);
    wait_growth(&wim, before.len() as u64, 1 << 20, &mut || !bg.has_exited());
    let rt = runtime();
    let c = client(&env.home, None);
    let rec = rt
        .block_on(c.cancel_backup(&uuid))
        .unwrap_or_else(|e| panic!("CancelBackup({uuid}) failed (did the backup already end?): {e}"));
    assert_eq!(rec.uuid, uuid);
    let out = bg.wait(JOB_TIMEOUT);
    assert_eq!(
        out.code(),
        Some(1),
        "a cancelled backup should exit 1:\n{}",
        out.describe()
    );
    assert_eq!(last_json(&out)["status"], "cancelled", "{}", out.describe());
    assert!(out.stderr.contains("cancelled"), "{}", out.describe());

    let b = wait_final(&env.home, &uuid);
    assert_eq!(b["status"], "cancelled", "{b}");
    assert_unchanged(&wim, &before);
    assert_no_temps(&env.dir);
    wimlib_verify(&wim);
    // Cancelling again is a conflict, not a crash.
    let again = rt
        .block_on(c.cancel_backup(&uuid))
        .expect_err("cancelling a finished backup should fail");
    assert_eq!(again.code(), Some(tonic::Code::Aborted), "{again}");
    // stats counts the cancelled backup.
    let counts = stats_counts(&env.home);
    assert_eq!(counts, counts_by_status(&list(&env.home)));
    assert_eq!(counts.get("cancelled"), Some(&1), "{counts:?}");
    drop(c);
    drop(rt); // closes the client's connection before the server stops
    server.stop();
}

#[test]
fn cancel_backup_rpc_of_new_archive_leaves_no_archive() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let wim = env.path("new.wim");
    let big = env.path("big");
    cancel_source(&big, 41);

    let rt = runtime();
    let c = client(&env.home, None);
    let final_backup = rt.block_on(async {
        let req = pb::CreateBackupRequest {
            source: big.to_str().unwrap().into(),
            destination: wim.to_str().unwrap().into(),
            ..Default::default()
        };
        let mut stream = c.create_backup(req).await.expect("CreateBackup");
        let first = tokio::time::timeout(JOB_TIMEOUT, stream.next())
            .await
            .expect("first event in time")
            .expect("first event");
        let first = first.expect("a first event");
        let uuid = first.uuid.clone();
        assert_eq!(uuid.len(), 36, "first event names no backup: {first:?}");
        // Wait (without blocking the runtime's stream) until the temp file grows.
        let start = Instant::now();
        while written_bytes(&wim) < 1 << 20 {
            assert!(
                start.elapsed() < JOB_TIMEOUT,
                "the backup wrote nothing within {JOB_TIMEOUT:?}"
            );
            let st = c.get_backup(&uuid).await.expect("GetBackup");
            assert_eq!(
                st.status(),
                pb::JobStatus::Running,
                "the backup ended before it could be cancelled: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.cancel_backup(&uuid).await.expect("CancelBackup");
        let mut last = None;
        loop {
            match tokio::time::timeout(JOB_TIMEOUT, stream.next())
                .await
                .expect("stream ended in time")
            {
                Ok(Some(ev)) => {
                    if let Some(b) = ev.backup {
                        last = Some(b);
                    }
                }
                Ok(None) => break,
                Err(e) => panic!("backup stream failed: {e}"),
            }
        }
        last.expect("the stream carried no final backup")
    });
    assert_eq!(final_backup.status(), pb::JobStatus::Cancelled, "{final_backup:?}");
    assert!(
        !wim.exists(),
        "a cancelled backup into a new archive left {}",
        wim.display()
    );
    assert_no_temps(&env.dir);
    let b = show(&env.home, &final_backup.uuid);
    assert_eq!(b["status"], "cancelled", "{b}");
    drop(c);
    drop(rt); // closes the client's connection before the server stops
    server.stop();
}

#[test]
fn client_disconnect_cancels_the_backup() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let wim = env.path("a.wim");
    let (_, before) = base_archive(&env, &wim);
    let big = env.path("big");
    cancel_source(&big, 51);

    let mut bg = spawn_big_backup(&env, &big, &wim);
    let uuid = running_uuid(&env.home, &wim);
    wait_growth(&wim, before.len() as u64, 1 << 20, &mut || !bg.has_exited());
    let out = bg.kill9();
    assert!(
        out.status.code().is_none(),
        "the CLI ended on its own before the kill:\n{}",
        out.describe()
    );
    let b = wait_final(&env.home, &uuid);
    assert_eq!(
        b["status"], "cancelled",
        "a backup whose client went away should be cancelled: {b}"
    );
    assert_unchanged(&wim, &before);
    assert_no_temps(&env.dir);
    wimlib_verify(&wim);
    server.stop();
}

#[test]
fn sigterm_with_zero_grace_cancels_running_backup_and_exits_0() {
    let env = Env::new();
    env.write_config(
        "appSecret: 0123456789abcdef0123456789abcdef\n\
         service:\n  server:\n    shutdownGraceSeconds: 0\n",
    );
    let mut server = Server::start(&env.home);
    let wim = env.path("a.wim");
    let (_, before) = base_archive(&env, &wim);
    let big = env.path("big");
    cancel_source(&big, 61);

    let mut bg = spawn_big_backup(&env, &big, &wim);
    let uuid = running_uuid(&env.home, &wim);
    wait_growth(&wim, before.len() as u64, 1 << 20, &mut || !bg.has_exited());
    server.signal(libc::SIGTERM);
    let st = server.wait_exit(STOP_TIMEOUT);
    server.assert_no_panic();
    assert_eq!(
        st.code(),
        Some(0),
        "server exit after SIGTERM: {st}; log:\n{}",
        server.log_text()
    );
    let out = bg.wait(JOB_TIMEOUT);
    assert!(
        !out.ok(),
        "the CLI reported success for a backup the server cancelled:\n{}",
        out.describe()
    );
    drop(server);

    assert_unchanged(&wim, &before);
    assert_no_temps(&env.dir);
    let server = Server::start(&env.home);
    let b = show(&env.home, &uuid);
    assert_eq!(
        b["status"], "cancelled",
        "SIGTERM with zero grace should cancel the backup: {b}"
    );
    assert_unchanged(&wim, &before);
    wimlib_verify(&wim);
    server.stop();
}

#[test]
fn kill9_server_mid_backup_marks_it_interrupted_and_archive_stays_readable() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let wim = env.path("a.wim");
    let (base_uuid, before) = base_archive(&env, &wim);
    let big = env.path("big");
    cancel_source(&big, 71);

    let mut bg = spawn_big_backup(&env, &big, &wim);
    let uuid = running_uuid(&env.home, &wim);
    wait_growth(&wim, before.len() as u64, 1 << 20, &mut || !bg.has_exited());
    server.kill9();
    let out = bg.wait(JOB_TIMEOUT);
    // The server is gone: exit code 6, and the message says where to look.
    assert_eq!(
        out.code(),
        Some(6),
        "the CLI should report the lost server:\n{}",
        out.describe()
    );
    assert!(out.stderr.contains(&uuid), "{}", out.describe());

    let server = Server::start(&env.home);
    let b = show(&env.home, &uuid);
    assert_eq!(b["status"], "interrupted", "{b}");
    assert!(
        b["error"].as_str().is_some_and(|e| !e.is_empty()),
        "an interrupted backup should say why: {b}"
    );
    // The archive is readable by both tools and still holds only the base image.
    archive_verify(&wim);
    let wl = common::wimlib_raw(&[os("verify"), wim.as_os_str()]);
    assert!(
        wl.ok() && wl.stdout.contains("successfully verified"),
        "wimlib-imagex verify failed:\n{}",
        wl.describe()
    );
    let bad: Vec<&str> = wl
        .stderr
        .lines()
        .filter(|l| l.contains("[WARNING]") || l.contains("[ERROR]"))
        .filter(|l| !l.contains("does not contain integrity information"))
        // The restarted server clears the killed writer's in-progress mark.
        .collect();
    assert!(
        bad.is_empty(),
        "wimlib-imagex warned about the archive after the crash: {bad:#?}\n{}",
        wl.describe()
    );
    let info = common::wimlib_raw(&[os("info"), wim.as_os_str()]);
    assert!(
        info.ok()
            && info
                .stdout
                .lines()
                .any(|l| l.starts_with("Image Count:") && l.trim_end().ends_with(" 1")),
        "the archive should still hold only the base image:\n{}",
        info.describe()
    );
    // The earlier snapshot restores, and the archive takes new backups.
    let t = env.path("restored");
    cli_ok(
        &env.home,
        &[os("restore"), os(&base_uuid), os("--target"), t.as_os_str()],
    );
    assert_eq!(fs::read_to_string(t.join("sub/b.txt")).unwrap(), "beta base\n");
    backup(&env.home, &env.path("small"), &wim, &["--name", "after-crash"]);
    wimlib_verify(&wim);
    let counts = stats_counts(&env.home);
    assert_eq!(counts.get("interrupted"), Some(&1), "{counts:?}");
    assert_eq!(counts, counts_by_status(&list(&env.home)));
    server.stop();
}
