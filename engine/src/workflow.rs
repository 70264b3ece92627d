//! Workflows: named steps over one typed state.
//!
//! A step is a plain async function `(StepContext, S) -> Result<Outcome<S>, StepError>`.
//! The engine loads `S` from the job record, runs the step under its [`StepPolicy`], and
//! commits whatever the [`Outcome`] says. Everything durable about a job lives in `S`, so
//! `S` must never hold secret material: it is written to the jobs table.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::entries::{Entry, EntryWrites, Groups};
use crate::error::StepError;
use crate::job::{JobId, JobStatus, Millis};
use crate::ops::Jobs;

/// What a step decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome<S> {
    pub(crate) transition: Transition,
    pub(crate) state: S,
    pub(crate) note: Option<String>,
}

/// The transition part of an [`Outcome`], without the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// Move to `step`, due after `after` (zero: at once, in the same task when possible).
    Next {
        /// The step to run next.
        step: String,
        /// How long to wait first.
        after: Duration,
    },
    /// Run the same step again after `after` (polling); not counted as a failed attempt.
    Poll {
        /// How long to wait.
        after: Duration,
    },
    /// The job succeeded.
    Succeed,
    /// The job failed for the given reason (terminal).
    Fail {
        /// Why, for the operator.
        reason: String,
    },
}

impl<S> Outcome<S> {
    /// Go on to `step` at once.
    pub fn next(step: impl Into<String>, state: S) -> Self {
        Self::next_after(step, state, Duration::ZERO)
    }

    /// Go on to `step` after `after` (a durable timer: no worker waits).
    pub fn next_after(step: impl Into<String>, state: S, after: Duration) -> Self {
        Outcome {
            transition: Transition::Next {
                step: step.into(),
                after,
            },
            state,
            note: None,
        }
    }

    /// Run this step again after `after`.
    pub fn poll(state: S, after: Duration) -> Self {
        Outcome {
            transition: Transition::Poll { after },
            state,
            note: None,
        }
    }

    /// Finish the job successfully.
    pub fn succeed(state: S) -> Self {
        Outcome {
            transition: Transition::Succeed,
            state,
            note: None,
        }
    }

    /// Finish the job as failed, keeping `state` for the operator.
    pub fn fail(state: S, reason: impl Into<String>) -> Self {
        Outcome {
            transition: Transition::Fail {
                reason: reason.into(),
            },
            state,
            note: None,
        }
    }

    /// Adds a line for the job's history (what happened, for the operator).
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// The transition this outcome asks for.
    pub fn transition(&self) -> &Transition {
        &self.transition
    }

    /// The state this outcome carries.
    pub fn state(&self) -> &S {
        &self.state
    }
}

/// How a step is run: its time limit, how often, and how far apart its retries are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPolicy {
    /// One attempt is abandoned (and counted as a retryable failure) after this long.
    pub timeout: Duration,
    /// Attempts before the job fails (crashed attempts count).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub backoff_base: Duration,
    /// Upper bound of any retry delay.
    pub backoff_max: Duration,
}

impl Default for StepPolicy {
    fn default() -> Self {
        StepPolicy {
            timeout: Duration::from_secs(60),
            max_attempts: 5,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(300),
        }
    }
}

impl StepPolicy {
    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the number of attempts.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// Sets the backoff range.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max.max(base);
        self
    }

    /// The delay before the attempt after `attempt` (1-based): exponential, capped, with
    /// "equal jitter" (half fixed, half spread) so that jobs failing together do not retry
    /// together. The jitter is derived from `salt` (the job id) so a replayed simulation
    /// computes the same delays.
    pub fn retry_delay(&self, attempt: u32, salt: &str) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self
            .backoff_base
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max);
        let half = raw / 2;
        let spread = fnv1a(salt.as_bytes(), attempt) % 1_000;
        half + half.mul_f64(spread as f64 / 1_000.0)
    }
}

