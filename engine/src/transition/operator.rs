//! The rules for changes made from outside a step: creating a job, an operator's retry
//! (rule 9) and cancel (rule 10), and a wake-up by an outside signal (rule 12).

use super::{FIRST_EVENT, FIRST_VERSION};
use crate::job::{EventKind, HistoryEvent, JobId, JobRecord, JobStatus, Millis};

/// What a new job is made of.
pub(crate) struct Creation<'a> {
    /// Its id.
    pub(crate) id: &'a JobId,
    /// Its workflow's name.
    pub(crate) workflow: &'a str,
    /// The workflow's first step.
    pub(crate) first_step: &'a str,
    /// The workflow's initial state.
    pub(crate) input: &'a serde_json::Value,
    /// Its labels.
    pub(crate) labels: &'a std::collections::BTreeMap<String, String>,
    /// When it is created.
    pub(crate) now: Millis,
    /// When it must be finished by.
    pub(crate) deadline_at: Millis,
    /// Its trace context.
    pub(crate) trace_parent: String,
    /// Who creates it (for the history), when no worker takes it at once.
    pub(crate) actor: &'a str,
    /// Set when the creating worker runs it at once: (lease owner, lease until, message id).
    pub(crate) lease: Option<(&'a str, Millis, &'a str)>,
    /// Digest of the request it is created for, if its creator gave one.
    pub(crate) request_digest: Option<&'a str>,
}

/// A new job: PENDING at its first step, version [`FIRST_VERSION`], with its `created`
/// event. A worker that creates a job from an intake message holds its lease from the
/// start, with the first attempt counted (rule 2) and the message as its driver.
pub(crate) fn created(c: Creation<'_>) -> (JobRecord, HistoryEvent) {
    let lease = c.lease;
    let record = JobRecord {
        job_id: c.id.clone(),
        workflow: c.workflow.to_string(),
        status: JobStatus::Pending,
        step: c.first_step.to_string(),
        attempt: u32::from(lease.is_some()),
        version: FIRST_VERSION,
        data: c.input.clone(),
        labels: c.labels.clone(),
        created_at: c.now,
        updated_at: c.now,
        next_wake_at: c.now,
        deadline_at: c.deadline_at,
        lease_owner: lease.map(|(o, _, _)| o.to_string()),
        lease_until: lease.map(|(_, u, _)| u),
        driven_by: lease.map(|(_, _, m)| m.to_string()),
        last_error: None,
        cancel_requested: false,
        history_count: FIRST_EVENT,
        expires_at: None,
        trace_parent: Some(c.trace_parent),
        request_digest: c.request_digest.map(str::to_string),
    };
    let event = HistoryEvent {
        seq: FIRST_EVENT,
        at: c.now,
        kind: EventKind::Created,
        step: c.first_step.to_string(),
        attempt: 0,
        duration_ms: None,
        to_step: c.first_step.to_string(),
        to_status: JobStatus::Pending,
        error: None,
        note: None,
        worker: lease.map_or_else(|| c.actor.to_string(), |(o, _, _)| o.to_string()),
    };
    (record, event)
}

/// Whether an existing job found by a repeated create still needs its first task: it never
/// started and nobody holds it (the creator may have died between writing and sending).
pub(crate) fn needs_first_task(existing: &JobRecord, now: Millis) -> bool {
    existing.status == JobStatus::Pending && !existing.lease_live(now)
}

/// Rule 10: whether a job in `status` can be cancelled.
pub(crate) fn cancellable(status: JobStatus) -> bool {
    !status.is_terminal()
}

/// Why an operator's change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) String);

/// Rule 9: an operator's retry of a FAILED job from the step that failed, with a fresh
/// attempt count and deadline. `driven_by` marks the commit as the operator's (no task
/// message drove it).
pub(crate) fn retried(
    old: &JobRecord,
    now: Millis,
    deadline_at: Millis,
    driven_by: String,
    actor: &str,
) -> Result<(JobRecord, HistoryEvent), Refusal> {
    if old.status != JobStatus::Failed {
        return Err(Refusal(format!(
            "job {} is {}; only FAILED jobs can be retried",
            old.job_id, old.status
        )));
    }
    let mut record = old.clone();
    record.status = JobStatus::Running;
    record.attempt = 0;
    record.version += 1;
    record.updated_at = now;
    record.next_wake_at = now;
    record.deadline_at = deadline_at;
    record.lease_owner = None;
    record.lease_until = None;
    record.driven_by = Some(driven_by);
    record.cancel_requested = false;
    record.expires_at = None;
    record.history_count += 1;
    let event = HistoryEvent {
        seq: record.history_count,
        at: now,
        kind: EventKind::Retried,
        step: record.step.clone(),
        attempt: 0,
        duration_ms: None,
        to_step: record.step.clone(),
        to_status: JobStatus::Running,
        error: None,
        note: old
            .last_error
            .as_ref()
            .map(|e| format!("previous error: {e}")),
        worker: actor.to_string(),
    };
    Ok((record, event))
}

/// Rule 12: an outside signal (e.g. an AWS event saying what a step waits for has
/// happened) wakes a job whose step `step` waits on a timer: the step is due now, and
/// everything else about the job is as it was. A signal that finds the job anywhere else —
/// running, at another step, already due, ended — is refused, so that a late, early or
/// repeated signal changes nothing; the timer then runs as it would have. The timer's own
/// task becomes stale (the version moves on) and is deleted when it arrives.
pub(crate) fn woken(
    old: &JobRecord,
    step: &str,
    now: Millis,
    driven_by: String,
    actor: &str,
    reason: &str,
) -> Result<(JobRecord, HistoryEvent), Refusal> {
    let refuse = |why: String| Err(Refusal(format!("job {} {why}", old.job_id)));
    if old.status.is_terminal() {
        return refuse(format!("is {}", old.status));
    }
    if old.step != step {
        return refuse(format!("is at step {}, not {step}", old.step));
    }
    if old.lease_live(now) {
        return refuse("is running".into());
    }
    if old.next_wake_at <= now {
        return refuse("is due already".into());
    }
    if old.cancel_requested {
        return refuse("is being cancelled".into());
    }
    let mut record = old.clone();
    record.version += 1;
    record.updated_at = now;
    record.next_wake_at = now;
    record.driven_by = Some(driven_by);
    record.history_count += 1;
    let event = HistoryEvent {
        seq: record.history_count,
        at: now,
        kind: EventKind::Woken,
        step: record.step.clone(),
        attempt: record.attempt,
        duration_ms: None,
        to_step: record.step.clone(),
        to_status: record.status,
        error: None,
        note: Some(reason.to_string()),
        worker: actor.to_string(),
    };
    Ok((record, event))
}
