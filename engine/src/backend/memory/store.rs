//! The in-memory [`JobStore`]: records and histories in one map behind a mutex.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{lock, Faults};
use crate::backend::{judge, take_lease, Acquired, Commit, JobStore, LeaseRequest, Page, Verdict};
use crate::entries::{self, Entry, EntryPage, Groups};
use crate::error::{CommitError, StoreError};
use crate::job::{HistoryEvent, JobId, JobRecord, JobStatus, Millis};

#[derive(Default)]
struct Jobs {
    jobs: HashMap<JobId, (JobRecord, Vec<HistoryEvent>)>,
    /// Entries by job, collection and key.
    entries: BTreeMap<(JobId, String, String), Entry>,
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
            let result = match d.jobs.get_mut(&c.record.job_id) {
                Some((rec, history))
                    if rec.version == c.expected_version
                        && rec.lease_owner.as_deref() == Some(c.owner)
                        && (!rec.cancel_requested || c.saw_cancel)
                        && !c.events.is_empty()
                        && !history
                            .iter()
                            .any(|e| c.events.iter().any(|n| n.seq == e.seq)) =>
                {
                    *rec = c.record.clone();
                    history.extend(c.events.iter().cloned());
                    Ok(())
                }
                _ => Err(CommitError::Conflict),
            };
            if result.is_ok() {
                for (collection, e) in c.entries.iter() {
                    let key = (
                        c.record.job_id.clone(),
                        collection.to_string(),
                        e.key.clone(),
                    );
                    d.entries.insert(key, e.clone());
                }
            }
            result
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

    async fn put_entries(
        &self,
        job_id: &JobId,
        collection: &str,
        new: &[Entry],
        _keep_until: Millis,
    ) -> Result<(), StoreError> {
        if let Some(why) = entries::invalid(collection, None).or_else(|| {
            new.iter()
                .find_map(|e| entries::invalid(collection, Some(e)))
        }) {
            return Err(StoreError::Invalid(why));
        }
        self.point("store.put_entries", false).await;
        {
            let mut d = lock(&self.data);
            for e in new {
                let key = (job_id.clone(), collection.to_string(), e.key.clone());
                d.entries.insert(key, e.clone());
            }
        }
        self.point("store.put_entries", true).await;
        Ok(())
    }

    async fn entries(
        &self,
        job_id: &JobId,
        collection: &str,
        groups: &Groups,
        after: Option<&str>,
        limit: usize,
    ) -> Result<EntryPage, StoreError> {
        let d = lock(&self.data);
        let limit = limit.max(1);
        let mut page = EntryPage::default();
        for ((job, c, key), e) in d.entries.iter() {
            if job != job_id || c != collection || after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            if groups.admits(&e.group) {
                page.entries.push(e.clone());
                if page.entries.len() >= limit {
                    page.next = Some(key.clone());
                    break;
                }
            }
        }
        Ok(page)
    }
}
