//! The WimGuard plugin SDK.
//!
//! Three layers live here:
//!
//! * the native codec contract ([`Codec`], [`ChunkCompressor`],
//!   [`ChunkDecompressor`], [`CodecError`]) that the daemon and the codec
//!   crates use directly,
//! * the plugin API of the WIT package `wimguard:plugin@1.0.0` (`sdk/wit/`):
//!   the traits in [`plugin`] ([`Plugin`], [`CodecPlugin`],
//!   [`DestinationPlugin`], [`HookPlugin`]) and, with a world feature
//!   (`codec`, `destination`, `hook`), the export macros
//!   ([`export_codec!`], [`export_destination!`], [`export_hook!`]) and the
//!   host imports ([`log`], [`config`], [`progress`]) that turn an
//!   implementation into a WebAssembly component for `wasm32-wasip2`
//!   (wit-bindgen is an internal detail of those features, compiled for
//!   wasm32 only), and
//! * the native plugin ABI ([`native`], version 1, codec plugins only): its
//!   types are always here (the host uses them); with the feature `native`,
//!   [`export_codec!`] also exports the ABI's `extern "C"` symbols in
//!   non-wasm builds, so the same crate builds as a trusted native `cdylib`.
//!
//! See `sdk/README.md` for the contract and its compatibility rules.

use std::fmt;

mod incompressible;
pub mod native;
pub mod plugin;
pub use incompressible::IncompressibleCheck;
pub use plugin::*;

#[cfg(any(
    all(feature = "codec", feature = "destination"),
    all(feature = "codec", feature = "hook"),
    all(feature = "destination", feature = "hook"),
))]
compile_error!(
    "wimguard-sdk: enable exactly one of the features `codec`, `destination`, `hook` \
     (one plugin world per crate; build plugins of different kinds in separate cargo invocations)"
);

#[cfg(all(feature = "native", any(feature = "destination", feature = "hook")))]
compile_error!(
    "wimguard-sdk: the feature `native` is for codec plugins only (native ABI 1); \
     destination and hook plugins are WebAssembly components"
);

#[cfg(all(
    target_arch = "wasm32",
    any(feature = "codec", feature = "destination", feature = "hook")
))]
#[doc(hidden)]
pub mod guest;
#[cfg(any(feature = "codec", feature = "destination", feature = "hook"))]
mod imports;
#[cfg(any(feature = "codec", feature = "destination", feature = "hook"))]
pub use imports::{config, log, progress};
#[cfg(any(feature = "codec", feature = "destination", feature = "hook"))]
mod macros;
#[cfg(all(
    not(target_arch = "wasm32"),
    any(feature = "codec", feature = "destination", feature = "hook")
))]
#[doc(hidden)]
pub mod native_guest;

/// The WIT text of the contract, for tools and the host's checks.
pub mod wit {
    /// `sdk/wit/types.wit`
    pub const TYPES: &str = include_str!("../wit/types.wit");
    /// `sdk/wit/host.wit`
    pub const HOST: &str = include_str!("../wit/host.wit");
    /// `sdk/wit/codec.wit`
    pub const CODEC: &str = include_str!("../wit/codec.wit");
    /// `sdk/wit/destination.wit`
    pub const DESTINATION: &str = include_str!("../wit/destination.wit");
    /// `sdk/wit/hook.wit`
    pub const HOOK: &str = include_str!("../wit/hook.wit");
    /// `sdk/wit/worlds.wit` (holds the package declaration)
    pub const WORLDS: &str = include_str!("../wit/worlds.wit");
    /// The package name and version every plugin is built against.
    pub const PACKAGE: &str = "wimguard:plugin@1.0.0";
}

/// Why a compressed chunk could not be decoded.
///
/// Decoders never panic on hostile input: every malformed stream ends in one
/// of these, with a short human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError {
    /// What was wrong with the input, for the error message shown to users.
    pub reason: String,
}

impl CodecError {
    pub fn new(reason: impl Into<String>) -> Self {
        CodecError { reason: reason.into() }
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for CodecError {}

/// Compresses independent chunks. One instance per worker thread: it may keep
/// scratch state (hash tables, buffers) between calls, but no data carries
/// over from one chunk to the next.
pub trait ChunkCompressor: Send {
    /// Compresses `chunk` into `out` (cleared first).
    ///
    /// Returns `false` when the result would not be strictly smaller than the
    /// input; the caller then stores the chunk raw and `out` is meaningless.
    fn compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool;

    /// The first failure since the last call, if `compress` failed (a
    /// crashed or stopped plugin) rather than found a chunk incompressible.
    /// Writers poll this after a batch and abandon the write: a codec that
    /// fails is not the same as data that does not compress. Built-in codecs
    /// never fail.
    fn take_failure(&mut self) -> Option<String> {
        None
    }

    /// Gives the compressor the caller's cancel flag. Once it is raised the
    /// caller abandons the write, so a compressor whose calls can take long
    /// (a sandboxed plugin) may stop the call in progress and every later
    /// one, and report a failure. Built-in codecs, whose calls take
    /// microseconds, ignore it.
    fn watch_cancel(&mut self, cancel: std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let _ = cancel;
    }
}

/// Decompresses independent chunks. One instance per worker thread.
pub trait ChunkDecompressor: Send {
    /// Decodes `compressed` into exactly `out.len()` bytes.
    fn decompress(&mut self, compressed: &[u8], out: &mut [u8]) -> Result<(), CodecError>;
}

/// A chunk codec: a factory for per-thread compressors and decompressors.
pub trait Codec: Send + Sync {
    /// Short lowercase name users type (`xpress`, `lzx`).
    fn name(&self) -> &'static str;
    /// Largest chunk size this codec can handle, in bytes.
    fn max_chunk_size(&self) -> usize;
    /// A compressor for chunks of at most `chunk_size` bytes.
    fn compressor(&self, chunk_size: usize) -> Box<dyn ChunkCompressor>;
    /// A decompressor for chunks of at most `chunk_size` bytes.
    fn decompressor(&self, chunk_size: usize) -> Box<dyn ChunkDecompressor>;
}
