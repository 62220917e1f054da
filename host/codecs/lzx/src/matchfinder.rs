//! Binary-tree match finder over one chunk.
//!
//! Positions sharing a 4-byte hash form a binary search tree ordered by the
//! bytes that follow them, with the newest position at the root. Inserting a
//! position walks down from the root, splitting the old tree into "smaller"
//! and "greater" halves that become the new root's children; every node
//! visited is a match candidate, and the common prefix length with each
//! half is known, so comparisons resume where they left off.
//!
//! Length-3 matches come from a one-entry table per 3-byte hash (the
//! nearest such position). Trees keyed on 3 bytes found them too, but mixed
//! in many candidates sharing only those 3 bytes and spent the depth limit
//! on them: keyed on 4, an LZX capture of /usr/share takes 4.5% less CPU
//! time and comes out 0.03% smaller. Explicit length-2 matches are not
//! searched: they almost never beat two literals, and the parser still
//! finds length-2 repeat matches itself.

/// Empty link.
const NIL: u32 = u32::MAX;

/// A match candidate: `len` bytes at distance `dist`, packed in one word
/// (the parser caches every position's candidates, so their size is the
/// encoder's memory): lengths need 9 bits (at most 257), distances 21 (the
/// largest LZX window is 2 MiB).
#[derive(Clone, Copy, Debug, Default)]
pub struct Match(u32);

const LEN_BITS: u32 = 9;

impl Match {
    #[inline(always)]
    pub fn new(len: usize, dist: usize) -> Match {
        debug_assert!(len < 1 << LEN_BITS && dist < 1 << (32 - LEN_BITS));
        Match((dist as u32) << LEN_BITS | len as u32)
    }
    #[inline(always)]
    pub fn len(self) -> usize {
        (self.0 & ((1 << LEN_BITS) - 1)) as usize
    }
    #[inline(always)]
    pub fn dist(self) -> u32 {
        self.0 >> LEN_BITS
    }
}

/// Search limits.
#[derive(Clone, Copy)]
pub struct Limits {
    /// Stop searching once a match this long is found.
    pub nice_len: usize,
    /// Tree nodes visited per position at most.
    pub max_depth: u32,
    /// Largest distance allowed.
    pub max_dist: usize,
}

/// Match finder state; buffers are reused across chunks.
#[derive(Default)]
pub struct BtMatchFinder {
    /// Tree roots, by hash of the next 4 bytes.
    head: Vec<u32>,
    /// The newest position, by hash of the next 3 bytes: the only source
    /// of length-3 matches the tree (keyed on 4 bytes) does not find.
    head3: Vec<u32>,
    child: Vec<u32>,
    hash_bits: u32,
}

