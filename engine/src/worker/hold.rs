//! Held waits (rule 13 of [`crate::transition`]): a short wait slept in the task that
//! decided it, keeping the job's lease and message alive, instead of a round trip through
//! the queue; and how a wake-up received by the same worker ends one early.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::info;

use super::lease::Hold;
use super::task::TaskRun;
use super::{Phase, Signal, Worker};
use crate::backend::TaskQueue;
use crate::job::{JobId, JobRecord};

impl Worker {
    /// Ends the held wait of the job `s` names, if this worker holds it waiting at the
    /// step `s` names.
    pub(super) fn wake_held(&self, s: &Signal) -> bool {
        let held = self
            .inner
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match held.get(&s.job) {
            Some(wait) if wait.step == s.step => {
                *wait
                    .reason
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s.reason.clone());
                wait.notify.notify_one();
                true
            }
            _ => false,
        }
    }

    /// Sleeps through a held wait (rule 13), keeping the lease and the message alive; a
    /// wake-up for the job received by this worker ends it early ([`Worker::signal`]).
    pub(super) async fn hold_wait(
        &self,
        source: &Arc<dyn TaskQueue>,
        hold: &mut Hold,
        task: &TaskRun,
        waiting: &JobRecord,
        wait: Duration,
        heartbeat: &mut tokio::time::Interval,
    ) -> Held {
        let (job, step) = (&waiting.job_id, waiting.step.as_str());
        if self.phase() != Phase::Running {
            return Held::Draining;
        }
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        let mut phase = self.inner.phase.subscribe();
        let wait = Arc::new(HeldWait {
            step: step.to_string(),
            notify: tokio::sync::Notify::new(),
            reason: Mutex::new(None),
        });
        let _registered = HeldEntry::register(self, job, Arc::clone(&wait));
        loop {
            tokio::select! {
                () = &mut sleep => return Held::Due,
                () = wait.notify.notified() => {
                    let reason = wait
                        .reason
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take()
                        .unwrap_or_default();
                    return Held::Woken(reason);
                }
                _ = heartbeat.tick() => {
                    if !self.heartbeat(source, hold, job, task.stored_version).await {
                        info!(job_id = %job, "lease lost during a held wait; abandoning");
                        return Held::Lost;
                    }
                }
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() != Phase::Running {
                        return Held::Draining;
                    }
                }
            }
        }
    }
}

/// How a held wait ended.
pub(super) enum Held {
    /// The wait is over: take the job again and run its step.
    Due,
    /// A wake-up ended the wait early (rule 12), for this reason.
    Woken(String),
    /// The worker is shutting down: commit and send the task instead.
    Draining,
    /// The lease is gone: the job is not ours any more.
    Lost,
}

/// A wait held in a task, as a wake-up received by the same worker finds it.
pub(super) struct HeldWait {
    /// The step the job waits at.
    step: String,
    /// Ends the wait.
    notify: tokio::sync::Notify,
    /// What the wake-up said happened.
    reason: Mutex<Option<String>>,
}

/// A held wait's place in [`Worker::signal`]'s sight, for as long as the wait lasts.
struct HeldEntry<'a> {
    worker: &'a Worker,
    job: JobId,
}

impl<'a> HeldEntry<'a> {
    fn register(worker: &'a Worker, job: &JobId, wait: Arc<HeldWait>) -> Self {
        worker
            .inner
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job.clone(), wait);
        HeldEntry {
            worker,
            job: job.clone(),
        }
    }
}

impl Drop for HeldEntry<'_> {
    fn drop(&mut self) {
        self.worker
            .inner
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&self.job);
    }
}
