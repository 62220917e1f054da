//! Integration tests of the plugin platform (issue 4), through the real
//! daemon and CLI: the registry (bundled plugins, install, validation,
//! tampering), codec plugins in backups and restores (a third-party plugin
//! built out of tree with only the SDK), hostile plugins, hooks (commands,
//! wasm hook plugins, the webhook plugin against a loopback HTTP server).
//!
//! The wasm fixtures are built here with cargo for wasm32-wasip2, once per
//! run, into `target/wasm-test-plugins`. Run: `cargo test --test plugins`.

mod common;

#[path = "daemon/harness.rs"]
#[allow(dead_code)]
mod harness;

#[path = "plugins/fixtures.rs"]
mod fixtures;

#[path = "plugins/codecs.rs"]
mod codecs;
#[path = "plugins/destination.rs"]
mod destination;
#[path = "plugins/hooks.rs"]
mod hooks;
#[path = "plugins/registry.rs"]
mod registry;
