//! Whole-archive reader: header, blob table, XML, every image's metadata,
//! listing and verification, the append point and the memory estimates, on
//! arbitrary bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let mut f = tempfile_in_shm();
    f.1.write_all(data).unwrap();
    if let Ok(arch) = wimguard_wim::WimArchive::open(&f.0, &wimguard_wim::codecs::StandardCodecs) {
        // What an append and the daemon's memory budget derive from the file.
        let _ = arch.append_point();
        let _ = wimguard_wim::memory::table_cost(&arch);
        for i in 1..=arch.image_count().min(4) {
            let _ = wimguard_wim::memory::image_cost(&arch, i);
            if let Ok(tree) = arch.load_image(i) {
                let _ = wimguard_wim::apply::list(&arch, &tree, "/", &mut |_, _, _| Ok(()));
                let _ = tree.serialize();
            }
        }
        let _ = arch.verify(&mut |_, _| {});
    }
    let _ = std::fs::remove_file(&f.0);
    f.0.clear();
});

fn tempfile_in_shm() -> (std::path::PathBuf, std::fs::File) {
    let dir = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
    let p = std::path::PathBuf::from(format!("{dir}/wimguard-fuzz-{}.wim", std::process::id()));
    let f = std::fs::File::create(&p).unwrap();
    (p, f)
}
