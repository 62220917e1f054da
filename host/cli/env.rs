//! `wimguard env`: facts about the running server.

use clap::Args;

use super::output::{environment_json, print_json, time_human, Table};
use super::{CliError, ClientOptions};

#[derive(Args, Debug, Clone)]
pub struct EnvArgs {
    #[command(flatten)]
    pub client: ClientOptions,
}

pub async fn run(args: EnvArgs) -> Result<(), CliError> {
    let client = args.client.client()?;
    let e = client.get_environment().await?;
    if args.client.json {
        print_json(&environment_json(&e));
        return Ok(());
    }
    let rows = [
        ("Version", e.version.clone()),
        ("Build", e.build.clone()),
        ("OS / arch", format!("{} / {}", e.os, e.arch)),
        ("Home", e.home.clone()),
        ("Config", e.config_path.clone()),
        ("Catalog", e.database_path.clone()),
        ("Listening on", e.listen_address.clone()),
        ("Client address", client.settings().address.clone()),
        ("PID", e.pid.to_string()),
        ("Started", time_human(&e.started_at)),
        ("Worker threads", e.worker_threads.to_string()),
        (
            "Plugin API",
            if e.plugin_api_versions.is_empty() {
                "-".into()
            } else {
                e.plugin_api_versions.join(", ")
            },
        ),
    ];
    for (k, v) in rows {
        outln!("{:<15} {v}", format!("{k}:"));
    }
    if !e.codecs.is_empty() {
        outln!();
        let mut t = Table::new(&["CODEC", "COMPRESS", "DECOMPRESS", "PROVIDER"]);
        let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
        for c in &e.codecs {
            t.row(vec![
                c.name.clone(),
                yes(c.can_compress),
                yes(c.can_decompress),
                c.provider.clone(),
            ]);
        }
        t.print();
    }
    Ok(())
}
