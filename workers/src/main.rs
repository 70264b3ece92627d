//! The `certflow` binary: a thin shell over the engine and the workflows.

mod aws;
mod cli;
mod demo;
mod jobs;
mod submit;
mod telemetry;
mod view;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.global.log_format, &cli.global.log);
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let sdk = aws::sdk_config().await;
    let global = &cli.global;
    match cli.command {
        Command::Bootstrap => aws::bootstrap(&sdk, &global.names).await,
        Command::Worker(args) => {
            let jobs = aws::jobs(&sdk, global).await?;
            let intake = aws::intake(&sdk, &global.names).await?;
            let worker = engine::Worker::new(jobs, args.config());
            worker
                .run_with_intake(Some(intake), shutdown_signal())
                .await;
            Ok(())
        }
        Command::Submit(args) => {
            let jobs = aws::jobs(&sdk, global).await?;
            submit::run(&sdk, &jobs, &global.names.intake_queue, &args).await
        }
        Command::Jobs(cmd) => jobs::run(&aws::jobs(&sdk, global).await?, cmd).await,
        Command::Demo(args) => demo::run(&aws::jobs(&sdk, global).await?, &args).await,
    }
}

/// Completes on SIGTERM (ECS stopping the task) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C received; shutting down"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
