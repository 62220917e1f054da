//! The shared YAML configuration (`$WIMGUARD_HOME/config.yaml`).
//!
//! The server creates it on first start (random `appSecret`, mode 0600) and
//! records the address it really listens on under `service.client.address`,
//! where every client command finds it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CONFIG_FILE: &str = "config.yaml";
pub const DATABASE_FILE: &str = "catalog.sqlite";
/// The seed's port, so existing clients and firewall rules keep working.
pub const DEFAULT_PORT: u16 = 52730;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// Free-form deployment label (`production`, `test`, …).
    #[serde(default = "default_environment")]
    pub environment: String,
    #[serde(rename = "appID", default = "default_app_id")]
    pub app_id: String,
    /// The bearer token every RPC except health must carry.
    #[serde(rename = "appSecret")]
    pub app_secret: String,
    #[serde(default)]
    pub service: Service,
    #[serde(default)]
    pub backup: BackupDefaults,
    /// Per-plugin settings, by plugin name (see [`PluginConfig`]).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique_keys"
    )]
    pub plugins: BTreeMap<String, PluginConfig>,
    /// Limits on compiling uploaded plugins (see [`PluginInstallConfig`]).
    #[serde(default, skip_serializing_if = "PluginInstallConfig::is_default")]
    pub plugin_install: PluginInstallConfig,
    /// Commands run around every backup (see [`HooksConfig`]).
    #[serde(default, skip_serializing_if = "HooksConfig::is_empty")]
    pub hooks: HooksConfig,
    /// How scheduled backups run (see [`SchedulerConfig`]).
    #[serde(default, skip_serializing_if = "SchedulerConfig::is_default")]
    pub scheduler: SchedulerConfig,
    /// Schedules declared by the admin, by name (checked at start and
    /// reconciled into the catalog; `wimguard schedule` cannot change them).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "unique_keys"
    )]
    pub schedules: BTreeMap<String, ScheduleConfig>,
}

/// `scheduler:` in config.yaml.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Scheduled runs wait while this many backups (of any kind) run.
    #[serde(default = "default_max_parallel")]
    pub max_parallel_backups: u32,
    /// A failed scheduled run is tried again after this long (doubling with
    /// each failure in a row, at most an hour), unless its next slot comes first.
    #[serde(default = "default_retry_after")]
    pub retry_after_seconds: u64,
    /// After retention removes snapshots, rebuild (local) or consolidate
    /// (remote) the archive once this share of it is unused. 1 = never.
    #[serde(default = "default_optimize_above")]
    pub optimize_above: f64,
}

fn default_max_parallel() -> u32 {
    2
}
fn default_retry_after() -> u64 {
    300
}
fn default_optimize_above() -> f64 {
    0.5
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_parallel_backups: default_max_parallel(),
            retry_after_seconds: default_retry_after(),
            optimize_above: default_optimize_above(),
        }
    }
}

impl SchedulerConfig {
    fn is_default(&self) -> bool {
        *self == SchedulerConfig::default()
    }
}

/// A schedule declared under `schedules.<name>` in config.yaml.
///
/// ```yaml
/// schedules:
///   home-nightly:
///     cron: "30 2 * * *"             # 5 fields, or 6 with seconds first
///     timeZone: Europe/Berlin        # default: the server's
///     source: /home
///     destination: /backups/home.wim # or a remote archive's name with a destination plugin
///     plugins: [s3-upload]
///     retention: { keepDaily: 7, keepWeekly: 4, keepMonthly: 12 }
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleConfig {
    pub cron: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_zone: String,
    pub source: String,
    pub destination: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compression: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    #[serde(default, skip_serializing_if = "crate::catalog::schedules::RetentionSpec::is_empty")]
    pub retention: crate::catalog::schedules::RetentionSpec,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// What an admin sets for one plugin under `plugins.<name>`.
///
/// ```yaml
/// plugins:
///   webhook:
///     enabled: true
///     settings: { url: "https://hooks.example.com/backup" }
///     secrets: { token: WEBHOOK_TOKEN }     # value read from this env var
///     allowedHosts: ["hooks.example.com"]   # wasi:http allow-list (deny by default)
///     allowPrivate: false                   # may those names resolve to private addresses?
///     limits: { memoryMib: 64, callTimeoutSeconds: 5 }
///     failurePolicy: fail-open              # hooks only
///   rle:
///     trusted: true                         # native plugins only
///     sha256: "…"                           # must match the registered bytes
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    /// Overrides the enabled flag of the registry (`wimguard plugin enable|disable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Plain settings, handed to the plugin through the `config` import.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// Secret settings: key → name of the environment variable (of the
    /// server process) that holds the value. Values never go to config files
    /// or logs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Hosts (`name` or `name:port`; `*.example.com` for subdomains) that
    /// wasi:http requests of this plugin may reach. Empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// May the host *names* of `allowed_hosts` resolve to loopback, private,
    /// link-local or other non-public addresses? Default no (DNS rebinding
    /// protection); entries that are IP literals are always taken as written.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<PluginLimitsConfig>,
    /// Destination plugins: how many more times the server repeats a
    /// request that failed transiently after the plugin's own retries
    /// (reads, lists, parts; see `remote::retry`). Default 1; 0 turns the
    /// server's retries off; at most 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Hook plugins: what a failing (trapping, timing out) hook does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// Native plugins only: the admin vouches for this code (it runs unsandboxed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trusted: bool,
    /// Native plugins only: the sha256 the admin trusted; must match the registered file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginLimitsConfig {
    /// Linear memory per instance, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// Time one call may run, seconds (fractions allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout_seconds: Option<f64>,
}

