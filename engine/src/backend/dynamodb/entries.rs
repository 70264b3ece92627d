//! A job's entries on DynamoDB ([`crate::entries`]): items `E#<collection>#<key>` beside
//! the record, written with `BatchWriteItem` (25 a call, unprocessed items sent again) and
//! read a page at a time in key order, filtered by group. Not part of any transition, so
//! not in `condition`: an entry's write is unconditional and replaces the item of its key.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::codec::{entry_item, parse_entry, s, Item};
use super::store::DynamoJobStore;
use crate::clock::Clock;
use crate::entries::{self, Entry, EntryPage, Groups};
use crate::error::StoreError;
use crate::job::{JobId, Millis};
use crate::schema;

/// Most items one `BatchWriteItem` takes.
const BATCH_WRITE_MAX: usize = 25;

/// How often unprocessed items of a batch write are sent again before the write fails.
const BATCH_WRITE_TRIES: usize = 8;

impl DynamoJobStore {
    /// Writes `items` with `BatchWriteItem`, 25 at a time, sending again what DynamoDB
    /// leaves unprocessed (throttling) with a growing pause.
    async fn batch_put(&self, items: Vec<Item>) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        for chunk in items.chunks(BATCH_WRITE_MAX) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    PutRequest::builder()
                        .set_item(Some(item.clone()))
                        .build()
                        .map(|p| WriteRequest::builder().put_request(p).build())
                        .map_err(|e| StoreError::Invalid(format!("entry item: {e}")))
                })
                .collect::<Result<_, _>>()?;
            let mut pause = Duration::from_millis(50);
            for attempt in 1.. {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(|e| self.error("put entries", &e))?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(&self.table))
                    .unwrap_or_default();
                if pending.is_empty() {
                    break;
                }
                if attempt >= BATCH_WRITE_TRIES {
                    return Err(StoreError::Service(format!(
                        "put entries: {} items still unprocessed after {attempt} tries",
                        pending.len()
                    )));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
        Ok(())
    }

    /// Writes entries (see [`crate::entries`]), each replacing the item of its key.
    pub(super) async fn write_entries(
        &self,
        job_id: &JobId,
        collection: &str,
        entries: &[Entry],
        keep_until: Millis,
    ) -> Result<(), StoreError> {
        if let Some(why) = entries::invalid(collection, None).or_else(|| {
            entries
                .iter()
                .find_map(|e| entries::invalid(collection, Some(e)))
        }) {
            return Err(StoreError::Invalid(why));
        }
        let now = crate::clock::SystemClock.now();
        // One write per key: a later entry of the same key in one call replaces an earlier
        // one, as two calls would (BatchWriteItem refuses duplicate keys in one request).
        let mut by_key: BTreeMap<&str, &Entry> = BTreeMap::new();
        for e in entries {
            by_key.insert(&e.key, e);
        }
        let items = by_key
            .values()
            .map(|e| entry_item(job_id, collection, e, now, keep_until, self.retention))
            .collect();
        self.batch_put(items).await
    }

    /// One page of a collection, in key order, filtered by group.
    pub(super) async fn read_entries(
        &self,
        job_id: &JobId,
        collection: &str,
        groups: &Groups,
        after: Option<&str>,
        limit: usize,
    ) -> Result<EntryPage, StoreError> {
        if let Some(why) = entries::invalid(collection, None) {
            return Err(StoreError::Invalid(why));
        }
        let prefix = schema::entry_prefix(collection);
        let mut start = after.map(|k| {
            HashMap::from([
                (schema::PK.to_string(), s(job_id.as_str())),
                (schema::SK.to_string(), s(schema::entry_item(collection, k))),
            ])
        });
        let mut page = EntryPage::default();
        let limit = limit.max(1);
        loop {
            let mut q = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :e)")
                .expression_attribute_names("#pk", schema::PK)
                .expression_attribute_names("#sk", schema::SK)
                .expression_attribute_values(":pk", s(job_id.as_str()))
                .expression_attribute_values(":e", s(&prefix))
                .scan_index_forward(true)
                .set_exclusive_start_key(start.take());
            q = match groups {
                Groups::All => q.limit((limit - page.entries.len()) as i32),
                Groups::Only(g) | Groups::Except(g) if g.is_empty() => q,
                Groups::Only(g) | Groups::Except(g) => {
                    let names: Vec<String> = (0..g.len()).map(|i| format!(":g{i}")).collect();
                    let test = format!("#g IN ({})", names.join(", "));
                    let filter = if matches!(groups, Groups::Only(_)) {
                        test
                    } else {
                        format!("NOT ({test})")
                    };
                    let mut q = q
                        .filter_expression(filter)
                        .expression_attribute_names("#g", schema::GROUP_ATTR);
                    for (name, value) in names.iter().zip(g) {
                        q = q.expression_attribute_values(name, s(value));
                    }
                    q
                }
            };
            let out = q.send().await.map_err(|e| self.error("entries", &e))?;
            for item in out.items() {
                let entry = parse_entry(job_id, collection, item)?;
                if !groups.admits(&entry.group) {
                    continue;
                }
                page.entries.push(entry);
                if page.entries.len() >= limit {
                    page.next = page.entries.last().map(|e| e.key.clone());
                    return Ok(page);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(page),
            }
        }
    }
}
