//! The shared engine, the component cache, the host side of the imports
//! (`log`, `config`, `progress`, an empty WASI) and the error type.

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Bindings generated from `sdk/wit` for the codec world.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "sdk/wit",
        world: "codec-plugin",
    });
}

/// Bindings for the hook world; the host interfaces are shared with
/// [`bindings`], so one set of `Host` impls serves every world.
pub(crate) mod hook_bindings {
    wasmtime::component::bindgen!({
        path: "sdk/wit",
        world: "hook-plugin",
        with: {
            "wimguard:plugin/types": super::bindings::wimguard::plugin::types,
            "wimguard:plugin/log": super::bindings::wimguard::plugin::log,
            "wimguard:plugin/config": super::bindings::wimguard::plugin::config,
            "wimguard:plugin/progress": super::bindings::wimguard::plugin::progress,
        },
    });
}

use bindings::wimguard::plugin::{config, log, progress, types};

/// The contract major version this host speaks.
pub const API_MAJOR: u16 = 1;
/// The contract minor version this host speaks.
pub const API_MINOR: u16 = 0;

/// What `init` is told about the host.
pub(crate) fn host_info() -> types::HostInfo {
    types::HostInfo {
        host_version: env!("CARGO_PKG_VERSION").into(),
        api_version: types::ApiVersion {
            major: API_MAJOR,
            minor: API_MINOR,
        },
        extras: Vec::new(),
    }
}

/// A plugin name: lowercase `[a-z0-9-]`, 1..=64 bytes.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// How often the background thread advances the engine's epoch. Deadlines
/// are measured in these ticks, so they are accurate to about one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The one engine every plugin runs on (created on first use, with its
/// epoch ticker thread).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).expect("the wasmtime engine configuration is valid");
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                ticker.increment_epoch();
            })
            .expect("spawning the wasm epoch thread");
        engine
    })
}

/// Resource limits applied to each instance of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// The most linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// How long one call into the plugin (including `init`) may run.
    pub call_timeout: Duration,
}

impl Default for PluginLimits {
    /// 256 MiB of memory and 10 s per call: generous for a codec working on
    /// chunks of at most a few MiB.
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(10),
        }
    }
}

impl PluginLimits {
    /// The deadline of one call in epoch ticks (at least 1).
    pub(crate) fn deadline_ticks(&self) -> u64 {
        let ticks = self.call_timeout.as_nanos().div_ceil(EPOCH_TICK.as_nanos());
        u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
    }
}

/// One value of the `config` import.
#[derive(Clone, PartialEq, Eq)]
pub struct SettingValue {
    pub value: String,
    /// A bound secret (from an environment variable): never logged or shown.
    pub secret: bool,
}

impl std::fmt::Debug for SettingValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.secret {
            f.write_str("<secret>")
        } else {
            self.value.fmt(f)
        }
    }
}

/// The admin's settings and bound secrets for one plugin, as the `config`
/// import hands them out.
pub type PluginSettings = BTreeMap<String, SettingValue>;

/// Plain settings (no secrets), e.g. for tests.
pub fn plain_settings<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> PluginSettings {
    pairs
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                SettingValue {
                    value: v.to_string(),
                    secret: false,
                },
            )
        })
        .collect()
}

/// Why a plugin could not be loaded or a call into it failed. Every variant
/// names the plugin (its name from `info`, or `sha256:<prefix>` before that
/// is known).
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a valid component, or compiling it failed.
    #[error("plugin {plugin}: not a valid WebAssembly component: {reason}")]
    Invalid { plugin: String, reason: String },
    /// The component is valid but not a plugin of a known world of API 1.x.
    #[error("plugin {plugin}: not a usable wimguard:plugin@1.x plugin: {reason}")]
    WrongWorld { plugin: String, reason: String },
    /// `init` refused to start.
    #[error("plugin {plugin}: init failed: {reason}")]
    Init { plugin: String, reason: String },
    /// A call ran past its epoch deadline and was interrupted.
    #[error("plugin {plugin}: `{call}` exceeded its time limit of {limit:?} and was stopped")]
    Timeout {
        plugin: String,
        call: &'static str,
        limit: Duration,
    },
    /// The instance tried to grow its memory past the limit.
    #[error("plugin {plugin}: `{call}` exceeded its memory limit of {limit} bytes and was stopped")]
    MemoryLimit {
        plugin: String,
        call: &'static str,
        limit: usize,
    },
    /// The plugin trapped (a panic, `unreachable`, an out-of-bounds access...).
    #[error("plugin {plugin}: `{call}` crashed (wasm trap): {reason}")]
    Trap {
        plugin: String,
        call: &'static str,
        reason: String,
    },
    /// The plugin asked for a capability its kind is not granted (it
    /// imports a filesystem or sockets, or sent HTTP to a host outside its
    /// allow-list).
    #[error("plugin {plugin}: `{call}` was stopped: {what} is not allowed for this plugin ({why})")]
    Denied {
        plugin: String,
        call: &'static str,
        what: String,
        why: String,
    },
    /// The plugin returned something the contract forbids.
    #[error("plugin {plugin}: `{call}` broke the codec contract: {reason}")]
    Contract {
        plugin: String,
        call: &'static str,
        reason: String,
    },
    /// Reading or writing the component cache failed.
    #[error("plugin cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// What one store holds: the WASI context (empty), the limiter, and what the
