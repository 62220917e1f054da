//! Issue 9: a soak. Sixteen CLI clients for a while against one server,
//! mixing backups, restores, browses, diffs, verifies and deletes, with a
//! metadata bomb and a damaged archive in the catalog. Afterwards nothing is
//! lost (every snapshot left restores bit-exactly and every archive passes
//! wimlib's verify), the catalog is consistent (SQLite's integrity check;
//! every recorded snapshot is in its archive and every image is recorded)
//! and the server's memory stayed bounded.
//!
//! `WIMGUARD_SOAK_SECONDS` sets the length (default 20; the soak is
//! 120). Prints the counts and the server's peak RSS.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{self, Out, Rng};
use crate::harness::*;

const CLIENTS: usize = 16;
/// Writers: client i < WRITERS owns source i and backs it up into archive i % ARCHIVES.
const WRITERS: usize = 4;
const ARCHIVES: usize = 3;

/// Relative path → what it holds (file bytes, or "dir").
type Contents = BTreeMap<String, Vec<u8>>;

fn contents(root: &Path) -> Contents {
    let mut out = Contents::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(rel, b"dir".to_vec());
                stack.push(p);
            } else {
                out.insert(rel, fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Changes a few files of a source: new, rewritten, removed.
fn mutate(src: &Path, rng: &mut Rng, round: u64) {
    fs::create_dir_all(src.join("d")).unwrap();
    for _ in 0..3 {
        let name = format!("d/f{}.bin", rng.below(12));
        let size = 1000 + rng.below(200_000) as usize;
        fs::write(src.join(name), rng.bytes(size)).unwrap();
    }
    fs::write(src.join(format!("r{round}.txt")), format!("round {round}\n").repeat(50)).unwrap();
    if round >= 3 {
        let _ = fs::remove_file(src.join(format!("r{}.txt", round - 3)));
    }
}

#[derive(Default)]
struct Ledger {
    /// Snapshots that should exist, with what they hold.
    live: HashMap<String, Arc<Contents>>,
    /// Uuids of the two hostile snapshots.
    hostile: Vec<String>,
    /// Snapshots a client is deleting right now.
    deleting: std::collections::HashSet<String>,
}

#[derive(Default)]
struct Counts {
    backups: AtomicU64,
    conflicts: AtomicU64,
    restores: AtomicU64,
    browses: AtomicU64,
    diffs: AtomicU64,
    verifies: AtomicU64,
    deletes: AtomicU64,
    hostile_refusals: AtomicU64,
    raced: AtomicU64,
}

fn pick<'a>(rng: &mut Rng, v: &'a [String]) -> Option<&'a String> {
    (!v.is_empty()).then(|| &v[rng.below(v.len() as u64) as usize])
}

