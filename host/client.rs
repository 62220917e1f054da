//! The client library every `wimguard …` command except `server` and
//! `archive` uses to talk to the daemon.
//!
//! - [`ClientSettings::resolve`] finds the server the way the CLI documents
//!   it: `--server`/`--token` flags, else `service.client.address` and
//!   `appSecret` from `$HOME/config.yaml` (written by `wimguard server`).
//! - [`Client`] connects lazily, on the first call, with a connect timeout,
//!   and checks `grpc.health.v1.Health/Check("")` is SERVING before the first
//!   real call.
//! - Every call carries `authorization: Bearer <appSecret>`; unary calls get
//!   the configured per-call timeout, streams (backup, restore, verify) none.
//! - Failures come back as [`ClientError`], whose text tells the user what
//!   happened and what to do, keeping the server's own message.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::OnceCell;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::api::v1 as pb;
use crate::api::v1::archive_service_client::ArchiveServiceClient;
use crate::api::v1::backup_service_client::BackupServiceClient;
use crate::api::v1::env_service_client::EnvServiceClient;
use crate::api::v1::registry_service_client::RegistryServiceClient;
use crate::api::v1::restore_service_client::RestoreServiceClient;
use crate::api::v1::schedule_service_client::ScheduleServiceClient;
use crate::api::v1::snapshot_service_client::SnapshotServiceClient;
use crate::api::v1::statistics_service_client::StatisticsServiceClient;
use crate::config::{self, Config};

/// How long establishing the TCP/HTTP2 connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to reach the server.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    /// `http://host:port`.
    pub address: String,
    /// The bearer token (`appSecret`); empty sends no `authorization` header.
    pub token: String,
    /// Deadline of each unary call.
    pub call_timeout: Duration,
    /// Deadline of establishing the connection.
    pub connect_timeout: Duration,
    /// The config file the settings came from (named in error messages).
    pub config_path: PathBuf,
    /// How to verify an `https://` server (`service.client.tls`).
    pub tls: Option<crate::config::ClientTls>,
}

impl ClientSettings {
    /// Resolves the settings: `home` (`--home`, else `WIMGUARD_HOME`, else the
    /// platform data dir) names the config; `server` and `token` override it.
    /// A missing config is not an error: the default address is tried and the
    /// server will ask for a token.
    pub fn resolve(home: Option<&Path>, server: Option<&str>, token: Option<&str>) -> Result<Self, ClientError> {
        let home = config::resolve_home(home).map_err(|e| ClientError::Config(e.to_string()))?;
        let config = match Config::load(&home) {
            Ok(c) => Some(c),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(ClientError::Config(e.to_string())),
        };
        Self::from_config(config.as_ref(), Config::path(&home), server, token)
    }

    /// The settings from an already loaded config (None: no config file).
    pub fn from_config(
        config: Option<&Config>,
        config_path: PathBuf,
        server: Option<&str>,
        token: Option<&str>,
    ) -> Result<Self, ClientError> {
        let address = match server {
            Some(s) => normalize_address(s)?,
            None => match config {
                Some(c) if !c.service.client.address.trim().is_empty() => normalize_address(&c.service.client.address)?,
                Some(c) => address_from_listen(&c.service.server.listen, c.service.server.port),
                None => address_from_listen("127.0.0.1", config::DEFAULT_PORT),
            },
        };
        let token = match token {
            Some(t) => t.trim().to_string(),
            None => config.map(|c| c.app_secret.trim().to_string()).unwrap_or_default(),
        };
        if !token.is_empty() && MetadataValue::<Ascii>::try_from(format!("Bearer {token}")).is_err() {
            return Err(ClientError::Config(
                "the token contains characters that cannot be sent in a header (check --token or appSecret)".into(),
            ));
        }
        let call_timeout = Duration::from_secs(config.map(|c| c.service.client.timeout_seconds).unwrap_or(30).max(1));
        Ok(ClientSettings {
            address,
            token,
            call_timeout,
            connect_timeout: CONNECT_TIMEOUT,
            config_path,
            tls: config.and_then(|c| c.service.client.tls.clone()),
        })
    }
}

