//! XPRESS chunk encoder: hash-chain match finder, lazy parsing, one
//! length-limited Huffman code per chunk (format §10.3).

use crate::decode::LENGTH_TABLE_BYTES;
use crate::huffman::{canonical_codes, CodeBuilder, NUM_SYMBOLS};

/// Largest chunk the format can address (offsets are at most 65535).
pub(crate) const MAX_CHUNK: usize = 65536;
const MIN_MATCH: usize = 3;
const MAX_OFFSET: usize = 65535;
/// Longest match we emit; the format allows 65538 but chunks are ≤ 64 KiB.
const MAX_MATCH: usize = MAX_CHUNK;

const HASH4_BITS: u32 = 15;
const HASH3_BITS: u32 = 12;

/// Search effort knobs.
#[derive(Clone, Copy, Debug)]
struct Params {
    /// How many hash-chain links to follow per search.
    max_depth: u32,
    /// A match this long is taken at once: no further search, no lazy step.
    nice_len: usize,
    /// A current match this long makes the look-ahead search shallower.
    good_len: usize,
}

/// Tuned for speed close to wimlib's default (lazy) level at a size within
/// 0.5% of it; depth 24 / nice 48 is 0.2% smaller but ~1.7x slower
/// (`examples/xpress_ratio.rs 8 32768 24 48 16`).
const DEFAULT_PARAMS: Params = Params {
    max_depth: 12,
    nice_len: 32,
    good_len: 12,
};

/// Per-thread XPRESS compressor. All tables are allocated once and reused;
/// no state from one chunk influences the next.
pub struct XpressCompressor {
    params: Params,
    /// Most recent position (plus `base`) for each 4-byte hash.
    head4: Vec<u32>,
    /// Most recent position (plus `base`) for each 3-byte hash.
    head3: Vec<u32>,
    /// For each chunk position, the distance back to the previous position
    /// with the same 4-byte hash, or 0 for none (or none within reach).
    /// 16-bit links halve the cache footprint of the chain walk.
    prev: Vec<u16>,
    /// Offset added to positions stored in the tables. Raising it by more
    /// than a chunk's length invalidates every old entry without clearing
    /// the tables: anything below `base` belongs to an earlier chunk.
    base: u32,
    /// Parsed items: literal = `byte << 16`; match = `(len - 3) << 16 | off`.
    items: Vec<u32>,
    freqs: [u32; NUM_SYMBOLS],
    lens: [u8; NUM_SYMBOLS],
    codes: [u16; NUM_SYMBOLS],
    /// Offset bits and interleaved length bytes of the parsed matches.
    extra_bits: u64,
    extra_bytes: usize,
    builder: CodeBuilder,
}

impl Default for XpressCompressor {
    fn default() -> Self {
        Self::new(32768)
    }
}

impl XpressCompressor {
    /// A compressor for chunks of up to `chunk_size` bytes (larger chunks
    /// still work up to 64 KiB; tables grow on demand).
    pub fn new(chunk_size: usize) -> Self {
        XpressCompressor {
            params: DEFAULT_PARAMS,
            head4: vec![0; 1 << HASH4_BITS],
            head3: vec![0; 1 << HASH3_BITS],
            prev: vec![0; chunk_size.clamp(1, MAX_CHUNK)],
            base: 1,
            items: Vec::with_capacity(chunk_size.min(MAX_CHUNK)),
            freqs: [0; NUM_SYMBOLS],
            lens: [0; NUM_SYMBOLS],
            codes: [0; NUM_SYMBOLS],
            extra_bits: 0,
            extra_bytes: 0,
            builder: CodeBuilder::new(),
        }
    }

    /// A compressor with explicit search effort, for benchmarking.
    #[doc(hidden)]
    pub fn with_effort(chunk_size: usize, max_depth: u32, nice_len: usize, good_len: usize) -> Self {
        let mut c = Self::new(chunk_size);
        c.params = Params {
            max_depth: max_depth.max(1),
            nice_len: nice_len.clamp(3, MAX_MATCH),
            good_len,
        };
        c
    }

