//! Cross-checks against the real wimlib (libwim.so.15 from Debian's
//! `wimtools`), loaded at run time through its public C API.

mod common;
use common::*;
use libloading::{Library, Symbol};
use std::os::raw::{c_int, c_uint, c_void};
use wimguard_lzx::{LzxCompressor, LzxDecompressor};
use wimguard_sdk::{ChunkCompressor, ChunkDecompressor};

const LIB_PATHS: &[&str] = &["/usr/lib/x86_64-linux-gnu/libwim.so.15", "libwim.so.15"];
const CTYPE_LZX: c_int = 2;

type CreateComp = unsafe extern "C" fn(c_int, usize, c_uint, *mut *mut c_void) -> c_int;
type Compress = unsafe extern "C" fn(*const c_void, usize, *mut c_void, usize, *mut c_void) -> usize;
type FreeComp = unsafe extern "C" fn(*mut c_void);
type CreateDec = unsafe extern "C" fn(c_int, usize, *mut *mut c_void) -> c_int;
type Decompress = unsafe extern "C" fn(*const c_void, usize, *mut c_void, usize, *mut c_void) -> c_int;
type FreeDec = unsafe extern "C" fn(*mut c_void);

struct Wimlib {
    lib: Library,
}

fn wimlib() -> Wimlib {
    for p in LIB_PATHS {
        // SAFETY: loading a trusted system library with no init side effects.
        if let Ok(lib) = unsafe { Library::new(p) } {
            return Wimlib { lib };
        }
    }
    panic!(
        "libwim.so.15 not found: these interop tests need wimlib; \
         install it with `apt-get install wimtools` (Debian/Ubuntu)"
    );
}

impl Wimlib {
    /// wimlib's LZX compression of `data` (chunk size `max`, `level`), or
    /// None when wimlib would store it raw.
    fn compress(&self, data: &[u8], max: usize, level: u32) -> Option<Vec<u8>> {
        unsafe {
            let create: Symbol<CreateComp> = self.lib.get(b"wimlib_create_compressor").unwrap();
            let comp: Symbol<Compress> = self.lib.get(b"wimlib_compress").unwrap();
            let free: Symbol<FreeComp> = self.lib.get(b"wimlib_free_compressor").unwrap();
            let mut c: *mut c_void = std::ptr::null_mut();
            assert_eq!(create(CTYPE_LZX, max, level, &mut c), 0, "create compressor");
            let mut out = vec![0u8; data.len()];
            let n = comp(
                data.as_ptr() as *const c_void,
                data.len(),
                out.as_mut_ptr() as *mut c_void,
                out.len().saturating_sub(1),
                c,
            );
            free(c);
            if n == 0 {
                None
            } else {
                out.truncate(n);
                Some(out)
            }
        }
    }

    /// wimlib's LZX decompression; Err(code) when it rejects the data.
    fn decompress(&self, comp: &[u8], len: usize, max: usize) -> Result<Vec<u8>, c_int> {
        unsafe {
            let create: Symbol<CreateDec> = self.lib.get(b"wimlib_create_decompressor").unwrap();
            let dec: Symbol<Decompress> = self.lib.get(b"wimlib_decompress").unwrap();
            let free: Symbol<FreeDec> = self.lib.get(b"wimlib_free_decompressor").unwrap();
            let mut d: *mut c_void = std::ptr::null_mut();
            assert_eq!(create(CTYPE_LZX, max, &mut d), 0, "create decompressor");
            let mut out = vec![0u8; len];
            let r = dec(
                comp.as_ptr() as *const c_void,
                comp.len(),
                out.as_mut_ptr() as *mut c_void,
                len,
                d,
            );
            free(d);
            if r == 0 {
                Ok(out)
            } else {
                Err(r)
            }
        }
    }
}

fn inputs(chunk: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut v = Vec::new();
    let mut lens: Vec<usize> = vec![64, 65, 100, 1000, 5000, chunk - 1, chunk, chunk / 2 + 3];
    lens.retain(|&l| l <= chunk);
    for &len in &lens {
        for kind in 0..KINDS {
            v.push(generate(kind, len, &mut rng));
        }
    }
    v
}

#[test]
fn our_output_decodes_with_wimlib() {
    let w = wimlib();
    for &chunk in &[32_768usize, 65_536, 1 << 20] {
        let mut c = LzxCompressor::new(chunk);
        let mut decoded = 0;
        for data in inputs(chunk, chunk as u64) {
            let mut out = Vec::new();
            if c.compress(&data, &mut out) {
                let back = w
                    .decompress(&out, data.len(), chunk)
                    .unwrap_or_else(|e| panic!("wimlib rejected our chunk (len {}, window {chunk}): {e}", data.len()));
                assert!(
                    back == data,
                    "wimlib decoded different bytes (len {}, window {chunk})",
                    data.len()
                );
                decoded += 1;
            }
        }
        assert!(decoded > 10, "window {chunk}: only {decoded} chunks compressed");
    }
}

