//! The server-wide memory budget for archive metadata.
//!
//! Browsing, diffing, verifying, restoring and appending all load an image's
//! metadata resource and parse it into a tree. How big that tree gets is
//! decided by the archive, not by us: a few MB of LZX can claim and decode to
//! a GiB of dentries. One such load is bounded by the parser; many at once
//! are bounded here. Every load reserves its estimated peak first and gives
//! it back when the tree is dropped. A load that could never fit is refused
//! at once (RESOURCE_EXHAUSTED, naming the setting to raise); one that merely
//! has to wait for others waits, for a bounded time. No gRPC here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::CoreError;
pub use crate::wim::memory::{
    entries_cost, image_cost, metadata_cost, table_cost, BYTES_PER_BLOB_ENTRY, TREE_BYTES_PER_METADATA_BYTE,
};
use crate::wim::{WimArchive, WimWriter};

/// How long a request waits for others' metadata to be freed before it is
/// refused as RESOURCE_EXHAUSTED.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

const MIB: u64 = 1 << 20;

/// A byte budget shared by every request of one server.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    wait: Duration,
    used: Mutex<u64>,
    freed: Condvar,
    /// Requests in [`MemoryBudget::reserve`] waiting for room right now.
    waiting: AtomicUsize,
}

/// Bytes held from a [`MemoryBudget`]; given back on drop.
#[derive(Debug)]
#[must_use = "the bytes are given back as soon as the reservation is dropped"]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Moves up to `bytes` of this reservation into a new one, to be given
    /// back on its own: the part that covers something with a lifetime of
    /// its own (a tree a capture's walk holds).
    pub fn split_off(&mut self, bytes: u64) -> Reservation {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        Reservation {
            budget: Arc::clone(&self.budget),
            bytes,
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut used = self.budget.lock();
            *used = used.saturating_sub(self.bytes);
            drop(used);
            self.budget.freed.notify_all();
        }
    }
}

/// Counts one request in [`MemoryBudget::waiting`] for as long as it lives.
struct WaitCount<'a>(&'a AtomicUsize);

impl<'a> WaitCount<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        WaitCount(count)
    }
}

impl Drop for WaitCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl MemoryBudget {
    /// A budget of `limit_mib` MiB; requests wait up to `wait` for room.
    pub fn new(limit_mib: u64, wait: Duration) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit: limit_mib.saturating_mul(MIB),
            wait,
            used: Mutex::new(0),
            freed: Condvar::new(),
            waiting: AtomicUsize::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes reserved right now.
    pub fn in_use(&self) -> u64 {
        *self.lock()
    }

    /// The whole budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// How many requests are waiting for room right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Reserves `bytes` if there is room right now; None otherwise (the
    /// caller may let go of what it holds before waiting with [`reserve`]).
    ///
    /// [`reserve`]: Self::reserve
    pub fn try_reserve(self: &Arc<Self>, bytes: u64) -> Option<Reservation> {
        let mut used = self.lock();
        (bytes <= self.limit && self.limit - *used >= bytes).then(|| {
            *used += bytes;
            Reservation {
                budget: Arc::clone(self),
                bytes,
            }
        })
    }

