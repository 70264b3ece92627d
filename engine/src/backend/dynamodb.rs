//! The DynamoDB [`JobStore`]: one table, the job record and its history items under one
//! partition key, every lease and commit rule stated as a condition expression.
//!
//! # Item layout
//!
//! Partition key [`schema::PK`] (the job id), sort key [`schema::SK`]:
//!
//! - the **record** (sort key [`schema::RECORD_ITEM`]): `Workflow`, `Status`, `Step`,
//!   `Attempt`, `Version`, `Data` (JSON text), one top-level string attribute per label,
//!   `CreatedAt` and `UpdatedAt` (RFC 3339), `NextWakeAt`, `DeadlineAt`, `LeaseOwner` and
//!   `LeaseUntil` (only while leased), `DrivenBy`, `LastError`, `CancelRequested`,
//!   `HistoryCount`, `TraceParent`, and `ExpiresAt` (epoch seconds, only once the job is
//!   finished: `UpdatedAt` plus the retention);
//! - one **history item** per event (sort key [`schema::history_item`]): `Seq`, `At`,
//!   `Event`, `Step`, `Attempt`, `DurationMs`, `ToStep`, `ToStatus`, `Error`, `Note`,
//!   `Worker`, `ExpiresAt` (the job's deadline plus the retention). History items carry
//!   neither `Status` nor a label, so they never appear in the indexes.
//!
//! Times in milliseconds are numbers; the two index sort keys are RFC 3339 text, which
//! sorts by time and reads well in the console.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, CreateGlobalSecondaryIndexAction,
    GlobalSecondaryIndex, GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, Put, ReturnValue, ReturnValuesOnConditionCheckFailure,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus, TransactWriteItem,
};

use super::{judge, Acquired, Commit, JobStore, LeaseRequest, Page, Verdict};
use crate::clock::{parse_rfc3339, rfc3339};
use crate::error::{CommitError, StoreError};
use crate::job::{EventKind, HistoryEvent, JobId, JobRecord, JobStatus, Millis};
use crate::schema;

/// An item as the SDK sees it.
type Item = HashMap<String, AttributeValue>;

/// Record attributes that are not named in [`schema`] (which names only the keys, the
/// index keys and the TTL attribute).
const WORKFLOW: &str = "Workflow";
const STEP: &str = "Step";
const ATTEMPT: &str = "Attempt";
const VERSION: &str = "Version";
const DATA: &str = "Data";
const NEXT_WAKE_AT: &str = "NextWakeAt";
const DEADLINE_AT: &str = "DeadlineAt";
const LEASE_OWNER: &str = "LeaseOwner";
const LEASE_UNTIL: &str = "LeaseUntil";
const DRIVEN_BY: &str = "DrivenBy";
const LAST_ERROR: &str = "LastError";
const CANCEL_REQUESTED: &str = "CancelRequested";
const HISTORY_COUNT: &str = "HistoryCount";
const TRACE_PARENT: &str = "TraceParent";

/// History-item attributes (besides [`STEP`], [`ATTEMPT`] and the TTL).
const SEQ: &str = "Seq";
const AT: &str = "At";
const EVENT: &str = "Event";
const DURATION_MS: &str = "DurationMs";
const TO_STEP: &str = "ToStep";
const TO_STATUS: &str = "ToStatus";
const ERROR: &str = "Error";
const NOTE: &str = "Note";
const WORKER: &str = "Worker";

