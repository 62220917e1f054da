//! WimGuard's core: what a backup is and how it runs, knowing nothing of
//! gRPC or the command line. The daemon serves it over the API; tests and
//! benchmarks drive it directly.
//!
//! * [`catalog`]: the SQLite catalog (backups, plugins, schedules, remote
//!   archives); [`config`]: `config.yaml`; [`error`]: the core's error,
//!   with one `From` per lower layer.
//! * [`jobs`]: the backup pipeline and the job runner; [`ops`]: the other
//!   long operations (restore, verify, delete, consolidate, rebuild);
//!   [`forget`] and [`retention`]: what to keep; [`scheduler`] and
//!   [`cron`]: when to run.
//! * [`plugins`]: the plugin registry over the plugin host; [`hooks`]:
//!   the hook stage; [`remote`]: archives kept by destination plugins.
//! * [`budget`]: the server-wide metadata memory budget; [`metrics`]:
//!   Prometheus series.

/// The WIM format crate, under the names the core uses.
pub use wimguard_wim as wim;
pub use wimguard_wim::{apply, capture, fsutil};

pub mod budget;
pub mod catalog;
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
