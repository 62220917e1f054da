//! `wimguard backups list|show|watch|cancel|delete`: the catalog's backups.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::backup::{follow, interrupt_signal, Follow};
use super::output::{
    backup_json, bytes_human, compression_word, deletion_words, duration_between, outcome_word, phase_word, print_json,
    status_word, time_human, Table,
};
use super::{absolute_path, CliError, ClientOptions};
use crate::api::v1 as pb;

#[derive(Args, Debug, Clone)]
pub struct BackupsArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(subcommand)]
    pub command: BackupsCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum BackupsCommand {
    /// List backups, newest first.
    List {
        /// Only backups with this status.
        #[arg(long, value_enum)]
        status: Option<StatusArg>,
        /// Only backups of this source directory.
        #[arg(long, value_name = "P")]
        source: Option<PathBuf>,
        /// Only backups into this archive (a path, or PLUGIN:NAME for a remote one).
        #[arg(long, value_name = "P")]
        destination: Option<PathBuf>,
        /// At most N backups (default: the server's page size, 100; at most 1000).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Continue a listing from the token a previous page printed.
        #[arg(long, value_name = "T")]
        page_token: Option<String>,
    },
    /// Show one backup.
    Show { uuid: String },
    /// Follow a running backup's progress to its end (Ctrl-C stops watching, the backup goes on).
    Watch { uuid: String },
    /// Ask the server to cancel a running backup.
    Cancel { uuid: String },
    /// Delete a backup: its image is removed from the archive (space is reclaimed) and from the catalog.
    Delete {
        uuid: String,
        /// When the backup's local archive is missing (an unmounted disk, a
        /// moved file), remove the record anyway (refused by default).
        #[arg(long)]
        forget_missing: bool,
    },
}

/// Job statuses as the CLI spells them.
#[derive(Clone, Copy, ValueEnum, Debug, PartialEq, Eq)]
pub enum StatusArg {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    Interrupted,
}

impl From<StatusArg> for pb::JobStatus {
    fn from(s: StatusArg) -> Self {
        match s {
            StatusArg::Queued => pb::JobStatus::Queued,
            StatusArg::Running => pb::JobStatus::Running,
            StatusArg::Succeeded => pb::JobStatus::Succeeded,
            StatusArg::Failed => pb::JobStatus::Failed,
            StatusArg::Cancelled => pb::JobStatus::Cancelled,
            StatusArg::Interrupted => pb::JobStatus::Interrupted,
        }
    }
}

pub async fn run(args: BackupsArgs) -> Result<(), CliError> {
    let client = args.client.client()?;
    let json = args.client.json;
    match args.command {
        BackupsCommand::List {
            status,
            source,
            destination,
            limit,
            page_token,
        } => {
            let request = pb::ListBackupsRequest {
                page: Some(pb::PageRequest {
                    page_size: limit.unwrap_or(0),
                    page_token: page_token.unwrap_or_default(),
                }),
                status: status.map(|s| pb::JobStatus::from(s) as i32).unwrap_or(0),
                source: source
                    .map(|p| absolute_path(&p, "source"))
                    .transpose()?
                    .unwrap_or_default(),
                destination: destination
                    .map(|p| super::archive_filter(&p, "destination"))
                    .transpose()?
                    .unwrap_or_default(),
                ..Default::default()
            };
            let response = client.list_backups(request).await?;
            let page = response.page.unwrap_or_default();
            if json {
                print_json(&Value::Array(response.backups.iter().map(backup_json).collect()));
            } else {
                print_backup_table(&response.backups);
                let shown = response.backups.len();
                if page.total > shown as u64 || !page.next_page_token.is_empty() {
                    outln!("({shown} of {} backups)", page.total);
                }
            }
            if !page.next_page_token.is_empty() {
                eprintln!("wimguard: more backups: add --page-token {}", page.next_page_token);
            }
            Ok(())
        }
        BackupsCommand::Show { uuid } => {
            let b = client.get_backup(&uuid).await?;
            if json {
                print_json(&backup_json(&b));
            } else {
                print_backup_details(&b);
            }
            Ok(())
        }
        BackupsCommand::Watch { uuid } => {
            let mut interrupts = interrupt_signal()?;
            let stream = tokio::select! {
                s = client.watch_backup(&uuid) => s?,
                _ = interrupts.recv() => return Err(CliError::interrupted("interrupted")),
            };
            follow(&client, stream, Follow::Watch, json, interrupts).await
        }
        BackupsCommand::Cancel { uuid } => {
            let b = client.cancel_backup(&uuid).await?;
            if json {
                print_json(&backup_json(&b));
            } else {
                match b.status() {
                    pb::JobStatus::Queued | pb::JobStatus::Running => {
                        outln!("backup {uuid}: cancelling (`wimguard backups watch {uuid}` follows it to the end)")
                    }
                    s => outln!("backup {uuid}: {}", status_word(s)),
                }
            }
            Ok(())
        }
        BackupsCommand::Delete { uuid, forget_missing } => {
            let r = client.delete_backup(&uuid, forget_missing).await?;
            let b = r.backup.clone().unwrap_or_default();
            if json {
                print_json(&json!({
                    "backup": backup_json(&b),
                    "archive_bytes_before": r.archive_bytes_before,
                    "archive_bytes_after": r.archive_bytes_after,
                    "outcome": outcome_word(r.outcome()),
                }));
            } else {
                let image = match r.outcome() {
                    pb::DeleteOutcome::RecordOnly => String::new(),
                    _ if b.destination.is_empty() => String::new(),
                    _ => format!(": image {} of {}", b.image_index, b.destination),
                };
                // The full uuid, when a prefix was given.
                let uuid = if b.uuid.is_empty() { &uuid } else { &b.uuid };
                outln!(
                    "deleted backup {uuid}{image} {}",
                    deletion_words(
                        r.outcome(),
                        r.archive_bytes_before,
                        r.archive_bytes_after,
                        Some(&b.destination)
                    )
                );
            }
            Ok(())
        }
    }
}

