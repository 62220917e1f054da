//! Helpers shared by the integration tests: a tiny PRNG, input generators,
//! and a binding to wimlib's public compression API loaded at run time.
#![allow(dead_code)]

use std::ffi::{c_int, c_uint, c_void};

/// xorshift64* — deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "archive",
    "image",
    "backup",
    "file",
    "stream",
    "chunk",
    "WIM",
    "compression",
    "Huffman",
    "match",
    "offset",
    "length",
    "resource",
    "header",
    "a",
    "in",
    "to",
    "is",
    "with",
    "for",
    "data",
    "wimguard",
    "directory",
    "metadata",
    "XML",
    "table",
];

/// Kinds of generated input.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Random,
    Zeros,
    Pattern,
    Text,
    /// Small-alphabet noise: compresses through the Huffman code only.
    Skewed,
    /// Runs of text, noise, zeros and copies of earlier data.
    Mixed,
    /// Long repeats at large offsets, stressing long-length escapes.
    FarRepeats,
}

pub const KINDS: &[Kind] = &[
    Kind::Random,
    Kind::Zeros,
    Kind::Pattern,
    Kind::Text,
    Kind::Skewed,
    Kind::Mixed,
    Kind::FarRepeats,
];

pub fn generate(kind: Kind, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    match kind {
        Kind::Random => {
            v.resize(len, 0);
            rng.fill(&mut v);
        }
        Kind::Zeros => v.resize(len, 0),
        Kind::Pattern => {
            let period = 1 + rng.below(300);
            let mut pat = vec![0u8; period];
            rng.fill(&mut pat);
            while v.len() < len {
                v.push(pat[v.len() % period]);
            }
        }
        Kind::Text => push_text(&mut v, len, rng),
        Kind::Skewed => {
            while v.len() < len {
                let r = rng.next_u64();
                v.push(if r & 3 != 0 {
                    b'a' + (r >> 8) as u8 % 4
                } else {
                    (r >> 16) as u8
                });
            }
        }
        Kind::Mixed => {
            while v.len() < len {
                let seg = (1 + rng.below(2000)).min(len - v.len());
                match rng.below(4) {
                    0 => push_text(&mut v, seg, rng),
                    1 => {
                        let s = v.len();
                        v.resize(s + seg, 0);
                        rng.fill(&mut v[s..]);
                    }
                    2 => v.resize(v.len() + seg, (rng.next_u64() & 1) as u8 * 0xFF),
                    _ => {
                        if v.is_empty() {
                            v.push(7);
                            continue;
                        }
                        let from = rng.below(v.len());
                        for k in 0..seg {
                            let b = v[from + k % (v.len() - from)];
                            v.push(b);
                        }
                    }
                }
            }
        }
        Kind::FarRepeats => {
            let block = 1 + rng.below(len.max(1) / 3 + 1);
            let mut first = vec![0u8; block];
            rng.fill(&mut first);
            while v.len() < len {
                v.extend_from_slice(&first);
                if rng.below(3) == 0 {
                    let l = v.len();
                    v[l - 1 - rng.below(block)] ^= 1;
                }
            }
            v.truncate(len);
        }
    }
    v
}

fn push_text(v: &mut Vec<u8>, len: usize, rng: &mut Rng) {
    let target = v.len() + len;
    while v.len() < target {
        let w = WORDS[rng.below(WORDS.len())];
        v.extend_from_slice(w.as_bytes());
        v.push(match rng.below(12) {
            0 => b'\n',
            1 => b',',
            2 => b'.',
            _ => b' ',
        });
        if rng.below(40) == 0 {
            v.extend_from_slice(format!("{}", rng.next_u64() % 100_000).as_bytes());
        }
    }
    v.truncate(target);
}

