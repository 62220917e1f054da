//! `wimguard server`: owns the home directory (config, catalog), serves
//! the gRPC API on loopback by default, and stops gracefully on
//! SIGINT/SIGTERM. One file per service; the services are thin over
//! `jobs`, `catalog` and `ops`.

mod archive;
mod backup;
mod convert;
mod env;
mod registry;
mod restore;
mod schedule;
mod snapshot;
mod statistics;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Status};

use crate::api::v1 as pb;
use crate::catalog::{Catalog, CodecName};
use crate::config::{self, Config};
use crate::jobs::{JobSettings, Jobs};
use crate::plugins::PluginRegistry;

/// How long connections may linger after jobs are done during a stop.
const CONNECTION_DRAIN: Duration = Duration::from_secs(3);

/// What every service shares.
pub struct Shared {
    pub home: PathBuf,
    pub config_path: PathBuf,
    pub database_path: PathBuf,
    pub listen: SocketAddr,
    pub started_at_ms: i64,
    pub jobs: Arc<Jobs>,
    pub scheduler: Arc<crate::scheduler::Scheduler>,
}

/// Holds the home's lock file for the server's lifetime.
struct HomeLock(#[allow(dead_code)] File);

fn lock_home(home: &Path) -> io::Result<HomeLock> {
    let path = home.join("server.lock");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display())))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "another wimguard server (pid {}) is already running with home {}; stop it first or use another --home",
                pid.trim(),
                home.display()
            ),
        ));
    }
    let written = f.set_len(0).and_then(|()| write!(f, "{}", std::process::id()));
    written.map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))?;
    Ok(HomeLock(f))
}

/// Checks `authorization: Bearer <appSecret>` on every call it guards.
#[derive(Clone)]
struct Auth {
    token: Arc<String>,
}

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match given.strip_prefix("Bearer ") {
            // An empty secret never matches (the server refuses to start
            // with one; this keeps an empty header from ever getting in).
            Some(t) if !self.token.is_empty() && constant_time_eq(t.as_bytes(), self.token.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated("invalid token")),
            None => Err(Status::unauthenticated(
                "missing `authorization: Bearer <appSecret>` metadata",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token every client must send. An empty one would let in anyone
/// who sends an empty token; a short one is guessable.
fn check_app_secret(secret: &str, config: &Path) -> Result<(), String> {
    const ADVICE: &str = "use a long random value, e.g. from `openssl rand -hex 32`";
    let secret = secret.trim();
    if secret.is_empty() {
        return Err(format!(
            "{}: appSecret is empty, which would let any client in; {ADVICE}",
            config.display()
        ));
    }
    if secret.len() < 16 {
        tracing::warn!(
            config = %config.display(),
            "appSecret has only {} characters and may be guessed; {ADVICE}",
            secret.len()
        );
    }
    Ok(())
}

/// Process-wide settings, before any other thread exists.
fn init_process() {
    // Large buffers (16 MiB upload parts, decode batches) are allocated and
    // freed by many threads. glibc's default raises the mmap threshold to the
    // largest block freed, after which such buffers come from per-thread
    // arenas that keep the memory: a fixed threshold returns it at once.
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WIMGUARD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(io::stderr)
        // Colour codes only for a person watching, never in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&io::stderr()))
        .init();
}

/// Opens the catalog, tidies what a crashed server left (jobs marked
/// interrupted, their archives repaired, unfinished uploads aborted), loads
/// the plugin registry and checks the configured default codecs.
fn open_core(home: &Path, database_path: &Path, cfg: &Config) -> Result<Arc<Jobs>, Box<dyn std::error::Error>> {
    let catalog = Arc::new(Catalog::open(database_path)?);
    let interrupted = catalog.mark_interrupted()?;
    if !interrupted.is_empty() {
        tracing::warn!(
            count = interrupted.len(),
            "jobs left running by an earlier server were marked interrupted"
        );
    }
    let plugins = Arc::new(PluginRegistry::open(
        home,
        catalog.clone(),
        cfg.plugins.clone(),
        &cfg.plugin_install,
    )?);
    plugins.register_bundled(crate::bundled::bundled_plugins())?;
    for name in plugins.configured_but_not_installed()? {
        tracing::warn!(
            "config.yaml configures plugin `{name}`, but no plugin of that name is installed (a typo? \
             `wimguard plugin list` shows the names); its settings wait for one to be installed"
        );
    }
    // Uploads a crash left open are aborted (their backups were marked
    // interrupted above); the earlier objects of their chains are intact.
    let registry = plugins.clone();
    match crate::remote::manage::abort_interrupted_uploads(&catalog, &|p| {
        crate::remote::plugin_store::open(&registry, p)
    }) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(count = n, "uploads left unfinished by an earlier server were dropped"),
        Err(e) => tracing::warn!("cannot tidy uploads left by an earlier server: {e}"),
    }
    // Through the registry: a plugin-compressed archive can be opened too.
    for archive in &interrupted {
        // The crash left the archive readable; tidy what it left behind.
        match crate::wim::writer::repair_after_crash(Path::new(archive), &*plugins) {
            Ok(true) => tracing::info!(%archive, "cleared the write-in-progress mark left by the crash"),
            Ok(false) => {}
            Err(e) => tracing::warn!(%archive, "could not tidy the archive after the crash: {e}"),
        }
        // A backup whose image was committed before the crash (or whose end
        // the catalog could not record) is a snapshot, not "interrupted".
        if Path::new(archive).is_absolute() {
            if let Err(e) = crate::remote::rebuild::adopt_local(&catalog, Path::new(archive), &*plugins) {
                tracing::warn!(%archive, "could not check the archive's images against the catalog: {e}");
            }
        }
    }
    // Snapshots whose removal a crash cut short are removed from the
    // catalog too (their images are gone), or kept (they are not).
    match crate::ops::settle_pending_removals(&catalog, &*plugins) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            count = n,
            "removals of snapshots an earlier server left unfinished were finished"
        ),
        Err(e) => tracing::warn!("cannot settle removals an earlier server left unfinished: {e}"),
    }
    // A bad default codec is a configuration error: say so at start, not at the first backup.
    let default_compression =
        CodecName::parse(&cfg.backup.compression).map_err(|e| format!("config backup.compression: {e}"))?;
    let default_remote_compression = CodecName::parse(&cfg.backup.remote_compression)
        .map_err(|e| format!("config backup.remoteCompression: {e}"))?;
    let jobs = Arc::new(Jobs::new(
        catalog,
        JobSettings {
            default_compression: default_compression.clone(),
            default_remote_compression: default_remote_compression.clone(),
            standard_codec_runtime: cfg.backup.standard_codec_runtime,
            hooks: cfg.hooks.clone(),
            metadata_memory_mib: cfg.service.server.metadata_memory_mib,
        },
        plugins,
    ));
    jobs.resolve_codec(&default_compression)
        .map_err(|e| format!("config backup.compression {:?}: {e}", cfg.backup.compression))?;
    jobs.resolve_codec(&default_remote_compression).map_err(|e| {
        format!(
            "config backup.remoteCompression {:?}: {e}",
            cfg.backup.remote_compression
        )
    })?;
    Ok(jobs)
}

