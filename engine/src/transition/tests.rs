//! One test per rule of the state machine, on plain values: no runtime, no backend.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::backend::LeaseRequest;
use crate::job::JobId;
use crate::workflow::Outcome;

const NOW: Millis = 1_000_000;
const HOUR: Millis = 3_600_000;

fn record() -> JobRecord {
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

fn ask(version: u64, message_id: &str) -> LeaseRequest<'_> {
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

fn idle(mut rec: JobRecord) -> JobRecord {
    rec.lease_owner = None;
    rec.lease_until = None;
    rec
}

// Rule 1: validity.

#[test]
fn a_message_naming_the_current_version_is_valid() {
    assert_eq!(judge(&ask(7, "other"), &idle(record())), Verdict::Lease);
}

#[test]
fn the_message_that_drove_the_last_commit_is_valid_whatever_its_version() {
    assert_eq!(judge(&ask(3, "m-0"), &idle(record())), Verdict::Lease);
}

#[test]
fn any_other_message_is_stale() {
    assert_eq!(judge(&ask(6, "other"), &idle(record())), Verdict::Stale);
}

#[test]
fn every_message_for_a_finished_job_is_stale() {
    for status in [
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        let mut rec = idle(record());
        rec.status = status;
        assert_eq!(judge(&ask(7, "m-0"), &rec), Verdict::Stale, "{status}");
    }
}

// Rule 2: leases.

#[test]
fn a_live_lease_held_elsewhere_keeps_a_valid_message_waiting() {
    assert_eq!(judge(&ask(7, "m-1"), &record()), Verdict::Held);
}

#[test]
fn a_lapsed_lease_can_be_taken_over() {
    let mut rec = record();
    rec.lease_until = Some(NOW);
    assert_eq!(judge(&ask(7, "m-1"), &rec), Verdict::Lease);
}

#[test]
fn a_step_due_later_is_not_run_early_but_one_due_within_the_slack_is() {
    let mut rec = idle(record());
    rec.next_wake_at = NOW + 5_000;
    assert_eq!(judge(&ask(7, "m-1"), &rec), Verdict::NotDue);
    rec.next_wake_at = NOW + 1_000;
    assert_eq!(judge(&ask(7, "m-1"), &rec), Verdict::Lease);
}

#[test]
fn a_cancel_request_wakes_a_waiting_job_before_its_timer() {
    let mut rec = idle(record());
    rec.next_wake_at = NOW + HOUR;
    rec.cancel_requested = true;
    assert_eq!(judge(&ask(7, "m-1"), &rec), Verdict::Lease);
}

#[test]
fn taking_the_lease_counts_an_attempt() {
    let mut rec = idle(record());
    take_lease(&mut rec, "w#2", NOW + 60_000);
    assert_eq!(rec.attempt, 2);
    assert_eq!(rec.lease_owner.as_deref(), Some("w#2"));
    assert_eq!(rec.lease_until, Some(NOW + 60_000));
    assert_eq!(rec.version, 7, "taking a lease is not a transition");
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

// Rule 9: retry from the failed step.

#[test]
fn a_failed_job_is_retried_from_the_step_that_failed() {
    let mut old = idle(record());
    old.status = JobStatus::Failed;
    old.step = "b".into();
    old.attempt = 3;
    old.last_error = Some("boom".into());
    old.expires_at = Some(99);
    let (rec, event) = retried(&old, NOW, NOW + HOUR * 2, "retry:x".into(), "ops").unwrap();
    assert_eq!(rec.status, JobStatus::Running);
    assert_eq!(rec.step, "b");
    assert_eq!(rec.attempt, 0);
    assert_eq!(rec.version, old.version + 1);
    assert_eq!(rec.deadline_at, NOW + HOUR * 2);
    assert_eq!(rec.driven_by.as_deref(), Some("retry:x"));
    assert_eq!(
        rec.expires_at, None,
        "a retried job is no longer due to expire"
    );
    assert_eq!(event.kind, EventKind::Retried);
    assert_eq!(event.note.as_deref(), Some("previous error: boom"));
    assert_eq!(event.worker, "ops");
    assert_eq!(event.seq, old.history_count + 1);
}

#[test]
fn only_failed_jobs_can_be_retried() {
    for status in [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Waiting,
        JobStatus::Succeeded,
        JobStatus::Cancelled,
    ] {
        let mut old = record();
        old.status = status;
        let err = retried(&old, NOW, NOW, "r".into(), "ops").unwrap_err();
        assert!(
            err.0.contains("only FAILED jobs can be retried"),
            "{}",
            err.0
        );
    }
}

// Rule 10: cancel.

#[test]
fn only_active_jobs_can_be_cancelled() {
    for status in JobStatus::ALL {
        assert_eq!(cancellable(status), JobStatus::ACTIVE.contains(&status));
    }
}

// Rule 11: timer chaining.

#[test]
fn a_wait_longer_than_the_queue_allows_is_chained() {
    let max = Duration::from_secs(900);
    assert_eq!(task_delay(NOW + 30_000, NOW, max), Duration::from_secs(30));
    assert_eq!(task_delay(NOW + HOUR, NOW, max), max);
    assert_eq!(task_delay(NOW - 5, NOW, max), Duration::ZERO);
}

// Creation.

#[test]
fn a_new_job_is_pending_at_its_first_step_with_its_created_event() {
    let id = JobId::new("j");
    let input = json!({"x": 1});
    let labels = BTreeMap::new();
    let creation = |lease| Creation {
        id: &id,
        workflow: "wf",
        first_step: "a",
        input: &input,
        labels: &labels,
        now: NOW,
        deadline_at: NOW + HOUR,
        trace_parent: "tp".into(),
        actor: "producer",
        lease,
    };
    let (rec, event) = created(creation(None));
    assert_eq!(rec.version, FIRST_VERSION);
    assert_eq!(
        (rec.status, rec.step.as_str(), rec.attempt),
        (JobStatus::Pending, "a", 0)
    );
    assert_eq!(rec.driven_by, None);
    assert_eq!((event.seq, event.kind), (FIRST_EVENT, EventKind::Created));
    assert_eq!(event.worker, "producer");
    assert!(needs_first_task(&rec, NOW));

    let (rec, event) = created(creation(Some(("w#3", NOW + 60_000, "m-9"))));
    assert_eq!(rec.attempt, 1, "the creating worker's attempt is counted");
    assert_eq!(rec.lease_owner.as_deref(), Some("w#3"));
    assert_eq!(rec.driven_by.as_deref(), Some("m-9"));
    assert_eq!(event.worker, "w#3");
    assert!(!needs_first_task(&rec, NOW), "its creator is running it");
}
