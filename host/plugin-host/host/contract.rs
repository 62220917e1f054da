//! The contract with plugins as this host speaks it: the bindings generated
//! from `sdk/wit`, the API version, what `init` is told, and the rules for
//! plugin names and codec ids.

use super::*;

/// Bindings generated from `sdk/wit` for the codec world.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "codec-plugin",
    });
}

/// Bindings for the hook world; the host interfaces are shared with
/// [`bindings`], so one set of `Host` impls serves every world.
pub(crate) mod hook_bindings {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "hook-plugin",
        // Hooks run as async calls so that a wall-clock limit can stop a
        // guest that waits inside the host (a sleep, a slow HTTP body),
        // which the epoch deadline cannot reach.
        exports: { default: async },
        with: {
            "wimguard:plugin/types": super::bindings::wimguard::plugin::types,
            "wimguard:plugin/log": super::bindings::wimguard::plugin::log,
            "wimguard:plugin/config": super::bindings::wimguard::plugin::config,
            "wimguard:plugin/progress": super::bindings::wimguard::plugin::progress,
        },
    });
}

/// Bindings for the destination world: async like hooks (uploads wait on
/// the network inside the host), sharing the host interfaces of [`bindings`].
pub(crate) mod destination_bindings {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "destination-plugin",
        exports: { default: async },
        with: {
            "wimguard:plugin/types": super::bindings::wimguard::plugin::types,
            "wimguard:plugin/log": super::bindings::wimguard::plugin::log,
            "wimguard:plugin/config": super::bindings::wimguard::plugin::config,
            "wimguard:plugin/progress": super::bindings::wimguard::plugin::progress,
        },
    });
}

/// The contract major version this host speaks.
pub const API_MAJOR: u16 = 1;
/// The contract minor version this host speaks.
pub const API_MINOR: u16 = 0;

/// What `init` is told about the host.
pub(crate) fn host_info() -> types::HostInfo {
    types::HostInfo {
        host_version: env!("CARGO_PKG_VERSION").into(),
        api_version: types::ApiVersion {
            major: API_MAJOR,
            minor: API_MINOR,
        },
        extras: Vec::new(),
    }
}

/// The well-known `host-info` extras key that tells a plugin the time limit
/// of each of its calls, in milliseconds (sent to destination plugins, so
/// that their retries stop in time; see `sdk/wit/types.wit`).
pub const CALL_TIMEOUT_EXTRA: &str = "call-timeout-ms";

/// [`host_info`] with the call time limit in its extras.
pub(crate) fn host_info_with_limit(limit: Duration) -> types::HostInfo {
    let mut info = host_info();
    info.extras
        .push((CALL_TIMEOUT_EXTRA.to_string(), limit.as_millis().to_string()));
    info
}

/// A plugin name: lowercase `[a-z0-9-]`, 1..=64 bytes.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The `&'static str` that [`wimguard_sdk::Codec::name`] returns for a
/// plugin's codec id. Each distinct id is stored once for the life of the
/// process, so loading a plugin again (upgrade, restart of its runtime)
/// does not grow memory; the codec itself is freed when unused.
pub fn codec_name(id: &str) -> &'static str {
    static NAMES: std::sync::OnceLock<Mutex<std::collections::HashSet<&'static str>>> = std::sync::OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.get(id) {
        return n;
    }
    let n: &'static str = Box::leak(id.to_owned().into_boxed_str());
    names.insert(n);
    n
}
