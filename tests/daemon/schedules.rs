//! Issue 11: scheduled backups through the real daemon: a seconds-resolution
//! schedule fires and restores, overlapping slots coalesce, one catch-up run
//! after downtime, enable/disable, retention after each run (and `forget`
//! on demand, with a dry run that changes nothing), kill -9 mid-run, and
//! clear errors for bad expressions, zones and config.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common;
use crate::harness::*;

fn create(home: &Path, args: &[&str]) -> Value {
    let mut a = vec![os("schedule"), os("create")];
    a.extend(args.iter().map(os));
    cli_json(home, &a)
}

/// A small source tree TAG and a schedule backing it up to archive WIM on
/// CRON (plus `extra` options): (source, archive, the schedule as JSON).
fn scheduled(env: &Env, tag: &str, wim: &str, cron: &str, extra: &[&str]) -> (PathBuf, PathBuf, Value) {
    let src = env.path("src");
    small_tree(&src, tag);
    let wim = env.path(wim);
    let mut args = vec![
        "--cron",
        cron,
        "--source",
        src.to_str().unwrap(),
        "--destination",
        wim.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let s = create(&env.home, &args);
    (src, wim, s)
}

fn schedule(home: &Path, id: &str) -> Value {
    cli_json(home, &[os("schedule"), os("show"), os(id)])
}

/// Backups a schedule made, oldest first.
fn runs_of(home: &Path, id: &str) -> Vec<Value> {
    let mut v: Vec<Value> = list(home).into_iter().filter(|b| b["schedule_id"] == id).collect();
    v.reverse();
    v
}

/// Waits until `cond` holds (bounded), polling.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn finished(b: &Value) -> bool {
    !["running", "queued"].contains(&b["status"].as_str().unwrap_or(""))
}

#[test]
fn a_seconds_schedule_fires_and_its_backup_restores() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let (src, _wim, s) = scheduled(
        &env,
        "sched",
        "s.wim",
        "*/2 * * * * *",
        &["--compression", "xpress", "--name", "every-2s"],
    );
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["compression"], "xpress", "{s}");
    assert!(s["next_run_at"].is_string(), "{s}");
    wait_for("a scheduled backup", Duration::from_secs(60), || {
        runs_of(&env.home, &id).iter().any(|b| b["status"] == "succeeded")
    });
    cli_ok(&env.home, &[os("schedule"), os("disable"), os(&id)]);
    let b = runs_of(&env.home, &id)
        .into_iter()
        .find(|b| b["status"] == "succeeded")
        .unwrap();
    let out = env.path("out");
    cli_ok(
        &env.home,
        &[
            os("restore"),
            os(b["uuid"].as_str().unwrap()),
            os("--target"),
            out.as_os_str(),
        ],
    );
    common::assert_trees_equal(
        &src,
        &out,
        &common::CompareOpts::full(&src, &out).without_atime(),
        "scheduled backup",
    );
    let s = schedule(&env.home, &id);
    assert_eq!(s["enabled"], false);
    assert!(
        s["last_run_at"].is_string() && s["last_backup_uuid"].as_str().unwrap().len() == 36,
        "{s}"
    );
    // The table shows next run, last run and last status.
    let table = cli_ok(&env.home, &[os("schedule"), os("list")]).stdout;
    assert!(
        table.contains("NEXT RUN") && table.contains("LAST STATUS") && table.contains("every-2s"),
        "{table}"
    );
    server.stop();
}

