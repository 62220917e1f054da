//! The bundled `s3-upload` destination plugin, called through the host
//! runtime (`WasmDestination`) against a real S3 server (s3s-fs, checking
//! SigV4), with the fault-injecting proxy in between where a test needs to
//! count requests or break them. Run: `cargo test --test integration destination::`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use wasmtime::component::Component;
use wimguard::bundled::bundled_plugins;
use wimguard::jobs::CoreError;
use wimguard::plugins::http::HostPattern;
use wimguard::plugins::{
    compile_component, DestinationError, PluginLimits, PluginSettings, SettingValue, WasmDestination,
};

use crate::common::faulty_proxy::{Fault, FaultyProxy, Rule};
use crate::common::s3::{S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};

const MIB: usize = 1 << 20;
/// The plugin's `prefix` in these tests.
const PREFIX: &str = "backups";

/// The bundled s3-upload component, compiled once per test process.
fn component() -> &'static Component {
    static C: OnceLock<Component> = OnceLock::new();
    C.get_or_init(|| {
        let b = bundled_plugins()
            .iter()
            .find(|b| b.name == "s3-upload")
            .expect("s3-upload is bundled");
        compile_component(b.bytes, None).expect("the bundled s3-upload compiles")
    })
}

/// How a test's destination is set up.
struct Dest<'a> {
    endpoint: String,
    allowed: Vec<String>,
    settings: Vec<(&'a str, String)>,
    limits: PluginLimits,
}

impl<'a> Dest<'a> {
    /// The plugin against `endpoint` (allowed), bucket BUCKET, prefix PREFIX,
    /// the server's key pair, a 60 s call limit.
    fn new(endpoint: &str, allowed: &str) -> Dest<'a> {
        Dest {
            endpoint: endpoint.to_string(),
            allowed: vec![allowed.to_string()],
            settings: vec![
                ("bucket", BUCKET.to_string()),
                ("prefix", PREFIX.to_string()),
                ("accessKeyId", ACCESS_KEY.to_string()),
                ("secretAccessKey", SECRET_KEY.to_string()),
            ],
            limits: PluginLimits {
                memory_bytes: 256 * MIB,
                call_timeout: Duration::from_secs(60),
            },
        }
    }

    fn direct(s3: &S3Server) -> Dest<'a> {
        Dest::new(&s3.endpoint(), &s3.allowed_host())
    }

    fn via(proxy: &FaultyProxy) -> Dest<'a> {
        Dest::new(&proxy.endpoint(), &proxy.allowed_host())
    }

    fn set(mut self, key: &'a str, value: &str) -> Dest<'a> {
        self.settings.retain(|(k, _)| *k != key);
        self.settings.push((key, value.to_string()));
        self
    }

    fn call_timeout(mut self, t: Duration) -> Dest<'a> {
        self.limits.call_timeout = t;
        self
    }

    fn allowed(mut self, hosts: &[&str]) -> Dest<'a> {
        self.allowed = hosts.iter().map(|h| h.to_string()).collect();
        self
    }

    fn build(self) -> WasmDestination {
        let mut settings = PluginSettings::new();
        settings.insert(
            "endpoint".into(),
            SettingValue {
                value: self.endpoint,
                secret: false,
            },
        );
        for (k, v) in self.settings {
            let secret = matches!(k, "accessKeyId" | "secretAccessKey" | "sessionToken");
            settings.insert(k.to_string(), SettingValue { value: v, secret });
        }
        let allowed = self.allowed.iter().map(|h| HostPattern::parse(h).unwrap()).collect();
        WasmDestination::new(component(), "s3-upload", settings, self.limits, allowed, false).unwrap()
    }
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn md5_hex(data: &[u8]) -> String {
    Md5::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// S3's ETag of an object completed from these parts.
fn multipart_etag(parts: &[&[u8]]) -> String {
    let mut all = Md5::new();
    for p in parts {
        all.update(Md5::digest(p));
    }
    let hex: String = all.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}-{}", parts.len())
}

