//! The shared engine, the component cache, the host side of the imports
//! (`log`, `config`, `progress`, an empty WASI) and the error type.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
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
        // Hooks run as async calls so that a wall-clock limit can stop a
        // guest that waits inside the host (a sleep, a slow HTTP body),
        // which the epoch deadline cannot reach.
        exports: { default: async },
        with: {
            "wimguard:plugin/types": super::bindings::wimguard::plugin::types,
            "wimguard:plugin/log": super::bindings::wimguard::plugin::log,
            "wimguard:plugin/config": super::bindings::wimguard::plugin::config,
            "wimguard:plugin/progress": super::bindings::wimguard::plugin::progress,
        },
    });
}

/// Bindings for the destination world: async like hooks (uploads wait on
/// the network inside the host), sharing the host interfaces of [`bindings`].
pub(crate) mod destination_bindings {
    wasmtime::component::bindgen!({
        path: "sdk/wit",
        world: "destination-plugin",
        exports: { default: async },
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

/// The well-known `host-info` extras key that tells a plugin the time limit
/// of each of its calls, in milliseconds (sent to destination plugins, so
/// that their retries stop in time; see `sdk/wit/types.wit`).
pub const CALL_TIMEOUT_EXTRA: &str = "call-timeout-ms";

/// [`host_info`] with the call time limit in its extras.
pub(crate) fn host_info_with_limit(limit: Duration) -> types::HostInfo {
    let mut info = host_info();
    info.extras
        .push((CALL_TIMEOUT_EXTRA.to_string(), limit.as_millis().to_string()));
    info
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

/// The settings of the plugin engine; the compiler child
/// (`super::compile`) uses the same, so its output loads here.
pub(crate) fn engine_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config
}

/// The one engine every plugin runs on (created on first use, with its
/// epoch ticker thread).
pub fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let engine = Engine::new(&engine_config()).expect("the wasmtime engine configuration is valid");
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
    /// The caller gave up on the call (the backup was cancelled).
    #[error("plugin {plugin}: `{call}` was stopped because the backup was cancelled")]
    Cancelled { plugin: String, call: &'static str },
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
    /// Compiling an uploaded component hit a limit of `pluginInstall`.
    #[error("plugin {plugin}: {what}; refused (the limit is `pluginInstall.{key}` in config.yaml)")]
    CompileLimit {
        plugin: String,
        what: String,
        key: &'static str,
    },
    /// The host could not do its part (start the compiler process...).
    #[error("plugin {plugin}: {reason}")]
    Internal { plugin: String, reason: String },
    /// Reading or writing the component cache failed.
    #[error("plugin cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// What one store holds: the WASI context (empty), the limiter, and what the
/// host imports need.
pub(crate) struct HostState {
    wasi: WasiCtx,
    /// The guest's stderr, for the last words of a crash.
    stderr: GuestOutput,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    plugin: Arc<str>,
    settings: Arc<PluginSettings>,
    http: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http_policy: super::http::HttpPolicy,
    /// What ends the current synchronous call (see [`arm_call`]).
    call: CallBudget,
}

/// When the running synchronous call must stop: at its deadline, or as soon
/// as its caller raises the cancel flag.
#[derive(Default)]
struct CallBudget {
    deadline: Option<Instant>,
    cancel: Option<Arc<AtomicBool>>,
}

/// The error a synchronous call ends with when its caller cancelled it.
#[derive(Debug)]
struct CallCancelled;

impl std::fmt::Display for CallCancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call was cancelled by its caller")
    }
}

impl std::error::Error for CallCancelled {}

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
        let stderr = GuestOutput::new(plugin.clone(), "stderr");
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput::new(plugin.clone(), "stdout"))
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        HostState {
            wasi,
            stderr,
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory_bytes),
            plugin,
            settings,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_policy,
            call: CallBudget::default(),
        }
    }
}

/// The memory limit of one plugin instance, counted over **all** its linear
/// memories (a component may declare several; a per-memory cap would let it
/// use many times its limit), plus caps on tables and instances.
pub(crate) struct Limiter {
    /// The most bytes of linear memory the instance may hold in total.
    memory_limit: usize,
    /// Bytes of linear memory granted so far (memories never shrink).
    memory_used: usize,
    /// The bytes of the last grant, taken back if wasmtime then fails the
    /// grow (past the memory's own maximum, or the OS refused).
    last_grant: usize,
    /// Set when a grow was refused, so the resulting trap is reported as
    /// "memory limit" rather than as a crash.
    pub(crate) memory_hit: bool,
}