/// How long finished jobs (and their history) stay in the table by default.
const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long [`create_job_table`] waits for the table (or a new index) to become active.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// The DynamoDB code of a failed condition, in a transaction's cancellation reasons.
const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// A [`JobStore`] on one DynamoDB table (see the [module docs](self) for its layout).
#[derive(Debug, Clone)]
pub struct DynamoJobStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    retention: Duration,
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

    fn retention_secs(&self) -> i64 {
        i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX)
    }

    fn key(job_id: &JobId) -> Item {
        HashMap::from([
            (schema::PK.to_string(), s(job_id.as_str())),
            (schema::SK.to_string(), s(schema::RECORD_ITEM)),
        ])
    }

    /// Maps an SDK error: a missing table is [`StoreError::TableNotFound`], anything else
    /// a [`StoreError::Service`] naming the operation.
    fn error<E, R>(&self, op: &str, e: &SdkError<E, R>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: fmt::Debug,
    {
        if e.code() == Some("ResourceNotFoundException") {
            StoreError::TableNotFound {
                table: self.table.clone(),
            }
        } else {
            StoreError::Service(format!("{op}: {}", DisplayErrorContext(e)))
        }
    }

    /// The record as stored.
    fn record_item(&self, r: &JobRecord) -> Item {
        let mut item = Item::new();
        // Labels first, so that an engine attribute always wins over a label of its name
        // (ops refuses such labels; this is the store's own guard).
        for (name, value) in &r.labels {
            // An index key cannot be an empty string: such a label is not stored.
            if !value.is_empty() && !schema::RESERVED_ATTRS.contains(&name.as_str()) {
                item.insert(name.clone(), s(value));
            }
        }
        item.insert(schema::PK.into(), s(r.job_id.as_str()));
        item.insert(schema::SK.into(), s(schema::RECORD_ITEM));
        item.insert(WORKFLOW.into(), s(&r.workflow));
        item.insert(schema::STATUS_ATTR.into(), s(r.status.as_str()));
        item.insert(STEP.into(), s(&r.step));
        item.insert(ATTEMPT.into(), n(r.attempt));
        item.insert(VERSION.into(), n(r.version));
        item.insert(DATA.into(), s(r.data.to_string()));
        item.insert(schema::CREATED_AT_ATTR.into(), s(rfc3339(r.created_at)));
        item.insert(schema::UPDATED_AT_ATTR.into(), s(rfc3339(r.updated_at)));
        item.insert(NEXT_WAKE_AT.into(), n(r.next_wake_at));
        item.insert(DEADLINE_AT.into(), n(r.deadline_at));
        if let Some(owner) = &r.lease_owner {
            item.insert(LEASE_OWNER.into(), s(owner));
        }
        if let Some(until) = r.lease_until {
            item.insert(LEASE_UNTIL.into(), n(until));
        }
        if let Some(driven_by) = &r.driven_by {
            item.insert(DRIVEN_BY.into(), s(driven_by));
        }
        if let Some(error) = &r.last_error {
            item.insert(LAST_ERROR.into(), s(error));
        }
        item.insert(
            CANCEL_REQUESTED.into(),
            AttributeValue::Bool(r.cancel_requested),
        );
        item.insert(HISTORY_COUNT.into(), n(r.history_count));
        if let Some(tp) = &r.trace_parent {
            item.insert(TRACE_PARENT.into(), s(tp));
        }
        if r.status.is_terminal() {
            let expires = (r.updated_at.div_euclid(1000)).saturating_add(self.retention_secs());
            item.insert(schema::TTL_ATTR.into(), n(expires));
        }
        item
    }

    /// A history item of `record`'s job.
    fn history_item(&self, record: &JobRecord, e: &HistoryEvent) -> Item {
        let mut item = Item::new();
        item.insert(schema::PK.into(), s(record.job_id.as_str()));
        item.insert(schema::SK.into(), s(schema::history_item(e.seq)));
        item.insert(SEQ.into(), n(e.seq));
        item.insert(AT.into(), s(rfc3339(e.at)));
        item.insert(EVENT.into(), s(e.kind.as_str()));
        item.insert(STEP.into(), s(&e.step));
        item.insert(ATTEMPT.into(), n(e.attempt));
        if let Some(d) = e.duration_ms {
            item.insert(DURATION_MS.into(), n(d));
        }
        item.insert(TO_STEP.into(), s(&e.to_step));
        item.insert(TO_STATUS.into(), s(e.to_status.as_str()));
        if let Some(error) = &e.error {
            item.insert(ERROR.into(), s(error));
        }
        if let Some(note) = &e.note {
            item.insert(NOTE.into(), s(note));
        }
        item.insert(WORKER.into(), s(&e.worker));
        let expires = record
            .deadline_at
            .div_euclid(1000)
            .saturating_add(self.retention_secs());
        item.insert(schema::TTL_ATTR.into(), n(expires));
        item
    }

    /// The transaction of a transition: the record, conditioned by `condition`, and the
    /// history item, conditioned on not existing yet.
    fn transaction(
        &self,
        record: &JobRecord,
        event: &HistoryEvent,
        condition: Condition,
        return_old: bool,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.record_item(record)))
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
        let history = Put::builder()
            .table_name(&self.table)
            .set_item(Some(self.history_item(record, event)))
            .condition_expression("attribute_not_exists(#JobId)")
            .set_expression_attribute_names(Some(names(&[schema::PK])))
            .build()
            .map_err(|e| StoreError::Service(format!("history item: {e}")))?;
        let put = put
            .build()
            .map_err(|e| StoreError::Service(format!("record item: {e}")))?;
        Ok(vec![
            TransactWriteItem::builder().put(put).build(),
            TransactWriteItem::builder().put(history).build(),
        ])
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
            .set_key(Some(Self::key(job_id)))
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
            .set_key(Some(Self::key(job_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error(op, &e))?;
        Ok(out.item)
    }
}