    /// Compresses `chunk` into `out`; returns false when the result would
    /// not be strictly smaller than the input (or the chunk exceeds 64 KiB),
    /// in which case the chunk must be stored raw.
    pub fn compress_chunk(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        let n = chunk.len();
        // The length table alone is 256 bytes, so tiny chunks never shrink.
        if n <= LENGTH_TABLE_BYTES + 4 || n > MAX_CHUNK {
            return false;
        }
        self.start_chunk(n);
        self.parse(chunk);
        self.write(n, out)
    }

    fn start_chunk(&mut self, n: usize) {
        if self.prev.len() < n {
            self.prev.resize(n, 0);
        }
        // Every stored value is < old base + MAX_CHUNK; step past them all.
        match self.base.checked_add(2 * MAX_CHUNK as u32) {
            Some(b) if b < u32::MAX - 2 * MAX_CHUNK as u32 => self.base = b,
            _ => {
                self.head4.fill(0);
                self.head3.fill(0);
                self.base = 1;
            }
        }
        self.items.clear();
        self.freqs = [0; NUM_SYMBOLS];
        self.extra_bits = 0;
        self.extra_bytes = 0;
    }

    #[inline(always)]
    fn push_literal(&mut self, b: u8) {
        self.items.push(u32::from(b) << 16);
        self.freqs[b as usize] += 1;
    }

    #[inline(always)]
    fn push_match(&mut self, len: usize, off: usize) {
        debug_assert!((MIN_MATCH..=MAX_MATCH).contains(&len) && (1..=MAX_OFFSET).contains(&off));
        let adj = len - MIN_MATCH;
        self.items.push(((adj as u32) << 16) | off as u32);
        let off_bits = 31 - (off as u32).leading_zeros();
        self.freqs[256 + ((off_bits as usize) << 4) + adj.min(15)] += 1;
        self.extra_bits += u64::from(off_bits);
        if adj >= 15 {
            self.extra_bytes += if adj - 15 >= 255 { 3 } else { 1 };
        }
    }

    /// Records position `i` in the hash tables (requires 4 readable bytes).
    #[inline(always)]
    fn insert(&mut self, data: &[u8], i: usize) {
        let w = read_u32(data, i);
        let h4 = hash4(w);
        let h3 = hash3(w);
        let v = self.base + i as u32;
        self.prev[i] = link(self.head4[h4], self.base, i);
        self.head4[h4] = v;
        self.head3[h3] = v;
    }

    /// Inserts position `i` and returns the best `(length, offset)` match
    /// for it that is longer than `min_len` (with length 0 when there is
    /// none), following at most `depth` chain links.
    /// Requires `i + 4 <= data.len()`.
    #[inline(always)]
    fn find(&mut self, data: &[u8], i: usize, min_len: usize, depth: u32) -> (usize, usize) {
        let n = data.len();
        let max_len = (n - i).min(MAX_MATCH);
        let nice = self.params.nice_len.min(max_len);
        let w = read_u32(data, i);
        let h4 = hash4(w);
        let h3 = hash3(w);
        let base = self.base;
        let v = base + i as u32;

        // Only strictly longer matches are of interest; a shorter "best"
        // would just be thrown away by the caller.
        let mut best_len = min_len.max(MIN_MATCH - 1).min(max_len - 1);
        let floor = best_len;
        let mut best_off = 0usize;

        // Length-3 candidate: a single-entry table keeps this cheap.
        let c3 = self.head3[h3];
        self.head3[h3] = v;
        if c3 >= base {
            let c = (c3 - base) as usize;
            let off = i - c;
            if off <= MAX_OFFSET && read_u32(data, c) & 0xFF_FFFF == w & 0xFF_FFFF {
                let l = match_len(data, c, i, max_len);
                if l > best_len {
                    best_len = l;
                    best_off = off;
                }
            }
        }

        let mut step = usize::from(link(self.head4[h4], base, i));
        self.head4[h4] = v;
        self.prev[i] = step as u16;
        if best_len >= nice {
            return (best_len, best_off);
        }
        let mut depth = depth;
        let mut c = i;
        while step != 0 && depth > 0 {
            depth -= 1;
            c -= step;
            let off = i - c;
            if off > MAX_OFFSET {
                break;
            }
            // Cheap reject: the byte that would make this match longer than
            // the best so far must agree, and so must the first four bytes.
            // (`best_len < max_len` holds: reaching it would hit `nice`.)
            if data[c + best_len] == data[i + best_len] && read_u32(data, c) == w {
                let l = match_len(data, c, i, max_len);
                if l > best_len {
                    best_len = l;
                    best_off = off;
                    if l >= nice {
                        break;
                    }
                }
            }
            step = usize::from(self.prev[c]);
        }
        if best_len == floor {
            return (0, 0);
        }
        (best_len, best_off)
    }

