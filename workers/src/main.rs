//! The `certflow` binary: parses the command line, installs logging and runs the command
//! with the `certflow` library, which does everything else.
//!
//! Exit codes: 0 success; 1 the command failed or the job it followed did not succeed;
//! 2 the command line was wrong (clap's own).
// A worker must not panic on what it reads or is told: every failure is an error value.
// Unit tests may unwrap (a panic there is a failed test).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::process::ExitCode;

use certflow::Cli;
use clap::Parser;

// Most of a busy worker's allocations are the AWS SDK's, small and short-lived, one set per
// call: mimalloc serves them with less CPU than the system allocator (docs/benchmarks-profile.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime starts; the guard flushes the exporters when dropped at exit,
    // after the runtime.
    let _telemetry = certflow::init_telemetry(&cli);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = cli.runtime_threads() {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(certflow::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", certflow::error_text(&e));
            ExitCode::FAILURE
        }
    }
}