/// Stores `data` at `key` with the single-request mode.
fn put(d: &WasmDestination, key: &str, data: &[u8]) -> String {
    let token = d.begin_upload(key, Some(data.len() as u64)).unwrap();
    let receipt = d.upload_part(&token, 1, data).unwrap();
    d.finish_upload(&token, &[receipt]).unwrap().etag.unwrap()
}

#[test]
fn destination_single_request_upload_with_a_size_hint() {
    let s3 = S3Server::start();
    let proxy = FaultyProxy::start(s3.addr());
    let d = Dest::via(&proxy).build();
    let data = bytes(300_000, 1);
    let token = d.begin_upload("nightly/000001.wim", Some(data.len() as u64)).unwrap();
    assert!(token.starts_with("s3u1:single:"), "{token}");
    assert_eq!(
        proxy.count("*"),
        2,
        "begin only checks that the key is free (HEAD of it and of the bucket)"
    );
    assert_eq!(proxy.count("HEAD"), 2);
    let receipt = d.upload_part(&token, 1, &data).unwrap();
    assert_eq!(receipt, md5_hex(&data), "the receipt is the object's ETag");
    let before = proxy.count("*");
    let info = d.finish_upload(&token, std::slice::from_ref(&receipt)).unwrap();
    assert_eq!(
        proxy.count("*"),
        before,
        "finishing a single-request upload makes no request"
    );
    assert_eq!(info.key, "nightly/000001.wim");
    assert_eq!(info.size, data.len() as u64);
    assert_eq!(info.etag.as_deref(), Some(receipt.as_str()));
    // One PUT carried the bytes, with their MD5 and the no-overwrite condition.
    let puts: Vec<_> = proxy.exchanges().into_iter().filter(|e| e.method == "PUT").collect();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0].request_body, data.len() as u64);
    assert!(
        puts[0].target.contains("content-md5") && puts[0].target.contains("if-none-match"),
        "Content-MD5 and If-None-Match are signed: {}",
        puts[0].target
    );
    assert_eq!(s3.object("backups/nightly/000001.wim").unwrap(), data);
    let stat = d.stat("nightly/000001.wim").unwrap().unwrap();
    assert_eq!((stat.size, stat.etag), (info.size, info.etag));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let modified = stat.modified_ms.expect("HEAD gives Last-Modified");
    assert!(modified.abs_diff(now_ms) < 120_000, "{modified} vs {now_ms}");
    // The host broke its promise: refused before anything is sent.
    let token = d.begin_upload("nightly/000002.wim", Some(10)).unwrap();
    for (part, len) in [(2, 10), (1, 9)] {
        let e = d.upload_part(&token, part, &vec![0; len]).unwrap_err();
        assert!(
            matches!(e, DestinationError::Invalid(ref m) if m.contains("one part of 10 bytes")),
            "{e:?}"
        );
    }
    assert_eq!(s3.object("backups/nightly/000002.wim"), None);
}

#[test]
fn destination_multipart_upload_out_of_order_with_a_replaced_part() {
    let s3 = S3Server::start();
    let d = Dest::direct(&s3).build();
    let (p1, p2_first, p2, p3) = (
        bytes(6 * MIB, 1),
        bytes(6 * MIB, 2),
        bytes(5 * MIB + 7, 3),
        bytes(123_457, 4),
    );
    let token = d.begin_upload("arch/000001.wim", None).unwrap();
    assert!(token.starts_with("s3u1:multi:"), "{token}");
    // Part 1 (the archive header) comes last, part 2 is sent twice: the
    // later bytes replace the earlier ones.
    let r2_first = d.upload_part(&token, 2, &p2_first).unwrap();
    let r3 = d.upload_part(&token, 3, &p3).unwrap();
    let r2 = d.upload_part(&token, 2, &p2).unwrap();
    let r1 = d.upload_part(&token, 1, &p1).unwrap();
    assert_ne!(r2, r2_first);
    assert_eq!(r1, md5_hex(&p1), "a part's receipt is its ETag");
    assert!(!s3.pending_upload_files().is_empty());
    let info = d.finish_upload(&token, &[r1, r2, r3]).unwrap();
    let whole = [p1.as_slice(), p2.as_slice(), p3.as_slice()].concat();
    assert_eq!(info.key, "arch/000001.wim");
    assert_eq!(info.size, whole.len() as u64);
    assert_eq!(info.etag.as_deref(), Some(multipart_etag(&[&p1, &p2, &p3]).as_str()));
    assert!(
        s3.object("backups/arch/000001.wim").unwrap() == whole,
        "the object is parts 1, 2 (second try), 3"
    );
    assert_eq!(
        s3.pending_upload_files(),
        Vec::<String>::new(),
        "nothing of the upload is left"
    );
    // Another instance (any instance) can use a token: it is self-contained.
    let d2 = Dest::direct(&s3).build();
    let token = d2.begin_upload("arch/000002.wim", None).unwrap();
    let r = d.upload_part(&token, 1, &p3).unwrap();
    assert_eq!(d2.finish_upload(&token, &[r]).unwrap().size, p3.len() as u64);
}

