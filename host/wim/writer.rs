//! Writing WIMs: a new archive (temp file, fsync, rename) or an in-place
//! append (new data after the old end, blob table before XML, header last).
//!
//! Crash safety: until [`WimWriter::commit`] rewrites the header, the file's
//! header points at the old, intact structures; a new archive only appears
//! under its name once complete. A writer dropped without commit truncates
//! the file back (append) or removes the temp file (new archive).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rayon::prelude::*;
use sha1::{Digest, Sha1 as Sha1Hasher};
use wimguard_sdk::{ChunkCompressor, Codec};

use super::archive::WimArchive;
use super::blob_table::{BlobEntry, BlobIndex, BlobTable, Sha1};
use super::codecs::{codec_for, CodecResolver, Compressors, RemembersRuns, SharedCodec};
use super::error::{Result, WimError};
use super::header::{Compression, Header, HDR_FLAG_READONLY, HDR_FLAG_WRITE_IN_PROGRESS};
use super::integrity;
use super::metadata::ImageTree;
use super::reshdr::{ResHdr, RESHDR_FLAG_COMPRESSED, RESHDR_FLAG_METADATA};
use super::spool::PartSpool;
use super::storage::{ArchiveSink, FileSink, PartUpload};
use super::xml::{ImageInfo, WimXml};

/// Chunk size we write for XPRESS and LZX (the only one Microsoft tools take for LZX).
pub const DEFAULT_CHUNK_SIZE: u32 = 32768;

/// A blob being written chunk by chunk.
pub struct PendingBlob {
    start: u64,
    size: u64,
    chunks: u64,
    /// Bytes of the chunk table reserved before chunk 0.
    table_bytes: u64,
    /// Start of each chunk after the first, relative to the end of the table.
    starts: Vec<u64>,
    data_bytes: u64,
    all_raw: bool,
    single_compressed: bool,
    chunks_seen: u64,
}

impl PendingBlob {
    /// Bytes written so far for this blob (table + chunks).
    pub fn stored_bytes(&self) -> u64 {
        self.table_bytes + self.data_bytes
    }
}

/// One chunk of input and what compressing it produced.
pub struct ChunkJob {
    pub raw: Vec<u8>,
    pub compressed: Vec<u8>,
    /// True when `compressed` is strictly smaller than `raw` and should be stored.
    pub use_compressed: bool,
}

impl ChunkJob {
    /// Compresses the chunk with `c` (chunks under 2 bytes stay raw).
    pub fn compress_with(&mut self, c: &mut dyn ChunkCompressor) {
        self.use_compressed = self.raw.len() >= 2 && c.compress(&self.raw, &mut self.compressed);
    }
}

/// One compressor per worker for `codec` at `chunk_size`, each remembering
/// its chunks of one repeated byte.
fn compressors_for(codec: &SharedCodec, chunk_size: usize) -> Arc<Compressors> {
    Arc::new(Compressors::new(|| {
        Box::new(RemembersRuns::new(codec.compressor(chunk_size))) as Box<dyn ChunkCompressor>
    }))
}

enum Mode {
    /// A new archive being written to `tmp`, renamed to `target` on
    /// commit: the archive's path with symbolic links followed, so a link
    /// to an archive keeps pointing at the archive it replaces.
    New {
        tmp: PathBuf,
        replace: bool,
        target: PathBuf,
    },
    /// An in-place append; on failure the file is cut back to `old_end` and
    /// the old header flags restored.
    Append { old_end: u64, old_flags: u32 },
    /// A new archive handed out in parts (object storage); whoever receives
    /// the parts completes or abandons the upload.
    Upload,
}

/// Writes new blobs and images into a WIM.
pub struct WimWriter {
    path: PathBuf,
    /// Where the bytes go: the archive file, or the parts of an upload.
    out: Box<dyn ArchiveSink>,
    mode: Mode,
    pub header: Header,
    compression: Compression,
    codec: Option<SharedCodec>,
    compressors: Option<Arc<Compressors>>,
    blobs: BlobIndex,
    /// Blobs stored in other archives that images may use (a delta WIM's
    /// `--ref`s): known for dedupe and sizes, left out of the blob table.
    external: HashMap<Sha1, u64>,
    metadata: Vec<BlobEntry>,
    xml: WimXml,
    /// Write an integrity table on commit.
    pub integrity: bool,
    /// Hashes of the archive's old integrity table that are still valid.
    old_integrity: Option<integrity::Reusable>,
    committed: bool,
    /// The caller's cancel flag, handed to every compressor.
    cancel: Option<Arc<AtomicBool>>,
    /// Images the archive had when an append began (0 for a new archive):
    /// those [`load_image`](WimWriter::load_image) can read.
    base_images: u32,
}

fn random_guid() -> [u8; 16] {
    let mut g = [0u8; 16];
    getrandom::fill(&mut g).expect("the OS random source works");
    g
}

/// Takes an exclusive advisory lock (the same one wimlib takes), failing at once if busy.
pub fn lock_exclusive(file: &File, path: &Path) -> Result<()> {
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(WimError::Locked(format!(
                "{} is being modified by another process; try again when it is done",
                path.display()
            )));
        }
        return Err(e.into());
    }
    Ok(())
}

