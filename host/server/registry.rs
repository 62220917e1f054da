//! RegistryService: install, list, inspect, enable, disable and remove
//! plugins. Thin over `plugins::PluginRegistry`.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::{convert, Shared};
use crate::api::v1 as pb;
use crate::catalog::PluginRecord;
use crate::catalog::{PluginKind, PluginRuntime};
use crate::plugins::registry::RegistryError;
use crate::plugins::registry::MAX_PLUGIN_BYTES;

/// How long an install stream may stay silent before it is dropped.
const INSTALL_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

pub struct RegistryApi {
    shared: Arc<Shared>,
}

impl RegistryApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        RegistryApi { shared }
    }

    /// Runs a registry call off the async threads (it compiles, reads files).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::plugins::PluginRegistry) -> Result<T, RegistryError> + Send + 'static,
    ) -> Result<T, Status> {
        let jobs = self.shared.jobs.clone();
        tokio::task::spawn_blocking(move || f(jobs.plugins()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| convert::status(e.into()))
    }
}

pub fn plugin(r: &PluginRecord) -> pb::Plugin {
    pb::Plugin {
        name: r.name.clone(),
        version: r.version.clone(),
        kind: match r.kind {
            PluginKind::Codec => pb::PluginKind::Codec,
            PluginKind::Destination => pb::PluginKind::Destination,
            PluginKind::Hook => pb::PluginKind::Hook,
        } as i32,
        runtime: match r.runtime {
            PluginRuntime::Wasm => pb::PluginRuntime::Wasm,
            PluginRuntime::Native => pb::PluginRuntime::Native,
        } as i32,
        api_version: r.api_version.clone(),
        sha256: r.sha256.clone(),
        enabled: r.enabled,
        bundled: r.bundled,
        description: r.description.clone(),
        installed_at: Some(convert::timestamp_ms(r.installed_at)),
        codec_id: r.codec_id.clone(),
    }
}

#[tonic::async_trait]
impl pb::registry_service_server::RegistryService for RegistryApi {
    async fn install_plugin(
        &self,
        req: Request<Streaming<pb::InstallPluginChunk>>,
    ) -> Result<Response<pb::Plugin>, Status> {
        let mut stream = req.into_inner();
        let mut bytes = Vec::new();
        let mut native = false;
        let mut declared_size = 0u64;
        let mut declared_sha: Option<String> = None;
        let mut file_name = String::new();
        let mut first = true;
        loop {
            let next = tokio::time::timeout(INSTALL_IDLE, stream.next()).await.map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the plugin upload stalled (nothing received for {}s); nothing was installed",
                    INSTALL_IDLE.as_secs()
                ))
            })?;
            let Some(chunk) = next else { break };
            let chunk = chunk?;
            if first {
                native = chunk.native;
                declared_size = chunk.size;
                file_name = chunk.file_name.clone();
                first = false;
                if declared_size > MAX_PLUGIN_BYTES as u64 {
                    return Err(Status::invalid_argument(format!(
                        "the plugin file is {declared_size} bytes, more than the {MAX_PLUGIN_BYTES} accepted"
                    )));
                }
            }
            if !chunk.sha256.is_empty() {
                declared_sha = Some(chunk.sha256);
            }
            if bytes.len() + chunk.data.len() > MAX_PLUGIN_BYTES {
                return Err(Status::invalid_argument(format!(
                    "the plugin file is larger than the {MAX_PLUGIN_BYTES} bytes accepted"
                )));
            }
            bytes.extend_from_slice(&chunk.data);
        }
        if declared_size != 0 && declared_size != bytes.len() as u64 {
            return Err(Status::invalid_argument(format!(
                "plugin file {file_name:?}: the upload ended after {} of {declared_size} bytes; nothing was installed",
                bytes.len()
            )));
        }
        let rec = self
            .blocking(move |r| r.install(&bytes, native, declared_sha.as_deref()))
            .await?;
        Ok(Response::new(plugin(&rec)))
    }

    async fn list_plugins(
        &self,
        _req: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        let rows = self.blocking(|r| r.list()).await?;
        Ok(Response::new(pb::ListPluginsResponse {
            plugins: rows.iter().map(plugin).collect(),
        }))
    }

    async fn get_plugin(&self, req: Request<pb::GetPluginRequest>) -> Result<Response<pb::Plugin>, Status> {
        let name = req.into_inner().name;
        let rec = self.blocking(move |r| r.get(&name)).await?;
        Ok(Response::new(plugin(&rec)))
    }

    async fn enable_plugin(&self, req: Request<pb::EnablePluginRequest>) -> Result<Response<pb::Plugin>, Status> {
        let name = req.into_inner().name;
        let rec = self.blocking(move |r| r.set_enabled(&name, true)).await?;
        Ok(Response::new(plugin(&rec)))
    }

    async fn disable_plugin(&self, req: Request<pb::DisablePluginRequest>) -> Result<Response<pb::Plugin>, Status> {
        let name = req.into_inner().name;
        let rec = self.blocking(move |r| r.set_enabled(&name, false)).await?;
        Ok(Response::new(plugin(&rec)))
    }

    async fn remove_plugin(
        &self,
        req: Request<pb::RemovePluginRequest>,
    ) -> Result<Response<pb::RemovePluginResponse>, Status> {
        let req = req.into_inner();
        let rec = self.blocking(move |r| r.remove(&req.name, req.force)).await?;
        Ok(Response::new(pb::RemovePluginResponse {
            plugin: Some(plugin(&rec)),
        }))
    }
}
