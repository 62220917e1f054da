//! `wimguard snapshots …`: the images of archives, named by the backup that
//! made them — list, show, browse a directory, diff two, verify, delete.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::backup::interrupt_signal;
use super::output::{
    bytes_human, change_word, deletion_words, diff_json, entry_json, follow_to_result, mode_human, outcome_word,
    print_json, printable, snapshot_json, time_human, verify_result_json, JobProgress, Table,
};
use super::{CliError, ClientOptions, EXIT_DAMAGED};
use crate::api::v1 as pb;
use crate::client::Client;

#[derive(Args, Debug, Clone)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(subcommand)]
    pub command: SnapshotsCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum SnapshotsCommand {
    /// List snapshots, of all archives or of one.
    List {
        /// Only the snapshots of this archive (a path, or PLUGIN:NAME for a remote one).
        #[arg(long, value_name = "WIM")]
        archive: Option<PathBuf>,
        /// At most N snapshots (default: the server's page size, 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Continue a listing from the token a previous page printed.
        #[arg(long, value_name = "T")]
        page_token: Option<String>,
    },
    /// Show one snapshot.
    Show { uuid: String },
    /// List one directory of a snapshot (default: its root).
    Browse {
        uuid: String,
        /// Directory inside the snapshot, "/"-separated.
        path: Option<String>,
    },
    /// Paths added, removed and modified from the first snapshot to the second.
    Diff { base: String, target: String },
    /// Check the snapshot's metadata and every blob it uses (SHA-1); exit 3 when damaged.
    Verify { uuid: String },
    /// Delete the snapshot's image from its archive (space is reclaimed) and from the catalog.
    Delete {
        uuid: String,
        /// When the snapshot's local archive is missing (an unmounted disk,
        /// a moved file), remove the record anyway (refused by default).
        #[arg(long)]
        forget_missing: bool,
    },
}

pub async fn run(args: SnapshotsArgs) -> Result<(), CliError> {
    let client = args.client.client()?;
    let json = args.client.json;
    match args.command {
        SnapshotsCommand::List {
            archive,
            limit,
            page_token,
        } => {
            let request = pb::ListSnapshotsRequest {
                page: Some(pb::PageRequest {
                    page_size: limit.unwrap_or(0),
                    page_token: page_token.unwrap_or_default(),
                }),
                archive: archive
                    .map(|p| super::archive_filter(&p, "archive"))
                    .transpose()?
                    .unwrap_or_default(),
            };
            let response = client.list_snapshots(request).await?;
            let page = response.page.unwrap_or_default();
            if json {
                print_json(&Value::Array(response.snapshots.iter().map(snapshot_json).collect()));
            } else if response.snapshots.is_empty() {
                outln!("no snapshots");
            } else {
                let mut t = Table::new(&["UUID", "CREATED", "IMAGE>", "NAME", "FILES>", "SIZE>", "ARCHIVE"]);
                for s in &response.snapshots {
                    t.row(vec![
                        s.backup_uuid.clone(),
                        time_human(&s.created_at),
                        s.image_index.to_string(),
                        s.name.clone(),
                        s.files.to_string(),
                        bytes_human(s.bytes_total),
                        s.archive.clone(),
                    ]);
                }
                t.print();
                if page.total > response.snapshots.len() as u64 {
                    outln!("({} of {} snapshots)", response.snapshots.len(), page.total);
                }
            }
            if !page.next_page_token.is_empty() {
                eprintln!("wimguard: more snapshots: add --page-token {}", page.next_page_token);
            }
            Ok(())
        }
        SnapshotsCommand::Show { uuid } => {
            let s = client.get_snapshot(&uuid).await?;
            if json {
                print_json(&snapshot_json(&s));
            } else {
                let rows = [
                    ("Backup", s.backup_uuid.clone()),
                    ("Archive", s.archive.clone()),
                    ("Image", format!("{} ({:?})", s.image_index, s.name)),
                    (
                        "Description",
                        if s.description.is_empty() {
                            "-".into()
                        } else {
                            s.description.clone()
                        },
                    ),
                    ("Source", s.source.clone()),
                    ("Created", time_human(&s.created_at)),
                    ("Files", s.files.to_string()),
                    ("Directories", s.directories.to_string()),
                    ("Size", bytes_human(s.bytes_total)),
                ];
                for (k, v) in rows {
                    outln!("{:<12} {v}", format!("{k}:"));
                }
            }
            Ok(())
        }
        SnapshotsCommand::Browse { uuid, path } => {
            browse(&client, &uuid, path.unwrap_or_else(|| "/".into()), json).await
        }
        SnapshotsCommand::Diff { base, target } => diff(&client, &base, &target, json).await,
        SnapshotsCommand::Verify { uuid } => verify(&client, &uuid, json).await,
        SnapshotsCommand::Delete { uuid, forget_missing } => {
            let r = client.delete_snapshot(&uuid, forget_missing).await?;
            if json {
                print_json(&json!({
                    "backup_uuid": uuid,
                    "archive_bytes_before": r.archive_bytes_before,
                    "archive_bytes_after": r.archive_bytes_after,
                    "outcome": outcome_word(r.outcome()),
                }));
            } else {
                let words = deletion_words(r.outcome(), r.archive_bytes_before, r.archive_bytes_after, None);
                outln!("deleted snapshot {uuid} {words}");
            }
            Ok(())
        }
    }
}

