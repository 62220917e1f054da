//! The plugin registry: installing (validate, store under sha256, record in
//! the catalog), enabling, removing, and loading plugins for the stages that
//! use them. Knows nothing of gRPC.
//!
//! Store layout in the home:
//!
//! * `plugins/store/<sha256>.wasm` | `.so` — the registered bytes, 0600;
//! * `plugins/cache/` — precompiled components (see [`compile_component`]).
//!
//! Every load re-reads the file and checks its sha256 against the catalog:
//! a file changed behind the daemon's back is refused, never run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Component;
use wimguard_sdk::Codec;

use super::compile::{compile_untrusted, CompileLimits};
use super::http::HostPattern;
use super::inspect::{inspect_component, valid_codec_id};
use super::{
    compile_component, remove_from_cache, save_to_cache, sha256_hex, valid_name, NativeCodec, PluginError,
    PluginLimits, PluginSettings, SettingValue, WasmCodec, WasmDestination, WasmHook,
};
pub use super::{API_MAJOR, API_MINOR};
use crate::catalog::{now_ms, Catalog, PluginKind, PluginRecord, PluginRuntime};
use crate::config::{FailurePolicy, PluginConfig, PluginInstallConfig};
use crate::wim::codecs::{CodecResolver, SharedCodec};

/// Why the registry refused or failed; the core turns it into its own
/// error (see `crate::error`).
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    NotFound(String),
    /// The file or its settings are not a plugin this host accepts.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The plugin exists but cannot serve now (disabled, in use, broken).
    #[error("{0}")]
    FailedPrecondition(String),
    /// Config or a trust rule forbids it.
    #[error("{0}")]
    PermissionDenied(String),
    /// A stored plugin file no longer matches what was registered.
    #[error("{0}")]
    Damaged(String),
    #[error("{0}")]
    Internal(String),
}

impl From<crate::catalog::CatalogError> for RegistryError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        RegistryError::Internal(e.to_string())
    }
}

/// The largest plugin file accepted (components are usually well below 10 MiB).
pub const MAX_PLUGIN_BYTES: usize = 64 << 20;

/// A first-party plugin compiled into the binary (the daemon's
/// `bundled` module lists them).
#[derive(Debug, Clone, Copy)]
pub struct BundledPlugin {
    pub name: &'static str,
    pub bytes: &'static [u8],
}

/// Archives compressed by a codec plugin are read with the registered plugin.
impl CodecResolver for PluginRegistry {
    fn plugin_codec(&self, id: &str) -> Result<SharedCodec, String> {
        self.codec_by_id(id).map_err(|e| e.to_string())
    }
}

/// The registry, shared by the server's services and the job runner.
pub struct PluginRegistry {
    store_dir: PathBuf,
    cache_dir: PathBuf,
    catalog: Arc<Catalog>,
    config: HashMap<String, PluginConfig>,
    /// What compiling an uploaded component may take.
    compile: CompileLimits,
    /// Loaded codec plugins by sha256. Archives and writers share them;
    /// one whose file is forgotten (upgrade, removal) is dropped here and
    /// freed when its last user is done.
    codecs: Mutex<HashMap<String, SharedCodec>>,
    /// Compiled components by sha256.
    components: Mutex<HashMap<String, Component>>,
    /// Hook plugins ready to instantiate (their linked `InstancePre`), by
    /// name and sha256.
    hooks: Mutex<HashMap<(String, String), WasmHook>>,
    /// Destination plugins ready to call (with their pools of instances),
    /// by name and sha256.
    destinations: Mutex<HashMap<(String, String), WasmDestination>>,
    /// Serialises changes to the store and the registrations (install,
    /// remove), so concurrent requests cannot interleave their checks.
    changes: Mutex<()>,
}

impl PluginRegistry {
    /// Opens the store under `home/plugins`, with the admin's `plugins:`
    /// and `pluginInstall:` config, which is checked here so a mistake stops
    /// the server at start rather than the first backup that uses the
    /// plugin.
    pub fn open(
        home: &Path,
        catalog: Arc<Catalog>,
        config: impl IntoIterator<Item = (String, PluginConfig)>,
        install: &PluginInstallConfig,
    ) -> Result<PluginRegistry, RegistryError> {
        let config: HashMap<String, PluginConfig> = config.into_iter().collect();
        for (name, cfg) in &config {
            check_config(name, cfg)
                .map_err(|e| RegistryError::InvalidArgument(format!("config.yaml: plugins.{name}: {e}")))?;
        }
        let compile = compile_limits(install)
            .map_err(|e| RegistryError::InvalidArgument(format!("config.yaml: pluginInstall.{e}")))?;
        let store_dir = home.join("plugins").join("store");
        let cache_dir = home.join("plugins").join("cache");
        for d in [&store_dir, &cache_dir] {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(d)
                .map_err(|e| RegistryError::Internal(format!("cannot create {}: {e}", d.display())))?;
        }
        Ok(PluginRegistry {
            store_dir,
            cache_dir,
            catalog,
            config,
            compile,
            codecs: Mutex::default(),
            components: Mutex::default(),
            hooks: Mutex::default(),
            destinations: Mutex::default(),
            changes: Mutex::default(),
        })
    }