/// Concatenated regular files found under `dirs` (not following symlinks),
/// up to `limit` bytes, in a stable (sorted) order.
pub fn file_corpus(dirs: &[&str], limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = dirs.iter().rev().map(Into::into).collect();
    while let Some(p) = stack.pop() {
        if out.len() >= limit {
            break;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() {
            let Ok(rd) = std::fs::read_dir(&p) else { continue };
            let mut entries: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            entries.sort();
            stack.extend(entries.into_iter().rev());
        } else if md.is_file() {
            if let Ok(data) = std::fs::read(&p) {
                out.extend_from_slice(&data);
            }
        }
    }
    out.truncate(limit);
    out
}

// ---------------------------------------------------------------------------
// wimlib binding
// ---------------------------------------------------------------------------

pub const LIBWIM_PATH: &str = "/usr/lib/x86_64-linux-gnu/libwim.so.15";
const WIMLIB_COMPRESSION_TYPE_XPRESS: c_int = 1;

type CreateCompressor = unsafe extern "C" fn(c_int, usize, c_uint, *mut *mut c_void) -> c_int;
type Compress = unsafe extern "C" fn(*const c_void, usize, *mut c_void, usize, *mut c_void) -> usize;
type FreeHandle = unsafe extern "C" fn(*mut c_void);
type CreateDecompressor = unsafe extern "C" fn(c_int, usize, *mut *mut c_void) -> c_int;
type Decompress = unsafe extern "C" fn(*const c_void, usize, *mut c_void, usize, *mut c_void) -> c_int;

/// wimlib's XPRESS compressor and decompressor for one maximum chunk size.
pub struct Wimlib {
    comp: *mut c_void,
    decomp: *mut c_void,
    compress: Compress,
    decompress: Decompress,
    free_c: FreeHandle,
    free_d: FreeHandle,
    _lib: libloading::Library,
}

impl Wimlib {
    /// Loads libwim; panics with an installation hint when it is missing,
    /// because the interop tests must not pass vacuously.
    pub fn load(max_chunk: usize, level: u32) -> Wimlib {
        let lib = unsafe { libloading::Library::new(LIBWIM_PATH) }.unwrap_or_else(|e| {
            panic!(
                "cannot load {LIBWIM_PATH} ({e}); the XPRESS interop tests need wimlib: \
                 install it with `apt-get install wimtools` (Debian/Ubuntu)"
            )
        });
        unsafe {
            let create_c: CreateCompressor = *lib.get(b"wimlib_create_compressor\0").unwrap();
            let compress: Compress = *lib.get(b"wimlib_compress\0").unwrap();
            let free_c: FreeHandle = *lib.get(b"wimlib_free_compressor\0").unwrap();
            let create_d: CreateDecompressor = *lib.get(b"wimlib_create_decompressor\0").unwrap();
            let decompress: Decompress = *lib.get(b"wimlib_decompress\0").unwrap();
            let free_d: FreeHandle = *lib.get(b"wimlib_free_decompressor\0").unwrap();
            let mut comp = std::ptr::null_mut();
            let rc = create_c(WIMLIB_COMPRESSION_TYPE_XPRESS, max_chunk, level, &mut comp);
            assert_eq!(rc, 0, "wimlib_create_compressor failed: {rc}");
            let mut decomp = std::ptr::null_mut();
            let rc = create_d(WIMLIB_COMPRESSION_TYPE_XPRESS, max_chunk, &mut decomp);
            assert_eq!(rc, 0, "wimlib_create_decompressor failed: {rc}");
            Wimlib {
                comp,
                decomp,
                compress,
                decompress,
                free_c,
                free_d,
                _lib: lib,
            }
        }
    }

    /// Compressed chunk, or `None` when wimlib could not make it strictly
    /// smaller than the input.
    pub fn compress(&self, input: &[u8]) -> Option<Vec<u8>> {
        if input.len() < 2 {
            return None;
        }
        let mut out = vec![0u8; input.len() - 1];
        let n = unsafe {
            (self.compress)(
                input.as_ptr().cast(),
                input.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                self.comp,
            )
        };
        if n == 0 {
            return None;
        }
        out.truncate(n);
        Some(out)
    }

    /// Decodes into `out` (exactly `out.len()` bytes); true on success.
    pub fn decompress(&self, input: &[u8], out: &mut [u8]) -> bool {
        let rc = unsafe {
            (self.decompress)(
                input.as_ptr().cast(),
                input.len(),
                out.as_mut_ptr().cast(),
                out.len(),
                self.decomp,
            )
        };
        rc == 0
    }
}

impl Drop for Wimlib {
    fn drop(&mut self) {
        unsafe {
            (self.free_c)(self.comp);
            (self.free_d)(self.decomp);
        }
    }
}
