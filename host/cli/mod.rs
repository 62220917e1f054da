//! The command line: `wimguard server` (the daemon), the client commands
//! that talk to it over gRPC (`health`, `backup`, `backups`, `restore`,
//! `snapshots`, `env`, `stats`, `plugin`), and the offline `archive` toolbox.
//!
//! Exit codes (also in `wimguard --help`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure, including a backup/restore job that ended FAILED or CANCELLED |
//! | 2 | bad usage (also INVALID_ARGUMENT from the server) |
//! | 3 | archive damaged (DATA_LOSS, failed verify, invalid WIM offline) |
//! | 4 | not found (NOT_FOUND: backup, snapshot, source, image, path) |
//! | 5 | unauthenticated (the server refused the token) |
//! | 6 | server unreachable or unavailable (also not SERVING), or a store it needs is down |
//! | 7 | conflict (ABORTED, FAILED_PRECONDITION, ALREADY_EXISTS) |
//! | 8 | backup, capture, restore or extract done, with warnings (entries skipped, a hook failed) |
//! | 130 | interrupted by Ctrl-C |

/// `println!` for command output: a reader that went away (`… | head`)
/// ends the process quietly, as `ls` would, instead of a panic. (SIGPIPE
/// stays ignored, as Rust sets it: a client's sockets must see EPIPE as an
/// error, not die of it.)
macro_rules! outln {
    () => {
        $crate::cli::output::write_stdout(format_args!(""), true)
    };
    ($($t:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($t)*), true)
    };
}

/// `print!` for command output; see [`outln!`].
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::output::write_stdout(format_args!($($t)*), false)
    };
}

pub mod archive;
pub mod backup;
pub mod backups;
pub mod catalog;
pub mod env;
pub mod health;
pub mod output;
pub mod plugin;
pub mod restore;
pub mod schedule;
pub mod server;
pub mod snapshots;
pub mod stats;

use std::future::Future;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use tonic::Code;

use crate::client::{Client, ClientError, ClientSettings};
use crate::wim::WimError;

pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_DAMAGED: i32 = 3;
pub const EXIT_NOT_FOUND: i32 = 4;
pub const EXIT_UNAUTHENTICATED: i32 = 5;
pub const EXIT_UNREACHABLE: i32 = 6;
pub const EXIT_CONFLICT: i32 = 7;
/// The backup, capture, restore or extract was done, with warnings: some
/// entries were skipped (unreadable, gone, changed while read, not
/// restorable here), attributes could not be set, or a hook failed. As
/// with restic's and borg's exit codes, a schedule or script can tell an
/// incomplete result from a complete one.
pub const EXIT_WARNINGS: i32 = 8;
pub const EXIT_INTERRUPTED: i32 = 130;

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    failure (including a backup or restore that ended failed or cancelled)
  2    bad usage
  3    archive damaged (checksum or structure; DATA_LOSS)
  4    not found (backup, snapshot, source, image or path; NOT_FOUND)
  5    unauthenticated (the server refused the token)
  6    server unreachable or unavailable, or an object store it needs is down (try again later)
  7    conflict (e.g. another backup to the same archive is running)
  8    done, with warnings (a backup or restore skipped entries, a hook failed: each one printed)
  130  interrupted by Ctrl-C

Client commands find the server through HOME/config.yaml (written by `wimguard server`);
--server and --token override it.";

#[derive(Parser)]
#[command(name = "wimguard", version, about = "Backups as real WIM archives", after_help = EXIT_CODES_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (owns the catalog; other commands talk to it).
    Server(server::ServerArgs),
    /// Check the server answers and is SERVING (exit 0 only then).
    Health(health::HealthArgs),
    /// Back up a directory into a WIM archive (a new image; appends when the archive exists).
    Backup(backup::BackupArgs),
    /// List, show, watch, cancel and delete backups.
    Backups(backups::BackupsArgs),
    /// Restore a backup's snapshot, or chosen paths of it, into a directory.
    Restore(restore::RestoreArgs),
    /// List, browse, compare, verify and delete snapshots (the images of archives).
    Snapshots(snapshots::SnapshotsArgs),
    /// Show facts about the running server (version, paths, codecs).
    Env(env::EnvArgs),
    /// Show totals over the catalog (bytes, dedupe and compression ratios, sources).
    Stats(stats::StatsArgs),
    /// Install, list, show, enable, disable and remove plugins (codecs, hooks).
    Plugin(plugin::PluginArgs),
    /// Rebuild the catalog from the archives (disaster recovery).
    Catalog(catalog::CatalogArgs),
    /// Create, list, change and run scheduled backups.
    Schedule(schedule::ScheduleArgs),
    /// Remove snapshots by retention rules (restic's keep-… options); --dry-run to see first.
    Forget(schedule::ForgetArgs),
    /// Work on WIM files directly, without a server (disaster recovery, benchmarks).
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// (Internal) The server's plugin compiler: a component on stdin, its
    /// compiled form on stdout, under limits the server set.
    #[command(name = crate::plugins::compile::COMPILE_SUBCOMMAND, hide = true)]
    InternalCompilePlugin,
}

