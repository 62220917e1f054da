//! The S3 side of the plugin: requests signed with rusty-s3 (SigV4,
//! presigned: the signature and the signed headers travel in the query,
//! the body is covered by its signed Content-MD5), sent through a
//! [`Transport`] with bounded retries, and S3's answers mapped to the
//! destination contract's errors in words.
//!
//! Everything here is plain Rust over the [`Transport`] trait, so the
//! decisions (what is retried, what an answer means) are unit-tested
//! natively; the component's transport is `wasi:http` (`crate::wasi`).

use std::time::Duration;

use base64::Engine as _;
use md5::{Digest, Md5};
use rusty_s3::actions::{CompleteMultipartUploadResponse, CreateMultipartUpload, ListObjectsV2};
use rusty_s3::{Method, S3Action};
use url::Url;
use wimguard_sdk::{DestinationError, ListPage, ObjectInfo};

use crate::settings::Settings;
use crate::token::Token;

/// How long a presigned request stays valid: it is signed just before it is
/// sent, so this only has to cover clock skew and the way to the server.
const SIGNATURE_VALIDITY: Duration = Duration::from_secs(3600);
/// First backoff step; step n waits a random time up to `BACKOFF_BASE * 2^n`.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// The longest single backoff.
const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// Attempts of one request at most, whatever time is left.
pub const MAX_ATTEMPTS: u32 = 12;
/// S3's part numbers.
const MAX_PARTS: u32 = 10_000;
/// S3's largest single PutObject (5 GiB).
const MAX_SINGLE_PUT: u64 = 5 << 30;
/// The most bytes of an XML answer (a listing page of 1000 long keys).
const MAX_XML: usize = 8 << 20;

/// One HTTP request, ready to send.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: Method,
    /// Presigned: carries the signature in its query.
    pub url: Url,
    /// Lowercase names; `content-length` is added by the transport.
    pub headers: Vec<(String, String)>,
    pub body: &'a [u8],
    /// The most response body bytes accepted (more is a final error).
    pub max_response: usize,
    /// Connect / first byte / between bytes.
    pub timeout: Duration,
}

/// An HTTP answer.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// Worth another try: refused or reset connections, timeouts.
    Retry(String),
    /// Never worth another try: the sandbox refused the request, a bad
    /// certificate, an answer larger than allowed.
    Final(String),
}

/// What the plugin needs from its environment: HTTP, a clock, sleep and
/// randomness (for jitter). The component's is `wasi:http` + clocks + random.
pub trait Transport {
    fn send(&mut self, request: &Request<'_>) -> Result<Response, TransportError>;
    fn sleep(&mut self, duration: Duration);
    /// A monotonic clock.
    fn now(&mut self) -> Duration;
    fn random(&mut self) -> u64;
    /// A warning for the daemon's log.
    fn warn(&mut self, message: &str);
}

/// An error answer of S3 (`<Error><Code>…</Code><Message>…</Message>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub status: u16,
    /// S3's error code, or empty when the answer had no body (HEAD).
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl S3Error {
    /// The error in an answer's body, if it holds one.
    pub fn parse(status: u16, body: &[u8]) -> Option<S3Error> {
        let text = std::str::from_utf8(body).ok()?;
        let error = text.find("<Error>").map(|i| &text[i..])?;
        let code = xml_element(error, "Code").unwrap_or_default();
        let message = xml_element(error, "Message").unwrap_or_default();
        Some(S3Error { status, code, message })
    }

    /// The error of a non-2xx answer (the code is empty when there is no body).
    fn of(response: &Response) -> S3Error {
        S3Error::parse(response.status, &response.body).unwrap_or_else(|| S3Error {
            status: response.status,
            code: String::new(),
            message: String::new(),
        })
    }

    /// May another try succeed? Throttling and server-side failures yes;
    /// refused credentials, missing buckets and failed preconditions never.
    pub fn retryable(&self) -> bool {
        match self.code.as_str() {
            "SlowDown"
            | "RequestTimeout"
            | "InternalError"
            | "ServiceUnavailable"
            | "Throttling"
            | "ThrottlingException"
            | "RequestThrottled"
            | "TooManyRequests"
            | "RequestTimeTooSkewed" => self.code != "RequestTimeTooSkewed",
            "AccessDenied"
            | "SignatureDoesNotMatch"
            | "InvalidAccessKeyId"
            | "NoSuchBucket"
            | "NoSuchKey"
            | "NoSuchUpload"
            | "PreconditionFailed"
            | "InvalidToken"
            | "ExpiredToken"
            | "InvalidRange"
            | "EntityTooLarge"
            | "EntityTooSmall"
            | "InvalidPart"
            | "InvalidPartOrder"
            | "BadDigest"
            | "QuotaExceeded"
            | "NotImplemented" => false,
            // An error in the body of a 200 (CompleteMultipartUpload): the
            // work failed on the server's side.
            _ if self.status == 200 => true,
            _ => matches!(self.status, 408 | 429 | 500 | 502 | 503 | 504) || self.status > 505,
        }
    }
}

/// The text of the first `<name>…</name>` in `xml`, entities decoded.
fn xml_element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(unescape_xml(&xml[start..end]))
}

fn unescape_xml(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// Why an operation's request failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A final answer of the service.
    S3(S3Error),
    /// A transport error that no retry can fix.
    Refused(String),
    /// Retried until the budget ran out.
    GaveUp { attempts: u32, millis: u64, last: String },
}

