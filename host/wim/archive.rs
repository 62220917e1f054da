//! Opening a WIM for reading: header, blob table, XML, images, blobs.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha1::{Digest, Sha1 as Sha1Hasher};

use super::blob_table::{BlobEntry, BlobIndex, BlobTable, Sha1};
use super::codecs::{codec_for_archive, CodecResolver, Decompressors, SharedCodec};
use super::error::{invalid, Result, WimError};
use super::header::{Header, HEADER_SIZE, VERSION_SOLID};
use super::metadata::ImageTree;
use super::resource::ResourceContext;
use super::storage::ReadAt;
use super::xml::{ImageInfo, WimXml, XML_MAX};

/// Largest metadata resource or blob table we load into memory.
pub const METADATA_MAX: u64 = 1 << 30;

/// An open WIM archive (read side).
pub struct WimArchive {
    /// The file's path, or the name of a remote object (for messages).
    pub path: PathBuf,
    /// Where the bytes come from (a local file, a remote object).
    pub source: Arc<dyn ReadAt>,
    pub file_size: u64,
    pub header: Header,
    /// File-data blobs of this archive's own blob table, by SHA-1.
    pub blobs: BlobIndex,
    /// Blobs this archive's images use that live in other archives (wimlib's
    /// `--ref`: the earlier objects of a delta chain), by SHA-1: which of
    /// `ref_sources` holds each and where.
    refs: HashMap<Sha1, (usize, BlobEntry)>,
    ref_sources: Vec<(PathBuf, Arc<dyn ReadAt>)>,
    /// Metadata resources in image order.
    pub metadata: Vec<BlobEntry>,
    pub xml: WimXml,
    ctx_codec: Option<SharedCodec>,
    decompressors: Option<Decompressors>,
}

/// What an archive says about itself without its blob table or images:
/// enough to check a request against it (codec, image names) cheaply.
pub struct ArchiveSummary {
    pub header: Header,
    pub xml: WimXml,
    /// The codec of its chunks (None: uncompressed).
    pub codec: Option<SharedCodec>,
}

/// Reads the header and the XML of the archive at `path` (not its blob
/// table nor any image); `codecs` finds a plugin codec.
pub fn peek(path: &Path, codecs: &dyn CodecResolver) -> Result<ArchiveSummary> {
    let file = open_file(path)?;
    let header = read_header(path, &file)?;
    let ctx = ResourceContext::new(&file, ReadAt::size(&file), None, header.chunk_size, None);
    if header.xml.is_compressed() {
        return invalid("the XML data is marked compressed");
    }
    let xml = WimXml::parse(&ctx.read_all(&header.xml, XML_MAX, "XML data")?, header.image_count)?;
    let codec = codec_for_archive(header.compression()?, xml.plugin_codec().as_deref(), codecs)?;
    Ok(ArchiveSummary { header, xml, codec })
}

/// Opens an archive file for reading, naming it in the error.
fn open_file(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| {
        WimError::Io(std::io::Error::new(
            e.kind(),
            format!("cannot open {}: {e}", path.display()),
        ))
    })
}

/// Reads and checks the header of the archive `source` holds.
fn read_header(path: &Path, source: &dyn ReadAt) -> Result<Header> {
    let file_size = source.size();
    if file_size < HEADER_SIZE as u64 {
        return invalid(format!(
            "{} is only {file_size} bytes, too short to be a WIM",
            path.display()
        ));
    }
    let mut hb = [0u8; HEADER_SIZE];
    source.read_exact_at(&mut hb, 0)?;
    Header::parse(&hb)
}

/// Formats a SHA-1 as lowercase hex.
pub fn hex(h: &Sha1) -> String {
    Hex(h).to_string()
}

/// A SHA-1 shown as lowercase hex, formatted only when displayed.
pub struct Hex<'a>(pub &'a Sha1);

