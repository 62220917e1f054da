//! WimGuard hook plugin `webhook`: POSTs every backup event as JSON to a
//! URL, through wasi:http (the host filters hosts by the plugin's
//! allow-list).
//!
//! Settings:
//! * `url` (required): `http://` or `https://` address;
//! * `events`: comma list of `pre-backup`, `post-backup` (default: both,
//!   plus events of later 1.x minors, which an explicit list cannot name);
//! * `timeout-ms` (default 10000): connect, first-byte and between-bytes
//!   timeout of the request;
//! * `require-delivery` (`true`/`false`, default false): when true, a failed
//!   delivery of a pre-backup event vetoes the backup; otherwise it is
//!   logged as a warning and the backup goes ahead. A failed delivery of a
//!   post-backup event becomes a warning of the backup itself (a post-phase
//!   veto, which changes nothing else), so the backup ends "done, with
//!   warnings" (exit 8) and whoever ran it learns the event was not
//!   delivered;
//! * secret `token`: sent as `Authorization: Bearer <token>`, never logged.
//!
//! A response outside 200..=299 counts as a failed delivery. Body formats:
//! see [`json`]. Build: `cargo build --release --target wasm32-wasip2` (or
//! `plugins/build-wasm.sh`).

pub mod json;
pub mod settings;

#[cfg(target_arch = "wasm32")]
mod http;

use wimguard_sdk::{BackupEvent, HookPlugin, HostInfo, InitError, Plugin, PluginInfo, Verdict};

use settings::Settings;

/// A request ready to send: headers (lowercase names) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

/// The plugin's state: its validated settings.
#[derive(Debug)]
pub struct Webhook {
    settings: Settings,
}

impl Plugin for Webhook {
    fn info() -> PluginInfo {
        PluginInfo::new("webhook", env!("CARGO_PKG_VERSION"), env!("CARGO_PKG_DESCRIPTION"))
    }

    fn init(_host: &HostInfo) -> Result<Self, InitError> {
        let settings = Settings::from_lookup(wimguard_sdk::config::get)?;
        wimguard_sdk::log::debug(&format!("webhook: posting events to {}", settings.url));
        Ok(Webhook { settings })
    }
}

impl HookPlugin for Webhook {
    fn on_event(&mut self, event: BackupEvent) -> Verdict {
        self.handle(&event, |request| send(&self.settings, request))
    }
}

wimguard_sdk::export_hook!(Webhook);

impl Webhook {
    /// A webhook with already validated settings (for tests and embedding).
    pub fn new(settings: Settings) -> Self {
        Webhook { settings }
    }

    /// Whether the settings ask for this event.
    pub fn wants(&self, event: &BackupEvent) -> bool {
        match event {
            BackupEvent::PreBackup(_) => self.settings.pre_backup,
            BackupEvent::PostBackup(_) => self.settings.post_backup,
            BackupEvent::Other { .. } => self.settings.other_events,
        }
    }

    /// The request for `event`.
    pub fn request(&self, event: &BackupEvent) -> Request {
        let mut headers = vec![
            ("content-type".to_string(), b"application/json".to_vec()),
            (
                "user-agent".to_string(),
                concat!("wimguard-webhook/", env!("CARGO_PKG_VERSION")).into(),
            ),
        ];
        if let Some(token) = &self.settings.token {
            headers.push(("authorization".to_string(), format!("Bearer {token}").into_bytes()));
        }
        let body = json::event_body(event);
        // A known length lets the host send a plain body instead of a
        // chunked one, which some receivers refuse.
        headers.push(("content-length".to_string(), body.len().to_string().into_bytes()));
        Request { headers, body }
    }

