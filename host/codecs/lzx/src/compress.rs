//! LZX (WIM dialect) chunk encoder: E8 preprocessing, binary-tree match
//! finding, an iterative cost-based (near-optimal) parser aware of the three
//! repeat offsets and of gap matches (match, literal, repeat match), and
//! verbatim / aligned-offset block output.

use crate::bits::BitWriter;
use crate::e8;
use crate::huffman::{assign_codes, build_lengths, HuffScratch};
use crate::matchfinder::{common_len, BtMatchFinder, Limits, Match};
use crate::tables::*;
use wimguard_sdk::IncompressibleCheck;

/// Costs are kept in 1/16 bit so fractional estimates are possible.
const COST_SHIFT: u32 = 4;
/// A region whose bootstrap parse is estimated at this many thousandths of
/// its raw size or more is written from that parse, without cost-based
/// passes. Such regions are already compressed data that still shrinks by a
/// percent or so (gzip'd files, whose headers and code tables repeat): a
/// cost-based pass gains next to nothing there, at the price of most of the
/// encoder's time. Measured with `examples/lzx_ratio.rs` (instructions
/// counted by callgrind): /usr/share/man's gzip'd pages take 35% fewer
/// instructions for 0.046% more bytes (still 0.06% under wimlib's); its
/// docs/share/bin corpora 1.4% fewer for 0.0035% more bytes.
const NEAR_RAW_PERMILLE: u64 = 985;

/// Blocks shorter than this are not split further.
const MIN_SPLIT_BLOCK: usize = 4096;

/// Compression effort knobs.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Matches at least this long are taken without further search.
    pub nice_len: usize,
    /// Binary-tree nodes visited per position.
    pub max_depth: u32,
    /// Binary-tree nodes visited when inserting the positions inside a
    /// match of `nice_len` or more, which are skipped by the parser: they
    /// only need to become match sources, and a shallow insertion keeps most
    /// of that for a fraction of the work.
    pub skip_depth: u32,
    /// Rounds of cost-based parsing after the greedy bootstrap (none for a
    /// region the bootstrap leaves nearly raw: see `NEAR_RAW_PERMILLE`).
    pub passes: u32,
    /// Parsing region: the chunk is parsed in regions of this size (blocks
    /// never span two), each split further into blocks when separate
    /// Huffman codes are estimated to pay off.
    pub block_size: usize,
}

impl Params {
    /// Defaults for chunks (windows) of `chunk_size` bytes: [`Params::default`]
    /// up to 32 KiB (the WIM default); larger windows find many more long
    /// matches, where cutting the search at 28 bytes costs several percent
    /// of size, so they search further (about 1% larger output than wimlib
    /// there, at about its speed, on 1 MiB chunks).
    pub fn for_chunk_size(chunk_size: usize) -> Self {
        if chunk_size <= 32768 {
            Params::default()
        } else {
            Params {
                nice_len: 64,
                max_depth: 32,
                skip_depth: 16,
                ..Params::default()
            }
        }
    }
}

/// Defaults aim at wimlib's default level in CPU time on 32 KiB chunks: one
/// cost-based pass, and matches of 28 bytes or more taken as found (each
/// step up in `nice_len` costs more time than it gains). Measured with
/// `examples/lzx_ratio.rs`: about 0.6% larger output than wimlib for about the
/// same CPU time; `nice_len: 64, max_depth: 32, skip_depth: 32` is 0.3%
/// smaller and about 20% slower.
impl Default for Params {
    fn default() -> Self {
        Params {
            nice_len: 28,
            max_depth: 24,
            skip_depth: 8,
            passes: 1,
            block_size: 32768,
        }
    }
}

/// One parsed item. `len == 1` is a literal whose byte is `code`; otherwise
/// `code` is the repeat slot (0..=2) or the formatted offset (distance + 2).
#[derive(Clone, Copy, Default)]
struct Item {
    len: u32,
    code: u32,
}

/// Shortest-path nodes are kept as two parallel arrays: the best cost to
/// reach each position, and the item that got there, packed as
/// `len << CODE_BITS | code`. Among equal costs the first arrival stays,
/// which in a forward pass is the longest item. The repeat offsets after a
/// node are derived once, when it is processed.
const CODE_BITS: u32 = 22;
const INF: u32 = u32::MAX;
/// The code of a "gap match" node: an explicit match, one literal, then a
/// repeat match at the same distance (`len` is the repeat match's). No
/// real code is this large: formatted offsets stay below 2^21 + 3.
const GAP: u32 = (1 << CODE_BITS) - 1;
/// The longest stretch a parser step reaches: a gap match.
const MAX_REACH: usize = 2 * MAX_MATCH + 1;
/// Repeat-offset queues (and the explicit halves of gap matches) kept by
/// the parser: a power of two above the longest reach.
const QUEUE_RING: usize = 1024;
const _: () = assert!(QUEUE_RING > MAX_REACH && QUEUE_RING.is_power_of_two());

#[inline(always)]
fn pack(len: u32, code: u32) -> u32 {
    (len << CODE_BITS) | code
}

#[inline(always)]
fn unpack(it: u32) -> (u32, u32) {
    (it >> CODE_BITS, it & ((1 << CODE_BITS) - 1))
}

/// Bit costs used by the parser (1/16 bit units).
struct Model {
    main: [u32; MAX_MAIN_SYMS],
    len: [u32; LEN_SYMS],
    aligned: [u32; ALIGNED_SYMS],
    /// The first offset slot whose low 3 extra bits are an aligned symbol
    /// (past every slot in a verbatim block).
    aligned_from: usize,
    /// Main symbol, length symbol and the extra bits sent verbatim of a
    /// match, by slot (repeat slots first) and length:
    /// `match_cost[slot * LENS + len - MIN_MATCH]`. Made once per pass, it
    /// turns relaxing a length into one addition.
    match_cost: Vec<u32>,
}

/// Lengths per slot in [`Model::match_cost`].
const LENS: usize = MAX_MATCH - MIN_MATCH + 1;

