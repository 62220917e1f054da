//! `wimguard server`: runs the daemon in the foreground.

use std::path::PathBuf;

use clap::Args;

use super::CliError;

#[derive(Args, Debug, Clone)]
pub struct ServerArgs {
    /// Home directory (config, catalog, plugin cache, TLS files). Default: $WIMGUARD_HOME, else the platform data dir.
    #[arg(long)]
    pub home: Option<PathBuf>,
    /// TCP port; 0 picks a free one and records it in the config for clients.
    #[arg(long)]
    pub port: Option<u16>,
    /// Address to listen on (default 127.0.0.1). Beyond loopback the server
    /// needs TLS (service.server.tls in config.yaml) or --insecure.
    #[arg(long)]
    pub listen: Option<String>,
    /// Serve TLS with a self-signed certificate generated into HOME/tls/ on
    /// first start (same as `service.server.tls: {selfSigned: true}`).
    #[arg(long)]
    pub tls_self_signed: bool,
    /// Allow listening beyond loopback without TLS: the token and every
    /// request cross the network in clear text. Only for trusted networks.
    #[arg(long)]
    pub insecure: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464;
    /// port 0 picks one and logs it). Same as service.server.metricsListen.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

pub fn run(args: ServerArgs) -> Result<(), CliError> {
    let options = crate::server::ServerOptions {
        home: args.home,
        port: args.port,
        listen: args.listen,
        tls_self_signed: args.tls_self_signed,
        insecure: args.insecure,
        metrics_listen: args.metrics_listen,
    };
    crate::server::run(options).map_err(|e| CliError {
        message: e.to_string(),
        exit_code: super::EXIT_FAILURE,
    })
}
