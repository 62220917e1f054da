//! The job runner: backups run on their own threads, publish progress on a
//! watch channel, can be cancelled, and are recorded in the catalog at every
//! state change. Knows nothing of gRPC.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::budget::{MemoryBudget, Reservation};
use crate::capture::{self, CaptureOptions, CapturePhase};
use crate::catalog::{now_ms, BackupRecord, Catalog, CodecName, Phase, PluginKind, Status};
use crate::config::{HooksConfig, StandardCodecRuntime};
use crate::hooks::{BackupFacts, BackupHooks, BackupOutcome};
use crate::plugins::PluginRegistry;
use crate::remote::{ObjectStore, RemoteArchive};
use crate::wim::archive::{peek, ArchiveSummary};
use crate::wim::codecs::SharedCodec;
use crate::wim::{Compression, WimError, WimWriter};
use wimguard_sdk::Codec;

pub use crate::error::CoreError;

/// Live counters of a running job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveProgress {
    pub phase: Phase,
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_per_second: f64,
    /// Bytes sent to a destination plugin so far (remote archives).
    pub bytes_uploaded: u64,
}

/// What watchers see: the record plus live progress.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobUpdate {
    pub record: BackupRecord,
    pub progress: LiveProgress,
}

/// What a backup should do.
#[derive(Debug, Clone, Default)]
pub struct BackupSpec {
    pub source: PathBuf,
    pub destination: PathBuf,
    /// The codec (`none`, `xpress`, `lzx`, a codec plugin's codec id, or
    /// the name of a codec plugin). None: the server default for new
    /// archives; an existing archive keeps its codec.
    pub compression: Option<CodecName>,
    pub name: Option<String>,
    pub description: String,
    pub excludes: Vec<String>,
    pub plugins: Vec<String>,
    /// `--destination` as the user typed it: with a destination plugin it
    /// names a remote archive, not a path.
    pub destination_as_given: String,
    /// Set by [`Jobs::start_backup`] when a destination plugin is attached.
    pub remote: Option<RemoteArchive>,
    /// The schedule starting it, if one does.
    pub schedule_id: String,
}

struct RunningJob {
    cancel: Arc<AtomicBool>,
    updates: watch::Receiver<JobUpdate>,
}

#[derive(Default)]
struct State {
    running: HashMap<String, RunningJob>,
    /// Archive path → uuid of the backup (or name of the operation)
    /// writing it.
    busy_archives: HashMap<PathBuf, String>,
    /// No new jobs: the server is stopping, or cannot keep records.
    accepting_closed: bool,
    /// Why, when it is not a shutdown (said to whoever asks for a job).
    closed_because: Option<String>,
    /// Remote archive → restores and verifies reading it now: a
    /// consolidation deletes the objects they read, so it waits for none.
    readers: HashMap<PathBuf, usize>,
}

/// Who holds an archive while consolidating it, and while applying
/// retention (which may consolidate): readers wait for neither (see
/// [`Jobs::begin_reading`]).
pub const CONSOLIDATION: &str = "consolidation";
pub const RETENTION: &str = "forget";
/// Who holds a remote archive while `archive check --repair` forgets what
/// its store lost (readers may go on: nothing is deleted from the store).
pub const CHECK: &str = "check --repair";
const CONSOLIDATING: [&str; 2] = [CONSOLIDATION, RETENTION];

/// A reader of a remote archive, counted until dropped.
pub struct Reading<'a> {
    jobs: &'a Jobs,
    key: PathBuf,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut st = self.jobs.state();
        if let Some(n) = st.readers.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                st.readers.remove(&self.key);
            }
        }
    }
}

/// What the job runner needs from the server's configuration.
#[derive(Debug, Clone, Default)]
pub struct JobSettings {
    /// Codec name for new archives (`backup.compression`).
    pub default_compression: CodecName,
    /// Codec name for new remote archives (`backup.remoteCompression`).
    pub default_remote_compression: CodecName,
    pub standard_codec_runtime: StandardCodecRuntime,
    /// Command hooks (`hooks:`).
    pub hooks: HooksConfig,
    /// MiB of metadata all requests may hold at once (`service.server.metadataMemoryMib`).
    pub metadata_memory_mib: u64,
}

/// Runs and tracks jobs.
pub struct Jobs {
    catalog: Arc<Catalog>,
    state: Mutex<State>,
    settings: JobSettings,
    plugins: Arc<PluginRegistry>,
    memory: Arc<MemoryBudget>,
    /// Stores standing in for destination plugins (unit tests of the core).
    #[cfg(test)]
    pub(crate) test_stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// The codec a backup compresses with.
#[derive(Clone)]
pub enum CodecChoice {
    /// A standard WIM codec; `implementation` overrides the built-in
    /// compressor (the bundled wasm plugin when configured).
    Standard {
        compression: Compression,
        implementation: Option<SharedCodec>,
    },
    /// A third-party codec plugin (archives record its id).
    Plugin(SharedCodec),
}

impl CodecChoice {
    /// The codec id recorded in the catalog.
    pub fn id(&self) -> CodecName {
        match self {
            CodecChoice::Standard { compression, .. } => {
                CodecName::of_standard(*compression).expect("a standard choice is none, xpress or lzx")
            }
            CodecChoice::Plugin(c) => CodecName::Plugin(c.name().into()),
        }
    }
}

/// The chunk size a new archive compressed by codec plugin `c` uses: ours
/// (32 KiB), or the largest power of two the codec accepts below it.
fn plugin_chunk_size(c: &dyn Codec) -> u32 {
    let chunk = crate::wim::writer::DEFAULT_CHUNK_SIZE.min(u32::try_from(c.max_chunk_size()).unwrap_or(u32::MAX));
    if chunk.is_power_of_two() {
        chunk
    } else {
        chunk.next_power_of_two() / 2
    }
}

/// The options of a backup's capture. The default name was chosen when the
/// backup was asked for; another backup to the archive may have taken it
/// since (names are per second), so it is chosen again now that the archive
/// is ours (`taken` says which names are).
fn capture_options(
    record: &mut BackupRecord,
    spec: &BackupSpec,
    cancel: &Arc<AtomicBool>,
    tx: &watch::Sender<JobUpdate>,
    taken: &dyn Fn(&str) -> bool,
) -> CaptureOptions {
    if record.name.is_empty() || (spec.name.is_none() && taken(&record.name)) {
        record.name = capture::default_image_name(taken);
        let name = record.name.clone();
        tx.send_modify(|u| u.record.name = name);
    }
    CaptureOptions {
        name: record.name.clone(),
        description: record.description.clone(),
        excludes: spec.excludes.clone(),
        no_rpfix: false,
        cancel: Some(cancel.clone()),
        backup_uuid: record.uuid.clone(),
    }
}

/// A full disk or quota while writing archive `dest` says where: the
/// system's "No space left on device (os error 28)" names no file, and the
/// source's disk is not the one that is full.
fn naming_full_disk(e: crate::wim::WimError, dest: &Path) -> crate::wim::WimError {
    use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, StorageFull};
    match e {
        crate::wim::WimError::Io(io) if matches!(io.kind(), StorageFull | QuotaExceeded | FileTooLarge) => {
            crate::wim::WimError::Io(std::io::Error::new(
                io.kind(),
                format!(
                    "writing {}: {io}; the archive is unchanged (free space there, or back up elsewhere)",
                    dest.display()
                ),
            ))
        }
        other => other,
    }
}

