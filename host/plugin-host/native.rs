//! Trusted native codec plugins: shared libraries speaking the native ABI 1
//! of [`wimguard_sdk::native`] (a plugin crate built with the SDK feature
//! `native`).
//!
//! A native plugin runs **unsandboxed** inside the daemon: no memory limit,
//! no time limit, full access to the process and the file system. It is only
//! loaded when the admin marked it `trusted: true` and the file still has the
//! sha256 recorded when it was registered; otherwise [`NativeCodec::load`]
//! refuses with an error saying why. ABI 1 covers codec plugins only (hooks
//! and destinations are WebAssembly-only).
//!
//! Loading, in order: trust check; read the file; check its sha256 **before**
//! any of its code runs (`dlopen` runs a library's initialisers); copy the
//! verified bytes into a sealed memfd and `dlopen` that (see
//! `open_verified`); check `wimguard_native_abi_version()` (1); read the
//! plugin's static info and check it is a codec of plugin API 1.x; make one
//! instance so bad settings fail here rather than at the first chunk.
//!
//! A loaded library is never unloaded (see [`NativeCodec::load`]).

use super::host::{sha256_hex, valid_name, PluginSettings};
use std::ffi::c_void;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use libloading::os::unix::{Library as UnixLibrary, RTLD_LOCAL, RTLD_NOW};
use libloading::Library;
use wimguard_sdk::native::{
    self as abi, AbiVersionFn, CodecCompressFn, CodecDecompressFn, CodecFreeFn, CodecNewFn, PluginInfoFn, VecBuf,
    WgBuf, WgHostApi, WgPluginInfo, WgStr,
};
use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec, CodecError, API_VERSION};

/// The host's version, NUL-terminated for [`WgHostApi::host_version`].
const HOST_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// Why a native plugin could not be loaded or a call into it failed. Every
/// variant names the plugin (its name from its info, or `sha256:<prefix>`
/// of the registered digest before that is known).
#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The config does not mark the plugin trusted.
    #[error("plugin {plugin}: native plugins run unsandboxed; mark it `trusted: true` in config to allow it")]
    NotTrusted { plugin: String },
    /// The registered digest is not a sha256.
    #[error("plugin {plugin}: the registered sha256 {expected:?} is not 64 hex digits")]
    BadDigest { plugin: String, expected: String },
    /// Reading the library file failed.
    #[error("plugin {plugin}: cannot read {}: {source}", path.display())]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not the one that was registered.
    #[error("plugin {plugin}: plugin file changed since it was registered: sha256 {actual}, expected {expected}")]
    Changed {
        plugin: String,
        actual: String,
        expected: String,
    },
    /// `dlopen` (or the memfd it loads from) failed.
    #[error("plugin {plugin}: cannot load {}: {reason}", path.display())]
    Load {
        plugin: String,
        path: PathBuf,
        reason: String,
    },
    /// The library lacks the native ABI's symbols.
    #[error("plugin {plugin}: not a WimGuard native plugin: {reason}")]
    NotNative { plugin: String, reason: String },
    /// The library speaks another native ABI version.
    #[error("plugin {plugin}: built for native ABI {found}, this host speaks {expected}")]
    AbiVersion { plugin: String, found: u32, expected: u32 },
    /// The library is a native plugin, but not a usable codec plugin.
    #[error("plugin {plugin}: not a usable native codec plugin: {reason}")]
    WrongPlugin { plugin: String, reason: String },
    /// `init` refused to start (or panicked).
    #[error("plugin {plugin}: init failed: {reason}")]
    Init { plugin: String, reason: String },
    /// The plugin panicked; the instance was thrown away.
    #[error("plugin {plugin}: `{call}` crashed: {reason}")]
    Panic {
        plugin: String,
        call: &'static str,
        reason: String,
    },
    /// The plugin returned an error code outside the contract.
    #[error("plugin {plugin}: `{call}` failed: {reason}")]
    Call {
        plugin: String,
        call: &'static str,
        reason: String,
    },
    /// The plugin returned something the contract forbids.
    #[error("plugin {plugin}: `{call}` broke the codec contract: {reason}")]
    Contract {
        plugin: String,
        call: &'static str,
        reason: String,
    },
}

