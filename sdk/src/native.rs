//! The native plugin ABI, version 1: the C-level contract between the
//! WimGuard daemon and a plugin built as a native shared library (`cdylib`)
//! instead of a WebAssembly component.
//!
//! Native plugins run **unsandboxed** in the daemon's process; the host only
//! loads them when the admin marks them trusted. ABI 1 covers **codec
//! plugins only**; hooks and destinations are WebAssembly-only in ABI 1 (a
//! later ABI version may add them with new symbols).
//!
//! This module only defines the types, constants and symbol names; it has no
//! dependency and no feature, so a host (or a test) can use the same
//! definitions the plugin was built with. A plugin author never touches it:
//! with the `native` feature, [`export_codec!`](crate::export_codec) emits
//! the symbols below. Full description: `sdk/README.md`, section "Native
//! plugins".
//!
//! # Symbols (all `extern "C"`, unmangled)
//!
//! | symbol | type |
//! |---|---|
//! | `wimguard_native_abi_version` | [`AbiVersionFn`] |
//! | `wimguard_native_plugin_info` | [`PluginInfoFn`] |
//! | `wimguard_native_codec_new` | [`CodecNewFn`] |
//! | `wimguard_native_codec_free` | [`CodecFreeFn`] |
//! | `wimguard_native_codec_compress` | [`CodecCompressFn`] |
//! | `wimguard_native_codec_decompress` | [`CodecDecompressFn`] |
//!
//! # Versioning
//!
//! `wimguard_native_abi_version()` is the ABI version the plugin was built
//! for. A version only ever **adds** to the one before: new functions as new
//! symbols (a host probes for them by name; hooks and destinations could
//! come that way), new fields at the end of the structs below (each starts
//! with its `size`; readers ignore bytes past the fields they know). The
//! existing symbols, their signatures and their meaning are frozen; a
//! breaking change would need new symbol names altogether. Hence a host loads
//! plugins of every version up to its own and refuses newer ones ("built for
//! native ABI N, this host speaks M"), and a plugin accepts any host whose
//! [`WgHostApi::abi_version`] is at least its own.
//!
//! # Threads and memory
//!
//! An instance (the pointer `codec_new` returns) is used by one thread at a
//! time but may move between threads; different instances run concurrently.
//! No allocation ever crosses the boundary: strings the callee produces go
//! into a [`WgBuf`] the caller owns, and plugin info lives in static memory
//! of the plugin. No panic or exception may unwind across any of these
//! functions (the SDK catches every panic and reports it as
//! [`WG_ERR_PANIC`]).

use std::ffi::{c_void, CStr};
use std::marker::PhantomData;

/// The native ABI version this SDK implements.
pub const ABI_VERSION: u32 = 1;

/// `fn() -> u32`: the plugin's native ABI version. Safe to call at any time.
pub const SYM_ABI_VERSION: &CStr = c"wimguard_native_abi_version";
/// `fn() -> *const WgPluginInfo`: static description of the plugin.
pub const SYM_PLUGIN_INFO: &CStr = c"wimguard_native_plugin_info";
/// `fn(*const WgHostApi, *const WgBuf) -> *mut c_void`: a new initialised instance.
pub const SYM_CODEC_NEW: &CStr = c"wimguard_native_codec_new";
/// `fn(*mut c_void)`: frees an instance.
pub const SYM_CODEC_FREE: &CStr = c"wimguard_native_codec_free";
/// Compresses one chunk, see [`CodecCompressFn`].
pub const SYM_CODEC_COMPRESS: &CStr = c"wimguard_native_codec_compress";
/// Decompresses one chunk, see [`CodecDecompressFn`].
pub const SYM_CODEC_DECOMPRESS: &CStr = c"wimguard_native_codec_decompress";

/// `compress`: the chunk was compressed into the output buffer.
pub const WG_COMPRESSED: i32 = 1;
/// `compress`: the result would not fit in `out_cap` (store the chunk raw).
pub const WG_NOT_COMPRESSED: i32 = 0;
/// `decompress`: success, the output buffer holds exactly `out_len` bytes.
pub const WG_OK: i32 = 0;
/// Malformed (hostile or damaged) input; message in `err`.
pub const WG_ERR_CORRUPT: i32 = -1;
/// A feature or parameter the codec does not support; message in `err`.
pub const WG_ERR_UNSUPPORTED: i32 = -2;
/// Any other failure; message in `err`. Hosts treat unknown negative codes
/// like this one.
pub const WG_ERR_OTHER: i32 = -3;
/// The plugin panicked; message in `err`. The instance must not be used
/// again except to free it.
pub const WG_ERR_PANIC: i32 = -4;
/// The host broke the calling contract (null instance or pointer, an
/// instance that panicked before); message in `err`.
pub const WG_ERR_BAD_CALL: i32 = -5;

/// Log levels of [`WgHostApi::log`], lowest first.
pub const WG_LOG_TRACE: u32 = 0;
pub const WG_LOG_DEBUG: u32 = 1;
pub const WG_LOG_INFO: u32 = 2;
pub const WG_LOG_WARN: u32 = 3;
pub const WG_LOG_ERROR: u32 = 4;

