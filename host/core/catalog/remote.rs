//! Remote archives in the catalog: the objects of each chain, where each
//! snapshot's image lives, and which object holds each blob (so that a
//! backup knows what is already stored, and a restore reads exactly the
//! ranges it needs, without listing or downloading anything first).
//!
//! The objects themselves are the truth: `wimguard catalog rebuild` derives
//! all of this again from their blob tables and XML.

use rusqlite::{params, OptionalExtension, Row};

use super::{BackupRecord, Catalog, CodecName, Result};
use crate::wim::blob_table::{BlobEntry, Sha1};
use crate::wim::reshdr::ResHdr;

/// State of an object of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectState {
    /// Being uploaded by a backup (or left so by a crash: aborted at start).
    Uploading,
    /// Stored and recorded; its images are snapshots.
    Complete,
    /// Replaced by a consolidated object; to be deleted from the store.
    Obsolete,
}

impl ObjectState {
    const ALL: [ObjectState; 3] = [ObjectState::Uploading, ObjectState::Complete, ObjectState::Obsolete];

    pub fn as_str(self) -> &'static str {
        match self {
            ObjectState::Uploading => "uploading",
            ObjectState::Complete => "complete",
            ObjectState::Obsolete => "obsolete",
        }
    }

    fn from_name(s: &str) -> Option<ObjectState> {
        ObjectState::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// One object of a remote archive's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteObject {
    /// The archive: `PLUGIN:NAME`, as backups record their destination.
    pub archive: String,
    /// Its number in the chain (the key's `000001`).
    pub seq: u32,
    /// Key relative to the plugin's prefix: `NAME/000001.wim`.
    pub key: String,
    pub state: ObjectState,
    /// The plugin's upload token while uploading (to abort after a crash).
    pub upload_token: String,
    /// The backup (or consolidation job) writing it.
    pub backup_uuid: String,
    /// Codec id and chunk size: every object of a chain shares them.
    pub compression: CodecName,
    pub chunk_size: u32,
    pub size: u64,
    pub etag: String,
    /// SHA-256 as S3 composite checksums define it: of the object for a
    /// one-part upload, else of the parts' SHA-256s, with `-N` appended.
    pub sha256: String,
    pub created_at: i64,
}

/// Where a remote snapshot's image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteImage {
    pub backup_uuid: String,
    pub archive: String,
    pub seq: u32,
    /// 1-based index of the image inside its object.
    pub image_index: u32,
    /// The image's metadata resource in that object.
    pub metadata: BlobEntry,
    /// Deleted by the user; its blobs go at the next consolidation.
    pub removed: bool,
}

/// Where one blob of a remote archive is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBlob {
    pub seq: u32,
    pub entry: BlobEntry,
}

impl RemoteObject {
    /// An object about to be uploaded by `by` (a backup uuid, or what else writes it).
    pub fn uploading(
        archive: &str,
        seq: u32,
        key: &str,
        by: &str,
        compression: &CodecName,
        chunk_size: u32,
    ) -> RemoteObject {
        RemoteObject {
            archive: archive.into(),
            seq,
            key: key.into(),
            state: ObjectState::Uploading,
            upload_token: String::new(),
            backup_uuid: by.into(),
            compression: compression.clone(),
            chunk_size,
            size: 0,
            etag: String::new(),
            sha256: String::new(),
            created_at: super::now_ms(),
        }
    }
}

const OBJECT_COLUMNS: &str = "archive, seq, key, state, upload_token, backup_uuid, compression, chunk_size, size, \
                              etag, sha256, created_at";

fn object_from_row(r: &Row) -> rusqlite::Result<RemoteObject> {
    Ok(RemoteObject {
        archive: r.get(0)?,
        seq: r.get(1)?,
        key: r.get(2)?,
        state: super::word_column(r, 3, "remote object state", ObjectState::from_name)?,
        upload_token: r.get(4)?,
        backup_uuid: r.get(5)?,
        compression: super::word_column(r, 6, "codec name", CodecName::from_name)?,
        chunk_size: r.get(7)?,
        size: r.get::<_, i64>(8)? as u64,
        etag: r.get(9)?,
        sha256: r.get(10)?,
        created_at: r.get(11)?,
    })
}

