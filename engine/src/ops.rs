//! Operations on jobs from outside the runtime: create, inspect, list, cancel, retry.
//!
//! These are what producers, the operator CLI and steps that start other jobs call. They
//! follow the same rules as the runtime: every change is a conditional write with its
//! history event, and every change that needs a worker is followed by a task message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::backend::{JobStore, Page, Task, TaskQueue};
use crate::clock::SharedClock;
use crate::entries::{Entry, EntryPage, Groups};
use crate::error::{CommitError, JobsError};
use crate::job::{HistoryEvent, JobId, JobRecord, JobStatus, Millis};
use crate::request::{same_request, RequestKey};
use crate::transition::{self, Creation, Refusal};
use crate::workflow::Registry;

/// Entries read per request by [`Jobs::all_entries`].
const ALL_ENTRIES_PAGE: usize = 1000;

/// A job to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Its id: from [`JobId::from_key`] when the caller has an idempotency key.
    pub id: JobId,
    /// The workflow to run.
    pub workflow: String,
    /// The workflow's initial state, as JSON.
    pub input: serde_json::Value,
    /// Top-level attributes to show and index (see [`crate::schema::JobTableSpec`]).
    pub labels: BTreeMap<String, String>,
    /// W3C trace context to continue, if the request carried one.
    pub trace_parent: Option<String>,
    /// The caller's idempotency key with its request's digest, when the workflow gives one:
    /// the key coming back with another request is then refused, not merged.
    pub request: Option<RequestKey>,
}

impl NewJob {
    /// A job of `workflow` with initial state `input`. With `key`, the job id is derived
    /// from it, so creating the same key twice yields one job.
    pub fn new<S: Serialize>(
        workflow: &str,
        key: Option<&str>,
        input: &S,
    ) -> Result<Self, JobsError> {
        let input = serde_json::to_value(input).map_err(|e| JobsError::Input(e.to_string()))?;
        Ok(NewJob {
            id: key.map_or_else(JobId::random, |k| JobId::from_key(workflow, k)),
            workflow: workflow.to_string(),
            input,
            labels: BTreeMap::new(),
            trace_parent: None,
            request: None,
        })
    }

    /// Records the request this job is for (see [`RequestKey`]): a later create of the same
    /// id whose request differs is refused with [`JobsError::RequestConflict`].
    pub fn for_request(mut self, key: RequestKey) -> Self {
        self.request = Some(key);
        self
    }

    /// Adds a label (a top-level attribute of the record).
    pub fn label(mut self, name: &str, value: impl Into<String>) -> Self {
        self.labels.insert(name.to_string(), value.into());
        self
    }
}

/// Whether [`Jobs::create`] made the job or found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    /// The job as it is now.
    pub record: JobRecord,
    /// `true` when the job already existed (the request was a duplicate).
    pub existed: bool,
}

struct Inner {
    store: Arc<dyn JobStore>,
    queue: Arc<dyn TaskQueue>,
    registry: Registry,
    clock: SharedClock,
    actor: String,
}

/// What [`Jobs::wake`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Wake {
    /// The job's step is due now; its record after the wake-up.
    Woken(Box<JobRecord>),
    /// Nothing changed, and why (the signal was late, early, repeated, or for another step).
    Ignored(String),
}

/// A handle for operations on jobs. Cheap to clone.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

impl Jobs {
    /// Operations over `store`, sending tasks on `queue`, for the workflows in `registry`.
    pub fn new(
        store: Arc<dyn JobStore>,
        queue: Arc<dyn TaskQueue>,
        registry: Registry,
        clock: SharedClock,
    ) -> Self {
        Jobs {
            inner: Arc::new(Inner {
                store,
                queue,
                registry,
                clock,
                actor: "operator".to_string(),
            }),
        }
    }

    /// The same operations, recorded in history as made by `actor`.
    pub fn with_actor(&self, actor: impl Into<String>) -> Self {
        Jobs {
            inner: Arc::new(Inner {
                store: Arc::clone(&self.inner.store),
                queue: Arc::clone(&self.inner.queue),
                registry: self.inner.registry.clone(),
                clock: Arc::clone(&self.inner.clock),
                actor: actor.into(),
            }),
        }
    }

    /// The job store.
    pub fn store(&self) -> &Arc<dyn JobStore> {
        &self.inner.store
    }

    /// The task queue.
    pub fn queue(&self) -> &Arc<dyn TaskQueue> {
        &self.inner.queue
    }

