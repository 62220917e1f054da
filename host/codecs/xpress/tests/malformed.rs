//! Hostile input: the decoder must return `Ok` or `Err`, never panic or
//! hang. Where wimlib is available (it must be: see wimlib_interop.rs) it is
//! also used as an oracle: whenever both accept a chunk, outputs must agree.

mod common;

use common::{generate, Kind, Rng, Wimlib, KINDS};
use wimguard_xpress::{compress, decompress};

/// Decodes with ours (and wimlib), comparing when both succeed.
fn probe(w: &Wimlib, input: &[u8], out_len: usize) -> bool {
    let mut a = vec![0u8; out_len];
    let ours = decompress(input, &mut a);
    if let Err(e) = &ours {
        assert!(!e.reason.is_empty() && e.reason.len() < 100);
    }
    let mut b = vec![0u8; out_len];
    let theirs = w.decompress(input, &mut b);
    if ours.is_ok() {
        assert!(
            theirs,
            "we accepted a chunk wimlib rejects (len {}, out {out_len})",
            input.len()
        );
        assert!(a == b, "we and wimlib decode a chunk differently");
    }
    ours.is_ok()
}

fn valid_chunks(rng: &mut Rng) -> Vec<(Vec<u8>, usize)> {
    let mut v = Vec::new();
    for &kind in KINDS {
        for len in [300usize, 2000, 32768] {
            let input = generate(kind, len, rng);
            let mut out = Vec::new();
            if compress(&input, &mut out) {
                v.push((out, len));
            }
        }
    }
    v
}

#[test]
fn truncated_chunks() {
    let w = Wimlib::load(65536, 0);
    let mut rng = Rng::new(21);
    for (chunk, len) in valid_chunks(&mut rng) {
        let step = (chunk.len() / 300).max(1);
        for cut in (0..chunk.len()).step_by(step) {
            probe(&w, &chunk[..cut], len);
        }
    }
}

#[test]
fn bit_flipped_chunks() {
    let w = Wimlib::load(65536, 0);
    let mut rng = Rng::new(22);
    let mut accepted = 0;
    let mut tried = 0;
    for (chunk, len) in valid_chunks(&mut rng) {
        for _ in 0..300 {
            let mut c = chunk.clone();
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(c.len());
                c[i] ^= 1 << rng.below(8);
            }
            tried += 1;
            if probe(&w, &c, len) {
                accepted += 1;
            }
        }
    }
    println!("bit flips: {accepted}/{tried} still decodable");
}

#[test]
fn all_ones_and_all_zeros() {
    let w = Wimlib::load(65536, 0);
    for size in [0usize, 1, 255, 256, 257, 300, 4096, 70000] {
        for out_len in [0usize, 1, 100, 32768, 65536] {
            // Every length 15: oversubscribed.
            assert!(decompress(&vec![0xFF; size], &mut vec![0; out_len]).is_err() || out_len == 0 && size >= 256);
            probe(&w, &vec![0xFF; size], out_len);
            // Every length 0: an empty code cannot produce data.
            let ok = decompress(&vec![0; size], &mut vec![0; out_len]).is_ok();
            assert_eq!(ok, out_len == 0 && size >= 256, "size {size} out {out_len}");
        }
    }
}

#[test]
fn random_garbage() {
    let w = Wimlib::load(65536, 0);
    let mut rng = Rng::new(23);
    for i in 0..3000 {
        let size = rng.below(3000);
        let mut c = vec![0u8; size];
        rng.fill(&mut c);
        if i % 2 == 0 && size >= 256 {
            // Plausible code lengths make the bit stream get decoded at all:
            // a complete code where literals and matches each have length 9.
            for b in &mut c[..256] {
                *b = 0x99;
            }
        }
        probe(&w, &c, rng.below(65537));
    }
}

/// Builds a chunk whose code gives 8-bit codewords to literals 0..128 and
/// match symbols 256..384 (a complete code), followed by `bits`.
fn crafted(bits: &[(u32, u32)], bytes_after: &[u8]) -> Vec<u8> {
    let mut c = vec![0u8; 256];
    for b in c.iter_mut().take(64) {
        *b = 0x88; // symbols 0..128
    }
    for b in c.iter_mut().skip(128).take(64) {
        *b = 0x88; // symbols 256..384
    }
    // Canonical: literal s -> s, match symbol 256+k -> 128+k (8 bits each).
    let mut acc: u64 = 0;
    let mut n = 0;
    for &(v, l) in bits {
        acc = (acc << l) | u64::from(v);
        n += l;
    }
    let pad = (16 - n % 16) % 16;
    acc <<= pad;
    n += pad;
    let mut units = Vec::new();
    while n > 0 {
        n -= 16;
        units.push(((acc >> n) & 0xFFFF) as u16);
    }
    for u in units {
        c.extend_from_slice(&u.to_le_bytes());
    }
    c.extend_from_slice(bytes_after);
    c
}

#[test]
fn crafted_semantic_errors() {
    let w = Wimlib::load(65536, 0);
    // Literal 'A' then a match with offset 2 (only 1 byte produced).
    let c = crafted(&[(65, 8), (128 + 0x10, 8), (0, 1)], &[0, 0]);
    let mut out = vec![0u8; 10];
    assert!(decompress(&c, &mut out).is_err());
    assert!(!w.decompress(&c, &mut out));
    // Literal then offset-1 match of length 3: "AAAA".
    let c = crafted(&[(65, 8), (128, 8)], &[0, 0]);
    let mut out = vec![0u8; 4];
    decompress(&c, &mut out).unwrap();
    assert_eq!(&out, b"AAAA");
    // Same, but the output is too short for the match.
    let mut out = vec![0u8; 3];
    assert!(decompress(&c, &mut out).is_err());
    // Long length escape with no byte left to read must not panic.
    let c = crafted(&[(65, 8), (128 + 15, 8)], &[]);
    let mut out = vec![0u8; 100];
    let _ = decompress(&c, &mut out);
    // 16-bit escape: 1 + (0x0100 + 3) bytes of 'A'.
    let c = crafted(&[(65, 8), (128 + 15, 8)], &[]);
    let mut c2 = c[..256].to_vec();
    c2.extend_from_slice(&c[256..258]);
    c2.extend_from_slice(&[0, 0, 255, 0x00, 0x01]);
    let mut out = vec![0u8; 1 + 0x103];
    decompress(&c2, &mut out).unwrap();
    assert!(out.iter().all(|&b| b == b'A'));
    let mut out2 = vec![0u8; 1 + 0x103];
    assert!(w.decompress(&c2, &mut out2));
    assert_eq!(out, out2);
}

#[test]
fn decoding_garbage_is_fast() {
    // Zero-bit padding past the end must not cost more than the output size.
    let mut rng = Rng::new(24);
    let mut c = generate(Kind::Random, 300, &mut rng);
    for b in c.iter_mut().take(256) {
        *b = 0x99;
    }
    for _ in 0..200 {
        let _ = decompress(&c, &mut vec![0u8; 65536]);
    }
}
