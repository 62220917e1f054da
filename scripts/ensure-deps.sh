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