/// One line per backup.
pub fn print_backup_table(backups: &[pb::Backup]) {
    if backups.is_empty() {
        outln!("no backups");
        return;
    }
    let mut t = Table::new(&[
        "UUID",
        "STATUS",
        "CREATED",
        "FILES>",
        "SIZE>",
        "STORED>",
        "SOURCE",
        "DESTINATION",
    ]);
    for b in backups {
        t.row(vec![
            b.uuid.clone(),
            status_word(b.status()),
            time_human(&b.created_at),
            b.files.to_string(),
            bytes_human(b.bytes_total),
            bytes_human(b.bytes_stored),
            b.source.clone(),
            b.destination.clone(),
        ]);
    }
    t.print();
}

/// Every field of a backup, one per line.
pub fn print_backup_details(b: &pb::Backup) {
    let took = duration_between(&b.started_at, &b.finished_at)
        .map(|d| format!(" (took {:.1} s)", d.as_secs_f64()))
        .unwrap_or_default();
    let mut rows: Vec<(&str, String)> = vec![
        ("UUID", b.uuid.clone()),
        ("Status", status_word(b.status())),
        ("Phase", phase_word(b.phase())),
        ("Source", b.source.clone()),
        ("Destination", b.destination.clone()),
        (
            "Image",
            if b.image_index == 0 {
                "-".into()
            } else {
                format!("{} ({:?})", b.image_index, b.name)
            },
        ),
        (
            "Compression",
            if b.codec.is_empty() {
                compression_word(b.compression())
            } else {
                b.codec.clone()
            },
        ),
    ];
    if !b.description.is_empty() {
        rows.push(("Description", b.description.clone()));
    }
    if !b.excludes.is_empty() {
        rows.push(("Excludes", b.excludes.join(" ")));
    }
    if !b.plugins.is_empty() {
        rows.push(("Plugins", b.plugins.join(", ")));
    }
    rows.extend([
        ("Files", format!("{} ({} unchanged)", b.files, b.files_unchanged)),
        ("Directories", b.directories.to_string()),
        ("Size", bytes_human(b.bytes_total)),
        ("Read", bytes_human(b.bytes_read)),
        ("Stored", bytes_human(b.bytes_stored)),
        ("Created", time_human(&b.created_at)),
        ("Started", time_human(&b.started_at)),
        ("Finished", format!("{}{took}", time_human(&b.finished_at))),
    ]);
    if !b.error.is_empty() {
        rows.push(("Error", b.error.clone()));
    }
    for (k, v) in rows {
        outln!("{:<13} {v}", format!("{k}:"));
    }
    for w in &b.warnings {
        outln!("{:<13} {w}", "Warning:");
    }
}
