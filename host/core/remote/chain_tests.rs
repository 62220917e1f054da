//! The remote core end to end over a directory standing in for the store:
//! a full object then a delta, restores of both (whole and one file, the
//! latter by a handful of ranged reads), and a delete's marker.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::dir_store::DirStore;
use super::{ObjectStore, RemoteArchive};
use crate::apply::ApplyOptions;
use crate::capture::CaptureOptions;
use crate::catalog::{now_ms, BackupRecord, Status};
use crate::jobs::tests::jobs_for_tests;
use crate::wim::Compression;

fn tree_bytes(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for e in ignore::WalkBuilder::new(root).hidden(false).build() {
        let e = e.unwrap();
        if e.file_type().is_some_and(|t| t.is_file()) {
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            out.push((rel, fs::read(e.path()).unwrap()));
        }
    }
    out.sort();
    out
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A job runner with its home under `dir` and a [`DirStore`] in
/// `dir/bucket` registered as the destination plugin `dirstore`.
fn jobs_with_dir_store(dir: &Path) -> (Arc<crate::jobs::Jobs>, Arc<DirStore>) {
    let home = dir.join("home");
    fs::create_dir_all(&home).unwrap();
    let jobs = jobs_for_tests(&home);
    let store = Arc::new(DirStore::new(&dir.join("bucket")));
    jobs.test_stores
        .lock()
        .unwrap()
        .insert("dirstore".into(), store.clone() as Arc<dyn ObjectStore>);
    (jobs, store)
}

/// Backs `src` up into `archive` as snapshot number `round` (0-based);
/// returns its uuid and the size of the object it added.
fn back_up(
    jobs: &crate::jobs::Jobs,
    store: &Arc<DirStore>,
    archive: &RemoteArchive,
    src: &Path,
    round: i64,
) -> (String, u64) {
    let rec = back_up_record(jobs, store, archive, src, round);
    let key = store.path(&archive.object_key(round as u32 + 1));
    (rec.uuid, fs::metadata(&key).unwrap().len())
}

/// [`back_up`], giving the backup's record as the capture left it.
fn back_up_record(
    jobs: &crate::jobs::Jobs,
    store: &Arc<DirStore>,
    archive: &RemoteArchive,
    src: &Path,
    round: i64,
) -> BackupRecord {
    let uuid = format!("00000000-0000-0000-0000-{round:012}");
    let mut rec = BackupRecord {
        uuid: uuid.clone(),
        status: Status::Running,
        phase: crate::catalog::Phase::Scanning,
        source: src.display().to_string(),
        destination: archive.id(),
        compression: crate::catalog::CodecName::Lzx,
        name: format!("r{round}"),
        created_at: now_ms() + round,
        ..BackupRecord::default()
    };
    jobs.catalog().insert_backup(&rec).unwrap();
    let target = super::backup::Target {
        catalog: jobs.catalog(),
        memory: jobs.memory(),
        store: store.clone(),
        archive: archive.clone(),
    };
    let opts = CaptureOptions {
        name: rec.name.clone(),
        backup_uuid: uuid.clone(),
        ..CaptureOptions::default()
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let uploaded = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let up = uploaded.clone();
    super::backup::capture(
        &target,
        &mut rec,
        src,
        Compression::Lzx,
        None,
        32768,
        &opts,
        &cancel,
        &mut |_| {},
        Box::new(move |n| up.store(n, Ordering::Relaxed)),
        &|| {},
    )
    .unwrap();
    let key = store.path(&archive.object_key(round as u32 + 1));
    let size = fs::metadata(&key).unwrap().len();
    assert_eq!(uploaded.load(Ordering::Relaxed), size, "every byte sent once");
    rec
}

/// Two sources in one remote archive: a backup compares with its own
/// source's newest snapshot, not the other source's newer one.
#[test]
fn each_source_compares_with_its_own_last_snapshot() {
    let t = tempfile::tempdir().unwrap();
    let (jobs, store) = jobs_with_dir_store(t.path());
    let archive = RemoteArchive::new("dirstore", "shared").unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for (dir, seed) in [(&a, 1), (&b, 2)] {
        fs::create_dir_all(dir).unwrap();
        for i in 0..10 {
            fs::write(dir.join(format!("f{i}")), noise(5000, seed * 100 + i)).unwrap();
        }
    }
    back_up_record(&jobs, &store, &archive, &a, 0);
    back_up_record(&jobs, &store, &archive, &b, 1);
    let again = back_up_record(&jobs, &store, &archive, &a, 2);
    assert_eq!((again.files_unchanged, again.bytes_read), (10, 0), "{again:?}");
}

#[test]
fn full_then_delta_restore_and_delete() {
    let t = tempfile::tempdir().unwrap();
    let (jobs, store) = jobs_with_dir_store(t.path());
    let archive = RemoteArchive::new("dirstore", "nightly").unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("big.bin"), noise(20 << 20, 1)).unwrap();
    fs::write(src.join("sub/small.txt"), b"small file\n").unwrap();
    fs::write(src.join("text.txt"), "text\n".repeat(10_000)).unwrap();

    let mut expected = Vec::new();
    let mut uuids = Vec::new();
    for round in 0..2 {
        if round == 1 {
            fs::write(src.join("new.txt"), b"added later\n").unwrap();
        }
        let (uuid, size) = back_up(&jobs, &store, &archive, &src, round);
        if round == 1 {
            assert!(
                size < 1 << 20,
                "the delta object holds {size} bytes: more than the new file and metadata"
            );
        }
        let rec = jobs.catalog().get_backup(&uuid).unwrap().unwrap();
        assert_eq!(rec.status(), Status::Succeeded);
        expected.push(tree_bytes(&src));
        uuids.push(uuid);
    }
    // Whole restores of both snapshots.
    for (i, uuid) in uuids.iter().enumerate() {
        let rec = jobs.catalog().get_backup(uuid).unwrap().unwrap();
        let out = t.path().join(format!("out{i}"));
        crate::ops::restore(&jobs, &rec, &out, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
        assert!(
            tree_bytes(&out) == expected[i],
            "snapshot {i} restored different contents"
        );
    }
    // One small file of the delta's snapshot: a few ranged reads, a few bytes.
    let before = (
        store.reads.load(Ordering::Relaxed),
        store.read_bytes.load(Ordering::Relaxed),
    );
    let rec = jobs.catalog().get_backup(&uuids[1]).unwrap().unwrap();
    let out = t.path().join("one");
    let opts = ApplyOptions {
        paths: vec!["/sub/small.txt".into()],
        ..ApplyOptions::default()
    };
    crate::ops::restore(&jobs, &rec, &out, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(fs::read(out.join("sub/small.txt")).unwrap(), b"small file\n");
    let reads = store.reads.load(Ordering::Relaxed) - before.0;
    let bytes = store.read_bytes.load(Ordering::Relaxed) - before.1;
    assert!(reads <= 6, "{reads} reads for one small file");
    assert!(bytes < (20 << 20) / 50, "{bytes} bytes read for one small file");

    // Delete: a marker in the store, the image marked removed, the record gone.
    let (_, effect) = crate::ops::delete_backup(&jobs, &uuids[0], false).unwrap();
    assert_eq!(effect, crate::ops::DeleteEffect::MarkedRemoved);
    assert!(t.path().join("bucket").join(archive.removed_key(&uuids[0])).exists());
    assert!(jobs.catalog().get_backup(&uuids[0]).unwrap().is_none());
    assert!(jobs.catalog().remote_image(&uuids[0]).unwrap().unwrap().removed);
    // The other snapshot still restores (it uses blobs of the first object).
    let out = t.path().join("again");
    crate::ops::restore(&jobs, &rec, &out, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
    assert!(tree_bytes(&out) == expected[1]);

    // Consolidate: one full object of the kept snapshot; the old chain and
    // the marker are gone; the snapshot restores from the new object.
    let report = super::manage::consolidate(
        jobs.catalog(),
        &(store.clone() as Arc<dyn ObjectStore>),
        &archive,
        Compression::Lzx,
        crate::wim::codecs::codec_for(Compression::Lzx).unwrap(),
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(
        (report.objects_before, report.images_kept, report.images_dropped),
        (2, 1, 1)
    );
    let bucket = t.path().join("bucket");
    assert!(bucket.join(archive.object_key(3)).exists());
    for gone in [
        archive.object_key(1),
        archive.object_key(2),
        archive.removed_key(&uuids[0]),
    ] {
        assert!(!bucket.join(&gone).exists(), "{gone} was not deleted");
    }
    assert!(report.bytes_after < report.bytes_before);
    let out = t.path().join("consolidated");
    crate::ops::restore(&jobs, &rec, &out, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
    assert!(tree_bytes(&out) == expected[1]);

    // Disaster recovery: a fresh catalog finds the snapshot again, under
    // its uuid, and restores it.
    let home2 = t.path().join("home2");
    fs::create_dir_all(&home2).unwrap();
    let jobs2 = jobs_for_tests(&home2);
    jobs2
        .test_stores
        .lock()
        .unwrap()
        .insert("dirstore".into(), store.clone() as Arc<dyn ObjectStore>);
    // An archive a job holds is left alone (its rows would be replaced
    // with what was listed before the job ended), and said so.
    let key = std::path::PathBuf::from(archive.id());
    jobs2.lock_archive(&key, "backup").unwrap();
    let plugins = ["dirstore".to_string()];
    let found = crate::ops::rebuild_catalog(&jobs2, &plugins, &[], &mut |_| {}).unwrap();
    assert_eq!((found.archives, found.added), (0, 0), "{found:?}");
    assert!(
        found.skipped.iter().any(|s| s.contains("busy (job backup)")),
        "{found:?}"
    );
    assert!(jobs2.catalog().get_backup(&uuids[1]).unwrap().is_none());
    jobs2.unlock_archive(&key);
    let found = crate::ops::rebuild_catalog(&jobs2, &plugins, &[], &mut |_| {}).unwrap();
    assert_eq!((found.archives, found.snapshots, found.added), (1, 1, 1), "{found:?}");
    // The rebuild gave the archive back.
    jobs2.lock_archive(&key, "backup").unwrap();
    jobs2.unlock_archive(&key);
    let rec2 = jobs2
        .catalog()
        .get_backup(&uuids[1])
        .unwrap()
        .expect("the snapshot is back");
    assert_eq!(rec2.source, src.display().to_string());
    assert_eq!(rec2.destination, archive.id());
    let out = t.path().join("recovered");
    crate::ops::restore(&jobs2, &rec2, &out, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
    assert!(tree_bytes(&out) == expected[1]);
    // A backup after the rebuild is a delta of the recovered chain.
    assert_eq!(
        super::backup::chain_codec(jobs2.catalog(), &archive).unwrap(),
        Some((crate::catalog::CodecName::Lzx, 32768))
    );
}

/// Scheduled retention removes snapshots of a remote archive and, past
/// `optimizeAbove`, consolidates it in the same job: it holds the archive
/// once (taking it again for the consolidation found it busy with itself,
/// and every such retention failed).
#[test]
fn retention_consolidates_the_remote_archive_it_holds() {
    let t = tempfile::tempdir().unwrap();
    let (jobs, store) = jobs_with_dir_store(t.path());
    let archive = RemoteArchive::new("dirstore", "kept").unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    let mut uuids = Vec::new();
    for round in 0..3 {
        fs::write(
            src.join(format!("f{round}.txt")),
            format!("round {round}\n").repeat(100),
        )
        .unwrap();
        uuids.push(back_up(&jobs, &store, &archive, &src, round).0);
    }
    let expected = tree_bytes(&src);
    let req = crate::forget::ForgetRequest {
        archive: archive.id(),
        rules: crate::catalog::schedules::RetentionSpec {
            keep_last: Some(1),
            ..Default::default()
        },
        optimize_above: Some(0.5),
        ..Default::default()
    };
    let report = crate::forget::forget(&jobs, &req).unwrap();
    assert_eq!(report.removed, 2);
    assert!(report.optimized, "two of three images removed, above 0.5: consolidated");
    // One object of the kept snapshot; the archive is free again.
    assert!(store.path(&archive.object_key(4)).exists());
    for seq in 1..=3 {
        assert!(!store.path(&archive.object_key(seq)).exists(), "object {seq} was kept");
    }
    let rec = jobs.catalog().get_backup(&uuids[2]).unwrap().unwrap();
    let out = t.path().join("out");
    crate::ops::restore(&jobs, &rec, &out, &ApplyOptions::default(), &mut |_, _| {}).unwrap();
    assert!(tree_bytes(&out) == expected);
    crate::ops::consolidate(&jobs, "dirstore", "kept", &mut |_, _| {}).expect("the archive is not left held");
}

/// Consolidation deletes the objects a restore reads: it waits for no
/// reader (refused while one reads), and no reader starts while it runs.
#[test]
fn consolidation_and_readers_of_the_chain_exclude_each_other() {
    let t = tempfile::tempdir().unwrap();
    let (jobs, store) = jobs_with_dir_store(t.path());
    let archive = RemoteArchive::new("dirstore", "shared").unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), noise(5000, 3)).unwrap();
    back_up(&jobs, &store, &archive, &src, 0);
    let key = std::path::PathBuf::from(archive.id());

    let reading = jobs.begin_reading(&key).unwrap();
    let e = crate::ops::consolidate(&jobs, "dirstore", "shared", &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(&e, crate::error::CoreError::Conflict(m) if m.contains("being read")),
        "{e}"
    );
    drop(reading);
    assert_eq!(jobs.readers(&key), 0);

    jobs.lock_archive(&key, crate::jobs::CONSOLIDATION).unwrap();
    assert!(matches!(
        jobs.begin_reading(&key),
        Err(crate::error::CoreError::Conflict(_))
    ));
    jobs.unlock_archive(&key);
    crate::ops::consolidate(&jobs, "dirstore", "shared", &mut |_, _| {}).unwrap();
}