    /// Sends `event` with `send` (returns the HTTP status or why it failed)
    /// and decides the verdict. Split from `on_event` so that the decision
    /// is testable without wasi:http.
    pub fn handle(&self, event: &BackupEvent, send: impl FnOnce(&Request) -> Result<u16, String>) -> Verdict {
        if !self.wants(event) {
            return Verdict::Allow;
        }
        let name = json::event_name(event);
        let url = &self.settings.url;
        let outcome = match send(&self.request(event)) {
            Ok(status) if (200..300).contains(&status) => Ok(status),
            Ok(status) => Err(format!("HTTP {status}")),
            Err(reason) => Err(reason),
        };
        match outcome {
            Ok(status) => {
                log_debug(&format!("webhook: delivered {name} to {url} (HTTP {status})"));
                Verdict::Allow
            }
            Err(reason) => {
                let message = format!("webhook: delivery to {url} failed: {reason}");
                match event {
                    BackupEvent::PreBackup(_) if self.settings.require_delivery => Verdict::Veto(message),
                    // The backup is over: a veto only adds a warning to it,
                    // which its caller sees (a log line alone went unseen).
                    BackupEvent::PostBackup(_) => Verdict::Veto(format!("{message} ({name} event)")),
                    _ => {
                        log_warn(&format!("{message} ({name} event; the backup is not affected)"));
                        Verdict::Allow
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn send(settings: &Settings, request: &Request) -> Result<u16, String> {
    http::post(&settings.target, &request.headers, &request.body, settings.timeout_ns())
}

#[cfg(not(target_arch = "wasm32"))]
fn send(_settings: &Settings, _request: &Request) -> Result<u16, String> {
    Err("wasi:http is only available in the wasm32 component".into())
}

// The log import exists only in the component; native tests print instead.
#[cfg(target_arch = "wasm32")]
fn log_warn(message: &str) {
    wimguard_sdk::log::warn(message)
}
#[cfg(target_arch = "wasm32")]
fn log_debug(message: &str) {
    wimguard_sdk::log::debug(message)
}
#[cfg(not(target_arch = "wasm32"))]
fn log_warn(message: &str) {
    eprintln!("warn: {message}")
}
#[cfg(not(target_arch = "wasm32"))]
fn log_debug(message: &str) {
    eprintln!("debug: {message}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use wimguard_sdk::{BackupStart, BackupSummary};

    fn webhook(pairs: &[(&str, &str)]) -> Webhook {
        let lookup = |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string());
        Webhook::new(Settings::from_lookup(lookup).unwrap())
    }

    fn pre() -> BackupEvent {
        BackupEvent::PreBackup(BackupStart {
            job: "j".into(),
            backup_id: "b".into(),
            sources: vec!["/data".into()],
            destination: "d".into(),
            extras: vec![],
        })
    }

    fn post() -> BackupEvent {
        BackupEvent::PostBackup(BackupSummary {
            job: "j".into(),
            backup_id: "b".into(),
            succeeded: true,
            error: None,
            files: 1,
            bytes_read: 2,
            bytes_written: 3,
            duration_ms: 4,
            extras: vec![],
        })
    }

    fn other() -> BackupEvent {
        BackupEvent::Other {
            name: "later-event".into(),
            extras: vec![],
        }
    }

    #[test]
    fn request_headers_and_body() {
        let w = webhook(&[("url", "https://h/x"), ("token", "tok-123")]);
        let r = w.request(&pre());
        let header = |n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(
            header("user-agent").unwrap(),
            format!("wimguard-webhook/{}", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(header("authorization").as_deref(), Some("Bearer tok-123"));
        assert_eq!(header("content-length").unwrap(), r.body.len().to_string());
        assert!(r.body.starts_with(br#"{"event":"pre-backup","#));
        let r = webhook(&[("url", "https://h/x")]).request(&post());
        assert!(r.headers.iter().all(|(k, _)| k != "authorization"));
    }

    #[test]
    fn verdicts() {
        let fail = |_: &Request| Err("ConnectionRefused".to_string());
        let status = |s: u16| move |_: &Request| Ok(s);
        let lax = webhook(&[("url", "http://h/"), ("token", "tok-123")]);
        assert_eq!(lax.handle(&pre(), fail), Verdict::Allow);
        assert_eq!(lax.handle(&pre(), status(500)), Verdict::Allow);
        assert_eq!(lax.handle(&pre(), status(204)), Verdict::Allow);

        let strict = webhook(&[("url", "http://h/"), ("require-delivery", "true"), ("token", "tok-123")]);
        assert_eq!(
            strict.handle(&pre(), fail),
            Verdict::Veto("webhook: delivery to http://h/ failed: ConnectionRefused".into())
        );
        assert_eq!(
            strict.handle(&pre(), status(404)),
            Verdict::Veto("webhook: delivery to http://h/ failed: HTTP 404".into())
        );
        assert_eq!(
            strict.handle(&pre(), status(301)),
            Verdict::Veto("webhook: delivery to http://h/ failed: HTTP 301".into())
        );
        assert_eq!(strict.handle(&pre(), status(200)), Verdict::Allow);
        // Only pre-backup deliveries can stop a backup; a failed
        // post-backup one objects, which the host keeps as a warning.
        let objection =
            Verdict::Veto("webhook: delivery to http://h/ failed: ConnectionRefused (post-backup event)".into());
        assert_eq!(strict.handle(&post(), fail), objection);
        assert_eq!(lax.handle(&post(), fail), objection);
        assert_eq!(lax.handle(&post(), status(201)), Verdict::Allow);
        assert_eq!(strict.handle(&other(), fail), Verdict::Allow);
        // The native stand-in for wasi:http fails: still a clean verdict.
        assert!(
            matches!(strict.handle(&pre(), |r| send(&strict.settings, r)), Verdict::Veto(m) if !m.contains("tok-123"))
        );
    }

    #[test]
    fn event_filter() {
        let sent = Cell::new(0);
        let count = |_: &Request| {
            sent.set(sent.get() + 1);
            Ok(200)
        };
        let only_post = webhook(&[("url", "http://h/"), ("events", "post-backup")]);
        assert_eq!(only_post.handle(&pre(), count), Verdict::Allow);
        assert_eq!(only_post.handle(&other(), count), Verdict::Allow);
        assert_eq!(sent.get(), 0);
        assert_eq!(only_post.handle(&post(), count), Verdict::Allow);
        assert_eq!(sent.get(), 1);
        let all = webhook(&[("url", "http://h/")]);
        for e in [pre(), post(), other()] {
            all.handle(&e, count);
        }
        assert_eq!(sent.get(), 4);
    }
}