/// An ETag without quotes (and without a weak `W/` mark).
pub fn normalize_etag(etag: &str) -> String {
    etag.trim().trim_start_matches("W/").trim_matches('"').to_string()
}

/// The hex MD5 of `data` (a single PutObject's ETag).
pub fn md5_hex(data: &[u8]) -> String {
    hex(&Md5::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Content-MD5 header value of `data`.
fn content_md5(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Md5::digest(data))
}

/// The ETag S3 gives an object completed from parts with these ETags: the
/// MD5 of the parts' binary MD5s, then `-` and the number of parts. None
/// when a part's ETag is not an MD5 (encrypted buckets).
pub fn multipart_etag(part_etags: &[String]) -> Option<String> {
    let mut all = Md5::new();
    for e in part_etags {
        let e = normalize_etag(e);
        if e.len() != 32 {
            return None;
        }
        let mut bin = [0u8; 16];
        for (i, b) in bin.iter_mut().enumerate() {
            *b = u8::from_str_radix(e.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        all.update(bin);
    }
    Some(format!("{}-{}", hex(&all.finalize()), part_etags.len()))
}

/// Milliseconds since the epoch of an HTTP date (`Last-Modified`) or an
/// ISO 8601 time (listings).
pub fn parse_time_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    let ts = text
        .parse::<jiff::Timestamp>()
        .ok()
        .or_else(|| jiff::fmt::rfc2822::DateTimeParser::new().parse_timestamp(text).ok())?;
    u64::try_from(ts.as_millisecond()).ok()
}

/// The S3 client of one plugin instance.
pub struct Client<T: Transport> {
    pub settings: Settings,
    pub transport: T,
    /// How long one operation may keep retrying: `maxRetrySeconds`, but at
    /// most half of the host's call time limit when the host said it.
    pub retry_budget: Duration,
}

impl<T: Transport> Client<T> {
    pub fn new(settings: Settings, transport: T, call_limit: Option<Duration>) -> Self {
        let retry_budget = match call_limit {
            Some(limit) => settings.max_retry.min(limit / 2),
            None => settings.max_retry,
        };
        Client {
            settings,
            transport,
            retry_budget,
        }
    }

    /// Sends the request `make` builds (it is signed anew for every try),
    /// retrying transport errors and retryable answers with full-jitter
    /// exponential backoff until `MAX_ATTEMPTS` or the retry budget is
    /// used up. A 2xx answer is returned, unless `error_in_ok` and its body
    /// is an `<Error>` (CompleteMultipartUpload), which counts as that error.
    fn perform<'b>(
        &mut self,
        what: &str,
        error_in_ok: bool,
        make: &dyn Fn(&Settings) -> Request<'b>,
    ) -> Result<Response, Failure> {
        let start = self.transport.now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let request = make(&self.settings);
            let failure = match self.transport.send(&request) {
                Ok(r) if (200..300).contains(&r.status) => match S3Error::parse(r.status, &r.body) {
                    Some(e) if error_in_ok => e,
                    _ => return Ok(r),
                },
                Ok(r) => S3Error::of(&r),
                Err(TransportError::Final(e)) => return Err(Failure::Refused(e)),
                Err(TransportError::Retry(e)) => S3Error {
                    status: 0,
                    code: String::new(),
                    message: e,
                },
            };
            let reason = if failure.status == 0 {
                failure.message.clone()
            } else {
                failure.to_string()
            };
            if failure.status != 0 && !failure.retryable() {
                return Err(Failure::S3(failure));
            }
            // Full jitter: a random wait up to the exponential step.
            let step = BACKOFF_BASE.saturating_mul(1u32 << attempt.min(16)).min(BACKOFF_CAP);
            let step_ms = step.as_millis() as u64;
            let wait =
                Duration::from_millis(((u128::from(self.transport.random()) * u128::from(step_ms + 1)) >> 64) as u64);
            let elapsed = self.transport.now().saturating_sub(start);
            if attempt >= MAX_ATTEMPTS || elapsed + wait >= self.retry_budget {
                return Err(Failure::GaveUp {
                    attempts: attempt,
                    millis: elapsed.as_millis() as u64,
                    last: reason,
                });
            }
            self.transport.warn(&format!(
                "s3-upload: {what}: {reason}; retrying in {:.1}s (attempt {} of at most {MAX_ATTEMPTS})",
                wait.as_secs_f64(),
                attempt + 1
            ));
            self.transport.sleep(wait);
        }
    }

    /// The contract's error for a failed operation, in words: `what` says
    /// what was being done ("uploading part 3 of `k`").
    fn error(&self, what: &str, key: Option<&str>, failure: Failure) -> DestinationError {
        let s = &self.settings;
        let (endpoint, bucket) = (&s.endpoint, &s.bucket_name);
        let e = match failure {
            Failure::S3(e) => e,
            Failure::Refused(why) => {
                return DestinationError::Denied(format!(
                    "{what}: the request to {endpoint} could not be made: {why} (is the endpoint's host in this \
                     plugin's allowedHosts?)"
                ))
            }
            Failure::GaveUp { attempts, millis, last } => {
                let seconds = millis as f64 / 1000.0;
                return DestinationError::Unavailable(format!(
                    "{what}: {endpoint} kept failing; gave up after {attempts} attempt(s) in {seconds:.1}s: {last}"
                ));
            }
        };
        let key = key.unwrap_or("");
        match (e.status, e.code.as_str()) {
            (
                _,
                "AccessDenied"
                | "SignatureDoesNotMatch"
                | "InvalidAccessKeyId"
                | "InvalidToken"
                | "ExpiredToken"
                | "AuthorizationHeaderMalformed"
                | "RequestTimeTooSkewed"
                | "AllAccessDisabled"
                | "AccountProblem"
                | "InvalidSecurity",
            )
            | (401 | 403, _) => DestinationError::Denied(format!(
                "{what}: the credentials were refused by {endpoint} for bucket {bucket}: {e}"
            )),
            (_, "NoSuchBucket") => DestinationError::Invalid(format!(
                "{what}: bucket {bucket} does not exist at {endpoint} (NoSuchBucket); create it or fix the `bucket` \
                 setting"
            )),
            (_, "PreconditionFailed") | (412, _) => DestinationError::Invalid(format!(
                "{what}: object {key} already exists in bucket {bucket} at {endpoint}; uploads never replace an \
                 object ({e})"
            )),
            (_, "NoSuchUpload") => DestinationError::Invalid(format!(
                "{what}: the multipart upload of {key} no longer exists at {endpoint} (aborted, or completed \
                 already): {e}"
            )),
            (_, "NoSuchKey") | (404, _) => {
                DestinationError::NotFound(format!("{what}: {key} does not exist in bucket {bucket} at {endpoint}"))
            }
            (_, "QuotaExceeded" | "EntityTooLarge" | "XMinioStorageFull" | "StorageFull" | "InsufficientStorage")
            | (507, _) => {
                DestinationError::NoSpace(format!("{what}: {endpoint} has no room for it in bucket {bucket}: {e}"))
            }
            (
                _,
                "EntityTooSmall" | "InvalidPart" | "InvalidPartOrder" | "BadDigest" | "InvalidArgument"
                | "InvalidRequest" | "KeyTooLongError",
            ) => DestinationError::Invalid(format!("{what}: {endpoint} refused the request: {e}")),
            _ => DestinationError::Other(format!("{what}: {endpoint} answered {e}")),
        }
    }

    /// Checks a relative key of the host and returns the object key.
    fn object_key(&self, key: &str) -> Result<String, DestinationError> {
        if key.is_empty() || key.starts_with('/') || key.chars().any(char::is_control) {
            return Err(DestinationError::Invalid(format!(
                "{key:?} is not a valid key (relative, not empty, no control characters)"
            )));
        }
        let full = self.settings.object_key(key);
        if full.len() > 1024 {
            return Err(DestinationError::Invalid(format!(
                "the object key of {key:?} is {} bytes long; S3 allows 1024",
                full.len()
            )));
        }
        Ok(full)
    }

    /// The host's key of an object key (the object key itself when it is
    /// not under the prefix, which the host never asks for).
    fn relative(&self, object_key: &str) -> String {
        self.settings.relative_key(object_key).unwrap_or(object_key).to_string()
    }

    /// HEAD of an object: None when it does not exist. A HEAD answer has no
    /// body, so with `tell_bucket` a 404 is followed by a HEAD of the bucket
    /// to tell a missing object from a missing bucket.
    fn head(
        &mut self,
        what: &str,
        object_key: &str,
        tell_bucket: bool,
    ) -> Result<Option<ObjectInfo>, DestinationError> {
        let make = |s: &Settings| {
            let mut a = s.bucket.head_object(Some(&s.credentials), object_key);
            signed(s, &mut a, Vec::new(), &[], 0)
        };
        match self.perform(what, false, &make) {
            Ok(r) => {
                let size = r
                    .header("content-length")
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| {
                        DestinationError::Other(format!(
                            "{what}: the answer of {} has no Content-Length",
                            self.settings.endpoint
                        ))
                    })?;
                Ok(Some(ObjectInfo {
                    key: self.relative(object_key),
                    size,
                    modified_ms: r.header("last-modified").and_then(parse_time_ms),
                    etag: r.header("etag").map(normalize_etag),
                    extras: Vec::new(),
                }))
            }
            Err(Failure::S3(e)) if e.status == 404 => {
                if tell_bucket {
                    self.check_bucket(what)?;
                }
                Ok(None)
            }
            Err(f) => Err(self.error(what, Some(object_key), f)),
        }
    }

    /// Fails with a clear error when the bucket does not exist.
    fn check_bucket(&mut self, what: &str) -> Result<(), DestinationError> {
        let make = |s: &Settings| {
            let mut a = s.bucket.head_bucket(Some(&s.credentials));
            signed(s, &mut a, Vec::new(), &[], 0)
        };
        match self.perform(what, false, &make) {
            Ok(_) => Ok(()),
            Err(Failure::S3(mut e)) if e.status == 404 => {
                e.code = "NoSuchBucket".into();
                Err(self.error(what, None, Failure::S3(e)))
            }
            Err(f) => Err(self.error(what, None, f)),
        }
    }

    // ------------------------------------------------------------ contract

    pub fn begin_upload(&mut self, key: &str, size_hint: Option<u64>) -> Result<String, DestinationError> {
        let object_key = self.object_key(key)?;
        let what = format!("starting the upload of {object_key}");
        // Fail before any data is sent (an existing key, a missing bucket);
        // the conditional write at the end is what guarantees the first.
        if self.head(&what, &object_key, true)?.is_some() {
            return Err(self.error(
                &what,
                Some(&object_key),
                Failure::S3(S3Error {
                    status: 412,
                    code: "PreconditionFailed".into(),
                    message: "found by HEAD".into(),
                }),
            ));
        }
        if let Some(size) = size_hint {
            if size > MAX_SINGLE_PUT {
                return Err(DestinationError::Invalid(format!(
                    "{what}: {size} bytes is more than one S3 request may carry (5 GiB); upload it in parts \
                     (begin-upload without a size hint)"
                )));
            }
            return Ok(Token::Single { key: object_key, size }.encode());
        }
        let make = |s: &Settings| {
            let mut a = CreateMultipartUpload::new(&s.bucket, Some(&s.credentials), &object_key);
            signed(s, &mut a, Vec::new(), &[], MAX_XML)
        };
        let r = self
            .perform(&what, true, &make)
            .map_err(|f| self.error(&what, Some(&object_key), f))?;
        let text = String::from_utf8_lossy(&r.body);
        let parsed = CreateMultipartUpload::parse_response(&text).map_err(|e| {
            DestinationError::Other(format!(
                "{what}: cannot read the answer of {}: {e}",
                self.settings.endpoint
            ))
        })?;
        Ok(Token::Multi {
            key: object_key,
            upload_id: parsed.upload_id().to_string(),
        }
        .encode())
    }

    pub fn upload_part(&mut self, token: &str, part: u32, data: &[u8]) -> Result<String, DestinationError> {
        let token = Token::decode(token).map_err(DestinationError::Invalid)?;
        let md5 = content_md5(data);
        match token {
            Token::Single { key, size } => {
                let what = format!("uploading {key}");
                if part != 1 || data.len() as u64 != size {
                    return Err(DestinationError::Invalid(format!(
                        "{what}: this upload was begun for one part of {size} bytes, got part {part} of {} bytes",
                        data.len()
                    )));
                }
                let make = |s: &Settings| {
                    let mut a = s.bucket.put_object(Some(&s.credentials), &key);
                    let headers = vec![
                        ("content-md5".into(), md5.clone()),
                        ("if-none-match".into(), "*".into()),
                    ];
                    signed(s, &mut a, headers, data, 0)
                };
                match self.perform(&what, false, &make) {
                    Ok(r) => Ok(r.header("etag").map(normalize_etag).unwrap_or_else(|| md5_hex(data))),
                    // An earlier try (ours, or the host's) may have stored
                    // exactly these bytes already.
                    Err(Failure::S3(e)) if e.status == 412 || e.code == "PreconditionFailed" => {
                        let ours = md5_hex(data);
                        match self.head(&what, &key, false)? {
                            Some(o) if o.etag.as_deref() == Some(&ours) && o.size == size => Ok(ours),
                            _ => Err(self.error(&what, Some(&key), Failure::S3(e))),
                        }
                    }
                    Err(f) => Err(self.error(&what, Some(&key), f)),
                }
            }
            Token::Multi { key, upload_id } => {
                let what = format!("uploading part {part} of {key}");
                if !(1..=MAX_PARTS).contains(&part) {
                    return Err(DestinationError::Invalid(format!(
                        "{what}: part numbers are 1 to {MAX_PARTS}"
                    )));
                }
                let make = |s: &Settings| {
                    let mut a = s
                        .bucket
                        .upload_part(Some(&s.credentials), &key, part as u16, &upload_id);
                    signed(s, &mut a, vec![("content-md5".into(), md5.clone())], data, 0)
                };
                let r = self
                    .perform(&what, false, &make)
                    .map_err(|f| self.error(&what, Some(&key), f))?;
                r.header("etag")
                    .map(normalize_etag)
                    .filter(|e| !e.is_empty())
                    .ok_or_else(|| {
                        DestinationError::Other(format!("{what}: {} answered without an ETag", self.settings.endpoint))
                    })
            }
        }
    }

    pub fn finish_upload(&mut self, token: &str, receipts: &[String]) -> Result<ObjectInfo, DestinationError> {
        let token = Token::decode(token).map_err(DestinationError::Invalid)?;
        match token {
            Token::Single { key, size } => match receipts {
                [etag] => Ok(ObjectInfo {
                    key: self.relative(&key),
                    size,
                    modified_ms: None,
                    etag: Some(normalize_etag(etag)),
                    extras: Vec::new(),
                }),
                _ => Err(DestinationError::Invalid(format!(
                    "finishing the upload of {key}: it was begun for one part, got {} receipts",
                    receipts.len()
                ))),
            },
            Token::Multi { key, upload_id } => {
                let what = format!("completing the upload of {key}");
                if receipts.is_empty() || receipts.len() > MAX_PARTS as usize {
                    return Err(DestinationError::Invalid(format!(
                        "{what}: {} receipts; an upload has 1 to {MAX_PARTS} parts",
                        receipts.len()
                    )));
                }
                let quoted: Vec<String> = receipts.iter().map(|e| format!("\"{}\"", normalize_etag(e))).collect();
                let body = self
                    .settings
                    .bucket
                    .complete_multipart_upload(
                        Some(&self.settings.credentials),
                        &key,
                        &upload_id,
                        quoted.iter().map(String::as_str),
                    )
                    .body();
                let md5 = content_md5(body.as_bytes());
                let make = |s: &Settings| {
                    let mut a = s.bucket.complete_multipart_upload(
                        Some(&s.credentials),
                        &key,
                        &upload_id,
                        quoted.iter().map(String::as_str),
                    );
                    let headers = vec![
                        ("content-md5".into(), md5.clone()),
                        ("if-none-match".into(), "*".into()),
                        ("content-type".into(), "application/xml".into()),
                    ];
                    signed(s, &mut a, headers, body.as_bytes(), MAX_XML)
                };
                let expected = multipart_etag(receipts);
                match self.perform(&what, true, &make) {
                    Ok(r) => {
                        let text = String::from_utf8_lossy(&r.body);
                        let etag = CompleteMultipartUploadResponse::parse(text.trim())
                            .ok()
                            .map(|c| normalize_etag(c.etag()));
                        // The size is not in the answer; HEAD says it (and
                        // confirms the object is there).
                        match self.head(&what, &key, false)? {
                            Some(info) => Ok(ObjectInfo {
                                etag: info.etag.or(etag),
                                ..info
                            }),
                            None => Err(DestinationError::Unavailable(format!(
                                "{what}: {} said it completed the upload, but the object is not there (yet)",
                                self.settings.endpoint
                            ))),
                        }
                    }
                    // A try whose answer was lost may have completed it:
                    // then the upload is gone (NoSuchUpload; s3s says
                    // AccessDenied for upload ids it does not know) or the
                    // object exists (412). It is ours if its ETag is the one
                    // our parts make.
                    Err(Failure::S3(e))
                        if matches!(e.code.as_str(), "NoSuchUpload" | "PreconditionFailed" | "AccessDenied")
                            || e.status == 412 =>
                    {
                        match (self.head(&what, &key, false)?, &expected) {
                            (Some(info), Some(expected)) if info.etag.as_deref() == Some(expected) => {
                                self.transport.warn(&format!(
                                    "s3-upload: {what}: {e}, but the object has the ETag of our parts: an earlier \
                                     try completed it"
                                ));
                                Ok(info)
                            }
                            // The HEAD went through, so the credentials work:
                            // an AccessDenied was s3s's way of saying NoSuchUpload.
                            _ if e.code == "AccessDenied" => {
                                let e = S3Error {
                                    status: 404,
                                    code: "NoSuchUpload".into(),
                                    message: format!("answered {e} for an upload id it does not know"),
                                };
                                Err(self.error(&what, Some(&key), Failure::S3(e)))
                            }
                            _ => Err(self.error(&what, Some(&key), Failure::S3(e))),
                        }
                    }
                    Err(f) => Err(self.error(&what, Some(&key), f)),
                }
            }
        }
    }

    pub fn abort_upload(&mut self, token: &str) -> Result<(), DestinationError> {
        let token = Token::decode(token).map_err(DestinationError::Invalid)?;
        match token {
            // The object exists from `upload-part` on: aborting removes it.
            Token::Single { key, .. } => self.delete_object(&format!("aborting the upload of {key}"), &key),
            Token::Multi { key, upload_id } => {
                let what = format!("aborting the upload of {key}");
                let make = |s: &Settings| {
                    let mut a = s.bucket.abort_multipart_upload(Some(&s.credentials), &key, &upload_id);
                    signed(s, &mut a, Vec::new(), &[], MAX_XML)
                };
                match self.perform(&what, false, &make) {
                    Ok(_) => Ok(()),
                    Err(Failure::S3(e))
                        if e.code == "NoSuchUpload" || (e.status == 404 && e.code != "NoSuchBucket") =>
                    {
                        Ok(())
                    }
                    // S3 says NoSuchUpload for an upload it does not know;
                    // s3s says AccessDenied. When the credentials are good
                    // for the bucket, take it as that.
                    Err(Failure::S3(e)) if e.code == "AccessDenied" => {
                        self.check_bucket(&what)?;
                        self.transport.warn(&format!(
                            "s3-upload: {what}: {e}, although the credentials work for bucket {}; taking the upload \
                             as unknown (finished or aborted before)",
                            self.settings.bucket_name
                        ));
                        Ok(())
                    }
                    Err(f) => Err(self.error(&what, Some(&key), f)),
                }
            }
        }
    }

    pub fn read(&mut self, key: &str, offset: u64, len: u32) -> Result<Vec<u8>, DestinationError> {
        let object_key = self.object_key(key)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let what = format!("reading {object_key}");
        let last = offset
            .checked_add(u64::from(len) - 1)
            .ok_or_else(|| DestinationError::Invalid(format!("{what}: offset {offset} + length {len} is past 2^64")))?;
        let range = format!("bytes={offset}-{last}");
        let make = |s: &Settings| {
            let mut a = s.bucket.get_object(Some(&s.credentials), &object_key);
            signed(s, &mut a, vec![("range".into(), range.clone())], &[], len as usize)
        };
        match self.perform(&what, false, &make) {
            Ok(r) if r.status == 206 => {
                if r.body.len() > len as usize {
                    return Err(DestinationError::Other(format!(
                        "{what}: asked for {len} bytes, {} sent {}",
                        self.settings.endpoint,
                        r.body.len()
                    )));
                }
                Ok(r.body)
            }
            // The whole object (the server ignored the range): fine when it
            // is what was asked for.
            Ok(r) if offset == 0 => Ok(r.body),
            Ok(r) => Err(DestinationError::Other(format!(
                "{what}: {} ignored the Range header (HTTP {})",
                self.settings.endpoint, r.status
            ))),
            // Reading at or past the end: no bytes.
            Err(Failure::S3(e)) if e.status == 416 || e.code == "InvalidRange" => Ok(Vec::new()),
            // Some servers (s3s) say NoSuchKey in a missing bucket.
            Err(Failure::S3(e)) if e.status == 404 && e.code != "NoSuchBucket" => {
                self.check_bucket(&what)?;
                Err(self.error(&what, Some(&object_key), Failure::S3(e)))
            }
            Err(f) => Err(self.error(&what, Some(&object_key), f)),
        }
    }

    pub fn stat(&mut self, key: &str) -> Result<Option<ObjectInfo>, DestinationError> {
        let object_key = self.object_key(key)?;
        self.head(&format!("looking up {object_key}"), &object_key, true)
    }

    pub fn list(&mut self, prefix: &str, cursor: Option<&str>) -> Result<ListPage, DestinationError> {
        if prefix.starts_with('/') || prefix.chars().any(char::is_control) {
            return Err(DestinationError::Invalid(format!(
                "{prefix:?} is not a valid key prefix"
            )));
        }
        let full = self.settings.object_key(prefix);
        let what = format!("listing {full}*");
        let make = |s: &Settings| {
            let mut a = ListObjectsV2::new(&s.bucket, Some(&s.credentials));
            if !full.is_empty() {
                a.with_prefix(full.as_str());
            }
            if let Some(c) = cursor {
                a.with_continuation_token(c);
            }
            a.with_max_keys(s.list_page_size);
            signed(s, &mut a, Vec::new(), &[], MAX_XML)
        };
        let r = self
            .perform(&what, false, &make)
            .map_err(|f| self.error(&what, None, f))?;
        let text = String::from_utf8_lossy(&r.body);
        let parsed = ListObjectsV2::parse_response(&text).map_err(|e| {
            DestinationError::Other(format!(
                "{what}: cannot read the listing of {}: {e}",
                self.settings.endpoint
            ))
        })?;
        let objects = parsed
            .contents
            .into_iter()
            .filter_map(|o| {
                Some(ObjectInfo {
                    key: self.settings.relative_key(&o.key)?.to_string(),
                    size: o.size.unwrap_or(0),
                    modified_ms: o.last_modified.as_deref().and_then(parse_time_ms),
                    etag: o.etag.as_deref().map(normalize_etag),
                    extras: Vec::new(),
                })
            })
            .collect();
        Ok(ListPage {
            objects,
            next_cursor: parsed.next_continuation_token,
        })
    }

    pub fn delete(&mut self, key: &str) -> Result<(), DestinationError> {
        let object_key = self.object_key(key)?;
        self.delete_object(&format!("deleting {object_key}"), &object_key)
    }

    fn delete_object(&mut self, what: &str, object_key: &str) -> Result<(), DestinationError> {
        let make = |s: &Settings| {
            let mut a = s.bucket.delete_object(Some(&s.credentials), object_key);
            signed(s, &mut a, Vec::new(), &[], MAX_XML)
        };
        match self.perform(what, false, &make) {
            Ok(_) => Ok(()),
            Err(Failure::S3(e)) if e.code == "NoSuchKey" || (e.status == 404 && e.code.is_empty()) => Ok(()),
            Err(f) => Err(self.error(what, Some(object_key), f)),
        }
    }
}

