//! EnvService: facts about this server.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{convert, Shared};
use crate::api::v1 as pb;

pub struct EnvApi {
    shared: Arc<Shared>,
}

impl EnvApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        EnvApi { shared }
    }
}

#[tonic::async_trait]
impl pb::env_service_server::EnvService for EnvApi {
    async fn get_environment(
        &self,
        _req: Request<pb::GetEnvironmentRequest>,
    ) -> Result<Response<pb::Environment>, Status> {
        let s = &self.shared;
        let codec = |name: &str, provider: String| pb::Codec {
            name: name.into(),
            can_compress: true,
            can_decompress: true,
            provider,
        };
        let mut codecs = vec![codec("none", "builtin".into())];
        // Standard codecs: built in (reading never depends on plugins);
        // writing goes through the bundled plugin of the same name.
        let plugins = s.jobs.plugins().list().map_err(|e| convert::status(e.into()))?;
        for std_codec in ["xpress", "lzx"] {
            let p = plugins
                .iter()
                .find(|p| p.kind == crate::catalog::PluginKind::Codec && p.codec_id == std_codec);
            let mut c = codec(
                std_codec,
                format!("builtin + plugin {}", p.map_or("-", |p| p.name.as_str())),
            );
            c.can_compress = p.is_some_and(|p| p.enabled);
            codecs.push(c);
        }
        for p in plugins
            .iter()
            .filter(|p| p.kind == crate::catalog::PluginKind::Codec && p.codec_id != "xpress" && p.codec_id != "lzx")
        {
            let mut c = codec(&p.codec_id, format!("plugin {} ({})", p.name, p.runtime));
            c.can_compress = p.enabled;
            c.can_decompress = p.enabled;
            codecs.push(c);
        }
        Ok(Response::new(pb::Environment {
            version: env!("CARGO_PKG_VERSION").into(),
            build: format!(
                "{} ({})",
                option_env!("WIMGUARD_GIT_COMMIT").unwrap_or("unknown commit"),
                if cfg!(debug_assertions) { "debug" } else { "release" }
            ),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            home: s.home.display().to_string(),
            config_path: s.config_path.display().to_string(),
            database_path: s.database_path.display().to_string(),
            listen_address: s.listen.to_string(),
            pid: std::process::id(),
            started_at: Some(convert::timestamp_ms(s.started_at_ms)),
            codecs,
            plugin_api_versions: vec![
                format!(
                    "wimguard:plugin@{}.{}.0 (wasm)",
                    crate::plugins::registry::API_MAJOR,
                    crate::plugins::registry::API_MINOR
                ),
                "native ABI 1 (trusted codecs)".into(),
            ],
            worker_threads: rayon::current_num_threads() as u32,
        }))
    }
}
