//! Metadata resource parser (security block + dentry tree) on arbitrary
//! bytes; whatever parses must serialize and parse again identically.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wimguard_wim::metadata::ImageTree;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = ImageTree::parse(data) {
        let bytes = tree.serialize();
        let again = ImageTree::parse(&bytes).expect("our own output parses");
        assert_eq!(again.serialize(), bytes);
        for d in tree.walk(0) {
            let _ = tree.inode_of(d).tagged.xattrs();
        }
    }
});
