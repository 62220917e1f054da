//! What a plugin does (the world it exports) and how it runs.

/// What a plugin does: the WIT world it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PluginKind {
    /// Compresses chunks (`codec-plugin`).
    #[default]
    Codec,
    /// Stores remote archives (`destination-plugin`).
    Destination,
    /// Runs around backups (`hook-plugin`).
    Hook,
}

impl PluginKind {
    const ALL: [PluginKind; 3] = [PluginKind::Codec, PluginKind::Destination, PluginKind::Hook];

    /// The word stored in the catalog and shown to users (also the WIT
    /// interface's name).
    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Codec => "codec",
            PluginKind::Destination => "destination",
            PluginKind::Hook => "hook",
        }
    }

    /// The kind named `s`; None for any other word (never a guess).
    pub fn from_name(s: &str) -> Option<PluginKind> {
        PluginKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PluginRuntime {
    /// A WebAssembly component, sandboxed by wasmtime.
    #[default]
    Wasm,
    /// A trusted shared library loaded into the server.
    Native,
}

impl PluginRuntime {
    const ALL: [PluginRuntime; 2] = [PluginRuntime::Wasm, PluginRuntime::Native];

    pub fn as_str(self) -> &'static str {
        match self {
            PluginRuntime::Wasm => "wasm",
            PluginRuntime::Native => "native",
        }
    }

    /// The runtime named `s`; None for any other word (never a guess).
    pub fn from_name(s: &str) -> Option<PluginRuntime> {
        PluginRuntime::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
