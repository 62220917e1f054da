//! The catalog: a SQLite index of archives and backups, owned by the server.
//!
//! The archives are the source of truth for their contents; the catalog
//! records what ran, when, with what result, and where each backup's image
//! lives. WAL mode, foreign keys, versioned migrations.

mod codec_name;
mod migrations;
mod plugins;
pub mod remote;
pub mod schedules;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};

pub use codec_name::CodecName;
pub use migrations::SCHEMA_VERSION;
pub use plugins::{PluginKind, PluginRecord, PluginRuntime};

/// Lifecycle of a job, stored as a lowercase word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    #[default]
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
}

impl Status {
    const ALL: [Status; 6] = [
        Status::Queued,
        Status::Running,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
        }
    }

    /// The status named `s` as the catalog stores it; None for any other
    /// string (a catalog written by something else), never a guess.
    pub fn from_name(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Status::Queued | Status::Running)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a job is, stored as the words users see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Queued,
    Scanning,
    Hashing,
    Writing,
    Finalizing,
    Uploading,
    Restoring,
    Verifying,
    PreBackupHooks,
    PostBackupHooks,
    Done,
}

impl Phase {
    const ALL: [Phase; 11] = [
        Phase::Queued,
        Phase::Scanning,
        Phase::Hashing,
        Phase::Writing,
        Phase::Finalizing,
        Phase::Uploading,
        Phase::Restoring,
        Phase::Verifying,
        Phase::PreBackupHooks,
        Phase::PostBackupHooks,
        Phase::Done,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "queued",
            Phase::Scanning => "scanning",
            Phase::Hashing => "hashing",
            Phase::Writing => "writing",
            Phase::Finalizing => "finalizing",
            Phase::Uploading => "uploading",
            Phase::Restoring => "restoring",
            Phase::Verifying => "verifying",
            Phase::PreBackupHooks => "pre-backup hooks",
            Phase::PostBackupHooks => "post-backup hooks",
            Phase::Done => "done",
        }
    }

    /// The phase named `s`; None for any other words (never a guess).
    pub fn from_name(s: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backup run, as recorded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BackupRecord {
    pub uuid: String,
    pub status: Status,
    pub phase: Phase,
    pub source: String,
    pub destination: String,
    pub compression: CodecName,
    pub name: String,
    pub description: String,
    pub excludes: Vec<String>,
    pub plugins: Vec<String>,
    /// 1-based image index in the archive when last known; 0 = not written.
    pub image_index: u32,
    pub files: u64,
    pub directories: u64,
    pub bytes_total: u64,
    pub bytes_read: u64,
    pub bytes_stored: u64,
    pub files_unchanged: u64,
    /// Unix milliseconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub error: String,
    /// What kind of failure `error` is (None while it has not failed, and
    /// for backups a catalog older than schema 6 recorded).
    pub failure: Option<crate::error::ErrorKind>,
    pub warnings: Vec<String>,
    /// The schedule that started it (empty for backups asked for directly).
    pub schedule_id: String,
}

impl BackupRecord {
    pub fn status(&self) -> Status {
        self.status
    }
}

/// Filters for listing backups.
#[derive(Debug, Clone, Default)]
pub struct BackupFilter {
    pub status: Option<Status>,
    pub source: Option<String>,
    pub destination: Option<String>,
    pub created_after: Option<i64>,
    pub created_before: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("catalog: {0}")]
    Other(String),
}

pub type Result<T> = std::result::Result<T, CatalogError>;

