//! Destination plugins (world `destination-plugin`): where remote archives
//! are stored (object stores such as S3).
//!
//! A [`WasmDestination`] is cheap to clone and shared by every thread that
//! uploads or reads: each call takes an idle instance of the plugin (or
//! makes one and runs its `init`, once per instance), calls it, and puts it
//! back. Calls block the calling thread; the guest runs as an async call on
//! the plugin I/O runtime (like hooks), so one time limit covers the guest's
//! wasm code and its waits inside the host (the network, a sleep between
//! retries): the plugin's `callTimeoutSeconds` (default
//! [`DEFAULT_CALL_TIMEOUT`]), which the plugin is told in `host-info`
//! extras (`call-timeout-ms`) so that its retries stop in time. The memory
//! limit counts all memories of an instance; a cancel flag
//! ([`WasmDestination::with_cancel`]) stops a call within a tick. An
//! instance that trapped, hit a limit or was stopped is thrown away, never
//! reused; one that answered an error is kept (the error is the plugin's
//! answer, its state is sound).
//!
//! Outgoing HTTP goes through the plugin's `allowedHosts` (deny by default,
//! DNS rebinding refused, see [`super::http`]); a call that failed after the
//! sandbox refused one of its requests says so.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::Store;

use super::host::bindings::wimguard::plugin::types;
use super::host::destination_bindings::exports::wimguard::plugin::destination as wit;
use super::host::destination_bindings::{DestinationPlugin, DestinationPluginPre};
use super::host::{
    call_error, host_info_with_limit, linked_pre, new_store, run_bounded, yield_at_every_tick, HostState, PluginError,
    PluginLimits, PluginSettings, Stopped,
};
use super::http::{HostPattern, HttpPolicy};

/// The call time limit of destination plugins unless config sets
/// `limits.callTimeoutSeconds`: one call may upload a 16 MiB part and
/// retry it through a minute of throttling on a slow uplink.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Idle instances kept for reuse; more are dropped when they come back (an
/// instance that uploaded a part keeps its grown memory).
const MAX_IDLE: usize = 4;

/// What a destination says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, relative to the plugin's own namespace (as the host passes keys).
    pub key: String,
    pub size: u64,
    /// An opaque version tag (S3: the ETag without quotes).
    pub etag: Option<String>,
    /// Last modification, milliseconds since the Unix epoch.
    pub modified_ms: Option<u64>,
}

impl From<wit::ObjectInfo> for ObjectInfo {
    fn from(o: wit::ObjectInfo) -> Self {
        ObjectInfo {
            key: o.key,
            size: o.size,
            etag: o.etag,
            modified_ms: o.modified_ms,
        }
    }
}

/// Why a destination call failed. The plugin's own errors name the plugin
/// and say what failed in words ("plugin s3-upload: uploading part 3 of
/// KEY: the credentials were refused by ENDPOINT for bucket BUCKET: …").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// The object does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Credentials were refused, the operation is forbidden, or the sandbox
    /// refused a request.
    #[error("{0}")]
    Denied(String),
    /// A transient failure that the plugin's own retries did not overcome.
    #[error("{0}")]
    Unavailable(String),
    /// A bad argument or state: an existing key, an unknown upload, a
    /// missing bucket, a bad setting of the plugin.
    #[error("{0}")]
    Invalid(String),
    /// Storage full or a quota hit.
    #[error("{0}")]
    NoSpace(String),
    #[error("{0}")]
    Other(String),
    /// The plugin trapped, hit a limit, or could not start: the message names plugin and limit.
    #[error("{0}")]
    Failed(String),
    #[error("cancelled")]
    Cancelled,
}

/// A loaded destination plugin. Cheap to clone, `Send + Sync`; concurrent
/// calls from many threads run on a pool of instances.
#[derive(Clone)]
pub struct WasmDestination {
    shared: Arc<Shared>,
    /// Raised: calls stop with [`DestinationError::Cancelled`].
    cancel: Option<Arc<AtomicBool>>,
}

struct Shared {
    pre: DestinationPluginPre<HostState>,
    name: Arc<str>,
    settings: Arc<PluginSettings>,
    limits: PluginLimits,
    allowed: Arc<Vec<HostPattern>>,
    /// May allowed host names resolve to non-public addresses?
    allow_private: bool,
    idle: Mutex<Vec<Live>>,
}

/// One initialised instance, its store and its HTTP policy.
struct Live {
    store: Store<HostState>,
    bindings: DestinationPlugin,
    policy: HttpPolicy,
}