/// The start of the temp names of writers of archive `name`: a hash of the
/// name, not the name itself, so that a temp name is as short as the longest
/// allowed file name needs it to be (the name can be NAME_MAX bytes already).
fn temp_prefix(name: &std::ffi::OsStr) -> String {
    use sha1::{Digest, Sha1};
    use std::os::unix::ffi::OsStrExt;
    let h = Sha1::digest(name.as_bytes());
    let id: String = h[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!(".wimguard-tmp-{id}-")
}

/// Removes temp files of earlier writers of the same archive that died
/// (their lock is gone). Best effort: failures are ignored.
fn remove_stale_temps(dir: &Path, name: &std::ffi::OsStr, ours: &Path) {
    let prefix = temp_prefix(name);
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p == ours || !e.file_name().to_string_lossy().starts_with(&prefix) {
            continue;
        }
        if let Ok(f) = File::open(&p) {
            if lock_exclusive(&f, &p).is_ok() {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
}

/// Renames `from` to `to` unless `to` exists (two captures racing to create
/// the same archive must not clobber each other).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let f = CString::new(from.as_os_str().as_bytes())?;
    let t = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: two valid C strings; renameat2 does not retain them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOSYS) {
        // The filesystem cannot do it atomically: link + unlink also refuses to replace.
        std::fs::hard_link(from, to)?;
        return std::fs::remove_file(from);
    }
    Err(e)
}

fn fsync_dir(path: &Path) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}

impl WimWriter {
    /// Starts a new archive at `path` (written to a temp file next to it).
    pub fn create(path: &Path, compression: Compression, chunk_size: u32) -> Result<WimWriter> {
        let codec = codec_for(compression)?;
        Self::create_with_guid(path, compression, codec, chunk_size, random_guid(), false)
    }

    /// Starts a new archive compressed by a codec plugin: the header gets
    /// [`HDR_FLAG_COMPRESS_PLUGIN`](super::header::HDR_FLAG_COMPRESS_PLUGIN)
    /// and the XML the codec's id, so a restore can find the plugin again.
    pub fn create_with_plugin(path: &Path, codec: SharedCodec, chunk_size: u32) -> Result<WimWriter> {
        check_plugin_chunk_size(&*codec, chunk_size)?;
        let name = codec.name();
        let mut w = Self::create_with_guid(path, Compression::Plugin, Some(codec), chunk_size, random_guid(), false)?;
        w.xml.set_plugin_codec(name);
        Ok(w)
    }

