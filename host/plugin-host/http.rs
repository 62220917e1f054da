//! Outgoing HTTP for plugins (`wasi:http`), deny by default: every request
//! is checked against the plugin's `allowedHosts` before a connection is
//! made, and a host *name* must resolve to public addresses only (DNS
//! rebinding: a name the admin allowed must not lead the plugin to
//! loopback or the internal network) unless the entry is the IP literal
//! itself or the plugin has `allowPrivate: true`. The name is resolved
//! once, and the connection goes to exactly the addresses that were
//! checked. Denials are logged and remembered, so the error of a call that
//! failed because of one can say so.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
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

    /// Whether a request to `host`:`port` is allowed; an entry without a
    /// port allows only the scheme's own (`default_port`: 80 or 443), so
    /// `10.0.0.5` does not open that machine's SSH or gRPC ports.
    fn matches(&self, host: &str, port: u16, default_port: u16) -> bool {
        if self.port.unwrap_or(default_port) != port {
            return false;
        }
        if self.subdomains {
            // `*.0.1` is no way to allow 127.0.0.1: addresses match only
            // when written out.
            if ip_literal(host).is_some() {
                return false;
            }
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }
}

/// The IP address a URI host (`127.0.0.1`, `[::1]`) spells, if it is one.
fn ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.parse().ok()
}

/// What kind of non-public address `ip` is (loopback, private, link-local,
/// ...), or `None` for an address on the public internet. IPv4 addresses
/// embedded in IPv6 ones (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`) are judged by the IPv4 address they lead to.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        (0, _) => "unspecified (this-network)",
        (127, _) => "loopback",
        (10, _) | (192, 168) => "private",
        (172, b) if (16..32).contains(&b) => "private",
        (100, b) if (64..128).contains(&b) => "shared (carrier-grade NAT)",
        (169, 254) => "link-local",
        (224..=239, _) => "multicast",
        (240..=255, _) => "reserved",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let s = ip.segments();
    let embedded = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-mapped and IPv4-compatible addresses.
        [0, 0, 0, 0, 0, 0xffff, ..] | [0, 0, 0, 0, 0, 0, ..] => non_public_v4(embedded()),
        // The NAT64 well-known prefix: the gateway connects to the IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => non_public_v4(embedded()),
        [x, ..] if x & 0xfe00 == 0xfc00 => Some("unique-local"),
        [x, ..] if x & 0xffc0 == 0xfe80 => Some("link-local"),
        [x, ..] if x & 0xffc0 == 0xfec0 => Some("site-local"),
        [x, ..] if x & 0xff00 == 0xff00 => Some("multicast"),
        _ => None,
    }
}

/// The HTTP policy of one plugin instance.
#[derive(Clone)]
pub struct HttpPolicy {
    plugin: Arc<str>,
    allowed: Arc<Vec<HostPattern>>,
    /// May allowed host names lead to non-public addresses?
    allow_private: bool,
    /// Requests refused during the current call ("METHOD uri (why)").
    denied: Arc<Mutex<Vec<String>>>,
}

impl HttpPolicy {
    /// The policy of `plugin`; how long its requests may take is bounded
    /// by the call they belong to (see `run_bounded`), not here.
    pub fn new(plugin: Arc<str>, allowed: Arc<Vec<HostPattern>>, allow_private: bool) -> Self {
        HttpPolicy {
            plugin,
            allowed,
            allow_private,
            denied: Arc::default(),
        }
    }

    /// No outgoing request at all (codecs).
    pub fn deny_all(plugin: Arc<str>) -> Self {
        Self::new(plugin, Arc::new(Vec::new()), false)
    }

