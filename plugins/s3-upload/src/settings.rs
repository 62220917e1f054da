//! The plugin's settings, parsed from a key lookup so that the rules can be
//! tested natively (the real lookup, `wimguard_sdk::config::get`, is a host
//! import that only exists in the component).

use std::fmt;
use std::time::Duration;

use rusty_s3::{Bucket, Credentials, UrlStyle};
use url::Url;
use wimguard_sdk::InitError;

/// Default `region`.
pub const DEFAULT_REGION: &str = "us-east-1";
/// Default `requestTimeoutSeconds`.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 60;
/// Default `maxRetrySeconds`.
pub const DEFAULT_MAX_RETRY_SECS: u64 = 120;
/// Default (and largest) `listPageSize`: what S3 returns at most per page.
pub const MAX_LIST_PAGE: usize = 1000;

/// Validated settings.
#[derive(Clone)]
pub struct Settings {
    /// The endpoint as configured (for messages), without a trailing `/`.
    pub endpoint: String,
    pub bucket_name: String,
    pub region: String,
    /// Without leading or trailing `/`; may be empty.
    pub prefix: String,
    pub path_style: bool,
    /// Where requests go; builds the URLs of objects.
    pub bucket: Bucket,
    pub credentials: Credentials,
    /// Connect, first-byte and between-bytes timeout of one request (a
    /// request body adds time for itself, see `Settings::request_timeout`).
    pub request_timeout: Duration,
    /// How long one operation may keep retrying.
    pub max_retry: Duration,
    pub list_page_size: usize,
}

// Hand-written so that no secret can end up in a log line through `{:?}`.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket_name)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("request_timeout", &self.request_timeout)
            .field("max_retry", &self.max_retry)
            .field("list_page_size", &self.list_page_size)
            .finish_non_exhaustive()
    }
}

fn bad(message: String) -> InitError {
    InitError::BadConfig(message)
}

/// A trimmed, non-empty value of `key`, if set.
fn value(get: &impl Fn(&str) -> Option<String>, key: &str) -> Option<String> {
    get(key).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn number(get: &impl Fn(&str) -> Option<String>, key: &str, default: u64, range: (u64, u64)) -> Result<u64, InitError> {
    let Some(v) = value(get, key) else { return Ok(default) };
    match v.parse::<u64>() {
        Ok(n) if (range.0..=range.1).contains(&n) => Ok(n),
        _ => Err(bad(format!(
            "setting `{key}` must be a whole number from {} to {}, not `{v}`",
            range.0, range.1
        ))),
    }
}

/// A secret's value must be printable ASCII without spaces (it goes into
/// request lines); the message never shows the value.
fn secret(get: &impl Fn(&str) -> Option<String>, key: &str, what: &str) -> Result<Option<String>, InitError> {
    let Some(v) = value(get, key) else { return Ok(None) };
    if !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(format!(
            "secret `{key}` ({what}) contains spaces or characters outside printable ASCII"
        )));
    }
    Ok(Some(v))
}

