//! Reading a remote object by ranges: the [`ReadAt`] a `WimArchive` reads
//! a chain object through. A resource the reader announces (`will_read`)
//! is fetched in one request and kept in a small cache, so a blob costs
//! one GET however many reads decode it; anything else is fetched exactly.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::ObjectStore;
use crate::error::CoreError;
use crate::wim::storage::ReadAt;

/// Largest announced range fetched whole (bigger ones are read as decoded).
const PREFETCH_MAX: u64 = 8 << 20;
/// Ranges kept (several threads decode different blobs at once).
const CACHE_RANGES: usize = 16;
/// Largest single GET.
const READ_MAX: u64 = 64 << 20;

/// A chain object the catalog records is not in the store: the archive
/// lost data (DATA_LOSS), unlike a store that refuses a read.
#[derive(Debug)]
pub struct MissingObject(String);

impl std::fmt::Display for MissingObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MissingObject {}

/// The store stayed unavailable through its retries (UNAVAILABLE: try
/// again later), as opposed to refusing or not having what was asked for.
#[derive(Debug)]
pub struct StoreUnavailable(String);

impl std::fmt::Display for StoreUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreUnavailable {}

pub struct RemoteSource {
    store: Arc<dyn ObjectStore>,
    key: String,
    size: u64,
    /// Recently fetched ranges: (start, bytes), newest last.
    cache: Mutex<Vec<(u64, Arc<Vec<u8>>)>>,
    gets: AtomicU64,
}

impl RemoteSource {
    pub fn new(store: Arc<dyn ObjectStore>, key: &str, size: u64) -> RemoteSource {
        RemoteSource {
            store,
            key: key.to_string(),
            size,
            cache: Mutex::new(Vec::new()),
            gets: AtomicU64::new(0),
        }
    }

    /// Requests made so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }

    fn fetch(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len as usize);
        while (out.len() as u64) < len {
            let at = offset + out.len() as u64;
            let n = (len - out.len() as u64).min(READ_MAX) as u32;
            self.gets.fetch_add(1, Ordering::Relaxed);
            let piece = self.store.read(&self.key, at, n).map_err(|e| {
                let message = format!("reading {} from {}: {e}", self.key, self.store.name());
                // The store's verdict travels as the error's kind: a
                // refusal is not damage to the archive. A recorded object
                // that is gone is.
                let kind = match e {
                    CoreError::NotFound(_) => {
                        let archive = self.key.split('/').next().unwrap_or_default();
                        return io::Error::new(
                            io::ErrorKind::NotFound,
                            MissingObject(format!(
                                "{message}: the object is missing from the store (deleted outside WimGuard?); \
                                 `wimguard archive check {archive} --plugin {}` names the snapshots affected",
                                self.store.name()
                            )),
                        );
                    }
                    CoreError::PermissionDenied(_) => io::ErrorKind::PermissionDenied,
                    // The plugin's retries gave up: try again later.
                    CoreError::Unavailable(_) => return io::Error::other(StoreUnavailable(message)),
                    _ => io::ErrorKind::Other,
                };
                io::Error::new(kind, message)
            })?;
            if piece.is_empty() || piece.len() > n as usize {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} answered {} bytes at offset {at} of {} where {n} were asked for (the object is shorter \
                         than the catalog says: was it replaced?)",
                        self.store.name(),
                        piece.len(),
                        self.key
                    ),
                ));
            }
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    fn cached(&self, buf: &mut [u8], offset: u64) -> bool {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        for (start, data) in cache.iter().rev() {
            if offset >= *start && offset + buf.len() as u64 <= start + data.len() as u64 {
                let i = (offset - start) as usize;
                buf.copy_from_slice(&data[i..i + buf.len()]);
                return true;
            }
        }
        false
    }
}

impl ReadAt for RemoteSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|end| end > self.size) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read past the end of {} ({} bytes)", self.key, self.size),
            ));
        }
        if buf.is_empty() || self.cached(buf, offset) {
            return Ok(());
        }
        let data = self.fetch(offset, buf.len() as u64)?;
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn will_read(&self, offset: u64, len: u64) {
        if len == 0 || len > PREFETCH_MAX || offset.saturating_add(len) > self.size {
            return;
        }
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache
                .iter()
                .any(|(s, d)| offset >= *s && offset + len <= s + d.len() as u64)
            {
                return;
            }
        }
        // A failure here shows up again, with its message, on the read itself.
        if let Ok(data) = self.fetch(offset, len) {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.len() >= CACHE_RANGES {
                cache.remove(0);
            }
            cache.push((offset, Arc::new(data)));
        }
    }
}