impl Model {
    /// Cost of a match of `len` bytes whose offset (or repeat slot) is in
    /// `slot`, all but an aligned symbol: main symbol, length symbol,
    /// verbatim extra bits.
    #[inline(always)]
    fn len_cost(&self, slot: usize, len: usize) -> u32 {
        self.match_cost[slot * LENS + len - MIN_MATCH]
    }

    /// The costs of every length for slot `slot`: `[len - MIN_MATCH]`.
    #[inline(always)]
    fn lens_of(&self, slot: usize) -> &[u32] {
        &self.match_cost[slot * LENS..(slot + 1) * LENS]
    }

    /// Cost of the aligned symbol of explicit formatted offset `f` in
    /// `slot`, if it has one (the rest of its extra bits are in
    /// [`Model::match_cost`]).
    #[inline(always)]
    fn aligned_cost(&self, f: u32, slot: usize) -> u32 {
        if slot >= self.aligned_from {
            self.aligned[(f & 7) as usize]
        } else {
            0
        }
    }
}

/// Huffman codes for one block.
struct Codes {
    main_lens: [u8; MAX_MAIN_SYMS],
    main: [u32; MAX_MAIN_SYMS],
    len_lens: [u8; LEN_SYMS],
    len: [u32; LEN_SYMS],
    aligned_lens: [u8; ALIGNED_SYMS],
    aligned: [u32; ALIGNED_SYMS],
    use_aligned: bool,
}

/// Symbol counts of a parse.
#[derive(Clone)]
struct Freqs {
    main: [u32; MAX_MAIN_SYMS],
    len: [u32; LEN_SYMS],
    aligned: [u32; ALIGNED_SYMS],
    /// Verbatim offset bits outside the aligned part.
    extra: u64,
}

impl Default for Freqs {
    fn default() -> Self {
        Freqs::new()
    }
}

impl Freqs {
    fn new() -> Self {
        Freqs {
            main: [0; MAX_MAIN_SYMS],
            len: [0; LEN_SYMS],
            aligned: [0; ALIGNED_SYMS],
            extra: 0,
        }
    }

    /// Zeroes every count.
    fn clear(&mut self) {
        self.main.iter_mut().for_each(|x| *x = 0);
        self.len.iter_mut().for_each(|x| *x = 0);
        self.aligned.iter_mut().for_each(|x| *x = 0);
        self.extra = 0;
    }

    /// Counts the symbols of one item.
    #[inline(always)]
    fn count(&mut self, it: Item) {
        if it.len == 1 {
            self.main[it.code as usize] += 1;
            return;
        }
        let slot = slot_of_code(it.code);
        let hdr = (it.len as usize - MIN_MATCH).min(LEN_ESCAPE);
        self.main[NUM_CHARS + slot * NUM_LEN_HEADERS + hdr] += 1;
        if hdr == LEN_ESCAPE {
            self.len[it.len as usize - MIN_MATCH - LEN_ESCAPE] += 1;
        }
        if slot >= 3 {
            // The low 3 bits of larger offsets go to the aligned counts.
            let e = u64::from(EXTRA_BITS[slot]);
            if e >= 3 {
                self.aligned[(it.code & 7) as usize] += 1;
                self.extra += e - 3;
            } else {
                self.extra += e;
            }
        }
    }

    /// `self = a - b`, where `b` counts a part of what `a` counts.
    fn diff(&mut self, a: &Freqs, b: &Freqs) {
        for (x, (p, q)) in self.main.iter_mut().zip(a.main.iter().zip(&b.main)) {
            *x = p - q;
        }
        for (x, (p, q)) in self.len.iter_mut().zip(a.len.iter().zip(&b.len)) {
            *x = p - q;
        }
        for (x, (p, q)) in self.aligned.iter_mut().zip(a.aligned.iter().zip(&b.aligned)) {
            *x = p - q;
        }
        self.extra = a.extra - b.extra;
    }
}

/// Encoder for one window size; all buffers are reused across chunks.
pub struct Encoder {
    order: u32,
    num_main: usize,
    params: Params,
    window: Vec<u8>,
    mf: BtMatchFinder,
    cache_idx: Vec<u32>,
    cache: Vec<Match>,
    /// Position of `cache_idx[0]`.
    cache_base: usize,
    costs: Vec<u32>,
    path: Vec<u32>,
    queues: Vec<PackedQueue>,
    /// The explicit match before each gap-match node (ring like `queues`).
    gaps: Vec<u32>,
    items: Vec<Item>,
    region: Vec<Item>,
    starts: Vec<u32>,
    bounds: Vec<u32>,
    toks: Vec<(u8, u8, u8)>,
    huff: HuffScratch,
    precheck: IncompressibleCheck,
    /// Symbol counts of the current region's items: the bootstrap parse's,
    /// then the final cost-based pass's.
    whole: Box<Freqs>,
    prev_main: [u8; MAX_MAIN_SYMS],
    prev_len: [u8; LEN_SYMS],
    model: Box<Model>,
    codes: Box<Codes>,
    freqs: Box<Freqs>,
}

/// Applies a match with distance `dist` to the repeat queue and returns its
/// item code (repeat slot or formatted offset), mirroring the decoder.
#[inline(always)]
fn queue_code(q: &mut [u32; 3], dist: u32) -> u32 {
    if dist == q[0] {
        0
    } else if dist == q[1] {
        q.swap(0, 1);
        1
    } else if dist == q[2] {
        q.swap(0, 2);
        2
    } else {
        *q = [dist, q[0], q[1]];
        dist + 2
    }
}

#[inline(always)]
fn slot_of_code(code: u32) -> usize {
    if code < 3 {
        code as usize
    } else {
        slot_of(code)
    }
}

#[inline(always)]
fn relax(cost: &mut u32, item: &mut u32, c: u32, len: u32, code: u32) {
    if c < *cost {
        *cost = c;
        *item = pack(len, code);
    }
}

