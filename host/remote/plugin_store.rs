//! The object store of a destination plugin: the registry's wasm runtime
//! for the plugin, seen through [`ObjectStore`].

use std::sync::Arc;

use super::ObjectStore;
use crate::jobs::CoreError;
use crate::plugins::PluginRegistry;

/// The store of destination plugin `name`.
pub fn open(registry: &PluginRegistry, name: &str) -> Result<Arc<dyn ObjectStore>, CoreError> {
    let rec = registry.get(name)?;
    Err(CoreError::FailedPrecondition(format!(
        "plugin `{}` is a {} plugin, and this build cannot run destination plugins yet",
        rec.name, rec.kind
    )))
}