    /// `replace`: the finished file may replace an existing one (rebuilds).
    fn create_with_guid(
        path: &Path,
        compression: Compression,
        codec: Option<SharedCodec>,
        chunk_size: u32,
        guid: [u8; 16],
        replace: bool,
    ) -> Result<WimWriter> {
        let target = super::fsutil::final_target(path).map_err(|e| {
            WimError::Io(io::Error::new(
                e.kind(),
                format!("cannot resolve {}: {e}", path.display()),
            ))
        })?;
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = target
            .file_name()
            .ok_or_else(|| WimError::Invalid(format!("{} is not a file path", path.display())))?;
        let mut suffix = [0u8; 6];
        getrandom::fill(&mut suffix).expect("the OS random source works");
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        let tmp = dir.join(format!("{}{suffix}", temp_prefix(name)));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| {
                WimError::Io(io::Error::new(
                    e.kind(),
                    format!("cannot create {}: {e}", tmp.display()),
                ))
            })?;
        // Held until the writer is gone, so a later writer can tell our temp
        // file from one a killed process left behind.
        lock_exclusive(&file, &tmp)?;
        remove_stale_temps(dir, name, &tmp);
        let mut header = Header::new(compression, chunk_size, guid);
        header.flags |= HDR_FLAG_WRITE_IN_PROGRESS;
        let mut out: Box<dyn ArchiveSink> = Box::new(FileSink::new(file, 0));
        out.write(&header.to_bytes())?;
        Ok(WimWriter {
            path: path.to_path_buf(),
            out,
            mode: Mode::New { tmp, replace, target },
            header,
            compression,
            compressors: codec.as_ref().map(|c| compressors_for(c, chunk_size as usize)),
            codec,
            blobs: BlobIndex::default(),
            external: HashMap::new(),
            metadata: Vec::new(),
            xml: WimXml::default(),
            integrity: false,
            old_integrity: None,
            committed: false,
            cancel: None,
            base_images: 0,
        })
    }

    /// Compresses new chunks with `codec`, another implementation of the
    /// archive's own format (e.g. the bundled wasm XPRESS plugin instead of
    /// the built-in one). Refused when `codec` is a different format.
    pub fn compress_with(&mut self, codec: SharedCodec) -> Result<()> {
        match &self.codec {
            Some(own) if own.name() == codec.name() => {
                let chunk_size = self.header.chunk_size as usize;
                self.compressors = Some(compressors_for(&codec, chunk_size));
                self.codec = Some(codec);
                if let Some(cancel) = self.cancel.clone() {
                    self.watch_cancel(cancel);
                }
                Ok(())
            }
            own => Err(WimError::Invalid(format!(
                "codec `{}` cannot write chunks of a {} archive",
                codec.name(),
                own.as_ref().map_or("uncompressed", |c| c.name())
            ))),
        }
    }

    /// Makes the write observe `cancel`: compressors get it (a codec plugin
    /// stops a call in progress within a tick of it being raised), and
    /// [`WimWriter::compress_chunks`] then ends with [`WimError::Cancelled`].
    pub fn watch_cancel(&mut self, cancel: Arc<AtomicBool>) {
        if let Some(comps) = &self.compressors {
            comps.each(|c| c.watch_cancel(cancel.clone()));
        }
        self.cancel = Some(cancel);
    }

    /// Opens an existing archive for an in-place append, under an exclusive
    /// lock; `codecs` finds its codec when a codec plugin compressed it. The
    /// archive is parsed once, here: its images stay readable through
    /// [`load_image`](Self::load_image).
    pub fn append(path: &Path, codecs: &dyn CodecResolver) -> Result<WimWriter> {
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| {
            WimError::Io(io::Error::new(
                e.kind(),
                format!("cannot open {} for writing: {e}", path.display()),
            ))
        })?;
        lock_exclusive(&file, path)?;
        let mut arch = WimArchive::from_file(path, file.try_clone()?, codecs)?;
        if arch.header.flags & HDR_FLAG_READONLY != 0 {
            return Err(WimError::Unsupported(format!("{} is marked read-only", path.display())));
        }
        let compression = arch.header.compression()?;
        let codec = arch.codec();
        if let (Compression::Plugin, Some(c)) = (compression, &codec) {
            // A codec upgrade may have lowered its limit below the archive's chunks.
            check_plugin_chunk_size(&**c, arch.header.chunk_size)?;
        }
        let old_end = arch.append_point()?;
        let old_flags = arch.header.flags;
        // Mark the file as being written, exactly as wimlib does: only the flags word.
        file.write_all_at(&(old_flags | HDR_FLAG_WRITE_IN_PROGRESS).to_le_bytes(), 16)?;
        let chunk_size = arch.header.chunk_size;
        let integrity = !arch.header.integrity.is_zero();
        let old_integrity = if integrity {
            let raw = arch
                .context()
                .read_all(&arch.header.integrity, super::archive::METADATA_MAX, "integrity table")
                .ok();
            let covered_end = arch.header.blob_table.offset + arch.header.blob_table.size_in_wim;
            raw.and_then(|r| integrity::Reusable::parse(&r, covered_end))
        } else {
            None
        };
        Ok(WimWriter {
            path: path.to_path_buf(),
            out: Box::new(FileSink::new(file, old_end)),
            mode: Mode::Append { old_end, old_flags },
            header: arch.header.clone(),
            compression,
            compressors: codec.as_ref().map(|c| compressors_for(c, chunk_size as usize)),
            codec,
            // Taken, not copied: the archive is not used after this.
            blobs: std::mem::take(&mut arch.blobs),
            external: HashMap::new(),
            metadata: std::mem::take(&mut arch.metadata),
            xml: std::mem::take(&mut arch.xml),
            integrity,
            old_integrity,
            committed: false,
            cancel: None,
            base_images: arch.header.image_count,
        })
    }

    /// The archive being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Blob-table entries held in memory (own and external blobs).
    pub fn blob_entries(&self) -> u64 {
        (self.blobs.len() + self.external.len()) as u64
    }

    /// Images the archive had when the append began (0 for a new archive).
    pub fn base_image_count(&self) -> u32 {
        self.base_images
    }

    /// Loads image `index` (1-based) of those the archive had when the
    /// append began: the previous backup, whose file hashes a capture may
    /// reuse, or an image about to be deleted. Read from the archive file
    /// the writer holds, so the archive is not opened or parsed again.
    pub fn load_image(&self, index: u32) -> Result<ImageTree> {
        let entry = (1..=self.base_images)
            .contains(&index)
            .then(|| &self.metadata[(index - 1) as usize])
            .ok_or_else(|| WimError::NotFound(format!("image {index} does not exist")))?;
        let Some(file) = self.out.file_ref() else {
            return Err(WimError::NotFound(format!("image {index} does not exist")));
        };
        super::archive::load_tree_at(
            file,
            entry,
            self.codec.as_deref(),
            self.header.chunk_size,
            &format!("metadata of image {index}"),
        )
    }

    /// (device, inode) of the file being written, so a capture can skip its
    /// own output when the archive lives inside the source tree.
    pub fn output_identity(&self) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let file = self.out.file_ref()?;
        file.metadata().ok().map(|m| (m.dev(), m.ino()))
    }

    /// The per-thread compressors (none for an uncompressed archive), for
    /// a compression stage that runs beside the writing.
    pub fn compressors(&self) -> Option<Arc<Compressors>> {
        self.compressors.clone()
    }

    pub fn compression(&self) -> Compression {
        self.compression
    }

    pub fn chunk_size(&self) -> u32 {
        self.header.chunk_size
    }

    pub fn xml(&self) -> &WimXml {
        &self.xml
    }

    pub fn has_blob(&self, hash: &Sha1) -> bool {
        self.blobs.contains_key(hash) || self.external.contains_key(hash)
    }

    /// Compresses chunks in parallel on all cores (a no-op for uncompressed
    /// WIMs). A codec that *failed* (a plugin that crashed or hit a limit)
    /// ends the write with [`WimError::CodecFailed`]: storing its chunks raw
    /// would hide a broken codec behind a silently bigger archive.
    pub fn compress_chunks(&self, jobs: &mut [ChunkJob]) -> Result<()> {
        let Some(comps) = &self.compressors else { return Ok(()) };
        jobs.par_iter_mut().for_each(|j| {
            comps.with(|c| j.compress_with(c.as_mut()));
        });
        let mut failure = None;
        comps.each(|c| {
            if let Some(f) = c.take_failure() {
                failure.get_or_insert(f);
            }
        });
        if self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
            // Chunks may have been left uncompressed (a codec stopped mid
            // call): the write is being abandoned, not failed by the codec.
            return Err(WimError::Cancelled);
        }
        match failure {
            Some(f) => Err(WimError::CodecFailed(f)),
            None => Ok(()),
        }
    }

    /// Reserves room for a blob of `size` bytes.
    pub fn begin_blob(&mut self, size: u64) -> Result<PendingBlob> {
        let start = self.out.pos();
        let (chunks, table_bytes) = if self.codec.is_some() && size > 0 {
            let n = size.div_ceil(self.header.chunk_size as u64);
            let width = if size > u32::MAX as u64 { 8 } else { 4 };
            (n, (n - 1) * width)
        } else {
            (size.div_ceil(self.header.chunk_size.max(1) as u64), 0)
        };
        // Until the blob is done, its start may be moved back to (a
        // duplicate) and its chunk table is still to be filled in.
        self.out.hold(start, start + table_bytes);
        if table_bytes > 0 {
            self.out.write(&vec![0u8; table_bytes as usize])?;
        }
        Ok(PendingBlob {
            start,
            size,
            chunks,
            table_bytes,
            starts: Vec::new(),
            data_bytes: 0,
            all_raw: true,
            single_compressed: false,
            chunks_seen: 0,
        })
    }

    /// Appends the next chunk of a pending blob.
    pub fn blob_chunk(&mut self, b: &mut PendingBlob, job: &ChunkJob) -> Result<()> {
        let compressed = self.codec.is_some() && job.use_compressed;
        if compressed {
            b.all_raw = false;
            b.single_compressed = true;
        }
        self.blob_bytes(b, if compressed { &job.compressed } else { &job.raw })
    }

    /// Writes the stored bytes of the next chunk of `b`.
    fn blob_bytes(&mut self, b: &mut PendingBlob, data: &[u8]) -> Result<()> {
        if b.chunks_seen > 0 {
            b.starts.push(b.data_bytes);
        }
        b.chunks_seen += 1;
        self.out.write(data)?;
        b.data_bytes += data.len() as u64;
        Ok(())
    }

    /// Finishes a blob. If an identical blob is already stored, the bytes just
    /// written are dropped and `false` is returned.
    pub fn finish_blob(&mut self, b: PendingBlob, hash: Sha1) -> Result<bool> {
        if self.has_blob(&hash) || b.size == 0 {
            self.out.rewind(b.start)?;
            self.out.release(b.start)?;
            return Ok(false);
        }
        let reshdr = self.finish_resource(b, 0)?;
        self.blobs.insert(BlobEntry {
            reshdr,
            part_number: 1,
            refcount: 0,
            hash,
        });
        Ok(true)
    }

    /// Drops a blob that could not be completed.
    pub fn abandon_blob(&mut self, b: PendingBlob) -> Result<()> {
        self.out.rewind(b.start)?;
        self.out.release(b.start)?;
        Ok(())
    }

    fn finish_resource(&mut self, b: PendingBlob, extra_flags: u8) -> Result<ResHdr> {
        let start = b.start;
        let r = self.place_resource(b, extra_flags)?;
        self.out.release(start)?;
        Ok(r)
    }

    fn place_resource(&mut self, b: PendingBlob, extra_flags: u8) -> Result<ResHdr> {
        debug_assert!(b.chunks_seen == b.chunks || self.codec.is_none());
        let mut r = ResHdr {
            size_in_wim: b.size,
            flags: extra_flags,
            offset: b.start,
            original_size: b.size,
        };
        // Every chunk stayed raw: a file drops the table and stores the blob
        // uncompressed, as wimlib does, by moving the data down. Parts
        // already handed over cannot move, so there the blob keeps its
        // table of raw chunks (valid, and 4 bytes per chunk).
        let movable = self.codec.is_none() || b.table_bytes == 0 || self.out.file().is_some();
        if (self.codec.is_none() || b.all_raw) && movable {
            if b.table_bytes > 0 {
                let out = self.out.file().expect("movable");
                out.move_down(b.start + b.table_bytes, b.start, b.size)?;
            }
            return Ok(r);
        }
        if b.chunks == 1 {
            debug_assert!(b.single_compressed);
        }
        let width = if b.size > u32::MAX as u64 { 8 } else { 4 };
        let mut table = Vec::with_capacity(b.table_bytes as usize);
        for s in &b.starts {
            if width == 8 {
                table.extend_from_slice(&s.to_le_bytes());
            } else {
                table.extend_from_slice(&(*s as u32).to_le_bytes());
            }
        }
        self.out.patch(b.start, &table)?;
        r.size_in_wim = b.table_bytes + b.data_bytes;
        r.flags |= RESHDR_FLAG_COMPRESSED;
        Ok(r)
    }

    /// Stores an in-memory blob (metadata, small blobs) whole. Compressed
    /// archives take it a batch of chunks at a time and uncompressed ones
    /// write it as it is, so a large metadata resource is never copied
    /// whole again.
    pub fn write_buffer(&mut self, data: &[u8], extra_flags: u8) -> Result<ResHdr> {
        /// Chunks compressed together (in parallel) per batch.
        const BATCH_CHUNKS: usize = 64;
        let mut b = self.begin_blob(data.len() as u64)?;
        if self.codec.is_none() {
            self.blob_bytes(&mut b, data)?;
            return self.finish_resource(b, extra_flags);
        }
        let cs = self.header.chunk_size.max(1) as usize;
        for batch in data.chunks(cs * BATCH_CHUNKS) {
            let mut jobs: Vec<ChunkJob> = batch
                .chunks(cs)
                .map(|c| ChunkJob {
                    raw: c.to_vec(),
                    compressed: Vec::new(),
                    use_compressed: false,
                })
                .collect();
            self.compress_chunks(&mut jobs)?;
            for j in &jobs {
                self.blob_chunk(&mut b, j)?;
            }
        }
        self.finish_resource(b, extra_flags)
    }

    /// Stores a small blob given whole, deduplicated by hash. Returns its hash.
    pub fn add_small_blob(&mut self, data: &[u8]) -> Result<Sha1> {
        let hash: Sha1 = Sha1Hasher::digest(data).into();
        if !data.is_empty() && !self.has_blob(&hash) {
            let reshdr = self.write_buffer(data, 0)?;
            self.blobs.insert(BlobEntry {
                reshdr,
                part_number: 1,
                refcount: 0,
                hash,
            });
        }
        Ok(hash)
    }

    /// Adds an image: writes its metadata resource, counts its references,
    /// records it in the XML. All blobs it names must already be stored.
    pub fn add_image(&mut self, tree: &ImageTree, mut info: ImageInfo) -> Result<u32> {
        for (what, v) in [("name", &info.name), ("description", &info.description)] {
            if !super::xml::valid_xml_text(v) {
                return Err(WimError::Invalid(format!(
                    "image {what} contains control characters, which WIM's XML cannot hold"
                )));
            }
        }
        if self.xml.name_in_use(&info.name) {
            return Err(WimError::Invalid(format!(
                "an image named {:?} already exists in {}",
                info.name,
                self.path.display()
            )));
        }
        let refs = tree.blob_references();
        for (h, n) in &refs {
            if self.external.contains_key(h) && !self.blobs.contains_key(h) {
                continue; // counted in the archive that holds it
            }
            let e = self.blobs.get_mut(h).ok_or_else(|| {
                WimError::Invalid(format!(
                    "image refers to blob {} that was never stored",
                    super::archive::hex(h)
                ))
            })?;
            e.refcount = e.refcount.saturating_add(*n);
        }
        // Freed before the metadata resource is built: that is the peak.
        drop(refs);
        let bytes = tree.serialize();
        let hash: Sha1 = Sha1Hasher::digest(&bytes).into();
        let reshdr = self.write_buffer(&bytes, RESHDR_FLAG_METADATA)?;
        self.metadata.push(BlobEntry {
            reshdr,
            part_number: 1,
            refcount: 1,
            hash,
        });
        self.header.image_count += 1;
        info.index = self.header.image_count;
        let size_of = |h: &Sha1| {
            self.blobs
                .get(h)
                .map(|b| b.reshdr.original_size)
                .or_else(|| self.external.get(h).copied())
        };
        let (dirs, files, total, hard) = image_stats(tree, &size_of);
        info.dir_count = dirs;
        info.file_count = files;
        info.total_bytes = total;
        info.hard_link_bytes = hard;
        self.xml.add_image(&info);
        Ok(info.index)
    }

    /// Writes blob table, XML and (optionally) integrity table, makes them
    /// durable, then points the header at them.
    pub fn commit(mut self) -> Result<()> {
        if matches!(self.mode, Mode::Upload) {
            return Err(WimError::Invalid(
                "an archive written for upload is finished with finish_upload".into(),
            ));
        }
        let (table_at, table_len) = self.write_tables()?;
        let out = self.out.file().expect("a file-backed writer");
        out.flush()?;
        if self.integrity {
            let t = integrity::build(&out.file, table_at + table_len, self.old_integrity.as_ref())?;
            let at = out.pos();
            out.write(&t)?;
            out.flush()?;
            self.header.integrity = ResHdr {
                size_in_wim: t.len() as u64,
                flags: 0,
                offset: at,
                original_size: t.len() as u64,
            };
        } else {
            self.header.integrity = ResHdr::default();
        }
        let end = out.pos();
        out.file.set_len(end)?;
        out.file.sync_all()?;
        self.header.flags &= !HDR_FLAG_WRITE_IN_PROGRESS;
        // The bootable image (wimlib's `--boot`) stays bootable; its
        // metadata resource is wherever the image's is now.
        let boot = self.header.boot_index as usize;
        match self.metadata.get(boot.wrapping_sub(1)) {
            Some(m) if boot > 0 => self.header.boot_metadata = m.reshdr,
            _ => {
                self.header.boot_index = 0;
                self.header.boot_metadata = ResHdr::default();
            }
        }
        out.file.write_all_at(&self.header.to_bytes(), 0)?;
        out.file.sync_all()?;
        if let Mode::New { tmp, replace, target } = &self.mode {
            let r = if *replace {
                std::fs::rename(tmp, target)
            } else {
                rename_noreplace(tmp, target)
            };
            r.map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    WimError::Locked(format!(
                        "{} was created by someone else while we wrote it; nothing was changed",
                        self.path.display()
                    ))
                } else {
                    WimError::Io(io::Error::new(
                        e.kind(),
                        format!("cannot rename {} to {}: {e}", tmp.display(), target.display()),
                    ))
                }
            })?;
            fsync_dir(target)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl WimWriter {
    /// Starts a new archive written as parts for object storage (see
    /// [`PartSpool`]); `name` names it in messages. Finish it with
    /// [`finish_upload`](Self::finish_upload).
    pub fn create_for_upload(
        name: &str,
        compression: Compression,
        codec: Option<SharedCodec>,
        chunk_size: u32,
        upload: Box<dyn PartUpload>,
    ) -> Result<WimWriter> {
        if compression == Compression::Plugin {
            let c = (codec.as_ref())
                .ok_or_else(|| WimError::Invalid("a plugin-compressed archive needs its codec".into()))?;
            check_plugin_chunk_size(&**c, chunk_size)?;
        }
        let codec = match compression {
            Compression::Plugin => codec,
            c => codec.or(codec_for(c)?),
        };
        let mut header = Header::new(compression, chunk_size, random_guid());
        header.flags |= HDR_FLAG_WRITE_IN_PROGRESS;
        let mut spool = PartSpool::new(upload);
        // The header is rewritten last.
        spool.hold(0, super::header::HEADER_SIZE as u64);
        let mut out: Box<dyn ArchiveSink> = Box::new(spool);
        out.write(&header.to_bytes())?;
        let mut xml = WimXml::default();
        if compression == Compression::Plugin {
            xml.set_plugin_codec(codec.as_ref().expect("checked").name());
        }
        Ok(WimWriter {
            path: PathBuf::from(name),
            out,
            mode: Mode::Upload,
            header,
            compression,
            compressors: codec.as_ref().map(|c| compressors_for(c, chunk_size as usize)),
            codec,
            blobs: BlobIndex::default(),
            external: HashMap::new(),
            metadata: Vec::new(),
            xml,
            integrity: false,
            old_integrity: None,
            committed: false,
            cancel: None,
            base_images: 0,
        })
    }

    /// Lets images use blobs stored elsewhere (the earlier archives of a
    /// delta chain, which a reader must be given as references): `(hash,
    /// uncompressed size)`. They are not copied and not in the blob table.
    pub fn add_external_blobs(&mut self, blobs: impl IntoIterator<Item = (Sha1, u64)>) {
        self.external.extend(blobs);
    }

    /// Every blob an image may use, stored here or external: (hash,
    /// uncompressed size).
    pub fn blob_hashes_and_sizes(&self) -> impl Iterator<Item = (Sha1, u64)> + '_ {
        let own = self.blobs.values().map(|b| (b.hash, b.reshdr.original_size));
        own.chain(self.external.iter().map(|(h, s)| (*h, *s)))
    }

    /// The blobs stored in this archive so far (not the external ones).
    pub fn stored_blobs(&self) -> impl Iterator<Item = &BlobEntry> {
        self.blobs.values()
    }

    /// The metadata resources of the images, in image order.
    pub fn metadata_entries(&self) -> &[BlobEntry] {
        &self.metadata
    }

    /// Writes the blob table and the XML at the end; returns where the table starts and its length.
    fn write_tables(&mut self) -> Result<(u64, u64)> {
        let table = BlobTable::to_bytes(&self.metadata, self.blobs.values());
        let table_at = self.out.pos();
        self.out.write(&table)?;
        self.header.blob_table = ResHdr {
            size_in_wim: table.len() as u64,
            flags: RESHDR_FLAG_METADATA,
            offset: table_at,
            original_size: table.len() as u64,
        };
        let xml_at = self.out.pos();
        self.xml.set_total_bytes(xml_at);
        let xml = self.xml.to_bytes();
        self.out.write(&xml)?;
        self.header.xml = ResHdr {
            size_in_wim: xml.len() as u64,
            flags: RESHDR_FLAG_METADATA,
            offset: xml_at,
            original_size: xml.len() as u64,
        };
        Ok((table_at, table.len() as u64))
    }

    /// Finishes an archive written for upload: blob table, XML, the final
    /// header, and every part not yet handed over. Returns the archive's
    /// size and number of parts; completing the upload is the caller's.
    pub fn finish_upload(mut self) -> Result<(u64, u32)> {
        if !matches!(self.mode, Mode::Upload) {
            return Err(WimError::Invalid(
                "finish_upload is for archives written for upload".into(),
            ));
        }
        self.write_tables()?;
        self.header.integrity = ResHdr::default();
        self.header.flags &= !HDR_FLAG_WRITE_IN_PROGRESS;
        self.header.boot_index = 0;
        self.header.boot_metadata = ResHdr::default();
        let header = self.header.to_bytes();
        self.out.patch(0, &header)?;
        self.committed = true;
        let out = std::mem::replace(&mut self.out, Box::new(PartSpool::new(Box::new(NoUpload))));
        Ok(out.finish()?)
    }
}