#[test]
fn destination_uploads_never_replace_an_object() {
    let s3 = S3Server::start();
    let d = Dest::direct(&s3).build();
    let original = bytes(1000, 9);
    put(&d, "n/000001.wim", &original);
    for hint in [Some(5), None] {
        let e = d.begin_upload("n/000001.wim", hint).unwrap_err();
        assert!(
            matches!(e, DestinationError::Invalid(ref m) if m.contains("already exists")),
            "{e:?}"
        );
        assert!(matches!(CoreError::from(e), CoreError::FailedPrecondition(_)));
    }
    // The key was free at begin and taken before the upload ended: the
    // conditional writes refuse, for both modes.
    let single = d.begin_upload("n/000002.wim", Some(4)).unwrap();
    let multi = d.begin_upload("n/000003.wim", None).unwrap();
    let receipt = d.upload_part(&multi, 1, b"late").unwrap();
    put(&d, "n/000002.wim", b"first");
    put(&d, "n/000003.wim", b"first");
    let e = d.upload_part(&single, 1, b"late").unwrap_err();
    assert!(
        matches!(e, DestinationError::Invalid(ref m) if m.contains("already exists")),
        "{e:?}"
    );
    let e = d.finish_upload(&multi, &[receipt]).unwrap_err();
    assert!(
        matches!(e, DestinationError::Invalid(ref m) if m.contains("already exists")),
        "{e:?}"
    );
    assert_eq!(s3.object("backups/n/000001.wim").unwrap(), original);
    assert_eq!(s3.object("backups/n/000002.wim").unwrap(), b"first");
    assert_eq!(s3.object("backups/n/000003.wim").unwrap(), b"first");
    d.abort_upload(&multi).unwrap();
}

#[test]
fn destination_ranged_reads_are_exact() {
    let s3 = S3Server::start();
    let proxy = FaultyProxy::start(s3.addr());
    let d = Dest::via(&proxy).build();
    let data = bytes(200_000, 5);
    put(&d, "r/000001.wim", &data);
    proxy.reset_counts();
    let size = data.len() as u64;
    for (offset, len, want) in [
        (0u64, 208u32, &data[..208]),
        (1000, 5000, &data[1000..6000]),
        (size - 10, 100, &data[data.len() - 10..]),
        (size - 1, 1, &data[data.len() - 1..]),
        (size, 10, &data[..0]),
        (size + 5, 10, &data[..0]),
    ] {
        let got = d.read("r/000001.wim", offset, len).unwrap();
        assert!(
            got == want,
            "read({offset}, {len}): {} bytes, want {}",
            got.len(),
            want.len()
        );
    }
    // One GET per read, and only the bytes asked for crossed the wire
    // (besides the short error answers of the two reads past the end).
    let gets = proxy.exchanges();
    assert_eq!(proxy.count("GET"), 6, "{gets:?}");
    let data_bytes: u64 = gets.iter().filter(|e| e.status == 206).map(|e| e.response_body).sum();
    assert_eq!(data_bytes, 208 + 5000 + 10 + 1);
    assert!(proxy.response_body_bytes("GET") < data_bytes + 1024);
    assert_eq!(gets.iter().filter(|e| e.status == 416).count(), 2);
    assert!(
        gets.iter().all(|e| e.target.contains("range")),
        "the Range header is signed"
    );
    assert!(d.read("r/000001.wim", 7, 0).unwrap().is_empty());
    let e = d.read("r/missing.wim", 0, 10).unwrap_err();
    assert!(
        matches!(e, DestinationError::NotFound(ref m) if m.contains("backups/r/missing.wim")),
        "{e:?}"
    );
}