/// Prints the changes between two snapshots as they stream in (JSON: one
/// object at the end, as `DiffSnapshots` would give).
async fn diff(client: &Client, base: &str, target: &str, json: bool) -> Result<(), CliError> {
    let mut events = client.diff_snapshots_stream(base, target).await?;
    let mut all = pb::DiffSnapshotsResponse::default();
    while let Some(event) = events.next().await? {
        for c in event.changes {
            if json {
                all.changes.push(c);
                continue;
            }
            let mark = match c.kind() {
                pb::ChangeKind::Added => "+".to_string(),
                pb::ChangeKind::Removed => "-".to_string(),
                pb::ChangeKind::Modified => "M".to_string(),
                k => change_word(k),
            };
            outln!("{mark} {}", printable(&c.path));
        }
        if let Some(s) = event.summary {
            (all.added, all.removed, all.modified) = (s.added, s.removed, s.modified);
            if json {
                print_json(&diff_json(&all));
            } else {
                outln!("{} added, {} removed, {} modified", s.added, s.removed, s.modified);
            }
            return Ok(());
        }
    }
    Err(CliError::failure(
        "the server ended the diff without its summary (did it stop?); the list above is incomplete",
    ))
}

/// Lists a directory, following every page.
async fn browse(client: &Client, uuid: &str, path: String, json: bool) -> Result<(), CliError> {
    let mut directory = None;
    let mut entries = Vec::new();
    let mut token = String::new();
    loop {
        let request = pb::BrowseSnapshotRequest {
            backup_uuid: uuid.into(),
            path: path.clone(),
            page: Some(pb::PageRequest {
                page_size: 1000,
                page_token: token.clone(),
            }),
        };
        let r = client.browse_snapshot(request).await?;
        directory = directory.or(r.directory);
        entries.extend(r.entries);
        let next = r.page.unwrap_or_default().next_page_token;
        if next.is_empty() || next == token {
            break;
        }
        token = next;
    }
    if json {
        print_json(&json!({
            "directory": directory.as_ref().map(entry_json),
            "entries": entries.iter().map(entry_json).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let mut t = Table::new(&["MODE", "UID>", "GID>", "SIZE>", "MODIFIED", "NAME"]);
    for e in &entries {
        let base = printable(e.path.rsplit('/').next().unwrap_or(&e.path));
        let name = match e.kind() {
            pb::EntryKind::Directory => format!("{base}/"),
            pb::EntryKind::Symlink => format!("{base} -> {}", printable(&e.symlink_target)),
            _ => base.to_string(),
        };
        t.row(vec![
            mode_human(e.kind(), e.mode),
            e.uid.to_string(),
            e.gid.to_string(),
            e.size.to_string(),
            time_human(&e.modified_at),
            name,
        ]);
    }
    if t.is_empty() {
        outln!("(empty directory)");
    } else {
        t.print();
    }
    Ok(())
}

/// Follows a verification; a damaged snapshot exits 3.
async fn verify(client: &Client, uuid: &str, json: bool) -> Result<(), CliError> {
    let mut interrupts = interrupt_signal()?;
    let interrupted = || CliError::interrupted("verification interrupted");
    let stream = tokio::select! {
        s = client.verify_snapshot(uuid) => s?,
        _ = interrupts.recv() => return Err(interrupted()),
    };
    let mut progress = JobProgress::new("verify", json);
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
            "the server ended the verification of {uuid} without a result"
        )));
    };
    if json {
        print_json(&verify_result_json(uuid, &r));
    } else if r.ok {
        outln!(
            "snapshot {uuid}: OK — {} blobs ({}) verified",
            r.blobs_checked,
            bytes_human(r.bytes_checked)
        );
    }
    if r.ok {
        Ok(())
    } else {
        Err(CliError {
            message: format!(
                "snapshot {uuid} is damaged: {}",
                if r.error.is_empty() {
                    "no details given"
                } else {
                    &r.error
                }
            ),
            exit_code: EXIT_DAMAGED,
        })
    }
}
