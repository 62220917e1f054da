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
        Compression::Lzms => Err(WimError::Unsupported("solid/LZMS compression".into())),
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
