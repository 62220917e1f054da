//! Shared test helpers: a small PRNG and data generators.
#![allow(dead_code)]

/// xorshift64* — deterministic, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn byte(&mut self) -> u8 {
        (self.next() >> 56) as u8
    }
}

pub const KINDS: usize = 10;

/// Generates `len` bytes of one of several flavours (`kind % KINDS`).
pub fn generate(kind: usize, len: usize, rng: &mut Rng) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    match kind % KINDS {
        0 => (0..len).for_each(|_| v.push(rng.byte())),
        1 => v.resize(len, 0),
        2 => {
            let period = 1 + rng.below(300) as usize;
            let pat: Vec<u8> = (0..period).map(|_| rng.byte()).collect();
            (0..len).for_each(|i| v.push(pat[i % period]));
        }
        3 => text(len, rng, &mut v),
        4 => x86(len, rng, &mut v),
        5 => (0..len).for_each(|_| v.push(b"abcd"[rng.below(4) as usize])),
        6 => {
            // Sections of everything, with long-distance repeats.
            while v.len() < len {
                let k = rng.below(6) as usize;
                let n = (1 + rng.below(5000) as usize).min(len - v.len());
                if k == 5 && v.len() > 10 {
                    let start = rng.below(v.len() as u64) as usize;
                    let n = n.min(v.len() - start);
                    for j in 0..n {
                        let b = v[start + j];
                        v.push(b);
                    }
                } else {
                    let s = generate(k, n, rng);
                    v.extend_from_slice(&s);
                }
            }
        }
        8 => {
            // Table rows: one record repeated with a byte or two changed in
            // each copy (a row number, a flag), the shape gap matches
            // (match, literal, repeat match) are for.
            let width = 8 + rng.below(120) as usize;
            let mut row: Vec<u8> = (0..width).map(|_| rng.byte()).collect();
            while v.len() < len {
                for _ in 0..1 + rng.below(2) {
                    let at = rng.below(width as u64) as usize;
                    row[at] = rng.byte();
                }
                v.extend_from_slice(&row);
            }
        }
        9 => {
            // Nearly incompressible but not quite: 240 byte values, about
            // 7.9 bits a byte (as gzip'd data still shrinks by a percent).
            // The encoder writes such chunks from its bootstrap parse.
            (0..len).for_each(|_| v.push((rng.next() % 240) as u8))
        }
        _ => {
            // Many 0xE8 bytes with random operands, incl. near the end.
            while v.len() < len {
                if rng.below(3) == 0 {
                    v.push(0xE8);
                } else {
                    v.push(rng.byte());
                }
            }
        }
    }
    v.truncate(len);
    v
}

fn text(len: usize, rng: &mut Rng, v: &mut Vec<u8>) {
    const WORDS: &[&str] = &[
        "the",
        "of",
        "and",
        "archive",
        "image",
        "window",
        "offset",
        "match",
        "length",
        "compression",
        "block",
        "Huffman",
        "tree",
        "symbol",
        "data",
        "chunk",
        "is",
        "a",
        "wimguard",
        "backup",
        "file",
        "resource",
        "header",
        "integrity",
        "table",
    ];
    while v.len() < len {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        v.extend_from_slice(w.as_bytes());
        v.push(if rng.below(12) == 0 { b'\n' } else { b' ' });
    }
}

fn x86(len: usize, rng: &mut Rng, v: &mut Vec<u8>) {
    let targets: Vec<i32> = (0..20).map(|_| rng.below(60000) as i32).collect();
    while v.len() < len {
        match rng.below(4) {
            0 => {
                // call rel32 to one of a few targets
                let t = targets[rng.below(targets.len() as u64) as usize];
                let rel = t - v.len() as i32 - 5;
                v.push(0xE8);
                v.extend_from_slice(&rel.to_le_bytes());
            }
            1 => v.extend_from_slice(&[0x48, 0x89, 0xE5]),
            2 => v.extend_from_slice(&[0x8B, 0x45, rng.byte()]),
            _ => v.push(rng.byte()),
        }
    }
}

/// Sizes worth testing for a given maximum.
pub fn sizes() -> Vec<usize> {
    let mut s: Vec<usize> = (0..=70).collect();
    s.extend([
        100, 127, 128, 255, 256, 1000, 4095, 4096, 10_000, 20_000, 32_767, 32_768,
    ]);
    s
}
