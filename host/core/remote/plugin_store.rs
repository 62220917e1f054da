//! The object store of a destination plugin: the registry's wasm runtime
//! for the plugin ([`WasmDestination`]), seen through [`ObjectStore`].

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::retry::{RetryPolicy, Retrying};
use super::{ObjectInfo, ObjectStore};
use crate::error::CoreError;
use crate::plugins::{PluginRegistry, WasmDestination};

struct PluginStore(WasmDestination);

fn info(i: crate::plugins::ObjectInfo) -> ObjectInfo {
    ObjectInfo {
        key: i.key,
        size: i.size,
        etag: i.etag,
    }
}

impl ObjectStore for PluginStore {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn begin_upload(&self, key: &str, size_hint: Option<u64>) -> Result<String, CoreError> {
        Ok(self.0.begin_upload(key, size_hint)?)
    }
    fn upload_part(&self, token: &str, part: u32, data: &[u8]) -> Result<String, CoreError> {
        Ok(self.0.upload_part(token, part, data)?)
    }
    fn finish_upload(&self, token: &str, receipts: &[String]) -> Result<ObjectInfo, CoreError> {
        Ok(info(self.0.finish_upload(token, receipts)?))
    }
    fn abort_upload(&self, token: &str) -> Result<(), CoreError> {
        Ok(self.0.abort_upload(token)?)
    }
    fn read(&self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>, CoreError> {
        Ok(self.0.read(key, offset, len)?)
    }
    fn stat(&self, key: &str) -> Result<Option<ObjectInfo>, CoreError> {
        Ok(self.0.stat(key)?.map(info))
    }
    fn list(&self, prefix: &str, cursor: Option<&str>) -> Result<(Vec<ObjectInfo>, Option<String>), CoreError> {
        let (objects, next) = self.0.list(prefix, cursor)?;
        Ok((objects.into_iter().map(info).collect(), next))
    }
    fn delete(&self, key: &str) -> Result<(), CoreError> {
        Ok(self.0.delete(key)?)
    }
}

/// The admin's retry policy for destination plugin `name`.
fn policy(registry: &PluginRegistry, name: &str) -> RetryPolicy {
    RetryPolicy {
        attempts: 1 + registry.store_retries(name),
        ..RetryPolicy::default()
    }
}

/// The store of destination plugin `name`, retrying its transient failures.
pub fn open(registry: &PluginRegistry, name: &str) -> Result<Arc<dyn ObjectStore>, CoreError> {
    let store = Arc::new(PluginStore(registry.destination(name)?));
    Ok(Arc::new(Retrying::new(store, policy(registry, name), None)))
}

/// The store of destination plugin `name`, whose calls (and retries) stop
/// as soon as `cancel` is set (a cancelled backup does not wait for its
/// upload).
pub fn open_cancellable(
    registry: &PluginRegistry,
    name: &str,
    cancel: Arc<AtomicBool>,
) -> Result<Arc<dyn ObjectStore>, CoreError> {
    let store = Arc::new(PluginStore(registry.destination(name)?.with_cancel(cancel.clone())));
    Ok(Arc::new(Retrying::new(store, policy(registry, name), Some(cancel))))
}
