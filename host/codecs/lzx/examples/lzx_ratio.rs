//! Compares our LZX compressor with wimlib's default level on real files.
//!
//! Usage: cargo run --release -p wimguard-lzx --example lzx_ratio [CHUNK_SIZE [MAX_MB]]
//!
//! `WIMLIB_LEVEL=N` compares with another wimlib level than its default
//! (50: two parse passes; 44 and below make one). Other knobs are read
//! from the environment too (`params_from_env`, `LZX_BENCH`).
//!
//! Builds three corpora (docs, /usr/share text, /usr/bin binaries) by
//! concatenating files, cuts them into chunks and reports compressed sizes
//! (raw-stored chunks count at full size) and speeds of both libraries.
//!
//! With `LZX_BENCH` (any mode), `LZX_PER_FILE=1` cuts each file on its own,
//! as an archive does (a small file is one small chunk), instead of the
//! concatenation: the two differ on trees of small files. On a copy of
//! /usr/share (files under 4 MiB, 443 MB) we ran at 1.15x wimlib's speed
//! concatenated and 1.18x per file; on /usr/share/man's gzip'd pages at
//! 0.83x concatenated and 1.38x per file.

use libloading::{Library, Symbol};
use std::os::raw::{c_int, c_uint, c_void};
use std::path::Path;
use std::time::Instant;
use wimguard_lzx::{LzxCompressor, LzxDecompressor};
use wimguard_sdk::{ChunkCompressor, ChunkDecompressor};

type CreateComp = unsafe extern "C" fn(c_int, usize, c_uint, *mut *mut c_void) -> c_int;
type Compress = unsafe extern "C" fn(*const c_void, usize, *mut c_void, usize, *mut c_void) -> usize;
type CreateDec = unsafe extern "C" fn(c_int, usize, *mut *mut c_void) -> c_int;
type Decompress = unsafe extern "C" fn(*const c_void, usize, *mut c_void, usize, *mut c_void) -> c_int;

fn collect(dir: &Path, limit: usize, out: &mut Vec<u8>, depth: u32) {
    collect_files(dir, limit, out, &mut Vec::new(), depth)
}

/// As `collect`, also noting where each file ends in `out`.
fn collect_files(dir: &Path, limit: usize, out: &mut Vec<u8>, ends: &mut Vec<usize>, depth: u32) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if out.len() >= limit {
            return;
        }
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.is_dir() && depth < 6 {
            collect_files(&p, limit, out, ends, depth + 1);
        } else if md.is_file() && md.len() < 4 << 20 {
            if let Ok(b) = std::fs::read(&p) {
                out.extend_from_slice(&b[..b.len().min(limit - out.len())]);
                ends.push(out.len());
            }
        }
    }
}

