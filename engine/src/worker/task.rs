//! The run-a-task path, top to bottom: a message comes in ([`Worker::handle`] for a task,
//! [`Worker::start`] for an intake request), is judged against the job's record while
//! taking the lease (`drive`), then the job's steps run and commit one after another while
//! they may be fused (`run_leased`, `run_step`), and the next task is sent before the
//! message is deleted. An intake request whose job exists for a different request (its
//! idempotency key reused, [`crate::request`]) is dead-lettered instead. What each step's result makes of the job is decided by
//! [`crate::transition::decide`]; this file only carries it out, in the order the task
//! protocol requires (docs/architecture.md, *Task protocol*).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, info_span, warn, Instrument};

use super::commit::Committed;
use super::config::TAKEOVER_MARGIN;
use super::hold::Held;
use super::lease::Hold;
use super::{metrics, millis, Phase, Signal, Worker};
use crate::backend::{Acquired, Delivery, LeaseRequest, Task, TaskQueue};
use crate::entries::EntryWrites;
use crate::error::JobsError;
use crate::job::{EventKind, HistoryEvent, JobId, JobRecord, Millis};
use crate::ops::{task_body, trace_attributes, NewJob, Wake};
use crate::transition::{
    self, Decision, FuseLease, Happened, Preflight, StepLookup, Then, Turn, FIRST_VERSION,
};
use crate::workflow::StepContext;

