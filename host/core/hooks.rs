//! The hook stage: commands from config (`hooks.pre` / `hooks.post`) and
//! hook plugins attached with `--plugin`, run around a backup.
//!
//! Pre-backup: any veto stops the backup before anything is written. A hook
//! that fails (crash, time limit, exit status) stops it too under
//! `fail-closed` (the default), or becomes a warning under `fail-open`.
//! Post-backup: hooks get the summary; their vetoes and failures are
//! warnings (the snapshot is already written; failing it would mislead).
//! After a cancelled backup each gets at most
//! [`POST_HOOK_LIMIT_AFTER_CANCEL`], so a hook that hangs cannot hold a job
//! the user asked to stop.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::config::{CommandHook, FailurePolicy, HooksConfig};
use crate::plugins::{HookEvent, HookVerdict, PluginError, WasmHook};

/// The most time one post-backup hook (command or plugin) gets after a
/// cancelled backup, whatever its own limit: the user asked the job to stop,
/// and monitoring only needs to hear of it.
pub const POST_HOOK_LIMIT_AFTER_CANCEL: Duration = Duration::from_secs(10);

/// What hooks are told about the backup.
#[derive(Debug, Clone, Default)]
pub struct BackupFacts {
    pub backup_id: String,
    /// The image name (WimGuard has no named jobs yet; this names the run).
    pub job: String,
    pub source: String,
    pub destination: String,
    pub compression: String,
}

/// How the backup ended, for post-backup hooks.
#[derive(Debug, Clone, Default)]
pub struct BackupOutcome {
    /// `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub error: Option<String>,
    pub image_index: u32,
    pub files: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub duration: Duration,
}

enum Runner {
    Command(CommandHook),
    Plugin(WasmHook),
}

struct Hook {
    /// `command NAME` or `plugin NAME`, for messages.
    label: String,
    runner: Runner,
    policy: FailurePolicy,
}

/// The hooks of one backup.
#[derive(Default)]
pub struct BackupHooks {
    pre: Vec<Hook>,
    post: Vec<Hook>,
    /// Environment variables of the server that commands must not see (the
    /// ones holding plugin secrets: a secret goes only to its plugin).
    hidden_env: Vec<String>,
}

/// Why a pre-backup hook stopped the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped(pub String);

impl BackupHooks {
    /// Command hooks from config, then the attached plugins (in order).
    pub fn new(config: &HooksConfig, plugins: Vec<(WasmHook, FailurePolicy)>) -> BackupHooks {
        let command = |c: &CommandHook| Hook {
            label: format!("command `{}`", command_name(c)),
            runner: Runner::Command(c.clone()),
            policy: c.failure_policy,
        };
        let mut hooks = BackupHooks {
            pre: config.pre.iter().map(command).collect(),
            post: config.post.iter().map(command).collect(),
            hidden_env: Vec::new(),
        };
        for (h, policy) in plugins {
            for list in [&mut hooks.pre, &mut hooks.post] {
                list.push(Hook {
                    label: format!("plugin `{}`", h.name()),
                    runner: Runner::Plugin(h.clone()),
                    policy,
                });
            }
        }
        hooks
    }

    /// Keeps the server's environment variables `names` from the commands.
    pub fn hide_env(mut self, names: Vec<String>) -> BackupHooks {
        self.hidden_env = names;
        self
    }

    pub fn is_empty(&self) -> bool {
        self.pre.is_empty() && self.post.is_empty()
    }

    /// Runs the pre-backup hooks in order. `Ok(warnings)` to go on; a veto
    /// or a fail-closed failure stops at once.
    pub fn run_pre(&self, facts: &BackupFacts, cancel: &AtomicBool) -> Result<Vec<String>, Stopped> {
        let event = HookEvent::PreBackup {
            job: facts.job.clone(),
            backup_id: facts.backup_id.clone(),
            sources: vec![facts.source.clone()],
            destination: facts.destination.clone(),
        };
        let env = pre_env(facts);
        let mut warnings = Vec::new();
        for h in &self.pre {
            if cancel.load(Ordering::Relaxed) {
                return Err(Stopped("cancelled".into()));
            }
            match run(h, &event, &env, &self.hidden_env, cancel, None) {
                Ok(HookVerdict::Allow) => {}
                Ok(HookVerdict::Veto(reason)) => {
                    tracing::warn!(backup = %facts.backup_id, hook = %h.label, "pre-backup hook vetoed the backup: {reason}");
                    return Err(Stopped(format!(
                        "pre-backup hook {} vetoed the backup: {reason}",
                        h.label
                    )));
                }
                Err(e) if h.policy == FailurePolicy::FailOpen => {
                    tracing::warn!(backup = %facts.backup_id, hook = %h.label, "pre-backup hook failed (fail-open): {e}");
                    warnings.push(format!(
                        "pre-backup hook {} failed (fail-open, backup went on): {e}",
                        h.label
                    ));
                }
                Err(e) => {
                    tracing::error!(backup = %facts.backup_id, hook = %h.label, "pre-backup hook failed: {e}");
                    return Err(Stopped(format!(
                        "pre-backup hook {} failed (fail-closed): {e}",
                        h.label
                    )));
                }
            }
        }
        Ok(warnings)
    }

