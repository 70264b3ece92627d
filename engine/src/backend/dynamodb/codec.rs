//! The item codec: a [`JobRecord`], a [`HistoryEvent`] or an [`Entry`] to a DynamoDB item and back (the
//! layout is in the [parent module's docs](super)).
//!
//! Pure: no SDK client, no I/O, so that the layout is tested on its own. Every attribute
//! name comes from [`schema`]; every failure to read an item back is a
//! [`StoreError::Malformed`] naming the attribute.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::clock::{parse_rfc3339, rfc3339};
use crate::entries::Entry;
use crate::error::StoreError;
use crate::job::{EventKind, HistoryEvent, JobId, JobRecord, JobStatus, Millis};
use crate::schema;

/// An item as the SDK sees it.
pub(super) type Item = HashMap<String, AttributeValue>;

/// A string attribute.
pub(super) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

/// A number attribute.
pub(super) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The key of a job's record.
pub(super) fn record_key(job_id: &JobId) -> Item {
    HashMap::from([
        (schema::PK.to_string(), s(job_id.as_str())),
        (schema::SK.to_string(), s(schema::RECORD_ITEM)),
    ])
}

/// The TTL value (epoch seconds) of an item kept for `retention` after `from`.
fn expires_at(from: Millis, retention: Duration) -> i64 {
    let retention_secs = i64::try_from(retention.as_secs()).unwrap_or(i64::MAX);
    from.div_euclid(1000).saturating_add(retention_secs)
}

/// The record as stored; a finished job's record expires `retention` after its last update.
pub(super) fn record_item(r: &JobRecord, retention: Duration) -> Item {
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
    item.insert(schema::WORKFLOW_ATTR.into(), s(&r.workflow));
    item.insert(schema::STATUS_ATTR.into(), s(r.status.as_str()));
    item.insert(schema::STEP_ATTR.into(), s(&r.step));
    item.insert(schema::ATTEMPT_ATTR.into(), n(r.attempt));
    item.insert(schema::VERSION_ATTR.into(), n(r.version));
    item.insert(schema::DATA_ATTR.into(), s(r.data.to_string()));
    item.insert(schema::CREATED_AT_ATTR.into(), s(rfc3339(r.created_at)));
    item.insert(schema::UPDATED_AT_ATTR.into(), s(rfc3339(r.updated_at)));
    item.insert(schema::NEXT_WAKE_AT_ATTR.into(), n(r.next_wake_at));
    item.insert(schema::DEADLINE_AT_ATTR.into(), n(r.deadline_at));
    if let Some(owner) = &r.lease_owner {
        item.insert(schema::LEASE_OWNER_ATTR.into(), s(owner));
    }
    if let Some(until) = r.lease_until {
        item.insert(schema::LEASE_UNTIL_ATTR.into(), n(until));
    }
    if let Some(driven_by) = &r.driven_by {
        item.insert(schema::DRIVEN_BY_ATTR.into(), s(driven_by));
    }
    if let Some(error) = &r.last_error {
        item.insert(schema::LAST_ERROR_ATTR.into(), s(error));
    }
    item.insert(
        schema::CANCEL_REQUESTED_ATTR.into(),
        AttributeValue::Bool(r.cancel_requested),
    );
    item.insert(schema::HISTORY_COUNT_ATTR.into(), n(r.history_count));
    if let Some(tp) = &r.trace_parent {
        item.insert(schema::TRACE_PARENT_ATTR.into(), s(tp));
    }
    if let Some(digest) = &r.request_digest {
        item.insert(schema::REQUEST_DIGEST_ATTR.into(), s(digest));
    }
    if r.status.is_terminal() {
        item.insert(
            schema::TTL_ATTR.into(),
            n(expires_at(r.updated_at, retention)),
        );
    }
    item
}

/// A history item of `record`'s job. It expires `retention` after the job's deadline: the
/// item is written once, before anyone knows when the job will finish, and a job is
/// finished by its deadline.
pub(super) fn history_item(record: &JobRecord, e: &HistoryEvent, retention: Duration) -> Item {
    let mut item = Item::new();
    item.insert(schema::PK.into(), s(record.job_id.as_str()));
    item.insert(schema::SK.into(), s(schema::history_item(e.seq)));
    item.insert(schema::SEQ_ATTR.into(), n(e.seq));
    item.insert(schema::AT_ATTR.into(), s(rfc3339(e.at)));
    item.insert(schema::EVENT_ATTR.into(), s(e.kind.as_str()));
    item.insert(schema::STEP_ATTR.into(), s(&e.step));
    item.insert(schema::ATTEMPT_ATTR.into(), n(e.attempt));
    if let Some(d) = e.duration_ms {
        item.insert(schema::DURATION_MS_ATTR.into(), n(d));
    }
    item.insert(schema::TO_STEP_ATTR.into(), s(&e.to_step));
    item.insert(schema::TO_STATUS_ATTR.into(), s(e.to_status.as_str()));
    if let Some(error) = &e.error {
        item.insert(schema::ERROR_ATTR.into(), s(error));
    }
    if let Some(note) = &e.note {
        item.insert(schema::NOTE_ATTR.into(), s(note));
    }
    item.insert(schema::WORKER_ATTR.into(), s(&e.worker));
    item.insert(
        schema::TTL_ATTR.into(),
        n(expires_at(record.deadline_at, retention)),
    );
    item
}

