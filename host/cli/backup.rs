//! `wimguard backup`: runs a backup on the server and follows it to the end.
//!
//! The server streams BackupEvents: the first carries the Backup (so the
//! uuid is known), later ones progress, the last the final Backup. Ctrl-C
//! asks the server to cancel that backup, waits for the final event and
//! exits 130; a second Ctrl-C stops waiting at once (the server cancels a
//! backup whose stream is dropped, unless it was started with `--detach`).

use std::path::PathBuf;

use clap::Args;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::backups::print_backup_details;
use super::output::{backup_json, bytes_human, duration_between, print_json, status_word, JobProgress};
use super::{absolute_path, client_exit_code, CliError, ClientOptions};
use crate::api::v1 as pb;
use crate::client::{Client, ClientError, EventStream};

#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// Directory to back up (relative paths are resolved here, not on the server).
    #[arg(long, value_name = "DIR")]
    pub source: PathBuf,
    /// WIM archive to create, or to append a new image to when it exists.
    #[arg(long, value_name = "WIM")]
    pub destination: PathBuf,
    /// Codec for a new archive: none, xpress, lzx, or an installed codec plugin (name or codec id).
    /// An existing archive keeps its own. Default: the server's (backup.compression, lzx).
    #[arg(long, value_name = "CODEC")]
    pub compression: Option<String>,
    /// Image name, unique in the archive (default: wimguard-<UTC time>).
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Free-text description stored with the image.
    #[arg(long, value_name = "D")]
    pub description: Option<String>,
    /// Exclude paths matching this gitignore-style pattern, relative to the source (repeatable).
    #[arg(long = "exclude", value_name = "PAT")]
    pub excludes: Vec<String>,
    /// Attach an enabled plugin to its stage (repeatable): hook plugins run before and after the
    /// backup; a codec plugin compresses it (like --compression).
    #[arg(long = "plugin", value_name = "NAME")]
    pub plugins: Vec<String>,
    /// Return as soon as the server has queued the backup and keep it running without this client
    /// (follow it with `wimguard backups show UUID`).
    #[arg(long)]
    pub detach: bool,
}

/// Whether a status is final.
fn is_final(s: pb::JobStatus) -> bool {
    matches!(
        s,
        pb::JobStatus::Succeeded | pb::JobStatus::Failed | pb::JobStatus::Cancelled | pb::JobStatus::Interrupted
    )
}

pub async fn run(args: BackupArgs) -> Result<(), CliError> {
    let json = args.client.json;
    let request = pb::CreateBackupRequest {
        source: absolute_path(&args.source, "source")?,
        destination: absolute_path(&args.destination, "destination")?,
        compression: pb::Compression::Unspecified as i32,
        codec: args.compression.unwrap_or_default(),
        name: args.name.unwrap_or_default(),
        description: args.description.unwrap_or_default(),
        excludes: args.excludes,
        plugins: args.plugins,
        detach: args.detach,
        destination_as_given: args.destination.to_string_lossy().into_owned(),
    };
    let client = args.client.client()?;
    let mut interrupts = interrupt_signal()?;
    let stream = tokio::select! {
        s = client.create_backup(request) => s?,
        _ = interrupts.recv() => return Err(CliError::interrupted("interrupted before the server started the backup")),
    };
    let mode = if args.detach { Follow::Detach } else { Follow::Own };
    follow(&client, stream, mode, json, interrupts).await
}

/// SIGINT (Ctrl-C) as a stream, so the commands can react instead of dying.
pub fn interrupt_signal() -> Result<Signal, CliError> {
    signal(SignalKind::interrupt()).map_err(|e| CliError::failure(format!("cannot watch for Ctrl-C: {e}")))
}

/// How [`follow`] treats the backup it follows.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Follow {
    /// Started by this command: Ctrl-C cancels it.
    Own,
    /// Started with `--detach`: return at the first event.
    Detach,
    /// Attached with `backups watch`: Ctrl-C only stops watching.
    Watch,
}

