//! certflow's worker service, bootstrap and operator CLI, as a library under the thin
//! `certflow` binary (`main.rs`), so that the views and the list merge are unit-tested
//! without an AWS emulator.
//!
//! How a command runs: [`Cli`] parses the command line, [`init_telemetry`] installs
//! logging, and [`run`] builds the AWS clients and dispatches to the command's module;
//! an error comes back to `main.rs`, which prints it and exits 1. The engine and the
//! workflows it drives are described in `docs/architecture.md`.
//!
//! The modules, in the order a command meets them:
//!
//! - [`cli`]: the command line; the shared settings in its `settings`, each command's own
//!   arguments and value parsers in its `commands`.
//! - [`telemetry`]: logs on stderr, OpenTelemetry traces and metrics when configured.
//! - [`aws`]: the SDK configuration (retries, timeouts), the engine handles built on it,
//!   and `certflow bootstrap`.
//! - [`explain`]: what a failed command tells the operator.
//! - [`service`]: `certflow worker`, the worker service, until SIGTERM.
//! - [`submit`]: `certflow submit`, an export request on the intake queue.
//! - [`jobs`]: `certflow jobs list|show|watch|retry|cancel`.
//! - [`follow`]: following a job to its end, for `submit --wait` and `jobs watch`.
//! - [`paging`]: the merge of index pages behind `jobs list`, and its cursor.
//! - [`view`]: how jobs are shown, as tables and timelines for people and as JSON.
//! - [`inventory`]: `certflow inventory list|show`, with each row's drift (ACM's serial,
//!   the servers behind).
//! - [`reconcile`]: `certflow reconcile`: a reconcile run now, followed or not, or what
//!   one would do (`--dry-run`).
//! - [`dlq`]: `certflow dlq list|redrive`.
//! - [`demo`]: `certflow demo`, demo jobs through a running worker.
//! - [`console`]: `certflow console`, the read-only web console over all of the above.

// A worker must not panic on what it reads or is told: every failure is an error value.
// Unit tests may unwrap (a panic there is a failed test).
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![warn(missing_docs, unreachable_pub)]
// The map above links to private modules: read it with `cargo doc
// --document-private-items`. The public API is only what `main.rs` needs.
#![allow(rustdoc::private_intra_doc_links)]

mod aws;
mod cli;
mod console;
mod demo;
mod dlq;
mod explain;
mod follow;
mod import;
mod inventory;
mod jobs;
mod paging;
mod reconcile;
mod servers;
mod service;
mod submit;
mod telemetry;
#[cfg(test)]
mod testing;
mod view;

pub use cli::Cli;
pub use telemetry::Telemetry;

use crate::cli::Command;

/// Installs logging, and OpenTelemetry export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, as
/// the command line asks. Call it before starting the async runtime (the OTLP exporter runs
/// its own thread) and keep the guard until exit: dropping it flushes the exporters.
pub fn init_telemetry(cli: &Cli) -> Telemetry {
    telemetry::init(cli.global.log_format, cli.log_filter())
}

/// An error message as `main.rs` prints it: its lines kept, every other control character
/// escaped, since errors quote what servers and requests said (see `view::printable`).
pub fn error_text(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .split('\n')
        .map(|l| view::printable(l).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs the command of `cli` against the AWS endpoint the environment names. A failure
/// that operators meet first (missing table or queue, unreachable endpoint) comes back as
/// a message that says what to do.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let sdk = aws::sdk_config(&cli.global.aws).await;
    let names = cli.global.names.clone();
    dispatch(&sdk, cli)
        .await
        .map_err(|e| explain::explained(e, &names, &aws::region(&sdk)))
}

async fn dispatch(sdk: &aws_config::SdkConfig, cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    let output = global.output();
    let ctx = jobs::Ctx {
        sdk,
        global,
        store: aws::store(sdk, &global.names),
        output,
    };
    match cli.command {
        Command::Bootstrap(args) => aws::bootstrap(sdk, global, &args, output).await,
        Command::Worker(args) => service::run(sdk, global, &args).await,
        Command::Submit(args) => submit::run(&ctx, &args).await,
        Command::Jobs(cmd) => jobs::run(&ctx, cmd).await,
        Command::Inventory(cmd) => {
            inventory::run(sdk, &global.names.inventory_table, &ctx.store, output, cmd).await
        }
        Command::Reconcile(args) => reconcile::run(&ctx, &args).await,
        Command::Dlq(cmd) => dlq::run(sdk, &global.names, output, cmd).await,
        Command::Demo(args) => demo::run(&aws::jobs(sdk, global).await?, &args).await,
        Command::Console(args) => console::run(sdk, global, ctx.store.clone(), &args).await,
    }
}
