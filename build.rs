//! Builds the first-party wasm plugins in `plugins/` that the binary
//! bundles (see `host/bundled.rs`), and records the commit for `wimguard
//! env`. (The gRPC API is compiled by its own crate, `host/api`.)

use std::path::{Path, PathBuf};
use std::process::Command;

/// The bundled plugin crates and the component each one produces.
const BUNDLED: [(&str, &str); 4] = [
    ("plugins/xpress-plugin", "wimguard_xpress_plugin.wasm"),
    ("plugins/lzx-plugin", "wimguard_lzx_plugin.wasm"),
    ("plugins/webhook", "wimguard_webhook.wasm"),
    ("plugins/s3-upload", "wimguard_s3_upload.wasm"),
];

/// Builds the bundled plugins for wasm32-wasip2 (release: they are the
/// codecs' wasm runtime, and a debug build of a codec is ~10x slower) into
/// `<target>/wasm-plugins`, then copies the components to `OUT_DIR/bundled`.
///
/// A nested cargo is the only way to build another target from a build
/// script; it gets its own target dir (no lock fight with the outer build)
/// and none of the outer build's flags (sanitizers, coverage) leak into it.
/// Each crate is built on its own: the SDK's world features must not unify.
fn build_bundled_plugins() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let target_dir = out
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(|t| t.join("wasm-plugins"))
        .unwrap_or_else(|| out.join("wasm-plugins"));
    let bundled = out.join("bundled");
    std::fs::create_dir_all(&bundled)?;
    for dir in [
        "host/codecs/xpress/src",
        "host/codecs/lzx/src",
        "sdk/src",
        "sdk/wit",
        "sdk/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={dir}");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (dir, artifact) in BUNDLED {
        for f in ["src", "Cargo.toml", "Cargo.lock"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
        let mut cmd = Command::new(&cargo);
        cmd.args(["build", "--quiet", "--release", "--locked", "--target", "wasm32-wasip2"])
            .arg("--manifest-path")
            .arg(Path::new(dir).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir);
        for var in [
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_MANIFEST_DIR",
        ] {
            cmd.env_remove(var);
        }
        let status = cmd.status().map_err(|e| format!("cannot run {cargo}: {e}"))?;
        if !status.success() {
            return Err(format!(
                "building the bundled plugin {dir} for wasm32-wasip2 failed; is the target installed? \
                 Run scripts/ensure-deps.sh (rustup target add wasm32-wasip2)"
            )
            .into());
        }
        let built = target_dir.join("wasm32-wasip2/release").join(artifact);
        std::fs::copy(&built, bundled.join(artifact)).map_err(|e| format!("{}: {e}", built.display()))?;
    }
    Ok(())
}

/// Asks the linker for packed relative relocations (DT_RELR) on Linux.
/// The daemon's binary is large (wasmtime, tonic): its 2 MB `.rela.dyn`
/// is read whole by the dynamic loader at every start, which was a quarter
/// of the resident memory of a short CLI command (`wimguard --version`:
/// 8.1 MB). Packed, the table is a few KB. Needs GNU ld 2.38 or lld, and
/// glibc 2.36 (Debian 12) at run time.
fn link_relocations_packed() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") && std::env::var_os("WIMGUARD_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-env-changed=WIMGUARD_NO_RELR");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    build_bundled_plugins()?;
    link_relocations_packed();
    // The commit this binary was built from, for `wimguard env` (absent outside git).
    if let Ok(out) = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
    {
        if out.status.success() {
            println!(
                "cargo:rustc-env=WIMGUARD_GIT_COMMIT={}",
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
    }
    println!("cargo:rerun-if-changed=.git/HEAD");
    Ok(())
}
