//! Issue 3 §5: health follows the server's life; env and stats report the
//! facts and counts.

use crate::common;
use crate::harness::*;

#[test]
fn health_env_and_stats() {
    let env = Env::new();
    let server = Server::start(&env.home);

    // health: 0 while up, JSON says serving.
    let h = cli_json(&env.home, &[os("health")]);
    assert_eq!(h["status"], "serving", "{h}");
    assert_eq!(h["address"].as_str(), Some(server.address.as_str()), "{h}");

    // env --json: home, config, database, listen address, pid.
    let e = cli_json(&env.home, &[os("env")]);
    assert_eq!(e["home"].as_str(), env.home.to_str(), "{e}");
    assert_eq!(e["config_path"].as_str(), env.home.join("config.yaml").to_str(), "{e}");
    assert_eq!(
        e["database_path"].as_str(),
        env.home.join("catalog.sqlite").to_str(),
        "{e}"
    );
    assert_eq!(e["listen_address"].as_str(), Some(server.host_port().as_str()), "{e}");
    assert_eq!(e["pid"].as_u64(), Some(server.pid as u64), "{e}");
    assert!(e["codecs"].as_array().is_some_and(|c| c.len() >= 3), "{e}");

    // stats: empty, then counts by status.
    let s = stats_counts(&env.home);
    assert!(s.is_empty(), "a fresh catalog should count no backups: {s:?}");
    let src = env.path("src");
    small_tree(&src, "s");
    backup(&env.home, &src, &env.path("a.wim"), &[]);
    backup(&env.home, &src, &env.path("a.wim"), &[]);
    backup(&env.home, &src, &env.path("b.wim"), &["--compression", "xpress"]);
    let s = stats_counts(&env.home);
    assert_eq!(s.get("succeeded"), Some(&3), "{s:?}");
    assert_eq!(s, counts_by_status(&list(&env.home)), "stats and backups list disagree");
    let full = cli_json(&env.home, &[os("stats")]);
    assert_eq!(full["archives"], 2, "{full}");
    let size = |n: &str| std::fs::metadata(env.path(n)).unwrap().len();
    assert_eq!(
        full["archive_bytes"].as_u64(),
        Some(size("a.wim") + size("b.wim")),
        "{full}"
    );
    assert!(
        full["sources"]
            .as_array()
            .is_some_and(|v| v.len() == 1 && v[0]["backups"] == 3),
        "{full}"
    );

    // health: non-zero once the server is gone (unreachable: exit 6).
    server.stop();
    let out = cli(&env.home, &[os("health")]);
    assert_eq!(
        out.code(),
        Some(6),
        "health should fail once the server stopped:\n{}",
        out.describe()
    );
    // And 0 again after a restart.
    let server = Server::start(&env.home);
    cli_ok(&env.home, &[os("health")]);
    server.stop();
}

/// SIGTERM must stop the server even while a client keeps an idle
/// connection open without reading from it (a suspended or hung client):
/// the stop may not depend on the client's cooperation.
#[test]
fn sigterm_stops_server_despite_an_idle_stalled_client() {
    let env = Env::new();
    let mut server = Server::start(&env.home);
    // One finished call on a connection whose runtime is then never driven again.
    let rt = runtime();
    let c = client(&env.home, None);
    rt.block_on(c.get_environment()).expect("GetEnvironment");
    server.signal(libc::SIGTERM);
    let limit = std::time::Duration::from_secs(25); // grace is 10 s; no jobs run
    let st = server.wait_exit(limit);
    server.assert_no_panic();
    assert_eq!(
        st.code(),
        Some(0),
        "exit after SIGTERM: {st}; log:\n{}",
        server.log_text()
    );
    drop(c);
    drop(rt);
}

/// SIGHUP (which admins send out of habit to "reload") must neither stop
/// the server nor kill its jobs: there is no reload, and it says so. A
/// config.yaml the server has nothing to add to is left byte-for-byte as
/// written (comments too); a misspelled key stops the start, named.
#[test]
fn sighup_is_ignored_with_a_warning_config_is_not_rewritten_and_unknown_keys_are_named() {
    let env = Env::new();
    let server = Server::start(&env.home);
    server.stop();
    // The server wrote its address; a restart on the same port changes nothing.
    let path = env.home.join("config.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("# kept: an admin's note\n");
    std::fs::write(&path, &text).unwrap();
    let port = config_address(&env.home).rsplit(':').next().unwrap().to_string();
    let server = Server::start_with(&env.home, &["--port", &port], &[]);
    server.signal(libc::SIGHUP);
    server.wait_for_log("SIGHUP ignored");
    cli_ok(&env.home, &[os("health")]);
    let src = env.path("src");
    small_tree(&src, "hup");
    let b = backup(&env.home, &src, &env.path("h.wim"), &[]);
    assert_eq!(b["status"], "succeeded", "{b}");
    server.stop();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "config.yaml was rewritten"
    );

    std::fs::write(&path, text.replace("service:", "plugin:\n  webhook: {}\nservice:")).unwrap();
    let out = common::run_with_timeout(
        &wg_bin(),
        &[os("server"), os("--home"), env.home.as_os_str(), os("--port"), os("0")],
        std::time::Duration::from_secs(60),
    );
    assert!(!out.ok(), "{}", out.describe());
    assert!(out.stderr.contains("unknown field `plugin`"), "{}", out.describe());
}