impl Settings {
    /// Reads and validates every setting through `get` (key → value).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Settings, InitError> {
        let endpoint = value(&get, "endpoint").ok_or_else(|| {
            bad("missing setting `endpoint` (the http:// or https:// address of the S3 service)".into())
        })?;
        let url = parse_endpoint(&endpoint).map_err(|why| bad(format!("setting `endpoint`: {why}")))?;
        let bucket_name = value(&get, "bucket")
            .ok_or_else(|| bad("missing setting `bucket` (the name of the bucket to store archives in)".into()))?;
        check_bucket_name(&bucket_name).map_err(|why| bad(format!("setting `bucket`: {why}")))?;
        let region = value(&get, "region").unwrap_or_else(|| DEFAULT_REGION.to_string());
        if !region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad(format!(
                "setting `region` must be a region name like `{DEFAULT_REGION}`, not `{region}`"
            )));
        }
        let prefix = get("prefix").unwrap_or_default();
        let prefix = normalize_prefix(&prefix).map_err(|why| bad(format!("setting `prefix`: {why}")))?;
        let path_style = match value(&get, "pathStyle").map(|v| v.to_ascii_lowercase()) {
            None => default_path_style(&url),
            Some(v) if v == "true" => true,
            Some(v) if v == "false" => false,
            Some(v) => return Err(bad(format!("setting `pathStyle` must be true or false, not `{v}`"))),
        };
        let style = if path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(url, style, bucket_name.clone(), region.clone()).map_err(|e| {
            let hint = if path_style {
                String::new()
            } else {
                " (virtual-host style puts the bucket name into the host name; set `pathStyle: true` for \
                 endpoints that are addresses or whose buckets are not valid host names)"
                    .to_string()
            };
            bad(format!(
                "settings `endpoint` and `bucket`: no URL for bucket `{bucket_name}` at {endpoint}: {e:?}{hint}"
            ))
        })?;
        let key_id = secret(&get, "accessKeyId", "the access key id")?.ok_or_else(|| {
            bad("missing secret `accessKeyId` (bind it to an environment variable under `secrets:`)".into())
        })?;
        let secret_key = secret(&get, "secretAccessKey", "the secret access key")?.ok_or_else(|| {
            bad("missing secret `secretAccessKey` (bind it to an environment variable under `secrets:`)".into())
        })?;
        let credentials = match secret(&get, "sessionToken", "the session token")? {
            Some(token) => Credentials::new_with_token(key_id, secret_key, token),
            None => Credentials::new(key_id, secret_key),
        };
        let request_timeout = Duration::from_secs(number(
            &get,
            "requestTimeoutSeconds",
            DEFAULT_REQUEST_TIMEOUT_SECS,
            (1, 3600),
        )?);
        let max_retry = Duration::from_secs(number(&get, "maxRetrySeconds", DEFAULT_MAX_RETRY_SECS, (0, 86_400))?);
        let list_page_size = number(&get, "listPageSize", MAX_LIST_PAGE as u64, (1, MAX_LIST_PAGE as u64))? as usize;
        Ok(Settings {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bucket_name,
            region,
            prefix,
            path_style,
            bucket,
            credentials,
            request_timeout,
            max_retry,
            list_page_size,
        })
    }

    /// The object key of the host's relative `key`: `PREFIX/key`.
    pub fn object_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The host's relative key of an object key under the prefix.
    pub fn relative_key<'a>(&self, object_key: &'a str) -> Option<&'a str> {
        if self.prefix.is_empty() {
            Some(object_key)
        } else {
            object_key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }

    /// How long one request may wait without progress: the configured
    /// timeout, plus one second per 256 KiB of request body (the answer to
    /// an upload only starts once the body is sent).
    pub fn request_timeout(&self, body_len: usize) -> Duration {
        self.request_timeout + Duration::from_secs((body_len as u64) >> 18)
    }
}

/// Path style unless the endpoint is a plain host name: an address (which
/// cannot take the bucket as a subdomain), `localhost`, or an explicit port
/// (a self-hosted service: MinIO, Ceph, s3s, Garage... default to paths).
pub fn default_path_style(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost") || url.port().is_some(),
        _ => true,
    }
}