/// Writes where clients find this server (and, for a self-signed
/// certificate, its pin) into config.yaml, only when that changed.
fn record_client_address(
    home: &Path,
    local: SocketAddr,
    identity: Option<&crate::tls::ServerIdentity>,
    tls: Option<&crate::config::ServerTls>,
) -> Result<(), Box<dyn std::error::Error>> {
    // Clients find us through the shared config.
    // Only the address is persisted; --port/--listen overrides stay per run.
    let mut on_disk = Config::load(home)?;
    let as_loaded = on_disk.clone();
    let scheme = if identity.is_some() { "https" } else { "http" };
    let host = match local.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
        ip if ip.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    on_disk.service.client.address = format!("{scheme}://{host}:{}", local.port());
    match identity {
        // Local clients trust what we generated by its pin; an admin's
        // own client TLS settings are left alone.
        Some(id) if tls.is_some_and(|t| t.self_signed && t.cert_file.is_none()) => {
            let client_tls = on_disk.service.client.tls.get_or_insert_with(Default::default);
            if client_tls.ca_file.is_none() {
                client_tls.cert_sha256 = Some(id.fingerprint.clone());
            }
        }
        _ => {}
    }
    // Rewritten only when something changed: a rewrite loses comments.
    if on_disk != as_loaded {
        on_disk.save(home)?;
    }
    Ok(())
}

/// How `wimguard server` was started: overrides of config.yaml for this
/// run (the CLI fills it from its flags; see `cli::server`).
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    pub home: Option<std::path::PathBuf>,
    pub port: Option<u16>,
    pub listen: Option<String>,
    pub tls_self_signed: bool,
    pub insecure: bool,
    pub metrics_listen: Option<String>,
}

