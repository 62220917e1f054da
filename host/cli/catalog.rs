//! `wimguard catalog rebuild` and `wimguard archive consolidate`: the
//! catalog and remote archives as wholes (through the server).

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
