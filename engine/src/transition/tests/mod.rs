//! One test per rule of the state machine, on plain values: no runtime, no backend. The
//! lease rules (1, 2) and the operator rules (9, 10, creation) have files of their own.

mod lease;
mod operator;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::backend::LeaseRequest;
use crate::job::JobId;
use crate::workflow::Outcome;

pub(super) const NOW: Millis = 1_000_000;
pub(super) const HOUR: Millis = 3_600_000;

pub(super) fn record() -> JobRecord {
    JobRecord {
        job_id: JobId::new("job-1"),
        workflow: "wf".into(),
        status: JobStatus::Running,
        step: "a".into(),
        attempt: 1,
        version: 7,
        data: json!({"n": 1}),
        labels: BTreeMap::new(),
        created_at: NOW - 10_000,
        updated_at: NOW - 5_000,
        next_wake_at: NOW - 5_000,
        deadline_at: NOW + HOUR,
        lease_owner: Some("w#1".into()),
        lease_until: Some(NOW + 60_000),
        driven_by: Some("m-0".into()),
        last_error: None,
        cancel_requested: false,
        history_count: 4,
        expires_at: None,
        trace_parent: None,
        request_digest: None,
    }
}

fn policy() -> StepPolicy {
    StepPolicy::default()
        .max_attempts(3)
        .backoff(Duration::from_secs(2), Duration::from_secs(60))
}

fn has_ab(step: &str) -> bool {
    matches!(step, "a" | "b")
}

fn turn() -> Turn<'static> {
    Turn {
        now: NOW,
        message_id: "m-1",
        worker: "w",
        policy: Some(policy()),
        has_step: &has_ab,
        fuse: None,
        hold: Duration::ZERO,
    }
}

fn fused_turn() -> Turn<'static> {
    Turn {
        fuse: Some(FuseLease {
            owner: "w#1",
            until: NOW + 60_000,
        }),
        ..turn()
    }
}

fn ran(outcome: Outcome<serde_json::Value>) -> Happened {
    Happened::Ran {
        outcome,
        took: Duration::from_millis(42),
    }
}

const JOB: &str = "job-1";

pub(super) fn ask(version: u64, message_id: &str) -> LeaseRequest<'_> {
    static ID: std::sync::OnceLock<JobId> = std::sync::OnceLock::new();
    LeaseRequest {
        job_id: ID.get_or_init(|| JobId::new(JOB)),
        version,
        message_id,
        owner: "w#2",
        now: NOW,
        until: NOW + 60_000,
        due_by: NOW + 1_000,
    }
}

pub(super) fn idle(mut rec: JobRecord) -> JobRecord {
    rec.lease_owner = None;
    rec.lease_until = None;
    rec
}

// Rule 3: before a step runs.

#[test]
fn a_due_step_within_its_attempts_runs() {
    let got = preflight(&record(), NOW, StepLookup::Known(Some(policy())));
    assert_eq!(got, Preflight::Run(policy()));
}

#[test]
fn an_unknown_workflow_is_refused_naming_the_ones_this_worker_runs() {
    let lookup = StepLookup::UnknownWorkflow {
        known: vec!["x".into(), "y".into()],
    };
    let Preflight::Refuse(reason) = preflight(&record(), NOW, lookup) else {
        panic!("not refused");
    };
    assert_eq!(reason, "unknown workflow \"wf\" (this worker runs: x, y)");
}

#[test]
fn a_cancel_request_stops_the_job_before_its_deadline_or_attempts_are_looked_at() {
    let mut rec = record();
    rec.cancel_requested = true;
    rec.attempt = 99;
    let got = preflight(&rec, rec.deadline_at + 1, StepLookup::Known(Some(policy())));
    assert_eq!(got, Preflight::Stop(StopReason::Cancelled));
}

#[test]
fn a_passed_deadline_stops_the_job() {
    let rec = record();
    let got = preflight(&rec, rec.deadline_at, StepLookup::Known(Some(policy())));
    assert_eq!(got, Preflight::Stop(StopReason::DeadlineExceeded));
}

#[test]
fn an_unknown_step_is_refused() {
    let Preflight::Refuse(reason) = preflight(&record(), NOW, StepLookup::Known(None)) else {
        panic!("not refused");
    };
    assert_eq!(reason, "workflow wf has no step \"a\"");
}

