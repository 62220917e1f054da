//! The plugin's settings, parsed from a key lookup so that the rules can be
//! tested natively (the real lookup, `wimguard_sdk::config::get`, is a host
//! import that only exists in the component).

use std::fmt;

use wimguard_sdk::InitError;

/// Default for `timeout-ms`.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Where to send events, split the way wasi:http wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub https: bool,
    /// `host[:port]`.
    pub authority: String,
    /// Path and query, starting with `/`; the fragment is dropped (it is
    /// never sent over the wire anyway).
    pub path_with_query: String,
}

/// Validated settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The URL as configured, for messages.
    pub url: String,
    pub target: Target,
    pub pre_backup: bool,
    pub post_backup: bool,
    /// Events of later 1.x minors: sent only when `events` is not set, since
    /// an explicit list can only name the events known today.
    pub other_events: bool,
    pub timeout_ms: u64,
    pub require_delivery: bool,
    /// Bearer token (a bound secret).
    pub token: Option<String>,
}

// Hand-written so the token can never end up in a log line through `{:?}`.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("pre_backup", &self.pre_backup)
            .field("post_backup", &self.post_backup)
            .field("other_events", &self.other_events)
            .field("timeout_ms", &self.timeout_ms)
            .field("require_delivery", &self.require_delivery)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

fn bad(message: String) -> InitError {
    InitError::BadConfig(message)
}

impl Settings {
    /// Reads and validates every setting through `get` (key → value).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, InitError> {
        let url = get("url")
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| bad("missing setting `url` (the http:// or https:// address to POST events to)".into()))?;
        let target = parse_url(&url).map_err(|why| bad(format!("setting `url`: {why}")))?;

        let (pre_backup, post_backup, other_events) = match get("events") {
            None => (true, true, true),
            Some(list) => {
                let (mut pre, mut post) = (false, false);
                for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    match name {
                        "pre-backup" => pre = true,
                        "post-backup" => post = true,
                        _ => {
                            return Err(bad(format!(
                                "setting `events`: unknown event `{name}` (known: pre-backup, post-backup)"
                            )))
                        }
                    }
                }
                if !pre && !post {
                    return Err(bad(
                        "setting `events` names no event (use pre-backup, post-backup or both)".into(),
                    ));
                }
                (pre, post, false)
            }
        };

        let timeout_ms = match get("timeout-ms") {
            None => DEFAULT_TIMEOUT_MS,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => n,
                _ => {
                    return Err(bad(format!(
                        "setting `timeout-ms` must be a whole number of milliseconds >= 1, got `{v}`"
                    )))
                }
            },
        };

        let require_delivery = match get("require-delivery") {
            None => false,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(bad(format!(
                        "setting `require-delivery` must be `true` or `false`, got `{v}`"
                    )))
                }
            },
        };

        let token = match get("token") {
            None => None,
            // The value is a secret: the message describes it, never shows it.
            Some(t) if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(bad(
                    "secret `token` must be non-empty printable ASCII without spaces".into()
                ))
            }
            Some(t) => Some(t),
        };

        Ok(Settings {
            url,
            target,
            pre_backup,
            post_backup,
            other_events,
            timeout_ms,
            require_delivery,
            token,
        })
    }

    /// The timeout in nanoseconds, the unit of wasi:clocks durations.
    pub fn timeout_ns(&self) -> u64 {
        self.timeout_ms.saturating_mul(1_000_000)
    }
}

