//! The sweeper: the last line of defence against lost wake-ups (invariant 6 of
//! docs/architecture.md, *Task protocol*). Every worker runs one, jittered, so a lost task
//! message — moved to a DLQ, expired, purged, deleted by a stale holder — delays its job
//! by at most the grace period and a sweep interval.

use tracing::{info, warn};

use super::config::SWEEP_BATCH;
use super::{millis, Worker};
use crate::error::StoreError;

impl Worker {
    /// One sweep: re-sends a task for every active job whose step was due more than the
    /// grace period ago and that no live lease covers. Returns how many it re-sent.
    pub async fn sweep_once(&self) -> Result<usize, StoreError> {
        let cutoff = self.now() - millis(self.config().sweep_grace);
        let lost = self.inner.jobs.store().overdue(cutoff, SWEEP_BATCH).await?;
        let mut sent = 0;
        for job in lost {
            if self.send_task(&job, self.now()).await {
                info!(job_id = %job.job_id, step = %job.step, "sweeper re-sent a lost wake-up");
                sent += 1;
            }
        }
        Ok(sent)
    }

    pub(super) async fn sweep_forever(&self) {
        let every = self.config().sweep_every;
        loop {
            // ±50 %: workers started together do not sweep together.
            let jitter = 0.5 + rand::random::<f64>();
            tokio::time::sleep(every.mul_f64(jitter)).await;
            if let Err(e) = self.sweep_once().await {
                warn!(error = %e, "sweep failed");
            }
        }
    }
}