#[test]
fn attempts_beyond_the_limit_are_refused_even_if_none_returned() {
    let mut rec = record();
    rec.attempt = 4;
    let Preflight::Refuse(reason) = preflight(&rec, NOW, StepLookup::Known(Some(policy()))) else {
        panic!("not refused");
    };
    assert!(
        reason.contains("did not complete in 3 attempts"),
        "{reason}"
    );
}

#[test]
fn a_cancelled_job_ends_cancelled_with_the_stop_hooks_note() {
    let happened = Happened::Stopped {
        reason: StopReason::Cancelled,
        note: Some("cancelled command c-1".into()),
    };
    let d = decide(&record(), &turn(), happened);
    assert_eq!(d.record.status, JobStatus::Cancelled);
    assert_eq!(d.event.kind, EventKind::Cancelled);
    assert_eq!(d.event.note.as_deref(), Some("cancelled command c-1"));
    assert_eq!(d.event.error, None);
    assert_eq!(d.record.last_error, None);
    assert_eq!(d.then, Then::Finish);
}

#[test]
fn a_job_past_its_deadline_fails_saying_where_it_was() {
    let happened = Happened::Stopped {
        reason: StopReason::DeadlineExceeded,
        note: None,
    };
    let d = decide(&record(), &turn(), happened);
    assert_eq!(d.record.status, JobStatus::Failed);
    let error = d.record.last_error.as_deref().unwrap_or_default();
    assert!(error.starts_with("deadline exceeded"), "{error}");
    assert!(error.contains("step a, attempt 1"), "{error}");
    assert_eq!(d.event.error.as_deref(), Some(error));
    assert_eq!(d.then, Then::Finish);
}

#[test]
fn a_refused_step_fails_the_job_with_the_reason() {
    let d = decide(&record(), &turn(), Happened::Refused("no such step".into()));
    assert_eq!(d.record.status, JobStatus::Failed);
    assert_eq!(d.record.last_error.as_deref(), Some("no such step"));
    assert_eq!(d.event.duration_ms, None, "nothing ran");
}

// Rule 4: next step, no wait.

#[test]
fn next_step_at_once_is_running_and_sent_now_when_not_fused() {
    let d = decide(&record(), &turn(), ran(Outcome::next("b", json!({"n": 2}))));
    assert_eq!(d.record.status, JobStatus::Running);
    assert_eq!(d.record.step, "b");
    assert_eq!(d.record.attempt, 0);
    assert_eq!(d.record.data, json!({"n": 2}));
    assert_eq!(d.record.lease_owner, None);
    assert_eq!(d.event.kind, EventKind::StepCompleted);
    assert_eq!(
        (d.event.step.as_str(), d.event.to_step.as_str()),
        ("a", "b")
    );
    assert_eq!(d.event.duration_ms, Some(42));
    assert_eq!(d.then, Then::SendAt(NOW));
}

#[test]
fn a_fused_next_step_keeps_the_lease_and_counts_its_first_attempt() {
    let d = decide(&record(), &fused_turn(), ran(Outcome::next("b", json!({}))));
    assert_eq!(d.then, Then::Fuse);
    assert_eq!(d.record.lease_owner.as_deref(), Some("w#1"));
    assert_eq!(d.record.lease_until, Some(NOW + 60_000));
    assert_eq!(d.record.attempt, 1);
}

#[test]
fn fusing_stops_at_the_limit_and_when_draining() {
    assert!(may_fuse(0, 32, false));
    assert!(!may_fuse(31, 32, false));
    assert!(!may_fuse(0, 32, true));
}

#[test]
fn a_step_naming_a_step_the_workflow_lacks_fails_the_job() {
    let d = decide(&record(), &turn(), ran(Outcome::next("zz", json!({}))));
    assert_eq!(d.record.status, JobStatus::Failed);
    let error = d.record.last_error.unwrap_or_default();
    assert!(error.contains("asked for step \"zz\""), "{error}");
}

// Rule 5: timers.

#[test]
fn next_step_after_a_wait_is_waiting_until_then() {
    let outcome = Outcome::next_after("b", json!({}), Duration::from_secs(30));
    let d = decide(&record(), &fused_turn(), ran(outcome));
    assert_eq!(d.record.status, JobStatus::Waiting);
    assert_eq!(d.record.next_wake_at, NOW + 30_000);
    assert_eq!(d.record.lease_owner, None, "a wait is never fused");
    assert_eq!(d.then, Then::SendAt(NOW + 30_000));
}

