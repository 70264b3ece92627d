//! Rules 1 and 2: which messages are valid, and when one may take the lease.

use super::{ask, idle, record, HOUR, NOW};
use crate::job::JobStatus;
use crate::transition::{judge, take_lease, Verdict};

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
