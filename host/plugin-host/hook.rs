//! Hook plugins (world `hook-plugin`): called before and after a backup.
//!
//! Every event gets a fresh instance (hooks run twice per backup, so
//! instantiating is cheap next to the backup, and no state can leak from
//! one backup into the next); the compiled component and its linked
//! `InstancePre` are made once per load and reused. A call runs under the
//! plugin's memory limit and, for `init` and `on-event` together, its time
//! limit: the epoch deadline stops wasm code, and a wall-clock limit on the
//! async call stops a guest waiting inside the host. Outgoing HTTP is
//! filtered by the plugin's allow-list.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Component;

use super::host::bindings::wimguard::plugin::types;
use super::host::hook_bindings::exports::wimguard::plugin::hook as wit;
use super::host::hook_bindings::{HookPlugin, HookPluginPre};
use super::host::{
    call_error, host_info, linked_pre, new_store, run_bounded, yield_at_every_tick, PluginError, PluginLimits,
    PluginSettings, Stopped,
};
use super::http::{HostPattern, HttpPolicy};

/// What a hook is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookEvent {
    PreBackup {
        job: String,
        backup_id: String,
        sources: Vec<String>,
        destination: String,
    },
    PostBackup {
        job: String,
        backup_id: String,
        succeeded: bool,
        error: Option<String>,
        files: u64,
        bytes_read: u64,
        bytes_written: u64,
        duration_ms: u64,
    },
}

impl HookEvent {
    /// `pre-backup` or `post-backup`.
    pub fn name(&self) -> &'static str {
        match self {
            HookEvent::PreBackup { .. } => "pre-backup",
            HookEvent::PostBackup { .. } => "post-backup",
        }
    }

    fn to_wit(&self) -> wit::BackupEvent {
        match self.clone() {
            HookEvent::PreBackup {
                job,
                backup_id,
                sources,
                destination,
            } => wit::BackupEvent::PreBackup(wit::BackupStart {
                job,
                backup_id,
                sources,
                destination,
                extras: Vec::new(),
            }),
            HookEvent::PostBackup {
                job,
                backup_id,
                succeeded,
                error,
                files,
                bytes_read,
                bytes_written,
                duration_ms,
            } => wit::BackupEvent::PostBackup(wit::BackupSummary {
                job,
                backup_id,
                succeeded,
                error,
                files,
                bytes_read,
                bytes_written,
                duration_ms,
                extras: Vec::new(),
            }),
        }
    }
}

/// A hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookVerdict {
    Allow,
    Veto(String),
}

/// A loaded hook plugin.
#[derive(Clone)]
pub struct WasmHook {
    pre: HookPluginPre<super::host::HostState>,
    name: Arc<str>,
    settings: Arc<PluginSettings>,
    limits: PluginLimits,
    allowed: Arc<Vec<HostPattern>>,
    /// May allowed host names resolve to non-public addresses?
    allow_private: bool,
}

