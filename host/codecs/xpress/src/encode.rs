//! XPRESS chunk encoder: hash-chain match finder, lazy parsing, one
//! length-limited Huffman code per chunk (format §10.3).

use crate::decode::LENGTH_TABLE_BYTES;
use crate::huffman::{canonical_codes, CodeBuilder, NUM_SYMBOLS};

/// Largest chunk the format can address (offsets are at most 65535).
pub(crate) const MAX_CHUNK: usize = 65536;
const MIN_MATCH: usize = 3;

/// Up to 2^17 heads for 4-byte hashes: four to eight per position of a
/// chunk (a power of two), so a 32 KiB chunk gets them all. Far more slots than positions keeps chains
/// free of false candidates and "is this slot empty" predictable; on poorly
/// compressible data that branch dominated: 15 bits for 32 KiB ran at 2/3
/// the speed (and 18 bits is slower on text, where the clearing starts to
/// show). The table is cleared per chunk, so a small chunk (a small file)
/// uses and clears only its share of it.
const HASH4_BITS: u32 = 17;
/// The single-entry 3-byte table: larger finds a few more 3-byte matches
/// but is much slower on incompressible data (empty slots again).
const HASH3_BITS: u32 = 12;

/// The chunk is copied into a fixed-size buffer at index 1 (position 0 is
/// the "no candidate" marker of the hash tables). Every index into it is
/// masked with `BUF_MASK`, which never changes an in-range index but lets
/// the compiler drop the bounds checks, and the slack after the mask covers
/// 8-byte reads.
const BUF_MASK: usize = 0x1_FFFF;
const BUF_LEN: usize = BUF_MASK + 1 + 8;
type Buf = [u8; BUF_LEN];

/// Positions fit in 16 bits: the last 3 bytes of a chunk are never hashed,
/// so a stored position is at most 65533.
const POS_MASK: usize = 0xFFFF;

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

/// Measured on /usr/share (633 MB, tmpfs, 2 CPUs) against wimlib's default
/// (lazy, depth 46, nice 93): depth 12 / nice 32 was 1.0048x its size, this
/// is 1.0019x for 5% more time, and depth 32 / nice 64 is 1.0010x for 9%
/// more (`examples/xpress_ratio.rs 16 32768 DEPTH NICE GOOD` shows the same
/// order per corpus).
const DEFAULT_PARAMS: Params = Params {
    max_depth: 24,
    nice_len: 48,
    good_len: 16,
};

/// A run of literals skips ahead by one more position every `1 << SKIP_SHIFT`
/// bytes: data that has shown no match for that long (compressed or random)
/// is searched ever more sparsely. On /usr/share: 9% less time, 0.02% larger
/// (with 7: 11% less time, 0.12% larger).
const SKIP_SHIFT: u32 = 9;

/// Allocates a zeroed fixed-size array on the heap (not via the stack).
fn boxed_array<T: Copy + Default, const N: usize>() -> Box<[T; N]> {
    match vec![T::default(); N].into_boxed_slice().try_into() {
        Ok(b) => b,
        Err(_) => unreachable!("length is N"),
    }
}

/// Hash-chain match finder over one chunk. Positions are 1-based indexes
/// into `buf`; 0 means "none". The head tables are cleared per chunk.
///
/// Why chains: walking one is a chain of dependent loads, so buckets that
/// hold a hash's recent positions side by side (zstd's row match finder)
/// looked faster. Measured with `examples/xpress_kinds.rs` on /usr/share,
/// buckets of 32 slots with 8-bit tags in their own table ran about 1.18x the
/// chains' time and buckets of 16 slots with the tags in the same cache line
/// 1.09x, and 0.05% and 0.2% larger: the tag masks and the extra stores per
/// inserted position cost more than the parallel loads saved.
struct MatchFinder {
    buf: Box<Buf>,
    /// Most recent position for each 4-byte hash (the first
    /// `1 << (32 - shift4)` entries are this chunk's).
    head4: Box<[u16; 1 << HASH4_BITS]>,
    /// Right shift that turns a multiplied 4-byte word into its head index.
    shift4: u32,
    /// Most recent position for each 3-byte hash.
    head3: Box<[u16; 1 << HASH3_BITS]>,
    /// For each position, the previous position with the same 4-byte hash
    /// (or 0). Only read for positions that were inserted.
    prev: Box<[u16; POS_MASK + 1]>,
}