    /// Lazy parse: take the best match at each position unless the next
    /// position offers a clearly better one, in which case emit a literal.
    fn parse(&mut self, data: &[u8]) {
        let n = data.len();
        let nice = self.params.nice_len;
        // Positions below this are already in the hash tables.
        let mut inserted: usize;
        let mut i = 0usize;
        // Hashing reads 4 bytes; the last 3 positions are always literals.
        let last = n.saturating_sub(3);
        while i < last {
            let (mut len, mut off) = self.find(data, i, 0, self.params.max_depth);
            inserted = i + 1;
            if !worth_taking(len, off) {
                self.push_literal(data[i]);
                i += 1;
                continue;
            }
            while len < nice && i + 1 < last {
                // The look-ahead only needs to beat `len`, and a decent
                // current match earns a shallower search.
                let depth = if len >= self.params.good_len {
                    self.params.max_depth / 4
                } else {
                    self.params.max_depth / 2
                };
                let (l2, o2) = self.find(data, i + 1, len, depth.max(1));
                inserted = i + 2;
                if worth_taking(l2, o2) && better(l2, o2, len, off) {
                    self.push_literal(data[i]);
                    i += 1;
                    len = l2;
                    off = o2;
                } else {
                    break;
                }
            }
            self.push_match(len, off);
            let end = i + len;
            let stop = end.min(last);
            while inserted < stop {
                self.insert(data, inserted);
                inserted += 1;
            }
            i = end;
        }
        while i < n {
            self.push_literal(data[i]);
            i += 1;
        }
    }

    /// Builds the Huffman code and writes the chunk; false if it would not
    /// be strictly smaller than `n` bytes.
    fn write(&mut self, n: usize, out: &mut Vec<u8>) -> bool {
        // End-of-data symbol: not needed by every decoder, but required by
        // Microsoft's, so it must have a codeword and be written.
        self.freqs[256] += 1;
        self.builder.build_lengths(&self.freqs, &mut self.lens);
        canonical_codes(&self.lens, &mut self.codes);

        let mut bits = self.extra_bits;
        for (f, &l) in self.freqs.iter().zip(self.lens.iter()) {
            bits += u64::from(*f) * u64::from(l);
        }
        // Units: every completed one plus the two reserved at the end.
        let units = bits.div_ceil(16) as usize + 1;
        let size = LENGTH_TABLE_BYTES + self.extra_bytes + 2 * units;
        if size >= n {
            return false;
        }

        out.clear();
        out.resize(size, 0);
        // Nibble order: the even symbol goes in the low half.
        for (byte, pair) in out[..LENGTH_TABLE_BYTES].iter_mut().zip(self.lens.chunks_exact(2)) {
            *byte = pair[0] | (pair[1] << 4);
        }
        let mut w = BitWriter::new(out, LENGTH_TABLE_BYTES);
        for &item in &self.items {
            let off = (item & 0xFFFF) as usize;
            let hi = (item >> 16) as usize;
            if off == 0 {
                w.put_bits(u32::from(self.codes[hi]), u32::from(self.lens[hi]));
                continue;
            }
            let adj = hi;
            let off_bits = 31 - (off as u32).leading_zeros();
            let sym = 256 + ((off_bits as usize) << 4) + adj.min(15);
            w.put_bits(u32::from(self.codes[sym]), u32::from(self.lens[sym]));
            if adj >= 15 {
                let b = (adj - 15).min(255);
                w.put_byte(b as u8);
                if b == 255 {
                    w.put_byte(adj as u8);
                    w.put_byte((adj >> 8) as u8);
                }
            }
            if off_bits != 0 {
                w.put_bits(off as u32 & ((1 << off_bits) - 1), off_bits);
            }
        }
        w.put_bits(u32::from(self.codes[256]), u32::from(self.lens[256]));
        let end = w.finish();
        debug_assert_eq!(end, size);
        end == size
    }
}