/// Relaxation of one run: `cost[j] = min(cost[j], c0 + add[j])`, recording
/// `it + j` lengths as the item where it improves. (A branch-free,
/// vectorized form measured slower: most runs are short.)
#[inline(always)]
fn relax_slice(cost: &mut [u32], item: &mut [u32], add: &[u32], c0: u32, it: u32) {
    let n = add.len();
    let (cost, item) = (&mut cost[..n], &mut item[..n]);
    for j in 0..n {
        let v = c0 + add[j];
        if v < cost[j] {
            cost[j] = v;
            item[j] = it + ((j as u32) << CODE_BITS);
        }
    }
}

/// Relaxes lengths `lo..=hi` (2 <= lo, hi <= cost.len()) of one match:
/// `c0` is the cost up to it plus any aligned symbol, `lens[l - MIN_MATCH]`
/// the rest of the match's cost at length `l` ([`Model::lens_of`]), and
/// `cost[l - 1]`/`item[l - 1]` the node `l` bytes ahead.
#[inline(always)]
fn relax_run(cost: &mut [u32], item: &mut [u32], lo: usize, hi: usize, c0: u32, lens: &[u32], code: u32) {
    relax_slice(
        &mut cost[lo - 1..hi],
        &mut item[lo - 1..hi],
        &lens[lo - MIN_MATCH..hi + 1 - MIN_MATCH],
        c0,
        pack(lo as u32, code),
    );
}

/// The parser's step at a node with a match of `nice` bytes or more: the
/// longer of the repeat match (`rep`: slot, length) and the longest explicit
/// match (`longest` bytes, `last`) is taken as is. Returns the bytes it
/// covers. Out of line: rare, and the main loop keeps its registers.
#[cold]
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn take_long(
    m: &Model,
    pq: PackedQueue,
    wc: &mut [u32],
    wi: &mut [u32],
    c0: u32,
    rep: (usize, usize),
    longest: usize,
    last: Option<Match>,
) -> usize {
    let (best_r, best_rl) = rep;
    match last {
        Some(mt) if longest > best_rl => {
            let mut nq = [pq.get(0), pq.get(1), pq.get(2)];
            let code = queue_code(&mut nq, mt.dist());
            let slot = slot_of_code(code);
            let c = m.len_cost(slot, longest) + m.aligned_cost(code, slot);
            relax(&mut wc[longest - 1], &mut wi[longest - 1], c0 + c, longest as u32, code);
            longest
        }
        _ => {
            let c = m.len_cost(best_r, best_rl);
            relax(
                &mut wc[best_rl - 1],
                &mut wi[best_rl - 1],
                c0 + c,
                best_rl as u32,
                best_r as u32,
            );
            best_rl
        }
    }
}

/// Repeat offsets after item (`len`, `code`) given those before it.
#[inline(always)]
fn next_queue(mut q: [u32; 3], len: u32, code: u32) -> [u32; 3] {
    if len >= 2 {
        if code < 3 {
            q.swap(0, code as usize);
        } else {
            q = [code - 2, q[0], q[1]];
        }
    }
    q
}

/// The three repeat offsets packed in one word, 21 bits each (the largest
/// LZX window is 2 MiB), R0 lowest. The parser rebuilds a queue at every
/// node; as an array of three, swapped at a variable index, it went through
/// memory there: packed, the encoder takes 2% less CPU time (lzx_ratio's
/// corpora, byte-identical output).
#[derive(Clone, Copy)]
struct PackedQueue(u64);

const Q_BITS: u32 = 21;
const Q_MASK: u64 = (1 << Q_BITS) - 1;

impl PackedQueue {
    #[inline(always)]
    fn new(q: [u32; 3]) -> Self {
        PackedQueue(u64::from(q[0]) | u64::from(q[1]) << Q_BITS | u64::from(q[2]) << (2 * Q_BITS))
    }
    #[inline(always)]
    fn get(self, r: usize) -> u32 {
        ((self.0 >> (Q_BITS as usize * r)) & Q_MASK) as u32
    }
    /// The queue after item (`len`, `code`), as [`next_queue`].
    #[inline(always)]
    fn next(self, len: u32, code: u32) -> Self {
        let q = self.0;
        if len < 2 {
            self
        } else if code >= 3 {
            debug_assert!(u64::from(code - 2) <= Q_MASK);
            PackedQueue(((q << Q_BITS) | u64::from(code - 2)) & ((1 << (3 * Q_BITS)) - 1))
        } else {
            // Swap R0 with R`code` (a no-op for 0).
            let sh = Q_BITS * code;
            let x = (q ^ (q >> sh)) & Q_MASK;
            PackedQueue(q ^ x ^ (x << sh))
        }
    }
}

impl Encoder {
    /// An encoder for a window of `1 << order` bytes.
    pub fn new(order: u32, params: Params) -> Self {
        let order = order.clamp(MIN_WINDOW_ORDER, MAX_WINDOW_ORDER);
        Encoder {
            order,
            num_main: num_main_syms(order),
            params,
            window: Vec::new(),
            mf: BtMatchFinder::default(),
            cache_idx: Vec::new(),
            cache: Vec::new(),
            cache_base: 0,
            costs: Vec::new(),
            path: Vec::new(),
            queues: Vec::new(),
            gaps: Vec::new(),
            items: Vec::new(),
            region: Vec::new(),
            starts: Vec::new(),
            bounds: Vec::new(),
            toks: Vec::new(),
            huff: HuffScratch::default(),
            precheck: IncompressibleCheck::default(),
            whole: Box::default(),
            prev_main: [0; MAX_MAIN_SYMS],
            prev_len: [0; LEN_SYMS],
            model: Box::new(Model {
                main: [0; MAX_MAIN_SYMS],
                len: [0; LEN_SYMS],
                aligned: [0; ALIGNED_SYMS],
                aligned_from: MAX_SLOTS,
                match_cost: Vec::new(),
            }),
            codes: Box::new(Codes {
                main_lens: [0; MAX_MAIN_SYMS],
                main: [0; MAX_MAIN_SYMS],
                len_lens: [0; LEN_SYMS],
                len: [0; LEN_SYMS],
                aligned_lens: [0; ALIGNED_SYMS],
                aligned: [0; ALIGNED_SYMS],
                use_aligned: false,
            }),
            freqs: Box::new(Freqs::new()),
        }
    }