impl std::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl WimArchive {
    /// Opens the archive at `path`; `codecs` finds its codec when a codec
    /// plugin compressed it.
    pub fn open(path: &Path, codecs: &dyn CodecResolver) -> Result<WimArchive> {
        let file = open_file(path)?;
        Self::from_file(path, file, codecs)
    }

    pub fn from_file(path: &Path, file: File, codecs: &dyn CodecResolver) -> Result<WimArchive> {
        Self::from_source(path, Arc::new(file), codecs)
    }

    /// Opens the archive whose bytes `source` reads; `path` names it in messages.
    pub fn from_source(path: &Path, source: Arc<dyn ReadAt>, codecs: &dyn CodecResolver) -> Result<WimArchive> {
        let file_size = source.size();
        let header = read_header(path, &*source)?;
        let compression = header.compression()?;
        // The blob table and the XML are never compressed, so they are read
        // before the codec is known (a plugin codec is named in the XML).
        let ctx = ResourceContext::new(&*source, file_size, None, header.chunk_size, None);
        if header.blob_table.is_compressed() || header.xml.is_compressed() {
            return invalid("blob table or XML is marked compressed");
        }
        // Both usually sit together at the end: one request for a remote object.
        if !header.blob_table.is_zero() && !header.xml.is_zero() {
            let lo = header.blob_table.offset.min(header.xml.offset);
            let hi = (header.blob_table.offset.saturating_add(header.blob_table.size_in_wim))
                .max(header.xml.offset.saturating_add(header.xml.size_in_wim));
            if hi <= file_size {
                source.will_read(lo, hi - lo);
            }
        }
        let raw_table = ctx.read_all(&header.blob_table, METADATA_MAX, "blob table")?;
        let table = BlobTable::parse(
            &raw_table,
            header.image_count,
            file_size,
            header.version == VERSION_SOLID,
        )?;
        let raw_xml = ctx.read_all(&header.xml, XML_MAX, "XML data")?;
        let xml = WimXml::parse(&raw_xml, header.image_count)?;
        let codec = codec_for_archive(compression, xml.plugin_codec().as_deref(), codecs)?;
        let decompressors = codec
            .as_ref()
            .map(|c| Decompressors::new(|| c.decompressor(header.chunk_size as usize)));

        Ok(WimArchive {
            path: path.to_path_buf(),
            source,
            file_size,
            header,
            blobs: table.blobs,
            refs: HashMap::new(),
            ref_sources: Vec::new(),
            metadata: table.metadata,
            xml,
            ctx_codec: codec,
            decompressors,
        })
    }

    /// The codec that decodes this archive's chunks (None: uncompressed).
    pub fn codec(&self) -> Option<SharedCodec> {
        self.ctx_codec.clone()
    }

