//! The DynamoDB [`JobStore`](super::JobStore): one table, the job record and its history
//! items under one partition key, every lease and commit rule stated as a condition
//! expression.
//!
//! The rules themselves (leases, versions, `DrivenBy`, cancel requests) are those of
//! docs/architecture.md, *Task protocol*; this backend only states them so that DynamoDB
//! enforces them on every write.
//!
//! # Item layout
//!
//! Partition key [`schema::PK`] (the job id), sort key [`schema::SK`]; every attribute name
//! is a constant in [`schema`]:
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
//! Times in milliseconds are numbers; the index sort keys are RFC 3339 text, which sorts by
//! time and reads well in the console.
//!
//! # Indexes
//!
//! - [`schema::STATUS_INDEX`]: partition key `Status`, sort key `UpdatedAt`; listings by
//!   status and the sweeper's search for overdue jobs.
//! - one index per label ([`schema::label_index`]): partition key the label, sort key
//!   `CreatedAt`.
//!
//! Every index projects all attributes, so a listing reads whole records.
//!
//! # Writes
//!
//! - Creating a job, and every transition, is one `TransactWriteItems` of two puts: the
//!   record, under a condition that states the rule of the operation (no item yet; the
//!   expected version and our lease; no waiting cancel request unless the worker saw it; or
//!   no live lease for an unleased commit), and the history item, on condition that it does
//!   not exist yet. A failed condition is a conflict, never a half-written transition.
//! - Taking, extending and releasing a lease, and asking for a cancel, are conditional
//!   `UpdateItem`s of the record alone.
//!
//! # Files
//!
//! - `store`: [`DynamoJobStore`] and its `JobStore` implementation (requests, transactions,
//!   queries, error mapping);
//! - `condition`: the condition and update expressions of each operation;
//! - `codec`: records and history events to items and back, without an SDK client;
//! - `cursor`: the paging cursor of listings;
//! - `entries`: a job's entries (`BatchWriteItem` and paged, filtered `Query`);
//! - `provision`: [`create_job_table`].

mod codec;
mod condition;
mod cursor;
mod entries;
mod provision;
mod store;

pub use provision::create_job_table;
pub use store::DynamoJobStore;

#[cfg(doc)]
use crate::schema;

/// The DynamoDB error code of a missing table (or index), from any operation.
const RESOURCE_NOT_FOUND: &str = "ResourceNotFoundException";