pub fn run(args: ServerOptions) -> Result<(), Box<dyn std::error::Error>> {
    init_process();
    let home = config::resolve_home(args.home.as_deref())?;
    if !home.exists() {
        std::fs::create_dir_all(&home).map_err(|e| format!("cannot create home {}: {e}", home.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))?;
    }
    let _lock = lock_home(&home)?;
    let mut cfg = Config::load_or_create(&home)?;
    check_app_secret(&cfg.app_secret, &Config::path(&home))?;
    if let Some(p) = args.port {
        cfg.service.server.port = p;
    }
    if let Some(l) = &args.listen {
        cfg.service.server.listen = l.clone();
    }
    if let Some(m) = &args.metrics_listen {
        cfg.service.server.metrics_listen = Some(m.clone());
    }
    // Before anything records: the recorder only counts from its install on.
    let metrics = match &cfg.service.server.metrics_listen {
        Some(_) => Some(crate::metrics::install()?),
        None => None,
    };
    let database_path = home.join(config::DATABASE_FILE);
    let jobs = open_core(&home, &database_path, &cfg)?;
    // Schedules of config.yaml are checked now: a mistake stops the server
    // with the key to fix, rather than failing at 2 a.m.
    let scheduler = crate::scheduler::Scheduler::new(jobs.clone(), cfg.scheduler.clone());
    scheduler.reconcile(&cfg.schedules)?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let addr: SocketAddr = format!("{}:{}", cfg.service.server.listen, cfg.service.server.port)
            .parse()
            .or_else(|_| {
                use std::net::ToSocketAddrs;
                (cfg.service.server.listen.as_str(), cfg.service.server.port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or("bad listen address")
            })
            .map_err(|e| {
                format!(
                    "cannot listen on {}:{}: {e}",
                    cfg.service.server.listen, cfg.service.server.port
                )
            })?;
        let tls = match &cfg.service.server.tls {
            Some(t) => Some(t.clone()),
            None if args.tls_self_signed => Some(crate::config::ServerTls {
                self_signed: true,
                ..Default::default()
            }),
            None => None,
        };
        if tls.is_none() && !addr.ip().is_loopback() {
            if !args.insecure {
                return Err(format!(
                    "refusing to listen on {addr} without TLS: the token and every request would cross the network \
                     in clear text. Set service.server.tls in {} (certFile and keyFile, or selfSigned: true), start \
                     with --tls-self-signed, or pass --insecure if the network is trusted",
                    Config::path(&home).display()
                )
                .into());
            }
            tracing::warn!(%addr, "listening beyond loopback WITHOUT TLS (--insecure): tokens and data are sent in clear text");
        }
        let identity = match &tls {
            Some(t) => {
                let mut names = t.names.clone();
                if !addr.ip().is_unspecified() {
                    names.push(addr.ip().to_string());
                }
                Some(crate::tls::server_identity(&home, t, &names)?)
            }
            None => None,
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let local = listener.local_addr()?;
        if let (Some(handle), Some(listen)) = (metrics, &cfg.service.server.metrics_listen) {
            let (metrics_listener, at) = crate::metrics::bind(listen).await?;
            if !at.ip().is_loopback() {
                tracing::warn!(%at, "metrics are served beyond loopback, without a token");
            }
            tracing::info!("metrics on http://{at}/metrics");
            tokio::spawn(crate::metrics::serve(metrics_listener, handle));
        }
        record_client_address(&home, local, identity.as_ref(), tls.as_ref())?;
        if let Some(id) = &identity {
            tracing::info!(certificate = %id.cert_path.display(), sha256 = %id.fingerprint, "serving TLS");
            println!("TLS certificate {} sha256 {}", id.cert_path.display(), id.fingerprint);
        }
        let shared = Arc::new(Shared {
            home: home.clone(),
            config_path: Config::path(&home),
            database_path,
            listen: local,
            started_at_ms: crate::catalog::now_ms(),
            jobs: jobs.clone(),
            scheduler: scheduler.clone(),
        });
        let scheduler_thread = scheduler.spawn();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        tokio::spawn(watch_catalog_file(
            shared.database_path.clone(),
            health_reporter.clone(),
            jobs.clone(),
            scheduler.clone(),
        ));
        let auth = Auth {
            token: Arc::new(cfg.app_secret.trim().to_string()),
        };
        use tonic::service::interceptor::InterceptedService as I;
        let mut builder = tonic::transport::Server::builder();
        if let Some(id) = &identity {
            let identity = tonic::transport::Identity::from_pem(&id.cert_pem, &id.key_pem);
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .map_err(|e| format!("cannot use the TLS certificate {}: {e}", id.cert_path.display()))?;
        }
        let router = builder
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(health_service)
            .add_service(I::new(
                pb::backup_service_server::BackupServiceServer::new(backup::BackupApi::new(shared.clone())),
                auth.clone(),
            ))
            .add_service(I::new(
                pb::restore_service_server::RestoreServiceServer::new(restore::RestoreApi::new(shared.clone())),
                auth.clone(),
            ))
            .add_service(I::new(
                pb::archive_service_server::ArchiveServiceServer::new(archive::ArchiveApi::new(shared.clone())),
                auth.clone(),
            ))
            .add_service(I::new(
                pb::schedule_service_server::ScheduleServiceServer::new(schedule::ScheduleApi::new(shared.clone())),
                auth.clone(),
            ))
            .add_service(I::new(
                pb::snapshot_service_server::SnapshotServiceServer::new(snapshot::SnapshotApi::new(shared.clone())),
                auth.clone(),
            ))
            .add_service(I::new(
                pb::env_service_server::EnvServiceServer::new(env::EnvApi::new(shared.clone())),
                auth.clone(),
            ))
            .add_service(I::new(
                pb::registry_service_server::RegistryServiceServer::new(registry::RegistryApi::new(shared.clone()))
                    .max_decoding_message_size(8 << 20),
                auth.clone(),
            ))
            .add_service(I::new(
                pb::statistics_service_server::StatisticsServiceServer::new(statistics::StatisticsApi::new(
                    shared.clone(),
                )),
                auth,
            ));
        tracing::info!(address = %local, home = %home.display(), "wimguard server listening");
        println!("wimguard server listening on {local} (home {})", home.display());
        let grace = Duration::from_secs(cfg.service.server.shutdown_grace_seconds);
        let (jobs_done_tx, jobs_done_rx) = tokio::sync::oneshot::channel::<()>();
        let stopping = async move {
            wait_for_signal().await;
            tracing::info!("stopping: no new jobs; running ones get {}s to finish", grace.as_secs());
            health_reporter
                .set_service_status("", tonic_health::ServingStatus::NotServing)
                .await;
            // No new scheduled runs; running ones stop with the rest.
            scheduler.stop();
            let j = jobs.clone();
            let _ = tokio::task::spawn_blocking(move || j.shutdown(grace)).await;
            let _ = jobs_done_tx.send(());
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        // Graceful shutdown waits for clients to close their connections; one
        // that never does (a stalled or suspended client) must not keep the
        // server alive, so connections get a few seconds once jobs are done.
        let serve = router.serve_with_incoming_shutdown(incoming, stopping);
        tokio::pin!(serve);
        tokio::select! {
            r = &mut serve => r?,
            _ = async {
                let _ = jobs_done_rx.await;
                tokio::time::sleep(CONNECTION_DRAIN).await;
            } => tracing::warn!("clients still connected after {}s; closing their connections", CONNECTION_DRAIN.as_secs()),
        }
        let _ = scheduler_thread.join();
        tracing::info!("stopped");
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler installs");
    // SIGHUP would otherwise end the server at once, killing running jobs;
    // there is no reload, so say so and keep serving.
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler installs");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => tracing::warn!(
                "SIGHUP ignored: the server reads config.yaml only at start; restart it (SIGTERM, then start again) to apply changes"
            ),
        }
    }
}

