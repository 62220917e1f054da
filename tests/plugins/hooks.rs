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

    // Unknown plugins are refused up front.
    let out = backup_out(&env.home, &src, &env.path("u.wim"), &["--plugin", "nope"]);
    assert_eq!(out.code(), Some(4), "{}", out.describe());
}

#[test]
fn a_hook_blocked_inside_the_host_is_stopped_by_its_time_limit() {
    // `sleep` waits in the host's clock, where the epoch deadline cannot
    // reach; without a wall-clock limit this backup would take an hour.
    let (env, server) = hook_server("sleep", "    limits: { callTimeoutSeconds: 1 }\n");
    let src = small_source(&env.dir);
    let wim = env.path("s.wim");
    let out = backup_out(&env.home, &src, &wim, &["--plugin", "hostile-hook"]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let b = last_json(&out);
    let err = b["error"].as_str().unwrap();
    assert!(
        err.contains("plugin hostile-hook") && err.contains("time limit of 1s") && err.contains("nothing was written"),
        "{err}"
    );
    // The post-backup call was stopped the same way, as a warning.
    assert!(b["warnings"].to_string().contains("time limit of 1s"), "{b}");
    assert!(!wim.exists());
    server.assert_no_panic();
}

/// A backup with the hostile hook in `mode` (a loop) under a ten-minute
/// limit and `extra` config, cancelled once the hook is in its loop (it
/// logs as it starts): only the cancellation can end it in time for the
/// harness (which gives a job two minutes). Returns the final object.
fn cancel_a_looping_hook(mode: &str, extra: &str) -> (Env, Server, std::path::PathBuf, Value) {
    let (env, server) = hook_server(mode, &format!("    limits: {{ callTimeoutSeconds: 600 }}\n{extra}"));
    let src = small_source(&env.dir);
    let wim = env.path("c.wim");
    let b = cancel_backup_when_logged(
        &server,
        &src,
        &wim,
        &["--plugin", "hostile-hook"],
        &format!("on-event starts in mode {mode}"),
    );
    (env, server, wim, b)
}

#[test]
fn cancelling_a_backup_stops_a_hook_busy_in_wasm_at_once() {
    let (env, server, wim, b) = cancel_a_looping_hook("loop-pre", "");
    assert_eq!(b["status"], "cancelled", "{b}");
    assert!(!wim.exists());
    assert!(
        server
            .log_text()
            .contains("plugin hostile-hook: `on-event` was stopped because the backup was cancelled"),
        "{}",
        server.log_text()
    );
    cli_ok(&env.home, &[os("health")]);
    server.assert_no_panic();
}

#[test]
fn post_backup_hooks_of_a_cancelled_backup_get_a_short_limit() {
    // Both post-backup hooks would hang for ten minutes (their own limits;
    // the harness waits two); after a cancel each gets
    // POST_HOOK_LIMIT_AFTER_CANCEL (10 s) at most.
    let (env, server, wim, b) = cancel_a_looping_hook(
        "loop",
        "hooks:\n  post:\n    - name: slow-post\n      command: [\"/bin/sleep\", \"3600\"]\n      timeout: 600\n",
    );
    assert_eq!(b["status"], "cancelled", "{b}");
    let warnings: Vec<&str> = b["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    let capped = "the post-backup hooks of a cancelled backup get at most 10s";
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("command `slow-post`") && w.contains("timed out after 10s") && w.contains(capped)),
        "{warnings:#?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("plugin `hostile-hook`")
            && w.contains("`on-event` exceeded its time limit of 10s")
            && w.contains(capped)),
        "{warnings:#?}"
    );
    assert!(!wim.exists());
    cli_ok(&env.home, &[os("health")]);
    server.assert_no_panic();
}

#[test]
fn a_verdict_of_a_later_minor_is_treated_as_allow() {
    let (env, server) = hook_server("future", "");
    let src = small_source(&env.dir);
    let b = backup(&env.home, &src, &env.path("f.wim"), &["--plugin", "hostile-hook"]);
    assert_eq!(b["status"], "succeeded", "{b}");
    let log = server.log_text();
    assert_eq!(log.matches("answered verdict `defer`").count(), 2, "{log}");
}