    fn config_of(&self, name: &str) -> PluginConfig {
        self.config.get(name).cloned().unwrap_or_default()
    }

    /// The names of the environment variables that hold plugin secrets
    /// (command hooks do not get them).
    pub fn secret_variables(&self) -> Vec<String> {
        self.config.values().flat_map(|c| c.secrets.values().cloned()).collect()
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.changes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the first-party plugins on first start, and refreshes them
    /// when this binary carries other bytes (an upgrade). The enabled flag
    /// an admin set survives.
    pub fn register_bundled(&self, bundled: &[BundledPlugin]) -> Result<(), RegistryError> {
        let _changes = self.lock_changes();
        for b in bundled {
            let sha = sha256_hex(b.bytes);
            if let Some(rec) = self.catalog.get_plugin(b.name)? {
                if rec.sha256 == sha && self.path_of(&rec).is_file() {
                    continue;
                }
                if !rec.bundled {
                    tracing::warn!(
                        plugin = b.name,
                        "a third-party plugin uses the name of a bundled one; keeping it"
                    );
                    continue;
                }
            }
            let rec = self.install_wasm(b.bytes, sha, true)?;
            tracing::info!(plugin = %rec.name, version = %rec.version, "registered bundled plugin");
        }
        Ok(())
    }

    fn path_of(&self, rec: &PluginRecord) -> PathBuf {
        let ext = if rec.runtime == PluginRuntime::Native {
            "so"
        } else {
            "wasm"
        };
        self.store_dir.join(format!("{}.{ext}", rec.sha256))
    }

    /// Installs a plugin from its bytes: a component (validated: known world,
    /// API 1.x up to this host's minor), or with `native` a trusted shared
    /// library (the admin must have trusted its sha256 in config first).
    /// A refused file leaves nothing behind. `expected_sha256` (hex) is what
    /// the uploader said it sent; other bytes are refused.
    pub fn install(
        &self,
        bytes: &[u8],
        native: bool,
        expected_sha256: Option<&str>,
    ) -> Result<PluginRecord, RegistryError> {
        if bytes.is_empty() {
            return Err(RegistryError::InvalidArgument("the plugin file is empty".into()));
        }
        if bytes.len() > MAX_PLUGIN_BYTES {
            return Err(RegistryError::InvalidArgument(format!(
                "the plugin file is {} bytes, more than the {MAX_PLUGIN_BYTES} accepted",
                bytes.len()
            )));
        }
        let sha = sha256_hex(bytes);
        if let Some(expected) = expected_sha256.filter(|e| !e.eq_ignore_ascii_case(&sha)) {
            return Err(RegistryError::InvalidArgument(format!(
                "the bytes received have sha256 {sha}, not the {expected} the client sent; nothing was installed"
            )));
        }
        let _changes = self.lock_changes();
        let rec = if native {
            self.install_native(bytes, sha)?
        } else {
            if bytes.starts_with(b"\x7fELF") {
                return Err(RegistryError::InvalidArgument(
                    "this is a native shared library, not a WebAssembly component; install native plugins with \
                     `wimguard plugin install --native FILE`"
                        .into(),
                ));
            }
            check_component_header(bytes)?;
            self.install_wasm(bytes, sha, false)?
        };
        tracing::info!(plugin = %rec.name, version = %rec.version, kind = %rec.kind, runtime = %rec.runtime, sha256 = %rec.sha256, "plugin installed");
        Ok(rec)
    }

    /// Installs component `bytes`, whose sha256 is `sha`.
    fn install_wasm(&self, bytes: &[u8], sha: String, bundled: bool) -> Result<PluginRecord, RegistryError> {
        // Compiled without the cache: a refused file leaves nothing behind.
        // An upload compiles in a child process within the `pluginInstall`
        // limits; the bundled plugins are our own build.
        let component = if bundled {
            compile_component(bytes, None)
        } else {
            compile_untrusted(bytes, &self.compile)
        }
        .map_err(install_error)?;
        let info = inspect_component(&component, &sha).map_err(install_error)?;
        self.check_registration(&info.name, info.kind, &info.codec_id, bundled)?;
        let rec = PluginRecord {
            name: info.name,
            version: info.version,
            kind: info.kind,
            runtime: PluginRuntime::Wasm,
            api_version: info.api_version,
            sha256: sha.clone(),
            enabled: true,
            bundled,
            description: info.description,
            codec_id: info.codec_id,
            installed_at: now_ms(),
        };
        self.store_file(&rec, bytes)?;
        if let Err(e) = save_to_cache(&component, &sha, &self.cache_dir) {
            tracing::warn!(plugin = %rec.name, "cannot cache the compiled plugin (it is compiled again at load): {e}");
        }
        self.components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sha, component);
        self.replace_record(&rec)?;
        Ok(rec)
    }

