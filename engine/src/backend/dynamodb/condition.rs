//! The condition and update expressions of each store operation: the lease and commit
//! rules of docs/architecture.md, *Task protocol*, as DynamoDB evaluates them on the record.
//!
//! The in-memory store states the same rules in Rust (`backend::judge` for a lease); a
//! change to a rule changes both.
//!
//! In every expression `#Name` stands for the attribute `Name` of [`schema`], and each
//! [`Condition`] defines exactly the names and values its expressions use (DynamoDB rejects
//! a request that defines one it does not use); the tests check both.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

use super::codec::{n, s, Item};
use crate::backend::{Commit, LeaseRequest};
use crate::job::{JobStatus, Millis};
use crate::schema;

/// A condition expression with the attribute names and values of the request it goes in
/// (its own and those of the request's update expression, if any).
pub(super) struct Condition {
    pub(super) expression: String,
    pub(super) names: HashMap<String, String>,
    pub(super) values: Item,
}

impl Condition {
    fn new(
        expression: impl Into<String>,
        attrs: &[&str],
        values: Vec<(&str, AttributeValue)>,
    ) -> Self {
        Condition {
            expression: expression.into(),
            names: names(attrs),
            values: values
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}

/// `#Name -> Name` for each attribute.
fn names(attrs: &[&str]) -> HashMap<String, String> {
    attrs
        .iter()
        .map(|a| (format!("#{a}"), (*a).to_string()))
        .collect()
}

/// The three active statuses, as the values `:pending`, `:running` and `:waiting`.
fn active_statuses() -> [(&'static str, AttributeValue); 3] {
    [
        (":pending", s(JobStatus::Pending.as_str())),
        (":running", s(JobStatus::Running.as_str())),
        (":waiting", s(JobStatus::Waiting.as_str())),
    ]
}

/// Nothing is stored under the key yet: a job is created once, and a history event is
/// written once (a transition that lost a race must not overwrite the winner's event).
pub(super) fn item_is_new() -> Condition {
    Condition::new("attribute_not_exists(#JobId)", &[schema::PK], vec![])
}

/// Taking a lease: the holder's name and expiry, and one more attempt of the step.
pub(super) const ACQUIRE_UPDATE: &str = "SET #LeaseOwner = :o, #LeaseUntil = :u ADD #Attempt :one";

/// When a task message may take the lease (the rules of `judge`): the job is active, the
/// message is valid (current version or last driver), no live lease, and the step is due
/// (or a cancel request is waiting). Goes with [`ACQUIRE_UPDATE`].
pub(super) fn acquire(req: &LeaseRequest<'_>) -> Condition {
    let mut values = active_statuses().to_vec();
    values.extend([
        (":v", n(req.version)),
        (":m", s(req.message_id)),
        (":now", n(req.now)),
        (":due", n(req.due_by)),
        (":true", AttributeValue::Bool(true)),
        (":o", s(req.owner)),
        (":u", n(req.until)),
        (":one", n(1)),
    ]);
    Condition::new(
        "attribute_exists(#JobId) \
         AND #Status IN (:pending, :running, :waiting) \
         AND (#Version = :v OR #DrivenBy = :m) \
         AND (attribute_not_exists(#LeaseOwner) OR attribute_not_exists(#LeaseUntil) \
              OR #LeaseUntil <= :now) \
         AND (#NextWakeAt <= :due OR #CancelRequested = :true)",
        &[
            schema::PK,
            schema::STATUS_ATTR,
            schema::VERSION_ATTR,
            schema::DRIVEN_BY_ATTR,
            schema::LEASE_OWNER_ATTR,
            schema::LEASE_UNTIL_ATTR,
            schema::NEXT_WAKE_AT_ATTR,
            schema::CANCEL_REQUESTED_ATTR,
            schema::ATTEMPT_ATTR,
        ],
        values,
    )
}

/// Extending a lease: a new expiry.
pub(super) const EXTEND_LEASE_UPDATE: &str = "SET #LeaseUntil = :u";

/// Only the holder of the lease on this version extends it. Goes with
/// [`EXTEND_LEASE_UPDATE`].
pub(super) fn extend_lease(version: u64, owner: &str, until: Millis) -> Condition {
    Condition::new(
        "#Version = :v AND #LeaseOwner = :o",
        &[
            schema::VERSION_ATTR,
            schema::LEASE_OWNER_ATTR,
            schema::LEASE_UNTIL_ATTR,
        ],
        vec![(":v", n(version)), (":o", s(owner)), (":u", n(until))],
    )
}

/// Releasing a lease: no holder, no expiry.
pub(super) const RELEASE_LEASE_UPDATE: &str = "REMOVE #LeaseOwner, #LeaseUntil";

/// Only the holder of the lease on this version releases it. Goes with
/// [`RELEASE_LEASE_UPDATE`].
pub(super) fn release_lease(version: u64, owner: &str) -> Condition {
    Condition::new(
        "#Version = :v AND #LeaseOwner = :o",
        &[
            schema::VERSION_ATTR,
            schema::LEASE_OWNER_ATTR,
            schema::LEASE_UNTIL_ATTR,
        ],
        vec![(":v", n(version)), (":o", s(owner))],
    )
}

/// A leased transition: the record is still at the version read and leased to the writer,
/// and no cancel request arrived that the writer has not seen.
pub(super) fn commit(c: &Commit<'_>) -> Condition {
    if c.saw_cancel {
        Condition::new(
            "#Version = :v AND #LeaseOwner = :o",
            &[schema::VERSION_ATTR, schema::LEASE_OWNER_ATTR],
            vec![(":v", n(c.expected_version)), (":o", s(c.owner))],
        )
    } else {
        Condition::new(
            "#Version = :v AND #LeaseOwner = :o \
             AND (attribute_not_exists(#CancelRequested) OR #CancelRequested = :false)",
            &[
                schema::VERSION_ATTR,
                schema::LEASE_OWNER_ATTR,
                schema::CANCEL_REQUESTED_ATTR,
            ],
            vec![
                (":v", n(c.expected_version)),
                (":o", s(c.owner)),
                (":false", AttributeValue::Bool(false)),
            ],
        )
    }
}

/// An operator's transition (cancel of an idle job, retry of a failed one): the record is
/// still at the version read and nobody holds a live lease at `now`.
pub(super) fn commit_unleased(expected_version: u64, now: Millis) -> Condition {
    Condition::new(
        "#Version = :v AND (attribute_not_exists(#LeaseOwner) \
         OR attribute_not_exists(#LeaseUntil) OR #LeaseUntil <= :now)",
        &[
            schema::VERSION_ATTR,
            schema::LEASE_OWNER_ATTR,
            schema::LEASE_UNTIL_ATTR,
        ],
        vec![(":v", n(expected_version)), (":now", n(now))],
    )
}

/// Asking for a cancel: the flag the next step boundary honours.
pub(super) const REQUEST_CANCEL_UPDATE: &str = "SET #CancelRequested = :true";

/// Only an existing, active job can be asked to cancel. Goes with [`REQUEST_CANCEL_UPDATE`].
pub(super) fn request_cancel() -> Condition {
    let mut values = active_statuses().to_vec();
    values.push((":true", AttributeValue::Bool(true)));
    Condition::new(
        "attribute_exists(#JobId) AND #Status IN (:pending, :running, :waiting)",
        &[
            schema::PK,
            schema::STATUS_ATTR,
            schema::CANCEL_REQUESTED_ATTR,
        ],
        values,
    )
}

/// The sweeper's query on the status index: the jobs of one status.
pub(super) const OVERDUE_KEY: &str = "#Status = :s";

/// The sweeper's filter (with [`OVERDUE_KEY`], whose names and values it carries): jobs of
/// `status` due before `cutoff` that nobody holds a live lease on at `cutoff`.
pub(super) fn overdue(status: JobStatus, cutoff: Millis) -> Condition {
    Condition::new(
        "#NextWakeAt < :c AND (attribute_not_exists(#LeaseOwner) \
         OR attribute_not_exists(#LeaseUntil) OR #LeaseUntil <= :c)",
        &[
            schema::STATUS_ATTR,
            schema::NEXT_WAKE_AT_ATTR,
            schema::LEASE_OWNER_ATTR,
            schema::LEASE_UNTIL_ATTR,
        ],
        vec![(":s", s(status.as_str())), (":c", n(cutoff))],
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::job::{EventKind, HistoryEvent, JobId, JobRecord};

    /// The placeholders starting with `sigil` in `expressions`.
    fn placeholders(expressions: &[&str], sigil: char) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for e in expressions {
            let mut rest = *e;
            while let Some(at) = rest.find(sigil) {
                let tail = &rest[at + 1..];
                let end = tail
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .unwrap_or(tail.len());
                found.insert(format!("{sigil}{}", &tail[..end]));
                rest = &tail[end..];
            }
        }
        found
    }

    /// Every name and value `c` defines is used by `c` or `update`, every one they use is
    /// defined, and every name stands for an attribute of [`schema`].
    fn assert_consistent(what: &str, c: &Condition, update: Option<&str>) {
        let expressions: Vec<&str> = [Some(c.expression.as_str()), update]
            .into_iter()
            .flatten()
            .collect();
        let defined: BTreeSet<String> = c.names.keys().cloned().collect();
        assert_eq!(placeholders(&expressions, '#'), defined, "{what}: names");
        let defined: BTreeSet<String> = c.values.keys().cloned().collect();
        assert_eq!(placeholders(&expressions, ':'), defined, "{what}: values");
        for (placeholder, attr) in &c.names {
            assert_eq!(placeholder, &format!("#{attr}"), "{what}");
            assert!(
                schema::RESERVED_ATTRS.contains(&attr.as_str()),
                "{what}: {attr} is not a record attribute"
            );
        }
    }

    fn record() -> JobRecord {
        JobRecord {
            job_id: JobId::new("j-1"),
            workflow: "w".into(),
            status: JobStatus::Running,
            step: "a".into(),
            attempt: 1,
            version: 2,
            data: serde_json::Value::Null,
            labels: Default::default(),
            created_at: 0,
            updated_at: 0,
            next_wake_at: 0,
            deadline_at: 0,
            lease_owner: None,
            lease_until: None,
            driven_by: None,
            last_error: None,
            cancel_requested: false,
            history_count: 1,
            expires_at: None,
            trace_parent: None,
            request_digest: None,
        }
    }

    fn event() -> HistoryEvent {
        HistoryEvent {
            seq: 2,
            at: 0,
            kind: EventKind::StepCompleted,
            step: "a".into(),
            attempt: 1,
            duration_ms: None,
            to_step: "b".into(),
            to_status: JobStatus::Running,
            error: None,
            note: None,
            worker: "w-1".into(),
        }
    }

    /// The condition of a leased commit by `w-1` of version 2.
    fn commit_condition(saw_cancel: bool) -> Condition {
        let (rec, event) = (record(), event());
        commit(&Commit {
            expected_version: 2,
            owner: "w-1",
            saw_cancel,
            record: &rec,
            events: std::slice::from_ref(&event),
            entries: &crate::entries::EntryWrites::default(),
        })
    }

    #[test]
    fn every_expression_defines_exactly_what_it_uses() {
        let job_id = JobId::new("j-1");
        let req = LeaseRequest {
            job_id: &job_id,
            version: 2,
            message_id: "m-1",
            owner: "w-1",
            now: 10,
            until: 20,
            due_by: 11,
        };
        for (what, c, update) in [
            ("item_is_new", item_is_new(), None),
            ("acquire", acquire(&req), Some(ACQUIRE_UPDATE)),
            (
                "extend_lease",
                extend_lease(2, "w-1", 20),
                Some(EXTEND_LEASE_UPDATE),
            ),
            (
                "release_lease",
                release_lease(2, "w-1"),
                Some(RELEASE_LEASE_UPDATE),
            ),
            ("commit", commit_condition(false), None),
            ("commit after a cancel", commit_condition(true), None),
            ("commit_unleased", commit_unleased(2, 10), None),
            (
                "request_cancel",
                request_cancel(),
                Some(REQUEST_CANCEL_UPDATE),
            ),
            (
                "overdue",
                overdue(JobStatus::Waiting, 10),
                Some(OVERDUE_KEY),
            ),
        ] {
            assert_consistent(what, &c, update);
        }
    }

    #[test]
    fn only_a_commit_that_did_not_see_a_cancel_is_stopped_by_one() {
        let cancel = format!("#{}", schema::CANCEL_REQUESTED_ATTR);
        assert!(commit_condition(false).expression.contains(&cancel));
        assert!(!commit_condition(true).expression.contains(&cancel));
    }

    #[test]
    fn placeholders_are_found_whole() {
        assert_eq!(
            placeholders(&["#A = :v AND (#B_c <= :now)"], '#'),
            BTreeSet::from(["#A".to_string(), "#B_c".to_string()])
        );
        assert_eq!(
            placeholders(&["#A = :v AND (#B_c <= :now)"], ':'),
            BTreeSet::from([":v".to_string(), ":now".to_string()])
        );
    }
}
