//! The registry through the CLI: bundled plugins, install validation,
//! enable/disable/remove, tampered files.

use std::fs;

use serde_json::Value;

use crate::fixtures;
use crate::harness::*;

fn plugin_list(home: &std::path::Path) -> Vec<Value> {
    cli_json(home, &[os("plugin"), os("list")])
        .as_array()
        .cloned()
        .expect("plugin list --json is an array")
}

#[test]
fn bundled_plugins_are_registered_on_first_start() {
    let env = Env::new();
    let _server = Server::start(&env.home);
    let list = plugin_list(&env.home);
    let names: Vec<&str> = list.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["lzx", "s3-upload", "webhook", "xpress"], "{list:?}");
    for p in &list {
        for key in ["name", "version", "kind", "runtime", "enabled", "sha256"] {
            assert!(!p[key].is_null(), "{key} missing in {p}");
        }
        assert_eq!(p["runtime"], "wasm");
        assert_eq!(p["enabled"], true);
        assert_eq!(p["bundled"], true);
        let sha = p["sha256"].as_str().unwrap();
        assert!(sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()), "{sha}");
        // The file in the store is what the catalog says it is.
        let stored = fs::read(env.home.join(format!("plugins/store/{sha}.wasm"))).unwrap();
        assert_eq!(sha256_hex(&stored), sha);
    }
    let kinds: Vec<(&str, &str)> = list
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("lzx", "codec"),
            ("s3-upload", "destination"),
            ("webhook", "hook"),
            ("xpress", "codec")
        ]
    );
    let lzx = cli_json(&env.home, &[os("plugin"), os("show"), os("lzx")]);
    assert_eq!(lzx["codec_id"], "lzx");
    // Bundled plugins can be disabled, not removed.
    let out = cli(&env.home, &[os("plugin"), os("remove"), os("xpress")]);
    assert!(!out.ok() && out.stderr.contains("bundled"), "{}", out.describe());
    cli_code(&env.home, &[os("plugin"), os("show"), os("nope")], 4);
}