#[test]
fn destination_stat_and_delete() {
    let s3 = S3Server::start();
    let d = Dest::direct(&s3).build();
    assert_eq!(d.stat("s/000001.wim").unwrap(), None);
    let etag = put(&d, "s/000001.wim", b"hello");
    let info = d.stat("s/000001.wim").unwrap().unwrap();
    assert_eq!(
        (info.key.as_str(), info.size, info.etag.as_deref()),
        ("s/000001.wim", 5, Some(etag.as_str()))
    );
    d.delete("s/000001.wim").unwrap();
    assert_eq!(d.stat("s/000001.wim").unwrap(), None);
    assert!(!s3.object_path("backups/s/000001.wim").exists());
    d.delete("s/000001.wim").unwrap();
    d.delete("s/never-was.wim").unwrap();
    for bad in ["", "/abs/key", "a\nb"] {
        assert!(matches!(d.stat(bad), Err(DestinationError::Invalid(_))), "{bad:?}");
    }
}

#[test]
fn destination_list_pages_through_many_keys() {
    let s3 = S3Server::start();
    let d = Dest::direct(&s3).set("listPageSize", "7").build();
    let mut want: Vec<String> = (0..25).map(|i| format!("arch/{i:06}.wim")).collect();
    for (i, k) in want.iter().enumerate() {
        put(&d, k, &bytes(10 + i, i as u64));
    }
    for k in ["other/000001.wim", "other/000002.wim", "archive-not/000001.wim"] {
        put(&d, k, b"x");
    }
    // Outside the plugin's prefix: never listed.
    let outside = Dest::direct(&s3).set("prefix", "elsewhere").build();
    put(&outside, "arch/000099.wim", b"y");

    let mut got = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let (objects, next) = d.list("arch/", cursor.as_deref()).unwrap();
        pages += 1;
        assert!(objects.len() <= 7);
        got.extend(objects);
        match next {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(pages < 10, "the listing does not end");
    }
    assert_eq!(pages, 4);
    want.sort();
    let keys: Vec<&str> = got.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, want);
    for (i, o) in got.iter().enumerate() {
        assert_eq!(o.size, 10 + i as u64, "{}", o.key);
        // s3s-fs lists no ETags; S3 does.
        if let Some(etag) = &o.etag {
            assert_eq!(*etag, md5_hex(&bytes(10 + i, i as u64)));
        }
        assert!(o.modified_ms.is_some());
    }
    // The whole prefix: 28 of ours, not the one under `elsewhere/`.
    let mut all = 0;
    let mut cursor: Option<String> = None;
    loop {
        let (objects, next) = d.list("", cursor.as_deref()).unwrap();
        assert!(objects
            .iter()
            .all(|o| !o.key.starts_with(PREFIX) && !o.key.starts_with("elsewhere")));
        all += objects.len();
        cursor = next;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(all, 28);
    assert_eq!(s3.objects().len(), 29);
}

#[test]
fn destination_wrong_secret_is_denied_naming_endpoint_and_bucket() {
    let s3 = S3Server::start();
    let proxy = FaultyProxy::start(s3.addr());
    let d = Dest::via(&proxy).set("secretAccessKey", "not-the-secret").build();
    let e = d.list("", None).unwrap_err();
    let DestinationError::Denied(m) = &e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("plugin s3-upload")
            && m.contains(&format!(
                "credentials were refused by {} for bucket {BUCKET}",
                proxy.endpoint()
            ))
            && m.contains("SignatureDoesNotMatch"),
        "{m}"
    );
    assert!(!m.contains("not-the-secret") && !m.contains(SECRET_KEY), "{m}");
    assert_eq!(proxy.count("*"), 1, "a refused signature is not retried");
    assert!(matches!(CoreError::from(e), CoreError::PermissionDenied(_)));
    // An unknown key id, through the upload path (HEAD answers carry no body).
    let d = Dest::via(&proxy).set("accessKeyId", "AKIDNOBODY").build();
    let e = d.begin_upload("k/000001.wim", None).unwrap_err();
    assert!(
        matches!(e, DestinationError::Denied(ref m) if m.contains("credentials were refused") && m.contains(BUCKET)),
        "{e:?}"
    );
}

