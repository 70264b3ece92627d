//! The job: one run of a workflow, and the history of how it got where it is.
//!
//! A [`JobRecord`] is the single source of truth for a job. Queue messages only say
//! "look at job J"; everything else is read from the record.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, the engine's one unit of time on records.
pub type Millis = i64;

/// Identifier of a job. Deterministic when derived from a caller's idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

/// Namespace for job ids derived from idempotency keys (UUID v5).
const JOB_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c0e_5b9a_1f3d_4e8a_9a47_0c51_2d7e_b3f1);

impl JobId {
    /// Wraps an existing id (read from a table, a message or the command line).
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// A fresh random id, for jobs nobody will ask to create twice.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    /// The id that `key` always maps to within `workflow`: creating a job twice with the
    /// same key yields the same id, which is what makes creation idempotent.
    pub fn from_key(workflow: &str, key: &str) -> Self {
        let name = format!("{workflow}\u{1f}{key}");
        Self(uuid::Uuid::new_v5(&JOB_ID_NAMESPACE, name.as_bytes()).to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life. The names are the ones written to the `Status` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Created; its first step has not committed yet.
    Pending,
    /// Its current step is due now (a worker has it or is about to).
    Running,
    /// Its current step is due later: a timer, a poll interval, or a retry backoff.
    Waiting,
    /// Finished well.
    Succeeded,
    /// Finished badly; `LastError` says why, `Step` says where. Can be retried.
    Failed,
    /// Stopped by an operator.
    Cancelled,
}

impl JobStatus {
    /// Every status, in life-cycle order.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Pending,
        JobStatus::Running,
        JobStatus::Waiting,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// The statuses a job can still move on from.
    pub const ACTIVE: [JobStatus; 3] = [JobStatus::Pending, JobStatus::Running, JobStatus::Waiting];

    /// Whether the job is finished for good (until an operator retries it).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }

    /// The attribute value, e.g. `"WAITING"`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Running => "RUNNING",
            JobStatus::Waiting => "WAITING",
            JobStatus::Succeeded => "SUCCEEDED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }

    /// Parses an attribute value or a command-line word (case-insensitive).
    pub fn parse(s: &str) -> Option<JobStatus> {
        JobStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stored state of one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    /// `JobId`.
    pub job_id: JobId,
    /// `Workflow`: the name the workflow was registered under.
    pub workflow: String,
    /// `Status`.
    pub status: JobStatus,
    /// `Step`: the step that runs next, or the one the job ended in.
    pub step: String,
    /// `Attempt`: how many attempts of `step` have started (a crashed attempt counts).
    pub attempt: u32,
    /// `Version`: bumped by every commit; tasks name the version they were sent for.
    pub version: u64,
    /// `Data`: the workflow's state, as JSON. Never secret material.
    pub data: serde_json::Value,
    /// Top-level string attributes a workflow asked to index or show (e.g. a resource name).
    pub labels: BTreeMap<String, String>,
    /// `CreatedAt`.
    pub created_at: Millis,
    /// `UpdatedAt`: time of the last commit.
    pub updated_at: Millis,
    /// `NextWakeAt`: when `step` is due.
    pub next_wake_at: Millis,
    /// `DeadlineAt`: the job fails if it is not finished by then.
    pub deadline_at: Millis,
    /// `LeaseOwner`: the worker running the job now, if any.
    pub lease_owner: Option<String>,
    /// `LeaseUntil`: when that lease lapses unless renewed.
    pub lease_until: Option<Millis>,
    /// `DrivenBy`: id of the message whose holder made the last commit.
    pub driven_by: Option<String>,
    /// `LastError`: the most recent error, kept after recovery for the operator.
    pub last_error: Option<String>,
    /// `CancelRequested`: an operator asked to stop the job at its next step boundary.
    pub cancel_requested: bool,
    /// `HistoryCount`: number of history events written so far.
    pub history_count: u32,
    /// `ExpiresAt` (epoch seconds): the table's TTL removes the job after this.
    pub expires_at: Option<i64>,
    /// `TraceParent`: W3C trace context shared by every span of this job.
    pub trace_parent: Option<String>,
    /// `RequestDigest`: digest of the request the job was created for, when its creator
    /// gave one ([`crate::RequestKey`]); a later create with another digest is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_digest: Option<String>,
}

impl JobRecord {
    /// Whether a lease is held and has not lapsed at `now`.
    pub fn lease_live(&self, now: Millis) -> bool {
        self.lease_owner.is_some() && self.lease_until.is_some_and(|until| until > now)
    }
}

/// What a history event records. Written to the `Event` attribute in kebab-case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// The job was created.
    Created,
    /// A step finished and the job moved to another step.
    StepCompleted,
    /// A step asked to run again later (polling).
    Polled,
    /// A step failed with a retryable error; it will run again after a backoff.
    RetryScheduled,
    /// The job succeeded.
    Succeeded,
    /// The job failed.
    Failed,
    /// The job was cancelled.
    Cancelled,
    /// An operator restarted a failed job from the step that failed.
    Retried,
    /// An outside signal woke a job waiting on a timer: its step is due now.
    Woken,
}

impl EventKind {
    /// The attribute value, e.g. `"retry-scheduled"`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::StepCompleted => "step-completed",
            EventKind::Polled => "polled",
            EventKind::RetryScheduled => "retry-scheduled",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
            EventKind::Retried => "retried",
            EventKind::Woken => "woken",
        }
    }

    /// Parses the attribute value.
    pub fn parse(s: &str) -> Option<EventKind> {
        [
            EventKind::Created,
            EventKind::StepCompleted,
            EventKind::Polled,
            EventKind::RetryScheduled,
            EventKind::Succeeded,
            EventKind::Failed,
            EventKind::Cancelled,
            EventKind::Retried,
            EventKind::Woken,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One entry of a job's history, stored as its own item beside the record and written in
/// the same transaction as the transition it describes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// `Seq`: 1 for the creation, then one more per commit.
    pub seq: u32,
    /// `At`.
    pub at: Millis,
    /// `Event`.
    pub kind: EventKind,
    /// `Step`: the step that ran (or, for `created`/`retried`, the step the job starts at).
    pub step: String,
    /// `Attempt`: which attempt of that step.
    pub attempt: u32,
    /// `DurationMs`: how long the step ran, when a step ran.
    pub duration_ms: Option<u64>,
    /// `ToStep`: the step the job is at after this event.
    pub to_step: String,
    /// `ToStatus`: the status the job has after this event.
    pub to_status: JobStatus,
    /// `Error`: the error of a failed attempt or job.
    pub error: Option<String>,
    /// `Note`: what the step chose to tell the operator (never secret material).
    pub note: Option<String>,
    /// `Worker`: the worker (or operator) that made the change.
    pub worker: String,
}