    /// Runs every post-backup hook; returns warnings for the backup. After
    /// a cancelled backup each runs within [`POST_HOOK_LIMIT_AFTER_CANCEL`].
    pub fn run_post(&self, facts: &BackupFacts, outcome: &BackupOutcome) -> Vec<String> {
        let event = HookEvent::PostBackup {
            job: facts.job.clone(),
            backup_id: facts.backup_id.clone(),
            succeeded: outcome.status == "succeeded",
            error: outcome.error.clone(),
            files: outcome.files,
            bytes_read: outcome.bytes_read,
            bytes_written: outcome.bytes_written,
            duration_ms: outcome.duration.as_millis() as u64,
        };
        let mut env = pre_env(facts);
        env.extend([
            ("WIMGUARD_STATUS", outcome.status.clone()),
            ("WIMGUARD_ERROR", outcome.error.clone().unwrap_or_default()),
            ("WIMGUARD_IMAGE_INDEX", outcome.image_index.to_string()),
            ("WIMGUARD_FILES", outcome.files.to_string()),
            ("WIMGUARD_BYTES_READ", outcome.bytes_read.to_string()),
            ("WIMGUARD_BYTES_WRITTEN", outcome.bytes_written.to_string()),
            ("WIMGUARD_DURATION_MS", outcome.duration.as_millis().to_string()),
        ]);
        env[0].1 = "post-backup".into();
        let never = AtomicBool::new(false);
        let cap = (outcome.status == "cancelled").then_some(POST_HOOK_LIMIT_AFTER_CANCEL);
        let mut warnings = Vec::new();
        for h in &self.post {
            match run(h, &event, &env, &self.hidden_env, &never, cap) {
                Ok(HookVerdict::Allow) => {}
                Ok(HookVerdict::Veto(reason)) => {
                    warnings.push(format!("post-backup hook {} objected: {reason}", h.label));
                }
                Err(e) => {
                    tracing::warn!(backup = %facts.backup_id, hook = %h.label, "post-backup hook failed: {e}");
                    warnings.push(format!("post-backup hook {} failed: {e}", h.label));
                }
            }
        }
        warnings
    }
}

fn pre_env(f: &BackupFacts) -> Vec<(&'static str, String)> {
    vec![
        ("WIMGUARD_EVENT", "pre-backup".into()),
        ("WIMGUARD_BACKUP_ID", f.backup_id.clone()),
        ("WIMGUARD_JOB", f.job.clone()),
        ("WIMGUARD_SOURCE", f.source.clone()),
        ("WIMGUARD_DESTINATION", f.destination.clone()),
        ("WIMGUARD_COMPRESSION", f.compression.clone()),
    ]
}

fn command_name(c: &CommandHook) -> String {
    c.name.clone().unwrap_or_else(|| {
        c.command
            .first()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .unwrap_or_default()
    })
}

