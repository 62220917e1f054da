//! The command line. Exit codes: 0 success, 1 failure, 2 bad usage,
//! 3 archive damaged (checksum or structure), 4 not found (image, path).

pub mod archive;

use clap::{Parser, Subcommand};

use crate::wim::WimError;

#[derive(Parser)]
#[command(name = "wimguard", version, about = "Backups as real WIM archives")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Work on WIM files directly, without a server (disaster recovery, benchmarks).
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
}

pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_DAMAGED: i32 = 3;
pub const EXIT_NOT_FOUND: i32 = 4;

/// Maps an error to its exit code.
pub fn exit_code(e: &WimError) -> i32 {
    match e {
        WimError::Corrupt(_) | WimError::Invalid(_) => EXIT_DAMAGED,
        WimError::NotFound(_) => EXIT_NOT_FOUND,
        _ => EXIT_FAILURE,
    }
}

pub fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.command {
        Command::Archive(cmd) => archive::run(cmd),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wimguard: error: {e}");
            e.exit_code
        }
    }
}

/// An error on its way to the user, with the exit code it maps to.
pub struct CliError {
    pub message: String,
    pub exit_code: i32,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<WimError> for CliError {
    fn from(e: WimError) -> Self {
        CliError {
            exit_code: exit_code(&e),
            message: e.to_string(),
        }
    }
}

impl CliError {
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError {
            message: msg.into(),
            exit_code: EXIT_USAGE,
        }
    }
}