/// A trusted native codec plugin.
///
/// Implements [`Codec`]: every [`Codec::compressor`] /
/// [`Codec::decompressor`] owns its own native instance (create one per
/// worker thread), initialised once and reused; an instance that panicked
/// is freed and the next call creates a fresh one.
///
/// Errors: a failed decompression is a [`CodecError`] naming the plugin. A
/// failed compression cannot be reported through
/// [`ChunkCompressor::compress`] (it returns only "compressed or not"), so the
/// chunk is stored raw (the archive stays correct and readable by anyone),
/// the error is logged at `error` level, and it is counted and kept for the
/// caller: see [`NativeCodec::compress_failures`] and
/// [`NativeCodec::last_compress_error`]. Callers that want the error itself
/// use [`NativeCodec::native_compressor`] and
/// [`NativeCompressor::try_compress`].
///
/// Unlike a wasm plugin, a native one has no memory or time limit and a
/// crash other than a panic (a segfault, an abort) takes the daemon down:
/// that is what `trusted: true` accepts.
#[derive(Clone)]
pub struct NativeCodec {
    shared: Arc<Shared>,
}

struct Shared {
    functions: Functions,
    /// What the callbacks of every instance see.
    ctx: Arc<HostCtx>,
    /// The plugin's name (from its info), used in logs and errors.
    plugin: Arc<str>,
    /// The codec id, stored once per process for [`Codec::name`].
    id: &'static str,
    version: String,
    max_chunk_size: usize,
    sha256: String,
    /// The instance made while validating at load, handed to the first user.
    spare: Mutex<Option<Instance>>,
    compress_failures: AtomicU64,
    last_compress_error: Mutex<Option<String>>,
}

/// The codec entry points, copied out of the library (which is never
/// unloaded, so they stay valid).
#[derive(Clone, Copy)]
struct Functions {
    new: CodecNewFn,
    free: CodecFreeFn,
    compress: CodecCompressFn,
    decompress: CodecDecompressFn,
}

/// The state behind [`WgHostApi::ctx`].
struct HostCtx {
    plugin: Arc<str>,
    settings: PluginSettings,
}

/// One native instance; freed on drop.
struct Instance {
    raw: NonNull<c_void>,
    free: CodecFreeFn,
    /// Keeps the callbacks' `ctx` alive until after `free`.
    _ctx: Arc<HostCtx>,
}

// SAFETY: native ABI 1 lets an instance move between threads as long as one
// thread at a time uses it (the SDK requires the plugin type to be `Send`);
// `Instance` is only used through `&mut` (it is not `Sync`), and its `ctx`
// is an `Arc` of `Send + Sync` data.
unsafe impl Send for Instance {}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: `raw` came from `codec_new` of the library `free` belongs
        // to, is freed exactly once (here), and is not in use: we hold it
        // by value. The ctx it calls back into is alive (`_ctx`).
        unsafe { (self.free)(self.raw.as_ptr()) }
    }
}

impl NativeCodec {
    /// Loads the native codec plugin at `path`.
    ///
    /// Refuses unless `trusted` is true and the file's sha256 is
    /// `expected_sha256` (hex; checked before any of its code runs). Then
    /// loads it (from a sealed copy of the verified bytes, see
    /// `open_verified`), checks native ABI 1, plugin kind codec and plugin
    /// API major 1, and makes one instance with `settings` (what the SDK's
    /// `config` returns to the plugin) so a bad configuration is reported
    /// here.
    ///
    /// The library stays loaded for the life of the process, even after
    /// every `NativeCodec` of it is dropped: a Rust library has its own copy
    /// of std with thread-local destructors and a panic hook, and plugin
    /// code may have started threads; unloading it under them would crash
    /// the daemon. Each successful load keeps one more copy mapped and one
    /// memfd descriptor open (see `Loaded`): load a plugin once and clone
    /// the `NativeCodec` rather than reloading it.
    pub fn load(
        path: &Path,
        expected_sha256: &str,
        trusted: bool,
        settings: PluginSettings,
    ) -> Result<NativeCodec, NativeError> {
        let expected = normalise_digest(expected_sha256);
        let label = format!("sha256:{}", expected.get(..12).unwrap_or(&expected));
        if !trusted {
            return Err(NativeError::NotTrusted { plugin: label });
        }
        if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(NativeError::BadDigest {
                plugin: label,
                expected: expected_sha256.to_string(),
            });
        }
        let bytes = std::fs::read(path).map_err(|source| NativeError::Read {
            plugin: label.clone(),
            path: path.to_path_buf(),
            source,
        })?;
        let actual = sha256_hex(&bytes);
        if actual != expected {
            return Err(NativeError::Changed {
                plugin: label,
                actual,
                expected,
            });
        }
        let lib = open_verified(&label, path, &bytes)?;
        let not_native = |reason: String| NativeError::NotNative {
            plugin: label.clone(),
            reason,
        };

