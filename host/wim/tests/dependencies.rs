//! The WIM crate is the format and nothing else: it must not pull in the
//! daemon's stacks (gRPC, SQLite, wasm), so the fuzzers and any tool built
//! on it stay small. Checked on the real dependency graph with `cargo tree`.

use std::process::Command;

#[test]
fn the_wim_crate_depends_on_no_grpc_sqlite_or_wasm() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--manifest-path",
            manifest,
        ])
        .output()
        .expect("run cargo tree");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(
        crates.contains(&"wimguard-wim"),
        "unexpected cargo tree output:\n{text}"
    );
    assert!(crates.contains(&"sha1"), "the tree looks truncated:\n{text}");
    for forbidden in ["tonic", "prost", "rusqlite", "wasmtime", "tokio", "hyper", "wimguard"] {
        assert!(
            !crates.contains(&forbidden),
            "wimguard-wim depends on {forbidden}:\n{text}"
        );
    }
}
