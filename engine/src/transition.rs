//! The state machine: every rule that decides where a job goes next, in one pure module.
//!
//! The worker and the operator operations never set a status themselves. They say what
//! happened — a step's outcome or error, a cancel request, a passed deadline, an operator's
//! retry — and this module returns the next record, the history event that describes the
//! change, and what the runtime must do next (`Then`). Nothing here does I/O, reads a
//! clock or needs tokio, so each rule is unit-tested below with plain values. The whole
//! protocol around it (leases, versions, `DrivenBy`, heartbeats, the sweeper) is told in
//! `docs/architecture.md`, *Task protocol* and *State machine*.
//!
//! # Rules
//!
//! 1. **Validity.** A task message is valid for its job when it names the job's `Version`,
//!    or it is the message named in `DrivenBy`. A message for a finished job, or any other
//!    message, is stale (`judge`).
//! 2. **Leases.** A valid message takes the lease only if no live lease is held and the
//!    step is due (or a cancel request waits). Taking the lease counts an attempt, so an
//!    attempt that died with its worker counts too (`take_lease`).
//! 3. **Before a step runs**, in this order: an unknown workflow fails the job; a cancel
//!    request stops it (CANCELLED); a passed deadline stops it (FAILED); an unknown step
//!    fails it; attempts beyond the step's limit fail it (`preflight`).
//! 4. **Next step, no wait**: RUNNING, attempts restart. When the runtime may fuse, the
//!    next step runs in the same task: the lease is carried over and its first attempt is
//!    counted at once (`Then::Fuse`).
//! 5. **Next step or poll after a wait**: WAITING, woken at now + wait, but never later than
//!    the deadline (so the deadline rule can fire). Polling restarts attempts.
//! 6. **Retryable error**: WAITING after the error's own delay or the step's backoff, with
//!    `LastError` kept; on the last attempt the job FAILS instead. A time-out is retryable.
//! 7. **Abort** and a step's own **fail** end the job FAILED with the reason in `LastError`;
//!    **succeed** ends it SUCCEEDED. A step naming a step the workflow lacks fails the job.
//! 8. **Every decision** bumps `Version`, records the driving message in `DrivenBy`, clears
//!    the lease (unless fused or held) and makes exactly one history event. A task commits
//!    its decisions together, once, when the job leaves it (a wait through the queue, the
//!    end, a retry, shutdown): one transaction with the record, one history item per
//!    decision and the entries its steps wrote, conditioned on the version and lease it
//!    started from. A task that dies before its commit leaves the job where its lease
//!    found it (so `StepContext::first_run` is false for every step run again).
//! 9. **Retry** (an operator's redrive) is allowed from FAILED only: the job goes back to
//!    RUNNING at the step that failed, attempt 0, with a fresh deadline (`retried`).
//! 10. **Cancel** is allowed while the job is active (`cancellable`); the job stops at its
//!     next step boundary (rule 3).
//! 11. **Timers** longer than the queue's longest delay are chained: the task arrives early,
//!     finds the step not yet due and is sent again for the rest (`task_delay`).
//! 12. **Wake-ups.** An outside signal naming a job and the step it expects makes that step
//!     due now, if the job waits there on a timer and nobody holds it; anything else (a
//!     running, ended or already due job, another step) refuses it and changes nothing.
//!     The commit is an ordinary versioned one (rule 8), so the timer's task turns stale
//!     (`woken`).
//! 13. **Held waits.** A wait the runtime may hold (no longer than what is left of its
//!     budget, while it may fuse) is kept in the task instead of a round trip through the
//!     queue: the decision says WAITING as any wait does, then at the wake-up instant the
//!     task takes the job again in memory, counting an attempt as a lease would
//!     (`Then::Hold`, `resumed`). Nothing of it is durable until the task's commit (rule 8).
//!     A wake-up (rule 12) the holding worker receives ends the wait early, with the same
//!     `woken` decision as for a stored job.

use std::time::Duration;

use crate::error::StepError;
use crate::job::{EventKind, HistoryEvent, JobRecord, JobStatus, Millis};
use crate::workflow::{ErasedOutcome, StepPolicy, StopReason, Transition};

