//! The `certflow` binary: a thin shell over the engine and the workflows.
//!
//! Exit codes: 0 success; 1 the command failed or the job it followed did not succeed;
//! 2 the command line was wrong (clap's own).

mod aws;
mod cli;
mod demo;
mod dlq;
mod follow;
mod inventory;
mod jobs;
mod paging;
mod submit;
mod telemetry;
mod view;

use std::process::ExitCode;

use clap::Parser;
use engine::{JobsError, QueueError, StoreError};

use crate::cli::{Cli, Command, Names};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Worker(_) => "info",
        _ => "warn",
    };
    // Before the runtime starts (the OTLP exporter runs its own thread). `init` returns the
    // guard that flushes the exporters when dropped at exit, after the runtime.
    let _telemetry = telemetry::init(
        cli.global.log_format,
        cli.global.log.as_deref().unwrap_or(default_log),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let sdk = aws::sdk_config(&cli.global.aws).await;
        let names = cli.global.names.clone();
        match run(&sdk, cli).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                match explain(&e, &names, &aws::region(&sdk)) {
                    Some(msg) => eprintln!("error: {msg}"),
                    None => eprintln!("error: {e:#}"),
                }
                ExitCode::FAILURE
            }
        }
    })
}

async fn run(sdk: &aws_config::SdkConfig, cli: Cli) -> anyhow::Result<()> {
    let global = &cli.global;
    let output = global.output();
    let ctx = jobs::Ctx {
        sdk,
        global,
        store: aws::store(sdk, &global.names),
        output,
    };
    match cli.command {
        Command::Bootstrap => aws::bootstrap(sdk, &global.names, output).await,
        Command::Worker(args) => {
            let jobs = aws::jobs(sdk, global).await?;
            let intake = aws::intake(sdk, &global.names).await?;
            let worker = engine::Worker::new(jobs, args.config());
            worker
                .run_with_intake(Some(intake), shutdown_signal())
                .await;
            Ok(())
        }
        Command::Submit(args) => submit::run(&ctx, &args).await,
        Command::Jobs(cmd) => jobs::run(&ctx, cmd).await,
        Command::Inventory(cmd) => {
            inventory::run(sdk, &global.names.inventory_table, &ctx.store, output, cmd).await
        }
        Command::Dlq(cmd) => dlq::run(sdk, &global.names, output, cmd).await,
        Command::Demo(args) => demo::run(&aws::jobs(sdk, global).await?, &args).await,
    }
}

/// A message that says what to do, for the errors operators meet first: a table or queue
/// that does not exist (bootstrap not run, wrong name, wrong region or endpoint).
fn explain(e: &anyhow::Error, names: &Names, region: &str) -> Option<String> {
    for cause in e.chain() {
        let store = cause.downcast_ref::<StoreError>().or_else(|| {
            match cause.downcast_ref::<JobsError>() {
                Some(JobsError::Store(s)) => Some(s),
                _ => None,
            }
        });
        if let Some(StoreError::TableNotFound { table }) = store {
            let setting = if *table == names.inventory_table {
                "CERTFLOW_INVENTORY_TABLE (--inventory-table)"
            } else {
                "CERTFLOW_JOBS_TABLE (--jobs-table)"
            };
            return Some(format!(
                "table {table} not found in {region}{} — run `certflow bootstrap` or check {setting}",
                endpoint_note()
            ));
        }
        let queue = cause.downcast_ref::<QueueError>().or_else(|| {
            match cause.downcast_ref::<JobsError>() {
                Some(JobsError::Queue(q)) => Some(q),
                _ => None,
            }
        });
        if let Some(QueueError::QueueNotFound { queue }) = queue {
            let base = queue
                .strip_suffix(engine::schema::DLQ_SUFFIX)
                .unwrap_or(queue);
            let setting = if base == names.intake_queue {
                "CERTFLOW_INTAKE_QUEUE (--intake-queue)"
            } else {
                "CERTFLOW_TASKS_QUEUE (--tasks-queue)"
            };
            return Some(format!(
                "queue {queue} not found in {region}{} — run `certflow bootstrap` or check {setting}",
                endpoint_note()
            ));
        }
    }
    let text = format!("{e:#}");
    if text.contains("dispatch failure") || text.contains("connection failed") {
        return Some(format!(
            "{text}\n  cannot reach AWS{}: check AWS_ENDPOINT_URL, AWS_REGION ({region}) and the network",
            endpoint_note()
        ));
    }
    None
}

/// ` at <endpoint>` when AWS_ENDPOINT_URL points somewhere other than AWS.
fn endpoint_note() -> String {
    std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .map(|u| format!(" at {u}"))
        .unwrap_or_default()
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
