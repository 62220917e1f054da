//! The first-party plugins this binary carries: built by `build.rs` from
//! `plugins/` for wasm32-wasip2 and registered at every start (see
//! `PluginRegistry::register_bundled`).

use crate::plugins::registry::BundledPlugin;

/// The bundled plugins, by name.
pub fn bundled_plugins() -> &'static [BundledPlugin] {
    &[
        BundledPlugin {
            name: "xpress",
            bytes: include_bytes!(concat!(env!("OUT_DIR"), "/bundled/wimguard_xpress_plugin.wasm")),
        },
        BundledPlugin {
            name: "lzx",
            bytes: include_bytes!(concat!(env!("OUT_DIR"), "/bundled/wimguard_lzx_plugin.wasm")),
        },
        BundledPlugin {
            name: "webhook",
            bytes: include_bytes!(concat!(env!("OUT_DIR"), "/bundled/wimguard_webhook.wasm")),
        },
        BundledPlugin {
            name: "s3-upload",
            bytes: include_bytes!(concat!(env!("OUT_DIR"), "/bundled/wimguard_s3_upload.wasm")),
        },
    ]
}