/// A borrowed UTF-8 string: `len` bytes at `ptr`, followed by a NUL byte
/// that `len` does not count (so C code can use `ptr` directly). `ptr` is
/// never null.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WgStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl WgStr {
    /// A `WgStr` for a static C string.
    pub const fn from_static(s: &'static CStr) -> WgStr {
        WgStr {
            ptr: s.as_ptr().cast(),
            len: s.count_bytes(),
        }
    }

    /// The bytes (without the trailing NUL); empty when `ptr` is null.
    ///
    /// # Safety
    ///
    /// Unless `ptr` is null, it must point to `len` readable bytes that stay
    /// valid and unchanged for `'a`.
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: non-null, and the caller guarantees `len` valid bytes for 'a.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// A growable byte buffer owned by the caller of a function, which the
/// callee fills by calling `append` (any number of times, each call adds
/// bytes at the end). The caller allocates and frees the storage with its own
/// allocator; the callee never owns any of it. Used for error messages
/// (UTF-8) and for setting values the host hands to the plugin.
///
/// A null `*const WgBuf`, or a null `append`, means "discard".
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WgBuf {
    /// The caller's state, passed back to `append`.
    pub ctx: *mut c_void,
    /// Appends `len` bytes at `ptr` (`ptr` may be null when `len` is 0).
    pub append: Option<unsafe extern "C" fn(ctx: *mut c_void, ptr: *const u8, len: usize)>,
}

impl WgBuf {
    /// Appends `bytes` to `buf` (nothing when `buf` or its `append` is null).
    ///
    /// # Safety
    ///
    /// `buf` is null or points to a valid `WgBuf` whose `append` may be
    /// called with its `ctx` right now (what the caller of the function that
    /// received `buf` promised).
    pub unsafe fn write(buf: *const WgBuf, bytes: &[u8]) {
        // SAFETY: null or valid, as the caller guarantees.
        let Some(buf) = (unsafe { buf.as_ref() }) else {
            return;
        };
        if let Some(append) = buf.append {
            // SAFETY: `append` is the owner's function for its own `ctx`; the
            // slice is valid for the duration of the call.
            unsafe { append(buf.ctx, bytes.as_ptr(), bytes.len()) }
        }
    }
}

/// A [`WgBuf`] that appends to a `Vec<u8>`: how Rust code (the host, the
/// SDK) hands a buffer to the other side.
///
/// ```
/// # use wimguard_sdk::native::{VecBuf, WgBuf};
/// let mut message = Vec::new();
/// {
///     let buf = VecBuf::new(&mut message);
///     unsafe { WgBuf::write(buf.as_ptr(), b"hello") };
/// }
/// assert_eq!(message, b"hello");
/// ```
pub struct VecBuf<'a> {
    raw: WgBuf,
    _vec: PhantomData<&'a mut Vec<u8>>,
}

impl<'a> VecBuf<'a> {
    /// Borrows `vec` mutably for as long as the `VecBuf` lives.
    pub fn new(vec: &'a mut Vec<u8>) -> VecBuf<'a> {
        VecBuf {
            raw: WgBuf {
                ctx: (vec as *mut Vec<u8>).cast(),
                append: Some(vec_append),
            },
            _vec: PhantomData,
        }
    }

    /// The pointer to pass across the ABI; valid while `self` lives.
    pub fn as_ptr(&self) -> *const WgBuf {
        &self.raw
    }
}

unsafe extern "C" fn vec_append(ctx: *mut c_void, ptr: *const u8, len: usize) {
    if ctx.is_null() || (ptr.is_null() && len > 0) {
        return;
    }
    // Never unwind into the caller (a foreign frame); extending a Vec can
    // only fail by aborting on allocation failure, but be explicit.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: `ctx` was made by `VecBuf::new` from a `&mut Vec<u8>` that
        // is borrowed (so alive and not otherwise accessed) while the
        // `VecBuf` lives, which is the only time `append` may be called.
        let vec = unsafe { &mut *ctx.cast::<Vec<u8>>() };
        if len > 0 {
            // SAFETY: the callee passes `len` readable bytes at non-null `ptr`.
            vec.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, len) });
        }
    }));
}