/// Table elements one table may hold (function tables of large Rust
/// components have a few thousand).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl Limiter {
    fn new(memory_limit: usize) -> Limiter {
        Limiter {
            memory_limit,
            memory_used: 0,
            last_grant: 0,
            memory_hit: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let extra = desired.saturating_sub(current);
        let total = self.memory_used.saturating_add(extra);
        if total > self.memory_limit {
            self.memory_hit = true;
            // An error (not `Ok(false)`) traps at the grow: a guest whose
            // allocator ignores a failed grow cannot limp on.
            wasmtime::bail!(
                "memory limit: growing to {total} bytes in all would exceed {} bytes",
                self.memory_limit
            );
        }
        self.memory_used = total;
        self.last_grant = extra;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_used -= std::mem::take(&mut self.last_grant);
        Ok(())
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1000
    }

    fn tables(&self) -> usize {
        1000
    }

    fn memories(&self) -> usize {
        100
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
    /// Codec and hook calls are short, and the caller of a destination
    /// counts the bytes it hands over itself, so reports only reach the
    /// debug log.
    fn report(&mut self, bytes: u64, items: u64) {
        tracing::debug!(target: "wimguard::plugin", plugin = &*self.plugin, bytes, items, "progress");
    }
}

/// `HasData` for the WASI io interfaces, which work on the resource table.
struct IoTable;

impl wasmtime::component::HasData for IoTable {
    type Data<'a> = &'a mut ResourceTable;
}

/// What codec plugins get from WASI: the io streams (sync: a codec's only
/// streams are its stdio, which never block) and the cli interfaces that
/// Rust std imports.
fn add_wasi_base(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    wasmtime_wasi::p2::bindings::sync::io::poll::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    wasmtime_wasi::p2::bindings::sync::io::streams::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    add_wasi_cli(l)
}

/// The cli interfaces: stdio goes to the log; environment, arguments and
/// stdin are empty; `exit` ends the call.
fn add_wasi_cli(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::p2::bindings::cli;
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

/// The linker for hook and destination plugins (their worlds import the
/// same host interfaces): the WASI base plus
/// clocks, random and `wasi:http` (every request checked against the
/// plugin's allow-list); never filesystem or sockets.
///
/// Its io and http functions are async: instances made with it are driven
/// by [`run_bounded`], whose wall-clock limit also stops a guest blocked in
/// the host (a sleep, a stalled response body). Calls go through the
/// `*_async` APIs.
pub(crate) fn hook_linker(component: &Component) -> Result<Linker<HostState>, wasmtime::Error> {
    let _ = component;
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::{clocks, random};
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
    use wasmtime_wasi_io::bindings::wasi::io;
    let mut linker = Linker::new(engine());
    let l = &mut linker;
    io::error::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    io::poll::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    io::streams::add_to_linker::<HostState, IoTable>(l, |t| &mut t.table)?;
    add_wasi_cli(l)?;
    clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
    random::random::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    random::insecure::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(l)?;
    hook_bindings::HookPlugin::add_to_linker::<HostState, HasSelf<HostState>>(l, |s| s)?;
    Ok(linker)
}

/// Links a hook or destination `component` (its imports checked against
/// what `kind` is granted) and makes its world's typed `InstancePre` with
/// `typed` (`HookPluginPre::new`, `DestinationPluginPre::new`). Errors name
/// the plugin.
pub(crate) fn linked_pre<P>(
    component: &Component,
    kind: &str,
    name: &str,
    typed: impl FnOnce(wasmtime::component::InstancePre<HostState>) -> wasmtime::Result<P>,
) -> Result<P, PluginError> {
    let wrong = |reason: String| PluginError::WrongWorld {
        plugin: name.to_string(),
        reason,
    };
    check_imports(component, kind, name)?;
    let linker = hook_linker(component).map_err(|e| wrong(format!("host linker: {e:#}")))?;
    let pre = linker.instantiate_pre(component).map_err(|e| wrong(format!("{e:#}")))?;
    typed(pre).map_err(|e| wrong(format!("{e:#}")))
}

/// Why [`run_bounded`] gave up on a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// The wall-clock limit passed.
    TimedOut,
    /// The caller's cancel flag was raised.
    Cancelled,
}

/// The runtime that drives async plugin calls (hooks, destinations): their
/// HTTP connections and timers live here, apart from the server's runtime.
fn plugin_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wasm-plugin-io")
            .enable_all()
            .build()
            .expect("building the plugin I/O runtime")
    })
}

