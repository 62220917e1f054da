//! `wimguard archive …`: the offline toolbox over WIM files.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};

use super::CliError;
use crate::apply::{self, ApplyOptions};
use crate::capture::{self, CaptureOptions};
use crate::fsutil;
use crate::wim::codecs::StandardCodecs;
use crate::wim::writer::{self, DEFAULT_CHUNK_SIZE};
use crate::wim::{time, Compression, WimArchive, WimWriter};

#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum CompressionArg {
    None,
    Xpress,
    Lzx,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Self {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Xpress => Compression::Xpress,
            CompressionArg::Lzx => Compression::Lzx,
        }
    }
}

#[derive(Subcommand)]
pub enum ArchiveCommand {
    /// Rewrite a remote archive as one full object of the snapshots still
    /// kept, reclaiming what deleted snapshots used (through the server).
    Consolidate {
        /// The remote archive's name.
        name: String,
        /// The destination plugin that stores it.
        #[arg(long)]
        plugin: String,
        #[command(flatten)]
        client: super::ClientOptions,
    },
    /// Check a remote archive against its store: objects missing or changed
    /// there, and the snapshots that can no longer be restored whole, with
    /// their files (through the server). Exit 3 when something is damaged.
    Check {
        /// The remote archive's name.
        name: String,
        /// The destination plugin that stores it.
        #[arg(long)]
        plugin: String,
        /// Also read every blob and check its SHA-1 (downloads the archive).
        #[arg(long)]
        read_data: bool,
        /// Forget in the catalog what is lost: objects missing or changed
        /// in the store, the snapshots whose image was in them or whose
        /// metadata is damaged, blobs that failed their checksum (markers in
        /// the store keep a rebuilt catalog agreeing). The next backup stores
        /// again the contents it still finds.
        #[arg(long)]
        repair: bool,
        #[command(flatten)]
        client: super::ClientOptions,
    },
    /// Capture a directory as a new image (creates WIM, or appends when it exists).
    Capture {
        /// Directory to capture.
        source: PathBuf,
        /// WIM file to create or append to.
        wim: PathBuf,
        /// Image name (unique in the archive; default: wimguard-<UTC time>).
        #[arg(long)]
        name: Option<String>,
        /// Free-text description stored in the XML.
        #[arg(long)]
        description: Option<String>,
        /// Codec for a new archive (an existing archive keeps its own). Default: lzx.
        #[arg(long, value_enum)]
        compression: Option<CompressionArg>,
        /// Exclude paths matching this gitignore-style pattern (repeatable).
        #[arg(long = "exclude", value_name = "PAT")]
        excludes: Vec<String>,
        /// Write an integrity table (SHA-1 of the file in 10 MiB chunks).
        #[arg(long)]
        check: bool,
        /// Keep absolute symlinks into the tree as they are (no re-rooting).
        #[arg(long)]
        norpfix: bool,
    },
    /// Restore an image, or chosen paths of it, into a directory.
    Extract {
        wim: PathBuf,
        /// 1-based index or image name.
        image: String,
        dest: PathBuf,
        /// Paths inside the image (default: everything); directory structure is kept.
        paths: Vec<String>,
        /// Do not restore file ownership even when running as root.
        #[arg(long)]
        no_owner: bool,
        /// Go on past damaged file data: such files are extracted as well
        /// as they decode, each named in a warning (exit 8), instead of
        /// stopping (wimlib-imagex apply --recover-data).
        #[arg(long)]
        recover_data: bool,
    },
    /// Show the header and the images of a WIM.
    Info {
        wim: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List the paths of an image (optionally below PATH).
    Ls {
        wim: PathBuf,
        image: String,
        path: Option<String>,
        /// Show type and size too.
        #[arg(long, short)]
        long: bool,
    },
    /// Check every blob's SHA-1, every image's metadata and the integrity table.
    Verify { wim: PathBuf },
    /// Delete an image; the archive is rebuilt without blobs no image uses
    /// (or, with --soft, only its tables are rewritten: fast, space kept).
    Delete {
        wim: PathBuf,
        image: String,
        /// Like wimlib's `delete --soft`: no rebuild; the space is reclaimed
        /// by `archive optimize` later.
        #[arg(long)]
        soft: bool,
    },
    /// Rebuild the archive without the bytes nothing uses any more (what
    /// soft deletes left): crash-safe (temp file, fsync, rename).
    Optimize { wim: PathBuf },
}

pub fn run(cmd: ArchiveCommand) -> Result<(), CliError> {
    match cmd {
        ArchiveCommand::Consolidate { name, plugin, client } => {
            super::block_on(super::catalog::consolidate(name, plugin, client))
        }
        ArchiveCommand::Check { name, plugin, .. } if name.contains('/') => Err(CliError::usage(format!(
            "archive check takes a remote archive's name ({plugin} stores it); for a local WIM like {name:?}, \
             `wimguard archive verify PATH` checks every blob and image"
        ))),
        ArchiveCommand::Check {
            name,
            plugin,
            read_data,
            repair,
            client,
        } => super::block_on(super::catalog::check(
            crate::api::v1::CheckArchiveRequest {
                name,
                plugin,
                read_data,
                repair,
            },
            client,
        )),
        ArchiveCommand::Capture {
            source,
            wim,
            name,
            description,
            compression,
            excludes,
            check,
            norpfix,
        } => capture_cmd(source, wim, name, description, compression, excludes, check, norpfix),
        ArchiveCommand::Extract {
            wim,
            image,
            dest,
            paths,
            no_owner,
            recover_data,
        } => {
            let arch = WimArchive::open(&wim, &StandardCodecs)?;
            let index = arch.resolve_image(&image)?;
            let opts = ApplyOptions {
                paths,
                restore_owner: fsutil::is_root() && !no_owner,
                recover_data,
                ..ApplyOptions::default()
            };
            let mut bar = ProgressLine::new("extracting");
            let r = apply::apply(&arch, index, &dest, &opts, &mut |b, bt| bar.update_bytes(b, bt))?;
            bar.finish();
            for w in &r.warnings {
                eprintln!("wimguard: warning: {w}");
            }
            outln!(
                "extracted image {index} to {}: {} directories, {} files ({} bytes), {} hard links, {} symlinks, {} special files",
                dest.display(), r.dirs, r.files, r.bytes, r.hard_links, r.symlinks, r.specials
            );
            if r.unsafe_skipped > 0 {
                outln!(
                    "skipped {} entries that cannot be restored safely (see the warnings)",
                    r.unsafe_skipped
                );
            }
            if !r.warnings.is_empty() {
                return Err(CliError::with_warnings(
                    &format!("extract of image {index}"),
                    r.warnings.len(),
                ));
            }
            Ok(())
        }
        ArchiveCommand::Info { wim, json } => info_cmd(wim, json),
        ArchiveCommand::Ls { wim, image, path, long } => {
            let arch = WimArchive::open(&wim, &StandardCodecs)?;
            let index = arch.resolve_image(&image)?;
            let tree = arch.load_image(index)?;
            for sk in &tree.skipped {
                eprintln!("wimguard: warning: not listed: {}: {}", sk.path, sk.reason);
            }
            if tree.skipped_total > tree.skipped.len() as u64 {
                eprintln!(
                    "wimguard: warning: … and {} more entries not listed",
                    tree.skipped_total - tree.skipped.len() as u64
                );
            }
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            apply::list(&arch, &tree, path.as_deref().unwrap_or("/"), &mut |p, kind, size| {
                use std::io::Write;
                let p = super::output::printable(p);
                if long {
                    writeln!(out, "{kind} {size:>12} {p}")
                } else {
                    writeln!(out, "{p}")
                }
            })?;
            std::io::Write::flush(&mut out).map_err(crate::wim::WimError::from)?;
            Ok(())
        }
        ArchiveCommand::Verify { wim } => {
            let arch = WimArchive::open(&wim, &StandardCodecs)?;
            for w in arch.header_warnings() {
                eprintln!("wimguard: warning: {w}");
            }
            let mut bar = ProgressLine::new("verifying");
            let r = arch.verify(&mut |b, bt| bar.update_bytes(b, bt))?;
            bar.finish();
            outln!(
                "{}: OK — {} images, {} blobs ({} bytes) verified{}",
                wim.display(),
                r.images,
                r.blobs,
                r.bytes,
                if r.integrity_chunks > 0 {
                    format!(", integrity table ({} chunks) matches", r.integrity_chunks)
                } else {
                    String::new()
                }
            );
            Ok(())
        }
        ArchiveCommand::Delete { wim, image, soft } => {
            let arch = WimArchive::open(&wim, &StandardCodecs)?;
            let index = arch.resolve_image(&image)?;
            let before = arch.file_size;
            drop(arch);
            if soft {
                writer::soft_delete_image(&wim, index, &StandardCodecs)?;
                // What `archive info` will say: the image's share and the
                // tables every rewrite leaves behind.
                let reclaimable = writer::reclaimable_bytes(&WimArchive::open(&wim, &StandardCodecs)?);
                outln!(
                    "deleted image {index} from {} (soft: {reclaimable} bytes now reclaimable by `archive optimize`)",
                    wim.display()
                );
                return Ok(());
            }
            writer::delete_image(&wim, index, &StandardCodecs)?;
            let after = std::fs::metadata(&wim).map(|m| m.len()).unwrap_or(0);
            outln!(
                "deleted image {index} from {} ({before} → {after} bytes)",
                wim.display()
            );
            Ok(())
        }
        ArchiveCommand::Optimize { wim } => {
            let before = std::fs::metadata(&wim).map(|m| m.len()).unwrap_or(0);
            writer::optimize(&wim, &StandardCodecs)?;
            let after = std::fs::metadata(&wim).map(|m| m.len()).unwrap_or(0);
            outln!("optimized {} ({before} → {after} bytes)", wim.display());
            Ok(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn capture_cmd(
    source: PathBuf,
    wim: PathBuf,
    name: Option<String>,
    description: Option<String>,
    compression: Option<CompressionArg>,
    excludes: Vec<String>,
    check: bool,
    norpfix: bool,
) -> Result<(), CliError> {
    if let Some(n) = &name {
        capture::check_image_name(n).map_err(CliError::usage)?;
    }
    if !source.is_dir() {
        return Err(CliError {
            message: format!("source {} is not a directory", source.display()),
            exit_code: super::EXIT_NOT_FOUND,
        });
    }
    let exists = wim.exists();
    let (mut w, previous) = if exists {
        if let Some(c) = compression {
            // Checked before the append marks the file as being written.
            let have = crate::wim::archive::peek(&wim, &StandardCodecs)?.header.compression()?;
            let want: Compression = c.into();
            if want != have {
                return Err(CliError::usage(format!(
                    "{} is compressed with {}; an appended image uses the archive's codec (drop --compression)",
                    wim.display(),
                    have.name()
                )));
            }
        }
        let w = WimWriter::append(&wim, &StandardCodecs)?;
        let previous = capture::latest_wimguard_image(&w)?;
        (w, previous)
    } else {
        let c: Compression = compression.unwrap_or(CompressionArg::Lzx).into();
        (WimWriter::create(&wim, c, DEFAULT_CHUNK_SIZE)?, None)
    };
    if check {
        w.integrity = true;
    }
    if norpfix && !exists {
        // Like wimlib: the flag tells readers that fixups were done at capture.
        w.header.flags &= !crate::wim::header::HDR_FLAG_RP_FIX;
    }
    let name = match name {
        Some(n) => n,
        None => capture::default_image_name(&|n| w.xml().name_in_use(n)),
    };
    if w.xml().name_in_use(&name) {
        return Err(CliError::usage(format!(
            "{} already has an image named {name:?}; choose another --name",
            wim.display()
        )));
    }
    let opts = CaptureOptions {
        name,
        description: description.unwrap_or_default(),
        excludes,
        no_rpfix: norpfix,
        ..CaptureOptions::default()
    };
    let mut bar = ProgressLine::new("capturing");
    let report = capture::capture(
        &source,
        &mut w,
        previous.map(capture::PreviousImage::new),
        &opts,
        &mut |p| {
            // Files are written while the walk still finds more (Scanning).
            if p.phase != capture::CapturePhase::Finalizing {
                let totals_final = p.phase == capture::CapturePhase::Writing;
                bar.update(p.files_done, p.files_total, p.bytes_done, p.bytes_total, totals_final)
            }
        },
    )?;
    bar.finish();
    w.commit()?;
    for warn in &report.warnings {
        eprintln!("wimguard: warning: {warn}");
    }
    outln!(
        "{} image {} ({:?}) of {}: {} directories, {} files, {} symlinks, {} special; {} bytes read, {} new blobs, {} bytes stored, {} files unchanged",
        if exists { "appended" } else { "created" },
        report.image_index,
        opts.name,
        source.display(),
        report.dirs,
        report.files,
        report.symlinks,
        report.specials,
        report.bytes_read,
        report.new_blobs,
        report.bytes_stored,
        report.reused
    );
    if !report.warnings.is_empty() {
        return Err(CliError::with_warnings(
            &format!("image {}", report.image_index),
            report.warnings.len(),
        ));
    }
    Ok(())
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn info_cmd(wim: PathBuf, json: bool) -> Result<(), CliError> {
    let arch = WimArchive::open(&wim, &StandardCodecs)?;
    for w in arch.header_warnings() {
        eprintln!("wimguard: warning: {w}");
    }
    let h = &arch.header;
    let comp = h.compression()?;
    let images = arch.images();
    if json {
        let imgs: Vec<String> = images
            .iter()
            .map(|i| {
                format!(
                    "{{\"index\":{},\"name\":{},\"description\":{},\"dir_count\":{},\"file_count\":{},\"total_bytes\":{},\"hard_link_bytes\":{},\"creation_time\":{}}}",
                    i.index, json_str(&i.name), json_str(&i.description), i.dir_count, i.file_count, i.total_bytes, i.hard_link_bytes,
                    time::to_unix(i.creation_time).0
                )
            })
            .collect();
        outln!(
            "{{\"path\":{},\"size\":{},\"reclaimable\":{},\"guid\":\"{}\",\"version\":{},\"flags\":{},\"compression\":\"{}\",\"chunk_size\":{},\"image_count\":{},\"blob_count\":{},\"integrity_table\":{},\"images\":[{}]}}",
            json_str(&wim.display().to_string()),
            arch.file_size,
            writer::reclaimable_bytes(&arch),
            h.guid.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            h.version,
            h.flags,
            comp.name(),
            h.chunk_size,
            h.image_count,
            arch.blobs.len(),
            !h.integrity.is_zero(),
            imgs.join(",")
        );
        return Ok(());
    }
    outln!("Path:            {}", wim.display());
    outln!("Size:            {} bytes", arch.file_size);
    outln!("Reclaimable:     {} bytes", writer::reclaimable_bytes(&arch));
    outln!(
        "GUID:            {}",
        h.guid.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    outln!("Version:         {:#x}", h.version);
    outln!("Flags:           {:#010x}", h.flags);
    outln!("Compression:     {}", comp.name());
    outln!("Chunk size:      {}", h.chunk_size);
    outln!("Images:          {}", h.image_count);
    outln!("Blobs:           {}", arch.blobs.len());
    outln!("Integrity table: {}", if h.integrity.is_zero() { "no" } else { "yes" });
    for i in images {
        outln!();
        outln!("Index:           {}", i.index);
        outln!("Name:            {}", i.name);
        if !i.description.is_empty() {
            outln!("Description:     {}", i.description);
        }
        outln!("Directories:     {}", i.dir_count);
        outln!("Files:           {}", i.file_count);
        outln!("Total bytes:     {}", i.total_bytes);
        outln!("Hard link bytes: {}", i.hard_link_bytes);
    }
    Ok(())
}

/// A one-line progress display on stderr, only when stderr is a terminal.
struct ProgressLine {
    what: &'static str,
    enabled: bool,
    start: std::time::Instant,
    last: Option<std::time::Instant>,
}

impl ProgressLine {
    fn new(what: &'static str) -> Self {
        use std::io::IsTerminal;
        ProgressLine {
            what,
            enabled: std::io::stderr().is_terminal(),
            start: std::time::Instant::now(),
            last: None,
        }
    }

    /// At most ten lines a second, besides the last one (all files done,
    /// with `totals_final`: no more are being found).
    fn update(&mut self, files: u64, files_total: u64, bytes: u64, bytes_total: u64, totals_final: bool) {
        if !self.enabled {
            return;
        }
        let now = std::time::Instant::now();
        let last_one = totals_final && files >= files_total;
        if self.last.is_some_and(|l| now.duration_since(l).as_millis() < 100) && !last_one {
            return;
        }
        self.last = Some(now);
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let rate = mib(bytes) / self.start.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r{}: {files}/{files_total} files, {:.1}/{:.1} MiB, {rate:.1} MiB/s   ",
            self.what,
            mib(bytes),
            mib(bytes_total)
        );
    }

    fn update_bytes(&mut self, bytes: u64, bytes_total: u64) {
        if !self.enabled {
            return;
        }
        let now = std::time::Instant::now();
        if self.last.is_some_and(|l| now.duration_since(l).as_millis() < 100) && bytes < bytes_total {
            return;
        }
        self.last = Some(now);
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        let rate = mib(bytes) / self.start.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r{}: {:.1}/{:.1} MiB, {rate:.1} MiB/s   ",
            self.what,
            mib(bytes),
            mib(bytes_total)
        );
    }

    fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            eprintln!();
        }
    }
}
