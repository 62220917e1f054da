#!/usr/bin/env bash
# Builds the first-party plugins (xpress-plugin, lzx-plugin, webhook, s3-upload) as
# WebAssembly components and prints the paths of the .wasm files.
#   plugins/build-wasm.sh   # cargo target dir: $WIMGUARD_PLUGIN_TARGET, default <repo>/target/wasm-plugins
# One cargo invocation per crate: each enables a different wimguard-sdk world
# feature, and features unified into one build would not compile.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="${WIMGUARD_PLUGIN_TARGET:-$root/target/wasm-plugins}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac # cargo runs in each crate's directory
# Flags meant for the native build (e.g. -C target-cpu=native) must not leak
# into the wasm one.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2 >&2
fi
for crate in xpress-plugin lzx-plugin webhook s3-upload; do
    (cd "$root/plugins/$crate" &&
        CARGO_TARGET_DIR="$target" cargo build --release --locked --target wasm32-wasip2 >&2)
done
for artifact in wimguard_xpress_plugin wimguard_lzx_plugin wimguard_webhook wimguard_s3_upload; do
    wasm="$target/wasm32-wasip2/release/$artifact.wasm"
    [ -f "$wasm" ] || { echo "missing $wasm" >&2; exit 1; }
    echo "$wasm"
done
