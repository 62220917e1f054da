//! Codec plugins as native [`Codec`]s.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wasmtime::component::Component;
use wasmtime::Store;
use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec, CodecError};

use super::host::bindings::exports::wimguard::plugin::codec as wit_codec;
use super::host::bindings::wimguard::plugin::types;
use super::host::bindings::{CodecPlugin, CodecPluginPre};
use super::host::{
    arm_call, call_error, codec_linker, compile_component, host_info, new_store, sha256_hex, valid_name, HostState,
    PluginError, PluginLimits, PluginSettings, API_MAJOR, API_MINOR,
};
use super::http::HttpPolicy;

/// A codec plugin loaded into the wasm runtime.
///
/// Implements [`Codec`]: every [`Codec::compressor`] /
/// [`Codec::decompressor`] gets its own store and instance (create one per
/// worker thread), initialised once and reused; an instance that trapped is
/// dropped and the next call instantiates a fresh one.
///
/// Errors: a failed decompression is a [`CodecError`] naming the plugin and
/// the limit or trap. A failed compression cannot be reported through
/// [`ChunkCompressor::compress`] (it returns only "compressed or not"): the
/// compressor keeps the error for [`ChunkCompressor::take_failure`], which
/// the WIM writer checks and then fails the image (nothing is committed),
/// and stops calling the plugin. Failures are also logged, counted and kept
/// ([`WasmCodec::compress_failures`], [`WasmCodec::last_compress_error`]).
/// Callers that want the error itself use [`WasmCodec::wasm_compressor`] and
/// [`WasmCompressor::try_compress`].
#[derive(Clone)]
pub struct WasmCodec {
    shared: Arc<Shared>,
}

struct Shared {
    pre: CodecPluginPre<HostState>,
    /// The plugin's name (from `info`), used in logs and errors.
    plugin: Arc<str>,
    /// The codec id (from `describe`), stored once per process for [`Codec::name`].
    id: &'static str,
    version: String,
    max_chunk_size: usize,
    settings: Arc<PluginSettings>,
    limits: PluginLimits,
    sha256: String,
    /// The instance made while validating at load, handed to the first user.
    spare: Mutex<Option<Live>>,
    compress_failures: AtomicU64,
    last_compress_error: Mutex<Option<String>>,
}

/// One store and its initialised instance.
struct Live {
    store: Store<HostState>,
    bindings: CodecPlugin,
}

impl WasmCodec {
    /// Loads a codec plugin from the bytes of its component.
    ///
    /// Compiles it (or loads it from `cache_dir`, see [`compile_component`]),
    /// checks that it is a `wimguard:plugin@1.x` codec plugin (its imports and
    /// exports match the `codec-plugin` world, `info` says kind `codec` and
    /// API major 1), and runs `init` once with `settings` so a bad
    /// configuration is reported here rather than at the first chunk.
    pub fn load(
        bytes: &[u8],
        settings: PluginSettings,
        limits: PluginLimits,
        cache_dir: Option<&Path>,
    ) -> Result<WasmCodec, PluginError> {
        let component = compile_component(bytes, cache_dir)?;
        Self::from_component(&component, &sha256_hex(bytes), settings, limits)
    }