fn fnv1a(bytes: &[u8], extra: u32) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes.iter().copied().chain(extra.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What a step knows about the job it runs for.
#[derive(Clone)]
pub struct StepContext {
    pub(crate) job_id: JobId,
    pub(crate) workflow: String,
    pub(crate) step: String,
    pub(crate) attempt: u32,
    pub(crate) created_at: Millis,
    pub(crate) deadline_at: Millis,
    pub(crate) now: Millis,
    pub(crate) jobs: Option<Jobs>,
    /// Whether an earlier run of this step may have begun (see [`StepContext::first_run`]).
    pub(crate) replay: bool,
    /// The entries the task's steps wrote, committed with the task (`entries`, rule 2).
    pub(crate) writes: Option<Arc<Mutex<EntryWrites>>>,
}

impl StepContext {
    /// The job's id (stable: use it to derive idempotency tokens).
    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    /// The workflow's name.
    pub fn workflow(&self) -> &str {
        &self.workflow
    }

    /// The step being run.
    pub fn step(&self) -> &str {
        &self.step
    }

    /// Which attempt of this step this is (1-based): attempts are counted when a worker
    /// takes the job, and restart when the job moves to another step or polls.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// `true` only when no earlier run of this step can have begun since the job came to
    /// it: this is its first attempt, and the task runs on the first lease taken since the
    /// job's last commit. A task commits once, when the job leaves it (rule 8 of
    /// `engine::transition`), so a worker that dies after running steps it fused (rule 4)
    /// or waits it held (rule 13) leaves no trace of them, and the job runs them again
    /// from its last commit, attempt 1 in memory: the attempt alone cannot tell.
    ///
    /// A step with a side effect that must happen once (an export, a command sent) may act
    /// at once when this is `true`; when it is `false` it first looks for what an earlier
    /// run left under its [`idempotency_token`](Self::idempotency_token).
    pub fn first_run(&self) -> bool {
        !self.replay
    }

    /// When the job was created.
    pub fn created_at(&self) -> Millis {
        self.created_at
    }

    /// When the job fails if it has not finished.
    pub fn deadline_at(&self) -> Millis {
        self.deadline_at
    }

    /// The engine's clock when the attempt started.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// The engine's job operations, for steps that start other jobs.
    pub fn jobs(&self) -> Option<&Jobs> {
        self.jobs.as_ref()
    }

    /// Writes entries of this job's `collection` ([`crate::entries`]): per-item results
    /// kept beside the record. Idempotent per key, so a step that runs again may write
    /// them again.
    ///
    /// In a worker's task they are written with the task's commit (`entries`, rule 2), and
    /// the task's later steps read them through [`entries`](Self::entries) meanwhile.
    pub async fn put_entries(&self, collection: &str, entries: &[Entry]) -> Result<(), StepError> {
        if entries.is_empty() {
            return Ok(());
        }
        if let Some(writes) = &self.writes {
            let invalid = crate::entries::invalid(collection, None).or_else(|| {
                entries
                    .iter()
                    .find_map(|e| crate::entries::invalid(collection, Some(e)))
            });
            if let Some(why) = invalid {
                return Err(StepError::abort(format!(
                    "writing {collection} entries: {why}"
                )));
            }
            lock(writes).put(collection, entries);
            return Ok(());
        }
        self.jobs_or_abort()?
            .put_entries(&self.job_id, collection, entries, self.deadline_at)
            .await
            .map_err(|e| StepError::retry(format!("writing {collection} entries: {e}")))
    }

    /// Every entry of this job's `collection` in `groups`, in key order.
    pub async fn entries(
        &self,
        collection: &str,
        groups: &Groups,
    ) -> Result<Vec<Entry>, StepError> {
        let stored = self
            .jobs_or_abort()?
            .all_entries(&self.job_id, collection, groups)
            .await
            .map_err(|e| StepError::retry(format!("reading {collection} entries: {e}")))?;
        Ok(match &self.writes {
            Some(writes) => lock(writes).overlay(collection, groups, stored),
            None => stored,
        })
    }

    fn jobs_or_abort(&self) -> Result<&Jobs, StepError> {
        self.jobs
            .as_ref()
            .ok_or_else(|| StepError::abort("this step needs the job store, and runs without one"))
    }

    /// A token that is the same for every attempt of this step of this job and different
    /// for any other: the right idempotency key for a side effect made by the step.
    pub fn idempotency_token(&self, purpose: &str) -> String {
        idempotency_token(&self.job_id, &self.step, purpose)
    }
}

/// The idempotency token step `step` of job `job` gets for `purpose` (what
/// [`StepContext::idempotency_token`] returns), for tools that look up a step's side
/// effects from outside the step.
pub fn idempotency_token(job: &JobId, step: &str, purpose: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{job}\u{1f}{step}\u{1f}{purpose}").as_bytes(),
    )
    .to_string()
}

