//! Remote archives: backups kept in object storage through a destination
//! plugin, as a chain of immutable WIM objects (docs/remote-archives.md).
//!
//! Layout under the plugin's prefix, for archive `NAME`:
//! - `NAME/000001.wim` — the first backup: a full WIM with one image;
//! - `NAME/000002.wim`, … — each later backup: a *delta* WIM holding only
//!   the blobs not stored before, plus its image's full metadata and XML
//!   (wimlib's `--delta-from` / `--ref` model: `wimlib-imagex apply
//!   000003.wim 1 OUT --ref='NAME/*.wim'` restores the third backup);
//! - a consolidation writes the next number as one full WIM of every kept
//!   image, then deletes the objects before it;
//! - `NAME/removed/UUID` — an empty marker: the snapshot of backup UUID was
//!   deleted (its blobs are reclaimed at the next consolidation).
//!
//! Objects are never overwritten. The catalog indexes all of it (which
//! object holds each blob and image), and can be rebuilt from the objects.

pub mod backup;
pub mod check;
pub mod manage;
pub mod plugin_store;
pub mod rebuild;
pub mod retry;
pub mod source;
pub mod upload;

use crate::error::CoreError;

/// What a store says about one object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectInfo {
    /// Key relative to the store's prefix.
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// Object storage as the core uses it: what a destination plugin offers
/// (see `sdk/wit/destination.wit` for the exact semantics).
pub trait ObjectStore: Send + Sync {
    /// The plugin's name, for messages.
    fn name(&self) -> &str;
    fn begin_upload(&self, key: &str, size_hint: Option<u64>) -> Result<String, CoreError>;
    fn upload_part(&self, token: &str, part: u32, data: &[u8]) -> Result<String, CoreError>;
    fn finish_upload(&self, token: &str, receipts: &[String]) -> Result<ObjectInfo, CoreError>;
    fn abort_upload(&self, token: &str) -> Result<(), CoreError>;
    fn read(&self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>, CoreError>;
    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, CoreError>;
    fn list(&self, prefix: &str, cursor: Option<&str>) -> Result<(Vec<ObjectInfo>, Option<String>), CoreError>;
    fn delete(&self, key: &str) -> Result<(), CoreError>;
}

/// A remote archive: which plugin stores it, under which name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemoteArchive {
    pub plugin: String,
    pub name: String,
}

/// Longest archive name (it becomes a key prefix).
const NAME_MAX: usize = 200;