/// One call of the destination interface.
enum Op<'a> {
    Begin(&'a str, Option<u64>),
    Part(&'a str, u32, &'a [u8]),
    Finish(&'a str, &'a [String]),
    Abort(&'a str),
    Read(&'a str, u64, u32),
    Stat(&'a str),
    List(&'a str, Option<&'a str>),
    Delete(&'a str),
}

impl Op<'_> {
    fn name(&self) -> &'static str {
        match self {
            Op::Begin(..) => "begin-upload",
            Op::Part(..) => "upload-part",
            Op::Finish(..) => "finish-upload",
            Op::Abort(..) => "abort-upload",
            Op::Read(..) => "read",
            Op::Stat(..) => "stat",
            Op::List(..) => "list",
            Op::Delete(..) => "delete",
        }
    }
}

/// What a call answered.
enum Answer {
    Text(String),
    Info(wit::ObjectInfo),
    Unit,
    Bytes(Vec<u8>),
    Stat(Option<wit::ObjectInfo>),
    Page(wit::ListPage),
}

async fn invoke(
    bindings: &DestinationPlugin,
    store: &mut Store<HostState>,
    op: &Op<'_>,
) -> wasmtime::Result<Result<Answer, wit::DestinationError>> {
    let d = bindings.wimguard_plugin_destination();
    Ok(match *op {
        Op::Begin(key, hint) => d.call_begin_upload(store, key, hint).await?.map(Answer::Text),
        Op::Part(token, part, data) => d.call_upload_part(store, token, part, data).await?.map(Answer::Text),
        Op::Finish(token, receipts) => d.call_finish_upload(store, token, receipts).await?.map(Answer::Info),
        Op::Abort(token) => d.call_abort_upload(store, token).await?.map(|()| Answer::Unit),
        Op::Read(key, offset, len) => d.call_read(store, key, offset, len).await?.map(Answer::Bytes),
        Op::Stat(key) => d.call_stat(store, key).await?.map(Answer::Stat),
        Op::List(prefix, cursor) => d.call_list(store, prefix, cursor).await?.map(Answer::Page),
        Op::Delete(key) => d.call_delete(store, key).await?.map(|()| Answer::Unit),
    })
}

/// The answer a call of `op` must give, or a contract violation.
fn unexpected(plugin: &str, call: &str) -> DestinationError {
    DestinationError::Failed(format!("plugin {plugin}: `{call}` answered a value of the wrong kind"))
}

impl WasmDestination {
    /// Prepares `component` (already checked to be a destination plugin)
    /// to run as `name` with the admin's settings, limits and allowed hosts
    /// (whose names may lead to non-public addresses only with
    /// `allow_private`). Nothing runs yet: the first call makes the first
    /// instance and runs its `init`.
    pub fn new(
        component: &Component,
        name: &str,
        settings: PluginSettings,
        limits: PluginLimits,
        allowed: Vec<HostPattern>,
        allow_private: bool,
    ) -> Result<WasmDestination, PluginError> {
        let pre = linked_pre(component, "destination", name, DestinationPluginPre::new)?;
        Ok(WasmDestination {
            shared: Arc::new(Shared {
                pre,
                name: name.into(),
                settings: Arc::new(settings),
                limits,
                allowed: Arc::new(allowed),
                allow_private,
                idle: Mutex::default(),
            }),
            cancel: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The limits every call runs under.
    pub fn limits(&self) -> PluginLimits {
        self.shared.limits
    }

    /// A clone whose calls stop (DestinationError::Cancelled) as soon as `flag` is set.
    pub fn with_cancel(&self, flag: Arc<AtomicBool>) -> WasmDestination {
        WasmDestination {
            shared: self.shared.clone(),
            cancel: Some(flag),
        }
    }

    /// Starts an upload of `key`; the token carries all its state. With a
    /// size hint of `n` the host promises exactly one part (number 1) of
    /// exactly `n` bytes.
    pub fn begin_upload(&self, key: &str, size_hint: Option<u64>) -> Result<String, DestinationError> {
        match self.call(Op::Begin(key, size_hint))? {
            Answer::Text(t) => Ok(t),
            _ => Err(unexpected(self.name(), "begin-upload")),
        }
    }

    /// Uploads part `part` (1-based; again to replace it); returns its receipt.
    pub fn upload_part(&self, token: &str, part: u32, data: &[u8]) -> Result<String, DestinationError> {
        match self.call(Op::Part(token, part, data))? {
            Answer::Text(t) => Ok(t),
            _ => Err(unexpected(self.name(), "upload-part")),
        }
    }

    /// Completes the upload from the receipts of parts 1..n, in order.
    pub fn finish_upload(&self, token: &str, receipts: &[String]) -> Result<ObjectInfo, DestinationError> {
        match self.call(Op::Finish(token, receipts))? {
            Answer::Info(i) => Ok(i.into()),
            _ => Err(unexpected(self.name(), "finish-upload")),
        }
    }

    /// Abandons an upload; unknown or finished uploads are not an error.
    pub fn abort_upload(&self, token: &str) -> Result<(), DestinationError> {
        match self.call(Op::Abort(token))? {
            Answer::Unit => Ok(()),
            _ => Err(unexpected(self.name(), "abort-upload")),
        }
    }

    /// Up to `len` bytes of `key` from `offset` (fewer only at the end).
    pub fn read(&self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>, DestinationError> {
        match self.call(Op::Read(key, offset, len))? {
            Answer::Bytes(b) if b.len() <= len as usize => Ok(b),
            Answer::Bytes(b) => Err(DestinationError::Failed(format!(
                "plugin {}: `read` returned {} bytes, {len} were asked for",
                self.name(),
                b.len()
            ))),
            _ => Err(unexpected(self.name(), "read")),
        }
    }

    /// Metadata of `key`, or None when it does not exist.
    pub fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, DestinationError> {
        match self.call(Op::Stat(key))? {
            Answer::Stat(s) => Ok(s.map(ObjectInfo::from)),
            _ => Err(unexpected(self.name(), "stat")),
        }
    }

    /// One page of the objects whose keys start with `prefix`, and the
    /// cursor of the next page (None on the last).
    pub fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<ObjectInfo>, Option<String>), DestinationError> {
        match self.call(Op::List(prefix, cursor))? {
            Answer::Page(p) => Ok((p.objects.into_iter().map(ObjectInfo::from).collect(), p.next_cursor)),
            _ => Err(unexpected(self.name(), "list")),
        }
    }

    /// Deletes `key`; a missing object is not an error.
    pub fn delete(&self, key: &str) -> Result<(), DestinationError> {
        match self.call(Op::Delete(key))? {
            Answer::Unit => Ok(()),
            _ => Err(unexpected(self.name(), "delete")),
        }
    }

    /// Runs `op` on an idle instance (or a new one, `init` included), within
    /// the call time limit and while the cancel flag stays down.
    fn call(&self, op: Op<'_>) -> Result<Answer, DestinationError> {
        let started = std::time::Instant::now();
        let call = op.name();
        let r = self.call_timed(op);
        crate::metrics::plugin_call(self.name(), call, started, r.is_ok());
        r
    }

    fn call_timed(&self, op: Op<'_>) -> Result<Answer, DestinationError> {
        let shared = &*self.shared;
        let call = op.name();
        if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(DestinationError::Cancelled);
        }
        let limit = shared.limits.call_timeout;
        let mut slot = shared.take_idle();
        // Which call is running, for the error when the limit stops it.
        let stage = Cell::new(if slot.is_some() { call } else { "instantiate" });
        // Set when the instance must not be used again (a trap, a limit).
        let broken = Cell::new(false);
        let run = async {
            if slot.is_none() {
                slot = Some(shared.start(&stage, limit).await?);
            }
            let live = slot.as_mut().expect("an instance was just made");
            stage.set(call);
            yield_at_every_tick(&mut live.store);
            let answer = invoke(&live.bindings, &mut live.store, &op).await;
            let denied = live.policy.take_denied();
            match answer {
                Ok(Ok(a)) => Ok(a),
                Ok(Err(e)) => Err(shared.guest_error(e, &denied)),
                Err(e) => {
                    broken.set(true);
                    let e = call_error(e, &live.store, call, &shared.limits);
                    Err(shared.failed(e, &denied))
                }
            }
        };
        let result = match run_bounded(limit, self.cancel.as_deref(), run) {
            Ok(r) => r,
            Err(stopped) => {
                // Dropped mid-call: the instance is in an unknown state.
                broken.set(true);
                match stopped {
                    Stopped::Cancelled => Err(DestinationError::Cancelled),
                    Stopped::TimedOut => {
                        let denied = slot.as_ref().map(|l| l.policy.take_denied()).unwrap_or_default();
                        let e = PluginError::Timeout {
                            plugin: shared.name.to_string(),
                            call: stage.get(),
                            limit,
                        };
                        Err(shared.failed(e, &denied))
                    }
                }
            }
        };
        if let Some(live) = slot.filter(|_| !broken.get()) {
            shared.put_idle(live);
        }
        result
    }
}

impl Shared {
    fn take_idle(&self) -> Option<Live> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_idle(&self, live: Live) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(live);
        }
    }

    /// A new instance with `init` done (told the call limit `limit`).
    async fn start(&self, stage: &Cell<&'static str>, limit: Duration) -> Result<Live, DestinationError> {
        let policy = HttpPolicy::new(self.name.clone(), self.allowed.clone(), self.allow_private);
        let mut store = new_store(self.name.clone(), self.settings.clone(), &self.limits, policy.clone());
        yield_at_every_tick(&mut store);
        let bindings = match self.pre.instantiate_async(&mut store).await {
            Ok(b) => b,
            Err(e) => {
                let e = call_error(e, &store, "instantiate", &self.limits);
                return Err(self.failed(e, &policy.take_denied()));
            }
        };
        stage.set("init");
        let init = bindings
            .wimguard_plugin_plugin()
            .call_init(&mut store, &host_info_with_limit(limit))
            .await;
        let denied = policy.take_denied();
        let plugin = &self.name;
        match init {
            Ok(Ok(())) => Ok(Live {
                store,
                bindings,
                policy,
            }),
            Ok(Err(e)) => Err(with_denied(
                match e {
                    types::InitError::BadConfig(m) => {
                        DestinationError::Invalid(format!("plugin {plugin}: init failed: bad configuration: {m}"))
                    }
                    types::InitError::Unavailable(m) => {
                        DestinationError::Unavailable(format!("plugin {plugin}: init failed: unavailable: {m}"))
                    }
                    types::InitError::Other(m) => DestinationError::Other(format!("plugin {plugin}: init failed: {m}")),
                },
                &denied,
            )),
            Err(e) => Err(self.failed(call_error(e, &store, "init", &self.limits), &denied)),
        }
    }

    /// The plugin's own error, naming the plugin.
    fn guest_error(&self, e: wit::DestinationError, denied: &[String]) -> DestinationError {
        let p = &self.name;
        let e = match e {
            wit::DestinationError::NotFound(m) => DestinationError::NotFound(format!("plugin {p}: {m}")),
            wit::DestinationError::Denied(m) => DestinationError::Denied(format!("plugin {p}: {m}")),
            wit::DestinationError::Unavailable(m) => DestinationError::Unavailable(format!("plugin {p}: {m}")),
            wit::DestinationError::Invalid(m) => DestinationError::Invalid(format!("plugin {p}: {m}")),
            wit::DestinationError::NoSpace(m) => DestinationError::NoSpace(format!("plugin {p}: {m}")),
            wit::DestinationError::Other(m) => DestinationError::Other(format!("plugin {p}: {m}")),
        };
        with_denied(e, denied)
    }

    /// A trap, a limit or a failed start, with the requests the sandbox refused.
    fn failed(&self, e: PluginError, denied: &[String]) -> DestinationError {
        match e {
            PluginError::Cancelled { .. } => DestinationError::Cancelled,
            e if denied.is_empty() => DestinationError::Failed(e.to_string()),
            e => DestinationError::Failed(format!("{e} (the sandbox refused HTTP request {})", denied.join(", "))),
        }
    }
}

/// An error of a call during which the sandbox refused requests: most
/// likely because of them, so it becomes [`DestinationError::Denied`] and
/// says which (the log has them too).
fn with_denied(e: DestinationError, denied: &[String]) -> DestinationError {
    if denied.is_empty() {
        return e;
    }
    let refused = format!("(the sandbox refused HTTP request {})", denied.join(", "));
    match e {
        DestinationError::NotFound(m)
        | DestinationError::Denied(m)
        | DestinationError::Unavailable(m)
        | DestinationError::Invalid(m)
        | DestinationError::NoSpace(m)
        | DestinationError::Other(m) => DestinationError::Denied(format!("{m} {refused}")),
        DestinationError::Failed(m) => DestinationError::Failed(format!("{m} {refused}")),
        DestinationError::Cancelled => DestinationError::Cancelled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<WasmDestination>();
    }

    #[test]
    fn refused_requests_turn_errors_into_denials() {
        let e = with_denied(
            DestinationError::Unavailable("gave up".into()),
            &["PUT http://x/ (host not in allowedHosts)".into()],
        );
        assert_eq!(
            e,
            DestinationError::Denied(
                "gave up (the sandbox refused HTTP request PUT http://x/ (host not in allowedHosts))".into()
            )
        );
    }
}
