//! Fixed parameters of the LZX format as used in WIM chunks.

/// Number of literal symbols at the start of the main alphabet.
pub const NUM_CHARS: usize = 256;
/// Shortest match LZX can express.
pub const MIN_MATCH: usize = 2;
/// Longest match LZX can express (7 + 248 + 2).
pub const MAX_MATCH: usize = 257;
/// Length headers inside a main symbol; the last one means "see length tree".
pub const NUM_LEN_HEADERS: usize = 8;
/// Length header value that announces a length-tree symbol.
pub const LEN_ESCAPE: usize = 7;
/// Symbols of the length tree.
pub const LEN_SYMS: usize = 249;
/// Symbols of the aligned-offset tree.
pub const ALIGNED_SYMS: usize = 8;
/// Symbols of the pretree that codes the code lengths.
pub const PRE_SYMS: usize = 20;
/// Largest number of offset slots (2 MiB window).
pub const MAX_SLOTS: usize = 50;
/// Largest main alphabet (2 MiB window).
pub const MAX_MAIN_SYMS: usize = NUM_CHARS + NUM_LEN_HEADERS * MAX_SLOTS;
/// Codeword length limits.
pub const MAX_MAIN_LEN: u32 = 16;
pub const MAX_LENTREE_LEN: u32 = 16;
pub const MAX_PRE_LEN: u32 = 15;
pub const MAX_ALIGNED_LEN: u32 = 7;
/// Smallest and largest window (= chunk) sizes, as log2.
pub const MIN_WINDOW_ORDER: u32 = 15;
pub const MAX_WINDOW_ORDER: u32 = 21;
/// Block size announced by the one-bit "default size" flag.
pub const DEFAULT_BLOCK_SIZE: usize = 32768;
/// File size used by the E8 call translation in WIM LZX.
pub const E8_FILE_SIZE: i32 = 12_000_000;

/// Extra (verbatim) bits carried by each offset slot.
pub const EXTRA_BITS: [u8; MAX_SLOTS] = {
    let mut t = [0u8; MAX_SLOTS];
    let mut s = 4;
    while s < MAX_SLOTS {
        let e = (s - 2) / 2;
        t[s] = if e > 17 { 17 } else { e as u8 };
        s += 1;
    }
    t
};

/// First "formatted offset" (distance + 2) of each slot; slots 0..2 are the
/// repeat offsets and their bases are never used as distances.
pub const SLOT_BASE: [u32; MAX_SLOTS + 1] = {
    let mut t = [0u32; MAX_SLOTS + 1];
    let mut s = 1;
    while s <= MAX_SLOTS {
        t[s] = t[s - 1] + (1u32 << EXTRA_BITS[s - 1]);
        s += 1;
    }
    t
};

/// Offset slots needed by a window of `1 << order` bytes.
pub fn num_slots(order: u32) -> usize {
    match order {
        15 => 30,
        16 => 32,
        17 => 34,
        18 => 36,
        19 => 38,
        20 => 42,
        _ => 50,
    }
}

/// Main-tree alphabet size for a window of `1 << order` bytes.
pub fn num_main_syms(order: u32) -> usize {
    NUM_CHARS + NUM_LEN_HEADERS * num_slots(order)
}

/// Window order (log2 of the window size) for a chunk of `size` bytes:
/// the next power of two, at least 32 KiB. `None` above 2 MiB.
pub fn window_order_for(size: usize) -> Option<u32> {
    if size > 1 << MAX_WINDOW_ORDER {
        return None;
    }
    let p = size.max(1 << MIN_WINDOW_ORDER).next_power_of_two();
    Some(p.trailing_zeros())
}

/// Offset slot of a formatted offset (distance + 2), for explicit offsets.
#[inline]
pub fn slot_of(formatted: u32) -> usize {
    if formatted >= 1 << 18 {
        36 + ((formatted - (1 << 18)) >> 17) as usize
    } else {
        let l = 31 - formatted.leading_zeros();
        (2 * l + ((formatted >> (l - 1)) & 1)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_tables_match_the_spec() {
        assert_eq!(SLOT_BASE[3], 3);
        assert_eq!(SLOT_BASE[29], 24574 + 2);
        assert_eq!(SLOT_BASE[30], 32768);
        assert_eq!(SLOT_BASE[num_slots(21)], 1 << 21);
        assert_eq!(SLOT_BASE[num_slots(20)], 1 << 20);
        for f in 3u32..(1 << 21) {
            let s = slot_of(f);
            assert!(SLOT_BASE[s] <= f && f < SLOT_BASE[s + 1], "{f}");
        }
    }
}
