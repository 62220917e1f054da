//! The WIM format: on-disk structures (one module each), reading, writing,
//! appending and verifying, plus capturing a directory tree into an image
//! and applying one back. This crate knows bytes, structures and files
//! only — nothing of jobs, gRPC, SQLite or wasm plugins (a test checks its
//! dependency tree) — and is what `fuzz/` fuzzes.

pub mod apply;
pub mod archive;
pub mod blob_table;
pub mod capture;
pub mod codecs;
pub mod error;
pub mod fsutil;
pub mod header;
pub mod identity;
pub mod integrity;
pub mod memory;
pub mod metadata;
pub mod reparse;
pub mod reshdr;
pub mod resource;
pub mod security;
pub mod spool;
pub mod storage;
pub mod tagged;
pub mod time;
pub mod writer;
pub mod xml;

pub use archive::WimArchive;
pub use error::{Result, WimError};
pub use header::Compression;
pub use writer::WimWriter;
