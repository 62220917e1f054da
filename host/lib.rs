/// The WIM format crate, under the names the rest of the host uses.
pub use wimguard_wim as wim;
pub use wimguard_wim::{apply, capture, fsutil};

pub mod api;
pub mod budget;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod config;
pub mod cron;
pub mod error;
pub mod forget;
pub mod hooks;
pub mod jobs;
pub mod metrics;
pub mod ops;
pub mod plugins;
pub mod remote;
pub mod retention;
pub mod scheduler;
pub mod server;
pub mod tls;
