//! The plugin host: runs WimGuard's plugins, knowing nothing of backups,
//! catalogs or gRPC (the core's plugin registry decides which plugin runs
//! with which settings; this crate runs it safely).
//!
//! * The wasm runtime (wasmtime): codec plugins become [`WasmCodec`]s, which
//!   implement the native [`wimguard_sdk::Codec`] trait; hook plugins become
//!   [`WasmHook`]s; destination plugins become [`WasmDestination`]s.
//! * The native runtime ([`NativeCodec`], libloading): trusted codec
//!   libraries built with the SDK's `native` feature.
//!
//! Sandbox, per wasm plugin:
//!
//! * one shared [`wasmtime::Engine`] ([`engine`]) with the component model
//!   and epoch interruption on; a background thread ticks the epoch every
//!   [`EPOCH_TICK`];
//! * components are compiled once and cached on disk by the sha256 of their
//!   bytes and the engine's compatibility hash ([`compile_component`]); an
//!   upload is compiled at install in a child process under a time and
//!   memory limit ([`compile`]);
//! * every call runs under a memory limit (counted over all of an
//!   instance's memories) and a time limit ([`PluginLimits`]), checked at
//!   every epoch tick, where a codec call also stops once its backup is
//!   cancelled; hook and destination calls run under a wall-clock limit
//!   that also stops a guest waiting inside the host; after any trap the
//!   instance is thrown away;
//! * WASI: codecs get only io streams and empty cli interfaces (stdout and
//!   stderr go to `tracing`, tagged with the plugin's name); hooks and
//!   destinations also get
//!   clocks, random and `wasi:http`, every request checked against the
//!   plugin's `allowedHosts` ([`http`]). A component importing anything
//!   else (filesystem, sockets, or for a codec clocks, random, http) is
//!   refused at install and at load, naming the import: what is never
//!   linked cannot be reached.

mod codec;
pub mod compile;
pub mod destination;
mod hook;
mod host;
pub mod http;
pub mod inspect;
mod kind;
pub mod metrics;
pub mod native;

pub use codec::{WasmCodec, WasmCompressor, WasmDecompressor};
pub use destination::{DestinationError, ObjectInfo, WasmDestination};
pub use hook::{HookEvent, HookVerdict, WasmHook};
pub use host::{
    codec_name, compile_component, engine, plain_settings, remove_from_cache, save_to_cache, sha256_hex, valid_name,
    PluginError, PluginLimits, PluginSettings, SettingValue, API_MAJOR, API_MINOR, EPOCH_TICK,
};
pub use inspect::{inspect_component, Inspected};
pub use kind::{PluginKind, PluginRuntime};
pub use native::{NativeCodec, NativeCompressor, NativeDecompressor, NativeError};