    /// May a plugin `name` of `kind` (codec id `codec_id`) be registered?
    /// Refuses to take a bundled plugin's name or a standard codec id, to
    /// change the kind of an installed plugin, to take another plugin's codec
    /// id, and to change the codec id of a plugin that compressed archives
    /// (they would become unreadable).
    fn check_registration(
        &self,
        name: &str,
        kind: PluginKind,
        codec_id: &str,
        bundled: bool,
    ) -> Result<(), RegistryError> {
        if let Some(old) = self.catalog.get_plugin(name)? {
            if old.bundled && !bundled {
                return Err(RegistryError::AlreadyExists(format!(
                    "`{name}` is the name of a bundled plugin; choose another name for yours"
                )));
            }
            if old.kind != kind {
                return Err(RegistryError::FailedPrecondition(format!(
                    "`{name}` is installed as a {} plugin and this file is a {kind} plugin; remove the old one first \
                     (`wimguard plugin remove {name}`) or give the new one another name",
                    old.kind
                )));
            }
            if old.kind == PluginKind::Codec && old.codec_id != codec_id {
                let archives = self.catalog.archives_using_codec(&old.codec_id)?;
                if let Some(first) = archives.first() {
                    return Err(RegistryError::FailedPrecondition(format!(
                        "plugin `{name}` registered codec id `{}`, which compressed {} archive(s) (e.g. {first}); \
                         this file calls its codec `{codec_id}`, so those archives could no longer be read. Keep \
                         the codec id, or install the new codec under another plugin name",
                        old.codec_id,
                        archives.len()
                    )));
                }
            }
        }
        if kind == PluginKind::Codec {
            // Only the bundled plugins provide standard codecs: a third-party
            // one would write "standard" archives with foreign code.
            if !bundled && crate::wim::Compression::from_standard_name(codec_id).is_some() {
                return Err(RegistryError::AlreadyExists(format!(
                    "codec id `{codec_id}` is a standard WIM codec, provided by the bundled plugin; give your codec \
                     its own id (`x-<vendor>-<name>`)"
                )));
            }
            if let Some(other) = self
                .catalog
                .list_plugins()?
                .into_iter()
                .find(|p| p.codec_id == codec_id && p.name != name)
            {
                return Err(RegistryError::AlreadyExists(format!(
                    "codec id `{codec_id}` is already provided by plugin `{}`",
                    other.name
                )));
            }
        }
        Ok(())
    }