/// A condition expression with its attribute names and values.
struct Condition {
    expression: String,
    names: HashMap<String, String>,
    values: Item,
}

impl Condition {
    fn new(
        expression: impl Into<String>,
        attrs: &[&str],
        values: Vec<(&str, AttributeValue)>,
    ) -> Self {
        Condition {
            expression: expression.into(),
            names: names(attrs),
            values: values
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
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
        let condition = Condition::new("attribute_not_exists(#JobId)", &[schema::PK], vec![]);
        let items = self.transaction(record, event, condition, true)?;
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
        // The lease rules of `judge`, as a condition: the job is active, the message is
        // valid (current version or last driver), no live lease, and the step is due (or a
        // cancel request is waiting).
        let condition = Condition::new(
            "attribute_exists(#JobId) \
             AND #Status IN (:pending, :running, :waiting) \
             AND (#Version = :v OR #DrivenBy = :m) \
             AND (attribute_not_exists(#LeaseOwner) OR attribute_not_exists(#LeaseUntil) \
                  OR #LeaseUntil <= :now) \
             AND (#NextWakeAt <= :due OR #CancelRequested = :true)",
            &[
                schema::PK,
                schema::STATUS_ATTR,
                VERSION,
                DRIVEN_BY,
                LEASE_OWNER,
                LEASE_UNTIL,
                NEXT_WAKE_AT,
                CANCEL_REQUESTED,
                ATTEMPT,
            ],
            vec![
                (":pending", s(JobStatus::Pending.as_str())),
                (":running", s(JobStatus::Running.as_str())),
                (":waiting", s(JobStatus::Waiting.as_str())),
                (":v", n(req.version)),
                (":m", s(req.message_id)),
                (":now", n(req.now)),
                (":due", n(req.due_by)),
                (":true", AttributeValue::Bool(true)),
                (":o", s(req.owner)),
                (":u", n(req.until)),
                (":one", n(1)),
            ],
        );
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(req.job_id)))
            .update_expression("SET #LeaseOwner = :o, #LeaseUntil = :u ADD #Attempt :one")
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
        let condition = Condition::new(
            "#Version = :v AND #LeaseOwner = :o",
            &[VERSION, LEASE_OWNER, LEASE_UNTIL],
            vec![(":v", n(version)), (":o", s(owner)), (":u", n(until))],
        );
        self.update_record("extend_lease", job_id, "SET #LeaseUntil = :u", condition)
            .await
    }

    async fn release_lease(
        &self,
        job_id: &JobId,
        version: u64,
        owner: &str,
    ) -> Result<(), StoreError> {
        let condition = Condition::new(
            "#Version = :v AND #LeaseOwner = :o",
            &[VERSION, LEASE_OWNER, LEASE_UNTIL],
            vec![(":v", n(version)), (":o", s(owner))],
        );
        // A lease that is no longer ours needs no release.
        self.update_record(
            "release_lease",
            job_id,
            "REMOVE #LeaseOwner, #LeaseUntil",
            condition,
        )
        .await
        .map(|_| ())
    }

    async fn commit(&self, c: &Commit<'_>) -> Result<(), CommitError> {
        let condition = if c.saw_cancel {
            Condition::new(
                "#Version = :v AND #LeaseOwner = :o",
                &[VERSION, LEASE_OWNER],
                vec![(":v", n(c.expected_version)), (":o", s(c.owner))],
            )
        } else {
            Condition::new(
                "#Version = :v AND #LeaseOwner = :o \
                 AND (attribute_not_exists(#CancelRequested) OR #CancelRequested = :false)",
                &[VERSION, LEASE_OWNER, CANCEL_REQUESTED],
                vec![
                    (":v", n(c.expected_version)),
                    (":o", s(c.owner)),
                    (":false", AttributeValue::Bool(false)),
                ],
            )
        };
        let items = self.transaction(c.record, c.event, condition, false)?;
        Ok(self.transact("commit", items).await?)
    }

    async fn commit_unleased(
        &self,
        expected_version: u64,
        now: Millis,
        record: &JobRecord,
        event: &HistoryEvent,
    ) -> Result<(), CommitError> {
        let condition = Condition::new(
            "#Version = :v AND (attribute_not_exists(#LeaseOwner) \
             OR attribute_not_exists(#LeaseUntil) OR #LeaseUntil <= :now)",
            &[VERSION, LEASE_OWNER, LEASE_UNTIL],
            vec![(":v", n(expected_version)), (":now", n(now))],
        );
        let items = self.transaction(record, event, condition, false)?;
        Ok(self.transact("commit_unleased", items).await?)
    }

    async fn request_cancel(&self, job_id: &JobId) -> Result<bool, StoreError> {
        let condition = Condition::new(
            "attribute_exists(#JobId) AND #Status IN (:pending, :running, :waiting)",
            &[schema::PK, schema::STATUS_ATTR, CANCEL_REQUESTED],
            vec![
                (":pending", s(JobStatus::Pending.as_str())),
                (":running", s(JobStatus::Running.as_str())),
                (":waiting", s(JobStatus::Waiting.as_str())),
                (":true", AttributeValue::Bool(true)),
            ],
        );
        self.update_record(
            "request_cancel",
            job_id,
            "SET #CancelRequested = :true",
            condition,
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
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(schema::STATUS_INDEX)
                    .key_condition_expression("#Status = :s")
                    .filter_expression(
                        "#NextWakeAt < :c AND (attribute_not_exists(#LeaseOwner) \
                         OR attribute_not_exists(#LeaseUntil) OR #LeaseUntil <= :c)",
                    )
                    .set_expression_attribute_names(Some(names(&[
                        schema::STATUS_ATTR,
                        NEXT_WAKE_AT,
                        LEASE_OWNER,
                        LEASE_UNTIL,
                    ])))
                    .expression_attribute_values(":s", s(status.as_str()))
                    .expression_attribute_values(":c", n(cutoff))
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
}

/// Creates the jobs table described by `spec` if it does not exist, waits until it is
/// active, adds any label index it lacks, and turns on its TTL ([`schema::TTL_ATTR`]).
/// Safe to run again and again.
pub async fn create_job_table(
    client: &aws_sdk_dynamodb::Client,
    spec: &schema::JobTableSpec,
) -> Result<(), StoreError> {
    let table = spec.name.as_str();
    let fail = |op: &str, detail: String| StoreError::Service(format!("{op} {table}: {detail}"));
    let build = |e: aws_sdk_dynamodb::error::BuildError| fail("create_table", e.to_string());

    let mut attrs = vec![
        attr_def(schema::PK).map_err(build)?,
        attr_def(schema::SK).map_err(build)?,
        attr_def(schema::STATUS_ATTR).map_err(build)?,
        attr_def(schema::UPDATED_AT_ATTR).map_err(build)?,
        attr_def(schema::CREATED_AT_ATTR).map_err(build)?,
    ];
    for label in &spec.label_indexes {
        attrs.push(attr_def(label).map_err(build)?);
    }
    let mut indexes = vec![gsi(
        schema::STATUS_INDEX,
        schema::STATUS_ATTR,
        schema::UPDATED_AT_ATTR,
    )
    .map_err(build)?];
    for label in &spec.label_indexes {
        indexes
            .push(gsi(&schema::label_index(label), label, schema::CREATED_AT_ATTR).map_err(build)?);
    }

    let created = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key_element(schema::PK, KeyType::Hash).map_err(build)?)
        .key_schema(key_element(schema::SK, KeyType::Range).map_err(build)?)
        .set_attribute_definitions(Some(attrs))
        .set_global_secondary_indexes(Some(indexes))
        .send()
        .await;
    match created {
        Ok(_) => tracing::info!(table, "created jobs table"),
        Err(e) if e.code() == Some("ResourceInUseException") => {
            tracing::info!(table, "jobs table already exists")
        }
        Err(e) => return Err(fail("create_table", DisplayErrorContext(&e).to_string())),
    }
    wait_active(client, table, None).await?;

    // Label indexes added to the spec after the table was made.
    let existing: Vec<String> = describe(client, table)
        .await?
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name().map(str::to_string))
        .collect();
    for label in &spec.label_indexes {
        let index = schema::label_index(label);
        if existing.contains(&index) {
            continue;
        }
        let action = CreateGlobalSecondaryIndexAction::builder()
            .index_name(&index)
            .key_schema(key_element(label, KeyType::Hash).map_err(build)?)
            .key_schema(key_element(schema::CREATED_AT_ATTR, KeyType::Range).map_err(build)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(build)?;
        client
            .update_table()
            .table_name(table)
            .attribute_definitions(attr_def(label).map_err(build)?)
            .attribute_definitions(attr_def(schema::CREATED_AT_ATTR).map_err(build)?)
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(action).build(),
            )
            .send()
            .await
            .map_err(|e| fail("update_table", DisplayErrorContext(&e).to_string()))?;
        tracing::info!(table, index = %index, "created label index");
        wait_active(client, table, Some(&index)).await?;
    }

    // Time to live.
    let ttl = client
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(|e| fail("describe_time_to_live", DisplayErrorContext(&e).to_string()))?;
    let on = ttl.time_to_live_description().is_some_and(|d| {
        d.attribute_name() == Some(schema::TTL_ATTR)
            && matches!(
                d.time_to_live_status(),
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            )
    });
    if on {
        tracing::info!(
            table,
            attribute = schema::TTL_ATTR,
            "time to live already enabled"
        );
        return Ok(());
    }
    let spec = TimeToLiveSpecification::builder()
        .enabled(true)
        .attribute_name(schema::TTL_ATTR)
        .build()
        .map_err(|e| fail("update_time_to_live", e.to_string()))?;
    match client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(spec)
        .send()
        .await
    {
        Ok(_) => tracing::info!(table, attribute = schema::TTL_ATTR, "enabled time to live"),
        Err(e)
            if e.code() == Some("ValidationException")
                && e.message().is_some_and(|m| m.contains("already enabled")) =>
        {
            tracing::info!(
                table,
                attribute = schema::TTL_ATTR,
                "time to live already enabled"
            )
        }
        Err(e) => {
            return Err(fail(
                "update_time_to_live",
                DisplayErrorContext(&e).to_string(),
            ))
        }
    }
    Ok(())
}

