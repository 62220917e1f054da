//! `wimguard server`: runs the daemon in the foreground.

use std::path::PathBuf;

use clap::Args;

use super::CliError;

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Home directory (config, catalog, logs). Default: $WIMGUARD_HOME, else the platform data dir.
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// TCP port; 0 picks a free one and records it in the config for clients.
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (default 127.0.0.1).
    #[arg(long)]
    pub listen: Option<String>,
}

pub fn run(args: ServerArgs) -> Result<(), CliError> {
    crate::server::run(args).map_err(|e| CliError {
        message: e.to_string(),
        exit_code: super::EXIT_FAILURE,
    })
}
