//! The worker runtime: receive task messages, take leases, run steps, commit, send the next
//! task, and sweep for lost wake-ups.
//!
//! The runtime carries out the task protocol of `docs/architecture.md` (*Task protocol*);
//! what a job becomes after each step is decided by [`crate::transition`], never here. One
//! file per mechanism:
//!
//! - `config` — [`WorkerConfig`] and the runtime's fixed margins, each with its reason;
//! - `run` — the life cycle: start the pumps and the sweeper, stop on shutdown, drain;
//! - `pump` — slots and receives: how messages come in without waiting inside the worker;
//! - `task` — the run-a-task path, top to bottom: triage, lease, run steps, commit, hand on;
//! - `lease` — lease upkeep: heartbeats, release at shutdown, and when a message may be
//!   deleted;
//! - `sweeper` — the last line of defence against lost wake-ups;
//! - `metrics` — what each commit tells the engine's metrics.

mod commit;
mod config;
mod hold;
mod lease;
mod metrics;
mod pump;
mod run;
mod sweeper;
mod task;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::backend::{Delivery, TaskQueue};
use crate::job::{JobId, Millis};
use crate::ops::{Jobs, NewJob};

pub use config::{WorkerConfig, DEFAULT_HOLD_WAITS};

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// Stop receiving and stop fusing steps; in-flight steps finish.
    Draining,
    /// The budget is spent: abandon steps, release leases, make messages visible again.
    Releasing,
}

struct Inner {
    jobs: Jobs,
    config: WorkerConfig,
    phase: watch::Sender<Phase>,
    /// Numbers the handlers of this worker, for their lease tokens.
    handlers: AtomicU64,
    /// The slots of the running worker (set by `run_with_intakes`), so that a task can
    /// tell whether the worker is busy before it holds a wait.
    slots: std::sync::Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    /// The jobs this worker holds in a wait (rule 13), by job: the step they wait at and
    /// how to end the wait early, so that a wake-up received here reaches them.
    held: std::sync::Mutex<std::collections::HashMap<JobId, Arc<hold::HeldWait>>>,
}

/// A worker runtime. Cheap to clone; clones share the shutdown state.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

/// Turns an intake message into a job or a wake-up, or says why it cannot be either (the
/// message then goes to the intake queue's dead-letter queue with that reason).
pub type IntakeParser = Arc<dyn Fn(&Delivery) -> Result<Intent, String> + Send + Sync>;

/// What an intake message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// A new job (or, for a message delivered again, the job it made).
    Start(NewJob),
    /// Wake a job waiting on a timer ([`crate::Jobs::wake`]).
    Wake(Signal),
}

impl From<NewJob> for Intent {
    fn from(new: NewJob) -> Self {
        Intent::Start(new)
    }
}

/// A wake-up for one job: what its step waits for has happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// The job.
    pub job: JobId,
    /// The step it should be waiting at; a job anywhere else is not woken.
    pub step: String,
    /// What happened, for the history.
    pub reason: String,
}

/// An intake queue and how to read it.
#[derive(Clone)]
pub struct Intake {
    /// The queue producers send requests to.
    pub queue: Arc<dyn TaskQueue>,
    /// The parser.
    pub parse: IntakeParser,
}

impl Worker {
    /// A worker over the store and task queue of `jobs`.
    pub fn new(jobs: Jobs, config: WorkerConfig) -> Self {
        let (phase, _) = watch::channel(Phase::Running);
        Worker {
            inner: Arc::new(Inner {
                jobs,
                config,
                phase,
                handlers: AtomicU64::new(0),
                slots: std::sync::Mutex::new(None),
                held: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        }
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    /// The job operations this worker uses.
    pub fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    fn config(&self) -> &WorkerConfig {
        &self.inner.config
    }

    /// Whether a task may hold a wait (rule 13 of [`crate::transition`]) now: at least a
    /// quarter of the worker's slots are free. A held wait keeps its slot, so under load
    /// waits go through the queue and the slot serves the next message instead.
    fn idle_enough_to_hold(&self) -> bool {
        let slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match slots {
            Some(slots) => slots.available_permits() * 4 >= self.config().concurrency.max(1),
            // Steps run outside `run` (a test driving `handle`): nothing to share.
            None => true,
        }
    }

    fn now(&self) -> Millis {
        self.inner.jobs.clock().now()
    }

    /// A lease token for one handler: the worker id plus a per-handler number, so that two
    /// handlers of one worker (a duplicate delivery, a stalled handler) never mistake each
    /// other's lease for their own.
    fn owner_token(&self) -> String {
        let n = self.inner.handlers.fetch_add(1, Ordering::Relaxed);
        format!("{}#{n}", self.inner.config.id)
    }

    fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }
}

/// `d` as whole milliseconds on the engine's clock.
fn millis(d: std::time::Duration) -> Millis {
    d.as_millis() as Millis
}

#[cfg(test)]
mod tests;
