//! Maps the WIM-wide compression type to a chunk codec, and keeps one
//! compressor or decompressor per worker thread.

use std::sync::{Arc, Mutex, OnceLock};

use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec};

use super::error::{Result, WimError};
use super::header::Compression;

/// A codec shared by every archive and writer that uses it. When the last
/// user of a plugin codec drops it (the plugin was upgraded or removed),
/// its runtime is freed.
pub type SharedCodec = Arc<dyn Codec>;

/// Finds the codec of an archive compressed by a codec plugin, by the id
/// its XML records. The daemon's plugin registry is one; readers outside
/// the daemon use [`StandardCodecs`].
pub trait CodecResolver: Send + Sync {
    /// The codec with id `id`, or a message for the user saying why there
    /// is none (not installed, disabled, broken).
    fn plugin_codec(&self, id: &str) -> std::result::Result<SharedCodec, String>;
}

/// Resolves only the standard codecs (XPRESS, LZX): what a reader without
/// a plugin registry can decode.
pub struct StandardCodecs;

impl CodecResolver for StandardCodecs {
    fn plugin_codec(&self, id: &str) -> std::result::Result<SharedCodec, String> {
        Err(format!(
            "this archive is compressed by the codec plugin `{id}`; read it through the wimguard server, which \
             loads plugins"
        ))
    }
}

/// Resolves one codec the caller already holds (the objects of a remote
/// chain share theirs), or only the standard ones when it holds none.
pub struct KnownCodec(pub Option<SharedCodec>);

impl CodecResolver for KnownCodec {
    fn plugin_codec(&self, id: &str) -> std::result::Result<SharedCodec, String> {
        match &self.0 {
            Some(c) if c.name() == id => Ok(c.clone()),
            _ => StandardCodecs.plugin_codec(id),
        }
    }
}

/// The built-in codec for a standard compression type; `None` for
/// uncompressed WIMs. Standard codecs are always the built-in native ones,
/// so a standard WIM restores whatever state the plugin registry is in.
pub fn codec_for(c: Compression) -> Result<Option<SharedCodec>> {
    static XPRESS: OnceLock<SharedCodec> = OnceLock::new();
    static LZX: OnceLock<SharedCodec> = OnceLock::new();
    match c {
        Compression::None => Ok(None),
        Compression::Xpress => Ok(Some(XPRESS.get_or_init(|| Arc::new(wimguard_xpress::Xpress)).clone())),
        Compression::Lzx => Ok(Some(LZX.get_or_init(|| Arc::new(wimguard_lzx::Lzx)).clone())),
        Compression::Lzms => Err(WimError::Unsupported(
            "LZMS compression; convert with `wimlib-imagex export SRC all DEST --compress=lzx`".into(),
        )),
        Compression::Plugin => Err(WimError::Unsupported(
            "archive compressed by a codec plugin, but its codec id is unknown".into(),
        )),
    }
}

/// The codec of an archive: the built-in one for standard types; for a
/// plugin-compressed archive, the one `codecs` finds for `plugin_id`.
pub fn codec_for_archive(
    c: Compression,
    plugin_id: Option<&str>,
    codecs: &dyn CodecResolver,
) -> Result<Option<SharedCodec>> {
    if c != Compression::Plugin {
        return codec_for(c);
    }
    let id = plugin_id.ok_or_else(|| {
        WimError::Invalid("the header says a codec plugin compressed this archive, but the XML names none".into())
    })?;
    codecs.plugin_codec(id).map(Some).map_err(WimError::CodecUnavailable)
}

/// One codec state per rayon worker, so parallel chunk work never shares scratch memory.
pub struct PerThread<T> {
    slots: Vec<Mutex<T>>,
}

impl<T> PerThread<T> {
    pub fn new(mut make: impl FnMut() -> T) -> Self {
        let n = rayon::current_num_threads() + 1;
        PerThread {
            slots: (0..n).map(|_| Mutex::new(make())).collect(),
        }
    }

