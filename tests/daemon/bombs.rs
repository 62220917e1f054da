//! Issue 9 §1: metadata bombs through the daemon. An archive decides how
//! much memory its metadata takes; the server must bound that per request
//! (paths past PATH_MAX are left out, not kept) and across requests (a
//! server-wide budget: refuse what can never fit with RESOURCE_EXHAUSTED,
//! let the rest wait their turn), and keep every failure inside its request.
//!
//! Each bomb replaces the archive of a real backup, keeping the backup's
//! uuid in the image's XML, so the catalog leads every request to it.

use std::fs;
use std::path::Path;

use wimguard::wim::metadata::{ImageTree, Inode, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_NORMAL};
use wimguard::wim::xml::ImageInfo;
use wimguard::wim::{Compression, WimArchive, WimWriter};

use crate::common;
use crate::harness::*;

/// The budget the server runs with in these tests.
const BUDGET_MIB: u64 = 64;

fn dir() -> Inode {
    Inode {
        attributes: FILE_ATTRIBUTE_DIRECTORY,
        security_id: -1,
        ..Inode::default()
    }
}

/// Writes `tree` as the only image of a new LZX archive at `wim`, owned by backup `uuid`.
pub fn write_image(wim: &Path, uuid: &str, tree: &ImageTree) {
    let _ = fs::remove_file(wim);
    let mut w = WimWriter::create(wim, Compression::Lzx, 32768).unwrap();
    w.add_image(
        tree,
        ImageInfo {
            name: "bomb".into(),
            backup_uuid: uuid.into(),
            ..ImageInfo::default()
        },
    )
    .unwrap();
    w.commit().unwrap();
}

/// 16,000 nested directories with 255-character names: 4 MB of metadata
/// whose full paths would be 16,000 × 4 KB each.
fn deep_bomb(wim: &Path, uuid: &str) {
    let mut t = ImageTree::new(dir());
    let name: Vec<u16> = "d".repeat(255).encode_utf16().collect();
    let mut parent = 0;
    for _ in 0..16_000 {
        let i = t.add_inode(dir());
        parent = t.add_dentry(parent, name.clone(), i);
    }
    write_image(wim, uuid, &t);
}

/// `files` empty files with short names in directory `/many`: metadata of
/// about 120 bytes per file that compresses very well.
pub fn wide_tree(files: usize) -> ImageTree {
    let mut t = ImageTree::new(dir());
    let d = t.add_inode(dir());
    let many = t.add_dentry(0, "many".encode_utf16().collect(), d);
    for n in 0..files {
        let i = t.add_inode(Inode {
            attributes: FILE_ATTRIBUTE_NORMAL,
            security_id: -1,
            ..Inode::default()
        });
        t.add_dentry(many, format!("{n}").encode_utf16().collect(), i);
    }
    t
}

/// Makes the blob table claim that image 1's metadata decodes to `size`
/// bytes (the SHA-1 and the data stay as they are).
fn claim_metadata_size(wim: &Path, size: u64) {
    let (hash, table) = {
        let a = WimArchive::open(wim, &wimguard::wim::codecs::StandardCodecs).unwrap();
        (a.metadata[0].hash, a.header.blob_table)
    };
    let mut bytes = fs::read(wim).unwrap();
    let region = table.offset as usize..(table.offset + table.size_in_wim) as usize;
    let at = bytes[region.clone()]
        .windows(20)
        .position(|w| w == hash)
        .expect("metadata entry in the blob table")
        + region.start;
    // Entry: reshdr (size+flags 8, offset 8, original size 8), part 2, refcount 4, hash 20.
    let entry = at - 30;
    bytes[entry + 16..entry + 24].copy_from_slice(&size.to_le_bytes());
    fs::write(wim, bytes).unwrap();
}