/// Stands in for a spool's receiver after it was finished.
struct NoUpload;

impl PartUpload for NoUpload {
    fn put_part(&mut self, _: u32, _: Vec<u8>, _: Option<u64>) -> io::Result<()> {
        Err(io::Error::other("the archive was already finished"))
    }
}

impl Drop for WimWriter {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        match &self.mode {
            Mode::New { tmp, .. } => {
                let _ = std::fs::remove_file(tmp);
            }
            Mode::Append { old_end, old_flags } => {
                // Cut off what we wrote and clear our in-progress mark.
                if let Some(out) = self.out.file() {
                    let _ = out.file.set_len(*old_end);
                    let _ = out.file.write_all_at(&old_flags.to_le_bytes(), 16);
                    let _ = out.file.sync_all();
                }
            }
            // The receiver of the parts aborts its upload.
            Mode::Upload => {}
        }
    }
}

/// (directories, non-directories, total bytes, hard-link bytes) as wimlib counts them.
pub fn image_stats(tree: &ImageTree, size_of: &dyn Fn(&Sha1) -> Option<u64>) -> (u64, u64, u64, u64) {
    let counts = tree.link_counts();
    let (mut dirs, mut files, mut total, mut hard) = (0u64, 0u64, 0u64, 0u64);
    for d in tree.dentries.iter().skip(1) {
        if tree.inodes[d.inode].is_dir() {
            dirs += 1;
        } else {
            files += 1;
        }
    }
    // wimlib counts the root directory too.
    dirs += 1;
    for (i, ino) in tree.inodes.iter().enumerate() {
        let size: u64 = ino.blob_hashes().filter_map(size_of).sum();
        total += size * counts[i] as u64;
        hard += size * (counts[i] as u64).saturating_sub(1);
    }
    (dirs, files, total, hard)
}

