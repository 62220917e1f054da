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
    let fds = protox::compile(&files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
