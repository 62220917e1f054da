//! Where archive bytes come from and go to.
//!
//! Reading: [`ReadAt`], positioned reads over a local file or a remote
//! object (ranged GETs). Writing: [`ArchiveSink`], over a local file
//! ([`FileSink`]) or the parts of an object being uploaded
//! ([`PartSpool`](super::spool::PartSpool), which hands each part to a
//! [`PartUpload`] once no later step can change it: the header and a
//! blob's chunk table are filled in after their data, so the parts holding
//! them wait, which keeps the spool bounded whatever the archive's size).
//!
//! The two sinks differ in what they can do after the fact: a file can be
//! read back, have data moved down, be truncated and made durable (an
//! in-place append and its rollback need all of that), while a part once
//! handed over is gone. The writer asks [`ArchiveSink::file`] for the
//! former and keeps to the common operations otherwise.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes kept in memory before a [`FileSink`] writes them out. 1 MiB was
/// 0.6 MB of a 10k-file capture's 15.6 MB peak; at 256 KiB an uncompressed
/// /usr/share capture makes 2,100 writes instead of about 530, in the same
/// time.
const OUT_BUFFER: usize = 256 << 10;

/// Where an archive writer's bytes go, in order, with the few ways back a
/// WIM writer needs.
pub trait ArchiveSink: Send {
    /// Bytes written so far: where the next write lands.
    fn pos(&self) -> u64;
    fn write(&mut self, data: &[u8]) -> io::Result<()>;
    /// Moves the write position back to `to` (a duplicate blob just
    /// written is dropped); later writes overwrite.
    fn rewind(&mut self, to: u64) -> io::Result<()>;
    /// Overwrites bytes already written at `at` (the header, a chunk table).
    fn patch(&mut self, at: u64, data: &[u8]) -> io::Result<()>;
    /// Keeps `[start, end)` patchable until [`release`](Self::release)d; a
    /// file always is.
    fn hold(&mut self, _start: u64, _end: u64) {}
    fn release(&mut self, _start: u64) -> io::Result<()> {
        Ok(())
    }
    /// The local file behind the sink, for what only a file can do.
    fn file(&mut self) -> Option<&mut FileSink> {
        None
    }
    /// The file being written, to read back what was there before.
    fn file_ref(&self) -> Option<&File> {
        None
    }
    /// Hands over what is still held and returns the object's size and
    /// its number of parts (sinks that upload); a file is committed by its
    /// writer instead.
    fn finish(self: Box<Self>) -> io::Result<(u64, u32)> {
        Err(io::Error::other(
            "a local archive is committed, not finished as an upload",
        ))
    }
}

/// A local archive file written through a large in-memory tail buffer, so
/// that many small resources cost few syscalls and a just-written
/// duplicate blob can be dropped by moving the position back.
pub struct FileSink {
    pub file: File,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
}

impl FileSink {
    /// Writes `file` from offset `at` on (0 for a new archive, the append
    /// point for an append).
    pub fn new(file: File, at: u64) -> FileSink {
        FileSink {
            file,
            buf: Vec::new(),
            buf_start: at,
        }
    }

    /// Writes the buffered bytes to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.write_all_at(&self.buf, self.buf_start)?;
        self.buf_start += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Moves the last `len` bytes written, which start at `from`, down to
    /// `to` (< `from`), and continues writing after them: a blob whose
    /// every chunk stayed raw drops the chunk table room before it. Bytes
    /// still in the buffer move there, without a read or a write; the rest
    /// go through the file a piece at a time.
    pub fn move_down(&mut self, from: u64, to: u64, len: u64) -> io::Result<()> {
        debug_assert!(to <= from && from + len == self.pos());
        if to >= self.buf_start {
            let (src, dst) = ((from - self.buf_start) as usize, (to - self.buf_start) as usize);
            self.buf.copy_within(src..src + len as usize, dst);
            self.buf.truncate(dst + len as usize);
            return Ok(());
        }
        self.flush()?;
        let mut piece = vec![0u8; (len as usize).min(256 << 10)];
        let mut moved = 0u64;
        while moved < len {
            let n = (len - moved).min(piece.len() as u64) as usize;
            FileExt::read_exact_at(&self.file, &mut piece[..n], from + moved)?;
            self.file.write_all_at(&piece[..n], to + moved)?;
            moved += n as u64;
        }
        // The next write lands right after the moved bytes.
        self.buf.clear();
        self.buf_start = to + len;
        Ok(())
    }
}

impl ArchiveSink for FileSink {
    fn pos(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }
    fn write(&mut self, d: &[u8]) -> io::Result<()> {
        if d.len() >= OUT_BUFFER {
            // Large writes (a whole metadata resource of an uncompressed
            // archive: ~190 MB for a million files) go straight to the
            // file rather than through a copy in the buffer.
            self.flush()?;
            self.file.write_all_at(d, self.buf_start)?;
            self.buf_start += d.len() as u64;
            return Ok(());
        }
        // Flushed before it would overflow, so the buffer never grows past
        // OUT_BUFFER (growing would double it).
        if self.buf.len() + d.len() > OUT_BUFFER {
            self.flush()?;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(OUT_BUFFER);
        }
        self.buf.extend_from_slice(d);
        Ok(())
    }
    fn rewind(&mut self, to: u64) -> io::Result<()> {
        if to >= self.buf_start {
            self.buf.truncate((to - self.buf_start) as usize);
        } else {
            self.buf.clear();
            self.buf_start = to;
        }
        Ok(())
    }
    fn patch(&mut self, at: u64, d: &[u8]) -> io::Result<()> {
        let split = self.buf_start.saturating_sub(at).min(d.len() as u64) as usize;
        if split > 0 {
            self.file.write_all_at(&d[..split], at)?;
        }
        if split < d.len() {
            let off = (at + split as u64 - self.buf_start) as usize;
            self.buf[off..off + d.len() - split].copy_from_slice(&d[split..]);
        }
        Ok(())
    }
    fn file(&mut self) -> Option<&mut FileSink> {
        Some(self)
    }
    fn file_ref(&self) -> Option<&File> {
        Some(&self.file)
    }
}

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