/// Limits on compiling a plugin at install (`pluginInstall:`); unset keys
/// take the defaults of `plugins::CompileLimits`.
///
/// ```yaml
/// pluginInstall:
///   compileTimeoutSeconds: 60   # wall clock of the compiler process
///   compileMemoryMib: 1024      # its address space (RLIMIT_AS)
///   maxFunctionKib: 1024        # the largest function body accepted
/// ```
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginInstallConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_timeout_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_function_kib: Option<u64>,
}

impl PluginInstallConfig {
    fn is_default(&self) -> bool {
        *self == PluginInstallConfig::default()
    }
}

/// What happens when a hook itself fails (crashes, times out, cannot start).
/// A veto is not a failure: a pre-backup veto always stops the backup.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// The backup goes on; the failure becomes a warning of the backup.
    FailOpen,
    /// The backup fails (pre-backup) — the safe default for hooks that
    /// prepare data (database dumps, snapshots).
    #[default]
    FailClosed,
}

/// Command hooks: `hooks: { pre: [...], post: [...] }`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pre: Vec<CommandHook>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub post: Vec<CommandHook>,
}

impl HooksConfig {
    pub fn is_empty(&self) -> bool {
        self.pre.is_empty() && self.post.is_empty()
    }
}

/// One command run by the daemon without a shell: `command[0]` is the
/// program (looked up in PATH when it has no `/`), the rest its arguments.
/// The backup's details arrive in `WIMGUARD_*` environment variables.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandHook {
    /// Shown in messages; default: the program's file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub command: Vec<String>,
    /// Seconds before the command (its whole process group) is killed.
    #[serde(default = "default_hook_timeout")]
    pub timeout: f64,
    #[serde(default, rename = "failure-policy", alias = "failurePolicy")]
    pub failure_policy: FailurePolicy,
}

fn default_hook_timeout() -> f64 {
    60.0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Service {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub client: ClientConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on; loopback by default.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// TCP port; 0 picks a free one (recorded in `service.client.address`).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Seconds running jobs get to finish on SIGINT/SIGTERM before they are cancelled.
    #[serde(default = "default_grace")]
    pub shutdown_grace_seconds: u64,
    /// MiB that image metadata loaded at the same time (browse, diff,
    /// verify, restore, append, delete) may take together. A request whose
    /// archive alone needs more is refused (RESOURCE_EXHAUSTED); others wait
    /// their turn. Guards the server against metadata bombs.
    #[serde(default = "default_metadata_memory")]
    pub metadata_memory_mib: u64,
    /// TLS for the API. Required to listen beyond loopback (or `--insecure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
    /// Where to serve Prometheus metrics (`GET /metrics`), e.g.
    /// `127.0.0.1:9464`. Off when absent. The page needs no token, so keep
    /// it on loopback unless the network is trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<String>,
}

/// `service.server.tls`: a certificate and key (PEM; relative paths are
/// relative to the home), or `selfSigned: true` to have the server generate
/// a pair into `HOME/tls/` on first start and pin it for local clients.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub self_signed: bool,
    /// Extra DNS names or IP addresses a generated certificate is valid for
    /// (localhost, the loopback addresses and the host name always are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
}