    /// Compresses one chunk; `false` means "store it raw".
    pub fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        let n = input.len();
        if n < 64 || n > 1usize << self.order {
            return false;
        }
        // Already compressed data: the match finder would cost the most
        // there, for nothing.
        if self.precheck.is_incompressible(input) {
            return false;
        }
        let mut data = std::mem::take(&mut self.window);
        data.clear();
        data.extend_from_slice(input);
        e8::apply(&mut data);
        let ok = self.compress_prepared(&data, out);
        self.window = data;
        ok
    }

    fn compress_prepared(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        let n = data.len();
        self.mf.reset(n);
        self.prev_main.iter_mut().for_each(|l| *l = 0);
        self.prev_len.iter_mut().for_each(|l| *l = 0);
        let mut q = [1u32; 3];
        let mut w = BitWriter::new(out);
        let bsize = self.params.block_size.max(1);
        let mut bs = 0;
        while bs < n {
            let be = (bs + bsize).min(n);
            self.find_matches(data, bs, be);
            self.greedy(data, bs, be, q);
            let mut whole = std::mem::take(&mut self.whole);
            whole.clone_from(&self.freqs);
            // The bootstrap's codes: the first pass's costs, and its size.
            let boot = self.make_codes_estimated();
            if bs == 0 && be == n && boot / 8 >= n as u64 {
                // The bootstrap parse does not fit in the raw size (already
                // compressed data, typically): a cost-based parse would at
                // best land barely under it. Store raw and skip that work
                // (measured: 22 bytes more on 8 MiB of /usr/share/doc,
                // about 15% less CPU time there).
                self.whole = whole;
                return false;
            }
            let mut wb = boot;
            let near_raw = boot * 1000 >= NEAR_RAW_PERMILLE * 8 * (be - bs) as u64;
            if self.params.passes > 0 && !near_raw {
                for pass in 0..self.params.passes {
                    if pass > 0 {
                        // The last pass counted its items.
                        self.make_codes();
                    }
                    self.make_model();
                    self.optimal(data, bs, be, q);
                }
                whole.clone_from(&self.freqs);
                wb = self.make_codes_estimated();
            }
            // `self.codes` are now those of the whole region's items.
            q = self.write_region(&mut w, data, bs, be, q, &whole, wb);
            self.whole = whole;
            if w.len() >= n {
                return false;
            }
            bs = be;
        }
        w.finish();
        out.len() < n
    }

    /// Runs the match finder over `bs..be`, caching every position's matches.
    #[inline(never)]
    fn find_matches(&mut self, data: &[u8], bs: usize, be: usize) {
        let n = data.len();
        let lim = Limits {
            nice_len: self.params.nice_len.clamp(3, MAX_MATCH),
            max_depth: self.params.max_depth.max(1),
            max_dist: (1usize << self.order) - 3,
        };
        let skim = Limits {
            max_depth: self.params.skip_depth.max(1),
            ..lim
        };
        self.cache.clear();
        self.cache_idx.clear();
        self.cache_base = bs;
        self.cache_idx.push(0);
        let mut i = bs;
        while i < be {
            let max_len = MAX_MATCH.min(n - i);
            let best = self.mf.advance::<true>(data, i, max_len, &lim, &mut self.cache);
            self.cache_idx.push(self.cache.len() as u32);
            i += 1;
            if best >= lim.nice_len {
                // Inside a long match: keep the tree up to date (these
                // positions are good match sources later) but record nothing.
                // Comparing past `nice_len` would only order the tree by
                // bytes no search looks at; on runs of one byte (sparse
                // files, zeroed pages) it made each position compare 257.
                let stop = (i - 1 + best).min(be);
                while i < stop {
                    let max_len = skim.nice_len.min(n - i);
                    self.mf.advance::<false>(data, i, max_len, &skim, &mut self.cache);
                    self.cache_idx.push(self.cache.len() as u32);
                    i += 1;
                }
            }
        }
    }

    #[inline(always)]
    fn matches_at(&self, i: usize) -> &[Match] {
        let k = i - self.cache_base;
        &self.cache[self.cache_idx[k] as usize..self.cache_idx[k + 1] as usize]
    }

    /// Bootstrap parse: longest match (repeat offsets preferred), for the
    /// first symbol statistics (counted into `self.freqs` as it goes).
    #[inline(never)]
    fn greedy(&mut self, data: &[u8], bs: usize, be: usize, q0: [u32; 3]) {
        self.items.clear();
        self.freqs.clear();
        let mut q = q0;
        let mut i = bs;
        while i < be {
            let maxl = MAX_MATCH.min(be - i);
            let (mut best_len, mut best_dist) = (0usize, 0u32);
            if maxl >= 2 {
                let cur = &data[i..i + maxl];
                let head = u16::from_le_bytes([cur[0], cur[1]]);
                for &d in q.iter() {
                    let du = d as usize;
                    if du <= i {
                        let src = &data[i - du..i - du + maxl];
                        // Shorter than 2 is no repeat match.
                        if u16::from_le_bytes([src[0], src[1]]) == head {
                            let l = common_len(src, cur, 2);
                            if l > best_len {
                                best_len = l;
                                best_dist = d;
                            }
                        }
                    }
                }
            }
            if let Some(m) = self.matches_at(i).last() {
                let l = m.len().min(maxl);
                if l >= 3 && l > best_len + 1 {
                    best_len = l;
                    best_dist = m.dist();
                }
            }
            if best_len >= 2 {
                let code = queue_code(&mut q, best_dist);
                let it = Item {
                    len: best_len as u32,
                    code,
                };
                self.items.push(it);
                self.freqs.count(it);
                i += best_len;
            } else {
                let it = Item {
                    len: 1,
                    code: u32::from(data[i]),
                };
                self.items.push(it);
                self.freqs.count(it);
                i += 1;
            }
        }
    }

    /// Counts the symbols used by `self.items`.
    fn tally(&mut self) {
        tally_items(&self.items, &mut self.freqs);
    }

    /// Splits the parsed region `bs..be` (items in `self.items`, repeat
    /// offsets `q0` at its start, symbol counts `whole` and estimated size
    /// `wb`) into blocks where separate Huffman codes are estimated to pay
    /// for their headers, and writes them, each with codes built from its own
    /// items. Returns the repeat offsets after the region.
    ///
    /// Re-parsing each block with its own statistics was measured: it costs
    /// a second parse of split regions, and parsing blocks from their share of
    /// the bootstrap statistics instead comes out larger than this.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn write_region(
        &mut self,
        w: &mut BitWriter,
        data: &[u8],
        bs: usize,
        be: usize,
        q0: [u32; 3],
        whole: &Freqs,
        wb: u64,
    ) -> [u32; 3] {
        let mut bounds = std::mem::take(&mut self.bounds);
        bounds.clear();
        if be - bs >= 2 * MIN_SPLIT_BLOCK {
            let mut starts = std::mem::take(&mut self.starts);
            starts.clear();
            let mut p = bs;
            for it in &self.items {
                starts.push(p as u32);
                p += it.len as usize;
            }
            let all = std::mem::take(&mut self.items);
            self.choose_splits(&all, &starts, bs, be, whole, wb, &mut bounds);
            self.items = all;
            self.starts = starts;
        }
        if bounds.is_empty() {
            // One block: its codes are the region's, made by the caller.
            self.write_block(w, be - bs);
            self.bounds = bounds;
            return end_queue(q0, &self.items);
        }
        bounds.push(be as u32);

        // Items with distances instead of queue-relative codes, so blocks
        // can be cut out and re-coded.
        let mut parsed = std::mem::take(&mut self.region);
        parsed.clear();
        let mut q = q0;
        for it in &self.items {
            let d = if it.len == 1 {
                it.code
            } else if it.code < 3 {
                q[it.code as usize]
            } else {
                it.code - 2
            };
            q = next_queue(q, it.len, it.code);
            parsed.push(Item { len: it.len, code: d });
        }
        let mut q = q0;
        let mut s = bs;
        let mut p = bs;
        let mut idx = 0;
        for &e in &bounds {
            let e = e as usize;
            // An item crossing the boundary is cut in two.
            self.items.clear();
            while idx < parsed.len() {
                let it = parsed[idx];
                let a = p.max(s);
                let b = (p + it.len as usize).min(e);
                if b > a {
                    if it.len == 1 || b - a == 1 {
                        self.items.push(Item {
                            len: 1,
                            code: u32::from(data[a]),
                        });
                    } else {
                        let code = queue_code(&mut q, it.code);
                        self.items.push(Item {
                            len: (b - a) as u32,
                            code,
                        });
                    }
                }
                if p + it.len as usize <= e {
                    p += it.len as usize;
                    idx += 1;
                } else {
                    break;
                }
            }
            self.tally();
            self.make_codes();
            self.write_block(w, e - s);
            s = e;
        }
        self.region = parsed;
        self.bounds = bounds;
        q
    }

    /// Recursively halves `s..e` (symbol counts `whole`, estimated size
    /// `whole_bits`) while two blocks are estimated cheaper than one,
    /// appending interior block ends to `bounds` in order. Only the left
    /// half is counted; the right half's counts are the difference.
    #[allow(clippy::too_many_arguments)]
    fn choose_splits(
        &mut self,
        items: &[Item],
        starts: &[u32],
        s: usize,
        e: usize,
        whole: &Freqs,
        whole_bits: u64,
        bounds: &mut Vec<u32>,
    ) {
        if e - s < 2 * MIN_SPLIT_BLOCK {
            return;
        }
        let mid = s + (e - s) / 2;
        let at = |pos: usize| starts.partition_point(|&p| (p as usize) < pos);
        let (i0, im) = (at(s), at(mid));
        let mut left = Freqs::new();
        tally_items(&items[i0..im], &mut left);
        let mut right = Freqs::new();
        right.diff(whole, &left);
        let lb = self.estimate(&left);
        let rb = self.estimate(&right);
        if lb + rb < whole_bits {
            self.choose_splits(items, starts, s, mid, &left, lb, bounds);
            bounds.push(mid as u32);
            self.choose_splits(items, starts, mid, e, &right, rb, bounds);
        }
    }

    /// Estimated size in bits of a block with these symbol counts and its
    /// own codes.
    fn estimate(&mut self, f: &Freqs) -> u64 {
        let nm = self.num_main;
        let mut lens = [0u8; MAX_MAIN_SYMS];
        let mut llens = [0u8; LEN_SYMS];
        let mut alens = [0u8; ALIGNED_SYMS];
        build_lengths(&f.main[..nm], MAX_MAIN_LEN, &mut lens[..nm], &mut self.huff);
        build_lengths(&f.len, MAX_LENTREE_LEN, &mut llens, &mut self.huff);
        build_lengths(&f.aligned, MAX_ALIGNED_LEN, &mut alens, &mut self.huff);
        bits_with(f, &lens[..nm], &llens, &alens, &mut self.toks, &mut self.huff)
    }

    /// [`Encoder::make_codes`] for `self.freqs`, returning what
    /// [`Encoder::estimate`] would for them without building the lengths
    /// twice (the bootstrap and the final parse need both).
    fn make_codes_estimated(&mut self) -> u64 {
        self.make_codes();
        let nm = self.num_main;
        let c = &*self.codes;
        bits_with(
            &self.freqs,
            &c.main_lens[..nm],
            &c.len_lens,
            &c.aligned_lens,
            &mut self.toks,
            &mut self.huff,
        )
    }

    /// Builds the block's codes from the counts and picks verbatim or
    /// aligned by which needs fewer extra-bit bits.
    fn make_codes(&mut self) {
        let nm = self.num_main;
        let c = &mut *self.codes;
        let f = &*self.freqs;
        build_lengths(&f.main[..nm], MAX_MAIN_LEN, &mut c.main_lens[..nm], &mut self.huff);
        build_lengths(&f.len, MAX_LENTREE_LEN, &mut c.len_lens, &mut self.huff);
        build_lengths(&f.aligned, MAX_ALIGNED_LEN, &mut c.aligned_lens, &mut self.huff);
        // Extra bits: verbatim spends 3 raw bits where aligned spends a code.
        let mut verbatim: u64 = 0;
        let mut aligned: u64 = 3 * ALIGNED_SYMS as u64;
        for (s, &cnt) in f.aligned.iter().enumerate() {
            verbatim += 3 * u64::from(cnt);
            aligned += u64::from(c.aligned_lens[s]) * u64::from(cnt);
        }
        c.use_aligned = aligned < verbatim;
        assign_codes(&c.main_lens[..nm], &mut c.main[..nm]);
        assign_codes(&c.len_lens, &mut c.len);
        assign_codes(&c.aligned_lens, &mut c.aligned);
    }

    /// Turns the current codes into parser costs.
    fn make_model(&mut self) {
        let c = &*self.codes;
        let m = &mut *self.model;
        let nm = self.num_main;
        let cost = |l: u8, unused: u32| -> u32 {
            if l == 0 {
                unused << COST_SHIFT
            } else {
                u32::from(l) << COST_SHIFT
            }
        };
        for s in 0..nm {
            m.main[s] = cost(c.main_lens[s], 15);
        }
        for s in 0..LEN_SYMS {
            m.len[s] = cost(c.len_lens[s], 14);
        }
        for s in 0..ALIGNED_SYMS {
            m.aligned[s] = cost(c.aligned_lens[s], 6);
        }
        m.aligned_from = if c.use_aligned {
            EXTRA_BITS.iter().position(|&e| e >= 3).unwrap_or(MAX_SLOTS)
        } else {
            MAX_SLOTS
        };
        let slots = (nm - NUM_CHARS) / NUM_LEN_HEADERS;
        m.match_cost.resize(slots * LENS, 0);
        for (slot, row) in m.match_cost.chunks_exact_mut(LENS).enumerate() {
            let e = u32::from(EXTRA_BITS[slot]);
            let verbatim = if slot >= m.aligned_from { e - 3 } else { e } << COST_SHIFT;
            let hdr = &m.main[NUM_CHARS + slot * NUM_LEN_HEADERS..NUM_CHARS + (slot + 1) * NUM_LEN_HEADERS];
            for (r, &h) in row[..LEN_ESCAPE].iter_mut().zip(hdr) {
                *r = h + verbatim;
            }
            for (r, &l) in row[LEN_ESCAPE..].iter_mut().zip(m.len.iter()) {
                *r = hdr[LEN_ESCAPE] + l + verbatim;
            }
        }
    }

    /// Cost-based parse of `bs..be` (repeat offsets `q0` at its start) into
    /// `self.items` by a forward shortest-path pass; each node carries the
    /// repeat offsets of its best path.
    #[inline(never)]
    fn optimal(&mut self, data: &[u8], bs: usize, be: usize, q0: [u32; 3]) {
        let blen = be - bs;
        let nice = self.params.nice_len.clamp(3, MAX_MATCH);
        let mut costs = std::mem::take(&mut self.costs);
        let mut path = std::mem::take(&mut self.path);
        costs.clear();
        costs.resize(blen + 1, INF);
        costs[0] = 0;
        path.clear();
        path.resize(blen + 1, 0);
        // The repeat offsets after each node, kept only as far back as a
        // step reaches, a gap match the farthest (a small ring stays in L1;
        // one per node did not).
        let mut queues = std::mem::take(&mut self.queues);
        queues.clear();
        queues.resize(QUEUE_RING, PackedQueue::new(q0));
        let mut gaps = std::mem::take(&mut self.gaps);
        gaps.clear();
        gaps.resize(QUEUE_RING, 0);
        let m = &*self.model;
        let mut i = bs;
        while i < be {
            let k = i - bs;
            let c0 = costs[k];
            let pq = if k == 0 {
                PackedQueue::new(q0)
            } else {
                let (il, ic) = unpack(path[k]);
                if ic == GAP {
                    let before = gaps[k & (QUEUE_RING - 1)];
                    let (bl, bf) = unpack(before);
                    // The walk back finds the explicit half in the cost of
                    // the node before, which nothing reads any more. The
                    // literal and the repeat match leave the queue as the
                    // explicit match set it.
                    costs[k - 1] = before;
                    queues[(k - il as usize - 1 - bl as usize) & (QUEUE_RING - 1)].next(bl, bf)
                } else {
                    queues[(k - il as usize) & (QUEUE_RING - 1)].next(il, ic)
                }
            };
            queues[k & (QUEUE_RING - 1)] = pq;
            let maxl = MAX_MATCH.min(be - i);
            // `win[l - 1]` is the node `l` bytes ahead.
            let wc = &mut costs[k + 1..k + 1 + maxl];
            let wi = &mut path[k + 1..k + 1 + maxl];
            let ms = self.matches_at(i);

            // The longest repeat match. (A repeated offset, as in the
            // queue a chunk starts with, measures the same length again and
            // loses the tie.)
            let (mut best_r, mut best_rl) = (0usize, 0usize);
            if maxl >= 2 {
                let cur = &data[i..i + maxl];
                let head = u16::from_le_bytes([cur[0], cur[1]]);
                for r in 0..3 {
                    let d = pq.get(r) as usize;
                    if d > i {
                        continue;
                    }
                    let src = &data[i - d..i - d + maxl];
                    if u16::from_le_bytes([src[0], src[1]]) == head {
                        let l = common_len(src, cur, 2);
                        if l > best_rl {
                            best_r = r;
                            best_rl = l;
                        }
                    }
                }
            }
            let longest = ms.last().map_or(0, |x| x.len().min(maxl));

            // A very long match is taken as is: cheap, and nearly always right.
            if best_rl >= nice || longest >= nice {
                i += take_long(m, pq, wc, wi, c0, (best_r, best_rl), longest, ms.last().copied());
                continue;
            }

            // Literal. It wins a tie with a match ending here (as in
            // wimlib): a literal leaves the repeat offsets as they were,
            // which later matches can use. Measured with lzx_ratio: 0.013%
            // smaller on its corpora, 0.07% on tab-separated tables.
            let lit = u32::from(data[i]);
            let c = c0 + m.main[lit as usize];
            if c <= wc[0] {
                wc[0] = c;
                wi[0] = pack(1, lit);
            }

            // The longest repeat match, every length. Shorter repeat matches
            // at other slots rarely win (relaxing each slot's own lengths
            // saved 240 bytes of 29 MB), and checking them costs time.
            if best_rl >= 2 {
                relax_run(wc, wi, 2, best_rl, c0, m.lens_of(best_r), best_r as u32);
            }

            // Explicit matches: each length uses the nearest match reaching it;
            // lengths a repeat match covers are left to it (cheaper, nearly
            // always).
            let mut prev = best_rl.max(1);
            // The longest explicit match, when it was relaxed: (length,
            // formatted offset, slot, cost before its length).
            let mut longest_explicit = None;
            for mt in ms {
                longest_explicit = None;
                // A match at a repeat offset is never longer than that
                // repeat match (`prev`), so it is skipped here.
                let d = mt.dist();
                let top = mt.len().min(maxl);
                if top <= prev {
                    continue;
                }
                let f = d + 2;
                let slot = slot_of(f);
                let oc = c0 + m.aligned_cost(f, slot);
                relax_run(wc, wi, prev + 1, top, oc, m.lens_of(slot), f);
                prev = top;
                longest_explicit = Some((top, f, slot, oc));
            }

            // A gap match: the longest explicit match, the byte where it
            // broke off as a literal, and the same distance again as a
            // repeat match (a one-byte difference in otherwise repeated
            // data, common in tables and binaries). Looking one item ahead
            // the parser would not see that the repeat match pays for the
            // explicit offset.
            if let Some((len, f, slot, oc)) = longest_explicit {
                let p = i + len + 1;
                if p + 2 <= be {
                    let d = (f - 2) as usize;
                    let limit = (be - p).min(MAX_MATCH);
                    let (src, cur) = (&data[p - d..p - d + limit], &data[p..p + limit]);
                    if u16::from_le_bytes([src[0], src[1]]) == u16::from_le_bytes([cur[0], cur[1]]) {
                        let r = common_len(src, cur, 2);
                        let c = oc + m.len_cost(slot, len) + m.main[usize::from(data[p - 1])] + m.len_cost(0, r);
                        let t = k + len + 1 + r;
                        if c < costs[t] {
                            costs[t] = c;
                            path[t] = pack(r as u32, GAP);
                            gaps[t & (QUEUE_RING - 1)] = pack(len as u32, f);
                        }
                    }
                }
            }
            i += 1;
        }
        // The last node is never processed: keep its explicit half as above.
        if blen > 0 && unpack(path[blen]).1 == GAP {
            costs[blen - 1] = gaps[blen & (QUEUE_RING - 1)];
        }

        // Walk back along the best path (counting the items' symbols into
        // `self.freqs`: the next pass's costs and the block's codes).
        self.items.clear();
        self.freqs.clear();
        let mut j = blen;
        while j > 0 {
            let (len, code) = unpack(path[j]);
            if code == GAP {
                // Pushed in reverse: the repeat match, the literal, the explicit match.
                let (bl, bf) = unpack(costs[j - 1]);
                let lit = j - len as usize - 1;
                for it in [
                    Item { len, code: 0 },
                    Item {
                        len: 1,
                        code: u32::from(data[bs + lit]),
                    },
                    Item { len: bl, code: bf },
                ] {
                    self.items.push(it);
                    self.freqs.count(it);
                }
                j = lit - bl as usize;
                continue;
            }
            let it = Item { len, code };
            self.items.push(it);
            self.freqs.count(it);
            j -= len as usize;
        }
        self.items.reverse();
        self.costs = costs;
        self.path = path;
        self.queues = queues;
        self.gaps = gaps;
    }

    /// Emits one block: header, code lengths, items.
    fn write_block(&mut self, w: &mut BitWriter, size: usize) {
        let nm = self.num_main;
        let c = &*self.codes;
        w.put(if c.use_aligned { 2 } else { 1 }, 3);
        if size == DEFAULT_BLOCK_SIZE {
            w.put(1, 1);
        } else {
            w.put(0, 1);
            if self.order >= 16 {
                w.put((size >> 8) as u32, 16);
                w.put((size & 0xff) as u32, 8);
            } else {
                w.put(size as u32, 16);
            }
        }
        if c.use_aligned {
            for &l in &c.aligned_lens {
                w.put(u32::from(l), 3);
            }
        }
        write_lens(
            w,
            &self.prev_main[..NUM_CHARS],
            &c.main_lens[..NUM_CHARS],
            &mut self.toks,
            &mut self.huff,
        );
        write_lens(
            w,
            &self.prev_main[NUM_CHARS..nm],
            &c.main_lens[NUM_CHARS..nm],
            &mut self.toks,
            &mut self.huff,
        );
        write_lens(w, &self.prev_len, &c.len_lens, &mut self.toks, &mut self.huff);
        self.prev_main[..nm].copy_from_slice(&c.main_lens[..nm]);
        self.prev_len.copy_from_slice(&c.len_lens);

        for it in &self.items {
            if it.len == 1 {
                let s = it.code as usize;
                w.put(c.main[s], u32::from(c.main_lens[s]));
                continue;
            }
            let slot = slot_of_code(it.code);
            let hdr = (it.len as usize - MIN_MATCH).min(LEN_ESCAPE);
            let s = NUM_CHARS + slot * NUM_LEN_HEADERS + hdr;
            w.put(c.main[s], u32::from(c.main_lens[s]));
            if hdr == LEN_ESCAPE {
                let ls = it.len as usize - MIN_MATCH - LEN_ESCAPE;
                w.put(c.len[ls], u32::from(c.len_lens[ls]));
            }
            if slot >= 3 {
                let e = u32::from(EXTRA_BITS[slot]);
                let v = it.code - SLOT_BASE[slot];
                if c.use_aligned && e >= 3 {
                    w.put(v >> 3, e - 3);
                    let a = (v & 7) as usize;
                    w.put(c.aligned[a], u32::from(c.aligned_lens[a]));
                } else {
                    w.put(v, e);
                }
            }
        }
    }
}

