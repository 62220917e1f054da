//! What several of these tests need: an archive of one image of a tree,
//! and the largest blob's resource (the one to damage).

#![allow(dead_code)]

use std::path::Path;

use wimguard_wim::capture::{capture, CaptureOptions};
use wimguard_wim::codecs::StandardCodecs;
use wimguard_wim::reshdr::ResHdr;
use wimguard_wim::{Compression, WimArchive, WimWriter};

/// Creates `wim` holding one image, named "one", of `src`.
pub fn archive_of(src: &Path, wim: &Path, compression: Compression) {
    let mut w = WimWriter::create(wim, compression, 32768).unwrap();
    let opts = CaptureOptions {
        name: "one".into(),
        ..Default::default()
    };
    capture(src, &mut w, None, &opts, &mut |_| {}).unwrap();
    w.commit().unwrap();
}

/// The resource of the largest blob in `wim`.
pub fn largest_blob(wim: &Path) -> ResHdr {
    let arch = WimArchive::open(wim, &StandardCodecs).unwrap();
    arch.blobs
        .values()
        .max_by_key(|b| b.reshdr.original_size)
        .map(|b| b.reshdr)
        .unwrap()
}
