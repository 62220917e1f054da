//! Compares our XPRESS compressor with wimlib's (default level) on a few
//! corpora of system files cut into chunks: compressed size and speed.
//!
//! Run: `cargo run --release -p wimguard-xpress --example xpress_ratio [MiB per corpus] [chunk size]
//! [depth nice good]`
//!
//! `XPRESS_DIR=PATH` replaces the corpora with the files under PATH (a dumped
//! metadata resource, say); `WIMLIB_LEVEL=N` compares with another wimlib
//! level (below 30 greedy, then lazy, from 60 near-optimal).
//!
//! `XPRESS_BENCH=ours|wimlib` compresses every corpus with one side only
//! (best of 3) and prints one line, `<side>: <in> -> <out> bytes, <speed>
//! MB/s`, which `bench/ab.sh` reads to race two builds.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{file_corpus, Wimlib};
use std::time::{Duration, Instant};
use wimguard_xpress::{XpressCompressor, XpressDecompressor};

struct Totals {
    stored: usize,
    comp_time: Duration,
    dec_time: Duration,
}

/// Best of a few runs, to damp noise from other processes on the machine.
fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (T, Duration) {
    let mut best = Duration::MAX;
    let mut result = None;
    for _ in 0..runs {
        let t = Instant::now();
        let r = f();
        best = best.min(t.elapsed());
        result = Some(r);
    }
    (result.unwrap(), best)
}

fn run_ours(chunks: &[&[u8]], effort: Option<(u32, usize, usize)>) -> (Totals, Vec<Option<Vec<u8>>>) {
    let mut comp = match effort {
        Some((d, n, g)) => XpressCompressor::with_effort(chunks[0].len(), d, n, g),
        None => XpressCompressor::new(chunks[0].len()),
    };
    let (packed, comp_time) = timed(3, || {
        chunks
            .iter()
            .map(|c| {
                let mut out = Vec::new();
                comp.compress_chunk(c, &mut out).then_some(out)
            })
            .collect::<Vec<_>>()
    });
    let mut dec = XpressDecompressor::new();
    let mut buf = vec![0u8; chunks[0].len()];
    let ((), dec_time) = timed(5, || {
        for (c, p) in chunks.iter().zip(&packed) {
            if let Some(p) = p {
                dec.decompress_chunk(p, &mut buf[..c.len()]).unwrap();
            }
        }
    });
    let stored = chunks
        .iter()
        .zip(&packed)
        .map(|(c, p)| p.as_ref().map_or(c.len(), Vec::len))
        .sum();
    (
        Totals {
            stored,
            comp_time,
            dec_time,
        },
        packed,
    )
}

