//! The WebAssembly plugin runtime (wasmtime).
//!
//! This first piece runs **codec plugins**: components of the world
//! `wimguard:plugin/codec-plugin@1.0.0` (see `sdk/wit/`). A loaded plugin
//! becomes a [`WasmCodec`], which implements the native
//! [`wimguard_sdk::Codec`] trait, so the WIM writer and reader can use it
//! exactly like the built-in XPRESS and LZX codecs.
//!
//! Sandbox, per plugin:
//!
//! * one shared [`wasmtime::Engine`] ([`engine`]) with the component model
//!   and epoch interruption on; a background thread ticks the epoch every
//!   [`EPOCH_TICK`];
//! * components are compiled once and cached on disk by the sha256 of their
//!   bytes and the engine's compatibility hash ([`compile_component`]);
//! * every compressor and decompressor owns its own store and instance (one
//!   per worker thread); each call runs under a memory limit and an epoch
//!   deadline ([`PluginLimits`]); after any trap the instance is thrown away
//!   and the next call gets a fresh one;
//! * WASI is linked with an **empty** context: no preopened directories, no
//!   environment, no arguments, no network, empty stdin. Guest stdout and
//!   stderr, and the `log` import, go to `tracing` tagged with the plugin's
//!   name.

mod codec;
mod host;

pub use codec::{WasmCodec, WasmCompressor, WasmDecompressor};
pub use host::{compile_component, engine, PluginError, PluginLimits, PluginSettings, EPOCH_TICK};