    /// The registered workflows.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The engine's clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The record and first history event of a new job, optionally already leased to a
    /// worker that will run it at once (`lease`: owner, until, driving message id).
    pub(crate) fn new_record(
        &self,
        new: &NewJob,
        now: Millis,
        lease: Option<(&str, Millis, &str)>,
    ) -> Result<(JobRecord, HistoryEvent), JobsError> {
        let wf = self
            .inner
            .registry
            .get(&new.workflow)
            .ok_or_else(|| JobsError::UnknownWorkflow(new.workflow.clone()))?;
        let first = wf.first_step().unwrap_or_default();
        if let Some(bad) = new
            .labels
            .keys()
            .find(|k| crate::schema::RESERVED_ATTRS.contains(&k.as_str()))
        {
            return Err(JobsError::Input(format!(
                "label {bad} is an engine attribute"
            )));
        }
        let trace_parent = new
            .trace_parent
            .clone()
            .unwrap_or_else(crate::trace::new_trace_parent);
        Ok(transition::created(Creation {
            id: &new.id,
            workflow: &new.workflow,
            first_step: first,
            input: &new.input,
            labels: &new.labels,
            now,
            deadline_at: now + wf.deadline().as_millis() as Millis,
            trace_parent,
            actor: &self.inner.actor,
            lease,
            request_digest: new.request.as_ref().map(|k| k.digest.as_str()),
        }))
    }

    /// Refuses a create that found `existing` under its id but was made for another
    /// request (see [`crate::request`]).
    pub(crate) fn check_same_request(new: &NewJob, existing: &JobRecord) -> Result<(), JobsError> {
        match &new.request {
            Some(key) if !same_request(existing.request_digest.as_deref(), Some(key)) => {
                Err(key.conflict(&existing.job_id))
            }
            _ => Ok(()),
        }
    }

    /// Creates a job and sends its first task. Idempotent: a second call with the same id
    /// returns the existing job (and re-sends its first task if it never started, which
    /// covers a caller that crashed between the two) — unless both carry a request digest
    /// and they differ: then [`JobsError::RequestConflict`], and the existing job is left
    /// untouched.
    pub async fn create(&self, new: NewJob) -> Result<Created, JobsError> {
        let now = self.inner.clock.now();
        let (record, event) = self.new_record(&new, now, None)?;
        match self.inner.store.create(&record, &event).await? {
            None => {
                crate::trace::metrics()
                    .jobs_started
                    .add(1, &crate::trace::attrs(&record.workflow, &[]));
                self.send_traced(&record, Duration::ZERO).await?;
                Ok(Created {
                    record,
                    existed: false,
                })
            }
            Some(existing) => {
                Self::check_same_request(&new, &existing)?;
                if transition::needs_first_task(&existing, now) {
                    self.send_traced(&existing, Duration::ZERO).await?;
                }
                Ok(Created {
                    record: existing,
                    existed: true,
                })
            }
        }
    }

    /// Reads a job.
    pub async fn get(&self, id: &JobId) -> Result<JobRecord, JobsError> {
        self.inner
            .store
            .get(id)
            .await?
            .ok_or_else(|| JobsError::NotFound(id.to_string()))
    }

    /// Reads a job's history, oldest first.
    pub async fn history(&self, id: &JobId) -> Result<Vec<HistoryEvent>, JobsError> {
        Ok(self.inner.store.history(id).await?)
    }

    /// Writes entries of job `id`'s `collection` ([`crate::entries`]), kept at least until
    /// `keep_until` (the job's deadline) and then for the store's retention.
    pub async fn put_entries(
        &self,
        id: &JobId,
        collection: &str,
        entries: &[Entry],
        keep_until: Millis,
    ) -> Result<(), JobsError> {
        Ok(self
            .inner
            .store
            .put_entries(id, collection, entries, keep_until)
            .await?)
    }

    /// One page of job `id`'s entries of `collection`, in key order, after key `after`.
    pub async fn entries(
        &self,
        id: &JobId,
        collection: &str,
        groups: &Groups,
        after: Option<&str>,
        limit: usize,
    ) -> Result<EntryPage, JobsError> {
        Ok(self
            .inner
            .store
            .entries(id, collection, groups, after, limit)
            .await?)
    }

