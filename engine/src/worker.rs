//! The worker runtime: receive task messages, take leases, run steps, commit, send the next
//! task, and sweep for lost wake-ups.
//!
//! Every rule here comes from DESIGN §3; the comments say which invariant a line protects.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::backend::{Acquired, Commit, Delivery, LeaseRequest, Task, TaskQueue};
use crate::error::{CommitError, StepError};
use crate::job::{EventKind, HistoryEvent, JobId, JobRecord, JobStatus, Millis};
use crate::ops::{task_body, Jobs, NewJob};
use crate::workflow::{StepContext, StopReason, Transition};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// This worker's name on leases and history (unique per process).
    pub id: String,
    /// Messages (task and intake together) handled at once.
    pub concurrency: usize,
    /// Most messages asked for per receive (SQS allows up to 10). A receive never asks for
    /// more than the free slots; an idle queue is long-polled for one message, a busy one
    /// is read a batch at a time without waiting; with an intake queue each queue's batch is
    /// at most half of `concurrency`.
    pub batch: usize,
    /// Long-poll wait of one receive.
    pub poll_wait: Duration,
    /// How long a lease lasts unless renewed.
    pub lease: Duration,
    /// How long a received message stays hidden unless renewed.
    pub visibility: Duration,
    /// Steps run back to back in one task before handing over through the queue.
    pub max_fused_steps: u32,
    /// A step due within this much counts as due (absorbs early deliveries and skew).
    pub due_slack: Duration,
    /// After a shutdown request, how long in-flight steps may take before they are
    /// abandoned and their leases released.
    pub shutdown_budget: Duration,
    /// Mean interval between sweeps for lost wake-ups (jittered ±50 %); zero: no sweeper.
    pub sweep_every: Duration,
    /// A job counts as lost when its step was due this long ago and no lease covers it.
    pub sweep_grace: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_string());
        let tag = uuid::Uuid::new_v4().simple().to_string();
        WorkerConfig {
            id: format!("{host}-{}-{}", std::process::id(), &tag[..8]),
            concurrency: 32,
            batch: 10,
            poll_wait: Duration::from_secs(20),
            lease: Duration::from_secs(60),
            visibility: Duration::from_secs(60),
            max_fused_steps: 32,
            due_slack: Duration::from_millis(1_000),
            shutdown_budget: Duration::from_secs(25),
            sweep_every: Duration::from_secs(60),
            sweep_grace: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Running,
    /// Stop receiving and stop fusing steps; in-flight steps finish.
    Draining,
    /// The budget is spent: abandon steps, release leases, make messages visible again.
    Releasing,
}

struct Inner {
    jobs: Jobs,
    config: WorkerConfig,
    phase: watch::Sender<Phase>,
    handlers: std::sync::atomic::AtomicU64,
}

/// A worker runtime. Cheap to clone; clones share the shutdown state.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

/// Turns an intake message into a job, or says why it cannot be one (the message then goes
/// to the intake queue's dead-letter queue with that reason).
pub type IntakeParser = Arc<dyn Fn(&Delivery) -> Result<NewJob, String> + Send + Sync>;

/// An intake queue and how to read it.
#[derive(Clone)]
pub struct Intake {
    /// The queue producers send requests to.
    pub queue: Arc<dyn TaskQueue>,
    /// The parser.
    pub parse: IntakeParser,
}

/// A message being handled, and until when it is ours: past that instant the queue may have
/// handed it to another worker, so we must not delete it (with SQS an outdated receipt can
/// still delete the message another worker now relies on).
struct Hold {
    d: Delivery,
    visible_until: Millis,
    /// The lease owner token: the worker id plus a per-handler number, so that two
    /// handlers of one worker (a duplicate delivery, a stalled handler) never mistake
    /// each other's lease for their own.
    owner: String,
}

enum StepResult {
    /// Commit this record and event; `keep` says the lease is kept to run on.
    Commit {
        record: Box<JobRecord>,
        event: Box<HistoryEvent>,
        keep: bool,
    },
    /// The lease was lost or released: stop without touching the message.
    Abandon,
}

