//! In-memory job store and task queue, for the deterministic simulation only.
//!
//! They follow the same rules as the DynamoDB and SQS backends (the lease and commit
//! conditions are the state machine's [`judge`](crate::transition::judge) and
//! [`take_lease`](crate::transition::take_lease)), and add what the real
//! services do on a bad day: a [`Faults`] hook is called before and after every operation
//! (so a simulated worker can die or stall on either side of a side effect), and the queue
//! duplicates and reorders deliveries on a seeded schedule.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use super::{
    judge, take_lease, Acquired, Commit, Delivery, JobStore, LeaseRequest, Page, TaskQueue, Verdict,
};
use crate::clock::SharedClock;
use crate::error::{CommitError, QueueError, StoreError};
use crate::job::{HistoryEvent, JobId, JobRecord, JobStatus, Millis};

/// A hook around every backend operation. The simulation uses it to crash (never return)
/// or stall (sleep) a worker on either side of an operation's effect.
#[async_trait]
pub trait Faults: Send + Sync + 'static {
    /// Called before (`after == false`) and after (`after == true`) the operation `op`
    /// takes effect.
    async fn point(&self, op: &'static str, after: bool);
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the maps half-written: every critical
    // section below mutates only after all its checks. So a poisoned lock is still sound.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Jobs {
    jobs: HashMap<JobId, (JobRecord, Vec<HistoryEvent>)>,
}

/// The in-memory [`JobStore`]. Clone it with [`MemoryJobStore::view`] to give each
/// simulated worker its own fault hook over the same data.
#[derive(Clone)]
pub struct MemoryJobStore {
    data: Arc<Mutex<Jobs>>,
    faults: Option<Arc<dyn Faults>>,
}

impl MemoryJobStore {
    /// An empty store without faults.
    pub fn new() -> Self {
        MemoryJobStore {
            data: Arc::new(Mutex::new(Jobs::default())),
            faults: None,
        }
    }

    /// The same store seen through another fault hook.
    pub fn view(&self, faults: Arc<dyn Faults>) -> Self {
        MemoryJobStore {
            data: Arc::clone(&self.data),
            faults: Some(faults),
        }
    }

    /// Every job with its history (for the simulation's final checks).
    pub fn snapshot(&self) -> Vec<(JobRecord, Vec<HistoryEvent>)> {
        let mut all: Vec<_> = lock(&self.data).jobs.values().cloned().collect();
        all.sort_by(|a, b| a.0.job_id.cmp(&b.0.job_id));
        all
    }

    async fn point(&self, op: &'static str, after: bool) {
        if let Some(f) = &self.faults {
            f.point(op, after).await;
        }
    }
}

impl Default for MemoryJobStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl JobStore for MemoryJobStore {
    async fn create(
        &self,
        record: &JobRecord,
        event: &HistoryEvent,
    ) -> Result<Option<JobRecord>, StoreError> {
        self.point("store.create", false).await;
        let existing = {
            let mut d = lock(&self.data);
            match d.jobs.get(&record.job_id) {
                Some((rec, _)) => Some(rec.clone()),
                None => {
                    d.jobs
                        .insert(record.job_id.clone(), (record.clone(), vec![event.clone()]));
                    None
                }
            }
        };
        self.point("store.create", true).await;
        Ok(existing)
    }

    async fn get(&self, job_id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.point("store.get", false).await;
        let rec = lock(&self.data).jobs.get(job_id).map(|(r, _)| r.clone());
        Ok(rec)
    }

    async fn history(&self, job_id: &JobId) -> Result<Vec<HistoryEvent>, StoreError> {
        let h = lock(&self.data)
            .jobs
            .get(job_id)
            .map(|(_, h)| h.clone())
            .unwrap_or_default();
        Ok(h)
    }

    async fn acquire(&self, req: &LeaseRequest<'_>) -> Result<Acquired, StoreError> {
        self.point("store.acquire", false).await;
        let result = {
            let mut d = lock(&self.data);
            match d.jobs.get_mut(req.job_id) {
                None => Acquired::NotFound,
                Some((rec, _)) => match judge(req, rec) {
                    Verdict::Lease => {
                        take_lease(rec, req.owner, req.until);
                        Acquired::Leased(rec.clone())
                    }
                    Verdict::NotDue => Acquired::NotDue(rec.clone()),
                    Verdict::Held => Acquired::Held(rec.clone()),
                    Verdict::Stale => Acquired::Stale,
                },
            }
        };
        self.point("store.acquire", true).await;
        Ok(result)
    }

    async fn extend_lease(
        &self,
        job_id: &JobId,
        version: u64,
        owner: &str,
        until: Millis,
    ) -> Result<bool, StoreError> {
        self.point("store.extend_lease", false).await;
        let ok = {
            let mut d = lock(&self.data);
            match d.jobs.get_mut(job_id) {
                Some((rec, _))
                    if rec.version == version && rec.lease_owner.as_deref() == Some(owner) =>
                {
                    rec.lease_until = Some(until);
                    true
                }
                _ => false,
            }
        };
        self.point("store.extend_lease", true).await;
        Ok(ok)
    }

