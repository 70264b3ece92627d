//! Rules 9 and 10 and creation: the changes made from outside a step.

use std::collections::BTreeMap;

use serde_json::json;

use super::{idle, record, HOUR, NOW};
use crate::job::{EventKind, JobId, JobStatus};
use crate::transition::{
    cancellable, created, needs_first_task, retried, Creation, FIRST_EVENT, FIRST_VERSION,
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