/// Room for every match of a chunk (each covers at least 3 bytes).
const MAX_MATCHES: usize = 1 << 15;

/// The parsed chunk: matches, each with the run of literals before it,
/// plus the symbol statistics. The literals themselves stay in the input.
struct Items {
    /// `literals before << 40 | (len - 3) << 16 | off`.
    items: Box<[u64; MAX_MATCHES]>,
    count: usize,
    freqs: [u32; NUM_SYMBOLS],
    /// Offset bits and interleaved length bytes of the parsed matches.
    extra_bits: u64,
    extra_bytes: usize,
}

/// Per-thread XPRESS compressor. All tables are allocated once and reused;
/// no state from one chunk influences the next.
pub struct XpressCompressor {
    params: Params,
    mf: MatchFinder,
    parsed: Items,
    lens: [u8; NUM_SYMBOLS],
    codes: [u16; NUM_SYMBOLS],
    builder: CodeBuilder,
}

impl Default for XpressCompressor {
    fn default() -> Self {
        Self::new(32768)
    }
}

impl XpressCompressor {
    /// A compressor for chunks of up to 64 KiB (`chunk_size` is accepted
    /// for symmetry with other codecs; the tables have a fixed size).
    pub fn new(_chunk_size: usize) -> Self {
        XpressCompressor {
            params: DEFAULT_PARAMS,
            mf: MatchFinder {
                buf: boxed_array(),
                head4: boxed_array(),
                shift4: 32 - HASH4_BITS,
                head3: boxed_array(),
                prev: boxed_array(),
            },
            parsed: Items {
                items: boxed_array(),
                count: 0,
                freqs: [0; NUM_SYMBOLS],
                extra_bits: 0,
                extra_bytes: 0,
            },
            lens: [0; NUM_SYMBOLS],
            codes: [0; NUM_SYMBOLS],
            builder: CodeBuilder::new(),
        }
    }

