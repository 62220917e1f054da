//! One HTTP request through wasi:http (component build only). The host
//! links wasi:http and decides which hosts are reachable; a denied host
//! shows up here as an error code like any other network failure.

use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};
use wasip2::io::streams::{OutputStream, StreamError};

use crate::settings::Target;

/// Most bytes `blocking-write-and-flush` accepts in one call.
const WRITE_CHUNK: usize = 4096;

/// POSTs `body` to `target` and returns the response status. Errors are
/// short human-readable reasons (a wasi:http error code in `Debug` form
/// when the transport failed).
pub fn post(target: &Target, headers: &[(String, Vec<u8>)], body: &[u8], timeout_ns: u64) -> Result<u16, String> {
    let fields = Fields::from_list(headers).map_err(|e| format!("invalid request header: {e:?}"))?;
    let request = OutgoingRequest::new(fields);
    let scheme = if target.https { Scheme::Https } else { Scheme::Http };
    request.set_method(&Method::Post).map_err(|()| "method rejected")?;
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme rejected")?;
    request
        .set_authority(Some(&target.authority))
        .map_err(|()| "authority rejected")?;
    request
        .set_path_with_query(Some(&target.path_with_query))
        .map_err(|()| "path rejected")?;
    let outgoing_body = request.body().map_err(|()| "request body unavailable")?;

    // A host may not support every timeout; the rest still apply.
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(timeout_ns));
    let _ = options.set_first_byte_timeout(Some(timeout_ns));
    let _ = options.set_between_bytes_timeout(Some(timeout_ns));

    // Start the request before writing the body: the body is streamed to
    // the connection, so writing first could wait on a reader that does
    // not exist yet.
    let future = outgoing_handler::handle(request, Some(options)).map_err(|e| format!("{e:?}"))?;

    let written = match outgoing_body.write() {
        Ok(stream) => write_all(&stream, body),
        Err(()) => Err("request body stream unavailable".into()),
    };
    // The stream is dropped by now (it must be, before `finish`). On a
    // failed write the body is dropped unfinished, which aborts the request.
    let sent = written.and_then(|()| OutgoingBody::finish(outgoing_body, None).map_err(|e| format!("{e:?}")));

    // The response (or the transport error) explains a failed write better
    // than the write error itself, so wait for it in every case.
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    match response {
        Ok(Ok(response)) => sent.map(|()| response.status()),
        Ok(Err(code)) => Err(format!("{code:?}")),
        Err(()) => Err("response already taken".into()),
    }
}

/// Writes `data` in pieces `blocking-write-and-flush` accepts (it waits
/// for `check-write` itself).
fn write_all(stream: &OutputStream, data: &[u8]) -> Result<(), String> {
    for piece in data.chunks(WRITE_CHUNK) {
        stream.blocking_write_and_flush(piece).map_err(|e| match e {
            StreamError::Closed => "connection closed while sending the body".to_string(),
            StreamError::LastOperationFailed(err) => format!("sending the body: {}", err.to_debug_string()),
        })?;
    }
    Ok(())
}
