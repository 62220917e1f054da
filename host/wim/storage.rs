//! Where archive bytes come from and go to.
//!
//! Reading: [`ReadAt`], positioned reads over a local file or a remote
//! object (ranged GETs). Writing a local archive goes straight to its file;
//! writing to object storage goes through [`PartUpload`]: the writer cuts the
//! archive into numbered parts and hands each over once no later step can
//! change it (the header and a blob's chunk table are filled in after their
//! data, so the parts holding them wait), which keeps the spool bounded
//! whatever the archive's size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Positioned reads of an archive's bytes.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` with the bytes at `offset`; an error if they pass the end.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Total size in bytes.
    fn size(&self) -> u64;
    /// The caller is about to read `[offset, offset + len)` in full: remote
    /// storage may fetch it in one request. Local files ignore it.
    fn will_read(&self, _offset: u64, _len: u64) {}
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }
    fn size(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
}

/// Receives the parts of an archive written for object storage.
pub trait PartUpload: Send {
    /// Stores part `number` (1-based; the bytes are handed over, not
    /// copied). Parts may come in any order, and a
    /// number may come again (the writer went back over it): the last bytes
    /// given for a number are the ones that count. `whole` is the object's
    /// size when this part is all of it, so one request can store it.
    fn put_part(&mut self, number: u32, data: Vec<u8>, whole: Option<u64>) -> io::Result<()>;
}

/// Bytes per part: 16 MiB for the first thousand parts, then growing, so
/// that 10,000 parts (S3's limit) hold close to a TiB while a typical
/// archive stays at 16 MiB parts (S3's minimum is 5 MiB except the last).
pub fn part_size(number: u32) -> u64 {
    const BASE: u64 = 16 << 20;
    BASE * (1 + (number.saturating_sub(1) / 1000) as u64)
}

/// Start offset of part `number`.
pub fn part_start(number: u32) -> u64 {
    const BASE: u64 = 16 << 20;
    let before = number.saturating_sub(1) as u64;
    let (groups, rest) = (before / 1000, before % 1000);
    BASE * (1000 * groups * (groups + 1) / 2 + rest * (groups + 1))
}

/// The part holding byte `offset`.
pub fn part_of(offset: u64) -> u32 {
    // Whole groups of 1000 parts first, then within the group.
    let mut group = 0u64;
    while part_start(((group + 1) * 1000 + 1) as u32) <= offset {
        group += 1;
    }
    let first = (group * 1000 + 1) as u32;
    first + ((offset - part_start(first)) / part_size(first)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_tile_the_object() {
        assert_eq!(part_of(0), 1);
        assert_eq!(part_of((16 << 20) - 1), 1);
        assert_eq!(part_of(16 << 20), 2);
        assert_eq!(part_start(1001), 1000 * (16 << 20));
        assert_eq!(part_size(1001), 32 << 20);
        assert_eq!(part_of(part_start(1001)), 1001);
        assert_eq!(part_of(part_start(1001) - 1), 1000);
        let total = part_start(10_001);
        assert!(total > 800 << 30, "10,000 parts hold only {total} bytes");
    }
}
