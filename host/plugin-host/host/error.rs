//! The plugin host's error.

use super::*;

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