    /// Visits every slot (between parallel sections: no slot is in use).
    pub fn each(&self, mut f: impl FnMut(&mut T)) {
        for slot in &self.slots {
            f(&mut slot.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Runs `f` with the state of `slot` (a dedicated thread's own; taken
    /// modulo the slot count).
    pub fn with_slot<R>(&self, slot: usize, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = self.slots[slot % self.slots.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Runs `f` with this thread's state.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let i = rayon::current_thread_index().map_or(self.slots.len() - 1, |i| i.min(self.slots.len() - 1));
        let mut guard = self.slots[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

pub type Compressors = PerThread<Box<dyn ChunkCompressor>>;
pub type Decompressors = PerThread<Box<dyn ChunkDecompressor>>;

/// Chunks shorter than this are compressed every time: they cost little.
const MIN_REMEMBERED_CHUNK: usize = 1024;
/// How many different (length, byte) chunks a compressor remembers.
const REMEMBERED_RUNS: usize = 4;

/// Wraps a codec's compressor and remembers what it made of chunks that are
/// one byte repeated (the zeros of sparse files, preallocated files and disk
/// images, erased flash's 0xFF): the next such chunk of the same length and
/// byte gets a copy instead of another compression. WIM chunks are
/// compressed independently, so any codec's output for a chunk is valid
/// wherever the same chunk occurs. Only chunks the codec did compress are
/// remembered: a failing or refusing codec is asked again each time.
pub struct RemembersRuns {
    inner: Box<dyn ChunkCompressor>,
    /// `(chunk length, byte, compressed chunk)`, the newest last.
    runs: Vec<(usize, u8, Vec<u8>)>,
}

impl RemembersRuns {
    /// Wraps `inner`, remembering nothing yet.
    pub fn new(inner: Box<dyn ChunkCompressor>) -> Self {
        RemembersRuns {
            inner,
            runs: Vec::new(),
        }
    }
}

/// The byte `chunk` repeats, if it is one byte repeated. Ordinary data
/// differs within the first few bytes, so this costs next to nothing.
fn repeated_byte(chunk: &[u8]) -> Option<u8> {
    let &b = chunk.first()?;
    is_run_of(chunk, b).then_some(b)
}

/// Whether every byte of `data` is `b` (true when empty), compared a word
/// at a time. Also finds the zero blocks of sparse files on restore.
pub(crate) fn is_run_of(data: &[u8], b: u8) -> bool {
    let word = u64::from_ne_bytes([b; 8]);
    let mut words = data.chunks_exact(8);
    words.all(|w| u64::from_ne_bytes(w.try_into().unwrap_or([!b; 8])) == word)
        && words.remainder().iter().all(|&x| x == b)
}

impl ChunkCompressor for RemembersRuns {
    fn compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        let run = if chunk.len() >= MIN_REMEMBERED_CHUNK {
            repeated_byte(chunk)
        } else {
            None
        };
        let Some(byte) = run else {
            return self.inner.compress(chunk, out);
        };
        if let Some((_, _, packed)) = self.runs.iter().find(|r| r.0 == chunk.len() && r.1 == byte) {
            out.clear();
            out.extend_from_slice(packed);
            return true;
        }
        if !self.inner.compress(chunk, out) {
            return false;
        }
        if self.runs.len() == REMEMBERED_RUNS {
            self.runs.remove(0);
        }
        self.runs.push((chunk.len(), byte, out.clone()));
        true
    }

    fn take_failure(&mut self) -> Option<String> {
        self.inner.take_failure()
    }

    fn watch_cancel(&mut self, cancel: Arc<std::sync::atomic::AtomicBool>) {
        self.inner.watch_cancel(cancel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The real XPRESS compressor, counting how often it is asked.
    struct Counted {
        inner: Box<dyn ChunkCompressor>,
        calls: Arc<AtomicUsize>,
    }

    impl ChunkCompressor for Counted {
        fn compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.inner.compress(chunk, out)
        }
    }

    fn remembering_xpress() -> (RemembersRuns, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let inner = Box::new(Counted {
            inner: wimguard_xpress::Xpress.compressor(32768),
            calls: calls.clone(),
        });
        (RemembersRuns::new(inner), calls)
    }

    /// Compresses `chunk` and checks the result decompresses to it.
    fn round_trip(c: &mut RemembersRuns, chunk: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        assert!(c.compress(chunk, &mut out), "a chunk this regular compresses");
        let mut back = vec![0x5A; chunk.len()];
        wimguard_xpress::Xpress
            .decompressor(32768)
            .decompress(&out, &mut back)
            .unwrap();
        assert!(back == chunk, "the remembered output decodes to the chunk");
        out
    }

    #[test]
    fn a_chunk_of_one_repeated_byte_is_compressed_once_per_length_and_byte() {
        let (mut c, calls) = remembering_xpress();
        let zeros = vec![0u8; 32768];
        let first = round_trip(&mut c, &zeros);
        assert_eq!(round_trip(&mut c, &zeros), first);
        assert_eq!(calls.load(Ordering::Relaxed), 1, "the second zero chunk is a copy");

        // Another length or another byte is another chunk.
        round_trip(&mut c, &zeros[..32767]);
        round_trip(&mut c, &vec![0xFF; 32768]);
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        round_trip(&mut c, &zeros[..32767]);
        round_trip(&mut c, &vec![0xFF; 32768]);
        assert_eq!(calls.load(Ordering::Relaxed), 3);

        // Only the newest few are kept: after four more, the zeros are
        // compressed again (to the same bytes).
        for b in 1..=4u8 {
            round_trip(&mut c, &vec![b; 32768]);
        }
        assert_eq!(calls.load(Ordering::Relaxed), 7);
        assert_eq!(round_trip(&mut c, &zeros), first);
        assert_eq!(calls.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn chunks_that_differ_anywhere_or_are_small_always_reach_the_codec() {
        let (mut c, calls) = remembering_xpress();
        // A different last byte, also in a length that leaves a remainder
        // after the 8-byte words.
        for len in [32768usize, 32765] {
            let mut chunk = vec![0u8; len];
            *chunk.last_mut().unwrap() = 1;
            round_trip(&mut c, &chunk);
            round_trip(&mut c, &chunk);
        }
        assert_eq!(calls.load(Ordering::Relaxed), 4);
        // Small chunks are cheap to compress and not remembered.
        let small = vec![0u8; MIN_REMEMBERED_CHUNK - 1];
        round_trip(&mut c, &small);
        round_trip(&mut c, &small);
        assert_eq!(calls.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn is_run_of_sees_every_byte() {
        assert!(is_run_of(&[], 0));
        assert!(is_run_of(&[0; 4096], 0));
        assert!(is_run_of(&[0; 13], 0));
        for at in [0, 7, 8, 4095] {
            let mut b = vec![0u8; 4096];
            b[at] = 1;
            assert!(!is_run_of(&b, 0), "a byte at {at}");
        }
        assert!(!is_run_of(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9], 0));
    }

    #[test]
    fn repeated_byte_recognises_only_runs() {
        assert_eq!(repeated_byte(&[]), None);
        assert_eq!(repeated_byte(&[7]), Some(7));
        assert_eq!(repeated_byte(&[7; 13]), Some(7));
        let mut v = vec![9u8; 4096];
        assert_eq!(repeated_byte(&v), Some(9));
        for at in [0, 7, 8, 4095] {
            v[at] = 8;
            assert_eq!(repeated_byte(&v), None, "a different byte at {at}");
            v[at] = 9;
        }
    }
}
