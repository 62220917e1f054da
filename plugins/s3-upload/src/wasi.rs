//! The component's [`Transport`]: `wasi:http` for requests (the host checks
//! every one against the plugin's `allowedHosts`), `wasi:clocks` for
//! timeouts and backoff, `wasi:random` for jitter.
//!
//! Every wait (for room to write the body, for the answer, for the next
//! bytes of a body) also waits on a timer, so a server that stalls costs
//! at most the request timeout, not the whole call.

use std::time::Duration;

use url::{Position, Url};
use wasip2::clocks::monotonic_clock;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method as WasiMethod, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::poll::{poll, Pollable};
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

use crate::s3::{Request, Response, Transport, TransportError};

/// The most bytes handed to one `write`.
const WRITE_CHUNK: u64 = 1 << 20;
/// The most bytes asked of one `read`.
const READ_CHUNK: u64 = 1 << 20;
/// Error answers are short; this much of one is kept whatever `max_response` says.
const ERROR_BODY: usize = 64 << 10;

pub struct WasiTransport;

impl Transport for WasiTransport {
    fn send(&mut self, request: &Request<'_>) -> Result<Response, TransportError> {
        send(request)
    }

    fn sleep(&mut self, duration: Duration) {
        monotonic_clock::subscribe_duration(nanos(duration)).block();
    }

    fn now(&mut self) -> Duration {
        Duration::from_nanos(monotonic_clock::now())
    }

    fn random(&mut self) -> u64 {
        wasip2::random::random::get_random_u64()
    }

    fn warn(&mut self, message: &str) {
        wimguard_sdk::log::warn(message);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Waits until `ready` is ready or `timeout` passes; false on timeout.
fn wait(ready: &Pollable, timeout: Duration) -> bool {
    let timer = monotonic_clock::subscribe_duration(nanos(timeout));
    let done = poll(&[ready, &timer]);
    done.contains(&0)
}

fn retry(what: impl Into<String>) -> TransportError {
    TransportError::Retry(what.into())
}

/// What a wasi:http error code means for another try.
fn classify(code: ErrorCode) -> TransportError {
    match code {
        ErrorCode::HttpRequestDenied => TransportError::Final(
            "HTTP-request-denied (the sandbox refused it: the host is not in allowedHosts)".into(),
        ),
        ErrorCode::DestinationIpProhibited => TransportError::Final(
            "destination-IP-prohibited (the sandbox refused the address the name resolved to; see allowedHosts and \
             allowPrivate)"
                .into(),
        ),
        c @ (ErrorCode::TlsCertificateError
        | ErrorCode::TlsProtocolError
        | ErrorCode::TlsAlertReceived(_)
        | ErrorCode::HttpRequestUriInvalid
        | ErrorCode::HttpRequestMethodInvalid
        | ErrorCode::HttpRequestUriTooLong
        | ErrorCode::ConfigurationError) => TransportError::Final(format!("{c:?}")),
        c => retry(format!("{c:?}")),
    }
}

fn send(r: &Request<'_>) -> Result<Response, TransportError> {
    let bad = |what: &str| TransportError::Final(format!("cannot build the request: {what}"));
    let mut headers: Vec<(String, Vec<u8>)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect();
    let has_body = matches!(r.method, rusty_s3::Method::Put | rusty_s3::Method::Post);
    if has_body {
        // A known length: S3 refuses chunked uploads without it.
        headers.push(("content-length".into(), r.body.len().to_string().into_bytes()));
    }
    let fields = Fields::from_list(&headers).map_err(|e| bad(&format!("header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let method = match r.method {
        rusty_s3::Method::Head => WasiMethod::Head,
        rusty_s3::Method::Get => WasiMethod::Get,
        rusty_s3::Method::Post => WasiMethod::Post,
        rusty_s3::Method::Put => WasiMethod::Put,
        rusty_s3::Method::Delete => WasiMethod::Delete,
    };
    request.set_method(&method).map_err(|()| bad("method"))?;
    let scheme = if r.url.scheme() == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request.set_scheme(Some(&scheme)).map_err(|()| bad("scheme"))?;
    request
        .set_authority(Some(authority(&r.url)))
        .map_err(|()| bad("authority"))?;
    request
        .set_path_with_query(Some(&r.url[Position::BeforePath..Position::AfterQuery]))
        .map_err(|()| bad("path"))?;
    let outgoing_body = request.body().map_err(|()| bad("body"))?;

    // The host's own timeouts, as a backstop to the timers below.
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(nanos(r.timeout)));
    let _ = options.set_first_byte_timeout(Some(nanos(r.timeout)));
    let _ = options.set_between_bytes_timeout(Some(nanos(r.timeout)));

    // Start the request before writing the body: the body streams to the
    // connection, so writing first could wait on a reader that does not
    // exist yet.
    let future = outgoing_handler::handle(request, Some(options)).map_err(classify)?;
    let written = match outgoing_body.write() {
        Ok(stream) => write_all(&stream, r.body, r.timeout),
        Err(()) => Err(retry("the request body stream is unavailable")),
    };
    // The stream is dropped by now, as `finish` needs. A failed write drops
    // the body unfinished, which aborts the request.
    let sent = written.and_then(|()| OutgoingBody::finish(outgoing_body, None).map_err(classify));

    // The answer (or the transport error) explains a failed write better
    // than the write error itself.
    let answer = loop {
        if let Some(answer) = future.get() {
            break answer;
        }
        if !wait(&future.subscribe(), r.timeout) {
            return Err(match sent {
                Err(e) => e,
                Ok(()) => retry(format!("no answer within {}s", r.timeout.as_secs())),
            });
        }
    };
    let response = match answer {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => return Err(classify(code)),
        Err(()) => return Err(retry("the answer was already taken")),
    };
    // A server may answer an error before it read the whole body (a refused
    // signature): the answer counts. A success without the whole body sent
    // cannot be trusted.
    if (200..300).contains(&response.status()) {
        sent?;
    }
    let status = response.status();
    let headers: Vec<(String, String)> = response
        .headers()
        .entries()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), String::from_utf8_lossy(&v).into_owned()))
        .collect();
    let mut body = Vec::new();
    if r.method != rusty_s3::Method::Head {
        let limit = if (200..300).contains(&status) {
            r.max_response
        } else {
            r.max_response.max(ERROR_BODY)
        };
        // One allocation of the announced size: growing a Vec by doubling
        // would need 1.5 times a large body (and the memory limit is tight).
        let announced = headers
            .iter()
            .find(|(k, _): &&(String, String)| k == "content-length")
            .and_then(|(_, v)| v.trim().parse::<usize>().ok());
        if let Some(n) = announced {
            body.reserve_exact(n.min(limit));
        }
        let incoming = response
            .consume()
            .map_err(|()| retry("the answer's body is unavailable"))?;
        {
            let stream = incoming
                .stream()
                .map_err(|()| retry("the answer's body stream is unavailable"))?;
            read_all(&stream, &mut body, limit, r.timeout, status)?;
        }
        drop(IncomingBody::finish(incoming));
    }
    Ok(Response { status, headers, body })
}