/// The counts of a capture into the backup's record.
pub fn record_capture(record: &mut BackupRecord, report: &capture::CaptureReport, image_index: u32) {
    record.image_index = image_index;
    record.files = report.files + report.symlinks + report.specials;
    record.directories = report.dirs;
    record.bytes_total = report.bytes_total;
    record.bytes_read = report.bytes_read;
    record.bytes_stored = report.bytes_stored;
    record.files_unchanged = report.reused;
    record.warnings = report.warnings.clone();
}

/// Turns capture progress into job updates (at most ten a second, besides
/// a change of phase and the last file written).
fn progress_reporter(tx: &watch::Sender<JobUpdate>, start: Instant) -> impl FnMut(&capture::CaptureProgress) + '_ {
    let mut last_sent = Instant::now() - Duration::from_secs(1);
    let mut last_phase = None;
    move |p| {
        let now = Instant::now();
        if now.duration_since(last_sent) < Duration::from_millis(100)
            && last_phase == Some(p.phase)
            && !(p.phase == CapturePhase::Writing && p.files_done == p.files_total)
        {
            return;
        }
        last_sent = now;
        last_phase = Some(p.phase);
        let phase = match p.phase {
            CapturePhase::Scanning => Phase::Scanning,
            CapturePhase::Writing => Phase::Writing,
            CapturePhase::Finalizing => Phase::Finalizing,
        };
        tx.send_modify(|u| {
            u.record.phase = phase;
            u.progress = LiveProgress {
                phase,
                files_done: p.files_done,
                files_total: p.files_total,
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
                bytes_per_second: p.bytes_done as f64 / start.elapsed().as_secs_f64().max(1e-3),
                bytes_uploaded: u.progress.bytes_uploaded,
            };
        });
    }
}

/// The codec id an existing archive uses (`none`, `xpress`, …, or the plugin's id).
fn archive_codec_id(arch: &ArchiveSummary) -> Result<CodecName, CoreError> {
    let c = arch.header.compression().map_err(CoreError::from)?;
    let name = match (c, &arch.codec) {
        (Compression::Plugin, Some(codec)) => CodecName::from_name(codec.name()),
        (c, _) => CodecName::of_standard(c),
    };
    name.ok_or_else(|| CoreError::FailedPrecondition(format!("{} archives cannot be appended to", c.name())))
}

/// Runs `f`, turning a panic (a bug) into an internal error, so the job
/// still ends and frees its archive.
fn catch_bug(f: impl FnOnce() -> Result<(), CoreError>) -> Result<(), CoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned());
        Err(CoreError::Internal(format!(
            "internal error (please report): {}",
            msg.unwrap_or_default()
        )))
    })
}

fn writable_dir(dir: &Path) -> bool {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a valid C string.
    unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) == 0 }
}

impl Jobs {
    pub fn new(catalog: Arc<Catalog>, settings: JobSettings, plugins: Arc<PluginRegistry>) -> Jobs {
        let memory = MemoryBudget::new(settings.metadata_memory_mib, crate::budget::DEFAULT_WAIT);
        Jobs {
            catalog,
            state: Mutex::new(State::default()),
            settings,
            plugins,
            memory,
            #[cfg(test)]
            test_stores: Mutex::new(HashMap::new()),
        }
    }

    /// The object store of destination plugin `plugin`.
    pub fn object_store(&self, plugin: &str) -> Result<Arc<dyn ObjectStore>, CoreError> {
        #[cfg(test)]
        if let Some(s) = self.test_stores.lock().unwrap().get(plugin) {
            return Ok(s.clone());
        }
        crate::remote::plugin_store::open(&self.plugins, plugin)
    }

