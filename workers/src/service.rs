//! `certflow worker`: the worker service, which runs until SIGTERM (ECS stopping the task)
//! or Ctrl-C and then drains.

use crate::aws;
use crate::cli::{Global, WorkerArgs};

/// Consumes export requests, ACM events and step tasks until told to stop.
pub(crate) async fn run(
    sdk: &aws_config::SdkConfig,
    global: &Global,
    args: &WorkerArgs,
) -> anyhow::Result<()> {
    let jobs = aws::jobs(sdk, global).await?;
    let intakes = aws::intakes(sdk, &global.names).await?;
    let worker = engine::Worker::new(jobs, args.config());
    worker.run_with_intakes(intakes, shutdown_signal()).await;
    Ok(())
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
