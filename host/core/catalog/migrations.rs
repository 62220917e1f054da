//! Versioned schema migrations. Each entry runs once, in order, inside a
//! transaction, and is recorded in `schema_migrations`. Never edit a
//! published migration: add a new one.

use rusqlite::{params, Connection};

const MIGRATIONS: &[(u32, &str)] = &[
    (
        1,
        "CREATE TABLE archives (
        id INTEGER PRIMARY KEY,
        path TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE backups (
        uuid TEXT PRIMARY KEY,
        archive_id INTEGER REFERENCES archives(id) ON DELETE SET NULL,
        status TEXT NOT NULL CHECK (status IN ('queued','running','succeeded','failed','cancelled','interrupted')),
        phase TEXT NOT NULL,
        source TEXT NOT NULL,
        destination TEXT NOT NULL,
        compression TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL DEFAULT '',
        excludes TEXT NOT NULL DEFAULT '[]',
        plugins TEXT NOT NULL DEFAULT '[]',
        image_index INTEGER NOT NULL DEFAULT 0,
        files INTEGER NOT NULL DEFAULT 0,
        directories INTEGER NOT NULL DEFAULT 0,
        bytes_total INTEGER NOT NULL DEFAULT 0,
        bytes_read INTEGER NOT NULL DEFAULT 0,
        bytes_stored INTEGER NOT NULL DEFAULT 0,
        files_unchanged INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        error TEXT NOT NULL DEFAULT '',
        warnings TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX backups_by_created ON backups(created_at DESC);
    CREATE INDEX backups_by_destination ON backups(destination, image_index);
    CREATE INDEX backups_by_source ON backups(source);",
    ),
    (
        2,
        "CREATE TABLE plugins (
        name TEXT PRIMARY KEY,
        version TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('codec','destination','hook')),
        runtime TEXT NOT NULL CHECK (runtime IN ('wasm','native')),
        api_version TEXT NOT NULL,
        sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
        enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
        bundled INTEGER NOT NULL CHECK (bundled IN (0, 1)),
        description TEXT NOT NULL DEFAULT '',
        codec_id TEXT NOT NULL DEFAULT '',
        installed_at INTEGER NOT NULL
    );",
    ),
    (
        3,
        // Remote archives (object storage): each archive is a chain of
        // immutable objects, a full WIM then delta WIMs. `archive` is the
        // backups' destination string, `PLUGIN:NAME`.
        "CREATE TABLE remote_objects (
        archive TEXT NOT NULL,
        seq INTEGER NOT NULL CHECK (seq > 0),
        key TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('uploading','complete','obsolete')),
        upload_token TEXT NOT NULL DEFAULT '',
        backup_uuid TEXT NOT NULL DEFAULT '',
        compression TEXT NOT NULL,
        chunk_size INTEGER NOT NULL,
        size INTEGER NOT NULL DEFAULT 0,
        etag TEXT NOT NULL DEFAULT '',
        sha256 TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        PRIMARY KEY (archive, seq)
    );
    CREATE TABLE remote_images (
        backup_uuid TEXT PRIMARY KEY,
        archive TEXT NOT NULL,
        seq INTEGER NOT NULL,
        image_index INTEGER NOT NULL,
        metadata_offset INTEGER NOT NULL,
        metadata_size_in_wim INTEGER NOT NULL,
        metadata_original_size INTEGER NOT NULL,
        metadata_flags INTEGER NOT NULL,
        metadata_hash BLOB NOT NULL,
        removed INTEGER NOT NULL DEFAULT 0 CHECK (removed IN (0, 1)),
        FOREIGN KEY (archive, seq) REFERENCES remote_objects(archive, seq)
    );
    CREATE INDEX remote_images_by_archive ON remote_images(archive, seq);
    CREATE TABLE remote_blobs (
        archive TEXT NOT NULL,
        hash BLOB NOT NULL,
        seq INTEGER NOT NULL,
        offset INTEGER NOT NULL,
        size_in_wim INTEGER NOT NULL,
        original_size INTEGER NOT NULL,
        flags INTEGER NOT NULL,
        PRIMARY KEY (archive, hash),
        FOREIGN KEY (archive, seq) REFERENCES remote_objects(archive, seq)
    ) WITHOUT ROWID;",
    ),
    (
        4,
        // Scheduled backups; `last_slot` is the last cron slot handled (run
        // or counted as skipped), so a restart neither repeats nor loses one.
        "CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL DEFAULT '',
        origin TEXT NOT NULL CHECK (origin IN ('api','config')),
        cron TEXT NOT NULL,
        time_zone TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL,
        destination TEXT NOT NULL,
        plugins TEXT NOT NULL DEFAULT '[]',
        compression TEXT NOT NULL DEFAULT '',
        excludes TEXT NOT NULL DEFAULT '[]',
        retention TEXT NOT NULL DEFAULT '{}',
        enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        last_slot INTEGER,
        last_run_at INTEGER,
        last_backup_uuid TEXT NOT NULL DEFAULT '',
        last_status TEXT NOT NULL DEFAULT '',
        last_error TEXT NOT NULL DEFAULT '',
        skipped INTEGER NOT NULL DEFAULT 0,
        retry_at INTEGER,
        failures INTEGER NOT NULL DEFAULT 0
    );
    ALTER TABLE backups ADD COLUMN schedule_id TEXT NOT NULL DEFAULT '';
    CREATE INDEX backups_by_schedule ON backups(schedule_id);",
    ),
    (
        5,
        // Images being removed from local archives: written before the
        // archive is rewritten, gone with the records. A row left by a
        // crash in between is settled at the next start.
        "CREATE TABLE pending_removals (
        uuid TEXT PRIMARY KEY,
        archive TEXT NOT NULL,
        since INTEGER NOT NULL
    );",
    ),
    (
        6,
        // The kind of a failed backup's error (`ErrorKind::as_str`; empty
        // for none), so that it outlives the job: `backups show` and
        // `watch` of a finished backup report the same code as its run.
        "ALTER TABLE backups ADD COLUMN failure TEXT NOT NULL DEFAULT '';",
    ),
];

/// Highest schema version this build knows.
pub const SCHEMA_VERSION: u32 = 6;

pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    let current: u32 = conn.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", [], |r| {
        r.get(0)
    })?;
    if current > SCHEMA_VERSION {
        return Err(rusqlite::Error::ToSqlConversionFailure(
            format!(
                "catalog schema version {current} is newer than this wimguard ({SCHEMA_VERSION}); upgrade wimguard"
            )
            .into(),
        ));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, ?2)",
            params![version, super::now_ms()],
        )?;
        tx.commit()?;
    }
    Ok(())
}
