//! Names and key schemas of the engine's tables and queues, in one place.
//!
//! `bootstrap` and the deployment templates both take their names from here, so the code
//! and the infrastructure cannot drift apart.

/// Default name of the jobs table.
pub const DEFAULT_JOBS_TABLE: &str = "certflow-jobs";
/// Default name of the task queue (its dead-letter queue adds [`DLQ_SUFFIX`]).
pub const DEFAULT_TASKS_QUEUE: &str = "certflow-tasks";
/// Default name of the intake queue, where producers send export requests (its
/// dead-letter queue adds [`DLQ_SUFFIX`]).
pub const DEFAULT_INTAKE_QUEUE: &str = "certflow-intake";
/// Default name of the events queue, where only the EventBridge rules send ACM's events
/// (its dead-letter queue adds [`DLQ_SUFFIX`]).
pub const DEFAULT_EVENTS_QUEUE: &str = "certflow-events";
/// The label an intake parser puts on a job it creates: the SQS `SenderId` of the message
/// that asked for it ([`crate::Delivery::sender_id`]). An ordinary label: not reserved and
/// not indexed, so it is simply stored on the record and shown with it.
pub const SENDER_ID_LABEL: &str = "SenderId";
/// Suffix of a queue's dead-letter queue.
pub const DLQ_SUFFIX: &str = "-dlq";
/// Receives of a message before SQS moves it to the dead-letter queue, for the task queue
/// and for an intake queue alike: a message is received again each time the worker holding
/// it dies (an intake request also wakes the job it created until the job's first hand-off
/// through the task queue), and only a message no worker can take should reach the DLQ.
pub const MAX_RECEIVES: u32 = 10;

/// Partition key of the jobs table: the job id.
pub const PK: &str = "JobId";
/// Sort key of the jobs table: [`RECORD_ITEM`] for the record, `H#<seq>` for history.
pub const SK: &str = "Item";
/// Sort-key value of a job's record.
pub const RECORD_ITEM: &str = "JOB";
/// Sort-key prefix of a job's history events.
pub const HISTORY_PREFIX: &str = "H#";
/// Sort-key prefix of a job's entries ([`crate::entries`]): `E#<collection>#<key>`.
pub const ENTRY_PREFIX: &str = "E#";

/// Global secondary index listing jobs by status, most recently updated first.
pub const STATUS_INDEX: &str = "ByStatus";
/// Partition key of [`STATUS_INDEX`]. Only records carry it; history items do not.
pub const STATUS_ATTR: &str = "Status";
/// Sort key of [`STATUS_INDEX`] (RFC 3339 text sorts by time).
pub const UPDATED_AT_ATTR: &str = "UpdatedAt";
/// Sort key of every label index.
pub const CREATED_AT_ATTR: &str = "CreatedAt";
/// The TTL attribute (epoch seconds), set when a job finishes.
pub const TTL_ATTR: &str = "ExpiresAt";

/// Name of the index over a label attribute, e.g. `ByCertificateArn`.
pub fn label_index(label: &str) -> String {
    format!("By{label}")
}

/// Name of a queue's dead-letter queue.
pub fn dlq_name(queue: &str) -> String {
    format!("{queue}{DLQ_SUFFIX}")
}

/// Sort-key prefix of the entries of `collection`.
pub fn entry_prefix(collection: &str) -> String {
    format!("{ENTRY_PREFIX}{collection}#")
}

/// Sort key of entry `key` in `collection`.
pub fn entry_item(collection: &str, key: &str) -> String {
    format!("{ENTRY_PREFIX}{collection}#{key}")
}

/// Name of the history item of event `seq`.
pub fn history_item(seq: u32) -> String {
    format!("{HISTORY_PREFIX}{seq:06}")
}

// Record attributes besides the keys, the index keys and the TTL above. Each is a
// top-level attribute of the record item (sort key [`RECORD_ITEM`]).