        // SAFETY: every ABI version has this symbol with type `AbiVersionFn`;
        // the pointer is only used while `lib` is loaded.
        let abi_version: AbiVersionFn = unsafe { symbol(&lib, abi::SYM_ABI_VERSION) }
            .map_err(|e| not_native(format!("{e} (build it with the wimguard-sdk feature `native`)")))?;
        // SAFETY: a function of no arguments returning a u32, per the ABI;
        // the file is trusted and verified.
        let found = unsafe { abi_version() };
        // Versions only add to earlier ones, so every version up to ours
        // loads; a newer one may rely on what this host does not have.
        if !(1..=abi::ABI_VERSION).contains(&found) {
            return Err(NativeError::AbiVersion {
                plugin: label.clone(),
                found,
                expected: abi::ABI_VERSION,
            });
        }

        // SAFETY: ABI 1 gives each of these symbols exactly this type; the
        // pointers are only used while the library is loaded, which is
        // forever once loading succeeds (and not at all if it fails).
        let info_fn: PluginInfoFn = unsafe { symbol(&lib, abi::SYM_PLUGIN_INFO) }.map_err(&not_native)?;
        let functions = Functions {
            // SAFETY: as above.
            new: unsafe { symbol(&lib, abi::SYM_CODEC_NEW) }.map_err(&not_native)?,
            // SAFETY: as above.
            free: unsafe { symbol(&lib, abi::SYM_CODEC_FREE) }.map_err(&not_native)?,
            // SAFETY: as above.
            compress: unsafe { symbol(&lib, abi::SYM_CODEC_COMPRESS) }.map_err(&not_native)?,
            // SAFETY: as above.
            decompress: unsafe { symbol(&lib, abi::SYM_CODEC_DECOMPRESS) }.map_err(&not_native)?,
        };

        // SAFETY: `info_fn` has the ABI's type; it returns null or a pointer
        // to static data of the library, which stays loaded while we read.
        let info = unsafe { read_info(info_fn) }.map_err(|reason| NativeError::WrongPlugin {
            plugin: label.clone(),
            reason,
        })?;
        if !valid_name(&info.name) {
            return Err(NativeError::WrongPlugin {
                plugin: label.clone(),
                reason: format!("invalid plugin name {:?} (want [a-z0-9-], 1..=64 bytes)", info.name),
            });
        }
        let plugin: Arc<str> = info.name.as_str().into();
        let wrong = |reason: String| NativeError::WrongPlugin {
            plugin: plugin.to_string(),
            reason,
        };
        if info.kind != "codec" {
            return Err(wrong(format!(
                "it says it is a {:?} plugin; native ABI 1 loads codec plugins only",
                info.kind
            )));
        }
        if info.api_major != API_VERSION.major {
            return Err(wrong(format!(
                "built for plugin API {}.{}, this host speaks {}.{}",
                info.api_major, info.api_minor, API_VERSION.major, API_VERSION.minor
            )));
        }
        if info.max_chunk_size == 0 {
            return Err(NativeError::Contract {
                plugin: plugin.to_string(),
                call: "plugin_info",
                reason: "max-chunk-size is 0".into(),
            });
        }