/// Chain link from position `i` to the table entry `head`: the distance,
/// or 0 when `head` is stale (an earlier chunk) or beyond the offset limit.
#[inline(always)]
fn link(head: u32, base: u32, i: usize) -> u16 {
    if head >= base {
        let d = i - (head - base) as usize;
        if d <= MAX_OFFSET {
            return d as u16;
        }
    }
    0
}

/// Should a match be used at all rather than a literal? A 3-byte match far
/// away costs about as much as three literals. (Threshold tuned on system
/// files; see examples/xpress_ratio.rs.)
#[inline(always)]
fn worth_taking(len: usize, off: usize) -> bool {
    len > MIN_MATCH || (len == MIN_MATCH && off <= 2048)
}

/// Lazy-evaluation rule: is the match found one byte later a better deal
/// than the current one, paying one extra literal for it? Each byte of
/// length is worth about 4 offset bits; the margin stands for the literal.
#[inline(always)]
fn better(l2: usize, o2: usize, l1: usize, o1: usize) -> bool {
    let b1 = 31 - (o1 as u32).leading_zeros();
    let b2 = 31 - (o2 as u32).leading_zeros();
    (l2 as i64) * 4 - i64::from(b2) > (l1 as i64) * 4 - i64::from(b1) + 2
}

#[inline(always)]
fn read_u32(data: &[u8], i: usize) -> u32 {
    // One range check, then a single load (callers stay in bounds).
    match data.get(i..i + 4) {
        Some(b) => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => 0,
    }
}

#[inline(always)]
fn hash4(w: u32) -> usize {
    (w.wrapping_mul(0x9E37_79B1) >> (32 - HASH4_BITS)) as usize
}

#[inline(always)]
fn hash3(w: u32) -> usize {
    ((w << 8).wrapping_mul(0x9E37_79B1) >> (32 - HASH3_BITS)) as usize
}

/// Length of the common prefix of `data[a..]` and `data[b..]`, capped at
/// `max` (`b + max` must be within `data`, `a < b`).
#[inline(always)]
fn match_len(data: &[u8], a: usize, b: usize, max: usize) -> usize {
    let mut l = 0;
    while l + 8 <= max {
        let x = read_u64(data, a + l) ^ read_u64(data, b + l);
        if x != 0 {
            return l + (x.trailing_zeros() / 8) as usize;
        }
        l += 8;
    }
    while l < max && data[a + l] == data[b + l] {
        l += 1;
    }
    l
}

#[inline(always)]
fn read_u64(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[i..i + 8]);
    u64::from_le_bytes(b)
}

/// Writes the bit stream with whole bytes interleaved.
///
/// Two 16-bit slots are always reserved ahead of the byte position: the unit
/// being filled and the next one. A unit is stored only once more than 16
/// bits are pending, so a length byte written right after a unit boundary
/// lands after exactly the units a decoder holding 16..=31 bits has loaded.
struct BitWriter<'a> {
    out: &'a mut [u8],
    buf: u64,
    count: u32,
    slot_a: usize,
    slot_b: usize,
    next: usize,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut [u8], start: usize) -> Self {
        BitWriter {
            out,
            buf: 0,
            count: 0,
            slot_a: start,
            slot_b: start + 2,
            next: start + 4,
        }
    }

    #[inline(always)]
    fn put_bits(&mut self, v: u32, n: u32) {
        self.buf = (self.buf << n) | u64::from(v);
        self.count += n;
        if self.count > 16 {
            self.count -= 16;
            let u = (self.buf >> self.count) as u16;
            self.store(self.slot_a, u);
            self.slot_a = self.slot_b;
            self.slot_b = self.next;
            self.next += 2;
        }
    }

    #[inline(always)]
    fn put_byte(&mut self, b: u8) {
        if let Some(x) = self.out.get_mut(self.next) {
            *x = b;
        }
        self.next += 1;
    }

    #[inline(always)]
    fn store(&mut self, at: usize, u: u16) {
        if let Some(s) = self.out.get_mut(at..at + 2) {
            s.copy_from_slice(&u.to_le_bytes());
        }
    }

    /// Flushes the partial unit (zero-padded) and the spare slot; returns
    /// the total number of bytes written.
    fn finish(mut self) -> usize {
        let u = ((self.buf << (16 - self.count)) & 0xFFFF) as u16;
        self.store(self.slot_a, u);
        self.store(self.slot_b, 0);
        self.next
    }
}