impl WasmHook {
    /// Prepares `component` (already checked to be a hook plugin) to run
    /// as `name` with the admin's settings, limits and allowed hosts (whose
    /// names may lead to non-public addresses only with `allow_private`).
    pub fn new(
        component: &Component,
        name: &str,
        settings: PluginSettings,
        limits: PluginLimits,
        allowed: Vec<HostPattern>,
        allow_private: bool,
    ) -> Result<WasmHook, PluginError> {
        let pre = linked_pre(component, "hook", name, HookPluginPre::new)?;
        Ok(WasmHook {
            pre,
            name: name.into(),
            settings: Arc::new(settings),
            limits,
            allowed: Arc::new(allowed),
            allow_private,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `init` and `on-event` on a fresh instance, within the plugin's
    /// time limit for the two together (wall clock: a guest sleeping or
    /// waiting on a slow server inside the host is stopped too), or within
    /// `cap` when that is shorter, and giving up early when `cancel` is
    /// raised. An error names the plugin and what stopped it (time or
    /// memory limit, trap, refused capability, cancellation); HTTP requests
    /// the sandbox refused are added to it.
    pub fn call(
        &self,
        event: &HookEvent,
        cancel: Option<&AtomicBool>,
        cap: Option<Duration>,
    ) -> Result<HookVerdict, PluginError> {
        let started = std::time::Instant::now();
        let r = self.call_timed(event, cancel, cap);
        crate::metrics::plugin_call(&self.name, "on-event", started, r.is_ok());
        r
    }

    fn call_timed(
        &self,
        event: &HookEvent,
        cancel: Option<&AtomicBool>,
        cap: Option<Duration>,
    ) -> Result<HookVerdict, PluginError> {
        let limit = cap.map_or(self.limits.call_timeout, |c| c.min(self.limits.call_timeout));
        let policy = HttpPolicy::new(self.name.clone(), self.allowed.clone(), self.allow_private);
        // A call that failed after the sandbox refused one of its requests
        // most likely failed because of it: say so (a limit or a
        // cancellation stays what it was; the refusal is in the log).
        let with_denials = |e: PluginError| match (&e, policy.take_denied()) {
            (_, denied) if denied.is_empty() => e,
            (PluginError::Timeout { .. } | PluginError::Cancelled { .. }, _) => e,
            (PluginError::Init { plugin, reason }, denied) => PluginError::Init {
                plugin: plugin.clone(),
                reason: format!("{reason} (the sandbox refused HTTP request {})", denied.join(", ")),
            },
            (PluginError::Trap { call, .. }, denied) => PluginError::Denied {
                plugin: self.name.to_string(),
                call,
                what: format!("HTTP request {}", denied.join(", ")),
                why: format!("the call then failed: {e}"),
            },
            (_, _) => e,
        };
        // Which call is running, for the error when the limit stops it.
        let stage = std::cell::Cell::new("instantiate");
        let run = async {
            let mut store = new_store(self.name.clone(), self.settings.clone(), &self.limits, policy.clone());
            // Give control back at every tick, so the wall-clock limit and
            // cancellation also stop a guest busy in wasm.
            yield_at_every_tick(&mut store);
            let bindings: HookPlugin = match self.pre.instantiate_async(&mut store).await {
                Ok(b) => b,
                Err(e) => return Err(call_error(e, &store, "instantiate", &self.limits)),
            };
            stage.set("init");
            match bindings
                .wimguard_plugin_plugin()
                .call_init(&mut store, &host_info())
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    let reason = match e {
                        types::InitError::BadConfig(m) => format!("bad configuration: {m}"),
                        types::InitError::Unavailable(m) => format!("unavailable: {m}"),
                        types::InitError::Other(m) => m,
                    };
                    return Err(with_denials(PluginError::Init {
                        plugin: self.name.to_string(),
                        reason,
                    }));
                }
                Err(e) => return Err(with_denials(call_error(e, &store, "init", &self.limits))),
            }
            stage.set("on-event");
            bindings
                .wimguard_plugin_hook()
                .call_on_event(&mut store, &event.to_wit())
                .await
                .map_err(|e| with_denials(call_error(e, &store, "on-event", &self.limits)))
        };
        let verdict = match run_bounded(limit, cancel, run) {
            Ok(r) => r?,
            Err(stopped) => {
                let call = stage.get();
                return Err(with_denials(match stopped {
                    Stopped::TimedOut => PluginError::Timeout {
                        plugin: self.name.to_string(),
                        call,
                        limit,
                    },
                    Stopped::Cancelled => PluginError::Cancelled {
                        plugin: self.name.to_string(),
                        call,
                    },
                }));
            }
        };
        Ok(match verdict {
            wit::Verdict::Allow => HookVerdict::Allow,
            wit::Verdict::Other(o) => {
                tracing::warn!(
                    target: "wimguard::plugin",
                    plugin = &*self.name,
                    "answered verdict `{}`, which this host does not know; treated as allow",
                    o.name
                );
                HookVerdict::Allow
            }
            wit::Verdict::Veto(reason) => {
                let denied = policy.take_denied();
                if denied.is_empty() {
                    HookVerdict::Veto(reason)
                } else {
                    HookVerdict::Veto(format!(
                        "{reason} (refused by the sandbox: HTTP request {})",
                        denied.join(", ")
                    ))
                }
            }
        })
    }
}