/// Follows a backup's event stream to its final state, showing progress,
/// then prints the result and turns it into the exit status.
pub async fn follow(
    client: &Client,
    mut stream: EventStream<pb::BackupEvent>,
    mode: Follow,
    json: bool,
    mut interrupts: Signal,
) -> Result<(), CliError> {
    let mut progress = JobProgress::new("backup", json);
    let mut uuid = String::new();
    let mut last: Option<pb::Backup> = None;
    let mut interrupted = false;
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            event = stream.next() => {
                let event = match event {
                    Ok(Some(e)) => e,
                    Ok(None) => break,
                    Err(e) => return Err(lost_stream(e, &uuid)),
                };
                if uuid.is_empty() {
                    uuid = if event.uuid.is_empty() {
                        event.backup.as_ref().map(|b| b.uuid.clone()).unwrap_or_default()
                    } else {
                        event.uuid.clone()
                    };
                    if !uuid.is_empty() && !json && mode == Follow::Own {
                        progress.note(&format!("backup {uuid} started"));
                    }
                }
                if let Some(b) = event.backup {
                    progress.phase(b.phase());
                    if mode == Follow::Detach && !is_final(b.status()) {
                        progress.finish();
                        return detached(&b, json);
                    }
                    last = Some(b);
                }
                if let Some(p) = &event.progress {
                    progress.update(p);
                }
            }
            _ = interrupts.recv() => {
                if mode == Follow::Watch {
                    progress.finish();
                    return Err(CliError::interrupted(format!(
                        "stopped watching; backup {uuid} keeps running (cancel it with `wimguard backups cancel {uuid}`)"
                    )));
                }
                if interrupted {
                    progress.finish();
                    let hint = if uuid.is_empty() {
                        String::new()
                    } else {
                        format!("; the server cancels backup {uuid} (see `wimguard backups show {uuid}`)")
                    };
                    return Err(CliError::interrupted(format!("stopped waiting{hint}")));
                }
                interrupted = true;
                progress.note("wimguard: interrupted — cancelling the backup (Ctrl-C again to stop waiting)");
            }
        }
        if interrupted && !cancel_sent && !uuid.is_empty() {
            cancel_sent = true;
            if let Err(e) = client.cancel_backup(&uuid).await {
                progress.note(&format!("wimguard: warning: cannot cancel backup {uuid}: {e}"));
            }
        }
    }
    progress.finish();

    let Some(b) = last.filter(|b| is_final(b.status())) else {
        let msg =
            format!("the server ended the stream before backup {uuid} finished; see `wimguard backups show {uuid}`");
        return Err(if interrupted {
            CliError::interrupted(msg)
        } else {
            CliError::failure(msg)
        });
    };
    report(&b, json, interrupted);
    outcome(&b, interrupted)
}

/// `--detach`: the backup is queued or running; say how to follow it.
fn detached(b: &pb::Backup, json: bool) -> Result<(), CliError> {
    if json {
        print_json(&backup_json(b));
    } else {
        outln!(
            "backup {} {}; follow it with `wimguard backups show {}`",
            b.uuid,
            status_word(b.status()),
            b.uuid
        );
    }
    Ok(())
}

/// The error for a stream that broke, naming the backup so the user can find it.
fn lost_stream(e: ClientError, uuid: &str) -> CliError {
    // The server gives every failure its own code; a stream that broke
    // with none (Unknown: an HTTP/2 error, a reset) lost the server.
    let code = match e.code() {
        Some(tonic::Code::Unknown) => super::EXIT_UNREACHABLE,
        _ => client_exit_code(&e),
    };
    let mut message = e.to_string();
    if !uuid.is_empty() {
        message.push_str(&format!(
            " (backup {uuid} may still be running: `wimguard backups show {uuid}`)"
        ));
    }
    CliError {
        message,
        exit_code: code,
    }
}

