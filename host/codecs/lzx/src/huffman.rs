//! Canonical Huffman codes: decode tables, length-limited code construction
//! and codeword assignment.

use crate::bits::BitReader;

/// Entry flag: the entry points to a second-level table.
const SUBTABLE: u32 = 0x80;

/// Two-level decode table for a canonical code.
///
/// Entry layout: `value << 8 | flag | len`. A direct entry holds the symbol
/// and its full codeword length; a subtable pointer holds the subtable start
/// and the number of extra index bits. Length 0 marks "no code here" (only in
/// empty codes), which decoding reports as an error.
pub struct DecodeTable {
    table: Vec<u32>,
    bits: u32,
}

impl DecodeTable {
    /// A table whose first level indexes `bits` bits.
    pub fn new(bits: u32) -> Self {
        DecodeTable {
            table: vec![0; 1 << bits],
            bits,
        }
    }

    /// Builds the table from code lengths. Fails unless the code is complete
    /// (Kraft sum exactly 1) or empty.
    pub fn build(&mut self, lens: &[u8], max_len: u32) -> Result<(), &'static str> {
        let tb = self.bits;
        let mut count = [0u32; 17];
        for &l in lens {
            if u32::from(l) > max_len {
                return Err("code length too large");
            }
            count[l as usize] += 1;
        }
        count[0] = 0;
        // Kraft check with integer slack: `left` codewords of the current length.
        let mut left: i64 = 1;
        for &c in &count[1..=max_len as usize] {
            left = left * 2 - i64::from(c);
            if left < 0 {
                return Err("oversubscribed Huffman code");
            }
        }
        self.table.truncate(1 << tb);
        if left == 1 << max_len {
            // Empty code: every lookup fails.
            self.table.iter_mut().for_each(|e| *e = 0);
            return Ok(());
        }
        if left != 0 {
            return Err("incomplete Huffman code");
        }

        // Symbols sorted by (length, symbol): canonical order.
        let mut offs = [0usize; 18];
        for l in 1..=16 {
            offs[l + 1] = offs[l] + count[l] as usize;
        }
        let mut sorted = [0u16; 1024];
        let total = offs[17];
        for (s, &l) in lens.iter().enumerate() {
            if l != 0 {
                sorted[offs[l as usize]] = s as u16;
                offs[l as usize] += 1;
            }
        }

        let mut remaining = count;
        let mut code: u32 = 0;
        let mut cur_len = 0u32;
        let mut cur_prefix = u32::MAX;
        let mut sub_start = 0usize;
        let mut sub_bits = 0u32;
        for &s in &sorted[..total] {
            let l = u32::from(lens[s as usize]);
            if l > cur_len {
                code <<= l - cur_len;
                cur_len = l;
            }
            let cw = code;
            code += 1;
            remaining[l as usize] -= 1;
            if l <= tb {
                let start = (cw << (tb - l)) as usize;
                let n = 1usize << (tb - l);
                let e = (u32::from(s) << 8) | l;
                self.table[start..start + n].iter_mut().for_each(|x| *x = e);
            } else {
                let prefix = cw >> (l - tb);
                if prefix != cur_prefix {
                    // Size the subtable so the codes of this prefix fill it.
                    cur_prefix = prefix;
                    let mut bits = l - tb;
                    let mut room: i64 = 1 << bits;
                    room -= i64::from(remaining[l as usize] + 1);
                    while room > 0 && tb + bits < max_len {
                        bits += 1;
                        room = room * 2 - i64::from(remaining[(tb + bits) as usize]);
                    }
                    sub_bits = bits;
                    sub_start = self.table.len();
                    self.table.resize(sub_start + (1 << bits), 0);
                    self.table[prefix as usize] = ((sub_start as u32) << 8) | SUBTABLE | bits;
                }
                let extra = l - tb;
                let suffix = cw & ((1 << extra) - 1);
                let start = sub_start + ((suffix << (sub_bits - extra)) as usize);
                let n = 1usize << (sub_bits - extra);
                let e = (u32::from(s) << 8) | l;
                self.table[start..start + n].iter_mut().for_each(|x| *x = e);
            }
        }
        Ok(())
    }

    /// Decodes one symbol; the caller has buffered at least 16 bits.
    /// Returns `None` when the code is empty.
    #[inline(always)]
    pub fn decode(&self, br: &mut BitReader) -> Option<u32> {
        let raw = br.raw();
        let mut e = self.table[(raw >> (64 - self.bits)) as usize];
        if e & SUBTABLE != 0 {
            let sb = e & 0x1f;
            let idx = (e >> 8) as usize + ((raw << self.bits) >> (64 - sb)) as usize;
            e = self.table[idx];
        }
        let len = e & 0x1f;
        if len == 0 {
            return None;
        }
        br.consume(len);
        Some(e >> 8)
    }
}