/// How often the server makes sure its catalog file is still where it was.
const CATALOG_WATCH: Duration = Duration::from_secs(2);

/// Notices the catalog file deleted or replaced under the running server (a
/// home removed by hand, a restore of an old copy): everything recorded
/// from then on would go to a file nobody can open again, or overwrite the
/// new one. The server then reports NOT_SERVING (clients refuse to use it),
/// takes no new jobs and runs no schedule; running jobs finish. Only a
/// restart, which opens the catalog at its path again, recovers.
async fn watch_catalog_file(
    path: PathBuf,
    health: tonic_health::server::HealthReporter,
    jobs: Arc<Jobs>,
    scheduler: Arc<crate::scheduler::Scheduler>,
) {
    use std::os::unix::fs::MetadataExt;
    let identity = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let Some(opened) = identity(&path) else { return };
    let mut tick = tokio::time::interval(CATALOG_WATCH);
    loop {
        tick.tick().await;
        if identity(&path) == Some(opened) {
            continue;
        }
        let why = format!(
            "the catalog {} was deleted or replaced while the server ran (was its home removed?): what it recorded \
             now would be lost, so it takes no new work; restart the server",
            path.display()
        );
        tracing::error!("{why}");
        jobs.refuse_new_jobs(&why);
        scheduler.stop();
        health
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        return;
    }
}