/// Record: the name the job's workflow was registered under.
pub const WORKFLOW_ATTR: &str = "Workflow";
/// Record: the step that runs next, or the one the job ended in. History: the step that ran
/// (or the step the job starts at, for a creation or a retry).
pub const STEP_ATTR: &str = "Step";
/// Record: how many attempts of the step have started (a crashed attempt counts). History:
/// which attempt of the step.
pub const ATTEMPT_ATTR: &str = "Attempt";
/// Record: bumped by every commit; task messages name the version they were sent for.
pub const VERSION_ATTR: &str = "Version";
/// Record: the workflow's state, as JSON text.
pub const DATA_ATTR: &str = "Data";
/// Record: when the step is due, epoch milliseconds.
pub const NEXT_WAKE_AT_ATTR: &str = "NextWakeAt";
/// Record: the job fails if it is not finished by then, epoch milliseconds.
pub const DEADLINE_AT_ATTR: &str = "DeadlineAt";
/// Record: the worker running the job now (only while leased).
pub const LEASE_OWNER_ATTR: &str = "LeaseOwner";
/// Record: when the lease lapses unless renewed, epoch milliseconds (only while leased).
pub const LEASE_UNTIL_ATTR: &str = "LeaseUntil";
/// Record: id of the message whose holder made the last commit.
pub const DRIVEN_BY_ATTR: &str = "DrivenBy";
/// Record: the most recent error, kept after recovery for the operator.
pub const LAST_ERROR_ATTR: &str = "LastError";
/// Record: an operator asked to stop the job at its next step boundary (boolean).
pub const CANCEL_REQUESTED_ATTR: &str = "CancelRequested";
/// Record: number of history events written so far.
pub const HISTORY_COUNT_ATTR: &str = "HistoryCount";
/// Record: W3C trace context shared by every span of the job.
pub const TRACE_PARENT_ATTR: &str = "TraceParent";
/// Record: digest of the request the job was created for (opaque to the engine; see
/// [`crate::request`]), absent on jobs created without one.
pub const REQUEST_DIGEST_ATTR: &str = "RequestDigest";

// History attributes, on the items with sort key [`history_item`] (besides [`STEP_ATTR`],
// [`ATTEMPT_ATTR`] and [`TTL_ATTR`], shared with the record).

/// History: the event's number in its job, 1 for the creation, then one more per commit.
pub const SEQ_ATTR: &str = "Seq";
/// History: when the event happened (RFC 3339).
pub const AT_ATTR: &str = "At";
/// History: the event kind, in kebab-case.
pub const EVENT_ATTR: &str = "Event";
/// History: how long the step ran, in milliseconds, when a step ran.
pub const DURATION_MS_ATTR: &str = "DurationMs";
/// History: the step the job is at after the event.
pub const TO_STEP_ATTR: &str = "ToStep";
/// History: the status the job has after the event.
pub const TO_STATUS_ATTR: &str = "ToStatus";
/// History: the error of a failed attempt or job.
pub const ERROR_ATTR: &str = "Error";
/// History: what the step chose to tell the operator (never secret material).
pub const NOTE_ATTR: &str = "Note";
/// History: the worker (or operator) that made the change.
pub const WORKER_ATTR: &str = "Worker";

// Entry attributes, on the items with sort key [`entry_item`] (besides [`DATA_ATTR`],
// [`AT_ATTR`] and [`TTL_ATTR`]). Entries carry neither `Status` nor a label, so they never
// appear in the indexes.

/// Entry: the group a listing can filter on.
pub const GROUP_ATTR: &str = "Group";

/// Attribute names the engine owns on a record. A workflow's labels must not use them.
/// (History attributes are not here: labels live on the record only.)
pub const RESERVED_ATTRS: &[&str] = &[
    PK,
    SK,
    WORKFLOW_ATTR,
    STATUS_ATTR,
    STEP_ATTR,
    ATTEMPT_ATTR,
    VERSION_ATTR,
    DATA_ATTR,
    CREATED_AT_ATTR,
    UPDATED_AT_ATTR,
    NEXT_WAKE_AT_ATTR,
    DEADLINE_AT_ATTR,
    LEASE_OWNER_ATTR,
    LEASE_UNTIL_ATTR,
    DRIVEN_BY_ATTR,
    LAST_ERROR_ATTR,
    CANCEL_REQUESTED_ATTR,
    HISTORY_COUNT_ATTR,
    TTL_ATTR,
    TRACE_PARENT_ATTR,
    REQUEST_DIGEST_ATTR,
];

/// The shape of a jobs table: its name and the labels it indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTableSpec {
    /// Table name.
    pub name: String,
    /// Label attributes with an index each (partition key the label, sort key
    /// [`CREATED_AT_ATTR`]).
    pub label_indexes: Vec<String>,
}

impl JobTableSpec {
    /// A table named `name` indexing `labels`.
    pub fn new(name: impl Into<String>, labels: &[&str]) -> Self {
        JobTableSpec {
            name: name.into(),
            label_indexes: labels.iter().map(|l| l.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_id_label_is_an_ordinary_label() {
        // Reserved names are refused as labels; the sender id must be storable as one.
        assert!(!RESERVED_ATTRS.contains(&SENDER_ID_LABEL));
        assert_eq!(dlq_name(DEFAULT_EVENTS_QUEUE), "certflow-events-dlq");
    }
}
