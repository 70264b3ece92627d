//! Rules 1 and 2 of the state machine: which task messages are valid for a job, and when
//! one may take the job's lease.

use crate::backend::LeaseRequest;
use crate::job::{JobRecord, Millis};

/// What the lease rules say about a task message, given the job's record (rules 1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Take the lease and run.
    Lease,
    /// Valid, but the step is due later: re-send the task for then.
    NotDue,
    /// Valid, but another worker holds a live lease.
    Held,
    /// Acknowledge and forget.
    Stale,
}

/// Rules 1 and 2: what a task message may do with a job. The DynamoDB backend states the
/// same rule as the condition expression of its lease write.
pub(crate) fn judge(ask: &LeaseRequest<'_>, rec: &JobRecord) -> Verdict {
    let valid = rec.version == ask.version || rec.driven_by.as_deref() == Some(ask.message_id);
    if rec.status.is_terminal() || !valid {
        Verdict::Stale
    } else if rec.lease_live(ask.now) {
        Verdict::Held
    } else if rec.next_wake_at > ask.due_by && !rec.cancel_requested {
        Verdict::NotDue
    } else {
        Verdict::Lease
    }
}

/// Rule 2: the record once `owner` has taken the lease until `until` (an attempt counted).
pub(crate) fn take_lease(rec: &mut JobRecord, owner: &str, until: Millis) {
    rec.lease_owner = Some(owner.to_string());
    rec.lease_until = Some(until);
    rec.attempt += 1;
}