// Rule 13: held waits.

#[test]
fn a_short_wait_is_held_in_the_task_while_it_may_fuse_and_within_the_budget() {
    let held = Turn {
        hold: Duration::from_secs(5),
        ..fused_turn()
    };
    let outcome = Outcome::next_after("b", json!({}), Duration::from_secs(2));
    let d = decide(&record(), &held, ran(outcome));
    assert_eq!(d.then, Then::Hold(NOW + 2_000));
    assert_eq!(d.record.status, JobStatus::Waiting, "recorded as any wait");
    assert_eq!(d.record.lease_owner, None);
    assert_eq!(d.event.to_status, JobStatus::Waiting);
    let poll = decide(
        &record(),
        &held,
        ran(Outcome::poll(json!({}), Duration::from_secs(5))),
    );
    assert_eq!(poll.then, Then::Hold(NOW + 5_000));
    // Longer than the budget, not fusing (draining, the limit), or a retry: the queue.
    let long = Outcome::poll(json!({}), Duration::from_secs(6));
    assert_eq!(
        decide(&record(), &held, ran(long)).then,
        Then::SendAt(NOW + 6_000)
    );
    let unfused = Turn {
        hold: Duration::from_secs(5),
        ..turn()
    };
    let short = Outcome::poll(json!({}), Duration::from_secs(1));
    assert_eq!(
        decide(&record(), &unfused, ran(short)).then,
        Then::SendAt(NOW + 1_000)
    );
    let retry = Happened::Erred {
        error: StepError::retry_after("busy", Duration::from_secs(1)),
        took: Duration::from_millis(3),
    };
    assert!(matches!(
        decide(&record(), &held, retry).then,
        Then::SendAt(_)
    ));
}

#[test]
fn a_held_job_is_taken_again_as_a_lease_would_take_it() {
    let outcome = Outcome::poll(json!({}), Duration::from_secs(2));
    let held = Turn {
        hold: Duration::from_secs(5),
        ..fused_turn()
    };
    let d = decide(&record(), &held, ran(outcome));
    let again = resumed(&d.record, "w#1", NOW + 90_000);
    assert_eq!(again.attempt, d.record.attempt + 1, "an attempt is counted");
    assert_eq!(again.lease_owner.as_deref(), Some("w#1"));
    assert_eq!(again.lease_until, Some(NOW + 90_000));
    assert_eq!(
        (again.version, &again.step),
        (d.record.version, &d.record.step)
    );
}

#[test]
fn a_wait_never_reaches_past_the_deadline() {
    let outcome = Outcome::poll(json!({}), Duration::from_secs(7_200));
    let d = decide(&record(), &turn(), ran(outcome));
    assert_eq!(d.record.next_wake_at, NOW + HOUR);
}

#[test]
fn polling_waits_on_the_same_step_and_restarts_attempts() {
    let mut rec = record();
    rec.attempt = 2;
    let d = decide(
        &rec,
        &turn(),
        ran(Outcome::poll(json!({}), Duration::from_secs(5))),
    );
    assert_eq!(d.record.status, JobStatus::Waiting);
    assert_eq!(d.record.step, "a");
    assert_eq!(d.record.attempt, 0);
    assert_eq!(d.event.kind, EventKind::Polled);
}

// Rule 6: retries.

#[test]
fn a_retryable_error_waits_the_policys_backoff_and_keeps_the_error() {
    let happened = Happened::Erred {
        error: StepError::retry("throttled"),
        took: Duration::from_millis(5),
    };
    let d = decide(&record(), &turn(), happened);
    let backoff = policy().retry_delay(1, "job-1");
    assert_eq!(d.record.status, JobStatus::Waiting);
    assert_eq!(d.record.step, "a");
    assert_eq!(
        d.record.attempt, 1,
        "the next lease counts the next attempt"
    );
    assert_eq!(d.record.next_wake_at, NOW + backoff.as_millis() as Millis);
    assert_eq!(d.record.last_error.as_deref(), Some("throttled"));
    assert_eq!(d.event.kind, EventKind::RetryScheduled);
    assert_eq!(d.then, Then::SendAt(d.record.next_wake_at));
}