    /// Like [`WasmCodec::load`] from an already compiled component;
    /// `sha256` is the hex digest of its bytes (used to name it in errors
    /// until its own name is known).
    pub fn from_component(
        component: &Component,
        sha256: &str,
        settings: PluginSettings,
        limits: PluginLimits,
    ) -> Result<WasmCodec, PluginError> {
        let label = format!("sha256:{}", sha256.get(..12).unwrap_or(sha256));
        let wrong = |reason: String| PluginError::WrongWorld {
            plugin: label.clone(),
            reason,
        };
        super::host::check_imports(component, "codec", &label)?;
        let linker = codec_linker(component).map_err(|e| wrong(format!("host linker: {e:#}")))?;
        let pre = linker.instantiate_pre(component).map_err(|e| wrong(format!("{e:#}")))?;
        let pre = CodecPluginPre::new(pre).map_err(|e| wrong(format!("{e:#}")))?;
        let settings = Arc::new(settings);

        // Ask `info` and `describe` on a throwaway instance (before `init`).
        let mut store = new_store(
            label.clone().into(),
            settings.clone(),
            &limits,
            HttpPolicy::deny_all(label.clone().into()),
        );
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|e| call_error(e, &store, "instantiate", &limits))?;
        let info = bindings
            .wimguard_plugin_plugin()
            .call_info(&mut store)
            .map_err(|e| call_error(e, &store, "info", &limits))?;
        if info.api_version.major != API_MAJOR {
            return Err(wrong(format!(
                "`{}` was built for plugin API {}.{}, this host speaks {API_MAJOR}.{API_MINOR}",
                info.name, info.api_version.major, info.api_version.minor
            )));
        }
        match &info.kind {
            types::PluginKind::Codec => {}
            other => return Err(wrong(format!("`{}` says it is a {other:?} plugin", info.name))),
        }
        if !valid_name(&info.name) {
            return Err(wrong(format!(
                "invalid plugin name {:?} (want [a-z0-9-], 1..=64 bytes)",
                info.name
            )));
        }
        arm_call(&mut store, limits.call_timeout, None);
        let desc = bindings
            .wimguard_plugin_codec()
            .call_describe(&mut store)
            .map_err(|e| call_error(e, &store, "describe", &limits))?;
        if desc.max_chunk_size == 0 {
            return Err(PluginError::Contract {
                plugin: info.name,
                call: "describe",
                reason: "max-chunk-size is 0".into(),
            });
        }
        drop((store, bindings));

        let shared = Arc::new(Shared {
            pre,
            plugin: info.name.as_str().into(),
            id: super::host::codec_name(&desc.id),
            version: info.version,
            max_chunk_size: desc.max_chunk_size as usize,
            settings,
            limits,
            sha256: sha256.to_string(),
            spare: Mutex::new(None),
            compress_failures: AtomicU64::new(0),
            last_compress_error: Mutex::new(None),
        });
        // A real instance with `init`, so bad settings fail the load.
        let live = shared.instantiate(None)?;
        *shared.spare.lock().unwrap_or_else(|p| p.into_inner()) = Some(live);
        Ok(WasmCodec { shared })
    }

    /// The plugin's name, from its `info`.
    pub fn plugin_name(&self) -> &str {
        &self.shared.plugin
    }

    /// The plugin's own version, from its `info`.
    pub fn plugin_version(&self) -> &str {
        &self.shared.version
    }

    /// The sha256 (hex) of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.shared.sha256
    }

    /// The limits every instance of this plugin runs under.
    pub fn limits(&self) -> PluginLimits {
        self.shared.limits
    }

    /// How many chunks were stored raw because the plugin failed (trap,
    /// limit, contract violation) while compressing them.
    pub fn compress_failures(&self) -> u64 {
        self.shared.compress_failures.load(Ordering::Relaxed)
    }

    /// The most recent compression failure, if any.
    pub fn last_compress_error(&self) -> Option<String> {
        self.shared
            .last_compress_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A compressor with a fallible API (see [`WasmCompressor::try_compress`]).
    pub fn wasm_compressor(&self) -> WasmCompressor {
        WasmCompressor {
            shared: self.shared.clone(),
            live: self.shared.take_spare(),
            failure: None,
            cancel: None,
        }
    }

    /// A decompressor with its own instance (created on first use).
    pub fn wasm_decompressor(&self) -> WasmDecompressor {
        WasmDecompressor {
            shared: self.shared.clone(),
            live: self.shared.take_spare(),
        }
    }
}

