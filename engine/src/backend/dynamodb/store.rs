//! [`DynamoJobStore`]: the [`JobStore`] on one DynamoDB table, as requests. Each write is
//! one request, followed by a consistent read only when a failed condition must be
//! explained and the service did not return the item it saw. The rules the writes state
//! are in `condition`, the item layout in `codec`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    Put, ReturnValue, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};

use super::codec::{
    entry_item, history_item, parse_event, parse_record, record_item, record_key, s, Item,
};
use super::condition::{self, Condition};
use super::cursor::{decode_cursor, encode_cursor};
use super::RESOURCE_NOT_FOUND;
use crate::backend::{judge, Acquired, Commit, JobStore, LeaseRequest, Page, Verdict};
use crate::clock::Clock;
use crate::entries::{Entry, EntryPage, Groups};
use crate::error::{CommitError, StoreError};
use crate::job::{HistoryEvent, JobId, JobRecord, JobStatus, Millis};
use crate::schema;

/// How long finished jobs (and their history) stay in the table by default: the time an
/// operator has to look into a finished job before the table's TTL removes it.
const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// The DynamoDB code of a failed condition, in a transaction's cancellation reasons.
const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// Most items one `TransactWriteItems` takes.
const TRANSACTION_MAX_ITEMS: usize = 100;

/// A [`JobStore`] on one DynamoDB table (see the [module docs](super) for its layout).
#[derive(Debug, Clone)]
pub struct DynamoJobStore {
    pub(super) client: aws_sdk_dynamodb::Client,
    pub(super) table: String,
    pub(super) retention: Duration,
}

impl DynamoJobStore {
    /// A store on `table`, keeping finished jobs for 30 days.
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoJobStore {
            client,
            table: table.into(),
            retention: DEFAULT_RETENTION,
        }
    }

    /// Keeps finished jobs (and every history item past the job's deadline) for
    /// `retention` before the table's TTL removes them.
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// How long finished jobs are kept.
    pub fn retention(&self) -> Duration {
        self.retention
    }

    /// Maps an SDK error: a missing table is [`StoreError::TableNotFound`], anything else
    /// a [`StoreError::Service`] naming the operation.
    pub(super) fn error<E, R>(&self, op: &str, e: &SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        if e.code() == Some(RESOURCE_NOT_FOUND) {
            StoreError::TableNotFound {
                table: self.table.clone(),
            }
        } else {
            StoreError::Service(format!("{op}: {}", DisplayErrorContext(e)))
        }
    }

    /// The transaction of a transition: the record, conditioned by `condition`, and a
    /// history item per event, each conditioned on not existing yet.
    fn transaction(
        &self,
        record: &JobRecord,
        events: &[HistoryEvent],
        condition: Condition,
        return_old: bool,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(record_item(record, self.retention)))
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(condition.names));
        if !condition.values.is_empty() {
            put = put.set_expression_attribute_values(Some(condition.values));
        }
        if return_old {
            put = put.return_values_on_condition_check_failure(
                ReturnValuesOnConditionCheckFailure::AllOld,
            );
        }
        let put = put
            .build()
            .map_err(|e| StoreError::Service(format!("record item: {e}")))?;
        let mut items = vec![TransactWriteItem::builder().put(put).build()];
        for event in events {
            let new = condition::item_is_new();
            let history = Put::builder()
                .table_name(&self.table)
                .set_item(Some(history_item(record, event, self.retention)))
                .condition_expression(new.expression)
                .set_expression_attribute_names(Some(new.names))
                .build()
                .map_err(|e| StoreError::Service(format!("history item: {e}")))?;
            items.push(TransactWriteItem::builder().put(history).build());
        }
        Ok(items)
    }

    /// Runs a transition's transaction.
    async fn transact(&self, op: &str, items: Vec<TransactWriteItem>) -> Result<(), TransactError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(tc)) =
                    e.as_service_error()
                {
                    let reasons = tc.cancellation_reasons();
                    let failed = reasons.iter().any(|r| r.code() == Some(CONDITION_FAILED))
                        // Emulators may leave the reasons out and name them in the message.
                        || (reasons.is_empty()
                            && tc.message().is_some_and(|m| m.contains(CONDITION_FAILED)));
                    if failed {
                        let old = reasons.first().and_then(|r| r.item()).cloned();
                        return Err(TransactError::ConditionFailed(old));
                    }
                }
                Err(TransactError::Store(self.error(op, &e)))
            }
        }
    }

    /// Runs an update of the record; `Ok(false)` if its condition failed.
    async fn update_record(
        &self,
        op: &str,
        job_id: &JobId,
        update: &str,
        condition: Condition,
    ) -> Result<bool, StoreError> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(job_id)))
            .update_expression(update)
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(condition.names));
        if !condition.values.is_empty() {
            req = req.set_expression_attribute_values(Some(condition.values));
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(self.error(op, &e)),
            },
        }
    }

    /// One page of a query on an index, newest first.
    async fn query_index(
        &self,
        op: &str,
        index: &str,
        attr: &str,
        value: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page, StoreError> {
        if limit == 0 {
            return Ok(Page {
                jobs: Vec::new(),
                cursor,
            });
        }
        let start = cursor
            .as_deref()
            .map(decode_cursor)
            .transpose()
            .map_err(|reason| StoreError::Service(format!("{op}: {reason}")))?;
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#k = :k")
            .expression_attribute_names("#k", attr)
            .expression_attribute_values(":k", s(value))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| self.error(op, &e))?;
        let jobs = out
            .items()
            .iter()
            .map(parse_record)
            .collect::<Result<Vec<_>, _>>()?;
        let cursor = out.last_evaluated_key().map(encode_cursor);
        Ok(Page { jobs, cursor })
    }

    /// Reads the record with a consistent read.
    async fn get_item(&self, op: &str, job_id: &JobId) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(record_key(job_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(op, &e))?;
        Ok(out.item)
    }
}

