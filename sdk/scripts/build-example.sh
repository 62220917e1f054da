#!/usr/bin/env bash
# Builds the example codec plugin (sdk/examples/rle-codec) as a WebAssembly
# component and as a native plugin, and checks both. Not part of the CI test command.
#   sdk/scripts/build-example.sh            # uses $CARGO_TARGET_DIR or /tmp/tgt-sdk
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/tmp/tgt-sdk}"
rustup target add wasm32-wasip2 >/dev/null
cd "$here/examples/rle-codec"
cargo test --quiet                                    # native unit tests of the codec
cargo build --target wasm32-wasip2 --release
wasm="$CARGO_TARGET_DIR/wasm32-wasip2/release/wimguard_rle_codec.wasm"
# A component starts with "\0asm" then version 0x0d 0x00 and layer 0x01 0x00
# (a core module would have 01 00 00 00).
magic="$(head -c 8 "$wasm" | od -An -tx1 | tr -d ' \n')"
if [ "$magic" != "0061736d0d000100" ]; then
    echo "FAIL: $wasm is not a component (header $magic)" >&2; exit 1
fi
echo "OK: $wasm is a component ($(stat -c %s "$wasm") bytes)"
if command -v wasm-tools >/dev/null; then
    wasm-tools validate "$wasm"
    wit="$(wasm-tools component wit "$wasm")"
    echo "$wit"
    for want in 'export wimguard:plugin/plugin@1.0.0' 'export wimguard:plugin/codec@1.0.0'; do
        grep -qF "$want" <<<"$wit" || { echo "FAIL: missing '$want'" >&2; exit 1; }
    done
    echo "OK: exports wimguard:plugin/{plugin,codec}@1.0.0"
else
    echo "(wasm-tools not installed: skipped the WIT check; cargo install wasm-tools --locked)"
fi
# The same crate as a trusted native plugin (native ABI 1).
cargo build --release --features native
so="$CARGO_TARGET_DIR/release/libwimguard_rle_codec.so"
for sym in wimguard_native_abi_version wimguard_native_plugin_info wimguard_native_codec_new \
           wimguard_native_codec_free wimguard_native_codec_compress wimguard_native_codec_decompress; do
    nm -D --defined-only "$so" | grep -qw "$sym" || { echo "FAIL: $so lacks $sym" >&2; exit 1; }
done
echo "OK: $so exports native ABI 1 (sha256 $(sha256sum "$so" | cut -d' ' -f1))"
