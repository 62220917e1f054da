//! Per-core throughput of the standard chunk codecs in three runtimes.
//!
//! WimGuard can compress XPRESS and LZX chunks with its built-in native code
//! (the `wimguard-xpress` / `wimguard-lzx` crates) or with the same code
//! compiled to WebAssembly and run as the bundled codec plugins under
//! wasmtime ([`WasmCodec`]). This program measures both, next to the
//! reference implementation, wimlib (`libwim.so.15` from Debian's
//! `wimtools`, loaded at run time, at its default level 50 — the level
//! `host/codecs/lzx/examples/lzx_ratio.rs` compares against):
//!
//! | runtime  | code under test                                              |
//! |----------|--------------------------------------------------------------|
//! | `native` | `wimguard_xpress::Xpress`, `wimguard_lzx::Lzx`               |
//! | `wasm`   | the bundled `xpress` / `lzx` components through `WasmCodec`  |
//! | `wimlib` | `wimlib_compress` / `wimlib_decompress`                      |
//!
//! All three are driven through the same [`Codec`] trait, on the same data,
//! cut into chunks of the writer's `DEFAULT_CHUNK_SIZE` (32 KiB), with one
//! compressor and one decompressor per runtime on one thread, so the numbers
//! are per core. For every codec and runtime it reports:
//!
//! * **compress MiB/s**: corpus bytes / wall time to compress every chunk
//!   (chunks that do not shrink count too: finding that out is work);
//! * **decompress MiB/s**: decoded bytes / wall time to decode that
//!   runtime's own compressed chunks back to their original sizes (chunks
//!   stored raw cost a reader nothing and are left out of both);
//! * **size**: total stored size, raw-stored chunks at full size.
//!
//! Each timing is repeated `--reps` times (default 3) and the best is kept;
//! the runtimes take turns within each repetition, so a burst of load from
//! other processes hits them alike. After every timed decode pass an
//! untimed pass checks that every chunk decodes to exactly its input; any
//! mismatch or codec error aborts the run. At the end, every runtime's
//! chunks are decoded by every runtime's decoder (native and wasm must
//! agree: they are the same code; wimlib shows the chunks are standard),
//! and native and wasm compressed streams are compared byte for byte.
//!
//! The corpus is, by default, the regular files under `/usr/share/doc` and
//! `/usr/share/man` (symlinks are not followed), read in sorted order and
//! concatenated up to `--max-mib` MiB (default 64). The budget is shared
//! evenly between the directories (what one does not use passes to the
//! next), so both kinds of content are in it; expect a large share of
//! already-gzipped files, which stay raw. `--data DIR` (repeatable) replaces
//! the default directories.
//!
//! Run (a release build; the first one compiles wasmtime):
//!
//! ```text
//! cargo run --release --example codec_runtimes
//! cargo run --release --example codec_runtimes -- --data ~/src --max-mib 32 --reps 5
//! ```
//!
//! The program prints a table, the ratios between runtimes (speed ratios
//! above 1.0 mean the first runtime is faster; size ratios above 1.0 mean it
//! writes more bytes), and one summary line for the docs.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use wimguard::bundled::bundled_plugins;
use wimguard::plugins::{PluginLimits, PluginSettings, WasmCodec};
use wimguard::wim::writer::DEFAULT_CHUNK_SIZE;
use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec};

const MIB: f64 = (1 << 20) as f64;

/// The directories the default corpus is built from, in this order.
const DEFAULT_DATA: [&str; 2] = ["/usr/share/doc", "/usr/share/man"];

#[derive(Parser, Debug)]
#[command(about = "Per-core XPRESS/LZX chunk throughput: native crates vs bundled wasm plugins vs wimlib")]
struct Args {
    /// Build the corpus from DIR instead of /usr/share/doc and /usr/share/man
    /// (repeatable; the size budget is shared evenly between them).
    #[arg(long = "data", value_name = "DIR")]
    data: Vec<PathBuf>,
    /// Corpus size cap, in MiB.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_mib: usize,
    /// Timed repetitions of each measurement; the best one is reported.
    #[arg(long, value_name = "N", default_value_t = 3)]
    reps: u32,
    /// Chunk size in bytes (default: the WIM writer's DEFAULT_CHUNK_SIZE).
    #[arg(long, value_name = "BYTES")]
    chunk_size: Option<usize>,
    /// Codecs to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "xpress,lzx")]
    codecs: Vec<CodecName>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum CodecName {
    Xpress,
    Lzx,
}

impl CodecName {
    fn id(self) -> &'static str {
        match self {
            CodecName::Xpress => "xpress",
            CodecName::Lzx => "lzx",
        }
    }
}

