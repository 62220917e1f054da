//! Building the wasm fixtures and small helpers shared by the plugin tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ensure_wasm_target() {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if !matches!(&installed, Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip2")) {
        let ok = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status();
        assert!(
            matches!(ok, Ok(s) if s.success()),
            "the rustup target wasm32-wasip2 is missing; run scripts/ensure-deps.sh"
        );
    }
}

/// Builds the crate in `dir` for wasm32-wasip2 (release) and returns the
/// path of `artifact`. One target dir for all fixtures keeps reruns fast.
pub fn build(dir: &Path, artifact: &str) -> PathBuf {
    static TARGET: OnceLock<()> = OnceLock::new();
    TARGET.get_or_init(ensure_wasm_target);
    let target_dir = root().join("target/wasm-test-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("running cargo to build a wasm fixture");
    assert!(status.success(), "building {} for wasm32-wasip2 failed", dir.display());
    let path = target_dir.join("wasm32-wasip2/release").join(artifact);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A fresh, empty directory outside the repository for an out-of-tree build.
fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Builds the out-of-tree crate in `dir` (see [`build`]), keeps its
/// `artifact` as `target/wasm-test-plugins/<keep>` and removes `dir`.
fn build_and_keep(dir: &Path, artifact: &str, keep: &str) -> PathBuf {
    let built = build(dir, artifact);
    let kept = root().join("target/wasm-test-plugins").join(keep);
    std::fs::copy(&built, &kept).unwrap();
    let _ = std::fs::remove_dir_all(dir);
    kept
}

/// The SDK's RLE example, copied OUT OF TREE and renamed `acme-rle`, with
/// only the SDK as a dependency: what a third party does.
pub fn third_party_rle() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = scratch_dir("wimguard-acme-rle");
        std::fs::create_dir_all(dir.join("src")).unwrap();
        let example = root().join("sdk/examples/rle-codec");
        let manifest = std::fs::read_to_string(example.join("Cargo.toml"))
            .unwrap()
            .replace("name = \"wimguard-rle-codec\"", "name = \"acme-rle\"")
            .replace(
                "path = \"../..\"",
                &format!("path = {:?}", root().join("sdk").display().to_string()),
            );
        assert!(
            manifest.contains("acme-rle"),
            "the example's manifest changed shape:\n{manifest}"
        );
        std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
        for entry in std::fs::read_dir(example.join("src")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join("src").join(entry.file_name())).unwrap();
        }
        // The example's lockfile pins the same wit-bindgen the SDK was tested with.
        let lock = std::fs::read_to_string(example.join("Cargo.lock"))
            .unwrap()
            .replace("name = \"wimguard-rle-codec\"", "name = \"acme-rle\"");
        std::fs::write(dir.join("Cargo.lock"), lock).unwrap();
        build_and_keep(&dir, "acme_rle.wasm", "acme_rle.wasm")
    })
}

/// Takes the fenced block of `lang` that follows the line `marker` in `text`.
fn block_after<'a>(text: &'a str, marker: &str, lang: &str) -> &'a str {
    let at = text
        .find(marker)
        .unwrap_or_else(|| panic!("sdk/README.md has no {marker:?}"));
    let fence = format!("```{lang}\n");
    let start = at + text[at..].find(&fence).expect("a fenced block after the marker") + fence.len();
    let len = text[start..].find("```").expect("the block ends");
    &text[start..start + len]
}