    /// Installs native library `bytes`, whose sha256 is `sha`.
    fn install_native(&self, bytes: &[u8], sha: String) -> Result<PluginRecord, RegistryError> {
        let Some((name, cfg)) = self
            .config
            .iter()
            .find(|(_, c)| c.trusted && c.sha256.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(&sha)))
        else {
            return Err(RegistryError::PermissionDenied(format!(
                "native plugins run unsandboxed with the server's rights; to allow this file, add to config.yaml\n  \
                 plugins:\n    NAME:\n      trusted: true\n      sha256: {sha}\nrestart the server and install it again"
            )));
        };
        // Stored first (the loader reads and re-checks the file itself);
        // removed again when anything below refuses it.
        let staged = PluginRecord {
            sha256: sha.clone(),
            runtime: PluginRuntime::Native,
            ..PluginRecord::default()
        };
        let path = self.path_of(&staged);
        let was_there = path.is_file();
        self.store_file(&staged, bytes)?;
        let result = (|| {
            let settings = self.settings(name, cfg)?;
            let codec = NativeCodec::load(&path, &sha, cfg.trusted, settings)
                .map_err(|e| RegistryError::InvalidArgument(format!("native plugin `{name}`: {e}")))?;
            if codec.plugin_name() != name {
                return Err(RegistryError::InvalidArgument(format!(
                    "this library calls itself `{}`, but config.yaml trusts sha256 {sha} as `{name}`",
                    codec.plugin_name()
                )));
            }
            if !valid_codec_id(codec.codec_id()) {
                return Err(RegistryError::InvalidArgument(format!(
                    "native plugin `{name}`: codec id {:?} is not valid (want [a-z0-9-], 1..=64 bytes; third parties \
                     use `x-<vendor>-<name>`)",
                    codec.codec_id()
                )));
            }
            self.check_registration(name, PluginKind::Codec, codec.codec_id(), false)?;
            Ok(codec)
        })();
        let codec = match result {
            Ok(c) => c,
            Err(e) => {
                if !was_there && !self.catalog.sha256_in_use(&sha)? {
                    let _ = std::fs::remove_file(&path);
                }
                return Err(e);
            }
        };
        let rec = PluginRecord {
            name: name.clone(),
            version: codec.plugin_version().to_string(),
            kind: PluginKind::Codec,
            runtime: PluginRuntime::Native,
            api_version: format!("native-abi-{}", wimguard_sdk::native::ABI_VERSION),
            sha256: sha.clone(),
            enabled: true,
            bundled: false,
            description: format!("native codec `{}`", codec.codec_id()),
            codec_id: codec.codec_id().to_string(),
            installed_at: now_ms(),
        };
        self.replace_record(&rec)?;
        // The library stays loaded (native code is never unloaded): keep
        // this instance rather than loading a second copy at first use.
        let codec: SharedCodec = Arc::new(codec);
        self.codecs.lock().unwrap_or_else(|p| p.into_inner()).insert(sha, codec);
        Ok(rec)
    }

    fn store_file(&self, rec: &PluginRecord, bytes: &[u8]) -> Result<(), RegistryError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.path_of(rec);
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| RegistryError::Internal(format!("cannot store plugin {}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Records `rec`, keeping the enabled flag of an earlier registration and
    /// dropping the old file when nothing else uses it.
    fn replace_record(&self, rec: &PluginRecord) -> Result<(), RegistryError> {
        let old = self.catalog.get_plugin(&rec.name)?;
        let mut rec = rec.clone();
        if let Some(old) = &old {
            rec.enabled = old.enabled;
        }
        self.catalog.upsert_plugin(&rec)?;
        if let Some(old) = old {
            if old.sha256 != rec.sha256 {
                self.forget_file(&old)?;
            }
        }
        Ok(())
    }

    /// Deletes the stored file of `rec` and its compiled forms, unless
    /// another registration uses the same bytes.
    fn forget_file(&self, rec: &PluginRecord) -> Result<(), RegistryError> {
        if self.catalog.sha256_in_use(&rec.sha256)? {
            return Ok(());
        }
        let _ = std::fs::remove_file(self.path_of(rec));
        remove_from_cache(&rec.sha256, &self.cache_dir);
        self.codecs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&rec.sha256);
        self.components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&rec.sha256);
        self.hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, sha), _| *sha != rec.sha256);
        self.destinations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, sha), _| *sha != rec.sha256);
        Ok(())
    }

    /// Names config.yaml configures (under `plugins:`) that no installed
    /// plugin has: a typo, most often. Their settings wait for a plugin of
    /// that name to be installed; the server warns at start.
    pub fn configured_but_not_installed(&self) -> Result<Vec<String>, RegistryError> {
        let installed: std::collections::HashSet<String> =
            self.catalog.list_plugins()?.into_iter().map(|r| r.name).collect();
        let mut missing: Vec<String> = self
            .config
            .keys()
            .filter(|n| !installed.contains(*n))
            .cloned()
            .collect();
        missing.sort();
        Ok(missing)
    }

    pub fn list(&self) -> Result<Vec<PluginRecord>, RegistryError> {
        Ok(self
            .catalog
            .list_plugins()?
            .into_iter()
            .map(|r| self.effective(r))
            .collect())
    }

    pub fn get(&self, name: &str) -> Result<PluginRecord, RegistryError> {
        self.catalog
            .get_plugin(name)?
            .map(|r| self.effective(r))
            .ok_or_else(|| not_installed(name))
    }

    /// The record with config's `enabled` override applied.
    fn effective(&self, mut r: PluginRecord) -> PluginRecord {
        if let Some(e) = self.config.get(&r.name).and_then(|c| c.enabled) {
            r.enabled = e;
        }
        r
    }

    /// Enables or disables a plugin. Refused (and nothing changed) when
    /// config.yaml pins the other state.
    pub fn set_enabled(&self, name: &str, enabled: bool) -> Result<PluginRecord, RegistryError> {
        let _changes = self.lock_changes();
        self.get(name)?;
        if let Some(pinned) = self.config.get(name).and_then(|c| c.enabled) {
            if pinned != enabled {
                return Err(RegistryError::FailedPrecondition(format!(
                    "config.yaml sets `plugins.{name}.enabled: {pinned}`, which overrides this; edit the config and \
                     restart the server instead"
                )));
            }
        }
        if !self.catalog.set_plugin_enabled(name, enabled)? {
            return Err(not_installed(name));
        }
        self.get(name)
    }

    /// Unregisters a plugin and deletes its file. Bundled plugins can only
    /// be disabled. A codec plugin that compressed archives the catalog
    /// knows is kept unless `force` (without it those archives cannot be
    /// restored until it is installed again).
    pub fn remove(&self, name: &str, force: bool) -> Result<PluginRecord, RegistryError> {
        let _changes = self.lock_changes();
        let rec = self.get(name)?;
        if rec.bundled {
            return Err(RegistryError::FailedPrecondition(format!(
                "`{name}` is bundled with wimguard and cannot be removed; disable it with `wimguard plugin disable {name}`"
            )));
        }
        if rec.kind == PluginKind::Codec && !force {
            let archives = self.catalog.archives_using_codec(&rec.codec_id)?;
            if let Some(first) = archives.first() {
                let more = match archives.len() {
                    1 => String::new(),
                    n => format!(" and {} more", n - 1),
                };
                return Err(RegistryError::FailedPrecondition(format!(
                    "codec plugin `{name}` compressed {first}{more}; without it they cannot be restored. Remove it \
                     anyway with `wimguard plugin remove --force {name}` (installing it again makes them readable), \
                     or just disable it"
                )));
            }
        }
        self.catalog.delete_plugin(name)?;
        self.forget_file(&rec)?;
        tracing::info!(plugin = %name, "plugin removed");
        Ok(rec)
    }

    /// The registered bytes of `rec`, refused when they changed since install.
    fn verified_bytes(&self, rec: &PluginRecord) -> Result<Vec<u8>, RegistryError> {
        let path = self.path_of(rec);
        let bytes = std::fs::read(&path).map_err(|e| {
            RegistryError::Damaged(format!(
                "plugin `{}`: its file {} cannot be read ({e}); install it again",
                rec.name,
                path.display()
            ))
        })?;
        let sha = sha256_hex(&bytes);
        if sha != rec.sha256 {
            tracing::error!(plugin = %rec.name, path = %path.display(), "plugin file was modified; refusing to load it");
            return Err(RegistryError::Damaged(format!(
                "plugin `{}` was modified after it was installed (sha256 {sha}, registered {}); refusing to run it — \
                 install it again if the change is yours",
                rec.name, rec.sha256
            )));
        }
        Ok(bytes)
    }

    fn component(&self, rec: &PluginRecord) -> Result<Component, RegistryError> {
        // The bytes are checked on every load, even when a compiled form is
        // at hand: the file on disk is what the admin can see and audit.
        let bytes = self.verified_bytes(rec)?;
        if let Some(c) = self
            .components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&rec.sha256)
        {
            return Ok(c.clone());
        }
        let c = compile_component(&bytes, Some(&self.cache_dir)).map_err(load_error)?;
        self.components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(rec.sha256.clone(), c.clone());
        Ok(c)
    }

    /// Settings and secrets for a plugin, secrets read from the environment.
    fn settings(&self, name: &str, cfg: &PluginConfig) -> Result<PluginSettings, RegistryError> {
        let mut s: PluginSettings = cfg
            .settings
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    SettingValue {
                        value: v.clone(),
                        secret: false,
                    },
                )
            })
            .collect();
        for (key, var) in &cfg.secrets {
            let value = std::env::var(var).map_err(|_| {
                RegistryError::FailedPrecondition(format!(
                    "plugin `{name}`: secret `{key}` comes from the environment variable {var}, which the server \
                     process does not have (set it where the server starts)"
                ))
            })?;
            // An empty secret is a variable set by mistake (`VAR=` in a unit
            // file), not a credential.
            if value.trim().is_empty() {
                return Err(RegistryError::FailedPrecondition(format!(
                    "plugin `{name}`: secret `{key}` comes from the environment variable {var}, which is empty in \
                     the server's environment (set it to the secret where the server starts)"
                )));
            }
            s.insert(key.clone(), SettingValue { value, secret: true });
        }
        Ok(s)
    }

    fn limits(cfg: &PluginConfig, default_timeout: Duration) -> PluginLimits {
        let mut l = PluginLimits {
            call_timeout: default_timeout,
            ..PluginLimits::default()
        };
        if let Some(c) = cfg.limits {
            if let Some(m) = c.memory_mib {
                l.memory_bytes = usize::try_from(m.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
            }
            if let Some(t) = c.call_timeout_seconds.filter(|t| t.is_finite() && *t > 0.0) {
                l.call_timeout = Duration::from_secs_f64(t.min(MAX_CALL_TIMEOUT_SECONDS));
            }
        }
        l
    }

    fn allowed_hosts(name: &str, cfg: &PluginConfig) -> Result<Vec<HostPattern>, RegistryError> {
        cfg.allowed_hosts
            .iter()
            .map(|h| HostPattern::parse(h).map_err(|e| RegistryError::InvalidArgument(format!("plugin `{name}`: {e}"))))
            .collect()
    }

    /// An enabled plugin of `kind` by name, or a clear error.
    fn enabled(&self, name: &str, kind: PluginKind) -> Result<PluginRecord, RegistryError> {
        let rec = self.get(name)?;
        if rec.kind != kind {
            return Err(RegistryError::InvalidArgument(format!(
                "plugin `{name}` is a {} plugin, not a {kind} plugin",
                rec.kind
            )));
        }
        if !rec.enabled {
            return Err(RegistryError::FailedPrecondition(format!(
                "plugin `{name}` is disabled; enable it with `wimguard plugin enable {name}`"
            )));
        }
        Ok(rec)
    }

    /// The codec of an enabled codec plugin, loaded once per registered file.
    pub fn codec(&self, name: &str) -> Result<SharedCodec, RegistryError> {
        let rec = self.enabled(name, PluginKind::Codec)?;
        if let Some(c) = self.codecs.lock().unwrap_or_else(|p| p.into_inner()).get(&rec.sha256) {
            // Still refuse a file that changed since it was loaded.
            let c = c.clone();
            self.verified_bytes(&rec)?;
            return Ok(c);
        }
        let cfg = self.config_of(name);
        let settings = self.settings(name, &cfg)?;
        let codec: Box<dyn Codec> = if rec.runtime == PluginRuntime::Native {
            let bytes = self.verified_bytes(&rec)?;
            let trusted = cfg.trusted
                && cfg
                    .sha256
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case(&rec.sha256));
            if !trusted {
                return Err(RegistryError::PermissionDenied(format!(
                    "native plugin `{name}` is not trusted for sha256 {} in config.yaml (`plugins.{name}.trusted: \
                     true` and `sha256: …`); refusing to load it",
                    rec.sha256
                )));
            }
            drop(bytes);
            Box::new(
                NativeCodec::load(&self.path_of(&rec), &rec.sha256, true, settings)
                    .map_err(|e| RegistryError::FailedPrecondition(format!("native plugin `{name}`: {e}")))?,
            )
        } else {
            let component = self.component(&rec)?;
            let limits = Self::limits(&cfg, PluginLimits::default().call_timeout);
            Box::new(WasmCodec::from_component(&component, &rec.sha256, settings, limits).map_err(load_error)?)
        };

        if codec.name() != rec.codec_id {
            return Err(RegistryError::Damaged(format!(
                "plugin `{name}` now calls its codec `{}`, but it registered `{}`",
                codec.name(),
                rec.codec_id
            )));
        }
        let mut codecs = self.codecs.lock().unwrap_or_else(|p| p.into_inner());
        // Two first uses at once both loaded it: keep the first one.
        if let Some(c) = codecs.get(&rec.sha256) {
            return Ok(c.clone());
        }
        let codec: SharedCodec = Arc::from(codec);
        codecs.insert(rec.sha256.clone(), codec.clone());
        Ok(codec)
    }

    /// How many more times the server repeats a transiently failed request
    /// of destination plugin `name` (`plugins.NAME.retries`, default 1).
    pub fn store_retries(&self, name: &str) -> u32 {
        self.config_of(name).retries.unwrap_or(1)
    }

    /// The codec plugin that provides codec id `id` (for reading archives).
    pub fn codec_by_id(&self, id: &str) -> Result<SharedCodec, RegistryError> {
        let rec = self
            .catalog
            .list_plugins()?
            .into_iter()
            .find(|p| p.codec_id == id)
            .ok_or_else(|| {
                RegistryError::FailedPrecondition(format!(
                    "this archive was compressed by the codec plugin `{id}`, which is not installed; install it with \
                 `wimguard plugin install FILE`"
                ))
            })?;
        self.codec(&rec.name)
    }

    /// An enabled hook plugin, ready to call, and its failure policy. The
    /// linked component is kept, so each call only instantiates it.
    pub fn hook(&self, name: &str) -> Result<(WasmHook, FailurePolicy), RegistryError> {
        let rec = self.enabled(name, PluginKind::Hook)?;
        if rec.runtime != PluginRuntime::Wasm {
            return Err(RegistryError::InvalidArgument(format!(
                "hook plugin `{name}` is native; hooks run only as wasm components"
            )));
        }
        let cfg = self.config_of(name);
        let policy = cfg.failure_policy.unwrap_or_default();
        // Checks the file even when the hook is at hand.
        let component = self.component(&rec)?;
        let key = (rec.name.clone(), rec.sha256.clone());
        if let Some(h) = self.hooks.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok((h.clone(), policy));
        }
        let hook = WasmHook::new(
            &component,
            name,
            self.settings(name, &cfg)?,
            Self::limits(&cfg, Duration::from_secs(30)),
            Self::allowed_hosts(name, &cfg)?,
            cfg.allow_private,
        )
        .map_err(load_error)?;
        self.hooks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, hook.clone());
        Ok((hook, policy))
    }
}