/// Tuning overrides: LZX_NICE, LZX_DEPTH, LZX_SKIP_DEPTH, LZX_PASSES, LZX_BLOCK.
fn params_from_env(chunk: usize) -> wimguard_lzx::Params {
    let mut p = wimguard_lzx::Params::for_chunk_size(chunk);
    let get = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    if let Some(v) = get("LZX_NICE") {
        p.nice_len = v;
    }
    if let Some(v) = get("LZX_DEPTH") {
        p.max_depth = v as u32;
    }
    if let Some(v) = get("LZX_SKIP_DEPTH") {
        p.skip_depth = v as u32;
    }
    if let Some(v) = get("LZX_PASSES") {
        p.passes = v as u32;
    }
    if let Some(v) = get("LZX_BLOCK") {
        p.block_size = v;
    }
    p
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let chunk: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32_768);
    let max_mb: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(8);
    let lib = unsafe { Library::new("/usr/lib/x86_64-linux-gnu/libwim.so.15") }
        .expect("libwim.so.15 missing: apt-get install wimtools");
    let (create, comp, create_d, decomp): (
        Symbol<CreateComp>,
        Symbol<Compress>,
        Symbol<CreateDec>,
        Symbol<Decompress>,
    ) = unsafe {
        (
            lib.get(b"wimlib_create_compressor").unwrap(),
            lib.get(b"wimlib_compress").unwrap(),
            lib.get(b"wimlib_create_decompressor").unwrap(),
            lib.get(b"wimlib_decompress").unwrap(),
        )
    };
    // WIMLIB_LEVEL=N: another wimlib level (44 and below: one parse pass);
    // 0 is its default.
    let level: c_uint = std::env::var("WIMLIB_LEVEL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut wc: *mut c_void = std::ptr::null_mut();
    let mut wd: *mut c_void = std::ptr::null_mut();
    unsafe {
        assert_eq!(create(2, chunk, level, &mut wc), 0);
        assert_eq!(create_d(2, chunk, &mut wd), 0);
    }
    // wimlib's compressed chunk, or `None` where it would store it raw.
    let wimlib_compress = |piece: &[u8]| -> Option<Vec<u8>> {
        let mut out = vec![0u8; piece.len()];
        let n = unsafe {
            comp(
                piece.as_ptr() as _,
                piece.len(),
                out.as_mut_ptr() as _,
                piece.len() - 1,
                wc,
            )
        };
        (n > 0).then(|| {
            out.truncate(n);
            out
        })
    };

    // LZX_BENCH=ours|wimlib|none: only compress with one side (for profiling);
    // LZX_BENCH=dec: decoder speed of both sides on wimlib's streams;
    // LZX_BENCH=diff: the size difference chunk by chunk.
    if let Ok(which) = std::env::var("LZX_BENCH") {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        // LZX_CORPUS=docs|share|bin limits the run to one corpus.
        let only = std::env::var("LZX_CORPUS").ok();
        // LZX_DIR=PATH replaces the three corpora with the files under PATH.
        let own = std::env::var("LZX_DIR").ok();
        let dirs: Vec<(&str, &str)> = match own.as_deref() {
            Some(d) => vec![(d, "dir")],
            None => vec![("/usr/share/doc", "docs"), ("/usr/share", "share"), ("/usr/bin", "bin")],
        };
        for (dir, name) in dirs {
            if only.as_deref().is_some_and(|o| o != name) {
                continue;
            }
            let (mut d, mut e) = (Vec::new(), Vec::new());
            collect_files(Path::new(dir), max_mb << 20, &mut d, &mut e, 0);
            ends.extend(e.iter().map(|x| x + data.len()));
            data.extend_from_slice(&d);
        }
        // LZX_PER_FILE=1: chunks as an archive cuts them, each file on its
        // own (a small file is a small chunk), not the corpus as one stream.
        let per_file = std::env::var("LZX_PER_FILE").is_ok_and(|v| v == "1");
        let pieces: Vec<&[u8]> = if per_file {
            let mut start = 0;
            let mut v = Vec::new();
            for &end in &ends {
                v.extend(data[start..end].chunks(chunk));
                start = end;
            }
            v
        } else {
            data.chunks(chunk).collect()
        };
        if which == "dec" {
            // Decoder speed: wimlib compresses once, each side decodes the
            // same streams LZX_REPS (default 5) times.
            let reps: usize = std::env::var("LZX_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
            let mut streams = Vec::new();
            for &piece in &pieces {
                if let Some(out) = wimlib_compress(piece) {
                    streams.push((out, piece));
                }
            }
            let bytes: usize = streams.iter().map(|s| s.1.len()).sum::<usize>() * reps;
            let mut buf = vec![0u8; chunk];
            let mut d = LzxDecompressor::new(chunk);
            let t = Instant::now();
            for _ in 0..reps {
                for (cmp, piece) in &streams {
                    d.decompress(cmp, &mut buf[..piece.len()]).expect("decode");
                }
            }
            let t_ours = t.elapsed().as_secs_f64();
            for (cmp, piece) in &streams {
                d.decompress(cmp, &mut buf[..piece.len()]).expect("decode");
                assert!(&buf[..piece.len()] == *piece);
            }
            let t = Instant::now();
            for _ in 0..reps {
                for (cmp, piece) in &streams {
                    let r = unsafe { decomp(cmp.as_ptr() as _, cmp.len(), buf.as_mut_ptr() as _, piece.len(), wd) };
                    assert_eq!(r, 0);
                }
            }
            let t_wim = t.elapsed().as_secs_f64();
            println!(
                "decode {} bytes: ours {:.1} MB/s, wimlib {:.1} MB/s",
                bytes,
                bytes as f64 / 1e6 / t_ours,
                bytes as f64 / 1e6 / t_wim
            );
            return;
        }
        if which == "diff" {
            // Where the size gap is: each chunk compressed by both sides,
            // the total difference, and the chunks that differ the most.
            // LZX_DUMP=K writes chunk K to /tmp/lzx_chunk.bin to study it.
            let mut c = LzxCompressor::with_params(chunk, params_from_env(chunk));
            let mut rows = Vec::new();
            for (k, &piece) in pieces.iter().enumerate() {
                let mut out = Vec::new();
                let ours = if c.compress(piece, &mut out) {
                    out.len()
                } else {
                    piece.len()
                };
                let wim = wimlib_compress(piece).map_or(piece.len(), |c| c.len());
                rows.push((ours as i64 - wim as i64, k, ours, wim));
            }
            let sum = |keep: fn(i64) -> bool| rows.iter().map(|r| r.0).filter(|&d| keep(d)).sum::<i64>();
            println!(
                "{} chunks: ours - wimlib = {} bytes ({} in chunks where ours is larger, {} where smaller)",
                rows.len(),
                sum(|_| true),
                sum(|d| d > 0),
                sum(|d| d < 0)
            );
            rows.sort();
            let extremes = rows.iter().rev().take(10).chain(rows.iter().take(5));
            for &(diff, k, ours, wim) in extremes {
                println!("chunk {k:5}: ours {ours:6} wimlib {wim:6} ({diff:+})");
            }
            if let Some(k) = std::env::var("LZX_DUMP").ok().and_then(|v| v.parse::<usize>().ok()) {
                if let Some(piece) = pieces.get(k) {
                    std::fs::write("/tmp/lzx_chunk.bin", piece).expect("write /tmp/lzx_chunk.bin");
                }
            }
            return;
        }
        let mut c = LzxCompressor::with_params(chunk, params_from_env(chunk));
        let mut total = 0usize;
        // Chunks stored raw, and their bytes.
        let (mut raw, mut raw_bytes) = (0usize, 0usize);
        let t = Instant::now();
        for &piece in &pieces {
            let mut out = vec![0u8; piece.len()];
            if which == "none" {
                continue;
            }
            let size = if which == "ours" {
                if c.compress(piece, &mut out) {
                    out.len()
                } else {
                    piece.len()
                }
            } else {
                wimlib_compress(piece).map_or(piece.len(), |c| c.len())
            };
            if size == piece.len() {
                raw += 1;
                raw_bytes += size;
            }
            total += size;
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{which}: {} -> {total} bytes, {:.1} MB/s; {raw} of {} chunks ({raw_bytes} bytes) stored raw",
            data.len(),
            data.len() as f64 / 1e6 / secs,
            pieces.len()
        );
        return;
    }

    let corpora = [("/usr/share/doc", "docs"), ("/usr/share", "share"), ("/usr/bin", "bin")];
    let (mut tot_in, mut tot_ours, mut tot_wim) = (0usize, 0usize, 0usize);
    let level_name = if level == 0 {
        "default".to_string()
    } else {
        level.to_string()
    };
    println!("chunk {chunk} bytes; wimlib level {level_name}; sizes in bytes; speeds in MB/s of input");
    println!(
        "{:<6} {:>10} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "corpus", "input", "ours", "wimlib", "ours/wl", "c-ours", "c-wimlib", "d-ours", "d-wimlib"
    );
    for (dir, name) in corpora {
        let mut data = Vec::new();
        collect(Path::new(dir), max_mb << 20, &mut data, 0);
        let mut c = LzxCompressor::with_params(chunk, params_from_env(chunk));
        let mut d = LzxDecompressor::new(chunk);
        let mut ours: Vec<Option<Vec<u8>>> = Vec::new();
        let t = Instant::now();
        for piece in data.chunks(chunk) {
            let mut out = Vec::new();
            ours.push(if c.compress(piece, &mut out) { Some(out) } else { None });
        }
        let t_ours = t.elapsed().as_secs_f64();
        let mut wim: Vec<Option<Vec<u8>>> = Vec::new();
        let t = Instant::now();
        for piece in data.chunks(chunk) {
            wim.push(wimlib_compress(piece));
        }
        let t_wim = t.elapsed().as_secs_f64();
        let size = |v: &[Option<Vec<u8>>]| -> usize {
            v.iter()
                .zip(data.chunks(chunk))
                .map(|(c, p)| c.as_ref().map_or(p.len(), |c| c.len()))
                .sum()
        };
        let (s_ours, s_wim) = (size(&ours), size(&wim));

        // Decompression: each library decodes its own output, checked.
        let mut buf = vec![0u8; chunk];
        let t = Instant::now();
        for (cmp, piece) in ours.iter().zip(data.chunks(chunk)) {
            if let Some(cmp) = cmp {
                d.decompress(cmp, &mut buf[..piece.len()]).expect("own output");
                assert!(&buf[..piece.len()] == piece);
            }
        }
        let td_ours = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for (cmp, piece) in wim.iter().zip(data.chunks(chunk)) {
            if let Some(cmp) = cmp {
                let r = unsafe { decomp(cmp.as_ptr() as _, cmp.len(), buf.as_mut_ptr() as _, piece.len(), wd) };
                assert_eq!(r, 0);
            }
        }
        let td_wim = t.elapsed().as_secs_f64();
        let mb = data.len() as f64 / 1e6;
        println!(
            "{:<6} {:>10} {:>10} {:>10} {:>8.4} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            name,
            data.len(),
            s_ours,
            s_wim,
            s_ours as f64 / s_wim as f64,
            mb / t_ours,
            mb / t_wim,
            mb / td_ours,
            mb / td_wim
        );
        tot_in += data.len();
        tot_ours += s_ours;
        tot_wim += s_wim;
    }
    println!(
        "total  {:>10} {:>10} {:>10} {:>8.4}",
        tot_in,
        tot_ours,
        tot_wim,
        tot_ours as f64 / tot_wim as f64
    );
}
