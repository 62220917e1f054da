//! Checking a remote archive against its store, as restic's `check` does
//! for a repository: the catalog says which objects hold the chain, which
//! object holds every blob and where each snapshot's image lives; the store
//! is the truth. Objects deleted or replaced behind our back (an operator's
//! `rm` in the bucket, a lifecycle rule) make snapshots unrestorable; this
//! names them, and the files whose contents are gone.
//!
//! What it costs: one listing of the archive's keys, and one ranged read of
//! each live snapshot's metadata. `read_data` also reads every blob the
//! catalog places in the chain and checks its SHA-1 (restic's
//! `--read-data`), which downloads the archive.
//!
//! With `repair`, what cannot come back is forgotten so that the catalog
//! and the next backups stop relying on it: objects missing or changed in
//! the store, with the snapshots whose image was in them; snapshots whose
//! metadata is damaged; and blobs that failed their checksum. A read that
//! the store fails (an outage, a refusal) stops the check instead: it says
//! nothing of the archive.
//! The next backup of a source that still has those contents stores them
//! again, which also makes older snapshots that use them whole again.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::source::RemoteSource;
use super::{ObjectStore, RemoteArchive};
use crate::catalog::remote::{ObjectState, RemoteObject};
use crate::catalog::Catalog;
use crate::error::CoreError;
use crate::wim::blob_table::Sha1;
use crate::wim::codecs::{KnownCodec, SharedCodec};
use crate::wim::WimArchive;

/// Most file paths named per damaged snapshot (the count is always given).
pub const FILES_NAMED: usize = 20;

/// What a check does beyond reading the listing and the metadata.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Read every blob and check its SHA-1.
    pub read_data: bool,
    /// Forget in the catalog what is lost (see the module's documentation).
    pub repair: bool,
}

/// One live snapshot that cannot be restored whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DamagedSnapshot {
    pub backup_uuid: String,
    /// What is wrong, in a sentence.
    pub problem: String,
    /// Files whose contents are lost (at most [`FILES_NAMED`]).
    pub files: Vec<String>,
    /// How many files have lost contents.
    pub files_total: u64,
    /// Its image itself is gone (the snapshot cannot be restored at all).
    pub lost: bool,
    /// Removed from the catalog by `repair`.
    pub forgotten: bool,
}

/// The result of [`check`].
#[derive(Debug, Clone, Default)]
pub struct ChainCheck {
    /// Objects the catalog records as the chain's.
    pub objects: u32,
    /// Live snapshots checked.
    pub snapshots: u32,
    /// Keys of recorded objects the store does not have.
    pub missing_objects: Vec<String>,
    /// Recorded objects whose size in the store differs, with both sizes.
    pub changed_objects: Vec<String>,
    /// Chain objects in the store the catalog does not know (written by
    /// another home, or recorded before the catalog was lost).
    pub unknown_objects: Vec<String>,
    /// Blobs read and checked (`read_data`), and their bytes.
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Blobs that failed to read or to match their SHA-1, with the error.
    pub damaged_blobs: Vec<String>,
    /// Blobs `repair` dropped from the catalog.
    pub blobs_dropped: u64,
    /// Snapshots that cannot be restored whole.
    pub damaged: Vec<DamagedSnapshot>,
    /// `repair` ran: lost objects, lost snapshots and damaged blobs are
    /// forgotten.
    pub repaired: bool,
}

impl ChainCheck {
    /// Problems a repair did not settle (all of them without a repair):
    /// while this is not 0, some snapshot cannot be restored whole or the
    /// catalog places data where the store has none.
    pub fn problems_left(&self) -> usize {
        let settled = |n: usize| if self.repaired { 0 } else { n };
        self.damaged.iter().filter(|d| !d.forgotten).count()
            + settled(self.missing_objects.len())
            + settled(self.changed_objects.len())
            + settled(self.damaged_blobs.len())
    }
}