/// host imports need.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    plugin: Arc<str>,
    settings: Arc<PluginSettings>,
    http: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http_policy: super::http::HttpPolicy,
}

impl HostState {
    /// A fresh state for one instance of `plugin`.
    pub(crate) fn new(
        plugin: Arc<str>,
        settings: Arc<PluginSettings>,
        limits: &PluginLimits,
        http_policy: super::http::HttpPolicy,
    ) -> Self {
        // Empty WASI: no preopens, no env, no args, no sockets (the builder's
        // default socket check denies every address), empty stdin.
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput::new(plugin.clone(), "stdout"))
            .stderr(GuestOutput::new(plugin.clone(), "stderr"))
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: Limiter {
                inner: limits,
                memory_hit: false,
            },
            plugin,
            settings,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_policy,
        }
    }
}

/// [`StoreLimits`] plus a note of whether the memory limit was hit, so a
/// trap can be reported as "memory limit" rather than a generic crash.
pub(crate) struct Limiter {
    inner: StoreLimits,
    pub(crate) memory_hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let r = self.inner.memory_growing(current, desired, maximum);
        if !matches!(r, Ok(true)) {
            self.memory_hit = true;
        }
        r
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(target: "wimguard::plugin", plugin, "{message}"),
            log::Level::Debug => tracing::debug!(target: "wimguard::plugin", plugin, "{message}"),
            log::Level::Info => tracing::info!(target: "wimguard::plugin", plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "wimguard::plugin", plugin, "{message}"),
            log::Level::Error => tracing::error!(target: "wimguard::plugin", plugin, "{message}"),
        }
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).map(|v| v.value.clone())
    }

    fn list(&mut self) -> Vec<config::Entry> {
        self.settings
            .iter()
            .map(|(key, v)| config::Entry {
                key: key.clone(),
                secret: v.secret,
                extras: Vec::new(),
            })
            .collect()
    }
}

impl progress::Host for HostState {
    /// Codecs have no progress of their own (the writer counts bytes).
    fn report(&mut self, _bytes: u64, _items: u64) {}
}

/// `HasData` for the WASI io interfaces, which work on the resource table.
struct IoTable;

impl wasmtime::component::HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// What every plugin gets from WASI: io streams and the cli interfaces that
/// Rust std imports (stdio goes to the log; environment, arguments and
/// stdin are empty; `exit` ends the call).
fn add_wasi_base(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::p2::bindings::cli;
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    wasmtime_wasi::p2::bindings::sync::io::poll::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    wasmtime_wasi::p2::bindings::sync::io::streams::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    Ok(())
}

/// The import families each kind of plugin may use. Anything else
/// (`wasi:filesystem`, `wasi:sockets`, and for codecs also clocks, random
/// and http) is refused when the plugin is installed or loaded: a sandbox
/// that never links a capability cannot be talked into granting it.
fn allowed_imports(kind: &str) -> &'static [&'static str] {
    match kind {
        "codec" => &["wimguard:plugin/", "wasi:io/", "wasi:cli/"],
        _ => &[
            "wimguard:plugin/",
            "wasi:io/",
            "wasi:cli/",
            "wasi:clocks/",
            "wasi:random/",
            "wasi:http/types@",
            "wasi:http/outgoing-handler@",
        ],
    }
}

/// Refuses a component of `kind` that imports a capability its kind is not
/// granted, naming the plugin and the import.
pub(crate) fn check_imports(component: &Component, kind: &str, plugin: &str) -> Result<(), PluginError> {
    let allowed = allowed_imports(kind);
    let refused: Vec<String> = component
        .component_type()
        .imports(engine())
        .map(|(name, _)| name.to_string())
        .filter(|name| !allowed.iter().any(|p| name.starts_with(p)))
        .collect();
    // Name the most telling refusal: filesystem, then sockets, then the rest
    // (reading a file also pulls in clocks, which would hide the point).
    let rank = |n: &String| match n {
        n if n.starts_with("wasi:filesystem") => 0,
        n if n.starts_with("wasi:sockets") => 1,
        _ => 2,
    };
    let Some(name) = refused.iter().min_by_key(|n| rank(n)) else {
        return Ok(());
    };
    let why = match rank(name) {
        0 => "plugins get no filesystem",
        1 => "plugins get no sockets (hooks and destinations reach the network through wasi:http)",
        _ if kind == "codec" => "codec plugins are pure computation and get no WASI besides io and stdio",
        _ => "the sandbox does not grant it",
    };
    Err(PluginError::Denied {
        plugin: plugin.to_string(),
        call: "load",
        what: format!("the import `{name}`"),
        why: why.into(),
    })
}