    /// Is a request to `uri` allowed by the allow-list? (Where a host name
    /// then leads is checked when connecting.)
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else { return false };
        let host = host.to_ascii_lowercase();
        let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        };
        self.allowed
            .iter()
            .any(|p| p.matches(&host, port_of(uri), default_port))
    }

    /// Takes the requests refused since the last call, each with the reason.
    pub fn take_denied(&self) -> Vec<String> {
        std::mem::take(&mut *self.denied.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Logs and remembers a refused request.
    fn deny(&self, what: &str, why: &str) {
        tracing::warn!(target: "wimguard::plugin", plugin = &*self.plugin, "refused HTTP request {what}: {why}");
        self.denied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{what} ({why})"));
    }

    /// The addresses a request to `uri` may connect to: an IP literal as
    /// written (the allow-list named it), a host name resolved once and
    /// refused when any address it resolves to is not public (unless
    /// `allowPrivate`). The caller connects to exactly these addresses.
    async fn addresses(&self, uri: &http::Uri, what: &str) -> Result<Vec<SocketAddr>, HttpError> {
        let host = uri.host().ok_or(HttpError::HttpRequestUriInvalid)?;
        let port = port_of(uri);
        if let Some(ip) = ip_literal(host) {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| HttpError::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(HttpError::DestinationNotFound);
        }
        if !self.allow_private {
            if let Some((addr, kind)) = addrs.iter().find_map(|a| non_public(a.ip()).map(|k| (a.ip(), k))) {
                self.deny(
                    what,
                    &format!(
                        "{host} resolved to {addr}, a {kind} address; a host name in allowedHosts may only lead to \
                         public addresses (DNS rebinding protection): list the address itself, or set \
                         allowPrivate: true for this plugin"
                    ),
                );
                return Err(HttpError::DestinationIpProhibited);
            }
        }
        Ok(addrs)
    }

    /// Sends `request` over a connection to the checked addresses of its
    /// host (TLS for `https`, verified against the host name and the
    /// webpki roots), honouring the guest's connect and first-byte
    /// timeouts when it set them.
    async fn send(
        self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        what: String,
    ) -> Result<(http::Response<WasiBody>, IoFuture), HttpError> {
        let uri = request.uri().clone();
        let addrs = self.addresses(&uri, &what).await?;
        let connect_timeout = options.and_then(|o| o.connect_timeout);
        let first_byte_timeout = options.and_then(|o| o.first_byte_timeout);
        let stream = bounded(connect_timeout, HttpError::ConnectionTimeout, async {
            let tcp = tokio::net::TcpStream::connect(&addrs[..])
                .await
                .map_err(HttpError::Connect)?;
            let stream: Box<dyn Stream> = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
                let host = uri.host().unwrap_or_default();
                let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
                let name = rustls::pki_types::ServerName::try_from(bare.to_string()).map_err(|e| {
                    HttpError::Tls(std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
                })?;
                let tls = tokio_rustls::TlsConnector::from(tls_config())
                    .connect(name, tcp)
                    .await
                    .map_err(HttpError::Tls)?;
                Box::new(tls)
            } else {
                Box::new(tcp)
            };
            Ok(stream)
        })
        .await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The connection is made: the request line carries only the path.
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = target.parse().map_err(|_| HttpError::HttpRequestUriInvalid)?;
        // The connection does the I/O: drive it while waiting for the head.
        let mut conn = Box::pin(conn);
        let mut conn_done = false;
        let response = bounded(first_byte_timeout, HttpError::ConnectionReadTimeout, async {
            let send = sender.send_request(request);
            tokio::pin!(send);
            tokio::select! {
                r = &mut send => Ok(r?),
                c = &mut conn => {
                    conn_done = true;
                    c?;
                    Ok(send.await?)
                }
            }
        })
        .await?;
        let io: IoFuture = if conn_done {
            Box::new(std::future::ready(Ok(())))
        } else {
            Box::new(async move { conn.await.map_err(HttpError::from) })
        };
        Ok((response.map(|b| b.map_err(HttpError::from).boxed_unsync()), io))
    }
}

/// The port a request to `uri` goes to (80/443 by scheme when not written).
fn port_of(uri: &http::Uri) -> u16 {
    uri.port_u16()
        .unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
            443
        } else {
            80
        })
}

/// A plain or TLS connection.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// TLS for plugin requests: the webpki roots, the ring provider.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default TLS versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// `fut`, failing with `on_timeout` after `limit` when there is one.
async fn bounded<T>(
    limit: Option<Duration>,
    on_timeout: HttpError,
    fut: impl Future<Output = Result<T, HttpError>>,
) -> Result<T, HttpError> {
    match limit {
        Some(limit) => tokio::time::timeout(limit, fut).await.map_err(|_| on_timeout)?,
        None => fut.await,
    }
}

/// What drives a connection after its response head arrived.
type IoFuture = Box<dyn Future<Output = Result<(), HttpError>> + Send>;

type ResponseFuture = Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), HttpError>> + Send>;

/// A request's URI as logs and messages may show it: no query (a presigned
/// URL's query is a credential anyone holding the log could replay) and no
/// user info.
fn loggable(uri: &http::Uri) -> String {
    let authority = uri.authority().map_or("", |a| {
        let a = a.as_str();
        a.rsplit_once('@').map_or(a, |(_, host)| host)
    });
    let scheme = uri.scheme_str().map(|s| format!("{s}://")).unwrap_or_default();
    let query = if uri.query().is_some() { "?…" } else { "" };
    format!("{scheme}{authority}{}{query}", uri.path())
}