/// `host:port` → `http://host:port`; keeps an explicit `http://` or
/// `https://` (TLS, verified as `service.client.tls` says).
pub fn normalize_address(address: &str) -> Result<String, ClientError> {
    let a = address.trim();
    if a.is_empty() {
        return Err(ClientError::Config(
            "the server address is empty (pass --server HOST:PORT)".into(),
        ));
    }
    let full = if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    };
    let full = match full.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{}", rest.trim_end_matches('/')),
        None => full,
    };
    if !full.starts_with("http://") && !full.starts_with("https://") {
        return Err(ClientError::Config(format!(
            "unsupported server address {address:?} (use HOST:PORT, http://HOST:PORT or https://HOST:PORT)"
        )));
    }
    match full.parse::<tonic::codegen::http::Uri>() {
        Ok(uri) if uri.host().is_some() => Ok(full),
        _ => Err(ClientError::Config(format!(
            "invalid server address {address:?} (expected HOST:PORT or http://HOST:PORT)"
        ))),
    }
}

/// The address a client uses for a server listening on `listen:port`
/// (wildcards become loopback).
fn address_from_listen(listen: &str, port: u16) -> String {
    let host = match listen.trim() {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" | "[::]" => "[::1]".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    };
    format!("http://{host}:{port}")
}

/// Why a call failed, with a message meant for the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The flags or the config cannot be used.
    #[error("{0}")]
    Config(String),
    /// Nothing answers at the address.
    #[error("cannot reach wimguard server at {address} — start it with `wimguard server`")]
    Unreachable { address: String },
    /// Something answers at the address, but not as a wimguard server.
    #[error("something answers at {address} but not as a wimguard server ({detail}){hint}")]
    NotWimguard {
        address: String,
        detail: String,
        hint: &'static str,
    },
    /// Something answers, but the TLS handshake failed: the server's
    /// certificate was refused, or one side does not speak TLS.
    #[error("TLS with the wimguard server at {address} failed: {detail} (check service.client.tls in {config})")]
    Tls {
        address: String,
        detail: String,
        config: String,
    },
    /// The server answers but its health is not SERVING (e.g. shutting down).
    #[error("wimguard server at {address} is {status}, not SERVING — it may be shutting down; wait, or restart it with `wimguard server`")]
    NotServing { address: String, status: String },
    /// The server (or the transport) answered a call with an error status.
    #[error("{message}")]
    Rpc { code: Code, message: String },
}