/// The item of entry `e` of `job_id`'s `collection`, written at `now`, expiring
/// `retention` after `keep_until`.
pub(super) fn entry_item(
    job_id: &JobId,
    collection: &str,
    e: &Entry,
    now: Millis,
    keep_until: Millis,
    retention: Duration,
) -> Item {
    HashMap::from([
        (schema::PK.to_string(), s(job_id.as_str())),
        (
            schema::SK.to_string(),
            s(schema::entry_item(collection, &e.key)),
        ),
        (schema::GROUP_ATTR.to_string(), s(&e.group)),
        (schema::DATA_ATTR.to_string(), s(e.data.to_string())),
        (schema::AT_ATTR.to_string(), s(rfc3339(now))),
        (
            schema::TTL_ATTR.to_string(),
            n(expires_at(keep_until, retention)),
        ),
    ])
}

/// Reads an entry item of `job_id`'s `collection` back.
pub(super) fn parse_entry(
    job_id: &JobId,
    collection: &str,
    item: &Item,
) -> Result<Entry, StoreError> {
    let f = Fields {
        item,
        job_id: job_id.as_str(),
    };
    let prefix = schema::entry_prefix(collection);
    let sk = f.s(schema::SK)?;
    let key = sk.strip_prefix(&prefix).ok_or_else(|| {
        f.malformed(format!(
            "{} = {sk:?} is not an entry of {collection}",
            schema::SK
        ))
    })?;
    let data_text = f.s(schema::DATA_ATTR)?;
    let data = serde_json::from_str(data_text).map_err(|e| {
        f.malformed(format!(
            "entry {key}: {} is not JSON: {e}",
            schema::DATA_ATTR
        ))
    })?;
    Ok(Entry {
        key: key.to_string(),
        group: f.s(schema::GROUP_ATTR)?.to_string(),
        data,
        at: f.time(schema::AT_ATTR)?,
    })
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

/// Reads a record item back. Every top-level string attribute the engine does not own is a
/// label.
pub(super) fn parse_record(item: &Item) -> Result<JobRecord, StoreError> {
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
    let data_text = f.s(schema::DATA_ATTR)?;
    let data = serde_json::from_str(data_text)
        .map_err(|e| f.malformed(format!("{} is not JSON: {e}", schema::DATA_ATTR)))?;
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
        workflow: f.s(schema::WORKFLOW_ATTR)?.to_string(),
        status: f.status(schema::STATUS_ATTR)?,
        step: f.s(schema::STEP_ATTR)?.to_string(),
        attempt: f.n(schema::ATTEMPT_ATTR)?,
        version: f.n(schema::VERSION_ATTR)?,
        data,
        labels,
        created_at: f.time(schema::CREATED_AT_ATTR)?,
        updated_at: f.time(schema::UPDATED_AT_ATTR)?,
        next_wake_at: f.n(schema::NEXT_WAKE_AT_ATTR)?,
        deadline_at: f.n(schema::DEADLINE_AT_ATTR)?,
        lease_owner: f.s_opt(schema::LEASE_OWNER_ATTR)?.map(str::to_string),
        lease_until: f.n_opt(schema::LEASE_UNTIL_ATTR)?,
        driven_by: f.s_opt(schema::DRIVEN_BY_ATTR)?.map(str::to_string),
        last_error: f.s_opt(schema::LAST_ERROR_ATTR)?.map(str::to_string),
        cancel_requested: f.bool_opt(schema::CANCEL_REQUESTED_ATTR)?.unwrap_or(false),
        history_count: f.n(schema::HISTORY_COUNT_ATTR)?,
        expires_at: f.n_opt(schema::TTL_ATTR)?,
        trace_parent: f.s_opt(schema::TRACE_PARENT_ATTR)?.map(str::to_string),
        request_digest: f.s_opt(schema::REQUEST_DIGEST_ATTR)?.map(str::to_string),
    })
}

/// Reads a history item of job `job_id` back.
pub(super) fn parse_event(job_id: &JobId, item: &Item) -> Result<HistoryEvent, StoreError> {
    let f = Fields {
        item,
        job_id: job_id.as_str(),
    };
    let kind_text = f.s(schema::EVENT_ATTR)?;
    let kind = EventKind::parse(kind_text).ok_or_else(|| {
        f.malformed(format!(
            "{} = {kind_text:?} is not an event kind",
            schema::EVENT_ATTR
        ))
    })?;
    Ok(HistoryEvent {
        seq: f.n(schema::SEQ_ATTR)?,
        at: f.time(schema::AT_ATTR)?,
        kind,
        step: f.s(schema::STEP_ATTR)?.to_string(),
        attempt: f.n(schema::ATTEMPT_ATTR)?,
        duration_ms: f.n_opt(schema::DURATION_MS_ATTR)?,
        to_step: f.s(schema::TO_STEP_ATTR)?.to_string(),
        to_status: f.status(schema::TO_STATUS_ATTR)?,
        error: f.s_opt(schema::ERROR_ATTR)?.map(str::to_string),
        note: f.s_opt(schema::NOTE_ATTR)?.map(str::to_string),
        worker: f.s(schema::WORKER_ATTR)?.to_string(),
    })
}

#[cfg(test)]
mod tests;