#[test]
fn destination_missing_bucket_is_named() {
    let s3 = S3Server::start();
    let d = Dest::direct(&s3).set("bucket", "no-such-bucket").build();
    let endpoint = s3.endpoint();
    let clear = |e: DestinationError| {
        assert!(
            matches!(&e, DestinationError::Invalid(m)
                if m.contains(&format!("bucket no-such-bucket does not exist at {endpoint}"))),
            "{e:?}"
        );
    };
    clear(d.list("", None).unwrap_err());
    clear(d.stat("k").unwrap_err());
    clear(d.begin_upload("k/000001.wim", None).unwrap_err());
    clear(d.begin_upload("k/000001.wim", Some(3)).unwrap_err());
    clear(d.read("k/000001.wim", 0, 3).unwrap_err());
}

#[test]
fn destination_retries_ride_out_throttling_resets_and_errors_in_200() {
    let s3 = S3Server::start();
    let proxy = FaultyProxy::start(s3.addr());
    let d = Dest::via(&proxy).build();
    let (p1, p2) = (bytes(5 * MIB, 11), bytes(300_000, 12));
    let token = d.begin_upload("t/000001.wim", None).unwrap();
    proxy.inject(Rule::new(Fault::SlowDown).method("PUT").times(3));
    proxy.inject(Rule::new(Fault::Reset).method("PUT").times(2));
    let r2 = d.upload_part(&token, 2, &p2).unwrap();
    let r1 = d.upload_part(&token, 1, &p1).unwrap();
    assert_eq!(proxy.count("PUT"), 2 + 5, "five failed tries, then both parts");
    // Complete answers 200 with an <Error> (not forwarded: not done), then works.
    proxy.inject(Rule::new(Fault::ErrorIn200).method("POST").target_contains("uploadId="));
    let info = d.finish_upload(&token, &[r1, r2]).unwrap();
    assert_eq!(info.etag.as_deref(), Some(multipart_etag(&[&p1, &p2]).as_str()));
    assert_eq!(s3.object("backups/t/000001.wim").unwrap(), [p1, p2].concat());
    let completes = proxy
        .exchanges()
        .into_iter()
        .filter(|e| e.method == "POST" && e.target.contains("uploadId="))
        .count();
    assert_eq!(completes, 2);
    // Reads and stats ride out throttling too.
    proxy.inject(Rule::new(Fault::SlowDown).method("GET").times(2));
    proxy.inject(Rule::new(Fault::Reset).method("HEAD").times(1));
    assert_eq!(d.read("t/000001.wim", 3, 4).unwrap().len(), 4);
    assert!(d.stat("t/000001.wim").unwrap().is_some());
}

#[test]
fn destination_a_completed_upload_whose_answer_was_lost_is_recognised() {
    let s3 = S3Server::start();
    let proxy = FaultyProxy::start(s3.addr());
    let d = Dest::via(&proxy).build();
    let p1 = bytes(400_000, 21);
    let token = d.begin_upload("l/000001.wim", None).unwrap();
    let r1 = d.upload_part(&token, 1, &p1).unwrap();
    // The server completes the upload but its answer never arrives: the
    // retry is told NoSuchUpload, and the object's ETag shows it is ours.
    proxy.inject(Rule::new(Fault::LoseAnswer).method("POST").target_contains("uploadId="));
    let info = d.finish_upload(&token, std::slice::from_ref(&r1)).unwrap();
    assert_eq!(info.size, p1.len() as u64);
    assert_eq!(info.etag.as_deref(), Some(multipart_etag(&[&p1]).as_str()));
    assert_eq!(s3.object("backups/l/000001.wim").unwrap(), p1);
    // The same for a single PUT whose answer was lost (412 on the retry).
    let data = bytes(2000, 22);
    let token = d.begin_upload("l/000002.wim", Some(data.len() as u64)).unwrap();
    proxy.inject(Rule::new(Fault::LoseAnswer).method("PUT"));
    assert_eq!(d.upload_part(&token, 1, &data).unwrap(), md5_hex(&data));
    // And the host finishing twice is harmless.
    let token = d.begin_upload("l/000003.wim", None).unwrap();
    let r = d.upload_part(&token, 1, &data).unwrap();
    let first = d.finish_upload(&token, std::slice::from_ref(&r)).unwrap();
    assert_eq!(d.finish_upload(&token, &[r]).unwrap(), first);
}

