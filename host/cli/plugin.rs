//! `wimguard plugin`: install, list, show, enable, disable and remove plugins.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::output::{print_json, time_human, time_json, Table};
use super::{CliError, ClientOptions, EXIT_NOT_FOUND, EXIT_USAGE};
use crate::api::v1 as pb;
use crate::plugins::registry::MAX_PLUGIN_BYTES;

#[derive(Args, Debug, Clone)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub command: PluginCommand,
    #[command(flatten)]
    pub client: ClientOptions,
}

#[derive(Subcommand, Debug, Clone)]
pub enum PluginCommand {
    /// Install (or upgrade) a plugin from a file: a WebAssembly component
    /// built with wimguard-sdk, or with --native a trusted shared library.
    Install {
        file: PathBuf,
        /// The file is a native shared library; config.yaml must trust its sha256.
        #[arg(long)]
        native: bool,
    },
    /// List the registered plugins.
    List,
    /// Show one plugin.
    Show { name: String },
    /// Allow backups to use a plugin.
    Enable { name: String },
    /// Stop backups from using a plugin (archives it compressed cannot be read while disabled).
    Disable { name: String },
    /// Unregister a plugin and delete its file (bundled plugins can only be
    /// disabled). A codec plugin that compressed archives is kept unless --force.
    Remove {
        name: String,
        /// Remove a codec plugin even though archives need it to be restored.
        #[arg(long)]
        force: bool,
    },
}

fn kind_word(p: &pb::Plugin) -> &'static str {
    match pb::PluginKind::try_from(p.kind).unwrap_or_default() {
        pb::PluginKind::Codec => "codec",
        pb::PluginKind::Destination => "destination",
        pb::PluginKind::Hook => "hook",
        pb::PluginKind::Unspecified => "unknown",
    }
}

fn runtime_word(p: &pb::Plugin) -> &'static str {
    match pb::PluginRuntime::try_from(p.runtime).unwrap_or_default() {
        pb::PluginRuntime::Wasm => "wasm",
        pb::PluginRuntime::Native => "native",
        pb::PluginRuntime::Unspecified => "unknown",
    }
}

/// The JSON shape of a plugin (`plugin list --json` prints an array of these).
pub fn plugin_json(p: &pb::Plugin) -> Value {
    json!({
        "name": p.name,
        "version": p.version,
        "kind": kind_word(p),
        "runtime": runtime_word(p),
        "enabled": p.enabled,
        "sha256": p.sha256,
        "bundled": p.bundled,
        "api_version": p.api_version,
        "codec_id": p.codec_id,
        "description": p.description,
        "installed_at": time_json(&p.installed_at),
    })
}

fn print_plugin(p: &pb::Plugin) {
    let rows = [
        ("Name", p.name.clone()),
        ("Version", p.version.clone()),
        ("Kind", kind_word(p).into()),
        ("Runtime", runtime_word(p).into()),
        ("Enabled", if p.enabled { "yes" } else { "no" }.into()),
        ("Bundled", if p.bundled { "yes" } else { "no" }.into()),
        ("API", p.api_version.clone()),
        (
            "Codec id",
            if p.codec_id.is_empty() {
                "-".into()
            } else {
                p.codec_id.clone()
            },
        ),
        ("SHA-256", p.sha256.clone()),
        ("Installed", time_human(&p.installed_at)),
        ("Description", p.description.clone()),
    ];
    for (k, v) in rows {
        outln!("{:<12} {v}", format!("{k}:"));
    }
}

pub async fn run(args: PluginArgs) -> Result<(), CliError> {
    let client = args.client.client()?;
    let json = args.client.json;
    let show = |p: &pb::Plugin| {
        if json {
            print_json(&plugin_json(p));
        } else {
            print_plugin(p);
        }
    };
    match args.command {
        PluginCommand::Install { file, native } => {
            let unreadable = |e: std::io::Error| CliError {
                message: format!("cannot read {}: {e}", file.display()),
                exit_code: if e.kind() == std::io::ErrorKind::NotFound {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_USAGE
                },
            };
            let meta = std::fs::metadata(&file).map_err(unreadable)?;
            if !meta.is_file() {
                return Err(CliError {
                    message: format!("{} is not a file", file.display()),
                    exit_code: EXIT_USAGE,
                });
            }
            if meta.len() > MAX_PLUGIN_BYTES as u64 {
                return Err(CliError {
                    message: format!(
                        "{} is {} bytes; plugins may be at most {MAX_PLUGIN_BYTES} bytes",
                        file.display(),
                        meta.len()
                    ),
                    exit_code: EXIT_USAGE,
                });
            }
            let bytes = std::fs::read(&file).map_err(unreadable)?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let p = client.install_plugin(&name, bytes, native).await?;
            if !json {
                outln!(
                    "installed {} {} ({} plugin, {})",
                    p.name,
                    p.version,
                    kind_word(&p),
                    runtime_word(&p)
                );
            }
            show(&p);
        }
        PluginCommand::List => {
            let plugins = client.list_plugins().await?;
            if json {
                print_json(&Value::Array(plugins.iter().map(plugin_json).collect()));
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "VERSION", "KIND", "RUNTIME", "ENABLED", "SHA256", "DESCRIPTION"]);
            for p in &plugins {
                let mut desc = p.description.clone();
                if p.bundled {
                    desc = format!("{desc} (bundled)");
                }
                t.row(vec![
                    p.name.clone(),
                    p.version.clone(),
                    kind_word(p).into(),
                    runtime_word(p).into(),
                    if p.enabled { "yes" } else { "no" }.into(),
                    p.sha256.get(..12).unwrap_or(&p.sha256).into(),
                    desc,
                ]);
            }
            t.print();
        }
        PluginCommand::Show { name } => show(&client.get_plugin(&name).await?),
        PluginCommand::Enable { name } => show(&client.set_plugin_enabled(&name, true).await?),
        PluginCommand::Disable { name } => show(&client.set_plugin_enabled(&name, false).await?),
        PluginCommand::Remove { name, force } => {
            let r = client.remove_plugin(&name, force).await?;
            if json {
                print_json(&r.plugin.as_ref().map(plugin_json).unwrap_or(Value::Null));
            } else {
                outln!("removed plugin {name}");
            }
        }
    }
    Ok(())
}