#[test]
fn overlapping_slots_are_coalesced_and_runs_never_overlap() {
    let env = Env::new();
    env.write_config(
        "appSecret: sched-test\nhooks:\n  pre:\n    - { command: [\"/bin/sleep\", \"3\"], timeout: 30 }\n",
    );
    let server = Server::start(&env.home);
    let created = Instant::now();
    let (_src, _wim, s) = scheduled(&env, "overlap", "o.wim", "* * * * * *", &[]);
    let id = s["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(11));
    cli_ok(&env.home, &[os("schedule"), os("disable"), os(&id)]);
    // A slow machine stretches this window; runs never fit more than one per 3 s in it.
    let most = created.elapsed().as_secs() as usize / 3 + 1;
    wait_for("the last run to end", Duration::from_secs(60), || {
        runs_of(&env.home, &id).iter().all(finished)
    });
    let runs = runs_of(&env.home, &id);
    // Each run takes at least 3 s (the hook): about 11 / 3 runs, never more
    // than one at a time, and the slots in between were skipped, not queued.
    assert!(
        (2..=most).contains(&runs.len()),
        "{} runs (at most {most}): {runs:?}",
        runs.len()
    );
    let times: Vec<(String, String)> = runs
        .iter()
        .map(|b| {
            (
                b["started_at"].as_str().unwrap().to_string(),
                b["finished_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for w in times.windows(2) {
        assert!(w[0].1 <= w[1].0, "runs overlapped: {w:?}");
    }
    let s = schedule(&env.home, &id);
    assert!(s["skipped_runs"].as_u64().unwrap() >= 4, "{s}");
    server.stop();
}

#[test]
fn after_downtime_one_catch_up_run_and_the_missed_slots_are_counted() {
    let env = Env::new();
    let mut server = Server::start(&env.home);
    // Every hour on the hour.
    let (_src, _wim, s) = scheduled(&env, "missed", "m.wim", "0 * * * *", &["--time-zone", "UTC"]);
    let id = s["id"].as_str().unwrap().to_string();
    server.signal(libc::SIGTERM);
    server.wait_exit(Duration::from_secs(60));
    // The server was "down" for the last five hours: the last slot it
    // handled was five hours before this hour's. Exactly five slots are
    // missed, unless the hour turns while the test runs: start clear of it.
    const HOUR: i64 = 3600 * 1000;
    let to_next_hour = HOUR - common::now_ms().rem_euclid(HOUR);
    if to_next_hour < 120_000 {
        std::thread::sleep(Duration::from_millis(to_next_hour as u64 + 1000));
    }
    let this_hour = common::now_ms().div_euclid(HOUR) * HOUR;
    let db = rusqlite::Connection::open(env.home.join("catalog.sqlite")).unwrap();
    db.execute(
        "UPDATE schedules SET last_slot = ?1 WHERE id = ?2",
        rusqlite::params![this_hour - 5 * HOUR, id],
    )
    .unwrap();
    drop(db);
    let server = Server::start(&env.home);
    wait_for("the catch-up run", Duration::from_secs(60), || {
        runs_of(&env.home, &id).iter().any(finished)
    });
    std::thread::sleep(Duration::from_secs(3));
    let runs = runs_of(&env.home, &id);
    assert_eq!(runs.len(), 1, "one catch-up run, not one per missed slot: {runs:?}");
    assert_eq!(runs[0]["status"], "succeeded");
    let s = schedule(&env.home, &id);
    assert_eq!(
        s["skipped_runs"].as_u64(),
        Some(4),
        "5 slots missed: 1 run, 4 skipped: {s}"
    );
    server.stop();
}

#[test]
fn disabled_schedules_do_not_fire_and_enabling_does_not_catch_up() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let (_src, _wim, s) = scheduled(&env, "disabled", "d.wim", "* * * * * *", &["--disabled"]);
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["enabled"], false);
    assert!(s["next_run_at"].is_null(), "{s}");
    std::thread::sleep(Duration::from_secs(6));
    assert!(runs_of(&env.home, &id).is_empty(), "a disabled schedule fired");
    cli_ok(&env.home, &[os("schedule"), os("enable"), os(&id)]);
    wait_for("a run after enabling", Duration::from_secs(30), || {
        !runs_of(&env.home, &id).is_empty()
    });
    cli_ok(&env.home, &[os("schedule"), os("disable"), os(&id)]);
    // Catching up the 6 paused seconds would count 5 or more skipped slots.
    // A slow machine may skip a slot or two of its own: the first run can
    // outlast a one-second slot, and a tick can span two.
    let skipped = schedule(&env.home, &id)["skipped_runs"].as_u64().unwrap();
    assert!(skipped <= 2, "the disabled time was counted as {skipped} skipped slots");
    // run-now works whatever the slots say; delete keeps the backups.
    let r = cli_json(&env.home, &[os("schedule"), os("run-now"), os(&id)]);
    let uuid = r["backup_uuid"].as_str().unwrap().to_string();
    let b = wait_final(&env.home, &uuid);
    assert_eq!(b["status"], "succeeded", "{b}");
    assert_eq!(b["schedule_id"], id.as_str());
    cli_ok(&env.home, &[os("schedule"), os("delete"), os(&id)]);
    cli_code(&env.home, &[os("schedule"), os("show"), os(&id)], 4);
    assert_eq!(show(&env.home, &uuid)["status"], "succeeded");
    server.stop();
}

#[test]
fn retention_after_each_run_and_forget_on_demand_with_a_dry_run_that_changes_nothing() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let (src, wim, s) = scheduled(&env, "retention", "r.wim", "* * * * * *", &["--keep-last", "2"]);
    let id = s["id"].as_str().unwrap().to_string();
    let mut n = 0;
    // Retention removes the older runs' records: count every run seen.
    let mut seen = std::collections::HashSet::new();
    wait_for("five scheduled runs", Duration::from_secs(90), || {
        // A new file now and then, so snapshots differ.
        n += 1;
        fs::write(src.join(format!("run{n}.txt")), format!("{n}\n")).unwrap();
        for b in runs_of(&env.home, &id) {
            if b["status"] == "succeeded" {
                seen.insert(b["uuid"].as_str().unwrap().to_string());
            }
        }
        seen.len() >= 5
    });
    cli_ok(&env.home, &[os("schedule"), os("disable"), os(&id)]);
    wait_for("the last run and its retention", Duration::from_secs(60), || {
        let runs = runs_of(&env.home, &id);
        runs.iter().all(finished) && runs.iter().filter(|b| b["status"] == "succeeded").count() <= 2
    });
    let kept: Vec<Value> = runs_of(&env.home, &id)
        .into_iter()
        .filter(|b| b["status"] == "succeeded")
        .collect();
    assert_eq!(kept.len(), 2, "keep-last 2: {kept:?}");
    let info: Value = serde_json::from_str(
        common::wg(&[os("archive"), os("info"), wim.as_os_str(), os("--json")])
            .stdout
            .trim(),
    )
    .unwrap();
    assert_eq!(info["image_count"], 2, "{info}");
    wimlib_verify(&wim);
    for b in &kept {
        let out = env.path(&format!("out-{}", b["uuid"].as_str().unwrap()));
        cli_ok(
            &env.home,
            &[
                os("restore"),
                os(b["uuid"].as_str().unwrap()),
                os("--target"),
                out.as_os_str(),
            ],
        );
        assert!(out.join("a.txt").is_file());
    }

    // forget --dry-run: every snapshot with its verdict and reason, nothing changed.
    let before = fs::read(&wim).unwrap();
    let keep_last_1 = |extra: &[&std::ffi::OsStr]| {
        let mut args = vec![
            os("forget"),
            os("--archive"),
            wim.as_os_str(),
            os("--keep-last"),
            os("1"),
        ];
        args.extend_from_slice(extra);
        cli_json(&env.home, &args)
    };
    let d = keep_last_1(&[os("--dry-run")]);
    let decisions = d["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2, "{d}");
    assert_eq!(decisions[0]["action"], "keep");
    assert!(decisions[0]["reasons"].to_string().contains("last"), "{d}");
    assert_eq!(decisions[1]["action"], "remove");
    assert_eq!(fs::read(&wim).unwrap(), before, "a dry run changed the archive");
    assert_eq!(
        runs_of(&env.home, &id)
            .iter()
            .filter(|b| b["status"] == "succeeded")
            .count(),
        2
    );
    // For real, by schedule (its archive and source).
    let d = cli_json(
        &env.home,
        &[os("forget"), os("--schedule"), os(&id), os("--keep-last"), os("1")],
    );
    assert_eq!(d["removed"], 1, "{d}");
    wimlib_verify(&wim);
    // The removal was soft (under optimizeAbove): stats shows the space as reclaimable.
    let stats = cli_json(&env.home, &[os("stats")]);
    let this = stats["archive_details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["archive"] == wim.to_str().unwrap())
        .unwrap_or_else(|| panic!("{wim:?} missing from stats: {stats}"))
        .clone();
    assert_eq!(this["snapshots"], 1, "{this}");
    assert_eq!(this["bytes"], fs::metadata(&wim).unwrap().len(), "{this}");
    let reclaimable = this["reclaimable_bytes"].as_u64().unwrap();
    assert!(
        reclaimable > 0 && reclaimable < this["bytes"].as_u64().unwrap(),
        "{this}"
    );
    // No rule at all is refused rather than removing everything.
    let out = cli_code(&env.home, &[os("forget"), os("--archive"), wim.as_os_str()], 2);
    assert!(out.stderr.contains("keep"), "{}", out.describe());
    // A mistyped archive is not found, not "0 of 0 removed".
    let typo = env.path("no-such.wim");
    for archive in [
        vec![os("--archive"), typo.as_os_str()],
        vec![os("--archive"), os("nosuch"), os("--plugin"), os("s3-upload")],
    ] {
        let mut a = vec![os("forget")];
        a.extend(archive);
        a.extend([os("--keep-last"), os("1")]);
        let out = cli_code(&env.home, &a, 4);
        assert!(out.stderr.contains("no "), "{}", out.describe());
    }
    // Another source backed up into the archive twice: each source is
    // ruled apart, so `--keep-last 1` keeps the newest of each (the
    // schedule's one snapshot too, though the other source's are newer).
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    fs::write(other.join("o.txt"), b"other\n").unwrap();
    let o1 = uuid_of(&backup(&env.home, &other, &wim, &[]));
    let o2 = uuid_of(&backup(&env.home, &other, &wim, &[]));
    let d = keep_last_1(&[]);
    let verdict = |u: &str| {
        d["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["backup_uuid"] == u)
            .map(|x| x["action"].clone())
    };
    assert_eq!(d["removed"], 1, "{d}");
    assert_eq!(verdict(&o1), Some("remove".into()), "{d}");
    assert_eq!(verdict(&o2), Some("keep".into()), "{d}");
    let scheduled: Vec<&Value> = d["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["source"] == src.to_str().unwrap())
        .collect();
    assert_eq!(scheduled.len(), 1, "{d}");
    assert_eq!(scheduled[0]["action"], "keep", "{d}");
    wimlib_verify(&wim);
    assert_eq!(common::wimlib_image_count(&wim), 2);
    server.stop();
}

#[test]
fn kill_9_during_a_scheduled_run_leaves_it_interrupted_and_the_next_slot_runs() {
    let env = Env::new();
    // Runs wait in their pre-hook until the gate file exists: the kill
    // lands mid-run however slow the machine is. (At most 5 minutes: the
    // hook the kill orphans must not outlive a failed test for long.)
    let gate = env.path("gate");
    env.write_config(&format!(
        "appSecret: sched-test\nhooks:\n  pre:\n    - {{ command: [\"/bin/sh\", \"-c\", \"i=0; while [ ! -e '{}' ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done\"], timeout: 300 }}\n",
        gate.display()
    ));
    let server = Server::start(&env.home);
    let (_src, _wim, s) = scheduled(&env, "kill", "k.wim", "*/2 * * * * *", &[]);
    let id = s["id"].as_str().unwrap().to_string();
    wait_for("a run in progress", Duration::from_secs(30), || {
        runs_of(&env.home, &id).iter().any(|b| b["status"] == "running")
    });
    server.kill9();
    let server = Server::start(&env.home);
    fs::write(&gate, b"").unwrap();
    wait_for("a run after the restart", Duration::from_secs(60), || {
        runs_of(&env.home, &id).iter().any(|b| b["status"] == "succeeded")
    });
    cli_ok(&env.home, &[os("schedule"), os("disable"), os(&id)]);
    let runs = runs_of(&env.home, &id);
    assert_eq!(runs[0]["status"], "interrupted", "{runs:?}");
    server.stop();
}

#[test]
fn bad_expressions_zones_and_config_are_named() {
    let env = Env::new();
    let server = Server::start(&env.home);
    let src = env.path("src");
    small_tree(&src, "bad");
    let dest = env.path("b.wim");
    for (cron, zone, word) in [
        ("61 * * * *", "", "61"),
        ("* * *", "", "* * *"),
        ("0 3 * * *", "Mars/Olympus", "Mars/Olympus"),
    ] {
        let mut a = vec![
            os("schedule"),
            os("create"),
            os("--cron"),
            os(cron),
            os("--source"),
            src.as_os_str(),
            os("--destination"),
            dest.as_os_str(),
        ];
        if !zone.is_empty() {
            a.push(os("--time-zone"));
            a.push(os(zone));
        }
        let out = cli_code(&env.home, &a, 2);
        assert!(
            out.stderr.contains(word),
            "the error should name {word:?}:\n{}",
            out.describe()
        );
    }
    let out = cli_code(
        &env.home,
        &[
            os("schedule"),
            os("create"),
            os("--cron"),
            os("0 3 * * *"),
            os("--source"),
            src.as_os_str(),
            os("--destination"),
            dest.as_os_str(),
            os("--keep-within"),
            os("soon"),
        ],
        2,
    );
    assert!(out.stderr.contains("soon"), "{}", out.describe());
    server.stop();

    // Declared in config.yaml: reconciled at start, read-only through the API.
    let env = Env::new();
    env.write_config(&format!(
        "appSecret: sched-test\nschedules:\n  nightly:\n    cron: \"30 2 * * *\"\n    timeZone: Europe/Berlin\n    \
         source: {}\n    destination: {}\n    retention: {{ keepDaily: 7 }}\n",
        src.display(),
        dest.display()
    ));
    let server = Server::start(&env.home);
    let all = cli_json(&env.home, &[os("schedule"), os("list")]);
    let s = &all.as_array().unwrap()[0];
    assert_eq!(
        (s["name"].as_str(), s["origin"].as_str()),
        (Some("nightly"), Some("config")),
        "{s}"
    );
    assert_eq!(s["retention"]["keep_daily"], 7);
    let out = cli_code(
        &env.home,
        &[os("schedule"), os("disable"), os(s["id"].as_str().unwrap())],
        7,
    );
    assert!(out.stderr.contains("config.yaml"), "{}", out.describe());
    server.stop();
    // A bad one stops the server at start, naming the key.
    env.write_config(&format!(
        "appSecret: sched-test\nschedules:\n  broken:\n    cron: \"every day\"\n    source: {}\n    destination: {}\n",
        src.display(),
        dest.display()
    ));
    let out = common::run_with_timeout(
        &wg_bin(),
        &[os("server"), os("--home"), env.home.as_os_str(), os("--port"), os("0")],
        Duration::from_secs(60),
    );
    assert!(!out.ok());
    assert!(out.stderr.contains("schedules.broken"), "{}", out.describe());
}