fn run_wimlib(w: &Wimlib, chunks: &[&[u8]]) -> (Totals, Vec<Option<Vec<u8>>>) {
    let (packed, comp_time) = timed(3, || chunks.iter().map(|c| w.compress(c)).collect::<Vec<_>>());
    let mut buf = vec![0u8; chunks[0].len()];
    let ((), dec_time) = timed(5, || {
        for (c, p) in chunks.iter().zip(&packed) {
            if let Some(p) = p {
                assert!(w.decompress(p, &mut buf[..c.len()]));
            }
        }
    });
    let stored = chunks
        .iter()
        .zip(&packed)
        .map(|(c, p)| p.as_ref().map_or(c.len(), Vec::len))
        .sum();
    (
        Totals {
            stored,
            comp_time,
            dec_time,
        },
        packed,
    )
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mib: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let chunk: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32768);
    // Optional search effort override (depth, nice length, good length).
    let num = |i: usize| args.get(i).and_then(|s| s.parse::<usize>().ok());
    let effort = match (num(3), num(4), num(5)) {
        (Some(d), Some(n), Some(g)) => Some((d as u32, n, g)),
        _ => None,
    };
    let corpora: &[(&str, &[&str])] = &[
        ("C headers", &["/usr/include"]),
        ("perl modules", &["/usr/share/perl", "/usr/share/perl5"]),
        ("/usr/share/doc", &["/usr/share/doc"]),
        ("/usr/bin", &["/usr/bin"]),
        ("shared libs", &["/usr/lib/x86_64-linux-gnu"]),
    ];
    let own_dir = std::env::var("XPRESS_DIR").ok();
    let own_dirs: [&str; 1] = [own_dir.as_deref().unwrap_or_default()];
    let own_corpus = [(own_dirs[0], &own_dirs[..])];
    let corpora: &[(&str, &[&str])] = if own_dir.is_some() { &own_corpus } else { corpora };
    let level: u32 = std::env::var("WIMLIB_LEVEL")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let w = Wimlib::load(chunk, level);
    if let Ok(side) = std::env::var("XPRESS_BENCH") {
        let ours = match side.as_str() {
            "ours" => true,
            "wimlib" => false,
            _ => panic!("XPRESS_BENCH must be ours or wimlib, not {side:?}"),
        };
        let mut data = Vec::new();
        for (_, dirs) in corpora {
            data.extend(file_corpus(dirs, mib << 20));
        }
        let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
        let (t, _) = if ours {
            run_ours(&chunks, effort)
        } else {
            run_wimlib(&w, &chunks)
        };
        println!(
            "{side}: {} -> {} bytes, {:.1} MB/s",
            data.len(),
            t.stored,
            data.len() as f64 / 1e6 / t.comp_time.as_secs_f64()
        );
        return;
    }
    let level_name = if level == 0 {
        "default (lazy)".to_string()
    } else {
        level.to_string()
    };
    println!("chunk size {chunk}, up to {mib} MiB per corpus; wimlib level {level_name}");
    println!(
        "{:<15} {:>8} {:>10} {:>10} {:>7} | {:>8} {:>8} | {:>8} {:>8} {:>8}",
        "corpus", "in MiB", "ours", "wimlib", "size", "c ours", "c wim", "d ours", "d wim", "d ours*"
    );
    let (mut sum_in, mut sum_a, mut sum_b) = (0usize, 0usize, 0usize);
    for (name, dirs) in corpora {
        let data = file_corpus(dirs, mib << 20);
        if data.len() < chunk {
            println!("{name:<15} (skipped: too little data)");
            continue;
        }
        let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
        let (a, _) = run_ours(&chunks, effort);
        let (b, theirs) = run_wimlib(&w, &chunks);
        // Our decoder on wimlib's chunks (the reading side of interop).
        let mut dec = XpressDecompressor::new();
        let mut buf = vec![0u8; chunk];
        let ((), d_cross) = timed(5, || {
            for (c, p) in chunks.iter().zip(&theirs) {
                if let Some(p) = p {
                    dec.decompress_chunk(p, &mut buf[..c.len()]).unwrap();
                    assert!(&buf[..c.len()] == *c);
                }
            }
        });
        let n = data.len();
        println!(
            "{:<15} {:>8.1} {:>10} {:>10} {:>7.4} | {:>8.1} {:>8.1} | {:>8.0} {:>8.0} {:>8.0}",
            name,
            n as f64 / (1 << 20) as f64,
            a.stored,
            b.stored,
            a.stored as f64 / b.stored as f64,
            mbps(n, a.comp_time),
            mbps(n, b.comp_time),
            mbps(n, a.dec_time),
            mbps(n, b.dec_time),
            mbps(n, d_cross),
        );
        sum_in += n;
        sum_a += a.stored;
        sum_b += b.stored;
    }
    println!(
        "total: in {sum_in}, ours {sum_a} ({:.2}%), wimlib {sum_b} ({:.2}%), ours/wimlib = {:.4}",
        100.0 * sum_a as f64 / sum_in as f64,
        100.0 * sum_b as f64 / sum_in as f64,
        sum_a as f64 / sum_b as f64
    );
    println!("size = ours/wimlib stored bytes (raw chunks count in full); c/d = MiB/s of input;");
    println!("d ours* = our decoder on wimlib's chunks");
}
