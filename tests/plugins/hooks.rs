//! The hook stage: command hooks from config, hook plugins attached with
//! `--plugin` (veto, limits, failure policy, the HTTP allow-list), and the
//! bundled webhook plugin posting to a real HTTP server on loopback.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::fixtures;
use crate::harness::*;

fn secret() -> String {
    "s".repeat(64)
}

fn small_source(dir: &Path) -> std::path::PathBuf {
    let src = dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), "some data\n".repeat(100)).unwrap();
    src
}

#[test]
fn command_hooks_veto_warn_and_see_the_backup() {
    let env = Env::new();
    let marks = env.path("marks");
    fs::create_dir_all(&marks).unwrap();
    // pre: one fail-open command that fails, one that records its env;
    // post: one that records the outcome.
    env.write_config(&format!(
        r#"appSecret: {secret}
hooks:
  pre:
    - command: ["/bin/sh", "-c", "exit 9"]
      failure-policy: fail-open
    - name: record
      command: ["/bin/sh", "-c", "echo \"$WIMGUARD_BACKUP_ID $WIMGUARD_SOURCE $1\" > {marks}/pre", "sh", "literal $HOME; no shell"]
      timeout: 10
  post:
    - command: ["/bin/sh", "-c", "echo \"$WIMGUARD_EVENT $WIMGUARD_STATUS $WIMGUARD_FILES $WIMGUARD_IMAGE_INDEX\" > {marks}/post"]
"#,
        secret = secret(),
        marks = marks.display()
    ));
    let _server = Server::start(&env.home);
    let src = small_source(&env.dir);
    let b = backup(&env.home, &src, &env.path("a.wim"), &[]);
    let uuid = uuid_of(&b);
    assert_eq!(
        fs::read_to_string(marks.join("pre")).unwrap(),
        format!(
            "{uuid} {} literal $HOME; no shell\n",
            src.canonicalize().unwrap().display()
        )
    );
    assert_eq!(
        fs::read_to_string(marks.join("post")).unwrap(),
        "post-backup succeeded 1 1\n"
    );
    let warnings = b["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("exited with status 9")),
        "the fail-open failure is not a warning: {b}"
    );
}

#[test]
fn a_failing_fail_closed_command_stops_the_backup_before_anything_is_written() {
    let env = Env::new();
    env.write_config(&format!(
        "appSecret: {}\nhooks:\n  pre:\n    - name: dump-db\n      command: [\"/bin/sh\", \"-c\", \"echo 'database is down' >&2; exit 4\"]\n",
        secret()
    ));
    let _server = Server::start(&env.home);
    let src = small_source(&env.dir);
    let wim = env.path("a.wim");
    let out = backup_out(&env.home, &src, &wim, &[]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let b = last_json(&out);
    let err = b["error"].as_str().unwrap();
    assert!(
        err.contains("dump-db") && err.contains("database is down") && err.contains("nothing was written"),
        "{b}"
    );
    assert!(!wim.exists());
}

fn hook_server(mode: &str, extra: &str) -> (Env, Server) {
    let env = Env::new();
    env.write_config(&format!(
        "appSecret: {}\nplugins:\n  hostile-hook:\n    settings: {{ mode: {mode}, url: \"http://203.0.113.9:81/x\" }}\n{extra}",
        secret()
    ));
    let server = Server::start(&env.home);
    cli_ok(
        &env.home,
        &[os("plugin"), os("install"), fixtures::hostile_hook().as_os_str()],
    );
    (env, server)
}

#[test]
fn hook_plugins_veto_and_are_confined() {
    // A veto: the backup fails with the hook's reason, nothing written.
    let (env, _s) = hook_server("veto", "");
    let src = small_source(&env.dir);
    let wim = env.path("v.wim");
    let out = backup_out(&env.home, &src, &wim, &["--plugin", "hostile-hook"]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let b = last_json(&out);
    assert!(b["error"].as_str().unwrap().contains("hostile-hook says no"), "{b}");
    assert_eq!(b["plugins"][0], "hostile-hook");
    assert!(!wim.exists());

    // An endless loop under fail-closed: stopped by the time limit, backup fails.
    let (env, _s) = hook_server("loop", "    limits: { callTimeoutSeconds: 0.5 }\n");
    let src = small_source(&env.dir);
    let out = backup_out(&env.home, &src, &env.path("l.wim"), &["--plugin", "hostile-hook"]);
    let b = last_json(&out);
    assert_eq!(b["status"], "failed", "{b}");
    let err = b["error"].as_str().unwrap();
    assert!(err.contains("hostile-hook") && err.contains("time limit"), "{err}");
    // ...and under fail-open: the backup goes on with a warning.
    let (env, _s) = hook_server("bomb", "    limits: { memoryMib: 16 }\n    failurePolicy: fail-open\n");
    let src = small_source(&env.dir);
    let b = backup(&env.home, &src, &env.path("b.wim"), &["--plugin", "hostile-hook"]);
    let warnings = b["warnings"].to_string();
    assert!(
        warnings.contains("hostile-hook") && warnings.contains("memory limit"),
        "{b}"
    );

    // A request to a host that is not allowed never leaves the machine.
    let (env, server) = hook_server("http", "");
    let src = small_source(&env.dir);
    let out = backup_out(&env.home, &src, &env.path("h.wim"), &["--plugin", "hostile-hook"]);
    let b = last_json(&out);
    let err = b["error"].as_str().unwrap();
    assert!(
        err.contains("http request failed") && err.contains("refused by the sandbox") && err.contains("203.0.113.9"),
        "{err}"
    );
    assert!(
        server.log_text().contains("refused HTTP request"),
        "{}",
        server.log_text()
    );

    // A hook that cannot start (init refuses) under fail-closed.
    let (env, _s) = hook_server("init-fail", "");
    let src = small_source(&env.dir);
    let out = backup_out(&env.home, &src, &env.path("i.wim"), &["--plugin", "hostile-hook"]);
    let b = last_json(&out);
    assert!(
        b["error"].as_str().unwrap().contains("hostile-hook refuses to start"),
        "{b}"
    );

    // Unknown and wrong-kind plugins are refused up front.
    let out = backup_out(&env.home, &src, &env.path("u.wim"), &["--plugin", "nope"]);
    assert_eq!(out.code(), Some(4), "{}", out.describe());
}

/// A tiny HTTP/1.1 server on loopback that records every request.
struct Recorder {
    port: u16,
    requests: Arc<Mutex<Vec<(String, Vec<(String, String)>, String)>>>,
}

impl Recorder {
    fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut headers = Vec::new();
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    let (k, v) = h.trim().split_once(':').unwrap_or((h.trim(), ""));
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                    if k == "content-length" {
                        len = v.parse().unwrap_or(0);
                    }
                    headers.push((k, v));
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                seen.lock()
                    .unwrap()
                    .push((line.trim().to_string(), headers, String::from_utf8_lossy(&body).into()));
                let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
            }
        });
        Recorder { port, requests }
    }
}

