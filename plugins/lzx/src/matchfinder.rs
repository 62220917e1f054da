//! Binary-tree match finder over one chunk.
//!
//! Positions sharing a 3-byte hash form a binary search tree ordered by the
//! bytes that follow them, with the newest position at the root. Inserting a
//! position walks down from the root, splitting the old tree into "smaller"
//! and "greater" halves that become the new root's children; every node
//! visited is a match candidate, and the common prefix length with each
//! half is known, so comparisons resume where they left off. Lengths-2 matches
//! come from a small separate table, since the tree needs 3 bytes.

/// Empty link.
const NIL: u32 = u32::MAX;
const HASH2_BITS: u32 = 14;

/// A match candidate: `len` bytes at distance `dist`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Match {
    pub len: u32,
    pub dist: u32,
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
    head: Vec<u32>,
    head2: Vec<u32>,
    child: Vec<u32>,
    hash_bits: u32,
}

/// Length of the common prefix of `d[a..]` and `d[b..]` (a < b), starting
/// the comparison at `start` and stopping at `max`; `b + max <= d.len()`.
#[inline(always)]
pub fn extend(d: &[u8], a: usize, b: usize, start: usize, max: usize) -> usize {
    let mut l = start;
    while l + 8 <= max {
        let x = u64::from_le_bytes(d[a + l..a + l + 8].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(d[b + l..b + l + 8].try_into().unwrap_or([0; 8]));
        let z = x ^ y;
        if z != 0 {
            return l + (z.trailing_zeros() / 8) as usize;
        }
        l += 8;
    }
    while l < max && d[a + l] == d[b + l] {
        l += 1;
    }
    l
}

impl BtMatchFinder {
    /// Prepares for a chunk of `n` bytes.
    pub fn reset(&mut self, n: usize) {
        let bits = (usize::BITS - n.max(1 << 14).leading_zeros()).clamp(14, 17) - 1;
        self.hash_bits = bits;
        self.head.clear();
        self.head.resize(1 << bits, NIL);
        self.head2.clear();
        self.head2.resize(1 << HASH2_BITS, NIL);
        if self.child.len() < 2 * n {
            self.child.resize(2 * n, NIL);
        }
    }

    #[inline(always)]
    fn hash3(&self, d: &[u8], i: usize) -> usize {
        let v = u32::from(d[i]) | u32::from(d[i + 1]) << 8 | u32::from(d[i + 2]) << 16;
        (v.wrapping_mul(0x9E37_79B1) >> (32 - self.hash_bits)) as usize
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
        let mut best = 1usize;
        if max_len < 2 {
            return 0;
        }
        // Length-2 candidate: the most recent position with the same 2 bytes.
        let h2 = ((u32::from(d[cur]) << 8 | u32::from(d[cur + 1])).wrapping_mul(0x9E37_79B1)
            >> (32 - HASH2_BITS)) as usize;
        let p2 = self.head2[h2];
        self.head2[h2] = cur as u32;
        if max_len < 3 {
            if RECORD && p2 != NIL {
                let p = p2 as usize;
                if cur - p <= lim.max_dist && d[p] == d[cur] && d[p + 1] == d[cur + 1] {
                    out.push(Match {
                        len: 2,
                        dist: (cur - p) as u32,
                    });
                    return 2;
                }
            }
            return 0;
        }
        if RECORD && p2 != NIL {
            let p = p2 as usize;
            if cur - p <= lim.max_dist && d[p] == d[cur] && d[p + 1] == d[cur + 1] {
                out.push(Match {
                    len: 2,
                    dist: (cur - p) as u32,
                });
                best = 2;
            }
        }

        let h = self.hash3(d, cur);
        let mut m = self.head[h];
        self.head[h] = cur as u32;
        // Slots still to be filled: the "smaller" and "greater" subtrees.
        let mut lt_slot = 2 * cur;
        let mut gt_slot = 2 * cur + 1;
        let (mut lt_len, mut gt_len) = (0usize, 0usize);
        let mut depth = lim.max_depth;
        let nice = lim.nice_len.min(max_len);
        loop {
            if m == NIL || cur - m as usize > lim.max_dist || depth == 0 {
                self.child[lt_slot] = NIL;
                self.child[gt_slot] = NIL;
                return best;
            }
            depth -= 1;
            let mu = m as usize;
            let start = lt_len.min(gt_len);
            // Quick reject on the byte just past the known prefix.
            let len = if start < max_len && d[mu + start] != d[cur + start] {
                start
            } else {
                extend(d, mu, cur, start, max_len)
            };
            if len > best {
                best = len;
                if RECORD {
                    out.push(Match {
                        len: len as u32,
                        dist: (cur - mu) as u32,
                    });
                }
                if len >= nice {
                    // The old node is fully covered by the new one: splice
                    // its subtrees in and drop it.
                    self.child[lt_slot] = self.child[2 * mu];
                    self.child[gt_slot] = self.child[2 * mu + 1];
                    return best;
                }
            }
            if len >= max_len {
                self.child[lt_slot] = self.child[2 * mu];
                self.child[gt_slot] = self.child[2 * mu + 1];
                return best;
            }
            if d[mu + len] < d[cur + len] {
                self.child[lt_slot] = m;
                lt_slot = 2 * mu + 1;
                m = self.child[lt_slot];
                lt_len = len;
            } else {
                self.child[gt_slot] = m;
                gt_slot = 2 * mu;
                m = self.child[gt_slot];
                gt_len = len;
            }
        }
    }
}
