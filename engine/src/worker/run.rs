//! The life cycle: start the pumps and the sweeper, stop receiving on shutdown, let
//! in-flight steps finish within the budget, then release what is left.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

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
        self.run_with_intakes(intake.into_iter().collect(), shutdown)
            .await;
    }

    /// Like [`Worker::run`], and also consumes every queue in `intakes`, each with its own
    /// parser (e.g. export requests on one queue, ACM events on another). Each queue, the
    /// task queue included, has its own pump; the pumps share the worker's `concurrency`
    /// slots.
    pub async fn run_with_intakes(&self, intakes: Vec<Intake>, shutdown: impl Future<Output = ()>) {
        let cfg = self.config();
        let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        *self
            .inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&permits));
        let mut sweeper = JoinSet::new();
        if !cfg.sweep_every.is_zero() {
            let me = self.clone();
            sweeper.spawn(async move { me.sweep_forever().await });
        }
        info!(worker = %cfg.id, intakes = intakes.len(), "worker started");
        let (stop_tx, stop_rx) = watch::channel(false);
        let share = pump_share(cfg.batch, cfg.concurrency, 1 + intakes.len());
        // The task queue's pump first: its handler set is the one the others join.
        let pumps = std::iter::once(None)
            .chain(intakes.into_iter().map(Some))
            .map(|intake| {
                Box::pin(self.pump(intake, stop_rx.clone(), Arc::clone(&permits), share))
                    as Pin<Box<dyn Future<Output = JoinSet<()>> + Send + '_>>
            })
            .collect();
        let stopper = async {
            shutdown.await;
            stop_tx.send_replace(true);
        };
        let (sets, ()) = tokio::join!(join_all(pumps), stopper);
        sweeper.abort_all();
        let mut sets = sets.into_iter();
        let mut handlers = sets.next().unwrap_or_default();
        // One set to drain: move each intake pump's handlers' completion into the task set.
        for mut set in sets {
            while let Some(done) = set.try_join_next() {
                report_panic(done);
            }
            handlers.spawn(async move {
                while let Some(done) = set.join_next().await {
                    report_panic(done);
                }
            });
        }
        self.drain(&mut handlers).await;
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

/// How many slots each of `pumps` pumps may reserve for one receive: a fair share of
/// `concurrency` (and no more than a receive's `batch`), so that one queue's receive never
/// keeps the other queues' messages waiting. At least one: with fewer slots than pumps,
/// the queues take turns, each waiting out the others' long polls (a warning says so).
pub(super) fn pump_share(batch: usize, concurrency: usize, pumps: usize) -> usize {
    let pumps = pumps.max(1);
    if concurrency < pumps {
        warn!(
            concurrency,
            queues = pumps,
            "fewer slots than queues: each queue waits out the others' long polls; use a concurrency of at least the number of queues"
        );
    }
    batch.min(concurrency / pumps).max(1)
}

/// Runs every future in `futures` to completion in this task, and returns their outputs
/// in order (the pumps run side by side, as `tokio::join!` runs a fixed number).
async fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + Send + '_>>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if out.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *out = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Logs a handler that panicked; its message is not deleted, so it is handled again.
pub(super) fn report_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!("a task handler panicked; its message will be handled again: {e}");
        }
    }
}