#[test]
fn destination_a_server_that_keeps_failing_ends_unavailable_within_the_budget() {
    let s3 = S3Server::start();
    let proxy = FaultyProxy::start(s3.addr());
    let d = Dest::via(&proxy).set("maxRetrySeconds", "2").build();
    proxy.inject(Rule::new(Fault::SlowDown).times(10_000));
    let started = Instant::now();
    let e = d.begin_upload("f/000001.wim", None).unwrap_err();
    let took = started.elapsed();
    let DestinationError::Unavailable(m) = &e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("kept failing") && m.contains("HTTP 503") && m.contains(&proxy.endpoint()),
        "{m}"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    let tries = proxy.count("*");
    assert!((2..=12).contains(&tries), "{tries} tries");
    assert!(matches!(CoreError::from(e), CoreError::Unavailable(_)));
    // The call limit bounds the retries as well: half of a 10 s limit
    // (maxRetrySeconds is 120 by default), leaving the other half for a
    // slow machine's last round trip, so the retries give up before the
    // host's limit cuts the call off.
    let d = Dest::via(&proxy).call_timeout(Duration::from_secs(10)).build();
    let started = Instant::now();
    let e = d.stat("f/000001.wim");
    assert!(matches!(e, Err(DestinationError::Unavailable(_))), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

#[test]
fn destination_abort_frees_the_upload() {
    let s3 = S3Server::start();
    let d = Dest::direct(&s3).build();
    let token = d.begin_upload("a/000001.wim", None).unwrap();
    let r1 = d.upload_part(&token, 1, &bytes(6 * MIB, 31)).unwrap();
    d.upload_part(&token, 2, b"tail").unwrap();
    assert!(!s3.pending_upload_files().is_empty());
    d.abort_upload(&token).unwrap();
    assert_eq!(s3.pending_upload_files(), Vec::<String>::new(), "the parts are gone");
    d.abort_upload(&token).unwrap();
    let e = d.finish_upload(&token, &[r1, "x".into()]).unwrap_err();
    assert!(
        matches!(e, DestinationError::Invalid(ref m) if m.contains("no longer exists")),
        "{e:?}"
    );
    assert_eq!(s3.object("backups/a/000001.wim"), None);
    // A single-request upload stores its object at `upload-part`; aborting
    // removes it, so the key is free again.
    let token = d.begin_upload("a/000002.wim", Some(3)).unwrap();
    d.abort_upload(&token).unwrap();
    d.upload_part(&token, 1, b"abc").unwrap();
    assert!(s3.object("backups/a/000002.wim").is_some());
    d.abort_upload(&token).unwrap();
    assert_eq!(s3.object("backups/a/000002.wim"), None);
    put(&d, "a/000002.wim", b"again");
    // Tokens of someone else are refused in words.
    let e = d.abort_upload("upload-42").unwrap_err();
    assert!(
        matches!(e, DestinationError::Invalid(ref m) if m.contains("not an upload token")),
        "{e:?}"
    );
}

#[test]
fn destination_cancel_stops_a_call_stuck_on_a_stalled_server() {
    let s3 = S3Server::start();
    let proxy = FaultyProxy::start(s3.addr());
    let d = Dest::via(&proxy).call_timeout(Duration::from_secs(300)).build();
    put(&d, "c/000001.wim", b"0123456789");
    proxy.inject(Rule::new(Fault::Stall(Duration::from_secs(120))).method("GET"));
    let flag = Arc::new(AtomicBool::new(false));
    let cancellable = d.with_cancel(flag.clone());
    let raise = std::thread::scope(|s| {
        let raise = s.spawn(|| {
            // Raised once the GET is stuck in the stall (not before it is
            // sent: that would test the check before a call instead).
            let waiting = Instant::now();
            while proxy.faults_pending() > 0 && waiting.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(10));
            }
            std::thread::sleep(Duration::from_millis(100));
            flag.store(true, Ordering::Relaxed);
            Instant::now()
        });
        let e = cancellable.read("c/000001.wim", 0, 10).unwrap_err();
        let stopped = Instant::now();
        (e, raise.join().unwrap(), stopped)
    });
    let (e, raised, stopped) = raise;
    assert_eq!(proxy.faults_pending(), 0, "the GET reached the stall");
    assert_eq!(e, DestinationError::Cancelled);
    let took = stopped.saturating_duration_since(raised);
    assert!(
        took < Duration::from_secs(5),
        "stopped {took:?} after the flag was raised"
    );
    assert!(matches!(CoreError::from(e), CoreError::Cancelled));
    // A raised flag stops the next call at once; the plain handle still works.
    assert_eq!(cancellable.stat("c/000001.wim"), Err(DestinationError::Cancelled));
    assert_eq!(d.read("c/000001.wim", 2, 3).unwrap(), b"234");

    // Without a cancel, the call time limit stops the stall, naming plugin and limit.
    proxy.inject(Rule::new(Fault::Stall(Duration::from_secs(120))).method("GET"));
    let limited = Dest::via(&proxy).call_timeout(Duration::from_secs(2)).build();
    let started = Instant::now();
    let e = limited.read("c/000001.wim", 0, 10).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    assert!(
        matches!(e, DestinationError::Failed(ref m)
            if m.contains("plugin s3-upload") && m.contains("`read`") && m.contains("time limit of 2s")),
        "{e:?}"
    );
    assert!(matches!(CoreError::from(e), CoreError::Internal(_)));
    assert_eq!(limited.read("c/000001.wim", 0, 4).unwrap(), b"0123");
}

