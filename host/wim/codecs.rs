//! Maps the WIM-wide compression type to a chunk codec, and keeps one
//! compressor or decompressor per worker thread.

use std::sync::{Mutex, OnceLock};

use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec};

use super::error::{Result, WimError};
use super::header::Compression;

static XPRESS: wimguard_xpress::Xpress = wimguard_xpress::Xpress;
static LZX: wimguard_lzx::Lzx = wimguard_lzx::Lzx;

/// The codec for a standard compression type; `None` for uncompressed WIMs.
/// Standard codecs are always the built-in native ones, so a standard WIM
/// restores whatever state the plugin registry is in.
pub fn codec_for(c: Compression) -> Result<Option<&'static dyn Codec>> {
    match c {
        Compression::None => Ok(None),
        Compression::Xpress => Ok(Some(&XPRESS)),
        Compression::Lzx => Ok(Some(&LZX)),
        Compression::Lzms => Err(WimError::Unsupported("solid/LZMS compression".into())),
        Compression::Plugin => Err(WimError::Unsupported(
            "archive compressed by a codec plugin, but its codec id is unknown".into(),
        )),
    }
}

/// Finds the codec of a plugin by the id recorded in an archive. Returns a
/// message for the user when it cannot (not installed, disabled, broken).
pub type PluginCodecResolver = dyn Fn(&str) -> std::result::Result<&'static dyn Codec, String> + Send + Sync;

static PLUGIN_RESOLVER: OnceLock<Box<PluginCodecResolver>> = OnceLock::new();

/// Installs the process-wide resolver for plugin codecs (the daemon does,
/// once, with its plugin registry). Returns false when one was set already.
pub fn set_plugin_codec_resolver(resolver: Box<PluginCodecResolver>) -> bool {
    PLUGIN_RESOLVER.set(resolver).is_ok()
}

/// The codec of an archive: the built-in one for standard types, the
/// registered plugin named by `plugin_id` for plugin-compressed archives.
pub fn codec_for_archive(c: Compression, plugin_id: Option<&str>) -> Result<Option<&'static dyn Codec>> {
    if c != Compression::Plugin {
        return codec_for(c);
    }
    let id = plugin_id.ok_or_else(|| {
        WimError::Invalid("the header says a codec plugin compressed this archive, but the XML names none".into())
    })?;
    match PLUGIN_RESOLVER.get() {
        Some(resolve) => resolve(id).map(Some).map_err(WimError::CodecUnavailable),
        None => Err(WimError::CodecUnavailable(format!(
            "this archive is compressed by the codec plugin `{id}`; read it through the wimguard server, \
             which loads plugins"
        ))),
    }
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

    /// Runs `f` with this thread's state.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let i = rayon::current_thread_index().map_or(self.slots.len() - 1, |i| i.min(self.slots.len() - 1));
        let mut guard = self.slots[i].lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }
}

pub type Compressors = PerThread<Box<dyn ChunkCompressor>>;
pub type Decompressors = PerThread<Box<dyn ChunkDecompressor>>;