#[test]
fn wimlib_output_decodes_with_ours() {
    let w = wimlib();
    for &chunk in &[32_768usize, 65_536, 1 << 20] {
        let mut d = LzxDecompressor::new(chunk);
        for level in [20u32, 50, 100] {
            let mut decoded = 0;
            for data in inputs(chunk, 77 + chunk as u64) {
                if let Some(comp) = w.compress(&data, chunk, level) {
                    let mut back = vec![0u8; data.len()];
                    d.decompress(&comp, &mut back).unwrap_or_else(|e| {
                        panic!(
                            "we rejected wimlib's chunk (len {}, window {chunk}, level {level}): {e}",
                            data.len()
                        )
                    });
                    assert!(
                        back == data,
                        "mismatch (len {}, window {chunk}, level {level})",
                        data.len()
                    );
                    decoded += 1;
                }
            }
            assert!(decoded > 10, "window {chunk} level {level}: only {decoded} chunks");
        }
    }
}

/// Real files (binaries exercise E8 translation) in both directions.
#[test]
fn real_files_both_directions() {
    let w = wimlib();
    let mut corpus = Vec::new();
    for p in ["/usr/bin/bash", "/usr/bin/ls", "/usr/share/common-licenses/GPL-3"] {
        if let Ok(b) = std::fs::read(p) {
            corpus.extend_from_slice(&b[..b.len().min(400_000)]);
        }
    }
    assert!(!corpus.is_empty());
    let chunk = 32_768;
    let mut c = LzxCompressor::new(chunk);
    let mut d = LzxDecompressor::new(chunk);
    for piece in corpus.chunks(chunk) {
        let mut out = Vec::new();
        if c.compress(piece, &mut out) {
            assert!(w.decompress(&out, piece.len(), chunk).unwrap() == piece);
        }
        if let Some(comp) = w.compress(piece, chunk, 50) {
            let mut back = vec![0u8; piece.len()];
            d.decompress(&comp, &mut back).unwrap();
            assert!(back == piece);
        }
    }
}

/// Several blocks per chunk (code lengths delta-coded across blocks, repeat
/// offsets carried over) must decode with wimlib too.
#[test]
fn multi_block_chunks_decode_with_wimlib() {
    let w = wimlib();
    for &(chunk, block) in &[
        (32_768usize, 4096usize),
        (32_768, 32_768),
        (65_536, 10_000),
        (1 << 20, 65_536),
    ] {
        let params = wimguard_lzx::Params {
            block_size: block,
            ..Default::default()
        };
        let mut c = LzxCompressor::with_params(chunk, params);
        let mut rng = Rng::new(block as u64);
        for kind in 0..KINDS {
            let data = generate(kind, chunk, &mut rng);
            let mut out = Vec::new();
            if c.compress(&data, &mut out) {
                let back = w.decompress(&out, data.len(), chunk).expect("wimlib decode");
                assert!(back == data, "chunk {chunk} block {block} kind {kind}");
            }
        }
    }
}

/// Differential fuzzing: corrupted chunks must be judged and decoded the
/// same way as wimlib does whenever both accept them.
#[test]
fn corrupted_chunks_agree_with_wimlib() {
    let w = wimlib();
    let mut rng = Rng::new(31);
    let mut d = LzxDecompressor::new(32_768);
    let (mut both_ok, mut both_err, mut only_ours, mut only_theirs) = (0, 0, 0, 0);
    for kind in 0..KINDS {
        let data = generate(kind, 20_000, &mut rng);
        let Some(comp) = w.compress(&data, 32_768, 50) else {
            continue;
        };
        for _ in 0..200 {
            let mut bad = comp.clone();
            let bit = rng.below(bad.len() as u64 * 8) as usize;
            bad[bit / 8] ^= 1 << (bit % 8);
            let mut ours = vec![0u8; data.len()];
            let r_ours = d.decompress(&bad, &mut ours);
            let r_theirs = w.decompress(&bad, data.len(), 32_768);
            match (r_ours, r_theirs) {
                (Ok(()), Ok(theirs)) => {
                    assert!(
                        ours == theirs,
                        "both accepted a corrupted chunk but decoded it differently"
                    );
                    both_ok += 1;
                }
                (Err(_), Err(_)) => both_err += 1,
                (Ok(()), Err(_)) => only_ours += 1,
                (Err(e), Ok(_)) => {
                    eprintln!("only wimlib accepted: {e}");
                    only_theirs += 1
                }
            }
        }
    }
    eprintln!("both ok {both_ok}, both err {both_err}, only ours ok {only_ours}, only wimlib ok {only_theirs}");
    assert_eq!(only_ours + only_theirs, 0, "acceptance differs from wimlib");
}

/// Hand-built uncompressed blocks decode the same in wimlib.
#[test]
fn uncompressed_blocks_match_wimlib() {
    let w = wimlib();
    let a: Vec<u8> = (0..101u32).map(|i| (i * 7 % 251) as u8).collect();
    let b: Vec<u8> = (0..50u32).map(|i| (i * 3 % 200) as u8).collect();
    let mut chunk = Vec::new();
    for p in [&a, &b] {
        let bits: u32 = (3 << 29) | ((p.len() as u32) << 12);
        chunk.extend_from_slice(&((bits >> 16) as u16).to_le_bytes());
        chunk.extend_from_slice(&(bits as u16).to_le_bytes());
        for r in [1u32, 2, 3] {
            chunk.extend_from_slice(&r.to_le_bytes());
        }
        chunk.extend_from_slice(p);
        if p.len() % 2 == 1 {
            chunk.push(0);
        }
    }
    let mut ours = vec![0u8; 151];
    wimguard_lzx::decompress(&chunk, &mut ours).unwrap();
    let theirs = w.decompress(&chunk, 151, 32_768).expect("wimlib decode");
    assert!(ours == theirs);
}
