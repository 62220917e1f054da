//! Compiles the gRPC API in `proto/v1` (at the workspace root) with protox,
//! a protobuf compiler in pure Rust (no `protoc` to install), and
//! tonic-prost-build.

use std::path::PathBuf;

/// The API's files, in `proto/v1`.
const FILES: [&str; 9] = [
    "common",
    "backup",
    "restore",
    "snapshot",
    "schedule",
    "registry",
    "env",
    "statistics",
    "archive",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files: Vec<PathBuf> = FILES.iter().map(|f| proto.join(format!("v1/{f}.proto"))).collect();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let fds = protox::compile(&files, [&proto])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
