//! Resource header ("reshdr"): the 24-byte locator of a region of the file.
//!
//! Layout: 7-byte size in the file, 1 flag byte, 8-byte absolute offset,
//! 8-byte uncompressed size.

use super::error::{invalid, Le, Result};

/// Meaning unknown; ignored on read, never written.
pub const RESHDR_FLAG_FREE: u8 = 0x01;
/// Image metadata (also set on the header's blob-table and XML locators).
pub const RESHDR_FLAG_METADATA: u8 = 0x02;
/// Chunked and compressed with the WIM-wide codec and chunk size.
pub const RESHDR_FLAG_COMPRESSED: u8 = 0x04;
/// Meaning unknown (split WIMs); ignored on read, never written.
pub const RESHDR_FLAG_SPANNED: u8 = 0x08;
/// A solid resource or a blob inside one (version 3584 files only).
pub const RESHDR_FLAG_SOLID: u8 = 0x10;

pub const RESHDR_SIZE: usize = 24;

/// Where a resource lives and how big it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResHdr {
    /// Bytes the resource occupies in the file (chunk table + chunks when compressed).
    pub size_in_wim: u64,
    /// RESHDR_FLAG_* bits.
    pub flags: u8,
    /// Absolute file offset of the first byte.
    pub offset: u64,
    /// Size of the data once decompressed.
    pub original_size: u64,
}

impl ResHdr {
    pub fn parse(b: &[u8], what: &str) -> Result<ResHdr> {
        let le = Le(b);
        let first = le.u64(0, what)?;
        Ok(ResHdr {
            size_in_wim: first & 0x00FF_FFFF_FFFF_FFFF,
            flags: (first >> 56) as u8,
            offset: le.u64(8, what)?,
            original_size: le.u64(16, what)?,
        })
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        debug_assert!(self.size_in_wim < 1 << 56);
        out.extend_from_slice(&(self.size_in_wim | (self.flags as u64) << 56).to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.original_size.to_le_bytes());
    }

    pub fn is_compressed(&self) -> bool {
        self.flags & RESHDR_FLAG_COMPRESSED != 0
    }

    pub fn is_zero(&self) -> bool {
        *self == ResHdr::default()
    }

    /// End offset in the file, checked against overflow and the file size.
    /// `what` names the resource in the error and is formatted only then
    /// (pass `format_args!`): callers check every blob of a table.
    pub fn end_within(&self, file_size: u64, what: impl std::fmt::Display) -> Result<u64> {
        match self.offset.checked_add(self.size_in_wim) {
            Some(end) if end <= file_size => Ok(end),
            _ => invalid(format!(
                "{what} at offset {} with size {} extends past the end of the file ({file_size} bytes)",
                self.offset, self.size_in_wim
            )),
        }
    }
}