        // From here on plugin code runs with our callbacks and may leave
        // threads or thread-local destructors behind: never unload (see above).
        lib.keep_forever();
        let shared = Arc::new(Shared {
            functions,
            ctx: Arc::new(HostCtx {
                plugin: plugin.clone(),
                settings,
            }),
            plugin,
            id: crate::host::codec_name(&info.codec_id),
            version: info.version,
            max_chunk_size: info.max_chunk_size as usize,
            sha256: actual,
            spare: Mutex::new(None),
            compress_failures: AtomicU64::new(0),
            last_compress_error: Mutex::new(None),
        });
        // A real instance with `init`, so bad settings fail the load.
        let live = shared.instantiate()?;
        *shared.spare.lock().unwrap_or_else(|p| p.into_inner()) = Some(live);
        Ok(NativeCodec { shared })
    }

    /// The plugin's name, from its info.
    pub fn plugin_name(&self) -> &str {
        &self.shared.plugin
    }

    /// The plugin's own version, from its info.
    pub fn plugin_version(&self) -> &str {
        &self.shared.version
    }

    /// The codec id recorded with archives (same as [`Codec::name`]).
    pub fn codec_id(&self) -> &'static str {
        self.shared.id
    }

    /// The sha256 (hex) of the library file that was loaded.
    pub fn sha256(&self) -> &str {
        &self.shared.sha256
    }

    /// How many chunks were stored raw because the plugin failed (panic,
    /// contract violation) while compressing them.
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

    /// A compressor with a fallible API (see [`NativeCompressor::try_compress`]).
    pub fn native_compressor(&self) -> NativeCompressor {
        NativeCompressor {
            live: self.shared.take_spare(),
            shared: self.shared.clone(),
            failure: None,
        }
    }

    /// A decompressor with its own instance (created on first use).
    pub fn native_decompressor(&self) -> NativeDecompressor {
        NativeDecompressor {
            live: self.shared.take_spare(),
            shared: self.shared.clone(),
        }
    }
}

impl std::fmt::Debug for NativeCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeCodec")
            .field("plugin", &self.shared.plugin)
            .field("id", &self.shared.id)
            .field("sha256", &self.shared.sha256)
            .finish()
    }
}

impl Codec for NativeCodec {
    /// The codec id from the plugin's info (e.g. `x-example-rle`).
    fn name(&self) -> &'static str {
        self.shared.id
    }

    fn max_chunk_size(&self) -> usize {
        self.shared.max_chunk_size
    }

    fn compressor(&self, _chunk_size: usize) -> Box<dyn ChunkCompressor> {
        Box::new(self.native_compressor())
    }

    fn decompressor(&self, _chunk_size: usize) -> Box<dyn ChunkDecompressor> {
        Box::new(self.native_decompressor())
    }
}

