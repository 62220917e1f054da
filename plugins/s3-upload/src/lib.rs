//! WimGuard destination plugin `s3-upload`: stores archives as objects of
//! an S3-compatible bucket, through wasi:http (the host filters hosts by
//! the plugin's allow-list). Requests are signed with AWS Signature V4
//! (rusty-s3, presigned), every upload carries a Content-MD5, uploads never
//! replace an object (`If-None-Match: *`), and throttling or failing
//! servers are retried with full-jitter exponential backoff.
//!
//! Settings:
//! * `endpoint` (required): `http://` or `https://` address of the service;
//! * `bucket` (required);
//! * `region` (default `us-east-1`);
//! * `prefix` (default empty): objects are `PREFIX/KEY`;
//! * `pathStyle` (`true`/`false`): `https://endpoint/BUCKET/KEY` or
//!   `https://BUCKET.endpoint/KEY`; default: path style when the endpoint is
//!   an IP address, `localhost` or has an explicit port, else virtual-host;
//! * `requestTimeoutSeconds` (default 60): connect, first-byte and
//!   between-bytes timeout of one request, plus 1 s per 256 KiB it uploads;
//! * `maxRetrySeconds` (default 120): how long one operation may retry (at
//!   most half of the call time limit the host announces);
//! * `listPageSize` (default 1000): keys per listing request;
//! * secrets `accessKeyId`, `secretAccessKey`, optional `sessionToken`.
//!
//! The mapping of the destination contract to S3 requests is in [`s3`];
//! upload tokens in [`token`]. Build: `plugins/build-wasm.sh` (or `cargo
//! build --release --target wasm32-wasip2`).

pub mod s3;
pub mod settings;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod wasi;

use std::time::Duration;

use wimguard_sdk::{
    DestinationError, DestinationPlugin, HostInfo, InitError, ListPage, ObjectInfo, Plugin, PluginInfo,
};

use s3::Client;
use settings::Settings;

/// The key of `host-info.extras` that says how long one call may take, in
/// milliseconds (WimGuard hosts send it to destination plugins).
pub const CALL_TIMEOUT_KEY: &str = "call-timeout-ms";

#[cfg(target_arch = "wasm32")]
type Env = wasi::WasiTransport;
#[cfg(not(target_arch = "wasm32"))]
type Env = native::NoNetwork;

/// The plugin's state: its validated settings and the S3 client.
pub struct S3Upload {
    client: Client<Env>,
}

impl Plugin for S3Upload {
    fn info() -> PluginInfo {
        PluginInfo::new("s3-upload", env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_DESCRIPTION"))
    }

    fn init(host: &HostInfo) -> Result<Self, InitError> {
        let settings = Settings::from_lookup(wimguard_sdk::config::get)?;
        for e in wimguard_sdk::config::list() {
            if !e.secret && matches!(e.key.as_str(), "secretAccessKey" | "sessionToken") {
                wimguard_sdk::log::warn(&format!(
                    "s3-upload: `{}` is a plain setting; bind it to an environment variable under `secrets:` so that \
                     it stays out of config files",
                    e.key
                ));
            }
        }
        let call_limit = host
            .extras
            .iter()
            .find(|(k, _)| k == CALL_TIMEOUT_KEY)
            .and_then(|(_, v)| v.parse::<u64>().ok())
            .map(Duration::from_millis);
        wimguard_sdk::log::debug(&format!(
            "s3-upload: bucket {} at {} ({} style), prefix {:?}",
            settings.bucket_name,
            settings.endpoint,
            if settings.path_style { "path" } else { "virtual-host" },
            settings.prefix
        ));
        Ok(S3Upload {
            client: Client::new(settings, Env::default(), call_limit),
        })
    }
}

impl DestinationPlugin for S3Upload {
    fn begin_upload(&mut self, key: &str, size_hint: Option<u64>) -> Result<String, DestinationError> {
        self.client.begin_upload(key, size_hint)
    }
    fn upload_part(&mut self, token: &str, part_number: u32, data: Vec<u8>) -> Result<String, DestinationError> {
        self.client.upload_part(token, part_number, &data)
    }
    fn finish_upload(&mut self, token: &str, receipts: Vec<String>) -> Result<ObjectInfo, DestinationError> {
        self.client.finish_upload(token, &receipts)
    }
    fn abort_upload(&mut self, token: &str) -> Result<(), DestinationError> {
        self.client.abort_upload(token)
    }
    fn read(&mut self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>, DestinationError> {
        self.client.read(key, offset, len)
    }
    fn stat(&mut self, key: &str) -> Result<Option<ObjectInfo>, DestinationError> {
        self.client.stat(key)
    }
    fn list(&mut self, prefix: &str, cursor: Option<String>) -> Result<ListPage, DestinationError> {
        self.client.list(prefix, cursor.as_deref())
    }
    fn delete(&mut self, key: &str) -> Result<(), DestinationError> {
        self.client.delete(key)
    }
}

wimguard_sdk::export_destination!(S3Upload);

#[cfg(target_arch = "wasm32")]
impl Default for wasi::WasiTransport {
    fn default() -> Self {
        wasi::WasiTransport
    }
}

/// The native build (unit tests) has no network.
#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::time::Duration;

    use crate::s3::{Request, Response, Transport, TransportError};

    #[derive(Default)]
    pub struct NoNetwork;

    impl Transport for NoNetwork {
        fn send(&mut self, _: &Request<'_>) -> Result<Response, TransportError> {
            Err(TransportError::Final(
                "wasi:http is only available in the wasm32 component".into(),
            ))
        }
        fn sleep(&mut self, d: Duration) {
            std::thread::sleep(d)
        }
        fn now(&mut self) -> Duration {
            use std::sync::OnceLock;
            static START: OnceLock<std::time::Instant> = OnceLock::new();
            START.get_or_init(std::time::Instant::now).elapsed()
        }
        fn random(&mut self) -> u64 {
            0
        }
        fn warn(&mut self, message: &str) {
            eprintln!("warn: {message}")
        }
    }
}
