//! What client commands print: JSON shapes (`--json`), human tables and
//! sizes, and the progress display of long jobs.
//!
//! JSON conventions: snake_case field names, enums as lowercase words
//! (`succeeded`, `lzx`, `file`), timestamps as RFC 3339 strings (null when
//! unset), empty optional strings (errors, link targets) as null. Each command
//! prints one compact JSON document on one line.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost_types::Timestamp;
use serde_json::{json, Value};

use crate::api::v1 as pb;

/// Prints one JSON document on one line.
pub fn print_json(value: &Value) {
    outln!("{value}");
}

// ---- enum words ----

fn word(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_ascii_lowercase()
}

/// `JOB_STATUS_SUCCEEDED` → `succeeded`.
pub fn status_word(s: pb::JobStatus) -> String {
    word(s.as_str_name(), "JOB_STATUS_")
}

pub fn phase_word(p: pb::Phase) -> String {
    word(p.as_str_name(), "PHASE_")
}

pub fn compression_word(c: pb::Compression) -> String {
    word(c.as_str_name(), "COMPRESSION_")
}

pub fn kind_word(k: pb::EntryKind) -> String {
    word(k.as_str_name(), "ENTRY_KIND_")
}

pub fn change_word(k: pb::ChangeKind) -> String {
    word(k.as_str_name(), "CHANGE_KIND_")
}

// ---- scalar helpers ----

/// RFC 3339, or null when unset.
pub fn time_json(t: &Option<Timestamp>) -> Value {
    t.map(|t| Value::String(t.to_string())).unwrap_or(Value::Null)
}

/// Null for an empty string.
fn opt_str(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_string())
    }
}

/// `2024-01-02 03:04:05Z` (seconds precision) for tables; `-` when unset.
pub fn time_human(t: &Option<Timestamp>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let s = t.to_string();
            let s = s.trim_end_matches('Z');
            let s = s.split('.').next().unwrap_or(s);
            format!("{}Z", s.replacen('T', " ", 1))
        }
    }
}

/// 1536 → `1.5 KiB`.
pub fn bytes_human(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// What a deletion did to the archive, for the line that reports it:
/// `(2.0 MiB → 1.1 MiB)` for a rebuilt archive; for a remote one, that its
/// space comes back at consolidation (with the command, when `destination`
/// names the archive).
pub fn deletion_words(outcome: pb::DeleteOutcome, before: u64, after: u64, destination: Option<&str>) -> String {
    match outcome {
        pb::DeleteOutcome::MarkedRemoved => {
            let how = match destination.and_then(crate::remote::RemoteArchive::from_id) {
                Some(r) => format!("`wimguard archive consolidate {} --plugin {}`", r.name, r.plugin),
                None => "`wimguard archive consolidate`".into(),
            };
            format!("(marked removed in the remote archive; its space is freed when {how} rewrites the archive)")
        }
        pb::DeleteOutcome::RecordOnly => "(only its catalog record: it has no image in an archive)".into(),
        // An older server says nothing but the sizes.
        pb::DeleteOutcome::Rebuilt | pb::DeleteOutcome::Unspecified => {
            format!("({} → {})", bytes_human(before), bytes_human(after))
        }
    }
}

/// The outcome of a deletion in JSON output: `rebuilt`, `marked_removed`,
/// `record_only` (`unspecified` from an older server).
pub fn outcome_word(o: pb::DeleteOutcome) -> &'static str {
    match o {
        pb::DeleteOutcome::Rebuilt => "rebuilt",
        pb::DeleteOutcome::MarkedRemoved => "marked_removed",
        pb::DeleteOutcome::RecordOnly => "record_only",
        pb::DeleteOutcome::Unspecified => "unspecified",
    }
}

/// Writes command output to stdout (behind [`outln!`] and [`out!`]). When
/// the reader is gone the command has nothing left to do: it exits 0 at
/// once. Another write error (a full disk behind a redirect) ends it with
/// a message and exit code 1.
pub fn write_stdout(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("wimguard: error: cannot write the output: {e}");
        std::process::exit(super::EXIT_FAILURE);
    }
}