/// Splits an `http://` or `https://` URL into scheme, authority and path.
/// Only what wasi:http needs is checked; the host does the rest (DNS, its
/// allow-list).
pub fn parse_url(url: &str) -> Result<Target, String> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let (https, rest) = if lower.starts_with("https://") {
        (true, &url[8..])
    } else if lower.starts_with("http://") {
        (false, &url[7..])
    } else {
        return Err(format!("must start with http:// or https://, got `{url}`"));
    };
    if let Some(bad) = rest.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("contains the character {bad:?}"));
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() {
        return Err("has no host".into());
    }
    // Credentials in the URL would end up in logs and error messages.
    if authority.contains('@') {
        return Err("must not contain user:password@ (use the secret `token`)".into());
    }
    // A port, if any, follows the last ':' outside an IPv6 literal.
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    if let Some(colon) = authority[host_end..].rfind(':') {
        let port = &authority[host_end + colon + 1..];
        if port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!("has an invalid port `{port}`"));
        }
        if host_end + colon == 0 {
            return Err("has no host".into());
        }
    }
    let tail = tail.split('#').next().unwrap_or("");
    let path_with_query = match tail.as_bytes().first() {
        None => "/".to_string(),
        Some(b'?') => format!("/{tail}"),
        Some(_) => tail.to_string(),
    };
    Ok(Target {
        https,
        authority: authority.to_string(),
        path_with_query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Settings, InitError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    fn bad_config(r: Result<Settings, InitError>) -> String {
        match r {
            Err(InitError::BadConfig(m)) => m,
            other => panic!("expected BadConfig, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let s = parse(&[("url", "https://hooks.example.com/wimguard?x=1")]).unwrap();
        assert!(s.pre_backup && s.post_backup && s.other_events);
        assert_eq!(s.timeout_ms, 10_000);
        assert_eq!(s.timeout_ns(), 10_000_000_000);
        assert!(!s.require_delivery);
        assert_eq!(s.token, None);
        assert_eq!(
            s.target,
            Target {
                https: true,
                authority: "hooks.example.com".into(),
                path_with_query: "/wimguard?x=1".into()
            }
        );
    }

    #[test]
    fn all_settings() {
        let s = parse(&[
            ("url", " HTTP://10.0.0.5:8080 "),
            ("events", " post-backup , "),
            ("timeout-ms", "2500"),
            ("require-delivery", "TRUE"),
            ("token", "s3cr3t-T0ken"),
        ])
        .unwrap();
        assert_eq!(s.url, "HTTP://10.0.0.5:8080");
        assert_eq!(
            s.target,
            Target {
                https: false,
                authority: "10.0.0.5:8080".into(),
                path_with_query: "/".into()
            }
        );
        assert!(!s.pre_backup && s.post_backup && !s.other_events);
        assert_eq!(s.timeout_ms, 2500);
        assert!(s.require_delivery);
        assert_eq!(s.token.as_deref(), Some("s3cr3t-T0ken"));
        assert!(!format!("{s:?}").contains("s3cr3t"), "Debug must redact the token");
        let s = parse(&[
            ("url", "http://h"),
            ("events", "pre-backup,post-backup"),
            ("require-delivery", "false"),
        ]);
        let s = s.unwrap();
        assert!(s.pre_backup && s.post_backup && !s.require_delivery);
    }

    #[test]
    fn bad_settings_name_the_key() {
        for url in [
            None,
            Some(""),
            Some("ftp://x/"),
            Some("hooks.example.com"),
            Some("https://"),
            Some("http:///p"),
        ] {
            let pairs: Vec<(&str, &str)> = url.map(|u| ("url", u)).into_iter().collect();
            assert!(bad_config(parse(&pairs)).contains("`url`"), "{url:?}");
        }
        for url in [
            "https://u:p@host/",
            "http://host:0/",
            "http://host:99999/",
            "http://a b/",
            "http://:80/",
        ] {
            assert!(bad_config(parse(&[("url", url)])).contains("`url`"), "{url}");
        }
        let ok = ("url", "http://h/");
        assert!(bad_config(parse(&[ok, ("events", "pre-backup,start")])).contains("`events`"));
        assert!(bad_config(parse(&[ok, ("events", " , ")])).contains("`events`"));
        assert!(bad_config(parse(&[ok, ("timeout-ms", "0")])).contains("`timeout-ms`"));
        assert!(bad_config(parse(&[ok, ("timeout-ms", "10s")])).contains("`timeout-ms`"));
        assert!(bad_config(parse(&[ok, ("require-delivery", "yes")])).contains("`require-delivery`"));
        let m = bad_config(parse(&[ok, ("token", "has space\r\n")]));
        assert!(m.contains("`token`") && !m.contains("has space"));
    }

    #[test]
    fn urls() {
        let t = parse_url("https://[::1]:8443?q=1#frag").unwrap();
        assert_eq!(
            t,
            Target {
                https: true,
                authority: "[::1]:8443".into(),
                path_with_query: "/?q=1".into()
            }
        );
        let t = parse_url("http://example.com/a/b#x").unwrap();
        assert_eq!(t.path_with_query, "/a/b");
        assert!(parse_url("https://[::1]/").is_ok());
    }
}
