//! Backends: where jobs are stored ([`JobStore`]) and how tasks travel ([`TaskQueue`]).
//!
//! The production pair is DynamoDB ([`dynamodb::DynamoJobStore`]) and SQS
//! ([`sqs::SqsTaskQueue`]). The in-memory pair in [`memory`] exists for the engine's
//! deterministic simulation and nothing else.

pub mod dynamodb;
pub mod memory;
pub mod sqs;

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::entries::{Entry, EntryPage, EntryWrites, Groups};
use crate::error::{CommitError, QueueError, StoreError};
use crate::job::{HistoryEvent, JobId, JobRecord, JobStatus, Millis};

/// A request to take the lease of a job for one task message.
#[derive(Debug, Clone)]
pub struct LeaseRequest<'a> {
    /// The job.
    pub job_id: &'a JobId,
    /// The version the task message names.
    pub version: u64,
    /// The id of the message being handled (valid if it is the job's `DrivenBy`).
    pub message_id: &'a str,
    /// Who takes the lease.
    pub owner: &'a str,
    /// The store's notion of now.
    pub now: Millis,
    /// When the lease lapses unless renewed.
    pub until: Millis,
    /// A step waking at or before this counts as due (`now` plus a little slack, so a
    /// message delivered a moment early is not sent round again).
    pub due_by: Millis,
}

/// The lease rules live with the other rules of the state machine.
pub(crate) use crate::transition::{judge, take_lease, Verdict};

/// What taking a lease found.
#[derive(Debug, Clone, PartialEq)]
pub enum Acquired {
    /// The lease is ours; the record is as it is now (with the attempt counted).
    Leased(JobRecord),
    /// The message is valid but the step is not due yet: re-send it for later.
    NotDue(JobRecord),
    /// The message is valid but another worker holds a live lease.
    Held(JobRecord),
    /// The message is neither the current version nor the last driver, or the job is
    /// finished: acknowledge it.
    Stale,
    /// No such job.
    NotFound,
}

/// What one task decided, to be written atomically: the new record, the history event of
/// each decision (a run of fused steps and waits held in the task makes several), and the
/// entries its steps wrote.
#[derive(Debug, Clone)]
pub struct Commit<'a> {
    /// The record as read when the lease was taken (its version and cancel flag are the
    /// write's conditions).
    pub expected_version: u64,
    /// The lease holder; the write fails if it no longer holds the lease.
    pub owner: &'a str,
    /// Whether the holder had seen a cancel request (if one arrived since, the write fails).
    pub saw_cancel: bool,
    /// The record to write (version already bumped, once per event).
    pub record: &'a JobRecord,
    /// The events describing the transitions, oldest first (at least one).
    pub events: &'a [HistoryEvent],
    /// Entries the task's steps wrote ([`crate::entries`], rule 2), kept until the job's
    /// deadline at least. A store writes them in the same transaction when they fit, else
    /// just before it.
    pub entries: &'a EntryWrites,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// The jobs, newest update first.
    pub jobs: Vec<JobRecord>,
    /// Pass back to continue, if there is more.
    pub cursor: Option<String>,
}