impl PluginRegistry {
    /// An enabled destination plugin, ready to call (its first call makes
    /// an instance and runs `init`). The handle is kept, so its instances
    /// are reused across uploads. Errors: `NotFound` (not installed),
    /// `FailedPrecondition` (disabled, or its file or settings are unusable),
    /// `InvalidArgument` (not a destination plugin).
    pub fn destination(&self, name: &str) -> Result<WasmDestination, RegistryError> {
        let rec = self.enabled(name, PluginKind::Destination)?;
        if rec.runtime != PluginRuntime::Wasm {
            return Err(RegistryError::InvalidArgument(format!(
                "destination plugin `{name}` is native; destinations run only as wasm components"
            )));
        }
        // Checks the file even when the destination is at hand.
        let component = self.component(&rec)?;
        let key = (rec.name.clone(), rec.sha256.clone());
        if let Some(d) = self.destinations.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(d.clone());
        }
        let cfg = self.config_of(name);
        let destination = WasmDestination::new(
            &component,
            name,
            self.settings(name, &cfg)?,
            Self::limits(&cfg, super::destination::DEFAULT_CALL_TIMEOUT),
            Self::allowed_hosts(name, &cfg)?,
            cfg.allow_private,
        )
        .map_err(load_error)?;
        let mut cache = self.destinations.lock().unwrap_or_else(|p| p.into_inner());
        // Two first uses at once: keep the first, so they share instances.
        Ok(cache.entry(key).or_insert(destination).clone())
    }
}