impl Shared {
    fn take_spare(&self) -> Option<Instance> {
        self.spare.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// A fresh instance, with `init` done.
    fn instantiate(&self) -> Result<Instance, NativeError> {
        let api = WgHostApi {
            abi_version: abi::ABI_VERSION,
            size: size_of::<WgHostApi>() as u32,
            ctx: Arc::as_ptr(&self.ctx).cast_mut().cast(),
            host_version: WgStr {
                ptr: HOST_VERSION.as_ptr(),
                len: HOST_VERSION.len() - 1,
            },
            api_major: API_VERSION.major,
            api_minor: API_VERSION.minor,
            log: Some(host_log),
            config_get: Some(host_config_get),
            config_key: Some(host_config_key),
        };
        let mut message = Vec::new();
        let raw = {
            let err = VecBuf::new(&mut message);
            // SAFETY: `new` has the ABI's type; `api` and `err` are valid for
            // the call; `api.ctx` points into `self.ctx`, which the instance
            // keeps alive (its `_ctx`) until it is freed.
            unsafe { (self.functions.new)(&api, err.as_ptr()) }
        };
        match NonNull::new(raw) {
            Some(raw) => Ok(Instance {
                raw,
                free: self.functions.free,
                _ctx: self.ctx.clone(),
            }),
            None => Err(NativeError::Init {
                plugin: self.plugin.to_string(),
                reason: reason(message, "codec_new returned no instance and no reason"),
            }),
        }
    }

    fn record_compress_failure(&self, err: &NativeError) {
        tracing::error!(plugin = %self.plugin, "compression failed, storing the chunk uncompressed: {err}");
        self.compress_failures.fetch_add(1, Ordering::Relaxed);
        *self.last_compress_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(err.to_string());
    }
}

/// Compresses chunks with one instance of a native codec plugin.
pub struct NativeCompressor {
    // Before `shared`, so the instance is freed first.
    live: Option<Instance>,
    shared: Arc<Shared>,
    /// The first failure not yet taken by the writer.
    failure: Option<String>,
}

impl NativeCompressor {
    /// Compresses `chunk` into `out` (cleared first). `Ok(false)` means "not
    /// smaller, store it raw"; an error says what the plugin did wrong (after
    /// a panic the instance is replaced on the next call).
    pub fn try_compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<bool, NativeError> {
        out.clear();
        let Some(max_out) = chunk.len().checked_sub(1) else {
            return Ok(false);
        };
        let shared = &*self.shared;
        let live = match self.live.take() {
            Some(live) => live,
            None => shared.instantiate()?,
        };
        // Initialised room for the output, so reading back `out_len` bytes
        // is sound whatever the plugin wrote.
        out.resize(max_out, 0);
        let mut out_len = 0usize;
        let mut message = Vec::new();
        let code = {
            let err = VecBuf::new(&mut message);
            // SAFETY: `compress` has the ABI's type; `live` is an instance of
            // this library used by this thread only; `chunk` is readable and
            // `out` writable for `max_out` bytes, and they do not overlap;
            // `out_len` and `err` are valid for the call.
            unsafe {
                (shared.functions.compress)(
                    live.raw.as_ptr(),
                    chunk.as_ptr(),
                    chunk.len(),
                    out.as_mut_ptr(),
                    max_out,
                    &mut out_len,
                    err.as_ptr(),
                )
            }
        };
        let plugin = || shared.plugin.to_string();
        let result = match code {
            abi::WG_COMPRESSED if out_len <= max_out => {
                out.truncate(out_len);
                self.live = Some(live);
                return Ok(true);
            }
            abi::WG_COMPRESSED => Err(NativeError::Contract {
                plugin: plugin(),
                call: "compress",
                reason: format!("returned {out_len} bytes, more than max-out {max_out}"),
            }),
            abi::WG_NOT_COMPRESSED => {
                out.clear();
                self.live = Some(live);
                return Ok(false);
            }
            abi::WG_ERR_PANIC => Err(NativeError::Panic {
                plugin: plugin(),
                call: "compress",
                reason: reason(message, "panicked"),
            }),
            code => Err(NativeError::Call {
                plugin: plugin(),
                call: "compress",
                reason: format!("error {code}: {}", reason(message, "no message")),
            }),
        };
        // Any failure: drop (free) the instance; the next call gets a fresh one.
        out.clear();
        drop(live);
        result
    }
}

impl ChunkCompressor for NativeCompressor {
    fn compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
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
}

/// Decompresses chunks with one instance of a native codec plugin.
pub struct NativeDecompressor {
    // Before `shared`, so the instance is freed first.
    live: Option<Instance>,
    shared: Arc<Shared>,
}

impl NativeDecompressor {
    /// Decodes `compressed` into exactly `out.len()` bytes, with the
    /// plugin's own failures (a panic, an error outside the contract) kept
    /// apart from corrupt data.
    pub fn try_decompress(&mut self, compressed: &[u8], out: &mut [u8]) -> Result<Result<(), CodecError>, NativeError> {
        let shared = &*self.shared;
        let plugin = &*shared.plugin;
        let live = match self.live.take() {
            Some(live) => live,
            None => shared.instantiate()?,
        };
        let mut message = Vec::new();
        let code = {
            let err = VecBuf::new(&mut message);
            // SAFETY: `decompress` has the ABI's type; `live` is an instance
            // of this library used by this thread only; `compressed` is
            // readable and `out` writable for their lengths, and they do not
            // overlap (`&` and `&mut`); `err` is valid for the call.
            unsafe {
                (shared.functions.decompress)(
                    live.raw.as_ptr(),
                    compressed.as_ptr(),
                    compressed.len(),
                    out.as_mut_ptr(),
                    out.len(),
                    err.as_ptr(),
                )
            }
        };
        let corrupt = match code {
            abi::WG_OK => None,
            abi::WG_ERR_CORRUPT => Some(format!("corrupt data: {}", reason(message, "no reason given"))),
            abi::WG_ERR_UNSUPPORTED => Some(format!("unsupported: {}", reason(message, "no reason given"))),
            abi::WG_ERR_OTHER => Some(reason(message, "decompression failed")),
            abi::WG_ERR_PANIC => {
                drop(live);
                return Err(NativeError::Panic {
                    plugin: plugin.to_string(),
                    call: "decompress",
                    reason: reason(message, "panicked"),
                });
            }
            code => {
                drop(live);
                return Err(NativeError::Call {
                    plugin: plugin.to_string(),
                    call: "decompress",
                    reason: format!("error {code}: {}", reason(message, "no message")),
                });
            }
        };
        self.live = Some(live);
        Ok(match corrupt {
            None => Ok(()),
            Some(m) => Err(CodecError::new(format!("plugin {plugin}: {m}"))),
        })
    }
}

impl ChunkDecompressor for NativeDecompressor {
    fn decompress(&mut self, compressed: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        match self.try_decompress(compressed, out) {
            Ok(r) => r,
            Err(e) => Err(CodecError::new(e.to_string())),
        }
    }
}

// ------------------------------------------------------------- loading

/// A library loaded from a sealed memfd, and that memfd.
///
/// The dynamic loader recognises an already loaded library by the path it
/// was opened with, and `/proc/self/fd/N` names whatever descriptor N is
/// *now*: were N closed and reused for the next plugin's memfd, `dlopen`
/// would hand back the first plugin. So the memfd stays open as long as its
/// library may be loaded: forever once loading succeeded
/// ([`Loaded::keep_forever`]); after a failed load the library is closed and
/// the descriptor too, unless the loader kept the library mapped.
struct Loaded {
    lib: ManuallyDrop<Library>,
    memfd: ManuallyDrop<File>,
    proc_path: String,
    keep: bool,
}

impl Loaded {
    /// Never unload the library nor close its memfd (see [`NativeCodec::load`]).
    fn keep_forever(mut self) {
        self.keep = true;
    }
}

impl std::ops::Deref for Loaded {
    type Target = Library;

