//! The WIM format: on-disk structures (one module each), reading, writing,
//! appending and verifying. This layer knows bytes and structures only —
//! nothing of jobs, gRPC or plugins — and can be fuzzed alone.

pub mod archive;
pub mod blob_table;
pub mod codecs;
pub mod error;
pub mod header;
pub mod integrity;
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
