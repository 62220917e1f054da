//! `wimguard catalog rebuild`, `wimguard archive consolidate` and
//! `wimguard archive check`: the catalog and remote archives as wholes
//! (through the server).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{bytes_human, print_json};
use super::{absolute_path, CliError, ClientOptions};

#[derive(Args, Debug, Clone)]
pub struct CatalogArgs {
    #[command(flatten)]
    pub client: ClientOptions,
    #[command(subcommand)]
    pub command: CatalogCommand,
}

#[derive(Subcommand, Debug, Clone)]
pub enum CatalogCommand {
    /// Find the snapshots of archives again (after losing the catalog):
    /// every remote archive of each destination plugin, and local WIMs.
    Rebuild {
        /// A destination plugin whose archives to read (repeatable).
        #[arg(long = "plugin", value_name = "NAME")]
        plugins: Vec<String>,
        /// A local archive to read (repeatable).
        #[arg(long = "archive", value_name = "WIM")]
        archives: Vec<PathBuf>,
    },
}

pub async fn run(args: CatalogArgs) -> Result<(), CliError> {
    let json = args.client.json;
    let client = args.client.client()?;
    match args.command {
        CatalogCommand::Rebuild { plugins, archives } => {
            if plugins.is_empty() && archives.is_empty() {
                return Err(CliError::usage(
                    "name what to rebuild from: --plugin NAME (remote archives) or --archive WIM (local ones)",
                ));
            }
            let archives = archives
                .iter()
                .map(|a| absolute_path(a, "archive"))
                .collect::<Result<Vec<_>, _>>()?;
            let mut events = client.rebuild_catalog(plugins, archives).await?;
            while let Some(e) = events.next().await? {
                if let Some(r) = e.result {
                    if json {
                        print_json(&json!({
                            "archives": r.archives, "objects": r.objects, "snapshots": r.snapshots,
                            "added": r.added, "skipped": r.skipped,
                        }));
                    } else {
                        for s in &r.skipped {
                            eprintln!("skipped {s}");
                        }
                        outln!(
                            "{} archives, {} objects read: {} snapshots, {} new to the catalog",
                            r.archives,
                            r.objects,
                            r.snapshots,
                            r.added
                        );
                    }
                    return Ok(());
                }
                if !json && !e.reading.is_empty() {
                    eprintln!("reading {}", e.reading);
                }
            }
            Err(CliError::failure(
                "the server ended the rebuild without a result (did it stop?)",
            ))
        }
    }
}

/// `wimguard archive consolidate NAME --plugin P`.
pub async fn consolidate(name: String, plugin: String, options: ClientOptions) -> Result<(), CliError> {
    let json = options.json;
    let client = options.client()?;
    let mut events = client.consolidate_archive(&name, &plugin).await?;
    while let Some(e) = events.next().await? {
        if let Some(r) = e.result {
            if json {
                print_json(&json!({
                    "objects_before": r.objects_before, "bytes_before": r.bytes_before,
                    "images_kept": r.images_kept, "images_dropped": r.images_dropped,
                    "bytes_after": r.bytes_after, "key": r.key,
                }));
            } else if r.objects_before == 1 && r.images_dropped == 0 {
                // Nothing was rewritten: the chain is one full object already.
                outln!(
                    "{plugin}:{name}: nothing to reclaim; {} alone holds its {} snapshots ({})",
                    r.key,
                    r.images_kept,
                    bytes_human(r.bytes_after)
                );
            } else {
                outln!(
                    "{plugin}:{name}: {} objects ({}) → {} ({}); {} snapshots kept, {} dropped",
                    r.objects_before,
                    bytes_human(r.bytes_before),
                    r.key,
                    bytes_human(r.bytes_after),
                    r.images_kept,
                    r.images_dropped
                );
            }
            return Ok(());
        }
    }
    Err(CliError::failure(
        "the server ended the consolidation without a result (did it stop?)",
    ))
}

