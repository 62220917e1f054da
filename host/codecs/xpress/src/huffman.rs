//! Canonical Huffman codes: building length-limited codes for the encoder and
//! table-driven decoding for the decoder (format §10.2).

use wimguard_sdk::CodecError;

/// Number of symbols in the XPRESS alphabet: 256 literals + 256 match headers.
pub(crate) const NUM_SYMBOLS: usize = 512;
/// Longest codeword the format allows (code lengths are stored in nibbles).
pub(crate) const MAX_CODEWORD_LEN: usize = 15;

// ---------------------------------------------------------------------------
// Encoder side
// ---------------------------------------------------------------------------

/// Scratch space for building Huffman codes, reused across chunks so the
/// compressor does not allocate per chunk.
pub(crate) struct CodeBuilder {
    /// Used symbols packed as `freq << 10 | symbol`, sorted ascending.
    leaves: Vec<u64>,
    /// Weights of the internal nodes, created in non-decreasing order.
    node_weight: Vec<u64>,
    /// Parent (internal node index) of each leaf, in `leaves` order.
    leaf_parent: Vec<u32>,
    /// Parent of each internal node; reused to hold node depths afterwards.
    node_parent: Vec<u32>,
    /// Frequencies being scaled down when a code came out too long.
    scaled: Vec<u32>,
}

impl CodeBuilder {
    pub(crate) fn new() -> Self {
        CodeBuilder {
            leaves: Vec::with_capacity(NUM_SYMBOLS),
            node_weight: Vec::with_capacity(NUM_SYMBOLS),
            leaf_parent: Vec::with_capacity(NUM_SYMBOLS),
            node_parent: Vec::with_capacity(NUM_SYMBOLS),
            scaled: Vec::with_capacity(NUM_SYMBOLS),
        }
    }

    /// Computes code lengths (all ≤ 15) for `freqs` into `lens`.
    ///
    /// The resulting code is always complete or empty: when a single symbol
    /// is used, a second one gets a length too, because decoders reject
    /// incomplete codes.
    pub(crate) fn build_lengths(&mut self, freqs: &[u32], lens: &mut [u8]) {
        debug_assert_eq!(freqs.len(), lens.len());
        if self.try_build(freqs, lens) {
            return;
        }
        // Rare: the optimal code is deeper than 15. Flattening the frequency
        // distribution (halving, but keeping used symbols used) and retrying
        // converges quickly; with all weights equal the depth is ≤ 9.
        self.scaled.clear();
        self.scaled.extend_from_slice(freqs);
        loop {
            for f in self.scaled.iter_mut() {
                if *f > 1 {
                    *f = (*f >> 1) | 1;
                }
            }
            let scaled = std::mem::take(&mut self.scaled);
            let ok = self.try_build(&scaled, lens);
            self.scaled = scaled;
            if ok {
                return;
            }
        }
    }

    /// One Huffman construction; returns false if some length exceeds 15.
    fn try_build(&mut self, freqs: &[u32], lens: &mut [u8]) -> bool {
        lens.iter_mut().for_each(|l| *l = 0);
        self.leaves.clear();
        for (sym, &f) in freqs.iter().enumerate() {
            if f != 0 {
                self.leaves.push((u64::from(f) << 10) | sym as u64);
            }
        }
        let m = self.leaves.len();
        if m == 0 {
            return true;
        }
        if m == 1 {
            // A lone symbol still needs a one-bit codeword, and the code must
            // be complete, so give a dummy partner the other codeword.
            let sym = (self.leaves[0] & 0x3ff) as usize;
            let partner = if sym == 0 { 1 } else { 0 };
            lens[sym] = 1;
            lens[partner] = 1;
            return true;
        }
        self.leaves.sort_unstable();

        // Two-queue construction: leaves are sorted, and internal nodes are
        // produced in non-decreasing weight order, so the two lightest
        // available nodes are always at the front of one of the queues.
        self.node_weight.clear();
        self.node_parent.clear();
        self.leaf_parent.clear();
        self.leaf_parent.resize(m, 0);
        self.node_parent.resize(m - 1, 0);
        let (mut next_leaf, mut next_node) = (0usize, 0usize);
        for k in 0..m - 1 {
            let mut weight = 0u64;
            for _ in 0..2 {
                let take_leaf =
                    next_leaf < m && (next_node >= k || (self.leaves[next_leaf] >> 10) <= self.node_weight[next_node]);
                if take_leaf {
                    weight += self.leaves[next_leaf] >> 10;
                    self.leaf_parent[next_leaf] = k as u32;
                    next_leaf += 1;
                } else {
                    weight += self.node_weight[next_node];
                    self.node_parent[next_node] = k as u32;
                    next_node += 1;
                }
            }
            self.node_weight.push(weight);
        }

        // Depths: the root is the last node; parents always come later.
        let root = m - 2;
        self.node_parent[root] = 0;
        for k in (0..root).rev() {
            let p = self.node_parent[k] as usize;
            self.node_parent[k] = self.node_parent[p] + 1;
        }
        for i in 0..m {
            let depth = self.node_parent[self.leaf_parent[i] as usize] + 1;
            if depth as usize > MAX_CODEWORD_LEN {
                return false;
            }
            lens[(self.leaves[i] & 0x3ff) as usize] = depth as u8;
        }
        true
    }
}