/// Seconds between two timestamps, when both are set.
pub fn duration_between(start: &Option<Timestamp>, end: &Option<Timestamp>) -> Option<Duration> {
    let (s, e) = (start.as_ref()?, end.as_ref()?);
    let nanos = (e.seconds - s.seconds) as i128 * 1_000_000_000 + (e.nanos - s.nanos) as i128;
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// `rwxr-xr-x` with the file type letter in front, as `ls -l` shows it:
/// `d`, `l`, `-`, and for special files `p` (FIFO), `c`, `b` (devices) or
/// `s` (socket) from the mode's type bits; set-id and sticky bits as `s`,
/// `S`, `t`, `T`.
pub fn mode_human(kind: pb::EntryKind, mode: u32) -> String {
    let t = match kind {
        pb::EntryKind::Directory => 'd',
        pb::EntryKind::Symlink => 'l',
        pb::EntryKind::Special => match mode & libc::S_IFMT {
            libc::S_IFIFO => 'p',
            libc::S_IFCHR => 'c',
            libc::S_IFBLK => 'b',
            libc::S_IFSOCK => 's',
            _ => '?',
        },
        _ => '-',
    };
    let mut s = String::from(t);
    // (shift of the rwx triple, its special bit, letter when also x, letter when not)
    for (shift, special, on, off) in [
        (6, libc::S_ISUID, 's', 'S'),
        (3, libc::S_ISGID, 's', 'S'),
        (0, libc::S_ISVTX, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (mode & special != 0, bits & 1 != 0) {
            (true, true) => on,
            (true, false) => off,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// A path as one line of output: control characters (a newline in a file
/// name) shown as escapes, so a listing keeps one entry per line.
pub fn printable(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.chars().any(char::is_control) {
        return path.into();
    }
    path.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

// ---- JSON shapes ----

pub fn backup_json(b: &pb::Backup) -> Value {
    json!({
        "uuid": b.uuid,
        "schedule_id": b.schedule_id,
        "status": status_word(b.status()),
        "phase": phase_word(b.phase()),
        "source": b.source,
        "destination": b.destination,
        "compression": if b.codec.is_empty() { compression_word(b.compression()) } else { b.codec.clone() },
        "name": b.name,
        "description": b.description,
        "excludes": b.excludes,
        "plugins": b.plugins,
        "image_index": b.image_index,
        "files": b.files,
        "directories": b.directories,
        "bytes_total": b.bytes_total,
        "bytes_read": b.bytes_read,
        "bytes_stored": b.bytes_stored,
        "files_unchanged": b.files_unchanged,
        "created_at": time_json(&b.created_at),
        "started_at": time_json(&b.started_at),
        "finished_at": time_json(&b.finished_at),
        "error": opt_str(&b.error),
        "warnings": b.warnings,
    })
}

pub fn snapshot_json(s: &pb::Snapshot) -> Value {
    json!({
        "backup_uuid": s.backup_uuid,
        "archive": s.archive,
        "image_index": s.image_index,
        "name": s.name,
        "description": s.description,
        "source": s.source,
        "created_at": time_json(&s.created_at),
        "files": s.files,
        "directories": s.directories,
        "bytes_total": s.bytes_total,
    })
}

pub fn entry_json(e: &pb::Entry) -> Value {
    json!({
        "path": e.path,
        "kind": kind_word(e.kind()),
        "size": e.size,
        "mode": e.mode,
        "uid": e.uid,
        "gid": e.gid,
        "modified_at": time_json(&e.modified_at),
        "symlink_target": opt_str(&e.symlink_target),
        "sha1": opt_str(&e.sha1),
    })
}

pub fn diff_json(d: &pb::DiffSnapshotsResponse) -> Value {
    let changes: Vec<Value> = d
        .changes
        .iter()
        .map(|c| {
            json!({
                "kind": change_word(c.kind()),
                "path": c.path,
                "before": c.before.as_ref().map(entry_json),
                "after": c.after.as_ref().map(entry_json),
            })
        })
        .collect();
    json!({ "added": d.added, "removed": d.removed, "modified": d.modified, "changes": changes })
}

pub fn restore_result_json(r: &pb::RestoreResult) -> Value {
    json!({
        "status": status_word(r.status()),
        "files": r.files,
        "directories": r.directories,
        "symlinks": r.symlinks,
        "bytes": r.bytes,
        "planned": r.planned,
        "skipped": r.skipped,
        "unsafe_skipped": r.unsafe_skipped,
        "warnings": r.warnings,
        "error": opt_str(&r.error),
    })
}

pub fn verify_result_json(uuid: &str, r: &pb::VerifyResult) -> Value {
    json!({
        "backup_uuid": uuid,
        "ok": r.ok,
        "blobs_checked": r.blobs_checked,
        "bytes_checked": r.bytes_checked,
        "error": opt_str(&r.error),
    })
}

pub fn environment_json(e: &pb::Environment) -> Value {
    let codecs: Vec<Value> = e
        .codecs
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "can_compress": c.can_compress,
                "can_decompress": c.can_decompress,
                "provider": c.provider,
            })
        })
        .collect();
    json!({
        "version": e.version,
        "build": e.build,
        "os": e.os,
        "arch": e.arch,
        "home": e.home,
        "config_path": e.config_path,
        "database_path": e.database_path,
        "listen_address": e.listen_address,
        "pid": e.pid,
        "started_at": time_json(&e.started_at),
        "worker_threads": e.worker_threads,
        "codecs": codecs,
        "plugin_api_versions": e.plugin_api_versions,
    })
}

pub fn statistics_json(s: &pb::Statistics) -> Value {
    let by_status: serde_json::Map<String, Value> = s
        .backups_by_status
        .iter()
        .map(|c| (status_word(c.status()), Value::from(c.count)))
        .collect();
    let sources: Vec<Value> = s
        .sources
        .iter()
        .map(|src| {
            json!({
                "source": src.source,
                "backups": src.backups,
                "last_success_at": time_json(&src.last_success_at),
                "last_success_uuid": opt_str(&src.last_success_uuid),
            })
        })
        .collect();
    json!({
        "backups_by_status": by_status,
        "bytes_total": s.bytes_total,
        "bytes_read": s.bytes_read,
        "bytes_stored": s.bytes_stored,
        "dedupe_ratio": s.dedupe_ratio,
        "compression_ratio": s.compression_ratio,
        "throughput_bytes_per_second": s.throughput_bytes_per_second,
        "archives": s.archives,
        "archive_bytes": s.archive_bytes,
        "sources": sources,
        "archive_details": s.archive_details.iter().map(|a| json!({
            "archive": a.archive, "bytes": a.bytes, "reclaimable_bytes": a.reclaimable_bytes,
            "snapshots": a.snapshots,
        })).collect::<Vec<_>>(),
    })
}

// ---- tables ----

/// A plain text table: columns padded to their widest cell, two spaces apart.
pub struct Table {
    headers: Vec<&'static str>,
    right_aligned: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Headers ending in `>` are right-aligned (numbers); the `>` is not shown.
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.iter().map(|h| h.trim_end_matches('>')).collect(),
            right_aligned: headers.iter().map(|h| h.ends_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len());
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let n = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = widths[i] - c.chars().count();
                let last = i + 1 == n;
                if i > 0 {
                    s.push_str("  ");
                }
                if self.right_aligned[i] {
                    s.push_str(&" ".repeat(pad));
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if !last {
                        s.push_str(&" ".repeat(pad));
                    }
                }
            }
            s.push('\n');
            s
        };
        let mut out = line(self.headers.clone());
        for r in &self.rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
        }
        out
    }

    pub fn print(&self) {
        out!("{}", self.render());
    }
}