/// Options every client command takes (also after its subcommand).
#[derive(Args, Debug, Clone, Default)]
pub struct ClientOptions {
    /// Home directory holding config.yaml. Default: $WIMGUARD_HOME, else the platform data dir.
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Server address (HOST:PORT or http://HOST:PORT) instead of service.client.address from the config.
    #[arg(long, global = true, value_name = "ADDR")]
    pub server: Option<String>,
    /// Bearer token instead of appSecret from the config.
    #[arg(long, global = true, value_name = "T")]
    pub token: Option<String>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

impl ClientOptions {
    /// A client for the server these options name (connects on first use).
    pub fn client(&self) -> Result<Client, CliError> {
        let settings = ClientSettings::resolve(self.home.as_deref(), self.server.as_deref(), self.token.as_deref())?;
        Ok(Client::new(settings))
    }
}

/// Runs an async command on a fresh single-threaded runtime.
fn block_on(f: impl Future<Output = Result<(), CliError>>) -> Result<(), CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError {
            message: format!("cannot start the async runtime: {e}"),
            exit_code: EXIT_FAILURE,
        })?;
    rt.block_on(f)
}

/// Maps an offline-toolbox error to its exit code.
pub fn exit_code(e: &WimError) -> i32 {
    match e {
        WimError::Corrupt(_) | WimError::Invalid(_) => EXIT_DAMAGED,
        WimError::NotFound(_) => EXIT_NOT_FOUND,
        WimError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
        WimError::Io(e) if e.kind() == std::io::ErrorKind::AlreadyExists => EXIT_CONFLICT,
        WimError::Io(e) if e.kind() == std::io::ErrorKind::InvalidInput => EXIT_USAGE,
        WimError::Locked(_) => EXIT_CONFLICT,
        _ => EXIT_FAILURE,
    }
}

/// Maps a client error to its exit code.
pub fn client_exit_code(e: &ClientError) -> i32 {
    match e {
        ClientError::Config(_) => EXIT_FAILURE,
        ClientError::Unreachable { .. } | ClientError::NotServing { .. } | ClientError::NotWimguard { .. } => {
            EXIT_UNREACHABLE
        }
        // The server could not prove who it is (or the client cannot tell).
        ClientError::Tls { .. } => EXIT_UNAUTHENTICATED,
        ClientError::Rpc { code, .. } => status_exit_code(*code),
    }
}

/// Maps a gRPC status code to an exit code.
pub fn status_exit_code(code: Code) -> i32 {
    match code {
        Code::Ok => 0,
        Code::InvalidArgument | Code::OutOfRange => EXIT_USAGE,
        Code::DataLoss => EXIT_DAMAGED,
        Code::NotFound => EXIT_NOT_FOUND,
        Code::Unauthenticated => EXIT_UNAUTHENTICATED,
        Code::Unavailable => EXIT_UNREACHABLE,
        Code::Aborted | Code::FailedPrecondition | Code::AlreadyExists => EXIT_CONFLICT,
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
        Command::InternalCompilePlugin => return crate::plugins::compile::compiler_child(),
        Command::Server(args) => server::run(args),
        Command::Archive(cmd) => archive::run(cmd),
        Command::Health(args) => block_on(health::run(args)),
        Command::Backup(args) => block_on(backup::run(args)),
        Command::Backups(args) => block_on(backups::run(args)),
        Command::Restore(args) => block_on(restore::run(args)),
        Command::Snapshots(args) => block_on(snapshots::run(args)),
        Command::Env(args) => block_on(env::run(args)),
        Command::Stats(args) => block_on(stats::run(args)),
        Command::Catalog(args) => block_on(catalog::run(args)),
        Command::Schedule(args) => block_on(schedule::run(args)),
        Command::Forget(args) => block_on(schedule::forget(args)),
        Command::Plugin(args) => block_on(plugin::run(args)),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            if !e.message.is_empty() {
                let level = if e.exit_code == EXIT_WARNINGS {
                    "warning"
                } else {
                    "error"
                };
                eprintln!("wimguard: {level}: {e}");
            }
            e.exit_code
        }
    }
}