impl std::fmt::Debug for WasmCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmCodec")
            .field("plugin", &self.shared.plugin)
            .field("id", &self.shared.id)
            .field("sha256", &self.shared.sha256)
            .field("limits", &self.shared.limits)
            .finish()
    }
}

impl Shared {
    fn take_spare(&self) -> Option<Live> {
        self.spare.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A fresh store and instance, with `init` done (stopped early when
    /// `cancel` is raised).
    fn instantiate(&self, cancel: Option<&Arc<AtomicBool>>) -> Result<Live, PluginError> {
        let limits = &self.limits;
        let mut store = new_store(
            self.plugin.clone(),
            self.settings.clone(),
            limits,
            HttpPolicy::deny_all(self.plugin.clone()),
        );
        let bindings = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| call_error(e, &store, "instantiate", limits))?;
        let host = host_info();
        arm_call(&mut store, limits.call_timeout, cancel.cloned());
        match bindings.wimguard_plugin_plugin().call_init(&mut store, &host) {
            Ok(Ok(())) => Ok(Live { store, bindings }),
            Ok(Err(e)) => {
                let reason = match e {
                    types::InitError::BadConfig(m) => format!("bad configuration: {m}"),
                    types::InitError::Unavailable(m) => format!("unavailable: {m}"),
                    types::InitError::Other(m) => m,
                };
                Err(PluginError::Init {
                    plugin: self.plugin.to_string(),
                    reason,
                })
            }
            Err(e) => Err(call_error(e, &store, "init", limits)),
        }
    }

    fn record_compress_failure(&self, err: &PluginError) {
        if let PluginError::Cancelled { .. } = err {
            // Not the plugin's fault: the backup is being abandoned.
            tracing::debug!(plugin = %self.plugin, "{err}");
            return;
        }
        tracing::error!(plugin = %self.plugin, "compression failed: {err}");
        self.compress_failures.fetch_add(1, Ordering::Relaxed);
        *self.last_compress_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.to_string());
    }
}

impl Codec for WasmCodec {
    /// The codec id from the plugin's `describe` (e.g. `x-example-rle`).
    fn name(&self) -> &'static str {
        self.shared.id
    }

    fn max_chunk_size(&self) -> usize {
        self.shared.max_chunk_size
    }

    fn compressor(&self, _chunk_size: usize) -> Box<dyn ChunkCompressor> {
        Box::new(self.wasm_compressor())
    }

    fn decompressor(&self, _chunk_size: usize) -> Box<dyn ChunkDecompressor> {
        Box::new(self.wasm_decompressor())
    }
}

/// Runs `call` on the live instance (creating one first when needed),
/// within the plugin's time limit and stopped within a tick of `cancel`
/// being raised. On an error from wasmtime the instance is dropped, so the
/// next call starts fresh.
fn with_instance<R>(
    shared: &Shared,
    slot: &mut Option<Live>,
    name: &'static str,
    cancel: Option<&Arc<AtomicBool>>,
    call: impl FnOnce(&mut Live) -> wasmtime::Result<R>,
) -> Result<R, PluginError> {
    let mut live = match slot.take() {
        Some(live) => live,
        None => shared.instantiate(cancel)?,
    };
    arm_call(&mut live.store, shared.limits.call_timeout, cancel.cloned());
    let started = std::time::Instant::now();
    let r = call(&mut live);
    crate::metrics::plugin_call(&shared.plugin, name, started, r.is_ok());
    match r {
        Ok(r) => {
            *slot = Some(live);
            Ok(r)
        }
        Err(e) => Err(call_error(e, &live.store, name, &shared.limits)),
    }
}

/// Compresses chunks with one instance of a codec plugin.
pub struct WasmCompressor {
    shared: Arc<Shared>,
    live: Option<Live>,
    /// The first failure not yet taken by the writer.
    failure: Option<String>,
    /// The backup's cancel flag ([`ChunkCompressor::watch_cancel`]): a call
    /// in progress stops within an epoch tick of it being raised.
    cancel: Option<Arc<AtomicBool>>,
}