#[test]
fn the_webhook_plugin_posts_json_to_an_allowed_host() {
    let hook = Recorder::start();
    let env = Env::new();
    env.write_config(&format!(
        r#"appSecret: {}
plugins:
  webhook:
    settings: {{ url: "http://127.0.0.1:{port}/backup-events" }}
    secrets: {{ token: TEST_WEBHOOK_TOKEN }}
    allowedHosts: ["127.0.0.1:{port}"]
"#,
        secret(),
        port = hook.port
    ));
    let _server = Server::start_with_env(&env.home, &[("TEST_WEBHOOK_TOKEN", "tok-123")]);
    let src = small_source(&env.dir);
    let b = backup(&env.home, &src, &env.path("w.wim"), &["--plugin", "webhook"]);
    let uuid = uuid_of(&b);
    let reqs = hook.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 2, "{reqs:#?}");
    for (line, headers, _) in &reqs {
        assert_eq!(line, "POST /backup-events HTTP/1.1");
        let h = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(h("content-type"), Some("application/json"));
        assert_eq!(h("authorization"), Some("Bearer tok-123"));
    }
    let pre: Value = serde_json::from_str(&reqs[0].2).unwrap();
    assert_eq!(pre["event"], "pre-backup");
    assert_eq!(pre["backup_id"], uuid.as_str());
    assert_eq!(pre["sources"][0], src.canonicalize().unwrap().display().to_string());
    let post: Value = serde_json::from_str(&reqs[1].2).unwrap();
    assert_eq!(post["event"], "post-backup");
    assert_eq!(post["backup_id"], uuid.as_str());
    assert_eq!(post["succeeded"], true);
    assert_eq!(post["files"], 1);
    assert!(post["error"].is_null());
    assert_eq!(post["bytes_read"], b["bytes_read"]);
}

#[test]
fn a_hook_waiting_on_a_silent_server_is_stopped_by_its_time_limit() {
    // Accepts connections (the kernel's backlog) but never answers.
    let tarpit = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tarpit.local_addr().unwrap().port();
    let env = Env::new();
    env.write_config(&format!(
        "appSecret: {}\nplugins:\n  hostile-hook:\n    settings: {{ mode: http, url: \"http://127.0.0.1:{port}/x\" }}\n    \
         allowedHosts: [\"127.0.0.1:{port}\"]\n    limits: {{ callTimeoutSeconds: 1 }}\n",
        secret()
    ));
    let _server = Server::start(&env.home);
    cli_ok(
        &env.home,
        &[os("plugin"), os("install"), fixtures::hostile_hook().as_os_str()],
    );
    let src = small_source(&env.dir);
    let out = backup_out(&env.home, &src, &env.path("t.wim"), &["--plugin", "hostile-hook"]);
    let b = last_json(&out);
    assert_eq!(b["status"], "failed", "{b}");
    assert!(b["error"].as_str().unwrap().contains("ConnectionTimeout"), "{b}");
    drop(tarpit);
}