/// The endpoint as a URL: http or https, a host, no credentials, query or fragment.
pub fn parse_endpoint(endpoint: &str) -> Result<Url, String> {
    let url = Url::parse(endpoint).map_err(|e| format!("`{endpoint}` is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("must start with http:// or https://, got `{endpoint}`"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{endpoint}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain user:password@ (use the secrets `accessKeyId` and `secretAccessKey`)".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{endpoint}` must not have a query or fragment"));
    }
    Ok(url)
}

/// S3's naming rules, loosely: 3..=63 of lowercase letters, digits, `.`
/// and `-` (some S3 services also allow `_` and capitals; those are let
/// through so that they keep working).
fn check_bucket_name(name: &str) -> Result<(), String> {
    if !(3..=63).contains(&name.len()) {
        return Err(format!("`{name}` must be 3 to 63 characters long"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(format!(
            "`{name}` may only contain letters, digits, `.`, `-` and `_` (not a path: use `prefix` for folders)"
        ));
    }
    Ok(())
}

/// `prefix` without leading and trailing `/`, checked for empty segments
/// and control characters.
fn normalize_prefix(prefix: &str) -> Result<String, String> {
    let p = prefix.trim().trim_matches('/');
    if p.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    if p.split('/').any(|s| s.is_empty() || s == "." || s == "..") && !p.is_empty() {
        return Err(format!("`{prefix}` has an empty, `.` or `..` segment"));
    }
    if p.len() > 512 {
        return Err("is longer than 512 bytes".into());
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> Result<Settings, InitError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: [(&str, &str); 4] = [
        ("endpoint", "http://127.0.0.1:9000"),
        ("bucket", "backups"),
        ("accessKeyId", "AKIDEXAMPLE"),
        ("secretAccessKey", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
            .collect();
        v.extend_from_slice(extra);
        v
    }

    fn bad_config(r: Result<Settings, InitError>) -> String {
        match r {
            Err(InitError::BadConfig(m)) => m,
            Err(other) => panic!("expected BadConfig, got {other:?}"),
            Ok(s) => panic!("expected BadConfig, got {s:?}"),
        }
    }

    #[test]
    fn defaults() {
        let s = parse(&BASE).unwrap();
        assert_eq!(s.endpoint, "http://127.0.0.1:9000");
        assert_eq!(s.region, "us-east-1");
        assert_eq!(s.prefix, "");
        assert!(s.path_style, "an address takes path style");
        assert_eq!(s.request_timeout, Duration::from_secs(60));
        assert_eq!(s.max_retry, Duration::from_secs(120));
        assert_eq!(s.list_page_size, 1000);
        assert_eq!(s.object_key("a/000001.wim"), "a/000001.wim");
        assert_eq!(
            s.bucket.object_url("a/1.wim").as_str(),
            "http://127.0.0.1:9000/backups/a/1.wim"
        );
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("EXAMPLEKEY") && !debug.contains("AKIDEXAMPLE"),
            "{debug}"
        );
    }

    #[test]
    fn styles_and_prefix() {
        let s = parse(&with(&[
            ("endpoint", "https://s3.eu-west-1.amazonaws.com/"),
            ("region", "eu-west-1"),
            ("prefix", "/team/wimguard/"),
            ("sessionToken", "tok"),
        ]))
        .unwrap();
        assert!(!s.path_style, "a host name without a port takes virtual-host style");
        assert_eq!(s.endpoint, "https://s3.eu-west-1.amazonaws.com");
        assert_eq!(s.prefix, "team/wimguard");
        assert_eq!(s.object_key("n/000001.wim"), "team/wimguard/n/000001.wim");
        assert_eq!(s.relative_key("team/wimguard/n/000001.wim"), Some("n/000001.wim"));
        assert_eq!(s.relative_key("team/wimguardx/n"), None);
        assert_eq!(
            s.bucket.object_url("n/1.wim").as_str(),
            "https://backups.s3.eu-west-1.amazonaws.com/n/1.wim"
        );
        assert_eq!(s.credentials.token(), Some("tok"));
        for (endpoint, path) in [
            ("http://localhost", true),
            ("http://minio.lan:9000", true),
            ("https://[::1]", true),
            ("https://storage.example.com", false),
        ] {
            let s = parse(&with(&[("endpoint", endpoint)])).unwrap();
            assert_eq!(s.path_style, path, "{endpoint}");
        }
        let s = parse(&with(&[
            ("endpoint", "https://storage.example.com"),
            ("pathStyle", "TRUE"),
        ]))
        .unwrap();
        assert!(s.path_style);
        assert_eq!(
            s.bucket.object_url("k").as_str(),
            "https://storage.example.com/backups/k"
        );
    }

    #[test]
    fn bad_settings_name_the_key() {
        let without = |key: &str| -> Vec<(&str, &str)> { BASE.iter().copied().filter(|(k, _)| *k != key).collect() };
        for key in ["endpoint", "bucket", "accessKeyId", "secretAccessKey"] {
            assert!(bad_config(parse(&without(key))).contains(&format!("`{key}`")), "{key}");
        }
        for (key, value) in [
            ("endpoint", "ftp://x/"),
            ("endpoint", "s3.example.com"),
            ("endpoint", "http://u:p@h/"),
            ("endpoint", "http://h/?x=1"),
            ("bucket", "a/b"),
            ("bucket", "ab"),
            ("region", "eu west"),
            ("prefix", "a//b"),
            ("prefix", "a/../b"),
            ("pathStyle", "yes"),
            ("requestTimeoutSeconds", "0"),
            ("maxRetrySeconds", "-1"),
            ("listPageSize", "1001"),
        ] {
            let m = bad_config(parse(&with(&[(key, value)])));
            assert!(m.contains(&format!("`{key}`")), "{key}={value}: {m}");
        }
        let m = bad_config(parse(&with(&[("secretAccessKey", "has space")])));
        assert!(m.contains("`secretAccessKey`") && !m.contains("has space"), "{m}");
        // Virtual-host style cannot put a bucket in front of an address.
        let m = bad_config(parse(&with(&[("pathStyle", "false")])));
        assert!(m.contains("pathStyle: true"), "{m}");
    }

    #[test]
    fn request_timeout_grows_with_the_body() {
        let s = parse(&with(&[("requestTimeoutSeconds", "10")])).unwrap();
        assert_eq!(s.request_timeout(0), Duration::from_secs(10));
        assert_eq!(s.request_timeout(16 << 20), Duration::from_secs(10 + 64));
    }
}
