//! The plugin API as plain Rust: what a plugin author implements.
//!
//! These types mirror the WIT package `wimguard:plugin@1.0.0` (see `sdk/wit/`)
//! one to one. They compile everywhere (no wit-bindgen); the `guest` feature
//! adds the glue that exports an implementation as a WebAssembly component.

use crate::CodecError;

/// Extension fields: well-known keys defined by later 1.x minors, or
/// `x-<vendor>-<name>` keys of third parties. Unknown keys are ignored.
pub type Extras = Vec<(String, String)>;

/// A version of the contract (the WIT package), not of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u16,
    pub minor: u16,
}

/// The contract version this SDK implements: `wimguard:plugin@1.0.0`.
pub const API_VERSION: ApiVersion = ApiVersion { major: 1, minor: 0 };

/// What a plugin is for. Set by the export macro from the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginKind {
    Codec,
    Destination,
    Hook,
    Other(String),
}

/// What a plugin says about itself (its kind and API version are filled in
/// by the SDK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// Unique, stable name: lowercase `[a-z0-9-]`, 1..=64 bytes.
    pub name: String,
    /// The plugin's own semver version.
    pub version: String,
    /// One line for `wimguard plugin list`.
    pub description: String,
    pub extras: Extras,
}

impl PluginInfo {
    /// `PluginInfo::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"), "…")`
    pub fn new(name: impl Into<String>, version: impl Into<String>, description: impl Into<String>) -> Self {
        PluginInfo {
            name: name.into(),
            version: version.into(),
            description: description.into(),
            extras: Vec::new(),
        }
    }
}

/// What the host tells the plugin at `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub host_version: String,
    /// The contract version the host speaks.
    pub api_version: ApiVersion,
    pub extras: Extras,
}

/// Why `init` refused to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    /// A setting or secret is missing or invalid; the message names it.
    BadConfig(String),
    /// Something the plugin needs is not reachable right now.
    Unavailable(String),
    Other(String),
}

/// Every plugin: a description and a constructor. One value of the type
/// lives per plugin instance (the host runs one instance per worker thread).
pub trait Plugin: Sized + 'static {
    /// Cheap and side-effect free; called before `init`.
    fn info() -> PluginInfo;
    /// Builds the plugin's state. Read settings with [`crate::config`] here
    /// and reject bad ones.
    fn init(host: &HostInfo) -> Result<Self, InitError>;
}

// ---------------------------------------------------------------- codec

/// What a codec says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecInfo {
    /// Stable machine id recorded with archives (`xpress`, `x-acme-zz`).
    pub id: String,
    pub name: String,
    pub max_chunk_size: u32,
    pub extras: Extras,
}

/// Why a chunk could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecPluginError {
    /// Malformed (hostile or damaged) input.
    Corrupt(String),
    /// A feature or parameter this codec does not support.
    Unsupported(String),
    Other(String),
}

impl From<CodecError> for CodecPluginError {
    fn from(e: CodecError) -> Self {
        CodecPluginError::Corrupt(e.reason)
    }
}

/// A compression codec plugin (world `codec-plugin`).
pub trait CodecPlugin: Plugin {
    /// Callable before `init`.
    fn describe() -> CodecInfo;
    /// Compresses one independent chunk into `out` (empty on entry).
    /// Returns `false` when the result would exceed `max_out` bytes.
    fn compress(&mut self, chunk: &[u8], max_out: usize, out: &mut Vec<u8>) -> bool;
    /// Decodes `data` into exactly `out.len()` bytes (zeroed on entry).
    /// Malformed input must return an error, never panic.
    fn decompress(&mut self, data: &[u8], out: &mut [u8]) -> Result<(), CodecPluginError>;
}

// ---------------------------------------------------------- destination

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationError {
    NotFound(String),
    Denied(String),
    /// Transient; the host may retry.
    Unavailable(String),
    Invalid(String),
    NoSpace(String),
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// Milliseconds since the Unix epoch.
    pub modified_ms: Option<u64>,
    pub etag: Option<String>,
    pub extras: Extras,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListPage {
    pub objects: Vec<ObjectInfo>,
    pub next_cursor: Option<String>,
}

/// A storage destination plugin (world `destination-plugin`). All upload
/// state must live in the token and receipts: any instance may continue an
/// upload another one began. The semantics the daemon relies on (relative
/// keys, uploads that never replace an object, the single-request mode of
/// a size hint, parts in any order and again, repeatable calls) are in the
/// doc comments of `sdk/wit/destination.wit` and in `sdk/README.md`.
pub trait DestinationPlugin: Plugin {
    fn begin_upload(&mut self, key: &str, size_hint: Option<u64>) -> Result<String, DestinationError>;
    fn upload_part(&mut self, token: &str, part_number: u32, data: Vec<u8>) -> Result<String, DestinationError>;
    fn finish_upload(&mut self, token: &str, receipts: Vec<String>) -> Result<ObjectInfo, DestinationError>;
    fn abort_upload(&mut self, token: &str) -> Result<(), DestinationError>;
    fn read(&mut self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>, DestinationError>;
    fn stat(&mut self, key: &str) -> Result<Option<ObjectInfo>, DestinationError>;
    fn list(&mut self, prefix: &str, cursor: Option<String>) -> Result<ListPage, DestinationError>;
    fn delete(&mut self, key: &str) -> Result<(), DestinationError>;
}

// ----------------------------------------------------------------- hook

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStart {
    pub job: String,
    pub backup_id: String,
    pub sources: Vec<String>,
    pub destination: String,
    pub extras: Extras,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    pub job: String,
    pub backup_id: String,
    pub succeeded: bool,
    pub error: Option<String>,
    pub files: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub duration_ms: u64,
    pub extras: Extras,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupEvent {
    PreBackup(BackupStart),
    PostBackup(BackupSummary),
    /// An event of a later 1.x minor: answer `Allow` unless you know it.
    Other {
        name: String,
        extras: Extras,
    },
}

/// A hook's answer. Later 1.x minors may add variants (matching on a
/// `Verdict` needs a wildcard arm; constructing one never breaks).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    Allow,
    /// Only pre-backup vetoes stop anything.
    Veto(String),
    /// A verdict of a later 1.x minor (a 1.0 plugin never needs it); a host
    /// that does not know `name` treats it as `Allow` with a warning.
    Other {
        name: String,
        extras: Extras,
    },
}

/// A pre/post-backup hook plugin (world `hook-plugin`).
pub trait HookPlugin: Plugin {
    fn on_event(&mut self, event: BackupEvent) -> Verdict;
}
