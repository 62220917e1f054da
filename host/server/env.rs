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
        let codec = |name: &str| pb::Codec {
            name: name.into(),
            can_compress: true,
            can_decompress: true,
            provider: "builtin".into(),
        };
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
            codecs: vec![codec("none"), codec("xpress"), codec("lzx")],
            plugin_api_versions: Vec::new(),
            worker_threads: rayon::current_num_threads() as u32,
        }))
    }
}