    /// A compressor with explicit search effort, for benchmarking.
    #[doc(hidden)]
    pub fn with_effort(chunk_size: usize, max_depth: u32, nice_len: usize, good_len: usize) -> Self {
        let mut c = Self::new(chunk_size);
        c.params = Params {
            max_depth: max_depth.max(1),
            nice_len: nice_len.clamp(3, MAX_CHUNK),
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
        self.mf.start_chunk(chunk);
        self.parsed.clear();
        parse(&mut self.mf, &mut self.parsed, n, self.params);
        self.write(n, out)
    }

    /// Builds the Huffman code and writes the chunk; false if it would not
    /// be strictly smaller than `n` bytes.
    fn write(&mut self, n: usize, out: &mut Vec<u8>) -> bool {
        let parsed = &mut self.parsed;
        // End-of-data symbol: not needed by every decoder, but required by
        // Microsoft's, so it must have a codeword and be written.
        parsed.freqs[256] += 1;
        self.builder.build_lengths(&parsed.freqs, &mut self.lens);
        canonical_codes(&self.lens, &mut self.codes);

        let mut bits = parsed.extra_bits;
        for (f, &l) in parsed.freqs.iter().zip(self.lens.iter()) {
            bits += u64::from(*f) * u64::from(l);
        }
        // Units: every completed one plus the two reserved at the end.
        let units = bits.div_ceil(16) as usize + 1;
        let size = LENGTH_TABLE_BYTES + parsed.extra_bytes + 2 * units;
        if size >= n {
            return false;
        }

        out.clear();
        out.resize(size, 0);
        // Nibble order: the even symbol goes in the low half.
        for (byte, pair) in out[..LENGTH_TABLE_BYTES].iter_mut().zip(self.lens.chunks_exact(2)) {
            *byte = pair[0] | (pair[1] << 4);
        }
        // Codeword and length of each symbol in one table entry.
        let mut table = [0u32; NUM_SYMBOLS];
        for (t, (&c, &l)) in table.iter_mut().zip(self.codes.iter().zip(self.lens.iter())) {
            *t = (u32::from(c) << 8) | u32::from(l);
        }
        let mut w = BitWriter::new(out, LENGTH_TABLE_BYTES);
        // The chunk's bytes sit at 1..=n in the match finder's buffer.
        let data = &self.mf.buf[1..=n];
        let mut pos = 0usize;
        for &item in &parsed.items[..parsed.count] {
            let run = (item >> 40) as usize;
            let adj = ((item >> 16) & 0xFF_FFFF) as usize;
            let off = (item & 0xFFFF) as u32;
            w.put_literals(&data[pos..pos + run], &table);
            pos += run + adj + MIN_MATCH;
            let off_bits = 31 - off.leading_zeros();
            let e = table[(256 + ((off_bits as usize) << 4) + adj.min(15)) & (NUM_SYMBOLS - 1)];
            w.put_bits(e >> 8, e & 0xFF);
            if adj >= 15 {
                let b = (adj - 15).min(255);
                w.put_byte(b as u8);
                if b == 255 {
                    w.put_byte(adj as u8);
                    w.put_byte((adj >> 8) as u8);
                }
            }
            w.put_bits(off & ((1 << off_bits) - 1), off_bits);
        }
        w.put_literals(&data[pos..], &table);
        let e = table[256];
        w.put_bits(e >> 8, e & 0xFF);
        let end = w.finish();
        debug_assert_eq!(end, size);
        end == size
    }
}

impl Items {
    fn clear(&mut self) {
        self.count = 0;
        self.freqs = [0; NUM_SYMBOLS];
        self.extra_bits = 0;
        self.extra_bytes = 0;
    }

    #[inline(always)]
    fn literal(&mut self, b: u8) {
        self.freqs[b as usize] += 1;
    }

    /// A match of `len` bytes at distance `off`, after `run` literals.
    #[inline(always)]
    fn matched(&mut self, run: usize, len: usize, off: usize) {
        debug_assert!((MIN_MATCH..=MAX_CHUNK).contains(&len) && (1..=0xFFFF).contains(&off));
        debug_assert!(self.count < MAX_MATCHES);
        let adj = len - MIN_MATCH;
        self.items[self.count & (MAX_MATCHES - 1)] = ((run as u64) << 40) | ((adj as u64) << 16) | off as u64;
        self.count += 1;
        let off_bits = 31 - (off as u32).leading_zeros();
        self.freqs[(256 + ((off_bits as usize) << 4) + adj.min(15)) & (NUM_SYMBOLS - 1)] += 1;
        self.extra_bits += u64::from(off_bits);
        if adj >= 15 {
            self.extra_bytes += if adj - 15 >= 255 { 3 } else { 1 };
        }
    }
}

impl MatchFinder {
    /// Loads `chunk` (at position 1) and forgets every earlier position.
    fn start_chunk(&mut self, chunk: &[u8]) {
        self.buf[1..=chunk.len()].copy_from_slice(chunk);
        // Chunks this small are never compressed: at least 11 bits.
        debug_assert!(chunk.len() > LENGTH_TABLE_BYTES);
        let bits = (usize::BITS - (chunk.len() - 1).leading_zeros() + 2).min(HASH4_BITS);
        self.shift4 = 32 - bits;
        self.head4[..1 << bits].fill(0);
        self.head3.fill(0);
    }

