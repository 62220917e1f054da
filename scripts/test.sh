#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, codec conformance and
# wimlib cross-checks, and the integration tests that drive the real
# `wimguard` binary against real `wimlib-imagex`, the S3 destination
# against a real s3s-fs, and the first-party plugins' own unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo test --workspace --locked "$@"
# The unit tests of the first-party wasm plugins with their own workspaces
# (settings, tokens, retry decisions), built natively.
for crate in webhook s3-upload; do
    cargo test --locked --manifest-path "plugins/$crate/Cargo.toml" --target-dir target/plugin-unit-tests
done
