//! Provisioning the jobs table: [`create_job_table`] makes the table of a
//! [`JobTableSpec`](schema::JobTableSpec) (keys, the status index, one index per label, the
//! TTL) and brings an older table up to it.
//!
//! `certflow bootstrap` and the tests use it; the deployment templates state the same table
//! from the same [`schema`] names, and a test compares the two.

use std::time::Duration;

use aws_sdk_dynamodb::error::{BuildError, DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, CreateGlobalSecondaryIndexAction, GlobalSecondaryIndex,
    GlobalSecondaryIndexUpdate, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableDescription, TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};

use super::RESOURCE_NOT_FOUND;
use crate::error::StoreError;
use crate::schema;

/// How long [`create_job_table`] waits for the table (or a new index) to become active:
/// enough for a new table or an index on a small table; past that, a bootstrap is better
/// off reporting than hanging.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often [`create_job_table`] asks whether the table is active yet: a table that is
/// ready at once (an emulator's) costs at most this, and the control plane is not hammered.
const ACTIVE_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The DynamoDB error code of a `CreateTable` for a table that exists.
const RESOURCE_IN_USE: &str = "ResourceInUseException";

/// The DynamoDB error code of an `UpdateTimeToLive` that changes nothing (the message then
/// says the TTL is "already enabled").
const VALIDATION: &str = "ValidationException";

/// Creates the jobs table described by `spec` if it does not exist, waits until it is
/// active, adds any label index it lacks, and turns on its TTL ([`schema::TTL_ATTR`]).
/// Safe to run again and again.
pub async fn create_job_table(
    client: &aws_sdk_dynamodb::Client,
    spec: &schema::JobTableSpec,
) -> Result<(), StoreError> {
    let table = spec.name.as_str();
    let fail = |op: &str, detail: String| StoreError::Service(format!("{op} {table}: {detail}"));
    let build = |e: BuildError| fail("create_table", e.to_string());

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
        Err(e) if e.code() == Some(RESOURCE_IN_USE) => {
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
            .projection(all_attributes())
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
            if e.code() == Some(VALIDATION)
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

/// The table's description; a missing table is [`StoreError::TableNotFound`].
async fn describe(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> Result<TableDescription, StoreError> {
    let out = client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .map_err(|e| {
            if e.code() == Some(RESOURCE_NOT_FOUND) {
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
        tokio::time::sleep(ACTIVE_POLL_INTERVAL).await;
    }
}

/// A string key attribute (every key of the table and its indexes is a string).
fn attr_def(name: &str) -> Result<AttributeDefinition, BuildError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
}

/// One element of a key schema.
fn key_element(name: &str, kind: KeyType) -> Result<KeySchemaElement, BuildError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
}

/// A global secondary index projecting every attribute, so that a listing reads whole
/// records without going back to the table.
fn gsi(index: &str, hash: &str, range: &str) -> Result<GlobalSecondaryIndex, BuildError> {
    GlobalSecondaryIndex::builder()
        .index_name(index)
        .key_schema(key_element(hash, KeyType::Hash)?)
        .key_schema(key_element(range, KeyType::Range)?)
        .projection(all_attributes())
        .build()
}

/// Every attribute: the projection of every index.
fn all_attributes() -> Projection {
    Projection::builder()
        .projection_type(ProjectionType::All)
        .build()
}