#[test]
fn install_validates_and_the_registry_persists() {
    let env = Env::new();
    let server = Server::start(&env.home);
    // Not a component at all.
    let junk = env.path("junk.wasm");
    fs::write(&junk, b"\0asm\x01\0\0\0garbage").unwrap();
    let out = cli_code(&env.home, &[os("plugin"), os("install"), junk.as_os_str()], 2);
    assert!(
        out.stderr.contains("not a valid WebAssembly component") && out.stderr.contains("core wasm module"),
        "{}",
        out.describe()
    );
    // A text file (wasmtime alone would parse it as WebAssembly text).
    let text = env.path("notes.wasm");
    fs::write(&text, b"(component)\n").unwrap();
    let out = cli_code(&env.home, &[os("plugin"), os("install"), text.as_os_str()], 2);
    assert!(
        out.stderr.contains("magic bytes") && out.stderr.contains("wasm32-wasip2"),
        "{}",
        out.describe()
    );
    // A native library offered as a component, and as native without trust.
    let out = cli_code(&env.home, &[os("plugin"), os("install"), os("/bin/true")], 2);
    assert!(out.stderr.contains("native shared library"), "{}", out.describe());
    let out = cli(
        &env.home,
        &[os("plugin"), os("install"), os("--native"), os("/bin/true")],
    );
    assert!(!out.ok() && out.stderr.contains("trusted: true"), "{}", out.describe());
    let out = cli_code(
        &env.home,
        &[os("plugin"), os("install"), env.path("missing.wasm").as_os_str()],
        4,
    );
    assert!(out.stderr.contains("missing.wasm"), "{}", out.describe());
    // A component built for plugin API 2.0, and one exporting an unknown world.
    let out = cli_code(
        &env.home,
        &[os("plugin"), os("install"), fixtures::future_plugin().as_os_str()],
        2,
    );
    assert!(out.stderr.contains("this host speaks 1.0"), "{}", out.describe());
    // One built for a newer minor (1.1) may rely on what this host lacks.
    let out = cli_code(
        &env.home,
        &[os("plugin"), os("install"), fixtures::newer_minor_plugin().as_os_str()],
        2,
    );
    assert!(
        out.stderr.contains("plugin API 1.1") && out.stderr.contains("this host speaks 1.0"),
        "{}",
        out.describe()
    );
    // A valid component of another world (a wasi:cli command).
    let out = cli_code(
        &env.home,
        &[os("plugin"), os("install"), fixtures::not_a_plugin().as_os_str()],
        2,
    );
    assert!(out.stderr.contains("not a WimGuard plugin"), "{}", out.describe());
    // A codec that imports the filesystem is refused before it ever runs.
    let out = cli_code(
        &env.home,
        &[os("plugin"), os("install"), fixtures::sneaky_codec().as_os_str()],
        2,
    );
    assert!(
        out.stderr.contains("wasi:filesystem") && out.stderr.contains("no filesystem"),
        "{}",
        out.describe()
    );
    assert_eq!(plugin_list(&env.home).len(), 4, "rejected files left traces");
    // ...on disk too: only the four bundled plugins, stored and compiled.
    assert_eq!(fs::read_dir(env.home.join("plugins/store")).unwrap().count(), 4);
    assert_eq!(fs::read_dir(env.home.join("plugins/cache")).unwrap().count(), 4);

    let rle = fixtures::third_party_rle();
    let p = cli_json(&env.home, &[os("plugin"), os("install"), rle.as_os_str()]);
    assert_eq!(p["name"], "acme-rle");
    assert_eq!(p["kind"], "codec");
    assert_eq!(p["codec_id"], "x-example-rle");
    assert_eq!(p["sha256"], sha256_hex(&fs::read(rle).unwrap()));
    let p = cli_json(&env.home, &[os("plugin"), os("disable"), os("acme-rle")]);
    assert_eq!(p["enabled"], false);
    server.stop();
    // Across a restart: still registered, still disabled.
    let _server = Server::start(&env.home);
    let p = cli_json(&env.home, &[os("plugin"), os("show"), os("acme-rle")]);
    assert_eq!(p["enabled"], false);
    cli_ok(&env.home, &[os("plugin"), os("enable"), os("acme-rle")]);
    let removed = cli_json(&env.home, &[os("plugin"), os("remove"), os("acme-rle")]);
    assert_eq!(removed["name"], "acme-rle");
    let sha = removed["sha256"].as_str().unwrap();
    assert!(
        !env.home.join(format!("plugins/store/{sha}.wasm")).exists(),
        "removed plugin's file is still there"
    );
    let cached: Vec<_> = fs::read_dir(env.home.join("plugins/cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(sha))
        .collect();
    assert!(
        cached.is_empty(),
        "removed plugin's compiled form is still cached: {cached:?}"
    );
    cli_code(&env.home, &[os("plugin"), os("show"), os("acme-rle")], 4);
}

/// A component holding one core module whose functions (`count` of them,
/// `() -> i32`) cost the compiler dearly: `reps` times, `if (local 0)
/// { local[a] = local[b] + local[c] }` over `locals` locals (a block per
/// `if` and values that stay live across all of them: time and memory grow
/// much faster than the size), or with `nested: false` the same assignment
/// in a straight line (cheap to compile, but big).
fn costly_component(count: u32, reps: u32, locals: u32, nested: bool) -> Vec<u8> {
    use wasm_encoder::{
        BlockType, CodeSection, Function, FunctionSection, Module, ModuleSection, TypeSection, ValType,
    };
    let mut types = TypeSection::new();
    types.ty().function([], [ValType::I32]);
    let mut functions = FunctionSection::new();
    let mut code = CodeSection::new();
    let mut f = Function::new([(locals, ValType::I32)]);
    for i in 0..reps {
        let local = |k: u32| 1 + (i.wrapping_mul(k) + k) % (locals - 1);
        let mut sink = f.instructions();
        if nested {
            sink.local_get(0).if_(BlockType::Empty);
        }
        sink.local_get(local(7))
            .local_get(local(13))
            .i32_add()
            .local_set(local(1));
        if nested {
            sink.end();
        }
    }
    f.instructions().local_get(1).end();
    for _ in 0..count {
        functions.function(0);
        code.function(&f);
    }
    let mut module = Module::new();
    module.section(&types).section(&functions).section(&code);
    let mut component = wasm_encoder::Component::new();
    component.section(&ModuleSection(&module));
    component.finish()
}

#[test]
fn a_component_too_costly_to_compile_is_refused_at_install() {
    let env = Env::new();
    // The time and memory tests would take 15 s and 1.5 GiB without their
    // limits (measured with the debug build); each is refused long before.
    for (name, component, config, expected) in [
        (
            "one huge function",
            costly_component(1, 200_000, 100, false),
            String::new(),
            "KiB, more than the 1024 KiB accepted; refused (the limit is `pluginInstall.maxFunctionKib`",
        ),
        (
            "slow to compile",
            costly_component(1, 50_000, 100, true),
            "pluginInstall: { compileTimeoutSeconds: 1 }\n".to_string(),
            "compiling it took longer than 1s; refused (the limit is `pluginInstall.compileTimeoutSeconds`",
        ),
        (
            "memory-hungry to compile",
            costly_component(1, 20_000, 1000, true),
            "pluginInstall: { compileMemoryMib: 256 }\n".to_string(),
            "compiling it needed more than 256 MiB of memory; refused (the limit is \
             `pluginInstall.compileMemoryMib`",
        ),
    ] {
        env.write_config(&format!("appSecret: {}\n{config}", "s".repeat(64)));
        let server = Server::start(&env.home);
        let file = env.path("costly.wasm");
        fs::write(&file, &component).unwrap();
        let started = std::time::Instant::now();
        let bg = BgCli::spawn(&env.home, &[os("plugin"), os("install"), file.as_os_str()]);
        // Meanwhile the server answers other clients.
        cli_ok(&env.home, &[os("health")]);
        let out = bg.wait(CLI_TIMEOUT);
        assert_eq!(out.code(), Some(2), "{name}: {}", out.describe());
        let sha = sha256_hex(&component);
        assert!(
            out.stderr.contains(&format!("plugin sha256:{}", &sha[..12])) && out.stderr.contains(expected),
            "{name}: {}",
            out.describe()
        );
        eprintln!("{name}: refused after {:?}", started.elapsed());
        // Nothing of it stays: not in the registry, the store or the cache.
        assert_eq!(plugin_list(&env.home).len(), 4, "{name}");
        for dir in ["plugins/store", "plugins/cache"] {
            let left: Vec<_> = fs::read_dir(env.home.join(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(&sha[..12]) || n.ends_with(".tmp"))
                .collect();
            assert!(left.is_empty(), "{name}: left in {dir}: {left:?}");
        }
        server.assert_no_panic();
        server.stop();
    }
    // Within the limits, a real plugin still compiles and installs.
    env.write_config(&format!(
        "appSecret: {}\npluginInstall: {{ compileTimeoutSeconds: 30, compileMemoryMib: 256 }}\n",
        "s".repeat(64)
    ));
    let _server = Server::start(&env.home);
    let p = cli_json(
        &env.home,
        &[os("plugin"), os("install"), fixtures::third_party_rle().as_os_str()],
    );
    assert_eq!(p["name"], "acme-rle", "{p}");
}

#[test]
fn a_tampered_plugin_file_is_refused() {
    let env = Env::new();
    let _server = Server::start(&env.home);
    let src = fixtures::source_tree(&env.dir);
    let p = cli_json(
        &env.home,
        &[os("plugin"), os("install"), fixtures::third_party_rle().as_os_str()],
    );
    let stored = env
        .home
        .join(format!("plugins/store/{}.wasm", p["sha256"].as_str().unwrap()));
    let mut bytes = fs::read(&stored).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    fs::write(&stored, bytes).unwrap();
    let wim = env.path("t.wim");
    let out = cli(
        &env.home,
        &[
            os("backup"),
            os("--source"),
            src.as_os_str(),
            os("--destination"),
            wim.as_os_str(),
            os("--compression"),
            os("acme-rle"),
        ],
    );
    assert_eq!(out.code(), Some(3), "{}", out.describe());
    assert!(
        out.stderr.contains("acme-rle") && out.stderr.contains("modified"),
        "{}",
        out.describe()
    );
    assert!(!wim.exists(), "a refused plugin still wrote an archive");
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A raw RegistryService client with the server's token, to send uploads
/// the CLI never would.
async fn raw_registry(
    home: &std::path::Path,
) -> wimguard::api::v1::registry_service_client::RegistryServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
> {
    let channel = tonic::transport::Endpoint::from_shared(config_address(home))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {}", config_secret(home)).parse().unwrap();
    wimguard::api::v1::registry_service_client::RegistryServiceClient::with_interceptor(
        channel,
        move |mut req: tonic::Request<()>| {
            req.metadata_mut().insert("authorization", token.clone());
            Ok(req)
        },
    )
}

#[test]
fn uploads_that_do_not_match_what_the_client_declared_are_refused() {
    use wimguard::api::v1::InstallPluginChunk;
    let env = Env::new();
    let _server = Server::start(&env.home);
    let bytes = fs::read(fixtures::third_party_rle()).unwrap();
    let half = bytes.len() / 2;
    runtime().block_on(async {
        let mut c = raw_registry(&env.home).await;
        // Cut off: the stream ends cleanly after half of the declared size.
        let cut = vec![InstallPluginChunk {
            file_name: "acme.wasm".into(),
            data: bytes[..half].to_vec(),
            size: bytes.len() as u64,
            ..Default::default()
        }];
        let e = c.install_plugin(tokio_stream::iter(cut)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(
            e.message()
                .contains(&format!("ended after {half} of {} bytes", bytes.len())),
            "{e:?}"
        );
        // Altered on the way: the bytes do not have the declared sha256.
        let mut altered = bytes.clone();
        altered[half] ^= 1;
        let bad = vec![InstallPluginChunk {
            data: altered,
            size: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
            ..Default::default()
        }];
        let e = c.install_plugin(tokio_stream::iter(bad)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("not the"), "{e:?}");
        // Larger than accepted, refused from the declared size alone.
        let huge = vec![InstallPluginChunk {
            data: vec![0; 16],
            size: 1 << 40,
            ..Default::default()
        }];
        let e = c.install_plugin(tokio_stream::iter(huge)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    });
    // Nothing of it was installed.
    assert_eq!(plugin_list(&env.home).len(), 4);
    assert_eq!(fs::read_dir(env.home.join("plugins/store")).unwrap().count(), 4);
}

#[test]
fn a_bad_plugins_section_stops_the_server_at_start_with_the_reason() {
    for (yaml, expected) in [
        (
            "  webhook:\n    allowedHosts: [\"http://hooks.example.com/x\"]\n",
            "plugins.webhook: allowedHosts",
        ),
        (
            "  webhook:\n    limits: { memoryMib: 0 }\n",
            "plugins.webhook: limits.memoryMib",
        ),
        (
            "  rle:\n    trusted: true\n",
            "plugins.rle: trusted: true needs the sha256",
        ),
        (
            "  Bad_Name:\n    enabled: true\n",
            "plugins.Bad_Name: not a plugin name",
        ),
        (
            "  webhook: {}\npluginInstall: { compileMemoryMib: 16 }\n",
            "pluginInstall.compileMemoryMib must be between 256",
        ),
    ] {
        let env = Env::new();
        env.write_config(&format!("appSecret: {}\nplugins:\n{yaml}", "s".repeat(64)));
        let out = crate::common::run_with_timeout(
            &wg_bin(),
            &[os("server"), os("--home"), env.home.as_os_str(), os("--port"), os("0")],
            std::time::Duration::from_secs(60),
        );
        assert!(
            !out.ok(),
            "the server started with a bad config:\n{yaml}\n{}",
            out.describe()
        );
        assert!(
            out.stderr.contains(expected),
            "{expected:?} not in:\n{}",
            out.describe()
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.describe());
    }
}

/// Codecs are shared, not leaked: when a plugin is upgraded (here, a
/// bundled one whose bytes changed) the registry lets go of the old codec,
/// which is freed once its last user is done, and the next use loads the
/// new one.
#[test]
fn an_upgraded_codec_plugin_releases_the_old_codec() {
    use std::sync::Arc;
    use wimguard::bundled::bundled_plugins;
    use wimguard::catalog::Catalog;
    use wimguard::plugins::registry::BundledPlugin;
    use wimguard::plugins::PluginRegistry;
    use wimguard::wim::codecs::CodecResolver;

    let home = tempfile::tempdir().unwrap();
    let catalog = Arc::new(Catalog::open(&home.path().join("catalog.sqlite")).unwrap());
    let registry = PluginRegistry::open(home.path(), catalog, Vec::new(), &Default::default()).unwrap();
    let xpress = *bundled_plugins().iter().find(|b| b.name == "xpress").unwrap();
    registry.register_bundled(&[xpress]).unwrap();
    let first = registry.codec("xpress").unwrap();
    assert!(Arc::ptr_eq(&first, &registry.codec("xpress").unwrap()), "loaded twice");
    assert!(Arc::ptr_eq(&first, &registry.plugin_codec("xpress").unwrap()));
    assert_eq!(Arc::strong_count(&first), 2, "only the registry and this test hold it");

    // The same component with a custom section appended: other bytes, same plugin.
    let mut newer = xpress.bytes.to_vec();
    newer.extend_from_slice(&[0, 9, 4, b'n', b'o', b't', b'e', 7, 7, 7, 7]);
    let newer: &'static [u8] = Box::leak(newer.into_boxed_slice());
    registry
        .register_bundled(&[BundledPlugin {
            name: "xpress",
            bytes: newer,
        }])
        .unwrap();
    assert_eq!(Arc::strong_count(&first), 1, "the registry still holds the old codec");
    let second = registry.codec("xpress").unwrap();
    assert!(!Arc::ptr_eq(&first, &second), "the old codec was handed out again");
    assert_eq!(second.name(), "xpress");
    assert_eq!(registry.get("xpress").unwrap().sha256, sha256_hex(newer));
}
