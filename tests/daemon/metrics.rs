//! Issue 12 §9: the opt-in Prometheus endpoint, scraped while a backup
//! runs and after it: job counts and durations, bytes, stages, and calls
//! into a wasm codec plugin (the bundled XPRESS plugin, via
//! `standardCodecRuntime: wasm`).

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::harness::*;

/// One HTTP/1.1 GET; (status line, body).
fn get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or("").to_string(), body.to_string())
}

/// The value of the series `name{labels}` exactly as rendered, if present.
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn metrics_are_served_on_request_and_count_jobs_bytes_stages_and_plugin_calls() {
    let env = Env::new();
    // The backup waits in its pre-hook until the gate file exists, so the
    // scrapes below see it running however fast or slow the machine is.
    // (At most 5 minutes: a failed test must not leave the hook for long.)
    let gate = env.path("gate");
    env.write_config(&format!(
        "appSecret: metrics-test\nbackup:\n  standardCodecRuntime: wasm\nhooks:\n  pre:\n    - {{ command: [\"/bin/sh\", \"-c\", \"i=0; while [ ! -e '{}' ] && [ $i -lt 3000 ]; do sleep 0.1; i=$((i+1)); done\"], timeout: 300 }}\n",
        gate.display()
    ));
    let server = Server::start_with(&env.home, &["--metrics-listen", "127.0.0.1:0"], &[]);
    server.wait_for_log("metrics on http://");
    let log = server.log_text();
    let addr = log
        .split("metrics on http://")
        .nth(1)
        .and_then(|r| r.split("/metrics").next())
        .unwrap()
        .to_string();

    let (status, page) = get(&addr, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert_eq!(
        value(&page, "wimguard_jobs_total{kind=\"backup\",status=\"succeeded\"}"),
        None
    );
    let (status, _) = get(&addr, "/other");
    assert!(status.contains("404"), "{status}");

    // Scraped during a backup (held in its pre-hook): it shows as running.
    let big = env.path("big");
    cancel_source(&big, 11);
    let wim = env.path("m.wim");
    let bg = BgCli::spawn(
        &env.home,
        &backup_args(&big, &wim, &["--compression", "xpress", "--json"]),
    );
    let start = Instant::now();
    let mut seen_running = false;
    while start.elapsed() < Duration::from_secs(120) {
        let (_, page) = get(&addr, "/metrics");
        if value(&page, "wimguard_jobs_running{kind=\"backup\"}") == Some(1.0) {
            seen_running = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(&gate, b"").unwrap();
    let out = bg.wait(Duration::from_secs(300));
    assert!(out.ok(), "{}", out.describe());
    assert!(seen_running, "no scrape saw the backup running");
    let b = last_json(&out);
    assert_eq!(b["status"], "succeeded", "{b}");

    let target = env.path("restored");
    cli_ok(
        &env.home,
        &[
            os("restore"),
            os(b["uuid"].as_str().unwrap()),
            os("--target"),
            target.as_os_str(),
        ],
    );

    let (_, page) = get(&addr, "/metrics");
    assert_eq!(
        value(&page, "wimguard_jobs_total{kind=\"backup\",status=\"succeeded\"}"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(&page, "wimguard_jobs_running{kind=\"backup\"}"),
        Some(0.0),
        "{page}"
    );
    assert_eq!(
        value(&page, "wimguard_jobs_total{kind=\"restore\",status=\"succeeded\"}"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(
            &page,
            "wimguard_job_duration_seconds_count{kind=\"backup\",status=\"succeeded\"}"
        ),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(&page, "wimguard_bytes_read_total"),
        b["bytes_read"].as_f64(),
        "{page}"
    );
    assert_eq!(
        value(&page, "wimguard_bytes_stored_total"),
        b["bytes_stored"].as_f64(),
        "{page}"
    );
    for stage in ["capture", "publish"] {
        let series = format!("wimguard_stage_duration_seconds_count{{stage=\"{stage}\"}}");
        assert_eq!(value(&page, &series), Some(1.0), "{series}\n{page}");
    }
    // 48 MiB in 32 KiB chunks: at least 1,536 compress calls into the plugin.
    let calls = value(
        &page,
        "wimguard_plugin_calls_total{plugin=\"xpress\",call=\"compress\"}",
    )
    .unwrap_or(0.0);
    assert!(calls >= 1536.0, "compress calls {calls}\n{page}");
    assert_eq!(
        value(
            &page,
            "wimguard_plugin_call_failures_total{plugin=\"xpress\",call=\"compress\"}"
        ),
        None
    );
    assert!(
        page.contains("# TYPE wimguard_plugin_call_duration_seconds histogram"),
        "{page}"
    );
    server.stop();
}

/// Off unless asked for: no listener, nothing in the log.
#[test]
fn metrics_are_off_by_default() {
    let env = Env::new();
    let server = Server::start(&env.home);
    assert!(!server.log_text().contains("metrics on"), "{}", server.log_text());
    server.stop();
}