/// Assigns canonical codewords (format §10.2) for the given lengths.
/// Lengths must describe a complete or empty code.
pub(crate) fn canonical_codes(lens: &[u8], codes: &mut [u16]) {
    let mut count = [0u16; MAX_CODEWORD_LEN + 1];
    for &l in lens {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u16; MAX_CODEWORD_LEN + 2];
    let mut code = 0u16;
    for len in 1..=MAX_CODEWORD_LEN {
        code = (code + count[len - 1]) << 1;
        next[len] = code;
    }
    for (sym, &l) in lens.iter().enumerate() {
        if l != 0 {
            codes[sym] = next[l as usize];
            next[l as usize] += 1;
        } else {
            codes[sym] = 0;
        }
    }
}

// ---------------------------------------------------------------------------
// Decoder side
// ---------------------------------------------------------------------------

/// Bits resolved by the direct lookup table; longer codewords (rare by
/// construction, since they belong to infrequent symbols) take a slow path.
pub(crate) const TABLE_BITS: u32 = 11;

/// Decoding table for one canonical code.
pub(crate) struct DecodeTable {
    /// Indexed by the next `TABLE_BITS` bits: `symbol << 6 | length`, or 0
    /// when the codeword is longer than `TABLE_BITS`. (The length sits in
    /// the low 6 bits so the entry can be used directly as a shift count.)
    fast: [u16; 1 << TABLE_BITS],
    /// First canonical codeword of each length.
    first: [u16; MAX_CODEWORD_LEN + 1],
    /// Number of codewords of each length.
    count: [u16; MAX_CODEWORD_LEN + 1],
    /// Index in `sorted` of the first symbol of each length.
    start: [u16; MAX_CODEWORD_LEN + 1],
    /// Used symbols ordered by (length, symbol), i.e. by codeword.
    sorted: [u16; NUM_SYMBOLS],
}

impl DecodeTable {
    pub(crate) fn new() -> Self {
        DecodeTable {
            fast: [0; 1 << TABLE_BITS],
            first: [0; MAX_CODEWORD_LEN + 1],
            count: [0; MAX_CODEWORD_LEN + 1],
            start: [0; MAX_CODEWORD_LEN + 1],
            sorted: [0; NUM_SYMBOLS],
        }
    }

    /// Prepares the table for `lens`; returns `Ok(false)` for the empty code
    /// (every length zero), which is valid but cannot decode anything.
    pub(crate) fn build(&mut self, lens: &[u8; NUM_SYMBOLS]) -> Result<bool, CodecError> {
        self.count = [0; MAX_CODEWORD_LEN + 1];
        for &l in lens.iter() {
            self.count[l as usize] += 1;
        }
        self.count[0] = 0;

        // Kraft sum in units of 2^-15: a usable code fills the space exactly.
        let mut space: u32 = 0;
        for len in 1..=MAX_CODEWORD_LEN {
            space += u32::from(self.count[len]) << (MAX_CODEWORD_LEN - len);
        }
        if space == 0 {
            return Ok(false);
        }
        if space > 1 << MAX_CODEWORD_LEN {
            return Err(CodecError::new("xpress: Huffman code is oversubscribed"));
        }
        if space < 1 << MAX_CODEWORD_LEN {
            return Err(CodecError::new("xpress: Huffman code is incomplete"));
        }

        let mut code = 0u16;
        let mut idx = 0u16;
        for len in 1..=MAX_CODEWORD_LEN {
            self.first[len] = code;
            self.start[len] = idx;
            idx += self.count[len];
            code = (code + self.count[len]) << 1;
        }
        let mut pos = self.start;
        for (sym, &l) in lens.iter().enumerate() {
            if l != 0 {
                self.sorted[pos[l as usize] as usize] = sym as u16;
                pos[l as usize] += 1;
            }
        }

        self.fast = [0; 1 << TABLE_BITS];
        for len in 1..=TABLE_BITS as usize {
            let shift = TABLE_BITS as usize - len;
            let s = self.start[len] as usize;
            let n = self.count[len] as usize;
            for i in 0..n {
                let sym = self.sorted[s + i];
                let lo = (usize::from(self.first[len]) + i) << shift;
                let entry = (sym << 6) | len as u16;
                self.fast[lo..lo + (1 << shift)].fill(entry);
            }
        }
        Ok(true)
    }