#[test]
fn sixteen_clients_mixing_everything_lose_nothing() {
    let seconds: u64 = std::env::var("WIMGUARD_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let env = Env::new();
    env.write_config("appSecret: soak-secret\nservice:\n  server:\n    metadataMemoryMib: 128\n");
    let server = Server::start(&env.home);
    let home = env.home.clone();
    let archives: Vec<PathBuf> = (0..ARCHIVES).map(|i| env.path(&format!("a{i}.wim"))).collect();
    let ledger = Arc::new(Mutex::new(Ledger::default()));

    // The hostile ones: a metadata bomb (more than the whole budget) and a
    // damaged archive, both in the catalog.
    let seed_src = env.path("seed");
    small_tree(&seed_src, "seed");
    let bomb = env.path("bomb.wim");
    let damaged = env.path("damaged.wim");
    let u_bomb = uuid_of(&backup(&home, &seed_src, &bomb, &[]));
    let u_damaged = uuid_of(&backup(&home, &seed_src, &damaged, &[]));
    crate::bombs::write_image(&bomb, &u_bomb, &crate::bombs::wide_tree(240_000));
    // Damage the image's metadata, so every use of it fails the same way.
    let meta = wimguard::wim::WimArchive::open(&damaged, &wimguard::wim::codecs::StandardCodecs)
        .unwrap()
        .metadata[0]
        .reshdr;
    let mut bytes = fs::read(&damaged).unwrap();
    let mid = (meta.offset + meta.size_in_wim / 2) as usize;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0x5A;
    }
    fs::write(&damaged, bytes).unwrap();
    ledger.lock().unwrap().hostile = vec![u_bomb.clone(), u_damaged.clone()];

    let counts = Arc::new(Counts::default());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (home, ledger, counts, archives) = (home.clone(), ledger.clone(), counts.clone(), archives.clone());
            let scratch = env.path(&format!("client{id}"));
            std::thread::spawn(move || {
                let mut rng = Rng::new(1000 + id as u64);
                fs::create_dir_all(&scratch).unwrap();
                let src = scratch.join("src");
                let mut round = 0;
                while Instant::now() < deadline {
                    if id < WRITERS {
                        round += 1;
                        mutate(&src, &mut rng, round);
                        let expected = Arc::new(contents(&src));
                        let wim = &archives[id % ARCHIVES];
                        let mut a = backup_args(&src, wim, &[]);
                        a.push(os("--json"));
                        let out = cli(&home, &a);
                        match out.code() {
                            Some(0) => {
                                let b = last_json(&out);
                                assert_eq!(b["status"], "succeeded", "{b}");
                                ledger.lock().unwrap().live.insert(uuid_of(&b), expected);
                                counts.backups.fetch_add(1, Ordering::Relaxed);
                            }
                            // Another writer or a delete holds the archive.
                            Some(7) => {
                                counts.conflicts.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => panic!("backup failed:\n{}", out.describe()),
                        }
                        continue;
                    }
                    let (snapshot, hostile) = {
                        let l = ledger.lock().unwrap();
                        let live: Vec<String> = l.live.keys().cloned().collect();
                        (pick(&mut rng, &live).cloned(), l.hostile.clone())
                    };
                    let roll = rng.below(100);
                    if roll < 10 {
                        // A hostile snapshot: refused cleanly, never a crash.
                        let u = pick(&mut rng, &hostile).unwrap();
                        let target = scratch.join(format!("h{}", rng.next_u64()));
                        let args: Vec<&std::ffi::OsStr> = if rng.below(2) == 0 {
                            vec![os("snapshots"), os("browse"), os(u)]
                        } else {
                            vec![os("restore"), os(u), os("--target"), target.as_os_str()]
                        };
                        let out = cli(&home, &args);
                        assert!(matches!(out.code(), Some(1) | Some(3)), "{}", out.describe());
                        counts.hostile_refusals.fetch_add(1, Ordering::Relaxed);
                        let _ = fs::remove_dir_all(&target);
                        continue;
                    }
                    let Some(u) = snapshot else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    // A snapshot may be deleted by another client meanwhile:
                    // then NOT_FOUND (4) is the only acceptable failure.
                    let gone = |ledger: &Mutex<Ledger>| {
                        let l = ledger.lock().unwrap();
                        !l.live.contains_key(&u) || l.deleting.contains(&u)
                    };
                    let accept = |out: &Out, counts: &Counts| {
                        if out.ok() {
                            return true;
                        }
                        assert!(out.code() == Some(4) && gone(&ledger), "{}", out.describe());
                        counts.raced.fetch_add(1, Ordering::Relaxed);
                        false
                    };
                    match roll {
                        10..=44 => {
                            let target = scratch.join(format!("r{}", rng.next_u64()));
                            let out = cli(&home, &[os("restore"), os(&u), os("--target"), target.as_os_str()]);
                            if accept(&out, &counts) {
                                let want = ledger.lock().unwrap().live.get(&u).cloned();
                                if let Some(want) = want {
                                    assert!(*want == contents(&target), "snapshot {u} restored different contents");
                                }
                                counts.restores.fetch_add(1, Ordering::Relaxed);
                            }
                            let _ = fs::remove_dir_all(&target);
                        }
                        45..=69 => {
                            let out = cli(&home, &[os("snapshots"), os("browse"), os(&u), os("d")]);
                            if accept(&out, &counts) {
                                counts.browses.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        70..=79 => {
                            let other = {
                                let l = ledger.lock().unwrap();
                                let live: Vec<String> = l.live.keys().cloned().collect();
                                pick(&mut rng, &live).cloned().unwrap()
                            };
                            let out = cli(&home, &[os("snapshots"), os("diff"), os(&other), os(&u)]);
                            if out.ok() || (out.code() == Some(4)) {
                                counts.diffs.fetch_add(1, Ordering::Relaxed);
                            } else {
                                panic!("{}", out.describe());
                            }
                        }
                        80..=91 => {
                            let out = cli(&home, &[os("snapshots"), os("verify"), os(&u)]);
                            if accept(&out, &counts) {
                                counts.verifies.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => {
                            // Delete, keeping at least a few snapshots alive.
                            {
                                let mut l = ledger.lock().unwrap();
                                if l.live.len() < 6 || !l.deleting.insert(u.clone()) {
                                    continue;
                                }
                            }
                            let out = cli(&home, &[os("backups"), os("delete"), os(&u)]);
                            let mut l = ledger.lock().unwrap();
                            l.deleting.remove(&u);
                            match out.code() {
                                Some(0) => {
                                    l.live.remove(&u);
                                    counts.deletes.fetch_add(1, Ordering::Relaxed);
                                }
                                // Busy archive or deleted by another client.
                                Some(7) => {
                                    counts.conflicts.fetch_add(1, Ordering::Relaxed);
                                }
                                Some(4) if !l.live.contains_key(&u) => {
                                    counts.raced.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => panic!("delete failed:\n{}", out.describe()),
                            }
                        }
                    }
                }
            })
        })
        .collect();
    let mut failed = Vec::new();
    for (i, w) in workers.into_iter().enumerate() {
        if let Err(p) = w.join() {
            failed.push(format!(
                "client {i}: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "clients failed:\n{}\nserver log:\n{}",
        failed.join("\n"),
        server.log_text()
    );
    let rss = peak_rss_mib(server.pid);

    // Nothing lost: every live snapshot restores bit-exactly.
    let live = ledger.lock().unwrap().live.clone();
    for (u, want) in &live {
        let target = env.path(&format!("final-{u}"));
        cli_ok(&home, &[os("restore"), os(u), os("--target"), target.as_os_str()]);
        assert!(**want == contents(&target), "snapshot {u} lost or changed");
        fs::remove_dir_all(&target).unwrap();
    }
    // Every archive is sound for wimlib and holds exactly the live images.
    for wim in &archives {
        if !wim.exists() {
            continue;
        }
        common::wimlib_verify(wim, false);
        let arch = wimguard::wim::WimArchive::open(wim, &wimguard::wim::codecs::StandardCodecs).unwrap();
        for image in arch.images() {
            assert!(
                live.contains_key(&image.backup_uuid),
                "{} holds image {} of backup {:?}, which the catalog does not know as live",
                wim.display(),
                image.index,
                image.backup_uuid
            );
        }
    }
    let backups = list_all(&home);
    for b in &backups {
        let u = b["uuid"].as_str().unwrap();
        if b["status"] == "succeeded" && !live.contains_key(u) && u != u_bomb && u != u_damaged {
            panic!("the catalog lists succeeded backup {u}, which was deleted or never made: {b}");
        }
    }
    for u in live.keys() {
        assert!(
            backups.iter().any(|b| b["uuid"] == u.as_str()),
            "live snapshot {u} is missing from the catalog"
        );
    }
    server.stop();
    let db = rusqlite::Connection::open(env.home.join("catalog.sqlite")).unwrap();
    let check: String = db.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let fk: i64 = db
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(fk, 0, "foreign keys broken");
    eprintln!(
        "soak {seconds}s, {CLIENTS} clients: {} backups, {} restores, {} browses, {} diffs, {} verifies, {} deletes, \
         {} hostile refusals, {} conflicts, {} races with deletes; {} snapshots left; server peak RSS {rss} MiB",
        counts.backups.load(Ordering::Relaxed),
        counts.restores.load(Ordering::Relaxed),
        counts.browses.load(Ordering::Relaxed),
        counts.diffs.load(Ordering::Relaxed),
        counts.verifies.load(Ordering::Relaxed),
        counts.deletes.load(Ordering::Relaxed),
        counts.hostile_refusals.load(Ordering::Relaxed),
        counts.conflicts.load(Ordering::Relaxed),
        counts.raced.load(Ordering::Relaxed),
        live.len(),
    );
    assert!(counts.backups.load(Ordering::Relaxed) > 0 && counts.restores.load(Ordering::Relaxed) > 0);
    assert!(
        rss < 1024,
        "the server peaked at {rss} MiB with a 128 MiB metadata budget"
    );
}

/// Every backup of the catalog (all pages).
fn list_all(home: &Path) -> Vec<serde_json::Value> {
    let v = cli_json(home, &[os("backups"), os("list"), os("--limit"), os("1000")]);
    match v {
        serde_json::Value::Array(v) => v,
        other => panic!("backups list --json is not an array: {other}"),
    }
}