    async fn release_lease(
        &self,
        job_id: &JobId,
        version: u64,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.point("store.release_lease", false).await;
        {
            let mut d = lock(&self.data);
            if let Some((rec, _)) = d.jobs.get_mut(job_id) {
                if rec.version == version && rec.lease_owner.as_deref() == Some(owner) {
                    rec.lease_owner = None;
                    rec.lease_until = None;
                }
            }
        }
        self.point("store.release_lease", true).await;
        Ok(())
    }

    async fn commit(&self, c: &Commit<'_>) -> Result<(), CommitError> {
        self.point("store.commit", false).await;
        let result = {
            let mut d = lock(&self.data);
            match d.jobs.get_mut(&c.record.job_id) {
                Some((rec, history))
                    if rec.version == c.expected_version
                        && rec.lease_owner.as_deref() == Some(c.owner)
                        && (!rec.cancel_requested || c.saw_cancel)
                        && !history.iter().any(|e| e.seq == c.event.seq) =>
                {
                    *rec = c.record.clone();
                    history.push(c.event.clone());
                    Ok(())
                }
                _ => Err(CommitError::Conflict),
            }
        };
        self.point("store.commit", true).await;
        result
    }

    async fn commit_unleased(
        &self,
        expected_version: u64,
        now: Millis,
        record: &JobRecord,
        event: &HistoryEvent,
    ) -> Result<(), CommitError> {
        let mut d = lock(&self.data);
        match d.jobs.get_mut(&record.job_id) {
            Some((rec, history)) if rec.version == expected_version && !rec.lease_live(now) => {
                *rec = record.clone();
                history.push(event.clone());
                Ok(())
            }
            _ => Err(CommitError::Conflict),
        }
    }