/// The linker for codec plugins: the three host interfaces and the WASI
/// base, nothing else (see [`check_imports`]).
pub(crate) fn codec_linker(component: &Component) -> Result<Linker<HostState>, wasmtime::Error> {
    let _ = component;
    let mut linker = Linker::new(engine());
    add_wasi_base(&mut linker)?;
    bindings::CodecPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// The linker for hook (and later destination) plugins: the WASI base plus
/// clocks, random and `wasi:http` (every request checked against the
/// plugin's allow-list); never filesystem or sockets.
pub(crate) fn hook_linker(component: &Component) -> Result<Linker<HostState>, wasmtime::Error> {
    let _ = component;
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::{clocks, random};
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
    let mut linker = Linker::new(engine());
    let l = &mut linker;
    add_wasi_base(l)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_sync(l)?;
    hook_bindings::HookPlugin::add_to_linker::<HostState, HasSelf<HostState>>(l, |s| s)?;
    Ok(linker)
}

/// Makes a [`Store`] for one instance, with its limiter and no deadline yet.
pub(crate) fn new_store(
    plugin: Arc<str>,
    settings: Arc<PluginSettings>,
    limits: &PluginLimits,
    http_policy: super::http::HttpPolicy,
) -> Store<HostState> {
    let mut store = Store::new(engine(), HostState::new(plugin, settings, limits, http_policy));
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_trap();
    store.set_epoch_deadline(limits.deadline_ticks());
    store
}

/// Turns the error of a call into a [`PluginError`] that says which limit
/// (if any) stopped it.
pub(crate) fn call_error(
    err: wasmtime::Error,
    store: &Store<HostState>,
    call: &'static str,
    limits: &PluginLimits,
) -> PluginError {
    let plugin = store.data().plugin.to_string();
    if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        PluginError::Timeout {
            plugin,
            call,
            limit: limits.call_timeout,
        }
    } else if store.data().limiter.memory_hit {
        PluginError::MemoryLimit {
            plugin,
            call,
            limit: limits.memory_bytes,
        }
    } else {
        PluginError::Trap {
            plugin,
            call,
            reason: format!("{err:#}"),
        }
    }
}

/// A `Hasher` that feeds a sha256, to turn the engine's compatibility hash
/// into a stable file name.
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is read with `finalize`
    }
}

/// Hex of a sha256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compiles component `bytes`, or loads the compiled form from `cache_dir`.
///
/// The cache file is `<sha256 of bytes>-<engine compatibility hash>.cwasm`,
/// so a new wasmtime or different engine settings never load stale code.
/// Without a cache directory the component is just compiled.
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
    let mut h = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
    let compat = hex(&h.0.finalize()[..8]);
    let path = dir.join(format!("{digest}-{compat}.cwasm"));
    if path.is_file() {
        // SAFETY: `deserialize_file` runs the file's contents as native code.
        // The file is only ever written by `compile_component` below (via a
        // temporary file and an atomic rename), into a directory the daemon
        // owns and creates 0700, and its name binds both the source bytes'
        // sha256 and this engine's compatibility hash. wasmtime itself also
        // checks the header's version and configuration before using it.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => return Ok(c),
            Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable plugin cache entry: {e:#}"),
        }
    }
    let compiled = engine.precompile_component(bytes).map_err(invalid)?;
    let cache = |source| PluginError::Cache {
        path: path.clone(),
        source,
    };
    create_private_dir(dir).map_err(cache)?;
    let tmp = dir.join(format!(".{digest}-{compat}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, &compiled).map_err(cache)?;
    std::fs::rename(&tmp, &path).map_err(cache)?;
    // SAFETY: as above; `compiled` was produced by this engine just now.
    unsafe { Component::deserialize(engine, &compiled) }.map_err(invalid)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Guest stdout or stderr: complete lines go to `tracing`, tagged with the
/// plugin's name. Never blocks and never fails, so a chatty guest cannot
/// wedge or crash itself on output.
#[derive(Clone)]
struct GuestOutput {
    plugin: Arc<str>,
    stream: &'static str,
    pending: Arc<Mutex<Vec<u8>>>,
}

/// Longest line kept before it is emitted anyway.
const MAX_LINE: usize = 4096;

impl GuestOutput {
    fn new(plugin: Arc<str>, stream: &'static str) -> Self {
        GuestOutput {
            plugin,
            stream,
            pending: Arc::default(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            self.emit(&line[..line.len() - 1]);
        }
        if pending.len() > MAX_LINE {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let plugin = &*self.plugin;
        if self.stream == "stderr" {
            tracing::warn!(target: "wimguard::plugin", plugin, stream = self.stream, "{text}");
        } else {
            tracing::info!(target: "wimguard::plugin", plugin, stream = self.stream, "{text}");
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
