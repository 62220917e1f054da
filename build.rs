//! Compiles the gRPC API in `proto/v1` with protox (a protobuf compiler in
//! pure Rust, so no `protoc` needs installing) and tonic-prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "common",
        "backup",
        "restore",
        "snapshot",
        "schedule",
        "registry",
        "env",
        "statistics",
    ]
    .map(|f| format!("proto/v1/{f}.proto"));
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(&files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