    /// Every entry of job `id`'s `collection` in `groups`, in key order, read a page at a
    /// time.
    pub async fn all_entries(
        &self,
        id: &JobId,
        collection: &str,
        groups: &Groups,
    ) -> Result<Vec<Entry>, JobsError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .entries(id, collection, groups, after.as_deref(), ALL_ENTRIES_PAGE)
                .await?;
            all.extend(page.entries);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(all),
            }
        }
    }

    /// Lists jobs in a status, most recently updated first.
    pub async fn list(
        &self,
        status: JobStatus,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page, JobsError> {
        Ok(self
            .inner
            .store
            .list_by_status(status, limit, cursor)
            .await?)
    }

    /// Asks a job to stop: it ends CANCELLED at its next step boundary (a waiting job is
    /// woken for it now). Refused for a finished job.
    pub async fn cancel(&self, id: &JobId) -> Result<JobRecord, JobsError> {
        let record = self.get(id).await?;
        if !transition::cancellable(record.status) || !self.inner.store.request_cancel(id).await? {
            let now = self.get(id).await?;
            return Err(JobsError::InvalidState(format!(
                "job {id} is already {}; only PENDING, RUNNING or WAITING jobs can be cancelled",
                now.status
            )));
        }
        // Wake it now rather than at its timer: a task at the current version is valid.
        self.send_traced(&record, Duration::ZERO).await?;
        self.get(id).await
    }

    /// Restarts a FAILED job from the step that failed, with a fresh attempt count and
    /// deadline. Earlier steps do not run again.
    pub async fn retry(&self, id: &JobId) -> Result<JobRecord, JobsError> {
        let old = self.get(id).await?;
        let wf = self
            .inner
            .registry
            .get(&old.workflow)
            .ok_or_else(|| JobsError::UnknownWorkflow(old.workflow.clone()))?;
        let now = self.inner.clock.now();
        let deadline_at = now + wf.deadline().as_millis() as Millis;
        // No task message drives an operator's commit: a marker of its own takes its place.
        let driven_by = format!("retry:{}", uuid::Uuid::new_v4());
        let (record, event) =
            transition::retried(&old, now, deadline_at, driven_by, &self.inner.actor)
                .map_err(|Refusal(reason)| JobsError::InvalidState(reason))?;
        match self
            .inner
            .store
            .commit_unleased(old.version, now, &record, &event)
            .await
        {
            Ok(()) => {}
            Err(CommitError::Conflict) => return Err(JobsError::Conflict(id.to_string())),
            Err(CommitError::Store(e)) => return Err(e.into()),
        }
        self.send_traced(&record, Duration::ZERO).await?;
        Ok(record)
    }

    /// Wakes job `id` if it waits on a timer at `step` (rule 12 of [`crate::transition`]):
    /// the step runs now instead of at its timer, and the history records `reason`. A
    /// signal that comes too late, too early or twice — the job running, at another step,
    /// due already, or ended — changes nothing and returns [`Wake::Ignored`] with why.
    pub async fn wake(&self, id: &JobId, step: &str, reason: &str) -> Result<Wake, JobsError> {
        let old = self.get(id).await?;
        let driven_by = format!("wake:{}", uuid::Uuid::new_v4());
        let wake = self.wake_record(&old, step, reason, driven_by).await?;
        if let Wake::Woken(record) = &wake {
            self.send_traced(record, Duration::ZERO).await?;
        }
        Ok(wake)
    }

    /// The wake-up's commit alone, driven by `driven_by`: whoever calls it hands the job
    /// on (a task, or the signal's own message, which `DrivenBy` makes valid for it).
    pub(crate) async fn wake_record(
        &self,
        old: &JobRecord,
        step: &str,
        reason: &str,
        driven_by: String,
    ) -> Result<Wake, JobsError> {
        let now = self.inner.clock.now();
        let (record, event) =
            match transition::woken(old, step, now, driven_by, &self.inner.actor, reason) {
                Ok(pair) => pair,
                Err(Refusal(why)) => return Ok(Wake::Ignored(why)),
            };
        match self
            .inner
            .store
            .commit_unleased(old.version, now, &record, &event)
            .await
        {
            Ok(()) => Ok(Wake::Woken(Box::new(record))),
            // Someone moved the job meanwhile (a worker took it, another signal woke it):
            // what this signal asked for has happened or is moot.
            Err(CommitError::Conflict) => Ok(Wake::Ignored(format!(
                "job {} changed meanwhile",
                old.job_id
            ))),
            Err(CommitError::Store(e)) => Err(e.into()),
        }
    }

    /// Sends the task for `record`'s current version, carrying its trace context.
    pub(crate) async fn send_traced(
        &self,
        record: &JobRecord,
        delay: Duration,
    ) -> Result<(), JobsError> {
        let body = task_body(&record.job_id, record.version);
        self.inner
            .queue
            .send(&body, delay, &trace_attributes(record))
            .await?;
        Ok(())
    }
}

/// The message attributes of a task for `record`: its trace context.
pub(crate) fn trace_attributes(record: &JobRecord) -> Vec<(String, String)> {
    record
        .trace_parent
        .iter()
        .map(|tp| (crate::trace::TRACEPARENT.to_string(), tp.clone()))
        .collect()
}

/// The JSON body of a task message.
pub(crate) fn task_body(id: &JobId, version: u64) -> String {
    let task = Task {
        job_id: id.clone(),
        version,
    };
    // A struct of a string and an integer always serialises.
    serde_json::to_string(&task).unwrap_or_default()
}
