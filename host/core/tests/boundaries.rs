//! The crates' boundaries, checked on the real dependency graph with
//! `cargo tree`: the core knows nothing of gRPC or the command line (the
//! daemon serves it; tests drive it directly), and the plugin host knows
//! nothing of the core, the catalog or the WIM format (it runs plugins;
//! the core's registry decides which); the WIM format crate pulls in none
//! of the daemon's stacks, so the fuzzers and any tool built on it stay
//! small.

use std::process::Command;

/// The crate names in the normal and build dependencies of `package`.
fn dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--edges",
            "normal,build",
            "--prefix",
            "none",
            "--package",
            package,
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("run cargo tree");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    assert!(
        crates.iter().any(|c| c == package),
        "unexpected cargo tree output:\n{text}"
    );
    crates
}

fn assert_none_of(package: &str, forbidden: &[&str]) {
    let crates = dependencies(package);
    for f in forbidden {
        assert!(!crates.iter().any(|c| c == f), "{package} depends on {f}: {crates:?}");
    }
}

#[test]
fn the_wim_crate_depends_on_no_grpc_sqlite_or_wasm() {
    assert!(
        dependencies("wimguard-wim").iter().any(|c| c == "sha1"),
        "the tree looks truncated"
    );
    assert_none_of(
        "wimguard-wim",
        &[
            "tonic",
            "prost",
            "rusqlite",
            "wasmtime",
            "tokio",
            "hyper",
            "wimguard",
            "wimguard-core",
        ],
    );
}

#[test]
fn the_core_depends_on_no_grpc_or_cli() {
    assert!(
        dependencies("wimguard-core").iter().any(|c| c == "rusqlite"),
        "the tree looks truncated"
    );
    assert_none_of(
        "wimguard-core",
        &[
            "tonic",
            "tonic-health",
            "prost",
            "wimguard-api",
            "clap",
            "indicatif",
            "wimguard",
        ],
    );
}

#[test]
fn the_plugin_host_depends_on_no_core_catalog_grpc_or_wim_format() {
    assert!(
        dependencies("wimguard-plugin-host").iter().any(|c| c == "wasmtime"),
        "the tree looks truncated"
    );
    assert_none_of(
        "wimguard-plugin-host",
        &[
            "wimguard-core",
            "wimguard-wim",
            "wimguard-api",
            "wimguard",
            "rusqlite",
            "tonic",
            "prost",
            "clap",
        ],
    );
}

#[test]
fn the_api_is_only_the_generated_protocol() {
    assert_none_of(
        "wimguard-api",
        &[
            "wimguard-core",
            "wimguard-wim",
            "wimguard-plugin-host",
            "rusqlite",
            "wasmtime",
            "clap",
        ],
    );
}

/// Expands one `{a,b}` group: `host/{cli,server}/` → `host/cli/`, `host/server/`.
fn expand(path: &str) -> Vec<String> {
    match (path.find('{'), path.find('}')) {
        (Some(i), Some(j)) if i < j => path[i + 1..j]
            .split(',')
            .map(|alt| format!("{}{alt}{}", &path[..i], &path[j + 1..]))
            .collect(),
        _ => vec![path.to_string()],
    }
}

#[test]
fn the_readme_layout_matches_the_tree() {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let layout = readme
        .split("\n## Layout\n")
        .nth(1)
        .expect("README has a Layout section");
    let layout = layout.split("\n## ").next().unwrap();
    let mut listed = Vec::new();
    for row in layout.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap();
        for path in first.split('`').skip(1).step_by(2) {
            listed.extend(expand(path));
        }
    }
    assert!(listed.len() >= 10, "the layout table looks truncated: {listed:?}");
    for path in &listed {
        if path.contains('*') {
            continue;
        }
        assert!(
            root.join(path).exists(),
            "README's layout lists {path}, which does not exist"
        );
    }
    // Every workspace member has a row.
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members = manifest.split("members = [").nth(1).unwrap().split(']').next().unwrap();
    for member in members
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty() && *m != ".")
    {
        assert!(
            listed.iter().any(|p| p.trim_end_matches('/') == member),
            "workspace member {member} is missing from README's layout: {listed:?}"
        );
    }
}
