//! Codec plugins in backups and restores: a third-party codec built out of
//! tree, standard codecs regardless of plugin state, hostile codecs.

use std::fs;
use std::path::Path;

use crate::fixtures;
use crate::harness::*;

fn restore(home: &Path, uuid: &str, target: &Path) -> crate::common::Out {
    cli(home, &[os("restore"), os(uuid), os("--target"), target.as_os_str()])
}

fn plugin_names(home: &Path) -> Vec<String> {
    let out = cli_ok(home, &[os("plugin"), os("list"), os("--json")]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn third_party_codec_backs_up_and_restores_and_is_recorded_in_the_archive() {
    let env = Env::new();
    let _server = Server::start(&env.home);
    let src = fixtures::source_tree(&env.dir);
    cli_ok(
        &env.home,
        &[os("plugin"), os("install"), fixtures::third_party_rle().as_os_str()],
    );
    let wim = env.path("rle.wim");
    let first = backup(&env.home, &src, &wim, &["--compression", "acme-rle"]);
    assert_eq!(first["compression"], "x-example-rle", "{first}");
    // The zeros compress under RLE: the codec really ran.
    let stored = first["bytes_stored"].as_u64().unwrap();
    assert!(stored < first["bytes_total"].as_u64().unwrap() / 2, "{first}");
    // The archive names its codec (header flag + XML), and wimlib refuses it cleanly.
    let raw = fs::read(&wim).unwrap();
    let flags = u32::from_le_bytes(raw[16..20].try_into().unwrap());
    assert_eq!(
        flags & 0x0001_0000,
        0x0001_0000,
        "plugin compression flag missing: {flags:#x}"
    );
    let xml_off = u64::from_le_bytes(raw[80..88].try_into().unwrap()) as usize;
    let xml_len = u64::from_le_bytes(raw[88..96].try_into().unwrap()) as usize & 0x00ff_ffff_ffff_ffff;
    let units: Vec<u16> = raw[xml_off..xml_off + xml_len]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let xml = String::from_utf16_lossy(&units);
    assert!(xml.contains("<WIMGUARDCODEC>x-example-rle</WIMGUARDCODEC>"), "{xml}");
    let w = crate::common::wimlib_raw(&[os("info"), wim.as_os_str()]);
    assert!(
        !w.ok(),
        "wimlib-imagex accepted a plugin-compressed archive:\n{}",
        w.describe()
    );
    // An append without --compression keeps the archive's codec.
    fs::write(src.join("new.txt"), "appended\n".repeat(1000)).unwrap();
    let second = backup(&env.home, &src, &wim, &[]);
    assert_eq!(second["compression"], "x-example-rle", "{second}");
    assert_eq!(second["image_index"], 2);

    let out_dir = env.path("restored");
    let r = restore(&env.home, &uuid_of(&second), &out_dir);
    assert!(r.ok(), "{}", r.describe());
    fixtures::assert_same_tree(&src, &out_dir);

    // Disabled or missing codec: a clear error naming it, nothing restored.
    cli_ok(&env.home, &[os("plugin"), os("disable"), os("acme-rle")]);
    let target = env.path("r2");
    let r = restore(&env.home, &uuid_of(&first), &target);
    assert_eq!(r.code(), Some(7), "{}", r.describe());
    assert!(
        r.stderr.contains("acme-rle") && r.stderr.contains("disabled"),
        "{}",
        r.describe()
    );
    assert!(!target.join("text.txt").exists());
    cli_ok(&env.home, &[os("plugin"), os("enable"), os("acme-rle")]);
    // Removing a codec that archives need is refused, naming the archive...
    let out = cli_code(&env.home, &[os("plugin"), os("remove"), os("acme-rle")], 7);
    assert!(
        out.stderr.contains(&*wim.to_string_lossy()) && out.stderr.contains("--force"),
        "{}",
        out.describe()
    );
    assert_eq!(plugin_names(&env.home).iter().filter(|n| *n == "acme-rle").count(), 1);
    // ...unless forced.
    cli_ok(&env.home, &[os("plugin"), os("remove"), os("--force"), os("acme-rle")]);
    assert!(!plugin_names(&env.home).contains(&"acme-rle".to_string()));
    let r = restore(&env.home, &uuid_of(&first), &target);
    assert_eq!(r.code(), Some(7), "{}", r.describe());
    assert!(
        r.stderr.contains("x-example-rle") && r.stderr.contains("not installed"),
        "{}",
        r.describe()
    );
    // Reinstalled: readable again.
    cli_ok(
        &env.home,
        &[os("plugin"), os("install"), fixtures::third_party_rle().as_os_str()],
    );
    let r = restore(&env.home, &uuid_of(&first), &target);
    assert!(r.ok(), "{}", r.describe());
    fs::remove_file(src.join("new.txt")).unwrap();
    fixtures::assert_same_tree(&src, &target);
}

#[test]
fn the_sdk_readme_walkthrough_gives_an_installable_working_codec() {
    let env = Env::new();
    let _server = Server::start(&env.home);
    let src = fixtures::source_tree(&env.dir);
    let p = cli_json(
        &env.home,
        &[os("plugin"), os("install"), fixtures::sdk_readme_codec().as_os_str()],
    );
    assert_eq!(p["name"], "my-codec", "{p}");
    assert_eq!(p["kind"], "codec");
    assert_eq!(p["codec_id"], "x-me-mycodec");
    assert_eq!(p["description"], "My codec");
    // The README's commands: back up with it, restore by the recorded id.
    let wim = env.path("mine.wim");
    let b = backup(&env.home, &src, &wim, &["--compression", "my-codec"]);
    assert_eq!(b["compression"], "x-me-mycodec", "{b}");
    let out_dir = env.path("restored");
    let r = restore(&env.home, &uuid_of(&b), &out_dir);
    assert!(r.ok(), "{}", r.describe());
    fixtures::assert_same_tree(&src, &out_dir);
}

#[test]
fn standard_archives_restore_whatever_the_plugin_state() {
    let env = Env::new();
    let _server = Server::start(&env.home);
    let src = fixtures::source_tree(&env.dir);
    let lzx = backup(&env.home, &src, &env.path("l.wim"), &["--compression", "lzx"]);
    let xpress = backup(&env.home, &src, &env.path("x.wim"), &["--compression", "xpress"]);
    crate::common::wimlib_verify(&env.path("l.wim"), false);
    for name in ["lzx", "xpress"] {
        cli_ok(&env.home, &[os("plugin"), os("disable"), os(name)]);
    }
    // New archives with a disabled codec are refused, by name...
    let refused = cli(
        &env.home,
        &backup_args(&src, &env.path("n.wim"), &["--compression", "lzx"]),
    );
    assert_eq!(refused.code(), Some(7), "{}", refused.describe());
    assert!(refused.stderr.contains("`lzx` is disabled"), "{}", refused.describe());
    // ...but standard archives always restore.
    for (b, dir) in [(&lzx, "rl"), (&xpress, "rx")] {
        let r = restore(&env.home, &uuid_of(b), &env.path(dir));
        assert!(r.ok(), "{}", r.describe());
        fixtures::assert_same_tree(&src, &env.path(dir));
    }
    let bad = cli(
        &env.home,
        &backup_args(&src, &env.path("b.wim"), &["--compression", "nope"]),
    );
    assert_eq!(bad.code(), Some(2), "{}", bad.describe());
    assert!(bad.stderr.contains("unknown codec `nope`"), "{}", bad.describe());
}

#[test]
fn hostile_codecs_fail_the_backup_cleanly_and_the_server_keeps_serving() {
    let hostile = fixtures::hostile_codec();
    for (mode, limits, expect) in [
        ("loop", "{ callTimeoutSeconds: 0.5 }", "time limit"),
        ("bomb", "{ memoryMib: 32 }", "memory limit"),
        ("panic", "{}", "crashed"),
    ] {
        let env = Env::new();
        env.write_config(&format!(
            "appSecret: {}\nplugins:\n  hostile-codec:\n    settings: {{ mode: {mode} }}\n    limits: {limits}\n",
            "s".repeat(64)
        ));
        let _server = Server::start(&env.home);
        cli_ok(&env.home, &[os("plugin"), os("install"), hostile.as_os_str()]);
        let src = env.dir.join("src");
        fs::create_dir_all(&src).unwrap();
        // `panic` mode panics on chunks starting with `!`.
        fs::write(src.join("a.txt"), "!".repeat(100_000)).unwrap();
        let wim = env.path("h.wim");
        let bg = BgCli::spawn(
            &env.home,
            &backup_args(&src, &wim, &["--compression", "x-test-hostile", "--json"]),
        );
        // Meanwhile, the server answers other clients.
        let list = cli_json(&env.home, &[os("plugin"), os("list")]);
        assert_eq!(
            list.as_array().unwrap().len(),
            5,
            "four bundled plugins and the hostile one"
        );
        let out = bg.wait(JOB_TIMEOUT);
        assert_eq!(out.code(), Some(1), "mode {mode}:\n{}", out.describe());
        let b = last_json(&out);
        assert_eq!(b["status"], "failed", "mode {mode}: {b}");
        let err = b["error"].as_str().unwrap();
        assert!(
            err.contains("hostile-codec") && err.contains(expect),
            "mode {mode}: {err}"
        );
        assert!(!wim.exists(), "mode {mode}: a failed backup left an archive");
        cli_ok(&env.home, &[os("health")]);
        let ok = backup(&env.home, &src, &env.path("fine.wim"), &["--compression", "lzx"]);
        assert_eq!(ok["status"], "succeeded");
    }
}

/// config.yaml for the hostile codec in `mode` with call time limit `limit`.
fn hostile_config(mode: &str, limit: &str) -> String {
    format!(
        "appSecret: {}\nplugins:\n  hostile-codec:\n    settings: {{ mode: {mode} }}\n    \
         limits: {{ callTimeoutSeconds: {limit} }}\n",
        "s".repeat(64)
    )
}

/// A server with the hostile codec installed (behaving, call time limit
/// `limit`), and a backup of `src/zeros` (200 000 zeros) it compressed into
/// `h.wim`: each 32 KiB chunk of zeros is stored "compressed" by one byte,
/// so a restore has to call the plugin's decompress. Returns the stopped
/// server's source directory, archive and backup.
fn hostile_codec_archive(env: &Env, limit: &str) -> (std::path::PathBuf, std::path::PathBuf, serde_json::Value) {
    env.write_config(&hostile_config("behave", limit));
    let server = Server::start(&env.home);
    cli_ok(
        &env.home,
        &[os("plugin"), os("install"), fixtures::hostile_codec().as_os_str()],
    );
    let src = env.dir.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("zeros"), vec![0u8; 200_000]).unwrap();
    let wim = env.path("h.wim");
    let b = backup(&env.home, &src, &wim, &["--compression", "x-test-hostile"]);
    assert_eq!(b["compression"], "x-test-hostile", "{b}");
    server.stop();
    (src, wim, b)
}

#[test]
fn cancelling_a_backup_stops_a_codec_spinning_in_wasm() {
    let env = Env::new();
    let (src, wim, first) = hostile_codec_archive(&env, "300");
    let before = fs::read(&wim).unwrap();
    // An append while the codec spins in `compress` under a five-minute
    // limit: only the cancellation can end the job within the harness's
    // two minutes.
    env.write_config(&hostile_config("loop", "300"));
    let server = Server::start(&env.home);
    fs::write(src.join("more"), vec![0u8; 100_000]).unwrap();
    let b = cancel_backup_when_logged(&server, &src, &wim, &[], "hostile-codec: compress spins");
    assert_eq!(b["status"], "cancelled", "{b}");
    assert_eq!(b["error"], "cancelled; the archive is unchanged", "{b}");
    assert!(
        fs::read(&wim).unwrap() == before,
        "the cancelled append changed the archive"
    );
    // The server keeps serving, and the archive still restores.
    cli_ok(&env.home, &[os("health")]);
    let ok = backup(&env.home, &src, &env.path("fine.wim"), &["--compression", "lzx"]);
    assert_eq!(ok["status"], "succeeded");
    server.assert_no_panic();
    server.stop();
    env.write_config(&hostile_config("behave", "300"));
    let _server = Server::start(&env.home);
    let target = env.path("restored");
    let r = restore(&env.home, &uuid_of(&first), &target);
    assert!(r.ok(), "{}", r.describe());
    assert_eq!(fs::read(target.join("zeros")).unwrap(), vec![0u8; 200_000]);
}

#[test]
fn a_codec_failing_at_restore_is_named_and_the_server_keeps_serving() {
    let env = Env::new();
    let (_src, _wim, b) = hostile_codec_archive(&env, "0.5");
    for (mode, expect) in [
        ("decompress-loop", "time limit of 500ms"),
        (
            "decompress-panic",
            "it said: hostile codec cannot decompress on purpose",
        ),
    ] {
        env.write_config(&hostile_config(mode, "0.5"));
        let server = Server::start(&env.home);
        let target = env.path(mode);
        let r = restore(&env.home, &uuid_of(&b), &target);
        assert!(!r.ok(), "mode {mode}: restored with a broken codec:\n{}", r.describe());
        assert!(
            r.stderr.contains("hostile-codec") && r.stderr.contains(expect),
            "mode {mode}:\n{}",
            r.describe()
        );
        assert!(
            !target.join("zeros").exists(),
            "mode {mode}: a file restored from garbage"
        );
        cli_ok(&env.home, &[os("health")]);
        server.assert_no_panic();
        server.stop();
    }
}

#[test]
fn trusted_native_codec_runs_only_with_a_matching_sha256() {
    let so = fixtures::native_rle();
    let sha = crate::registry::sha256_hex(&fs::read(so).unwrap());
    // Trusted for other bytes: refused.
    let env = Env::new();
    env.write_config(&format!(
        "appSecret: {}\nplugins:\n  wimguard-rle-codec:\n    trusted: true\n    sha256: {}\n",
        "s".repeat(64),
        "0".repeat(64)
    ));
    let server = Server::start(&env.home);
    let out = cli(
        &env.home,
        &[os("plugin"), os("install"), os("--native"), so.as_os_str()],
    );
    assert!(!out.ok() && out.stderr.contains(&sha), "{}", out.describe());
    server.stop();

    let env = Env::new();
    env.write_config(&format!(
        "appSecret: {}\nplugins:\n  wimguard-rle-codec:\n    trusted: true\n    sha256: {sha}\n",
        "s".repeat(64)
    ));
    let _server = Server::start(&env.home);
    let p = cli_json(
        &env.home,
        &[os("plugin"), os("install"), os("--native"), so.as_os_str()],
    );
    assert_eq!(p["runtime"], "native");
    assert_eq!(p["codec_id"], "x-example-rle");
    assert_eq!(p["sha256"], sha.as_str());
    let src = fixtures::source_tree(&env.dir);
    let b = backup(
        &env.home,
        &src,
        &env.path("n.wim"),
        &["--compression", "wimguard-rle-codec"],
    );
    assert_eq!(b["compression"], "x-example-rle");
    let r = restore(&env.home, &uuid_of(&b), &env.path("out"));
    assert!(r.ok(), "{}", r.describe());
    fixtures::assert_same_tree(&src, &env.path("out"));
    // The library in the store changes: refused at the next load.
    let stored = env.home.join(format!("plugins/store/{sha}.so"));
    let mut bytes = fs::read(&stored).unwrap();
    bytes.push(0);
    fs::write(&stored, bytes).unwrap();
    let out = cli(
        &env.home,
        &backup_args(&src, &env.path("m.wim"), &["--compression", "wimguard-rle-codec"]),
    );
    assert_eq!(out.code(), Some(3), "{}", out.describe());
    assert!(out.stderr.contains("modified"), "{}", out.describe());
}

#[test]
fn bundled_wasm_codecs_write_standard_wims() {
    let env = Env::new();
    env.write_config(&format!(
        "appSecret: {}\nbackup:\n  standardCodecRuntime: wasm\n",
        "s".repeat(64)
    ));
    let _server = Server::start(&env.home);
    let src = fixtures::source_tree(&env.dir);
    // A bigger, varied file so LZX and XPRESS really match and encode.
    let mut text = String::new();
    for i in 0..40_000 {
        text.push_str(&format!("line {i} of a log with some repetition {}\n", i % 97));
    }
    fs::write(src.join("log.txt"), text).unwrap();
    for codec in ["lzx", "xpress"] {
        let wim = env.path(&format!("{codec}.wim"));
        let b = backup(&env.home, &src, &wim, &["--compression", codec]);
        assert_eq!(b["compression"], codec);
        assert!(
            b["bytes_stored"].as_u64().unwrap() < b["bytes_total"].as_u64().unwrap() / 3,
            "{b}"
        );
        // A standard WIM: wimlib reads it and finds every blob intact.
        crate::common::wimlib_verify(&wim, false);
        let out = env.path(&format!("out-{codec}"));
        let r = restore(&env.home, &uuid_of(&b), &out);
        assert!(r.ok(), "{}", r.describe());
        fixtures::assert_same_tree(&src, &out);
    }
}