fn hash_from(v: Vec<u8>) -> rusqlite::Result<Sha1> {
    v.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, "a SHA-1 is 20 bytes".into())
    })
}

fn entry(hash: Sha1, offset: i64, size_in_wim: i64, original_size: i64, flags: i64) -> BlobEntry {
    BlobEntry {
        reshdr: ResHdr {
            size_in_wim: size_in_wim as u64,
            flags: flags as u8,
            offset: offset as u64,
            original_size: original_size as u64,
        },
        part_number: 1,
        refcount: 1,
        hash,
    }
}

const IMAGE_COLUMNS: &str = "backup_uuid, archive, seq, image_index, metadata_offset, metadata_size_in_wim, \
                             metadata_original_size, metadata_flags, metadata_hash, removed";

fn image_from_row(r: &Row) -> rusqlite::Result<RemoteImage> {
    Ok(RemoteImage {
        backup_uuid: r.get(0)?,
        archive: r.get(1)?,
        seq: r.get(2)?,
        image_index: r.get(3)?,
        metadata: entry(hash_from(r.get(8)?)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?),
        removed: r.get(9)?,
    })
}

fn insert_image(tx: &rusqlite::Transaction, i: &RemoteImage) -> rusqlite::Result<()> {
    let m = &i.metadata.reshdr;
    tx.execute(
        &format!(
            "INSERT INTO remote_images ({IMAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT(backup_uuid) DO UPDATE SET archive = excluded.archive, seq = excluded.seq, \
             image_index = excluded.image_index, metadata_offset = excluded.metadata_offset, \
             metadata_size_in_wim = excluded.metadata_size_in_wim, \
             metadata_original_size = excluded.metadata_original_size, metadata_flags = excluded.metadata_flags, \
             metadata_hash = excluded.metadata_hash, removed = excluded.removed"
        ),
        params![
            i.backup_uuid,
            i.archive,
            i.seq,
            i.image_index,
            m.offset as i64,
            m.size_in_wim as i64,
            m.original_size as i64,
            m.flags as i64,
            &i.metadata.hash[..],
            i.removed
        ],
    )?;
    Ok(())
}

fn insert_blobs(tx: &rusqlite::Transaction, archive: &str, blobs: &[RemoteBlob]) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare(
        "INSERT INTO remote_blobs (archive, hash, seq, offset, size_in_wim, original_size, flags) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(archive, hash) DO UPDATE SET seq = excluded.seq, \
         offset = excluded.offset, size_in_wim = excluded.size_in_wim, original_size = excluded.original_size, \
         flags = excluded.flags",
    )?;
    for b in blobs {
        let r = &b.entry.reshdr;
        stmt.execute(params![
            archive,
            &b.entry.hash[..],
            b.seq,
            r.offset as i64,
            r.size_in_wim as i64,
            r.original_size as i64,
            r.flags as i64
        ])?;
    }
    Ok(())
}

fn insert_object(db: &rusqlite::Connection, o: &RemoteObject) -> rusqlite::Result<()> {
    db.execute(
        &format!(
            "INSERT INTO remote_objects ({OBJECT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        ),
        params![
            o.archive,
            o.seq,
            o.key,
            o.state.as_str(),
            o.upload_token,
            o.backup_uuid,
            o.compression.as_str(),
            o.chunk_size,
            o.size as i64,
            o.etag,
            o.sha256,
            o.created_at
        ],
    )?;
    Ok(())
}

/// An uploaded object is stored: its size, ETag and digest are final.
fn mark_complete(tx: &rusqlite::Transaction, o: &RemoteObject) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE remote_objects SET state = 'complete', upload_token = '', size = ?3, etag = ?4, sha256 = ?5 \
         WHERE archive = ?1 AND seq = ?2",
        params![o.archive, o.seq, o.size as i64, o.etag, o.sha256],
    )?;
    Ok(())
}