/// Size in bits of a block with counts `f` coded with these lengths,
/// headers included.
fn bits_with(
    f: &Freqs,
    lens: &[u8],
    llens: &[u8; LEN_SYMS],
    alens: &[u8; ALIGNED_SYMS],
    toks: &mut Vec<(u8, u8, u8)>,
    huff: &mut HuffScratch,
) -> u64 {
    let nm = lens.len();
    let mut bits: u64 = 20 + f.extra;
    for s in 0..nm {
        bits += u64::from(f.main[s]) * u64::from(lens[s]);
    }
    for s in 0..LEN_SYMS {
        bits += u64::from(f.len[s]) * u64::from(llens[s]);
    }
    let (mut verbatim, mut aligned) = (0u64, 24u64);
    for s in 0..ALIGNED_SYMS {
        verbatim += 3 * u64::from(f.aligned[s]);
        aligned += u64::from(f.aligned[s]) * u64::from(alens[s]);
    }
    bits += verbatim.min(aligned);
    let zeros = [0u8; MAX_MAIN_SYMS];
    bits += lens_cost(&zeros[..NUM_CHARS], &lens[..NUM_CHARS], toks, huff);
    bits += lens_cost(&zeros[NUM_CHARS..nm], &lens[NUM_CHARS..nm], toks, huff);
    bits += lens_cost(&zeros[..LEN_SYMS], llens, toks, huff);
    bits
}

