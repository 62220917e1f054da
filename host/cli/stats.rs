//! `wimguard stats`: totals over the catalog.

use clap::Args;

use super::output::{bytes_human, print_json, statistics_json, status_word, time_human, Table};
use super::{CliError, ClientOptions};

#[derive(Args, Debug, Clone)]
pub struct StatsArgs {
    #[command(flatten)]
    pub client: ClientOptions,
}

pub async fn run(args: StatsArgs) -> Result<(), CliError> {
    let client = args.client.client()?;
    let s = client.get_statistics().await?;
    if args.client.json {
        print_json(&statistics_json(&s));
        return Ok(());
    }
    let by_status: Vec<String> = s
        .backups_by_status
        .iter()
        .map(|c| format!("{} {}", c.count, status_word(c.status())))
        .collect();
    let total: u64 = s.backups_by_status.iter().map(|c| c.count).sum();
    outln!(
        "Backups:           {total}{}",
        if by_status.is_empty() {
            String::new()
        } else {
            format!(" ({})", by_status.join(", "))
        }
    );
    outln!(
        "Archives:          {} ({} on disk)",
        s.archives,
        bytes_human(s.archive_bytes)
    );
    outln!("Bytes backed up:   {}", bytes_human(s.bytes_total));
    outln!("Bytes read:        {}", bytes_human(s.bytes_read));
    outln!("Bytes stored:      {}", bytes_human(s.bytes_stored));
    outln!("Dedupe ratio:      {:.2}", s.dedupe_ratio);
    outln!("Compression ratio: {:.2}", s.compression_ratio);
    outln!(
        "Throughput:        {}/s",
        bytes_human(s.throughput_bytes_per_second as u64)
    );
    if !s.sources.is_empty() {
        outln!();
        let mut t = Table::new(&["SOURCE", "BACKUPS>", "LAST SUCCESS", "LAST SUCCESSFUL BACKUP"]);
        for src in &s.sources {
            let last = if src.last_success_uuid.is_empty() {
                "-".into()
            } else {
                src.last_success_uuid.clone()
            };
            t.row(vec![
                src.source.clone(),
                src.backups.to_string(),
                time_human(&src.last_success_at),
                last,
            ]);
        }
        t.print();
    }
    if !s.archive_details.is_empty() {
        outln!();
        let mut t = Table::new(&["ARCHIVE", "SNAPSHOTS>", "SIZE>", "RECLAIMABLE>"]);
        for a in &s.archive_details {
            t.row(vec![
                a.archive.clone(),
                a.snapshots.to_string(),
                bytes_human(a.bytes),
                bytes_human(a.reclaimable_bytes),
            ]);
        }
        t.print();
    }
    Ok(())
}
