//! The `plugins` table: what `wimguard plugin install` registered. The
//! plugin files themselves live in the home's plugin store, named by sha256.

use rusqlite::{params, OptionalExtension, Row};

use super::{Catalog, Result};

/// What a plugin does and how it runs: words of the plugin host, stored
/// in this table by `as_str` and read back by `from_name`.
pub use wimguard_plugin_host::{PluginKind, PluginRuntime};

/// One registered plugin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PluginRecord {
    /// Unique name, from the plugin's own `info` (`[a-z0-9-]`, 1..=64).
    pub name: String,
    /// The plugin's own version.
    pub version: String,
    pub kind: PluginKind,
    pub runtime: PluginRuntime,
    /// The contract it was built against, e.g. `1.0`.
    pub api_version: String,
    /// Hex sha256 of the registered bytes; the daemon refuses other bytes.
    pub sha256: String,
    pub enabled: bool,
    /// Shipped inside the wimguard binary (first-party).
    pub bundled: bool,
    pub description: String,
    /// Codec plugins: the codec id recorded in archives; empty otherwise.
    pub codec_id: String,
    /// Unix milliseconds.
    pub installed_at: i64,
}

const COLUMNS: &str =
    "name, version, kind, runtime, api_version, sha256, enabled, bundled, description, codec_id, installed_at";

fn from_row(r: &Row) -> rusqlite::Result<PluginRecord> {
    Ok(PluginRecord {
        name: r.get(0)?,
        version: r.get(1)?,
        kind: super::word_column(r, 2, "plugin kind", PluginKind::from_name)?,
        runtime: super::word_column(r, 3, "plugin runtime", PluginRuntime::from_name)?,
        api_version: r.get(4)?,
        sha256: r.get(5)?,
        enabled: r.get(6)?,
        bundled: r.get(7)?,
        description: r.get(8)?,
        codec_id: r.get(9)?,
        installed_at: r.get(10)?,
    })
}

impl Catalog {
    /// Registers a plugin, replacing an earlier registration of the same name
    /// (an upgrade keeps the enabled flag of the old one).
    pub fn upsert_plugin(&self, p: &PluginRecord) -> Result<()> {
        self.db().execute(
            &format!(
                "INSERT INTO plugins ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT(name) DO UPDATE SET version = excluded.version, kind = excluded.kind, \
                 runtime = excluded.runtime, api_version = excluded.api_version, sha256 = excluded.sha256, \
                 bundled = excluded.bundled, description = excluded.description, codec_id = excluded.codec_id, \
                 installed_at = excluded.installed_at"
            ),
            params![
                p.name,
                p.version,
                p.kind.as_str(),
                p.runtime.as_str(),
                p.api_version,
                p.sha256,
                p.enabled,
                p.bundled,
                p.description,
                p.codec_id,
                p.installed_at
            ],
        )?;
        Ok(())
    }

    pub fn get_plugin(&self, name: &str) -> Result<Option<PluginRecord>> {
        Ok(self
            .db()
            .query_row(
                &format!("SELECT {COLUMNS} FROM plugins WHERE name = ?1"),
                [name],
                from_row,
            )
            .optional()?)
    }

    /// Every plugin, by name.
    pub fn list_plugins(&self) -> Result<Vec<PluginRecord>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!("SELECT {COLUMNS} FROM plugins ORDER BY name"))?;
        let rows = stmt.query_map([], from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Sets the enabled flag; false when no such plugin exists.
    pub fn set_plugin_enabled(&self, name: &str, enabled: bool) -> Result<bool> {
        Ok(self.db().execute(
            "UPDATE plugins SET enabled = ?2 WHERE name = ?1",
            params![name, enabled],
        )? > 0)
    }

    /// Forgets a plugin; false when no such plugin exists.
    pub fn delete_plugin(&self, name: &str) -> Result<bool> {
        Ok(self.db().execute("DELETE FROM plugins WHERE name = ?1", [name])? > 0)
    }

    /// Is any other registered plugin using the file with this sha256?
    pub fn sha256_in_use(&self, sha256: &str) -> Result<bool> {
        Ok(self
            .db()
            .query_row("SELECT COUNT(*) FROM plugins WHERE sha256 = ?1", [sha256], |r| {
                r.get::<_, i64>(0)
            })?
            > 0)
    }

    /// The archives (destinations) holding a succeeded backup compressed
    /// with codec id `codec_id`, oldest first: what removing or replacing
    /// that codec's plugin would make unreadable.
    pub fn archives_using_codec(&self, codec_id: &str) -> Result<Vec<String>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT destination FROM backups WHERE compression = ?1 AND status = 'succeeded' \
             GROUP BY destination ORDER BY MIN(created_at)",
        )?;
        let rows = st.query_map([codec_id], |r| r.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}