impl ClientError {
    /// The gRPC code, for errors that came back from a call.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What error messages need to know about the connection.
#[derive(Debug, Clone)]
pub struct ErrorContext {
    pub address: String,
    pub config_path: PathBuf,
}

impl ErrorContext {
    /// Turns a status into a [`ClientError`] whose message explains it.
    pub fn error(&self, status: &Status) -> ClientError {
        ClientError::Rpc {
            code: status.code(),
            message: describe_status(status.code(), status.message(), self),
        }
    }
}

/// A readable message for a failed call; the server's own message is kept.
pub fn describe_status(code: Code, server_message: &str, ctx: &ErrorContext) -> String {
    let config = ctx.config_path.display();
    let summary = match code {
        Code::Unauthenticated => format!("the server refused the token (check appSecret in {config} or --token)"),
        Code::NotFound => "not found".into(),
        Code::DataLoss => "the archive is damaged".into(),
        Code::PermissionDenied => {
            "permission denied (the server process, or its credentials for a remote store, must be allowed to read \
             or write it)"
                .into()
        }
        Code::Aborted | Code::AlreadyExists => "conflict".into(),
        Code::FailedPrecondition => "refused".into(),
        // tonic's own deadline, not the server's answer: the call may
        // well complete on the server.
        Code::Cancelled if server_message.trim() == "Timeout expired" => {
            return format!(
                "no answer from the server within the client's time limit (service.client.timeoutSeconds in \
                 {config}); the server may still complete the request: check its outcome before trying again"
            )
        }
        Code::Cancelled => "cancelled".into(),
        Code::InvalidArgument | Code::OutOfRange => "invalid request".into(),
        // With a message, the server answered: something it needs (an
        // object store) is what is unavailable.
        Code::Unavailable if !server_message.trim().is_empty() => "unavailable, try again later".into(),
        Code::Unavailable => format!("the wimguard server at {} is unavailable", ctx.address),
        Code::DeadlineExceeded => {
            format!("the server did not answer in time (raise service.client.timeoutSeconds in {config})")
        }
        Code::Unimplemented => "the server does not support this call (is it an older wimguard version?)".into(),
        Code::ResourceExhausted => "the server is out of resources".into(),
        Code::Ok | Code::Unknown | Code::Internal => "server error".into(),
    };
    let detail = server_message.trim();
    if detail.is_empty() {
        summary
    } else {
        format!("{summary}: {detail}")
    }
}

/// Puts `authorization: Bearer <token>` on every request.
#[derive(Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    pub fn new(token: &str) -> Self {
        BearerToken(if token.is_empty() {
            None
        } else {
            format!("Bearer {token}").try_into().ok()
        })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A channel whose requests carry the bearer token.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// A server stream whose errors are already explained.
pub struct EventStream<T> {
    inner: Streaming<T>,
    ctx: ErrorContext,
}

impl<T> EventStream<T> {
    /// The next event; `None` when the server closed the stream.
    pub async fn next(&mut self) -> Result<Option<T>, ClientError> {
        self.inner.message().await.map_err(|s| self.ctx.error(&s))
    }
}

/// A lazily connected, health-checked, authenticated connection to the server.
pub struct Client {
    settings: ClientSettings,
    ctx: ErrorContext,
    channel: OnceCell<Channel>,
    checked: OnceCell<()>,
}

impl Client {
    /// Does not connect yet: the first call does.
    pub fn new(settings: ClientSettings) -> Self {
        let ctx = ErrorContext {
            address: settings.address.clone(),
            config_path: settings.config_path.clone(),
        };
        Client {
            settings,
            ctx,
            channel: OnceCell::new(),
            checked: OnceCell::new(),
        }
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Connects once; failures mean nothing usable answers at the address.
    async fn channel(&self) -> Result<Channel, ClientError> {
        self.channel
            .get_or_try_init(|| async {
                let unreachable = || ClientError::Unreachable {
                    address: self.settings.address.clone(),
                };
                // TLS is ours (a pinning verifier tonic cannot express): the
                // channel itself sees a plain http:// origin.
                let tls = self.settings.address.strip_prefix("https://");
                let origin = match tls {
                    Some(rest) => format!("http://{rest}"),
                    None => self.settings.address.clone(),
                };
                let endpoint = Endpoint::from_shared(origin)
                    .map_err(|e| ClientError::Config(format!("invalid server address {}: {e}", self.settings.address)))?
                    .connect_timeout(self.settings.connect_timeout)
                    .tcp_nodelay(true);
                let connecting = async {
                    match tls {
                        None => endpoint.connect().await,
                        Some(_) => {
                            let settings = self.settings.tls.clone().unwrap_or_default();
                            let dir = self.settings.config_path.parent().unwrap_or(Path::new("."));
                            let config = crate::tls::client_config(&settings, dir).map_err(ClientError::Config)?;
                            let connector = crate::tls::TlsConnector::new(config, settings.server_name.clone());
                            endpoint.connect_with_connector(connector).await
                        }
                    }
                    .map_err(|e| self.transport_error(e))
                };
                match tokio::time::timeout(self.settings.connect_timeout, connecting).await {
                    Ok(Ok(channel)) => Ok(channel),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(unreachable()),
                }
            })
            .await
            .cloned()
    }

    /// A connection failure in words: a TLS refusal says why, anything else
    /// means nothing usable answers.
    fn transport_error(&self, e: impl std::error::Error + 'static) -> ClientError {
        let tls_error = |detail: String| ClientError::Tls {
            address: self.settings.address.clone(),
            detail,
            config: self.settings.config_path.display().to_string(),
        };
        let explain = |e: &rustls::Error| match e {
            rustls::Error::General(m) => m.clone(),
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
                "the server's certificate is not signed by a trusted CA (a self-signed server? set caFile to its \
                 certificate or certSha256 to its fingerprint)"
                    .into()
            }
            other => other.to_string(),
        };
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if let Some(tls) = err.downcast_ref::<rustls::Error>() {
                return tls_error(explain(tls));
            }
            if let Some(io) = err.downcast_ref::<io::Error>() {
                if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                    return tls_error(explain(tls));
                }
                if io.kind() == io::ErrorKind::InvalidData && self.settings.address.starts_with("https://") {
                    return tls_error(format!("{io} (does the server serve TLS? use http:// if it does not)"));
                }
            }
            source = err.source();
        }
        ClientError::Unreachable {
            address: self.settings.address.clone(),
        }
    }

    fn authed(&self, channel: Channel) -> AuthChannel {
        InterceptedService::new(channel, BearerToken::new(&self.settings.token))
    }

    /// The server's health (`grpc.health.v1`, service ""), without requiring SERVING.
    pub async fn health(&self) -> Result<ServingStatus, ClientError> {
        let channel = self.channel().await?;
        let mut health = HealthClient::new(self.authed(channel));
        let request = self.unary_request(HealthCheckRequest { service: String::new() });
        match self.unary(health.check(request)).await {
            Ok(r) => Ok(r.status()),
            // Something answers TCP but not gRPC: it is not our server, or
            // it speaks TLS to a plain-HTTP client.
            // (Health never fails with INTERNAL; a broken HTTP/2 exchange does.)
            Err(ClientError::Rpc {
                code: Code::Unavailable | Code::Unknown | Code::Internal,
                message,
            }) => Err(ClientError::NotWimguard {
                address: self.settings.address.clone(),
                detail: message,
                hint: if self.settings.address.starts_with("http://") {
                    "; if the server serves TLS, use https:// (service.client.address or --server)"
                } else {
                    ""
                },
            }),
            Err(e) => Err(e),
        }
    }

    /// Connects (once) and checks (once) that the server is SERVING.
    async fn ready(&self) -> Result<AuthChannel, ClientError> {
        self.checked
            .get_or_try_init(|| async {
                match self.health().await? {
                    ServingStatus::Serving => Ok(()),
                    other => Err(ClientError::NotServing {
                        address: self.settings.address.clone(),
                        status: other.as_str_name().to_string(),
                    }),
                }
            })
            .await?;
        Ok(self.authed(self.channel().await?))
    }

    /// A request for a unary call, with the per-call deadline sent to the server.
    fn unary_request<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        r.set_timeout(self.settings.call_timeout);
        r
    }

    /// Awaits a unary call under the per-call deadline and explains failures.
    async fn unary<R>(&self, call: impl Future<Output = Result<Response<R>, Status>>) -> Result<R, ClientError> {
        // A little slack so the server's own DEADLINE_EXCEEDED (with its message) wins.
        let deadline = self.settings.call_timeout + Duration::from_millis(500);
        match tokio::time::timeout(deadline, call).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(self.ctx.error(&s)),
            Err(_) => Err(self.ctx.error(&Status::deadline_exceeded(format!(
                "no answer within {} s",
                self.settings.call_timeout.as_secs()
            )))),
        }
    }

    /// Awaits a unary call that may take long (no deadline) and explains failures.
    async fn stream_unary<R>(&self, call: impl Future<Output = Result<Response<R>, Status>>) -> Result<R, ClientError> {
        call.await.map(|r| r.into_inner()).map_err(|s| self.ctx.error(&s))
    }

    /// Awaits the start of a server stream (no deadline: the work may take hours).
    async fn stream<T>(
        &self,
        call: impl Future<Output = Result<Response<Streaming<T>>, Status>>,
    ) -> Result<EventStream<T>, ClientError> {
        match call.await {
            Ok(r) => Ok(EventStream {
                inner: r.into_inner(),
                ctx: self.ctx.clone(),
            }),
            Err(s) => Err(self.ctx.error(&s)),
        }
    }

    // ---- BackupService ----

    /// Starts a backup; the first event names it, the last carries its final state.
    pub async fn create_backup(
        &self,
        request: pb::CreateBackupRequest,
    ) -> Result<EventStream<pb::BackupEvent>, ClientError> {
        let mut c = BackupServiceClient::new(self.ready().await?);
        self.stream(c.create_backup(Request::new(request))).await
    }

    /// Attaches to a running (or finished) backup.
    pub async fn watch_backup(&self, uuid: &str) -> Result<EventStream<pb::BackupEvent>, ClientError> {
        let mut c = BackupServiceClient::new(self.ready().await?);
        self.stream(c.watch_backup(Request::new(pb::WatchBackupRequest { uuid: uuid.into() })))
            .await
    }

    pub async fn cancel_backup(&self, uuid: &str) -> Result<pb::Backup, ClientError> {
        let mut c = BackupServiceClient::new(self.ready().await?);
        self.unary(c.cancel_backup(self.unary_request(pb::CancelBackupRequest { uuid: uuid.into() })))
            .await
    }

    pub async fn list_backups(&self, request: pb::ListBackupsRequest) -> Result<pb::ListBackupsResponse, ClientError> {
        let mut c = BackupServiceClient::new(self.ready().await?);
        self.unary(c.list_backups(self.unary_request(request))).await
    }

    pub async fn get_backup(&self, uuid: &str) -> Result<pb::Backup, ClientError> {
        let mut c = BackupServiceClient::new(self.ready().await?);
        self.unary(c.get_backup(self.unary_request(pb::GetBackupRequest { uuid: uuid.into() })))
            .await
    }

    pub async fn delete_backup(
        &self,
        uuid: &str,
        forget_missing: bool,
    ) -> Result<pb::DeleteBackupResponse, ClientError> {
        let mut c = BackupServiceClient::new(self.ready().await?);
        self.unary(c.delete_backup(self.unary_request(pb::DeleteBackupRequest {
            uuid: uuid.into(),
            forget_missing,
        })))
        .await
    }

    // ---- RestoreService ----

    pub async fn restore(&self, request: pb::RestoreRequest) -> Result<EventStream<pb::RestoreEvent>, ClientError> {
        let mut c = RestoreServiceClient::new(self.ready().await?);
        self.stream(c.restore(Request::new(request))).await
    }

    // ---- SnapshotService ----

    pub async fn list_snapshots(
        &self,
        request: pb::ListSnapshotsRequest,
    ) -> Result<pb::ListSnapshotsResponse, ClientError> {
        let mut c = SnapshotServiceClient::new(self.ready().await?);
        self.unary(c.list_snapshots(self.unary_request(request))).await
    }

    pub async fn get_snapshot(&self, uuid: &str) -> Result<pb::Snapshot, ClientError> {
        let mut c = SnapshotServiceClient::new(self.ready().await?);
        self.unary(c.get_snapshot(self.unary_request(pb::GetSnapshotRequest {
            backup_uuid: uuid.into(),
        })))
        .await
    }

    pub async fn browse_snapshot(
        &self,
        request: pb::BrowseSnapshotRequest,
    ) -> Result<pb::BrowseSnapshotResponse, ClientError> {
        let mut c = SnapshotServiceClient::new(self.ready().await?);
        self.unary(c.browse_snapshot(self.unary_request(request))).await
    }

    pub async fn diff_snapshots(&self, base: &str, target: &str) -> Result<pb::DiffSnapshotsResponse, ClientError> {
        let mut c = SnapshotServiceClient::new(self.ready().await?);
        let request = pb::DiffSnapshotsRequest {
            base_uuid: base.into(),
            target_uuid: target.into(),
        };
        self.unary(c.diff_snapshots(self.unary_request(request))).await
    }

    /// Consolidates remote archive `name` of destination plugin `plugin`.
    pub async fn consolidate_archive(
        &self,
        name: &str,
        plugin: &str,
    ) -> Result<EventStream<pb::ConsolidateEvent>, ClientError> {
        let mut c = ArchiveServiceClient::new(self.ready().await?);
        let request = pb::ConsolidateArchiveRequest {
            name: name.into(),
            plugin: plugin.into(),
        };
        self.stream(c.consolidate_archive(Request::new(request))).await
    }

    /// Checks a remote archive against its store (streams progress, then the result).
    pub async fn check_archive(
        &self,
        request: pb::CheckArchiveRequest,
    ) -> Result<EventStream<pb::CheckEvent>, ClientError> {
        let mut c = ArchiveServiceClient::new(self.ready().await?);
        self.stream(c.check_archive(Request::new(request))).await
    }

    /// Applies retention rules (or says what they would remove).
    pub async fn forget(&self, request: pb::ForgetRequest) -> Result<pb::ForgetResponse, ClientError> {
        let mut c = ArchiveServiceClient::new(self.ready().await?);
        // Removing many snapshots rewrites tables: no per-call deadline.
        self.stream_unary(c.forget(Request::new(request))).await
    }

    // ---- ScheduleService ----

    pub async fn create_schedule(&self, schedule: pb::Schedule) -> Result<pb::Schedule, ClientError> {
        let mut c = ScheduleServiceClient::new(self.ready().await?);
        let request = pb::CreateScheduleRequest {
            schedule: Some(schedule),
        };
        self.unary(c.create_schedule(self.unary_request(request))).await
    }

    pub async fn list_schedules(&self) -> Result<Vec<pb::Schedule>, ClientError> {
        let mut c = ScheduleServiceClient::new(self.ready().await?);
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let request = pb::ListSchedulesRequest {
                page: Some(pb::PageRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                }),
            };
            let r = self.unary(c.list_schedules(self.unary_request(request))).await?;
            all.extend(r.schedules);
            match r.page {
                Some(p) if !p.next_page_token.is_empty() => token = p.next_page_token,
                _ => return Ok(all),
            }
        }
    }

    pub async fn get_schedule(&self, uuid: &str) -> Result<pb::Schedule, ClientError> {
        let mut c = ScheduleServiceClient::new(self.ready().await?);
        self.unary(c.get_schedule(self.unary_request(pb::GetScheduleRequest { uuid: uuid.into() })))
            .await
    }

    pub async fn update_schedule(&self, schedule: pb::Schedule) -> Result<pb::Schedule, ClientError> {
        let mut c = ScheduleServiceClient::new(self.ready().await?);
        let request = pb::UpdateScheduleRequest {
            schedule: Some(schedule),
        };
        self.unary(c.update_schedule(self.unary_request(request))).await
    }

    pub async fn delete_schedule(&self, uuid: &str) -> Result<(), ClientError> {
        let mut c = ScheduleServiceClient::new(self.ready().await?);
        self.unary(c.delete_schedule(self.unary_request(pb::DeleteScheduleRequest { uuid: uuid.into() })))
            .await
            .map(|_| ())
    }

    pub async fn enable_schedule(&self, uuid: &str, enabled: bool) -> Result<pb::Schedule, ClientError> {
        let mut c = ScheduleServiceClient::new(self.ready().await?);
        let request = pb::EnableScheduleRequest {
            uuid: uuid.into(),
            enabled,
        };
        self.unary(c.enable_schedule(self.unary_request(request))).await
    }

    pub async fn run_schedule_now(&self, uuid: &str) -> Result<String, ClientError> {
        let mut c = ScheduleServiceClient::new(self.ready().await?);
        self.unary(c.run_now(self.unary_request(pb::RunNowRequest { uuid: uuid.into() })))
            .await
            .map(|r| r.backup_uuid)
    }

    /// Rebuilds the catalog from the archives of `plugins` and local `archives`.
    pub async fn rebuild_catalog(
        &self,
        plugins: Vec<String>,
        archives: Vec<String>,
    ) -> Result<EventStream<pb::RebuildEvent>, ClientError> {
        let mut c = ArchiveServiceClient::new(self.ready().await?);
        self.stream(c.rebuild_catalog(Request::new(pb::RebuildCatalogRequest { plugins, archives })))
            .await
    }

    /// Streams the changes between two snapshots in path order; the last
    /// event carries the counts.
    pub async fn diff_snapshots_stream(
        &self,
        base: &str,
        target: &str,
    ) -> Result<EventStream<pb::DiffEvent>, ClientError> {
        let mut c = SnapshotServiceClient::new(self.ready().await?);
        let request = pb::DiffSnapshotsRequest {
            base_uuid: base.into(),
            target_uuid: target.into(),
        };
        self.stream(c.diff_snapshots_stream(Request::new(request))).await
    }

    pub async fn verify_snapshot(&self, uuid: &str) -> Result<EventStream<pb::VerifyEvent>, ClientError> {
        let mut c = SnapshotServiceClient::new(self.ready().await?);
        self.stream(c.verify_snapshot(Request::new(pb::VerifySnapshotRequest {
            backup_uuid: uuid.into(),
        })))
        .await
    }

    pub async fn delete_snapshot(
        &self,
        uuid: &str,
        forget_missing: bool,
    ) -> Result<pb::DeleteSnapshotResponse, ClientError> {
        let mut c = SnapshotServiceClient::new(self.ready().await?);
        self.unary(c.delete_snapshot(self.unary_request(pb::DeleteSnapshotRequest {
            backup_uuid: uuid.into(),
            forget_missing,
        })))
        .await
    }

    // ---- EnvService, StatisticsService ----

    pub async fn get_environment(&self) -> Result<pb::Environment, ClientError> {
        let mut c = EnvServiceClient::new(self.ready().await?);
        self.unary(c.get_environment(self.unary_request(pb::GetEnvironmentRequest {})))
            .await
    }

    // ---- RegistryService ----

    /// Installs a plugin from its bytes, streamed in 1 MiB chunks with the
    /// size declared up front and the sha256 at the end (the server refuses
    /// an upload that does not match). Compiling and checking a component
    /// can take a while: no per-call deadline.
    pub async fn install_plugin(
        &self,
        file_name: &str,
        bytes: Vec<u8>,
        native: bool,
    ) -> Result<pb::Plugin, ClientError> {
        const CHUNK: usize = 1 << 20;
        let mut c = RegistryServiceClient::new(self.ready().await?);
        let sha256 = crate::plugins::sha256_hex(&bytes);
        let size = bytes.len() as u64;
        let count = bytes.len().div_ceil(CHUNK).max(1);
        let file_name = file_name.to_string();
        // Chunks are made as the stream is polled: one copy in flight.
        let chunks = tokio_stream::iter((0..count).map(move |i| {
            let data = bytes
                .get(i * CHUNK..bytes.len().min((i + 1) * CHUNK))
                .unwrap_or_default();
            pb::InstallPluginChunk {
                file_name: if i == 0 { file_name.clone() } else { String::new() },
                data: data.to_vec(),
                native: i == 0 && native,
                size: if i == 0 { size } else { 0 },
                sha256: if i + 1 == count { sha256.clone() } else { String::new() },
            }
        }));
        match c.install_plugin(Request::new(chunks)).await {
            Ok(r) => Ok(r.into_inner()),
            Err(s) => Err(self.ctx.error(&s)),
        }
    }

    pub async fn list_plugins(&self) -> Result<Vec<pb::Plugin>, ClientError> {
        let mut c = RegistryServiceClient::new(self.ready().await?);
        Ok(self
            .unary(c.list_plugins(self.unary_request(pb::ListPluginsRequest {})))
            .await?
            .plugins)
    }

    pub async fn get_plugin(&self, name: &str) -> Result<pb::Plugin, ClientError> {
        let mut c = RegistryServiceClient::new(self.ready().await?);
        self.unary(c.get_plugin(self.unary_request(pb::GetPluginRequest { name: name.into() })))
            .await
    }

    pub async fn set_plugin_enabled(&self, name: &str, enabled: bool) -> Result<pb::Plugin, ClientError> {
        let mut c = RegistryServiceClient::new(self.ready().await?);
        if enabled {
            self.unary(c.enable_plugin(self.unary_request(pb::EnablePluginRequest { name: name.into() })))
                .await
        } else {
            self.unary(c.disable_plugin(self.unary_request(pb::DisablePluginRequest { name: name.into() })))
                .await
        }
    }

    /// Removes a plugin; `force` also removes a codec that archives need.
    pub async fn remove_plugin(&self, name: &str, force: bool) -> Result<pb::RemovePluginResponse, ClientError> {
        let mut c = RegistryServiceClient::new(self.ready().await?);
        self.unary(c.remove_plugin(self.unary_request(pb::RemovePluginRequest {
            name: name.into(),
            force,
        })))
        .await
    }

    pub async fn get_statistics(&self) -> Result<pb::Statistics, ClientError> {
        let mut c = StatisticsServiceClient::new(self.ready().await?);
        self.unary(c.get_statistics(self.unary_request(pb::GetStatisticsRequest {})))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(address: &str, secret: &str) -> Config {
        let mut c = Config::generate();
        c.service.client.address = address.into();
        c.app_secret = secret.into();
        c.service.client.timeout_seconds = 7;
        c
    }

    #[test]
    fn addresses_are_normalized() {
        assert_eq!(normalize_address("127.0.0.1:1234").unwrap(), "http://127.0.0.1:1234");
        assert_eq!(
            normalize_address(" http://localhost:1/ ").unwrap(),
            "http://localhost:1"
        );
        assert_eq!(normalize_address("[::1]:5").unwrap(), "http://[::1]:5");
        assert!(normalize_address("").is_err());
        assert_eq!(normalize_address("https://x:1/").unwrap(), "https://x:1");
        assert!(normalize_address("ftp://x:1")
            .unwrap_err()
            .to_string()
            .contains("https://"));
        assert!(normalize_address("http://").is_err());
    }

    #[test]
    fn flags_override_the_config() {
        let c = config_with("http://127.0.0.1:4000", "secret");
        let p = PathBuf::from("/h/config.yaml");
        let s = ClientSettings::from_config(Some(&c), p.clone(), None, None).unwrap();
        assert_eq!(
            (s.address.as_str(), s.token.as_str()),
            ("http://127.0.0.1:4000", "secret")
        );
        assert_eq!(s.call_timeout, Duration::from_secs(7));
        assert_eq!(s.config_path, p);
        let s = ClientSettings::from_config(Some(&c), p, Some("10.0.0.1:9"), Some("tok")).unwrap();
        assert_eq!((s.address.as_str(), s.token.as_str()), ("http://10.0.0.1:9", "tok"));
    }

    #[test]
    fn missing_address_falls_back_to_the_listen_address_or_the_default_port() {
        let p = PathBuf::from("/h/config.yaml");
        let mut c = config_with("", "s");
        c.service.server.listen = "0.0.0.0".into();
        c.service.server.port = 6000;
        let s = ClientSettings::from_config(Some(&c), p.clone(), None, None).unwrap();
        assert_eq!(s.address, "http://127.0.0.1:6000");
        c.service.server.listen = "::".into();
        assert_eq!(
            ClientSettings::from_config(Some(&c), p.clone(), None, None)
                .unwrap()
                .address,
            "http://[::1]:6000"
        );
        let s = ClientSettings::from_config(None, p, None, None).unwrap();
        assert_eq!(s.address, format!("http://127.0.0.1:{}", config::DEFAULT_PORT));
        assert_eq!(s.token, "");
    }

    #[test]
    fn tokens_that_cannot_be_headers_are_refused() {
        let e = ClientSettings::from_config(None, PathBuf::from("/c"), None, Some("bad\ntoken")).unwrap_err();
        assert!(matches!(e, ClientError::Config(_)));
    }

    #[test]
    fn statuses_are_explained_keeping_the_server_message() {
        let ctx = ErrorContext {
            address: "http://127.0.0.1:1".into(),
            config_path: PathBuf::from("/h/config.yaml"),
        };
        let m = describe_status(Code::Unauthenticated, "bad token", &ctx);
        assert_eq!(
            m,
            "the server refused the token (check appSecret in /h/config.yaml or --token): bad token"
        );
        assert_eq!(
            describe_status(Code::NotFound, "no backup abc", &ctx),
            "not found: no backup abc"
        );
        assert_eq!(describe_status(Code::DataLoss, "", &ctx), "the archive is damaged");
        assert!(describe_status(Code::Unavailable, "", &ctx).contains("http://127.0.0.1:1"));
        assert_eq!(
            describe_status(Code::Unavailable, "plugin s3-upload: listing kept failing", &ctx),
            "unavailable, try again later: plugin s3-upload: listing kept failing"
        );
        assert!(describe_status(Code::Aborted, "busy", &ctx).starts_with("conflict: busy"));
        // The client's own time limit is not a cancellation by anyone.
        let m = describe_status(Code::Cancelled, "Timeout expired", &ctx);
        assert!(m.contains("timeoutSeconds") && m.contains("may still complete"), "{m}");
        let e = ctx.error(&Status::permission_denied("/dst is read-only"));
        assert_eq!(e.code(), Some(Code::PermissionDenied));
        assert!(e.to_string().ends_with(": /dst is read-only"));
    }

    #[test]
    fn unreachable_message_is_exact() {
        let e = ClientError::Unreachable {
            address: "http://127.0.0.1:9".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach wimguard server at http://127.0.0.1:9 — start it with `wimguard server`"
        );
    }

    #[test]
    fn bearer_token_is_added_when_set() {
        let mut with = BearerToken::new("abc");
        let r = with.call(Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), "Bearer abc");
        let mut without = BearerToken::new("");
        assert!(without
            .call(Request::new(()))
            .unwrap()
            .metadata()
            .get("authorization")
            .is_none());
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable() {
        // Bind then drop to find a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let settings =
            ClientSettings::from_config(None, PathBuf::from("/c"), Some(&format!("127.0.0.1:{port}")), None).unwrap();
        let client = Client::new(settings);
        let e = client.get_backup("x").await.unwrap_err();
        assert_eq!(
            e,
            ClientError::Unreachable {
                address: format!("http://127.0.0.1:{port}")
            }
        );
    }
}
