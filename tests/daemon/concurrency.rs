//! Issue 3 §2: many clients at once; two backups into one archive are
//! serialized by refusal, never interleaved.

use std::fs;
use std::sync::{Arc, Barrier};

use crate::common;
use crate::harness::*;

#[test]
fn eight_clients_at_once_all_succeed() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let src = env.path("src");
    small_tree(&src, "base");
    let base = uuid_of(&backup(&env.home, &src, &env.path("base.wim"), &[]));
    let src_b = env.path("src_b");
    let src_c = env.path("src_c");
    big_tree(&src_b, 3, 300_000, 11);
    big_tree(&src_c, 3, 300_000, 12);

    type Job = Box<dyn FnOnce() -> (String, common::Out) + Send>;
    let h = env.home.clone();
    let mk = |name: &str, args: Vec<std::ffi::OsString>| -> Job {
        let h = h.clone();
        let name = name.to_string();
        Box::new(move || {
            let a: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
            (name, cli(&h, &a))
        })
    };
    let s = |x: &str| std::ffi::OsString::from(x);
    let p = |x: &std::path::Path| x.as_os_str().to_os_string();
    let jobs: Vec<Job> = vec![
        mk("backups list", vec![s("backups"), s("list"), s("--json")]),
        mk("backups show", vec![s("backups"), s("show"), s(&base), s("--json")]),
        mk("snapshots list", vec![s("snapshots"), s("list"), s("--json")]),
        mk(
            "snapshots browse",
            vec![s("snapshots"), s("browse"), s(&base), s("/sub"), s("--json")],
        ),
        mk(
            "backup B",
            vec![
                s("backup"),
                s("--source"),
                p(&src_b),
                s("--destination"),
                p(&env.path("b.wim")),
                s("--json"),
            ],
        ),
        mk(
            "backup C",
            vec![
                s("backup"),
                s("--source"),
                p(&src_c),
                s("--destination"),
                p(&env.path("c.wim")),
                s("--json"),
            ],
        ),
        mk(
            "restore",
            vec![
                s("restore"),
                s(&base),
                s("--target"),
                p(&env.path("restored")),
                s("--json"),
            ],
        ),
        mk("stats", vec![s("stats"), s("--json")]),
    ];
    let barrier = Arc::new(Barrier::new(jobs.len()));
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                job()
            })
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        let (name, out) = h.join().expect("client thread panicked");
        if !out.ok() {
            failures.push(format!("{name}:\n{}", out.describe()));
        } else {
            serde_json::from_str::<serde_json::Value>(out.stdout.lines().last().unwrap_or(""))
                .unwrap_or_else(|e| panic!("{name}: stdout is not JSON ({e}):\n{}", out.describe()));
        }
    }
    assert!(
        failures.is_empty(),
        "concurrent clients failed:\n{}",
        failures.join("\n")
    );
    // Results are right, not just exit codes.
    assert_eq!(fs::read(env.path("restored/sub/b.txt")).unwrap(), b"beta base\n");
    let l = list(&env.home);
    assert_eq!(counts_by_status(&l).get("succeeded"), Some(&3), "{l:?}");
    for w in ["b.wim", "c.wim", "base.wim"] {
        wimlib_verify(&env.path(w));
    }
    server.stop();
}

#[test]
fn two_backups_into_one_archive_one_is_refused() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let big = env.path("big");
    cancel_source(&big, 21);
    let small = env.path("small");
    small_tree(&small, "x");
    let wim = env.path("shared.wim");

    let mut first = BgCli::spawn(
        &env.home,
        &[
            os("backup"),
            os("--source"),
            big.as_os_str(),
            os("--destination"),
            wim.as_os_str(),
            os("--name"),
            os("slow"),
            os("--json"),
        ],
    );
    let uuid = running_uuid(&env.home, &wim);
    wait_growth(&wim, 0, 1 << 20, &mut || !first.has_exited());
    let second = cli(
        &env.home,
        &[
            os("backup"),
            os("--source"),
            small.as_os_str(),
            os("--destination"),
            wim.as_os_str(),
            os("--name"),
            os("fast"),
        ],
    );
    let first_running = !first.has_exited();
    let first = first.wait(JOB_TIMEOUT);
    assert!(
        first_running,
        "the first backup finished before the second was tried; the test proves nothing"
    );
    assert_eq!(
        second.code(),
        Some(7),
        "the second backup should be refused as a conflict (exit 7):\n{}",
        second.describe()
    );
    assert!(
        second.stderr.contains(&uuid),
        "the refusal should name the running backup {uuid}:\n{}",
        second.describe()
    );
    assert!(first.ok(), "the first backup failed:\n{}", first.describe());
    assert_eq!(last_json(&first)["status"], "succeeded");

    // Never interleaved: one image, the slow one; the archive verifies.
    wimlib_verify(&wim);
    archive_verify(&wim);
    assert_eq!(common::wimlib_image_count(&wim), 1);
    let info = common::wimlib_raw(&[os("info"), wim.as_os_str()]);
    assert!(
        info.stdout.contains("slow") && !info.stdout.contains("fast"),
        "{}",
        info.describe()
    );
    // The refused attempt left no record behind (or at most a non-succeeded one).
    let l = list(&env.home);
    assert_eq!(l.iter().filter(|b| b["status"] == "succeeded").count(), 1, "{l:?}");
    assert!(
        temps_in(&env.dir).is_empty(),
        "temp files left: {:?}",
        temps_in(&env.dir)
    );
    // A third try once it is idle succeeds (appends).
    backup(&env.home, &small, &wim, &["--name", "fast"]);
    assert_eq!(common::wimlib_image_count(&wim), 2);
    wimlib_verify(&wim);
    server.stop();
}