/// `host[:port]` of a URL.
fn authority(url: &Url) -> &str {
    &url[Position::BeforeHost..Position::AfterPort]
}

/// Writes `data` as fast as the stream takes it, waiting at most `timeout`
/// for room each time, then flushes it. Nothing is written for an empty
/// body (a GET's stream may be closed already once its answer came).
fn write_all(stream: &OutputStream, mut data: &[u8], timeout: Duration) -> Result<(), TransportError> {
    if data.is_empty() {
        return Ok(());
    }
    let failed = |e: StreamError| match e {
        StreamError::Closed => retry("the connection closed while sending the body"),
        StreamError::LastOperationFailed(err) => retry(format!("sending the body: {}", err.to_debug_string())),
    };
    while !data.is_empty() {
        let room = stream.check_write().map_err(failed)?;
        if room == 0 {
            if !wait(&stream.subscribe(), timeout) {
                return Err(retry(format!("sending the body stalled for {}s", timeout.as_secs())));
            }
            continue;
        }
        let n = room.min(WRITE_CHUNK).min(data.len() as u64) as usize;
        stream.write(&data[..n]).map_err(failed)?;
        data = &data[n..];
    }
    // Every byte is handed over. Wait for the flush; the stream closing
    // meanwhile means the connection is done with the body, and the answer
    // will say how that went.
    if stream.flush().is_err() {
        return Ok(());
    }
    loop {
        match stream.check_write() {
            Err(StreamError::Closed) => return Ok(()),
            Err(e) => return Err(failed(e)),
            Ok(_) => {}
        }
        let ready = stream.subscribe();
        if ready.ready() {
            return Ok(());
        }
        if !wait(&ready, timeout) {
            return Err(retry(format!("sending the body stalled for {}s", timeout.as_secs())));
        }
    }
}

/// Reads the whole body into `out`, refusing more than `limit` bytes and
/// waiting at most `timeout` for each piece.
fn read_all(
    stream: &InputStream,
    out: &mut Vec<u8>,
    limit: usize,
    timeout: Duration,
    status: u16,
) -> Result<(), TransportError> {
    loop {
        match stream.read(READ_CHUNK) {
            Ok(bytes) if bytes.is_empty() => {
                if !wait(&stream.subscribe(), timeout) {
                    return Err(retry(format!(
                        "the answer's body (HTTP {status}) stalled for {}s after {} bytes",
                        timeout.as_secs(),
                        out.len()
                    )));
                }
            }
            Ok(bytes) => {
                if out.len() + bytes.len() > limit {
                    if !(200..300).contains(&status) {
                        // An error answer: its start says enough.
                        out.extend_from_slice(&bytes[..limit - out.len()]);
                        return Ok(());
                    }
                    return Err(TransportError::Final(format!(
                        "the answer's body is larger than the {limit} bytes asked for"
                    )));
                }
                out.extend_from_slice(&bytes);
            }
            Err(StreamError::Closed) => return Ok(()),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(retry(format!(
                    "reading the answer's body (HTTP {status}) after {} bytes: {}",
                    out.len(),
                    e.to_debug_string()
                )))
            }
        }
    }
}
