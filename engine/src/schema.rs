//! Names and key schemas of the engine's tables and queues, in one place.
//!
//! `bootstrap` and the deployment templates both take their names from here, so the code
//! and the infrastructure cannot drift apart.

/// Default name of the jobs table.
pub const DEFAULT_JOBS_TABLE: &str = "certflow-jobs";
/// Default name of the task queue (its dead-letter queue adds [`DLQ_SUFFIX`]).
pub const DEFAULT_TASKS_QUEUE: &str = "certflow-tasks";
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

/// Name of the history item of event `seq`.
pub fn history_item(seq: u32) -> String {
    format!("{HISTORY_PREFIX}{seq:06}")
}

/// Attribute names the engine owns on a record. A workflow's labels must not use them.
pub const RESERVED_ATTRS: &[&str] = &[
    PK,
    SK,
    "Workflow",
    STATUS_ATTR,
    "Step",
    "Attempt",
    "Version",
    "Data",
    CREATED_AT_ATTR,
    UPDATED_AT_ATTR,
    "NextWakeAt",
    "DeadlineAt",
    "LeaseOwner",
    "LeaseUntil",
    "DrivenBy",
    "LastError",
    "CancelRequested",
    "HistoryCount",
    TTL_ATTR,
    "TraceParent",
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
