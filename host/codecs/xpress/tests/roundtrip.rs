//! Round-trip properties of our own compressor and decompressor.

mod common;

use common::{generate, Kind, Rng, KINDS};
use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec};
use wimguard_xpress::{compress, decompress, Xpress, XpressCompressor};

/// Compresses with `comp`; if it reports success, checks the size promise
/// and that decoding returns the input. Returns whether it compressed.
fn check(comp: &mut dyn ChunkCompressor, dec: &mut dyn ChunkDecompressor, input: &[u8]) -> bool {
    let mut out = vec![0xAB; 3]; // stale content must be cleared
    if !comp.compress(input, &mut out) {
        return false;
    }
    assert!(
        out.len() < input.len(),
        "compressed {} -> {} not smaller",
        input.len(),
        out.len()
    );
    let mut back = vec![0x55u8; input.len()];
    dec.decompress(&out, &mut back)
        .unwrap_or_else(|e| panic!("decode failed for len {}: {e}", input.len()));
    assert!(back == input, "round trip mismatch for len {}", input.len());
    true
}

fn sizes() -> Vec<usize> {
    let mut s: Vec<usize> = (0..=300).collect();
    s.extend([
        511, 512, 513, 1000, 1023, 1024, 4095, 4096, 4097, 10_000, 32767, 32768, 32769, 65535, 65536,
    ]);
    s
}

#[test]
fn codec_metadata() {
    assert_eq!(Xpress.name(), "xpress");
    assert_eq!(Xpress.max_chunk_size(), 65536);
}

#[test]
fn round_trip_all_kinds_and_sizes() {
    let mut comp = Xpress.compressor(65536);
    let mut dec = Xpress.decompressor(65536);
    let mut rng = Rng::new(1);
    let mut compressed = 0;
    let mut total = 0;
    for &kind in KINDS {
        for len in sizes() {
            let input = generate(kind, len, &mut rng);
            let ok = check(comp.as_mut(), dec.as_mut(), &input);
            // Only sizable, non-random inputs are expected to shrink.
            if len >= 1000 && !matches!(kind, Kind::Random) {
                total += 1;
                compressed += usize::from(ok);
            }
        }
    }
    assert!(compressed == total, "only {compressed}/{total} inputs compressed");
}

#[test]
fn round_trip_many_random_inputs() {
    let mut comp = XpressCompressor::new(32768);
    let mut dec = Xpress.decompressor(32768);
    let mut rng = Rng::new(2);
    for _ in 0..600 {
        let kind = KINDS[rng.below(KINDS.len())];
        let len = match rng.below(4) {
            0 => rng.below(600),
            1 => rng.below(5000),
            2 => 32768,
            _ => rng.below(65537),
        };
        let input = generate(kind, len, &mut rng);
        check(&mut comp, dec.as_mut(), &input);
    }
}

#[test]
fn compressible_inputs_do_compress() {
    let mut rng = Rng::new(3);
    for kind in [Kind::Zeros, Kind::Pattern, Kind::Text, Kind::Skewed, Kind::FarRepeats] {
        let input = generate(kind, 32768, &mut rng);
        let mut out = Vec::new();
        assert!(compress(&input, &mut out), "{kind:?} did not compress");
        let mut back = vec![0; input.len()];
        decompress(&out, &mut back).unwrap();
        assert_eq!(back, input);
    }
    // A chunk of zeros is mostly one long match: tiny output.
    let mut out = Vec::new();
    assert!(compress(&[0u8; 65536], &mut out));
    assert!(out.len() < 300, "zeros compressed to {}", out.len());
}

#[test]
fn incompressible_and_tiny_inputs_are_refused() {
    let mut rng = Rng::new(4);
    let input = generate(Kind::Random, 32768, &mut rng);
    let mut out = Vec::new();
    assert!(!compress(&input, &mut out));
    for len in 0..=4 {
        assert!(!compress(&vec![0u8; len], &mut out));
    }
    // Chunks larger than the format allows are refused, not mangled.
    assert!(!compress(&vec![0u8; 65537], &mut out));
}

#[test]
fn reused_compressor_matches_fresh_one() {
    // No state may leak from one chunk to the next: the output of a long-
    // lived compressor must equal that of a fresh one, byte for byte.
    let mut rng = Rng::new(5);
    let mut reused = XpressCompressor::new(65536);
    for i in 0..200 {
        let kind = KINDS[i % KINDS.len()];
        let input = generate(kind, 1 + rng.below(65536), &mut rng);
        let mut a = Vec::new();
        let mut b = Vec::new();
        let ra = reused.compress_chunk(&input, &mut a);
        let rb = compress(&input, &mut b);
        assert_eq!(ra, rb);
        if ra {
            assert_eq!(a, b, "chunk {i} differs between reused and fresh compressor");
        }
    }
}

#[test]
fn long_length_escapes() {
    // Lengths around the 1-byte (18..=272) and 2-byte (≥ 273) escapes, with
    // every low offset-bit count.
    let mut rng = Rng::new(6);
    let mut comp = XpressCompressor::new(65536);
    let mut dec = Xpress.decompressor(65536);
    for period in [1usize, 2, 3, 17, 255, 1000, 20000, 40000] {
        for run in [15usize, 17, 18, 19, 272, 273, 274, 300, 5000, 65000] {
            let mut pat = vec![0u8; period];
            rng.fill(&mut pat);
            let mut v = pat.clone();
            while v.len() < period + run {
                v.push(v[v.len() - period]);
            }
            let mut noise = vec![0u8; 400];
            rng.fill(&mut noise);
            v.extend_from_slice(&noise);
            v.truncate(65536);
            check(&mut comp, dec.as_mut(), &v);
        }
    }
}

#[test]
fn wrong_output_size_is_an_error_or_harmless() {
    // Decoding into a buffer of the wrong size must not panic; a shorter
    // buffer gets a prefix of the data.
    let mut rng = Rng::new(7);
    let input = generate(Kind::Text, 20000, &mut rng);
    let mut out = Vec::new();
    assert!(compress(&input, &mut out));
    for size in [0usize, 1, 100, 19999, 20001, 40000, 65536] {
        let mut back = vec![0; size];
        if decompress(&out, &mut back).is_ok() && size <= input.len() {
            assert_eq!(back, input[..size]);
        }
    }
}