/// Repeat offsets after `items`, given those before them.
fn end_queue(mut q: [u32; 3], items: &[Item]) -> [u32; 3] {
    for it in items {
        q = next_queue(q, it.len, it.code);
    }
    q
}

/// Counts the symbols `items` use.
fn tally_items(items: &[Item], f: &mut Freqs) {
    f.clear();
    for &it in items {
        f.count(it);
    }
}

/// Tokenizes new code lengths as pretree symbols: deltas from `prev`, runs
/// of zeros (17, 18) and runs of equal values (19). Each token is (symbol,
/// extra value, extra bit count). Returns the pretree symbol counts.
fn tokenize(prev: &[u8], new: &[u8], toks: &mut Vec<(u8, u8, u8)>) -> [u32; PRE_SYMS] {
    toks.clear();
    let n = new.len();
    let delta = |i: usize, v: u8| ((u32::from(prev[i]) + 17 - u32::from(v)) % 17) as u8;
    let mut i = 0;
    while i < n {
        let v = new[i];
        let mut run = 1;
        while i + run < n && new[i + run] == v {
            run += 1;
        }
        if v == 0 && run >= 4 {
            while run >= 20 {
                let t = run.min(51);
                toks.push((18, (t - 20) as u8, 5));
                run -= t;
                i += t;
            }
            if run >= 4 {
                let t = run.min(19);
                toks.push((17, (t - 4) as u8, 4));
                i += t;
            }
            continue;
        }
        if run >= 4 {
            let t = if run == 8 || run == 9 { 4 } else { run.min(5) };
            toks.push((19, (t - 4) as u8, 1));
            toks.push((delta(i, v), 0, 0));
            i += t;
            continue;
        }
        toks.push((delta(i, v), 0, 0));
        i += 1;
    }
    let mut freq = [0u32; PRE_SYMS];
    for t in toks.iter() {
        freq[t.0 as usize] += 1;
    }
    freq
}