/// A request for a signed action (signed now, valid for `SIGNATURE_VALIDITY`).
fn signed<'a, 'b>(
    settings: &Settings,
    action: &mut impl S3Action<'a>,
    headers: Vec<(String, String)>,
    body: &'b [u8],
    max_response: usize,
) -> Request<'b> {
    for (k, v) in &headers {
        action.headers_mut().insert(k.clone(), v.clone());
    }
    Request {
        method: action_method(action),
        url: action.sign(SIGNATURE_VALIDITY),
        headers,
        body,
        max_response,
        timeout: settings.request_timeout(body.len()),
    }
}

/// The HTTP method of an action.
fn action_method<'a, A: S3Action<'a>>(_: &A) -> Method {
    A::METHOD
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A transport that answers from a script and records what was sent
    /// (the decisions above are tested here; the real exchange with an S3
    /// server is tested by the daemon's tests against s3s-fs).
    /// A request as sent: method, URL, headers, body.
    type Sent = (Method, String, Vec<(String, String)>, Vec<u8>);

    #[derive(Default)]
    struct Scripted {
        answers: VecDeque<Result<Response, TransportError>>,
        sent: Vec<Sent>,
        clock: Duration,
        slept: Vec<Duration>,
        warnings: Vec<String>,
    }

    impl Transport for Scripted {
        fn send(&mut self, r: &Request<'_>) -> Result<Response, TransportError> {
            self.sent
                .push((r.method, r.url.to_string(), r.headers.clone(), r.body.to_vec()));
            self.clock += Duration::from_millis(5);
            self.answers.pop_front().expect("the script has no more answers")
        }
        fn sleep(&mut self, d: Duration) {
            self.slept.push(d);
            self.clock += d;
        }
        fn now(&mut self) -> Duration {
            self.clock
        }
        fn random(&mut self) -> u64 {
            u64::MAX / 3
        }
        fn warn(&mut self, m: &str) {
            self.warnings.push(m.to_string());
        }
    }

    fn status(status: u16, headers: &[(&str, &str)], body: &str) -> Result<Response, TransportError> {
        Ok(Response {
            status,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: body.as_bytes().to_vec(),
        })
    }

    fn error(status: u16, code: &str) -> Result<Response, TransportError> {
        let body = format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>m &amp; n</Message></Error>");
        self::status(status, &[], &body)
    }

    fn client(script: Vec<Result<Response, TransportError>>, extra: &[(&str, &str)]) -> Client<Scripted> {
        let mut pairs = vec![
            ("endpoint", "http://127.0.0.1:9000"),
            ("bucket", "bkt"),
            ("prefix", "pre"),
            ("accessKeyId", "AK"),
            ("secretAccessKey", "SK"),
        ];
        pairs.extend_from_slice(extra);
        let settings =
            Settings::from_lookup(|k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string())).unwrap();
        let t = Scripted {
            answers: script.into(),
            ..Default::default()
        };
        Client::new(settings, t, Some(Duration::from_secs(600)))
    }

    #[test]
    fn errors_parse_and_classify() {
        let e = S3Error::parse(
            503,
            b"<Error><Code>SlowDown</Code><Message>a &lt;b&gt;</Message></Error>",
        )
        .unwrap();
        assert_eq!((e.code.as_str(), e.message.as_str()), ("SlowDown", "a <b>"));
        assert!(e.retryable());
        for (status, code, retry) in [
            (500, "InternalError", true),
            (400, "RequestTimeout", true),
            (503, "", true),
            (429, "", true),
            (408, "", true),
            (200, "InternalError", true),
            (200, "Whatever", true),
            (403, "AccessDenied", false),
            (403, "SignatureDoesNotMatch", false),
            (403, "InvalidAccessKeyId", false),
            (404, "NoSuchBucket", false),
            (412, "PreconditionFailed", false),
            (412, "", false),
            (501, "NotImplemented", false),
            (400, "BadDigest", false),
        ] {
            let e = S3Error {
                status,
                code: code.into(),
                message: String::new(),
            };
            assert_eq!(e.retryable(), retry, "{status} {code}");
        }
    }

    #[test]
    fn etags_and_times() {
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        // md5(md5("a") || md5("b")), the AWS multipart rule.
        let parts = [md5_hex(b"a"), format!("\"{}\"", md5_hex(b"b"))];
        let mut all = Md5::new();
        all.update(Md5::digest(b"a"));
        all.update(Md5::digest(b"b"));
        assert_eq!(multipart_etag(&parts).unwrap(), format!("{}-2", hex(&all.finalize())));
        assert_eq!(multipart_etag(&["not-an-md5".into()]), None);
        assert_eq!(parse_time_ms("Wed, 21 Oct 2015 07:28:00 GMT"), Some(1_445_412_480_000));
        assert_eq!(parse_time_ms("2015-10-21T07:28:00.000Z"), Some(1_445_412_480_000));
        assert_eq!(parse_time_ms("yesterday"), None);
    }

    #[test]
    fn throttling_is_retried_with_growing_jittered_waits() {
        let mut c = client(
            vec![
                error(503, "SlowDown"),
                Err(TransportError::Retry("connection reset".into())),
                error(500, "InternalError"),
                status(200, &[("ETag", "\"e1\"")], ""),
            ],
            &[],
        );
        let token = Token::Multi {
            key: "pre/k".into(),
            upload_id: "u".into(),
        }
        .encode();
        assert_eq!(c.upload_part(&token, 2, b"data").unwrap(), "e1");
        let t = &c.transport;
        assert_eq!(t.sent.len(), 4);
        // A third of each step (the scripted random), steps 200, 400, 800 ms.
        assert_eq!(
            t.slept,
            [66, 133, 266].map(Duration::from_millis),
            "full jitter over doubling steps"
        );
        assert_eq!(t.warnings.len(), 3);
        assert!(t.warnings[0].contains("SlowDown") && t.warnings[1].contains("connection reset"));
        // Every try carries the body's MD5 and is signed anew.
        for (method, url, headers, body) in &t.sent {
            assert_eq!(*method, Method::Put);
            assert!(url.contains("partNumber=2") && url.contains("uploadId=u") && url.contains("X-Amz-Signature="));
            assert!(url.contains("content-md5"), "Content-MD5 is a signed header: {url}");
            assert_eq!(body, b"data");
            assert!(headers.contains(&("content-md5".into(), content_md5(b"data"))));
        }
    }

    #[test]
    fn final_answers_are_not_retried_and_read_as_words() {
        let token = Token::Multi {
            key: "pre/k".into(),
            upload_id: "u".into(),
        }
        .encode();
        let mut c = client(vec![error(403, "SignatureDoesNotMatch")], &[]);
        let DestinationError::Denied(m) = c.upload_part(&token, 1, b"x").unwrap_err() else {
            panic!()
        };
        assert!(
            m.contains("credentials were refused by http://127.0.0.1:9000 for bucket bkt")
                && m.contains("SignatureDoesNotMatch"),
            "{m}"
        );
        assert_eq!(c.transport.sent.len(), 1);
        let mut c = client(vec![error(404, "NoSuchBucket")], &[]);
        let DestinationError::Invalid(m) = c.list("", None).unwrap_err() else {
            panic!()
        };
        assert!(m.contains("bucket bkt does not exist at http://127.0.0.1:9000"), "{m}");
        let mut c = client(vec![error(400, "EntityTooLarge")], &[]);
        assert!(matches!(
            c.upload_part(&token, 1, b"x"),
            Err(DestinationError::NoSpace(_))
        ));
        let mut c = client(vec![Err(TransportError::Final("HttpRequestDenied".into()))], &[]);
        let DestinationError::Denied(m) = c.read("k", 0, 4).unwrap_err() else {
            panic!()
        };
        assert!(m.contains("allowedHosts"), "{m}");
    }

    #[test]
    fn a_server_that_keeps_failing_is_given_up_within_the_budget() {
        let script = (0..MAX_ATTEMPTS).map(|_| error(503, "SlowDown")).collect();
        let mut c = client(script, &[("maxRetrySeconds", "2")]);
        let DestinationError::Unavailable(m) = c.stat("k").unwrap_err() else {
            panic!()
        };
        assert!(m.contains("kept failing") && m.contains("HTTP 503"), "{m}");
        assert!(c.transport.clock < Duration::from_secs(2), "{:?}", c.transport.clock);
        // Without retries: one try.
        let mut c = client(vec![error(503, "SlowDown")], &[("maxRetrySeconds", "0")]);
        assert!(matches!(c.stat("k"), Err(DestinationError::Unavailable(_))));
        assert_eq!(c.transport.sent.len(), 1);
        // The host's call limit bounds the budget too.
        let c = client(vec![], &[]);
        assert_eq!(c.retry_budget, Duration::from_secs(120));
        let c = Client::new(c.settings, Scripted::default(), Some(Duration::from_secs(30)));
        assert_eq!(c.retry_budget, Duration::from_secs(15));
    }

    #[test]
    fn complete_retries_an_error_in_a_200_and_recognises_its_own_earlier_success() {
        let receipts = vec![md5_hex(b"p1"), md5_hex(b"p2")];
        let expected = multipart_etag(&receipts).unwrap();
        let token = Token::Multi {
            key: "pre/n/1.wim".into(),
            upload_id: "u".into(),
        }
        .encode();
        let mut c = client(
            vec![
                error(200, "InternalError"),
                error(404, "NoSuchUpload"),
                status(
                    200,
                    &[("content-length", "12"), ("etag", &format!("\"{expected}\""))],
                    "",
                ),
            ],
            &[],
        );
        let info = c.finish_upload(&token, &receipts).unwrap();
        assert_eq!((info.key.as_str(), info.size), ("n/1.wim", 12));
        assert_eq!(info.etag.as_deref(), Some(expected.as_str()));
        let (method, url, headers, body) = &c.transport.sent[0];
        assert_eq!(*method, Method::Post);
        assert!(url.contains("uploadId=u"));
        let body = String::from_utf8(body.clone()).unwrap();
        assert!(
            body.contains("<PartNumber>2</PartNumber>") && body.contains(&receipts[1]),
            "{body}"
        );
        assert!(headers.contains(&("if-none-match".into(), "*".into())));
        assert!(headers.contains(&("content-md5".into(), content_md5(body.as_bytes()))));
        assert_eq!(c.transport.sent[2].0, Method::Head);

        // NoSuchUpload and another object there: not ours.
        let mut c = client(
            vec![
                error(404, "NoSuchUpload"),
                status(200, &[("content-length", "12"), ("etag", "\"other-2\"")], ""),
            ],
            &[],
        );
        let DestinationError::Invalid(m) = c.finish_upload(&token, &receipts).unwrap_err() else {
            panic!()
        };
        assert!(m.contains("no longer exists"), "{m}");
    }

    #[test]
    fn single_request_uploads() {
        let mut c = client(vec![status(404, &[], ""), status(200, &[], "")], &[]);
        // begin: HEAD says the key is free (and HEAD of the bucket that the
        // bucket exists); no other request.
        let token = c.begin_upload("n/1.wim", Some(3)).unwrap();
        assert_eq!(token, "s3u1:single:3:pre/n/1.wim");
        assert_eq!(c.transport.sent.len(), 2);
        assert!(matches!(
            c.upload_part(&token, 2, b"abc"),
            Err(DestinationError::Invalid(_))
        ));
        assert!(matches!(
            c.upload_part(&token, 1, b"ab"),
            Err(DestinationError::Invalid(_))
        ));
        // A PUT whose earlier try stored these bytes: 412, and HEAD shows our MD5.
        let ours = md5_hex(b"abc");
        let mut c = client(
            vec![
                Err(TransportError::Retry("reset".into())),
                error(412, "PreconditionFailed"),
                status(200, &[("content-length", "3"), ("etag", &format!("\"{ours}\""))], ""),
            ],
            &[],
        );
        assert_eq!(c.upload_part(&token, 1, b"abc").unwrap(), ours);
        let info = c.finish_upload(&token, std::slice::from_ref(&ours)).unwrap();
        assert_eq!((info.key.as_str(), info.size, info.etag), ("n/1.wim", 3, Some(ours)));
        assert_eq!(c.transport.sent.len(), 3, "finish makes no request");
        // An existing key is refused at begin.
        let mut c = client(vec![status(200, &[("content-length", "1")], "")], &[]);
        let DestinationError::Invalid(m) = c.begin_upload("n/1.wim", None).unwrap_err() else {
            panic!()
        };
        assert!(m.contains("already exists"), "{m}");
    }

    #[test]
    fn keys_are_checked() {
        let mut c = client(vec![], &[]);
        for bad in ["", "/abs", "a\nb"] {
            assert!(matches!(c.stat(bad), Err(DestinationError::Invalid(_))), "{bad:?}");
        }
        assert!(matches!(
            c.upload_part("bogus", 1, b""),
            Err(DestinationError::Invalid(_))
        ));
        assert!(c.read("k", 5, 0).unwrap().is_empty());
        assert!(c.transport.sent.is_empty());
    }
}