async fn describe(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<aws_sdk_dynamodb::types::TableDescription, StoreError> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| {
            if e.code() == Some("ResourceNotFoundException") {
                StoreError::TableNotFound {
                    table: table.to_string(),
                }
            } else {
                StoreError::Service(format!(
                    "describe_table {table}: {}",
                    DisplayErrorContext(&e)
                ))
            }
        })?;
    out.table
        .ok_or_else(|| StoreError::Service(format!("describe_table {table}: no description")))
}

/// Waits until the table (and, if named, one of its indexes) is active.
async fn wait_active(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    index: Option<&str>,
) -> Result<(), StoreError> {
    let give_up = tokio::time::Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let desc = describe(client, table).await?;
        let table_active = desc.table_status() == Some(&TableStatus::Active);
        let index_active = index.is_none_or(|name| {
            desc.global_secondary_indexes().iter().any(|i| {
                i.index_name() == Some(name) && i.index_status() == Some(&IndexStatus::Active)
            })
        });
        if table_active && index_active {
            return Ok(());
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(StoreError::Service(format!(
                "table {table}{} not active after {} s",
                index.map(|i| format!(" index {i}")).unwrap_or_default(),
                ACTIVE_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn attr_def(name: &str) -> Result<AttributeDefinition, aws_sdk_dynamodb::error::BuildError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
}

fn key_element(
    name: &str,
    kind: KeyType,
) -> Result<KeySchemaElement, aws_sdk_dynamodb::error::BuildError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
}

fn gsi(
    index: &str,
    hash: &str,
    range: &str,
) -> Result<GlobalSecondaryIndex, aws_sdk_dynamodb::error::BuildError> {
    GlobalSecondaryIndex::builder()
        .index_name(index)
        .key_schema(key_element(hash, KeyType::Hash)?)
        .key_schema(key_element(range, KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// `#Name -> Name` for each attribute.
fn names(attrs: &[&str]) -> HashMap<String, String> {
    attrs
        .iter()
        .map(|a| (format!("#{a}"), (*a).to_string()))
        .collect()
}

/// A listing cursor: the last evaluated key as a JSON object of string values (every key
/// attribute of the table and its indexes is a string).
fn encode_cursor(key: &Item) -> String {
    let map: serde_json::Map<String, serde_json::Value> = key
        .iter()
        .filter_map(|(k, v)| match v {
            AttributeValue::S(s) => Some((k.clone(), serde_json::Value::String(s.clone()))),
            _ => None,
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn decode_cursor(cursor: &str) -> Result<Item, String> {
    let invalid = || format!("invalid cursor {cursor:?}");
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(cursor).map_err(|_| invalid())?;
    map.into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k, AttributeValue::S(s))),
            _ => Err(invalid()),
        })
        .collect()
}

/// Typed access to an item's attributes, every failure a [`StoreError::Malformed`].
struct Fields<'a> {
    item: &'a Item,
    job_id: &'a str,
}

impl<'a> Fields<'a> {
    fn malformed(&self, reason: String) -> StoreError {
        StoreError::Malformed {
            job_id: self.job_id.to_string(),
            reason,
        }
    }

    fn s_opt(&self, name: &str) -> Result<Option<&'a str>, StoreError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.as_str())),
            Some(_) => Err(self.malformed(format!("{name} is not a string"))),
        }
    }

    fn s(&self, name: &str) -> Result<&'a str, StoreError> {
        self.s_opt(name)?
            .ok_or_else(|| self.malformed(format!("{name} is missing")))
    }

    fn n_opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, StoreError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::N(v)) => v
                .parse()
                .map(Some)
                .map_err(|_| self.malformed(format!("{name} = {v} is out of range"))),
            Some(_) => Err(self.malformed(format!("{name} is not a number"))),
        }
    }

    fn n<T: FromStr>(&self, name: &str) -> Result<T, StoreError> {
        self.n_opt(name)?
            .ok_or_else(|| self.malformed(format!("{name} is missing")))
    }

    fn bool_opt(&self, name: &str) -> Result<Option<bool>, StoreError> {
        match self.item.get(name) {
            None => Ok(None),
            Some(AttributeValue::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.malformed(format!("{name} is not a boolean"))),
        }
    }

    fn time(&self, name: &str) -> Result<Millis, StoreError> {
        let text = self.s(name)?;
        parse_rfc3339(text)
            .ok_or_else(|| self.malformed(format!("{name} = {text:?} is not RFC 3339")))
    }

    fn status(&self, name: &str) -> Result<JobStatus, StoreError> {
        let text = self.s(name)?;
        JobStatus::parse(text)
            .ok_or_else(|| self.malformed(format!("{name} = {text:?} is not a status")))
    }
}

