//! The life cycle: start the pumps and the sweeper, stop receiving on shutdown, let
//! in-flight steps finish within the budget, then release what is left.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::config::RELEASE_GRACE;
use super::{Intake, Phase, Worker};

impl Worker {
    /// Runs until `shutdown` completes: receives task messages, handles them with bounded
    /// concurrency and sweeps for lost wake-ups. On shutdown it stops receiving, lets
    /// in-flight steps finish within the budget, then releases what is left, and returns.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        self.run_with_intake(None, shutdown).await;
    }

    /// Like [`Worker::run`], and also consumes an intake queue: each intake message is
    /// turned into a job by `intake.parse` and run at once (see [`Worker::start`]).
    pub async fn run_with_intake(
        &self,
        intake: Option<Intake>,
        shutdown: impl Future<Output = ()>,
    ) {
        let cfg = self.config();
        let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        let mut sweeper = JoinSet::new();
        if !cfg.sweep_every.is_zero() {
            let me = self.clone();
            sweeper.spawn(async move { me.sweep_forever().await });
        }
        info!(worker = %cfg.id, intake = intake.is_some(), "worker started");
        let (stop_tx, stop_rx) = watch::channel(false);
        // Each pump may hold at most its share of the slots while it receives, so that one
        // queue's receive never keeps the other queue's messages waiting.
        let pumps = if intake.is_some() { 2 } else { 1 };
        if cfg.concurrency < pumps {
            warn!(
                concurrency = cfg.concurrency,
                "one slot for two queues: each waits out the other's long poll; use a concurrency of 2 or more"
            );
        }
        let share = cfg.batch.min(cfg.concurrency / pumps).max(1);
        let tasks = self.pump(None, stop_rx.clone(), Arc::clone(&permits), share);
        let intake_pump = async {
            match intake {
                Some(i) => {
                    self.pump(Some(i), stop_rx, Arc::clone(&permits), share)
                        .await
                }
                None => JoinSet::new(),
            }
        };
        let stopper = async {
            shutdown.await;
            stop_tx.send_replace(true);
        };
        let (mut a, mut b, ()) = tokio::join!(tasks, intake_pump, stopper);
        sweeper.abort_all();
        while let Some(done) = b.try_join_next() {
            report_panic(done);
        }
        // One set to drain: move the intake handlers' completion into the task set.
        a.spawn(async move {
            while let Some(done) = b.join_next().await {
                report_panic(done);
            }
        });
        self.drain(&mut a).await;
        info!(worker = %cfg.id, "worker stopped");
    }

    async fn drain(&self, handlers: &mut JoinSet<()>) {
        let cfg = self.config();
        self.inner.phase.send_replace(Phase::Draining);
        info!(
            in_flight = handlers.len(),
            budget_s = cfg.shutdown_budget.as_secs(),
            "draining"
        );
        let budget = tokio::time::sleep(cfg.shutdown_budget);
        tokio::pin!(budget);
        loop {
            tokio::select! {
                next = handlers.join_next() => match next {
                    Some(done) => report_panic(done),
                    None => return,
                },
                _ = &mut budget => break,
            }
        }
        // Out of time: tell the steps still running to let go, and give them a moment to
        // release their leases so that another worker continues at once.
        self.inner.phase.send_replace(Phase::Releasing);
        warn!(
            in_flight = handlers.len(),
            "shutdown budget spent; releasing leases"
        );
        let grace = tokio::time::sleep(RELEASE_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = handlers.join_next() => match next {
                    Some(done) => report_panic(done),
                    None => return,
                },
                _ = &mut grace => {
                    handlers.abort_all();
                    return;
                }
            }
        }
    }
}

/// Logs a handler that panicked; its message is not deleted, so it is handled again.
pub(super) fn report_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!("a task handler panicked; its message will be handled again: {e}");
        }
    }
}
