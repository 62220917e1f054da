//! E8 (x86 CALL) translation, always applied by WIM LZX.
//!
//! The encoder turns the relative 32-bit operand after each 0xE8 byte into
//! an absolute one (relative to the chunk start) so that repeated calls to
//! the same target compress better; the decoder reverses it.

use crate::tables::E8_FILE_SIZE;

/// First position in `i..limit` holding 0xE8, scanning a word at a time.
#[inline]
fn find_e8(data: &[u8], mut i: usize, limit: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    while i + 8 <= limit {
        let w = u64::from_le_bytes(data[i..i + 8].try_into().unwrap_or([0; 8]));
        // Zero bytes of `x` are 0xE8 bytes of `w`; the lowest flagged byte
        // is always a true zero (borrows only travel upwards).
        let x = w ^ (0xE8 * ONES);
        let t = x.wrapping_sub(ONES) & !x & (0x80 * ONES);
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    (i..limit).find(|&k| data[k] == 0xE8)
}

/// Positions whose operand fits before the last 10 bytes are translated.
#[inline]
fn for_each_e8(data: &mut [u8], mut f: impl FnMut(i32, i32) -> i32) {
    if data.len() <= 10 {
        return;
    }
    let limit = data.len() - 10;
    let mut i = 0;
    while i < limit {
        // Jump to the next candidate quickly.
        match find_e8(data, i, limit) {
            None => break,
            Some(k) => i = k,
        }
        let b = [data[i + 1], data[i + 2], data[i + 3], data[i + 4]];
        let v = f(i32::from_le_bytes(b), i as i32);
        data[i + 1..i + 5].copy_from_slice(&v.to_le_bytes());
        i += 5;
    }
}

/// Encoder side: relative operands become absolute.
pub fn apply(data: &mut [u8]) {
    for_each_e8(data, |rel, i| {
        if rel >= -i && rel < E8_FILE_SIZE {
            if rel < E8_FILE_SIZE - i {
                rel + i
            } else {
                rel - E8_FILE_SIZE
            }
        } else {
            rel
        }
    });
}

/// Decoder side: absolute operands become relative again.
pub fn undo(data: &mut [u8]) {
    for_each_e8(data, |abs, i| {
        if (0..E8_FILE_SIZE).contains(&abs) {
            abs - i
        } else if abs < 0 && abs >= -i {
            abs + E8_FILE_SIZE
        } else {
            abs
        }
    });
}