/// The durable store of job records and their history.
#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Writes a new job and its first history event, unless a job with that id exists, in
    /// which case the existing record is returned.
    async fn create(
        &self,
        record: &JobRecord,
        event: &HistoryEvent,
    ) -> Result<Option<JobRecord>, StoreError>;

    /// Reads a job record (strongly consistent).
    async fn get(&self, job_id: &JobId) -> Result<Option<JobRecord>, StoreError>;

    /// Reads a job's history, oldest first.
    async fn history(&self, job_id: &JobId) -> Result<Vec<HistoryEvent>, StoreError>;

    /// Takes the lease for a task message if the message is valid, the job is due and no
    /// live lease is held; in one conditional write that also counts the attempt.
    async fn acquire(&self, req: &LeaseRequest<'_>) -> Result<Acquired, StoreError>;

    /// Extends a lease the caller holds. `Ok(false)`: the lease is no longer the caller's.
    async fn extend_lease(
        &self,
        job_id: &JobId,
        version: u64,
        owner: &str,
        until: Millis,
    ) -> Result<bool, StoreError>;

    /// Gives a lease back without a transition (shutdown), so another worker can go on.
    async fn release_lease(
        &self,
        job_id: &JobId,
        version: u64,
        owner: &str,
    ) -> Result<(), StoreError>;

    /// Writes a task's transitions, their history events and its entries in one
    /// transaction, conditioned on the version, the lease owner and the cancel flag.
    async fn commit(&self, commit: &Commit<'_>) -> Result<(), CommitError>;

    /// Writes an operator's transition (cancel of an idle job, retry of a failed one):
    /// conditioned on the version and on no live lease at `now`.
    async fn commit_unleased(
        &self,
        expected_version: u64,
        now: Millis,
        record: &JobRecord,
        event: &HistoryEvent,
    ) -> Result<(), CommitError>;

    /// Asks a running job to stop at its next step boundary. `Ok(false)`: the job is
    /// already finished.
    async fn request_cancel(&self, job_id: &JobId) -> Result<bool, StoreError>;

    /// Lists jobs in one status, most recently updated first.
    async fn list_by_status(
        &self,
        status: JobStatus,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page, StoreError>;

    /// Lists jobs carrying a label value (through that label's index), newest first.
    async fn list_by_label(
        &self,
        label: &str,
        value: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page, StoreError>;

    /// Active jobs whose step was due before `cutoff` and that no live lease covers: the
    /// candidates for a lost wake-up.
    async fn overdue(&self, cutoff: Millis, limit: usize) -> Result<Vec<JobRecord>, StoreError>;

    /// Writes entries of a job's `collection`, each replacing the entry of its key
    /// ([`crate::entries`]). `keep_until` is when they may expire at the earliest (the
    /// job's deadline); the store adds its retention.
    async fn put_entries(
        &self,
        job_id: &JobId,
        collection: &str,
        entries: &[Entry],
        keep_until: Millis,
    ) -> Result<(), StoreError>;

    /// Lists a job's entries of `collection` in key order, after key `after`, in
    /// `groups`, up to `limit` of them.
    async fn entries(
        &self,
        job_id: &JobId,
        collection: &str,
        groups: &Groups,
        after: Option<&str>,
        limit: usize,
    ) -> Result<EntryPage, StoreError>;
}

/// The body of a task message: "advance job J, which is at version V".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The job.
    #[serde(rename = "JobId")]
    pub job_id: JobId,
    /// The version the sender saw.
    #[serde(rename = "Version")]
    pub version: u64,
}

/// A message as received from a queue.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue's id for the message (the same on every redelivery).
    pub message_id: String,
    /// The handle to delete or hide this receipt of it.
    pub receipt: String,
    /// The body as sent.
    pub body: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    /// String message attributes (e.g. `traceparent`).
    pub attributes: Vec<(String, String)>,
    /// Who sent it, as the queue itself recorded (SQS's `SenderId` system attribute: an
    /// account id, an IAM user id, or a role's `<role id>:<session name>`); `None` when the
    /// queue does not say. Unlike a message attribute, the sender cannot choose it.
    pub sender_id: Option<String>,
}

/// An at-least-once message queue with per-message delays and visibility.
#[async_trait]
pub trait TaskQueue: Send + Sync + 'static {
    /// Sends `body`, invisible for `delay` (the queue caps it; callers chain longer waits).
    async fn send(
        &self,
        body: &str,
        delay: Duration,
        attributes: &[(String, String)],
    ) -> Result<(), QueueError>;

    /// Receives up to `max` messages, waiting up to `wait` for the first; each stays
    /// invisible to others for `visibility`.
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;

    /// Deletes a received message.
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;

    /// Makes a received message invisible for `visibility` from now (zero: visible now).
    async fn set_visibility(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError>;

    /// Moves a received message to the dead-letter queue with a reason attribute.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError>;

    /// The longest delay one message can carry.
    fn max_delay(&self) -> Duration {
        Duration::from_secs(900)
    }
}