/// The longest call time limit config may set (a day).
const MAX_CALL_TIMEOUT_SECONDS: f64 = 86_400.0;

/// The most memory config may give a plugin: all a wasm32 instance can address.
const MAX_MEMORY_MIB: u64 = 4096;

/// The longest compile time limit config may set (an hour).
const MAX_COMPILE_SECONDS: f64 = 3600.0;

/// The least compile memory config may set: the compiler process itself
/// (this binary's mappings) needs some 60 MiB before it compiles a byte.
const MIN_COMPILE_MEMORY_MIB: u64 = 256;

/// The largest function body WebAssembly allows (7,654,321 bytes), in KiB.
const MAX_FUNCTION_KIB: u64 = 7474;

/// The compile limits of `pluginInstall:` (defaults for unset keys); the
/// error names the key and says what to fix.
fn compile_limits(cfg: &PluginInstallConfig) -> Result<CompileLimits, String> {
    let mut limits = CompileLimits::default();
    if let Some(t) = cfg.compile_timeout_seconds {
        if !(t.is_finite() && t > 0.0 && t <= MAX_COMPILE_SECONDS) {
            return Err(format!(
                "compileTimeoutSeconds must be more than 0 and at most {MAX_COMPILE_SECONDS}, not {t}"
            ));
        }
        limits.timeout = Duration::from_secs_f64(t);
    }
    if let Some(m) = cfg.compile_memory_mib {
        if !(MIN_COMPILE_MEMORY_MIB..=1 << 20).contains(&m) {
            return Err(format!(
                "compileMemoryMib must be between {MIN_COMPILE_MEMORY_MIB} and {}, not {m}",
                1 << 20
            ));
        }
        limits.memory_bytes = m << 20;
    }
    if let Some(k) = cfg.max_function_kib {
        if !(1..=MAX_FUNCTION_KIB).contains(&k) {
            return Err(format!(
                "maxFunctionKib must be between 1 and {MAX_FUNCTION_KIB}, not {k}"
            ));
        }
        limits.max_function_bytes = (k << 10) as usize;
    }
    Ok(limits)
}

