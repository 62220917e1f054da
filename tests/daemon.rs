//! Integration tests of the daemon (issue 3): every test starts its own real
//! `wimguard server --home <tempdir> --port 0`, talks to it through the CLI
//! (and the client library / raw gRPC where the CLI cannot reach), and stops
//! it at the end (a Drop guard SIGTERMs, then SIGKILLs, and reaps).
//!
//! Run: `cargo test --test daemon`. Needs `wimlib-imagex` (wimtools).

mod common;

#[path = "daemon/harness.rs"]
mod harness;

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
