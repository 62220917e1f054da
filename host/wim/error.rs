//! Errors of the WIM layer. Every malformed archive ends in one of these,
//! never in a panic: messages name what is wrong and, where it helps, where.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum WimError {
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The file is not a WIM, or a structure in it is malformed.
    #[error("invalid WIM: {0}")]
    Invalid(String),
    /// The file is a valid WIM that uses a feature we do not implement.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// Stored data does not match its checksum.
    #[error("corrupt WIM: {0}")]
    Corrupt(String),
    /// A caller asked for something that does not exist (image, path).
    #[error("{0}")]
    NotFound(String),
    /// Another process is modifying the archive.
    #[error("{0}")]
    Locked(String),
    /// The archive needs a codec plugin that is not available (not
    /// installed, disabled, refused); the message names it.
    #[error("{0}")]
    CodecUnavailable(String),
    /// The codec failed while compressing (a plugin crashed or hit a limit);
    /// the message names the plugin and what stopped it.
    #[error("compression failed: {0}")]
    CodecFailed(String),
    /// The caller asked the operation to stop; nothing was changed.
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = WimError> = std::result::Result<T, E>;

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(WimError::Invalid(msg.into()))
}

/// Little-endian field readers over a byte slice that return an error (not a
/// panic) when the slice is too short.
pub(crate) struct Le<'a>(pub &'a [u8]);

impl Le<'_> {
    fn get<const N: usize>(&self, off: usize, what: &str) -> Result<[u8; N]> {
        off.checked_add(N)
            .and_then(|end| self.0.get(off..end))
            .map(|s| s.try_into().expect("length checked"))
            .ok_or_else(|| WimError::Invalid(format!("{what}: truncated structure")))
    }
    pub fn u16(&self, off: usize, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.get(off, what)?))
    }
    pub fn u32(&self, off: usize, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.get(off, what)?))
    }
    pub fn u64(&self, off: usize, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.get(off, what)?))
    }
    pub fn sha1(&self, off: usize, what: &str) -> Result<[u8; 20]> {
        self.get(off, what)
    }
}
