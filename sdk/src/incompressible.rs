//! A cheap test for chunks not worth compressing: data that is already
//! compressed (gzip, JPEG, archives) or random. Codecs whose match finder
//! costs the most exactly on such chunks run it first: LZX's binary trees
//! went from 33 to 42 MB/s on /usr/share/doc with it. A fast codec may not
//! gain: XPRESS's hash chains pass over random data faster than this test
//! (on xpress_ratio's 16 MiB of /usr/share/doc, 342 MB/s without it and
//! 181 MB/s with it), so it does not use it.

/// Tells chunks a Lempel-Ziv + Huffman codec could at best shrink by a few
/// bytes. Keeps its table between calls (one per compressor).
///
/// A chunk passes when its bytes are near uniformly spread and fewer than
/// one position in 640 starts a 4-byte repeat (so matches could not gain
/// more).
///
/// "Near uniformly spread": Huffman coding of the literals would save at
/// most [`MAX_LITERAL_GAIN_PERMILLE`] thousandths of the chunk, or
/// [`SMALL_CHUNK_GAIN_BITS`] bits (but never over 5%), whichever is more. The second bound is
/// for small chunks: n random bytes look that many bits short of 8 bits a
/// byte by chance alone (their empirical entropy is about 184 bits short
/// of 8n whatever n), which a ratio alone took for structure, so small
/// already-compressed files (gzip'd man pages) went through the whole
/// compressor to be stored raw after all. A Huffman code that gains that
/// little does not pay for its own header.
#[derive(Default)]
pub struct IncompressibleCheck {
    /// The newest 4-byte value seen per hash, one slot per byte of the chunk
    /// (rounded to a power of two), so a repeat anywhere in the chunk is
    /// seen with a good chance at each position it covers. Cleared per
    /// chunk (128 KiB for 32 KiB chunks: a few microseconds).
    table: Vec<u32>,
}

/// Literal coding may save up to this many thousandths of a chunk's bits
/// (0.3%) and still leave it incompressible.
pub const MAX_LITERAL_GAIN_PERMILLE: u32 = 3;

/// Literal coding may save up to this many bits and still leave a chunk
/// incompressible: random bytes fall short of 8 bits a byte by about 184
/// bits (with a spread of about 16) by chance; the rest of the margin
/// covers a file's short plain header (a gzip file's name).
pub const SMALL_CHUNK_GAIN_BITS: u32 = 512;

/// Positions hashed between checks of the repeat count: the count is kept
/// without a branch per position (whether a slot matches is a coin toss
/// the predictor cannot learn), so a repetitive chunk stops within this
/// many positions of going over.
const REPEAT_CHECK_EVERY: usize = 1024;

impl IncompressibleCheck {
    /// Whether `chunk` is not worth compressing (see the type's rules).
    /// Chunks under 64 bytes or of 4 GiB and more never are.
    pub fn is_incompressible(&mut self, chunk: &[u8]) -> bool {
        let n = chunk.len();
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
        let allowed_gain = (8.0 * total * f64::from(MAX_LITERAL_GAIN_PERMILLE) / 1000.0)
            .max(f64::from(SMALL_CHUNK_GAIN_BITS).min(8.0 * total / 20.0));
        if 8.0 * total - bits > allowed_gain {
            return false;
        }
        let hash_bits = (usize::BITS - (n - 1).leading_zeros()).clamp(12, 22);
        self.table.clear();
        self.table.resize(1 << hash_bits, 0);
        let mask = self.table.len() - 1;
        let table = &mut self.table[..];
        let allowed = n / 640;
        let mut repeats = 0usize;
        // A slot holding this position's 4 bytes: the same bytes stood at
        // an earlier position with the same hash, the newest such. (A
        // fresh slot holds 0, so the first all-zero word of a chunk may
        // count once too many.)
        for start in (0..n - 3).step_by(REPEAT_CHECK_EVERY) {
            let end = (start + REPEAT_CHECK_EVERY).min(n - 3);
            for w in chunk[start..end + 3].windows(4) {
                let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
                let h = (v.wrapping_mul(0x9E37_79B1) >> (32 - hash_bits)) as usize & mask;
                repeats += usize::from(std::mem::replace(&mut table[h], v) == v);
            }
            if repeats > allowed {
                return false;
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

    /// Nothing of one chunk is taken for a repeat in the next.
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
        assert!(c.is_incompressible(&same));
    }

    /// Small random chunks look skewed by chance (a few hundred bits short
    /// of 8 a byte); they, and such data behind a short plain header (a
    /// gzip file's name), are still found; small text is not.
    #[test]
    fn small_chunks_of_random_bytes_are_found_despite_chance_skew() {
        let mut c = IncompressibleCheck::default();
        for (seed, n) in [(21, 1024), (22, 2048), (23, 4096), (24, 8192), (25, 16384)] {
            assert!(c.is_incompressible(&noise(n, seed)), "{n} random bytes");
            let mut gz = b"\x1f\x8b\x08\x08\x00\x00\x00\x00\x02\x03ls.1\x00".to_vec();
            gz.extend(noise(n, seed + 100));
            assert!(c.is_incompressible(&gz), "{n} random bytes behind a gzip header");
        }
        let text = b"Manual page for a command that does one thing well. ";
        for n in [128, 256, 512, 2048] {
            let t: Vec<u8> = text.iter().cycle().take(n).copied().collect();
            assert!(!c.is_incompressible(&t), "{n} bytes of text");
        }
        // Random bytes drawn from half the alphabet: 7 bits a byte.
        let half: Vec<u8> = noise(2048, 30).iter().map(|b| b & 0x7F).collect();
        assert!(!c.is_incompressible(&half));
    }
}