/// Reads a record item back.
fn parse_record(item: &Item) -> Result<JobRecord, StoreError> {
    let job_id = match item.get(schema::PK) {
        Some(AttributeValue::S(id)) => id.as_str(),
        _ => {
            return Err(StoreError::Malformed {
                job_id: "?".to_string(),
                reason: format!("{} is missing or not a string", schema::PK),
            })
        }
    };
    let f = Fields { item, job_id };
    let data_text = f.s(DATA)?;
    let data = serde_json::from_str(data_text)
        .map_err(|e| f.malformed(format!("{DATA} is not JSON: {e}")))?;
    let labels: BTreeMap<String, String> = item
        .iter()
        .filter(|(k, _)| !schema::RESERVED_ATTRS.contains(&k.as_str()))
        .filter_map(|(k, v)| match v {
            AttributeValue::S(v) => Some((k.clone(), v.clone())),
            _ => None,
        })
        .collect();
    Ok(JobRecord {
        job_id: JobId::new(job_id),
        workflow: f.s(WORKFLOW)?.to_string(),
        status: f.status(schema::STATUS_ATTR)?,
        step: f.s(STEP)?.to_string(),
        attempt: f.n(ATTEMPT)?,
        version: f.n(VERSION)?,
        data,
        labels,
        created_at: f.time(schema::CREATED_AT_ATTR)?,
        updated_at: f.time(schema::UPDATED_AT_ATTR)?,
        next_wake_at: f.n(NEXT_WAKE_AT)?,
        deadline_at: f.n(DEADLINE_AT)?,
        lease_owner: f.s_opt(LEASE_OWNER)?.map(str::to_string),
        lease_until: f.n_opt(LEASE_UNTIL)?,
        driven_by: f.s_opt(DRIVEN_BY)?.map(str::to_string),
        last_error: f.s_opt(LAST_ERROR)?.map(str::to_string),
        cancel_requested: f.bool_opt(CANCEL_REQUESTED)?.unwrap_or(false),
        history_count: f.n(HISTORY_COUNT)?,
        expires_at: f.n_opt(schema::TTL_ATTR)?,
        trace_parent: f.s_opt(TRACE_PARENT)?.map(str::to_string),
    })
}

