//! The daemon and the CLI: the gRPC services over the core, the client,
//! TLS, and the plugins bundled into the binary.

/// The gRPC API (`proto/v1`).
pub use wimguard_api as api;
/// The core, under the module names it had before it became a crate.
pub use wimguard_core::{
    budget, catalog, config, cron, error, forget, hooks, jobs, metrics, ops, plugins, remote, retention, scheduler,
};
/// The WIM format crate, under the names the rest of the host uses.
pub use wimguard_wim as wim;
pub use wimguard_wim::{apply, capture, fsutil};

pub mod bundled;
pub mod cli;
pub mod client;
pub mod server;
pub mod tls;