/// Checks remote archive `archive` (see the module's documentation). The
/// caller holds the archive against writers when `opts.repair`, or counts
/// itself as a reader otherwise. `progress` hears (bytes read, bytes to
/// read) while blobs are read.
pub fn check(
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    archive: &RemoteArchive,
    codec: Option<SharedCodec>,
    opts: CheckOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ChainCheck, CoreError> {
    let id = archive.id();
    let all = catalog.remote_objects(&id)?;
    let objects: Vec<&RemoteObject> = all.iter().filter(|o| o.state == ObjectState::Complete).collect();
    if objects.is_empty() {
        return Err(CoreError::NotFound(format!("no remote archive {id} in the catalog")));
    }
    let mut report = ChainCheck {
        objects: objects.len() as u32,
        ..ChainCheck::default()
    };
    let listed = list_chain(store, archive, &all)?;
    for o in &listed.lost {
        match listed.sizes.get(&o.key) {
            None => report.missing_objects.push(o.key.clone()),
            Some(size) => report.changed_objects.push(format!(
                "{}: {size} bytes in {}, {} recorded when it was stored",
                o.key,
                store.name(),
                o.size
            )),
        }
    }
    let gone: HashSet<u32> = listed.lost.iter().map(|o| o.seq).collect();
    for key in listed.sizes.keys() {
        if archive
            .seq_of_key(key)
            .is_some_and(|seq| !all.iter().any(|o| o.seq == seq))
        {
            report.unknown_objects.push(key.clone());
        }
    }
    report.unknown_objects.sort();

    let blobs = catalog.remote_blobs(&id)?;
    let located: HashMap<Sha1, u32> = blobs.iter().map(|b| (b.entry.hash, b.seq)).collect();
    let mut bad_blobs: HashSet<Sha1> = located
        .iter()
        .filter(|(_, seq)| gone.contains(seq))
        .map(|(h, _)| *h)
        .collect();
    let chunk_size = objects[0].chunk_size;
    let sources: HashMap<u32, Arc<RemoteSource>> = objects
        .iter()
        .filter(|o| !gone.contains(&o.seq))
        .map(|o| (o.seq, Arc::new(RemoteSource::new(store.clone(), &o.key, o.size))))
        .collect();
    let mut unreadable: Vec<Sha1> = Vec::new();
    if opts.read_data {
        unreadable = read_blobs(store, &objects, &sources, &blobs, codec.clone(), &mut report, progress)?;
        bad_blobs.extend(unreadable.iter().copied());
    }

    for img in catalog.remote_images(&id)?.into_iter().filter(|i| !i.removed) {
        report.snapshots += 1;
        let key = objects
            .iter()
            .find(|o| o.seq == img.seq)
            .map_or_else(|| archive.object_key(img.seq), |o| o.key.clone());
        let damage = if gone.contains(&img.seq) {
            Some(DamagedSnapshot {
                problem: format!("its image is in {key}, which the store no longer holds as recorded"),
                lost: true,
                ..DamagedSnapshot::default()
            })
        } else if let Some(src) = sources.get(&img.seq) {
            let what = format!("metadata of {} in {key}", img.backup_uuid);
            match crate::wim::archive::load_tree_at(&**src, &img.metadata, codec.as_deref(), chunk_size, &what) {
                Err(e) if is_damage(&e) => Some(DamagedSnapshot {
                    problem: format!("its metadata cannot be read: {e}"),
                    lost: true,
                    ..DamagedSnapshot::default()
                }),
                // The store failed to answer: that says nothing of the
                // archive, and nothing may be forgotten for it.
                Err(e) => return Err(store_failed(e, &what)),
                Ok(tree) => files_without_contents(&tree, &located, &bad_blobs),
            }
        } else {
            Some(DamagedSnapshot {
                problem: format!(
                    "its image is placed in object {} of the chain, which the catalog does not know",
                    img.seq
                ),
                lost: true,
                ..DamagedSnapshot::default()
            })
        };
        if let Some(mut d) = damage {
            d.backup_uuid = img.backup_uuid.clone();
            report.damaged.push(d);
        }
    }

    if opts.repair {
        repair(
            catalog,
            store,
            archive,
            &listed.lost,
            &located,
            &unreadable,
            &mut report,
        )?;
    }
    Ok(report)
}

/// What one listing of a chain's keys says of its recorded objects.
pub struct Listed {
    /// Complete objects the store no longer holds as recorded (missing, or
    /// of another size): their contents cannot be trusted.
    pub lost: Vec<RemoteObject>,
    /// The highest chain number among the keys (0 for none). A new object
    /// numbers past it, whatever the catalog knows: a key is never reused.
    pub highest: u32,
    /// Every key listed, with its size.
    pub sizes: HashMap<String, u64>,
}

/// Lists `archive`'s keys and compares them with the catalog's `objects`
/// (one LIST request per 1000 keys).
pub fn list_chain(
    store: &Arc<dyn ObjectStore>,
    archive: &RemoteArchive,
    objects: &[RemoteObject],
) -> Result<Listed, CoreError> {
    let sizes: HashMap<String, u64> = super::rebuild::list_all(store, &format!("{}/", archive.name))?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    Ok(Listed {
        lost: objects
            .iter()
            .filter(|o| o.state == ObjectState::Complete && sizes.get(&o.key) != Some(&o.size))
            .cloned()
            .collect(),
        highest: sizes.keys().filter_map(|k| archive.seq_of_key(k)).max().unwrap_or(0),
        sizes,
    })
}

/// [`list_chain`] for a writer that can go on without it: a store that
/// refuses to list (a policy without `s3:ListBucket`) is trusted, as it was
/// before chains were listed, with a warning in the log.
pub fn list_chain_or_trust(store: &Arc<dyn ObjectStore>, archive: &RemoteArchive, objects: &[RemoteObject]) -> Listed {
    list_chain(store, archive, objects).unwrap_or_else(|e| {
        tracing::warn!(archive = %archive.id(), "cannot list the archive's objects to check none is lost: {e}");
        Listed {
            lost: Vec::new(),
            highest: 0,
            sizes: HashMap::new(),
        }
    })
}

/// The refusal of work that would rewrite or thin out a chain the store
/// has `lost` part of; `consequence` says what the work would have done,
/// and that it did nothing.
pub fn refuse_lost_chain(archive: &RemoteArchive, store: &str, lost: &[RemoteObject], consequence: &str) -> CoreError {
    let keys: Vec<&str> = lost.iter().map(|o| o.key.as_str()).collect();
    CoreError::DataLoss(format!(
        "{}: {} {} missing from {store} or changed there, so {consequence}. `wimguard archive check {} --plugin \
         {}` names the snapshots affected, and `--repair` forgets what is lost",
        archive.id(),
        keys.join(", "),
        if keys.len() == 1 { "is" } else { "are" },
        archive.name,
        archive.plugin
    ))
}

/// The files of `tree` whose contents are in `bad` or nowhere in the chain.
fn files_without_contents(
    tree: &crate::wim::metadata::ImageTree,
    located: &HashMap<Sha1, u32>,
    bad: &HashSet<Sha1>,
) -> Option<DamagedSnapshot> {
    let mut d = DamagedSnapshot::default();
    let mut unplaced = 0u64;
    for dentry in tree.walk(0) {
        let hashes = tree.inode_of(dentry).blob_hashes();
        let lost = hashes.into_iter().any(|h| {
            let nowhere = !located.contains_key(h);
            unplaced += u64::from(nowhere);
            nowhere || bad.contains(h)
        });
        if lost {
            d.files_total += 1;
            if d.files.len() < FILES_NAMED {
                d.files.push(tree.path_of(dentry));
            }
        }
    }
    if d.files_total == 0 {
        return None;
    }
    d.problem = if unplaced > 0 {
        format!(
            "{} file(s) have contents that are lost or that the catalog places nowhere in the chain",
            d.files_total
        )
    } else {
        format!("{} file(s) have contents that are lost", d.files_total)
    };
    Some(d)
}

/// Reads every blob the catalog places in a present object and checks its
/// SHA-1; returns those that are damaged (they do not decode, or decode to
/// other contents). A read the store fails ends the check with that error:
/// an outage must not pass for damage, which a repair would forget.
fn read_blobs(
    store: &Arc<dyn ObjectStore>,
    objects: &[&RemoteObject],
    sources: &HashMap<u32, Arc<RemoteSource>>,
    blobs: &[crate::catalog::remote::RemoteBlob],
    codec: Option<SharedCodec>,
    report: &mut ChainCheck,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<Sha1>, CoreError> {
    let total: u64 = blobs
        .iter()
        .filter(|b| sources.contains_key(&b.seq))
        .map(|b| b.entry.reshdr.original_size)
        .sum();
    let mut by_object: HashMap<u32, Vec<&crate::catalog::remote::RemoteBlob>> = HashMap::new();
    for b in blobs {
        by_object.entry(b.seq).or_default().push(b);
    }
    let mut failed = Vec::new();
    let mut before = 0u64;
    for o in objects {
        let Some(src) = sources.get(&o.seq) else { continue };
        let name = format!("{}:{}", store.name(), o.key);
        let mine = by_object.remove(&o.seq).unwrap_or_default();
        let bytes: u64 = mine.iter().map(|b| b.entry.reshdr.original_size).sum();
        match WimArchive::from_source(Path::new(&name), src.clone(), &KnownCodec(codec.clone())) {
            Ok(arch) => {
                let hashes = mine.iter().map(|b| b.entry.hash);
                for (hash, e) in arch.check_blobs(hashes, &mut |done, _| progress(before + done, total)) {
                    if !is_damage(&e) {
                        return Err(store_failed(e, &name));
                    }
                    report.damaged_blobs.push(format!("{} in {name}: {e}", hex(&hash)));
                    failed.push(hash);
                }
            }
            Err(e) if is_damage(&e) => {
                for b in &mine {
                    report.damaged_blobs.push(format!(
                        "{} in {name}: the object cannot be opened: {e}",
                        hex(&b.entry.hash)
                    ));
                    failed.push(b.entry.hash);
                }
            }
            Err(e) => return Err(store_failed(e, &name)),
        }
        report.blobs_read += mine.len() as u64;
        report.bytes_read += bytes;
        before += bytes;
        progress(before, total);
    }
    Ok(failed)
}

/// Whether `e` says the archive's bytes are wrong (rather than that they
/// could not be fetched).
fn is_damage(e: &crate::wim::WimError) -> bool {
    use crate::wim::WimError;
    matches!(e, WimError::Corrupt(_) | WimError::Invalid(_))
}

/// A read the store failed, which stops the check (nothing is repaired).
/// Whatever the store said (a key it lists but will not serve, an outage),
/// it is UNAVAILABLE: the check can be run again, and says nothing of the
/// archive, so it must not read as damage.
fn store_failed(e: crate::wim::WimError, what: &str) -> CoreError {
    CoreError::Unavailable(format!(
        "the check stopped, nothing was changed: reading {what} failed, which says nothing of the archive; try \
         again when the store answers: {e}"
    ))
}

/// Forgets what [`check`] found lost: the objects the store no longer
/// holds as written (missing, or another size), with the snapshots whose
/// image was in them (their records too); snapshots whose metadata is
/// damaged; and blobs that failed their checksum. A changed object's key
/// stays taken in the store: backups number past every key they list.
fn repair(
    catalog: &Catalog,
    store: &Arc<dyn ObjectStore>,
    archive: &RemoteArchive,
    lost: &[RemoteObject],
    located: &HashMap<Sha1, u32>,
    unreadable: &[Sha1],
    report: &mut ChainCheck,
) -> Result<(), CoreError> {
    let id = &archive.id();
    // The store remembers first, as a delete does: a catalog rebuilt from
    // it must not bring back what is forgotten here (a removed snapshot, a
    // damaged copy of a blob for later backups to dedupe against).
    for d in report.damaged.iter().filter(|d| d.lost) {
        super::manage::write_marker(store, &archive.removed_key(&d.backup_uuid))?;
    }
    for h in unreadable {
        if let Some(seq) = located.get(h) {
            super::manage::write_marker(store, &archive.damaged_key(*seq, &hex(h)))?;
        }
    }
    for o in lost {
        for uuid in catalog.forget_remote_object(id, o.seq)? {
            if let Some(d) = report.damaged.iter_mut().find(|d| d.backup_uuid == uuid) {
                d.forgotten = true;
            }
        }
    }
    for d in report.damaged.iter_mut().filter(|d| d.lost && !d.forgotten) {
        catalog.forget_remote_snapshot(&d.backup_uuid)?;
        d.forgotten = true;
    }
    if !unreadable.is_empty() {
        report.blobs_dropped = catalog.drop_remote_blobs(id, unreadable)?;
    }
    report.repaired = true;
    Ok(())
}

fn hex(h: &Sha1) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}