// ---- progress ----

/// Shows a job's progress on stderr: an indicatif bar (phase, bytes, files,
/// rate, ETA) when stderr is a terminal; otherwise one line per phase change,
/// unless `quiet` (then nothing).
pub struct JobProgress {
    what: String,
    bar: Option<ProgressBar>,
    quiet: bool,
    phase: pb::Phase,
    known_total: bool,
    files: String,
}

const BAR_TEMPLATE: &str = "{msg:>10} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {prefix}";
const SPINNER_TEMPLATE: &str = "{spinner} {msg:>10} {binary_bytes} {prefix} [{elapsed}]";

impl JobProgress {
    pub fn new(what: impl Into<String>, quiet: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(ProgressStyle::with_template(SPINNER_TEMPLATE).expect("valid template"));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        JobProgress {
            what: what.into(),
            bar,
            quiet,
            phase: pb::Phase::Unspecified,
            known_total: false,
            files: String::new(),
        }
    }

    /// Notes a phase reported outside a progress event (e.g. in a Backup).
    pub fn phase(&mut self, phase: pb::Phase) {
        if phase == self.phase || phase == pb::Phase::Unspecified {
            return;
        }
        self.phase = phase;
        match &self.bar {
            Some(bar) => bar.set_message(phase_word(phase)),
            None if !self.quiet && phase != pb::Phase::Done => eprintln!("{}: {}", self.what, phase_word(phase)),
            None => {}
        }
    }