/// Who runs the codec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runtime {
    Native,
    Wasm,
    Wimlib,
}

impl Runtime {
    const ALL: [Runtime; 3] = [Runtime::Native, Runtime::Wasm, Runtime::Wimlib];

    fn label(self) -> &'static str {
        match self {
            Runtime::Native => "native",
            Runtime::Wasm => "wasm",
            Runtime::Wimlib => "wimlib",
        }
    }
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("codec_runtimes: FAILED: {e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    ensure!(args.reps > 0, "--reps must be at least 1");
    ensure!(args.max_mib > 0, "--max-mib must be at least 1");
    let chunk_size = args.chunk_size.unwrap_or(DEFAULT_CHUNK_SIZE as usize);
    ensure!(chunk_size >= 2, "--chunk-size must be at least 2");

    let dirs: Vec<PathBuf> = if args.data.is_empty() {
        DEFAULT_DATA.iter().map(PathBuf::from).collect()
    } else {
        args.data.clone()
    };
    let corpus = Corpus::load(&dirs, args.max_mib << 20, chunk_size)?;
    let wimlib = wimlib::Wimlib::load()?;

    println!("codec_runtimes: per-core chunk codec throughput");
    if let Some(cpu) = cpu_model() {
        println!("cpu:     {cpu}");
    }
    println!(
        "corpus:  {:.1} MiB from {} files under {} ({} chunks of {} bytes)",
        corpus.data.len() as f64 / MIB,
        corpus.files,
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" + "),
        corpus.chunk_count(),
        chunk_size
    );
    println!(
        "method:  1 thread, 1 compressor + 1 decompressor per runtime, best of {} (runtimes interleaved); wimlib level {}",
        args.reps,
        wimlib::LEVEL
    );

    let mut results = Vec::new();
    for &name in &args.codecs {
        let codecs = load_codecs(name, &wimlib)?;
        for (runtime, codec) in &codecs {
            ensure!(
                chunk_size <= codec.max_chunk_size(),
                "{} {}: chunk size {chunk_size} is above its maximum {}",
                name.id(),
                runtime.label(),
                codec.max_chunk_size()
            );
        }
        results.push(bench_codec(name, &codecs, &corpus, args.reps)?);
    }

    print_table(&results, &corpus);
    print_ratios(&results);
    print_docs_line(&results, &corpus, &dirs, args.reps);
    Ok(())
}

// ---------------------------------------------------------------------------
// Corpus

/// The test data, cut into chunks of `chunk_size` (the last may be shorter).
struct Corpus {
    data: Vec<u8>,
    chunk_size: usize,
    files: usize,
}

impl Corpus {
    /// Concatenates the regular files under `dirs` (sorted walk, symlinks
    /// not followed), at most `cap` bytes, shared evenly between the dirs.
    fn load(dirs: &[PathBuf], cap: usize, chunk_size: usize) -> Result<Corpus> {
        let mut data = Vec::with_capacity(cap);
        let mut files = 0;
        for (i, dir) in dirs.iter().enumerate() {
            ensure!(dir.is_dir(), "{}: not a directory", dir.display());
            // An even share of what is left, so unused budget carries over.
            let share = (cap - data.len()) / (dirs.len() - i);
            let limit = data.len() + share;
            files += collect(dir, limit, &mut data);
        }
        ensure!(!data.is_empty(), "no readable data under {dirs:?}");
        Ok(Corpus {
            data,
            chunk_size,
            files,
        })
    }

    fn chunks(&self) -> std::slice::Chunks<'_, u8> {
        self.data.chunks(self.chunk_size)
    }

    fn chunk_count(&self) -> usize {
        self.data.len().div_ceil(self.chunk_size)
    }
}