/// Runs `call` (an async plugin call) to completion on the plugin runtime,
/// blocking this thread, but for at most `limit` of wall-clock time and
/// only while `cancel` stays false. Giving up drops the future, which ends
/// the guest wherever it is (in wasm or waiting in the host); its store is
/// then unusable and must be dropped.
///
/// Must not be called from an async task (it blocks); the job threads and
/// `spawn_blocking` closures that call plugins are fine.
pub(crate) fn run_bounded<F: Future>(
    limit: Duration,
    cancel: Option<&AtomicBool>,
    call: F,
) -> Result<F::Output, Stopped> {
    plugin_runtime().block_on(async {
        let cancelled = async {
            match cancel {
                Some(flag) => loop {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                },
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            r = call => Ok(r),
            () = tokio::time::sleep(limit) => Err(Stopped::TimedOut),
            () = cancelled => Err(Stopped::Cancelled),
        }
    })
}

/// Makes an async call's store give control back to its caller at every
/// epoch tick instead of trapping at a deadline, so the wall-clock limit and
/// cancellation of [`run_bounded`] also stop a guest busy in wasm code.
pub(crate) fn yield_at_every_tick(store: &mut Store<HostState>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
}

/// Makes a [`Store`] for one instance, with its limiter, for synchronous
/// calls: at every epoch tick it checks the budget set by [`arm_call`]
/// (armed here with the call time limit, for instantiation). Async stores
/// switch to [`yield_at_every_tick`] instead.
pub(crate) fn new_store(
    plugin: Arc<str>,
    settings: Arc<PluginSettings>,
    limits: &PluginLimits,
    http_policy: super::http::HttpPolicy,
) -> Store<HostState> {
    let mut store = Store::new(engine(), HostState::new(plugin, settings, limits, http_policy));
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|ctx| at_tick(&ctx.data().call));
    arm_call(&mut store, limits.call_timeout, None);
    store
}

/// Arms `store` for its next synchronous call: it may run for `limit`, and
/// stops within a tick of `cancel` being raised (the call then fails with
/// [`PluginError::Cancelled`], see [`call_error`]). A codec call waits on
/// nothing in the host, so the epoch tick is where it can be stopped: this
/// costs one flag check per tick, nothing per call.
pub(crate) fn arm_call(store: &mut Store<HostState>, limit: Duration, cancel: Option<Arc<AtomicBool>>) {
    store.data_mut().call = CallBudget {
        deadline: Instant::now().checked_add(limit),
        cancel,
    };
    store.set_epoch_deadline(1);
}

