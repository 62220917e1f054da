//! A fault-injecting HTTP/1.1 proxy on loopback, between a client (the
//! plugin) and a server (s3s-fs). Point the client at [`FaultyProxy::endpoint`]:
//! requests are forwarded byte for byte (SigV4 signs the `Host` header the
//! client sent, and the server checks exactly those bytes), answers come
//! back byte for byte, and every exchange is counted by method with the
//! bytes that crossed. Rules ([`FaultyProxy::inject`]) replace the next N
//! matching exchanges with a fault:
//!
//! * [`Fault::SlowDown`]: answer `503 SlowDown` without forwarding;
//! * [`Fault::Reset`]: read the request, close the connection unanswered;
//! * [`Fault::Stall`]: read the request and never answer (until the rule's
//!   time is up or the proxy stops);
//! * [`Fault::ErrorIn200`]: answer `200 OK` with an `<Error>` body
//!   (`InternalError`) without forwarding (CompleteMultipartUpload's way of
//!   failing late);
//! * [`Fault::LoseAnswer`]: forward the request (the server does the work)
//!   and close the connection instead of passing the answer on.
//!
//! Bounded: at most [`MAX_EXCHANGES`] exchanges and [`MAX_LIFETIME`]; it
//! listens on 127.0.0.1 only and stops (closing every connection) on drop.
//!
//! ```text
//! let s3 = S3Server::start();
//! let proxy = FaultyProxy::start(s3.addr());
//! proxy.inject(Rule::new(Fault::SlowDown).method("PUT").times(3));
//! // ... the client uses proxy.endpoint() and allows proxy.allowed_host() ...
//! assert_eq!(proxy.count("PUT"), 4);
//! assert!(proxy.response_body_bytes("GET") < 1 << 20);
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most exchanges one proxy handles; later connections are closed.
pub const MAX_EXCHANGES: usize = 100_000;
/// How long a proxy runs at most.
pub const MAX_LIFETIME: Duration = Duration::from_secs(900);
/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// The largest message head accepted.
const MAX_HEAD: usize = 64 << 10;

/// What to do instead of a normal exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    SlowDown,
    Reset,
    /// Never answer, for at most this long.
    Stall(Duration),
    ErrorIn200,
    LoseAnswer,
}

/// Which exchanges a fault replaces, and how many times.
#[derive(Debug, Clone)]
pub struct Rule {
    pub fault: Fault,
    /// Only requests with this method (any when None).
    pub method: Option<String>,
    /// Only requests whose target (path and query) contains this.
    pub target_contains: Option<String>,
    /// How many matching exchanges it replaces (then it is used up).
    pub times: usize,
}

impl Rule {
    /// A rule for the next matching exchange.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            fault,
            method: None,
            target_contains: None,
            times: 1,
        }
    }
    pub fn method(mut self, method: &str) -> Rule {
        self.method = Some(method.to_ascii_uppercase());
        self
    }
    pub fn target_contains(mut self, s: &str) -> Rule {
        self.target_contains = Some(s.to_string());
        self
    }
    pub fn times(mut self, n: usize) -> Rule {
        self.times = n;
        self
    }
    fn matches(&self, method: &str, target: &str) -> bool {
        self.method.as_deref().is_none_or(|m| m == method)
            && self.target_contains.as_deref().is_none_or(|t| target.contains(t))
    }
}

/// One exchange as the proxy saw it.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: String,
    /// Path and query (with the presigned signature, so do not print it
    /// where secrets matter: the signature is not the secret).
    pub target: String,
    /// The status the client got (0: none, the connection was closed).
    pub status: u16,
    pub fault: Option<Fault>,
    /// Request body bytes.
    pub request_body: u64,
    /// Response body bytes that reached the client.
    pub response_body: u64,
    /// Request and response bytes in all (heads included).
    pub total_bytes: u64,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    log: Vec<Exchange>,
}