impl WasiHttpHooks for HttpPolicy {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: IoFuture,
    ) -> ResponseFuture {
        _ = fut;
        let what = format!("{} {}", request.method(), loggable(request.uri()));
        if !self.allows(request.uri()) {
            self.deny(&what, "host not in allowedHosts");
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        tracing::debug!(target: "wimguard::plugin", plugin = &*self.plugin, "HTTP {what}");
        Box::new(self.clone().send(request, options, what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logs never carry a presigned URL's signature or a URL's password.
    #[test]
    fn loggable_uris_keep_no_query_and_no_user_info() {
        let uri: http::Uri = "http://user:pw@s3.example.com:9000/bucket/k.wim?X-Amz-Signature=abc&X-Amz-Credential=AK"
            .parse()
            .unwrap();
        assert_eq!(loggable(&uri), "http://s3.example.com:9000/bucket/k.wim?…");
        let uri: http::Uri = "https://hooks.example.com/h".parse().unwrap();
        assert_eq!(loggable(&uri), "https://hooks.example.com/h");
    }

    fn policy(entries: &[&str]) -> HttpPolicy {
        let p = entries.iter().map(|e| HostPattern::parse(e).unwrap()).collect();
        HttpPolicy::new("t".into(), Arc::new(p), false)
    }

    #[test]
    fn allow_list_matching() {
        let p = policy(&["hooks.example.com", "127.0.0.1:8080", "*.corp.example", "[::1]:9"]);
        let ok = |u: &str| p.allows(&u.parse().unwrap());
        assert!(ok("https://hooks.example.com/x"));
        assert!(ok("http://HOOKS.example.com/x"));
        // No port in the entry: the scheme's own only.
        assert!(!ok("http://HOOKS.example.com:81/x"));
        assert!(!ok("http://hooks.example.com:443/x"));
        assert!(!ok("https://a.corp.example:22/"));
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
    fn wildcards_never_match_addresses() {
        let p = policy(&["*.0.1", "*.0.0.1:80", "*.1"]);
        for u in ["http://127.0.0.1/", "http://10.0.0.1/", "http://[::1]/"] {
            assert!(!p.allows(&u.parse().unwrap()), "{u}");
        }
    }

    #[test]
    fn non_public_addresses_are_named() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified (this-network)"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.254", "shared (carrier-grade NAT)"),
            ("169.254.169.254", "link-local"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::10.0.0.1", "private"),
            ("fc00::1", "unique-local"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), Some(kind), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.253.0.1",
            "203.0.113.9",
            "2001:db8::1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[test]
    fn names_that_resolve_to_private_addresses_are_refused_unless_allowed() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let uri: http::Uri = "http://localhost:9/x".parse().unwrap();
        // A name: resolved, and refused for where it leads.
        let p = policy(&["localhost:9"]);
        let e = rt.block_on(p.addresses(&uri, "GET http://localhost:9/x")).unwrap_err();
        assert!(matches!(e, HttpError::DestinationIpProhibited), "{e:?}");
        let denied = p.take_denied();
        assert_eq!(denied.len(), 1, "{denied:?}");
        assert!(
            denied[0].contains("localhost resolved to") && denied[0].contains("loopback address"),
            "{denied:?}"
        );
        assert!(denied[0].contains("DNS rebinding"), "{denied:?}");
        // The same name with allowPrivate: the checked addresses, all loopback.
        let p = HttpPolicy::new(
            "t".into(),
            Arc::new(vec![HostPattern::parse("localhost:9").unwrap()]),
            true,
        );
        let addrs = rt.block_on(p.addresses(&uri, "GET")).unwrap();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 9));
        // An address written out is taken as written.
        let p = policy(&["127.0.0.1:9"]);
        let addrs = rt
            .block_on(p.addresses(&"http://127.0.0.1:9/".parse().unwrap(), "GET"))
            .unwrap();
        assert_eq!(addrs, ["127.0.0.1:9".parse().unwrap()]);
        assert!(p.take_denied().is_empty());
    }

    #[test]
    fn https_checks_the_certificate_against_the_public_roots() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // A TLS server whose self-signed certificate no public root vouches for.
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.cert.der().clone()], key)
                .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
            let server = tokio::spawn(async move {
                let (tcp, _) = listener.accept().await.unwrap();
                acceptor.accept(tcp).await.map(drop)
            });
            let url = format!("https://127.0.0.1:{port}/x");
            let body = http_body_util::Empty::new()
                .map_err(|never: std::convert::Infallible| match never {})
                .boxed_unsync();
            let request = http::Request::get(&url).body(body).unwrap();
            let p = policy(&[&format!("127.0.0.1:{port}")]);
            let Err(e) = p.send(request, None, format!("GET {url}")).await else {
                panic!("a certificate no public root signed was accepted");
            };
            assert!(
                matches!(e, HttpError::Tls(_)) && e.to_string().contains("UnknownIssuer"),
                "{e:?}"
            );
            // The server saw the handshake fail too: the connection was TLS.
            assert!(server.await.unwrap().is_err());
        });
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
