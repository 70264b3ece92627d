//! The engine's in-memory backends with AWS's latency: [`SlowStore`] and [`SlowQueue`]
//! wrap any [`JobStore`] / [`TaskQueue`] (the in-memory ones, in the storm benchmark),
//! sleep a latency drawn from the [`LatencyModel`] for the DynamoDB or SQS call the
//! production backend makes for each operation, then delegate; and count those calls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use engine::backend::{Commit, LeaseRequest, Page};
use engine::error::CommitError;
use engine::{
    Acquired, Delivery, Entry, EntryPage, Groups, HistoryEvent, JobId, JobRecord, JobStatus,
    JobStore, Millis, QueueError, StoreError, TaskQueue,
};

use super::LatencyModel;

/// Calls counted by `"<service> <Operation>"`, shared by the wrappers of one run.
#[derive(Clone, Debug, Default)]
pub struct Counts(Arc<Mutex<BTreeMap<String, u64>>>);

impl Counts {
    fn bump(&self, key: &str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_insert(0) += 1;
    }

    /// The counts so far.
    pub fn get(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forgets them.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A [`JobStore`] that takes DynamoDB's time for each operation.
pub struct SlowStore {
    inner: Arc<dyn JobStore>,
    latency: LatencyModel,
    counts: Counts,
}

impl SlowStore {
    /// `inner`, slowed down by `latency`, its calls counted in `counts`.
    pub fn new(inner: Arc<dyn JobStore>, latency: LatencyModel, counts: Counts) -> SlowStore {
        SlowStore {
            inner,
            latency,
            counts,
        }
    }

    async fn call(&self, op: &str) {
        self.counts.bump(&format!("dynamodb {op}"));
        let d = self.latency.draw("dynamodb", op);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[async_trait]
impl JobStore for SlowStore {
    async fn create(
        &self,
        record: &JobRecord,
        event: &HistoryEvent,
    ) -> Result<Option<JobRecord>, StoreError> {
        self.call("TransactWriteItems").await;
        self.inner.create(record, event).await
    }

    async fn get(&self, job_id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.call("GetItem").await;
        self.inner.get(job_id).await
    }

    async fn history(&self, job_id: &JobId) -> Result<Vec<HistoryEvent>, StoreError> {
        self.call("Query").await;
        self.inner.history(job_id).await
    }

    async fn acquire(&self, req: &LeaseRequest<'_>) -> Result<Acquired, StoreError> {
        self.call("UpdateItem").await;
        self.inner.acquire(req).await
    }

    async fn extend_lease(
        &self,
        job_id: &JobId,
        version: u64,
        owner: &str,
        until: Millis,
    ) -> Result<bool, StoreError> {
        self.call("UpdateItem").await;
        self.inner.extend_lease(job_id, version, owner, until).await
    }

    async fn release_lease(
        &self,
        job_id: &JobId,
        version: u64,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.call("UpdateItem").await;
        self.inner.release_lease(job_id, version, owner).await
    }

    async fn commit(&self, commit: &Commit<'_>) -> Result<(), CommitError> {
        self.call("TransactWriteItems").await;
        self.inner.commit(commit).await
    }

    async fn commit_unleased(
        &self,
        expected_version: u64,
        now: Millis,
        record: &JobRecord,
        event: &HistoryEvent,
    ) -> Result<(), CommitError> {
        self.call("TransactWriteItems").await;
        self.inner
            .commit_unleased(expected_version, now, record, event)
            .await
    }

    async fn request_cancel(&self, job_id: &JobId) -> Result<bool, StoreError> {
        self.call("UpdateItem").await;
        self.inner.request_cancel(job_id).await
    }

    async fn list_by_status(
        &self,
        status: JobStatus,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page, StoreError> {
        self.call("Query").await;
        self.inner.list_by_status(status, limit, cursor).await
    }

    async fn list_by_label(
        &self,
        label: &str,
        value: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page, StoreError> {
        self.call("Query").await;
        self.inner.list_by_label(label, value, limit, cursor).await
    }

    async fn overdue(&self, cutoff: Millis, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        self.call("Query").await;
        self.inner.overdue(cutoff, limit).await
    }

    async fn put_entries(
        &self,
        job_id: &JobId,
        collection: &str,
        entries: &[Entry],
        keep_until: Millis,
    ) -> Result<(), StoreError> {
        self.call("BatchWriteItem").await;
        self.inner
            .put_entries(job_id, collection, entries, keep_until)
            .await
    }

    async fn entries(
        &self,
        job_id: &JobId,
        collection: &str,
        groups: &Groups,
        after: Option<&str>,
        limit: usize,
    ) -> Result<EntryPage, StoreError> {
        self.call("Query").await;
        self.inner
            .entries(job_id, collection, groups, after, limit)
            .await
    }
}

/// A [`TaskQueue`] that takes SQS's time for each operation.
pub struct SlowQueue {
    inner: Arc<dyn TaskQueue>,
    latency: LatencyModel,
    counts: Counts,
}

impl SlowQueue {
    /// `inner`, slowed down by `latency`, its calls counted in `counts`.
    pub fn new(inner: Arc<dyn TaskQueue>, latency: LatencyModel, counts: Counts) -> SlowQueue {
        SlowQueue {
            inner,
            latency,
            counts,
        }
    }

    async fn call(&self, op: &str) {
        self.counts.bump(&format!("sqs {op}"));
        let d = self.latency.draw("sqs", op);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

#[async_trait]
impl TaskQueue for SlowQueue {
    async fn send(
        &self,
        body: &str,
        delay: Duration,
        attributes: &[(String, String)],
    ) -> Result<(), QueueError> {
        self.call("SendMessage").await;
        self.inner.send(body, delay, attributes).await
    }

    async fn receive(
        &self,
        max: usize,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.call("ReceiveMessage").await;
        self.inner.receive(max, wait, visibility).await
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.call("DeleteMessage").await;
        self.inner.delete(receipt).await
    }

    async fn set_visibility(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        self.call("ChangeMessageVisibility").await;
        self.inner.set_visibility(receipt, visibility).await
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        self.call("SendMessage").await;
        self.inner.dead_letter(delivery, reason).await
    }

    fn max_delay(&self) -> Duration {
        self.inner.max_delay()
    }
}
