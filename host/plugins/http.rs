//! Outgoing HTTP for plugins (`wasi:http`), deny by default: every request
//! is checked against the plugin's `allowedHosts` before a connection is
//! made. Denials are logged and remembered, so the error of a call that
//! failed because of one can say so.

use std::sync::{Arc, Mutex};

use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// One entry of `allowedHosts`: `host`, `host:port`, `*.domain` or
/// `*.domain:port`; IPv6 literals in brackets (`[::1]:8080`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase host, without a leading `*.` (see `subdomains`).
    host: String,
    port: Option<u16>,
    /// `*.domain`: any host strictly below `domain`.
    subdomains: bool,
}

impl HostPattern {
    /// Parses one allow-list entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<HostPattern, String> {
        let e = entry.trim().to_ascii_lowercase();
        if e.is_empty() || e.contains('/') || e.contains('@') {
            return Err(format!(
                "allowed host {entry:?} is not a host name (write `example.com` or `example.com:8443`, no scheme or path)"
            ));
        }
        let (host, port) = if let Some(rest) = e.strip_prefix('[') {
            let end = rest
                .find(']')
                .ok_or_else(|| format!("allowed host {entry:?}: missing `]`"))?;
            let port = match &rest[end + 1..] {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("allowed host {entry:?}: bad port"))?,
                ),
            };
            (format!("[{}]", &rest[..end]), port)
        } else {
            match e.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(format!(
                        "allowed host {entry:?}: write IPv6 addresses in brackets (`[::1]` or `[::1]:8080`)"
                    ))
                }
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (e.clone(), None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| format!("allowed host {entry:?}: bad port {p:?}"))
            })
            .transpose()?;
        let (host, subdomains) = match host.strip_prefix("*.") {
            Some(h) => (h.to_string(), true),
            None => (host, false),
        };
        if host.is_empty() || host.contains('*') {
            return Err(format!(
                "allowed host {entry:?}: only a leading `*.` wildcard is allowed"
            ));
        }
        Ok(HostPattern { host, port, subdomains })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.port.is_some_and(|p| p != port) {
            return false;
        }
        if self.subdomains {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

/// The HTTP policy of one plugin instance.
#[derive(Clone)]
pub struct HttpPolicy {
    plugin: Arc<str>,
    allowed: Arc<Vec<HostPattern>>,
    /// Requests refused during the current call ("METHOD uri").
    denied: Arc<Mutex<Vec<String>>>,
}

impl HttpPolicy {
    /// The policy of `plugin`; how long its requests may take is bounded
    /// by the call they belong to (see `run_bounded`), not here.
    pub fn new(plugin: Arc<str>, allowed: Arc<Vec<HostPattern>>) -> Self {
        HttpPolicy {
            plugin,
            allowed,
            denied: Arc::default(),
        }
    }

    /// No outgoing request at all (codecs).
    pub fn deny_all(plugin: Arc<str>) -> Self {
        Self::new(plugin, Arc::new(Vec::new()))
    }

    /// Is a request to `uri` allowed?
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let host = host.to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
                443
            } else {
                80
            });
        self.allowed.iter().any(|p| p.matches(&host, port))
    }

    /// Takes the requests refused since the last call.
    pub fn take_denied(&self) -> Vec<String> {
        std::mem::take(&mut *self.denied.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

type ResponseFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        if !self.allows(request.uri()) {
            let what = format!("{} {}", request.method(), request.uri());
            tracing::warn!(
                target: "wimguard::plugin",
                plugin = &*self.plugin,
                "refused HTTP request {what}: host not in the plugin's allowedHosts"
            );
            self.denied.lock().unwrap_or_else(|p| p.into_inner()).push(what);
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        tracing::debug!(target: "wimguard::plugin", plugin = &*self.plugin, "HTTP {} {}", request.method(), request.uri());
        _ = fut;
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                res.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn std::future::Future<Output = Result<(), HttpError>> + Send>,
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> HttpPolicy {
        let p = entries.iter().map(|e| HostPattern::parse(e).unwrap()).collect();
        HttpPolicy::new("t".into(), Arc::new(p))
    }

    #[test]
    fn allow_list_matching() {
        let p = policy(&["hooks.example.com", "127.0.0.1:8080", "*.corp.example", "[::1]:9"]);
        let ok = |u: &str| p.allows(&u.parse().unwrap());
        assert!(ok("https://hooks.example.com/x"));
        assert!(ok("http://HOOKS.example.com:81/x"));
        assert!(ok("http://127.0.0.1:8080/"));
        assert!(!ok("http://127.0.0.1:8081/"));
        assert!(!ok("http://127.0.0.1/"));
        assert!(ok("https://a.b.corp.example/"));
        assert!(!ok("https://corp.example/"));
        assert!(!ok("https://evilcorp.example/"));
        assert!(!ok("https://hooks.example.com.evil.net/"));
        assert!(ok("http://[::1]:9/"));
        assert!(!policy(&[]).allows(&"http://localhost/".parse().unwrap()));
    }

    #[test]
    fn bad_entries_are_explained() {
        for bad in [
            "",
            "http://x.com",
            "a.com/path",
            "*.",
            "a.*.com",
            "x.com:http",
            "u@x.com",
            "::1",
            "fe80::1:80",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
