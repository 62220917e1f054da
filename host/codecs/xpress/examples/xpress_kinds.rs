//! Our XPRESS compressor against wimlib's (default level) by kind of chunk:
//! the chunks of a tree cut into 32 KiB pieces, grouped by how far ours
//! shrinks them (stored raw, over 80%, 50-80%, 30-50%, under 30%), with
//! each side's time and the size ratio per group. Shows where a capture's
//! time goes: already-compressed data, which our search skips through, or
//! text.
//!
//! Run: `XPRESS_DIR=/dev/shm/share cargo run --release -p wimguard-xpress
//! --example xpress_kinds [MiB]` (default 700 MiB, or the whole tree).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{file_corpus, Wimlib};
use std::time::Instant;
use wimguard_xpress::XpressCompressor;

const CHUNK: usize = 32768;
const KINDS: [&str; 5] = ["raw", ">80%", "50-80%", "30-50%", "<30%"];

#[derive(Default, Clone, Copy)]
struct Kind {
    chunks: usize,
    ours_s: f64,
    wimlib_s: f64,
    ours_bytes: usize,
    wimlib_bytes: usize,
}

fn main() {
    let Ok(dir) = std::env::var("XPRESS_DIR") else {
        eprintln!("set XPRESS_DIR to the tree to cut into chunks");
        std::process::exit(2);
    };
    let mib: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(700);
    let data = file_corpus(&[dir.as_str()], mib << 20);
    let w = Wimlib::load(CHUNK, 0);
    let mut ours = XpressCompressor::new(CHUNK);
    let mut kinds = [Kind::default(); 5];
    let mut out = Vec::new();
    // Each side runs over all chunks in turn, as one compressor thread of a
    // capture would: alternating per chunk would evict each one's tables.
    let mut ours_runs = Vec::with_capacity(data.len().div_ceil(CHUNK));
    for chunk in data.chunks(CHUNK) {
        let t = Instant::now();
        let packed = ours.compress_chunk(chunk, &mut out);
        let ours_s = t.elapsed().as_secs_f64();
        ours_runs.push((packed, if packed { out.len() } else { chunk.len() }, ours_s));
    }
    for (chunk, &(packed, ours_bytes, ours_s)) in data.chunks(CHUNK).zip(&ours_runs) {
        let t = Instant::now();
        let theirs = w.compress(chunk);
        let wimlib_s = t.elapsed().as_secs_f64();
        let ratio = ours_bytes as f64 / chunk.len() as f64;
        let k = match ratio {
            _ if !packed => 0,
            r if r > 0.8 => 1,
            r if r > 0.5 => 2,
            r if r > 0.3 => 3,
            _ => 4,
        };
        let kind = &mut kinds[k];
        kind.chunks += 1;
        kind.ours_s += ours_s;
        kind.wimlib_s += wimlib_s;
        kind.ours_bytes += ours_bytes;
        kind.wimlib_bytes += theirs.map_or(chunk.len(), |v| v.len());
    }
    println!(
        "{} MiB of {dir} in {CHUNK}-byte chunks; wimlib at its default level",
        data.len() >> 20
    );
    println!(
        "{:<8} {:>7} {:>9} {:>9} {:>6} {:>7}",
        "kind", "chunks", "ours s", "wimlib s", "time", "size"
    );
    for (name, k) in KINDS.iter().zip(&kinds) {
        println!(
            "{:<8} {:>7} {:>9.3} {:>9.3} {:>6.3} {:>7.4}",
            name,
            k.chunks,
            k.ours_s,
            k.wimlib_s,
            k.ours_s / k.wimlib_s.max(1e-9),
            k.ours_bytes as f64 / k.wimlib_bytes.max(1) as f64
        );
    }
    let (a, b) = kinds
        .iter()
        .fold((0.0, 0.0), |(a, b), k| (a + k.ours_s, b + k.wimlib_s));
    println!(
        "all      {:>7} {a:>9.3} {b:>9.3} {:>6.3}",
        data.len().div_ceil(CHUNK),
        a / b
    );
    println!("time and size are ours / wimlib's; time is the sum of single-chunk calls");
}
