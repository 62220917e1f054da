//! The write side of an archive bound for object storage: bytes are cut into
//! numbered parts (see [`storage::part_size`](super::storage::part_size))
//! and each part is handed to a [`PartUpload`] as soon as it is full and no
//! later step can change it.
//!
//! Two things in a WIM are written before their contents are known: the
//! header (rewritten last) and the chunk table in front of a compressed
//! blob (filled in when the blob is done). Their regions are *held*: the
//! parts they touch stay in memory until released. A writer that drops a
//! blob it just wrote (a duplicate) moves back to the blob's start, which is
//! always held, so nothing already handed over has to be taken back; parts
//! after it are simply written, and handed over, again. Memory: the held
//! parts plus the one being filled, three parts in the usual case.

use std::collections::BTreeMap;
use std::io;

use super::storage::{part_of, part_size, part_start, ArchiveSink, PartUpload};

/// Archive bytes on their way out, part by part.
pub struct PartSpool {
    upload: Box<dyn PartUpload>,
    /// Parts still in memory, by number: the bytes written into each so far.
    parts: BTreeMap<u32, Vec<u8>>,
    pos: u64,
    /// Regions that may still be patched, as `[start, end)`.
    holds: Vec<(u64, u64)>,
}

/// The most parts an upload may have (S3's limit).
pub const MAX_PARTS: u32 = 10_000;

fn bug(what: &str) -> io::Error {
    io::Error::other(format!("internal error in the part spool: {what}"))
}