    /// Records position `p` in the hash tables (4 bytes must be readable).
    #[inline(always)]
    fn insert(&mut self, p: usize) {
        let w = load32(&self.buf, p);
        let h4 = hash4(w, self.shift4);
        self.prev[p & POS_MASK] = self.head4[h4];
        self.head4[h4] = p as u16;
        self.head3[hash3(w)] = p as u16;
    }

    /// Inserts position `p` and returns the best `(length, offset)` match
    /// for it that is longer than `min_len` (with length 0 when there is
    /// none), following at most `depth` chain links. `end` is the position
    /// of the last byte of the chunk; requires `p + 3 <= end`.
    #[inline(always)]
    fn find(&mut self, p: usize, end: usize, min_len: usize, depth: u32, nice: usize) -> (usize, usize) {
        let buf = &*self.buf;
        let max_len = end + 1 - p;
        let nice = nice.min(max_len);
        let w = load32(buf, p);
        let h4 = hash4(w, self.shift4);
        let h3 = hash3(w);

        // Only strictly longer matches are of interest; a shorter "best"
        // would just be thrown away by the caller.
        let mut best_len = min_len.max(MIN_MATCH - 1).min(max_len - 1);
        let floor = best_len;
        let mut best_off = 0usize;

        // Length-3 candidate: a single-entry table keeps this cheap. Only
        // looked at when nothing is known yet: a longer match from it would
        // start with the same four bytes as the chain's candidates.
        let c = usize::from(self.head3[h3]);
        self.head3[h3] = p as u16;
        if best_len < MIN_MATCH && c != 0 && (load32(buf, c) ^ w) & 0xFF_FFFF == 0 {
            let l = match_len(buf, c, p, max_len);
            if l > best_len {
                best_len = l;
                best_off = p - c;
            }
        }

        let mut c = usize::from(self.head4[h4]);
        self.head4[h4] = p as u16;
        self.prev[p & POS_MASK] = c as u16;
        if best_len >= nice {
            return (best_len, best_off);
        }
        let mut depth = depth;
        // Cheap reject: the four bytes ending with the one that would make a
        // candidate longer than the best so far must agree, and so must the
        // first four. (`best_len < max_len` holds: reaching it would hit
        // `nice`.) Below length 3 the first four bytes cover the tail.
        let mut tail_at = best_len.saturating_sub(3);
        let mut tail = load32(buf, p + tail_at);
        while c != 0 && depth > 0 {
            depth -= 1;
            if load32(buf, c + tail_at) == tail && load32(buf, c) == w {
                let l = match_len(buf, c, p, max_len);
                if l > best_len {
                    best_len = l;
                    best_off = p - c;
                    if l >= nice {
                        break;
                    }
                    tail_at = l - 3;
                    tail = load32(buf, p + tail_at);
                }
            }
            c = usize::from(self.prev[c & POS_MASK]);
        }
        if best_len == floor {
            return (0, 0);
        }
        (best_len, best_off)
    }
}

/// Lazy parse of the `n`-byte chunk loaded in `mf`: take the best match at
/// each position unless the next position offers a clearly better one, in
/// which case emit a literal.
fn parse(mf: &mut MatchFinder, out: &mut Items, n: usize, params: Params) {
    let Params {
        max_depth,
        nice_len: nice,
        good_len,
    } = params;
    // Good current match: shallower look-ahead; otherwise half depth.
    let depth_good = (max_depth / 4).max(1);
    let depth_other = (max_depth / 2).max(1);
    let end = n;
    // Hashing reads 4 bytes; the last 3 positions are always literals.
    let last = n - 2;
    let mut p = 1usize;
    // Start of the current run of literals.
    let mut run_start = p;
    while p < last {
        let (mut len, mut off) = mf.find(p, end, 0, max_depth, nice);
        // Positions below this are already in the hash tables.
        let mut inserted = p + 1;
        if !worth_taking(len, off) {
            // A long run without matches is data that does not compress
            // here: search ever more sparsely through it.
            let step = 1 + ((p - run_start) >> SKIP_SHIFT);
            let stop = (p + step).min(last);
            while p < stop {
                out.literal(byte(&mf.buf, p));
                p += 1;
            }
            continue;
        }
        while len < nice && p + 1 < last {
            // The look-ahead only needs to beat `len`, and a decent
            // current match earns a shallower search.
            let depth = if len >= good_len { depth_good } else { depth_other };
            let (l2, o2) = mf.find(p + 1, end, len, depth, nice);
            inserted = p + 2;
            if worth_taking(l2, o2) && better(l2, o2, len, off) {
                out.literal(byte(&mf.buf, p));
                p += 1;
                len = l2;
                off = o2;
            } else {
                break;
            }
        }
        out.matched(p - run_start, len, off);
        let next = p + len;
        let stop = next.min(last);
        while inserted < stop {
            mf.insert(inserted);
            inserted += 1;
        }
        p = next;
        run_start = p;
    }
    while p <= end {
        out.literal(byte(&mf.buf, p));
        p += 1;
    }
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
fn byte(buf: &Buf, i: usize) -> u8 {
    buf[i & BUF_MASK]
}

#[inline(always)]
fn load32(buf: &Buf, i: usize) -> u32 {
    let i = i & BUF_MASK;
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[i..i + 4]);
    u32::from_le_bytes(b)
}

#[inline(always)]
fn load64(buf: &Buf, i: usize) -> u64 {
    let i = i & BUF_MASK;
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[i..i + 8]);
    u64::from_le_bytes(b)
}