    async fn request_cancel(&self, job_id: &JobId) -> Result<bool, StoreError> {
        let mut d = lock(&self.data);
        match d.jobs.get_mut(job_id) {
            Some((rec, _)) if !rec.status.is_terminal() => {
                rec.cancel_requested = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn list_by_status(
        &self,
        status: JobStatus,
        limit: usize,
        _cursor: Option<String>,
    ) -> Result<Page, StoreError> {
        let d = lock(&self.data);
        let mut jobs: Vec<JobRecord> = d
            .jobs
            .values()
            .filter(|(r, _)| r.status == status)
            .map(|(r, _)| r.clone())
            .collect();
        jobs.sort_by_key(|r| std::cmp::Reverse(r.updated_at));
        jobs.truncate(limit);
        Ok(Page { jobs, cursor: None })
    }

    async fn list_by_label(
        &self,
        label: &str,
        value: &str,
        limit: usize,
        _cursor: Option<String>,
    ) -> Result<Page, StoreError> {
        let d = lock(&self.data);
        let mut jobs: Vec<JobRecord> = d
            .jobs
            .values()
            .filter(|(r, _)| r.labels.get(label).map(String::as_str) == Some(value))
            .map(|(r, _)| r.clone())
            .collect();
        jobs.sort_by_key(|r| std::cmp::Reverse(r.created_at));
        jobs.truncate(limit);
        Ok(Page { jobs, cursor: None })
    }

    async fn overdue(&self, cutoff: Millis, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        self.point("store.overdue", false).await;
        let d = lock(&self.data);
        let mut jobs: Vec<JobRecord> = d
            .jobs
            .values()
            .map(|(r, _)| r)
            .filter(|r| !r.status.is_terminal() && r.next_wake_at < cutoff && !r.lease_live(cutoff))
            .cloned()
            .collect();
        jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        jobs.truncate(limit);
        Ok(jobs)
    }
}

struct Message {
    message_id: String,
    body: String,
    attributes: Vec<(String, String)>,
    visible_at: Millis,
    receive_count: u32,
    receipt: u64,
}

struct QueueState {
    messages: BTreeMap<u64, Message>,
    next_key: u64,
    next_receipt: u64,
    rng: StdRng,
    sent: Vec<String>,
    dead: Vec<(String, String)>,
}

/// Chaos settings of a [`MemoryTaskQueue`].
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueChaos {
    /// Probability that a sent message is stored twice (delivered twice).
    pub duplicate: f64,
    /// Probability that a sent message is lost outright (for the sweeper's tests).
    pub lose: f64,
}

/// The in-memory [`TaskQueue`]: per-message delays and visibility on the engine's clock,
/// random (seeded) delivery order, optional duplication.
#[derive(Clone)]
pub struct MemoryTaskQueue {
    state: Arc<Mutex<QueueState>>,
    notify: Arc<Notify>,
    clock: SharedClock,
    chaos: QueueChaos,
    faults: Option<Arc<dyn Faults>>,
}

impl MemoryTaskQueue {
    /// An empty queue on `clock`, its randomness seeded by `seed`.
    pub fn new(clock: SharedClock, seed: u64, chaos: QueueChaos) -> Self {
        MemoryTaskQueue {
            state: Arc::new(Mutex::new(QueueState {
                messages: BTreeMap::new(),
                next_key: 0,
                next_receipt: 0,
                rng: StdRng::seed_from_u64(seed),
                sent: Vec::new(),
                dead: Vec::new(),
            })),
            notify: Arc::new(Notify::new()),
            clock,
            chaos,
            faults: None,
        }
    }

    /// The same queue seen through another fault hook.
    pub fn view(&self, faults: Arc<dyn Faults>) -> Self {
        MemoryTaskQueue {
            faults: Some(faults),
            ..self.clone()
        }
    }

    /// Every body ever sent, in order.
    pub fn sent(&self) -> Vec<String> {
        lock(&self.state).sent.clone()
    }

    /// Messages moved to the dead-letter queue, with their reasons.
    pub fn dead_letters(&self) -> Vec<(String, String)> {
        lock(&self.state).dead.clone()
    }

    /// Messages still in the queue (visible or not).
    pub fn len(&self) -> usize {
        lock(&self.state).messages.len()
    }

    /// Whether the queue holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn point(&self, op: &'static str, after: bool) {
        if let Some(f) = &self.faults {
            f.point(op, after).await;
        }
    }

    fn parse_receipt(receipt: &str) -> Option<(u64, u64)> {
        let (k, r) = receipt.split_once('#')?;
        Some((k.parse().ok()?, r.parse().ok()?))
    }
}

#[async_trait]
impl TaskQueue for MemoryTaskQueue {
    async fn send(
        &self,
        body: &str,
        delay: Duration,
        attributes: &[(String, String)],
    ) -> Result<(), QueueError> {
        self.point("queue.send", false).await;
        {
            let now = self.clock.now();
            let mut s = lock(&self.state);
            s.sent.push(body.to_string());
            let lost = self.chaos.lose > 0.0 && s.rng.random_bool(self.chaos.lose);
            let copies = if lost {
                0
            } else if self.chaos.duplicate > 0.0 && s.rng.random_bool(self.chaos.duplicate) {
                2
            } else {
                1
            };
            let message_id = uuid::Builder::from_random_bytes(s.rng.random())
                .into_uuid()
                .to_string();
            for _ in 0..copies {
                let key = s.next_key;
                s.next_key += 1;
                s.messages.insert(
                    key,
                    Message {
                        message_id: message_id.clone(),
                        body: body.to_string(),
                        attributes: attributes.to_vec(),
                        visible_at: now + delay.min(self.max_delay()).as_millis() as Millis,
                        receive_count: 0,
                        receipt: 0,
                    },
                );
            }
        }
        self.notify.notify_waiters();
        self.point("queue.send", true).await;
        Ok(())
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let give_up = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next_visible = {
                let now = self.clock.now();
                let mut guard = lock(&self.state);
                let s = &mut *guard;
                let mut visible: Vec<u64> = s
                    .messages
                    .iter()
                    .filter(|(_, m)| m.visible_at <= now)
                    .map(|(k, _)| *k)
                    .collect();
                if !visible.is_empty() {
                    let mut out = Vec::new();
                    while out.len() < max && !visible.is_empty() {
                        let i = s.rng.random_range(0..visible.len());
                        let key = visible.swap_remove(i);
                        s.next_receipt += 1;
                        let receipt = s.next_receipt;
                        if let Some(m) = s.messages.get_mut(&key) {
                            m.receive_count += 1;
                            m.receipt = receipt;
                            m.visible_at = now + visibility.as_millis() as Millis;
                            out.push(Delivery {
                                message_id: m.message_id.clone(),
                                receipt: format!("{key}#{receipt}"),
                                body: m.body.clone(),
                                receive_count: m.receive_count,
                                attributes: m.attributes.clone(),
                            });
                        }
                    }
                    return Ok(out);
                }
                s.messages.values().map(|m| m.visible_at).min()
            };
            let now = self.clock.now();
            let mut until = give_up;
            if let Some(at) = next_visible {
                let d = Duration::from_millis((at - now).max(1) as u64);
                until = until.min(tokio::time::Instant::now() + d);
            }
            if tokio::time::Instant::now() >= give_up {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.point("queue.delete", false).await;
        if let Some((key, _)) = Self::parse_receipt(receipt) {
            // Like SQS at its worst: an outdated receipt still deletes the message.
            lock(&self.state).messages.remove(&key);
        }
        self.point("queue.delete", true).await;
        Ok(())
    }

    async fn set_visibility(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        self.point("queue.set_visibility", false).await;
        let result = {
            let now = self.clock.now();
            let mut s = lock(&self.state);
            match Self::parse_receipt(receipt)
                .and_then(|(key, r)| s.messages.get_mut(&key).filter(|m| m.receipt == r))
            {
                Some(m) => {
                    m.visible_at = now + visibility.as_millis() as Millis;
                    Ok(())
                }
                None => Err(QueueError::Service(format!(
                    "receipt handle {receipt} is no longer valid"
                ))),
            }
        };
        self.notify.notify_waiters();
        self.point("queue.set_visibility", true).await;
        result
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        let mut s = lock(&self.state);
        s.dead.push((delivery.body.clone(), reason.to_string()));
        if let Some((key, _)) = Self::parse_receipt(&delivery.receipt) {
            s.messages.remove(&key);
        }
        Ok(())
    }
}