impl Worker {
    /// A worker over the store and task queue of `jobs`.
    pub fn new(jobs: Jobs, config: WorkerConfig) -> Self {
        let (phase, _) = watch::channel(Phase::Running);
        Worker {
            inner: Arc::new(Inner {
                jobs,
                config,
                phase,
                handlers: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// This worker's id.
    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    /// The job operations this worker uses.
    pub fn jobs(&self) -> &Jobs {
        &self.inner.jobs
    }

    fn now(&self) -> Millis {
        self.inner.jobs.clock().now()
    }

    fn owner_token(&self) -> String {
        let n = self
            .inner
            .handlers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}#{n}", self.inner.config.id)
    }

    fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }

    /// Runs until `shutdown` completes: receives task messages, handles them with bounded
    /// concurrency and sweeps for lost wake-ups. On shutdown it stops receiving, lets
    /// in-flight steps finish within the budget, then releases what is left, and returns.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        self.run_with_intake(None, shutdown).await;
    }

    /// Like [`Worker::run`], and also consumes an intake queue: each intake message is
    /// turned into a job by `intake.parse` and run at once (see [`Worker::start`]).
    pub async fn run_with_intake(
        &self,
        intake: Option<Intake>,
        shutdown: impl Future<Output = ()>,
    ) {
        let cfg = &self.inner.config;
        let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        let mut sweeper = JoinSet::new();
        if !cfg.sweep_every.is_zero() {
            let me = self.clone();
            sweeper.spawn(async move { me.sweep_forever().await });
        }
        info!(worker = %cfg.id, intake = intake.is_some(), "worker started");
        let (stop_tx, stop_rx) = watch::channel(false);
        // Each pump may hold at most its share of the slots while it receives, so that one
        // queue's receive never keeps the other queue's messages waiting.
        let pumps = if intake.is_some() { 2 } else { 1 };
        if cfg.concurrency < pumps {
            warn!(
                concurrency = cfg.concurrency,
                "one slot for two queues: each waits out the other's long poll; use a concurrency of 2 or more"
            );
        }
        let share = cfg.batch.min(cfg.concurrency / pumps).max(1);
        let tasks = self.pump(None, stop_rx.clone(), Arc::clone(&permits), share);
        let intake_pump = async {
            match intake {
                Some(i) => {
                    self.pump(Some(i), stop_rx, Arc::clone(&permits), share)
                        .await
                }
                None => JoinSet::new(),
            }
        };
        let stopper = async {
            shutdown.await;
            stop_tx.send_replace(true);
        };
        let (mut a, mut b, ()) = tokio::join!(tasks, intake_pump, stopper);
        sweeper.abort_all();
        while let Some(done) = b.try_join_next() {
            report_panic(done);
        }
        // One set to drain: move the intake handlers' completion into the task set.
        a.spawn(async move {
            while let Some(done) = b.join_next().await {
                report_panic(done);
            }
        });
        self.drain(&mut a).await;
        info!(worker = %cfg.id, "worker stopped");
    }

    /// Receives from one queue (the task queue, or an intake queue) until told to stop,
    /// and returns the handlers still running.
    async fn pump(
        &self,
        intake: Option<Intake>,
        mut stop: watch::Receiver<bool>,
        permits: Arc<Semaphore>,
        share: usize,
    ) -> JoinSet<()> {
        let cfg = &self.inner.config;
        let queue = match &intake {
            Some(i) => Arc::clone(&i.queue),
            None => Arc::clone(self.inner.jobs.queue()),
        };
        let mut handlers = JoinSet::new();
        let mut failures: u32 = 0;
        // Whether the last receive drained the queue (fewer messages than asked for). An
        // idle queue is long-polled holding a single slot, so that it does not keep its
        // whole share from the other queue for the length of every poll; while full batches
        // come back, it takes a batch at a time with receives that do not wait.
        let mut idle = true;
        loop {
            if *stop.borrow() {
                break;
            }
            while let Some(done) = handlers.try_join_next() {
                report_panic(done);
            }
            // Reserve the slots before receiving, and ask for no more messages than that: a
            // message fetched without a slot would wait with nothing extending its
            // visibility (it would come back, be received again, and could end in the DLQ).
            let first = tokio::select! {
                _ = stop.changed() => break,
                p = Arc::clone(&permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let mut reserved = vec![first];
            let want = if idle { 1 } else { share };
            while reserved.len() < want {
                match Arc::clone(&permits).try_acquire_owned() {
                    Ok(p) => reserved.push(p),
                    Err(_) => break,
                }
            }
            let room = reserved.len();
            // Only shutdown may interrupt a receive: an interrupted receive hides whatever
            // it fetched for a whole visibility timeout.
            let received = tokio::select! {
                _ = stop.changed() => break,
                r = queue.receive(room, if idle { cfg.poll_wait } else { Duration::ZERO }, cfg.visibility) => r,
            };
            match received {
                Ok(deliveries) => {
                    failures = 0;
                    // Fewer messages than asked for: the queue is drained for now.
                    idle = deliveries.len() < room;
                    for d in deliveries {
                        // The queue never returns more than asked; should it, the extra
                        // message is left to come back rather than run without a slot.
                        let Some(permit) = reserved.pop() else {
                            warn!(message_id = %d.message_id, "received more messages than asked for");
                            continue;
                        };
                        let me = self.clone();
                        let q = Arc::clone(&queue);
                        let parse = intake.as_ref().map(|i| Arc::clone(&i.parse));
                        handlers.spawn(async move {
                            match parse {
                                None => me.handle(q, d).await,
                                Some(parse) => match parse(&d) {
                                    Ok(new) => me.start(q, d, new).await,
                                    Err(reason) => {
                                        warn!(message_id = %d.message_id, %reason, "intake message refused; dead-lettering it");
                                        if let Err(e) = q.dead_letter(&d, &reason).await {
                                            warn!(error = %e, "could not dead-letter message");
                                        }
                                    }
                                },
                            }
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    // The slots go back while this queue backs off: the other queue may use them.
                    drop(reserved);
                    failures = failures.saturating_add(1);
                    let pause = Duration::from_millis(200u64 << failures.min(7));
                    warn!(error = %e, retry_in_ms = pause.as_millis() as u64, "receive failed");
                    tokio::select! {
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        handlers
    }

    async fn drain(&self, handlers: &mut JoinSet<()>) {
        let cfg = &self.inner.config;
        self.inner.phase.send_replace(Phase::Draining);
        info!(
            in_flight = handlers.len(),
            budget_s = cfg.shutdown_budget.as_secs(),
            "draining"
        );
        let budget = tokio::time::sleep(cfg.shutdown_budget);
        tokio::pin!(budget);
        loop {
            tokio::select! {
                next = handlers.join_next() => match next {
                    Some(done) => report_panic(done),
                    None => return,
                },
                _ = &mut budget => break,
            }
        }
        // Out of time: tell the steps still running to let go, and give them a moment to
        // release their leases so that another worker continues at once.
        self.inner.phase.send_replace(Phase::Releasing);
        warn!(
            in_flight = handlers.len(),
            "shutdown budget spent; releasing leases"
        );
        let grace = tokio::time::sleep(Duration::from_secs(3));
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = handlers.join_next() => match next {
                    Some(done) => report_panic(done),
                    None => return,
                },
                _ = &mut grace => {
                    handlers.abort_all();
                    return;
                }
            }
        }
    }

    /// Handles one task message from `source`.
    pub async fn handle(&self, source: Arc<dyn TaskQueue>, d: Delivery) {
        let task: Task = match serde_json::from_str(&d.body) {
            Ok(t) => t,
            Err(e) => {
                let reason = format!("not a task message: {e}");
                warn!(message_id = %d.message_id, %reason, "dead-lettering message");
                if let Err(e) = source.dead_letter(&d, &reason).await {
                    warn!(error = %e, "could not dead-letter message");
                }
                return;
            }
        };
        self.drive(source, d, &task.job_id, task.version).await;
    }

    /// Creates a job from a message on an intake queue and runs it at once, holding the
    /// lease from the start (no task round trip). A redelivered message finds its job by
    /// its deterministic id and is judged like any task message.
    pub async fn start(&self, source: Arc<dyn TaskQueue>, d: Delivery, mut new: NewJob) {
        if new.trace_parent.is_none() {
            new.trace_parent = d
                .attributes
                .iter()
                .find(|(k, v)| k == crate::trace::TRACEPARENT && crate::trace::parse(v).is_some())
                .map(|(_, v)| v.clone());
        }
        let now = self.now();
        let cfg = &self.inner.config;
        let until = now + cfg.lease.as_millis() as Millis;
        let owner = self.owner_token();
        let lease = Some((owner.as_str(), until, d.message_id.as_str()));
        let (record, event) = match self.inner.jobs.new_record(&new, now, lease) {
            Ok(pair) => pair,
            Err(e) => {
                let reason = format!("cannot create job: {e}");
                warn!(message_id = %d.message_id, %reason, "dead-lettering message");
                if let Err(e) = source.dead_letter(&d, &reason).await {
                    warn!(error = %e, "could not dead-letter message");
                }
                return;
            }
        };
        match self.inner.jobs.store().create(&record, &event).await {
            Err(e) => {
                warn!(job_id = %record.job_id, error = %e, "could not create job; the message will come back")
            }
            Ok(None) => {
                info!(job_id = %record.job_id, workflow = %record.workflow, "job created");
                crate::trace::metrics()
                    .jobs_started
                    .add(1, &crate::trace::attrs(&record.workflow, &[]));
                let hold = Hold {
                    visible_until: now + cfg.visibility.as_millis() as Millis,
                    d,
                    owner,
                };
                self.run_leased(source, hold, record).await;
            }
            Ok(Some(existing)) => {
                debug!(job_id = %existing.job_id, "job exists; judging the message as a task");
                self.drive(source, d, &existing.job_id, 1).await;
            }
        }
    }

    async fn drive(&self, source: Arc<dyn TaskQueue>, d: Delivery, job_id: &JobId, version: u64) {
        let cfg = &self.inner.config;
        let now = self.now();
        let hold = Hold {
            visible_until: now + cfg.visibility.as_millis() as Millis,
            d,
            owner: self.owner_token(),
        };
        let d = &hold.d;
        debug!(%job_id, version, message_id = %d.message_id, receipt = %d.receipt, owner = %hold.owner, "task received");
        let req = LeaseRequest {
            job_id,
            version,
            message_id: &d.message_id,
            owner: &hold.owner,
            now,
            until: now + cfg.lease.as_millis() as Millis,
            due_by: now + cfg.due_slack.as_millis() as Millis,
        };
        let store = self.inner.jobs.store();
        match store.acquire(&req).await {
            Err(e) => {
                warn!(%job_id, error = %e, "could not take lease; the message will come back")
            }
            Ok(Acquired::NotFound) => {
                let reason = format!("job {job_id} does not exist");
                warn!(message_id = %d.message_id, %reason, "dead-lettering task");
                if let Err(e) = source.dead_letter(d, &reason).await {
                    warn!(error = %e, "could not dead-letter message");
                }
            }
            Ok(Acquired::Stale) => {
                debug!(%job_id, version, "stale task acknowledged");
                self.ack(&source, &hold).await;
            }
            Ok(Acquired::Held(rec)) => {
                // Not ours to run, but ours to keep: if the holder dies, this message is
                // the one that takes over once its lease lapses.
                let until = rec.lease_until.unwrap_or(now);
                let wait = Duration::from_millis((until - now).max(0) as u64 + 1_000);
                debug!(%job_id, wait_ms = wait.as_millis() as u64, "job leased elsewhere; hiding message");
                if let Err(e) = source.set_visibility(&d.receipt, wait).await {
                    debug!(error = %e, "could not hide message");
                }
            }
            Ok(Acquired::NotDue(rec)) => {
                let delay = Duration::from_millis((rec.next_wake_at - now).max(0) as u64);
                if self.send_task(&rec, delay).await {
                    self.ack(&source, &hold).await;
                }
            }
            Ok(Acquired::Leased(rec)) => self.run_leased(source, hold, rec).await,
        }
    }

    async fn run_leased(&self, source: Arc<dyn TaskQueue>, mut hold: Hold, mut rec: JobRecord) {
        let cfg = &self.inner.config;
        let span =
            info_span!("job", job_id = %rec.job_id, workflow = %rec.workflow, worker = %cfg.id);
        crate::trace::join(&span, rec.trace_parent.as_deref());
        let lag = (self.now() - rec.next_wake_at).max(0) as f64 / 1000.0;
        crate::trace::metrics()
            .start_lag
            .record(lag, &crate::trace::attrs(&rec.workflow, &[]));
        let beat = (cfg.lease.min(cfg.visibility) / 3).max(Duration::from_millis(100));
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fused: u32 = 0;
        loop {
            let result = self
                .step(&source, &mut hold, &rec, fused, &mut heartbeat)
                .instrument(span.clone())
                .await;
            let (next, event, keep) = match result {
                StepResult::Abandon => return,
                StepResult::Commit {
                    record,
                    event,
                    keep,
                } => (*record, *event, keep),
            };
            let commit = Commit {
                expected_version: rec.version,
                owner: &hold.owner,
                saw_cancel: rec.cancel_requested,
                record: &next,
                event: &event,
            };
            let outcome = self.inner.jobs.store().commit(&commit).await;
            // A write that failed on the wire may still have landed (the connection dropped
            // after DynamoDB applied it, and the SDK's retry then lost its condition to our
            // own first attempt): the record tells.
            let landed = outcome.is_ok()
                || matches!(
                    self.inner.jobs.store().get(&rec.job_id).await,
                    Ok(Some(cur)) if same_commit(&cur, &next)
                );
            if landed {
                info!(parent: &span, step = %event.step, attempt = event.attempt, event = event.kind.as_str(), to_step = %next.step, status = %next.status, "committed");
                record_metrics(&next, &event);
            } else if let Err(err) = outcome {
                match err {
                    CommitError::Conflict => {
                        // A cancel request may have arrived: if we still hold the job, handle
                        // it now; otherwise someone else has it and we let go quietly, leaving
                        // the message alone (another worker may be holding it now).
                        match self.inner.jobs.store().get(&rec.job_id).await {
                            Ok(Some(cur))
                                if cur.version == rec.version
                                    && cur.lease_owner.as_deref() == Some(hold.owner.as_str())
                                    && cur.cancel_requested =>
                            {
                                rec = cur;
                                continue;
                            }
                            _ => {
                                info!(parent: &span, "lost the job to another worker; abandoning");
                                return;
                            }
                        }
                    }
                    CommitError::Store(e) => {
                        warn!(parent: &span, error = %e, "commit failed; the message will come back");
                        return;
                    }
                }
            }
            rec = next;
            if keep {
                fused += 1;
                continue;
            }
            break;
        }
        if !rec.status.is_terminal() {
            let delay = Duration::from_millis((rec.next_wake_at - self.now()).max(0) as u64);
            // If this send fails the message stays: it is the job's `DrivenBy`, so when it
            // comes back it is still valid and re-sends.
            if !self.send_task(&rec, delay).await {
                return;
            }
        }
        self.ack(&source, &hold).await;
    }

    /// Decides what happens to a leased job and, if a step is due, runs it.
    async fn step(
        &self,
        source: &Arc<dyn TaskQueue>,
        hold: &mut Hold,
        rec: &JobRecord,
        fused: u32,
        heartbeat: &mut tokio::time::Interval,
    ) -> StepResult {
        let cfg = &self.inner.config;
        // A lease older than a heartbeat period (this worker stalled since taking it) is
        // confirmed before any work: it may have lapsed and passed to another worker.
        let lease_ms = cfg.lease.as_millis() as Millis;
        if rec.lease_until.unwrap_or(0) - self.now() < lease_ms * 2 / 3
            && !self.heartbeat(source, hold, rec).await
        {
            info!(job_id = %rec.job_id, "lease lapsed before the step started; abandoning");
            return StepResult::Abandon;
        }
        let now = self.now();
        let d = &hold.d;
        let message_id = d.message_id.clone();
        let Some(wf) = self.inner.jobs.registry().get(&rec.workflow).cloned() else {
            let known: Vec<&str> = self.inner.jobs.registry().names().collect();
            let reason = format!(
                "unknown workflow {:?} (this worker runs: {})",
                rec.workflow,
                known.join(", ")
            );
            return self.finish(rec, &message_id, now, None, Err(reason), None);
        };
        let ctx = StepContext {
            job_id: rec.job_id.clone(),
            workflow: rec.workflow.clone(),
            step: rec.step.clone(),
            attempt: rec.attempt,
            created_at: rec.created_at,
            deadline_at: rec.deadline_at,
            now,
            jobs: Some(self.inner.jobs.clone()),
        };
        if rec.cancel_requested {
            let note = wf.stop(ctx, rec.data.clone(), StopReason::Cancelled).await;
            let mut out = self.base_next(rec, &message_id, now);
            out.status = JobStatus::Cancelled;
            return self.commit_of(rec, out, EventKind::Cancelled, None, None, note, false);
        }
        if now >= rec.deadline_at {
            let note = wf
                .stop(ctx, rec.data.clone(), StopReason::DeadlineExceeded)
                .await;
            let reason = format!(
                "deadline exceeded: the job did not finish by {} (it was at step {}, attempt {})",
                crate::clock::rfc3339(rec.deadline_at),
                rec.step,
                rec.attempt
            );
            return self.finish(rec, &message_id, now, None, Err(reason), note);
        }
        let Some(policy) = wf.policy(&rec.step) else {
            let reason = format!("workflow {} has no step {:?}", rec.workflow, rec.step);
            return self.finish(rec, &message_id, now, None, Err(reason), None);
        };
        if rec.attempt > policy.max_attempts {
            // Attempts are counted when the lease is taken, so attempts that died with
            // their worker count too: a step that kills its worker cannot loop forever.
            let reason = format!(
                "step {} did not complete in {} attempts (earlier attempts were interrupted)",
                rec.step, policy.max_attempts
            );
            return self.finish(rec, &message_id, now, None, Err(reason), None);
        }

        debug!(job_id = %rec.job_id, step = %rec.step, attempt = rec.attempt, lease_until = rec.lease_until.unwrap_or(0), now, "step starting");
        let started = tokio::time::Instant::now();
        let span =
            info_span!("step", job_id = %rec.job_id, step = %rec.step, attempt = rec.attempt);
        let run = tokio::time::timeout(policy.timeout, wf.run(ctx, rec.data.clone()))
            .instrument(span.clone());
        tokio::pin!(run);
        let mut phase = self.inner.phase.subscribe();
        let result = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = heartbeat.tick() => {
                    if !self.heartbeat(source, hold, rec).await {
                        info!(parent: &span, "lease lost during the step; abandoning it");
                        return StepResult::Abandon;
                    }
                }
                changed = phase.changed() => {
                    if changed.is_err() || *phase.borrow() == Phase::Releasing {
                        self.release(source, &hold.d, &hold.owner, rec).await;
                        return StepResult::Abandon;
                    }
                }
            }
        };
        let took = started.elapsed();
        let duration_ms = Some(took.as_millis() as u64);
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(StepError::retry(format!(
                "step {} timed out after {:?}",
                rec.step, policy.timeout
            ))),
        };
        match result {
            Ok(outcome) => {
                let mut out = self.base_next(rec, &message_id, now);
                out.data = outcome.state;
                let kind;
                let mut keep = false;
                match outcome.transition {
                    Transition::Next { step, after } => {
                        kind = EventKind::StepCompleted;
                        if !wf.has_step(&step) {
                            let reason = format!(
                                "step {} asked for step {step:?}, which workflow {} does not have",
                                rec.step, rec.workflow
                            );
                            return self.finish(
                                rec,
                                &message_id,
                                now,
                                duration_ms,
                                Err(reason),
                                None,
                            );
                        }
                        out.step = step;
                        out.attempt = 0;
                        if after.is_zero() {
                            out.status = JobStatus::Running;
                            keep =
                                fused + 1 < cfg.max_fused_steps && self.phase() == Phase::Running;
                        } else {
                            out.status = JobStatus::Waiting;
                            out.next_wake_at = wake_at(now, after, rec.deadline_at);
                        }
                    }
                    Transition::Poll { after } => {
                        kind = EventKind::Polled;
                        out.status = JobStatus::Waiting;
                        out.attempt = 0;
                        out.next_wake_at = wake_at(now, after, rec.deadline_at);
                    }
                    Transition::Succeed => {
                        kind = EventKind::Succeeded;
                        out.status = JobStatus::Succeeded;
                    }
                    Transition::Fail { reason } => {
                        kind = EventKind::Failed;
                        out.status = JobStatus::Failed;
                        out.last_error = Some(reason.clone());
                        return self.commit_of(
                            rec,
                            out,
                            kind,
                            duration_ms,
                            Some(reason),
                            outcome.note,
                            false,
                        );
                    }
                }
                if keep {
                    out.lease_owner = Some(hold.owner.clone());
                    out.lease_until = Some(now + cfg.lease.as_millis() as Millis);
                    out.attempt = 1;
                }
                self.commit_of(rec, out, kind, duration_ms, None, outcome.note, keep)
            }
            Err(StepError::Abort(reason)) => {
                self.finish(rec, &message_id, now, duration_ms, Err(reason), None)
            }
            Err(err) => {
                let message = err.to_string();
                if rec.attempt >= policy.max_attempts {
                    let reason = format!(
                        "step {} failed after {} attempts: {message}",
                        rec.step, rec.attempt
                    );
                    return self.finish(rec, &message_id, now, duration_ms, Err(reason), None);
                }
                let delay = match err {
                    StepError::RetryAfter { after, .. } => after,
                    _ => policy.retry_delay(rec.attempt, rec.job_id.as_str()),
                };
                let mut out = self.base_next(rec, &message_id, now);
                out.status = JobStatus::Waiting;
                out.next_wake_at = wake_at(now, delay, rec.deadline_at);
                out.last_error = Some(message.clone());
                warn!(parent: &span, error = %message, retry_in_ms = delay.as_millis() as u64, "step failed; retry scheduled");
                self.commit_of(
                    rec,
                    out,
                    EventKind::RetryScheduled,
                    duration_ms,
                    Some(message),
                    None,
                    false,
                )
            }
        }
    }

    /// The next record, before the transition-specific fields are set.
    fn base_next(&self, rec: &JobRecord, message_id: &str, now: Millis) -> JobRecord {
        let mut out = rec.clone();
        out.version = rec.version + 1;
        out.updated_at = now;
        out.next_wake_at = now;
        out.driven_by = Some(message_id.to_string());
        out.lease_owner = None;
        out.lease_until = None;
        out.history_count = rec.history_count + 1;
        out
    }

    /// A terminal commit: SUCCEEDED for `Ok`, FAILED with the reason for `Err`.
    fn finish(
        &self,
        rec: &JobRecord,
        message_id: &str,
        now: Millis,
        duration_ms: Option<u64>,
        result: Result<(), String>,
        note: Option<String>,
    ) -> StepResult {
        let mut out = self.base_next(rec, message_id, now);
        match result {
            Ok(()) => {
                out.status = JobStatus::Succeeded;
                self.commit_of(
                    rec,
                    out,
                    EventKind::Succeeded,
                    duration_ms,
                    None,
                    note,
                    false,
                )
            }
            Err(reason) => {
                warn!(job_id = %rec.job_id, step = %rec.step, %reason, "job failed");
                out.status = JobStatus::Failed;
                out.last_error = Some(reason.clone());
                self.commit_of(
                    rec,
                    out,
                    EventKind::Failed,
                    duration_ms,
                    Some(reason),
                    note,
                    false,
                )
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn commit_of(
        &self,
        rec: &JobRecord,
        out: JobRecord,
        kind: EventKind,
        duration_ms: Option<u64>,
        error: Option<String>,
        note: Option<String>,
        keep: bool,
    ) -> StepResult {
        let event = HistoryEvent {
            seq: out.history_count,
            at: out.updated_at,
            kind,
            step: rec.step.clone(),
            attempt: rec.attempt,
            duration_ms,
            to_step: out.step.clone(),
            to_status: out.status,
            error,
            note,
            worker: self.inner.config.id.clone(),
        };
        StepResult::Commit {
            record: Box::new(out),
            event: Box::new(event),
            keep,
        }
    }

    /// Extends the lease and the message's visibility; `false` if the lease is gone.
    async fn heartbeat(
        &self,
        source: &Arc<dyn TaskQueue>,
        hold: &mut Hold,
        rec: &JobRecord,
    ) -> bool {
        let cfg = &self.inner.config;
        let until = self.now() + cfg.lease.as_millis() as Millis;
        let kept = match self
            .inner
            .jobs
            .store()
            .extend_lease(&rec.job_id, rec.version, &hold.owner, until)
            .await
        {
            Ok(kept) => kept,
            Err(e) => {
                // Unknown: keep going; if the lease really lapses the commit will fail.
                warn!(error = %e, "heartbeat could not extend the lease");
                true
            }
        };
        if kept {
            let asked = self.now();
            match source.set_visibility(&hold.d.receipt, cfg.visibility).await {
                Ok(()) => hold.visible_until = asked + cfg.visibility.as_millis() as Millis,
                Err(e) => debug!(error = %e, "heartbeat could not extend message visibility"),
            }
        }
        kept
    }

    /// Gives the job back at shutdown: lease released, message visible again at once.
    async fn release(
        &self,
        source: &Arc<dyn TaskQueue>,
        d: &Delivery,
        owner: &str,
        rec: &JobRecord,
    ) {
        if let Err(e) = self
            .inner
            .jobs
            .store()
            .release_lease(&rec.job_id, rec.version, owner)
            .await
        {
            warn!(job_id = %rec.job_id, error = %e, "could not release lease at shutdown");
        }
        if let Err(e) = source.set_visibility(&d.receipt, Duration::ZERO).await {
            debug!(error = %e, "could not make message visible at shutdown");
        }
        info!(job_id = %rec.job_id, step = %rec.step, "released job at shutdown");
    }

    async fn send_task(&self, rec: &JobRecord, delay: Duration) -> bool {
        let queue = self.inner.jobs.queue();
        let job_id = &rec.job_id;
        // Waits longer than the queue allows are chained: the task arrives early, finds
        // the step not yet due and is sent again for the rest.
        let delay = delay.min(queue.max_delay());
        let attributes = crate::ops::trace_attributes(rec);
        match queue
            .send(&task_body(job_id, rec.version), delay, &attributes)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                warn!(%job_id, error = %e, "could not send the next task; the message will come back");
                false
            }
        }
    }

    async fn ack(&self, source: &Arc<dyn TaskQueue>, hold: &Hold) {
        if self.now() >= hold.visible_until - 1_000 {
            // The message may be another worker's now: leave it. It comes back, is judged
            // against the record, and is deleted by whoever receives it then.
            debug!(message_id = %hold.d.message_id, "held the message past its visibility; not deleting it");
            return;
        }
        debug!(message_id = %hold.d.message_id, receipt = %hold.d.receipt, "deleting message");
        if let Err(e) = source.delete(&hold.d.receipt).await {
            // Harmless: the message comes back, is judged stale and is deleted then.
            debug!(error = %e, "could not delete message");
        }
    }

    /// One sweep: re-sends a task for every active job whose step was due more than the
    /// grace period ago and that no live lease covers. Returns how many it re-sent.
    pub async fn sweep_once(&self) -> Result<usize, crate::error::StoreError> {
        let cutoff = self.now() - self.inner.config.sweep_grace.as_millis() as Millis;
        let lost = self.inner.jobs.store().overdue(cutoff, 200).await?;
        let mut sent = 0;
        for job in lost {
            if self.send_task(&job, Duration::ZERO).await {
                info!(job_id = %job.job_id, step = %job.step, "sweeper re-sent a lost wake-up");
                sent += 1;
            }
        }
        Ok(sent)
    }

    async fn sweep_forever(&self) {
        let every = self.inner.config.sweep_every;
        loop {
            let jitter = 0.5 + rand::random::<f64>();
            tokio::time::sleep(every.mul_f64(jitter)).await;
            if let Err(e) = self.sweep_once().await {
                warn!(error = %e, "sweep failed");
            }
        }
    }
}

fn record_metrics(next: &JobRecord, event: &HistoryEvent) {
    let m = crate::trace::metrics();
    let wf = &next.workflow;
    if let Some(ms) = event.duration_ms {
        let outcome = event.kind.as_str().to_string();
        m.step_duration.record(
            ms as f64 / 1000.0,
            &crate::trace::attrs(wf, &[("step", event.step.clone()), ("outcome", outcome)]),
        );
    }
    if event.kind == EventKind::RetryScheduled {
        let class = if event
            .error
            .as_deref()
            .is_some_and(|e| e.contains("timed out"))
        {
            "timeout"
        } else {
            "retryable"
        };
        m.retries.add(
            1,
            &crate::trace::attrs(
                wf,
                &[("step", event.step.clone()), ("class", class.to_string())],
            ),
        );
    }
    if next.status.is_terminal() {
        m.jobs_finished.add(
            1,
            &crate::trace::attrs(wf, &[("status", next.status.as_str().to_string())]),
        );
    }
}

/// Whether `cur` is the record `next` as written by our own commit (the store adds the TTL).
fn same_commit(cur: &JobRecord, next: &JobRecord) -> bool {
    let mut cur = cur.clone();
    cur.expires_at = next.expires_at;
    &cur == next
}

fn wake_at(now: Millis, after: Duration, deadline: Millis) -> Millis {
    (now + after.as_millis() as Millis).min(deadline)
}

fn report_panic(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            error!("a task handler panicked; its message will be handled again: {e}");
        }
    }
}