#[test]
fn destination_hosts_outside_the_allow_list_are_refused() {
    let s3 = S3Server::start();
    let proxy = FaultyProxy::start(s3.addr());
    let d = Dest::via(&proxy).allowed(&["127.0.0.1:1"]).build();
    let e = d.list("", None).unwrap_err();
    assert!(
        matches!(&e, DestinationError::Denied(m) if m.contains("allowedHosts") && m.contains("refused")),
        "{e:?}"
    );
    // A name that resolves to loopback is refused too (DNS rebinding), even
    // with the right port.
    let port = proxy.addr().port();
    let d = Dest::new(&format!("http://localhost:{port}"), &format!("localhost:{port}")).build();
    let e = d.stat("k").unwrap_err();
    assert!(
        matches!(&e, DestinationError::Denied(m) if m.contains("loopback")),
        "{e:?}"
    );
    assert_eq!(proxy.count("*"), 0, "no request left the sandbox");
}

#[test]
fn destination_bad_settings_fail_the_first_call_in_words() {
    let s3 = S3Server::start();
    let d = Dest::direct(&s3).set("bucket", "").build();
    let e = d.stat("k").unwrap_err();
    assert!(
        matches!(&e, DestinationError::Invalid(m)
            if m.contains("plugin s3-upload: init failed: bad configuration: missing setting `bucket`")),
        "{e:?}"
    );
    assert!(matches!(CoreError::from(e), CoreError::FailedPrecondition(_)));
}

#[test]
fn destination_concurrent_calls_share_a_pool_of_instances() {
    let s3 = S3Server::start();
    let d = Dest::direct(&s3).build();
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..4 {
                    let key = format!("p/{t}-{i}.wim");
                    let data = bytes(1000 + t * 10 + i, (t * 10 + i) as u64);
                    put(&d, &key, &data);
                    assert_eq!(d.read(&key, 0, data.len() as u32).unwrap(), data);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s3.objects().len(), 24);
}

