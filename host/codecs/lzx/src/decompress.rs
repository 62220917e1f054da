//! LZX (WIM dialect) chunk decoder.

use crate::bits::BitReader;
use crate::e8;
use crate::huffman::DecodeTable;
use crate::tables::*;
use wimguard_sdk::CodecError;

const MAIN_TABLE_BITS: u32 = 11;
const LEN_TABLE_BITS: u32 = 9;
const PRE_TABLE_BITS: u32 = 6;
const ALIGNED_TABLE_BITS: u32 = 7;
/// Longest possible spill of a run past the end of a pass (51 − 1).
const RUN_SLACK: usize = 50;

fn err(reason: &str) -> CodecError {
    CodecError::new(format!("lzx: {reason}"))
}

/// Decoder state for one window size; reused across chunks.
pub struct Decoder {
    order: u32,
    num_main: usize,
    /// Code lengths with slack: a run may spill past its pass (see
    /// `read_lens`), as it harmlessly does in wimlib.
    main_lens: [u8; MAX_MAIN_SYMS + RUN_SLACK],
    len_lens: [u8; LEN_SYMS + RUN_SLACK],
    aligned_lens: [u8; ALIGNED_SYMS],
    main: DecodeTable,
    len: DecodeTable,
    aligned: DecodeTable,
    pre: DecodeTable,
}

impl Decoder {
    /// A decoder for a window of `1 << order` bytes (15..=21).
    pub fn new(order: u32) -> Self {
        let order = order.clamp(MIN_WINDOW_ORDER, MAX_WINDOW_ORDER);
        Decoder {
            order,
            num_main: num_main_syms(order),
            main_lens: [0; MAX_MAIN_SYMS + RUN_SLACK],
            len_lens: [0; LEN_SYMS + RUN_SLACK],
            aligned_lens: [0; ALIGNED_SYMS],
            main: DecodeTable::new(MAIN_TABLE_BITS),
            len: DecodeTable::new(LEN_TABLE_BITS),
            aligned: DecodeTable::new(ALIGNED_TABLE_BITS),
            pre: DecodeTable::new(PRE_TABLE_BITS),
        }
    }

    /// Decodes one chunk into exactly `out.len()` bytes.
    pub fn decompress(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
        if out.len() > 1usize << self.order {
            return Err(err("chunk larger than the window"));
        }
        let mut br = BitReader::new(input);
        let mut r = [1u32; 3];
        self.main_lens.iter_mut().for_each(|l| *l = 0);
        self.len_lens.iter_mut().for_each(|l| *l = 0);
        let mut pos = 0usize;
        // E8 bytes can only appear as literals or in raw blocks; skipping the
        // undo pass when neither can hold one gives identical results.
        let mut may_have_e8 = false;
        while pos < out.len() {
            br.refill();
            let btype = br.bits_nocheck(3);
            let size = if br.bits_nocheck(1) == 1 {
                DEFAULT_BLOCK_SIZE
            } else {
                let mut s = br.bits_nocheck(16) as usize;
                if self.order >= 16 {
                    s = (s << 8) | br.bits_nocheck(8) as usize;
                }
                s
            };
            if size > out.len() - pos {
                return Err(err("block runs past the end of the chunk"));
            }
            let end = pos + size;
            match btype {
                1 | 2 => {
                    let aligned = btype == 2;
                    if aligned {
                        br.refill();
                        for l in self.aligned_lens.iter_mut() {
                            *l = br.bits_nocheck(3) as u8;
                        }
                        self.aligned.build(&self.aligned_lens, MAX_ALIGNED_LEN).map_err(err)?;
                    }
                    let nm = self.num_main;
                    read_lens(&mut br, &mut self.pre, &mut self.main_lens, 0, NUM_CHARS)?;
                    read_lens(&mut br, &mut self.pre, &mut self.main_lens, NUM_CHARS, nm)?;
                    self.main.build(&self.main_lens[..nm], MAX_MAIN_LEN).map_err(err)?;
                    read_lens(&mut br, &mut self.pre, &mut self.len_lens, 0, LEN_SYMS)?;
                    self.len
                        .build(&self.len_lens[..LEN_SYMS], MAX_LENTREE_LEN)
                        .map_err(err)?;
                    if self.main_lens[0xE8] != 0 {
                        may_have_e8 = true;
                    }
                    self.block(&mut br, out, pos, end, aligned, &mut r)?;
                }
                3 => {
                    br.align_to_bytes();
                    let hdr = br.take_bytes(12).ok_or_else(|| err("truncated raw block"))?;
                    for (i, slot) in r.iter_mut().enumerate() {
                        let v = u32::from_le_bytes([hdr[4 * i], hdr[4 * i + 1], hdr[4 * i + 2], hdr[4 * i + 3]]);
                        if v == 0 {
                            return Err(err("zero repeat offset in raw block"));
                        }
                        *slot = v;
                    }
                    let data = br.take_bytes(size).ok_or_else(|| err("truncated raw block"))?;
                    out[pos..end].copy_from_slice(data);
                    if size & 1 == 1 {
                        br.skip_byte();
                    }
                    may_have_e8 = true;
                }
                _ => return Err(err("invalid block type")),
            }
            pos = end;
        }
        if may_have_e8 {
            e8::undo(out);
        }
        Ok(())
    }

