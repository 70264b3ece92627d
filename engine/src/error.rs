//! Errors, as a small taxonomy.
//!
//! A step reports [`StepError`]: *abort* (terminal, the job fails now), *retry* (again after
//! the step's backoff) or *retry after* a delay the step knows better (a throttling hint).
//! The backends report [`StoreError`] and [`QueueError`], which the runtime never turns into
//! a job failure: the job is left to be picked up again.

use std::time::Duration;

/// How a step failed, and so what the engine does next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// Terminal: the job fails at once with this message.
    #[error("{0}")]
    Abort(String),
    /// Transient: the step runs again after its policy's backoff, while attempts remain.
    #[error("{0}")]
    Retry(String),
    /// Transient, with a delay the step knows better than the policy.
    #[error("{message}")]
    RetryAfter {
        /// What went wrong.
        message: String,
        /// How long to wait before the next attempt.
        after: Duration,
    },
}

impl StepError {
    /// A terminal error.
    pub fn abort(message: impl Into<String>) -> Self {
        StepError::Abort(message.into())
    }

    /// A retryable error, retried with the step's backoff.
    pub fn retry(message: impl Into<String>) -> Self {
        StepError::Retry(message.into())
    }

    /// A retryable error, retried after `after`.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        StepError::RetryAfter {
            message: message.into(),
            after,
        }
    }

    /// Whether the engine may run the step again.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, StepError::Abort(_))
    }
}

/// A job-store call failed. Never fatal to a worker: the task is simply handled again.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The table does not exist (bootstrap has not run, or the name is wrong).
    #[error("table {table} not found — run `certflow bootstrap` or check the table name setting")]
    TableNotFound {
        /// The table name that was used.
        table: String,
    },
    /// A stored item could not be read back (missing or mistyped attribute).
    #[error("job item {job_id} is malformed: {reason}")]
    Malformed {
        /// The job the item belongs to.
        job_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The service answered with an error or could not be reached.
    #[error("job store: {0}")]
    Service(String),
    /// The caller asked for something the store cannot hold (an entry's name or key).
    #[error("job store: {0}")]
    Invalid(String),
}

/// The outcome of a conditional write that lost its condition.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// The record changed under us (another commit, a lost lease, a cancel request).
    #[error("the job changed since it was read (version, lease or cancel request)")]
    Conflict,
    /// The store failed; the outcome of the write is unknown.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A task-queue call failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue does not exist.
    #[error("queue {queue} not found — run `certflow bootstrap` or check the queue name setting")]
    QueueNotFound {
        /// The queue name or URL that was used.
        queue: String,
    },
    /// The service answered with an error or could not be reached.
    #[error("task queue: {0}")]
    Service(String),
}

/// Errors of the operator operations ([`crate::Jobs`]).
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// No job has that id.
    #[error("job {0} not found")]
    NotFound(String),
    /// The workflow name is not registered with this engine.
    #[error("unknown workflow {0:?}")]
    UnknownWorkflow(String),
    /// The operation does not apply to the job in its current status.
    #[error("{0}")]
    InvalidState(String),
    /// The job's input could not be encoded.
    #[error("job input: {0}")]
    Input(String),
    /// The caller's idempotency key already made a job for a different request: refused,
    /// and that job is left as it is.
    #[error(
        "{field} {key} was already used for a different request (job {job_id}); use a new {field}"
    )]
    RequestConflict {
        /// The request field holding the key (e.g. `RequestId`).
        field: String,
        /// The key.
        key: String,
        /// The job the key made first.
        job_id: String,
    },
    /// Another change to the job won the race; reading it again shows the new state.
    #[error("job {0} changed while the operation ran; try again")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}