/// How a transition's transaction failed.
enum TransactError {
    /// A condition failed; the record as it was, if the service returned it.
    ConditionFailed(Option<Item>),
    /// Anything else.
    Store(StoreError),
}

impl From<TransactError> for CommitError {
    fn from(e: TransactError) -> Self {
        match e {
            TransactError::ConditionFailed(_) => CommitError::Conflict,
            TransactError::Store(e) => CommitError::Store(e),
        }
    }
}

#[async_trait]
impl JobStore for DynamoJobStore {
    async fn create(
        &self,
        record: &JobRecord,
        event: &HistoryEvent,
    ) -> Result<Option<JobRecord>, StoreError> {
        let items = self.transaction(
            record,
            std::slice::from_ref(event),
            condition::item_is_new(),
            true,
        )?;
        match self.transact("create", items).await {
            Ok(()) => Ok(None),
            Err(TransactError::Store(e)) => Err(e),
            Err(TransactError::ConditionFailed(old)) => {
                let item = match old {
                    Some(item) => Some(item),
                    None => self.get_item("create", &record.job_id).await?,
                };
                match item {
                    Some(item) => Ok(Some(parse_record(&item)?)),
                    // Only possible if the job vanished (TTL) between the two calls.
                    None => Err(StoreError::Service(format!(
                        "create: job {} exists but could not be read back",
                        record.job_id
                    ))),
                }
            }
        }
    }

    async fn get(&self, job_id: &JobId) -> Result<Option<JobRecord>, StoreError> {
        self.get_item("get", job_id)
            .await?
            .map(|item| parse_record(&item))
            .transpose()
    }