    /// Decodes the items of a verbatim or aligned block into `out[pos..end]`.
    fn block(
        &self,
        br: &mut BitReader,
        out: &mut [u8],
        mut pos: usize,
        end: usize,
        aligned: bool,
        r: &mut [u32; 3],
    ) -> Result<(), CodecError> {
        // Aligned decoding applies from 3 extra bits up; a threshold of 32
        // (never reached) turns it off for verbatim blocks.
        let aligned_min = if aligned { 3 } else { 32 };
        let out = &mut out[..end];
        while pos < end {
            br.refill();
            let mut sym = self.main.decode(br).ok_or_else(|| err("empty main code"))? as usize;
            if sym < NUM_CHARS {
                // A refill leaves more than 48 bits: room for two more
                // main symbols (16 bits at most) without refilling.
                out[pos] = sym as u8;
                pos += 1;
                if pos == end {
                    break;
                }
                sym = self.main.decode(br).ok_or_else(|| err("empty main code"))? as usize;
                if sym < NUM_CHARS {
                    out[pos] = sym as u8;
                    pos += 1;
                    if pos == end {
                        break;
                    }
                    sym = self.main.decode(br).ok_or_else(|| err("empty main code"))? as usize;
                    if sym < NUM_CHARS {
                        out[pos] = sym as u8;
                        pos += 1;
                        continue;
                    }
                }
                // A match follows: its length symbol needs up to 16 bits.
                br.ensure(16);
            }
            let m = sym - NUM_CHARS;
            let mut len = m & 7;
            let slot = m >> 3;
            if len == LEN_ESCAPE {
                len += self.len.decode(br).ok_or_else(|| err("empty length code"))? as usize;
            }
            len += MIN_MATCH;
            let dist;
            if slot < 3 {
                dist = r[slot];
                r[slot] = r[0];
                r[0] = dist;
            } else {
                let e = u32::from(EXTRA_BITS[slot]);
                br.ensure(32);
                let mut f = SLOT_BASE[slot];
                if e >= aligned_min {
                    f += br.bits_nocheck(e - 3) << 3;
                    f += self.aligned.decode(br).ok_or_else(|| err("empty aligned code"))?;
                } else {
                    f += br.bits_nocheck(e);
                }
                dist = f - 2;
                r[2] = r[1];
                r[1] = r[0];
                r[0] = dist;
            }
            let dist = dist as usize;
            if len > end - pos {
                return Err(err("match runs past the end of the block"));
            }
            if dist > pos {
                return Err(err("match distance beyond start of chunk"));
            }
            copy_match(out, pos, dist, len);
            pos += len;
        }
        Ok(())
    }
}

/// Copies an LZ77 match; overlapping copies repeat the pattern. The caller
/// has checked `dist <= pos` and `pos + len <= out.len()`.
#[inline(always)]
fn copy_match(out: &mut [u8], pos: usize, dist: usize, len: usize) {
    let src = pos - dist;
    if dist >= 8 && pos + len + 8 <= out.len() {
        // Whole words: each source word lies before its destination (the
        // distance is at least a word), so it is already final. Up to 7
        // bytes past the match are scribbled on; they are decoded later.
        let mut s = src;
        let mut d = pos;
        let stop = pos + len;
        while d < stop {
            let w: [u8; 8] = out[s..s + 8].try_into().unwrap_or([0; 8]);
            out[d..d + 8].copy_from_slice(&w);
            s += 8;
            d += 8;
        }
    } else if dist >= len {
        out.copy_within(src..src + len, pos);
    } else if dist == 1 {
        let b = out[src];
        out[pos..pos + len].iter_mut().for_each(|x| *x = b);
    } else {
        // Copy in growing pieces: after each pass the pattern written so far
        // is longer, and source and destination never overlap.
        let mut done = 0;
        while done < len {
            let n = (dist + done).min(len - done);
            out.copy_within(src..src + n, pos + done);
            done += n;
        }
    }
}

/// One pretree pass: reads 20 pretree lengths, then updates `lens[start..end]`
/// (whose old values are the delta reference).
///
/// Valid streams never let a run pass `end`, but wimlib accepts such runs
/// and lets them overwrite the following lengths (the next pass's delta
/// reference, or unused slack); we do the same so both accept and decode
/// exactly the same streams. `lens` has `RUN_SLACK` bytes beyond any `end`.
fn read_lens(
    br: &mut BitReader,
    pre: &mut DecodeTable,
    lens: &mut [u8],
    start: usize,
    end: usize,
) -> Result<(), CodecError> {
    let mut pre_lens = [0u8; PRE_SYMS];
    br.refill();
    for (i, l) in pre_lens.iter_mut().enumerate() {
        if i == 12 {
            br.refill();
        }
        *l = br.bits_nocheck(4) as u8;
    }
    pre.build(&pre_lens, MAX_PRE_LEN).map_err(err)?;
    let n = end;
    let mut i = start;
    while i < n {
        br.refill();
        let sym = pre.decode(br).ok_or_else(|| err("empty pretree"))?;
        match sym {
            0..=16 => {
                lens[i] = ((u32::from(lens[i]) + 17 - sym) % 17) as u8;
                i += 1;
            }
            17 | 18 => {
                let run = if sym == 17 {
                    4 + br.bits_nocheck(4) as usize
                } else {
                    20 + br.bits_nocheck(5) as usize
                };
                let span = lens
                    .get_mut(i..i + run)
                    .ok_or_else(|| err("code length run overflows"))?;
                span.iter_mut().for_each(|l| *l = 0);
                i += run;
            }
            _ => {
                let run = 4 + br.bits_nocheck(1) as usize;
                let d = pre.decode(br).ok_or_else(|| err("empty pretree"))?;
                // 17 is tolerated (it leaves the value unchanged), as wimlib does.
                if d > 17 {
                    return Err(err("invalid code length delta"));
                }
                let v = ((u32::from(lens[i]) + 17 - d) % 17) as u8;
                let span = lens
                    .get_mut(i..i + run)
                    .ok_or_else(|| err("code length run overflows"))?;
                span.iter_mut().for_each(|l| *l = v);
                i += run;
            }
        }
    }
    Ok(())
}
