//! The task's commit (rule 8 of [`crate::transition`]): what its steps decided, written in
//! one transaction conditioned on the version and lease it started from, and what a
//! failed write means (it may have landed; a cancel may have arrived; the job may be
//! another worker's).

use super::lease::Hold;
use super::task::{lock_writes, TaskRun};
use super::Worker;
use crate::backend::Commit;
use crate::error::CommitError;
use crate::job::JobRecord;

impl Worker {
    /// Commits what the task decided: its last record, one history event per decision,
    /// its entries; conditioned on the version and lease it started from (rule 8).
    pub(super) async fn commit_task(
        &self,
        hold: &Hold,
        task: &TaskRun,
        next: &JobRecord,
    ) -> Committed {
        let writes = lock_writes(&task.writes).clone();
        let commit = Commit {
            expected_version: task.stored_version,
            owner: &hold.owner,
            saw_cancel: task.saw_cancel,
            record: next,
            events: &task.events,
            entries: &writes,
        };
        let store = self.inner.jobs.store();
        let outcome = store.commit(&commit).await;
        // A write that failed on the wire may still have landed (the connection dropped
        // after DynamoDB applied it, and the SDK's retry then lost its condition to our own
        // first attempt): the record tells.
        let err = match outcome {
            Ok(()) => return Committed::Landed,
            Err(err) => err,
        };
        let current = store.get(&next.job_id).await;
        if matches!(&current, Ok(Some(cur)) if same_commit(cur, next)) {
            return Committed::Landed;
        }
        match err {
            CommitError::Conflict => match current {
                Ok(Some(cur))
                    if cur.version == task.stored_version
                        && cur.lease_owner.as_deref() == Some(hold.owner.as_str())
                        && cur.cancel_requested
                        && !task.saw_cancel =>
                {
                    Committed::CancelRequested
                }
                _ => Committed::Lost,
            },
            CommitError::Store(e) => Committed::Failed(e),
        }
    }
}

/// What became of a task's commit.
pub(super) enum Committed {
    /// It is in the store.
    Landed,
    /// A cancel request arrived meanwhile; we still hold the job.
    CancelRequested,
    /// Another worker has the job.
    Lost,
    /// The store failed; the message comes back.
    Failed(crate::error::StoreError),
}

/// Whether `cur` is the record `next` as written by our own commit (the store adds the TTL).
fn same_commit(cur: &JobRecord, next: &JobRecord) -> bool {
    let mut cur = cur.clone();
    cur.expires_at = next.expires_at;
    &cur == next
}