/// An error on its way to the user, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub exit_code: i32,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl CliError {
    /// Exit code 8 for work that was done with `warnings` warnings
    /// (already printed, one per line); `what` names it.
    pub fn with_warnings(what: &str, warnings: usize) -> CliError {
        CliError {
            message: format!(
                "{what} completed with {warnings} warning{} (above)",
                if warnings == 1 { "" } else { "s" }
            ),
            exit_code: EXIT_WARNINGS,
        }
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

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError {
            exit_code: client_exit_code(&e),
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

    pub fn failure(msg: impl Into<String>) -> Self {
        CliError {
            message: msg.into(),
            exit_code: EXIT_FAILURE,
        }
    }

    /// An archive found damaged (exit 3).
    pub fn damaged(msg: impl Into<String>) -> Self {
        CliError {
            message: msg.into(),
            exit_code: EXIT_DAMAGED,
        }
    }

    pub fn interrupted(msg: impl Into<String>) -> Self {
        CliError {
            message: msg.into(),
            exit_code: EXIT_INTERRUPTED,
        }
    }
}

/// A path made absolute against the client's working directory (the
/// server's differs), as the UTF-8 string the API carries.
/// An archive as the catalog names it, for filters: `PLUGIN:NAME` (a
/// remote archive, as listings show it) stays as given; a local path
/// becomes absolute, with symbolic links to it and to its directory
/// followed, as the server records it.
pub fn archive_filter(path: &Path, what: &str) -> Result<String, CliError> {
    let text = path.to_string_lossy();
    if let Some((plugin, name)) = text.split_once(':') {
        if !plugin.is_empty() && !name.is_empty() && !text.contains('/') {
            return Ok(text.into_owned());
        }
    }
    let abs = PathBuf::from(absolute_path(path, what)?);
    absolute_path(&crate::wim::fsutil::real_file_path(&abs), what)
}

pub fn absolute_path(path: &Path, what: &str) -> Result<String, CliError> {
    if path.as_os_str().is_empty() {
        return Err(CliError::usage(format!("the {what} path is empty")));
    }
    let abs = std::path::absolute(path)
        .map_err(|e| CliError::failure(format!("cannot resolve the {what} path {}: {e}", path.display())))?;
    // Drops `.` components and trailing slashes; `..` is kept (symlinks make it non-lexical).
    let abs: PathBuf = abs.components().collect();
    abs.into_os_string().into_string().map_err(|p| {
        CliError::usage(format!(
            "the {what} path {} is not valid UTF-8",
            Path::new(&p).display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn status_codes_map_to_documented_exit_codes() {
        assert_eq!(status_exit_code(Code::DataLoss), 3);
        assert_eq!(status_exit_code(Code::NotFound), 4);
        assert_eq!(status_exit_code(Code::Unauthenticated), 5);
        assert_eq!(status_exit_code(Code::Unavailable), 6);
        for c in [Code::Aborted, Code::FailedPrecondition, Code::AlreadyExists] {
            assert_eq!(status_exit_code(c), 7);
        }
        assert_eq!(status_exit_code(Code::InvalidArgument), 2);
        assert_eq!(status_exit_code(Code::PermissionDenied), 1);
        assert_eq!(status_exit_code(Code::Cancelled), 1);
        assert_eq!(client_exit_code(&ClientError::Unreachable { address: "x".into() }), 6);
    }

    #[test]
    fn relative_paths_become_absolute() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            absolute_path(Path::new("a/./b/"), "source").unwrap(),
            cwd.join("a/b").to_str().unwrap()
        );
        assert_eq!(absolute_path(Path::new("/x/y"), "source").unwrap(), "/x/y");
        assert!(absolute_path(Path::new(""), "source").is_err());
    }

    #[test]
    fn global_options_parse_after_subcommands() {
        let cli =
            Cli::try_parse_from(["wimguard", "backups", "list", "--json", "--home", "/h", "--limit", "5"]).unwrap();
        let Command::Backups(args) = cli.command else {
            panic!("not backups")
        };
        assert!(args.client.json);
        assert_eq!(args.client.home.as_deref(), Some(Path::new("/h")));
    }

    #[test]
    fn help_documents_exit_codes() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for code in ["130", "unauthenticated", "conflict", "server unreachable"] {
            assert!(help.contains(code), "{code} missing in --help");
        }
    }
}