/// Appends the regular files under `dir` to `out` (sorted, depth first)
/// until `out` holds `limit` bytes; returns how many files contributed.
/// Unreadable entries are skipped.
fn collect(dir: &Path, limit: usize, out: &mut Vec<u8>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    let mut files = 0;
    for path in paths {
        if out.len() >= limit {
            break;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            files += collect(&path, limit, out);
        } else if meta.is_file() {
            let Ok(file) = File::open(&path) else {
                continue;
            };
            let before = out.len();
            let want = (limit - out.len()) as u64;
            if file.take(want).read_to_end(out).is_err() {
                out.truncate(before);
            } else if out.len() > before {
                files += 1;
            }
        }
    }
    files
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

// ---------------------------------------------------------------------------
// The three implementations of one codec

/// The codec `name` in every runtime, in [`Runtime::ALL`] order.
fn load_codecs(name: CodecName, wimlib: &std::sync::Arc<wimlib::Wimlib>) -> Result<Vec<(Runtime, Box<dyn Codec>)>> {
    let native: Box<dyn Codec> = match name {
        CodecName::Xpress => Box::new(wimguard_xpress::Xpress),
        CodecName::Lzx => Box::new(wimguard_lzx::Lzx),
    };

    let bundled = bundled_plugins()
        .iter()
        .find(|p| p.name == name.id())
        .with_context(|| format!("no bundled plugin named {}", name.id()))?;
    let started = Instant::now();
    let wasm = WasmCodec::load(bundled.bytes, PluginSettings::new(), PluginLimits::default(), None)
        .with_context(|| format!("loading the bundled {} plugin", name.id()))?;
    ensure!(
        wasm.name() == name.id(),
        "the bundled plugin {} says its codec is {}",
        name.id(),
        wasm.name()
    );
    println!(
        "wasm:    bundled {} plugin {} ({} KiB) compiled in {:.1} s",
        name.id(),
        wasm.plugin_version(),
        bundled.bytes.len() >> 10,
        started.elapsed().as_secs_f64()
    );

    let ctype = match name {
        CodecName::Xpress => wimlib::CTYPE_XPRESS,
        CodecName::Lzx => wimlib::CTYPE_LZX,
    };
    let reference = wimlib::WimlibCodec::new(wimlib.clone(), name.id(), ctype, native.max_chunk_size());

    Ok(vec![
        (Runtime::Native, native),
        (Runtime::Wasm, Box::new(wasm)),
        (Runtime::Wimlib, Box::new(reference)),
    ])
}

// ---------------------------------------------------------------------------
// Measuring

/// One chunk as a runtime stored it.
#[derive(Clone, Default, PartialEq, Eq)]
struct Packed {
    /// Whether `bytes` holds a compressed stream (else the chunk is raw).
    compressed: bool,
    bytes: Vec<u8>,
}

/// One runtime's figures for one codec.
struct Summary {
    runtime: Runtime,
    /// Corpus bytes per second of the best compression pass, in MiB/s.
    compress_mibs: f64,
    /// Decoded bytes (compressed chunks only) per second of the best
    /// decompression pass, in MiB/s.
    decompress_mibs: f64,
    /// Total stored size: compressed chunks at their size, raw ones in full.
    stored: usize,
    /// Chunks stored raw (not smaller when compressed).
    raw_chunks: usize,
}

impl Summary {
    fn new(runtime: Runtime, packed: &[Packed], corpus: &Corpus, compress: Duration, decompress: Duration) -> Self {
        let (mut stored, mut decoded, mut raw_chunks) = (0, 0, 0);
        for (p, chunk) in packed.iter().zip(corpus.chunks()) {
            if p.compressed {
                stored += p.bytes.len();
                decoded += chunk.len();
            } else {
                stored += chunk.len();
                raw_chunks += 1;
            }
        }
        Summary {
            runtime,
            compress_mibs: corpus.data.len() as f64 / MIB / compress.as_secs_f64(),
            decompress_mibs: decoded as f64 / MIB / decompress.as_secs_f64(),
            stored,
            raw_chunks,
        }
    }

    /// Stored size as a percentage of the input.
    fn percent(&self, corpus: &Corpus) -> f64 {
        100.0 * self.stored as f64 / corpus.data.len() as f64
    }
}

/// All runtimes of one codec.
struct CodecResult {
    name: CodecName,
    runs: Vec<Summary>,
}

impl CodecResult {
    fn get(&self, runtime: Runtime) -> &Summary {
        self.runs
            .iter()
            .find(|m| m.runtime == runtime)
            .expect("every runtime is measured")
    }
}

/// One runtime's compressor, decompressor, latest output and best times.
struct Lane {
    runtime: Runtime,
    /// `codec runtime`, for messages.
    label: String,
    compressor: Box<dyn ChunkCompressor>,
    decompressor: Box<dyn ChunkDecompressor>,
    packed: Vec<Packed>,
    best_compress: Duration,
    best_decompress: Duration,
}

/// Times every runtime of one codec, verifies, and cross-checks.
fn bench_codec(
    name: CodecName,
    codecs: &[(Runtime, Box<dyn Codec>)],
    corpus: &Corpus,
    reps: u32,
) -> Result<CodecResult> {
    let chunk_size = corpus.chunk_size;
    let mut lanes: Vec<Lane> = codecs
        .iter()
        .map(|(runtime, codec)| Lane {
            runtime: *runtime,
            label: format!("{} {}", name.id(), runtime.label()),
            compressor: codec.compressor(chunk_size),
            decompressor: codec.decompressor(chunk_size),
            packed: vec![Packed::default(); corpus.chunk_count()],
            best_compress: Duration::MAX,
            best_decompress: Duration::MAX,
        })
        .collect();

    // Untimed warm-up: instantiates the wasm stores, touches every table.
    let first = corpus.chunks().next().expect("the corpus is not empty");
    for lane in &mut lanes {
        let mut out = Vec::new();
        let mut back = vec![0u8; first.len()];
        if lane.compressor.compress(first, &mut out) {
            lane.decompressor
                .decompress(&out, &mut back)
                .with_context(|| format!("{}: warm-up decode", lane.label))?;
        }
        check_failure(lane.compressor.as_mut(), &lane.label)?;
    }

    let mut scratch = vec![0u8; chunk_size];
    for rep in 1..=reps {
        eprint!("{}: round {rep}/{reps} (compress/decompress seconds):", name.id());
        for lane in &mut lanes {
            let t = compress_all(lane.compressor.as_mut(), corpus, &mut lane.packed, &lane.label)?;
            lane.best_compress = lane.best_compress.min(t);
            let d = decode_all(
                lane.decompressor.as_mut(),
                corpus,
                &lane.packed,
                &mut scratch,
                false,
                &lane.label,
            )?;
            lane.best_decompress = lane.best_decompress.min(d);
            // The timed pass only checked for errors; now check the bytes.
            decode_all(
                lane.decompressor.as_mut(),
                corpus,
                &lane.packed,
                &mut scratch,
                true,
                &lane.label,
            )?;
            eprint!(
                " {} {:.2}/{:.2}",
                lane.runtime.label(),
                t.as_secs_f64(),
                d.as_secs_f64()
            );
        }
        eprintln!();
    }

    // Every runtime's chunks through every other runtime's decoder (each
    // one's own were checked after every round above).
    for producer in &lanes {
        for (runtime, codec) in codecs {
            if *runtime != producer.runtime {
                let what = format!("{} chunks decoded by {}", producer.label, runtime.label());
                let mut decoder = codec.decompressor(chunk_size);
                decode_all(decoder.as_mut(), corpus, &producer.packed, &mut scratch, true, &what)?;
            }
        }
    }
    let packed_of = |r: Runtime| {
        &lanes
            .iter()
            .find(|l| l.runtime == r)
            .expect("every runtime has a lane")
            .packed
    };
    let (native, wasm) = (packed_of(Runtime::Native), packed_of(Runtime::Wasm));
    let differing = native.iter().zip(wasm).filter(|(a, b)| a != b).count();
    println!(
        "check:   {}: every runtime's chunks decode to the input with every runtime's decoder (3x3); \
         native and wasm streams {}",
        name.id(),
        if differing == 0 {
            "are byte-identical".to_string()
        } else {
            format!("differ in {differing} of {} chunks", native.len())
        }
    );

    let runs = lanes
        .iter()
        .map(|l| Summary::new(l.runtime, &l.packed, corpus, l.best_compress, l.best_decompress))
        .collect();
    Ok(CodecResult { name, runs })
}

/// Compresses every chunk of `corpus` into `packed`; returns the wall time.
fn compress_all(
    compressor: &mut dyn ChunkCompressor,
    corpus: &Corpus,
    packed: &mut [Packed],
    label: &str,
) -> Result<Duration> {
    let started = Instant::now();
    for (chunk, p) in corpus.chunks().zip(packed.iter_mut()) {
        p.compressed = compressor.compress(chunk, &mut p.bytes);
    }
    let elapsed = started.elapsed();
    check_failure(compressor, label)?;
    for (i, (chunk, p)) in corpus.chunks().zip(packed.iter()).enumerate() {
        ensure!(
            !p.compressed || p.bytes.len() < chunk.len(),
            "{label}: chunk {i} was 'compressed' to {} bytes from {}",
            p.bytes.len(),
            chunk.len()
        );
    }
    Ok(elapsed)
}

/// A compressor that failed (a trapped plugin) stored chunks raw: that is
/// not a measurement of the codec, so stop.
fn check_failure(compressor: &mut dyn ChunkCompressor, label: &str) -> Result<()> {
    match compressor.take_failure() {
        Some(failure) => bail!("{label}: the compressor failed: {failure}"),
        None => Ok(()),
    }
}

/// Decodes every compressed chunk in `packed` into `scratch`; with `verify`,
/// also compares each against its input. Returns the wall time.
fn decode_all(
    decompressor: &mut dyn ChunkDecompressor,
    corpus: &Corpus,
    packed: &[Packed],
    scratch: &mut [u8],
    verify: bool,
    label: &str,
) -> Result<Duration> {
    let started = Instant::now();
    for (i, (chunk, p)) in corpus.chunks().zip(packed).enumerate() {
        if !p.compressed {
            continue;
        }
        let out = &mut scratch[..chunk.len()];
        decompressor.decompress(&p.bytes, out).map_err(|e| {
            anyhow::anyhow!(
                "{label}: chunk {i} ({} bytes compressed) does not decode: {e}",
                p.bytes.len()
            )
        })?;
        if verify && out != chunk {
            let at = out.iter().zip(chunk).position(|(a, b)| a != b).unwrap_or(0);
            bail!(
                "{label}: chunk {i} decodes to different bytes (first difference at offset {at} of {})",
                chunk.len()
            );
        }
    }
    Ok(started.elapsed())
}

// ---------------------------------------------------------------------------
// Reporting

fn print_table(results: &[CodecResult], corpus: &Corpus) {
    println!();
    println!(
        "{:<7} {:<7} {:>12} {:>14} {:>14} {:>8} {:>10}",
        "codec", "runtime", "compr MiB/s", "decompr MiB/s", "size bytes", "size", "raw chunks"
    );
    for r in results {
        for s in &r.runs {
            println!(
                "{:<7} {:<7} {:>12.1} {:>14.1} {:>14} {:>7.2}% {:>10}",
                r.name.id(),
                s.runtime.label(),
                s.compress_mibs,
                s.decompress_mibs,
                s.stored,
                s.percent(corpus),
                s.raw_chunks
            );
        }
    }
}

/// Speed ratios above 1.0: the first runtime is faster. Size ratios above
/// 1.0: the first runtime writes more bytes.
fn print_ratios(results: &[CodecResult]) {
    println!();
    println!(
        "{:<7} {:<14} {:>9} {:>11} {:>8}",
        "codec", "ratio", "compress", "decompress", "size"
    );
    for r in results {
        for (a, b) in [
            (Runtime::Wasm, Runtime::Native),
            (Runtime::Native, Runtime::Wimlib),
            (Runtime::Wasm, Runtime::Wimlib),
        ] {
            let (sa, sb) = (r.get(a), r.get(b));
            println!(
                "{:<7} {:<14} {:>8.2}x {:>10.2}x {:>7.4}x",
                r.name.id(),
                format!("{}/{}", a.label(), b.label()),
                sa.compress_mibs / sb.compress_mibs,
                sa.decompress_mibs / sb.decompress_mibs,
                sa.stored as f64 / sb.stored as f64
            );
        }
    }
}

/// One line for the docs: every codec and runtime, with the setup.
fn print_docs_line(results: &[CodecResult], corpus: &Corpus, dirs: &[PathBuf], reps: u32) {
    let codecs: Vec<String> = results
        .iter()
        .map(|r| {
            let cells: Vec<String> = Runtime::ALL
                .iter()
                .map(|&rt| {
                    let s = r.get(rt);
                    format!(
                        "{} {:.0}/{:.0} ({:.1}%)",
                        rt.label(),
                        s.compress_mibs,
                        s.decompress_mibs,
                        s.percent(corpus)
                    )
                })
                .collect();
            format!("{} {}", r.name.id().to_uppercase(), cells.join(", "))
        })
        .collect();
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    println!();
    println!(
        "docs: One core, {} KiB chunks, {:.0} MiB of {}, best of {reps}; compress/decompress MiB/s (stored size): {}.",
        corpus.chunk_size >> 10,
        corpus.data.len() as f64 / MIB,
        dirs.join(" + "),
        codecs.join("; ")
    );
}

// ---------------------------------------------------------------------------
// wimlib

/// wimlib's chunk compressors and decompressors as a [`Codec`], through its
/// public C API in `libwim.so.15`, loaded at run time.
mod wimlib {
    use std::os::raw::{c_int, c_uint, c_void};
    use std::ptr::{null_mut, NonNull};
    use std::sync::Arc;

    use anyhow::{Context, Result};
    use libloading::Library;
    use wimguard_sdk::{ChunkCompressor, ChunkDecompressor, Codec, CodecError};

    /// `enum wimlib_compression_type`.
    pub const CTYPE_XPRESS: c_int = 1;
    pub const CTYPE_LZX: c_int = 2;
    /// wimlib's default compression level (what level 0 selects, and what
    /// `host/codecs/lzx/examples/lzx_ratio.rs` compares against).
    pub const LEVEL: c_uint = 50;

    const PATHS: [&str; 2] = ["/usr/lib/x86_64-linux-gnu/libwim.so.15", "libwim.so.15"];

    type CreateCompressor = unsafe extern "C" fn(c_int, usize, c_uint, *mut *mut c_void) -> c_int;
    type Compress = unsafe extern "C" fn(*const c_void, usize, *mut c_void, usize, *mut c_void) -> usize;
    type FreeCompressor = unsafe extern "C" fn(*mut c_void);
    type CreateDecompressor = unsafe extern "C" fn(c_int, usize, *mut *mut c_void) -> c_int;
    type Decompress = unsafe extern "C" fn(*const c_void, usize, *mut c_void, usize, *mut c_void) -> c_int;
    type FreeDecompressor = unsafe extern "C" fn(*mut c_void);

    /// The loaded library and the six entry points used here.
    pub struct Wimlib {
        create_compressor: CreateCompressor,
        compress: Compress,
        free_compressor: FreeCompressor,
        create_decompressor: CreateDecompressor,
        decompress: Decompress,
        free_decompressor: FreeDecompressor,
        /// Keeps the function pointers above valid; dropped last.
        _lib: Library,
    }

    impl Wimlib {
        pub fn load() -> Result<Arc<Wimlib>> {
            // SAFETY: libwim is a trusted system library whose initialisers
            // have no side effects that matter here.
            let lib = PATHS
                .iter()
                .find_map(|p| unsafe { Library::new(p) }.ok())
                .context("libwim.so.15 not found; install it with `apt-get install wimtools`")?;
            // SAFETY: the types match the prototypes in wimlib.h; the
            // pointers are only used while `_lib` keeps the library loaded.
            unsafe {
                Ok(Arc::new(Wimlib {
                    create_compressor: *lib.get(b"wimlib_create_compressor")?,
                    compress: *lib.get(b"wimlib_compress")?,
                    free_compressor: *lib.get(b"wimlib_free_compressor")?,
                    create_decompressor: *lib.get(b"wimlib_create_decompressor")?,
                    decompress: *lib.get(b"wimlib_decompress")?,
                    free_decompressor: *lib.get(b"wimlib_free_decompressor")?,
                    _lib: lib,
                }))
            }
        }
    }

    /// One wimlib compression type at [`LEVEL`].
    pub struct WimlibCodec {
        lib: Arc<Wimlib>,
        name: &'static str,
        ctype: c_int,
        max_chunk_size: usize,
    }

    impl WimlibCodec {
        pub fn new(lib: Arc<Wimlib>, name: &'static str, ctype: c_int, max_chunk_size: usize) -> Self {
            WimlibCodec {
                lib,
                name,
                ctype,
                max_chunk_size,
            }
        }
    }

    impl Codec for WimlibCodec {
        fn name(&self) -> &'static str {
            self.name
        }

        fn max_chunk_size(&self) -> usize {
            self.max_chunk_size
        }

        fn compressor(&self, chunk_size: usize) -> Box<dyn ChunkCompressor> {
            let mut handle = null_mut();
            // SAFETY: valid arguments; wimlib writes the handle on success.
            let rc = unsafe { (self.lib.create_compressor)(self.ctype, chunk_size, LEVEL, &mut handle) };
            let handle = NonNull::new(handle)
                .filter(|_| rc == 0)
                .unwrap_or_else(|| panic!("wimlib_create_compressor({}, {chunk_size}) failed: {rc}", self.name));
            Box::new(WimlibCompressor {
                lib: self.lib.clone(),
                handle,
            })
        }

        fn decompressor(&self, chunk_size: usize) -> Box<dyn ChunkDecompressor> {
            let mut handle = null_mut();
            // SAFETY: valid arguments; wimlib writes the handle on success.
            let rc = unsafe { (self.lib.create_decompressor)(self.ctype, chunk_size, &mut handle) };
            let handle = NonNull::new(handle)
                .filter(|_| rc == 0)
                .unwrap_or_else(|| panic!("wimlib_create_decompressor({}, {chunk_size}) failed: {rc}", self.name));
            Box::new(WimlibDecompressor {
                lib: self.lib.clone(),
                handle,
            })
        }
    }

    struct WimlibCompressor {
        lib: Arc<Wimlib>,
        handle: NonNull<c_void>,
    }

    // SAFETY: a wimlib compressor has no thread affinity; `&mut self` makes
    // every use exclusive.
    unsafe impl Send for WimlibCompressor {}

    impl ChunkCompressor for WimlibCompressor {
        fn compress(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
            out.clear();
            // Like the other runtimes: only strictly smaller output counts.
            let avail = chunk.len().saturating_sub(1);
            if avail == 0 {
                return false;
            }
            out.reserve(avail);
            // SAFETY: `out` has room for `avail` bytes; wimlib writes at most
            // that many and returns how many (0: did not fit).
            unsafe {
                let n = (self.lib.compress)(
                    chunk.as_ptr().cast(),
                    chunk.len(),
                    out.as_mut_ptr().cast(),
                    avail,
                    self.handle.as_ptr(),
                );
                out.set_len(n);
                n != 0
            }
        }
    }

    impl Drop for WimlibCompressor {
        fn drop(&mut self) {
            // SAFETY: the handle came from wimlib_create_compressor.
            unsafe { (self.lib.free_compressor)(self.handle.as_ptr()) }
        }
    }

    struct WimlibDecompressor {
        lib: Arc<Wimlib>,
        handle: NonNull<c_void>,
    }

    // SAFETY: as for WimlibCompressor.
    unsafe impl Send for WimlibDecompressor {}

    impl ChunkDecompressor for WimlibDecompressor {
        fn decompress(&mut self, compressed: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
            // SAFETY: both buffers are valid for the lengths passed.
            let rc = unsafe {
                (self.lib.decompress)(
                    compressed.as_ptr().cast(),
                    compressed.len(),
                    out.as_mut_ptr().cast(),
                    out.len(),
                    self.handle.as_ptr(),
                )
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(CodecError::new(format!("wimlib_decompress returned {rc}")))
            }
        }
    }

    impl Drop for WimlibDecompressor {
        fn drop(&mut self) {
            // SAFETY: the handle came from wimlib_create_decompressor.
            unsafe { (self.lib.free_decompressor)(self.handle.as_ptr()) }
        }
    }
}