/// Removes image `index` by rebuilding the archive without it: blobs no image
/// still uses are dropped, everything else is copied as stored (no
/// recompression). The GUID and integrity-table choice are kept. Crash-safe:
/// the rebuilt file replaces the old one by rename.
pub fn delete_image(path: &Path, index: u32, codecs: &dyn CodecResolver) -> Result<()> {
    rebuild(path, Some(index), codecs)
}

/// Rebuilds the archive with every image, dropping the bytes nothing uses
/// any more (left by soft deletes, failed appends of other tools, …):
/// `wimguard archive optimize`. Crash-safe like [`delete_image`].
pub fn optimize(path: &Path, codecs: &dyn CodecResolver) -> Result<()> {
    rebuild(path, None, codecs)
}

fn rebuild(path: &Path, drop: Option<u32>, codecs: &dyn CodecResolver) -> Result<()> {
    let lock_file = OpenOptions::new().read(true).write(true).open(path)?;
    lock_exclusive(&lock_file, path)?;
    let arch = WimArchive::from_file(path, lock_file.try_clone()?, codecs)?;
    if let Some(index) = drop {
        if index == 0 || index > arch.image_count() {
            return Err(WimError::NotFound(format!(
                "image {index} does not exist ({} has {} images)",
                path.display(),
                arch.image_count()
            )));
        }
    }
    let index = drop.unwrap_or(0);
    let compression = arch.header.compression()?;
    let mut w = WimWriter::create_with_guid(
        path,
        compression,
        arch.codec(),
        arch.header.chunk_size,
        arch.header.guid,
        true,
    )?;
    w.header.flags = (w.header.flags & !super::header::HDR_FLAG_RP_FIX)
        | (arch.header.flags & super::header::HDR_FLAG_RP_FIX)
        | HDR_FLAG_WRITE_IN_PROGRESS;
    w.integrity = !arch.header.integrity.is_zero();
    w.header.boot_index = arch.header.boot_index;
    if let Some(index) = drop {
        w.header.boot_index = boot_index_without(w.header.boot_index, index);
    }
    // The rebuilt file takes the old one's place: with its mode, owner and
    // extended attributes (a private archive stays private).
    if let Some(out) = w.out.file() {
        super::fsutil::copy_file_attributes(&lock_file, &out.file).map_err(|e| {
            WimError::Io(io::Error::new(
                e.kind(),
                format!(
                    "cannot give the rebuilt archive the mode and owner of {}: {e}",
                    path.display()
                ),
            ))
        })?;
    }
    let mut refs: HashMap<Sha1, u32> = HashMap::new();
    let mut kept = Vec::new();
    for i in 1..=arch.image_count() {
        if i == index {
            continue;
        }
        let tree = arch.load_image(i)?;
        for (h, n) in tree.blob_references() {
            *refs.entry(h).or_default() += n;
        }
        kept.push(i);
    }
    // Copy kept blobs in their old file order, so reads stay sequential.
    let mut order: Vec<&BlobEntry> = arch.blobs.values().filter(|b| refs.contains_key(&b.hash)).collect();
    order.sort_by_key(|b| b.reshdr.offset);
    for b in order {
        let reshdr = w.copy_raw(&arch, &b.reshdr)?;
        w.blobs.insert(BlobEntry {
            reshdr,
            part_number: 1,
            refcount: refs[&b.hash],
            hash: b.hash,
        });
    }
    for i in kept {
        let m = &arch.metadata[(i - 1) as usize];
        let reshdr = w.copy_raw(&arch, &m.reshdr)?;
        w.metadata.push(BlobEntry {
            reshdr,
            part_number: 1,
            refcount: 1,
            hash: m.hash,
        });
    }
    let mut xml = arch.xml.clone();
    if drop.is_some() {
        xml.remove_image(index);
    }
    w.xml = xml;
    w.header.image_count = arch.image_count() - drop.is_some() as u32;
    debug_assert_eq!(w.xml.images().len() as u32, w.header.image_count);
    w.commit()
}