mod lease;
mod operator;

pub(crate) use lease::{judge, take_lease, Verdict};
pub(crate) use operator::{
    cancellable, created, needs_first_task, retried, woken, Creation, Refusal,
};

/// The version of a job's record when it is created; every commit adds one (rule 8).
pub const FIRST_VERSION: u64 = 1;

/// The sequence number of a job's first history event (its creation).
pub const FIRST_EVENT: u32 = 1;

/// What the runtime knows about the job's workflow and current step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StepLookup {
    /// No workflow of that name is registered here; the names that are.
    UnknownWorkflow {
        /// The workflows this worker runs.
        known: Vec<String>,
    },
    /// The workflow is known; the current step's policy, if it has that step.
    Known(Option<StepPolicy>),
}

/// What to do with a leased job before running anything (rule 3).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Preflight {
    /// Run the step under this policy.
    Run(StepPolicy),
    /// Run the workflow's stop hook, then commit [`Happened::Stopped`].
    Stop(StopReason),
    /// The step cannot run: commit [`Happened::Refused`] with this reason.
    Refuse(String),
}

/// Rule 3: whether the job's current step may run now.
pub(crate) fn preflight(rec: &JobRecord, now: Millis, lookup: StepLookup) -> Preflight {
    let policy = match lookup {
        StepLookup::UnknownWorkflow { known } => {
            return Preflight::Refuse(format!(
                "unknown workflow {:?} (this worker runs: {})",
                rec.workflow,
                known.join(", ")
            ))
        }
        StepLookup::Known(policy) => policy,
    };
    if rec.cancel_requested {
        return Preflight::Stop(StopReason::Cancelled);
    }
    if now >= rec.deadline_at {
        return Preflight::Stop(StopReason::DeadlineExceeded);
    }
    let Some(policy) = policy else {
        return Preflight::Refuse(format!(
            "workflow {} has no step {:?}",
            rec.workflow, rec.step
        ));
    };
    if rec.attempt > policy.max_attempts {
        // Attempts are counted when the lease is taken, so attempts that died with their
        // worker count too: a step that kills its worker cannot loop forever.
        return Preflight::Refuse(format!(
            "step {} did not complete in {} attempts (earlier attempts were interrupted)",
            rec.step, policy.max_attempts
        ));
    }
    Preflight::Run(policy)
}

/// What happened to a leased job.
#[derive(Debug)]
pub(crate) enum Happened {
    /// The step ran and decided.
    Ran {
        /// What it decided.
        outcome: ErasedOutcome,
        /// How long it ran.
        took: Duration,
    },
    /// The step failed.
    Erred {
        /// How.
        error: StepError,
        /// How long it ran.
        took: Duration,
    },
    /// The step ran past its policy's timeout and was abandoned.
    TimedOut {
        /// The timeout it ran past.
        timeout: Duration,
        /// How long it ran.
        took: Duration,
    },
    /// The job was stopped before its step ran ([`Preflight::Stop`]).
    Stopped {
        /// Why.
        reason: StopReason,
        /// What the workflow's stop hook said it did.
        note: Option<String>,
    },
    /// The step could not run ([`Preflight::Refuse`]).
    Refused(String),
}

/// The facts of one turn: who drives it, when, and what the runtime allows.
pub(crate) struct Turn<'a> {
    /// The engine's clock when the step started.
    pub(crate) now: Millis,
    /// The id of the message whose holder commits (rule 8).
    pub(crate) message_id: &'a str,
    /// The worker, for the history event.
    pub(crate) worker: &'a str,
    /// The current step's policy (for retries), if it has one.
    pub(crate) policy: Option<StepPolicy>,
    /// Whether the workflow has a step of that name.
    pub(crate) has_step: &'a (dyn Fn(&str) -> bool + Sync),
    /// Set when the next step may run in this same task (rule 4).
    pub(crate) fuse: Option<FuseLease<'a>>,
    /// The longest wait the task may still hold (rule 13); zero: none.
    pub(crate) hold: Duration,
}

/// The lease a fused step runs under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FuseLease<'a> {
    /// The holder's lease token.
    pub(crate) owner: &'a str,
    /// Until when the carried-over lease lasts.
    pub(crate) until: Millis,
}