impl PartSpool {
    pub fn new(upload: Box<dyn PartUpload>) -> PartSpool {
        PartSpool {
            upload,
            parts: BTreeMap::new(),
            pos: 0,
            holds: Vec::new(),
        }
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Keeps the parts touching `[start, end)` in memory until [`release`](Self::release).
    pub fn hold(&mut self, start: u64, end: u64) {
        self.holds.push((start, end.max(start + 1)));
    }

    /// Ends the hold that starts at `start`, handing over what it kept.
    pub fn release(&mut self, start: u64) -> io::Result<()> {
        self.holds.retain(|h| h.0 != start);
        let full: Vec<u32> = self.parts.keys().copied().collect();
        for n in full {
            self.hand_over_if_done(n)?;
        }
        Ok(())
    }

    fn held(&self, n: u32) -> bool {
        let (s, e) = (part_start(n), part_start(n) + part_size(n));
        self.holds.iter().any(|&(hs, he)| hs < e && s < he)
    }

    fn hand_over_if_done(&mut self, n: u32) -> io::Result<()> {
        let full = self.parts.get(&n).is_some_and(|p| p.len() as u64 == part_size(n));
        if full && !self.held(n) {
            let data = self.parts.remove(&n).expect("checked above");
            self.upload.put_part(n, data, None)?;
        }
        Ok(())
    }

    pub fn write(&mut self, mut d: &[u8]) -> io::Result<()> {
        while !d.is_empty() {
            let n = part_of(self.pos);
            if n > MAX_PARTS {
                return Err(io::Error::other(format!(
                    "the archive object would need more than {MAX_PARTS} parts (about {} GiB), the most an S3 \
                     multipart upload takes; back up less at once",
                    part_start(MAX_PARTS + 1) >> 30
                )));
            }
            let start = part_start(n);
            let room = (start + part_size(n) - self.pos) as usize;
            let part = self.parts.entry(n).or_default();
            if part.len() as u64 != self.pos - start {
                return Err(bug("writing into a part that was handed over"));
            }
            let take = room.min(d.len());
            part.extend_from_slice(&d[..take]);
            self.pos += take as u64;
            d = &d[take..];
            self.hand_over_if_done(n)?;
        }
        Ok(())
    }

    /// Moves the write position back to `to`, which must lie in a held part.
    pub fn rewind(&mut self, to: u64) -> io::Result<()> {
        let n = part_of(to);
        let start = part_start(n);
        match self.parts.get_mut(&n) {
            Some(p) if p.len() as u64 >= to - start => p.truncate((to - start) as usize),
            _ if to == start => {
                self.parts.insert(n, Vec::new());
            }
            _ => return Err(bug("moving back into a part that was handed over")),
        }
        self.parts.retain(|&k, _| k <= n);
        self.pos = to;
        Ok(())
    }

    /// Overwrites bytes already written at `at` (a held region).
    pub fn patch(&mut self, at: u64, d: &[u8]) -> io::Result<()> {
        let mut off = 0usize;
        while off < d.len() {
            let p = at + off as u64;
            let n = part_of(p);
            let start = part_start(n);
            let part = self
                .parts
                .get_mut(&n)
                .ok_or_else(|| bug("patching a part that was handed over"))?;
            let i = (p - start) as usize;
            let take = (part.len().saturating_sub(i)).min(d.len() - off);
            if take == 0 {
                return Err(bug("patching past the written bytes"));
            }
            part[i..i + take].copy_from_slice(&d[off..off + take]);
            off += take;
        }
        Ok(())
    }

    /// Hands over every part left, in order, and returns the object's size
    /// and its number of parts. A one-part object is handed over as a whole.
    pub fn finish(mut self) -> io::Result<(u64, u32)> {
        self.holds.clear();
        let size = self.pos;
        let last = part_of(size.saturating_sub(1));
        let parts = std::mem::take(&mut self.parts);
        for (n, data) in parts {
            if n > last {
                continue;
            }
            let whole = (last == 1).then_some(size);
            self.upload.put_part(n, data, whole)?;
        }
        Ok((size, last))
    }
}

/// The write side of an upload: the writer's sink when it writes for
/// object storage. (Inherent methods of the same names do the work.)
impl ArchiveSink for PartSpool {
    fn pos(&self) -> u64 {
        PartSpool::pos(self)
    }
    fn write(&mut self, data: &[u8]) -> io::Result<()> {
        PartSpool::write(self, data)
    }
    fn rewind(&mut self, to: u64) -> io::Result<()> {
        PartSpool::rewind(self, to)
    }
    fn patch(&mut self, at: u64, data: &[u8]) -> io::Result<()> {
        PartSpool::patch(self, at, data)
    }
    fn hold(&mut self, start: u64, end: u64) {
        PartSpool::hold(self, start, end)
    }
    fn release(&mut self, start: u64) -> io::Result<()> {
        PartSpool::release(self, start)
    }
    fn finish(self: Box<Self>) -> io::Result<(u64, u32)> {
        PartSpool::finish(*self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Keeps what it is given, as the store would: the last bytes per part.
    type Received = BTreeMap<u32, (Vec<u8>, Option<u64>)>;
    #[derive(Clone, Default)]
    struct Parts(Arc<Mutex<Received>>);

    impl PartUpload for Parts {
        fn put_part(&mut self, n: u32, data: Vec<u8>, whole: Option<u64>) -> io::Result<()> {
            self.0.lock().unwrap().insert(n, (data, whole));
            Ok(())
        }
    }

    fn joined(p: &Parts, last: u32) -> Vec<u8> {
        let m = p.0.lock().unwrap();
        (1..=last).flat_map(|n| m[&n].0.clone()).collect()
    }

    const PART: usize = 16 << 20;

    #[test]
    fn a_small_object_is_one_whole_part() {
        let p = Parts::default();
        let mut s = PartSpool::new(Box::new(p.clone()));
        s.hold(0, 208);
        s.write(&[1; 1000]).unwrap();
        s.patch(0, &[9; 208]).unwrap();
        assert_eq!(s.finish().unwrap(), (1000, 1));
        let m = p.0.lock().unwrap();
        assert_eq!(m[&1].1, Some(1000));
        assert_eq!(&m[&1].0[..208], &[9; 208][..]);
    }

    #[test]
    fn held_parts_wait_and_others_go_at_once() {
        let p = Parts::default();
        let mut s = PartSpool::new(Box::new(p.clone()));
        s.hold(0, 208);
        s.write(&vec![1u8; PART + 10]).unwrap();
        // Part 1 is held (header); part 2 is not full yet.
        assert!(p.0.lock().unwrap().is_empty());
        // A blob whose table sits in part 2, data running into part 4.
        let blob = s.pos();
        s.hold(blob, blob + 64);
        s.write(&vec![2u8; 2 * PART]).unwrap();
        assert_eq!(p.0.lock().unwrap().keys().copied().collect::<Vec<_>>(), vec![3]);
        s.patch(blob, &[7; 64]).unwrap();
        s.release(blob).unwrap();
        assert_eq!(p.0.lock().unwrap().keys().copied().collect::<Vec<_>>(), vec![2, 3]);
        s.patch(0, &[9; 208]).unwrap();
        let (size, last) = s.finish().unwrap();
        assert_eq!((size, last), (3 * PART as u64 + 10, 4));
        let all = joined(&p, last);
        assert_eq!(all.len() as u64, size);
        assert_eq!(&all[..208], &[9; 208][..]);
        assert_eq!(&all[blob as usize..blob as usize + 64], &[7; 64][..]);
        assert!(p.0.lock().unwrap().values().all(|(_, whole)| whole.is_none()));
    }

    #[test]
    fn moving_back_to_a_held_blob_start_rewrites_later_parts() {
        let p = Parts::default();
        let mut s = PartSpool::new(Box::new(p.clone()));
        s.hold(0, 208);
        s.write(&[1u8; 100]).unwrap();
        let blob = s.pos();
        s.hold(blob, blob + 1);
        s.write(&vec![2u8; 2 * PART]).unwrap(); // part 2 handed over
        assert!(p.0.lock().unwrap().contains_key(&2));
        // A duplicate: drop it and write something shorter instead.
        s.rewind(blob).unwrap();
        s.release(blob).unwrap();
        s.write(&[3u8; 50]).unwrap();
        let (size, last) = s.finish().unwrap();
        assert_eq!((size, last), (150, 1));
        let m = p.0.lock().unwrap();
        assert_eq!(m[&1].0, [vec![1u8; 100], vec![3u8; 50]].concat());
        assert_eq!(m[&1].1, Some(150), "a one-part object goes whole");
    }

    #[test]
    fn touching_a_part_already_handed_over_is_an_error_not_corruption() {
        let p = Parts::default();
        let mut s = PartSpool::new(Box::new(p));
        s.write(&vec![1u8; PART + 5]).unwrap();
        assert!(s.patch(10, &[0; 4]).is_err());
        assert!(s.rewind(10).is_err());
    }
}
