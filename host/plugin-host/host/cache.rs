//! Compiled components, cached on disk by the sha256 of their bytes and
//! the engine's compatibility hash.

use super::*;

/// A `Hasher` that feeds a sha256, to turn the engine's compatibility hash
/// into a stable file name.
pub(super) struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is read with `finalize`
    }
}

/// Hex of a sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache file of the component whose bytes have sha256 `digest`:
/// `<digest>-<engine compatibility hash>.cwasm`, so a new wasmtime or other
/// engine settings never load stale code.
pub(super) fn cache_path(dir: &Path, digest: &str) -> PathBuf {
    let mut h = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine().precompile_compatibility_hash(), &mut h);
    let compat = hex(&h.0.finalize()[..8]);
    dir.join(format!("{digest}-{compat}.cwasm"))
}

/// Compiles component `bytes`, or loads the compiled form from `cache_dir`
/// (see [`cache_path`]), writing it there after compiling. Without a cache
/// directory the component is just compiled.
///
/// The cache directory must be private to the daemon (created `0700` here):
/// compiled code in it is loaded and run as native code.
pub fn compile_component(bytes: &[u8], cache_dir: Option<&Path>) -> Result<Component, PluginError> {
    let engine = engine();
    let digest = sha256_hex(bytes);
    let label = format!("sha256:{}", &digest[..12]);
    let invalid = |e: wasmtime::Error| PluginError::Invalid {
        plugin: label.clone(),
        reason: format!("{e:#}"),
    };
    let Some(dir) = cache_dir else {
        return Component::new(engine, bytes).map_err(invalid);
    };
    let path = cache_path(dir, &digest);
    if path.is_file() {
        // SAFETY: `deserialize_file` runs the file's contents as native code.
        // The file is only ever written by `write_cache` (via a temporary
        // file and an atomic rename), into a directory the daemon owns and
        // creates 0700, and its name binds both the source bytes' sha256
        // and this engine's compatibility hash. wasmtime itself also checks
        // the header's version and configuration before using it.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable plugin cache entry: {e:#}"),
        }
    }
    let compiled = engine.precompile_component(bytes).map_err(invalid)?;
    write_cache(&path, &compiled)?;
    // SAFETY: as above; `compiled` was produced by this engine just now.
    unsafe { Component::deserialize(engine, &compiled) }.map_err(invalid)
}

/// Writes the compiled form of `component` (whose bytes have sha256
/// `digest`) to the cache in `dir`, e.g. once an install accepted it.
pub fn save_to_cache(component: &Component, digest: &str, dir: &Path) -> Result<(), PluginError> {
    let path = cache_path(dir, digest);
    let compiled = component.serialize().map_err(|e| PluginError::Cache {
        path: path.clone(),
        source: std::io::Error::other(format!("{e:#}")),
    })?;
    write_cache(&path, &compiled)
}

/// Deletes every compiled form of the component with sha256 `digest`
/// (all engine versions); what cannot be deleted is only logged.
pub fn remove_from_cache(digest: &str, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let prefix = format!("{digest}-");
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(&prefix) {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!(path = %e.path().display(), "cannot remove a plugin cache entry: {err}");
            }
        }
    }
}

/// Writes a cache file atomically (unique temporary file, fsync, rename).
pub(super) fn write_cache(path: &Path, compiled: &[u8]) -> Result<(), PluginError> {
    use std::io::Write;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let cache = |source| PluginError::Cache {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(cache)?;
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(compiled)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(cache)
}

pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