    pub fn context(&self) -> ResourceContext<'_> {
        ResourceContext::new(
            &*self.source,
            self.file_size,
            self.ctx_codec.as_deref(),
            self.header.chunk_size,
            self.decompressors.as_ref(),
        )
    }

    /// Lets this archive's images use the blobs `entries` of another archive
    /// (`name`, read through `source`), as wimlib's `--ref` does. That
    /// archive must use the same codec and chunk size. Blobs of the own
    /// table win over referenced ones.
    pub fn add_ref(&mut self, name: &Path, source: Arc<dyn ReadAt>, entries: impl IntoIterator<Item = BlobEntry>) {
        self.refer(name, source, entries, false);
    }

    /// [`add_ref`](Self::add_ref) where the referenced blobs win over the
    /// own table's: for a caller that knows better where each blob is whole
    /// (a remote chain's catalog, after a blob damaged in this archive was
    /// stored again in a later one).
    pub fn add_ref_preferred(
        &mut self,
        name: &Path,
        source: Arc<dyn ReadAt>,
        entries: impl IntoIterator<Item = BlobEntry>,
    ) {
        self.refer(name, source, entries, true);
    }

    fn refer(&mut self, name: &Path, source: Arc<dyn ReadAt>, entries: impl IntoIterator<Item = BlobEntry>, win: bool) {
        let i = self.ref_sources.len();
        self.ref_sources.push((name.to_path_buf(), source));
        for e in entries {
            if win {
                self.blobs.remove(&e.hash);
            }
            if !self.blobs.contains_key(&e.hash) {
                self.refs.insert(e.hash, (i, e));
            }
        }
    }

    /// Where blob `hash` lives: the source that holds it (with its size and
    /// name) and its table entry.
    fn locate(&self, hash: &Sha1) -> Option<(&dyn ReadAt, u64, &Path, &BlobEntry)> {
        if let Some(e) = self.blobs.get(hash) {
            return Some((&*self.source, self.file_size, &self.path, e));
        }
        self.refs.get(hash).map(|(i, e)| {
            let (name, src) = &self.ref_sources[*i];
            (&**src, src.size(), name.as_path(), e)
        })
    }

    /// Blob `hash`'s table entry and which archive holds it (0: this one,
    /// i + 1: the i-th reference), to order reads by place.
    pub fn blob_entry(&self, hash: &Sha1) -> Option<(usize, &BlobEntry)> {
        match self.blobs.get(hash) {
            Some(e) => Some((0, e)),
            None => self.refs.get(hash).map(|(i, e)| (i + 1, e)),
        }
    }

    /// Blob entries held in memory: the own table and the referenced ones.
    pub fn blob_entries(&self) -> u64 {
        (self.blobs.len() + self.refs.len()) as u64
    }

    /// Does the archive (or an archive it refers to) hold blob `hash`?
    pub fn has_blob(&self, hash: &Sha1) -> bool {
        self.blobs.contains_key(hash) || self.refs.contains_key(hash)
    }

    pub fn image_count(&self) -> u32 {
        self.header.image_count
    }

    pub fn images(&self) -> Vec<ImageInfo> {
        self.xml.images()
    }

    /// Resolves a 1-based index or an image name.
    pub fn resolve_image(&self, spec: &str) -> Result<u32> {
        let n = self.image_count();
        if let Ok(i) = spec.trim().parse::<u32>() {
            if i >= 1 && i <= n {
                return Ok(i);
            }
            return Err(WimError::NotFound(format!(
                "image {i} does not exist ({} has {n} images)",
                self.path.display()
            )));
        }
        self.images()
            .iter()
            .find(|i| i.name == spec)
            .map(|i| i.index)
            .ok_or_else(|| WimError::NotFound(format!("no image named {spec:?} in {}", self.path.display())))
    }

    /// Reads, checks and parses the metadata of image `index` (1-based).
    pub fn load_image(&self, index: u32) -> Result<ImageTree> {
        let entry = self
            .metadata
            .get((index as usize).wrapping_sub(1))
            .ok_or_else(|| WimError::NotFound(format!("image {index} does not exist")))?;
        parse_metadata(&self.context(), entry, &format!("metadata of image {index}"))
    }

    pub fn blob_size(&self, hash: &Sha1) -> Option<u64> {
        self.locate(hash).map(|(_, _, _, b)| b.reshdr.original_size)
    }

    /// Streams a blob and checks its SHA-1 at the end.
    pub fn read_blob(&self, hash: &Sha1, sink: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.read_blob_checked(hash, None, sink)
    }

    /// [`read_blob`](Self::read_blob), for data recovery when `recover` is
    /// given: chunks that do not decode and a SHA-1 that does not match do
    /// not stop it; they set `recover` and the data is passed on as well as
    /// it decodes. A blob that is missing, or whose layout is unsound,
    /// still fails.
    pub fn read_blob_checked(
        &self,
        hash: &Sha1,
        recover: Option<&AtomicBool>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let (source, size, name, entry) = self
            .locate(hash)
            .ok_or_else(|| WimError::Corrupt(format!("blob {} is missing from the blob table", hex(hash))))?;
        let ctx = ResourceContext::new(
            source,
            size,
            self.ctx_codec.as_deref(),
            self.header.chunk_size,
            self.decompressors.as_ref(),
        );
        let what = if std::ptr::eq(name, self.path.as_path()) {
            format!("blob {}", hex(hash))
        } else {
            format!("blob {} (in {})", hex(hash), name.display())
        };
        let mut h = Sha1Hasher::new();
        let mut hashing = |piece: &[u8]| {
            h.update(piece);
            sink(piece)
        };
        ctx.stream_checked(&entry.reshdr, &what, recover, &mut hashing)?;
        let actual: Sha1 = h.finalize().into();
        if &actual != hash {
            if let Some(damaged) = recover {
                damaged.store(true, Ordering::Relaxed);
                return Ok(());
            }
            return Err(WimError::Corrupt(format!(
                "blob {} decodes to data with SHA-1 {}",
                hex(hash),
                hex(&actual)
            )));
        }
        Ok(())
    }

    /// Reads a small blob whole (symlink data).
    pub fn read_blob_to_vec(&self, hash: &Sha1, limit: u64) -> Result<Vec<u8>> {
        self.read_blob_to_vec_checked(hash, limit, None)
    }

    /// [`read_blob_to_vec`](Self::read_blob_to_vec), recovering as
    /// [`read_blob_checked`](Self::read_blob_checked) does when `recover`
    /// is given.
    pub fn read_blob_to_vec_checked(&self, hash: &Sha1, limit: u64, recover: Option<&AtomicBool>) -> Result<Vec<u8>> {
        let size = self.blob_size(hash).unwrap_or(0);
        if size > limit {
            return invalid(format!("blob {} is larger than expected", hex(hash)));
        }
        // Sized once (the size is bounded by `limit` above): growing by
        // doubling would copy the data and keep up to twice its size.
        let mut v = Vec::with_capacity(size as usize);
        self.read_blob_checked(hash, recover, &mut |p| {
            v.extend_from_slice(p);
            Ok(())
        })?;
        Ok(v)
    }

    /// Where an append may start writing: the end of the furthest byte any
    /// structure we keep refers to (blob table, XML, integrity table, every
    /// metadata resource and every blob), never less than the header.
    ///
    /// Writers usually put the blob table and XML last, but nothing in the
    /// format says so: a valid WIM may lay out header, blob table, XML, then
    /// data. Taking the append point from the table or XML ends alone would
    /// overwrite the blobs after them and destroy images. Every extent is
    /// checked against the file size, so a locator pointing past the end (an
    /// integrity table "1 TiB away") is refused at once instead of growing a
    /// sparse file.
    pub fn append_point(&self) -> Result<u64> {
        let mut end = HEADER_SIZE as u64;
        let header_parts = [
            (&self.header.blob_table, "blob table"),
            (&self.header.xml, "XML data"),
            (&self.header.integrity, "integrity table"),
        ];
        for (r, what) in header_parts {
            if !r.is_zero() {
                end = end.max(r.end_within(self.file_size, what)?);
            }
        }
        for (i, m) in self.metadata.iter().enumerate() {
            let what = format_args!("metadata of image {}", i + 1);
            end = end.max(m.reshdr.end_within(self.file_size, what)?);
        }
        for b in self.blobs.values() {
            end = end.max(
                b.reshdr
                    .end_within(self.file_size, format_args!("blob {}", Hex(&b.hash)))?,
            );
        }
        Ok(end)
    }
}

