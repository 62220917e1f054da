//! Interoperability test suite between wimguard and wimlib-imagex (wimtools),
//! following the conformance checklist of docs/wim-format.md §13.
//!
//! Run: `CARGO_TARGET_DIR=/tmp/tgt-tests cargo test --test interop`
//! Tests needing root (devices, ownership) print "skipped: needs root" otherwise.

mod common;

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
#[path = "interop/layout.rs"]
mod layout;
#[path = "interop/mixed.rs"]
mod mixed;
#[path = "interop/safety.rs"]
mod safety;
#[path = "interop/soft_delete.rs"]
mod soft_delete;