impl WimWriter {
    /// Copies a resource from another archive with the same codec and chunk size, byte for byte.
    fn copy_raw(&mut self, src: &WimArchive, r: &ResHdr) -> Result<ResHdr> {
        self.copy_resource(&*src.source, r)
    }

    /// Copies resource `r` of another archive read through `src` (same
    /// codec and chunk size: a rebuild or a consolidation), byte for byte,
    /// and returns where it now lies. Record it with [`add_copied_blob`]
    /// or [`add_copied_image`](Self::add_copied_image).
    pub fn copy_resource(&mut self, src: &dyn super::storage::ReadAt, r: &ResHdr) -> Result<ResHdr> {
        r.end_within(src.size(), "resource")?;
        src.will_read(r.offset, r.size_in_wim);
        let at = self.out.pos();
        let mut buf = vec![0u8; (r.size_in_wim.min(1 << 20)) as usize];
        let mut done = 0u64;
        while done < r.size_in_wim {
            let n = (r.size_in_wim - done).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], r.offset + done)?;
            self.out.write(&buf[..n])?;
            done += n as u64;
        }
        Ok(ResHdr { offset: at, ..*r })
    }

    /// Records a blob whose resource was copied with [`copy_resource`](Self::copy_resource).
    pub fn add_copied_blob(&mut self, entry: BlobEntry) {
        self.blobs.insert(entry);
    }

    /// Records an image whose metadata resource was copied with
    /// [`copy_resource`](Self::copy_resource); `info` is its XML entry from
    /// the old archive (renumbered here). Returns its new index.
    pub fn add_copied_image(&mut self, metadata: BlobEntry, mut info: ImageInfo) -> u32 {
        self.metadata.push(metadata);
        self.header.image_count += 1;
        info.index = self.header.image_count;
        self.xml.add_image(&info);
        info.index
    }
}

