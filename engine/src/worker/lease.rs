//! Lease upkeep: what a handler holds (a lease on the job, a received message), how it
//! keeps both alive while a step runs, how it gives them back at shutdown, and when it may
//! delete its message (invariant 2 of docs/architecture.md, *Task protocol*).

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, info, warn};

use super::config::ACK_MARGIN;
use super::{millis, Worker};
use crate::backend::{Delivery, TaskQueue};
use crate::job::{JobId, Millis};

/// A message being handled, and until when it is ours: past that instant the queue may have
/// handed it to another worker, so we must not delete it (with SQS an outdated receipt can
/// still delete the message another worker now relies on).
pub(super) struct Hold {
    pub(super) d: Delivery,
    pub(super) visible_until: Millis,
    /// The lease owner token (see `Worker::owner_token`).
    pub(super) owner: String,
    /// Until when the store holds the lease for us, as last written (taken or extended).
    pub(super) lease_until: Millis,
}

impl Worker {
    /// A fresh hold of a message just received, under a new lease token.
    pub(super) fn hold(&self, d: Delivery) -> Hold {
        Hold {
            visible_until: self.now() + millis(self.config().visibility),
            d,
            owner: self.owner_token(),
            lease_until: 0,
        }
    }

    /// Extends the lease of `job` (at `version` in the store) and the message's visibility;
    /// `false` if the lease is gone.
    pub(super) async fn heartbeat(
        &self,
        source: &Arc<dyn TaskQueue>,
        hold: &mut Hold,
        job: &JobId,
        version: u64,
    ) -> bool {
        let cfg = self.config();
        let until = self.now() + millis(cfg.lease);
        let kept = match self
            .inner
            .jobs
            .store()
            .extend_lease(job, version, &hold.owner, until)
            .await
        {
            Ok(kept) => {
                if kept {
                    hold.lease_until = until;
                }
                kept
            }
            Err(e) => {
                // Unknown: keep going; if the lease really lapses the commit will fail.
                warn!(error = %e, "heartbeat could not extend the lease");
                true
            }
        };
        if kept {
            let asked = self.now();
            match source.set_visibility(&hold.d.receipt, cfg.visibility).await {
                Ok(()) => hold.visible_until = asked + millis(cfg.visibility),
                Err(e) => debug!(error = %e, "heartbeat could not extend message visibility"),
            }
        }
        kept
    }

    /// Whether a lease taken at some point before now must be confirmed before any work:
    /// less than two thirds of it is left, so this worker stalled since taking it and the
    /// lease may have lapsed and passed to another worker.
    pub(super) fn lease_needs_confirming(&self, hold: &Hold) -> bool {
        let lease_ms = millis(self.config().lease);
        hold.lease_until - self.now() < lease_ms * 2 / 3
    }

    /// Gives the job back at shutdown: lease released, message visible again at once. What
    /// the task decided and did not commit is lost, and runs again (rule 8).
    pub(super) async fn release(
        &self,
        source: &Arc<dyn TaskQueue>,
        hold: &Hold,
        job: &JobId,
        version: u64,
    ) {
        if let Err(e) = self
            .inner
            .jobs
            .store()
            .release_lease(job, version, &hold.owner)
            .await
        {
            warn!(job_id = %job, error = %e, "could not release lease at shutdown");
        }
        if let Err(e) = source.set_visibility(&hold.d.receipt, Duration::ZERO).await {
            debug!(error = %e, "could not make message visible at shutdown");
        }
        info!(job_id = %job, "released job at shutdown");
    }

    /// Deletes the message, unless it may be another worker's by now.
    pub(super) async fn ack(&self, source: &Arc<dyn TaskQueue>, hold: &Hold) {
        if self.now() >= hold.visible_until - millis(ACK_MARGIN) {
            // The message may be another worker's now: leave it. It comes back, is judged
            // against the record, and is deleted by whoever receives it then.
            debug!(message_id = %hold.d.message_id, "held the message past its visibility; not deleting it");
            return;
        }
        debug!(message_id = %hold.d.message_id, receipt = %hold.d.receipt, "deleting message");
        if let Err(e) = source.delete(&hold.d.receipt).await {
            // Harmless: the message comes back, is judged stale and is deleted then.
            debug!(error = %e, "could not delete message");
        }
    }
}
