//! XPRESS chunk decoder (format §10.3).

use crate::huffman::{DecodeTable, NUM_SYMBOLS};
use wimguard_sdk::CodecError;

/// Size of the code-length table that starts every compressed chunk.
pub(crate) const LENGTH_TABLE_BYTES: usize = NUM_SYMBOLS / 2;

fn err(reason: &'static str) -> CodecError {
    CodecError::new(reason)
}

/// State of the bit reader. The stream is 16-bit little-endian units
/// consumed from bit 15 down, with whole bytes interleaved for long match
/// lengths.
///
/// For speed the buffer runs ahead, holding up to 64 bits. Where the format
/// interleaves length bytes, their position is defined by a reader that
/// holds 16..=31 bits (the units it has loaded are exactly those the encoder
/// had reserved before emitting the bytes), so [`Bits::sync`] first gives
/// back the whole units loaded beyond that.
///
/// Kept `Copy` and passed by value in the hot loop so that it lives in
/// registers rather than memory.
#[derive(Clone, Copy)]
struct Bits {
    /// Next unread byte of the bit stream.
    pos: usize,
    /// Valid bits are the top `bits` bits; the rest are zero.
    buf: u64,
    bits: u32,
    /// Zero units supplied past the end of the input, still in the buffer
    /// (always the most recently loaded ones).
    phantom: u32,
}

impl Bits {
    #[cold]
    #[inline(never)]
    fn refill_slow(mut self, data: &[u8]) -> Self {
        while self.bits <= 48 {
            let unit = match data.get(self.pos..self.pos + 2) {
                Some(b) => {
                    self.pos += 2;
                    u64::from(u16::from_le_bytes([b[0], b[1]]))
                }
                None => {
                    self.phantom += 1;
                    0
                }
            };
            self.buf |= unit << (48 - self.bits);
            self.bits += 16;
        }
        self
    }

    /// Returns to the state of a reader holding 16..=31 bits (requires at
    /// least 16 buffered), so that `pos` is where interleaved bytes begin.
    fn sync(&mut self) {
        let keep = 16 + self.bits % 16;
        let extra = (self.bits - keep) / 16;
        // Phantom units are the newest, so they are given back first.
        let dropped_phantom = extra.min(self.phantom);
        self.phantom -= dropped_phantom;
        self.pos -= 2 * (extra - dropped_phantom) as usize;
        self.bits = keep;
        self.buf &= !(u64::MAX >> keep);
    }

    /// Reads the interleaved length bytes of a match whose header said 15;
    /// returns the length field (match length − 3).
    #[cold]
    #[inline(never)]
    fn long_length(mut self, data: &[u8]) -> Result<(Self, usize), CodecError> {
        const TRUNCATED: &str = "xpress: input ends inside a match length";
        self.sync();
        let b = *data.get(self.pos).ok_or_else(|| err(TRUNCATED))?;
        self.pos += 1;
        if b != 255 {
            return Ok((self, 15 + b as usize));
        }
        // The 16-bit escape replaces the running value.
        let w = data.get(self.pos..self.pos + 2).ok_or_else(|| err(TRUNCATED))?;
        self.pos += 2;
        Ok((self, usize::from(u16::from_le_bytes([w[0], w[1]]))))
    }
}

/// Decodes one chunk into exactly `out.len()` bytes using `table` as scratch.
pub(crate) fn decompress_with(table: &mut DecodeTable, input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    if input.len() < LENGTH_TABLE_BYTES {
        return Err(err("xpress: chunk shorter than its 256-byte code-length table"));
    }
    let mut lens = [0u8; NUM_SYMBOLS];
    for (i, &b) in input[..LENGTH_TABLE_BYTES].iter().enumerate() {
        lens[2 * i] = b & 15;
        lens[2 * i + 1] = b >> 4;
    }
    let usable = table.build(&lens)?;
    if out.is_empty() {
        return Ok(());
    }
    if !usable {
        return Err(err("xpress: empty Huffman code but output expected"));
    }

    let table: &DecodeTable = table;
    let data = &input[LENGTH_TABLE_BYTES..];
    // The reader state lives in plain locals so it stays in registers; the
    // rare paths go through `Bits` by value.
    let mut pos = 0usize;
    let mut buf = 0u64;
    let mut bits = 0u32;
    let mut phantom = 0u32;
    let n = out.len();
    let mut o = 0usize;
    while o < n {
        if bits < 32 {
            if let Some(b) = data.get(pos..pos + 8) {
                // Four units at once, reordered so the first one is most
                // significant; keep as many whole ones as fit.
                let v = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
                let v = v.rotate_left(32);
                let v = ((v & 0x0000_FFFF_0000_FFFF) << 16) | ((v >> 16) & 0x0000_FFFF_0000_FFFF);
                let units = (64 - bits) / 16;
                let new_bits = bits + 16 * units;
                let keep = !u64::MAX.checked_shr(new_bits).unwrap_or(0);
                buf |= (v >> bits) & keep;
                bits = new_bits;
                pos += 2 * units as usize;
            } else {
                let r = Bits {
                    pos,
                    buf,
                    bits,
                    phantom,
                }
                .refill_slow(data);
                (pos, buf, bits, phantom) = (r.pos, r.buf, r.bits, r.phantom);
            }
        }
        let e = table.decode((buf >> 32) as u32);
        // Shifts use the low 6 bits of the entry: the codeword length.
        buf = buf.wrapping_shl(e);
        bits -= e & 63;
        let sym = e >> 6;
        if sym < 256 {
            out[o] = sym as u8;
            o += 1;
            continue;
        }

        let m = sym - 256;
        let off_bits = m >> 4;
        let mut length = (m & 15) as usize;
        if length == 15 {
            let (r, l) = Bits {
                pos,
                buf,
                bits,
                phantom,
            }
            .long_length(data)?;
            (pos, buf, bits, phantom) = (r.pos, r.buf, r.bits, r.phantom);
            length = l;
        }
        length += 3;
        let offset = if off_bits == 0 {
            1
        } else {
            let low = (buf >> (64 - off_bits)) as u32;
            buf <<= off_bits;
            bits -= off_bits;
            ((1u32 << off_bits) | low) as usize
        };
        if offset > o {
            return Err(err("xpress: match offset points before the chunk start"));
        }
        if length > n - o {
            return Err(err("xpress: match runs past the end of the chunk"));
        }
        copy_match(out, o, offset, length);
        o += length;
    }
    Ok(())
}

/// Copies `length` bytes from `offset` back to position `dst`; overlapping
/// copies repeat the last `offset` bytes. Caller guarantees bounds.
#[inline(always)]
fn copy_match(out: &mut [u8], dst: usize, offset: usize, length: usize) {
    let src = dst - offset;
    if offset >= 8 && dst + length + 8 <= out.len() {
        // Common case: whole 8-byte words. Each word's source is final
        // already (offset ≥ 8). Bytes written past the match are scratch
        // that later output overwrites, which the slack check allows.
        let mut k = 0;
        while k < length {
            out.copy_within(src + k..src + k + 8, dst + k);
            k += 8;
        }
    } else if offset >= length {
        out.copy_within(src..src + length, dst);
    } else if offset == 1 {
        let b = out[src];
        out[dst..dst + length].fill(b);
    } else {
        // Periodic source: copy one period, then keep doubling the chunk we
        // copy, since everything from `src` on repeats with that period.
        let mut done = 0;
        while done < length {
            let step = (length - done).min(offset + done);
            out.copy_within(src..src + step, dst + done);
            done += step;
        }
    }
}