/// `wimguard archive check NAME --plugin P [--read-data] [--repair]`.
pub async fn check(request: crate::api::v1::CheckArchiveRequest, options: ClientOptions) -> Result<(), CliError> {
    let json = options.json;
    let client = options.client()?;
    let id = format!("{}:{}", request.plugin, request.name);
    let (plugin, name) = (request.plugin.clone(), request.name.clone());
    let mut events = client.check_archive(request).await?;
    while let Some(e) = events.next().await? {
        if let Some(p) = e.progress.filter(|_| !json) {
            eprint!(
                "\rreading {} of {}   ",
                bytes_human(p.bytes_done),
                bytes_human(p.bytes_total)
            );
        }
        let Some(r) = e.result else { continue };
        if json {
            let damaged: Vec<_> = r
                .damaged
                .iter()
                .map(|d| {
                    json!({
                        "backup_uuid": d.backup_uuid, "problem": d.problem, "files": d.files,
                        "files_total": d.files_total, "lost": d.lost, "forgotten": d.forgotten,
                    })
                })
                .collect();
            print_json(&json!({
                "objects": r.objects, "snapshots": r.snapshots, "missing_objects": r.missing_objects,
                "changed_objects": r.changed_objects, "unknown_objects": r.unknown_objects,
                "blobs_read": r.blobs_read, "bytes_read": r.bytes_read, "damaged_blobs": r.damaged_blobs,
                "blobs_dropped": r.blobs_dropped, "damaged": damaged, "repaired": r.repaired,
                "problems_left": r.problems_left,
            }));
        } else {
            print_check(&id, &plugin, &r);
        }
        if r.problems_left > 0 {
            // What a repair cannot settle (files whose contents are lost in
            // snapshots that are otherwise there) takes a backup or a delete.
            let repair_helps = !r.repaired
                && (!r.missing_objects.is_empty()
                    || !r.changed_objects.is_empty()
                    || !r.damaged_blobs.is_empty()
                    || r.damaged.iter().any(|d| d.lost));
            let advice = if repair_helps {
                // Damaged blobs are found only by reading: the repair must read too.
                let read = if r.damaged_blobs.is_empty() { "" } else { " --read-data" };
                format!(
                    "`wimguard archive check {name} --plugin {plugin}{read} --repair` forgets what is lost; the \
                     next backup stores again what its source still has"
                )
            } else {
                "the snapshots named cannot be restored whole: back their sources up again (what they still have \
                 is stored again, and makes them whole if it is all), or delete them (`wimguard backups delete \
                 UUID`); `restore --recover-data` restores what is left of one"
                    .to_string()
            };
            return Err(CliError::damaged(format!(
                "{id}: {} problem(s) found; {advice}",
                r.problems_left
            )));
        }
        return Ok(());
    }
    Err(CliError::failure(
        "the server ended the check without a result (did it stop?)",
    ))
}

/// The human form of a check's result.
fn print_check(id: &str, plugin: &str, r: &crate::api::v1::CheckResult) {
    if r.blobs_read > 0 {
        eprintln!();
    }
    outln!("{id}: {} objects, {} snapshots checked", r.objects, r.snapshots);
    if r.blobs_read > 0 {
        outln!("read {} blobs ({})", r.blobs_read, bytes_human(r.bytes_read));
    }
    let done = if r.repaired { " (forgotten in the catalog)" } else { "" };
    for k in &r.missing_objects {
        outln!("missing from {plugin}: {k}{done}");
    }
    for c in &r.changed_objects {
        outln!("changed in {plugin}: {c}");
    }
    for b in &r.damaged_blobs {
        outln!("damaged blob {b}");
    }
    if r.blobs_dropped > 0 {
        outln!("{} damaged blobs forgotten in the catalog", r.blobs_dropped);
    }
    for d in &r.damaged {
        let forgotten = if d.forgotten { " (forgotten in the catalog)" } else { "" };
        outln!("snapshot {}: {}{forgotten}", d.backup_uuid, d.problem);
        for f in &d.files {
            outln!("    {f}");
        }
        if d.files_total > d.files.len() as u64 {
            outln!("    … and {} more", d.files_total - d.files.len() as u64);
        }
    }
    for k in &r.unknown_objects {
        outln!(
            "not in the catalog: {k} (another home's, or one a repair forgot; `wimguard catalog rebuild --plugin \
             {plugin}` records what a readable one holds)"
        );
    }
    if r.problems_left == 0 {
        if r.repaired && !r.missing_objects.is_empty() {
            outln!("repaired: every snapshot left can be restored whole");
        } else {
            outln!("no problems found");
        }
    }
}
