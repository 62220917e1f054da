//! `wimguard health`: is the server up and SERVING?

use clap::Args;
use serde_json::json;
use tonic_health::pb::health_check_response::ServingStatus;

use super::output::print_json;
use super::{CliError, ClientOptions, EXIT_UNREACHABLE};

#[derive(Args, Debug, Clone)]
pub struct HealthArgs {
    #[command(flatten)]
    pub client: ClientOptions,
}

/// Exit 0 only when the server reports SERVING; 6 when it is unreachable or
/// not serving.
pub async fn run(args: HealthArgs) -> Result<(), CliError> {
    let client = args.client.client()?;
    let address = client.settings().address.clone();
    let status = client.health().await?;
    let word = status.as_str_name();
    if args.client.json {
        print_json(&json!({ "address": address, "status": word.to_ascii_lowercase() }));
    } else {
        outln!("{word} ({address})");
    }
    match status {
        ServingStatus::Serving => Ok(()),
        // The status is already printed on stdout; say why the exit code is not 0.
        _ => Err(CliError {
            message: format!("wimguard server at {address} is {word}, not SERVING"),
            exit_code: EXIT_UNREACHABLE,
        }),
    }
}
