//! Plugin side of the native ABI (every non-wasm build of a plugin crate).
//!
//! Two parts:
//!
//! * the "current host": while the host is inside a call on an instance
//!   (`codec_new`, `compress`, `decompress`, `free`), a thread-local points at
//!   that instance's [`WgHostApi`], and the SDK's `log` / `config` modules go
//!   through its callbacks. Outside such a call (plain `cargo test` of a
//!   plugin crate, a thread the plugin spawned) there is no host: `config`
//!   is empty and `log` writes to stderr;
//! * with feature `native`, the generic bodies of the exported functions,
//!   which [`export_codec!`](crate::export_codec) instantiates for the
//!   plugin type behind `#[no_mangle] extern "C"` symbols.
//!
//! Nothing here is meant to be named by plugin authors.

#[cfg(feature = "native")]
pub use entry::*;
use std::cell::Cell;

use crate::native::{VecBuf, WgBuf, WgHostApi, WgStr};

thread_local! {
    /// The host of the call this thread is in, or null.
    static HOST: Cell<*const WgHostApi> = const { Cell::new(std::ptr::null()) };
}

/// Makes `host` the current host until dropped (then restores the previous
/// one, so nested calls are fine).
#[cfg_attr(not(feature = "native"), allow(dead_code))]
struct HostScope {
    prev: *const WgHostApi,
}

#[cfg_attr(not(feature = "native"), allow(dead_code))]
impl HostScope {
    /// # Safety
    ///
    /// `host` points to a `WgHostApi` whose callbacks may be called on this
    /// thread until the scope is dropped.
    unsafe fn enter(host: *const WgHostApi) -> HostScope {
        HostScope {
            prev: HOST.with(|h| h.replace(host)),
        }
    }
}

impl Drop for HostScope {
    fn drop(&mut self) {
        HOST.with(|h| h.set(self.prev));
    }
}

/// The current host's API, if this thread is inside a call.
fn current() -> Option<WgHostApi> {
    let ptr = HOST.with(|h| h.get());
    // SAFETY: a non-null pointer was set by `HostScope::enter`, whose caller
    // guarantees it stays valid while the scope (on this thread) lives; it
    // is reset before the scope ends.
    unsafe { ptr.as_ref() }.copied()
}

/// Writes `message` through the current host, or to stderr without one.
pub(crate) fn log(level: u32, message: &str) {
    match current().and_then(|h| h.log.map(|f| (h.ctx, f))) {
        // SAFETY: the host promised its callbacks are callable during the
        // call we are in, with its `ctx`; the message is valid for the call.
        Some((ctx, f)) => unsafe { f(ctx, level, message.as_ptr(), message.len()) },
        None => {
            let level = ["trace", "debug", "info", "warn", "error"]
                .get(level as usize)
                .unwrap_or(&"log");
            eprintln!("[wimguard plugin, no host] {level}: {message}");
        }
    }
}

/// The value of setting `key` from the current host.
pub(crate) fn config_get(key: &str) -> Option<String> {
    let host = current()?;
    let get = host.config_get?;
    let mut value = Vec::new();
    let found = {
        let buf = VecBuf::new(&mut value);
        // SAFETY: as in `log`; `buf` and `key` outlive the call.
        unsafe { get(host.ctx, key.as_ptr(), key.len(), buf.as_ptr()) }
    };
    found.then(|| String::from_utf8_lossy(&value).into_owned())
}

/// Every configured key and whether it is a secret.
pub(crate) fn config_keys() -> Vec<(String, bool)> {
    let Some(host) = current() else {
        return Vec::new();
    };
    let Some(key_at) = host.config_key else {
        return Vec::new();
    };
    let mut keys = Vec::new();
    // A bound, so a confused host cannot keep us here forever.
    for index in 0..1_000_000 {
        let mut key = Vec::new();
        let mut secret = false;
        let more = {
            let buf = VecBuf::new(&mut key);
            // SAFETY: as in `log`; `buf` and `secret` outlive the call.
            unsafe { key_at(host.ctx, index, buf.as_ptr(), &mut secret) }
        };
        if !more {
            break;
        }
        keys.push((String::from_utf8_lossy(&key).into_owned(), secret));
    }
    keys
}

/// Appends `message` to the caller's error buffer.
#[cfg_attr(not(feature = "native"), allow(dead_code))]
fn write_err(err: *const WgBuf, message: &str) {
    // SAFETY: every exported function's contract makes `err` null or a
    // valid buffer for the duration of the call we are in.
    unsafe { WgBuf::write(err, message.as_bytes()) }
}

/// Leaks `s` as a NUL-terminated static string (plugin info is made once).
#[cfg_attr(not(feature = "native"), allow(dead_code))]
fn leak_str(s: String) -> WgStr {
    let mut bytes = s.into_bytes();
    let len = bytes.len();
    bytes.push(0);
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    WgStr {
        ptr: bytes.as_ptr(),
        len,
    }
}