    fn deref(&self) -> &Library {
        &self.lib
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        if self.keep {
            return; // Both leaked on purpose.
        }
        // SAFETY: `lib` is taken exactly once (here, `keep` is false); after a
        // failed load nothing obtained from it (symbols, info) is used again.
        let lib = unsafe { ManuallyDrop::take(&mut self.lib) };
        if lib.close().is_err() {
            return; // Still loaded as far as we know: keep the memfd open.
        }
        // SAFETY: RTLD_NOLOAD only looks the path up among loaded libraries;
        // it never loads anything (no plugin code runs).
        match unsafe { UnixLibrary::open(Some(&self.proc_path), RTLD_NOW | libc::RTLD_NOLOAD) } {
            // The loader kept it (e.g. a library marked NODELETE): drop our
            // extra reference, keep the memfd open.
            Ok(still_loaded) => drop(still_loaded),
            // SAFETY: unloaded, so the descriptor may be closed and reused;
            // `memfd` is dropped exactly once (here).
            Err(_) => unsafe { ManuallyDrop::drop(&mut self.memfd) },
        }
    }
}

/// `dlopen`s `bytes` (the verified content of `path`) so that what runs is
/// exactly what was hashed.
///
/// Opening `path` itself after hashing it would leave a window in which the
/// file could be replaced (check-then-load race). A private temp file would
/// need a directory that is not mounted `noexec` and that nobody else can
/// write, and it would outlive a crash. Instead the bytes go into an
/// anonymous memfd that exists only in this process, which is then sealed
/// (no write, grow or shrink, and no removing the seals: not even we can
/// change it any more) and compared with the verified bytes once more; the
/// dynamic loader opens it as `/proc/self/fd/N` (see [`Loaded`]).
/// Linux-only, like the rest of the daemon.
fn open_verified(label: &str, path: &Path, bytes: &[u8]) -> Result<Loaded, NativeError> {
    let fail = |what: &str, e: std::io::Error| NativeError::Load {
        plugin: label.to_string(),
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    };
    // SAFETY: `memfd_create` takes a NUL-terminated name (a static C string)
    // and flags; it returns a new descriptor or -1.
    let fd = unsafe {
        libc::memfd_create(
            c"wimguard-native-plugin".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(fail("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns; `File`
    // takes ownership and closes it.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes).map_err(|e| fail("writing the memfd", e))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: `fcntl(F_ADD_SEALS)` on a descriptor we own, with an int argument.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(fail("sealing the memfd", std::io::Error::last_os_error()));
    }
    let mut sealed = Vec::with_capacity(bytes.len());
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut sealed))
        .map_err(|e| fail("reading the memfd back", e))?;
    if sealed != bytes {
        return Err(fail(
            "the memfd",
            std::io::Error::other("content differs from the verified bytes"),
        ));
    }
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    // SAFETY: loading a library runs its initialisers with the daemon's
    // privileges. That is what the caller authorised: the plugin is marked
    // trusted and these bytes are exactly the registered ones (sha256
    // checked, sealed copy compared). RTLD_NOW resolves every symbol now
    // (failures show here, not mid-backup); RTLD_LOCAL keeps its symbols out
    // of the global namespace, so plugins cannot clash with each other.
    let lib = unsafe { UnixLibrary::open(Some(&proc_path), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| NativeError::Load {
        plugin: label.to_string(),
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Loaded {
        lib: ManuallyDrop::new(lib.into()),
        memfd: ManuallyDrop::new(file),
        proc_path,
        keep: false,
    })
}

/// Copies the function pointer `name` out of `lib`.
///
/// # Safety
///
/// If the symbol exists, it must have type `T` (a function pointer type),
/// and the pointer must only be used while `lib` stays loaded.
unsafe fn symbol<T: Copy>(lib: &Library, name: &std::ffi::CStr) -> Result<T, String> {
    // SAFETY: forwarded to the caller.
    unsafe { lib.get::<T>(name.to_bytes_with_nul()) }
        .map(|s| *s)
        .map_err(|e| format!("missing symbol {name:?}: {e}"))
}

/// [`WgPluginInfo`], copied into owned values.
struct Info {
    api_major: u16,
    api_minor: u16,
    kind: String,
    name: String,
    version: String,
    codec_id: String,
    max_chunk_size: u32,
}

/// Calls `wimguard_native_plugin_info` and copies what it returns.
///
/// # Safety
///
/// `info_fn` has the ABI's type and its library is loaded during the call.
unsafe fn read_info(info_fn: PluginInfoFn) -> Result<Info, String> {
    // SAFETY: forwarded to the caller.
    let ptr = unsafe { info_fn() };
    if ptr.is_null() {
        return Err("wimguard_native_plugin_info returned null (the plugin failed to describe itself)".into());
    }
    // SAFETY: non-null, and every version of the struct starts with `size`.
    let size = unsafe { (*ptr).size } as usize;
    if size < size_of::<WgPluginInfo>() {
        return Err(format!("plugin info struct too small ({size} bytes)"));
    }
    // SAFETY: the plugin says the struct is at least as large as ours and
    // static; we read our prefix of it.
    let raw = unsafe { &*ptr };
    let text = |field: &str, s: WgStr| -> Result<String, String> {
        // SAFETY: ABI 1: `len` bytes of static data of the loaded library.
        let bytes = unsafe { s.as_bytes() };
        String::from_utf8(bytes.to_vec()).map_err(|_| format!("plugin info `{field}` is not UTF-8"))
    };
    Ok(Info {
        api_major: raw.api_major,
        api_minor: raw.api_minor,
        kind: text("kind", raw.kind)?,
        name: text("name", raw.name)?,
        version: text("version", raw.version)?,
        codec_id: text("codec_id", raw.codec_id)?,
        max_chunk_size: raw.max_chunk_size,
    })
}

// ----------------------------------------------------------- callbacks

/// `WgHostApi::log`: to `tracing`, tagged with the plugin's name (as the
/// wasm `log` import does).
unsafe extern "C" fn host_log(ctx: *mut c_void, level: u32, msg: *const u8, len: usize) {
    // Nothing may unwind into the plugin's frames.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the `HostCtx` we put in the `WgHostApi`, kept
        // alive by the instance the plugin is being called on.
        let Some(ctx) = (unsafe { ctx.cast::<HostCtx>().as_ref() }) else {
            return;
        };
        // SAFETY: the plugin passes `len` readable bytes at `msg` for the call.
        let bytes = unsafe { WgStr { ptr: msg, len }.as_bytes() };
        let message = String::from_utf8_lossy(bytes);
        let plugin = &*ctx.plugin;
        match level {
            abi::WG_LOG_TRACE => tracing::trace!(target: "wimguard::plugin", plugin, "{message}"),
            abi::WG_LOG_DEBUG => tracing::debug!(target: "wimguard::plugin", plugin, "{message}"),
            abi::WG_LOG_INFO => tracing::info!(target: "wimguard::plugin", plugin, "{message}"),
            abi::WG_LOG_WARN => tracing::warn!(target: "wimguard::plugin", plugin, "{message}"),
            _ => tracing::error!(target: "wimguard::plugin", plugin, "{message}"),
        }
    }));
}

/// `WgHostApi::config_get`: the plugin's settings (as the wasm `config.get`).
unsafe extern "C" fn host_config_get(ctx: *mut c_void, key: *const u8, key_len: usize, out: *const WgBuf) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `host_log`.
        let Some(ctx) = (unsafe { ctx.cast::<HostCtx>().as_ref() }) else {
            return false;
        };
        // SAFETY: the plugin passes `key_len` readable bytes at `key`.
        let key = unsafe { WgStr { ptr: key, len: key_len }.as_bytes() };
        let Some(setting) = std::str::from_utf8(key).ok().and_then(|k| ctx.settings.get(k)) else {
            return false;
        };
        // SAFETY: the plugin passes a valid buffer (or null) for the call.
        unsafe { WgBuf::write(out, setting.value.as_bytes()) };
        true
    }))
    .unwrap_or(false)
}