/// The task's entry writes; a step that panicked while holding them left them whole (each
/// `put` is one map insert), so a poisoned lock is still usable.
fn lock(writes: &Mutex<EntryWrites>) -> MutexGuard<'_, EntryWrites> {
    writes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type StepFn<S> =
    Arc<dyn Fn(StepContext, S) -> BoxFuture<'static, Result<Outcome<S>, StepError>> + Send + Sync>;
type StopFn<S> =
    Arc<dyn Fn(StepContext, S, StopReason) -> BoxFuture<'static, Option<String>> + Send + Sync>;
type EndFn<S> = Arc<dyn Fn(Ended, S) -> BoxFuture<'static, ()> + Send + Sync>;

/// How a job ended, as its [`Workflow::on_end`] hook sees it: after the commit that made
/// it terminal.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    /// The job.
    pub job_id: JobId,
    /// Its workflow.
    pub workflow: String,
    /// Its final status: `SUCCEEDED`, `FAILED` or `CANCELLED`.
    pub status: JobStatus,
    /// The step it ended in.
    pub step: String,
    /// Why it failed or was cancelled (its `LastError`), if it did not succeed.
    pub error: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// When it ended.
    pub at: Millis,
}

/// Why a job is being stopped from outside its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// An operator cancelled it.
    Cancelled,
    /// It ran past its deadline.
    DeadlineExceeded,
}

struct StepDef<S> {
    run: StepFn<S>,
    policy: StepPolicy,
}

/// How long a job may take unless its workflow says otherwise: a day, long enough for
/// timers and retries with the longest backoff, short enough that a stuck job fails (and
/// is seen) the next day rather than never.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// A workflow: a name, a first step, and named steps over the state `S`.
pub struct Workflow<S> {
    name: String,
    first: Option<String>,
    steps: HashMap<String, StepDef<S>>,
    deadline: Duration,
    on_stop: Option<StopFn<S>>,
    on_end: Option<EndFn<S>>,
}

impl<S> Workflow<S>
where
    S: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// A workflow named `name` (the `Workflow` attribute of its jobs).
    pub fn new(name: impl Into<String>) -> Self {
        Workflow {
            name: name.into(),
            first: None,
            steps: HashMap::new(),
            deadline: DEFAULT_DEADLINE,
            on_stop: None,
            on_end: None,
        }
    }

    /// Adds a step with the default policy. The first step added is where jobs start.
    pub fn step<F, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(StepContext, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome<S>, StepError>> + Send + 'static,
    {
        self.step_with(name, StepPolicy::default(), f)
    }

    /// Adds a step with its own policy.
    pub fn step_with<F, Fut>(mut self, name: &str, policy: StepPolicy, f: F) -> Self
    where
        F: Fn(StepContext, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome<S>, StepError>> + Send + 'static,
    {
        if self.first.is_none() {
            self.first = Some(name.to_string());
        }
        let run: StepFn<S> = Arc::new(move |ctx, s| Box::pin(f(ctx, s)));
        self.steps.insert(name.to_string(), StepDef { run, policy });
        self
    }

    /// Sets how long a job may take from creation to a terminal status (default 24 h).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets a hook run when the job is cancelled or passes its deadline, to stop work in
    /// flight (best effort; it returns a note for the history, e.g. what it cancelled).
    pub fn on_stop<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(StepContext, S, StopReason) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Option<String>> + Send + 'static,
    {
        self.on_stop = Some(Arc::new(move |ctx, s, r| Box::pin(f(ctx, s, r))));
        self
    }

    /// Sets a hook run once a job of this workflow has ended (succeeded, failed or been
    /// cancelled), to tell the world: e.g. publish an event. It runs after the commit that
    /// ended the job, so it reports only what is durable; it is best effort (a worker that
    /// dies between that commit and the hook loses the call), and it must not fail or take
    /// long: the task's message is deleted once it returns.
    pub fn on_end<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Ended, S) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_end = Some(Arc::new(move |e, s| Box::pin(f(e, s))));
        self
    }
}