impl Worker {
    /// Handles one task message from `source`.
    pub async fn handle(&self, source: Arc<dyn TaskQueue>, d: Delivery) {
        let task: Task = match serde_json::from_str(&d.body) {
            Ok(t) => t,
            Err(e) => {
                let reason = format!("not a task message: {e}");
                warn!(message_id = %d.message_id, %reason, "dead-lettering message");
                self.dead_letter(&source, &d, &reason).await;
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
        let hold = self.hold(d);
        let until = now + millis(self.config().lease);
        let lease = Some((hold.owner.as_str(), until, hold.d.message_id.as_str()));
        let (record, event) = match self.inner.jobs.new_record(&new, now, lease) {
            Ok(pair) => pair,
            Err(e) => {
                let reason = format!("cannot create job: {e}");
                warn!(message_id = %hold.d.message_id, %reason, "dead-lettering message");
                self.dead_letter(&source, &hold.d, &reason).await;
                return;
            }
        };
        match self.inner.jobs.store().create(&record, &event).await {
            Err(e) => {
                warn!(job_id = %record.job_id, error = %e, "could not create job; the message will come back")
            }
            Ok(None) => {
                info!(job_id = %record.job_id, workflow = %record.workflow, "job created");
                metrics::job_started(&record.workflow);
                self.run_leased(source, hold, record).await;
            }
            Ok(Some(existing)) => {
                if let Err(e) = crate::Jobs::check_same_request(&new, &existing) {
                    // A key reused for another request: refused, and the job it made first
                    // is not touched (no lease taken, nothing written).
                    let reason = e.to_string();
                    warn!(message_id = %hold.d.message_id, job_id = %existing.job_id, %reason, "dead-lettering message");
                    self.dead_letter(&source, &hold.d, &reason).await;
                    return;
                }
                debug!(job_id = %existing.job_id, "job exists; judging the message as a task");
                // The request's own message drove the job's first commit, so it is judged
                // as a task for the job's first version.
                self.drive(source, hold.d, &existing.job_id, FIRST_VERSION)
                    .await;
            }
        }
    }

    /// Wakes the job a signal names (rule 12 of [`crate::transition`]) and runs its step
    /// at once, the signal's own message driving it (the wake-up names it in `DrivenBy`,
    /// so it is valid for the job as a task would be, and no task round trip is needed).
    /// Should this worker die after the wake-up's commit, the message comes back, finds the
    /// job woken by it, and drives it then. A signal that changes nothing is deleted; only
    /// a failure to read or write the job leaves the message, to come back.
    pub async fn signal(&self, source: Arc<dyn TaskQueue>, d: Delivery, s: Signal) {
        if self.wake_held(&s) {
            // Held in a wait by this very worker (rule 13): the wait ends now, in memory;
            // its task commits the wake-up's effect with everything else it decided.
            info!(job_id = %s.job, step = %s.step, reason = %s.reason, "held job woken");
            self.delete_signal(&source, &d).await;
            return;
        }
        let jobs = &self.inner.jobs;
        let old = match jobs.get(&s.job).await {
            Ok(old) => old,
            Err(JobsError::NotFound(_)) => {
                info!(job_id = %s.job, "wake-up for a job that does not exist; ignored");
                self.delete_signal(&source, &d).await;
                return;
            }
            Err(e) => {
                warn!(job_id = %s.job, error = %e, "wake-up failed; the message will come back");
                return;
            }
        };
        if old.driven_by.as_deref() == Some(d.message_id.as_str()) && !old.status.is_terminal() {
            debug!(job_id = %s.job, "this wake-up woke the job before: it drives it now");
            self.drive(source, d, &s.job, old.version).await;
            return;
        }
        match jobs
            .wake_record(&old, &s.step, &s.reason, d.message_id.clone())
            .await
        {
            Ok(Wake::Woken(rec)) => {
                info!(job_id = %s.job, step = %s.step, version = rec.version, reason = %s.reason, "job woken");
                self.drive(source, d, &s.job, rec.version).await;
            }
            Ok(Wake::Ignored(why)) => {
                debug!(job_id = %s.job, step = %s.step, %why, "wake-up changed nothing");
                self.delete_signal(&source, &d).await;
            }
            Err(e) => {
                warn!(job_id = %s.job, error = %e, "wake-up failed; the message will come back")
            }
        }
    }

    async fn delete_signal(&self, source: &Arc<dyn TaskQueue>, d: &Delivery) {
        if let Err(e) = source.delete(&d.receipt).await {
            debug!(error = %e, "could not delete the wake-up; it comes back and changes nothing");
        }
    }

    /// Judges a message against its job's record while taking the lease, and acts on the
    /// verdict: run, re-send for later, wait for the holder, or acknowledge as stale.
    async fn drive(&self, source: Arc<dyn TaskQueue>, d: Delivery, job_id: &JobId, version: u64) {
        let cfg = self.config();
        let now = self.now();
        let hold = self.hold(d);
        let d = &hold.d;
        debug!(%job_id, version, message_id = %d.message_id, receipt = %d.receipt, owner = %hold.owner, "task received");
        let req = LeaseRequest {
            job_id,
            version,
            message_id: &d.message_id,
            owner: &hold.owner,
            now,
            until: now + millis(cfg.lease),
            due_by: now + millis(cfg.due_slack),
        };
        match self.inner.jobs.store().acquire(&req).await {
            Err(e) => {
                warn!(%job_id, error = %e, "could not take lease; the message will come back")
            }
            Ok(Acquired::NotFound) => {
                let reason = format!("job {job_id} does not exist");
                warn!(message_id = %d.message_id, %reason, "dead-lettering task");
                self.dead_letter(&source, d, &reason).await;
            }
            Ok(Acquired::Stale) => {
                debug!(%job_id, version, "stale task acknowledged");
                self.ack(&source, &hold).await;
            }
            Ok(Acquired::Held(rec)) => {
                // Not ours to run, but ours to keep: if the holder dies, this message is
                // the one that takes over once its lease lapses.
                let until = rec.lease_until.unwrap_or(now);
                let wait = Duration::from_millis((until - now).max(0) as u64) + TAKEOVER_MARGIN;
                debug!(%job_id, wait_ms = wait.as_millis() as u64, "job leased elsewhere; hiding message");
                if let Err(e) = source.set_visibility(&d.receipt, wait).await {
                    debug!(error = %e, "could not hide message");
                }
            }
            Ok(Acquired::NotDue(rec)) => {
                if self.send_task(&rec, rec.next_wake_at).await {
                    self.ack(&source, &hold).await;
                }
            }
            Ok(Acquired::Leased(rec)) => self.run_leased(source, hold, rec).await,
        }
    }

    /// Runs the leased job's steps for as long as they may be fused (rule 4 of
    /// [`crate::transition`]) or their waits held (rule 13), commits what they decided in
    /// one transaction (rule 8), then sends the next task (unless the job finished) and
    /// deletes the message.
    async fn run_leased(&self, source: Arc<dyn TaskQueue>, mut hold: Hold, rec: JobRecord) {
        let cfg = self.config();
        let span =
            info_span!("job", job_id = %rec.job_id, workflow = %rec.workflow, worker = %cfg.id);
        crate::trace::join(&span, rec.trace_parent.as_deref());
        metrics::started(&rec.workflow, self.now() - rec.next_wake_at);
        let beat = cfg.heartbeat_every();
        let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        hold.lease_until = rec.lease_until.unwrap_or(0);
        let mut task = TaskRun {
            stored_version: rec.version,
            saw_cancel: rec.cancel_requested,
            // Taking this lease counted an attempt: beyond the first, an earlier task may
            // have run steps past this point and died before its commit.
            replay: rec.attempt > 1,
            writes: Arc::new(Mutex::new(EntryWrites::default())),
            events: Vec::new(),
            fused: 0,
            held: Duration::ZERO,
        };
        let mut rec = rec;
        let (next, then) = loop {
            let Some((next, then)) = self
                .run_steps(&source, &mut hold, rec, &mut task, &mut heartbeat)
                .instrument(span.clone())
                .await
            else {
                return;
            };
            match self.commit_task(&hold, &task, &next).await {
                Committed::Landed => break (next, then),
                Committed::Lost => {
                    info!(parent: &span, "lost the job to another worker; abandoning");
                    return;
                }
                Committed::Failed(e) => {
                    warn!(parent: &span, error = %e, "commit failed; the message will come back");
                    return;
                }
                Committed::CancelRequested => {
                    // A cancel request arrived while the task ran: keep what it decided and
                    // let the cancel stop the job now, in the same commit (rule 10).
                    task.saw_cancel = true;
                    if then == Then::Finish {
                        match self.commit_task(&hold, &task, &next).await {
                            Committed::Landed => break (next, then),
                            _ => {
                                info!(parent: &span, "could not commit after a cancel request; the message will come back");
                                return;
                            }
                        }
                    }
                    let until = self.now() + millis(cfg.lease);
                    rec = transition::resumed(&next, &hold.owner, until);
                    rec.cancel_requested = true;
                }
            }
        };
        for event in &task.events {
            info!(parent: &span, step = %event.step, attempt = event.attempt, event = event.kind.as_str(), to_step = %event.to_step, status = %event.to_status, "committed");
            metrics::committed(&next.workflow, event);
        }
        if next.status.is_terminal() {
            self.ended(&next).instrument(span.clone()).await;
        }
        if let Then::SendAt(due) = then {
            // If this send fails the message stays: it is the job's `DrivenBy`, so when it
            // comes back it is still valid and re-sends.
            if !self.send_task(&next, due).await {
                return;
            }
        }
        self.ack(&source, &hold).await;
    }

    /// Runs steps from `rec` while they fuse or their waits are held; returns the record
    /// the task ends with and what comes after its commit (never [`Then::Fuse`] or
    /// [`Then::Hold`]). `None` when the lease was lost or released.
    async fn run_steps(
        &self,
        source: &Arc<dyn TaskQueue>,
        hold: &mut Hold,
        mut rec: JobRecord,
        task: &mut TaskRun,
        heartbeat: &mut tokio::time::Interval,
    ) -> Option<(JobRecord, Then)> {
        let cfg = self.config();
        loop {
            let decision = self.run_step(source, hold, &rec, task, heartbeat).await?;
            let Decision {
                record: next,
                event,
                then,
            } = decision;
            task.events.push(event);
            match then {
                Then::Fuse => {
                    task.fused += 1;
                    rec = next;
                }
                Then::Hold(due) => {
                    let wait = Duration::from_millis((due - self.now()).max(0) as u64);
                    match self
                        .hold_wait(source, hold, task, &next, wait, heartbeat)
                        .await
                    {
                        Held::Due => {
                            task.fused += 1;
                            task.held += wait;
                            let until = self.now() + millis(cfg.lease);
                            rec = transition::resumed(&next, &hold.owner, until);
                        }
                        Held::Woken(reason) => {
                            task.fused += 1;
                            task.held += wait;
                            let now = self.now();
                            let message = hold.d.message_id.clone();
                            let next = match transition::woken(
                                &next, &next.step, now, message, &cfg.id, &reason,
                            ) {
                                Ok((woken, event)) => {
                                    task.events.push(event);
                                    woken
                                }
                                // Due by now anyway: the step simply runs.
                                Err(_) => next,
                            };
                            rec = transition::resumed(&next, &hold.owner, now + millis(cfg.lease));
                        }
                        // Shutting down: the wait goes through the queue after all.
                        Held::Draining => return Some((next, Then::SendAt(due))),
                        Held::Lost => return None,
                    }
                }
                Then::SendAt(_) | Then::Finish => return Some((next, then)),
            }
        }
    }

    /// Runs the workflow's `on_end` hook for a job that has just ended (its commit landed).
    async fn ended(&self, rec: &JobRecord) {
        let Some(wf) = self.inner.jobs.registry().get(&rec.workflow).cloned() else {
            return;
        };
        let ended = crate::workflow::Ended {
            job_id: rec.job_id.clone(),
            workflow: rec.workflow.clone(),
            status: rec.status,
            step: rec.step.clone(),
            error: (rec.status != crate::job::JobStatus::Succeeded)
                .then(|| rec.last_error.clone())
                .flatten(),
            labels: rec.labels.clone(),
            at: rec.updated_at,
        };
        wf.end(ended, rec.data.clone()).await;
    }

    /// Runs the leased job's current step if it may run, and returns the decision to
    /// commit; `None` when the lease was lost or released and the job is not ours to touch.
    async fn run_step(
        &self,
        source: &Arc<dyn TaskQueue>,
        hold: &mut Hold,
        rec: &JobRecord,
        task: &TaskRun,
        heartbeat: &mut tokio::time::Interval,
    ) -> Option<Decision> {
        let cfg = self.config();
        let stored = task.stored_version;
        if self.lease_needs_confirming(hold)
            && !self.heartbeat(source, hold, &rec.job_id, stored).await
        {
            info!(job_id = %rec.job_id, "lease lapsed before the step started; abandoning");
            return None;
        }
        let now = self.now();
        let registry = self.inner.jobs.registry();
        let wf = registry.get(&rec.workflow).cloned();
        let lookup = match &wf {
            None => StepLookup::UnknownWorkflow {
                known: registry.names().map(str::to_string).collect(),
            },
            Some(wf) => StepLookup::Known(wf.policy(&rec.step)),
        };
        let has_step = |step: &str| wf.as_ref().is_some_and(|wf| wf.has_step(step));
        let draining = self.phase() != Phase::Running;
        let message_id = hold.d.message_id.clone();
        let owner = hold.owner.clone();
        let turn = Turn {
            now,
            message_id: &message_id,
            worker: &cfg.id,
            policy: wf.as_ref().and_then(|wf| wf.policy(&rec.step)),
            has_step: &has_step,
            fuse: transition::may_fuse(task.fused, cfg.max_fused_steps, draining).then_some(
                FuseLease {
                    owner: &owner,
                    until: now + millis(cfg.lease),
                },
            ),
            hold: if self.idle_enough_to_hold() {
                cfg.hold_waits.saturating_sub(task.held)
            } else {
                Duration::ZERO
            },
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
            replay: task.replay || rec.attempt > 1,
            writes: Some(Arc::clone(&task.writes)),
        };
        let happened = match (transition::preflight(rec, now, lookup), &wf) {
            (Preflight::Stop(reason), Some(wf)) => {
                let note = wf.stop(ctx, rec.data.clone(), reason).await;
                Happened::Stopped { reason, note }
            }
            (Preflight::Run(policy), Some(wf)) => {
                debug!(job_id = %rec.job_id, step = %rec.step, attempt = rec.attempt, lease_until = rec.lease_until.unwrap_or(0), now, "step starting");
                let started = tokio::time::Instant::now();
                let span = info_span!("step", job_id = %rec.job_id, step = %rec.step, attempt = rec.attempt);
                let run = tokio::time::timeout(policy.timeout, wf.run(ctx, rec.data.clone()))
                    .instrument(span.clone());
                tokio::pin!(run);
                let mut phase = self.inner.phase.subscribe();
                let result = loop {
                    tokio::select! {
                        r = &mut run => break r,
                        _ = heartbeat.tick() => {
                            if !self.heartbeat(source, hold, &rec.job_id, stored).await {
                                info!(parent: &span, "lease lost during the step; abandoning it");
                                return None;
                            }
                        }
                        changed = phase.changed() => {
                            if changed.is_err() || *phase.borrow() == Phase::Releasing {
                                self.release(source, hold, &rec.job_id, stored).await;
                                return None;
                            }
                        }
                    }
                };
                let took = started.elapsed();
                match result {
                    Ok(Ok(outcome)) => Happened::Ran { outcome, took },
                    Ok(Err(error)) => Happened::Erred { error, took },
                    Err(_) => Happened::TimedOut {
                        timeout: policy.timeout,
                        took,
                    },
                }
            }
            (Preflight::Refuse(reason), _) => Happened::Refused(reason),
            // Preflight stops or runs only a known workflow; an unknown one is refused.
            (_, None) => Happened::Refused(format!("unknown workflow {:?}", rec.workflow)),
        };
        let decision = transition::decide(rec, &turn, happened);
        match decision.event.kind {
            EventKind::Failed => {
                let reason = decision.record.last_error.as_deref().unwrap_or_default();
                warn!(job_id = %rec.job_id, step = %rec.step, %reason, "job failed");
            }
            EventKind::RetryScheduled => {
                let retry_in = decision.record.next_wake_at - now;
                let error = decision.record.last_error.as_deref().unwrap_or_default();
                warn!(job_id = %rec.job_id, step = %rec.step, %error, retry_in_ms = retry_in, "step failed; retry scheduled");
            }
            _ => {}
        }
        Some(decision)
    }

    /// Sends the task for `rec`'s current version, due at `due` (a wait longer than the
    /// queue allows is chained, rule 11 of [`crate::transition`]). `false` if it could not
    /// be sent.
    pub(super) async fn send_task(&self, rec: &JobRecord, due: Millis) -> bool {
        let queue = self.inner.jobs.queue();
        let job_id = &rec.job_id;
        let delay = transition::task_delay(due, self.now(), queue.max_delay());
        match queue
            .send(
                &task_body(job_id, rec.version),
                delay,
                &trace_attributes(rec),
            )
            .await
        {
            Ok(()) => true,
            Err(e) => {
                warn!(%job_id, error = %e, "could not send the next task; the message will come back");
                false
            }
        }
    }

    /// Moves a message that can never be handled to its queue's dead-letter queue.
    pub(super) async fn dead_letter(
        &self,
        source: &Arc<dyn TaskQueue>,
        d: &Delivery,
        reason: &str,
    ) {
        if let Err(e) = source.dead_letter(d, reason).await {
            warn!(error = %e, "could not dead-letter message");
        }
    }
}

/// One task's run of a job: where the store has it, and what the task decided since.
pub(super) struct TaskRun {
    /// The version the store holds (our commit's condition; heartbeats name it).
    pub(super) stored_version: u64,
    /// Whether the commit may overwrite a cancel request (it has been seen and honoured).
    pub(super) saw_cancel: bool,
    /// Whether an earlier task may have run this job past its stored point.
    pub(super) replay: bool,
    /// Entries the task's steps wrote.
    pub(super) writes: Arc<Mutex<EntryWrites>>,
    /// One history event per decision, oldest first.
    pub(super) events: Vec<HistoryEvent>,
    /// Steps fused and waits held so far.
    pub(super) fused: u32,
    /// Time spent in held waits so far.
    pub(super) held: Duration,
}

/// The task's entry writes (see [`crate::workflow`]'s lock: a poisoned lock is still whole).
pub(super) fn lock_writes(writes: &Mutex<EntryWrites>) -> std::sync::MutexGuard<'_, EntryWrites> {
    writes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