    /// The object store of destination plugin `plugin`, stopped by `cancel`.
    fn object_store_cancellable(
        &self,
        plugin: &str,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Arc<dyn ObjectStore>, CoreError> {
        #[cfg(test)]
        if let Some(s) = self.test_stores.lock().unwrap().get(plugin) {
            return Ok(s.clone());
        }
        crate::remote::plugin_store::open_cancellable(&self.plugins, plugin, cancel.clone())
    }

    /// The destination plugin attached with `--plugin`, if any (one at most).
    fn destination_plugin(&self, spec: &BackupSpec) -> Result<Option<String>, CoreError> {
        let mut found: Option<String> = None;
        for name in &spec.plugins {
            let rec = self.plugins.get(name)?;
            if rec.kind == PluginKind::Destination && found.as_deref() != Some(name.as_str()) {
                if let Some(first) = &found {
                    return Err(CoreError::InvalidArgument(format!(
                        "--plugin {first} and --plugin {name} are both destinations; a backup goes to one place"
                    )));
                }
                found = Some(name.clone());
            }
        }
        Ok(found)
    }

    /// The server-wide budget for loaded metadata.
    pub fn memory(&self) -> &Arc<MemoryBudget> {
        &self.memory
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn plugins(&self) -> &Arc<PluginRegistry> {
        &self.plugins
    }

    /// Resolves a codec name: `none`, or a codec plugin by name or codec id.
    /// The standard ids `xpress` and `lzx` are served by the bundled plugins
    /// of those names; disabling one forbids new archives with it (reading
    /// standard archives never depends on plugins).
    pub fn resolve_codec(&self, name: &CodecName) -> Result<CodecChoice, CoreError> {
        if *name == CodecName::None {
            return Ok(CodecChoice::Standard {
                compression: Compression::None,
                implementation: None,
            });
        }
        let name = name.as_str();
        let rec = match self.plugins.get(name) {
            Ok(r) => r,
            Err(crate::plugins::registry::RegistryError::NotFound(_)) => self
                .plugins
                .list()?
                .into_iter()
                .find(|p| p.kind == PluginKind::Codec && p.codec_id == name)
                .ok_or_else(|| {
                    CoreError::InvalidArgument(format!(
                        "unknown codec `{name}`: use none, xpress, lzx or an installed codec plugin (see `wimguard \
                         plugin list`)"
                    ))
                })?,
            Err(e) => return Err(e.into()),
        };
        if rec.kind != PluginKind::Codec {
            return Err(CoreError::InvalidArgument(format!(
                "plugin `{}` is a {} plugin, not a codec",
                rec.name, rec.kind
            )));
        }
        if !rec.enabled {
            return Err(CoreError::FailedPrecondition(format!(
                "codec plugin `{}` is disabled; enable it with `wimguard plugin enable {}`",
                rec.name, rec.name
            )));
        }
        if let Some(compression) = Compression::from_standard_name(&rec.codec_id) {
            let implementation = match self.settings.standard_codec_runtime {
                StandardCodecRuntime::Native => None,
                StandardCodecRuntime::Wasm => Some(self.plugins.codec(&rec.name)?),
            };
            return Ok(CodecChoice::Standard {
                compression,
                implementation,
            });
        }
        Ok(CodecChoice::Plugin(self.plugins.codec(&rec.name)?))
    }

    /// Loads the plugins attached with `--plugin`: hooks become the hook
    /// stage; a codec plugin stands for `--compression NAME`.
    fn attached_plugins(&self, spec: &mut BackupSpec) -> Result<BackupHooks, CoreError> {
        let mut hook_plugins = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Which option chose the codec, for the message when two disagree.
        let mut codec_from = "--compression";
        for name in &spec.plugins {
            if !seen.insert(name.as_str()) {
                continue; // `--plugin x --plugin x` runs x once
            }
            let rec = self.plugins.get(name)?;
            match rec.kind {
                PluginKind::Hook => hook_plugins.push(self.plugins.hook(name)?),
                PluginKind::Codec => match &spec.compression {
                    Some(c) if c.as_str() != name && c.as_str() != rec.codec_id => {
                        return Err(CoreError::InvalidArgument(format!(
                            "--plugin {name} is a codec, but {codec_from} already chose {c}; a backup uses one codec"
                        )))
                    }
                    _ => {
                        spec.compression = Some(CodecName::parse(name).map_err(CoreError::InvalidArgument)?);
                        codec_from = "another --plugin";
                    }
                },
                // The destination stage (see start_backup).
                PluginKind::Destination => {}
            }
        }
        Ok(BackupHooks::new(&self.settings.hooks, hook_plugins).hide_env(self.plugins.secret_variables()))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates and starts a backup; returns its first update and a receiver of the following ones.
    pub fn start_backup(self: &Arc<Self>, mut spec: BackupSpec) -> Result<watch::Receiver<JobUpdate>, CoreError> {
        self.check_backup_paths(&mut spec)?;
        let hooks = self.attached_plugins(&mut spec)?;
        let (codec, exists, default_name) = self.backup_codec_and_name(&spec)?;
        if let Some(n) = &spec.name {
            capture::check_image_name(n).map_err(CoreError::InvalidArgument)?;
        }
        capture::check_excludes(&spec.excludes).map_err(|e| CoreError::InvalidArgument(e.to_string()))?;
        let default_name = default_name.unwrap_or_else(|| capture::default_image_name(&|_| false));
        let uuid = uuid::Uuid::new_v4().to_string();
        let record = BackupRecord {
            uuid: uuid.clone(),
            status: Status::Running,
            phase: Phase::Scanning,
            source: spec.source.display().to_string(),
            destination: spec.destination.display().to_string(),
            compression: codec.id(),
            name: spec.name.clone().unwrap_or(default_name),
            description: spec.description.clone(),
            excludes: spec.excludes.clone(),
            plugins: spec.plugins.clone(),
            schedule_id: spec.schedule_id.clone(),
            created_at: now_ms(),
            started_at: Some(now_ms()),
            ..BackupRecord::default()
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx) = watch::channel(JobUpdate {
            record: record.clone(),
            progress: LiveProgress {
                phase: Phase::Scanning,
                ..LiveProgress::default()
            },
        });
        {
            let mut st = self.state();
            if st.accepting_closed {
                return Err(CoreError::Unavailable(st.closed_because.clone().unwrap_or_else(|| {
                    "the server is shutting down; try again after it restarts".into()
                })));
            }
            if let Some(other) = st.busy_archives.get(&spec.destination) {
                return Err(CoreError::Conflict(format!(
                    "backup {other} is already writing {}; wait for it or cancel it",
                    spec.destination.display()
                )));
            }
            self.catalog.insert_backup(&record)?;
            st.busy_archives.insert(spec.destination.clone(), uuid.clone());
            st.running.insert(
                uuid.clone(),
                RunningJob {
                    cancel: cancel.clone(),
                    updates: rx.clone(),
                },
            );
        }
        let jobs = Arc::clone(self);
        std::thread::Builder::new()
            .name(format!("backup-{}", &uuid[..8]))
            .spawn(move || jobs.run_backup(record, spec, codec, hooks, exists, cancel, tx))
            .map_err(|e| CoreError::Internal(format!("cannot start a worker thread: {e}")))?;
        Ok(rx)
    }

    /// Resolves the destination (a remote archive of a destination plugin,
    /// or a canonical local path) and the source, and refuses what cannot
    /// work before anything is recorded.
    fn check_backup_paths(&self, spec: &mut BackupSpec) -> Result<(), CoreError> {
        if let Some(plugin) = self.destination_plugin(spec)? {
            let given = if spec.destination_as_given.is_empty() {
                spec.destination.display().to_string()
            } else {
                spec.destination_as_given.clone()
            };
            let remote = RemoteArchive::new(&plugin, &given)?;
            // A plugin that cannot load (a secret's variable unset in the
            // server's environment, bad settings) is refused here, as a
            // hook plugin is, not as a backup that ran and failed.
            self.object_store(&plugin)?;
            spec.destination = PathBuf::from(remote.id());
            spec.remote = Some(remote);
        }
        let remote = spec.remote.is_some();
        if !spec.source.is_absolute() || (!remote && !spec.destination.is_absolute()) {
            return Err(CoreError::InvalidArgument(
                "source and destination must be absolute paths".into(),
            ));
        }
        // One name per archive, however it was spelled (symlinks to it or
        // to its directory, `..`): the catalog, retention and stats count
        // archives by it.
        if !remote {
            let target =
                crate::wim::fsutil::final_target(&spec.destination).unwrap_or_else(|_| spec.destination.clone());
            if let (Some(dir), Some(name)) = (target.parent(), target.file_name()) {
                if let Ok(d) = std::fs::canonicalize(dir) {
                    spec.destination = d.join(name);
                }
            }
        }
        if let Ok(s) = std::fs::canonicalize(&spec.source) {
            spec.source = s;
        }
        match std::fs::metadata(&spec.source) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(CoreError::InvalidArgument(format!(
                    "source {} is not a directory",
                    spec.source.display()
                )))
            }
            Err(e) => {
                return Err(CoreError::NotFound(format!(
                    "source {} cannot be read: {e}",
                    spec.source.display()
                )))
            }
        }
        let dir = spec.destination.parent().unwrap_or(Path::new("/"));
        if remote {
            // Checked by the store itself when the upload begins.
        } else if !dir.is_dir() {
            return Err(CoreError::NotFound(format!(
                "destination directory {} does not exist",
                dir.display()
            )));
        }
        if !remote && !writable_dir(dir) {
            return Err(CoreError::PermissionDenied(format!(
                "destination directory {} is not writable",
                dir.display()
            )));
        }
        Ok(())
    }

    /// The codec of the backup (an existing archive or chain keeps its own;
    /// a different `--compression` is refused), whether the archive exists,
    /// and the default image name when none was given (unique in it).
    fn backup_codec_and_name(&self, spec: &BackupSpec) -> Result<(CodecChoice, bool, Option<String>), CoreError> {
        let remote = spec.remote.is_some();
        let mut default_name = None;
        let chain = match &spec.remote {
            Some(r) => crate::remote::backup::chain_codec(&self.catalog, r)?,
            None => None,
        };
        let exists = chain.is_some() || (!remote && spec.destination.exists());
        let codec = if let Some((have, _)) = &chain {
            // An existing chain keeps its codec, as an existing archive does.
            let codec = match &spec.compression {
                Some(want) => {
                    let choice = self.resolve_codec(want)?;
                    if choice.id() != *have {
                        return Err(CoreError::InvalidArgument(format!(
                            "{} is compressed with {have}; every object of a chain uses the same codec",
                            spec.destination.display(),
                        )));
                    }
                    choice
                }
                None => self.resolve_codec(have)?,
            };
            let taken: HashSet<String> = self
                .catalog
                .backups_in_archive(&spec.destination.display().to_string())?
                .into_iter()
                .map(|b| b.name)
                .collect();
            if let Some(n) = &spec.name {
                if taken.contains(n) {
                    return Err(CoreError::InvalidArgument(format!(
                        "{} already has an image named {n:?}",
                        spec.destination.display()
                    )));
                }
            } else {
                default_name = Some(capture::default_image_name(&|n| taken.contains(n)));
            }
            codec
        } else if exists {
            let arch = peek(&spec.destination, &*self.plugins).map_err(|e| match e {
                WimError::CodecUnavailable(m) => {
                    CoreError::FailedPrecondition(format!("cannot append to {}: {m}", spec.destination.display()))
                }
                e => CoreError::DataLoss(format!(
                    "destination {} is not a usable WIM archive: {e}",
                    spec.destination.display()
                )),
            })?;
            let have = archive_codec_id(&arch)?;
            let codec = match &spec.compression {
                Some(want) => {
                    let choice = self.resolve_codec(want)?;
                    if choice.id() != have {
                        return Err(CoreError::InvalidArgument(format!(
                            "{} is compressed with {have}; an appended image uses the archive's codec",
                            spec.destination.display(),
                        )));
                    }
                    choice
                }
                None => match (arch.header.compression().map_err(CoreError::from)?, arch.codec) {
                    (Compression::Plugin, Some(c)) => CodecChoice::Plugin(c),
                    (Compression::None, _) => CodecChoice::Standard {
                        compression: Compression::None,
                        implementation: None,
                    },
                    // Same rules as for a new archive (a disabled codec plugin refuses).
                    _ => self.resolve_codec(&have)?,
                },
            };
            if let Some(n) = &spec.name {
                if arch.xml.name_in_use(n) {
                    return Err(CoreError::InvalidArgument(format!(
                        "{} already has an image named {n:?}",
                        spec.destination.display()
                    )));
                }
            } else {
                default_name = Some(capture::default_image_name(&|n| arch.xml.name_in_use(n)));
            }
            codec
        } else {
            let default = if remote {
                &self.settings.default_remote_compression
            } else {
                &self.settings.default_compression
            };
            let name = spec.compression.clone().unwrap_or_else(|| default.clone());

            self.resolve_codec(&name)?
        };
        Ok((codec, exists, default_name))
    }

    /// Runs a backup on its own thread, stage by stage: pre-backup hooks,
    /// then the capture (which reads, compresses and writes the image, and
    /// for a remote archive uploads it), publishing, post-backup hooks,
    /// and recording the result. (Retention follows in the scheduler, for
    /// scheduled backups.)
    #[allow(clippy::too_many_arguments)]
    fn run_backup(
        &self,
        mut record: BackupRecord,
        spec: BackupSpec,
        codec: CodecChoice,
        hooks: BackupHooks,
        exists: bool,
        cancel: Arc<AtomicBool>,
        tx: watch::Sender<JobUpdate>,
    ) {
        tracing::info!(uuid = %record.uuid, source = %record.source, destination = %record.destination, "backup started");
        crate::metrics::job_started("backup");
        let start = Instant::now();
        let facts = BackupFacts {
            backup_id: record.uuid.clone(),
            job: record.name.clone(),
            source: record.source.clone(),
            destination: record.destination.clone(),
            compression: record.compression.to_string(),
        };
        // A bug must not leave the job "running" and its archive locked forever.
        let result = catch_bug(|| {
            self.pre_hooks_stage(&mut record, &hooks, &facts, &cancel, &tx)?;
            let mut warnings = std::mem::take(&mut record.warnings);
            let r = self.capture_into(&mut record, &spec, codec, exists, &cancel, &tx, start);
            warnings.append(&mut record.warnings);
            record.warnings = warnings;
            r
        });
        self.settle(&mut record, result);
        Self::post_hooks_stage(&mut record, &hooks, &facts, &tx, start);
        self.record_stage(record, &spec, &tx, start);
    }

    /// Pre-backup hooks: their warnings are kept; a hook that stops the
    /// backup fails it before anything is written.
    fn pre_hooks_stage(
        &self,
        record: &mut BackupRecord,
        hooks: &BackupHooks,
        facts: &BackupFacts,
        cancel: &AtomicBool,
        tx: &watch::Sender<JobUpdate>,
    ) -> Result<(), CoreError> {
        if hooks.is_empty() {
            return Ok(());
        }
        tx.send_modify(|u| u.progress.phase = Phase::PreBackupHooks);
        let pre = Instant::now();
        let verdict = hooks.run_pre(facts, cancel);
        crate::metrics::stage("pre-hooks", pre.elapsed(), verdict.is_ok());
        match verdict {
            Ok(warnings) => {
                record.warnings.extend(warnings);
                Ok(())
            }
            Err(_) if cancel.load(Ordering::Relaxed) => Err(CoreError::Cancelled),
            Err(stopped) => Err(CoreError::FailedPrecondition(format!(
                "{}; nothing was written",
                stopped.0
            ))),
        }
    }

    /// The outcome of the stages so far becomes the record's status and error.
    fn settle(&self, record: &mut BackupRecord, result: Result<(), CoreError>) {
        record.finished_at = Some(now_ms());
        record.phase = Phase::Done;
        match result {
            Ok(()) => record.status = Status::Succeeded,
            Err(CoreError::Cancelled) => {
                record.status = Status::Cancelled;
                record.error = if self.state().accepting_closed {
                    "cancelled because the server stopped; the archive is unchanged".into()
                } else {
                    "cancelled; the archive is unchanged".into()
                };
            }
            Err(e) => {
                record.status = Status::Failed;
                record.failure = Some(e.kind());
                record.error = e.to_string();
            }
        }
    }

    /// Post-backup hooks, told how the backup ended; what they say becomes
    /// warnings (they cannot change the outcome).
    fn post_hooks_stage(
        record: &mut BackupRecord,
        hooks: &BackupHooks,
        facts: &BackupFacts,
        tx: &watch::Sender<JobUpdate>,
        start: Instant,
    ) {
        if hooks.is_empty() {
            return;
        }
        tx.send_modify(|u| u.progress.phase = Phase::PostBackupHooks);
        let outcome = BackupOutcome {
            status: record.status.as_str().into(),
            error: (!record.error.is_empty()).then(|| record.error.clone()),
            image_index: record.image_index,
            files: record.files,
            bytes_read: record.bytes_read,
            bytes_written: record.bytes_stored,
            duration: start.elapsed(),
        };
        let post = Instant::now();
        let warnings = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hooks.run_post(facts, &outcome)))
            .unwrap_or_else(|_| vec!["post-backup hooks crashed (please report)".into()]);
        crate::metrics::stage("post-hooks", post.elapsed(), warnings.is_empty());
        record.warnings.extend(warnings);
    }

    /// Records the finished backup in the catalog and the metrics, frees
    /// its archive, and sends the last update.
    fn record_stage(&self, mut record: BackupRecord, spec: &BackupSpec, tx: &watch::Sender<JobUpdate>, start: Instant) {
        if let Err(e) = self.catalog.update_backup(&record) {
            tracing::error!(uuid = %record.uuid, "cannot record the end of a backup: {e}");
            // Not a snapshot anyone can restore through us until it is
            // recorded: the client must not hear "succeeded".
            if record.status == Status::Succeeded {
                let rebuild = match RemoteArchive::from_id(&record.destination) {
                    Some(r) => format!("--plugin {}", r.plugin),
                    None => format!("--archive {}", record.destination),
                };
                record.status = Status::Failed;
                record.error = format!(
                    "image {} was written to {}, but the catalog could not record it ({e}); once the catalog \
                     can be written again (disk space?), `wimguard catalog rebuild {rebuild}` adds it (the server \
                     also does at its next start)",
                    record.image_index, record.destination
                );
            }
        }
        tracing::info!(uuid = %record.uuid, status = %record.status, error = %record.error, "backup finished");
        crate::metrics::job_finished("backup", record.status.as_str(), start.elapsed());
        let uploaded = tx.borrow().progress.bytes_uploaded;
        crate::metrics::backup_bytes(record.bytes_read, record.bytes_stored, uploaded);
        {
            let mut st = self.state();
            st.running.remove(&record.uuid);
            st.busy_archives.remove(&spec.destination);
        }
        let progress = LiveProgress {
            phase: Phase::Done,
            ..tx.borrow().progress.clone()
        };
        let _ = tx.send(JobUpdate { record, progress });
    }

    #[allow(clippy::too_many_arguments)]
    fn capture_into(
        &self,
        record: &mut BackupRecord,
        spec: &BackupSpec,
        codec: CodecChoice,
        exists: bool,
        cancel: &Arc<AtomicBool>,
        tx: &watch::Sender<JobUpdate>,
        start: Instant,
    ) -> Result<(), CoreError> {
        if let Some(remote) = &spec.remote {
            return self.capture_remote(record, spec, remote, codec, cancel, tx, start);
        }
        // Dropped last (declared first): the reservation covers the archive's
        // table; the previous tree carries its own share of it, as long as it
        // lives (a capture's walk stuck in a hung mount keeps it longer).
        let (_metadata_memory, mut writer, previous) = self.open_local_writer(spec, codec, exists, cancel)?;
        // The default name was chosen when the backup was asked for; another
        // backup to this archive may have taken it since (names are per
        // second), so choose again now that the archive is ours.
        let opts = capture_options(record, spec, cancel, tx, &|n| writer.xml().name_in_use(n));
        let report = crate::metrics::timed("capture", || {
            capture::capture(
                &spec.source,
                &mut writer,
                previous,
                &opts,
                &mut progress_reporter(tx, start),
            )
        })
        .map_err(|e| naming_full_disk(e, &spec.destination))?;
        if cancel.load(Ordering::Relaxed) {
            return Err(CoreError::Cancelled);
        }
        crate::metrics::timed("publish", || writer.commit()).map_err(|e| naming_full_disk(e, &spec.destination))?;
        record_capture(record, &report, report.image_index);
        Ok(())
    }

    /// Opens the archive at `path` for an append (parsed once) and reserves
    /// the memory for loading the images `images(writer)` names in turn.
    /// When the budget has no room yet, it waits without holding the
    /// archive: the writer is dropped first (it wrote nothing, so its lock
    /// and in-progress mark simply go), and opened again after.
    pub fn append_with_memory(
        &self,
        path: &Path,
        images: impl Fn(&WimWriter) -> Vec<u32>,
        cancel: Option<&AtomicBool>,
    ) -> Result<(Reservation, WimWriter), CoreError> {
        let writer = WimWriter::append(path, &*self.plugins)?;
        let (need, what) = MemoryBudget::writer_images_cost(&writer, images(&writer));
        if let Some(r) = self.memory.try_reserve(need) {
            return Ok((r, writer));
        }
        drop(writer);
        let r = self.memory.reserve(need, &what, cancel)?;
        let writer = WimWriter::append(path, &*self.plugins)?;
        let (now, _) = MemoryBudget::writer_images_cost(&writer, images(&writer));
        if now <= need {
            return Ok((r, writer));
        }
        // The archive grew meanwhile (rare): reserve for what it is now.
        drop(r);
        let r = self.memory.reserve(now, &what, cancel)?;
        Ok((r, writer))
    }

    /// The write stage of a local archive: a writer appending to it (parsed
    /// once; the previous image, whose hashes unchanged files reuse, is
    /// read through it within the memory budget) or creating it, set to
    /// compress with the chosen codec and to stop when cancelled.
    fn open_local_writer(
        &self,
        spec: &BackupSpec,
        codec: CodecChoice,
        exists: bool,
        cancel: &Arc<AtomicBool>,
    ) -> Result<(Option<Reservation>, WimWriter, Option<capture::PreviousImage>), CoreError> {
        let mut metadata_memory = None;
        let (mut writer, previous) = if exists {
            // Opened and parsed once: the previous image is read through the writer.
            let (mut reservation, writer) = self.append_with_memory(
                &spec.destination,
                |w| capture::reuse_candidates(w).collect(),
                Some(cancel),
            )?;
            let source = spec.source.display().to_string();
            let prev = capture::previous_wimguard_image(&writer, &source)?.map(|tree| {
                // The tree's share goes with it: what the reservation holds
                // beyond the writer's table.
                let table = MemoryBudget::writer_images_cost(&writer, []).0;
                let share = reservation.bytes().saturating_sub(table);
                capture::PreviousImage::holding(tree, reservation.split_off(share))
            });
            metadata_memory = Some(reservation);
            (writer, prev)
        } else {
            let chunk = crate::wim::writer::DEFAULT_CHUNK_SIZE;
            let w = match &codec {
                CodecChoice::Standard { compression, .. } => WimWriter::create(&spec.destination, *compression, chunk)?,
                CodecChoice::Plugin(c) => {
                    let chunk = plugin_chunk_size(&**c);
                    WimWriter::create_with_plugin(&spec.destination, c.clone(), chunk)?
                }
            };
            (w, None)
        };
        if let CodecChoice::Standard {
            implementation: Some(c),
            ..
        } = codec
        {
            writer.compress_with(c)?;
        }
        // A codec plugin busy in a call stops as soon as the backup is cancelled.
        writer.watch_cancel(cancel.clone());
        Ok((metadata_memory, writer, previous))
    }

    /// The destination stage: the capture streams a new object of the
    /// remote chain to the plugin; the catalog records it once complete.
    #[allow(clippy::too_many_arguments)]
    fn capture_remote(
        &self,
        record: &mut BackupRecord,
        spec: &BackupSpec,
        remote: &RemoteArchive,
        codec: CodecChoice,
        cancel: &Arc<AtomicBool>,
        tx: &watch::Sender<JobUpdate>,
        start: Instant,
    ) -> Result<(), CoreError> {
        let store = self.object_store_cancellable(&remote.plugin, cancel)?;
        let chain = crate::remote::backup::chain_codec(&self.catalog, remote)?;
        let (compression, plugin_codec, implementation) = match codec {
            CodecChoice::Standard {
                compression,
                implementation,
            } => (compression, None, implementation),
            CodecChoice::Plugin(c) => (Compression::Plugin, Some(c), None),
        };
        let chunk_size = match (&chain, &plugin_codec) {
            (Some((_, chunk)), _) => *chunk,
            (None, Some(c)) => plugin_chunk_size(&**c),
            (None, None) => crate::wim::writer::DEFAULT_CHUNK_SIZE,
        };
        let codec_impl = plugin_codec.or(implementation);
        let taken: HashSet<String> = self
            .catalog
            .backups_in_archive(&record.destination)?
            .into_iter()
            .filter(|b| b.uuid != record.uuid)
            .map(|b| b.name)
            .collect();
        let opts = capture_options(record, spec, cancel, tx, &|n| taken.contains(n));
        let target = crate::remote::backup::Target {
            catalog: &self.catalog,
            memory: &self.memory,
            store: store.clone(),
            archive: remote.clone(),
        };
        let uploading = tx.clone();
        let report = crate::remote::backup::capture(
            &target,
            record,
            &spec.source,
            compression,
            codec_impl,
            chunk_size,
            &opts,
            cancel,
            &mut progress_reporter(tx, start),
            Box::new(move |sent| uploading.send_modify(|u| u.progress.bytes_uploaded = sent)),
            &|| {
                tx.send_modify(|u| {
                    u.record.phase = Phase::Uploading;
                    u.progress.phase = Phase::Uploading;
                })
            },
        )?;
        drop(report);
        Ok(())
    }

    /// Attaches to a job: live updates while it runs, or its final record.
    pub fn watch(&self, uuid: &str) -> Result<watch::Receiver<JobUpdate>, CoreError> {
        if let Some(j) = self.state().running.get(uuid) {
            return Ok(j.updates.clone());
        }
        let rec = self
            .catalog
            .get_backup(uuid)?
            .ok_or_else(|| CoreError::NotFound(format!("no backup {uuid}")))?;
        let (_tx, rx) = watch::channel(JobUpdate {
            progress: LiveProgress {
                phase: rec.phase,
                ..LiveProgress::default()
            },
            record: rec,
        });
        Ok(rx)
    }

    /// Asks a running backup to stop. Returns the current record.
    pub fn cancel(&self, uuid: &str) -> Result<BackupRecord, CoreError> {
        if let Some(j) = self.state().running.get(uuid) {
            j.cancel.store(true, Ordering::Relaxed);
            return Ok(j.updates.borrow().record.clone());
        }
        let rec = self
            .catalog
            .get_backup(uuid)?
            .ok_or_else(|| CoreError::NotFound(format!("no backup {uuid}")))?;
        Err(CoreError::Conflict(format!(
            "backup {uuid} is not running (status {})",
            rec.status
        )))
    }

    /// How many backups run right now.
    pub fn running_count(&self) -> usize {
        self.state().running.len()
    }

    pub fn is_running(&self, uuid: &str) -> bool {
        self.state().running.contains_key(uuid)
    }

    /// Marks an archive busy for a non-backup operation (delete); None if busy.
    pub fn lock_archive(&self, path: &Path, owner: &str) -> Result<(), CoreError> {
        let mut st = self.state();
        if let Some(other) = st.busy_archives.get(path) {
            return Err(CoreError::Conflict(format!(
                "{} is busy (job {other}); try again when it is done",
                path.display()
            )));
        }
        st.busy_archives.insert(path.to_path_buf(), owner.to_string());
        Ok(())
    }

    pub fn unlock_archive(&self, path: &Path) {
        self.state().busy_archives.remove(path);
    }

    /// Counts a reader (restore, verify) of remote archive `key` until the
    /// guard drops; refused while a consolidation, or a retention that may
    /// consolidate, holds the archive: the objects read would vanish.
    pub fn begin_reading(&self, key: &Path) -> Result<Reading<'_>, CoreError> {
        let mut st = self.state();
        if let Some(owner) = st
            .busy_archives
            .get(key)
            .filter(|o| CONSOLIDATING.contains(&o.as_str()))
        {
            return Err(CoreError::Conflict(format!(
                "{} is being rewritten ({owner}); try again when it is done",
                key.display()
            )));
        }
        *st.readers.entry(key.to_path_buf()).or_default() += 1;
        Ok(Reading {
            jobs: self,
            key: key.to_path_buf(),
        })
    }

    /// How many restores and verifies read remote archive `key` now.
    pub fn readers(&self, key: &Path) -> usize {
        self.state().readers.get(key).copied().unwrap_or(0)
    }

    /// Takes no new jobs from now on, telling who asks `why` (running
    /// ones go on).
    pub fn refuse_new_jobs(&self, why: &str) {
        let mut st = self.state();
        st.accepting_closed = true;
        st.closed_because = Some(why.to_string());
    }

    /// Stops taking jobs, lets running ones finish for `grace`, cancels the
    /// rest and waits for them to wind down.
    pub fn shutdown(&self, grace: Duration) {
        self.state().accepting_closed = true;
        // A grace too long for the clock to add (a config's "forever") waits.
        let deadline = Instant::now().checked_add(grace);
        while !self.state().running.is_empty() && deadline.is_none_or(|d| Instant::now() < d) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let left: Vec<String> = self.state().running.keys().cloned().collect();
        for uuid in &left {
            tracing::warn!(%uuid, "cancelling backup: the server is stopping");
            if let Some(j) = self.state().running.get(uuid) {
                j.cancel.store(true, Ordering::Relaxed);
            }
        }
        let hard = Instant::now() + Duration::from_secs(60);
        while !self.state().running.is_empty() && Instant::now() < hard {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A job runner over a fresh catalog in `home`, with no plugins
    /// registered (tests put stand-in object stores in `test_stores`).
    pub fn jobs_for_tests(home: &Path) -> Arc<Jobs> {
        let catalog = Arc::new(Catalog::open(&home.join(crate::config::DATABASE_FILE)).unwrap());
        let plugins = Arc::new(PluginRegistry::open(home, catalog.clone(), Vec::new(), &Default::default()).unwrap());
        let settings = JobSettings {
            default_compression: CodecName::Lzx,
            default_remote_compression: CodecName::Xpress,
            metadata_memory_mib: 256,
            ..JobSettings::default()
        };
        Arc::new(Jobs::new(catalog, settings, plugins))
    }

    /// `dir/src` with `files` small files, captured as the one image of
    /// `dir/a.wim` (XPRESS).
    fn one_image_archive(dir: &Path, files: usize) -> (PathBuf, PathBuf) {
        let src = dir.join("src");
        std::fs::create_dir(&src).unwrap();
        for i in 0..files {
            std::fs::write(src.join(format!("file-{i}")), format!("contents {i}")).unwrap();
        }
        let wim = dir.join("a.wim");
        let mut w = WimWriter::create(&wim, Compression::Xpress, crate::wim::writer::DEFAULT_CHUNK_SIZE).unwrap();
        let opts = CaptureOptions {
            name: "one".into(),
            ..Default::default()
        };
        capture::capture(&src, &mut w, None, &opts, &mut |_| {}).unwrap();
        w.commit().unwrap();
        (src, wim)
    }

    /// While a backup waits for metadata memory it does not hold the
    /// archive: others can read and lock it, and no in-progress mark is left.
    #[test]
    fn an_append_waiting_for_memory_does_not_hold_the_archive() {
        let home = tempfile::tempdir().unwrap();
        let jobs = jobs_for_tests(home.path());
        let (_, wim) = one_image_archive(home.path(), 1);
        let before = std::fs::read(&wim).unwrap();

        let budget = jobs.memory().clone();
        let full = budget.try_reserve(budget.limit()).unwrap();
        let waiter = {
            let (jobs, wim) = (jobs.clone(), wim.clone());
            std::thread::spawn(move || {
                jobs.append_with_memory(&wim, |w| capture::reuse_candidates(w).collect(), None)
                    .map(|(r, w)| (r.bytes(), w.base_image_count()))
            })
        };
        crate::budget::wait_for_waiters(&budget, 1);
        // Lockable by another writer, and byte for byte as it was.
        drop(WimWriter::append(&wim, &*jobs.plugins).expect("the waiting backup holds the archive"));
        assert_eq!(std::fs::read(&wim).unwrap(), before);
        drop(full);
        let (bytes, images) = waiter.join().unwrap().unwrap();
        assert!(bytes > 0);
        assert_eq!(images, 1);
    }

    /// A full disk says which disk: the archive's.
    #[test]
    fn a_full_disk_is_named_by_the_archive_it_stopped() {
        let full = crate::wim::WimError::Io(std::io::Error::from_raw_os_error(libc::ENOSPC));
        let e = naming_full_disk(full, Path::new("/backups/a.wim")).to_string();
        assert!(
            e.starts_with("writing /backups/a.wim: ") && e.contains("os error 28"),
            "{e}"
        );
        let other = crate::wim::WimError::Io(std::io::Error::from_raw_os_error(libc::EACCES));
        assert!(!naming_full_disk(other, Path::new("/backups/a.wim"))
            .to_string()
            .contains("a.wim"));
    }

    /// A shutdown grace no clock can add (`shutdownGraceSeconds` at its
    /// largest) is waited out, not a panic.
    #[test]
    fn an_endless_shutdown_grace_does_not_overflow() {
        let home = tempfile::tempdir().unwrap();
        let jobs = jobs_for_tests(home.path());
        jobs.shutdown(Duration::from_secs(u64::MAX));
    }

    /// The previous tree carries its own share of the append's memory
    /// reservation: a capture's walk stuck in a hung mount keeps the tree
    /// after the backup gave up, and the budget must count it until then.
    #[test]
    fn the_previous_tree_holds_its_share_of_the_reservation() {
        let home = tempfile::tempdir().unwrap();
        let jobs = jobs_for_tests(home.path());
        let (src, wim) = one_image_archive(home.path(), 200);

        let spec = BackupSpec {
            source: src.clone(),
            destination: wim.clone(),
            compression: None,
            name: None,
            description: String::new(),
            excludes: Vec::new(),
            plugins: Vec::new(),
            destination_as_given: wim.display().to_string(),
            remote: None,
            schedule_id: String::new(),
        };
        let codec = CodecChoice::Standard {
            compression: Compression::Xpress,
            implementation: None,
        };
        let cancel = Arc::new(AtomicBool::new(false));
        let (table_memory, writer, previous) = jobs.open_local_writer(&spec, codec, true, &cancel).unwrap();
        let table_memory = table_memory.expect("an append reserves memory");
        let previous = previous.expect("the first image is a WimGuard image");
        assert_eq!(previous.tree().inodes.len(), 201);
        let budget = jobs.memory();
        let table = MemoryBudget::writer_images_cost(&writer, []).0;
        assert_eq!(
            table_memory.bytes(),
            table,
            "the writer side keeps only the table's share"
        );
        let total = budget.in_use();
        assert!(
            total > table,
            "the tree's share is still reserved ({total} in use, table {table})"
        );
        drop(table_memory);
        drop(writer);
        assert_eq!(budget.in_use(), total - table, "the tree's share outlives the writer's");
        drop(previous);
        assert_eq!(budget.in_use(), 0, "dropping the tree gives its share back");
    }
}