impl RemoteArchive {
    /// Checks `name` (given as `--destination NAME` with a destination
    /// plugin): letters, digits, `.`, `_`, `-`; not a path.
    pub fn new(plugin: &str, name: &str) -> Result<RemoteArchive, CoreError> {
        let looks_local = name.contains('/') || name.starts_with('.') || name.starts_with('~');
        if looks_local {
            return Err(CoreError::InvalidArgument(format!(
                "--destination {name:?} looks like a local path, but --plugin {plugin} stores archives remotely: give \
                 the remote archive's name (letters, digits, `.`, `_`, `-`, not starting with `.`), or drop \
                 --plugin {plugin} to write a local file"
            )));
        }
        let ok = !name.is_empty()
            && name.len() <= NAME_MAX
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(CoreError::InvalidArgument(format!(
                "invalid remote archive name {name:?}: use 1 to {NAME_MAX} letters, digits, `.`, `_` or `-`"
            )));
        }
        Ok(RemoteArchive {
            plugin: plugin.to_string(),
            name: name.to_string(),
        })
    }

    /// `PLUGIN:NAME`: how backups and the catalog name the archive (local
    /// archives are absolute paths, so the two never collide).
    pub fn id(&self) -> String {
        format!("{}:{}", self.plugin, self.name)
    }

    /// Parses an id made by [`id`](Self::id); None for a local path.
    pub fn from_id(id: &str) -> Option<RemoteArchive> {
        if id.starts_with('/') {
            return None;
        }
        let (plugin, name) = id.split_once(':')?;
        Some(RemoteArchive {
            plugin: plugin.into(),
            name: name.into(),
        })
    }

    /// Key of object `seq` of the chain.
    pub fn object_key(&self, seq: u32) -> String {
        format!("{}/{seq:06}.wim", self.name)
    }

    /// Key of the marker saying backup `uuid`'s snapshot was deleted.
    pub fn removed_key(&self, uuid: &str) -> String {
        format!("{}/removed/{uuid}", self.name)
    }

    /// Key of the marker saying the blob `hash_hex` stored in object `seq`
    /// failed its checksum (`archive check --read-data --repair`): a
    /// catalog rebuilt from the store leaves that copy out.
    pub fn damaged_key(&self, seq: u32, hash_hex: &str) -> String {
        format!("{}/damaged/{seq:06}-{hash_hex}", self.name)
    }

    /// The object number and blob hash a [`damaged_key`](Self::damaged_key)
    /// names (the part after `NAME/damaged/`).
    pub fn parse_damaged(rest: &str) -> Option<(u32, crate::wim::blob_table::Sha1)> {
        let (seq, hex) = rest.split_once('-')?;
        let seq: u32 = seq.parse().ok()?;
        if hex.len() != 40 {
            return None;
        }
        let mut hash = [0u8; 20];
        for (i, byte) in hash.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some((seq, hash))
    }

    /// The chain number in an object key of this archive, if it is one:
    /// six digits, more past 999999 (as [`object_key`](Self::object_key)
    /// writes them), without a leading zero then.
    pub fn seq_of_key(&self, key: &str) -> Option<u32> {
        let rest = key.strip_prefix(&self.name)?.strip_prefix('/')?;
        let digits = rest.strip_suffix(".wim")?;
        let canonical = digits.len() == 6 || (digits.len() > 6 && !digits.starts_with('0'));
        (canonical && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok())
            .flatten()
            .filter(|&n| n > 0)
    }
}

#[cfg(test)]
pub(crate) mod dir_store;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_keys() {
        let a = RemoteArchive::new("s3-upload", "db.nightly_1").unwrap();
        assert_eq!(a.id(), "s3-upload:db.nightly_1");
        assert_eq!(RemoteArchive::from_id(&a.id()), Some(a.clone()));
        assert_eq!(RemoteArchive::from_id("/srv/a.wim"), None);
        assert_eq!(a.object_key(7), "db.nightly_1/000007.wim");
        assert_eq!(a.seq_of_key("db.nightly_1/000007.wim"), Some(7));
        assert_eq!(a.seq_of_key("db.nightly_1/removed/x"), None);
        assert_eq!(a.seq_of_key("db.nightly_10/000007.wim"), None);
        let d = a.damaged_key(3, &"0a".repeat(20));
        assert_eq!(d, format!("db.nightly_1/damaged/000003-{}", "0a".repeat(20)));
        let rest = d.strip_prefix("db.nightly_1/damaged/").unwrap();
        assert_eq!(RemoteArchive::parse_damaged(rest), Some((3, [0x0a; 20])));
        assert_eq!(RemoteArchive::parse_damaged("000003-0a"), None);
        // Past six digits, keys grow, and are read back.
        assert_eq!(a.object_key(1_000_000), "db.nightly_1/1000000.wim");
        assert_eq!(a.seq_of_key(&a.object_key(1_000_000)), Some(1_000_000));
        assert_eq!(a.seq_of_key("db.nightly_1/0000007.wim"), None);
        assert_eq!(a.seq_of_key("db.nightly_1/00007.wim"), None);
        for local in ["/tmp/x.wim", "./x.wim", "backups/x.wim", "~/x"] {
            let e = RemoteArchive::new("s3-upload", local).unwrap_err().to_string();
            assert!(e.contains("looks like a local path"), "{e}");
        }
        assert!(RemoteArchive::new("s3-upload", "a b").is_err());
        assert!(RemoteArchive::new("s3-upload", "").is_err());
    }
}

#[cfg(test)]
mod chain_tests;