    pub fn update(&mut self, p: &pb::Progress) {
        self.phase(p.phase());
        let Some(bar) = &self.bar else { return };
        let has_total = p.bytes_total > 0;
        if has_total != self.known_total {
            self.known_total = has_total;
            let template = if has_total { BAR_TEMPLATE } else { SPINNER_TEMPLATE };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("valid template")
                    .progress_chars("=> "),
            );
        }
        if has_total {
            bar.set_length(p.bytes_total);
        } else {
            bar.unset_length();
        }
        bar.set_position(p.bytes_done);
        // Later phases (finalizing) may not count files: keep the last count.
        if p.files_total > 0 {
            self.files = format!("{}/{} files", p.files_done, p.files_total);
        } else if p.files_done > 0 {
            self.files = format!("{} files", p.files_done);
        }
        // The server measures the rate over the whole job; indicatif's own
        // estimate jumps with the server's coarse (per-file) updates.
        let rate = if p.bytes_per_second > 0.0 {
            p.bytes_per_second
        } else {
            bar.per_sec()
        };
        let mut info = self.files.clone();
        if p.bytes_uploaded > 0 {
            info.push_str(&format!(", {} uploaded", bytes_human(p.bytes_uploaded)));
        }
        if rate > 0.0 && p.bytes_done > 0 {
            info.push_str(&format!(", {}/s", bytes_human(rate as u64)));
            if has_total && p.bytes_done < p.bytes_total {
                let eta = ((p.bytes_total - p.bytes_done) as f64 / rate).ceil() as u64;
                info.push_str(&format!(", ETA {}", eta_human(eta)));
            }
        }
        bar.set_prefix(info.trim_start_matches(", ").to_string());
    }

    /// Prints a line on stderr without garbling the bar.
    pub fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for JobProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Follows a job's event stream to its end: progress goes to `bar`, the
/// last result is returned (None when the server sent none). Ctrl-C ends
/// the wait with `interrupted()`.
pub async fn follow_to_result<E, R>(
    mut stream: crate::client::EventStream<E>,
    interrupts: &mut tokio::signal::unix::Signal,
    bar: &mut JobProgress,
    split: impl Fn(E) -> (Option<pb::Progress>, Option<R>),
    interrupted: impl Fn() -> super::CliError,
) -> Result<Option<R>, super::CliError> {
    let mut result = None;
    loop {
        tokio::select! {
            event = stream.next() => match event? {
                Some(e) => {
                    let (progress, r) = split(e);
                    if let Some(p) = &progress {
                        bar.update(p);
                    }
                    if r.is_some() {
                        result = r;
                    }
                }
                None => break,
            },
            _ = interrupts.recv() => return Err(interrupted()),
        }
    }
    bar.finish();
    Ok(result)
}