#[test]
fn backoff_grows_with_attempts_and_is_capped() {
    let p = policy();
    let (first, second) = (p.retry_delay(1, "j"), p.retry_delay(2, "j"));
    assert!(first >= Duration::from_secs(1) && first <= Duration::from_secs(2));
    assert!(second >= Duration::from_secs(2) && second <= Duration::from_secs(4));
    assert!(p.retry_delay(30, "j") <= Duration::from_secs(60));
}

#[test]
fn an_error_with_its_own_delay_waits_that_long() {
    let happened = Happened::Erred {
        error: StepError::retry_after("not yet", Duration::from_secs(9)),
        took: Duration::ZERO,
    };
    let d = decide(&record(), &turn(), happened);
    assert_eq!(d.record.next_wake_at, NOW + 9_000);
}

#[test]
fn a_retryable_error_on_the_last_attempt_fails_the_job() {
    let mut rec = record();
    rec.attempt = 3;
    let happened = Happened::Erred {
        error: StepError::retry("throttled"),
        took: Duration::ZERO,
    };
    let d = decide(&rec, &turn(), happened);
    assert_eq!(d.record.status, JobStatus::Failed);
    assert_eq!(
        d.record.last_error.as_deref(),
        Some("step a failed after 3 attempts: throttled")
    );
    assert_eq!(d.then, Then::Finish);
}

#[test]
fn a_time_out_is_a_retryable_error_naming_the_limit() {
    let happened = Happened::TimedOut {
        timeout: Duration::from_secs(60),
        took: Duration::from_secs(60),
    };
    let d = decide(&record(), &turn(), happened);
    assert_eq!(d.record.status, JobStatus::Waiting);
    assert_eq!(
        d.record.last_error.as_deref(),
        Some("step a timed out after 60s")
    );
}

// Rule 7: terminal outcomes.

#[test]
fn an_abort_fails_the_job_at_once_whatever_attempts_remain() {
    let happened = Happened::Erred {
        error: StepError::abort("not exportable"),
        took: Duration::ZERO,
    };
    let d = decide(&record(), &turn(), happened);
    assert_eq!(d.record.status, JobStatus::Failed);
    assert_eq!(d.record.last_error.as_deref(), Some("not exportable"));
    assert_eq!(d.event.error.as_deref(), Some("not exportable"));
}

#[test]
fn a_steps_own_failure_keeps_its_state_and_note() {
    let outcome = Outcome::fail(json!({"why": 1}), "zero targets").with_note("n");
    let d = decide(&record(), &turn(), ran(outcome));
    assert_eq!(d.record.status, JobStatus::Failed);
    assert_eq!(d.record.data, json!({"why": 1}));
    assert_eq!(d.record.last_error.as_deref(), Some("zero targets"));
    assert_eq!(d.event.note.as_deref(), Some("n"));
    assert_eq!(d.then, Then::Finish);
}

#[test]
fn success_ends_the_job() {
    let d = decide(&record(), &fused_turn(), ran(Outcome::succeed(json!({}))));
    assert_eq!(d.record.status, JobStatus::Succeeded);
    assert_eq!(d.record.lease_owner, None, "a finished job holds no lease");
    assert_eq!(d.event.kind, EventKind::Succeeded);
    assert_eq!(d.then, Then::Finish);
}

// Rule 8: every commit.

#[test]
fn every_commit_bumps_the_version_names_its_driver_and_adds_one_event() {
    let d = decide(&record(), &turn(), ran(Outcome::next("b", json!({}))));
    assert_eq!(d.record.version, 8);
    assert_eq!(d.record.driven_by.as_deref(), Some("m-1"));
    assert_eq!(d.record.history_count, 5);
    assert_eq!(d.event.seq, 5);
    assert_eq!(d.event.at, NOW);
    assert_eq!(d.record.updated_at, NOW);
    assert_eq!(d.event.worker, "w");
    assert_eq!(d.event.attempt, 1);
    assert_eq!(d.event.to_status, d.record.status);
}

// Rule 11: timer chaining.

#[test]
fn a_wait_longer_than_the_queue_allows_is_chained() {
    let max = Duration::from_secs(900);
    assert_eq!(task_delay(NOW + 30_000, NOW, max), Duration::from_secs(30));
    assert_eq!(task_delay(NOW + HOUR, NOW, max), max);
    assert_eq!(task_delay(NOW - 5, NOW, max), Duration::ZERO);
}
