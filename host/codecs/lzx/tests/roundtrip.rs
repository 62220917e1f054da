//! Round-trip property tests over generated inputs and all window sizes.

mod common;
use common::*;
use wimguard_lzx::{compress, decompress, Lzx, LzxCompressor, Params};
use wimguard_sdk::{ChunkCompressor, Codec};

fn check_free(data: &[u8]) -> bool {
    let mut out = Vec::new();
    let ok = compress(data, &mut out);
    if data.len() < 64 {
        assert!(!ok, "inputs under 64 bytes are stored raw");
    }
    if ok {
        assert!(out.len() < data.len());
        let mut back = vec![0u8; data.len()];
        decompress(&out, &mut back).expect("decompress own output");
        assert!(back == data, "round trip mismatch, len {}", data.len());
    }
    ok
}

#[test]
fn all_kinds_all_sizes() {
    let mut rng = Rng::new(1);
    let mut compressed = 0;
    for &len in &sizes() {
        for kind in 0..KINDS {
            let data = generate(kind, len, &mut rng);
            if check_free(&data) {
                compressed += 1;
            }
        }
    }
    assert!(compressed > 60, "too few chunks compressed: {compressed}");
}

#[test]
fn many_random_seeds() {
    let mut rng = Rng::new(7);
    for _ in 0..300 {
        let kind = rng.below(KINDS as u64) as usize;
        let len = rng.below(32_769) as usize;
        let data = generate(kind, len, &mut rng);
        check_free(&data);
    }
}

#[test]
fn compressible_data_shrinks() {
    let mut rng = Rng::new(3);
    for kind in [1usize, 2, 3, 4, 5, 8] {
        let data = generate(kind, 32_768, &mut rng);
        let mut out = Vec::new();
        assert!(compress(&data, &mut out), "kind {kind} did not compress");
    }
}

/// A chunk the bootstrap parse leaves nearly raw (gzip'd data, here kind 9)
/// is written from that parse alone, as with `passes: 0`; a compressible one
/// gets its cost-based pass.
#[test]
fn nearly_raw_chunks_skip_the_cost_based_pass() {
    let encode = |data: &[u8], params: Params| {
        let mut out = Vec::new();
        assert!(
            LzxCompressor::with_params(32_768, params).compress(data, &mut out),
            "stored raw"
        );
        out
    };
    let bootstrap_only = Params {
        passes: 0,
        ..Params::default()
    };
    let mut rng = Rng::new(5);
    let near_raw = generate(9, 32_768, &mut rng);
    let out = encode(&near_raw, Params::default());
    let ratio = out.len() as f64 / near_raw.len() as f64;
    assert!(
        (0.985..1.0).contains(&ratio),
        "the input is not what this test needs: {ratio}"
    );
    assert!(out == encode(&near_raw, bootstrap_only));

    let compressible = generate(5, 32_768, &mut rng);
    assert!(encode(&compressible, Params::default()) != encode(&compressible, bootstrap_only));
}

#[test]
fn larger_windows() {
    let mut rng = Rng::new(11);
    for &chunk in &[65_536usize, 131_072, 1 << 20, 1 << 21] {
        let codec = Lzx;
        let mut c = codec.compressor(chunk);
        let mut d = codec.decompressor(chunk);
        // A full chunk plus a short last chunk, as in a WIM resource.
        for &len in &[chunk, chunk / 3 + 17, 100] {
            for kind in [6usize, 3, 4] {
                let data = generate(kind, len, &mut rng);
                let mut out = Vec::new();
                if c.compress(&data, &mut out) {
                    let mut back = vec![0u8; len];
                    d.decompress(&out, &mut back).expect("decode");
                    assert!(back == data, "mismatch chunk {chunk} len {len} kind {kind}");
                }
            }
        }
        // The free functions derive the window from the length.
        let data = generate(6, chunk, &mut rng);
        check_free(&data);
    }
}

#[test]
fn instance_reuse_is_independent() {
    let codec = Lzx;
    let mut c = codec.compressor(32_768);
    let mut d = codec.decompressor(32_768);
    let mut rng = Rng::new(5);
    for i in 0..40 {
        let data = generate(i, 1000 + (i * 997) % 31_000, &mut rng);
        let mut out = Vec::new();
        if c.compress(&data, &mut out) {
            let mut back = vec![0u8; data.len()];
            d.decompress(&out, &mut back).unwrap();
            assert!(back == data);
            // The same bytes from a fresh compressor must be identical.
            let mut out2 = Vec::new();
            assert!(codec.compressor(32_768).compress(&data, &mut out2));
            assert!(out == out2);
        }
    }
}

#[test]
fn codec_metadata() {
    assert_eq!(Lzx.name(), "lzx");
    assert_eq!(Lzx.max_chunk_size(), 2 * 1024 * 1024);
}
