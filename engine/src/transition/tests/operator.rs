//! Rules 9, 10 and 12 and creation: the changes made from outside a step.

use std::collections::BTreeMap;

use serde_json::json;

use super::{idle, record, HOUR, NOW};
use crate::job::{EventKind, JobId, JobStatus};
use crate::transition::{
    cancellable, created, needs_first_task, retried, woken, Creation, FIRST_EVENT, FIRST_VERSION,
};

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
        request_digest: Some("sha256:ab"),
    };
    let (rec, event) = created(creation(None));
    assert_eq!(rec.version, FIRST_VERSION);
    assert_eq!(
        (rec.status, rec.step.as_str(), rec.attempt),
        (JobStatus::Pending, "a", 0)
    );
    assert_eq!(rec.driven_by, None);
    assert_eq!(rec.request_digest.as_deref(), Some("sha256:ab"));
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

// Rule 12: wake-ups.

/// A job waiting at step `wait` on a timer due in ten minutes.
fn waiting() -> crate::job::JobRecord {
    let mut rec = idle(record());
    rec.status = JobStatus::Waiting;
    rec.step = "wait".into();
    rec.attempt = 0;
    rec.next_wake_at = NOW + 600_000;
    rec
}

#[test]
fn a_wake_up_makes_the_waiting_step_due_now_and_nothing_else() {
    let old = waiting();
    let (rec, event) = woken(
        &old,
        "wait",
        NOW,
        "wake:x".into(),
        "events",
        "command c-1 Success",
    )
    .unwrap();
    assert_eq!(rec.next_wake_at, NOW);
    assert_eq!(rec.version, old.version + 1, "the timer's task turns stale");
    assert_eq!(rec.driven_by.as_deref(), Some("wake:x"));
    assert_eq!(
        (
            rec.status,
            &rec.step,
            rec.attempt,
            &rec.data,
            rec.deadline_at
        ),
        (
            old.status,
            &old.step,
            old.attempt,
            &old.data,
            old.deadline_at
        )
    );
    assert_eq!(event.kind, EventKind::Woken);
    assert_eq!(event.note.as_deref(), Some("command c-1 Success"));
    assert_eq!(event.seq, old.history_count + 1);
    assert_eq!(
        (event.worker.as_str(), event.to_status),
        ("events", JobStatus::Waiting)
    );
}

#[test]
fn a_late_early_repeated_or_misdirected_wake_up_changes_nothing() {
    let woke = |rec: &crate::job::JobRecord, step: &str| {
        woken(rec, step, NOW, "w".into(), "events", "r")
            .map(|_| ())
            .map_err(|e| e.0)
    };
    assert!(woke(&waiting(), "wait").is_ok());
    // Another step: the signal is for a wait the job is not in (early, or late).
    let err = woke(&waiting(), "install").unwrap_err();
    assert!(err.contains("is at step wait, not install"), "{err}");
    // Repeated: the first wake-up made it due.
    let (again, _) = woken(&waiting(), "wait", NOW, "w".into(), "events", "r").unwrap();
    assert!(woke(&again, "wait").unwrap_err().contains("is due already"));
    // Running: a worker holds it.
    let mut running = waiting();
    running.lease_owner = Some("w1#1".into());
    running.lease_until = Some(NOW + 60_000);
    assert!(woke(&running, "wait").unwrap_err().contains("is running"));
    // Ended.
    for status in [
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ] {
        let mut ended = waiting();
        ended.status = status;
        assert!(woke(&ended, "wait").unwrap_err().contains(status.as_str()));
    }
    // Being cancelled: its own task is on the way.
    let mut cancelling = waiting();
    cancelling.cancel_requested = true;
    assert!(woke(&cancelling, "wait").is_err());
}