/// What the host gives `codec_new`: its version and the callbacks behind the
/// SDK's `log` and `config` modules. The plugin copies the struct; `ctx`
/// must stay valid until the instance is freed, and the callbacks may be
/// called from any thread that is inside a call on that instance.
///
/// Starts with `abi_version` and `size` (of the struct as the host knows it)
/// so it can grow at the end in later ABI versions; a plugin reads only the
/// fields it knows and refuses a `size` smaller than its own.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WgHostApi {
    /// [`ABI_VERSION`] of the host (at least the plugin's own).
    pub abi_version: u32,
    /// `size_of::<WgHostApi>()` as the host was built with.
    pub size: u32,
    /// The host's state, passed back to every callback.
    pub ctx: *mut c_void,
    /// The host's version (for [`HostInfo::host_version`](crate::HostInfo)).
    pub host_version: WgStr,
    /// The plugin contract version the host speaks (`wimguard:plugin` API).
    pub api_major: u16,
    pub api_minor: u16,
    /// Writes one UTF-8 message (`len` bytes at `msg`) at a `WG_LOG_*` level.
    pub log: Option<unsafe extern "C" fn(ctx: *mut c_void, level: u32, msg: *const u8, len: usize)>,
    /// The value of setting or secret `key` (UTF-8, `key_len` bytes): appends
    /// it to `out` and returns true, or returns false when it is not set.
    pub config_get:
        Option<unsafe extern "C" fn(ctx: *mut c_void, key: *const u8, key_len: usize, out: *const WgBuf) -> bool>,
    /// The `index`-th configured key (0-based, stable order): appends it to
    /// `out`, stores whether it is a secret in `*secret`, returns true; false
    /// past the last key.
    pub config_key:
        Option<unsafe extern "C" fn(ctx: *mut c_void, index: usize, out: *const WgBuf, secret: *mut bool) -> bool>,
}

/// What `wimguard_native_plugin_info` returns: a pointer to static data of
/// the plugin, valid for as long as the library is loaded.
///
/// Starts with `size` so it can grow at the end; a host refuses a `size`
/// smaller than the ABI 1 struct and ignores fields past the ones it knows.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WgPluginInfo {
    /// `size_of::<WgPluginInfo>()` as the plugin was built with.
    pub size: u32,
    /// The plugin contract (`wimguard:plugin`) version it was built against.
    pub api_major: u16,
    pub api_minor: u16,
    /// `"codec"` (the only kind of ABI 1).
    pub kind: WgStr,
    /// [`PluginInfo`](crate::PluginInfo): unique name `[a-z0-9-]{1,64}`.
    pub name: WgStr,
    pub version: WgStr,
    pub description: WgStr,
    /// [`CodecInfo`](crate::CodecInfo): the codec id recorded with archives.
    pub codec_id: WgStr,
    pub codec_name: WgStr,
    pub max_chunk_size: u32,
}

/// `wimguard_native_abi_version`.
pub type AbiVersionFn = unsafe extern "C" fn() -> u32;

/// `wimguard_native_plugin_info`: null if the plugin failed to describe
/// itself (it panicked).
pub type PluginInfoFn = unsafe extern "C" fn() -> *const WgPluginInfo;

/// `wimguard_native_codec_new(host, err)`: a new instance, initialised with
/// the host's settings (the plugin's `init`). Null on failure, with the
/// reason appended to `err` (already phrased for users: `bad configuration:
/// …`, `unavailable: …`, `panicked: …`). `host` must be valid for the call.
pub type CodecNewFn = unsafe extern "C" fn(host: *const WgHostApi, err: *const WgBuf) -> *mut c_void;

/// `wimguard_native_codec_free(inst)`: frees an instance (null is a no-op).
/// The instance must not be in use.
pub type CodecFreeFn = unsafe extern "C" fn(inst: *mut c_void);

/// `wimguard_native_codec_compress(inst, input, input_len, out, out_cap,
/// out_len, err)`: compresses one independent chunk into `out`, which has
/// room for `out_cap` bytes (possibly uninitialised; the plugin only writes
/// it). Returns [`WG_COMPRESSED`] with `*out_len <= out_cap` set,
/// [`WG_NOT_COMPRESSED`] when the result would not fit (the host passes
/// `input_len - 1` to ask for "strictly smaller" and then stores the chunk
/// raw), or a negative `WG_ERR_*` with a message in `err`. `input` and `out`
/// do not overlap.
pub type CodecCompressFn = unsafe extern "C" fn(
    inst: *mut c_void,
    input: *const u8,
    input_len: usize,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
    err: *const WgBuf,
) -> i32;

/// `wimguard_native_codec_decompress(inst, input, input_len, out, out_len,
/// err)`: decodes one chunk into exactly `out_len` bytes at `out`. Returns
/// [`WG_OK`] or a negative `WG_ERR_*` with a message in `err`; malformed
/// input is [`WG_ERR_CORRUPT`], never a crash. `input` and `out` do not
/// overlap.
pub type CodecDecompressFn = unsafe extern "C" fn(
    inst: *mut c_void,
    input: *const u8,
    input_len: usize,
    out: *mut u8,
    out_len: usize,
    err: *const WgBuf,
) -> i32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vec_buf_appends() {
        let mut v = b"a".to_vec();
        {
            let buf = VecBuf::new(&mut v);
            // SAFETY: `buf` is alive.
            unsafe {
                WgBuf::write(buf.as_ptr(), b"bc");
                WgBuf::write(buf.as_ptr(), b"");
                WgBuf::write(std::ptr::null(), b"ignored");
            }
        }
        assert_eq!(v, b"abc");
    }

    #[test]
    fn static_str() {
        let s = WgStr::from_static(c"codec");
        // SAFETY: static data.
        assert_eq!(unsafe { s.as_bytes() }, b"codec");
    }
}