/// Length of the common prefix of `a` and `b` (equal lengths), known to be
/// at least `start`.
#[inline(always)]
pub fn common_len(a: &[u8], b: &[u8], start: usize) -> usize {
    let max = a.len().min(b.len());
    let (a, b) = (&a[..max], &b[..max]);
    let mut l = start;
    while l + 8 <= max {
        let x = u64::from_le_bytes(a[l..l + 8].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(b[l..l + 8].try_into().unwrap_or([0; 8]));
        let z = x ^ y;
        if z != 0 {
            return l + (z.trailing_zeros() / 8) as usize;
        }
        l += 8;
    }
    while l < max && a[l] == b[l] {
        l += 1;
    }
    l
}

impl BtMatchFinder {
    /// Prepares for a chunk of `n` bytes.
    pub fn reset(&mut self, n: usize) {
        // Four to eight times as many heads as positions up to 64 KiB
        // chunks (2^17 for 32 KiB; at most 2^18, for larger windows): positions whose first 4 bytes differ rarely share
        // a tree, where they would spend the depth limit. Against the 2^15
        // before, lzx_ratio's corpora take 2.4% less CPU time and come out
        // a little smaller. A small chunk (a small file) gets a small
        // table: clearing it is per chunk.
        let bits = (usize::BITS - (n.max(2) - 1).leading_zeros() + 2).clamp(10, 18);
        self.hash_bits = bits;
        self.head.clear();
        self.head.resize(1 << bits, NIL);
        self.head3.clear();
        self.head3.resize(1 << bits, NIL);
        if self.child.len() < 2 * n {
            self.child.resize(2 * n, NIL);
        }
    }

    /// Hash of the 3 bytes in the low bits of `v`.
    #[inline(always)]
    fn hash3(&self, v: u32) -> usize {
        ((v & 0xFF_FFFF).wrapping_mul(0x9E37_79B1) >> (32 - self.hash_bits)) as usize
    }

    #[inline(always)]
    fn hash4(&self, v: u32) -> usize {
        (v.wrapping_mul(0x1E35_A7BD) >> (32 - self.hash_bits)) as usize
    }

    /// Inserts position `cur` and, when `RECORD`, appends its matches to
    /// `out` in strictly increasing length order. `max_len` bounds lengths
    /// (at most the bytes left in `d` from `cur`). Returns the longest length.
    #[inline(always)]
    pub fn advance<const RECORD: bool>(
        &mut self,
        d: &[u8],
        cur: usize,
        max_len: usize,
        lim: &Limits,
        out: &mut Vec<Match>,
    ) -> usize {
        // Only matches of 3 bytes or more are reported.
        let mut best = 2usize;
        if max_len < 3 {
            return 0;
        }
        // The next 4 bytes (3 at the very end), read once for both hashes.
        let next = match d.get(cur..cur + 4) {
            Some(w) => u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
            None => u32::from(d[cur]) | u32::from(d[cur + 1]) << 8 | u32::from(d[cur + 2]) << 16,
        };
        let h3 = self.hash3(next);
        let m3 = self.head3[h3];
        self.head3[h3] = cur as u32;
        if RECORD && m3 != NIL {
            let dist = cur - m3 as usize;
            let m3 = m3 as usize;
            // `m3 < cur`, so its 4 bytes are there.
            let w3 = u32::from_le_bytes([d[m3], d[m3 + 1], d[m3 + 2], d[m3 + 3]]);
            if dist <= lim.max_dist && (w3 ^ next) & 0xFF_FFFF == 0 {
                best = 3;
                out.push(Match::new(3, dist));
            }
        }
        if max_len < 4 {
            return best;
        }
        let h = self.hash4(next);
        let mut m = self.head[h];
        self.head[h] = cur as u32;
        let child = &mut self.child[..];
        let cur_s = &d[cur..cur + max_len];
        // Slots still to be filled: the "smaller" and "greater" subtrees.
        let mut lt_slot = 2 * cur;
        let mut gt_slot = 2 * cur + 1;
        let (mut lt_len, mut gt_len) = (0usize, 0usize);
        let mut depth = lim.max_depth;
        let nice = lim.nice_len.min(max_len);
        loop {
            let mu = m as usize;
            // In 64 bits NIL (above every position) wraps to a distance
            // beyond any limit, on wasm32 too, so one test covers both.
            let dist64 = (cur as u64).wrapping_sub(u64::from(m));
            if dist64 > lim.max_dist as u64 || depth == 0 {
                child[lt_slot] = NIL;
                child[gt_slot] = NIL;
                return best;
            }
            depth -= 1;
            let dist = dist64 as usize;
            let m_s = &d[mu..mu + max_len];
            // Both halves' common prefixes are known; compare past them.
            let start = lt_len.min(gt_len);
            let len = if m_s[start] != cur_s[start] {
                start
            } else {
                common_len(m_s, cur_s, start + 1)
            };
            if len > best {
                best = len;
                if RECORD {
                    out.push(Match::new(len, dist));
                }
                // `nice` is at most `max_len`, and `best` is below
                // `max_len` until a match reaches `nice`: a match of
                // `max_len` always ends the search here.
                if len >= nice {
                    // The old node is fully covered by the new one: splice
                    // its subtrees in and drop it.
                    child[lt_slot] = child[2 * mu];
                    child[gt_slot] = child[2 * mu + 1];
                    return best;
                }
            }
            if m_s[len] < cur_s[len] {
                child[lt_slot] = m;
                lt_slot = 2 * mu + 1;
                m = child[lt_slot];
                lt_len = len;
            } else {
                child[gt_slot] = m;
                gt_slot = 2 * mu;
                m = child[gt_slot];
                gt_len = len;
            }
        }
    }
}