#[test]
fn destination_the_registry_hands_out_the_bundled_plugin() {
    use wimguard::catalog::Catalog;
    use wimguard::config::{PluginConfig, PluginInstallConfig};
    use wimguard::plugins::PluginRegistry;

    let s3 = S3Server::start();
    // Secrets come from the server's environment, by variable name.
    std::env::set_var("WIMGUARD_TEST_S3_KEY_ID", ACCESS_KEY);
    std::env::set_var("WIMGUARD_TEST_S3_SECRET", SECRET_KEY);
    let home = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&home.path().join("catalog.sqlite")).unwrap());
    let cfg = PluginConfig {
        settings: [
            ("endpoint".to_string(), s3.endpoint()),
            ("bucket".to_string(), BUCKET.to_string()),
        ]
        .into(),
        secrets: [
            ("accessKeyId".to_string(), "WIMGUARD_TEST_S3_KEY_ID".to_string()),
            ("secretAccessKey".to_string(), "WIMGUARD_TEST_S3_SECRET".to_string()),
        ]
        .into(),
        allowed_hosts: vec![s3.allowed_host()],
        ..PluginConfig::default()
    };
    let registry = PluginRegistry::open(
        home.path(),
        catalog,
        [("s3-upload".to_string(), cfg)],
        &PluginInstallConfig::default(),
    )
    .unwrap();
    registry.register_bundled(bundled_plugins()).unwrap();
    let d = registry.destination("s3-upload").unwrap();
    assert_eq!(d.name(), "s3-upload");
    assert_eq!(
        d.limits().call_timeout,
        Duration::from_secs(600),
        "the destinations' default"
    );
    put(&d, "reg/000001.wim", b"through the registry");
    assert_eq!(s3.object("reg/000001.wim").unwrap(), b"through the registry");
    // The same handle (and pool) again.
    assert_eq!(
        registry
            .destination("s3-upload")
            .unwrap()
            .stat("reg/000001.wim")
            .unwrap()
            .unwrap()
            .size,
        20
    );
    let err = |r: Result<WasmDestination, wimguard::plugins::registry::RegistryError>| {
        CoreError::from(r.err().expect("an error"))
    };
    assert!(matches!(err(registry.destination("webhook")), CoreError::InvalidArgument(m) if m.contains("hook plugin")));
    assert!(matches!(err(registry.destination("nope")), CoreError::NotFound(_)));
    registry.set_enabled("s3-upload", false).unwrap();
    assert!(
        matches!(err(registry.destination("s3-upload")), CoreError::FailedPrecondition(m) if m.contains("disabled"))
    );
}

#[test]
fn destination_16_mib_parts_fit_in_24_mib_of_plugin_memory() {
    // The daemon uploads parts of 16 MiB and more: the plugin holds a part
    // once (no copies of it), so 16 MiB parts fit in 24 MiB of memory
    // (20 MiB is enough today; 4 MiB is not: the limit is real).
    let s3 = S3Server::start();
    let mut dest = Dest::direct(&s3);
    dest.limits.memory_bytes = 24 * MIB;
    let d = dest.build();
    let (p1, p2) = (bytes(16 * MIB, 41), bytes(16 * MIB, 42));
    let token = d.begin_upload("big/000001.wim", None).unwrap();
    let started = Instant::now();
    let r2 = d.upload_part(&token, 2, &p2).unwrap();
    let r1 = d.upload_part(&token, 1, &p1).unwrap();
    let r1_again = d.upload_part(&token, 1, &p1).unwrap();
    assert_eq!(r1, r1_again);
    eprintln!("three 16 MiB parts uploaded in {:?}", started.elapsed());
    let info = d.finish_upload(&token, &[r1, r2]).unwrap();
    assert_eq!(info.size, 32 * MIB as u64);
    assert!(s3.object("backups/big/000001.wim").unwrap() == [p1, p2].concat());
    // A single request of 16 MiB too.
    let one = bytes(16 * MIB, 43);
    put(&d, "big/000002.wim", &one);
    assert_eq!(d.read("big/000002.wim", 0, 16 * MIB as u32).unwrap(), one);
}