/// Reads a metadata resource, checks its SHA-1 and parses it.
fn parse_metadata(ctx: &ResourceContext, entry: &BlobEntry, what: &str) -> Result<ImageTree> {
    let raw = ctx.read_all(&entry.reshdr, METADATA_MAX, what)?;
    let actual: Sha1 = Sha1Hasher::digest(&raw).into();
    if actual != entry.hash {
        return Err(WimError::Corrupt(format!(
            "{what} has SHA-1 {} but the blob table says {}",
            hex(&actual),
            hex(&entry.hash)
        )));
    }
    ImageTree::parse(&raw).map_err(|e| match e {
        WimError::Invalid(m) => WimError::Invalid(format!("{what}: {m}")),
        other => other,
    })
}

/// Loads an image tree from the metadata resource `entry` of an archive
/// read through `source`, without opening the archive (its codec and chunk
/// size are known): one read where the archive is remote.
pub fn load_tree_at(
    source: &dyn ReadAt,
    entry: &BlobEntry,
    codec: Option<&dyn wimguard_sdk::Codec>,
    chunk_size: u32,
    what: &str,
) -> Result<ImageTree> {
    let decompressors = codec.map(|c| Decompressors::new(|| c.decompressor(chunk_size as usize)));
    let ctx = ResourceContext::new(source, source.size(), codec, chunk_size, decompressors.as_ref());
    parse_metadata(&ctx, entry, what)
}