#[cfg(feature = "native")]
mod entry {
    use std::any::Any;
    use std::cell::{Cell, RefCell};
    use std::ffi::c_void;
    use std::panic::{self, AssertUnwindSafe};
    use std::ptr;
    use std::sync::{Once, OnceLock};

    use super::{leak_str, write_err, HostScope};
    use crate::native::*;
    use crate::plugin::*;

    // ------------------------------------------------------------ panics

    thread_local! {
        /// How many exported functions this thread is inside.
        static DEPTH: Cell<u32> = const { Cell::new(0) };
        /// Where the last panic inside an exported function happened.
        static PANIC_AT: RefCell<Option<String>> = const { RefCell::new(None) };
    }

    /// Installs (once per library) a panic hook that, inside an exported
    /// function, records the location instead of printing to stderr (the
    /// host reports the panic as an error); elsewhere it defers to the hook
    /// that was there before. The hook is this library's own: a cdylib has
    /// its own copy of std, so the host's hook is untouched.
    fn install_panic_hook() {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                if DEPTH.with(|d| d.get()) > 0 {
                    let at = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
                    let _ = PANIC_AT.try_with(|p| p.replace(at));
                } else {
                    previous(info)
                }
            }));
        });
    }

    fn panic_message(payload: &(dyn Any + Send)) -> String {
        let what = if let Some(s) = payload.downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "(non-string panic payload)".to_string()
        };
        match PANIC_AT.try_with(|p| p.take()).ok().flatten() {
            Some(at) => format!("panicked at {at}: {what}"),
            None => format!("panicked: {what}"),
        }
    }

    /// Runs `f`; a panic becomes `on_panic`, with its message in `err`.
    /// Nothing unwinds out of this function.
    fn guard<R>(err: *const WgBuf, on_panic: R, f: impl FnOnce() -> R) -> R {
        install_panic_hook();
        DEPTH.with(|d| d.set(d.get() + 1));
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        DEPTH.with(|d| d.set(d.get() - 1));
        match result {
            Ok(r) => r,
            Err(payload) => {
                write_err(err, &panic_message(&*payload));
                // Dropping the payload runs foreign code (its Drop); keep a
                // panic there from escaping too.
                let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
                on_panic
            }
        }
    }

    // -------------------------------------------------------------- info

    /// The static behind `wimguard_native_plugin_info` (one per export).
    pub struct InfoCell(OnceLock<InfoPtr>);

    struct InfoPtr(*const WgPluginInfo);

    // SAFETY: the pointer is to a leaked, never-mutated `WgPluginInfo` whose
    // strings are leaked and never mutated either; sharing it is sharing
    // immutable 'static data.
    unsafe impl Send for InfoPtr {}
    // SAFETY: as above.
    unsafe impl Sync for InfoPtr {}

    impl InfoCell {
        #[allow(clippy::new_without_default)]
        pub const fn new() -> InfoCell {
            InfoCell(OnceLock::new())
        }
    }

    /// Body of `wimguard_native_plugin_info`: made once, then the same
    /// pointer. Null when `info` or `describe` panicked.
    pub fn plugin_info<T: CodecPlugin>(cell: &'static InfoCell) -> *const WgPluginInfo {
        guard(ptr::null(), ptr::null(), || {
            cell.0
                .get_or_init(|| {
                    let info = T::info();
                    let codec = T::describe();
                    let raw = WgPluginInfo {
                        size: size_of::<WgPluginInfo>() as u32,
                        api_major: API_VERSION.major,
                        api_minor: API_VERSION.minor,
                        kind: WgStr::from_static(c"codec"),
                        name: leak_str(info.name),
                        version: leak_str(info.version),
                        description: leak_str(info.description),
                        codec_id: leak_str(codec.id),
                        codec_name: leak_str(codec.name),
                        max_chunk_size: codec.max_chunk_size,
                    };
                    InfoPtr(Box::leak(Box::new(raw)))
                })
                .0
        })
    }

    // ---------------------------------------------------------- instance

    /// What a `*mut c_void` instance points to.
    struct Instance<T> {
        /// The host's API; boxed so its address (the current host during
        /// calls) never changes.
        host: Box<WgHostApi>,
        plugin: T,
        /// Output of the plugin's `compress`, reused between chunks.
        scratch: Vec<u8>,
        /// Set when the plugin panicked: its state may be broken, so every
        /// later call is refused.
        poisoned: bool,
    }

    /// Copies the host's API after checking its version and size.
    ///
    /// # Safety
    ///
    /// `host` is null or points to at least `(*host).size` readable bytes.
    unsafe fn read_host(host: *const WgHostApi) -> Result<WgHostApi, String> {
        if host.is_null() {
            return Err("codec_new: null host API".into());
        }
        // SAFETY: non-null, and every version of the struct starts with the
        // two u32 fields, so reading them is in bounds.
        let (abi, size) = unsafe { ((*host).abi_version, (*host).size) };
        // Later versions only add (at the end of the struct): any host at
        // least as new as this plugin will do.
        if abi < ABI_VERSION {
            return Err(format!(
                "the host speaks native ABI {abi}, this plugin needs {ABI_VERSION}"
            ));
        }
        if (size as usize) < size_of::<WgHostApi>() {
            return Err(format!("host API struct too small ({size} bytes)"));
        }
        // SAFETY: the host says the struct is at least as large as ours, so
        // our prefix of it is readable; every field is plain data.
        Ok(unsafe { ptr::read(host) })
    }

    /// Body of `wimguard_native_codec_new`.
    ///
    /// # Safety
    ///
    /// `host` is valid for the call and its `ctx`/callbacks until the
    /// instance is freed; `err` is null or valid for the call.
    pub unsafe fn codec_new<T: CodecPlugin + Send>(host: *const WgHostApi, err: *const WgBuf) -> *mut c_void {
        guard(err, ptr::null_mut(), || {
            // SAFETY: forwarded from our caller's contract.
            let api = match unsafe { read_host(host) } {
                Ok(api) => Box::new(api),
                Err(m) => {
                    write_err(err, &m);
                    return ptr::null_mut();
                }
            };
            // SAFETY: `api` is boxed and outlives the scope (and later lives
            // in the instance); the host keeps its callbacks valid.
            let _scope = unsafe { HostScope::enter(&*api) };
            let info = HostInfo {
                // SAFETY: the host's version string is valid during the call.
                host_version: String::from_utf8_lossy(unsafe { api.host_version.as_bytes() }).into_owned(),
                api_version: ApiVersion {
                    major: api.api_major,
                    minor: api.api_minor,
                },
                extras: Vec::new(),
            };
            match T::init(&info) {
                Ok(plugin) => {
                    let inst = Instance {
                        host: api,
                        plugin,
                        scratch: Vec::new(),
                        poisoned: false,
                    };
                    Box::into_raw(Box::new(inst)).cast()
                }
                Err(e) => {
                    let m = match e {
                        InitError::BadConfig(m) => format!("bad configuration: {m}"),
                        InitError::Unavailable(m) => format!("unavailable: {m}"),
                        InitError::Other(m) => m,
                    };
                    write_err(err, &m);
                    ptr::null_mut()
                }
            }
        })
    }

    /// Body of `wimguard_native_codec_free`.
    ///
    /// # Safety
    ///
    /// `inst` is null or a live instance of `T` from `codec_new`, not in
    /// use, and not used again.
    pub unsafe fn codec_free<T: CodecPlugin + Send>(inst: *mut c_void) {
        if inst.is_null() {
            return;
        }
        // SAFETY: a live instance made by `codec_new::<T>` (Box::into_raw),
        // handed back exactly once.
        let inst = unsafe { Box::from_raw(inst.cast::<Instance<T>>()) };
        guard(ptr::null(), (), || {
            let Instance {
                host, plugin, scratch, ..
            } = *inst;
            // SAFETY: `host` is dropped after the scope (declared before it);
            // the host keeps its callbacks valid until this function returns.
            let scope = unsafe { HostScope::enter(&*host) };
            drop((plugin, scratch));
            drop(scope);
        });
    }

    /// The instance behind `inst`, or an error code when it is unusable.
    ///
    /// # Safety
    ///
    /// `inst` is null or a live instance of `T`, not used by anyone else
    /// during `'a`.
    unsafe fn instance<'a, T>(inst: *mut c_void, err: *const WgBuf) -> Result<&'a mut Instance<T>, i32> {
        // SAFETY: null or a live, exclusively ours instance of `T`.
        let Some(inst) = (unsafe { inst.cast::<Instance<T>>().as_mut() }) else {
            write_err(err, "null instance");
            return Err(WG_ERR_BAD_CALL);
        };
        if inst.poisoned {
            write_err(err, "instance unusable: the plugin panicked in an earlier call");
            return Err(WG_ERR_BAD_CALL);
        }
        Ok(inst)
    }

    /// `len` bytes at `ptr` (a null or dangling `ptr` is fine when `len` is 0).
    ///
    /// # Safety
    ///
    /// Unless `len` is 0, `ptr` points to `len` readable bytes not written
    /// during `'a`.
    unsafe fn input<'a>(ptr: *const u8, len: usize) -> Option<&'a [u8]> {
        match (ptr.is_null(), len) {
            (_, 0) => Some(&[]),
            (true, _) => None,
            // SAFETY: non-null, `len` readable bytes, as the caller guarantees.
            (false, _) => Some(unsafe { std::slice::from_raw_parts(ptr, len) }),
        }
    }

    /// Body of `wimguard_native_codec_compress` (see
    /// [`CodecCompressFn`](crate::native::CodecCompressFn)).
    ///
    /// # Safety
    ///
    /// The contract of [`CodecCompressFn`](crate::native::CodecCompressFn).
    pub unsafe fn codec_compress<T: CodecPlugin + Send>(
        inst: *mut c_void,
        input_ptr: *const u8,
        input_len: usize,
        out: *mut u8,
        out_cap: usize,
        out_len: *mut usize,
        err: *const WgBuf,
    ) -> i32 {
        // SAFETY: an instance used by this call only, per the contract.
        let inst = match unsafe { instance::<T>(inst, err) } {
            Ok(inst) => inst,
            Err(code) => return code,
        };
        // SAFETY: `input_len` readable bytes, not overlapping `out`.
        let Some(chunk) = (unsafe { input(input_ptr, input_len) }) else {
            write_err(err, "null input");
            return WG_ERR_BAD_CALL;
        };
        if out_len.is_null() || (out.is_null() && out_cap > 0) {
            write_err(err, "null output");
            return WG_ERR_BAD_CALL;
        }
        let code = guard(err, WG_ERR_PANIC, || {
            // SAFETY: the instance's boxed host API, valid while it lives.
            let _scope = unsafe { HostScope::enter(&*inst.host) };
            let Instance { plugin, scratch, .. } = &mut *inst;
            scratch.clear();
            if plugin.compress(chunk, out_cap, scratch) && scratch.len() <= out_cap {
                if !scratch.is_empty() {
                    // SAFETY: `out` has room for `out_cap >= scratch.len()`
                    // bytes and does not overlap our own buffer.
                    unsafe { ptr::copy_nonoverlapping(scratch.as_ptr(), out, scratch.len()) };
                }
                // SAFETY: checked non-null above; the host passes a valid pointer.
                unsafe { *out_len = scratch.len() };
                WG_COMPRESSED
            } else {
                // SAFETY: as above.
                unsafe { *out_len = 0 };
                WG_NOT_COMPRESSED
            }
        });
        inst.poisoned = code == WG_ERR_PANIC;
        code
    }

    /// Body of `wimguard_native_codec_decompress` (see
    /// [`CodecDecompressFn`](crate::native::CodecDecompressFn)).
    ///
    /// # Safety
    ///
    /// The contract of [`CodecDecompressFn`](crate::native::CodecDecompressFn).
    pub unsafe fn codec_decompress<T: CodecPlugin + Send>(
        inst: *mut c_void,
        input_ptr: *const u8,
        input_len: usize,
        out: *mut u8,
        out_len: usize,
        err: *const WgBuf,
    ) -> i32 {
        // SAFETY: an instance used by this call only, per the contract.
        let inst = match unsafe { instance::<T>(inst, err) } {
            Ok(inst) => inst,
            Err(code) => return code,
        };
        // SAFETY: `input_len` readable bytes, not overlapping `out`.
        let Some(data) = (unsafe { input(input_ptr, input_len) }) else {
            write_err(err, "null input");
            return WG_ERR_BAD_CALL;
        };
        let out: &mut [u8] = match (out.is_null(), out_len) {
            (_, 0) => &mut [],
            (true, _) => {
                write_err(err, "null output");
                return WG_ERR_BAD_CALL;
            }
            // SAFETY: `out` points to `out_len` writable bytes that nobody
            // else uses during the call; they may be uninitialised on entry,
            // so `write_bytes` initialises them (the plugin API promises
            // zeroed output anyway) before the slice is formed.
            (false, _) => unsafe {
                ptr::write_bytes(out, 0, out_len);
                std::slice::from_raw_parts_mut(out, out_len)
            },
        };
        let code = guard(err, WG_ERR_PANIC, || {
            // SAFETY: the instance's boxed host API, valid while it lives.
            let _scope = unsafe { HostScope::enter(&*inst.host) };
            match inst.plugin.decompress(data, out) {
                Ok(()) => WG_OK,
                Err(CodecPluginError::Corrupt(m)) => {
                    write_err(err, &m);
                    WG_ERR_CORRUPT
                }
                Err(CodecPluginError::Unsupported(m)) => {
                    write_err(err, &m);
                    WG_ERR_UNSUPPORTED
                }
                Err(CodecPluginError::Other(m)) => {
                    write_err(err, &m);
                    WG_ERR_OTHER
                }
            }
        });
        inst.poisoned = code == WG_ERR_PANIC;
        code
    }
}
