//! The plugin platform: the plugin host (crate `wimguard-plugin-host`:
//! the wasm and native runtimes, sandbox and limits) and, here, the
//! [`registry`] that installs, validates, stores (by sha256), enables,
//! removes and loads plugins for the stages that use them.

pub use wimguard_plugin_host::*;

pub mod registry;

pub use registry::PluginRegistry;