impl WasmCompressor {
    /// Compresses `chunk` into `out` (cleared first). `Ok(false)` means "not
    /// smaller, store it raw"; an error says what the plugin did wrong (the
    /// instance is then replaced on the next call).
    pub fn try_compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<bool, PluginError> {
        out.clear();
        let Some(max_out) = chunk.len().checked_sub(1) else {
            return Ok(false);
        };
        let Ok(max_out) = u32::try_from(max_out) else {
            return Ok(false);
        };
        let shared = &*self.shared;
        if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(PluginError::Cancelled {
                plugin: shared.plugin.to_string(),
                call: "compress",
            });
        }
        let result = with_instance(shared, &mut self.live, "compress", self.cancel.as_ref(), |l| {
            l.bindings
                .wimguard_plugin_codec()
                .call_compress(&mut l.store, chunk, max_out)
        })?;
        match result {
            None => Ok(false),
            Some(data) if data.len() > max_out as usize => Err(PluginError::Contract {
                plugin: shared.plugin.to_string(),
                call: "compress",
                reason: format!("returned {} bytes, more than max-out {max_out}", data.len()),
            }),
            Some(data) => {
                out.extend_from_slice(&data);
                Ok(true)
            }
        }
    }
}

impl ChunkCompressor for WasmCompressor {
    fn compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        // After a failure the writer fails the image anyway: do not spend
        // another time limit (or instantiate again) on each remaining chunk.
        if self.failure.is_some() {
            out.clear();
            return false;
        }
        match self.try_compress(chunk, out) {
            Ok(compressed) => compressed,
            Err(e) => {
                self.shared.record_compress_failure(&e);
                self.failure.get_or_insert_with(|| e.to_string());
                out.clear();
                false
            }
        }
    }

    fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }

    fn watch_cancel(&mut self, cancel: Arc<AtomicBool>) {
        self.cancel = Some(cancel);
    }
}

/// Decompresses chunks with one instance of a codec plugin.
pub struct WasmDecompressor {
    shared: Arc<Shared>,
    live: Option<Live>,
}

impl WasmDecompressor {
    /// Decodes `compressed` into exactly `out.len()` bytes, with the
    /// plugin's own failures kept apart from corrupt data.
    pub fn try_decompress(&mut self, compressed: &[u8], out: &mut [u8]) -> Result<Result<(), CodecError>, PluginError> {
        let shared = &*self.shared;
        let plugin = &shared.plugin;
        let Ok(out_len) = u32::try_from(out.len()) else {
            return Ok(Err(CodecError::new(format!(
                "plugin {plugin}: chunk of {} bytes is too large",
                out.len()
            ))));
        };
        let result = with_instance(shared, &mut self.live, "decompress", None, |l| {
            l.bindings
                .wimguard_plugin_codec()
                .call_decompress(&mut l.store, compressed, out_len)
        })?;
        Ok(match result {
            Ok(data) if data.len() == out.len() => {
                out.copy_from_slice(&data);
                Ok(())
            }
            Ok(data) => Err(CodecError::new(format!(
                "plugin {plugin}: decompress returned {} bytes, expected {}",
                data.len(),
                out.len()
            ))),
            Err(wit_codec::CodecError::Corrupt(m)) => {
                Err(CodecError::new(format!("plugin {plugin}: corrupt data: {m}")))
            }
            Err(wit_codec::CodecError::Unsupported(m)) => {
                Err(CodecError::new(format!("plugin {plugin}: unsupported: {m}")))
            }
            Err(wit_codec::CodecError::Other(m)) => Err(CodecError::new(format!("plugin {plugin}: {m}"))),
        })
    }
}

impl ChunkDecompressor for WasmDecompressor {
    fn decompress(&mut self, compressed: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        match self.try_decompress(compressed, out) {
            Ok(r) => r,
            Err(e) => Err(CodecError::new(e.to_string())),
        }
    }
}