/// Tidies an archive after its writer was killed: removes temp files of
/// dead writers next to it, and when the header still carries
/// WRITE_IN_PROGRESS, cuts off the partial data after the last complete
/// structure and clears the mark. The header itself always points at
/// complete structures (it is rewritten last), so nothing valid is lost.
/// Returns whether the archive needed it.
pub fn repair_after_crash(path: &Path, codecs: &dyn CodecResolver) -> Result<bool> {
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        remove_stale_temps(dir, name, Path::new(""));
    }
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    lock_exclusive(&file, path)?;
    let arch = WimArchive::from_file(path, file.try_clone()?, codecs)?;
    if arch.header.flags & HDR_FLAG_WRITE_IN_PROGRESS == 0 {
        return Ok(false);
    }
    // Everything the (complete) header refers to ends at the append point;
    // what lies beyond is the dead writer's partial data.
    file.set_len(arch.append_point()?)?;
    file.write_all_at(&(arch.header.flags & !HDR_FLAG_WRITE_IN_PROGRESS).to_le_bytes(), 16)?;
    file.sync_all()?;
    Ok(true)
}

/// Refuses a chunk size a codec plugin cannot take or the format does not
/// allow (a power of two from 4 KiB to 2 MiB, at most the codec's
/// `max-chunk-size`), before anything is written.
pub fn check_plugin_chunk_size(codec: &dyn Codec, chunk_size: u32) -> Result<()> {
    let (min, max) = Compression::Plugin.chunk_size_range();
    let max = max.min(u32::try_from(codec.max_chunk_size()).unwrap_or(u32::MAX));
    if !chunk_size.is_power_of_two() || chunk_size < min || chunk_size > max {
        return Err(WimError::Invalid(format!(
            "chunk size {chunk_size} is not usable with codec `{}` (powers of two from {min} to {max}; \
             the codec's max-chunk-size is {})",
            codec.name(),
            codec.max_chunk_size()
        )));
    }
    Ok(())
}

