//! Bit I/O in LZX order: 16-bit little-endian units, each consumed from its
//! most significant bit down.

/// Reads bits MSB-first from 16-bit LE units. Past the end of the input it
/// yields zero bits (valid streams end with zero padding), so callers bound
/// their loops by output size rather than input size.
pub struct BitReader<'a> {
    data: &'a [u8],
    /// Byte position of the next unit to load (may run past `data.len()`).
    pos: usize,
    /// Pending bits, left-aligned.
    buf: u64,
    /// Number of valid bits in `buf`.
    avail: u32,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader {
            data,
            pos: 0,
            buf: 0,
            avail: 0,
        }
    }

    /// Tops the buffer up to more than 48 bits.
    #[inline(always)]
    pub fn refill(&mut self) {
        if self.avail <= 16 {
            if let Some(b) = self.data.get(self.pos..self.pos + 6) {
                let w = (u64::from(u16::from_le_bytes([b[0], b[1]])) << 32)
                    | (u64::from(u16::from_le_bytes([b[2], b[3]])) << 16)
                    | u64::from(u16::from_le_bytes([b[4], b[5]]));
                self.buf |= w << (16 - self.avail);
                self.avail += 48;
                self.pos += 6;
                return;
            }
        }
        while self.avail <= 48 {
            let unit = match self.data.get(self.pos..self.pos + 2) {
                Some(b) => u16::from_le_bytes([b[0], b[1]]),
                None => 0,
            };
            self.buf |= u64::from(unit) << (48 - self.avail);
            self.avail += 16;
            self.pos += 2;
        }
    }

    /// Makes sure at least `n` bits are buffered.
    #[inline(always)]
    pub fn ensure(&mut self, n: u32) {
        if self.avail < n {
            self.refill();
        }
    }

    /// Top `n` buffered bits (1..=32) without consuming them.
    #[inline(always)]
    pub fn peek(&self, n: u32) -> u32 {
        (self.buf >> (64 - n)) as u32
    }

    /// The whole buffer, left-aligned, for table lookups.
    #[inline(always)]
    pub fn raw(&self) -> u64 {
        self.buf
    }

    /// Drops `n` bits (n must not exceed what is buffered).
    #[inline(always)]
    pub fn consume(&mut self, n: u32) {
        self.buf <<= n;
        self.avail -= n;
    }

    /// Reads `n` bits that the caller already made sure are buffered.
    #[inline(always)]
    pub fn bits_nocheck(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// For an uncompressed block: moves to the byte position after the
    /// current unit (one full unit ahead if already on a boundary), drops the
    /// bit buffer and returns that byte position.
    pub fn align_to_bytes(&mut self) -> usize {
        let consumed = self.pos * 8 - self.avail as usize;
        let byte = (consumed / 16 + 1) * 2;
        self.pos = byte;
        self.buf = 0;
        self.avail = 0;
        byte
    }

    /// Takes `n` whole bytes at the (aligned) byte position.
    pub fn take_bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        debug_assert_eq!(self.avail, 0);
        let s = self.data.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(s)
    }

    /// Skips one byte at the byte position (padding after odd raw blocks).
    pub fn skip_byte(&mut self) {
        self.pos += 1;
    }
}

/// Writes bits MSB-first into 16-bit LE units.
pub struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    buf: u64,
    count: u32,
}

impl<'a> BitWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter { out, buf: 0, count: 0 }
    }

    /// Appends the low `n` bits of `v` (n ≤ 32), most significant first.
    #[inline(always)]
    pub fn put(&mut self, v: u32, n: u32) {
        self.buf = (self.buf << n) | u64::from(v);
        self.count += n;
        while self.count >= 16 {
            self.count -= 16;
            let unit = (self.buf >> self.count) as u16;
            self.out.extend_from_slice(&unit.to_le_bytes());
        }
    }

    /// Pads the last unit with zero bits.
    pub fn finish(mut self) {
        if self.count > 0 {
            let unit = (self.buf << (16 - self.count)) as u16;
            self.out.extend_from_slice(&unit.to_le_bytes());
            self.count = 0;
        }
    }

    /// Bytes written so far (whole units only).
    pub fn len(&self) -> usize {
        self.out.len()
    }
}