/// `service.client.tls`: how a client verifies an `https://` server.
/// Neither `caFile` nor `certSha256`: the Mozilla root set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTls {
    /// PEM file of the CA (or the self-signed certificate) to trust.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// SHA-256 of the server's certificate (`AB:CD:…` or plain hex): only
    /// that certificate is accepted, whatever name it carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// The name to verify when the address names the server otherwise (an IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            port: default_port(),
            shutdown_grace_seconds: default_grace(),
            metadata_memory_mib: default_metadata_memory(),
            tls: None,
            metrics_listen: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientConfig {
    /// Where clients connect, e.g. `http://127.0.0.1:52730` (written by the server).
    #[serde(default)]
    pub address: String,
    /// Per-call timeout for unary calls, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// How to verify an `https://` address (written by a server with a
    /// self-signed certificate: its pin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            address: String::new(),
            timeout_seconds: default_timeout(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupDefaults {
    /// Codec for new archives: none, xpress, lzx, or a codec plugin's name.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// Codec for new *remote* archives (`--plugin s3-upload`): XPRESS by
    /// default. Uploads make the backup's speed count: on /usr/share/doc
    /// XPRESS captures ~5x faster than LZX for 2 % more bytes (bench/remote.py).
    #[serde(default = "default_remote_compression")]
    pub remote_compression: String,
    /// Who compresses standard codecs (xpress, lzx) for new images: the
    /// daemon's built-in native code (`native`, the default: fastest, see
    /// docs/plugins.md) or the bundled wasm plugins (`wasm`: sandboxed).
    /// Reading standard archives always uses the built-in code.
    #[serde(default, skip_serializing_if = "StandardCodecRuntime::is_native")]
    pub standard_codec_runtime: StandardCodecRuntime,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StandardCodecRuntime {
    #[default]
    Native,
    Wasm,
}

impl StandardCodecRuntime {
    fn is_native(&self) -> bool {
        *self == StandardCodecRuntime::Native
    }
}

impl Default for BackupDefaults {
    fn default() -> Self {
        BackupDefaults {
            compression: default_compression(),
            remote_compression: default_remote_compression(),
            standard_codec_runtime: StandardCodecRuntime::Native,
        }
    }
}

fn default_environment() -> String {
    "production".into()
}
fn default_app_id() -> String {
    "wimguard".into()
}
fn default_listen() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_grace() -> u64 {
    10
}
/// 2 GiB: a million-file tree (~200 MB of metadata) parses in about 1 GiB.
fn default_metadata_memory() -> u64 {
    2048
}
fn default_timeout() -> u64 {
    30
}
fn default_remote_compression() -> String {
    "xpress".into()
}
fn default_compression() -> String {
    "lzx".into()
}

/// The home directory: `--home`, else `WIMGUARD_HOME`, else the platform data dir.
pub fn resolve_home(flag: Option<&Path>) -> io::Result<PathBuf> {
    if let Some(h) = flag {
        return Ok(h.to_path_buf());
    }
    if let Some(h) = std::env::var_os("WIMGUARD_HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h));
    }
    dirs::data_dir().map(|d| d.join("wimguard")).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no home directory: pass --home or set WIMGUARD_HOME",
        )
    })
}

impl Config {
    /// A new configuration with a random secret.
    pub fn generate() -> Config {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS random source works");
        Config {
            environment: default_environment(),
            app_id: default_app_id(),
            app_secret: secret.iter().map(|b| format!("{b:02x}")).collect(),
            service: Service::default(),
            backup: BackupDefaults::default(),
            plugins: BTreeMap::new(),
            plugin_install: PluginInstallConfig::default(),
            hooks: HooksConfig::default(),
            scheduler: SchedulerConfig::default(),
            schedules: BTreeMap::new(),
        }
    }

    pub fn path(home: &Path) -> PathBuf {
        home.join(CONFIG_FILE)
    }