/// Reads a history item back.
fn parse_event(job_id: &JobId, item: &Item) -> Result<HistoryEvent, StoreError> {
    let f = Fields {
        item,
        job_id: job_id.as_str(),
    };
    let kind_text = f.s(EVENT)?;
    let kind = EventKind::parse(kind_text)
        .ok_or_else(|| f.malformed(format!("{EVENT} = {kind_text:?} is not an event kind")))?;
    Ok(HistoryEvent {
        seq: f.n(SEQ)?,
        at: f.time(AT)?,
        kind,
        step: f.s(STEP)?.to_string(),
        attempt: f.n(ATTEMPT)?,
        duration_ms: f.n_opt(DURATION_MS)?,
        to_step: f.s(TO_STEP)?.to_string(),
        to_status: f.status(TO_STATUS)?,
        error: f.s_opt(ERROR)?.map(str::to_string),
        note: f.s_opt(NOTE)?.map(str::to_string),
        worker: f.s(WORKER)?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> JobRecord {
        JobRecord {
            job_id: JobId::new("j-1"),
            workflow: "export".into(),
            status: JobStatus::Waiting,
            step: "poll".into(),
            attempt: 2,
            version: 7,
            data: serde_json::json!({"a": [1, 2], "b": "x"}),
            labels: BTreeMap::from([("CertName".to_string(), "web".to_string())]),
            created_at: 1_700_000_000_123,
            updated_at: 1_700_000_100_456,
            next_wake_at: 1_700_000_200_000,
            deadline_at: 1_700_086_400_000,
            lease_owner: Some("w-1".into()),
            lease_until: Some(1_700_000_130_000),
            driven_by: Some("m-1".into()),
            last_error: Some("throttled".into()),
            cancel_requested: false,
            history_count: 4,
            expires_at: None,
            trace_parent: Some("00-abc-def-01".into()),
        }
    }

    #[test]
    fn record_round_trips() {
        let store_rec = record();
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .build(),
        );
        let store = DynamoJobStore::new(client, "t");
        let item = store.record_item(&store_rec);
        assert!(!item.contains_key(schema::TTL_ATTR));
        assert_eq!(parse_record(&item).unwrap(), store_rec);

        let mut done = record();
        done.status = JobStatus::Succeeded;
        done.lease_owner = None;
        done.lease_until = None;
        let item = store.record_item(&done);
        let back = parse_record(&item).unwrap();
        assert_eq!(back.expires_at, Some(1_700_000_100 + 30 * 24 * 3600));
        assert_eq!(back.lease_owner, None);
    }

    #[test]
    fn history_item_has_no_index_attributes() {
        let client = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::Config::builder()
                .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
                .build(),
        );
        let store = DynamoJobStore::new(client, "t");
        let event = HistoryEvent {
            seq: 3,
            at: 1_700_000_100_456,
            kind: EventKind::RetryScheduled,
            step: "poll".into(),
            attempt: 2,
            duration_ms: Some(12),
            to_step: "poll".into(),
            to_status: JobStatus::Waiting,
            error: Some("throttled".into()),
            note: None,
            worker: "w-1".into(),
        };
        let item = store.history_item(&record(), &event);
        assert!(!item.contains_key(schema::STATUS_ATTR));
        assert!(!item.contains_key("CertName"));
        assert!(!item.contains_key(schema::UPDATED_AT_ATTR));
        assert_eq!(parse_event(&JobId::new("j-1"), &item).unwrap(), event);
    }

    #[test]
    fn cursor_round_trips() {
        let key: Item = HashMap::from([
            ("JobId".to_string(), s("j\"1")),
            ("Status".to_string(), s("FAILED")),
        ]);
        assert_eq!(decode_cursor(&encode_cursor(&key)).unwrap(), key);
        assert!(decode_cursor("{\"a\": 1}").is_err());
        assert!(decode_cursor("nope").is_err());
    }
}