    async fn history(&self, job_id: &JobId) -> Result<Vec<HistoryEvent>, StoreError> {
        let mut events = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :h)")
                .expression_attribute_names("#pk", schema::PK)
                .expression_attribute_names("#sk", schema::SK)
                .expression_attribute_values(":pk", s(job_id.as_str()))
                .expression_attribute_values(":h", s(schema::HISTORY_PREFIX))
                .consistent_read(true)
                .scan_index_forward(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| self.error("history", &e))?;
            for item in out.items() {
                events.push(parse_event(job_id, item)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(events)
    }

    async fn acquire(&self, req: &LeaseRequest<'_>) -> Result<Acquired, StoreError> {
        // The lease rules of `judge`, as a condition.
        let condition = condition::acquire(req);
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(record_key(req.job_id)))
            .update_expression(condition::ACQUIRE_UPDATE)
            .condition_expression(condition.expression)
            .set_expression_attribute_names(Some(condition.names))
            .set_expression_attribute_values(Some(condition.values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let old = match result {
            Ok(out) => {
                return match out.attributes {
                    Some(item) => Ok(Acquired::Leased(parse_record(&item)?)),
                    None => Err(StoreError::Service(format!(
                        "acquire: job {} leased but no attributes returned",
                        req.job_id
                    ))),
                };
            }
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c)) => c.item().cloned(),
                _ => return Err(self.error("acquire", &e)),
            },
        };
        // Why did it fail? The old item says (some emulators do not return it: read it).
        let item = match old {
            Some(item) => Some(item),
            None => self.get_item("acquire", req.job_id).await?,
        };
        let Some(item) = item else {
            return Ok(Acquired::NotFound);
        };
        let rec = parse_record(&item)?;
        Ok(match judge(req, &rec) {
            Verdict::Stale => Acquired::Stale,
            Verdict::NotDue => Acquired::NotDue(rec),
            // Our own write, retried by the SDK after a lost response, fails its condition
            // against itself: the lease we asked for is ours.
            Verdict::Held
                if rec.lease_owner.as_deref() == Some(req.owner)
                    && rec.lease_until == Some(req.until) =>
            {
                Acquired::Leased(rec)
            }
            Verdict::Held => Acquired::Held(rec),
            // The record changed between the write and the read: let the caller try again
            // later, as for a held lease.
            Verdict::Lease => Acquired::Held(rec),
        })
    }

    async fn extend_lease(
        &self,
        job_id: &JobId,
        version: u64,
        owner: &str,
        until: Millis,
    ) -> Result<bool, StoreError> {
        let condition = condition::extend_lease(version, owner, until);
        self.update_record(
            "extend_lease",
            job_id,
            condition::EXTEND_LEASE_UPDATE,
            condition,
        )
        .await
    }

    async fn release_lease(
        &self,
        job_id: &JobId,
        version: u64,
        owner: &str,
    ) -> Result<(), StoreError> {
        let condition = condition::release_lease(version, owner);
        // A lease that is no longer ours needs no release.
        self.update_record(
            "release_lease",
            job_id,
            condition::RELEASE_LEASE_UPDATE,
            condition,
        )
        .await
        .map(|_| ())
    }

    async fn commit(&self, c: &Commit<'_>) -> Result<(), CommitError> {
        if c.events.is_empty() {
            return Err(CommitError::Store(StoreError::Invalid(
                "a commit carries at least one history event".into(),
            )));
        }
        let mut items = self.transaction(c.record, c.events, condition::commit(c), false)?;
        if !c.entries.is_empty() {
            if items.len() + c.entries.len() <= TRANSACTION_MAX_ITEMS {
                let now = crate::clock::SystemClock.now();
                let keep_until = c.record.deadline_at;
                for (collection, e) in c.entries.iter() {
                    let item = entry_item(
                        &c.record.job_id,
                        collection,
                        e,
                        now,
                        keep_until,
                        self.retention,
                    );
                    let put = Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item))
                        .build()
                        .map_err(|e| StoreError::Service(format!("entry item: {e}")))?;
                    items.push(TransactWriteItem::builder().put(put).build());
                }
            } else {
                // Too many for one transaction: written first, as rule 2 of `entries` allows.
                for (collection, entries) in c.entries.by_collection() {
                    self.write_entries(
                        &c.record.job_id,
                        collection,
                        &entries,
                        c.record.deadline_at,
                    )
                    .await?;
                }
            }
        }
        Ok(self.transact("commit", items).await?)
    }

    async fn commit_unleased(
        &self,
        expected_version: u64,
        now: Millis,
        record: &JobRecord,
        event: &HistoryEvent,
    ) -> Result<(), CommitError> {
        let condition = condition::commit_unleased(expected_version, now);
        let items = self.transaction(record, std::slice::from_ref(event), condition, false)?;
        Ok(self.transact("commit_unleased", items).await?)
    }

    async fn request_cancel(&self, job_id: &JobId) -> Result<bool, StoreError> {
        self.update_record(
            "request_cancel",
            job_id,
            condition::REQUEST_CANCEL_UPDATE,
            condition::request_cancel(),
        )
        .await
    }

    async fn list_by_status(
        &self,
        status: JobStatus,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page, StoreError> {
        self.query_index(
            "list_by_status",
            schema::STATUS_INDEX,
            schema::STATUS_ATTR,
            status.as_str(),
            limit,
            cursor,
        )
        .await
    }

    async fn list_by_label(
        &self,
        label: &str,
        value: &str,
        limit: usize,
        cursor: Option<String>,
    ) -> Result<Page, StoreError> {
        self.query_index(
            "list_by_label",
            &schema::label_index(label),
            label,
            value,
            limit,
            cursor,
        )
        .await
    }

    async fn overdue(&self, cutoff: Millis, limit: usize) -> Result<Vec<JobRecord>, StoreError> {
        let mut jobs = Vec::new();
        for status in JobStatus::ACTIVE {
            let mut start = None;
            while jobs.len() < limit {
                // Oldest update first: the longest forgotten are found first.
                let filter = condition::overdue(status, cutoff);
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(schema::STATUS_INDEX)
                    .key_condition_expression(condition::OVERDUE_KEY)
                    .filter_expression(filter.expression)
                    .set_expression_attribute_names(Some(filter.names))
                    .set_expression_attribute_values(Some(filter.values))
                    .scan_index_forward(true)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(|e| self.error("overdue", &e))?;
                for item in out.items() {
                    if jobs.len() >= limit {
                        break;
                    }
                    // One bad item must not blind the sweeper to every other job.
                    match parse_record(item) {
                        Ok(rec) => jobs.push(rec),
                        Err(e) => {
                            tracing::warn!(error = %e, "overdue: skipping malformed job item")
                        }
                    }
                }
                match out.last_evaluated_key {
                    Some(key) if !key.is_empty() => start = Some(key),
                    _ => break,
                }
            }
        }
        Ok(jobs)
    }

    async fn put_entries(
        &self,
        job_id: &JobId,
        collection: &str,
        entries: &[Entry],
        keep_until: Millis,
    ) -> Result<(), StoreError> {
        self.write_entries(job_id, collection, entries, keep_until)
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
        self.read_entries(job_id, collection, groups, after, limit)
            .await
    }
}