/// What `verify` checked.
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    pub images: u32,
    pub blobs: u64,
    pub bytes: u64,
    /// Integrity-table chunks checked (0 when the archive has none).
    pub integrity_chunks: u32,
}

impl WimArchive {
    /// What the header says that a reader should hear about, though the
    /// archive reads fine: a write that never finished (its writer was
    /// killed: the tables are those of the last completed write), a
    /// bootable image that does not exist. wimlib warns about both.
    pub fn header_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.header.flags & super::header::HDR_FLAG_WRITE_IN_PROGRESS != 0 {
            w.push(format!(
                "{}: the header says a write was in progress (a writer was stopped?); \
                 what the last completed write left is read",
                self.path.display()
            ));
        }
        if self.header.boot_index > self.image_count() {
            w.push(format!(
                "{}: the bootable image is {}, but there are {} images",
                self.path.display(),
                self.header.boot_index,
                self.image_count()
            ));
        }
        w
    }

    /// Checks everything: the integrity table when present, every image's
    /// metadata (hash and structure), that every referenced blob exists, and
    /// every blob's SHA-1.
    pub fn verify(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        if !self.header.integrity.is_zero() {
            let raw = self
                .context()
                .read_all(&self.header.integrity, METADATA_MAX, "integrity table")?;
            let end = self.header.blob_table.offset + self.header.blob_table.size_in_wim;
            report.integrity_chunks = super::integrity::verify(&*self.source, &raw, end)?;
        }
        for i in 1..=self.image_count() {
            let tree = self.load_image(i)?;
            if let Some(h) = tree
                .inodes
                .iter()
                .flat_map(|ino| ino.blob_hashes())
                .find(|h| !self.has_blob(h))
            {
                return Err(WimError::Corrupt(format!(
                    "image {i} refers to blob {} which is missing",
                    hex(h)
                )));
            }
            check_items(i, &tree)?;
            report.images += 1;
        }
        let (blobs, bytes) = self.verify_blobs(self.blobs.keys().copied(), progress)?;
        report.blobs = blobs;
        report.bytes = bytes;
        Ok(report)
    }

    /// Decodes the given blobs in file order, small ones many at a time in
    /// parallel, and checks each one's SHA-1. Returns (blobs, bytes) checked;
    /// a hash missing from the blob table is an error, and so is the first
    /// blob that fails.
    pub fn verify_blobs(
        &self,
        hashes: impl IntoIterator<Item = Sha1>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(u64, u64)> {
        let mut order: Vec<&BlobEntry> = Vec::new();
        for h in hashes {
            order.push(
                self.locate(&h)
                    .map(|(_, _, _, e)| e)
                    .ok_or_else(|| WimError::Corrupt(format!("blob {} is missing from the blob table", hex(&h))))?,
            );
        }
        let (failed, total) = self.read_in_batches(&mut order, true, progress);
        match failed.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok((order.len() as u64, total)),
        }
    }

    /// [`verify_blobs`](Self::verify_blobs) that goes on past damage: every
    /// blob is read, and each one that is not in the blob table, does not
    /// decode or does not match its SHA-1 is returned with its error.
    pub fn check_blobs(
        &self,
        hashes: impl IntoIterator<Item = Sha1>,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Vec<(Sha1, WimError)> {
        let mut failed = Vec::new();
        let mut order: Vec<&BlobEntry> = Vec::new();
        for h in hashes {
            match self.locate(&h) {
                Some((_, _, _, e)) => order.push(e),
                None => failed.push((
                    h,
                    WimError::Corrupt(format!("blob {} is missing from the blob table", hex(&h))),
                )),
            }
        }
        failed.extend(self.read_in_batches(&mut order, false, progress).0);
        failed
    }

    /// Reads `order` (sorted here into file order) in batches, small blobs
    /// in parallel, and returns the blobs that failed and the bytes to read;
    /// with `stop_at_first`, the first failure ends it.
    fn read_in_batches(
        &self,
        order: &mut [&BlobEntry],
        stop_at_first: bool,
        progress: &mut dyn FnMut(u64, u64),
    ) -> (Vec<(Sha1, WimError)>, u64) {
        use rayon::prelude::*;
        order.sort_by_key(|b| b.reshdr.offset);
        let total: u64 = order.iter().map(|b| b.reshdr.original_size).sum();
        let mut done = 0u64;
        let mut failed = Vec::new();
        for group in order.chunk_by(|a, b| a.reshdr.original_size < (4 << 20) && b.reshdr.original_size < (4 << 20)) {
            for batch in group.chunks(512) {
                if stop_at_first {
                    if let Err(e) = batch
                        .par_iter()
                        .try_for_each(|b| self.read_blob(&b.hash, &mut |_| Ok(())).map_err(|e| (b.hash, e)))
                    {
                        failed.push(e);
                        return (failed, total);
                    }
                } else {
                    let results: Vec<_> = batch
                        .par_iter()
                        .filter_map(|b| self.read_blob(&b.hash, &mut |_| Ok(())).err().map(|e| (b.hash, e)))
                        .collect();
                    failed.extend(results);
                }
                done += batch.iter().map(|b| b.reshdr.original_size).sum::<u64>();
                progress(done, total);
            }
        }
        (failed, total)
    }
}

