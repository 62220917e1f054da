//! Issue 9 §5: TLS beyond loopback. The server refuses to listen on a
//! non-loopback address in clear text unless told `--insecure`; with TLS
//! (a generated self-signed pair here) local clients trust it by the pin the
//! server writes into the config, remote clients by a CA file or a pin, and
//! a client that cannot verify the server refuses to talk to it.

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::common;
use crate::harness::*;

/// A client-only home: the server's address and token, and `tls` (YAML
/// lines under `service.client.tls`, or none).
fn client_home(env: &Env, name: &str, address: &str, secret: &str, tls: &[String]) -> std::path::PathBuf {
    let home = env.path(name);
    fs::create_dir_all(&home).unwrap();
    let mut yaml = format!("appSecret: {secret}\nservice:\n  client:\n    address: {address}\n");
    if !tls.is_empty() {
        yaml += "    tls:\n";
        for l in tls {
            yaml += &format!("      {l}\n");
        }
    }
    fs::write(home.join("config.yaml"), yaml).unwrap();
    home
}

#[test]
fn beyond_loopback_needs_tls_or_insecure() {
    let env = Env::new();
    let out = common::run_with_timeout(
        &wg_bin(),
        &[
            os("server"),
            os("--home"),
            env.home.as_os_str(),
            os("--listen"),
            os("0.0.0.0"),
            os("--port"),
            os("0"),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    for word in ["without TLS", "service.server.tls", "--insecure"] {
        assert!(out.stderr.contains(word), "{word:?} missing:\n{}", out.describe());
    }
    let cfg = fs::read_to_string(env.home.join("config.yaml")).unwrap_or_default();
    assert!(
        !cfg.contains("address: http"),
        "a refused server published an address:\n{cfg}"
    );

    // --insecure: it serves plain HTTP/2, with a warning in the log.
    let server = Server::start_with(&env.home, &["--listen", "0.0.0.0", "--insecure"], &[]);
    assert!(server.address.starts_with("http://127.0.0.1:"), "{}", server.address);
    assert!(server.log_text().contains("WITHOUT TLS"), "{}", server.log_text());
    cli_ok(&env.home, &[os("backups"), os("list")]);
    server.stop();
}

#[test]
fn self_signed_tls_serves_the_cli_and_clients_verify_the_server() {
    let env = Env::new();
    let server = Server::start_with(&env.home, &["--listen", "0.0.0.0", "--tls-self-signed"], &[]);
    assert!(server.address.starts_with("https://127.0.0.1:"), "{}", server.address);
    let cert = env.home.join("tls/server.crt");
    let key = env.home.join("tls/server.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    let cfg = fs::read_to_string(env.home.join("config.yaml")).unwrap();
    let pin = cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("certSha256: "))
        .unwrap_or_else(|| panic!("no pin written for local clients:\n{cfg}"))
        .trim()
        .to_string();
    // The pin is the certificate's SHA-256 as openssl sees it.
    let openssl = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&cert)
        .output();
    if let Ok(o) = openssl {
        if o.status.success() {
            let text = String::from_utf8_lossy(&o.stdout);
            assert!(text.trim().ends_with(&pin), "openssl says {text}, config pins {pin}");
        }
    }

    // The CLI of the server's home: a backup and a restore over TLS.
    let src = env.path("src");
    small_tree(&src, "tls");
    let wim = env.path("a.wim");
    let b = backup(&env.home, &src, &wim, &[]);
    let u = uuid_of(&b);
    let dest = env.path("out");
    cli_ok(&env.home, &[os("restore"), os(&u), os("--target"), dest.as_os_str()]);
    assert_eq!(
        fs::read(dest.join("sub/c.bin")).unwrap(),
        fs::read(src.join("sub/c.bin")).unwrap()
    );

    let secret = config_secret(&env.home);
    let address = server.address.clone();
    let plain = address.replace("https://", "http://");
    // A remote client trusting the certificate as a CA file.
    let by_ca = client_home(
        &env,
        "by-ca",
        &address,
        &secret,
        &[format!("caFile: {}", cert.display())],
    );
    let listed = cli_json(&by_ca, &[os("backups"), os("list")]);
    assert!(listed.to_string().contains(&u), "{listed}");
    // ... by the pin, written without colons in lower case.
    let compact = pin.replace(':', "").to_lowercase();
    let by_pin = client_home(&env, "by-pin", &address, &secret, &[format!("certSha256: {compact}")]);
    cli_ok(&by_pin, &[os("health")]);

    // Clients that cannot verify the server refuse it (exit 5), naming why.
    let wrong = client_home(
        &env,
        "wrong-pin",
        &address,
        &secret,
        &[format!("certSha256: {}", "ab".repeat(32))],
    );
    let out = cli_code(&wrong, &[os("backups"), os("list")], 5);
    assert!(out.stderr.contains("not the pinned"), "{}", out.describe());
    let no_trust = client_home(&env, "no-trust", &address, &secret, &[]);
    let out = cli_code(&no_trust, &[os("health")], 5);
    assert!(out.stderr.contains("not signed by a trusted CA"), "{}", out.describe());
    // A CA file that is not the server's: refused too.
    let other = env.path("other.pem");
    fs::write(&other, include_str!("tls_other_ca.pem")).unwrap();
    let other_ca = client_home(
        &env,
        "other-ca",
        &address,
        &secret,
        &[format!("caFile: {}", other.display())],
    );
    cli_code(&other_ca, &[os("health")], 5);
    // Plain HTTP to the TLS server: a readable error pointing at https://.
    let out = cli_code(&no_trust, &[os("health"), os("--server"), os(&plain)], 6);
    assert!(out.stderr.contains("https://"), "{}", out.describe());
    // A wrong token over a verified channel is still refused.
    let bad_token = client_home(
        &env,
        "bad-token",
        &address,
        "wrong",
        &[format!("caFile: {}", cert.display())],
    );
    cli_code(&bad_token, &[os("backups"), os("list")], 5);

    // A restart keeps the certificate (pins stay valid).
    server.stop();
    let again = Server::start_with(&env.home, &["--listen", "0.0.0.0", "--tls-self-signed"], &[]);
    cli_ok(&by_pin, &[os("health"), os("--server"), os(&again.address)]);
    again.stop();
}
