#!/usr/bin/env bash
# Runs every test of the workspace: unit tests, codec conformance and
# wimlib cross-checks, and the integration tests that drive the real
# `wimguard` binary against real `wimlib-imagex`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo test --workspace --locked "$@"