/// Checks one `plugins.<name>` entry of config.yaml; the error says what to fix.
fn check_config(name: &str, cfg: &PluginConfig) -> Result<(), String> {
    if !valid_name(name) {
        return Err("not a plugin name (plugin names are [a-z0-9-], 1..=64 bytes)".into());
    }
    for h in &cfg.allowed_hosts {
        HostPattern::parse(h).map_err(|e| format!("allowedHosts: {e}"))?;
    }
    if let Some(l) = cfg.limits {
        if let Some(m) = l.memory_mib {
            if m == 0 || m > MAX_MEMORY_MIB {
                return Err(format!(
                    "limits.memoryMib must be between 1 and {MAX_MEMORY_MIB}, not {m}"
                ));
            }
        }
        if let Some(t) = l.call_timeout_seconds {
            if !(t.is_finite() && t > 0.0 && t <= MAX_CALL_TIMEOUT_SECONDS) {
                return Err(format!(
                    "limits.callTimeoutSeconds must be more than 0 and at most {MAX_CALL_TIMEOUT_SECONDS}, not {t}"
                ));
            }
        }
    }
    if let Some(r) = cfg.retries.filter(|&r| r > 10) {
        return Err(format!("retries must be between 0 and 10, not {r}"));
    }
    for (key, var) in &cfg.secrets {
        if var.is_empty() || var.contains('=') || var.contains('\0') {
            return Err(format!(
                "secrets.{key} must name an environment variable of the server, not {var:?}"
            ));
        }
    }
    match (&cfg.sha256, cfg.trusted) {
        (Some(sha), _) if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) => Err(format!(
            "sha256 must be 64 hex digits (the output of sha256sum), not {sha:?}"
        )),
        (None, true) => Err("trusted: true needs the sha256 of the exact file you trust (sha256sum FILE)".into()),
        _ => Ok(()),
    }
}