/// The plugin of sdk/README.md's walk-through, built exactly as written
/// there (its `Cargo.toml` and `src/lib.rs` blocks, out of tree), with only
/// the dependency path pointed at this checkout's SDK.
pub fn sdk_readme_codec() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let readme = std::fs::read_to_string(root().join("sdk/README.md")).unwrap();
        let manifest = block_after(&readme, "`Cargo.toml`:", "toml");
        let lib = block_after(&readme, "`src/lib.rs`:", "rust");
        let placeholder = "path = \"../wimguard/sdk\"";
        assert!(
            manifest.contains(placeholder),
            "the README's dependency line changed:\n{manifest}"
        );
        let manifest = manifest.replace(
            placeholder,
            &format!("path = {:?}", root().join("sdk").display().to_string()),
        );
        let dir = scratch_dir("wimguard-readme-codec");
        std::fs::create_dir_all(dir.join("src")).unwrap();
        // Standalone, as after `cargo new` outside any workspace.
        std::fs::write(dir.join("Cargo.toml"), format!("{manifest}\n[workspace]\n")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), lib).unwrap();
        // Pin the dependencies the SDK was tested with (the example's lockfile).
        let lock = std::fs::read_to_string(root().join("sdk/examples/rle-codec/Cargo.lock"))
            .unwrap()
            .replace("name = \"wimguard-rle-codec\"", "name = \"my-codec\"");
        std::fs::write(dir.join("Cargo.lock"), lock).unwrap();
        build_and_keep(&dir, "my_codec.wasm", "readme_my_codec.wasm")
    })
}

pub fn hostile_codec() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        build(
            &root().join("tests/fixtures/hostile-codec"),
            "wimguard_hostile_codec.wasm",
        )
    })
}

pub fn hostile_hook() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        build(
            &root().join("tests/fixtures/hostile-hook"),
            "wimguard_hostile_hook.wasm",
        )
    })
}

pub fn sneaky_codec() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        build(
            &root().join("tests/fixtures/sneaky-codec"),
            "wimguard_sneaky_codec.wasm",
        )
    })
}

pub fn not_a_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        build(
            &root().join("tests/fixtures/not-a-plugin"),
            "wimguard-not-a-plugin.wasm",
        )
    })
}

pub fn future_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        build(
            &root().join("tests/fixtures/future-plugin"),
            "wimguard_future_plugin.wasm",
        )
    })
}

/// The API-2.0 fixture relabelled as API **1.1**: a plugin built against a
/// newer minor than this host speaks (copied out of tree and rebuilt).
pub fn newer_minor_plugin() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let from = root().join("tests/fixtures/future-plugin");
        let dir = scratch_dir("wimguard-newer-minor");
        let relabel = |text: String| {
            text.replace("wimguard-future-plugin", "wimguard-newer-minor")
                .replace("@2.0.0", "@1.1.0")
                .replace("major: 2, minor: 0", "major: 1, minor: 1")
                .replace("future-codec", "newer-codec")
                .replace("x-test-future", "x-test-newer")
        };
        for sub in ["", "src", "wit"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
            for entry in std::fs::read_dir(from.join(sub)).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_file() {
                    let text = std::fs::read_to_string(entry.path()).unwrap();
                    std::fs::write(dir.join(sub).join(entry.file_name()), relabel(text)).unwrap();
                }
            }
        }
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("major: 1, minor: 1"), "the future fixture changed shape");
        build_and_keep(&dir, "wimguard_newer_minor.wasm", "newer_minor.wasm")
    })
}

/// A small tree with compressible and incompressible files, a symlink and
/// an empty file.
pub fn source_tree(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("zeros.bin"), vec![0u8; 300_000]).unwrap();
    std::fs::write(src.join("text.txt"), "hello plugin world\n".repeat(5000)).unwrap();
    let mut rng = crate::common::Rng::new(4);
    let noise: Vec<u8> = (0..100_000).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(src.join("sub/noise.bin"), noise).unwrap();
    std::fs::write(src.join("sub/deeper/empty"), b"").unwrap();
    std::os::unix::fs::symlink("../text.txt", src.join("sub/link")).unwrap();
    src
}

/// Fails unless the two trees hold the same names, kinds and contents.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .arg("-r")
        .arg("--no-dereference")
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trees differ:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The SDK's RLE example built as a trusted native plugin (`--features
/// native`), for the native runtime.
pub fn native_rle() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let target_dir = root().join("target/native-test-plugins");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--release", "--features", "native"])
            .current_dir(root().join("sdk/examples/rle-codec"))
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .status()
            .expect("running cargo to build the native RLE plugin");
        assert!(status.success(), "building the native RLE plugin failed");
        let path = target_dir.join("release/libwimguard_rle_codec.so");
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
}
