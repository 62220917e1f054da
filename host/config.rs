//! The shared YAML configuration (`$WIMGUARD_HOME/config.yaml`).
//!
//! The server creates it on first start (random `appSecret`, mode 0600) and
//! records the address it really listens on under `service.client.address`,
//! where every client command finds it.

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CONFIG_FILE: &str = "config.yaml";
pub const DATABASE_FILE: &str = "catalog.sqlite";
pub const DEFAULT_PORT: u16 = 50551;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
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
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Service {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub client: ClientConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: default_listen(),
            port: default_port(),
            shutdown_grace_seconds: default_grace(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    /// Where clients connect, e.g. `http://127.0.0.1:50551` (written by the server).
    #[serde(default)]
    pub address: String,
    /// Per-call timeout for unary calls, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            address: String::new(),
            timeout_seconds: default_timeout(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupDefaults {
    /// Codec for new archives: none, xpress or lzx.
    #[serde(default = "default_compression")]
    pub compression: String,
}

impl Default for BackupDefaults {
    fn default() -> Self {
        BackupDefaults {
            compression: default_compression(),
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
fn default_timeout() -> u64 {
    30
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
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a valid WimGuard config: {e}", p.display()),
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
}