fn not_installed(name: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "no plugin named `{name}` is installed (see `wimguard plugin list`)"
    ))
}

/// A file refused at install: the file is at fault, whatever stopped it
/// (wrong world, a trap or a limit in `info`/`describe`...).
/// Refuses, with what to do instead, files that are not binary components:
/// wasmtime would take a text file for the WebAssembly text format and
/// report a parse error in it, and a core module's error names the layer.
fn check_component_header(bytes: &[u8]) -> Result<(), RegistryError> {
    const BUILD: &str = "build the plugin with `cargo build --release --target wasm32-wasip2` (sdk/README.md) and \
                         install the .wasm file it writes";
    if !bytes.starts_with(b"\0asm") {
        return Err(RegistryError::InvalidArgument(format!(
            "not a valid WebAssembly component: the file does not start with the wasm magic bytes \\0asm; {BUILD}"
        )));
    }
    // The version field: 1 is a core module; components have their own.
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err(RegistryError::InvalidArgument(format!(
            "not a valid WebAssembly component: this is a core wasm module, and plugins are components; {BUILD}, \
             or wrap the module with `wasm-tools component new`"
        )));
    }
    Ok(())
}

fn install_error(e: PluginError) -> RegistryError {
    match e {
        PluginError::Cache { .. } | PluginError::Internal { .. } => RegistryError::Internal(e.to_string()),
        _ => RegistryError::InvalidArgument(e.to_string()),
    }
}

/// A registered plugin that cannot be loaded for a stage (it fails its
/// `init`, traps, or this host can no longer compile it).
fn load_error(e: PluginError) -> RegistryError {
    match e {
        PluginError::Cache { .. } | PluginError::Internal { .. } => RegistryError::Internal(e.to_string()),
        _ => RegistryError::FailedPrecondition(e.to_string()),
    }
}