#[inline(always)]
fn hash4(w: u32, shift: u32) -> usize {
    // The mask changes nothing (`shift` is at least 32 - HASH4_BITS) but
    // lets the compiler drop the bounds checks.
    (w.wrapping_mul(0x9E37_79B1) >> shift) as usize & ((1 << HASH4_BITS) - 1)
}

#[inline(always)]
fn hash3(w: u32) -> usize {
    ((w << 8).wrapping_mul(0x9E37_79B1) >> (32 - HASH3_BITS)) as usize
}

/// Length of the common prefix of the bytes at `a` and `b` (`a < b`),
/// capped at `max`; `b + max` must not pass the end of the chunk + 1.
/// Reads up to 7 bytes beyond the cap (the buffer has slack for that).
#[inline(always)]
fn match_len(buf: &Buf, a: usize, b: usize, max: usize) -> usize {
    let mut l = 0;
    while l < max {
        let x = load64(buf, a + l) ^ load64(buf, b + l);
        if x != 0 {
            return (l + (x.trailing_zeros() / 8) as usize).min(max);
        }
        l += 8;
    }
    max
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

    /// Writes the codewords of `bytes` (`table`: codeword << 8 | length).
    /// Between bytes of the stream, flushing units two literals at a time
    /// leaves exactly the state flushing after each one would.
    #[inline(always)]
    fn put_literals(&mut self, bytes: &[u8], table: &[u32; NUM_SYMBOLS]) {
        let mut pairs = bytes.chunks_exact(2);
        for pair in &mut pairs {
            let a = table[pair[0] as usize];
            let b = table[pair[1] as usize];
            // At most 16 pending + 2 x 15 bits: fits the 64-bit buffer.
            self.buf = (self.buf << (a & 0xFF)) | u64::from(a >> 8);
            self.buf = (self.buf << (b & 0xFF)) | u64::from(b >> 8);
            self.count += (a & 0xFF) + (b & 0xFF);
            while self.count > 16 {
                self.count -= 16;
                let u = (self.buf >> self.count) as u16;
                self.store(self.slot_a, u);
                self.slot_a = self.slot_b;
                self.slot_b = self.next;
                self.next += 2;
            }
        }
        for &x in pairs.remainder() {
            let a = table[x as usize];
            self.put_bits(a >> 8, a & 0xFF);
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
