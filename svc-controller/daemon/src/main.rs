//! `ipvs-proxy`: see the crate documentation of the `ipvs_proxy` library.

use std::process::ExitCode;

use clap::Parser;
use ipvs_proxy::settings::{Cli, Settings};
use ipvs_proxy::{daemon, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(&cli, daemon::hostname) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ipvs-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = telemetry::logging::init(settings.log_format, settings.log_level.as_deref()) {
        eprintln!("ipvs-proxy: {e}");
        return ExitCode::from(2);
    }
    match daemon::run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ipvs-proxy cannot run");
            eprintln!("ipvs-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
