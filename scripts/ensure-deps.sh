#!/usr/bin/env bash
# Installs what WimGuard's tests and demo need beyond rustup, idempotently:
# wimlib-imagex (Debian package wimtools) and the rustup target wasm32-wasip2. Fails with a clear message when
# it cannot.
set -euo pipefail

if ! command -v wimlib-imagex >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing wimtools (wimlib-imagex) ..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null
        apt-get install -y -qq wimtools >/dev/null
    else
        echo "error: wimlib-imagex is missing and cannot be installed automatically." >&2
        echo "       install it as root with: apt-get install wimtools" >&2
        exit 1
    fi
fi
command -v wimlib-imagex >/dev/null 2>&1 || { echo "error: wimtools installed but wimlib-imagex not on PATH" >&2; exit 1; }
command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; install Rust with rustup" >&2; exit 1; }
# The wasm plugin tests (tests/wasm_codec.rs) build plugins for wasm32-wasip2.
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2 >&2
fi
# The S3 destination tests (tests/plugins/destination.rs) run a real S3 server: s3s-fs, a crate that serves a
# directory over the S3 API. Installed with cargo once (a few minutes of CPU), skipped when that version is there.
S3S_FS_VERSION=0.14.1
s3s_fs_ok() {
    local bin
    for bin in "$(command -v s3s-fs 2>/dev/null || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"; do
        [ -n "$bin" ] && [ -x "$bin" ] || continue
        "$bin" --version 2>/dev/null | grep -qw "$S3S_FS_VERSION" && return 0
    done
    return 1
}
if ! s3s_fs_ok; then
    echo "installing s3s-fs $S3S_FS_VERSION with cargo (takes a few minutes) ..." >&2
    if ! cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked >&2; then
        echo "retrying without --locked ..." >&2
        cargo install "s3s-fs@$S3S_FS_VERSION" --features binary >&2 || {
            echo "error: could not install s3s-fs $S3S_FS_VERSION (needed by the S3 destination tests)." >&2
            echo "       install it with: cargo install s3s-fs@$S3S_FS_VERSION --features binary" >&2
            exit 1
        }
    fi
    s3s_fs_ok || { echo "error: s3s-fs $S3S_FS_VERSION installed but neither on PATH nor in ~/.cargo/bin" >&2; exit 1; }
fi