/// `WgHostApi::config_key`: the `index`-th setting's key and whether it is
/// a bound secret (as the wasm `config.list`).
unsafe extern "C" fn host_config_key(ctx: *mut c_void, index: usize, out: *const WgBuf, secret: *mut bool) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `host_log`.
        let Some(ctx) = (unsafe { ctx.cast::<HostCtx>().as_ref() }) else {
            return false;
        };
        let Some((key, setting)) = ctx.settings.iter().nth(index) else {
            return false;
        };
        // SAFETY: the plugin passes a valid buffer (or null) for the call.
        unsafe { WgBuf::write(out, key.as_bytes()) };
        if !secret.is_null() {
            // SAFETY: non-null, and the plugin passes a writable bool.
            unsafe { *secret = setting.secret };
        }
        true
    }))
    .unwrap_or(false)
}

// ------------------------------------------------------------- helpers

/// The plugin's message, or `fallback` when it gave none.
fn reason(message: Vec<u8>, fallback: &str) -> String {
    if message.is_empty() {
        fallback.to_string()
    } else {
        String::from_utf8_lossy(&message).into_owned()
    }
}

/// Lowercase hex, without an optional `sha256:` prefix.
fn normalise_digest(digest: &str) -> String {
    let digest = digest.trim();
    digest.strip_prefix("sha256:").unwrap_or(digest).to_ascii_lowercase()
}