/// Checks what of image `index`'s tree is read only when files are
/// restored (the extended attributes): what an extract would refuse, a
/// verify refuses too.
pub fn check_items(index: u32, tree: &ImageTree) -> Result<()> {
    for (n, ino) in tree.inodes.iter().enumerate() {
        ino.tagged
            .xattrs()
            .map_err(|e| WimError::Corrupt(format!("image {index}, inode {n}: extended attributes: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Inode;
    use crate::tagged::{TaggedItems, TAG_XATTRS};

    /// Extended attributes an extract would refuse fail a verify too.
    #[test]
    fn corrupt_xattrs_fail_the_item_check() {
        let good = TaggedItems::build(None, &[(b"user.a".to_vec(), b"v".to_vec())]);
        let mut tree = ImageTree::new(Inode::default());
        let ok = tree.add_inode(Inode {
            tagged: good.clone(),
            ..Inode::default()
        });
        tree.add_dentry(0, "ok".encode_utf16().collect(), ok);
        assert!(check_items(1, &tree).is_ok());
        // A name length that runs past the item.
        let mut bad = TaggedItems::default();
        bad.push(TAG_XATTRS, &[1, 0, 200, 0, b'a', 0, b'v']);
        let n = tree.add_inode(Inode {
            tagged: bad,
            ..Inode::default()
        });
        tree.add_dentry(0, "bad".encode_utf16().collect(), n);
        let e = check_items(7, &tree).unwrap_err();
        assert!(matches!(e, WimError::Corrupt(_)), "{e:?}");
        assert!(e.to_string().contains("image 7, inode 2"), "{e}");
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        let mut h = [0u8; 20];
        h[0] = 0x0f;
        h[1] = 0xa5;
        h[19] = 0xff;
        assert_eq!(super::hex(&h), format!("0fa5{}ff", "00".repeat(17)));
    }
}