    /// Reserves `bytes` for `what`: at once if there is room, else after
    /// others give theirs back (up to the budget's wait, or until `cancel`
    /// is set). A need larger than the whole budget is refused at once.
    pub fn reserve(
        self: &Arc<Self>,
        bytes: u64,
        what: &str,
        cancel: Option<&AtomicBool>,
    ) -> Result<Reservation, CoreError> {
        if bytes > self.limit {
            return Err(CoreError::ResourceExhausted(format!(
                "{what} needs about {} MiB of memory, more than the server's whole metadata budget of {} MiB; \
                 raise service.server.metadataMemoryMib in config.yaml if the archive is trusted",
                bytes.div_ceil(MIB),
                self.limit / MIB
            )));
        }
        let deadline = Instant::now() + self.wait;
        let mut used = self.lock();
        let mut counted = None;
        loop {
            if self.limit - *used >= bytes {
                *used += bytes;
                return Ok(Reservation {
                    budget: Arc::clone(self),
                    bytes,
                });
            }
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(CoreError::Cancelled);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CoreError::ResourceExhausted(format!(
                    "the server is busy: {what} needs about {} MiB of memory and {} MiB of the {} MiB metadata \
                     budget stayed in use for {} s; try again later",
                    bytes.div_ceil(MIB),
                    (*used).div_ceil(MIB),
                    self.limit / MIB,
                    self.wait.as_secs()
                )));
            }
            counted.get_or_insert_with(|| WaitCount::new(&self.waiting));
            // Wake now and then to notice a cancel.
            let slice = (deadline - now).min(Duration::from_millis(200));
            used = self
                .freed
                .wait_timeout(used, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Reserves what holding `arch` open and loading image `index` (1-based)
    /// costs: its blob table and the peak of parsing that image's metadata.
    pub fn reserve_image(
        self: &Arc<Self>,
        arch: &WimArchive,
        index: u32,
        cancel: Option<&AtomicBool>,
    ) -> Result<Reservation, CoreError> {
        let what = format!("image {index} of {}", arch.path.display());
        self.reserve(image_cost(arch, index) + table_cost(arch), &what, cancel)
    }

    /// Reserves the cost of loading the images `indexes` of `arch` one after
    /// another (the largest of them at a time) while its table is held.
    pub fn reserve_images_in_turn(
        self: &Arc<Self>,
        arch: &WimArchive,
        indexes: impl IntoIterator<Item = u32>,
        cancel: Option<&AtomicBool>,
    ) -> Result<Reservation, CoreError> {
        let largest = indexes.into_iter().map(|i| image_cost(arch, i)).max().unwrap_or(0);
        let what = format!("the images of {}", arch.path.display());
        self.reserve(largest + table_cost(arch), &what, cancel)
    }

    /// What loading the images `indexes` in turn costs while an appending
    /// writer holds the archive's table, and a name for messages.
    pub fn writer_images_cost(writer: &WimWriter, indexes: impl IntoIterator<Item = u32>) -> (u64, String) {
        let metadata = writer.metadata_entries();
        let largest = indexes
            .into_iter()
            .map(|i| metadata_cost(metadata, i))
            .max()
            .unwrap_or(0);
        let table = entries_cost(writer.blob_entries() + metadata.len() as u64);
        (largest + table, format!("the images of {}", writer.path().display()))
    }
}

/// Blocks until `n` requests wait on `budget`: tests use it to know a
/// request reached its wait, where a sleep would only make that likely.
#[cfg(test)]
pub(crate) fn wait_for_waiters(budget: &MemoryBudget, n: usize) {
    let give_up = Instant::now() + Duration::from_secs(300);
    while budget.waiting() != n {
        assert!(Instant::now() < give_up, "no {n} requests came to wait for memory");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_is_refused_at_once_and_names_the_setting() {
        let b = MemoryBudget::new(1, Duration::from_secs(3600));
        let t = Instant::now();
        let e = b.reserve(2 * MIB, "image 1 of x.wim", None).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(60));
        let m = e.to_string();
        assert!(matches!(e, CoreError::ResourceExhausted(_)), "{e:?}");
        assert!(m.contains("image 1 of x.wim") && m.contains("metadataMemoryMib"), "{m}");
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn waiters_get_room_when_it_is_given_back() {
        let b = MemoryBudget::new(10, Duration::from_secs(3600));
        let first = b.reserve(8 * MIB, "a", None).unwrap();
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.reserve(8 * MIB, "b", None).map(|r| r.bytes()));
        wait_for_waiters(&b, 1);
        assert_eq!(b.in_use(), 8 * MIB, "the second must wait");
        drop(first);
        assert_eq!(waiter.join().unwrap().unwrap(), 8 * MIB);
        assert_eq!(b.in_use(), 0);
        assert_eq!(b.waiting(), 0);
    }

    #[test]
    fn a_split_off_share_is_given_back_on_its_own() {
        let b = MemoryBudget::new(10, Duration::from_secs(3600));
        let mut whole = b.reserve(6 * MIB, "a", None).unwrap();
        let part = whole.split_off(4 * MIB);
        assert_eq!((whole.bytes(), part.bytes()), (2 * MIB, 4 * MIB));
        assert_eq!(b.in_use(), 6 * MIB);
        drop(whole);
        assert_eq!(b.in_use(), 4 * MIB);
        // More than is left moves only what is left.
        let mut part = part;
        let rest = part.split_off(5 * MIB);
        assert_eq!((part.bytes(), rest.bytes()), (0, 4 * MIB));
        drop(rest);
        assert_eq!(b.in_use(), 0);
        drop(part);
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn try_reserve_takes_room_only_when_there_is_some() {
        let b = MemoryBudget::new(10, Duration::from_secs(3600));
        let held = b.try_reserve(8 * MIB).expect("room");
        assert!(b.try_reserve(4 * MIB).is_none());
        assert!(b.try_reserve(11 * MIB).is_none(), "more than the budget");
        assert_eq!(b.in_use(), 8 * MIB);
        drop(held);
        assert!(b.try_reserve(10 * MIB).is_some());
        assert_eq!(b.in_use(), 0);
    }

    #[test]
    fn a_wait_ends_in_resource_exhausted_or_cancelled() {
        let b = MemoryBudget::new(10, Duration::from_millis(300));
        let _held = b.reserve(10 * MIB, "a", None).unwrap();
        let e = b.reserve(MIB, "b", None).unwrap_err();
        assert!(matches!(e, CoreError::ResourceExhausted(_)), "{e:?}");
        assert!(e.to_string().contains("busy"), "{e}");
        let cancel = AtomicBool::new(true);
        let b = MemoryBudget::new(10, Duration::from_secs(3600));
        let _held = b.reserve(10 * MIB, "a", None).unwrap();
        assert!(matches!(b.reserve(MIB, "c", Some(&cancel)), Err(CoreError::Cancelled)));
    }
}