/// Removes image `index` without rebuilding (wimlib's `delete --soft`): the
/// blob table, XML and header are rewritten as an append would (crash-safe
/// the same way); the image's metadata and the blobs only it used stay in
/// the file (the blobs in the table with a count of 0) until [`optimize`].
/// Cost: one table, not the archive. Returns the bytes that became
/// reclaimable.
pub fn soft_delete_image(path: &Path, index: u32, codecs: &dyn CodecResolver) -> Result<u64> {
    soft_delete_images(path, &[index], codecs)
}

/// [`soft_delete_image`] for several images at once: one table rewrite.
pub fn soft_delete_images(path: &Path, indexes: &[u32], codecs: &dyn CodecResolver) -> Result<u64> {
    soft_delete_with(WimWriter::append(path, codecs)?, indexes)
}

/// [`soft_delete_images`] through a writer the caller opened for the
/// append (and may have read the images through first).
pub fn soft_delete_with(mut w: WimWriter, indexes: &[u32]) -> Result<u64> {
    let path = w.path.clone();
    let mut indexes = indexes.to_vec();
    indexes.sort_unstable();
    indexes.dedup();
    let mut refs: HashMap<Sha1, u32> = HashMap::new();
    for &index in &indexes {
        if index == 0 || index > w.base_image_count() {
            return Err(WimError::NotFound(format!(
                "image {index} does not exist ({} has {} images)",
                path.display(),
                w.base_image_count()
            )));
        }
        // References the image holds (per name, as the table counts them).
        for (h, n) in w.load_image(index)?.blob_references() {
            *refs.entry(h).or_default() += n;
        }
    }
    // A blob whose count falls to 0 stays in the table (as wimlib's soft
    // delete leaves it): the counts are the archive's word, not proof. A
    // table whose counts are too low (another tool's bug, a hand edit)
    // would otherwise lose blobs the other images still use. Only a
    // rebuild, which counts every image's references, drops blobs.
    let mut freed = 0u64;
    for (h, n) in refs {
        if let Some(e) = w.blobs.get_mut(&h) {
            let was = e.refcount;
            e.refcount = e.refcount.saturating_sub(n);
            if e.refcount == 0 && was > 0 {
                freed += e.reshdr.size_in_wim;
            }
        }
    }
    // Highest first, so the lower indexes stay valid.
    for &index in indexes.iter().rev() {
        w.header.boot_index = boot_index_without(w.header.boot_index, index);
        let meta = w.metadata.remove((index - 1) as usize);
        freed += meta.reshdr.size_in_wim;
        w.xml.remove_image(index);
        w.header.image_count -= 1;
    }
    w.commit()?;
    Ok(freed)
}

/// The bootable image's index once image `removed` is gone: the same image
/// one lower when it came after, none when it was the one removed.
fn boot_index_without(boot: u32, removed: u32) -> u32 {
    match boot.cmp(&removed) {
        std::cmp::Ordering::Less => boot,
        std::cmp::Ordering::Equal => 0,
        std::cmp::Ordering::Greater => boot - 1,
    }
}

/// Bytes of `arch` no image uses: what [`optimize`] would reclaim (the space
/// of soft-deleted images, old tables appends left behind, and blobs whose
/// reference count is 0, which wimlib's `delete --soft` keeps in the table).
pub fn reclaimable_bytes(arch: &WimArchive) -> u64 {
    let used: u64 = super::header::HEADER_SIZE as u64
        + arch.header.blob_table.size_in_wim
        + arch.header.xml.size_in_wim
        + arch.header.integrity.size_in_wim
        + arch.metadata.iter().map(|m| m.reshdr.size_in_wim).sum::<u64>()
        + arch
            .blobs
            .values()
            .filter(|b| b.refcount > 0)
            .map(|b| b.reshdr.size_in_wim)
            .sum::<u64>();
    arch.file_size.saturating_sub(used)
}