impl Catalog {
    /// Every object of `archive`, in chain order.
    pub fn remote_objects(&self, archive: &str) -> Result<Vec<RemoteObject>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {OBJECT_COLUMNS} FROM remote_objects WHERE archive = ?1 ORDER BY seq"
        ))?;
        let rows = stmt
            .query_map(params![archive], object_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Objects in `state`, of every archive (start-up clean-up).
    pub fn remote_objects_in_state(&self, state: ObjectState) -> Result<Vec<RemoteObject>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {OBJECT_COLUMNS} FROM remote_objects WHERE state = ?1 ORDER BY archive, seq"
        ))?;
        let rows = stmt
            .query_map(params![state.as_str()], object_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Every remote archive the catalog knows (`PLUGIN:NAME`).
    pub fn remote_archives(&self) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT DISTINCT archive FROM remote_objects ORDER BY archive")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Records an object about to be uploaded (state `uploading`).
    pub fn begin_remote_object(&self, o: &RemoteObject) -> Result<()> {
        insert_object(
            &self.db(),
            &RemoteObject {
                state: ObjectState::Uploading,
                ..o.clone()
            },
        )?;
        Ok(())
    }

    /// Remembers the plugin's token of an upload in progress.
    pub fn set_remote_upload_token(&self, archive: &str, seq: u32, token: &str) -> Result<()> {
        self.db().execute(
            "UPDATE remote_objects SET upload_token = ?3 WHERE archive = ?1 AND seq = ?2",
            params![archive, seq, token],
        )?;
        Ok(())
    }

    /// Forgets an object and everything recorded as inside it.
    pub fn drop_remote_object(&self, archive: &str, seq: u32) -> Result<()> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        tx.execute(
            "DELETE FROM remote_blobs WHERE archive = ?1 AND seq = ?2",
            params![archive, seq],
        )?;
        tx.execute(
            "DELETE FROM remote_images WHERE archive = ?1 AND seq = ?2",
            params![archive, seq],
        )?;
        tx.execute(
            "DELETE FROM remote_objects WHERE archive = ?1 AND seq = ?2",
            params![archive, seq],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Forgets object `seq` of `archive`, which the store no longer holds
    /// as written (`archive check --repair`): its blobs, its images and the
    /// backup records of those images go, in one transaction. Returns the
    /// uuids of the backups forgotten.
    pub fn forget_remote_object(&self, archive: &str, seq: u32) -> Result<Vec<String>> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        let uuids = {
            let mut stmt = tx.prepare("SELECT backup_uuid FROM remote_images WHERE archive = ?1 AND seq = ?2")?;
            let rows = stmt
                .query_map(params![archive, seq], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows
        };
        for uuid in &uuids {
            tx.execute("DELETE FROM backups WHERE uuid = ?1", params![uuid])?;
        }
        for table in ["remote_blobs", "remote_images", "remote_objects"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE archive = ?1 AND seq = ?2"),
                params![archive, seq],
            )?;
        }
        tx.commit()?;
        Ok(uuids)
    }

    /// Forgets remote snapshot `uuid`, whose image cannot be read
    /// (`archive check --repair`): its image row and its backup record.
    pub fn forget_remote_snapshot(&self, uuid: &str) -> Result<()> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        tx.execute("DELETE FROM remote_images WHERE backup_uuid = ?1", params![uuid])?;
        tx.execute("DELETE FROM backups WHERE uuid = ?1", params![uuid])?;
        tx.commit()?;
        Ok(())
    }

    /// Drops blobs of `archive` from the catalog (they failed their
    /// checksum): the next backup that meets their contents stores them
    /// again. Returns how many were dropped.
    pub fn drop_remote_blobs(&self, archive: &str, hashes: &[Sha1]) -> Result<u64> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        let mut n = 0u64;
        for h in hashes {
            n += tx.execute(
                "DELETE FROM remote_blobs WHERE archive = ?1 AND hash = ?2",
                params![archive, &h[..]],
            )? as u64;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Makes an uploaded object and its images visible, in one transaction:
    /// the object becomes `complete`, its blobs and images are recorded and
    /// the backup (if any) gets its final record. Before this commits, no
    /// snapshot refers to the object.
    pub fn complete_remote_object(
        &self,
        o: &RemoteObject,
        blobs: &[RemoteBlob],
        images: &[RemoteImage],
        backup: Option<&BackupRecord>,
    ) -> Result<()> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        mark_complete(&tx, o)?;
        insert_blobs(&tx, &o.archive, blobs)?;
        for i in images {
            insert_image(&tx, i)?;
        }
        if let Some(b) = backup {
            super::update_backup_in(&tx, b)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Where snapshot `uuid` lives, if it is a remote one.
    pub fn remote_image(&self, uuid: &str) -> Result<Option<RemoteImage>> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {IMAGE_COLUMNS} FROM remote_images WHERE backup_uuid = ?1"),
                params![uuid],
                image_from_row,
            )
            .optional()?)
    }

    /// The images of `archive` in chain order (removed ones included).
    pub fn remote_images(&self, archive: &str) -> Result<Vec<RemoteImage>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {IMAGE_COLUMNS} FROM remote_images WHERE archive = ?1 ORDER BY seq, image_index"
        ))?;
        let rows = stmt
            .query_map(params![archive], image_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Every blob of `archive` and the object holding it.
    pub fn remote_blobs(&self, archive: &str) -> Result<Vec<RemoteBlob>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT hash, seq, offset, size_in_wim, original_size, flags FROM remote_blobs WHERE archive = ?1",
        )?;
        let rows = stmt
            .query_map(params![archive], |r| {
                Ok(RemoteBlob {
                    seq: r.get(1)?,
                    entry: entry(hash_from(r.get(0)?)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// A user deleted remote snapshot `uuid`: its image is marked removed
    /// (reclaimed at the next consolidation) and its backup record goes.
    pub fn remove_remote_snapshot(&self, uuid: &str) -> Result<()> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        tx.execute(
            "UPDATE remote_images SET removed = 1 WHERE backup_uuid = ?1",
            params![uuid],
        )?;
        tx.execute("DELETE FROM backups WHERE uuid = ?1", params![uuid])?;
        tx.commit()?;
        Ok(())
    }

    /// After a consolidation: `new` (already `complete`) holds `images` and
    /// `blobs`; every earlier object of the archive becomes obsolete and
    /// removed images are forgotten. One transaction.
    pub fn switch_to_consolidated(
        &self,
        new: &RemoteObject,
        images: &[RemoteImage],
        blobs: &[RemoteBlob],
    ) -> Result<()> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        mark_complete(&tx, new)?;
        tx.execute(
            "UPDATE remote_objects SET state = 'obsolete' WHERE archive = ?1 AND seq < ?2 AND state = 'complete'",
            params![new.archive, new.seq],
        )?;
        tx.execute("DELETE FROM remote_blobs WHERE archive = ?1", params![new.archive])?;
        tx.execute(
            "DELETE FROM remote_images WHERE archive = ?1 AND removed = 1",
            params![new.archive],
        )?;
        insert_blobs(&tx, &new.archive, blobs)?;
        for i in images {
            insert_image(&tx, i)?;
        }
        tx.commit()?;
        Ok(())
    }
}

impl Catalog {
    /// Replaces everything recorded about remote archive `archive` with
    /// what was read back from its objects (`catalog rebuild`), and adds the
    /// backup records it lacks (existing ones are kept). One transaction.
    pub fn replace_remote_archive(
        &self,
        archive: &str,
        objects: &[RemoteObject],
        images: &[RemoteImage],
        blobs: &[RemoteBlob],
        backups: &[BackupRecord],
    ) -> Result<()> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        for table in ["remote_blobs", "remote_images", "remote_objects"] {
            tx.execute(&format!("DELETE FROM {table} WHERE archive = ?1"), params![archive])?;
        }
        for o in objects {
            insert_object(&tx, o)?;
        }
        insert_blobs(&tx, archive, blobs)?;
        for i in images {
            insert_image(&tx, i)?;
        }
        for b in backups {
            super::insert_backup_in(&tx, b, true)?;
        }
        tx.commit()?;
        Ok(())
    }
}