/// 75 → `1m15s`.
pub fn eta_human(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    #[test]
    fn backup_json_has_snake_case_fields_lowercase_status_and_rfc3339_times() {
        let b = pb::Backup {
            uuid: "u-1".into(),
            status: pb::JobStatus::Succeeded as i32,
            phase: pb::Phase::Done as i32,
            source: "/src".into(),
            destination: "/b.wim".into(),
            compression: pb::Compression::Lzx as i32,
            image_index: 2,
            bytes_read: 10,
            created_at: ts(1_700_000_000, 0),
            ..Default::default()
        };
        let v = backup_json(&b);
        assert_eq!(v["uuid"], "u-1");
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["phase"], "done");
        assert_eq!(v["compression"], "lzx");
        assert_eq!(v["source"], "/src");
        assert_eq!(v["destination"], "/b.wim");
        assert_eq!(v["image_index"], 2);
        assert_eq!(v["bytes_read"], 10);
        assert_eq!(v["created_at"], "2023-11-14T22:13:20Z");
        assert_eq!(v["finished_at"], Value::Null);
        assert_eq!(v["error"], Value::Null);
        for key in v.as_object().unwrap().keys() {
            assert!(
                key.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{key} is not snake_case"
            );
        }
    }

    #[test]
    fn every_status_is_a_lowercase_word() {
        let words: Vec<String> = [
            pb::JobStatus::Queued,
            pb::JobStatus::Running,
            pb::JobStatus::Succeeded,
            pb::JobStatus::Failed,
            pb::JobStatus::Cancelled,
            pb::JobStatus::Interrupted,
        ]
        .into_iter()
        .map(status_word)
        .collect();
        assert_eq!(
            words,
            ["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
        );
    }

    #[test]
    fn statistics_json_keys_statuses_by_word() {
        let s = pb::Statistics {
            backups_by_status: vec![pb::StatusCount {
                status: pb::JobStatus::Failed as i32,
                count: 3,
            }],
            ..Default::default()
        };
        assert_eq!(statistics_json(&s)["backups_by_status"]["failed"], 3);
    }

    #[test]
    fn human_formats() {
        assert_eq!(bytes_human(0), "0 B");
        assert_eq!(bytes_human(1536), "1.5 KiB");
        assert_eq!(bytes_human(5 << 30), "5.0 GiB");
        assert_eq!(eta_human(75), "1m15s");
        assert_eq!(eta_human(7300), "2h01m");
        assert_eq!(time_human(&ts(1_700_000_000, 5)), "2023-11-14 22:13:20Z");
        assert_eq!(time_human(&None), "-");
        assert_eq!(mode_human(pb::EntryKind::Directory, 0o755), "drwxr-xr-x");
        assert_eq!(mode_human(pb::EntryKind::File, 0o104755), "-rwsr-xr-x");
        assert_eq!(mode_human(pb::EntryKind::Directory, 0o41777), "drwxrwxrwt");
        assert_eq!(mode_human(pb::EntryKind::File, 0o2640), "-rw-r-S---");
        assert_eq!(mode_human(pb::EntryKind::Special, 0o10644), "prw-r--r--");
        assert_eq!(mode_human(pb::EntryKind::Special, 0o20620), "crw--w----");
        assert_eq!(mode_human(pb::EntryKind::Special, 0o60660), "brw-rw----");
        assert_eq!(mode_human(pb::EntryKind::Special, 0o140755), "srwxr-xr-x");
        assert_eq!(printable("a\nb\tc"), "a\\nb\\tc");
        assert_eq!(printable("plain ünïcode"), "plain ünïcode");
        assert_eq!(
            duration_between(&ts(10, 0), &ts(12, 500_000_000)),
            Some(Duration::from_millis(2500))
        );
    }

    #[test]
    fn tables_pad_and_align() {
        let mut t = Table::new(&["NAME", "SIZE>"]);
        t.row(vec!["a".into(), "1".into()]);
        t.row(vec!["long".into(), "100".into()]);
        assert_eq!(t.render(), "NAME  SIZE\na        1\nlong   100\n");
    }
}