/// Prints the final backup: JSON object, or a summary (details on failure).
fn report(b: &pb::Backup, json: bool, interrupted: bool) {
    for w in &b.warnings {
        eprintln!("wimguard: warning: {w}");
    }
    if json {
        print_json(&backup_json(b));
    } else if b.status() == pb::JobStatus::Succeeded {
        let took = duration_between(&b.started_at, &b.finished_at)
            .map(|d| format!(" in {:.1} s", d.as_secs_f64()))
            .unwrap_or_default();
        outln!(
            "backup {} succeeded{took}: {} → {} (image {}, {:?})",
            b.uuid,
            b.source,
            b.destination,
            b.image_index,
            b.name
        );
        outln!(
            "  {} files ({} unchanged), {} directories, {}; read {}, stored {}",
            b.files,
            b.files_unchanged,
            b.directories,
            bytes_human(b.bytes_total),
            bytes_human(b.bytes_read),
            bytes_human(b.bytes_stored)
        );
    } else if !(interrupted && b.status() == pb::JobStatus::Cancelled) {
        // The user cancelled: the error line says so; details are for real failures.
        print_backup_details(b);
    }
}

/// The exit status of a finished backup.
fn outcome(b: &pb::Backup, interrupted: bool) -> Result<(), CliError> {
    let uuid = &b.uuid;
    let reason = if b.error.is_empty() {
        "no reason given".to_string()
    } else {
        b.error.clone()
    };
    match b.status() {
        pb::JobStatus::Succeeded if interrupted => Err(CliError::interrupted(format!(
            "interrupted, but backup {uuid} had already succeeded"
        ))),
        pb::JobStatus::Succeeded if !b.warnings.is_empty() => {
            Err(CliError::with_warnings(&format!("backup {uuid}"), b.warnings.len()))
        }
        pb::JobStatus::Succeeded => Ok(()),
        pb::JobStatus::Cancelled if interrupted => Err(CliError::interrupted(format!("backup {uuid} cancelled"))),
        pb::JobStatus::Cancelled => Err(CliError::failure(format!("backup {uuid} was cancelled: {reason}"))),
        s => {
            let mut e = CliError::failure(format!("backup {uuid} {}: {reason}", status_word(s)));
            // Only where the kind tells a script something to act on: a
            // busy archive (7) or a store that stayed down (6): try again
            // later; a damaged archive (3). A veto or a missing source stay 1.
            let code = tonic::Code::from(b.error_code);
            if matches!(
                code,
                tonic::Code::Aborted | tonic::Code::DataLoss | tonic::Code::Unavailable
            ) {
                e.exit_code = super::status_exit_code(code);
            }
            if interrupted {
                Err(CliError {
                    exit_code: super::EXIT_INTERRUPTED,
                    ..e
                })
            } else {
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(status: pb::JobStatus, error: &str) -> pb::Backup {
        pb::Backup {
            uuid: "u".into(),
            status: status as i32,
            error: error.into(),
            ..Default::default()
        }
    }

    #[test]
    fn final_status_decides_the_exit_code() {
        assert!(outcome(&backup(pb::JobStatus::Succeeded, ""), false).is_ok());
        let mut warned = backup(pb::JobStatus::Succeeded, "");
        warned.warnings = vec!["/src/f: cannot read: gone; skipped".into()];
        let e = outcome(&warned, false).unwrap_err();
        assert_eq!(e.exit_code, 8);
        assert!(e.message.contains("1 warning "), "{}", e.message);
        let e = outcome(&backup(pb::JobStatus::Failed, "disk full"), false).unwrap_err();
        assert_eq!((e.exit_code, e.message.as_str()), (1, "backup u failed: disk full"));
        let mut busy = backup(pb::JobStatus::Failed, "a.wim is being modified by another process");
        busy.error_code = tonic::Code::Aborted as i32;
        assert_eq!(outcome(&busy, false).unwrap_err().exit_code, 7);
        let mut down = backup(pb::JobStatus::Failed, "plugin s3-upload: … kept failing");
        down.error_code = tonic::Code::Unavailable as i32;
        assert_eq!(outcome(&down, false).unwrap_err().exit_code, 6);
        let e = outcome(&backup(pb::JobStatus::Cancelled, "cancelled by a client"), false).unwrap_err();
        assert_eq!(e.exit_code, 1);
        assert!(e.message.contains("cancelled by a client"));
        assert_eq!(
            outcome(&backup(pb::JobStatus::Cancelled, ""), true)
                .unwrap_err()
                .exit_code,
            130
        );
        assert_eq!(
            outcome(&backup(pb::JobStatus::Succeeded, ""), true)
                .unwrap_err()
                .exit_code,
            130
        );
    }
}