/// Inserts a backup record (and its archive) inside a caller's transaction.
/// `keep_existing`: a record with the same uuid stays, and false is returned.
/// Makes the catalog readable by its owner only (0600), created so or
/// narrowed if an earlier version or a umask left it wider: it names every
/// source, archive and upload token. SQLite gives its `-wal` and `-shm`
/// files the database's mode; existing ones are narrowed too. Failing to
/// is not fatal (a read-only copy opened for inspection).
fn keep_private(path: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if !path.exists() {
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    for p in [path.to_path_buf(), wal.into(), shm.into()] {
        if let Ok(m) = std::fs::metadata(&p) {
            if m.permissions().mode() & 0o077 != 0 {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
}

fn insert_backup_in(tx: &Connection, b: &BackupRecord, keep_existing: bool) -> rusqlite::Result<bool> {
    tx.execute(
        "INSERT INTO archives (path, created_at) VALUES (?1, ?2) ON CONFLICT(path) DO NOTHING",
        params![b.destination, now_ms()],
    )?;
    let conflict = if keep_existing {
        " ON CONFLICT(uuid) DO NOTHING"
    } else {
        ""
    };
    let n = tx.execute(
        &format!("INSERT INTO backups ({BACKUP_COLUMNS}, archive_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, (SELECT id FROM archives WHERE path = ?5)){conflict}"),
        params![
            b.uuid,
            b.status.as_str(),
            b.phase.as_str(),
            b.source,
            b.destination,
            b.compression.as_str(),
            b.name,
            b.description,
            serde_json::to_string(&b.excludes).unwrap_or_default(),
            serde_json::to_string(&b.plugins).unwrap_or_default(),
            b.image_index as i64,
            b.files as i64,
            b.directories as i64,
            b.bytes_total as i64,
            b.bytes_read as i64,
            b.bytes_stored as i64,
            b.files_unchanged as i64,
            b.created_at,
            b.started_at,
            b.finished_at,
            b.error,
            serde_json::to_string(&b.warnings).unwrap_or_default(),
            b.schedule_id,
            b.failure.map_or("", |k| k.as_str()),
        ],
    )?;
    Ok(n > 0)
}

/// Writes every mutable field of a backup (inside a caller's transaction).
fn update_backup_in(db: &Connection, b: &BackupRecord) -> rusqlite::Result<()> {
    db.execute(
        "UPDATE backups SET status = ?2, phase = ?3, name = ?4, image_index = ?5, files = ?6, directories = ?7, \
         bytes_total = ?8, bytes_read = ?9, bytes_stored = ?10, files_unchanged = ?11, started_at = ?12, \
         finished_at = ?13, error = ?14, warnings = ?15, compression = ?16, failure = ?17 WHERE uuid = ?1",
        params![
            b.uuid,
            b.status.as_str(),
            b.phase.as_str(),
            b.name,
            b.image_index as i64,
            b.files as i64,
            b.directories as i64,
            b.bytes_total as i64,
            b.bytes_read as i64,
            b.bytes_stored as i64,
            b.files_unchanged as i64,
            b.started_at,
            b.finished_at,
            b.error,
            serde_json::to_string(&b.warnings).unwrap_or_default(),
            b.compression.as_str(),
            b.failure.map_or("", |k| k.as_str()),
        ],
    )?;
    Ok(())
}

/// The catalog handle; cheap to share behind an `Arc`.
pub struct Catalog {
    conn: Mutex<Connection>,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const BACKUP_COLUMNS: &str =
    "uuid, status, phase, source, destination, compression, name, description, excludes, plugins, \
     image_index, files, directories, bytes_total, bytes_read, bytes_stored, files_unchanged, created_at, started_at, \
     finished_at, error, warnings, schedule_id, failure";

/// Reads column `i`, a JSON list of strings; anything else is an error
/// (never an empty list: that would silently drop excludes or plugins).
fn json_list(r: &Row, i: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = r.get(i)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

/// Reads column `i`, one word of a fixed set parsed by `parse`; any other
/// word (a newer version's, or a hand edit) is an error naming it, never a
/// guess.
fn word_column<T>(r: &Row, i: usize, what: &str, parse: impl Fn(&str) -> Option<T>) -> rusqlite::Result<T> {
    let word: String = r.get(i)?;
    parse(&word).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            i,
            rusqlite::types::Type::Text,
            format!("{what} {word:?} is not one this version knows").into(),
        )
    })
}

fn backup_from_row(r: &Row) -> rusqlite::Result<BackupRecord> {
    Ok(BackupRecord {
        uuid: r.get(0)?,
        status: word_column(r, 1, "backup status", Status::from_name)?,
        phase: word_column(r, 2, "backup phase", Phase::from_name)?,
        source: r.get(3)?,
        destination: r.get(4)?,
        compression: word_column(r, 5, "codec name", CodecName::from_name)?,
        name: r.get(6)?,
        description: r.get(7)?,
        excludes: json_list(r, 8)?,
        plugins: json_list(r, 9)?,
        image_index: r.get::<_, i64>(10)? as u32,
        files: r.get::<_, i64>(11)? as u64,
        directories: r.get::<_, i64>(12)? as u64,
        bytes_total: r.get::<_, i64>(13)? as u64,
        bytes_read: r.get::<_, i64>(14)? as u64,
        bytes_stored: r.get::<_, i64>(15)? as u64,
        files_unchanged: r.get::<_, i64>(16)? as u64,
        created_at: r.get(17)?,
        started_at: r.get(18)?,
        finished_at: r.get(19)?,
        error: r.get(20)?,
        failure: {
            let word: String = r.get(23)?;
            if word.is_empty() {
                None
            } else {
                Some(word_column(r, 23, "failure kind", crate::error::ErrorKind::from_name)?)
            }
        },
        warnings: json_list(r, 21)?,
        schedule_id: r.get(22)?,
    })
}

impl Catalog {
    /// Opens (creating and migrating) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Catalog> {
        keep_private(path);
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut conn = conn;
        migrations::migrate(&mut conn)?;
        Ok(Catalog { conn: Mutex::new(conn) })
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn schema_version(&self) -> Result<u32> {
        Ok(self
            .db()
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| r.get::<_, i64>(0))? as u32)
    }

    /// Marks jobs a crash left `running` or `queued` as `interrupted`;
    /// returns the archives they were writing.
    pub fn mark_interrupted(&self) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT DISTINCT destination FROM backups WHERE status IN ('running', 'queued')")?;
        let archives = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        db.execute(
            "UPDATE backups SET status = 'interrupted', phase = 'done', finished_at = ?1, \
             error = CASE WHEN error = '' THEN 'the server stopped while this backup was running' ELSE error END \
             WHERE status IN ('running', 'queued')",
            params![now_ms()],
        )?;
        Ok(archives)
    }

    pub fn insert_backup(&self, b: &BackupRecord) -> Result<()> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        insert_backup_in(&tx, b, false)?;
        tx.commit()?;
        Ok(())
    }

    /// Records backups found in an archive (`catalog rebuild`): the ones
    /// the catalog already knows are left as they are. Returns how many
    /// were added.
    pub fn adopt_backups(&self, backups: &[BackupRecord]) -> Result<u64> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        let mut n = 0;
        for b in backups {
            n += insert_backup_in(&tx, b, true)? as u64;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Writes every mutable field of a backup.
    pub fn update_backup(&self, b: &BackupRecord) -> Result<()> {
        update_backup_in(&self.db(), b)?;
        Ok(())
    }

    /// Up to `limit` backup uuids that start with `prefix` (lowercase hex
    /// digits and dashes only; anything else matches nothing).
    pub fn backup_uuids_with_prefix(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        if prefix.is_empty()
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-')
        {
            return Ok(Vec::new());
        }
        let db = self.db();
        let mut stmt = db.prepare("SELECT uuid FROM backups WHERE uuid LIKE ?1 ORDER BY uuid LIMIT ?2")?;
        let rows = stmt.query_map(params![format!("{prefix}%"), limit as i64], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn get_backup(&self, uuid: &str) -> Result<Option<BackupRecord>> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE uuid = ?1"),
                params![uuid],
                backup_from_row,
            )
            .optional()?)
    }

    fn where_clause(f: &BackupFilter) -> (String, Vec<rusqlite::types::Value>) {
        use rusqlite::types::Value;
        let mut conds = Vec::new();
        let mut vals: Vec<Value> = Vec::new();
        if let Some(s) = f.status {
            conds.push("status = ?");
            vals.push(Value::Text(s.as_str().into()));
        }
        if let Some(s) = &f.source {
            conds.push("source = ?");
            vals.push(Value::Text(s.clone()));
        }
        if let Some(s) = &f.destination {
            conds.push("destination = ?");
            vals.push(Value::Text(s.clone()));
        }
        if let Some(t) = f.created_after {
            conds.push("created_at >= ?");
            vals.push(Value::Integer(t));
        }
        if let Some(t) = f.created_before {
            conds.push("created_at < ?");
            vals.push(Value::Integer(t));
        }
        let w = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        (w, vals)
    }

    /// Newest first; returns the page and the total number of matches.
    pub fn list_backups(&self, f: &BackupFilter, offset: u64, limit: u64) -> Result<(Vec<BackupRecord>, u64)> {
        let (w, vals) = Self::where_clause(f);
        let db = self.db();
        let total: i64 = db.query_row(
            &format!("SELECT COUNT(*) FROM backups {w}"),
            rusqlite::params_from_iter(vals.iter()),
            |r| r.get(0),
        )?;
        let mut stmt = db.prepare(&format!(
            "SELECT {BACKUP_COLUMNS} FROM backups {w} ORDER BY created_at DESC, uuid DESC LIMIT {limit} OFFSET {offset}"
        ))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(vals.iter()), backup_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((rows, total as u64))
    }

    /// Successful backups stored in `destination`, oldest first.
    pub fn backups_in_archive(&self, destination: &str) -> Result<Vec<BackupRecord>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE destination = ?1 AND status = 'succeeded' ORDER BY image_index"
        ))?;
        let rows = stmt
            .query_map(params![destination], backup_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// After an image was deleted from an archive, later images move down by one.
    pub fn delete_backup_and_renumber(&self, uuid: &str, destination: &str, image_index: u32) -> Result<()> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        tx.execute("DELETE FROM backups WHERE uuid = ?1", params![uuid])?;
        tx.execute("DELETE FROM pending_removals WHERE uuid = ?1", params![uuid])?;
        if image_index > 0 {
            tx.execute(
                "UPDATE backups SET image_index = image_index - 1 WHERE destination = ?1 AND image_index > ?2",
                params![destination, image_index as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Notes, before local archive `archive` is rewritten without them,
    /// that the images of backups `uuids` are being removed: a crash
    /// between the rewrite and the records' removal leaves these rows, and
    /// the next start settles them ([`crate::ops::settle_pending_removals`]).
    pub fn note_pending_removals(&self, archive: &str, uuids: &[String]) -> Result<()> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        for uuid in uuids {
            tx.execute(
                "INSERT OR REPLACE INTO pending_removals (uuid, archive, since) VALUES (?1, ?2, ?3)",
                params![uuid, archive, now_ms()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removals noted and not finished: (backup uuid, archive).
    pub fn pending_removals(&self) -> Result<Vec<(String, String)>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT uuid, archive FROM pending_removals ORDER BY archive, uuid")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Ends a noted removal that did not happen (the rewrite failed).
    pub fn clear_pending_removals(&self, uuids: &[String]) -> Result<()> {
        let db = self.db();
        for uuid in uuids {
            db.execute("DELETE FROM pending_removals WHERE uuid = ?1", params![uuid])?;
        }
        Ok(())
    }

    /// After images of local archive `destination` were removed: forgets the
    /// backups `removed` and renumbers the others as the archive now numbers
    /// its images (`now`: backup uuid, image index). One transaction.
    pub fn forget_local_snapshots(&self, destination: &str, removed: &[String], now: &[(String, u32)]) -> Result<()> {
        let db = self.db();
        let tx = db.unchecked_transaction()?;
        for uuid in removed {
            tx.execute("DELETE FROM backups WHERE uuid = ?1", params![uuid])?;
            tx.execute("DELETE FROM pending_removals WHERE uuid = ?1", params![uuid])?;
        }
        for (uuid, index) in now {
            tx.execute(
                "UPDATE backups SET image_index = ?3 WHERE uuid = ?1 AND destination = ?2",
                params![uuid, destination, *index as i64],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes a backup that never produced an image.
    pub fn delete_backup(&self, uuid: &str) -> Result<()> {
        self.db()
            .execute("DELETE FROM backups WHERE uuid = ?1", params![uuid])?;
        Ok(())
    }

    /// Counts per status.
    pub fn count_by_status(&self) -> Result<Vec<(Status, u64)>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT status, COUNT(*) FROM backups GROUP BY status ORDER BY status")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(s, n)| {
                let status = Status::from_name(&s)
                    .ok_or_else(|| CatalogError::Other(format!("backup status {s:?} is not one this version knows")))?;
                Ok((status, n))
            })
            .collect()
    }

    /// Every archive path known to the catalog.
    pub fn archive_paths(&self) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT path FROM archives ORDER BY path")?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The newest successful backup schedule `id` made.
    pub fn latest_backup_of_schedule(&self, id: &str) -> Result<Option<BackupRecord>> {
        Ok(self
            .db()
            .query_row(
                &format!(
                    "SELECT {BACKUP_COLUMNS} FROM backups WHERE schedule_id = ?1 AND status = 'succeeded' \
                     ORDER BY created_at DESC LIMIT 1"
                ),
                params![id],
                backup_from_row,
            )
            .optional()?)
    }

    /// Every successful backup (for statistics), oldest first.
    pub fn all_succeeded(&self) -> Result<Vec<BackupRecord>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {BACKUP_COLUMNS} FROM backups WHERE status = 'succeeded' ORDER BY created_at"
        ))?;
        let rows = stmt
            .query_map([], backup_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The catalog and its WAL are the owner's alone, whatever the umask
    /// or an earlier version left.
    #[test]
    fn the_catalog_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        drop(Catalog::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let cat = Catalog::open(&path).unwrap();
        cat.insert_backup(&BackupRecord {
            uuid: "u1".into(),
            ..BackupRecord::default()
        })
        .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("catalog.sqlite-wal")), 0o600);
    }

    /// A status this version does not know (written by a newer one, or by
    /// hand) is an error naming it, never read as some other status.
    #[test]
    fn unknown_status_phase_kind_and_runtime_words_are_errors_not_guesses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.sqlite");
        let cat = Catalog::open(&path).unwrap();
        let rec = BackupRecord {
            uuid: "u1".into(),
            status: Status::Succeeded,
            source: "/src".into(),
            destination: "/a.wim".into(),
            ..BackupRecord::default()
        };
        cat.insert_backup(&rec).unwrap();
        assert_eq!(cat.get_backup("u1").unwrap().unwrap().status, Status::Succeeded);
        let raw = Connection::open(&path).unwrap();
        raw.pragma_update(None, "ignore_check_constraints", true).unwrap();
        // Writes `sql` behind the catalog's back; `read` must then fail
        // naming `word`.
        let refused = |sql: &str, word: &str, read: &dyn Fn() -> Result<()>| {
            raw.execute(sql, []).unwrap();
            let e = read().unwrap_err().to_string();
            assert!(e.contains(&format!("\"{word}\"")), "{e}");
        };
        let backup = || cat.get_backup("u1").map(drop);
        let plugin = || cat.get_plugin("p").map(drop);
        refused(
            "UPDATE backups SET status = 'paused' WHERE uuid = 'u1'",
            "paused",
            &backup,
        );
        let e = cat.count_by_status().unwrap_err().to_string();
        assert!(e.contains("\"paused\""), "{e}");
        // The same for a plugin's kind and runtime.
        let record = PluginRecord {
            name: "p".into(),
            kind: PluginKind::Hook,
            runtime: PluginRuntime::Wasm,
            sha256: "ab".repeat(32),
            version: "1.0.0".into(),
            api_version: "1.0".into(),
            ..PluginRecord::default()
        };
        cat.upsert_plugin(&record).unwrap();
        assert_eq!(cat.get_plugin("p").unwrap().unwrap(), record);
        refused(
            "UPDATE plugins SET kind = 'sidecar' WHERE name = 'p'",
            "sidecar",
            &plugin,
        );
        refused(
            "UPDATE plugins SET kind = 'hook', runtime = 'jvm' WHERE name = 'p'",
            "jvm",
            &plugin,
        );
        refused(
            "UPDATE backups SET status = 'failed', phase = 'napping' WHERE uuid = 'u1'",
            "napping",
            &backup,
        );
        // A codec word that names no codec, and a list that is not JSON
        // (read as empty, it would drop the backup's excludes silently).
        refused(
            "UPDATE backups SET phase = 'done', compression = 'LZX!' WHERE uuid = 'u1'",
            "LZX!",
            &backup,
        );
        raw.execute(
            "UPDATE backups SET compression = 'lzx', excludes = '[\"*.tmp\"' WHERE uuid = 'u1'",
            [],
        )
        .unwrap();
        assert!(cat.get_backup("u1").is_err(), "a broken excludes list was read");
        raw.execute("UPDATE backups SET excludes = '[\"*.tmp\"]' WHERE uuid = 'u1'", [])
            .unwrap();
        assert_eq!(cat.get_backup("u1").unwrap().unwrap().excludes, ["*.tmp"]);
        for p in Phase::ALL {
            assert_eq!(Phase::from_name(p.as_str()), Some(p));
        }
        for k in [PluginKind::Codec, PluginKind::Destination, PluginKind::Hook] {
            assert_eq!(PluginKind::from_name(k.as_str()), Some(k));
        }
        for s in [
            Status::Queued,
            Status::Running,
            Status::Succeeded,
            Status::Failed,
            Status::Cancelled,
            Status::Interrupted,
        ] {
            assert_eq!(Status::from_name(s.as_str()), Some(s));
        }
    }
}
