// The gRPC API (proto/v1) is compiled here once the daemon lands (issue 3).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