/// The result of running one erased step: the outcome with its state as JSON.
pub(crate) type ErasedOutcome = Outcome<serde_json::Value>;

/// A workflow with its state type erased, as the runtime holds it.
pub(crate) trait ErasedWorkflow: Send + Sync {
    fn first_step(&self) -> Option<&str>;
    fn deadline(&self) -> Duration;
    fn policy(&self, step: &str) -> Option<StepPolicy>;
    fn has_step(&self, step: &str) -> bool;
    fn run<'a>(
        &'a self,
        ctx: StepContext,
        data: serde_json::Value,
    ) -> BoxFuture<'a, Result<ErasedOutcome, StepError>>;
    fn stop<'a>(
        &'a self,
        ctx: StepContext,
        data: serde_json::Value,
        reason: StopReason,
    ) -> BoxFuture<'a, Option<String>>;
    fn end<'a>(&'a self, ended: Ended, data: serde_json::Value) -> BoxFuture<'a, ()>;
}

impl<S> ErasedWorkflow for Workflow<S>
where
    S: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn first_step(&self) -> Option<&str> {
        self.first.as_deref()
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn policy(&self, step: &str) -> Option<StepPolicy> {
        self.steps.get(step).map(|d| d.policy)
    }

    fn has_step(&self, step: &str) -> bool {
        self.steps.contains_key(step)
    }

    fn run<'a>(
        &'a self,
        ctx: StepContext,
        data: serde_json::Value,
    ) -> BoxFuture<'a, Result<ErasedOutcome, StepError>> {
        Box::pin(async move {
            let def = self.steps.get(&ctx.step).ok_or_else(|| {
                StepError::abort(format!("workflow {} has no step {:?}", self.name, ctx.step))
            })?;
            let state: S = serde_json::from_value(data).map_err(|e| {
                StepError::abort(format!("job state does not fit step {}: {e}", ctx.step))
            })?;
            let outcome = (def.run)(ctx, state).await?;
            let state = serde_json::to_value(&outcome.state)
                .map_err(|e| StepError::abort(format!("step state cannot be encoded: {e}")))?;
            Ok(Outcome {
                transition: outcome.transition,
                state,
                note: outcome.note,
            })
        })
    }

    fn stop<'a>(
        &'a self,
        ctx: StepContext,
        data: serde_json::Value,
        reason: StopReason,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let hook = self.on_stop.as_ref()?;
            let state: S = serde_json::from_value(data).ok()?;
            hook(ctx, state, reason).await
        })
    }

    fn end<'a>(&'a self, ended: Ended, data: serde_json::Value) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(hook) = self.on_end.as_ref() else {
                return;
            };
            // A state that no longer fits (a job from an older version) ends unreported
            // rather than with a made-up state.
            match serde_json::from_value::<S>(data) {
                Ok(state) => hook(ended, state).await,
                Err(e) => {
                    tracing::warn!(job_id = %ended.job_id, error = %e, "job ended; its state does not fit the on_end hook")
                }
            }
        })
    }
}

/// The workflows a runtime knows, by name.
#[derive(Clone, Default)]
pub struct Registry {
    workflows: HashMap<String, Arc<dyn ErasedWorkflow>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a workflow under its name.
    ///
    /// # Panics
    /// If the workflow has no step: that is a programming error found at start-up.
    pub fn register<S>(mut self, workflow: Workflow<S>) -> Self
    where
        S: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        assert!(
            workflow.first.is_some(),
            "workflow {} has no steps",
            workflow.name
        );
        self.workflows
            .insert(workflow.name.clone(), Arc::new(workflow));
        self
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Arc<dyn ErasedWorkflow>> {
        self.workflows.get(name)
    }

    /// Names of the registered workflows.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.workflows.keys().map(String::as_str)
    }
}
