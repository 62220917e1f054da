//! Every integration test in one binary, so wasmtime and the rest of the
//! host are linked once, not once per file. Each module keeps its own
//! file (and its test names: `cargo test --test integration schedules::`).
//!
//! * `tests/daemon/`: the real `wimguard server --home <tempdir> --port 0`,
//!   driven through the CLI (and the client library or raw gRPC where the
//!   CLI cannot reach); each test starts and stops its own server.
//! * `tests/interop/`: wimguard against `wimlib-imagex` (wimtools), following
//!   the conformance checklist of docs/wim-format.md; tests needing root
//!   (devices, ownership) print "skipped: needs root" otherwise.
//! * `tests/plugins/`: the plugin platform through the daemon: registry,
//!   codec plugins (a third-party plugin built out of tree with only the
//!   SDK), hostile plugins, hooks, the s3-upload destination against s3s-fs.
//!   Wasm fixtures are built with cargo for wasm32-wasip2 once per run into
//!   `target/wasm-test-plugins`.
//! * crash safety of archive writes, hostile names, integrity tables on
//!   append, and codec plugins in the wasm runtime.

mod common;

#[path = "plugins/fixtures.rs"]
mod fixtures;
#[path = "daemon/harness.rs"]
mod harness;

// The daemon, through the CLI.
#[path = "daemon/basics.rs"]
mod basics;
#[path = "daemon/bombs.rs"]
mod bombs;
#[path = "daemon/cancel.rs"]
mod cancel;
#[path = "daemon/concurrency.rs"]
mod concurrency;
#[path = "daemon/errors.rs"]
mod errors;
#[path = "daemon/hostile_sources.rs"]
mod hostile_sources;
#[path = "daemon/metrics.rs"]
mod metrics;
#[path = "daemon/remote.rs"]
mod remote;
#[path = "daemon/roundtrip.rs"]
mod roundtrip;
#[path = "daemon/schedules.rs"]
mod schedules;
#[path = "daemon/soak.rs"]
mod soak;
#[path = "daemon/tls.rs"]
mod tls;

// Interoperability with wimlib-imagex.
#[path = "interop/bad_input.rs"]
mod bad_input;
#[path = "interop/baseline.rs"]
mod baseline;
#[path = "interop/delta.rs"]
mod delta;
#[path = "interop/direction_a.rs"]
mod direction_a;
#[path = "interop/direction_b.rs"]
mod direction_b;
#[path = "interop/duplicates.rs"]
mod duplicates;
#[path = "interop/layout.rs"]
mod layout;
#[path = "interop/mixed.rs"]
mod mixed;
#[path = "interop/replace_in_place.rs"]
mod replace_in_place;
#[path = "interop/safety.rs"]
mod safety;
#[path = "interop/soft_delete.rs"]
mod soft_delete;

// The plugin platform.
#[path = "plugins/codecs.rs"]
mod codecs;
#[path = "plugins/destination.rs"]
mod destination;
#[path = "plugins/hooks.rs"]
mod hooks;
#[path = "plugins/registry.rs"]
mod registry;

// Archive writes, names, integrity tables, the wasm codec runtime.
mod crash_safety;
mod hostile_names;
mod integrity_append;
mod wasm_codec;
