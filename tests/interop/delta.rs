//! Archives written for object storage (issue 10): a full WIM, then delta
//! WIMs that hold only new blobs plus the new image's metadata, each
//! written as numbered parts with the header and chunk tables filled in
//! last. Put back together, every object is a WIM wimlib verifies and
//! applies with `--ref` to the earlier ones, bit for bit, and so do we.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wimguard::capture::{self, CaptureOptions};
use wimguard::wim::storage::PartUpload;
use wimguard::wim::{Compression, WimArchive, WimWriter};

use crate::common::*;

/// Keeps the parts as an object store would: the last bytes per number.
#[derive(Clone, Default)]
struct Parts(Arc<Mutex<BTreeMap<u32, Vec<u8>>>>);

impl PartUpload for Parts {
    fn put_part(&mut self, n: u32, data: Vec<u8>, _whole: Option<u64>) -> io::Result<()> {
        self.0.lock().unwrap().insert(n, data);
        Ok(())
    }
}

/// Captures `src` as the one image of a new object at `out`; `chain` are
/// the earlier objects, whose blobs it may use (delta) and whose newest
/// image gives unchanged files their hashes.
fn capture_object(src: &Path, out: &Path, chain: &[PathBuf], compression: Compression, name: &str) {
    let parts = Parts::default();
    let mut w = WimWriter::create_for_upload(
        &out.display().to_string(),
        compression,
        None,
        32768,
        Box::new(parts.clone()),
    )
    .unwrap();
    let mut previous = None;
    for obj in chain {
        let a = WimArchive::open(obj, &wimguard::wim::codecs::StandardCodecs).unwrap();
        w.add_external_blobs(a.blobs.values().map(|b| (b.hash, b.reshdr.original_size)));
        previous = Some(a);
    }
    let prev_tree = previous.as_ref().map(|a| a.load_image(1).unwrap());
    let opts = CaptureOptions {
        name: name.into(),
        description: String::new(),
        excludes: Vec::new(),
        no_rpfix: false,
        cancel: None,
        backup_uuid: String::new(),
    };
    capture::capture(
        src,
        &mut w,
        prev_tree.map(capture::PreviousImage::new),
        &opts,
        &mut |_| {},
    )
    .unwrap();
    let (size, last) = w.finish_upload().unwrap();
    let m = parts.0.lock().unwrap();
    let bytes: Vec<u8> = (1..=last).flat_map(|n| m[&n].clone()).collect();
    assert_eq!(bytes.len() as u64, size);
    fs::write(out, bytes).unwrap();
}

/// One `--ref=FILE` per earlier object.
fn refs(chain: &[PathBuf]) -> Vec<String> {
    chain.iter().map(|p| format!("--ref={}", p.display())).collect()
}

#[test]
fn delta_chains_written_in_parts_apply_with_wimlib_and_with_us() {
    ensure_wimlib();
    for compression in [Compression::Lzx, Compression::None] {
        let s = Scratch::new();
        let fx = build_tree2(21);
        let src = fx.root.clone();
        // A file over one 16 MiB part, so parts really are cut.
        fs::write(src.join("big.bin"), Rng::new(5).bytes(20 << 20)).unwrap();
        let mut chain: Vec<PathBuf> = Vec::new();
        let mut expected = Vec::new();
        for round in 0..3u64 {
            if round > 0 {
                fs::write(
                    src.join(format!("new{round}.txt")),
                    format!("round {round}\n").repeat(5000),
                )
                .unwrap();
                fs::write(src.join("big.bin"), Rng::new(5 + round).bytes(3 << 20)).unwrap();
            }
            let obj = s.path(&format!("{round:06}.wim"));
            capture_object(&src, &obj, &chain, compression, &format!("r{round}"));
            let size = fs::metadata(&obj).unwrap().len();
            if round == 2 {
                // Only the changed files' blobs and the metadata are in it.
                assert!(size < (3 << 20) + (2 << 20), "delta object holds {size} bytes");
            }
            expected.push(snapshot(&src));
            chain.push(obj);
        }
        for (i, obj) in chain.iter().enumerate() {
            let earlier = &chain[..i];
            let r = refs(earlier);
            let mut v = vec![os("verify"), obj.as_os_str()];
            v.extend(r.iter().map(os));
            wimlib_allow(&v, &["does not contain integrity information"]);
            // wimlib applies each object's image with the earlier ones as refs.
            let out = s.path(&format!("wimlib-{i}"));
            let mut a = vec![
                os("apply"),
                obj.as_os_str(),
                os("1"),
                out.as_os_str(),
                os("--unix-data"),
            ];
            a.extend(r.iter().map(os));
            wimlib(&a);
            assert_snapshots_equal(
                &expected[i],
                &snapshot(&out),
                &CompareOpts::full(&src, &out).without_atime(),
                &format!("wimlib apply of object {i} ({compression:?})"),
            );
            // So do we, with the earlier objects' blobs as references.
            let mut arch = WimArchive::open(obj, &wimguard::wim::codecs::StandardCodecs).unwrap();
            for e in earlier {
                let r = WimArchive::open(e, &wimguard::wim::codecs::StandardCodecs).unwrap();
                arch.add_ref(e, r.source.clone(), r.blobs.values().cloned());
            }
            let ours = s.path(&format!("ours-{i}"));
            wimguard::apply::apply(&arch, 1, &ours, &Default::default(), &mut |_, _| {}).unwrap();
            assert_snapshots_equal(
                &expected[i],
                &snapshot(&ours),
                &CompareOpts::full(&src, &ours).without_atime(),
                &format!("our apply of object {i} ({compression:?})"),
            );
        }
    }
}