    /// Decodes one symbol from the top of a left-aligned bit buffer holding
    /// at least 15 valid bits. Returns `symbol << 6 | codeword length`.
    #[inline(always)]
    pub(crate) fn decode(&self, bitbuf: u32) -> u32 {
        let e = self.fast[(bitbuf >> (32 - TABLE_BITS)) as usize];
        if e != 0 {
            return u32::from(e);
        }
        self.decode_long(bitbuf)
    }

    #[cold]
    #[inline(never)]
    fn decode_long(&self, bitbuf: u32) -> u32 {
        for len in TABLE_BITS as usize + 1..=MAX_CODEWORD_LEN {
            let code = (bitbuf >> (32 - len)) as u16;
            let d = code.wrapping_sub(self.first[len]);
            if d < self.count[len] {
                let sym = self.sorted[(self.start[len] + d) as usize];
                return (u32::from(sym) << 6) | len as u32;
            }
        }
        // Unreachable for a complete code; report a harmless literal so the
        // caller never indexes out of range.
        MAX_CODEWORD_LEN as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kraft(lens: &[u8]) -> u32 {
        lens.iter()
            .filter(|&&l| l != 0)
            .map(|&l| 1u32 << (MAX_CODEWORD_LEN - l as usize))
            .sum()
    }

    #[test]
    fn fibonacci_frequencies_are_limited_and_complete() {
        let mut freqs = vec![0u32; NUM_SYMBOLS];
        let (mut a, mut b) = (1u32, 1u32);
        for f in freqs.iter_mut().take(40) {
            *f = a;
            let c = a.saturating_add(b);
            a = b;
            b = c;
        }
        let mut lens = vec![0u8; NUM_SYMBOLS];
        CodeBuilder::new().build_lengths(&freqs, &mut lens);
        assert!(lens.iter().all(|&l| (l as usize) <= MAX_CODEWORD_LEN));
        assert_eq!(kraft(&lens), 1 << MAX_CODEWORD_LEN);
        assert!(lens.iter().take(40).all(|&l| l != 0));
    }

    #[test]
    fn single_symbol_gets_partner() {
        let mut freqs = vec![0u32; NUM_SYMBOLS];
        freqs[256] = 7;
        let mut lens = vec![0u8; NUM_SYMBOLS];
        CodeBuilder::new().build_lengths(&freqs, &mut lens);
        assert_eq!(lens[256], 1);
        assert_eq!(kraft(&lens), 1 << MAX_CODEWORD_LEN);
    }

    #[test]
    fn table_decodes_every_codeword() {
        let mut freqs = vec![0u32; NUM_SYMBOLS];
        for (i, f) in freqs.iter_mut().enumerate() {
            *f = ((i * 7919) % 1000) as u32 + if i % 3 == 0 { 100_000 } else { 0 };
        }
        let mut lens = vec![0u8; NUM_SYMBOLS];
        CodeBuilder::new().build_lengths(&freqs, &mut lens);
        let mut codes = vec![0u16; NUM_SYMBOLS];
        canonical_codes(&lens, &mut codes);
        let mut arr = [0u8; NUM_SYMBOLS];
        arr.copy_from_slice(&lens);
        let mut t = DecodeTable::new();
        assert!(t.build(&arr).unwrap());
        for sym in 0..NUM_SYMBOLS {
            let l = lens[sym] as u32;
            let buf = (u32::from(codes[sym]) << (32 - l)) | 0x5555 >> l;
            assert_eq!(t.decode(buf), (sym as u32) << 6 | l);
        }
    }
}
