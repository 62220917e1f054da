//! `wimguard restore`: restores a backup's snapshot (or chosen paths of it)
//! into a directory, following the server's progress stream.

use std::path::PathBuf;

use clap::Args;

use super::backup::interrupt_signal;
use super::output::{bytes_human, follow_to_result, print_json, restore_result_json, status_word, JobProgress};
use super::{absolute_path, CliError, ClientOptions};
use crate::api::v1 as pb;

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    /// The backup whose snapshot to restore.
    pub uuid: String,
    /// Directory to restore into (created when missing; relative paths are resolved here).
    #[arg(long, value_name = "DIR")]
    pub target: PathBuf,
    /// Restore only this path inside the snapshot (repeatable; directory structure is kept).
    #[arg(long = "path", value_name = "P")]
    pub paths: Vec<String>,
    /// Replace files that already exist in the target.
    #[arg(long, conflicts_with = "skip_existing")]
    pub overwrite: bool,
    /// Keep files that already exist in the target and restore the rest.
    #[arg(long)]
    pub skip_existing: bool,
    /// Show what would be restored; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Go on past damaged file data: such files are restored as well as
    /// they decode, each named in a warning (exit 8), instead of stopping.
    #[arg(long)]
    pub recover_data: bool,
}

pub async fn run(args: RestoreArgs) -> Result<(), CliError> {
    let json = args.client.json;
    let target = absolute_path(&args.target, "target")?;
    let overwrite = if args.overwrite {
        pb::OverwritePolicy::Overwrite
    } else if args.skip_existing {
        pb::OverwritePolicy::Skip
    } else {
        pb::OverwritePolicy::Fail
    };
    let request = pb::RestoreRequest {
        backup_uuid: args.uuid.clone(),
        target: target.clone(),
        paths: args.paths,
        overwrite: overwrite as i32,
        dry_run: args.dry_run,
        recover_data: args.recover_data,
    };
    let client = args.client.client()?;
    let mut interrupts = interrupt_signal()?;
    let interrupted = || CliError::interrupted(format!("restore interrupted; {target} may hold a partial restore"));

    let stream = tokio::select! {
        s = client.restore(request) => s?,
        _ = interrupts.recv() => return Err(interrupted()),
    };
    let mut progress = JobProgress::new("restore", json);
    let result = follow_to_result(
        stream,
        &mut interrupts,
        &mut progress,
        |e| (e.progress, e.result),
        interrupted,
    )
    .await?;
    let Some(r) = result else {
        return Err(CliError::failure(format!(
            "the server ended the restore of {} without a result; check {target}",
            args.uuid
        )));
    };
    for w in &r.warnings {
        eprintln!("wimguard: warning: {w}");
    }
    if json {
        print_json(&restore_result_json(&r));
    } else {
        print_human(&args.uuid, &target, args.dry_run, &r);
    }
    match r.status() {
        pb::JobStatus::Succeeded if !r.warnings.is_empty() && !args.dry_run => Err(CliError::with_warnings(
            &format!("restore of {}", args.uuid),
            r.warnings.len(),
        )),
        pb::JobStatus::Succeeded => Ok(()),
        s => Err(CliError::failure(format!(
            "restore of {} {}: {}",
            args.uuid,
            status_word(s),
            if r.error.is_empty() {
                "no reason given"
            } else {
                &r.error
            }
        ))),
    }
}

fn print_human(uuid: &str, target: &str, dry_run: bool, r: &pb::RestoreResult) {
    if dry_run {
        for p in &r.planned {
            outln!("{}", super::output::printable(p));
        }
    }
    // The full list is in --json; a long one would bury the summary here.
    const SHOWN: usize = 10;
    for p in r.skipped.iter().take(SHOWN) {
        outln!("kept existing: {}", super::output::printable(p));
    }
    if r.skipped.len() > SHOWN {
        outln!(
            "kept existing: … and {} more (--json lists them all)",
            r.skipped.len() - SHOWN
        );
    }
    if r.status() != pb::JobStatus::Succeeded {
        return;
    }
    outln!(
        "{} {uuid} to {target}: {} files, {} directories, {} symlinks, {}{}",
        if dry_run { "would restore" } else { "restored" },
        r.files,
        r.directories,
        r.symlinks,
        bytes_human(r.bytes),
        if r.skipped.is_empty() {
            String::new()
        } else {
            format!("; kept {} existing paths", r.skipped.len())
        }
    );
    if r.unsafe_skipped > 0 {
        outln!(
            "skipped {} entries that cannot be restored safely (see the warnings)",
            r.unsafe_skipped
        );
    }
}
