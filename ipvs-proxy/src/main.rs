//! `ipvs-proxy`: see the crate documentation of the `ipvs_proxy` library.

use std::process::ExitCode;

use clap::Parser;
use ipvs_proxy::settings::{Cli, Settings};
use ipvs_proxy::{daemon, descriptors, telemetry};

/// mimalloc rather than the C library's allocator: the daemon allocates and frees millions of
/// small objects while it loads and programs a large cluster, often freeing on another thread
/// than the one that allocated (the parsers' objects are freed by the engine). See the
/// README's dependency notes for the figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    // Before the daemon opens its sockets and the HTTP endpoints size their share of it.
    descriptors::raise_limit_at_start();
    match daemon::run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ipvs-proxy cannot run");
            eprintln!("ipvs-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}
