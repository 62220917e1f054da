//! The host imports a plugin may call: [`log`], [`config`], [`progress`].
//!
//! The same API in every build of a plugin crate:
//!
//! * `wasm32` (a component): the WIT imports `wimguard:plugin/{log,config,progress}`;
//! * native with feature `native` (a trusted native plugin): the host's
//!   callbacks from [`WgHostApi`](crate::native::WgHostApi), during any call
//!   the host makes into the plugin;
//! * native without a host (unit tests of a plugin crate, or a thread the
//!   plugin spawned): `config` is empty, `log` writes to stderr, `progress`
//!   is ignored.

/// Logging into the daemon's log (host import `wimguard:plugin/log`).
pub mod log {
    /// Log levels, lowest first.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub enum Level {
        Trace,
        Debug,
        Info,
        Warn,
        Error,
    }

    /// Writes one message to the daemon's log.
    #[cfg(target_arch = "wasm32")]
    pub fn log(level: Level, message: &str) {
        use crate::guest::imports::log as w;
        let level = match level {
            Level::Trace => w::Level::Trace,
            Level::Debug => w::Level::Debug,
            Level::Info => w::Level::Info,
            Level::Warn => w::Level::Warn,
            Level::Error => w::Level::Error,
        };
        w::log(level, message);
    }

    /// Writes one message to the daemon's log.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn log(level: Level, message: &str) {
        use crate::native as n;
        let level = match level {
            Level::Trace => n::WG_LOG_TRACE,
            Level::Debug => n::WG_LOG_DEBUG,
            Level::Info => n::WG_LOG_INFO,
            Level::Warn => n::WG_LOG_WARN,
            Level::Error => n::WG_LOG_ERROR,
        };
        crate::native_guest::log(level, message);
    }

    pub fn trace(message: &str) {
        log(Level::Trace, message)
    }
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// The admin's settings and bound secrets (host import `wimguard:plugin/config`).
pub mod config {
    use crate::plugin::{Extras, InitError};

    /// One configured key.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        pub key: String,
        /// A bound secret: never log its value.
        pub secret: bool,
        pub extras: Extras,
    }

    /// The value of a setting or secret, if set.
    pub fn get(key: &str) -> Option<String> {
        #[cfg(target_arch = "wasm32")]
        return crate::guest::imports::config::get(key);
        #[cfg(not(target_arch = "wasm32"))]
        return crate::native_guest::config_get(key);
    }

    /// Like [`get`], but a missing key is an [`InitError::BadConfig`].
    pub fn require(key: &str) -> Result<String, InitError> {
        get(key).ok_or_else(|| InitError::BadConfig(format!("missing setting `{key}`")))
    }

    /// Every key configured for this plugin.
    pub fn list() -> Vec<Entry> {
        #[cfg(target_arch = "wasm32")]
        return crate::guest::imports::config::list()
            .into_iter()
            .map(|e| Entry {
                key: e.key,
                secret: e.secret,
                extras: e.extras,
            })
            .collect();
        #[cfg(not(target_arch = "wasm32"))]
        return crate::native_guest::config_keys()
            .into_iter()
            .map(|(key, secret)| Entry {
                key,
                secret,
                extras: Vec::new(),
            })
            .collect();
    }
}

/// Progress of the current operation (host import `wimguard:plugin/progress`).
pub mod progress {
    /// Adds `bytes` and `items` to the running totals. (Native ABI 1 has no
    /// progress callback: codecs have nothing to report, so it is ignored
    /// there.)
    pub fn report(bytes: u64, items: u64) {
        #[cfg(target_arch = "wasm32")]
        crate::guest::imports::progress::report(bytes, items);
        #[cfg(not(target_arch = "wasm32"))]
        let _ = (bytes, items);
    }
}
