//! Prometheus metrics: what the server did, for dashboards and alerts.
//!
//! Opt-in (`service.metrics.listen` in config.yaml, or `wimguard server
//! --metrics-listen ADDR`): the server then installs a recorder and serves
//! the text format at `http://ADDR/metrics`. Without it every recording
//! below is a no-op of the `metrics` facade. Labels are kinds, statuses,
//! stage and plugin names only — never paths, so a scrape leaks no layout
//! and the series stay few.
//!
//! Series (all prefixed `wimguard_`):
//! * `jobs_total{kind,status}`, `job_duration_seconds{kind,status}`,
//!   `jobs_running{kind}`: backups (`kind="backup"`, scheduled or not) and
//!   the other long operations (restore, verify, delete, forget, …).
//! * `bytes_read_total`, `bytes_stored_total`, `bytes_uploaded_total`:
//!   source bytes a backup read, bytes it added to archives, bytes it sent
//!   to a destination plugin.
//! * `stage_duration_seconds{stage}`, `stage_failures_total{stage}`: the
//!   backup pipeline's stages (pre-hooks, capture, upload, publish,
//!   retention, post-hooks).
//! * `plugin_calls_total{plugin,call}`, `plugin_call_failures_total{plugin,call}`,
//!   `plugin_call_duration_seconds{plugin,call}`: every call into a wasm
//!   plugin (codec chunks, hook events, destination operations).
//! * `store_retries_total{store,request}`: requests to a destination
//!   repeated after a transient failure (see `remote::retry`).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds (seconds) for jobs and stages: from a quick no-op backup
/// to a day-long first backup.
const JOB_BUCKETS: &[f64] = &[
    0.1,
    0.5,
    1.0,
    5.0,
    15.0,
    60.0,
    300.0,
    900.0,
    3600.0,
    4.0 * 3600.0,
    86_400.0,
];
/// Bucket bounds (seconds) for plugin calls: a codec chunk takes
/// microseconds to milliseconds, an upload part seconds.
const CALL_BUCKETS: &[f64] = &[1e-5, 1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0, 60.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns what renders it.
pub fn install() -> Result<&'static PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h);
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), JOB_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("wimguard_plugin_call_duration_seconds".into()),
                CALL_BUCKETS,
            )
        })
        .map_err(|e| format!("metrics: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| format!("metrics recorder: {e}"))?;
    describe();
    wimguard_plugin_host::metrics::enable();
    Ok(HANDLE.get_or_init(|| handle))
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("wimguard_jobs_total", "Jobs that ended, by kind and final status.");
    describe_histogram!(
        "wimguard_job_duration_seconds",
        Unit::Seconds,
        "How long jobs ran, by kind and status."
    );
    describe_gauge!("wimguard_jobs_running", "Jobs running now, by kind.");
    describe_counter!("wimguard_bytes_read_total", Unit::Bytes, "Source bytes backups read.");
    describe_counter!(
        "wimguard_bytes_stored_total",
        Unit::Bytes,
        "Bytes backups added to archives."
    );
    describe_counter!(
        "wimguard_bytes_uploaded_total",
        Unit::Bytes,
        "Bytes backups sent to destination plugins."
    );
    describe_histogram!(
        "wimguard_stage_duration_seconds",
        Unit::Seconds,
        "Time in each backup stage."
    );
    describe_counter!("wimguard_stage_failures_total", "Backup stages that failed.");
    describe_counter!("wimguard_plugin_calls_total", "Calls into wasm plugins.");
    describe_counter!(
        "wimguard_plugin_call_failures_total",
        "Calls into wasm plugins that failed."
    );
    describe_histogram!(
        "wimguard_plugin_call_duration_seconds",
        Unit::Seconds,
        "Time per wasm plugin call."
    );
}

/// Serves `GET /metrics` on `listener` until the process ends. One small
/// HTTP/1.1 server (hyper); anything but `/metrics` is a 404.
pub async fn serve(listener: tokio::net::TcpListener, handle: &'static PrometheusHandle) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| async move {
                let response = if req.uri().path() == "/metrics" {
                    Response::builder()
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .body(Full::new(Bytes::from(handle.render())))
                } else {
                    Response::builder()
                        .status(StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
                };
                response
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A scrape that never finishes must not hold a task forever.
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

/// Binds the metrics listener; refuses what is not an address.
pub async fn bind(listen: &str) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| format!("service.metrics.listen {listen:?} is not an address like 127.0.0.1:9464"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen for metrics on {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, local))
}

/// A job of `kind` began; pair with [`job_finished`].
pub fn job_started(kind: &'static str) {
    gauge!("wimguard_jobs_running", "kind" => kind).increment(1.0);
}

/// A job of `kind` ended with `status` after `elapsed`.
pub fn job_finished(kind: &'static str, status: &str, elapsed: Duration) {
    gauge!("wimguard_jobs_running", "kind" => kind).decrement(1.0);
    counter!("wimguard_jobs_total", "kind" => kind, "status" => status.to_owned()).increment(1);
    histogram!("wimguard_job_duration_seconds", "kind" => kind, "status" => status.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Runs job `kind` (restore, verify, delete, …), counted and timed.
pub fn job<T, E>(kind: &'static str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    job_started(kind);
    let start = Instant::now();
    let r = f();
    job_finished(kind, if r.is_ok() { "succeeded" } else { "failed" }, start.elapsed());
    r
}

/// What a finished backup moved.
pub fn backup_bytes(read: u64, stored: u64, uploaded: u64) {
    counter!("wimguard_bytes_read_total").increment(read);
    counter!("wimguard_bytes_stored_total").increment(stored);
    counter!("wimguard_bytes_uploaded_total").increment(uploaded);
}

/// One stage of a backup took `elapsed`; `ok` false when it failed.
pub fn stage(stage: &'static str, elapsed: Duration, ok: bool) {
    histogram!("wimguard_stage_duration_seconds", "stage" => stage).record(elapsed.as_secs_f64());
    if !ok {
        counter!("wimguard_stage_failures_total", "stage" => stage).increment(1);
    }
}

/// Times a stage: `let r = metrics::timed("capture", || …)`.
pub fn timed<T, E>(name: &'static str, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    let start = Instant::now();
    let r = f();
    stage(name, start.elapsed(), r.is_ok());
    r
}

/// Plugin calls are recorded by the plugin host.
pub use wimguard_plugin_host::metrics::plugin_call;

/// A request to destination `store` is being repeated after a transient failure.
pub fn store_retry(store: &str, request: &'static str) {
    if HANDLE.get().is_none() {
        return;
    }
    counter!("wimguard_store_retries_total", "store" => store.to_owned(), "request" => request).increment(1);
}
