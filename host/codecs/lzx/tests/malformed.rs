//! Hostile input: truncated, bit-flipped and garbage chunks must end in an
//! error or some output, never a panic or a hang.

mod common;
use common::*;
use wimguard_lzx::{compress, decompress, LzxDecompressor};
use wimguard_sdk::ChunkDecompressor;

fn valid_chunks() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut rng = Rng::new(99);
    let mut v = Vec::new();
    for kind in 0..KINDS {
        for &len in &[200usize, 5000, 32_768] {
            let data = generate(kind, len, &mut rng);
            let mut out = Vec::new();
            if compress(&data, &mut out) {
                v.push((data, out));
            }
        }
    }
    v
}

#[test]
fn truncated_chunks() {
    for (data, comp) in valid_chunks() {
        let mut buf = vec![0u8; data.len()];
        for cut in (0..comp.len()).step_by(1 + comp.len() / 97) {
            let _ = decompress(&comp[..cut], &mut buf);
        }
    }
}

#[test]
fn bit_flipped_chunks() {
    let mut rng = Rng::new(5);
    let mut errors = 0;
    let mut total = 0;
    for (data, comp) in valid_chunks() {
        let mut d = LzxDecompressor::new(32_768);
        let mut buf = vec![0u8; data.len()];
        for _ in 0..300 {
            let mut bad = comp.clone();
            for _ in 0..1 + rng.below(4) {
                let bit = rng.below(bad.len() as u64 * 8) as usize;
                bad[bit / 8] ^= 1 << (bit % 8);
            }
            total += 1;
            if d.decompress(&bad, &mut buf).is_err() {
                errors += 1;
            }
        }
    }
    assert!(errors > 0 && errors <= total);
}

#[test]
fn garbage_input() {
    let mut rng = Rng::new(17);
    for &window in &[32_768usize, 65_536, 1 << 21] {
        let mut d = LzxDecompressor::new(window);
        for i in 0..2000 {
            let n = rng.below(if i % 10 == 0 { 5000 } else { 64 }) as usize;
            let garbage: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            let out_len = [1usize, 10, 11, 100, 32_768, window][i % 6];
            let mut buf = vec![0u8; out_len];
            let _ = d.decompress(&garbage, &mut buf);
        }
    }
}

#[test]
fn empty_and_oversized() {
    let mut buf = vec![0u8; 100];
    assert!(decompress(&[], &mut buf).is_err(), "zero bits give block type 0");
    let mut empty: [u8; 0] = [];
    assert!(decompress(&[1, 2, 3], &mut empty).is_ok(), "nothing to produce");
    let mut big = vec![0u8; (2 << 20) + 1];
    assert!(decompress(&[0; 16], &mut big).is_err());
    let mut d = LzxDecompressor::new(32_768);
    let mut too_long = vec![0u8; 40_000];
    assert!(
        d.decompress(&[0; 16], &mut too_long).is_err(),
        "chunk larger than window"
    );
}

/// Hand-built uncompressed (type 3) blocks, including odd sizes and padding.
#[test]
fn uncompressed_blocks() {
    let payload_a: Vec<u8> = (0..101u32).map(|i| (i * 7 % 251) as u8).collect();
    let payload_b: Vec<u8> = (0..50u32).map(|i| (i * 3 % 200) as u8).collect();
    let chunk = raw_blocks(&[&payload_a, &payload_b], false);
    let mut out = vec![0u8; 151];
    decompress(&chunk, &mut out).unwrap();
    assert_eq!(&out[..101], &payload_a[..]);
    assert_eq!(&out[101..], &payload_b[..]);
    // Truncated raw data is an error.
    assert!(decompress(&chunk[..chunk.len() - 3], &mut out).is_err());
}

/// Builds a chunk of uncompressed blocks for a 32 KiB window.
pub fn raw_blocks(payloads: &[&[u8]], _wide: bool) -> Vec<u8> {
    let mut v = Vec::new();
    for p in payloads {
        // 3 bits type 3, 1 bit "explicit size", 16 bits size = 20 bits, then
        // padding to the unit boundary: two units in total.
        let bits: u32 = (3 << 29) | ((p.len() as u32) << 12);
        let u0 = (bits >> 16) as u16;
        let u1 = bits as u16;
        v.extend_from_slice(&u0.to_le_bytes());
        v.extend_from_slice(&u1.to_le_bytes());
        for r in [1u32, 2, 3] {
            v.extend_from_slice(&r.to_le_bytes());
        }
        v.extend_from_slice(p);
        if p.len() % 2 == 1 {
            v.push(0);
        }
    }
    v
}
