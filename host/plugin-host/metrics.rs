//! Timings of plugin calls, recorded through the `metrics` facade. The
//! daemon installs a Prometheus recorder and calls [`enable`]; until then
//! a call records nothing and costs one atomic load (codec calls are per
//! chunk).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use metrics::{counter, histogram};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Starts recording plugin calls (once a recorder is installed).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Records one call into a plugin: `plugin_calls_total`,
/// `plugin_call_failures_total` and `plugin_call_duration_seconds`, by
/// plugin and call.
pub fn plugin_call(plugin: &str, call: &'static str, started: Instant, ok: bool) {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    let plugin = plugin.to_owned();
    counter!("wimguard_plugin_calls_total", "plugin" => plugin.clone(), "call" => call).increment(1);
    if !ok {
        counter!("wimguard_plugin_call_failures_total", "plugin" => plugin.clone(), "call" => call).increment(1);
    }
    histogram!("wimguard_plugin_call_duration_seconds", "plugin" => plugin, "call" => call)
        .record(started.elapsed().as_secs_f64());
}
