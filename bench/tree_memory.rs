//! How much memory parsing a metadata resource takes, per byte of the
//! resource: the measurement behind `budget::TREE_BYTES_PER_METADATA_BYTE`.
//! Counts every allocation of the parse (a counting global allocator) for
//! trees of minimal dentries (the worst case: the fixed in-memory cost per
//! entry is largest relative to its bytes on disk).
//!
//! Run: `cargo run --release --example tree_memory`
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use wimguard::wim::metadata::*;
struct Counting;
static CUR: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        let c = CUR.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(c, Relaxed);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CUR.fetch_sub(l.size(), Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let q = System.realloc(p, l, n);
        if n > l.size() {
            let c = CUR.fetch_add(n - l.size(), Relaxed) + n - l.size();
            PEAK.fetch_max(c, Relaxed);
        } else {
            CUR.fetch_sub(l.size() - n, Relaxed);
        }
        q
    }
}
#[global_allocator]
static A: Counting = Counting;
fn dir() -> Inode {
    Inode {
        attributes: FILE_ATTRIBUTE_DIRECTORY,
        security_id: -1,
        ..Inode::default()
    }
}
fn main() {
    for (label, dirs, per) in [
        ("flat", 1usize, 200_000usize),
        ("1000 dirs", 1000, 200),
        ("chain", 2000, 0),
    ] {
        let mut t = ImageTree::new(dir());
        let mut parent = 0;
        for d in 0..dirs {
            let di = t.add_inode(dir());
            let dd = t.add_dentry(
                if per == 0 { parent } else { 0 },
                format!("d{d}").encode_utf16().collect(),
                di,
            );
            parent = dd;
            for f in 0..per {
                let i = t.add_inode(Inode {
                    attributes: FILE_ATTRIBUTE_NORMAL,
                    security_id: -1,
                    ..Inode::default()
                });
                t.add_dentry(dd, format!("{f}").encode_utf16().collect(), i);
            }
        }
        let bytes = t.serialize();
        drop(t);
        let base = CUR.load(Relaxed);
        PEAK.store(base, Relaxed);
        let tree = ImageTree::parse(&bytes).unwrap();
        let peak = PEAK.load(Relaxed) - base;
        let kept = CUR.load(Relaxed) - base;
        println!(
            "{label}: resource {} B, {} dentries, parse peak {:.2}x, tree {:.2}x (+1x raw)",
            bytes.len(),
            tree.dentries.len(),
            peak as f64 / bytes.len() as f64,
            kept as f64 / bytes.len() as f64
        );
    }
}