/// The proxy; stops on drop.
pub struct FaultyProxy {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FaultyProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the proxy");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let exchanges = Arc::new(AtomicUsize::new(0));
        let accept = {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("faulty-proxy".into())
                .spawn(move || {
                    let started = Instant::now();
                    let mut workers = Vec::new();
                    while !stop.load(Ordering::Relaxed) && started.elapsed() < MAX_LIFETIME {
                        match listener.accept() {
                            Ok((client, _)) => {
                                if exchanges.load(Ordering::Relaxed) >= MAX_EXCHANGES {
                                    continue; // dropped: closed
                                }
                                let (state, stop, exchanges) = (state.clone(), stop.clone(), exchanges.clone());
                                workers.push(std::thread::spawn(move || {
                                    let _ = serve(client, upstream, &state, &stop, &exchanges);
                                }));
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(5))
                            }
                            Err(_) => std::thread::sleep(POLL),
                        }
                        workers.retain(|w: &JoinHandle<()>| !w.is_finished());
                    }
                    stop.store(true, Ordering::Relaxed);
                    for w in workers {
                        let _ = w.join();
                    }
                })
                .unwrap()
        };
        FaultyProxy {
            addr,
            state,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The allow-list entry for the proxy (`127.0.0.1:PORT`).
    pub fn allowed_host(&self) -> String {
        self.addr.to_string()
    }

    /// Adds a rule; rules are tried in the order they were added.
    pub fn inject(&self, rule: Rule) {
        self.state.lock().unwrap().rules.push(rule);
    }

    /// How many faults the rules have yet to inject. A fault counts as
    /// injected once its request is read (a stall: when it begins), before
    /// the exchange is logged.
    pub fn faults_pending(&self) -> usize {
        self.state.lock().unwrap().rules.iter().map(|r| r.times).sum()
    }

    /// Drops every rule not used up yet.
    pub fn clear_rules(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Every exchange so far, in order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.state.lock().unwrap().log.clone()
    }

    /// Forgets the exchanges counted so far.
    pub fn reset_counts(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// The exchanges with method `method` ("*" for all).
    fn with_method(&self, method: &str) -> impl Iterator<Item = Exchange> {
        let method = method.to_string();
        self.exchanges()
            .into_iter()
            .filter(move |e| method == "*" || e.method == method)
    }

    /// Exchanges with method `method` ("*" for all).
    pub fn count(&self, method: &str) -> usize {
        self.with_method(method).count()
    }

    /// Response body bytes of exchanges with method `method` ("*" for all).
    pub fn response_body_bytes(&self, method: &str) -> u64 {
        self.with_method(method).map(|e| e.response_body).sum()
    }

    /// Request body bytes of exchanges with method `method` ("*" for all).
    pub fn request_body_bytes(&self, method: &str) -> u64 {
        self.with_method(method).map(|e| e.request_body).sum()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// A buffered connection whose reads give up when the proxy stops.
struct Conn<'a> {
    stream: TcpStream,
    buf: Vec<u8>,
    stop: &'a AtomicBool,
}

impl<'a> Conn<'a> {
    fn new(stream: TcpStream, stop: &'a AtomicBool) -> io::Result<Conn<'a>> {
        stream.set_read_timeout(Some(POLL))?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            stop,
        })
    }

    /// Reads more into the buffer; Ok(0) at the end of the stream.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 << 10];
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(io::Error::other("proxy stopped"));
            }
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next message head (through the blank line); None at a clean end.
    fn head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(self.buf.drain(..end + 4).collect()));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(io::Error::other("message head too large"));
            }
            if self.fill()? == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed mid-head",
                    ))
                };
            }
        }
    }

    /// Exactly `n` more bytes.
    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-body",
                ));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// One line through CRLF.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                return Ok(self.buf.drain(..end + 2).collect());
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed mid-chunk",
                ));
            }
        }
    }

    /// A body as framed by `framing`: the raw bytes (chunk framing kept) and
    /// the payload length.
    fn body(&mut self, framing: Framing) -> io::Result<(Vec<u8>, u64)> {
        match framing {
            Framing::None => Ok((Vec::new(), 0)),
            Framing::Length(n) => {
                let b = self.take(n as usize)?;
                Ok((b, n))
            }
            Framing::Chunked => {
                let mut raw = Vec::new();
                let mut payload = 0u64;
                loop {
                    let size_line = self.line()?;
                    raw.extend_from_slice(&size_line);
                    let text = String::from_utf8_lossy(&size_line);
                    let size = u64::from_str_radix(text.trim().split(';').next().unwrap_or("").trim(), 16)
                        .map_err(|_| io::Error::other(format!("bad chunk size line {text:?}")))?;
                    if size == 0 {
                        // Trailers, then the blank line.
                        loop {
                            let l = self.line()?;
                            raw.extend_from_slice(&l);
                            if l == b"\r\n" {
                                return Ok((raw, payload));
                            }
                        }
                    }
                    raw.extend_from_slice(&self.take(size as usize + 2)?);
                    payload += size;
                }
            }
            Framing::UntilClose => {
                while self.fill()? > 0 {}
                let b = std::mem::take(&mut self.buf);
                let n = b.len() as u64;
                Ok((b, n))
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// The start line and the headers (lowercase names) of a head.
fn parse_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (start, headers)
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn framing(headers: &[(String, String)], request: bool, method: &str, status: u16) -> Framing {
    if !request && (method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status)) {
        return Framing::None;
    }
    if header(headers, "transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        return Framing::Chunked;
    }
    match header(headers, "content-length").and_then(|v| v.parse().ok()) {
        Some(n) => Framing::Length(n),
        None if request => Framing::None,
        None => Framing::UntilClose,
    }
}

/// A canned answer (without its body for a HEAD request) and the body
/// bytes it carries.
fn canned(method: &str, status: u16, reason: &str, body: &str) -> (Vec<u8>, u16, u64) {
    let body = if method == "HEAD" { "" } else { body };
    let bytes = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/xml\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    (bytes, status, body.len() as u64)
}

fn error_body(code: &str, message: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message>\
         <RequestId>faulty-proxy</RequestId></Error>"
    )
}

/// Serves one client connection: one exchange after another.
fn serve(
    client: TcpStream,
    upstream_addr: SocketAddr,
    state: &Mutex<State>,
    stop: &AtomicBool,
    exchanges: &AtomicUsize,
) -> io::Result<()> {
    client.set_nonblocking(false)?;
    let mut client = Conn::new(client, stop)?;
    let mut upstream: Option<Conn<'_>> = None;
    while let Some(head) = client.head()? {
        if exchanges.fetch_add(1, Ordering::Relaxed) >= MAX_EXCHANGES {
            return Ok(());
        }
        let (start, headers) = parse_head(&head);
        let mut parts = start.split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let (body, body_len) = client.body(framing(&headers, true, &method, 0))?;
        let fault = {
            let mut st = state.lock().unwrap();
            let hit = st.rules.iter_mut().find(|r| r.times > 0 && r.matches(&method, &target));
            hit.map(|r| {
                r.times -= 1;
                r.fault
            })
        };
        let mut record = Exchange {
            method: method.clone(),
            target: target.clone(),
            status: 0,
            fault,
            request_body: body_len,
            response_body: 0,
            total_bytes: (head.len() + body.len()) as u64,
        };
        let answer: Option<(Vec<u8>, u16, u64)> = match fault {
            Some(Fault::SlowDown) => {
                let b = error_body("SlowDown", "Please reduce your request rate (faulty proxy).");
                Some(canned(&method, 503, "Service Unavailable", &b))
            }
            Some(Fault::ErrorIn200) => {
                let b = error_body(
                    "InternalError",
                    "We encountered an internal error. Please try again (faulty proxy).",
                );
                Some(canned(&method, 200, "OK", &b))
            }
            Some(Fault::Reset) => None,
            Some(Fault::Stall(limit)) => {
                let until = Instant::now() + limit;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(POLL);
                }
                None
            }
            None | Some(Fault::LoseAnswer) => {
                // Forward byte for byte, over one upstream connection per
                // client connection (opened again when the server closed it).
                let (resp, status, payload) = match forward(&mut upstream, upstream_addr, stop, &head, &body, &method) {
                    Ok(r) => r,
                    Err(_) => {
                        upstream = None;
                        forward(&mut upstream, upstream_addr, stop, &head, &body, &method)?
                    }
                };
                (fault.is_none()).then_some((resp, status, payload))
            }
        };
        let Some((bytes, status, payload)) = answer else {
            state.lock().unwrap().log.push(record);
            let _ = client.stream.shutdown(Shutdown::Both);
            return Ok(());
        };
        record.status = status;
        record.response_body = payload;
        record.total_bytes += bytes.len() as u64;
        // Counted before the client can see the answer, so that a test
        // reading the counts after its call returned sees this exchange.
        state.lock().unwrap().log.push(record);
        client.stream.write_all(&bytes)?;
        client.stream.flush()?;
        let close = header(&headers, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        if close {
            return Ok(());
        }
    }
    Ok(())
}

/// Sends one request upstream and reads its answer: the raw answer, its
/// status and its payload length.
fn forward<'s>(
    upstream: &mut Option<Conn<'s>>,
    addr: SocketAddr,
    stop: &'s AtomicBool,
    head: &[u8],
    body: &[u8],
    method: &str,
) -> io::Result<(Vec<u8>, u16, u64)> {
    if upstream.is_none() {
        *upstream = Some(Conn::new(TcpStream::connect(addr)?, stop)?);
    }
    let up = upstream.as_mut().expect("connected just now");
    up.stream.write_all(head)?;
    up.stream.write_all(body)?;
    up.stream.flush()?;
    let resp_head = up
        .head()?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"))?;
    let (start, headers) = parse_head(&resp_head);
    let status: u16 = start.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let f = framing(&headers, false, method, status);
    let (resp_body, payload) = up.body(f)?;
    if matches!(f, Framing::UntilClose)
        || header(&headers, "connection").is_some_and(|c| c.eq_ignore_ascii_case("close"))
    {
        *upstream = None;
    }
    let mut raw = resp_head;
    raw.extend_from_slice(&resp_body);
    Ok((raw, status, payload))
}