#[test]
fn bombs_are_bounded_per_request_and_server_wide_and_the_server_keeps_working() {
    let env = Env::new();
    env.write_config(&format!(
        "appSecret: bombs-test-secret\nservice:\n  server:\n    metadataMemoryMib: {BUDGET_MIB}\n"
    ));
    let server = Server::start(&env.home);
    let src = env.path("src");
    small_tree(&src, "bombs");

    // Three backups whose archives become bombs.
    let deep = env.path("deep.wim");
    let wide = env.path("wide.wim");
    let claim = env.path("claim.wim");
    let u_deep = uuid_of(&backup(&env.home, &src, &deep, &[]));
    let u_wide = uuid_of(&backup(&env.home, &src, &wide, &[]));
    let u_claim = uuid_of(&backup(&env.home, &src, &claim, &[]));
    deep_bomb(&deep, &u_deep);
    // ~240k files: ~29 MB of metadata, ~145 MiB to parse: more than the budget.
    write_image(&wide, &u_wide, &wide_tree(240_000));
    write_image(&claim, &u_claim, &wide_tree(10));
    claim_metadata_size(&claim, 1 << 30);

    // Deep: browse and restore work; what passes PATH_MAX is left out with
    // a warning and counted.
    let b = cli_json(&env.home, &[os("snapshots"), os("browse"), os(&u_deep)]);
    assert!(b.to_string().contains(&"d".repeat(255)), "{b}");
    let target = env.path("deep-out");
    // Done, with a warning for what was left out: exit code 8.
    let out = cli_code(
        &env.home,
        &[os("restore"), os(&u_deep), os("--target"), target.as_os_str()],
        8,
    );
    assert!(
        out.combined().contains("cannot be restored safely"),
        "no summary of left-out entries:\n{}",
        out.describe()
    );
    let mut depth = 0;
    let mut p = target.clone();
    while p.join("d".repeat(255)).is_dir() {
        p = p.join("d".repeat(255));
        depth += 1;
    }
    assert!((10..=16).contains(&depth), "restored {depth} levels");

    // Wide: more than the whole budget: refused at once, naming the setting,
    // for browse, diff, verify and restore alike.
    let wide_target = env.path("wide-out");
    for args in [
        vec![os("snapshots"), os("browse"), os(&u_wide)],
        vec![os("snapshots"), os("diff"), os(&u_deep), os(&u_wide)],
        vec![os("snapshots"), os("verify"), os(&u_wide)],
        vec![os("restore"), os(&u_wide), os("--target"), wide_target.as_os_str()],
    ] {
        let out = cli_code(&env.home, &args, 1);
        assert!(
            out.stderr.contains("out of resources") && out.stderr.contains("metadataMemoryMib"),
            "{}",
            out.describe()
        );
    }
    assert!(!wide_target.exists(), "a refused restore created its target");
    // A claimed size is refused before a byte of it is decoded.
    let out = cli_code(&env.home, &[os("snapshots"), os("browse"), os(&u_claim)], 1);
    assert!(out.stderr.contains("metadataMemoryMib"), "{}", out.describe());

    // Several requests that fit one or two at a time all get served (the
    // root lists one entry: one page, one load per browse).
    let fits = env.path("fits.wim");
    let u_fits = uuid_of(&backup(&env.home, &src, &fits, &[]));
    // ~40k files: ~5 MB of metadata, ~25 MiB each: two fit at once.
    write_image(&fits, &u_fits, &wide_tree(40_000));
    let browsers: Vec<BgCli> = (0..6)
        .map(|_| BgCli::spawn(&env.home, &[os("snapshots"), os("browse"), os(&u_fits), os("--json")]))
        .collect();
    for b in browsers {
        let out = b.wait(std::time::Duration::from_secs(300));
        assert!(out.ok(), "{}", out.describe());
        assert!(out.stdout.contains("\"/many\""), "{}", out.stdout);
    }

    // The server is fine: a normal backup and restore round-trip.
    let fixture = common::build_tree2(7);
    let src2 = fixture.root.clone();
    let normal = env.path("normal.wim");
    let u = uuid_of(&backup(&env.home, &src2, &normal, &[]));
    let back = env.path("normal-out");
    cli_ok(&env.home, &[os("restore"), os(&u), os("--target"), back.as_os_str()]);
    common::assert_trees_equal(
        &src2,
        &back,
        &common::CompareOpts::full(&src2, &back),
        "after the bombs",
    );
    let rss = peak_rss_mib(server.pid);
    assert!(
        rss < 600,
        "the server peaked at {rss} MiB with a {BUDGET_MIB} MiB budget"
    );
    eprintln!("server peak RSS {rss} MiB");
    server.stop();
}