/// Size in bits of one pretree pass for these lengths.
fn lens_cost(prev: &[u8], new: &[u8], toks: &mut Vec<(u8, u8, u8)>, huff: &mut HuffScratch) -> u64 {
    let freq = tokenize(prev, new, toks);
    let mut lens = [0u8; PRE_SYMS];
    build_lengths(&freq, MAX_PRE_LEN, &mut lens, huff);
    let mut bits = 4 * PRE_SYMS as u64;
    for &(s, _, nb) in toks.iter() {
        bits += u64::from(lens[s as usize]) + u64::from(nb);
    }
    bits
}

/// Writes one pretree pass: the pretree lengths, then the tokens.
fn write_lens(w: &mut BitWriter, prev: &[u8], new: &[u8], toks: &mut Vec<(u8, u8, u8)>, huff: &mut HuffScratch) {
    let freq = tokenize(prev, new, toks);
    let mut lens = [0u8; PRE_SYMS];
    let mut codes = [0u32; PRE_SYMS];
    build_lengths(&freq, MAX_PRE_LEN, &mut lens, huff);
    assign_codes(&lens, &mut codes);
    for &l in &lens {
        w.put(u32::from(l), 4);
    }
    for &(s, x, nb) in toks.iter() {
        w.put(codes[s as usize], u32::from(lens[s as usize]));
        if nb > 0 {
            w.put(u32::from(x), u32::from(nb));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed queue follows the array form through every kind of item
    /// (literal, each repeat slot, explicit offsets up to the largest
    /// window's), so the parser sees the decoder's repeat offsets.
    #[test]
    fn packed_queue_matches_the_array_queue() {
        let mut q = [1u32, 1, 1];
        let mut pq = PackedQueue::new(q);
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for step in 0..100_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Distances 1 and 2 (codes 3 and 4), the most common in real
            // data, come in fixed steps: the random ones almost never hit them.
            let kind = if step % 7 == 0 {
                6 + u64::from(step / 7 % 2)
            } else {
                x % 6
            };
            let (len, code) = match kind {
                6 => (3, 3),
                7 => (4, 4),
                0 => (1, (x >> 8) as u32 & 0xFF),
                1..=3 => (2 + (x >> 8) as u32 % 256, (x % 6) as u32 - 1),
                // Formatted offsets: distance + 2, with distances up to
                // the largest window's 2^21 - 3.
                4 => (3, 3 + (x >> 20) as u32 % ((1 << 21) - 3)),
                _ => (2 + step % 3, 2 + (1 << 21) - 3 - step % 4),
            };
            q = next_queue(q, len, code);
            pq = pq.next(len, code);
            assert_eq!(
                [pq.get(0), pq.get(1), pq.get(2)],
                q,
                "after step {step}: ({len}, {code})"
            );
        }
    }
}