/// What a synchronous call does at an epoch tick: stop when its caller
/// cancelled it, trap with [`Trap::Interrupt`] past its deadline, else run
/// on until the next tick.
fn at_tick(budget: &CallBudget) -> wasmtime::Result<UpdateDeadline> {
    if budget.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(wasmtime::Error::new(CallCancelled));
    }
    if budget.deadline.is_some_and(|d| Instant::now() >= d) {
        return Ok(UpdateDeadline::Interrupt);
    }
    Ok(UpdateDeadline::Continue(1))
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
    if err.downcast_ref::<CallCancelled>().is_some() {
        PluginError::Cancelled { plugin, call }
    } else if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
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
        // The trap's kind (not wasmtime's multi-line backtrace, which is in
        // the debug log), and what the guest said before it died.
        tracing::debug!(target: "wimguard::plugin", plugin = %plugin, "`{call}` failed: {err:?}");
        let what = match err.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{err:#}").lines().next().unwrap_or_default().to_string(),
        };
        let reason = match store.data().stderr.last_words() {
            Some(words) => format!("{what}; it said: {words}"),
            None => what,
        };
        PluginError::Trap { plugin, call, reason }
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
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The cache file of the component whose bytes have sha256 `digest`:
/// `<digest>-<engine compatibility hash>.cwasm`, so a new wasmtime or other
/// engine settings never load stale code.
fn cache_path(dir: &Path, digest: &str) -> PathBuf {
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
pub(crate) fn save_to_cache(component: &Component, digest: &str, dir: &Path) -> Result<(), PluginError> {
    let path = cache_path(dir, digest);
    let compiled = component.serialize().map_err(|e| PluginError::Cache {
        path: path.clone(),
        source: std::io::Error::other(format!("{e:#}")),
    })?;
    write_cache(&path, &compiled)
}

/// Deletes every compiled form of the component with sha256 `digest`
/// (all engine versions); what cannot be deleted is only logged.
pub(crate) fn remove_from_cache(digest: &str, dir: &Path) {
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
fn write_cache(path: &Path, compiled: &[u8]) -> Result<(), PluginError> {
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
    /// The last few lines written, so a crash can quote the guest's own
    /// explanation (a Rust panic message goes to stderr just before the trap).
    recent: Arc<Mutex<std::collections::VecDeque<String>>>,
}

/// Lines of guest output kept for crash reports.
const RECENT_LINES: usize = 4;

/// Longest line kept before it is emitted anyway.
const MAX_LINE: usize = 4096;

impl GuestOutput {
    fn new(plugin: Arc<str>, stream: &'static str) -> Self {
        GuestOutput {
            plugin,
            stream,
            pending: Arc::default(),
            recent: Arc::default(),
        }
    }

    /// What the guest said last that explains a crash: the message of a
    /// Rust panic (the line after "panicked at …"), else its last line.
    fn last_words(&self) -> Option<String> {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let panic_at = recent.iter().rposition(|l| l.contains("panicked at"));
        let line = match panic_at {
            Some(i) => recent.get(i + 1).or(recent.get(i)),
            None => recent.back(),
        }?;
        let mut line = line.trim().to_string();
        if line.len() > 300 {
            let cut = (0..=300).rev().find(|&i| line.is_char_boundary(i)).unwrap_or(0);
            line.truncate(cut);
            line.push('…');
        }
        Some(line)
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
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() == RECENT_LINES {
                recent.pop_front();
            }
            recent.push_back(text.chars().take(1024).collect());
        }
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

/// The `&'static str` that [`wimguard_sdk::Codec::name`] returns for a
/// plugin's codec id. Each distinct id is stored once for the life of the
/// process, so loading a plugin again (upgrade, restart of its runtime)
/// does not grow memory; the codec itself is freed when unused.
pub fn codec_name(id: &str) -> &'static str {
    static NAMES: std::sync::OnceLock<Mutex<std::collections::HashSet<&'static str>>> = std::sync::OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.get(id) {
        return n;
    }
    let n: &'static str = Box::leak(id.to_owned().into_boxed_str());
    names.insert(n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component whose core instances each have a memory of `pages` 64 KiB
    /// pages.
    fn memories(count: usize, pages: u32) -> Component {
        let mut wat = String::from("(component\n");
        for i in 0..count {
            wat.push_str(&format!(
                "  (core module $m{i} (memory {pages}))\n  (core instance (instantiate $m{i}))\n"
            ));
        }
        wat.push(')');
        Component::new(engine(), wat).unwrap()
    }

    fn instantiate(component: &Component, limit_mib: usize) -> Result<(), PluginError> {
        let limits = PluginLimits {
            memory_bytes: limit_mib << 20,
            call_timeout: Duration::from_secs(5),
        };
        let plugin: Arc<str> = "many-memories".into();
        let mut store = new_store(
            plugin.clone(),
            Arc::default(),
            &limits,
            super::super::http::HttpPolicy::deny_all(plugin),
        );
        let linker: Linker<HostState> = Linker::new(engine());
        linker
            .instantiate(&mut store, component)
            .map(drop)
            .map_err(|e| call_error(e, &store, "instantiate", &limits))
    }

    #[test]
    fn the_memory_limit_counts_every_memory_of_a_component() {
        // 6 MiB of memory fits a 10 MiB limit...
        instantiate(&memories(1, 96), 10).unwrap();
        // ...two memories of 6 MiB do not, though each alone would.
        let e = instantiate(&memories(2, 96), 10).unwrap_err();
        assert!(
            matches!(e, PluginError::MemoryLimit { limit, .. } if limit == 10 << 20),
            "{e:?}"
        );
        assert!(e.to_string().contains("many-memories"), "{e}");
        // Many small memories add up the same way.
        assert!(instantiate(&memories(20, 16), 10).is_err());
        instantiate(&memories(9, 16), 10).unwrap();
    }
}