/// Computes Huffman code lengths for `freqs` with no length above `max_len`.
///
/// Unused symbols get length 0. If fewer than two symbols are used, a dummy
/// symbol is added so the code is complete, as decoders require; if none is
/// used, all lengths are 0 (an empty code).
pub fn build_lengths(freqs: &[u32], max_len: u32, lens: &mut [u8], scratch: &mut HuffScratch) {
    let n = freqs.len();
    lens[..n].iter_mut().for_each(|l| *l = 0);
    let syms = &mut scratch.syms;
    syms.clear();
    for (s, &f) in freqs.iter().enumerate() {
        if f != 0 {
            // (frequency, symbol) packed so one integer sort orders both.
            syms.push(u64::from(f) << 16 | s as u64);
        }
    }
    match syms.len() {
        0 => return,
        1 => {
            let s = (syms[0] & 0xffff) as usize;
            let other = if s == 0 { 1 } else { 0 };
            lens[s] = 1;
            lens[other] = 1;
            return;
        }
        _ => {}
    }
    // Sort by frequency (ties by symbol, for determinism).
    syms.sort_unstable();
    let m = syms.len();

    // Two-queue Huffman: leaves in `syms` order, internal nodes appended in
    // nondecreasing weight order. parent[] links give depths.
    let weight = &mut scratch.weight;
    let parent = &mut scratch.parent;
    weight.clear();
    parent.clear();
    weight.extend(syms.iter().map(|&x| x >> 16));
    weight.resize(2 * m - 1, 0);
    parent.resize(2 * m - 1, 0);
    let (mut leaf, mut node, mut next) = (0usize, m, m);
    while next < 2 * m - 1 {
        let mut pick = || {
            if leaf < m && (node >= next || weight[leaf] <= weight[node]) {
                leaf += 1;
                leaf - 1
            } else {
                node += 1;
                node - 1
            }
        };
        let a = pick();
        let b = pick();
        weight[next] = weight[a] + weight[b];
        parent[a] = next;
        parent[b] = next;
        next += 1;
    }
    // Depths: root is the last node.
    let depth = weight; // reuse storage
    depth[2 * m - 2] = 0;
    for i in (0..2 * m - 2).rev() {
        depth[i] = depth[parent[i]] + 1;
    }
    // Count leaves per length, clamping to max_len, then repair the Kraft sum.
    let mut bl = [0u32; 64];
    for i in 0..m {
        let d = (depth[i] as usize).min(max_len as usize);
        bl[d] += 1;
    }
    let mut kraft: u64 = 0;
    for l in 1..=max_len as usize {
        kraft += u64::from(bl[l]) << (max_len as usize - l);
    }
    let full = 1u64 << max_len;
    while kraft > full {
        // Move one leaf from the longest length under a shorter leaf, which
        // becomes its sibling: the sum drops by exactly one unit.
        bl[max_len as usize] -= 1;
        kraft -= 1;
        for l in (1..max_len as usize).rev() {
            if bl[l] != 0 {
                bl[l] -= 1;
                bl[l + 1] += 2;
                break;
            }
        }
    }
    // Most frequent symbols (end of `syms`) get the shortest lengths.
    let mut i = m;
    for l in 1..=max_len as usize {
        for _ in 0..bl[l] {
            i -= 1;
            lens[(syms[i] & 0xffff) as usize] = l as u8;
        }
    }
}

/// Reusable buffers for [`build_lengths`].
#[derive(Default)]
pub struct HuffScratch {
    syms: Vec<u64>,
    weight: Vec<u64>,
    parent: Vec<usize>,
}

/// Assigns canonical codewords for `lens` into `codes`.
pub fn assign_codes(lens: &[u8], codes: &mut [u32]) {
    let mut count = [0u32; 18];
    for &l in lens {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u32; 18];
    for l in 1..17 {
        next[l + 1] = (next[l] + count[l]) << 1;
    }
    for (s, &l) in lens.iter().enumerate() {
        if l != 0 {
            codes[s] = next[l as usize];
            next[l as usize] += 1;
        } else {
            codes[s] = 0;
        }
    }
}