/// Runs one hook within its own time limit, or `cap` when that is shorter.
fn run(
    h: &Hook,
    event: &HookEvent,
    env: &[(&'static str, String)],
    hidden_env: &[String],
    cancel: &AtomicBool,
    cap: Option<Duration>,
) -> Result<HookVerdict, String> {
    match &h.runner {
        Runner::Plugin(p) => p.call(event, Some(cancel), cap).map_err(|e| match e {
            PluginError::Timeout { limit, .. } if cap == Some(limit) => format!("{e} ({})", capped_why()),
            e => e.to_string(),
        }),
        Runner::Command(c) => run_command(c, env, hidden_env, cancel, cap).map(|()| HookVerdict::Allow),
    }
}

/// Why a hook got less time than its own limit.
fn capped_why() -> String {
    format!(
        "the post-backup hooks of a cancelled backup get at most {:?}",
        POST_HOOK_LIMIT_AFTER_CANCEL
    )
}

/// The most output of a command hook kept for messages and logs.
const OUTPUT_KEPT: usize = 16 * 1024;

/// Runs a command hook without a shell, in its own process group (so a
/// timeout kills what it started too), stdin closed, output captured, with
/// the server's environment minus `hidden_env`, plus the backup's facts;
/// within its `timeout`, or `cap` when that is shorter.
fn run_command(
    c: &CommandHook,
    env: &[(&'static str, String)],
    hidden_env: &[String],
    cancel: &AtomicBool,
    cap: Option<Duration>,
) -> Result<(), String> {
    let Some(program) = c.command.first().filter(|p| !p.is_empty()) else {
        return Err("has an empty `command` (write it as a list: [program, arg, ...])".into());
    };
    let own = Duration::from_secs_f64(if c.timeout.is_finite() && c.timeout > 0.0 {
        c.timeout.min(86_400.0)
    } else {
        60.0
    });
    let (timeout, capped) = match cap {
        Some(cap) if cap < own => (cap, true),
        _ => (own, false),
    };
    let mut cmd = Command::new(program);
    cmd.args(&c.command[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for k in hidden_env {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start {program}: {e}"))?;
    // Drain the pipes on threads so a chatty command cannot block on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut r) = r {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = OUTPUT_KEPT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            String::from_utf8_lossy(&kept).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let start = Instant::now();
    let pgid = child.id() as i32;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) => {}
            Err(e) => break Err(format!("waiting for {program}: {e}")),
        }
        let stop = if start.elapsed() >= timeout && capped {
            Some(format!("timed out after {timeout:?} and was killed ({})", capped_why()))
        } else if start.elapsed() >= timeout {
            Some(format!("timed out after {timeout:?} and was killed"))
        } else if cancel.load(Ordering::Relaxed) {
            Some("was killed because the backup was cancelled".to_string())
        } else {
            None
        };
        if let Some(why) = stop {
            // SAFETY: kill(2) on the process group we created for the child.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            let _ = child.wait();
            break Err(why);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Whatever the command left running in its group goes with it.
    // SAFETY: as above; ESRCH when the group is already gone is fine.
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    for line in stdout.lines().chain(stderr.lines()).filter(|l| !l.trim().is_empty()) {
        tracing::info!(target: "wimguard::hook", command = %program, "{line}");
    }
    let status = status?;
    if status.success() {
        return Ok(());
    }
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let how = match status.code() {
        Some(code) => format!("exited with status {code}"),
        None => "was killed by a signal".to_string(),
    };
    Err(if last.is_empty() {
        how
    } else {
        format!("{how}: {}", last.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(cmd: &[&str], timeout: f64, policy: FailurePolicy) -> CommandHook {
        CommandHook {
            name: None,
            command: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
            failure_policy: policy,
        }
    }

    fn facts() -> BackupFacts {
        BackupFacts {
            backup_id: "b-1".into(),
            job: "nightly".into(),
            source: "/src dir".into(),
            destination: "/d/a.wim".into(),
            compression: "lzx".into(),
        }
    }

    #[test]
    fn commands_get_the_facts_without_a_shell() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("env");
        let script = format!(
            "echo \"$WIMGUARD_EVENT|$WIMGUARD_BACKUP_ID|$WIMGUARD_SOURCE|$1\" > '{}'",
            out.display()
        );
        let cfg = HooksConfig {
            pre: vec![hook(
                &["/bin/sh", "-c", &script, "sh", "a;b $HOME"],
                10.0,
                FailurePolicy::FailClosed,
            )],
            post: vec![],
        };
        let hooks = BackupHooks::new(&cfg, vec![]);
        hooks.run_pre(&facts(), &AtomicBool::new(false)).unwrap();
        // The argument reached the program verbatim: no shell expanded it.
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "pre-backup|b-1|/src dir|a;b $HOME\n"
        );
    }

    #[test]
    fn failures_follow_the_policy_and_timeouts_kill() {
        let closed = HooksConfig {
            pre: vec![hook(
                &["/bin/sh", "-c", "echo boom >&2; exit 3"],
                10.0,
                FailurePolicy::FailClosed,
            )],
            post: vec![],
        };
        let e = BackupHooks::new(&closed, vec![])
            .run_pre(&facts(), &AtomicBool::new(false))
            .unwrap_err();
        assert!(e.0.contains("exited with status 3: boom"), "{e:?}");

        let open = HooksConfig {
            pre: vec![hook(&["/bin/sleep", "30"], 0.3, FailurePolicy::FailOpen)],
            post: vec![],
        };
        let w = BackupHooks::new(&open, vec![])
            .run_pre(&facts(), &AtomicBool::new(false))
            .unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("timed out"), "{w:?}");

        let missing = HooksConfig {
            pre: vec![hook(&["/nonexistent/prog"], 10.0, FailurePolicy::FailClosed)],
            post: vec![],
        };
        let e = BackupHooks::new(&missing, vec![])
            .run_pre(&facts(), &AtomicBool::new(false))
            .unwrap_err();
        assert!(e.0.contains("cannot start /nonexistent/prog"), "{e:?}");
    }

    #[test]
    fn post_hooks_see_the_outcome_and_only_warn() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("post");
        let script = format!(
            "echo \"$WIMGUARD_EVENT $WIMGUARD_STATUS $WIMGUARD_FILES\" > '{}'; exit 1",
            out.display()
        );
        let cfg = HooksConfig {
            pre: vec![],
            post: vec![hook(&["/bin/sh", "-c", &script], 10.0, FailurePolicy::FailClosed)],
        };
        let outcome = BackupOutcome {
            status: "succeeded".into(),
            files: 7,
            ..BackupOutcome::default()
        };
        let w = BackupHooks::new(&cfg, vec![]).run_post(&facts(), &outcome);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "post-backup succeeded 7\n");
        assert_eq!(w.len(), 1, "{w:?}");
    }
}
