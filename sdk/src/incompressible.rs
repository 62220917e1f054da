//! A cheap test for chunks not worth compressing: data that is already
//! compressed (gzip, JPEG, archives) or random. Codecs whose match finder
//! costs the most exactly on such chunks run it first: LZX's binary trees
//! went from 33 to 42 MB/s on /usr/share/doc with it. A fast codec may not
//! gain: XPRESS's hash chains pass over random data faster than this test
//! (on xpress_ratio's 16 MiB of /usr/share/doc, 342 MB/s without it and
//! 181 MB/s with it), so it does not use it.

/// Tells chunks a Lempel-Ziv + Huffman codec could at best shrink by a few
/// bytes. Keeps its hash table between calls (one per compressor).
///
/// A chunk passes when its bytes are near uniformly spread (order-0 entropy
/// over 99.7% of 8 bits a byte: Huffman coding of literals gains under
/// 0.3%) and fewer than one position in 640 starts a 4-byte repeat (so
/// matches could not gain more). Measured on 16 MiB of /usr/share/doc in
/// 32 KiB chunks with the LZX codec: 432 of the 436 chunks it stores raw
/// pass, and the 3 that pass although LZX shrinks them lose 152 bytes in
/// all.
#[derive(Default)]
pub struct IncompressibleCheck {
    /// Newest position per 4-byte hash, one slot per byte of the chunk
    /// (rounded to a power of two), so a repeat anywhere in the chunk is
    /// seen with a good chance at each position it covers. A slot holds
    /// `base + position`: slots below `base` are from earlier chunks, so
    /// the table is not cleared per chunk (128 KiB for 32 KiB chunks).
    table: Vec<u32>,
    /// Added to this chunk's positions in `table` (at least 1 once the
    /// table exists).
    base: u32,
}

impl IncompressibleCheck {
    /// Whether `chunk` is not worth compressing (see the type's rules).
    /// Chunks under 64 bytes or of 4 GiB and more never are.
    pub fn is_incompressible(&mut self, chunk: &[u8]) -> bool {
        let n = chunk.len();
        // Positions are kept as u32: a chunk of 4 GiB or more is never
        // called incompressible (no codec takes one).
        if n < 64 || u32::try_from(n).is_err() {
            return false;
        }
        // Four tables in turn: a run of one byte would make a single
        // counter's increments wait on each other.
        let mut counts = [[0u32; 256]; 4];
        let mut quads = chunk.chunks_exact(4);
        for q in &mut quads {
            for (table, &b) in counts.iter_mut().zip(q) {
                table[usize::from(b)] += 1;
            }
        }
        for &b in quads.remainder() {
            counts[0][usize::from(b)] += 1;
        }
        let total = n as f64;
        let bits: f64 = (0..256)
            .map(|b| counts[0][b] + counts[1][b] + counts[2][b] + counts[3][b])
            .filter(|&c| c > 0)
            .map(|c| f64::from(c) * (total / f64::from(c)).log2())
            .sum();
        if bits < 0.997 * 8.0 * total {
            return false;
        }
        let hash_bits = (usize::BITS - (n - 1).leading_zeros()).clamp(12, 22);
        let fresh = self.table.len() != 1 << hash_bits || u64::from(self.base) + n as u64 > u64::from(u32::MAX);
        if fresh {
            self.table.clear();
            self.table.resize(1 << hash_bits, 0);
            self.base = 1;
        }
        let base = self.base;
        self.base += n as u32;
        let allowed = n / 640;
        let mut repeats = 0;
        for i in 0..n - 3 {
            let v = u32::from_le_bytes([chunk[i], chunk[i + 1], chunk[i + 2], chunk[i + 3]]);
            let h = (v.wrapping_mul(0x9E37_79B1) >> (32 - hash_bits)) as usize;
            let slot = self.table[h];
            self.table[h] = base + i as u32;
            // An earlier position of this chunk with the same 4 bytes.
            if slot >= base {
                let c = (slot - base) as usize;
                if u32::from_le_bytes([chunk[c], chunk[c + 1], chunk[c + 2], chunk[c + 3]]) == v {
                    repeats += 1;
                    if repeats > allowed {
                        return false;
                    }
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: random bytes without a dependency.
    fn noise(n: usize, mut s: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                s ^= s >> 12;
                s ^= s << 25;
                s ^= s >> 27;
                (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn random_data_passes_and_anything_with_structure_does_not() {
        let mut c = IncompressibleCheck::default();
        assert!(c.is_incompressible(&noise(32768, 1)));
        assert!(c.is_incompressible(&noise(1 << 20, 2)));
        // Text: skewed bytes.
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(800);
        assert!(!c.is_incompressible(&text));
        // Uniform bytes, but half the chunk repeats the other half: matches.
        let mut twice = noise(16384, 3);
        twice.extend_from_within(..);
        assert!(!c.is_incompressible(&twice));
        // The repeat far apart in a large chunk is still seen.
        let mut far = noise(1 << 20, 4);
        far[(1 << 20) - 8192..].copy_from_slice(&noise(8192, 4));
        assert!(!c.is_incompressible(&far));
        assert!(!c.is_incompressible(&[7; 10]));
    }

    /// The table is not cleared between chunks: positions an earlier chunk
    /// left in it are never taken for this chunk's (they may lie past its
    /// end), however often the same bytes come again, and the position
    /// offset survives running out of room (an overflow panics here).
    #[test]
    fn earlier_chunks_leave_no_repeats_behind() {
        let mut c = IncompressibleCheck::default();
        let same = noise(32768, 10);
        for _ in 0..4 {
            assert!(c.is_incompressible(&same));
        }
        // Structure is still seen after those.
        let mut twice = noise(16384, 11);
        twice.extend_from_within(..);
        assert!(!c.is_incompressible(&twice));
        c.base = u32::MAX - 100;
        assert!(c.is_incompressible(&same));
        assert!(c.is_incompressible(&same));
        assert!(!c.is_incompressible(&twice));
    }
}