#[test]
fn crashing_hooks_follow_their_policy_and_the_server_keeps_serving() {
    let (env, server) = hook_server("panic", "");
    let src = small_source(&env.dir);
    let out = backup_out(&env.home, &src, &env.path("p.wim"), &["--plugin", "hostile-hook"]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let err = last_json(&out)["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("plugin hostile-hook")
            && err.contains("crashed")
            && err.contains("fail-closed")
            && err.contains("it said: hostile-hook panics on purpose"),
        "{err}"
    );
    // The same server still answers and backs up without the hook.
    cli_ok(&env.home, &[os("health")]);
    let b = backup(&env.home, &src, &env.path("ok.wim"), &[]);
    assert_eq!(b["status"], "succeeded", "{b}");
    server.assert_no_panic();

    // A disabled hook is refused before anything runs (exit 7, names it).
    cli_ok(&env.home, &[os("plugin"), os("disable"), os("hostile-hook")]);
    let out = backup_out(&env.home, &src, &env.path("d.wim"), &["--plugin", "hostile-hook"]);
    assert_eq!(out.code(), Some(7), "{}", out.describe());
    assert!(
        out.stderr.contains("hostile-hook") && out.stderr.contains("disabled"),
        "{}",
        out.describe()
    );
    assert!(!env.path("d.wim").exists());
}

#[test]
fn a_hook_attached_twice_runs_once_and_a_codec_plugin_picks_the_codec() {
    let (env, server) = hook_server("allow", "");
    let src = small_source(&env.dir);
    let b = backup(
        &env.home,
        &src,
        &env.path("a.wim"),
        &[
            "--plugin",
            "hostile-hook",
            "--plugin",
            "hostile-hook",
            "--plugin",
            "xpress",
        ],
    );
    assert_eq!(b["compression"], "xpress", "{b}");
    let log = server.log_text();
    assert_eq!(log.matches("hostile-hook saw pre-backup").count(), 1, "{log}");
    assert_eq!(log.matches("hostile-hook saw post-backup").count(), 1, "{log}");
    // Two codecs for one backup are refused, naming both sides.
    let out = backup_out(
        &env.home,
        &src,
        &env.path("b.wim"),
        &["--compression", "lzx", "--plugin", "xpress"],
    );
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(
        out.stderr.contains("--compression already chose lzx"),
        "{}",
        out.describe()
    );
}

/// One request the recorder saw: request line, headers (lowercase names), body.
type Recorded = (String, Vec<(String, String)>, String);

/// A tiny HTTP/1.1 server on loopback that records every request.
struct Recorder {
    port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
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
    let marker = env.path("refuse");
    env.write_config(&format!(
        r#"appSecret: {}
plugins:
  webhook:
    settings: {{ url: "http://127.0.0.1:{port}/backup-events" }}
    secrets: {{ token: TEST_WEBHOOK_TOKEN }}
    allowedHosts: ["127.0.0.1:{port}"]
hooks:
  pre:
    - {{ command: ["/bin/sh", "-c", "test ! -e '{marker}' && test -z \"${{TEST_WEBHOOK_TOKEN:-}}\""], name: gate }}
"#,
        secret(),
        port = hook.port,
        marker = marker.display()
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

    // A backup that fails (here: a command hook refuses once the marker
    // exists, so the webhook's own pre-backup call never comes) is
    // reported too.
    fs::write(&marker, "").unwrap();
    let out = backup_out(&env.home, &src, &env.path("w2.wim"), &["--plugin", "webhook"]);
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    let failed = last_json(&out);
    let reqs = hook.requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    let post: Value = serde_json::from_str(&reqs[2].2).unwrap();
    assert_eq!(post["event"], "post-backup");
    assert_eq!(post["backup_id"], uuid_of(&failed).as_str());
    assert_eq!(post["succeeded"], false);
    assert_eq!(post["error"], failed["error"]);
    assert!(!post["error"].as_str().unwrap().is_empty(), "{post}");
}

/// A webhook that cannot deliver: the backup still succeeds (the hook is
/// not `require-delivery`), but the lost post-backup event is a warning of
/// the backup (exit 8), not only a line in the server's log.
#[test]
fn an_undelivered_webhook_event_is_a_warning_of_the_backup() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let env = Env::new();
    env.write_config(&format!(
        "appSecret: {}\nplugins:\n  webhook:\n    settings: {{ url: \"http://127.0.0.1:{port}/events\" }}\n    \
         allowedHosts: [\"127.0.0.1:{port}\"]\n",
        secret()
    ));
    let _server = Server::start(&env.home);
    let src = small_source(&env.dir);
    let b = backup(&env.home, &src, &env.path("w.wim"), &["--plugin", "webhook"]);
    let warnings: Vec<String> = b["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{b}");
    assert!(
        warnings[0].contains("post-backup hook")
            && warnings[0].contains(&format!("delivery to http://127.0.0.1:{port}/events failed"))
            && warnings[0].contains("post-backup event"),
        "{b}"
    );
    assert_eq!(b["status"], "succeeded", "{b}");
}

/// (Re)starts a server on `env` whose hostile-hook GETs `url` with
/// `http_config` (allowedHosts, allowPrivate, limits), installing the hook
/// the first time, and runs one backup with it, which fails; returns the
/// backup's error (the hook vetoes with what became of its request, or
/// failed).
fn http_hook_verdict(env: &Env, url: &str, http_config: &str) -> String {
    env.write_config(&format!(
        "appSecret: {}\nplugins:\n  hostile-hook:\n    settings: {{ mode: http, url: \"{url}\" }}\n{http_config}",
        secret()
    ));
    let server = Server::start(&env.home);
    let installed = cli_json(&env.home, &[os("plugin"), os("list")]).to_string();
    if !installed.contains("hostile-hook") {
        cli_ok(
            &env.home,
            &[os("plugin"), os("install"), fixtures::hostile_hook().as_os_str()],
        );
    }
    let src = small_source(&env.dir);
    let out = backup_out(&env.home, &src, &env.path("r.wim"), &["--plugin", "hostile-hook"]);
    let b = last_json(&out);
    assert_eq!(b["status"], "failed", "{b}");
    server.stop();
    b["error"].as_str().unwrap().to_string()
}

#[test]
fn allowed_names_that_resolve_to_private_addresses_are_refused() {
    let web = Recorder::start();
    let env = Env::new();
    let port = web.port;
    // `localhost` is an allowed *name*, but it leads to loopback: refused
    // at connect time, nothing reaches the server.
    let url = format!("http://localhost:{port}/x");
    let err = http_hook_verdict(&env, &url, &format!("    allowedHosts: [\"localhost:{port}\"]\n"));
    assert!(
        err.contains("http request failed")
            && err.contains("refused by the sandbox")
            && err.contains("localhost resolved to")
            && err.contains("loopback address")
            && err.contains("DNS rebinding"),
        "{err}"
    );
    assert!(web.requests.lock().unwrap().is_empty(), "a refused request got through");
    // With allowPrivate the same name reaches the server.
    let err = http_hook_verdict(
        &env,
        &url,
        &format!("    allowedHosts: [\"localhost:{port}\"]\n    allowPrivate: true\n"),
    );
    assert!(err.contains("http request succeeded: status 204"), "{err}");
    let seen = web.requests.lock().unwrap().len();
    assert!(seen >= 1, "no request arrived");
    // So does the address itself, listed as such, without allowPrivate.
    let err = http_hook_verdict(
        &env,
        &format!("http://127.0.0.1:{port}/x"),
        &format!("    allowedHosts: [\"127.0.0.1:{port}\"]\n"),
    );
    assert!(err.contains("http request succeeded: status 204"), "{err}");
    assert!(web.requests.lock().unwrap().len() > seen);
}

#[test]
fn a_hook_waiting_on_a_silent_server_is_stopped_by_its_time_limit() {
    // Accepts connections (the kernel's backlog) but never answers.
    let tarpit = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tarpit.local_addr().unwrap().port();
    let env = Env::new();
    let err = http_hook_verdict(
        &env,
        &format!("http://127.0.0.1:{port}/x"),
        &format!("    allowedHosts: [\"127.0.0.1:{port}\"]\n    limits: {{ callTimeoutSeconds: 1 }}\n"),
    );
    // The call's time limit stops it wherever it waits (here for a response head).
    assert!(
        err.contains("plugin hostile-hook") && err.contains("time limit of 1s"),
        "{err}"
    );
    drop(tarpit);
}

/// A plugin config.yaml configures under a name nothing is installed as
/// (a typo, most often) is named in a warning at start: its settings and
/// limits would otherwise silently apply to nothing.
#[test]
fn a_configured_plugin_that_is_not_installed_is_warned_about() {
    let env = Env::new();
    env.write_config(&format!(
        "appSecret: {}\nplugins:\n  s3upload:\n    settings: {{ bucket: b }}\n  webhook:\n    settings: {{ url: \"https://hooks.example.com/x\" }}\n",
        "s".repeat(64)
    ));
    let server = Server::start(&env.home);
    cli_ok(&env.home, &[os("health")]);
    let log = server.log_text();
    assert!(
        log.contains("configures plugin `s3upload`, but no plugin of that name is installed"),
        "{log}"
    );
    assert!(
        !log.contains("plugin `webhook`, but"),
        "the bundled webhook is installed: {log}"
    );
}
