//! What bounds a plugin: the memory limiter of each instance, and the time
//! limit (and cancellation) of each call, with the errors they end in.

use super::*;

/// Resource limits applied to each instance of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// The most linear memory one instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// How long one call into the plugin (including `init`) may run.
    pub call_timeout: Duration,
}

impl Default for PluginLimits {
    /// 256 MiB of memory and 10 s per call: generous for a codec working on
    /// chunks of at most a few MiB.
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(10),
        }
    }
}

/// When the running synchronous call must stop: at its deadline, or as soon
/// as its caller raises the cancel flag.
#[derive(Default)]
pub(super) struct CallBudget {
    deadline: Option<Instant>,
    cancel: Option<Arc<AtomicBool>>,
}

/// The error a synchronous call ends with when its caller cancelled it.
#[derive(Debug)]
pub(super) struct CallCancelled;

impl std::fmt::Display for CallCancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the call was cancelled by its caller")
    }
}

impl std::error::Error for CallCancelled {}

/// The memory limit of one plugin instance, counted over **all** its linear
/// memories (a component may declare several; a per-memory cap would let it
/// use many times its limit), plus caps on tables and instances.
pub(crate) struct Limiter {
    /// The most bytes of linear memory the instance may hold in total.
    memory_limit: usize,
    /// Bytes of linear memory granted so far (memories never shrink).
    memory_used: usize,
    /// The bytes of the last grant, taken back if wasmtime then fails the
    /// grow (past the memory's own maximum, or the OS refused).
    last_grant: usize,
    /// Set when a grow was refused, so the resulting trap is reported as
    /// "memory limit" rather than as a crash.
    pub(crate) memory_hit: bool,
}

/// Table elements one table may hold (function tables of large Rust
/// components have a few thousand).
pub(super) const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl Limiter {
    pub(super) fn new(memory_limit: usize) -> Limiter {
        Limiter {
            memory_limit,
            memory_used: 0,
            last_grant: 0,
            memory_hit: false,
        }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let extra = desired.saturating_sub(current);
        let total = self.memory_used.saturating_add(extra);
        if total > self.memory_limit {
            self.memory_hit = true;
            // An error (not `Ok(false)`) traps at the grow: a guest whose
            // allocator ignores a failed grow cannot limp on.
            wasmtime::bail!(
                "memory limit: growing to {total} bytes in all would exceed {} bytes",
                self.memory_limit
            );
        }
        self.memory_used = total;
        self.last_grant = extra;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_used -= std::mem::take(&mut self.last_grant);
        Ok(())
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1000
    }

    fn tables(&self) -> usize {
        1000
    }

    fn memories(&self) -> usize {
        100
    }
}

/// Arms `store` for its next synchronous call: it may run for `limit`, and
/// stops within a tick of `cancel` being raised (the call then fails with
/// [`PluginError::Cancelled`], see [`call_error`]). A codec call waits on
/// nothing in the host, so the epoch tick is where it can be stopped: this
/// costs one flag check per tick, nothing per call.
pub(crate) fn arm_call(store: &mut Store<HostState>, limit: Duration, cancel: Option<Arc<AtomicBool>>) {
    store.data_mut().call = CallBudget {
        deadline: Instant::now().checked_add(limit),
        cancel,
    };
    store.set_epoch_deadline(1);
}

/// What a synchronous call does at an epoch tick: stop when its caller
/// cancelled it, trap with [`Trap::Interrupt`] past its deadline, else run
/// on until the next tick.
pub(super) fn at_tick(budget: &CallBudget) -> wasmtime::Result<UpdateDeadline> {
    if budget.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(wasmtime::Error::new(CallCancelled));
    }
    if budget.deadline.is_some_and(|d| Instant::now() >= d) {
        return Ok(UpdateDeadline::Interrupt);
    }
    Ok(UpdateDeadline::Continue(1))
}

/// Turns the error of a call into a [`PluginError`] that says which limit
/// (if any) stopped it.
pub(crate) fn call_error(
    err: wasmtime::Error,
    store: &Store<HostState>,
    call: &'static str,
    limits: &PluginLimits,
) -> PluginError {
    let plugin = store.data().plugin.to_string();
    if err.downcast_ref::<CallCancelled>().is_some() {
        PluginError::Cancelled { plugin, call }
    } else if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
        PluginError::Timeout {
            plugin,
            call,
            limit: limits.call_timeout,
        }
    } else if store.data().limiter.memory_hit {
        PluginError::MemoryLimit {
            plugin,
            call,
            limit: limits.memory_bytes,
        }
    } else {
        // The trap's kind (not wasmtime's multi-line backtrace, which is in
        // the debug log), and what the guest said before it died.
        tracing::debug!(target: "wimguard::plugin", plugin = %plugin, "`{call}` failed: {err:?}");
        let what = match err.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => format!("{err:#}").lines().next().unwrap_or_default().to_string(),
        };
        let reason = match store.data().stderr.last_words() {
            Some(words) => format!("{what}; it said: {words}"),
            None => what,
        };
        PluginError::Trap { plugin, call, reason }
    }
}