/// What the runtime does once a decision is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// Run the next step now, in the same task, under the carried-over lease.
    Fuse,
    /// Send a task for the job's new version, due at this instant (see [`task_delay`]).
    SendAt(Millis),
    /// Keep the job in this task until this instant, then take it again ([`resumed`]) and
    /// run its step (rule 13).
    Hold(Millis),
    /// The job is finished: acknowledge the message, send nothing.
    Finish,
}

/// A transition: the record to write, its history event, and what comes after.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// The next record (version bumped).
    pub(crate) record: JobRecord,
    /// The event written with it.
    pub(crate) event: HistoryEvent,
    /// What the runtime does next.
    pub(crate) then: Then,
}

/// Whether one more step may be fused into the current task (rule 4): fewer than `max`
/// steps fused so far, and the worker is not shutting down.
pub(crate) fn may_fuse(fused: u32, max: u32, draining: bool) -> bool {
    fused + 1 < max && !draining
}

/// The single decision of what a job becomes after `happened` (rules 3 to 8).
pub(crate) fn decide(rec: &JobRecord, turn: &Turn<'_>, happened: Happened) -> Decision {
    let now = turn.now;
    let mut next = base(rec, turn);
    match happened {
        Happened::Stopped {
            reason: StopReason::Cancelled,
            note,
        } => {
            next.status = JobStatus::Cancelled;
            event(rec, next, turn, EventKind::Cancelled, None, None, note)
        }
        Happened::Stopped {
            reason: StopReason::DeadlineExceeded,
            note,
        } => {
            let reason = format!(
                "deadline exceeded: the job did not finish by {} (it was at step {}, attempt {})",
                crate::clock::rfc3339(rec.deadline_at),
                rec.step,
                rec.attempt
            );
            failed(rec, next, turn, None, reason, note)
        }
        Happened::Refused(reason) => failed(rec, next, turn, None, reason, None),
        Happened::Erred {
            error: StepError::Abort(reason),
            took,
        } => failed(rec, next, turn, Some(took), reason, None),
        Happened::Erred { error, took } => retry_or_fail(rec, next, turn, error, took),
        Happened::TimedOut { timeout, took } => {
            let error = StepError::retry(format!("step {} timed out after {timeout:?}", rec.step));
            retry_or_fail(rec, next, turn, error, took)
        }
        Happened::Ran { outcome, took } => {
            let took = Some(took);
            next.data = outcome.state;
            let note = outcome.note;
            match outcome.transition {
                Transition::Next { step, after } => {
                    if !(turn.has_step)(&step) {
                        let reason = format!(
                            "step {} asked for step {step:?}, which workflow {} does not have",
                            rec.step, rec.workflow
                        );
                        return failed(rec, next, turn, took, reason, None);
                    }
                    next.step = step;
                    next.attempt = 0;
                    if after.is_zero() {
                        next.status = JobStatus::Running;
                        if let Some(lease) = turn.fuse {
                            next.lease_owner = Some(lease.owner.to_string());
                            next.lease_until = Some(lease.until);
                            next.attempt = 1;
                        }
                    } else {
                        next.status = JobStatus::Waiting;
                        next.next_wake_at = wake_at(now, after, rec.deadline_at);
                    }
                    event(rec, next, turn, EventKind::StepCompleted, took, None, note)
                }
                Transition::Poll { after } => {
                    next.status = JobStatus::Waiting;
                    next.attempt = 0;
                    next.next_wake_at = wake_at(now, after, rec.deadline_at);
                    event(rec, next, turn, EventKind::Polled, took, None, note)
                }
                Transition::Succeed => {
                    next.status = JobStatus::Succeeded;
                    event(rec, next, turn, EventKind::Succeeded, took, None, note)
                }
                Transition::Fail { reason } => failed(rec, next, turn, took, reason, note),
            }
        }
    }
}

