//! The host side of running a plugin: the state of one instance and the
//! imports it is given (`log`, `config`, `progress`, an empty WASI), over
//! the pieces split out by concern below.

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap, UpdateDeadline};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod cache;
mod contract;
mod engine;
mod error;
mod guest_output;
mod limits;
mod linker;
mod runtime;
mod settings;

pub use cache::*;
pub use contract::*;
pub use engine::*;
pub use error::*;
use guest_output::*;
pub use limits::*;
pub(crate) use linker::*;
pub(crate) use runtime::*;
pub use settings::*;

use bindings::wimguard::plugin::{config, log, progress, types};

/// What one store holds: the WASI context (empty), the limiter, and what the
/// host imports need.
pub(crate) struct HostState {
    wasi: WasiCtx,
    /// The guest's stderr, for the last words of a crash.
    stderr: GuestOutput,
    table: ResourceTable,
    pub(crate) limiter: Limiter,
    plugin: Arc<str>,
    settings: Arc<PluginSettings>,
    http: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http_policy: super::http::HttpPolicy,
    /// What ends the current synchronous call (see [`arm_call`]).
    call: CallBudget,
}

impl HostState {
    /// A fresh state for one instance of `plugin`.
    pub(crate) fn new(
        plugin: Arc<str>,
        settings: Arc<PluginSettings>,
        limits: &PluginLimits,
        http_policy: super::http::HttpPolicy,
    ) -> Self {
        // Empty WASI: no preopens, no env, no args, no sockets (the builder's
        // default socket check denies every address), empty stdin.
        let stderr = GuestOutput::new(plugin.clone(), "stderr");
        let wasi = WasiCtxBuilder::new()
            .stdout(GuestOutput::new(plugin.clone(), "stdout"))
            .stderr(stderr.clone())
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        HostState {
            wasi,
            stderr,
            table: ResourceTable::new(),
            limiter: Limiter::new(limits.memory_bytes),
            plugin,
            settings,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_policy,
            call: CallBudget::default(),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_policy,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn log(&mut self, level: log::Level, message: String) {
        let plugin = &*self.plugin;
        match level {
            log::Level::Trace => tracing::trace!(target: "wimguard::plugin", plugin, "{message}"),
            log::Level::Debug => tracing::debug!(target: "wimguard::plugin", plugin, "{message}"),
            log::Level::Info => tracing::info!(target: "wimguard::plugin", plugin, "{message}"),
            log::Level::Warn => tracing::warn!(target: "wimguard::plugin", plugin, "{message}"),
            log::Level::Error => tracing::error!(target: "wimguard::plugin", plugin, "{message}"),
        }
    }
}

impl config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).map(|v| v.value.clone())
    }

    fn list(&mut self) -> Vec<config::Entry> {
        self.settings
            .iter()
            .map(|(key, v)| config::Entry {
                key: key.clone(),
                secret: v.secret,
                extras: Vec::new(),
            })
            .collect()
    }
}

impl progress::Host for HostState {
    /// Codec and hook calls are short, and the caller of a destination
    /// counts the bytes it hands over itself, so reports only reach the
    /// debug log.
    fn report(&mut self, bytes: u64, items: u64) {
        tracing::debug!(target: "wimguard::plugin", plugin = &*self.plugin, bytes, items, "progress");
    }
}

/// Makes an async call's store give control back to its caller at every
/// epoch tick instead of trapping at a deadline, so the wall-clock limit and
/// cancellation of [`run_bounded`] also stop a guest busy in wasm code.
pub(crate) fn yield_at_every_tick(store: &mut Store<HostState>) {
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
}

/// Makes a [`Store`] for one instance, with its limiter, for synchronous
/// calls: at every epoch tick it checks the budget set by [`arm_call`]
/// (armed here with the call time limit, for instantiation). Async stores
/// switch to [`yield_at_every_tick`] instead.
pub(crate) fn new_store(
    plugin: Arc<str>,
    settings: Arc<PluginSettings>,
    limits: &PluginLimits,
    http_policy: super::http::HttpPolicy,
) -> Store<HostState> {
    let mut store = Store::new(engine(), HostState::new(plugin, settings, limits, http_policy));
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(|ctx| at_tick(&ctx.data().call));
    arm_call(&mut store, limits.call_timeout, None);
    store
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component whose core instances each have a memory of `pages` 64 KiB
    /// pages.
    fn memories(count: usize, pages: u32) -> Component {
        let mut wat = String::from("(component\n");
        for i in 0..count {
            wat.push_str(&format!(
                "  (core module $m{i} (memory {pages}))\n  (core instance (instantiate $m{i}))\n"
            ));
        }
        wat.push(')');
        Component::new(engine(), wat).unwrap()
    }

    fn instantiate(component: &Component, limit_mib: usize) -> Result<(), PluginError> {
        let limits = PluginLimits {
            memory_bytes: limit_mib << 20,
            call_timeout: Duration::from_secs(5),
        };
        let plugin: Arc<str> = "many-memories".into();
        let mut store = new_store(
            plugin.clone(),
            Arc::default(),
            &limits,
            super::super::http::HttpPolicy::deny_all(plugin),
        );
        let linker: Linker<HostState> = Linker::new(engine());
        linker
            .instantiate(&mut store, component)
            .map(drop)
            .map_err(|e| call_error(e, &store, "instantiate", &limits))
    }

    #[test]
    fn the_memory_limit_counts_every_memory_of_a_component() {
        // 6 MiB of memory fits a 10 MiB limit...
        instantiate(&memories(1, 96), 10).unwrap();
        // ...two memories of 6 MiB do not, though each alone would.
        let e = instantiate(&memories(2, 96), 10).unwrap_err();
        assert!(
            matches!(e, PluginError::MemoryLimit { limit, .. } if limit == 10 << 20),
            "{e:?}"
        );
        assert!(e.to_string().contains("many-memories"), "{e}");
        // Many small memories add up the same way.
        assert!(instantiate(&memories(20, 16), 10).is_err());
        instantiate(&memories(9, 16), 10).unwrap();
    }
}