    /// Reads `home/config.yaml`.
    pub fn load(home: &Path) -> io::Result<Config> {
        let p = Self::path(home);
        let text = fs::read_to_string(&p)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display())))?;
        serde_yaml::from_str(&text).map_err(|e| {
            // The one field without a default: the token clients send.
            let hint = if e.to_string().contains("missing field `appSecret`") {
                " (the token clients authenticate with: add `appSecret:` with a long random value, e.g. from \
                 `openssl rand -hex 32`, or move the file away and the server writes a new one)"
            } else {
                ""
            };
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a valid WimGuard config: {e}{hint}", p.display()),
            )
        })
    }

    /// Reads the config, creating it (mode 0600) when missing.
    pub fn load_or_create(home: &Path) -> io::Result<Config> {
        match Self::load(home) {
            Ok(c) => Ok(c),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let c = Config::generate();
                c.save(home)?;
                Ok(c)
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the config atomically with mode 0600 (it holds the secret).
    pub fn save(&self, home: &Path) -> io::Result<()> {
        let p = Self::path(home);
        let tmp = home.join(format!(".{CONFIG_FILE}.tmp"));
        let text = serde_yaml::to_string(self).map_err(io::Error::other)?;
        {
            use io::Write;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        fs::rename(&tmp, &p)
    }
}

/// A map whose names must be unique. YAML lets a mapping give a key twice
/// and serde would keep the last silently: a plugin or schedule configured
/// twice would lose its first block (and a rewrite of config.yaml would
/// erase it from the file).
fn unique_keys<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Names<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Names<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of names")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((name, value)) = map.next_entry::<String, V>()? {
                if out.contains_key(&name) {
                    return Err(serde::de::Error::custom(format!(
                        "`{name}` is configured twice; merge the two blocks into one"
                    )));
                }
                out.insert(name, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Names(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_with_secret_and_mode_0600_and_seed_keys() {
        let t = tempfile::tempdir().unwrap();
        let c = Config::load_or_create(t.path()).unwrap();
        assert_eq!(c.app_secret.len(), 64);
        let mode = fs::metadata(Config::path(t.path())).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fs::read_to_string(Config::path(t.path())).unwrap();
        for key in ["environment:", "appID:", "appSecret:", "service:", "server:", "client:"] {
            assert!(text.contains(key), "{key} missing in\n{text}");
        }
        assert_eq!(Config::load_or_create(t.path()).unwrap(), c);
    }

    #[test]
    fn plugins_and_hooks_sections() {
        let text = r#"
appSecret: x
plugins:
  webhook:
    settings: { url: "http://127.0.0.1:9/x" }
    secrets: { token: HOOK_TOKEN }
    allowedHosts: ["127.0.0.1:9"]
    allowPrivate: true
    limits: { memoryMib: 32, callTimeoutSeconds: 0.5 }
    failurePolicy: fail-open
pluginInstall: { compileTimeoutSeconds: 5, compileMemoryMib: 512, maxFunctionKib: 64 }
hooks:
  pre:
    - command: ["/bin/true", "a b"]
      timeout: 5
      failure-policy: fail-open
"#;
        let c: Config = serde_yaml::from_str(text).unwrap();
        let w = &c.plugins["webhook"];
        assert_eq!(w.settings["url"], "http://127.0.0.1:9/x");
        assert_eq!(w.secrets["token"], "HOOK_TOKEN");
        assert!(w.allow_private);
        assert!(!PluginConfig::default().allow_private);
        assert_eq!(
            c.plugin_install,
            PluginInstallConfig {
                compile_timeout_seconds: Some(5.0),
                compile_memory_mib: Some(512),
                max_function_kib: Some(64),
            }
        );
        assert_eq!(w.limits.unwrap().memory_mib, Some(32));
        assert_eq!(w.failure_policy, Some(FailurePolicy::FailOpen));
        assert_eq!(c.hooks.pre[0].command, ["/bin/true", "a b"]);
        assert_eq!(c.hooks.pre[0].failure_policy, FailurePolicy::FailOpen);
        assert_eq!(c.hooks.pre[0].timeout, 5.0);
        // A typo in a key is an error, not a silently ignored setting.
        let bad = "appSecret: x\nplugins:\n  webhook:\n    setings: {}\n";
        assert!(serde_yaml::from_str::<Config>(bad).is_err());
        let bad = "appSecret: x\npluginInstall: { compileTimeout: 5 }\n";
        assert!(serde_yaml::from_str::<Config>(bad).is_err());
    }

    /// A plugin or schedule given twice is an error, not a silent choice.
    #[test]
    fn a_name_configured_twice_is_refused() {
        let twice = "appSecret: x\nplugins:\n  webhook:\n    allowedHosts: [a.example]\n  webhook:\n    retries: 2\n";
        let e = serde_yaml::from_str::<Config>(twice).unwrap_err().to_string();
        assert!(e.contains("`webhook` is configured twice"), "{e}");
        let empty = "appSecret: x\nplugins:\nschedules: {}\n";
        assert!(serde_yaml::from_str::<Config>(empty).unwrap().plugins.is_empty());
    }

    /// A hand-written config without the token says how to add one.
    #[test]
    fn a_missing_app_secret_is_explained() {
        let home = tempfile::tempdir().unwrap();
        fs::write(home.path().join("config.yaml"), "service:\n  server:\n    port: 0\n").unwrap();
        let e = Config::load(home.path()).unwrap_err().to_string();
        assert!(e.contains("appSecret") && e.contains("openssl rand"), "{e}");
    }
}