/// Rule 8: the next record before the transition-specific fields are set.
fn base(rec: &JobRecord, turn: &Turn<'_>) -> JobRecord {
    let mut next = rec.clone();
    next.version = rec.version + 1;
    next.updated_at = turn.now;
    next.next_wake_at = turn.now;
    next.driven_by = Some(turn.message_id.to_string());
    next.lease_owner = None;
    next.lease_until = None;
    next.history_count = rec.history_count + 1;
    next
}

/// Rule 6: a retry after the backoff, or a failure on the last attempt.
fn retry_or_fail(
    rec: &JobRecord,
    mut next: JobRecord,
    turn: &Turn<'_>,
    error: StepError,
    took: Duration,
) -> Decision {
    let message = error.to_string();
    let max_attempts = turn.policy.map_or(0, |p| p.max_attempts);
    if rec.attempt >= max_attempts {
        let reason = format!(
            "step {} failed after {} attempts: {message}",
            rec.step, rec.attempt
        );
        return failed(rec, next, turn, Some(took), reason, None);
    }
    let delay = match (error, turn.policy) {
        (StepError::RetryAfter { after, .. }, _) => after,
        (_, Some(policy)) => policy.retry_delay(rec.attempt, rec.job_id.as_str()),
        (_, None) => Duration::ZERO,
    };
    next.status = JobStatus::Waiting;
    next.next_wake_at = wake_at(turn.now, delay, rec.deadline_at);
    next.last_error = Some(message.clone());
    let kind = EventKind::RetryScheduled;
    event(rec, next, turn, kind, Some(took), Some(message), None)
}

/// Rule 7: the job ends FAILED with `reason`.
fn failed(
    rec: &JobRecord,
    mut next: JobRecord,
    turn: &Turn<'_>,
    took: Option<Duration>,
    reason: String,
    note: Option<String>,
) -> Decision {
    next.status = JobStatus::Failed;
    next.last_error = Some(reason.clone());
    event(rec, next, turn, EventKind::Failed, took, Some(reason), note)
}

/// Pairs `next` with the history event that describes how `rec` became it, and says what
/// the runtime does after the commit.
fn event(
    rec: &JobRecord,
    next: JobRecord,
    turn: &Turn<'_>,
    kind: EventKind,
    took: Option<Duration>,
    error: Option<String>,
    note: Option<String>,
) -> Decision {
    let event = HistoryEvent {
        seq: next.history_count,
        at: next.updated_at,
        kind,
        step: rec.step.clone(),
        attempt: rec.attempt,
        duration_ms: took.map(|t| t.as_millis() as u64),
        to_step: next.step.clone(),
        to_status: next.status,
        error,
        note,
        worker: turn.worker.to_string(),
    };
    let holdable = matches!(kind, EventKind::StepCompleted | EventKind::Polled)
        && next.status == JobStatus::Waiting
        && turn.fuse.is_some()
        && next.next_wake_at - turn.now <= turn.hold.as_millis() as Millis;
    let then = if next.status.is_terminal() {
        Then::Finish
    } else if next.lease_owner.is_some() {
        Then::Fuse
    } else if holdable {
        Then::Hold(next.next_wake_at)
    } else {
        Then::SendAt(next.next_wake_at)
    };
    Decision {
        record: next,
        event,
        then,
    }
}

/// Rule 13: the job a held wait kept, taken again under the task's lease exactly as a
/// task message would take it (rule 2: the attempt is counted, the status is left as is).
pub(crate) fn resumed(rec: &JobRecord, owner: &str, until: Millis) -> JobRecord {
    let mut next = rec.clone();
    take_lease(&mut next, owner, until);
    next
}

/// Rule 5: a wake-up `after` from `now`, never past the deadline.
fn wake_at(now: Millis, after: Duration, deadline: Millis) -> Millis {
    (now + after.as_millis() as Millis).min(deadline)
}

/// Rule 11: the delay to put on a task due at `due`, sent at `now`, on a queue that delays
/// a message by at most `max`. A longer wait is chained: the task comes back early, is
/// judged not due ([`Verdict::NotDue`]) and is sent again for the rest.
pub(crate) fn task_delay(due: Millis, now: Millis, max: Duration) -> Duration {
    Duration::from_millis((due - now).max(0) as u64).min(max)
}

#[cfg(test)]
mod tests;
